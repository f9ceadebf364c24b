//! The gateway's own figures: its `/metrics` (Prometheus text over plain HTTP) read before and
//! after the load; the report gives what changed in between (warm-up included).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One reading of the metrics: sample name with its labels → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    /// Reads `http://{addr}/metrics`.
    pub async fn read(addr: &str) -> anyhow::Result<Scrape> {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the metrics port {addr}"))?;
        stream
            .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let Some((head, body)) = response.split_once("\r\n\r\n") else {
            bail!("{addr}: not an HTTP response");
        };
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("{addr}: {}", head.lines().next().unwrap_or_default());
        }
        Ok(Scrape::parse(body))
    }

    /// The samples of a Prometheus text page (comments and malformed lines skipped).
    pub fn parse(text: &str) -> Scrape {
        Scrape(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    fn get(&self, sample: &str) -> f64 {
        self.0.get(sample).copied().unwrap_or(0.0)
    }
}

/// What the gateway says happened between `before` and `after`: the scenario's RPCs (answers
/// and mean latency inside the server), the clinical check, the store's flushes and batches.
pub fn figures(before: &Scrape, after: &Scrape, rpcs: &[&str]) -> Value {
    let delta = |sample: &str| after.get(sample) - before.get(sample);
    let mean_ms = |histogram: &str, labels: &str| {
        let count = delta(&format!("{histogram}_count{labels}"));
        (count > 0.0).then(|| 1000.0 * delta(&format!("{histogram}_sum{labels}")) / count)
    };
    let per_rpc: BTreeMap<&str, Value> = rpcs
        .iter()
        .map(|rpc| {
            let labels = format!("{{rpc=\"{rpc}\"}}");
            let answered = delta(&format!(
                "rxgate_requests_total{{rpc=\"{rpc}\",code=\"OK\"}}"
            ));
            let value = json!({
                "ok": answered,
                "mean_ms": mean_ms("rxgate_request_duration_seconds", &labels),
            });
            (*rpc, value)
        })
        .collect();
    let flushes = delta("rxgate_store_flush_duration_seconds_count");
    let batches = delta("rxgate_store_batch_size_count");
    json!({
        "rpcs": per_rpc,
        "check_mean_ms": mean_ms("rxgate_check_duration_seconds", ""),
        "flushes": flushes,
        "flush_mean_ms": mean_ms("rxgate_store_flush_duration_seconds", ""),
        "transactions_per_batch": (batches > 0.0)
            .then(|| delta("rxgate_store_batch_size_sum") / batches),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_the_differences_between_two_readings() {
        let before = Scrape::parse(
            "# HELP x y\n\
             rxgate_requests_total{rpc=\"RegisterPrescription\",code=\"OK\"} 10\n\
             rxgate_request_duration_seconds_sum{rpc=\"RegisterPrescription\"} 1\n\
             rxgate_request_duration_seconds_count{rpc=\"RegisterPrescription\"} 10\n\
             rxgate_store_batch_size_sum 10\n\
             rxgate_store_batch_size_count 5\n",
        );
        let after = Scrape::parse(
            "rxgate_requests_total{rpc=\"RegisterPrescription\",code=\"OK\"} 110\n\
             rxgate_request_duration_seconds_sum{rpc=\"RegisterPrescription\"} 1.5\n\
             rxgate_request_duration_seconds_count{rpc=\"RegisterPrescription\"} 110\n\
             rxgate_store_flush_duration_seconds_sum 0.03125\n\
             rxgate_store_flush_duration_seconds_count 25\n\
             rxgate_store_batch_size_sum 110\n\
             rxgate_store_batch_size_count 15\n\
             malformed\n",
        );
        let f = figures(&before, &after, &["RegisterPrescription"]);
        assert_eq!(f["rpcs"]["RegisterPrescription"]["ok"], json!(100.0));
        assert_eq!(f["rpcs"]["RegisterPrescription"]["mean_ms"], json!(5.0));
        assert_eq!(f["flush_mean_ms"], json!(1.25));
        assert_eq!(f["transactions_per_batch"], json!(10.0));
        assert_eq!(f["check_mean_ms"], Value::Null);
    }
}
