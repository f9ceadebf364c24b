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

    /// Appends `entry` to this gateway's chain in a transaction of its own; not at the data
    /// disk's floor, where nothing reaches the store (free_space.rs): a refused client that
    /// calls on would fill the engine's last room with these records. The edge layer says in
    /// its log how many requests went unrecorded.
    async fn append(&self, time_ms: i64, entry: ChainedV1) -> Result<(), Error> {
        self.room.admit(false).map_err(|refused| refused.error)?;
        let writer = self.config.audit_writer;
        self.store
            .transact(move |tx: &mut dyn Txn| {
                audit_chain::append(tx, &writer, time_ms, entry.clone())
            })
            .await??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        domain::ids::InstitutionKind,
        service::testing::{MIB, audit_records, caller, gateway},
    };

    /// Below half the low-water mark nothing may reach the store: a client refused there that
    /// calls on (as a client told RESOURCE_EXHAUSTED does) must not fill the engine's last room
    /// with the records of its refusals, one request or its counts at a time.
    #[tokio::test]
    async fn at_the_disks_floor_a_request_answered_at_the_edge_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = gateway(dir.path());
        let clinic = caller(InstitutionKind::Clinic);
        let edge = || {
            let outcome = String::from("RESOURCE_EXHAUSTED");
            gateway.audit_edge(&clinic, String::from("UnknownMethod"), None, outcome)
        };
        assert_eq!(edge().await, Ok(()), "with room, the record is written");
        let before = audit_records(&gateway).await;

        gateway.room().observe(MIB, 10 * MIB);
        let floor = Error::DiskLow {
            free_mib: 1,
            low_water_mib: 10,
        };
        assert_eq!(edge().await, Err(floor.clone()));
        let counts = Counts {
            from_ms: 0,
            until_ms: 1,
            counts: BTreeMap::from([(("Check".into(), "OK".into()), 40)]),
        };
        assert_eq!(gateway.audit_counted(&clinic, counts).await, Err(floor));
        assert_eq!(audit_records(&gateway).await, before, "nothing written");
    }
}
