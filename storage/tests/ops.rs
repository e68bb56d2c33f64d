//! Every operation and limit of the store, on the in-memory disk.

mod common;

use std::rc::Rc;

use cairn_storage::{Batch, ListOptions, MemDisk, OpenError, StorageError, Store, StoreOptions};
use common::{obj, open_mem, run, small_opts};

async fn keys(s: &Store, o: &ListOptions) -> Vec<String> {
    s.list(&obj(1), o)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

#[test]
fn a_put_is_visible_at_once_and_durable_after_its_ticket() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, small_opts()).await;
        let t = s.put(&obj(1), b"k", b"v1").unwrap();
        assert_eq!(&*s.get(&obj(1), b"k").await.unwrap().unwrap(), b"v1");
        assert!(!t.is_durable());
        t.durable().await.unwrap();
        assert_eq!(s.stats().fdatasyncs, 1);
        assert_eq!(
            s.get(&obj(2), b"k").await.unwrap().map(|v| v.to_vec()),
            None
        );
    });
}

#[test]
fn get_many_returns_values_in_the_order_asked() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        let _ = s.put(&obj(1), b"a", b"1").unwrap();
        let _ = s.put(&obj(1), b"c", b"3").unwrap();
        let got = s.get_many(&obj(1), &[b"c", b"b", b"a"]).await.unwrap();
        let got: Vec<Option<Vec<u8>>> = got.into_iter().map(|v| v.map(|v| v.to_vec())).collect();
        assert_eq!(got, vec![Some(b"3".to_vec()), None, Some(b"1".to_vec())]);
    });
}

#[test]
fn delete_reports_whether_the_key_existed() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        let _ = s.put(&obj(1), b"a", b"1").unwrap();
        assert!(s.delete(&obj(1), b"a").unwrap().1);
        assert!(!s.delete(&obj(1), b"a").unwrap().1);
        assert!(s.get(&obj(1), b"a").await.unwrap().is_none());
    });
}

#[test]
fn owned_batch_ops_apply_like_borrowed_ones_and_share_a_group() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        let _ = s.put(&obj(1), b"gone", b"x").unwrap();
        let mut b = Batch::new();
        b.put_owned(&obj(1), b"a".to_vec(), b"1".to_vec())
            .delete_owned(&obj(1), b"gone".to_vec());
        let t1 = s.commit(b).unwrap();
        let t2 = s.put(&obj(2), b"b", b"2").unwrap();
        assert_eq!(t1.group(), t2.group(), "no await between them: one group");
        t2.durable().await.unwrap();
        assert!(t1.is_durable());
        assert_eq!(&*s.get(&obj(1), b"a").await.unwrap().unwrap(), b"1");
        assert!(s.get(&obj(1), b"gone").await.unwrap().is_none());
        let t3 = s.put(&obj(1), b"a", b"3").unwrap();
        assert!(
            t3.group() > t1.group(),
            "groups are numbered in commit order"
        );
    });
}

#[test]
fn delete_all_removes_every_key_of_one_object_only() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, small_opts()).await;
        for k in [b"a", b"b", b"c"] {
            let _ = s.put(&obj(1), k, b"x").unwrap();
            let _ = s.put(&obj(2), k, b"y").unwrap();
        }
        s.delete_all(&obj(1)).unwrap().durable().await.unwrap();
        assert!(keys(&s, &ListOptions::default()).await.is_empty());
        assert_eq!(s.objects(None, 10), vec![obj(2)]);
        let s = open_mem(&disk.power_loss(), small_opts()).await;
        assert_eq!(s.objects(None, 10), vec![obj(2)]);
    });
}

#[test]
fn list_honours_order_and_every_bound() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        for k in ["a", "ab", "abc", "b", "ba", "c"] {
            let _ = s.put(&obj(1), k.as_bytes(), b"v").unwrap();
        }
        let v = |s: &str| Some(s.as_bytes().to_vec());
        let cases: Vec<(ListOptions, &[&str])> = vec![
            (ListOptions::default(), &["a", "ab", "abc", "b", "ba", "c"]),
            (
                ListOptions {
                    reverse: true,
                    ..Default::default()
                },
                &["c", "ba", "b", "abc", "ab", "a"],
            ),
            (
                ListOptions {
                    prefix: v("a"),
                    ..Default::default()
                },
                &["a", "ab", "abc"],
            ),
            (
                ListOptions {
                    prefix: v("ab"),
                    reverse: true,
                    ..Default::default()
                },
                &["abc", "ab"],
            ),
            (
                ListOptions {
                    start: v("ab"),
                    ..Default::default()
                },
                &["ab", "abc", "b", "ba", "c"],
            ),
            (
                ListOptions {
                    start_after: v("ab"),
                    ..Default::default()
                },
                &["abc", "b", "ba", "c"],
            ),
            (
                ListOptions {
                    end: v("b"),
                    ..Default::default()
                },
                &["a", "ab", "abc"],
            ),
            (
                ListOptions {
                    start: v("ab"),
                    end: v("ba"),
                    ..Default::default()
                },
                &["ab", "abc", "b"],
            ),
            (
                ListOptions {
                    limit: Some(2),
                    ..Default::default()
                },
                &["a", "ab"],
            ),
            (
                ListOptions {
                    limit: Some(2),
                    reverse: true,
                    ..Default::default()
                },
                &["c", "ba"],
            ),
            (
                ListOptions {
                    limit: Some(0),
                    ..Default::default()
                },
                &[],
            ),
            (
                ListOptions {
                    start: v("c"),
                    end: v("a"),
                    ..Default::default()
                },
                &[],
            ),
            (
                ListOptions {
                    start: v("b"),
                    end: v("b"),
                    ..Default::default()
                },
                &[],
            ),
            (
                ListOptions {
                    prefix: v("b"),
                    start: v("a"),
                    ..Default::default()
                },
                &["b", "ba"],
            ),
            (
                ListOptions {
                    prefix: v("a"),
                    end: v("ab"),
                    ..Default::default()
                },
                &["a"],
            ),
            (
                ListOptions {
                    prefix: v("z"),
                    ..Default::default()
                },
                &[],
            ),
            (
                ListOptions {
                    start: v("b"),
                    start_after: v("b"),
                    ..Default::default()
                },
                &["ba", "c"],
            ),
        ];
        for (o, want) in cases {
            assert_eq!(keys(&s, &o).await, want, "{o:?}");
        }
    });
}

#[test]
fn list_handles_prefixes_ending_in_ff() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        for k in [&[0xffu8][..], &[0xff, 0xff], &[0xff, 0xff, 1], &[0xfe]] {
            let _ = s.put(&obj(1), k, b"v").unwrap();
        }
        let o = ListOptions {
            prefix: Some(vec![0xff, 0xff]),
            ..Default::default()
        };
        let got: Vec<Vec<u8>> = s
            .list(&obj(1), &o)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, vec![vec![0xff, 0xff], vec![0xff, 0xff, 1]]);
    });
}

#[test]
fn objects_lists_ids_with_data_in_order_with_a_cursor() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        for n in [5, 1, 3, 9] {
            let _ = s.put(&obj(n), b"k", b"v").unwrap();
        }
        let _ = s.delete(&obj(3), b"k").unwrap();
        assert_eq!(s.objects(None, 2), vec![obj(1), obj(5)]);
        assert_eq!(s.objects(Some(&obj(5)), 10), vec![obj(9)]);
        assert!(s.objects(Some(&obj(9)), 10).is_empty());
    });
}

#[test]
fn limits_accept_the_limit_and_refuse_one_more() {
    run(|| async {
        let opts = StoreOptions {
            key_bytes_max: 8,
            value_bytes_max: 16,
            batch_keys_max: 3,
            ..small_opts()
        };
        let s = open_mem(&MemDisk::new(), opts).await;
        assert!(s.put(&obj(1), &[1; 8], b"v").is_ok());
        assert!(matches!(
            s.put(&obj(1), &[1; 9], b"v"),
            Err(StorageError::KeyTooLarge { len: 9, max: 8 })
        ));
        assert!(s.put(&obj(1), b"k", &[0; 16]).is_ok());
        assert!(matches!(
            s.put(&obj(1), b"k", &[0; 17]),
            Err(StorageError::ValueTooLarge { len: 17, max: 16 })
        ));
        assert!(matches!(
            s.delete(&obj(1), &[1; 9]),
            Err(StorageError::KeyTooLarge { .. })
        ));
        let mut b = Batch::new();
        b.put(&obj(1), b"a", b"1")
            .put(&obj(1), b"b", b"2")
            .delete(&obj(1), b"c");
        assert!(s.commit(b.clone()).is_ok());
        b.put(&obj(1), b"d", b"4");
        assert!(matches!(
            s.commit(b),
            Err(StorageError::BatchTooLarge { keys: 4, max: 3 })
        ));
        assert!(
            s.get(&obj(1), b"d").await.unwrap().is_none(),
            "a refused batch leaves no trace"
        );
    });
}

#[test]
fn the_default_limits_are_the_documented_ones() {
    let o = StoreOptions::default();
    assert_eq!(
        (o.key_bytes_max, o.value_bytes_max, o.batch_keys_max),
        (2048, 131072, 128)
    );
}

#[test]
fn mutations_issued_without_an_await_share_one_group() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        let tickets: Vec<_> = (0..50u32)
            .map(|i| s.put(&obj(1), &i.to_be_bytes(), b"v").unwrap())
            .collect();
        for t in tickets {
            t.durable().await.unwrap();
        }
        let st = s.stats();
        assert_eq!((st.groups, st.fdatasyncs, st.group_records_max), (1, 1, 50));
    });
}

#[test]
fn groups_grow_while_a_previous_group_is_being_synced() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        let mut writers = Vec::new();
        for w in 0..20u32 {
            let s = s.clone();
            writers.push(glommio::spawn_local(async move {
                for i in 0..20u32 {
                    let k = [w.to_be_bytes(), i.to_be_bytes()].concat();
                    s.put(&obj(1), &k, b"v").unwrap().durable().await.unwrap();
                }
            }));
        }
        for w in writers {
            w.await;
        }
        let st = s.stats();
        assert_eq!(st.commits, 400);
        assert!(
            st.groups < 100,
            "400 commits from 20 writers took {} groups",
            st.groups
        );
    });
}

#[test]
fn a_batch_is_all_or_nothing_across_a_power_loss() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, small_opts()).await;
        let mut b = Batch::new();
        b.put(&obj(1), b"a", b"1")
            .put(&obj(1), b"b", b"2")
            .delete(&obj(1), b"zz");
        let t = s.commit(b).unwrap();
        let before = open_mem(&disk.power_loss(), small_opts()).await;
        assert!(
            before.objects(None, 10).is_empty(),
            "nothing before the fdatasync"
        );
        t.durable().await.unwrap();
        let after = open_mem(&disk.power_loss(), small_opts()).await;
        assert_eq!(keys(&after, &ListOptions::default()).await, ["a", "b"]);
    });
}

#[test]
fn a_clean_close_and_reopen_keeps_everything_across_zero_filled_segments() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, zero_fill_opts()).await;
        for i in 0..300u32 {
            let _ = s
                .put(&obj((i % 3) as u8), &i.to_be_bytes(), &[i as u8; 300])
                .unwrap();
            if i % 7 == 0 {
                s.sync().await.unwrap();
            }
        }
        s.close().await.unwrap();
        let s = open_mem(&disk, small_opts()).await;
        for i in 0..300u32 {
            let v = s
                .get(&obj((i % 3) as u8), &i.to_be_bytes())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&*v, &[i as u8; 300][..]);
        }
        assert!(s.stats().segments > 1, "the test should cross segments");
        assert!(matches!(s.clone().close().await, Ok(())));
    });
}

#[test]
fn large_values_are_read_back_from_disk_after_they_are_durable() {
    run(|| async {
        let disk = MemDisk::new();
        let opts = StoreOptions {
            value_inline_bytes_max: 100,
            ..small_opts()
        };
        let s = open_mem(&disk, opts.clone()).await;
        let big = vec![7u8; 5000];
        s.put(&obj(1), b"big", &big)
            .unwrap()
            .durable()
            .await
            .unwrap();
        let _ = s.put(&obj(1), b"small", b"s").unwrap();
        assert_eq!(&*s.get(&obj(1), b"big").await.unwrap().unwrap(), &big[..]);
        let listed = s.list(&obj(1), &ListOptions::default()).await.unwrap();
        assert_eq!(&*listed[0].1, &big[..]);
        s.close().await.unwrap();
        let s = open_mem(&disk, opts).await;
        assert_eq!(&*s.get(&obj(1), b"big").await.unwrap().unwrap(), &big[..]);
    });
}

#[test]
fn a_failed_fdatasync_fails_its_tickets_and_later_ones_and_makes_the_store_read_only() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, small_opts()).await;
        s.put(&obj(1), b"ok", b"1")
            .unwrap()
            .durable()
            .await
            .unwrap();
        disk.fail_fdatasync_after(0);
        let t1 = s.put(&obj(1), b"a", b"1").unwrap();
        let err = t1.durable().await.unwrap_err();
        assert!(err.reason.contains("fdatasync"), "{err}");
        assert!(matches!(
            s.put(&obj(1), b"b", b"2"),
            Err(StorageError::ReadOnly { .. })
        ));
        assert!(s.stats().read_only.unwrap().contains("fdatasync"));
        assert_eq!(
            &*s.get(&obj(1), b"ok").await.unwrap().unwrap(),
            b"1",
            "reads keep working"
        );
        assert!(s.sync().await.is_err());
        let s2 = open_mem(&disk.power_loss(), small_opts()).await;
        assert!(s2.get(&obj(1), b"ok").await.unwrap().is_some());
    });
}

#[test]
fn a_full_disk_fails_the_commit_and_makes_the_store_read_only() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, small_opts()).await;
        s.put(&obj(1), b"ok", b"1")
            .unwrap()
            .durable()
            .await
            .unwrap();
        disk.set_space_bytes_max(Some(disk.used_bytes()));
        // Big enough to need a new segment, which cannot be allocated.
        let mut tickets = Vec::new();
        for i in 0..40u32 {
            tickets.push(s.put(&obj(1), &i.to_be_bytes(), &[1; 4000]).unwrap());
        }
        let mut failed = 0;
        for t in tickets {
            if let Err(e) = t.durable().await {
                assert!(
                    e.reason.contains("No space") || e.reason.contains("space"),
                    "{e}"
                );
                failed += 1;
            }
        }
        assert!(failed > 0);
        assert!(s.stats().read_only.is_some());
    });
}

#[test]
fn opening_a_directory_with_foreign_files_is_refused() {
    run(|| async {
        let disk = MemDisk::new();
        disk.set_file_bytes("photo.jpg", vec![1, 2, 3]);
        let r = Store::open_with_disk(Rc::new(disk.clone()), small_opts()).await;
        assert!(matches!(r, Err(OpenError::ForeignDirectory { .. })));
        assert_eq!(disk.file_names(), ["photo.jpg"], "nothing was written");
    });
}

#[test]
fn opening_with_another_shard_identity_is_refused() {
    run(|| async {
        let disk = MemDisk::new();
        let opts = StoreOptions {
            shard_id: 1,
            shard_count: 4,
            ..small_opts()
        };
        drop(open_mem(&disk, opts.clone()).await);
        let r = Store::open_with_disk(
            Rc::new(disk.clone()),
            StoreOptions {
                shard_count: 8,
                ..opts.clone()
            },
        )
        .await;
        assert!(matches!(
            r,
            Err(OpenError::ShardMismatch {
                found: (1, 4),
                expected: (1, 8)
            })
        ));
        let r = Store::open_with_disk(
            Rc::new(disk),
            StoreOptions {
                shard_id: 2,
                ..opts
            },
        )
        .await;
        assert!(matches!(r, Err(OpenError::ShardMismatch { .. })));
    });
}

#[test]
fn a_manifest_of_another_format_version_is_refused() {
    run(|| async {
        let disk = MemDisk::new();
        let fixture = include_bytes!("fixtures/manifest-version-99").to_vec();
        disk.set_file_bytes("MANIFEST", fixture);
        let r = Store::open_with_disk(Rc::new(disk), small_opts()).await;
        match r {
            Err(
                e @ OpenError::IncompatibleVersion {
                    found: 99,
                    supported: 1,
                },
            ) => {
                assert!(e.to_string().contains("version 99"), "{e}");
            }
            other => panic!("expected a version error, got {:?}", other.err()),
        }
    });
}

#[test]
fn a_damaged_manifest_is_refused() {
    run(|| async {
        let disk = MemDisk::new();
        let mut m = include_bytes!("fixtures/manifest-version-99").to_vec();
        m[12] ^= 1;
        disk.set_file_bytes("MANIFEST", m);
        let r = Store::open_with_disk(Rc::new(disk), small_opts()).await;
        assert!(matches!(
            r,
            Err(OpenError::BadManifest {
                detail: "checksum mismatch"
            })
        ));
    });
}

#[test]
fn mutations_after_close_are_refused() {
    run(|| async {
        let s = open_mem(&MemDisk::new(), small_opts()).await;
        let s2 = s.clone();
        s.close().await.unwrap();
        assert!(matches!(
            s2.put(&obj(1), b"k", b"v"),
            Err(StorageError::Closed)
        ));
    });
}

fn zero_fill_opts() -> StoreOptions {
    StoreOptions {
        segment_zero_fill: true,
        ..small_opts()
    }
}

#[test]
fn segments_come_from_a_zero_filled_spare_prepared_ahead() {
    run(|| async {
        let disk = MemDisk::new();
        let s = open_mem(&disk, zero_fill_opts()).await;
        for i in 0..200u32 {
            s.put(&obj(1), &i.to_be_bytes(), &[1; 1000])
                .unwrap()
                .durable()
                .await
                .unwrap();
        }
        let st = s.stats();
        assert!(st.segments > 3, "{st:?}");
        assert!(st.segments_from_spare >= st.segments as u64 - 3, "{st:?}");
        let s = open_mem(&disk.power_loss(), zero_fill_opts()).await;
        assert_eq!(
            s.list(&obj(1), &ListOptions::default())
                .await
                .unwrap()
                .len(),
            200
        );
    });
}
