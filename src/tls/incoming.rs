//! The accept loop: [`incoming`] turns a `TcpListener` into the stream of authenticated
//! connections that tonic serves ([`Incoming`]). Before TLS it bounds what an unauthenticated
//! peer can hold ([`IncomingConfig`]: pending handshakes per source address, open connections;
//! see `admission`) and pauses after accept errors (`backoff`); each handshake runs in a task of
//! its own, with a timeout (`Handshake`); after TLS it caps the open connections of each
//! institution. Knows tokio and rustls's acceptor; must not depend on the document-signature
//! code, on the files the configuration comes from (it takes a [`ServerTls`]), or on what is
//! served over the connections.

use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;

use super::{
    admission::{Admission, PendingSlot, Refused},
    backoff::AcceptBackoff,
    connection::TlsConnection,
    identity::{IdentityError, PeerIdentity},
    recheck::{Recheck, VerifierInForce},
    server_config::ServerTls,
};
use crate::log_throttle::LogThrottle;

/// How long a client has to complete its TLS handshake: a real client needs a few round trips,
/// and every pending handshake holds one of the [`MAX_PENDING_HANDSHAKES`] places.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many handshakes may be in progress at once; further connections wait in the backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// How many of the pending handshakes one source address may hold: an eighth, so that one
/// address (a scanner, or connections that never send a ClientHello) cannot fill them.
pub const MAX_PENDING_HANDSHAKES_PER_SOURCE: usize = MAX_PENDING_HANDSHAKES / 8;

/// How many authenticated connections may be open at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// How many of the open connections one institution may hold: without it one certificate could
/// complete [`MAX_CONNECTIONS`] handshakes, hold them idle (answering keepalive pings) and get
/// every other institution's new connection closed. A client needs one connection (the load
/// test's fleet uses one per institution, the fairness test floods with 8); 32 leaves room for
/// several processes per institution while a lockout takes 128 institutions' certificates.
pub const MAX_CONNECTIONS_PER_INSTITUTION: usize = 32;

/// Idle time before TCP keepalive probes (a dead peer is also found by HTTP/2 pings).
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long a connection may stay open with no stream open (no call, no feed): a client
/// reconnects in a few milliseconds, and an idle connection holds one of its institution's
/// places.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Limits of the accept loop.
#[derive(Debug, Clone)]
pub struct IncomingConfig {
    pub handshake_timeout: Duration,
    pub max_pending_handshakes: usize,
    /// Pending handshakes one source address may hold; its further connections are closed
    /// right after accept.
    pub max_pending_handshakes_per_source: usize,
    /// Open authenticated connections; above it new connections are closed right after accept.
    pub max_connections: usize,
    /// Open authenticated connections one institution may hold; its further connections are
    /// closed right after their handshake.
    pub max_connections_per_institution: usize,
    /// Idle time before TCP keepalive probes; `None`: the system's setting.
    pub tcp_keepalive: Option<Duration>,
    /// How long a connection with no open stream is kept. Streams count only where the server
    /// takes an [`OpenStream`](super::OpenStream) for each (the gateway's gRPC layer does, from
    /// the request to the end of its answer); elsewhere every connection is closed this long
    /// after it opened.
    pub idle_timeout: Duration,
    /// Counts failed handshakes (timeouts, TLS errors, refused certificates) for /metrics.
    pub handshake_failures: Arc<AtomicU64>,
}

impl Default for IncomingConfig {
    fn default() -> Self {
        IncomingConfig {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_pending_handshakes: MAX_PENDING_HANDSHAKES,
            max_pending_handshakes_per_source: MAX_PENDING_HANDSHAKES_PER_SOURCE,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_institution: MAX_CONNECTIONS_PER_INSTITUTION,
            tcp_keepalive: Some(TCP_KEEPALIVE),
            idle_timeout: IDLE_TIMEOUT,
            handshake_failures: Arc::default(),
        }
    }
}

/// The accept loop, with the default limits. See [`Incoming`].
pub fn incoming(listener: TcpListener, tls: ServerTls) -> Incoming {
    incoming_with(listener, tls, IncomingConfig::default())
}

/// The accept loop. See [`Incoming`].
pub fn incoming_with(listener: TcpListener, tls: ServerTls, config: IncomingConfig) -> Incoming {
    Incoming {
        listener,
        tls,
        admission: Admission::new(
            config.max_pending_handshakes_per_source,
            config.max_connections,
            config.max_connections_per_institution,
        ),
        config,
        handshakes: JoinSet::new(),
        backoff: AcceptBackoff::new(),
    }
}

/// A stream of authenticated connections for
/// `tonic::transport::Server::serve_with_incoming_shutdown`. Each accepted TCP connection gets
/// its own task for the handshake (with the configuration in force at accept, and a timeout);
/// connections come out in the order their handshakes complete. A connection whose source
/// address holds its share of the pending handshakes, or that comes while the open connections
/// are at their cap, is closed right after accept; one whose institution holds its share of the
/// open connections is closed right after its handshake. A failed handshake is counted and
/// dropped; refusals and failures are logged at most once per [`REFUSAL_LOG_EVERY`]. The stream
/// never yields an error and never ends: after an accept error such as EMFILE it pauses (100 ms
/// doubling to 1 s) and accepts again. Dropping it closes the listener and aborts the
/// handshakes in progress. Must be polled inside a Tokio runtime.
pub struct Incoming {
    listener: TcpListener,
    tls: ServerTls,
    config: IncomingConfig,
    admission: Admission,
    handshakes: JoinSet<Option<TlsConnection>>,
    backoff: AcceptBackoff,
}

/// How often each kind of refusal or failure of the accept loop may be logged.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

static ACCEPT_ERRORS: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);
static SOURCE_BUSY: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);
static TOO_MANY_CONNECTIONS: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);
static HANDSHAKE_FAILED: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);
static INSTITUTION_BUSY: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .field("pending_handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// Accepts what the listener has ready (up to the handshake limit) and spawns handshakes.
    /// Leaves a waker on the listener (or on the backoff timer) unless the limit is reached.
    fn accept_ready(&mut self, cx: &mut Context<'_>) {
        while self.handshakes.len() < self.config.max_pending_handshakes.max(1) {
            if self.backoff.poll_ready(cx).is_pending() {
                return;
            }
            match self.listener.poll_accept(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok((tcp, remote))) => {
                    self.backoff.reset();
                    self.admit(tcp, remote);
                }
                Poll::Ready(Err(e)) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "accept failed");
                }
                Poll::Ready(Err(e)) => {
                    // E.g. out of file descriptors: wait rather than spin.
                    let pause = self.backoff.pause();
                    if let Some(left_out) = ACCEPT_ERRORS.allow() {
                        let pause_ms = pause.as_millis() as u64;
                        tracing::warn!(error = %e, pause_ms, left_out, "accept failed; pausing");
                    }
                }
            }
        }
    }

    /// Spawns the handshake of an accepted connection, or closes it at once (by dropping it).
    fn admit(&mut self, tcp: TcpStream, remote: SocketAddr) {
        match self.admission.admit(remote.ip()) {
            Ok(slot) => {
                let handshake = Handshake {
                    acceptor: self.tls.acceptor(),
                    reloads: self.tls.verifier.subscribe(),
                    timeout: self.config.handshake_timeout,
                    idle_timeout: self.config.idle_timeout,
                    tcp_keepalive: self.config.tcp_keepalive,
                    failures: Arc::clone(&self.config.handshake_failures),
                    max_per_institution: self.config.max_connections_per_institution,
                    slot,
                };
                self.handshakes.spawn(handshake.run(tcp, remote));
            }
            Err(Refused::SourceBusy) => {
                if let Some(left_out) = SOURCE_BUSY.allow() {
                    tracing::warn!(source = %remote.ip(), left_out,
                        "connection closed: its address holds its share of the pending handshakes");
                }
            }
            Err(Refused::TooManyConnections) => {
                if let Some(left_out) = TOO_MANY_CONNECTIONS.allow() {
                    let max = self.config.max_connections;
                    tracing::warn!(
                        max,
                        left_out,
                        "connection closed: open connections at the cap"
                    );
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

impl Stream for Incoming {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            this.accept_ready(cx);
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(connection)))) => {
                    return Poll::Ready(Some(Ok(connection)));
                }
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "TLS handshake task failed");
                }
                // Nothing in progress, or nothing finished: the wakers are set.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One accepted connection's handshake, holding its pending place until it ends.
struct Handshake {
    acceptor: TlsAcceptor,
    /// The reloads after the configuration of `acceptor`, for the connection to follow.
    reloads: watch::Receiver<VerifierInForce>,
    timeout: Duration,
    idle_timeout: Duration,
    tcp_keepalive: Option<Duration>,
    failures: Arc<AtomicU64>,
    /// For the log line of a connection refused for its institution.
    max_per_institution: usize,
    slot: PendingSlot,
}

impl Handshake {
    async fn run(self, tcp: TcpStream, remote: SocketAddr) -> Option<TlsConnection> {
        // gRPC is request/response over small frames: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        if let Some(idle) = self.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        }
        let stream = match tokio::time::timeout(self.timeout, self.acceptor.accept(tcp)).await {
            Err(_elapsed) => return self.failed(remote, "TLS handshake timed out"),
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return self.failed(remote, "TLS handshake failed");
            }
            Ok(Ok(stream)) => stream,
        };
        // The verifier already refused a certificate without an institution: this cannot fail
        // for a completed handshake, but is checked again rather than assumed.
        let identity = match stream.get_ref().1.peer_certificates() {
            Some([end_entity, ..]) => PeerIdentity::of(end_entity, Some(remote)),
            _ => Err(IdentityError::NoCertificate),
        };
        match identity {
            Ok(peer) => {
                let institution = peer.institution.to_uri();
                // Refused, the stream is dropped here: the connection is closed, and its client
                // sees it at its first call.
                let Some(open) = self.slot.into_open(&peer.institution) else {
                    if let Some(left_out) = INSTITUTION_BUSY.allow() {
                        let max = self.max_per_institution;
                        tracing::warn!(
                            %remote,
                            %institution,
                            max,
                            left_out,
                            "connection closed: its institution holds its share of the connections"
                        );
                    }
                    return None;
                };
                tracing::debug!(%remote, %institution, "mutual TLS established");
                let recheck = Recheck::new(self.reloads);
                Some(TlsConnection::new(
                    stream,
                    peer,
                    self.idle_timeout,
                    recheck,
                    open,
                ))
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "TLS connection refused");
                self.failed(remote, "TLS connection refused")
            }
        }
    }

    /// Counts a failed handshake and logs it (throttled).
    fn failed(self, remote: SocketAddr, what: &'static str) -> Option<TlsConnection> {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = HANDSHAKE_FAILED.allow() {
            tracing::info!(%remote, left_out, "{what}");
        }
        None
    }
}
