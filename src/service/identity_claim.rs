//! One process per `[gateway]` identity over a store. A gateway writes audit chains named by
//! its identity (`audit_chain`, a chain per lane), and only one process may extend them: two
//! processes with one identity over a shared database would number the same links, and the
//! database would refuse every second one (the call failing). So a gateway holds the lease of
//! its identity while it runs: at start it waits, at most about a term, for the claim of an
//! earlier process with that identity to run out (one killed before it could give it up), and
//! refuses to start if the claim is renewed meanwhile (another process runs with the identity);
//! it renews the claim every third of a term, and gives it up when it stops. On an embedded
//! store, which one process opens at a time, a claim left behind is taken at once
//! (`Gateway::take_lease`), and `app.rs` renews none.

use std::time::Duration;

use crate::domain::hash::hex;

use super::{Error, Gateway, Tenure};

/// How long a claim holds unless renewed: the longest a gateway restarted after being killed
/// waits at start.
pub const IDENTITY_TERM: Duration = Duration::from_secs(10);

/// The refusal of a start while another process runs with the identity.
const TAKEN: &str = "another process with this [gateway] identity runs over this store: give \
                     each gateway of a fleet an identity of its own (docs/OPERATIONS.md, Several \
                     gateways)";

impl Gateway {
    /// The lease of this gateway's identity.
    fn identity_lease(&self) -> String {
        format!("identity {}", hex(&self.config.audit_writer))
    }

    /// Claims this gateway's identity, waiting while an earlier claim runs out; refuses
    /// (FAILED_PRECONDITION) if another process keeps renewing it.
    pub async fn claim_identity(&self) -> Result<(), Error> {
        let lease = self.identity_lease();
        let started = tokio::time::Instant::now();
        loop {
            let Tenure::Elsewhere { expires_ms, .. } =
                self.take_lease(&lease, IDENTITY_TERM).await?
            else {
                return Ok(());
            };
            if started.elapsed() > IDENTITY_TERM + IDENTITY_TERM / 3 {
                return Err(Error::FailedPrecondition(TAKEN.into()));
            }
            let left =
                Duration::from_millis(expires_ms.saturating_sub(self.now_ms()).max(0) as u64);
            tracing::warn!(
                left_ms = left.as_millis() as u64,
                "an earlier claim on this [gateway] identity holds; waiting for it to run out"
            );
            tokio::time::sleep(left.min(IDENTITY_TERM / 3) + Duration::from_millis(100)).await;
        }
    }

    /// Renews the claim every third of its term for as long as the gateway runs; returns only
    /// if another process took it (this one could not renew it for a whole term): the gateway
    /// then ends, for two processes must not write one identity's chains. A renewal that fails
    /// is logged and tried again at the next turn.
    pub async fn keep_identity_claim(&self) {
        let lease = self.identity_lease();
        loop {
            tokio::time::sleep(IDENTITY_TERM / 3).await;
            match self.take_lease(&lease, IDENTITY_TERM).await {
                Ok(Tenure::Held { .. }) => {}
                Ok(Tenure::Elsewhere { .. }) => {
                    tracing::error!("{TAKEN}; this gateway stops");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the claim on the identity failed"),
            }
        }
    }

    /// Gives the claim up, so that the identity's next process starts at once.
    pub async fn release_identity_claim(&self) -> Result<(), Error> {
        self.release_lease(&self.identity_lease()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::service::testing::{self, Twice};

    /// Two processes of one identity over a store run side by side: the second waits out the
    /// first's claim while it is renewed and is refused; once the first gives it up, the
    /// second claims it at once.
    #[tokio::test(start_paused = true)]
    async fn a_second_process_of_an_identity_is_refused_until_the_first_gives_it_up() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::store::Store> = Arc::new(Twice::side_by_side(
            crate::store::EmbeddedStore::open(dir.path()).unwrap(),
        ));
        let first = testing::gateway_over(Arc::clone(&store)).0;
        let second = testing::gateway_over(store).0;
        first.claim_identity().await.unwrap();
        let keeper = {
            let first = Arc::clone(&first);
            tokio::spawn(async move { first.keep_identity_claim().await })
        };
        let refused = second.claim_identity().await;
        assert!(
            matches!(&refused, Err(Error::FailedPrecondition(why)) if why == TAKEN),
            "{refused:?}"
        );
        keeper.abort();
        first.release_identity_claim().await.unwrap();
        second.claim_identity().await.unwrap();
    }
}
