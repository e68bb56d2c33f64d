//! WebSocket errors, split as tungstenite splits them: the connection closed
//! normally, we misused the API, the peer exceeded a limit, or the peer broke
//! the protocol. Every peer fault knows the close code to answer with.

use std::fmt;

/// An error from [`Connection`](super::connection::Connection).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The close handshake has finished (or the connection was failed); there
    /// are no more events and nothing more may be sent. Not a fault.
    Closed,
    /// The caller used the API wrongly (a bug in the caller, not the peer).
    Misuse(Misuse),
    /// The peer exceeded a configured limit; the answer is close code 1009.
    Capacity(CapacityError),
    /// The peer broke RFC 6455; the answer is close code 1002 or 1007.
    Protocol(ProtocolError),
}

impl Error {
    /// The close code to send to the peer for a peer fault, `None` otherwise.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Error::Closed | Error::Misuse(_) => None,
            Error::Capacity(_) => Some(1009),
            Error::Protocol(p) => Some(p.close_code()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("websocket connection is closed"),
            Error::Misuse(m) => write!(f, "websocket API misuse: {m}"),
            Error::Capacity(c) => write!(f, "websocket limit exceeded: {c}"),
            Error::Protocol(p) => write!(f, "websocket protocol error: {p}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<CapacityError> for Error {
    fn from(e: CapacityError) -> Self {
        Error::Capacity(e)
    }
}

impl From<Misuse> for Error {
    fn from(e: Misuse) -> Self {
        Error::Misuse(e)
    }
}

/// A way the caller can use the API wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misuse {
    /// A data frame, ping or pong was sent after our close frame.
    SendAfterClose,
    /// `close` was called twice, or after the connection closed.
    AlreadyClosing,
    /// A control frame payload (ping, pong, close code + reason) over 125 bytes.
    ControlPayloadTooLong,
    /// `close` with a code that may not be sent on the wire (e.g. 1005, 1006).
    InvalidCloseCode(u16),
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misuse::SendAfterClose => f.write_str("sent a message after the close frame"),
            Misuse::AlreadyClosing => f.write_str("close was already sent"),
            Misuse::ControlPayloadTooLong => f.write_str("control frame payload over 125 bytes"),
            Misuse::InvalidCloseCode(c) => write!(f, "close code {c} may not be sent"),
        }
    }
}

impl std::error::Error for Misuse {}

/// The peer exceeded a limit from [`Config`](super::config::Config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityError {
    /// A frame announced a payload over `frame_bytes_max`.
    FrameTooLarge {
        /// Announced payload length.
        bytes: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message (all fragments together) would exceed `message_bytes_max`.
    MessageTooLarge {
        /// Message length including the frame that crossed the limit.
        bytes: u64,
        /// The configured limit.
        max: usize,
    },
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapacityError::FrameTooLarge { bytes, max } => {
                write!(f, "frame of {bytes} bytes exceeds frame_bytes_max {max}")
            }
            CapacityError::MessageTooLarge { bytes, max } => {
                write!(
                    f,
                    "message of at least {bytes} bytes exceeds message_bytes_max {max}"
                )
            }
        }
    }
}

impl std::error::Error for CapacityError {}

/// A violation of RFC 6455 by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1-3 set while no extension was negotiated (RFC 6455 §5.2).
    ReservedBitsSet(u8),
    /// Opcode 3-7 or 0xB-0xF.
    UnknownOpcode(u8),
    /// A control frame with a payload over 125 bytes (§5.5).
    ControlFrameTooLong(u64),
    /// A control frame without FIN (§5.5).
    FragmentedControlFrame,
    /// A client sent an unmasked frame to a server (§5.1).
    UnmaskedClientFrame,
    /// A server sent a masked frame to a client (§5.1).
    MaskedServerFrame,
    /// A 64-bit payload length with its most significant bit set (§5.2).
    LengthMsbSet,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message was in progress.
    ExpectedContinuation,
    /// A text message or close reason that is not valid UTF-8 (close code 1007).
    InvalidUtf8,
    /// A close frame with a one-byte payload (§5.5.1).
    CloseBodyOneByte,
    /// A close frame with a code that may not appear on the wire (§7.4).
    InvalidCloseCode(u16),
}

impl ProtocolError {
    /// The close code to send the peer: 1007 for bad UTF-8, 1002 otherwise.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBitsSet(r) => {
                write!(f, "reserved bits {r:#05b} set without an extension")
            }
            ProtocolError::UnknownOpcode(o) => write!(f, "unknown opcode {o:#x}"),
            ProtocolError::ControlFrameTooLong(n) => {
                write!(f, "control frame payload of {n} bytes (max 125)")
            }
            ProtocolError::FragmentedControlFrame => f.write_str("fragmented control frame"),
            ProtocolError::UnmaskedClientFrame => f.write_str("unmasked frame from a client"),
            ProtocolError::MaskedServerFrame => f.write_str("masked frame from a server"),
            ProtocolError::LengthMsbSet => {
                f.write_str("64-bit payload length with the top bit set")
            }
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame without a message")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new message before the fragmented one ended")
            }
            ProtocolError::InvalidUtf8 => {
                f.write_str("invalid UTF-8 in a text message or close reason")
            }
            ProtocolError::CloseBodyOneByte => f.write_str("close frame with a one-byte payload"),
            ProtocolError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
        }
    }
}

impl std::error::Error for ProtocolError {}
