//! Counts each connection's open streams, as a guard (`guard`): every call holds an
//! `OpenStream` of its connection from its request to the end of its answer's body, so that the
//! connection's idle timeout (`tls`) runs only while no call and no feed is open. Must not
//! depend on the service layer or the store.

use tonic::{Status, codegen::http};

use super::guard::{Guard, Pass, Until};
use crate::tls::{ConnectionInfo, OpenStream};

/// The count of open streams, as a [`Guard`]; it never refuses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamCount;

impl Guard for StreamCount {
    /// `None` for a request that did not come through the TLS acceptor.
    type Hold = Option<OpenStream>;

    fn decide<B>(&self, request: &http::Request<B>) -> Result<Pass<Option<OpenStream>>, Status> {
        Ok(Pass {
            hold: ConnectionInfo::of(request).map(|connection| connection.streams.open()),
            until: Until::BodyEnds,
            deadline: None,
        })
    }
}
