//! The stage engine of every builder: a fingerprint (a named hash for each input of a stage)
//! is stored as the stage's stamp, so a rerun skips the stage when nothing changed and its
//! output is intact, and otherwise says which input did.
//!
//! Invariant: a stamp is written only after its stage succeeded and is removed before the stage
//! runs again, so an interrupted stage never looks fresh.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::host::fs::{sha256_bytes, sha256_file};
use crate::progress::Progress;
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
        crate::host::fs::write_file(path, self.to_text())
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

/// What one stage did in a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    /// The stage's name ("unpack", "configure", "build busybox", "rootfs.ext4", "build
    /// kernel", …).
    pub name: String,
    /// `None` when the stage was fresh and skipped, else why it ran ("first build",
    /// "busybox config changed", "output missing", …).
    pub ran_because: Option<String>,
}

impl StageReport {
    /// True when the stage was skipped because nothing it depends on changed.
    pub fn fresh(&self) -> bool {
        self.ran_because.is_none()
    }
}

/// The state of a stage's output before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputState {
    /// Present and as the stage left it: a matching fingerprint makes the stage fresh.
    Intact,
    /// Missing or damaged: the stage runs.
    Missing,
    /// Present, but only the stage's own tool can tell whether it is current (a source tree
    /// handed to make): the stage runs, for this reason when nothing else changed.
    Unknown(&'static str),
}

impl OutputState {
    /// [`OutputState::Intact`] when `ok`, else [`OutputState::Missing`].
    pub fn intact_if(ok: bool) -> OutputState {
        if ok {
            OutputState::Intact
        } else {
            OutputState::Missing
        }
    }
}

/// The one stage engine of the rootfs and kernel builders: runs a stage whose fingerprint or
/// output changed, skips the others, and records which was which. Each stage's stamp is a
/// file named after it in one directory.
pub struct Stages<'a> {
    progress: &'a dyn Progress,
    stamps: PathBuf,
    report: Vec<StageReport>,
}

impl<'a> Stages<'a> {
    /// An engine keeping its stamps in `stamps`.
    pub fn new(progress: &'a dyn Progress, stamps: PathBuf) -> Stages<'a> {
        Stages { progress, stamps, report: Vec::new() }
    }

    /// Runs `work` unless `fingerprint` equals the stored one and `output` is intact; returns
    /// whether it ran. `work` returns a detail for the progress line (may be empty). The
    /// stamp is removed first and written only after success.
    pub fn run(
        &mut self,
        name: &str,
        fingerprint: &Fingerprint,
        output: OutputState,
        work: impl FnOnce() -> Result<String>,
    ) -> Result<bool> {
        let stamp = self.stamps.join(name);
        let changes = || fingerprint.changes_since(Fingerprint::load(&stamp).as_ref());
        let reason = match output {
            OutputState::Missing => Some("output missing".to_string()),
            OutputState::Intact => changes(),
            OutputState::Unknown(why) => Some(changes().unwrap_or_else(|| why.to_string())),
        };
        let Some(reason) = reason else {
            self.progress.finish(name, Duration::ZERO, "fresh");
            self.report.push(StageReport { name: name.into(), ran_because: None });
            return Ok(false);
        };
        if stamp.exists() {
            fs::remove_file(&stamp).with_path("remove", &stamp)?;
        }
        self.progress.start(name);
        let start = Instant::now();
        let detail = work()?;
        fingerprint.store(&stamp)?;
        let detail = if detail.is_empty() { reason.clone() } else { format!("{reason}; {detail}") };
        self.progress.finish(name, start.elapsed(), &detail);
        self.report.push(StageReport { name: name.into(), ran_because: Some(reason) });
        Ok(true)
    }

    /// Every stage in the order it was run or skipped.
    pub fn into_report(self) -> Vec<StageReport> {
        self.report
    }
}

/// Runs one step that is no stage (it keeps no stamp), reporting its start, duration and the
/// detail `f` returns with its value.
pub(crate) fn timed<T>(
    progress: &dyn Progress,
    name: &str,
    f: impl FnOnce() -> Result<(T, String)>,
) -> Result<T> {
    progress.start(name);
    let start = Instant::now();
    let (value, detail) = f()?;
    progress.finish(name, start.elapsed(), &detail);
    Ok(value)
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

    #[test]
    fn the_engine_skips_fresh_stages_and_a_failed_stage_stays_stale() {
        let dir = tempfile::tempdir().unwrap();
        let progress = crate::progress::Silent;
        let mut stages = Stages::new(&progress, dir.path().to_path_buf());
        let fp = Fingerprint::new().with("config", "a");
        let mut run = |output, fail: bool| {
            let ok = || {
                if fail {
                    Err(crate::Error::Other("make failed".into()))
                } else {
                    Ok(String::new())
                }
            };
            stages.run("build", &fp, output, ok)
        };
        assert!(run(OutputState::Intact, false).unwrap(), "first build");
        assert!(!run(OutputState::Intact, false).unwrap(), "nothing changed");
        assert!(run(OutputState::Missing, false).unwrap(), "output missing");
        assert!(run(OutputState::Unknown("make decides"), false).unwrap());
        assert!(run(OutputState::Missing, true).is_err());
        assert!(!dir.path().join("build").exists(), "a failed stage keeps no stamp");
        assert!(run(OutputState::Intact, false).unwrap(), "so it runs again");
        let reasons: Vec<_> =
            stages.into_report().into_iter().map(|r| r.ran_because.unwrap_or_default()).collect();
        let want = ["first build", "", "output missing", "make decides", "first build"];
        assert_eq!(reasons, want);
    }
}
