//! Fuzzes message assembly through the server-side `Connection`: the same
//! bytes fed whole and fed in fuzzer-chosen pieces must give the same events
//! and the same output, every text message is valid UTF-8, no message exceeds
//! the limit, and a failed connection stays closed.
#![no_main]

use cairn_proto::ws::{Config, Connection, Error, Event, Poll};
use libfuzzer_sys::fuzz_target;

const CONFIG: Config = Config {
    message_bytes_max: 4096,
    frame_bytes_max: 2048,
};

/// Runs `pieces` through a fresh server connection; returns events, final
/// error (if any) and everything written.
fn run<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<Event>, Option<Error>, Vec<u8>) {
    let mut conn = Connection::server(CONFIG);
    let mut events = Vec::new();
    let mut end = None;
    'outer: for piece in pieces {
        conn.feed(piece);
        loop {
            match conn.next_event() {
                Ok(Poll::NeedData) => break,
                Ok(Poll::Event(ev)) => {
                    match &ev {
                        Event::Text(t) => {
                            assert!(std::str::from_utf8(t).is_ok());
                            assert!(t.len() <= CONFIG.message_bytes_max);
                        }
                        Event::Binary(b) => assert!(b.len() <= CONFIG.message_bytes_max),
                        Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
                        Event::Close(_) => {}
                    }
                    events.push(ev);
                }
                Err(e) => {
                    assert!(conn.is_closed());
                    assert_eq!(
                        conn.next_event(),
                        Err(Error::Closed),
                        "a finished connection stays finished"
                    );
                    end = Some(e);
                    break 'outer;
                }
            }
        }
    }
    (events, end, conn.take_output())
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 17) + 1;
    let whole = run(std::iter::once(input));
    let pieces = run(input.chunks(step));
    // The whole-input run stops at the first error; the pieced run must agree exactly.
    assert_eq!(
        whole, pieces,
        "split into pieces of {step} changed the outcome"
    );
});
