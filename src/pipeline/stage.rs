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
/// With a `memo` file, each file's content hash is kept there with its identity (see
/// `ContentMemo`), and the file is read again only when that changed.
pub fn manifest_digest(manifest: &Manifest, memo: Option<&Path>) -> Result<String> {
    let mut kept = memo.map(ContentMemo::load).unwrap_or_default();
    let mut hasher = Sha256::new();
    for (path, e) in manifest.iter() {
        let content = match &e.kind {
            Kind::File { source, size } => format!("file {size} {}", kept.sha256(source)?),
            Kind::Bytes(b) => format!("bytes {}", sha256_bytes(b)),
            other => format!("{other:?}"),
        };
        let line =
            format!("{path}\0{:o} {} {} {}\0{content}\n", e.st_mode(), e.uid, e.gid, e.mtime);
        hasher.update(line.as_bytes());
    }
    if let Some(memo) = memo {
        kept.store(memo);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The sha256 of files by what `stat` says of them (device, inode, size, modification and
/// change times), as Git's index keeps them: a file whose identity is unchanged is not read
/// again. Hashing the BusyBox binary alone costs milliseconds on every build.
///
/// A file changed twice within one tick of the file system's clock, keeping its size, would
/// keep its identity; so a hash is kept only for a file whose change time is well in the past.
#[derive(Default)]
struct ContentMemo {
    /// What the memo held: path → (identity, sha256).
    kept: BTreeMap<PathBuf, (String, String)>,
    /// What it holds after this build: the files hashed now whose hash may be kept.
    now: BTreeMap<PathBuf, (String, String)>,
    /// How long ago a file must have changed for its hash to be kept.
    settled: Duration,
}

impl ContentMemo {
    fn load(memo: &Path) -> ContentMemo {
        let text = fs::read_to_string(memo).unwrap_or_default();
        let kept = text
            .lines()
            .filter_map(|line| {
                let (identity, rest) = line.split_once('\t')?;
                let (sha256, path) = rest.split_once('\t')?;
                Some((PathBuf::from(path), (identity.to_string(), sha256.to_string())))
            })
            .collect();
        ContentMemo { kept, now: BTreeMap::new(), settled: Duration::from_secs(2) }
    }

    fn sha256(&mut self, path: &Path) -> Result<String> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path).with_path("stat", path)?;
        let identity = format!(
            "{}:{} {} {}.{} {}.{}",
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        );
        let sha256 = match self.kept.get(path) {
            Some((kept, sha256)) if *kept == identity => sha256.clone(),
            _ => sha256_file(path)?,
        };
        // The later of the two: a file system may leave ctime alone on a write (FAT's is the
        // creation time).
        let secs = meta.ctime().max(meta.mtime()).max(0) as u64;
        let changed_at = std::time::UNIX_EPOCH + Duration::from_secs(secs);
        if changed_at.elapsed().is_ok_and(|ago| ago >= self.settled) {
            self.now.insert(path.to_path_buf(), (identity, sha256.clone()));
        }
        Ok(sha256)
    }

    /// Writes the memo if it changed; one that cannot be written is only slower next time.
    fn store(&self, memo: &Path) {
        if self.now == self.kept {
            return;
        }
        let mut text = String::new();
        for (path, (identity, sha256)) in &self.now {
            if let Some(path) = path.to_str().filter(|p| !p.contains(['\n', '\t'])) {
                text.push_str(&format!("{identity}\t{sha256}\t{path}\n"));
            }
        }
        let _ = crate::host::fs::write_file(memo, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_content_hash_stands_only_while_the_file_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (file, memo) = (dir.path().join("busybox"), dir.path().join("content-hashes"));
        fs::write(&file, b"aaaa").unwrap();
        let hash = |settled: u64| {
            let mut kept = ContentMemo::load(&memo);
            kept.settled = Duration::from_secs(settled);
            let sha256 = kept.sha256(&file).unwrap();
            kept.store(&memo);
            sha256
        };
        assert_eq!(hash(0), sha256_bytes(b"aaaa"));
        // What the memo says is what counts while the file is the same: doctored, it shows.
        let doctored = fs::read_to_string(&memo).unwrap().replace(&sha256_bytes(b"aaaa"), "kept");
        fs::write(&memo, doctored).unwrap();
        assert_eq!(hash(0), "kept");
        // Rewritten with the same size, the file is read again. (Its times are set apart
        // here: two writes within one tick of the clock could share them.)
        fs::write(&file, b"bbbb").unwrap();
        let long_ago = std::time::UNIX_EPOCH + Duration::from_secs(1000);
        fs::File::options().write(true).open(&file).unwrap().set_modified(long_ago).unwrap();
        assert_eq!(hash(0), sha256_bytes(b"bbbb"));
        // Changed moments ago, it is hashed but not kept: a second change within the clock's
        // tick could keep its identity.
        fs::write(&file, b"cccc").unwrap();
        assert_eq!(hash(3600), sha256_bytes(b"cccc"));
        assert_eq!(fs::read_to_string(&memo).unwrap(), "");
    }

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
