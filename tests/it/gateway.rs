//! The gateway end to end: the real server in-process on 127.0.0.1:0 over mutual TLS, a real
//! embedded store (fjall) in a temporary folder, real CMS signatures, and an injected clock.

use crate::common::{self, dev_pki, institution_code};

use std::{path::Path, sync::Arc, time::Duration};

use common::{Harness, patient, start_with};
use prost::Message;
use rxgate::{
    cli::demo::{demo_dispensing, demo_prescription},
    wire::proto::v1::{
        self as pb, admin_service_client::AdminServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tonic::{Code, transport::Channel};

const MAX_MISSES: u32 = 5;

async fn start() -> Harness {
    start_with(|config| {
        config.lookup_max_misses = MAX_MISSES;
        config.expiry_sweep_secs = 1;
    })
    .await
}

struct Rx {
    id: String,
    exchange: String,
    patient: pb::PatientKey,
    /// As the clinic sent it.
    signed: pb::SignedDocument,
}

async fn register(
    h: &Harness,
    clinic: &mut PrescriptionServiceClient<Channel>,
    number: &str,
    n: u32,
) -> Rx {
    let content = demo_prescription(number, patient(n), h.today()).encode_to_vec();
    let signed = h.sign("doctor", content);
    let r = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(signed.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::PrescriptionState::Registered as i32);
    assert_eq!(r.exchange_number.len(), 6);
    Rx {
        id: r.prescription_id,
        exchange: r.exchange_number,
        patient: patient(n),
        signed,
    }
}

fn receive_req(rx: &Rx) -> pb::ReceivePrescriptionRequest {
    pb::ReceivePrescriptionRequest {
        patient_key: Some(rx.patient.clone()),
        exchange_number: rx.exchange.clone(),
        ..Default::default()
    }
}

fn lookup_req(rx: &Rx) -> pb::LookupPrescriptionRequest {
    pb::LookupPrescriptionRequest {
        patient_key: Some(rx.patient.clone()),
        exchange_number: rx.exchange.clone(),
    }
}

fn status_req(id: &str) -> pb::GetPrescriptionStatusRequest {
    pb::GetPrescriptionStatusRequest {
        prescription_id: id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_round_trip() {
    let h = start().await;
    let mut clinic = h.clinic("clinic").await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    let rx = register(&h, &mut clinic, "RT-1", 1).await;

    let summary = pharmacy
        .lookup_prescription(lookup_req(&rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.prescription_id, rx.id);
    assert_eq!(summary.state, pb::PrescriptionState::Registered as i32);
    assert_eq!(summary.line_count, 1);
    assert_eq!(summary.institution_code, "1310000001");

    let received = pharmacy
        .receive_prescription(receive_req(&rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(received.state, pb::PrescriptionState::Accepted as i32);
    let doc = received.prescription.unwrap();
    // the exact bytes the clinic sent (the store keeps the signature's certificates apart)
    assert_eq!(doc, rx.signed);
    let decoded = pb::Prescription::decode(doc.content.as_slice()).unwrap();
    assert_eq!(decoded.prescription_number, "RT-1");
    // the pharmacy can verify the signature itself
    let (verifier, _) = dev_pki()
        .signing()
        .load(rxgate::domain::signature::VerifierConfig::default())
        .unwrap();
    verifier
        .verify::<pb::Prescription>(&doc.content, &doc.cms_signature, h.now())
        .unwrap();
    // a repeated receive by the holder returns the current outcome
    let again = pharmacy
        .receive_prescription(receive_req(&rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state, pb::PrescriptionState::Accepted as i32);

    let record = h.sign(
        "pharmacist",
        demo_dispensing("RT-1", h.today()).encode_to_vec(),
    );
    let request = pb::RecordDispensingRequest {
        dispensing_record: Some(record.clone()),
    };
    let dispensed = pharmacy
        .record_dispensing(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dispensed.prescription_id, rx.id);
    assert_eq!(dispensed.state, pb::PrescriptionState::Dispensed as i32);
    // the same record again is idempotent
    let again = pharmacy
        .record_dispensing(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, dispensed);

    let status = clinic
        .get_prescription_status(status_req(&rx.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::PrescriptionState::Dispensed as i32);
    assert_eq!(status.pharmacy_code, "1340000001");
    assert_eq!(status.dispensing_records.len(), 1);
    assert!(status.dispensing_records[0].important_information);
    assert_eq!(status.dispensing_records[0].record, Some(record));

    // the exchange number is spent: a dispensed prescription is no longer found by it
    let gone = pharmacy
        .lookup_prescription(lookup_req(&rx))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    let found = clinic
        .search_prescriptions(pb::SearchPrescriptionsRequest {
            patient_key: Some(patient(1)),
            issued_from: h.today().add_days(-1).to_string(),
            issued_to: h.today().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.prescriptions.len(), 1);
    assert_eq!(found.prescriptions[0].prescription_id, rx.id);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_pharmacies_race_exactly_one_wins() {
    let h = start().await;
    let mut clinic = h.clinic("clinic").await;
    let mut pharmacies = Vec::new();
    for i in 1..=16 {
        pharmacies.push(h.pharmacy(&format!("race-pharmacy-{i:02}")).await);
    }
    for round in 0..100 {
        let rx = Arc::new(register(&h, &mut clinic, &format!("RACE-{round}"), 1000 + round).await);
        let tasks: Vec<_> = pharmacies
            .iter()
            .cloned()
            .map(|mut p| {
                let rx = Arc::clone(&rx);
                tokio::spawn(async move { p.receive_prescription(receive_req(&rx)).await })
            })
            .collect();
        let won = winners(tasks).await;
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        let held = clinic.get_prescription_status(status_req(&rx.id)).await;
        let winner = format!("race-pharmacy-{:02}", won[0] + 1);
        assert_eq!(
            held.unwrap().into_inner().pharmacy_code,
            institution_code(&winner)
        );
    }
    h.shutdown().await;
}

/// A race's answers: which of the pharmacies (their places in `tasks`) accepted. Every other
/// was told that another pharmacy had, without being told which.
pub(crate) async fn winners(
    tasks: Vec<
        tokio::task::JoinHandle<
            Result<tonic::Response<pb::ReceivePrescriptionResponse>, tonic::Status>,
        >,
    >,
) -> Vec<usize> {
    let mut winners = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().state, pb::PrescriptionState::Accepted as i32);
                winners.push(i);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                let message = status.message();
                assert!(message.contains("another pharmacy"), "{message}");
                assert!(!message.contains("1341"), "names a pharmacy: {message}");
            }
        }
    }
    winners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_only_before_acceptance() {
    let h = start().await;
    let mut clinic = h.clinic("clinic").await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    let cancel = |id: &str| pb::CancelPrescriptionRequest {
        prescription_id: id.into(),
    };

    let early = register(&h, &mut clinic, "C-1", 2).await;
    for _ in 0..2 {
        // a repeated cancel returns the current outcome
        let r = clinic
            .cancel_prescription(cancel(&early.id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.state, pb::PrescriptionState::Cancelled as i32);
    }
    let err = pharmacy
        .receive_prescription(receive_req(&early))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "a cancelled prescription frees its number"
    );

    let late = register(&h, &mut clinic, "C-2", 2).await;
    pharmacy
        .receive_prescription(receive_req(&late))
        .await
        .unwrap();
    let err = clinic
        .cancel_prescription(cancel(&late.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("pharmacy"));
    assert!(
        !err.message().contains("1340000001"),
        "names the pharmacy: {}",
        err.message()
    );

    // returned, it can be cancelled again, and another pharmacy could have taken it
    let returned = pharmacy
        .return_prescription(pb::ReturnPrescriptionRequest {
            prescription_id: late.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(returned.state, pb::PrescriptionState::Registered as i32);
    let r = clinic
        .cancel_prescription(cancel(&late.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, pb::PrescriptionState::Cancelled as i32);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registration_is_idempotent_and_numbers_are_unique() {
    let h = start().await;
    let mut clinic = h.clinic("clinic").await;
    let content = demo_prescription("IDEM-1", patient(3), h.today()).encode_to_vec();
    let first = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", content.clone())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // the same content, re-signed a minute later
    h.clock.set(h.now() + Duration::from_secs(60));
    let resigned = h.sign("doctor", content.clone());
    let second = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(resigned),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);

    // other content under the same prescription number
    let mut other = demo_prescription("IDEM-1", patient(3), h.today());
    other.lines[0].days_supplied = 7;
    let err = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", other.encode_to_vec())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_exactly_at_the_boundary() {
    let h = start().await;
    let mut clinic = h.clinic("clinic").await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    let issue = h.today();
    let rx = register(&h, &mut clinic, "EXP-1", 4).await;
    let kept = register(&h, &mut clinic, "EXP-2", 5).await;
    pharmacy
        .receive_prescription(receive_req(&kept))
        .await
        .unwrap();

    // the last second of the fourth day (issue date + 3), Japan time
    let end = issue.add_days(4).start();
    h.clock.set(end - Duration::from_secs(1));
    let summary = pharmacy
        .lookup_prescription(lookup_req(&rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.state, pb::PrescriptionState::Registered as i32);
    assert_eq!(summary.usable_through, issue.add_days(3).to_string());

    h.clock.set(end);
    let summary = pharmacy
        .lookup_prescription(lookup_req(&rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        summary.state,
        pb::PrescriptionState::Expired as i32,
        "enforced on read"
    );
    let err = pharmacy
        .receive_prescription(receive_req(&rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // an accepted prescription does not expire
    let status = clinic
        .get_prescription_status(status_req(&kept.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::PrescriptionState::Accepted as i32);
    let status = clinic
        .get_prescription_status(status_req(&rx.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::PrescriptionState::Expired as i32);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_lookup_misses_lock_a_pharmacy_out() {
    let h = start().await;
    let mut clinic = h.clinic("clinic").await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    let mut other = h.pharmacy("pharmacy2").await;
    let rx = register(&h, &mut clinic, "LOCK-1", 6).await;
    let wrong = if rx.exchange == "000000" {
        "000001"
    } else {
        "000000"
    };
    for i in 0..MAX_MISSES {
        let err = pharmacy
            .lookup_prescription(pb::LookupPrescriptionRequest {
                patient_key: Some(rx.patient.clone()),
                exchange_number: wrong.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "miss {i}");
    }
    // a wrong patient with the right number is the same NOT_FOUND as a wrong number
    let err = other
        .lookup_prescription(pb::LookupPrescriptionRequest {
            patient_key: Some(patient(7)),
            exchange_number: rx.exchange.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no such prescription");
    // locked out: even the right number is refused
    let err = pharmacy
        .lookup_prescription(lookup_req(&rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let err = pharmacy
        .receive_prescription(receive_req(&rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // other pharmacies are not affected
    other.lookup_prescription(lookup_req(&rx)).await.unwrap();
    // and the lockout ends
    h.clock.set(h.now() + Duration::from_secs(16 * 60));
    pharmacy.lookup_prescription(lookup_req(&rx)).await.unwrap();
    h.shutdown().await;
}

fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>) {
    let status = r.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_table() {
    let h = start().await;
    let mut clinic = h.clinic("clinic").await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    let rx = register(&h, &mut clinic, "AUTH-1", 8).await;
    let audit = pb::ExportAuditRequest::default();

    // Each kind on the services that are not its own.
    for name in ["clinic", "management", "operator"] {
        let mut p = h.pharmacy(name).await;
        denied(p.lookup_prescription(lookup_req(&rx)).await);
        denied(p.receive_prescription(receive_req(&rx)).await);
    }
    for name in ["pharmacy", "management", "operator"] {
        let mut c = h.clinic(name).await;
        denied(c.get_prescription_status(status_req(&rx.id)).await);
        denied(
            c.register_prescription(pb::RegisterPrescriptionRequest {
                prescription: Some(h.sign(
                    "doctor",
                    demo_prescription("AUTH-X", patient(8), h.today()).encode_to_vec(),
                )),
                ..Default::default()
            })
            .await,
        );
    }
    for name in ["clinic", "pharmacy", "management"] {
        let mut a = AdminServiceClient::new(h.channel(name).await);
        denied(a.export_audit(audit.clone()).await);
    }

    // Clinics: only their own prescriptions, only under their own institution code.
    let mut clinic2 = h.clinic("clinic2").await;
    denied(clinic2.get_prescription_status(status_req(&rx.id)).await);
    denied(
        clinic2
            .cancel_prescription(pb::CancelPrescriptionRequest {
                prescription_id: rx.id.clone(),
            })
            .await,
    );
    denied(
        clinic2
            .register_prescription(pb::RegisterPrescriptionRequest {
                prescription: Some(h.sign(
                    "doctor",
                    demo_prescription("AUTH-2", patient(8), h.today()).encode_to_vec(),
                )),
                ..Default::default()
            })
            .await,
    );
    // the prescriber must be the signer
    denied(
        clinic
            .register_prescription(pb::RegisterPrescriptionRequest {
                prescription: Some(h.sign(
                    "doctor-ec",
                    demo_prescription("AUTH-3", patient(8), h.today()).encode_to_vec(),
                )),
                ..Default::default()
            })
            .await,
    );

    // Pharmacies: only the accepting pharmacy may return or dispense; records under their own code.
    pharmacy
        .receive_prescription(receive_req(&rx))
        .await
        .unwrap();
    let mut pharmacy2 = h.pharmacy("pharmacy2").await;
    denied(
        pharmacy2
            .return_prescription(pb::ReturnPrescriptionRequest {
                prescription_id: rx.id.clone(),
            })
            .await,
    );
    let record = |pharmacy_code: &str, signer: &str| {
        let mut r = demo_dispensing("AUTH-1", h.today());
        r.pharmacy_code = pharmacy_code.into();
        pb::RecordDispensingRequest {
            dispensing_record: Some(h.sign(signer, r.encode_to_vec())),
        }
    };
    denied(
        pharmacy2
            .record_dispensing(record("1340000002", "pharmacist"))
            .await,
    );
    denied(
        pharmacy
            .record_dispensing(record("1340000002", "pharmacist"))
            .await,
    );
    // the pharmacist must be the signer
    denied(
        pharmacy
            .record_dispensing(record("1340000001", "pharmacist-ec"))
            .await,
    );
    pharmacy
        .record_dispensing(record("1340000001", "pharmacist"))
        .await
        .unwrap();

    // Operators: the audit export, which shows who did what, refusals included.
    let records = h.audit_records().await;
    assert!(records.windows(2).all(|w| w[0].sequence < w[1].sequence));
    let find = |action: &str, code: &str, outcome: &str| {
        records.iter().any(|r| {
            r.action == action && r.institution_code == code && r.outcome.starts_with(outcome)
        })
    };
    assert!(find("RegisterPrescription", "1310000001", "OK"));
    assert!(find(
        "RegisterPrescription",
        "1310000002",
        "PERMISSION_DENIED"
    ));
    assert!(find(
        "LookupPrescription",
        "1310000001",
        "PERMISSION_DENIED"
    ));
    assert!(find(
        "ReturnPrescription",
        "1340000002",
        "PERMISSION_DENIED"
    ));
    assert!(find("RecordDispensing", "1340000001", "OK"));
    assert!(find("ExportAudit", "9990000001", "PERMISSION_DENIED"));
    let dispensing = records
        .iter()
        .find(|r| r.action == "RecordDispensing" && r.outcome == "OK")
        .unwrap();
    assert_eq!(dispensing.signer_serial_number, "DEV-PH-0001");
    assert_eq!(dispensing.target, rx.id);
    assert_eq!(dispensing.certificate_sha256.len(), 64);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_and_bad_input_are_invalid_arguments() {
    let h = start().await;
    let mut clinic = h.clinic("clinic").await;
    // a pharmacist cannot sign a prescription: the verifier's reason code travels in ErrorInfo
    let err = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign(
                "pharmacist",
                demo_prescription("BAD-1", patient(9), h.today()).encode_to_vec(),
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("ROLE_NOT_ALLOWED"),
        "{}",
        err.message()
    );
    use tonic_types::StatusExt;
    assert_eq!(
        err.get_details_error_info().unwrap().reason,
        "ROLE_NOT_ALLOWED"
    );

    // field violations name the field, never the value
    let mut rx = demo_prescription("BAD-2", patient(9), h.today());
    rx.lines[0].days_supplied = 0;
    rx.patient.as_mut().unwrap().name.clear();
    let err = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", rx.encode_to_vec())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<_> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["patient.name", "lines[0].days_supplied"]);

    // an issue date that is not the date of receipt
    let stale = demo_prescription("BAD-3", patient(9), h.today().add_days(-2));
    let err = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", stale.encode_to_vec())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // an oversize message
    let huge = pb::SignedDocument {
        content: vec![0; 300 * 1024],
        cms_signature: vec![0; 10],
    };
    let err = clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(huge),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_trusted_certificate_cannot_connect() {
    let h = start().await;
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/tls/ca.cert.pem");
    let anonymous = tonic::transport::ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(ca).unwrap(),
        ));
    let result = async {
        let channel = tonic::transport::Endpoint::from_shared(h.addr.clone())?
            .tls_config(anonymous)?
            .connect()
            .await?;
        PrescriptionServiceClient::new(channel)
            .get_prescription_status(status_req("00000000000000000000000000000000"))
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
    }
    .await;
    assert!(result.is_err(), "an anonymous client got an answer");

    for name in ["untrusted-clinic", "pharmacy-revoked"] {
        let result = async {
            let channel = dev_pki().client(name).connect(&h.addr).await?;
            PrescriptionServiceClient::new(channel)
                .get_prescription_status(status_req("00000000000000000000000000000000"))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
        }
        .await;
        assert!(result.is_err(), "{name} got an answer");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let h = start().await;
    let mut health = HealthClient::new(h.channel("clinic").await);
    for service in [
        "",
        "rxgate.v1.PrescriptionService",
        "rxgate.v1.DispensingService",
        "rxgate.v1.AdminService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(h.channel("pharmacy").await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "rxgate.v1.PrescriptionService",
        "rxgate.v1.DispensingService",
        "rxgate.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    h.shutdown().await;
}
