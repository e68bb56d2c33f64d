//! Every RFC 6455 rule the WebSocket `Connection` enforces, each with the
//! byte sequence that breaks it, the limits at and one past their value, the
//! close handshake, and property tests (split invariance, frame round trips).

use cairn_proto::ws::frame::{Decoded, Opcode, Role, decode_frame, encode_frame};
use cairn_proto::ws::{
    CapacityError, CloseFrame, CloseState, Config, Connection, Error, Event, Misuse, Poll,
    ProtocolError,
};
use proptest::prelude::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, as a server receives it.
fn masked(fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, fin, opcode, Some(MASK), payload);
    out
}

/// Feeds `input` to `conn` and collects events until it needs data or fails.
fn drive(conn: &mut Connection, input: &[u8]) -> (Vec<Event>, Option<Error>) {
    conn.feed(input);
    let mut events = Vec::new();
    loop {
        match conn.next_event() {
            Ok(Poll::NeedData) => return (events, None),
            Ok(Poll::Event(e)) => events.push(e),
            Err(e) => return (events, Some(e)),
        }
    }
}

/// Unmasked close frame carrying `code`, as a server sends it.
fn close_frame(code: u16) -> Vec<u8> {
    let [hi, lo] = code.to_be_bytes();
    vec![0x88, 0x02, hi, lo]
}

/// A server fed `input` fails with `expected`, and answers with a close
/// frame carrying the error's code.
fn check_fails(input: &[u8], expected: Error) {
    let mut conn = Connection::server(Config::default());
    let (_, err) = drive(&mut conn, input);
    assert_eq!(err.as_ref(), Some(&expected), "input {input:02x?}");
    let code = expected
        .close_code()
        .expect("peer faults carry a close code");
    assert_eq!(conn.take_output(), close_frame(code), "input {input:02x?}");
    assert!(conn.is_closed());
    assert_eq!(conn.next_event(), Err(Error::Closed));
}

fn proto(e: ProtocolError) -> Error {
    Error::Protocol(e)
}

#[test]
fn frame_rule_violations_fail_the_connection_with_1002() {
    use ProtocolError as P;
    let m = [0x37, 0xfa, 0x21, 0x3d];
    let with_mask = |b0: u8, b1: u8| [&[b0, b1][..], &m].concat();
    check_fails(&with_mask(0xC1, 0x80), proto(P::ReservedBitsSet(4)));
    check_fails(&with_mask(0xA1, 0x80), proto(P::ReservedBitsSet(2)));
    check_fails(&with_mask(0x91, 0x80), proto(P::ReservedBitsSet(1)));
    check_fails(&with_mask(0x83, 0x80), proto(P::UnknownOpcode(3)));
    check_fails(&with_mask(0x8B, 0x80), proto(P::UnknownOpcode(0xB)));
    check_fails(
        &[0x89, 0xFE, 0x00, 0x7E],
        proto(P::ControlFrameTooLong(126)),
    );
    check_fails(&with_mask(0x09, 0x80), proto(P::FragmentedControlFrame));
    check_fails(&[0x81, 0x00], proto(P::UnmaskedClientFrame));
    check_fails(
        &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
        proto(P::LengthMsbSet),
    );
    check_fails(
        &masked(true, Opcode::Continuation, b"x"),
        proto(P::UnexpectedContinuation),
    );
    let two_starts = [
        masked(false, Opcode::Text, b"a"),
        masked(true, Opcode::Text, b"b"),
    ]
    .concat();
    check_fails(&two_starts, proto(P::ExpectedContinuation));
}

#[test]
fn invalid_utf8_in_text_fails_with_1007() {
    let bad = proto(ProtocolError::InvalidUtf8);
    check_fails(
        &masked(true, Opcode::Text, &[0xCE, 0xBA, 0xED, 0xA0, 0x80]),
        bad.clone(),
    );
    check_fails(
        &masked(true, Opcode::Text, &[0x41, 0xE2, 0x82]),
        bad.clone(),
    );
    // Valid pieces whose join is invalid: the first fragment ends in a lead byte.
    let split = [
        masked(false, Opcode::Text, &[0x41, 0xF0]),
        masked(true, Opcode::Continuation, b"A"),
    ];
    check_fails(&split.concat(), bad.clone());
    // A message ending mid-scalar is invalid even though each byte was a valid prefix.
    let truncated = [
        masked(false, Opcode::Text, &[0xF0, 0x90]),
        masked(true, Opcode::Continuation, &[]),
    ];
    check_fails(&truncated.concat(), bad);
}

#[test]
fn invalid_utf8_fails_before_the_fragment_or_message_ends() {
    let mut conn = Connection::server(Config::default());
    // The first fragment is complete; the second announces 10 bytes but only 3 arrive.
    let frame = masked(
        false,
        Opcode::Continuation,
        &[0x41, 0xED, 0xA0, 0, 0, 0, 0, 0, 0, 0],
    );
    let start = masked(false, Opcode::Text, "κό".as_bytes());
    let (events, err) = drive(&mut conn, &[&start[..], &frame[..6 + 3]].concat());
    assert_eq!(
        (events, err),
        (vec![], Some(proto(ProtocolError::InvalidUtf8)))
    );
}

#[test]
fn bad_close_frames_fail_with_1002_or_1007() {
    use ProtocolError as P;
    check_fails(
        &masked(true, Opcode::Close, &[0x03]),
        proto(P::CloseBodyOneByte),
    );
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        check_fails(
            &masked(true, Opcode::Close, &code.to_be_bytes()),
            proto(P::InvalidCloseCode(code)),
        );
    }
    check_fails(
        &masked(true, Opcode::Close, &[0x03, 0xE8, 0xFF]),
        proto(P::InvalidUtf8),
    );
}

#[test]
fn valid_close_codes_are_echoed() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let mut conn = Connection::server(Config::default());
        let (events, err) = drive(
            &mut conn,
            &masked(
                true,
                Opcode::Close,
                &[&code.to_be_bytes()[..], b"ok"].concat(),
            ),
        );
        let close = CloseFrame {
            code,
            reason: "ok".into(),
        };
        assert_eq!(
            (events, err),
            (vec![Event::Close(Some(close))], Some(Error::Closed)),
            "code {code}"
        );
        assert_eq!(conn.take_output(), close_frame(code));
    }
}

fn limits(message_bytes_max: usize, frame_bytes_max: usize) -> Config {
    Config {
        message_bytes_max,
        frame_bytes_max,
    }
}

#[test]
fn a_frame_at_frame_bytes_max_is_accepted_and_one_byte_more_is_refused_with_1009() {
    let config = limits(1000, 100);
    let mut conn = Connection::server(config);
    let (events, err) = drive(&mut conn, &masked(true, Opcode::Binary, &[7; 100]));
    assert_eq!(
        (events, err),
        (vec![Event::Binary(vec![7; 100].into())], None)
    );
    let mut conn = Connection::server(config);
    let (_, err) = drive(&mut conn, &masked(true, Opcode::Binary, &[7; 101]));
    assert_eq!(
        err,
        Some(Error::Capacity(CapacityError::FrameTooLarge {
            bytes: 101,
            max: 100
        }))
    );
    assert_eq!(conn.take_output(), close_frame(1009));
}

#[test]
fn a_message_at_message_bytes_max_is_accepted_and_one_byte_more_is_refused_with_1009() {
    let config = limits(250, 100);
    let at_limit = [
        masked(false, Opcode::Text, &[b'a'; 100]),
        masked(false, Opcode::Continuation, &[b'b'; 100]),
        masked(true, Opcode::Continuation, &[b'c'; 50]),
    ];
    let mut conn = Connection::server(config);
    let (events, err) = drive(&mut conn, &at_limit.concat());
    assert_eq!(err, None);
    assert!(matches!(&events[..], [Event::Text(t)] if t.len() == 250));
    let over = [
        at_limit[0].clone(),
        at_limit[1].clone(),
        masked(true, Opcode::Continuation, &[b'c'; 51]),
    ];
    let mut conn = Connection::server(config);
    let (events, err) = drive(&mut conn, &over.concat());
    let expected = Error::Capacity(CapacityError::MessageTooLarge {
        bytes: 251,
        max: 250,
    });
    assert_eq!((events, err), (vec![], Some(expected)));
    assert_eq!(conn.take_output(), close_frame(1009));
}

#[test]
fn the_default_limits_are_16_mib() {
    assert_eq!(Config::default(), limits(16 << 20, 16 << 20));
}

#[test]
fn a_client_refuses_masked_frames_and_masks_its_close() {
    let mut conn = Connection::client(Config::default(), 42);
    let (_, err) = drive(&mut conn, &masked(true, Opcode::Text, b"hi"));
    assert_eq!(err, Some(proto(ProtocolError::MaskedServerFrame)));
    let out = conn.take_output();
    let mut copy = out.clone();
    let Ok(Decoded::Complete(f)) = decode_frame(&mut copy, Role::Server) else {
        panic!("client close frame must be a masked frame: {out:02x?}");
    };
    assert_eq!(
        (f.header.opcode, f.payload),
        (Opcode::Close, &[0x03, 0xEA][..])
    );
}

#[test]
fn pings_are_answered_with_pongs_and_pongs_are_delivered() {
    let mut conn = Connection::server(Config::default());
    let input = [
        masked(true, Opcode::Ping, b"abc"),
        masked(true, Opcode::Pong, b"xyz"),
    ]
    .concat();
    let (events, err) = drive(&mut conn, &input);
    assert_eq!(
        (events, err),
        (
            vec![Event::Ping("abc".into()), Event::Pong("xyz".into())],
            None
        )
    );
    assert_eq!(conn.take_output(), b"\x8A\x03abc");
}

#[test]
fn control_frames_may_interleave_with_fragments() {
    let mut conn = Connection::server(Config::default());
    let input = [
        masked(false, Opcode::Text, b"Hel"),
        masked(true, Opcode::Ping, b""),
        masked(true, Opcode::Continuation, b"lo"),
    ];
    let (events, err) = drive(&mut conn, &input.concat());
    assert_eq!(
        (events, err),
        (
            vec![Event::Ping("".into()), Event::Text("Hello".into())],
            None
        )
    );
}

#[test]
fn empty_messages_and_empty_fragments_are_delivered() {
    let mut conn = Connection::server(Config::default());
    let input = [
        masked(true, Opcode::Text, b""),
        masked(false, Opcode::Binary, b""),
        masked(false, Opcode::Continuation, b""),
        masked(true, Opcode::Continuation, b""),
    ];
    let (events, err) = drive(&mut conn, &input.concat());
    assert_eq!(
        (events, err),
        (vec![Event::Text("".into()), Event::Binary("".into())], None)
    );
}

#[test]
fn a_peer_close_is_echoed_and_ends_the_connection() {
    let mut conn = Connection::server(Config::default());
    let (events, err) = drive(&mut conn, &masked(true, Opcode::Close, b""));
    assert_eq!(
        (events, err),
        (vec![Event::Close(None)], Some(Error::Closed))
    );
    assert_eq!(
        conn.take_output(),
        b"\x88\x00",
        "a close without a code is echoed without one"
    );
    assert_eq!(conn.next_event(), Err(Error::Closed));
    assert_eq!(
        conn.send_text("late"),
        Err(Error::Misuse(Misuse::SendAfterClose))
    );
    assert_eq!(
        conn.close(Some(1000), ""),
        Err(Error::Misuse(Misuse::AlreadyClosing))
    );
}

#[test]
fn after_our_close_data_is_ignored_until_the_peer_closes() {
    let mut conn = Connection::server(Config::default());
    conn.close(Some(1001), "going away").unwrap();
    assert_eq!(conn.take_output(), b"\x88\x0C\x03\xE9going away");
    assert_eq!(conn.state(), CloseState::CloseSent);
    let input = [
        masked(true, Opcode::Text, b"ignored"),
        masked(true, Opcode::Ping, b"no pong"),
        masked(true, Opcode::Close, &[0x03, 0xE8]),
    ];
    let (events, err) = drive(&mut conn, &input.concat());
    let close = CloseFrame {
        code: 1000,
        reason: "".into(),
    };
    assert_eq!(
        (events, err),
        (vec![Event::Close(Some(close))], Some(Error::Closed))
    );
    assert!(conn.is_closed());
    assert_eq!(
        conn.take_output(),
        b"",
        "no pong and no second close after ours"
    );
    assert_eq!(conn.ping(b""), Err(Error::Misuse(Misuse::SendAfterClose)));
}

#[test]
fn api_misuse_is_refused_without_touching_the_output() {
    let mut conn = Connection::server(Config::default());
    assert_eq!(
        conn.ping(&[0; 126]),
        Err(Error::Misuse(Misuse::ControlPayloadTooLong))
    );
    assert_eq!(
        conn.close(Some(1005), ""),
        Err(Error::Misuse(Misuse::InvalidCloseCode(1005)))
    );
    assert_eq!(
        conn.close(Some(1000), &"x".repeat(124)),
        Err(Error::Misuse(Misuse::ControlPayloadTooLong))
    );
    assert_eq!(conn.output(), b"");
    assert_eq!(conn.state(), CloseState::Open);
}

#[test]
fn output_is_drained_in_pieces() {
    let mut conn = Connection::server(Config::default());
    conn.send_text("Hello").unwrap();
    assert_eq!(conn.output(), b"\x81\x05Hello");
    conn.consume_output(3);
    assert_eq!(conn.output(), b"ello");
    conn.send_binary(b"!").unwrap();
    assert_eq!(conn.take_output(), b"ello\x82\x01!");
    assert_eq!(conn.output(), b"");
}

#[test]
fn every_split_point_of_a_pipelined_sequence_decodes_identically() {
    let wire = [
        masked(false, Opcode::Text, "κό".as_bytes()),
        masked(true, Opcode::Ping, b"p"),
        masked(true, Opcode::Continuation, "σμε".as_bytes()),
        masked(true, Opcode::Binary, &[9; 300]),
        masked(true, Opcode::Close, &[0x03, 0xE8]),
    ]
    .concat();
    let mut conn = Connection::server(Config::default());
    let whole = (drive(&mut conn, &wire), conn.take_output());
    for split in 0..=wire.len() {
        let mut conn = Connection::server(Config::default());
        // The first part may already end the connection (the split after the close).
        let (mut events, _) = drive(&mut conn, &wire[..split]);
        let (rest, err) = drive(&mut conn, &wire[split..]);
        events.extend(rest);
        assert_eq!(((events, err), conn.take_output()), whole, "split {split}");
    }
}

/// A client message for the property tests.
#[derive(Debug, Clone)]
enum Msg {
    Text(String, usize),
    Binary(Vec<u8>, usize),
    Ping(Vec<u8>),
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        (".{0,40}", 1usize..4).prop_map(|(s, n)| Msg::Text(s, n)),
        (proptest::collection::vec(any::<u8>(), 0..300), 1usize..4)
            .prop_map(|(b, n)| Msg::Binary(b, n)),
        proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Msg::Ping),
    ]
}

/// Encodes `m` as masked client frames, fragmenting data into `n` pieces
/// (splitting text at arbitrary bytes, even inside a scalar).
fn encode(m: &Msg, out: &mut Vec<u8>) -> Event {
    let (op, bytes, n, event) = match m {
        Msg::Ping(p) => {
            encode_frame(out, true, Opcode::Ping, Some(MASK), p);
            return Event::Ping(p.clone().into());
        }
        Msg::Text(s, n) => (
            Opcode::Text,
            s.as_bytes(),
            *n,
            Event::Text(s.clone().into()),
        ),
        Msg::Binary(b, n) => (Opcode::Binary, &b[..], *n, Event::Binary(b.clone().into())),
    };
    let step = bytes.len().div_ceil(n).max(1);
    let mut chunks: Vec<&[u8]> = bytes.chunks(step).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        let opcode = if i == 0 { op } else { Opcode::Continuation };
        encode_frame(out, i == last, opcode, Some(MASK), c);
    }
    event
}

proptest! {
    #[test]
    fn any_split_of_the_input_decodes_identically(
        msgs in proptest::collection::vec(msg(), 1..8),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut wire = Vec::new();
        let expected: Vec<Event> = msgs.iter().map(|m| encode(m, &mut wire)).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut conn = Connection::server(Config::default());
        let mut events = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([wire.len()]) {
            let (evs, err) = drive(&mut conn, &wire[prev..p]);
            prop_assert_eq!(err, None);
            events.extend(evs);
            prev = p;
        }
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn encode_then_decode_is_the_identity_for_frames(
        fin in any::<bool>(),
        op in prop::sample::select(vec![Opcode::Continuation, Opcode::Text, Opcode::Binary,
                                        Opcode::Close, Opcode::Ping, Opcode::Pong]),
        mask in proptest::option::of(any::<[u8; 4]>()),
        payload in proptest::collection::vec(any::<u8>(), 0..70_000),
    ) {
        let (fin, payload) = if op.is_control() {
            (true, &payload[..payload.len().min(125)])
        } else {
            (fin, &payload[..])
        };
        let mut wire = Vec::new();
        encode_frame(&mut wire, fin, op, mask, payload);
        let role = if mask.is_some() { Role::Server } else { Role::Client };
        let Ok(Decoded::Complete(f)) = decode_frame(&mut wire, role) else {
            panic!("encoded frame did not decode");
        };
        prop_assert_eq!((f.header.fin, f.header.opcode, f.header.mask), (fin, op, mask));
        prop_assert_eq!(f.payload, payload);
        prop_assert_eq!(f.wire_len(), wire.len());
    }
}
