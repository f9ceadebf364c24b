//! Signed-document verification against the committed development PKI (certs/), with real CMS
//! signatures made both by rxgate and by `openssl cms`, the standard tool, and hand-made ones
//! outside the profile.

use crate::common::{self, dev_pki};

use std::{
    path::Path,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{
    cms::{self as crafted, hpki, openssl},
    signer,
};
use prost::Message;
use rxgate::{
    cli::demo::{demo_dispensing, demo_prescription},
    domain::signature::{Reason, Role, Verifier, VerifierConfig, hc_actors},
    pki::trust::{CrlFile, TrustFiles},
    wire::proto::v1::{self as pb, DispensingRecord, DocumentType, Practitioner, Prescription},
};

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dev_verifier() -> Verifier {
    dev_pki()
        .signing()
        .load(VerifierConfig::default())
        .unwrap()
        .0
}

fn prescription() -> Vec<u8> {
    Prescription {
        document_type: DocumentType::Prescription as i32,
        institution_code: "1310000001".into(),
        prescription_number: "RX-1".into(),
        prescriber: Some(Practitioner {
            name: "DEV Doctor Taro Iryo".into(),
            serial_number: "DEV-DR-0001".into(),
        }),
        issue_date: "2026-11-25".into(),
        refill_count: 1,
        ..Default::default()
    }
    .encode_to_vec()
}

fn dispensing_record() -> Vec<u8> {
    DispensingRecord {
        document_type: DocumentType::DispensingRecord as i32,
        institution_code: "1310000001".into(),
        prescription_number: "RX-1".into(),
        record_number: 1,
        r#final: true,
        pharmacy_code: "1340000001".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// Signs `content` as `name` at `signing_time` and verifies it as a prescription at `received`.
fn verify_prescription_at(
    verifier: &Verifier,
    name: &str,
    content: &[u8],
    signing_time: SystemTime,
    received: SystemTime,
) -> Result<Role, Reason> {
    let cms = signer(name).sign(content, signing_time).unwrap();
    verifier
        .verify::<Prescription>(content, &cms, received)
        .map(|v| v.signer().role)
        .map_err(|r| r.reason)
}

fn verify_prescription(name: &str) -> Result<Role, Reason> {
    let t = now();
    verify_prescription_at(&dev_verifier(), name, &prescription(), t, t)
}

#[test]
fn qualified_signers_are_accepted() {
    assert_eq!(verify_prescription("doctor"), Ok(Role::Doctor));
    assert_eq!(verify_prescription("doctor-ec"), Ok(Role::Doctor));
    assert_eq!(verify_prescription("dentist"), Ok(Role::Dentist));

    let verifier = dev_verifier();
    let record = dispensing_record();
    for name in ["pharmacist", "pharmacist-ec"] {
        let cms = signer(name).sign(&record, now()).unwrap();
        let verified = verifier
            .verify::<DispensingRecord>(&record, &cms, now())
            .unwrap();
        assert_eq!(verified.signer().role, Role::Pharmacist);
        assert_eq!(verified.document().pharmacy_code, "1340000001");
        assert_eq!(&verified.content()[..], &record[..]);
    }
}

#[test]
fn the_proof_carries_the_signer_identity() {
    let content = prescription();
    let cms = signer("doctor").sign(&content, now()).unwrap();
    let verified = dev_verifier()
        .verify::<Prescription>(&content, &cms, now())
        .unwrap();
    let signer = verified.signer();
    assert_eq!(signer.name, "DEV Doctor Taro Iryo");
    assert_eq!(signer.serial_number, "DEV-DR-0001");
    assert_eq!(verified.document().prescription_number, "RX-1");
}

#[test]
fn role_not_allowed() {
    // a pharmacist signing a prescription
    assert_eq!(
        verify_prescription("pharmacist"),
        Err(Reason::RoleNotAllowed)
    );
    // a Director-only certificate qualifies for nothing
    assert_eq!(verify_prescription("director"), Err(Reason::RoleNotAllowed));
    // no role attribute at all
    assert_eq!(verify_prescription("norole"), Err(Reason::RoleNotAllowed));
    // the role's English name disagrees with its OID
    assert_eq!(
        verify_prescription("doctor-mismatch"),
        Err(Reason::RoleNotAllowed)
    );
    // a doctor signing a dispensing record
    let record = dispensing_record();
    let cms = signer("doctor").sign(&record, now()).unwrap();
    let refusal = dev_verifier()
        .verify::<DispensingRecord>(&record, &cms, now())
        .unwrap_err();
    assert_eq!(refusal.reason, Reason::RoleNotAllowed);
}

#[test]
fn authentication_certificates_may_not_sign() {
    // keyUsage digitalSignature only, authentication policy, same doctor role
    assert_eq!(
        verify_prescription("doctor-auth"),
        Err(Reason::CertNotForSigning)
    );
    // nonRepudiation but only the authentication policy
    assert_eq!(
        verify_prescription("doctor-authpolicy"),
        Err(Reason::CertNotForSigning)
    );
}

#[test]
fn cert_untrusted() {
    assert_eq!(
        verify_prescription("untrusted-doctor"),
        Err(Reason::CertUntrusted)
    );
}

#[test]
fn cert_expired() {
    assert_eq!(
        verify_prescription("doctor-expired"),
        Err(Reason::CertExpired)
    );
}

fn utc(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn the_chain_must_be_valid_at_signing_time_too() {
    // The dev certificates are valid from 2025-01-01T00:00:00Z (1735689600). Received an hour
    // later, signed (by its own claim) an hour before: inside the window, outside the validity.
    let valid_from = 1_735_689_600;
    let verifier = dev_verifier();
    let content = prescription();
    assert_eq!(
        verify_prescription_at(
            &verifier,
            "doctor",
            &content,
            utc(valid_from - 3600),
            utc(valid_from + 3600)
        ),
        Err(Reason::CertExpired)
    );
    assert_eq!(
        verify_prescription_at(
            &verifier,
            "doctor",
            &content,
            utc(valid_from + 60),
            utc(valid_from + 3600)
        ),
        Ok(Role::Doctor)
    );
}

#[test]
fn a_cached_chain_still_expires() {
    let verifier = dev_verifier();
    let content = prescription();
    // First verification caches the chain.
    assert!(verify_prescription_at(&verifier, "doctor", &content, now(), now()).is_ok());
    // The dev certificates end on 2075-01-01 (3313526400).
    let later = utc(3_313_526_400 + 86_400);
    assert_eq!(
        verify_prescription_at(&verifier, "doctor", &content, later, later),
        Err(Reason::CertExpired)
    );
}

#[test]
fn cert_revoked() {
    assert_eq!(
        verify_prescription("doctor-revoked"),
        Err(Reason::CertRevoked)
    );
}

#[test]
fn a_revocation_after_receipt_does_not_refuse() {
    // doctor-revoked was revoked at 2025-01-02T00:00:00Z (1735776000); a document received
    // before that was signed by a certificate that was good at the time.
    let received = utc(1_735_776_000 - 3600);
    assert_eq!(
        verify_prescription_at(
            &dev_verifier(),
            "doctor-revoked",
            &prescription(),
            received - Duration::from_secs(60),
            received
        ),
        Ok(Role::Doctor)
    );
}

fn stale_trust_files(dir: &Path) -> TrustFiles {
    let crl = dir.join("sign-ca.crl.pem");
    std::fs::copy(hpki("sign-ca-stale.crl.pem"), &crl).unwrap();
    let mut files = dev_pki().signing();
    files.crls[1] = CrlFile {
        ca: hpki("sign-ca.cert.pem"),
        crl,
    };
    files
}

#[test]
fn a_crl_past_next_update_makes_revocation_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let files = stale_trust_files(dir.path());
    let (verifier, _) = files.load(VerifierConfig::default()).unwrap();
    let t = now();
    assert_eq!(
        verify_prescription_at(&verifier, "doctor", &prescription(), t, t),
        Err(Reason::RevocationUnknown)
    );

    // unless configuration says otherwise; the stale CRL's entries still count
    let config = VerifierConfig {
        allow_stale_crls: true,
        ..VerifierConfig::default()
    };
    let (lenient, _) = files.load(config).unwrap();
    assert_eq!(
        verify_prescription_at(&lenient, "doctor", &prescription(), t, t),
        Ok(Role::Doctor)
    );
    assert_eq!(
        verify_prescription_at(&lenient, "doctor-revoked", &prescription(), t, t),
        Err(Reason::CertRevoked)
    );
}

#[test]
fn a_changed_crl_file_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = stale_trust_files(dir.path());
    let (verifier, mut watcher) = files.load(VerifierConfig::default()).unwrap();
    let content = prescription();
    let t = now();
    assert_eq!(
        verify_prescription_at(&verifier, "doctor", &content, t, t),
        Err(Reason::RevocationUnknown)
    );
    assert_eq!(
        watcher.refresh(&verifier).unwrap(),
        None,
        "nothing changed yet"
    );

    // A CRL file that does not verify is refused and the CRLs in force stay.
    let crl_path = &files.crls[1].crl;
    std::fs::copy(hpki("root.crl.pem"), crl_path).unwrap();
    assert!(watcher.refresh(&verifier).is_err());
    assert_eq!(verifier.crl_generation(), 0);

    std::fs::copy(hpki("sign-ca.crl.pem"), crl_path).unwrap();
    assert_eq!(watcher.refresh(&verifier).unwrap(), Some(1));
    assert_eq!(
        verify_prescription_at(&verifier, "doctor", &content, t, t),
        Ok(Role::Doctor)
    );
    assert_eq!(
        verify_prescription_at(&verifier, "doctor-revoked", &content, t, t),
        Err(Reason::CertRevoked)
    );
}

#[test]
fn a_crl_must_be_configured_for_every_issuer() {
    let mut files = dev_pki().signing();
    files.crls.truncate(1); // the root's CRL only
    let (verifier, _) = files.load(VerifierConfig::default()).unwrap();
    let t = now();
    assert_eq!(
        verify_prescription_at(&verifier, "doctor", &prescription(), t, t),
        Err(Reason::RevocationUnknown)
    );
}

#[test]
fn signing_time_window() {
    let verifier = dev_verifier();
    let content = prescription();
    let received = now();
    let minutes = |m: u64| Duration::from_secs(m * 60);
    let cases = [
        (received - minutes(23 * 60), true),
        (received - minutes(25 * 60), false),
        (received + minutes(4), true),
        (received + minutes(6), false),
    ];
    for (signing_time, ok) in cases {
        let result = verify_prescription_at(&verifier, "doctor", &content, signing_time, received);
        if ok {
            assert_eq!(result, Ok(Role::Doctor), "{signing_time:?}");
        } else {
            assert_eq!(
                result,
                Err(Reason::SigningTimeOutOfWindow),
                "{signing_time:?}"
            );
        }
    }
}

#[test]
fn tampered_content_is_a_digest_mismatch() {
    let content = prescription();
    let cms = signer("doctor").sign(&content, now()).unwrap();
    let mut tampered = content.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let refusal = dev_verifier()
        .verify::<Prescription>(&tampered, &cms, now())
        .unwrap_err();
    assert_eq!(refusal.reason, Reason::DigestMismatch);
}

#[test]
fn a_corrupted_signature_is_invalid() {
    let content = prescription();
    for name in ["doctor", "doctor-ec"] {
        let mut cms = signer(name).sign(&content, now()).unwrap();
        // The signature value is the last field of the only SignerInfo, at the end of the DER.
        let last = cms.len() - 1;
        cms[last] ^= 0x01;
        let refusal = dev_verifier()
            .verify::<Prescription>(&content, &cms, now())
            .unwrap_err();
        assert_eq!(refusal.reason, Reason::SignatureInvalid, "{name}");
    }
}

/// A signer whose chain is cached is still held to the signature and digest of each document,
/// and to a well-formed envelope.
#[test]
fn a_cached_chain_does_not_excuse_the_signature() {
    let verifier = dev_verifier();
    let content = prescription();
    let cms = signer("doctor").sign(&content, now()).unwrap();
    assert!(
        verifier
            .verify::<Prescription>(&content, &cms, now())
            .is_ok()
    );
    let hits = verifier.chain_cache_hits_and_misses().0;
    let mut corrupted = cms.clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0x01;
    let mut tampered = content.clone();
    let end = tampered.len() - 1;
    tampered[end] ^= 1;
    let mut trailing = cms.clone();
    trailing.push(0);
    for (content, cms, expected) in [
        (&content, &corrupted, Reason::SignatureInvalid),
        (&tampered, &cms, Reason::DigestMismatch),
        (&content, &trailing, Reason::MalformedSignature),
    ] {
        let refusal = verifier
            .verify::<Prescription>(content, cms, now())
            .unwrap_err();
        assert_eq!(refusal.reason, expected);
    }
    // The first two found the signer's chain in the cache; the trailing byte stopped the third
    // before any lookup.
    assert_eq!(verifier.chain_cache_hits_and_misses().0, hits + 2);
}

#[test]
fn garbage_is_a_malformed_signature() {
    let content = prescription();
    for cms in [
        vec![],
        vec![0x30, 0x03, 0x02, 0x01, 0x01],
        b"not a signature".to_vec(),
    ] {
        let refusal = dev_verifier()
            .verify::<Prescription>(&content, &cms, now())
            .unwrap_err();
        assert_eq!(refusal.reason, Reason::MalformedSignature);
    }
}

#[test]
fn a_dispensing_record_cannot_pass_for_a_prescription() {
    // Signed by a doctor, so the role would do for a prescription: the content decides.
    let record = dispensing_record();
    let cms = signer("doctor").sign(&record, now()).unwrap();
    let refusal = dev_verifier()
        .verify::<Prescription>(&record, &cms, now())
        .unwrap_err();
    assert_eq!(refusal.reason, Reason::MalformedContent);
    assert!(
        refusal.detail.contains("DOCUMENT_TYPE_DISPENSING_RECORD"),
        "{}",
        refusal.detail
    );
}

#[test]
fn content_that_does_not_re_encode_is_malformed() {
    let mut content = prescription();
    content.extend_from_slice(&[0xf8, 0x06, 0x01]); // unknown field 111
    assert_eq!(
        verify_prescription_at(&dev_verifier(), "doctor", &content, now(), now()),
        Err(Reason::MalformedContent)
    );
}

#[test]
fn the_role_is_read_from_the_real_medis_certificate() {
    use der::Decode;
    let der =
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/medis_test_doctor_cert.der"));
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let actors = hc_actors(&cert).unwrap();
    assert_eq!(actors.len(), 1);
    assert_eq!(actors[0].oid.to_string(), "1.2.392.100495.1.6.1.1");
    assert_eq!(actors[0].name.as_deref(), Some("Medical Doctor"));
}

// --- interoperability with `openssl cms` -------------------------------------------------------

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Signs `content` with `openssl cms -sign` as `name`, with `extra` options.
fn openssl_sign(dir: &Path, name: &str, content: &[u8], extra: &[&str]) -> Vec<u8> {
    let input = dir.join("content.bin");
    let output = dir.join("content.sig");
    std::fs::write(&input, content).unwrap();
    let (cert, key, chain) = (
        hpki(&format!("{name}.cert.pem")),
        hpki(&format!("{name}.key.pem")),
        hpki("sign-ca.cert.pem"),
    );
    let mut args = vec![
        "cms",
        "-sign",
        "-binary",
        "-md",
        "sha256",
        "-outform",
        "DER",
        "-nosmimecap",
    ];
    args.extend_from_slice(&[
        "-in",
        path_str(&input),
        "-signer",
        path_str(&cert),
        "-inkey",
        path_str(&key),
        "-certfile",
        path_str(&chain),
        "-out",
        path_str(&output),
    ]);
    // after the first signer: options such as -keyopt apply to the signer before them
    args.extend_from_slice(extra);
    openssl(&args);
    read(&output)
}

/// `openssl cms -verify` of the detached `signature` over `content` with the dev HPKI root,
/// writing the content it verified to `out`; panics with openssl's message if it fails.
fn openssl_verify(signature: &Path, content: &Path, out: &Path) {
    openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        path_str(signature),
        "-content",
        path_str(content),
        "-CAfile",
        path_str(&hpki("root.cert.pem")),
        "-purpose",
        "any",
        "-out",
        path_str(out),
    ]);
}

/// `openssl cms -verify` of a document as the gateway handed it out, in files under `dir`.
fn openssl_verifies(dir: &Path, document: &pb::SignedDocument) {
    let (content, signature) = (dir.join("handed.bin"), dir.join("handed.sig"));
    std::fs::write(&content, &document.content).unwrap();
    std::fs::write(&signature, &document.cms_signature).unwrap();
    openssl_verify(&signature, &content, &dir.join("handed.verified"));
}

#[test]
fn documents_signed_by_openssl_verify() {
    let dir = tempfile::tempdir().unwrap();
    let content = prescription();
    for name in ["doctor", "doctor-ec", "dentist"] {
        let cms = openssl_sign(dir.path(), name, &content, &[]);
        let verified = dev_verifier()
            .verify::<Prescription>(&content, &cms, now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_ne!(verified.signer().role, Role::Pharmacist);
    }
    let record = dispensing_record();
    let cms = openssl_sign(dir.path(), "pharmacist", &record, &[]);
    assert!(
        dev_verifier()
            .verify::<DispensingRecord>(&record, &cms, now())
            .is_ok()
    );
}

#[test]
fn openssl_signatures_outside_the_profile_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let content = prescription();
    let verify = |cms: &[u8]| {
        dev_verifier()
            .verify::<Prescription>(&content, cms, now())
            .unwrap_err()
            .reason
    };
    // SHA-384 instead of SHA-256
    let cms = openssl_sign(dir.path(), "doctor", &content, &["-md", "sha384"]);
    assert_eq!(verify(&cms), Reason::UnsupportedAlgorithm);
    // RSASSA-PSS
    let cms = openssl_sign(
        dir.path(),
        "doctor",
        &content,
        &["-keyopt", "rsa_padding_mode:pss"],
    );
    assert_eq!(verify(&cms), Reason::UnsupportedAlgorithm);
    // an RSA key of 1024 bits (ring will not even sign with one, so openssl does)
    let cms = openssl_sign(dir.path(), "doctor-rsa1024", &content, &[]);
    assert_eq!(verify(&cms), Reason::UnsupportedAlgorithm);
    // the content embedded instead of detached
    let cms = openssl_sign(dir.path(), "doctor", &content, &["-nodetach"]);
    assert_eq!(verify(&cms), Reason::MalformedSignature);
}

#[test]
fn two_signers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let content = prescription();
    let extra_cert = hpki("doctor-ec.cert.pem");
    let extra_key = hpki("doctor-ec.key.pem");
    let cms = openssl_sign(
        dir.path(),
        "doctor",
        &content,
        &[
            "-signer",
            path_str(&extra_cert),
            "-inkey",
            path_str(&extra_key),
        ],
    );
    let refusal = dev_verifier()
        .verify::<Prescription>(&content, &cms, now())
        .unwrap_err();
    assert_eq!(refusal.reason, Reason::MalformedSignature);
    assert!(refusal.detail.contains("one signer"), "{}", refusal.detail);
}

#[test]
fn rxgate_sign_output_verifies_under_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let (content, signature, signed) = (
        dir.path().join("rx.bin"),
        dir.path().join("rx.sig"),
        dir.path().join("rx.json"),
    );
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/documents/prescription.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args(["sign", "prescription", path_str(&example)])
        .args(["--cert", path_str(&hpki("doctor.cert.pem"))])
        .args(["--key", path_str(&hpki("doctor.key.pem"))])
        .args(["--chain", path_str(&hpki("sign-ca.cert.pem"))])
        .args(["--out", path_str(&signed)])
        .args(["--content-out", path_str(&content)])
        .args(["--signature-out", path_str(&signature)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    openssl_verify(&signature, &content, &dir.path().join("verified.bin"));
    assert_eq!(read(&dir.path().join("verified.bin")), read(&content));

    // and `rxgate verify` accepts the SignedDocument JSON it wrote
    let out = Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args(["verify", "prescription", path_str(&signed), "--dev"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("verified: signed by DEV Doctor Taro Iryo"),
        "{stdout}"
    );
    assert!(stdout.contains("RX-2026-000001"), "{stdout}");

    // a pharmacist's signature on the same document is refused by `rxgate verify`, exit code 1
    let out = Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args(["sign", "prescription", path_str(&example)])
        .args(["--cert", path_str(&hpki("pharmacist.cert.pem"))])
        .args(["--key", path_str(&hpki("pharmacist.key.pem"))])
        .args(["--chain", path_str(&hpki("sign-ca.cert.pem"))])
        .args(["--out", path_str(&signed)])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args(["verify", "prescription", path_str(&signed), "--dev"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ROLE_NOT_ALLOWED"));
}

// --- strict encoding: what a pharmacy's own verifier would refuse, refused here ----------------

/// Verifies a hand-made signature of the dev doctor over the prescription: `sent` the signed
/// attributes as sent, `signed` those the signature covers.
fn verify_crafted(
    econtent_type: &str,
    sent: &[Vec<u8>],
    signed: &[Vec<u8>],
) -> Result<Role, rxgate::domain::signature::Refusal> {
    let dir = tempfile::tempdir().unwrap();
    let cms = crafted::signed_data(dir.path(), "doctor", econtent_type, sent, signed);
    dev_verifier()
        .verify::<Prescription>(&prescription(), &cms, now())
        .map(|v| v.signer().role)
}

/// content-type id-data, a UTCTime signing-time of now and the message digest, in DER order.
fn profile_attributes() -> Vec<Vec<u8>> {
    crafted::der_order(&[
        crafted::content_type(crafted::ID_DATA),
        crafted::signing_time(now()),
        crafted::message_digest(&prescription()),
    ])
}

#[test]
fn a_hand_made_signature_inside_the_profile_verifies() {
    let attributes = profile_attributes();
    assert_eq!(
        verify_crafted(crafted::ID_DATA, &attributes, &attributes),
        Ok(Role::Doctor)
    );
}

/// Signed attributes out of DER SET OF order are refused, whether the signature covers the bytes
/// sent or their DER re-encoding (which a verifier that re-encodes would check, and accept, and
/// `openssl cms -verify` refuse), and so is a length not in its shortest form.
#[test]
fn signed_attributes_out_of_der_order_are_refused() {
    let in_order = profile_attributes();
    let mut reordered = in_order.clone();
    reordered.reverse();
    // and one attribute's length in a long form where the short one does
    let mut long_length = in_order.clone();
    let short = long_length[0].clone();
    long_length[0] = [&[short[0], 0x81], &short[1..]].concat();
    for (sent, signed) in [
        (&reordered, &reordered),
        (&reordered, &in_order),
        (&long_length, &long_length),
    ] {
        let refusal = verify_crafted(crafted::ID_DATA, sent, signed).unwrap_err();
        assert_eq!(refusal.reason, Reason::MalformedSignature);
        assert_eq!(refusal.detail, "signed attributes are not DER-encoded");
    }
}

/// A signature is kept and handed out as received, so what it carries beside its signer must be
/// what a pharmacy's verifier can read: certificates that are X.509 certificates, and CRLs.
#[test]
fn a_signature_carrying_what_is_not_a_certificate_or_a_crl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let attributes = profile_attributes();
    let [leaf, ca] = crafted::chain("doctor");
    let junk = crafted::tlv(0x30, &[0x02, 0x01, 0x00]); // SEQUENCE { INTEGER 0 }
    let crl = std::fs::read(hpki("sign-ca.crl.pem")).unwrap();
    let crl = der::pem::decode_vec(&crl).unwrap().1;
    let certificates = |carried: &[&[u8]]| crafted::tlv(0xa0, &carried.concat());
    let crls = |carried: &[u8]| crafted::tlv(0xa1, carried);
    let cases: [(Vec<u8>, Option<&str>); 5] = [
        (
            certificates(&[&leaf, &ca, &junk]),
            Some("embedded certificate"),
        ),
        (
            certificates(&[&junk, &leaf, &ca]),
            Some("embedded certificate"),
        ),
        (
            certificates(&[&leaf, &ca, &crafted::tlv(0xa1, &junk)]),
            Some("only X.509 certificates may be carried"),
        ),
        (
            [certificates(&[&leaf, &ca]), crls(&junk)].concat(),
            Some("carried revocation information is not a CRL"),
        ),
        ([certificates(&[&leaf, &ca]), crls(&crl)].concat(), None),
    ];
    // Once with the signer's chain unknown, once with it cached by a verification before.
    let verifier = dev_verifier();
    for warm in [false, true] {
        for (carried, refused) in &cases {
            let cms = crafted::signed_data_carrying(
                dir.path(),
                "doctor",
                (crafted::ID_DATA, &attributes, &attributes),
                carried,
            );
            let got = verifier.verify::<Prescription>(&prescription(), &cms, now());
            match refused {
                Some(detail) => {
                    let refusal = got.err().unwrap_or_else(|| panic!("accepted: {detail}"));
                    assert_eq!(refusal.reason, Reason::MalformedSignature, "{warm}");
                    assert!(refusal.detail.starts_with(detail), "{}", refusal.detail);
                }
                None => assert_eq!(got.unwrap().signer().role, Role::Doctor),
            }
        }
        assert_eq!(verifier.chain_cache_hits_and_misses().0 > 0, warm);
    }
}

#[test]
fn an_encapsulated_content_type_other_than_id_data_is_refused() {
    let foreign = "1.2.3.4";
    let attributes = crafted::der_order(&[
        crafted::content_type(foreign),
        crafted::signing_time(now()),
        crafted::message_digest(&prescription()),
    ]);
    let refusal = verify_crafted(foreign, &attributes, &attributes).unwrap_err();
    assert_eq!(refusal.reason, Reason::MalformedSignature);
    assert_eq!(refusal.detail, "eContentType is not id-data");
}

#[test]
fn a_current_signing_time_as_generalized_time_is_refused() {
    let attributes = crafted::der_order(&[
        crafted::content_type(crafted::ID_DATA),
        crafted::signing_time_generalized(now()),
        crafted::message_digest(&prescription()),
    ]);
    let refusal = verify_crafted(crafted::ID_DATA, &attributes, &attributes).unwrap_err();
    assert_eq!(refusal.reason, Reason::MalformedSignature);
    assert_eq!(
        refusal.detail,
        "signing-time of 1950 to 2049 is not a UTCTime (RFC 5652 §11.3)"
    );
}

// --- through the gateway: what is handed out is what was received --------------------------------

/// Registers `sent` as the dev clinic, for patient `n`, and receives it as the dev pharmacy: the
/// signed prescription handed to the pharmacy, or the refusal of the registration.
async fn handed_to_the_pharmacy(
    h: &common::Harness,
    n: u32,
    sent: pb::SignedDocument,
) -> Result<pb::SignedDocument, tonic::Status> {
    let registered = h
        .clinic("clinic")
        .await
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(sent),
            ..Default::default()
        })
        .await?
        .into_inner();
    let received = h
        .pharmacy("pharmacy")
        .await
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(common::patient(n)),
            exchange_number: registered.exchange_number,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    Ok(received.prescription.unwrap())
}

/// Signatures of every origin sent to the running gateway: each one it accepts reaches the
/// pharmacy byte for byte as received (its certificates cut out when stored and put back when
/// handed out) and verifies under `openssl cms -verify`; the others are refused.
#[tokio::test]
async fn every_accepted_signature_reaches_the_pharmacy_as_received_and_verifies_under_openssl() {
    let h = common::start_with(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (doctor, time) = (signer("doctor"), h.now());
    let crafted_by = |content: &[u8], reorder: fn(&mut Vec<Vec<u8>>), over_sent: bool| {
        let in_order = crafted::der_order(&[
            crafted::content_type(crafted::ID_DATA),
            crafted::signing_time(time),
            crafted::message_digest(content),
        ]);
        let mut sent = in_order.clone();
        reorder(&mut sent);
        let signed = if over_sent { &sent } else { &in_order };
        crafted::signed_data(dir.path(), "doctor", crafted::ID_DATA, &sent, signed)
    };
    type Sign<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
    let origins: [(&str, Sign); 5] = [
        ("openssl", &|c| openssl_sign(dir.path(), "doctor", c, &[])),
        ("rxgate", &|c| doctor.sign(c, time).unwrap()),
        ("by hand, DER", &|c| crafted_by(c, |_| {}, true)),
        ("by hand, reordered and signed so", &|c| {
            crafted_by(c, |a| a.reverse(), true)
        }),
        ("by hand, reordered and signed in DER order", &|c| {
            crafted_by(c, |a| a.reverse(), false)
        }),
    ];
    let mut accepted = Vec::new();
    for (n, (origin, sign)) in (1..).zip(origins) {
        let number = format!("RX-ORIGIN-{n}");
        let content = demo_prescription(&number, common::patient(n), h.today()).encode_to_vec();
        let sent = pb::SignedDocument {
            cms_signature: sign(&content),
            content,
        };
        match handed_to_the_pharmacy(&h, n, sent.clone()).await {
            Ok(handed) => {
                assert_eq!(handed, sent, "{origin}");
                openssl_verifies(dir.path(), &handed);
                accepted.push(origin);
            }
            Err(status) => assert_eq!(status.code(), tonic::Code::InvalidArgument, "{origin}"),
        }
    }
    assert_eq!(accepted, ["openssl", "rxgate", "by hand, DER"]);
    h.shutdown().await;
}

/// A dispensing record signed by `openssl cms` reaches the clinic byte for byte as received and
/// verifies under `openssl cms -verify`.
#[tokio::test]
async fn an_openssl_dispensing_record_reaches_the_clinic_as_received_and_verifies_under_openssl() {
    let h = common::start_with(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let registered = h.register_demo("clinic", "RX-OPENSSL-1", 1).await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    pharmacy
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(common::patient(1)),
            exchange_number: registered.exchange_number,
            ..Default::default()
        })
        .await
        .unwrap();
    let record = demo_dispensing("RX-OPENSSL-1", h.today()).encode_to_vec();
    let sent = pb::SignedDocument {
        cms_signature: openssl_sign(dir.path(), "pharmacist", &record, &[]),
        content: record,
    };
    pharmacy
        .record_dispensing(pb::RecordDispensingRequest {
            dispensing_record: Some(sent.clone()),
        })
        .await
        .unwrap();
    let status = h
        .clinic("clinic")
        .await
        .get_prescription_status(pb::GetPrescriptionStatusRequest {
            prescription_id: registered.prescription_id,
        })
        .await
        .unwrap()
        .into_inner();
    let handed = status.dispensing_records[0].record.clone().unwrap();
    assert_eq!(handed, sent);
    openssl_verifies(dir.path(), &handed);
    h.shutdown().await;
}

/// A signer certificate whose own signature does not verify (its last byte changed): a path to
/// the anchor exists by name but does not validate. The client is told so in the gateway's own
/// words, the path validator's diagnostic staying in the server's log.
#[tokio::test]
async fn a_path_that_does_not_validate_is_refused_in_the_gateways_words() {
    use der::{Decode, Encode};
    let h = common::start_with(|_| {}).await;
    let content = demo_prescription("RX-FORGED-1", common::patient(1), h.today()).encode_to_vec();
    let mut cms = signer("doctor").sign(&content, h.now()).unwrap();
    let pem = read(&hpki("doctor.cert.pem"));
    let certificate = x509_cert::Certificate::load_pem_chain(&pem).unwrap()[0]
        .to_der()
        .unwrap();
    let end = cms
        .windows(certificate.len())
        .position(|w| w == certificate)
        .unwrap()
        + certificate.len();
    cms[end - 1] ^= 0x01;
    let forged = x509_cert::Certificate::from_der(&cms[end - certificate.len()..end]);
    assert!(
        forged.is_ok(),
        "still a certificate, with a wrong signature"
    );
    let refusal = dev_verifier()
        .verify::<Prescription>(&content, &cms, h.now())
        .unwrap_err();
    let diagnostic = refusal.diagnostic.unwrap_or_default();
    assert!(
        diagnostic.contains("SignatureVerificationFailure"),
        "kept for the log: {diagnostic}"
    );
    let status = handed_to_the_pharmacy(
        &h,
        1,
        pb::SignedDocument {
            content,
            cms_signature: cms,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "signature refused: CERT_UNTRUSTED: the certification path does not validate"
    );
    h.shutdown().await;
}
