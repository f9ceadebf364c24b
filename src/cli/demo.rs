//! `rxgate demo`: a clinic and a pharmacy go through register → lookup → receive → dispense →
//! status against a running `--dev` server, each step printed. Uses the development PKI it is
//! given (`dev_pki`) and the generated gRPC clients, as an integrator would.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use prost::Message;

use crate::{
    dev_pki::DevPki,
    domain::time::JapanDate,
    pki::signer::SigningKey,
    wire::proto::v1::{
        self as pb, dispensing_service_client::DispensingServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};

fn signed(signer: &SigningKey, content: Vec<u8>) -> anyhow::Result<pb::SignedDocument> {
    let cms_signature = signer.sign(&content, SystemTime::now())?;
    Ok(pb::SignedDocument {
        content,
        cms_signature,
    })
}

/// A demo prescription issued today by the dev clinic and doctor.
pub fn demo_prescription(
    number: &str,
    patient: pb::PatientKey,
    today: JapanDate,
) -> pb::Prescription {
    pb::Prescription {
        document_type: pb::DocumentType::Prescription as i32,
        institution_code: "1310000001".into(),
        prescription_number: number.into(),
        prescriber: Some(pb::Practitioner {
            name: "DEV Doctor Taro Iryo".into(),
            serial_number: "DEV-DR-0001".into(),
        }),
        patient: Some(pb::Patient {
            name: "DEV Patient Hanako".into(),
            birth_date: "1980-04-01".into(),
            sex: pb::Sex::Female as i32,
            key: Some(patient),
        }),
        issue_date: today.to_string(),
        usable_until: String::new(),
        refill_count: 1,
        lines: vec![pb::PrescriptionLine {
            drug: Some(pb::DrugCode {
                kind: pb::DrugCodeKind::Yj as i32,
                code: "2149039F1020".into(),
            }),
            quantity: "1".into(),
            unit: "錠".into(),
            dosage_instructions: "1日1回朝食後".into(),
            dosing: pb::Dosing::Days as i32,
            days_supplied: 14,
        }],
    }
}

/// The dispensing record of a demo prescription, by the dev pharmacy and pharmacist.
pub fn demo_dispensing(number: &str, today: JapanDate) -> pb::DispensingRecord {
    pb::DispensingRecord {
        document_type: pb::DocumentType::DispensingRecord as i32,
        institution_code: "1310000001".into(),
        prescription_number: number.into(),
        record_number: 1,
        r#final: true,
        pharmacy_code: "1340000001".into(),
        pharmacist: Some(pb::Practitioner {
            name: "DEV Pharmacist Saburo Yakuzai".into(),
            serial_number: "DEV-PH-0001".into(),
        }),
        dispensing_date: today.to_string(),
        lines: vec![pb::DispensedLine {
            prescription_line: 0,
            status: pb::DispensedLineStatus::Complete as i32,
            drug: Some(pb::DrugCode {
                kind: pb::DrugCodeKind::Yj as i32,
                code: "2149039F1020".into(),
            }),
            quantity: "14".into(),
            unit: "錠".into(),
            days_supplied: 14,
        }],
        important_information: true,
        important_message: "changed to a generic after a query to the prescriber".into(),
    }
}

fn state(s: i32) -> &'static str {
    pb::PrescriptionState::try_from(s).map_or("?", |s| s.as_str_name())
}

/// Runs the demo against `addr` as the clinic, pharmacy, doctor and pharmacist of `pki`; every
/// step must behave.
pub async fn run(addr: &str, pki: &DevPki) -> anyhow::Result<()> {
    let clinic = pki
        .client("clinic")
        .connect(addr)
        .await
        .context("connecting as the clinic")?;
    let pharmacy = pki
        .client("pharmacy")
        .connect(addr)
        .await
        .context("connecting as the pharmacy")?;
    let mut clinic = PrescriptionServiceClient::new(clinic);
    let mut pharmacy = DispensingServiceClient::new(pharmacy);

    let now = SystemTime::now();
    let today = JapanDate::of(now);
    let number = format!("DEMO-{}", now.duration_since(UNIX_EPOCH)?.as_millis());
    let patient = pb::PatientKey {
        kind: Some(pb::patient_key::Kind::Insurance(pb::InsuranceKey {
            insurer_number: "06139999".into(),
            symbol: "12".into(),
            number: "345".into(),
            branch: "01".into(),
        })),
    };

    println!(
        "1. clinic 1310000001 registers prescription {number}, signed by DEV Doctor Taro Iryo"
    );
    let doctor = pki.signer("doctor")?;
    let rx = demo_prescription(&number, patient.clone(), today).encode_to_vec();
    let registered = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(signed(&doctor, rx)?),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "   → id {}, exchange number {}, {}, usable through {}",
        registered.prescription_id,
        registered.exchange_number,
        state(registered.state),
        registered.usable_through
    );
    ensure!(
        registered.state == pb::PrescriptionState::Registered as i32,
        "not registered"
    );

    println!("2. pharmacy 1340000001 looks it up with the patient's insurance and exchange number");
    let summary = pharmacy
        .lookup_prescription(pb::LookupPrescriptionRequest {
            patient_key: Some(patient.clone()),
            exchange_number: registered.exchange_number.clone(),
        })
        .await?
        .into_inner();
    println!(
        "   → {}, issued {} by {}, {} line(s) (no drugs shown before acceptance)",
        state(summary.state),
        summary.issue_date,
        summary.institution_code,
        summary.line_count
    );
    ensure!(
        summary.prescription_id == registered.prescription_id,
        "lookup found another prescription"
    );

    println!("3. the pharmacy receives (accepts) it");
    let received = pharmacy
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(patient.clone()),
            exchange_number: registered.exchange_number.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let document = received.prescription.context("no document")?;
    let decoded = pb::Prescription::decode(document.content.as_slice())?;
    println!(
        "   → {}; the signed prescription ({} bytes, {} line(s)) is handed over",
        state(received.state),
        document.content.len(),
        decoded.lines.len()
    );
    ensure!(
        received.state == pb::PrescriptionState::Accepted as i32,
        "not accepted"
    );

    println!(
        "4. the pharmacy registers a dispensing record signed by DEV Pharmacist Saburo Yakuzai"
    );
    let pharmacist = pki.signer("pharmacist")?;
    let record = demo_dispensing(&number, today).encode_to_vec();
    let dispensed = pharmacy
        .record_dispensing(pb::RecordDispensingRequest {
            dispensing_record: Some(signed(&pharmacist, record)?),
        })
        .await?
        .into_inner();
    println!("   → {}", state(dispensed.state));
    ensure!(
        dispensed.state == pb::PrescriptionState::Dispensed as i32,
        "not dispensed"
    );

    println!("5. the clinic reads the status");
    let status = clinic
        .get_prescription_status(pb::GetPrescriptionStatusRequest {
            prescription_id: registered.prescription_id.clone(),
        })
        .await?
        .into_inner();
    println!(
        "   → {} at pharmacy {}, {} dispensing record(s)",
        state(status.state),
        status.pharmacy_code,
        status.dispensing_records.len()
    );
    let Some(first) = status.dispensing_records.first() else {
        bail!("the status shows no dispensing record");
    };
    println!(
        "     record {} of {}: important information: {}",
        first.record_number, first.dispensing_date, first.important_message
    );
    ensure!(
        status.state == pb::PrescriptionState::Dispensed as i32,
        "status is not DISPENSED"
    );
    println!("demo: every step behaved");
    Ok(())
}
