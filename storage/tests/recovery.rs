//! Recovery's decision table, one test per case: accept, cut a torn tail, refuse corruption
//! (naming segment, offset and checksums), and repair when asked.

mod common;

use std::rc::Rc;

use cairn_storage::{ListOptions, MemDisk, OpenError, Store, StoreOptions};
use common::{obj, open_mem, run, small_opts};

const SEG: &str = "seg-00000001.log";

/// Writes `n` batches, each its own durable group of three keys `"{i}/a" "{i}/b" "{i}/c"`.
/// Returns the disk and each group's `(start, end of its non-zero bytes)` in the segment.
async fn log_of_groups(n: usize) -> (MemDisk, Vec<(usize, usize)>) {
    let disk = MemDisk::new();
    let s = open_mem(&disk, small_opts()).await;
    let mut starts = Vec::new();
    for i in 0..n {
        starts.push(s.stats().bytes_written as usize);
        let mut b = cairn_storage::Batch::new();
        for part in ["a", "b", "c"] {
            b.put(
                &obj(1),
                format!("{i:03}/{part}").as_bytes(),
                format!("value {i} {part}").as_bytes(),
            );
        }
        s.commit(b).unwrap().durable().await.unwrap();
    }
    starts.push(s.stats().bytes_written as usize);
    let bytes = disk.file_bytes(SEG).unwrap();
    let groups = starts
        .windows(2)
        .map(|w| {
            (
                w[0],
                w[0] + bytes[w[0]..w[1]].iter().rposition(|&b| b != 0).unwrap() + 1,
            )
        })
        .collect();
    (disk, groups)
}

/// Batches present in the store; panics if one is present in part.
async fn batches_present(s: &Store) -> Vec<usize> {
    let all = s.list(&obj(1), &ListOptions::default()).await.unwrap();
    let mut counts = std::collections::BTreeMap::<usize, usize>::new();
    for (k, _) in all {
        let i: usize = std::str::from_utf8(&k[..3]).unwrap().parse().unwrap();
        *counts.entry(i).or_default() += 1;
    }
    for (i, c) in &counts {
        assert_eq!(*c, 3, "batch {i} is present in part");
    }
    counts.into_keys().collect()
}

fn disk_with_segment(manifest_from: &MemDisk, seg: Vec<u8>) -> MemDisk {
    let d = MemDisk::new();
    d.set_file_bytes("MANIFEST", manifest_from.file_bytes("MANIFEST").unwrap());
    d.set_file_bytes(SEG, seg);
    d
}

#[test]
fn a_log_cut_at_any_byte_of_its_last_groups_keeps_exactly_the_complete_groups() {
    run(|| async {
        let (disk, groups) = log_of_groups(6).await;
        let bytes = disk.file_bytes(SEG).unwrap();
        let from = groups[3].0;
        let to = groups[5].1;
        for cut in from..=to {
            let want: Vec<usize> = (0..groups.len()).filter(|&g| groups[g].1 <= cut).collect();
            // Never-written space reads as zeros (preallocated file) ...
            let mut zeroed = bytes.clone();
            zeroed[cut..].fill(0);
            // ... or the file simply ends there.
            let truncated = bytes[..cut].to_vec();
            // Truncation also drops zero bytes that belong to a body; zeroing them changes nothing.
            let body_end = |g: usize| {
                let len =
                    u32::from_le_bytes(bytes[groups[g].0 + 4..groups[g].0 + 8].try_into().unwrap());
                groups[g].0 + 32 + len as usize
            };
            let want_truncated: Vec<usize> =
                (0..groups.len()).filter(|&g| body_end(g) <= cut).collect();
            for (image, want) in [(zeroed, &want), (truncated, &want_truncated)] {
                let inside_group = groups
                    .iter()
                    .enumerate()
                    .any(|(g, &(a, _))| cut > a && !want.contains(&g));
                let d = disk_with_segment(&disk, image);
                let s = Store::open_with_disk(Rc::new(d), small_opts())
                    .await
                    .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                assert_eq!(&batches_present(&s).await, want, "cut at byte {cut}");
                let torn = s.stats().recovery.torn_tail;
                assert_eq!(torn.is_some(), inside_group, "cut at byte {cut}: {torn:?}");
            }
        }
    });
}

#[test]
fn writes_after_a_torn_tail_are_recovered_on_the_next_open() {
    run(|| async {
        let (disk, groups) = log_of_groups(4).await;
        let mut bytes = disk.file_bytes(SEG).unwrap();
        let cut = (groups[3].0 + groups[3].1) / 2;
        bytes[cut..].fill(0);
        let d = disk_with_segment(&disk, bytes);
        let s = open_mem(&d, small_opts()).await;
        assert_eq!(
            s.stats().recovery.torn_tail.map(|t| t.1),
            Some(groups[3].0 as u64)
        );
        s.put(&obj(1), b"999/a", b"x")
            .unwrap()
            .durable()
            .await
            .unwrap();
        let s = open_mem(&d.power_loss(), small_opts()).await;
        assert!(s.get(&obj(1), b"999/a").await.unwrap().is_some());
        assert_eq!(s.stats().recovery.torn_tail, None);
    });
}

#[test]
fn a_flipped_bit_in_an_earlier_record_body_is_reported_with_its_location() {
    run(|| async {
        let (disk, groups) = log_of_groups(6).await;
        let mut bytes = disk.file_bytes(SEG).unwrap();
        bytes[groups[2].0 + 40] ^= 0x10;
        let r = Store::open_with_disk(Rc::new(disk_with_segment(&disk, bytes)), small_opts()).await;
        match r {
            Err(OpenError::Corrupt {
                segment: 1,
                offset,
                expected_crc,
                actual_crc,
            }) => {
                assert_eq!(offset, groups[2].0 as u64);
                assert_ne!(expected_crc, actual_crc);
            }
            other => panic!("expected corruption, got {:?}", other.err()),
        }
    });
}

#[test]
fn a_flipped_bit_in_an_earlier_record_header_is_reported_with_its_location() {
    run(|| async {
        let (disk, groups) = log_of_groups(6).await;
        let mut bytes = disk.file_bytes(SEG).unwrap();
        bytes[groups[1].0 + 5] ^= 1;
        let r = Store::open_with_disk(Rc::new(disk_with_segment(&disk, bytes)), small_opts()).await;
        let e = r.err().expect("corruption must stop the open");
        assert!(
            matches!(e, OpenError::Corrupt { segment: 1, offset, .. } if offset == groups[1].0 as u64),
            "{e}"
        );
        assert!(e.to_string().contains("segment 1"), "{e}");
    });
}

#[test]
fn the_repair_option_cuts_the_log_at_the_corruption() {
    run(|| async {
        let (disk, groups) = log_of_groups(6).await;
        let mut bytes = disk.file_bytes(SEG).unwrap();
        bytes[groups[2].0 + 40] ^= 0x10;
        let opts = StoreOptions {
            repair_truncate_corrupt: true,
            ..small_opts()
        };
        let d = disk_with_segment(&disk, bytes);
        let s = open_mem(&d, opts).await;
        assert_eq!(batches_present(&s).await, vec![0, 1]);
        assert_eq!(
            s.stats().recovery.repaired_corruption,
            Some((1, groups[2].0 as u64))
        );
        drop(s);
        let s = open_mem(&d, small_opts()).await;
        assert_eq!(
            batches_present(&s).await,
            vec![0, 1],
            "the repaired log opens without the option"
        );
    });
}

#[test]
fn the_committed_corrupt_segment_fixture_is_refused() {
    run(|| async {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corrupt");
        let d = MemDisk::new();
        d.set_file_bytes("MANIFEST", std::fs::read(dir.join("MANIFEST")).unwrap());
        d.set_file_bytes(SEG, std::fs::read(dir.join(SEG)).unwrap());
        let r = Store::open_with_disk(Rc::new(d), small_opts()).await;
        assert!(
            matches!(
                r,
                Err(OpenError::Corrupt {
                    segment: 1,
                    offset: 8192,
                    ..
                })
            ),
            "{:?}",
            r.err()
        );
    });
}

/// Regenerates `fixtures/corrupt/`: `CAIRN_WRITE_FIXTURES=1 cargo nextest run -p cairn-storage
/// write_fixtures`. Without the variable it only checks that the fixture still matches.
#[test]
fn write_fixtures() {
    run(|| async {
        let (disk, groups) = log_of_groups(4).await;
        let mut bytes = disk.file_bytes(SEG).unwrap();
        assert_eq!(groups[2].0, 8192);
        bytes[groups[2].0 + 40] ^= 0x10;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corrupt");
        if std::env::var_os("CAIRN_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("MANIFEST"), disk.file_bytes("MANIFEST").unwrap()).unwrap();
            std::fs::write(dir.join(SEG), &bytes).unwrap();
        }
        assert_eq!(
            std::fs::read(dir.join(SEG)).unwrap(),
            bytes,
            "fixture drifted from the format"
        );
    });
}

#[test]
fn a_clean_close_writes_a_checkpoint_and_the_next_open_scans_only_the_tail() {
    run(|| async {
        let disk = MemDisk::new();
        let opts = StoreOptions {
            value_inline_bytes_max: 50,
            ..small_opts()
        };
        let s = open_mem(&disk, opts.clone()).await;
        for i in 0..200u32 {
            let _ = s
                .put(
                    &obj(1),
                    &i.to_be_bytes(),
                    &vec![i as u8; (i % 120) as usize],
                )
                .unwrap();
        }
        let _ = s.delete(&obj(1), &7u32.to_be_bytes()).unwrap();
        s.close().await.unwrap();
        assert!(disk.file_names().contains(&"CHECKPOINT".to_string()));
        let s = open_mem(&disk, opts.clone()).await;
        let r = s.stats().recovery;
        assert_eq!((r.checkpoint_entries, r.records), (Some(199), 0), "{r:?}");
        assert!(
            !disk.file_names().contains(&"CHECKPOINT".to_string()),
            "used once, then removed"
        );
        s.put(&obj(1), b"after", b"x")
            .unwrap()
            .durable()
            .await
            .unwrap();
        // Abrupt stop now: no checkpoint, so the next open scans everything.
        let s = open_mem(&disk.power_loss(), opts).await;
        assert_eq!(s.stats().recovery.checkpoint_entries, None);
        for i in 0..200u32 {
            let got = s.get(&obj(1), &i.to_be_bytes()).await.unwrap();
            let want = (i != 7).then(|| vec![i as u8; (i % 120) as usize]);
            assert_eq!(got.map(|v| v.to_vec()), want, "key {i}");
        }
        assert!(s.get(&obj(1), b"after").await.unwrap().is_some());
    });
}

#[test]
fn a_damaged_checkpoint_falls_back_to_a_full_scan() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, small_opts()).await;
        let _ = s.put(&obj(1), b"k", b"v").unwrap();
        s.close().await.unwrap();
        let mut c = disk.file_bytes("CHECKPOINT").unwrap();
        let last = c.len() - 1;
        c[last] ^= 1;
        disk.set_file_bytes("CHECKPOINT", c);
        let s = open_mem(&disk, small_opts()).await;
        let r = s.stats().recovery;
        assert_eq!(r.checkpoint_entries, None);
        assert!(r.checkpoint_ignored.is_some(), "{r:?}");
        assert_eq!(&*s.get(&obj(1), b"k").await.unwrap().unwrap(), b"v");
    });
}

#[test]
fn a_torn_checkpoint_is_ignored_with_a_reason_and_the_log_is_scanned() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, small_opts()).await;
        for i in 0..50u32 {
            let _ = s.put(&obj(1), &i.to_be_bytes(), b"v").unwrap();
        }
        s.close().await.unwrap();
        let c = disk.file_bytes("CHECKPOINT").unwrap();
        for cut in [0, 7, 16, c.len() / 2, c.len() - 1] {
            disk.set_file_bytes("CHECKPOINT", c[..cut].to_vec());
            let s = open_mem(&disk, small_opts()).await;
            let r = s.stats().recovery;
            assert_eq!((r.checkpoint_entries, r.records), (None, 50), "cut {cut}");
            assert!(r.checkpoint_ignored.unwrap().contains("torn"), "cut {cut}");
            assert_eq!(
                s.list(&obj(1), &Default::default()).await.unwrap().len(),
                50
            );
            drop(s);
        }
    });
}

#[test]
fn a_checkpoint_taken_with_writes_pending_restores_them_and_the_live_byte_counts() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, small_opts()).await;
        for i in 0..20u32 {
            s.put(&obj(1), &i.to_be_bytes(), b"old")
                .unwrap()
                .durable()
                .await
                .unwrap();
        }
        // Not yet durable when the snapshot is taken: overwrites and a new key.
        for i in 0..10u32 {
            let _ = s.put(&obj(1), &i.to_be_bytes(), b"new").unwrap();
        }
        let _ = s.put(&obj(1), b"pending", b"p").unwrap();
        s.write_checkpoint().await.unwrap();
        let live = s.stats().bytes_live;
        let r = open_mem(&disk.power_loss(), small_opts()).await;
        let st = r.stats();
        assert!(
            st.recovery.checkpoint_entries.is_some(),
            "{:?}",
            st.recovery
        );
        assert_eq!(st.bytes_live, live, "{st:?}");
        for i in 0..20u32 {
            let want: &[u8] = if i < 10 { b"new" } else { b"old" };
            assert_eq!(
                &*r.get(&obj(1), &i.to_be_bytes()).await.unwrap().unwrap(),
                want
            );
        }
        assert_eq!(&*r.get(&obj(1), b"pending").await.unwrap().unwrap(), b"p");
    });
}
