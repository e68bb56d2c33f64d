//! End-to-end tests of the `cairn` server over raw HTTP/1.1: the built-in
//! classes, routing, errors, pipelining across shards, and lifecycle.

use cairn_tests::{Server, temp_dir};

fn check(server: &Server, method: &str, path: &str, body: &str, status: u16, expected: &str) {
    let r = server.send(method, path, body.as_bytes());
    assert_eq!(
        (r.status, r.text().as_str()),
        (status, expected),
        "{method} {path}"
    );
}

#[test]
fn counter_and_kv_routes_answer_as_documented() {
    let s = Server::start(4);
    check(&s, "GET", "/counter/a", "", 200, r#"{"value":0}"#);
    check(
        &s,
        "POST",
        "/counter/a/increment",
        "",
        200,
        r#"{"value":1}"#,
    );
    check(
        &s,
        "POST",
        "/counter/a/increment?by=-11",
        "",
        200,
        r#"{"value":-10}"#,
    );
    check(&s, "GET", "/counter/a", "", 200, r#"{"value":-10}"#);
    check(
        &s,
        "POST",
        "/counter/big/increment?by=9223372036854775807",
        "",
        200,
        r#"{"value":9223372036854775807}"#,
    );
    check(
        &s,
        "POST",
        "/counter/big/increment",
        "",
        400,
        r#"{"error":{"code":"bad_request","message":"the counter would overflow"}}"#,
    );
    check(
        &s,
        "POST",
        "/counter/a/increment?by=x",
        "",
        400,
        r#"{"error":{"code":"bad_request","message":"by must be a signed 64-bit integer"}}"#,
    );
    check(&s, "PUT", "/kv/m/keys/a%2Fb", "v1", 200, r#"{"ok":true}"#);
    check(&s, "GET", "/kv/m/keys/a%2Fb", "", 200, "v1");
    check(
        &s,
        "GET",
        "/kv/m/keys/zz",
        "",
        404,
        r#"{"error":{"code":"not_found","message":"no such key"}}"#,
    );
    check(&s, "PUT", "/kv/m/keys/b", "2", 200, r#"{"ok":true}"#);
    check(&s, "PUT", "/kv/m/keys/c", "3", 200, r#"{"ok":true}"#);
    check(
        &s,
        "GET",
        "/kv/m/keys?prefix=a",
        "",
        200,
        r#"{"entries":[{"key":"a/b","value":"v1"}]}"#,
    );
    check(
        &s,
        "GET",
        "/kv/m/keys?start=b&limit=1",
        "",
        200,
        r#"{"entries":[{"key":"b","value":"2"}]}"#,
    );
    check(
        &s,
        "GET",
        "/kv/m/keys?start_after=b",
        "",
        200,
        r#"{"entries":[{"key":"c","value":"3"}]}"#,
    );
    check(
        &s,
        "GET",
        "/kv/m/keys?end=b&reverse",
        "",
        200,
        r#"{"entries":[{"key":"a/b","value":"v1"}]}"#,
    );
    check(&s, "DELETE", "/kv/m/keys/b", "", 200, r#"{"deleted":true}"#);
    check(
        &s,
        "DELETE",
        "/kv/m/keys/b",
        "",
        200,
        r#"{"deleted":false}"#,
    );
    check(
        &s,
        "POST",
        "/kv/m/batch",
        "put x 1\ndelete c\n",
        200,
        r#"{"applied":2}"#,
    );
    check(
        &s,
        "GET",
        "/kv/m/keys",
        "",
        200,
        r#"{"entries":[{"key":"a/b","value":"v1"},{"key":"x","value":"1"}]}"#,
    );
}

#[test]
fn a_bad_batch_line_applies_nothing() {
    let s = Server::start(2);
    let r = s.send("POST", "/kv/b/batch", b"put a 1\nfrobnicate\n");
    assert_eq!(r.status, 400);
    check(&s, "GET", "/kv/b/keys", "", 200, r#"{"entries":[]}"#);
}

#[test]
fn binary_values_round_trip_and_list_as_hex() {
    let s = Server::start(1);
    let r = s.send("PUT", "/kv/bin/keys/k", &[0, 159, 255]);
    assert_eq!(r.status, 200);
    assert_eq!(s.send("GET", "/kv/bin/keys/k", b"").body, vec![0, 159, 255]);
    check(
        &s,
        "GET",
        "/kv/bin/keys",
        "",
        200,
        r#"{"entries":[{"key":"k","value":{"hex":"009fff"}}]}"#,
    );
}

#[test]
fn objects_are_addressable_by_id() {
    let s = Server::start(4);
    check(
        &s,
        "POST",
        "/counter/a/increment?by=7",
        "",
        200,
        r#"{"value":7}"#,
    );
    // id_from_name("counter", "a"), a fixed vector in engine/src/id.rs.
    let id = "1c181967d19dbaadb6b3967f89762409d2183f2d1a6d82db3d628875ba08a83d";
    check(
        &s,
        "GET",
        &format!("/counter/id/{id}"),
        "",
        200,
        r#"{"value":7}"#,
    );
    let r = s.send("GET", "/counter/id/xyz", b"");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("64 hex characters"), "{}", r.text());
}

#[test]
fn unknown_routes_are_json_404s() {
    let s = Server::start(1);
    for path in [
        "/nope/x",
        "/counter",
        "/counter/",
        "/counter/a/what",
        "/kv/a/other",
    ] {
        let r = s.send("GET", path, b"");
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.text().contains(r#""code":"not_found""#),
            "{path}: {}",
            r.text()
        );
    }
}

#[test]
fn pipelined_responses_come_back_in_request_order_across_shards() {
    let s = Server::start(4);
    let mut raw = Vec::new();
    let names: Vec<String> = (0..16).map(|i| format!("p{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        raw.extend_from_slice(
            format!("POST /counter/{n}/increment?by={i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
    }
    let got = s.exchange(&raw, names.len());
    for (i, r) in got.iter().enumerate() {
        assert_eq!(
            r.text(),
            format!(r#"{{"value":{i}}}"#),
            "response {i} in order"
        );
    }
}

#[test]
fn malformed_requests_get_4xx_and_the_connection_closes() {
    let s = Server::start(1);
    let out = s.raw_until_close(b"GARBAGE\r\n\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
}

#[test]
fn the_root_says_what_answers_where_and_takes_only_reads() {
    let s = Server::start(1);
    let r = s.send("GET", "/", b"");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["server"], "cairn");
    assert_eq!(v["health"], "/_cairn/health");
    let post = s.send("POST", "/", b"x");
    assert_eq!(post.status, 405);
    assert!(
        post.text().contains("method_not_allowed"),
        "{}",
        post.text()
    );
}

#[test]
fn health_and_metrics_are_served() {
    let s = Server::start(2);
    let h = s.send("GET", "/_cairn/health", b"");
    assert_eq!(h.status, 200);
    assert!(h.text().starts_with(r#"{"status":"ok""#), "{}", h.text());
    let m = s.send("GET", "/_cairn/metrics", b"");
    assert_eq!(m.status, 200);
    assert!(
        m.text().contains("# TYPE cairn_requests_total counter"),
        "{}",
        m.text()
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let s = Server::start(2);
    check(
        &s,
        "POST",
        "/counter/t/increment",
        "",
        200,
        r#"{"value":1}"#,
    );
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn restarting_with_another_shard_count_is_refused_with_a_clear_message() {
    let dir = temp_dir("reshard");
    let s = Server::start_in(&dir, 2).unwrap();
    assert!(s.terminate().success());
    let err = Server::start_in(&dir, 3)
        .err()
        .expect("cairn refuses to start");
    assert!(err.contains("was created with 2 shards"), "{err}");
}

#[test]
fn acknowledged_writes_survive_a_restart_and_a_crash() {
    let dir = temp_dir("durable");
    let s = Server::start_in(&dir, 4).unwrap();
    for i in 0..20 {
        check(
            &s,
            "PUT",
            &format!("/kv/d{i}/keys/k"),
            &format!("v{i}"),
            200,
            r#"{"ok":true}"#,
        );
    }
    check(
        &s,
        "POST",
        "/counter/c/increment?by=3",
        "",
        200,
        r#"{"value":3}"#,
    );
    assert!(s.terminate().success());
    let s = Server::start_in(&dir, 4).unwrap();
    check(&s, "GET", "/kv/d7/keys/k", "", 200, "v7");
    check(
        &s,
        "POST",
        "/counter/c/increment",
        "",
        200,
        r#"{"value":4}"#,
    );
    // SIGKILL right after the acknowledgement: it must already be on disk.
    s.kill();
    let s = Server::start_in(&dir, 4).unwrap();
    check(&s, "GET", "/counter/c", "", 200, r#"{"value":4}"#);
    for i in 0..20 {
        check(
            &s,
            "GET",
            &format!("/kv/d{i}/keys/k"),
            "",
            200,
            &format!("v{i}"),
        );
    }
}

#[test]
fn kv_key_and_value_limits_hold_at_the_limit_and_refuse_one_past_it() {
    let s = Server::start(1);
    let value_max = 131_072;
    assert_eq!(
        s.send("PUT", "/kv/l/keys/v", &vec![b'x'; value_max]).status,
        200
    );
    let r = s.send("PUT", "/kv/l/keys/v", &vec![b'x'; value_max + 1]);
    assert_eq!(r.status, 413);
    assert!(r.text().contains(r#""code":"too_large""#), "{}", r.text());
    let key_max = 2048;
    let at = format!("/kv/l/keys/{}", "k".repeat(key_max));
    assert_eq!(s.send("PUT", &at, b"1").status, 200);
    let past = format!("/kv/l/keys/{}", "k".repeat(key_max + 1));
    assert_eq!(s.send("PUT", &past, b"1").status, 413);
}
