//! The server's configuration: one serde struct, read from a TOML file or made for `--dev`,
//! validated at start-up. Trust has no built-in default: a production configuration must name
//! the trust anchors, CRLs, signature policies and role table, or the server refuses to start.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use const_oid::ObjectIdentifier;
use serde::Deserialize;

use crate::{
    dev_pki::DevPki,
    domain::{
        checks::CheckOptions,
        signature::{
            DEV_SIGNATURE_POLICY, HPKI_SIGNATURE_POLICY, Role, RoleEntry, RoleTable, VerifierConfig,
        },
    },
    lifecycle::Drain,
    limits::Limits,
    network::NetworkConfig,
    pki::identity::{GatewayIdentity, IdentityFiles, TrustedSenders},
    pki::trust::TrustFiles,
    relay::RelayConfig,
    service::{self, CheckPolicy, GatewayConfig, LockoutPolicy, MissLimit, OnCritical, Pseudonyms},
    store::{self, EngineKind, PostgresConfig},
    tls::{ClientFiles, TlsFiles},
};

/// The engines a store can be kept in, as the configuration and the command line name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    /// fjall (the default of new embedded stores): takes online backups.
    Fjall,
    /// sled 0.34, the embedded engine of older stores.
    Sled,
    /// PostgreSQL: the store of several gateways, outliving one machine (docs/POSTGRES.md).
    Postgres,
}

impl StoreEngine {
    /// The embedded engine this is, if it is one.
    pub fn embedded(self) -> Option<EngineKind> {
        match self {
            StoreEngine::Fjall => Some(EngineKind::Fjall),
            StoreEngine::Sled => Some(EngineKind::Sled),
            StoreEngine::Postgres => None,
        }
    }
}

/// Everything `rxgate serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen for gRPC over mutual TLS.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The folder of the embedded store (created if missing).
    pub data_dir: PathBuf,
    /// The store's cache, in MiB: a part of the gateway's memory (BENCHMARKS.md).
    #[serde(default = "default_store_cache_mib")]
    pub store_cache_mib: u64,
    /// The store's engine: `"fjall"` or `"sled"` (embedded, in `data_dir`), or `"postgres"`
    /// (the database `[postgres]` names). Unset: the engine whose files the data folder holds,
    /// fjall for a new one. Set to an embedded engine, it must match an existing store's files.
    #[serde(default)]
    pub store_engine: Option<StoreEngine>,
    /// The database of `store_engine = "postgres"` (docs/POSTGRES.md).
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// The free-space low-water mark of the data folder's file system is the larger of this
    /// many MiB and `store_low_water_percent` of its size: below it, calls that write new data
    /// are refused (RESOURCE_EXHAUSTED) and health says NOT_SERVING while reads go on; below
    /// half of it every call is refused. Both 0: no mark (docs/OPERATIONS.md, Capacity).
    #[serde(default = "default_low_water_mib")]
    pub store_low_water_mib: u64,
    #[serde(default = "default_low_water_percent")]
    pub store_low_water_percent: u64,
    /// Start even if the store is behind what it acknowledged (its files lost or damaged),
    /// moving its counters past the mark and auditing it. Set by `serve --accept-data-loss`
    /// for one start, never by the file, so that it cannot stay on by mistake.
    #[serde(skip)]
    pub accept_data_loss: bool,
    /// Trust for document signatures (HPKI): anchors, intermediates, one CRL per issuing CA.
    pub signing: TrustFiles,
    /// CertificatePolicies OIDs a signer certificate must carry.
    pub signature_policies: Vec<String>,
    /// HCActor role OID → role (doctor, dentist, pharmacist) and the English name it must carry.
    pub roles: Vec<RoleConfig>,
    /// Institution mutual TLS: server certificate and key, client CAs and their CRLs.
    pub tls: TlsFiles,
    /// Seconds a signing-time may lie before receipt.
    #[serde(default = "default_signing_window")]
    pub signing_time_window_secs: u64,
    /// Seconds a signing-time may lie after receipt (clock skew).
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Accept CRLs past their nextUpdate (otherwise REVOCATION_UNKNOWN).
    #[serde(default)]
    pub allow_stale_crls: bool,
    /// Validated signer chains kept in memory.
    #[serde(default = "default_chain_cache")]
    pub chain_cache_capacity: usize,
    /// The latest usable-until date a prescription may carry, in days after issue.
    #[serde(default = "default_max_usable_days")]
    pub max_usable_days: u32,
    /// Wrong exchange numbers (lookups and receipts answered NOT_FOUND) a pharmacy may send
    /// within `lookup_miss_window_secs`: the one that reaches this count locks the pharmacy out
    /// for `lookup_lockout_secs`.
    #[serde(default = "default_max_misses")]
    pub lookup_max_misses: u32,
    #[serde(default = "default_miss_window")]
    pub lookup_miss_window_secs: u64,
    #[serde(default = "default_lockout")]
    pub lookup_lockout_secs: u64,
    /// Wrong exchange numbers naming one patient, from any pharmacies, within
    /// `lookup_patient_miss_window_secs`: the one that reaches this count locks the patient for
    /// `lookup_patient_lockout_secs`, to the pharmacies that missed on them only.
    #[serde(default = "default_patient_max_misses")]
    pub lookup_patient_max_misses: u32,
    #[serde(default = "default_patient_window")]
    pub lookup_patient_miss_window_secs: u64,
    #[serde(default = "default_patient_lockout")]
    pub lookup_patient_lockout_secs: u64,
    /// How often CRL files (signing and TLS) are checked for changes.
    #[serde(default = "default_crl_refresh")]
    pub crl_refresh_secs: u64,
    /// How often the expiry sweep writes EXPIRED on prescriptions past their last usable day.
    #[serde(default = "default_sweep")]
    pub expiry_sweep_secs: u64,
    /// Seconds the wall clock may step forward, against the steady clock, between two expiry
    /// sweeps: beyond it the sweep writes nothing (an ERROR line, `rxgate_expiry_sweep_held`)
    /// until the clock comes back or an operator confirms it (`rxgate admin confirm-clock`).
    #[serde(default = "default_clock_step_tolerance")]
    pub clock_step_tolerance_secs: u64,
    /// The clinical checks.
    #[serde(default)]
    pub checks: ChecksConfig,
    /// The bounds on requests and histories (docs/LIMITS.md).
    #[serde(default)]
    pub limits: Limits,
    /// A file holding the secret (64 hex digits: 32 random bytes) under which audit records
    /// name a checked patient by pseudonym (HMAC-SHA-256), and the store's keys every patient.
    /// Keep it secret and keep it: the store records its fingerprint and refuses another key.
    pub audit_pseudonym_key: PathBuf,
    /// Seconds an ACCEPTED prescription may go without a dispensing record before it is stuck.
    #[serde(default = "default_stuck_after")]
    pub stuck_after_secs: u64,
    /// How often, when the audit chain has moved, the gateway writes a signed checkpoint of
    /// every chain head (also at shutdown; docs/SECURITY.md, Audit trail).
    #[serde(default = "default_audit_checkpoint")]
    pub audit_checkpoint_secs: u64,
    /// Days the event log keeps events (never those the relay has not yet delivered).
    #[serde(default = "default_event_retention")]
    pub event_retention_days: u32,
    /// The upstream management service to relay dispensing records to (none: no relay).
    #[serde(default)]
    pub relay: Option<RelayFiles>,
    /// Where to serve the Prometheus text (`GET /metrics`, plain HTTP: keep it on a local
    /// address).
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Seconds to go on accepting connections after a stop signal while health already says
    /// NOT_SERVING: the time load balancers need to hear of it and send elsewhere (0: none).
    #[serde(default)]
    pub drain_delay_secs: u64,
    /// Seconds the calls in flight have to finish once the drain closes the connections;
    /// whatever is still running then is cut (the store is closed all the same). Longer than the
    /// default unary deadline (10 s), so that a call started before the drain can finish.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Connection, HTTP/2, event-feed and per-institution fairness limits (docs/LIMITS.md).
    #[serde(default)]
    pub network: NetworkConfig,
    /// The gateway's own signing identity (ECDSA P-256 key and certificate): it attests the
    /// metadata of the records it relays.
    pub gateway: IdentityFiles,
    /// What the intake (ManagementIntake) believes.
    #[serde(default)]
    pub intake: IntakeConfig,
}

/// The intake of relayed dispensing records.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// The `[gateway]` certificates of the gateways whose attested receipt times are believed
    /// (pinned: PEM or DER files). A record from any other sender is judged as of its arrival.
    #[serde(default)]
    pub trusted_senders: Vec<PathBuf>,
}

/// The relay to an upstream management service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFiles {
    /// The upstream's address, e.g. `https://management.example:50051`.
    pub upstream: String,
    /// This gateway's client certificate (an institution of kind management) and key, and the
    /// CA of the upstream's server certificate (PEM).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub upstream_ca: PathBuf,
    /// The longest wait between retries.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: u64,
    /// The term of the relay's lease: of several gateways over one database, the one holding it
    /// relays, renewing it every third of this; if it dies, another takes over once this has
    /// run out.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
}

fn default_max_backoff() -> u64 {
    30
}

fn default_lease() -> u64 {
    10
}

impl RelayFiles {
    /// Relaying to `upstream` as the development management institution. Development only.
    pub fn dev(upstream: String, pki: &DevPki) -> Self {
        let client = pki.client("management");
        RelayFiles {
            upstream,
            client_cert: client.cert,
            client_key: client.key,
            upstream_ca: client.ca,
            max_backoff_secs: default_max_backoff(),
            lease_secs: default_lease(),
        }
    }

    /// A lease shorter than two seconds would be renewed more often than the store can be
    /// asked; one longer than five minutes would leave a fleet without a relay that long.
    fn validate(&self) -> Result<(), Error> {
        if (2..=300).contains(&self.lease_secs) {
            Ok(())
        } else {
            Err(Error::Invalid(
                "relay.lease_secs must lie between 2 and 300".into(),
            ))
        }
    }

    pub fn relay_config(&self, identity: Arc<GatewayIdentity>) -> RelayConfig {
        RelayConfig {
            identity,
            upstream: self.upstream.clone(),
            client: ClientFiles {
                ca: self.upstream_ca.clone(),
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
            },
            max_backoff: Duration::from_secs(self.max_backoff_secs.max(1)),
            lease: Duration::from_secs(self.lease_secs),
        }
    }
}

/// The clinical checks: their data, policy and defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChecksConfig {
    /// The drug masters folder (laid out as `data/masters`); default: the shipped one.
    pub masters_dir: Option<PathBuf>,
    /// The contraindication table; default: the shipped `data/clinical/contraindications_structured.csv`.
    pub contraindications: Option<PathBuf>,
    /// What a registration with a critical finding does.
    pub on_critical: OnCriticalConfig,
    /// Defaults of the per-request switches (the national rules: all off).
    pub include_same_institution: bool,
    pub caution: bool,
    pub same_class: bool,
    pub within_prescription: bool,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        let policy = CheckPolicy::default();
        ChecksConfig {
            masters_dir: None,
            contraindications: None,
            on_critical: OnCriticalConfig::RequireOverride,
            include_same_institution: policy.defaults.include_same_institution,
            caution: policy.defaults.caution,
            same_class: policy.defaults.same_class,
            within_prescription: policy.defaults.within_prescription,
        }
    }
}

/// `on_critical` in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnCriticalConfig {
    /// Refuse a registration with a critical finding unless each is acknowledged (default).
    RequireOverride,
    /// Register and return the findings, as the national service does.
    Warn,
}

impl ChecksConfig {
    pub fn policy(&self) -> CheckPolicy {
        CheckPolicy {
            on_critical: match self.on_critical {
                OnCriticalConfig::RequireOverride => OnCritical::RequireOverride,
                OnCriticalConfig::Warn => OnCritical::Warn,
            },
            defaults: CheckOptions {
                include_same_institution: self.include_same_institution,
                caution: self.caution,
                same_class: self.same_class,
                within_prescription: self.within_prescription,
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub oid: String,
    pub role: Role,
    pub name: String,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:50051".parse().expect("a valid address")
}
fn default_signing_window() -> u64 {
    VerifierConfig::default().signing_time_window.as_secs()
}
fn default_skew() -> u64 {
    VerifierConfig::default().clock_skew.as_secs()
}
fn default_store_cache_mib() -> u64 {
    store::DEFAULT_CACHE_MIB
}
fn default_low_water_mib() -> u64 {
    256
}
fn default_low_water_percent() -> u64 {
    5
}
fn default_chain_cache() -> usize {
    VerifierConfig::default().chain_cache_capacity
}
fn default_max_usable_days() -> u32 {
    service::MAX_USABLE_DAYS
}
fn default_max_misses() -> u32 {
    LockoutPolicy::default().pharmacy.max_misses
}
fn default_miss_window() -> u64 {
    LockoutPolicy::default().pharmacy.window.as_secs()
}
fn default_lockout() -> u64 {
    LockoutPolicy::default().pharmacy.lockout.as_secs()
}
fn default_patient_max_misses() -> u32 {
    LockoutPolicy::default().patient.max_misses
}
fn default_patient_window() -> u64 {
    LockoutPolicy::default().patient.window.as_secs()
}
fn default_patient_lockout() -> u64 {
    LockoutPolicy::default().patient.lockout.as_secs()
}
fn default_crl_refresh() -> u64 {
    30
}
fn default_sweep() -> u64 {
    60
}
fn default_clock_step_tolerance() -> u64 {
    service::CLOCK_STEP_TOLERANCE.as_secs()
}
fn default_stuck_after() -> u64 {
    service::STUCK_AFTER.as_secs()
}
fn default_audit_checkpoint() -> u64 {
    60
}
fn default_event_retention() -> u32 {
    90
}
fn default_shutdown_grace() -> u64 {
    15
}
fn default_metrics_listen() -> SocketAddr {
    "127.0.0.1:9464".parse().expect("a valid address")
}

/// Why a configuration was refused. A variant with a source names it as its `source()`, not in
/// its message: a report of the chain (anyhow's `{:#}`) would otherwise say the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The development configuration: the development PKI in `pki`, loopback only, a local
    /// store. Development only.
    pub fn dev(data_dir: PathBuf, pki: &DevPki) -> Self {
        Config {
            listen: default_listen(),
            data_dir,
            store_cache_mib: default_store_cache_mib(),
            store_engine: None,
            postgres: None,
            store_low_water_mib: default_low_water_mib(),
            store_low_water_percent: default_low_water_percent(),
            accept_data_loss: false,
            signing: pki.signing(),
            signature_policies: vec![
                HPKI_SIGNATURE_POLICY.to_string(),
                DEV_SIGNATURE_POLICY.to_string(),
            ],
            roles: RoleTable::default()
                .0
                .into_iter()
                .map(|e| RoleConfig {
                    oid: e.oid.to_string(),
                    role: e.role,
                    name: e.name,
                })
                .collect(),
            tls: pki.tls(),
            signing_time_window_secs: default_signing_window(),
            clock_skew_secs: default_skew(),
            allow_stale_crls: false,
            chain_cache_capacity: default_chain_cache(),
            max_usable_days: default_max_usable_days(),
            lookup_max_misses: default_max_misses(),
            lookup_miss_window_secs: default_miss_window(),
            lookup_lockout_secs: default_lockout(),
            lookup_patient_max_misses: default_patient_max_misses(),
            lookup_patient_miss_window_secs: default_patient_window(),
            lookup_patient_lockout_secs: default_patient_lockout(),
            crl_refresh_secs: default_crl_refresh(),
            expiry_sweep_secs: default_sweep(),
            clock_step_tolerance_secs: default_clock_step_tolerance(),
            checks: ChecksConfig::default(),
            limits: Limits::default(),
            audit_pseudonym_key: pki.audit_pseudonym_key(),
            stuck_after_secs: default_stuck_after(),
            audit_checkpoint_secs: default_audit_checkpoint(),
            event_retention_days: default_event_retention(),
            relay: None,
            metrics_listen: default_metrics_listen(),
            drain_delay_secs: 0,
            shutdown_grace_secs: default_shutdown_grace(),
            network: NetworkConfig::default(),
            gateway: pki.gateway(),
            intake: IntakeConfig {
                trusted_senders: vec![pki.gateway().cert],
            },
        }
    }

    /// Checks what serde cannot, then loads the key and certificate files named.
    pub fn validate(&self) -> Result<(), Error> {
        self.validate_settings()?;
        self.pseudonyms()?;
        self.gateway_identity()?;
        self.trusted_senders().map(|_| ())
    }

    /// Checks what serde cannot among the settings themselves, reading no file (the fuzzed part
    /// of [`Self::validate`]).
    pub fn validate_settings(&self) -> Result<(), Error> {
        let invalid = |s: &str| Err(Error::Invalid(s.to_owned()));
        if self.signing.anchors.is_empty() {
            return invalid("signing.anchors must name at least one trust anchor");
        }
        if self.store_cache_mib < 16 {
            return invalid("store_cache_mib must be at least 16");
        }
        match (self.store_engine, &self.postgres) {
            (Some(StoreEngine::Postgres), None) => {
                return invalid("store_engine = \"postgres\" needs a [postgres] section");
            }
            (Some(StoreEngine::Postgres), Some(postgres)) => {
                postgres.validate().map_err(Error::Invalid)?;
            }
            (_, Some(_)) => {
                return invalid(
                    "a [postgres] section is read only with store_engine = \"postgres\"",
                );
            }
            (_, None) => {}
        }
        if self.signature_policies.is_empty() {
            return invalid("signature_policies must name at least one policy OID");
        }
        if self.roles.is_empty() {
            return invalid("roles must map at least one role OID");
        }
        if self.tls.client_ca.is_empty() {
            return invalid("tls.client_ca must name at least one institution CA");
        }
        if self.tls.client_crls.is_empty() {
            return invalid("tls.client_crls must name the CRL of every institution CA");
        }
        self.limits.validate().map_err(Error::Invalid)?;
        self.network.validate().map_err(Error::Invalid)?;
        if let Some(relay) = &self.relay {
            relay.validate()?;
        }
        self.validate_durations()?;
        self.verifier_config().map(|_| ())
    }

    /// Every duration and count of the top level within a range that its arithmetic can hold
    /// and that makes sense (a stuck threshold of 2^63 s would wrap into the past).
    fn validate_durations(&self) -> Result<(), Error> {
        const DAY: u64 = 86_400;
        let ranges: [(&str, u64, u64, u64); 20] = [
            // Up to 1 TiB; up to half the disk, so that a mark left on cannot refuse all writes
            // of a disk that is mostly free.
            ("store_low_water_mib", self.store_low_water_mib, 0, 1 << 20),
            (
                "store_low_water_percent",
                self.store_low_water_percent,
                0,
                50,
            ),
            (
                "chain_cache_capacity",
                self.chain_cache_capacity as u64,
                1,
                1_000_000,
            ),
            (
                "signing_time_window_secs",
                self.signing_time_window_secs,
                0,
                30 * DAY,
            ),
            ("clock_skew_secs", self.clock_skew_secs, 0, DAY),
            ("max_usable_days", self.max_usable_days.into(), 3, 366),
            (
                "lookup_max_misses",
                self.lookup_max_misses.into(),
                1,
                10_000,
            ),
            (
                "lookup_patient_max_misses",
                self.lookup_patient_max_misses.into(),
                1,
                10_000,
            ),
            (
                "lookup_patient_miss_window_secs",
                self.lookup_patient_miss_window_secs,
                1,
                30 * DAY,
            ),
            (
                "lookup_patient_lockout_secs",
                self.lookup_patient_lockout_secs,
                1,
                30 * DAY,
            ),
            (
                "lookup_miss_window_secs",
                self.lookup_miss_window_secs,
                1,
                30 * DAY,
            ),
            ("lookup_lockout_secs", self.lookup_lockout_secs, 1, 30 * DAY),
            ("crl_refresh_secs", self.crl_refresh_secs, 1, DAY),
            ("expiry_sweep_secs", self.expiry_sweep_secs, 1, DAY),
            // Above NTP's slewing over a day (at most 43 s), and below a day: a tolerated step
            // of a day would expire prescriptions a day early.
            (
                "clock_step_tolerance_secs",
                self.clock_step_tolerance_secs,
                60,
                DAY,
            ),
            ("stuck_after_secs", self.stuck_after_secs, 60, 366 * DAY),
            ("audit_checkpoint_secs", self.audit_checkpoint_secs, 1, DAY),
            // A stop must end within minutes: a supervisor kills what outlasts its timeout.
            ("drain_delay_secs", self.drain_delay_secs, 0, 300),
            ("shutdown_grace_secs", self.shutdown_grace_secs, 1, 600),
            (
                "event_retention_days",
                self.event_retention_days.into(),
                1,
                3_660,
            ),
        ];
        for (name, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(Error::Invalid(format!(
                    "{name} must lie between {min} and {max}"
                )));
            }
        }
        Ok(())
    }

    /// The free-space low-water mark.
    pub fn low_water(&self) -> service::LowWater {
        service::LowWater {
            mib: self.store_low_water_mib,
            percent: self.store_low_water_percent,
        }
    }

    /// The drain's timings.
    pub fn drain(&self) -> Drain {
        Drain {
            delay: Duration::from_secs(self.drain_delay_secs),
            grace: Duration::from_secs(self.shutdown_grace_secs),
        }
    }

    pub fn verifier_config(&self) -> Result<VerifierConfig, Error> {
        let oid = |s: &str| {
            ObjectIdentifier::new(s).map_err(|e| Error::Invalid(format!("OID {s:?}: {e}")))
        };
        Ok(VerifierConfig {
            signature_policies: self
                .signature_policies
                .iter()
                .map(|s| oid(s))
                .collect::<Result<_, _>>()?,
            roles: RoleTable(
                self.roles
                    .iter()
                    .map(|r| {
                        Ok(RoleEntry {
                            oid: oid(&r.oid)?,
                            role: r.role,
                            name: r.name.clone(),
                        })
                    })
                    .collect::<Result<_, Error>>()?,
            ),
            signing_time_window: Duration::from_secs(self.signing_time_window_secs),
            clock_skew: Duration::from_secs(self.clock_skew_secs),
            allow_stale_crls: self.allow_stale_crls,
            chain_cache_capacity: self.chain_cache_capacity,
        })
    }

    /// The pseudonym key the configuration names.
    pub fn pseudonyms(&self) -> Result<Pseudonyms, Error> {
        Pseudonyms::from_file(&self.audit_pseudonym_key).map_err(Error::Invalid)
    }

    /// The `[gateway]` signing identity, loaded.
    pub fn gateway_identity(&self) -> Result<GatewayIdentity, Error> {
        GatewayIdentity::from_files(&self.gateway)
            .map_err(|e| Error::Invalid(format!("[gateway]: {e}")))
    }

    fn trusted_senders(&self) -> Result<TrustedSenders, Error> {
        TrustedSenders::from_files(&self.intake.trusted_senders)
            .map_err(|e| Error::Invalid(format!("intake.trusted_senders: {e}")))
    }

    pub fn gateway_config(&self) -> Result<GatewayConfig, Error> {
        Ok(GatewayConfig {
            max_usable_days: self.max_usable_days,
            lockout: LockoutPolicy {
                pharmacy: MissLimit {
                    max_misses: self.lookup_max_misses,
                    window: Duration::from_secs(self.lookup_miss_window_secs),
                    lockout: Duration::from_secs(self.lookup_lockout_secs),
                },
                patient: MissLimit {
                    max_misses: self.lookup_patient_max_misses,
                    window: Duration::from_secs(self.lookup_patient_miss_window_secs),
                    lockout: Duration::from_secs(self.lookup_patient_lockout_secs),
                },
            },
            checks: self.checks.policy(),
            limits: self.limits.clone(),
            pseudonyms: self.pseudonyms()?,
            stuck_after: Duration::from_secs(self.stuck_after_secs),
            clock_step_tolerance: Duration::from_secs(self.clock_step_tolerance_secs),
            trusted_senders: self.trusted_senders()?,
            audit_writer: self.gateway_identity()?.fingerprint(),
            ..GatewayConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rxgate.toml"))
            .unwrap()
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let config: Config = toml::from_str(&example()).unwrap();
        config.validate().unwrap();
        assert_eq!(config.roles.len(), 3);
        assert_eq!(
            config.verifier_config().unwrap().signing_time_window,
            Duration::from_secs(86_400)
        );
    }

    /// Every commented setting of the example, uncommented where it stands, still parses: each
    /// sits in the section it belongs to, with a value of the right type and range.
    #[test]
    fn the_example_with_every_optional_setting_uncommented_is_valid() {
        fn setting(line: &str) -> Option<&str> {
            let text = line.strip_prefix("# ")?;
            let key = text.split([' ', '=']).next()?;
            let is_key = !key.is_empty()
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && text[key.len()..].trim_start().starts_with('=');
            (is_key || text.starts_with('[')).then_some(text)
        }
        let example = example();
        let uncommented: Vec<&str> = example
            .lines()
            .map(|line| setting(line).unwrap_or(line))
            .collect();
        // The [postgres] section is read only with its engine.
        let text = uncommented
            .join("\n")
            .replace("store_engine = \"fjall\"", "store_engine = \"postgres\"");
        assert!(text.contains("\nshutdown_grace_secs = 15"), "{text}");
        let config: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.validate().unwrap();
        assert_eq!(config.shutdown_grace_secs, 15);
        assert_eq!(config.network.fairness.overrides.len(), 1);
    }

    #[test]
    fn an_unset_setting_means_what_the_verifier_and_the_gateway_default_to() {
        let config = Config::dev(PathBuf::from("unused"), &DevPki::repository());
        let (set, default) = (config.verifier_config().unwrap(), VerifierConfig::default());
        assert_eq!(set.signing_time_window, default.signing_time_window);
        assert_eq!(set.clock_skew, default.clock_skew);
        assert_eq!(set.chain_cache_capacity, default.chain_cache_capacity);
        let (set, default) = (config.gateway_config().unwrap(), GatewayConfig::default());
        assert_eq!(
            format!("{:?}", set.lockout),
            format!("{:?}", default.lockout)
        );
        assert_eq!(set.max_usable_days, default.max_usable_days);
        assert_eq!(set.stuck_after, default.stuck_after);
        let unset: Config = toml::from_str(&example()).unwrap();
        assert_eq!((unset.drain_delay_secs, unset.shutdown_grace_secs), (0, 15));
        assert_eq!(
            (config.drain_delay_secs, config.shutdown_grace_secs),
            (0, 15)
        );
    }

    #[test]
    fn the_relay_lease_defaults_to_ten_seconds_within_two_to_three_hundred() {
        let pki = DevPki::repository();
        let mut config = Config::dev(PathBuf::from("unused"), &pki);
        let relay = RelayFiles::dev("https://127.0.0.1:1".into(), &pki);
        assert_eq!(relay.lease_secs, 10);
        for (secs, valid) in [(1, false), (2, true), (300, true), (301, false)] {
            config.relay = Some(RelayFiles {
                lease_secs: secs,
                ..relay.clone()
            });
            assert_eq!(config.validate_settings().is_ok(), valid, "{secs} s");
        }
    }

    #[test]
    fn trust_has_no_default() {
        // Remove each required trust setting in turn: the configuration must be refused.
        for (section, cut) in [
            (
                "signature policies",
                "signature_policies = [\"1.2.392.100495.1.5.1.1.0.1\", \"1.3.6.1.4.1.32473.1.1\"]\n",
            ),
            ("anchors", "anchors = [\"certs/hpki/root.cert.pem\"]\n"),
            ("client CRLs", "client_crls = [\"certs/tls/ca.crl.pem\"]\n"),
        ] {
            let text = example().replace(cut, "");
            assert_ne!(text, example(), "{section} not found in the example");
            let refused = toml::from_str::<Config>(&text)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate().map_err(|e| e.to_string()));
            assert!(refused.is_err(), "{section} removed, yet accepted");
        }
        let no_roles: String = example().split("[[roles]]").next().unwrap().to_owned()
            + "[tls]"
            + example().split("[tls]").nth(1).unwrap();
        assert!(toml::from_str::<Config>(&no_roles).is_err());
    }

    #[test]
    fn the_commented_checks_and_limits_sections_are_valid_and_match_the_defaults() {
        let sections: String = example()
            .split("# [checks]")
            .nth(1)
            .unwrap()
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            sections.contains("[limits]"),
            "the limits section follows checks"
        );
        let text = format!("{}[checks]{sections}", example());
        let config: Config = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        let defaults = ChecksConfig::default();
        assert_eq!(config.checks.on_critical, defaults.on_critical);
        assert_eq!(config.limits, Limits::default());
        let warn = text.replace("\"require-override\"", "\"warn\"");
        let config: Config = toml::from_str(&warn).unwrap();
        assert_eq!(config.checks.policy().on_critical, OnCritical::Warn);
    }

    #[test]
    fn numbers_that_would_wrap_or_make_no_sense_are_refused() {
        let valid: Config = toml::from_str(&example()).unwrap();
        for setting in [
            "stuck_after_secs = 9223372036854775808",
            "stuck_after_secs = 0",
            "lookup_max_misses = 0",
            "expiry_sweep_secs = 0",
            "clock_step_tolerance_secs = 59",
            "clock_step_tolerance_secs = 86401",
            "event_retention_days = 4294967295",
            "chain_cache_capacity = 0",
            "shutdown_grace_secs = 0",
            "shutdown_grace_secs = 601",
            "drain_delay_secs = 301",
        ] {
            let text = format!("{setting}\n{}", example());
            let config: Config = toml::from_str(&text).unwrap();
            assert!(config.validate().is_err(), "{setting} accepted");
        }
        assert!(valid.validate().is_ok());
    }

    #[test]
    fn the_pseudonym_key_must_be_64_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let mut config: Config = toml::from_str(&example()).unwrap();
        for (text, ok) in [
            ("ab".repeat(32), true),
            ("ab".repeat(31), false),
            ("zz".repeat(32), false),
        ] {
            let path = dir.path().join("key");
            std::fs::write(&path, format!("{text}\n")).unwrap();
            config.audit_pseudonym_key = path;
            assert_eq!(config.validate().is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn the_store_cache_defaults_as_documented_and_a_tiny_one_is_refused() {
        let commented = "# store_cache_mib = 128\n";
        assert!(example().contains(commented));
        let default: Config = toml::from_str(&example()).unwrap();
        let stated: Config =
            toml::from_str(&example().replace(commented, "store_cache_mib = 128\n")).unwrap();
        assert_eq!(default.store_cache_mib, stated.store_cache_mib);
        let tiny: Config =
            toml::from_str(&example().replace(commented, "store_cache_mib = 8\n")).unwrap();
        assert!(tiny.validate().is_err());
    }

    #[test]
    fn the_low_water_mark_defaults_as_documented_and_stays_within_its_range() {
        let (mib, percent) = (
            "# store_low_water_mib = 256\n",
            "# store_low_water_percent = 5\n",
        );
        assert!(example().contains(mib) && example().contains(percent));
        let default: Config = toml::from_str(&example()).unwrap();
        let stated = example()
            .replace(mib, "store_low_water_mib = 256\n")
            .replace(percent, "store_low_water_percent = 5\n");
        let stated: Config = toml::from_str(&stated).unwrap();
        assert_eq!(default.low_water(), stated.low_water());
        let off = example()
            .replace(mib, "store_low_water_mib = 0\n")
            .replace(percent, "store_low_water_percent = 0\n");
        toml::from_str::<Config>(&off).unwrap().validate().unwrap();
        for (commented, setting) in [
            (percent, "store_low_water_percent = 51\n"),
            (mib, "store_low_water_mib = 1048577\n"),
        ] {
            let wrong: Config = toml::from_str(&example().replace(commented, setting)).unwrap();
            let refused = wrong.validate().unwrap_err().to_string();
            assert!(refused.contains("store_low_water_"), "{refused}");
        }
    }

    #[test]
    fn the_store_engine_is_unset_by_default_and_named_in_lower_case() {
        let commented = "# store_engine = \"fjall\"\n";
        assert!(example().contains(commented));
        let default: Config = toml::from_str(&example()).unwrap();
        assert_eq!(default.store_engine, None);
        for (name, engine) in [("fjall", StoreEngine::Fjall), ("sled", StoreEngine::Sled)] {
            let text = example().replace(commented, &format!("store_engine = \"{name}\"\n"));
            let config: Config = toml::from_str(&text).unwrap();
            assert_eq!(config.store_engine, Some(engine));
        }
        let unknown = example().replace(commented, "store_engine = \"rocksdb\"\n");
        assert!(toml::from_str::<Config>(&unknown).is_err());
    }

    /// The example with its commented `[postgres]` section uncommented after `edit` and moved
    /// to the end, and `store_engine = "postgres"` unless `engine` is false.
    fn postgres_example(engine: bool, edit: impl Fn(String) -> String) -> Result<Config, String> {
        let section: String = example()
            .split("# [postgres]")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap()
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let mut text = example();
        if engine {
            text = text.replace(
                "# store_engine = \"fjall\"\n",
                "store_engine = \"postgres\"\n",
            );
        }
        let text = format!("{text}\n[postgres]\n{}\n", edit(section));
        let config: Config = toml::from_str(&text).map_err(|e| e.to_string())?;
        config.validate_settings().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_commented_postgres_section_is_valid_and_matches_the_defaults() {
        let config = postgres_example(true, |t| t).unwrap();
        let postgres = config.postgres.unwrap();
        assert_eq!(postgres.pool_size, 16);
        assert_eq!(postgres.statement_timeout_ms, 5000);
        assert_eq!(postgres.connect_timeout_ms, 5000);
    }

    #[test]
    fn an_unsafe_or_incomplete_postgres_section_is_refused_with_its_reason() {
        let url = "url = \"postgresql://rxgate_app@";
        for (edit, reason) in [
            (
                (url, "url = \"postgresql://rxgate_app:secret@"),
                "password in the URL",
            ),
            (("ca_file = ", "# ca_file = "), "ca_file is required"),
            (("pool_size = 16", "pool_size = 0"), "pool_size"),
            (
                ("target_session_attrs=read-write", "sslmode=disable"),
                "sslmode=disable is refused",
            ),
            (
                ("password_file", "password_env = \"X\"\npassword_file"),
                "not both",
            ),
        ] {
            let refused = postgres_example(true, |t| t.replacen(edit.0, edit.1, 1)).unwrap_err();
            assert!(refused.contains(reason), "{edit:?}: {refused}");
        }
        let without_engine = postgres_example(false, |t| t);
        assert!(
            without_engine
                .unwrap_err()
                .contains("only with store_engine")
        );
        let secret = postgres_example(true, |t| {
            t.replacen(url, "url = \"postgresql://u:hunter2@", 1)
        });
        assert!(!secret.unwrap_err().contains("hunter2"));
    }

    #[test]
    fn the_commented_network_section_is_valid_and_matches_the_defaults() {
        let network: String = example()
            .split("# [network]")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap()
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let config: Config = toml::from_str(&format!("{}[network]{network}", example())).unwrap();
        config.validate().unwrap();
        let stated = NetworkConfig {
            fairness: crate::network::FairnessConfig {
                overrides: Vec::new(),
                ..config.network.fairness.clone()
            },
            ..config.network.clone()
        };
        assert_eq!(stated, NetworkConfig::default());
        assert_eq!(config.network.fairness.overrides.len(), 1);
        assert_eq!(
            toml::from_str::<Config>(&example()).unwrap().network,
            NetworkConfig::default()
        );
    }

    #[test]
    fn unknown_settings_are_refused() {
        let text = format!("surprise = 1\n{}", example());
        assert!(toml::from_str::<Config>(&text).is_err());
    }
}
