//! The gateway's operational metrics: request counts and latency by RPC and status code, check
//! latency, stuck prescriptions, lockouts, the relay and the expiry sweep's clock watch, with what every metric needs to be written in
//! the Prometheus text format through `prometheus-client` (which names, escapes and lays out
//! the lines). Labels come only from fixed sets ([`Rpc`], the gRPC code names): never from a
//! client's text, an institution or a patient. No IO here, and no knowledge of gRPC or HTTP
//! (`ops` serves the page).

mod histogram;
mod rpc;

pub use histogram::{Histogram, LATENCY_BUCKETS, SIZE_BUCKETS, Snapshot};
pub use rpc::Rpc;

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
    },
};

/// The labels of an answered request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    rpc: &'static str,
    code: &'static str,
}

/// The label of a per-RPC histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByRpc {
    rpc: &'static str,
}

/// The gateway's own metrics (the store and the verifier keep theirs).
#[derive(Debug)]
pub struct Metrics {
    /// (RPC, gRPC status code name) → requests answered.
    requests: Family<Answered, Counter>,
    /// RPC → latency from the request to the end of the response.
    latency: Family<ByRpc, Histogram, fn() -> Histogram>,
    /// Time one clinical check takes (reading the history and checking).
    pub check: Histogram,
    /// Prescriptions stuck at a pharmacy, as last counted.
    pub stuck: AtomicU64,
    /// The expiry sweep: sweeps run since start; 1 while it is held on a forward step of the
    /// wall clock, and that step in seconds (0 when not held).
    pub expiry_sweeps: AtomicU64,
    pub expiry_sweep_held: AtomicU64,
    pub clock_step_secs: AtomicU64,
    /// The relay: the last acknowledged event sequence, events behind, whether the upstream
    /// answers, and the records dead-lettered since start.
    pub relay_acked: AtomicU64,
    pub relay_lag: AtomicU64,
    pub relay_up: AtomicU64,
    pub relay_dead_letters: AtomicU64,
    /// 1 while this gateway holds the relay's lease: in a fleet, one gateway relays at a time.
    pub relay_lease_held: AtomicU64,
    /// Exchange-number lockouts tripped since start: of a pharmacy, of a patient.
    pub pharmacy_lockouts: AtomicU64,
    pub patient_lockouts: AtomicU64,
    /// TLS handshakes that failed (timed out, broken, certificate refused); shared with the
    /// accept loop.
    pub tls_handshake_failures: std::sync::Arc<AtomicU64>,
    /// The data disk as the disk watch last measured it: bytes free, the low-water mark in
    /// bytes, and 1 while new data is refused for want of room.
    pub disk_free_bytes: AtomicU64,
    pub disk_low_water_bytes: AtomicU64,
    pub disk_low_water: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(Histogram::latency),
            check: Histogram::latency(),
            stuck: AtomicU64::new(0),
            expiry_sweeps: AtomicU64::new(0),
            expiry_sweep_held: AtomicU64::new(0),
            clock_step_secs: AtomicU64::new(0),
            relay_acked: AtomicU64::new(0),
            relay_lag: AtomicU64::new(0),
            relay_up: AtomicU64::new(0),
            relay_dead_letters: AtomicU64::new(0),
            relay_lease_held: AtomicU64::new(0),
            pharmacy_lockouts: AtomicU64::new(0),
            patient_lockouts: AtomicU64::new(0),
            tls_handshake_failures: std::sync::Arc::default(),
            disk_free_bytes: AtomicU64::new(0),
            disk_low_water_bytes: AtomicU64::new(0),
            disk_low_water: AtomicU64::new(0),
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

/// Writes `metric` with its HELP and TYPE lines. Counters are named without `_total`: the
/// encoder adds it.
pub(crate) fn describe(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> fmt::Result {
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A gauge of a value kept in an atomic.
fn gauge(value: &AtomicU64) -> ConstGauge<u64> {
    ConstGauge::new(value.load(Ordering::Relaxed))
}

impl Metrics {
    /// Counts one answered request. `code` is a name from [`code_name`].
    pub fn request(&self, rpc: Rpc, code: &'static str, took: Duration) {
        let rpc = rpc.as_str();
        self.requests.get_or_create(&Answered { rpc, code }).inc();
        self.latency
            .get_or_create(&ByRpc { rpc })
            .observe_duration(took);
    }

    /// Writes the gateway's metrics.
    pub fn encode(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        describe(
            out,
            "rxgate_requests",
            "gRPC requests answered, by RPC and status code.",
            &self.requests,
        )?;
        describe(
            out,
            "rxgate_request_duration_seconds",
            "gRPC request latency, from the request to the end of the response, by RPC.",
            &self.latency,
        )?;
        describe(
            out,
            "rxgate_check_duration_seconds",
            "One clinical check: reading the patient's history and checking.",
            &self.check,
        )?;
        describe(
            out,
            "rxgate_stuck_prescriptions",
            "Prescriptions accepted without a dispensing record for longer than the threshold.",
            &gauge(&self.stuck),
        )?;
        self.encode_expiry_sweep(out)?;
        self.encode_disk(out)?;
        self.encode_relay_and_tls(out)
    }

    fn encode_disk(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        for (name, help, value) in [
            (
                "rxgate_disk_free_bytes",
                "Bytes free on the data folder's file system, as last measured.",
                &self.disk_free_bytes,
            ),
            (
                "rxgate_disk_low_water_mark_bytes",
                "The free-space low-water mark in bytes (store_low_water_mib, \
                 store_low_water_percent).",
                &self.disk_low_water_bytes,
            ),
            (
                "rxgate_disk_low_water",
                "1 while the data disk is below its low-water mark and new data is refused.",
                &self.disk_low_water,
            ),
        ] {
            describe(out, name, help, &gauge(value))?;
        }
        Ok(())
    }

    fn encode_expiry_sweep(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        describe(
            out,
            "rxgate_expiry_sweeps",
            "Expiry sweeps run since start (a held one is not counted).",
            &ConstCounter::new(self.expiry_sweeps.load(Ordering::Relaxed)),
        )?;
        describe(
            out,
            "rxgate_expiry_sweep_held",
            "1 while the expiry sweep is held on a forward step of the wall clock beyond \
             clock_step_tolerance_secs (until it comes back or `rxgate admin confirm-clock`).",
            &gauge(&self.expiry_sweep_held),
        )?;
        describe(
            out,
            "rxgate_clock_step_seconds",
            "How far the wall clock stands ahead of the steady clock since the last expiry sweep, \
             while the sweep is held on it (0 otherwise).",
            &gauge(&self.clock_step_secs),
        )
    }

    fn encode_relay_and_tls(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        for (name, help, value) in [
            (
                "rxgate_relay_acked_sequence",
                "The last event sequence the upstream acknowledged.",
                &self.relay_acked,
            ),
            (
                "rxgate_relay_lag_events",
                "Events written but not yet relayed.",
                &self.relay_lag,
            ),
            (
                "rxgate_relay_up",
                "1 while the upstream takes records, 0 while the relay retries.",
                &self.relay_up,
            ),
            (
                "rxgate_relay_lease_held",
                "1 while this gateway holds the relay's lease and so relays, 0 while another \
                 gateway of the fleet does.",
                &self.relay_lease_held,
            ),
        ] {
            describe(out, name, help, &gauge(value))?;
        }
        let counters = [
            (
                "rxgate_relay_dead_letters",
                "Dispensing records the upstream refused for good since start.",
                &self.relay_dead_letters,
            ),
            (
                "rxgate_pharmacy_lockouts",
                "Pharmacies locked out for too many wrong exchange numbers, since start.",
                &self.pharmacy_lockouts,
            ),
            (
                "rxgate_patient_lockouts",
                "Patients locked for the pharmacies that sent too many wrong exchange numbers \
                 naming them, since start.",
                &self.patient_lockouts,
            ),
            (
                "rxgate_tls_handshake_failures",
                "TLS handshakes that timed out, broke off or refused the client certificate.",
                self.tls_handshake_failures.as_ref(),
            ),
        ];
        for (name, help, value) in counters {
            let count = ConstCounter::new(value.load(Ordering::Relaxed));
            describe(out, name, help, &count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{collector::Collector, encoding::prometheus_text, registry::Registry};

    use super::*;

    /// The gateway's metrics as /metrics shows them.
    #[derive(Debug, Default)]
    struct Page(std::sync::Arc<Metrics>);

    impl Collector for Page {
        fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
            self.0.encode(&mut out)
        }
    }

    fn text(metrics: &std::sync::Arc<Metrics>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Page(std::sync::Arc::clone(metrics))));
        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn histograms_write_cumulative_buckets_sum_and_count() {
        let metrics = std::sync::Arc::new(Metrics::default());
        for seconds in [0.00005, 0.003, 5.0] {
            metrics.check.observe(seconds);
        }
        let out = text(&metrics);
        for line in [
            "# TYPE rxgate_check_duration_seconds histogram\n",
            "rxgate_check_duration_seconds_bucket{le=\"0.0001\"} 1\n",
            "rxgate_check_duration_seconds_bucket{le=\"0.0025\"} 1\n",
            "rxgate_check_duration_seconds_bucket{le=\"0.005\"} 2\n",
            "rxgate_check_duration_seconds_bucket{le=\"2.5\"} 2\n",
            "rxgate_check_duration_seconds_bucket{le=\"+Inf\"} 3\n",
            "rxgate_check_duration_seconds_sum 5.00305\n",
            "rxgate_check_duration_seconds_count 3\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
    }

    #[test]
    fn requests_are_counted_by_known_rpc_and_code_and_the_rest_as_unknown() {
        let metrics = std::sync::Arc::new(Metrics::default());
        let register = Rpc::of_path("/rxgate.v1.PrescriptionService/RegisterPrescription");
        metrics.request(register, "OK", Duration::from_millis(2));
        metrics.request(register, "OK", Duration::from_millis(3));
        metrics.request(register, "INVALID_ARGUMENT", Duration::from_millis(1));
        for path in ["/x/a\"b\\c\nd", "/rxgate.v1.PrescriptionService/1310000001"] {
            metrics.request(Rpc::of_path(path), code_name("12"), Duration::ZERO);
        }
        metrics.relay_dead_letters.store(4, Ordering::Relaxed);
        metrics.expiry_sweeps.store(3, Ordering::Relaxed);
        metrics.clock_step_secs.store(345_600, Ordering::Relaxed);
        metrics.disk_free_bytes.store(7 << 20, Ordering::Relaxed);
        metrics.disk_low_water.store(1, Ordering::Relaxed);
        let out = text(&metrics);
        for line in [
            "# HELP rxgate_requests_total gRPC requests answered, by RPC and status code.\n",
            "# TYPE rxgate_requests_total counter\n",
            "rxgate_requests_total{rpc=\"RegisterPrescription\",code=\"OK\"} 2\n",
            "rxgate_requests_total{rpc=\"RegisterPrescription\",code=\"INVALID_ARGUMENT\"} 1\n",
            "rxgate_requests_total{rpc=\"unknown\",code=\"UNIMPLEMENTED\"} 2\n",
            "rxgate_request_duration_seconds_count{rpc=\"RegisterPrescription\"} 3\n",
            "rxgate_request_duration_seconds_count{rpc=\"unknown\"} 2\n",
            "rxgate_relay_dead_letters_total 4\n",
            "rxgate_relay_up 0\n",
            "rxgate_relay_lease_held 0\n",
            "rxgate_expiry_sweeps_total 3\n",
            "rxgate_expiry_sweep_held 0\n",
            "rxgate_clock_step_seconds 345600\n",
            "rxgate_disk_free_bytes 7340032\n",
            "rxgate_disk_low_water 1\n",
            "rxgate_disk_low_water_mark_bytes 0\n",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
        assert_eq!(out.matches("rpc=").count(), 3 + 2 * 17, "{out}");
        assert_eq!(code_name("9"), "FAILED_PRECONDITION");
    }
}
