//! Request parsing against literal wire bytes: what is accepted, what each
//! rule rejects (with the status to answer), and every limit at its value and one past it.

use bytes::BytesMut;
use cairn_proto::http::{
    BodyKind, Error, Event, Limits, Request, RequestDecoder, Status, Version, parse_request_head,
};

/// Decodes every request in `input` (answering each), or the first error.
fn decode_all(input: &[u8], limits: Limits) -> Result<Vec<Request>, Error> {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(request) = decoder.decode(&mut buf)? {
        out.push(request);
        decoder.response_sent(true).unwrap();
    }
    Ok(out)
}

/// Asserts `input` holds exactly one request, summarised as
/// `(method, target, version, body, keep_alive)`.
#[track_caller]
fn check(input: &[u8], expected: (&str, &str, Version, &[u8], bool)) {
    let requests =
        decode_all(input, Limits::default()).unwrap_or_else(|e| panic!("{e:?} for {input:?}"));
    assert_eq!(requests.len(), 1, "{input:?}");
    let r = &requests[0];
    let got = (r.method(), r.target(), r.version, &r.body[..], r.keep_alive);
    assert_eq!(got, expected, "{input:?}");
}

/// Asserts the first problem in `input` is `expected`, answered with `status`.
#[track_caller]
fn check_err(input: &[u8], expected: Error, status: u16) {
    check_err_with(input, Limits::default(), expected, status);
}

#[track_caller]
fn check_err_with(input: &[u8], limits: Limits, expected: Error, status: u16) {
    let got = decode_all(input, limits).map(|r| r.len());
    assert_eq!(got, Err(expected), "{:?}", String::from_utf8_lossy(input));
    assert_eq!(expected.status(), status);
    assert!(expected.must_close());
}

use Version::{Http10, Http11};

#[test]
fn valid_requests_parse_to_their_parts() {
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ("GET", "/", Http11, b"", true),
    );
    check(
        b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
        ("HEAD", "/x", Http11, b"", true),
    );
    check(
        b"GET /p?q=1 HTTP/1.0\r\n\r\n",
        ("GET", "/p?q=1", Http10, b"", false),
    );
    check(
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ("GET", "/", Http10, b"", true),
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ("GET", "/", Http11, b"", false),
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n",
        ("GET", "/", Http11, b"", false),
    );
    check(
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ("GET", "/", Http11, b"", true),
    );
    check(
        b"GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\n\r\n",
        ("GET", "http://a.example/x?y", Http11, b"", true),
    );
    check(
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        ("OPTIONS", "*", Http11, b"", true),
    );
    check(
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        ("GET", "/", Http11, b"", true),
    );
    check(
        b"GET / HTTP/1.9\r\nHost: a\r\n\r\n",
        ("GET", "/", Http11, b"", true),
    );
    check(
        b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
        ("FOO", "/", Http11, b"", true),
    );
    check(
        b"GET / HTTP/1.1\nHost: a\n\n",
        ("GET", "/", Http11, b"", true),
    );
    check(
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        ("GET", "/", Http11, b"", true),
    );
    check(
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        ("GET", "/", Http11, b"", true),
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        ("POST", "/", Http11, b"hello", true),
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        ("POST", "/", Http11, b"", true),
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length:  5 \r\n\r\nhello",
        ("POST", "/", Http11, b"hello", true),
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        ("POST", "/", Http11, b"hello", true),
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 005\r\n\r\nhello",
        ("POST", "/", Http11, b"hello", true),
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi",
        ("GET", "/", Http11, b"hi", true),
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ("POST", "/", Http11, b"hello", true),
    );
    check(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
        ("POST", "/", Http11, b"", true),
    );
    let with_trailer: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;a=b\r\nhello\r\n00A\r\n0123456789\r\n0\r\nT: x\r\n\r\n";
    check(
        with_trailer,
        ("POST", "/", Http11, b"hello0123456789", true),
    );
    check(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n",
        ("GET", "/", Http11, b"", true),
    );
}

#[test]
fn framing_faults_are_rejected_with_400_and_close() {
    let cl_te = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    check_err(cl_te, Error::ContentLengthWithTransferEncoding, 400);
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        Error::ConflictingContentLength,
        400,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 40\r\n\r\nhello",
        Error::BadContentLength,
        400,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        Error::BadContentLength,
        400,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        Error::BadContentLength,
        400,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
        Error::BadContentLength,
        400,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
        Error::BadContentLength,
        400,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
        Error::BadContentLength,
        400,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        Error::BadTransferEncoding,
        400,
    );
    let chunked_twice: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    check_err(chunked_twice, Error::BadTransferEncoding, 400);
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n",
        Error::BadTransferEncoding,
        400,
    );
    check_err(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Error::BadTransferEncoding,
        400,
    );
}

#[test]
fn unsupported_transfer_codings_are_501() {
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        Error::UnsupportedTransferCoding,
        501,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\n",
        Error::UnsupportedTransferCoding,
        501,
    );
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 1\r\n\r\nx",
        Error::UnsupportedTransferCoding,
        501,
    );
}

#[test]
fn syntax_faults_are_rejected_with_400() {
    check_err(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        Error::BadHeaderName,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        Error::BadHeaderName,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
        Error::BadHeaderValue,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
        Error::BadHeaderValue,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        Error::BadHeaderValue,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
        Error::BadHeaderValue,
        400,
    );
    check_err(
        b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n",
        Error::BadTarget,
        400,
    );
    check_err(
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        Error::BadVersion,
        400,
    );
    check_err(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadTarget, 400);
    check_err(
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        Error::BadVersion,
        400,
    );
    check_err(b"GET / HTTP/1.1\rHost: a\r\n\r\n", Error::BadVersion, 400);
    check_err(
        b"GET / HTTP/1.1\r\nNoColon\r\nHost: a\r\n\r\n",
        Error::BadHeaderName,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\nX Foo: bar\r\nHost: a\r\n\r\n",
        Error::BadHeaderName,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\nX@Foo: bar\r\nHost: a\r\n\r\n",
        Error::BadHeaderName,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\nHost: a\r\n\r\n",
        Error::BadHeaderName,
        400,
    );
    check_err(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadMethod, 400);
    check_err(b"/ HTTP/1.1\r\nHost: a\r\n\r\n", Error::BadMethod, 400);
    check_err(b"GET\r\nHost: a\r\n\r\n", Error::BadMethod, 400);
    check_err(b"GET / HTTP/one\r\nHost: a\r\n\r\n", Error::BadVersion, 400);
    check_err(b"GET / http/1.1\r\nHost: a\r\n\r\n", Error::BadVersion, 400);
    check_err(
        b"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
        Error::BadVersion,
        400,
    );
}

#[test]
fn host_is_required_once_and_valid_in_http11() {
    check_err(
        b"GET / HTTP/1.1\r\n\r\n",
        Error::MissingOrDuplicateHost,
        400,
    );
    check_err(
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        Error::MissingOrDuplicateHost,
        400,
    );
    check_err(
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        Error::MissingOrDuplicateHost,
        400,
    );
    check_err(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Error::BadHost, 400);
    check_err(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Error::BadHost, 400);
    check_err(b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", Error::BadHost, 400);
}

#[test]
fn major_versions_other_than_1_are_505() {
    check_err(
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        Error::VersionNotSupported,
        505,
    );
    check_err(
        b"GET / HTTP/3.0\r\nHost: a\r\n\r\n",
        Error::VersionNotSupported,
        505,
    );
    check_err(
        b"GET / HTTP/0.9\r\nHost: a\r\n\r\n",
        Error::VersionNotSupported,
        505,
    );
}

#[test]
fn declared_body_over_the_limit_is_413_before_any_body_byte() {
    check_err(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000\r\n\r\n",
        Error::BodyTooLarge,
        413,
    );
}

fn small_limits() -> Limits {
    Limits {
        request_line_bytes_max: 32,
        header_bytes_max: 64,
        header_count_max: 4,
        body_bytes_max: 10,
        chunk_extension_bytes_max: 8,
    }
}

/// `GET /` plus padding to make the request line exactly `len` bytes with CRLF.
fn line_of(len: usize) -> Vec<u8> {
    let mut v = b"GET /".to_vec();
    v.resize(len - b" HTTP/1.1\r\n".len(), b'a');
    v.extend_from_slice(b" HTTP/1.1\r\n");
    v
}

#[test]
fn request_line_limit_admits_its_value_and_rejects_one_more_with_414() {
    let limits = small_limits();
    let mut at = line_of(32);
    at.extend_from_slice(b"Host: a\r\n\r\n");
    assert_eq!(decode_all(&at, limits).map(|r| r.len()), Ok(1));
    let mut over = line_of(33);
    over.extend_from_slice(b"Host: a\r\n\r\n");
    check_err_with(&over, limits, Error::RequestLineTooLong, 414);
    // Without a line end in sight, 33 bytes already prove the line too long.
    check_err_with(&[b'G'; 33], limits, Error::RequestLineTooLong, 414);
    assert_eq!(decode_all(&[b'G'; 31], limits).map(|r| r.len()), Ok(0));
}

/// A head whose header section is exactly `len` bytes.
fn section_of(len: usize) -> Vec<u8> {
    let mut v = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
    let fixed = b"Host: a\r\nX: ".len() + b"\r\n\r\n".len();
    v.resize(v.len() + len - fixed, b'v');
    v.extend_from_slice(b"\r\n\r\n");
    v
}

#[test]
fn header_bytes_limit_admits_its_value_and_rejects_one_more_with_431() {
    let limits = small_limits();
    assert_eq!(decode_all(&section_of(64), limits).map(|r| r.len()), Ok(1));
    check_err_with(&section_of(65), limits, Error::HeaderTooLarge, 431);
}

#[test]
fn header_count_limit_admits_its_value_and_rejects_one_more_with_431() {
    let limits = small_limits();
    let at = b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
    assert_eq!(decode_all(at, limits).map(|r| r.len()), Ok(1));
    let over = b"GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n";
    check_err_with(over, limits, Error::TooManyHeaders, 431);
}

#[test]
fn header_count_limit_above_the_stack_storage_still_holds() {
    let limits = Limits {
        header_count_max: 100,
        ..Limits::default()
    };
    let mut at = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..99 {
        at.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let mut over = at.clone();
    at.extend_from_slice(b"\r\n");
    over.extend_from_slice(b"X-last: v\r\n\r\n");
    assert_eq!(decode_all(&at, limits).map(|r| r.len()), Ok(1));
    check_err_with(&over, limits, Error::TooManyHeaders, 431);
}

#[test]
fn content_length_limit_admits_its_value_and_rejects_one_more_with_413() {
    let limits = small_limits();
    let at = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789";
    assert_eq!(decode_all(at, limits).map(|r| r.len()), Ok(1));
    let over = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    check_err_with(over, limits, Error::BodyTooLarge, 413);
}

#[test]
fn chunked_body_limit_admits_its_value_and_rejects_one_more_with_413() {
    let limits = small_limits();
    let at = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n";
    assert_eq!(decode_all(at, limits).map(|r| r.len()), Ok(1));
    let over =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n6\r\n";
    check_err_with(over, limits, Error::BodyTooLarge, 413);
}

#[test]
fn chunk_extension_limit_admits_its_value_and_rejects_one_more_with_400() {
    let limits = small_limits();
    let at = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;abcdefg\r\nx\r\n0\r\n\r\n";
    assert_eq!(decode_all(at, limits).map(|r| r.len()), Ok(1));
    let over = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;abcdefgh\r\nx\r\n0\r\n\r\n";
    check_err_with(over, limits, Error::ChunkExtensionTooLong, 400);
}

#[test]
fn default_limits_are_the_documented_values() {
    let l = Limits::default();
    assert_eq!(l.request_line_bytes_max, 8 * 1024);
    assert_eq!(l.header_bytes_max, 16 * 1024);
    assert_eq!(l.header_count_max, 64);
    assert_eq!(l.body_bytes_max, 1024 * 1024);
    assert_eq!(l.chunk_extension_bytes_max, 1024);
}

#[test]
fn borrowed_head_parse_reports_framing_and_borrows_the_input() {
    let input =
        b"PUT /k?v=1 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc";
    let mut storage = [httparse::EMPTY_HEADER; 8];
    let Ok(Status::Complete(head)) = parse_request_head(input, &Limits::default(), &mut storage)
    else {
        panic!("expected a complete head");
    };
    assert_eq!(
        (head.method, head.target, head.version),
        ("PUT", "/k?v=1", Version::Http11)
    );
    assert_eq!(head.body, BodyKind::Length(3));
    assert!(head.expect_continue && head.keep_alive && !head.upgrade);
    assert_eq!(head.len, input.len() - 3);
    assert_eq!(head.header_count, 3);
    assert_eq!(storage[1].name, "Expect");
    assert_eq!(storage[0].value.as_ptr(), input[27..].as_ptr());
}

#[test]
fn every_proper_prefix_of_a_head_is_partial() {
    let input =
        b"\r\nPOST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nUser-Agent: t\r\n\r\n";
    for cut in 0..input.len() {
        let mut storage = [httparse::EMPTY_HEADER; 8];
        let got = parse_request_head(&input[..cut], &Limits::default(), &mut storage);
        assert_eq!(got, Ok(Status::Partial), "prefix of {cut} bytes");
    }
}

#[test]
fn request_exposes_headers_in_order_with_trimmed_values() {
    let requests = decode_all(
        b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-One:  1 \r\nx-two:2\r\n\r\n",
        Limits::default(),
    );
    let r = &requests.unwrap()[0];
    let fields: Vec<(&str, &[u8])> = r.headers().collect();
    assert_eq!(
        fields,
        [("Host", &b"h"[..]), ("X-One", b"1"), ("x-two", b"2")]
    );
    assert_eq!(r.header("X-TWO"), Some(&b"2"[..]));
    assert_eq!(r.header("missing"), None);
    assert_eq!(
        (r.split_target().path, r.split_target().query),
        ("/a", Some("b=c"))
    );
}

#[test]
fn upgrade_and_expect_flags_are_reported() {
    let upgrade: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let r = &decode_all(upgrade, Limits::default()).unwrap()[0];
    assert!(r.upgrade && r.keep_alive);
    // Expect without a body has nothing to wait for.
    let r = &decode_all(
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        Limits::default(),
    )
    .unwrap()[0];
    assert!(!r.expect_continue);
}

#[test]
fn expectations_other_than_100_continue_are_417() {
    let post = |expect: &str| {
        format!("POST / HTTP/1.1\r\nHost: h\r\nExpect: {expect}\r\nContent-Length: 2\r\n\r\nhi")
    };
    for unmet in [
        "202-accepted",
        "100-continue, x",
        "100-continue=1",
        "100-continuex",
    ] {
        check_err(post(unmet).as_bytes(), Error::ExpectationFailed, 417);
    }
    // Also without a body, in HTTP/1.0 and in a second Expect field.
    check_err(
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: foo\r\n\r\n",
        Error::ExpectationFailed,
        417,
    );
    check_err(
        b"GET / HTTP/1.0\r\nExpect: foo\r\n\r\n",
        Error::ExpectationFailed,
        417,
    );
    check_err(
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nExpect: foo\r\n\r\n",
        Error::ExpectationFailed,
        417,
    );
    // A framing fault is reported ahead of the expectation.
    check_err(
        b"POST / HTTP/1.1\r\nExpect: foo\r\nContent-Length: 1\r\n\r\nx",
        Error::MissingOrDuplicateHost,
        400,
    );
    // 100-continue in any case, with empty list members, is met.
    for met in ["100-Continue", " 100-CONTINUE ", ", 100-continue,", ""] {
        let requests = decode_all(post(met).as_bytes(), Limits::default()).unwrap();
        assert_eq!(requests[0].expect_continue, !met.is_empty(), "{met:?}");
        assert_eq!(&requests[0].body[..], b"hi");
    }
    // HTTP/1.0 clients cannot mean 100-continue (RFC 9110 10.1.1): ignored.
    let r = &decode_all(
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        Limits::default(),
    )
    .unwrap()[0];
    assert!(!r.expect_continue);
}

#[test]
fn chunked_trailers_are_kept_apart_from_the_headers() {
    let input: &[u8] = b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\n0\r\nX-Sum: 42\r\nx-note:  a b \r\n\r\n\
        GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
    let requests = decode_all(input, Limits::default()).unwrap();
    assert_eq!(requests.len(), 2);
    let r = &requests[0];
    assert_eq!(&r.body[..], b"hello");
    let trailers: Vec<(&str, &[u8])> = r.trailers().collect();
    assert_eq!(trailers, [("X-Sum", &b"42"[..]), ("x-note", b"a b")]);
    assert_eq!(
        r.header("X-Sum"),
        None,
        "trailers are not merged into the headers"
    );
    assert_eq!(requests[1].trailers().count(), 0);
    assert_eq!(requests[1].target(), "/next");

    // Streaming: the same fields from the decoder after End, until the next head.
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::from(input);
    let mut seen = Vec::new();
    loop {
        match decoder.next_event(&mut buf).unwrap() {
            Event::End => {
                seen.push(
                    decoder
                        .trailers()
                        .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
                        .collect::<Vec<_>>(),
                );
                decoder.response_sent(true).unwrap();
            }
            Event::NeedData | Event::Closed => break,
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            vec!["X-Sum=42".to_string(), "x-note=a b".to_string()],
            vec![]
        ]
    );

    // No trailer fields, and a Content-Length body: nothing.
    let plain = decode_all(
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Limits::default(),
    )
    .unwrap();
    assert_eq!(plain[0].trailers().count(), 0);
}

#[test]
fn trailer_section_obeys_the_header_limits() {
    let chunked = |trailers: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{trailers}\r\n"
        )
    };
    let limits = Limits {
        header_count_max: 2,
        ..Limits::default()
    };
    let two = chunked("A: 1\r\nB: 2\r\n");
    assert_eq!(
        decode_all(two.as_bytes(), limits).unwrap()[0]
            .trailers()
            .count(),
        2
    );
    let three = chunked("A: 1\r\nB: 2\r\nC: 3\r\n");
    check_err_with(three.as_bytes(), limits, Error::TooManyHeaders, 431);
    // Above the stack storage, too.
    let limits = Limits {
        header_count_max: 100,
        ..Limits::default()
    };
    let many: String = (0..100).map(|i| format!("T{i}: v\r\n")).collect();
    assert_eq!(
        decode_all(chunked(&many).as_bytes(), limits).unwrap()[0]
            .trailers()
            .count(),
        100
    );
    let one_more = format!("{many}T100: v\r\n");
    check_err_with(
        chunked(&one_more).as_bytes(),
        limits,
        Error::TooManyHeaders,
        431,
    );
}

#[test]
fn error_display_names_the_fault() {
    assert_eq!(
        Error::ConflictingContentLength.to_string(),
        "conflicting Content-Length values"
    );
    assert_eq!(Error::HeaderTooLarge.status(), 431);
}

#[test]
fn target_bytes_outside_visible_ascii_are_rejected_at_any_offset() {
    for offset in 0..20 {
        for bad in [0x00u8, 0x09, 0x1f, 0x7f, 0x80, 0xff] {
            let mut input = b"GET /".to_vec();
            input.extend(std::iter::repeat_n(b'a', offset));
            input.push(bad);
            input.extend_from_slice(b"b HTTP/1.1\r\nHost: a\r\n\r\n");
            check_err(&input, Error::BadTarget, 400);
        }
        let mut input = b"GET /".to_vec();
        input.extend(std::iter::repeat_n(b'~', offset));
        input.extend_from_slice(b"! HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            decode_all(&input, Limits::default()).map(|r| r.len()),
            Ok(1)
        );
    }
}
