//! The rate limiter under load: 256 keep-alive connections against 1,000
//! limiter objects for 10 s. From the client's records, no object ever
//! admitted more than its limit within one window (judged on the server's
//! decision times, which each 200 carries as `at_ms`), and after a `kill -9`
//! restart every object's `allowed_total` equals the 200s the clients saw.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cairn_tests::{HttpResponse, STARTUP_TIMEOUT, Server, parse_response, temp_dir};
use serde_json::Value;

const CONNECTIONS: usize = 256;
const OBJECTS: usize = 1000;
const LOAD: Duration = Duration::from_secs(10);
const LIMIT: u64 = 5;
const WINDOW_MS: u64 = 1000;

/// A keep-alive HTTP/1.1 client on one connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(STARTUP_TIMEOUT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        Conn { s, buf: Vec::new() }
    }

    fn send(&mut self, method: &str, path: &str, body: &str) -> HttpResponse {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: cairn\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.s.write_all(raw.as_bytes()).expect("write");
        loop {
            if let Some((r, used)) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return r;
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("read");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[derive(Default)]
struct Record {
    /// Server decision times of the 200s, per object.
    admitted: HashMap<usize, Vec<u64>>,
    denied: u64,
    other: HashMap<u16, u64>,
}

/// (commits, committed mutations) summed over every shard, for the report of
/// how well checks batch (the mutation count includes the store's own
/// rewrites when segments roll over, so it is not asserted on): one scrape
/// of `/_cairn/metrics` has a line per shard (`shard="N"`).
fn commit_counts(s: &Server, shards: usize) -> (u64, u64) {
    let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
    let m = s.send("GET", "/_cairn/metrics", b"").text();
    for l in m.lines() {
        let (name, rest) = l.split_once('{').unwrap_or((l, ""));
        if name != "cairn_commits_total" && name != "cairn_committed_mutations_total" {
            continue;
        }
        let Some(shard) = rest.split('"').nth(1) else {
            continue;
        };
        let Some(v) = l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        let e = seen.entry(shard.to_string()).or_default();
        match name {
            "cairn_commits_total" => e.0 = v,
            "cairn_committed_mutations_total" => e.1 = v,
            _ => {}
        }
    }
    assert_eq!(seen.len(), shards, "every shard's metrics were reached");
    seen.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1))
}

#[test]
fn limits_hold_per_window_under_load_and_counts_survive_a_crash() {
    let dir = temp_dir("ratelimit-load");
    let s = Server::start_in(&dir, 2).expect("start");
    let addr = s.addr;
    let config = format!(r#"{{"limit":{LIMIT},"window_ms":{WINDOW_MS}}}"#);
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|t| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for obj in (t..OBJECTS).step_by(CONNECTIONS) {
                    let r = c.send("PUT", &format!("/ratelimit/rl-{obj}/config"), &config);
                    assert_eq!(r.status, 200, "{}", r.text());
                }
                c
            })
        })
        .collect();
    let conns: Vec<Conn> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let before = commit_counts(&s, 2);
    let start = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            std::thread::spawn(move || {
                let mut rec = Record::default();
                let mut i = t * 7919;
                while start.elapsed() < LOAD {
                    i = i
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let obj = (i >> 33) % OBJECTS;
                    let r = c.send("POST", &format!("/ratelimit/rl-{obj}/check"), "");
                    match r.status {
                        200 => {
                            let v: Value = serde_json::from_slice(&r.body).expect("json");
                            let at = v["at_ms"].as_u64().expect("at_ms");
                            rec.admitted.entry(obj).or_default().push(at);
                        }
                        429 => rec.denied += 1,
                        s => *rec.other.entry(s).or_default() += 1,
                    }
                }
                rec
            })
        })
        .collect();
    let mut admitted: HashMap<usize, Vec<u64>> = HashMap::new();
    let (mut denied, mut other) = (0, HashMap::new());
    for w in workers {
        let rec = w.join().expect("worker");
        for (obj, ts) in rec.admitted {
            admitted.entry(obj).or_default().extend(ts);
        }
        denied += rec.denied;
        for (st, n) in rec.other {
            *other.entry(st).or_insert(0) += n;
        }
    }
    let after = commit_counts(&s, 2);
    let total: usize = admitted.values().map(Vec::len).sum();
    let (commits, writes) = (after.0 - before.0, after.1 - before.1);
    eprintln!(
        "load: {total} admitted, {denied} denied, other statuses {other:?}; \
         {writes} writes in {commits} commits ({:.1} per commit)",
        writes as f64 / commits.max(1) as f64
    );
    assert!(total > 0 && denied > 0, "the load reached both answers");
    let budget = LIMIT as usize * (LOAD.as_millis() as usize / WINDOW_MS as usize + 2);
    for (obj, ts) in &mut admitted {
        ts.sort_unstable();
        assert!(
            ts.len() <= budget,
            "object {obj}: {} admitted in {LOAD:?}",
            ts.len()
        );
        for w in ts.windows(LIMIT as usize + 1) {
            assert!(
                w[LIMIT as usize] - w[0] >= WINDOW_MS,
                "object {obj}: {} admitted within {WINDOW_MS} ms: {w:?}",
                LIMIT + 1
            );
        }
    }

    s.kill();
    let s = Server::start_in(&dir, 2).expect("restart");
    let mut c = Conn::open(s.addr);
    for obj in 0..OBJECTS {
        let r = c.send("GET", &format!("/ratelimit/rl-{obj}"), "");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        let want = admitted.get(&obj).map_or(0, Vec::len) as u64;
        assert_eq!(v["allowed_total"], want, "object {obj} after the restart");
    }
}
