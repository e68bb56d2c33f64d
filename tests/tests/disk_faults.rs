//! Disk faults under a real server: a full disk and a failing fdatasync make
//! writes fail with 507 `insufficient_storage` or 503 `storage_failed` and a
//! JSON error; reads of acknowledged data keep working; the state shows in
//! `/_cairn/health` (503 `read_only`) and `/_cairn/metrics`
//! (`cairn_storage_read_only 1`); after a restart on a healthy disk nothing
//! acknowledged is missing.
//!
//! Two ways in: the `test-hooks` fault layer (`engine/src/fault_disk.rs`,
//! driven by the file named in `CAIRN_TEST_FAULT_FILE`), which the harness
//! always builds; and a real ENOSPC on a tiny tmpfs, which needs `mount`
//! (root): without it that test says so and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_tests::{HttpResponse, Server, temp_dir};

fn code(r: &HttpResponse) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("error body is not JSON: {} {}", r.status, r.text()));
    v["error"]["code"].as_str().expect("error.code").to_string()
}

fn metric(s: &Server, name: &str) -> u64 {
    let text = s.send("GET", "/_cairn/metrics", b"").text();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

/// Puts `n` keys into `obj`, each acknowledged; returns their names.
fn fill(s: &Server, obj: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let k = format!("k{i}");
            let r = s.send("PUT", &format!("/kv/{obj}/keys/{k}"), k.as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
            k
        })
        .collect()
}

fn assert_present(s: &Server, obj: &str, keys: &[String]) {
    for k in keys {
        let r = s.send("GET", &format!("/kv/{obj}/keys/{k}"), b"");
        assert_eq!(
            (r.status, r.text()),
            (200, k.clone()),
            "{obj}/{k} after the fault"
        );
    }
}

/// Drives one injected fault: `fault` is the trigger file's content,
/// `status`/`want` the answer a write must get.
fn injected(fault: &str, status: u16, want: &str) {
    let dir = temp_dir("faults");
    let trigger = dir.join("fault");
    let env = [(
        "CAIRN_TEST_FAULT_FILE",
        trigger.to_str().expect("utf-8 path"),
    )];
    let s = Server::start_in_with_env(&dir, 1, &[], &env).expect("cairn starts");
    let a = fill(&s, "a", 20);
    let b = fill(&s, "b", 20);
    assert_eq!(s.send("GET", "/_cairn/health", b"").status, 200);
    assert_eq!(metric(&s, "cairn_storage_read_only"), 0);

    std::fs::write(&trigger, fault).expect("arm the fault");
    let r = s.send("PUT", "/kv/c/keys/doomed", b"x");
    assert_eq!(
        (r.status, code(&r)),
        (status, want.to_string()),
        "{}",
        r.text()
    );
    // The store is read-only now: every later write fails the same way, on any object.
    let r = s.send("POST", "/counter/n/increment", b"");
    assert!(matches!(r.status, 503 | 507), "{} {}", r.status, r.text());
    assert!(matches!(
        code(&r).as_str(),
        "storage_failed" | "insufficient_storage"
    ));
    // Reads of acknowledged data go on.
    assert_present(&s, "a", &a);
    let r = s.send("GET", "/kv/b/keys", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // Health and metrics say so.
    let h = s.send("GET", "/_cairn/health", b"");
    assert_eq!(h.status, 503, "{}", h.text());
    assert!(h.text().contains(r#""status":"read_only""#), "{}", h.text());
    assert_eq!(metric(&s, "cairn_storage_read_only"), 1);
    assert!(metric(&s, "cairn_storage_failures_total") >= 1);

    // Heal the disk, crash, restart: everything acknowledged is there.
    std::fs::remove_file(&trigger).expect("disarm");
    s.kill();
    let s = Server::start_in_with_env(&dir, 1, &[], &env).expect("cairn restarts");
    assert_eq!(s.send("GET", "/_cairn/health", b"").status, 200);
    assert_present(&s, "a", &a);
    assert_present(&s, "b", &b);
    assert_eq!(
        s.send("PUT", "/kv/c/keys/after", b"y").status,
        200,
        "writable again"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_fdatasync_answers_503_and_keeps_reads() {
    injected("fdatasync", 503, "storage_failed");
}

#[test]
fn a_full_disk_answers_507_and_keeps_reads() {
    injected("enospc", 507, "insufficient_storage");
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_really_full_filesystem_answers_507_and_loses_nothing_acknowledged() {
    let dir = temp_dir("enospc");
    let Some(fs) = Tmpfs::mount(&dir, "3m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let s = Server::start_in(&dir, 1).expect("cairn starts on a small tmpfs");
    let early = fill(&s, "early", 10);
    // Fill the disk with 60 KB values until a write is refused.
    let value = vec![b'v'; 60_000];
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        let r = s.send("PUT", &format!("/kv/filler/keys/f{i}"), &value);
        if r.status == 200 {
            acked.push(i);
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a 3 MiB filesystem fills up");
    assert_eq!(
        (r.status, code(&r)),
        (507, "insufficient_storage".into()),
        "{}",
        r.text()
    );
    assert!(!acked.is_empty(), "some writes fit before the disk filled");
    assert_present(&s, "early", &early);
    assert_eq!(s.send("GET", "/_cairn/health", b"").status, 503);
    assert_eq!(metric(&s, "cairn_storage_read_only"), 1);
    // More room, a crash, a restart: every acknowledged write is there.
    s.kill();
    fs.resize("32m");
    let s = Server::start_in(&dir, 1).expect("cairn restarts");
    assert_present(&s, "early", &early);
    for i in acked {
        let r = s.send("GET", &format!("/kv/filler/keys/f{i}"), b"");
        assert_eq!((r.status, r.body.len()), (200, value.len()), "filler f{i}");
    }
    drop(s);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
