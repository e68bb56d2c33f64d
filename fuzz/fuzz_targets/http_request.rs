//! Fuzz target: the server request decoder. Properties asserted, beyond not
//! crashing: feeding the input in pieces gives the same events as feeding it
//! whole (trailer fields included), a prefix of a complete head is
//! `Partial`, never an error, the fast head path agrees with the
//! reference path, and the whole-request `decode` (which takes its own
//! shortcuts through the connection state) gives, for any split, the requests
//! and the verdict the event stream gives.
#![no_main]

use bytes::BytesMut;
use cairn_proto::http::head::parse_request_head_reference;
use cairn_proto::http::{
    ConnState, Error, Event, Limits, Request, RequestDecoder, Status, parse_request_head,
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

/// What `decode` yields, in the shape of [`run`]'s items: each request as
/// `Head` (body and trailers moved out), `Body` when it has one, `End` with
/// its trailer fields; then the error, if any.
fn run_decode(input: &[u8], piece: usize) -> Vec<Item> {
    let mut decoder = RequestDecoder::new(limits());
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut fed = 0;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(r)) => {
                let trailers: Vec<_> = r
                    .trailers()
                    .map(|(n, v)| (n.to_string(), v.to_vec()))
                    .collect();
                let body = r.body.to_vec();
                items.push(Item::Head(without_body(&r)));
                if !body.is_empty() {
                    items.push(Item::Body(body));
                }
                items.push(Item::End(trailers));
                decoder
                    .response_sent(true)
                    .expect("a complete request awaits a response");
            }
            Ok(None) if matches!(decoder.state(), ConnState::Closing | ConnState::Closed) => {
                return items;
            }
            Ok(None) => {
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

/// `r` as the event stream hands it out: the same head, no body, no trailers
/// (rebuilt by decoding its head bytes on their own).
fn without_body(r: &Request) -> Request {
    let mut decoder = RequestDecoder::new(limits());
    let mut buf = BytesMut::from(&r.head_bytes()[..]);
    match decoder.next_event(&mut buf) {
        Ok(Event::Head(head)) => head,
        other => panic!("a decoded head did not decode again on its own: {other:?}"),
    }
}

/// The event stream's items with a request cut short by an error or the end
/// of input dropped (its head and partial body), as `decode` never yields it.
fn complete_requests(mut items: Vec<Item>) -> Vec<Item> {
    let verdict = match items.last() {
        Some(Item::Err(_) | Item::EofErr(_)) => items.pop(),
        _ => None,
    };
    while matches!(items.last(), Some(Item::Head(_) | Item::Body(_))) {
        items.pop();
    }
    items.extend(verdict);
    items
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

    let decoded = run_decode(input, usize::from(split % 17) + 1);
    assert_eq!(
        complete_requests(whole),
        decoded,
        "decode in pieces of {} disagrees with the event stream",
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
