//! Helpers shared by the storage integration tests: an executor, a store on a `MemDisk`, ids.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::rc::Rc;

use cairn_storage::{MemDisk, ObjectId, Store, StoreOptions};

/// Runs `f` on a fresh, unpinned glommio executor with little io memory, so tests work under a
/// small `ulimit -l` and run in parallel with other tests.
pub fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move { f().await })
        .expect("start a glommio executor (raise `ulimit -l` if this fails)")
        .join()
        .expect("executor thread panicked");
}

/// [`run`] with a fresh directory `<temp>/<name>-<pid>` for `f`, removed afterwards: for tests
/// of the real disk (O_DIRECT files, renames, directory fsyncs).
pub fn run_in_temp_dir<F, Fut>(name: &str, f: F)
where
    F: FnOnce(std::path::PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.clone();
    run(move || f(d));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Options small enough that tests cross segment boundaries. Zero-filling (a disk-latency
/// optimisation) is off so that thousands of opens stay fast; tests that cover it say so.
pub fn small_opts() -> StoreOptions {
    StoreOptions {
        segment_bytes: 64 * 1024,
        compaction_enabled: false,
        segment_zero_fill: false,
        ..StoreOptions::default()
    }
}

pub async fn open_mem(disk: &MemDisk, opts: StoreOptions) -> Store {
    Store::open_with_disk(Rc::new(disk.clone()), opts)
        .await
        .expect("open store")
}

pub fn obj(n: u8) -> ObjectId {
    [n; 32]
}
