//! The keeper of the relay's lease: takes it, or renews it, every third of its term, and says
//! whether this gateway holds it to the relay (a watch) and to the metrics
//! (`rxgate_relay_lease_held`). Knows the service's lease calls and tokio, nothing of gRPC.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior},
};

use crate::{
    domain::hash::hex,
    service::{Gateway, Tenure},
};

/// Keeps the relay's lease of term `term` for as long as it runs, saying on `held` whether
/// this gateway holds it. While the store cannot be asked, the lease counts as held until the
/// term of its last renewal would run out before the next look, by the steady clock: by then
/// another gateway may take it.
pub(super) async fn keep(gateway: Arc<Gateway>, term: Duration, held: watch::Sender<bool>) {
    let every = term / 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut until = Instant::now();
    let mut told = None;
    loop {
        tick.tick().await;
        let asked = Instant::now();
        let (holds, holder) = match gateway.take_relay_lease(term).await {
            Ok(Tenure::Held { .. }) => {
                until = asked + term;
                (true, None)
            }
            Ok(Tenure::Elsewhere { gateway, .. }) => (false, Some(gateway)),
            Err(e) => {
                tracing::warn!(error = %e, "relay: renewing the lease failed");
                (Instant::now() + every < until, None)
            }
        };
        held.send_replace(holds);
        gateway
            .metrics()
            .relay_lease_held
            .store(u64::from(holds), Ordering::Relaxed);
        if told != Some(holds) {
            told = Some(holds);
            match holder {
                Some(holder) => tracing::info!(
                    holder = %hex(&holder),
                    "relay: another gateway holds the lease; this one waits"
                ),
                None => tracing::info!(held = holds, "relay: the lease changed hands"),
            }
        }
    }
}
