//! The keys that hold a number drawn from one of the store's counters (`sequence/NAME`), and
//! which: what `rxgate store verify` checks each counter against, and what a load of a dump
//! raises each counter past (on PostgreSQL the unique numbers come from a database sequence,
//! so a dump of it carries counter rows behind its keys).

use crate::store::Table;

use super::{
    CONSENT_SEQUENCE, ClinicalKind, EVENT_SEQUENCE, IMPORT_SEQUENCE, INTAKE_SEQUENCE, IntakeKind,
    MetaKind, PENDING_EVENT_SEQUENCE, UNCHAINED_AUDIT_SEQUENCE, clinical_kind, event_sequence,
    intake_kind, meta_kind, parse_key,
};

/// The counter `key` of `table` holds a number of, and that number; `None` for a key that
/// holds none (or is of no kind).
pub(in crate::service) fn counted(table: Table, key: &[u8]) -> Option<(&'static str, u64)> {
    match table {
        Table::Events => Some((EVENT_SEQUENCE, event_sequence(key).ok()?)),
        Table::Intake => match intake_kind(key)? {
            (IntakeKind::Arrival(arrival), _) => Some((INTAKE_SEQUENCE, arrival)),
            (IntakeKind::Record | IntakeKind::DeadLetter, _) => None,
        },
        Table::Clinical => match clinical_kind(key)? {
            (ClinicalKind::Consent(number), _) => Some((CONSENT_SEQUENCE, number)),
            (ClinicalKind::Import(number), _) => Some((IMPORT_SEQUENCE, number)),
            (ClinicalKind::CheckBudget | ClinicalKind::Override, _) => None,
        },
        Table::Meta => match meta_kind(key)? {
            MetaKind::PendingEvent(draw) => Some((PENDING_EVENT_SEQUENCE, draw)),
            _ => None,
        },
        // A chain link's sequence is its writer's own, kept by its head, not a counter.
        Table::Audit => match parse_key(key).ok()? {
            (None, sequence) => Some((UNCHAINED_AUDIT_SEQUENCE, sequence)),
            (Some(_), _) => None,
        },
        Table::Prescriptions
        | Table::ByExchange
        | Table::ByPatient
        | Table::ByNumber
        | Table::Documents
        | Table::Dispensings
        | Table::Medications
        | Table::EventsByInstitution
        | Table::Certificates
        | Table::Lockouts
        | Table::AuditChain => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{
        schema::{
            arrival_key, check_budget_key, consent_key, dead_letter_key, event_key, import_key,
            intake_record_key, link_key, override_key, pending_event_key, unchained_key,
        },
        testing::keyed,
    };

    /// Each kind of counted key names its counter and number; the keys beside them (in the
    /// same tables, or of other tables with a number in them) name none.
    #[test]
    fn each_counted_key_names_its_counter_and_number() {
        let patient = keyed("pub|8:12345678|7:1234567");
        let counted_keys = [
            (Table::Events, event_key(258).to_vec(), EVENT_SEQUENCE),
            (Table::Intake, arrival_key(258), INTAKE_SEQUENCE),
            (
                Table::Clinical,
                consent_key(&patient, 258),
                CONSENT_SEQUENCE,
            ),
            (Table::Clinical, import_key(258), IMPORT_SEQUENCE),
            (Table::Meta, pending_event_key(258), PENDING_EVENT_SEQUENCE),
            (
                Table::Audit,
                unchained_key(258).to_vec(),
                UNCHAINED_AUDIT_SEQUENCE,
            ),
        ];
        for (table, key, name) in counted_keys {
            assert_eq!(counted(table, &key), Some((name, 258)), "{table:?} {key:?}");
        }
        let uncounted = [
            (Table::Intake, intake_record_key("ab12")),
            (Table::Intake, dead_letter_key(258)),
            (Table::Clinical, check_budget_key(&patient)),
            (Table::Clinical, override_key("id1")),
            (Table::Meta, b"sequence/consent".to_vec()),
            (Table::Meta, b"accepted\0id1".to_vec()),
            (Table::Audit, link_key(&[7; 32], 258)),
            (
                Table::EventsByInstitution,
                b"1310000001\0\0\0\0\0\0\0\x01\x02".to_vec(),
            ),
            (Table::Events, b"not 8 bytes".to_vec()),
        ];
        for (table, key) in uncounted {
            assert_eq!(counted(table, &key), None, "{table:?} {key:?}");
        }
    }
}
