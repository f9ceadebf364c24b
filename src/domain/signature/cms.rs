//! The CMS envelope: a detached SignedData of id-data with exactly one signer, its signed
//! attributes, the message-digest comparison and the signature over the signed attributes exactly
//! as received, which must be DER (RFC 5652 §5.4): never over a re-encoding of them, which could
//! verify here and fail at the pharmacy's own verifier.
//!
//! The certificates the signature carries are kept as their DER bytes, not decoded: the verifier
//! finds the signer's among them (most often as the leaf of a chain it validated before, keyed by
//! the certificate's SHA-256) and decodes only what it has not seen.

use std::time::SystemTime;

use cms::{
    content_info::CmsVersion,
    signed_data::{
        DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignedAttributes, SignerIdentifier,
        SignerInfo,
    },
};
use const_oid::{ObjectIdentifier, db::rfc5911, db::rfc5912};
use der::{Decode, Encode, Header, Reader, SliceReader, Tag, TagNumber, asn1::OctetString};
use ring::digest;
use x509_cert::{Certificate, certificate::Rfc5280, crl::CertificateList, time::Time};

use super::{
    Reason, Refusal,
    crypto::{self, CryptoError, Purpose},
};

/// A SignedData as parsed, before anything about it is trusted: its one signer and the
/// certificates it carries.
pub(crate) struct Envelope<'a> {
    signer_info: SignerInfo,
    /// The signer's signed attributes as received, re-tagged from `[0] IMPLICIT` to the SET OF
    /// that the signature covers (RFC 5652 §5.4); `None` when there are none.
    signed_attributes: Option<Vec<u8>>,
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
/// The first octet of a SET OF, as signed attributes are signed.
const SET: u8 = 0x31;
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
/// that a verification reads, the certificate and revocation-info sets left as bytes (revocation
/// comes from the CRLs in force, never from the signer). The signer infos are left as bytes too:
/// their signed attributes are verified as received.
struct Parts<'a> {
    content_type: ObjectIdentifier,
    encap: EncapsulatedContentInfo,
    signers: Vec<&'a [u8]>,
    certificates: Vec<&'a [u8]>,
    revocation_info: Vec<&'a [u8]>,
}

/// The elements of a SET OF tagged `tag`, each as its DER bytes, in the order received.
fn set_elements<'a>(reader: &mut SliceReader<'a>, tag: Tag) -> der::Result<Vec<&'a [u8]>> {
    let set = Header::decode(reader)?;
    set.tag().assert_eq(tag)?;
    reader.read_nested(set.length(), |set| {
        let mut elements = Vec::new();
        while !set.is_finished() {
            elements.push(set.tlv_bytes()?);
        }
        Ok(elements)
    })
}

/// The signed attributes of one SignerInfo (`SEQUENCE { version, sid, digestAlgorithm,
/// signedAttrs [0] IMPLICIT OPTIONAL, ... }`) as received, re-tagged as a SET OF.
fn received_signed_attributes(signer_info: &[u8]) -> der::Result<Option<Vec<u8>>> {
    let mut reader = SliceReader::new(signer_info)?;
    let attributes = reader.sequence(|info| {
        for _version_sid_digest_algorithm in 0..3 {
            info.tlv_bytes()?;
        }
        let attributes = match Tag::peek(info)? {
            CONTEXT_0 => Some([&[SET], &info.tlv_bytes()?[1..]].concat()),
            _ => None,
        };
        while !info.is_finished() {
            info.tlv_bytes()?;
        }
        Ok::<_, der::Error>(attributes)
    })?;
    reader.finish()?;
    Ok(attributes)
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
                    certificates = set_elements(signed, CONTEXT_0)?;
                }
                let mut revocation_info = Vec::new();
                if Tag::peek(signed)? == CONTEXT_1 {
                    revocation_info = set_elements(signed, CONTEXT_1)?;
                }
                let signers = set_elements(signed, Tag::Set)?;
                Ok(Parts {
                    content_type,
                    encap,
                    signers,
                    certificates,
                    revocation_info,
                })
            })
        })
    })
}

/// Parses the envelope's structure: a detached SignedData of id-data with exactly one signer.
/// Nothing of it is trusted yet.
pub(crate) fn parse(cms_der: &[u8]) -> Result<Envelope<'_>, Refusal> {
    let not_der =
        |e: der::Error| malformed(format!("not a DER ContentInfo with a SignedData: {e}"));
    let mut reader = SliceReader::new(cms_der).map_err(not_der)?;
    let parts = read_parts(&mut reader).map_err(not_der)?;
    reader.finish().map_err(not_der)?;
    if parts.content_type != rfc5911::ID_SIGNED_DATA {
        return Err(malformed("content type is not signed-data"));
    }
    if parts.encap.econtent_type != rfc5911::ID_DATA {
        return Err(malformed("eContentType is not id-data"));
    }
    if parts.encap.econtent.is_some() {
        return Err(malformed(
            "the signature must be detached (no encapsulated content)",
        ));
    }
    let &[signer_info] = parts.signers.as_slice() else {
        return Err(malformed("exactly one signer is required"));
    };
    carried_material(&parts)?;
    let signed_attributes = received_signed_attributes(signer_info).map_err(not_der)?;
    // DER is the one encoding of a value: bytes that do not decode strictly, or that re-encode
    // to other bytes (a SET OF out of order, say), are not DER.
    if let Some(received) = &signed_attributes
        && SignedAttributes::from_der(received)
            .and_then(|attributes| attributes.to_der())
            .ok()
            .as_ref()
            != Some(received)
    {
        return Err(malformed("signed attributes are not DER-encoded"));
    }
    Ok(Envelope {
        signed_attributes,
        signer_info: SignerInfo::from_der(signer_info).map_err(not_der)?,
        certificates: parts.certificates,
    })
}

/// What the signature carries beside its signer must be what a pharmacy's verifier can read, as
/// it is kept and handed out as received: certificates only (no attribute or other certificate
/// choices; each decoded as X.509 when the signer is looked for) and CRLs only. Revocation is
/// judged from the CRLs in force, never from these.
fn carried_material(parts: &Parts<'_>) -> Result<(), Refusal> {
    if parts
        .certificates
        .iter()
        .any(|choice| choice.first() != Some(&SEQUENCE))
    {
        return Err(malformed("only X.509 certificates may be carried"));
    }
    if parts
        .revocation_info
        .iter()
        .any(|choice| CertificateList::<Rfc5280>::from_der(choice).is_err())
    {
        return Err(malformed("carried revocation information is not a CRL"));
    }
    Ok(())
}

impl Envelope<'_> {
    /// Whether `cert` is the one the signer identifier names.
    pub(super) fn is_signed_by(&self, cert: &Certificate) -> bool {
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
    pub(super) fn verify(
        &self,
        content: &[u8],
        signer: &Certificate,
    ) -> Result<SystemTime, Refusal> {
        let signer_info = &self.signer_info;
        // Signed attributes: content-type, message-digest, signing-time.
        let (Some(attrs), Some(received)) = (&signer_info.signed_attrs, &self.signed_attributes)
        else {
            return Err(malformed("signed attributes are required"));
        };
        let content_type: ObjectIdentifier =
            single_attribute(attrs, rfc5911::ID_CONTENT_TYPE, "content-type")?
                .decode_as()
                .map_err(|e| malformed(format!("content-type: {e}")))?;
        if content_type != rfc5911::ID_DATA {
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
        if let Time::GeneralTime(t) = signing_time
            && (1950..2050).contains(&t.to_date_time().year())
        {
            return Err(malformed(
                "signing-time of 1950 to 2049 is not a UTCTime (RFC 5652 §11.3)",
            ));
        }

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
            received,
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
