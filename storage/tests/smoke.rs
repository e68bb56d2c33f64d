//! Smoke test: the store opens on a real directory and round-trips a value durably.

mod common;

use cairn_storage::{Store, StoreOptions};

#[test]
fn a_durable_put_survives_reopen_on_a_real_directory() {
    let dir = std::env::temp_dir().join(format!("cairn-storage-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.clone();
    common::run(move || async move {
        let s = Store::open(&d, StoreOptions::default()).await.unwrap();
        let t = s.put(&common::obj(1), b"k", b"v").unwrap();
        t.durable().await.unwrap();
        s.close().await.unwrap();
        let s = Store::open(&d, StoreOptions::default()).await.unwrap();
        assert_eq!(&*s.get(&common::obj(1), b"k").await.unwrap().unwrap(), b"v");
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
