//! The owning request type the engine handles: the head and body as `Bytes`
//! split off the connection buffer, with lazy, allocation-free header access.

use std::ops::Range;

use bytes::Bytes;

use super::head::Version;
use super::syntax::{eq_ci, trim_ows};
use super::target::{self, Target};

/// A whole request. The head is kept as the raw bytes it arrived in (already
/// validated), and fields are read from it on demand, so building a
/// `Request` copies nothing and allocates nothing beyond `Bytes` reference counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub(crate) head: Bytes,
    /// Offsets into `head`, as `u32` to keep a `Request` small enough to
    /// move without a `memcpy` call (the decoder caps a head at 4 GiB).
    /// The method ends one byte (SP) before the target.
    pub(crate) method_start: u32,
    pub(crate) target: Range<u32>,
    pub(crate) fields_start: u32,
    /// The version the request is served as.
    pub version: Version,
    /// The body (empty when streaming: body bytes then arrive as events).
    pub body: Bytes,
    /// The trailer section of a chunked body, raw, when it has fields:
    /// boxed, so the common request without trailers carries one word.
    pub(crate) trailers: Option<Box<Bytes>>,
    /// Whether the client allows another request on this connection.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue` and waits before sending the body.
    pub expect_continue: bool,
    /// `Connection` lists `upgrade`.
    pub upgrade: bool,
    /// The body is chunked (else `Content-Length` delimited or empty).
    pub chunked: bool,
}

impl Request {
    /// The method token, e.g. `GET`.
    pub fn method(&self) -> &str {
        let range = self.method_start as usize..(self.target.start as usize).saturating_sub(1);
        self.head
            .get(range)
            .and_then(|m| std::str::from_utf8(m).ok())
            .unwrap_or("")
    }

    /// The request-target exactly as sent.
    pub fn target(&self) -> &str {
        let range = self.target.start as usize..self.target.end as usize;
        self.head
            .get(range)
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or("")
    }

    /// The target split into raw path and query (see [`Target`]).
    pub fn split_target(&self) -> Target<'_> {
        target::split(self.target())
    }

    /// The raw head bytes, from the request line to the empty line.
    pub fn head_bytes(&self) -> &Bytes {
        &self.head
    }

    /// The header fields in order, as `(name, value)` with the value's
    /// surrounding whitespace removed.
    pub fn headers(&self) -> Fields<'_> {
        Fields {
            rest: self
                .head
                .get(self.fields_start as usize..)
                .unwrap_or_default(),
        }
    }

    /// The header field section as shared bytes (no copy): every field line
    /// and the empty line that ends them, validated when the head was parsed,
    /// so [`Fields::new`] reads it back. For a consumer that keeps the fields
    /// beyond the request's life without copying them.
    pub fn fields_bytes(&self) -> Bytes {
        let start = (self.fields_start as usize).min(self.head.len());
        self.head.slice(start..)
    }

    /// The trailer fields of a chunked body, in order, as
    /// [`headers`](Self::headers) gives header fields: validated like them,
    /// but kept apart, because RFC 9110 6.5.1 forbids merging trailers into
    /// the header section unless a field's definition allows it. Empty when
    /// there were none, and for requests from
    /// [`RequestDecoder::next_event`](super::RequestDecoder::next_event)
    /// (see [`RequestDecoder::trailers`](super::RequestDecoder::trailers)).
    pub fn trailers(&self) -> Fields<'_> {
        Fields::new(self.trailers.as_deref().map_or(&[], |t| &t[..]))
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| eq_ci(n.as_bytes(), name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether this is a `HEAD` request, whose response carries no body.
    pub fn is_head(&self) -> bool {
        self.method() == "HEAD"
    }
}

/// Iterator over the fields of a head that was validated when it was parsed.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of a field section (header or trailer fields, up to the
    /// empty line that ends them). Lines without a colon or with a name that
    /// is not UTF-8 are skipped, so bytes that were never validated cannot
    /// make it panic; validated sections ([`Request::fields_bytes`]) have none.
    pub fn new(section: &'a [u8]) -> Self {
        Fields { rest: section }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let nl = self.rest.iter().position(|&b| b == b'\n')?;
            let mut line = &self.rest[..nl];
            self.rest = &self.rest[nl + 1..];
            if let [l @ .., b'\r'] = line {
                line = l;
            }
            if line.is_empty() {
                self.rest = &[];
                return None;
            }
            // The head was validated, so every line has a colon; skip
            // rather than panic if that ever stops being true.
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(&line[..colon]) else {
                continue;
            };
            return Some((name, trim_ows(&line[colon + 1..])));
        }
    }
}
