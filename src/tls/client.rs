//! The client side, for tests, demos, load tests and the relay: [`ClientFiles`] (the CA that
//! issued the server certificate, the client's own certificate and key) and [`connect`], a tonic
//! channel with mutual TLS. Reads files; must not depend on the server side of `tls` or on the
//! document-signature code.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::error::{TlsError, read};

/// The host name the development server certificate names (besides 127.0.0.1 and ::1), for
/// clients that connect by address but check another name. [`connect`] checks the host of the
/// address it connects to.
pub const SERVER_NAME: &str = "localhost";

/// How long a client of [`connect`] waits for its connection and handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's TLS files: the CA that issued the server certificate, and the client's own
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientFiles {
    /// The tonic client TLS configuration: trust `ca`, present `cert`/`key`, expect the server
    /// certificate to name the host of the address connected to.
    pub fn client_tls_config(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        use tonic::transport::{Certificate as CaCertificate, ClientTlsConfig, Identity};
        Ok(ClientTlsConfig::new()
            .ca_certificate(CaCertificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?)))
    }

    /// Connects to `addr` (e.g. `https://127.0.0.1:50051`).
    pub async fn connect(&self, addr: &str) -> Result<tonic::transport::Channel, TlsError> {
        let endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tls_config(self.client_tls_config()?)?;
        Ok(endpoint.connect().await?)
    }
}

/// Connects to `addr` (e.g. `https://127.0.0.1:50051`) with mutual TLS. With TLS 1.3 a client
/// learns that the server refused its certificate only when it reads, so a refusal may surface
/// at the first call rather than here.
pub async fn connect(
    addr: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<tonic::transport::Channel, TlsError> {
    ClientFiles {
        ca: ca.to_owned(),
        cert: cert.to_owned(),
        key: key.to_owned(),
    }
    .connect(addr)
    .await
}
