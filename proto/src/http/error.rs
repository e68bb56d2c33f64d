//! The peer-caused faults an HTTP/1.1 parser can find, each carrying the status to answer.

use std::fmt;

/// A fault in bytes received from the peer.
///
/// Every variant names the rule that was broken and knows the status code to
/// answer with ([`Error::status`]) and whether the connection must be closed
/// afterwards ([`Error::must_close`]). Anything that is not one of these is a
/// bug in Cairn, not in the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The request line is longer than `Limits::request_line_bytes_max`.
    RequestLineTooLong,
    /// The header section is longer than `Limits::header_bytes_max`.
    HeaderTooLarge,
    /// More header fields than `Limits::header_count_max`.
    TooManyHeaders,
    /// The body is (or declares itself) longer than `Limits::body_bytes_max`.
    BodyTooLarge,
    /// A chunk extension is longer than `Limits::chunk_extension_bytes_max`.
    ChunkExtensionTooLong,
    /// The method is not a token.
    BadMethod,
    /// The request-target contains a byte outside visible ASCII, or is empty.
    BadTarget,
    /// The version is not `HTTP/DIGIT.DIGIT`.
    BadVersion,
    /// The version is well-formed but its major version is not 1.
    VersionNotSupported,
    /// A line of the request line or header section is malformed
    /// (including bare CR, NUL and control bytes).
    BadSyntax,
    /// A header field name is not a token (space, control byte, obs-fold).
    BadHeaderName,
    /// A header field value contains a forbidden byte (bare CR, NUL, controls).
    BadHeaderValue,
    /// An HTTP/1.1 request has no `Host`, or more than one.
    MissingOrDuplicateHost,
    /// The `Host` value is not a valid `uri-host [ ":" port ]`.
    BadHost,
    /// `Content-Length` is not `1*DIGIT`, or does not fit in a `u64`.
    BadContentLength,
    /// Two `Content-Length` fields (or list members) disagree.
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` is present but `chunked` is not its final coding,
    /// or appears twice, or the request is HTTP/1.0.
    BadTransferEncoding,
    /// `Transfer-Encoding` names a coding other than `chunked`.
    UnsupportedTransferCoding,
    /// A chunk-size is not hex, is empty, or overflows a `u64`.
    BadChunkSize,
    /// A chunk line or chunk data terminator is malformed.
    BadChunk,
    /// The peer closed the connection before the message was complete.
    UnexpectedEof,
    /// A response status line is malformed (client side).
    BadStatusLine,
    /// `Expect` holds an expectation other than `100-continue`, the only one
    /// HTTP/1.1 defines (RFC 9110 10.1.1): answered 417 rather than ignored,
    /// because a client that expects something we cannot meet may be about
    /// to send a body on that assumption.
    ExpectationFailed,
}

impl Error {
    /// The status code a server answers this fault with.
    pub fn status(self) -> u16 {
        match self {
            Error::RequestLineTooLong => 414,
            Error::HeaderTooLarge | Error::TooManyHeaders => 431,
            Error::BodyTooLarge => 413,
            Error::VersionNotSupported => 505,
            Error::UnsupportedTransferCoding => 501,
            Error::ExpectationFailed => 417,
            Error::ChunkExtensionTooLong
            | Error::BadMethod
            | Error::BadTarget
            | Error::BadVersion
            | Error::BadSyntax
            | Error::BadHeaderName
            | Error::BadHeaderValue
            | Error::MissingOrDuplicateHost
            | Error::BadHost
            | Error::BadContentLength
            | Error::ConflictingContentLength
            | Error::ContentLengthWithTransferEncoding
            | Error::BadTransferEncoding
            | Error::BadChunkSize
            | Error::BadChunk
            | Error::UnexpectedEof
            | Error::BadStatusLine => 400,
        }
    }

    /// Whether the connection must be closed after answering.
    ///
    /// Always true: once a parse error occurs the parser no longer knows
    /// where the next message starts, so keeping the connection would invite
    /// request smuggling. It is a method so callers do not hard-code that.
    pub fn must_close(self) -> bool {
        true
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::RequestLineTooLong => "request line too long",
            Error::HeaderTooLarge => "header section too large",
            Error::TooManyHeaders => "too many header fields",
            Error::BodyTooLarge => "body too large",
            Error::ChunkExtensionTooLong => "chunk extension too long",
            Error::BadMethod => "method is not a token",
            Error::BadTarget => "invalid request-target",
            Error::BadVersion => "invalid HTTP version",
            Error::VersionNotSupported => "HTTP version not supported",
            Error::BadSyntax => "malformed message syntax",
            Error::BadHeaderName => "invalid header field name",
            Error::BadHeaderValue => "invalid header field value",
            Error::MissingOrDuplicateHost => "missing or duplicate Host",
            Error::BadHost => "invalid Host value",
            Error::BadContentLength => "invalid Content-Length",
            Error::ConflictingContentLength => "conflicting Content-Length values",
            Error::ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            Error::BadTransferEncoding => "chunked is not the only, final transfer coding",
            Error::UnsupportedTransferCoding => "unsupported transfer coding",
            Error::BadChunkSize => "invalid chunk size",
            Error::BadChunk => "malformed chunk framing",
            Error::UnexpectedEof => "connection closed mid-message",
            Error::BadStatusLine => "invalid status line",
            Error::ExpectationFailed => "unsupported expectation",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Error {}

/// The result of feeding bytes to an incremental parser.
///
/// `Partial` consumes nothing: the caller keeps the bytes, appends more, and
/// calls again with the whole buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole item was parsed; the item says how many bytes it used.
    Complete(T),
    /// More bytes are needed; nothing was consumed.
    Partial,
}

impl<T> Status<T> {
    /// Maps a complete item, keeping `Partial`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Status<U> {
        match self {
            Status::Complete(t) => Status::Complete(f(t)),
            Status::Partial => Status::Partial,
        }
    }
}
