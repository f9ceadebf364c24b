//! The per-institution connection cap over the real server (security review H4): one
//! institution's certificate cannot hold the open connections that every other institution
//! needs. The cap is set to 2 so that the test opens a handful of connections, not thousands.

mod common;

use std::time::{Duration, Instant};

use common::start_with;
use rxgate::tls::ClientFiles;
use tonic::{Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn check(channel: &Channel) -> Result<(), Status> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

/// A new connection of `name` and a call on it. The server closes a refused connection right
/// after its handshake, which a TLS 1.3 client may learn at connect or only at its first call.
async fn connect_and_call(addr: &str, name: &str) -> Result<Channel, String> {
    let channel = ClientFiles::dev(name)
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
