//! The owning request decoder: `BytesMut` in, [`Request`]s and body events out,
//! driving the connection table in `conn.rs`.

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::{Chunk, ChunkedDecoder};
use super::conn::{ConnEvent, ConnState, TransitionError, transition};
use super::error::{Error, Status};
use super::head::{BodyKind, parse_request_head_fast, parse_request_head_slow};
use super::limits::Limits;
use super::request::{Fields, Request};

/// What [`RequestDecoder::next_event`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request head. Its `body` is empty; body bytes follow as
    /// [`Event::Body`] and then [`Event::End`] (at once, when there is no body).
    Head(Request),
    /// The next piece of the body, split off the buffer without copying.
    Body(Bytes),
    /// The request is complete. The decoder is now paused until
    /// [`RequestDecoder::response_sent`]. A chunked body's trailer fields
    /// are then in [`RequestDecoder::trailers`].
    End,
    /// More bytes are needed.
    NeedData,
    /// A response is outstanding; pipelined bytes stay buffered until it is sent.
    Paused,
    /// The connection is finished: close it.
    Closed,
}

#[derive(Debug, Clone)]
enum BodyProgress {
    None,
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// Decodes the requests of one server connection.
///
/// Call order: feed bytes into your `BytesMut`, then call
/// [`next_event`](Self::next_event) (streaming) or [`decode`](Self::decode)
/// (whole requests) until it reports `NeedData`/`None`; after writing each
/// response call [`response_sent`](Self::response_sent); when the peer closes
/// call [`peer_closed`](Self::peer_closed). On an [`Error`], answer with its
/// status and close: the decoder moves to [`ConnState::Closing`].
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    limits: Limits,
    state: ConnState,
    body: BodyProgress,
    keep_alive: bool,
    continue_pending: bool,
    /// A bodiless request's head was returned and its `End` is still owed.
    end_pending: bool,
    pending: Option<Request>,
    collected: BytesMut,
    /// The trailer section of the last chunked body (empty if it had none).
    trailers: Bytes,
}

impl RequestDecoder {
    /// A decoder for a fresh connection.
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            state: ConnState::Idle,
            body: BodyProgress::None,
            keep_alive: true,
            continue_pending: false,
            end_pending: false,
            pending: None,
            collected: BytesMut::new(),
            trailers: Bytes::new(),
        }
    }

    /// The connection state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The trailer fields of the chunked body that just ended, in order,
    /// from its [`Event::End`] until the next request's head (empty for a
    /// body without trailers or one that was not chunked).
    /// [`decode`](Self::decode) moves them into [`Request::trailers`] instead.
    pub fn trailers(&self) -> Fields<'_> {
        Fields::new(&self.trailers)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn step(&mut self, event: ConnEvent) {
        // The decoder only raises events its own state allows; a failure
        // here is a bug in this file, not in the peer.
        self.state =
            transition(self.state, event).expect("decoder raised an illegal connection event");
    }

    fn fail(&mut self, e: Error) -> Error {
        self.step(ConnEvent::PeerError);
        self.end_pending = false;
        self.body = BodyProgress::None;
        self.pending = None;
        e
    }

    /// Returns the next event, consuming from `buf` what it used.
    pub fn next_event(&mut self, buf: &mut BytesMut) -> Result<Event, Error> {
        if std::mem::take(&mut self.end_pending) {
            return Ok(Event::End);
        }
        match self.state {
            ConnState::Closed => Ok(Event::Closed),
            ConnState::AwaitingResponse | ConnState::Closing => Ok(Event::Paused),
            ConnState::Idle | ConnState::ReadingHead => self.read_head(buf),
            ConnState::ReadingBody => self.read_body(buf),
        }
    }

    fn read_head(&mut self, buf: &mut BytesMut) -> Result<Event, Error> {
        Ok(match self.read_request_head::<true>(buf)? {
            Some(request) => Event::Head(request),
            None => Event::NeedData,
        })
    }

    /// Parses the next head, if it is all there, and starts its body.
    /// `STREAMING` callers ([`next_event`](Self::next_event)) are owed an
    /// `End` for a bodiless request; [`decode`](Self::decode) is not.
    ///
    /// Only called in `Idle` or `ReadingHead`, so the state moves are written
    /// out here rather than looked up in the table per request (the table in
    /// `conn.rs` still decides them: debug builds check every move against it).
    #[inline(always)]
    fn read_request_head<const STREAMING: bool>(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Request>, Error> {
        if buf.is_empty() {
            return Ok(None);
        }
        debug_assert_eq!(
            transition(self.state, ConnEvent::BytesArrived),
            Ok(ConnState::ReadingHead)
        );
        self.state = ConnState::ReadingHead;
        if !self.trailers.is_empty() {
            self.trailers = Bytes::new();
        }
        let located = match parse_request_head_fast(buf, &self.limits) {
            Some(located) => located,
            None => match parse_request_head_slow(buf, &self.limits) {
                Ok(Status::Complete(located)) => located,
                Ok(Status::Partial) => return Ok(None),
                Err(e) => return Err(self.fail(e)),
            },
        };
        let head = located.head;
        // Offsets are kept as u32 (see `Request`); no head reaches 4 GiB
        // under sane limits, and one that does is refused, not truncated.
        let Ok(len32) = u32::try_from(head.len) else {
            return Err(self.fail(Error::HeaderTooLarge));
        };
        // Parts are kept as offsets into the head, which is split off the
        // buffer (a reference count, no copy) once the borrow ends. Every
        // offset is below `len`, so none of these casts truncates.
        let offset = |s: &str| (s.as_ptr() as usize - buf.as_ptr() as usize) as u32;
        let method_start = offset(head.method);
        let target = offset(head.target)..offset(head.target) + head.target.len() as u32;
        let (kind, len, fields_start) = (head.body, head.len, located.line_len as u32);
        debug_assert!(target.end <= len32 && fields_start <= len32);
        let (version, keep_alive) = (head.version, head.keep_alive);
        let (expect_continue, upgrade) = (head.expect_continue, head.upgrade);
        let request = Request {
            head: buf.split_to(len).freeze(),
            method_start,
            target,
            fields_start,
            version,
            body: Bytes::new(),
            trailers: None,
            keep_alive,
            expect_continue,
            upgrade,
            chunked: kind == BodyKind::Chunked,
        };
        self.keep_alive = request.keep_alive;
        // Every body ends with `body` back at `None` (see `read_body`,
        // `decode` and `fail`), so a bodiless request writes nothing here.
        debug_assert!(matches!(self.body, BodyProgress::None));
        let has_body = match kind {
            BodyKind::Empty | BodyKind::CloseDelimited => false,
            BodyKind::Length(n) => {
                self.body = BodyProgress::Length(n);
                true
            }
            BodyKind::Chunked => {
                self.body = BodyProgress::Chunked(ChunkedDecoder::new(self.limits));
                true
            }
        };
        self.continue_pending = request.expect_continue && has_body;
        if STREAMING {
            self.end_pending = !has_body;
        }
        let next = if has_body {
            ConnState::ReadingBody
        } else {
            ConnState::AwaitingResponse
        };
        debug_assert_eq!(
            transition(self.state, ConnEvent::HeadComplete { body: has_body }),
            Ok(next)
        );
        self.state = next;
        Ok(Some(request))
    }

    fn read_body(&mut self, buf: &mut BytesMut) -> Result<Event, Error> {
        match &mut self.body {
            BodyProgress::None => {
                self.step(ConnEvent::BodyComplete);
                Ok(Event::End)
            }
            BodyProgress::Length(0) => {
                self.body = BodyProgress::None;
                self.step(ConnEvent::BodyComplete);
                Ok(Event::End)
            }
            BodyProgress::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Event::NeedData);
                }
                let take = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                *remaining -= take as u64;
                self.continue_pending = false;
                Ok(Event::Body(buf.split_to(take).freeze()))
            }
            BodyProgress::Chunked(decoder) => loop {
                match decoder.decode(buf) {
                    Ok(Chunk::Partial) => return Ok(Event::NeedData),
                    Ok(Chunk::Data { start, end }) => {
                        self.continue_pending = false;
                        buf.advance(start);
                        if end > start {
                            return Ok(Event::Body(buf.split_to(end - start).freeze()));
                        }
                    }
                    Ok(Chunk::End { consumed }) => {
                        let trailer_len = decoder.trailer_section_len();
                        buf.advance(consumed - trailer_len);
                        let section = buf.split_to(trailer_len);
                        // Two bytes are the bare CRLF of a body without trailers.
                        if trailer_len > 2 {
                            self.trailers = section.freeze();
                        }
                        self.body = BodyProgress::None;
                        self.step(ConnEvent::BodyComplete);
                        return Ok(Event::End);
                    }
                    Err(e) => return Err(self.fail(e)),
                }
            },
        }
    }

    /// Returns the next whole request, with its body, or `None` when more
    /// bytes are needed or a response is outstanding.
    ///
    /// A `Content-Length` body is split off the buffer without copying once
    /// it has all arrived; a chunked body is copied into one contiguous buffer.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, Error> {
        // The common case, a bodiless request, without the event round trip.
        if matches!(self.state, ConnState::Idle | ConnState::ReadingHead) && !self.end_pending {
            match self.read_request_head::<false>(buf)? {
                None => return Ok(None),
                Some(request) if self.state == ConnState::AwaitingResponse => {
                    return Ok(Some(request));
                }
                Some(request) => {
                    self.collected.clear();
                    self.pending = Some(request);
                }
            }
        }
        loop {
            if let (ConnState::ReadingBody, BodyProgress::Length(remaining)) =
                (self.state, &self.body)
            {
                let Ok(remaining) = usize::try_from(*remaining) else {
                    return Ok(None);
                };
                if buf.len() < remaining {
                    return Ok(None);
                }
                let body = buf.split_to(remaining).freeze();
                self.body = BodyProgress::None;
                self.continue_pending = false;
                self.step(ConnEvent::BodyComplete);
                return Ok(self.pending.take().map(|r| Request { body, ..r }));
            }
            match self.next_event(buf)? {
                Event::Head(request) => {
                    if self.state == ConnState::AwaitingResponse {
                        self.end_pending = false;
                        return Ok(Some(request));
                    }
                    self.collected.clear();
                    self.pending = Some(request);
                }
                Event::Body(bytes) => self.collected.extend_from_slice(&bytes),
                Event::End => {
                    let body = self.collected.split().freeze();
                    let trailers = std::mem::take(&mut self.trailers);
                    let trailers = (!trailers.is_empty()).then(|| Box::new(trailers));
                    return Ok(self.pending.take().map(|r| Request {
                        body,
                        trailers,
                        ..r
                    }));
                }
                Event::NeedData | Event::Paused | Event::Closed => return Ok(None),
            }
        }
    }

    /// True once per request that sent `Expect: 100-continue` and whose body
    /// has not started: the caller should write `100 Continue` (or a final
    /// status) now, or the client may wait before sending the body.
    pub fn take_continue(&mut self) -> bool {
        std::mem::take(&mut self.continue_pending) && self.state == ConnState::ReadingBody
    }

    /// Records that the response to the current request was written.
    /// `keep_alive` is the server's wish; the connection stays open only if
    /// the request allowed it too. Errors mean no response was due (a bug).
    pub fn response_sent(&mut self, keep_alive: bool) -> Result<(), TransitionError> {
        if self.state == ConnState::AwaitingResponse {
            // The common case, written out (the table agrees: debug builds check).
            let next = if keep_alive && self.keep_alive {
                ConnState::Idle
            } else {
                ConnState::Closed
            };
            debug_assert_eq!(
                transition(
                    self.state,
                    ConnEvent::ResponseSent {
                        keep_alive: keep_alive && self.keep_alive
                    }
                ),
                Ok(next)
            );
            self.state = next;
            self.end_pending = false;
            return Ok(());
        }
        let event = ConnEvent::ResponseSent {
            keep_alive: keep_alive && self.keep_alive,
        };
        self.state = transition(self.state, event)?;
        self.end_pending = false;
        Ok(())
    }

    /// Whether the response being written must end the connection (so it
    /// should carry `Connection: close`).
    pub fn must_close(&self) -> bool {
        !self.keep_alive || matches!(self.state, ConnState::Closing | ConnState::Closed)
    }

    /// Records that the peer closed its side. Returns `UnexpectedEof` if a
    /// request was cut short; answer it (400) and close.
    pub fn peer_closed(&mut self) -> Result<(), Error> {
        let cut_short = matches!(self.state, ConnState::ReadingHead | ConnState::ReadingBody);
        self.state = transition(self.state, ConnEvent::PeerClosed).unwrap_or(ConnState::Closed);
        self.keep_alive = false;
        if cut_short {
            Err(Error::UnexpectedEof)
        } else {
            Ok(())
        }
    }
}
