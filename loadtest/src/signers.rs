//! The doctor and the pharmacist who sign every document of a run (dev HPKI certificates), and
//! signing in bulk on every core, before any clock starts.

use std::{path::Path, thread, time::SystemTime};

use anyhow::Context;
use prost::Message;
use rxgate::{pki::signer::SigningKey, wire::proto::v1 as pb};
use x509_cert::{
    Certificate,
    der::{DecodePem, asn1::ObjectIdentifier},
    ext::pkix::name::DirectoryString,
};

/// A signer and the practitioner a document must name for the signature to be accepted (its
/// certificate's subject commonName and serialNumber).
pub struct Signer {
    key: SigningKey,
    pub practitioner: pb::Practitioner,
}

/// Who signs a run's documents.
pub struct Signers {
    pub doctor: Signer,
    pub pharmacist: Signer,
}

impl Signers {
    /// `doctor` and `pharmacist` are file stems in `dir` (`NAME.cert.pem`, `NAME.key.pem`), with
    /// the intermediate `sign-ca.cert.pem` embedded in every signature.
    pub fn load(dir: &Path, doctor: &str, pharmacist: &str) -> anyhow::Result<Self> {
        Ok(Signers {
            doctor: Signer::load(dir, doctor)?,
            pharmacist: Signer::load(dir, pharmacist)?,
        })
    }
}

const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");

impl Signer {
    fn load(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let read = |file: String| {
            let path = dir.join(&file);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let cert = read(format!("{name}.cert.pem"))?;
        let key = SigningKey::new(
            &cert,
            &read("sign-ca.cert.pem".into())?,
            &read(format!("{name}.key.pem"))?,
        )
        .with_context(|| format!("the signer {name}"))?;
        let cert = Certificate::from_pem(&cert).with_context(|| format!("{name}.cert.pem"))?;
        let attribute = |oid| {
            subject_attribute(&cert, oid)
                .with_context(|| format!("{name}.cert.pem: no subject attribute {oid}"))
        };
        let practitioner = pb::Practitioner {
            name: attribute(COMMON_NAME)?,
            serial_number: attribute(SERIAL_NUMBER)?,
        };
        Ok(Signer { key, practitioner })
    }

    /// Signs every document, on all cores; the signing-time is now.
    pub fn sign_all<M: Message>(&self, documents: &[M]) -> anyhow::Result<Vec<pb::SignedDocument>> {
        let now = SystemTime::now();
        let threads = thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = documents.len().div_ceil(threads).max(1);
        thread::scope(|s| {
            let workers: Vec<_> = documents
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|d| {
                                let content = d.encode_to_vec();
                                Ok(pb::SignedDocument {
                                    cms_signature: self.key.sign(&content, now)?,
                                    content,
                                })
                            })
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut signed = Vec::with_capacity(documents.len());
            for worker in workers {
                signed.extend(worker.join().expect("a signing thread panicked")?);
            }
            Ok(signed)
        })
    }
}

/// The one value of a subject attribute, as a string (UTF8String or PrintableString).
fn subject_attribute(cert: &Certificate, oid: ObjectIdentifier) -> Option<String> {
    let value = cert
        .tbs_certificate()
        .subject()
        .iter()
        .find(|atv| atv.oid == oid)?;
    match DirectoryString::try_from(&value.value).ok()? {
        DirectoryString::Utf8String(s) => Some(s),
        DirectoryString::PrintableString(s) => Some(s.to_string()),
        DirectoryString::TeletexString(_) | DirectoryString::BmpString(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_practitioner_is_read_from_the_certificate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/hpki");
        let s = Signers::load(&dir, "doctor-ec", "pharmacist-ec").unwrap();
        assert_eq!(s.doctor.practitioner.name, "DEV Doctor Hanako Iryo");
        assert_eq!(s.doctor.practitioner.serial_number, "DEV-DR-0002");
        assert_eq!(s.pharmacist.practitioner.serial_number, "DEV-PH-0002");
    }
}
