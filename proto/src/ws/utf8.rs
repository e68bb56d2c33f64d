//! Incremental UTF-8 validation of a text message that arrives in pieces
//! (fragments, or partial reads of one frame).
//!
//! The validator fails as soon as an invalid sequence is certain, even in the
//! middle of a fragment, so that a peer cannot make us buffer a message that
//! is already known to be bad (Autobahn 6.4.*).

/// Validates UTF-8 fed in arbitrary pieces.
///
/// **Invariant:** `pending[..pending_len]` is a proper prefix of some valid
/// UTF-8 scalar (1 to 3 bytes); everything before it was valid.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: usize,
}

/// The input is certainly not valid UTF-8, whatever follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece. `Err` as soon as the bytes seen so far cannot
    /// be the prefix of valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            // Complete the scalar split across pieces: try it with up to 3 more bytes.
            let take = input.len().min(4 - self.pending_len);
            let mut tmp = [0u8; 7];
            tmp[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
            tmp[self.pending_len..self.pending_len + take].copy_from_slice(&input[..take]);
            let width = char_width(self.pending[0]);
            let tmp = &tmp[..self.pending_len + take];
            match std::str::from_utf8(tmp) {
                Err(e) if e.valid_up_to() == 0 => {
                    if e.error_len().is_some() {
                        return Err(InvalidUtf8);
                    }
                    // Still a valid prefix: the piece was too short to finish it.
                    self.pending[self.pending_len..self.pending_len + take]
                        .copy_from_slice(&input[..take]);
                    self.pending_len += take;
                    return Ok(());
                }
                _ => {
                    // The first scalar is complete and valid: it spans `width` bytes.
                    input = &input[width - self.pending_len..];
                    self.pending_len = 0;
                }
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
        }
    }

    /// Ends the message: `Err` if it stopped in the middle of a scalar.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }
}

fn char_width(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every point (and byte by byte) and checks the verdict
    /// agrees with std: `Ok` iff valid, and failure at the first certain byte.
    fn check(input: &[u8], valid: bool) {
        assert_eq!(
            std::str::from_utf8(input).is_ok(),
            valid,
            "test case itself is wrong: {input:02x?}"
        );
        for split in 0..=input.len() {
            let mut v = Utf8Validator::new();
            let r = v
                .feed(&input[..split])
                .and_then(|()| v.feed(&input[split..]))
                .and_then(|()| v.finish());
            assert_eq!(r.is_ok(), valid, "{input:02x?} split at {split}");
        }
        let mut v = Utf8Validator::new();
        let mut r = Ok(());
        for b in input {
            r = r.and_then(|()| v.feed(std::slice::from_ref(b)));
        }
        assert_eq!(
            r.and_then(|()| v.finish()).is_ok(),
            valid,
            "{input:02x?} byte by byte"
        );
    }

    #[test]
    fn valid_text_passes_in_any_split() {
        check(b"", true);
        check(b"Hello", true);
        check("κόσμε".as_bytes(), true);
        check("Hello-µ@ßöäüàá-UTF-8!!".as_bytes(), true);
        check(&[0xF0, 0x90, 0x80, 0x80], true);
        check(&[0xF4, 0x8F, 0xBF, 0xBF], true);
        check(&[0xEF, 0xBF, 0xBF], true);
        check(&[0xED, 0x9F, 0xBF], true);
    }

    #[test]
    fn invalid_text_fails_in_any_split() {
        check(
            &[
                0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80,
                0x65,
            ],
            false,
        );
        check(&[0x80], false);
        check(&[0xC0, 0x80], false);
        check(&[0xED, 0xA0, 0x80], false);
        check(&[0xF4, 0x90, 0x80, 0x80], false);
        check(&[0xF5], false);
        check(&[0xFF], false);
        check(&[0xE0, 0x80, 0x80], false);
        check(&[0xF0, 0x80, 0x80, 0x80], false);
        check(&[0xCE], false);
        check(&[0xF0, 0x90, 0x80], false);
        check(&[0x41, 0xE2, 0x82], false);
    }

    #[test]
    fn invalid_sequences_fail_before_the_message_ends() {
        // Certain at the second byte: 0xED 0xA0 starts a surrogate.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0x41, 0xED]), Ok(()));
        assert_eq!(v.feed(&[0xA0]), Err(InvalidUtf8));
        // Certain at the first byte after a complete scalar.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xCE, 0xBA, 0xF8]), Err(InvalidUtf8));
        // A lone prefix split across pieces stays pending, not failed.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xF0]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Ok(()));
        assert_eq!(v.feed(&[0x80]), Ok(()));
        assert_eq!(v.feed(&[0x41]), Err(InvalidUtf8));
    }
}
