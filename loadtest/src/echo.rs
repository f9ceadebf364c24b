//! The ceiling: a bare tonic unary echo, served in-process over the gateway's own mutual-TLS
//! stack (`rxgate::tls::incoming`: client certificate, CRL and institution checks per
//! handshake) with tonic's default server settings, as `rxgate serve` uses them. The load test
//! drives it with the same clients, connections and payload size as a registration.

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use rxgate::tls::TlsFiles;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{Request, Response, Status, transport::Server};

mod proto {
    tonic::include_proto!("loadtest.v1");
}

use proto::echo_service_server::{EchoService, EchoServiceServer};
pub use proto::{EchoRequest, EchoResponse, echo_service_client};

struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

/// A running echo server.
pub struct EchoServer {
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl EchoServer {
    /// Serves on 127.0.0.1 (any port) with the TLS material of `tls_dir`, laid out as certs/tls:
    /// the server certificate and key, the institution CA and its CRL.
    pub async fn start(tls_dir: &Path) -> anyhow::Result<Self> {
        let files = TlsFiles {
            server_cert: tls_dir.join("server.cert.pem"),
            server_key: tls_dir.join("server.key.pem"),
            client_ca: vec![tls_dir.join("ca.cert.pem")],
            client_crls: vec![tls_dir.join("ca.crl.pem")],
        };
        let (tls, _reloader) = files.load().context("the echo server's TLS material")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .add_service(EchoServiceServer::new(Echo))
                .serve_with_incoming_shutdown(rxgate::tls::incoming(listener, tls), async {
                    let _ = stop.await;
                }),
        );
        Ok(EchoServer {
            addr,
            shutdown,
            task,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        Ok(self.task.await.context("the echo server task")??)
    }
}
