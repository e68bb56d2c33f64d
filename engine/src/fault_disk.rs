//! Disk-fault injection for the end-to-end tests, compiled only with the
//! `test-hooks` feature: [`FaultDisk`] puts itself between a shard's log and
//! the real DMA disk and, while a trigger file says so, fails writes with
//! ENOSPC or fdatasyncs with EIO, as a full or failing disk would.
//!
//! The trigger is the file named by `CAIRN_TEST_FAULT_FILE` (unset: no
//! faults, and no check at all). Its content picks the fault: `enospc` or
//! `fdatasync`; absent or anything else means a healthy disk. A file, not a
//! route, so a test can break the disk under a running server without any
//! request of its own reaching it. Checking it is a blocking `read` on the
//! shard thread, acceptable in test builds only.

use std::io;
use std::path::PathBuf;
use std::rc::Rc;

use cairn_storage::{Disk, DiskFile, DmaDisk, IoFuture};

/// The fault in force now, per the trigger file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Enospc,
    Fdatasync,
}

fn trigger() -> Option<PathBuf> {
    std::env::var_os("CAIRN_TEST_FAULT_FILE").map(PathBuf::from)
}

fn fault(trigger: &Option<PathBuf>) -> Fault {
    let Some(path) = trigger else {
        return Fault::None;
    };
    match std::fs::read_to_string(path).as_deref().map(str::trim) {
        Ok("enospc") => Fault::Enospc,
        Ok("fdatasync") => Fault::Fdatasync,
        _ => Fault::None,
    }
}

/// A [`DmaDisk`] that fails on demand (see the module docs).
pub struct FaultDisk {
    inner: DmaDisk,
    trigger: Rc<Option<PathBuf>>,
}

impl FaultDisk {
    /// Wraps `inner`; faults follow `CAIRN_TEST_FAULT_FILE`.
    pub fn new(inner: DmaDisk) -> FaultDisk {
        FaultDisk {
            inner,
            trigger: Rc::new(trigger()),
        }
    }
}

struct FaultFile {
    inner: Rc<dyn DiskFile>,
    trigger: Rc<Option<PathBuf>>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl Disk for FaultDisk {
    fn open(&self, name: &str, create: bool) -> IoFuture<'_, Rc<dyn DiskFile>> {
        let name = name.to_string();
        Box::pin(async move {
            if create && fault(&self.trigger) == Fault::Enospc {
                return Err(enospc());
            }
            let inner = self.inner.open(&name, create).await?;
            Ok(Rc::new(FaultFile {
                inner,
                trigger: self.trigger.clone(),
            }) as Rc<dyn DiskFile>)
        })
    }

    fn list(&self) -> IoFuture<'_, Vec<String>> {
        self.inner.list()
    }

    fn remove(&self, name: &str) -> IoFuture<'_, ()> {
        self.inner.remove(name)
    }

    fn rename(&self, from: &str, to: &str) -> IoFuture<'_, ()> {
        self.inner.rename(from, to)
    }

    fn sync_dir(&self) -> IoFuture<'_, ()> {
        self.inner.sync_dir()
    }

    fn read_small(&self, name: &str) -> IoFuture<'_, Option<Vec<u8>>> {
        self.inner.read_small(name)
    }

    fn write_small_atomic(&self, name: &str, bytes: &[u8]) -> IoFuture<'_, ()> {
        if fault(&self.trigger) == Fault::Enospc {
            return Box::pin(async { Err(enospc()) });
        }
        self.inner.write_small_atomic(name, bytes)
    }
}

impl DiskFile for FaultFile {
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Vec<u8>> {
        self.inner.read_at(pos, len)
    }

    fn write_at(&self, pos: u64, data: &[u8]) -> IoFuture<'_, ()> {
        if fault(&self.trigger) == Fault::Enospc {
            return Box::pin(async { Err(enospc()) });
        }
        self.inner.write_at(pos, data)
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        if fault(&self.trigger) == Fault::Fdatasync {
            return Box::pin(async { Err(io::Error::from_raw_os_error(libc::EIO)) });
        }
        self.inner.fdatasync()
    }

    fn size(&self) -> IoFuture<'_, u64> {
        self.inner.size()
    }

    fn allocate(&self, len: u64) -> IoFuture<'_, ()> {
        if fault(&self.trigger) == Fault::Enospc {
            return Box::pin(async { Err(enospc()) });
        }
        self.inner.allocate(len)
    }
}
