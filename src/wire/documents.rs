//! The signed document types of the wire contract, made verifiable: a strict protobuf decode
//! for each, so that what was verified is exactly what is read; and their parse into the
//! domain's facts, every malformed field reported by its path (never its value).

use std::collections::HashSet;

use prost::Message;

use crate::{
    domain::{
        checks::{DrugCode as Code, Supply},
        ids::IdError,
        patient::PatientKey,
        rx::{
            DispensedLineFacts, DispensingFacts, DraftFacts, FieldViolation, NamedSigner,
            PrescriptionFacts, PrescriptionNumber, RxLine,
        },
        signature::{DocumentKind, SignedContent},
        time::JapanDate,
    },
    limits::{CEILING, MAX_MESSAGE_CHARS, MAX_TEXT_CHARS},
    wire::proto::v1::{
        self as proto, DispensedLine, DispensedLineStatus, DispensingRecord, DocumentType, Dosing,
        DrugCode, DrugCodeKind, Practitioner, Prescription, PrescriptionLine, Sex,
    },
};

/// Field 1 of every signed document, read alone (other fields are skipped).
#[derive(Clone, PartialEq, Message)]
struct DocumentTypeOnly {
    #[prost(int32, tag = "1")]
    document_type: i32,
}

/// Decodes `bytes` as `M`, requiring the declared document type and a canonical encoding: bytes
/// that do not re-encode to themselves (unknown fields, duplicates, non-canonical order) are
/// refused, so no field can be read differently by another decoder.
fn decode_strict<M: Message + Default>(bytes: &[u8], expected: DocumentType) -> Result<M, String> {
    // The type first, so that one document kind is never even parsed as another.
    let declared = DocumentTypeOnly::decode(bytes)
        .map_err(|e| format!("content does not decode: {e}"))?
        .document_type;
    if declared != expected as i32 {
        let name = DocumentType::try_from(declared)
            .map(|t| t.as_str_name().to_owned())
            .unwrap_or_else(|_| declared.to_string());
        return Err(format!(
            "document type is {name}, expected {}",
            expected.as_str_name()
        ));
    }
    let message = M::decode(bytes).map_err(|e| format!("content does not decode: {e}"))?;
    if message.encode_to_vec() != bytes {
        return Err(
            "content does not re-encode to the same bytes (unknown fields or non-canonical encoding)"
                .into(),
        );
    }
    Ok(message)
}

impl SignedContent for Prescription {
    const KIND: DocumentKind = DocumentKind::Prescription;

    fn decode_strict(bytes: &[u8]) -> Result<Self, String> {
        decode_strict(bytes, DocumentType::Prescription)
    }
}

impl SignedContent for DispensingRecord {
    const KIND: DocumentKind = DocumentKind::DispensingRecord;

    fn decode_strict(bytes: &[u8]) -> Result<Self, String> {
        decode_strict(bytes, DocumentType::DispensingRecord)
    }
}

/// Collects field violations while parsing a document.
#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, rule: impl Into<String>) {
        self.0.push(FieldViolation::new(field, rule));
    }

    fn parse<T, E>(
        &mut self,
        field: &str,
        r: Result<T, E>,
        rule: impl Fn(E) -> String,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(FieldViolation::new(field, rule(e)));
                None
            }
        }
    }
}

fn id_rule(e: IdError) -> String {
    e.rule.to_owned()
}

/// The longest a days-based line may supply, and a dispensed line too.
const MAX_DAYS: u32 = 365;

/// The highest record number: three uses of a refill, each in up to three parts, leave nine; the
/// rest of the range is room for the lifecycle to refuse with its own reason.
const MAX_RECORD_NUMBER: u32 = 99;

/// Refuses text over `max` characters under `field`.
fn bounded_text(v: &mut Violations, field: &str, text: &str, max: usize) {
    if text.chars().count() > max {
        v.add(field, format!("at most {max} characters"));
    }
}

/// Refuses a list of more than `max` entries, named by `field`: checked before any entry is
/// parsed, so an over-long list costs nothing more.
pub fn bounded_count(field: &str, count: usize, max: usize) -> Result<(), Vec<FieldViolation>> {
    if count > max {
        return Err(vec![FieldViolation::new(
            field,
            format!("at most {max} entries (this request has {count})"),
        )]);
    }
    Ok(())
}

fn named_signer(v: &mut Violations, field: &str, p: Option<&Practitioner>) -> Option<NamedSigner> {
    let Some(p) = p else {
        v.add(field, "is required");
        return None;
    };
    if p.name.is_empty() || p.serial_number.is_empty() {
        v.add(field, "name and serial_number are required");
        return None;
    }
    bounded_text(v, &format!("{field}.name"), &p.name, MAX_TEXT_CHARS);
    bounded_text(
        v,
        &format!("{field}.serial_number"),
        &p.serial_number,
        MAX_TEXT_CHARS,
    );
    Some(NamedSigner {
        name: p.name.clone(),
        serial_number: p.serial_number.clone(),
    })
}

/// The patient key of a wire `PatientKey`.
pub fn patient_key(key: Option<&proto::PatientKey>) -> Result<PatientKey, FieldViolation> {
    use proto::patient_key::Kind;
    match key.and_then(|k| k.kind.as_ref()) {
        Some(Kind::Insurance(i)) => {
            PatientKey::insurance(&i.insurer_number, &i.symbol, &i.number, &i.branch)
        }
        Some(Kind::PublicFunds(p)) => {
            PatientKey::public_funds(&p.payer_number, &p.recipient_number)
        }
        None => {
            return Err(FieldViolation::new(
                "patient_key",
                "insurance or public_funds is required",
            ));
        }
    }
    .map_err(|e| FieldViolation::new(format!("patient_key ({})", e.field), e.rule))
}

fn is_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, "1"));
    !int.is_empty()
        && !frac.is_empty()
        && int.len() <= 7
        && frac.len() <= 5
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
}

fn drug_code(v: &mut Violations, field: &str, drug: Option<&DrugCode>) -> Option<Code> {
    let Some(drug) = drug else {
        v.add(field, "is required");
        return None;
    };
    let code = drug.code.as_str();
    let (ok, parsed) = match DrugCodeKind::try_from(drug.kind) {
        Ok(DrugCodeKind::Receipt) => (
            code.len() == 9 && code.bytes().all(|b| b.is_ascii_digit()),
            Code::Receipt(code.to_owned()),
        ),
        Ok(DrugCodeKind::Yj) => (is_code12(code), Code::Yj(code.to_owned())),
        Ok(DrugCodeKind::GenericName) => (is_code12(code), Code::Generic(code.to_owned())),
        _ => {
            v.add(
                format!("{field}.kind"),
                "must be RECEIPT, YJ or GENERIC_NAME",
            );
            return None;
        }
    };
    if !ok {
        v.add(
            format!("{field}.code"),
            "receipt codes have 9 digits; YJ and generic-name codes 12 characters",
        );
        return None;
    }
    Some(parsed)
}

fn is_code12(code: &str) -> bool {
    code.len() == 12 && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Refuses, before any line is read, a list longer than any limit may allow: the configured
/// limits are checked on the parsed lines, and reading a 256 KiB message of empty lines one by
/// one would cost more than the whole request may.
fn within_ceiling(v: &mut Violations, count: usize) -> bool {
    if count > CEILING {
        v.add(
            "lines",
            format!("at most {CEILING} entries (this request has {count})"),
        );
        return false;
    }
    true
}

/// The lines of a prescription (or draft), each violation named under `lines[i]`.
fn prescription_lines(v: &mut Violations, lines: &[PrescriptionLine]) -> Vec<RxLine> {
    if lines.is_empty() {
        v.add("lines", "at least one line is required");
    }
    if !within_ceiling(v, lines.len()) {
        return Vec::new();
    }
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let field = format!("lines[{i}]");
        let drug = drug_code(v, &format!("{field}.drug"), line.drug.as_ref());
        if !is_decimal(&line.quantity) || line.quantity.parse::<f64>().is_ok_and(|q| q <= 0.0) {
            v.add(format!("{field}.quantity"), "a positive decimal number");
        }
        if line.unit.is_empty() {
            v.add(format!("{field}.unit"), "is required");
        }
        bounded_text(v, &format!("{field}.unit"), &line.unit, MAX_TEXT_CHARS);
        bounded_text(
            v,
            &format!("{field}.dosage_instructions"),
            &line.dosage_instructions,
            MAX_MESSAGE_CHARS,
        );
        let supply = match (Dosing::try_from(line.dosing), line.days_supplied) {
            (Ok(Dosing::Days), n @ 1..=MAX_DAYS) => Some(Supply::Days(n)),
            (Ok(Dosing::Days), _) => {
                v.add(format!("{field}.days_supplied"), "1 to 365 days");
                None
            }
            (Ok(Dosing::AsNeeded), 0) => Some(Supply::AsNeeded),
            (Ok(Dosing::External), 0) => Some(Supply::External),
            (Ok(Dosing::AsNeeded | Dosing::External), _) => {
                v.add(
                    format!("{field}.days_supplied"),
                    "only days-based lines carry days_supplied",
                );
                None
            }
            _ => {
                v.add(
                    format!("{field}.dosing"),
                    "must be DAYS, AS_NEEDED or EXTERNAL",
                );
                None
            }
        };
        if let (Some(drug), Some(supply)) = (drug, supply) {
            parsed.push(RxLine { drug, supply });
        }
    }
    parsed
}

/// The lines of a dispensing record (or of a dispensing about to happen) that give something,
/// each violation named under `lines[i]`.
fn dispensed_lines(v: &mut Violations, lines: &[DispensedLine]) -> Vec<DispensedLineFacts> {
    if lines.is_empty() {
        v.add("lines", "at least one line is required");
    }
    if !within_ceiling(v, lines.len()) {
        return Vec::new();
    }
    let mut given = HashSet::with_capacity(lines.len());
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let field = format!("lines[{i}]");
        if line.days_supplied > MAX_DAYS {
            v.add(
                format!("{field}.days_supplied"),
                "0 (as prescribed) to 365 days",
            );
        }
        if line.prescription_line as usize >= CEILING {
            v.add(
                format!("{field}.prescription_line"),
                "must name a line of the prescription",
            );
        }
        // The same drug twice for one prescribed line is one line given twice: it would count
        // twice in the patient's history and in the line's progress.
        let drug = line.drug.as_ref().map(|d| (d.kind, d.code.as_str()));
        if !given.insert((line.prescription_line, drug)) {
            v.add(
                format!("{field}.prescription_line"),
                "repeats an earlier line (the same prescription line and drug)",
            );
        }
        bounded_text(v, &format!("{field}.unit"), &line.unit, MAX_TEXT_CHARS);
        if !line.quantity.is_empty() && !is_decimal(&line.quantity) {
            v.add(format!("{field}.quantity"), "a decimal number");
        }
        match DispensedLineStatus::try_from(line.status) {
            Ok(DispensedLineStatus::NotDispensed) => {
                // Nothing given, so no drug is needed; one that is named must be a drug code.
                if line.drug.is_some() {
                    drug_code(v, &format!("{field}.drug"), line.drug.as_ref());
                }
            }
            Ok(status @ (DispensedLineStatus::Complete | DispensedLineStatus::Partial)) => {
                if let Some(drug) = drug_code(v, &format!("{field}.drug"), line.drug.as_ref()) {
                    parsed.push(DispensedLineFacts {
                        prescription_line: line.prescription_line,
                        drug,
                        days_supplied: line.days_supplied,
                        complete: status == DispensedLineStatus::Complete,
                    });
                }
            }
            _ => v.add(
                format!("{field}.status"),
                "must be COMPLETE, PARTIAL or NOT_DISPENSED",
            ),
        }
    }
    parsed
}

/// The lines about to be dispensed, as a pharmacy's dispensing check names them.
pub fn lines_to_dispense(
    lines: &[DispensedLine],
) -> Result<Vec<DispensedLineFacts>, Vec<FieldViolation>> {
    let mut v = Violations::default();
    let parsed = dispensed_lines(&mut v, lines);
    if v.0.is_empty() { Ok(parsed) } else { Err(v.0) }
}

impl TryFrom<&Prescription> for DraftFacts {
    type Error = Vec<FieldViolation>;

    /// A draft for a pre-issue check: only the institution, the patient key and the lines.
    fn try_from(p: &Prescription) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let institution = v.parse("institution_code", p.institution_code.parse(), id_rule);
        let patient = match patient_key(p.patient.as_ref().and_then(|p| p.key.as_ref())) {
            Ok(key) => Some(key),
            Err(e) => {
                v.0.push(FieldViolation::new(format!("patient.{}", e.field), e.rule));
                None
            }
        };
        let lines = prescription_lines(&mut v, &p.lines);
        match (institution, patient) {
            (Some(institution), Some(patient)) if v.0.is_empty() => Ok(DraftFacts {
                institution,
                patient,
                lines,
            }),
            _ => Err(v.0),
        }
    }
}

fn dispensing_date(v: &mut Violations, field: &str, s: &str) -> Option<JapanDate> {
    v.parse(field, s.parse::<JapanDate>(), id_rule)
}

impl TryFrom<&Prescription> for PrescriptionFacts {
    type Error = Vec<FieldViolation>;

    fn try_from(p: &Prescription) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let institution = v.parse("institution_code", p.institution_code.parse(), id_rule);
        let number = PrescriptionNumber::parse(&p.prescription_number);
        if number.is_none() {
            v.add("prescription_number", "1-32 printable ASCII characters");
        }
        let prescriber = named_signer(&mut v, "prescriber", p.prescriber.as_ref());
        let patient = match p.patient.as_ref() {
            Some(patient) => {
                if patient.name.is_empty() {
                    v.add("patient.name", "is required");
                }
                bounded_text(&mut v, "patient.name", &patient.name, MAX_TEXT_CHARS);
                v.parse(
                    "patient.birth_date",
                    patient.birth_date.parse::<JapanDate>(),
                    id_rule,
                );
                if !matches!(Sex::try_from(patient.sex), Ok(Sex::Male | Sex::Female)) {
                    v.add("patient.sex", "must be MALE or FEMALE");
                }
                match patient_key(patient.key.as_ref()) {
                    Ok(key) => Some(key),
                    Err(e) => {
                        v.0.push(FieldViolation::new(format!("patient.{}", e.field), e.rule));
                        None
                    }
                }
            }
            None => {
                v.add("patient", "is required");
                None
            }
        };
        let issue_date = dispensing_date(&mut v, "issue_date", &p.issue_date);
        let usable_until = if p.usable_until.is_empty() {
            Some(None)
        } else {
            dispensing_date(&mut v, "usable_until", &p.usable_until).map(Some)
        };
        if !(1..=3).contains(&p.refill_count) {
            v.add("refill_count", "the total number of uses, 1 to 3");
        }
        let lines = prescription_lines(&mut v, &p.lines);
        match (
            institution,
            number,
            prescriber,
            patient,
            issue_date,
            usable_until,
        ) {
            (
                Some(institution),
                Some(number),
                Some(prescriber),
                Some(patient),
                Some(issue_date),
                Some(usable_until),
            ) if v.0.is_empty() => Ok(PrescriptionFacts {
                institution,
                number,
                prescriber,
                patient,
                issue_date,
                usable_until,
                refill_count: p.refill_count,
                lines,
            }),
            _ => Err(v.0),
        }
    }
}

impl TryFrom<&DispensingRecord> for DispensingFacts {
    type Error = Vec<FieldViolation>;

    fn try_from(r: &DispensingRecord) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Violations::default();
        let institution = v.parse("institution_code", r.institution_code.parse(), id_rule);
        let number = PrescriptionNumber::parse(&r.prescription_number);
        if number.is_none() {
            v.add("prescription_number", "1-32 printable ASCII characters");
        }
        if !(1..=MAX_RECORD_NUMBER).contains(&r.record_number) {
            v.add("record_number", "1 to 99");
        }
        let pharmacy = v.parse("pharmacy_code", r.pharmacy_code.parse(), id_rule);
        let pharmacist = named_signer(&mut v, "pharmacist", r.pharmacist.as_ref());
        let date = dispensing_date(&mut v, "dispensing_date", &r.dispensing_date);
        let lines = dispensed_lines(&mut v, &r.lines);
        if r.important_information && r.important_message.is_empty() {
            v.add("important_message", "required with important_information");
        }
        bounded_text(
            &mut v,
            "important_message",
            &r.important_message,
            MAX_MESSAGE_CHARS,
        );
        match (institution, number, pharmacy, pharmacist, date) {
            (
                Some(institution),
                Some(number),
                Some(pharmacy),
                Some(pharmacist),
                Some(dispensing_date),
            ) if v.0.is_empty() => Ok(DispensingFacts {
                institution,
                number,
                record_number: r.record_number,
                is_final: r.r#final,
                pharmacy,
                pharmacist,
                dispensing_date,
                important_information: r.important_information,
                lines,
            }),
            _ => Err(v.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prescription() -> Prescription {
        Prescription {
            document_type: DocumentType::Prescription as i32,
            institution_code: "1310000001".into(),
            prescription_number: "RX-1".into(),
            refill_count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn a_canonical_prescription_decodes() {
        let bytes = prescription().encode_to_vec();
        assert_eq!(Prescription::decode_strict(&bytes).unwrap(), prescription());
    }

    #[test]
    fn a_dispensing_record_is_not_a_prescription() {
        let record = DispensingRecord {
            document_type: DocumentType::DispensingRecord as i32,
            ..Default::default()
        };
        let err = Prescription::decode_strict(&record.encode_to_vec()).unwrap_err();
        assert!(err.contains("DOCUMENT_TYPE_DISPENSING_RECORD"), "{err}");
        let err = DispensingRecord::decode_strict(&prescription().encode_to_vec()).unwrap_err();
        assert!(err.contains("DOCUMENT_TYPE_PRESCRIPTION"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut bytes = prescription().encode_to_vec();
        bytes.extend_from_slice(&[0xf8, 0x06, 0x01]); // field 111, varint 1
        let err = Prescription::decode_strict(&bytes).unwrap_err();
        assert!(err.contains("re-encode"), "{err}");
    }

    #[test]
    fn a_repeated_scalar_field_is_refused() {
        // institution_code twice: prost keeps the last, another decoder might keep the first.
        let mut bytes = prescription().encode_to_vec();
        bytes.extend_from_slice(&[0x12, 0x02, b'9', b'9']);
        assert!(Prescription::decode_strict(&bytes).is_err());
    }

    #[test]
    fn a_missing_document_type_is_refused() {
        let mut p = prescription();
        p.document_type = 0;
        assert!(Prescription::decode_strict(&p.encode_to_vec()).is_err());
    }
}
