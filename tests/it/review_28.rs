//! Findings of the review of issue 28 (the store on PostgreSQL), each pinned by a test that
//! failed on the code reviewed: a socket host with a TCP `hostaddr` reached the server in plain
//! text; an export's REPEATABLE READ snapshot could hold a state that no serial order passes
//! through; a panic in the engine outside the function's own handed its connection back to the
//! pool inside its transaction; `config check` did not read the files `[postgres]` names; a URL
//! of Unix sockets only could not connect unless it said `sslmode=disable`; an import into
//! PostgreSQL wrote a layout-1 dump's clear patient keys into its keys. On a real cluster
//! (`common::postgres`), skipped, saying so, when PostgreSQL is not installed, except under CI.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};

use rxgate::{
    service::columns_of,
    store::{Columns, Error, PostgresConfig, Store, Table},
};

use crate::common::postgres::{Cluster, installed};
use crate::postgres::{database_name, open};
use crate::pseudonymized_keys::{fixture_canonical, unpack_layout_1};
use crate::store_dump::{args, export, rxgate, text};
use crate::store_postgres_moves::on_postgres;

/// `config`'s database, port and user as a key=value URL that reaches them through `hosts`
/// (`config.url` is `postgresql://USER@HOST:PORT/DATABASE`).
fn reached_through(config: &PostgresConfig, hosts: &str) -> String {
    let authority = config.url.rsplit('/').nth(1).unwrap();
    let port = authority.rsplit(':').next().unwrap();
    let database = database_name(config);
    format!("{hosts} port={port} user=rxgate_app dbname={database}")
}

/// tokio-postgres connects to `hostaddr` over TCP whatever `host` names, and verifies TLS
/// against `host`: a socket path there made `validate` take the connection for a local one and
/// let `sslmode=disable` through, so the password exchange went over TCP in plain text.
#[tokio::test]
async fn a_tcp_hostaddr_behind_a_socket_host_is_not_reached_in_plain_text() {
    let Some(cluster) = installed() else { return };
    let config = cluster.database();
    let mut plain = config.clone();
    let through = reached_through(&config, "host=/nonexistent hostaddr=127.0.0.1");
    plain.url = format!("{through} sslmode=disable");
    let why = open(&plain).await.err().unwrap().to_string();
    // The cluster takes TCP connections with TLS only: a plain one is refused by its pg_hba.
    assert!(
        !why.contains("no encryption"),
        "the server was reached in plain text: {why}"
    );
    assert!(why.contains("must be TLS"), "{why}");
    assert!(plain.validate().is_err());
}

/// A URL of Unix sockets only takes no TLS settings (`ca_file` is required only over TCP),
/// but the engine asked every server for TLS unless the URL said `sslmode=disable`, and a
/// server never speaks TLS on a socket: such a URL could not connect.
#[tokio::test]
async fn a_unix_socket_url_connects_without_naming_an_sslmode() {
    let Some(cluster) = installed() else { return };
    let config = cluster.database();
    let mut local = config.clone();
    let socket = format!("host={}", cluster.socket_dir().display());
    local.url = reached_through(&config, &socket);
    local.ca_file = None;
    local.validate().unwrap();
    let store = open(&local).await.unwrap();
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
}

/// The read-only anomaly: a function that read `x` before another wrote it precedes that
/// writer in the serial order, so a view that holds the writer must hold it too. Under
/// REPEATABLE READ a snapshot taken between the two commits held the later without the earlier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_holds_no_state_that_the_serial_order_never_passed_through() {
    let Some(cluster) = installed() else { return };
    let config = cluster.database();
    let store = open(&config).await.unwrap();
    let (read, was_read) = mpsc::channel::<()>();
    let (release, released) = mpsc::channel::<()>();
    let (read, released) = (Mutex::new(read), Mutex::new(released));
    let paused = AtomicBool::new(false);
    // Reads x, then (on its first run only) waits, in its transaction, for the test's word.
    let earlier = store.transact(move |tx| {
        let seen = tx.get(Table::Meta, b"x")?;
        if !paused.swap(true, Ordering::SeqCst) {
            read.lock().unwrap().send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
        }
        tx.put(
            Table::Clinical,
            b"y",
            seen.as_deref().unwrap_or(&b"none"[..]),
        );
        Ok::<_, Error>(())
    });
    tokio::task::spawn_blocking(move || was_read.recv().unwrap())
        .await
        .unwrap();
    store
        .transact(|tx| {
            tx.put(Table::Meta, b"x", b"written");
            Ok::<_, Error>(())
        })
        .await
        .unwrap()
        .unwrap();
    let mut taking = store.snapshot();
    let early = loop {
        tokio::select! {
            biased;
            taken = &mut taking => break Some(taken),
            waiting = waits_for_a_safe_snapshot(cluster, database_name(&config)) => {
                if waiting {
                    break None;
                }
            }
        }
    };
    release.send(()).unwrap();
    earlier.await.unwrap().unwrap();
    let snapshot = match early {
        Some(taken) => taken,
        None => taking.await,
    }
    .unwrap();
    let (x, y) = tokio::task::spawn_blocking(move || {
        let find = |table, key: &[u8]| {
            (snapshot.entries(table).map(Result::unwrap))
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
        };
        (find(Table::Meta, b"x"), find(Table::Clinical, b"y"))
    })
    .await
    .unwrap();
    let y_now = store
        .transact(|tx| tx.get(Table::Clinical, b"y"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        y_now.as_deref(),
        Some(&b"none"[..]),
        "y's writer read x first"
    );
    assert!(
        x.is_none() || y.is_some(),
        "the snapshot holds x's writer without y's, which precedes it: {x:?} {y:?}"
    );
}

/// Whether a session of `database` waits for a safe snapshot (SERIALIZABLE READ ONLY
/// DEFERRABLE, waiting for the read-write transactions it began beside to end).
async fn waits_for_a_safe_snapshot(cluster: &'static Cluster, database: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let sql = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event = 'SafeSnapshot'";
        cluster.sql_in(&database, sql).trim() != "0"
    })
    .await
    .unwrap()
}

/// A panic in the engine while it sends a run's writes (here a row with fewer values than its
/// table declares) unwound past the function's own `catch_unwind` and handed the connection
/// back to the pool inside its transaction: the next function on it ran in that transaction,
/// on its old snapshot, and missed what had committed since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_writing_does_not_hand_the_next_function_its_open_transaction() {
    let Some(cluster) = installed() else { return };
    let mut config = cluster.database();
    config.pool_size = 1;
    let store = open(&config).await.unwrap();
    let failed = store
        .transact(|tx| {
            tx.get(Table::Meta, b"x")?;
            let columns = Columns {
                declared: columns_of(Table::Prescriptions),
                values: &[],
            };
            tx.put_row(Table::Prescriptions, b"p", b"v", columns);
            Ok::<_, Error>(())
        })
        .await;
    assert!(failed.is_err(), "{failed:?}");
    cluster.sql_in(
        &database_name(&config),
        "INSERT INTO rxgate.meta VALUES ('\\x78', '\\x31')",
    );
    let seen = store
        .transact(|tx| tx.get(Table::Meta, b"x"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.as_deref(), Some(&b"1"[..]), "committed before it ran");
    let written = cluster.sql_in(
        &database_name(&config),
        "SELECT count(*) FROM rxgate.prescriptions",
    );
    assert_eq!(written, "0\n");
}

/// docs/POSTGRES.md: "`rxgate config check` reads the section and the files it names". It
/// read neither the password file nor the CA: a gateway so configured failed only at start.
#[tokio::test]
async fn config_check_reads_the_files_the_postgres_section_names() {
    let dir = tempfile::tempdir().unwrap();
    let (password, ca) = (
        dir.path().join("no-such-password"),
        dir.path().join("ca.pem"),
    );
    fs::write(&ca, "").unwrap();
    let section: PostgresConfig = toml::from_str(&format!(
        "url = \"postgresql://rxgate_app@127.0.0.1:5432/rxgate\"\n\
         password_file = {:?}\nca_file = {:?}\n",
        password.display().to_string(),
        ca.display().to_string(),
    ))
    .unwrap();
    let (config, _) = on_postgres(dir.path(), &section);
    let out = rxgate(args(&[&"config", &"check", &config])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no-such-password"), "{}", text(&out));
    // With the password there, the empty CA file is the next thing refused.
    fs::write(&password, "secret\n").unwrap();
    let out = rxgate(args(&[&"config", &"check", &config])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no certificate"), "{}", text(&out));
    assert!(!text(&out).contains("secret"), "{}", text(&out));
}

/// Issue 28: patient identifiers stay out of indexed columns (a key is one, and is written to
/// the WAL and so to every archive and base backup). A dump of a layout-1 store keys patients by
/// their canonical key; imported into PostgreSQL, those keys went in as they were, to be
/// rewritten only by the first gateway's start: the import must write pseudonyms (or refuse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_postgres_writes_no_clear_patient_key() {
    let Some(cluster) = installed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = unpack_layout_1(dir.path());
    let dump = dir.path().join("layout-1.dump");
    export(&store, &dump).await;
    let gateway = dir.path().join("gateway");
    fs::create_dir(&gateway).unwrap();
    let database = cluster.database();
    let (config, _) = on_postgres(&gateway, &database);
    let imported = rxgate(args(&[
        &"store",
        &"import",
        &"--engine",
        &"postgres",
        &"--config",
        &config,
        &dump,
    ]))
    .await;
    // The keys of every table that hold `clear`'s bytes, counted.
    let holding = |clear: &str| {
        let counts = Table::ALL.map(|t| {
            let table = rxgate::store::dump::name(t);
            format!("(SELECT count(*) FROM rxgate.{table} WHERE position('{clear}' in k) > 0)")
        });
        format!("SELECT {}", counts.join(" + "))
    };
    for number in ["345", "401", "403"] {
        let clear = fixture_canonical(number);
        let keys = cluster.sql_in(&database_name(&database), &holding(&clear));
        assert_eq!(
            keys,
            "0\n",
            "keys hold {clear} in clear: {}",
            text(&imported)
        );
    }
    // Refused before its first clear key, saying how to bring such a store in.
    assert!(!imported.status.success());
    assert!(
        text(&imported).contains("start a gateway on it once"),
        "{}",
        text(&imported)
    );
}
