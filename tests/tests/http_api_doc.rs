//! Runs every `curl` example in `docs/HTTP-API.md` and `docs/OPERATIONS.md`
//! against a live server and checks the documented answer, so the docs
//! cannot drift from the server.
//!
//! **Annotation format** (described for writers in `docs/HTTP-API.md`): a
//! fenced ```` ```sh ```` block whose command is `curl ...` must be followed
//! by a fenced ```` ```expect ```` block:
//!
//! ```text
//! 429                      <- the status (an `HTTP/1.1 ` prefix is allowed)
//! X-RateLimit-Limit: 2     <- optional header lines, up to a blank line
//!
//! {"error":"<any>"}        <- the body
//! ```
//!
//! A JSON body is compared as JSON, where the strings `"<any>"`,
//! `"<number>"` and `"<string>"` match any value, number or string. Other
//! bodies are compared as text, and `<any>` alone skips the body. Header
//! values may also be `<any>` or `<number>`. Examples run in file order on one
//! server (2 shards, started with `--admin-token secret`), so state carries
//! from one example to the next.

use cairn_tests::{Server, temp_dir};
use serde_json::Value;

struct Example {
    line: usize,
    curl: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// The `(sh block, expect block)` pairs of a markdown file.
fn examples(doc: &str) -> Vec<Example> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let block = |start: usize| -> (Vec<&str>, usize) {
        let mut j = start + 1;
        let mut body = Vec::new();
        while j < lines.len() && lines[j].trim() != "```" {
            body.push(lines[j]);
            j += 1;
        }
        (body, j + 1)
    };
    while i < lines.len() {
        if lines[i].trim() == "```sh" {
            let (cmd, next) = block(i);
            let cmd = cmd.join("\n").replace("\\\n", " ");
            if !cmd.trim_start().starts_with("curl ") {
                i = next;
                continue;
            }
            let mut k = next;
            while k < lines.len() && lines[k].trim().is_empty() {
                k += 1;
            }
            assert!(
                k < lines.len() && lines[k].trim() == "```expect",
                "line {}: a curl example must be followed by an ```expect block",
                i + 1
            );
            let (exp, after) = block(k);
            let status_line = exp.first().copied().unwrap_or("");
            let status = status_line
                .trim_start_matches("HTTP/1.1 ")
                .split(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("line {}: bad status line {status_line:?}", k + 2));
            let rest = &exp[1..];
            let (head, body) = match rest.iter().position(|l| l.trim().is_empty()) {
                Some(p) => (&rest[..p], &rest[p + 1..]),
                None => (&rest[..0], rest),
            };
            let headers = head
                .iter()
                .map(|h| {
                    let (k, v) = h.split_once(':').expect("header line Name: value");
                    (k.trim().to_ascii_lowercase(), v.trim().to_string())
                })
                .collect();
            out.push(Example {
                line: i + 1,
                curl: cmd,
                status,
                headers,
                body: body.join("\n"),
            });
            i = after;
        } else {
            i += 1;
        }
    }
    out
}

/// Splits a shell command line: single and double quotes, no expansion.
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut started = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                started = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                started = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            c if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                started = true;
                cur.push(c);
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

struct Call {
    method: String,
    path: String,
    headers: Vec<String>,
    body: Vec<u8>,
}

fn parse_curl(cmd: &str) -> Call {
    let words = shell_words(cmd);
    assert_eq!(words[0], "curl");
    let (mut method, mut url, mut headers, mut body) = (None, None, Vec::new(), None);
    let mut it = words[1..].iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-s" | "-i" | "-sS" | "-si" => {}
            "-X" => method = it.next().cloned(),
            "-H" => headers.push(it.next().expect("-H value").clone()),
            "-d" | "--data" | "--data-binary" => {
                body = Some(it.next().expect("-d value").clone().into_bytes())
            }
            w if w.starts_with('-') => panic!("unsupported curl option {w} in {cmd:?}"),
            w => url = Some(w.to_string()),
        }
    }
    let url = url.expect("curl needs a URL");
    let path = url
        .trim_start_matches("http://")
        .trim_start_matches("localhost:8080")
        .to_string();
    assert!(
        path.starts_with('/'),
        "examples address localhost:8080: {url}"
    );
    Call {
        method: method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into()),
        path,
        headers,
        body: body.unwrap_or_default(),
    }
}

/// Whether `got` matches `want`, with `want`'s placeholders.
fn json_matches(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::String(w), _) if w == "<any>" => true,
        (Value::String(w), Value::Number(_)) if w == "<number>" => true,
        (Value::String(w), Value::String(_)) if w == "<string>" => true,
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(w, g)| json_matches(w, g))
        }
        (Value::Object(w), Value::Object(g)) => {
            w.len() == g.len()
                && w.iter()
                    .all(|(k, w)| g.get(k).is_some_and(|g| json_matches(w, g)))
        }
        (w, g) => w == g,
    }
}

fn value_matches(want: &str, got: &str) -> bool {
    match want {
        "<any>" => true,
        "<number>" => got.parse::<f64>().is_ok(),
        w => w == got,
    }
}

fn run_doc(file: &str) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file);
    let doc = std::fs::read_to_string(&path).expect("read doc");
    let exs = examples(&doc);
    let s =
        Server::start_in_with(&temp_dir("doc"), 2, &["--admin-token", "secret"]).expect("start");
    let mut failures = Vec::new();
    for ex in &exs {
        let call = parse_curl(&ex.curl);
        let hs: Vec<&str> = call.headers.iter().map(String::as_str).collect();
        let r = s.send_with(&call.method, &call.path, &hs, &call.body);
        let text = r.text();
        let mut ok = r.status == ex.status;
        for (k, v) in &ex.headers {
            ok &= r.header(k).is_some_and(|g| value_matches(v, g));
        }
        let want = ex.body.trim();
        ok &= match serde_json::from_str::<Value>(want) {
            Ok(w) => serde_json::from_str::<Value>(&text).is_ok_and(|g| json_matches(&w, &g)),
            Err(_) => want == "<any>" || want == text.trim(),
        };
        if !ok {
            failures.push(format!(
                "{file}:{}: {}\n  documented: {} {:?} {want}\n  got:        {} {:?} {text}",
                ex.line, ex.curl, ex.status, ex.headers, r.status, r.headers
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    exs.len()
}

#[test]
fn every_http_api_example_answers_as_documented() {
    assert!(
        run_doc("HTTP-API.md") >= 30,
        "every class route has an example"
    );
}

#[test]
fn every_operations_example_answers_as_documented() {
    assert!(run_doc("OPERATIONS.md") >= 5);
}

#[test]
fn the_matcher_honours_placeholders_and_nothing_else() {
    let w: Value =
        serde_json::from_str(r#"{"a":"<number>","b":["<any>"],"c":"<string>"}"#).unwrap();
    let ok: Value = serde_json::from_str(r#"{"a":5,"b":[null],"c":"x"}"#).unwrap();
    assert!(json_matches(&w, &ok));
    for bad in [
        r#"{"a":"5","b":[null],"c":"x"}"#,
        r#"{"a":5,"b":[],"c":"x"}"#,
        r#"{"a":5,"b":[1],"c":2}"#,
        r#"{"a":5,"b":[1],"c":"x","d":1}"#,
    ] {
        assert!(
            !json_matches(&w, &serde_json::from_str(bad).unwrap()),
            "{bad}"
        );
    }
    assert_eq!(
        shell_words(r#"curl -d '{"a": 1}' -H "X: a b" x"#),
        ["curl", "-d", r#"{"a": 1}"#, "-H", "X: a b", "x"]
    );
}
