//! Session expiry by alarm: a session idle past its TTL is deleted by the
//! object's alarm with no request arriving, activity postpones it, and an
//! expiry that falls while the server is down happens after the restart.

use std::time::Duration;

use cairn_tests::{Server, temp_dir};

fn alarms_fired(s: &Server) -> u64 {
    let m = s.send("GET", "/_cairn/metrics", b"").text();
    m.lines()
        .find(|l| l.starts_with("cairn_alarms_fired_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("metric present")
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_idle_session_expires_by_alarm_and_activity_postpones_it() {
    // One shard, so the metrics endpoint sees every alarm.
    let s = Server::start(1);
    let r = s.send(
        "POST",
        "/session/idle/login",
        br#"{"user":"a","ttl_ms":800}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.send(
        "POST",
        "/session/busy/login",
        br#"{"user":"b","ttl_ms":3000}"#,
    );
    assert_eq!(r.status, 200);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(s.send("POST", "/session/busy/activity", b"").status, 200);
    }
    // 2 s after login: `idle` (TTL 0.8 s) is gone, by its alarm.
    eventually("the idle session's alarm fires", || alarms_fired(&s) >= 1);
    assert_eq!(s.send("GET", "/session/idle", b"").status, 404);
    assert_eq!(s.send("GET", "/session/busy", b"").status, 200);
    eventually("the busy session expires once idle", || {
        s.send("GET", "/session/busy", b"").status == 404
    });
}

#[test]
fn a_session_expiring_while_the_server_is_down_is_deleted_after_restart() {
    let dir = temp_dir("session-ttl-restart");
    let s = Server::start_in(&dir, 1).expect("start");
    let r = s.send("POST", "/session/s/login", br#"{"user":"a","ttl_ms":1000}"#);
    assert_eq!(r.status, 200);
    assert_eq!(s.send("GET", "/_cairn/objects/session/s", b"").status, 200);
    s.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let s = Server::start_in(&dir, 1).expect("restart");
    // The alarm was recovered from storage and fires with no request for the
    // session arriving first.
    eventually("the recovered alarm fires", || alarms_fired(&s) >= 1);
    assert_eq!(s.send("GET", "/session/s", b"").status, 404);
    // The alarm deleted the session's storage (seen through the loopback-only
    // admin view: nothing is stored for the object any more).
    let r = s.send("GET", "/_cairn/objects/session/s", b"");
    assert_eq!(r.status, 404, "{}", r.text());
}
