//! The operations port: the local plain-HTTP address (`metrics_listen`) where Prometheus reads
//! `/metrics` and an orchestrator reads `/healthz` and `/readyz`, without a client certificate.
//! `page` turns the gateway's figures into the text format; `http` serves the three paths. Must
//! not depend on gRPC: the gRPC health service reads the same [`crate::readiness`] answer.

mod http;
mod page;

pub(crate) use http::serve;
pub(crate) use page::Page;
