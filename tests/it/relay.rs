//! The relay between two in-process gateways: dispensing records reach the upstream's
//! ManagementIntake in order, verified as of their original receipt even after an outage longer
//! than the signing-time window; a record refused for good is dead-lettered and does not block
//! the next. (The crash drill with real processes is in relay_drill.rs.)

use crate::common::{self, dev_pki};

use std::time::Duration;

use common::{Harness, intake_records, process::PortHold, start_with};
use rxgate::{config::RelayFiles, domain::signature::Role};

async fn dispense_one(h: &Harness, number: &str, n: u32) {
    let r = h.register_demo("clinic", number, n).await;
    h.receive_and_dispense_demo(number, n, &r.exchange_number)
        .await;
}

/// Waits until the downstream's metric line reads `expected`.
pub(crate) async fn until_metric(h: &Harness, expected: &str) {
    let prefix = expected.rsplit_once(' ').unwrap().0;
    let mut last = String::new();
    for _ in 0..300 {
        last = h.metrics_line(&format!("{prefix} ")).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{expected:?} never came; last {last:?}");
}

/// The prescription numbers the upstream holds, in arrival order.
async fn upstream_numbers(upstream: &common::Stopped) -> Vec<String> {
    intake_records(upstream)
        .await
        .into_iter()
        .map(|r| r.record.number)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_upstream_once_in_order_and_refusals_are_dead_lettered() {
    // The downstream names the upstream's address, and the upstream restarts on it: held for the
    // whole test, so that nothing else takes it in between.
    let hold = PortHold::new();
    let port = hold.addr().port();
    // The upstream first trusts no pharmacist role: it refuses records for good.
    let upstream = start_with(|c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.roles.retain(|r| r.role != Role::Pharmacist);
    })
    .await;
    let downstream = start_with(|c| {
        c.relay = Some(RelayFiles::dev(
            format!("https://127.0.0.1:{port}"),
            &dev_pki(),
        ));
    })
    .await;
    dispense_one(&downstream, "RL-1", 1).await;
    until_metric(&downstream, "rxgate_relay_dead_letters_total 1").await;
    until_metric(&downstream, "rxgate_relay_lag_events 0").await;

    // The upstream comes back two days later (beyond the 24-hour signing-time window), with the
    // role: the next records are delivered, verified as of their receipt.
    upstream
        .clock
        .set(upstream.now() + Duration::from_secs(2 * 86_400));
    let default_roles = rxgate::config::Config::dev("unused".into(), &dev_pki()).roles;
    let upstream = upstream.restart_with(|c| c.roles = default_roles).await;
    dispense_one(&downstream, "RL-2", 2).await;
    dispense_one(&downstream, "RL-3", 3).await;
    // Three records, three events each. (Waiting for "lag 0" instead could read the gauge as
    // the relay left it before the last event was written.)
    until_metric(&downstream, "rxgate_relay_acked_sequence 9").await;
    until_metric(&downstream, "rxgate_relay_lag_events 0").await;
    assert_eq!(
        downstream.metrics_line("rxgate_relay_up ").await,
        "rxgate_relay_up 1"
    );
    downstream.shutdown().await;
    let upstream = upstream.stop().await;
    assert_eq!(upstream_numbers(&upstream).await, ["RL-2", "RL-3"]);
}
