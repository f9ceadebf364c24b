//! The `rxgate` command: thin — parse the command line and hand over to the library.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::SystemTime,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use prost::Message;
use rxgate::{
    audit_verify::ChainVerifier,
    cli,
    cli::master_import,
    config::Config,
    dev_pki::DevCertsArg,
    domain::{
        hash::hex,
        patient::PatientKey,
        signature::{SignedContent, VerifierConfig},
    },
    pki::identity::TrustedSenders,
    pki::signer::SigningKey,
    pki::trust::{CrlFile, TrustFiles},
    service::{Pseudonyms, SystemClock},
    tls::ClientFiles,
    wire::json,
    wire::proto::v1::{DispensingRecord, Prescription, SignedDocument, lockout_subject::Subject},
};

/// mimalloc, not glibc malloc: allocation was a quarter of the store writer's time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rxgate",
    version,
    about = "Electronic-prescription and dispensing gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// A doctor- or dentist-signed rxgate.v1.Prescription.
    Prescription,
    /// A pharmacist-signed rxgate.v1.DispensingRecord.
    Dispensing,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Protobuf JSON mapping: {"content": base64, "cmsSignature": base64}.
    Json,
    /// A binary serialized rxgate.v1.SignedDocument.
    Binary,
}

#[derive(Subcommand)]
enum Command {
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
        #[command(flatten)]
        dev_certs: DevCertsArg,
    },
    /// Drug masters of a running gateway.
    Master {
        #[command(subcommand)]
        command: MasterCommand,
    },
    /// Exchange-number lockouts of a running gateway (as an operator; every call is audited).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Walk a clinic and a pharmacy through a prescription against a running --dev server.
    Demo {
        #[arg(long, default_value = "https://127.0.0.1:50051")]
        addr: String,
        #[command(flatten)]
        dev_certs: DevCertsArg,
    },
    /// Sign a document written as JSON (protobuf JSON mapping) into a SignedDocument.
    Sign {
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
    /// Verify a SignedDocument and print what was verified, or the refusal reason.
    Verify {
        kind: Kind,
        /// The SignedDocument (JSON or binary, as `sign` writes it).
        document: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
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
        /// The [gateway] certificate of each gateway whose checkpoints are believed
        /// (repeatable); default: the one --config names.
        #[arg(long)]
        gateway_cert: Vec<PathBuf>,
        /// The gateway's configuration, for its [gateway] certificate.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// List the signed checkpoints of a stopped gateway's store, each with its `checkpoint=HEX`
    /// line (keep a copy: `rxgate audit verify --checkpoints` reads it).
    Checkpoints {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Write a running gateway's whole audit trail and checkpoints to a file (as an operator):
    /// protobuf JSON of rxgate.v1.AuditExport, what `rxgate audit verify --export` reads.
    Export {
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
        #[arg(long)]
        symbol: Option<String>,
        #[arg(long)]
        number: Option<String>,
        #[arg(long)]
        branch: Option<String>,
        /// 公費負担者番号 and 受給者番号 (patients covered by public funds only).
        #[arg(long, requires = "recipient")]
        payer: Option<String>,
        #[arg(long)]
        recipient: Option<String>,
    },
}

#[derive(Subcommand)]
enum MasterCommand {
    /// Load newer official files into a running gateway (as an operator): SSK y-files (full or
    /// update), the MHLW yakka list and ippan master, or a contraindication table. The kind is
    /// read from the official file name; `.gz` files are decompressed first.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        gateway: GatewayArgs,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
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
}

/// A running gateway and the operator who calls it.
#[derive(clap::Args)]
struct GatewayArgs {
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    addr: String,
    /// The operator's TLS client certificate, key and the gateway's CA (PEM); default: the
    /// development operator (certs/tls/operator.*). Development only.
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    #[arg(long, requires_all = ["cert", "ca"])]
    key: Option<PathBuf>,
    #[arg(long, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    #[command(flatten)]
    dev_certs: DevCertsArg,
}

impl GatewayArgs {
    fn operator(self) -> anyhow::Result<ClientFiles> {
        Ok(match (self.cert, self.key, self.ca) {
            (Some(cert), Some(key), Some(ca)) => ClientFiles { ca, cert, key },
            _ => self.dev_certs.locate()?.client("operator"),
        })
    }
}

#[derive(clap::Args)]
struct TrustArgs {
    /// Trust the committed development PKI (certs/hpki). Development only.
    #[arg(long, conflicts_with_all = ["anchor", "intermediate", "crl"])]
    dev: bool,
    /// A trust anchor certificate file (repeatable).
    #[arg(long)]
    anchor: Vec<PathBuf>,
    /// A known intermediate CA certificate file (repeatable).
    #[arg(long)]
    intermediate: Vec<PathBuf>,
    /// CA_CERT=CRL_FILE: the CRL of one issuing CA (repeatable).
    #[arg(long, value_parser = parse_crl_file)]
    crl: Vec<CrlFile>,
    #[command(flatten)]
    dev_certs: DevCertsArg,
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

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
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

fn sign(
    kind: Kind,
    document: &Path,
    signer: &SigningKey,
    out: Option<&Path>,
    format: Format,
    content_out: Option<&Path>,
    signature_out: Option<&Path>,
) -> anyhow::Result<()> {
    let text = String::from_utf8(read(document)?).context("the document is not UTF-8")?;
    // Canonical protobuf bytes: exactly what rxgate's strict decode accepts.
    let content = match kind {
        Kind::Prescription => canonical::<Prescription>("rxgate.v1.Prescription", &text)?,
        Kind::Dispensing => canonical::<DispensingRecord>("rxgate.v1.DispensingRecord", &text)?,
    };
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

fn load_signed(path: &Path) -> anyhow::Result<SignedDocument> {
    let bytes = read(path)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.trim_start().starts_with('{') => {
            Ok(json::from_json(SIGNED_DOCUMENT, text)?)
        }
        _ => SignedDocument::decode(bytes.as_slice()).context("not a SignedDocument"),
    }
}

fn verify_as<D: SignedContent + Message>(
    verifier: &rxgate::domain::signature::Verifier,
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

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Serve {
            dev,
            config,
            data_dir,
            listen,
            metrics_listen,
            relay_upstream,
            dev_certs,
        } => {
            let mut config = match (dev, config) {
                (true, _) => {
                    let pki = dev_certs.locate()?;
                    eprintln!(
                        "rxgate: DEVELOPMENT INSTANCE: trusting the committed dev PKI ({}), \
                         loopback only, store in {}. Never use --dev in production.",
                        pki.dir().display(),
                        data_dir.display()
                    );
                    Config::dev(data_dir, &pki)
                }
                (false, Some(path)) => Config::from_file(&path)?,
                (false, None) => bail!("say --config FILE (or --dev for a development instance)"),
            };
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(metrics_listen) = metrics_listen {
                config.metrics_listen = metrics_listen;
            }
            if let Some(upstream) = relay_upstream {
                config.relay = Some(rxgate::config::RelayFiles::dev(
                    upstream,
                    &dev_certs.locate()?,
                ));
            }
            if dev && !config.listen.ip().is_loopback() {
                bail!("a --dev instance listens on loopback only");
            }
            if dev && !config.metrics_listen.ip().is_loopback() {
                bail!("a --dev instance serves its metrics port on loopback only");
            }
            runtime()?.block_on(serve(config))?;
            Ok(true)
        }
        Command::Master {
            command: MasterCommand::Import { files, gateway },
        } => {
            let addr = gateway.addr.clone();
            let client = gateway.operator()?;
            let summary = runtime()?.block_on(master_import::import(&addr, &client, &files))?;
            print!("{}", master_import::render(&summary));
            Ok(true)
        }
        Command::Admin { command } => {
            runtime()?.block_on(admin(command))?;
            Ok(true)
        }
        Command::Audit { command } => audit(command),
        Command::Demo { addr, dev_certs } => {
            runtime()?.block_on(rxgate::cli::demo::run(&addr, &dev_certs.locate()?))?;
            Ok(true)
        }
        Command::Sign {
            kind,
            document,
            cert,
            key,
            chain,
            out,
            format,
            content_out,
            signature_out,
        } => {
            let chain = chain.as_deref().map(read).transpose()?.unwrap_or_default();
            let signer = SigningKey::new(&read(&cert)?, &chain, &read(&key)?)?;
            sign(
                kind,
                &document,
                &signer,
                out.as_deref(),
                format,
                content_out.as_deref(),
                signature_out.as_deref(),
            )?;
            Ok(true)
        }
        Command::Verify {
            kind,
            document,
            trust,
        } => {
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
            let signed = load_signed(&document)?;
            match kind {
                Kind::Prescription => {
                    verify_as::<Prescription>(&verifier, &signed, "rxgate.v1.Prescription")
                }
                Kind::Dispensing => {
                    verify_as::<DispensingRecord>(&verifier, &signed, "rxgate.v1.DispensingRecord")
                }
            }
        }
    }
}

/// Runs `rxgate admin`.
async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Lockouts { gateway } => {
            let addr = gateway.addr.clone();
            print!(
                "{}",
                cli::admin::lockouts(&addr, &gateway.operator()?).await?
            );
        }
        AdminCommand::Unlock {
            pharmacy,
            patient_pseudonym,
            gateway,
        } => {
            let subject = match (pharmacy, patient_pseudonym) {
                (_, Some(pseudonym)) => Subject::PatientPseudonym(pseudonym),
                (Some(code), None) => Subject::PharmacyCode(code),
                (None, None) => bail!("name a pharmacy code or --patient-pseudonym"),
            };
            let addr = gateway.addr.clone();
            cli::admin::unlock(&addr, &gateway.operator()?, subject).await?;
            println!("unlocked");
        }
    }
    Ok(())
}

/// Runs `rxgate audit`; false when a verification failed.
fn audit(command: AuditCommand) -> anyhow::Result<bool> {
    match command {
        AuditCommand::Verify {
            data_dir,
            export,
            checkpoints,
            gateway_cert,
            config,
        } => {
            let certs = match (gateway_cert.is_empty(), config) {
                (false, _) => gateway_cert,
                (true, Some(config)) => vec![Config::from_file(&config)?.gateway.cert],
                (true, None) => bail!("name the --gateway-cert (or the gateway's --config)"),
            };
            let verifier = ChainVerifier::new(TrustedSenders::from_files(&certs)?);
            let external = match checkpoints {
                Some(path) => cli::audit::checkpoints_in(&path)?,
                None => Vec::new(),
            };
            let report = match (data_dir, export) {
                (Some(dir), _) => {
                    runtime()?.block_on(cli::audit::verify_store(&dir, verifier, &external))?
                }
                (None, Some(file)) => cli::audit::verify_export(&file, verifier, &external)?,
                (None, None) => bail!("name the --data-dir or the --export"),
            };
            println!("{report}");
            Ok(report.findings.is_empty())
        }
        AuditCommand::Checkpoints { data_dir } => {
            print!(
                "{}",
                runtime()?.block_on(cli::audit::list_checkpoints(&data_dir))?
            );
            Ok(true)
        }
        AuditCommand::Export { out, gateway } => {
            let addr = gateway.addr.clone();
            let operator = gateway.operator()?;
            let export = cli::audit::export(&addr, &operator, &out);
            let records = runtime()?.block_on(export)?;
            println!(
                "{records} audit records and the checkpoints written to {}",
                out.display()
            );
            Ok(true)
        }
        AuditCommand::Pseudonym {
            key_file,
            insurer,
            symbol,
            number,
            branch,
            payer,
            recipient,
        } => {
            let pseudonym = pseudonym(
                &key_file,
                [insurer, symbol, number, branch, payer, recipient],
            )?;
            println!("{pseudonym}");
            Ok(true)
        }
    }
}

/// The audit pseudonym (hex) of the patient named by insurer, symbol, number and branch, or by
/// payer and recipient.
fn pseudonym(key_file: &Path, patient: [Option<String>; 6]) -> anyhow::Result<String> {
    let [insurer, symbol, number, branch, payer, recipient] = patient;
    let pseudonyms = Pseudonyms::from_file(key_file).map_err(anyhow::Error::msg)?;
    let patient = match (insurer, symbol, number, branch, payer, recipient) {
        (Some(i), Some(s), Some(n), Some(b), None, None) => PatientKey::insurance(&i, &s, &n, &b),
        (None, None, None, None, Some(p), Some(r)) => PatientKey::public_funds(&p, &r),
        _ => {
            bail!("name the patient by --insurer/--symbol/--number/--branch or --payer/--recipient")
        }
    }
    .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.rule))?;
    Ok(hex(&pseudonyms.of(patient.canonical())))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = rxgate::app::start(config, Arc::new(SystemClock)).await?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            result?;
            tracing::info!("shutting down");
            server.shutdown().await
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("rxgate: {e:#}");
            ExitCode::from(2)
        }
    }
}
