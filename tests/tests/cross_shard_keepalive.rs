//! Cross-shard requests on keep-alive connections always get their answer.
//!
//! Clients hold one keep-alive connection each and send requests one at a
//! time, with short pauses so the shards go idle (and sleep) between them,
//! to objects spread over every shard: most requests are forwarded to
//! another shard and their responses come back over the mailboxes. This is
//! the pattern of the crash soak's verification pass, whose keep-alive
//! request once got no answer for 30 s after a restart; here it runs after
//! a `kill -9` and restart too, so values are read back from disk.
//!
//! `CAIRN_XSHARD_SECS` (default 6) sets how long the read phase runs.

use std::time::{Duration, Instant};

use cairn_tests::{Conn, Server, temp_dir};

const CLIENTS: usize = 4;
const OBJECTS: usize = 24;

/// How long one request may take before the test calls it lost. Generous:
/// the machine may be loaded; a lost wakeup waits forever.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

fn obj(i: usize) -> String {
    format!("xs-{i}")
}

/// Sends one request; on no answer, says whether the server answers a fresh
/// connection (a stuck connection) or not (a stuck server) and fails.
fn must(conn: &mut Conn, method: &str, path: &str, body: &[u8], client: usize) -> u16 {
    let t0 = Instant::now();
    match conn.request(method, path, body) {
        Ok(r) => r.status,
        Err(e) => {
            let addr = conn.peer_addr();
            let fresh = Conn::connect(addr, Duration::from_secs(10))
                .and_then(|mut c| c.request(method, path, body))
                .map(|r| r.status);
            panic!(
                "client {client}: {method} {path}: {e} after {:?} on a keep-alive connection; \
                 the same on a fresh connection: {fresh:?}",
                t0.elapsed()
            );
        }
    }
}

#[test]
fn cross_shard_requests_on_keep_alive_connections_are_all_answered_after_a_restart() {
    let shards = 4;
    let secs = std::env::var("CAIRN_XSHARD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6u64);
    let dir = temp_dir("xshard");
    let server = Server::start_in(&dir, shards).expect("cairn starts");
    let mut c = Conn::connect(server.addr, ANSWER_TIMEOUT).expect("connect");
    for i in 0..OBJECTS {
        for k in 0..4 {
            let path = format!("/kv/{}/keys/k{k}", obj(i));
            assert_eq!(must(&mut c, "PUT", &path, b"v", 0), 200);
        }
    }
    drop(c);
    server.kill();
    let server = Server::start_in(&dir, shards).expect("cairn restarts after kill -9");
    let addr = server.addr;
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            std::thread::spawn(move || {
                let mut conn = Conn::connect(addr, ANSWER_TIMEOUT).expect("connect");
                let (mut n, mut worst) = (0usize, Duration::ZERO);
                while Instant::now() < stop_at {
                    let i = (n * 7 + client * 5) % OBJECTS;
                    let t0 = Instant::now();
                    let (method, path) = match n % 3 {
                        0 => ("GET", format!("/kv/{}/keys?prefix=k", obj(i))),
                        1 => ("GET", format!("/kv/{}/keys/k{}", obj(i), n % 4)),
                        _ => ("PUT", format!("/kv/{}/keys/n{client}", obj(i))),
                    };
                    let status = must(&mut conn, method, &path, b"w", client);
                    assert_eq!(status, 200, "client {client}: {method} {path}");
                    worst = worst.max(t0.elapsed());
                    n += 1;
                    // Let the shards go idle now and then, so wakeups are needed.
                    std::thread::sleep(Duration::from_millis((n % 5) as u64 * 3));
                }
                (n, worst)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        let (n, worst) = t.join().expect("client thread");
        eprintln!("client: {n} requests, slowest {worst:?}");
        total += n;
    }
    assert!(total > 0, "no request was made");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
