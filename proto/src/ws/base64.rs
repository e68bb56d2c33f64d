//! Base64 (RFC 4648, standard alphabet, padded), only for handshake keys.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the padded base64 encoding of `data` to `out`.
pub fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let symbols = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in symbols.iter().enumerate() {
            // A chunk of k bytes yields k + 1 symbols; the rest are padding.
            out.push(if i <= chunk.len() {
                ALPHABET[*s as usize]
            } else {
                b'='
            });
        }
    }
}

/// Decodes padded base64. Returns `None` for any input that is not the
/// canonical encoding of some byte string (bad symbol, bad length, misplaced
/// padding, non-zero trailing bits), because a handshake key that is not
/// exactly a base64 encoding is a malformed request.
pub fn decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let quads = input.len() / 4;
    for (qi, quad) in input.chunks_exact(4).enumerate() {
        let last = qi + 1 == quads;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | u32::from(value(c)?);
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Bits that the padding says are unused must be zero in canonical base64.
        if bytes[3 - pad..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

fn value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, encode_into};

    fn check(raw: &str, encoded: &str) {
        let mut out = Vec::new();
        encode_into(raw.as_bytes(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), encoded, "encode {raw:?}");
        assert_eq!(
            decode(encoded.as_bytes()).as_deref(),
            Some(raw.as_bytes()),
            "decode {encoded:?}"
        );
    }

    #[test]
    fn rfc_4648_test_vectors_round_trip() {
        check("", "");
        check("f", "Zg==");
        check("fo", "Zm8=");
        check("foo", "Zm9v");
        check("foob", "Zm9vYg==");
        check("fooba", "Zm9vYmE=");
        check("foobar", "Zm9vYmFy");
    }

    #[test]
    fn malformed_base64_is_rejected() {
        for bad in [
            "Zg=", "Zg=a", "Z===", "Zm9v=", "Zh==", "Zm9=", "Zm9vY!==", "Zg==Zg==", "====",
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
