//! The store: operations, commit tickets, and the group-commit loop.
//!
//! INVARIANT (commit groups): a mutation joins the group that is open when it is issued; the
//! group-commit loop closes the open group only when it runs, and it runs only when the
//! executor switches tasks, i.e. at an `.await` that suspends. So every mutation issued between
//! two suspending awaits lands in one group, and a group is one contiguous durable write
//! (`DiskFile::write_durable_at`: on disk an `RWF_DSYNC` write, elsewhere a write followed by one
//! fdatasync), marked complete by `FLAG_GROUP_END` on its last record: durable all or nothing.
//!
//! INVARIANT (tickets): a ticket of group `g` resolves `Ok` only after the durable write of `g`
//! (the fdatasync covering it) returned success; groups are written strictly one after another, so tickets resolve in
//! order. A failed write or fdatasync fails group `g` and every later group, and the store turns
//! read-only for good: a failed fdatasync is never retried (the kernel may have dropped the dirty
//! pages, so a later "success" would prove nothing).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Instant;

use crate::checkpoint;
use crate::error::{CommitError, OpenError, StorageError};
use crate::format::{
    self, BLOCK_SIZE, Body, FLAG_GROUP_END, Header, KIND_OPS, OP_DELETE, OP_DELETE_ALL, OP_PUT, Op,
    RECORD_HEADER_SIZE, align_up, record_size,
};
use crate::index::{
    Index, Loc, LocRef, ObjectId, PACKED_VALUE_MAX, RecordBuf, SEG_PENDING, Value, entry_bytes,
    prefix_successor,
};
use crate::io::{Disk, DiskFile, DmaDisk};
use crate::options::{ListOptions, StoreOptions};
use crate::recovery::{self, RecoveryReport, SegBytes, SegEnd, SegScan};

/// The read and scan of one segment during recovery, `None` past the last segment.
type ScanFuture = Option<glommio::Task<std::io::Result<(SegBytes, SegScan)>>>;

/// Lets every other ready task of this executor run once.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// Counters and gauges of one store.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    /// Mutation calls accepted (put, delete, commit, delete_all).
    pub commits: u64,
    /// Commit groups written.
    pub groups: u64,
    /// Successful group syncs: durable writes of a commit group (an `RWF_DSYNC` write on disk, a
    /// write and an fdatasync elsewhere).
    pub fdatasyncs: u64,
    /// Records written.
    pub records_written: u64,
    /// Bytes written to segments (padding included).
    pub bytes_written: u64,
    /// Largest group, in records.
    pub group_records_max: u64,
    /// Sum of group sync latencies (each group's whole durable write), in nanoseconds (divide
    /// by `fdatasyncs` for the mean).
    pub fdatasync_ns_total: u64,
    /// Slowest group sync, in nanoseconds.
    pub fdatasync_ns_max: u64,
    /// Bytes of segments holding live entries (approximate: key + value + 64 per entry).
    pub bytes_live: u64,
    /// Bytes of segments holding superseded data.
    pub bytes_dead: u64,
    /// Segment files.
    pub segments: u32,
    /// Segments reclaimed by compaction.
    pub segments_compacted: u64,
    /// Checkpoints written (by compaction, `close`, or `Store::write_checkpoint`).
    pub checkpoints_written: u64,
    /// Segments that started as the zero-filled spare (the rest were made at the roll).
    pub segments_from_spare: u64,
    /// Why the store is read-only, if it is.
    pub read_only: Option<String>,
    /// Heap bytes the in-memory index holds (an estimate kept up to date by every change; see
    /// `docs/STORAGE-FORMAT.md`, "Memory"). Also [`Store::index_bytes`].
    pub index_bytes: u64,
    /// Objects in the index (objects with at least one key).
    pub index_objects: u64,
    /// What recovery found at open.
    pub recovery: RecoveryReport,
}

struct Seg {
    file: Rc<dyn DiskFile>,
    written: u64,
    live: u64,
    /// Delete operations written to it (see `RecordBuf::tombstones`).
    tombstones: u64,
}

pub(crate) struct State {
    opts: StoreOptions,
    index: Index,
    segs: BTreeMap<u32, Seg>,
    active: u32,
    write_pos: u64,
    next_seq: u64,
    /// Sequence number of the record that will sit at `write_pos` (`next_seq` runs ahead of it
    /// while a group is being written).
    write_pos_seq: u64,
    pending: Vec<Rc<RecordBuf>>,
    /// Group that new mutations join.
    open_group: u64,
    /// Highest group whose fdatasync succeeded.
    durable_group: u64,
    /// First failed group and why.
    failed: Option<(u64, String)>,
    ticket_wakers: Vec<Waker>,
    loop_waker: Option<Waker>,
    compact_waker: Option<Waker>,
    /// A zero-filled file ready to become the next segment (`spare.log`).
    spare: Option<Rc<dyn DiskFile>>,
    spare_pending: bool,
    closed: bool,
    loop_running: bool,
    stats: StoreStats,
    /// The commit loop's group buffer, kept between groups: allocating one per group left
    /// holes the size of a group in the heap, which the index's small, long-lived buffers then
    /// split, so the next group's buffer needed fresh memory (measured: half the heap free).
    group_buf: Vec<u8>,
}

pub(crate) type InnerHandle = Inner;

pub(crate) struct Inner {
    disk: Rc<dyn Disk>,
    state: RefCell<State>,
}

/// One shard's store. A cheap `Clone` handle; `!Send`: use it only on the glommio executor that
/// opened it (the group-commit and compaction tasks run there).
#[derive(Clone)]
pub struct Store {
    inner: Rc<Inner>,
}

/// A commit ticket: resolves when the group holding its mutation is durable.
#[must_use = "a write is not durable until its ticket resolves"]
pub struct Ticket {
    inner: Rc<Inner>,
    group: u64,
}

/// A clone refers to the same group: either may be awaited or asked
/// [`Ticket::is_durable`].
impl Clone for Ticket {
    fn clone(&self) -> Self {
        Ticket {
            inner: self.inner.clone(),
            group: self.group,
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("group", &self.group)
            .finish()
    }
}

impl Ticket {
    /// The commit group's number: groups become durable in increasing order,
    /// and every mutation of one group has the same number.
    pub fn group(&self) -> u64 {
        self.group
    }

    /// True once the group holding this mutation has been fdatasynced.
    pub fn is_durable(&self) -> bool {
        self.inner.state.borrow().durable_group >= self.group
    }

    /// Resolves once the group holding this mutation has been fdatasynced, or fails if the write
    /// or fdatasync of that group (or of an earlier one) failed.
    pub async fn durable(self) -> Result<(), CommitError> {
        std::future::poll_fn(|cx| {
            let mut st = self.inner.state.borrow_mut();
            if st.durable_group >= self.group {
                return Poll::Ready(Ok(()));
            }
            if let Some((g, reason)) = &st.failed
                && self.group >= *g
            {
                return Poll::Ready(Err(CommitError {
                    reason: reason.clone(),
                }));
            }
            st.ticket_wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// An atomic batch of mutations: all of them become durable together or none do.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, obj: &ObjectId, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push(Op {
            obj: *obj,
            code: OP_PUT,
            key: key.to_vec(),
            value: value.to_vec(),
        });
        self
    }

    /// Adds a put of a key and value the caller already owns (no copy).
    pub fn put_owned(&mut self, obj: &ObjectId, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op {
            obj: *obj,
            code: OP_PUT,
            key,
            value,
        });
        self
    }

    /// Adds a delete of one key the caller already owns (no copy).
    pub fn delete_owned(&mut self, obj: &ObjectId, key: Vec<u8>) -> &mut Self {
        self.ops.push(Op {
            obj: *obj,
            code: OP_DELETE,
            key,
            value: Vec::new(),
        });
        self
    }

    /// Adds a delete of one key.
    pub fn delete(&mut self, obj: &ObjectId, key: &[u8]) -> &mut Self {
        self.ops.push(Op {
            obj: *obj,
            code: OP_DELETE,
            key: key.to_vec(),
            value: Vec::new(),
        });
        self
    }

    /// Adds a delete of every key of an object.
    pub fn delete_all(&mut self, obj: &ObjectId) -> &mut Self {
        self.ops.push(Op {
            obj: *obj,
            code: OP_DELETE_ALL,
            key: Vec::new(),
            value: Vec::new(),
        });
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn io_reason(what: &str, e: &std::io::Error) -> String {
    format!("{what} failed: {e}")
}

impl Store {
    /// Opens (creating if empty) the store in `dir` with glommio DMA I/O, recovering its contents.
    /// Must be called on a glommio executor.
    pub async fn open(dir: &Path, opts: StoreOptions) -> Result<Store, OpenError> {
        let disk = DmaDisk::new(dir)?;
        Store::open_with_disk(Rc::new(disk), opts).await
    }

    /// Opens a store on any [`Disk`] (tests use [`crate::MemDisk`]).
    pub async fn open_with_disk(
        disk: Rc<dyn Disk>,
        opts: StoreOptions,
    ) -> Result<Store, OpenError> {
        opts.validate()?;
        check_manifest(&*disk, &opts).await?;
        let mut ids: Vec<u32> = disk
            .list()
            .await?
            .iter()
            .filter_map(|n| format::parse_segment_name(n))
            .collect();
        ids.sort_unstable();
        let (ckpt, checkpoint_ignored) = match load_checkpoint(&*disk, &ids).await? {
            Ok(c) => (Some(c), None),
            Err(why) => (None, why),
        };
        // Segments wholly before the checkpoint's tail are not scanned, only opened for reads.
        let mut before = Vec::new();
        if let Some(c) = &ckpt {
            for &id in ids.iter().filter(|&&id| id < c.tail_seg) {
                before.push((id, disk.open(&format::segment_name(id), false).await?));
            }
            ids.retain(|&id| id >= c.tail_seg);
        }
        let mut files = Vec::new();
        for &id in &ids {
            files.push(disk.open(&format::segment_name(id), false).await?);
        }
        let st = State {
            opts: opts.clone(),
            index: Index::default(),
            segs: BTreeMap::new(),
            active: 0,
            write_pos: 0,
            next_seq: 1,
            write_pos_seq: 1,
            pending: Vec::new(),
            open_group: 1,
            durable_group: 0,
            failed: None,
            ticket_wakers: Vec::new(),
            loop_waker: None,
            compact_waker: None,
            spare: None,
            spare_pending: false,
            closed: false,
            loop_running: false,
            stats: StoreStats::default(),
            group_buf: Vec::new(),
        };
        let inner = Rc::new(Inner {
            disk: disk.clone(),
            state: RefCell::new(st),
        });
        let mut report = RecoveryReport {
            checkpoint_ignored,
            ..RecoveryReport::default()
        };
        let mut next_seq = ckpt.as_ref().map(|c| c.next_seq);
        let start_offset = ckpt.as_ref().map_or(0, |c| c.tail_off as usize);
        {
            let mut st = inner.state.borrow_mut();
            let new_seg = |file| Seg {
                file,
                written: 0,
                live: 0,
                tombstones: 0,
            };
            for (id, file) in before
                .into_iter()
                .chain(ids.iter().copied().zip(files.iter().cloned()))
            {
                st.segs.insert(id, new_seg(file));
            }
            if let Some(c) = ckpt {
                report.checkpoint_entries = Some(c.entries.len() as u64);
                for (id, written, live, tombstones) in c.segs {
                    if let Some(s) = st.segs.get_mut(&id) {
                        s.written = written;
                        s.live = live;
                        s.tombstones = tombstones;
                    }
                }
                for (obj, key, loc) in c.entries {
                    st.index.put(&obj, &key, loc);
                }
            }
        }
        // Segment `i + 1` is read and verified (on glommio's blocking thread pool when the disk
        // is a real directory) while this thread applies segment `i` to the index. On damage,
        // read ahead only as far as needed to tell a torn tail from corruption.
        let mut cut = (0usize, 0u64);
        let scan_one = |i: usize, start: usize, expect: Option<u64>| -> ScanFuture {
            let &id = ids.get(i)?;
            if let Some(path) = disk.local_path(&format::segment_name(id)) {
                let next = ids
                    .get(i + 1)
                    .and_then(|&n| disk.local_path(&format::segment_name(n)));
                return Some(glommio::spawn_local(async move {
                    glommio::executor()
                        .spawn_blocking(move || {
                            recovery::read_and_scan(&path, next.as_deref(), start, expect)
                        })
                        .await
                }));
            }
            let file = files[i].clone();
            Some(glommio::spawn_local(async move {
                let mut bytes = SegBytes::new();
                bytes.extend_from_slice(&read_whole(&*file).await?);
                let scan = recovery::scan_segment(&bytes, start, expect);
                Ok((bytes, scan))
            }))
        };
        let mut next = scan_one(0, start_offset, next_seq);
        for (i, &id) in ids.iter().enumerate() {
            let (bytes, mut scan) = next
                .take()
                .expect("a read was started for every segment")
                .await?;
            // The next segment's scan cannot know where the sequence stands; it is checked here.
            next = scan_one(i + 1, 0, None);
            // Let the new task hand its job to the helper thread before this one is busy.
            yield_now().await;
            // Segments are numbered without reuse: a gap is a segment compaction removed.
            let exact = i == 0 || ids[i - 1] + 1 == id;
            scan.check_continues(next_seq, exact);
            let start = if i == 0 { start_offset } else { 0 };
            report.segments += 1;
            report.bytes_scanned += bytes.len().saturating_sub(start) as u64;
            report.records += scan.records.len() as u64;
            report.groups += scan.groups;
            if scan.next_seq.is_some() {
                next_seq = scan.next_seq;
            }
            {
                let mut st = inner.state.borrow_mut();
                let st = &mut *st;
                let inline_max = st.opts.value_inline_bytes_max;
                let written: u64 = scan
                    .records
                    .iter()
                    .map(|r| record_size(r.body.len()) as u64)
                    .sum();
                let tombstones: u64 = scan.records.iter().map(|r| u64::from(r.tombstones)).sum();
                if let Some(s) = st.segs.get_mut(&id) {
                    s.written += written;
                    s.tombstones += tombstones;
                }
                for r in scan.records {
                    let rec = Rc::new(RecordBuf {
                        put_bytes: r.put_bytes,
                        // Recovery indexes large values straight to their disk location.
                        has_large: false,
                        tombstones: r.tombstones,
                        body: r.body,
                        seg: std::cell::Cell::new(id),
                        body_off: std::cell::Cell::new(r.body_off),
                        dead_bytes: std::cell::Cell::new(0),
                    });
                    apply_record(&mut st.segs, &mut st.index, inline_max, &rec);
                }
            }
            let end = scan.end;
            let (damage, group_start, group_seq) = match end {
                SegEnd::Clean { offset } => {
                    cut = (i, offset);
                    continue;
                }
                SegEnd::Damaged {
                    damage,
                    group_start,
                    group_seq,
                } => (damage, group_start, group_seq),
            };
            let mut later = recovery::valid_group_in(&bytes, group_start + 1, group_seq);
            for f in &files[i + 1..] {
                if later {
                    break;
                }
                later = recovery::valid_group_in(&read_whole(&**f).await?, 0, group_seq);
            }
            let torn = !later;
            if !torn && !opts.repair_truncate_corrupt {
                return Err(OpenError::Corrupt {
                    segment: id,
                    offset: damage.offset,
                    expected_crc: damage.expected_crc,
                    actual_crc: damage.actual_crc,
                });
            }
            // Cut at the group start, not at the damaged record inside it.
            let from = group_start.min(bytes.len());
            let dirty = recovery::dirty_end(&bytes, from);
            if torn {
                report.torn_tail = Some((id, from as u64, (dirty - from) as u64));
            } else {
                report.repaired_corruption = Some((id, damage.offset));
            }
            if dirty > from {
                // Leftovers of the torn group must not pass for data after the next crash.
                files[i]
                    .write_at(from as u64, &vec![0u8; dirty - from])
                    .await?;
                files[i].fdatasync().await?;
            }
            cut = (i, from as u64);
            break;
        }
        drop(next);
        let (cut_index, cut_offset) = cut;
        // Segments after the cut hold no valid group (or, with repair, what we chose to drop).
        for &id in ids.iter().skip(cut_index + 1) {
            inner.state.borrow_mut().segs.remove(&id);
            disk.remove(&format::segment_name(id)).await?;
        }
        if ids.len() > cut_index + 1 {
            disk.sync_dir().await?;
        }
        {
            let mut st = inner.state.borrow_mut();
            st.next_seq = next_seq.unwrap_or(1);
            st.write_pos_seq = st.next_seq;
            st.stats.recovery = report;
            if let Some(&id) = ids.get(cut_index) {
                st.active = id;
                st.write_pos = align_up(cut_offset as usize, BLOCK_SIZE as usize) as u64;
            }
        }
        if ids.is_empty() {
            let seg = new_segment(&inner, 1).await.map_err(OpenError::Io)?;
            let mut st = inner.state.borrow_mut();
            st.segs.insert(1, seg);
            st.active = 1;
            st.write_pos = 0;
        }
        inner.state.borrow_mut().loop_running = true;
        glommio::spawn_local(commit_loop(Rc::downgrade(&inner))).detach();
        // A spare left by an earlier run may be half zero-filled; it is made afresh when needed.
        if disk.list().await?.iter().any(|n| n == SPARE_NAME) {
            disk.remove(SPARE_NAME).await?;
        }
        if opts.compaction_enabled {
            glommio::spawn_local(crate::compaction::compaction_loop(Rc::downgrade(&inner)))
                .detach();
        }
        Ok(Store { inner })
    }

    fn check_key(&self, opts: &StoreOptions, key: &[u8]) -> Result<(), StorageError> {
        if key.len() > opts.key_bytes_max {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                max: opts.key_bytes_max,
            });
        }
        Ok(())
    }

    /// Reads one key. Sees every mutation issued so far, durable or not.
    pub async fn get(&self, obj: &ObjectId, key: &[u8]) -> Result<Option<Value>, StorageError> {
        let loc = self.inner.state.borrow().index.get(obj, key);
        match loc {
            None => Ok(None),
            Some(loc) => self.inner.load(loc).await.map(Some),
        }
    }

    /// Reads several keys, in the order given.
    pub async fn get_many(
        &self,
        obj: &ObjectId,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Value>>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(obj, k).await?);
        }
        Ok(out)
    }

    /// Sets a key. The value is visible to reads at once; durable when the ticket resolves.
    pub fn put(&self, obj: &ObjectId, key: &[u8], value: &[u8]) -> Result<Ticket, StorageError> {
        let mut b = Batch::new();
        b.put(obj, key, value);
        self.commit(b)
    }

    /// Deletes a key, reporting whether it existed.
    pub fn delete(&self, obj: &ObjectId, key: &[u8]) -> Result<(Ticket, bool), StorageError> {
        let existed = self.inner.state.borrow().index.seg_of(obj, key).is_some();
        let mut b = Batch::new();
        b.delete(obj, key);
        Ok((self.commit(b)?, existed))
    }

    /// Deletes every key of an object.
    pub fn delete_all(&self, obj: &ObjectId) -> Result<Ticket, StorageError> {
        let mut b = Batch::new();
        b.delete_all(obj);
        self.commit(b)
    }

    /// Applies a batch atomically (this is `put_many` / `delete_many`).
    pub fn commit(&self, batch: Batch) -> Result<Ticket, StorageError> {
        let inner = &self.inner;
        {
            let st = inner.state.borrow();
            let opts = &st.opts;
            if batch.ops.len() > opts.batch_keys_max {
                return Err(StorageError::BatchTooLarge {
                    keys: batch.ops.len(),
                    max: opts.batch_keys_max,
                });
            }
            for op in &batch.ops {
                self.check_key(opts, &op.key)?;
                if op.value.len() > opts.value_bytes_max {
                    return Err(StorageError::ValueTooLarge {
                        len: op.value.len(),
                        max: opts.value_bytes_max,
                    });
                }
            }
            if let Some((_, reason)) = &st.failed {
                return Err(StorageError::ReadOnly {
                    reason: reason.clone(),
                });
            }
            if st.closed {
                return Err(StorageError::Closed);
            }
        }
        Ok(inner.mutate(batch.ops))
    }

    /// Lists an object's keys in order within the bounds of `opts`.
    pub async fn list(
        &self,
        obj: &ObjectId,
        opts: &ListOptions,
    ) -> Result<Vec<(Vec<u8>, Value)>, StorageError> {
        let locs = self.inner.state.borrow().list_locs(obj, opts);
        let mut out = Vec::with_capacity(locs.len());
        for (k, loc) in locs {
            out.push((k, self.inner.load(loc).await?));
        }
        Ok(out)
    }

    /// Object IDs that have at least one key, in ascending order, strictly after `after`.
    pub fn objects(&self, after: Option<&ObjectId>, limit: usize) -> Vec<ObjectId> {
        self.inner.state.borrow().index.objects_after(after, limit)
    }

    /// Resolves once every mutation issued so far is durable.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let t = self.inner.last_ticket();
        t.durable()
            .await
            .map_err(|e| StorageError::ReadOnly { reason: e.reason })
    }

    /// Makes everything durable and stops the background tasks. Further mutations fail with
    /// `StorageError::Closed`; reads keep working on remaining handles.
    pub async fn close(self) -> Result<(), StorageError> {
        self.sync().await?;
        {
            let mut st = self.inner.state.borrow_mut();
            st.closed = true;
            wake(&mut st.compact_waker);
        }
        // Mutations are refused from here on; this waits for anything issued before.
        self.sync().await?;
        wake(&mut self.inner.state.borrow_mut().loop_waker);
        write_checkpoint(&self.inner).await
    }

    /// Writes a checkpoint (hint file) of the index as it is now, so that the next open loads it
    /// and scans only the log written after this call. Compaction calls it after reclaiming a
    /// segment and `close` at the end; it is also safe to call at any time.
    pub async fn write_checkpoint(&self) -> Result<(), StorageError> {
        write_checkpoint(&self.inner).await
    }

    /// Counters, gauges, and the read-only reason if any.
    pub fn stats(&self) -> StoreStats {
        let st = self.inner.state.borrow();
        let mut s = st.stats.clone();
        s.segments = st.segs.len() as u32;
        let written: u64 = st.segs.values().map(|s| s.written).sum();
        s.bytes_live = st.segs.values().map(|s| s.live).sum();
        s.bytes_dead = written.saturating_sub(s.bytes_live);
        s.read_only = st.failed.as_ref().map(|(_, r)| r.clone());
        s.index_bytes = st.index.bytes();
        s.index_objects = st.index.objects.len() as u64;
        s
    }

    /// Heap bytes the in-memory index holds: every key of every object, the values kept in
    /// memory (small ones packed beside their keys) and its own structure; an estimate of what
    /// the allocator holds for it, kept up to date by every change (O(1) to ask).
    pub fn index_bytes(&self) -> u64 {
        self.inner.state.borrow().index.bytes()
    }
}

/// Snapshots the index and writes it as the checkpoint once everything in the snapshot is
/// durable. The snapshot may include mutations not yet durable (they are applied to the index
/// at once); its tail is where they will be written, so the next open replays them again from
/// the log, which is harmless (replaying a record over its own effect changes nothing). Written
/// only after they are durable, so a checkpoint never holds a write the log may lose.
async fn write_checkpoint(inner: &Rc<Inner>) -> Result<(), StorageError> {
    let (snapshot, ticket) = {
        let st = inner.state.borrow();
        (st.checkpoint(), inner.last_ticket())
    };
    ticket
        .durable()
        .await
        .map_err(|e| StorageError::ReadOnly { reason: e.reason })?;
    let bytes = checkpoint::encode(&snapshot);
    drop(snapshot);
    inner
        .disk
        .write_small_atomic(checkpoint::CHECKPOINT_NAME, &bytes)
        .await
        .map_err(|e| StorageError::io("writing the checkpoint", &e))?;
    inner.state.borrow_mut().stats.checkpoints_written += 1;
    Ok(())
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

async fn check_manifest(disk: &dyn Disk, opts: &StoreOptions) -> Result<(), OpenError> {
    match disk.read_small(format::MANIFEST_NAME).await? {
        None => {
            let names = disk.list().await?;
            if names
                .iter()
                .any(|n| n != &format!("{}.tmp", format::MANIFEST_NAME))
            {
                return Err(OpenError::ForeignDirectory {
                    dir: format!("{names:?}"),
                });
            }
            let m = format::encode_manifest(opts.shard_id, opts.shard_count);
            disk.write_small_atomic(format::MANIFEST_NAME, &m).await?;
            Ok(())
        }
        Some(bytes) => {
            let m = format::decode_manifest(&bytes)
                .map_err(|detail| OpenError::BadManifest { detail })?;
            if m.version != format::FORMAT_VERSION {
                return Err(OpenError::IncompatibleVersion {
                    found: m.version,
                    supported: format::FORMAT_VERSION,
                });
            }
            if (m.shard_id, m.shard_count) != (opts.shard_id, opts.shard_count) {
                return Err(OpenError::ShardMismatch {
                    found: (m.shard_id, m.shard_count),
                    expected: (opts.shard_id, opts.shard_count),
                });
            }
            Ok(())
        }
    }
}

/// Loads and then deletes the checkpoint, if there is a usable one. A checkpoint naming a
/// segment that is not on disk is ignored (a full scan is always correct).
/// Returns the checkpoint, or why it was ignored.
async fn load_checkpoint(
    disk: &dyn Disk,
    ids: &[u32],
) -> Result<Result<checkpoint::Checkpoint, Option<String>>, OpenError> {
    let Some(bytes) = disk.read_small(checkpoint::CHECKPOINT_NAME).await? else {
        return Ok(Err(None));
    };
    // Deleted before anything else happens: compaction may remove segments it refers to.
    disk.remove(checkpoint::CHECKPOINT_NAME).await?;
    disk.sync_dir().await?;
    let Some(c) = checkpoint::decode(&bytes) else {
        return Ok(Err(Some(format!(
            "checkpoint of {} bytes is torn, damaged or of another layout",
            bytes.len()
        ))));
    };
    let known = |seg: u32| ids.binary_search(&seg).is_ok();
    let missing = std::iter::once(c.tail_seg)
        .chain(c.entries.iter().filter_map(|(_, _, l)| match l {
            Loc::Disk { seg, .. } => Some(*seg),
            Loc::Mem(_) => None,
        }))
        .find(|&seg| !known(seg));
    match missing {
        Some(seg) => Ok(Err(Some(format!(
            "checkpoint refers to segment {seg}, which compaction has removed since"
        )))),
        None => Ok(Ok(c)),
    }
}

async fn read_whole(f: &dyn DiskFile) -> std::io::Result<Vec<u8>> {
    let len = f.size().await?;
    f.read_at(0, len as usize).await
}

/// Name of the segment prepared ahead of need.
const SPARE_NAME: &str = "spare.log";

/// Creates, sizes and (with `segment_zero_fill`) zero-fills a file, then fdatasyncs it.
async fn prepare_file(inner: &Inner, name: &str) -> std::io::Result<Rc<dyn DiskFile>> {
    let (size, zero_fill) = {
        let st = inner.state.borrow();
        (st.opts.segment_bytes, st.opts.segment_zero_fill)
    };
    let file = inner.disk.open(name, true).await?;
    file.allocate(size).await?;
    if zero_fill {
        let chunk = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < size {
            let n = (size - at).min(chunk.len() as u64) as usize;
            file.write_at(at, &chunk[..n]).await?;
            at += n as u64;
        }
        file.fdatasync().await?;
    }
    Ok(file)
}

/// Makes segment `id` from the spare if one is ready, else from scratch.
async fn new_segment(inner: &Inner, id: u32) -> std::io::Result<Seg> {
    let name = format::segment_name(id);
    let spare = inner.state.borrow_mut().spare.take();
    let file = match spare {
        Some(file) => {
            inner.disk.rename(SPARE_NAME, &name).await?;
            inner.state.borrow_mut().stats.segments_from_spare += 1;
            file
        }
        None => prepare_file(inner, &name).await?,
    };
    // The new file's directory entry must be durable before any group in it is acknowledged.
    inner.disk.sync_dir().await?;
    Ok(Seg {
        file,
        written: 0,
        live: 0,
        tombstones: 0,
    })
}

/// Prepares `spare.log` in the background so that the next roll only renames it.
async fn prepare_spare(weak: Weak<Inner>) {
    let Some(inner) = weak.upgrade() else { return };
    {
        let mut st = inner.state.borrow_mut();
        // Without zero-filling a new segment is cheap to make on the spot; no spare needed.
        if st.spare.is_some() || st.spare_pending || st.closed || !st.opts.segment_zero_fill {
            return;
        }
        st.spare_pending = true;
    }
    let made = prepare_file(&inner, SPARE_NAME).await;
    let mut st = inner.state.borrow_mut();
    st.spare_pending = false;
    // A failure here is not a commit failure: the next roll simply makes its segment itself.
    if let Ok(file) = made {
        st.spare = Some(file);
    }
}

/// Applies a record's operations to an index and the live-byte accounting of `segs`.
fn apply_record(
    segs: &mut BTreeMap<u32, Seg>,
    index: &mut Index,
    inline_max: usize,
    rec: &Rc<RecordBuf>,
) {
    // Records reaching here were validated (recovery) or produced by us (mutate).
    let body = format::access_body_trusted(&rec.body);
    let base = rec.body.as_ptr() as usize;
    let seg = rec.seg.get();
    for op in body.ops.iter() {
        let obj: ObjectId = op.obj;
        let key = op.key.as_slice();
        match op.code {
            OP_PUT => {
                let v = op.value.as_slice();
                let start = v.as_ptr() as usize - base;
                let loc = if seg != SEG_PENDING && v.len() > inline_max {
                    Loc::Disk {
                        seg,
                        off: rec.body_off.get() + start as u64,
                        len: v.len() as u32,
                    }
                } else {
                    Loc::Mem(Value::in_record(rec.clone(), start..start + v.len()))
                };
                // Charged before the old entry is discharged: both may be in this segment.
                if seg != SEG_PENDING
                    && let Some(s) = segs.get_mut(&seg)
                {
                    s.live += entry_bytes(key.len(), v.len());
                }
                if let Some(old) = index.put(&obj, key, loc) {
                    charge_dead(segs, key.len(), &old);
                }
            }
            OP_DELETE => {
                if let Some(old) = index.delete(&obj, key) {
                    charge_dead(segs, key.len(), &old);
                }
            }
            OP_DELETE_ALL => {
                for (k, old) in index.delete_all(&obj).into_iter().flatten() {
                    charge_dead(segs, k.len(), &old);
                }
            }
            _ => {}
        }
    }
}

fn charge_dead(segs: &mut BTreeMap<u32, Seg>, key_len: usize, loc: &Loc) {
    let bytes = entry_bytes(key_len, loc.value_len());
    match loc.seg() {
        SEG_PENDING => {
            if let Loc::Mem(v) = loc
                && let Some(r) = v.record()
            {
                r.dead_bytes.set(r.dead_bytes.get() + bytes);
            }
        }
        seg => {
            if let Some(s) = segs.get_mut(&seg) {
                s.live = s.live.saturating_sub(bytes);
            }
        }
    }
}

impl State {
    /// A snapshot of the index for the checkpoint, tail at the current write position (see
    /// `write_checkpoint` for why pending writes may be included).
    fn checkpoint(&self) -> checkpoint::Checkpoint {
        let mut entries = Vec::new();
        for (obj, map) in &self.index.objects {
            for (k, l) in map.iter() {
                let loc = match l {
                    // Not yet written: the checkpoint must record it as "after the tail" even
                    // though it is encoded after its group has become durable (and its record
                    // then names a segment), or the replay would discharge the live bytes it
                    // charges, leaving that segment's count short.
                    LocRef::Full(Loc::Mem(v)) if v.seg() == SEG_PENDING => {
                        Loc::Mem(Value::loaded(v.to_vec(), SEG_PENDING))
                    }
                    l => l.to_loc(),
                };
                entries.push((obj.0, k.to_vec(), loc));
            }
        }
        checkpoint::Checkpoint {
            tail_seg: self.active,
            tail_off: self.write_pos,
            next_seq: self.write_pos_seq,
            segs: self
                .segs
                .iter()
                .map(|(id, s)| (*id, s.written, s.live, s.tombstones))
                .collect(),
            entries,
        }
    }

    fn list_locs(&self, obj: &ObjectId, o: &ListOptions) -> Vec<(Vec<u8>, Loc)> {
        let Some(map) = self.index.objects.get(&crate::index::IdKey(*obj)) else {
            return Vec::new();
        };
        let mut lower: Bound<Vec<u8>> = Bound::Unbounded;
        let mut upper: Bound<Vec<u8>> = Bound::Unbounded;
        let raise = |lower: &mut Bound<Vec<u8>>, b: Bound<Vec<u8>>| {
            let tighter = match (&*lower, &b) {
                (Bound::Unbounded, _) => true,
                (Bound::Included(a) | Bound::Excluded(a), Bound::Included(n)) => n > a,
                (Bound::Included(a), Bound::Excluded(n)) => n >= a,
                (Bound::Excluded(a), Bound::Excluded(n)) => n > a,
                (_, Bound::Unbounded) => false,
            };
            if tighter {
                *lower = b;
            }
        };
        let lower_it = |lower: &mut Bound<Vec<u8>>, b: Bound<Vec<u8>>| raise(lower, b);
        if let Some(p) = &o.prefix {
            lower_it(&mut lower, Bound::Included(p.clone()));
            if let Some(s) = prefix_successor(p) {
                upper = Bound::Excluded(s);
            }
        }
        if let Some(s) = &o.start {
            lower_it(&mut lower, Bound::Included(s.clone()));
        }
        if let Some(s) = &o.start_after {
            lower_it(&mut lower, Bound::Excluded(s.clone()));
        }
        if let Some(e) = &o.end {
            let tighter = match &upper {
                Bound::Excluded(u) => e < u,
                _ => true,
            };
            if tighter {
                upper = Bound::Excluded(e.clone());
            }
        }
        // An empty or inverted range would make BTreeMap::range panic; answer it here.
        let empty = match (&lower, &upper) {
            (Bound::Included(l), Bound::Excluded(u)) | (Bound::Excluded(l), Bound::Excluded(u)) => {
                l >= u
            }
            _ => false,
        };
        if empty {
            return Vec::new();
        }
        let limit = o.limit.unwrap_or(usize::MAX);
        let range = map.range((as_slice_bound(&lower), as_slice_bound(&upper)));
        let pick = |(k, l): (&[u8], LocRef<'_>)| (k.to_vec(), l.to_loc());
        if o.reverse {
            range.rev().take(limit).map(pick).collect()
        } else {
            range.take(limit).map(pick).collect()
        }
    }
}

fn as_slice_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Inner {
    /// Archives the operations into one record, applies it to the index and queues it.
    pub(crate) fn mutate(self: &Rc<Self>, ops: Vec<Op>) -> Ticket {
        let inline_max = self.state.borrow().opts.value_inline_bytes_max;
        let puts = ops.iter().filter(|o| o.code == OP_PUT);
        let put_bytes = puts
            .clone()
            .map(|o| entry_bytes(o.key.len(), o.value.len()))
            .sum();
        let has_large = puts.clone().any(|o| o.value.len() > inline_max);
        let tombstones = ops.iter().filter(|o| o.code != OP_PUT).count() as u32;
        let rec = Rc::new(RecordBuf {
            body: format::encode_body(&Body { ops }),
            seg: std::cell::Cell::new(SEG_PENDING),
            body_off: std::cell::Cell::new(0),
            dead_bytes: std::cell::Cell::new(0),
            put_bytes,
            has_large,
            tombstones,
        });
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        apply_record(&mut st.segs, &mut st.index, inline_max, &rec);
        st.pending.push(rec);
        st.stats.commits += 1;
        wake(&mut st.loop_waker);
        Ticket {
            inner: self.clone(),
            group: st.open_group,
        }
    }

    /// A ticket that resolves when everything issued so far is durable.
    pub(crate) fn last_ticket(self: &Rc<Self>) -> Ticket {
        let st = self.state.borrow();
        let group = if st.pending.is_empty() {
            st.open_group - 1
        } else {
            st.open_group
        };
        Ticket {
            inner: self.clone(),
            group,
        }
    }

    /// Reads a value from wherever it lives.
    pub(crate) async fn load(&self, loc: Loc) -> Result<Value, StorageError> {
        match loc {
            Loc::Mem(v) => Ok(v),
            Loc::Disk { seg, off, len } => {
                let file = self.state.borrow().segs.get(&seg).map(|s| s.file.clone());
                let Some(file) = file else {
                    return Err(StorageError::Io {
                        op: "read",
                        kind: std::io::ErrorKind::NotFound,
                        message: format!("segment {seg} is gone"),
                    });
                };
                let bytes = file
                    .read_at(off, len as usize)
                    .await
                    .map_err(|e| StorageError::io("read", &e))?;
                if bytes.len() != len as usize {
                    return Err(StorageError::Io {
                        op: "read",
                        kind: std::io::ErrorKind::UnexpectedEof,
                        message: format!("short read in segment {seg} at {off}"),
                    });
                }
                Ok(Value::plain(bytes))
            }
        }
    }

    pub(crate) fn state(&self) -> &RefCell<State> {
        &self.state
    }
}

/// Waits until there is something to write (or the store closed).
/// Taking the records closes their group: mutations from now on get the next group number, so
/// a ticket is never resolved by a group that does not hold its record.
async fn next_group(inner: &Inner) -> Option<(u64, Vec<Rc<RecordBuf>>)> {
    std::future::poll_fn(|cx| {
        let mut st = inner.state.borrow_mut();
        if !st.pending.is_empty() {
            let g = st.open_group;
            st.open_group += 1;
            return Poll::Ready(Some((g, std::mem::take(&mut st.pending))));
        }
        if st.closed || st.failed.is_some() {
            return Poll::Ready(None);
        }
        st.loop_waker = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// The group-commit loop: takes everything that accumulated while the previous group was being
/// written and synced, writes it as one group, fdatasyncs once, then releases its tickets. Under
/// load groups grow by themselves; when idle a lone write goes out at once.
async fn commit_loop(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let Some((g, records)) = next_group(&inner).await else {
            inner.state.borrow_mut().loop_running = false;
            return;
        };
        if let Err(reason) = write_group(&inner, g, &records).await {
            let mut st = inner.state.borrow_mut();
            st.failed = Some((g, reason));
            st.loop_running = false;
            for w in st.ticket_wakers.drain(..) {
                w.wake();
            }
            wake(&mut st.compact_waker);
            return;
        }
    }
}

async fn write_group(inner: &Rc<Inner>, g: u64, records: &[Rc<RecordBuf>]) -> Result<(), String> {
    // Lay out the group: headers now (sequence numbers are assigned in write order).
    let (buf, seq0) = {
        let mut st = inner.state.borrow_mut();
        let seq0 = st.next_seq;
        let total: usize = records.iter().map(|r| record_size(r.body.len())).sum();
        let mut buf = std::mem::take(&mut st.group_buf);
        buf.clear();
        buf.resize(align_up(total, BLOCK_SIZE as usize), 0);
        let mut pos = 0;
        for (i, r) in records.iter().enumerate() {
            let h = Header {
                body_len: r.body.len() as u32,
                seq: seq0 + i as u64,
                group_seq: seq0,
                body_crc: crc32c::crc32c(&r.body),
                kind: KIND_OPS,
                flags: if i + 1 == records.len() {
                    FLAG_GROUP_END
                } else {
                    0
                },
            };
            h.encode(&mut buf[pos..pos + RECORD_HEADER_SIZE]);
            buf[pos + RECORD_HEADER_SIZE..pos + RECORD_HEADER_SIZE + r.body.len()]
                .copy_from_slice(&r.body);
            pos += record_size(r.body.len());
        }
        st.next_seq += records.len() as u64;
        (buf, seq0)
    };
    let need_roll = {
        let st = inner.state.borrow();
        st.write_pos > 0 && st.write_pos + buf.len() as u64 > st.opts.segment_bytes
    };
    if need_roll {
        let id = inner.state.borrow().active + 1;
        // A spare still being zero-filled is not used; the roll makes its own file.
        if inner.state.borrow().spare_pending {
            inner.state.borrow_mut().spare = None;
        }
        let seg = new_segment(inner, id)
            .await
            .map_err(|e| io_reason("creating a segment", &e))?;
        let mut st = inner.state.borrow_mut();
        st.segs.insert(id, seg);
        st.active = id;
        st.write_pos = 0;
    }
    let (file, pos, seg_id) = {
        let st = inner.state.borrow();
        (st.segs[&st.active].file.clone(), st.write_pos, st.active)
    };
    // One durable write (on disk: an RWF_DSYNC write, so no separate fdatasync trip through the
    // shard), timed whole: the sync's latency is what the `fdatasync_ns` statistics report.
    let t0 = Instant::now();
    file.write_durable_at(pos, &buf)
        .await
        .map_err(|e| io_reason("durable write (write + fdatasync)", &e))?;
    let ns = t0.elapsed().as_nanos() as u64;
    let mut st = inner.state.borrow_mut();
    assert_eq!(
        st.write_pos, pos,
        "only the commit loop moves the write position"
    );
    st.write_pos = pos + buf.len() as u64;
    st.write_pos_seq = seq0 + records.len() as u64;
    let inline_max = st.opts.value_inline_bytes_max;
    let mut off = pos;
    let mut live = 0;
    let mut tombstones = 0;
    for r in records {
        tombstones += u64::from(r.tombstones);
        r.seg.set(seg_id);
        r.body_off.set(off + RECORD_HEADER_SIZE as u64);
        off += record_size(r.body.len()) as u64;
        live += r.put_bytes.saturating_sub(r.dead_bytes.get());
        if r.has_large {
            spill_large_values(&mut st, r, inline_max);
        }
        repack_small_values(&mut st, r);
    }
    let seg = st.segs.get_mut(&seg_id).expect("active segment exists");
    seg.written += buf.len() as u64;
    seg.live += live;
    seg.tombstones += tombstones;
    assert_eq!(
        st.durable_group + 1,
        g,
        "groups become durable one after another"
    );
    st.durable_group = g;
    // Zero-filling competes with commits for the disk, so the spare is made only once the
    // active segment is half full: early enough to be ready, late enough not to be wasted.
    let want_spare = st.opts.segment_zero_fill
        && st.spare.is_none()
        && !st.spare_pending
        && st.write_pos > st.opts.segment_bytes / 2;

    let s = &mut st.stats;
    s.groups += 1;
    s.fdatasyncs += 1;
    s.records_written += records.len() as u64;
    s.bytes_written += buf.len() as u64;
    s.group_records_max = s.group_records_max.max(records.len() as u64);
    s.fdatasync_ns_total += ns;
    s.fdatasync_ns_max = s.fdatasync_ns_max.max(ns);
    // Kept for the next group unless it grew past a large group's size.
    if buf.capacity() <= GROUP_BUF_KEEP_MAX {
        st.group_buf = buf;
    }
    for w in st.ticket_wakers.drain(..) {
        w.wake();
    }
    wake(&mut st.compact_waker);
    drop(st);
    // After the borrow ends: glommio may poll a new task before `spawn_local` returns.
    if want_spare {
        glommio::spawn_local(prepare_spare(Rc::downgrade(inner))).detach();
    }
    Ok(())
}

/// Once durable, large values leave memory: their index entries point at the disk instead.
fn spill_large_values(st: &mut State, r: &Rc<RecordBuf>, inline_max: usize) {
    let body = format::access_body_trusted(&r.body);
    for op in body
        .ops
        .iter()
        .filter(|o| o.code == OP_PUT && o.value.len() > inline_max)
    {
        let obj: ObjectId = op.obj;
        let key = op.key.as_slice();
        if let Some(Loc::Mem(v)) = st.index.get(&obj, key)
            && v.record().is_some_and(|vr| Rc::ptr_eq(vr, r))
        {
            let range = v.range();
            let disk = Loc::Disk {
                seg: r.seg.get(),
                off: r.body_off.get() + range.start as u64,
                len: range.len() as u32,
            };
            st.index.put(&obj, key, disk);
        }
    }
}

/// Largest group buffer kept between groups (`State::group_buf`).
const GROUP_BUF_KEEP_MAX: usize = 4 << 20;

/// Once durable, small values leave their record: the objects they belong to are packed
/// (`index::KeyMap`), which copies them, so the record is freed once nothing else holds it.
fn repack_small_values(st: &mut State, r: &Rc<RecordBuf>) {
    let body = format::access_body_trusted(&r.body);
    for op in body
        .ops
        .iter()
        .filter(|o| o.code == OP_PUT && o.value.len() <= PACKED_VALUE_MAX)
    {
        st.index.repack(&op.obj);
    }
}

/// Internal access for compaction.
pub(crate) mod internal {
    use super::*;

    /// Live entries stored in segment `seg`.
    pub(crate) fn entries_in(inner: &Inner, seg: u32) -> Vec<(ObjectId, Vec<u8>, Loc)> {
        let st = inner.state().borrow();
        let mut out = Vec::new();
        for (obj, map) in &st.index.objects {
            for (k, l) in map.iter() {
                if l.seg() == seg {
                    out.push((obj.0, k.to_vec(), l.to_loc()));
                }
            }
        }
        out
    }

    /// The segment to compact now, if any: when dead bytes exceed `compaction_dead_ratio_min`
    /// of all bytes, the sealed segment with the largest share of dead bytes among those that
    /// may go (the oldest, or one without tombstones: `compaction.rs` says why); if none of
    /// those is above the ratio itself, the oldest, as the disk-use bound needs.
    pub(crate) fn pick_victim(inner: &Inner) -> Option<u32> {
        let st = inner.state().borrow();
        if st.failed.is_some() || st.closed {
            return None;
        }
        let written: u64 = st.segs.values().map(|s| s.written).sum();
        let live: u64 = st.segs.values().map(|s| s.live).sum();
        let dead = written.saturating_sub(live);
        let ratio = st.opts.compaction_dead_ratio_min;
        if dead as f64 <= ratio * written as f64 {
            return None;
        }
        let (&oldest, _) = st.segs.iter().next()?;
        let dead_share =
            |s: &Seg| s.written.saturating_sub(s.live) as f64 / s.written.max(1) as f64;
        let best = st
            .segs
            .iter()
            .filter(|(id, s)| **id != st.active && (**id == oldest || s.tombstones == 0))
            .map(|(id, s)| (dead_share(s), *id))
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        // The oldest is rewritten although it has little garbage only when it stands in the way
        // of a segment full of garbage that holds tombstones. Otherwise every sealed segment is
        // at most `ratio` dead, which already bounds disk use (live / (1 - ratio) + the active).
        let blocked = st
            .segs
            .iter()
            .any(|(id, s)| *id != st.active && s.tombstones > 0 && dead_share(s) > ratio);
        match best {
            Some((share, id)) if share > ratio => Some(id),
            _ => (oldest != st.active && blocked).then_some(oldest),
        }
    }

    /// Writes a checkpoint of the index as it is now (`Store::write_checkpoint`).
    pub(crate) async fn checkpoint_now(inner: &Rc<Inner>) -> Result<(), StorageError> {
        write_checkpoint(inner).await
    }

    /// True if the entry still lives where compaction found it.
    pub(crate) fn still_at(inner: &Inner, obj: &ObjectId, key: &[u8], seg: u32) -> bool {
        inner
            .state()
            .borrow()
            .index
            .seg_of(obj, key)
            .is_some_and(|s| s == seg)
    }

    pub(crate) fn step_bytes(inner: &Inner) -> u64 {
        inner.state().borrow().opts.compaction_step_bytes
    }

    pub(crate) fn is_stopped(inner: &Inner) -> bool {
        let st = inner.state().borrow();
        st.closed || st.failed.is_some()
    }

    pub(crate) async fn remove_segment(inner: &Inner, seg: u32) -> std::io::Result<()> {
        {
            let mut st = inner.state().borrow_mut();
            st.segs.remove(&seg);
            st.stats.segments_compacted += 1;
        }
        inner.disk.remove(&format::segment_name(seg)).await?;
        inner.disk.sync_dir().await
    }

    pub(crate) async fn wait_for_work(inner: &Inner) {
        let mut first = true;
        std::future::poll_fn(|cx| {
            if !first {
                return Poll::Ready(());
            }
            first = false;
            inner.state().borrow_mut().compact_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
