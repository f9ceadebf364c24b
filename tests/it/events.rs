//! The event feed: every state change and dispensing record in sequence order, resumable after
//! the last sequence seen across disconnects and restarts, a clinic's own events only, and
//! OUT_OF_RANGE below the retained range.

use crate::common::{self, dev_pki};

use std::time::Duration;

use common::{Harness, start_with};
use rxgate::wire::proto::v1::{self as pb, event_service_client::EventServiceClient};
use tonic::{Code, Streaming};

async fn watch(h: &Harness, who: &str, after: u64) -> Result<Streaming<pb::Event>, tonic::Status> {
    EventServiceClient::new(h.channel(who).await)
        .watch_events(pb::WatchEventsRequest {
            after_sequence: after,
            filter: None,
        })
        .await
        .map(|r| r.into_inner())
}

/// The next `n` events of a stream (each within a few seconds).
pub(crate) async fn take(stream: &mut Streaming<pb::Event>, n: usize) -> Vec<pb::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream goes on");
        out.push(next);
    }
    out
}

/// Registers ten prescriptions and dispenses five: 20 events.
async fn workload(h: &Harness, prefix: &str, first_patient: u32) {
    for i in 0..10 {
        let number = format!("{prefix}-{i}");
        let r = h.register_demo("clinic", &number, first_patient + i).await;
        if i % 2 == 0 {
            h.receive_and_dispense_demo(&number, first_patient + i, &r.exchange_number)
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_resumes_after_the_last_sequence_seen_misses_nothing() {
    let h = start_with(|_| {}).await;
    workload(&h, "EV", 1).await;

    // Consume from 0, disconnect midway.
    let mut stream = watch(&h, "management", 0).await.unwrap();
    let mut seen = take(&mut stream, 7).await;
    drop(stream);
    // More happens while the consumer is away; it resumes after the last sequence it saw.
    workload(&h, "EW", 101).await;
    let mut stream = watch(&h, "management", seen.last().unwrap().sequence)
        .await
        .unwrap();
    seen.extend(take(&mut stream, 33).await);
    let sequences: Vec<u64> = seen.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=40).collect::<Vec<_>>());
    let kinds = |e: &pb::Event| e.kind();
    assert_eq!(kinds(&seen[0]), pb::EventKind::Registered);
    assert_eq!(kinds(&seen[1]), pb::EventKind::Accepted);
    assert_eq!(kinds(&seen[2]), pb::EventKind::DispensingRecorded);
    assert_eq!(seen[2].state(), pb::PrescriptionState::Dispensed);
    assert_eq!(seen[2].pharmacy_code, "1340000001");
    let record = seen[2]
        .dispensing_record
        .as_ref()
        .expect("the record travels with it");
    assert_eq!(record.record_number, 1);
    // The signature travels as the pharmacy sent it (the store keeps its certificates apart):
    // it verifies over the record's content.
    let signed = record.record.as_ref().unwrap();
    let (verifier, _) = dev_pki()
        .signing()
        .load(rxgate::domain::signature::VerifierConfig::default())
        .unwrap();
    verifier
        .verify::<pb::DispensingRecord>(&signed.content, &signed.cms_signature, h.now())
        .unwrap();

    // Live: a new registration reaches the open stream.
    h.register_demo("clinic", "EV-LIVE", 500).await;
    let live = take(&mut stream, 1).await;
    assert_eq!(live[0].sequence, 41);
    assert_eq!(live[0].prescription_number, "EV-LIVE");
    drop(stream);

    // Across a restart the sequence goes on and resuming works the same.
    let h = h.restart().await;
    h.register_demo("clinic", "EV-AFTER", 501).await;
    let mut stream = watch(&h, "management", 41).await.unwrap();
    let after = take(&mut stream, 1).await;
    assert_eq!(
        (after[0].sequence, after[0].prescription_number.as_str()),
        (42, "EV-AFTER")
    );
    drop(stream);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_sees_only_its_own_prescriptions_events() {
    let h = start_with(|_| {}).await;
    h.register_demo("clinic", "OWN-1", 1).await;
    h.register_demo("clinic2", "OTHER-1", 2).await;
    h.register_demo("clinic", "OWN-2", 3).await;
    let mut own = watch(&h, "clinic", 0).await.unwrap();
    let events = take(&mut own, 2).await;
    let numbers: Vec<_> = events
        .iter()
        .map(|e| e.prescription_number.as_str())
        .collect();
    assert_eq!(numbers, ["OWN-1", "OWN-2"]);
    assert_eq!((events[0].sequence, events[1].sequence), (1, 3));
    // Nothing else arrives for it, while management sees all three.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), own.message())
            .await
            .is_err()
    );
    let mut all = watch(&h, "management", 0).await.unwrap();
    assert_eq!(take(&mut all, 3).await.len(), 3);
    let e = watch(&h, "pharmacy", 0).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_before_the_retained_range_is_out_of_range() {
    let h = start_with(|c| c.event_retention_days = 1).await;
    for i in 0..3 {
        h.register_demo("clinic", &format!("OLD-{i}"), i).await;
    }
    // Two days later the server starts again and prunes on start; a new event follows.
    h.clock.set(h.now() + Duration::from_secs(2 * 86_400));
    let h = h.restart().await;
    h.register_demo("clinic", "NEW-1", 9).await;
    let e = watch(&h, "management", 0).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    let mut stream = watch(&h, "management", 3).await.unwrap();
    let events = take(&mut stream, 1).await;
    assert_eq!(
        (events[0].sequence, events[0].prescription_number.as_str()),
        (4, "NEW-1")
    );
    h.shutdown().await;
}
