//! The command line: what to measure, against what, under which load. Parsing only: no IO.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use rxgate::limits::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load test of the rxgate gateway over mutual TLS, with an echo ceiling"
)]
pub struct Options {
    /// What each operation does.
    #[arg(long, value_enum, default_value = "register")]
    pub scenario: Scenario,

    /// Open loop: start this many operations per second at fixed intervals, whatever the
    /// answers (latency is measured from the intended start, so queueing is not hidden).
    #[arg(
        long,
        conflicts_with = "concurrency",
        required_unless_present_any = ["concurrency", "serve_echo", "repetitions"]
    )]
    pub rate: Option<f64>,
    /// Closed loop: this many workers, each starting its next operation when the last ends.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (run, not recorded).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Operations to prepare (documents to sign). Default: enough for the open-loop rate, or
    /// 6,000 per second of run in closed loop; a closed loop that uses them all ends early and
    /// says so.
    #[arg(long)]
    pub corpus: Option<usize>,
    /// Open loop: operations in flight beyond which a due operation is dropped (and counted as
    /// dropped) instead of started.
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Seconds before a call is given up (client side).
    #[arg(long, default_value_t = 30.0)]
    pub rpc_timeout: f64,

    /// Start a `rxgate serve --dev` on a temporary data folder and measure it (instead of --addr);
    /// with `--scenario echo`, run the echo server as a process of its own (else in this one).
    #[arg(long)]
    pub spawn: bool,
    /// Serve the bare echo only, until standard input closes (what `--scenario echo --spawn`
    /// starts); prints `echo listening addr=HOST:PORT` first.
    #[arg(long, hide = true)]
    pub serve_echo: bool,
    /// With --spawn: the rxgate binary (default: `rxgate` beside this binary).
    #[arg(long, requires = "spawn")]
    pub rxgate_bin: Option<PathBuf>,
    /// The gateway to measure; or several gateways of one fleet, comma-separated, over which
    /// each group's connections are spread in turn (institution by institution), as a TCP load
    /// balancer would spread them.
    #[arg(
        long,
        default_value = "https://127.0.0.1:50051",
        conflicts_with = "spawn"
    )]
    pub addr: String,
    /// Where the measured gateway serves `GET /metrics` (HOST:PORT), read before and after the
    /// load for the server-side figures. With --spawn: the spawned gateway's own.
    #[arg(long, conflicts_with = "spawn")]
    pub metrics: Option<String>,
    /// The institution TLS PKI (default: the development PKI, relative to the working directory:
    /// run from the repository root): `ca.cert.pem` (trusted for the server certificate, and the
    /// issuer of the minted institution certificates, with `ca.key.pem`); the echo server also
    /// serves `server.cert.pem` / `server.key.pem` and checks `ca.crl.pem`, as the gateway does.
    #[arg(long, default_value = "certs/tls")]
    pub tls_dir: PathBuf,
    /// The HPKI signing certificates (doctor[-ec], pharmacist[-ec], sign-ca.cert.pem; default:
    /// the development PKI, relative to the working directory).
    #[arg(long, default_value = "certs/hpki")]
    pub hpki_dir: PathBuf,
    /// The signers' key type: RSA 2048 (doctor, pharmacist), as HPKI signing certificates are
    /// (the MEDIS test certificate is RSA 2048 with SHA-256), or ECDSA P-256 (doctor-ec,
    /// pharmacist-ec), which the gateway also accepts: its verification costs the gateway about
    /// twice as much, its signing costs the preparation far less.
    #[arg(long, value_enum, default_value = "rsa")]
    pub signer: SignerKind,

    /// Prescribing institutions that send the measured prescriptions (one certificate each).
    #[arg(long, default_value_t = 32)]
    pub clinics: usize,
    /// Other clinics whose prescriptions make up the patients' histories (never the measured
    /// clinics, so that the same-institution exclusion leaves the whole history to check).
    #[arg(long, default_value_t = 8)]
    pub history_clinics: usize,
    /// Pharmacies (one certificate each).
    #[arg(long, default_value_t = 32)]
    pub pharmacies: usize,
    /// HTTP/2 connections per institution.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,

    /// Patients; operation i is for patient i mod N.
    #[arg(long, default_value_t = 1000)]
    pub patients: usize,
    /// Records in each patient's history before the run (registered by the history clinics).
    #[arg(long, default_value_t = 20)]
    pub history: usize,
    /// Share of the history records that are also dispensed (lookup, receive, dispense).
    #[arg(long, default_value_t = 0.25, value_parser = share)]
    pub history_dispensed: f64,
    /// Share of the measured prescriptions that trigger a critical finding (a contraindicated
    /// pair with the patient's history), sent with acknowledgements of every critical finding.
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    pub findings: f64,

    /// `--scenario worst`: how many times each worst request is sent (each time for patients of
    /// its own, so that no per-patient check budget is spent out).
    #[arg(long, conflicts_with_all = ["rate", "concurrency"])]
    pub repetitions: Option<usize>,
    /// `--scenario worst`: lines per prescription and draft, and the history bound, that the run
    /// drives to; other than the gateway's defaults, the spawned gateway is configured with
    /// them (`[limits]` prescription_lines and history_entries_per_patient).
    #[arg(long, default_value_t = Limits::default().prescription_lines)]
    pub lines: usize,
    #[arg(long, default_value_t = Limits::default().history_entries_per_patient)]
    pub history_entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// RegisterPrescription only.
    Register,
    /// RegisterPrescription → LookupPrescription → ReceivePrescription → RecordDispensing.
    FullFlow,
    /// CheckPrescription only (an unsigned draft; rate-limited per institution and patient).
    Check,
    /// A bare unary echo of a registration-sized payload, served in-process over the same mutual
    /// TLS: the ceiling the gateway's rate is compared with.
    Echo,
    /// The worst CheckPrescription, RegisterPrescription and ReceivePrescription the limits
    /// allow, one at a time, `--repetitions` times each, with the gateway's memory (`--spawn`).
    Worst,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::FullFlow => "full-flow",
            Scenario::Check => "check",
            Scenario::Echo => "echo",
            Scenario::Worst => "worst",
        }
    }

    /// The gateway RPCs one operation calls, as the gateway's metrics name them.
    pub fn rpcs(self) -> &'static [&'static str] {
        match self {
            Scenario::Register => &["RegisterPrescription"],
            Scenario::FullFlow => &[
                "RegisterPrescription",
                "LookupPrescription",
                "ReceivePrescription",
                "RecordDispensing",
            ],
            Scenario::Check => &["CheckPrescription"],
            Scenario::Echo => &[],
            Scenario::Worst => &[
                "CheckPrescription",
                "RegisterPrescription",
                "ReceivePrescription",
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignerKind {
    /// ECDSA P-256 (doctor-ec, pharmacist-ec).
    Ec,
    /// RSA 2048 (doctor, pharmacist).
    Rsa,
}

impl SignerKind {
    /// The file stems of the prescribing doctor and the dispensing pharmacist in `--hpki-dir`.
    pub fn files(self) -> (&'static str, &'static str) {
        match self {
            SignerKind::Ec => ("doctor-ec", "pharmacist-ec"),
            SignerKind::Rsa => ("doctor", "pharmacist"),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            SignerKind::Ec => "ECDSA P-256",
            SignerKind::Rsa => "RSA 2048",
        }
    }
}

/// How operations are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    Open { rate: f64, max_in_flight: usize },
    Closed { concurrency: usize },
}

impl Options {
    pub fn load(&self) -> Load {
        match (self.rate, self.concurrency) {
            (Some(rate), _) => Load::Open {
                rate,
                max_in_flight: self.max_in_flight,
            },
            (None, Some(concurrency)) => Load::Closed { concurrency },
            (None, None) => unreachable!("clap requires --rate, --concurrency or --repetitions"),
        }
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.rpc_timeout)
    }

    /// How many operations to prepare.
    pub fn corpus_size(&self) -> usize {
        let seconds = self.warmup + self.duration;
        self.corpus.unwrap_or_else(|| match self.load() {
            // A little slack: a late timer never runs out of documents.
            Load::Open { rate, .. } => (rate * seconds * 1.02).ceil() as usize + 16,
            Load::Closed { .. } => (6000.0 * seconds).ceil() as usize,
        })
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.duration > 0.0, "--duration must be positive");
        anyhow::ensure!(self.warmup >= 0.0, "--warmup must not be negative");
        anyhow::ensure!(self.rpc_timeout > 0.0, "--rpc-timeout must be positive");
        if let Some(rate) = self.rate {
            anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
        }
        if let Some(c) = self.concurrency {
            anyhow::ensure!(c > 0, "--concurrency must be positive");
        }
        for (name, n) in [
            ("--clinics", self.clinics),
            ("--history-clinics", self.history_clinics),
            ("--pharmacies", self.pharmacies),
            ("--connections", self.connections),
            ("--patients", self.patients),
        ] {
            anyhow::ensure!(n > 0, "{name} must be positive");
        }
        anyhow::ensure!(
            self.findings == 0.0 || self.history > 0 || self.scenario == Scenario::Echo,
            "--findings needs a history to trigger on (--history 1 or more)"
        );
        anyhow::ensure!(
            (self.scenario == Scenario::Worst) == self.repetitions.is_some(),
            "--scenario worst takes --repetitions (and no --rate or --concurrency), no other \
             scenario does"
        );
        if self.scenario == Scenario::Worst {
            self.validate_worst()?;
        }
        Ok(())
    }

    /// The worst scenario's sizes: a spawned gateway, whole prescriptions in the history.
    fn validate_worst(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.spawn,
            "--scenario worst needs --spawn (it reads the gateway's memory)"
        );
        anyhow::ensure!(self.repetitions > Some(0), "--repetitions must be positive");
        anyhow::ensure!(
            self.lines > 0 && self.history_entries.is_multiple_of(self.lines),
            "--history-entries must be a multiple of --lines"
        );
        anyhow::ensure!(
            self.history_entries >= 2 * self.lines,
            "--history-entries must hold two prescriptions of --lines"
        );
        Ok(())
    }
}

fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err("a share between 0 and 1".into())
    }
}

/// Whether item `i` of a sequence is one of the `share` picked: spreads them evenly, without
/// randomness (item i is picked when ⌊(i+1)·share⌋ > ⌊i·share⌋).
pub fn picked(i: usize, share: f64) -> bool {
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_spreads_the_share_evenly() {
        for (share, n, expected) in [(0.0, 100, 0), (0.1, 100, 10), (0.25, 20, 5), (1.0, 7, 7)] {
            assert_eq!((0..n).filter(|&i| picked(i, share)).count(), expected);
        }
        // Evenly: one in every ten, not the first ten.
        assert_eq!(
            (0..30).filter(|&i| picked(i, 0.1)).collect::<Vec<_>>(),
            [9, 19, 29]
        );
    }

    #[test]
    fn open_loop_corpus_covers_the_run() {
        let o = Options::parse_from(["loadtest", "--rate", "100", "--duration", "5"]);
        assert_eq!(
            o.load(),
            Load::Open {
                rate: 100.0,
                max_in_flight: 4096
            }
        );
        assert!(o.corpus_size() >= 700);
        o.validate().unwrap();
    }

    #[test]
    fn a_load_shape_is_required_and_exclusive() {
        assert!(Options::try_parse_from(["loadtest"]).is_err());
        assert!(
            Options::try_parse_from(["loadtest", "--rate", "1", "--concurrency", "2"]).is_err()
        );
        assert!(Options::try_parse_from(["loadtest", "--findings", "1.5", "--rate", "1"]).is_err());
    }

    #[test]
    fn the_worst_scenario_takes_repetitions_a_spawned_gateway_and_whole_prescriptions() {
        let parse = |args: &[&str]| {
            let base = ["loadtest", "--scenario", "worst", "--repetitions", "2"];
            Options::try_parse_from(base.iter().chain(args)).map(|o| o.validate())
        };
        assert!(parse(&["--spawn"]).unwrap().is_ok());
        assert!(parse(&[]).unwrap().is_err(), "no --spawn");
        assert!(parse(&["--spawn", "--rate", "1"]).is_err());
        let parts = ["--spawn", "--lines", "64", "--history-entries", "100"];
        assert!(parse(&parts).unwrap().is_err());
        let register = ["loadtest", "--repetitions", "2"];
        assert!(Options::parse_from(register).validate().is_err());
    }
}
