//! Tests of WebSockets against the object runtime over a real loopback
//! socket: the output gate holds a frame that follows a write until the write
//! is durable, a failed commit never releases it, broadcasts reach
//! exactly the tagged sockets other than the sender, and a consumer that
//! falls behind is closed with 1008 (or dropped after the close grace).

use std::rc::Rc;

use bytes::Bytes;
use cairn_proto::ws::{Config as CodecConfig, Connection, Event, Poll};
use futures_lite::future::or;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::context::Context;
use crate::host::{HostConfig, ObjectHost, Target};
use crate::id::id_from_name;
use crate::object::{Classes, LocalFuture, Object, Request, Response};
use crate::store::{CommitVerdicts, ScriptedCommits, Store, StoreOptions};
use crate::testing::{run_local, settle};
use crate::ws::{Message, SocketId};

/// Accepts every upgrade, tagged with its `tag` query parameter. A message
/// `to:<tag>` is broadcast to the sockets with that tag except the sender,
/// and the sender gets the count; `fill` is answered with 256 KiB of binary
/// frames; any other message is written to storage and answered "stored".
struct Writer;

impl Object for Writer {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        let tag = req
            .query_param("tag")
            .map(|t| String::from_utf8_lossy(&t).into_owned());
        let tags: Vec<&str> = tag.iter().map(String::as_str).collect();
        let r = match ctx.websockets().accept(&tags) {
            Ok(_) => Response::switching_protocols(),
            Err(e) => Response::new(400, e.to_string()),
        };
        Box::pin(std::future::ready(r))
    }

    fn websocket_message<'a>(
        &'a mut self,
        ctx: &'a Context,
        socket: SocketId,
        msg: Message,
    ) -> LocalFuture<'a, ()> {
        let Message::Text(t) = msg else {
            return Box::pin(std::future::ready(()));
        };
        let ws = ctx.websockets();
        if t == "fill" {
            // A quarter MiB back; past the send buffer the socket is killed.
            for _ in 0..4 {
                let _ = ws.send_binary(socket, &[b'f'; 64 << 10]);
            }
            return Box::pin(std::future::ready(()));
        }
        if let Some(tag) = t.strip_prefix("to:") {
            let n = ws.broadcast_text(&format!("for {tag}"), Some(tag), Some(socket));
            ws.send_text(socket, &format!("sent {n} of {}", ws.list(Some(tag)).len()))
                .unwrap();
            return Box::pin(std::future::ready(()));
        }
        ctx.storage().put(b"last", t.as_bytes()).unwrap();
        ws.send_text(socket, "stored").unwrap();
        Box::pin(std::future::ready(()))
    }
}

/// A connected client whose socket is owned by `host`, past the 101.
async fn connect(host: &ObjectHost) -> (TcpStream, Connection) {
    connect_to(host, "/").await
}

async fn connect_to(host: &ObjectHost, path: &str) -> (TcpStream, Connection) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = glommio::spawn_local(async move { TcpStream::connect(addr).await.unwrap() });
    let server = listener.accept().await.unwrap();
    let mut client = client.await;
    let headers: [(&str, &[u8]); 4] = [
        ("Upgrade", b"websocket"),
        ("Connection", b"Upgrade"),
        ("Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", b"13"),
    ];
    let accept = cairn_proto::ws::handshake::validate_request("GET", 1, &headers).unwrap();
    let target = Target {
        class: "writer".into(),
        id: id_from_name("writer", b"w"),
        name: Some(b"w".to_vec()),
    };
    let req = Request::new("GET", path);
    let h = host.clone();
    glommio::spawn_local(async move {
        super::upgrade::adopt_local(&h, server, Bytes::new(), target, req, accept).await;
    })
    .detach();
    // Read the 101 head; the server sends nothing else unprompted.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(client.read(&mut b).await.unwrap(), 1, "101 head");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    (client, Connection::client(CodecConfig::default(), 7))
}

/// The next event from the server, or `None` if nothing arrives for a while
/// (used only to show that something is being held).
async fn next_event(client: &mut TcpStream, conn: &mut Connection) -> Option<Event> {
    let mut buf = [0u8; 4096];
    loop {
        if let Poll::Event(e) = conn.next_event().unwrap() {
            return Some(e);
        }
        let read = or(
            async { Some(client.read(&mut buf).await.unwrap()) },
            async {
                glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                None
            },
        )
        .await?;
        assert!(read > 0, "server closed the connection");
        conn.feed(&buf[..read]);
    }
}

async fn send_text(client: &mut TcpStream, conn: &mut Connection, text: &str) {
    conn.send_text(text).unwrap();
    let out = conn.take_output();
    client.write_all(&out).await.unwrap();
}

/// Waits (bounded) until the object's write reached the commit path.
async fn until_commit_started(verdicts: &CommitVerdicts) {
    for _ in 0..1000 {
        settle().await;
        if verdicts.started() > 0 {
            return;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the message's write never reached the commit path");
}

async fn rig() -> (ObjectHost, CommitVerdicts) {
    rig_with(HostConfig::default()).await
}

async fn rig_with(config: HostConfig) -> (ObjectHost, CommitVerdicts) {
    let (path, verdicts) = ScriptedCommits::new();
    let store = Store::open(StoreOptions::default(), Rc::new(path))
        .await
        .unwrap();
    let mut classes = Classes::new();
    classes.register("writer", || Writer);
    let host = ObjectHost::new(config, classes, store, crate::host::system_clock());
    (host, verdicts)
}

#[test]
fn a_frame_sent_after_a_write_leaves_only_once_the_write_is_durable() {
    run_local(async {
        let (host, verdicts) = rig().await;
        let (mut client, mut conn) = connect(&host).await;
        send_text(&mut client, &mut conn, "hello").await;
        until_commit_started(&verdicts).await;
        assert_eq!(
            next_event(&mut client, &mut conn).await,
            None,
            "held by the gate"
        );
        verdicts.release();
        let e = next_event(&mut client, &mut conn).await;
        assert_eq!(e, Some(Event::Text(Bytes::from_static(b"stored"))));
        assert_eq!(host.ws_metrics().messages_out, 1);
    });
}

#[test]
fn a_failed_commit_never_releases_the_frame_and_closes_with_1011() {
    run_local(async {
        let (host, verdicts) = rig().await;
        let (mut client, mut conn) = connect(&host).await;
        send_text(&mut client, &mut conn, "hello").await;
        until_commit_started(&verdicts).await;
        verdicts.fail("injected fdatasync failure");
        match next_event(&mut client, &mut conn).await {
            Some(Event::Close(Some(f))) => assert_eq!(f.code, 1011),
            other => panic!("expected a 1011 close, got {other:?}"),
        }
    });
}

#[test]
fn broadcasts_reach_the_tagged_sockets_except_the_sender() {
    run_local(async {
        let (host, _verdicts) = rig().await;
        let (mut a1, mut c1) = connect_to(&host, "/?tag=a").await;
        let (mut a2, mut c2) = connect_to(&host, "/?tag=a").await;
        let (mut b, mut cb) = connect_to(&host, "/?tag=b").await;
        send_text(&mut a1, &mut c1, "to:a").await;
        let text = |e: Option<Event>| match e {
            Some(Event::Text(t)) => String::from_utf8_lossy(&t).into_owned(),
            other => panic!("expected text, got {other:?}"),
        };
        assert_eq!(text(next_event(&mut a2, &mut c2).await), "for a");
        assert_eq!(text(next_event(&mut a1, &mut c1).await), "sent 1 of 2");
        assert_eq!(next_event(&mut b, &mut cb).await, None, "b is not tagged a");
        send_text(&mut b, &mut cb, "to:a").await;
        assert_eq!(text(next_event(&mut b, &mut cb).await), "sent 2 of 2");
        assert_eq!(text(next_event(&mut a1, &mut c1).await), "for a");
        assert_eq!(text(next_event(&mut a2, &mut c2).await), "for a");
    });
}

#[test]
fn a_consumer_killed_during_a_write_gets_its_1008_once_it_reads() {
    run_local(async {
        // A grace far longer than the test waits: the close must come from
        // the writer seeing it queued, not from the grace running out.
        let mut config = HostConfig::default();
        config.ws.close_grace_ms = 60_000;
        let (host, _verdicts) = rig_with(config).await;
        let (mut client, mut conn) = connect(&host).await;
        // Ask for far more than loopback buffers hold, reading nothing, so
        // the socket is killed while the writer is blocked in a write.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while host.ws_metrics().slow_consumer_closes == 0 {
            assert!(std::time::Instant::now() < deadline, "never killed");
            send_text(&mut client, &mut conn, "fill").await;
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Now read: what was being written arrives, then the 1008 close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "no close frame after the killed socket's write finished"
            );
            match next_event(&mut client, &mut conn).await {
                Some(Event::Close(Some(f))) => {
                    assert_eq!(f.code, 1008);
                    break;
                }
                Some(Event::Binary(_)) | None => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    });
}

#[test]
fn a_consumer_that_never_reads_is_dropped_after_the_close_grace() {
    run_local(async {
        let mut config = HostConfig::default();
        config.ws.close_grace_ms = 200;
        let (host, _verdicts) = rig_with(config).await;
        let (mut client, mut conn) = connect(&host).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while host.ws_metrics().slow_consumer_closes == 0 {
            assert!(std::time::Instant::now() < deadline, "never killed");
            send_text(&mut client, &mut conn, "fill").await;
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Reading nothing, the socket leaves the table once the grace is over.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !host.open_sockets_by_class().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the killed socket is still open"
            );
            glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The connection is over: reading ends in EOF or a reset, not a wait.
        let mut buf = vec![0u8; 1 << 16];
        let ended = or(
            async {
                loop {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return true,
                        Ok(_) => {}
                    }
                }
            },
            async {
                glommio::timer::sleep(std::time::Duration::from_secs(20)).await;
                false
            },
        )
        .await;
        assert!(ended, "the connection stayed open");
    });
}
