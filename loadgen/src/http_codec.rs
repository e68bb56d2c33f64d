//! The seam between the load generator and the HTTP/1.1 client codec.
//!
//! Workers only call [`write_request`] and [`ResponseReader::decode`], so
//! the codec behind them can change without touching the I/O loops.
//!
//! TEMPORARY: until `cairn-proto::http`'s client side (`write_request`,
//! `ResponseDecoder::decode`) is merged into this branch, this module parses
//! response heads with `httparse` and handles `Content-Length` bodies only.
//! Replace the bodies of these two functions with calls to
//! `cairn_proto::http::{write_request, ResponseDecoder}` once it lands.

use bytes::{Buf, BytesMut};

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
pub struct ProtocolError(pub String);

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
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), InvalidRequest> {
    let token = |s: &[u8]| !s.is_empty() && s.iter().all(|b| b.is_ascii_graphic());
    if !token(method.as_bytes()) || !token(target) {
        return Err(InvalidRequest);
    }
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if !token(name.as_bytes()) || value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(InvalidRequest);
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !(body.is_empty() && (method == "GET" || method == "HEAD")) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// Decodes the responses of one connection, in order.
#[derive(Debug, Default)]
pub struct ResponseReader {
    /// Head parsed, body bytes still to skip.
    pending: Option<(Reply, usize)>,
}

impl ResponseReader {
    /// A reader for a fresh connection.
    pub fn new() -> Self {
        ResponseReader::default()
    }

    /// Returns the next whole response and removes it from `buf`, or `None`
    /// when more bytes are needed. `request_was_head` says whether the
    /// request it answers was `HEAD` (its response has no body).
    pub fn decode(&mut self, buf: &mut BytesMut, request_was_head: bool) -> Result<Option<Reply>, ProtocolError> {
        if self.pending.is_none() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            let head_len = match response.parse(buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) if buf.len() > 64 * 1024 => {
                    return Err(ProtocolError("response head over 64 KiB".into()));
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(ProtocolError(e.to_string())),
            };
            let status = response.code.unwrap_or(0);
            let mut keep_alive = response.version == Some(1);
            let mut length = 0usize;
            for h in response.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(|| ProtocolError("bad Content-Length".into()))?;
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(ProtocolError("chunked responses need cairn-proto's client codec".into()));
                } else if h.name.eq_ignore_ascii_case("connection") {
                    keep_alive &= !h.value.eq_ignore_ascii_case(b"close");
                }
            }
            if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
                length = 0;
            }
            buf.advance(head_len);
            self.pending = Some((Reply { status, keep_alive }, length));
        }
        match self.pending {
            Some((reply, length)) if buf.len() >= length => {
                buf.advance(length);
                self.pending = None;
                Ok(Some(reply))
            }
            _ => Ok(None),
        }
    }
}
