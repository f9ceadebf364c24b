//! The store's schema: every table's key layouts, one function or constant per kind of key,
//! and the typed columns of the tables an SQL engine would expose beside a row's key and value.
//! No other module spells a key prefix or joins key parts; they call these. The bytes are the
//! on-disk format: stores written by earlier versions must read the same, which the tests at
//! the end pin to literal bytes. Knows the stored records, nothing of gRPC or of an engine.
//!
//! By table (each file says what every key indexes):
//! - `prescriptions.rs`: `Prescriptions`, `ByExchange`, `ByPatient`, `ByNumber`, `Documents`,
//!   `Dispensings`, `Certificates`, and in `Meta` the indexes of accepted prescriptions and of
//!   active ones by expiry and the search index's layout mark;
//! - `events.rs`: `Events`, `EventsByInstitution`, and in `Meta` the log's retained floor and
//!   the relay's acknowledged position;
//! - `clinical.rs`: `Medications` (with the per-line layout of earlier versions that its
//!   migration reads), `Clinical` (check budgets, consents, acknowledged findings, imported
//!   master files, each under a prefix of its own) and in `Meta` the history's layout mark;
//! - `audit.rs`: `Audit` (unchained records and chain links) and `AuditChain` (heads,
//!   checkpoints, each signer's last checkpoint);
//! - `intake.rs`: `Intake` (delivered records by id and by arrival, the relay's dead letters);
//! - `lockouts.rs`: `Lockouts` (miss counters of pharmacies and patients, miss marks);
//! - `leases.rs`: in `Meta` the leases that let one gateway of a fleet do a task (the relay);
//! - `layout.rs`: in `Meta` the number of the layout that wrote the store, and its bytes, and
//!   the fingerprint of the pseudonym key the store's patient keys were made under;
//! - `patient_keys.rs`: the kinds of key above that name a patient, and where;
//! - `counted.rs`: the kinds of key above that hold a number drawn from a counter, and which.
//!
//! No key holds a patient identifier: a key that names a patient holds its keyed pseudonym
//! (`service::pseudonym::PatientPseudonym`, 64 hex digits), never the canonical patient key,
//! since an SQL engine indexes keys and prints them in its server log (a unique violation's
//! detail). Only the layouts of earlier versions that their migrations read take a canonical
//! patient key.
//!
//! `Meta` also holds the store's own counters, `sequence/NAME` (`Txn::next_sequence`,
//! `Txn::unique_sequence`), laid out by `store/mod.rs` itself because its default methods write
//! them; no key of this module starts with `sequence/`.
//!
//! Text parts (institution codes, pseudonyms, ids, dates) never hold a zero byte or 0xFF, so
//! a zero byte can end a part and a key of text parts sorts below [`TEXT_KEYS_END`].
//!
//! The sequences a key holds, and what each needs:
//! - the event log's (`Events`): gap-free and in commit order, since a feed resumes after the
//!   last sequence it read ([`Txn::next_sequence`](crate::store::Txn::next_sequence));
//! - an intake's arrival, a consent's, an imported file's: unique and increasing in the order
//!   they were drawn, gaps allowed ([`Txn::unique_sequence`](crate::store::Txn::unique_sequence));
//! - an audit link's: the writer's own (its head's sequence plus one), gap-free along the chain,
//!   which the head row written with each link keeps; one gateway writes each chain, so no two
//!   writers share a row. The unchained records of older stores were keyed by the store-wide
//!   counter `audit`, which is now only read (a chain's genesis link records how far it went).

/// Declares columns as an SQL table would: `name: Kind` each (a `store::ColumnType`), followed by
/// `nullable` for a column a row may leave empty.
macro_rules! columns {
    ($($name:ident: $kind:ident $($nullable:ident)?),* $(,)?) => {
        [$($crate::store::Column {
            name: stringify!($name),
            kind: $crate::store::ColumnType::$kind,
            nullable: columns!(@nullable $($nullable)?),
        }),*]
    };
    (@nullable nullable) => { true };
    (@nullable) => { false };
}

mod audit;
mod clinical;
mod counted;
mod events;
mod intake;
mod layout;
mod leases;
mod lockouts;
mod patient_keys;
mod prescriptions;

pub use audit::*;
pub(in crate::service) use clinical::*;
pub(in crate::service) use counted::*;
pub(in crate::service) use events::*;
pub(in crate::service) use intake::*;
pub(in crate::service) use layout::*;
pub(in crate::service) use leases::*;
pub(in crate::service) use lockouts::*;
pub(in crate::service) use patient_keys::*;
pub(in crate::service) use prescriptions::*;

use crate::store::{self, Column, Columns, Table, Txn, Value};

use super::{
    Pseudonyms,
    records::{AuditRecord, EventRecord, PrescriptionRecord, StoredDispensingRecord, decode},
};

/// The store's counters the service draws from, by name (kept in `Meta` as `sequence/NAME`).
/// The event log's: gap-free and in commit order (`Txn::next_sequence`).
pub(in crate::service) const EVENT_SEQUENCE: &str = "event";
/// An intake's arrival numbers (`Txn::unique_sequence`).
pub(in crate::service) const INTAKE_SEQUENCE: &str = "intake";
/// The numbers of consents (`Txn::unique_sequence`).
pub(in crate::service) const CONSENT_SEQUENCE: &str = "consent";
/// The draws that order the events waiting for their numbers (`Txn::unique_sequence`).
pub(in crate::service) const PENDING_EVENT_SEQUENCE: &str = "pending-event";
/// The numbers of imported master files (`Txn::unique_sequence`).
pub(in crate::service) const IMPORT_SEQUENCE: &str = "import";
/// The number of master files imported into the store: the imports' version, set with the files
/// by each import (which refuses to go on if it moved since the import read it) and read by
/// every gateway's import watch (import_watch.rs). Not drawn from: set.
pub(in crate::service) const IMPORTED_FILES: &str = "imported-files";
/// The store-wide counter the unchained audit records of older stores were keyed by: only read
/// now, by a chain's genesis link.
pub(in crate::service) const UNCHAINED_AUDIT_SEQUENCE: &str = "audit";

/// A composite key: `parts` joined by a zero byte.
fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

/// Above every key that starts with UTF-8 text (which never holds the byte 0xFF): the end of a
/// walk over a whole table of such keys.
pub(in crate::service) const TEXT_KEYS_END: &[u8] = &[0xFF];

/// The smallest key after `key`: where a paged walk goes on after the last key it read.
pub(in crate::service) fn successor(key: &[u8]) -> Vec<u8> {
    [key, &[0]].concat()
}

/// The end of the keys that start with `prefix`, `prefix` ending in a zero byte: the prefix
/// with that byte raised to 1.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    debug_assert_eq!(end.last(), Some(&0), "a prefix ends in a separator");
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// A range of keys: from `start` (included) to `end` (excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::service) struct Range {
    pub(in crate::service) start: Vec<u8>,
    pub(in crate::service) end: Vec<u8>,
}

/// The typed columns of one row as its table declares them ([`columns_of`]): what
/// `Txn::put_row` is handed. The values borrow the record being written; building a row
/// allocates nothing.
pub(in crate::service) struct Row<'a, const N: usize> {
    declared: &'static [Column],
    values: [Value<'a>; N],
}

impl<'a, const N: usize> Row<'a, N> {
    /// The row of `table` with `values`, in the order of its declared columns.
    fn new(table: Table, values: [Value<'a>; N]) -> Self {
        let declared = columns_of(table);
        debug_assert_eq!(
            declared.len(),
            N,
            "{table:?} declares another number of columns"
        );
        debug_assert!(
            values.iter().zip(declared).all(|(v, c)| v.fits(c)),
            "a value of {table:?} does not fit its column"
        );
        Row { declared, values }
    }

    pub(in crate::service) fn columns(&self) -> Columns<'_> {
        Columns {
            declared: self.declared,
            values: &self.values,
        }
    }
}

/// The text of an optional value, or NULL.
fn text_or_null(text: Option<&str>) -> Value<'_> {
    text.map_or(Value::Null, Value::Text)
}

/// The columns each table declares: what an engine that keeps typed columns exposes beside the
/// key and the value, so that common questions need no decoding of the stored records. Tables
/// without any are indexes, counters, or records no such question reads.
pub fn columns_of(table: Table) -> &'static [Column] {
    match table {
        Table::Prescriptions => &PRESCRIPTION_COLUMNS,
        Table::Dispensings => &DISPENSING_COLUMNS,
        Table::Events => &EVENT_COLUMNS,
        Table::Audit => &AUDIT_COLUMNS,
        Table::ByExchange
        | Table::ByPatient
        | Table::ByNumber
        | Table::Documents
        | Table::Meta
        | Table::Medications
        | Table::Clinical
        | Table::EventsByInstitution
        | Table::Intake
        | Table::Certificates
        | Table::Lockouts
        | Table::AuditChain => &[],
    }
}

/// Refuses `key` of `table` if it names a patient in clear, as stores of layout 1 and before
/// wrote it (a dump of one): what a database that indexes its keys must never hold.
pub fn refuse_clear_patient_key(table: Table, key: &[u8]) -> Result<(), store::Error> {
    for kind in patient_keys::patient_keyed() {
        let within = kind.range.start.as_slice() <= key && key < kind.range.end.as_slice();
        if kind.table == table && within && kind.clear_patient(key)?.is_some() {
            return Err(store::Error::Unsupported(
                "the dump names patients in clear in its keys (a store of layout 1): load it \
                 into fjall, start a gateway on it once (which migrates it), export it again \
                 and import that"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Writes an entry copied from a store (a dump's) as the service writes it: a record of a
/// table that declares typed columns is decoded for its row and written, bytes unchanged, with
/// `Txn::put_row` (an engine that keeps columns refuses a plain put there); any other entry
/// with a plain put. The one way `store import` and `restore` load a dump, into every engine.
/// A prescription's row names its patient by the pseudonym under `pseudonyms`.
pub fn put_record(
    tx: &mut dyn Txn,
    table: Table,
    key: &[u8],
    value: &[u8],
    pseudonyms: &Pseudonyms,
) -> Result<(), store::Error> {
    match table {
        Table::Prescriptions => {
            let record = decode::<PrescriptionRecord>(value)?.current();
            let pseudonym = pseudonyms.of(&record.patient_key);
            let row = prescription_row(&record, &pseudonym);
            tx.put_row(table, key, value, row.columns());
        }
        Table::Dispensings => {
            let record = decode::<StoredDispensingRecord>(value)?.current();
            tx.put_row(table, key, value, dispensing_row(&record).columns());
        }
        Table::Events => {
            let event = decode::<EventRecord>(value)?;
            let row = event_row(event_sequence(key)?, &event);
            tx.put_row(table, key, value, row.columns());
        }
        Table::Audit => {
            let record = decode::<AuditRecord>(value)?;
            tx.put_row(table, key, value, audit_row(&record).columns());
        }
        // No columns (a test pins that every table that declares some is matched above).
        _ => tx.put(table, key, value),
    }
    Ok(())
}

/// What a `Meta` key holds, but for the store's own counters (`store::sequence_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::service) enum MetaKind {
    /// The layout stamp ([`LAYOUT_KEY`]).
    Layout,
    /// A finished migration's mark.
    LayoutMark,
    /// The index of accepted prescriptions, with the id.
    Accepted(String),
    /// The index of active prescriptions by expiry, with the id.
    Expiry(String),
    /// The event log's floor, or the relay's acknowledged position: a sequence, 8 bytes.
    Position,
    /// The pseudonym key's fingerprint ([`PSEUDONYM_KEY_FINGERPRINT_KEY`]).
    PseudonymKeyFingerprint,
    /// An event waiting for its number ([`pending_event_key`]), with its draw.
    PendingEvent(u64),
    /// A lease ([`lease_key`]).
    Lease,
}

/// The kind of a `Meta` key; `None` for a key of no kind (or a counter's).
pub(in crate::service) fn meta_kind(key: &[u8]) -> Option<MetaKind> {
    let accepted = accepted_range();
    Some(match key {
        LAYOUT_KEY => MetaKind::Layout,
        HISTORY_LAYOUT_KEY | SEARCH_INDEX_LAYOUT_KEY => MetaKind::LayoutMark,
        EVENTS_FLOOR_KEY | RELAY_ACKED_KEY => MetaKind::Position,
        PSEUDONYM_KEY_FINGERPRINT_KEY => MetaKind::PseudonymKeyFingerprint,
        _ if (accepted.start.as_slice()..accepted.end.as_slice()).contains(&key) => {
            MetaKind::Accepted(id_of_accepted(key))
        }
        _ if is_expiry_key(key) => MetaKind::Expiry(id_of_expiry(key)),
        _ if is_lease_key(key) => MetaKind::Lease,
        _ => MetaKind::PendingEvent(pending_event_draw(key)?),
    })
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::{
        service::{
            records::SlotV1,
            testing::{self, keyed},
        },
        store::{self, Answer, EmbeddedStore, Stats, Store, Txn, TxnFn},
    };

    /// A canonical patient key, and its pseudonym under `testing::fixed_pseudonyms` as the keys
    /// hold it (`service::pseudonym` pins the function).
    const CLEAR: &str = "pub|8:12345678|7:1234567";
    const P: &[u8] = b"7cccc778898c1feaf3f921093f2bbfaac8300c69af169abd42b34c511c08c8a9";

    /// The layouts as earlier versions wrote them, byte for byte: changing one makes every
    /// store written before unreadable.
    #[test]
    fn key_layouts_are_the_stored_bytes() {
        let writer = [7u8; 32];
        let p = keyed(CLEAR);
        let n = |v: u64| v.to_be_bytes();
        let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            (
                "prescription",
                prescription_key("id1").to_vec(),
                b"id1".to_vec(),
            ),
            (
                "exchange",
                exchange_key(&p, 42),
                [P, b"\x00000042"].concat(),
            ),
            (
                "by patient",
                by_patient_key("1310000001", &p, "2026-12-01", "id1"),
                [b"1310000001\0", P, b"\x002026-12-01\0id1"].concat(),
            ),
            (
                "by patient, earlier layout",
                old_by_patient_key("P", "2026-12-01", "id1"),
                b"P\x002026-12-01\0id1".to_vec(),
            ),
            (
                "number",
                number_key("1310000001", "N-1"),
                b"1310000001\0N-1".to_vec(),
            ),
            (
                "dispensing",
                dispensing_key("id1", 2),
                b"id1\0\0\0\0\x02".to_vec(),
            ),
            ("dispensings of", dispensings_of("id1"), b"id1\0".to_vec()),
            ("accepted", accepted_key("id1"), b"accepted\0id1".to_vec()),
            (
                "expiry",
                expiry_key("2026-12-04", "id1"),
                b"expiry\x002026-12-04\0id1".to_vec(),
            ),
            ("event", event_key(258).to_vec(), n(258).to_vec()),
            (
                "pending event",
                pending_event_key(258),
                [b"events\0pending\0".as_slice(), &n(258)].concat(),
            ),
            (
                "institution event",
                institution_event_key("1310000001", 258),
                [b"1310000001\0".as_slice(), &n(258)].concat(),
            ),
            ("history", history_key(&p).to_vec(), P.to_vec()),
            (
                "history, per-line layout, prescribed",
                old_prescribed_line_key("P", "id1", 3),
                b"P\0rx\0id1\0\0\0\0\x03".to_vec(),
            ),
            (
                "history, per-line layout, dispensed",
                old_dispensed_line_key("P", "2026-12-20", "id1", 1, 3),
                b"P\0d\x002026-12-20\0id1\0\0\0\0\x01\0\0\0\0\x03".to_vec(),
            ),
            (
                "check budget",
                check_budget_key(&p),
                [b"check-budget\0", P].concat(),
            ),
            (
                "consent",
                consent_key(&p, 5),
                [b"consent\0", P, b"\0", &n(5)].concat(),
            ),
            ("override", override_key("id1"), b"override\0id1".to_vec()),
            (
                "import",
                import_key(5),
                [b"import\0".as_slice(), &n(5)].concat(),
            ),
            ("unchained audit", unchained_key(5).to_vec(), n(5).to_vec()),
            (
                "audit link",
                link_key(&writer, 5),
                [b"c".as_slice(), &writer, &n(5)].concat(),
            ),
            (
                "head",
                head_key(&writer),
                [b"head\0".as_slice(), &writer].concat(),
            ),
            (
                "checkpoint",
                checkpoint_key(&writer, 5),
                [b"checkpoint\0".as_slice(), &writer, &n(5)].concat(),
            ),
            (
                "last checkpoint",
                last_checkpoint_key(&writer),
                [b"last-checkpoint\0".as_slice(), &writer].concat(),
            ),
            (
                "intake record",
                intake_record_key("ab"),
                b"record\0ab".to_vec(),
            ),
            (
                "arrival",
                arrival_key(5),
                [b"arrival\0".as_slice(), &n(5)].concat(),
            ),
            (
                "dead letter",
                dead_letter_key(5),
                [b"dead\0".as_slice(), &n(5)].concat(),
            ),
            (
                "pharmacy misses",
                pharmacy_counter_key("1340000001"),
                b"pharmacy\x001340000001".to_vec(),
            ),
            (
                "patient misses",
                patient_counter_key(&writer),
                [b"patient\0".as_slice(), &writer].concat(),
            ),
            (
                "miss mark",
                miss_mark_key(&writer, "1340000001"),
                [b"missed\0".as_slice(), &writer, b"1340000001"].concat(),
            ),
            ("lease", lease_key("relay"), b"lease\0relay".to_vec()),
        ];
        for (what, built, stored) in cases {
            assert_eq!(built, stored, "{what}");
        }
        let meta: [(&[u8], &[u8]); 6] = [
            (LAYOUT_KEY, b"layout"),
            (PSEUDONYM_KEY_FINGERPRINT_KEY, b"pseudonym-key-fingerprint"),
            (EVENTS_FLOOR_KEY, b"events\0floor"),
            (RELAY_ACKED_KEY, b"relay\0acked"),
            (HISTORY_LAYOUT_KEY, b"layout/history-per-patient"),
            (
                SEARCH_INDEX_LAYOUT_KEY,
                b"layout/search-index-by-institution",
            ),
        ];
        let counters = [
            EVENT_SEQUENCE,
            INTAKE_SEQUENCE,
            CONSENT_SEQUENCE,
            IMPORT_SEQUENCE,
            UNCHAINED_AUDIT_SEQUENCE,
            PENDING_EVENT_SEQUENCE,
            IMPORTED_FILES,
        ];
        assert_eq!(
            counters,
            [
                "event",
                "intake",
                "consent",
                "import",
                "audit",
                "pending-event",
                "imported-files"
            ]
        );
        for (built, stored) in meta {
            assert_eq!(built, stored);
            assert!(!built.starts_with(b"sequence/"), "the store's counters");
        }
        assert_eq!(layout_stamp(258), [0, 0, 1, 2]);
        assert_eq!(layout_of_stamp(&[0, 0, 1, 2]), Ok(258));
        assert!(layout_of_stamp(&[1, 2]).is_err(), "a stamp is 4 bytes");
        assert_eq!(certificate_key(&[9; 32]), [9; 32]);
        assert_eq!(document_key(&[9; 32]), [9; 32]);
    }

    #[test]
    fn ranges_cover_their_keys_and_nothing_beside() {
        let accepted = accepted_range();
        assert_eq!(accepted.start, b"accepted\0");
        assert_eq!(accepted.end, b"accepted\x01");
        let expired = expired_before("2026-12-02");
        assert_eq!(expired.start, b"expiry\0");
        assert!(expiry_key("2026-12-01", "z").as_slice() < expired.end.as_slice());
        assert!(expiry_key("2026-12-02", "a").as_slice() >= expired.end.as_slice());
        assert_eq!(id_of_accepted(&accepted_key("id1")), "id1");
        assert_eq!(id_of_expiry(&expiry_key("2026-12-04", "id1")), "id1");

        let own = institution_events_after("1310000001", 7);
        assert_eq!(own.start, institution_event_key("1310000001", 8));
        assert_eq!(own.end, b"1310000001\x01");
        assert_eq!(
            institution_event_sequence(&institution_event_key("1310000001", 258)).unwrap(),
            258
        );
        assert_eq!(events_after(7).start, event_key(8).to_vec());

        let counters = lockout_counters();
        assert_eq!(counters.start, b"patient\0");
        assert_eq!(counters.end, b"pharmacy\x01");
        assert!(is_miss_mark(&miss_mark_key(&[1; 32], "1340000001")));
        assert_eq!(
            lockout_counter_of(&pharmacy_counter_key("1340000001")),
            Some(LockoutCounter::Pharmacy(b"1340000001"))
        );

        let checkpoints = checkpoint_range();
        assert_eq!(checkpoints.start, b"checkpoint\0");
        assert_eq!(checkpoints.end, b"checkpoint\x01");
        assert_eq!(parse_key(&link_key(&[1; 32], 9)), Ok((Some([1; 32]), 9)));
        assert_eq!(parse_key(&unchained_key(9)), Ok((None, 9)));
    }

    /// Each kind of key of the tables that hold several is told back from the key alone, as
    /// `service::verify` reads them; a key of none is none.
    #[test]
    fn every_kind_of_key_is_told_by_its_prefix() {
        let p = keyed(CLEAR);
        let consent = consent_key(&p, 5);
        let (clinical, rest) = clinical_kind(&consent).unwrap();
        assert_eq!(clinical, ClinicalKind::Consent(5));
        assert_eq!(rest, [P, b"\0\0\0\0\0\0\0\0\x05"].concat());
        let clinical = [
            (check_budget_key(&p), ClinicalKind::CheckBudget),
            (override_key("id1"), ClinicalKind::Override),
            (import_key(7), ClinicalKind::Import(7)),
        ];
        for (key, kind) in clinical {
            assert_eq!(clinical_kind(&key).map(|(k, _)| k), Some(kind));
        }
        assert_eq!(clinical_kind(&override_key("id1")).unwrap().1, b"id1");
        assert_eq!(clinical_kind(b"other\0"), None);

        let intake = [
            (intake_record_key("ab"), IntakeKind::Record),
            (arrival_key(9), IntakeKind::Arrival(9)),
            (dead_letter_key(9), IntakeKind::DeadLetter),
        ];
        for (key, kind) in intake {
            assert_eq!(intake_kind(&key).map(|(k, _)| k), Some(kind));
        }
        assert_eq!(intake_kind(b"recorded"), None);

        let chain = [
            (head_key(&[1; 32]), AuditChainKind::Head),
            (checkpoint_key(&[1; 32], 2), AuditChainKind::Checkpoint),
            (
                last_checkpoint_key(&[1; 32]),
                AuditChainKind::LastCheckpoint,
            ),
        ];
        for (key, kind) in chain {
            assert_eq!(audit_chain_kind(&key), Some(kind));
        }
        assert_eq!(audit_chain_kind(b"heads"), None);

        let meta = [
            (LAYOUT_KEY.to_vec(), MetaKind::Layout),
            (HISTORY_LAYOUT_KEY.to_vec(), MetaKind::LayoutMark),
            (
                PSEUDONYM_KEY_FINGERPRINT_KEY.to_vec(),
                MetaKind::PseudonymKeyFingerprint,
            ),
            (RELAY_ACKED_KEY.to_vec(), MetaKind::Position),
            (lease_key("relay"), MetaKind::Lease),
            (pending_event_key(258), MetaKind::PendingEvent(258)),
            (accepted_key("id1"), MetaKind::Accepted("id1".into())),
            (
                expiry_key("2026-12-04", "id1"),
                MetaKind::Expiry("id1".into()),
            ),
        ];
        for (key, kind) in meta {
            assert_eq!(meta_kind(&key), Some(kind));
        }
        assert_eq!(meta_kind(b"sequence/event"), None);
        assert_eq!(store::sequence_name(b"sequence/event"), Some(&b"event"[..]));
    }

    #[test]
    fn the_per_line_history_keys_read_back() {
        let prescribed = old_prescribed_line_key("P", "id1", 3);
        let (patient, slot) = old_history_entry(&prescribed).unwrap().unwrap();
        assert_eq!((patient, slot), ("P", SlotV1::Undispensed { line: 3 }));
        let dispensed = old_dispensed_line_key("P", "2026-12-20", "id1", 1, 3);
        let (_, slot) = old_history_entry(&dispensed).unwrap().unwrap();
        assert_eq!(
            slot,
            SlotV1::Dispensed {
                last_day: "2026-12-20".into(),
                record: 1,
                line: 3
            }
        );
        assert_eq!(old_history_entry(history_key(&keyed(CLEAR))), Ok(None));
        assert!(is_old_by_patient_key(&old_by_patient_key(
            "P",
            "2026-12-01",
            "id1"
        )));
        assert!(!is_old_by_patient_key(&by_patient_key(
            "1",
            &keyed(CLEAR),
            "2026-12-01",
            "id1"
        )));
    }

    /// Each kind of key that names a patient, as layout 1 wrote it (the canonical patient key
    /// where a pseudonym now sits), is told apart from the current one, and rewritten into it
    /// with all else unchanged, a consent's binary number included.
    #[test]
    fn clear_patient_keys_are_rewritten_into_the_current_layout() {
        let p = keyed(CLEAR);
        let c = CLEAR.as_bytes();
        let layout_1: [(Table, Vec<u8>, Vec<u8>); 5] = [
            (
                Table::ByExchange,
                [c, b"\x00000042"].concat(),
                exchange_key(&p, 42),
            ),
            (
                Table::ByPatient,
                [b"1310000001\0", c, b"\x002026-12-01\0id1"].concat(),
                by_patient_key("1310000001", &p, "2026-12-01", "id1"),
            ),
            (Table::Medications, c.to_vec(), history_key(&p).to_vec()),
            (
                Table::Clinical,
                [b"check-budget\0", c].concat(),
                check_budget_key(&p),
            ),
            (
                Table::Clinical,
                [b"consent\0", c, b"\0", &256u64.to_be_bytes()].concat(),
                consent_key(&p, 256),
            ),
        ];
        for (kind, (table, old, new)) in patient_keyed().iter().zip(layout_1) {
            assert_eq!(kind.table, table);
            let within = kind.range.start.as_slice()..kind.range.end.as_slice();
            assert!(within.contains(&old.as_slice()) && within.contains(&new.as_slice()));
            assert_eq!(kind.clear_patient(&old), Ok(Some(CLEAR)), "{table:?}");
            assert_eq!(kind.with_pseudonym(&old, &p), new, "{table:?}");
            assert_eq!(kind.clear_patient(&new), Ok(None), "{table:?}");
        }
        assert!(
            patient_keyed()[3].range.end <= consents().start,
            "budgets, then consents"
        );
        let without_patient = patient_keyed()[3].clear_patient(b"check-budget\0");
        assert!(matches!(without_patient, Err(store::Error::Corrupt(_))));
    }

    /// A store whose transactions run through [`testing::Noting`], the writes of all kept in
    /// `log`.
    struct Recorded {
        inner: EmbeddedStore,
        log: Arc<Mutex<Vec<testing::Written>>>,
    }

    impl Store for Recorded {
        fn submit(&self, f: TxnFn) -> Answer {
            let log = Arc::clone(&self.log);
            self.inner.submit(Box::new(move |tx: &mut dyn Txn| {
                let mut noting = testing::Noting::new(tx);
                let outcome = f(&mut noting);
                log.lock().unwrap().extend(noting.written);
                outcome
            }))
        }
        fn stats(&self) -> Stats {
            self.inner.stats()
        }
        fn failure(&self) -> Option<store::Error> {
            self.inner.failure()
        }
        fn snapshot(&self) -> store::SnapshotAnswer {
            self.inner.snapshot()
        }
    }

    /// A gateway over a [`Recorded`] store in `dir`, after a registration, a receipt and a
    /// dispensing record: the gateway, its store and every write it made.
    async fn filled(
        dir: &std::path::Path,
    ) -> (
        Arc<super::super::Gateway>,
        Arc<Recorded>,
        Vec<testing::Written>,
    ) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::new(Recorded {
            inner: EmbeddedStore::open(dir).unwrap(),
            log: Arc::clone(&log),
        });
        let (gateway, _) = testing::gateway_over(store.clone());
        let registered = testing::register(&gateway, "COL-1", 1).await;
        testing::receive(&gateway, &registered, 1).await;
        testing::dispense(&gateway, "COL-1").await;
        let written = log.lock().unwrap().clone();
        (gateway, store, written)
    }

    /// A registration, a receipt and a dispensing record through a real gateway: every row of a
    /// table that declares columns is written with them, as declared, and a prescription's
    /// patient column holds the patient's pseudonym, not the patient key.
    #[tokio::test]
    async fn rows_are_written_with_the_columns_their_table_declares() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _, written) = filled(dir.path()).await;
        let (_, patient) = testing::patient(1);

        let mut with_columns = BTreeSet::new();
        for (table, row) in &written {
            if columns_of(*table).is_empty() {
                assert!(row.is_none(), "{table:?} declares no columns");
                continue;
            }
            let Some((_, fits)) = row else {
                panic!("a row of {table:?} written without its columns");
            };
            assert!(fits, "a row of {table:?} does not match its declaration");
            with_columns.insert(format!("{table:?}"));
        }
        assert_eq!(
            with_columns.into_iter().collect::<Vec<_>>(),
            ["Audit", "Dispensings", "Events", "Prescriptions"]
        );

        let pseudonym = gateway.config.pseudonyms.of(patient.canonical());
        let pseudonym = format!("{:?}", Value::Bytes(&pseudonym));
        let prescriptions: Vec<_> = (written.iter())
            .filter(|(t, _)| *t == Table::Prescriptions)
            .filter_map(|(_, row)| row.as_ref())
            .collect();
        assert_eq!(prescriptions.len(), 3, "registered, accepted, dispensed");
        for (columns, _) in prescriptions {
            let named = columns
                .iter()
                .find(|(name, _)| *name == "patient_pseudonym");
            assert_eq!(named.map(|(_, v)| v), Some(&pseudonym));
            let canonical = patient.canonical();
            assert!(
                columns.iter().all(|(_, v)| !v.contains(canonical)),
                "{columns:?}"
            );
        }
    }

    /// `put_record` copies every entry of a store the gateway filled as the gateway wrote it: a
    /// row of a table that declares columns with the very columns the gateway gave it (under
    /// the same pseudonym key), any other entry with a plain put. So a store imported into
    /// PostgreSQL has the columns a gateway there would have written.
    #[tokio::test]
    async fn put_record_writes_the_rows_the_gateway_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, store, by_gateway) = filled(&dir.path().join("filled")).await;
        let snapshot = store.snapshot().await.unwrap();
        let entries: Vec<(Table, Vec<u8>, Vec<u8>)> = Table::ALL
            .into_iter()
            .flat_map(|t| snapshot.entries(t).map(move |e| e.map(|(k, v)| (t, k, v))))
            .collect::<Result<_, _>>()
            .unwrap();
        let pseudonyms = gateway.config.pseudonyms.clone();
        let copy = EmbeddedStore::open(&dir.path().join("copy")).unwrap();
        let copied = copy
            .transact(move |tx| {
                let mut noting = testing::Noting::new(tx);
                for (table, key, value) in &entries {
                    put_record(&mut noting, *table, key, value, &pseudonyms)?;
                }
                Ok::<_, store::Error>(noting.written)
            })
            .await
            .unwrap()
            .unwrap();

        let mut with_columns = BTreeSet::new();
        for written in &copied {
            match written {
                (table, None) => assert!(columns_of(*table).is_empty(), "{table:?}: no row"),
                (table, Some(_)) => {
                    assert!(
                        by_gateway.contains(written),
                        "{written:?}: not the gateway's"
                    );
                    with_columns.insert(format!("{table:?}"));
                }
            }
        }
        assert_eq!(
            with_columns.into_iter().collect::<Vec<_>>(),
            ["Audit", "Dispensings", "Events", "Prescriptions"]
        );
    }
}
