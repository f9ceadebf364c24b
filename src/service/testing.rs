//! Support for the unit tests that need a whole gateway: one over an embedded store in a
//! temporary folder (or over a wrapper of one that runs every transaction twice), with the dev
//! trust, the shipped masters and a clock the test moves, and registrations by the dev clinic
//! through it. Test builds only.

use std::{
    cell::Cell,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use prost::Message;

use super::{
    Caller, CheckRequest, Clinical, Clock, Dispensed, Error, Gateway, GatewayConfig,
    PatientPseudonym, Pseudonyms, Received, Registered, RequestedOptions,
    verify::{self, Problem, Summary},
};
use crate::{
    audit_verify::ChainVerifier,
    cli::demo::{demo_dispensing, demo_prescription},
    dev_pki::DevPki,
    domain::{
        checks::Consent,
        ids::{Institution, InstitutionKind},
        patient::PatientKey,
        signature::VerifierConfig,
        time::JapanDate,
    },
    master_files::Sources,
    pki::identity::TrustedSenders,
    store::{
        self, Answer, Columns, EmbeddedStore, Entry, SnapshotAnswer, Stats, Store, Table, Txn,
        TxnFn,
    },
    wire::proto::v1 as pb,
};

/// A clock that stands still until the test moves it, so that no date rolls over mid-test: the
/// wall clock and the steady one.
pub(crate) struct TestClock(Mutex<(SystemTime, Duration)>);

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        self.0.lock().unwrap().0
    }

    fn steady(&self) -> Duration {
        self.0.lock().unwrap().1
    }
}

impl TestClock {
    /// Time passes: both clocks move on.
    pub(crate) fn advance(&self, by: Duration) {
        let mut clocks = self.0.lock().unwrap();
        clocks.0 += by;
        clocks.1 += by;
    }

    pub(crate) fn today(&self) -> JapanDate {
        JapanDate::of(self.now())
    }
}

/// A mebibyte, as the free-space tests give the disk's room.
pub(crate) const MIB: u64 = 1024 * 1024;

/// The records in the audit table (a test's few).
pub(crate) async fn audit_records(gateway: &Gateway) -> usize {
    let rows = gateway
        .store
        .transact(|tx| tx.scan_prefix(Table::Audit, b"", 1_000))
        .await;
    rows.unwrap().unwrap().len()
}

/// A gateway over a new store in `dir` and the clock it reads, set to the current time.
pub(crate) fn gateway(dir: &Path) -> (Arc<Gateway>, Arc<TestClock>) {
    gateway_over(Arc::new(EmbeddedStore::open(dir).unwrap()))
}

/// A store that runs every transaction function twice in one transaction, as an engine that
/// retries after a serialization failure may: a first run, a rollback of its writes to a
/// savepoint taken before it, and a second run, whose writes and outcome are the ones kept.
/// Whatever a function changed outside its `Txn` on the first run, the second one sees.
pub(crate) struct Twice {
    store: EmbeddedStore,
    /// What it says of itself (`Store::serial`): false plays an engine over a database, which
    /// several gateway processes share.
    serial: bool,
}

impl Twice {
    /// Over `store`, saying it runs its transactions one at a time, as it does.
    pub(crate) fn new(store: EmbeddedStore) -> Twice {
        Twice {
            store,
            serial: true,
        }
    }

    /// Over `store`, saying it runs them side by side, as a database shared by several
    /// processes does.
    pub(crate) fn side_by_side(store: EmbeddedStore) -> Twice {
        Twice {
            store,
            serial: false,
        }
    }
}

impl Store for Twice {
    fn submit(&self, f: TxnFn) -> Answer {
        self.store.submit(Box::new(move |tx: &mut dyn Txn| {
            let before = tx.savepoint();
            let _discarded = f(tx);
            tx.rollback_to(before);
            f(tx)
        }))
    }

    fn stats(&self) -> Stats {
        self.store.stats()
    }

    fn failure(&self) -> Option<store::Error> {
        self.store.failure()
    }

    fn snapshot(&self) -> SnapshotAnswer {
        self.store.snapshot()
    }

    fn serial(&self) -> bool {
        self.serial
    }
}

/// The whole store, checked as `rxgate store verify` checks it: every table read, indexes
/// against their records, counters against what they numbered, and the audit chains.
pub(crate) async fn verify_store(gateway: &Gateway) -> Result<Summary, Problem> {
    let chains = ChainVerifier::new(TrustedSenders::default());
    let today = JapanDate::of(gateway.clock.now());
    let against = (today, Some(gateway.config.pseudonyms.clone()));
    verify::verify(&gateway.store, chains, against, &mut |_, _| {}).await
}

/// A gateway over `store` and the clock it reads, set to the current time.
pub(crate) fn gateway_over(store: Arc<dyn Store>) -> (Arc<Gateway>, Arc<TestClock>) {
    let (verifier, _) = DevPki::repository()
        .signing()
        .load(VerifierConfig::default())
        .unwrap();
    let sources = Sources::shipped().unwrap();
    let built = sources.build().unwrap();
    let clinical = Clinical {
        catalog: built.catalog,
        table: built.table,
        sources,
        report: built.report,
        version: 0,
    };
    let clock = Arc::new(TestClock(Mutex::new((SystemTime::now(), Duration::ZERO))));
    let gateway = Gateway::new(
        store,
        Arc::new(verifier),
        clock.clone(),
        Arc::new(clinical),
        GatewayConfig::default(),
    );
    (Arc::new(gateway), clock)
}

/// Dev patient `n`, as a request names it and as the gateway keys it.
pub(crate) fn patient(n: u32) -> (pb::PatientKey, PatientKey) {
    let number = format!("{n:07}");
    let wire = pb::PatientKey {
        kind: Some(pb::patient_key::Kind::Insurance(pb::InsuranceKey {
            insurer_number: "06139999".into(),
            symbol: "ZQ".into(),
            number: number.clone(),
            branch: "01".into(),
        })),
    };
    let key = PatientKey::insurance("06139999", "ZQ", &number, "01").unwrap();
    (wire, key)
}

/// Pseudonyms under a fixed key, for the tests that write keys without a gateway.
pub(crate) fn fixed_pseudonyms() -> Pseudonyms {
    Pseudonyms::new(&[7; 32]).unwrap()
}

/// The pseudonym of the patient key `patient` under [`fixed_pseudonyms`].
pub(crate) fn keyed(patient: &str) -> PatientPseudonym {
    fixed_pseudonyms().in_keys(patient)
}

/// A caller of `kind` with the dev code of that kind.
pub(crate) fn caller(kind: InstitutionKind) -> Caller {
    let code = match kind {
        InstitutionKind::Clinic => "1310000001",
        InstitutionKind::Pharmacy => "1340000001",
        InstitutionKind::Management => "9990000001",
        InstitutionKind::Operator => "9990000002",
    };
    Caller {
        institution: Institution {
            kind,
            code: code.parse().unwrap(),
        },
        certificate_sha256: [0; 32],
        receipt: Default::default(),
    }
}

/// The dev clinic registers the demo prescription `number` for dev patient `n`, today.
pub(crate) async fn register(gateway: &Gateway, number: &str, n: u32) -> Registered {
    try_register(gateway, number, n).await.unwrap()
}

/// [`register`], refused or not.
pub(crate) async fn try_register(
    gateway: &Gateway,
    number: &str,
    n: u32,
) -> Result<Registered, Error> {
    let now = gateway.clock.now();
    let content = demo_prescription(number, patient(n).0, JapanDate::of(now)).encode_to_vec();
    let cms = signature("doctor", &content, gateway);
    let clinic = caller(InstitutionKind::Clinic);
    (gateway.register(&clinic, content, cms, no_check(), Vec::new())).await
}

/// The dev pharmacy receives `registered`, the prescription of dev patient `n`.
pub(crate) async fn receive(gateway: &Gateway, registered: &Registered, n: u32) -> Received {
    let received = try_receive(gateway, registered.exchange_number, n).await;
    received.unwrap()
}

/// The dev pharmacy asks for the prescription of dev patient `n` with `exchange_number`.
pub(crate) async fn try_receive(
    gateway: &Gateway,
    exchange_number: u32,
    n: u32,
) -> Result<Received, Error> {
    let pharmacy = caller(InstitutionKind::Pharmacy);
    let (_, patient) = patient(n);
    (gateway.receive(&pharmacy, patient, exchange_number, no_check())).await
}

/// The dev pharmacy records the demo dispensing of the prescription `number`, today, signed by
/// the dev pharmacist: the signed content, and the answer.
pub(crate) async fn dispense(gateway: &Gateway, number: &str) -> (Vec<u8>, Dispensed) {
    let now = gateway.clock.now();
    let content = demo_dispensing(number, JapanDate::of(now)).encode_to_vec();
    let cms = signature("pharmacist", &content, gateway);
    let pharmacy = caller(InstitutionKind::Pharmacy);
    let dispensed = gateway.dispense(&pharmacy, content.clone(), cms).await;
    (content, dispensed.unwrap())
}

/// The dev signer `name`'s signature over `content`, as of the gateway's clock.
fn signature(name: &str, content: &[u8], gateway: &Gateway) -> Vec<u8> {
    let signer = DevPki::repository().signer(name).unwrap();
    signer.sign(content, gateway.clock.now()).unwrap()
}

/// A call's clinical check with no consent and the options in force.
fn no_check() -> CheckRequest {
    CheckRequest {
        consent: Consent::None,
        options: RequestedOptions::default(),
    }
}

/// One write a [`Noting`] transaction passed on: its table and, for a `put_row`, each column's
/// name with its value (as `Debug` prints it), and whether the columns are the ones the table
/// declares with every value fitting its column.
pub(crate) type Written = (Table, Option<(Vec<(&'static str, String)>, bool)>);

/// A transaction that passes everything on to `tx` and notes what it did: the values got and
/// entries scanned, and every write.
pub(crate) struct Noting<'a> {
    tx: &'a mut dyn Txn,
    pub(crate) reads: Cell<usize>,
    pub(crate) written: Vec<Written>,
}

impl<'a> Noting<'a> {
    pub(crate) fn new(tx: &'a mut dyn Txn) -> Self {
        Noting {
            tx,
            reads: Cell::new(0),
            written: Vec::new(),
        }
    }
}

impl Txn for Noting<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, store::Error> {
        self.reads.set(self.reads.get() + 1);
        self.tx.get(table, key)
    }
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.written.push((table, None));
        self.tx.put(table, key, value)
    }
    fn put_row(&mut self, table: Table, key: &[u8], value: &[u8], columns: Columns<'_>) {
        let named = (columns.declared.iter().zip(columns.values))
            .map(|(c, v)| (c.name, format!("{v:?}")))
            .collect();
        let declared = columns.declared == super::schema::columns_of(table)
            && columns.values.len() == columns.declared.len()
            && (columns.values.iter().zip(columns.declared)).all(|(v, c)| v.fits(c));
        self.written.push((table, Some((named, declared))));
        self.tx.put_row(table, key, value, columns)
    }
    fn delete(&mut self, table: Table, key: &[u8]) {
        self.tx.delete(table, key)
    }
    fn savepoint(&mut self) -> store::Savepoint {
        self.tx.savepoint()
    }
    fn rollback_to(&mut self, savepoint: store::Savepoint) {
        self.tx.rollback_to(savepoint)
    }
    fn unique_sequence(&mut self, name: &str) -> Result<u64, store::Error> {
        self.tx.unique_sequence(name)
    }
    fn lane(&self) -> u32 {
        self.tx.lane()
    }
    fn get_lane_row(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, store::Error> {
        self.reads.set(self.reads.get() + 1);
        self.tx.get_lane_row(table, key)
    }
    fn put_lane_row(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.written.push((table, None));
        self.tx.put_lane_row(table, key, value)
    }
    fn serial(&self) -> bool {
        self.tx.serial()
    }
    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, store::Error> {
        let rows = self.tx.scan_prefix(table, prefix, limit)?;
        self.reads.set(self.reads.get() + rows.len());
        Ok(rows)
    }
    fn scan_range(
        &self,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, store::Error> {
        let rows = self.tx.scan_range(table, start, end, limit)?;
        self.reads.set(self.reads.get() + rows.len());
        Ok(rows)
    }
}
