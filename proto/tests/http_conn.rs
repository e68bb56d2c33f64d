//! The connection state table, walked exhaustively, and the request decoder
//! driving it: keep-alive, pipelining in order, pause, close and EOF rules.

use bytes::BytesMut;
use cairn_proto::http::conn::transition;
use cairn_proto::http::{ConnEvent, ConnState, Error, Event, Limits, RequestDecoder};

use ConnEvent as E;
use ConnState as S;

/// The whole table, written out independently of `conn.rs`: every legal
/// pair and where it leads. Anything not listed must be refused.
const LEGAL: &[(ConnState, ConnEvent, ConnState)] = &[
    (S::Idle, E::BytesArrived, S::ReadingHead),
    (S::ReadingHead, E::BytesArrived, S::ReadingHead),
    (S::ReadingBody, E::BytesArrived, S::ReadingBody),
    (S::AwaitingResponse, E::BytesArrived, S::AwaitingResponse),
    (S::Closing, E::BytesArrived, S::Closing),
    (S::Idle, E::HeadComplete { body: true }, S::ReadingBody),
    (
        S::ReadingHead,
        E::HeadComplete { body: true },
        S::ReadingBody,
    ),
    (
        S::Idle,
        E::HeadComplete { body: false },
        S::AwaitingResponse,
    ),
    (
        S::ReadingHead,
        E::HeadComplete { body: false },
        S::AwaitingResponse,
    ),
    (S::ReadingBody, E::BodyComplete, S::AwaitingResponse),
    (
        S::AwaitingResponse,
        E::ResponseSent { keep_alive: true },
        S::Idle,
    ),
    (
        S::AwaitingResponse,
        E::ResponseSent { keep_alive: false },
        S::Closed,
    ),
    (
        S::ReadingBody,
        E::ResponseSent { keep_alive: true },
        S::Closed,
    ),
    (
        S::ReadingBody,
        E::ResponseSent { keep_alive: false },
        S::Closed,
    ),
    (S::Closing, E::ResponseSent { keep_alive: true }, S::Closed),
    (S::Closing, E::ResponseSent { keep_alive: false }, S::Closed),
    (S::Idle, E::PeerError, S::Closing),
    (S::ReadingHead, E::PeerError, S::Closing),
    (S::ReadingBody, E::PeerError, S::Closing),
    (S::AwaitingResponse, E::PeerError, S::Closing),
    (S::Closing, E::PeerError, S::Closing),
    (S::Idle, E::PeerClosed, S::Closed),
    (S::Closed, E::PeerClosed, S::Closed),
    (S::ReadingHead, E::PeerClosed, S::Closing),
    (S::ReadingBody, E::PeerClosed, S::Closing),
    (S::AwaitingResponse, E::PeerClosed, S::Closing),
    (S::Closing, E::PeerClosed, S::Closing),
];

#[test]
fn every_state_event_pair_transitions_as_the_table_says_or_is_refused() {
    let mut walked = 0;
    for state in ConnState::ALL {
        for event in ConnEvent::ALL {
            let expected = LEGAL
                .iter()
                .find(|(s, e, _)| *s == state && *e == event)
                .map(|(_, _, n)| *n);
            match (transition(state, event), expected) {
                (Ok(next), Some(want)) => assert_eq!(next, want, "{state:?} + {event:?}"),
                (Err(err), None) => {
                    assert_eq!((err.state, err.event), (state, event));
                    assert!(err.to_string().contains("not legal"));
                }
                (got, want) => panic!("{state:?} + {event:?}: got {got:?}, table says {want:?}"),
            }
            walked += 1;
        }
    }
    assert_eq!(walked, ConnState::ALL.len() * ConnEvent::ALL.len());
}

#[test]
fn closed_is_terminal_except_for_a_repeated_peer_close() {
    for event in ConnEvent::ALL {
        let r = transition(S::Closed, event);
        assert_eq!(r.is_ok(), event == E::PeerClosed, "{event:?}");
    }
}

fn decoder() -> RequestDecoder {
    RequestDecoder::new(Limits::default())
}

#[test]
fn pipelined_requests_are_released_one_at_a_time_in_order() {
    let mut d = decoder();
    let mut buf = BytesMut::from(
        &b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
    );
    let first = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(first.target(), "/1");
    assert_eq!(d.state(), S::AwaitingResponse);
    assert_eq!(d.next_event(&mut buf), Ok(Event::Paused));
    assert_eq!(d.decode(&mut buf), Ok(None));
    d.response_sent(true).unwrap();
    assert_eq!(d.state(), S::Idle);
    assert_eq!(d.decode(&mut buf).unwrap().unwrap().target(), "/2");
    d.response_sent(true).unwrap();
    assert_eq!(d.next_event(&mut buf), Ok(Event::NeedData));
}

#[test]
fn streaming_events_follow_head_body_end() {
    let mut d = decoder();
    let mut buf =
        BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234"[..]);
    let Ok(Event::Head(head)) = d.next_event(&mut buf) else {
        panic!("head first")
    };
    assert!(head.body.is_empty());
    assert_eq!(d.next_event(&mut buf), Ok(Event::Body("01234".into())));
    assert_eq!(d.next_event(&mut buf), Ok(Event::NeedData));
    buf.extend_from_slice(b"56789GET");
    assert_eq!(d.next_event(&mut buf), Ok(Event::Body("56789".into())));
    assert_eq!(d.next_event(&mut buf), Ok(Event::End));
    assert_eq!(d.next_event(&mut buf), Ok(Event::Paused));
    assert_eq!(&buf[..], b"GET");
}

#[test]
fn http10_without_keep_alive_closes_after_the_response() {
    let mut d = decoder();
    let mut buf = BytesMut::from(&b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"[..]);
    assert!(d.decode(&mut buf).unwrap().is_some());
    assert!(d.must_close());
    d.response_sent(true).unwrap();
    assert_eq!(d.state(), S::Closed);
    assert_eq!(d.next_event(&mut buf), Ok(Event::Closed));
}

#[test]
fn connection_close_ends_the_connection_and_server_may_close_too() {
    let mut d = decoder();
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..]);
    assert!(d.decode(&mut buf).unwrap().is_some());
    d.response_sent(true).unwrap();
    assert_eq!(d.state(), S::Closed);

    let mut d = decoder();
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
    assert!(d.decode(&mut buf).unwrap().is_some());
    assert!(!d.must_close());
    d.response_sent(false).unwrap();
    assert_eq!(d.state(), S::Closed);
}

#[test]
fn a_peer_error_moves_to_closing_and_one_response_ends_it() {
    let mut d = decoder();
    let mut buf = BytesMut::from(&b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..]);
    assert_eq!(d.decode(&mut buf), Err(Error::VersionNotSupported));
    assert_eq!(d.state(), S::Closing);
    assert!(d.must_close());
    assert_eq!(d.next_event(&mut buf), Ok(Event::Paused));
    d.response_sent(true).unwrap();
    assert_eq!(d.next_event(&mut buf), Ok(Event::Closed));
}

#[test]
fn responding_without_a_request_is_a_caller_bug() {
    let mut d = decoder();
    let err = d.response_sent(true).unwrap_err();
    assert_eq!(
        (err.state, err.event),
        (S::Idle, E::ResponseSent { keep_alive: true })
    );
}

#[test]
fn eof_between_requests_is_clean_and_mid_request_is_an_error() {
    let mut d = decoder();
    assert_eq!(d.peer_closed(), Ok(()));
    assert_eq!(d.state(), S::Closed);

    let mut d = decoder();
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHo"[..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(d.peer_closed(), Err(Error::UnexpectedEof));
    assert_eq!(d.state(), S::Closing);

    let mut d = decoder();
    let mut buf =
        BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234"[..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(d.peer_closed(), Err(Error::UnexpectedEof));
}

#[test]
fn eof_with_a_response_outstanding_still_lets_that_response_out() {
    let mut d = decoder();
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
    assert!(d.decode(&mut buf).unwrap().is_some());
    assert_eq!(d.peer_closed(), Ok(()));
    assert_eq!(d.state(), S::Closing);
    d.response_sent(true).unwrap();
    assert_eq!(d.state(), S::Closed);
}

#[test]
fn expect_continue_is_signalled_once_before_the_body() {
    let mut d = decoder();
    let mut buf = BytesMut::from(
        &b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"[..],
    );
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert!(d.take_continue());
    assert!(!d.take_continue());
    buf.extend_from_slice(b"abc");
    let r = d.decode(&mut buf).unwrap().unwrap();
    assert!(r.expect_continue);
    assert_eq!(&r.body[..], b"abc");
}

#[test]
fn a_content_length_body_is_split_off_without_copying() {
    let mut d = decoder();
    let mut buf =
        BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"[..]);
    let base = buf.as_ptr() as usize;
    let r = d.decode(&mut buf).unwrap().unwrap();
    assert_eq!(r.body.as_ptr() as usize - base, r.head_bytes().len());
    assert_eq!(r.head_bytes().as_ptr() as usize, base);
}
