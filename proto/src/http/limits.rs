//! The configurable size limits every HTTP/1.1 parser in this crate enforces.

/// Size limits, in bytes or counts as the names say.
///
/// Exceeding a limit is an [`Error`](super::Error) carrying the status the
/// RFCs prefer, never unbounded buffering. Every limit is tested at its value
/// (accepted) and one past it (rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, including any empty lines before it and its
    /// line ending. Default 8 KiB; past it the answer is 414.
    pub request_line_bytes_max: usize,
    /// Longest header section: every byte after the request line (or status
    /// line) up to and including the empty line that ends it. Also bounds a
    /// chunked body's trailer section. Default 16 KiB; past it, 431.
    pub header_bytes_max: usize,
    /// Most header fields in one message (and in one trailer section).
    /// Default 64; past it, 431.
    pub header_count_max: usize,
    /// Largest body, whether declared by `Content-Length` (rejected before
    /// reading it) or summed over chunks. Default 1 MiB; past it, 413.
    pub body_bytes_max: u64,
    /// Longest chunk extension (everything between the chunk size and the
    /// line's CRLF). Default 1 KiB; past it, 400.
    pub chunk_extension_bytes_max: usize,
}

impl Limits {
    /// Default for [`Limits::request_line_bytes_max`].
    pub const REQUEST_LINE_BYTES_MAX: usize = 8 * 1024;
    /// Default for [`Limits::header_bytes_max`].
    pub const HEADER_BYTES_MAX: usize = 16 * 1024;
    /// Default for [`Limits::header_count_max`].
    pub const HEADER_COUNT_MAX: usize = 64;
    /// Default for [`Limits::body_bytes_max`].
    pub const BODY_BYTES_MAX: u64 = 1024 * 1024;
    /// Default for [`Limits::chunk_extension_bytes_max`].
    pub const CHUNK_EXTENSION_BYTES_MAX: usize = 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line_bytes_max: Self::REQUEST_LINE_BYTES_MAX,
            header_bytes_max: Self::HEADER_BYTES_MAX,
            header_count_max: Self::HEADER_COUNT_MAX,
            body_bytes_max: Self::BODY_BYTES_MAX,
            chunk_extension_bytes_max: Self::CHUNK_EXTENSION_BYTES_MAX,
        }
    }
}
