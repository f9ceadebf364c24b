//! Hand-made CMS signatures that `rxgate::pki::signer` rightly cannot make: the signed attributes
//! sent in the order and encoding a test chooses, any eContentType, and the signature made by
//! `openssl dgst` over exactly the bytes a test chooses (those sent, or others). Assembled from
//! raw DER so that nothing re-sorts or re-encodes them on the way.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use der::{
    Encode,
    asn1::{GeneralizedTime, ObjectIdentifier, OctetString, UtcTime},
};
use x509_cert::Certificate;

/// A file of the development HPKI (certs/hpki).
pub(crate) fn hpki(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("certs/hpki")
        .join(file)
}

/// id-data (RFC 5652 §4), the only eContentType a document signature may have.
pub(crate) const ID_DATA: &str = "1.2.840.113549.1.7.1";
const ID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const ID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const ID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const ID_SIGNING_TIME: &str = "1.2.840.113549.1.9.5";
const ID_SHA_256: &str = "2.16.840.1.101.3.4.2.1";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const ECDSA_WITH_SHA_256: &str = "1.2.840.10045.4.3.2";

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const CONTEXT_0: u8 = 0xa0;

/// A DER TLV of `tag` around `content`, its length in the minimal form.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der(value: &impl Encode) -> Vec<u8> {
    value.to_der().unwrap()
}

fn oid(dotted: &str) -> Vec<u8> {
    der(&ObjectIdentifier::new_unwrap(dotted))
}

/// An Attribute { type, SET { value } }.
fn attribute(dotted: &str, value: Vec<u8>) -> Vec<u8> {
    tlv(SEQUENCE, &[oid(dotted), tlv(SET, &value)].concat())
}

pub(crate) fn content_type(dotted: &str) -> Vec<u8> {
    attribute(ID_CONTENT_TYPE, oid(dotted))
}

pub(crate) fn message_digest(content: &[u8]) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    attribute(
        ID_MESSAGE_DIGEST,
        der(&OctetString::new(digest.as_ref()).unwrap()),
    )
}

/// signing-time as a UTCTime, as RFC 5652 §11.3 requires for 1950–2049.
pub(crate) fn signing_time(at: SystemTime) -> Vec<u8> {
    attribute(
        ID_SIGNING_TIME,
        der(&UtcTime::from_system_time(at).unwrap()),
    )
}

/// signing-time as a GeneralizedTime, whatever the year.
pub(crate) fn signing_time_generalized(at: SystemTime) -> Vec<u8> {
    attribute(
        ID_SIGNING_TIME,
        der(&GeneralizedTime::from_system_time(at).unwrap()),
    )
}

/// The attributes in DER SET OF order (ascending encodings; none is a prefix of another here).
pub(crate) fn der_order(attributes: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut sorted = attributes.to_vec();
    sorted.sort();
    sorted
}

fn certificate(file: &str) -> Certificate {
    let pem = std::fs::read(hpki(file)).unwrap();
    Certificate::load_pem_chain(&pem).unwrap().remove(0)
}

/// Runs the openssl command with `args`; panics with its message unless it succeeds.
pub(crate) fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl command is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl dgst -sha256 -sign`: RSA PKCS#1 v1.5 or DER ECDSA, as the key is.
fn openssl_signature(dir: &Path, key: &Path, message: &[u8]) -> Vec<u8> {
    let (input, output) = (dir.join("attributes.der"), dir.join("attributes.sig"));
    std::fs::write(&input, message).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        &path(key),
        "-out",
        &path(&output),
        &path(&input),
    ]);
    std::fs::read(output).unwrap()
}

/// A detached ContentInfo(SignedData) by the dev signer `name`, carrying its certificate and
/// the signing CA's: `sent` are the signed attributes as sent (in `[0] IMPLICIT`, in this
/// order), `signed` those the signature covers, as a SET OF in the order given.
pub(crate) fn signed_data(
    dir: &Path,
    name: &str,
    econtent_type: &str,
    sent: &[Vec<u8>],
    signed: &[Vec<u8>],
) -> Vec<u8> {
    let carried = tlv(CONTEXT_0, &chain(name).concat());
    signed_data_carrying(dir, name, (econtent_type, sent, signed), &carried)
}

/// The DER of the dev signer `name`'s certificate and of the signing CA's.
pub(crate) fn chain(name: &str) -> [Vec<u8>; 2] {
    [
        der(&certificate(&format!("{name}.cert.pem"))),
        der(&certificate("sign-ca.cert.pem")),
    ]
}

/// Like [`signed_data`], with `carried` (the SignedData's `certificates [0]` and `crls [1]`
/// fields, tagged, as they are to be sent) in place of the signer's chain.
pub(crate) fn signed_data_carrying(
    dir: &Path,
    name: &str,
    (econtent_type, sent, signed): (&str, &[Vec<u8>], &[Vec<u8>]),
    carried: &[u8],
) -> Vec<u8> {
    let signer = certificate(&format!("{name}.cert.pem"));
    let tbs = signer.tbs_certificate();
    let signature = openssl_signature(
        dir,
        &hpki(&format!("{name}.key.pem")),
        &tlv(SET, &signed.concat()),
    );
    let signature_algorithm = if tbs.subject_public_key_info().algorithm.oid
        == ObjectIdentifier::new_unwrap(RSA_ENCRYPTION)
    {
        tlv(SEQUENCE, &[oid(RSA_ENCRYPTION), vec![0x05, 0x00]].concat())
    } else {
        tlv(SEQUENCE, &oid(ECDSA_WITH_SHA_256))
    };
    let sha256 = tlv(SEQUENCE, &oid(ID_SHA_256));
    let signer_info = tlv(
        SEQUENCE,
        &[
            der(&1u8),
            tlv(
                SEQUENCE,
                &[der(tbs.issuer()), der(tbs.serial_number())].concat(),
            ),
            sha256.clone(),
            tlv(CONTEXT_0, &sent.concat()),
            signature_algorithm,
            der(&OctetString::new(signature).unwrap()),
        ]
        .concat(),
    );
    let signed_data = tlv(
        SEQUENCE,
        &[
            der(&1u8),
            tlv(SET, &sha256),
            tlv(SEQUENCE, &oid(econtent_type)),
            carried.to_vec(),
            tlv(SET, &signer_info),
        ]
        .concat(),
    );
    tlv(
        SEQUENCE,
        &[oid(ID_SIGNED_DATA), tlv(CONTEXT_0, &signed_data)].concat(),
    )
}
