//! Moving a store into PostgreSQL and out again (issue 28, item 4), through the real binary on
//! a real cluster (`common::postgres`): a fjall store that a gateway filled is exported,
//! imported into a migrated database, verified there, exported again with the same manifest,
//! imported into fjall and verified with its audit chain; a gateway serves the moved store; the
//! queries docs/POSTGRES.md documents run on it. `store migrate` applies the schema once,
//! refuses a newer one and a role without the right, and no command prints a password. Skipped,
//! saying so, when PostgreSQL is not installed, except under CI.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Output,
};

use rxgate::{
    store::{EmbeddedStore, EngineKind, PostgresConfig},
    wire::proto::v1 as pb,
};

use crate::common::{
    dev_pki,
    postgres::{Cluster, installed},
    process::{Rxgate, Serve},
};
use crate::lifecycle::serve_configured;
use crate::store_damage::{clinic, register, serving, stop};
use crate::store_dump::{Load, args, export, rxgate, text};
use crate::store_verify::populated_store;

/// A gateway's configuration on `database`: examples/rxgate.toml with `store_engine =
/// "postgres"` and the database's `[postgres]` section, written to `dir/rxgate.toml` (its
/// acknowledged mark kept in `dir/store`); and `serve` on it.
pub(crate) fn on_postgres(dir: &Path, database: &PostgresConfig) -> (PathBuf, Serve) {
    let serve = serve_configured(dir, "store_engine = \"postgres\"");
    let path = dir.join("rxgate.toml");
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    let path_of = |p: &Option<PathBuf>| p.as_ref().unwrap().display().to_string();
    write!(
        file,
        "\n[postgres]\nurl = {:?}\npassword_file = {:?}\nca_file = {:?}\npool_size = {}\n",
        database.url,
        path_of(&database.password_file),
        path_of(&database.ca_file),
        database.pool_size,
    )
    .unwrap();
    (path, serve)
}

fn database_name(database: &PostgresConfig) -> String {
    database.url.rsplit('/').next().unwrap().to_owned()
}

/// `rxgate store migrate --config CONFIG` as the cluster's migration role.
async fn migrate(cluster: &Cluster, config: &Path) -> Output {
    let owner = cluster.migrator();
    let password = owner.password_file.unwrap();
    let role = owner.user;
    rxgate(args(&[
        &"store",
        &"migrate",
        &"--config",
        &config,
        &"--as",
        &role,
        &"--password-file",
        &password,
    ]))
    .await
}

/// `rxgate store import --engine postgres --config CONFIG DUMP`.
async fn import_into_postgres(config: &Path, dump: &Path) -> Output {
    load_into_postgres("import", config, dump).await
}

/// `rxgate store VERB --engine postgres --config CONFIG DUMP` (import, or restore).
async fn load_into_postgres(verb: &str, config: &Path, dump: &Path) -> Output {
    rxgate(args(&[
        &"store",
        &verb,
        &"--engine",
        &"postgres",
        &"--config",
        &config,
        &dump,
    ]))
    .await
}

/// `rxgate ARGS`, which must succeed; its standard output.
async fn succeeds(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let args = args(parts);
    let out = rxgate(args.clone()).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit code 2, saying `why`.
fn refused(out: &Output, why: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    assert!(text(out).contains(why), "{}", text(out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_moves_into_postgresql_and_back_with_the_same_manifest_and_a_sound_audit_chain() {
    let Some(cluster) = installed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    fs::create_dir(&source).unwrap();
    let fjall = populated_store(&source, EngineKind::Fjall).await;
    let first_dump = dir.path().join("fjall.dump");
    let manifest = export(&fjall, &first_dump).await;

    let database = cluster.empty_database();
    let gateway_dir = dir.path().join("gateway");
    fs::create_dir(&gateway_dir).unwrap();
    let (config, serve) = on_postgres(&gateway_dir, &database);
    let migrated = migrate(cluster, &config).await;
    assert!(migrated.status.success(), "{}", text(&migrated));
    let imported = import_into_postgres(&config, &first_dump).await;
    assert!(imported.status.success(), "{}", text(&imported));
    assert_eq!(String::from_utf8_lossy(&imported.stdout), manifest);

    let verdict = succeeds(&[&"store", &"verify", &"--config", &config]).await;
    assert!(verdict.starts_with("sound"), "{verdict}");
    let second_dump = dir.path().join("postgres.dump");
    let again = succeeds(&[&"store", &"export", &"--config", &config, &second_dump]).await;
    assert_eq!(again, manifest, "the manifests (counts and hashes) differ");

    let back = dir.path().join("back");
    assert_eq!(sound_in_fjall(&second_dump, &back).await, manifest);

    the_documented_queries_run(cluster, &database_name(&database));
    a_gateway_serves_the_moved_store(cluster, &database, serve).await;
}

/// Imports `dump` into a new fjall store in `back`, which `store verify` finds sound and whose
/// audit chain `audit verify` finds intact; the import's manifest.
async fn sound_in_fjall(dump: &Path, back: &Path) -> String {
    let manifest = succeeds(&[
        &"store",
        &"import",
        &"--data-dir",
        &back,
        &"--engine",
        &"fjall",
        &dump,
    ])
    .await;
    let cert = dev_pki().gateway().cert;
    for (command, verdict) in [("store", "sound"), ("audit", "intact")] {
        let said = succeeds(&[
            &command,
            &"verify",
            &"--data-dir",
            &back,
            &"--gateway-cert",
            &cert,
        ])
        .await;
        assert!(said.starts_with(verdict), "{command} verify: {said}");
    }
    manifest
}

/// The patients each gateway of the tests below registers a prescription for (each
/// registration records the patient's consent under a number drawn for it).
const PATIENTS: u32 = 4;

/// Registers a prescription for each of the first [`PATIENTS`] patients through `gateway`
/// (numbers prefixed by `prefix`), and stops it.
async fn register_patients(gateway: Rxgate, prefix: &str) {
    let mut clinic = clinic(&gateway).await;
    for n in 0..PATIENTS {
        register(&mut clinic, &format!("{prefix}-{n}"), n).await;
    }
    stop(gateway).await;
}

/// The entries of `table` a dump's manifest (as the commands print it) counts.
fn entries(manifest: &str, table: &str) -> usize {
    (manifest.lines())
        .find_map(|l| l.strip_prefix(&format!("{table} ")))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {table} in {manifest}"))
}

/// `Clinical` holds one check budget per patient and one consent per registration: after the
/// same patients registered again, `after` holds one more consent each than `before`, unless a
/// consent was written over (its number drawn again).
fn no_consent_written_over(before: &str, after: &str) {
    assert_eq!(
        entries(after, "clinical"),
        entries(before, "clinical") + PATIENTS as usize,
        "a registration wrote over an earlier consent: {before}\n{after}"
    );
}

/// Registers the same patients again through `serve`, a gateway on the database of `config`,
/// whose export then holds no consent written over since the export that printed `before`.
async fn registers_again_on_postgres(serve: Serve, config: &Path, before: &str) {
    register_patients(serve.start().await, "AGAIN").await;
    let dump = config.with_file_name("again.dump");
    let again = succeeds(&[&"store", &"export", &"--config", &config, &dump]).await;
    no_consent_written_over(before, &again);
}

/// The highest number of a consent in a database (the last 8 bytes of a key under `consent\0`).
const HIGHEST_CONSENT: &str = "SELECT max(('x' || encode(substring(k from length(k) - 7), \
     'hex'))::bit(64)::bigint) FROM rxgate.clinical \
     WHERE k >= '\\x636f6e73656e7400'::bytea AND k < '\\x636f6e73656e7401'::bytea";

/// A gateway on PostgreSQL draws its consents' numbers from the database sequence, and leaves
/// the counter rows behind them. Its dump loaded into fjall has its counters raised past the
/// numbers its keys hold: `store verify` finds it sound, and a gateway on it registers for the
/// same patients again without writing over any consent. The same dump imported into another
/// database moves that database's sequence past them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_postgresql_loaded_anywhere_draws_no_consent_number_again() {
    let Some(cluster) = installed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let source = cluster.database();
    let (config, serve) = on_postgres(dir.path(), &source);
    register_patients(serve.start().await, "PG").await;
    let dump = dir.path().join("postgres.dump");
    let exported = succeeds(&[&"store", &"export", &"--config", &config, &dump]).await;

    let fjall = dir.path().join("fjall");
    fs::create_dir(&fjall).unwrap();
    sound_in_fjall(&dump, &fjall.join("store")).await;
    register_patients(serve_configured(&fjall, "").start().await, "FJALL").await;
    let again = export(&fjall.join("store"), &dir.path().join("fjall.dump")).await;
    no_consent_written_over(&exported, &again);

    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let database = cluster.database();
    let (config, serve) = on_postgres(&other, &database);
    let imported = import_into_postgres(&config, &dump).await;
    assert!(imported.status.success(), "{}", text(&imported));
    let number = |database: &PostgresConfig, sql: &str| -> u64 {
        let answer = cluster.sql_in(&database_name(database), sql);
        answer.trim().parse().unwrap()
    };
    let drawn = number(&database, "SELECT last_value FROM rxgate.draws");
    let consent = number(&source, HIGHEST_CONSENT);
    assert!(
        drawn >= consent,
        "the import left the database sequence at {drawn}, below consent {consent}"
    );
    registers_again_on_postgres(serve, &config, &exported).await;
}

/// A fjall store's consents moved into PostgreSQL: the import moves the database sequence past
/// the counters it loaded, so a gateway on the database registers for the same patients again
/// without writing over any consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_store_moved_into_postgresql_draws_no_consent_number_again() {
    let Some(cluster) = installed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, gateway) = serving(dir.path(), EngineKind::Fjall).await;
    register_patients(gateway, "FJALL").await;
    let dump = dir.path().join("fjall.dump");
    let exported = export(&store, &dump).await;

    let database = dir.path().join("database");
    fs::create_dir(&database).unwrap();
    let (config, serve) = on_postgres(&database, &cluster.empty_database());
    let migrated = migrate(cluster, &config).await;
    assert!(migrated.status.success(), "{}", text(&migrated));
    let imported = import_into_postgres(&config, &dump).await;
    assert!(imported.status.success(), "{}", text(&imported));
    registers_again_on_postgres(serve, &config, &exported).await;
}

/// An export of the database while clinics register through a gateway on it is one consistent
/// store (a snapshot, not pages read at different times): loaded into fjall it is sound (every
/// index with its record, no counter behind, the audit chain whole), and it holds at least
/// every registration acknowledged before the export began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_while_a_gateway_registers_is_one_consistent_store() {
    let Some(cluster) = installed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, serve) = on_postgres(dir.path(), &cluster.database());
    let gateway = serve.start().await;
    let load = Load::start(&gateway, 2);
    let before = load.acknowledged(20).await.len();
    let dump = dir.path().join("live.dump");
    let exported = rxgate(args(&[&"store", &"export", &"--config", &config, &dump])).await;
    let after = load.stop().await;
    stop(gateway).await;
    assert!(exported.status.success(), "{}", text(&exported));

    let manifest = sound_in_fjall(&dump, &dir.path().join("back")).await;
    let prescriptions = entries(&manifest, "prescriptions");
    assert!(
        (before..=after).contains(&prescriptions),
        "{prescriptions} exported; {before} acknowledged before, {after} in all"
    );
}

/// A gateway on the database answers the status of a prescription registered before the move.
async fn a_gateway_serves_the_moved_store(
    cluster: &Cluster,
    database: &PostgresConfig,
    serve: Serve,
) {
    let name = database_name(database);
    let id = cluster.sql_in(
        &name,
        "SELECT id FROM rxgate.prescriptions ORDER BY id LIMIT 1",
    );
    let gateway = serve.start().await;
    let status = clinic(&gateway)
        .await
        .get_prescription_status(pb::GetPrescriptionStatusRequest {
            prescription_id: id.trim().to_owned(),
        })
        .await;
    assert_eq!(status.unwrap().into_inner().prescription_id, id.trim());
    stop(gateway).await;
}

/// The reporting role of docs/POSTGRES.md, made as it says, in the database `name`; then every
/// ```sql block of the doc runs as that role, and those over the moved store's prescriptions,
/// dispensings, audit and events answer rows.
fn the_documented_queries_run(cluster: &Cluster, name: &str) {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/POSTGRES.md")).unwrap();
    let grants = doc
        .split("psql -d rxgate <<'SQL'\n")
        .nth(1)
        .and_then(|rest| rest.split("\nSQL\n").next())
        .expect("the doc makes the reporting role");
    cluster.sql_in(name, grants);
    let queries: Vec<&str> = doc
        .split("```sql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect();
    assert!(queries.len() >= 4, "the doc's queries: {queries:?}");
    let answered = queries
        .iter()
        .filter(|query| !cluster.sql_as("rxgate_report", name, query).is_empty())
        .count();
    assert!(
        answered >= 4,
        "only {answered} of the doc's queries answer rows"
    );
}

/// An import (or a restore) goes only into a migrated database that holds no rows: the refusal
/// names the table that holds some, and nothing is written. PostgreSQL is named by a
/// configuration, not a folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_database_not_migrated_or_not_empty_is_refused() {
    let Some(cluster) = installed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let empty_store = dir.path().join("empty");
    EmbeddedStore::open_with(&empty_store, Some(EngineKind::Fjall), 8)
        .unwrap()
        .close()
        .unwrap();
    let dump = dir.path().join("empty.dump");
    export(&empty_store, &dump).await;

    let folder = dir.path().join("folder");
    let by_folder = [
        &"store" as &dyn AsRef<std::ffi::OsStr>,
        &"import",
        &"--engine",
        &"postgres",
        &"--data-dir",
        &folder,
        &dump,
    ];
    refused(&rxgate(args(&by_folder)).await, "--config");

    let (unmigrated, _) = on_postgres(dir.path(), &cluster.empty_database());
    refused(
        &import_into_postgres(&unmigrated, &dump).await,
        "rxgate store migrate",
    );

    let database = cluster.database();
    let name = database_name(&database);
    let other = dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let (config, _) = on_postgres(&other, &database);
    cluster.sql_in(
        &name,
        "INSERT INTO rxgate.lockouts VALUES ('\\x01', '\\x02')",
    );
    for verb in ["import", "restore"] {
        refused(
            &load_into_postgres(verb, &config, &dump).await,
            "lockouts holds rows",
        );
    }
    assert_eq!(
        cluster.sql_in(&name, "SELECT count(*) FROM rxgate.meta"),
        "0\n"
    );
}

/// `store migrate` applies the schema once (a second run is a no-op), refuses a newer schema
/// and a role that may not create it (exit 2, with the reason), and neither it nor `config
/// check` ever prints a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_once_refuses_what_it_cannot_and_never_prints_a_password() {
    let Some(cluster) = installed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let database = cluster.empty_database();
    let name = database_name(&database);
    let (config, _) = on_postgres(dir.path(), &database);
    let app_password = database.password_file.clone().unwrap();
    let owner_password = cluster.migrator().password_file.unwrap();
    let mut outputs = vec![rxgate(args(&[&"config", &"check", &config])).await];

    let as_app = rxgate(args(&[
        &"store",
        &"migrate",
        &"--config",
        &config,
        &"--as",
        &"rxgate_app",
        &"--password-file",
        &app_password,
    ]))
    .await;
    refused(&as_app, "permission denied");
    outputs.push(as_app);

    let latest = rxgate::store::SCHEMA_VERSION;
    let first = migrate(cluster, &config).await;
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        format!("schema at version {latest} (was 0)\n")
    );
    let second = migrate(cluster, &config).await;
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        format!("schema at version {latest} (was {latest})\n")
    );
    cluster.sql_in(
        &name,
        "INSERT INTO rxgate.schema_version (version) VALUES (99)",
    );
    let newer = migrate(cluster, &config).await;
    refused(&newer, "99");
    outputs.extend([first, second, newer]);

    for secret in [&app_password, &owner_password] {
        let secret = fs::read_to_string(secret).unwrap();
        for out in &outputs {
            assert!(!text(out).contains(secret.trim()), "{}", text(out));
        }
    }
}
