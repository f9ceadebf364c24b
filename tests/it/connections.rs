//! What one client may hold of a connection, over the real server: the per-institution
//! connection cap (security review H4: one institution's certificate cannot hold the open
//! connections that every other institution needs; set to 2 so that the test opens a handful of
//! connections, not thousands), the idle timeout that never closes a live feed, the in-flight cap
//! that also bounds answers a client never reads, the cap on health Watch and reflection streams,
//! and the loopback-only operations port of a `--dev` instance.

use crate::common::{self, dev_pki};

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use common::start_with;
use rxgate::wire::proto::v1::{self as pb, event_service_client::EventServiceClient};
use tokio::{sync::oneshot, task::JoinSet};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, ServerReflectionResponse,
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
};

async fn check(channel: &Channel) -> Result<(), Status> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

/// A new connection of `name` and a call on it. The server closes a refused connection right
/// after its handshake, which a TLS 1.3 client may learn at connect or only at its first call.
async fn connect_and_call(addr: &str, name: &str) -> Result<Channel, String> {
    let channel = dev_pki()
        .client(name)
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    check(&channel)
        .await
        .map_err(|e| format!("first call: {e}"))?;
    Ok(channel)
}

#[tokio::test]
async fn an_institution_past_its_share_is_closed_and_the_others_still_connect() {
    let h = start_with(|config| config.network.max_connections_per_institution = 2).await;

    let first = connect_and_call(&h.addr, "clinic").await.unwrap();
    let second = connect_and_call(&h.addr, "clinic").await.unwrap();
    let refused = connect_and_call(&h.addr, "clinic").await;
    assert!(
        refused.is_err(),
        "a third connection of the same institution was served"
    );

    // Another institution is not affected, and the first two connections still serve.
    connect_and_call(&h.addr, "clinic2").await.unwrap();
    connect_and_call(&h.addr, "pharmacy").await.unwrap();
    check(&first).await.unwrap();
    check(&second).await.unwrap();

    // A connection that ends gives its place back once the server has seen it close.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        match connect_and_call(&h.addr, "clinic").await {
            Ok(channel) => break channel,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no place again after a connection closed: {e}"),
        }
    };
    // And the cap holds again.
    assert!(connect_and_call(&h.addr, "clinic").await.is_err());
    check(&again).await.unwrap();
    check(&second).await.unwrap();
    h.shutdown().await;
}

/// A new connection of `name` with a call on it, as soon as the server gives its institution a
/// place again (within 10 s).
async fn connect_when_a_place_is_free(addr: &str, name: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect_and_call(addr, name).await {
            Ok(channel) => return channel,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no place for {name} within 10 s: {e}"),
        }
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_one_with_an_open_stream_is_not() {
    let h = start_with(|config| {
        config.network.idle_timeout_secs = 1;
        config.network.max_connections_per_institution = 1;
    })
    .await;
    // A feed: its connection carries an open stream, and nothing else, for the whole test.
    let mut events =
        EventServiceClient::new(connect_and_call(&h.addr, "management").await.unwrap());
    let mut feed = events
        .watch_events(pb::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();

    // The clinic's one place is held by a connection with no stream open: it comes back when the
    // server closes that connection for idleness.
    let idle = connect_and_call(&h.addr, "clinic").await.unwrap();
    assert!(connect_and_call(&h.addr, "clinic").await.is_err());
    let again = connect_when_a_place_is_free(&h.addr, "clinic").await;
    check(&again).await.unwrap();

    // The feed's connection was idle as long, but its stream is open: it still delivers.
    h.register_demo("clinic2", "IDLE-1", 1).await;
    let event = tokio::time::timeout(Duration::from_secs(10), feed.message())
        .await
        .expect("the feed delivers within 10 s")
        .expect("the feed is still open")
        .expect("an event");
    assert!(event.sequence > 0);
    // And its connection still holds the management's one place.
    assert!(connect_and_call(&h.addr, "management").await.is_err());
    drop(idle);
    h.shutdown().await;
}

/// A channel whose client grants the server no room to send: every answer's body stays at the
/// server, unread, as with a client that never reads its answers.
async fn never_reading_channel(addr: &str, name: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(addr.to_owned())
        .unwrap()
        .initial_stream_window_size(0)
        .tls_config(dev_pki().client(name).client_tls_config().unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_that_never_reads_holds_at_most_its_in_flight_cap_of_answers() {
    let h = start_with(|_| {}).await;
    let max_in_flight = 8;
    let channel = never_reading_channel(&h.addr, "clinic").await;
    let mut calls = JoinSet::new();
    for _ in 0..3 * max_in_flight {
        let channel = channel.clone();
        calls.spawn(async move { check(&channel).await });
    }
    // The answers admitted are never read, so those calls never end; every other one is refused
    // at once, naming the cap.
    let limit = format!("at most {max_in_flight} requests in flight per institution");
    for _ in 0..2 * max_in_flight {
        let refused = tokio::time::timeout(Duration::from_secs(10), calls.join_next())
            .await
            .expect("the calls past the in-flight cap are refused within 10 s")
            .unwrap()
            .unwrap()
            .expect_err("only refusals end");
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(refused.message(), limit);
    }
    // The unread answers hold the institution's places, on any connection, and no other's.
    let refused = connect_and_call(&h.addr, "clinic").await.unwrap_err();
    assert!(refused.contains(&limit), "{refused}");
    connect_and_call(&h.addr, "clinic2").await.unwrap();
    // A connection that ends gives its unread answers' places back.
    calls.abort_all();
    drop(channel);
    connect_when_a_place_is_free(&h.addr, "clinic").await;
    h.shutdown().await;
}

async fn health_watch(channel: &Channel) -> Result<tonic::Streaming<HealthCheckResponse>, Status> {
    HealthClient::new(channel.clone())
        .watch(HealthCheckRequest::default())
        .await
        .map(|r| r.into_inner())
}

/// A reflection request stream: one question, then open until `close` fires or is dropped.
struct AskThenWait {
    ask: Option<ServerReflectionRequest>,
    close: oneshot::Receiver<()>,
}

impl tokio_stream::Stream for AskThenWait {
    type Item = ServerReflectionRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(ask) = self.ask.take() {
            return Poll::Ready(Some(ask));
        }
        Pin::new(&mut self.close).poll(cx).map(|_| None)
    }
}

/// A reflection stream that lists the services; it stays open until the sender is used or
/// dropped.
async fn reflection(
    channel: &Channel,
) -> Result<
    (
        tonic::Streaming<ServerReflectionResponse>,
        oneshot::Sender<()>,
    ),
    Status,
> {
    let (close, closed) = oneshot::channel();
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let requests = AskThenWait {
        ask: Some(ask),
        close: closed,
    };
    let answers = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(requests)
        .await?;
    Ok((answers.into_inner(), close))
}

#[tokio::test]
async fn health_watch_and_reflection_streams_are_capped_per_institution() {
    let h = start_with(|_| {}).await;
    let limit = "at most 4 open health Watch and reflection streams per institution";
    let channel = connect_and_call(&h.addr, "clinic").await.unwrap();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut watch = health_watch(&channel).await.unwrap();
        watch.message().await.unwrap().expect("the first status");
        open.push(watch);
    }
    let (mut listing, close_listing) = reflection(&channel).await.unwrap();
    listing
        .message()
        .await
        .unwrap()
        .expect("the list of services");

    let refused = health_watch(&channel).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.message(), limit);
    let refused = reflection(&channel).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.message(), limit);

    // Another institution is not affected; a stream that ends gives its place back.
    let other = connect_and_call(&h.addr, "clinic2").await.unwrap();
    health_watch(&other).await.unwrap();
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(refused) = health_watch(&channel).await {
        assert!(
            Instant::now() < deadline,
            "no place back within 10 s: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A reflection stream lasts as long as its client's requests: it would hold the drain open.
    drop(close_listing);
    h.shutdown().await;
}

/// `rxgate serve --dev` with a non-loopback address for the operations port.
#[test]
fn a_dev_instance_refuses_a_public_metrics_port() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("store"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning rxgate serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a --dev instance served its metrics on 0.0.0.0");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exited.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("metrics"), "{stderr}");
}
