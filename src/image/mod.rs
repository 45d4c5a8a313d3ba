//! Image writers: each renders a [`Manifest`](crate::manifest::Manifest) into one output file.
//!
//! Invariant: a writer reads nothing but the manifest (and the host files its entries point
//! to), and publishes its output by renaming a finished temporary file into place, so a failed
//! or interrupted run leaves the previous output untouched.

pub mod cpio;
pub mod ext4;
pub mod tar;

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Runs `write` on a temporary path next to `out` and renames the result to `out` only if
/// `write` succeeded. The temporary file is removed on failure.
pub fn write_atomically(out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_path("create directory", dir)?;
    let tmp = temp_path(out);
    let _ = fs::remove_file(&tmp);
    let result = write(&tmp).and_then(|()| fs::rename(&tmp, out).with_path("rename into", out));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes what killed runs left in `dir`: temporary outputs (`.name.tmp-<pid>`) and their
/// staging directories. Call it only while holding the directory's lock.
pub fn remove_stale_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") {
            let path = entry.path();
            let removed =
                if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed.with_path("remove leftover", &path)?;
        }
    }
    Ok(())
}

/// `dir/.name.tmp-<pid>`: hidden, unique per process, in the same directory so the final
/// rename is atomic.
fn temp_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Opens a host file that a manifest entry refers to.
pub(crate) fn open_source(path: &Path) -> Result<fs::File> {
    fs::File::open(path).map_err(|e| Error::io("read", path, e))
}
