//! The service's transactions run twice: over a store that runs every transaction function a
//! second time after rolling the first run back (`testing::Twice`), as an engine that retries
//! after a serialization failure does, calls must leave what they leave run once. A function
//! that moved a captured value out on its first run, or changed something outside its `Txn`,
//! would register twice, lose a document or break the audit chain here. Test builds only.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use super::{
    Error, EventFilter, EventKind, Gateway, layout,
    testing::{self, Twice},
    verify::Summary,
};
use crate::store::{self, EmbeddedStore, Store, Table};

/// A gateway over a store that runs each transaction once, and one over a store that runs each
/// twice, both new and brought to the current layout as a starting gateway brings them.
async fn once_and_twice(dir: &tempfile::TempDir) -> [Arc<Gateway>; 2] {
    let once = EmbeddedStore::open(&dir.path().join("once")).unwrap();
    let twice = Twice::new(EmbeddedStore::open(&dir.path().join("twice")).unwrap());
    let stores: [Arc<dyn Store>; 2] = [Arc::new(once), Arc::new(twice)];
    let gateways = stores.map(|s| testing::gateway_over(s).0);
    for gateway in &gateways {
        let upgraded = layout::upgrade(&gateway.store, &gateway.config.pseudonyms).await;
        upgraded.unwrap();
    }
    gateways
}

/// The whole store, checked as `rxgate store verify` checks it, found sound.
async fn verified(gateway: &Gateway) -> Summary {
    let verdict = testing::verify_store(gateway).await;
    verdict.unwrap_or_else(|problem| panic!("{problem}"))
}

/// How many entries `table` holds, as `summary` counted them.
fn entries(summary: &Summary, table: Table) -> u64 {
    let counted = summary.entries.iter().find(|(t, _)| *t == table);
    counted.map(|(_, n)| *n).unwrap()
}

/// Registers a prescription (twice: the repeat answers the first registration), receives and
/// dispenses it; the event feed's sequence numbers and kinds.
async fn round(gateway: &Gateway) -> Vec<(u64, EventKind)> {
    let registered = testing::register(gateway, "RERUN-1", 1).await;
    let again = testing::register(gateway, "RERUN-1", 1).await;
    assert_eq!(
        (&again.id, again.exchange_number),
        (&registered.id, registered.exchange_number)
    );
    let received = testing::receive(gateway, &registered, 1).await;
    assert_eq!(received.id, registered.id);
    let (content, dispensed) = testing::dispense(gateway, "RERUN-1").await;
    assert_eq!(dispensed.prescription_id, registered.id);
    let (events, _) = (gateway.events_page(EventFilter::default(), 0, 100))
        .await
        .unwrap();
    let record = events.last().and_then(|e| e.record.as_ref());
    assert_eq!(record.map(|r| &r.content), Some(&content));
    events.iter().map(|e| (e.sequence, e.event.kind)).collect()
}

/// The wrapper itself: a function runs twice, and only the second run's writes and outcome
/// are kept.
#[tokio::test]
async fn twice_keeps_the_second_run_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Twice::new(EmbeddedStore::open(dir.path()).unwrap());
    let runs = Arc::new(AtomicU8::new(0));
    let counted = Arc::clone(&runs);
    let run = store.transact(move |tx| {
        let run = counted.fetch_add(1, Ordering::Relaxed) + 1;
        tx.put(Table::Meta, &[run], b"");
        Ok::<_, store::Error>(run)
    });
    assert_eq!(run.await, Ok(Ok(2)));
    let keys = store
        .transact(|tx| tx.scan_prefix(Table::Meta, b"", 10))
        .await;
    assert_eq!(keys, Ok(Ok(vec![(vec![2], Vec::new())])));
}

/// Register, repeat, receive, dispense and read the feed, with every transaction run twice:
/// the same answers, one event per change, one prescription, and a store that verifies with
/// as many entries in every table as the same calls leave run once.
#[tokio::test]
async fn a_round_run_twice_leaves_what_it_leaves_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let [once, twice] = once_and_twice(&dir).await;
    let expected = [
        (1, EventKind::Registered),
        (2, EventKind::Accepted),
        (3, EventKind::DispensingRecorded),
    ];
    assert_eq!(round(&once).await, expected);
    assert_eq!(round(&twice).await, expected);
    let summary = verified(&twice).await;
    assert_eq!(entries(&summary, Table::Prescriptions), 1);
    assert_eq!(entries(&summary, Table::Dispensings), 1);
    assert_eq!(summary, verified(&once).await);
}

/// Refusals run twice: a registration whose number is registered with other content, and a
/// receipt with a wrong exchange number (a miss the lockout counts). Each is refused, its audit
/// record and kept writes written once, nothing else stored.
#[tokio::test]
async fn refusals_run_twice_are_refused_once() {
    let dir = tempfile::tempdir().unwrap();
    let [once, twice] = once_and_twice(&dir).await;
    for gateway in [&once, &twice] {
        let registered = testing::register(gateway, "RERUN-2", 1).await;
        let refused = testing::try_register(gateway, "RERUN-2", 2).await;
        assert!(
            matches!(refused, Err(Error::AlreadyExists(_))),
            "{refused:?}"
        );
        let wrong = (registered.exchange_number + 1) % 1_000_000;
        let missed = testing::try_receive(gateway, wrong, 1).await;
        assert_eq!(missed, Err(Error::NotFound));
    }
    let summary = verified(&twice).await;
    assert_eq!(entries(&summary, Table::Prescriptions), 1);
    assert_ne!(entries(&summary, Table::Lockouts), 0, "the miss is counted");
    assert_eq!(summary, verified(&once).await);
}
