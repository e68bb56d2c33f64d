//! Compaction reclaims disk while keeping every live value.

mod common;

use cairn_storage::{MemDisk, StoreOptions};
use common::{obj, open_mem, run};

/// Lets the background compaction task run until it has nothing left to do (bounded).
async fn settle(s: &cairn_storage::Store) {
    for _ in 0..10_000 {
        if s.stats().segments <= 2 && s.stats().bytes_dead < 64 * 1024 {
            break;
        }
        glommio::yield_if_needed().await;
        glommio::executor().yield_now().await;
    }
}

#[test]
fn overwriting_a_small_key_set_keeps_disk_use_within_twice_the_live_data_plus_one_segment() {
    run(|| async {
        let disk = MemDisk::new();
        let segment_bytes = 64 * 1024;
        // No spare segment: this test measures what compaction leaves, not the spare.
        let opts = StoreOptions {
            segment_bytes,
            segment_zero_fill: false,
            ..StoreOptions::default()
        };
        let s = open_mem(&disk, opts.clone()).await;
        let keys = 20u64;
        let value = vec![5u8; 1000];
        let live = keys * (8 + value.len() as u64);
        for round in 0..100u64 {
            for k in 0..keys {
                let _ = s.put(&obj(1), &k.to_be_bytes(), &value).unwrap();
            }
            s.sync().await.unwrap();
            settle(&s).await;
            let used = disk.used_bytes();
            // The manifest is a few bytes; each segment file is preallocated to segment_bytes.
            assert!(
                used <= 2 * live + 2 * segment_bytes,
                "round {round}: {used} bytes on disk for {live} live bytes ({:?})",
                s.stats()
            );
        }
        settle(&s).await;
        let st = s.stats();
        assert!(st.segments_compacted > 10, "{st:?}");
        assert!(
            disk.used_bytes() <= 2 * live + segment_bytes + 4096,
            "{} bytes, {st:?}",
            disk.used_bytes()
        );
        s.close().await.unwrap();
        let s = open_mem(&disk, opts).await;
        for k in 0..keys {
            assert_eq!(
                &*s.get(&obj(1), &k.to_be_bytes()).await.unwrap().unwrap(),
                &value[..]
            );
        }
    });
}

#[test]
fn compaction_never_resurrects_a_deleted_key() {
    run(|| async {
        let disk = MemDisk::new();
        let opts = StoreOptions {
            segment_bytes: 64 * 1024,
            ..StoreOptions::default()
        };
        let s = open_mem(&disk, opts.clone()).await;
        let _ = s.put(&obj(1), b"gone", b"old").unwrap();
        let _ = s.put(&obj(2), b"all-gone", b"old").unwrap();
        s.sync().await.unwrap();
        let _ = s.delete(&obj(1), b"gone").unwrap();
        let _ = s.delete_all(&obj(2)).unwrap();
        for i in 0..400u32 {
            let _ = s.put(&obj(3), &(i % 10).to_be_bytes(), &[1; 1000]).unwrap();
            if i % 20 == 0 {
                s.sync().await.unwrap();
                settle(&s).await;
            }
        }
        s.sync().await.unwrap();
        settle(&s).await;
        assert!(s.stats().segments_compacted > 0);
        let r = open_mem(
            &disk.power_loss(),
            StoreOptions {
                compaction_enabled: false,
                ..opts
            },
        )
        .await;
        assert!(r.get(&obj(1), b"gone").await.unwrap().is_none());
        assert!(r.objects(None, 10) == vec![obj(3)]);
    });
}

#[test]
fn compaction_takes_the_segment_with_most_garbage_and_leaves_a_live_oldest_one_alone() {
    run(|| async {
        let disk = MemDisk::new();
        let opts = StoreOptions {
            segment_bytes: 64 * 1024,
            segment_zero_fill: false,
            ..StoreOptions::default()
        };
        let s = open_mem(&disk, opts.clone()).await;
        // Segment 1: keys that stay live for good (one group, about 50 KiB).
        for k in 0..45u32 {
            let _ = s.put(&obj(1), &k.to_be_bytes(), &[1; 1000]).unwrap();
        }
        s.sync().await.unwrap();
        // Later segments: a few keys overwritten again and again, so they fill with garbage.
        for round in 0..60u32 {
            for k in 0..10u32 {
                let _ = s.put(&obj(2), &k.to_be_bytes(), &round.to_be_bytes().repeat(250));
            }
            s.sync().await.unwrap();
            settle(&s).await;
        }
        settle(&s).await;
        let st = s.stats();
        assert!(st.segments_compacted >= 3, "{st:?}");
        assert!(
            disk.file_names().contains(&"seg-00000001.log".to_string()),
            "the all-live oldest segment was rewritten for nothing: {st:?}"
        );
        // Recovery crosses the gaps compaction left in the segment numbers.
        let r = open_mem(
            &disk.power_loss(),
            StoreOptions {
                compaction_enabled: false,
                ..opts
            },
        )
        .await;
        for k in 0..45u32 {
            let v = r.get(&obj(1), &k.to_be_bytes()).await.unwrap().unwrap();
            assert_eq!(&*v, &[1; 1000][..]);
        }
        for k in 0..10u32 {
            let v = r.get(&obj(2), &k.to_be_bytes()).await.unwrap().unwrap();
            assert_eq!(&*v, &59u32.to_be_bytes().repeat(250)[..]);
        }
    });
}

#[test]
fn a_restart_after_compaction_loads_its_checkpoint_and_scans_only_the_tail() {
    run(|| async {
        let disk = MemDisk::new();
        let opts = StoreOptions {
            segment_bytes: 64 * 1024,
            segment_zero_fill: false,
            ..StoreOptions::default()
        };
        let s = open_mem(&disk, opts.clone()).await;
        for round in 0..60u32 {
            for k in 0..20u32 {
                let _ = s.put(&obj(1), &k.to_be_bytes(), &round.to_be_bytes().repeat(250));
            }
            let _ = s.delete(&obj(1), &(100 + round).to_be_bytes()).unwrap();
            s.sync().await.unwrap();
            settle(&s).await;
        }
        // A few writes after the last compaction, then an abrupt stop (no clean close).
        let _ = s.put(&obj(1), b"tail", b"t").unwrap();
        s.sync().await.unwrap();
        let st = s.stats();
        assert!(
            st.segments_compacted > 0 && st.checkpoints_written > 0,
            "{st:?}"
        );
        let image = disk.power_loss();
        assert!(image.file_names().contains(&"CHECKPOINT".to_string()));
        let r = open_mem(&image, opts).await;
        let rep = r.stats().recovery;
        assert!(rep.checkpoint_entries.is_some(), "{rep:?}");
        assert!(
            rep.records < st.records_written,
            "scanned {} of {} records: {rep:?}",
            rep.records,
            st.records_written
        );
        for k in 0..20u32 {
            let v = r.get(&obj(1), &k.to_be_bytes()).await.unwrap().unwrap();
            assert_eq!(&*v, &59u32.to_be_bytes().repeat(250)[..]);
        }
        assert_eq!(&*r.get(&obj(1), b"tail").await.unwrap().unwrap(), b"t");
        assert_eq!(
            r.list(&obj(1), &Default::default()).await.unwrap().len(),
            21
        );
    });
}
