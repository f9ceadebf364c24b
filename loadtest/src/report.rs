//! What a run measured: per-RPC successes and latency (HDR histograms, µs), errors by status
//! code, findings seen; printed as a table and then one line of JSON with stable keys.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// What is timed. `Flow` is a whole full flow (register → lookup → receive → dispense).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rpc {
    Register,
    Lookup,
    Receive,
    Dispense,
    Check,
    Echo,
    Flow,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Register => "RegisterPrescription",
            Rpc::Lookup => "LookupPrescription",
            Rpc::Receive => "ReceivePrescription",
            Rpc::Dispense => "RecordDispensing",
            Rpc::Check => "CheckPrescription",
            Rpc::Echo => "Echo",
            Rpc::Flow => "full flow",
        }
    }
}

/// Latencies up to an hour, 3 significant digits.
const MAX_MICROS: u64 = 3_600_000_000;

struct Series {
    ok: u64,
    latency: Histogram<u64>,
}

impl Series {
    fn new() -> Self {
        Series {
            ok: 0,
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"),
        }
    }
}

#[derive(Default)]
struct Tally {
    series: BTreeMap<Rpc, Series>,
    /// (rpc, gRPC status code name) → count.
    errors: BTreeMap<(Rpc, String), u64>,
    /// Open loop: due operations not started because too many were in flight.
    dropped: u64,
    /// Registrations answered with at least one finding, with at least one critical finding,
    /// and the findings in all.
    with_findings: u64,
    with_critical: u64,
    findings: u64,
    warmup_ops: u64,
    warmup_errors: u64,
}

/// Collects results from every task. Only operations started in the measured window count; the
/// warm-up is only counted.
#[derive(Default)]
pub struct Recorder {
    tally: Mutex<Tally>,
}

impl Recorder {
    fn with<R>(&self, f: impl FnOnce(&mut Tally) -> R) -> R {
        f(&mut self.tally.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn ok(&self, rpc: Rpc, latency: Duration, measured: bool) {
        self.with(|t| {
            if !measured {
                t.warmup_ops += u64::from(rpc != Rpc::Flow);
                return;
            }
            let s = t.series.entry(rpc).or_insert_with(Series::new);
            s.ok += 1;
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            s.latency.saturating_record(micros.max(1));
        });
    }

    pub fn error(&self, rpc: Rpc, code: tonic::Code, measured: bool) {
        self.with(|t| {
            if measured {
                *t.errors.entry((rpc, format!("{code:?}"))).or_default() += 1;
            } else {
                t.warmup_errors += 1;
            }
        });
    }

    pub fn dropped(&self, measured: bool) {
        self.with(|t| t.dropped += u64::from(measured));
    }

    /// Counts the findings a measured registration was answered with: `critical` of `all`.
    pub fn findings(&self, all: usize, critical: usize, measured: bool) {
        if measured {
            self.with(|t| {
                t.with_findings += u64::from(all > 0);
                t.with_critical += u64::from(critical > 0);
                t.findings += all as u64;
            });
        }
    }
}

/// Context printed above the table and carried in the JSON.
pub struct Header {
    pub scenario: &'static str,
    /// The operation whose latency is the JSON's p50_ms … (register, full flow, check, echo).
    pub primary: Rpc,
    pub rate_target: Option<f64>,
    pub concurrency: Option<usize>,
    pub warmup_s: f64,
    /// The run's settings, carried in the JSON under `settings`.
    pub settings: Value,
    /// Lines describing the setup and the policy the run is under.
    pub notes: Vec<String>,
}

/// The audit's result.
#[derive(Debug, Default, Clone, Copy)]
pub struct Audit {
    pub acknowledged: u64,
    pub lost: u64,
}

/// The gateway's own figures, one line each.
fn print_server(server: &Value) {
    let millis = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.3} ms"));
    println!("server side (its /metrics before and after the load, warm-up included):");
    if let Some(rpcs) = server["rpcs"].as_object() {
        for (rpc, f) in rpcs {
            println!(
                "  {rpc:<22} {:>9.0} ok, mean {} inside the gateway",
                f["ok"].as_f64().unwrap_or_default(),
                millis(&f["mean_ms"])
            );
        }
    }
    println!(
        "  clinical check mean {}; {:.0} store flushes, mean {}; {} transactions per batch",
        millis(&server["check_mean_ms"]),
        server["flushes"].as_f64().unwrap_or_default(),
        millis(&server["flush_mean_ms"]),
        server["transactions_per_batch"]
            .as_f64()
            .map_or("-".to_owned(), |x| format!("{x:.1}"))
    );
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Prints the table, then the JSON line (last line of standard output). `server`: the gateway's
/// own figures over the run, if it could be read (see `server::figures`).
pub fn print(
    header: &Header,
    recorder: &Recorder,
    measured: Duration,
    audit: Audit,
    server: Option<Value>,
) -> Value {
    let seconds = measured.as_secs_f64();
    let t = recorder.tally.lock().unwrap_or_else(|e| e.into_inner());
    for note in &header.notes {
        println!("{note}");
    }
    println!();
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "rpc", "ok", "per s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    );
    let errors_of = |rpc: Rpc| -> u64 {
        t.errors
            .iter()
            .filter(|((r, _), _)| *r == rpc)
            .map(|(_, n)| n)
            .sum()
    };
    for (rpc, s) in &t.series {
        let q = |p: f64| ms(s.latency.value_at_quantile(p));
        println!(
            "{:<22} {:>9} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            rpc.name(),
            s.ok,
            s.ok as f64 / seconds,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            ms(s.latency.max()),
            errors_of(*rpc)
        );
    }
    let total_errors: u64 = t.errors.values().sum();
    if t.errors.is_empty() {
        println!("errors by status code: none");
    } else {
        println!("errors by status code:");
        for ((rpc, code), n) in &t.errors {
            println!("  {:<22} {code:<20} {n}", rpc.name());
        }
    }
    if t.dropped > 0 {
        println!(
            "dropped: {} due operations not started (over --max-in-flight)",
            t.dropped
        );
    }
    if t.series.contains_key(&Rpc::Register) {
        println!(
            "findings: {} registrations answered with findings ({} with a critical one), {} \
             findings in all",
            t.with_findings, t.with_critical, t.findings
        );
    }
    println!(
        "warm-up: {} calls ({} errors) not counted",
        t.warmup_ops, t.warmup_errors
    );
    println!(
        "audit: {} acknowledged registrations read back, lost {}",
        audit.acknowledged, audit.lost
    );
    if let Some(server) = &server {
        print_server(server);
    }

    let per_s = |rpc: Rpc| {
        t.series
            .get(&rpc)
            .map_or(Value::Null, |s| json!(s.ok as f64 / seconds))
    };
    let primary = t.series.get(&header.primary);
    let quantile =
        |p: f64| primary.map_or(Value::Null, |s| json!(ms(s.latency.value_at_quantile(p))));
    let errors_by_code: BTreeMap<String, u64> =
        t.errors
            .iter()
            .fold(BTreeMap::new(), |mut acc, ((_, code), n)| {
                *acc.entry(code.clone()).or_default() += n;
                acc
            });
    let summary = json!({
        "scenario": header.scenario,
        "rate_target": header.rate_target,
        "concurrency": header.concurrency,
        "duration_s": seconds,
        "warmup_s": header.warmup_s,
        "register_per_s": per_s(Rpc::Register),
        "full_flow_per_s": per_s(Rpc::Flow),
        "check_per_s": per_s(Rpc::Check),
        "echo_per_s": per_s(Rpc::Echo),
        "p50_ms": quantile(0.5),
        "p90_ms": quantile(0.9),
        "p99_ms": quantile(0.99),
        "p999_ms": quantile(0.999),
        "max_ms": primary.map_or(Value::Null, |s| json!(ms(s.latency.max()))),
        "errors": total_errors,
        "errors_by_code": errors_by_code,
        "dropped": t.dropped,
        "registrations_with_critical_findings": t.with_critical,
        "registrations_with_findings": t.with_findings,
        "findings_returned": t.findings,
        "acknowledged": audit.acknowledged,
        "lost": audit.lost,
        "settings": header.settings,
        "server": server,
    });
    println!("{summary}");
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_measured_window_is_recorded() {
        let r = Recorder::default();
        r.ok(Rpc::Register, Duration::from_millis(3), false);
        r.error(Rpc::Register, tonic::Code::Unavailable, false);
        for ms in 1..=100 {
            r.ok(Rpc::Register, Duration::from_millis(ms), true);
        }
        r.error(Rpc::Lookup, tonic::Code::NotFound, true);
        let header = Header {
            scenario: "register",
            primary: Rpc::Register,
            rate_target: Some(50.0),
            concurrency: None,
            warmup_s: 1.0,
            settings: json!({}),
            notes: vec![],
        };
        let v = print(&header, &r, Duration::from_secs(2), Audit::default(), None);
        assert_eq!(v["register_per_s"], json!(50.0));
        assert_eq!(v["full_flow_per_s"], Value::Null);
        assert_eq!(v["errors"], json!(1));
        assert_eq!(v["errors_by_code"]["NotFound"], json!(1));
        let p50 = v["p50_ms"].as_f64().unwrap();
        assert!((49.0..=51.0).contains(&p50), "{p50}");
        assert!((100.0..=100.1).contains(&v["max_ms"].as_f64().unwrap()));
    }
}
