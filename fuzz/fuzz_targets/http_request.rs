//! Fuzz target: the server request decoder. Properties asserted, beyond not
//! crashing: feeding the input in pieces gives the same events as feeding it
//! whole (trailer fields included), a prefix of a complete head is
//! `Partial`, never an error, and the fast head path agrees with the
//! reference path.
#![no_main]

use bytes::BytesMut;
use cairn_proto::http::head::parse_request_head_reference;
use cairn_proto::http::{
    Error, Event, Limits, Request, RequestDecoder, Status, parse_request_head,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Item {
    Head(Request),
    Body(Vec<u8>),
    /// The end of a request, with its trailer fields.
    End(Vec<(String, Vec<u8>)>),
    Err(Error),
    EofErr(Error),
}

/// Small limits so the fuzzer reaches every limit branch quickly.
fn limits() -> Limits {
    Limits {
        request_line_bytes_max: 256,
        header_bytes_max: 512,
        header_count_max: 8,
        body_bytes_max: 1024,
        chunk_extension_bytes_max: 16,
    }
}

fn run(input: &[u8], piece: usize) -> Vec<Item> {
    let mut decoder = RequestDecoder::new(limits());
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.next_event(&mut buf) {
            Ok(Event::Head(r)) => items.push(Item::Head(r)),
            Ok(Event::Body(b)) => match items.last_mut() {
                Some(Item::Body(acc)) => acc.extend_from_slice(&b),
                _ => items.push(Item::Body(b.to_vec())),
            },
            Ok(Event::End) => {
                let trailers = decoder.trailers().map(|(n, v)| (n.to_string(), v.to_vec()));
                items.push(Item::End(trailers.collect()));
                decoder
                    .response_sent(true)
                    .expect("a complete request awaits a response");
            }
            Ok(Event::Paused) | Ok(Event::Closed) => return items,
            Ok(Event::NeedData) => {
                if fed == input.len() {
                    if let Err(e) = decoder.peer_closed() {
                        items.push(Item::EofErr(e));
                    }
                    return items;
                }
                let end = (fed + piece).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            Err(e) => {
                items.push(Item::Err(e));
                return items;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, input.len().max(1));
    let pieces = run(input, usize::from(split % 17) + 1);
    assert_eq!(
        whole,
        pieces,
        "split into pieces of {} changed the events",
        split % 17 + 1
    );

    // The fast path (one httparse call) must agree with the reference path.
    let mut fast_fields = [httparse::EMPTY_HEADER; 8];
    let mut reference_fields = [httparse::EMPTY_HEADER; 8];
    let fast = parse_request_head(input, &limits(), &mut fast_fields);
    let reference = parse_request_head_reference(input, &limits(), &mut reference_fields);
    assert_eq!(fast, reference, "fast and reference head parsers disagree");
    if let Ok(Status::Complete(head)) = fast {
        assert_eq!(
            fast_fields[..head.header_count],
            reference_fields[..head.header_count]
        );
    }

    let mut storage = [httparse::EMPTY_HEADER; 8];
    if let Ok(Status::Complete(head)) = parse_request_head(input, &limits(), &mut storage) {
        assert!(head.len <= input.len());
        for cut in [head.len - 1, head.len / 2, usize::from(split) % head.len] {
            let mut storage = [httparse::EMPTY_HEADER; 8];
            let prefix = parse_request_head(&input[..cut], &limits(), &mut storage);
            assert_eq!(
                prefix,
                Ok(Status::Partial),
                "prefix of {cut} bytes of a complete head"
            );
        }
    }
});
