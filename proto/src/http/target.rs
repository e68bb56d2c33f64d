//! Request-target helpers: split path and query, percent-decode, iterate
//! query pairs. Every function is total: malformed input is an error value
//! or passes through, never a panic.

use std::fmt;

/// A request-target split into its raw (still percent-encoded) parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The path: `/` for an absolute-form target with no path, `*` for the
    /// asterisk form, the authority for the authority form (`CONNECT`).
    pub path: &'a str,
    /// The query, without its `?`, if there was one.
    pub query: Option<&'a str>,
}

/// The index of the first `b` (an ASCII byte, so the index is a character
/// boundary) in `s`. A plain byte loop: request targets are tens of bytes,
/// where `str::find` with a `char` costs more in set-up than in searching.
pub fn find_byte(s: &str, b: u8) -> Option<usize> {
    debug_assert!(b.is_ascii());
    s.bytes().position(|x| x == b)
}

/// Splits a request-target. Absolute-form (`http://host/p?q`, RFC 9112
/// 3.2.2) loses its scheme and authority; the fragment, which a client must
/// not send, is dropped if present.
pub fn split(target: &str) -> Target<'_> {
    let target = find_byte(target, b'#').map_or(target, |i| &target[..i]);
    // The origin form (`/p?q`), which is nearly every request, has no scheme:
    // a scheme is alphanumeric before its `://`, and `/` is not.
    if target.starts_with('/') {
        let (path, query) = match find_byte(target, b'?') {
            Some(i) => (&target[..i], Some(&target[i + 1..])),
            None => (target, None),
        };
        return Target { path, query };
    }
    let after_scheme = target.find("://").filter(|&i| {
        i > 0
            && target[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    let origin = match after_scheme {
        Some(i) => {
            let rest = &target[i + 3..];
            match rest.find(['/', '?']) {
                Some(j) => &rest[j..],
                None => "",
            }
        }
        None => target,
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    };
    Target {
        path: if path.is_empty() && after_scheme.is_some() {
            "/"
        } else {
            path
        },
        query,
    }
}

/// A `%` not followed by two hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPercentEncoding {
    /// Offset of the offending `%` in the input.
    pub offset: usize,
}

impl fmt::Display for BadPercentEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid percent-encoding at byte {}", self.offset)
    }
}

impl std::error::Error for BadPercentEncoding {}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Appends `input` with `%XX` escapes decoded to `out` (which the caller may
/// reuse). With `plus_as_space`, `+` becomes a space (form encoding, for
/// query components). The result is bytes: decoding may yield non-UTF-8.
pub fn percent_decode(
    input: &[u8],
    plus_as_space: bool,
    out: &mut Vec<u8>,
) -> Result<(), BadPercentEncoding> {
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'%' => {
                let pair = input
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .zip(input.get(i + 2).copied().and_then(hex));
                let Some((hi, lo)) = pair else {
                    return Err(BadPercentEncoding { offset: i });
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(())
}

/// Iterates `key=value` pairs of a query, split on `&` and the first `=`,
/// still encoded (decode each with [`percent_decode`] and `plus_as_space`).
/// Empty pieces (`a&&b`) are skipped; a piece without `=` has an empty value.
pub fn query_pairs(query: &str) -> QueryPairs<'_> {
    QueryPairs {
        rest: query.split('&'),
    }
}

/// The iterator returned by [`query_pairs`].
#[derive(Debug, Clone)]
pub struct QueryPairs<'a> {
    rest: std::str::Split<'a, char>,
}

impl<'a> Iterator for QueryPairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let piece = self.rest.next()?;
            if piece.is_empty() {
                continue;
            }
            return Some(piece.split_once('=').unwrap_or((piece, "")));
        }
    }
}
