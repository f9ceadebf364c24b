//! A per-institution cap on the streams of the standard services (`grpc.health.v1.Health/Watch`
//! and server reflection), as a guard (`guard`): like WatchEvents feeds (`feed`), each open
//! stream holds one of its institution's places until it ends, and one past the cap is refused
//! with RESOURCE_EXHAUSTED naming the limit. Must not depend on the service layer or the store.

use std::{collections::HashSet, sync::Arc};

use tonic::{Status, codegen::http};

use super::guard::{Guard, Pass, Until};
use crate::{
    domain::ids::Institution,
    keyed_slots::{KeyedSlots, Slot},
    tls::ConnectionInfo,
};

/// The cap, as a [`Guard`]; one per server, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct StreamCap {
    /// The paths of the capped methods.
    capped: Arc<HashSet<String>>,
    open: Arc<KeyedSlots<Institution>>,
}

impl StreamCap {
    /// At most `max_per_institution` open calls of the methods in `capped` per institution.
    pub(crate) fn new(capped: HashSet<String>, max_per_institution: usize) -> Self {
        StreamCap {
            capped: Arc::new(capped),
            open: KeyedSlots::new(max_per_institution),
        }
    }
}

impl Guard for StreamCap {
    /// `None` for a method that is not capped, or a request without an identity (left to the
    /// handlers, which refuse it).
    type Hold = Option<Slot<Institution>>;

    fn decide<B>(&self, request: &http::Request<B>) -> Result<Pass<Self::Hold>, Status> {
        let pass = |hold| Pass {
            hold,
            until: Until::BodyEnds,
            deadline: None,
        };
        let Some(connection) = ConnectionInfo::of(request) else {
            return Ok(pass(None));
        };
        if !self.capped.contains(request.uri().path()) {
            return Ok(pass(None));
        }
        match self.open.take(&connection.peer.institution) {
            Some(slot) => Ok(pass(Some(slot))),
            None => Err(Status::resource_exhausted(format!(
                "at most {} open health Watch and reflection streams per institution",
                self.open.max()
            ))),
        }
    }
}
