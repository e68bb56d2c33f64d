//! The engine's one door to storage: [`Store`] over either `cairn-storage`
//! (the server's backend: a per-shard log on disk) or an in-memory model of
//! the same contract whose commit path tests can script.
//!
//! The adapter exists for two reasons. Tickets must be shareable (`Clone`):
//! the output gate keeps an object's latest ticket and several responses may
//! wait on it, so a disk ticket is wrapped in a shared cell that one task
//! awaits on behalf of all. And the gate tests need a commit path they can
//! hold open or fail (the "fdatasync") without a disk: [`ScriptedCommits`].
//! Values read from disk are copied into `Bytes` (one copy per read, which
//! keeps every layer above on one value type).
//!
//! Semantics both backends honour, as the contract states them:
//! - **Read-your-writes:** `get`/`list` see a mutation as soon as the call that
//!   made it returns.
//! - **Commit groups are atomic:** every mutation issued without the caller
//!   suspending lands in the same group, because the group is sealed only by
//!   the committer task, which cannot run until the caller suspends.
//! - **Tickets resolve in order**, after the group's commit succeeded; a failed
//!   commit fails that group's tickets and every later one, and the store turns
//!   read-only (reads keep working) with the reason in [`Store::stats`].
//!
//! The commit itself goes through [`CommitPath`], so tests can hold commits
//! open or fail them (the "fdatasync") without a disk.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

/// What storage calls an object: 32 opaque bytes.
pub type StoreObjectId = [u8; 32];

/// A stored value: cheap to clone, dereferences to its bytes.
pub type Value = Bytes;

/// A boxed, non-`Send` future, as shard-local code uses them.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Storage limits and identity (the contract's `StoreOptions`, in part).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Which shard this store belongs to.
    pub shard_id: u32,
    /// How many shards the data directory has.
    pub shard_count: u32,
    /// Largest key, in bytes, including the engine's namespace byte. Default 2049.
    pub key_bytes_max: usize,
    /// Largest value, in bytes. Default 131072.
    pub value_bytes_max: usize,
    /// Most keys in one `commit` batch. Default 128.
    pub batch_keys_max: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            shard_id: 0,
            shard_count: 1,
            key_bytes_max: 2049,
            value_bytes_max: 128 << 10,
            batch_keys_max: 128,
        }
    }
}

/// How a commit group becomes durable. The production path is storage's
/// group-commit loop; tests substitute [`ScriptedCommits`].
pub trait CommitPath {
    /// Makes commit group `group_seq` (holding `mutations` mutations) durable.
    fn commit(
        &self,
        group_seq: u64,
        mutations: usize,
    ) -> LocalFuture<'static, Result<(), CommitError>>;
}

/// Commits that succeed as soon as they are asked for (an in-memory "disk").
#[derive(Debug, Default, Clone, Copy)]
pub struct ImmediateCommits;

impl CommitPath for ImmediateCommits {
    fn commit(
        &self,
        _group_seq: u64,
        _mutations: usize,
    ) -> LocalFuture<'static, Result<(), CommitError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Test hook: each commit waits for the next verdict sent on the paired
/// [`CommitVerdicts`], so a test decides when (and whether) a write is durable.
pub struct ScriptedCommits {
    verdicts: Rc<LocalReceiver<Result<(), CommitError>>>,
    started: Rc<Cell<u64>>,
}

/// The controlling end of [`ScriptedCommits`].
pub struct CommitVerdicts {
    tx: LocalSender<Result<(), CommitError>>,
    started: Rc<Cell<u64>>,
}

impl ScriptedCommits {
    /// A scripted commit path and the handle that releases or fails its commits.
    pub fn new() -> (ScriptedCommits, CommitVerdicts) {
        let (tx, rx) = local_channel::new_unbounded();
        let started = Rc::new(Cell::new(0));
        (
            ScriptedCommits {
                verdicts: Rc::new(rx),
                started: started.clone(),
            },
            CommitVerdicts { tx, started },
        )
    }
}

impl CommitPath for ScriptedCommits {
    fn commit(
        &self,
        _group_seq: u64,
        _mutations: usize,
    ) -> LocalFuture<'static, Result<(), CommitError>> {
        self.started.set(self.started.get() + 1);
        let rx = self.verdicts.clone();
        Box::pin(async move {
            rx.recv().await.unwrap_or(Err(CommitError::Io {
                reason: "verdicts dropped".into(),
            }))
        })
    }
}

impl CommitVerdicts {
    /// Lets the oldest waiting (or next) commit succeed.
    pub fn release(&self) {
        let sent = self.tx.try_send(Ok(())).is_ok();
        assert!(sent, "an unbounded channel accepts");
    }
    /// Makes the oldest waiting (or next) commit fail, as a failed fdatasync would.
    pub fn fail(&self, reason: &str) {
        let sent = self
            .tx
            .try_send(Err(CommitError::Io {
                reason: reason.into(),
            }))
            .is_ok();
        assert!(sent, "an unbounded channel accepts");
    }
    /// How many commits have been started so far.
    pub fn started(&self) -> u64 {
        self.started.get()
    }
}

/// Range and paging options for [`Store::list`]: the disk store's own type, so the two
/// backends cannot drift apart and the disk path needs no conversion.
pub use cairn_storage::ListOptions;

/// Mutations applied atomically by [`Store::commit`].
#[derive(Debug, Clone, Default)]
pub struct Batch {
    ops: Vec<Op>,
}

#[derive(Debug, Clone)]
enum Op {
    Put(StoreObjectId, Vec<u8>, Bytes),
    Delete(StoreObjectId, Vec<u8>),
    DeleteAll(StoreObjectId),
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }
    /// Adds a put.
    pub fn put(&mut self, obj: &StoreObjectId, key: &[u8], value: &[u8]) -> &mut Batch {
        self.put_owned_key(obj, key.to_vec(), value)
    }
    /// Adds a put of a key the caller already owns (not copied again).
    pub fn put_owned_key(&mut self, obj: &StoreObjectId, key: Vec<u8>, value: &[u8]) -> &mut Batch {
        self.ops
            .push(Op::Put(*obj, key, Bytes::copy_from_slice(value)));
        self
    }
    /// Adds a delete.
    pub fn delete(&mut self, obj: &StoreObjectId, key: &[u8]) -> &mut Batch {
        self.ops.push(Op::Delete(*obj, key.to_vec()));
        self
    }
    /// Adds a delete of everything the object stores.
    pub fn delete_all(&mut self, obj: &StoreObjectId) -> &mut Batch {
        self.ops.push(Op::DeleteAll(*obj));
        self
    }
    /// Number of keyed operations (puts and deletes).
    pub fn keys(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| !matches!(o, Op::DeleteAll(_)))
            .count()
    }
}

struct GroupState {
    outcome: Option<Result<(), CommitError>>,
    wakers: Vec<Waker>,
}

struct Group {
    seq: u64,
    mutations: Cell<usize>,
    state: RefCell<GroupState>,
    /// For a disk ticket: the storage ticket, until the first waiter takes it
    /// to await it on behalf of every clone (`TicketFuture`).
    disk: RefCell<Option<cairn_storage::Ticket>>,
    /// A wait on the storage ticket that its driver dropped unfinished; the
    /// next waiter polled takes it over.
    parked: RefCell<Option<DiskWait>>,
    /// For a disk ticket: a clone of the storage ticket that stays, so that
    /// [`Ticket::is_durable`] is true once the group is on disk even while
    /// nobody drives the wait (its driver was dropped and the wait parked).
    probe: Option<cairn_storage::Ticket>,
}

impl Group {
    fn resolve(&self, outcome: Result<(), CommitError>) {
        let mut st = self.state.borrow_mut();
        assert!(
            st.outcome.is_none(),
            "commit group {} resolved twice",
            self.seq
        );
        st.outcome = Some(outcome);
        for w in st.wakers.drain(..) {
            w.wake();
        }
    }
}

/// A promise that a mutation becomes durable. Cloning shares the promise.
#[derive(Clone)]
pub struct Ticket(Rc<Group>);

impl Ticket {
    /// Resolves once the commit group holding the mutation is durable.
    pub fn durable(&self) -> TicketFuture {
        TicketFuture {
            group: self.0.clone(),
            disk: None,
        }
    }
    /// True once the mutation is durable.
    pub fn is_durable(&self) -> bool {
        // With an artificial commit delay only the delayed outcome counts.
        #[cfg(feature = "test-hooks")]
        if crate::test_hooks::commit_delay_ms() > 0 {
            return matches!(self.0.state.borrow().outcome, Some(Ok(())));
        }
        matches!(self.0.state.borrow().outcome, Some(Ok(())))
            || self
                .0
                .probe
                .as_ref()
                .is_some_and(cairn_storage::Ticket::is_durable)
    }

    fn from_disk(t: cairn_storage::Ticket) -> Ticket {
        Ticket(Rc::new(Group {
            seq: 0,
            mutations: Cell::new(0),
            state: RefCell::new(GroupState {
                outcome: None,
                wakers: Vec::new(),
            }),
            probe: Some(t.clone()),
            disk: RefCell::new(Some(t)),
            parked: RefCell::new(None),
        }))
    }
    /// Whether `other` is this ticket or a clone of it.
    pub(crate) fn same_group(&self, other: &Ticket) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// The in-memory commit group's sequence number; later groups have larger
    /// numbers. Zero for disk tickets.
    pub fn group_seq(&self) -> u64 {
        self.0.seq
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticket(group {})", self.0.seq)
    }
}

/// The future returned by [`Ticket::durable`].
///
/// The first future polled for a disk ticket drives the storage ticket's
/// wait itself (no task per ticket: an increment's response waits on one
/// future, not on a chain of tasks) and resolves the group for every clone.
/// INVARIANT: a taken wait is either driven by a live future or parked in
/// the group: a future dropped with its wait unfinished parks it and wakes
/// the other waiters, so one of them takes it over (no clone waits on a wait
/// nobody drives, and no task is spawned from a destructor).
pub struct TicketFuture {
    group: Rc<Group>,
    /// The storage ticket's wait, once this future took it from the group.
    disk: Option<DiskWait>,
}

/// A storage ticket's wait, yielding the group's outcome.
type DiskWait = Pin<Box<dyn Future<Output = Result<(), CommitError>>>>;

/// The wait for storage ticket `t`, with the test hooks' artificial delay.
fn disk_wait(t: cairn_storage::Ticket) -> DiskWait {
    Box::pin(async move {
        let outcome = t
            .durable()
            .await
            .map_err(|e| CommitError::Io { reason: e.reason });
        #[cfg(feature = "test-hooks")]
        {
            let ms = crate::test_hooks::commit_delay_ms();
            if ms > 0 {
                glommio::timer::sleep(std::time::Duration::from_millis(ms)).await;
            }
        }
        outcome
    })
}

impl Future for TicketFuture {
    type Output = Result<(), CommitError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.disk.is_none() {
            let parked = this.group.parked.borrow_mut().take();
            this.disk = parked.or_else(|| this.group.disk.borrow_mut().take().map(disk_wait));
        }
        if let Some(wait) = this.disk.as_mut()
            && let Poll::Ready(outcome) = wait.as_mut().poll(cx)
        {
            this.disk = None;
            this.group.resolve(outcome);
        }
        let mut st = this.group.state.borrow_mut();
        match &st.outcome {
            Some(o) => Poll::Ready(o.clone()),
            None => {
                if this.disk.is_none() {
                    // Another clone drives the wait; it wakes us on resolve.
                    st.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for TicketFuture {
    fn drop(&mut self) {
        if let Some(wait) = self.disk.take() {
            *self.group.parked.borrow_mut() = Some(wait);
            let wakers = std::mem::take(&mut self.group.state.borrow_mut().wakers);
            for w in wakers {
                w.wake();
            }
        }
    }
}

/// Counters a shard exports as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Commit groups made durable.
    pub commits: u64,
    /// Mutations in those groups.
    pub mutations: u64,
    /// Largest commit group, in records (disk only; 0 in memory).
    pub group_records_max: u64,
    /// fdatasyncs done (disk only).
    pub fdatasyncs: u64,
    /// Sum of fdatasync latencies, nanoseconds.
    pub fdatasync_ns_total: u64,
    /// Slowest fdatasync, nanoseconds.
    pub fdatasync_ns_max: u64,
    /// Why the store is read-only, if it is.
    pub read_only_reason: Option<String>,
    /// Heap bytes the storage index holds (disk store only; 0 in memory).
    pub index_bytes: u64,
    /// Objects in the storage index (disk store only; 0 in memory).
    pub index_objects: u64,
}

struct Inner {
    opts: StoreOptions,
    data: RefCell<BTreeMap<StoreObjectId, BTreeMap<Vec<u8>, Bytes>>>,
    open_group: RefCell<Option<Rc<Group>>>,
    next_seq: Cell<u64>,
    stats: RefCell<StoreStats>,
    wake_committer: LocalSender<()>,
}

/// The in-memory model of the storage contract. Nothing in it survives a restart.
#[derive(Clone)]
pub struct MemStore {
    inner: Rc<Inner>,
}

impl MemStore {
    /// Opens an empty in-memory store and starts its committer task on the
    /// current glommio executor.
    pub async fn open(
        opts: StoreOptions,
        commits: Rc<dyn CommitPath>,
    ) -> Result<MemStore, StorageError> {
        let (tx, rx) = local_channel::new_bounded(1);
        let inner = Rc::new(Inner {
            opts,
            data: RefCell::new(BTreeMap::new()),
            open_group: RefCell::new(None),
            next_seq: Cell::new(1),
            stats: RefCell::new(StoreStats::default()),
            wake_committer: tx,
        });
        let weak = Rc::downgrade(&inner);
        glommio::spawn_local(async move {
            // The committer seals whatever group is open each time it runs; it
            // can only run when every writer has suspended, which is what makes
            // writes between two awaits one atomic group.
            while rx.recv().await.is_some() {
                let Some(inner) = weak.upgrade() else { break };
                let Some(group) = inner.open_group.borrow_mut().take() else {
                    continue;
                };
                let failed = inner.stats.borrow().read_only_reason.clone();
                let outcome = match failed {
                    Some(reason) => Err(CommitError::ReadOnly { reason }),
                    None => commits.commit(group.seq, group.mutations.get()).await,
                };
                {
                    let mut st = inner.stats.borrow_mut();
                    match &outcome {
                        Ok(()) => {
                            st.commits += 1;
                            st.mutations += group.mutations.get() as u64;
                        }
                        Err(e) if st.read_only_reason.is_none() => {
                            st.read_only_reason = Some(e.to_string())
                        }
                        Err(_) => {}
                    }
                }
                group.resolve(outcome);
            }
        })
        .detach();
        Ok(MemStore { inner })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// The current value of `key`, including writes not yet durable.
    pub async fn get(
        &self,
        obj: &StoreObjectId,
        key: &[u8],
    ) -> Result<Option<Value>, StorageError> {
        Ok(self
            .inner
            .data
            .borrow()
            .get(obj)
            .and_then(|m| m.get(key))
            .cloned())
    }

    /// The current values of `keys`, in order.
    pub async fn get_many(
        &self,
        obj: &StoreObjectId,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        let data = self.inner.data.borrow();
        let m = data.get(obj);
        Ok(keys
            .iter()
            .map(|k| m.and_then(|m| m.get(*k)).cloned())
            .collect())
    }

    /// Stores `value` under `key`.
    pub fn put(
        &self,
        obj: &StoreObjectId,
        key: &[u8],
        value: &[u8],
    ) -> Result<Ticket, StorageError> {
        let mut b = Batch::new();
        b.put(obj, key, value);
        self.commit(b)
    }

    /// Removes `key`; also says whether it existed.
    pub fn delete(&self, obj: &StoreObjectId, key: &[u8]) -> Result<(Ticket, bool), StorageError> {
        let existed = self
            .inner
            .data
            .borrow()
            .get(obj)
            .is_some_and(|m| m.contains_key(key));
        let mut b = Batch::new();
        b.delete(obj, key);
        Ok((self.commit(b)?, existed))
    }

    /// Removes everything `obj` stores.
    pub fn delete_all(&self, obj: &StoreObjectId) -> Result<Ticket, StorageError> {
        let mut b = Batch::new();
        b.delete_all(obj);
        self.commit(b)
    }

    /// Applies `batch` atomically: every operation is checked before any applies.
    pub fn commit(&self, batch: Batch) -> Result<Ticket, StorageError> {
        let o = &self.inner.opts;
        if let Some(reason) = &self.inner.stats.borrow().read_only_reason {
            return Err(StorageError::ReadOnly {
                reason: reason.clone(),
            });
        }
        if batch.keys() > o.batch_keys_max {
            return Err(StorageError::BatchTooLarge {
                keys: batch.keys(),
                max: o.batch_keys_max,
            });
        }
        for op in &batch.ops {
            let (key, value) = match op {
                Op::Put(_, k, v) => (k, Some(v)),
                Op::Delete(_, k) => (k, None),
                Op::DeleteAll(_) => continue,
            };
            if key.len() > o.key_bytes_max {
                return Err(StorageError::KeyTooLarge {
                    len: key.len(),
                    max: o.key_bytes_max,
                });
            }
            if let Some(v) = value.filter(|v| v.len() > o.value_bytes_max) {
                return Err(StorageError::ValueTooLarge {
                    len: v.len(),
                    max: o.value_bytes_max,
                });
            }
        }
        let n = batch.ops.len();
        let mut data = self.inner.data.borrow_mut();
        for op in batch.ops {
            match op {
                Op::Put(obj, k, v) => {
                    data.entry(obj).or_default().insert(k, v);
                }
                Op::Delete(obj, k) => {
                    if let Some(m) = data.get_mut(&obj) {
                        m.remove(&k);
                        if m.is_empty() {
                            data.remove(&obj);
                        }
                    }
                }
                Op::DeleteAll(obj) => {
                    data.remove(&obj);
                }
            }
        }
        Ok(self.join_open_group(n))
    }

    fn join_open_group(&self, mutations: usize) -> Ticket {
        let mut open = self.inner.open_group.borrow_mut();
        let group = open.get_or_insert_with(|| {
            let seq = self.inner.next_seq.get();
            self.inner.next_seq.set(seq + 1);
            // A full channel means the committer is already due to run.
            let _ = self.inner.wake_committer.try_send(());
            Rc::new(Group {
                seq,
                mutations: Cell::new(0),
                state: RefCell::new(GroupState {
                    outcome: None,
                    wakers: Vec::new(),
                }),
                disk: RefCell::new(None),
                parked: RefCell::new(None),
                probe: None,
            })
        });
        group.mutations.set(group.mutations.get() + mutations);
        Ticket(group.clone())
    }

    /// Entries of `obj` selected by `opts`, in key order (or reversed).
    pub async fn list(
        &self,
        obj: &StoreObjectId,
        opts: &ListOptions,
    ) -> Result<Vec<(Vec<u8>, Value)>, StorageError> {
        let data = self.inner.data.borrow();
        let Some(m) = data.get(obj) else {
            return Ok(Vec::new());
        };
        // Both bounds apply when both are given (as in cairn-storage): the stricter wins.
        let lower = match (&opts.start_after, &opts.start) {
            (Some(a), Some(st)) if st > a => Bound::Included(st.clone()),
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(k)) => Bound::Included(k.clone()),
            (None, None) => Bound::Unbounded,
        };
        let upper = match &opts.end {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) = (&lower, &upper)
            && l >= u
        {
            return Ok(Vec::new());
        }
        let prefix = opts.prefix.as_deref().unwrap_or(&[]);
        let limit = opts.limit.unwrap_or(usize::MAX);
        let range = m
            .range::<Vec<u8>, _>((lower, upper))
            .filter(|(k, _)| k.starts_with(prefix));
        let pick = |(k, v): (&Vec<u8>, &Bytes)| (k.clone(), v.clone());
        Ok(if opts.reverse {
            range.rev().take(limit).map(pick).collect()
        } else {
            range.take(limit).map(pick).collect()
        })
    }

    /// Up to `limit` ids that have data, in order, strictly after `after`.
    pub fn objects(&self, after: Option<&StoreObjectId>, limit: usize) -> Vec<StoreObjectId> {
        let data = self.inner.data.borrow();
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(*a));
        data.range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Resolves once everything issued so far is durable.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let open = self.inner.open_group.borrow().clone();
        match open {
            Some(g) => Ticket(g).durable().await.map_err(StorageError::from),
            None => match &self.inner.stats.borrow().read_only_reason {
                Some(reason) => Err(StorageError::ReadOnly {
                    reason: reason.clone(),
                }),
                None => Ok(()),
            },
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StoreStats {
        self.inner.stats.borrow().clone()
    }
}

/// One shard's store: the door every engine layer uses. `!Send`: it lives on
/// its shard's executor. Cheap to clone.
#[derive(Clone)]
pub struct Store(Backend);

#[derive(Clone)]
enum Backend {
    Mem(MemStore),
    Disk(cairn_storage::Store, StoreOptions, Rc<LastTicket>),
}

/// The engine ticket of the newest disk commit group, reused for every
/// mutation that joins the same group: the mutations of a group share one
/// promise (and one wait on storage's ticket) instead of a promise each.
#[derive(Default)]
struct LastTicket(RefCell<Option<(u64, Ticket)>>);

impl LastTicket {
    fn for_disk(&self, t: cairn_storage::Ticket) -> Ticket {
        let mut last = self.0.borrow_mut();
        match &*last {
            Some((g, ticket)) if *g == t.group() => ticket.clone(),
            _ => {
                let g = t.group();
                let ticket = Ticket::from_disk(t);
                *last = Some((g, ticket.clone()));
                ticket
            }
        }
    }
}

fn from_disk_error(e: cairn_storage::StorageError) -> StorageError {
    use cairn_storage::StorageError as D;
    match e {
        D::KeyTooLarge { len, max } => StorageError::KeyTooLarge { len, max },
        D::ValueTooLarge { len, max } => StorageError::ValueTooLarge { len, max },
        D::BatchTooLarge { keys, max } => StorageError::BatchTooLarge { keys, max },
        D::ReadOnly { reason } => StorageError::ReadOnly { reason },
        other => StorageError::Disk {
            reason: other.to_string(),
        },
    }
}

fn to_bytes(v: cairn_storage::Value) -> Bytes {
    Bytes::copy_from_slice(&v)
}

impl Store {
    /// An in-memory store whose commits go through `commits` (tests, embedding
    /// without a disk).
    pub async fn open(
        opts: StoreOptions,
        commits: Rc<dyn CommitPath>,
    ) -> Result<Store, StorageError> {
        Ok(Store(Backend::Mem(MemStore::open(opts, commits).await?)))
    }

    /// The `cairn-storage` log in `dir`, recovering what it holds.
    pub async fn open_disk(
        dir: &std::path::Path,
        opts: cairn_storage::StoreOptions,
    ) -> Result<Store, OpenError> {
        let disk = cairn_storage::DmaDisk::new(dir).map_err(|e| OpenError {
            reason: e.to_string(),
        })?;
        // Test builds put a fault-injecting layer under the log (`fault_disk.rs`).
        #[cfg(feature = "test-hooks")]
        let disk = crate::fault_disk::FaultDisk::new(disk);
        Store::open_on(Rc::new(disk), opts).await
    }

    /// The `cairn-storage` log on any [`cairn_storage::Disk`] (tests use its
    /// `MemDisk`, which can lose power), recovering what it holds.
    pub async fn open_on(
        disk: Rc<dyn cairn_storage::Disk>,
        opts: cairn_storage::StoreOptions,
    ) -> Result<Store, OpenError> {
        let mine = StoreOptions {
            shard_id: opts.shard_id,
            shard_count: opts.shard_count,
            key_bytes_max: opts.key_bytes_max,
            value_bytes_max: opts.value_bytes_max,
            batch_keys_max: opts.batch_keys_max,
        };
        let s = cairn_storage::Store::open_with_disk(disk, opts)
            .await
            .map_err(|e| OpenError {
                reason: e.to_string(),
            })?;
        Ok(Store(Backend::Disk(s, mine, Rc::default())))
    }

    /// The limits the store enforces.
    pub fn options(&self) -> &StoreOptions {
        match &self.0 {
            Backend::Mem(m) => m.options(),
            Backend::Disk(_, o, _) => o,
        }
    }

    /// The current value of `key`, including writes not yet durable.
    pub async fn get(
        &self,
        obj: &StoreObjectId,
        key: &[u8],
    ) -> Result<Option<Value>, StorageError> {
        match &self.0 {
            Backend::Mem(m) => m.get(obj, key).await,
            Backend::Disk(d, _, _) => d
                .get(obj, key)
                .await
                .map(|v| v.map(to_bytes))
                .map_err(from_disk_error),
        }
    }

    /// The current values of `keys`, in order.
    pub async fn get_many(
        &self,
        obj: &StoreObjectId,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        match &self.0 {
            Backend::Mem(m) => m.get_many(obj, keys).await,
            Backend::Disk(d, _, _) => d
                .get_many(obj, keys)
                .await
                .map(|vs| vs.into_iter().map(|v| v.map(to_bytes)).collect())
                .map_err(from_disk_error),
        }
    }

    /// Stores `value` under `key`.
    pub fn put(
        &self,
        obj: &StoreObjectId,
        key: &[u8],
        value: &[u8],
    ) -> Result<Ticket, StorageError> {
        match &self.0 {
            Backend::Mem(m) => m.put(obj, key, value),
            Backend::Disk(d, _, last) => d
                .put(obj, key, value)
                .map(|t| last.for_disk(t))
                .map_err(from_disk_error),
        }
    }

    /// Removes `key`; also says whether it existed.
    pub fn delete(&self, obj: &StoreObjectId, key: &[u8]) -> Result<(Ticket, bool), StorageError> {
        match &self.0 {
            Backend::Mem(m) => m.delete(obj, key),
            Backend::Disk(d, _, last) => d
                .delete(obj, key)
                .map(|(t, e)| (last.for_disk(t), e))
                .map_err(from_disk_error),
        }
    }

    /// Removes everything `obj` stores.
    pub fn delete_all(&self, obj: &StoreObjectId) -> Result<Ticket, StorageError> {
        match &self.0 {
            Backend::Mem(m) => m.delete_all(obj),
            Backend::Disk(d, _, last) => d
                .delete_all(obj)
                .map(|t| last.for_disk(t))
                .map_err(from_disk_error),
        }
    }

    /// Applies `batch` atomically.
    pub fn commit(&self, batch: Batch) -> Result<Ticket, StorageError> {
        match &self.0 {
            Backend::Mem(m) => m.commit(batch),
            Backend::Disk(d, _, last) => {
                // Keys and values move into storage's batch, not copied.
                let mut b = cairn_storage::Batch::new();
                for op in batch.ops {
                    match op {
                        Op::Put(o, k, v) => b.put_owned(&o, k, v.into()),
                        Op::Delete(o, k) => b.delete_owned(&o, k),
                        Op::DeleteAll(o) => b.delete_all(&o),
                    };
                }
                d.commit(b)
                    .map(|t| last.for_disk(t))
                    .map_err(from_disk_error)
            }
        }
    }

    /// Entries of `obj` selected by `opts`.
    pub async fn list(
        &self,
        obj: &StoreObjectId,
        opts: &ListOptions,
    ) -> Result<Vec<(Vec<u8>, Value)>, StorageError> {
        match &self.0 {
            Backend::Mem(m) => m.list(obj, opts).await,
            Backend::Disk(d, _, _) => d
                .list(obj, opts)
                .await
                .map(|es| es.into_iter().map(|(k, v)| (k, to_bytes(v))).collect())
                .map_err(from_disk_error),
        }
    }

    /// Up to `limit` ids that have data, in order, strictly after `after`.
    pub fn objects(&self, after: Option<&StoreObjectId>, limit: usize) -> Vec<StoreObjectId> {
        match &self.0 {
            Backend::Mem(m) => m.objects(after, limit),
            Backend::Disk(d, _, _) => d.objects(after, limit),
        }
    }

    /// Resolves once everything issued so far is durable.
    pub async fn sync(&self) -> Result<(), StorageError> {
        match &self.0 {
            Backend::Mem(m) => m.sync().await,
            Backend::Disk(d, _, _) => d.sync().await.map_err(from_disk_error),
        }
    }

    /// Flushes and checkpoints (disk); nothing to do in memory.
    pub async fn close(self) -> Result<(), StorageError> {
        match self.0 {
            Backend::Mem(m) => m.sync().await,
            Backend::Disk(d, _, _) => d.close().await.map_err(from_disk_error),
        }
    }

    /// Heap bytes the storage index holds (every key of every object, small
    /// values beside them); the in-memory store reports 0. O(1).
    pub fn index_bytes(&self) -> u64 {
        match &self.0 {
            Backend::Mem(_) => 0,
            Backend::Disk(d, _, _) => d.index_bytes(),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> StoreStats {
        match &self.0 {
            Backend::Mem(m) => m.stats(),
            Backend::Disk(d, _, _) => {
                let s = d.stats();
                StoreStats {
                    commits: s.groups,
                    mutations: s.records_written,
                    group_records_max: s.group_records_max,
                    fdatasyncs: s.fdatasyncs,
                    fdatasync_ns_total: s.fdatasync_ns_total,
                    fdatasync_ns_max: s.fdatasync_ns_max,
                    read_only_reason: s.read_only,
                    index_bytes: s.index_bytes,
                    index_objects: s.index_objects,
                }
            }
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    /// What storage said (it names the file and what to do).
    pub reason: String,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot open storage: {}", self.reason)
    }
}

impl std::error::Error for OpenError {}

/// Why a commit group did not become durable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitError {
    /// The write or fdatasync failed.
    Io {
        /// What the operating system said.
        reason: String,
    },
    /// An earlier commit failed and the store stopped accepting writes.
    ReadOnly {
        /// The first failure.
        reason: String,
    },
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitError::Io { reason } => write!(f, "commit failed: {reason}"),
            CommitError::ReadOnly { reason } => {
                write!(f, "store is read-only after an earlier failure: {reason}")
            }
        }
    }
}

impl std::error::Error for CommitError {}

/// Why a storage call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// Key longer than `key_bytes_max`.
    KeyTooLarge {
        /// Length given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Value longer than `value_bytes_max`.
    ValueTooLarge {
        /// Length given.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// More keys in one batch than `batch_keys_max`.
    BatchTooLarge {
        /// Keys given.
        keys: usize,
        /// Limit.
        max: usize,
    },
    /// Writes are refused after a failed commit; reads still work.
    ReadOnly {
        /// The failure that caused it.
        reason: String,
    },
    /// A commit failed.
    Commit(CommitError),
    /// The disk store failed otherwise (a read error, or it was closed).
    Disk {
        /// What storage said.
        reason: String,
    },
}

impl From<CommitError> for StorageError {
    fn from(e: CommitError) -> Self {
        StorageError::Commit(e)
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::KeyTooLarge { len, max } => {
                write!(f, "key is {len} bytes; the limit is {max}")
            }
            StorageError::ValueTooLarge { len, max } => {
                write!(f, "value is {len} bytes; the limit is {max}")
            }
            StorageError::BatchTooLarge { keys, max } => {
                write!(f, "batch has {keys} keys; the limit is {max}")
            }
            StorageError::ReadOnly { reason } => {
                write!(
                    f,
                    "storage is read-only ({reason}); restart the server after fixing the disk"
                )
            }
            StorageError::Commit(e) => e.fmt(f),
            StorageError::Disk { reason } => write!(f, "storage failed: {reason}"),
        }
    }
}

impl std::error::Error for StorageError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::run_local;

    const A: StoreObjectId = [1; 32];

    /// The disk backend over an in-memory disk.
    async fn open_on_mem_disk() -> Store {
        let disk = Rc::new(cairn_storage::MemDisk::new());
        Store::open_on(disk, cairn_storage::StoreOptions::default())
            .await
            .unwrap()
    }

    async fn open_scripted() -> (Store, CommitVerdicts) {
        let (path, verdicts) = ScriptedCommits::new();
        (
            Store::open(StoreOptions::default(), Rc::new(path))
                .await
                .unwrap(),
            verdicts,
        )
    }

    #[test]
    fn reads_see_writes_before_they_are_durable() {
        run_local(async {
            let (s, _v) = open_scripted().await;
            let t = s.put(&A, b"k", b"v").unwrap();
            assert_eq!(s.get(&A, b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
            assert!(!t.is_durable());
        });
    }

    #[test]
    fn a_disk_ticket_whose_waiter_was_dropped_still_reports_durability() {
        run_local(async {
            let s = open_on_mem_disk().await;
            let t = s.put(&A, b"k", b"v").unwrap();
            // A waiter polled once and dropped (a closed socket's writer, a
            // cancelled request) takes the storage wait and parks it.
            {
                let mut wait = std::pin::pin!(t.durable());
                let polled = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
                assert!(polled.is_pending());
            }
            // Nobody drives the wait now; the commit loop still makes the
            // group durable, and the ticket must say so (eviction and the
            // output gate ask `is_durable` without awaiting).
            for _ in 0..500 {
                if t.is_durable() {
                    break;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
            }
            assert!(t.is_durable());
            // A later waiter takes the parked wait over and resolves.
            t.durable().await.unwrap();
        });
    }

    #[test]
    fn disk_writes_of_one_group_share_one_ticket_and_the_next_group_gets_its_own() {
        run_local(async {
            let s = open_on_mem_disk().await;
            let t1 = s.put(&A, b"a", b"1").unwrap();
            let (t2, _) = s.delete(&A, b"b").unwrap();
            assert!(t1.same_group(&t2), "no suspension between them: one group");
            t2.durable().await.unwrap();
            assert!(t1.is_durable());
            let t3 = s.put(&A, b"a", b"2").unwrap();
            assert!(
                !t3.same_group(&t1),
                "a new group after the first is durable"
            );
            t3.durable().await.unwrap();
            assert_eq!(s.get(&A, b"a").await.unwrap().as_deref(), Some(&b"2"[..]));
        });
    }

    #[test]
    fn writes_without_a_suspension_share_one_commit_group() {
        run_local(async {
            let (s, v) = open_scripted().await;
            let t1 = s.put(&A, b"a", b"1").unwrap();
            let (t2, _) = s.delete(&A, b"b").unwrap();
            assert_eq!(t1.group_seq(), t2.group_seq());
            glommio::yield_if_needed().await;
            glommio::executor().yield_task_queue_now().await;
            let t3 = s.put(&A, b"c", b"3").unwrap();
            assert!(t3.group_seq() > t1.group_seq());
            v.release();
            t1.durable().await.unwrap();
            assert!(t2.is_durable() && !t3.is_durable());
            v.release();
            t3.durable().await.unwrap();
            assert_eq!(s.stats().commits, 2);
        });
    }

    #[test]
    fn a_failed_commit_fails_later_tickets_and_makes_the_store_read_only() {
        run_local(async {
            let (s, v) = open_scripted().await;
            let t1 = s.put(&A, b"a", b"1").unwrap();
            glommio::executor().yield_task_queue_now().await;
            let t2 = s.put(&A, b"b", b"2").unwrap();
            v.fail("disk on fire");
            assert!(t1.durable().await.is_err());
            assert!(matches!(
                t2.durable().await,
                Err(CommitError::ReadOnly { .. })
            ));
            assert!(matches!(
                s.put(&A, b"c", b"3"),
                Err(StorageError::ReadOnly { .. })
            ));
            assert_eq!(
                s.get(&A, b"a").await.unwrap().as_deref(),
                Some(&b"1"[..]),
                "reads keep working"
            );
            assert!(s.stats().read_only_reason.unwrap().contains("disk on fire"));
        });
    }

    #[test]
    fn limits_hold_at_the_limit_and_refuse_one_past_it() {
        run_local(async {
            let s = Store::open(StoreOptions::default(), Rc::new(ImmediateCommits))
                .await
                .unwrap();
            let o = s.options().clone();
            s.put(&A, &vec![b'k'; o.key_bytes_max], b"").unwrap();
            let e = s
                .put(&A, &vec![b'k'; o.key_bytes_max + 1], b"")
                .unwrap_err();
            assert_eq!(
                e,
                StorageError::KeyTooLarge {
                    len: o.key_bytes_max + 1,
                    max: o.key_bytes_max
                }
            );
            s.put(&A, b"k", &vec![0; o.value_bytes_max]).unwrap();
            assert!(matches!(
                s.put(&A, b"k", &vec![0; o.value_bytes_max + 1]),
                Err(StorageError::ValueTooLarge { .. })
            ));
            let mut b = Batch::new();
            for i in 0..o.batch_keys_max {
                b.put(&A, format!("{i}").as_bytes(), b"");
            }
            s.commit(b.clone()).unwrap();
            b.delete(&A, b"one-more");
            assert!(matches!(
                s.commit(b),
                Err(StorageError::BatchTooLarge {
                    keys: 129,
                    max: 128
                })
            ));
        });
    }

    fn opts(f: impl FnOnce(&mut ListOptions)) -> ListOptions {
        let mut o = ListOptions::default();
        f(&mut o);
        o
    }

    async fn check(s: &Store, o: ListOptions, expected: &[&str]) {
        let got: Vec<String> = s
            .list(&A, &o)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect();
        assert_eq!(got, expected, "{o:?}");
    }

    #[test]
    fn list_honours_prefix_range_limit_and_reverse() {
        run_local(async {
            let s = Store::open(StoreOptions::default(), Rc::new(ImmediateCommits))
                .await
                .unwrap();
            for k in ["a", "b1", "b2", "b3", "c"] {
                s.put(&A, k.as_bytes(), k.as_bytes()).unwrap();
            }
            check(&s, opts(|_| {}), &["a", "b1", "b2", "b3", "c"]).await;
            check(
                &s,
                opts(|o| o.prefix = Some(b"b".to_vec())),
                &["b1", "b2", "b3"],
            )
            .await;
            check(
                &s,
                opts(|o| o.start = Some(b"b2".to_vec())),
                &["b2", "b3", "c"],
            )
            .await;
            check(
                &s,
                opts(|o| o.start_after = Some(b"b2".to_vec())),
                &["b3", "c"],
            )
            .await;
            check(&s, opts(|o| o.end = Some(b"b2".to_vec())), &["a", "b1"]).await;
            check(&s, opts(|o| o.limit = Some(2)), &["a", "b1"]).await;
            check(
                &s,
                opts(|o| (o.reverse, o.limit) = (true, Some(2))),
                &["c", "b3"],
            )
            .await;
            check(
                &s,
                opts(|o| (o.start, o.end) = (Some(b"c".to_vec()), Some(b"a".to_vec()))),
                &[],
            )
            .await;
            s.delete_all(&A).unwrap();
            check(&s, opts(|_| {}), &[]).await;
            assert!(s.objects(None, 10).is_empty());
        });
    }
}
