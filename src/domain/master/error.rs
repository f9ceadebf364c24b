//! Why a master file could not be read or applied ([`MasterError`]): every variant names the
//! line, and the column where there is one. Pure: no IO, no clock, no tonic/prost/store engine;
//! of the master, names only the y-file's `ChangeKind`.

use super::y_file::ChangeKind;

/// Why a master file could not be read or applied. Every variant names where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    #[error("line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("line {line}: expected 40 or 42 columns, found {found}")]
    ColumnCount { line: usize, found: usize },
    #[error("line {line}, column {column}: {msg}: {value:?}")]
    Field {
        line: usize,
        column: usize,
        value: String,
        msg: &'static str,
    },
    #[error("line {line}: receipt code {code} ({kind:?}) is not in the master")]
    UnknownCode {
        line: usize,
        code: String,
        kind: ChangeKind,
    },
    #[error("line {line}: receipt code {code} is new (3) but already in the master")]
    DuplicateCode { line: usize, code: String },
    #[error("line {line}: missing column {column} ({name})")]
    MissingColumn {
        line: usize,
        column: usize,
        name: &'static str,
    },
    #[error("the text is not valid {0}")]
    Encoding(&'static str),
}

pub(super) fn field_err(line: usize, column: usize, value: &str, msg: &'static str) -> MasterError {
    MasterError::Field {
        line,
        column,
        value: value.to_owned(),
        msg,
    }
}
