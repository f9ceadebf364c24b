//! SearchPrescriptions: a clinic's own prescriptions of one patient, by issue date, through the
//! [`Table::ByPatient`] index, keyed by institution first so that a search reads no other
//! institution's entries (its cost, and so its timing, tells nothing of other clinics'
//! prescriptions); and the migration of an index written before that. Knows no gRPC and no
//! storage engine.

use std::sync::Arc;

use crate::{
    domain::{patient::PatientKey, time::JapanDate},
    store::{self, Store, Table, Txn},
};

use super::{
    Action, Caller, Error, Gateway, PatientPseudonym, Pseudonyms, Status, decode,
    records::{PrescriptionRecord, PrescriptionV3},
    schema::{
        SEARCH_INDEX_LAYOUT_KEY, TEXT_KEYS_END, by_patient_key, by_patient_range, id_of_by_patient,
        is_old_by_patient_key, prescription_key, successor,
    },
    stored::{Stored, corrupt, status_of},
};

/// The widest issue-date range one search covers, in days.
const SEARCH_MAX_DAYS: i32 = 366;

/// The search index entry of a prescription of `patient`.
pub(super) fn index_key(record: &PrescriptionV3, patient: &PatientPseudonym) -> Vec<u8> {
    by_patient_key(&record.institution, patient, &record.issue_date, &record.id)
}

/// What one search asks.
struct Query {
    institution: String,
    patient: PatientPseudonym,
    from: JapanDate,
    to: JapanDate,
    limit: usize,
}

impl Gateway {
    /// The caller's prescriptions for one patient issued within [from, to].
    pub async fn search(
        &self,
        caller: &Caller,
        patient: PatientKey,
        from: JapanDate,
        to: JapanDate,
    ) -> Result<Vec<Status>, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let draft = self.draft(caller, Action::SearchPrescriptions, now);
        if from > to || from.days_until(to) > SEARCH_MAX_DAYS {
            return self
                .refuse(
                    draft,
                    Error::invalid(
                        "issued_from",
                        "must not be after issued_to, nor more than 366 days before it",
                    ),
                )
                .await;
        }
        let query = Query {
            institution: caller.institution.code.to_string(),
            patient: self.config.pseudonyms.in_keys(patient.canonical()),
            from,
            to,
            limit: self.config.search_limit,
        };
        self.run(draft, move |tx, _| search(tx, &query, today))
            .await
    }
}

/// The search: at most `limit` entries of the caller's own part of the index, each loaded.
fn search(tx: &dyn Txn, query: &Query, today: JapanDate) -> Result<Vec<Status>, Error> {
    let range = by_patient_range(
        &query.institution,
        &query.patient,
        &query.from.to_string(),
        &query.to.add_days(1).to_string(),
    );
    let mut found = Vec::new();
    for (k, _) in tx.scan_range(Table::ByPatient, &range.start, &range.end, query.limit)? {
        let stored =
            Stored::load(tx, &id_of(&k)?)?.ok_or_else(|| corrupt("index without prescription"))?;
        found.push(status_of(tx, stored, today)?);
    }
    Ok(found)
}

/// The prescription id an index key ends in.
fn id_of(index_key: &[u8]) -> Result<String, store::Error> {
    String::from_utf8(id_of_by_patient(index_key).to_vec()).map_err(|_| corrupt("prescription id"))
}

/// Index entries one migration transaction reads.
const MIGRATION_CHUNK: usize = 1_000;

/// Rewrites a search index of the layout before this one ((patient key, issue date, id), three
/// parts) into the current one, the patient named by the pseudonym under `pseudonyms`, a chunk
/// per transaction, and marks the store so that later starts skip it; returns how many entries
/// it moved. Safe to interrupt: a chunk writes its new entries and deletes the old ones in one
/// transaction, and the next start goes on.
pub(in crate::service) async fn migrate_search_index(
    store: &Arc<dyn Store>,
    pseudonyms: &Pseudonyms,
) -> Result<u64, store::Error> {
    let done = store
        .transact(|tx| {
            Ok::<_, store::Error>(tx.get(Table::Meta, SEARCH_INDEX_LAYOUT_KEY)?.is_some())
        })
        .await??;
    if done {
        return Ok(0);
    }
    let (mut moved, mut from) = (0, Some(Vec::new()));
    while let Some(start) = from.take() {
        let pseudonyms = pseudonyms.clone();
        let (next, n) = store
            .transact(move |tx| migrate_chunk(tx, &start, &pseudonyms))
            .await??;
        (moved, from) = (moved + n, next);
    }
    store
        .transact(|tx| {
            tx.put(Table::Meta, SEARCH_INDEX_LAYOUT_KEY, b"");
            Ok::<_, store::Error>(())
        })
        .await??;
    if moved > 0 {
        tracing::info!(entries = moved, "search index keyed by institution");
    }
    Ok(moved)
}

/// Moves the old-layout entries among the `MIGRATION_CHUNK` keys from `from` on; returns where
/// the next chunk starts (none after the last) and how many it moved.
fn migrate_chunk(
    tx: &mut dyn Txn,
    from: &[u8],
    pseudonyms: &Pseudonyms,
) -> Result<(Option<Vec<u8>>, u64), store::Error> {
    let rows = tx.scan_range(Table::ByPatient, from, TEXT_KEYS_END, MIGRATION_CHUNK)?;
    let next = match rows.last() {
        Some((last, _)) if rows.len() == MIGRATION_CHUNK => Some(successor(last)),
        _ => None,
    };
    let mut moved = 0;
    for (k, _) in rows.iter().filter(|(k, _)| is_old_by_patient_key(k)) {
        tx.delete(Table::ByPatient, k);
        if let Some(bytes) = tx.get(Table::Prescriptions, prescription_key(&id_of(k)?))? {
            let record = decode::<PrescriptionRecord>(&bytes)?.current();
            let patient = pseudonyms.in_keys(&record.patient_key);
            tx.put(Table::ByPatient, &index_key(&record, &patient), b"");
            moved += 1;
        }
    }
    Ok((next, moved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        service::{
            records::{PrescriptionRecord, SignatureV1, StateV1, encode},
            schema::old_by_patient_key,
            testing::{self, fixed_pseudonyms, keyed},
        },
        store::{self, EmbeddedStore, Store},
    };

    /// The patient every prescription of the test is for.
    fn patient() -> PatientKey {
        PatientKey::public_funds("12345678", "1234567").unwrap()
    }
    const TODAY: &str = "2026-12-01";

    /// Stores a prescription of `institution` for the patient, indexed as registration does.
    fn prescribe(tx: &mut dyn Txn, id: &str, institution: &str) {
        let record = PrescriptionV3 {
            id: id.into(),
            institution: institution.into(),
            number: id.into(),
            patient_key: patient().canonical().into(),
            exchange_number: 1,
            issue_date: TODAY.into(),
            usable_through: "2026-12-04".into(),
            state: StateV1::Registered,
            returned_by: None,
            accepted_on: None,
            line_count: 1,
            refill_count: 1,
            content: Arc::from([]),
            cms: SignatureV1::whole(Vec::new()),
            content_sha256: [0; 32],
            signer_serial_number: String::new(),
            signer_certificate_sha256: [0; 32],
            received_at_ms: 0,
            records: 0,
            refill_window: None,
            accepted_at_ms: None,
            last_record_at_ms: None,
        };
        tx.put(
            Table::ByPatient,
            &index_key(&record, &keyed(&record.patient_key)),
            b"",
        );
        let bytes = encode(&PrescriptionRecord::V3(record));
        tx.put(Table::Prescriptions, prescription_key(id), &bytes);
    }

    /// The reads of one clinic's search for the patient, with `others` prescriptions of other
    /// clinics beside its own two.
    async fn reads_with(others: usize) -> (usize, usize) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let counted = store
            .transact(move |tx: &mut dyn Txn| {
                for n in 0..others {
                    // Before and after the caller's own in the index.
                    let other = if n % 2 == 0 {
                        "1310000000"
                    } else {
                        "1310000009"
                    };
                    prescribe(tx, &format!("other{n:04}"), other);
                }
                prescribe(tx, "own1", "1310000001");
                prescribe(tx, "own2", "1310000001");
                let today: JapanDate = TODAY.parse().unwrap();
                let query = Query {
                    institution: "1310000001".into(),
                    patient: keyed(patient().canonical()),
                    from: today,
                    to: today,
                    limit: 100,
                };
                let counting = testing::Noting::new(tx);
                let found = search(&counting, &query, today)?;
                Ok::<_, Error>((found.len(), counting.reads.get()))
            })
            .await
            .unwrap()
            .unwrap();
        store.close().unwrap();
        counted
    }

    #[tokio::test]
    async fn an_index_of_the_old_layout_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        store
            .transact(|tx: &mut dyn Txn| {
                prescribe(tx, "own1", "1310000001");
                // As versions before this one indexed it, and an entry without a prescription.
                let patient = patient();
                let own = by_patient_key("1310000001", &keyed(patient.canonical()), TODAY, "own1");
                tx.delete(Table::ByPatient, &own);
                let old = |id| old_by_patient_key(patient.canonical(), TODAY, id);
                tx.put(Table::ByPatient, &old("own1"), b"");
                tx.put(Table::ByPatient, &old("gone"), b"");
                Ok::<_, store::Error>(())
            })
            .await
            .unwrap()
            .unwrap();
        let pseudonyms = fixed_pseudonyms();
        assert_eq!(migrate_search_index(&store, &pseudonyms).await, Ok(1));
        assert_eq!(migrate_search_index(&store, &pseudonyms).await, Ok(0));
        let index = store
            .transact(|tx: &mut dyn Txn| tx.scan_prefix(Table::ByPatient, b"", 10))
            .await
            .unwrap()
            .unwrap();
        let keys: Vec<_> = index.into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [by_patient_key(
                "1310000001",
                &keyed(patient().canonical()),
                TODAY,
                "own1"
            )]
        );
    }

    #[tokio::test]
    async fn a_search_reads_no_other_institutions_prescriptions() {
        let alone = reads_with(0).await;
        assert_eq!(alone.0, 2, "the clinic's own two");
        assert_eq!(reads_with(500).await, alone);
    }
}
