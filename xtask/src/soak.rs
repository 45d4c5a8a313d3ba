//! `cargo xtask bench --soak N`: N payload runs in a row through the xtask, passing, failing,
//! timing out and interrupted with Ctrl-C in turn, then a check that they left nothing
//! behind: no process, no new descriptor, no temporary file, no growth of the output directory.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use busyroot::host::exec::Running;
use busyroot::progress::Silent;
use xshell::{cmd, Shell};

/// One kind of run: its arguments after `run --initramfs --kernel K` and the exit code it must
/// end with; `interrupt` sends SIGINT once the payload started, as Ctrl-C would.
struct Kind {
    name: &'static str,
    args: &'static [&'static str],
    code: i32,
    interrupt: bool,
}

const KINDS: [Kind; 4] = [
    Kind { name: "passing", args: &["--", "true"], code: 0, interrupt: false },
    Kind { name: "failing", args: &["--", "sh", "-c", "exit 3"], code: 3, interrupt: false },
    Kind {
        name: "timing out",
        args: &["--cmd-timeout", "2", "--", "sleep", "600"],
        code: 124,
        interrupt: false,
    },
    Kind { name: "Ctrl-C'd", args: &["--", "sleep", "600"], code: 130, interrupt: true },
];

/// Runs the soak and returns its notes; any run ending otherwise than its kind says, or
/// anything left behind, is an error.
pub(crate) fn soak(
    sh: &Shell,
    runs: usize,
    kernel: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let xtask = std::env::current_exe().context("find the xtask's own executable")?;
    let tmp = std::env::temp_dir();
    let fds = || std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let (fds_before, tmp_before) = (fds(), names(&tmp));
    let mut outputs_after_first = None;
    let start = Instant::now();
    for i in 0..runs {
        let kind = &KINDS[i % KINDS.len()];
        let args = kind.args;
        let mut run = Running::spawn(
            cmd!(sh, "{xtask} run --initramfs --kernel {kernel} {args...}").stdin(""),
            &Silent,
        )?;
        let deadline = Instant::now() + Duration::from_secs(300);
        if kind.interrupt {
            run.wait_for_line("payload:", deadline)?;
            // Into the boot, or the payload itself: Ctrl-C must end either.
            std::thread::sleep(Duration::from_millis(1500));
            let pid = run.id().to_string();
            cmd!(sh, "kill -INT {pid}").quiet().run()?;
        }
        let code = run.wait_until(deadline).and_then(|s| s.code());
        anyhow::ensure!(
            code == Some(kind.code),
            "soak run {} ({}) exited with {code:?}, not {}",
            i + 1,
            kind.name,
            kind.code
        );
        let left = processes_naming(dir);
        anyhow::ensure!(left.is_empty(), "soak run {} left processes: {left:?}", i + 1);
        let outputs = tree(dir);
        let first = outputs_after_first.get_or_insert_with(|| outputs.clone());
        anyhow::ensure!(
            *first == outputs,
            "soak run {} changed the output directory: {:?}",
            i + 1,
            first.symmetric_difference(&outputs).collect::<Vec<_>>()
        );
    }
    let tmp_after = names(&tmp);
    let new_tmp: Vec<&String> =
        tmp_after.difference(&tmp_before).filter(|n| n.contains("busyroot")).collect();
    anyhow::ensure!(new_tmp.is_empty(), "temporary files left in `{}`: {new_tmp:?}", tmp.display());
    anyhow::ensure!(fds() == fds_before, "descriptors: {fds_before} before, {} after", fds());
    Ok(vec![format!(
        "soak: {runs} runs (passing, failing, timing out, Ctrl-C'd in turn) in {:.0} s; no \
         process, descriptor, temporary file or output left behind ({} entries in `{}` throughout)",
        start.elapsed().as_secs_f64(),
        outputs_after_first.map_or(0, |t| t.len()),
        dir.display()
    )])
}

/// The names in `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Every path under `dir` (a run's console log is rewritten in place; new names are growth).
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path.clone());
            }
            out.insert(path);
        }
    }
    out
}

/// Processes other than this one whose command line names `dir` (a VMM or virtiofsd of a run).
fn processes_naming(dir: &Path) -> Vec<String> {
    let me = std::process::id().to_string();
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}
