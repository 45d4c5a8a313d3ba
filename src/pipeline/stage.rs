//! Stage fingerprints: a named hash for each input of a stage, stored next to its output, so a
//! rerun can skip the stage when nothing changed and otherwise say which input did.
//!
//! Invariant: a stamp is written only after its stage succeeded and is removed before the stage
//! runs again, so an interrupted stage never looks fresh.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::host::fs::{sha256_bytes, sha256_file};
use crate::tree::manifest::{Kind, Manifest};

/// The inputs of one stage, each as a name and the hash of its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint {
    parts: BTreeMap<String, String>,
}

impl Fingerprint {
    /// An empty fingerprint.
    pub fn new() -> Fingerprint {
        Fingerprint::default()
    }

    /// Adds an input by value.
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Fingerprint {
        self.parts.insert(name.to_string(), sha256_bytes(value.as_ref()));
        self
    }

    /// Adds the whole of another fingerprint (an earlier stage) as one input.
    pub fn after(self, name: &str, earlier: &Fingerprint) -> Fingerprint {
        let digest = earlier.digest();
        self.with(name, digest)
    }

    /// One hash over every input.
    pub fn digest(&self) -> String {
        sha256_bytes(self.to_text().as_bytes())
    }

    fn to_text(&self) -> String {
        self.parts.iter().map(|(k, v)| format!("{k} {v}\n")).collect()
    }

    /// Reads a stored fingerprint; `None` if there is none or it cannot be read.
    pub fn load(path: &Path) -> Option<Fingerprint> {
        let text = fs::read_to_string(path).ok()?;
        let parts = text
            .lines()
            .map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect::<Option<BTreeMap<_, _>>>()?;
        Some(Fingerprint { parts })
    }

    /// Stores the fingerprint atomically.
    pub fn store(&self, path: &Path) -> Result<()> {
        crate::host::fs::write_atomically(path, |tmp| {
            fs::write(tmp, self.to_text()).with_path("write", tmp)
        })
    }

    /// What changed since `old`: `None` when nothing did, else a short description such as
    /// "busybox config changed" or "first build".
    pub fn changes_since(&self, old: Option<&Fingerprint>) -> Option<String> {
        let Some(old) = old else { return Some("first build".into()) };
        let mut changed: Vec<&str> = self
            .parts
            .iter()
            .filter(|(k, v)| old.parts.get(*k) != Some(*v))
            .map(|(k, _)| k.as_str())
            .collect();
        changed
            .extend(old.parts.keys().filter(|k| !self.parts.contains_key(*k)).map(String::as_str));
        match changed.len() {
            0 => None,
            _ => Some(format!("{} changed", changed.join(", "))),
        }
    }
}

/// A hash of everything in a manifest: paths, kinds, modes, owners, times and file contents.
pub fn manifest_digest(manifest: &Manifest) -> Result<String> {
    let mut hasher = Sha256::new();
    for (path, e) in manifest.iter() {
        let content = match &e.kind {
            Kind::File { source, size } => {
                format!("file {size} {}", sha256_file(source)?)
            }
            Kind::Bytes(b) => format!("bytes {}", sha256_bytes(b)),
            other => format!("{other:?}"),
        };
        let line =
            format!("{path}\0{:o} {} {} {}\0{content}\n", e.st_mode(), e.uid, e.gid, e.mtime);
        hasher.update(line.as_bytes());
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_every_input_that_differs() {
        let a = Fingerprint::new().with("config", "x").with("toolchain", "gcc 12");
        assert_eq!(a.changes_since(Some(&a.clone())), None);
        assert_eq!(a.changes_since(None).unwrap(), "first build");
        let b = Fingerprint::new().with("busybox config", "y").with("toolchain", "gcc 13");
        assert_eq!(b.changes_since(Some(&a)).unwrap(), "busybox config, toolchain, config changed");
        let c = Fingerprint::new().after("configure", &b);
        let d = Fingerprint::new().after("configure", &a);
        assert_eq!(c.changes_since(Some(&d)).unwrap(), "configure changed");
    }

    #[test]
    fn stored_fingerprints_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stamp");
        assert!(Fingerprint::load(&path).is_none());
        let a = Fingerprint::new().with("tarball", "sha").with("busybox config", "text");
        a.store(&path).unwrap();
        assert_eq!(Fingerprint::load(&path), Some(a));
    }
}
