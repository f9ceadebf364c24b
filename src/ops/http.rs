//! The operations port's HTTP server: `GET /metrics`, `/healthz` and `/readyz` over plain
//! HTTP/1.1, one request per connection. Every connection is served on its own task, with a
//! deadline for the request head and one for the whole exchange, and at most
//! [`MAX_CONNECTIONS`] are open at once (the rest are closed as they arrive): a slow or stuck
//! client holds one slot for a bounded time and never delays another's scrape. Must not depend
//! on the gateway, the store or gRPC: it is handed the page and the readiness answer.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use super::page::{self, Page};
use crate::readiness::Readiness;

/// How long a client may take to send its request line and headers.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may stay open, answer included (a client that reads slowly).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most connections open at once.
const MAX_CONNECTIONS: usize = 64;

/// The most bytes of a request head.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What the paths answer from.
struct Answers {
    page: Page,
    readiness: Arc<Readiness>,
}

/// Serves the operations port on `listener` until the task is dropped, which also ends every
/// connection still open.
pub(crate) async fn serve(listener: TcpListener, page: Page, readiness: Arc<Readiness>) {
    let answers = Arc::new(Answers { page, readiness });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(exchange(socket, Arc::clone(&answers), slot));
                    }
                    Err(_) => tracing::debug!("operations port full: connection closed"),
                },
                Err(error) => {
                    tracing::warn!(%error, "operations port: accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Serves one connection within its deadlines; `_slot` is given back when it ends.
async fn exchange(socket: TcpStream, answers: Arc<Answers>, _slot: OwnedSemaphorePermit) {
    let service = service_fn(move |request| {
        let answer = answer(&answers, &request);
        async move { Ok::<_, Infallible>(answer) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(socket), service);
    match tokio::time::timeout(EXCHANGE_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "operations port: connection failed"),
        Err(_) => tracing::debug!("operations port: connection closed at its deadline"),
    }
}

/// The answer to one request.
fn answer(answers: &Answers, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => match answers.page.render() {
            Ok(body) => {
                let mut response = text(StatusCode::OK, body);
                let page_type = HeaderValue::from_static(page::CONTENT_TYPE);
                response.headers_mut().insert(CONTENT_TYPE, page_type);
                response
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics not rendered\n".into(),
            ),
        },
        "/healthz" => text(StatusCode::OK, "alive\n".into()),
        "/readyz" => match answers.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "GET /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
