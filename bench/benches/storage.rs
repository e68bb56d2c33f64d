//! Storage layer benchmarks, each beside a baseline run in the same invocation:
//! - `storage/commit`: a durable 100-byte put from one writer versus one bare 4 KiB O_DIRECT
//!   write + fdatasync (the floor for any durable commit on this disk);
//! - `storage/get`: a get of an in-memory value and of an on-disk value versus a `BTreeMap`
//!   lookup of the same key set.
//!
//! The throughput figures under many writers come from the `storage-bench` binary
//! (`docs/BENCHMARKS.md`), because criterion measures one operation at a time.

// `criterion_group!` expands to an undocumented `pub fn`; nothing else here is public.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_storage::{Store, StoreOptions};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-bench-storage-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `f` on a fresh glommio executor and returns what it measured.
fn on_executor<F, Fut>(f: F) -> Duration
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Duration> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap()
}

fn commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("storage/commit");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("baseline: bare 4 KiB write + fdatasync", |b| {
        b.iter_custom(|iters| {
            let path = bench_dir("baseline").join("file");
            on_executor(move || async move {
                let f = glommio::io::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .dma_open(&path)
                    .await
                    .unwrap();
                f.pre_allocate(4096 * (iters + 1), false).await.unwrap();
                let t0 = Instant::now();
                for i in 0..iters {
                    let mut buf = f.alloc_dma_buffer(4096);
                    buf.as_bytes_mut().fill(i as u8);
                    f.write_at(buf, 4096 * i).await.unwrap();
                    f.fdatasync().await.unwrap();
                }
                t0.elapsed()
            })
        })
    });
    g.bench_function("durable 100-byte put, one writer", |b| {
        b.iter_custom(|iters| {
            let dir = bench_dir("put");
            on_executor(move || async move {
                let opts = StoreOptions {
                    compaction_enabled: false,
                    ..StoreOptions::default()
                };
                let s = Store::open(&dir, opts).await.unwrap();
                let t0 = Instant::now();
                for i in 0..iters {
                    s.put(&[1; 32], &i.to_be_bytes(), &[7; 100])
                        .unwrap()
                        .durable()
                        .await
                        .unwrap();
                }
                t0.elapsed()
            })
        })
    });
    g.finish();
}

fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("storage/get");
    g.throughput(Throughput::Elements(1));
    let keys = 10_000u32;
    g.bench_function("baseline: BTreeMap lookup", |b| {
        let m: BTreeMap<Vec<u8>, Vec<u8>> = (0..keys)
            .map(|i| (i.to_be_bytes().to_vec(), vec![3; 100]))
            .collect();
        let mut i = 0u32;
        b.iter(|| {
            i = (i + 1) % keys;
            m.get(&i.to_be_bytes()[..]).map(Vec::len)
        })
    });
    for (name, inline_max) in [("value in memory", 4096), ("value on disk", 64)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let dir = bench_dir("get");
                on_executor(move || async move {
                    let opts = StoreOptions {
                        compaction_enabled: false,
                        value_inline_bytes_max: inline_max,
                        ..StoreOptions::default()
                    };
                    let s = Store::open(&dir, opts).await.unwrap();
                    for i in 0..keys {
                        let _ = s.put(&[1; 32], &i.to_be_bytes(), &[3; 100]).unwrap();
                    }
                    s.sync().await.unwrap();
                    let t0 = Instant::now();
                    for i in 0..iters {
                        let k = ((i % keys as u64) as u32).to_be_bytes();
                        std::hint::black_box(s.get(&[1; 32], &k).await.unwrap());
                    }
                    t0.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, commit, get);
criterion_main!(benches);
