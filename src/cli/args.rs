//! The `rxgate` command line as clap definitions: every command, option and positional with the
//! help text `--help` shows (a test walks the tree so that none goes undescribed). `main.rs`
//! parses it and dispatches; nothing here does any work.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    config::StoreEngine,
    dev_pki::{DevCertsArg, NotFound},
    logging::LogFormat,
    master_files::FileKind,
    pki::trust::CrlFile,
    tls::ClientFiles,
};

#[derive(Parser)]
#[command(
    name = "rxgate",
    version = env!("RXGATE_VERSION"),
    about = "Electronic-prescription and dispensing gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to standard error: text, or one JSON object per line
    /// (timestamp, level, target, fields). RUST_LOG filters them (default: info,certval=warn).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    /// A doctor- or dentist-signed rxgate.v1.Prescription.
    Prescription,
    /// A pharmacist-signed rxgate.v1.DispensingRecord.
    Dispensing,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Protobuf JSON mapping: {"content": base64, "cmsSignature": base64}.
    Json,
    /// A binary serialized rxgate.v1.SignedDocument.
    Binary,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway: gRPC over mutual TLS.
    Serve {
        /// A development instance: the committed dev PKI, loopback only, a local store
        /// (data/dev-store). Never in production.
        #[arg(long, conflicts_with = "config")]
        dev: bool,
        /// The configuration file (TOML); required without --dev.
        #[arg(long)]
        config: Option<PathBuf>,
        /// With --dev: where the store lives.
        #[arg(long, default_value = "data/dev-store", requires = "dev")]
        data_dir: PathBuf,
        /// Override the listen address (with --dev it must be a loopback address).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Override where `GET /metrics` is served (default 127.0.0.1:9464; with --dev it must
        /// be a loopback address).
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// With --dev: relay dispensing records to this upstream gateway (as the development
        /// management institution), e.g. https://127.0.0.1:50052.
        #[arg(long, requires = "dev")]
        relay_upstream: Option<String>,
        /// Start even though the store is behind what it acknowledged (files lost or damaged):
        /// logged as an error and audited; the store's counters move past the mark, so no
        /// acknowledged number is given again. For this one start only.
        #[arg(long)]
        accept_data_loss: bool,
        #[command(flatten)]
        dev_certs: DevCertsArg,
    },
    /// Drug masters of a running gateway.
    Master {
        #[command(subcommand)]
        command: MasterCommand,
    },
    /// Stuck prescriptions and exchange-number lockouts of a running gateway (as an operator;
    /// every call is audited).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The store: a stopped store's check (`verify`), and the store as one dump file (a running
    /// gateway's backup, a stopped store's export, and their import into a new store of either
    /// engine).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Walk a clinic and a pharmacy through a prescription against a running --dev server.
    Demo {
        /// The development gateway's gRPC address.
        #[arg(long, default_value = "https://127.0.0.1:50051")]
        addr: String,
        #[command(flatten)]
        dev_certs: DevCertsArg,
    },
    /// Sign a document written as JSON (protobuf JSON mapping) into a SignedDocument.
    Sign {
        /// What the document is.
        kind: Kind,
        /// The document as JSON.
        document: PathBuf,
        /// The signer's certificate (PEM or DER).
        #[arg(long)]
        cert: PathBuf,
        /// The signer's PKCS#8 private key (PEM or DER): RSA ≥ 2048 bits or ECDSA P-256.
        #[arg(long)]
        key: PathBuf,
        /// Intermediate certificates to embed (PEM).
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Where to write the SignedDocument (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How to write the SignedDocument.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Also write the signed content bytes here (for `openssl cms -verify -content`).
        #[arg(long)]
        content_out: Option<PathBuf>,
        /// Also write the DER CMS signature here.
        #[arg(long)]
        signature_out: Option<PathBuf>,
    },
    /// The audit log: its patient pseudonyms, its hash chains and their checkpoints.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The gateway's configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Verify a SignedDocument and print what was verified, or the refusal reason.
    Verify {
        /// What the signed document should hold.
        kind: Kind,
        /// The SignedDocument (JSON or binary, as `sign` writes it).
        document: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the audit chains and their signed checkpoints, of a stopped gateway's store or of
    /// an export; names the first bad sequence of each chain. Exit code 1 when not intact.
    Verify {
        /// The store's folder (the gateway stopped).
        #[arg(long, required_unless_present = "export", conflicts_with = "export")]
        data_dir: Option<PathBuf>,
        /// An export (`rxgate audit export`).
        #[arg(long)]
        export: Option<PathBuf>,
        /// Checkpoints kept outside the store: a file of `checkpoint=HEX` lines (the gateway's
        /// log, or what `rxgate audit checkpoints` printed).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        #[command(flatten)]
        gateways: GatewayCertArgs,
    },
    /// List the signed checkpoints of a stopped gateway's store, each with its `checkpoint=HEX`
    /// line (keep a copy: `rxgate audit verify --checkpoints` reads it).
    Checkpoints {
        /// The store's folder (the gateway stopped).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Write a running gateway's whole audit trail and checkpoints to a file (as an operator):
    /// protobuf JSON of rxgate.v1.AuditExport, what `rxgate audit verify --export` reads.
    Export {
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Print the pseudonym (64 hex digits) that audit records name a patient by: the
    /// `patient_pseudonym` that ExportAudit filters on, to list every check of that patient.
    Pseudonym {
        /// The gateway's audit_pseudonym_key file.
        #[arg(long)]
        key_file: PathBuf,
        /// 保険者番号, 記号, 番号, 枝番 (insured patients).
        #[arg(long, requires_all = ["symbol", "number", "branch"], conflicts_with = "payer")]
        insurer: Option<String>,
        /// 記号 (with --insurer).
        #[arg(long)]
        symbol: Option<String>,
        /// 番号 (with --insurer).
        #[arg(long)]
        number: Option<String>,
        /// 枝番 (with --insurer).
        #[arg(long)]
        branch: Option<String>,
        /// 公費負担者番号 and 受給者番号 (patients covered by public funds only).
        #[arg(long, requires = "recipient")]
        payer: Option<String>,
        /// 受給者番号 (with --payer).
        #[arg(long)]
        recipient: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Read every entry of a stopped gateway's store and check it: every record decodes, the
    /// indexes and the records agree, no counter is behind, the audit chains verify, the
    /// acknowledged mark is not ahead. Prints a summary (exit 0) or the first problem (exit 1);
    /// a store that cannot be opened (held by a running gateway, damaged files) exits 2. With
    /// --config alone, the store the configuration names (its database, for PostgreSQL).
    Verify {
        /// The store's folder (the gateway stopped).
        #[arg(long, conflicts_with = "dump")]
        data_dir: Option<PathBuf>,
        /// A dump (`store export` or `store backup`) instead: its manifest is checked, then it
        /// is loaded into a scratch store beside it (FILE.verifying, removed afterwards; it
        /// needs as much room as the store) and that store is checked.
        #[arg(long)]
        dump: Option<PathBuf>,
        #[command(flatten)]
        gateways: GatewayCertArgs,
    },
    /// Write a stopped gateway's store, or a PostgreSQL store from one consistent snapshot
    /// while gateways run, to a new file as a dump of every table (with a manifest of counts
    /// and hashes), readable by any engine. The file holds patient data (0600).
    Export {
        #[command(flatten)]
        store: StoreArgs,
        /// The file to write (it must not exist).
        dest: PathBuf,
    },
    /// Load a dump (`store export`) into a new store, in a new or empty folder or (--engine
    /// postgres) an empty database that `store migrate` prepared, and save its acknowledged
    /// mark: how a store moves to another engine.
    Import {
        #[command(flatten)]
        store: StoreArgs,
        /// The engine to keep the new store in (postgres: the database --config names).
        #[arg(long, value_enum, default_value = "fjall")]
        engine: StoreEngine,
        /// The dump.
        src: PathBuf,
    },
    /// Write a running gateway's backup (as an operator) to a new file: a dump of a consistent
    /// snapshot, taken while it serves (fjall stores only). The file holds patient data (0600).
    Backup {
        /// The file to write (it must not exist); it appears once complete and checked.
        dest: PathBuf,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Load a backup (`store backup`) into a new store, as `store import` does.
    Restore {
        #[command(flatten)]
        store: StoreArgs,
        /// The engine to keep the new store in (postgres: the database --config names).
        #[arg(long, value_enum, default_value = "fjall")]
        engine: StoreEngine,
        /// The backup.
        backup: PathBuf,
    },
    /// Bring the schema of the PostgreSQL database a configuration names to this binary's
    /// version, as the migration role (which owns the schema), and grant the gateway's role
    /// (the URL's user) the use of its rows. Prints `schema at version N (was M)`; a schema
    /// newer than this binary's, or a role without the right, is refused (exit 2).
    Migrate {
        /// The gateway's configuration: its [postgres] section names the database.
        #[arg(long)]
        config: PathBuf,
        /// The migration role; default: the URL's user.
        #[arg(long = "as", value_name = "ROLE")]
        role: Option<String>,
        /// A file holding the migration role's password (its first line).
        #[arg(long, requires = "role", conflicts_with = "password_env")]
        password_file: Option<PathBuf>,
        /// The environment variable holding the migration role's password.
        #[arg(long, requires = "role")]
        password_env: Option<String>,
    },
}

/// Where a store command finds the store: a folder, or what a gateway's configuration names.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// The store's folder (embedded engines; the gateway stopped).
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    pub data_dir: Option<PathBuf>,
    /// The gateway's configuration: the store it names (its [postgres] database, or its
    /// data_dir).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Whose audit checkpoints are believed.
#[derive(clap::Args)]
pub struct GatewayCertArgs {
    /// The [gateway] certificate of each gateway whose checkpoints are believed
    /// (repeatable); default: the one --config names.
    #[arg(long)]
    pub gateway_cert: Vec<PathBuf>,
    /// The gateway's configuration, for its [gateway] certificate (and, for `store verify`,
    /// its audit_pseudonym_key, under which the store's keys name patients).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration as `serve --config` would read it, without binding a port or
    /// opening the store: its settings, and every certificate, key, CRL and key file it names.
    /// Prints "ok" (exit 0) or what is wrong (exit 2).
    Check {
        /// The configuration file (TOML).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum MasterCommand {
    /// Load newer official files into a running gateway (as an operator): SSK y-files (full or
    /// update), the MHLW yakka list and ippan master, or a contraindication table. The kind is
    /// read from the official name within the file name (any case: `y_ALL20240321 (1).csv.gz`
    /// is a full y-file), or said with --kind; `.gz` files are decompressed first.
    Import {
        /// The files (`.csv` or `.csv.gz`); already imported ones are reported and skipped.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The kind of every file named, when their names do not say it: y-full, y-update,
        /// yakka-list, ippan-master or contraindications. A y-file's name must still carry its
        /// date (YYYYMMDD): it orders the updates.
        #[arg(long, value_parser = file_kind)]
        kind: Option<FileKind>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// List the prescriptions ACCEPTED by a pharmacy and without a dispensing record (since
    /// acceptance or the last part) for longer than the gateway's stuck_after_secs.
    Stuck {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// List the exchange-number lockouts in force (pharmacies, and patients by pseudonym).
    Lockouts {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Lift a lockout and forget its misses: a pharmacy's (by its code) or a patient's.
    Unlock {
        /// The pharmacy's institution code (10 digits).
        #[arg(required_unless_present = "patient_pseudonym")]
        pharmacy: Option<String>,
        /// The patient's pseudonym (64 hex digits: `rxgate audit pseudonym`).
        #[arg(long, conflicts_with = "pharmacy")]
        patient_pseudonym: Option<String>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
    /// Confirm the gateway's wall clock as it reads now, after a step forward that holds the
    /// expiry sweep (rxgate_expiry_sweep_held = 1): the sweep then writes EXPIRED by it. Check
    /// the gateway host's time first.
    ConfirmClock {
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

/// A running gateway and the operator who calls it.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// The gateway's gRPC address.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub addr: String,
    /// The operator's TLS client certificate (PEM), with --key and --ca; without the three: the
    /// development operator (certs/tls/operator.*), for development only.
    #[arg(long, requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, requires_all = ["cert", "ca"])]
    pub key: Option<PathBuf>,
    /// The CA that issued the gateway's server certificate (PEM).
    #[arg(long, requires_all = ["cert", "key"])]
    pub ca: Option<PathBuf>,
    #[command(flatten)]
    pub dev_certs: DevCertsArg,
}

impl GatewayArgs {
    /// The operator's TLS files: those named, or the development operator's.
    pub fn operator(self) -> Result<ClientFiles, NotFound> {
        Ok(match (self.cert, self.key, self.ca) {
            (Some(cert), Some(key), Some(ca)) => ClientFiles { ca, cert, key },
            _ => self.dev_certs.locate()?.client("operator"),
        })
    }
}

/// The trust a document signature is verified against.
#[derive(clap::Args)]
pub struct TrustArgs {
    /// Trust the committed development PKI (certs/hpki). Development only.
    #[arg(long, conflicts_with_all = ["anchor", "intermediate", "crl"])]
    pub dev: bool,
    /// A trust anchor certificate file (repeatable).
    #[arg(long)]
    pub anchor: Vec<PathBuf>,
    /// A known intermediate CA certificate file (repeatable).
    #[arg(long)]
    pub intermediate: Vec<PathBuf>,
    /// CA_CERT=CRL_FILE: the CRL of one issuing CA (repeatable).
    #[arg(long, value_parser = parse_crl_file)]
    pub crl: Vec<CrlFile>,
    #[command(flatten)]
    pub dev_certs: DevCertsArg,
}

fn file_kind(name: &str) -> Result<FileKind, String> {
    FileKind::ALL
        .into_iter()
        .find(|kind| kind.name() == name)
        .ok_or_else(|| {
            let names: Vec<_> = FileKind::ALL.map(FileKind::name).into();
            format!("one of {}", names.join(", "))
        })
}

fn parse_crl_file(s: &str) -> Result<CrlFile, String> {
    let (ca, crl) = s
        .split_once('=')
        .ok_or_else(|| "expected CA_CERT=CRL_FILE".to_owned())?;
    Ok(CrlFile {
        ca: ca.into(),
        crl: crl.into(),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// `path` and every subcommand under it, depth first, as "rxgate master import".
    fn walk<'a>(
        path: String,
        command: &'a clap::Command,
        into: &mut Vec<(String, &'a clap::Command)>,
    ) {
        for sub in command.get_subcommands() {
            walk(format!("{path} {}", sub.get_name()), sub, into);
        }
        into.push((path, command));
    }

    #[test]
    fn every_command_option_and_positional_says_what_it_is() {
        let cli = Cli::command();
        let mut commands = Vec::new();
        walk("rxgate".into(), &cli, &mut commands);
        let mut undescribed = Vec::new();
        for (path, command) in commands {
            if command.get_about().is_none() && path != "rxgate" {
                undescribed.push(path.clone());
            }
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    undescribed.push(format!("{path} {}", arg.get_id()));
                }
            }
        }
        assert_eq!(undescribed, Vec::<String>::new());
    }
}
