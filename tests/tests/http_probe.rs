//! Runs the external HTTP/1.1 robustness and smuggling probe
//! (`../shared/conformance/http_probe.py`, 69 raw-socket cases) against a real
//! `cairn` and requires zero failures.
//!
//! The probe lives outside the repository. If it (or `python3`) is absent the
//! test says so and passes, unless `CAIRN_REQUIRE_CONFORMANCE` is set, in
//! which case absence is a failure. `CAIRN_CONFORMANCE_DIR` points elsewhere.

use std::process::Command;

use cairn_tests::{Server, conformance_dir};

fn required() -> bool {
    std::env::var_os("CAIRN_REQUIRE_CONFORMANCE").is_some()
}

#[test]
fn http_probe_reports_zero_failures() {
    let Some(dir) = conformance_dir() else {
        assert!(
            !required(),
            "CAIRN_REQUIRE_CONFORMANCE is set but the conformance dir is absent"
        );
        eprintln!("SKIPPED: ../shared/conformance not found (set CAIRN_CONFORMANCE_DIR)");
        return;
    };
    let probe = dir.join("http_probe.py");
    if !probe.is_file() || Command::new("python3").arg("--version").output().is_err() {
        assert!(
            !required(),
            "CAIRN_REQUIRE_CONFORMANCE is set but http_probe.py or python3 is absent"
        );
        eprintln!("SKIPPED: {} or python3 not found", probe.display());
        return;
    }
    // Every default, the server's and the probe's (path `/`, its own
    // timeouts): what a user who points the probe at `cairn` runs. The
    // server's header and body timeouts (10 s) are under the probe's
    // --slow-timeout (15 s), so the slowloris cases see 408s.
    let s = Server::start(2);
    let out = Command::new("python3")
        .arg(&probe)
        .args(["127.0.0.1", &s.addr.port().to_string()])
        .args(["--max-seconds", "240"])
        .output()
        .expect("run http_probe.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    let summary = stdout.lines().last().unwrap_or("");
    eprintln!("http_probe: {summary}");
    for l in stdout.lines().filter(|l| l.starts_with("WARN")) {
        eprintln!("{l}");
    }
    assert!(
        fails.is_empty() && out.status.success(),
        "http_probe failed ({summary}):\n{}\n{stderr}",
        fails.join("\n")
    );
    assert!(
        summary.ends_with(" 0 failed"),
        "unexpected summary: {summary}\n{stderr}"
    );
    // The server survived all of it.
    assert_eq!(s.send("GET", "/_cairn/health", b"").status, 200);
}
