//! The object runtime on one shard: activation, the input and output gates,
//! panic isolation, alarms and eviction.
//!
//! Everything here is shard-local and `!Send` (`Rc`, `RefCell`): the compiler
//! refuses to move an object's state to another thread. Requests for objects
//! another shard owns leave through the [`Forwarder`] the shard layer installs.
//!
//! # Input gate
//!
//! An object handles one event (request or alarm) at a time, in arrival
//! order: each active object has one FIFO queue (`mailbox.rs`, at most
//! `object_queue_depth_max` events, allocated only for the events it holds)
//! drained by one runner task, which awaits
//! each handler to completion before taking the next event. Two handlers of one
//! object therefore never interleave, even though each may suspend. A full
//! queue refuses the event at once with 503 `overloaded` rather than growing
//! memory. Tests: `input_gate_delivers_events_in_arrival_order`,
//! `input_gate_refuses_events_past_the_queue_limit`.
//!
//! # Initialisation and resets
//!
//! A fresh instance (activation, wake from eviction, reset) runs
//! `Object::init` before its first event, inside that event's turn at the
//! gate and under `Context::block_concurrency_while` bounded by
//! `init_timeout_ms`, so no event ever sees a half-loaded object. An object
//! is reset (its instance dropped for a fresh one from the factory, whose
//! `init` runs again at the next event) when a handler panics, when `init`
//! fails or times out, or when a `block_concurrency_while` fails; a failed
//! `init` also fails the event that woke it (503 `init_failed`, a failed
//! alarm attempt, close 1011 for a message; a socket error or close event is
//! dropped unhandled) and the events queued behind it, without running
//! `init` for each. Writes already made stay: the storage they went to is
//! what the fresh instance loads. Tests: `a_failed_init_*`,
//! `events_queued_behind_a_failed_init_*`, `a_panicking_init_*`.
//!
//! # Output gate
//!
//! A response that follows a write is released only once that write is
//! durable. The object remembers the ticket of its latest write; when a
//! handler returns, its response waits for that ticket (tickets resolve in
//! order, so the latest covers every earlier write, including writes of
//! earlier events whose data this handler may have read). Meanwhile the runner
//! already starts the object's next event: that is what lets a hot object's
//! writes share one fdatasync. If the commit fails, the held response is
//! replaced by 503 `storage_failed` (507 `insufficient_storage` when the disk
//! is full): a failed flush never releases a response.
//! `Context::allow_unconfirmed` releases one event's response without waiting.
//! Tests: `output_gate_holds_response_until_fdatasync`,
//! `failed_flush_never_releases_response`,
//! `object_handles_next_event_while_previous_write_commits`.
//!
//! # WebSocket events
//!
//! Messages, errors and closes of an object's sockets enter the same input
//! queue as requests and alarms, so they obey the input gate. The sockets
//! themselves live in the shard's socket table (`ws::table`), not in the
//! object: an idle object with open sockets is evicted (hibernated) like any
//! other, and the next socket event re-activates it. See `ws.rs`.
//!
//! # Panics
//!
//! Each poll of a handler runs under `catch_unwind`. A panic answers its
//! request with 500 `handler_panicked` and a request id (also printed to
//! stderr), and the object's instance is dropped and re-created, so its
//! in-memory state is reloaded from storage. Writes it made before panicking
//! were already applied and stay. The shard lives on. A panic in `init` is a
//! failed init (503 `init_failed`, see above), counted in both metrics.
//!
//! # Memory budget
//!
//! Each active object is charged its footprint against
//! `object_memory_bytes_max`: the runtime's own structures for it (the
//! `Active` entry and its slot in the table, `ObjectState`, the queue and its
//! current buffer, the runner task, the instance's box; sizes taken with
//! `size_of`, plus `ALLOC_SLACK` per allocation), what the instance reports in
//! `Object::memory_bytes`, and `object_overhead_bytes` (a configurable margin).
//! The shard's storage index (every key of every object, kept in memory) is
//! charged against the same budget (`Store::index_bytes`): objects get what
//! the index leaves of 3/4 of it; the last quarter is held back for what is
//! not itemised (`BUDGET_RESERVE_DIVISOR`), so that the process's resident
//! set, less what it held at start, stays within the budget. Eviction runs on the timer tick and, so that a burst of
//! new objects cannot outrun the tick, whenever an activation takes the
//! charge over the budget; it then evicts down to 15/16 of what is left, so
//! that the next activations do not each pay for a pass over the table. When
//! the index alone outgrows the budget, every idle object is evicted at once
//! and a warning is printed (once per crossing); the index keeps growing (it
//! is the data), which `cairn_storage_index_bytes` shows. See
//! docs/OPERATIONS.md, "Sizing the memory budget".

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use crate::mailbox::{self, MailboxRx, MailboxTx};

use crate::context::{Context, META_ALARM, META_CLASS, META_NAME};
use crate::id::{IdMap, ObjectId, shard_of};
use crate::object::{Classes, ErrorCode, Object, ObjectFactory, Request, Response};
use crate::store::{Store, Ticket};
use crate::ws::table::{Out, SockState, SocketEntry, SocketTable};
use crate::ws::upgrade::Handoff;
use crate::ws::{Message, SocketId, WsLimits, WsMetrics};

/// The runtime's limits and identity on one shard.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// This shard.
    pub shard_id: u32,
    /// Shards in the server.
    pub shard_count: u32,
    /// Events queued per object before 503. Default 128.
    pub object_queue_depth_max: usize,
    /// Idle time after which an object is evicted. Default 60000.
    pub idle_ms_evict: u64,
    /// Memory budget: the storage index plus the objects in memory; least
    /// recently used idle objects go first. Default 256 MiB.
    pub object_memory_bytes_max: u64,
    /// Bytes charged per active object on top of its measured footprint (the
    /// runtime's structures for it and its own `memory_bytes`). Default 256.
    pub object_overhead_bytes: u64,
    /// Largest user key. Default 2048.
    pub key_bytes_max: usize,
    /// Most keys in one batch call. Default 128.
    pub batch_keys_max: usize,
    /// Alarm handler runs before an alarm is given up. Default 6.
    pub alarm_attempts_max: u32,
    /// First retry delay; doubles per attempt. Default 1000.
    pub alarm_backoff_ms_base: u64,
    /// Longest `Object::init` may take before the object is reset and the
    /// event that woke it fails with 503 `init_failed`. Default 30000.
    pub init_timeout_ms: u64,
    /// WebSocket limits and timers.
    pub ws: WsLimits,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            shard_id: 0,
            shard_count: 1,
            object_queue_depth_max: 128,
            idle_ms_evict: 60_000,
            object_memory_bytes_max: 256 << 20,
            object_overhead_bytes: 256,
            key_bytes_max: 2048,
            batch_keys_max: 128,
            alarm_attempts_max: 6,
            alarm_backoff_ms_base: 1000,
            init_timeout_ms: 30_000,
            ws: WsLimits::default(),
        }
    }
}

/// Which object an event is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The object's class.
    pub class: String,
    /// The object's ID.
    pub id: ObjectId,
    /// The name it was addressed by, if any.
    pub name: Option<Vec<u8>>,
}

/// Where a response goes once released. Called exactly once.
pub type Reply = Box<dyn FnOnce(Response)>;

/// Sends events for objects this shard does not own to their shard. Installed
/// by the shard layer; absent in single-shard tests.
pub trait Forwarder {
    /// Delivers `req` for `target` to shard `shard`, and its response to
    /// `reply`. `chain` is the call chain ([`CallChain`]) the request carries.
    fn forward(&self, shard: u32, target: Target, req: Request, chain: CallChain, reply: Reply);

    /// Collects every other shard's [`ShardStats`] (by mail) and hands them
    /// to `reply`. The default, for a single shard, has none to collect.
    fn gather(&self, reply: StatsReply) {
        reply(Vec::new());
    }

    /// Moves a WebSocket connection to shard `shard`; gives it back if the
    /// mailbox is full. The default (no other shards) always gives it back.
    fn forward_socket(&self, shard: u32, socket: Box<Handoff>) -> Result<(), Box<Handoff>> {
        let _ = shard;
        Err(socket)
    }
}

/// Where gathered [`ShardStats`] go. Called exactly once.
pub type StatsReply = Box<dyn FnOnce(Vec<ShardStats>)>;

/// The objects waiting, outermost first, on the stub call that made this
/// event: empty for requests from outside. A call to an object already in
/// its chain would wait for itself (the input gate), so it is refused with
/// `call_cycle` instead of hanging; so is a chain deeper than
/// [`CALL_DEPTH_MAX`].
pub type CallChain = Vec<ObjectId>;

/// Longest chain of nested stub calls.
pub const CALL_DEPTH_MAX: usize = 16;

/// Upper bounds, in microseconds, of the request latency histogram buckets
/// (the last bucket, `+Inf`, is implicit).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Requests of one class and status: count and latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Requests.
    pub count: u64,
    /// Sum of latencies, microseconds.
    pub sum_us: u64,
    /// Requests per bucket of [`LATENCY_BUCKETS_US`] (not cumulative), then `+Inf`.
    pub buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
}

impl RequestStats {
    fn record(&mut self, us: u64) {
        self.count += 1;
        self.sum_us += us;
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i] += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &RequestStats) {
        self.count += other.count;
        self.sum_us += other.sum_us;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
    }
}

/// The share of the memory budget held back for what the runtime does not
/// itemise (requests in flight, connection and commit buffers, tasks,
/// allocator pages held for reuse while objects churn): 1/4. Measured at the
/// peak of 1,000,000 counters on 2 shards × 128 MiB: 12-23% of the budget
/// (docs/RELIABILITY.md); the index and the objects get the other 3/4.
pub const BUDGET_RESERVE_DIVISOR: u64 = 4;

/// One shard's statistics, as exported by `/_cairn/metrics`. `Send`: it is
/// what shards mail each other when the metrics are gathered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// The shard.
    pub shard: u32,
    /// The runtime's counters.
    pub host: HostMetrics,
    /// Storage counters.
    pub store: crate::store::StoreStats,
    /// Objects in memory.
    pub active_objects: u64,
    /// Bytes charged to the objects in memory (the budget less
    /// `store.index_bytes` bounds it).
    pub object_memory_bytes: u64,
    /// Events queued or running, over all objects.
    pub queued_events: u64,
    /// The deepest object queue.
    pub queue_depth_max: u64,
    /// HTTP requests accepted on this shard, by class and status.
    pub requests: Vec<(String, u16, RequestStats)>,
    /// WebSocket counters of the sockets this shard holds.
    pub ws: crate::ws::WsMetrics,
    /// Objects with open sockets on this shard that are not in memory.
    pub hibernated_objects: u64,
    /// Open sockets on this shard per class, sorted by class.
    pub open_sockets: Vec<(String, usize)>,
}

/// Milliseconds since the Unix epoch; injectable so tests control time.
pub type Clock = Rc<dyn Fn() -> u64>;

/// The wall clock, read coarsely: `CLOCK_REALTIME_COARSE`, which lags the
/// precise clock by at most one kernel tick (1-4 ms) and costs a few
/// nanoseconds instead of a timestamp-counter read. Requests read it twice
/// (an object's recency), and an alarm fires at most one tick late.
pub fn system_clock() -> Clock {
    Rc::new(|| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
            return std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0);
        }
        u64::try_from(ts.tv_sec).unwrap_or(0) * 1000
            + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000
    })
}

/// State of one object that outlives a single event but not its activation.
pub(crate) struct ObjectState {
    pub(crate) target: Target,
    /// INVARIANT: the ticket of the latest write this activation made; tickets
    /// resolve in order, so it being durable means every earlier write is.
    pub(crate) last_ticket: RefCell<Option<Ticket>>,
    pub(crate) meta_written: Cell<bool>,
    /// INVARIANT: the instance, present exactly when no event of the object
    /// is running: the runner takes it out for each event and puts it back,
    /// or a fresh one after a reset.
    instance: Cell<Option<Box<dyn Object>>>,
    /// `Object::init` has succeeded for the instance now in `instance`.
    initialised: Cell<bool>,
}

impl ObjectState {
    pub(crate) fn note_write(&self, t: Ticket) {
        *self.last_ticket.borrow_mut() = Some(t);
    }

    fn has_unconfirmed_writes(&self) -> bool {
        self.last_ticket
            .borrow()
            .as_ref()
            .is_some_and(|t| !t.is_durable())
    }
}

/// One entry of an object's input queue.
pub(crate) enum Event {
    /// A request; `upgrade` is set for a WebSocket upgrade the object may
    /// accept; `chain` is the call chain it carries.
    Fetch {
        req: Request,
        reply: Reply,
        chain: Rc<CallChain>,
        upgrade: Option<SocketId>,
    },
    Alarm {
        scheduled_ms: u64,
        attempt: u32,
    },
    WsMessage {
        socket: Rc<SocketEntry>,
        msg: Message,
    },
    WsError {
        socket: Rc<SocketEntry>,
        error: String,
    },
    /// The socket's connection is over (or, with `echo`, the peer started the
    /// close and our echo waits for this event's handler).
    WsClose {
        socket: Rc<SocketEntry>,
        code: u16,
        reason: String,
        echo: bool,
    },
}

struct Active {
    state: Rc<ObjectState>,
    queue: MailboxTx<Event>,
    /// Bytes of the runtime's fixed structures for this object (see `activate`).
    fixed_bytes: u64,
    /// Events queued or running; the object is only evicted at zero.
    pending: Cell<usize>,
    last_used_ms: Cell<u64>,
    memory_bytes: Cell<u64>,
}

#[derive(Debug, Clone, Copy)]
struct AlarmEntry {
    at_ms: u64,
    attempt: u32,
}

/// Counters exported as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostMetrics {
    /// Requests handed to local objects.
    pub requests: u64,
    /// Events refused because an object's queue was full.
    pub overloaded: u64,
    /// Handler panics caught.
    pub panics: u64,
    /// Objects activated.
    pub activations: u64,
    /// Objects evicted.
    pub evictions: u64,
    /// Alarm handler runs that succeeded.
    pub alarms_fired: u64,
    /// Alarm handler runs that failed (each retry counts).
    pub alarms_failed: u64,
    /// Alarms given up after `alarm_attempts_max` failures.
    pub alarms_abandoned: u64,
    /// Responses replaced by 503/507 because their write failed to commit.
    pub storage_failures: u64,
    /// Requests sent to another shard's objects.
    pub forwarded: u64,
    /// Stub calls refused because they would cycle or nest too deep.
    pub call_cycles: u64,
    /// `Object::init` runs that failed, timed out or panicked (each reset
    /// the object).
    pub init_failures: u64,
}

pub(crate) struct HostInner {
    pub(crate) cfg: HostConfig,
    pub(crate) store: Store,
    pub(crate) sockets: SocketTable,
    classes: Classes,
    clock: Clock,
    active: RefCell<IdMap<Rc<Active>>>,
    alarm_queue: RefCell<BTreeSet<(u64, ObjectId)>>,
    alarms: RefCell<IdMap<(AlarmEntry, Target)>>,
    alarm_wake: LocalSender<()>,
    alarm_wake_rx: RefCell<Option<LocalReceiver<()>>>,
    forwarder: RefCell<Option<Rc<dyn Forwarder>>>,
    /// The empty chain, shared so that outside requests allocate none.
    no_chain: Rc<CallChain>,
    /// Responses the output gate holds (`held.rs`).
    pub(crate) held: crate::held::HeldReplies,
    request_seq: Cell<u64>,
    pub(crate) metrics: RefCell<HostMetrics>,
    /// HTTP requests by class and status. A short list searched linearly:
    /// it has one entry per class and status seen, and a scan of a few
    /// entries costs less per request than hashing the class name.
    requests: RefCell<Vec<(String, u16, RequestStats)>>,
    /// Bytes charged to active objects as of the last eviction pass, plus the
    /// initial charge of every activation since (what decides whether an
    /// activation runs a pass; the pass recomputes it).
    charged: Cell<u64>,
    /// The storage index alone is over the budget (warned once per crossing).
    index_over: Cell<bool>,
    /// INVARIANT: while a handler is being polled, its event's call chain and
    /// its own ID; `None` between polls. Single thread: set and cleared
    /// around each poll by [`Guarded`], read by [`HostInner::call`].
    polling: RefCell<Option<(Rc<CallChain>, ObjectId)>>,
}

/// One shard's object runtime. `!Send`; cheap to clone.
#[derive(Clone)]
pub struct ObjectHost {
    inner: Rc<HostInner>,
}

impl ObjectHost {
    /// A runtime serving `classes` from `store`.
    pub fn new(cfg: HostConfig, classes: Classes, store: Store, clock: Clock) -> ObjectHost {
        assert!(
            cfg.shard_id < cfg.shard_count,
            "shard {} of {}",
            cfg.shard_id,
            cfg.shard_count
        );
        let (tx, rx) = local_channel::new_bounded(1);
        ObjectHost {
            inner: Rc::new(HostInner {
                sockets: SocketTable::new(cfg.shard_id, cfg.ws),
                cfg,
                store,
                classes,
                clock,
                active: RefCell::new(IdMap::default()),
                alarm_queue: RefCell::new(BTreeSet::new()),
                alarms: RefCell::new(IdMap::default()),
                alarm_wake: tx,
                alarm_wake_rx: RefCell::new(Some(rx)),
                forwarder: RefCell::new(None),
                no_chain: Rc::new(Vec::new()),
                held: Default::default(),
                request_seq: Cell::new(0),
                charged: Cell::new(0),
                index_over: Cell::new(false),
                metrics: RefCell::new(HostMetrics::default()),
                requests: RefCell::new(Vec::new()),
                polling: RefCell::new(None),
            }),
        }
    }

    /// Installs the route to other shards.
    pub fn set_forwarder(&self, f: Rc<dyn Forwarder>) {
        *self.inner.forwarder.borrow_mut() = Some(f);
    }

    /// The classes this host serves.
    pub fn classes(&self) -> &Classes {
        &self.inner.classes
    }

    /// The shard's store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The runtime configuration.
    pub fn config(&self) -> &HostConfig {
        &self.inner.cfg
    }

    /// Routes `req` to `target` on whichever shard owns it; `reply` gets the response.
    pub fn dispatch(&self, target: Target, req: Request, reply: Reply) {
        HostInner::dispatch(&self.inner, target, req, Vec::new(), reply);
    }

    /// [`ObjectHost::dispatch`] for a request whose target is built only if
    /// it is needed: when object `id` is active on this shard (the common
    /// case: the HTTP path's) the event goes straight to its queue, and
    /// `target` is never called, so the class and name are not copied.
    pub(crate) fn dispatch_addressed(
        &self,
        id: ObjectId,
        target: impl FnOnce() -> Target,
        req: Request,
        reply: Reply,
    ) {
        let this = &self.inner;
        let local = shard_of(&id, this.cfg.shard_count) == this.cfg.shard_id;
        let active = if local {
            this.active.borrow().get(&id).cloned()
        } else {
            None
        };
        let Some(active) = active else {
            return HostInner::dispatch(this, target(), req, Vec::new(), reply);
        };
        this.metrics.borrow_mut().requests += 1;
        let ev = Event::Fetch {
            req,
            reply,
            chain: this.no_chain.clone(),
            upgrade: None,
        };
        if let Err(ev) = HostInner::push_event(this, &active, ev) {
            HostInner::refuse_overloaded(this, ev);
        }
    }

    /// [`ObjectHost::dispatch`] for an event that carries a call chain (mail
    /// from another shard).
    pub fn dispatch_chained(&self, target: Target, req: Request, chain: CallChain, reply: Reply) {
        HostInner::dispatch(&self.inner, target, req, chain, reply);
    }

    /// Routes `req` to `target` and waits for the response.
    pub async fn call(&self, target: Target, req: Request) -> Response {
        HostInner::call(&self.inner, target, req).await
    }

    /// WebSocket counters so far.
    pub fn ws_metrics(&self) -> WsMetrics {
        self.inner.sockets.metrics.borrow().clone()
    }

    /// Open sockets per class, sorted by class.
    pub fn open_sockets_by_class(&self) -> Vec<(String, usize)> {
        self.inner.sockets.count_by_class()
    }

    /// Objects with open sockets that are not in memory (hibernated).
    pub fn hibernated_objects(&self) -> usize {
        let active = self.inner.active.borrow();
        self.inner
            .sockets
            .objects()
            .iter()
            .filter(|id| !active.contains_key(id))
            .count()
    }

    /// Sockets in this shard's table (open, or closed with their close
    /// handler still to run).
    pub fn socket_count(&self) -> usize {
        self.inner.sockets.len()
    }

    /// Starts closing every socket on this shard with `code` (after what is
    /// already queued on it): used when the server stops.
    pub fn close_all_sockets(&self, code: u16, reason: &str) {
        let table = &self.inner.sockets;
        for id in table.objects() {
            for e in table.of_object(&id) {
                if e.sendable() {
                    table.push(
                        &e,
                        Out::Close {
                            gate: None,
                            code,
                            reason: reason.to_string(),
                        },
                    );
                    e.state.set(SockState::Closing);
                }
            }
        }
    }

    /// Moves a WebSocket connection to its owning shard.
    pub(crate) fn forward_socket(&self, shard: u32, h: Box<Handoff>) -> Result<(), Box<Handoff>> {
        let fwd = self.inner.forwarder.borrow().clone();
        match fwd {
            Some(f) => f.forward_socket(shard, h),
            None => Err(h),
        }
    }

    pub(crate) fn inner(&self) -> &Rc<HostInner> {
        &self.inner
    }

    /// Counters so far.
    pub fn metrics(&self) -> HostMetrics {
        self.inner.metrics.borrow().clone()
    }

    /// Records an HTTP request accepted on this shard and answered after `us`.
    pub fn record_request(&self, class: &str, status: u16, us: u64) {
        let mut all = self.inner.requests.borrow_mut();
        match all.iter_mut().find(|(c, s, _)| *s == status && c == class) {
            Some((_, _, r)) => r.record(us),
            None => {
                let mut r = RequestStats::default();
                r.record(us);
                all.push((class.to_string(), status, r));
            }
        }
    }

    /// This shard's statistics.
    pub fn stats(&self) -> ShardStats {
        let inner = &self.inner;
        let active = inner.active.borrow();
        let mut requests: Vec<(String, u16, RequestStats)> = inner.requests.borrow().clone();
        requests.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        ShardStats {
            shard: inner.cfg.shard_id,
            host: inner.metrics.borrow().clone(),
            store: inner.store.stats(),
            active_objects: active.len() as u64,
            object_memory_bytes: active.values().map(|a| a.memory_bytes.get()).sum(),
            queued_events: active.values().map(|a| a.pending.get() as u64).sum(),
            queue_depth_max: active
                .values()
                .map(|a| a.pending.get() as u64)
                .max()
                .unwrap_or(0),
            requests,
            ws: self.ws_metrics(),
            hibernated_objects: self.hibernated_objects() as u64,
            open_sockets: self.open_sockets_by_class(),
        }
    }

    /// Every shard's statistics, this one's first (gathered by mail).
    pub async fn gather_stats(&self) -> Vec<ShardStats> {
        let mine = self.stats();
        let fwd = self.inner.forwarder.borrow().clone();
        let Some(fwd) = fwd else {
            return vec![mine];
        };
        let (tx, rx) = local_channel::new_bounded(1);
        fwd.gather(Box::new(move |all| {
            let _ = tx.try_send(all);
        }));
        let mut all = rx.recv().await.unwrap_or_default();
        all.insert(0, mine);
        all.sort_by_key(|s| s.shard);
        all
    }

    /// Objects currently in memory.
    pub fn active_count(&self) -> usize {
        self.inner.active.borrow().len()
    }

    /// Bytes charged against `object_memory_bytes_max`, over the objects in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.inner
            .active
            .borrow()
            .values()
            .map(|a| a.memory_bytes.get())
            .sum()
    }

    /// Evicts objects idle for `idle_ms_evict` as of `now_ms`, then least
    /// recently used idle objects until the memory budget (less the storage
    /// index's bytes) holds. Busy objects and objects with writes not yet
    /// durable stay. Returns how many went.
    pub fn evict(&self, now_ms: u64) -> usize {
        self.inner.evict(now_ms)
    }
}

impl HostInner {
    /// What the budget leaves for active objects: its itemised part
    /// (`budget - budget / BUDGET_RESERVE_DIVISOR`) less the storage index's
    /// bytes. Warns once each time the index alone goes over that part.
    fn object_budget(&self) -> u64 {
        let budget = self.cfg.object_memory_bytes_max;
        let itemised = budget - budget / BUDGET_RESERVE_DIVISOR;
        let index = self.store.index_bytes();
        let over = index > itemised;
        if over && !self.index_over.get() {
            eprintln!(
                "warning: shard {}: the storage index holds {index} bytes, over the {itemised} \
                 the memory budget of {budget} (--object-memory-bytes-max) leaves for it; idle \
                 objects are evicted at once and memory grows with the data: raise the budget \
                 (docs/OPERATIONS.md)",
                self.cfg.shard_id
            );
        }
        self.index_over.set(over);
        itemised.saturating_sub(index)
    }

    /// See [`ObjectHost::evict`].
    fn evict(&self, now_ms: u64) -> usize {
        let inner = self;
        let allow = inner.object_budget();
        let mut active = inner.active.borrow_mut();
        let evictable = |a: &Active| a.pending.get() == 0 && !a.state.has_unconfirmed_writes();
        let before = active.len();
        let mut hibernated = 0;
        active.retain(|id, a| {
            let go = evictable(a)
                && now_ms.saturating_sub(a.last_used_ms.get()) >= inner.cfg.idle_ms_evict;
            if go && inner.sockets.has_sockets(id) {
                hibernated += 1;
            }
            !go
        });
        inner.sockets.metrics.borrow_mut().hibernations += hibernated;
        let mut total: u64 = active.values().map(|a| a.memory_bytes.get()).sum();
        if total > allow {
            // Down to a low watermark, so that the activations that follow do not
            // each run a pass (see the module docs).
            let low = allow - allow / 16;
            let mut lru: Vec<(u64, ObjectId, u64)> = active
                .iter()
                .filter(|(_, a)| evictable(a))
                .map(|(id, a)| (a.last_used_ms.get(), *id, a.memory_bytes.get()))
                .collect();
            lru.sort_unstable();
            for (_, id, bytes) in lru {
                if total <= low {
                    break;
                }
                active.remove(&id);
                total -= bytes;
            }
        }
        inner.charged.set(total);
        let gone = before - active.len();
        inner.metrics.borrow_mut().evictions += gone as u64;
        gone
    }
}

impl ObjectHost {
    /// Drops the in-memory instance of `id` if it is idle (no queued event, no
    /// write awaiting durability), so its next event re-reads storage; used by
    /// the admin import, which writes storage behind the object's back.
    /// Returns `false`, leaving it alone, if it is busy.
    pub fn deactivate_idle(&self, id: &ObjectId) -> bool {
        let mut active = self.inner.active.borrow_mut();
        let busy = active
            .get(id)
            .is_some_and(|a| a.pending.get() > 0 || a.state.has_unconfirmed_writes());
        if !busy {
            active.remove(id);
        }
        !busy
    }

    /// Arms `target`'s alarm at `at_ms` in the scheduler, or cancels it with
    /// `None`. Storage is the caller's business (`META_ALARM`).
    pub fn rearm_alarm(&self, target: &Target, at_ms: Option<u64>) {
        match at_ms {
            Some(at) => self.inner.schedule_alarm(target, at, 0),
            None => self.inner.unschedule_alarm(&target.id),
        }
    }

    /// Delivers every alarm due at `now_ms` to its object's input queue.
    /// Returns how many were delivered.
    pub fn fire_due_alarms(&self, now_ms: u64) -> usize {
        let inner = &self.inner;
        let mut n = 0;
        loop {
            let due = {
                let mut q = inner.alarm_queue.borrow_mut();
                match q.first().copied() {
                    Some((at, id)) if at <= now_ms => {
                        q.remove(&(at, id));
                        Some(id)
                    }
                    _ => None,
                }
            };
            let Some(id) = due else { break };
            let Some((entry, target)) = inner.alarms.borrow_mut().remove(&id) else {
                continue;
            };
            let ev = Event::Alarm {
                scheduled_ms: entry.at_ms,
                attempt: entry.attempt,
            };
            if let Err(ev) = HostInner::enqueue(inner, target.clone(), ev) {
                // The object's queue is full: try again shortly, same attempt.
                let Event::Alarm { attempt, .. } = *ev else {
                    unreachable!("we sent an alarm")
                };
                inner.schedule_retry(
                    &target,
                    entry.at_ms,
                    now_ms + inner.cfg.alarm_backoff_ms_base,
                    attempt,
                );
            } else {
                n += 1;
            }
        }
        n
    }

    /// The earliest pending alarm time on this shard.
    pub fn next_alarm_ms(&self) -> Option<u64> {
        self.inner.alarm_queue.borrow().first().map(|(at, _)| *at)
    }

    /// Re-arms every alarm recorded in storage (after a restart).
    pub async fn recover_alarms(&self) -> usize {
        let store = self.inner.store.clone();
        let mut after = None;
        let mut n = 0;
        loop {
            let ids = store.objects(after.as_ref(), 256);
            let Some(last) = ids.last().copied() else {
                break;
            };
            for raw in ids {
                let Ok(Some(at)) = store.get(&raw, META_ALARM).await else {
                    continue;
                };
                let Ok(at) = <[u8; 8]>::try_from(&at[..]) else {
                    continue;
                };
                let Ok(Some(class)) = store.get(&raw, META_CLASS).await else {
                    continue;
                };
                let Ok(class) = std::str::from_utf8(&class) else {
                    continue;
                };
                let name = store
                    .get(&raw, META_NAME)
                    .await
                    .ok()
                    .flatten()
                    .map(|n| n.to_vec());
                let target = Target {
                    class: class.to_string(),
                    id: ObjectId(raw),
                    name,
                };
                self.inner
                    .schedule_alarm(&target, u64::from_be_bytes(at), 0);
                n += 1;
            }
            after = Some(last);
        }
        n
    }

    /// Runs forever on the shard: fires alarms when due and evicts idle objects.
    pub async fn run_timers(self) {
        let Some(wake) = self.inner.alarm_wake_rx.borrow_mut().take() else {
            return;
        };
        loop {
            let now = (self.inner.clock)();
            self.fire_due_alarms(now);
            self.evict(now);
            let tick = self.inner.cfg.idle_ms_evict.clamp(10, 1000);
            let wait_ms = self
                .next_alarm_ms()
                .map_or(tick, |at| at.saturating_sub(now).min(tick));
            let sleep = glommio::timer::sleep(std::time::Duration::from_millis(wait_ms));
            futures_lite::future::or(sleep, async {
                wake.recv().await;
            })
            .await;
        }
    }
}

impl HostInner {
    fn dispatch(
        this: &Rc<HostInner>,
        target: Target,
        req: Request,
        chain: CallChain,
        reply: Reply,
    ) {
        let owner = shard_of(&target.id, this.cfg.shard_count);
        if owner != this.cfg.shard_id {
            let fwd = this.forwarder.borrow().clone();
            match fwd {
                Some(f) => {
                    this.metrics.borrow_mut().forwarded += 1;
                    f.forward(owner, target, req, chain, reply);
                }
                None => reply(Response::error(
                    ErrorCode::Overloaded,
                    "no route to the owning shard",
                )),
            }
            return;
        }
        if this.classes.get(&target.class).is_none() {
            reply(Response::error(
                ErrorCode::NotFound,
                &format!("no class named {:?}", target.class),
            ));
            return;
        }
        this.metrics.borrow_mut().requests += 1;
        let chain = if chain.is_empty() {
            this.no_chain.clone()
        } else {
            Rc::new(chain)
        };
        let ev = Event::Fetch {
            req,
            reply,
            chain,
            upgrade: None,
        };
        if let Err(ev) = Self::enqueue(this, target, ev) {
            Self::refuse_overloaded(this, *ev);
        }
    }

    /// Answers a fetch its object's full queue gave back: 503 `overloaded`.
    fn refuse_overloaded(this: &Rc<HostInner>, ev: Event) {
        let Event::Fetch { reply, .. } = ev else {
            unreachable!("only fetches are refused at the queue")
        };
        this.metrics.borrow_mut().overloaded += 1;
        reply(Response::error(
            ErrorCode::Overloaded,
            "the object's queue is full; retry later",
        ));
    }

    /// The answer for a response whose write failed to become durable
    /// (503 `storage_failed`, or 507 on a full disk), counted in metrics.
    pub(crate) fn storage_failure(&self, e: &crate::store::CommitError) -> Response {
        self.metrics.borrow_mut().storage_failures += 1;
        let reason = e.to_string();
        Response::error(ErrorCode::for_storage_failure(&reason), &reason)
    }

    /// Delivers a WebSocket upgrade to a local object; the socket `socket`
    /// becomes its if `fetch` accepts it.
    pub(crate) fn dispatch_upgrade(
        this: &Rc<HostInner>,
        target: Target,
        req: Request,
        socket: SocketId,
        reply: Reply,
    ) {
        if this.classes.get(&target.class).is_none() {
            reply(Response::error(
                ErrorCode::NotFound,
                &format!("no class named {:?}", target.class),
            ));
            return;
        }
        this.metrics.borrow_mut().requests += 1;
        let ev = Event::Fetch {
            req,
            reply,
            chain: this.no_chain.clone(),
            upgrade: Some(socket),
        };
        if let Err(ev) = Self::enqueue(this, target, ev) {
            Self::refuse_overloaded(this, *ev);
        }
    }

    pub(crate) async fn call(this: &Rc<HostInner>, target: Target, req: Request) -> Response {
        // Called from inside a handler's poll: this call nests in its chain.
        let chain = match &*this.polling.borrow() {
            None => Vec::new(),
            Some((outer, me)) => {
                let mut c = Vec::with_capacity(outer.len() + 1);
                c.extend_from_slice(outer);
                c.push(*me);
                c
            }
        };
        if chain.contains(&target.id) || chain.len() > CALL_DEPTH_MAX {
            this.metrics.borrow_mut().call_cycles += 1;
            let why = if chain.contains(&target.id) {
                format!(
                    "object {} is already waiting in this call chain; the call would wait for itself",
                    target.id
                )
            } else {
                format!("stub calls nest deeper than {CALL_DEPTH_MAX}")
            };
            return Response::error(ErrorCode::CallCycle, &why);
        }
        let (tx, rx) = local_channel::new_bounded(1);
        Self::dispatch(
            this,
            target,
            req,
            chain,
            Box::new(move |resp| {
                let _ = tx.try_send(resp);
            }),
        );
        rx.recv()
            .await
            .unwrap_or_else(|| Response::error(ErrorCode::ShuttingDown, "the object went away"))
    }

    /// The input gate's entrance: appends `ev` to the object's queue, activating
    /// the object first if needed. Gives the event back if the queue is full.
    pub(crate) fn enqueue(
        this: &Rc<HostInner>,
        target: Target,
        ev: Event,
    ) -> Result<(), Box<Event>> {
        debug_assert_eq!(
            shard_of(&target.id, this.cfg.shard_count),
            this.cfg.shard_id
        );
        let existing = this.active.borrow().get(&target.id).cloned();
        let fresh = existing.is_none();
        let active = match existing {
            Some(a) => a,
            None => {
                let Some(factory) = this.classes.get(&target.class).cloned() else {
                    return Err(Box::new(ev));
                };
                Self::activate(this, target, factory)
            }
        };
        Self::push_event(this, &active, ev).map_err(Box::new)?;
        // A new object may take the charge over the budget: evict now
        // rather than at the next tick (this one is busy, so it stays).
        if fresh && this.charged.get() > this.object_budget() {
            this.evict(active.last_used_ms.get());
        }
        Ok(())
    }

    /// Appends `ev` to the queue of the active object `active`; gives it
    /// back if the queue is full. (Not boxed: the rare full queue is the
    /// only time the event comes back, and callers answer it at once.)
    #[allow(clippy::result_large_err)]
    #[inline]
    fn push_event(this: &Rc<HostInner>, active: &Active, ev: Event) -> Result<(), Event> {
        active.queue.try_send(ev)?;
        active.pending.set(active.pending.get() + 1);
        active.last_used_ms.set((this.clock)());
        Ok(())
    }

    fn activate(this: &Rc<HostInner>, target: Target, factory: ObjectFactory) -> Rc<Active> {
        let (tx, rx) = mailbox::mailbox(this.cfg.object_queue_depth_max);
        let instance: Box<dyn Object> = factory();
        let instance_bytes = std::mem::size_of_val(&*instance) as u64 + ALLOC_SLACK;
        let state = Rc::new(ObjectState {
            target,
            last_ticket: RefCell::new(None),
            meta_written: Cell::new(false),
            instance: Cell::new(Some(instance)),
            initialised: Cell::new(false),
        });
        let active = Rc::new_cyclic(|weak: &std::rc::Weak<Active>| {
            let runner = run_object(this.clone(), state.clone(), weak.clone(), rx);
            let fixed_bytes = fixed_footprint(&state, &runner) + instance_bytes;
            glommio::spawn_local(runner).detach();
            Active {
                state: state.clone(),
                queue: tx,
                fixed_bytes,
                pending: Cell::new(0),
                last_used_ms: Cell::new((this.clock)()),
                memory_bytes: Cell::new(fixed_bytes + this.cfg.object_overhead_bytes),
            }
        });
        this.active
            .borrow_mut()
            .insert(state.target.id, active.clone());
        this.charged
            .set(this.charged.get() + active.memory_bytes.get());
        this.metrics.borrow_mut().activations += 1;
        active
    }

    fn next_request_id(&self) -> String {
        let n = self.request_seq.get() + 1;
        self.request_seq.set(n);
        format!("{:x}-{n:x}", self.cfg.shard_id)
    }

    pub(crate) fn schedule_alarm(&self, target: &Target, at_ms: u64, attempt: u32) {
        self.schedule_retry(target, at_ms, at_ms, attempt);
    }

    /// Queues the alarm recorded as `at_ms` to fire at `fire_ms`.
    fn schedule_retry(&self, target: &Target, at_ms: u64, fire_ms: u64, attempt: u32) {
        self.unschedule_alarm(&target.id);
        self.alarm_queue.borrow_mut().insert((fire_ms, target.id));
        self.alarms
            .borrow_mut()
            .insert(target.id, (AlarmEntry { at_ms, attempt }, target.clone()));
        let _ = self.alarm_wake.try_send(());
    }

    pub(crate) fn unschedule_alarm(&self, id: &ObjectId) {
        let removed = self.alarms.borrow_mut().remove(id);
        if removed.is_some() {
            self.alarm_queue.borrow_mut().retain(|(_, i)| i != id);
        }
    }
}

/// Bytes the allocator adds to each allocation (header and rounding), as
/// measured for glibc malloc on 64-bit: 8 bytes of header, 16-byte rounding.
const ALLOC_SLACK: u64 = 16;

/// The runtime's fixed cost of one active object, from the sizes of what
/// `activate` allocates: the `Active` and `ObjectState` blocks (with their
/// `Rc` counts), the queue's shared block, the runner task (its future plus
/// the executor's task header, estimated at 128 bytes), and the entry in the
/// shard's `active` table (id and pointer, over a load factor of 7/8).
fn fixed_footprint<F: Future>(state: &ObjectState, runner: &F) -> u64 {
    let rc = 2 * std::mem::size_of::<usize>();
    let blocks = [
        std::mem::size_of::<Active>() + rc,
        std::mem::size_of::<ObjectState>() + rc,
        state.target.class.len(),
        state.target.name.as_ref().map_or(0, |n| n.len()),
        mailbox::fixed_bytes::<Event>(),
        std::mem::size_of_val(runner) + 128,
    ];
    let heap: u64 = blocks.iter().map(|b| *b as u64 + ALLOC_SLACK).sum();
    let table = (std::mem::size_of::<(ObjectId, Rc<Active>)>() as u64 + 1) * 8 / 7;
    heap + table
}

/// The runner: the input gate's single consumer for one object.
async fn run_object(
    host: Rc<HostInner>,
    state: Rc<ObjectState>,
    active: std::rc::Weak<Active>,
    rx: MailboxRx<Event>,
) {
    // Events queued when an init failed are failed too, without running
    // init again for each: a hanging init would otherwise hold every one of
    // them for a whole timeout. Events that arrive later try init again.
    let mut fail_fast: usize = 0;
    while let Some(ev) = rx.recv().await {
        let Some(instance) = state.instance.take() else {
            unreachable!("an event of {} started while another ran", state.target.id)
        };
        let skip_init = fail_fast > 0;
        fail_fast = fail_fast.saturating_sub(1);
        let init = run_event(&host, &state, &active, instance, ev, skip_init).await;
        // Only a failure of init itself starts a fail-fast run; a skipped
        // event's failure does not extend it to events queued since.
        if init == Init::Failed && !skip_init {
            fail_fast = rx.len();
        }
    }
}

/// How the instance's `init` went for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    /// It had run before, or ran now and succeeded.
    Done,
    /// It failed, panicked or timed out now (the object was reset), or was
    /// skipped because it had just failed for an earlier queued event.
    Failed,
}

/// Runs one event of the object `state` with its `instance` (taken out of
/// `state.instance` by the caller) and puts the instance back: the same one,
/// or a fresh one if a handler panicked or `init` or a
/// `block_concurrency_while` failed (the reset). Runs `Object::init` first
/// if the instance has not been initialised (unless `skip_init`, which fails
/// the event as if `init` had).
async fn run_event(
    host: &Rc<HostInner>,
    state: &Rc<ObjectState>,
    active: &std::rc::Weak<Active>,
    mut instance: Box<dyn Object>,
    ev: Event,
    skip_init: bool,
) -> Init {
    let ctx = Context {
        host: host.clone(),
        obj: state.clone(),
        unconfirmed: Cell::new(false),
        upgrade: Cell::new(None),
        reset: Cell::new(false),
    };
    let ready = state.initialised.get()
        || (!skip_init && {
            // A request's init runs in the request's call chain, so that an
            // init calling back into its caller is refused as a cycle.
            let chain = match &ev {
                Event::Fetch { chain, .. } => chain.clone(),
                _ => host.no_chain.clone(),
            };
            Box::pin(run_init(host, &ctx, &mut instance, chain)).await
        });
    let panicked = match ev {
        Event::Fetch {
            req,
            reply,
            chain,
            upgrade,
        } => {
            ctx.upgrade.set(upgrade);
            if !ready {
                reply(Response::error(
                    ErrorCode::InitFailed,
                    "the object's init failed or timed out, so it was reset; retry",
                ));
                false
            } else {
                let outcome = Guarded {
                    fut: instance.fetch(&ctx, req),
                    host,
                    chain,
                    me: state.target.id,
                }
                .await;
                match outcome {
                    Ok(resp) => {
                        output_gate(host, &ctx, resp, reply);
                        false
                    }
                    Err(()) => {
                        let rid = host.next_request_id();
                        eprintln!(
                            "cairn: handler of {} panicked; request id {rid}",
                            state.target.id
                        );
                        reply(Response::error(
                            ErrorCode::HandlerPanicked,
                            &format!("request id {rid}"),
                        ));
                        true
                    }
                }
            }
        }
        // Boxed: inline, the alarm path's state would enlarge every
        // object's runner (charged to the budget) by about 350 bytes.
        Event::Alarm {
            scheduled_ms,
            attempt,
        } => {
            Box::pin(run_alarm(
                host,
                &ctx,
                &mut instance,
                ready,
                scheduled_ms,
                attempt,
            ))
            .await
        }
        Event::WsMessage { socket, msg } => {
            if !ready {
                ws_handler_failed(host, state, &socket, "init failed");
                false
            } else {
                let outcome = Guarded {
                    fut: instance.websocket_message(&ctx, socket.id, msg),
                    host,
                    chain: host.no_chain.clone(),
                    me: state.target.id,
                }
                .await;
                if outcome.is_err() {
                    ws_handler_failed(host, state, &socket, "handler panicked");
                }
                outcome.is_err()
            }
        }
        Event::WsError { socket, error } => {
            ready
                && Guarded {
                    fut: instance.websocket_error(&ctx, socket.id, error),
                    host,
                    chain: host.no_chain.clone(),
                    me: state.target.id,
                }
                .await
                .is_err()
        }
        Event::WsClose {
            socket,
            code,
            reason,
            echo,
        } => {
            // The object may no longer send on it; broadcasts skip it.
            socket.state.set(SockState::Ended);
            let panicked = ready
                && Guarded {
                    fut: instance.websocket_close(&ctx, socket.id, code, reason),
                    host,
                    chain: host.no_chain.clone(),
                    me: state.target.id,
                }
                .await
                .is_err();
            if echo {
                socket.queue.borrow_mut().push_back(Out::EchoClose);
                socket.wake();
            }
            host.sockets.remove(socket.id);
            panicked
        }
    };
    if panicked {
        host.metrics.borrow_mut().panics += 1;
    }
    if panicked || ctx.reset.get() {
        // Reset: a fresh instance reloads its state from storage.
        let factory = host
            .classes
            .get(&state.target.class)
            .expect("INVARIANT: only objects of registered classes are activated");
        instance = factory();
        state.initialised.set(false);
    }
    let instance_bytes = instance.memory_bytes() as u64;
    state.instance.set(Some(instance));
    if let Some(a) = active.upgrade() {
        a.pending.set(a.pending.get() - 1);
        a.last_used_ms.set((host.clock)());
        let bytes = a.fixed_bytes
            + a.queue.heap_bytes() as u64
            + host.cfg.object_overhead_bytes
            + instance_bytes;
        let charged = host.charged.get() + bytes;
        host.charged
            .set(charged.saturating_sub(a.memory_bytes.replace(bytes)));
    }
    if ready { Init::Done } else { Init::Failed }
}

/// Runs `Object::init` under `block_concurrency_while`, bounded by
/// `init_timeout_ms`. On failure, timeout or panic the context is marked for
/// reset and `false` returned: the event it preceded is failed, and the next
/// event runs `init` again on a fresh instance.
async fn run_init(
    host: &Rc<HostInner>,
    ctx: &Context,
    instance: &mut Box<dyn Object>,
    chain: Rc<CallChain>,
) -> bool {
    let limit = std::time::Duration::from_millis(host.cfg.init_timeout_ms);
    let outcome = Guarded {
        fut: Box::pin(ctx.block_concurrency_while(limit, instance.init(ctx))),
        host,
        chain,
        me: ctx.obj.target.id,
    }
    .await;
    let why = match outcome {
        Ok(Ok(())) => {
            ctx.obj.initialised.set(true);
            return true;
        }
        Ok(Err(e)) => e.to_string(),
        Err(()) => {
            host.metrics.borrow_mut().panics += 1;
            "it panicked".to_string()
        }
    };
    host.metrics.borrow_mut().init_failures += 1;
    ctx.reset.set(true);
    eprintln!(
        "cairn: init of {} failed ({why}); the object is reset",
        ctx.obj.target.id
    );
    false
}

/// A message was not handled (its handler panicked, or the object's `init`
/// failed): its socket is closed with 1011 (internal error).
fn ws_handler_failed(host: &Rc<HostInner>, state: &ObjectState, socket: &SocketEntry, why: &str) {
    let rid = host.next_request_id();
    eprintln!(
        "cairn: websocket message to {} not handled: {why}; request id {rid}",
        state.target.id
    );
    if socket.sendable() {
        host.sockets.push(
            socket,
            Out::Close {
                gate: None,
                code: 1011,
                reason: format!("{why}; request id {rid}"),
            },
        );
        socket.state.set(SockState::Closing);
    }
}

/// The output gate: releases `resp` once every write before it is durable.
fn output_gate(host: &Rc<HostInner>, ctx: &Context, resp: Response, reply: Reply) {
    let held = if ctx.unconfirmed.get() {
        None
    } else {
        ctx.obj.last_ticket.borrow().clone()
    };
    match held.filter(|t| !t.is_durable()) {
        None => reply(resp),
        // With the test hooks' artificial commit delay each ticket's wait
        // carries its own delay, which a shared queue would serialise: a
        // task per response keeps the delays concurrent, as real commits are.
        #[cfg(feature = "test-hooks")]
        Some(t) if crate::test_hooks::commit_delay_ms() > 0 => {
            let host = host.clone();
            glommio::spawn_local(async move {
                match t.durable().await {
                    Ok(()) => reply(resp),
                    Err(e) => reply(host.storage_failure(&e)),
                }
            })
            .detach();
        }
        Some(t) => crate::held::HeldReplies::hold(host, t, resp, reply),
    }
}

/// Runs one alarm attempt; returns whether the handler panicked.
async fn run_alarm(
    host: &Rc<HostInner>,
    ctx: &Context,
    instance: &mut Box<dyn Object>,
    ready: bool,
    scheduled_ms: u64,
    attempt: u32,
) -> bool {
    // The alarm may have been deleted or moved since it was queued.
    if ctx.get_alarm().await.ok().flatten() != Some(scheduled_ms) {
        return false;
    }
    // Not `ready` (init failed): a failed run, retried with backoff.
    let outcome = if ready {
        Guarded {
            fut: instance.alarm(ctx),
            host,
            chain: host.no_chain.clone(),
            me: ctx.obj.target.id,
        }
        .await
    } else {
        Ok(Err("init failed".into()))
    };
    let ok = matches!(outcome, Ok(Ok(())));
    if ok {
        host.metrics.borrow_mut().alarms_fired += 1;
        // Delete only if the handler did not set a new alarm.
        if ctx.get_alarm().await.ok().flatten() == Some(scheduled_ms) {
            let _ = ctx.delete_alarm();
        }
    } else {
        host.metrics.borrow_mut().alarms_failed += 1;
        let next = attempt + 1;
        if next >= host.cfg.alarm_attempts_max {
            host.metrics.borrow_mut().alarms_abandoned += 1;
            eprintln!(
                "cairn: alarm of {} failed {next} times; giving up",
                ctx.id()
            );
            let _ = ctx.delete_alarm();
        } else {
            let delay = host
                .cfg
                .alarm_backoff_ms_base
                .saturating_mul(1 << attempt.min(30));
            let now = (host.clock)();
            host.schedule_retry(
                &ctx.obj.target,
                scheduled_ms,
                now.saturating_add(delay),
                next,
            );
        }
    }
    outcome.is_err()
}

/// Polls a handler future under `catch_unwind` (a panic becomes `Err(())`),
/// with the shard's `polling` slot naming this event's call chain and object
/// for the duration of each poll, so stub calls made inside know their chain.
struct Guarded<'h, F> {
    fut: F,
    host: &'h Rc<HostInner>,
    chain: Rc<CallChain>,
    me: ObjectId,
}

impl<F: Future + Unpin> Future for Guarded<'_, F> {
    type Output = Result<F::Output, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let outer = this
            .host
            .polling
            .replace(Some((this.chain.clone(), this.me)));
        // AssertUnwindSafe: after a panic the future is dropped and the object's
        // instance replaced, so no state observed mid-panic is used again.
        let r = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.fut).poll(cx)));
        *this.host.polling.borrow_mut() = outer;
        match r {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
