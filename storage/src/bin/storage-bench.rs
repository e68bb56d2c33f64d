//! Throughput and latency benchmark of one shard's store on a real disk, printing a table.
//!
//! Every figure is quoted beside a baseline measured in the same run: one bare 4 KiB O_DIRECT
//! write + fdatasync on the same filesystem, which is what one commit group costs at least.
//!
//! `cargo run --release -p cairn-storage --bin storage-bench -- [dir] [seconds] [recovery_mib]`
//! (defaults: a directory under /tmp, 3 s per writer count, a 1024 MiB log for recovery).
//! A fourth argument `recovery` runs only the recovery measurement and keeps the log it wrote in
//! `dir/recovery` for the next such run (delete the directory to write it afresh).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use cairn_storage::{Store, StoreOptions};
use glommio::io::{DmaFile, OpenOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("cairn-storage-bench"));
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let recovery_mib: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let only_recovery = args.get(4).is_some_and(|a| a == "recovery");
    if !only_recovery {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            if only_recovery {
                print_recovery(&dir, recovery_mib).await;
            } else {
                bench(&dir, Duration::from_secs(secs), recovery_mib).await;
            }
        })
        .expect("start glommio (raise `ulimit -l` if this fails)")
        .join()
        .unwrap();
}

async fn bench(dir: &Path, run_for: Duration, recovery_mib: u64) {
    let opts = StoreOptions {
        compaction_enabled: false,
        ..StoreOptions::default()
    };
    // Baseline and store commits alternate, so that load from other processes hits both alike.
    let (base_us, lat_us) = latency_pair(dir, &opts, 300).await;
    println!("| measurement | value | ratio to baseline |");
    println!("|---|---|---|");
    println!("| bare 4 KiB O_DIRECT write + fdatasync (baseline) | {base_us:.1} µs | 1.00 |");
    println!(
        "| single writer: durable 100-byte put latency | {lat_us:.1} µs | {:.2} |",
        lat_us / base_us
    );

    for writers in [1usize, 16, 256] {
        let s = Store::open(&dir.join(format!("w{writers}")), opts.clone())
            .await
            .unwrap();
        let (puts_s, syncs_s) = throughput(&s, writers, run_for).await;
        let st = s.stats();
        let sync_us = st.fdatasync_ns_total as f64 / st.fdatasyncs.max(1) as f64 / 1e3;
        println!(
            "| {writers} writers: durable 100-byte puts/s | {puts_s:.0} puts/s ({syncs_s:.0} fdatasyncs/s, \
             {:.1} puts/group, fdatasync {sync_us:.0} µs) | {:.2}x the baseline's {:.0} syncs/s |",
            puts_s / syncs_s,
            puts_s * base_us / 1e6,
            1e6 / base_us
        );
        s.close().await.unwrap();
    }

    let (mem_ns, disk_ns) = get_latency(&dir.join("get"), &opts).await;
    println!(
        "| get, value in memory | {mem_ns:.0} ns | {:.5} |",
        mem_ns / 1e3 / base_us
    );
    println!(
        "| get, value on disk (io_uring read) | {disk_ns:.0} ns | {:.3} |",
        disk_ns / 1e3 / base_us
    );

    print_recovery(dir, recovery_mib).await;
}

async fn print_recovery(dir: &Path, recovery_mib: u64) {
    let r = recovery(&dir.join("recovery"), recovery_mib).await;
    println!(
        "| recovery, full scan of a {} MiB log ({} records) | {:.0} records/s, {:.0} MB/s ({:.2} s) | — |",
        r.mib,
        r.records,
        r.records as f64 / r.scan_s,
        r.mib as f64 * 1.048_576 / r.scan_s,
        r.scan_s
    );
    println!(
        "| recovery, same scan per CPU-second of the shard thread | {:.0} records/s, {:.0} MB/s ({:.2} s CPU) | — |",
        r.records as f64 / r.scan_cpu_s,
        r.mib as f64 * 1.048_576 / r.scan_cpu_s,
        r.scan_cpu_s
    );
    println!(
        "| recovery, same scan per CPU-second of the process (shard + helper thread) \
         | {:.0} records/s ({:.2} s CPU) | — |",
        r.records as f64 / r.scan_process_cpu_s,
        r.scan_process_cpu_s
    );
    println!(
        "| recovery from the checkpoint ({} live keys) + tail | {:.2} s | {:.2} of the full scan |",
        r.live,
        r.ckpt_s,
        r.ckpt_s / r.scan_s
    );
}

async fn latency_pair(dir: &Path, opts: &StoreOptions, n: usize) -> (f64, f64) {
    let path = dir.join("baseline");
    // glommio probes io_uring poll-ring support on the first file it opens per device, and an
    // empty file answers wrongly; give it real data to read (see `cairn_storage::DmaDisk`).
    // Zero-filled and synced beforehand, like a store segment, so the baseline is the floor:
    // an overwrite of initialised blocks plus a device cache flush.
    std::fs::write(&path, vec![0u8; 4096 * n]).unwrap();
    std::fs::File::open(&path).unwrap().sync_all().unwrap();
    let f: DmaFile = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(&path)
        .await
        .unwrap();
    f.pre_allocate(4096 * n as u64, false).await.unwrap();
    let s = Store::open(&dir.join("latency"), opts.clone())
        .await
        .unwrap();
    let (mut base, mut store) = (Duration::ZERO, Duration::ZERO);
    for i in 0..n {
        let t0 = Instant::now();
        let mut buf = f.alloc_dma_buffer(4096);
        buf.as_bytes_mut().fill(i as u8);
        f.write_at(buf, 4096 * i as u64).await.unwrap();
        f.fdatasync().await.unwrap();
        base += t0.elapsed();
        let t0 = Instant::now();
        s.put(&[1; 32], &(i as u32).to_be_bytes(), &[7; 100])
            .unwrap()
            .durable()
            .await
            .unwrap();
        store += t0.elapsed();
    }
    s.close().await.unwrap();
    f.close().await.unwrap();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    (us(base), us(store))
}

async fn throughput(s: &Store, writers: usize, run_for: Duration) -> (f64, f64) {
    let done = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + run_for;
    let before = s.stats();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (s, done) = (s.clone(), done.clone());
        tasks.push(glommio::spawn_local(async move {
            let mut i = 0u32;
            while Instant::now() < deadline {
                let key = [(w as u32).to_be_bytes(), (i % 1000).to_be_bytes()].concat();
                s.put(&[(w % 251) as u8; 32], &key, &[9; 100])
                    .unwrap()
                    .durable()
                    .await
                    .unwrap();
                done.set(done.get() + 1);
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = s.stats();
    (
        done.get() as f64 / secs,
        (after.fdatasyncs - before.fdatasyncs) as f64 / secs,
    )
}

async fn get_latency(dir: &Path, opts: &StoreOptions) -> (f64, f64) {
    let opts = StoreOptions {
        value_inline_bytes_max: 64,
        ..opts.clone()
    };
    let s = Store::open(dir, opts).await.unwrap();
    let keys = 10_000u32;
    for i in 0..keys {
        let _ = s.put(&[1; 32], &i.to_be_bytes(), &[3; 32]).unwrap();
        let _ = s.put(&[2; 32], &i.to_be_bytes(), &[4; 100]).unwrap();
    }
    s.sync().await.unwrap();
    let time = |obj: [u8; 32], reps: u32| {
        let s = s.clone();
        async move {
            let t0 = Instant::now();
            let mut bytes = 0usize;
            for r in 0..reps {
                bytes += s
                    .get(&obj, &(r % keys).to_be_bytes())
                    .await
                    .unwrap()
                    .unwrap()
                    .len();
            }
            assert!(bytes > 0);
            t0.elapsed().as_secs_f64() * 1e9 / reps as f64
        }
    };
    let mem = time([1; 32], 1_000_000).await;
    let disk = time([2; 32], 20_000).await;
    (mem, disk)
}

struct RecoveryRun {
    mib: u64,
    records: u64,
    live: u64,
    scan_s: f64,
    scan_cpu_s: f64,
    scan_process_cpu_s: f64,
    ckpt_s: f64,
}

/// CPU time of this thread in seconds, from /proc (clock ticks of 10 ms): on a shared machine
/// it shows what recovery costs apart from waiting for a core.
fn thread_cpu_s() -> f64 {
    cpu_s("/proc/thread-self/stat")
}

/// CPU time of the whole process in seconds (the shard thread plus recovery's helper thread).
fn process_cpu_s() -> f64 {
    cpu_s("/proc/self/stat")
}

fn cpu_s(stat_file: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_file).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

async fn recovery(dir: &Path, mib: u64) -> RecoveryRun {
    let opts = StoreOptions {
        compaction_enabled: false,
        ..StoreOptions::default()
    };
    let live = 100_000u64;
    // A log kept from an earlier `recovery` run is reused (its checkpoint was consumed by the
    // last open, so the next open scans it in full).
    if !dir.join(cairn_storage::segment_name(1)).exists() {
        let s = Store::open(dir, opts.clone()).await.unwrap();
        let value = [5u8; 100];
        let mut i = 0u64;
        while s.stats().bytes_written < mib << 20 {
            for _ in 0..4096 {
                let _ = s
                    .put(&[(i % 64) as u8; 32], &(i % live).to_be_bytes(), &value)
                    .unwrap();
                i += 1;
            }
            s.sync().await.unwrap();
        }
        s.close().await.unwrap();
    }
    // Full scan: what an abrupt stop costs. Drop the checkpoint the clean close wrote.
    let _ = std::fs::remove_file(dir.join("CHECKPOINT"));
    let t0 = Instant::now();
    let (cpu0, pcpu0) = (thread_cpu_s(), process_cpu_s());
    let s = Store::open(dir, opts.clone()).await.unwrap();
    let scan_s = t0.elapsed().as_secs_f64();
    let scan_cpu_s = thread_cpu_s() - cpu0;
    let scan_process_cpu_s = process_cpu_s() - pcpu0;
    let r = s.stats().recovery;
    s.close().await.unwrap();
    let t0 = Instant::now();
    let s = Store::open(dir, opts).await.unwrap();
    let ckpt_s = t0.elapsed().as_secs_f64();
    assert!(s.stats().recovery.checkpoint_entries.is_some());
    RecoveryRun {
        mib: r.bytes_scanned >> 20,
        records: r.records,
        live,
        scan_s,
        scan_cpu_s,
        scan_process_cpu_s,
        ckpt_s,
    }
}
