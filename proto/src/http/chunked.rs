//! The incremental decoder for `Transfer-Encoding: chunked` bodies (RFC 9112 7.1).
//!
//! Strict by design: chunk lines must end in CRLF (a bare LF is a
//! smuggling vector when a front end reads it differently), sizes are
//! 1*HEXDIG with no sign or whitespace before the extension, and chunk data
//! must be followed by exactly CRLF.

use super::error::Error;
use super::head::map_httparse;
use super::limits::Limits;

/// Longest run of hex digits accepted in a chunk size, leading zeros included.
/// Sixteen significant digits fill a `u64`; the rest is slack for zero padding.
const CHUNK_SIZE_DIGITS_MAX: usize = 32;

/// Trailer field storage kept on the stack for the default limits (64
/// fields); a larger `header_count_max` falls back to a heap buffer.
const TRAILER_STACK_FIELDS: usize = Limits::HEADER_COUNT_MAX;

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Body data is `buf[start..end]`; consume `end` bytes. `start` skips
    /// framing (chunk lines); the data range may be empty when only framing
    /// was complete. `end` is always greater than zero.
    Data {
        /// Offset of the first data byte.
        start: usize,
        /// Offset one past the last data byte, and the bytes consumed.
        end: usize,
    },
    /// The last chunk and the trailer section were read; consume `consumed`
    /// bytes. The body is complete. The trailer section is the last
    /// [`ChunkedDecoder::trailer_section_len`] of those bytes.
    End {
        /// Bytes consumed by this call.
        consumed: usize,
    },
    /// More bytes are needed. Nothing was consumed.
    Partial,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: expecting trailer fields and the empty line.
    Trailers,
    /// The body is complete.
    Done,
}

/// Decodes a chunked body incrementally: feed it the unconsumed input, get
/// data ranges back. Any split of the input yields the same data and the
/// same outcome.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    body_bytes: u64,
    limits: Limits,
    /// Length of the trailer section, once it has been read.
    trailer_len: usize,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new(limits: Limits) -> Self {
        ChunkedDecoder {
            state: State::Size,
            body_bytes: 0,
            limits,
            trailer_len: 0,
        }
    }

    /// Whether the last chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of the trailer section, from the first trailer field to the
    /// empty line that ends the body, inclusive: the last bytes consumed by
    /// [`Chunk::End`]. Two (`CRLF`) when there are no trailer fields; zero
    /// before the body is complete.
    ///
    /// The fields in it were validated like header fields (same limits and
    /// byte rules); they are separate from the header section, which they
    /// must not be merged into unless a field's definition allows it
    /// (RFC 9110 6.5.1), so the caller decides what to do with them.
    pub fn trailer_section_len(&self) -> usize {
        self.trailer_len
    }

    /// Decodes the next piece of `buf`, which starts at the first unconsumed byte.
    ///
    /// Call again with the rest after consuming what a `Data` or `End` said.
    /// After `End`, further calls return `End { consumed: 0 }`.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Chunk, Error> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok(Chunk::End { consumed: pos }),
                State::Size => match self.parse_size_line(&buf[pos..])? {
                    None if pos == 0 => return Ok(Chunk::Partial),
                    None => {
                        return Ok(Chunk::Data {
                            start: pos,
                            end: pos,
                        });
                    }
                    Some((line_len, 0)) => {
                        pos += line_len;
                        self.state = State::Trailers;
                    }
                    Some((line_len, size)) => {
                        pos += line_len;
                        self.body_bytes = self.body_bytes.saturating_add(size);
                        if self.body_bytes > self.limits.body_bytes_max {
                            return Err(Error::BodyTooLarge);
                        }
                        self.state = State::Data(size);
                    }
                },
                State::Data(remaining) => {
                    let available = buf.len() - pos;
                    let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    if take == 0 && pos == 0 {
                        return Ok(Chunk::Partial);
                    }
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Chunk::Data {
                        start: pos,
                        end: pos + take,
                    });
                }
                State::DataEnd => match buf.get(pos..pos + 2) {
                    Some(b"\r\n") => {
                        pos += 2;
                        self.state = State::Size;
                    }
                    Some(_) => return Err(Error::BadChunk),
                    None => {
                        if buf.get(pos).is_some_and(|&b| b != b'\r') {
                            return Err(Error::BadChunk);
                        }
                        return Ok(if pos == 0 {
                            Chunk::Partial
                        } else {
                            Chunk::Data {
                                start: pos,
                                end: pos,
                            }
                        });
                    }
                },
                State::Trailers => match self.parse_trailers(&buf[pos..])? {
                    None if pos == 0 => return Ok(Chunk::Partial),
                    None => {
                        return Ok(Chunk::Data {
                            start: pos,
                            end: pos,
                        });
                    }
                    Some(n) => {
                        pos += n;
                        self.trailer_len = n;
                        self.state = State::Done;
                        return Ok(Chunk::End { consumed: pos });
                    }
                },
            }
        }
    }

    /// Parses `chunk-size [ chunk-ext ] CRLF`. `None` means incomplete.
    fn parse_size_line(&self, buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
        let mut size: u64 = 0;
        let mut i = 0;
        while let Some(&b) = buf.get(i) {
            let Some(digit) = (b as char).to_digit(16) else {
                break;
            };
            if i == CHUNK_SIZE_DIGITS_MAX {
                return Err(Error::BadChunkSize);
            }
            size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(u64::from(digit)))
                .ok_or(Error::BadChunkSize)?;
            i += 1;
        }
        let digits = i;
        let Some(&next) = buf.get(i) else {
            return Ok(None);
        };
        if digits == 0 {
            return Err(Error::BadChunkSize);
        }
        if !matches!(next, b'\r' | b';' | b' ' | b'\t') {
            return Err(Error::BadChunkSize);
        }
        // chunk-ext: everything up to CR, with no control bytes but HTAB.
        // Bytes are judged strictly in order, so the first fault found is
        // the same however the input is split.
        let ext_start = i;
        loop {
            let Some(&b) = buf.get(i) else {
                return Ok(None);
            };
            if b == b'\r' {
                break;
            }
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                return Err(Error::BadChunk);
            }
            i += 1;
            if i - ext_start > self.limits.chunk_extension_bytes_max {
                return Err(Error::ChunkExtensionTooLong);
            }
        }
        let ext = &buf[ext_start..i];
        if !ext.is_empty() && !ext.contains(&b';') {
            // Whitespace after the size is only allowed before an extension.
            return Err(Error::BadChunkSize);
        }
        match buf.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((i + 2, size))),
            Some(_) => Err(Error::BadChunk),
        }
    }

    /// Parses the trailer section up to its empty line, validating trailer
    /// fields like header fields. `None` means incomplete.
    fn parse_trailers(&self, buf: &[u8]) -> Result<Option<usize>, Error> {
        if buf.first() == Some(&b'\n') {
            return Err(Error::BadChunk);
        }
        // Only the bytes the limit allows are parsed, so the verdict does
        // not depend on how the input was split.
        let window = &buf[..buf.len().min(self.limits.header_bytes_max)];
        let parsed = if self.limits.header_count_max <= TRAILER_STACK_FIELDS {
            let mut storage = [httparse::EMPTY_HEADER; TRAILER_STACK_FIELDS];
            section_end(window, &mut storage[..self.limits.header_count_max])
        } else {
            let mut storage = vec![httparse::EMPTY_HEADER; self.limits.header_count_max];
            section_end(window, &mut storage)
        };
        match parsed {
            Ok(Some(n)) => Ok(Some(n)),
            Ok(None) if buf.len() > self.limits.header_bytes_max => Err(Error::HeaderTooLarge),
            Ok(None) => Ok(None),
            Err(e) => Err(map_httparse(e)),
        }
    }
}

/// Where the field section at the start of `buf` ends, if it is complete.
fn section_end<'b>(
    buf: &'b [u8],
    storage: &mut [httparse::Header<'b>],
) -> Result<Option<usize>, httparse::Error> {
    Ok(match httparse::parse_headers(buf, storage)? {
        httparse::Status::Complete((n, _)) => Some(n),
        httparse::Status::Partial => None,
    })
}
