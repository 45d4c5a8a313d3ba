//! What `cargo xtask` runs: builds the xtask quietly, saying what it compiles only when it
//! compiles something (the first run takes minutes and must not look hung), then replaces
//! itself with the xtask, so exit codes and Ctrl-C pass straight through.
//!
//! It has no dependencies, so Cargo compiles it in about a second before anything is shown.
//!
//! When no file of the workspace changed since the last build it ran (and Cargo's
//! environment is the same), it skips asking Cargo, which costs a tenth of a second on every
//! run: see [`Stamp`]. For the same reason it keeps what `cargo metadata` said of the
//! workspace at that build and hands it to the xtask (see [`METADATA_VAR`]).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Whether the "compiling" line was printed; by a timer if Cargo is still busy after
/// [`QUIET_FOR`], else by the first crate compiled.
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// How long an up-to-date check may take before the user is told what is going on.
const QUIET_FOR: Duration = Duration::from_millis(1500);

fn announce() {
    if !ANNOUNCED.swap(true, Ordering::SeqCst) {
        eprintln!(
            "busyroot: compiling the xtask (the first time takes a few minutes; later runs \
             start at once)"
        );
    }
}

/// The variable naming, for the xtask, a file holding `cargo metadata --format-version 1
/// --no-deps` of this workspace, current while the stamp is (unset when there is none). It
/// holds for this environment only: the xtask takes it out of its own before starting anything.
const METADATA_VAR: &str = "BUSYROOT_CARGO_METADATA";

fn main() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let stamp = Stamp::new();
    if let Some(stamp) = &stamp {
        if let Some(executable) = stamp.fresh_executable(root) {
            run(&executable, Some(&stamp.metadata()));
        }
    }
    let build_started = SystemTime::now();
    let executable = build();
    let Some(stamp) = stamp else { run(&executable, None) };
    // Written before the stamp, so a current stamp vouches for it.
    write_metadata(root, &stamp.metadata());
    stamp.write(&executable, build_started);
    run(&executable, Some(&stamp.metadata()));
}

/// Replaces this process with the xtask, telling it of `metadata` if that file exists.
fn run(executable: &str, metadata: Option<&Path>) -> ! {
    let mut command = Command::new(executable);
    command.args(std::env::args_os().skip(1)).env_remove(METADATA_VAR);
    if let Some(metadata) = metadata.filter(|m| m.is_file()) {
        command.env(METADATA_VAR, metadata);
    }
    let err = command.exec();
    fail(&format!("cannot run `{executable}`: {err}"));
}

/// Writes `cargo metadata` of the workspace at `root` to `path`, whole or not at all.
fn write_metadata(root: &Path, path: &Path) {
    write_whole(path, |temporary| {
        let status = Command::new(cargo())
            .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .stdout(fs::File::create(temporary)?)
            // A failure shows again, with its reason, when the xtask asks Cargo itself.
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("cargo metadata: {status}")));
        }
        Ok(())
    });
}

/// Has `write` fill a temporary beside `path`, then renames it to `path`; on any error, removes
/// both, so that `path` is whole or absent.
fn write_whole(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    if write(&temporary).and_then(|()| fs::rename(&temporary, path)).is_err() {
        let _ = fs::remove_file(&temporary);
        let _ = fs::remove_file(path);
    }
}

/// The Cargo that runs this launcher.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Builds the xtask through Cargo and returns its executable's path.
fn build() -> String {
    let cargo = cargo();
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    // Quiet: Cargo prints nothing of its own (not even `Finished`); its JSON messages say
    // what it compiles, and its diagnostics are rendered as usual.
    let child = Command::new(&cargo)
        .args(["build", "--quiet", "--package", "xtask", "--bin", "xtask"])
        .args(["--message-format", "json-render-diagnostics", "--manifest-path", manifest])
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => fail(&format!("cannot run `{}`: {err}", cargo.to_string_lossy())),
    };
    let started = Instant::now();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let timer_done = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(QUIET_FOR);
        if !timer_done.load(Ordering::SeqCst) {
            announce();
        }
    });
    let mut compiled = 0;
    let mut executable = None;
    let stderr = std::io::stderr();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        if !line.contains(r#""reason":"compiler-artifact""#) {
            continue;
        }
        if line.contains(r#""fresh":false"#) {
            announce();
            compiled += 1;
            let name = string_after(&line, r#""target":{"#, "name").unwrap_or_default();
            let _ = writeln!(stderr.lock(), "    Compiled {name} ({compiled} so far)");
        }
        if string_after(&line, r#""target":{"#, "name").as_deref() == Some("xtask") {
            executable = string_after(&line, "", "executable");
        }
    }
    let status = child.wait().unwrap_or_else(|e| fail(&format!("cargo build: {e}")));
    done.store(true, Ordering::SeqCst);
    if !status.success() {
        fail("building the xtask failed (Cargo's messages above say why)");
    }
    if compiled > 0 {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("busyroot: the xtask is ready ({compiled} compiled in {secs:.0} s)");
    }
    executable.unwrap_or_else(|| fail("cargo build did not name the xtask's executable"))
}

/// What the last build that this launcher ran left behind: a file beside the launcher's own
/// executable holding Cargo's environment and the xtask's executable path, whose modification
/// time is when that build started. The xtask is up to date, without asking Cargo, while the
/// environment is the same and no file of the workspace (outside `.git` and Cargo's target
/// directories) is newer than the stamp. Anything else, or any doubt, asks Cargo.
struct Stamp {
    path: PathBuf,
    environment: String,
}

impl Stamp {
    fn new() -> Option<Stamp> {
        let launcher = std::env::current_exe().ok()?;
        let mut path = launcher.into_os_string();
        path.push(".stamp");
        Some(Stamp { path: path.into(), environment: cargo_environment() })
    }

    /// Where `cargo metadata` of the build the stamp records is kept.
    fn metadata(&self) -> PathBuf {
        self.path.with_extension("metadata.json")
    }

    fn fresh_executable(&self, root: &Path) -> Option<String> {
        let text = fs::read_to_string(&self.path).ok()?;
        let (executable, environment) = text.split_once('\n')?;
        let built = fs::metadata(&self.path).ok()?.modified().ok()?;
        let unchanged = environment == self.environment
            && Path::new(executable).is_file()
            && newest_input(root).is_some_and(|newest| newest < built);
        unchanged.then(|| executable.to_owned())
    }

    /// Written whole, then dated to when the build started, so that a file saved while Cargo
    /// was building counts as newer.
    fn write(&self, executable: &str, started: SystemTime) {
        write_whole(&self.path, |temporary| {
            fs::write(temporary, format!("{executable}\n{}", self.environment))?;
            fs::File::options().write(true).open(temporary)?.set_modified(started)
        });
    }
}

/// The variables Cargo's build depends on (toolchain, flags, target directory), with the
/// Cargo executable's modification time, which changes when the toolchain is updated.
fn cargo_environment() -> String {
    let mut vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, _)| k.starts_with("CARGO") || k.starts_with("RUST"))
        .map(|(k, v)| format!("{k}={}", v.to_string_lossy()))
        .collect();
    vars.sort();
    let cargo = std::env::var_os("CARGO").unwrap_or_default();
    let cargo_time = fs::metadata(&cargo).and_then(|m| m.modified()).ok();
    format!("{}\ncargo modified {cargo_time:?}", vars.join("\n"))
}

/// The newest modification time of a file or directory under `dir`, skipping `.git` and
/// Cargo's target directories (named `target` or marked with `CACHEDIR.TAG`); None when a
/// directory cannot be read.
fn newest_input(dir: &Path) -> Option<SystemTime> {
    let mut newest = fs::metadata(dir).ok()?.modified().ok()?;
    for entry in fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let file_type = entry.file_type().ok()?;
        let time = if file_type.is_dir() {
            let name = entry.file_name();
            if name == ".git" || name == "target" || entry.path().join("CACHEDIR.TAG").exists() {
                continue;
            }
            newest_input(&entry.path())?
        } else {
            entry.metadata().ok()?.modified().ok()?
        };
        newest = newest.max(time);
    }
    Some(newest)
}

/// The JSON string value of `"key"` in `line`, looked for after `anchor`; enough JSON for
/// Cargo's messages (one object per line, keys unique within `target`).
fn string_after(line: &str, anchor: &str, key: &str) -> Option<String> {
    let from = line.find(anchor)? + anchor.len();
    let pattern = format!("\"{key}\":\"");
    let start = from + line[from..].find(&pattern)? + pattern.len();
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

fn fail(message: &str) -> ! {
    eprintln!("busyroot: {message}");
    std::process::exit(125)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cargos_artifact_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"xtask","src_path":"/w/xtask/src/main.rs"},"executable":"/w/target/debug/xtask","fresh":true}"#;
        assert_eq!(string_after(line, r#""target":{"#, "name").as_deref(), Some("xtask"));
        assert_eq!(string_after(line, "", "executable").as_deref(), Some("/w/target/debug/xtask"));
        assert_eq!(string_after(r#"{"a":"q\"x"}"#, "", "a").as_deref(), Some("q\"x"));
        assert_eq!(string_after(line, "", "missing"), None);
    }

    /// A new directory (the launcher has no dependencies, so no `tempfile`): never one an
    /// earlier process of the same id left, perhaps another user's.
    fn scratch_dir() -> PathBuf {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let name = format!("xtask-launch-test-{}-{n}", std::process::id());
            let dir = std::env::temp_dir().join(name);
            match fs::create_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                created => return created.map(|()| dir).unwrap(),
            }
        }
    }

    #[test]
    fn metadata_is_written_whole_or_not_at_all() {
        let dir = scratch_dir();
        let path = dir.join("launch.metadata.json");
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        write_metadata(root, &path);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with('{') && text.contains(r#""workspace_root":"#), "{text}");

        // Cargo fails where there is no workspace: the earlier file goes too, and nothing is
        // left half-written.
        write_metadata(&dir.join("no-workspace-here"), &path);
        let left: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{left:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_saved_after_the_build_started_makes_the_stamp_stale() {
        let dir = scratch_dir();
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::create_dir_all(dir.join("target/debug")).unwrap();
        fs::write(dir.join("src/lib.rs"), "").unwrap();
        let executable = dir.join("target/debug/xtask");
        fs::write(&executable, "").unwrap();
        let exe = executable.to_str().unwrap();
        let stamp = Stamp { path: dir.join("target/launch.stamp"), environment: "E=1".into() };
        let later = SystemTime::now() + Duration::from_secs(10);
        stamp.write(exe, later);
        assert_eq!(stamp.fresh_executable(&dir).as_deref(), Some(exe), "nothing changed");

        let other = Stamp { path: stamp.path.clone(), environment: "E=2".into() };
        assert_eq!(other.fresh_executable(&dir), None, "another environment");

        // Files under target/ are outputs, not inputs.
        let much_later = later + Duration::from_secs(10);
        let output = fs::File::create(dir.join("target/debug/out")).unwrap();
        output.set_modified(much_later).unwrap();
        assert!(stamp.fresh_executable(&dir).is_some(), "an output changed");

        let source = fs::File::options().write(true).open(dir.join("src/lib.rs")).unwrap();
        source.set_modified(much_later).unwrap();
        assert_eq!(stamp.fresh_executable(&dir), None, "a source changed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
