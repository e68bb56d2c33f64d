//! End-to-end tests of WebSockets on objects, with `tungstenite` as the
//! client: the `room` class's fan-out across shards, hibernation, slow
//! consumers and durability of its history, and the `echo` class.

use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn_tests::{Server, temp_dir};
use serde_json::Value;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

/// How long any one wait in these tests may take before it fails.
const WAIT: Duration = Duration::from_secs(60);

fn connect(server: &Server, path: &str) -> Ws {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let url = format!("ws://{}{path}", server.addr);
    let (ws, resp) = tungstenite::client(url.as_str(), stream).expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).expect("send");
}

/// The next JSON text message.
fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads until a message of type `ty` arrives, skipping others.
fn next_of(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = next(ws);
        if v["type"] == ty {
            return v;
        }
    }
}

fn join(server: &Server, room: &str, name: &str) -> (Ws, Value) {
    let mut ws = connect(server, &format!("/room/{room}?name={name}"));
    let welcome = next_of(&mut ws, "welcome");
    (ws, welcome)
}

fn say(ws: &mut Ws, text: &str) {
    send(ws, serde_json::json!({"type": "message", "text": text}));
}

/// The value of metric `name` as the (single) shard reports it.
fn metric(server: &Server, name: &str) -> u64 {
    let text = server.send("GET", "/_cairn/metrics", b"").text();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn texts(history: &Value) -> Vec<String> {
    history
        .as_array()
        .expect("history is an array")
        .iter()
        .map(|m| {
            format!(
                "{}:{}",
                m["from"].as_str().unwrap(),
                m["text"].as_str().unwrap()
            )
        })
        .collect()
}

/// 1000 client sockets need more than the common soft limit of 1024 files;
/// returns the soft limit now in force.
fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill and setrlimit to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[test]
fn a_thousand_sockets_on_four_shards_each_receive_every_other_members_messages_in_order() {
    const MEMBERS: usize = 1000;
    const PER_MEMBER: usize = 2;
    let files = raise_open_files_limit();
    assert!(
        files >= MEMBERS as u64 + 100,
        "this test needs {} open files and the hard limit is {files}: raise `ulimit -Hn`",
        MEMBERS + 100
    );
    let s = Server::start(4);
    let mut sockets = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        // Many connections land on shards that do not own the room: each is
        // handed over to the owner.
        let ws = connect(&s, &format!("/room/big?name=m{i}"));
        sockets.push(ws);
    }
    let start = Instant::now();
    let threads: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    for j in 0..PER_MEMBER {
                        say(&mut ws, &format!("{j}"));
                    }
                    let mut last: HashMap<String, usize> = HashMap::new();
                    let (mut got, mut acks) = (0, 0);
                    while got < (MEMBERS - 1) * PER_MEMBER || acks < PER_MEMBER {
                        let v = next(&mut ws);
                        match v["type"].as_str() {
                            Some("message") => {
                                let from = v["from"].as_str().unwrap().to_string();
                                assert_ne!(from, format!("m{i}"), "no echo to the sender");
                                let j: usize = v["text"].as_str().unwrap().parse().unwrap();
                                let want = last.get(&from).map_or(0, |l| l + 1);
                                assert_eq!(j, want, "m{i} got {from}'s messages out of order");
                                last.insert(from, j);
                                got += 1;
                            }
                            Some("ack") => acks += 1,
                            _ => {}
                        }
                    }
                    assert_eq!(last.len(), MEMBERS - 1);
                    let _ = ws.close(None);
                })
                .expect("spawn client thread")
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    eprintln!(
        "{MEMBERS} members x {PER_MEMBER} messages delivered in {:?}",
        start.elapsed()
    );
    // The room may still be busy with the close events (503): retry.
    let deadline = Instant::now() + WAIT;
    let room = loop {
        let r = s.send("GET", "/room/big", b"");
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let v: Value = serde_json::from_slice(&room.body).unwrap();
    assert_eq!(v["seq"], (MEMBERS * PER_MEMBER) as u64, "{}", room.text());
}

#[test]
fn a_room_hibernates_and_wakes_with_its_history_and_attachments() {
    let dir = temp_dir("ws-hibernate");
    let s = Server::start_in_with(&dir, 1, &["--idle-ms-evict", "200"]).expect("starts");
    let (mut alice, _) = join(&s, "h", "alice");
    let (mut bob, welcome) = join(&s, "h", "bob");
    assert_eq!(welcome["members"], serde_json::json!(["alice"]));
    assert_eq!(next_of(&mut alice, "join")["name"], "bob");
    say(&mut alice, "one");
    assert_eq!(next_of(&mut alice, "ack")["seq"], 1);
    let m = next_of(&mut bob, "message");
    assert_eq!(
        (m["from"].as_str(), m["seq"].as_u64()),
        (Some("alice"), Some(1))
    );

    let deadline = Instant::now() + WAIT;
    while metric(&s, "cairn_ws_hibernated_objects") == 0 {
        assert!(Instant::now() < deadline, "the room never hibernated");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(metric(&s, "cairn_ws_hibernations_total") >= 1);
    assert_eq!(metric(&s, "cairn_ws_open_sockets"), 2);

    // A heartbeat is answered by the engine without waking the room.
    let activations = metric(&s, "cairn_activations_total");
    alice
        .send(Message::text(r#"{"type":"ping"}"#))
        .expect("send ping");
    assert_eq!(next(&mut alice)["type"], "pong");
    assert_eq!(metric(&s, "cairn_activations_total"), activations);
    assert_eq!(metric(&s, "cairn_ws_hibernated_objects"), 1);

    // Waking: bob's name comes from his socket's attachment, the sequence
    // number and history from storage.
    say(&mut bob, "two");
    let m = next_of(&mut alice, "message");
    assert_eq!(
        (m["from"].as_str(), m["seq"].as_u64(), m["text"].as_str()),
        (Some("bob"), Some(2), Some("two"))
    );
    assert_eq!(metric(&s, "cairn_ws_hibernated_objects"), 0);
    let (_carol, welcome) = join(&s, "h", "carol");
    assert_eq!(welcome["members"], serde_json::json!(["alice", "bob"]));
    assert_eq!(texts(&welcome["history"]), ["alice:one", "bob:two"]);
}

#[test]
fn a_slow_consumer_is_closed_while_the_others_keep_receiving() {
    // Enough to fill the kernel's socket buffers of the member that never reads.
    const MESSAGES: usize = 3000;
    // The sender stays at most this many messages ahead of the fast member,
    // so only the member that does not read falls behind.
    const WINDOW: usize = 4;
    let dir = temp_dir("ws-slow");
    let s =
        Server::start_in_with(&dir, 1, &["--ws-send-buffer-bytes-max", "65536"]).expect("starts");
    let (slow, _) = join(&s, "slow", "slow");
    let (mut fast, _) = join(&s, "slow", "fast");
    let (mut sender, _) = join(&s, "slow", "sender");
    let text = "x".repeat(8000);
    let (progress, seen_rx) = std::sync::mpsc::channel::<usize>();
    let writer = std::thread::spawn(move || {
        let mut seen = 0;
        for i in 0..MESSAGES {
            while seen + WINDOW < i {
                seen = seen_rx.recv_timeout(WAIT).expect("fast member progresses");
            }
            say(&mut sender, &format!("{i} {text}"));
        }
        let mut acks = 0;
        while acks < MESSAGES {
            if next(&mut sender)["type"] == "ack" {
                acks += 1;
            }
        }
    });
    let mut seen = 0;
    let mut left = false;
    while seen < MESSAGES || !left {
        let v = next(&mut fast);
        match v["type"].as_str() {
            Some("message") => {
                let n: usize = v["text"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(n, seen, "fast member missed or reordered a message");
                seen += 1;
                let _ = progress.send(seen);
            }
            // Announced once the slow member's connection is over.
            Some("leave") if v["name"] == "slow" => left = true,
            _ => {}
        }
    }
    writer.join().expect("writer");
    assert!(metric(&s, "cairn_ws_slow_consumer_closes_total") >= 1);
    // The slow member finds its connection closed: a 1008 close frame if it
    // got through, else the connection ends.
    let mut slow = slow;
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "slow consumer never saw the close"
        );
        match slow.read() {
            Ok(Message::Close(f)) => {
                if let Some(CloseFrame { code, .. }) = f {
                    assert_eq!(u16::from(code), 1008);
                }
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

#[test]
fn a_rooms_history_survives_a_crash_and_restart() {
    let dir = temp_dir("ws-restart");
    let s = Server::start_in_with(&dir, 2, &[]).expect("starts");
    let (mut a, _) = join(&s, "keep", "a");
    for t in ["x", "y", "z"] {
        say(&mut a, t);
        // The ack leaves only once the message is durable (output gate).
        next_of(&mut a, "ack");
    }
    drop(a);
    s.kill();
    let s = Server::start_in_with(&dir, 2, &[]).expect("restarts");
    let (_b, welcome) = join(&s, "keep", "b");
    assert_eq!(welcome["seq"], 3);
    assert_eq!(texts(&welcome["history"]), ["a:x", "a:y", "a:z"]);
}

#[test]
fn ephemeral_messages_are_broadcast_unnumbered_and_not_stored() {
    let s = Server::start(2);
    let (mut a, _) = join(&s, "eph", "a");
    let mut cursor = connect(&s, "/room/eph?name=c&durable=0");
    next_of(&mut cursor, "welcome");
    say(&mut cursor, "x=3");
    let m = next_of(&mut a, "message");
    assert_eq!(
        (
            m["from"].as_str(),
            m["text"].as_str(),
            m["ephemeral"].as_bool(),
            m.get("seq")
        ),
        (Some("c"), Some("x=3"), Some(true), None)
    );
    let (_b, welcome) = join(&s, "eph", "b");
    assert_eq!(welcome["seq"], 0);
    assert_eq!(texts(&welcome["history"]), Vec::<String>::new());
}

#[test]
fn echo_echoes_and_refuses_plain_http() {
    let s = Server::start(2);
    let mut ws = connect(&s, "/echo/e");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2]));
    let r = s.send("GET", "/echo/e", b"");
    assert_eq!(r.status, 426);
    assert!(r.text().contains("upgrade_required"), "{}", r.text());
    // An upgrade to an unknown class is refused with a normal response.
    let stream = TcpStream::connect(s.addr).unwrap();
    let url = format!("ws://{}/nope/x", s.addr);
    match tungstenite::client(url.as_str(), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 404)
        }
        other => panic!("expected a 404 refusal, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_message_over_the_limit_closes_the_socket_with_1009() {
    let dir = temp_dir("ws-big");
    let s = Server::start_in_with(&dir, 1, &["--ws-message-bytes-max", "1000"]).expect("starts");
    let mut ws = connect(&s, "/echo/big");
    ws.send(Message::text("y".repeat(1001))).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1009);
                break;
            }
            Ok(Message::Close(None)) => panic!("close without a code"),
            Ok(_) => {}
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

#[test]
fn the_server_pings_a_quiet_socket_and_closes_an_idle_one_with_1001() {
    let dir = temp_dir("ws-idle");
    let args = [
        "--ws-ping-interval-ms",
        "200",
        "--ws-idle-timeout-ms",
        "1500",
    ];
    let s = Server::start_in_with(&dir, 1, &args).expect("starts");
    // A client that reads sees the server's ping (and tungstenite answers it).
    let mut ws = connect(&s, "/echo/quiet");
    match ws.read().expect("read") {
        Message::Ping(_) => {}
        other => panic!("expected a ping, got {other:?}"),
    }
    // A client that never sends anything, not even a pong, is closed with 1001.
    let mut raw = TcpStream::connect(s.addr).expect("connect");
    raw.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!(
        "GET /echo/idle HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        s.addr
    );
    std::io::Write::write_all(&mut raw, req.as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let close_1001 = [0x88u8, 0x0e, 0x03, 0xe9];
    while !got.windows(4).any(|w| w == close_1001) {
        let n = std::io::Read::read(&mut raw, &mut buf).expect("read");
        assert!(n > 0, "connection ended without a 1001 close: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"));
    assert!(
        got.windows(2).any(|w| w == [0x89, 0x00]),
        "a ping came first"
    );
}

#[test]
fn a_stopping_server_closes_its_sockets_with_1001() {
    let s = Server::start(2);
    let (mut a, _) = join(&s, "stop", "a");
    let closer = std::thread::spawn(move || s.terminate());
    loop {
        match a.read() {
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1001);
                break;
            }
            Ok(Message::Close(None)) => panic!("close without a code"),
            Ok(_) => {}
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
    assert!(closer.join().expect("terminate").success());
}

#[test]
fn an_object_refuses_sockets_past_its_limit_with_503() {
    let dir = temp_dir("ws-limit");
    let s = Server::start_in_with(&dir, 1, &["--ws-sockets-per-object-max", "2"]).expect("starts");
    let _a = connect(&s, "/echo/full");
    let _b = connect(&s, "/echo/full");
    let stream = TcpStream::connect(s.addr).unwrap();
    let url = format!("ws://{}/echo/full", s.addr);
    match tungstenite::client(url.as_str(), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            assert_eq!(resp.status().as_u16(), 503)
        }
        other => panic!("expected a 503 refusal, got {:?}", other.map(|_| ())),
    }
    // Another object is not affected.
    let _c = connect(&s, "/echo/other");
}

#[test]
fn every_scrape_counts_the_sockets_of_every_shard() {
    let s = Server::start(4);
    // Eight rooms: their owners are spread over the four shards.
    let sockets: Vec<_> = (0..8)
        .map(|i| connect(&s, &format!("/room/spread{i}?name=m")))
        .collect();
    // A socket accepted on another shard is handed to its room's owner; wait
    // until every handover is done.
    let deadline = Instant::now() + WAIT;
    while metric(&s, "cairn_ws_open_sockets") != 8 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each scrape is a new connection, answered by whichever shard accepts
    // it; every one must count all eight sockets.
    for _ in 0..6 {
        assert_eq!(metric(&s, "cairn_ws_open_sockets"), 8);
        assert_eq!(metric(&s, "cairn_ws_accepted_total"), 8);
    }
    let text = s.send("GET", "/_cairn/metrics", b"").text();
    let shards_with_rows = text
        .lines()
        .filter(|l| l.starts_with("cairn_ws_accepted_total{"))
        .count();
    assert_eq!(shards_with_rows, 4, "one sample per shard:\n{text}");
    drop(sockets);
}
