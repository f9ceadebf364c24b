//! ManagementIntake believes a relayed record's receipt time only when a gateway it pins attests
//! it: a caller cannot backdate a record past its pharmacist's revocation, and the metadata
//! delivered beside a record must be the signed record's own.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Harness, bad_fields, intake_records, start_with};
use prost::Message;
use rxgate::{
    cli::demo::demo_dispensing,
    domain::hash::{hex, sha256},
    pki::identity::{GatewayIdentity, IdentityFiles, RELAY_STATEMENT},
    wire::proto::v1::{self as pb, management_intake_client::ManagementIntakeClient},
};
use tonic::Code;
use tonic_types::StatusExt;

/// When certs/hpki/pharmacist-revoked was revoked: 2025-01-02T00:00:00Z.
const REVOKED_AT: u64 = 1_735_776_000;
const NUMBER: &str = "IN-1";

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A gateway whose clock reads an hour after the revocation.
async fn intake_an_hour_after_the_revocation() -> Harness {
    let h = start_with(|_| {}).await;
    h.clock
        .set(UNIX_EPOCH + Duration::from_secs(REVOKED_AT + 3600));
    h
}

/// A dispensing record of `NUMBER` signed by `pharmacist` at `signed`.
fn record(h: &Harness, pharmacist: &str, signed: SystemTime) -> pb::SignedDocument {
    let now = h.now();
    h.clock.set(signed);
    let document = h.sign(
        pharmacist,
        demo_dispensing(NUMBER, h.today()).encode_to_vec(),
    );
    h.clock.set(now);
    document
}

fn delivery(
    document: pb::SignedDocument,
    received: SystemTime,
) -> pb::DeliverDispensingRecordRequest {
    pb::DeliverDispensingRecordRequest {
        record_id: hex(&sha256(&document.content)),
        sequence: 1,
        dispensing_record: Some(document),
        received_unix_ms: unix_ms(received),
        prescription_id: "0".repeat(32),
        institution_code: "1310000001".into(),
        prescription_number: NUMBER.into(),
        attestation: None,
    }
}

fn identity(name: &str) -> GatewayIdentity {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/gateway");
    GatewayIdentity::from_files(&IdentityFiles {
        key: dir.join(format!("{name}.key.pem")),
        cert: dir.join(format!("{name}.cert.pem")),
    })
    .unwrap()
}

/// The request's metadata, attested by `by`.
fn attest(by: &GatewayIdentity, d: &pb::DeliverDispensingRecordRequest) -> pb::RelayAttestation {
    let statement = pb::RelayStatement {
        record_id: d.record_id.clone(),
        received_unix_ms: d.received_unix_ms,
        prescription_id: d.prescription_id.clone(),
        institution_code: d.institution_code.clone(),
        prescription_number: d.prescription_number.clone(),
    }
    .encode_to_vec();
    pb::RelayAttestation {
        signature: by.sign(RELAY_STATEMENT, &statement).unwrap(),
        statement,
        sender_certificate_sha256: by.fingerprint().to_vec(),
    }
}

async fn deliver(
    h: &Harness,
    request: pb::DeliverDispensingRecordRequest,
) -> Result<bool, tonic::Status> {
    ManagementIntakeClient::new(h.channel("management").await)
        .deliver_dispensing_record(request)
        .await
        .map(|r| r.into_inner().duplicate)
}

/// The attesting certificates (hex fingerprints) of the stored records, in arrival order.
async fn stored_attesters(h: Harness) -> Vec<Option<String>> {
    intake_records(&h.stop().await)
        .await
        .into_iter()
        .map(|r| r.attested_by)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backdated_record_of_a_revoked_pharmacist_is_judged_as_of_its_arrival() {
    let h = intake_an_hour_after_the_revocation().await;
    let two_hours_ago = h.now() - Duration::from_secs(2 * 3600);
    let document = record(&h, "pharmacist-revoked", two_hours_ago);
    let refused = deliver(&h, delivery(document, two_hours_ago))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "CERT_REVOKED"
    );
    assert_eq!(stored_attesters(h).await, Vec::<Option<String>>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attested_receipt_before_the_revocation_is_believed() {
    let h = intake_an_hour_after_the_revocation().await;
    let two_hours_ago = h.now() - Duration::from_secs(2 * 3600);
    let mut request = delivery(
        record(&h, "pharmacist-revoked", two_hours_ago),
        two_hours_ago,
    );
    let sender = identity("gateway");
    request.attestation = Some(attest(&sender, &request));
    assert!(!deliver(&h, request.clone()).await.unwrap());
    assert!(deliver(&h, request).await.unwrap(), "the same record again");
    assert_eq!(
        stored_attesters(h).await,
        vec![Some(hex(&sender.fingerprint()))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_is_believed_only_from_a_pinned_gateway_and_for_this_request() {
    let h = intake_an_hour_after_the_revocation().await;
    let two_hours_ago = h.now() - Duration::from_secs(2 * 3600);
    let request = delivery(
        record(&h, "pharmacist-revoked", two_hours_ago),
        two_hours_ago,
    );

    let mut unpinned = request.clone();
    unpinned.attestation = Some(attest(&identity("untrusted-gateway"), &request));
    let refused = deliver(&h, unpinned).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    let mut forged = request.clone();
    let mut attestation = attest(&identity("gateway"), &request);
    attestation.sender_certificate_sha256 = identity("gateway").fingerprint().to_vec();
    attestation.statement[0] ^= 1;
    forged.attestation = Some(attestation);
    let refused = deliver(&h, forged).await.unwrap_err();
    assert_eq!(bad_fields(&refused), ["attestation.signature"]);

    // A genuine attestation of another receipt time does not vouch for this one.
    let mut other_time = request.clone();
    let earlier = delivery(
        request.dispensing_record.clone().unwrap(),
        two_hours_ago - Duration::from_secs(60),
    );
    other_time.attestation = Some(attest(&identity("gateway"), &earlier));
    let refused = deliver(&h, other_time).await.unwrap_err();
    assert_eq!(bad_fields(&refused), ["attestation.statement"]);
    assert_eq!(stored_attesters(h).await, Vec::<Option<String>>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_institution_and_number_beside_a_record_must_be_the_signed_records() {
    let h = start_with(|_| {}).await;
    let request = delivery(record(&h, "pharmacist", h.now()), h.now());

    let mut institution = request.clone();
    institution.institution_code = "9999999999".into();
    let refused = deliver(&h, institution).await.unwrap_err();
    assert_eq!(bad_fields(&refused), ["institution_code"]);

    let mut number = request.clone();
    number.prescription_number = "anything".into();
    let refused = deliver(&h, number).await.unwrap_err();
    assert_eq!(bad_fields(&refused), ["prescription_number"]);

    // Unattested, as delivered: judged as of now, stored without an attester.
    assert!(!deliver(&h, request).await.unwrap());
    assert_eq!(stored_attesters(h).await, vec![None]);
}
