//! The client side: request writer and response decoder against literal bytes,
//! including 1xx, HEAD/204/304 with no body, chunked and close-delimited bodies.

use bytes::BytesMut;
use cairn_proto::http::{
    ChunkedWriter, Error, Limits, Response, ResponseDecoder, Status, Version, peek_status,
    write_request, write_request_head,
};

/// Decodes every response in `input`; `head` says which requests were HEAD.
fn decode(input: &[u8], head: &[bool], eof: bool) -> Result<Vec<Response>, Error> {
    let mut d = ResponseDecoder::new(Limits::default());
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let was_head = head.get(i).copied().unwrap_or(false);
        match d.decode(&mut buf, was_head)? {
            Some(r) => {
                if !r.is_informational() {
                    i += 1;
                }
                out.push(r);
            }
            None if eof => {
                if let Some(r) = d.decode_eof(&mut buf, was_head)? {
                    out.push(r);
                }
                return Ok(out);
            }
            None => return Ok(out),
        }
    }
}

/// Asserts the responses' `(status, body, keep_alive)`.
#[track_caller]
fn check(input: &[u8], head: &[bool], eof: bool, expected: &[(u16, &[u8], bool)]) {
    let got = decode(input, head, eof).unwrap();
    let got: Vec<(u16, &[u8], bool)> = got
        .iter()
        .map(|r| (r.status, &r.body[..], r.keep_alive))
        .collect();
    assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input));
}

#[test]
fn responses_decode_by_their_framing() {
    check(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        &[],
        false,
        &[(200, b"hi", true)],
    );
    check(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        &[],
        false,
        &[(200, b"hi", true)],
    );
    check(
        b"HTTP/1.1 200 OK\r\n\r\nuntil close",
        &[],
        true,
        &[(200, b"until close", false)],
    );
    check(b"HTTP/1.1 200 OK\r\n\r\nuntil close", &[], false, &[]);
    check(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
        &[],
        false,
        &[(200, b"x", false)],
    );
    check(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
        &[],
        false,
        &[(200, b"x", false)],
    );
}

#[test]
fn head_204_304_and_1xx_responses_have_no_body() {
    check(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        &[true],
        false,
        &[(200, b"", true), (204, b"", true)],
    );
    check(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        &[],
        false,
        &[(304, b"", true)],
    );
    check(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        &[],
        false,
        &[(100, b"", true), (200, b"x", true)],
    );
}

#[test]
fn truncated_responses_are_unexpected_eof() {
    assert_eq!(
        decode(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi", &[], true),
        Err(Error::UnexpectedEof)
    );
    assert_eq!(
        decode(b"HTTP/1.1 200 OK\r\nContent", &[], true),
        Err(Error::UnexpectedEof)
    );
    assert_eq!(
        decode(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhi",
            &[],
            true
        ),
        Err(Error::UnexpectedEof)
    );
}

#[test]
fn malformed_responses_are_errors() {
    assert_eq!(
        decode(b"HTTP/1.1 2000 OK\r\n\r\n", &[], false),
        Err(Error::BadStatusLine)
    );
    assert_eq!(
        decode(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &[], false),
        Err(Error::BadContentLength)
    );
    assert_eq!(
        decode(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &[],
            false
        ),
        Err(Error::ConflictingContentLength)
    );
}

#[test]
fn response_fields_are_readable_and_status_can_be_peeked() {
    let r = &decode(
        b"HTTP/1.1 404 Not Found\r\nX-Id: 7\r\nContent-Length: 0\r\n\r\n",
        &[],
        false,
    )
    .unwrap()[0];
    assert_eq!((r.status, r.version), (404, Version::Http11));
    assert_eq!(r.header("x-id"), Some(&b"7"[..]));
    assert_eq!(
        peek_status(b"HTTP/1.1 503 Busy\r\nRetry"),
        Ok(Status::Complete(503))
    );
    assert_eq!(peek_status(b"HTTP/1.1 50"), Ok(Status::Partial));
}

#[test]
fn request_writer_emits_literal_bytes() {
    let mut out = Vec::new();
    write_request(&mut out, "GET", "/a?b", &[("Host", b"h")], b"").unwrap();
    assert_eq!(out, b"GET /a?b HTTP/1.1\r\nHost: h\r\n\r\n");
    out.clear();
    write_request(&mut out, "POST", "/k", &[("Host", b"h")], b"xyz").unwrap();
    assert_eq!(
        out,
        b"POST /k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
    );
    out.clear();
    write_request_head(
        &mut out,
        "PUT",
        "/c",
        &[("Host", b"h"), ("Transfer-Encoding", b"chunked")],
        None,
    )
    .unwrap();
    let mut body = ChunkedWriter::new(&mut out);
    body.chunk(b"ab");
    body.finish(&[]).unwrap();
    assert_eq!(
        out,
        b"PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
    );
}

#[test]
fn request_writer_refuses_what_would_not_parse() {
    let mut out = Vec::new();
    assert!(write_request(&mut out, "G T", "/", &[], b"").is_err());
    assert!(write_request(&mut out, "GET", "/a b", &[], b"").is_err());
    assert!(write_request(&mut out, "GET", "", &[], b"").is_err());
    assert!(write_request(&mut out, "GET", "/", &[("X", b"a\r\nb")], b"").is_err());
    assert!(out.is_empty());
}
