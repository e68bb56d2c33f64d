//! Request-head parsing: the request line by hand, header fields with `httparse`,
//! then the RFC 9112 framing rules that decide where the body ends.
//!
//! The request line is parsed here rather than by `httparse` because
//! `httparse` rejects every version but 1.0 and 1.1, and RFC 9110 2.5 wants
//! `HTTP/1.2` served as 1.1 and `HTTP/2.0` answered 505, not 400.

use super::error::{Error, Status};
use super::limits::Limits;
use std::mem::MaybeUninit;

use super::syntax::{eq_folded, is_tchar, trim_ows};

/// The protocol version of a message, as it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `HTTP/1.0`: close after the response unless `Connection: keep-alive`.
    Http10,
    /// `HTTP/1.1` (and any `HTTP/1.x` with x >= 1, per RFC 9110 2.5).
    Http11,
}

impl Version {
    /// The version as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the body of a message is delimited (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes (never zero: zero is [`BodyKind::Empty`]).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes (responses only).
    CloseDelimited,
}

/// A parsed request head. Slices borrow the input buffer; the header fields
/// are the first `header_count` entries of the storage passed to
/// [`parse_request_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead<'b> {
    /// The method token, e.g. `GET`. Any token is accepted; whether it is
    /// implemented (501) is the caller's decision.
    pub method: &'b str,
    /// The request-target as sent (origin-, absolute-, authority- or asterisk-form).
    pub target: &'b str,
    /// The version the request is served as.
    pub version: Version,
    /// How many header fields were stored.
    pub header_count: usize,
    /// How the body is delimited.
    pub body: BodyKind,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent: the client waits for `100 Continue`
    /// (or a final status) before sending the body.
    pub expect_continue: bool,
    /// `Connection` lists `upgrade` (a WebSocket handshake, say).
    pub upgrade: bool,
    /// Bytes of input the head used, including any empty lines before it.
    pub len: usize,
}

/// The request line, split.
struct RequestLine<'b> {
    method: &'b str,
    target: &'b str,
    version: Version,
    /// Bytes used, including leading empty lines and the line ending.
    len: usize,
}

/// Parses one request head from the start of `buf`.
///
/// Returns `Partial` (consuming nothing) when the head is incomplete and no
/// limit is yet exceeded. `headers` is the storage for header fields; the
/// field count limit is `min(headers.len(), limits.header_count_max)`, so give
/// at least `header_count_max` entries.
pub fn parse_request_head<'b>(
    buf: &'b [u8],
    limits: &Limits,
    headers: &mut [httparse::Header<'b>],
) -> Result<Status<RequestHead<'b>>, Error> {
    let storage_len = headers.len().min(limits.header_count_max);
    let mut request = httparse::Request::new(&mut headers[..storage_len]);
    let parsed = request.parse(buf);
    if let Some(fast) = finish_fast(buf, limits, parsed, &request) {
        return Ok(Status::Complete(fast.head));
    }
    parse_reference(buf, limits, headers).map(|s| s.map(|located| located.head))
}

/// Header storage the owning decoder keeps on its stack, uninitialised (so
/// free); a larger `header_count_max` falls back to a heap buffer per head.
const STACK_HEADERS: usize = Limits::HEADER_COUNT_MAX;

/// A parsed head and where its request line ends, which the owning decoder
/// needs to find the header fields again and would otherwise rescan for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located<'b> {
    pub(crate) head: RequestHead<'b>,
    /// Bytes of the request line, with any empty lines before it and its
    /// line ending: the offset of the first header field.
    pub(crate) line_len: usize,
}

/// The owning decoder's fast path: [`parse_request_head`] with its own
/// header storage, uninitialised (httparse writes only the fields it finds),
/// so a head costs no storage set-up. `None` for anything but a complete,
/// valid head within limits (see [`finish_fast`]); the caller then asks
/// [`parse_request_head_slow`] for the verdict. Kept apart from the slow path
/// so the common head is built in place, not copied between result types.
#[inline(always)]
pub(crate) fn parse_request_head_fast<'b>(buf: &'b [u8], limits: &Limits) -> Option<Located<'b>> {
    if limits.header_count_max > STACK_HEADERS {
        return None;
    }
    let mut storage = [MaybeUninit::<httparse::Header<'b>>::uninit(); STACK_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let parsed = request.parse_with_uninit_headers(buf, &mut storage[..limits.header_count_max]);
    finish_fast(buf, limits, parsed, &request)
}

/// Every head [`parse_request_head_fast`] declined: partial, faulty, unusual
/// or parsed under a `header_count_max` above the stack storage.
#[inline(never)]
pub(crate) fn parse_request_head_slow<'b>(
    buf: &'b [u8],
    limits: &Limits,
) -> Result<Status<Located<'b>>, Error> {
    if limits.header_count_max <= STACK_HEADERS {
        let mut storage = [httparse::EMPTY_HEADER; STACK_HEADERS];
        parse_reference(buf, limits, &mut storage)
    } else {
        let mut storage = vec![httparse::EMPTY_HEADER; limits.header_count_max];
        let storage_len = storage.len();
        let mut request = httparse::Request::new(&mut storage[..storage_len]);
        let parsed = request.parse(buf);
        if let Some(fast) = finish_fast(buf, limits, parsed, &request) {
            return Ok(Status::Complete(fast));
        }
        parse_reference(buf, limits, &mut storage)
    }
}

/// The common case in one httparse call, whose request-line code is faster
/// than ours: given what `httparse::Request::parse` made of `buf`, the head
/// if it is complete and valid. It returns `None` for anything unusual (an
/// incomplete head, an error, a version other than 1.0/1.1, a limit
/// exceeded, a framing fault) and the reference path then decides, so the two
/// agree by construction: the fast path only ever answers with a head the
/// reference path would also accept (checked by `proto/tests/http_props.rs`
/// and the `http_request` fuzz target).
#[inline(always)]
fn finish_fast<'b>(
    buf: &'b [u8],
    limits: &Limits,
    parsed: httparse::Result<usize>,
    request: &httparse::Request<'_, 'b>,
) -> Option<Located<'b>> {
    let Ok(httparse::Status::Complete(len)) = parsed else {
        return None;
    };
    let (method, target, minor) = (request.method?, request.path?, request.version?);
    // httparse admits %x21-7E and UTF-8 above 0x7F in targets; the reference
    // path only the former, so ASCII is all that is left to check.
    if !target.is_ascii() {
        return None;
    }
    let after_version = target.as_ptr() as usize - buf.as_ptr() as usize + target.len() + 1 + 8;
    let line_len = if *buf.get(after_version)? == b'\r' {
        after_version + 2
    } else {
        after_version + 1
    };
    if line_len > limits.request_line_bytes_max || len - line_len > limits.header_bytes_max {
        return None;
    }
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let framing = request_framing(version, request.headers, limits).ok()?;
    Some(Located {
        head: RequestHead {
            method,
            target,
            version,
            header_count: request.headers.len(),
            body: framing.body,
            keep_alive: framing.keep_alive,
            expect_continue: framing.expect_continue,
            upgrade: framing.upgrade,
            len,
        },
        line_len,
    })
}

/// The reference path: the request line by hand, in one pass over a window
/// of `request_line_bytes_max` bytes, then the header fields by httparse over
/// a window of `header_bytes_max` bytes. It decides every verdict but the
/// common success; public only so the fuzzer can compare the two paths.
#[doc(hidden)]
pub fn parse_request_head_reference<'b>(
    buf: &'b [u8],
    limits: &Limits,
    headers: &mut [httparse::Header<'b>],
) -> Result<Status<RequestHead<'b>>, Error> {
    parse_reference(buf, limits, headers).map(|s| s.map(|located| located.head))
}

fn parse_reference<'b>(
    buf: &'b [u8],
    limits: &Limits,
    headers: &mut [httparse::Header<'b>],
) -> Result<Status<Located<'b>>, Error> {
    let line = match parse_request_line(buf, limits.request_line_bytes_max)? {
        Status::Complete(line) => line,
        Status::Partial => return Ok(Status::Partial),
    };
    let rest = &buf[line.len..];
    let storage_len = headers.len().min(limits.header_count_max);
    let storage = &mut headers[..storage_len];
    // httparse only sees the bytes the limit allows, so a fault past the
    // limit is never reported ahead of the limit itself: the verdict is the
    // same however the input was split.
    let window = &rest[..rest.len().min(limits.header_bytes_max)];
    let (section_len, header_count) = match httparse::parse_headers(window, storage) {
        Ok(httparse::Status::Complete((n, fields))) => (n, fields.len()),
        Ok(httparse::Status::Partial) if rest.len() > limits.header_bytes_max => {
            return Err(Error::HeaderTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(e) => return Err(map_httparse(e)),
    };
    let framing = request_framing(line.version, &headers[..header_count], limits)?;
    Ok(Status::Complete(Located {
        head: RequestHead {
            method: line.method,
            target: line.target,
            version: line.version,
            header_count,
            body: framing.body,
            keep_alive: framing.keep_alive,
            expect_continue: framing.expect_continue,
            upgrade: framing.upgrade,
            len: line.len + section_len,
        },
        line_len: line.len,
    }))
}

pub(crate) fn map_httparse(e: httparse::Error) -> Error {
    match e {
        httparse::Error::HeaderName => Error::BadHeaderName,
        httparse::Error::HeaderValue => Error::BadHeaderValue,
        httparse::Error::TooManyHeaders => Error::TooManyHeaders,
        httparse::Error::Status => Error::BadStatusLine,
        httparse::Error::Version => Error::BadVersion,
        httparse::Error::Token | httparse::Error::NewLine => Error::BadSyntax,
    }
}

/// Skips empty lines (RFC 9112 2.2 lets a server ignore them) and returns
/// the offset of the first byte that is not part of one, or `None` when the
/// buffer ends inside a CRLF.
#[inline]
pub(crate) fn skip_empty_lines(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        match buf.get(i) {
            Some(b'\n') => i += 1,
            Some(b'\r') => match buf.get(i + 1) {
                Some(b'\n') => i += 2,
                Some(_) => return Some(i),
                None => return None,
            },
            _ => return Some(i),
        }
    }
}

/// Parses the request line in one pass over at most `line_max` bytes.
///
/// Bytes are judged in order and only inside that window, so the verdict is
/// the same however the input is split.
#[inline]
fn parse_request_line(buf: &[u8], line_max: usize) -> Result<Status<RequestLine<'_>>, Error> {
    let window = &buf[..buf.len().min(line_max)];
    let incomplete = || {
        if buf.len() >= line_max {
            Err(Error::RequestLineTooLong)
        } else {
            Ok(Status::Partial)
        }
    };
    let Some(start) = skip_empty_lines(window) else {
        return incomplete();
    };

    let mut i = start;
    loop {
        match window.get(i) {
            None => return incomplete(),
            Some(b' ') if i > start => break,
            Some(&b) if is_tchar(b) => i += 1,
            Some(_) => return Err(Error::BadMethod),
        }
    }
    let method = &window[start..i];
    i += 1;

    let target_start = i;
    i += visible_prefix_len(&window[i..]);
    let Some(&after_target) = window.get(i) else {
        return incomplete();
    };
    if i == target_start || after_target != b' ' {
        return Err(Error::BadTarget);
    }
    let target = &window[target_start..i];
    i += 1;

    let Some(version) = window.get(i..i + 8) else {
        return incomplete();
    };
    i += 8;
    // A lone LF ends a line too (RFC 9112 2.2 MAY); httparse agrees for the
    // header fields, so the whole head treats line endings consistently.
    let len = match (window.get(i), window.get(i + 1)) {
        (Some(b'\n'), _) => i + 1,
        (Some(b'\r'), Some(b'\n')) => i + 2,
        (None, _) | (Some(b'\r'), None) => return incomplete(),
        _ => return Err(Error::BadVersion),
    };
    Ok(Status::Complete(RequestLine {
        version: parse_version(version)?,
        method: std::str::from_utf8(method).map_err(|_| Error::BadMethod)?,
        target: std::str::from_utf8(target).map_err(|_| Error::BadTarget)?,
        len,
    }))
}

/// Length of the leading run of visible ASCII (%x21-7E), the bytes a
/// request-target may hold. Eight bytes at a time while none is outside the
/// range (SWAR), then byte by byte: request-targets are the longest part of
/// the line and this keeps the hand-written line parser near httparse's speed.
#[inline]
fn visible_prefix_len(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // High bit of a lane set where the byte is below 0x21 ...
        let below = x.wrapping_sub(ONES * 0x21) & !x & HIGH;
        // ... or at least 0x7F: (b & 0x7F) + 1 reaches 0x80 only for 0x7F,
        // and cannot carry into the next lane.
        let above = (((x & !HIGH) + ONES) | x) & HIGH;
        if below | above != 0 {
            break;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .take_while(|&&b| (0x21..=0x7e).contains(&b))
        .count()
}

/// Parses `HTTP/DIGIT.DIGIT` exactly (case-sensitive, RFC 9112 2.3).
#[inline]
pub(crate) fn parse_version(v: &[u8]) -> Result<Version, Error> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            match (major, minor) {
                (b'1', b'0') => Ok(Version::Http10),
                (b'1', _) => Ok(Version::Http11),
                _ => Err(Error::VersionNotSupported),
            }
        }
        _ => Err(Error::BadVersion),
    }
}

/// What the header fields say about framing and the connection.
#[derive(Debug)]
pub(crate) struct Framing {
    pub(crate) body: BodyKind,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    pub(crate) upgrade: bool,
}

/// Connection-level facts common to requests and responses.
#[derive(Default)]
pub(crate) struct FieldFacts {
    pub(crate) content_length: Option<u64>,
    pub(crate) chunked: bool,
    pub(crate) has_transfer_encoding: bool,
    pub(crate) close: bool,
    pub(crate) keep_alive_token: bool,
    pub(crate) upgrade: bool,
    pub(crate) host_count: u32,
    pub(crate) expect_continue: bool,
    /// `Expect` listed something other than `100-continue` (417 for a request).
    pub(crate) unsupported_expectation: bool,
}

/// Reads the fields that govern framing, applying RFC 9112 6.1-6.3 strictly.
///
/// This runs on every head, over every field, so it is built for the fields
/// it does not interpret: a dispatch on the name's length, then for the five
/// lengths that matter one or two word compares ([`eq_folded`]; the names
/// came from httparse, so they are tokens). Values are read once, in place.
#[inline(always)]
pub(crate) fn scan_fields(headers: &[httparse::Header<'_>]) -> Result<FieldFacts, Error> {
    let mut facts = FieldFacts::default();
    let mut transfer_coding_unsupported = false;
    for h in headers {
        let name = h.name.as_bytes();
        match name.len() {
            4 if eq_folded(name, b"host") => {
                facts.host_count += 1;
                // httparse hands values over without surrounding whitespace;
                // were one ever left, it would fail the alphabet (400), never pass.
                if !valid_host(h.value) {
                    return Err(Error::BadHost);
                }
            }
            6 if eq_folded(name, b"expect") => {
                for expectation in list_members(h.value) {
                    if eq_folded(expectation, b"100-continue") {
                        facts.expect_continue = true;
                    } else {
                        facts.unsupported_expectation = true;
                    }
                }
            }
            10 if eq_folded(name, b"connection") => {
                for option in list_members(h.value) {
                    match option.len() {
                        5 => facts.close |= eq_folded(option, b"close"),
                        7 => facts.upgrade |= eq_folded(option, b"upgrade"),
                        10 => facts.keep_alive_token |= eq_folded(option, b"keep-alive"),
                        _ => {}
                    }
                }
            }
            14 if eq_folded(name, b"content-length") => {
                let n = parse_content_length(h.value)?;
                match facts.content_length {
                    Some(prev) if prev != n => return Err(Error::ConflictingContentLength),
                    _ => facts.content_length = Some(n),
                }
            }
            17 if eq_folded(name, b"transfer-encoding") => {
                facts.has_transfer_encoding = true;
                for coding in list_members(h.value) {
                    if facts.chunked {
                        // Anything after chunked, including chunked again,
                        // leaves the body length undecidable.
                        return Err(Error::BadTransferEncoding);
                    }
                    if eq_folded(coding, b"chunked") {
                        facts.chunked = true;
                    } else {
                        transfer_coding_unsupported = true;
                    }
                }
            }
            _ => {}
        }
    }
    if facts.has_transfer_encoding {
        if transfer_coding_unsupported {
            return Err(Error::UnsupportedTransferCoding);
        }
        if !facts.chunked {
            return Err(Error::BadTransferEncoding);
        }
    }
    Ok(facts)
}

/// The non-empty members of a comma-separated list value (`#rule`, RFC 9110
/// 5.6.1: recipients accept and ignore empty members), whitespace trimmed.
#[inline]
fn list_members(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|member| !member.is_empty())
}

#[inline(always)]
fn request_framing(
    version: Version,
    headers: &[httparse::Header<'_>],
    limits: &Limits,
) -> Result<Framing, Error> {
    let facts = scan_fields(headers)?;
    let host_ok = match version {
        Version::Http11 => facts.host_count == 1,
        Version::Http10 => facts.host_count <= 1,
    };
    if !host_ok {
        return Err(Error::MissingOrDuplicateHost);
    }
    let body = if facts.has_transfer_encoding {
        if version == Version::Http10 {
            // RFC 9112 6.1: faulty framing; a 1.0 peer cannot mean chunked.
            return Err(Error::BadTransferEncoding);
        }
        if facts.content_length.is_some() {
            return Err(Error::ContentLengthWithTransferEncoding);
        }
        BodyKind::Chunked
    } else {
        match facts.content_length {
            None | Some(0) => BodyKind::Empty,
            Some(n) if n > limits.body_bytes_max => return Err(Error::BodyTooLarge),
            Some(n) => BodyKind::Length(n),
        }
    };
    if facts.unsupported_expectation {
        // Checked after every framing fault, so a request that is both
        // malformed and expectant gets the 400 (or 413/501) that says why.
        return Err(Error::ExpectationFailed);
    }
    let keep_alive = match version {
        Version::Http11 => !facts.close,
        Version::Http10 => facts.keep_alive_token && !facts.close,
    };
    Ok(Framing {
        body,
        keep_alive,
        expect_continue: facts.expect_continue
            && version == Version::Http11
            && body != BodyKind::Empty,
        upgrade: facts.upgrade,
    })
}

/// `Content-Length = 1*DIGIT` (RFC 9110 8.6); no sign, no hex, no list.
#[inline]
pub(crate) fn parse_content_length(value: &[u8]) -> Result<u64, Error> {
    let digits = trim_ows(value);
    if digits.is_empty() {
        return Err(Error::BadContentLength);
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(Error::BadContentLength);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(Error::BadContentLength)?;
    }
    Ok(n)
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 7.2), checked by alphabet:
/// reg-name, IP-literal and IPv4 characters, `%` for pct-encoding, `:` for the port.
/// Two instructions a byte (a table load and an OR), eight bytes between
/// branches: a Host value is almost always valid and a dozen bytes or more
/// long, and the field section is already bounded by `header_bytes_max`.
#[inline]
fn valid_host(value: &[u8]) -> bool {
    let bad8 = |w: &[u8]| w.iter().fold(0, |bad, &b| bad | NOT_HOST[usize::from(b)]);
    let n = value.len();
    if n < 8 {
        return bad8(value) == 0;
    }
    let mut bad = 0u8;
    let mut i = 0;
    while i + 8 < n {
        bad |= bad8(&value[i..i + 8]);
        i += 8;
    }
    // The last eight bytes, overlapping the previous word: a byte checked
    // twice is still one check.
    bad |= bad8(&value[n - 8..]);
    bad == 0
}

/// One where [`HOST_BYTES`] says no, as a byte to OR together.
static NOT_HOST: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = !HOST_BYTES[b] as u8;
        b += 1;
    }
    table
};

/// Which bytes [`valid_host`] admits, as a table so the check is one load per byte.
static HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
                    | b'%'
            );
        b += 1;
    }
    table
};
