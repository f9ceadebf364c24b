//! Importing drug masters and contraindication tables into a running gateway: the files are
//! applied to the set the clinical data is built from, the whole set is rebuilt off the async
//! runtime (a file that does not parse refuses the import and changes nothing), the new files
//! are stored — gzip-compressed, in the same transaction as the audit record and the imports'
//! version (the number of files stored) — and only then is the new data put in force. A restart
//! replays the stored files over the shipped set, so the newest import still wins; the other
//! gateways over the same database do the same when they see the version move
//! (import_watch.rs).

use std::{collections::HashSet, io::Write, sync::Arc};

use crate::{
    domain::hash::sha256,
    master_files::{FileKind, SourceFile, Sources, gunzip_bounded},
    store::{self, Store, Table, Txn, raise_sequence},
};

use super::{
    Action, Caller, Clinical, Error, Gateway,
    records::{ImportedFileRecord, ImportedFileV1, MasterFileKindV1, decode, encode},
    schema::{self, IMPORTED_FILES, IMPORTS, import_key},
    stored::corrupt,
};

/// A file sent for import.
#[derive(Debug, Clone)]
pub struct ImportFile {
    pub kind: FileKind,
    pub file: SourceFile,
}

/// What importing one file did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileOutcome {
    pub name: String,
    pub rows: u64,
    pub added: u64,
    pub changed: u64,
    pub abolished: u64,
    pub deleted: u64,
    pub restored: u64,
    /// The same bytes were imported before: nothing was applied again.
    pub already_imported: bool,
}

/// What an import did, and the data in force afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub files: Vec<(FileKind, FileOutcome)>,
    pub master_records: u64,
    pub current_products: u64,
    pub contraindication_rules: u64,
    /// The number of files imported into the store so far: the imports' version.
    pub version: u64,
}

fn kind_v1(kind: FileKind) -> MasterFileKindV1 {
    match kind {
        FileKind::YFull => MasterFileKindV1::YFull,
        FileKind::YUpdate => MasterFileKindV1::YUpdate,
        FileKind::YakkaList => MasterFileKindV1::YakkaList,
        FileKind::IppanMaster => MasterFileKindV1::IppanMaster,
        FileKind::Contraindications => MasterFileKindV1::Contraindications,
    }
}

fn kind_of(kind: MasterFileKindV1) -> FileKind {
    match kind {
        MasterFileKindV1::YFull => FileKind::YFull,
        MasterFileKindV1::YUpdate => FileKind::YUpdate,
        MasterFileKindV1::YakkaList => FileKind::YakkaList,
        MasterFileKindV1::IppanMaster => FileKind::IppanMaster,
        MasterFileKindV1::Contraindications => FileKind::Contraindications,
    }
}

fn stored_files(tx: &dyn Txn) -> Result<Vec<ImportedFileV1>, store::Error> {
    let mut files = Vec::new();
    for (_, v) in tx.scan_prefix(Table::Clinical, IMPORTS, usize::MAX)? {
        let ImportedFileRecord::V1(f) = decode(&v)?;
        files.push(f);
    }
    Ok(files)
}

/// The imports' version: the number of files imported into the store. One small read.
pub(super) fn imports_version(tx: &dyn Txn) -> Result<u64, store::Error> {
    tx.sequence(IMPORTED_FILES)
}

/// The files imported into a store, and their version.
pub(super) struct Imported {
    /// The number of files, as [`imports_version`] reads it.
    pub(super) version: u64,
    /// In import order, decompressed.
    pub(super) files: Vec<ImportFile>,
}

/// The stored files and their version, read together. A store whose files were imported before
/// the version was kept has its version raised to their number here, once.
fn stored_with_version(tx: &mut dyn Txn) -> Result<(u64, Vec<ImportedFileV1>), store::Error> {
    let files = stored_files(tx)?;
    raise_sequence(tx, IMPORTED_FILES, files.len() as u64)?;
    Ok((imports_version(tx)?, files))
}

/// The files imported so far, and their version: what the clinical data is built from over the
/// shipped set.
pub(super) async fn imported_files(store: &Arc<dyn Store>) -> Result<Imported, store::Error> {
    let (version, stored) = store
        .transact(|tx: &mut dyn Txn| stored_with_version(tx))
        .await??;
    // Decompressing megabytes is blocking work: off the async runtime.
    let files = tokio::task::spawn_blocking(move || {
        stored
            .into_iter()
            .map(|f| {
                let bytes = gunzip_bounded(&f.gzip).map_err(|_| corrupt("imported master file"))?;
                Ok(ImportFile {
                    kind: kind_of(f.kind),
                    file: SourceFile {
                        name: f.name,
                        bytes,
                    },
                })
            })
            .collect::<Result<_, store::Error>>()
    })
    .await
    .map_err(|e| store::Error::Engine(e.to_string()))??;
    Ok(Imported { version, files })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// The order in which a batch is applied: a full file first, then updates by name, then the
/// rest as sent.
fn apply_order(kind: FileKind) -> u8 {
    match kind {
        FileKind::YFull => 0,
        FileKind::YUpdate => 1,
        _ => 2,
    }
}

fn rows(bytes: &[u8]) -> u64 {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count() as u64
}

impl Gateway {
    /// An operator imports drug-master files (and contraindication tables): applied together,
    /// effective at once, kept across restarts.
    pub async fn import_master(
        &self,
        caller: &Caller,
        files: Vec<ImportFile>,
    ) -> Result<ImportSummary, Error> {
        let draft = self.draft(caller, Action::ImportMaster, self.clock.now());
        let _one_at_a_time = self.imports.lock().await;
        let current = self.clinical();
        let known: HashSet<[u8; 32]> = match self
            .store
            .transact(|tx: &mut dyn Txn| stored_files(tx))
            .await
            .map_err(Error::from)
            .and_then(|r| r.map_err(Error::from))
        {
            Ok(stored) => stored.iter().map(|f| f.sha256).collect(),
            Err(e) => return self.refuse(draft, e).await,
        };
        // Hashing, comparing and (below) compressing megabytes is blocking work: off the async
        // runtime. A file the set in force holds already (shipped, or imported before) is not
        // fresh either.
        let in_force = Arc::clone(&current);
        let hashed = tokio::task::spawn_blocking(move || {
            let digests: Vec<[u8; 32]> = files.iter().map(|f| sha256(&f.file.bytes)).collect();
            let held: Vec<bool> = files
                .iter()
                .map(|f| in_force.sources.holds(f.kind, &f.file.bytes))
                .collect();
            (files, digests, held)
        })
        .await;
        let (files, digests, held) = match hashed {
            Ok(hashed) => hashed,
            Err(e) => return self.refuse(draft, Error::Internal(e.to_string())).await,
        };
        let mut fresh: Vec<(ImportFile, [u8; 32])> = Vec::new();
        for ((f, &digest), held) in files.iter().zip(&digests).zip(held) {
            if !held && !known.contains(&digest) && !fresh.iter().any(|(_, d)| *d == digest) {
                fresh.push((f.clone(), digest));
            }
        }
        fresh.sort_by(|(a, _), (b, _)| {
            (apply_order(a.kind), &a.file.name).cmp(&(apply_order(b.kind), &b.file.name))
        });
        let mut sources: Sources = current.sources.clone();
        for (f, _) in &fresh {
            if let Err(e) = sources.apply(f.kind, f.file.clone()) {
                let error = Error::invalid("files", &e.to_string());
                return self.refuse(draft, error).await;
            }
        }
        let to_build = sources.clone();
        let to_compress: Vec<Vec<u8>> = fresh.iter().map(|(f, _)| f.file.bytes.clone()).collect();
        let (built, compressed) = if fresh.is_empty() {
            (None, Vec::new())
        } else {
            let work = tokio::task::spawn_blocking(move || {
                let built = to_build.build()?;
                Ok::<_, crate::master_files::Error>((
                    built,
                    to_compress.iter().map(|b| gzip(b)).collect(),
                ))
            });
            match work.await {
                Ok(Ok((built, compressed))) => (Some(built), compressed),
                Ok(Err(e)) => {
                    let error = Error::invalid("files", &e.to_string());
                    return self.refuse(draft, error).await;
                }
                Err(e) => return self.refuse(draft, Error::Internal(e.to_string())).await,
            }
        };

        let time_ms = draft.time_ms;
        let caller_code = caller.institution.code.to_string();
        let certificate_sha256 = caller.certificate_sha256;
        let records: Vec<ImportedFileRecord> = fresh
            .iter()
            .zip(compressed)
            .map(|((f, digest), gzip)| {
                ImportedFileRecord::V1(ImportedFileV1 {
                    name: f.file.name.clone(),
                    kind: kind_v1(f.kind),
                    sha256: *digest,
                    time_ms,
                    institution_code: caller_code.clone(),
                    certificate_sha256,
                    gzip,
                })
            })
            .collect();
        let base = current.version;
        self.run(draft, move |tx, _| {
            // Built over the files of version `base`: another gateway's import since, or one
            // this gateway has not loaded yet, would be lost from the data put in force.
            let stored = imports_version(tx)?;
            if stored != base {
                return Err(Error::FailedPrecondition(format!(
                    "the store holds imports of version {stored}, this gateway's data is of \
                     version {base}: send the files again once it has loaded them"
                )));
            }
            raise_sequence(tx, IMPORTED_FILES, base + records.len() as u64)?;
            for record in &records {
                // Unique and drawn in import order (imports run one at a time), so a later
                // import sorts after an earlier one; nothing needs them gap-free.
                let sequence = tx.unique_sequence(schema::IMPORT_SEQUENCE)?;
                tx.put(Table::Clinical, &import_key(sequence), &encode(record));
            }
            Ok(())
        })
        .await?;

        let version = base + fresh.len() as u64;
        let in_force = match built {
            Some(built) => {
                let clinical = Arc::new(Clinical {
                    catalog: built.catalog,
                    table: built.table,
                    sources,
                    version,
                    report: built.report,
                });
                self.replace_clinical(Arc::clone(&clinical));
                tracing::info!(version, files = fresh.len(), "drug masters imported");
                clinical
            }
            None => current,
        };
        let outcomes = files
            .iter()
            .map(|f| {
                let fresh = fresh.iter().any(|(g, _)| g.file.name == f.file.name);
                let mut outcome = FileOutcome {
                    name: f.file.name.clone(),
                    already_imported: !fresh,
                    ..FileOutcome::default()
                };
                if fresh {
                    outcome.rows = rows(&f.file.bytes);
                    match f.kind {
                        FileKind::YFull => outcome.added = in_force.report.full_records as u64,
                        FileKind::YUpdate => {
                            if let Some((_, s)) = in_force
                                .report
                                .updates
                                .iter()
                                .find(|(n, _)| *n == f.file.name)
                            {
                                outcome.added = s.added as u64;
                                outcome.changed = (s.changed + s.continued) as u64;
                                outcome.abolished = s.abolished as u64;
                                outcome.deleted = s.deleted as u64;
                                outcome.restored = s.restored as u64;
                            }
                        }
                        _ => {}
                    }
                }
                (f.kind, outcome)
            })
            .collect();
        Ok(ImportSummary {
            files: outcomes,
            master_records: in_force.report.records as u64,
            current_products: in_force.report.current as u64,
            contraindication_rules: in_force.table.len() as u64,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    /// A store whose files were imported before their version was kept: the first load counts
    /// them, so that a gateway's data and the version the others read agree.
    #[tokio::test]
    async fn the_version_of_files_imported_before_it_was_kept_is_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let stored = |name: &str| {
            encode(&ImportedFileRecord::V1(ImportedFileV1 {
                name: name.to_owned(),
                kind: MasterFileKindV1::Contraindications,
                sha256: [0; 32],
                time_ms: 0,
                institution_code: "1340000001".to_owned(),
                certificate_sha256: [0; 32],
                gzip: gzip(name.as_bytes()),
            }))
        };
        let (first, second) = (
            stored("contraindications_a.csv"),
            stored("contraindications_b.csv"),
        );
        store
            .transact(move |tx: &mut dyn Txn| {
                tx.put(Table::Clinical, &import_key(7), &first);
                tx.put(Table::Clinical, &import_key(9), &second);
                Ok::<_, store::Error>(())
            })
            .await
            .unwrap()
            .unwrap();

        let imported = imported_files(&store).await.unwrap();
        assert_eq!(imported.version, 2);
        let names: Vec<&str> = imported
            .files
            .iter()
            .map(|f| f.file.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["contraindications_a.csv", "contraindications_b.csv"]
        );
        let version = store.transact(|tx: &mut dyn Txn| imports_version(tx));
        assert_eq!(version.await.unwrap().unwrap(), 2, "kept in the store");
    }
}
