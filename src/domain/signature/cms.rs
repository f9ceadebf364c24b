//! The CMS envelope: a detached SignedData with exactly one signer, its signed attributes, the
//! message-digest comparison and the signature over the DER of the signed attributes.
//!
//! The certificates the signature carries are kept as their DER bytes, not decoded: the verifier
//! finds the signer's among them (most often as the leaf of a chain it validated before, keyed by
//! the certificate's SHA-256) and decodes only what it has not seen.

use std::time::SystemTime;

use cms::{
    content_info::CmsVersion,
    signed_data::{
        DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignerIdentifier, SignerInfo,
        SignerInfos,
    },
};
use const_oid::{ObjectIdentifier, db::rfc5911, db::rfc5912};
use der::{Decode, Encode, Header, Reader, SliceReader, Tag, TagNumber, asn1::OctetString};
use ring::digest;
use x509_cert::{Certificate, time::Time};

use super::{
    Reason, Refusal,
    crypto::{self, CryptoError, Purpose},
};

/// A SignedData as parsed, before anything about it is trusted: its one signer and the
/// certificates it carries.
pub(crate) struct Envelope<'a> {
    econtent_type: ObjectIdentifier,
    signer_info: SignerInfo,
    /// The certificates carried (the `Certificate` choices of the set), DER, in their order.
    pub certificates: Vec<&'a [u8]>,
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

/// The first octet of a SEQUENCE, as a `Certificate` choice starts.
const SEQUENCE: u8 = 0x30;
/// The constructed context-specific tags [0] and [1].
const CONTEXT_0: Tag = Tag::ContextSpecific {
    constructed: true,
    number: TagNumber(0),
};
const CONTEXT_1: Tag = Tag::ContextSpecific {
    constructed: true,
    number: TagNumber(1),
};

/// The parts of a `ContentInfo { contentType, [0] EXPLICIT SignedData }` (RFC 5652 §3, §5.1)
/// that a verification reads, the certificate set left as bytes and the revocation-info choices
/// skipped (revocation comes from the CRLs in force, never from the signer).
struct Parts<'a> {
    content_type: ObjectIdentifier,
    encap: EncapsulatedContentInfo,
    signers: SignerInfos,
    certificates: Vec<&'a [u8]>,
}

fn read_parts<'a>(reader: &mut SliceReader<'a>) -> der::Result<Parts<'a>> {
    reader.sequence(|info| {
        let content_type = info.decode()?;
        let explicit = Header::decode(info)?;
        explicit.tag().assert_eq(CONTEXT_0)?;
        info.read_nested(explicit.length(), |inner| {
            inner.sequence(|signed| {
                let _: CmsVersion = signed.decode()?;
                let _: DigestAlgorithmIdentifiers = signed.decode()?;
                let encap = signed.decode()?;
                let mut certificates = Vec::new();
                if Tag::peek(signed)? == CONTEXT_0 {
                    let set = Header::decode(signed)?;
                    signed.read_nested(set.length(), |set| {
                        while !set.is_finished() {
                            let choice = set.tlv_bytes()?;
                            // The other choices (attribute certificates and the like) say
                            // nothing about the signer.
                            if choice.first() == Some(&SEQUENCE) {
                                certificates.push(choice);
                            }
                        }
                        Ok::<_, der::Error>(())
                    })?;
                }
                if Tag::peek(signed)? == CONTEXT_1 {
                    signed.tlv_bytes()?;
                }
                let signers = signed.decode()?;
                Ok(Parts {
                    content_type,
                    encap,
                    signers,
                    certificates,
                })
            })
        })
    })
}

/// Parses the envelope's structure: a detached SignedData with exactly one signer. Nothing of it
/// is trusted yet.
pub(crate) fn parse(cms_der: &[u8]) -> Result<Envelope<'_>, Refusal> {
    let not_der =
        |e: der::Error| malformed(format!("not a DER ContentInfo with a SignedData: {e}"));
    let mut reader = SliceReader::new(cms_der).map_err(not_der)?;
    let parts = read_parts(&mut reader).map_err(not_der)?;
    reader.finish().map_err(not_der)?;
    if parts.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(malformed("content type is not signed-data"));
    }
    if parts.encap.econtent.is_some() {
        return Err(malformed(
            "the signature must be detached (no encapsulated content)",
        ));
    }
    let mut signers = parts.signers.0.into_vec().into_iter();
    let signer_info = match (signers.next(), signers.next()) {
        (Some(one), None) => one,
        _ => return Err(malformed("exactly one signer is required")),
    };
    Ok(Envelope {
        econtent_type: parts.encap.econtent_type,
        signer_info,
        certificates: parts.certificates,
    })
}

impl Envelope<'_> {
    /// Whether `cert` is the one the signer identifier names.
    pub fn is_signed_by(&self, cert: &Certificate) -> bool {
        match &self.signer_info.sid {
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
        }
    }

    /// Checks what the envelope can check alone, given the signer's certificate: the signed
    /// attributes, the digest of `content` and the signature. Returns the signing-time
    /// attribute (declared by the signer, it proves nothing on its own).
    pub fn verify(&self, content: &[u8], signer: &Certificate) -> Result<SystemTime, Refusal> {
        let signer_info = &self.signer_info;
        // Signed attributes: content-type, message-digest, signing-time.
        let attrs = signer_info
            .signed_attrs
            .as_ref()
            .ok_or_else(|| malformed("signed attributes are required"))?;
        let content_type: ObjectIdentifier =
            single_attribute(attrs, rfc5911::ID_CONTENT_TYPE, "content-type")?
                .decode_as()
                .map_err(|e| malformed(format!("content-type: {e}")))?;
        if content_type != self.econtent_type {
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
        Ok(signing_time.to_system_time())
    }
}
