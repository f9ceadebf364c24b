//! A tower layer that lets a [`Guard`] decide on each request before its handler runs: refuse it
//! with a status (answered at once, before the body is read), or run it while holding something
//! (a place, dropped when the handler answers) and, if the guard says so, within a deadline
//! (past it the call is answered DEADLINE_EXCEEDED and its handler dropped). The fairness limits
//! and the unary deadline are guards. Must not depend on the service layer or the store.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::{Status, codegen::http};

/// What a guard lets a request run with.
#[derive(Debug)]
pub(crate) struct Pass<H> {
    /// Held until the handler answers.
    pub(crate) hold: H,
    pub(crate) deadline: Option<Duration>,
}

/// A decision on each request.
pub(crate) trait Guard: Clone + Send + Sync + 'static {
    /// What a running request holds.
    type Hold: Send + 'static;

    /// Lets `request` run, or refuses it with a status.
    fn decide<B>(&self, request: &http::Request<B>) -> Result<Pass<Self::Hold>, Status>;
}

#[derive(Debug, Clone)]
pub(crate) struct GuardLayer<G> {
    guard: G,
}

impl<G> GuardLayer<G> {
    pub(crate) fn new(guard: G) -> Self {
        GuardLayer { guard }
    }
}

impl<S, G: Clone> tower::Layer<S> for GuardLayer<G> {
    type Service = Guarded<S, G>;

    fn layer(&self, inner: S) -> Guarded<S, G> {
        Guarded {
            inner,
            guard: self.guard.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Guarded<S, G> {
    inner: S,
    guard: G,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, G, B, R> tower::Service<http::Request<B>> for Guarded<S, G>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    G: Guard,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let pass = match self.guard.decide(&request) {
            Ok(pass) => pass,
            Err(status) => return Box::pin(std::future::ready(Ok(status.into_http()))),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let Pass { hold, deadline } = pass;
            let answered = match deadline {
                None => answer.await,
                Some(deadline) => match tokio::time::timeout(deadline, answer).await {
                    Ok(answered) => answered,
                    Err(_elapsed) => Ok(Status::deadline_exceeded(format!(
                        "no answer within the server's deadline of {} ms",
                        deadline.as_millis()
                    ))
                    .into_http()),
                },
            };
            drop(hold);
            answered
        })
    }
}
