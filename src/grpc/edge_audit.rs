//! A tower layer that audits every request on an authenticated connection that no handler
//! audits: those refused before a handler runs (an unknown method, an undecodable, oversize or
//! compressed body, a fairness limit, the cap on health and reflection streams) and those the
//! health and reflection services answer. A handler audits its own call (in its transaction);
//! it says it has begun to by [`Reached::mark`]. A handler's call answered DEADLINE_EXCEEDED by
//! the server's deadline is recorded here too: the handler may have been dropped before its
//! record. A connection's first `per_second` such requests of each second get a record each,
//! written before the answer is released; the rest are counted ([`crate::tally`]) and their
//! counts written as one record at most a second later, so a flood cannot become a flood of
//! writes. Must not depend on the store.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio_util::task::TaskTracker;
use tonic::{Code, Request, Status, codegen::http};

use crate::{
    log_throttle::LogThrottle,
    metrics::{Rpc, code_name},
    service::{Caller, Gateway},
    tally::{Admit, Tally},
    tls::ConnectionInfo,
};

/// The action of a request whose path names no known method (the path is its target).
const UNKNOWN_METHOD: &str = "UnknownMethod";
/// The most bytes of a path or a status message a record keeps.
const KEPT_BYTES: usize = 120;
/// How long the counts of a connection gather before they are written.
const COUNTING: Duration = Duration::from_secs(1);

static UNWRITTEN: LogThrottle = LogThrottle::new(Duration::from_secs(10));

/// Set in a request's extensions; a handler marks it when it takes over the request's audit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reached(Arc<AtomicBool>);

impl Reached {
    /// Says that the handler of `request` audits it.
    pub(crate) fn mark<T>(request: &Request<T>) {
        if let Some(reached) = request.extensions().get::<Reached>() {
            reached.0.store(true, Ordering::Relaxed);
        }
    }
}

/// What the layer writes with and how much.
#[derive(Clone)]
pub struct EdgeAuditLayer {
    gateway: Arc<Gateway>,
    per_second: u32,
    /// The counts not yet written: the server waits for them before the store closes.
    pending: TaskTracker,
}

impl EdgeAuditLayer {
    pub fn new(gateway: Arc<Gateway>, per_second: u32) -> Self {
        EdgeAuditLayer {
            gateway,
            per_second,
            pending: TaskTracker::new(),
        }
    }

    /// Waits until every count taken so far is written (or has failed, and said so).
    pub async fn written(&self) {
        self.pending.close();
        self.pending.wait().await;
    }

    /// Audits a request of `caller` on a connection with `tally`, answered with `status`.
    async fn audit(&self, caller: Caller, tally: Arc<Tally>, path: &str, status: Option<Status>) {
        let rpc = Rpc::of_path(path);
        let (action, target) = if rpc == Rpc::UNKNOWN {
            (UNKNOWN_METHOD, Some(kept(path).to_owned()))
        } else {
            (rpc.as_str(), None)
        };
        let code = status.as_ref().map_or("OK", |s| code_name_of(s.code()));
        let now_ms = self.gateway.now_ms();
        match tally.admit(now_ms, self.per_second, action, code) {
            Admit::Record => {
                let outcome = match &status {
                    Some(s) if !s.message().is_empty() => format!("{code} {}", kept(s.message())),
                    _ => code.to_owned(),
                };
                let written = (self.gateway)
                    .audit_edge(&caller, action.to_owned(), target, outcome)
                    .await;
                if let Err(e) = written {
                    unwritten(&e, 1);
                }
            }
            Admit::Counted { first: true } => {
                let gateway = Arc::clone(&self.gateway);
                self.pending.spawn(async move {
                    tokio::time::sleep(COUNTING).await;
                    if let Some(counts) = tally.take() {
                        let n = counts.counts.values().sum();
                        if let Err(e) = gateway.audit_counted(&caller, counts).await {
                            unwritten(&e, n);
                        }
                    }
                });
            }
            Admit::Counted { first: false } => {}
        }
    }
}

/// Says that `requests` audit records could not be written (without the requests' contents).
fn unwritten(error: &impl std::fmt::Display, requests: u64) {
    if let Some(left_out) = UNWRITTEN.allow() {
        tracing::error!(%error, requests, left_out,
            "the audit record of requests answered at the edge could not be written");
    }
}

/// The name of `code` as audit outcomes spell it.
fn code_name_of(code: Code) -> &'static str {
    code_name(&(code as i32).to_string())
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
        let reached = Reached::default();
        request.extensions_mut().insert(reached.clone());
        let connection = ConnectionInfo::of(&request).map(|c| {
            let caller = Caller {
                institution: c.peer.institution.clone(),
                certificate_sha256: c.peer.certificate_sha256,
            };
            (caller, Arc::clone(&c.edge_audit))
        });
        let path = request.uri().path().to_owned();
        let answer = self.inner.call(request);
        let layer = self.layer.clone();
        Box::pin(async move {
            let response = answer.await?;
            if let Some((caller, tally)) = connection {
                // A trailers-only answer carries its status in the headers.
                let status = Status::from_header_map(response.headers());
                let timed_out = status
                    .as_ref()
                    .is_some_and(|s| s.code() == Code::DeadlineExceeded);
                if !reached.0.load(Ordering::Relaxed) || timed_out {
                    layer.audit(caller, tally, &path, status).await;
                }
            }
            Ok(response)
        })
    }
}
