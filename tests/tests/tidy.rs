//! Repository lint gates that `cargo clippy` cannot express, run as a test so
//! that a plain `cargo nextest run` catches them.
//!
//! Rationale for each rule is in `docs/ARCHITECTURE.md` under "Cross-cutting
//! concerns: testing".

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every Rust source file the project owns, excluding build output, fuzz
/// corpora and vendored crates.
fn rust_sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                // vendor/: third-party crates kept in upstream's style.
                if name == "target"
                    || name == "vendor"
                    || name.starts_with('.')
                    || name == "corpus"
                    || name == "artifacts"
                {
                    continue;
                }
                walk(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_root(), &mut out);
    out.sort();
    assert!(
        !out.is_empty(),
        "tidy found no Rust sources; is the repo root right?"
    );
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_module_opens_with_a_doc_comment() {
    let mut missing = Vec::new();
    for path in rust_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(rel(&path));
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading `//!` doc line: {missing:#?}"
    );
}

#[test]
fn no_debugging_leftovers_in_sources() {
    // Built with concat! so this file does not trip its own rule.
    let banned = [
        concat!("dbg", "!("),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    let mut hits = Vec::new();
    for path in rust_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for b in banned {
                if line.contains(b) {
                    hits.push(format!("{}:{}: {}", rel(&path), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(hits.is_empty(), "debugging leftovers: {hits:#?}");
}

#[test]
fn lines_stay_within_120_columns() {
    let mut long = Vec::new();
    for path in rust_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.chars().count() > 120 {
                long.push(format!("{}:{}", rel(&path), n + 1));
            }
        }
    }
    assert!(long.is_empty(), "lines over 120 columns: {long:#?}");
}

/// True if `pat` occurs in `code` at the start of a word, so that an
/// identifier such as `is_unsafe` does not count as the keyword.
fn starts_word(code: &str, pat: &str) -> bool {
    code.match_indices(pat).any(|(i, _)| {
        code[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

#[test]
fn every_unsafe_block_is_justified() {
    let mut bare = Vec::new();
    for path in rust_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // Skip string literals such as this file's own patterns.
            if code.contains('"') {
                continue;
            }
            let opens_unsafe = [concat!("unsafe", " {"), concat!("unsafe", " impl")]
                .iter()
                .any(|pat| starts_word(code, pat));
            if !opens_unsafe {
                continue;
            }
            let window = &lines[n.saturating_sub(6)..=n];
            if !window.iter().any(|l| l.contains("SAFETY:")) {
                bare.push(format!("{}:{}", rel(&path), n + 1));
            }
        }
    }
    assert!(
        bare.is_empty(),
        "`unsafe` without a `// SAFETY:` comment just above: {bare:#?}"
    );
}

/// `proto` and `storage` know nothing of each other or of the engine, and the
/// sans-IO `proto` has no async runtime anywhere in its dependency tree.
#[test]
fn dependency_directions_hold() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resolve = &meta["resolve"]["nodes"];
    let packages = meta["packages"].as_array().unwrap();
    let name_of = |id: &str| -> String {
        packages
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["name"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    // Transitive normal (non-dev) dependencies of a package, by name.
    let closure = |root: &str| -> Vec<String> {
        let Some(start) = packages.iter().find(|p| p["name"] == root) else {
            return Vec::new();
        };
        let mut seen = vec![start["id"].as_str().unwrap().to_string()];
        let mut i = 0;
        while i < seen.len() {
            let node = resolve
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["id"] == seen[i].as_str());
            if let Some(node) = node {
                for dep in node["deps"].as_array().unwrap() {
                    let normal = dep["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null());
                    let id = dep["pkg"].as_str().unwrap().to_string();
                    if normal && !seen.contains(&id) {
                        seen.push(id);
                    }
                }
            }
            i += 1;
        }
        seen.iter().skip(1).map(|id| name_of(id)).collect()
    };
    let rules: [(&str, &[&str]); 2] = [
        (
            "cairn-proto",
            &[
                "cairn-storage",
                "cairn-engine",
                "glommio",
                "tokio",
                "io-uring",
            ],
        ),
        ("cairn-storage", &["cairn-proto", "cairn-engine"]),
    ];
    for (krate, forbidden) in rules {
        let deps = closure(krate);
        for f in forbidden {
            assert!(
                !deps.iter().any(|d| d == f),
                "{krate} must not depend on {f}, but its tree has it"
            );
        }
    }
}
