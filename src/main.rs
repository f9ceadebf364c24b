//! The `rxgate` command: thin — parse the command line and hand over to the library.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Parser;
use rxgate::{
    audit_verify::ChainVerifier,
    cli::{
        self,
        args::{
            AdminCommand, AuditCommand, Cli, Command, ConfigCommand, GatewayCertArgs,
            MasterCommand, StoreCommand,
        },
        documents::{self, read},
        master_import,
        store::StoreAt,
    },
    config::Config,
    domain::{hash::hex, patient::PatientKey},
    pki::identity::TrustedSenders,
    pki::signer::SigningKey,
    sd_notify::Notifier,
    service::{Pseudonyms, SystemClock},
    signals::StopSignals,
    store::Migrator,
    wire::proto::v1::lockout_subject::Subject,
};

/// mimalloc, not glibc malloc: allocation was a quarter of the store writer's time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Serve {
            dev,
            config,
            data_dir,
            listen,
            metrics_listen,
            relay_upstream,
            accept_data_loss,
            dev_certs,
        } => {
            let pki = if dev { Some(dev_certs.locate()?) } else { None };
            let mut config = match (&pki, config) {
                (Some(pki), _) => Config::dev(data_dir.clone(), pki),
                (None, Some(path)) => Config::from_file(&path)?,
                (None, None) => bail!("say --config FILE (or --dev for a development instance)"),
            };
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(metrics_listen) = metrics_listen {
                config.metrics_listen = metrics_listen;
            }
            config.accept_data_loss = accept_data_loss;
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
            if let Some(pki) = &pki {
                eprintln!(
                    "rxgate: DEVELOPMENT INSTANCE: trusting the committed dev PKI ({}), \
                     loopback only, store in {}. Never use --dev in production.",
                    pki.dir().display(),
                    data_dir.display()
                );
            }
            serve(config)
        }
        Command::Master {
            command:
                MasterCommand::Import {
                    files,
                    kind,
                    gateway,
                },
        } => {
            let addr = gateway.addr.clone();
            let client = gateway.operator()?;
            let import = master_import::import(&addr, &client, &files, kind);
            let summary = runtime()?.block_on(import)?;
            print!("{}", master_import::render(&summary));
            Ok(true)
        }
        Command::Admin { command } => {
            runtime()?.block_on(admin(command))?;
            Ok(true)
        }
        Command::Audit { command } => audit(command),
        Command::Store { command } => store(command),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            cli::config_check::check(&file)?;
            println!("ok");
            Ok(true)
        }
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
            documents::sign(
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
        } => documents::verify(kind, &document, trust),
    }
}

/// Runs `rxgate admin`.
async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Stuck { gateway } => {
            let addr = gateway.addr.clone();
            print!("{}", cli::admin::stuck(&addr, &gateway.operator()?).await?);
        }
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
        AdminCommand::ConfirmClock { gateway } => {
            let addr = gateway.addr.clone();
            print!(
                "{}",
                cli::admin::confirm_clock(&addr, &gateway.operator()?).await?
            );
        }
    }
    Ok(())
}

/// Runs `rxgate store`: prints the manifest of the dump written or read, the schema's version
/// (`migrate`), or the verdict of `store verify`; false when the store is not sound.
fn store(command: StoreCommand) -> anyhow::Result<bool> {
    let runtime = runtime()?;
    let manifest = match command {
        StoreCommand::Verify {
            data_dir,
            dump,
            gateways,
        } => return verify_store(&runtime, data_dir, dump, gateways),
        StoreCommand::Export { store, dest } => {
            let at = StoreAt::named(store.data_dir, store.config.as_deref())?;
            runtime.block_on(cli::store::export(at, dest))
        }
        StoreCommand::Import {
            store,
            engine,
            src: dump,
        }
        | StoreCommand::Restore {
            store,
            engine,
            backup: dump,
        } => {
            let at = StoreAt::named(store.data_dir, store.config.as_deref())?;
            runtime.block_on(cli::store::import(at, engine, dump))
        }
        StoreCommand::Backup { dest, gateway } => {
            let addr = gateway.addr.clone();
            runtime.block_on(cli::store::backup(&addr, &gateway.operator()?, dest))
        }
        StoreCommand::Migrate {
            config,
            role,
            password_file,
            password_env,
        } => {
            let migrator = role.map(|user| Migrator {
                user,
                password_file,
                password_env,
            });
            let config = Config::from_file(&config)?;
            let migrated = runtime.block_on(cli::store_postgres::migrate(&config, migrator))?;
            println!("schema at version {} (was {})", migrated.to, migrated.from);
            return Ok(true);
        }
    }?;
    print!("{}", cli::store::render(&manifest));
    Ok(true)
}

/// Runs `rxgate audit`; false when a verification failed.
fn audit(command: AuditCommand) -> anyhow::Result<bool> {
    match command {
        AuditCommand::Verify {
            data_dir,
            export,
            checkpoints,
            gateways,
        } => {
            let verifier = chain_verifier(gateways)?;
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

/// A chain verifier that believes the checkpoints of the gateways named.
fn chain_verifier(gateways: GatewayCertArgs) -> anyhow::Result<ChainVerifier> {
    let certs = match (gateways.gateway_cert.is_empty(), gateways.config) {
        (false, _) => gateways.gateway_cert,
        (true, Some(config)) => vec![Config::from_file(&config)?.gateway.cert],
        (true, None) => bail!("name the --gateway-cert (or the gateway's --config)"),
    };
    Ok(ChainVerifier::new(TrustedSenders::from_files(&certs)?))
}

/// Runs `rxgate store verify` on the store's folder, a dump, or the store the gateway's
/// configuration names; false when the store is not sound.
fn verify_store(
    runtime: &tokio::runtime::Runtime,
    data_dir: Option<PathBuf>,
    dump: Option<PathBuf>,
    gateways: GatewayCertArgs,
) -> anyhow::Result<bool> {
    let pseudonyms = match &gateways.config {
        Some(config) => Some(Config::from_file(config)?.pseudonyms()?),
        None => None,
    };
    let verdict = if let Some(dump) = dump {
        let chains = chain_verifier(gateways)?;
        runtime.block_on(cli::store_verify::verify_dump(&dump, chains, pseudonyms))
    } else {
        if data_dir.is_none() && gateways.config.is_none() {
            bail!("name the store's --data-dir, a --dump or the gateway's --config");
        }
        let at = StoreAt::named(data_dir, gateways.config.as_deref())?;
        let chains = chain_verifier(gateways)?;
        runtime.block_on(cli::store_verify::verify(at, chains, pseudonyms))
    };
    match verdict? {
        Ok(summary) => {
            println!("{summary}");
            Ok(true)
        }
        Err(problem) => {
            println!("NOT sound: {problem}");
            Ok(false)
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

/// How long the runtime waits, once the server has ended, for what still runs on it (calls cut
/// by the grace period or a second signal): they are dropped, not finished.
const LEFTOVERS_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the gateway until a stop signal has drained it (true) or it ended otherwise (false).
fn serve(config: Config) -> anyhow::Result<bool> {
    let runtime = runtime()?;
    let clean = runtime.block_on(async {
        let signals = StopSignals::install().context("installing the signal handlers")?;
        let server = rxgate::app::start(config, Arc::new(SystemClock)).await?;
        signals.serve(server, &Notifier::from_env()).await
    });
    runtime.shutdown_timeout(LEFTOVERS_TIMEOUT);
    clean
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    rxgate::logging::init(cli.log_format);
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("rxgate: {e:#}");
            ExitCode::from(2)
        }
    }
}
