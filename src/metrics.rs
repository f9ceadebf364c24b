//! Operational metrics in the Prometheus text format: request counts and latency by RPC and
//! status code, store commits (flush latency, batch size), check latency and the chain cache.
//! Plain atomics and one mutex-guarded map; no IO here (app.rs serves the text on a local port).

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Latency buckets, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Batch-size buckets (transactions per store batch).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A cumulative histogram over fixed upper bounds, lock-free.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One counter per bound, and one for +Inf.
    counts: Vec<AtomicU64>,
    /// The sum of observations, in millionths of the unit.
    sum_micros: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative), the last one above every bound.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Writes one histogram in the text format; `labels` is empty or `key="value",...`.
pub fn write_histogram(out: &mut String, name: &str, labels: &str, s: &Snapshot) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (bound, count) in s.bounds.iter().zip(&s.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
        s.count()
    );
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {}", braces(labels), s.sum);
    let _ = writeln!(out, "{name}_count{} {}", braces(labels), s.count());
}

/// Writes a metric's HELP and TYPE lines.
pub fn write_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The gateway's own metrics (the store and the verifier keep theirs).
#[derive(Debug)]
pub struct Metrics {
    /// (RPC, gRPC status code name) → requests answered.
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// RPC → latency from the request to the end of the response.
    latency: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
    /// Time one clinical check takes (reading the history and checking).
    pub check: Histogram,
    /// Prescriptions stuck at a pharmacy, as last counted.
    pub stuck: AtomicU64,
    /// The relay: the last acknowledged event sequence, events behind, whether the upstream
    /// answers, and the records dead-lettered since start.
    pub relay_acked: AtomicU64,
    pub relay_lag: AtomicU64,
    pub relay_up: AtomicU64,
    pub relay_dead_letters: AtomicU64,
    /// TLS handshakes that failed (timed out, broken, certificate refused); shared with the
    /// accept loop.
    pub tls_handshake_failures: std::sync::Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(BTreeMap::new()),
            check: Histogram::new(LATENCY_BUCKETS),
            stuck: AtomicU64::new(0),
            relay_acked: AtomicU64::new(0),
            relay_lag: AtomicU64::new(0),
            relay_up: AtomicU64::new(0),
            relay_dead_letters: AtomicU64::new(0),
            tls_handshake_failures: std::sync::Arc::default(),
        }
    }
}

/// The name of a gRPC status code as a number on the wire (`grpc-status`).
pub fn code_name(code: &str) -> &'static str {
    match code {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, rpc: &str, code: &'static str, took: Duration) {
        {
            let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            *requests.entry((rpc.to_owned(), code)).or_default() += 1;
        }
        let histogram = {
            let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            std::sync::Arc::clone(
                latency
                    .entry(rpc.to_owned())
                    .or_insert_with(|| std::sync::Arc::new(Histogram::new(LATENCY_BUCKETS))),
            )
        };
        histogram.observe_duration(took);
    }

    /// The gateway's metrics in the text format.
    pub fn render(&self, out: &mut String) {
        write_header(
            out,
            "rxgate_requests_total",
            "counter",
            "gRPC requests answered, by RPC and status code.",
        );
        for ((rpc, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "rxgate_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}} {n}"
            );
        }
        write_header(
            out,
            "rxgate_request_duration_seconds",
            "histogram",
            "gRPC request latency, from the request to the end of the response, by RPC.",
        );
        let latency: Vec<_> = self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(rpc, h)| (rpc.clone(), h.snapshot()))
            .collect();
        for (rpc, snapshot) in latency {
            write_histogram(
                out,
                "rxgate_request_duration_seconds",
                &format!("rpc=\"{rpc}\""),
                &snapshot,
            );
        }
        write_header(
            out,
            "rxgate_check_duration_seconds",
            "histogram",
            "One clinical check: reading the patient's history and checking.",
        );
        write_histogram(
            out,
            "rxgate_check_duration_seconds",
            "",
            &self.check.snapshot(),
        );
        write_header(
            out,
            "rxgate_stuck_prescriptions",
            "gauge",
            "Prescriptions accepted without a dispensing record for longer than the threshold.",
        );
        let _ = writeln!(
            out,
            "rxgate_stuck_prescriptions {}",
            self.stuck.load(Ordering::Relaxed)
        );
        for (name, kind, help, value) in [
            (
                "rxgate_relay_acked_sequence",
                "gauge",
                "The last event sequence the upstream acknowledged.",
                &self.relay_acked,
            ),
            (
                "rxgate_relay_lag_events",
                "gauge",
                "Events written but not yet relayed.",
                &self.relay_lag,
            ),
            (
                "rxgate_relay_up",
                "gauge",
                "1 while the upstream takes records, 0 while the relay retries.",
                &self.relay_up,
            ),
            (
                "rxgate_relay_dead_letters_total",
                "counter",
                "Dispensing records the upstream refused for good since start.",
                &self.relay_dead_letters,
            ),
            (
                "rxgate_tls_handshake_failures_total",
                "counter",
                "TLS handshakes that timed out, broke off or refused the client certificate.",
                self.tls_handshake_failures.as_ref(),
            ),
        ] {
            write_header(out, name, kind, help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(0.005);
        h.observe(0.05);
        h.observe(5.0);
        let mut out = String::new();
        write_histogram(&mut out, "x", "rpc=\"A\"", &h.snapshot());
        assert_eq!(
            out,
            "x_bucket{rpc=\"A\",le=\"0.01\"} 1\nx_bucket{rpc=\"A\",le=\"0.1\"} 2\n\
             x_bucket{rpc=\"A\",le=\"+Inf\"} 3\nx_sum{rpc=\"A\"} 5.055\nx_count{rpc=\"A\"} 3\n"
        );
    }

    #[test]
    fn requests_are_counted_by_rpc_and_code() {
        let m = Metrics::default();
        m.request("Register", "OK", Duration::from_millis(2));
        m.request("Register", "OK", Duration::from_millis(3));
        m.request("Register", "INVALID_ARGUMENT", Duration::from_millis(1));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("rxgate_requests_total{rpc=\"Register\",code=\"OK\"} 2\n"));
        assert!(
            out.contains("rxgate_requests_total{rpc=\"Register\",code=\"INVALID_ARGUMENT\"} 1\n")
        );
        assert!(out.contains("rxgate_request_duration_seconds_count{rpc=\"Register\"} 3\n"));
        assert_eq!(code_name("9"), "FAILED_PRECONDITION");
    }
}
