//! The embedding example (`engine/examples/embed.rs`) builds, runs, and its
//! own class answers in-process calls on the shards that own the objects.

use std::process::Command;

use cairn_tests::temp_dir;

#[test]
fn the_embedding_example_serves_its_own_class_in_process() {
    let dir = temp_dir("embed");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf();
    let out = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "-p",
            "cairn-engine",
            "--example",
            "embed",
            "--",
        ])
        .args(["--once", "--shards", "2", "--listen", "127.0.0.1:0"])
        .args(["--segment-bytes", "1048576", "--data-dir"])
        .arg(dir.join("data"))
        .current_dir(root)
        .output()
        .expect("run the example");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with(r#"ada: 200 {"visits":1,"#), "{text}");
    assert!(lines[1].starts_with(r#"grace: 200 {"visits":1,"#), "{text}");
    assert!(lines[2].starts_with(r#"ada: 200 {"visits":2,"#), "{text}");
}
