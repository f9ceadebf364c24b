//! Open connections held to the client-certificate policy in force: when the TLS configuration
//! is reloaded (a changed CRL above all), each open connection checks its client certificate
//! chain again with the new verifier, as a new handshake would be checked, and learns whether it
//! must close. A check verifies a chain and, with CRLs, a CRL's signature over all its bytes: a
//! reload with thousands of connections and a large CRL is seconds of work, so the checks run on
//! the blocking pool, [`AT_ONCE`] at a time, never on the async runtime. Knows rustls's verifier
//! and tokio; no IO.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::{
    pki_types::{CertificateDer, UnixTime},
    server::danger::ClientCertVerifier,
};
use tokio::sync::{Semaphore, watch};

/// The client verifier in force, replaced at each reload.
pub(crate) type VerifierInForce = Arc<dyn ClientCertVerifier>;

type Next = Pin<Box<dyn Future<Output = Option<Reloaded>> + Send>>;
type Reloaded = (watch::Receiver<VerifierInForce>, VerifierInForce);
type Checking = Pin<Box<dyn Future<Output = Checked> + Send>>;
type Checked = (watch::Receiver<VerifierInForce>, Result<(), rustls::Error>);

/// Rechecks that run at once, across all connections: one core's worth, the other left to the
/// requests.
const AT_ONCE: usize = 1;
static RECHECKS: Semaphore = Semaphore::const_new(AT_ONCE);

/// One connection's view of the reloads.
pub(crate) struct Recheck {
    state: State,
}

enum State {
    Waiting(Next),
    Checking(Checking),
    /// The reloads are over (the server's TLS configuration is gone).
    Done,
    Refused(rustls::Error),
}

async fn next_reload(mut reloads: watch::Receiver<VerifierInForce>) -> Option<Reloaded> {
    reloads.changed().await.ok()?;
    let verifier = Arc::clone(&reloads.borrow_and_update());
    Some((reloads, verifier))
}

/// Checks `chain` (the end-entity certificate, then its intermediates) with `verifier` on the
/// blocking pool, when its turn comes.
async fn check((reloads, verifier): Reloaded, chain: Vec<CertificateDer<'static>>) -> Checked {
    let _turn = RECHECKS.acquire().await;
    let verified = tokio::task::spawn_blocking(move || match chain.as_slice() {
        [] => Err(rustls::Error::NoCertificatesPresented),
        [end_entity, intermediates @ ..] => verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map(|_| ()),
    })
    .await
    .unwrap_or_else(|e| Err(rustls::Error::General(format!("recheck failed: {e}"))));
    (reloads, verified)
}

impl Recheck {
    /// Follows `reloads` from the verifier the connection's handshake used.
    pub(crate) fn new(reloads: watch::Receiver<VerifierInForce>) -> Self {
        Recheck {
            state: State::Waiting(Box::pin(next_reload(reloads))),
        }
    }

    /// Ready with the reason once a reload's verifier refuses `chain` (the end-entity
    /// certificate, then its intermediates), and ever after; pending otherwise.
    pub(crate) fn poll_refused(
        &mut self,
        cx: &mut Context<'_>,
        chain: &[CertificateDer<'_>],
    ) -> Poll<rustls::Error> {
        loop {
            self.state = match &mut self.state {
                State::Refused(why) => return Poll::Ready(why.clone()),
                State::Done => return Poll::Pending,
                State::Waiting(next) => match next.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => State::Done,
                    Poll::Ready(Some(reloaded)) => {
                        let owned = chain.iter().map(|c| c.clone().into_owned()).collect();
                        State::Checking(Box::pin(check(reloaded, owned)))
                    }
                },
                State::Checking(checking) => match checking.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready((_, Err(why))) => State::Refused(why),
                    Poll::Ready((reloads, Ok(()))) => {
                        State::Waiting(Box::pin(next_reload(reloads)))
                    }
                },
            };
        }
    }
}
