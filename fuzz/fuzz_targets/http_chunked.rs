//! Fuzz target: the chunked body decoder. Properties asserted: ranges stay
//! inside the buffer and always make progress, `Partial` is only returned
//! when nothing can be consumed, and byte-at-a-time feeding yields the same
//! data and outcome as feeding the input whole.
#![no_main]

use cairn_proto::http::{Chunk, ChunkedDecoder, Error, Limits};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Outcome {
    Done { data: Vec<u8>, used: usize },
    Incomplete { data: Vec<u8> },
    Failed { data: Vec<u8>, error: Error },
}

fn limits() -> Limits {
    Limits { body_bytes_max: 4096, chunk_extension_bytes_max: 16, header_bytes_max: 256, ..Limits::default() }
}

fn run(input: &[u8], piece: usize) -> Outcome {
    let mut decoder = ChunkedDecoder::new(limits());
    let mut data = Vec::new();
    // The window [start, end) is what has been "received" but not consumed.
    let (mut start, mut end) = (0, 0);
    loop {
        let window = &input[start..end];
        match decoder.decode(window) {
            Ok(Chunk::Data { start: s, end: e }) => {
                assert!(s <= e && e <= window.len() && e > 0, "bad range {s}..{e} of {}", window.len());
                data.extend_from_slice(&window[s..e]);
                start += e;
            }
            Ok(Chunk::End { consumed }) => {
                assert!(consumed <= window.len());
                assert!(decoder.is_done());
                return Outcome::Done { data, used: start + consumed };
            }
            Ok(Chunk::Partial) => {
                if end == input.len() {
                    return Outcome::Incomplete { data };
                }
                end = (end + piece).min(input.len());
            }
            Err(error) => return Outcome::Failed { data, error },
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let whole = run(input, input.len().max(1));
    let bytewise = run(input, 1);
    match (&whole, &bytewise) {
        // Data may be released earlier bytewise, before the error is seen;
        // what was released whole must be a prefix of it.
        (Outcome::Failed { data: a, error: x }, Outcome::Failed { data: b, error: y }) => {
            assert_eq!(x, y);
            assert!(b.starts_with(a) || a.starts_with(b));
        }
        _ => assert_eq!(whole, bytewise),
    }
});
