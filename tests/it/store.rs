//! Integration tests of the transactional store on real files in a temporary directory, each
//! run on both engines (fjall and sled): visibility, rollback, panics, scans, durability across
//! reopen, serial atomicity under concurrency, group commit and sequences; and the choice of
//! engine by the data folder's files. Depends only on `rxgate::store`, tokio and tempfile.

use std::path::Path;
use std::sync::Arc;

use rxgate::store::{Column, ColumnType, Columns, Error, Store, Table, Txn, Value};
use rxgate::store::{DEFAULT_CACHE_MIB, EmbeddedStore, EngineKind};

fn open(dir: &Path, engine: EngineKind) -> Arc<EmbeddedStore> {
    let store = EmbeddedStore::open_with(dir, Some(engine), DEFAULT_CACHE_MIB).expect("open store");
    assert_eq!(store.engine(), engine);
    Arc::new(store)
}

/// Commits one put.
async fn put(store: &EmbeddedStore, table: Table, key: &[u8], value: &[u8]) {
    let (key, value) = (key.to_vec(), value.to_vec());
    store
        .transact(move |tx| {
            tx.put(table, &key, &value);
            Ok::<_, Error>(())
        })
        .await
        .expect("store")
        .expect("transaction");
}

/// Reads one key in its own transaction.
async fn get(store: &EmbeddedStore, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    let key = key.to_vec();
    store
        .transact(move |tx| tx.get(table, &key))
        .await
        .expect("store")
        .expect("transaction")
}

fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<&[u8]> {
    entries.iter().map(|(k, _)| k.as_slice()).collect()
}

async fn writes_are_visible_to_later_transactions(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    put(&store, Table::Prescriptions, b"rx-1", b"record one").await;
    assert_eq!(
        get(&store, Table::Prescriptions, b"rx-1").await.as_deref(),
        Some(b"record one".as_slice())
    );
    // Tables are separate namespaces.
    assert_eq!(get(&store, Table::Documents, b"rx-1").await, None);
    let deleted = store
        .transact(|tx| {
            tx.delete(Table::Prescriptions, b"rx-1");
            Ok::<_, Error>(())
        })
        .await;
    assert_eq!(deleted, Ok(Ok(())));
    assert_eq!(get(&store, Table::Prescriptions, b"rx-1").await, None);
}

async fn a_rolled_back_transaction_writes_nothing(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    put(&store, Table::Meta, b"kept", b"1").await;
    let answer = store
        .transact(|tx| {
            tx.put(Table::Meta, b"new", b"2");
            tx.delete(Table::Meta, b"kept");
            let seq = tx.next_sequence("audit").map_err(|e| e.to_string())?;
            Err::<(), String>(format!("refused after sequence {seq}"))
        })
        .await;
    assert_eq!(answer, Ok(Err("refused after sequence 1".to_string())));
    assert_eq!(get(&store, Table::Meta, b"new").await, None);
    assert_eq!(
        get(&store, Table::Meta, b"kept").await.as_deref(),
        Some(b"1".as_slice())
    );
    // The rolled-back transaction did not consume the sequence value.
    let seq = store.transact(|tx| tx.next_sequence("audit")).await;
    assert_eq!(seq, Ok(Ok(1)));
}

async fn a_panicking_transaction_writes_nothing_and_the_store_keeps_working(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    let answer = store
        .transact(|tx| -> Result<(), Error> {
            tx.put(Table::Audit, b"a", b"half done");
            panic!("bug in a transaction function");
        })
        .await;
    match answer {
        Err(Error::Panicked(message)) => assert!(message.contains("bug in a transaction")),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(get(&store, Table::Audit, b"a").await, None);
    put(&store, Table::Audit, b"b", b"fine").await;
    assert_eq!(
        get(&store, Table::Audit, b"b").await.as_deref(),
        Some(b"fine".as_slice())
    );
}

async fn a_transaction_reads_its_own_writes(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    put(&store, Table::ByNumber, b"stored", b"old").await;
    let answer = store
        .transact(|tx| {
            let mut seen = Vec::new();
            tx.put(Table::ByNumber, b"fresh", b"v1");
            seen.push(tx.get(Table::ByNumber, b"fresh")?);
            tx.put(Table::ByNumber, b"fresh", b"v2");
            seen.push(tx.get(Table::ByNumber, b"fresh")?);
            tx.delete(Table::ByNumber, b"stored");
            seen.push(tx.get(Table::ByNumber, b"stored")?);
            tx.put(Table::ByNumber, b"stored", b"again");
            seen.push(tx.get(Table::ByNumber, b"stored")?);
            Ok::<_, Error>(seen)
        })
        .await;
    let expected = vec![
        Some(b"v1".to_vec()),
        Some(b"v2".to_vec()),
        None,
        Some(b"again".to_vec()),
    ];
    assert_eq!(answer, Ok(Ok(expected)));
    assert_eq!(
        get(&store, Table::ByNumber, b"stored").await.as_deref(),
        Some(b"again".as_slice())
    );
}

async fn scans_merge_own_writes_in_key_order(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    store
        .transact(|tx| {
            for key in [&b"p/1"[..], b"p/3", b"p/5", b"p/7", b"q/1", b"p\xff\xff/1"] {
                tx.put(Table::ByPatient, key, b"stored");
            }
            // The same keys in a neighbouring table must never show up.
            tx.put(Table::ByNumber, b"p/2", b"other table");
            tx.put(Table::ByExchange, b"p/4", b"other table");
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .unwrap();

    let answer = store
        .transact(|tx| {
            tx.delete(Table::ByPatient, b"p/3");
            tx.put(Table::ByPatient, b"p/2", b"own");
            tx.put(Table::ByPatient, b"p/5", b"overwritten");
            tx.put(Table::ByPatient, b"p/9", b"own");
            tx.delete(Table::ByPatient, b"p/8"); // never existed
            tx.put(Table::ByPatient, b"p/0", b"own");
            tx.delete(Table::ByPatient, b"p/0"); // written, then deleted again
            let all = tx.scan_prefix(Table::ByPatient, b"p/", 100)?;
            let first_two = tx.scan_prefix(Table::ByPatient, b"p/", 2)?;
            let none = tx.scan_prefix(Table::ByPatient, b"p/", 0)?;
            let range = tx.scan_range(Table::ByPatient, b"p/2", b"p/7", 100)?;
            let empty = tx.scan_range(Table::ByPatient, b"p/7", b"p/2", 100)?;
            let ff = tx.scan_prefix(Table::ByPatient, b"p\xff\xff", 100)?;
            Ok::<_, Error>((all, first_two, none, range, empty, ff))
        })
        .await
        .unwrap()
        .unwrap();
    let (all, first_two, none, range, empty, ff) = answer;

    assert_eq!(
        all,
        vec![
            (b"p/1".to_vec(), b"stored".to_vec()),
            (b"p/2".to_vec(), b"own".to_vec()),
            (b"p/5".to_vec(), b"overwritten".to_vec()),
            (b"p/7".to_vec(), b"stored".to_vec()),
            (b"p/9".to_vec(), b"own".to_vec()),
        ]
    );
    assert_eq!(keys(&first_two), vec![&b"p/1"[..], b"p/2"]);
    assert!(none.is_empty());
    assert_eq!(keys(&range), vec![&b"p/2"[..], b"p/5"]);
    assert!(empty.is_empty());
    assert_eq!(keys(&ff), vec![&b"p\xff\xff/1"[..]]);

    // The committed state matches what the transaction saw.
    let after = store
        .transact(|tx| tx.scan_prefix(Table::ByPatient, b"", 100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        keys(&after),
        vec![
            &b"p/1"[..],
            b"p/2",
            b"p/5",
            b"p/7",
            b"p/9",
            b"p\xff\xff/1",
            b"q/1"
        ]
    );
}

async fn acknowledged_writes_survive_close_and_drop(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), engine);
        for i in 0u32..50 {
            put(
                &store,
                Table::Audit,
                &i.to_be_bytes(),
                format!("entry {i}").as_bytes(),
            )
            .await;
        }
        store.close().expect("close");
        // Closed: nothing more runs.
        let late = store.transact(|_| Ok::<_, Error>(())).await;
        assert_eq!(late, Err(Error::Closed));
    }
    {
        let store = open(dir.path(), engine);
        put(&store, Table::Meta, b"second session", b"yes").await;
        // Dropped without close.
    }
    let store = open(dir.path(), engine);
    let entries = store
        .transact(|tx| tx.scan_prefix(Table::Audit, b"", 1000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entries.len(), 50);
    for (i, (key, value)) in (0u32..).zip(&entries) {
        assert_eq!(key.as_slice(), i.to_be_bytes());
        assert_eq!(value.as_slice(), format!("entry {i}").as_bytes());
    }
    assert_eq!(
        get(&store, Table::Meta, b"second session").await.as_deref(),
        Some(b"yes".as_slice())
    );
}

async fn close_finishes_queued_transactions(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    // Queued at once (submission happens on the call, not on the first poll).
    let answers: Vec<_> = (0u32..200)
        .map(|i| {
            store.transact(move |tx| {
                tx.put(Table::Dispensings, &i.to_be_bytes(), b"queued");
                Ok::<_, Error>(i)
            })
        })
        .collect();
    let closer = Arc::clone(&store);
    tokio::task::spawn_blocking(move || closer.close())
        .await
        .unwrap()
        .expect("close");
    for (i, answer) in (0u32..).zip(answers) {
        assert_eq!(answer.await, Ok(Ok(i)));
    }
    drop(store);
    let store = open(dir.path(), engine);
    let count = store
        .transact(|tx| {
            tx.scan_prefix(Table::Dispensings, b"", 1000)
                .map(|e| e.len())
        })
        .await;
    assert_eq!(count, Ok(Ok(200)));
}

async fn concurrent_read_modify_write_increments_are_serial(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    in_parallel(&store, 64, 100, |tx| {
        let current = counter(tx)?;
        tx.put(Table::Meta, b"counter", &(current + 1).to_be_bytes());
        Ok(())
    })
    .await;
    assert_eq!(stored_counter(&store).await, 6400);
}

/// The value of the test counter in `Table::Meta` (0 if unset).
fn counter(tx: &dyn Txn) -> Result<u64, Error> {
    Ok(match tx.get(Table::Meta, b"counter")? {
        Some(bytes) => u64::from_be_bytes(bytes.try_into().unwrap()),
        None => 0,
    })
}

async fn stored_counter(store: &EmbeddedStore) -> u64 {
    let value = get(store, Table::Meta, b"counter").await.unwrap();
    u64::from_be_bytes(value.try_into().unwrap())
}

/// Runs `f` in `rounds` transactions one after another in each of `tasks` tasks at once; every
/// transaction must commit.
async fn in_parallel<F>(store: &Arc<EmbeddedStore>, tasks: usize, rounds: usize, f: F)
where
    F: Fn(&mut dyn Txn) -> Result<(), Error> + Copy + Send + Sync + 'static,
{
    let tasks: Vec<_> = (0..tasks)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                for _ in 0..rounds {
                    store.transact(f).await.unwrap().unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn exactly_one_of_racing_claims_wins(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    let tasks: Vec<_> = (0u8..16)
        .map(|claimant| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .transact(move |tx| {
                        if tx.get(Table::ByNumber, b"institution/0001")?.is_some() {
                            return Ok(false);
                        }
                        tx.put(Table::ByNumber, b"institution/0001", &[claimant]);
                        Ok::<_, Error>(true)
                    })
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (claimant, task) in (0u8..).zip(tasks) {
        if task.await.unwrap() {
            winners.push(claimant);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        get(&store, Table::ByNumber, b"institution/0001").await,
        Some(vec![winners[0]])
    );
}

async fn group_commit_flushes_less_often_than_it_commits(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    let tasks: Vec<_> = (0u32..64)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0u32..20 {
                    let key = [writer.to_be_bytes(), i.to_be_bytes()].concat();
                    put(&store, Table::Prescriptions, &key, &[0; 1024]).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.transactions, 64 * 20);
    assert_eq!(stats.commits, 64 * 20);
    assert!(stats.flushes <= stats.batches);
    assert!(stats.flushes < stats.transactions, "no batching: {stats:?}");
    assert!(stats.largest_batch > 1, "{stats:?}");
    assert!(stats.flush_time > std::time::Duration::ZERO);
}

/// Transactions of one batch see each other's writes (and deletions) before any reaches the
/// tree; a rolled-back one in between leaves no trace; after the batch all of it is stored.
async fn transactions_of_one_batch_see_each_others_writes(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    for k in [b"a", b"c", b"e"] {
        put(&store, Table::Meta, k, b"tree").await;
    }
    // The writer waits in the first transaction until the others are queued: they run as the
    // next batch, one after another.
    let (started, started_rx) = std::sync::mpsc::channel();
    let release = Arc::new(std::sync::Barrier::new(2));
    let released = Arc::clone(&release);
    let holder = store.transact(move |_| {
        started.send(()).unwrap();
        released.wait();
        Ok::<_, Error>(())
    });
    started_rx.recv().unwrap();
    let batches_before = store.stats().batches;
    let first = store.transact(|tx| {
        tx.put(Table::Meta, b"b", b"first");
        tx.delete(Table::Meta, b"c");
        Ok::<_, Error>(())
    });
    let rolled_back = store.transact(|tx| {
        tx.put(Table::Meta, b"d", b"rolled back");
        tx.delete(Table::Meta, b"e");
        Err::<(), _>("no")
    });
    let second = store.transact(|tx| {
        let seen = tx.scan_prefix(Table::Meta, b"", usize::MAX)?;
        let got_b = tx.get(Table::Meta, b"b")?;
        let got_c = tx.get(Table::Meta, b"c")?;
        tx.put(Table::Meta, b"a", b"second");
        tx.put(Table::Meta, b"f", b"second");
        let own = tx.scan_range(Table::Meta, b"a", b"z", 3)?;
        Ok::<_, Error>((seen, got_b, got_c, own))
    });
    release.wait();
    holder.await.unwrap().unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(rolled_back.await.unwrap(), Err("no"));
    let (seen, got_b, got_c, own) = second.await.unwrap().unwrap();
    assert_eq!(store.stats().batches, batches_before + 1, "one batch");
    let entry = |k: &[u8], v: &[u8]| (k.to_vec(), v.to_vec());
    assert_eq!(
        seen,
        vec![
            entry(b"a", b"tree"),
            entry(b"b", b"first"),
            entry(b"e", b"tree")
        ]
    );
    assert_eq!(got_b.as_deref(), Some(b"first".as_slice()));
    assert_eq!(got_c, None);
    assert_eq!(
        own,
        vec![
            entry(b"a", b"second"),
            entry(b"b", b"first"),
            entry(b"e", b"tree")
        ]
    );

    drop(store);
    let store = open(dir.path(), engine);
    let stored = store
        .transact(|tx| tx.scan_prefix(Table::Meta, b"", usize::MAX))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored,
        vec![
            entry(b"a", b"second"),
            entry(b"b", b"first"),
            entry(b"e", b"tree"),
            entry(b"f", b"second")
        ]
    );
}

async fn read_only_and_rolled_back_transactions_need_no_flush(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    put(&store, Table::Meta, b"k", b"v").await;
    let before = store.stats();
    assert_eq!(before.flushes, 1);
    get(&store, Table::Meta, b"k").await;
    let rolled_back = store
        .transact(|tx| {
            tx.put(Table::Meta, b"k", b"other");
            Err::<(), _>("no")
        })
        .await;
    assert_eq!(rolled_back, Ok(Err("no")));
    let after = store.stats();
    assert_eq!(after.flushes, before.flushes);
    assert_eq!(after.transactions, before.transactions + 2);
    assert_eq!(after.commits, before.commits);
}

async fn sequences_increase_across_transactions_and_reopen(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for _session in 0..3 {
        let store = open(dir.path(), engine);
        for _ in 0..4 {
            let (a, b, other) = store
                .transact(|tx| {
                    let a = tx.next_sequence("audit")?;
                    let b = tx.next_sequence("audit")?;
                    let other = tx.next_sequence("dispensing")?;
                    Ok::<_, Error>((a, b, other))
                })
                .await
                .unwrap()
                .unwrap();
            assert!(a < b);
            seen.extend([a, b]);
            assert!(other >= 1);
        }
        store.close().unwrap();
    }
    assert_eq!(seen, (1..=24).collect::<Vec<u64>>());
    let store = open(dir.path(), engine);
    assert_eq!(
        store.transact(|tx| tx.next_sequence("dispensing")).await,
        Ok(Ok(13))
    );
}

/// Unique numbers increase in the order they are drawn, across transactions and a reopen, and
/// (in the embedded store) come from the same counter as `next_sequence`, under the same key:
/// stores written when these users drew `next_sequence` go on where they were. Put and
/// `put_row` write the same row here: the embedded store keeps no columns.
async fn unique_numbers_increase_and_share_the_stored_counter(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for _session in 0..2 {
        let store = open(dir.path(), engine);
        for _ in 0..3 {
            let drawn = store
                .transact(|tx| {
                    let a = tx.unique_sequence("intake")?;
                    let b = tx.unique_sequence("intake")?;
                    Ok::<_, Error>([a, b])
                })
                .await
                .unwrap()
                .unwrap();
            seen.extend(drawn);
        }
        store.close().unwrap();
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let store = open(dir.path(), engine);
    let (last, stored, next) = store
        .transact(|tx| {
            let last = tx.sequence("intake")?;
            let stored = tx.get(Table::Meta, b"sequence/intake")?;
            let next = tx.next_sequence("intake")?;
            Ok::<_, Error>((last, stored, next))
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(last), seen.last().copied());
    assert_eq!(stored, Some(last.to_be_bytes().to_vec()));
    assert_eq!(next, last + 1);

    let columns = Columns {
        declared: &[Column {
            name: "n",
            kind: ColumnType::Integer,
            nullable: false,
        }],
        values: &[Value::Integer(7)],
    };
    let row = store
        .transact(move |tx| {
            tx.put_row(Table::Events, b"row", b"value", columns);
            tx.get(Table::Events, b"row")
        })
        .await;
    assert_eq!(row, Ok(Ok(Some(b"value".to_vec()))));
}

async fn a_corrupt_sequence_is_reported(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    put(&store, Table::Meta, b"sequence/broken", b"123").await;
    let answer = store.transact(|tx| tx.next_sequence("broken")).await;
    assert!(matches!(answer, Ok(Err(Error::Corrupt(_)))), "{answer:?}");
}

async fn works_behind_dyn_store(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = open(dir.path(), engine);
    let written = store
        .transact(|tx: &mut dyn Txn| {
            tx.put(Table::Documents, b"sha", b"rx-9");
            Ok::<_, Error>("written")
        })
        .await;
    assert_eq!(written, Ok(Ok("written")));
    let read = store.transact(|tx| tx.get(Table::Documents, b"sha")).await;
    assert_eq!(read, Ok(Ok(Some(b"rx-9".to_vec()))));
}

/// Many writers at once, so that batches are run while earlier ones are still being flushed:
/// every read and scan must see every earlier commit and deletion, whether the batch's overlay
/// or the tree holds it.
async fn reads_see_the_batches_still_being_flushed(engine: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    fn item(n: u64) -> Vec<u8> {
        format!("item/{n:08}").into_bytes()
    }
    in_parallel(&store, 64, 50, |tx| {
        let n = counter(tx)?;
        // Exactly the last two items: every earlier put and delete seen.
        let seen: Vec<Vec<u8>> = tx
            .scan_prefix(Table::Meta, b"item/", usize::MAX)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let expected: Vec<Vec<u8>> = (n.saturating_sub(2)..n).map(item).collect();
        assert_eq!(seen, expected, "at {n}");
        tx.put(Table::Meta, &item(n), b"");
        if n >= 2 {
            tx.delete(Table::Meta, &item(n - 2));
        }
        tx.put(Table::Meta, b"counter", &(n + 1).to_be_bytes());
        Ok(())
    })
    .await;
    assert_eq!(stored_counter(&store).await, 3200);
    let stats = store.stats();
    assert!(
        stats.flushes > 1 && stats.flushes < stats.commits,
        "{stats:?}"
    );
}

/// A read that sees a write already in the tree but not yet flushed is answered only after the
/// flush that makes it durable: readers poll a key while one writer commits it, and a reader
/// that sees it must find a flush already counted.
async fn a_read_of_a_write_not_yet_durable_waits_for_its_flush(engine: EngineKind) {
    const READERS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), engine);
    assert_eq!(store.stats().flushes, 0);
    // Every reader has read the key's absence once before the write is submitted.
    let started = Arc::new(tokio::sync::Barrier::new(READERS + 1));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (store, started) = (Arc::clone(&store), Arc::clone(&started));
            tokio::spawn(async move {
                assert_eq!(get(&store, Table::Meta, b"k").await, None);
                started.wait().await;
                while get(&store, Table::Meta, b"k").await.is_none() {}
                store.stats().flushes
            })
        })
        .collect();
    started.wait().await;
    put(&store, Table::Meta, b"k", b"v").await;
    for reader in readers {
        let flushes = reader.await.unwrap();
        assert!(flushes >= 1, "answered with the write before any flush");
    }
}

/// Each test above, once per engine.
macro_rules! on_each_engine {
    ($($test:ident),* $(,)?) => {
        mod fjall {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(rxgate::store::EngineKind::Fjall).await
                }
            )*
        }
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(rxgate::store::EngineKind::Sled).await
                }
            )*
        }
    };
}

on_each_engine!(
    writes_are_visible_to_later_transactions,
    a_rolled_back_transaction_writes_nothing,
    a_panicking_transaction_writes_nothing_and_the_store_keeps_working,
    a_transaction_reads_its_own_writes,
    scans_merge_own_writes_in_key_order,
    acknowledged_writes_survive_close_and_drop,
    close_finishes_queued_transactions,
    concurrent_read_modify_write_increments_are_serial,
    exactly_one_of_racing_claims_wins,
    group_commit_flushes_less_often_than_it_commits,
    transactions_of_one_batch_see_each_others_writes,
    read_only_and_rolled_back_transactions_need_no_flush,
    sequences_increase_across_transactions_and_reopen,
    unique_numbers_increase_and_share_the_stored_counter,
    a_corrupt_sequence_is_reported,
    works_behind_dyn_store,
    reads_see_the_batches_still_being_flushed,
    a_read_of_a_write_not_yet_durable_waits_for_its_flush,
);

#[tokio::test]
async fn a_store_opens_in_the_engine_its_files_name_and_refuses_another() {
    for (engine, other) in [
        (EngineKind::Fjall, EngineKind::Sled),
        (EngineKind::Sled, EngineKind::Fjall),
    ] {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(EngineKind::found_in(dir.path()), Ok(None));
        {
            let store = open(dir.path(), engine);
            put(&store, Table::Meta, b"kept", engine.to_string().as_bytes()).await;
            store.close().expect("close");
        }
        assert_eq!(EngineKind::found_in(dir.path()), Ok(Some(engine)));
        // Unset, the engine is the one the files name, and the data is there.
        let store = EmbeddedStore::open_with(dir.path(), None, DEFAULT_CACHE_MIB).expect("open");
        assert_eq!(store.engine(), engine);
        assert_eq!(
            get(&store, Table::Meta, b"kept").await,
            Some(engine.to_string().into_bytes())
        );
        store.close().expect("close");
        drop(store);
        // Another engine is refused, not opened empty beside the store.
        let refused = EmbeddedStore::open_with(dir.path(), Some(other), DEFAULT_CACHE_MIB)
            .err()
            .expect("refused");
        assert_eq!(
            refused.to_string(),
            format!(
                "storage engine error: {} holds a {engine} store, not a {other} one",
                dir.path().display()
            )
        );
    }
    // A new folder gets fjall.
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).expect("open");
    assert_eq!(store.engine(), EngineKind::Fjall);
}
