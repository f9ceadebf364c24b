//! The ceiling: a bare tonic unary echo, served in-process over the gateway's own mutual-TLS
//! stack (`rxgate::tls::incoming`: client certificate, CRL and institution checks per
//! handshake) with tonic's default server settings, as `rxgate serve` uses them. The load test
//! drives it with the same clients, connections and payload size as a registration: in its own
//! process (`--serve-echo`, started by `--scenario echo --spawn`), as a spawned gateway runs, or
//! inside the load test's process.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use rxgate::tls::TlsFiles;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
    sync::oneshot,
    task::JoinHandle,
};
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

/// What `--serve-echo` prints once it listens, before the address.
const LISTENING: &str = "echo listening addr=";

/// How long a spawned echo process may take to start listening, or to stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// `--serve-echo`: serves until standard input closes, after printing where it listens.
pub async fn serve(tls_dir: &Path) -> anyhow::Result<()> {
    let server = EchoServer::start(tls_dir).await?;
    println!("{LISTENING}{}", server.addr);
    tokio::task::spawn_blocking(|| {
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
    })
    .await??;
    server.stop().await
}

/// An echo server in a process of its own (this binary with `--serve-echo`), stopped by closing
/// its standard input; killed if dropped.
pub struct EchoProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl EchoProcess {
    pub async fn start(tls_dir: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut child = Command::new(exe)
            .arg("--serve-echo")
            .arg("--tls-dir")
            .arg(tls_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the echo process")?;
        let stdout = child.stdout.take().expect("piped");
        let first =
            tokio::time::timeout(PROCESS_TIMEOUT, BufReader::new(stdout).lines().next_line())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
        let addr = first
            .as_deref()
            .and_then(|line| line.strip_prefix(LISTENING))
            .and_then(|addr| addr.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill().await;
            bail!("the echo process did not start listening (it said {first:?})");
        };
        Ok(EchoProcess { child, addr })
    }

    /// Closes its standard input and waits for it to stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(PROCESS_TIMEOUT, self.child.wait())
            .await
            .context("the echo process did not stop")??;
        anyhow::ensure!(status.success(), "the echo process failed: {status}");
        Ok(())
    }
}
