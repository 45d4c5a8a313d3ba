//! Files: outputs written under one temporary-name scheme (`.name.tmp-<pid>`) and renamed into
//! place, the one cleaner of what killed runs left, sha256 digests, and the one wait for a
//! Unix socket to listen.
//!
//! Invariant: a file or directory under its final name is complete; anything being written is
//! a hidden `.name.tmp-<pid>` beside it, removable once process `<pid>` is gone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// Refuses a path that is not a file, calling it `what` (`"kernel image"`, say).
pub(crate) fn require_file(what: &str, path: &Path) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    Err(Error::Other(format!("{what} `{}` does not exist or is not a file", path.display())))
}

/// Connects to the Unix socket at `path`, trying again every 5 ms while `retry` says so for
/// the error (a VMM that is still starting may not have made or bound its socket yet).
pub(crate) fn connect_unix(
    path: &Path,
    mut retry: impl FnMut(&io::Error) -> bool,
) -> io::Result<std::os::unix::net::UnixStream> {
    loop {
        match std::os::unix::net::UnixStream::connect(path) {
            Err(e) if retry(&e) => std::thread::sleep(std::time::Duration::from_millis(5)),
            connected => return connected,
        }
    }
}

/// Where a Unix socket `name` of the run whose files go in `run_dir` lives: there, or, where
/// that path is too long for a socket address (107 bytes), in the temporary directory under a
/// name that is the same for every call with `run_dir` in this process and differs between
/// run directories.
pub(crate) fn socket_path(run_dir: &Path, name: &str) -> PathBuf {
    let path = run_dir.join(name);
    if path.as_os_str().len() < 100 {
        return path;
    }
    use std::hash::{Hash, Hasher};
    // The default hasher's keys are fixed, so the name is too.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    run_dir.hash(&mut hasher);
    let short = format!("busyroot-{}-{:x}-{name}", std::process::id(), hasher.finish());
    std::env::temp_dir().join(short)
}

/// `dir/.name.tmp-<pid>`: hidden, unique per process, in the same directory as `out` so the
/// final rename is atomic.
pub fn temp_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

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

/// Writes `contents` to `out` by way of a temporary (see [`write_atomically`]).
pub fn write_file(out: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    write_atomically(out, |tmp| fs::write(tmp, contents).with_path("write", tmp))
}

/// Copies `from` to `out` by way of a temporary (see [`write_atomically`]).
pub(crate) fn copy_file(from: &Path, out: &Path) -> Result<()> {
    write_atomically(out, |tmp| fs::copy(from, tmp).map(drop).with_path("copy", from))
}

/// Removes from `dir` the temporaries (files or directories named `.name.tmp-<pid>…`) of
/// processes that no longer run: what killed runs left. A live run's are kept.
pub fn remove_dead_temporaries(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, after)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else {
            continue;
        };
        let pid: String = after.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        remove_any(&path).with_path("remove leftover", &path)?;
    }
    Ok(())
}

/// Removes `path`, a file or a whole directory.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// A file's identity without reading it: its path, size and modification time, so that a
/// second run need not hash a 140 MB tarball to know nothing changed.
pub(crate) fn file_identity(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).with_path("read", path)?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let mtime = mtime.map_or(0, |d| d.as_nanos());
    Ok(format!("file {} size {} mtime {mtime}", path.display(), meta.len()))
}

/// The sha256 of a file as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_path("open", path)?;
    let mut hasher = Sha256::new();
    // Writing into the hasher cannot fail: an error is the file's.
    io::copy(&mut file, &mut hasher).with_path("read", path)?;
    Ok(hex(&hasher.finalize()))
}

/// The sha256 of a byte string as lower-case hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_dead_processes_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        // No process has pid 0x3fffffff (above the kernel's pid_max limit); process 1 always runs.
        let dead = dir.path().join(".rootfs.ext4.tmp-1073741823");
        let dead_dir = dir.path().join(".rootfs.ext4.tmp-1073741823.d");
        let live = dir.path().join(".busybox.tar.bz2.tmp-1");
        let kept = dir.path().join("rootfs.tmp-1073741823");
        for f in [&dead, &live, &kept] {
            fs::write(f, b"x").unwrap();
        }
        fs::create_dir_all(dead_dir.join("root")).unwrap();
        remove_dead_temporaries(dir.path()).unwrap();
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(live.exists() && kept.exists());
    }
}
