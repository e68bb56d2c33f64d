//! Crash soak: writer threads write through the HTTP API while the server is
//! `kill -9`ed at random moments; after every restart, every acknowledged
//! write must be there.
//!
//! Each writer owns a few `kv` objects and one `counter`. A kv write puts a
//! unique key (`c{cycle}-w{writer}-{seq}`) whose value names itself, so a
//! lost, stale or torn write is visible; the counter checks ordering: after a
//! restart it must hold at least the last acknowledged value and at most one
//! more (the one increment that may have been in flight, unacknowledged).
//!
//! `CAIRN_SOAK_CYCLES` (default 20, which CI runs) sets the number of crashes,
//! `CAIRN_SOAK_SEED` the random seed (printed, so a failure can be replayed),
//! `CAIRN_SOAK_SHARDS` the shard count (default 2). `scripts/crash-soak.sh`
//! runs long soaks. The summary line (`crash soak: ...`) is what
//! `docs/RELIABILITY.md` records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::{Conn, Server, temp_dir};

const WRITERS: usize = 8;
const OBJECTS_PER_WRITER: usize = 4;

/// A small xorshift generator: the test needs reproducible randomness, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one writer had acknowledged in one cycle.
#[derive(Default)]
struct Acked {
    /// kv object name -> keys acknowledged (value = key).
    keys: HashMap<String, Vec<String>>,
    /// Highest counter value acknowledged, if any increment was.
    counter: Option<i64>,
}

fn kv_object(writer: usize, j: usize) -> String {
    format!("soak-w{writer}-o{j}")
}

fn counter_object(writer: usize) -> String {
    format!("soak-w{writer}")
}

/// Writes until `stop` is set or the server goes away; returns what was acknowledged.
fn writer(addr: std::net::SocketAddr, cycle: u64, w: usize, stop: &AtomicBool) -> Acked {
    let mut acked = Acked::default();
    let mut seq = 0u64;
    let Ok(mut conn) = Conn::connect(addr, Duration::from_secs(10)) else {
        return acked;
    };
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let result = if seq.is_multiple_of(4) {
            let path = format!("/counter/{}/increment", counter_object(w));
            conn.request("POST", &path, b"").map(|r| {
                if r.status == 200 {
                    let v: serde_json::Value =
                        serde_json::from_slice(&r.body).expect("counter JSON");
                    let v = v["value"].as_i64().expect("counter value");
                    assert!(
                        acked.counter.is_none_or(|c| v > c),
                        "counter went backwards"
                    );
                    acked.counter = Some(v);
                }
                r.status
            })
        } else {
            let obj = kv_object(w, (seq as usize) % OBJECTS_PER_WRITER);
            let key = format!("c{cycle}-w{w}-{seq}");
            conn.request("PUT", &format!("/kv/{obj}/keys/{key}"), key.as_bytes())
                .map(|r| {
                    if r.status == 200 {
                        acked.keys.entry(obj).or_default().push(key);
                    }
                    r.status
                })
        };
        match result {
            Ok(200) => {}
            // 503 while shutting down is fine; anything else is a bug.
            Ok(503) => break,
            Ok(s) => panic!("writer {w}: unexpected status {s}"),
            // The server died under us: that request was not acknowledged.
            Err(_) => break,
        }
    }
    acked
}

/// Starts the server on `dir` and returns it with the time until every shard
/// answered health OK. Each shard accepts on the shared port (`SO_REUSEPORT`),
/// so one shard answering says nothing of the others: fresh connections are
/// made until every shard has answered (the body names the shard).
fn start_and_wait_healthy(dir: &std::path::Path, shards: u32) -> (Server, Duration) {
    let t0 = Instant::now();
    let server = Server::start_in(dir, shards).expect("cairn restarts after kill -9");
    let mut ready: Vec<Option<Duration>> = vec![None; shards as usize];
    loop {
        if let Ok(mut c) = Conn::connect(server.addr, Duration::from_secs(5))
            && let Ok(r) = c.request("GET", "/_cairn/health", b"")
            && r.status == 200
        {
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("health JSON");
            let shard = v["shard"].as_u64().expect("health names its shard") as usize;
            ready[shard].get_or_insert(t0.elapsed());
            if ready.iter().all(Option::is_some) {
                let first = ready.iter().flatten().min().copied().unwrap_or_default();
                let last = ready.iter().flatten().max().copied().unwrap_or_default();
                if last - first > Duration::from_secs(1) {
                    eprintln!("shards became healthy at {ready:?} after start");
                }
                return (server, last);
            }
        }
        if t0.elapsed() > Duration::from_secs(60) {
            hold_for_inspection(server.addr);
            panic!("not every shard answered health within 60 s: {ready:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// With `CAIRN_SOAK_HOLD_ON_FAILURE=<secs>`, keeps the server up that long
/// before the test fails (and kills it), to inspect it by hand.
fn hold_for_inspection(addr: std::net::SocketAddr) {
    if let Ok(secs) = std::env::var("CAIRN_SOAK_HOLD_ON_FAILURE").map(|v| v.parse().unwrap_or(300))
    {
        eprintln!("holding the server at {addr} for {secs}s for inspection");
        std::thread::sleep(Duration::from_secs(secs));
    }
}

/// Health from a few fresh connections (which land on any shard), and the
/// per-shard queue gauges, for a failure message.
fn server_state(addr: std::net::SocketAddr) -> String {
    let mut out = String::new();
    for _ in 0..4 {
        let t0 = Instant::now();
        let r = Conn::connect(addr, Duration::from_secs(10))
            .and_then(|mut c| c.request("GET", "/_cairn/health", b""));
        out += &format!("health {:?} in {:?}; ", r.map(|r| r.text()), t0.elapsed());
    }
    if let Ok(r) = Conn::connect(addr, Duration::from_secs(10))
        .and_then(|mut c| c.request("GET", "/_cairn/metrics", b""))
    {
        for line in r.text().lines() {
            if line.starts_with("cairn_queued_events{")
                || line.starts_with("cairn_forwarded_total{")
                || line.starts_with("cairn_requests_total{")
            {
                out += line;
                out += "; ";
            }
        }
    }
    out
}

/// Lists the keys of `obj` that start with `prefix`, as (key, value) strings.
fn list(conn: &mut Conn, obj: &str, prefix: &str) -> HashMap<String, String> {
    let path = format!("/kv/{obj}/keys?prefix={prefix}");
    let t0 = Instant::now();
    let r = match conn.request("GET", &path, b"") {
        Ok(r) => r,
        Err(e) => {
            let waited = t0.elapsed();
            // Say whether the server is stuck or only this connection is.
            let addr = conn.peer_addr();
            let fresh = Conn::connect(addr, Duration::from_secs(10))
                .and_then(|mut c| c.request("GET", &path, b""));
            let health = Conn::connect(addr, Duration::from_secs(10))
                .and_then(|mut c| c.request("GET", "/_cairn/health", b""));
            hold_for_inspection(addr);
            panic!(
                "GET {path} after restart: {e} after {waited:?} (request {} on its connection); \
                 again on a fresh connection: {:?}; health: {:?}; {}",
                conn.requests(),
                fresh.map(|r| r.status),
                health.map(|r| r.status),
                server_state(addr)
            );
        }
    };
    assert_eq!(r.status, 200, "list {obj}: {}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("list JSON");
    v["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["key"].as_str().expect("utf-8 key").to_string(),
                e["value"].as_str().expect("utf-8 value").to_string(),
            )
        })
        .collect()
}

/// Checks every acknowledged key of `cycle`; returns (checked, lost).
fn verify_cycle(conn: &mut Conn, cycle: u64, acked: &[Acked]) -> (u64, u64) {
    let (mut checked, mut lost) = (0, 0);
    for (w, a) in acked.iter().enumerate() {
        for j in 0..OBJECTS_PER_WRITER {
            let obj = kv_object(w, j);
            let Some(keys) = a.keys.get(&obj) else {
                continue;
            };
            let have = list(conn, &obj, &format!("c{cycle}-w{w}-"));
            for k in keys {
                checked += 1;
                match have.get(k) {
                    Some(v) if v == k => {}
                    Some(v) => {
                        panic!("cycle {cycle}: {obj}/{k} holds {v:?}, not what was acknowledged")
                    }
                    None => {
                        lost += 1;
                        eprintln!("LOST: cycle {cycle} {obj}/{k}");
                    }
                }
            }
        }
    }
    (checked, lost)
}

#[test]
fn acknowledged_writes_survive_repeated_kill_9() {
    let cycles = env_u64("CAIRN_SOAK_CYCLES", 20);
    let shards = u32::try_from(env_u64("CAIRN_SOAK_SHARDS", 2)).expect("shard count");
    let seed = env_u64(
        "CAIRN_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1,
    );
    eprintln!("crash soak: {cycles} cycles, {shards} shards, seed {seed}");
    let mut rng = Rng(seed);
    let dir = temp_dir("soak");
    let started = Instant::now();
    // Per cycle, per writer: what was acknowledged.
    let mut history: Vec<Vec<Acked>> = Vec::new();
    // Per writer: the highest acknowledged counter value over all cycles.
    let mut counters: Vec<Option<i64>> = vec![None; WRITERS];
    let (mut acked_total, mut lost_total, mut checked_total) = (0u64, 0u64, 0u64);
    let mut recovery: Vec<Duration> = Vec::new();
    for cycle in 0..cycles {
        let (server, took) = start_and_wait_healthy(&dir, shards);
        recovery.push(took);
        let mut conn = Conn::connect(server.addr, Duration::from_secs(30)).expect("connect");
        // Verify: the previous cycle in full, a few older ones at random, all counters.
        if let Some(prev) = history.last() {
            let (c, l) = verify_cycle(&mut conn, cycle - 1, prev);
            checked_total += c;
            lost_total += l;
        }
        for _ in 0..3 {
            if history.len() > 1 {
                let old = rng.range(0, history.len() as u64 - 1);
                let (c, l) = verify_cycle(&mut conn, old, &history[old as usize]);
                checked_total += c;
                lost_total += l;
            }
        }
        for (w, want) in counters.iter().enumerate() {
            let r = conn
                .request("GET", &format!("/counter/{}", counter_object(w)), b"")
                .expect("read counter");
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("counter JSON");
            let got = v["value"].as_i64().expect("counter value");
            if let Some(want) = *want {
                checked_total += 1;
                if got < want {
                    lost_total += 1;
                    eprintln!("LOST: counter {w} is {got}, {want} was acknowledged");
                }
                // One unacknowledged increment may have been applied per crash.
                assert!(
                    got <= want + cycle as i64,
                    "counter {w} is {got}: more than was sent"
                );
            }
        }
        drop(conn);
        // Write, then crash at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (stop, results, addr) = (stop.clone(), results.clone(), server.addr);
                std::thread::spawn(move || {
                    let a = writer(addr, cycle, w, &stop);
                    results.lock().expect("results").push((w, a));
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.range(30, 600)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().expect("writer thread");
        }
        let mut per_writer: Vec<Acked> = (0..WRITERS).map(|_| Acked::default()).collect();
        for (w, a) in results.lock().expect("results").drain(..) {
            acked_total += a.keys.values().map(|k| k.len() as u64).sum::<u64>();
            if let Some(c) = a.counter {
                acked_total += 1;
                counters[w] = Some(c);
            }
            per_writer[w] = a;
        }
        history.push(per_writer);
    }
    // Final restart: verify every cycle in full.
    let (server, took) = start_and_wait_healthy(&dir, shards);
    recovery.push(took);
    let mut conn = Conn::connect(server.addr, Duration::from_secs(30)).expect("connect");
    for (cycle, acked) in history.iter().enumerate() {
        let (c, l) = verify_cycle(&mut conn, cycle as u64, acked);
        checked_total += c;
        lost_total += l;
    }
    recovery.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "crash soak: cycles={cycles} shards={shards} seed={seed} acked={acked_total} checked={checked_total} \
         lost={lost_total} recovery_ms p50={:.0} p99={:.0} max={:.0} elapsed_s={:.0}",
        ms(recovery[recovery.len() / 2]),
        ms(recovery[recovery.len() * 99 / 100]),
        ms(*recovery.last().expect("at least one start")),
        started.elapsed().as_secs_f64()
    );
    assert!(
        acked_total > 0,
        "no write was ever acknowledged: the soak tested nothing"
    );
    assert_eq!(lost_total, 0, "acknowledged writes were lost (seed {seed})");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
