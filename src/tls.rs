//! Institution mutual TLS (server config with CRL reload, accept loop, peer identity, test
//! client); must not depend on the document-signature code (`domain::signature`, `pki::trust`),
//! only on `domain::ids` and `domain::hash`, and uses `ring` as its one crypto provider (never
//! aws-lc-rs).
//!
//! Server side:
//! - [`TlsFiles::load`] gives a [`ServerTls`] (the current `rustls::ServerConfig`, shared) and a
//!   [`TlsReloader`] whose [`TlsReloader::refresh`] puts changed files in force: for new
//!   connections, and for open ones, which check their client certificates against it (`recheck`)
//!   and close if refused. Files are parsed only when their fingerprint changed.
//! - [`incoming`] turns a `TcpListener` into the stream that
//!   `tonic::transport::Server::serve_with_incoming_shutdown` wants. Handshakes run concurrently
//!   (one spawned task each, with a timeout); only completed, authenticated connections come out.
//!   Before TLS it bounds what an unauthenticated peer can hold ([`IncomingConfig`]): one source
//!   address holds at most an eighth of the pending handshakes, open connections are capped,
//!   and accept errors pause the loop rather than spin or end it. After TLS it caps the open
//!   connections of each institution, so that one certificate cannot hold the global cap.
//! - A handler reads the identity with [`peer_identity`] (it is the connection's tonic
//!   `ConnectInfo`, so it sits in the request extensions as a [`PeerIdentity`]).
//!
//! Policy, enforced in the handshake itself (a refused client gets a TLS alert):
//! - a client certificate is required, chained to one of the client CAs, with an extended key
//!   usage extension that names clientAuth (WebPKI alone accepts a certificate without one);
//! - when CRLs are configured, every certificate of the chain must be covered by a CRL of its
//!   issuer (unknown revocation status is refused) and a CRL past its nextUpdate is refused too
//!   (fail closed, like a stale CRL in document verification);
//! - the certificate must name exactly one institution with a URI SAN
//!   `urn:rxgate:institution:<kind>:<code>` ([`institution_of`], prefix compared ignoring case,
//!   so that a second one in other case is ambiguity, refused); otherwise the handshake fails
//!   with `access_denied`, since such a connection could never be authorized.
//!
//! No session resumption: every connection is verified in full against the CRLs in force. At a
//! reload every open connection's client certificate chain is verified again with the new
//! configuration, as a new handshake's would be; a connection that fails is closed, its open
//! calls cut. A connection with no open stream for the idle timeout is closed (`idle`).
//! CRLs are checked when loaded (issuer is a client CA, signature verifies), so a wrong file is
//! refused at load instead of failing every handshake. Limit: client CAs issue the institution
//! certificates directly; a CRL of an intermediate CA cannot be configured.
//!
//! Client side (tests, demos, load tests): [`connect`] and [`ClientFiles`].
//!
//! Files: `server_config` (files, configuration, reload), `incoming` (the accept loop and the
//! handshakes), `admission` and `backoff` (its bounds), `verifier` (the client-certificate
//! policy), `identity` (the peer's institution), `connection`, `idle` and `recheck` (an open
//! connection and what closes it), `client`, `error`.

mod admission;
mod backoff;
mod client;
mod connection;
mod error;
mod identity;
mod idle;
mod incoming;
mod recheck;
mod server_config;
mod verifier;

pub use client::{CONNECT_TIMEOUT, ClientFiles, SERVER_NAME, connect};
pub use connection::{ConnectionInfo, TlsConnection};
pub use error::TlsError;
pub use identity::{IdentityError, PeerIdentity, institution_of, peer_identity};
pub use idle::{OpenStream, OpenStreams};
pub use incoming::{
    HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, Incoming, IncomingConfig, MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_INSTITUTION, MAX_PENDING_HANDSHAKES, MAX_PENDING_HANDSHAKES_PER_SOURCE,
    REFUSAL_LOG_EVERY, TCP_KEEPALIVE, incoming, incoming_with,
};
pub use server_config::{ServerTls, TlsFiles, TlsReloader};
