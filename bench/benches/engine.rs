//! The engine's request path, each layer beside a baseline in the same run:
//!
//! - `engine_dispatch/one_shard`: `ObjectHost::call` to a `counter` on the
//!   same shard (input gate, handler, output gate; in-memory store), beside a
//!   bare glommio task spawn-and-await (the cheapest async hop).
//! - `engine_dispatch/cross_shard`: the same call to an object on another
//!   shard (mailbox out, owner, mailbox back), beside the same-shard call
//!   through the same running server.
//! - `engine_http/loopback`: one keep-alive `GET /counter/x` over loopback
//!   TCP to an in-process `cairn` shard, beside a minimal blocking TCP server
//!   answering the same bytes (the kernel's loopback round trip).
//!
//! Ratios go in `docs/BENCHMARKS.md`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cairn_engine::builtins;
use cairn_engine::config::Config;
use cairn_engine::host::{HostConfig, ObjectHost, Target, system_clock};
use cairn_engine::id::{id_from_name, shard_of};
use cairn_engine::object::{Classes, Request};
use cairn_engine::shard::{self, Shard, ShardTask};
use cairn_engine::store::{ImmediateCommits, Store, StoreOptions};
use criterion::{Criterion, Throughput, criterion_main};

fn executor() -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("glommio executor (io_uring, ulimit -l)")
}

fn counter(name: &str) -> Target {
    Target {
        class: "counter".into(),
        id: id_from_name("counter", name.as_bytes()),
        name: Some(name.as_bytes().to_vec()),
    }
}

fn one_shard(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_dispatch/one_shard");
    g.throughput(Throughput::Elements(1));
    g.bench_function("glommio spawn+await (baseline)", |b| {
        b.iter_custom(|iters| {
            executor().run(async move {
                let t = Instant::now();
                for i in 0..iters {
                    let v = glommio::spawn_local(async move { i + 1 }).await;
                    std::hint::black_box(v);
                }
                t.elapsed()
            })
        });
    });
    for (name, method, path) in [
        ("counter GET", "GET", "/"),
        ("counter increment", "POST", "/increment"),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                executor().run(async move {
                    let mut classes = Classes::new();
                    builtins::register(&mut classes);
                    let store = Store::open(StoreOptions::default(), Rc::new(ImmediateCommits))
                        .await
                        .expect("in-memory store");
                    let host =
                        ObjectHost::new(HostConfig::default(), classes, store, system_clock());
                    let t = Instant::now();
                    for _ in 0..iters {
                        let r = host.call(counter("a"), Request::new(method, path)).await;
                        std::hint::black_box(r);
                    }
                    t.elapsed()
                })
            });
        });
    }
    g.finish();
}

/// Runs `iters` calls to `target` on shard 0 of a running 2-shard server.
struct Caller {
    ask: mpsc::Sender<(Target, u64)>,
    took: mpsc::Receiver<Duration>,
    server: Option<shard::ServerHandle>,
    done: Arc<AtomicBool>,
    _dir: std::path::PathBuf,
}

impl Caller {
    fn start(tasks_extra: Vec<ShardTask>, shards: u32) -> Caller {
        let dir = std::env::temp_dir().join(format!("cairn-bench-engine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut classes = Classes::new();
        builtins::register(&mut classes);
        let (ask, asks) = mpsc::channel::<(Target, u64)>();
        let (took_tx, took) = mpsc::channel::<Duration>();
        let done = Arc::new(AtomicBool::new(false));
        let slot = Arc::new(Mutex::new(Some((asks, took_tx))));
        let stop = done.clone();
        let task: ShardTask = Arc::new(move |s: Shard| {
            let mine = if s.id == 0 {
                slot.lock().ok().and_then(|mut g| g.take())
            } else {
                None
            };
            let stop = stop.clone();
            Box::pin(async move {
                let Some((asks, took)) = mine else { return };
                // Polls for work: a bench harness, not the request path.
                while !stop.load(Ordering::Acquire) {
                    let Ok((target, iters)) = asks.try_recv() else {
                        glommio::timer::sleep(Duration::from_micros(200)).await;
                        continue;
                    };
                    let t = Instant::now();
                    for _ in 0..iters {
                        let r = s.host.call(target.clone(), Request::new("GET", "/")).await;
                        std::hint::black_box(r);
                    }
                    let _ = took.send(t.elapsed());
                }
            })
        });
        let mut tasks = vec![task];
        tasks.extend(tasks_extra);
        let config = Config {
            shards,
            data_dir: dir.join("data"),
            segment_bytes: 1 << 20,
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..Config::default()
        };
        let server = shard::start(config, classes, tasks).expect("server starts");
        Caller {
            ask,
            took,
            server: Some(server),
            done,
            _dir: dir,
        }
    }

    fn run(&self, target: &Target, iters: u64) -> Duration {
        self.ask
            .send((target.clone(), iters))
            .expect("shard 0 listens");
        self.took.recv().expect("shard 0 answers")
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(s) = self.server.take() {
            s.stop();
            let _ = s.join();
        }
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// A counter name owned by `shard` of 2.
fn name_on(shard: u32) -> String {
    (0..)
        .map(|i| format!("b{i}"))
        .find(|n| shard_of(&id_from_name("counter", n.as_bytes()), 2) == shard)
        .expect("some name lands on every shard")
}

fn cross_shard(c: &mut Criterion) {
    let caller = Caller::start(Vec::new(), 2);
    let (local, remote) = (counter(&name_on(0)), counter(&name_on(1)));
    let mut g = c.benchmark_group("engine_dispatch/cross_shard");
    g.throughput(Throughput::Elements(1));
    g.bench_function("same-shard call (baseline)", |b| {
        b.iter_custom(|iters| caller.run(&local, iters));
    });
    g.bench_function("call to the other shard", |b| {
        b.iter_custom(|iters| caller.run(&remote, iters));
    });
    g.finish();
}

const REQUEST: &[u8] = b"GET /counter/x HTTP/1.1\r\nHost: bench\r\n\r\n";

fn round_trip(s: &mut TcpStream, buf: &mut [u8]) {
    s.write_all(REQUEST).expect("write");
    // Responses are small; read until the body's closing brace.
    let mut got = 0;
    loop {
        let n = s.read(&mut buf[got..]).expect("read");
        assert!(n > 0, "closed");
        got += n;
        if buf[..got].ends_with(b"}") {
            return;
        }
    }
}

fn loopback(c: &mut Criterion) {
    // Baseline: a blocking server that answers every request with fixed bytes.
    let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    std::thread::spawn(move || {
        let answer: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
            content-length: 11\r\n\r\n{\"value\":0}";
        for conn in echo.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("cairn-bench-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut classes = Classes::new();
    builtins::register(&mut classes);
    let serve: ShardTask = Arc::new(|s| Box::pin(cairn_engine::http::serve(s)));
    let config = Config {
        shards: 1,
        data_dir: dir.join("data"),
        segment_bytes: 1 << 20,
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        ..Config::default()
    };
    let server = shard::start(config, classes, vec![serve]).expect("server");
    let mut cairn = loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    cairn.set_nodelay(true).expect("nodelay");
    let mut base = TcpStream::connect(echo_addr).expect("connect");
    base.set_nodelay(true).expect("nodelay");
    let mut buf = vec![0u8; 4096];
    let mut g = c.benchmark_group("engine_http/loopback");
    g.throughput(Throughput::Elements(1));
    g.bench_function("blocking fixed-answer server (baseline)", |b| {
        b.iter(|| round_trip(&mut base, &mut buf));
    });
    g.bench_function("cairn GET /counter/x", |b| {
        b.iter(|| round_trip(&mut cairn, &mut buf));
    });
    g.finish();
    drop(cairn);
    server.stop();
    let _ = server.join();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `criterion_group!` emits an undocumented `pub fn`.
mod groups {
    #![allow(missing_docs)]
    use super::*;
    criterion::criterion_group!(benches, one_shard, cross_shard, loopback);
}
criterion_main!(groups::benches);
