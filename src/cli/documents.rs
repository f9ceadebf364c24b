//! `rxgate sign` and `rxgate verify`: a document written as protobuf JSON signed into a
//! `SignedDocument` with a local key, and a `SignedDocument` verified against trust files, as the
//! gateway would verify it. No gateway is involved.

use std::{fs, path::Path, time::SystemTime};

use anyhow::{Context, bail};
use clap::ValueEnum;
use prost::Message;

use crate::{
    cli::args::{Format, Kind, TrustArgs},
    domain::{
        hash::hex,
        signature::{SignedContent, Verifier, VerifierConfig},
    },
    pki::{signer::SigningKey, trust::TrustFiles},
    wire::json,
    wire::proto::v1::{DispensingRecord, Prescription, SignedDocument},
};

pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

const SIGNED_DOCUMENT: &str = "rxgate.v1.SignedDocument";

fn canonical<M: Message + Default>(name: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    let message: M = json::from_json(name, text)?;
    Ok(message.encode_to_vec())
}

impl Kind {
    /// The full name of the document's message.
    fn message(self) -> &'static str {
        match self {
            Kind::Prescription => "rxgate.v1.Prescription",
            Kind::Dispensing => "rxgate.v1.DispensingRecord",
        }
    }

    /// The document's canonical protobuf bytes from its JSON: exactly what rxgate's strict
    /// decode accepts.
    fn canonical(self, text: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Kind::Prescription => canonical::<Prescription>(self.message(), text),
            Kind::Dispensing => canonical::<DispensingRecord>(self.message(), text),
        }
    }
}

/// Signs the document at `document` (JSON) and writes the `SignedDocument` to `out` (standard
/// output by default), and the content and the signature apart where asked.
pub fn sign(
    kind: Kind,
    document: &Path,
    signer: &SigningKey,
    out: Option<&Path>,
    format: Format,
    content_out: Option<&Path>,
    signature_out: Option<&Path>,
) -> anyhow::Result<()> {
    let text = String::from_utf8(read(document)?).context("the document is not UTF-8")?;
    let content = kind.canonical(&text)?;
    let cms_signature = signer.sign(&content, SystemTime::now())?;
    if let Some(path) = content_out {
        write(path, &content)?;
    }
    if let Some(path) = signature_out {
        write(path, &cms_signature)?;
    }
    let signed = SignedDocument {
        content,
        cms_signature,
    };
    let bytes = match format {
        Format::Json => (json::to_json(SIGNED_DOCUMENT, &signed)? + "\n").into_bytes(),
        Format::Binary => signed.encode_to_vec(),
    };
    match out {
        Some(path) => write(path, &bytes),
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .context("writing standard output")
        }
    }
}

/// Verifies the `SignedDocument` at `document` as a `kind` and prints what was verified, or
/// the refusal; false when refused.
pub fn verify(kind: Kind, document: &Path, trust: TrustArgs) -> anyhow::Result<bool> {
    let files = if trust.dev {
        let pki = trust.dev_certs.locate()?;
        eprintln!(
            "rxgate: trusting the DEVELOPMENT PKI ({}): never in production",
            pki.dir().display()
        );
        pki.signing()
    } else if trust.anchor.is_empty() {
        bail!("name the trust anchors (--anchor, --crl …) or say --dev");
    } else {
        TrustFiles {
            anchors: trust.anchor,
            intermediates: trust.intermediate,
            crls: trust.crl,
        }
    };
    let (verifier, _) = files.load(VerifierConfig::default())?;
    let signed = load_signed(kind, document)?;
    match kind {
        Kind::Prescription => verify_as::<Prescription>(&verifier, &signed, kind.message()),
        Kind::Dispensing => verify_as::<DispensingRecord>(&verifier, &signed, kind.message()),
    }
}

/// The `SignedDocument` at `path`, as JSON or binary. A `kind` document itself, not yet signed,
/// is refused with the way to sign it.
fn load_signed(kind: Kind, path: &Path) -> anyhow::Result<SignedDocument> {
    let bytes = read(path)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.trim_start().starts_with('{') => json::from_json(SIGNED_DOCUMENT, text)
            .map_err(|e| match kind.canonical(text) {
                Ok(_) => anyhow::anyhow!(
                    "{}: this looks like an unsigned document: sign it first with `rxgate sign \
                     {} {} --cert CERT --key KEY`",
                    path.display(),
                    kind.to_possible_value()
                        .expect("no kind is hidden")
                        .get_name(),
                    path.display()
                ),
                Err(_) => e.into(),
            }),
        _ => SignedDocument::decode(bytes.as_slice()).context("not a SignedDocument"),
    }
}

fn verify_as<D: SignedContent + Message>(
    verifier: &Verifier,
    signed: &SignedDocument,
    name: &str,
) -> anyhow::Result<bool> {
    match verifier.verify::<D>(&signed.content, &signed.cms_signature, SystemTime::now()) {
        Ok(verified) => {
            let signer = verified.signer();
            println!(
                "verified: signed by {} ({}, serialNumber {}) as {}",
                signer.name,
                hex(&signer.certificate_sha256),
                signer.serial_number,
                signer.role
            );
            println!("{}", json::to_json(name, verified.document())?);
            Ok(true)
        }
        Err(refusal) => {
            println!("refused: {} ({})", refusal.reason, refusal.detail);
            if let Some(diagnostic) = &refusal.diagnostic {
                println!("path validation: {diagnostic}");
            }
            Ok(false)
        }
    }
}
