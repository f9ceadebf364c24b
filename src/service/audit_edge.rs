//! The audit records of requests answered before any handler ran (refused at the edge: an
//! unknown method, an undecodable, oversize or compressed body, a fairness limit; or answered by
//! the health and reflection services): one record each, or one record of counts for those a
//! connection sent beyond its per-second number (see `crate::tally`). Each in a transaction of
//! its own, on the writer's chain like every audit record.

use crate::{
    service::records::{AuditV1, AuditV2, ChainedV1, CountV1, CountedV1},
    store::{Store, Txn},
    tally::Counts,
};

use super::{Caller, Error, Gateway, audit_chain, millis};

impl Gateway {
    /// Records one request of `caller` answered at the edge with `outcome`.
    pub async fn audit_edge(
        &self,
        caller: &Caller,
        action: String,
        target: Option<String>,
        outcome: String,
    ) -> Result<(), Error> {
        let time_ms = millis(self.clock.now());
        let call = AuditV1 {
            time_ms,
            institution_kind: caller.institution.kind.to_string(),
            institution_code: caller.institution.code.to_string(),
            certificate_sha256: caller.certificate_sha256,
            signer_serial_number: None,
            signer_certificate_sha256: None,
            action,
            target,
            outcome,
        };
        self.append(
            time_ms,
            ChainedV1::Call(Box::new(AuditV2 { call, check: None })),
        )
        .await
    }

    /// Records the counted edge requests of one connection of `caller`.
    pub async fn audit_counted(&self, caller: &Caller, counted: Counts) -> Result<(), Error> {
        let record = CountedV1 {
            institution_kind: caller.institution.kind.to_string(),
            institution_code: caller.institution.code.to_string(),
            certificate_sha256: caller.certificate_sha256,
            from_ms: counted.from_ms,
            until_ms: counted.until_ms,
            counts: (counted.counts.into_iter())
                .map(|((action, outcome), count)| CountV1 {
                    action,
                    outcome,
                    count,
                })
                .collect(),
        };
        let time_ms = millis(self.clock.now());
        self.append(time_ms, ChainedV1::Counted(Box::new(record)))
            .await
    }

    /// Appends `entry` to this gateway's chain in a transaction of its own.
    async fn append(&self, time_ms: i64, entry: ChainedV1) -> Result<(), Error> {
        let writer = self.config.audit_writer;
        self.store
            .transact(move |tx: &mut dyn Txn| audit_chain::append(tx, &writer, time_ms, entry))
            .await??;
        Ok(())
    }
}
