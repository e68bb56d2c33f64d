//! The narrow I/O interface storage uses, so tests can model "written" versus "durable".
//!
//! [`DmaDisk`] is the production implementation: glommio `DmaFile` (O_DIRECT on io_uring).
//! [`MemDisk`] keeps a `live` and a `durable` image of every file and can fail an fdatasync,
//! run out of space, or "lose power" (keep only what was fdatasynced); crash-consistency tests
//! run against it in milliseconds.
//!
//! Contract for `write_at`: offsets and lengths are multiples of `BLOCK_SIZE`. Small metadata
//! files (manifest) go through `read_small`/`write_small_atomic`, which are whole-file
//! operations that are durable when they return.
//!
//! Thread-per-core: `DmaDisk` does data I/O on io_uring, and every blocking file-system call
//! (listing, remove, rename, directory fsync, the manifest and checkpoint files) on glommio's
//! blocking thread pool, so none stalls the shard's executor. What remains on the shard thread
//! is `create_dir_all` in `DmaDisk::new` and one `stat` of the manifest per file open (open and
//! segment rolls only).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use crate::format::BLOCK_SIZE;

/// A boxed, non-`Send` I/O future: the store lives on one executor thread.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = io::Result<T>> + 'a>>;

/// A directory of files. One per store.
pub trait Disk {
    /// Opens (or with `create`, creates) a data file.
    fn open(&self, name: &str, create: bool) -> IoFuture<'_, Rc<dyn DiskFile>>;
    /// Names of the files in the directory.
    fn list(&self) -> IoFuture<'_, Vec<String>>;
    /// Removes a file; durable once `sync_dir` returns.
    fn remove(&self, name: &str) -> IoFuture<'_, ()>;
    /// Renames a file, replacing any file of the new name; durable once `sync_dir` returns.
    fn rename(&self, from: &str, to: &str) -> IoFuture<'_, ()>;
    /// Makes file creations and removals durable.
    fn sync_dir(&self) -> IoFuture<'_, ()>;
    /// Reads a whole small file, `None` if absent.
    fn read_small(&self, name: &str) -> IoFuture<'_, Option<Vec<u8>>>;
    /// Replaces a small file atomically and durably (write temp, fsync, rename, fsync dir).
    fn write_small_atomic(&self, name: &str, bytes: &[u8]) -> IoFuture<'_, ()>;
    /// The file's path in the local filesystem, if it has one. Recovery then reads and verifies
    /// segments on glommio's blocking thread pool, overlapping with the shard applying them;
    /// without one (e.g. [`MemDisk`]) it reads them through [`DiskFile::read_at`] instead.
    fn local_path(&self, _name: &str) -> Option<PathBuf> {
        None
    }
}

/// One open data file.
pub trait DiskFile {
    /// Reads up to `len` bytes at `pos`; shorter at end of file.
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Vec<u8>>;
    /// Writes `data` at `pos`; both block-aligned.
    fn write_at(&self, pos: u64, data: &[u8]) -> IoFuture<'_, ()>;
    /// Makes every completed write durable.
    fn fdatasync(&self) -> IoFuture<'_, ()>;
    /// Writes `data` at `pos` (both block-aligned) and returns once it is durable: `write_at`
    /// then `fdatasync`, unless the file can do both in one operation. Promises nothing about
    /// other writes not yet synced (a FUA write makes only its own blocks durable).
    fn write_durable_at<'a>(&'a self, pos: u64, data: &'a [u8]) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.write_at(pos, data).await?;
            self.fdatasync().await
        })
    }
    /// Current file size.
    fn size(&self) -> IoFuture<'_, u64>;
    /// Reserves space so the file is at least `len` bytes (zeros), without changing data.
    fn allocate(&self, len: u64) -> IoFuture<'_, ()>;
}

/// The production disk: glommio DMA files in a directory.
#[derive(Clone, Debug)]
pub struct DmaDisk {
    dir: PathBuf,
}

impl DmaDisk {
    /// Uses `dir`, creating it if missing.
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(DmaDisk {
            dir: dir.to_path_buf(),
        })
    }
}

struct DmaDiskFile {
    file: glommio::io::DmaFile,
}

/// `data` in a DMA buffer for a write at `pos` (both must be block-aligned).
fn dma_buffer(file: &glommio::io::DmaFile, pos: u64, data: &[u8]) -> glommio::io::DmaBuffer {
    assert!(
        pos.is_multiple_of(BLOCK_SIZE) && (data.len() as u64).is_multiple_of(BLOCK_SIZE),
        "unaligned DMA write"
    );
    let mut buf = file.alloc_dma_buffer(data.len());
    buf.as_bytes_mut().copy_from_slice(data);
    buf
}

/// Writes `buf` at `pos` through `file` (one O_DIRECT write), with `RWF_DSYNC` if `dsync`.
async fn dma_write(
    file: &glommio::io::DmaFile,
    pos: u64,
    buf: glommio::io::DmaBuffer,
    dsync: bool,
) -> io::Result<()> {
    let want = buf.len();
    let n = if dsync {
        file.write_at_dsync(buf, pos).await
    } else {
        file.write_at(buf, pos).await
    }
    .map_err(io::Error::from)?;
    if n != want {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short O_DIRECT write",
        ));
    }
    Ok(())
}

impl Disk for DmaDisk {
    fn local_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.dir.join(name))
    }

    fn open(&self, name: &str, create: bool) -> IoFuture<'_, Rc<dyn DiskFile>> {
        let path = self.dir.join(name);
        let probe = self.dir.join(crate::format::MANIFEST_NAME);
        Box::pin(async move {
            // glommio decides once per block device whether the io_uring poll ring works, by
            // reading the first file opened. An empty new segment reads as a clean EOF and makes
            // it wrongly say yes, after which every read fails with EOPNOTSUPP on devices without
            // polled I/O (virtio, most cloud disks). Opening the non-empty manifest first makes
            // the probe read real data and answer correctly.
            if probe.exists() {
                let _ = glommio::io::OpenOptions::new()
                    .read(true)
                    .dma_open(&probe)
                    .await;
            }
            let file = glommio::io::OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .dma_open(&path)
                .await
                .map_err(io::Error::from)?;
            Ok(Rc::new(DmaDiskFile { file }) as Rc<dyn DiskFile>)
        })
    }

    fn list(&self) -> IoFuture<'_, Vec<String>> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut names = Vec::new();
            for e in std::fs::read_dir(&dir)? {
                names.push(e?.file_name().to_string_lossy().into_owned());
            }
            Ok(names)
        })
    }

    fn remove(&self, name: &str) -> IoFuture<'_, ()> {
        let path = self.dir.join(name);
        blocking(move || std::fs::remove_file(path))
    }

    fn rename(&self, from: &str, to: &str) -> IoFuture<'_, ()> {
        let (from, to) = (self.dir.join(from), self.dir.join(to));
        blocking(move || std::fs::rename(from, to))
    }

    fn sync_dir(&self) -> IoFuture<'_, ()> {
        // glommio has no async directory fsync.
        let dir = self.dir.clone();
        blocking(move || std::fs::File::open(dir)?.sync_all())
    }

    fn read_small(&self, name: &str) -> IoFuture<'_, Option<Vec<u8>>> {
        let path = self.dir.join(name);
        blocking(move || match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
    }

    fn write_small_atomic(&self, name: &str, bytes: &[u8]) -> IoFuture<'_, ()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let dir = self.dir.clone();
        let bytes = bytes.to_vec();
        blocking(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })
    }
}

/// Runs a blocking file-system call on glommio's blocking thread pool, so that directory
/// operations (rare: segment rolls, compaction, checkpoints) never stall the shard's executor.
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> IoFuture<'static, T> {
    Box::pin(glommio::executor().spawn_blocking(f))
}

impl DiskFile for DmaDiskFile {
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Vec<u8>> {
        // Large reads go in bounded aligned chunks: one huge request would need a DMA buffer of
        // its whole size, and the kernel rejects some of those outright.
        const CHUNK: u64 = 4 << 20;
        Box::pin(async move {
            let start = pos - pos % BLOCK_SIZE;
            let end = pos + len as u64;
            let mut out = Vec::with_capacity(len);
            let mut at = start;
            while at < end {
                let want = (end - at).min(CHUNK);
                let want = want.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
                let r = self
                    .file
                    .read_at_aligned(at, want as usize)
                    .await
                    .map_err(io::Error::from)?;
                let skip = if at == start {
                    (pos - start) as usize
                } else {
                    0
                };
                let got = &r[..];
                let keep = got.len().min((end - at) as usize);
                if skip < keep {
                    out.extend_from_slice(&got[skip..keep]);
                }
                if got.len() < want as usize {
                    break;
                }
                at += want;
            }
            Ok(out)
        })
    }

    fn write_at(&self, pos: u64, data: &[u8]) -> IoFuture<'_, ()> {
        let buf = dma_buffer(&self.file, pos, data);
        Box::pin(dma_write(&self.file, pos, buf, false))
    }

    fn write_durable_at<'a>(&'a self, pos: u64, data: &'a [u8]) -> IoFuture<'a, ()> {
        // One io_uring write with `RWF_DSYNC` (a glommio patch): it completes only once the
        // data, and any metadata needed to read it back, is on stable storage (a FUA write, or
        // the write and a device cache flush), without the separate fdatasync that glommio
        // hands to an io-wq worker (a context switch on the shard's core, and a second trip
        // through the shard between the write and the sync).
        let buf = dma_buffer(&self.file, pos, data);
        Box::pin(dma_write(&self.file, pos, buf, true))
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move { self.file.fdatasync().await.map_err(io::Error::from) })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move { self.file.file_size().await.map_err(io::Error::from) })
    }

    fn allocate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.file
                .pre_allocate(len, false)
                .await
                .map_err(io::Error::from)
        })
    }
}

/// One in-memory file: what a reader sees now, and what survives a power loss.
#[derive(Clone, Debug, Default)]
struct MemFile {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct MemState {
    /// Files currently in the directory (their entries are durable at once: a simplification
    /// that the real disk earns with `sync_dir`).
    files: BTreeMap<String, Rc<RefCell<MemFile>>>,
    /// Fail the n-th fdatasync from now (0 = the next one), and every one after it.
    fail_fdatasync_after: Option<u64>,
    /// Total bytes of data files allowed before writes and allocations return ENOSPC.
    space_bytes_max: Option<u64>,
    fdatasyncs: u64,
}

/// An in-memory disk for tests: a `live` and a `durable` image per file, and fault injection.
/// Cloning shares the same files.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Rc<RefCell<MemState>>,
}

struct MemDiskFile {
    file: Rc<RefCell<MemFile>>,
    disk: MemDisk,
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        MemDisk::default()
    }

    /// Makes the `n`-th fdatasync from now (0 = next) and all later ones fail with EIO.
    pub fn fail_fdatasync_after(&self, n: u64) {
        self.state.borrow_mut().fail_fdatasync_after = Some(n);
    }

    /// Limits the total size of all files; writes beyond it fail with ENOSPC.
    pub fn set_space_bytes_max(&self, bytes: Option<u64>) {
        self.state.borrow_mut().space_bytes_max = bytes;
    }

    /// Number of successful fdatasyncs so far.
    pub fn fdatasyncs(&self) -> u64 {
        self.state.borrow().fdatasyncs
    }

    /// The disk as it would be after a power loss now: every file holds only its durable image.
    pub fn power_loss(&self) -> MemDisk {
        let st = self.state.borrow();
        let files = st
            .files
            .iter()
            .map(|(n, f)| {
                let d = f.borrow().durable.clone();
                (
                    n.clone(),
                    Rc::new(RefCell::new(MemFile {
                        live: d.clone(),
                        durable: d,
                    })),
                )
            })
            .collect();
        MemDisk {
            state: Rc::new(RefCell::new(MemState {
                files,
                ..MemState::default()
            })),
        }
    }

    /// The disk as it would be after a process kill now: the page cache survives, so every
    /// completed write is kept, synced or not.
    pub fn process_kill(&self) -> MemDisk {
        let st = self.state.borrow();
        let files = st
            .files
            .iter()
            .map(|(n, f)| {
                let l = f.borrow().live.clone();
                (
                    n.clone(),
                    Rc::new(RefCell::new(MemFile {
                        live: l.clone(),
                        durable: l,
                    })),
                )
            })
            .collect();
        MemDisk {
            state: Rc::new(RefCell::new(MemState {
                files,
                ..MemState::default()
            })),
        }
    }

    /// The bytes of a file (live image), for tests that damage or inspect the log.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.state
            .borrow()
            .files
            .get(name)
            .map(|f| f.borrow().live.clone())
    }

    /// Replaces a file's contents, live and durable, as if the disk held these bytes.
    pub fn set_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let f = MemFile {
            live: bytes.clone(),
            durable: bytes,
        };
        self.state
            .borrow_mut()
            .files
            .insert(name.to_string(), Rc::new(RefCell::new(f)));
    }

    /// Names of all files.
    pub fn file_names(&self) -> Vec<String> {
        self.state.borrow().files.keys().cloned().collect()
    }

    /// Total size of all files in bytes.
    pub fn used_bytes(&self) -> u64 {
        self.state
            .borrow()
            .files
            .values()
            .map(|f| f.borrow().live.len() as u64)
            .sum()
    }

    fn check_space(&self, grow_to: u64, current: u64) -> io::Result<()> {
        if let Some(max) = self.state.borrow().space_bytes_max
            && grow_to > current
            && self.used_bytes() + (grow_to - current) > max
        {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

impl Disk for MemDisk {
    fn open(&self, name: &str, create: bool) -> IoFuture<'_, Rc<dyn DiskFile>> {
        let name = name.to_string();
        Box::pin(async move {
            let mut st = self.state.borrow_mut();
            let file = match st.files.get(&name) {
                Some(f) => f.clone(),
                None if create => {
                    let f = Rc::new(RefCell::new(MemFile::default()));
                    st.files.insert(name, f.clone());
                    f
                }
                None => return Err(io::Error::from(io::ErrorKind::NotFound)),
            };
            Ok(Rc::new(MemDiskFile {
                file,
                disk: self.clone(),
            }) as Rc<dyn DiskFile>)
        })
    }

    fn list(&self) -> IoFuture<'_, Vec<String>> {
        Box::pin(async move { Ok(self.file_names()) })
    }

    fn remove(&self, name: &str) -> IoFuture<'_, ()> {
        let name = name.to_string();
        Box::pin(async move {
            self.state.borrow_mut().files.remove(&name);
            Ok(())
        })
    }

    fn rename(&self, from: &str, to: &str) -> IoFuture<'_, ()> {
        let (from, to) = (from.to_string(), to.to_string());
        Box::pin(async move {
            let mut st = self.state.borrow_mut();
            let f = st
                .files
                .remove(&from)
                .ok_or(io::Error::from(io::ErrorKind::NotFound))?;
            st.files.insert(to, f);
            Ok(())
        })
    }

    fn sync_dir(&self) -> IoFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn read_small(&self, name: &str) -> IoFuture<'_, Option<Vec<u8>>> {
        let name = name.to_string();
        Box::pin(async move { Ok(self.file_bytes(&name)) })
    }

    fn write_small_atomic(&self, name: &str, bytes: &[u8]) -> IoFuture<'_, ()> {
        let (name, bytes) = (name.to_string(), bytes.to_vec());
        Box::pin(async move {
            self.set_file_bytes(&name, bytes);
            Ok(())
        })
    }
}

impl DiskFile for MemDiskFile {
    fn read_at(&self, pos: u64, len: usize) -> IoFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let f = self.file.borrow();
            let start = (pos as usize).min(f.live.len());
            let end = start.saturating_add(len).min(f.live.len());
            Ok(f.live[start..end].to_vec())
        })
    }

    fn write_at(&self, pos: u64, data: &[u8]) -> IoFuture<'_, ()> {
        assert!(
            pos.is_multiple_of(BLOCK_SIZE) && (data.len() as u64).is_multiple_of(BLOCK_SIZE),
            "unaligned DMA write"
        );
        let data = data.to_vec();
        Box::pin(async move {
            let end = pos as usize + data.len();
            let cur = self.file.borrow().live.len() as u64;
            self.disk.check_space(end as u64, cur)?;
            {
                let mut f = self.file.borrow_mut();
                if f.live.len() < end {
                    f.live.resize(end, 0);
                }
                f.live[pos as usize..end].copy_from_slice(&data);
            }
            // The write is done but not durable: give other tasks (and a test's power cut) a turn.
            YieldOnce(false).await;
            Ok(())
        })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            YieldOnce(false).await;
            let mut st = self.disk.state.borrow_mut();
            if let Some(n) = st.fail_fdatasync_after {
                if n == 0 {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                st.fail_fdatasync_after = Some(n - 1);
            }
            st.fdatasyncs += 1;
            drop(st);
            let mut f = self.file.borrow_mut();
            f.durable = f.live.clone();
            Ok(())
        })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move { Ok(self.file.borrow().live.len() as u64) })
    }

    fn allocate(&self, len: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let cur = self.file.borrow().live.len() as u64;
            self.disk.check_space(len, cur)?;
            let mut f = self.file.borrow_mut();
            if (f.live.len() as u64) < len {
                f.live.resize(len as usize, 0);
            }
            Ok(())
        })
    }
}

/// Suspends once, as a real I/O would, so that other tasks run in between.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
