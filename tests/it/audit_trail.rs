//! The audit trail's hash chain and signed checkpoints: `rxgate audit verify` passes on an
//! untouched store and names the first bad sequence after each kind of tampering, made directly
//! in the stopped store; a checkpoint that does not verify or binds a longer chain is reported;
//! an upgraded store's chain begins with a genesis link naming the unchained records before it.

use crate::common::{self, dev_pki};

use std::path::{Path, PathBuf};

use common::{
    Stopped,
    audit::{dev_gateway_certs, only_bad_link, writer},
    start_with,
};
use rxgate::{
    audit_verify::{ChainVerifier, Finding, Report},
    cli,
    domain::hash::sha256,
    pki::identity::{IdentityFiles, TrustedSenders},
    service::{
        head_key, link_key,
        records::{AuditRecord, AuditV1, AuditV2, ChainHeadRecord, ChainHeadV1, decode, encode},
    },
    store::{EmbeddedStore, Error as StoreError, Store, Table, Txn},
};

/// A stopped gateway whose chain holds its genesis link and `calls` audited exports (links
/// 2..=calls + 1), bound by the checkpoint written at shutdown.
async fn audited(calls: usize) -> Stopped {
    let h = start_with(|_| {}).await;
    for _ in 0..calls {
        h.audit_records().await;
    }
    h.stop().await
}

async fn verify(dir: &Path, external: &[(String, Vec<u8>)]) -> Report {
    let verifier = ChainVerifier::new(dev_gateway_certs());
    cli::audit::verify_store(dir, verifier, external)
        .await
        .unwrap()
}

/// Edits the closed store at `dir` in one transaction.
async fn edit(dir: &Path, f: impl Fn(&mut dyn Txn) + Send + Sync + 'static) {
    let store = EmbeddedStore::open(dir).unwrap();
    store
        .transact(move |tx: &mut dyn Txn| {
            f(tx);
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap()
        .unwrap();
    store.close().unwrap();
}

fn link(tx: &dyn Txn, sequence: u64) -> Vec<u8> {
    tx.get(Table::Audit, &link_key(&writer(), sequence))
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn an_untouched_store_verifies() {
    let stopped = audited(6).await;
    let report = verify(stopped.store_dir(), &[]).await;
    assert!(report.findings.is_empty(), "{report}");
    assert_eq!((report.links, report.writers), (7, 1), "{report}");
    assert_eq!(report.checkpoints, 1, "the one written at shutdown");
}

/// Changes one byte of link 4 (its action's first letter).
fn change_a_byte(tx: &mut dyn Txn) {
    let mut value = link(tx, 4);
    let at = value.windows(6).position(|w| w == b"Export").unwrap();
    value[at] = b'e';
    tx.put(Table::Audit, &link_key(&writer(), 4), &value);
}

fn swap(tx: &mut dyn Txn) {
    let (four, five) = (link(tx, 4), link(tx, 5));
    tx.put(Table::Audit, &link_key(&writer(), 4), &five);
    tx.put(Table::Audit, &link_key(&writer(), 5), &four);
}

/// Inserts a well-formed link at 4 (a copy of 3, naming its hash) and moves links 4..=7 one
/// place up.
fn insert(tx: &mut dyn Txn) {
    for sequence in (4..=7).rev() {
        let value = link(tx, sequence);
        tx.put(Table::Audit, &link_key(&writer(), sequence + 1), &value);
    }
    let before = link(tx, 3);
    let Ok(AuditRecord::V3(mut forged)) = decode::<AuditRecord>(&before) else {
        panic!("not a link");
    };
    forged.sequence = 4;
    forged.previous = sha256(&before);
    let forged = encode(&AuditRecord::V3(forged));
    tx.put(Table::Audit, &link_key(&writer(), 4), &forged);
}

type Tamper = fn(&mut dyn Txn);

#[tokio::test]
async fn each_kind_of_tampering_is_named() {
    let cases: [(&str, Tamper, u64, &str); 4] = [
        ("a changed byte", change_a_byte, 4, "altered"),
        (
            "a deleted record",
            |tx| tx.delete(Table::Audit, &link_key(&writer(), 4)),
            4,
            "missing",
        ),
        ("two swapped records", swap, 4, "holds sequence 5"),
        // The forged link fits after 3; the one it displaced does not fit after it.
        ("an inserted record", insert, 5, "holds sequence 4"),
    ];
    for (what, tamper, sequence, problem) in cases {
        let stopped = audited(6).await;
        edit(stopped.store_dir(), tamper).await;
        let report = verify(stopped.store_dir(), &[]).await;
        let found = only_bad_link(&report, sequence);
        assert!(found.contains(problem), "{what}: {report}");
    }
}

/// Drops the last two links and rewrites the head to match: only a checkpoint notices.
fn truncate(tx: &mut dyn Txn) {
    for sequence in [6, 7] {
        tx.delete(Table::Audit, &link_key(&writer(), sequence));
    }
    let head = ChainHeadV1 {
        writer: writer(),
        sequence: 5,
        hash: sha256(&link(tx, 5)),
    };
    tx.put(
        Table::AuditChain,
        &head_key(&writer()),
        &encode(&ChainHeadRecord::V1(head)),
    );
}

/// Every stored checkpoint, gone.
fn drop_checkpoints(tx: &mut dyn Txn) {
    for (key, _) in tx
        .scan_prefix(Table::AuditChain, b"checkpoint\0", usize::MAX)
        .unwrap()
    {
        tx.delete(Table::AuditChain, &key);
    }
}

/// What `rxgate audit checkpoints` prints, kept in a file outside the store.
async fn kept_checkpoints(stopped: &Stopped, file: &Path) -> Vec<(String, Vec<u8>)> {
    let listed = cli::audit::list_checkpoints(stopped.store_dir())
        .await
        .unwrap();
    std::fs::write(file, listed).unwrap();
    cli::audit::checkpoints_in(file).unwrap()
}

#[tokio::test]
async fn a_truncated_tail_is_named_by_a_checkpoint_in_or_outside_the_store() {
    let stopped = audited(6).await;
    let file = stopped.store_dir().with_file_name("checkpoints.txt");
    let kept = kept_checkpoints(&stopped, &file).await;
    assert_eq!(kept.len(), 1);
    edit(stopped.store_dir(), truncate).await;
    let report = verify(stopped.store_dir(), &[]).await;
    let problem = only_bad_link(&report, 6);
    assert!(problem.contains("names sequence 7"), "{report}");

    // Without the stored checkpoint the truncation goes unseen, but for the copy kept outside.
    edit(stopped.store_dir(), drop_checkpoints).await;
    assert!(verify(stopped.store_dir(), &[]).await.findings.is_empty());
    let report = verify(stopped.store_dir(), &kept).await;
    assert!(
        only_bad_link(&report, 6).contains("checkpoints.txt:2"),
        "{report}"
    );
}

#[tokio::test]
async fn a_checkpoint_whose_signature_does_not_verify_is_reported() {
    let stopped = audited(2).await;
    let file = stopped.store_dir().with_file_name("checkpoints.txt");
    let mut kept = kept_checkpoints(&stopped, &file).await;
    let last = kept[0].1.len() - 1;
    kept[0].1[last] ^= 1;
    edit(stopped.store_dir(), drop_checkpoints).await;
    let report = verify(stopped.store_dir(), &kept).await;
    match &report.findings[..] {
        [Finding::Checkpoint { problem, .. }] => {
            assert_eq!(problem, "its signature does not verify")
        }
        other => panic!("{other:?}"),
    }

    // Nor does a true checkpoint of a gateway whose certificate is not given.
    let other = dev_pki()
        .gateway()
        .cert
        .with_file_name("untrusted-gateway.cert.pem");
    let verifier = ChainVerifier::new(TrustedSenders::from_files(&[other]).unwrap());
    let kept = cli::audit::checkpoints_in(&file).unwrap();
    let report = cli::audit::verify_store(stopped.store_dir(), verifier, &kept)
        .await
        .unwrap();
    assert!(
        matches!(&report.findings[..], [Finding::Checkpoint { problem, .. }]
            if problem.contains("not a given gateway certificate")),
        "{report}"
    );
}

/// Writes `n` unchained (version 2) audit records into a new store at `dir`, as a version
/// before the chain did: keyed by the store-wide sequence.
async fn legacy_store(dir: &Path, n: u64) {
    edit(dir, move |tx| {
        for _ in 0..n {
            let sequence = tx.next_sequence("audit").unwrap();
            let record = AuditRecord::V2(AuditV2 {
                call: AuditV1 {
                    time_ms: 1,
                    institution_kind: "operator".into(),
                    institution_code: "9900000001".into(),
                    certificate_sha256: [7; 32],
                    signer_serial_number: None,
                    signer_certificate_sha256: None,
                    action: "ExportAudit".into(),
                    target: None,
                    outcome: "OK".into(),
                },
                check: None,
            });
            tx.put(Table::Audit, &sequence.to_be_bytes(), &encode(&record));
        }
    })
    .await;
}

#[tokio::test]
async fn an_upgraded_store_begins_its_chain_with_a_genesis_link() {
    let old = tempfile::tempdir().unwrap();
    let store: PathBuf = old.path().join("store");
    legacy_store(&store, 3).await;
    let dir = store.clone();
    let h = start_with(move |c| c.data_dir = dir).await;
    let records = h.audit_records().await;
    let genesis = &records[3];
    assert_eq!(
        (
            genesis.action.as_str(),
            genesis.target.as_str(),
            genesis.sequence
        ),
        ("AuditChainGenesis", "3", 1)
    );
    assert!(records[..3].iter().all(|r| r.canonical.is_empty()));
    h.stop().await;
    let report = verify(&store, &[]).await;
    assert!(report.findings.is_empty(), "{report}");
    assert_eq!((report.unchained, report.links), (3, 2));

    // The unchained records are not hashed, but the genesis link counts them.
    edit(&store, |tx| tx.delete(Table::Audit, &2u64.to_be_bytes())).await;
    let report = verify(&store, &[]).await;
    assert!(
        matches!(
            report.findings[..],
            [Finding::Unchained { sequence: 2, .. }, ..]
        ),
        "{report}"
    );
}

#[tokio::test]
async fn each_gateway_writes_its_own_chain() {
    let h = start_with(|_| {}).await;
    h.audit_records().await;
    let dir = dev_pki().gateway().cert.with_file_name("");
    let other = IdentityFiles {
        key: dir.join("untrusted-gateway.key.pem"),
        cert: dir.join("untrusted-gateway.cert.pem"),
    };
    let certs = [dev_pki().gateway().cert, other.cert.clone()];
    let h = h.restart_with(move |c| c.gateway = other).await;
    let records = h.audit_records().await;
    let writers: std::collections::BTreeSet<_> =
        records.iter().map(|r| r.chain_writer.clone()).collect();
    assert_eq!(writers.len(), 2, "two chains");
    assert_eq!(
        records.last().unwrap().sequence,
        2,
        "the second's own sequence"
    );
    let stopped = h.stop().await;

    let both = ChainVerifier::new(TrustedSenders::from_files(&certs).unwrap());
    let report = cli::audit::verify_store(stopped.store_dir(), both, &[])
        .await
        .unwrap();
    assert!(report.findings.is_empty(), "{report}");
    // The first's at its shutdown; the second's at its start and shutdown, each binding both
    // chains.
    assert_eq!(
        (report.writers, report.links, report.checkpoints),
        (2, 4, 3)
    );
    let report = verify(stopped.store_dir(), &[]).await;
    let unknown = |f: &Finding| {
        matches!(f, Finding::Checkpoint { problem, .. }
            if problem.contains("not a given gateway certificate"))
    };
    assert_eq!(report.findings.len(), 2, "{report}");
    assert!(report.findings.iter().all(unknown), "{report}");
}
