//! A commit that waits for its synchronous standby, on a cluster of its own whose
//! `synchronous_standby_names` names a standby that never connects: the commit is written
//! locally and waits there, invisible. The gateway's `statement_timeout` must not end that wait
//! (PostgreSQL would then report the commit done, and the gateway acknowledge what no standby
//! holds, which a failover loses); a session ended during it answers UNAVAILABLE saying that
//! the outcome is unknown (the row is there afterwards: it committed); and the store's
//! readiness comes back by itself with the next answer. Skipped, saying so, when PostgreSQL is
//! not installed, except under CI.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

use rxgate::store::{Error, PgStore, Store, Table};

use crate::common::postgres::{Cluster, wanted_here};
use crate::postgres::{close, database_name, open};

/// The gateway's `statement_timeout` in this test: the wait must outlast it many times.
const STATEMENT_TIMEOUT_MS: u64 = 100;

/// Sets the cluster's `synchronous_standby_names`.
fn wait_for(cluster: &Cluster, standbys: &str) {
    cluster.sql(&format!(
        "ALTER SYSTEM SET synchronous_standby_names = '{standbys}'"
    ));
    cluster.sql("SELECT pg_reload_conf()");
}

/// The sessions of `database` that wait for a synchronous standby.
fn waiting_for_a_standby(cluster: &Cluster, database: &str) -> usize {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' \
         AND wait_event = 'SyncRep'"
    );
    cluster.sql(&sql).trim().parse().unwrap()
}

/// A write of `store`'s, once one waits for the standby, and the value it writes under
/// `unreplicated` (each try its own). `synchronous_standby_names` is in force only once the
/// server's processes have read it again (its checkpointer among them, which tells the others
/// that a standby is wanted): a commit made before that is acknowledged locally, and another is
/// tried. Fails if no write has waited within 30 s.
async fn until_a_commit_waits(
    store: &Arc<PgStore>,
    cluster: &Cluster,
    database: &str,
) -> (JoinHandle<Result<Result<(), Error>, Error>>, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0u32.. {
        let value = attempt.to_string().into_bytes();
        let written = value.clone();
        let waiting = tokio::spawn(store.transact(move |tx| {
            tx.put(Table::Meta, b"unreplicated", &written);
            Ok::<_, Error>(())
        }));
        while !waiting.is_finished() {
            if waiting_for_a_standby(cluster, database) > 0 {
                return (waiting, value);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Acknowledged before the setting was in force: it must at least have committed.
        waiting.await.unwrap().unwrap().unwrap();
        assert!(
            Instant::now() < deadline,
            "the commit never waited for the standby"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    unreachable!("tries run out before the deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_waiting_for_its_standby_is_not_acknowledged_and_if_cut_off_is_unknown() {
    if !wanted_here() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| Cluster::own("sync-commit", ""))
        .await
        .unwrap();
    let mut config = cluster.database();
    config.statement_timeout_ms = STATEMENT_TIMEOUT_MS;
    let database = database_name(&config);
    let store = open(&config).await.unwrap();
    wait_for(&cluster, "absent");

    let (waiting, value) = until_a_commit_waits(&store, &cluster, &database).await;
    tokio::time::sleep(Duration::from_millis(10 * STATEMENT_TIMEOUT_MS)).await;
    assert!(
        !waiting.is_finished(),
        "acknowledged without the standby: {:?}",
        waiting.await
    );

    cluster
        .sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'");
    let answer = waiting.await.unwrap();
    assert!(
        matches!(&answer, Err(Error::Unavailable(why)) if why.contains("the outcome is unknown")),
        "{answer:?}"
    );
    assert!(
        store.failure().is_some(),
        "readiness says the database was lost"
    );

    wait_for(&cluster, "");
    let kept = store
        .transact(|tx| tx.get(Table::Meta, b"unreplicated"))
        .await;
    assert_eq!(
        kept.unwrap().unwrap(),
        Some(value),
        "the write cut off committed"
    );
    assert!(store.failure().is_none(), "readiness came back by itself");
    close(store).await;
}
