//! Power loss under the whole engine: the built-in `kv` and `counter` classes
//! run on an [`ObjectHost`] whose store sits on `cairn-storage`'s `MemDisk`,
//! many concurrent requests to many objects, and at a random moment the
//! "machine" dies: only fdatasynced bytes survive. A fresh host on the
//! surviving image must hold every write that was acknowledged (a 200 came
//! back), hold every multi-key batch whole or not at all, and never show a
//! counter below its last acknowledged value. Unacknowledged writes may
//! vanish. A process kill cannot catch an acknowledged-but-unsynced write
//! (the page cache survives it); this can.
//!
//! `CAIRN_POWER_SEED` replays a run (the seed is printed on failure).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use cairn_storage::MemDisk;

use crate::builtins;
use crate::host::{HostConfig, ObjectHost, Target, system_clock};
use crate::id::id_from_name;
use crate::object::{Classes, Request};
use crate::store::Store;
use crate::testing::run_local;

const OBJECTS: u64 = 200;
const COUNTERS: u64 = 16;
const BATCH_KEYS: usize = 3;

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

fn opts() -> cairn_storage::StoreOptions {
    cairn_storage::StoreOptions {
        // Small segments: a run crosses many, and rolls while writers wait.
        segment_bytes: 64 << 10,
        segment_zero_fill: false,
        key_bytes_max: 2049,
        ..cairn_storage::StoreOptions::default()
    }
}

async fn host_on(disk: &MemDisk) -> ObjectHost {
    let store = Store::open_on(Rc::new(disk.clone()), opts())
        .await
        .expect("the store opens on the image");
    let mut classes = Classes::new();
    builtins::register(&mut classes);
    ObjectHost::new(HostConfig::default(), classes, store, system_clock())
}

fn target(class: &str, name: &str) -> Target {
    Target {
        class: class.into(),
        id: id_from_name(class, name.as_bytes()),
        name: Some(name.as_bytes().to_vec()),
    }
}

/// Everything acknowledged so far, and every batch issued.
#[derive(Default)]
struct Log {
    /// (object, key) -> value of acknowledged single puts.
    puts: HashMap<(String, String), String>,
    /// (object, batch id) of every batch sent, acknowledged or not.
    batches: Vec<(String, u64)>,
    /// (object, batch id) of acknowledged batches.
    acked_batches: Vec<(String, u64)>,
    /// counter -> highest acknowledged value.
    counters: HashMap<String, i64>,
}

async fn writer(host: ObjectHost, log: Rc<RefCell<Log>>, stop: Rc<Cell<bool>>, seed: u64, w: u64) {
    let mut rng = Rng(seed ^ (w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut seq = 0u64;
    while !stop.get() {
        seq += 1;
        match rng.below(4) {
            0 => {
                let name = format!("c{}", rng.below(COUNTERS));
                let r = host
                    .call(target("counter", &name), Request::new("POST", "/increment"))
                    .await;
                if r.status == 200 {
                    let v: i64 = std::str::from_utf8(&r.body)
                        .ok()
                        .and_then(|s| {
                            s.strip_prefix(r#"{"value":"#)?
                                .strip_suffix('}')?
                                .parse()
                                .ok()
                        })
                        .expect("counter JSON");
                    let mut l = log.borrow_mut();
                    let e = l.counters.entry(name).or_insert(v);
                    *e = (*e).max(v);
                }
            }
            1 => {
                let obj = format!("o{}", rng.below(OBJECTS));
                let id = w << 32 | seq;
                let body: String = (0..BATCH_KEYS)
                    .map(|p| format!("put b{id}-{p} {id}\n"))
                    .collect();
                log.borrow_mut().batches.push((obj.clone(), id));
                let r = host
                    .call(
                        target("kv", &obj),
                        Request::new("POST", "/batch").with_body(body.into_bytes()),
                    )
                    .await;
                if r.status == 200 {
                    log.borrow_mut().acked_batches.push((obj, id));
                }
            }
            _ => {
                let obj = format!("o{}", rng.below(OBJECTS));
                // A few hot keys are overwritten: the latest acknowledged value must win.
                let key = if rng.below(3) == 0 {
                    format!("hot{}", rng.below(4))
                } else {
                    format!("k{w}-{seq}")
                };
                let value = format!("{w}-{seq}");
                let r = host
                    .call(
                        target("kv", &obj),
                        Request::new("PUT", &format!("/keys/{key}"))
                            .with_body(value.clone().into_bytes()),
                    )
                    .await;
                if r.status == 200 {
                    log.borrow_mut().puts.insert((obj, key), value);
                }
            }
        }
    }
}

async fn get(host: &ObjectHost, obj: &str, key: &str) -> Option<String> {
    let r = host
        .call(
            target("kv", obj),
            Request::new("GET", &format!("/keys/{key}")),
        )
        .await;
    match r.status {
        200 => Some(String::from_utf8(r.body.to_vec()).expect("utf-8 value")),
        404 => None,
        s => panic!("GET {obj}/{key} after power loss: {s} {:?}", r.body),
    }
}

#[test]
fn acknowledged_writes_survive_power_loss_through_the_engine() {
    let seed = std::env::var("CAIRN_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    run_local(async move {
        let mut rng = Rng(seed);
        let mut acked_total = 0usize;
        for round in 0..16 {
            let disk = MemDisk::new();
            let host = host_on(&disk).await;
            let log = Rc::new(RefCell::new(Log::default()));
            let stop = Rc::new(Cell::new(false));
            let writers: Vec<_> = (0..1 + rng.below(32))
                .map(|w| {
                    glommio::spawn_local(writer(
                        host.clone(),
                        log.clone(),
                        stop.clone(),
                        seed ^ round,
                        w,
                    ))
                })
                .collect();
            for _ in 0..rng.below(1500) {
                glommio::executor().yield_task_queue_now().await;
            }
            // The machine dies here: only what was fdatasynced survives.
            let image = disk.power_loss();
            let acked = std::mem::take(&mut *log.borrow_mut());
            stop.set(true);
            for w in writers {
                w.await;
            }
            let issued = log.borrow().batches.clone();
            let host = host_on(&image).await;
            for ((obj, key), value) in &acked.puts {
                let got = get(&host, obj, key).await;
                // A hot key may hold a later, unacknowledged write; a unique key only its own.
                let ok = if key.starts_with("hot") {
                    got.is_some()
                } else {
                    got.as_deref() == Some(value.as_str())
                };
                assert!(
                    ok,
                    "round {round}: acknowledged {obj}/{key}={value} is {got:?} (seed {seed})"
                );
            }
            for (obj, id) in acked.batches.iter().chain(&issued) {
                let mut present = 0;
                for p in 0..BATCH_KEYS {
                    if let Some(v) = get(&host, obj, &format!("b{id}-{p}")).await {
                        assert_eq!(v, id.to_string(), "round {round}: batch {id} value");
                        present += 1;
                    }
                }
                assert!(
                    present == 0 || present == BATCH_KEYS,
                    "round {round}: batch {id} in {obj} is partial ({present} of {BATCH_KEYS}) (seed {seed})"
                );
                if acked.acked_batches.contains(&(obj.clone(), *id)) {
                    assert_eq!(
                        present, BATCH_KEYS,
                        "round {round}: acknowledged batch {id} lost (seed {seed})"
                    );
                }
            }
            for (name, want) in &acked.counters {
                let r = host
                    .call(target("counter", name), Request::new("GET", ""))
                    .await;
                let body = String::from_utf8(r.body.to_vec()).expect("utf-8");
                let got: i64 = body
                    .strip_prefix(r#"{"value":"#)
                    .and_then(|s| s.strip_suffix('}')?.parse().ok())
                    .expect("counter JSON");
                assert!(
                    got >= *want,
                    "round {round}: counter {name} is {got}, {want} was acknowledged (seed {seed})"
                );
            }
            acked_total += acked.puts.len() + acked.acked_batches.len() + acked.counters.len();
        }
        assert!(
            acked_total > 0,
            "nothing was acknowledged: the test tested nothing (seed {seed})"
        );
    });
}
