//! The clinical checks in the running gateway: findings at registration, at receipt and in the
//! pre-issue and dispensing checks, read from the history the store keeps; the override policy;
//! consent masking on the wire; the pre-check rate limit. Real server over mutual TLS, real embedded
//! store, real signatures, the shipped drug master and contraindication table.

use crate::common;

use std::time::Duration;

use common::{Harness, line, patient, prescription, start_with};
use prost::Message;
use rxgate::{
    cli::demo::demo_dispensing,
    config::OnCriticalConfig,
    limits::Limits,
    service::records::{OverrideRecord, decode},
    store::{Store, Table},
    wire::proto::v1::{self as pb, admin_service_client::AdminServiceClient},
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const CLINIC: &str = "1310000001";
const CLINIC2: &str = "1310000002";
const PHARMACY: &str = "1340000001";
const PHARMACY2: &str = "1340000002";

// Receipt codes from the shipped master.
const TRIAZOLAM: &str = "611120055"; // ハルシオン
const ITRACONAZOLE: &str = "616290177"; // イトリゾール: contraindicated with triazolam
const FLUCONAZOLE: &str = "616290165"; // ジフルカン: contraindicated with triazolam
const AMLODIPINE: &str = "612170710"; // ノルバスク: no interaction with either

fn consented(consent: pb::Consent) -> i32 {
    consent as i32
}

/// Registers as the dev clinic whose code is `institution`.
async fn register(
    h: &Harness,
    rx: &pb::Prescription,
    consent: pb::Consent,
    acknowledgements: Vec<pb::Acknowledgement>,
) -> Result<pb::RegisterPrescriptionResponse, Status> {
    let name = if rx.institution_code == CLINIC {
        "clinic"
    } else {
        "clinic2"
    };
    h.clinic(name)
        .await
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", rx.encode_to_vec())),
            consent: consented(consent),
            acknowledgements,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// Receives a registered prescription at `pharmacy` ("pharmacy" or "pharmacy2") and dispenses
/// it, with `dispensed` as the drug actually given.
async fn receive_and_dispense(
    h: &Harness,
    pharmacy: &str,
    rx: &pb::Prescription,
    registered: &pb::RegisterPrescriptionResponse,
    dispensed: &str,
) -> pb::ReceivePrescriptionResponse {
    let mut client = h.pharmacy(pharmacy).await;
    let received = client
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: rx.patient.as_ref().unwrap().key.clone(),
            exchange_number: registered.exchange_number.clone(),
            consent: consented(pb::Consent::Card),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut record = demo_dispensing(&rx.prescription_number, h.today());
    record.institution_code = rx.institution_code.clone();
    record.pharmacy_code = if pharmacy == "pharmacy" {
        PHARMACY
    } else {
        PHARMACY2
    }
    .into();
    record.lines[0].drug = line(dispensed).drug;
    client
        .record_dispensing(pb::RecordDispensingRequest {
            dispensing_record: Some(h.sign("pharmacist", record.encode_to_vec())),
        })
        .await
        .unwrap();
    received
}

async fn precheck(
    h: &Harness,
    clinic: &str,
    rx: &pb::Prescription,
    consent: pb::Consent,
    options: Option<pb::CheckOptions>,
) -> Result<pb::CheckResponse, Status> {
    h.clinic(clinic)
        .await
        .check_prescription(pb::CheckPrescriptionRequest {
            draft: Some(rx.clone()),
            consent: consented(consent),
            check_options: options,
        })
        .await
        .map(|r| r.into_inner())
}

fn kinds(findings: &[pb::Finding]) -> Vec<(pb::FindingKind, pb::Indicator)> {
    findings.iter().map(|f| (f.kind(), f.indicator())).collect()
}

/// The `rxgate.v1.CheckFindings` detail of a refused registration.
fn check_findings(status: &Status) -> pb::CheckFindings {
    let details = tonic_types::pb::Status::decode(status.details()).unwrap();
    let any = details
        .details
        .iter()
        .find(|a| a.type_url == "type.googleapis.com/rxgate.v1.CheckFindings")
        .expect("a CheckFindings detail");
    pb::CheckFindings::decode(any.value.as_slice()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_come_from_other_institutions_unless_the_caller_opts_in() {
    let h = start_with(|_| {}).await;
    let other = prescription(&h, CLINIC2, "DUP-1", 1, &[AMLODIPINE]);
    register(&h, &other, pb::Consent::Card, vec![])
        .await
        .unwrap();

    let first = prescription(&h, CLINIC, "DUP-2", 1, &[AMLODIPINE]);
    let r = register(&h, &first, pb::Consent::Card, vec![])
        .await
        .unwrap();
    assert_eq!(
        kinds(&r.findings),
        [(pb::FindingKind::Duplicate, pb::Indicator::Warning)]
    );
    let f = &r.findings[0];
    let origin = f.origin.as_ref().unwrap();
    assert_eq!(origin.kind(), pb::OriginKind::Prescription);
    assert_eq!(origin.institution_code, CLINIC2);
    assert_eq!(origin.date, h.today().to_string());
    assert_eq!(f.own.as_ref().unwrap().code, AMLODIPINE);
    assert_eq!(f.other.as_ref().unwrap().code, AMLODIPINE);
    assert!(!f.other.as_ref().unwrap().moiety.is_empty());
    assert!(f.summary.chars().count() < 140);

    // The clinic's own earlier prescription is excluded by default, counted when it opts in.
    let draft = prescription(&h, CLINIC, "DUP-3", 1, &[AMLODIPINE]);
    let national = precheck(&h, "clinic", &draft, pb::Consent::Card, None)
        .await
        .unwrap();
    assert_eq!(national.findings.len(), 1);
    let opted_in = pb::CheckOptions {
        include_same_institution: Some(true),
        ..Default::default()
    };
    let all = precheck(&h, "clinic", &draft, pb::Consent::Card, Some(opted_in))
        .await
        .unwrap();
    // One duplicate of amlodipine, from both clinics.
    assert_eq!(all.findings.len(), 1, "{:?}", all.findings);
    let mut origins: Vec<&str> = all.findings[0].others[0]
        .origins
        .iter()
        .map(|o| o.institution_code.as_str())
        .collect();
    origins.sort();
    assert_eq!(origins, [CLINIC, CLINIC2]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_finding_must_be_acknowledged_and_the_acknowledgement_is_kept() {
    let h = start_with(|_| {}).await;
    let other = prescription(&h, CLINIC2, "CI-1", 2, &[ITRACONAZOLE]);
    register(&h, &other, pb::Consent::Card, vec![])
        .await
        .unwrap();

    let rx = prescription(&h, CLINIC, "CI-2", 2, &[TRIAZOLAM]);
    let refused = register(&h, &rx, pb::Consent::Card, vec![])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let findings = check_findings(&refused).findings;
    assert_eq!(
        kinds(&findings),
        [(pb::FindingKind::Contraindication, pb::Indicator::Critical)]
    );
    let critical = &findings[0];
    assert_eq!(critical.other.as_ref().unwrap().code, ITRACONAZOLE);
    assert_eq!(critical.origin.as_ref().unwrap().institution_code, CLINIC2);
    let rule = critical.rule.as_ref().unwrap();
    assert!(
        rule.id.starts_with("CI-") && !rule.source.is_empty(),
        "{rule:?}"
    );
    let failure = refused.get_details_precondition_failure().unwrap();
    assert_eq!(failure.violations.len(), 1);
    assert_eq!(failure.violations[0].subject, critical.id);

    // An acknowledgement without a reason is malformed; one of another finding does not count.
    let blank = pb::Acknowledgement {
        finding_id: critical.id.clone(),
        reason: " ".into(),
    };
    let e = register(&h, &rx, pb::Consent::Card, vec![blank])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let wrong = pb::Acknowledgement {
        finding_id: "F-00".into(),
        reason: "known".into(),
    };
    let e = register(&h, &rx, pb::Consent::Card, vec![wrong])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    let ack = pb::Acknowledgement {
        finding_id: critical.id.clone(),
        reason: "itraconazole stopped yesterday".into(),
    };
    let registered = register(&h, &rx, pb::Consent::Card, vec![ack])
        .await
        .unwrap();
    // The same finding, the same id; the refusal named its first origin only.
    assert_eq!(registered.findings.len(), 1);
    assert_eq!(
        pb::Finding {
            others: vec![],
            ..registered.findings[0].clone()
        },
        findings[0]
    );
    assert_eq!(registered.findings[0].others.len(), 1);

    // The acknowledgement is stored with who made it.
    let stopped = h.stop().await;
    let opened = stopped.reopen().await;
    let store = opened.store();
    let key = [
        b"override".as_slice(),
        &[0],
        registered.prescription_id.as_bytes(),
    ]
    .concat();
    let bytes = store
        .transact(move |tx| tx.get(Table::Clinical, &key))
        .await
        .unwrap()
        .unwrap()
        .expect("an override record");
    let OverrideRecord::V1(stored) = decode(&bytes).unwrap();
    assert_eq!(stored.institution_code, CLINIC);
    assert_eq!(stored.signer_serial_number, "DEV-DR-0001");
    assert_eq!(stored.acknowledged.len(), 1);
    assert_eq!(stored.acknowledged[0].finding_id, critical.id);
    assert_eq!(stored.acknowledged[0].indicator, "critical");
    assert_eq!(
        stored.acknowledged[0].reason,
        "itraconazole stopped yesterday"
    );
    opened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_warn_policy_a_critical_finding_registers() {
    let h = start_with(|c| c.checks.on_critical = OnCriticalConfig::Warn).await;
    let other = prescription(&h, CLINIC2, "W-1", 3, &[ITRACONAZOLE]);
    register(&h, &other, pb::Consent::Card, vec![])
        .await
        .unwrap();
    let rx = prescription(&h, CLINIC, "W-2", 3, &[TRIAZOLAM]);
    let r = register(&h, &rx, pb::Consent::Card, vec![]).await.unwrap();
    assert_eq!(r.state(), pb::PrescriptionState::Registered);
    assert_eq!(
        kinds(&r.findings),
        [(pb::FindingKind::Contraindication, pb::Indicator::Critical)]
    );
    h.shutdown().await;
}

/// Every per-request switch on.
fn every_switch() -> Option<pb::CheckOptions> {
    Some(pb::CheckOptions {
        include_same_institution: Some(true),
        caution: Some(true),
        same_class: Some(true),
        within_prescription: Some(true),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worst_prescription_against_the_largest_history_registers_once_acknowledged() {
    let h = start_with(|_| {}).await;
    let lines = Limits::default().prescription_lines;
    // The largest history a registration of `lines` lines fits beside: every entry itraconazole,
    // from clinic 2 (two prescriptions) and from the clinic itself (counted: every switch on).
    for (clinic, number) in [(CLINIC2, "BIG-1"), (CLINIC2, "BIG-2"), (CLINIC, "BIG-3")] {
        let rx = prescription(&h, clinic, number, 40, &vec![ITRACONAZOLE; lines]);
        register(&h, &rx, pb::Consent::Card, vec![]).await.unwrap();
    }
    let history = 3 * lines;
    assert_eq!(
        history + lines,
        Limits::default().history_entries_per_patient
    );
    let rx = prescription(&h, CLINIC, "BIG-4", 40, &vec![TRIAZOLAM; lines]);
    let checked = precheck(&h, "clinic", &rx, pb::Consent::Card, every_switch())
        .await
        .unwrap();
    let critical: Vec<&pb::Finding> = checked
        .findings
        .iter()
        .filter(|f| f.indicator() == pb::Indicator::Critical)
        .collect();
    // One critical finding per line, naming the drug once and each institution (of one date)
    // once.
    assert_eq!(critical.len(), lines);
    for f in &critical {
        let [other] = f.others.as_slice() else {
            panic!("one other drug: {f:?}")
        };
        let mut institutions: Vec<&str> = other
            .origins
            .iter()
            .map(|o| o.institution_code.as_str())
            .collect();
        institutions.sort();
        assert_eq!(institutions, [CLINIC, CLINIC2], "{f:?}");
    }
    let acknowledgements = critical
        .iter()
        .map(|f| pb::Acknowledgement {
            finding_id: f.id.clone(),
            reason: "itraconazole stops today".into(),
        })
        .collect();
    let registered = h
        .clinic("clinic")
        .await
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", rx.encode_to_vec())),
            consent: consented(pb::Consent::Card),
            acknowledgements,
            check_options: every_switch(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(registered.findings, checked.findings, "the same ids");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispensed_line_counts_once_as_what_was_dispensed_and_nothing_flags_itself() {
    let h = start_with(|_| {}).await;
    // Another clinic prescribes itraconazole; the pharmacy gives amlodipine after a query.
    let other = prescription(&h, CLINIC2, "D-1", 4, &[ITRACONAZOLE]);
    let registered = register(&h, &other, pb::Consent::Card, vec![])
        .await
        .unwrap();
    let received = receive_and_dispense(&h, "pharmacy", &other, &registered, AMLODIPINE).await;
    assert!(
        received.findings.is_empty(),
        "the prescription flagged itself: {:?}",
        received.findings
    );

    let triazolam = prescription(&h, CLINIC, "D-2", 4, &[TRIAZOLAM]);
    let r = precheck(&h, "clinic", &triazolam, pb::Consent::Card, None)
        .await
        .unwrap();
    assert!(
        r.findings.is_empty(),
        "the prescribed drug still counts: {:?}",
        r.findings
    );
    let amlodipine = prescription(&h, CLINIC, "D-3", 4, &[AMLODIPINE]);
    let r = precheck(&h, "clinic", &amlodipine, pb::Consent::Card, None)
        .await
        .unwrap();
    assert_eq!(
        kinds(&r.findings),
        [(pb::FindingKind::Duplicate, pb::Indicator::Warning)]
    );
    let origin = r.findings[0].origin.as_ref().unwrap();
    assert_eq!(origin.kind(), pb::OriginKind::Dispensing);
    assert_eq!(origin.institution_code, PHARMACY);

    // A prescription whose line duplicates the history: at receipt and in the dispensing check
    // it meets the history, never itself.
    let ack_free = prescription(&h, CLINIC, "D-4", 4, &[AMLODIPINE, FLUCONAZOLE]);
    let registered = register(&h, &ack_free, pb::Consent::Card, vec![])
        .await
        .unwrap();
    let mut pharmacy = h.pharmacy("pharmacy2").await;
    let received = pharmacy
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(patient(4)),
            exchange_number: registered.exchange_number.clone(),
            consent: consented(pb::Consent::Card),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kinds(&received.findings), kinds(&registered.findings));
    assert_eq!(received.findings.len(), 1, "{:?}", received.findings);
    let lines_to_give = |code: &str| {
        let mut l = demo_dispensing("D-4", h.today()).lines[0].clone();
        l.drug = line(code).drug;
        vec![l]
    };
    let check = |lines| pb::CheckDispensingRequest {
        prescription_id: registered.prescription_id.clone(),
        lines,
        consent: consented(pb::Consent::Card),
        check_options: None,
    };
    let r = pharmacy
        .check_dispensing(check(lines_to_give(TRIAZOLAM)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    let r = pharmacy
        .check_dispensing(check(lines_to_give(AMLODIPINE)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kinds(&r.findings),
        [(pb::FindingKind::Duplicate, pb::Indicator::Warning)]
    );
    // Only the accepting pharmacy checks a dispensing.
    let e = h
        .pharmacy("pharmacy")
        .await
        .check_dispensing(check(lines_to_give(AMLODIPINE)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_and_expired_prescriptions_do_not_count() {
    let h = start_with(|_| {}).await;
    let cancelled = prescription(&h, CLINIC2, "C-1", 5, &[ITRACONAZOLE]);
    let r = register(&h, &cancelled, pb::Consent::Card, vec![])
        .await
        .unwrap();
    h.clinic("clinic2")
        .await
        .cancel_prescription(pb::CancelPrescriptionRequest {
            prescription_id: r.prescription_id,
        })
        .await
        .unwrap();
    let draft = prescription(&h, CLINIC, "C-2", 5, &[TRIAZOLAM]);
    let r = precheck(&h, "clinic", &draft, pb::Consent::Card, None)
        .await
        .unwrap();
    assert!(r.findings.is_empty(), "{:?}", r.findings);

    let expiring = prescription(&h, CLINIC2, "C-3", 5, &[ITRACONAZOLE]);
    register(&h, &expiring, pb::Consent::Card, vec![])
        .await
        .unwrap();
    let r = precheck(&h, "clinic", &draft, pb::Consent::Card, None)
        .await
        .unwrap();
    assert_eq!(r.findings.len(), 1);
    // Four Japan days later it has expired (the sweep or the read says so): it no longer counts.
    h.clock.set(h.now() + Duration::from_secs(5 * 86_400));
    let draft = prescription(&h, CLINIC, "C-4", 5, &[TRIAZOLAM]);
    let r = precheck(&h, "clinic", &draft, pb::Consent::Card, None)
        .await
        .unwrap();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_consent_histories_differing_in_the_other_side_give_identical_answers() {
    let h = start_with(|_| {}).await;
    let now = h.now();
    // Patient 6: itraconazole from clinic 2, dispensed at pharmacy 1, three days ago.
    h.clock.set(now - Duration::from_secs(3 * 86_400));
    let a = prescription(&h, CLINIC2, "M-1", 6, &[ITRACONAZOLE]);
    let ra = register(&h, &a, pb::Consent::Card, vec![]).await.unwrap();
    receive_and_dispense(&h, "pharmacy", &a, &ra, ITRACONAZOLE).await;
    // Patient 7: fluconazole, dispensed at pharmacy 2, yesterday.
    h.clock.set(now - Duration::from_secs(86_400));
    let b = prescription(&h, CLINIC2, "M-2", 7, &[FLUCONAZOLE]);
    let rb = register(&h, &b, pb::Consent::Card, vec![]).await.unwrap();
    receive_and_dispense(&h, "pharmacy2", &b, &rb, FLUCONAZOLE).await;
    h.clock.set(now);

    let draft = |n| prescription(&h, CLINIC, "M-3", n, &[TRIAZOLAM]);
    let answer = |consent| {
        let h = &h;
        async move {
            let six = precheck(h, "clinic", &draft(6), consent, None)
                .await
                .unwrap();
            let seven = precheck(h, "clinic", &draft(7), consent, None)
                .await
                .unwrap();
            (six.encode_to_vec(), seven.encode_to_vec(), six)
        }
    };
    let (six, seven, shown) = answer(pb::Consent::Card).await;
    assert_ne!(six, seven, "with consent the other side is shown");
    assert_eq!(shown.findings[0].other.as_ref().unwrap().code, ITRACONAZOLE);
    let (six, seven, masked) = answer(pb::Consent::None).await;
    assert_eq!(six, seven, "without consent the answers must not differ");
    let f = &masked.findings[0];
    assert_eq!(
        (f.kind(), f.indicator()),
        (pb::FindingKind::Contraindication, pb::Indicator::Critical)
    );
    assert!(f.own.is_none() && f.other.is_none() && f.origin.is_none() && f.rule.is_none());

    // The refused registration's error says no more.
    let mut refused = Vec::new();
    for n in [6, 7] {
        let mut rx = draft(n);
        rx.prescription_number = format!("M-4-{n}");
        let e = register(&h, &rx, pb::Consent::None, vec![])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        refused.push((e.message().to_owned(), e.details().to_vec()));
    }
    assert_eq!(refused[0], refused[1]);
    // An acknowledgement of the masked finding registers it.
    let ack = pb::Acknowledgement {
        finding_id: f.id.clone(),
        reason: "the patient says the azole course has ended".into(),
    };
    let mut rx = draft(6);
    rx.prescription_number = "M-5".into();
    register(&h, &rx, pb::Consent::None, vec![ack])
        .await
        .unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_codes_are_not_checked_and_never_refused() {
    let h = start_with(|_| {}).await;
    let rx = prescription(&h, CLINIC, "U-1", 8, &["999999999"]);
    let r = register(&h, &rx, pb::Consent::Card, vec![]).await.unwrap();
    assert_eq!(
        kinds(&r.findings),
        [(pb::FindingKind::NotChecked, pb::Indicator::Info)]
    );
    assert_eq!(r.findings[0].own.as_ref().unwrap().code, "999999999");
    // Dispensing an unknown code records a fact.
    receive_and_dispense(&h, "pharmacy", &rx, &r, "999999998").await;
    h.shutdown().await;
}

/// The audit records of `action`, filtered by patient pseudonym (hex) or not.
async fn audit_of(h: &Harness, action: &str, pseudonym: &str) -> Vec<pb::AuditRecord> {
    let mut audit = AdminServiceClient::new(h.channel("operator").await)
        .export_audit(pb::ExportAuditRequest {
            patient_pseudonym: pseudonym.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(record) = audit.message().await.unwrap() {
        if record.action == action {
            records.push(record);
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_issue_checks_spend_a_per_patient_budget_across_institutions_and_are_audited() {
    let h = start_with(|c| c.limits.patient_check_lines = 3).await;
    let two = prescription(&h, CLINIC, "R-1", 9, &[AMLODIPINE, AMLODIPINE]);
    precheck(&h, "clinic", &two, pb::Consent::None, None)
        .await
        .unwrap();
    // Another clinic asking about the same patient spends the same budget, whatever consent it
    // asserts: two more lines are refused, with the time to wait.
    let two_more = prescription(&h, CLINIC2, "R-2", 9, &[AMLODIPINE, TRIAZOLAM]);
    let e = precheck(&h, "clinic2", &two_more, pb::Consent::Card, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let retry = e.get_details_retry_info().expect("a RetryInfo detail");
    assert!(retry.retry_delay.is_some_and(|d| d > Duration::ZERO));
    let one = prescription(&h, CLINIC2, "R-3", 9, &[AMLODIPINE]);
    precheck(&h, "clinic2", &one, pb::Consent::Card, None)
        .await
        .unwrap();
    // The budget is kept in the store: a restart does not forgive it.
    let h = h.restart().await;
    let (nine, ten) = (one_of(&h, CLINIC, 9), one_of(&h, CLINIC, 10));
    let none = pb::Consent::None;
    let e = precheck(&h, "clinic", &nine, none, None).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    // Another patient is not held back.
    precheck(&h, "clinic", &ten, none, None).await.unwrap();
    // A draft must name the caller's own institution.
    let e = precheck(&h, "clinic2", &ten, none, None).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let all = audit_of(&h, "CheckPrescription", "").await;
    let outcomes: Vec<_> = all.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "OK",
            "RESOURCE_EXHAUSTED",
            "OK",
            "RESOURCE_EXHAUSTED",
            "OK",
            "PERMISSION_DENIED"
        ]
    );
    let asked: Vec<_> = all
        .iter()
        .map(|r| (r.line_count, r.consent.as_str()))
        .collect();
    assert_eq!(
        asked,
        [
            (2, "NONE"),
            (2, "CARD"),
            (1, "CARD"),
            (1, "NONE"),
            (1, "NONE"),
            (1, "NONE")
        ]
    );
    // One pseudonym per patient, whichever institution asked: the export filtered by it lists
    // exactly that patient's checks.
    let pseudonym = all[0].patient_pseudonym.clone();
    assert_eq!(pseudonym.len(), 64);
    assert!(all[..4].iter().all(|r| r.patient_pseudonym == pseudonym));
    assert!(all[4..].iter().all(|r| r.patient_pseudonym != pseudonym));
    let theirs = audit_of(&h, "CheckPrescription", &pseudonym).await;
    assert_eq!(theirs, all[..4]);
    // The operator's command computes it from the patient's identifiers and the key.
    let key = format!(
        "{}/certs/audit/pseudonym-dev.key",
        env!("CARGO_MANIFEST_DIR")
    );
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args([
            "audit",
            "pseudonym",
            "--key-file",
            &key,
            "--insurer",
            "06139999",
        ])
        .args(["--symbol", "ZQ", "--number", "0000009", "--branch", "01"])
        .output()
        .unwrap();
    assert!(cli.status.success());
    assert_eq!(String::from_utf8(cli.stdout).unwrap().trim(), pseudonym);
    // A registration is a check too: its record names the patient the same way.
    let rx = prescription(&h, CLINIC, "R-10", 9, &[AMLODIPINE]);
    register(&h, &rx, pb::Consent::Verbal, vec![])
        .await
        .unwrap();
    let registered = audit_of(&h, "RegisterPrescription", &pseudonym).await;
    let asked: Vec<_> = registered
        .iter()
        .map(|r| (r.line_count, r.consent.as_str()))
        .collect();
    assert_eq!(asked, [(1, "VERBAL")]);
    h.shutdown().await;
}

/// A one-line amlodipine draft of `institution` for patient `n`.
fn one_of(h: &Harness, institution: &str, n: u32) -> pb::Prescription {
    prescription(h, institution, "R-9", n, &[AMLODIPINE])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_checks_and_commits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start_with(|_| {}).await;
    let rx = prescription(&h, CLINIC, "MET-1", 11, &[AMLODIPINE]);
    register(&h, &rx, pb::Consent::Card, vec![]).await.unwrap();
    let e = register(&h, &rx, pb::Consent::Card, vec![]).await;
    assert!(e.is_ok(), "a repeat is idempotent");
    let denied = h
        .pharmacy("pharmacy")
        .await
        .check_dispensing(pb::CheckDispensingRequest {
            prescription_id: "0".repeat(32),
            ..Default::default()
        })
        .await;
    assert!(denied.is_err());

    let mut socket = tokio::net::TcpStream::connect(h.metrics_addr)
        .await
        .unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    socket.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for expected in [
        "rxgate_requests_total{rpc=\"RegisterPrescription\",code=\"OK\"} 2",
        "rxgate_requests_total{rpc=\"CheckDispensing\",code=\"INVALID_ARGUMENT\"} 1",
        "rxgate_request_duration_seconds_count{rpc=\"RegisterPrescription\"} 2",
        "rxgate_check_duration_seconds_count 2",
        "rxgate_chain_cache_lookups_total{result=\"hit\"} 1",
        "rxgate_master_current_products 20523",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    assert!(text.contains("rxgate_store_flush_duration_seconds_count"));
    assert!(text.contains("rxgate_store_batch_size_bucket"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_spends_the_check_budget_too() {
    let h = start_with(|c| c.limits.patient_check_lines = 2).await;
    let rx = |clinic: &str, number: &str, drug: &str| prescription(&h, clinic, number, 21, &[drug]);
    let consent = pb::Consent::Card;
    register(&h, &rx(CLINIC2, "KEPT-1", ITRACONAZOLE), consent, vec![])
        .await
        .unwrap();
    // Refused for its unacknowledged critical finding, within the budget: the finding names
    // the other drug, as consent allows; and its line is spent although nothing is stored.
    let refused = register(&h, &rx(CLINIC, "KEPT-2", TRIAZOLAM), consent, vec![])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(check_findings(&refused).findings[0].other.is_some());
    // So the budget is spent: the same refusal now answers as without consent. Had the refusal
    // given its line back, a clinic could probe the history by registrations it lets fail.
    let masked = register(&h, &rx(CLINIC, "KEPT-3", TRIAZOLAM), consent, vec![])
        .await
        .unwrap_err();
    assert_eq!(masked.code(), Code::FailedPrecondition, "{masked:?}");
    assert!(
        check_findings(&masked).findings[0].other.is_none(),
        "{masked:?}"
    );
    h.shutdown().await;
}
