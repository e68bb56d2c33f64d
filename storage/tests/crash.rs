//! Crash consistency: every acknowledged batch survives whole, and no batch survives in part.
//!
//! Two harnesses:
//! - `power_loss_*`: writers on the in-memory disk; at a random moment the "machine" dies and
//!   only fdatasynced bytes survive. This catches acknowledged-but-lost writes that a process
//!   kill cannot reveal (the page cache survives a kill).
//! - `sigkill_*`: a child process (this test binary re-executed) writes batches to a real
//!   directory and prints each acknowledged batch; the parent SIGKILLs it at random moments,
//!   reopens, and checks. The short version runs 20 cycles. The longer one:
//!   `CAIRN_CRASH_CYCLES=500 cargo nextest run -p cairn-storage --release sigkill --no-capture`.
//!
//! Seeds: `CAIRN_CRASH_SEED=<n>` reproduces a run; the seed is printed.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use cairn_storage::{Batch, ListOptions, MemDisk, Store, StoreOptions};
use common::{obj, open_mem, run};

/// A small xorshift generator: deterministic from its seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let s = std::env::var("CAIRN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("seed = {s} (CAIRN_CRASH_SEED={s} reproduces)");
    s
}

const PARTS: usize = 4;

fn batch(id: u64) -> Batch {
    let mut b = Batch::new();
    for p in 0..PARTS {
        let o = obj((id % 3) as u8);
        b.put(
            &o,
            format!("{id:010}/{p}").as_bytes(),
            format!("batch {id} part {p}").as_bytes(),
        );
    }
    b
}

/// Checks that every batch in the store is whole and returns their ids.
async fn whole_batches(s: &Store) -> Vec<u64> {
    let mut parts = BTreeMap::<u64, usize>::new();
    for o in 0..3u8 {
        for (k, v) in s.list(&obj(o), &ListOptions::default()).await.unwrap() {
            let id: u64 = std::str::from_utf8(&k[..10]).unwrap().parse().unwrap();
            let p = &k[11..];
            assert_eq!(
                &*v,
                format!("batch {id} part {}", std::str::from_utf8(p).unwrap()).as_bytes()
            );
            *parts.entry(id).or_default() += 1;
        }
    }
    for (id, n) in &parts {
        assert_eq!(
            *n, PARTS,
            "batch {id} is present in part ({n} of {PARTS} keys)"
        );
    }
    parts.into_keys().collect()
}

#[test]
fn power_loss_at_random_moments_loses_no_acknowledged_batch() {
    let seed = seed();
    run(move || async move {
        let mut rng = Rng(seed);
        for round in 0..60 {
            let disk = MemDisk::new();
            let opts = StoreOptions {
                segment_bytes: 64 * 1024,
                ..StoreOptions::default()
            };
            let s = open_mem(&disk, opts.clone()).await;
            let acked = Rc::new(RefCell::new(Vec::new()));
            let next = Rc::new(Cell::new(0u64));
            let stop = Rc::new(Cell::new(false));
            let mut tasks = Vec::new();
            for _ in 0..1 + rng.below(8) {
                let (s, acked, next, stop) = (s.clone(), acked.clone(), next.clone(), stop.clone());
                // Half the writers keep two commits in flight, so that mutations are issued while
                // a group is being written and synced (a ticket must not ride on that group).
                let pipelined = rng.below(2) == 0;
                tasks.push(glommio::spawn_local(async move {
                    while !stop.get() {
                        let id = next.get();
                        next.set(id + 1);
                        let Ok(t) = s.commit(batch(id)) else { return };
                        let mut second = None;
                        if pipelined {
                            YieldNow(false).await;
                            let id2 = next.get();
                            next.set(id2 + 1);
                            second = s.commit(batch(id2)).ok().map(|t2| (id2, t2));
                        }
                        if t.durable().await.is_ok() {
                            acked.borrow_mut().push(id);
                        }
                        if let Some((id2, t2)) = second
                            && t2.durable().await.is_ok()
                        {
                            acked.borrow_mut().push(id2);
                        }
                    }
                }));
            }
            for _ in 0..rng.below(400) {
                glommio::yield_if_needed().await;
                YieldNow(false).await;
            }
            // The machine dies here: only fdatasynced bytes survive.
            let image = disk.power_loss();
            let acked_now = acked.borrow().clone();
            stop.set(true);
            for t in tasks {
                t.await;
            }
            let r = open_mem(&image, opts).await;
            let present = whole_batches(&r).await;
            for id in &acked_now {
                assert!(
                    present.contains(id),
                    "round {round}: acknowledged batch {id} was lost (seed {seed})"
                );
            }
        }
    });
}

struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[test]
fn power_loss_during_compaction_loses_nothing() {
    let seed = seed();
    run(move || async move {
        let mut rng = Rng(seed);
        let disk = MemDisk::new();
        let opts = StoreOptions {
            segment_bytes: 64 * 1024,
            compaction_step_bytes: 4096,
            ..StoreOptions::default()
        };
        let s = open_mem(&disk, opts.clone()).await;
        let mut latest = BTreeMap::new();
        for i in 0..3000u64 {
            let k = rng.below(20);
            let v = format!("{i}-{}", "x".repeat(200));
            s.put(&obj(1), &k.to_be_bytes(), v.as_bytes())
                .unwrap()
                .durable()
                .await
                .unwrap();
            latest.insert(k, v);
            if i % 97 == 0 {
                let r = open_mem(
                    &disk.power_loss(),
                    StoreOptions {
                        compaction_enabled: false,
                        ..opts.clone()
                    },
                )
                .await;
                for (k, v) in &latest {
                    let got = r.get(&obj(1), &k.to_be_bytes()).await.unwrap();
                    assert_eq!(
                        got.as_deref(),
                        Some(v.as_bytes()),
                        "key {k} after {i} puts (seed {seed})"
                    );
                }
            }
        }
        assert!(
            s.stats().segments_compacted > 0,
            "compaction should have run"
        );
    });
}

/// The child side of `sigkill_*`: writes batches forever, printing each acknowledged id.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("CAIRN_CRASH_CHILD_DIR") else {
        return;
    };
    let start: u64 = std::env::var("CAIRN_CRASH_CHILD_START")
        .unwrap()
        .parse()
        .unwrap();
    run(move || async move {
        let opts = StoreOptions {
            segment_bytes: 256 * 1024,
            ..StoreOptions::default()
        };
        let s = Store::open(std::path::Path::new(&dir), opts).await.unwrap();
        let next = Rc::new(Cell::new(start));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (s, next) = (s.clone(), next.clone());
            tasks.push(glommio::spawn_local(async move {
                loop {
                    let id = next.get();
                    next.set(id + 1);
                    s.commit(batch(id)).unwrap().durable().await.unwrap();
                    println!("ack {id}");
                }
            }));
        }
        // Churn on another object: overwrites of values large enough to live on disk make
        // garbage faster than the batches add live data, so compaction (and the checkpoint it
        // writes) runs while the parent kills us; the occasional delete leaves tombstones.
        let churn = s.clone();
        tasks.push(glommio::spawn_local(async move {
            for i in 0u32.. {
                let key = (i % 8).to_be_bytes();
                let t = if i % 100 == 99 {
                    churn.delete(&obj(9), &key).unwrap().0
                } else {
                    churn.put(&obj(9), &key, &[i as u8; 8000]).unwrap()
                };
                t.durable().await.unwrap();
            }
        }));
        if let Some(t) = tasks.into_iter().next() {
            t.await;
        }
    });
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_batch() {
    let seed = seed();
    let mut rng = Rng(seed);
    let cycles: u64 = std::env::var("CAIRN_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = std::env::temp_dir().join(format!("cairn-crash-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut acked_all: Vec<u64> = Vec::new();
    let mut next_start = 0u64;
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("CAIRN_CRASH_CHILD_DIR", &dir)
            .env("CAIRN_CRASH_CHILD_START", next_start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(id) = line.strip_prefix("ack ") {
                    acks.push(id.parse::<u64>().unwrap());
                }
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(30 + rng.below(250)));
        // Child::kill sends SIGKILL on Unix: no chance to flush anything.
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        acked_all.extend(&acks);
        next_start += 1_000_000;
        let d = dir.clone();
        let acked = acked_all.clone();
        run(move || async move {
            let s = Store::open(
                &d,
                StoreOptions {
                    segment_bytes: 256 * 1024,
                    ..StoreOptions::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e} (seed {seed})"));
            let st = s.stats();
            println!(
                "cycle {cycle}: recovery {:?}, segments {}",
                st.recovery, st.segments
            );
            let present = whole_batches(&s).await;
            let present: std::collections::BTreeSet<u64> = present.into_iter().collect();
            for id in &acked {
                assert!(
                    present.contains(id),
                    "cycle {cycle}: acknowledged batch {id} lost (seed {seed})"
                );
            }
        });
        println!("cycle {cycle}: {} acked so far", acked_all.len());
    }
    println!("{cycles} kill cycles in {:?}", started.elapsed());
    assert!(
        !acked_all.is_empty(),
        "the child never acknowledged anything"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
