//! The response writer and date cache, against literal wire bytes.

use cairn_proto::http::{DateCache, ResponseWriter, reason_phrase, write_continue};

const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const DATE_SECS: u64 = 784_111_777;

fn write(status: u16, head: bool, f: impl FnOnce(ResponseWriter<'_>)) -> String {
    let mut out = Vec::new();
    let date = DateCache::new(DATE_SECS);
    f(ResponseWriter::new(&mut out, status, &date, head));
    String::from_utf8(out).unwrap()
}

#[test]
fn date_cache_formats_imf_fixdate() {
    let check = |secs: u64, text: &str| {
        assert_eq!(DateCache::new(secs).as_bytes(), text.as_bytes(), "{secs}")
    };
    check(0, "Thu, 01 Jan 1970 00:00:00 GMT");
    check(DATE_SECS, DATE);
    check(951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT");
    check(1_709_251_199, "Thu, 29 Feb 2024 23:59:59 GMT");
    check(4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT");
    check(253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT");
    check(u64::MAX, "Fri, 31 Dec 9999 23:59:59 GMT");
}

#[test]
fn date_cache_reformats_only_when_the_second_changes() {
    let mut cache = DateCache::new(DATE_SECS);
    assert!(!cache.update(DATE_SECS));
    assert!(cache.update(DATE_SECS + 1));
    assert_eq!(cache.as_bytes(), b"Sun, 06 Nov 1994 08:49:38 GMT");
}

#[test]
fn content_length_response_is_written_exactly() {
    let got = write(200, false, |mut w| {
        w.header("Content-Type", b"text/plain").unwrap();
        w.body(b"hi");
    });
    assert_eq!(
        got,
        format!(
            "HTTP/1.1 200 OK\r\nDate: {DATE}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        )
    );
}

#[test]
fn head_response_has_the_length_but_no_body_bytes() {
    let got = write(200, true, |w| w.body(b"hello"));
    assert_eq!(
        got,
        format!("HTTP/1.1 200 OK\r\nDate: {DATE}\r\nContent-Length: 5\r\n\r\n")
    );
}

#[test]
fn bodiless_statuses_carry_neither_length_nor_bytes() {
    for status in [204, 304, 101] {
        let got = write(status, false, |w| w.body(b"ignored"));
        let want = format!(
            "HTTP/1.1 {status} {}\r\nDate: {DATE}\r\n\r\n",
            reason_phrase(status)
        );
        assert_eq!(got, want);
    }
}

#[test]
fn chunked_response_is_written_exactly() {
    let got = write(200, false, |mut w| {
        w.close();
        let mut body = w.chunked();
        body.chunk(b"hello");
        body.chunk(b"");
        body.chunk(&[b'x'; 26]);
        body.finish(&[("X-Checksum", b"1")]).unwrap();
    });
    let want = format!(
        "HTTP/1.1 200 OK\r\nDate: {DATE}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n1a\r\n{}\r\n0\r\nX-Checksum: 1\r\n\r\n",
        "x".repeat(26)
    );
    assert_eq!(got, want);
}

#[test]
fn chunked_head_response_writes_no_chunks() {
    let got = write(200, true, |w| {
        let mut body = w.chunked();
        body.chunk(b"hello");
        body.finish(&[]).unwrap();
    });
    assert_eq!(
        got,
        format!("HTTP/1.1 200 OK\r\nDate: {DATE}\r\nTransfer-Encoding: chunked\r\n\r\n")
    );
}

#[test]
fn header_injection_is_refused() {
    let mut out = Vec::new();
    let date = DateCache::new(0);
    let mut w = ResponseWriter::new(&mut out, 200, &date, false);
    assert!(w.header("X", b"a\r\nSet-Cookie: x").is_err());
    assert!(w.header("X", b"a\nb").is_err());
    assert!(w.header("X", b"a\0b").is_err());
    assert!(w.header("Bad Name", b"v").is_err());
    assert!(w.header("", b"v").is_err());
    assert!(w.header("X", b"tab\tand obs-text \xff ok").is_ok());
}

#[test]
fn unknown_statuses_have_an_empty_reason_and_continue_is_literal() {
    let got = write(299, false, |w| w.body(b""));
    assert!(got.starts_with("HTTP/1.1 299 \r\n"));
    assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
    let mut out = Vec::new();
    write_continue(&mut out);
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn writing_into_a_reused_buffer_does_not_grow_it() {
    let date = DateCache::new(DATE_SECS);
    let mut out = Vec::with_capacity(256);
    for _ in 0..3 {
        out.clear();
        let mut w = ResponseWriter::new(&mut out, 200, &date, false);
        w.header("Content-Type", b"application/json").unwrap();
        w.body(b"{\"ok\":true}");
    }
    assert_eq!(out.capacity(), 256);
}
