//! Memory under many objects: distinct `counter` objects are each
//! incremented once over many pipelined connections while the server's
//! resident set is sampled. The per-shard budget (`--object-memory-bytes-max`)
//! covers the storage index (every key of every object) and the objects in
//! memory; objects are evicted to make room as the index grows. The resident
//! set must stay within the budget of all shards plus the baseline measured
//! at start (binary, runtime, io_uring buffers) plus `SLACK` (allocator
//! fragmentation, connection and commit buffers, glommio's tasks).
//!
//! The CI test touches 20,000 objects. The 1,000,000-object run is
//! `#[ignore]`d (minutes): `scripts/memory-1m.sh`. `CAIRN_MEMORY_OBJECTS`,
//! `CAIRN_MEMORY_BUDGET` (bytes per shard) and `CAIRN_MEMORY_CONNS` override.
//! The figures are printed (`memory: ...`) for `docs/RELIABILITY.md`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_tests::{Server, parse_response, rss_bytes};

const SHARDS: u32 = 2;
/// Requests written before their responses are read, per connection.
const PIPELINE: u64 = 32;
/// Less than the runtime charges any active counter (its footprint, about
/// 1.9 KiB, plus `object_overhead_bytes`, 256);
/// used to bound the active count.
const OBJECT_BYTES: u64 = 512;
/// What the process may hold above the start baseline and the budget:
/// allocator slack, the connections' and commit groups' buffers, tasks
/// (docs/RELIABILITY.md, "Memory, 1,000,000 objects", has the measured figures).
const SLACK: u64 = 48 << 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A per-shard gauge from `/_cairn/metrics` (asks again until every shard is in).
fn gauge(s: &Server, name: &str) -> HashMap<String, u64> {
    let mut seen = HashMap::new();
    let prefix = format!("{name}{{");
    for _ in 0..200 {
        let text = s.send("GET", "/_cairn/metrics", b"").text();
        for l in text.lines().filter(|l| l.starts_with(&prefix)) {
            let shard = l.split('"').nth(1).unwrap_or("?").to_string();
            let v = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            seen.insert(shard, v);
        }
        if seen.len() == SHARDS as usize {
            break;
        }
    }
    seen
}

/// Increments `/counter/m{i}` once for every `i` in `range`, pipelined.
/// A 503 (a full mailbox: queues are bounded by design) is retried after a
/// pause; returns how many were.
fn touch(addr: std::net::SocketAddr, range: std::ops::Range<u64>, done: &AtomicU64) -> u64 {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    c.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::new();
    let mut retried = 0;
    let mut next = range.start;
    let mut todo: Vec<u64> = Vec::new();
    loop {
        if todo.is_empty() {
            if next == range.end {
                return retried;
            }
            let n = PIPELINE.min(range.end - next);
            todo.extend(next..next + n);
            next += n;
        }
        let mut raw = Vec::new();
        for j in &todo {
            raw.extend_from_slice(
                format!(
                    "POST /counter/m{j}/increment HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            );
        }
        c.write_all(&raw).expect("write");
        let mut again = Vec::new();
        let mut got = 0;
        while got < todo.len() {
            if let Some((r, used)) = parse_response(&buf) {
                buf.drain(..used);
                match r.status {
                    200 => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    503 => again.push(todo[got]),
                    s => panic!("increment answered {s}: {}", r.text()),
                }
                got += 1;
                continue;
            }
            let mut chunk = [0u8; 65536];
            let k = c.read(&mut chunk).expect("read");
            assert!(k > 0, "server closed the connection");
            buf.extend_from_slice(&chunk[..k]);
        }
        if !again.is_empty() {
            retried += again.len() as u64;
            std::thread::sleep(Duration::from_millis(20));
        }
        todo = again;
    }
}

fn run(objects: u64, budget: u64, conns: u64) {
    let b = budget.to_string();
    // Idle eviction off (an hour), so only the budget evicts.
    let s = Server::start_with(
        SHARDS,
        &[
            "--object-memory-bytes-max",
            &b,
            "--idle-ms-evict",
            "3600000",
            "--segment-bytes",
            "67108864",
        ],
    );
    let rss0 = rss_bytes(s.pid()).unwrap_or(0);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pid) = (stop.clone(), s.pid());
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(rss_bytes(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            max
        })
    };
    let t0 = Instant::now();
    let per = objects.div_ceil(conns);
    let workers: Vec<_> = (0..conns)
        .map(|w| {
            let (addr, done) = (s.addr, done.clone());
            let range = (w * per).min(objects)..((w + 1) * per).min(objects);
            std::thread::spawn(move || touch(addr, range, &done))
        })
        .collect();
    let retried: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    let took = t0.elapsed();
    // One eviction tick (at most 1 s) after the last touch.
    std::thread::sleep(Duration::from_millis(1500));
    let active = gauge(&s, "cairn_active_objects");
    let index = gauge(&s, "cairn_storage_index_bytes");
    let charged = gauge(&s, "cairn_object_memory_bytes");
    let index_total: u64 = index.values().sum();
    let rss_end = rss_bytes(s.pid()).unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let rss_max = sampler.join().expect("sampler").max(rss_end);
    // Spot check: a touched counter reads 1.
    let r = s.send("GET", &format!("/counter/m{}", objects / 2), b"");
    assert_eq!(r.text(), r#"{"value":1}"#);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let total_budget = budget * u64::from(SHARDS);
    eprintln!(
        "memory: {objects} objects touched in {:.1}s ({:.0}/s, {conns} connections, {retried} retried after 503); \
         budget {:.1} MiB x {SHARDS} shards; \
         RSS start {:.1} MiB, max {:.1} MiB, end {:.1} MiB ({:.0} bytes per object touched above start); \
         storage index {:.1} MiB ({:.0} bytes per object); \
         active objects per shard after a tick {active:?}, charged {charged:?}",
        took.as_secs_f64(),
        objects as f64 / took.as_secs_f64(),
        mib(budget),
        mib(rss0),
        mib(rss_max),
        mib(rss_end),
        rss_max.saturating_sub(rss0) as f64 / objects as f64,
        mib(index_total),
        index_total as f64 / objects as f64,
    );
    assert_eq!(
        active.len(),
        SHARDS as usize,
        "every shard reported: {active:?}"
    );
    for (shard, n) in &active {
        let room = budget.saturating_sub(index.get(shard).copied().unwrap_or(0));
        assert!(
            *n <= room / OBJECT_BYTES + 1,
            "shard {shard} keeps {n} objects in memory, over (budget {budget} - index) / {OBJECT_BYTES}"
        );
    }
    // The budget covers the index and the objects in memory; the rest is the
    // baseline at start and SLACK. This is the promise operators size by.
    let bound = rss0 + total_budget + SLACK;
    assert!(
        rss_max <= bound,
        "RSS peaked at {:.1} MiB, over the bound {:.1} MiB (start {:.1} + budget {:.1} + slack {:.1})",
        mib(rss_max),
        mib(bound),
        mib(rss0),
        mib(total_budget),
        mib(SLACK)
    );
}

#[test]
fn memory_stays_bounded_while_20k_objects_are_touched() {
    run(
        env_u64("CAIRN_MEMORY_OBJECTS", 20_000),
        env_u64("CAIRN_MEMORY_BUDGET", 2 << 20),
        env_u64("CAIRN_MEMORY_CONNS", 16),
    );
}

#[test]
#[ignore = "long (minutes): run with scripts/memory-1m.sh"]
fn memory_stays_bounded_while_1m_objects_are_touched() {
    run(
        env_u64("CAIRN_MEMORY_OBJECTS", 1_000_000),
        env_u64("CAIRN_MEMORY_BUDGET", 128 << 20),
        env_u64("CAIRN_MEMORY_CONNS", 64),
    );
}
