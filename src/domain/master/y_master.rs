//! The y-master: the SSK records by receipt code, built from a full file ([`Master::from_full`])
//! and brought forward by update files ([`Master::apply_update`]: all or nothing, a 変更 row
//! overwriting only the fields it fills). Pure: takes parsed records; no IO, no clock, no
//! tonic/prost/store engine; knows nothing of ingredients or products.

use std::collections::HashMap;

use super::{
    error::MasterError,
    y_file::{ChangeKind, NOT_ABOLISHED, YRecord},
};

/// What one update file did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub added: usize,
    pub changed: usize,
    pub abolished: usize,
    pub deleted: usize,
    pub restored: usize,
    /// 0 継続 rows in an update file: treated like 変更 (non-empty fields overwrite).
    pub continued: usize,
}

/// The SSK drug master keyed by receipt code.
#[derive(Debug, Clone, Default)]
pub struct Master {
    records: HashMap<String, YRecord>,
}

impl Master {
    /// Builds the master from a full file's records. Every row is a product whatever its 変更区分
    /// (the full file carries 0 and 5 rows alike); the key columns must be present.
    pub fn from_full(records: Vec<YRecord>) -> Result<Master, MasterError> {
        let mut map = HashMap::with_capacity(records.len() + records.len() / 4);
        for r in records {
            require_full(&r)?;
            if map.contains_key(&r.receipt_code) {
                return Err(MasterError::DuplicateCode {
                    line: r.line,
                    code: r.receipt_code,
                });
            }
            map.insert(r.receipt_code.clone(), r);
        }
        Ok(Master { records: map })
    }

    /// Applies one update file's records. Atomic: every row is checked first, and if any 5/9/1/2
    /// row names a code the master does not hold, or a 3 row one it already holds, nothing is
    /// applied and the error names the line. A diff that does not fit its base means an update was
    /// missed or applied out of order; guessing would corrupt the master.
    pub fn apply_update(&mut self, records: &[YRecord]) -> Result<UpdateSummary, MasterError> {
        // Dry run over key presence, including the effect of earlier rows of the same file.
        let mut overlay: HashMap<&str, bool> = HashMap::new();
        for r in records {
            let code = r.receipt_code.as_str();
            let present = overlay
                .get(code)
                .copied()
                .unwrap_or_else(|| self.records.contains_key(code));
            match r.kind {
                ChangeKind::New => {
                    if present {
                        return Err(MasterError::DuplicateCode {
                            line: r.line,
                            code: code.to_owned(),
                        });
                    }
                    require_full(r)?;
                    overlay.insert(code, true);
                }
                kind => {
                    if !present {
                        return Err(MasterError::UnknownCode {
                            line: r.line,
                            code: code.to_owned(),
                            kind,
                        });
                    }
                    if kind == ChangeKind::Abolished && r.abolished_on.is_none() {
                        return Err(MasterError::MissingColumn {
                            line: r.line,
                            column: 31,
                            name: "廃止年月日",
                        });
                    }
                    if kind == ChangeKind::Deleted {
                        overlay.insert(code, false);
                    }
                }
            }
        }
        let mut s = UpdateSummary::default();
        for r in records {
            match r.kind {
                ChangeKind::New => {
                    self.records.insert(r.receipt_code.clone(), r.clone());
                    s.added += 1;
                }
                ChangeKind::Deleted => {
                    self.records.remove(&r.receipt_code);
                    s.deleted += 1;
                }
                kind => {
                    let Some(e) = self.records.get_mut(&r.receipt_code) else {
                        unreachable!("checked in the dry run");
                    };
                    e.merge(r);
                    match kind {
                        ChangeKind::Abolished => s.abolished += 1,
                        ChangeKind::Restored => {
                            if r.abolished_on.is_none() {
                                e.abolished_on = Some(NOT_ABOLISHED);
                            }
                            s.restored += 1;
                        }
                        ChangeKind::Continued => s.continued += 1,
                        _ => s.changed += 1,
                    }
                    e.kind = kind;
                }
            }
        }
        Ok(s)
    }

    /// The record of a receipt code.
    pub fn record(&self, receipt_code: &str) -> Option<&YRecord> {
        self.records.get(receipt_code)
    }

    /// All records, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &YRecord> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of records not abolished.
    pub fn current_count(&self) -> usize {
        self.records.values().filter(|r| r.is_current()).count()
    }
}

fn require_full(r: &YRecord) -> Result<(), MasterError> {
    let missing = |column, name| MasterError::MissingColumn {
        line: r.line,
        column,
        name,
    };
    if r.name.is_none() {
        return Err(missing(5, "漢字名称"));
    }
    if r.dosage_form.is_none() {
        return Err(missing(28, "剤形"));
    }
    if r.abolished_on.is_none() {
        return Err(missing(31, "廃止年月日"));
    }
    Ok(())
}

impl YRecord {
    /// Overwrites the fields `update` fills (a 変更 row).
    fn merge(&mut self, update: &YRecord) {
        fn set<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if let Some(v) = src {
                *dst = Some(v.clone());
            }
        }
        self.line = update.line;
        set(&mut self.name, &update.name);
        set(&mut self.unit, &update.unit);
        set(&mut self.price, &update.price);
        set(&mut self.narcotic_class, &update.narcotic_class);
        set(&mut self.generic_flag, &update.generic_flag);
        set(&mut self.dosage_form, &update.dosage_form);
        set(&mut self.changed_on, &update.changed_on);
        set(&mut self.abolished_on, &update.abolished_on);
        set(&mut self.yj_code, &update.yj_code);
        set(&mut self.transitional_until, &update.transitional_until);
        set(&mut self.generic_name_code, &update.generic_name_code);
        set(&mut self.generic_name_label, &update.generic_name_label);
        set(&mut self.long_listed_original, &update.long_listed_original);
        set(&mut self.selective_care, &update.selective_care);
    }
}
