//! The writes a refused call keeps. A decision's writes are rolled back when it refuses
//! (`Gateway::run`), but a few things must stand whatever the decision: the check budget a
//! registration spent and the lookup misses a pharmacy was counted for (with the records of the
//! lockouts they tripped) — a refusal that undid them would make the refusal itself the way
//! around the bound. Such writes go through [`Keeping`], which writes them at once and notes
//! them, and the runner makes them again after the rollback. A kept write must not be computed
//! from the decision's own writes, which the rollback takes away.

use crate::store::{self, Column, Columns, Entry, Savepoint, Table, Txn, Value};

/// One write a refusal keeps.
#[derive(Debug, Clone)]
pub(super) enum Kept {
    Put(Table, Vec<u8>, Vec<u8>),
    /// A row with its columns (`Txn::put_row`).
    PutRow(Table, Vec<u8>, Vec<u8>, &'static [Column], Vec<KeptValue>),
    Delete(Table, Vec<u8>),
    /// A number drawn from the named counter (`Txn::unique_sequence`): where the counter is a
    /// row (the embedded store), the rollback takes back its step but not what the number
    /// names, so the counter is raised past it again.
    Drawn(String, u64),
}

/// A column's value, owned, to be handed to `Txn::put_row` again.
#[derive(Debug, Clone)]
pub(super) enum KeptValue {
    Text(String),
    Integer(i64),
    Date(String),
    Bytes(Vec<u8>),
    Null,
}

impl KeptValue {
    fn of(value: &Value<'_>) -> Self {
        match *value {
            Value::Text(t) => KeptValue::Text(t.to_owned()),
            Value::Integer(i) => KeptValue::Integer(i),
            Value::Date(d) => KeptValue::Date(d.to_owned()),
            Value::Bytes(b) => KeptValue::Bytes(b.to_vec()),
            Value::Null => KeptValue::Null,
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            KeptValue::Text(t) => Value::Text(t),
            KeptValue::Integer(i) => Value::Integer(*i),
            KeptValue::Date(d) => Value::Date(d),
            KeptValue::Bytes(b) => Value::Bytes(b),
            KeptValue::Null => Value::Null,
        }
    }
}

/// Makes `kept` again, in order, after a rollback.
pub(super) fn replay(tx: &mut dyn Txn, kept: &[Kept]) -> Result<(), store::Error> {
    for write in kept {
        match write {
            Kept::Put(table, key, value) => tx.put(*table, key, value),
            Kept::PutRow(table, key, value, declared, values) => {
                let values: Vec<Value<'_>> = values.iter().map(KeptValue::value).collect();
                let columns = Columns {
                    declared,
                    values: &values,
                };
                tx.put_row(*table, key, value, columns);
            }
            Kept::Delete(table, key) => tx.delete(*table, key),
            // Only where the counter is a row: a database sequence is not rolled back.
            Kept::Drawn(name, number) if tx.serial() => store::raise_sequence(tx, name, *number)?,
            Kept::Drawn(..) => {}
        }
    }
    Ok(())
}

/// A transaction whose writes are also noted in `kept`; reads go through unchanged.
pub(super) struct Keeping<'a> {
    pub(super) tx: &'a mut dyn Txn,
    pub(super) kept: &'a mut Vec<Kept>,
}

impl Txn for Keeping<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, store::Error> {
        self.tx.get(table, key)
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.kept
            .push(Kept::Put(table, key.to_vec(), value.to_vec()));
        self.tx.put(table, key, value);
    }

    fn put_row(&mut self, table: Table, key: &[u8], value: &[u8], columns: Columns<'_>) {
        self.kept.push(Kept::PutRow(
            table,
            key.to_vec(),
            value.to_vec(),
            columns.declared,
            columns.values.iter().map(KeptValue::of).collect(),
        ));
        self.tx.put_row(table, key, value, columns);
    }

    fn delete(&mut self, table: Table, key: &[u8]) {
        self.kept.push(Kept::Delete(table, key.to_vec()));
        self.tx.delete(table, key);
    }

    fn savepoint(&mut self) -> Savepoint {
        self.tx.savepoint()
    }

    /// Drawn by the transaction's own engine (a database sequence on PostgreSQL, which no other
    /// source may mix with), and noted.
    fn unique_sequence(&mut self, name: &str) -> Result<u64, store::Error> {
        let number = self.tx.unique_sequence(name)?;
        self.kept.push(Kept::Drawn(name.to_owned(), number));
        Ok(number)
    }

    fn lane(&self) -> u32 {
        self.tx.lane()
    }

    fn get_lane_row(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, store::Error> {
        self.tx.get_lane_row(table, key)
    }

    fn put_lane_row(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.kept
            .push(Kept::Put(table, key.to_vec(), value.to_vec()));
        self.tx.put_lane_row(table, key, value);
    }

    fn serial(&self) -> bool {
        self.tx.serial()
    }

    /// Rolls the transaction back but not what was noted: the runner would write the
    /// discarded kept writes again, so a decision must not roll back through `Keeping` (none
    /// does; the runner's own savepoint is taken on the plain transaction).
    fn rollback_to(&mut self, savepoint: Savepoint) {
        self.tx.rollback_to(savepoint);
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, store::Error> {
        self.tx.scan_prefix(table, prefix, limit)
    }

    fn scan_range(
        &self,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, store::Error> {
        self.tx.scan_range(table, start, end, limit)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::{
        domain::ids::InstitutionKind,
        service::{
            Action, Error, Gateway, audit_chain,
            schema::{check_budget_key, override_key},
            testing::{caller, gateway, keyed},
        },
        store::Store,
    };

    /// Runs a decision that writes one key (an override record's), keeps another (a check budget's) and ends with `outcome`; returns the
    /// call's answer, which of the two keys the store then holds, and the audit records added.
    async fn decide(
        gateway: &Gateway,
        outcome: Result<(), Error>,
    ) -> (Result<(), Error>, [bool; 2], u64) {
        let audited = || async {
            gateway
                .store
                .transact(|tx| audit_chain::heads(tx))
                .await
                .unwrap()
                .unwrap()
                .iter()
                .map(|h| h.sequence)
                .sum::<u64>()
        };
        let pharmacy = caller(InstitutionKind::Pharmacy);
        // The chain's first record comes with its genesis link: begun here, so that the
        // count below is the call's records alone.
        let began = gateway.audit_access(&pharmacy, Action::ExportAudit).await;
        assert_eq!(began, Ok(()));
        let before = audited().await;
        let draft = gateway.draft(&pharmacy, Action::LookupPrescription, SystemTime::now());
        let answer = gateway
            .run(draft, move |tx, draft| {
                tx.put(Table::Clinical, &override_key("decided"), b"");
                Keeping {
                    tx,
                    kept: &mut draft.kept,
                }
                .put(Table::Clinical, &check_budget_key(&keyed("kept")), b"");
                outcome.clone()
            })
            .await;
        let held = gateway
            .store
            .transact(|tx| {
                Ok::<_, store::Error>([
                    tx.get(Table::Clinical, &override_key("decided"))?.is_some(),
                    tx.get(Table::Clinical, &check_budget_key(&keyed("kept")))?
                        .is_some(),
                ])
            })
            .await
            .unwrap()
            .unwrap();
        (answer, held, audited().await - before)
    }

    #[tokio::test]
    async fn a_refusal_commits_only_its_kept_writes_and_its_audit_record() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = gateway(dir.path());
        let refused = decide(&gateway, Err(Error::NotFound)).await;
        assert_eq!(refused, (Err(Error::NotFound), [false, true], 1));
    }

    #[tokio::test]
    async fn an_internal_error_or_corrupt_data_is_refused_the_same_way() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = gateway(dir.path());
        for error in [
            Error::Internal("a bug".into()),
            Error::Store(store::Error::Corrupt("a record".into())),
        ] {
            let (answer, held, audited) = decide(&gateway, Err(error.clone())).await;
            assert_eq!((answer, held, audited), (Err(error), [false, true], 1));
        }
    }

    #[tokio::test]
    async fn a_decision_that_succeeds_commits_all_its_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = gateway(dir.path());
        assert_eq!(decide(&gateway, Ok(())).await, (Ok(()), [true, true], 1));
    }
}
