//! The boot matrix: cells (architecture × kernel × root medium × payload) from `[[matrix]]` in
//! the configuration or a default, split deterministically into shards for CI jobs, and run
//! with bounded parallelism, one VM per cell, each on its own thread and in its own directory.
//!
//! Nothing here prints: each cell's progress goes to a [`MatrixObserver`], its result comes
//! back in a [`MatrixReport`], which also renders as JUnit (one suite per cell) and JSON.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use xshell::Shell;

use crate::arch::Arch;
use crate::config::{MatrixCell, Medium, Workspace};
use crate::context::Layout;
use crate::error::{Error, Result};
use crate::vm::{
    self, json_secs as secs, AccelRequest, Check, Event, Observer, Outcome, RunReport, Vm, Vmm,
};

/// A resolved cell: every default filled in and the VM ready to boot.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Unique name, safe as a file name.
    pub name: String,
    /// Guest architecture.
    pub arch: Arch,
    /// Root medium.
    pub root: Medium,
    /// The kernel booted.
    pub kernel: PathBuf,
    /// The image booted: the architecture's `rootfs.ext4` or `rootfs.cpio.gz`.
    pub image: PathBuf,
    /// The payload, if the cell has one; else it runs the checks.
    pub command: Option<Vec<String>>,
    /// Where the cell's console log and boot copy of the disk go:
    /// `<target>/busyroot/matrix/<name>/`.
    pub work_dir: PathBuf,
    /// The VM as [`cells`] configured it from the fields above and the `run` settings (QEMU
    /// program, memory, boot timeout, checks); one CPU under TCG. Change it to tune a cell.
    pub vm: Vm,
}

/// The kernel a cell without one boots, as `cargo xtask run` picks it: the newer of the one
/// `cargo xtask kernel` built and the one it fetched (`--distro`); the built one's path when
/// there is neither, for the error to name.
fn default_kernel(layout: &Layout) -> PathBuf {
    let built = layout.kernel_image();
    let fetched = crate::pipeline::distro::installed_kernel(layout);
    vm::select_kernel(layout.arch(), None, None, None, &built, fetched.as_deref())
        .map_or(built, |choice| choice.path)
}

/// The cells of the workspace's matrix, in a fixed order: the `[[matrix]]` tables as written,
/// or, when there are none, every architecture with a kernel `cargo xtask kernel` built or
/// fetched (in
/// [`Arch::ALL`] order), each with the disk and then the initramfs, running the standard
/// checks.
///
/// Nothing is checked on disk for configured cells: a missing kernel or image fails that cell
/// when it runs. Names are validated and must be unique.
pub fn cells(ws: &Workspace) -> Result<Vec<Cell>> {
    let config = &ws.config;
    let origin = ws.root.join("Cargo.toml");
    let config_error = |message: String| Error::Config { path: origin.clone(), message };
    let run = &config.run;
    let extra = Check::configured(ws)?;

    let tables: Vec<MatrixCell> = if config.matrix.is_empty() {
        Arch::ALL
            .into_iter()
            .filter(|&arch| default_kernel(&Layout::new(ws, arch)).is_file())
            .flat_map(|arch| Medium::ALL.map(|root| (arch, root)))
            .map(|(arch, root)| MatrixCell { arch: Some(arch), root, ..MatrixCell::default() })
            .collect()
    } else {
        config.matrix.clone()
    };

    let mut out: Vec<Cell> = Vec::with_capacity(tables.len());
    for (i, table) in tables.iter().enumerate() {
        let key = format!("matrix[{i}]");
        let Some(arch) = table.arch.or(config.arch).or_else(Arch::host) else {
            return Err(config_error(format!(
                "{key}: the host architecture is not supported, so the cell needs an `arch`"
            )));
        };
        if table.command.as_ref().is_some_and(|c| c.is_empty() || c[0].is_empty()) {
            return Err(config_error(format!(
                "{key}.command is empty: give the program and its arguments, or leave \
                 `command` out to run the standard checks"
            )));
        }
        // A derived name is always valid: only a given one can fail.
        let name = table.name.clone().unwrap_or_else(|| derived_name(arch, table));
        if !valid_name(&name) {
            return Err(config_error(format!(
                "{key}.name `{name}`: use letters, digits, `.`, `_` and `-`, starting with a \
                 letter or digit"
            )));
        }
        if let Some(j) = out.iter().position(|c| c.name == name) {
            return Err(config_error(format!(
                "matrix[{j}] and {key} are both named `{name}`; give one of them a `name`"
            )));
        }
        let layout = Layout::new(ws, arch);
        let kernel = table.kernel.as_ref().map_or_else(|| default_kernel(&layout), |k| ws.path(k));
        let image = layout.output(table.root.format());
        let work_dir = layout.matrix_cell(&name);

        let mut machine = Vm::new(arch, &kernel);
        match table.root {
            Medium::Disk => machine.disk(&image),
            Medium::Initramfs => machine.initramfs(&image),
        };
        // Under TCG a second vCPU costs a host core and buys the checks nothing; the matrix
        // runs several VMs at once instead.
        let tcg = vm::choose_accel(AccelRequest::Auto, arch)
            .map_or(true, |choice| choice.value == vm::Accel::Tcg);
        let (vmm, program) = match &table.vmm {
            Some(name) => vm::vmm_named(name, run, &ws.root)
                .map_err(|e| config_error(format!("{key}.vmm: {e}")))?,
            None => (Vmm::Qemu, run.qemu.clone()),
        };
        machine.vmm(vmm, program).size(run.mem, if tcg { 1 } else { run.cpus }).work_dir(&work_dir);
        if let Some(secs) = run.timeout {
            machine.boot_timeout(secs);
        }
        if table.command.is_none() {
            machine.checks(&run.hostname, extra.clone());
        }
        out.push(Cell {
            name,
            arch,
            root: table.root,
            kernel,
            image,
            command: table.command.clone(),
            work_dir,
            vm: machine,
        });
    }
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn derived_name(arch: Arch, table: &MatrixCell) -> String {
    let mut name = format!("{arch}-{}", table.root);
    if let Some(vmm) = &table.vmm {
        name.push('-');
        name.push_str(vmm);
    }
    let program = table.command.as_ref().and_then(|c| c.first()).map(Path::new);
    for path in [table.kernel.as_deref(), program].into_iter().flatten() {
        let file_name = path.file_name().unwrap_or_default().to_string_lossy();
        let safe = |c: char| if c.is_ascii_alphanumeric() || "._".contains(c) { c } else { '-' };
        name.push('-');
        name.extend(file_name.chars().map(safe));
    }
    name.trim_end_matches('-').to_string()
}

/// One of N parts of a matrix, for N CI jobs: item k (counting from 0) belongs to shard
/// `(k mod N) + 1`, so the shards are disjoint, cover every item and differ in size by at most
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Shard `index` of `count`, counting from 1; refused unless 1 ≤ `index` ≤ `count`.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index == 0 || index > count {
            return Err(Error::Other(format!(
                "invalid shard {index}/{count}: the index counts from 1 and must not exceed the \
                 number of shards, as in 1/2 and 2/2"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Which shard, from 1.
    pub fn index(self) -> usize {
        self.index
    }

    /// How many shards.
    pub fn count(self) -> usize {
        self.count
    }

    /// The items of this shard, in their order.
    pub fn select<T>(self, items: impl IntoIterator<Item = T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % self.count + 1 == self.index)
            .map(|(_, item)| item)
            .collect()
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// Parses `I/N`, such as `2/3`.
    fn from_str(s: &str) -> Result<Shard> {
        let parsed = s.split_once('/').and_then(|(i, n)| {
            Some((i.trim().parse::<usize>().ok()?, n.trim().parse::<usize>().ok()?))
        });
        match parsed {
            Some((index, count)) => Shard::new(index, count),
            None => Err(Error::Other(format!(
                "invalid shard `{s}`: write it as I/N, shard I of N counting from 1, such as 1/2"
            ))),
        }
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// How many VMs to run at once by default: half the host's cores, at least one. (A TCG guest
/// keeps a core busy; the other half is left for QEMU's I/O threads and the host.)
#[doc(hidden)]
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1)
}

/// What happened to a cell.
#[derive(Debug, Clone)]
pub enum CellOutcome {
    /// The VM ran; its report says how it ended.
    Ran(Box<RunReport>),
    /// The VM could not be started (a missing kernel or image, no QEMU): why.
    Error(String),
    /// Not started, as the matrix was interrupted first.
    NotRun,
}

/// A cell and what became of it.
#[derive(Debug, Clone)]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// What happened.
    pub outcome: CellOutcome,
    /// From starting the cell (preparing its image) to its end.
    pub duration: Duration,
}

impl CellResult {
    /// Whether the cell passed: booted, every check passed, and the payload (if any) exited 0.
    pub fn passed(&self) -> bool {
        matches!(&self.outcome, CellOutcome::Ran(r) if r.exit_code() == 0)
    }

    /// One word: `passed`, `command-failed`, a failed run's [`Outcome::verdict`], `error` or
    /// `not-run`.
    pub fn verdict(&self) -> &'static str {
        match &self.outcome {
            CellOutcome::Ran(r) if r.exit_code() == 0 => "passed",
            CellOutcome::Ran(r) if r.outcome == Outcome::Passed => "command-failed",
            CellOutcome::Ran(r) => r.outcome.verdict(),
            CellOutcome::Error(_) => "error",
            CellOutcome::NotRun => "not-run",
        }
    }

    /// One line saying how the cell ended.
    pub fn detail(&self) -> String {
        match &self.outcome {
            CellOutcome::Ran(r) => {
                let line = r.verdict_line();
                line.strip_prefix("busyroot: ").unwrap_or(&line).to_string()
            }
            CellOutcome::Error(message) => format!("could not start: {message}"),
            CellOutcome::NotRun => "not started: interrupted".to_string(),
        }
    }

    /// The run's report, if the VM ran.
    pub fn report(&self) -> Option<&RunReport> {
        match &self.outcome {
            CellOutcome::Ran(r) => Some(r.as_ref()),
            _ => None,
        }
    }

    /// From starting the VMM to the init banner, if it came.
    pub fn boot_time(&self) -> Option<Duration> {
        self.report().and_then(|r| r.boot_time)
    }

    /// The time the checks and the payload took in the guest, if the VM ran.
    pub fn check_time(&self) -> Option<Duration> {
        self.report().map(|r| {
            r.checks.iter().map(|c| c.duration).sum::<Duration>()
                + r.command.as_ref().map_or(Duration::ZERO, |c| c.duration)
        })
    }

    /// The cell as one JUnit `<testsuite>` named after it: the run's cases, or one boot case
    /// in error (could not start) or skipped (not run).
    pub fn to_junit_suite(&self) -> String {
        if let CellOutcome::Ran(report) = &self.outcome {
            return report.to_junit_suite(&self.cell.name);
        }
        let (body, errors) = match &self.outcome {
            CellOutcome::Error(message) => (
                format!("<error type=\"not started\" message=\"{}\"/>", vm::xml_escape(message)),
                1,
            ),
            _ => ("<skipped message=\"interrupted before it started\"/>".to_string(), 0),
        };
        let mut cases = String::new();
        let secs = self.duration.as_secs_f64();
        vm::junit_case(&mut cases, "busyroot.boot", "boot to banner", secs, Some(body));
        format!(
            "  <testsuite name=\"{}\" tests=\"1\" failures=\"0\" errors=\"{errors}\" \
             time=\"{secs:.3}\">\n{cases}  </testsuite>\n",
            vm::xml_escape(&self.cell.name)
        )
    }

    /// The cell as JSON: what it booted, its verdict and times, and the run's whole report.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "name": self.cell.name,
            "arch": self.cell.arch.name(),
            "root": self.cell.root.name(),
            "kernel": self.cell.kernel,
            "image": self.cell.image,
            "command": self.cell.command,
            "verdict": self.verdict(),
            "passed": self.passed(),
            "detail": self.detail(),
            "seconds": secs(self.duration),
            "boot_seconds": self.boot_time().map(secs),
            "check_seconds": self.check_time().map(secs),
            "report": self.report().map(RunReport::to_json),
        })
    }
}

/// What a matrix run found out.
#[derive(Debug, Clone)]
pub struct MatrixReport {
    /// Every cell's result, in the order of the cells given.
    pub cells: Vec<CellResult>,
    /// How many VMs ran at once (at most).
    pub jobs: usize,
    /// From the first cell's start to the last one's end.
    pub wall_time: Duration,
    /// Whether SIGINT or SIGTERM stopped the run.
    pub interrupted: bool,
}

impl MatrixReport {
    /// Whether every cell passed (an empty matrix passes).
    pub fn passed(&self) -> bool {
        !self.interrupted && self.cells.iter().all(CellResult::passed)
    }

    /// The cells that did not pass.
    pub fn failed(&self) -> Vec<&CellResult> {
        self.cells.iter().filter(|c| !c.passed()).collect()
    }

    /// The time the cells took, added up: about what running them one after another takes.
    pub fn cells_time(&self) -> Duration {
        self.cells.iter().map(|c| c.duration).sum()
    }

    /// The process exit code: 0 when every cell passed, 130 when interrupted, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            vm::EXIT_INTERRUPTED
        } else if self.passed() {
            0
        } else {
            1
        }
    }

    /// A JUnit XML document with one `<testsuite>` per cell, named after the cell.
    pub fn to_junit(&self) -> String {
        let suites: String = self.cells.iter().map(CellResult::to_junit_suite).collect();
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n{suites}</testsuites>\n")
    }

    /// The report as JSON: the totals and every cell ([`CellResult::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "passed": self.passed(),
            "exit_code": self.exit_code(),
            "interrupted": self.interrupted,
            "jobs": self.jobs,
            "wall_seconds": secs(self.wall_time),
            "cells_seconds": secs(self.cells_time()),
            "failed": self.failed().iter().map(|c| c.cell.name.clone()).collect::<Vec<_>>(),
            "cells": self.cells.iter().map(CellResult::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Something that happened to one cell of a running matrix.
#[derive(Debug)]
pub enum MatrixEvent<'a> {
    /// The cell starts (its image is prepared, then its VM boots).
    Started(&'a Cell),
    /// The cell's VM reported this.
    Vm(&'a Cell, Event),
    /// The cell is done.
    Finished(&'a CellResult),
}

/// Receives a running matrix's events, from the threads that run the cells (so several at a
/// time).
pub trait MatrixObserver: Sync {
    /// One event.
    fn event(&self, event: MatrixEvent<'_>);
}

impl MatrixObserver for vm::Quiet {
    fn event(&self, _event: MatrixEvent<'_>) {}
}

/// Passes one cell's VM events on, tagged with the cell.
struct Tagged<'a> {
    cell: &'a Cell,
    observer: &'a dyn MatrixObserver,
}

impl Observer for Tagged<'_> {
    fn event(&self, event: Event) {
        self.observer.event(MatrixEvent::Vm(self.cell, event));
    }
}

/// Runs `cells`, at most `jobs` at a time (at least one), and returns every cell's result in
/// the order given. The images must have been built.
///
/// Each cell's VM is started and waited for by one of `jobs` threads, in the cell's own work
/// directory; the threads run the programs they need in their own [`Shell`]s, in `sh`'s
/// current directory. A cell that fails, cannot start or panics is recorded and the others go
/// on. SIGINT or SIGTERM stops every running VM and starts no more; those cells are reported
/// as interrupted or not run, and [`MatrixReport::interrupted`] is set.
pub fn run_matrix(
    sh: &Shell,
    cells: &[Cell],
    jobs: usize,
    observer: &dyn MatrixObserver,
) -> MatrixReport {
    let jobs = jobs.clamp(1, cells.len().max(1));
    // Held for the whole matrix, so that a signal between two cells is seen too, and a cell
    // started after it stops at once.
    let _interrupt = vm::InterruptGuard::install();
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CellResult>>> = Mutex::new(vec![None; cells.len()]);
    let cwd = sh.current_dir();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let sh = Shell::new().inspect(|sh| sh.change_dir(&cwd));
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(cell) = cells.get(i) else { break };
                    let result = match &sh {
                        Ok(sh) => run_cell(sh, cell, observer),
                        Err(e) => CellResult {
                            cell: cell.clone(),
                            outcome: CellOutcome::Error(format!("cannot start a shell: {e}")),
                            duration: Duration::ZERO,
                        },
                    };
                    observer.event(MatrixEvent::Finished(&result));
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    let cells = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every cell was taken by a thread"))
        .collect();
    MatrixReport { cells, jobs, wall_time: started.elapsed(), interrupted: vm::interrupted() }
}

/// Runs one cell on this thread, which starts and waits for its VM.
fn run_cell(sh: &Shell, cell: &Cell, observer: &dyn MatrixObserver) -> CellResult {
    let started = Instant::now();
    let outcome = if vm::interrupted() {
        CellOutcome::NotRun
    } else {
        observer.event(MatrixEvent::Started(cell));
        let tagged = Tagged { cell, observer };
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            cell.vm.run_with(sh, cell.command.clone(), &tagged)
        }));
        match run {
            Ok(Ok(report)) => CellOutcome::Ran(Box::new(report)),
            Ok(Err(e)) => CellOutcome::Error(e.to_string()),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                CellOutcome::Error(format!("the run panicked: {what}"))
            }
        }
    };
    CellResult { cell: cell.clone(), outcome, duration: started.elapsed() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn shard(cells: Vec<Cell>, index: usize, count: usize) -> Result<Vec<Cell>> {
        Ok(Shard::new(index, count)?.select(cells))
    }

    fn workspace(toml: &str) -> Workspace {
        Workspace::for_test(Path::new("/ws"), toml)
    }

    fn names(cells: &[Cell]) -> Vec<String> {
        cells.iter().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn config_cells_parse_with_documented_defaults() {
        let ws = workspace(
            "arch = \"riscv64\"\n\
             [[matrix]]\n\
             [[matrix]]\narch = \"aarch64\"\nroot = \"initramfs\"\n\
             [[matrix]]\nname = \"cloud\"\narch = \"x86_64\"\nkernel = \"/boot/vmlinuz\"\n\
             command = [\"/bin/sh\", \"-c\", \"true\"]\n\
             [[matrix]]\narch = \"x86_64\"\nkernel = \"k/vmlinuz-6.1\"\ncommand = [\"/t/prog\"]\n",
        );
        let m = &ws.config.matrix;
        assert_eq!(m[0], MatrixCell { root: Medium::Disk, ..MatrixCell::default() });
        assert_eq!(m[1].root, Medium::Initramfs);
        let cells = cells(&ws).unwrap();
        assert_eq!(
            names(&cells),
            ["riscv64-disk", "aarch64-initramfs", "cloud", "x86_64-disk-vmlinuz-6.1-prog"]
        );
        // Defaults: the configured arch, the kernel `cargo xtask kernel` builds, the disk.
        assert_eq!(cells[0].arch, Arch::Riscv64);
        assert_eq!(cells[0].kernel, Layout::new(&ws, Arch::Riscv64).kernel_image());
        assert_eq!(cells[0].image, Path::new("/ws/target/busyroot/riscv64/rootfs.ext4"));
        assert_eq!(cells[1].image, Path::new("/ws/target/busyroot/aarch64/rootfs.cpio.gz"));
        assert_eq!(cells[0].command, None);
        // Paths relative to the workspace root; absolute ones as given.
        assert_eq!(cells[2].kernel, Path::new("/boot/vmlinuz"));
        assert_eq!(cells[3].kernel, Path::new("/ws/k/vmlinuz-6.1"));
        assert_eq!(cells[2].command.as_deref().unwrap(), ["/bin/sh", "-c", "true"]);
        // Each cell has its own work directory.
        assert_eq!(cells[2].work_dir, Path::new("/ws/target/busyroot/matrix/cloud"));
    }

    #[test]
    fn a_cell_takes_a_builtin_or_configured_vmm_by_name() {
        let ws = workspace(
            "[run.vmm.wrap]\nprogram = \"tools/wrap\"\n\
             args = [\"-k\", \"{kernel}\", \"-d\", \"{disk}\", \"-a\", \"{cmdline}\"]\n\
             [[matrix]]\narch = \"x86_64\"\nvmm = \"wrap\"\n\
             [[matrix]]\narch = \"x86_64\"\nvmm = \"kvmtool\"\n",
        );
        let both = cells(&ws).unwrap();
        assert_eq!(names(&both), ["x86_64-disk-wrap", "x86_64-disk-kvmtool"]);
        let vm = format!("{:?}", both[0].vm);
        assert!(vm.contains("vmm: Custom(\"wrap\")"), "{vm}");

        let ws = workspace("[[matrix]]\narch = \"x86_64\"\nvmm = \"nope\"\n");
        let err = cells(&ws).unwrap_err().to_string();
        assert!(err.contains("matrix[0].vmm: unknown VMM `nope`"), "{err}");
    }

    #[test]
    fn config_cells_refuse_unknown_keys_bad_names_and_duplicates() {
        let parse = |toml: &str| Config::from_toml(toml, Path::new("Cargo.toml"));
        let err = parse("[[matrix]]\nkernal = \"x\"").unwrap_err().to_string();
        assert!(err.contains("unknown field `kernal`") && err.contains("matrix[0]"), "{err}");
        let err = parse("[[matrix]]\nroot = \"nfs\"").unwrap_err().to_string();
        assert!(err.contains("matrix[0].root") && err.contains("unknown variant `nfs`"), "{err}");
        let err = parse("[[matrix]]\ncommand = \"ls\"").unwrap_err().to_string();
        assert!(err.contains("matrix[0].command") && err.contains("invalid type"), "{err}");

        let err =
            cells(&workspace("[[matrix]]\narch = \"x86_64\"\n[[matrix]]\narch = \"x86_64\"\n"))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("matrix[0] and matrix[1] are both named `x86_64-disk`")
                && err.contains("give one of them a `name`"),
            "{err}"
        );
        let err = cells(&workspace("[[matrix]]\nname = \"../x\"\n")).unwrap_err().to_string();
        assert!(err.contains("matrix[0].name `../x`"), "{err}");
        let err = cells(&workspace("[[matrix]]\ncommand = []\n")).unwrap_err().to_string();
        assert!(err.contains("matrix[0].command is empty"), "{err}");
    }

    #[test]
    fn default_matrix_is_every_built_kernel_times_both_media() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::for_test(dir.path(), "");
        assert!(cells(&ws).unwrap().is_empty(), "no kernel built, no cells");
        for arch in [Arch::Riscv64, Arch::X86_64] {
            let kernel = crate::context::Layout::new(&ws, arch).kernel_image();
            std::fs::create_dir_all(kernel.parent().unwrap()).unwrap();
            std::fs::write(&kernel, b"").unwrap();
        }
        let built = cells(&ws).unwrap();
        assert_eq!(
            names(&built),
            ["x86_64-disk", "x86_64-initramfs", "riscv64-disk", "riscv64-initramfs"]
        );
        assert!(built.iter().all(|c| c.command.is_none()));

        // A kernel fetched with `--distro` counts too, and its cells boot it.
        let fetched = Layout::new(&ws, Arch::Aarch64)
            .distro_kernel("debian")
            .join("boot/vmlinuz-6.1.0-41-cloud-arm64");
        std::fs::create_dir_all(fetched.parent().unwrap()).unwrap();
        std::fs::write(&fetched, b"").unwrap();
        let with_fetched = cells(&ws).unwrap();
        assert_eq!(names(&with_fetched)[2..4], ["aarch64-disk", "aarch64-initramfs"]);
        assert_eq!(with_fetched[2].kernel, fetched);
    }

    #[test]
    fn shard_parsing_refuses_bad_values_with_the_rule() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard::new(2, 3).unwrap());
        assert_eq!(Shard::new(1, 1).unwrap().to_string(), "1/1");
        for bad in ["0/2", "3/2", "1/0", "0/0"] {
            let err = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("invalid shard {bad}")) && err.contains("from 1"),
                "{err}"
            );
        }
        for bad in ["", "1", "1/", "a/2", "1/2/3", "-1/2"] {
            let err = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(err.contains(&format!("invalid shard `{bad}`: write it as I/N")), "{err}");
        }
        let ws = workspace("[[matrix]]\narch = \"x86_64\"\n");
        let err = shard(cells(&ws).unwrap(), 3, 2).unwrap_err().to_string();
        assert!(err.contains("invalid shard 3/2"), "{err}");
    }

    #[test]
    fn shards_of_real_cells_split_them_round_robin() {
        let ws = workspace(
            "[[matrix]]\narch = \"x86_64\"\n[[matrix]]\narch = \"aarch64\"\n\
             [[matrix]]\narch = \"riscv64\"\n[[matrix]]\narch = \"x86_64\"\nroot = \"initramfs\"\n\
             [[matrix]]\narch = \"aarch64\"\nroot = \"initramfs\"\n",
        );
        let all = cells(&ws).unwrap();
        assert_eq!(
            names(&shard(all.clone(), 1, 2).unwrap()),
            ["x86_64-disk", "riscv64-disk", "aarch64-initramfs"]
        );
        assert_eq!(names(&shard(all.clone(), 2, 2).unwrap()), ["aarch64-disk", "x86_64-initramfs"]);
        assert_eq!(names(&shard(all.clone(), 1, 1).unwrap()), names(&all));
        assert_eq!(names(&shard(all.clone(), 5, 7).unwrap()), ["aarch64-initramfs"]);
        assert!(shard(all, 6, 7).unwrap().is_empty(), "more shards than cells: some are empty");
    }

    proptest::proptest! {
        /// Across the N shards every item appears exactly once, in its original order, shard
        /// sizes differ by at most one, and the split is the same every time.
        #[test]
        fn shards_cover_every_item_exactly_once(items in 0usize..60, count in 1usize..12) {
            let shards: Vec<Vec<usize>> = (1..=count)
                .map(|i| Shard::new(i, count).unwrap().select(0..items))
                .collect();
            let mut seen: Vec<usize> = shards.concat();
            seen.sort();
            proptest::prop_assert_eq!(seen, (0..items).collect::<Vec<_>>());
            for s in &shards {
                proptest::prop_assert!(s.windows(2).all(|w| w[0] < w[1]));
            }
            let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
            proptest::prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            for (i, s) in shards.iter().enumerate() {
                proptest::prop_assert_eq!(&Shard::new(i + 1, count).unwrap().select(0..items), s);
            }
        }
    }

    #[test]
    fn a_cell_that_cannot_start_is_an_error_and_the_others_still_run() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::for_test(
            dir.path(),
            "[[matrix]]\nname = \"a\"\narch = \"x86_64\"\nkernel = \"missing-a\"\n\
             [[matrix]]\nname = \"b\"\narch = \"x86_64\"\nkernel = \"missing-b\"\n\
             [[matrix]]\nname = \"c\"\narch = \"aarch64\"\nkernel = \"missing-c\"\n",
        );
        let cells = cells(&ws).unwrap();
        let sh = Shell::new().unwrap();
        let report = run_matrix(&sh, &cells, 2, &vm::Quiet);
        assert_eq!(report.jobs, 2);
        assert_eq!(
            report.cells.iter().map(|c| c.cell.name.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        for (cell, missing) in report.cells.iter().zip(["missing-a", "missing-b", "missing-c"]) {
            assert_eq!(cell.verdict(), "error");
            assert!(cell.detail().contains(missing), "{}", cell.detail());
        }
        assert_eq!(report.exit_code(), 1);
        let xml = report.to_junit();
        assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
        assert!(
            xml.contains("<testsuite name=\"b\" tests=\"1\" failures=\"0\" errors=\"1\""),
            "{xml}"
        );
        let json = report.to_json();
        assert_eq!(json["failed"], json!(["a", "b", "c"]));
        assert_eq!(json["cells"][2]["arch"], "aarch64");
    }
}
