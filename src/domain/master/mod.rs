//! The drug master: parsers for the SSK 医薬品マスター y-file (full and update files), the MHLW
//! 薬価基準収載品目リスト and the 一般名処方マスタ, update application, the active-moiety key and
//! product lookup. Pure: parsers take bytes or `&str`; no IO, no clock, no tonic/prost/store engine.
//!
//! Files: `csv` (the CSV all these files are published in), `y_file` (the SSK y-file parser),
//! `y_master` (the master by receipt code and its updates), `ingredients` (the MHLW lists),
//! `moiety` (the active-moiety key), `catalog` (product lookup), `error`.

mod catalog;
mod csv;
mod error;
mod ingredients;
mod moiety;
mod y_file;
mod y_master;

pub use catalog::{Catalog, GenericName, Product, Route};
pub use csv::parse_csv;
pub use error::MasterError;
pub use ingredients::Ingredients;
pub use moiety::{moieties_of, moiety_key};
pub use y_file::{
    ChangeKind, DosageForm, NOT_ABOLISHED, YRecord, decode_cp932, parse_y_file, parse_y_text,
};
pub use y_master::{Master, UpdateSummary};
