//! The mark of an import that has not finished: a file beside the engine's, written before the
//! new store is created, removed once the whole dump is in and the store's acknowledged mark
//! saved. While it is there every opening of the store is
//! refused, so that a store holding part of a dump (an import cut by a full disk, a kill, a
//! power loss) is never served, exported or checked as if it were whole.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Error;

/// The file's name in the store's folder.
const FILE: &str = "import-unfinished";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Marks the store in `dir` as being loaded, durably. Blocking IO.
pub fn begin(dir: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path(dir))?;
    file.write_all(
        b"an import into this folder has not finished; remove the folder and import again\n",
    )?;
    file.sync_all()?;
    File::open(dir)?.sync_all()
}

/// Removes the mark of [`begin`], durably: the store is whole. Blocking IO.
pub fn end(dir: &Path) -> io::Result<()> {
    fs::remove_file(path(dir))?;
    File::open(dir)?.sync_all()
}

/// Refuses the store in `dir` if an import into it has not finished.
pub fn refuse(dir: &Path) -> Result<(), Error> {
    if path(dir).exists() {
        return Err(Error::Corrupt(format!(
            "an import into {} did not finish ({} is there): the folder holds part of a dump; \
             remove the folder and import again",
            dir.display(),
            FILE
        )));
    }
    Ok(())
}
