//! The frame codec (RFC 6455 §5.2): header decoding and validation, frame
//! encoding, for both roles.
//!
//! Decoding is incremental: [`decode_header`] returns [`Decoded::Partial`]
//! and consumes nothing until the whole header is present, so any split of
//! the input yields the same frames. The header is reported before the
//! payload, so that a large payload can be unmasked in place and streamed.

use super::error::ProtocolError;
use super::mask::apply_mask;

/// Which end of the connection we are. It decides the masking rule: clients
/// mask every frame they send, servers never do (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection; peer frames must be masked.
    Server,
    /// We opened the connection; peer frames must not be masked.
    Client,
}

/// A frame opcode (RFC 6455 §5.2). Reserved opcodes are a decode error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: a later fragment of a text or binary message.
    Continuation,
    /// 0x1: the first frame of a UTF-8 text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// Parses the low nibble of the first header byte.
    pub fn from_u8(op: u8) -> Result<Opcode, ProtocolError> {
        Ok(match op {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return Err(ProtocolError::UnknownOpcode(op)),
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, payload at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Largest payload of a control frame (RFC 6455 §5.5).
pub const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;
/// Longest possible frame header: 2 + 8 (64-bit length) + 4 (mask key).
pub const HEADER_BYTES_MAX: usize = 14;

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: Opcode,
    /// The masking key, present exactly when the sender is a client.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes; below 2^63 once decoded.
    pub payload_len: u64,
    /// How many bytes the header itself took on the wire (2 to 14).
    pub header_len: usize,
}

/// The result of an incremental decode: done, or more bytes needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<T> {
    /// Decoded; the value says how many bytes it consumed.
    Complete(T),
    /// The input ends before the item does; nothing was consumed.
    Partial,
}

/// Decodes and validates one frame header at the start of `buf`, as received
/// by `role`.
///
/// Checks every rule that the header alone decides: reserved bits (no
/// extensions are ever negotiated), known opcode, control frames unfragmented
/// and at most 125 bytes, the masking rule for `role`, and a 64-bit length
/// with its top bit clear. Non-minimal length encodings are accepted, as
/// RFC 6455 only requires senders to use the minimal one. Size limits are the
/// caller's ([`Connection`](super::connection::Connection) applies `Config`).
pub fn decode_header(buf: &[u8], role: Role) -> Result<Decoded<FrameHeader>, ProtocolError> {
    let [b0, b1, ..] = *buf else {
        return Ok(Decoded::Partial);
    };
    let rsv = (b0 >> 4) & 0x7;
    if rsv != 0 {
        return Err(ProtocolError::ReservedBitsSet(rsv));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_u8(b0 & 0x0F)?;
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
        (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
        _ => {}
    }
    let (payload_len, mut pos) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(Decoded::Partial),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(Decoded::Partial),
        },
        n => (u64::from(n), 2),
    };
    if payload_len >> 63 != 0 {
        return Err(ProtocolError::LengthMsbSet);
    }
    if opcode.is_control() {
        if payload_len > CONTROL_PAYLOAD_BYTES_MAX as u64 {
            return Err(ProtocolError::ControlFrameTooLong(payload_len));
        }
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
    }
    let mask = if masked {
        let Some(m) = buf.get(pos..pos + 4) else {
            return Ok(Decoded::Partial);
        };
        pos += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Decoded::Complete(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: pos,
    }))
}

/// A whole frame decoded in place by [`decode_frame`].
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: FrameHeader,
    /// The payload, already unmasked.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame took on the wire: header plus payload.
    pub fn wire_len(&self) -> usize {
        self.header.header_len + self.payload.len()
    }
}

/// Decodes one whole frame at the start of `buf`, unmasking its payload in
/// place. `Partial` (and no change to `buf`) until the whole frame is present.
///
/// This is the one-shot form; [`Connection`](super::connection::Connection)
/// uses [`decode_header`] and streams the payload instead.
pub fn decode_frame(buf: &mut [u8], role: Role) -> Result<Decoded<Frame<'_>>, ProtocolError> {
    let header = match decode_header(buf, role)? {
        Decoded::Complete(h) => h,
        Decoded::Partial => return Ok(Decoded::Partial),
    };
    let start = header.header_len;
    let available = (buf.len() - start) as u64;
    if available < header.payload_len {
        return Ok(Decoded::Partial);
    }
    // payload_len <= available, which is a usize, so the cast is lossless.
    let payload = &mut buf[start..start + header.payload_len as usize];
    if let Some(mask) = header.mask {
        apply_mask(payload, mask, 0);
    }
    Ok(Decoded::Complete(Frame { header, payload }))
}

/// Appends a frame header to `out`, with the minimal length encoding.
pub fn encode_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) {
    assert!(
        payload_len >> 63 == 0,
        "payload length {payload_len} cannot be framed"
    );
    out.push(if fin { 0x80 } else { 0 } | opcode.as_u8());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if payload_len < 126 {
        out.push(mask_bit | payload_len as u8);
    } else if payload_len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&payload_len.to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
}

/// Appends a whole frame to `out`, masking the payload copy when `mask` is
/// given (clients must pass a fresh, unpredictable key per frame).
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) {
    encode_header(out, fin, opcode, mask, payload.len() as u64);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(role: Role, bytes: &[u8], expected: Result<Decoded<FrameHeader>, ProtocolError>) {
        assert_eq!(
            decode_header(bytes, role),
            expected,
            "{role:?} {bytes:02x?}"
        );
    }

    fn header(
        fin: bool,
        opcode: Opcode,
        mask: Option<[u8; 4]>,
        len: u64,
        header_len: usize,
    ) -> FrameHeader {
        FrameHeader {
            fin,
            opcode,
            mask,
            payload_len: len,
            header_len,
        }
    }

    const M: [u8; 4] = [1, 2, 3, 4];

    #[test]
    fn valid_headers_decode() {
        use Decoded::Complete as C;
        check(
            Role::Client,
            &[0x81, 0x05],
            Ok(C(header(true, Opcode::Text, None, 5, 2))),
        );
        check(
            Role::Client,
            &[0x02, 0x00],
            Ok(C(header(false, Opcode::Binary, None, 0, 2))),
        );
        check(
            Role::Client,
            &[0x80, 0x7D],
            Ok(C(header(true, Opcode::Continuation, None, 125, 2))),
        );
        check(
            Role::Client,
            &[0x82, 0x7E, 0x01, 0x00],
            Ok(C(header(true, Opcode::Binary, None, 256, 4))),
        );
        let len64 = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        check(
            Role::Client,
            &len64,
            Ok(C(header(true, Opcode::Binary, None, 65536, 10))),
        );
        check(
            Role::Server,
            &[0x89, 0x80, 1, 2, 3, 4],
            Ok(C(header(true, Opcode::Ping, Some(M), 0, 6))),
        );
        check(
            Role::Server,
            &[0x8A, 0xFD, 1, 2, 3, 4],
            Ok(C(header(true, Opcode::Pong, Some(M), 125, 6))),
        );
        check(
            Role::Server,
            &[0x88, 0x82, 1, 2, 3, 4],
            Ok(C(header(true, Opcode::Close, Some(M), 2, 6))),
        );
        let max63 = [0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        check(
            Role::Client,
            &max63,
            Ok(C(header(true, Opcode::Binary, None, u64::MAX >> 1, 10))),
        );
    }

    #[test]
    fn non_minimal_length_encodings_are_accepted() {
        use Decoded::Complete as C;
        check(
            Role::Client,
            &[0x82, 0x7E, 0x00, 0x05],
            Ok(C(header(true, Opcode::Binary, None, 5, 4))),
        );
        let len64 = [0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5];
        check(
            Role::Client,
            &len64,
            Ok(C(header(true, Opcode::Binary, None, 5, 10))),
        );
    }

    #[test]
    fn headers_that_break_a_rule_are_rejected_with_the_rule() {
        use ProtocolError as P;
        for rsv in [0x40u8, 0x20, 0x10, 0x70] {
            check(
                Role::Client,
                &[0x81 | rsv, 0x00],
                Err(P::ReservedBitsSet(rsv >> 4)),
            );
        }
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            check(Role::Client, &[0x80 | op, 0x00], Err(P::UnknownOpcode(op)));
        }
        check(
            Role::Client,
            &[0x89, 0x7E, 0x00, 0x7E],
            Err(P::ControlFrameTooLong(126)),
        );
        check(Role::Client, &[0x88, 0x7E], Ok(Decoded::Partial));
        check(Role::Client, &[0x09, 0x00], Err(P::FragmentedControlFrame));
        check(Role::Client, &[0x08, 0x00], Err(P::FragmentedControlFrame));
        check(Role::Client, &[0x0A, 0x00], Err(P::FragmentedControlFrame));
        check(Role::Server, &[0x81, 0x00], Err(P::UnmaskedClientFrame));
        check(
            Role::Client,
            &[0x81, 0x80, 1, 2, 3, 4],
            Err(P::MaskedServerFrame),
        );
        check(
            Role::Client,
            &[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0],
            Err(P::LengthMsbSet),
        );
    }

    #[test]
    fn every_prefix_of_a_header_is_partial() {
        let frames: [&[u8]; 4] = [
            &[0x81, 0x85, 1, 2, 3, 4],
            &[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4],
            &[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4],
            &[0x89, 0x80, 9, 9, 9, 9],
        ];
        for f in frames {
            for cut in 0..f.len() {
                check(Role::Server, &f[..cut], Ok(Decoded::Partial));
            }
            assert!(
                matches!(decode_header(f, Role::Server), Ok(Decoded::Complete(h)) if h.header_len == f.len())
            );
        }
    }

    #[test]
    fn encoding_uses_the_minimal_length_form() {
        let cases: [(u64, &[u8]); 6] = [
            (0, &[0x82, 0x00]),
            (125, &[0x82, 0x7D]),
            (126, &[0x82, 0x7E, 0x00, 0x7E]),
            (65535, &[0x82, 0x7E, 0xFF, 0xFF]),
            (65536, &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]),
            (
                u64::MAX >> 1,
                &[0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
        ];
        for (len, expected) in cases {
            let mut out = Vec::new();
            encode_header(&mut out, true, Opcode::Binary, None, len);
            assert_eq!(out, expected, "len {len}");
        }
    }

    #[test]
    fn rfc_6455_examples_decode() {
        // §5.7: a single-frame unmasked text message, and the masked form.
        let mut unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let Ok(Decoded::Complete(f)) = decode_frame(&mut unmasked, Role::Client) else {
            panic!("decode")
        };
        assert_eq!(f.payload, b"Hello");
        let mut masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let Ok(Decoded::Complete(f)) = decode_frame(&mut masked, Role::Server) else {
            panic!("decode")
        };
        assert_eq!((f.payload, f.wire_len()), (&b"Hello"[..], 11));
    }

    #[test]
    fn whole_frame_decode_is_partial_until_the_payload_is_complete() {
        let mut frame = Vec::new();
        encode_frame(
            &mut frame,
            true,
            Opcode::Binary,
            Some([9, 8, 7, 6]),
            &[0xAB; 300],
        );
        for cut in 0..frame.len() {
            let mut prefix = frame[..cut].to_vec();
            assert_eq!(
                decode_frame(&mut prefix, Role::Server),
                Ok(Decoded::Partial),
                "cut {cut}"
            );
            assert_eq!(
                prefix,
                frame[..cut],
                "partial decode must not touch the buffer"
            );
        }
    }
}
