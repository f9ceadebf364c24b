//! Why TLS material could not be loaded or a client could not connect ([`TlsError`]), and the
//! reading of one file into that error. Must not depend on the document-signature code, nor on
//! the rest of `tls`: the other files use this one.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

/// Why TLS material could not be loaded, or a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("connecting: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub(super) fn file_error(path: &Path, detail: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

pub(super) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}
