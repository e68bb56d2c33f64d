//! The sans-IO WebSocket connection, one per socket, for either role.
//!
//! Call order: after the handshake, [`Connection::feed`] the bytes read from
//! the transport, then call [`Connection::next_event`] until it returns
//! [`Poll::NeedData`]; after every call (including `send_*`, `ping`, `pong`,
//! `close`), write [`Connection::output`] to the transport and mark it
//! written with [`Connection::consume_output`]. When `next_event` returns
//! `Err`, flush the output (it may hold our close frame) and close the
//! transport: the connection is finished.

use bytes::{Buf, Bytes, BytesMut};

use super::close::{self, CloseAction, CloseEvent, CloseState};
use super::config::Config;
use super::error::{CapacityError, Error, Misuse, ProtocolError};
use super::frame::{self, CONTROL_PAYLOAD_BYTES_MAX, Decoded, FrameHeader, Opcode, Role};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// A complete message or control frame from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A text message; the bytes are valid UTF-8 (checked before delivery).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping. The matching pong is already queued in the output.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame (`None` when it carried no code). If we had not
    /// closed yet, our echoing close frame is already queued in the output.
    /// After this event the connection is closed.
    Close(Option<CloseFrame>),
}

/// The code and reason of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// A valid close code (see [`close::is_valid_close_code`]).
    pub code: u16,
    /// The reason; valid UTF-8.
    pub reason: Bytes,
}

/// What [`Connection::next_event`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// One event.
    Event(Event),
    /// Every fed byte has been used; feed more.
    NeedData,
}

/// A data frame's payload still arriving.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: FrameHeader,
    /// Payload bytes already taken from the input.
    received: u64,
}

/// A message being assembled from fragments or from pieces of one frame.
#[derive(Debug)]
struct Message {
    text: bool,
    data: BytesMut,
    utf8: Utf8Validator,
}

/// One WebSocket connection after the handshake: frames in, events out,
/// frames to send appended to an output buffer. See the module docs for the
/// call order.
///
/// **Invariants:** `input` holds only bytes not yet decoded; when `frame` is
/// `Some`, its header has been consumed from `input` and validated against
/// the config; `message` is `Some` exactly while a text or binary message has
/// begun and not ended.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    state: CloseState,
    input: BytesMut,
    output: Vec<u8>,
    /// Bytes of `output` already handed to the transport.
    output_written: usize,
    frame: Option<InFrame>,
    message: Option<Message>,
    /// xorshift64* state for client masking keys.
    mask_state: u64,
}

impl Connection {
    /// A server-side connection: requires masked frames, sends unmasked ones.
    pub fn server(config: Config) -> Self {
        Self::new(Role::Server, config, 0)
    }

    /// A client-side connection: requires unmasked frames, masks what it sends.
    /// `mask_seed` seeds the masking keys and must come from a random source
    /// (RFC 6455 §5.3 wants keys the peer's intermediaries cannot predict);
    /// `proto` has none of its own.
    pub fn client(config: Config, mask_seed: u64) -> Self {
        Self::new(Role::Client, config, mask_seed | 1)
    }

    fn new(role: Role, config: Config, mask_state: u64) -> Self {
        Connection {
            role,
            config,
            state: CloseState::Open,
            input: BytesMut::new(),
            output: Vec::new(),
            output_written: 0,
            frame: None,
            message: None,
            mask_state,
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the close handshake stands.
    pub fn state(&self) -> CloseState {
        self.state
    }

    /// True once both close frames crossed or the connection failed: flush
    /// the output and close the transport.
    pub fn is_closed(&self) -> bool {
        self.state == CloseState::Closed
    }

    /// Appends bytes read from the transport. Ignored once closed.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.state != CloseState::Closed {
            self.input.extend_from_slice(bytes);
        }
    }

    /// Bytes waiting to be written to the transport.
    pub fn output(&self) -> &[u8] {
        &self.output[self.output_written..]
    }

    /// Marks the first `n` bytes of [`Connection::output`] as written.
    pub fn consume_output(&mut self, n: usize) {
        assert!(
            n <= self.output().len(),
            "consumed {n} bytes of {}",
            self.output().len()
        );
        self.output_written += n;
        if self.output_written == self.output.len() {
            self.output.clear();
            self.output_written = 0;
        }
    }

    /// Takes all pending output at once.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.output);
        out.drain(..self.output_written);
        self.output_written = 0;
        out
    }

    /// Decodes the next event from fed bytes. See [`Poll`] and the module docs.
    ///
    /// A peer fault returns `Err(Capacity | Protocol)` after queueing a close
    /// frame with its code; `Err(Closed)` means the connection has finished.
    pub fn next_event(&mut self) -> Result<Poll, Error> {
        loop {
            if self.state == CloseState::Closed {
                return Err(Error::Closed);
            }
            let in_frame = match self.frame {
                Some(f) => f,
                None => match frame::decode_header(&self.input, self.role) {
                    Err(e) => return Err(self.fail(e.into())),
                    Ok(Decoded::Partial) => return Ok(Poll::NeedData),
                    Ok(Decoded::Complete(header)) => {
                        if let Err(e) = self.start_frame(&header) {
                            return Err(self.fail(e));
                        }
                        self.input.advance(header.header_len);
                        let f = InFrame {
                            header,
                            received: 0,
                        };
                        self.frame = Some(f);
                        f
                    }
                },
            };
            let step = if in_frame.header.opcode.is_control() {
                self.control_payload(in_frame.header)
            } else {
                self.data_payload(in_frame)
            };
            match step {
                Err(e) => return Err(self.fail(e)),
                Ok(Step::NeedData) => return Ok(Poll::NeedData),
                Ok(Step::Continue) => {}
                Ok(Step::Event(ev)) => return Ok(Poll::Event(ev)),
            }
        }
    }

    /// Checks a new header against the message in progress and the limits,
    /// and opens a message for a text or binary frame.
    fn start_frame(&mut self, h: &FrameHeader) -> Result<(), Error> {
        if h.payload_len > self.config.frame_bytes_max as u64 {
            let max = self.config.frame_bytes_max;
            return Err(CapacityError::FrameTooLarge {
                bytes: h.payload_len,
                max,
            }
            .into());
        }
        match (h.opcode, &self.message) {
            (Opcode::Continuation, None) => {
                return Err(ProtocolError::UnexpectedContinuation.into());
            }
            (Opcode::Text | Opcode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation.into());
            }
            (Opcode::Text | Opcode::Binary, None) => {
                let text = h.opcode == Opcode::Text;
                self.message = Some(Message {
                    text,
                    data: BytesMut::new(),
                    utf8: Utf8Validator::new(),
                });
            }
            _ => {}
        }
        if !h.opcode.is_control() {
            let so_far = self.message.as_ref().map_or(0, |m| m.data.len() as u64);
            let total = so_far + h.payload_len;
            if total > self.config.message_bytes_max as u64 {
                let max = self.config.message_bytes_max;
                return Err(CapacityError::MessageTooLarge { bytes: total, max }.into());
            }
        }
        Ok(())
    }

    fn data_payload(&mut self, f: InFrame) -> Result<Step, Error> {
        let h = f.header;
        // start_frame bounded payload_len by frame_bytes_max, a usize.
        let len = h.payload_len as usize;
        let msg = self
            .message
            .as_mut()
            .expect("a data frame always has a message open");
        if f.received == 0 && h.fin && msg.data.is_empty() && self.input.len() >= len {
            // Fast path: a whole unfragmented message is in the input; no copy.
            let text = msg.text;
            self.message = None;
            self.frame = None;
            let mut payload = self.input.split_to(len);
            if let Some(m) = h.mask {
                apply_mask(&mut payload, m, 0);
            }
            if text && std::str::from_utf8(&payload).is_err() {
                return Err(ProtocolError::InvalidUtf8.into());
            }
            let payload = payload.freeze();
            return Ok(self.deliver_data(if text {
                Event::Text(payload)
            } else {
                Event::Binary(payload)
            }));
        }
        let remaining = (h.payload_len - f.received) as usize;
        let n = remaining.min(self.input.len());
        if n == 0 && remaining > 0 {
            return Ok(Step::NeedData);
        }
        let start = msg.data.len();
        msg.data.extend_from_slice(&self.input[..n]);
        self.input.advance(n);
        let chunk = &mut msg.data[start..];
        if let Some(m) = h.mask {
            // The key phase of a payload piece depends on its offset in the frame.
            apply_mask(chunk, m, f.received as usize);
        }
        if msg.text && msg.utf8.feed(chunk).is_err() {
            return Err(ProtocolError::InvalidUtf8.into());
        }
        let received = f.received + n as u64;
        if received < h.payload_len {
            self.frame = Some(InFrame {
                header: h,
                received,
            });
            return Ok(Step::NeedData);
        }
        self.frame = None;
        if !h.fin {
            return Ok(Step::Continue);
        }
        let mut msg = self.message.take().expect("checked above");
        if msg.text && msg.utf8.finish().is_err() {
            return Err(ProtocolError::InvalidUtf8.into());
        }
        let payload = msg.data.freeze();
        Ok(self.deliver_data(if msg.text {
            Event::Text(payload)
        } else {
            Event::Binary(payload)
        }))
    }

    fn deliver_data(&mut self, ev: Event) -> Step {
        match close::transition(self.state, CloseEvent::ReceiveData) {
            Ok((s, CloseAction::Proceed)) => {
                self.state = s;
                Step::Event(ev)
            }
            _ => Step::Continue,
        }
    }

    fn control_payload(&mut self, h: FrameHeader) -> Result<Step, Error> {
        // Control payloads are at most 125 bytes: wait for the whole of it.
        let len = h.payload_len as usize;
        if self.input.len() < len {
            return Ok(Step::NeedData);
        }
        self.frame = None;
        let mut payload = self.input.split_to(len);
        if let Some(m) = h.mask {
            apply_mask(&mut payload, m, 0);
        }
        let payload = payload.freeze();
        match h.opcode {
            Opcode::Close => self.receive_close(payload),
            opcode => {
                let (s, action) = close::transition(self.state, CloseEvent::ReceiveData)?;
                self.state = s;
                if action != CloseAction::Proceed {
                    return Ok(Step::Continue);
                }
                if opcode == Opcode::Ping {
                    self.write_frame(true, Opcode::Pong, &payload);
                    return Ok(Step::Event(Event::Ping(payload)));
                }
                Ok(Step::Event(Event::Pong(payload)))
            }
        }
    }

    fn receive_close(&mut self, payload: Bytes) -> Result<Step, Error> {
        let frame = match payload.len() {
            0 => None,
            1 => return Err(ProtocolError::CloseBodyOneByte.into()),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !close::is_valid_close_code(code) {
                    return Err(ProtocolError::InvalidCloseCode(code).into());
                }
                if std::str::from_utf8(&payload[2..]).is_err() {
                    return Err(ProtocolError::InvalidUtf8.into());
                }
                Some(CloseFrame {
                    code,
                    reason: payload.slice(2..),
                })
            }
        };
        let (s, action) = close::transition(self.state, CloseEvent::ReceiveClose)?;
        self.state = s;
        match action {
            CloseAction::DeliverAndEcho => {
                let mut body = Vec::with_capacity(2);
                if let Some(f) = &frame {
                    body.extend_from_slice(&f.code.to_be_bytes());
                }
                self.send_close_frame(&body)?;
            }
            CloseAction::Deliver => {}
            _ => return Ok(Step::Continue),
        }
        self.input.clear();
        Ok(Step::Event(Event::Close(frame)))
    }

    /// Fails the connection for a peer fault: queues our close frame with the
    /// fault's code (unless ours already went) and closes.
    fn fail(&mut self, err: Error) -> Error {
        let Some(code) = err.close_code() else {
            return err;
        };
        if let Ok((s, action)) = close::transition(self.state, CloseEvent::Fail) {
            if action == CloseAction::SendFailure {
                self.write_frame(true, Opcode::Close, &code.to_be_bytes());
            }
            self.state = s;
        }
        self.input.clear();
        self.frame = None;
        self.message = None;
        err
    }

    /// Sends a whole text message.
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.send_frame(true, Opcode::Text, text.as_bytes())
    }

    /// Sends a whole binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send_frame(true, Opcode::Binary, data)
    }

    /// Sends a ping (payload at most 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.send_frame(true, Opcode::Ping, payload)
    }

    /// Sends an unsolicited pong (payload at most 125 bytes). Pings are
    /// answered automatically; this is for heartbeats.
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.send_frame(true, Opcode::Pong, payload)
    }

    /// Sends one frame of any data or control opcode, for callers that
    /// fragment messages themselves: a text or binary frame with `fin` false,
    /// then continuation frames, the last with `fin` true. The caller keeps
    /// the fragment order and, for text, UTF-8 validity across fragments.
    /// Use [`Connection::close`] for close frames.
    pub fn send_frame(&mut self, fin: bool, opcode: Opcode, payload: &[u8]) -> Result<(), Error> {
        if opcode == Opcode::Close {
            return self.send_close_frame(payload);
        }
        if opcode.is_control() && (payload.len() > CONTROL_PAYLOAD_BYTES_MAX || !fin) {
            return Err(Misuse::ControlPayloadTooLong.into());
        }
        let (s, _) = close::transition(self.state, CloseEvent::SendData)?;
        self.state = s;
        self.write_frame(fin, opcode, payload);
        Ok(())
    }

    /// Starts the close handshake: sends a close frame with `code` (or none)
    /// and `reason`. Keep calling `next_event` until the peer's close arrives
    /// (data is ignored meanwhile) and `is_closed` is true.
    pub fn close(&mut self, code: Option<u16>, reason: &str) -> Result<(), Error> {
        let mut body = Vec::new();
        if let Some(code) = code {
            if !close::is_valid_close_code(code) {
                return Err(Misuse::InvalidCloseCode(code).into());
            }
            body.extend_from_slice(&code.to_be_bytes());
            body.extend_from_slice(reason.as_bytes());
        }
        self.send_close_frame(&body)
    }

    fn send_close_frame(&mut self, body: &[u8]) -> Result<(), Error> {
        if body.len() > CONTROL_PAYLOAD_BYTES_MAX {
            return Err(Misuse::ControlPayloadTooLong.into());
        }
        let (s, _) = close::transition(self.state, CloseEvent::SendClose)?;
        self.state = s;
        self.write_frame(true, Opcode::Close, body);
        Ok(())
    }

    fn write_frame(&mut self, fin: bool, opcode: Opcode, payload: &[u8]) {
        let mask = match self.role {
            Role::Server => None,
            Role::Client => Some(self.next_mask()),
        };
        frame::encode_frame(&mut self.output, fin, opcode, mask, payload);
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift64*: cheap, and unpredictable enough given a random seed.
        let mut x = self.mask_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.mask_state = x;
        let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let b = word.to_le_bytes();
        [b[4], b[5], b[6], b[7]]
    }
}

/// The outcome of one decoding step inside `next_event`.
enum Step {
    NeedData,
    Continue,
    Event(Event),
}
