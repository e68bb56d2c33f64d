//! Stress tests for glommio's cross-thread wake-ups, the paths Cairn's shards
//! and gateway sleep on: a blocking-pool answer, a foreign `Waker::wake`, a
//! `shared_channel` message and a `shared_channel` connect. Each test repeats
//! its handshake many times with an executor that parks between rounds, and a
//! watchdog fails the test when no round completes for `HANG` (a lost wake-up
//! leaves the executor asleep for good). See vendor/glommio/CAIRN-PATCH.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

/// Rounds per test (`CAIRN_WAKE_ROUNDS` overrides it, for longer hunts).
fn rounds() -> usize {
    std::env::var("CAIRN_WAKE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2_000)
}

/// No round finishing for this long is a hang: a round takes well under a
/// millisecond, so this is generous even on a loaded 2-core CI machine.
const HANG: Duration = Duration::from_secs(10);

/// A small deterministic generator, so that delays vary between rounds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A delay of 0..`max_us` microseconds, slept half the time and spun the
    /// other half (a spin keeps the other side racing with this one).
    fn pause(&mut self, max_us: u64) {
        let us = self.next() % max_us;
        if self.next().is_multiple_of(2) {
            std::thread::sleep(Duration::from_micros(us));
        } else {
            let until = Instant::now() + Duration::from_micros(us);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
    }
}

/// Waits until every counter reaches `ROUNDS`; panics when none moves for `HANG`.
fn watch(what: &str, counters: &[Arc<AtomicUsize>]) {
    let sum = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum::<usize>()
    };
    let mut last = sum();
    let mut since = Instant::now();
    while counters
        .iter()
        .any(|c| c.load(Ordering::Acquire) < rounds())
    {
        std::thread::sleep(Duration::from_millis(5));
        let now = sum();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > HANG {
            let at: Vec<_> = counters.iter().map(|c| c.load(Ordering::Acquire)).collect();
            panic!(
                "{what}: no progress for {HANG:?}; rounds done per side: {at:?} of {}",
                rounds()
            );
        }
    }
}

#[test]
fn a_blocking_pool_answer_wakes_a_parked_executor() {
    let done = Arc::new(AtomicUsize::new(0));
    let progress = done.clone();
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-blocking")
        .spawn(move || async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            for i in 0..rounds() {
                let seed = rng.next() | 1;
                glommio::executor()
                    .spawn_blocking(move || Rng(seed).pause(300))
                    .await;
                progress.store(i + 1, Ordering::Release);
            }
        })
        .expect("executor");
    watch("blocking pool", &[done]);
    ex.join().expect("executor thread");
}

#[test]
fn a_foreign_wake_wakes_a_parked_executor() {
    let done = Arc::new(AtomicUsize::new(0));
    let progress = done.clone();
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-foreign")
        .spawn(move || async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d);
            for i in 0..rounds() {
                let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let mut sent = false;
                let seed = rng.next() | 1;
                std::future::poll_fn(|cx| {
                    if fired.load(Ordering::Acquire) {
                        return std::task::Poll::Ready(());
                    }
                    if !sent {
                        sent = true;
                        let (waker, fired) = (cx.waker().clone(), fired.clone());
                        std::thread::spawn(move || {
                            Rng(seed).pause(300);
                            fired.store(true, Ordering::Release);
                            waker.wake();
                        });
                    }
                    std::task::Poll::Pending
                })
                .await;
                progress.store(i + 1, Ordering::Release);
            }
        })
        .expect("executor");
    watch("foreign wake", &[done]);
    ex.join().expect("executor thread");
}

#[test]
fn shared_channel_ping_pong_wakes_parked_executors() {
    let (to_b, from_a) = shared_channel::new_bounded::<usize>(1);
    let (to_a, from_b) = shared_channel::new_bounded::<usize>(1);
    let (a_done, b_done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a_progress, b_progress) = (a_done.clone(), b_done.clone());
    let a = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-ping")
        .spawn(move || async move {
            let rx = glommio::spawn_local(from_b.connect()).detach();
            let tx = to_b.connect().await;
            let rx = rx.await.expect("connected");
            let mut rng = Rng(0x1234_5678_9abc_def1);
            for i in 0..rounds() {
                rng.pause(200);
                tx.send(i).await.expect("send");
                assert_eq!(rx.recv().await, Some(i));
                a_progress.store(i + 1, Ordering::Release);
            }
        })
        .expect("executor");
    let b = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-pong")
        .spawn(move || async move {
            let rx = glommio::spawn_local(from_a.connect()).detach();
            let tx = to_a.connect().await;
            let rx = rx.await.expect("connected");
            let mut rng = Rng(0x0fed_cba9_8765_4321);
            for i in 0..rounds() {
                let got = rx.recv().await.expect("recv");
                rng.pause(200);
                tx.send(got).await.expect("send");
                b_progress.store(i + 1, Ordering::Release);
            }
        })
        .expect("executor");
    watch("shared_channel ping-pong", &[a_done, b_done]);
    a.join().expect("executor thread");
    b.join().expect("executor thread");
}

#[test]
fn shared_channel_connect_completes_when_the_peer_comes_late() {
    let mut a_ends = Vec::with_capacity(rounds());
    let mut b_ends = Vec::with_capacity(rounds());
    for _ in 0..rounds() {
        let (to_b, from_a) = shared_channel::new_bounded::<usize>(1);
        let (to_a, from_b) = shared_channel::new_bounded::<usize>(1);
        a_ends.push((to_b, from_b));
        b_ends.push((to_a, from_a));
    }
    let (a_done, b_done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a_progress, b_progress) = (a_done.clone(), b_done.clone());
    let a = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-conn-a")
        .spawn(move || async move {
            let mut rng = Rng(0x7777_1111_3333_5555);
            for (i, (to_b, from_b)) in a_ends.into_iter().enumerate() {
                let rx = glommio::spawn_local(from_b.connect()).detach();
                rng.pause(200);
                let tx = to_b.connect().await;
                let rx = rx.await.expect("connected");
                tx.send(i).await.expect("send");
                assert_eq!(rx.recv().await, Some(i));
                a_progress.store(i + 1, Ordering::Release);
            }
        })
        .expect("executor");
    let b = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-conn-b")
        .spawn(move || async move {
            let mut rng = Rng(0x2222_4444_6666_8888);
            for (i, (to_a, from_a)) in b_ends.into_iter().enumerate() {
                rng.pause(200);
                let rx = glommio::spawn_local(from_a.connect()).detach();
                let tx = to_a.connect().await;
                let rx = rx.await.expect("connected");
                let got = rx.recv().await.expect("recv");
                tx.send(got).await.expect("send");
                b_progress.store(i + 1, Ordering::Release);
            }
        })
        .expect("executor");
    watch("shared_channel connect", &[a_done, b_done]);
    a.join().expect("executor thread");
    b.join().expect("executor thread");
}

/// Runs `f` on its own thread; panics if it takes longer than `limit`.
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what}: still running after {limit:?}"))
}

#[test]
fn an_engine_starts_answers_and_stops_every_time() {
    use cairn_engine::object::{Classes, Request};
    let starts: usize = std::env::var("CAIRN_WAKE_STARTS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let base = std::env::temp_dir().join(format!("cairn-wake-{}", std::process::id()));
    for i in 0..starts {
        let dir = base.join(format!("run-{i}"));
        let config = cairn_engine::config::Config {
            data_dir: dir.clone(),
            shards: 2,
            segment_bytes: 1 << 20,
            ..cairn_engine::config::Config::default()
        };
        let mut classes = Classes::new();
        cairn_engine::builtins::register(&mut classes);
        let server = cairn_engine::shard::start(config, classes, Vec::new()).expect("start");
        let client = server.client();
        let name = format!("c{i}");
        let status = within(
            "a call through the gateway",
            Duration::from_secs(10),
            move || {
                client
                    .call(
                        "counter",
                        name.as_bytes(),
                        Request::new("POST", "/increment"),
                    )
                    .status
            },
        );
        assert_eq!(status, 200, "start {i}");
        // Let the gateway go idle (its executor parks between blocking-pool polls).
        std::thread::sleep(Duration::from_millis((i as u64 * 37) % 120));
        server.stop();
        within("stop and join", Duration::from_secs(10), move || {
            server.join().expect("join")
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_socket_read_wakes_a_parked_executor() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let done = Arc::new(AtomicUsize::new(0));
    let progress = done.clone();
    let peer = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut rng = Rng(0x5151_5151_a1a1_a1a1);
        let mut b = [0u8; 1];
        for i in 0..rounds() {
            rng.pause(300);
            s.write_all(&[i as u8]).expect("write");
            s.read_exact(&mut b).expect("read");
        }
    });
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-socket")
        .spawn(move || async move {
            let mut s = glommio::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            s.set_nodelay(true).expect("nodelay");
            let mut b = [0u8; 1];
            for i in 0..rounds() {
                s.read_exact(&mut b).await.expect("read");
                assert_eq!(b[0], i as u8);
                s.write_all(&b).await.expect("write");
                progress.store(i + 1, Ordering::Release);
            }
        })
        .expect("executor");
    watch("socket read", &[done]);
    ex.join().expect("executor thread");
    peer.join().expect("peer thread");
}

/// A `spawn_blocking` closure that panics must fail its caller, not leave it
/// waiting for good: upstream glommio 0.9 sent no answer and no wake-up, a
/// hang that looks exactly like a lost wake-up (vendor/glommio/CAIRN-PATCH.md).
#[test]
fn a_panicking_blocking_closure_fails_its_caller_instead_of_hanging() {
    use futures_lite::FutureExt;
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-panic")
        .spawn(|| async {
            let blocking = glommio::executor()
                .spawn_blocking(|| -> u32 { panic!("a blocking closure panicked on purpose") });
            let caught = std::panic::AssertUnwindSafe(blocking).catch_unwind().await;
            let message = caught
                .expect_err("the caller sees the closure's panic")
                .downcast::<&str>()
                .map(|m| m.to_string())
                .unwrap_or_default();
            // The pool's thread survives the panic: the next job still runs.
            let next = glommio::executor().spawn_blocking(|| 7u32).await;
            (message, next)
        })
        .expect("executor");
    let joined = within("an executor awaiting a panicked closure", HANG, move || {
        ex.join()
    });
    let (message, next) = joined.expect("the executor thread");
    assert_eq!(message, "a blocking closure panicked on purpose");
    assert_eq!(next, 7);
}

/// A queued task must run even when a preemption timer fires between the
/// reactor's poll and the first task. glommio's run loop used to take
/// "preempted before running anything" for "nothing to run" and park with
/// the task still queued, and, when the task owned the only timer, with no
/// timer armed: asleep for good on an executor with no sockets (a shard
/// waiting for its peers at start-up, or an idle one waiting for SIGTERM).
/// A short preemption timer makes the race likely. Without the fix
/// (vendor/glommio/CAIRN-PATCH.md, item 9) this hangs before its first
/// round: the executor's first turn is preempted before the root task runs.
/// With it, the later rounds go through the timer-woken case many times.
#[test]
fn a_timer_loop_survives_preemption_timers_firing_between_poll_and_run() {
    let done = Arc::new(AtomicUsize::new(0));
    let progress = done.clone();
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("wake-preempt")
        .preempt_timer(Duration::from_micros(10))
        .spawn(move || async move {
            for i in 0..rounds() {
                glommio::timer::sleep(Duration::from_micros(100)).await;
                progress.store(i + 1, Ordering::Release);
            }
        })
        .expect("executor");
    watch("timer loop with short preemption timers", &[done]);
    ex.join().expect("executor thread");
}
