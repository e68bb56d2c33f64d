//! Recovery: scan segments in order, verify checksums, cut a torn tail, hand complete commit
//! groups to the caller to rebuild the index.
//!
//! The decision table (one test per row in `tests/recovery.rs`):
//!
//! | case at a record slot                                  | outcome                              |
//! |--------------------------------------------------------|--------------------------------------|
//! | header, body and rkyv all valid, seq as expected        | accept; apply group at `GROUP_END`   |
//! | header all zero, no group open                          | end of this segment's data           |
//! | zero header / end of file / bad record inside a group,  | **torn tail**: cut at the group     |
//! |   or bad record at a group start, and no valid later    |   start, report offset and bytes,    |
//! |   group anywhere after it                               |   zero the cut range                 |
//! | bad header crc, bad body crc, bad rkyv, wrong seq, and  | **refuse**: `OpenError::Corrupt`     |
//! |   a valid later group exists                            |   naming segment, offset, checksums  |
//! | the same with `repair_truncate_corrupt`                 | cut there like a torn tail; later    |
//! |                                                         |   segments are removed               |
//!
//! Why "a valid later group" decides: the group-commit loop has at most one group in flight and
//! fdatasyncs it before writing the next, so only the last group can be torn by a crash.
//! Damage followed by valid data cannot be a crash; it is corruption.

use std::io;
use std::path::Path;

use crate::format::{
    BLOCK_SIZE, BodyBytes, FLAG_GROUP_END, Header, HeaderRead, KIND_OPS, OP_PUT,
    RECORD_HEADER_SIZE, access_body, align_up, record_size,
};
use crate::index::entry_bytes;

/// What recovery found, for logs and `StoreStats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments scanned.
    pub segments: u32,
    /// Records accepted.
    pub records: u64,
    /// Commit groups accepted.
    pub groups: u64,
    /// Bytes of segment files read.
    pub bytes_scanned: u64,
    /// A torn tail that was cut: `(segment, offset, bytes)`.
    pub torn_tail: Option<(u32, u64, u64)>,
    /// Corruption cut because `repair_truncate_corrupt` was set: `(segment, offset)`.
    pub repaired_corruption: Option<(u32, u64)>,
    /// Entries loaded from a checkpoint (then only the log after it was scanned), if one was used.
    pub checkpoint_entries: Option<u64>,
    /// Why a checkpoint found at open was not used (torn, damaged, stale); the whole log was
    /// scanned instead.
    pub checkpoint_ignored: Option<String>,
}

/// A damaged record slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) offset: u64,
    pub(crate) expected_crc: u32,
    pub(crate) actual_crc: u32,
}

/// Where the scan of one segment stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SegEnd {
    /// The segment's data ended cleanly at `offset` (the log may continue in the next segment).
    Clean { offset: u64 },
    /// The group starting at `group_start` is incomplete or damaged; the caller decides torn
    /// versus corrupt with [`valid_group_in`] over the rest of the log.
    Damaged {
        damage: Damage,
        group_start: usize,
        group_seq: u64,
    },
}

/// One verified record of a complete group, copied into its own aligned buffer.
pub(crate) struct ScannedRecord {
    /// The archived body (passed the body checksum and rkyv's validator).
    pub(crate) body: BodyBytes,
    /// File offset of the body inside its segment.
    pub(crate) body_off: u64,
    /// Bytes its puts are charged for (`entry_bytes`).
    pub(crate) put_bytes: u64,
    /// Its delete operations (tombstones).
    pub(crate) tombstones: u32,
}

/// What the scan of one segment found. Built without touching the store, so it can run on a
/// helper thread while the shard applies the previous segment.
pub(crate) struct SegScan {
    /// The records of every complete, verified group, in log order.
    pub(crate) records: Vec<ScannedRecord>,
    /// Complete groups in `records`.
    pub(crate) groups: u64,
    /// Where the scan stopped.
    pub(crate) end: SegEnd,
    /// The sequence number after the last accepted record, if any was accepted.
    pub(crate) next_seq: Option<u64>,
    /// The first record header seen: `(offset, seq, body crc)`. When the scan ran without knowing
    /// the expected sequence number, the caller checks this one against it.
    pub(crate) first: Option<(usize, u64, u32)>,
}

impl SegScan {
    /// Rejects a scan made without a known sequence number whose first record does not
    /// continue the log: a wrong sequence number is damage at that record. `exact` is false
    /// when a segment before this one was compacted away (a gap in segment numbers): its
    /// sequence numbers are then missing, and the log need only move forward.
    pub(crate) fn check_continues(&mut self, expect_seq: Option<u64>, exact: bool) {
        if let (Some(expect), Some((pos, seq, crc))) = (expect_seq, self.first)
            && (seq < expect || (exact && seq != expect))
        {
            self.records.clear();
            self.groups = 0;
            self.next_seq = None;
            self.end = SegEnd::Damaged {
                damage: Damage {
                    offset: pos as u64,
                    expected_crc: crc,
                    actual_crc: 0,
                },
                group_start: pos,
                group_seq: seq,
            };
        }
        // Damage before any header was read names group 0 ("unknown"); fill in the real one.
        if let SegEnd::Damaged { group_seq, .. } = &mut self.end
            && *group_seq == 0
        {
            *group_seq = expect_seq.unwrap_or(1);
        }
    }
}

/// Scans one segment from `start_offset`. `expect_seq` is the sequence number the log must
/// continue with, `None` if unknown (the first record is then taken as is and reported in
/// [`SegScan::first`]). Never panics on disk contents.
pub(crate) fn scan_segment(bytes: &[u8], start_offset: usize, expect_seq: Option<u64>) -> SegScan {
    let mut next_seq = expect_seq;
    let mut records = Vec::new();
    let mut groups = 0u64;
    let mut first = None;
    let mut pos = start_offset;
    let mut group_len = 0usize;
    let mut group_start = 0usize;
    let mut group_seq = 0u64;
    let end = loop {
        let bad = |damage: Damage, group_start: usize, group_seq: u64| SegEnd::Damaged {
            damage,
            group_start,
            group_seq,
        };
        // Before the first record the expected seq may be unknown (0 = unknown; the caller fills
        // it in). After compaction a larger guess only makes the verdict "corrupt" (refuse)
        // rather than "torn" (cut), the safe side.
        let expect = next_seq.unwrap_or(0);
        let damage_at = |pos: usize, e: u32, a: u32| Damage {
            offset: pos as u64,
            expected_crc: e,
            actual_crc: a,
        };
        if pos + RECORD_HEADER_SIZE > bytes.len() {
            if group_len == 0 && bytes[pos.min(bytes.len())..].iter().all(|&b| b == 0) {
                break SegEnd::Clean { offset: pos as u64 };
            }
            if group_len == 0 {
                break bad(damage_at(pos, 0, 0), pos, expect);
            }
            break bad(damage_at(group_start, 0, 0), group_start, group_seq);
        }
        let h = match Header::decode(&bytes[pos..pos + RECORD_HEADER_SIZE]) {
            HeaderRead::Zero if group_len == 0 => break SegEnd::Clean { offset: pos as u64 },
            HeaderRead::Zero => {
                break bad(damage_at(group_start, 0, 0), group_start, group_seq);
            }
            HeaderRead::BadCrc { stored, computed } => {
                let (start, gseq) = if group_len == 0 {
                    (pos, expect)
                } else {
                    (group_start, group_seq)
                };
                break bad(damage_at(pos, stored, computed), start, gseq);
            }
            HeaderRead::Ok(h) => h,
        };
        if first.is_none() {
            first = Some((pos, h.seq, h.body_crc));
        }
        if group_len == 0 {
            group_start = pos;
            group_seq = h.seq;
        }
        let seq_ok = next_seq.is_none_or(|s| s == h.seq) && h.group_seq == group_seq;
        let body_start = pos + RECORD_HEADER_SIZE;
        let body_end = body_start.saturating_add(h.body_len as usize);
        if !seq_ok || h.kind != KIND_OPS || body_end > bytes.len() {
            break bad(damage_at(pos, h.body_crc, 0), group_start, group_seq);
        }
        let body = &bytes[body_start..body_end];
        let crc = crc32c::crc32c(body);
        if crc != h.body_crc {
            break bad(damage_at(pos, h.body_crc, crc), group_start, group_seq);
        }
        let mut aligned = BodyBytes::with_capacity(body.len());
        aligned.extend_from_slice(body);
        let Some(archived) = access_body(&aligned) else {
            break bad(damage_at(pos, h.body_crc, crc), group_start, group_seq);
        };
        let (mut put_bytes, mut tombstones) = (0, 0);
        for o in archived.ops.iter() {
            if o.code == OP_PUT {
                put_bytes += entry_bytes(o.key.len(), o.value.len());
            } else {
                tombstones += 1;
            }
        }
        records.push(ScannedRecord {
            body: aligned,
            body_off: body_start as u64,
            put_bytes,
            tombstones,
        });
        group_len += 1;
        next_seq = Some(h.seq + 1);
        pos += record_size(h.body_len as usize);
        if h.flags & FLAG_GROUP_END != 0 {
            groups += 1;
            group_len = 0;
            pos = align_up(pos, BLOCK_SIZE as usize);
        }
    };
    // Records of the incomplete group at the end are not part of the result.
    records.truncate(records.len() - group_len);
    let next_seq = if group_len > 0 {
        Some(group_seq)
    } else {
        next_seq
    };
    SegScan {
        records,
        groups,
        end,
        next_seq: next_seq.filter(|_| groups > 0).or(expect_seq),
        first,
    }
}

/// A whole segment file in memory (block-aligned, so records land 16-byte aligned).
pub(crate) type SegBytes = rkyv::util::AlignedVec<{ BLOCK_SIZE as usize }>;

/// Reads the segment at `path` whole and scans it, first asking the kernel to read `next` ahead.
/// Blocking: runs on glommio's blocking thread pool, never on the shard's executor, so that
/// reading and verifying segment `n + 1` overlaps with the shard applying segment `n`, and the
/// device reads segment `n + 2` meanwhile.
pub(crate) fn read_and_scan(
    path: &Path,
    next: Option<&Path>,
    start_offset: usize,
    expect_seq: Option<u64>,
) -> io::Result<(SegBytes, SegScan)> {
    if let Some(next) = next {
        // Only a hint: a failure costs speed, not correctness.
        let _ = advise(next, libc::POSIX_FADV_WILLNEED);
    }
    let bytes = read_file(path)?;
    // Read once; keeping a 1 GiB log in the page cache would only push out other data.
    let _ = advise(path, libc::POSIX_FADV_DONTNEED);
    let scan = scan_segment(&bytes, start_offset, expect_seq);
    Ok((bytes, scan))
}

/// `posix_fadvise` over a whole file.
fn advise(path: &Path, advice: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open (owned by
    // `file`, which outlives the call).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, advice) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Reads a whole file (buffered: the read-ahead asked for by [`advise`] lands in the page cache).
fn read_file(path: &Path) -> io::Result<SegBytes> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 8 << 20;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    let mut buf = SegBytes::with_capacity(len);
    buf.resize(len, 0);
    let mut at = 0;
    while at < len {
        let want = (len - at).min(CHUNK);
        let n = file.read_at(&mut buf.as_mut_slice()[at..at + want], at as u64)?;
        if n == 0 {
            // The file shrank meanwhile (nobody else touches it during open; defensive).
            break;
        }
        at += n;
    }
    buf.resize(at, 0);
    Ok(buf)
}

/// True if a valid record header of a group later than `group_seq` sits at a block boundary at
/// or after `from` in `bytes` (groups start only at block boundaries).
pub(crate) fn valid_group_in(bytes: &[u8], from: usize, group_seq: u64) -> bool {
    let mut pos = align_up(from, BLOCK_SIZE as usize);
    while pos + RECORD_HEADER_SIZE <= bytes.len() {
        if let HeaderRead::Ok(h) = Header::decode(&bytes[pos..pos + RECORD_HEADER_SIZE])
            && h.group_seq > group_seq
        {
            return true;
        }
        pos += BLOCK_SIZE as usize;
    }
    false
}

/// Offset just past the last non-zero byte at or after `from`, rounded up to a block.
pub(crate) fn dirty_end(bytes: &[u8], from: usize) -> usize {
    let last = bytes[from.min(bytes.len())..].iter().rposition(|&b| b != 0);
    match last {
        Some(i) => align_up(from + i + 1, BLOCK_SIZE as usize)
            .min(align_up(bytes.len(), BLOCK_SIZE as usize)),
        None => from,
    }
}
