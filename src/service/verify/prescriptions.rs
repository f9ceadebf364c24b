//! The checks of the prescriptions, their dispensing records and their indexes: each record
//! decodes and sits under its own key, each index entry names a record that names it back, and
//! each record has the index entries its state calls for.

use crate::{
    domain::hash::{hex, sha256},
    store::{Table, Txn},
};

use super::{Against, Bad, wrong};
use crate::service::{
    Pseudonyms,
    records::{
        DispensingV2, DocumentRecord, DocumentV1, PrescriptionRecord, PrescriptionV3, StateV1,
        StoredDispensingRecord, decode,
    },
    schema::{
        accepted_key, by_patient_key, dispensing_key, document_key, exchange_key, expiry_key,
        id_of_by_patient, number_key, prescription_key,
    },
    stored::Stored,
};

/// The prescription `id`; wrong if there is none or it does not decode.
pub(super) fn load(tx: &dyn Txn, id: &str) -> Result<PrescriptionV3, Bad> {
    let bytes = (tx.get(Table::Prescriptions, prescription_key(id))?)
        .ok_or_else(|| wrong(format!("names prescription {id}, which is not stored")))?;
    decode::<PrescriptionRecord>(&bytes)
        .map(PrescriptionRecord::current)
        .map_err(|_| wrong(format!("names prescription {id}, which does not decode")))
}

/// Whether a prescription in `state` is still active (may be accepted, returned, dispensed).
pub(super) fn active(state: &StateV1) -> bool {
    matches!(
        state,
        StateV1::Registered | StateV1::Accepted(_) | StateV1::AwaitingRefill
    )
}

/// An index entry that must be there: `table` at `key`.
fn indexed(tx: &dyn Txn, table: Table, key: &[u8], what: &str) -> Result<(), Bad> {
    match tx.get(table, key)? {
        Some(_) => Ok(()),
        None => Err(wrong(format!("missing from {table:?}: {what}"))),
    }
}

/// A prescription record: it decodes, under its id, and the indexes name it; one still
/// usable on `against`'s day is found by its exchange number. The entries under its patient's
/// pseudonym are checked only with the pseudonym key.
pub(super) fn prescription(
    tx: &dyn Txn,
    key: &[u8],
    value: &[u8],
    against: &Against,
) -> Result<(), Bad> {
    let p = decode::<PrescriptionRecord>(value)
        .map_err(|e| wrong(format!("does not decode: {e}")))?
        .current();
    if prescription_key(&p.id) != key {
        return Err(wrong(format!("holds prescription {}", p.id)));
    }
    let number = tx.get(Table::ByNumber, &number_key(&p.institution, &p.number))?;
    if number.as_deref() != Some(p.id.as_bytes()) {
        return Err(wrong(
            "its (institution, number) does not name it in ByNumber",
        ));
    }
    let patient = against
        .pseudonyms
        .as_ref()
        .map(|k| k.in_keys(&p.patient_key));
    if let Some(patient) = &patient {
        let search = by_patient_key(&p.institution, patient, &p.issue_date, &p.id);
        indexed(tx, Table::ByPatient, &search, "its clinic's search entry")?;
    }
    let accepted = tx.get(Table::Meta, &accepted_key(&p.id))?.is_some();
    if accepted != matches!(p.state, StateV1::Accepted(_)) {
        return Err(wrong(format!(
            "its state and the index of accepted prescriptions disagree (indexed: {accepted})"
        )));
    }
    if active(&p.state) {
        let expiry = expiry_key(&p.usable_through, &p.id);
        indexed(tx, Table::Meta, &expiry, "its expiry entry (it is active)")?;
    }
    let lifecycle = Stored::load(tx, &p.id)
        .map_err(|e| wrong(format!("its lifecycle does not decode: {e}")))?
        .map(|stored| stored.lifecycle);
    // Past its last usable day its number may have gone to the patient's next prescription.
    if let Some(patient) = &patient
        && lifecycle.is_some_and(|l| l.state_on(against.today).is_active())
    {
        let exchange = tx.get(Table::ByExchange, &exchange_key(patient, p.exchange_number))?;
        if exchange.as_deref() != Some(p.id.as_bytes()) {
            return Err(wrong(
                "it is usable today, but its exchange number does not find it in ByExchange",
            ));
        }
    }
    Ok(())
}

/// A `ByExchange` entry names an active prescription, and (with the pseudonym key) is under
/// that prescription's patient and exchange number.
pub(super) fn by_exchange(
    tx: &dyn Txn,
    key: &[u8],
    value: &[u8],
    pseudonyms: Option<&Pseudonyms>,
) -> Result<(), Bad> {
    let p = load(tx, &id(value)?)?;
    if let Some(k) = pseudonyms
        && exchange_key(&k.in_keys(&p.patient_key), p.exchange_number) != key
    {
        return Err(wrong(format!(
            "names prescription {}, of another patient or exchange number",
            p.id
        )));
    }
    if !active(&p.state) {
        return Err(wrong(format!(
            "names prescription {}, which is not active",
            p.id
        )));
    }
    Ok(())
}

/// A `ByPatient` entry names a stored prescription, and (with the pseudonym key) is under that
/// prescription's clinic, patient and issue date.
pub(super) fn by_patient(
    tx: &dyn Txn,
    key: &[u8],
    pseudonyms: Option<&Pseudonyms>,
) -> Result<(), Bad> {
    let p = load(tx, &id(id_of_by_patient(key))?)?;
    if let Some(k) = pseudonyms
        && by_patient_key(
            &p.institution,
            &k.in_keys(&p.patient_key),
            &p.issue_date,
            &p.id,
        ) != key
    {
        return Err(wrong(
            "its clinic, patient or issue date is not the prescription's",
        ));
    }
    Ok(())
}

/// A `ByNumber` entry names the prescription with that institution and number.
pub(super) fn by_number(tx: &dyn Txn, key: &[u8], value: &[u8]) -> Result<(), Bad> {
    let p = load(tx, &id(value)?)?;
    if number_key(&p.institution, &p.number) != key {
        return Err(wrong(format!(
            "names prescription {}, of another institution or number",
            p.id
        )));
    }
    Ok(())
}

/// A `Documents` entry names the dispensing record (or, in older stores, the prescription)
/// whose content has that hash.
pub(super) fn document(tx: &dyn Txn, key: &[u8], value: &[u8]) -> Result<(), Bad> {
    let DocumentRecord::V1(document) =
        decode(value).map_err(|e| wrong(format!("does not decode: {e}")))?;
    let (id, record_number) = match document {
        DocumentV1::Prescription { id } => return load(tx, &id).map(drop),
        DocumentV1::Dispensing {
            prescription_id,
            record_number,
        } => (prescription_id, record_number),
    };
    let stored = tx.get(Table::Dispensings, &dispensing_key(&id, record_number))?;
    let named = format!("dispensing record {record_number} of prescription {id}");
    let d = load_dispensing(stored.as_deref(), &named)?;
    if document_key(&d.content_sha256) != key {
        return Err(wrong(format!(
            "names {named}, whose content has another hash"
        )));
    }
    Ok(())
}

fn load_dispensing(stored: Option<&[u8]>, named: &str) -> Result<DispensingV2, Bad> {
    let bytes = stored.ok_or_else(|| wrong(format!("names {named}, which is not stored")))?;
    decode::<StoredDispensingRecord>(bytes)
        .map(StoredDispensingRecord::current)
        .map_err(|_| wrong(format!("names {named}, which does not decode")))
}

/// A dispensing record decodes under its key, its prescription counts it, and its content's
/// hash is indexed.
pub(super) fn dispensing(tx: &dyn Txn, key: &[u8], value: &[u8]) -> Result<(), Bad> {
    let d = decode::<StoredDispensingRecord>(value)
        .map_err(|e| wrong(format!("does not decode: {e}")))?
        .current();
    if dispensing_key(&d.prescription_id, d.record_number) != key {
        return Err(wrong(format!(
            "holds record {} of prescription {}",
            d.record_number, d.prescription_id
        )));
    }
    let p = load(tx, &d.prescription_id)?;
    if d.record_number > p.records {
        return Err(wrong(format!(
            "record {} of prescription {}, which counts {}",
            d.record_number, p.id, p.records
        )));
    }
    let what = "its content's hash";
    indexed(tx, Table::Documents, document_key(&d.content_sha256), what)
}

/// A certificate is stored under its SHA-256.
pub(super) fn certificate(key: &[u8], value: &[u8]) -> Result<(), Bad> {
    if sha256(value).as_slice() != key {
        return Err(wrong(format!(
            "the certificate's SHA-256 is {}",
            hex(&sha256(value))
        )));
    }
    Ok(())
}

/// A prescription id as an index holds it.
pub(super) fn id(bytes: &[u8]) -> Result<String, Bad> {
    String::from_utf8(bytes.to_vec()).map_err(|_| wrong("the prescription id it holds is not text"))
}
