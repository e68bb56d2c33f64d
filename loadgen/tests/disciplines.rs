//! End-to-end tests of the load generator against small std::net servers
//! started inside the test: open loop exposes a stalling server, closed loop
//! hides it, a hung server cannot stop a run from ending, and WebSocket
//! fan-out is timed.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use cairn_loadgen::cli::{self, Command};
use cairn_loadgen::{Report, run_http, run_ws};

/// Every test server thread gives up after this long, so nothing outlives
/// a failed test by much.
const SERVER_LIFETIME: Duration = Duration::from_secs(15);

/// Accepts connections until the server's lifetime ends, handing each to
/// `handle` on its own thread; returns the port.
fn serve(handle: impl Fn(TcpStream, Instant) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = Arc::new(handle);
    let born = Instant::now();
    thread::spawn(move || {
        while born.elapsed() < SERVER_LIFETIME {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    let handle = Arc::clone(&handle);
                    thread::spawn(move || handle(stream, born));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(1))
                }
                Err(_) => return,
            }
        }
    });
    port
}

/// Reads requests (head and `Content-Length` body) from `stream` until it
/// closes or the server's lifetime ends, and writes what `answer` returns
/// for each, given its head.
fn each_request(
    mut stream: TcpStream,
    born: Instant,
    mut answer: impl FnMut(&str) -> &'static [u8],
) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while born.elapsed() < SERVER_LIFETIME {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.parse().unwrap());
            if pending.len() < end + 4 + length {
                break;
            }
            pending.drain(..end + 4 + length);
            if stream.write_all(answer(&head)).is_err() {
                return;
            }
        }
    }
}

/// Answers every GET with `200 ok`, except that it holds all answers during
/// the 100 ms from 500 ms to 600 ms of every second of its life.
fn stalling_server(stream: TcpStream, born: Instant) {
    each_request(stream, born, |_| {
        let phase = born.elapsed().as_millis() % 1000;
        if (500..600).contains(&phase) {
            thread::sleep(Duration::from_millis((600 - phase) as u64));
        }
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    });
}

fn run(line: &str) -> Report {
    let args: Vec<String> = line.split_whitespace().map(String::from).collect();
    match cli::parse(&args).unwrap() {
        Command::Http { config, .. } => run_http(*config).unwrap(),
        Command::Ws { config, .. } => run_ws(*config).unwrap(),
        other => panic!("not a run: {other:?}"),
    }
}

#[test]
fn open_loop_shows_a_stalling_server_in_the_tail_where_closed_loop_hides_it() {
    let port = serve(stalling_server);
    let url = format!("http://127.0.0.1:{port}/");
    // 1.2 s measured always spans one whole 100 ms stall.
    let open = run(&format!(
        "--url {url} -c 1 --rate 1000 -d 1200ms --warmup 0s"
    ));
    println!("open loop: {}", open.to_json());
    assert_eq!(open.errors, 0);
    assert!(
        open.requests > 900,
        "open loop kept its rate: {}",
        open.requests
    );
    assert!(
        open.latency_us.p99 >= 50_000.0,
        "open-loop p99 {} us",
        open.latency_us.p99
    );

    let closed = run(&format!("--url {url} -c 1 -d 1200ms --warmup 0s"));
    println!("closed loop: {}", closed.to_json());
    assert_eq!(closed.errors, 0);
    assert!(
        closed.latency_us.max >= 50_000.0,
        "the stall happened: max {} us",
        closed.latency_us.max
    );
    assert!(
        closed.latency_us.p99 < 50_000.0,
        "closed-loop p99 {} us",
        closed.latency_us.p99
    );
}

#[test]
fn a_server_that_never_answers_cannot_keep_the_run_from_ending() {
    let port = serve(|mut stream, born| {
        let mut buf = [0u8; 1024];
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while born.elapsed() < SERVER_LIFETIME {
            if let Ok(0) = stream.read(&mut buf) {
                return;
            }
        }
    });
    let report = run(&format!(
        "--url http://127.0.0.1:{port}/ -c 2 -d 300ms --warmup 100ms --grace 1s"
    ));
    assert_eq!(report.requests, 0);
}

#[test]
fn connection_failures_are_counted_not_fatal() {
    // Bind and drop a listener: nothing listens on that port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let report = run(&format!(
        "--url http://127.0.0.1:{port}/ -c 1 -d 200ms --warmup 0s"
    ));
    assert_eq!(report.requests, 0);
    assert!(
        report.errors_by_kind.get("connect").copied().unwrap_or(0) > 0,
        "{}",
        report.to_json()
    );
}

#[test]
fn a_weighted_mix_reaches_the_server_with_keys_and_bodies() {
    let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let log = Arc::clone(&seen);
    let port = serve(move |stream, born| {
        each_request(stream, born, |head| {
            let method = head.split(' ').next().unwrap().to_string();
            *log.lock().unwrap().entry(method).or_default() += 1;
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
        });
    });
    let url = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = [
        "--url",
        &url,
        "-c",
        "2",
        "--pipeline",
        "4",
        "-d",
        "500ms",
        "--warmup",
        "0s",
        "--keys",
        "10",
        "--zipf",
        "0.99",
        "--request",
        "90 GET /kv/{key}",
        "--request",
        "10 POST /kv/{key} v{key}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let Command::Http { config, .. } = cli::parse(&args).unwrap() else {
        panic!("not an HTTP command")
    };
    let report = run_http(*config).unwrap();
    assert_eq!(report.errors, 0, "{}", report.to_json());
    assert!(report.statuses["201"] > 100);
    let seen = seen.lock().unwrap();
    let (gets, posts) = (seen["GET"] as f64, seen["POST"] as f64);
    let share = posts / (gets + posts);
    assert!((0.05..0.15).contains(&share), "POST share {share}");
}

/// Answers every request with a body of `body_len` bytes; with `close`,
/// says `Connection: close` and closes after each answer.
fn fixed_server(body_len: usize, close: bool) -> u16 {
    serve(move |mut stream, born| {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n");
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut answer = head.into_bytes();
        answer.resize(answer.len() + body_len, b'x');
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        while born.elapsed() < SERVER_LIFETIME {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(_) => return,
            }
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                if stream.write_all(&answer).is_err() || close {
                    return;
                }
            }
        }
    })
}

#[test]
fn a_server_closing_after_every_answer_costs_reconnects_not_errors() {
    let port = fixed_server(2, true);
    let report = run(&format!(
        "--url http://127.0.0.1:{port}/ -c 2 -d 300ms --warmup 0s"
    ));
    assert_eq!(report.errors, 0, "{}", report.to_json());
    assert!(report.requests > 10, "{}", report.to_json());
}

#[test]
fn responses_larger_than_one_read_are_reassembled() {
    // 300 KiB bodies span several 64 KiB reads.
    let body = 300 * 1024;
    let port = fixed_server(body, false);
    let report = run(&format!(
        "--url http://127.0.0.1:{port}/ -c 2 --pipeline 2 -d 300ms --warmup 0s"
    ));
    assert_eq!(report.errors, 0, "{}", report.to_json());
    assert!(report.requests > 0, "{}", report.to_json());
    assert!(
        report.bytes_read >= report.requests * body as u64,
        "{}",
        report.to_json()
    );
}

/// A room server on tungstenite: every text message is sent to every
/// member of the sender's room (the path), the sender included.
fn room_server() -> u16 {
    type Rooms = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<String>>>>>;
    let rooms: Rooms = Arc::default();
    serve(move |stream, born| {
        let mut path = String::new();
        // The Err type is fixed by tungstenite's Callback trait.
        #[allow(clippy::result_large_err)]
        let callback = |req: &tungstenite::handshake::server::Request, resp| {
            path = req.uri().path().to_string();
            Ok(resp)
        };
        let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
            return;
        };
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(2)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        rooms
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default()
            .push(tx);
        while born.elapsed() < SERVER_LIFETIME {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    for member in &rooms.lock().unwrap()[&path] {
                        let _ = member.send(t.as_str().to_string());
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            while let Ok(text) = rx.try_recv() {
                if ws.send(tungstenite::Message::text(text)).is_err() {
                    return;
                }
            }
        }
    })
}

#[test]
fn websocket_fan_out_times_every_broadcast_each_member_receives() {
    let port = room_server();
    let report = run(&format!(
        "ws --url ws://127.0.0.1:{port}/room/{{room}} --rooms 2 --members 3 --send-rate 20 -d 1s --warmup 300ms"
    ));
    println!("{}", report.to_json());
    assert_eq!(report.errors, 0, "{}", report.to_json());
    // 6 members x 20 messages/s, each delivered to the 3 members of its room.
    let expected = 6.0 * 20.0 * 3.0;
    assert!(
        report.requests_per_sec > expected * 0.7,
        "{} received/s",
        report.requests_per_sec
    );
    assert!(
        report.requests_per_sec < expected * 1.2,
        "{} received/s",
        report.requests_per_sec
    );
    assert!(report.latency_us.p50 > 0.0 && report.latency_us.p50 < 500_000.0);
}

#[test]
fn think_time_spaces_a_connections_requests_and_stays_out_of_the_latency() {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let log = Arc::clone(&arrivals);
    let port = serve(move |stream, born| {
        each_request(stream, born, |_| {
            log.lock().unwrap().push(Instant::now());
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        });
    });
    let report = run(&format!(
        "--url http://127.0.0.1:{port}/ -c 1 --think-time 20ms -d 600ms --warmup 0s"
    ));
    println!("think time: {}", report.to_json());
    assert_eq!(report.errors, 0);
    assert_eq!(report.think_time_ms, Some(20.0));
    // 600 ms of 20 ms pauses: at most 31 requests (a closed loop without
    // the pause sends thousands here).
    assert!(
        (5..=31).contains(&report.requests),
        "requests {}",
        report.requests
    );
    let arrivals = arrivals.lock().unwrap();
    assert!(arrivals.len() >= 5, "{} requests arrived", arrivals.len());
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(20), "requests {gap:?} apart");
    }
    // The pause is not the server's time: latency stays far below it.
    assert!(
        report.latency_us.p50 < 20_000.0,
        "p50 {} us",
        report.latency_us.p50
    );
}
