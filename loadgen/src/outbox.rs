//! What a nonblocking socket has yet to take: the bytes, how far they are
//! written, and whether the socket is registered with epoll for writability
//! because a write came up short. Shared by the HTTP and WebSocket loops.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;

use rustix::event::epoll;

/// Bytes to send, `buf[sent..]` not yet written.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Callers append what they render here.
    pub(crate) buf: Vec<u8>,
    sent: usize,
    /// Registered for writability (a write came up short).
    want_write: bool,
}

/// A write failed or the socket's epoll interest could not be changed; the
/// connection is no use.
#[derive(Debug)]
pub(crate) struct WriteFailed;

impl Outbox {
    /// An empty outbox with room for `n` bytes.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Outbox {
            buf: Vec::with_capacity(n),
            ..Outbox::default()
        }
    }

    /// Forgets everything pending (the connection is gone).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.sent = 0;
        self.want_write = false;
    }

    /// Writes what is pending to `stream` (epoll token `slot`). On a short
    /// write asks epoll for writability, and drops that interest again once
    /// everything is written, so an idle socket only reports reads.
    pub(crate) fn flush(
        &mut self,
        stream: &mut TcpStream,
        ep: &OwnedFd,
        slot: usize,
    ) -> Result<(), WriteFailed> {
        let data = epoll::EventData::new_u64(slot as u64);
        while self.sent < self.buf.len() {
            match stream.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(WriteFailed),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !self.want_write {
                        self.want_write = true;
                        let flags = epoll::EventFlags::IN | epoll::EventFlags::OUT;
                        epoll::modify(ep, &*stream, data, flags).map_err(|_| WriteFailed)?;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(WriteFailed),
            }
        }
        self.buf.clear();
        self.sent = 0;
        if self.want_write {
            self.want_write = false;
            epoll::modify(ep, &*stream, data, epoll::EventFlags::IN).map_err(|_| WriteFailed)?;
        }
        Ok(())
    }
}
