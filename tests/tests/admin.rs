//! End-to-end tests of the operator endpoints under `/_cairn/objects`:
//! access control, listing across shards with a cursor, showing an object's
//! storage, export and import, and what alarms leave behind.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_tests::{HttpResponse, Server, temp_dir};
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-token";
const AUTH: &str = "Authorization: Bearer s3cret-token";

fn with_token() -> Server {
    Server::start_in_with(&temp_dir("admin"), 4, &["--admin-token", TOKEN]).expect("start")
}

fn admin(s: &Server, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r: HttpResponse = s.send_with(method, path, &[AUTH], body.as_bytes());
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn admin_routes_refuse_without_the_token_and_work_with_it() {
    let s = with_token();
    assert_eq!(s.send("POST", "/counter/a/increment", b"").status, 200);
    let r = s.send("GET", "/_cairn/objects/counter", b"");
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").is_some());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    let r = s.send_with(
        "GET",
        "/_cairn/objects/counter",
        &["Authorization: Bearer wrong"],
        b"",
    );
    assert_eq!(r.status, 403);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "forbidden");
    let r = s.send_with(
        "GET",
        "/_cairn/objects/counter/a",
        &["Authorization: Basic x"],
        b"",
    );
    assert_eq!(r.status, 401);
    let (st, v) = admin(&s, "GET", "/_cairn/objects/counter", "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["objects"][0]["name"], "a");
    // Without a token configured, a loopback peer is served.
    let open = Server::start(1);
    assert_eq!(open.send("GET", "/_cairn/objects/counter", b"").status, 200);
}

#[test]
fn listing_pages_through_every_shard_with_a_cursor() {
    let s = with_token();
    let mut want = BTreeSet::new();
    for i in 0..30 {
        let name = format!("c{i}");
        assert_eq!(
            s.send("POST", &format!("/counter/{name}/increment"), b"")
                .status,
            200
        );
        want.insert(name);
    }
    assert_eq!(s.send("PUT", "/kv/other/keys/k", b"v").status, 200);
    let mut seen = Vec::new();
    let mut ids = Vec::new();
    let mut cursor = String::new();
    for _ in 0..20 {
        let (st, v) = admin(
            &s,
            "GET",
            &format!("/_cairn/objects/counter?limit=7{cursor}"),
            "",
        );
        assert_eq!(st, 200, "{v}");
        for o in v["objects"].as_array().unwrap() {
            seen.push(o["name"].as_str().unwrap().to_string());
            ids.push(o["id"].as_str().unwrap().to_string());
        }
        match v["next"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30, "each object exactly once: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), want);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "listed in ID order");
    let (st, v) = admin(&s, "GET", "/_cairn/objects/kv", "");
    assert_eq!((st, v["objects"].as_array().unwrap().len()), (200, 1));
    let (st, v) = admin(&s, "GET", "/_cairn/objects/nope", "");
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (st, _) = admin(&s, "GET", "/_cairn/objects/counter?cursor=zz", "");
    assert_eq!(st, 400);
    let (st, _) = admin(&s, "POST", "/_cairn/objects/counter", "");
    assert_eq!(st, 405);
}

#[test]
fn show_export_and_import_one_object() {
    let s = with_token();
    assert_eq!(s.send("PUT", "/kv/src/keys/text", b"hello").status, 200);
    assert_eq!(
        s.send("PUT", "/kv/src/keys/bin", &[0xff, 0x00, 0xfe])
            .status,
        200
    );
    let (st, v) = admin(&s, "GET", "/_cairn/objects/kv/src", "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["name"], "src");
    assert_eq!(v["alarm_ms"], Value::Null);
    assert_eq!(
        v["entries"],
        json!([{"key":"bin","value":{"base64":"/wD+"}},{"key":"text","value":"hello"}])
    );
    // By ID as well as by name.
    let id = v["id"].as_str().unwrap().to_string();
    let (st, by_id) = admin(&s, "GET", &format!("/_cairn/objects/kv/{id}"), "");
    assert_eq!((st, &by_id), (200, &v));
    let (st, v) = admin(&s, "GET", "/_cairn/objects/kv/src?limit=1", "");
    assert_eq!(
        (st, v["entries"].as_array().unwrap().len(), &v["next"]),
        (200, 1, &json!("bin"))
    );

    let (st, export) = admin(&s, "GET", "/_cairn/objects/kv/src/export", "");
    assert_eq!(st, 200, "{export}");
    assert_eq!(export["format"], "cairn-object-export/1");
    // Damage the object, then restore it from the export.
    assert_eq!(s.send("DELETE", "/kv/src/keys/text", b"").status, 200);
    assert_eq!(s.send("PUT", "/kv/src/keys/extra", b"x").status, 200);
    let (st, v) = admin(
        &s,
        "POST",
        "/_cairn/objects/kv/src/import",
        &export.to_string(),
    );
    assert_eq!((st, &v["imported"]), (200, &json!(2)), "{v}");
    assert_eq!(s.send("GET", "/kv/src/keys/text", b"").text(), "hello");
    assert_eq!(s.send("GET", "/kv/src/keys/extra", b"").status, 404);
    // Restore into another object (a copy).
    let (st, _) = admin(
        &s,
        "PUT",
        "/_cairn/objects/kv/copy/import",
        &export.to_string(),
    );
    assert_eq!(st, 200);
    assert_eq!(
        s.send("GET", "/kv/copy/keys/bin", b"").body,
        vec![0xff, 0x00, 0xfe]
    );

    let (st, _) = admin(&s, "POST", "/_cairn/objects/kv/src/import", "{bad");
    assert_eq!(st, 400);
    let (st, _) = admin(
        &s,
        "POST",
        "/_cairn/objects/counter/src/import",
        &export.to_string(),
    );
    assert_eq!(st, 400, "an export of another class is refused");
    let (st, _) = admin(&s, "GET", "/_cairn/objects/kv/src/import", "");
    assert_eq!(st, 405);
    let (st, _) = admin(&s, "GET", "/_cairn/objects/kv/never-written", "");
    assert_eq!(st, 404);
}

#[test]
fn alarms_delete_expired_sessions_and_cache_entries_from_storage() {
    let s = with_token();
    let r = s.send(
        "POST",
        "/session/s/login",
        br#"{"user":"a","ttl_ms":60000}"#,
    );
    assert_eq!(r.status, 200);
    let (st, v) = admin(&s, "GET", "/_cairn/objects/session/s", "");
    assert_eq!(st, 200);
    assert!(
        v["alarm_ms"].as_u64().is_some(),
        "the expiry alarm is visible: {v}"
    );
    let r = s.send("POST", "/session/t/login", br#"{"user":"a","ttl_ms":300}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        s.send("PUT", "/cache/c/entries/short?ttl_ms=300", b"x")
            .status,
        200
    );
    assert_eq!(
        s.send("PUT", "/cache/c/entries/long?ttl_ms=600000", b"y")
            .status,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (session_st, _) = admin(&s, "GET", "/_cairn/objects/session/t", "");
        let (_, cache) = admin(&s, "GET", "/_cairn/objects/cache/c", "");
        let keys: Vec<&str> = cache["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["key"].as_str())
            .collect();
        if session_st == 404 && !keys.iter().any(|k| k.contains("short")) {
            assert!(keys.contains(&"vlong"), "{keys:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alarms did not clean up: {cache}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A non-loopback address of this machine, if it has one (found by routing a
/// UDP socket; no packet is sent).
fn local_non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:1").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn without_a_token_only_loopback_peers_are_served() {
    let Some(ip) = local_non_loopback_ip() else {
        // Nothing to test from: every address of this machine is loopback.
        eprintln!("skipped: no non-loopback address");
        return;
    };
    let port = cairn_tests::free_port();
    let dir = temp_dir("admin-remote");
    let mut child = std::process::Command::new(cairn_tests::cairn_binary())
        .args(["--segment-bytes", "1048576", "--shards", "1"])
        .args(["--listen", &format!("0.0.0.0:{port}"), "--data-dir"])
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn cairn");
    let get = |host: std::net::IpAddr| -> Option<u16> {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect((host, port)).ok()?;
        c.set_read_timeout(Some(cairn_tests::STARTUP_TIMEOUT))
            .ok()?;
        c.write_all(
            b"GET /_cairn/objects/counter HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .ok()?;
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).ok()?;
        cairn_tests::parse_response(&buf).map(|(r, _)| r.status)
    };
    let deadline = std::time::Instant::now() + cairn_tests::STARTUP_TIMEOUT;
    let local = "127.0.0.1".parse().unwrap();
    let mut first = get(local);
    while first.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        first = get(local);
    }
    let remote = get(ip);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(first, Some(200), "a loopback peer is served");
    assert_eq!(remote, Some(403), "a peer on {ip} is refused");
}
