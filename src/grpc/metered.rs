//! A tower layer that counts every gRPC request by RPC and status code and times it from the
//! request to the end of the response (the trailers that carry `grpc-status`, or the headers of
//! a trailers-only answer). A response dropped before its end counts as CANCELLED. Only the
//! known RPCs get a label of their own; every other path counts as `unknown` ([`Rpc`]).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::codegen::Body as _;
use tonic::codegen::{Bytes, http, http::HeaderMap};

use crate::metrics::{Metrics, Rpc, code_name};

#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// One request being timed; recorded once.
struct Observation {
    metrics: Arc<Metrics>,
    rpc: Rpc,
    started: Instant,
    recorded: bool,
}

impl Observation {
    fn record(&mut self, headers: Option<&HeaderMap>) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        let code = headers
            .and_then(|h| h.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map_or("UNKNOWN", code_name);
        self.metrics.request(self.rpc, code, self.started.elapsed());
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if !self.recorded {
            self.recorded = true;
            self.metrics
                .request(self.rpc, "CANCELLED", self.started.elapsed());
        }
    }
}

impl<S, B> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut observation = Observation {
            metrics: Arc::clone(&self.metrics),
            rpc: Rpc::of_path(request.uri().path()),
            started: Instant::now(),
            recorded: false,
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if response.headers().contains_key("grpc-status") || response.body().is_end_stream() {
                // A trailers-only answer (every error tonic returns before a body).
                observation.record(Some(response.headers()));
                return Ok(response);
            }
            Ok(response.map(|inner| tonic::body::Body::new(MeteredBody { inner, observation })))
        })
    }
}

struct MeteredBody {
    inner: tonic::body::Body,
    observation: Observation,
}

impl tonic::codegen::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.observation.record(Some(trailers));
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.observation.record(None),
            Poll::Pending => {}
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
