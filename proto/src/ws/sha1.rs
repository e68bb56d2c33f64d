//! SHA-1 (RFC 3174), only for the handshake's `Sec-WebSocket-Accept` key.
//!
//! SHA-1 is broken for collision resistance; RFC 6455 uses it only to prove
//! that the server understood the handshake, never for security, so a small
//! in-house implementation is enough and keeps `proto`'s dependency list to
//! `httparse` and `bytes`.

/// Computes the SHA-1 digest of `data`.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let mut chunks = data.chunks_exact(64);
    for block in &mut chunks {
        compress(&mut h, block);
    }
    // Padding: 0x80, zeros, then the 64-bit big-endian bit length, filling one or two blocks.
    let rest = chunks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 56 { 64 } else { 128 };
    tail[tail_len - 8..tail_len].copy_from_slice(&bit_len.to_be_bytes());
    for block in tail[..tail_len].chunks_exact(64) {
        compress(&mut h, block);
    }
    let mut out = [0u8; 20];
    for (o, word) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn compress(h: &mut [u32; 5], block: &[u8]) {
    let mut w = [0u32; 80];
    for (i, word) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    }
    for i in 16..80 {
        w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *h;
    for (i, wi) in w.iter().enumerate() {
        let (f, k) = match i {
            0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
            20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
            40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
            _ => (b ^ c ^ d, 0xCA62_C1D6),
        };
        let t = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(*wi);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = t;
    }
    for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
        *x = x.wrapping_add(y);
    }
}

#[cfg(test)]
mod tests {
    use super::sha1;

    fn check(input: &[u8], expected_hex: &str) {
        let hex: String = sha1(input).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            expected_hex,
            "sha1 of {:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn digests_match_rfc_3174_and_fips_180_vectors() {
        check(b"", "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        check(b"abc", "a9993e364706816aba3e25717850c26c9cd0d89d");
        check(
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
        );
        check(
            &b"a".repeat(1_000_000),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f",
        );
        check(
            &b"01234567".repeat(80),
            "dea356a2cddd90c7a7ecedc5ebb563934f460452",
        );
    }

    #[test]
    fn padding_boundaries_around_one_block_are_handled() {
        // 55, 56 and 64 bytes straddle the one/two padding-block boundary.
        check(&[b'a'; 55], "c1c8bbdc22796e28c0e15163d20899b65621d65a");
        check(&[b'a'; 56], "c2db330f6083854c99d4b5bfb6e8f29f201be699");
        check(&[b'a'; 64], "0098ba824b5c16427bd7a1122a5a442a25ec644d");
    }
}
