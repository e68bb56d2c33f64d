//! Shards: one thread and one glommio `LocalExecutor` each, the mailboxes
//! between them, and the router that sends an event to its owning shard.
//!
//! # Shard router
//!
//! **Invariant (ownership):** an event for object `id` is handled only on shard
//! `shard_of(id, shard_count)`. Any shard may receive a request (every shard
//! accepts on the same port); [`ObjectHost::dispatch`] hands events for other
//! shards to this module's [`MailboxRouter`], which sends them over a bounded
//! mailbox to the owner and routes the response back to the sender's `Reply`.
//!
//! Mailboxes form a full mesh of glommio `shared_channel`s, one per ordered
//! pair of shards, each holding at most `mailbox_depth_max` messages. They are
//! lock-free single-producer single-consumer rings with an eventfd wakeup: no
//! `Mutex` is on the request path. A full request mailbox refuses the request
//! at once with 503 `overloaded`; responses are never dropped (a response to a
//! full mailbox waits for room in a task of its own).
//!
//! What crosses shards is only `Send` data ([`Mail`]: IDs, strings, `Bytes`
//! bodies); objects and their state never move. The channel endpoints cross
//! once, at start-up, as [`ForeignMailboxes`], and become shard-local
//! (`ConnectedSender`/`ConnectedReceiver`) the moment their shard connects them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::datadir::{DataDirError, open_data_dir};
use crate::host::{
    CallChain, Forwarder, HostConfig, ObjectHost, Reply, ShardStats, StatsReply, Target,
    system_clock,
};
use crate::object::{Classes, ErrorCode, LocalFuture, Request, Response};
use crate::store::Store;
use crate::ws::WsLimits;
use crate::ws::upgrade::Handoff;

/// A message between shards. Only `Send` data.
pub enum Mail {
    /// Handle `req` for `target` and answer with `corr`.
    Request {
        /// Correlates the response with the sender's waiting `Reply`.
        corr: u64,
        /// The object.
        target: Target,
        /// The request.
        req: Request,
        /// The stub-call chain the request belongs to (empty from outside).
        chain: CallChain,
    },
    /// Run the admin operation `op` on the receiving shard; answer with `corr`.
    Admin {
        /// Correlates the response with the sender's waiting `Reply`.
        corr: u64,
        /// The operation.
        op: crate::admin::AdminOp,
    },
    /// The answer to the request numbered `corr`.
    Response {
        /// The request's correlation number.
        corr: u64,
        /// The response.
        resp: Response,
    },
    /// Asks for the receiver's [`ShardStats`] (for `/_cairn/metrics`).
    StatsRequest {
        /// Correlates the answer with the sender's gathering.
        corr: u64,
    },
    /// The answer to the stats request numbered `corr`.
    StatsResponse {
        /// The request's correlation number.
        corr: u64,
        /// The receiver's statistics.
        stats: Box<ShardStats>,
    },
    /// A WebSocket connection moving to the shard that owns its object.
    Socket(Box<Handoff>),
}

/// The endpoints of one shard's mailboxes before the shard has connected them:
/// the only mailbox state that ever crosses threads, hence the name.
pub struct ForeignMailboxes {
    /// `to[j]`: sender to shard `j` (`None` for this shard itself).
    to: Vec<Option<SharedSender<Mail>>>,
    /// `from[j]`: receiver of mail from shard `j`.
    from: Vec<Option<SharedReceiver<Mail>>>,
}

/// Builds the full mesh of mailboxes: one bounded channel per ordered pair.
fn mesh(shards: u32, depth: usize) -> Vec<ForeignMailboxes> {
    let n = shards as usize;
    let mut boxes: Vec<ForeignMailboxes> = (0..n)
        .map(|_| ForeignMailboxes {
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (tx, rx) = shared_channel::new_bounded(depth);
                boxes[i].to[j] = Some(tx);
                boxes[j].from[i] = Some(rx);
            }
        }
    }
    boxes
}

/// The shard-local router: sends requests to their owners and matches the
/// responses to waiting replies.
pub struct MailboxRouter {
    /// Senders to each shard, then to the gateway (index `shards`).
    to: Vec<Option<Rc<ConnectedSender<Mail>>>>,
    /// How many of `to` are shards.
    shards: u32,
    pending: RefCell<HashMap<u64, Reply>>,
    next_corr: Cell<u64>,
    /// Stats gatherings waiting for their peers' answers, by correlation number.
    gathering: RefCell<HashMap<u64, Rc<Gathering>>>,
    /// Requests from peers being handled here; shutdown waits for zero.
    serving: Rc<Cell<usize>>,
    stopping: Arc<AtomicBool>,
}

/// One `/_cairn/metrics` collection: answers so far and who still owes one.
struct Gathering {
    got: RefCell<Vec<ShardStats>>,
    owed: Cell<usize>,
    reply: RefCell<Option<StatsReply>>,
}

impl Gathering {
    fn answer(&self, stats: Option<ShardStats>) {
        if let Some(s) = stats {
            self.got.borrow_mut().push(s);
        }
        self.owed.set(self.owed.get().saturating_sub(1));
        if self.owed.get() == 0
            && let Some(reply) = self.reply.borrow_mut().take()
        {
            reply(std::mem::take(&mut *self.got.borrow_mut()));
        }
    }
}

impl MailboxRouter {
    fn next_corr(&self) -> u64 {
        let corr = self.next_corr.get();
        self.next_corr.set(corr + 1);
        corr
    }

    /// Answers every request still waiting on another shard with 503
    /// `shutting_down`: the last step of a stop, so no connection waits for
    /// a shard that has gone.
    fn fail_pending(&self) {
        let pending: Vec<Reply> = self.pending.borrow_mut().drain().map(|(_, r)| r).collect();
        for reply in pending {
            reply(Response::error(
                ErrorCode::ShuttingDown,
                "the server is stopping; the owning shard did not answer in time",
            ));
        }
    }
}

impl Forwarder for MailboxRouter {
    fn gather(&self, reply: StatsReply) {
        let corr = self.next_corr();
        let peers: Vec<_> = self.to[..self.shards as usize]
            .iter()
            .flatten()
            .cloned()
            .collect();
        let g = Rc::new(Gathering {
            got: RefCell::new(Vec::new()),
            owed: Cell::new(peers.len() + 1),
            reply: RefCell::new(Some(reply)),
        });
        self.gathering.borrow_mut().insert(corr, g.clone());
        for tx in peers {
            // A full mailbox waits (metrics are not urgent); a gone peer owes nothing.
            let g = g.clone();
            glommio::spawn_local(async move {
                if tx.send(Mail::StatsRequest { corr }).await.is_err() {
                    g.answer(None);
                }
            })
            .detach();
        }
        g.answer(None); // this call's own share; the caller adds the local stats
        if g.owed.get() == 0 {
            self.gathering.borrow_mut().remove(&corr);
        }
    }

    fn forward(&self, shard: u32, target: Target, req: Request, chain: CallChain, reply: Reply) {
        if self.stopping.load(Ordering::Acquire) {
            // The owner may already have drained and gone; do not start what
            // might never be answered.
            reply(Response::error(
                ErrorCode::ShuttingDown,
                "the server is stopping; retry on another instance",
            ));
            return;
        }
        let Some(Some(tx)) = self.to.get(shard as usize) else {
            reply(Response::error(
                ErrorCode::Overloaded,
                "no mailbox to the owning shard",
            ));
            return;
        };
        let corr = self.next_corr();
        let mail = Mail::Request {
            corr,
            target,
            req,
            chain,
        };
        match tx.try_send(mail) {
            Ok(()) => {
                self.pending.borrow_mut().insert(corr, reply);
            }
            Err(_) => reply(Response::error(
                ErrorCode::Overloaded,
                "the owning shard's mailbox is full; retry later",
            )),
        }
    }

    fn forward_socket(&self, shard: u32, socket: Box<Handoff>) -> Result<(), Box<Handoff>> {
        let Some(Some(tx)) = self.to.get(shard as usize) else {
            return Err(socket);
        };
        match tx.try_send(Mail::Socket(socket)) {
            Ok(()) => Ok(()),
            Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(
                Mail::Socket(h),
            ))) => Err(h),
            // The peer is gone (shutting down): the connection is dropped.
            Err(_) => Ok(()),
        }
    }
}

impl MailboxRouter {
    /// Sends admin operation `op` to shard `shard`; `reply` gets its answer.
    pub fn send_admin(&self, shard: u32, op: crate::admin::AdminOp, reply: Reply) {
        let Some(Some(tx)) = self.to.get(shard as usize) else {
            reply(Response::error(
                ErrorCode::Overloaded,
                "no mailbox to that shard",
            ));
            return;
        };
        let corr = self.next_corr.get();
        self.next_corr.set(corr + 1);
        match tx.try_send(Mail::Admin { corr, op }) {
            Ok(()) => {
                self.pending.borrow_mut().insert(corr, reply);
            }
            Err(_) => reply(Response::error(
                ErrorCode::Overloaded,
                "the shard's mailbox is full; retry later",
            )),
        }
    }
}

/// What a shard gives code that runs on it (the HTTP listener, embedders).
#[derive(Clone)]
pub struct Shard {
    /// This shard's number.
    pub id: u32,
    /// Its object runtime.
    pub host: ObjectHost,
    /// The server configuration.
    pub config: Rc<Config>,
    /// Set when the server is shutting down.
    pub stopping: Arc<AtomicBool>,
    /// Requests being handled on this shard's connections; shutdown waits for zero.
    pub in_flight: Rc<Cell<usize>>,
    /// Mailboxes to the other shards (admin operations fan out over them).
    pub router: Rc<MailboxRouter>,
}

/// Code to run on every shard once it is up, e.g. the HTTP listener.
pub type ShardTask = Arc<dyn Fn(Shard) -> LocalFuture<'static, ()> + Send + Sync>;

/// A running server: its shard threads and the switch that stops them.
pub struct ServerHandle {
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    gateway: glommio::ExecutorJoinHandle<()>,
    client: EngineClient,
    stopping: Arc<AtomicBool>,
}

/// A handle for calling objects from any thread that is not a shard (a
/// `main`, a thread pool, a test). `Send`, `Sync` and cheap to clone.
///
/// Calls go through the server's *gateway*: one more glommio executor, a
/// peer in the shard mailbox mesh that forwards each call to the owning
/// shard like any forwarded request. [`EngineClient::call`] blocks the
/// calling thread until the answer arrives, so never call it on a shard
/// thread (handlers use `Context::stub`; shard tasks use `ObjectHost::call`).
#[derive(Clone)]
pub struct EngineClient {
    calls: std::sync::mpsc::Sender<GatewayCall>,
}

/// One call handed to the gateway, with where its answer goes.
struct GatewayCall {
    target: Target,
    req: Request,
    answer: std::sync::mpsc::Sender<Response>,
}

impl EngineClient {
    /// Sends `req` to the object of `class` named `name` and waits for its
    /// response. Errors come back as responses (e.g. 503 `shutting_down`
    /// once the server stops).
    pub fn call(&self, class: &str, name: &[u8], req: Request) -> Response {
        let target = Target {
            class: class.into(),
            id: crate::id::id_from_name(class, name),
            name: Some(name.to_vec()),
        };
        self.call_target(target, req)
    }

    /// [`EngineClient::call`] for an object addressed by [`Target`].
    pub fn call_target(&self, target: Target, req: Request) -> Response {
        let (answer, answers) = std::sync::mpsc::channel();
        let gone = || Response::error(ErrorCode::ShuttingDown, "the server has stopped");
        if self
            .calls
            .send(GatewayCall {
                target,
                req,
                answer,
            })
            .is_err()
        {
            return gone();
        }
        answers.recv().unwrap_or_else(|_| gone())
    }
}

impl ServerHandle {
    /// A handle for in-process calls from non-shard threads.
    pub fn client(&self) -> EngineClient {
        self.client.clone()
    }

    /// Asks every shard to stop; [`ServerHandle::join`] waits for them.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The flag shards watch; set it from a signal handler thread.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    /// Waits for every shard thread (and the gateway) to finish.
    pub fn join(self) -> Result<(), StartError> {
        let shards = self.threads.len() as u32;
        for (i, t) in self.threads.into_iter().enumerate() {
            t.join().map_err(|e| StartError::Shard {
                shard: i as u32,
                reason: e.to_string(),
            })?;
        }
        self.gateway.join().map_err(|e| StartError::Shard {
            shard: shards,
            reason: format!("gateway: {e}"),
        })?;
        Ok(())
    }
}

/// How often a shard checks the stop flag. Not on the request path.
const STOP_POLL_MS: u64 = 20;

/// Starts `config.shards` shard threads serving `classes`, running `tasks` on
/// each shard once it is up.
pub fn start(
    config: Config,
    classes: Classes,
    tasks: Vec<ShardTask>,
) -> Result<ServerHandle, StartError> {
    open_data_dir(&config.data_dir, config.shards).map_err(StartError::DataDir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stopping = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    // One node more than shards: the last is the gateway for EngineClient.
    let mut boxes = mesh(config.shards + 1, config.mailbox_depth_max);
    let gateway_boxes = boxes.pop().expect("the mesh has a gateway node");
    let (calls, call_rx) = std::sync::mpsc::channel();
    let gateway = {
        let (shards, stopping, io) = (config.shards, stopping.clone(), config.io_memory_bytes);
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("cairn-gateway")
            .io_memory(io.min(256 << 10))
            .spawn(move || run_gateway(shards, gateway_boxes, call_rx, stopping))
            .map_err(|e| StartError::Shard {
                shard: config.shards,
                reason: format!("gateway: {e}"),
            })?
    };
    for (i, boxes) in boxes.into_iter().enumerate() {
        let shard_id = i as u32;
        let placement = if config.pin {
            Placement::Fixed(i % cores)
        } else {
            Placement::Unbound
        };
        let (config, classes, tasks, stopping) = (
            config.clone(),
            classes.clone(),
            tasks.clone(),
            stopping.clone(),
        );
        let mut builder = LocalExecutorBuilder::new(placement)
            .name(&format!("cairn-shard-{i}"))
            .io_memory(config.io_memory_bytes);
        if config.park_spin_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(config.park_spin_us));
        }
        let handle = builder
            .spawn(move || run_shard(shard_id, config, classes, boxes, tasks, stopping))
            .map_err(|e| StartError::Shard {
                shard: shard_id,
                reason: e.to_string(),
            })?;
        threads.push(handle);
    }
    Ok(ServerHandle {
        threads,
        gateway,
        client: EngineClient { calls },
        stopping,
    })
}

/// Connects this executor's ends of the mailbox mesh (a shard's or the
/// gateway's) and returns its router and each peer's receiver.
///
/// Connecting a sender waits for its receiver to connect on the peer, so
/// every receiver connects in its own task first; connecting in sequence
/// would deadlock the mesh. A pending connect re-polls on every reactor turn
/// (glommio does not wake the peer), so this executor busy-polls until its
/// peers are up.
async fn connect_mesh(
    boxes: ForeignMailboxes,
    shards: u32,
    stopping: &Arc<AtomicBool>,
) -> (Rc<MailboxRouter>, Vec<(usize, ConnectedReceiver<Mail>)>) {
    let receivers: Vec<_> = boxes
        .from
        .into_iter()
        .enumerate()
        .filter_map(|(peer, rx)| rx.map(|rx| (peer, glommio::spawn_local(rx.connect()))))
        .collect();
    let mut to = Vec::new();
    for tx in boxes.to {
        to.push(match tx {
            Some(tx) => Some(Rc::new(tx.connect().await)),
            None => None,
        });
    }
    let router = Rc::new(MailboxRouter {
        to,
        shards,
        pending: RefCell::new(HashMap::new()),
        next_corr: Cell::new(0),
        gathering: RefCell::new(HashMap::new()),
        serving: Rc::new(Cell::new(0)),
        stopping: stopping.clone(),
    });
    let mut connected = Vec::with_capacity(receivers.len());
    for (peer, rx) in receivers {
        connected.push((peer, rx.await));
    }
    (router, connected)
}

/// How long the gateway waits for a call before checking the stop flag.
const GATEWAY_POLL_MS: u64 = 50;

/// The gateway: takes calls from [`EngineClient`]s (through a blocking
/// `std` channel, waited on in glommio's blocking-thread pool so the
/// executor never blocks) and forwards each to its owning shard by mail.
async fn run_gateway(
    shards: u32,
    boxes: ForeignMailboxes,
    calls: std::sync::mpsc::Receiver<GatewayCall>,
    stopping: Arc<AtomicBool>,
) {
    let (router, receivers) = connect_mesh(boxes, shards, &stopping).await;
    for (_, rx) in receivers {
        let router = router.clone();
        glommio::spawn_local(async move {
            while let Some(mail) = rx.recv().await {
                // Shards only answer the gateway; they never ask it anything.
                if let Mail::Response { corr, resp } = mail
                    && let Some(reply) = router.pending.borrow_mut().remove(&corr)
                {
                    reply(resp);
                }
            }
        })
        .detach();
    }
    let mut calls = calls;
    loop {
        let (back, got) = glommio::executor()
            .spawn_blocking(move || {
                let got = calls.recv_timeout(Duration::from_millis(GATEWAY_POLL_MS));
                (calls, got)
            })
            .await;
        calls = back;
        match got {
            Ok(call) => {
                let owner = crate::id::shard_of(&call.target.id, shards);
                let answer = call.answer;
                router.forward(
                    owner,
                    call.target,
                    call.req,
                    Vec::new(),
                    Box::new(move |resp| {
                        let _ = answer.send(resp);
                    }),
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // Every client handle is gone; wait for the stop.
                while !stopping.load(Ordering::Acquire) {
                    glommio::timer::sleep(Duration::from_millis(STOP_POLL_MS)).await;
                }
            }
        }
        if stopping.load(Ordering::Acquire) {
            break;
        }
    }
    // Let calls already forwarded finish (the shards drain them), then fail the rest.
    for _ in 0..(SHUTDOWN_DRAIN_MS / STOP_POLL_MS) {
        if router.pending.borrow().is_empty() {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(STOP_POLL_MS)).await;
    }
    router.fail_pending();
    while let Ok(call) = calls.try_recv() {
        let _ = call.answer.send(Response::error(
            ErrorCode::ShuttingDown,
            "the server is stopping",
        ));
    }
}

async fn run_shard(
    shard_id: u32,
    config: Config,
    classes: Classes,
    boxes: ForeignMailboxes,
    tasks: Vec<ShardTask>,
    stopping: Arc<AtomicBool>,
) {
    let dir = config.data_dir.join(format!("shard-{shard_id:03}"));
    let opts = cairn_storage::StoreOptions {
        shard_id,
        shard_count: config.shards,
        // One byte more than the user limit: the engine's namespace byte.
        key_bytes_max: config.key_bytes_max + 1,
        value_bytes_max: config.value_bytes_max,
        segment_bytes: config.segment_bytes,
        ..cairn_storage::StoreOptions::default()
    };
    let opened = std::time::Instant::now();
    let store = match Store::open_disk(&dir, opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn: shard {shard_id}: {e} ({})", dir.display());
            std::process::exit(1);
        }
    };
    let host_cfg = HostConfig {
        shard_id,
        shard_count: config.shards,
        object_queue_depth_max: config.object_queue_depth_max,
        idle_ms_evict: config.idle_ms_evict,
        init_timeout_ms: config.init_timeout_ms,
        object_memory_bytes_max: config.object_memory_bytes_max,
        key_bytes_max: config.key_bytes_max,
        ws: WsLimits {
            message_bytes_max: config.ws_message_bytes_max,
            send_buffer_bytes_max: config.ws_send_buffer_bytes_max,
            ping_interval_ms: config.ws_ping_interval_ms,
            idle_timeout_ms: config.ws_idle_timeout_ms,
            attachment_bytes_max: config.ws_attachment_bytes_max,
            sockets_per_object_max: config.ws_sockets_per_object_max,
            ..WsLimits::default()
        },
        ..HostConfig::default()
    };
    let host = ObjectHost::new(host_cfg, classes, store, system_clock());
    host.recover_alarms().await;
    // Start-up milestones on stderr: how long recovery took, and whether a
    // shard that does not serve stopped before or after the mesh (how the
    // start-up hang of docs/RELIABILITY.md was located).
    eprintln!(
        "cairn: shard {shard_id}: storage recovered and alarms re-armed in {} ms; connecting to the other shards",
        opened.elapsed().as_millis()
    );
    let (router, receivers) = connect_mesh(boxes, config.shards, &stopping).await;
    eprintln!("cairn: shard {shard_id}: connected; serving");
    host.set_forwarder(router.clone());
    for (peer, rx) in receivers {
        let (host, router) = (host.clone(), router.clone());
        glommio::spawn_local(async move {
            while let Some(mail) = rx.recv().await {
                deliver(&host, &router, peer, mail);
            }
        })
        .detach();
    }
    glommio::spawn_local(host.clone().run_timers()).detach();

    let in_flight = Rc::new(Cell::new(0));
    let shard = Shard {
        id: shard_id,
        host,
        config: Rc::new(config),
        stopping: stopping.clone(),
        in_flight: in_flight.clone(),
        router: router.clone(),
    };
    for t in &tasks {
        glommio::spawn_local(t(shard.clone())).detach();
    }
    while !stopping.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(STOP_POLL_MS)).await;
    }
    // Graceful stop: let requests already being handled finish and sockets
    // close with 1001 "going away" (bounded): this shard's connections and
    // sockets, its requests waiting on other shards, and other shards'
    // requests running here (so a peer is not left waiting).
    shard.host.close_all_sockets(1001, "server shutting down");
    let busy = || {
        in_flight.get() > 0
            || shard.host.socket_count() > 0
            || !router.pending.borrow().is_empty()
            || router.serving.get() > 0
    };
    for _ in 0..(SHUTDOWN_DRAIN_MS / STOP_POLL_MS) {
        if !busy() {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(STOP_POLL_MS)).await;
    }
    // Whatever still waits on another shard is answered 503 now, and its
    // connection gets a moment to write that answer.
    router.fail_pending();
    for _ in 0..(SHUTDOWN_ANSWER_MS / STOP_POLL_MS) {
        if in_flight.get() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(STOP_POLL_MS)).await;
    }
    if let Err(e) = shard.host.store().sync().await {
        eprintln!("cairn: shard {shard_id}: final sync failed: {e}");
    }
}

/// How long a stopping shard waits for requests in flight.
const SHUTDOWN_DRAIN_MS: u64 = 5000;

/// How long a stopping shard then waits for its connections to write the
/// 503s it gave to requests still waiting on other shards.
const SHUTDOWN_ANSWER_MS: u64 = 200;

/// Handles one piece of mail from shard `peer`.
fn deliver(host: &ObjectHost, router: &Rc<MailboxRouter>, peer: usize, mail: Mail) {
    match mail {
        Mail::Request {
            corr,
            target,
            req,
            chain,
        } => {
            let back = router.to[peer]
                .clone()
                .expect("a peer that sent mail has a mailbox back");
            let serving = router.serving.clone();
            serving.set(serving.get() + 1);
            host.dispatch_chained(
                target,
                req,
                chain,
                Box::new(move |resp| {
                    serving.set(serving.get() - 1);
                    if let Err(e) = back.try_send(Mail::Response { corr, resp }) {
                        let glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(mail)) = e else {
                            return; // the peer is gone (shutting down)
                        };
                        glommio::spawn_local(async move {
                            let _ = back.send(mail).await;
                        })
                        .detach();
                    }
                }),
            );
        }
        Mail::Admin { corr, op } => {
            let back = router.to[peer]
                .clone()
                .expect("a peer that sent mail has a mailbox back");
            let host = host.clone();
            glommio::spawn_local(async move {
                let resp = crate::admin::run_local(&host, op).await;
                let _ = back.send(Mail::Response { corr, resp }).await;
            })
            .detach();
        }
        Mail::Socket(h) => crate::ws::upgrade::adopt(host, *h),
        Mail::Response { corr, resp } => {
            // A missing entry is a request already failed by `fail_pending`
            // at shutdown: its answer has been given.
            if let Some(reply) = router.pending.borrow_mut().remove(&corr) {
                reply(resp);
            }
        }
        Mail::StatsRequest { corr } => {
            let back = router.to[peer]
                .clone()
                .expect("a peer that sent mail has a mailbox back");
            let stats = Box::new(host.stats());
            glommio::spawn_local(async move {
                let _ = back.send(Mail::StatsResponse { corr, stats }).await;
            })
            .detach();
        }
        Mail::StatsResponse { corr, stats } => {
            let g = router.gathering.borrow().get(&corr).cloned();
            if let Some(g) = g {
                g.answer(Some(*stats));
                if g.owed.get() == 0 {
                    router.gathering.borrow_mut().remove(&corr);
                }
            }
        }
    }
}

/// Why the server could not start or stopped abnormally.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory is unusable.
    DataDir(DataDirError),
    /// A shard thread could not start or failed.
    Shard {
        /// Which shard.
        shard: u32,
        /// What glommio said.
        reason: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::DataDir(e) => e.fmt(f),
            StartError::Shard { shard, reason } => write!(
                f,
                "shard {shard}: {reason} (if this mentions memlock, raise `ulimit -l` or lower --io-memory-bytes)"
            ),
        }
    }
}

impl std::error::Error for StartError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::id::{id_from_name, shard_of};
    use crate::object::Object;

    /// Answers with the shard it runs on and its hit count.
    struct WhereAmI {
        hits: u32,
    }

    impl Object for WhereAmI {
        fn fetch<'a>(&'a mut self, ctx: &'a Context, _req: Request) -> LocalFuture<'a, Response> {
            self.hits += 1;
            let body = format!("{} {}", ctx.shard_id(), self.hits);
            Box::pin(async move { Response::new(200, body) })
        }
    }

    #[test]
    fn requests_reach_the_owning_shard_and_responses_come_back() {
        let dir = std::env::temp_dir().join(format!("cairn-shard-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config {
            shards: 4,
            pin: false,
            data_dir: dir.clone(),
            ..Config::default()
        };
        let mut classes = Classes::new();
        classes.register("where", || WhereAmI { hits: 0 });
        let (tx, rx) = std::sync::mpsc::channel::<Vec<(String, String)>>();
        let tx = std::sync::Mutex::new(Some(tx));
        let task: ShardTask = Arc::new(move |shard: Shard| {
            let tx = if shard.id == 0 {
                tx.lock().unwrap().take()
            } else {
                None
            };
            Box::pin(async move {
                let Some(tx) = tx else { return };
                let mut out = Vec::new();
                for round in 0..2 {
                    for i in 0..20 {
                        let name = format!("obj-{i}");
                        let id = id_from_name("where", name.as_bytes());
                        let t = Target {
                            class: "where".into(),
                            id,
                            name: Some(name.clone().into_bytes()),
                        };
                        let r = shard.host.call(t, Request::new("GET", "/")).await;
                        let want = format!("{} {}", shard_of(&id, 4), round + 1);
                        out.push((String::from_utf8(r.body.to_vec()).unwrap(), want));
                    }
                }
                tx.send(out).unwrap();
            })
        });
        let server = start(config, classes, vec![task]).unwrap();
        let got = rx.recv().unwrap();
        server.stop();
        server.join().unwrap();
        assert_eq!(got.len(), 40);
        for (got, want) in &got {
            assert_eq!(got, want);
        }
        let shards: std::collections::BTreeSet<_> = got
            .iter()
            .map(|(g, _)| g.split(' ').next().unwrap())
            .collect();
        assert_eq!(shards.len(), 4, "20 names spread over all four shards");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn engine_client_calls_objects_on_every_shard_from_any_thread() {
        let dir = std::env::temp_dir().join(format!("cairn-client-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config {
            shards: 3,
            data_dir: dir.clone(),
            segment_bytes: 1 << 20,
            ..Config::default()
        };
        let mut classes = Classes::new();
        classes.register("where", || WhereAmI { hits: 0 });
        let server = start(config, classes, vec![]).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let client = server.client();
                std::thread::spawn(move || {
                    (0..12)
                        .map(|i| {
                            let name = format!("obj-{i}");
                            let r = client.call("where", name.as_bytes(), Request::new("GET", "/"));
                            let id = id_from_name("where", name.as_bytes());
                            let body = String::from_utf8(r.body.to_vec()).unwrap();
                            assert_eq!(r.status, 200, "thread {t}: {body}");
                            let shard: u32 = body.split(' ').next().unwrap().parse().unwrap();
                            assert_eq!(shard, shard_of(&id, 3), "answered by the owner");
                            shard
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut shards = std::collections::BTreeSet::new();
        for t in threads {
            shards.extend(t.join().unwrap());
        }
        assert_eq!(shards.len(), 3, "12 names spread over all three shards");
        let client = server.client();
        // Each object saw 4 calls, one per thread, one at a time.
        let r = client.call("where", b"obj-0", Request::new("GET", "/"));
        assert!(String::from_utf8(r.body.to_vec()).unwrap().ends_with(" 5"));
        server.stop();
        server.join().unwrap();
        let r = client.call("where", b"obj-0", Request::new("GET", "/"));
        assert_eq!(r.status, 503, "a stopped server answers 503");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn starting_with_another_shard_count_is_refused() {
        let dir = std::env::temp_dir().join(format!("cairn-shard-count-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config {
            shards: 2,
            data_dir: dir.clone(),
            ..Config::default()
        };
        let first = start(config.clone(), Classes::new(), vec![]).unwrap();
        first.stop();
        first.join().unwrap();
        let e = start(
            Config {
                shards: 3,
                ..config
            },
            Classes::new(),
            vec![],
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("created with 2 shards"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
