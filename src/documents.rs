//! The signed document types of the wire contract, made verifiable: a strict protobuf decode
//! for each, so that what was verified is exactly what is read.

use prost::Message;

use crate::{
    domain::signature::{DocumentKind, SignedContent},
    proto::v1::{DispensingRecord, DocumentType, Prescription},
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
