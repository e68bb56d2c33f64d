//! The data directory's top-level record of how it was created.
//!
//! **Invariant:** a data directory is only ever opened with the shard count it
//! was created with, because [`crate::id::shard_of`] decides which shard's log
//! holds an object; another count would route objects to logs that do not
//! hold them. Until a resharding tool exists, a mismatch is an error.
//!
//! The file `CAIRN-META` holds exactly:
//!
//! ```text
//! cairn-data-dir 1
//! shards <N>
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Name of the metadata file inside the data directory.
pub const META_FILE: &str = "CAIRN-META";
/// Version of the data-directory layout this engine writes and reads.
pub const LAYOUT_VERSION: u32 = 1;

/// Creates `dir` if needed and records `shards` in it, or checks that an
/// existing directory was created with the same count.
pub fn open_data_dir(dir: &Path, shards: u32) -> Result<(), DataDirError> {
    let path = dir.join(META_FILE);
    let io_err = |source: io::Error| DataDirError::Io {
        path: path.clone(),
        kind: source.kind(),
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (version, recorded) =
                parse_meta(&text).ok_or_else(|| DataDirError::Corrupt { path: path.clone() })?;
            if version != LAYOUT_VERSION {
                return Err(DataDirError::LayoutVersion {
                    path,
                    found: version,
                    supported: LAYOUT_VERSION,
                });
            }
            if recorded != shards {
                return Err(DataDirError::ShardCountMismatch {
                    dir: dir.to_path_buf(),
                    recorded,
                    requested: shards,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Write then rename, so a crash never leaves a half-written record.
            let tmp = dir.join(format!("{META_FILE}.tmp"));
            std::fs::write(
                &tmp,
                format!("cairn-data-dir {LAYOUT_VERSION}\nshards {shards}\n"),
            )
            .map_err(io_err)?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err)?;
            std::fs::rename(&tmp, &path).map_err(io_err)?;
            std::fs::File::open(dir)
                .and_then(|f| f.sync_all())
                .map_err(io_err)?;
            Ok(())
        }
        Err(e) => Err(io_err(e)),
    }
}

fn parse_meta(text: &str) -> Option<(u32, u32)> {
    let mut lines = text.lines();
    let version = lines
        .next()?
        .strip_prefix("cairn-data-dir ")?
        .parse()
        .ok()?;
    let shards = lines.next()?.strip_prefix("shards ")?.parse().ok()?;
    Some((version, shards))
}

/// Why the data directory cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataDirError {
    /// Created with another shard count.
    ShardCountMismatch {
        /// The data directory.
        dir: PathBuf,
        /// Count recorded at creation.
        recorded: u32,
        /// Count asked for now.
        requested: u32,
    },
    /// Written by a newer (or unknown) engine.
    LayoutVersion {
        /// The metadata file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version this engine supports.
        supported: u32,
    },
    /// The metadata file does not parse.
    Corrupt {
        /// The metadata file.
        path: PathBuf,
    },
    /// The file system refused.
    Io {
        /// The file involved.
        path: PathBuf,
        /// What went wrong.
        kind: io::ErrorKind,
    },
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirError::ShardCountMismatch {
                dir,
                recorded,
                requested,
            } => write!(
                f,
                "data directory {} was created with {recorded} shards but --shards is {requested}; \
                 start with --shards {recorded} (resharding is not supported yet)",
                dir.display()
            ),
            DataDirError::LayoutVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "{} has layout version {found}; this cairn supports {supported}",
                path.display()
            ),
            DataDirError::Corrupt { path } => {
                write!(
                    f,
                    "{} is not a cairn metadata file; was the directory used by something else?",
                    path.display()
                )
            }
            DataDirError::Io { path, kind } => write!(f, "{}: {kind}", path.display()),
        }
    }
}

impl std::error::Error for DataDirError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cairn-datadir-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn reopening_with_the_same_shard_count_succeeds() {
        let d = temp_dir("same");
        open_data_dir(&d, 4).unwrap();
        open_data_dir(&d, 4).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join(META_FILE)).unwrap(),
            "cairn-data-dir 1\nshards 4\n"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reopening_with_another_shard_count_is_a_clear_error() {
        let d = temp_dir("other");
        open_data_dir(&d, 4).unwrap();
        let e = open_data_dir(&d, 2).unwrap_err();
        assert!(matches!(
            e,
            DataDirError::ShardCountMismatch {
                recorded: 4,
                requested: 2,
                ..
            }
        ));
        assert!(e.to_string().contains("start with --shards 4"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unknown_layout_versions_and_garbage_are_refused() {
        let d = temp_dir("ver");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(META_FILE), "cairn-data-dir 2\nshards 4\n").unwrap();
        assert!(matches!(
            open_data_dir(&d, 4),
            Err(DataDirError::LayoutVersion { found: 2, .. })
        ));
        std::fs::write(d.join(META_FILE), "hello").unwrap();
        assert!(matches!(
            open_data_dir(&d, 4),
            Err(DataDirError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
