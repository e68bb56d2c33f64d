//! The server connection state machine, as one table.
//!
//! Byte parsing lives elsewhere; this file only says which (state, event)
//! pairs are legal and where each leads. [`RequestDecoder`](super::RequestDecoder)
//! drives it. The rules, in words:
//!
//! 1. A connection reads one request at a time: head, then body.
//! 2. Once a request is complete the connection is *paused*
//!    ([`ConnState::AwaitingResponse`]) until its response is written, so
//!    pipelined requests are answered in order; their bytes wait in the buffer.
//! 3. After the response, the connection returns to [`ConnState::Idle`] if
//!    both sides want keep-alive, else it is [`ConnState::Closed`].
//! 4. A peer error, or the peer closing mid-request or with a response
//!    outstanding, leads to [`ConnState::Closing`]: one final response may be
//!    written, then the connection closes.
//! 5. Answering before the body was read ends the connection: the unread
//!    body would otherwise be parsed as the next request.

use std::fmt;

/// Where a server connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Between requests; no byte of the next one has been seen.
    Idle,
    /// Some bytes of a request head have arrived.
    ReadingHead,
    /// The head is parsed; body bytes are being read.
    ReadingBody,
    /// A whole request was read; paused until its response is sent.
    AwaitingResponse,
    /// No more requests will be read; one final response may be sent, then close.
    Closing,
    /// The connection is finished; close the socket.
    Closed,
}

/// What happened on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnEvent {
    /// Bytes arrived from the peer.
    BytesArrived,
    /// A request head was parsed; `body` says whether a body follows.
    HeadComplete {
        /// Whether a body follows the head.
        body: bool,
    },
    /// The request body was read to its end.
    BodyComplete,
    /// The response to the current request was written in full.
    ResponseSent {
        /// Whether the connection may carry another request.
        keep_alive: bool,
    },
    /// The peer sent bytes that broke a rule (an [`Error`](super::Error)).
    PeerError,
    /// The peer closed its sending side.
    PeerClosed,
}

impl ConnState {
    /// Every state, for exhaustive tests.
    pub const ALL: [ConnState; 6] = [
        ConnState::Idle,
        ConnState::ReadingHead,
        ConnState::ReadingBody,
        ConnState::AwaitingResponse,
        ConnState::Closing,
        ConnState::Closed,
    ];
}

impl ConnEvent {
    /// Every event, for exhaustive tests.
    pub const ALL: [ConnEvent; 8] = [
        ConnEvent::BytesArrived,
        ConnEvent::HeadComplete { body: false },
        ConnEvent::HeadComplete { body: true },
        ConnEvent::BodyComplete,
        ConnEvent::ResponseSent { keep_alive: false },
        ConnEvent::ResponseSent { keep_alive: true },
        ConnEvent::PeerError,
        ConnEvent::PeerClosed,
    ];
}

/// An event that is illegal in the current state: a bug in the caller
/// (for example, sending a response that was never requested), never a
/// peer fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionError {
    /// The state the connection was in.
    pub state: ConnState,
    /// The event that does not apply to it.
    pub event: ConnEvent,
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {:?} is not legal in connection state {:?}",
            self.event, self.state
        )
    }
}

impl std::error::Error for TransitionError {}

/// The transition table. Pairs not listed are illegal.
pub fn transition(state: ConnState, event: ConnEvent) -> Result<ConnState, TransitionError> {
    use ConnEvent as E;
    use ConnState as S;
    let next = match (state, event) {
        (S::Idle | S::ReadingHead, E::BytesArrived) => S::ReadingHead,
        (S::ReadingBody, E::BytesArrived) => S::ReadingBody,
        (S::AwaitingResponse, E::BytesArrived) => S::AwaitingResponse,
        (S::Closing, E::BytesArrived) => S::Closing,

        (S::Idle | S::ReadingHead, E::HeadComplete { body: true }) => S::ReadingBody,
        (S::Idle | S::ReadingHead, E::HeadComplete { body: false }) => S::AwaitingResponse,
        (S::ReadingBody, E::BodyComplete) => S::AwaitingResponse,

        (S::AwaitingResponse, E::ResponseSent { keep_alive: true }) => S::Idle,
        (S::AwaitingResponse, E::ResponseSent { keep_alive: false }) => S::Closed,
        (S::ReadingBody | S::Closing, E::ResponseSent { .. }) => S::Closed,

        (
            S::Idle | S::ReadingHead | S::ReadingBody | S::AwaitingResponse | S::Closing,
            E::PeerError,
        ) => S::Closing,

        (S::Idle | S::Closed, E::PeerClosed) => S::Closed,
        (S::ReadingHead | S::ReadingBody | S::AwaitingResponse | S::Closing, E::PeerClosed) => {
            S::Closing
        }

        _ => return Err(TransitionError { state, event }),
    };
    Ok(next)
}
