//! Hostile clients with valid certificates (issue "Hostile clients I"): over-long line lists,
//! a padded history, overflowing days, a consent-masked check used as an oracle, unbounded
//! thresholds. Each test reproduces a finding of the adversarial review against the real server
//! over mutual TLS, with real signatures and the shipped drug master, and asserts the bound that
//! now holds: a clear refusal, and a check that still sees what it must.

use crate::common;

use common::{Harness, bad_fields, line, patient, prescription, start_with};
use prost::Message;
use rxgate::{
    cli::demo::demo_dispensing,
    limits::Limits,
    wire::proto::v1::{self as pb, admin_service_client::AdminServiceClient},
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const CLINIC: &str = "1310000001";
const CLINIC2: &str = "1310000002";

// Receipt codes from the shipped master.
const TRIAZOLAM: &str = "611120055";
const ITRACONAZOLE: &str = "616290177"; // contraindicated with triazolam
const FLUCONAZOLE: &str = "616290165"; // contraindicated with triazolam
const AMLODIPINE: &str = "612170710"; // no interaction with either

fn clinic_name(institution: &str) -> &'static str {
    if institution == CLINIC {
        "clinic"
    } else {
        "clinic2"
    }
}

async fn register(
    h: &Harness,
    rx: &pb::Prescription,
) -> Result<pb::RegisterPrescriptionResponse, Status> {
    h.clinic(clinic_name(&rx.institution_code))
        .await
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", rx.encode_to_vec())),
            consent: pb::Consent::Card as i32,
            acknowledgements: vec![],
            check_options: Some(pb::CheckOptions {
                // The registrations here set up histories: their own findings do not matter.
                ..Default::default()
            }),
        })
        .await
        .map(|r| r.into_inner())
}

async fn check(
    h: &Harness,
    draft: &pb::Prescription,
    consent: pb::Consent,
) -> Result<pb::CheckResponse, Status> {
    h.clinic(clinic_name(&draft.institution_code))
        .await
        .check_prescription(pb::CheckPrescriptionRequest {
            draft: Some(draft.clone()),
            consent: consent as i32,
            check_options: None,
        })
        .await
        .map(|r| r.into_inner())
}

/// The dev pharmacy receives (accepts) the prescription registered as `registered` for
/// patient `n`; a repeat by the same pharmacy is answered again.
async fn receive(h: &Harness, n: u32, registered: &pb::RegisterPrescriptionResponse) {
    h.pharmacy("pharmacy")
        .await
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(patient(n)),
            exchange_number: registered.exchange_number.clone(),
            consent: pb::Consent::Card as i32,
            ..Default::default()
        })
        .await
        .unwrap();
}

fn criticals(findings: &[pb::Finding]) -> usize {
    findings
        .iter()
        .filter(|f| f.indicator() == pb::Indicator::Critical)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_lists_past_their_limit_are_refused_before_any_check() {
    let h = start_with(|_| {}).await;
    // A draft at the limit is checked; one line more is refused, naming the field and limit.
    let max = Limits::default().prescription_lines;
    let at_limit = prescription(&h, CLINIC, "L-1", 1, &vec![AMLODIPINE; max]);
    check(&h, &at_limit, pb::Consent::Card).await.unwrap();
    let over = prescription(&h, CLINIC, "L-2", 1, &vec![AMLODIPINE; max + 1]);
    let e = check(&h, &over, pb::Consent::Card).await.unwrap_err();
    assert_eq!(bad_fields(&e), ["draft.lines"]);
    assert!(
        e.message().contains(&format!("at most {max} ")),
        "{}",
        e.message()
    );
    // The same for a signed prescription, and for a dispensing check.
    let e = register(&h, &over).await.unwrap_err();
    assert_eq!(bad_fields(&e), ["lines"]);
    let registered = register(&h, &prescription(&h, CLINIC, "L-3", 1, &[AMLODIPINE]))
        .await
        .unwrap();
    let mut pharmacy = h.pharmacy("pharmacy").await;
    receive(&h, 1, &registered).await;
    let dispensed = demo_dispensing("L-3", h.today()).lines[0].clone();
    let e = pharmacy
        .check_dispensing(pb::CheckDispensingRequest {
            prescription_id: registered.prescription_id,
            lines: vec![dispensed; Limits::default().dispensing_lines + 1],
            consent: pb::Consent::Card as i32,
            check_options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&e), ["lines"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_padded_history_is_refused_and_hides_no_contraindication() {
    let h = start_with(|_| {}).await;
    register(&h, &prescription(&h, CLINIC2, "ITRA-1", 3, &[ITRACONAZOLE]))
        .await
        .unwrap();
    // The review's padding: prescriptions of thousands of lines (4,500 aborted the process).
    let pad = prescription(&h, CLINIC, "PAD-0", 3, &[AMLODIPINE; 4_500]);
    assert_eq!(
        bad_fields(&register(&h, &pad).await.unwrap_err()),
        ["lines"]
    );
    // Within the line limit, one institution holds a bounded number of undispensed lines per
    // patient (64 by default: two prescriptions of 32).
    let limits = Limits::default();
    let full = limits.active_lines_per_institution / limits.prescription_lines;
    for n in 1..=full {
        let lines = vec![AMLODIPINE; limits.prescription_lines];
        let rx = prescription(&h, CLINIC, &format!("PAD-{n}"), 3, &lines);
        register(&h, &rx).await.unwrap();
    }
    let third = prescription(&h, CLINIC, "PAD-3", 3, &[AMLODIPINE]);
    let e = register(&h, &third).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("active_lines_per_institution"),
        "{}",
        e.message()
    );
    // The padding clinic's own check still sees the other clinic's itraconazole.
    let triazolam = prescription(&h, CLINIC, "TRI-1", 3, &[TRIAZOLAM]);
    let found = check(&h, &triazolam, pb::Consent::Card).await.unwrap();
    assert_eq!(criticals(&found.findings), 1, "{:?}", found.findings);
    assert_eq!(found.findings[0].kind(), pb::FindingKind::Contraindication);

    // A history larger than the bound in force (lowered after it was written) is not read in
    // part: every line is answered with a critical not-checked finding.
    let h = h
        .restart_with(|c| {
            c.limits.history_entries_per_patient = c.limits.prescription_lines;
        })
        .await;
    let two = prescription(&h, CLINIC, "TRI-2", 3, &[TRIAZOLAM, AMLODIPINE]);
    let found = check(&h, &two, pb::Consent::None).await.unwrap();
    let kinds: Vec<_> = found
        .findings
        .iter()
        .map(|f| (f.line, f.kind(), f.indicator()))
        .collect();
    assert_eq!(
        kinds,
        [
            (0, pb::FindingKind::NotChecked, pb::Indicator::Critical),
            (1, pb::FindingKind::NotChecked, pb::Indicator::Critical),
        ]
    );
    h.shutdown().await;
}

/// Receives the prescription registered as `registered` for patient `n` at the dev pharmacy
/// and records a dispensing of `code` for `days`.
async fn dispense(
    h: &Harness,
    number: &str,
    n: u32,
    registered: &pb::RegisterPrescriptionResponse,
    code: &str,
    days: u32,
) -> Result<pb::RecordDispensingResponse, Status> {
    let mut pharmacy = h.pharmacy("pharmacy").await;
    // Accepted by the first call; the calls after it are answered as repeats.
    receive(h, n, registered).await;
    let mut record = demo_dispensing(number, h.today());
    record.institution_code = CLINIC2.into();
    record.lines[0].drug = line(code).drug;
    record.lines[0].days_supplied = days;
    pharmacy
        .record_dispensing(pb::RecordDispensingRequest {
            dispensing_record: Some(h.sign("pharmacist", record.encode_to_vec())),
        })
        .await
        .map(|r| r.into_inner())
}

/// A dispensing record is a legal record and its drugs must reach the checks: a patient's
/// record at its bound (filled by others, say) never refuses one. The record then holds more
/// than the bound, and a check answers critical not-checked findings instead of a partial one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_record_never_refuses_a_dispensing() {
    let h = start_with(|c| {
        c.limits.prescription_lines = 1;
        c.limits.history_entries_per_patient = 1;
    })
    .await;
    let rx = prescription(&h, CLINIC2, "FULL-1", 6, &[ITRACONAZOLE]);
    let registered = register(&h, &rx).await.unwrap();
    receive(&h, 6, &registered).await;
    // Two strengths given for the one prescribed line: two entries in place of one.
    let mut record = demo_dispensing("FULL-1", h.today());
    record.institution_code = CLINIC2.into();
    record.lines[0].drug = line(ITRACONAZOLE).drug;
    let mut second = record.lines[0].clone();
    second.drug = line(FLUCONAZOLE).drug;
    record.lines.push(second);
    h.pharmacy("pharmacy")
        .await
        .record_dispensing(pb::RecordDispensingRequest {
            dispensing_record: Some(h.sign("pharmacist", record.encode_to_vec())),
        })
        .await
        .unwrap();
    let triazolam = prescription(&h, CLINIC, "TRI-5", 6, &[TRIAZOLAM]);
    let found = check(&h, &triazolam, pb::Consent::Card).await.unwrap();
    let kinds: Vec<_> = found.findings.iter().map(|f| f.kind()).collect();
    assert_eq!(kinds, [pb::FindingKind::NotChecked]);
    assert_eq!(found.findings[0].indicator(), pb::Indicator::Critical);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_days_supplied_never_erases_a_dispensed_drug() {
    let h = start_with(|_| {}).await;
    let rx = prescription(&h, CLINIC2, "DAYS-1", 4, &[ITRACONAZOLE]);
    let registered = register(&h, &rx).await.unwrap();
    for days in [u32::MAX, 2_147_483_653, 366] {
        let e = dispense(&h, "DAYS-1", 4, &registered, ITRACONAZOLE, days)
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&e), ["lines[0].days_supplied"], "{days}");
    }
    dispense(&h, "DAYS-1", 4, &registered, ITRACONAZOLE, 365)
        .await
        .unwrap();
    // A year's supply stays in the history: another clinic's triazolam meets it.
    let triazolam = prescription(&h, CLINIC, "TRI-3", 4, &[TRIAZOLAM]);
    let found = check(&h, &triazolam, pb::Consent::Card).await.unwrap();
    assert_eq!(criticals(&found.findings), 1, "{:?}", found.findings);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconsented_check_names_few_lines_and_every_check_spends_the_patients_budget() {
    let h = start_with(|c| c.limits.patient_check_lines = 17).await;
    register(&h, &prescription(&h, CLINIC2, "OR-1", 5, &[ITRACONAZOLE]))
        .await
        .unwrap();
    // Nine candidates and the masked answer would say which the patient takes: without consent
    // a check names at most ten lines.
    let eleven = prescription(&h, CLINIC, "OR-2", 5, &[AMLODIPINE; 11]);
    let e = check(&h, &eleven, pb::Consent::None).await.unwrap_err();
    assert_eq!(bad_fields(&e), ["lines"]);
    let ten = prescription(&h, CLINIC, "OR-3", 5, &[AMLODIPINE; 10]);
    check(&h, &ten, pb::Consent::None).await.unwrap();

    // Every check spends the same per-patient budget: two registrations, the check of ten
    // lines and the receipt have spent 13 of 17 lines, which leaves CheckDispensing 4.
    let registered = register(&h, &prescription(&h, CLINIC2, "OR-4", 5, &[FLUCONAZOLE]))
        .await
        .unwrap();
    let mut pharmacy = h.pharmacy("pharmacy").await;
    receive(&h, 5, &registered).await;
    let line = demo_dispensing("OR-4", h.today()).lines[0].clone();
    let mut answered = 0;
    let refused = loop {
        let r = pharmacy
            .check_dispensing(pb::CheckDispensingRequest {
                prescription_id: registered.prescription_id.clone(),
                lines: vec![line.clone()],
                consent: pb::Consent::Verbal as i32,
                check_options: None,
            })
            .await;
        match r {
            Ok(_) => answered += 1,
            Err(e) => break e,
        }
        assert!(answered <= 100, "CheckDispensing is never limited");
    };
    assert_eq!(answered, 4);
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.get_details_retry_info().is_some());
    // Care is never refused by the budget: the pharmacy still records its dispensing.
    let mut record = demo_dispensing("OR-4", h.today());
    record.institution_code = CLINIC2.into();
    pharmacy
        .record_dispensing(pb::RecordDispensingRequest {
            dispensing_record: Some(h.sign("pharmacist", record.encode_to_vec())),
        })
        .await
        .unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_are_capped_and_critical_findings_never_dropped() {
    let h = start_with(|c| c.limits.findings_per_answer = 1).await;
    register(
        &h,
        &prescription(
            &h,
            CLINIC2,
            "CAP-1",
            6,
            &[ITRACONAZOLE, FLUCONAZOLE, AMLODIPINE],
        ),
    )
    .await
    .unwrap();
    // Two contraindications (critical) and two duplicates (warnings) against clinic 2's lines.
    let draft = prescription(&h, CLINIC, "CAP-2", 6, &[TRIAZOLAM, AMLODIPINE, AMLODIPINE]);
    let found = check(&h, &draft, pb::Consent::Card).await.unwrap();
    assert_eq!(criticals(&found.findings), 2, "{:?}", found.findings);
    assert_eq!(found.findings.len(), 3);
    assert!(found.truncated);
    assert_eq!(found.omitted, 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_threshold_that_would_wrap_is_refused() {
    let h = start_with(|_| {}).await;
    let registered = register(&h, &prescription(&h, CLINIC, "ST-1", 7, &[AMLODIPINE]))
        .await
        .unwrap();
    receive(&h, 7, &registered).await;
    let mut admin = AdminServiceClient::new(h.channel("operator").await);
    let e = admin
        .list_stuck_prescriptions(pb::ListStuckPrescriptionsRequest {
            stuck_after_secs: 1 << 63,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&e), ["stuck_after_secs"]);
    // A just-accepted prescription is not stuck after an hour.
    let stuck = admin
        .list_stuck_prescriptions(pb::ListStuckPrescriptionsRequest {
            stuck_after_secs: 3_600,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stuck.prescriptions.is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_covers_at_most_a_year_of_issue_dates() {
    let h = start_with(|_| {}).await;
    let mut clinic = h.clinic("clinic").await;
    let search = |from: i32| pb::SearchPrescriptionsRequest {
        patient_key: Some(patient(8)),
        issued_from: h.today().add_days(from).to_string(),
        issued_to: h.today().to_string(),
    };
    clinic.search_prescriptions(search(-366)).await.unwrap();
    // From year 0 to today was one scan over every prescription of the patient.
    let e = clinic.search_prescriptions(search(-367)).await.unwrap_err();
    assert_eq!(bad_fields(&e), ["issued_from"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_filter_names_each_kind_at_most_once() {
    use rxgate::wire::proto::v1::event_service_client::EventServiceClient;
    let h = start_with(|_| {}).await;
    let mut events = EventServiceClient::new(h.channel("clinic").await);
    let watch = |kinds: Vec<pb::EventKind>| pb::WatchEventsRequest {
        after_sequence: 0,
        filter: Some(pb::EventFilter {
            kinds: kinds.into_iter().map(|k| k as i32).collect(),
            ..Default::default()
        }),
    };
    let twice = vec![pb::EventKind::Registered, pb::EventKind::Registered];
    let e = events.watch_events(watch(twice)).await.unwrap_err();
    assert_eq!(bad_fields(&e), ["filter.kinds"]);
    let all_six = vec![
        pb::EventKind::Registered,
        pb::EventKind::Accepted,
        pb::EventKind::Returned,
        pb::EventKind::Cancelled,
        pb::EventKind::Expired,
        pb::EventKind::DispensingRecorded,
    ];
    events.watch_events(watch(all_six)).await.unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_naming_many_critical_findings_reaches_the_client() {
    let h = start_with(|_| {}).await;
    let lines = Limits::default().prescription_lines;
    let half = lines / 2;
    let azoles = [vec![ITRACONAZOLE; half], vec![FLUCONAZOLE; half]].concat();
    let azoles = prescription(&h, CLINIC2, "MANY-1", 9, &azoles);
    register(&h, &azoles).await.unwrap();
    // Every triazolam line meets two rules (itraconazole, fluconazole), each naming its `half`
    // entries: 2 × lines critical findings, none acknowledged. The refusal names a bounded part
    // of them in its trailer, without the origins (`others`) a finding may hold.
    let triazolam = prescription(&h, CLINIC, "MANY-2", 9, &vec![TRIAZOLAM; lines]);
    let mut clinic = h.clinic("clinic").await;
    let request = pb::RegisterPrescriptionRequest {
        prescription: Some(h.sign("doctor", triazolam.encode_to_vec())),
        consent: pb::Consent::Card as i32,
        ..Default::default()
    };
    let e = clinic
        .register_prescription(request.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let to_acknowledge = e.get_details_precondition_failure().unwrap().violations;
    assert_eq!(to_acknowledge.len(), 32);
    let details = tonic_types::pb::Status::decode(e.details()).unwrap();
    let findings = details
        .details
        .iter()
        .find(|a| a.type_url.ends_with("rxgate.v1.CheckFindings"))
        .map(|a| pb::CheckFindings::decode(a.value.as_slice()).unwrap())
        .unwrap();
    assert_eq!(findings.findings.len(), 8);
    assert!(findings.truncated);
    assert_eq!(findings.omitted as usize, 2 * lines - 8);
    for f in &findings.findings {
        assert!(
            f.others.is_empty() && f.other.is_some() && f.origin.is_some(),
            "{f:?}"
        );
    }
    // The connection survives it: the same client is answered again.
    let e = clinic.register_prescription(request).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    h.shutdown().await;
}

/// Acknowledgements for `findings`, each with a reason.
fn acknowledging(findings: &[String]) -> Vec<pb::Acknowledgement> {
    findings
        .iter()
        .map(|id| pb::Acknowledgement {
            finding_id: id.clone(),
            reason: "known and monitored".into(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_past_the_acknowledgement_limit_registers_only_under_warn() {
    // The bound of docs/LIMITS.md, scaled down: at most 3 acknowledgements, and three triazolam
    // lines that each meet two rules (itraconazole, fluconazole): 6 critical findings.
    let h = start_with(|c| c.limits.acknowledgements = 3).await;
    let azoles = prescription(&h, CLINIC2, "ACK-1", 12, &[ITRACONAZOLE, FLUCONAZOLE]);
    register(&h, &azoles).await.unwrap();
    let rx = prescription(&h, CLINIC, "ACK-2", 12, &[TRIAZOLAM; 3]);
    let attempt = |acknowledgements| {
        let request = pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", rx.encode_to_vec())),
            consent: pb::Consent::Card as i32,
            acknowledgements,
            check_options: None,
        };
        let h = &h;
        async move {
            h.clinic("clinic")
                .await
                .register_prescription(request)
                .await
        }
    };
    let e = attempt(vec![]).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let ids: Vec<String> = e
        .get_details_precondition_failure()
        .unwrap()
        .violations
        .into_iter()
        .map(|v| v.subject)
        .collect();
    assert_eq!(ids.len(), 6);
    // Every one acknowledged: more than the limit, refused as such; as many as allowed: the
    // others still unacknowledged.
    let e = attempt(acknowledging(&ids)).await.unwrap_err();
    assert_eq!(bad_fields(&e), ["acknowledgements"]);
    let e = attempt(acknowledging(&ids[..3])).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Under on_critical = "warn" it registers, with its findings.
    let h = h
        .restart_with(|c| c.checks.on_critical = rxgate::config::OnCriticalConfig::Warn)
        .await;
    let registered = register(&h, &rx).await.unwrap();
    assert_eq!(criticals(&registered.findings), 6);
    h.shutdown().await;
}

/// A dispensing record of prescription `number` (of clinic 2) giving `lines` lines: two products
/// per prescribed line, alternately amlodipine and fluconazole.
fn record_of(h: &Harness, number: &str, lines: usize) -> pb::SignedDocument {
    let mut record = demo_dispensing(number, h.today());
    record.institution_code = CLINIC2.into();
    let template = record.lines[0].clone();
    record.lines = (0..lines)
        .map(|j| pb::DispensedLine {
            prescription_line: (j / 2) as u32,
            drug: line([AMLODIPINE, FLUCONAZOLE][j % 2]).drug,
            ..template.clone()
        })
        .collect();
    h.sign("pharmacist", record.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pharmacy_cannot_pad_a_patients_history_either() {
    let h = start_with(|_| {}).await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    let dispense = |record: pb::SignedDocument| pb::RecordDispensingRequest {
        dispensing_record: Some(record),
    };
    // A record gives at most two products per prescribed line.
    let one = register(&h, &prescription(&h, CLINIC2, "PH-1", 10, &[AMLODIPINE]))
        .await
        .unwrap();
    receive(&h, 10, &one).await;
    let e = pharmacy
        .record_dispensing(dispense(record_of(&h, "PH-1", 3)))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&e), ["lines"]);
    // A pharmacy holds at most as many active lines of a patient as any institution.
    let limits = Limits::default();
    let half = limits.active_lines_per_institution / 2;
    for n in 2..=3 {
        let number = format!("PH-{n}");
        let rx = prescription(&h, CLINIC2, &number, 11, &vec![AMLODIPINE; half]);
        let registered = register(&h, &rx).await.unwrap();
        receive(&h, 11, &registered).await;
        let given = if n == 2 { 2 * half } else { 1 };
        let answer = pharmacy
            .record_dispensing(dispense(record_of(&h, &number, given)))
            .await;
        if n == 2 {
            answer.unwrap();
        } else {
            let e = answer.unwrap_err();
            assert_eq!(e.code(), Code::ResourceExhausted);
            assert!(
                e.message().contains("active_lines_per_institution"),
                "{e:?}"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_spend_the_check_budget_and_answer_masked_once_it_is_spent() {
    let h = start_with(|c| {
        c.limits.patient_check_lines = 2;
        c.checks.on_critical = rxgate::config::OnCriticalConfig::Warn;
    })
    .await;
    register(&h, &prescription(&h, CLINIC2, "BU-1", 12, &[ITRACONAZOLE]))
        .await
        .unwrap();
    let triazolam = |number: &str| prescription(&h, CLINIC, number, 12, &[TRIAZOLAM]);
    // Within the budget (two lines): the finding names the other drug, as consent allows.
    let within = register(&h, &triazolam("BU-2")).await.unwrap();
    assert!(within.findings[0].other.is_some(), "{within:?}");
    // Spent: never refused (care goes on), but answered as without consent, so that signed
    // registrations are no oracle past the budget.
    let spent = register(&h, &triazolam("BU-3")).await.unwrap();
    assert_eq!(spent.findings.len(), 1);
    assert_eq!(spent.findings[0].indicator(), pb::Indicator::Critical);
    assert!(spent.findings[0].other.is_none(), "{spent:?}");
    h.shutdown().await;
}
