//! The on-disk format: manifest, record header, record body. `docs/STORAGE-FORMAT.md` describes
//! the same bytes; offsets here are derived from each other so the two cannot drift silently.
//! All integers are little-endian.

use rkyv::rancor;

/// On-disk format version written to the manifest. Bump on any change to the bytes below.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest file name inside a shard directory.
pub(crate) const MANIFEST_NAME: &str = "MANIFEST";
/// First bytes of a manifest.
pub(crate) const MANIFEST_MAGIC: [u8; 8] = *b"CAIRNMF\0";
const MANIFEST_VERSION_OFFSET: usize = MANIFEST_MAGIC.len();
const MANIFEST_SHARD_ID_OFFSET: usize = MANIFEST_VERSION_OFFSET + 4;
const MANIFEST_SHARD_COUNT_OFFSET: usize = MANIFEST_SHARD_ID_OFFSET + 4;
const MANIFEST_CRC_OFFSET: usize = MANIFEST_SHARD_COUNT_OFFSET + 4;
/// Size of the manifest file.
pub(crate) const MANIFEST_SIZE: usize = MANIFEST_CRC_OFFSET + 4;
const _: () = assert!(MANIFEST_SIZE == 24);

/// Alignment of group starts in a segment: the O_DIRECT block size. A group is padded with
/// zeros to this boundary so that no later write touches a block holding acknowledged data.
pub const BLOCK_SIZE: u64 = 4096;
/// Alignment of records inside a group, so every record body is 16-byte aligned like rkyv's
/// `aligned` feature needs for in-place access.
pub(crate) const RECORD_ALIGN: usize = 16;

/// Header field offsets. The header checksum covers bytes `HEADER_CRC_OFFSET + 4 ..
/// RECORD_HEADER_SIZE`, length included, so a torn length is never trusted.
pub(crate) const HEADER_CRC_OFFSET: usize = 0;
const BODY_LEN_OFFSET: usize = HEADER_CRC_OFFSET + 4;
const SEQ_OFFSET: usize = BODY_LEN_OFFSET + 4;
const GROUP_SEQ_OFFSET: usize = SEQ_OFFSET + 8;
const BODY_CRC_OFFSET: usize = GROUP_SEQ_OFFSET + 8;
const KIND_OFFSET: usize = BODY_CRC_OFFSET + 4;
const FLAGS_OFFSET: usize = KIND_OFFSET + 1;
const RESERVED_OFFSET: usize = FLAGS_OFFSET + 1;
/// Size of a record header.
pub const RECORD_HEADER_SIZE: usize = RESERVED_OFFSET + 2;
const _: () = assert!(RECORD_HEADER_SIZE == 32);
const _: () = assert!(RECORD_HEADER_SIZE.is_multiple_of(RECORD_ALIGN));
const _: () = assert!((BLOCK_SIZE as usize).is_multiple_of(RECORD_ALIGN));

/// The only record kind of version 1: a body holding a list of operations.
pub(crate) const KIND_OPS: u8 = 1;
/// Header flag: this record is the last of its commit group; the group applies only if present.
pub(crate) const FLAG_GROUP_END: u8 = 1;

/// A decoded record header. Only produced from bytes whose header checksum matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Body length in bytes (before padding to `RECORD_ALIGN`).
    pub(crate) body_len: u32,
    /// Sequence number of this record; consecutive over the whole log.
    pub(crate) seq: u64,
    /// Sequence number of the first record of this record's commit group.
    pub(crate) group_seq: u64,
    /// CRC32C of the body.
    pub(crate) body_crc: u32,
    /// Record kind.
    pub(crate) kind: u8,
    /// Flags (`FLAG_GROUP_END`).
    pub(crate) flags: u8,
}

/// What a header slot holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderRead {
    /// All zero: preallocated space never written, the end of data in this segment.
    Zero,
    /// Header checksum mismatch.
    BadCrc {
        /// Stored checksum.
        stored: u32,
        /// Computed checksum.
        computed: u32,
    },
    /// A header we can trust.
    Ok(Header),
}

impl Header {
    /// Encodes into exactly `RECORD_HEADER_SIZE` bytes, computing the header checksum.
    pub(crate) fn encode(&self, out: &mut [u8]) {
        assert_eq!(out.len(), RECORD_HEADER_SIZE);
        out[BODY_LEN_OFFSET..SEQ_OFFSET].copy_from_slice(&self.body_len.to_le_bytes());
        out[SEQ_OFFSET..GROUP_SEQ_OFFSET].copy_from_slice(&self.seq.to_le_bytes());
        out[GROUP_SEQ_OFFSET..BODY_CRC_OFFSET].copy_from_slice(&self.group_seq.to_le_bytes());
        out[BODY_CRC_OFFSET..KIND_OFFSET].copy_from_slice(&self.body_crc.to_le_bytes());
        out[KIND_OFFSET] = self.kind;
        out[FLAGS_OFFSET] = self.flags;
        out[RESERVED_OFFSET..RECORD_HEADER_SIZE].fill(0);
        let crc = crc32c::crc32c(&out[BODY_LEN_OFFSET..RECORD_HEADER_SIZE]);
        out[HEADER_CRC_OFFSET..BODY_LEN_OFFSET].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a header slot of `RECORD_HEADER_SIZE` bytes. Never panics on any input of that size.
    pub(crate) fn decode(bytes: &[u8]) -> HeaderRead {
        assert_eq!(bytes.len(), RECORD_HEADER_SIZE);
        if bytes.iter().all(|&b| b == 0) {
            return HeaderRead::Zero;
        }
        let stored = u32_at(bytes, HEADER_CRC_OFFSET);
        let computed = crc32c::crc32c(&bytes[BODY_LEN_OFFSET..RECORD_HEADER_SIZE]);
        if stored != computed {
            return HeaderRead::BadCrc { stored, computed };
        }
        HeaderRead::Ok(Header {
            body_len: u32_at(bytes, BODY_LEN_OFFSET),
            seq: u64_at(bytes, SEQ_OFFSET),
            group_seq: u64_at(bytes, GROUP_SEQ_OFFSET),
            body_crc: u32_at(bytes, BODY_CRC_OFFSET),
            kind: bytes[KIND_OFFSET],
            flags: bytes[FLAGS_OFFSET],
        })
    }
}

/// Bytes a record with a body of `body_len` occupies, header and padding included.
pub(crate) fn record_size(body_len: usize) -> usize {
    align_up(RECORD_HEADER_SIZE + body_len, RECORD_ALIGN)
}

/// Rounds `v` up to a multiple of `align` (a power of two).
pub(crate) fn align_up(v: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Operation codes inside a record body.
pub(crate) const OP_PUT: u8 = 1;
/// Delete one key.
pub(crate) const OP_DELETE: u8 = 2;
/// Delete every key of an object.
pub(crate) const OP_DELETE_ALL: u8 = 3;

/// One operation, as archived with rkyv (format settings pinned in Cargo.toml: little_endian,
/// aligned, pointer_width_32).
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Op {
    /// The object.
    pub(crate) obj: [u8; 32],
    /// `OP_PUT`, `OP_DELETE` or `OP_DELETE_ALL`.
    pub(crate) code: u8,
    /// The key (empty for `OP_DELETE_ALL`).
    pub(crate) key: Vec<u8>,
    /// The value (empty unless `OP_PUT`).
    pub(crate) value: Vec<u8>,
}

/// A record body: the operations of one mutation call, applied in order.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    /// The operations.
    pub(crate) ops: Vec<Op>,
}

// The archived layout is part of the on-disk format (docs/STORAGE-FORMAT.md): pin its sizes.
const _: () = assert!(std::mem::size_of::<ArchivedOp>() == 52);
const _: () = assert!(std::mem::size_of::<ArchivedBody>() == 8);

/// An archived body in 16-byte aligned memory.
pub(crate) type BodyBytes = rkyv::util::AlignedVec<RECORD_ALIGN>;

/// Archives a body.
pub(crate) fn encode_body(body: &Body) -> BodyBytes {
    // Serialising plain vectors into memory cannot fail except by allocation failure, which aborts.
    let mut b = rkyv::to_bytes::<rancor::Error>(body).expect("archiving a record body into memory");
    // The serializer grows its buffer by doubling; the record stays in memory for as long as
    // the index points into it (small values: until overwritten), so it keeps only its bytes.
    // A counter's first record (3 puts, 240 bytes) otherwise holds 1 KiB.
    if b.capacity() - b.len() > RECORD_ALIGN {
        b.shrink_to_fit();
    }
    b
}

/// Validated access to an archived body (bytecheck), for bytes read from disk or just written.
pub(crate) fn access_body(bytes: &[u8]) -> Option<&ArchivedBody> {
    rkyv::access::<ArchivedBody, rancor::Error>(bytes).ok()
}

/// Access to an archived body that was validated before: the bytes of a `RecordBuf`, which
/// is built only from `encode_body` output (a mutation) or from bytes that passed
/// [`access_body`] (recovery), and never changes afterwards. Skipping a second validation
/// roughly halves the CPU cost of replaying a record.
#[allow(unsafe_code)]
pub(crate) fn access_body_trusted(bytes: &[u8]) -> &ArchivedBody {
    debug_assert!(
        access_body(bytes).is_some(),
        "trusted body failed validation"
    );
    // SAFETY: `access_unchecked` needs `bytes` to hold a valid archived `Body` at the root
    // position, aligned. Every caller passes `RecordBuf::body`, a 16-aligned `AlignedVec` whose
    // contents were produced by `rkyv::to_bytes::<Body>` or passed `rkyv::access::<ArchivedBody>`
    // (bytecheck) before the `RecordBuf` was made, and a `RecordBuf` body is never mutated.
    unsafe { rkyv::access_unchecked::<ArchivedBody>(bytes) }
}

/// Encodes the manifest.
pub(crate) fn encode_manifest(shard_id: u32, shard_count: u32) -> [u8; MANIFEST_SIZE] {
    let mut m = [0u8; MANIFEST_SIZE];
    m[..MANIFEST_VERSION_OFFSET].copy_from_slice(&MANIFEST_MAGIC);
    m[MANIFEST_VERSION_OFFSET..MANIFEST_SHARD_ID_OFFSET]
        .copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    m[MANIFEST_SHARD_ID_OFFSET..MANIFEST_SHARD_COUNT_OFFSET]
        .copy_from_slice(&shard_id.to_le_bytes());
    m[MANIFEST_SHARD_COUNT_OFFSET..MANIFEST_CRC_OFFSET].copy_from_slice(&shard_count.to_le_bytes());
    let crc = crc32c::crc32c(&m[..MANIFEST_CRC_OFFSET]);
    m[MANIFEST_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    m
}

/// A decoded manifest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Format version.
    pub(crate) version: u32,
    /// Shard number.
    pub(crate) shard_id: u32,
    /// Shard count.
    pub(crate) shard_count: u32,
}

/// Decodes a manifest; `Err` names what is wrong. The version is checked by the caller so that
/// a newer manifest is reported as a version mismatch, not as damage.
pub(crate) fn decode_manifest(m: &[u8]) -> Result<Manifest, &'static str> {
    if m.len() != MANIFEST_SIZE {
        return Err("wrong size");
    }
    if m[..MANIFEST_VERSION_OFFSET] != MANIFEST_MAGIC {
        return Err("bad magic");
    }
    if u32_at(m, MANIFEST_CRC_OFFSET) != crc32c::crc32c(&m[..MANIFEST_CRC_OFFSET]) {
        return Err("checksum mismatch");
    }
    Ok(Manifest {
        version: u32_at(m, MANIFEST_VERSION_OFFSET),
        shard_id: u32_at(m, MANIFEST_SHARD_ID_OFFSET),
        shard_count: u32_at(m, MANIFEST_SHARD_COUNT_OFFSET),
    })
}

/// Name of segment file number `id`.
pub fn segment_name(id: u32) -> String {
    format!("seg-{id:08}.log")
}

/// Parses a segment file name back into its number.
pub(crate) fn parse_segment_name(name: &str) -> Option<u32> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_any_flipped_bit_is_caught() {
        let h = Header {
            body_len: 77,
            seq: 9,
            group_seq: 8,
            body_crc: 0xdead_beef,
            kind: KIND_OPS,
            flags: 1,
        };
        let mut b = [0u8; RECORD_HEADER_SIZE];
        h.encode(&mut b);
        assert_eq!(Header::decode(&b), HeaderRead::Ok(h));
        for bit in 0..RECORD_HEADER_SIZE * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(Header::decode(&c), HeaderRead::BadCrc { .. }),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn zero_header_means_end_of_data() {
        assert_eq!(Header::decode(&[0u8; RECORD_HEADER_SIZE]), HeaderRead::Zero);
    }

    #[test]
    fn manifest_round_trips() {
        let m = encode_manifest(3, 8);
        assert_eq!(
            decode_manifest(&m),
            Ok(Manifest {
                version: FORMAT_VERSION,
                shard_id: 3,
                shard_count: 8
            })
        );
    }

    #[test]
    fn segment_names_parse_back() {
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("seg-x.log"), None);
        assert_eq!(parse_segment_name("MANIFEST"), None);
    }

    #[test]
    fn an_encoded_body_holds_no_spare_capacity() {
        let op = |key: &[u8], value: &[u8]| Op {
            obj: [7; 32],
            code: OP_PUT,
            key: key.to_vec(),
            value: value.to_vec(),
        };
        let body = Body {
            ops: vec![
                op(b"\0c", b"counter"),
                op(b"\0n", b"m123456"),
                op(b"v", b"1"),
            ],
        };
        let b = encode_body(&body);
        assert!(
            b.capacity() - b.len() <= RECORD_ALIGN,
            "{} of {}",
            b.capacity(),
            b.len()
        );
        assert_eq!(access_body_trusted(&b).ops.len(), 3);
    }
}
