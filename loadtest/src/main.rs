//! `loadtest`: measures the rxgate gateway over mutual TLS — or the bare-echo ceiling — and prints
//! a table, then one line of JSON. See README.md.
//!
//! Code map:
//! - `cli`: the options and the load shape.
//! - `pki`: institution certificates minted from the TLS CA; mutual-TLS channels.
//! - `fleet`: the run's clinics and pharmacies, each with its own connections.
//! - `signers`: the doctor and pharmacist; bulk signing before the clock starts.
//! - `corpus`: the documents of a run and the untimed setup (histories, acknowledgements).
//! - `workload`: one measured operation per scenario, timed and recorded.
//! - `driver`: open loop (constant arrival rate) and closed loop (fixed concurrency).
//! - `report`: HDR histograms, errors by status code, the table and the JSON line.
//! - `audit`: every acknowledged registration must read back.
//! - `spawn`: `--spawn` starts a `rxgate serve --dev` on a temporary folder.
//! - `echo`: the echo server over the gateway's TLS stack, in its own process with `--spawn`, else
//!   in this one.
//! - `server`: the gateway's own figures, from its `/metrics` before and after the load.
//! - `pool`: bounded concurrency for untimed bulk work.
//! - `worst`: `--scenario worst`, the worst single requests the gateway's limits allow, with the
//!   gateway's memory.

/// The same allocator as the gateway's, so the client costs what it would beside it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod audit;
mod cli;
mod corpus;
mod driver;
mod echo;
mod fleet;
mod pki;
mod pool;
mod report;
mod server;
mod signers;
mod spawn;
mod workload;
mod worst;

use std::{
    process::ExitCode,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use rxgate::domain::time::JapanDate;
use serde_json::json;

use crate::{
    cli::{Load, Options, Scenario},
    corpus::{Acks, Corpus, Plan, Setup},
    driver::Window,
    echo::{EchoProcess, EchoServer},
    fleet::{Fleet, Shape},
    pki::Minter,
    report::{Header, Rpc},
    signers::Signers,
    spawn::Gateway,
    workload::Workload,
};

/// Registration-sized payloads the echo cycles through.
const ECHO_PAYLOADS: usize = 256;

/// What is measured.
enum Target {
    Remote(String),
    Spawned(Box<Gateway>),
    Echo(EchoServer),
    SpawnedEcho(EchoProcess),
}

impl Target {
    async fn start(o: &Options) -> anyhow::Result<Self> {
        if o.scenario == Scenario::Echo && o.spawn {
            return Ok(Target::SpawnedEcho(EchoProcess::start(&o.tls_dir).await?));
        }
        if o.scenario == Scenario::Echo {
            return Ok(Target::Echo(EchoServer::start(&o.tls_dir).await?));
        }
        if !o.spawn {
            return Ok(Target::Remote(o.addr.clone()));
        }
        let binary = spawn::binary(o.rxgate_bin.as_deref())?;
        Ok(Target::Spawned(Box::new(
            Gateway::start(&binary, None).await?,
        )))
    }

    fn addr(&self) -> String {
        match self {
            Target::Remote(addr) => addr.clone(),
            Target::Spawned(gateway) => gateway.addr.clone(),
            Target::Echo(server) => format!("https://{}", server.addr),
            Target::SpawnedEcho(process) => format!("https://{}", process.addr),
        }
    }

    /// Where the measured gateway serves its metrics (the echo has none).
    fn metrics(&self, o: &Options) -> Option<String> {
        match self {
            Target::Remote(_) => o.metrics.clone(),
            Target::Spawned(gateway) => Some(gateway.metrics.clone()),
            Target::Echo(_) | Target::SpawnedEcho(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Remote(addr) => format!("the gateway at {addr}"),
            Target::Spawned(gateway) => format!(
                "a spawned `rxgate serve --dev` at {} (data and log in {})",
                gateway.addr,
                gateway.dir.path().display()
            ),
            Target::Echo(server) => format!(
                "the in-process echo server at {} (the gateway's TLS stack, no gateway)",
                server.addr
            ),
            Target::SpawnedEcho(process) => format!(
                "a spawned echo process at {} (the gateway's TLS stack, no gateway)",
                process.addr
            ),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Target::Remote(_) => Ok(()),
            Target::Spawned(gateway) => gateway.stop().await,
            Target::Echo(server) => server.stop().await,
            Target::SpawnedEcho(process) => process.stop().await,
        }
    }
}

/// Tags this run's prescription numbers and patients: unix milliseconds in base 36.
fn run_tag() -> String {
    let mut n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut tag = Vec::new();
    while n > 0 {
        tag.push(char::from_digit((n % 36) as u32, 36).expect("a base-36 digit"));
        n /= 36;
    }
    tag.iter().rev().collect::<String>().to_uppercase()
}

/// Prepares, runs, audits and reports; returns how many acknowledged registrations were lost.
async fn measure(o: &Options, target: &Target) -> anyhow::Result<u64> {
    let preparing = Instant::now();
    let addr = target.addr();
    // The echo needs the measured clinics only.
    let echo = o.scenario == Scenario::Echo;
    let shape = Shape {
        clinics: o.clinics,
        history_clinics: if echo { 0 } else { o.history_clinics },
        pharmacies: if echo { 0 } else { o.pharmacies },
        connections: o.connections,
    };
    let fleet = Fleet::connect(
        &Minter::from_dir(&o.tls_dir)?,
        shape,
        &addr,
        o.rpc_timeout(),
    )
    .await?;
    let (doctor, pharmacist) = o.signer.files();
    let signers = Signers::load(&o.hpki_dir, doctor, pharmacist)?;
    let plan = Plan {
        run: run_tag(),
        today: JapanDate::of(SystemTime::now()),
        signers: &signers,
        options: o,
    };
    let size = o.corpus_size();
    let mut setup = Setup::default();
    let corpus = if echo {
        Corpus::Echo(plan.echo_payloads(&fleet, ECHO_PAYLOADS)?)
    } else {
        (setup.history_registered, setup.history_dispensed) = plan.build_history(&fleet).await?;
        if o.scenario == Scenario::Check {
            Corpus::Checks(plan.checks(&fleet, size))
        } else {
            let mut registrations = plan.registrations(&fleet, size)?;
            setup.acks = corpus::acknowledge(&fleet, &mut registrations).await?;
            Corpus::Registrations(registrations)
        }
    };
    let connections = fleet.connection_count();
    let prepared_s = preparing.elapsed().as_secs_f64();
    if setup.acks == Acks::Unimplemented {
        eprintln!(
            "loadtest: note: the server answers CheckPrescription with UNIMPLEMENTED: the \
             triggering prescriptions go without acknowledgements"
        );
    }

    let workload = Arc::new(Workload::new(fleet, corpus));
    let window = Window {
        warmup: o.warmup(),
        duration: o.duration(),
    };
    let metrics = target.metrics(o);
    let before = read_metrics(metrics.as_deref()).await;
    let outcome = driver::run(o.load(), window, Arc::clone(&workload)).await?;
    let after = read_metrics(metrics.as_deref()).await;
    let server = before
        .zip(after)
        .map(|(before, after)| server::figures(&before, &after, o.scenario.rpcs()));
    let audit = audit::read_back(&workload.fleet, workload.acked()).await?;

    let mut notes = vec![
        format!(
            "rxgate load test: scenario {}, {}, measured {:.1} s (to the last answer) after {:.1} \
             s of warm-up",
            o.scenario.name(),
            match o.load() {
                Load::Open { rate, .. } => format!("open loop at {rate}/s"),
                Load::Closed { concurrency } => format!("closed loop, {concurrency} workers"),
            },
            outcome.measured.as_secs_f64(),
            o.warmup
        ),
        format!("target: {}", target.describe()),
        format!(
            "institutions: {} clinics, {} history clinics, {} pharmacies (certificates minted \
             from {}/ca.cert.pem), {} HTTP/2 connections",
            shape.clinics,
            shape.history_clinics,
            shape.pharmacies,
            o.tls_dir.display(),
            connections
        ),
        format!(
            "documents: signed before the clock by {} and {} ({}); setup took {prepared_s:.1} s",
            signers.doctor.practitioner.name,
            signers.pharmacist.practitioner.name,
            o.signer.describe(),
        ),
    ];
    if outcome.exhausted {
        notes.push(format!(
            "the {size} prepared operations ran out before the end (raise --corpus)"
        ));
    }
    if !echo {
        notes.extend(policy_notes(o, &setup));
    }
    let header = Header {
        scenario: o.scenario.name(),
        primary: match o.scenario {
            Scenario::Register => Rpc::Register,
            Scenario::FullFlow => Rpc::Flow,
            Scenario::Check => Rpc::Check,
            Scenario::Echo => Rpc::Echo,
            Scenario::Worst => unreachable!("the worst scenario reports on its own"),
        },
        rate_target: o.rate,
        concurrency: o.concurrency,
        warmup_s: o.warmup,
        settings: json!({
            "signer": o.signer.describe(),
            "clinics": shape.clinics,
            "history_clinics": shape.history_clinics,
            "pharmacies": shape.pharmacies,
            "connections": connections,
            "patients": o.patients,
            "history": o.history,
            "history_dispensed": o.history_dispensed,
            "findings": o.findings,
            "corpus": size,
            "corpus_exhausted": outcome.exhausted,
        }),
        notes,
    };
    report::print(&header, &workload.recorder, outcome.measured, audit, server);
    Ok(audit.lost)
}

/// The gateway's metrics, if it serves them where we know; a failure is said, not fatal.
async fn read_metrics(addr: Option<&str>) -> Option<server::Scrape> {
    match server::Scrape::read(addr?).await {
        Ok(scrape) => Some(scrape),
        Err(e) => {
            eprintln!("loadtest: note: no server-side figures: {e:#}");
            None
        }
    }
}

/// The histories, the findings and the server policy the run is under.
fn policy_notes(o: &Options, setup: &Setup) -> Vec<String> {
    let acks = match &setup.acks {
        Acks::NotNeeded => "none needed".to_owned(),
        Acks::Learnt {
            checks,
            registrations,
            acks,
        } => format!(
            "{acks} acknowledgements in {registrations} requests, learnt from {checks} \
             CheckPrescription calls"
        ),
        Acks::Unimplemented => {
            "none: the server answers CheckPrescription with UNIMPLEMENTED".to_owned()
        }
    };
    let mut notes = vec![
        format!(
            "history: {} patients, {} records each ({} registered, {} of them dispensed) by the \
             history clinics only",
            o.patients, o.history, setup.history_registered, setup.history_dispensed
        ),
        format!(
            "findings: {:.0}% of prescriptions are triazolam against an itraconazole history (a \
             critical contraindication), the rest amlodipine; acknowledgements: {acks}",
            o.findings * 100.0
        ),
        "policy (server defaults, assumed): override \"require-override\" (a critical finding \
         must be acknowledged, else FAILED_PRECONDITION); checked lines per patient per window \
         across institutions ([limits] patient_check_lines); per-institution in-flight and rate \
         limits ([network.fairness]); lookup lockout after 10 misses in 10 min; \
         same-institution history excluded; consent given (CONSENT_CARD) on every call"
            .to_owned(),
    ];
    if o.scenario == Scenario::Check {
        let limits = rxgate::limits::Limits::default();
        notes.push(format!(
            "check budget: at most {} one-line checks per {} s ({} patients × {} lines) before \
             RESOURCE_EXHAUSTED: measure with more patients, never a higher limit",
            o.patients * limits.patient_check_lines,
            limits.patient_check_window_secs,
            o.patients,
            limits.patient_check_lines
        ));
    }
    notes
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    if options.serve_echo {
        return match echo::serve(&options.tls_dir).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest --serve-echo: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let run = async {
        options.validate()?;
        if options.scenario == Scenario::Worst {
            return worst::run(&options).await.map(|()| 0);
        }
        let target = Target::start(&options).await?;
        let measured = measure(&options, &target).await;
        let stopped = target.stop().await;
        let lost = measured?;
        stopped?;
        anyhow::Ok(lost)
    };
    match run.await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(lost) => {
            eprintln!("loadtest: {lost} acknowledged registrations did not read back");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
