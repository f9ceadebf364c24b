//! The peer identity of a connection: the one institution its client certificate names
//! ([`institution_of`], refused as [`IdentityError`] otherwise), the certificate's SHA-256
//! ([`PeerIdentity`]), and how a handler reads it ([`peer_identity`]). Parses certificates; must
//! not depend on the document-signature code (`domain::signature`, `pki::trust`), on rustls, or
//! on the accept loop; of the domain, only `ids` and `hash`.

use std::net::SocketAddr;

use der::Decode;
use x509_cert::{
    Certificate,
    ext::pkix::{SubjectAltName, name::GeneralName},
};

use super::connection::ConnectionInfo;
use crate::domain::ids::{INSTITUTION_URI_PREFIX, IdError, Institution};

/// Why a (chain-valid) client certificate names no institution. Never carries certificate
/// contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("client certificate does not parse")]
    Malformed,
    #[error("client certificate has no institution URI SAN")]
    NoInstitutionUri,
    #[error("client certificate has several institution URI SANs (compared ignoring case)")]
    SeveralInstitutionUris,
    #[error("client certificate institution URI: {0}")]
    InvalidInstitutionUri(IdError),
}

/// The institution a client certificate (DER) names: its one URI SAN starting
/// `urn:rxgate:institution:`. Other SANs are ignored. The prefix is compared ignoring case (a
/// URN's scheme and namespace are case-insensitive), so that a second institution URI in other
/// case is refused as a second institution rather than ignored; one in other than lower case
/// is refused as invalid.
pub fn institution_of(cert_der: &[u8]) -> Result<Institution, IdentityError> {
    let cert = Certificate::from_der(cert_der).map_err(|_| IdentityError::Malformed)?;
    let san = match cert.tbs_certificate().get_extension::<SubjectAltName>() {
        Ok(Some((_critical, san))) => san,
        Ok(None) => return Err(IdentityError::NoInstitutionUri),
        Err(_) => return Err(IdentityError::Malformed),
    };
    let mut institution_uris = san
        .0
        .iter()
        .filter_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.as_str()),
            _ => None,
        })
        .filter(|uri| {
            uri.get(..INSTITUTION_URI_PREFIX.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(INSTITUTION_URI_PREFIX))
        });
    match (institution_uris.next(), institution_uris.next()) {
        (None, _) => Err(IdentityError::NoInstitutionUri),
        (Some(_), Some(_)) => Err(IdentityError::SeveralInstitutionUris),
        (Some(uri), None) => {
            Institution::from_uri(uri).map_err(IdentityError::InvalidInstitutionUri)
        }
    }
}

/// The authenticated peer of a connection: the tonic `ConnectInfo` of a
/// [`TlsConnection`](super::TlsConnection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub institution: Institution,
    /// SHA-256 of the client (end-entity) certificate's DER.
    pub certificate_sha256: [u8; 32],
    pub remote_addr: Option<SocketAddr>,
}

impl PeerIdentity {
    pub(super) fn of(
        cert_der: &[u8],
        remote_addr: Option<SocketAddr>,
    ) -> Result<Self, IdentityError> {
        let institution = institution_of(cert_der)?;
        let certificate_sha256 = crate::domain::hash::sha256(cert_der);
        Ok(PeerIdentity {
            institution,
            certificate_sha256,
            remote_addr,
        })
    }
}

/// The authenticated peer of the connection a request came on. `None` only for a request that
/// did not come through [`incoming`](super::incoming) (e.g. a unit test calling a handler
/// directly).
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<&PeerIdentity> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|info| &info.peer)
}
