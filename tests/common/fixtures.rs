//! The signers and documents the tests share: the development HPKI's signing keys (certs/hpki),
//! documents signed with them, the dev patients and prescriptions built on the demo ones
//! (`rxgate::cli::demo`). One place, so that a test file does not load keys or spell a patient key
//! its own way. Depends on the harness only for `prescription`'s date.

use std::time::SystemTime;

use rxgate::{cli::demo::demo_prescription, pki::signer::SigningKey, wire::proto::v1 as pb};

use super::{Harness, dev_pki};

/// The signing key of the development signer `name` (`doctor`, `pharmacist`, … of certs/hpki).
pub(crate) fn signer(name: &str) -> SigningKey {
    dev_pki()
        .signer(name)
        .unwrap_or_else(|e| panic!("signer {name}: {e:#}"))
}

/// `content` signed by `key` as of `at`.
pub(crate) fn signed(key: &SigningKey, content: Vec<u8>, at: SystemTime) -> pb::SignedDocument {
    pb::SignedDocument {
        cms_signature: key.sign(&content, at).unwrap(),
        content,
    }
}

/// The insurance key of dev patient `n`.
pub(crate) fn patient(n: u32) -> pb::PatientKey {
    pb::PatientKey {
        kind: Some(pb::patient_key::Kind::Insurance(pb::InsuranceKey {
            insurer_number: "06139999".into(),
            symbol: "ZQ".into(),
            number: format!("{n:07}"),
            branch: "01".into(),
        })),
    }
}

/// A prescription line of the drug with receipt code `code`, otherwise the demo line.
pub(crate) fn line(code: &str) -> pb::PrescriptionLine {
    pb::PrescriptionLine {
        drug: Some(pb::DrugCode {
            kind: pb::DrugCodeKind::Receipt as i32,
            code: code.into(),
        }),
        ..demo_prescription("x", patient(0), "2025-01-01".parse().unwrap()).lines[0].clone()
    }
}

/// A prescription of `institution` (a dev clinic) for patient `n`, issued today, one line per
/// receipt code.
pub(crate) fn prescription(
    h: &Harness,
    institution: &str,
    number: &str,
    n: u32,
    codes: &[&str],
) -> pb::Prescription {
    pb::Prescription {
        institution_code: institution.into(),
        lines: codes.iter().map(|c| line(c)).collect(),
        ..demo_prescription(number, patient(n), h.today())
    }
}
