//! The bounds on what one request may ask of the gateway and on what one patient's history may
//! hold (`[limits]` in the configuration), and the fixed bounds on text fields. Every count a
//! client controls meets one of these at the edge, so that the cost of a request, and of the
//! clinical check it runs on the store's writer thread, stays small whatever the client sends
//! (docs/LIMITS.md lists them with the errors a client sees). Plain data: no tonic, no store,
//! no runtime.

use serde::Deserialize;

/// The longest name, unit, serial number or acknowledgement finding id, in characters.
pub const MAX_TEXT_CHARS: usize = 128;

/// The longest free text (an important message to the prescriber, an acknowledgement's reason),
/// in characters.
pub const MAX_MESSAGE_CHARS: usize = 1_000;

/// The largest drug-master file an import takes, decompressed (the full SSK master is ~6 MiB),
/// and the most bytes one import takes in all.
pub const MAX_IMPORT_FILE_BYTES: u64 = 64 << 20;
pub const MAX_IMPORT_BYTES: u64 = 256 << 20;

/// The largest count any `[limits]` setting may take: far above any real use, low enough that
/// no setting can reopen the unbounded work these limits exist to prevent.
pub const CEILING: usize = 4_096;

/// The configurable bounds. Their defaults are set by the worst requests they allow: the most
/// lines against the largest history, every check switch on, must each answer within 50 ms and
/// 32 MiB of extra memory (BENCHMARKS.md). A check's findings grow with lines × entries, and
/// critical findings are never capped, so these two set the cost. Lowering one never makes a stored record unreadable: the bounds
/// apply to what a request asks, and a check that meets a history over its bound says so.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Lines per prescription and per draft (CheckPrescription).
    pub prescription_lines: usize,
    /// Lines per dispensing record and per dispensing check (CheckDispensing).
    pub dispensing_lines: usize,
    /// Lines a check may name without the patient's consent: masked findings still name the
    /// caller's own line, so a check of many candidate drugs would reveal which the patient takes.
    pub unconsented_check_lines: usize,
    /// Acknowledgements of critical findings per registration.
    pub acknowledgements: usize,
    /// Warning and info findings per answer; critical findings are never left out, and an answer
    /// that left some out says how many.
    pub findings_per_answer: usize,
    /// Active lines one institution may hold in one patient's history (a clinic's undispensed
    /// lines, a pharmacy's dispensed ones): a registration or dispensing past it is refused, so
    /// that no institution can pad a patient's history alone.
    pub active_lines_per_institution: usize,
    /// Entries in one patient's history record (undispensed and dispensed lines still active),
    /// which every check reads whole: a registration past it is refused (a dispensing never
    /// is), and a check that meets a larger record (a dispensing took it past, or this was
    /// lowered) answers a critical not-checked finding instead of reading part of it.
    pub history_entries_per_patient: usize,
    /// Lines that CheckPrescription and CheckDispensing may check for one patient within
    /// `patient_check_window_secs`, counted across every institution and kept in the store.
    /// Registration, receipt and dispensing run their checks whatever this says.
    pub patient_check_lines: usize,
    pub patient_check_window_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            prescription_lines: 32,
            dispensing_lines: 128,
            unconsented_check_lines: 10,
            acknowledgements: 256,
            findings_per_answer: 100,
            active_lines_per_institution: 64,
            history_entries_per_patient: 128,
            patient_check_lines: 300,
            patient_check_window_secs: 600,
        }
    }
}

impl Limits {
    /// What serde cannot check: every count between 1 and the ceiling, the window 1 s to a day.
    pub fn validate(&self) -> Result<(), String> {
        let counts = [
            ("prescription_lines", self.prescription_lines),
            ("dispensing_lines", self.dispensing_lines),
            ("unconsented_check_lines", self.unconsented_check_lines),
            ("acknowledgements", self.acknowledgements),
            ("findings_per_answer", self.findings_per_answer),
            (
                "active_lines_per_institution",
                self.active_lines_per_institution,
            ),
            (
                "history_entries_per_patient",
                self.history_entries_per_patient,
            ),
            ("patient_check_lines", self.patient_check_lines),
        ];
        for (name, value) in counts {
            if !(1..=CEILING).contains(&value) {
                return Err(format!("limits.{name} must lie between 1 and {CEILING}"));
            }
        }
        if !(1..=86_400).contains(&self.patient_check_window_secs) {
            return Err("limits.patient_check_window_secs must lie between 1 and 86400".into());
        }
        if self.history_entries_per_patient < self.prescription_lines {
            return Err(
                "limits.history_entries_per_patient must hold at least one prescription".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn zero_and_huge_counts_are_refused() {
        for broken in [
            Limits {
                prescription_lines: 0,
                ..Limits::default()
            },
            Limits {
                findings_per_answer: CEILING + 1,
                ..Limits::default()
            },
            Limits {
                patient_check_window_secs: u64::MAX,
                ..Limits::default()
            },
            Limits {
                history_entries_per_patient: 8,
                ..Limits::default()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }
}
