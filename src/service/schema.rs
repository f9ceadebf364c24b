//! Key layouts: composite keys (parts joined by a zero byte), the lookup index of active
//! prescriptions by (patient, exchange number), and the Meta table's indexes of accepted
//! prescriptions and of active ones by expiry. The other tables' layouts are still spelled by
//! their own modules (clinical, events, intake, lockout, search, the audit chain).

/// A composite key: `parts` joined by a zero byte.
pub(super) fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

/// Where [`Table::ByExchange`](crate::store::Table::ByExchange) finds an active prescription:
/// the patient key and the exchange number as six digits.
pub(super) fn exchange_key(patient: &str, exchange_number: u32) -> Vec<u8> {
    key(&[
        patient.as_bytes(),
        format!("{exchange_number:06}").as_bytes(),
    ])
}

/// The index of ACCEPTED prescriptions (for the stuck report), kept in the Meta table.
pub(super) fn accepted_key(id: &str) -> Vec<u8> {
    key(&[b"accepted", id.as_bytes()])
}

/// The expiry index of active prescriptions, kept in the Meta table: by last usable date.
pub(super) fn expiry_key(usable_through: &str, id: &str) -> Vec<u8> {
    key(&[b"expiry", usable_through.as_bytes(), id.as_bytes()])
}
