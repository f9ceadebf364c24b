//! A tower layer that audits every request on an authenticated connection whose handler does
//! not: those refused before a handler runs (an unknown method, an undecodable, oversize or
//! compressed body, a fairness limit, the cap on health and reflection streams), those the health
//! and reflection services answer, and those given up (cancelled by the client, its
//! `grpc-timeout`, or the server's deadline) before their handler submitted its record. A
//! handler audits its own call, in its transaction; the service says so through the request's
//! [`AuditReceipt`], which this layer puts in the request and [`super::authenticated`] hands on.
//!
//! A client (one certificate, however many connections) gets `per_second` such records a
//! second, each written before its answer is released, on a tracked task that finishes it even
//! if the answer is dropped meanwhile (for a request given up, at once on such a task); the rest of its second are counted ([`crate::tally`]) and written as one
//! record at most a second later, so a flood cannot become a flood of writes. Must not depend on
//! the store.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio_util::task::TaskTracker;
use tonic::{Status, codegen::http};

use crate::{
    log_throttle::LogThrottle,
    metrics::{Rpc, code_name},
    service::{AuditReceipt, Caller, Gateway},
    tally::{Admit, Tallies, Tally},
    tls::ConnectionInfo,
};

/// The action of a request whose path names no known method (the path is its target).
const UNKNOWN_METHOD: &str = "UnknownMethod";
/// The most bytes of a path or a status message a record keeps.
const KEPT_BYTES: usize = 120;
/// How long the counts of a client gather before they are written.
const COUNTING: Duration = Duration::from_secs(1);

static UNWRITTEN: LogThrottle = LogThrottle::new(Duration::from_secs(10));
/// Requests whose record (or count) could not be written since the last line said so.
static UNWRITTEN_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// What the layer writes with and how much.
#[derive(Clone)]
pub struct EdgeAuditLayer {
    shared: Arc<Shared>,
}

struct Shared {
    gateway: Arc<Gateway>,
    per_second: u32,
    tallies: Tallies,
    /// The start of the monotonic seconds the tallies count in.
    started: Instant,
    /// The writes not waited for (counts, records of requests given up): the server waits for
    /// them before the store closes.
    pending: TaskTracker,
}

/// One request as the layer audits it, if it must.
struct Audited {
    shared: Arc<Shared>,
    caller: Caller,
    tally: Arc<Tally>,
    path: String,
}

impl EdgeAuditLayer {
    pub fn new(gateway: Arc<Gateway>, per_second: u32) -> Self {
        let shared = Shared {
            gateway,
            per_second,
            tallies: Tallies::default(),
            started: Instant::now(),
            pending: TaskTracker::new(),
        };
        EdgeAuditLayer {
            shared: Arc::new(shared),
        }
    }

    /// Waits until every write begun so far has ended (written, or failed and said so).
    pub async fn written(&self) {
        self.shared.pending.close();
        self.shared.pending.wait().await;
    }

    /// What auditing `request` takes, if it came on an authenticated connection.
    fn begin<B>(&self, request: &http::Request<B>, receipt: &AuditReceipt) -> Option<Audited> {
        let peer = &ConnectionInfo::of(request)?.peer;
        let second = self.shared.started.elapsed().as_secs();
        Some(Audited {
            shared: Arc::clone(&self.shared),
            caller: Caller {
                institution: peer.institution.clone(),
                certificate_sha256: peer.certificate_sha256,
                receipt: receipt.clone(),
            },
            tally: self.shared.tallies.of(peer.certificate_sha256, second),
            path: request.uri().path().to_owned(),
        })
    }
}

impl Audited {
    /// The record of a request answered with `status` (`None`: an answer begun, its status in
    /// the trailers): written now when the client's second has room (the returned future), else
    /// counted.
    fn record(&self, status: Option<&Status>) -> Option<impl Future<Output = ()> + use<>> {
        let rpc = Rpc::of_path(&self.path);
        let (action, target) = if rpc == Rpc::UNKNOWN {
            (UNKNOWN_METHOD, Some(kept(&self.path).to_owned()))
        } else {
            (rpc.as_str(), None)
        };
        let code = status.map_or("OK", |s| code_name(&(s.code() as i32).to_string()));
        let shared = &self.shared;
        let when = (shared.started.elapsed().as_secs(), shared.gateway.now_ms());
        match self.tally.admit(when, shared.per_second, action, code) {
            Admit::Record => {
                let outcome = match status {
                    Some(s) if !s.message().is_empty() => format!("{code} {}", kept(s.message())),
                    _ => code.to_owned(),
                };
                let (gateway, caller) = (Arc::clone(&shared.gateway), self.caller.clone());
                Some(async move {
                    let written = gateway
                        .audit_edge(&caller, action.to_owned(), target, outcome)
                        .await;
                    if let Err(e) = written {
                        unwritten(&e, 1);
                    }
                })
            }
            Admit::Counted { first: true } => {
                let (gateway, caller) = (Arc::clone(&shared.gateway), self.caller.clone());
                let tally = Arc::clone(&self.tally);
                shared.pending.spawn(async move {
                    tokio::time::sleep(COUNTING).await;
                    if let Some(counts) = tally.take() {
                        let n = counts.counts.values().sum();
                        if let Err(e) = gateway.audit_counted(&caller, counts).await {
                            unwritten(&e, n);
                        }
                    }
                });
                None
            }
            Admit::Counted { first: false } => None,
        }
    }
}

/// A request in progress: if it is dropped before its answer (the client cancelled it, or its
/// `grpc-timeout` ran out) and its handler never submitted a record, it is recorded CANCELLED.
struct InProgress(Option<Audited>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let Some(audited) = self.0.take() else {
            return;
        };
        if !audited.caller.receipt.submitted() {
            let cancelled = Status::cancelled("given up before an answer");
            if let Some(write) = audited.record(Some(&cancelled)) {
                audited.shared.pending.spawn(write);
            }
        }
    }
}

/// Says that `requests` requests' audit record could not be written (without their contents).
fn unwritten(error: &impl std::fmt::Display, requests: u64) {
    UNWRITTEN_REQUESTS.fetch_add(requests, Ordering::Relaxed);
    if let Some(left_out) = UNWRITTEN.allow() {
        let requests = UNWRITTEN_REQUESTS.swap(0, Ordering::Relaxed);
        tracing::error!(%error, requests, left_out,
            "the audit records of requests answered at the edge could not be written");
    }
}

/// At most [`KEPT_BYTES`] of `text`, cut at a character boundary.
fn kept(text: &str) -> &str {
    let mut end = text.len().min(KEPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl<S> tower::Layer<S> for EdgeAuditLayer {
    type Service = EdgeAudited<S>;

    fn layer(&self, inner: S) -> EdgeAudited<S> {
        EdgeAudited {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct EdgeAudited<S> {
    inner: S,
    layer: EdgeAuditLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for EdgeAudited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let receipt = AuditReceipt::default();
        request.extensions_mut().insert(receipt.clone());
        let mut in_progress = InProgress(self.layer.begin(&request, &receipt));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if let Some(audited) = in_progress.0.take()
                && !receipt.submitted()
            {
                // A trailers-only answer carries its status in the headers.
                let status = Status::from_header_map(response.headers());
                if let Some(write) = audited.record(status.as_ref()) {
                    // On a tracked task of its own: the answer still waits for its record, but
                    // an answer dropped meanwhile (its client gone) no longer takes the record
                    // with it, after the tally had counted it as written.
                    let _ = audited.shared.pending.spawn(write).await;
                }
            }
            Ok(response)
        })
    }
}
