//! The client side: a request writer and an incremental response decoder
//! (Content-Length, chunked and close-delimited bodies; no body for HEAD,
//! 1xx, 204 and 304), for the load generator and tests.

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::{Chunk, ChunkedDecoder};
use super::error::{Error, Status};
use super::head::{BodyKind, Version, map_httparse, scan_fields};
use super::limits::Limits;
use super::response::{InvalidField, check_field, put_decimal, put_field, status_has_body};

/// Writes a request head. With `content_length` it adds that field; pass
/// `None` for no body, or add `Transfer-Encoding: chunked` yourself and
/// write the body with [`ChunkedWriter::new`](super::ChunkedWriter::new).
/// Give `Host` among `headers` for HTTP/1.1.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    content_length: Option<u64>,
) -> Result<(), InvalidField> {
    let target_ok = !target.is_empty() && target.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !target_ok || check_field(method, b"").is_err() {
        return Err(InvalidField);
    }
    for (name, value) in headers {
        check_field(name, value)?;
    }
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        put_field(out, name, value);
    }
    if let Some(n) = content_length {
        out.extend_from_slice(b"Content-Length: ");
        put_decimal(out, n);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Writes a whole request with a `Content-Length` body (none if `body` is empty
/// and the method is `GET` or `HEAD`).
pub fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Result<(), InvalidField> {
    let length = if body.is_empty() && (method == "GET" || method == "HEAD") {
        None
    } else {
        Some(body.len() as u64)
    };
    write_request_head(out, method, target, headers, length)?;
    out.extend_from_slice(body);
    Ok(())
}

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The version the server answered with.
    pub version: Version,
    /// The status code.
    pub status: u16,
    /// The raw head, status line to empty line.
    pub head: Bytes,
    /// The body (empty for HEAD, 1xx, 204, 304).
    pub body: Bytes,
    /// Whether the server allows another request on the connection.
    pub keep_alive: bool,
}

impl Response {
    /// Whether this is an interim (1xx) response; the final one follows.
    pub fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut storage);
        response.parse(&self.head).ok()?;
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| {
                let start = h.value.as_ptr() as usize - self.head.as_ptr() as usize;
                &self.head[start..start + h.value.len()]
            })
    }
}

#[derive(Debug, Clone)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

#[derive(Debug, Clone)]
struct Pending {
    response: Response,
    body: Body,
}

/// Decodes the responses of one client connection, in order.
///
/// For each call pass whether the request this response answers was `HEAD`
/// (the decoder cannot know which of several pipelined requests it is on).
/// Interim 1xx responses are returned like final ones; skip them with
/// [`Response::is_informational`].
#[derive(Debug, Clone)]
pub struct ResponseDecoder {
    limits: Limits,
    pending: Option<Pending>,
    collected: BytesMut,
}

impl ResponseDecoder {
    /// A decoder for a fresh connection.
    pub fn new(limits: Limits) -> Self {
        ResponseDecoder {
            limits,
            pending: None,
            collected: BytesMut::new(),
        }
    }

    /// Returns the next whole response, or `None` when more bytes are needed.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        request_was_head: bool,
    ) -> Result<Option<Response>, Error> {
        if self.pending.is_none() {
            match self.parse_head(buf, request_was_head)? {
                Some(p) => {
                    self.collected.clear();
                    self.pending = Some(p);
                }
                None => return Ok(None),
            }
        }
        let Some(pending) = self.pending.as_mut() else {
            return Ok(None);
        };
        match &mut pending.body {
            Body::Length(n) => {
                let Ok(n) = usize::try_from(*n) else {
                    return Err(Error::BodyTooLarge);
                };
                if buf.len() < n {
                    return Ok(None);
                }
                let body = buf.split_to(n).freeze();
                Ok(self.pending.take().map(|p| Response { body, ..p.response }))
            }
            Body::Chunked(decoder) => loop {
                match decoder.decode(buf)? {
                    Chunk::Partial => return Ok(None),
                    Chunk::Data { start, end } => {
                        self.collected.extend_from_slice(&buf[start..end]);
                        buf.advance(end);
                    }
                    Chunk::End { consumed } => {
                        buf.advance(consumed);
                        let body = self.collected.split().freeze();
                        return Ok(self.pending.take().map(|p| Response { body, ..p.response }));
                    }
                }
            },
            Body::UntilClose => {
                if self.collected.len() as u64 + buf.len() as u64 > self.limits.body_bytes_max {
                    return Err(Error::BodyTooLarge);
                }
                self.collected.extend_from_slice(buf);
                buf.clear();
                Ok(None)
            }
        }
    }

    /// Tells the decoder the server closed the connection. Completes a
    /// close-delimited response; anything else cut short is `UnexpectedEof`.
    pub fn decode_eof(
        &mut self,
        buf: &mut BytesMut,
        request_was_head: bool,
    ) -> Result<Option<Response>, Error> {
        if let Some(r) = self.decode(buf, request_was_head)? {
            return Ok(Some(r));
        }
        match self.pending.take() {
            Some(Pending {
                response,
                body: Body::UntilClose,
            }) => Ok(Some(Response {
                body: self.collected.split().freeze(),
                ..response
            })),
            Some(_) => Err(Error::UnexpectedEof),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::UnexpectedEof),
        }
    }

    fn parse_head(
        &self,
        buf: &mut BytesMut,
        request_was_head: bool,
    ) -> Result<Option<Pending>, Error> {
        let mut storage = [httparse::EMPTY_HEADER; 64];
        let count = self.limits.header_count_max.min(storage.len());
        let mut response = httparse::Response::new(&mut storage[..count]);
        let len = match response.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > self.limits.request_line_bytes_max + self.limits.header_bytes_max {
                    return Err(Error::HeaderTooLarge);
                }
                return Ok(None);
            }
            Err(e) => return Err(map_httparse(e)),
        };
        let status = response.code.ok_or(Error::BadStatusLine)?;
        let version = if response.version == Some(0) {
            Version::Http10
        } else {
            Version::Http11
        };
        let facts = scan_fields(response.headers)?;
        let mut body = if request_was_head || !status_has_body(status) {
            BodyKind::Empty
        } else if facts.chunked {
            BodyKind::Chunked
        } else {
            match facts.content_length {
                Some(0) => BodyKind::Empty,
                Some(n) if n > self.limits.body_bytes_max => return Err(Error::BodyTooLarge),
                Some(n) => BodyKind::Length(n),
                None => BodyKind::CloseDelimited,
            }
        };
        if status == 101 {
            body = BodyKind::Empty;
        }
        let keep_alive = body != BodyKind::CloseDelimited
            && match version {
                Version::Http11 => !facts.close,
                Version::Http10 => facts.keep_alive_token && !facts.close,
            };
        let head = buf.split_to(len).freeze();
        let response = Response {
            version,
            status,
            head,
            body: Bytes::new(),
            keep_alive,
        };
        let body = match body {
            BodyKind::Empty | BodyKind::Length(0) => Body::Length(0),
            BodyKind::Length(n) => Body::Length(n),
            BodyKind::Chunked => Body::Chunked(ChunkedDecoder::new(self.limits)),
            BodyKind::CloseDelimited => Body::UntilClose,
        };
        Ok(Some(Pending { response, body }))
    }
}

/// Parses a status code out of a status line (`Status::Partial` if the
/// line is incomplete). A helper for callers that only need the code.
pub fn peek_status(buf: &[u8]) -> Result<Status<u16>, Error> {
    let mut storage = [httparse::EMPTY_HEADER; 0];
    let mut response = httparse::Response::new(&mut storage);
    match response.parse(buf) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => match response.code {
            Some(code) => Ok(Status::Complete(code)),
            None => Ok(Status::Partial),
        },
        Err(e) => Err(map_httparse(e)),
    }
}
