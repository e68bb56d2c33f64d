//! Error types, one per layer: opening a store, operating on it, and a commit that failed.

use std::fmt;
use std::io;

/// Why a store could not be opened. Nothing on disk is changed when one of these is returned,
/// except that a torn tail may already have been zeroed (which loses nothing acknowledged).
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The directory holds files but no Cairn manifest: it is not ours, so we refuse to touch it.
    ForeignDirectory {
        /// The directory.
        dir: String,
    },
    /// The manifest is unreadable (bad magic or checksum).
    BadManifest {
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The data was written by another on-disk format version.
    IncompatibleVersion {
        /// The version found in the manifest.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The directory belongs to another shard, or to a cluster with another shard count.
    ShardMismatch {
        /// `(shard_id, shard_count)` recorded in the manifest.
        found: (u32, u32),
        /// `(shard_id, shard_count)` asked for.
        expected: (u32, u32),
    },
    /// A record before the tail of the log failed its checksum. Open with
    /// `StoreOptions::repair_truncate_corrupt = true` to cut the log there (losing what follows).
    Corrupt {
        /// Segment file number.
        segment: u32,
        /// Byte offset of the damaged record inside the segment.
        offset: u64,
        /// Checksum stored on disk.
        expected_crc: u32,
        /// Checksum computed over the bytes read.
        actual_crc: u32,
    },
    /// The options are inconsistent (a limit of zero, for instance).
    BadOptions {
        /// What is wrong.
        detail: &'static str,
    },
    /// The disk failed while reading or preparing the directory.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::ForeignDirectory { dir } => write!(
                f,
                "{dir} holds files but no Cairn manifest; refusing to use it (point the shard at an empty directory)"
            ),
            OpenError::BadManifest { detail } => {
                write!(
                    f,
                    "the store manifest is damaged ({detail}); restore it from a backup"
                )
            }
            OpenError::IncompatibleVersion { found, supported } => write!(
                f,
                "on-disk format version {found} cannot be opened by this build (it supports version {supported})"
            ),
            OpenError::ShardMismatch { found, expected } => write!(
                f,
                "directory belongs to shard {}/{} but was opened as shard {}/{}; resharding needs a tool",
                found.0, found.1, expected.0, expected.1
            ),
            OpenError::Corrupt {
                segment,
                offset,
                expected_crc,
                actual_crc,
            } => write!(
                f,
                "corrupt record in segment {segment} at offset {offset} (stored crc {expected_crc:#010x}, \
                 computed {actual_crc:#010x}); open with repair_truncate_corrupt to cut the log there"
            ),
            OpenError::BadOptions { detail } => write!(f, "invalid store options: {detail}"),
            OpenError::Io(e) => write!(f, "disk error while opening the store: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Why an operation on an open store failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StorageError {
    /// A key is longer than `StoreOptions::key_bytes_max`.
    KeyTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A value is longer than `StoreOptions::value_bytes_max`.
    ValueTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A batch holds more keys than `StoreOptions::batch_keys_max`.
    BatchTooLarge {
        /// Keys in the batch.
        keys: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A disk failure made the store read-only; reads still work. Restart the shard once the disk
    /// is healthy: recovery keeps everything that was acknowledged.
    ReadOnly {
        /// What failed.
        reason: String,
    },
    /// A read from disk failed.
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The OS error kind.
        kind: io::ErrorKind,
        /// The OS error text.
        message: String,
    },
    /// The store was closed.
    Closed,
}

impl StorageError {
    pub(crate) fn io(op: &'static str, e: &io::Error) -> Self {
        StorageError::Io {
            op,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::KeyTooLarge { len, max } => {
                write!(
                    f,
                    "key of {len} bytes exceeds the limit of {max} bytes (key_bytes_max)"
                )
            }
            StorageError::ValueTooLarge { len, max } => {
                write!(
                    f,
                    "value of {len} bytes exceeds the limit of {max} bytes (value_bytes_max)"
                )
            }
            StorageError::BatchTooLarge { keys, max } => {
                write!(
                    f,
                    "batch of {keys} keys exceeds the limit of {max} keys (batch_keys_max); split it"
                )
            }
            StorageError::ReadOnly { reason } => write!(
                f,
                "store is read-only after a disk failure ({reason}); fix the disk and restart the shard"
            ),
            StorageError::Io { op, message, .. } => write!(f, "disk error during {op}: {message}"),
            StorageError::Closed => write!(f, "the store is closed"),
        }
    }
}

impl std::error::Error for StorageError {}

/// Why a ticket did not become durable. The writes it covers may or may not be on disk; the
/// store is read-only from then on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitError {
    /// What failed (the write, the fdatasync, or the disk being full).
    pub reason: String,
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "commit failed, the write is not durable: {}",
            self.reason
        )
    }
}

impl std::error::Error for CommitError {}
