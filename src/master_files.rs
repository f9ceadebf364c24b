//! The drug masters from files: the official SSK y-files (a full file, then its updates in date
//! order) and the MHLW ingredient lists, as published or gzip-compressed, into a
//! `domain::master::Catalog`, and the contraindication table. The shipped set, `data/masters`
//! and `data/clinical` (see their READMEs), is embedded in the binary (build.rs lists it), so
//! that the binary runs without its source tree; a folder and a table file named in the
//! configuration replace it.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
};

use crate::{
    domain::{
        checks::{ContraindicationTable, TableError},
        master::{Catalog, Ingredients, Master, MasterError, UpdateSummary, parse_y_file},
    },
    limits::MAX_IMPORT_FILE_BYTES,
};

/// Why the masters could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{place}: no {what}")]
    Missing { place: String, what: &'static str },
    #[error("{path}: {source}")]
    Master { path: PathBuf, source: MasterError },
    #[error("{path}: not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: {source}")]
    Table { path: PathBuf, source: TableError },
    #[error("{name}: not an official file name (expected {expected})")]
    Name {
        name: String,
        expected: &'static str,
    },
}

/// What was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub full_file: String,
    /// Records in the full file.
    pub full_records: usize,
    /// Each update file applied, in order, with what it changed.
    pub updates: Vec<(String, UpdateSummary)>,
    pub records: usize,
    pub current: usize,
}

/// The shipped data as build.rs lists it: `MASTERS` (each file's path below `data/masters`, and
/// its bytes as shipped) and `CONTRAINDICATIONS` (the table's name and bytes).
mod shipped {
    include!(concat!(env!("OUT_DIR"), "/shipped_data.rs"));
}

/// What errors call the embedded masters.
const SHIPPED_PLACE: &str = "the shipped data/masters";

/// Decompresses gzip `bytes`, refusing output over [`MAX_IMPORT_FILE_BYTES`] (a small file can
/// expand a thousandfold) without ever holding more than that.
pub fn gunzip_bounded(bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_IMPORT_FILE_BYTES + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_IMPORT_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decompresses to over {} MiB", MAX_IMPORT_FILE_BYTES >> 20),
        ));
    }
    Ok(out)
}

/// `bytes` of a file named `name`, decompressed if it is a `.gz`.
fn decompressed(name: &str, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    if name.ends_with(".gz") {
        gunzip_bounded(&bytes)
    } else {
        Ok(bytes)
    }
}

/// Where the bytes of a file of a masters folder are.
enum Origin {
    File(PathBuf),
    Shipped(&'static [u8]),
}

/// A file of a masters folder, not yet read.
struct Listed {
    /// Its file name, as published (`y_20240417.csv.gz`).
    name: String,
    origin: Origin,
}

impl Listed {
    fn read(&self) -> Result<SourceFile, Error> {
        match &self.origin {
            Origin::File(path) => SourceFile::read(path),
            Origin::Shipped(bytes) => Ok(SourceFile {
                name: self.name.trim_end_matches(".gz").to_owned(),
                bytes: decompressed(&self.name, bytes.to_vec()).map_err(|source| Error::Read {
                    path: PathBuf::from(&self.name),
                    source,
                })?,
            }),
        }
    }
}

/// The `.csv` and `.csv.gz` files of a masters folder, on disk or shipped: those at its top and
/// those in `y_updates/`, each sorted by name (the official names carry their date, so name
/// order is date order).
struct Listing {
    /// What errors call the folder.
    place: String,
    top: Vec<Listed>,
    updates: Vec<Listed>,
}

fn is_csv(name: &str) -> bool {
    name.ends_with(".csv") || name.ends_with(".csv.gz")
}

/// The `.csv` and `.csv.gz` files of `dir`, sorted by name.
fn listed(dir: &Path) -> Result<Vec<Listed>, Error> {
    let read_error = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let name = name(&path);
        if is_csv(&name) {
            found.push(Listed {
                name,
                origin: Origin::File(path),
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

impl Listing {
    fn of_dir(dir: &Path) -> Result<Listing, Error> {
        let update_dir = dir.join("y_updates");
        Ok(Listing {
            place: dir.display().to_string(),
            top: listed(dir)?,
            updates: if update_dir.is_dir() {
                listed(&update_dir)?
            } else {
                Vec::new()
            },
        })
    }

    fn shipped() -> Listing {
        let (mut top, mut updates) = (Vec::new(), Vec::new());
        for (path, bytes) in shipped::MASTERS {
            let (list, name) = match path.strip_prefix("y_updates/") {
                Some(name) => (&mut updates, name),
                None => (&mut top, *path),
            };
            list.push(Listed {
                name: name.to_owned(),
                origin: Origin::Shipped(bytes),
            });
        }
        Listing {
            place: SHIPPED_PLACE.to_owned(),
            top,
            updates,
        }
    }

    /// The last (newest) file at the top whose name starts with `prefix` and does not contain
    /// `exclude`, read.
    fn newest(
        &self,
        prefix: &str,
        exclude: Option<&str>,
        what: &'static str,
    ) -> Result<SourceFile, Error> {
        (self.top.iter())
            .rfind(|f| f.name.starts_with(prefix) && exclude.is_none_or(|x| !f.name.contains(x)))
            .ok_or_else(|| Error::Missing {
                place: self.place.clone(),
                what,
            })?
            .read()
    }
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The kinds of file that make up the clinical data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// SSK 医薬品マスター full file, `y_ALLYYYYMMDD.csv` (cp932).
    YFull,
    /// SSK 医薬品マスター update file, `y_YYYYMMDD.csv` (cp932).
    YUpdate,
    /// MHLW 薬価基準収載品目リスト (UTF-8 CSV).
    YakkaList,
    /// MHLW 一般名処方マスタ (UTF-8 CSV).
    IppanMaster,
    /// The contraindication table (UTF-8 CSV, `contraindications_structured.csv` layout).
    Contraindications,
}

/// One file's name and bytes (decompressed).
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The files the clinical data is built from: a full y-file and the update files after it (in
/// name order, which is date order), the two MHLW lists and the contraindication table. The
/// shipped set comes from `data/`; imports change it (`Sources::apply`), and a restart replays
/// the imports over the shipped set, so the result is always a function of the files.
#[derive(Debug, Clone)]
pub struct Sources {
    full: SourceFile,
    updates: BTreeMap<String, SourceFile>,
    yakka: SourceFile,
    ippan: SourceFile,
    contraindications: SourceFile,
}

/// The date in an official y-file name (`y_ALL20240321.csv`, `y_20250813.csv`).
fn y_date(name: &str, prefix: &str) -> Option<String> {
    let rest = name.strip_prefix(prefix)?;
    let date = rest.get(..8)?;
    (date.bytes().all(|b| b.is_ascii_digit()) && rest[8..].starts_with(".csv"))
        .then(|| date.to_owned())
}

impl SourceFile {
    /// Reads a file (decompressing a `.gz`); its name is the file name without `.gz`.
    pub fn read(path: &Path) -> Result<SourceFile, Error> {
        let name = name(path);
        let read_error = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = fs::read(path).map_err(read_error)?;
        Ok(SourceFile {
            bytes: decompressed(&name, bytes).map_err(read_error)?,
            name: name.trim_end_matches(".gz").to_owned(),
        })
    }

    /// The shipped contraindication table.
    fn shipped_contraindications() -> SourceFile {
        let (name, bytes) = shipped::CONTRAINDICATIONS;
        SourceFile {
            name: name.to_owned(),
            bytes: bytes.to_vec(),
        }
    }
}

impl FileKind {
    /// Every kind, in the order `rxgate master import` names them.
    pub const ALL: [FileKind; 5] = [
        FileKind::YFull,
        FileKind::YUpdate,
        FileKind::YakkaList,
        FileKind::IppanMaster,
        FileKind::Contraindications,
    ];

    /// Its name on the command line (`master import --kind`).
    pub fn name(self) -> &'static str {
        match self {
            FileKind::YFull => "y-full",
            FileKind::YUpdate => "y-update",
            FileKind::YakkaList => "yakka-list",
            FileKind::IppanMaster => "ippan-master",
            FileKind::Contraindications => "contraindications",
        }
    }

    /// What a file name contains, in any case, to be recognised as this kind.
    pub fn pattern(self) -> &'static str {
        match self {
            FileKind::YFull => "y_ALLYYYYMMDD",
            FileKind::YUpdate => "y_YYYYMMDD",
            FileKind::YakkaList => "mhlw_yakka_list",
            FileKind::IppanMaster => "ippan_master",
            FileKind::Contraindications => "contraindications",
        }
    }

    /// The kind whose official name `name` contains, in any case, with the file a `.csv` or a
    /// `.csv.gz`: a download renamed `y_ALL20240321 (1).csv.gz` is still a full y-file.
    pub fn of_name(name: &str) -> Option<FileKind> {
        let name = name.to_ascii_lowercase();
        if !name.trim_end_matches(".gz").ends_with(".csv") {
            return None;
        }
        FileKind::ALL.into_iter().find(|kind| match kind {
            FileKind::YFull => dated(&name, "y_all").is_some(),
            FileKind::YUpdate => dated(&name, "y_").is_some(),
            _ => name.contains(kind.pattern()),
        })
    }

    /// The name a file named `name` is imported under: a y-file's official name, made from the
    /// date in `name` (its order among the updates comes from it), or `name` itself for the
    /// others; `None` for a y-file whose name carries no date.
    pub fn official_name(self, name: &str) -> Option<String> {
        let lower = name.to_ascii_lowercase();
        let date = |mark| dated(&lower, mark).or_else(|| dated(&lower, ""));
        match self {
            FileKind::YFull => Some(format!("y_ALL{}.csv", date("y_all")?)),
            FileKind::YUpdate => Some(format!("y_{}.csv", date("y_")?)),
            _ => Some(name.to_owned()),
        }
    }
}

/// The eight digits right after `mark` in `name`, where `mark` does not continue a word and the
/// digits are not part of a longer number.
fn dated<'a>(name: &'a str, mark: &str) -> Option<&'a str> {
    let starts_word = |at: usize| {
        !name[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    };
    (0..name.len())
        .filter(|&at| name.is_char_boundary(at) && name[at..].starts_with(mark) && starts_word(at))
        .find_map(|at| {
            let rest = &name[at + mark.len()..];
            let date = rest.get(..8)?;
            let digits = date.bytes().all(|b| b.is_ascii_digit());
            (digits && !rest[8..].starts_with(|c: char| c.is_ascii_digit())).then_some(date)
        })
}

fn utf8(file: &SourceFile) -> Result<&str, Error> {
    std::str::from_utf8(&file.bytes).map_err(|_| Error::NotUtf8 {
        path: PathBuf::from(&file.name),
    })
}

/// What a build produced.
pub struct Built {
    pub catalog: Catalog,
    pub table: ContraindicationTable,
    pub report: LoadReport,
}

impl Sources {
    /// Reads the drug masters of `masters_dir` (default: the shipped ones), a folder laid out
    /// like the official publication: one `y_ALL*.csv`, updates in `y_updates/y_YYYYMMDD.csv`,
    /// the newest `mhlw_yakka_list_*.csv` and `ippan_master_*.csv` (each possibly `.gz`); and
    /// the contraindication table at `contraindications` (default: the shipped one).
    pub fn read(
        masters_dir: Option<&Path>,
        contraindications: Option<&Path>,
    ) -> Result<Sources, Error> {
        let listing = match masters_dir {
            Some(dir) => Listing::of_dir(dir)?,
            None => Listing::shipped(),
        };
        let mut updates = BTreeMap::new();
        for listed in listing.updates.iter().filter(|f| f.name.starts_with("y_")) {
            let file = listed.read()?;
            updates.insert(file.name.clone(), file);
        }
        Ok(Sources {
            full: listing.newest("y_ALL", None, "full y-file (y_ALL*.csv)")?,
            updates,
            yakka: listing.newest("mhlw_yakka_list_", None, "MHLW yakka list")?,
            ippan: listing.newest("ippan_master_", Some("exceptions"), "MHLW ippan master")?,
            contraindications: match contraindications {
                Some(path) => SourceFile::read(path)?,
                None => SourceFile::shipped_contraindications(),
            },
        })
    }

    /// The shipped set: `data/masters` and `data/clinical/contraindications_structured.csv`,
    /// as embedded in the binary.
    pub fn shipped() -> Result<Sources, Error> {
        Sources::read(None, None)
    }

    /// Puts a file in the set: a full y-file replaces the base (and drops the updates it
    /// supersedes), an update joins the updates (replacing one of the same name), the others
    /// replace their kind. Refuses a y-file whose name is not the official one (the name gives
    /// its date, and so its order).
    pub fn apply(&mut self, kind: FileKind, file: SourceFile) -> Result<(), Error> {
        let bad_name = |expected: &'static str| Error::Name {
            name: file.name.clone(),
            expected,
        };
        match kind {
            FileKind::YFull => {
                let date =
                    y_date(&file.name, "y_ALL").ok_or_else(|| bad_name("y_ALLYYYYMMDD.csv"))?;
                self.updates
                    .retain(|name, _| y_date(name, "y_").is_some_and(|d| d > date));
                self.full = file;
            }
            FileKind::YUpdate => {
                y_date(&file.name, "y_").ok_or_else(|| bad_name("y_YYYYMMDD.csv"))?;
                self.updates.insert(file.name.clone(), file);
            }
            FileKind::YakkaList => self.yakka = file,
            FileKind::IppanMaster => self.ippan = file,
            FileKind::Contraindications => self.contraindications = file,
        }
        Ok(())
    }

    /// Whether the set holds a file of `kind` with exactly these bytes (shipped, or imported
    /// before): importing it again would change nothing.
    pub fn holds(&self, kind: FileKind, bytes: &[u8]) -> bool {
        match kind {
            FileKind::YFull => self.full.bytes == bytes,
            FileKind::YUpdate => self.updates.values().any(|f| f.bytes == bytes),
            FileKind::YakkaList => self.yakka.bytes == bytes,
            FileKind::IppanMaster => self.ippan.bytes == bytes,
            FileKind::Contraindications => self.contraindications.bytes == bytes,
        }
    }

    /// Parses everything and builds the catalog and the table. The updates after the full
    /// file's date are applied in name (date) order.
    pub fn build(&self) -> Result<Built, Error> {
        let master_error = |file: &SourceFile| {
            let path = PathBuf::from(&file.name);
            move |source| Error::Master { path, source }
        };
        let rows = parse_y_file(&self.full.bytes).map_err(master_error(&self.full))?;
        let full_records = rows.len();
        let mut master = Master::from_full(rows).map_err(master_error(&self.full))?;
        let base = y_date(&self.full.name, "y_ALL");
        let mut updates = Vec::new();
        for file in self.updates.values() {
            if base.is_some() && y_date(&file.name, "y_") <= base {
                continue;
            }
            let rows = parse_y_file(&file.bytes).map_err(master_error(file))?;
            let summary = master.apply_update(&rows).map_err(master_error(file))?;
            updates.push((file.name.clone(), summary));
        }
        let ingredients = Ingredients::from_texts(utf8(&self.yakka)?, utf8(&self.ippan)?)
            .map_err(master_error(&self.yakka))?;
        let table =
            ContraindicationTable::parse(utf8(&self.contraindications)?).map_err(|source| {
                Error::Table {
                    path: PathBuf::from(&self.contraindications.name),
                    source,
                }
            })?;
        let report = LoadReport {
            full_file: self.full.name.clone(),
            full_records,
            updates,
            records: master.len(),
            current: master.current_count(),
        };
        Ok(Built {
            catalog: Catalog::new(master, ingredients),
            table,
            report,
        })
    }
}

/// Loads the drug masters of `dir`, a folder laid out like the official publication (see
/// [`Sources::read`]), or the shipped ones, with the shipped contraindication table.
pub fn load(dir: Option<&Path>) -> Result<(Catalog, LoadReport), Error> {
    let built = Sources::read(dir, None)?.build()?;
    Ok((built.catalog, built.report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped master is the current one: the full file plus all 23 updates.
    #[test]
    fn the_shipped_master_is_current() {
        let (catalog, report) = load(None).unwrap();
        assert_eq!(report.full_file, "y_ALL20240321.csv");
        assert_eq!(report.updates.len(), 23);
        assert_eq!(report.updates.last().unwrap().0, "y_20250813.csv");
        assert_eq!((report.records, report.current), (21_182, 20_523));
        // a "(選)" code arrived with the 2024-09-06 update and resolves like its original
        let chosen = catalog
            .products()
            .find(|p| p.receipt_code.starts_with("67") && !p.moieties.is_empty())
            .expect("a resolved 67-code");
        let original = catalog
            .master()
            .record(&chosen.receipt_code)
            .unwrap()
            .original_code()
            .unwrap()
            .to_owned();
        assert_eq!(
            catalog.by_receipt(&original).unwrap().moieties,
            chosen.moieties
        );
    }

    /// The embedded set is every file of the repository's `data/`: named as a folder and a
    /// table (the configuration's `checks.masters_dir` and `checks.contraindications`), the same
    /// files build the same data.
    #[test]
    fn the_embedded_set_is_the_shipped_folder() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        let table = data.join("clinical/contraindications_structured.csv");
        let named = Sources::read(Some(&data.join("masters")), Some(&table)).unwrap();
        let (named, embedded) = (
            named.build().unwrap(),
            Sources::shipped().unwrap().build().unwrap(),
        );
        assert_eq!(named.report, embedded.report);
        assert_eq!(named.table.len(), embedded.table.len());
    }

    #[test]
    fn a_named_table_replaces_the_embedded_one() {
        let shipped = SourceFile::shipped_contraindications();
        let text = std::str::from_utf8(&shipped.bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("contraindications_small.csv");
        let header_and_one_rule: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        fs::write(&small, header_and_one_rule).unwrap();
        let built = Sources::read(None, Some(&small)).unwrap().build().unwrap();
        assert_eq!(built.table.len(), 1);
        assert!(Sources::shipped().unwrap().build().unwrap().table.len() > 100);
    }

    #[test]
    fn a_file_is_known_by_the_official_name_within_its_name_in_any_case() {
        use FileKind::*;
        let cases = [
            ("y_ALL20240321.csv", Some((YFull, "y_ALL20240321.csv"))),
            (
                "y_ALL20240321 (1).csv.gz",
                Some((YFull, "y_ALL20240321.csv")),
            ),
            ("Y_all20240321.CSV", Some((YFull, "y_ALL20240321.csv"))),
            ("y_20250813.csv.gz", Some((YUpdate, "y_20250813.csv"))),
            (
                "download-Y_20250813 (2).csv",
                Some((YUpdate, "y_20250813.csv")),
            ),
            (
                "MHLW_yakka_list_20250806.csv",
                Some((YakkaList, "MHLW_yakka_list_20250806.csv")),
            ),
            (
                "ippan_master_20250801.csv",
                Some((IppanMaster, "ippan_master_20250801.csv")),
            ),
            (
                "contraindications_structured.csv",
                Some((Contraindications, "contraindications_structured.csv")),
            ),
            // not a word's start, a longer number, no date, not a CSV
            ("my_20250813.csv", None),
            ("y_202508131.csv", None),
            ("y_ALL.csv", None),
            ("y_20250813.txt", None),
            ("notes.csv", None),
        ];
        for (name, expected) in cases {
            let found = FileKind::of_name(name).map(|k| (k, k.official_name(name).unwrap()));
            let expected = expected.map(|(k, n)| (k, n.to_owned()));
            assert_eq!(found, expected, "{name}");
        }
    }

    #[test]
    fn a_kind_said_explicitly_still_takes_a_y_file_date_from_the_name() {
        assert_eq!(
            FileKind::YUpdate
                .official_name("update-20250813.csv")
                .as_deref(),
            Some("y_20250813.csv")
        );
        assert_eq!(
            FileKind::YFull
                .official_name("full 20240321.csv")
                .as_deref(),
            Some("y_ALL20240321.csv")
        );
        assert_eq!(FileKind::YFull.official_name("full.csv"), None);
        assert_eq!(
            FileKind::YakkaList.official_name("list.csv").as_deref(),
            Some("list.csv")
        );
    }

    #[test]
    fn a_folder_without_masters_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("full y-file"), "{err}");
    }
}
