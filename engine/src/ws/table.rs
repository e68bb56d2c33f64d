//! The shard's socket table: every open socket of every object on this shard,
//! with its tags, attachment and outgoing queue. It outlives object instances,
//! which is what lets an object hibernate while its sockets stay open.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{Latency, Shares, TaskQueueHandle};

use crate::host::Target;
use crate::id::{IdMap, ObjectId};
use crate::store::Ticket;

/// A socket's handle, unique on its shard for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u64);

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ws-{:x}", self.0)
    }
}

/// WebSocket limits and timers of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Largest incoming message; larger ones close the socket with 1009. Default 1 MiB.
    pub message_bytes_max: usize,
    /// Bytes queued for one socket before it is closed as a slow consumer (1008). Default 1 MiB.
    pub send_buffer_bytes_max: usize,
    /// A server ping goes out after this long without input. Default 30000; 0 disables.
    pub ping_interval_ms: u64,
    /// A socket with no input for this long is closed (1001). Default 120000; 0 disables.
    pub idle_timeout_ms: u64,
    /// Largest per-socket attachment. Default 2048.
    pub attachment_bytes_max: usize,
    /// How long a closing socket may take to flush and finish the close handshake. Default 2000.
    pub close_grace_ms: u64,
    /// Open sockets one object may have; `accept` refuses more. Default 32768.
    pub sockets_per_object_max: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            message_bytes_max: 1 << 20,
            send_buffer_bytes_max: 1 << 20,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 120_000,
            attachment_bytes_max: 2048,
            close_grace_ms: 2000,
            sockets_per_object_max: 32768,
        }
    }
}

/// WebSocket counters of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WsMetrics {
    /// Sockets accepted.
    pub accepted: u64,
    /// Text and binary messages received.
    pub messages_in: u64,
    /// Text and binary messages written (one per socket for a broadcast).
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Sockets closed because their send buffer overflowed.
    pub slow_consumer_closes: u64,
    /// Objects evicted while they had open sockets.
    pub hibernations: u64,
}

/// One queued output item, in send order.
pub(crate) enum Out {
    /// A complete encoded frame, released once `gate` is durable.
    Frame { gate: Option<Ticket>, bytes: Bytes },
    /// A ping or pong from the engine: not gated, not counted against the buffer.
    Control(Bytes),
    /// A close the object (or the engine) started.
    Close {
        gate: Option<Ticket>,
        code: u16,
        reason: String,
    },
    /// The object has handled the peer's close: send our echo and finish.
    EchoClose,
}

/// Where a socket stands, as the object sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SockState {
    /// Accepted by `fetch`, before its 101 is written.
    Pending,
    /// Open both ways.
    Open,
    /// A close is queued or sent; the object may no longer send.
    Closing,
    /// The connection is over; the close handler is still to run.
    Ended,
}

/// A socket in the table. Shared (`Rc`) by the table and the socket's task.
pub(crate) struct SocketEntry {
    pub(crate) id: SocketId,
    pub(crate) target: Target,
    pub(crate) tags: Vec<String>,
    pub(crate) attachment: RefCell<Option<Bytes>>,
    pub(crate) queue: RefCell<VecDeque<Out>>,
    /// INVARIANT: the encoded bytes of every `Out::Frame` in `queue`.
    pub(crate) queued_bytes: Cell<usize>,
    pub(crate) state: Cell<SockState>,
    /// Set when the socket overflowed its send buffer; the task gives its
    /// current write `close_grace_ms` and then drops the connection.
    pub(crate) killed: Cell<bool>,
    /// When `killed` was set: the connection is dropped `close_grace_ms` later.
    pub(crate) killed_at: Cell<Option<Instant>>,
    /// Wakes the socket's writer; see [`Notify`].
    pub(crate) notify: Notify,
}

/// The wake-up of one socket's writer: a flag and the writer's waker.
///
/// A broadcast notifies every recipient, so this is on the fan-out's hot
/// path: a notify is a flag test and, for the first one since the writer
/// last looked, one task wake. Notifies before the writer runs coalesce into
/// one wake-up, and the writer then writes everything queued in one `send`.
/// (A channel did the same job with a queue operation per frame.)
#[derive(Default)]
pub(crate) struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// Sets the flag and wakes the waiting writer, if any.
    pub(crate) fn notify(&self) {
        if !self.notified.replace(true)
            && let Some(w) = self.waker.borrow_mut().take()
        {
            w.wake();
        }
    }

    /// Resolves once notified since the last call returned (at once if the
    /// flag is already set), clearing the flag. Dropping it before it
    /// resolves leaves at most a stale waker, whose wake is spurious and harmless.
    pub(crate) async fn notified(&self) {
        std::future::poll_fn(|cx| {
            if self.notified.replace(false) {
                return Poll::Ready(());
            }
            let mut slot = self.waker.borrow_mut();
            match slot.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl SocketEntry {
    /// Wakes the socket's task (idempotent).
    pub(crate) fn wake(&self) {
        self.notify.notify();
    }

    /// True while the object may send on the socket.
    pub(crate) fn sendable(&self) -> bool {
        matches!(self.state.get(), SockState::Pending | SockState::Open)
    }
}

/// Every socket of the shard, by ID and by object.
pub(crate) struct SocketTable {
    pub(crate) limits: WsLimits,
    shard_id: u32,
    by_id: RefCell<HashMap<SocketId, Rc<SocketEntry>>>,
    /// Each object's sockets in accept order.
    by_object: RefCell<IdMap<Vec<Rc<SocketEntry>>>>,
    /// Each object's auto-response pair: (request, encoded response frame).
    auto: RefCell<IdMap<(Bytes, Bytes)>>,
    next: Cell<u64>,
    pub(crate) metrics: RefCell<WsMetrics>,
    /// The shard's task queue for socket I/O, made on first use; see [`SocketTable::io_queue`].
    io_queue: Cell<Option<TaskQueueHandle>>,
}

/// How long socket I/O may run before the executor stops to poll io_uring
/// and lets the default queue (object handlers, the storage commit loop) run.
///
/// Why: a fan-out pass writes to every member socket, and one loopback
/// `send` costs microseconds, so a pass over a thousand sockets takes
/// milliseconds. glommio reaps I/O completions only between passes of a task
/// queue, and preempts a queue only at its latency bound (100 ms by
/// default). Run in the default queue, the storage commit loop's write and
/// fdatasync completions (which release the next broadcasts through the
/// output gate) waited for whole passes, and every message took several
/// passes from receipt to delivery.
pub(crate) const IO_QUEUE_PREEMPT_US: u64 = 500;

impl SocketTable {
    pub(crate) fn new(shard_id: u32, limits: WsLimits) -> SocketTable {
        SocketTable {
            limits,
            shard_id,
            by_id: RefCell::new(HashMap::new()),
            by_object: RefCell::new(IdMap::default()),
            auto: RefCell::new(IdMap::default()),
            next: Cell::new(0),
            metrics: RefCell::new(WsMetrics::default()),
            io_queue: Cell::new(None),
        }
    }

    /// The task queue socket tasks run in: same shares as the default queue,
    /// and a latency bound of [`IO_QUEUE_PREEMPT_US`]. Must be called on the
    /// shard's executor.
    pub(crate) fn io_queue(&self) -> TaskQueueHandle {
        if let Some(q) = self.io_queue.get() {
            return q;
        }
        let q = glommio::executor().create_task_queue(
            Shares::Static(1000),
            Latency::Matters(Duration::from_micros(IO_QUEUE_PREEMPT_US)),
            "cairn-ws-io",
        );
        self.io_queue.set(Some(q));
        q
    }

    /// A fresh ID; the shard number in the top bits keeps IDs of different
    /// shards apart in logs.
    pub(crate) fn next_id(&self) -> SocketId {
        let n = self.next.get() + 1;
        self.next.set(n);
        SocketId((u64::from(self.shard_id) << 48) | n)
    }

    /// Adds a pending socket for `target`.
    pub(crate) fn insert(
        &self,
        id: SocketId,
        target: Target,
        tags: Vec<String>,
    ) -> Rc<SocketEntry> {
        let e = Rc::new(SocketEntry {
            id,
            target,
            tags,
            attachment: RefCell::new(None),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            state: Cell::new(SockState::Pending),
            killed: Cell::new(false),
            killed_at: Cell::new(None),
            notify: Notify::default(),
        });
        self.by_id.borrow_mut().insert(id, e.clone());
        self.by_object
            .borrow_mut()
            .entry(e.target.id)
            .or_default()
            .push(e.clone());
        e
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.borrow().len()
    }

    pub(crate) fn get(&self, id: SocketId) -> Option<Rc<SocketEntry>> {
        self.by_id.borrow().get(&id).cloned()
    }

    /// Removes a socket; the object's auto-response goes with its last socket.
    pub(crate) fn remove(&self, id: SocketId) {
        let Some(e) = self.by_id.borrow_mut().remove(&id) else {
            return;
        };
        let mut by_object = self.by_object.borrow_mut();
        if let Some(v) = by_object.get_mut(&e.target.id) {
            v.retain(|s| s.id != id);
            if v.is_empty() {
                by_object.remove(&e.target.id);
                self.auto.borrow_mut().remove(&e.target.id);
            }
        }
    }

    /// The object's sockets, in accept order.
    pub(crate) fn of_object(&self, id: &ObjectId) -> Vec<Rc<SocketEntry>> {
        self.by_object.borrow().get(id).cloned().unwrap_or_default()
    }

    /// Runs `f` over the object's sockets without cloning the list.
    pub(crate) fn for_each_of(&self, id: &ObjectId, mut f: impl FnMut(&Rc<SocketEntry>)) {
        if let Some(v) = self.by_object.borrow().get(id) {
            for e in v {
                f(e);
            }
        }
    }

    /// Objects that have sockets.
    pub(crate) fn objects(&self) -> Vec<ObjectId> {
        self.by_object.borrow().keys().copied().collect()
    }

    /// How many sockets (open or closing) the object has.
    pub(crate) fn count_of(&self, id: &ObjectId) -> usize {
        self.by_object.borrow().get(id).map_or(0, Vec::len)
    }

    pub(crate) fn has_sockets(&self, id: &ObjectId) -> bool {
        self.by_object.borrow().contains_key(id)
    }

    /// Open sockets per class, sorted by class.
    pub(crate) fn count_by_class(&self) -> Vec<(String, usize)> {
        let mut m: std::collections::BTreeMap<String, usize> = Default::default();
        for e in self.by_id.borrow().values() {
            if e.state.get() != SockState::Ended {
                *m.entry(e.target.class.clone()).or_default() += 1;
            }
        }
        m.into_iter().collect()
    }

    pub(crate) fn set_auto(&self, id: ObjectId, pair: Option<(Bytes, Bytes)>) {
        match pair {
            Some(p) => self.auto.borrow_mut().insert(id, p),
            None => self.auto.borrow_mut().remove(&id),
        };
    }

    /// The encoded response frame if `msg` is the object's auto-response request.
    pub(crate) fn auto_response(&self, id: &ObjectId, msg: &[u8]) -> Option<Bytes> {
        let auto = self.auto.borrow();
        let (req, resp) = auto.get(id)?;
        (req[..] == *msg).then(|| resp.clone())
    }

    /// Queues `out` on `e`, closing `e` as a slow consumer if its buffer would
    /// overflow. Returns false if the socket can no longer take frames.
    pub(crate) fn push(&self, e: &SocketEntry, out: Out) -> bool {
        if e.killed.get() || e.state.get() == SockState::Ended {
            return false;
        }
        if let Out::Frame { bytes, .. } = &out {
            let total = e.queued_bytes.get() + bytes.len();
            if total > self.limits.send_buffer_bytes_max {
                self.kill(e);
                return false;
            }
            e.queued_bytes.set(total);
        }
        e.queue.borrow_mut().push_back(out);
        e.wake();
        true
    }

    /// Closes `e` for falling behind: drops what it has queued, queues a 1008
    /// close, and counts it.
    pub(crate) fn kill(&self, e: &SocketEntry) {
        if e.killed.replace(true) {
            return;
        }
        e.killed_at.set(Some(Instant::now()));
        e.queue.borrow_mut().clear();
        e.queued_bytes.set(0);
        e.queue.borrow_mut().push_back(Out::Close {
            gate: None,
            code: 1008,
            reason: "slow consumer: send buffer full".into(),
        });
        if e.state.get() != SockState::Ended {
            e.state.set(SockState::Closing);
        }
        self.metrics.borrow_mut().slow_consumer_closes += 1;
        e.wake();
    }
}
