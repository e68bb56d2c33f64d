//! Slowloris: 1,000 slow connections (half trickle a request head, half a
//! request body, one byte at a time) against a real `cairn`, while other
//! clients measure their latency. Those clients' p99 must stay within 2x of
//! the unloaded figure measured in the same test (the worse of one run before
//! and one after the attack, which absorbs drift on a shared machine), the
//! server's resident memory must stay bounded, and every slow connection must
//! be answered 408 and closed once its header or body timeout passes.
//!
//! The figures are printed (`slowloris: ...`) for `docs/RELIABILITY.md`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::{Conn, Server, parse_response, rss_bytes};

const SLOW: usize = 1000;
const CLIENTS: usize = 4;
const PHASE: Duration = Duration::from_secs(3);
/// Header and body timeout given to the server: long enough to hold every
/// slow connection open through the loaded phase, short enough to wait out.
const TIMEOUT_MS: u64 = 9000;

/// Raises this process's open-file soft limit to the hard limit (the server,
/// spawned later, inherits it); returns the new soft limit.
fn raise_fd_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 0;
    }
    rl.rlim_cur = rl.rlim_max;
    // SAFETY: `rl` is initialised; raising the soft limit up to the hard one is always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    rl.rlim_cur
}

/// Runs `CLIENTS` keep-alive clients for `PHASE` (reads and durable writes
/// mixed) and returns every request's latency, sorted.
fn measure(addr: SocketAddr, tag: &str) -> Vec<Duration> {
    let all = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let all = all.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut conn =
                    Conn::connect(addr, Duration::from_secs(20)).expect("client connects");
                let mut lat = Vec::new();
                let end = Instant::now() + PHASE;
                let mut i = 0u64;
                while Instant::now() < end {
                    i += 1;
                    let t = Instant::now();
                    let r = if i.is_multiple_of(2) {
                        conn.request("GET", &format!("/counter/{tag}-{c}"), b"")
                    } else {
                        conn.request("PUT", &format!("/kv/{tag}-{c}/keys/k{}", i % 64), b"v")
                    }
                    .expect("a normal client is served during the attack");
                    lat.push(t.elapsed());
                    assert_eq!(r.status, 200, "{}", r.text());
                }
                all.lock().expect("latencies").extend(lat);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    let mut v = std::mem::take(&mut *all.lock().expect("latencies"));
    v.sort();
    v
}

fn p(v: &[Duration], q: f64) -> Duration {
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn a_thousand_slow_connections_neither_starve_others_nor_hold_memory() {
    let fds = raise_fd_limit();
    if fds < (SLOW as u64) * 2 + 256 {
        eprintln!(
            "SKIPPED: open-file limit {fds} is too low for {SLOW} connections (raise `ulimit -Hn`)"
        );
        return;
    }
    let t = TIMEOUT_MS.to_string();
    let s = Server::start_with(
        2,
        &[
            "--header-timeout-ms",
            &t,
            "--body-timeout-ms",
            &t,
            "--connections-max",
            "4096",
        ],
    );
    // Warm up (object activation, first segment writes), then the unloaded figure.
    let _ = measure(s.addr, "warm");
    let base1 = measure(s.addr, "base1");
    let rss0 = rss_bytes(s.pid()).unwrap_or(0);

    // Open the slow connections: half stall inside the head, half inside the body.
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let mut c = TcpStream::connect(s.addr).expect("slow connection accepted");
            let head: &[u8] = if i % 2 == 0 {
                b"GET /counter/slow HTTP/1.1\r\nHost: c\r\nX-Slow: "
            } else {
                b"PUT /kv/slow/keys/k HTTP/1.1\r\nHost: c\r\nContent-Length: 100000\r\n\r\n"
            };
            c.write_all(head).expect("slow head");
            c
        })
        .collect();
    // Trickle a byte into each, round after round, during the loaded phase.
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let mut socks: Vec<TcpStream> = slow
            .iter()
            .map(|c| c.try_clone().expect("clone slow socket"))
            .collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for c in &mut socks {
                    let _ = c.write_all(b"a");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let loaded = measure(s.addr, "loaded");
    let rss1 = rss_bytes(s.pid()).unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    trickler.join().expect("trickler");
    let open_for = opened.elapsed();

    // Every slow connection gets 408 and is closed once its timeout passes.
    let (mut got_408, mut closed) = (0, 0);
    for c in &mut slow {
        c.set_read_timeout(Some(
            Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(20),
        ))
        .expect("timeout");
        let mut buf = Vec::new();
        let ended = match c.read_to_end(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        closed += usize::from(ended);
        if parse_response(&buf).is_some_and(|(r, _)| r.status == 408) {
            got_408 += 1;
        }
    }
    let all_closed = opened.elapsed();
    drop(slow);
    let base2 = measure(s.addr, "base2");

    let unloaded = p(&base1, 0.99).max(p(&base2, 0.99));
    let loaded99 = p(&loaded, 0.99);
    let ratio = ms(loaded99) / ms(unloaded);
    let rss_delta = rss1.saturating_sub(rss0);
    eprintln!(
        "slowloris: {SLOW} slow connections open {:.1}s; clients p50/p99 ms unloaded {:.2}/{:.2} and {:.2}/{:.2}, \
         loaded {:.2}/{:.2} (p99 ratio {ratio:.2}, {} vs {}+{} requests); server RSS {:.1} MiB -> {:.1} MiB \
         (+{:.0} KiB per slow connection); {got_408}/{SLOW} got 408, {closed} closed, all by {:.1}s (timeout {:.1}s)",
        open_for.as_secs_f64(),
        ms(p(&base1, 0.5)),
        ms(p(&base1, 0.99)),
        ms(p(&base2, 0.5)),
        ms(p(&base2, 0.99)),
        ms(p(&loaded, 0.5)),
        ms(loaded99),
        loaded.len(),
        base1.len(),
        base2.len(),
        rss0 as f64 / (1 << 20) as f64,
        rss1 as f64 / (1 << 20) as f64,
        rss_delta as f64 / 1024.0 / SLOW as f64,
        all_closed.as_secs_f64(),
        TIMEOUT_MS as f64 / 1e3,
    );
    assert_eq!(
        closed, SLOW,
        "every slow connection is closed by the server"
    );
    assert_eq!(got_408, SLOW, "every slow connection is told why (408)");
    // 64 KiB per slow connection is far above what one holds (its buffers)
    // and far below what an unbounded one would (a 100 KB body, unbounded heads).
    assert!(
        rss_delta < (SLOW as u64) * (64 << 10),
        "server RSS grew {rss_delta} bytes for {SLOW} slow connections"
    );
    assert!(
        ratio <= 2.0,
        "other clients' p99 went from {:.2} ms to {:.2} ms under the attack",
        ms(unloaded),
        ms(loaded99)
    );
}
