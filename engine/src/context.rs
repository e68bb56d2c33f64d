//! What a handler can reach: its object's identity, storage (the Durable
//! Objects KV API), alarms, its WebSockets, the output-gate opt-out, and stubs
//! to call other objects.
//!
//! **Atomicity:** storage writes return as soon as they are applied in memory
//! (later reads see them). Every write made without an intervening suspending
//! `.await` lands in one commit group and so becomes durable atomically; a
//! handler that needs a precondition to hold across an `.await` must re-check
//! it after the `.await`. Durability is not awaited here but at the output
//! gate (`host.rs`), which holds the handler's response until it is durable.
//!
//! **Namespacing:** user keys are stored behind [`NS_USER`]; the engine's own
//! metadata (alarm time, class, name) behind [`NS_META`], so no user key can
//! collide with it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::host::{HostInner, ObjectState, Target};
use crate::id::{ObjectId, id_from_name};
use crate::object::{Request, Response};
use crate::retry::RetryPolicy;
use crate::store::{Batch, ListOptions, StorageError, Value};
use crate::ws::{SocketId, WebSockets};

/// Namespace byte in front of every user key.
pub const NS_USER: u8 = 0x01;
/// Namespace byte in front of engine metadata keys.
pub const NS_META: u8 = 0x00;
/// Metadata key: the pending alarm, as 8 bytes big-endian ms since the Unix epoch.
pub const META_ALARM: &[u8] = &[NS_META, b'a'];
/// Metadata key: the object's class name (UTF-8).
pub const META_CLASS: &[u8] = &[NS_META, b'c'];
/// Metadata key: the object's name, if it was addressed by name.
pub const META_NAME: &[u8] = &[NS_META, b'n'];

fn user_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(NS_USER);
    k.extend_from_slice(key);
    k
}

/// The handler's view of the engine during one event.
pub struct Context {
    pub(crate) host: Rc<HostInner>,
    pub(crate) obj: Rc<ObjectState>,
    pub(crate) unconfirmed: Cell<bool>,
    /// The socket a WebSocket upgrade `fetch` may accept.
    pub(crate) upgrade: Cell<Option<SocketId>>,
    /// A `block_concurrency_while` failed: the object is reset after this event.
    pub(crate) reset: Cell<bool>,
}

/// Why [`Context::block_concurrency_while`] gave up. Either way the object is
/// reset once the current event ends: its in-memory state is dropped and the
/// next event starts from storage on a fresh instance.
#[derive(Debug)]
pub enum BlockError<E> {
    /// The work returned this error.
    Failed(E),
    /// The work did not finish within the limit; it was dropped (cancelled)
    /// at its last suspension point.
    TimedOut {
        /// The limit, in milliseconds.
        limit_ms: u64,
    },
}

impl<E: std::fmt::Display> std::fmt::Display for BlockError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockError::Failed(e) => write!(f, "{e}"),
            BlockError::TimedOut { limit_ms } => write!(f, "timed out after {limit_ms} ms"),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for BlockError<E> {}

impl Context {
    /// This object's ID.
    pub fn id(&self) -> ObjectId {
        self.obj.target.id
    }

    /// This object's name, if it was addressed by name rather than by ID.
    pub fn name(&self) -> Option<&[u8]> {
        self.obj.target.name.as_deref()
    }

    /// This object's class.
    pub fn class(&self) -> &str {
        &self.obj.target.class
    }

    /// The shard this object lives on (always `shard_of(id, shard_count)`).
    pub fn shard_id(&self) -> u32 {
        self.host.cfg.shard_id
    }

    /// This object's storage.
    pub fn storage(&self) -> Storage<'_> {
        Storage { ctx: self }
    }

    /// This object's WebSockets: accept an upgrade, list, send, broadcast,
    /// close, attachments (see `ws.rs`).
    pub fn websockets(&self) -> WebSockets<'_> {
        WebSockets { ctx: self }
    }

    /// Releases this event's response without waiting for its writes to be
    /// durable (the output gate's opt-out). Responses of later events still
    /// wait for every write made before them.
    pub fn allow_unconfirmed(&self) {
        self.unconfirmed.set(true);
    }

    /// Runs `work` with the input gate held, bounded by `limit`: the
    /// Durable Objects `blockConcurrencyWhile`, for initialisation and other
    /// work no event may observe half done. If `work` fails or outlasts
    /// `limit` the object is reset after this event (see [`BlockError`]).
    ///
    /// Cairn's gate already holds every event for its whole duration (events
    /// of one object never interleave, even across awaits), so no event can
    /// start inside `work` with or without this call; what it adds is the
    /// bound and the reset. `Object::init` runs under it with
    /// `init_timeout_ms`.
    pub async fn block_concurrency_while<T, E>(
        &self,
        limit: std::time::Duration,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, BlockError<E>> {
        let mut work = std::pin::pin!(work);
        let started = std::time::Instant::now();
        // The timer is made only if the work suspends: an init that finishes
        // in its first poll (the common case) costs no timer. A limit too far
        // away to be a point in time (`Duration::MAX`) means no timer at all.
        let mut timer: Option<Option<glommio::timer::Timer>> = None;
        let done = std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(r) = work.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(r));
            }
            let t = timer.get_or_insert_with(|| {
                let left = limit.saturating_sub(started.elapsed());
                std::time::Instant::now()
                    .checked_add(left)
                    .map(|_| glommio::timer::Timer::new(left))
            });
            match t {
                Some(t) => std::pin::Pin::new(t).poll(cx).map(|_| None),
                None => std::task::Poll::Pending,
            }
        })
        .await;
        let err = match done {
            Some(Ok(v)) => return Ok(v),
            Some(Err(e)) => BlockError::Failed(e),
            None => BlockError::TimedOut {
                limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            },
        };
        self.reset.set(true);
        Err(err)
    }

    /// A stub for the object `name` of class `class`.
    pub fn stub(&self, class: &str, name: &[u8]) -> Stub {
        Stub {
            host: self.host.clone(),
            target: Target {
                class: class.into(),
                id: id_from_name(class, name),
                name: Some(name.to_vec()),
            },
        }
    }

    /// A stub for the object with ID `id` of class `class`.
    pub fn stub_for_id(&self, class: &str, id: ObjectId) -> Stub {
        Stub {
            host: self.host.clone(),
            target: Target {
                class: class.into(),
                id,
                name: None,
            },
        }
    }

    /// Schedules the alarm at `at_ms` (ms since the Unix epoch), replacing any
    /// pending one. Stored durably; re-armed after a restart.
    pub fn set_alarm(&self, at_ms: u64) -> Result<(), StorageError> {
        self.write_meta_once()?;
        let t = self
            .host
            .store
            .put(self.id().as_bytes(), META_ALARM, &at_ms.to_be_bytes())?;
        self.obj.note_write(t);
        self.host.schedule_alarm(&self.obj.target, at_ms, 0);
        Ok(())
    }

    /// The pending alarm time, if any.
    pub async fn get_alarm(&self) -> Result<Option<u64>, StorageError> {
        let v = self
            .host
            .store
            .get(self.id().as_bytes(), META_ALARM)
            .await?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map(u64::from_be_bytes))
    }

    /// Cancels the pending alarm, if any.
    pub fn delete_alarm(&self) -> Result<(), StorageError> {
        let (t, _) = self.host.store.delete(self.id().as_bytes(), META_ALARM)?;
        self.obj.note_write(t);
        self.host.unschedule_alarm(&self.id());
        Ok(())
    }

    /// Records class and name the first time this activation writes, in the same
    /// commit group as the write, so an object with data can be re-created (for
    /// its alarm) after a restart.
    fn write_meta_once(&self) -> Result<(), StorageError> {
        if self.obj.meta_written.get() {
            return Ok(());
        }
        let id = self.id();
        let mut b = Batch::new();
        b.put(id.as_bytes(), META_CLASS, self.class().as_bytes());
        if let Some(name) = self.name() {
            b.put(id.as_bytes(), META_NAME, name);
        }
        let t = self.host.store.commit(b)?;
        self.obj.note_write(t);
        self.obj.meta_written.set(true);
        Ok(())
    }
}

/// The Durable Objects storage API for one object.
pub struct Storage<'a> {
    ctx: &'a Context,
}

impl<'a> Storage<'a> {
    fn id(&self) -> [u8; 32] {
        *self.ctx.id().as_bytes()
    }

    fn check_key(&self, key: &[u8]) -> Result<(), StorageError> {
        let max = self.ctx.host.cfg.key_bytes_max;
        if key.len() > max {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_batch(&self, keys: usize) -> Result<(), StorageError> {
        let max = self.ctx.host.cfg.batch_keys_max;
        if keys > max {
            return Err(StorageError::BatchTooLarge { keys, max });
        }
        Ok(())
    }

    /// The value of `key`, including writes not yet durable.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        self.check_key(key)?;
        self.ctx.host.store.get(&self.id(), &user_key(key)).await
    }

    /// The values of up to 128 keys, in order.
    pub async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Value>>, StorageError> {
        self.check_batch(keys.len())?;
        let full: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| self.check_key(k).map(|()| user_key(k)))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&[u8]> = full.iter().map(Vec::as_slice).collect();
        self.ctx.host.store.get_many(&self.id(), &refs).await
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.put_many(&[(key, value)])
    }

    /// Stores up to 128 entries atomically.
    pub fn put_many(&self, entries: &[(&[u8], &[u8])]) -> Result<(), StorageError> {
        self.check_batch(entries.len())?;
        let mut b = Batch::new();
        let id = self.id();
        for (k, v) in entries {
            self.check_key(k)?;
            b.put_owned_key(&id, user_key(k), v);
        }
        self.commit(b)
    }

    /// Deletes `key`; says whether it existed.
    pub fn delete(&self, key: &[u8]) -> Result<bool, StorageError> {
        self.check_key(key)?;
        self.ctx.write_meta_once()?;
        let (t, existed) = self.ctx.host.store.delete(&self.id(), &user_key(key))?;
        self.ctx.obj.note_write(t);
        Ok(existed)
    }

    /// Deletes up to 128 keys atomically; returns how many existed.
    pub async fn delete_many(&self, keys: &[&[u8]]) -> Result<usize, StorageError> {
        let existing = self
            .get_many(keys)
            .await?
            .iter()
            .filter(|v| v.is_some())
            .count();
        // The count above and the delete below are separated by an await only in
        // the read; re-reading is not needed because this object is the only
        // writer of its keys and it is inside this handler.
        let mut b = Batch::new();
        for k in keys {
            b.delete(&self.id(), &user_key(k));
        }
        self.commit(b)?;
        Ok(existing)
    }

    /// Entries selected by `opts` (keys are the user's, without the namespace).
    pub async fn list(&self, opts: &ListOptions) -> Result<Vec<(Vec<u8>, Value)>, StorageError> {
        let ns = |k: &Option<Vec<u8>>| k.as_deref().map(user_key);
        let inner = ListOptions {
            prefix: Some(ns(&opts.prefix).unwrap_or_else(|| vec![NS_USER])),
            start: ns(&opts.start),
            start_after: ns(&opts.start_after),
            // With no end, stop at the namespace's end so metadata never leaks.
            end: Some(ns(&opts.end).unwrap_or_else(|| vec![NS_USER + 1])),
            limit: opts.limit,
            reverse: opts.reverse,
        };
        let mut out = self.ctx.host.store.list(&self.id(), &inner).await?;
        for (k, _) in &mut out {
            k.remove(0);
        }
        Ok(out)
    }

    /// Deletes everything the object stores, including its pending alarm.
    pub fn delete_all(&self) -> Result<(), StorageError> {
        let t = self.ctx.host.store.delete_all(&self.id())?;
        self.ctx.obj.note_write(t);
        self.ctx.obj.meta_written.set(false);
        self.ctx.host.unschedule_alarm(&self.ctx.id());
        Ok(())
    }

    /// Starts a transaction: its writes are buffered, visible to its own reads,
    /// and applied as one atomic batch by [`Transaction::commit`]; dropping it
    /// without committing discards them.
    pub fn transaction(&self) -> Transaction<'a> {
        Transaction {
            storage: Storage { ctx: self.ctx },
            writes: RefCell::new(BTreeMap::new()),
        }
    }

    /// Resolves once every write made so far is durable.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let last = self.ctx.obj.last_ticket.borrow().clone();
        match last {
            Some(t) => t.durable().await.map_err(StorageError::from),
            None => Ok(()),
        }
    }

    fn commit(&self, b: Batch) -> Result<(), StorageError> {
        self.ctx.write_meta_once()?;
        let t = self.ctx.host.store.commit(b)?;
        self.ctx.obj.note_write(t);
        Ok(())
    }
}

/// A buffered, atomic set of writes; see [`Storage::transaction`].
pub struct Transaction<'a> {
    storage: Storage<'a>,
    writes: RefCell<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl Transaction<'_> {
    /// The value of `key` as this transaction sees it.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        if let Some(w) = self.writes.borrow().get(key) {
            return Ok(w.as_ref().map(|v| Value::copy_from_slice(v)));
        }
        self.storage.get(key).await
    }

    /// Buffers a put.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.storage.check_key(key)?;
        self.writes
            .borrow_mut()
            .insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    /// Buffers a delete.
    pub fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.storage.check_key(key)?;
        self.writes.borrow_mut().insert(key.to_vec(), None);
        Ok(())
    }

    /// Applies every buffered write as one atomic batch.
    pub fn commit(self) -> Result<(), StorageError> {
        let writes = self.writes.into_inner();
        self.storage.check_batch(writes.len())?;
        let id = self.storage.id();
        let mut b = Batch::new();
        for (k, v) in &writes {
            match v {
                Some(v) => b.put_owned_key(&id, user_key(k), v),
                None => b.delete(&id, &user_key(k)),
            };
        }
        self.storage.commit(b)
    }
}

/// A handle for calling another object, wherever it lives.
pub struct Stub {
    host: Rc<HostInner>,
    target: Target,
}

impl Stub {
    /// The target object's ID.
    pub fn id(&self) -> ObjectId {
        self.target.id
    }

    /// Sends `req` to the object and waits for its response. A call that cycles
    /// back to an object already handling an event waits behind that event
    /// (input gate) and so never completes: callers must not build cycles.
    pub async fn fetch(&self, req: Request) -> Response {
        HostInner::call(&self.host, self.target.clone(), req).await
    }

    /// Like [`Stub::fetch`], but retries answers
    /// [`RetryPolicy::is_retryable`] accepts, with exponential backoff and full
    /// jitter, within `policy`'s attempts and time budget; returns the last
    /// answer. **Only for requests that are safe to repeat** (see
    /// [`crate::retry`]): an attempt that failed may still have taken effect.
    pub async fn fetch_with_retry(&self, req: Request, policy: &RetryPolicy) -> Response {
        let mut spent = 0u64;
        let mut retry = 0;
        loop {
            let resp = self.fetch(req.clone()).await;
            if !RetryPolicy::is_retryable(&resp) || retry + 1 >= policy.attempts_max {
                return resp;
            }
            let delay = policy.delay_ms(retry, crate::retry::jitter_rand());
            if spent + delay > policy.budget_ms {
                return resp;
            }
            spent += delay;
            retry += 1;
            glommio::timer::sleep(std::time::Duration::from_millis(delay)).await;
        }
    }
}
