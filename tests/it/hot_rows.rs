//! On PostgreSQL, a gateway's transactions run side by side: no row may be written by every one
//! of them, or they would conflict and run one at a time. These tests load one gateway with
//! concurrent calls and check what replaced the shared rows: the audit chain per lane (more
//! than one chain, each verifying), unique numbers from the database's sequence (no consent
//! counter row), and events numbered by the sequencer once committed (every event in the feed
//! exactly once, numbered 1, 2, 3, ... and each prescription's in the order they happened).
//! Skipped, saying so, when PostgreSQL is not installed, except under CI.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rxgate::wire::proto::v1 as pb;

use crate::common::postgres::{Cluster, installed as cluster};
use crate::common::{Harness, patient, start_with, throttled, whole_feed};
use crate::events::take;
use prost::Message;
use rxgate::cli::demo::demo_prescription;

/// Prescriptions registered at once, and how many of them are then received and dispensed.
const REGISTERED: u32 = 40;
const DISPENSED: u32 = 6;

/// A gateway on a database of its own in `cluster`; the database's name.
async fn gateway_on(cluster: &Cluster) -> (Harness, String) {
    let config = cluster.database();
    let name = config.url.rsplit('/').next().unwrap().to_owned();
    let h = start_with(|c| {
        c.store_engine = Some(rxgate::config::StoreEngine::Postgres);
        c.postgres = Some(config);
    })
    .await;
    (h, name)
}

/// Registers [`REGISTERED`] prescriptions at once, then receives and dispenses [`DISPENSED`] of
/// them at once (fewer than an institution may have in flight); the prescription numbers.
async fn concurrent_load(h: &Arc<Harness>) -> Vec<String> {
    // One connection, as a clinic's system would keep: the calls are its streams.
    let clinic = h.clinic("clinic").await;
    let registering = (0..REGISTERED).map(|i| {
        let (h, clinic) = (Arc::clone(h), clinic.clone());
        tokio::spawn(async move {
            let number = format!("HOT-{i}");
            let rx = demo_prescription(&number, patient(900 + i), h.today());
            let request = pb::RegisterPrescriptionRequest {
                prescription: Some(h.sign("doctor", rx.encode_to_vec())),
                ..Default::default()
            };
            let r = throttled(|| {
                let (mut clinic, request) = (clinic.clone(), request.clone());
                async move { clinic.register_prescription(request).await }
            })
            .await;
            (number, i, r.unwrap().into_inner().exchange_number)
        })
    });
    let mut registered = Vec::new();
    for task in registering.collect::<Vec<_>>() {
        registered.push(task.await.unwrap());
    }
    let dispensing: Vec<_> = registered[..DISPENSED as usize]
        .iter()
        .map(|(number, i, exchange)| {
            let (h, number, exchange, n) =
                (Arc::clone(h), number.clone(), exchange.clone(), 900 + i);
            tokio::spawn(async move { h.receive_and_dispense_demo(&number, n, &exchange).await })
        })
        .collect();
    for task in dispensing {
        task.await.unwrap();
    }
    registered.into_iter().map(|(number, ..)| number).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_no_row_and_the_feed_numbers_every_event_once_in_order() {
    let Some(cluster) = cluster() else { return };
    let (h, database) = gateway_on(cluster).await;
    let h = Arc::new(h);
    let mut feed = whole_feed(h.channel("management").await).await;
    let numbers = concurrent_load(&h).await;

    let expected = (REGISTERED + 2 * DISPENSED) as usize;
    let events = take(&mut feed, expected).await;
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=expected as u64).collect::<Vec<_>>());
    let mut kinds: BTreeMap<&str, Vec<pb::EventKind>> = BTreeMap::new();
    for e in &events {
        kinds
            .entry(&e.prescription_number)
            .or_default()
            .push(e.kind());
    }
    use pb::EventKind::{Accepted, DispensingRecorded, Registered};
    for (i, number) in numbers.iter().enumerate() {
        let want = if i < DISPENSED as usize {
            vec![Registered, Accepted, DispensingRecorded]
        } else {
            vec![Registered]
        };
        assert_eq!(kinds.get(number.as_str()), Some(&want), "{number}");
    }
    assert_eq!(
        cluster.sql_in(
            &database,
            "SELECT count(*) FROM rxgate.meta \
             WHERE substring(k FROM 1 FOR 15) = 'events\\000pending\\000'::bytea"
        ),
        "0\n",
        "every pending event numbered"
    );
    // The consents' numbers came from the database's sequence, not from a row of counters.
    assert_eq!(
        cluster.sql_in(
            &database,
            "SELECT count(*) FROM rxgate.meta WHERE k = 'sequence/consent'::bytea"
        ),
        "0\n"
    );

    // The audit records went to more than one chain (a lane each), and every chain verifies.
    let records = h.audit_records().await;
    let writers: BTreeSet<&[u8]> = records.iter().map(|r| r.chain_writer.as_slice()).collect();
    assert!(writers.len() > 1, "{} chain(s)", writers.len());
    let file = h.dir.path().join("audit.json");
    let operator = crate::common::dev_pki().client("operator");
    rxgate::cli::audit::export(&h.addr, &operator, &file)
        .await
        .unwrap();
    let report = rxgate::cli::audit::verify_export(
        &file,
        rxgate::audit_verify::ChainVerifier::new(crate::common::audit::dev_gateway_certs()),
        &[],
    )
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    drop(feed);
    Arc::into_inner(h).unwrap().shutdown().await;
}
