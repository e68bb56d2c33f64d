//! The engine's acceptance tests (issue 4), each against a real `cairn`
//! process built with the `test-hooks` feature: exact counts under
//! concurrency, durability across `kill -9`, the input and output gates,
//! alarms across restarts and with retries, eviction, panic isolation and
//! overload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::{HttpResponse, Server, temp_dir};

/// The `N` of a `{"value":N}` body.
fn value(r: &HttpResponse) -> i64 {
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
    v["value"]
        .as_i64()
        .unwrap_or_else(|| panic!("no value in {}", r.text()))
}

fn json(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.text()))
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sixty_four_clients_incrementing_a_hundred_counters_over_four_shards_count_exactly() {
    const CLIENTS: usize = 64;
    const ROUNDS: usize = 25;
    let s = Server::start(4);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = s.client();
            std::thread::spawn(move || {
                let mut mine = HashMap::new();
                for r in 0..ROUNDS {
                    let counter = (c * 7 + r * 13) % 100;
                    let resp = client
                        .request("POST", &format!("/counter/c{counter}/increment"), b"")
                        .expect("increment");
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    *mine.entry(counter).or_insert(0i64) += 1;
                }
                mine
            })
        })
        .collect();
    let mut want: HashMap<usize, i64> = HashMap::new();
    for t in threads {
        for (k, n) in t.join().expect("client thread") {
            *want.entry(k).or_default() += n;
        }
    }
    assert_eq!(want.values().sum::<i64>(), (CLIENTS * ROUNDS) as i64);
    let mut client = s.client();
    for counter in 0..100 {
        let r = client
            .request("GET", &format!("/counter/c{counter}"), b"")
            .expect("read");
        assert_eq!(
            value(&r),
            want.get(&counter).copied().unwrap_or(0),
            "c{counter}"
        );
    }
}

#[test]
fn after_kill_9_every_counter_is_between_its_acknowledged_and_its_sent_count() {
    const CLIENTS: usize = 16;
    const COUNTERS: usize = 20;
    let dir = temp_dir("kill9");
    let s = Server::start_in(&dir, 4).expect("start");
    // Per counter: increments acknowledged, and increments sent (acked + in flight).
    let acked = Arc::new(Mutex::new(vec![0i64; COUNTERS]));
    let sent = Arc::new(Mutex::new(vec![0i64; COUNTERS]));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = s.client();
            let (acked, sent) = (acked.clone(), sent.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut i = 0;
                while Instant::now() < deadline {
                    let counter = (c + i * 3) % COUNTERS;
                    i += 1;
                    sent.lock().unwrap()[counter] += 1;
                    match client.request("POST", &format!("/counter/k{counter}/increment"), b"") {
                        Ok(r) if r.status == 200 => acked.lock().unwrap()[counter] += 1,
                        Ok(r) => panic!("increment failed: {} {}", r.status, r.text()),
                        Err(_) => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Let the clients get going, then crash the server mid-stream.
    eventually(30, "some acknowledged increments", || {
        (acked.lock().unwrap().iter().sum::<i64>() >= 200).then_some(())
    });
    s.kill();
    for t in threads {
        t.join().expect("client thread");
    }
    let (acked, sent) = (acked.lock().unwrap().clone(), sent.lock().unwrap().clone());
    let s = Server::start_in(&dir, 4).expect("restart");
    let mut client = s.client();
    for k in 0..COUNTERS {
        let got = value(
            &client
                .request("GET", &format!("/counter/k{k}"), b"")
                .expect("read"),
        );
        assert!(
            acked[k] <= got && got <= sent[k],
            "k{k}: acknowledged {} <= recovered {got} <= sent {}",
            acked[k],
            sent[k]
        );
    }
}

#[test]
fn input_gate_a_read_modify_write_that_awaits_midway_loses_no_update() {
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 20;
    let s = Server::start(4);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut client = s.client();
            std::thread::spawn(move || {
                (0..ROUNDS)
                    .map(|_| {
                        let r = client
                            .request("POST", "/testhooks/gate/rmw", b"")
                            .expect("rmw");
                        assert_eq!(r.status, 200, "{}", r.text());
                        value(&r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    seen.sort_unstable();
    let total = (CLIENTS * ROUNDS) as i64;
    // Every update saw the one before it: the answers are exactly 1..=total.
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    let r = s.send("GET", "/testhooks/gate/rmw", b"");
    assert_eq!(value(&r), total);
}

#[test]
fn output_gate_no_response_that_follows_a_write_arrives_before_the_commit() {
    const DELAY_MS: u64 = 1500;
    let dir = temp_dir("outgate");
    let delay = DELAY_MS.to_string();
    let s = Server::start_in_with_env(
        &dir,
        2,
        &[],
        &[("CAIRN_TEST_COMMIT_DELAY_MS", delay.as_str())],
    )
    .expect("start");
    let addr = s.addr;
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut c = cairn_tests::Client::connect(addr);
        let r = c
            .request("POST", "/counter/og/increment", b"")
            .expect("write");
        (r, t0.elapsed())
    });
    // A reader that sees the uncommitted write must wait for its commit too.
    std::thread::sleep(Duration::from_millis(200));
    let mut c = s.client();
    let unrelated = c.request("GET", "/counter/untouched", b"").expect("read");
    let unrelated_at = t0.elapsed();
    let r = c.request("GET", "/counter/og", b"").expect("read");
    let read_at = t0.elapsed();
    let (w, write_at) = writer.join().expect("writer");
    assert_eq!((w.status, value(&w)), (200, 1));
    assert_eq!(value(&r), 1, "the read sees the write");
    let delay = Duration::from_millis(DELAY_MS);
    assert!(write_at >= delay, "write acknowledged after {write_at:?}");
    assert!(
        read_at >= delay,
        "read of the unconfirmed write released after {read_at:?}"
    );
    assert_eq!(value(&unrelated), 0);
    // An object with no pending write is not held: the delay is the gate, not the server.
    assert!(unrelated_at < write_at, "{unrelated_at:?} vs {write_at:?}");
}

#[test]
fn an_alarm_set_before_a_crash_fires_after_the_restart() {
    let dir = temp_dir("alarm-restart");
    let s = Server::start_in(&dir, 2).expect("start");
    let r = s.send("POST", "/testhooks/wake/alarm?in_ms=1500", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    s.kill();
    let s = Server::start_in(&dir, 2).expect("restart");
    let got = eventually(30, "the alarm to fire", || {
        let v = json(&s.send("GET", "/testhooks/wake/alarm", b""));
        (v["fired"] == 1).then_some(v)
    });
    assert_eq!(got["runs"], 1);
}

#[test]
fn a_failing_alarm_is_retried_with_growing_backoff_until_it_succeeds() {
    let s = Server::start(2);
    let r = s.send("POST", "/testhooks/retry/alarm?in_ms=0&fail=2", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = eventually(40, "the alarm to succeed", || {
        let v = json(&s.send("GET", "/testhooks/retry/alarm", b""));
        (v["fired"] == 1).then_some(v)
    });
    assert_eq!(v["runs"], 3, "two failures, then success: {v}");
    let t: Vec<u64> = v["times"]
        .as_array()
        .expect("times")
        .iter()
        .map(|x| x.as_u64().expect("ms"))
        .collect();
    // Backoff base 1000 ms, doubling (allow the timer some slack).
    let (first, second) = (t[1] - t[0], t[2] - t[1]);
    assert!(first >= 900, "first retry after {first} ms");
    assert!(second >= 1900, "second retry after {second} ms");
}

/// The value of an unlabelled-by-class metric, summed over its lines.
fn metric(s: &Server, name: &str) -> u64 {
    let text = s.send("GET", "/_cairn/metrics", b"").text();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn an_evicted_object_is_reactivated_with_its_state() {
    let s = Server::start_with(1, &["--idle-ms-evict", "100"]);
    for _ in 0..3 {
        assert_eq!(s.send("POST", "/counter/ev/increment", b"").status, 200);
    }
    let before = metric(&s, "cairn_activations_total");
    eventually(20, "the counter to be evicted", || {
        (metric(&s, "cairn_evictions_total") >= 1).then_some(())
    });
    assert_eq!(value(&s.send("GET", "/counter/ev", b"")), 3);
    assert!(
        metric(&s, "cairn_activations_total") > before,
        "it was re-activated"
    );
}

#[test]
fn a_panicking_handler_answers_500_and_the_next_requests_succeed() {
    let s = Server::start(2);
    assert_eq!(s.send("POST", "/testhooks/p/rmw", b"").status, 200);
    let r = s.send("POST", "/testhooks/p/panic", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["error"]["code"], "handler_panicked");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("request id"),
        "{v}"
    );
    // The same object (reset from storage) and any other object still work.
    assert_eq!(value(&s.send("POST", "/testhooks/p/rmw", b"")), 2);
    assert_eq!(s.send("GET", "/counter/other", b"").status, 200);
}

#[test]
fn overload_answers_503_with_retry_after_and_the_server_recovers() {
    let s = Server::start_with(1, &["--object-queue-depth-max", "2"]);
    let threads: Vec<_> = (0..12)
        .map(|_| {
            let mut c = s.client();
            std::thread::spawn(move || {
                c.request("GET", "/testhooks/slow/sleep?ms=400", b"")
                    .expect("answer")
            })
        })
        .collect();
    let answers: Vec<HttpResponse> = threads
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    let refused: Vec<&HttpResponse> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(
        !refused.is_empty(),
        "12 requests to a 2-deep queue: some refused"
    );
    assert!(answers.iter().all(|r| r.status == 200 || r.status == 503));
    for r in refused {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(json(r)["error"]["code"], "overloaded");
    }
    // Load gone: the same object and others answer normally.
    let r = s.send("GET", "/testhooks/slow/sleep?ms=0", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.send("GET", "/counter/x", b"").status, 200);
}
