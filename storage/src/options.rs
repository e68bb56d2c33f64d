//! Store configuration (limits and knobs, units last) and list options.

use crate::error::OpenError;

/// Configuration of one shard's store. Every field has a documented default (see `Default`).
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// This shard's number, recorded in the manifest; opening with another is an error.
    pub shard_id: u32,
    /// Number of shards, recorded in the manifest; opening with another is an error.
    pub shard_count: u32,
    /// Longest key accepted, in bytes. Default 2048.
    pub key_bytes_max: usize,
    /// Longest value accepted, in bytes. Default 131072 (128 KiB).
    pub value_bytes_max: usize,
    /// Most keys in one `Batch`. Default 128.
    pub batch_keys_max: usize,
    /// Values longer than this stay on disk once durable and are read with io_uring on demand;
    /// shorter ones stay in memory in their archived form. Default 4096.
    pub value_inline_bytes_max: usize,
    /// Target size of a segment file, in bytes; a segment is preallocated to this size and a new
    /// one starts when a group would not fit. Default 64 MiB.
    pub segment_bytes: u64,
    /// Write zeros over a segment before using it (default true). A preallocated but never
    /// written extent is "unwritten" to ext4/xfs, so every fdatasync after writing into it must
    /// also commit extent metadata through the journal; zero-filling once makes later O_DIRECT
    /// writes plain overwrites whose fdatasync is a device cache flush. The next segment is
    /// prepared in the background as `spare.log` so a roll does not wait for it.
    pub segment_zero_fill: bool,
    /// Compaction starts when dead bytes exceed this fraction of all segment bytes (and at least
    /// one full segment is dead). Default 0.5, which keeps disk use under 2x the live data plus
    /// about one segment.
    pub compaction_dead_ratio_min: f64,
    /// Compaction rewrites at most this many bytes per commit group, then waits for that group
    /// to be durable, so foreground commits never queue behind a large rewrite. Default 256 KiB.
    pub compaction_step_bytes: u64,
    /// Run compaction in the background. Default true.
    pub compaction_enabled: bool,
    /// On open, a corrupt record before the tail normally stops the open with
    /// [`OpenError::Corrupt`]. With this set, the log is cut at the corrupt record instead,
    /// losing it and everything after it. Default false.
    pub repair_truncate_corrupt: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            shard_id: 0,
            shard_count: 1,
            key_bytes_max: 2048,
            value_bytes_max: 128 * 1024,
            batch_keys_max: 128,
            value_inline_bytes_max: 4096,
            segment_bytes: 64 << 20,
            segment_zero_fill: true,
            compaction_dead_ratio_min: 0.5,
            compaction_step_bytes: 256 << 10,
            compaction_enabled: true,
            repair_truncate_corrupt: false,
        }
    }
}

impl StoreOptions {
    pub(crate) fn validate(&self) -> Result<(), OpenError> {
        let bad = |detail| Err(OpenError::BadOptions { detail });
        if self.shard_count == 0 || self.shard_id >= self.shard_count {
            return bad("shard_id must be below shard_count");
        }
        if self.key_bytes_max == 0 || self.batch_keys_max == 0 {
            return bad("key_bytes_max and batch_keys_max must be positive");
        }
        if self.segment_bytes < 64 * 1024 || !self.segment_bytes.is_multiple_of(4096) {
            return bad("segment_bytes must be a multiple of 4096 and at least 64 KiB");
        }
        if !(self.compaction_dead_ratio_min > 0.0 && self.compaction_dead_ratio_min < 1.0) {
            return bad("compaction_dead_ratio_min must be between 0 and 1");
        }
        Ok(())
    }
}

/// Which keys `Store::list` returns. All bounds combine (intersection).
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only keys starting with these bytes.
    pub prefix: Option<Vec<u8>>,
    /// Only keys `>=` this (inclusive).
    pub start: Option<Vec<u8>>,
    /// Only keys `>` this (exclusive); combines with `start`.
    pub start_after: Option<Vec<u8>>,
    /// Only keys `<` this (exclusive).
    pub end: Option<Vec<u8>>,
    /// At most this many entries.
    pub limit: Option<usize>,
    /// Descending key order instead of ascending; `limit` then counts from the highest key.
    pub reverse: bool,
}
