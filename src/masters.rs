//! The drug masters from files: the official SSK y-files (a full file, then its updates in date
//! order) and the MHLW ingredient lists, as published or gzip-compressed, into a
//! `domain::master::Catalog`. The shipped set is `data/masters` (see its README).

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
};

use crate::domain::master::{
    Catalog, Ingredients, Master, MasterError, UpdateSummary, parse_y_file,
};

/// Why the masters could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}: no {what}")]
    Missing { dir: PathBuf, what: &'static str },
    #[error("{path}: {source}")]
    Master { path: PathBuf, source: MasterError },
    #[error("{path}: not UTF-8")]
    NotUtf8 { path: PathBuf },
}

/// What was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    pub full_file: String,
    /// Each update file applied, in order, with what it changed.
    pub updates: Vec<(String, UpdateSummary)>,
    pub records: usize,
    pub current: usize,
}

/// The masters shipped with rxgate.
pub fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/masters")
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::with_capacity(bytes.len() * 5);
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn text(path: &Path) -> Result<String, Error> {
    String::from_utf8(read(path)?).map_err(|_| Error::NotUtf8 {
        path: path.to_owned(),
    })
}

/// The files in `dir` whose name starts with `prefix` and is a `.csv` or `.csv.gz`, sorted by
/// name (the official names carry their date, so name order is date order).
fn files(dir: &Path, prefix: &str, exclude: Option<&str>) -> Result<Vec<PathBuf>, Error> {
    let entries = fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| Error::Read {
                path: dir.to_owned(),
                source,
            })?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(prefix)
            && (name.ends_with(".csv") || name.ends_with(".csv.gz"))
            && exclude.is_none_or(|x| !name.contains(x))
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

fn newest(
    dir: &Path,
    prefix: &str,
    exclude: Option<&str>,
    what: &'static str,
) -> Result<PathBuf, Error> {
    files(dir, prefix, exclude)?
        .pop()
        .ok_or_else(|| Error::Missing {
            dir: dir.to_owned(),
            what,
        })
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Loads a folder laid out like the official publication: one `y_ALL*.csv`, updates in
/// `y_updates/y_YYYYMMDD.csv`, the newest `mhlw_yakka_list_*.csv` and `ippan_master_*.csv`
/// (each possibly `.gz`).
pub fn load_dir(dir: &Path) -> Result<(Catalog, LoadReport), Error> {
    let full = newest(dir, "y_ALL", None, "full y-file (y_ALL*.csv)")?;
    let master_error = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Master { path, source }
    };
    let rows = parse_y_file(&read(&full)?).map_err(master_error(&full))?;
    let mut master = Master::from_full(rows).map_err(master_error(&full))?;
    let mut updates = Vec::new();
    let update_dir = dir.join("y_updates");
    if update_dir.is_dir() {
        for path in files(&update_dir, "y_", None)? {
            let rows = parse_y_file(&read(&path)?).map_err(master_error(&path))?;
            let summary = master.apply_update(&rows).map_err(master_error(&path))?;
            updates.push((name(&path), summary));
        }
    }
    let yakka = newest(dir, "mhlw_yakka_list_", None, "MHLW yakka list")?;
    let ippan = newest(
        dir,
        "ippan_master_",
        Some("exceptions"),
        "MHLW ippan master",
    )?;
    let ingredients =
        Ingredients::from_texts(&text(&yakka)?, &text(&ippan)?).map_err(master_error(&yakka))?;
    let report = LoadReport {
        full_file: name(&full),
        updates,
        records: master.len(),
        current: master.current_count(),
    };
    Ok((Catalog::new(master, ingredients), report))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped master is the current one: the full file plus all 23 updates.
    #[test]
    fn the_shipped_master_is_current() {
        let (catalog, report) = load_dir(&shipped_dir()).unwrap();
        assert_eq!(report.full_file, "y_ALL20240321.csv.gz");
        assert_eq!(report.updates.len(), 23);
        assert_eq!(report.updates.last().unwrap().0, "y_20250813.csv.gz");
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

    #[test]
    fn a_folder_without_masters_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("full y-file"), "{err}");
    }
}
