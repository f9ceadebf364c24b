//! Partial dispensing and refills through the running gateway: up to three signed parts at the
//! accepting pharmacy with line states, and refill uses waiting for their window.

use crate::common;

use std::time::Duration;

use common::{Harness, patient, start_with};
use prost::Message;
use rxgate::cli::demo::{demo_dispensing, demo_prescription};
use rxgate::wire::proto::v1::{self as pb};
use tonic::{Code, Status};

const DAY: Duration = Duration::from_secs(86_400);

struct Rx {
    number: String,
    id: String,
    exchange: String,
    patient: pb::PatientKey,
}

/// Registers a prescription of the dev clinic with `lines` days-based lines of 14 days.
async fn register(h: &Harness, number: &str, n: u32, lines: usize, uses: u32) -> Rx {
    let mut rx = demo_prescription(number, patient(n), h.today());
    rx.lines = vec![rx.lines[0].clone(); lines];
    rx.refill_count = uses;
    let r = h.register("clinic", &rx).await.unwrap();
    Rx {
        number: number.into(),
        id: r.prescription_id,
        exchange: r.exchange_number,
        patient: patient(n),
    }
}

async fn receive(h: &Harness, pharmacy: &str, rx: &Rx) -> Result<pb::PrescriptionState, Status> {
    h.pharmacy(pharmacy)
        .await
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(rx.patient.clone()),
            exchange_number: rx.exchange.clone(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().state())
}

/// A dispensing record: `statuses[i]` for prescription line i.
fn record(
    h: &Harness,
    rx: &Rx,
    number: u32,
    is_final: bool,
    statuses: &[pb::DispensedLineStatus],
) -> pb::DispensingRecord {
    let mut r = demo_dispensing(&rx.number, h.today());
    let line = r.lines[0].clone();
    r.record_number = number;
    r.r#final = is_final;
    r.lines = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| pb::DispensedLine {
            prescription_line: i as u32,
            status: *s as i32,
            ..line.clone()
        })
        .collect();
    r
}

async fn dispense(
    h: &Harness,
    pharmacy: &str,
    record: &pb::DispensingRecord,
) -> Result<pb::RecordDispensingResponse, Status> {
    let mut record = record.clone();
    record.pharmacy_code = if pharmacy == "pharmacy" {
        "1340000001"
    } else {
        "1340000002"
    }
    .into();
    h.pharmacy(pharmacy)
        .await
        .record_dispensing(pb::RecordDispensingRequest {
            dispensing_record: Some(h.sign("pharmacist", record.encode_to_vec())),
        })
        .await
        .map(|r| r.into_inner())
}

async fn status(h: &Harness, rx: &Rx) -> pb::PrescriptionStatus {
    h.clinic("clinic")
        .await
        .get_prescription_status(pb::GetPrescriptionStatusRequest {
            prescription_id: rx.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn line_states(s: &pb::PrescriptionStatus) -> Vec<pb::LineStatus> {
    s.line_states
        .iter()
        .map(|l| pb::LineStatus::try_from(*l).unwrap())
        .collect()
}

use pb::DispensedLineStatus::{Complete, NotDispensed, Partial};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_parts_at_the_accepting_pharmacy_and_no_fourth() {
    let h = start_with(|_| {}).await;
    let rx = register(&h, "P-1", 1, 2, 1).await;
    assert_eq!(
        receive(&h, "pharmacy", &rx).await.unwrap(),
        pb::PrescriptionState::Accepted
    );
    assert_eq!(
        line_states(&status(&h, &rx).await),
        [pb::LineStatus::Owing, pb::LineStatus::Owing]
    );

    let first = record(&h, &rx, 1, false, &[Partial, NotDispensed]);
    let r = dispense(&h, "pharmacy", &first).await.unwrap();
    assert_eq!(
        (r.state(), r.record_number),
        (pb::PrescriptionState::Accepted, 1)
    );
    // the same part again is idempotent; the pharmacy can no longer hand it back
    let again = dispense(&h, "pharmacy", &first).await.unwrap();
    assert_eq!(again.record_number, 1);
    let e = h
        .pharmacy("pharmacy")
        .await
        .return_prescription(pb::ReturnPrescriptionRequest {
            prescription_id: rx.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("can no longer be returned"), "{e:?}");
    // a part from another pharmacy, or out of order, is refused
    let second = record(&h, &rx, 2, false, &[Complete, NotDispensed]);
    let e = dispense(&h, "pharmacy2", &second).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = dispense(&h, "pharmacy", &record(&h, &rx, 3, false, &[Complete]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("out of order"), "{e:?}");

    dispense(&h, "pharmacy", &second).await.unwrap();
    let third = record(&h, &rx, 3, false, &[NotDispensed, Partial]);
    let r = dispense(&h, "pharmacy", &third).await.unwrap();
    assert_eq!(r.state(), pb::PrescriptionState::Accepted);
    let s = status(&h, &rx).await;
    assert_eq!(s.dispensing_records.len(), 3);
    assert_eq!(
        line_states(&s),
        [pb::LineStatus::Dispensed, pb::LineStatus::Partial]
    );
    let e = dispense(
        &h,
        "pharmacy",
        &record(&h, &rx, 4, true, &[Complete, Complete]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("at most 3"), "{e:?}");

    // Completing every line, or a final record, dispenses.
    let whole = register(&h, "P-2", 2, 2, 1).await;
    receive(&h, "pharmacy", &whole).await.unwrap();
    dispense(
        &h,
        "pharmacy",
        &record(&h, &whole, 1, false, &[Complete, NotDispensed]),
    )
    .await
    .unwrap();
    let r = dispense(
        &h,
        "pharmacy",
        &record(&h, &whole, 2, false, &[NotDispensed, Complete]),
    )
    .await
    .unwrap();
    assert_eq!(r.state(), pb::PrescriptionState::Dispensed);
    let closed = register(&h, "P-3", 3, 2, 1).await;
    receive(&h, "pharmacy", &closed).await.unwrap();
    let r = dispense(
        &h,
        "pharmacy",
        &record(&h, &closed, 1, true, &[Complete, NotDispensed]),
    )
    .await
    .unwrap();
    assert_eq!(r.state(), pb::PrescriptionState::Dispensed);
    assert_eq!(
        line_states(&status(&h, &closed).await),
        [pb::LineStatus::Dispensed, pb::LineStatus::NotDispensed]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refill_uses_within_their_windows_and_no_fourth() {
    let h = start_with(|_| {}).await;
    let start = h.now();
    let rx = register(&h, "R-1", 4, 1, 3).await;
    receive(&h, "pharmacy", &rx).await.unwrap();
    let e = dispense(&h, "pharmacy", &record(&h, &rx, 1, false, &[Partial]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("partial dispensing is refused"),
        "{e:?}"
    );
    let r = dispense(&h, "pharmacy", &record(&h, &rx, 1, true, &[Complete]))
        .await
        .unwrap();
    assert_eq!(r.state(), pb::PrescriptionState::AwaitingRefill);
    let s = status(&h, &rx).await;
    let day = |n: i32| h.today().add_days(n).to_string();
    let window = s.next_use.clone().expect("the next use's window");
    assert_eq!(
        (&window.planned, &window.from, &window.until),
        (&day(14), &day(7), &day(21))
    );
    assert_eq!((s.uses, s.uses_dispensed), (3, 1));
    let e = h
        .clinic("clinic")
        .await
        .cancel_prescription(pb::CancelPrescriptionRequest {
            prescription_id: rx.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Too early: six days later. Inside the window, another pharmacy takes the second use.
    h.clock.set(start + 6 * DAY);
    let e = receive(&h, "pharmacy2", &rx).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains(&window.from), "{e:?}");
    h.clock.set(start + 7 * DAY);
    assert_eq!(
        receive(&h, "pharmacy2", &rx).await.unwrap(),
        pb::PrescriptionState::Accepted
    );
    let r = dispense(&h, "pharmacy2", &record(&h, &rx, 2, true, &[Complete]))
        .await
        .unwrap();
    assert_eq!(r.state(), pb::PrescriptionState::AwaitingRefill);
    // The third use at the start of its window ends it; a fourth is refused.
    h.clock.set(start + 14 * DAY);
    receive(&h, "pharmacy", &rx).await.unwrap();
    let r = dispense(&h, "pharmacy", &record(&h, &rx, 3, true, &[Complete]))
        .await
        .unwrap();
    assert_eq!(r.state(), pb::PrescriptionState::Dispensed);
    let s = status(&h, &rx).await;
    assert_eq!((s.uses_dispensed, s.dispensing_records.len()), (3, 3));
    assert!(s.next_use.is_none());
    let e = receive(&h, "pharmacy2", &rx).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = dispense(&h, "pharmacy", &record(&h, &rx, 4, true, &[Complete]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Too late: a refill whose next use is not taken within its window expires.
    let late = register(&h, "R-2", 5, 1, 2).await;
    receive(&h, "pharmacy", &late).await.unwrap();
    dispense(&h, "pharmacy", &record(&h, &late, 1, true, &[Complete]))
        .await
        .unwrap();
    h.clock.set(start + (14 + 21 + 1) * DAY);
    let e = receive(&h, "pharmacy", &late).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("expired"), "{e:?}");
    assert_eq!(
        status(&h, &late).await.state(),
        pb::PrescriptionState::Expired
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_without_a_days_based_line_is_refused() {
    let h = start_with(|_| {}).await;
    let mut rx = demo_prescription("R-3", patient(6), h.today());
    rx.refill_count = 2;
    rx.lines[0].dosing = pb::Dosing::AsNeeded as i32;
    rx.lines[0].days_supplied = 0;
    let e = h.register("clinic", &rx).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("refill_count"), "{e:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prescriptions_accepted_too_long_without_a_record_are_stuck() {
    use rxgate::wire::proto::v1::admin_service_client::AdminServiceClient;
    let h = start_with(|_| {}).await;
    let start = h.now();
    let idle = register(&h, "S-1", 7, 1, 1).await;
    let partly = register(&h, "S-2", 8, 2, 1).await;
    let done = register(&h, "S-3", 9, 1, 1).await;
    for rx in [&idle, &partly, &done] {
        receive(&h, "pharmacy", rx).await.unwrap();
    }
    dispense(&h, "pharmacy", &record(&h, &done, 1, true, &[Complete]))
        .await
        .unwrap();
    dispense(
        &h,
        "pharmacy",
        &record(&h, &partly, 1, false, &[Complete, NotDispensed]),
    )
    .await
    .unwrap();
    h.clock.set(start + 2 * DAY);
    dispense(
        &h,
        "pharmacy",
        &record(&h, &partly, 2, false, &[NotDispensed, Partial]),
    )
    .await
    .unwrap();
    h.clock.set(start + 3 * DAY + DAY / 2);
    let stuck = AdminServiceClient::new(h.channel("operator").await)
        .list_stuck_prescriptions(pb::ListStuckPrescriptionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .prescriptions;
    let ids: Vec<_> = stuck.iter().map(|s| s.prescription_id.as_str()).collect();
    assert_eq!(ids, [idle.id.as_str()], "only the one idle for 3.5 days");
    assert_eq!(
        (stuck[0].pharmacy_code.as_str(), stuck[0].records),
        ("1340000001", 0)
    );
    let e = AdminServiceClient::new(h.channel("clinic").await)
        .list_stuck_prescriptions(pb::ListStuckPrescriptionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The gauge counts them (counted at start and every minute).
    let h = h.restart().await;
    let mut gauge = String::new();
    for _ in 0..50 {
        gauge = h.metrics_line("rxgate_stuck_prescriptions ").await;
        if gauge.ends_with(" 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gauge, "rxgate_stuck_prescriptions 1");
    h.shutdown().await;
}
