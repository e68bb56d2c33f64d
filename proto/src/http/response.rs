//! The response writer: status line, fields, `Content-Length` or chunked
//! framing, and a cached `Date`, appended to a caller-owned, reusable buffer.
//!
//! Nothing here allocates once the buffer has grown to fit a typical
//! response: numbers are formatted on the stack and the date is formatted
//! once per second by [`DateCache`].

use std::fmt;

use super::syntax::is_tchar;

/// The `Date` field value (RFC 9110 5.6.7 IMF-fixdate), reformatted at most
/// once per second. `proto` has no clock: the caller passes the time in.
#[derive(Debug, Clone)]
pub struct DateCache {
    unix_secs: u64,
    text: [u8; 29],
}

impl DateCache {
    /// A cache showing `unix_secs` (seconds since 1970-01-01T00:00:00Z).
    pub fn new(unix_secs: u64) -> Self {
        let mut cache = DateCache {
            unix_secs,
            text: [0; 29],
        };
        cache.text = format_imf_fixdate(unix_secs);
        cache
    }

    /// Moves the cache to `unix_secs`, formatting only if the second changed.
    /// Returns whether it reformatted.
    pub fn update(&mut self, unix_secs: u64) -> bool {
        if unix_secs == self.unix_secs {
            return false;
        }
        self.unix_secs = unix_secs;
        self.text = format_imf_fixdate(unix_secs);
        true
    }

    /// The formatted date, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

/// Formats seconds since the epoch as IMF-fixdate. The civil-date step is
/// Howard Hinnant's `civil_from_days`, valid for every `u64` second we can see
/// before year 10000 (later years would not fit the four-digit field, so they are clamped).
fn format_imf_fixdate(unix_secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    // 9999-12-31T23:59:59Z; later instants print as this one.
    let secs = unix_secs.min(253_402_300_799);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);

    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |out: &mut [u8; 29], at: usize, v: u64| {
        out[at] = b'0' + (v / 10) as u8;
        out[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut out, 5, day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out, 12, year / 100);
    two(&mut out, 14, year % 100);
    two(&mut out, 17, hour);
    two(&mut out, 20, minute);
    two(&mut out, 23, second);
    out
}

/// The reason phrase for a status code ("" for codes without one; the
/// phrase is optional on the wire, RFC 9112 4).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A header field the writer refused: the name is not a token, or the value
/// holds CR, LF, NUL or another control byte (which would let a value
/// inject fields or a second response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidField;

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("header field name is not a token or value holds a control byte")
    }
}

impl std::error::Error for InvalidField {}

pub(crate) fn check_field(name: &str, value: &[u8]) -> Result<(), InvalidField> {
    let name_ok = !name.is_empty() && name.bytes().all(is_tchar);
    let value_ok = value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    if name_ok && value_ok {
        Ok(())
    } else {
        Err(InvalidField)
    }
}

/// Appends the decimal form of `n` without allocating.
pub fn put_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the lower-case hex form of `n` without allocating.
fn put_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n % 16) as usize];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub(crate) fn put_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a response with this status to this request carries a body
/// (RFC 9110 6.4.1: never for 1xx, 204, 304 or HEAD).
pub fn status_has_body(status: u16) -> bool {
    !(100..200).contains(&status) && status != 204 && status != 304
}

/// Writes one response into a caller-owned buffer.
///
/// Call [`ResponseWriter::new`], then [`header`](Self::header) for each
/// field, then exactly one of [`body`](Self::body) or
/// [`chunked`](Self::chunked). The status line and `Date` are written by
/// `new`; framing fields by the finishing call.
#[derive(Debug)]
pub struct ResponseWriter<'o> {
    out: &'o mut Vec<u8>,
    status: u16,
    omit_body: bool,
}

impl<'o> ResponseWriter<'o> {
    /// Starts an `HTTP/1.1` response with `status` and a `Date` field.
    /// `head_request` says whether the request was `HEAD`: its response gets
    /// the framing fields a `GET` would, but no body bytes.
    pub fn new(out: &'o mut Vec<u8>, status: u16, date: &DateCache, head_request: bool) -> Self {
        out.extend_from_slice(b"HTTP/1.1 ");
        put_decimal(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n");
        ResponseWriter {
            out,
            status,
            omit_body: head_request,
        }
    }

    /// Adds a field. Framing fields (`Content-Length`, `Transfer-Encoding`)
    /// are written by the finishing call; do not add them here.
    pub fn header(&mut self, name: &str, value: &[u8]) -> Result<&mut Self, InvalidField> {
        check_field(name, value)?;
        put_field(self.out, name, value);
        Ok(self)
    }

    /// Adds `Connection: close`: the server will close after this response.
    pub fn close(&mut self) -> &mut Self {
        put_field(self.out, "Connection", b"close");
        self
    }

    /// Finishes with a `Content-Length` body. Responses that cannot have a
    /// body (1xx, 204, 304) get neither the field nor the bytes; a HEAD
    /// response gets the field a GET would, but no bytes.
    pub fn body(self, body: &[u8]) {
        if status_has_body(self.status) {
            self.out.extend_from_slice(b"Content-Length: ");
            put_decimal(self.out, body.len() as u64);
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        if !self.omit_body && status_has_body(self.status) {
            self.out.extend_from_slice(body);
        }
    }

    /// Finishes the head with `Transfer-Encoding: chunked`; write the body
    /// with the returned [`ChunkedWriter`].
    pub fn chunked(self) -> ChunkedWriter<'o> {
        let has_body = status_has_body(self.status);
        if has_body {
            put_field(self.out, "Transfer-Encoding", b"chunked");
        }
        self.out.extend_from_slice(b"\r\n");
        ChunkedWriter {
            out: self.out,
            omit: self.omit_body || !has_body,
        }
    }
}

/// Writes chunked body data after a head (a response's or a request's).
/// For a HEAD response it writes nothing.
#[derive(Debug)]
pub struct ChunkedWriter<'o> {
    out: &'o mut Vec<u8>,
    omit: bool,
}

impl<'o> ChunkedWriter<'o> {
    /// A writer appending chunks to `out` (for a request body, after
    /// [`write_request_head`](super::write_request_head)).
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        ChunkedWriter { out, omit: false }
    }

    /// Appends one chunk. Empty data writes nothing (an empty chunk would end the body).
    pub fn chunk(&mut self, data: &[u8]) {
        if self.omit || data.is_empty() {
            return;
        }
        put_hex(self.out, data.len() as u64);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(data);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Ends the body with the last chunk and the given trailer fields.
    pub fn finish(self, trailers: &[(&str, &[u8])]) -> Result<(), InvalidField> {
        if self.omit {
            return Ok(());
        }
        for (name, value) in trailers {
            check_field(name, value)?;
        }
        self.out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            put_field(self.out, name, value);
        }
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// Writes `100 Continue`, the interim answer to `Expect: 100-continue`.
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}
