//! Fuzzes the WebSocket frame decoder: header validation and whole-frame
//! decoding for both roles, asserting the incremental contract and that
//! re-encoding a decoded header decodes to the same header.
#![no_main]

use cairn_proto::ws::frame::{Decoded, Role, decode_frame, decode_header, encode_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let role = if selector & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    match decode_header(input, role) {
        Err(_) => {
            // A bad header is bad however much follows, and decode_frame agrees.
            assert!(decode_frame(&mut input.to_vec(), role).is_err());
        }
        Ok(Decoded::Partial) => {
            assert!(
                input.len() < 14,
                "a 14-byte prefix always decides the header"
            );
            let mut copy = input.to_vec();
            assert_eq!(decode_frame(&mut copy, role), Ok(Decoded::Partial));
            assert_eq!(copy, input, "Partial must consume and change nothing");
        }
        Ok(Decoded::Complete(h)) => {
            assert!((2..=14).contains(&h.header_len) && h.header_len <= input.len());
            assert_eq!(h.mask.is_some(), role == Role::Server);
            // Every shorter prefix is Partial.
            for cut in 0..h.header_len {
                assert_eq!(
                    decode_header(&input[..cut], role),
                    Ok(Decoded::Partial),
                    "cut {cut}"
                );
            }
            // Re-encoding (minimal length form) decodes to the same header.
            let mut again = Vec::new();
            encode_header(&mut again, h.fin, h.opcode, h.mask, h.payload_len);
            assert!(again.len() <= h.header_len);
            match decode_header(&again, role) {
                Ok(Decoded::Complete(h2)) => {
                    assert_eq!(
                        (h2.fin, h2.opcode, h2.mask, h2.payload_len),
                        (h.fin, h.opcode, h.mask, h.payload_len)
                    );
                    assert_eq!(h2.header_len, again.len());
                }
                other => panic!("re-encoded header did not decode: {other:?}"),
            }
            let mut copy = input.to_vec();
            let whole = (input.len() - h.header_len) as u64 >= h.payload_len;
            match decode_frame(&mut copy, role) {
                Ok(Decoded::Complete(f)) => {
                    assert!(whole);
                    assert_eq!(f.header, h);
                    assert_eq!(f.wire_len(), h.header_len + h.payload_len as usize);
                }
                Ok(Decoded::Partial) => assert!(!whole),
                Err(e) => panic!("header decoded but frame did not: {e:?}"),
            }
        }
    }
});
