//! Findings of the review of issue 29 (many gateways, one database), each pinned by a test that
//! failed on the code reviewed: the last run of a function that kept conflicting, meant to run
//! alone in the fleet, took its SERIALIZABLE snapshot before it waited for the other gateways'
//! runs to end, so it read what they had since overwritten and lost to them once more. On a real
//! cluster (`common::postgres`), skipped when PostgreSQL is not installed, except under CI.

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};

use rxgate::store::{Error, MAX_ATTEMPTS, Store, Table};

use crate::common::postgres::installed;
use crate::postgres::{database_name, open};

fn number(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()))
}

/// Gateway A's function conflicts on every run but the last (a session holds a row it writes);
/// its last run must wait for gateway B's run, which began before it and overwrites the row the
/// last run reads, and must then see B's write: it runs after B, alone, and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_run_alone_in_the_fleet_reads_what_the_runs_it_waited_for_wrote() {
    let Some(cluster) = installed() else { return };
    let config = cluster.database();
    let database = database_name(&config);
    cluster.sql_in(
        &database,
        "INSERT INTO rxgate.meta VALUES ('\\x78', '\\x0000000000000000'), ('\\x79', '\\x00')",
    );
    let (a, b) = (open(&config).await.unwrap(), open(&config).await.unwrap());

    // A session holds y: each run of A's that writes y meets the row lock and conflicts.
    let mut holder = cluster.session(&database);
    let mut said = BufReader::new(holder.stdout.take().unwrap()).lines();
    writeln!(
        holder.stdin.as_ref().unwrap(),
        "BEGIN; SELECT 'held' FROM rxgate.meta WHERE k = '\\x79' FOR UPDATE;"
    )
    .unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "held");

    // B's run is under way (it has read x) when A's last run begins.
    let (began, go) = (mpsc::channel(), mpsc::channel::<()>());
    let (began_tx, began_rx) = began;
    let (go_tx, go_rx) = go;
    let go_rx = std::sync::Mutex::new(go_rx);
    let b_run = b.transact(move |tx| {
        let x = number(tx.get(Table::Meta, b"x")?);
        began_tx.send(()).unwrap();
        go_rx.lock().unwrap().recv().unwrap();
        tx.put(Table::Meta, b"x", &(x + 1).to_be_bytes());
        Ok::<_, Error>(())
    });
    let b_run = tokio::spawn(b_run);
    tokio::task::spawn_blocking(move || began_rx.recv().unwrap())
        .await
        .unwrap();

    let runs = Arc::new(AtomicU32::new(0));
    let a_run = a.transact({
        let runs = Arc::clone(&runs);
        move |tx| {
            if runs.fetch_add(1, Ordering::SeqCst) + 1 < MAX_ATTEMPTS {
                tx.put(Table::Meta, b"y", b"a");
            } else {
                let x = number(tx.get(Table::Meta, b"x")?);
                tx.put(Table::Meta, b"x", &(x + 1).to_be_bytes());
            }
            Ok::<_, Error>(())
        }
    });
    let a_run = tokio::spawn(a_run);
    // A's last run waits for its turn, behind B (a lock, not a row's: it has written none).
    let waits = "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock' \
                 AND wait_event NOT IN ('transactionid', 'tuple')";
    let last_waits = {
        let (a, database) = (Arc::clone(&a), database.clone());
        move || {
            a.stats().retries == u64::from(MAX_ATTEMPTS - 1)
                && cluster.sql_in(&database, waits).trim() != "0"
        }
    };
    tokio::task::spawn_blocking(move || {
        while !last_waits() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    })
    .await
    .unwrap();
    go_tx.send(()).unwrap();
    b_run.await.unwrap().unwrap().unwrap();
    let last = a_run.await.unwrap();
    assert!(matches!(last, Ok(Ok(()))), "the last run lost: {last:?}");
    let x = a.transact(|tx| tx.get(Table::Meta, b"x")).await.unwrap();
    assert_eq!(number(x.unwrap()), 2, "both increments count");

    writeln!(holder.stdin.take().unwrap(), "ROLLBACK;").unwrap();
    holder.wait().unwrap();
    for store in [a, b] {
        tokio::task::spawn_blocking(move || store.close())
            .await
            .unwrap();
    }
}
