//! Object identity: 32-byte IDs, the version-stable name hash, and `shard_of`.
//!
//! **Invariant (stable identity):** [`id_from_name`] is SHA-256 over the
//! encoding below and never changes within a data-format version; the fixed
//! vectors in this module's tests fail if it does. A cryptographic hash keeps
//! clients from aiming load at one shard by choosing names.
//!
//! **Invariant (ownership):** [`shard_of`] is a pure function of the ID and the
//! shard count. Nothing else decides where an object lives.

use std::fmt;

use sha2::{Digest, Sha256};

/// Domain-separation tag hashed before class and name. Bumping the `v1` is a
/// data-format change: every name maps to a new ID.
pub const ID_DOMAIN_TAG: &[u8] = b"cairn/object-id/v1";

/// A 32-byte object ID. Printed (and parsed) as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId(pub [u8; 32]);

/// A hash map keyed by object ID, for the per-request lookups (objects in
/// memory, alarms, sockets). aHash with a per-process random key: a request
/// may name any ID (`/{class}/id/{hex}`), so the hash must stay keyed against
/// chosen collisions, and it costs a fraction of the default SipHash on the
/// 32-byte key.
pub type IdMap<V> = std::collections::HashMap<ObjectId, V, ahash::RandomState>;

impl ObjectId {
    /// The raw bytes, as storage sees them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[usize::from(b >> 4)] as char);
            s.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        s
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

/// The ID of the object named `name` in class `class`.
///
/// The hashed message is, byte by byte:
///
/// ```text
/// ID_DOMAIN_TAG ("cairn/object-id/v1", 18 bytes)
/// u32 big-endian: class length in bytes | class bytes (UTF-8)
/// u32 big-endian: name length in bytes  | name bytes (arbitrary)
/// ```
///
/// The length prefixes make the encoding injective: `("ab", "c")` and
/// `("a", "bc")` hash different messages.
///
/// # Panics
/// If `class` or `name` is 4 GiB or longer; request limits keep both far below.
pub fn id_from_name(class: &str, name: &[u8]) -> ObjectId {
    let class_len = u32::try_from(class.len()).expect("class length fits u32");
    let name_len = u32::try_from(name.len()).expect("name length fits u32");
    let mut h = Sha256::new();
    h.update(ID_DOMAIN_TAG);
    h.update(class_len.to_be_bytes());
    h.update(class.as_bytes());
    h.update(name_len.to_be_bytes());
    h.update(name);
    ObjectId(h.finalize().into())
}

/// A fresh random ID from the operating system's CSPRNG (`getrandom`).
///
/// Unique IDs are not derived from a name, so the engine cannot recompute
/// them; the caller keeps the hex form.
pub fn new_unique_id() -> Result<ObjectId, IdError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| IdError::Entropy {
        code: e.raw_os_error(),
    })?;
    Ok(ObjectId(bytes))
}

/// Parses the 64-hex-character form (either case).
pub fn id_from_string(s: &str) -> Result<ObjectId, IdError> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(IdError::BadLength { len: b.len() });
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0]).ok_or(IdError::BadDigit { offset: 2 * i })?;
        let lo = hex_val(pair[1]).ok_or(IdError::BadDigit { offset: 2 * i + 1 })?;
        out[i] = hi << 4 | lo;
    }
    Ok(ObjectId(out))
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The shard that owns `id` among `shard_count` shards.
///
/// Definition (version-stable): read the first 8 bytes of the ID as a
/// big-endian `u64` `x`, and return `(x * shard_count) >> 64` computed in 128
/// bits. Because IDs are uniform hashes, this spreads objects evenly, and it
/// needs no division.
///
/// # Panics
/// If `shard_count` is zero: a configuration with no shards is rejected long
/// before any ID is routed, so reaching here with zero is a bug.
pub fn shard_of(id: &ObjectId, shard_count: u32) -> u32 {
    assert!(shard_count > 0, "shard_of with zero shards");
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.0[..8]);
    let x = u64::from_be_bytes(first);
    let shard = (u128::from(x) * u128::from(shard_count)) >> 64;
    u32::try_from(shard).expect("product shifted by 64 is below shard_count")
}

/// Why an ID could not be parsed or made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// The hex form must be exactly 64 characters.
    BadLength {
        /// Length given, in bytes.
        len: usize,
    },
    /// A character that is not a hex digit.
    BadDigit {
        /// Byte offset of the offending character.
        offset: usize,
    },
    /// The operating system's random source failed.
    Entropy {
        /// The OS error code, if any.
        code: Option<i32>,
    },
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::BadLength { len } => {
                write!(f, "object id must be 64 hex characters, got {len}")
            }
            IdError::BadDigit { offset } => {
                write!(f, "object id has a non-hex character at offset {offset}")
            }
            IdError::Entropy { code } => {
                write!(
                    f,
                    "the OS random source failed (errno {code:?}); check /dev/urandom"
                )
            }
        }
    }
}

impl std::error::Error for IdError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(class: &str, name: &str, hex: &str, shard_of_4: u32) {
        let id = id_from_name(class, name.as_bytes());
        assert_eq!(id.to_hex(), hex, "id_from_name({class:?}, {name:?})");
        assert_eq!(
            shard_of(&id, 4),
            shard_of_4,
            "shard_of({class:?}/{name:?}, 4)"
        );
    }

    #[test]
    fn name_hash_matches_fixed_vectors_forever() {
        check_name(
            "counter",
            "a",
            "1c181967d19dbaadb6b3967f89762409d2183f2d1a6d82db3d628875ba08a83d",
            0,
        );
        check_name(
            "counter",
            "b",
            "1057bf3c42e9d4f562ec3905a9fc9b8030fb0d2834a23fe7af20ef9ce0ff17a8",
            0,
        );
        check_name(
            "kv",
            "",
            "2aa802ab87a65cd9273213c174c278df75e1b527d192836b4c20c3edd60e17c7",
            0,
        );
        check_name(
            "kv",
            "users/42",
            "ef21c16f12990ca431ac6cf858eabae8dcad5c43cdb728fd971b2bb19eabd2b5",
            3,
        );
    }

    #[test]
    fn length_prefixes_keep_class_and_name_apart() {
        assert_ne!(id_from_name("ab", b"c"), id_from_name("a", b"bc"));
        assert_ne!(id_from_name("", b"kv"), id_from_name("kv", b""));
    }

    fn check_shard(first8: u64, count: u32, expected: u32) {
        let mut id = [0xffu8; 32];
        id[..8].copy_from_slice(&first8.to_be_bytes());
        assert_eq!(
            shard_of(&ObjectId(id), count),
            expected,
            "{first8:#x} among {count}"
        );
    }

    #[test]
    fn shard_of_maps_the_top_of_the_id_onto_shards() {
        check_shard(0, 1, 0);
        check_shard(u64::MAX, 1, 0);
        check_shard(0, 4, 0);
        check_shard(0x3fff_ffff_ffff_ffff, 4, 0);
        check_shard(0x4000_0000_0000_0000, 4, 1);
        check_shard(0x8000_0000_0000_0000, 4, 2);
        check_shard(0xc000_0000_0000_0000, 4, 3);
        check_shard(u64::MAX, 4, 3);
        check_shard(u64::MAX, 3, 2);
        check_shard(0x5555_5555_5555_5556, 3, 1);
        check_shard(u64::MAX, u32::MAX, u32::MAX - 1);
    }

    #[test]
    fn shard_of_spreads_names_evenly() {
        let mut counts = [0u32; 4];
        for i in 0..4000u32 {
            let id = id_from_name("kv", &i.to_be_bytes());
            counts[shard_of(&id, 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    fn check_parse(input: &str, expected: Result<[u8; 2], IdError>) {
        let got = id_from_string(input).map(|id| [id.0[0], id.0[31]]);
        assert_eq!(got, expected, "id_from_string({input:?})");
    }

    #[test]
    fn hex_ids_parse_and_bad_ones_are_typed_errors() {
        let z = "0".repeat(64);
        check_parse(&z, Ok([0, 0]));
        check_parse(&format!("ff{}0A", "0".repeat(60)), Ok([0xff, 0x0a]));
        check_parse(&"0".repeat(63), Err(IdError::BadLength { len: 63 }));
        check_parse(&"0".repeat(65), Err(IdError::BadLength { len: 65 }));
        check_parse("", Err(IdError::BadLength { len: 0 }));
        check_parse(
            &format!("g{}", "0".repeat(63)),
            Err(IdError::BadDigit { offset: 0 }),
        );
        check_parse(
            &format!("{}-", "0".repeat(63)),
            Err(IdError::BadDigit { offset: 63 }),
        );
        check_parse(
            &format!("é{}", "0".repeat(62)),
            Err(IdError::BadDigit { offset: 0 }),
        );
    }

    #[test]
    fn hex_form_round_trips() {
        let id = id_from_name("counter", b"x");
        assert_eq!(id_from_string(&id.to_hex()), Ok(id));
        let u = new_unique_id().unwrap();
        assert_eq!(id_from_string(&u.to_string()), Ok(u));
        assert_ne!(u, new_unique_id().unwrap());
    }
}
