//! [`Text`]: an immutable UTF-8 string over shared bytes.
//!
//! A request's method, path and query are slices of the request head the
//! connection read, so the server hands them to the object without copying
//! or allocating (a `Bytes` slice is a reference count, a static string not
//! even that). `Text` is what a handler sees: it derefs to `&str`, compares
//! with `&str` and `String`, and is built from either.
//!
//! INVARIANT: the bytes are valid UTF-8. Every constructor takes a `str` or
//! checks the bytes, which is what makes [`Text::as_str`] sound.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// An immutable UTF-8 string that shares its bytes (a slice of the request
/// head it came from, a static string, or its own copy). Cheap to clone.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text(Bytes);

impl Text {
    /// An empty text.
    pub const fn new() -> Text {
        Text(Bytes::new())
    }

    /// A text over a static string: no allocation, no reference count.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// `bytes` as text, or the error if they are not UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Text(bytes))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: the bytes are valid UTF-8, the type's invariant: `new` and
        // `from_static` hold a `str`, `from_utf8` checked them, and the `From`
        // impls take a `str` or `String`; nothing mutates them afterwards
        // (`Bytes` is immutable).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The bytes, shared.
    pub fn as_bytes_shared(&self) -> &Bytes {
        &self.0
    }
}

/// Hashed as the `str` it holds (not as `Bytes`, which hashes like `[u8]`),
/// as `Borrow<str>` requires: a `HashMap<Text, _>` is looked up by `&str`.
impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Text {
        Text::from(s.as_str())
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_and_derefs_like_the_string_it_holds() {
        let t = Text::from("/keys");
        assert_eq!(t, "/keys");
        assert_eq!("/keys", t);
        assert_eq!(t, String::from("/keys"));
        assert_eq!(t.strip_prefix("/"), Some("keys"));
        assert_eq!(format!("{t} {t:?}"), "/keys \"/keys\"");
        assert_eq!(Text::from_static("GET"), Text::from(String::from("GET")));
        assert!(Text::new().is_empty());
    }

    #[test]
    fn a_map_keyed_by_text_is_found_by_str() {
        let mut m = std::collections::HashMap::new();
        m.insert(Text::from("a"), 1);
        assert_eq!(m.get("a"), Some(&1));
        let set: std::collections::BTreeSet<Text> =
            ["b", "a"].into_iter().map(Text::from).collect();
        assert!(set.contains("a"));
    }

    #[test]
    fn bytes_that_are_not_utf8_are_refused() {
        assert!(Text::from_utf8(Bytes::from_static(b"\xff")).is_err());
        let head = Bytes::from_static(b"GET /a?b HTTP/1.1");
        let t = Text::from_utf8(head.slice(4..6)).unwrap();
        assert_eq!(t, "/a");
    }
}
