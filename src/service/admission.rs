//! What registering and dispensing check alike before anything is read: the signature, then
//! the document's facts, which must name the caller's institution and, as prescriber or
//! pharmacist, the signer.

use std::time::SystemTime;

use crate::{
    domain::{
        ids::InstitutionCode,
        rx::{DispensingFacts, FieldViolation, NamedSigner, PrescriptionFacts},
        signature::{SignedContent, Signer, VerifiedDocument},
    },
    limits::Limits,
    wire::documents::bounded_count,
};

use super::{Caller, Error, Gateway, audit::AuditDraft};

/// The facts of a signed document that attribute it: the institution it is filed under and the
/// person it names as its signer.
pub(super) trait Attributed {
    const NAMES_ANOTHER_INSTITUTION: &'static str;
    const SIGNER_DIFFERS: &'static str;
    fn filed_under(&self) -> &InstitutionCode;
    fn named_signer(&self) -> &NamedSigner;
    /// How many lines the document has, and how many the limits allow.
    fn lines(&self) -> usize;
    fn max_lines(limits: &Limits) -> usize;
}

impl Attributed for PrescriptionFacts {
    const NAMES_ANOTHER_INSTITUTION: &'static str = "the prescription names another institution";
    const SIGNER_DIFFERS: &'static str = "the prescriber is not the signer";
    fn filed_under(&self) -> &InstitutionCode {
        &self.institution
    }
    fn named_signer(&self) -> &NamedSigner {
        &self.prescriber
    }
    fn lines(&self) -> usize {
        self.lines.len()
    }
    fn max_lines(limits: &Limits) -> usize {
        limits.prescription_lines
    }
}

impl Attributed for DispensingFacts {
    const NAMES_ANOTHER_INSTITUTION: &'static str = "the record names another pharmacy";
    const SIGNER_DIFFERS: &'static str = "the pharmacist is not the signer";
    fn filed_under(&self) -> &InstitutionCode {
        &self.pharmacy
    }
    fn named_signer(&self) -> &NamedSigner {
        &self.pharmacist
    }
    fn lines(&self) -> usize {
        self.lines.len()
    }
    fn max_lines(limits: &Limits) -> usize {
        limits.dispensing_lines
    }
}

pub(super) fn signer_matches(named: &NamedSigner, signer: &Signer) -> bool {
    named.name == signer.name && named.serial_number == signer.serial_number
}

impl Gateway {
    /// Verifies a signed document on the calling task's thread, not with `spawn_blocking`: a
    /// verification takes ~0.1–0.2 ms with a cached chain (~0.5 ms cold), and handing it to the
    /// blocking pool and back cost more than it freed (register 2,413 → 2,696/s on 2 cores when
    /// inlined; BENCHMARKS.md).
    pub(super) fn verify<D: SignedContent>(
        &self,
        content: &[u8],
        cms: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedDocument<D>, Error> {
        self.verifier
            .verify::<D>(content, cms, now)
            .map_err(Error::Signature)
    }

    /// What registering and dispensing check alike: the signature, then the document's facts,
    /// which must name the caller's institution and, as prescriber or pharmacist, the signer.
    /// Records the verified signer in the audit draft.
    pub(super) fn admit<D, F>(
        &self,
        caller: &Caller,
        draft: &mut AuditDraft,
        content: &[u8],
        cms: &[u8],
        now: SystemTime,
    ) -> Result<(VerifiedDocument<D>, F), Error>
    where
        D: SignedContent,
        F: Attributed + for<'a> TryFrom<&'a D, Error = Vec<FieldViolation>>,
    {
        let verified = self.verify::<D>(content, cms, now)?;
        draft.signer = Some(verified.signer().clone());
        let facts = F::try_from(verified.document()).map_err(Error::InvalidArgument)?;
        bounded_count("lines", facts.lines(), F::max_lines(&self.config.limits))
            .map_err(Error::InvalidArgument)?;
        if *facts.filed_under() != caller.institution.code {
            return Err(Error::PermissionDenied(F::NAMES_ANOTHER_INSTITUTION));
        }
        if !signer_matches(facts.named_signer(), verified.signer()) {
            return Err(Error::PermissionDenied(F::SIGNER_DIFFERS));
        }
        Ok((verified, facts))
    }
}
