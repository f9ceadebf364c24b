//! The PostgreSQL engine's own promises, on a real cluster (`common::postgres`): the schema comes
//! from versioned migrations that match the columns the service declares, the gateway's role
//! cannot change it, a schema of another version is refused with what to do, the connection is
//! TLS with the server's certificate and host verified, and conflicting transactions are re-run
//! until they serialize. Skipped, saying so, when PostgreSQL is not installed, except under CI.

use std::sync::Arc;

use rxgate::{
    service::columns_of,
    store::{
        ColumnType, Columns, Error, PgStore, PostgresConfig, SCHEMA_VERSION, Store, Table, Value,
    },
};

use crate::common::postgres::{self, Cluster, installed as cluster};

/// Opens the store in `config`'s database, off the async runtime.
pub(crate) async fn open(config: &PostgresConfig) -> Result<Arc<PgStore>, Error> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || PgStore::open(&config, columns_of).map(Arc::new))
        .await
        .unwrap()
}

pub(crate) fn database_name(config: &PostgresConfig) -> String {
    config.url.rsplit('/').next().unwrap().to_owned()
}

/// Runs `sql` in `config`'s database as the superuser.
fn sql_in(cluster: &Cluster, config: &PostgresConfig, sql: &str) -> String {
    cluster.sql_in(&database_name(config), sql)
}

/// Closes `store` off the async runtime, as closing waits for its threads.
pub(crate) async fn close(store: Arc<PgStore>) {
    tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_migrated_tables_have_the_columns_the_service_declares() {
    let Some(cluster) = cluster() else { return };
    let config = cluster.database();
    let listed = sql_in(
        cluster,
        &config,
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_schema = 'rxgate' \
         AND table_name NOT IN ('schema_version', 'import_unfinished') \
         ORDER BY table_name, ordinal_position",
    );
    for table in Table::ALL {
        let name = format!("{table:?}");
        let mut expected = vec![
            ("k".to_owned(), "bytea", "NO"),
            ("v".to_owned(), "bytea", "NO"),
        ];
        for column in columns_of(table) {
            let kind = match column.kind {
                rxgate::store::ColumnType::Text => "text",
                rxgate::store::ColumnType::Integer => "bigint",
                rxgate::store::ColumnType::Date => "date",
                rxgate::store::ColumnType::Bytes => "bytea",
            };
            let nullable = if column.nullable { "YES" } else { "NO" };
            expected.push((column.name.to_owned(), kind, nullable));
        }
        let sql_name = snake(&name);
        let found: Vec<(String, &str, &str)> = listed
            .lines()
            .filter_map(|l| {
                let parts: Vec<&str> = l.split('|').collect();
                (parts[0] == sql_name).then(|| (parts[1].to_owned(), parts[2], parts[3]))
            })
            .collect();
        assert_eq!(found, expected, "table {name} ({sql_name})");
    }
}

/// `ByExchange` → `by_exchange`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[tokio::test]
async fn migrating_again_changes_nothing_and_the_gateway_role_cannot_change_the_schema() {
    let Some(cluster) = cluster() else { return };
    let config = cluster.database();
    let migrator = cluster.migrator();
    let again = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || PgStore::migrate(&config, Some(&migrator)))
    };
    let again = again.await.unwrap().unwrap();
    assert_eq!((again.from, again.to), (SCHEMA_VERSION, SCHEMA_VERSION));
    // The gateway's own role may change nothing: it owns no table and may create none.
    let refused = cluster.as_app(
        &database_name(&config),
        "CREATE TABLE rxgate.intruder (x int)",
    );
    assert!(refused.contains("permission denied"), "{refused}");
    let refused = cluster.as_app(&database_name(&config), "DROP TABLE rxgate.meta");
    assert!(refused.contains("must be owner"), "{refused}");
}

#[tokio::test]
async fn a_database_without_the_schema_or_with_a_newer_one_is_refused_with_what_to_do() {
    let Some(cluster) = cluster() else { return };
    let empty = cluster.empty_database();
    let refused = open(&empty).await.err().unwrap().to_string();
    assert!(refused.contains("run `rxgate store migrate`"), "{refused}");

    let newer = cluster.database();
    let next = SCHEMA_VERSION + 1;
    sql_in(
        cluster,
        &newer,
        &format!("INSERT INTO rxgate.schema_version (version) VALUES ({next})"),
    );
    let refused = open(&newer).await.err().unwrap().to_string();
    assert!(refused.contains("newer than this rxgate"), "{refused}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_or_for_another_host_is_refused() {
    let Some(cluster) = cluster() else { return };
    let good = cluster.database();
    close(open(&good).await.unwrap()).await;
    let other_ca = tempfile::tempdir().unwrap();
    let ca = postgres::certificate_authority(other_ca.path(), "another CA");
    let mut untrusted = good.clone();
    untrusted.ca_file = Some(ca);
    let refused = open(&untrusted).await.err().unwrap().to_string();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    // The certificate names 127.0.0.1 only: reached as "localhost", the host does not match.
    let mut other_host = good.clone();
    other_host.url = good.url.replace("127.0.0.1", "localhost");
    let refused = open(&other_host).await.err().unwrap().to_string();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
}

#[tokio::test]
async fn conflicting_read_modify_writes_are_re_run_until_each_counts_once() {
    let Some(cluster) = cluster() else { return };
    let store = open(&cluster.database()).await.unwrap();
    let increments = 64;
    let mut running = Vec::new();
    for _ in 0..increments {
        running.push(store.transact(|tx| {
            let now = tx
                .get(Table::Meta, b"counter")?
                .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
            tx.put(Table::Meta, b"counter", &(now + 1).to_be_bytes());
            Ok::<_, Error>(())
        }));
    }
    let mut unavailable = 0;
    for answer in running {
        match answer.await {
            Ok(done) => done.unwrap(),
            Err(Error::Unavailable(_)) => unavailable += 1,
            Err(other) => panic!("{other}"),
        }
    }
    let counted = store
        .transact(|tx| tx.get(Table::Meta, b"counter"))
        .await
        .unwrap()
        .unwrap()
        .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
        .unwrap();
    assert_eq!(
        counted,
        increments - unavailable,
        "every committed increment counts once"
    );
    assert!(unavailable < increments / 2, "{unavailable} gave up");
    assert!(
        store.stats().retries > 0,
        "the increments conflicted and were re-run"
    );
    close(store).await;
}

#[tokio::test]
async fn a_database_marked_as_holding_part_of_an_import_is_refused_until_the_mark_goes() {
    let Some(cluster) = cluster() else { return };
    let config = cluster.database();
    let store = open(&config).await.unwrap();
    let marking = Arc::clone(&store);
    tokio::task::spawn_blocking(move || marking.mark_import(true))
        .await
        .unwrap()
        .unwrap();
    close(store).await;
    let refused = open(&config).await.err().unwrap().to_string();
    assert!(refused.contains("did not finish"), "{refused}");
    sql_in(cluster, &config, "DELETE FROM rxgate.import_unfinished");
    close(open(&config).await.unwrap()).await;
}

#[tokio::test]
async fn a_database_upgraded_to_the_sequence_of_unique_numbers_draws_past_its_counters() {
    let Some(cluster) = cluster() else { return };
    let config = cluster.database();
    // Back to version 2, whose unique numbers came from the counter rows: one has given 500.
    sql_in(
        cluster,
        &config,
        "DROP FUNCTION rxgate.draws_past_counters(); DROP SEQUENCE rxgate.draws; \
         DROP TABLE rxgate.turns; DELETE FROM rxgate.schema_version WHERE version >= 3; \
         INSERT INTO rxgate.meta (k, v) VALUES ('sequence/intake'::bytea, '\\x00000000000001f4')",
    );
    let migrator = cluster.migrator();
    let upgraded = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || PgStore::migrate(&config, Some(&migrator)))
    };
    let upgraded = upgraded.await.unwrap().unwrap();
    assert_eq!((upgraded.from, upgraded.to), (2, SCHEMA_VERSION));
    let store = open(&config).await.unwrap();
    let drawn = store
        .transact(|tx| tx.unique_sequence("intake"))
        .await
        .unwrap()
        .unwrap();
    assert!(drawn > 500, "drew {drawn}, a number the store gave before");
    close(store).await;
}

#[tokio::test]
async fn an_audit_record_written_again_under_its_key_is_refused_not_replaced() {
    let Some(cluster) = cluster() else { return };
    let config = cluster.database();
    let store = open(&config).await.unwrap();
    let write = |value: &'static [u8]| {
        store.transact(move |tx| {
            let declared = columns_of(Table::Audit);
            let values: Vec<Value<'_>> = declared
                .iter()
                .map(|c| match c.kind {
                    _ if c.nullable => Value::Null,
                    ColumnType::Text => Value::Text("x"),
                    ColumnType::Integer => Value::Integer(1),
                    ColumnType::Date => Value::Date("2026-12-07"),
                    ColumnType::Bytes => Value::Bytes(b"x"),
                })
                .collect();
            let columns = Columns {
                declared,
                values: &values,
            };
            tx.put_row(Table::Audit, b"link", value, columns);
            Ok::<_, Error>(())
        })
    };
    write(b"first").await.unwrap().unwrap();
    let again = write(b"second").await;
    assert!(
        matches!(&again, Err(Error::Engine(why)) if why.contains("23505")),
        "{again:?}"
    );
    let kept = store
        .transact(|tx| tx.get(Table::Audit, b"link"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.as_deref(), Some(b"first".as_slice()));
    close(store).await;
}
