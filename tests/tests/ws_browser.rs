//! A real browser joins a `room` over its own WebSocket implementation:
//! headless Chromium loads a page served by this test, the page joins the
//! room, and it reports (by fetching a URL of this test's server) the message
//! a second client, `tungstenite`, sent.
//!
//! Needs the Debian packages `chromium` (installed by `.ci/install-deps`).
//! Without a `chromium` binary the test is skipped with a message, unless
//! `CAIRN_REQUIRE_BROWSER` is set (CI sets it), in which case it fails.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_tests::{Server, temp_dir};
use tungstenite::Message;

/// How long the browser may take to start, join and report.
const BROWSER_WAIT: Duration = Duration::from_secs(90);

fn find_chromium() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(str::to_string)
}

/// The page: joins the room and reports what it sees to `/report?...`.
fn page(cairn: &str) -> String {
    format!(
        r#"<!doctype html><html><body><script>
const report = (q) => fetch("/report?" + q);
const ws = new WebSocket("ws://{cairn}/room/browser-room?name=browser");
ws.onmessage = (ev) => {{
  const m = JSON.parse(ev.data);
  if (m.type === "welcome") report("joined=1");
  if (m.type === "message") report("got=" + encodeURIComponent(m.from + ":" + m.text));
}};
ws.onerror = () => report("error=1");
</script></body></html>"#
    )
}

/// Serves the page and forwards each report's query to `tx`.
fn serve_page(listener: TcpListener, html: String, tx: mpsc::Sender<String>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut line = String::new();
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                break;
            }
        }
        let target = line.split(' ').nth(1).unwrap_or("/").to_string();
        let body = if let Some(q) = target.strip_prefix("/report?") {
            let _ = tx.send(q.to_string());
            String::new()
        } else if target == "/" {
            html.clone()
        } else {
            String::new()
        };
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + BROWSER_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let q = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the browser never reported {prefix}"));
        assert_ne!(q, "error=1", "the browser's WebSocket failed");
        if q.starts_with(prefix) {
            return q;
        }
    }
}

#[test]
fn a_headless_chromium_joins_a_room_and_sees_another_clients_message() {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var_os("CAIRN_REQUIRE_BROWSER").is_none(),
            "CAIRN_REQUIRE_BROWSER is set but no chromium binary was found"
        );
        eprintln!("SKIPPED: no chromium binary (install the Debian package `chromium`)");
        return;
    };
    let s = Server::start(2);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let page_addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    let html = page(&s.addr.to_string());
    std::thread::spawn(move || serve_page(listener, html, tx));
    let profile = temp_dir("chromium-profile");
    let _browser = Browser(
        Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("http://{page_addr}/"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium"),
    );
    wait_for(&rx, "joined=");
    let stream = TcpStream::connect(s.addr).expect("connect");
    let url = format!("ws://{}/room/browser-room?name=bot", s.addr);
    let (mut bot, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
    bot.send(Message::text(
        r#"{"type":"message","text":"hello from tungstenite"}"#,
    ))
    .expect("send");
    let got = wait_for(&rx, "got=");
    assert_eq!(got, "got=bot%3Ahello%20from%20tungstenite");
}
