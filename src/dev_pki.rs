//! The development PKI (the repository's `certs/`: `tls/`, `hpki/`, `gateway/`, `audit/`), found
//! at run time and never compiled in: its private keys are public, so a binary must not carry
//! them, and a binary copied elsewhere must not look for them where it was built. Found in the
//! folder `--dev-certs` names, else the one `RXGATE_DEV_CERTS` names, else `certs` in the working
//! directory (the repository root, where `cargo run` and `cargo test` run). Everything that
//! knows the layout of that folder is here. Used by `--dev` and the development clients only;
//! the server proper never depends on it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{
    pki::{
        identity::IdentityFiles,
        signer::SigningKey,
        trust::{CrlFile, TrustFiles},
    },
    tls::{ClientFiles, TlsFiles},
};

/// The environment variable that names the development PKI's folder.
pub const ENV: &str = "RXGATE_DEV_CERTS";

/// Files the folder must hold to be taken for the development PKI: one of each hierarchy.
const MARKERS: [&str; 2] = ["tls/ca.cert.pem", "hpki/root.cert.pem"];

/// `--dev-certs DIR`: the option of every command that can use the development PKI.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DevCertsArg {
    /// The development PKI's folder, laid out as the repository's certs/ (default:
    /// $RXGATE_DEV_CERTS, else ./certs). Development only.
    #[arg(long, value_name = "DIR")]
    pub dev_certs: Option<PathBuf>,
}

impl DevCertsArg {
    /// The development PKI this option, the environment or the working directory names.
    pub fn locate(&self) -> Result<DevPki, NotFound> {
        DevPki::locate(self.dev_certs.as_deref())
    }
}

/// The development PKI was not where it was looked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "no development PKI in {looked} ({named_by}; it must hold {markers}): run from the \
     repository root, or name the folder with --dev-certs DIR or {ENV}",
    looked = .looked.display(),
    markers = MARKERS.join(" and ")
)]
pub struct NotFound {
    /// The folder looked in, absolute.
    pub looked: PathBuf,
    /// What named it.
    pub named_by: &'static str,
}

/// A folder laid out as the repository's `certs/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    dir: PathBuf,
}

impl DevPki {
    /// The development PKI in `named`, else in `$RXGATE_DEV_CERTS`, else in `./certs`; refused
    /// unless the folder holds the [`MARKERS`].
    pub fn locate(named: Option<&Path>) -> Result<DevPki, NotFound> {
        let (dir, named_by) = match (named, std::env::var_os(ENV)) {
            (Some(dir), _) => (dir.to_owned(), "named by --dev-certs"),
            (None, Some(dir)) => (PathBuf::from(dir), "named by RXGATE_DEV_CERTS"),
            (None, None) => (PathBuf::from("certs"), "certs/ of the working directory"),
        };
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        if MARKERS.iter().all(|marker| dir.join(marker).is_file()) {
            Ok(DevPki { dir })
        } else {
            Err(NotFound {
                looked: dir,
                named_by,
            })
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's TLS files (`tls/`): its certificate and key, the institutions' CA and CRL.
    pub fn tls(&self) -> TlsFiles {
        let dir = self.dir.join("tls");
        TlsFiles {
            server_cert: dir.join("server.cert.pem"),
            server_key: dir.join("server.key.pem"),
            client_ca: vec![dir.join("ca.cert.pem")],
            client_crls: vec![dir.join("ca.crl.pem")],
        }
    }

    /// The institution client `name`: `client("clinic")` is `tls/clinic.cert.pem` and
    /// `clinic.key.pem`, trusting `tls/ca.cert.pem` for the server.
    pub fn client(&self, name: &str) -> ClientFiles {
        let dir = self.dir.join("tls");
        ClientFiles {
            ca: dir.join("ca.cert.pem"),
            cert: dir.join(format!("{name}.cert.pem")),
            key: dir.join(format!("{name}.key.pem")),
        }
    }

    /// The document-signing trust (`hpki/`): the root as anchor, the signing CA, both CRLs.
    pub fn signing(&self) -> TrustFiles {
        let dir = self.dir.join("hpki");
        let crl = |ca: &str, crl: &str| CrlFile {
            ca: dir.join(ca),
            crl: dir.join(crl),
        };
        TrustFiles {
            anchors: vec![dir.join("root.cert.pem")],
            intermediates: vec![dir.join("sign-ca.cert.pem")],
            crls: vec![
                crl("root.cert.pem", "root.crl.pem"),
                crl("sign-ca.cert.pem", "sign-ca.crl.pem"),
            ],
        }
    }

    /// The document signer `name` (`hpki/{name}.cert.pem` and its key), embedding the signing CA.
    pub fn signer(&self, name: &str) -> anyhow::Result<SigningKey> {
        let dir = self.dir.join("hpki");
        let read = |file: String| {
            let path = dir.join(file);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(SigningKey::new(
            &read(format!("{name}.cert.pem"))?,
            &read("sign-ca.cert.pem".into())?,
            &read(format!("{name}.key.pem"))?,
        )?)
    }

    /// The gateway's own signing identity (`gateway/`).
    pub fn gateway(&self) -> IdentityFiles {
        let dir = self.dir.join("gateway");
        IdentityFiles {
            key: dir.join("gateway.key.pem"),
            cert: dir.join("gateway.cert.pem"),
        }
    }

    /// The key of the audit log's patient pseudonyms (`audit/`).
    pub fn audit_pseudonym_key(&self) -> PathBuf {
        self.dir.join("audit/pseudonym-dev.key")
    }

    /// The repository's own `certs/`, for the unit tests.
    #[cfg(test)]
    pub(crate) fn repository() -> DevPki {
        DevPki {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("certs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_folder_without_the_pki_is_refused_with_where_it_looked() {
        let empty = tempfile::tempdir().unwrap();
        let err = DevPki::locate(Some(empty.path())).unwrap_err();
        assert_eq!(err.looked, empty.path());
        let message = err.to_string();
        for part in [
            "named by --dev-certs",
            "tls/ca.cert.pem",
            "RXGATE_DEV_CERTS",
        ] {
            assert!(message.contains(part), "{part} not in: {message}");
        }
    }

    #[test]
    fn a_named_folder_with_the_pki_is_taken() {
        let repository = DevPki::repository();
        let found = DevPki::locate(Some(repository.dir())).unwrap();
        assert_eq!(found, repository);
        assert!(found.signer("doctor").is_ok());
    }
}
