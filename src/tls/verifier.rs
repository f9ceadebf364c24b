//! The client-certificate policy, enforced in the handshake itself ([`InstitutionVerifier`]):
//! WebPKI's chain and CRL checks, then an extended key usage extension that names clientAuth, then
//! exactly one institution URI. A refused client gets a TLS alert. Knows rustls's verifier
//! traits; must not depend on the document-signature code, on the files it was configured from,
//! or on the accept loop.

use std::sync::Arc;

use der::Decode;
use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use x509_cert::Certificate;

use super::identity::institution_of;

/// Whether a certificate (DER) has an extended key usage extension that names clientAuth.
/// WebPKI accepts a certificate without the extension for any purpose; the gateway does not.
fn names_client_auth(cert_der: &[u8]) -> bool {
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    let Ok(cert) = Certificate::from_der(cert_der) else {
        return false;
    };
    match cert.tbs_certificate().get_extension::<ExtendedKeyUsage>() {
        Ok(Some((_critical, eku))) => eku.0.contains(&const_oid::db::rfc5280::ID_KP_CLIENT_AUTH),
        Ok(None) | Err(_) => false,
    }
}

/// The WebPKI client verifier (chain, EKU clientAuth when present, CRLs), then the gateway's
/// own rules: an EKU extension naming clientAuth, and one institution URI.
#[derive(Debug)]
pub(super) struct InstitutionVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for InstitutionVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !names_client_auth(end_entity) {
            tracing::debug!("client certificate refused: no extended key usage clientAuth");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ));
        }
        match institution_of(end_entity) {
            Ok(_) => Ok(verified),
            Err(e) => {
                tracing::debug!(error = %e, "client certificate refused");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
