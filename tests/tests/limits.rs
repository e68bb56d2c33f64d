//! Security of names, keys and limits, end to end: object names and keys made
//! of any bytes (`%00`, `%2F`, `..`, very long) reach only their own object
//! and never touch the filesystem, and every configured limit is enforced
//! with a clear answer (status plus JSON error code).

use std::path::Path;

use cairn_tests::{HttpResponse, Server};

fn code(r: &HttpResponse) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("error body is not JSON: {}", r.text()));
    v["error"]["code"].as_str().expect("error.code").to_string()
}

/// Every file under `dir`, relative.
fn files(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).expect("read data dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            files(&p, out);
        }
        out.push(p.to_string_lossy().into_owned());
    }
}

#[test]
fn names_and_keys_of_any_bytes_stay_inside_their_object() {
    let s = Server::start(2);
    let long = "n".repeat(4000);
    let names = [
        "plain",
        "plain%00",
        "%00",
        "..",
        "...",
        ".",
        "a%2F..%2F..%2Fetc%2Fpasswd",
        "%2F",
        "%FF%FE",
        "sp%20ace",
        long.as_str(),
    ];
    // Each object gets the same key with a value naming the object.
    for n in names {
        let r = s.send("PUT", &format!("/kv/{n}/keys/k%2F..%00"), n.as_bytes());
        assert_eq!(r.status, 200, "PUT in object {n:.40}: {}", r.text());
    }
    for n in names {
        let r = s.send("GET", &format!("/kv/{n}/keys/k%2F..%00"), b"");
        assert_eq!((r.status, r.text()), (200, n.to_string()), "object {n:.40}");
        let r = s.send("GET", &format!("/kv/{n}/keys"), b"");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("list JSON");
        assert_eq!(
            v["entries"].as_array().map(Vec::len),
            Some(1),
            "object {n:.40} sees only its key"
        );
    }
    // A percent-encoded name is the same name: `%2E%2E` is the object `..`.
    let r = s.send("GET", "/kv/%2E%2E/keys/k%2F..%00", b"");
    assert_eq!((r.status, r.text()), (200, "..".to_string()));
    // Keys of every byte value, and ones that look like paths, are distinct keys of one object.
    for b in 0u8..=255 {
        let r = s.send("PUT", &format!("/kv/bytes/keys/%{b:02X}"), &[b]);
        assert_eq!(r.status, 200, "key byte {b}");
    }
    for b in 0u8..=255 {
        let r = s.send("GET", &format!("/kv/bytes/keys/%{b:02X}"), b"");
        assert_eq!((r.status, r.body.clone()), (200, vec![b]), "key byte {b}");
    }
    let r = s.send("GET", "/kv/bytes/keys", b"");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("list JSON");
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(256));
    // A bad escape is a clear 400, not a different object.
    let r = s.send("GET", "/kv/%zz/keys/k", b"");
    assert_eq!((r.status, code(&r)), (400, "bad_request".into()));
    // An ID that is not 64 hex characters is refused, not resolved.
    for bad in ["..", "%2E%2E", &"0".repeat(63), &"g".repeat(64)] {
        let r = s.send("GET", &format!("/kv/id/{bad}/keys/k"), b"");
        assert_eq!(
            (r.status, code(&r)),
            (400, "bad_request".into()),
            "id {bad}"
        );
    }
    // Nothing named after a name or key reached the filesystem.
    let mut all = Vec::new();
    files(&s.data_dir, &mut all);
    for f in &all {
        assert!(
            !f.contains("passwd") && !f.contains("plain") && !f.contains("nnnn"),
            "a name reached the filesystem: {f}"
        );
    }
}

#[test]
fn every_configured_limit_answers_clearly() {
    let s = Server::start_with(
        2,
        &[
            "--key-bytes-max",
            "16",
            "--value-bytes-max",
            "64",
            "--body-bytes-max",
            "4096",
            "--header-bytes-max",
            "2048",
        ],
    );
    // Key: at the limit, and one past it.
    let k16 = "k".repeat(16);
    assert_eq!(
        s.send("PUT", &format!("/kv/m/keys/{k16}"), b"v").status,
        200
    );
    let r = s.send("PUT", &format!("/kv/m/keys/{k16}x"), b"v");
    assert_eq!(
        (r.status, code(&r)),
        (413, "too_large".into()),
        "{}",
        r.text()
    );
    // Value: at the limit, and one past it.
    assert_eq!(s.send("PUT", "/kv/m/keys/v", &[7u8; 64]).status, 200);
    let r = s.send("PUT", "/kv/m/keys/v", &[7u8; 65]);
    assert_eq!(
        (r.status, code(&r)),
        (413, "too_large".into()),
        "{}",
        r.text()
    );
    assert_eq!(
        s.send("GET", "/kv/m/keys/v", b"").body,
        vec![7u8; 64],
        "the refused write changed nothing"
    );
    // A batch with one key over the limit is refused whole.
    let r = s.send(
        "POST",
        "/kv/m/batch",
        format!("put a 1\nput {k16}x 2\n").as_bytes(),
    );
    assert_eq!(
        (r.status, code(&r)),
        (413, "too_large".into()),
        "{}",
        r.text()
    );
    assert_eq!(
        s.send("GET", "/kv/m/keys/a", b"").status,
        404,
        "nothing of the batch applied"
    );
    // A batch over 128 distinct keys.
    let many: String = (0..129).map(|i| format!("put b{i} 1\n")).collect();
    let r = s.send("POST", "/kv/m/batch", many.as_bytes());
    assert_eq!(
        (r.status, code(&r)),
        (413, "too_large".into()),
        "{}",
        r.text()
    );
    // Body over --body-bytes-max: 413 before the body is read, and the connection closes.
    let raw = b"PUT /kv/m/keys/big HTTP/1.1\r\nHost: c\r\nContent-Length: 4097\r\n\r\n";
    let got = s.raw_until_close(raw);
    let (r, _) = cairn_tests::parse_response(&got).expect("a response");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    // Header section over --header-bytes-max: 431, then close.
    let raw = format!(
        "GET /kv/m/keys/v HTTP/1.1\r\nHost: c\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(3000)
    );
    let got = s.raw_until_close(raw.as_bytes());
    let (r, _) = cairn_tests::parse_response(&got).expect("a response");
    assert_eq!(r.status, 431, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    // More than 64 header fields: 431, then close.
    let pads: String = (0..65).map(|i| format!("X-P{i}: 1\r\n")).collect();
    let raw = format!("GET /kv/m/keys/v HTTP/1.1\r\nHost: c\r\n{pads}\r\n");
    let got = s.raw_until_close(raw.as_bytes());
    let (r, _) = cairn_tests::parse_response(&got).expect("a response");
    assert_eq!(r.status, 431, "{}", r.text());
    // A request line over 8 KiB (cairn-proto's fixed limit, separate from
    // --header-bytes-max): 414, then close.
    let raw = format!(
        "GET /kv/{}/keys/v HTTP/1.1\r\nHost: c\r\n\r\n",
        "n".repeat(9000)
    );
    let got = s.raw_until_close(raw.as_bytes());
    let (r, _) = cairn_tests::parse_response(&got).expect("a response");
    assert_eq!(r.status, 414, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    // The server is fine afterwards.
    assert_eq!(s.send("GET", "/kv/m/keys/v", b"").status, 200);
}
