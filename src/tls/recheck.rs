//! Open connections held to the client-certificate policy in force: when the TLS configuration
//! is reloaded (a changed CRL above all), each open connection checks its client certificate
//! chain again with the new verifier, as a new handshake would be checked, and learns whether it
//! must close. Knows rustls's verifier and tokio's watch channel; no IO.

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
use tokio::sync::watch;

/// The client verifier in force, replaced at each reload.
pub(crate) type VerifierInForce = Arc<dyn ClientCertVerifier>;

type Next = Pin<Box<dyn Future<Output = Option<Reloaded>> + Send>>;
type Reloaded = (watch::Receiver<VerifierInForce>, VerifierInForce);

/// One connection's view of the reloads.
pub(crate) struct Recheck {
    state: State,
}

enum State {
    Waiting(Next),
    /// The reloads are over (the server's TLS configuration is gone).
    Done,
    Refused(rustls::Error),
}

async fn next_reload(mut reloads: watch::Receiver<VerifierInForce>) -> Option<Reloaded> {
    reloads.changed().await.ok()?;
    let verifier = Arc::clone(&reloads.borrow_and_update());
    Some((reloads, verifier))
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
            let next = match &mut self.state {
                State::Refused(why) => return Poll::Ready(why.clone()),
                State::Done => return Poll::Pending,
                State::Waiting(next) => next,
            };
            let Poll::Ready(reloaded) = next.as_mut().poll(cx) else {
                return Poll::Pending;
            };
            self.state = match (reloaded, chain) {
                (None, _) => State::Done,
                (Some(_), []) => State::Refused(rustls::Error::NoCertificatesPresented),
                (Some((reloads, verifier)), [end_entity, intermediates @ ..]) => {
                    match verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
                        Ok(_) => State::Waiting(Box::pin(next_reload(reloads))),
                        Err(why) => State::Refused(why),
                    }
                }
            };
        }
    }
}
