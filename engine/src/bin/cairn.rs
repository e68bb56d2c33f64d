//! The `cairn` server: parses the configuration, starts one shard per
//! configured core with the built-in classes and the HTTP listener, and stops
//! gracefully on SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use cairn_engine::config::{self, Command};
use cairn_engine::object::Classes;
use cairn_engine::shard::{self, ShardTask};
use cairn_engine::{builtins, http};

/// mimalloc rather than glibc malloc: with glibc, the storage index's small
/// long-lived buffers (one per object) split the holes that commit groups
/// and evicted objects leave, and at 500,000 counters half the heap was free
/// but not returnable; mimalloc's size-segregated pages do not mix them
/// (docs/ARCHITECTURE.md, "Memory"; storage/examples/index_memory.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
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
