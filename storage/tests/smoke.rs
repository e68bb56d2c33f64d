//! Smoke test: the store opens on a real directory and round-trips a value durably.

mod common;

use cairn_storage::{Store, StoreOptions};

#[test]
fn a_durable_put_survives_reopen_on_a_real_directory() {
    common::run_in_temp_dir("cairn-storage-smoke", |d| async move {
        let s = Store::open(&d, StoreOptions::default()).await.unwrap();
        let t = s.put(&common::obj(1), b"k", b"v").unwrap();
        t.durable().await.unwrap();
        s.close().await.unwrap();
        let s = Store::open(&d, StoreOptions::default()).await.unwrap();
        assert_eq!(&*s.get(&common::obj(1), b"k").await.unwrap().unwrap(), b"v");
    });
}

/// Commits through several segment rolls on a real directory: the durable write (an
/// `RWF_DSYNC` O_DIRECT write) must keep working on segments that were prepared as
/// `spare.log` and renamed, and everything must read back after reopening.
#[test]
fn durable_writes_survive_segment_rolls_on_a_real_directory() {
    common::run_in_temp_dir("cairn-storage-rolls", |d| async move {
        // Not `common::small_opts()`: it turns zero-filling off, and without zero-filling no
        // spare segment is prepared, so the renamed spares this test is about would not exist.
        let opts = StoreOptions {
            segment_bytes: 64 * 1024,
            compaction_enabled: false,
            ..StoreOptions::default()
        };
        let s = Store::open(&d, opts.clone()).await.unwrap();
        let value = |i: u32| format!("{i}-{}", "v".repeat(900)).into_bytes();
        for i in 0..400u32 {
            s.put(&common::obj((i % 7) as u8), &i.to_be_bytes(), &value(i))
                .unwrap()
                .durable()
                .await
                .unwrap_or_else(|e| panic!("put {i}: {e}"));
        }
        let stats = s.stats();
        assert!(stats.read_only.is_none(), "{:?}", stats.read_only);
        assert!(stats.segments >= 4, "expected several rolls: {stats:?}");
        s.close().await.unwrap();
        let s = Store::open(&d, opts).await.unwrap();
        for i in 0..400u32 {
            let got = s
                .get(&common::obj((i % 7) as u8), &i.to_be_bytes())
                .await
                .unwrap();
            assert_eq!(got.as_deref(), Some(&value(i)[..]), "key {i}");
        }
    });
}
