//! A tower layer that lets a [`Guard`] decide on each request before its handler runs: refuse it
//! with a status (answered at once, before the body is read), or run it while holding something
//! (a place) and, if the guard says so, within a deadline (past it the call is answered
//! DEADLINE_EXCEEDED and its handler dropped). What a request holds is given back when its
//! handler answers, or — for what must bound answers a client never reads, and streams — only
//! when the answer's body ends or is dropped (read whole, the stream reset, the connection
//! closed). The fairness limits, the unary deadline, the count of a connection's open streams
//! and the cap on health and reflection streams are guards. Must not depend on the service
//! layer or the store.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::{
    Status,
    body::Body,
    codegen::{Bytes, http},
};

/// What a guard lets a request run with.
#[derive(Debug)]
pub(crate) struct Pass<H> {
    pub(crate) hold: H,
    /// Until when `hold` is held.
    pub(crate) until: Until,
    pub(crate) deadline: Option<Duration>,
}

/// How long a request holds what its guard gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Until the handler answers (the response headers).
    Answered,
    /// Until the answer's body ends or is dropped.
    BodyEnds,
}

/// A decision on each request.
pub(crate) trait Guard: Clone + Send + Sync + 'static {
    /// What a running request holds.
    type Hold: Send + Unpin + 'static;

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

impl<S, G, B> tower::Service<http::Request<B>> for Guarded<S, G>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    G: Guard,
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
            let Pass {
                hold,
                until,
                deadline,
            } = pass;
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
            match until {
                Until::Answered => answered,
                Until::BodyEnds => answered.map(|response| {
                    response.map(|inner| {
                        Body::new(HeldBody {
                            inner,
                            hold: Some(hold),
                        })
                    })
                }),
            }
        })
    }
}

/// An answer's body that holds `hold` until it ends (its last frame taken) or is dropped.
struct HeldBody<H> {
    inner: Body,
    hold: Option<H>,
}

impl<H: Send + Unpin + 'static> http_body::Body for HeldBody<H> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers(),
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Pending => false,
        };
        if ended {
            self.hold = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
