//! Request-target helpers: path/query split, percent-decoding, query pairs.

use cairn_proto::http::target::split;
use cairn_proto::http::{BadPercentEncoding, percent_decode, query_pairs};

#[track_caller]
fn check_split(target: &str, path: &str, query: Option<&str>) {
    let t = split(target);
    assert_eq!((t.path, t.query), (path, query), "{target}");
}

#[test]
fn targets_split_into_path_and_query() {
    check_split("/", "/", None);
    check_split("/a/b?x=1&y", "/a/b", Some("x=1&y"));
    check_split("/a?", "/a", Some(""));
    check_split("/a?b?c", "/a", Some("b?c"));
    check_split("/a#frag", "/a", None);
    // A scheme in the query of an origin-form target is not an absolute form.
    check_split(
        "/p?u=http://x.example/y",
        "/p",
        Some("u=http://x.example/y"),
    );
    check_split("/http://x.example/y", "/http://x.example/y", None);
    check_split("http://host.example/p?q", "/p", Some("q"));
    check_split("http://host.example", "/", None);
    check_split("https://host.example:8443?q", "/", Some("q"));
    check_split("*", "*", None);
    check_split("host.example:443", "host.example:443", None);
    check_split("", "", None);
}

#[track_caller]
fn check_decode(input: &str, plus: bool, expected: Result<&[u8], usize>) {
    let mut out = Vec::new();
    let got = percent_decode(input.as_bytes(), plus, &mut out).map(|()| out);
    assert_eq!(
        got,
        expected
            .map(<[u8]>::to_vec)
            .map_err(|offset| BadPercentEncoding { offset }),
        "{input}"
    );
}

#[test]
fn percent_decoding_decodes_escapes_and_rejects_broken_ones() {
    check_decode("/a%20b", false, Ok(b"/a b"));
    check_decode("%2F%2f", false, Ok(b"//"));
    check_decode("a+b", false, Ok(b"a+b"));
    check_decode("a+b", true, Ok(b"a b"));
    check_decode("%C3%A9", false, Ok("é".as_bytes()));
    check_decode("%FF", false, Ok(b"\xff"));
    check_decode("%00", false, Ok(b"\0"));
    check_decode("%", false, Err(0));
    check_decode("ab%2", false, Err(2));
    check_decode("%zz", false, Err(0));
    check_decode("%%41", false, Err(0));
}

#[test]
fn query_pairs_split_on_ampersand_and_first_equals() {
    let pairs: Vec<_> = query_pairs("a=1&b=&c&&d=x=y&=z").collect();
    assert_eq!(
        pairs,
        [("a", "1"), ("b", ""), ("c", ""), ("d", "x=y"), ("", "z")]
    );
    assert_eq!(query_pairs("").count(), 0);
}

#[test]
fn percent_decoding_never_panics_on_any_short_input() {
    // Every 0-3 byte string over an alphabet that exercises escapes.
    let alphabet = [b'%', b'0', b'f', b'G', b'+', 0xff];
    let mut out = Vec::new();
    for len in 0..=3u32 {
        for n in 0..alphabet.len().pow(len) {
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[n / alphabet.len().pow(i) % alphabet.len()])
                .collect();
            out.clear();
            let _ = percent_decode(&bytes, true, &mut out);
        }
    }
}
