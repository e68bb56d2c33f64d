//! `cairn-storage`: one shard's log-structured key-value store.
//!
//! **What it is.** Per shard, an append-only log of numbered segment files plus a small
//! manifest. Every mutation (`put`, `delete`, `delete_all`, a [`Batch`]) becomes one record: a
//! fixed 32-byte header and an rkyv-archived body. Mutations apply to an in-memory ordered index
//! at once (read-your-writes) and return a [`Ticket`]; a group-commit loop writes everything that
//! accumulated with O_DIRECT on io_uring (glommio) and fdatasyncs once per group, then resolves
//! the group's tickets. Recovery scans the log, verifies checksums, cuts a torn tail and rebuilds
//! the index (reading and verifying on a helper thread one segment ahead; see `recovery.rs`).
//! Compaction reclaims the sealed segment with most garbage in the background and then writes
//! a checkpoint so a restart scans only the tail. The format is in
//! `docs/STORAGE-FORMAT.md`.
//!
//! **What it is not.** It knows nothing of HTTP, objects' names, shards other than its own, or
//! the engine. It is not `Send`: a [`Store`] lives on the glommio executor that opened it. It
//! does not do multi-shard transactions or resharding.
//!
//! **Invariants.**
//! - Acknowledged means durable: a ticket resolves `Ok` only after the fdatasync covering its
//!   group succeeded; tickets resolve in order (`store.rs`).
//! - A commit group (every mutation issued between two suspending `.await`s) is durable all or
//!   nothing across a crash: its last record carries `FLAG_GROUP_END`, and recovery applies a
//!   group only when that record is present and every record of it checks out (`recovery.rs`).
//! - No block holding acknowledged data is ever rewritten: each group starts on a fresh 4 KiB
//!   block (`format::BLOCK_SIZE`).
//! - Disk contents never reach an `assert!`; they are checked, and damage is an error value
//!   naming segment and offset. A failed write or fdatasync turns the store read-only for good.
//!
//! **Group-commit policy.** No timer and no size threshold: the loop takes everything that
//! accumulated while the previous write + fdatasync was in flight, so a lone write goes out at
//! once and groups grow with load (`StoreStats::group_records_max`). The knobs that shape it are
//! the disk's fdatasync latency, `segment_bytes`, and `segment_zero_fill` (see
//! `docs/STORAGE-FORMAT.md`).
//!
//! **Limits** (`StoreOptions`, each an error value, never a panic): `key_bytes_max` (2048),
//! `value_bytes_max` (128 KiB), `batch_keys_max` (128); `value_inline_bytes_max` (4096) decides
//! which values stay in memory.
//!
//! **Locked memory.** glommio registers io_uring buffers in locked memory and falls back to
//! unregistered buffers when `ulimit -l` is small; tests pass with the common 8 MiB default
//! (they ask for 1 MiB of io memory). glommio probes the io_uring poll ring on the first file it
//! opens per device; [`DmaDisk`] opens the non-empty manifest first so that the probe cannot be
//! fooled by an empty segment (which makes every read fail with EOPNOTSUPP on devices without
//! polled I/O).
//!
//! **Departures from the engine's API sketch.** `Store::open_with_disk` takes any [`Disk`] so
//! tests can use [`MemDisk`]; `Batch` is also how `put_many`/`delete_many` are expressed;
//! `Ticket::durable` is an `async fn`; `StorageError` has a `Closed` variant.

// Two `unsafe` blocks in the crate, each with its proof: `format::access_body_trusted` and the
// `posix_fadvise` call in `recovery::advise`.
#![deny(unsafe_code)]

mod checkpoint;
mod compaction;
mod error;
mod format;
mod index;
mod io;
mod options;
mod recovery;
mod store;

pub use error::{CommitError, OpenError, StorageError};
pub use format::{BLOCK_SIZE, FORMAT_VERSION, RECORD_HEADER_SIZE, segment_name};
pub use index::{ObjectId, Value, in_index_change};
pub use io::{Disk, DiskFile, DmaDisk, IoFuture, MemDisk};
pub use options::{ListOptions, StoreOptions};
pub use recovery::RecoveryReport;
pub use store::{Batch, Store, StoreStats, Ticket};
