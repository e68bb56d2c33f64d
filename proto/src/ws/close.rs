//! The close handshake (RFC 6455 §5.5.1, §7) as a table, and close-code rules.
//!
//! States and transitions are data here, apart from byte parsing, so that a
//! test can walk every (state, event) pair. The rules:
//!
//! 1. After we send a close frame we send nothing more, but keep reading
//!    (data is ignored) until the peer's close arrives.
//! 2. After we receive a close frame we answer it with one close frame (echoing
//!    the code) and the connection is closed; anything after it is ignored.
//! 3. Once both close frames have crossed, or the connection failed, it is
//!    `Closed`: the caller flushes its output and closes the transport.
//! 4. Failing the connection (a peer protocol error) sends a close frame
//!    carrying the error's code, unless one was already sent, and closes.

use super::error::Misuse;

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseState {
    /// Neither side has sent a close frame.
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// The peer sent a close frame; ours is yet to go.
    CloseReceived,
    /// Both close frames crossed, or the connection was failed.
    Closed,
}

/// Something that happens to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseEvent {
    /// We want to send a data frame, ping or pong.
    SendData,
    /// We want to send a close frame.
    SendClose,
    /// A data frame, ping or pong arrived.
    ReceiveData,
    /// A close frame arrived.
    ReceiveClose,
    /// The peer broke the protocol (or exceeded a limit).
    Fail,
}

/// What the connection must do for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// Encode the outgoing frame, or deliver the incoming one.
    Proceed,
    /// Drop the incoming frame unseen.
    Ignore,
    /// Deliver the peer's close, then send our close frame echoing its code.
    DeliverAndEcho,
    /// Deliver the peer's close; ours was already sent.
    Deliver,
    /// Send a close frame with the failure's code.
    SendFailure,
    /// The close frame was already sent: just stop.
    Stop,
}

/// The transition table. `Err` is a caller mistake, never a peer's.
pub fn transition(
    state: CloseState,
    event: CloseEvent,
) -> Result<(CloseState, CloseAction), Misuse> {
    use CloseAction as A;
    use CloseEvent as E;
    use CloseState as S;
    Ok(match (state, event) {
        (S::Open, E::SendData) => (S::Open, A::Proceed),
        (S::Open, E::ReceiveData) => (S::Open, A::Proceed),
        (S::Open, E::SendClose) => (S::CloseSent, A::Proceed),
        (S::Open, E::ReceiveClose) => (S::CloseReceived, A::DeliverAndEcho),
        (S::Open, E::Fail) => (S::Closed, A::SendFailure),

        (S::CloseSent, E::SendData) => return Err(Misuse::SendAfterClose),
        (S::CloseSent, E::SendClose) => return Err(Misuse::AlreadyClosing),
        (S::CloseSent, E::ReceiveData) => (S::CloseSent, A::Ignore),
        (S::CloseSent, E::ReceiveClose) => (S::Closed, A::Deliver),
        (S::CloseSent, E::Fail) => (S::Closed, A::Stop),

        (S::CloseReceived, E::SendData) => return Err(Misuse::SendAfterClose),
        (S::CloseReceived, E::SendClose) => (S::Closed, A::Proceed),
        (S::CloseReceived, E::ReceiveData | E::ReceiveClose) => (S::CloseReceived, A::Ignore),
        (S::CloseReceived, E::Fail) => (S::Closed, A::SendFailure),

        (S::Closed, E::SendData) => return Err(Misuse::SendAfterClose),
        (S::Closed, E::SendClose) => return Err(Misuse::AlreadyClosing),
        (S::Closed, E::ReceiveData | E::ReceiveClose | E::Fail) => (S::Closed, A::Ignore),
    })
}

/// Whether `code` may appear in a close frame on the wire (RFC 6455 §7.4,
/// the IANA registry): 1000-1003, 1007-1014, and 3000-4999 (registered and
/// private use). 1004-1006 and 1015 are reserved or local-only; 0-999 and
/// 1016-2999 are unassigned or reserved for the protocol.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [CloseState; 4] = [
        CloseState::Open,
        CloseState::CloseSent,
        CloseState::CloseReceived,
        CloseState::Closed,
    ];
    const EVENTS: [CloseEvent; 5] = [
        CloseEvent::SendData,
        CloseEvent::SendClose,
        CloseEvent::ReceiveData,
        CloseEvent::ReceiveClose,
        CloseEvent::Fail,
    ];

    #[test]
    fn every_state_and_event_pair_has_the_documented_outcome() {
        use CloseAction as A;
        use CloseEvent as E;
        use CloseState as S;
        let expected = |s, e| -> Result<(CloseState, CloseAction), Misuse> {
            Ok(match (s, e) {
                (S::Open, E::SendData | E::ReceiveData) => (S::Open, A::Proceed),
                (S::Open, E::SendClose) => (S::CloseSent, A::Proceed),
                (S::Open, E::ReceiveClose) => (S::CloseReceived, A::DeliverAndEcho),
                (S::Open, E::Fail) => (S::Closed, A::SendFailure),
                (S::CloseSent, E::ReceiveData) => (S::CloseSent, A::Ignore),
                (S::CloseSent, E::ReceiveClose) => (S::Closed, A::Deliver),
                (S::CloseSent, E::Fail) => (S::Closed, A::Stop),
                (S::CloseReceived, E::SendClose) => (S::Closed, A::Proceed),
                (S::CloseReceived, E::Fail) => (S::Closed, A::SendFailure),
                (S::CloseReceived, _) if e != E::SendData => (S::CloseReceived, A::Ignore),
                (S::Closed, E::ReceiveData | E::ReceiveClose | E::Fail) => (S::Closed, A::Ignore),
                (_, E::SendClose) => return Err(Misuse::AlreadyClosing),
                (_, E::SendData) => return Err(Misuse::SendAfterClose),
                _ => unreachable!("{s:?} {e:?} not covered by the test's own table"),
            })
        };
        for s in STATES {
            for e in EVENTS {
                assert_eq!(transition(s, e), expected(s, e), "{s:?} + {e:?}");
            }
        }
    }

    #[test]
    fn nothing_can_be_sent_once_our_close_has_gone() {
        for s in [CloseState::CloseSent, CloseState::Closed] {
            assert!(transition(s, CloseEvent::SendData).is_err());
            assert!(transition(s, CloseEvent::SendClose).is_err());
        }
    }

    #[test]
    fn close_codes_follow_rfc_6455_and_the_iana_registry() {
        for valid in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_valid_close_code(valid), "{valid}");
        }
        for invalid in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_close_code(invalid), "{invalid}");
        }
    }
}
