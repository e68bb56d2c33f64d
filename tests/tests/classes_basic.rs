//! End-to-end tests of the article-pattern classes (`property`, `ratelimit`,
//! `session`, `events`, `cache`) against a real `cairn`: their behaviour, their
//! answers to bad input, and their state surviving `kill -9`.

use cairn_tests::{HttpResponse, Server, temp_dir};
use serde_json::{Value, json};

fn call(s: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = s.send(method, path, body.as_bytes());
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn ok(s: &Server, method: &str, path: &str, body: &str) -> Value {
    let (st, v) = call(s, method, path, body);
    assert!((200..300).contains(&st), "{method} {path}: {st} {v}");
    v
}

/// Asserts a JSON error answer with `status` and `code`.
fn refused(s: &Server, method: &str, path: &str, body: &str, status: u16, code: &str) {
    let r: HttpResponse = s.send(method, path, body.as_bytes());
    assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).expect("error body is JSON");
    assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

#[test]
fn property_stores_a_json_document_with_its_update_time() {
    let s = Server::start(2);
    refused(&s, "GET", "/property/p1", "", 404, "not_found");
    let put = ok(
        &s,
        "PUT",
        "/property/p1",
        r#"{"address":"1 Main St","beds":3}"#,
    );
    assert_eq!(put["doc"], json!({"address":"1 Main St","beds":3}));
    let t1 = put["updated_ms"].as_u64().unwrap();
    let got = ok(&s, "GET", "/property/p1", "");
    assert_eq!(got, put);
    let patched = ok(
        &s,
        "PATCH",
        "/property/p1",
        r#"{"beds":4,"address":null,"pool":true}"#,
    );
    assert_eq!(patched["doc"], json!({"beds":4,"pool":true}));
    assert!(patched["updated_ms"].as_u64().unwrap() >= t1);
    // The article's route still works.
    let upd = ok(&s, "POST", "/property/p1/update", r#"[1,2]"#);
    assert_eq!(upd["doc"], json!([1, 2]));

    refused(&s, "PUT", "/property/p1", "{not json", 400, "bad_request");
    refused(&s, "PATCH", "/property/p1", "[1]", 400, "bad_request");
    refused(&s, "POST", "/property/p1", "{}", 405, "method_not_allowed");
    refused(
        &s,
        "GET",
        "/property/p1/update",
        "",
        405,
        "method_not_allowed",
    );
    refused(&s, "GET", "/property/p1/nope", "", 404, "not_found");
    // A refused update changed nothing.
    assert_eq!(ok(&s, "GET", "/property/p1", "")["doc"], json!([1, 2]));
    assert_eq!(
        ok(&s, "DELETE", "/property/p1", ""),
        json!({"deleted": true})
    );
    refused(&s, "GET", "/property/p1", "", 404, "not_found");
}

#[test]
fn ratelimit_answers_200_then_429_with_headers() {
    let s = Server::start(2);
    let cfg = ok(
        &s,
        "PUT",
        "/ratelimit/c1/config",
        r#"{"limit":2,"window_ms":60000}"#,
    );
    assert_eq!(
        cfg,
        json!({"algorithm":"sliding_window","limit":2,"window_ms":60000})
    );
    let r = s.send("POST", "/ratelimit/c1/check", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    assert_eq!(r.header("x-ratelimit-reset"), Some("60"));
    let r = s.send("POST", "/ratelimit/c1/check", b"");
    assert_eq!(
        (r.status, r.header("x-ratelimit-remaining")),
        (200, Some("0"))
    );
    let r = s.send("POST", "/ratelimit/c1/check", b"");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "retry-after {retry}");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");

    let st = ok(&s, "GET", "/ratelimit/c1", "");
    assert_eq!(
        (st["allowed_total"].as_u64(), st["denied_total"].as_u64()),
        (Some(2), Some(1))
    );

    // Token bucket: capacity 1, slow refill.
    ok(
        &s,
        "PUT",
        "/ratelimit/b1/config",
        r#"{"algorithm":"token_bucket","capacity":1,"refill_per_sec":0.01}"#,
    );
    assert_eq!(s.send("POST", "/ratelimit/b1/check", b"").status, 200);
    let r = s.send("POST", "/ratelimit/b1/check", b"");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 90);

    // Defaults apply without a config call.
    let r = s.send("POST", "/ratelimit/fresh/check", b"");
    assert_eq!(
        (r.status, r.header("x-ratelimit-limit")),
        (200, Some("100"))
    );

    refused(&s, "PUT", "/ratelimit/c1/config", "{", 400, "bad_request");
    refused(
        &s,
        "PUT",
        "/ratelimit/c1/config",
        r#"{"limit":2}"#,
        400,
        "bad_request",
    );
    refused(
        &s,
        "PUT",
        "/ratelimit/c1/config",
        r#"{"limit":0,"window_ms":5}"#,
        400,
        "bad_request",
    );
    refused(
        &s,
        "PUT",
        "/ratelimit/c1/config",
        r#"{"algorithm":"magic"}"#,
        400,
        "bad_request",
    );
    refused(
        &s,
        "GET",
        "/ratelimit/c1/check",
        "",
        405,
        "method_not_allowed",
    );
    refused(
        &s,
        "POST",
        "/ratelimit/c1/config",
        "{}",
        405,
        "method_not_allowed",
    );
    // The refused configs left the limiter as it was.
    assert_eq!(s.send("POST", "/ratelimit/c1/check", b"").status, 429);
}

#[test]
fn session_login_activity_read_logout() {
    let s = Server::start(2);
    refused(&s, "GET", "/session/t1", "", 404, "not_found");
    refused(&s, "POST", "/session/t1/activity", "", 404, "not_found");
    let login = ok(
        &s,
        "POST",
        "/session/t1/login",
        r#"{"user":"alice","data":{"role":"admin"}}"#,
    );
    assert_eq!(login["user"], "alice");
    assert_eq!(login["data"], json!({"role":"admin"}));
    assert_eq!(login["ttl_ms"], 1_800_000);
    let exp1 = login["expires_ms"].as_u64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let act = ok(&s, "POST", "/session/t1/activity", "");
    assert!(act["expires_ms"].as_u64().unwrap() > exp1);
    assert_eq!(ok(&s, "GET", "/session/t1", ""), act);
    assert_eq!(
        ok(&s, "POST", "/session/t1/logout", ""),
        json!({"logged_out": true})
    );
    refused(&s, "GET", "/session/t1", "", 404, "not_found");
    refused(&s, "POST", "/session/t1/logout", "", 404, "not_found");

    refused(&s, "POST", "/session/t2/login", "{oops", 400, "bad_request");
    refused(
        &s,
        "POST",
        "/session/t2/login",
        r#"{"data":1}"#,
        400,
        "bad_request",
    );
    refused(
        &s,
        "POST",
        "/session/t2/login",
        r#"{"user":"a","ttl_ms":0}"#,
        400,
        "bad_request",
    );
    refused(
        &s,
        "POST",
        "/session/t2/login",
        r#"{"user":7}"#,
        400,
        "bad_request",
    );
    refused(
        &s,
        "GET",
        "/session/t2/login",
        "",
        405,
        "method_not_allowed",
    );
    refused(&s, "DELETE", "/session/t2", "", 405, "method_not_allowed");
}

#[test]
fn events_append_with_sequence_and_read_by_cursor() {
    let s = Server::start(2);
    assert_eq!(ok(&s, "GET", "/events/a/count", ""), json!({"count": 0}));
    let mut last_ts = 0;
    for i in 1..=7u64 {
        let ty = if i % 2 == 0 { "even" } else { "odd" };
        let body = json!({"type": ty, "data": {"i": i}, "user": "u1"}).to_string();
        let (st, ev) = call(&s, "POST", "/events/a/events", &body);
        assert_eq!(st, 201, "{ev}");
        assert_eq!(ev["seq"], i);
        let ts = ev["ts_ms"].as_u64().unwrap();
        assert!(ts >= last_ts);
        last_ts = ts;
    }
    assert_eq!(ok(&s, "GET", "/events/a/count", ""), json!({"count": 7}));
    let seqs = |v: &Value| -> Vec<u64> {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let p1 = ok(&s, "GET", "/events/a/events?limit=3", "");
    assert_eq!((seqs(&p1), p1["next"].clone()), (vec![1, 2, 3], json!(3)));
    let p2 = ok(&s, "GET", "/events/a/events?limit=3&after=3", "");
    assert_eq!((seqs(&p2), p2["next"].clone()), (vec![4, 5, 6], json!(6)));
    let p3 = ok(&s, "GET", "/events/a/events?limit=3&after=6", "");
    assert_eq!((seqs(&p3), p3["next"].clone()), (vec![7], Value::Null));
    let d1 = ok(&s, "GET", "/events/a/events?order=desc&limit=2", "");
    assert_eq!((seqs(&d1), d1["next"].clone()), (vec![7, 6], json!(6)));
    let d2 = ok(
        &s,
        "GET",
        "/events/a/events?order=desc&limit=10&after=6",
        "",
    );
    assert_eq!(
        (seqs(&d2), d2["next"].clone()),
        (vec![5, 4, 3, 2, 1], Value::Null)
    );
    let even = ok(&s, "GET", "/events/a/events?type=even", "");
    assert_eq!(seqs(&even), vec![2, 4, 6]);
    let odd_desc = ok(
        &s,
        "GET",
        "/events/a/events?type=odd&order=desc&limit=2",
        "",
    );
    assert_eq!(seqs(&odd_desc), vec![7, 5]);
    assert_eq!(p1["events"][1]["data"], json!({"i": 2}));

    refused(&s, "POST", "/events/a/events", "nope", 400, "bad_request");
    refused(
        &s,
        "POST",
        "/events/a/events",
        r#"{"data":1}"#,
        400,
        "bad_request",
    );
    refused(
        &s,
        "GET",
        "/events/a/events?limit=0",
        "",
        400,
        "bad_request",
    );
    refused(
        &s,
        "GET",
        "/events/a/events?after=x",
        "",
        400,
        "bad_request",
    );
    refused(
        &s,
        "GET",
        "/events/a/events?order=up",
        "",
        400,
        "bad_request",
    );
    refused(
        &s,
        "DELETE",
        "/events/a/events",
        "",
        405,
        "method_not_allowed",
    );
    refused(&s, "POST", "/events/a/count", "", 405, "method_not_allowed");
}

#[test]
fn cache_reads_through_bounds_residents_and_expires() {
    let s = Server::start(2);
    ok(&s, "PUT", "/cache/c/config", r#"{"max_resident":2}"#);
    refused(&s, "GET", "/cache/c/entries/a", "", 404, "not_found");
    for k in ["a", "b", "c"] {
        ok(
            &s,
            "PUT",
            &format!("/cache/c/entries/{k}?ttl_ms=600000"),
            &format!("value-{k}"),
        );
    }
    let st = ok(&s, "GET", "/cache/c/stats", "");
    assert_eq!(st["resident"], 2, "{st}");
    // `a` was least recently used, so it is no longer resident: a miss that
    // reads through from storage.
    let r = s.send("GET", "/cache/c/entries/a", b"");
    assert_eq!(
        (r.status, r.text().as_str(), r.header("x-cache")),
        (200, "value-a", Some("miss"))
    );
    let r = s.send("GET", "/cache/c/entries/a", b"");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("hit")));
    assert_eq!(ok(&s, "GET", "/cache/c/stats", "")["resident"], 2);

    // A short TTL: gone from reads at once, and from storage by the alarm.
    ok(&s, "PUT", "/cache/c/entries/short?ttl_ms=300", "x");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    refused(&s, "GET", "/cache/c/entries/short", "", 404, "not_found");
    assert_eq!(
        ok(&s, "DELETE", "/cache/c/entries/b", ""),
        json!({"deleted": true})
    );
    assert_eq!(
        ok(&s, "DELETE", "/cache/c/entries/b", ""),
        json!({"deleted": false})
    );

    refused(
        &s,
        "PUT",
        "/cache/c/entries/a?ttl_ms=0",
        "v",
        400,
        "bad_request",
    );
    refused(
        &s,
        "PUT",
        "/cache/c/entries/a?ttl_ms=x",
        "v",
        400,
        "bad_request",
    );
    refused(&s, "PUT", "/cache/c/config", "[]", 400, "bad_request");
    refused(&s, "PUT", "/cache/c/config", "{}", 400, "bad_request");
    refused(
        &s,
        "POST",
        "/cache/c/entries/a",
        "",
        405,
        "method_not_allowed",
    );
    refused(&s, "POST", "/cache/c/stats", "", 405, "method_not_allowed");
}

#[test]
fn every_class_keeps_its_state_across_kill_9() {
    let dir = temp_dir("classes-restart");
    let s = Server::start_in(&dir, 2).expect("start");
    let prop = ok(&s, "PUT", "/property/home", r#"{"beds":2}"#);
    ok(
        &s,
        "PUT",
        "/ratelimit/k/config",
        r#"{"limit":3,"window_ms":600000}"#,
    );
    for _ in 0..3 {
        assert_eq!(s.send("POST", "/ratelimit/k/check", b"").status, 200);
    }
    let sess = ok(&s, "POST", "/session/tok/login", r#"{"user":"bob"}"#);
    for i in 0..5 {
        ok(
            &s,
            "POST",
            "/events/log/events",
            &json!({"type":"t","data":i}).to_string(),
        );
    }
    ok(&s, "PUT", "/cache/c/entries/k?ttl_ms=600000", "cached");
    s.kill();

    let s = Server::start_in(&dir, 2).expect("restart");
    assert_eq!(ok(&s, "GET", "/property/home", ""), prop);
    // The limiter remembers the admitted checks: a crash does not reset it.
    assert_eq!(s.send("POST", "/ratelimit/k/check", b"").status, 429);
    assert_eq!(ok(&s, "GET", "/ratelimit/k", "")["allowed_total"], 3);
    assert_eq!(ok(&s, "GET", "/session/tok", ""), sess);
    assert_eq!(ok(&s, "GET", "/events/log/count", ""), json!({"count": 5}));
    let ev = ok(&s, "POST", "/events/log/events", r#"{"type":"t"}"#);
    assert_eq!(ev["seq"], 6, "sequence numbers continue after a restart");
    let r = s.send("GET", "/cache/c/entries/k", b"");
    assert_eq!(
        (r.status, r.text().as_str(), r.header("x-cache")),
        (200, "cached", Some("miss"))
    );
}
