//! The CMS envelope: a detached SignedData with exactly one signer, its signed attributes, the
//! message-digest comparison and the signature over the DER of the signed attributes.

use std::time::SystemTime;

use cms::{
    cert::CertificateChoices,
    content_info::ContentInfo,
    signed_data::{SignedData, SignerIdentifier},
};
use const_oid::{ObjectIdentifier, db::rfc5911, db::rfc5912};
use der::{Decode, Encode, asn1::OctetString};
use ring::digest;
use x509_cert::{Certificate, time::Time};

use super::{
    Reason, Refusal,
    crypto::{self, CryptoError, Purpose},
};

/// What the envelope yields once its own signature checks out.
pub(crate) struct Envelope {
    /// The signer's certificate, DER.
    pub signer_der: Vec<u8>,
    pub signer: Certificate,
    /// Every other certificate the signature carries (candidate intermediates), DER.
    pub others: Vec<Vec<u8>>,
    /// The signing-time attribute: declared by the signer, proves nothing on its own.
    pub signing_time: SystemTime,
}

fn refuse(reason: Reason, detail: impl Into<String>) -> Refusal {
    Refusal::new(reason, detail)
}

fn malformed(detail: impl Into<String>) -> Refusal {
    refuse(Reason::MalformedSignature, detail)
}

/// The single value of a signed attribute that must occur exactly once.
fn single_attribute<'a>(
    attrs: &'a x509_cert::attr::Attributes,
    oid: ObjectIdentifier,
    name: &str,
) -> Result<&'a der::Any, Refusal> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    let attr = found
        .next()
        .ok_or_else(|| malformed(format!("signed attribute {name} is missing")))?;
    if found.next().is_some() || attr.values.len() != 1 {
        return Err(malformed(format!(
            "signed attribute {name} must have exactly one value"
        )));
    }
    Ok(attr.values.get(0).expect("one value"))
}

/// Opens the envelope and checks what it can check alone: structure, digest, signature.
pub(crate) fn open(content: &[u8], cms_der: &[u8]) -> Result<Envelope, Refusal> {
    let info = ContentInfo::from_der(cms_der)
        .map_err(|e| malformed(format!("not a DER ContentInfo: {e}")))?;
    if info.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(malformed("content type is not signed-data"));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| malformed(format!("not a SignedData: {e}")))?;
    if signed.encap_content_info.econtent.is_some() {
        return Err(malformed(
            "the signature must be detached (no encapsulated content)",
        ));
    }
    let econtent_type = signed.encap_content_info.econtent_type;
    let mut signers = signed.signer_infos.0.iter();
    let signer_info = match (signers.next(), signers.next()) {
        (Some(one), None) => one,
        _ => return Err(malformed("exactly one signer is required")),
    };

    // The certificates carried: find the signer's by its identifier.
    let mut certs = Vec::new();
    for choice in signed.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(cert) = choice {
            let der = cert
                .to_der()
                .map_err(|e| malformed(format!("embedded certificate: {e}")))?;
            certs.push((der, cert));
        }
    }
    let is_signer = |cert: &Certificate| match &signer_info.sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            cert.tbs_certificate().issuer() == &ias.issuer
                && cert.tbs_certificate().serial_number() == &ias.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(skid) => {
            matches!(
                cert.tbs_certificate().get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>(),
                Ok(Some((_, own))) if own == *skid
            )
        }
    };
    let position = certs
        .iter()
        .position(|(_, cert)| is_signer(cert))
        .ok_or_else(|| malformed("the signer's certificate is not embedded"))?;
    let (signer_der, signer) = certs.remove(position);
    let signer = signer.clone();
    let others = certs.into_iter().map(|(der, _)| der).collect();

    // Signed attributes: content-type, message-digest, signing-time.
    let attrs = signer_info
        .signed_attrs
        .as_ref()
        .ok_or_else(|| malformed("signed attributes are required"))?;
    let content_type: ObjectIdentifier =
        single_attribute(attrs, rfc5911::ID_CONTENT_TYPE, "content-type")?
            .decode_as()
            .map_err(|e| malformed(format!("content-type: {e}")))?;
    if content_type != econtent_type {
        return Err(malformed(
            "content-type attribute differs from the encapsulated type",
        ));
    }
    let digest_value = single_attribute(attrs, rfc5911::ID_MESSAGE_DIGEST, "message-digest")?;
    let digest_value: OctetString = digest_value
        .decode_as()
        .map_err(|e| malformed(format!("message-digest: {e}")))?;
    let signing_time: Time = single_attribute(attrs, rfc5911::ID_SIGNING_TIME, "signing-time")?
        .decode_as()
        .map_err(|e| malformed(format!("signing-time: {e}")))?;

    if signer_info.digest_alg.oid != rfc5912::ID_SHA_256 {
        return Err(refuse(
            Reason::UnsupportedAlgorithm,
            format!("digest algorithm {}", signer_info.digest_alg.oid),
        ));
    }
    let actual = digest::digest(&digest::SHA256, content);
    if digest_value.as_bytes() != actual.as_ref() {
        return Err(refuse(
            Reason::DigestMismatch,
            "message-digest differs from SHA-256 of the content",
        ));
    }

    // The signature covers the DER encoding of the signed attributes as a SET OF.
    let signed_bytes = attrs
        .to_der()
        .map_err(|e| malformed(format!("signed attributes: {e}")))?;
    if !crypto::parameters_acceptable(&signer_info.signature_algorithm) {
        return Err(refuse(
            Reason::UnsupportedAlgorithm,
            "signature algorithm parameters are not supported",
        ));
    }
    crypto::verify(
        Purpose::Document,
        &signer_info.signature_algorithm.oid,
        Some(&signer_info.digest_alg.oid),
        signer.tbs_certificate().subject_public_key_info(),
        &signed_bytes,
        signer_info.signature.as_bytes(),
    )
    .map_err(|e| match e {
        CryptoError::Unsupported(what) => refuse(Reason::UnsupportedAlgorithm, what),
        CryptoError::Invalid => refuse(
            Reason::SignatureInvalid,
            "the signature does not verify under the signer's key",
        ),
    })?;

    Ok(Envelope {
        signer_der,
        signer,
        others,
        signing_time: signing_time.to_system_time(),
    })
}
