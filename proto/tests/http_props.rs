//! Property tests: any split of the input decodes identically, and
//! encode-then-decode is the identity for requests and responses.
//! proptest prints the failing case and records its seed in
//! `proptest-regressions/` so a failure replays.

use bytes::BytesMut;
use cairn_proto::http::head::parse_request_head_reference;
use cairn_proto::http::{
    ChunkedWriter, DateCache, Error, Event, Limits, Request, RequestDecoder, Response,
    ResponseDecoder, ResponseWriter, parse_request_head, write_request_head,
};
use proptest::prelude::*;

/// A request as the test generates it.
#[derive(Debug, Clone)]
struct Spec {
    method: String,
    target: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
}

fn field_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,12}".prop_filter("framing fields are written by the encoder", |n| {
        let n = n.to_ascii_lowercase();
        ![
            "host",
            "content-length",
            "transfer-encoding",
            "connection",
            "expect",
        ]
        .contains(&n.as_str())
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        "[A-Z]{1,7}",
        "/[A-Za-z0-9/._~%?=&-]{0,30}",
        proptest::collection::vec((field_name(), "[!-~]([ -~]{0,20}[!-~])?"), 0..6),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(|(method, target, fields, body, chunked)| Spec {
            method,
            target,
            fields,
            body,
            chunked,
        })
}

fn encode(spec: &Spec, out: &mut Vec<u8>) {
    let mut fields: Vec<(&str, &[u8])> = vec![("Host", b"example.test")];
    fields.extend(spec.fields.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    if spec.chunked {
        fields.push(("Transfer-Encoding", b"chunked"));
        write_request_head(out, &spec.method, &spec.target, &fields, None).unwrap();
        let mut body = ChunkedWriter::new(out);
        for piece in spec.body.chunks(37) {
            body.chunk(piece);
        }
        body.finish(&[("X-Trailer", b"t")]).unwrap();
    } else {
        let length = (!spec.body.is_empty()).then_some(spec.body.len() as u64);
        write_request_head(out, &spec.method, &spec.target, &fields, length).unwrap();
        out.extend_from_slice(&spec.body);
    }
}

/// Trailer fields of one request, as `(name, value)`.
type Trailers = Vec<(String, Vec<u8>)>;

/// Streams `input` into a decoder in pieces ending at `cuts`; returns the
/// requests (bodies reassembled), each complete request's trailer fields, and
/// the error, if any.
fn decode_split(input: &[u8], cuts: &[usize]) -> (Vec<Request>, Vec<Trailers>, Option<Error>) {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    let mut fed = 0;
    let mut out: Vec<Request> = Vec::new();
    let mut trailers = Vec::new();
    let mut body = Vec::new();
    for bound in bounds {
        buf.extend_from_slice(&input[fed..bound]);
        fed = bound;
        loop {
            match decoder.next_event(&mut buf) {
                Ok(Event::Head(r)) => out.push(r),
                Ok(Event::Body(b)) => body.extend_from_slice(&b),
                Ok(Event::End) => {
                    if let Some(last) = out.last_mut() {
                        last.body = std::mem::take(&mut body).into();
                    }
                    let fields = decoder.trailers().map(|(n, v)| (n.to_string(), v.to_vec()));
                    trailers.push(fields.collect());
                    decoder.response_sent(true).unwrap();
                }
                Ok(Event::NeedData | Event::Paused | Event::Closed) => break,
                Err(e) => return (out, trailers, Some(e)),
            }
        }
    }
    (out, trailers, None)
}

proptest! {
    #[test]
    fn encode_then_decode_is_the_identity_for_requests(specs in proptest::collection::vec(spec(), 1..4)) {
        let mut wire = Vec::new();
        for s in &specs {
            encode(s, &mut wire);
        }
        let (requests, trailers, error) = decode_split(&wire, &[]);
        prop_assert_eq!(error, None);
        prop_assert_eq!(requests.len(), specs.len());
        for ((r, s), t) in requests.iter().zip(&specs).zip(&trailers) {
            let want: Trailers = if s.chunked {
                vec![("X-Trailer".to_string(), b"t".to_vec())]
            } else {
                Vec::new()
            };
            prop_assert_eq!(t, &want);
            prop_assert_eq!(r.method(), s.method.as_str());
            prop_assert_eq!(r.target(), s.target.as_str());
            prop_assert_eq!(&r.body[..], &s.body[..]);
            prop_assert_eq!(r.chunked, s.chunked);
            let fields: Vec<(String, Vec<u8>)> = r.headers()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("host") && !n.eq_ignore_ascii_case("content-length")
                    && !n.eq_ignore_ascii_case("transfer-encoding"))
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect();
            let want: Vec<(String, Vec<u8>)> =
                s.fields.iter().map(|(n, v)| (n.clone(), v.clone().into_bytes())).collect();
            prop_assert_eq!(fields, want);
        }
    }

    #[test]
    fn any_split_of_valid_pipelined_requests_decodes_identically(
        specs in proptest::collection::vec(spec(), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut wire = Vec::new();
        for s in &specs {
            encode(s, &mut wire);
        }
        prop_assert_eq!(decode_split(&wire, &cuts), decode_split(&wire, &[]));
    }

    #[test]
    fn any_split_of_arbitrary_bytes_decodes_identically(
        prefix in proptest::collection::vec(spec(), 0..2),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut wire = Vec::new();
        for s in &prefix {
            encode(s, &mut wire);
        }
        wire.extend_from_slice(&noise);
        prop_assert_eq!(decode_split(&wire, &cuts), decode_split(&wire, &[]));
    }

    #[test]
    fn fast_and_reference_head_parsers_agree(
        s in spec(),
        noise in proptest::collection::vec(any::<u8>(), 0..16),
        at in any::<usize>(),
        version in prop_oneof![Just(&b"HTTP/1.1"[..]), Just(&b"HTTP/1.0"[..]), Just(&b"HTTP/1.2"[..])],
    ) {
        let mut wire = Vec::new();
        encode(&s, &mut wire);
        let line_end = wire.iter().position(|&b| b == b'\n').unwrap();
        wire.splice(line_end - 9..line_end - 1, version.iter().copied());
        // Also damage the head somewhere, so error paths are compared too.
        let mut damaged = wire.clone();
        let at = at % (damaged.len() + 1);
        damaged.splice(at..at, noise);
        for input in [&wire, &damaged] {
            let limits = Limits::default();
            let mut fast_fields = [httparse::EMPTY_HEADER; 64];
            let mut reference_fields = [httparse::EMPTY_HEADER; 64];
            let fast = parse_request_head(input, &limits, &mut fast_fields);
            let reference = parse_request_head_reference(input, &limits, &mut reference_fields);
            prop_assert_eq!(fast, reference);
        }
    }

    #[test]
    fn encode_then_decode_is_the_identity_for_responses(
        responses in proptest::collection::vec(
            (prop_oneof![Just(200u16), Just(201), Just(204), Just(304), Just(404), Just(503)],
             proptest::collection::vec((field_name(), "[!-~]{1,20}"), 0..4),
             proptest::collection::vec(any::<u8>(), 0..200),
             any::<bool>(), any::<bool>()),
            1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let date = DateCache::new(1_700_000_000);
        let mut wire = Vec::new();
        for (status, fields, body, chunked, head) in &responses {
            let mut w = ResponseWriter::new(&mut wire, *status, &date, *head);
            for (n, v) in fields {
                w.header(n, v.as_bytes()).unwrap();
            }
            if *chunked {
                let mut c = w.chunked();
                c.chunk(body);
                c.finish(&[]).unwrap();
            } else {
                w.body(body);
            }
        }
        let heads: Vec<bool> = responses.iter().map(|r| r.4).collect();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        bounds.push(wire.len());
        bounds.sort_unstable();
        let mut decoder = ResponseDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got: Vec<Response> = Vec::new();
        let mut fed = 0;
        for bound in bounds {
            buf.extend_from_slice(&wire[fed..bound]);
            fed = bound;
            while let Some(r) = decoder.decode(&mut buf, heads.get(got.len()).copied().unwrap_or(false)).unwrap() {
                got.push(r);
            }
        }
        prop_assert_eq!(got.len(), responses.len());
        for (r, (status, fields, body, _, head)) in got.iter().zip(&responses) {
            prop_assert_eq!(r.status, *status);
            let has_body = !*head && ![204, 304].contains(status);
            prop_assert_eq!(&r.body[..], if has_body { &body[..] } else { &[][..] });
            for (n, v) in fields {
                // With repeated names, `header` returns the first of them.
                let repeated = fields.iter().filter(|(m, _)| m.eq_ignore_ascii_case(n)).count() > 1;
                prop_assert!(r.header(n).is_some_and(|got| got == v.as_bytes() || repeated));
            }
            prop_assert!(r.keep_alive);
        }
    }
}
