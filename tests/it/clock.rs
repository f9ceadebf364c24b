//! Clock steps: the expiry sweep writes EXPIRED for good, so it must not act on a wall clock
//! stepped forward against the steady clock (the harness's `ManualClock::step` moves the wall
//! clock alone). Held, it is seen in the metrics; it acts again when the wall clock comes back or
//! once an operator confirms the clock, through the RPC or `rxgate admin confirm-clock`, which is
//! audited.

use crate::{
    cli::{operator_cli, stdout},
    common::{Harness, start_with},
};

use std::time::{Duration, SystemTime};

use rxgate::wire::proto::v1::{self as pb, admin_service_client::AdminServiceClient};

const FOUR_DAYS: Duration = Duration::from_secs(4 * 86_400);

async fn start() -> Harness {
    start_with(|c| c.expiry_sweep_secs = 1).await
}

/// The value of the metric `name` (0 when it is not shown).
async fn metric(h: &Harness, name: &str) -> u64 {
    let line = h.metrics_line(&format!("{name} ")).await;
    line.rsplit(' ').next().unwrap().parse().unwrap_or(0)
}

/// Waits until the metric `name` satisfies `done` (the sweep runs every second); its value.
async fn until(h: &Harness, name: &str, done: impl Fn(u64) -> bool) -> u64 {
    let mut last = 0;
    for _ in 0..300 {
        last = metric(h, name).await;
        if done(last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never came to the expected value; last {last}");
}

/// Waits until an expiry sweep has run (not held) after this call.
async fn a_sweep_ran(h: &Harness) {
    // Two more: the first may have read the clock before the caller changed it.
    let before = metric(h, "rxgate_expiry_sweeps_total").await;
    until(h, "rxgate_expiry_sweeps_total", |n| n > before + 1).await;
}

/// Steps the wall clock to `to` and waits until the sweep holds on it; the step it shows.
async fn stepped_and_held(h: &Harness, to: SystemTime) -> u64 {
    h.clock.step(to);
    until(h, "rxgate_expiry_sweep_held", |held| held == 1).await;
    metric(h, "rxgate_clock_step_seconds").await
}

async fn state(h: &Harness, id: &str) -> i32 {
    h.clinic("clinic")
        .await
        .get_prescription_status(pb::GetPrescriptionStatusRequest {
            prescription_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .state
}

/// The audit records of ConfirmClock calls: (caller's institution kind, target, outcome).
async fn confirmations(h: &Harness) -> Vec<(String, String, String)> {
    h.audit_records()
        .await
        .into_iter()
        .filter(|r| r.action == "ConfirmClock")
        .map(|r| (r.institution_kind, r.target, r.outcome))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_step_holds_the_sweep_until_the_clock_comes_back_or_is_confirmed() {
    let h = start().await;
    let rx = h.register_demo("clinic", "STEP-1", 1).await;
    let (id, now) = (rx.prescription_id, h.now());
    a_sweep_ran(&h).await;

    // Four days ahead the prescription is past its last usable day, but the sweep holds.
    assert_eq!(stepped_and_held(&h, now + FOUR_DAYS).await, 4 * 86_400);
    // The wall clock comes back: the sweep runs again by itself and nothing was expired.
    h.clock.step(now);
    a_sweep_ran(&h).await;
    assert_eq!(metric(&h, "rxgate_expiry_sweep_held").await, 0);
    assert_eq!(metric(&h, "rxgate_clock_step_seconds").await, 0);
    assert_eq!(
        state(&h, &id).await,
        pb::PrescriptionState::Registered as i32
    );

    // Stepped forward again and confirmed by the operator: the sweep acts on the new time, so
    // that the prescription stays EXPIRED when the wall clock is set back (a backward step
    // holds nothing).
    assert_eq!(stepped_and_held(&h, now + FOUR_DAYS).await, 4 * 86_400);
    let mut admin = AdminServiceClient::new(h.channel("operator").await);
    let confirmed = admin
        .confirm_clock(pb::ConfirmClockRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(confirmed.step_secs, 4 * 86_400);
    let expected_ms = (now + FOUR_DAYS)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(confirmed.wall_clock_unix_ms as u128, expected_ms);
    a_sweep_ran(&h).await;
    h.clock.step(now);
    a_sweep_ran(&h).await;
    assert_eq!(metric(&h, "rxgate_expiry_sweep_held").await, 0);
    assert_eq!(state(&h, &id).await, pb::PrescriptionState::Expired as i32);
    assert_eq!(
        confirmations(&h).await,
        [("operator".into(), "clock step 345600 s".into(), "OK".into())]
    );

    // Only an operator may confirm, and the refusal is audited too.
    let mut clinic = AdminServiceClient::new(h.channel("clinic").await);
    let refused = clinic
        .confirm_clock(pb::ConfirmClockRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(confirmations(&h).await.len(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_passing_on_both_clocks_never_holds_the_sweep() {
    let h = start().await;
    let rx = h.register_demo("clinic", "PASS-1", 2).await;
    a_sweep_ran(&h).await;
    h.clock.set(h.now() + FOUR_DAYS);
    a_sweep_ran(&h).await;
    assert_eq!(metric(&h, "rxgate_expiry_sweep_held").await, 0);
    // Written by the sweep: still EXPIRED with the wall clock set back.
    h.clock.step(h.now() - FOUR_DAYS);
    a_sweep_ran(&h).await;
    let state = state(&h, &rx.prescription_id).await;
    assert_eq!(state, pb::PrescriptionState::Expired as i32);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rxgate_admin_confirm_clock_lets_the_held_sweep_act() {
    let h = start().await;
    a_sweep_ran(&h).await;
    let step = stepped_and_held(&h, h.now() + FOUR_DAYS).await;
    assert_eq!(step, 4 * 86_400);
    let out = operator_cli(&h, &["admin", "confirm-clock"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("345600 s ahead of the steady clock"),
        "{out:?}"
    );
    a_sweep_ran(&h).await;
    assert_eq!(metric(&h, "rxgate_expiry_sweep_held").await, 0);
    assert_eq!(
        confirmations(&h).await,
        [("operator".into(), "clock step 345600 s".into(), "OK".into())]
    );
    h.shutdown().await;
}
