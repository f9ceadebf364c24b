//! An authenticated server-side connection, as [`super::incoming`] yields it: the TLS stream,
//! the peer it proved, and what closes it besides its peer: an idle timeout (no stream open for
//! that long; see `idle`) and a reload of the TLS configuration that its client certificate no
//! longer passes (see `recheck`). The connection closes by ending its reads: at end of input for
//! idleness, with an error for a refused certificate (its open streams fail). Its places among
//! the open connections are given back when tonic drops it.

use std::{
    fmt, io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::{
    PeerIdentity,
    admission::OpenSlot,
    idle::{IdleTimer, OpenStreams},
    recheck::Recheck,
};
use crate::log_throttle::LogThrottle;

static CUT_OFF: LogThrottle = LogThrottle::new(super::REFUSAL_LOG_EVERY);

/// What tonic puts in the extensions of every request of a connection (its `ConnectInfo`).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: PeerIdentity,
    /// The connection's open streams: each call counts as one until its answer ends, and the
    /// connection is idle while none is open.
    pub(crate) streams: Arc<OpenStreams>,
}

impl ConnectionInfo {
    /// The connection a request came on; `None` for a request that did not come through
    /// [`super::incoming`].
    pub fn of<B>(request: &tonic::codegen::http::Request<B>) -> Option<&ConnectionInfo> {
        request.extensions().get::<ConnectionInfo>()
    }
}

/// An authenticated server-side connection: what [`super::incoming`] yields.
pub struct TlsConnection {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: ConnectionInfo,
    idle: IdleTimer,
    recheck: Recheck,
    /// Counts the connection as open, among all and among its institution's, until it is
    /// dropped: tonic drops it when the connection ends, however it ends.
    _open: OpenSlot,
}

impl TlsConnection {
    pub(super) fn new(
        inner: tokio_rustls::server::TlsStream<TcpStream>,
        peer: PeerIdentity,
        idle_timeout: Duration,
        recheck: Recheck,
        open: OpenSlot,
    ) -> Self {
        let idle = IdleTimer::new(idle_timeout);
        let streams = Arc::clone(idle.streams());
        TlsConnection {
            inner,
            info: ConnectionInfo { peer, streams },
            idle,
            recheck,
            _open: open,
        }
    }

    pub fn peer(&self) -> &PeerIdentity {
        &self.info.peer
    }

    /// Ready when the connection must close: `Ok` (end of input) once it has been idle for its
    /// timeout, an error once a reload refused its client certificate.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let chain = self.inner.get_ref().1.peer_certificates().unwrap_or(&[]);
        if let Poll::Ready(why) = self.recheck.poll_refused(cx, chain) {
            if let Some(left_out) = CUT_OFF.allow() {
                let institution = self.info.peer.institution.to_uri();
                tracing::info!(%institution, error = %why, left_out,
                    "connection closed: its client certificate fails the reloaded TLS configuration");
            }
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::PermissionDenied, why)));
        }
        if self.idle.poll_expired(cx).is_ready() {
            tracing::debug!(peer = ?self.info.peer.remote_addr, "idle connection closed");
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnection")
            .field("peer", &self.info.peer)
            .finish_non_exhaustive()
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(closing) = this.poll_closing(cx) {
            return Poll::Ready(closing);
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
