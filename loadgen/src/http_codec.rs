//! The seam between the load generator and the HTTP/1.1 client codec,
//! `cairn-proto::http` ([`write_request`](cairn_proto::http::write_request),
//! [`ResponseDecoder`]). Workers call only what is here, so the I/O loops
//! never see the codec's types, and the project has one HTTP parser.

use bytes::BytesMut;
use cairn_proto::http::{Limits, ResponseDecoder};

/// Largest response body accepted. Larger than the server-side default
/// (1 MiB), because a load test may well fetch big objects; a body past it
/// is a protocol error for that connection.
pub const RESPONSE_BODY_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// A response as far as the load generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Whether the server allows another request on this connection.
    pub keep_alive: bool,
}

/// The response did not parse; the connection cannot be trusted further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub cairn_proto::http::Error);

/// The request could not be written (a method, target or header with bytes
/// HTTP does not allow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidRequest;

/// Appends one request with a `Content-Length` body (none for an empty body
/// on `GET` or `HEAD`).
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &[u8],
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<(), InvalidRequest> {
    let target = std::str::from_utf8(target).map_err(|_| InvalidRequest)?;
    cairn_proto::http::write_request(out, method, target, headers, body).map_err(|_| InvalidRequest)
}

/// Decodes the responses of one connection, in order.
#[derive(Debug)]
pub struct ResponseReader {
    decoder: ResponseDecoder,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader::new()
    }
}

impl ResponseReader {
    /// A reader for a fresh connection.
    pub fn new() -> Self {
        let limits = Limits {
            body_bytes_max: RESPONSE_BODY_BYTES_MAX,
            ..Limits::default()
        };
        ResponseReader {
            decoder: ResponseDecoder::new(limits),
        }
    }

    /// Returns the next whole response (interim 1xx ones included) and
    /// removes it from `buf`, or `None` when more bytes are needed.
    /// `request_was_head` says whether the request it answers was `HEAD`.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        request_was_head: bool,
    ) -> Result<Option<Reply>, ProtocolError> {
        match self.decoder.decode(buf, request_was_head) {
            Ok(Some(r)) => Ok(Some(Reply {
                status: r.status,
                keep_alive: r.keep_alive,
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(ProtocolError(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(wire: &[u8], heads: &[bool], expected: &[Reply]) {
        let mut reader = ResponseReader::new();
        let mut buf = BytesMut::from(wire);
        let mut got = Vec::new();
        for head in heads {
            if let Some(r) = reader.decode(&mut buf, *head).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(wire));
    }

    const OK: Reply = Reply {
        status: 200,
        keep_alive: true,
    };

    #[test]
    fn pipelined_responses_come_out_in_order() {
        check(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", &[
            false, false,
        ], &[OK, Reply { status: 404, keep_alive: true }]);
        check(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            &[false],
            &[OK],
        );
        check(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            &[true],
            &[OK],
        );
        check(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            &[false],
            &[Reply {
                status: 200,
                keep_alive: false,
            }],
        );
        check(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",
            &[false],
            &[],
        );
    }

    fn decode_head(content_length: u64) -> Result<Option<Reply>, ProtocolError> {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {content_length}\r\n\r\n");
        ResponseReader::new().decode(&mut BytesMut::from(head.as_bytes()), false)
    }

    #[test]
    fn a_body_at_the_limit_is_awaited_and_one_past_it_is_refused() {
        assert_eq!(decode_head(RESPONSE_BODY_BYTES_MAX), Ok(None));
        assert!(decode_head(RESPONSE_BODY_BYTES_MAX + 1).is_err());
    }

    #[test]
    fn requests_with_a_body_carry_its_length() {
        let mut out = Vec::new();
        write_request(&mut out, "POST", b"/kv/1", &[("Host", b"h")], b"abc").unwrap();
        assert_eq!(
            out,
            b"POST /kv/1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        );
        assert_eq!(
            write_request(&mut out, "GET", b"/a b", &[], b""),
            Err(InvalidRequest)
        );
    }
}
