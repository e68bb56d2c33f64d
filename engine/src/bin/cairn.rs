//! The `cairn` server: parses the configuration, starts one shard per
//! configured core with the built-in classes and the HTTP listener, and stops
//! gracefully on SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use cairn_engine::config::{self, Command};
use cairn_engine::object::Classes;
use cairn_engine::shard::{self, ShardTask};
use cairn_engine::{builtins, http};

/// mimalloc rather than glibc malloc, and the storage index in heaps of its
/// own. With glibc, the index's small long-lived buffers (one per object)
/// split the holes that commit groups and evicted objects leave: at 500,000
/// counters half the heap was free but not returnable. With one mimalloc
/// heap, they shared pages with objects' allocations of the same size, so
/// the pages of evicted objects stayed resident. See docs/ARCHITECTURE.md,
/// "Memory".
#[global_allocator]
static ALLOC: alloc::Alloc = alloc::Alloc;

mod alloc {
    //! The global allocator: mimalloc, with what the storage index allocates
    //! (`cairn_storage::in_index_change`) taken from a per-thread heap of its
    //! own, so that long-lived index buffers never pin pages of short-lived
    //! allocations. Frees go through `mi_free`, which takes a block of any
    //! heap; a block allocated in one heap and grown outside an index change
    //! moves to the default heap, which only costs that one copy.

    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;
    use std::ffi::c_void;

    /// mimalloc's heap handle (opaque).
    #[repr(C)]
    struct MiHeap {
        _private: [u8; 0],
    }

    unsafe extern "C" {
        fn mi_heap_new() -> *mut MiHeap;
        fn mi_heap_malloc_aligned(heap: *mut MiHeap, size: usize, align: usize) -> *mut c_void;
        fn mi_heap_zalloc_aligned(heap: *mut MiHeap, size: usize, align: usize) -> *mut c_void;
        fn mi_heap_realloc_aligned(
            heap: *mut MiHeap,
            p: *mut c_void,
            size: usize,
            align: usize,
        ) -> *mut c_void;
    }

    thread_local! {
        /// This thread's index heap, made on first use (by mimalloc, which
        /// does not come back here). Const-initialised, no destructor: safe
        /// to read from inside the allocator.
        static INDEX_HEAP: Cell<*mut MiHeap> = const { Cell::new(std::ptr::null_mut()) };
    }

    /// This thread's index heap if an index change is running on it.
    fn index_heap() -> Option<*mut MiHeap> {
        if !cairn_storage::in_index_change() {
            return None;
        }
        INDEX_HEAP
            .try_with(|h| {
                if h.get().is_null() {
                    // SAFETY: mi_heap_new has no preconditions; it allocates
                    // with mimalloc's own internals, never through this
                    // allocator. A null result is kept and retried next time.
                    h.set(unsafe { mi_heap_new() });
                }
                h.get()
            })
            .ok()
            .filter(|h| !h.is_null())
    }

    /// mimalloc, with index changes in heaps of their own.
    pub(crate) struct Alloc;

    // SAFETY: every method returns memory from mimalloc that fits `layout`
    // (size and alignment passed through), or null; frees go to mi_free,
    // valid for a block of any mimalloc heap of any thread.
    unsafe impl GlobalAlloc for Alloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            match index_heap() {
                Some(h) => {
                    // SAFETY: a live heap of this thread; size and alignment
                    // from a valid layout.
                    let p = unsafe { mi_heap_malloc_aligned(h, layout.size(), layout.align()) };
                    p.cast()
                }
                // SAFETY: forwarded with the caller's guarantees.
                None => unsafe { mimalloc::MiMalloc.alloc(layout) },
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            match index_heap() {
                Some(h) => {
                    // SAFETY: as in `alloc`.
                    let p = unsafe { mi_heap_zalloc_aligned(h, layout.size(), layout.align()) };
                    p.cast()
                }
                // SAFETY: forwarded with the caller's guarantees.
                None => unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, so from mimalloc.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            match index_heap() {
                Some(h) => {
                    let (p, align) = (ptr.cast(), layout.align());
                    // SAFETY: `ptr` came from mimalloc with `layout`; the heap
                    // is a live heap of this thread.
                    let q = unsafe { mi_heap_realloc_aligned(h, p, new_size, align) };
                    q.cast()
                }
                // SAFETY: forwarded with the caller's guarantees.
                None => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            }
        }
    }
}

/// Turns transparent huge pages off for this process unless the operator
/// chose with `MIMALLOC_ALLOW_THP`. With THP, mimalloc's heap grows and stays
/// resident in 2 MiB steps: 25 MiB more at start and a resident set above the
/// memory budget at 1,000,000 objects (285 MiB against 2 x 128 MiB; 255 MiB
/// without THP). See docs/OPERATIONS.md, "Sizing the memory budget".
fn keep_memory_in_small_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return;
    }
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and the rest
    // zero; it only sets a flag on this process's memory map and touches no
    // memory of ours. Failure (an old kernel) leaves THP as it was, which is
    // only a larger resident set, so the result is ignored.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    keep_memory_in_small_pages();
    let cmd = match config::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match cmd {
        Command::Help(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("cairn {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run(cfg) => *cfg,
    };
    // Block the stop signals before any shard thread exists, so every thread
    // inherits the mask and only this thread's sigwait sees them.
    let signals = stop_signals();
    block(&signals);
    raise_open_files_limit();
    let mut classes = Classes::new();
    builtins::register(&mut classes);
    #[cfg(feature = "test-hooks")]
    cairn_engine::test_hooks::install(&mut classes);
    let serve: ShardTask = Arc::new(|s| Box::pin(http::serve(s)));
    let (listen, shards) = (cfg.listen, cfg.shards);
    let server = match shard::start(cfg, classes, vec![serve]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("cairn: listening on {listen} with {shards} shards");
    let sig = wait(&signals);
    eprintln!("cairn: signal {sig}; stopping");
    server.stop();
    match server.join() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every WebSocket
/// holds two descriptors (its reader's and its writer's), and the common soft
/// default of 1024 would cap a server at a few hundred sockets.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill and setrlimit to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use and
    // sigaddset only writes within it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

fn block(set: &libc::sigset_t) {
    // SAFETY: `set` is an initialised signal set; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_sigmask with valid arguments cannot fail");
}

fn wait(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is initialised and `sig` is a valid place for the result.
    let rc = unsafe { libc::sigwait(set, &mut sig) };
    assert_eq!(rc, 0, "sigwait with a valid set cannot fail");
    sig
}
