//! No key of the store holds a patient identifier (issue 28): every key that names a patient
//! holds its keyed pseudonym under the gateway's `audit_pseudonym_key`, since an SQL engine
//! indexes keys and prints them in its server log. A store of layout 1, which held the
//! canonical patient key there, is migrated and then found as before; and the store is bound
//! to the pseudonym key it was built with, so a gateway with another is refused. The stores
//! are embedded ones (fjall), whose every key these tests can walk after a stop.

use crate::common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, UNIX_EPOCH},
};

use common::{Harness, dev_pki, line, patient, process::Serve, start_with};
use rxgate::{
    cli::demo::demo_prescription,
    config::Config,
    domain::patient::PatientKey,
    service::{Pseudonyms, layout, verify::SKIPPED_PATIENT_KEYS},
    store::{EmbeddedStore, EngineKind, Store, Table},
    wire::proto::v1::{self as pb, FindingKind, PrescriptionState as State},
};

/// The store written by the last build of layout 1 (`tests/data/upgrade/README.md`).
const LAYOUT_1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/upgrade/c52b027-fjall.tar.gz"
);

/// When the layout-1 fixture was written (2026-12-07 in Japan, the issue date of all it holds):
/// the clock of the checks against its history, which are of medications active that day.
const LAYOUT_1_WRITTEN: Duration = Duration::from_secs(1_796_598_600);

/// The prescriptions of the layout-1 fixture left REGISTERED and ACCEPTED (both of the dev
/// clinic 1310000001): number, id, patient's insurance number, exchange number.
const FIX_REGISTERED: (&str, &str, &str) =
    ("FIX-REGISTERED", "228d3cce41627b71f2bc14ec5d576baa", "401");
const FIX_RECEIVED: (&str, &str, &str, &str) = (
    "FIX-RECEIVED",
    "9afe51e37ad00fa61e6db86214d2e564",
    "403",
    "355326",
);

/// A drug of the shipped master (ノルバスク), and the demo prescription's drug, which is none.
const AMLODIPINE: &str = "612170710";
const DEMO_DRUG: &str = "2149039F1020";

/// The canonical key of the dev test patient `n` (`common::patient`).
fn canonical(n: u32) -> String {
    let key = PatientKey::insurance("06139999", "ZQ", &format!("{n:07}"), "01").unwrap();
    key.canonical().to_owned()
}

/// The canonical key of a layout-1 fixture patient, by insurance number.
pub(crate) fn fixture_canonical(number: &str) -> String {
    let key = PatientKey::insurance("06139999", "12", number, "01").unwrap();
    key.canonical().to_owned()
}

/// Every key of every table of the stopped store at `dir` that holds `canonical`'s bytes.
async fn keys_holding(dir: &Path, canonical: &str) -> Vec<(Table, Vec<u8>)> {
    let store = EmbeddedStore::open(dir).unwrap();
    let needle = canonical.as_bytes().to_vec();
    let found = store.transact(move |tx| {
        let mut found = Vec::new();
        for table in Table::ALL {
            let rows = tx.scan_prefix(table, b"", usize::MAX)?;
            let holding = rows.into_iter().map(|(key, _)| key);
            let holding = holding.filter(|key| key.windows(needle.len()).any(|w| w == needle));
            found.extend(holding.map(|key| (table, key)));
        }
        Ok::<_, rxgate::store::Error>(found)
    });
    let found = found.await.unwrap().unwrap();
    store.close().unwrap();
    found
}

/// The keys of `table` of the stopped store at `dir` that start with `prefix`.
async fn keys_under(dir: &Path, table: Table, prefix: Vec<u8>) -> Vec<Vec<u8>> {
    let store = EmbeddedStore::open(dir).unwrap();
    let rows = store.transact(move |tx| tx.scan_prefix(table, &prefix, usize::MAX));
    let keys = rows
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    store.close().unwrap();
    keys
}

/// The findings of the dev clinic's check of `draft`, with card consent and `check_options`.
async fn checked(
    h: &Harness,
    draft: pb::Prescription,
    check_options: Option<pb::CheckOptions>,
) -> Vec<pb::Finding> {
    let request = pb::CheckPrescriptionRequest {
        draft: Some(draft),
        consent: pb::Consent::Card as i32,
        check_options,
    };
    let mut clinic = h.clinic("clinic").await;
    let answer = clinic.check_prescription(request).await.unwrap();
    answer.into_inner().findings
}

/// A harness on an embedded store, whatever `RXGATE_TEST_STORE` asks: these tests walk it.
async fn embedded(adjust: impl FnOnce(&mut Config)) -> Harness {
    start_with(|config| {
        config.store_engine = None;
        config.postgres = None;
        adjust(config);
    })
    .await
}

/// Registrations, a receipt and dispensing, a pre-issue check: afterwards no key of any table
/// holds any of the patients' canonical keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_holds_a_patient_key() {
    let h = embedded(|_| {}).await;
    for n in 1..=3 {
        let registered = h.register_demo("clinic", &format!("KEYS-{n}"), n).await;
        if n == 1 {
            let exchange = registered.exchange_number;
            h.receive_and_dispense_demo("KEYS-1", 1, &exchange).await;
        }
    }
    let draft = demo_prescription("KEYS-DRAFT", patient(2), h.today());
    checked(&h, draft, None).await;
    let stopped = h.stop().await;
    for n in 1..=3 {
        let holding = keys_holding(stopped.store_dir(), &canonical(n)).await;
        assert_eq!(holding, [], "patient {n}");
    }
}

/// The layout-1 store unpacked into `into`: its folder.
pub(crate) fn unpack_layout_1(into: &Path) -> PathBuf {
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(LAYOUT_1)
        .arg("-C")
        .arg(into)
        .output()
        .expect("running tar");
    assert!(tar.status.success(), "unpacking {LAYOUT_1}: {tar:?}");
    into.join("store")
}

/// The layout stamp of the stopped store at `dir`.
async fn stamp(dir: &Path) -> Option<u32> {
    let store = EmbeddedStore::open(dir).unwrap();
    let stamp = layout::check(&store).await.unwrap();
    store.close().unwrap();
    stamp
}

/// A store of layout 1 holds its patients' keys in clear; served by this build, it is
/// migrated (stamped with the current layout, no clear key left), and what it held is found:
/// a prescription by its patient and exchange number, each by a search for its patient, the
/// patient's history by a check against it; the patient's consents and check budget are under
/// the pseudonym, the new consent beside the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_1_store_is_migrated_and_found_as_before() {
    let unpacked = tempfile::tempdir().unwrap();
    let store = unpack_layout_1(unpacked.path());
    assert_eq!(stamp(&store).await, Some(1));
    let clear = ["345", "401", "403"].map(fixture_canonical);
    for patient in &clear {
        assert_ne!(
            keys_holding(&store, patient).await,
            [],
            "layout 1 keys in clear"
        );
    }
    let pseudonyms = Pseudonyms::from_file(&dev_pki().audit_pseudonym_key()).unwrap();
    let keyed = pseudonyms.in_keys(&clear[2]);
    let consent_prefix = |p: &[u8]| [b"consent\0", p, b"\0"].concat();
    let consents = keys_under(&store, Table::Clinical, consent_prefix(clear[2].as_bytes())).await;
    assert!(
        !consents.is_empty(),
        "registration and receipt leave consents"
    );

    let h = embedded(|config| config.data_dir = store.clone()).await;
    h.clock.set(UNIX_EPOCH + LAYOUT_1_WRITTEN);
    let (number, id, insured, exchange) = FIX_RECEIVED;
    let found = h
        .pharmacy("pharmacy")
        .await
        .lookup_prescription(pb::LookupPrescriptionRequest {
            patient_key: Some(crate::upgrade::patient(insured)),
            exchange_number: exchange.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{number} by its exchange number: {e}"))
        .into_inner();
    assert_eq!(
        (found.prescription_id.as_str(), found.state()),
        (id, State::Accepted)
    );
    let (_, registered, registered_for) = FIX_REGISTERED;
    for (id, insured) in [(id, insured), (registered, registered_for)] {
        let search = h
            .clinic("clinic")
            .await
            .search_prescriptions(pb::SearchPrescriptionsRequest {
                patient_key: Some(crate::upgrade::patient(insured)),
                issued_from: h.today().to_string(),
                issued_to: h.today().to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = search
            .prescriptions
            .iter()
            .map(|p| p.prescription_id.as_str())
            .collect();
        assert_eq!(ids, [id], "by its patient");
    }
    // A drug of the master: FIX-RECEIVED's (the demo's) is none, so the history's line of it is
    // named as not checked, by the same clinic (so asked for).
    let mut draft = demo_prescription("CHECK-403", crate::upgrade::patient(insured), h.today());
    draft.lines = vec![line(AMLODIPINE)];
    let opted_in = pb::CheckOptions {
        include_same_institution: Some(true),
        ..Default::default()
    };
    let findings = checked(&h, draft, Some(opted_in)).await;
    let against: Vec<(FindingKind, &str)> = (findings.iter())
        .map(|f| (f.kind(), f.other.as_ref().map_or("", |o| o.code.as_str())))
        .collect();
    assert_eq!(
        against,
        [(FindingKind::NotChecked, DEMO_DRUG)],
        "against the migrated history"
    );

    let stopped = h.stop().await;
    assert_eq!(stamp(stopped.store_dir()).await, Some(layout::CURRENT));
    for patient in &clear {
        assert_eq!(
            keys_holding(stopped.store_dir(), patient).await,
            [],
            "migrated"
        );
    }
    let pseudonymous = consent_prefix(keyed.as_str().as_bytes());
    let now = keys_under(stopped.store_dir(), Table::Clinical, pseudonymous).await;
    assert_eq!(
        now.len(),
        consents.len() + 1,
        "the old consents and the check's"
    );
    let budget = [b"check-budget\0".as_slice(), keyed.as_str().as_bytes()].concat();
    let budgets = keys_under(stopped.store_dir(), Table::Clinical, budget.clone()).await;
    assert_eq!(budgets, [budget]);
}

/// A 64-hex-digit pseudonym key in `dir` other than the dev one: its path.
fn other_key(dir: &Path) -> PathBuf {
    let path = dir.join("other-pseudonym.key");
    fs::write(&path, "ab".repeat(32)).unwrap();
    path
}

/// The configuration `config` (the dev gateway's, as `dev_config` wrote it) made to name
/// another pseudonym key; its text before.
fn name_other_key(config: &Path) -> String {
    let text = fs::read_to_string(config).unwrap();
    let dev_key = dev_pki().audit_pseudonym_key();
    let dev_key = format!("{:?}", dev_key.display().to_string());
    assert!(text.contains(&dev_key), "the example names the dev key");
    let other = other_key(config.parent().unwrap());
    let other = format!("{:?}", other.display().to_string());
    fs::write(config, text.replace(&dev_key, &other)).unwrap();
    text
}

/// The dev gateway's configuration (examples/rxgate.toml, its paths absolute, its store
/// `dir/store`) written to `dir/rxgate.toml`.
pub(crate) fn dev_config(dir: &Path) -> PathBuf {
    drop(crate::lifecycle::serve_configured(dir, ""));
    dir.join("rxgate.toml")
}

/// `rxgate store verify --data-dir STORE` believing the dev gateway's checkpoints, given the
/// gateway's configuration `config` (for its pseudonym key) or not.
pub(crate) fn verify_store(store: &Path, config: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rxgate"));
    command.args(["store", "verify", "--data-dir"]).arg(store);
    command.arg("--gateway-cert").arg(dev_pki().gateway().cert);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.output().unwrap()
}

/// `rxgate store verify` says which checks it skipped without the pseudonym key, and skips
/// none with the key; with another key than the store's, it names that as the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_verify_says_which_checks_it_skipped_without_the_pseudonym_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store_verify::populated_store(dir.path(), EngineKind::Fjall).await;
    let config = dev_config(dir.path());
    let without = verify_store(&store, None);
    let summary = String::from_utf8_lossy(&without.stdout);
    assert!(without.status.success(), "{without:?}");
    assert!(summary.starts_with("sound: "), "{summary}");
    assert!(
        summary.trim_end().ends_with(SKIPPED_PATIENT_KEYS),
        "{summary}"
    );

    let with = verify_store(&store, Some(&config));
    let summary = String::from_utf8_lossy(&with.stdout);
    assert!(with.status.success(), "{with:?}");
    assert!(!summary.contains("SKIPPED"), "{summary}");

    name_other_key(&config);
    let other = verify_store(&store, Some(&config));
    let problem = String::from_utf8_lossy(&other.stdout);
    assert_eq!(other.status.code(), Some(1), "{other:?}");
    let named = "another audit_pseudonym_key than the one --config names";
    assert!(
        problem.starts_with("NOT sound: Meta") && problem.contains(named),
        "{problem}"
    );
}

/// A store built under one pseudonym key refuses a gateway configured with another (exit 2,
/// naming audit_pseudonym_key), and serves again under its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refuses_another_pseudonym_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rxgate.log");
    let config = dev_config(dir.path());
    let own = Serve::config(&config, &log).start().await;
    own.kill();
    let text = name_other_key(&config);

    let (exited, output) = Serve::config(&config, &log).refused().await;
    assert_eq!(exited, "exit status: 2", "{output}");
    let refusal = "this store was built with another audit_pseudonym_key";
    assert!(output.contains(refusal), "{output}");

    fs::write(&config, text).unwrap();
    let again = Serve::config(&config, &log).start().await;
    again.kill();
}
