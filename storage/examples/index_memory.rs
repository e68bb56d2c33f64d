//! Measures what the in-memory index really costs per counter-shaped object (three keys: the
//! engine's class and name meta keys and an 8-byte value), against `Store::index_bytes`.
//!
//! `cargo run --release -p cairn-storage --example index_memory -- [objects]` (default
//! 500,000). Writes in batches of one object, 256 in flight, to a store in a temporary
//! directory, waits for everything to be durable, then prints the process's resident set
//! growth per object beside the index's own estimate. Uses mimalloc, as the `cairn` binary
//! does (docs/ARCHITECTURE.md, "Memory").

use cairn_storage::{Batch, Store, StoreOptions};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident set of this process, from /proc.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm has a resident field");
    pages * 4096
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(500_000);
    let dir = std::env::temp_dir().join(format!("cairn-index-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the directory");
    let d = dir.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let opts = StoreOptions {
                compaction_enabled: false,
                segment_bytes: 64 << 20,
                ..StoreOptions::default()
            };
            let s = Store::open(&d, opts).await.expect("open the store");
            let rss0 = rss_bytes();
            let t0 = std::time::Instant::now();
            for i in 0..n {
                // Spread like the engine's hashed ids.
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                id[8..16].copy_from_slice(&i.to_le_bytes());
                let mut b = Batch::new();
                b.put(&id, b"\0c", b"counter");
                b.put(&id, b"\0n", format!("m{i}").as_bytes());
                b.put(&id, b"\x01value", &1u64.to_be_bytes());
                let ticket = s.commit(b).expect("commit");
                // Tickets resolve in order: waiting for every 256th keeps 256 in flight.
                if i % 256 == 255 {
                    ticket.durable().await.expect("durable");
                }
            }
            s.sync().await.expect("sync");
            let took = t0.elapsed();
            let rss1 = rss_bytes();
            let st = s.stats();
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            println!(
                "index_memory: {n} objects in {:.1}s; RSS {:.1} -> {:.1} MiB: {:.0} bytes per object; \
                 index_bytes {:.1} MiB: {:.0} bytes per object ({} objects)",
                took.as_secs_f64(),
                mib(rss0),
                mib(rss1),
                rss1.saturating_sub(rss0) as f64 / n as f64,
                mib(st.index_bytes),
                st.index_bytes as f64 / n as f64,
                st.index_objects,
            );
            s.close().await.expect("close");
        })
        .expect("start glommio (raise `ulimit -l` if this fails)")
        .join()
        .expect("the executor thread");
    let _ = std::fs::remove_dir_all(&dir);
}
