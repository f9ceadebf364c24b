//! The `[postgres]` section of the configuration and what it becomes: the connection settings
//! of tokio-postgres, the password read from a file or the environment (never from the URL, and
//! never shown), and TLS through rustls with ring, the server's certificate and host verified.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use serde::Deserialize;
use tokio_postgres::config::{Host, SslMode};

/// Where the database is and how to reach it safely. Only `url` is required; TLS needs `ca_file`
/// unless every host is a Unix socket.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq connection URL or key=value string: hosts (several, for failover, with
    /// `target_session_attrs=read-write`), port, database and user. A password in it is refused:
    /// it would be shown wherever the configuration is.
    pub url: String,
    /// A file holding the password (its first line), readable by the gateway's user only.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The environment variable holding the password (instead of `password_file`).
    #[serde(default)]
    pub password_env: Option<String>,
    /// The CA certificates (PEM) that issue the database server's certificate. Required for a
    /// host reached over TCP: the connection is always TLS, the server's certificate and its
    /// host name (or IP address) verified.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM, with its chain) and key, for certificate authentication.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Connections the gateway keeps open; transactions beyond them wait for one.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// The longest one statement may run (PostgreSQL's `statement_timeout`), in milliseconds.
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// The longest a connection attempt may take, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// Never a password: the URL (which `validate` refuses to hold one) and where the password is.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.url)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("ca_file", &self.ca_file)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// The longest a write waits for a row another transaction holds. Under SERIALIZABLE such a
/// wait ends in a serialization failure once the holder commits, so waiting gains nothing: the
/// run is failed at once and re-run (as a deadlock would be, which PostgreSQL finds only after
/// its `deadlock_timeout`, a second by default).
const LOCK_TIMEOUT_MS: u64 = 20;

/// The probes of an idle connection: the first after this long without traffic, then one a
/// [`KEEPALIVE_INTERVAL`], the connection given up after [`KEEPALIVE_RETRIES`] unanswered (8 s
/// in all). Linux counts no probes once `tcp_user_timeout` is set: it gives the connection up
/// at the first probe sent after that long without an answer (about 6 s with the default 5 s
/// `connect_timeout_ms`). A live server's kernel answers them even while a COMMIT waits long
/// for a synchronous standby, so they never cut a wait that is still going on.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;

fn default_pool_size() -> usize {
    16
}
fn default_statement_timeout_ms() -> u64 {
    5_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}

/// The role that applies the migrations (`rxgate store migrate`), when it is not the URL's
/// user: its name and where its password is (neither: the URL's user's password).
#[derive(Clone, Debug, Default)]
pub struct Migrator {
    pub user: String,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

/// What a connection needs, read and checked: the tokio-postgres settings (password included)
/// and the TLS configuration.
pub(super) struct Connection {
    pub(super) settings: tokio_postgres::Config,
    pub(super) tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl PostgresConfig {
    /// Checks what can be checked without reading files: ranges, one password source, no
    /// password in the URL, and TLS for every host reached over TCP.
    pub fn validate(&self) -> Result<(), String> {
        let settings = self.settings()?;
        if settings.get_password().is_some() {
            return Err(
                "[postgres] url: a password in the URL is refused; give it in \
                        password_file or password_env"
                    .into(),
            );
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err("[postgres]: give password_file or password_env, not both".into());
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("[postgres]: client_cert and client_key go together".into());
        }
        if !(1..=256).contains(&self.pool_size) {
            return Err("[postgres] pool_size must be between 1 and 256".into());
        }
        for (name, ms) in [
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if !(100..=600_000).contains(&ms) {
                return Err(format!("[postgres] {name} must be between 100 and 600000"));
            }
        }
        if settings.get_ssl_mode() == SslMode::Disable && over_tcp(&settings) {
            return Err(
                "[postgres] url: sslmode=disable is refused for a host reached over \
                        TCP; the connection must be TLS"
                    .into(),
            );
        }
        if over_tcp(&settings) && self.ca_file.is_none() {
            return Err(
                "[postgres]: ca_file is required to verify the database server's \
                        certificate"
                    .into(),
            );
        }
        Ok(())
    }

    /// Reads the files the section names (the password, the CA, a client certificate and key)
    /// as a connection would, and connects to nothing: what `rxgate config check` tries.
    pub fn read_files(&self) -> Result<(), String> {
        self.connection(None).map(drop)
    }

    /// Reads the password and the TLS files: the settings to connect with, as the URL's user
    /// or as `migrator`.
    pub(super) fn connection(&self, migrator: Option<&Migrator>) -> Result<Connection, String> {
        self.validate()?;
        let mut settings = self.settings()?;
        let mut secrets = self.clone();
        if let Some(migrator) = migrator {
            settings.user(&migrator.user);
            if migrator.password_file.is_some() || migrator.password_env.is_some() {
                secrets.password_file.clone_from(&migrator.password_file);
                secrets.password_env.clone_from(&migrator.password_env);
            }
        }
        if let Some(password) = secrets.password()? {
            settings.password(password);
        }
        // TLS over TCP always (`validate` refused `disable` there, and `prefer` would fall back
        // to plain text); none on Unix sockets, where a server never speaks it.
        let mode = if over_tcp(&settings) {
            SslMode::Require
        } else {
            SslMode::Disable
        };
        settings.ssl_mode(mode);
        // A server that vanishes without closing its connections (its machine lost, a network
        // cut) is given up by the kernel, not waited for: once what was sent to it stays
        // unacknowledged as long as a connection attempt may take, or an idle connection's
        // probes go unanswered. The pool then connects afresh, to whichever host takes writes.
        let silence = Duration::from_millis(self.connect_timeout_ms);
        settings
            .connect_timeout(silence)
            .tcp_user_timeout(silence)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES)
            .options(format!(
                "-c synchronous_commit=on -c statement_timeout={} \
                 -c idle_in_transaction_session_timeout={} -c lock_timeout={LOCK_TIMEOUT_MS}",
                self.statement_timeout_ms,
                self.statement_timeout_ms * 4,
            ));
        if settings.get_application_name().is_none() {
            settings.application_name("rxgate");
        }
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls()?);
        Ok(Connection { settings, tls })
    }

    fn settings(&self) -> Result<tokio_postgres::Config, String> {
        tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| format!("[postgres] url cannot be read: {e}"))
    }

    /// The password from its file or variable, if one is named.
    fn password(&self) -> Result<Option<String>, String> {
        let text = match (&self.password_file, &self.password_env) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| format!("[postgres] password_file {}: {e}", path.display()))?,
            (None, Some(name)) => std::env::var(name)
                .map_err(|_| format!("[postgres] password_env: the variable {name} is not set"))?,
            (None, None) => return Ok(None),
        };
        let password = text.lines().next().unwrap_or_default().to_owned();
        if password.is_empty() {
            return Err("[postgres]: the password is empty".into());
        }
        Ok(Some(password))
    }

    /// rustls with ring: the server verified against `ca_file`, a client certificate if given.
    fn tls(&self) -> Result<ClientConfig, String> {
        let mut roots = RootCertStore::empty();
        if let Some(path) = &self.ca_file {
            for cert in certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("[postgres] ca_file {}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("[postgres] TLS: {e}"))?
            .with_root_certificates(roots);
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("[postgres] client_key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(certificates(cert)?, key)
                    .map_err(|e| format!("[postgres] client_cert: {e}"))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

/// Whether any host is reached over TCP: one that is not a Unix socket, or any `hostaddr`
/// (tokio-postgres connects to a `hostaddr` over TCP whatever `host` names beside it).
fn over_tcp(settings: &tokio_postgres::Config) -> bool {
    !settings.get_hostaddrs().is_empty()
        || settings.get_hosts().is_empty()
        || settings
            .get_hosts()
            .iter()
            .any(|h| matches!(h, Host::Tcp(_)))
}

/// The certificates of a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("[postgres] {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "[postgres] {}: no certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over_tcp(url: &str) -> PostgresConfig {
        let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/tls/ca.cert.pem");
        toml::from_str(&format!(
            "url = {url:?}\nca_file = {ca:?}\nconnect_timeout_ms = 3000"
        ))
        .unwrap()
    }

    #[test]
    fn a_url_of_several_hosts_keeps_them_all_and_the_read_write_target() {
        let config = over_tcp(
            "postgresql://rxgate_app@10.0.0.1:5432,10.0.0.2:5433/rxgate\
             ?target_session_attrs=read-write",
        );
        let settings = config.connection(None).unwrap().settings;
        let hosts: Vec<_> = settings.get_hosts().iter().collect();
        assert_eq!(hosts.len(), 2, "{hosts:?}");
        assert_eq!(settings.get_ports(), [5432, 5433]);
        assert_eq!(
            settings.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert_eq!(settings.get_ssl_mode(), SslMode::Require);
    }

    #[test]
    fn a_server_that_goes_silent_is_given_up_by_the_kernel() {
        let settings = over_tcp("postgresql://rxgate_app@10.0.0.1/rxgate")
            .connection(None)
            .unwrap()
            .settings;
        let silence = Some(Duration::from_secs(3));
        assert_eq!(settings.get_tcp_user_timeout(), silence.as_ref());
        assert!(settings.get_keepalives());
        assert_eq!(
            (
                settings.get_keepalives_idle(),
                settings.get_keepalives_interval(),
                settings.get_keepalives_retries()
            ),
            (
                KEEPALIVE_IDLE,
                Some(KEEPALIVE_INTERVAL),
                Some(KEEPALIVE_RETRIES)
            )
        );
    }
}
