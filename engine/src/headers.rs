//! [`Headers`]: a request's header fields as an object sees them.
//!
//! The fields are kept as one HTTP/1.1 field section (`name: value` lines,
//! CRLF-ended) over shared bytes: for a request from a connection, the very
//! bytes of its head, so handing the headers to an object copies and
//! allocates nothing; a request built in code ([`Headers::push`]) gets its own
//! buffer.
//!
//! INVARIANT: the section is valid UTF-8, and every line is `name: value`
//! with a token name and a value free of CR, LF and NUL. Sections from the
//! wire were validated by `cairn-proto`; one that is not UTF-8 is copied with
//! the bad bytes replaced by U+FFFD (as `String::from_utf8_lossy` does), the
//! one case that allocates.

use std::fmt;

use bytes::{Bytes, BytesMut};
use cairn_proto::http::{Fields, is_tchar};

/// Header fields in the order they arrived. Names keep the case they were
/// sent in; [`get`](Headers::get) compares them case-insensitively.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    section: Bytes,
}

/// A header [`Headers::push`] refused: the name is not an HTTP token, or the
/// value holds CR, LF or NUL (which would let it forge further fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader {
    /// The refused name.
    pub name: String,
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "header {:?} refused: names are HTTP tokens and values hold no CR, LF or NUL",
            self.name
        )
    }
}

impl std::error::Error for InvalidHeader {}

impl Headers {
    /// No fields.
    pub const fn new() -> Headers {
        Headers {
            section: Bytes::new(),
        }
    }

    /// The fields of a field section `cairn-proto` validated
    /// (`Request::fields_bytes`), shared rather than copied.
    pub(crate) fn from_validated_section(section: Bytes) -> Headers {
        if std::str::from_utf8(&section).is_ok() {
            return Headers { section };
        }
        let lossy = String::from_utf8_lossy(&section).into_owned();
        Headers {
            section: Bytes::from(lossy),
        }
    }

    /// The value of the first field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every field, in order, as `(name, value)`; values without the
    /// whitespace around them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        // The section is UTF-8 (the invariant), and a field's value is a
        // slice of it between ASCII bytes, so the check never fails.
        Fields::new(&self.section).filter_map(|(n, v)| Some((n, std::str::from_utf8(v).ok()?)))
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Appends the field `name: value` (after any already there). The value
    /// reads back without the spaces and tabs around it, as a received one.
    pub fn push(&mut self, name: &str, value: &str) -> Result<(), InvalidHeader> {
        let value_ok = !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        if name.is_empty() || !name.bytes().all(is_tchar) || !value_ok {
            return Err(InvalidHeader {
                name: name.to_string(),
            });
        }
        // Rebuilt rather than appended to: a section from the wire ends with
        // the empty line that closed it (CRLF or a bare LF), which must stay last.
        let mut out = BytesMut::with_capacity(self.section.len() + name.len() + value.len() + 6);
        for (n, v) in self.iter().chain(std::iter::once((name, value))) {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.section = out.freeze();
        Ok(())
    }

    /// The same fields with `name: value` appended; panics on a field
    /// [`push`](Headers::push) refuses (for fields written in code).
    pub fn with(mut self, name: &str, value: &str) -> Headers {
        if let Err(e) = self.push(name, value) {
            panic!("{e}");
        }
        self
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers {
    /// Panics on a field [`Headers::push`] refuses.
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(it: I) -> Headers {
        it.into_iter()
            .fold(Headers::new(), |h, (name, value)| h.with(name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_from_the_wire_are_read_in_place_and_case_insensitively() {
        let head = Bytes::from_static(b"GET / HTTP/1.1\r\nHost: a\r\nX-Thing:  b c \r\n\r\n");
        let h = Headers::from_validated_section(head.slice(16..));
        assert_eq!(h.get("host"), Some("a"));
        assert_eq!(h.get("x-thing"), Some("b c"));
        assert_eq!(h.get("absent"), None);
        assert_eq!(h.len(), 2);
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("Host", "a"), ("X-Thing", "b c")]
        );
    }

    #[test]
    fn values_that_are_not_utf8_are_replaced_not_dropped() {
        let h = Headers::from_validated_section(Bytes::from_static(b"x: a\xffb\r\n\r\n"));
        assert_eq!(h.get("x"), Some("a\u{fffd}b"));
        let mut bare = Headers::from_validated_section(Bytes::from_static(b"x: 1\n\n"));
        bare.push("y", "2").unwrap();
        assert_eq!(
            bare.iter().collect::<Vec<_>>(),
            vec![("x", "1"), ("y", "2")]
        );
        assert_eq!(h.get("x"), Some("a\u{fffd}b"));
    }

    #[test]
    fn pushed_fields_follow_received_ones_and_forged_lines_are_refused() {
        let mut h = Headers::from_validated_section(Bytes::from_static(b"a: 1\r\n\r\n"));
        h.push("b", "2").unwrap();
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
        assert!(h.push("c", "3\r\nd: 4").is_err());
        assert!(h.push("bad name", "x").is_err());
        assert!(h.push("", "x").is_err());
        assert_eq!(h.len(), 2);
        let built: Headers = [("x", "1"), ("y", "2")].into_iter().collect();
        assert_eq!(built.get("Y"), Some("2"));
        assert!(Headers::new().is_empty());
        assert_eq!(format!("{built:?}"), r#"[("x", "1"), ("y", "2")]"#);
    }
}
