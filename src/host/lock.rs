//! A file lock per output directory, so two busyroot runs on the same target directory take
//! turns instead of writing the same files at once. The kernel drops the lock when the holder
//! exits, however it exits, so a killed run never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

/// Holds an exclusive `flock` on a file until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `path` (created if missing), waiting for another holder if there is
    /// one and saying so through `progress`.
    pub fn acquire(path: &Path, progress: &dyn Progress) -> Result<DirLock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_path("create directory", dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_path("open lock file", path)?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
            progress
                .note(&format!("waiting for another busyroot run to release `{}`", path.display()));
            if !flock(&file, libc::LOCK_EX)? {
                return Err(Error::Other(format!("could not lock `{}`", path.display())));
            }
        }
        Ok(DirLock { _file: file })
    }
}

/// Returns `Ok(false)` when a non-blocking attempt found the lock taken.
fn flock(file: &File, operation: libc::c_int) -> Result<bool> {
    loop {
        // SAFETY: the descriptor is open for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(Error::io("lock", "lock file", err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    struct Waiting(Arc<AtomicBool>);

    impl Progress for Waiting {
        fn note(&self, message: &str) {
            assert!(message.contains("waiting for another busyroot run"), "{message}");
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_second_holder_waits_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busyroot.lock");
        let first = DirLock::acquire(&path, &crate::progress::Silent).unwrap();
        let said = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let (path, said) = (path.clone(), said.clone());
            std::thread::spawn(move || {
                let lock = DirLock::acquire(&path, &Waiting(said)).unwrap();
                tx.send(()).unwrap();
                drop(lock);
            })
        };
        // The waiter cannot get the lock while `first` holds it.
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the waiter gets the lock");
        waiter.join().unwrap();
        assert!(said.load(Ordering::SeqCst), "the waiter must say it is waiting");
    }
}
