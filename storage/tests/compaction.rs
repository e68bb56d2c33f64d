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
