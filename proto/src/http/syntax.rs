//! Byte classes and small helpers from RFC 9110's ABNF, shared by the parsers.

/// `tchar` from RFC 9110 5.6.2: the bytes a token (method, field name) may hold.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// [`is_tchar`] as a table: one load per byte on the request-line hot path.
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// ASCII case-insensitive equality, the comparison field names and most tokens use.
pub(crate) fn eq_ci(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Whether `a` equals `lower` ignoring ASCII case, comparing eight (or four)
/// bytes at a time: each word of `a` has bit 0x20 set in every byte (ASCII
/// upper case to lower case) and is compared with the same word of `lower`.
///
/// Exact only under two preconditions, which every caller meets:
/// - `lower` holds only lower-case letters, digits and `-`: bytes that
///   already have bit 0x20 set;
/// - `a` holds no control byte but HTAB, which is true of every field name
///   and value `httparse` accepted (tokens; HTAB, SP, VCHAR, obs-text).
///
/// Setting bit 0x20 maps `A`-`Z` onto `a`-`z`, and otherwise only maps
/// control bytes (0x0D onto `-`, 0x10-0x19 onto the digits) onto a byte of
/// `lower`; HTAB becomes `)` and obs-text stays above 0x7F. Debug builds
/// (and so the fuzz targets) check the answer against `eq_ignore_ascii_case`.
#[inline(always)]
pub(crate) fn eq_folded(a: &[u8], lower: &[u8]) -> bool {
    const FOLD8: u64 = 0x2020_2020_2020_2020;
    const FOLD4: u32 = 0x2020_2020;
    debug_assert!(
        lower
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    );
    let n = lower.len();
    let equal = if a.len() != n {
        false
    } else if n >= 8 {
        let mut same = true;
        let mut i = 0;
        while i + 8 < n {
            same &= word8(a, i) | FOLD8 == word8(lower, i);
            i += 8;
        }
        // The last word overlaps the previous one rather than reading past the end.
        same && word8(a, n - 8) | FOLD8 == word8(lower, n - 8)
    } else if n >= 4 {
        word4(a, 0) | FOLD4 == word4(lower, 0) && word4(a, n - 4) | FOLD4 == word4(lower, n - 4)
    } else {
        a.iter().zip(lower).all(|(&x, &y)| x | 0x20 == y)
    };
    debug_assert!(
        a.iter().any(|&b| b < 0x20 && b != b'\t') || equal == a.eq_ignore_ascii_case(lower),
        "eq_folded({a:?}, {lower:?})"
    );
    equal
}

/// The eight bytes of `b` at `at`, as a little-endian word.
#[inline(always)]
fn word8(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The four bytes of `b` at `at`, as a little-endian word.
#[inline(always)]
fn word4(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}
