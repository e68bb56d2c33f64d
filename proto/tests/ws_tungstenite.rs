//! Interoperability against tungstenite, the independent implementation:
//! our encoder with its decoder and the reverse, for both roles, over an
//! in-memory stream handed to `WebSocket::from_raw_socket`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

use cairn_proto::ws::{CloseFrame, Config, Connection, Event, Poll};
use tungstenite::Message;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocket};

/// One direction in, one out; reading an empty pipe would block.
#[derive(Default)]
struct Pipe {
    inbound: VecDeque<u8>,
    outbound: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbound.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.inbound.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Moves our pending output into tungstenite's input.
fn to_theirs(ours: &mut Connection, theirs: &mut WebSocket<Pipe>) {
    let out = ours.take_output();
    theirs.get_mut().inbound.extend(out);
}

/// Moves tungstenite's output into ours and collects the events it yields.
fn to_ours(theirs: &mut WebSocket<Pipe>, ours: &mut Connection) -> Vec<Event> {
    theirs.flush().ok();
    let bytes = std::mem::take(&mut theirs.get_mut().outbound);
    ours.feed(&bytes);
    let mut events = Vec::new();
    while let Ok(Poll::Event(e)) = ours.next_event() {
        events.push(e);
    }
    events
}

/// Messages of every length class, including text with multi-byte scalars.
fn samples(seed: u64) -> Vec<Message> {
    let mut out = vec![
        Message::text(""),
        Message::text("Hello"),
        Message::text("κόσμε-€-𝄞".repeat(5000)),
    ];
    for len in [0usize, 1, 125, 126, 65535, 65536, 1 << 20] {
        out.push(Message::binary(
            (0..len)
                .map(|i| (i as u64 ^ seed) as u8)
                .collect::<Vec<u8>>(),
        ));
    }
    // A few seeded lengths around the length-encoding boundaries.
    let mut x = seed | 1;
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 70_000) as usize;
        out.push(Message::binary(vec![(x >> 32) as u8; len]));
    }
    out
}

fn seed() -> u64 {
    let seed = std::env::var("CAIRN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    println!("seed {seed} (set CAIRN_TEST_SEED to reproduce)");
    seed
}

fn as_event(m: &Message) -> Event {
    match m {
        Message::Text(t) => Event::Text(t.as_str().to_owned().into()),
        Message::Binary(b) => Event::Binary(b.clone()),
        other => panic!("not a data message: {other:?}"),
    }
}

fn send_ours(ours: &mut Connection, m: &Message) {
    match m {
        Message::Text(t) => ours.send_text(t.as_str()).unwrap(),
        Message::Binary(b) => ours.send_binary(b).unwrap(),
        other => panic!("not a data message: {other:?}"),
    }
}

fn both(our_role: Role) -> (Connection, WebSocket<Pipe>) {
    let (ours, their_role) = match our_role {
        Role::Server => (Connection::server(Config::default()), Role::Client),
        Role::Client => (
            Connection::client(Config::default(), 0xC0FFEE),
            Role::Server,
        ),
    };
    (
        ours,
        WebSocket::from_raw_socket(Pipe::default(), their_role, None),
    )
}

#[test]
fn tungstenite_decodes_what_we_encode_in_both_roles() {
    let seed = seed();
    for role in [Role::Server, Role::Client] {
        let (mut ours, mut theirs) = both(role);
        for m in samples(seed) {
            send_ours(&mut ours, &m);
            to_theirs(&mut ours, &mut theirs);
            assert_eq!(theirs.read().unwrap(), m, "{role:?}");
        }
    }
}

#[test]
fn we_decode_what_tungstenite_encodes_in_both_roles() {
    let seed = seed();
    for role in [Role::Server, Role::Client] {
        let (mut ours, mut theirs) = both(role);
        for m in samples(seed) {
            theirs.write(m.clone()).unwrap();
            assert_eq!(
                to_ours(&mut theirs, &mut ours),
                vec![as_event(&m)],
                "{role:?}"
            );
        }
    }
}

#[test]
fn we_assemble_tungstenite_fragments_split_inside_a_scalar() {
    let (mut ours, mut theirs) = both(Role::Server);
    let text = "aκόσμε".as_bytes();
    let parts: [(&[u8], OpCode, bool); 3] = [
        (&text[..2], OpCode::Data(Data::Text), false),
        (&text[2..7], OpCode::Data(Data::Continue), false),
        (&text[7..], OpCode::Data(Data::Continue), true),
    ];
    for (bytes, op, fin) in parts {
        theirs
            .write(Message::Frame(Frame::message(bytes.to_vec(), op, fin)))
            .unwrap();
    }
    theirs.write(Message::Ping(b"p".to_vec().into())).unwrap();
    let events = to_ours(&mut theirs, &mut ours);
    assert_eq!(
        events,
        vec![Event::Text("aκόσμε".into()), Event::Ping("p".into())]
    );
    // Our automatic pong reaches tungstenite as a pong.
    to_theirs(&mut ours, &mut theirs);
    assert_eq!(theirs.read().unwrap(), Message::Pong(b"p".to_vec().into()));
}

#[test]
fn tungstenite_answers_our_ping_and_completes_our_close() {
    let (mut ours, mut theirs) = both(Role::Client);
    ours.ping(b"are you there").unwrap();
    to_theirs(&mut ours, &mut theirs);
    assert_eq!(
        theirs.read().unwrap(),
        Message::Ping(b"are you there".to_vec().into())
    );
    assert_eq!(
        to_ours(&mut theirs, &mut ours),
        vec![Event::Pong("are you there".into())]
    );
    ours.close(Some(1000), "done").unwrap();
    to_theirs(&mut ours, &mut theirs);
    assert!(matches!(theirs.read().unwrap(), Message::Close(Some(f)) if u16::from(f.code) == 1000));
    // tungstenite echoes the reason as well as the code.
    let close = CloseFrame {
        code: 1000,
        reason: "done".into(),
    };
    assert_eq!(
        to_ours(&mut theirs, &mut ours),
        vec![Event::Close(Some(close))]
    );
    assert!(ours.is_closed());
}

#[test]
fn we_complete_a_close_that_tungstenite_starts() {
    let (mut ours, mut theirs) = both(Role::Server);
    theirs.close(None).unwrap();
    assert_eq!(to_ours(&mut theirs, &mut ours), vec![Event::Close(None)]);
    assert!(ours.is_closed());
    to_theirs(&mut ours, &mut theirs);
    // tungstenite reports our echo as a close message; as a client it then
    // waits for the server (the example server does this) to close TCP.
    assert_eq!(theirs.read().unwrap(), Message::Close(None));
    assert!(!theirs.can_write());
}

#[test]
fn tungstenite_sees_our_protocol_error_close_code() {
    let (mut ours, mut theirs) = both(Role::Server);
    // A text frame with invalid UTF-8, sent raw so tungstenite does not check it.
    let raw = Frame::message(vec![0xC3, 0x28], OpCode::Data(Data::Text), true);
    theirs.write(Message::Frame(raw)).unwrap();
    assert_eq!(to_ours(&mut theirs, &mut ours), vec![]);
    assert!(ours.is_closed());
    to_theirs(&mut ours, &mut theirs);
    let Message::Close(Some(f)) = theirs.read().unwrap() else {
        panic!("expected a close frame");
    };
    assert_eq!(u16::from(f.code), 1007);
}
