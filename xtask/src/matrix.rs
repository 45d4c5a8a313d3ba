//! `cargo xtask matrix`: boot every cell of the matrix (`[[matrix]]` in the configuration, or
//! each architecture with a built kernel × disk and initramfs) several at a time, or one CI
//! shard of them, and print one table.

use std::path::PathBuf;
use std::time::Duration;

use busyroot::matrix::{self, CellResult, MatrixEvent, MatrixObserver, MatrixReport, Shard};
use busyroot::vm::{self, Event};
use xshell::Shell;

use crate::rootfs;

/// Flags of `cargo xtask matrix`.
///
/// Exit codes: 0 when every cell passed, 1 when one did not, 130 on Ctrl-C (every VM is
/// stopped), 2 when the matrix could not run at all.
#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    /// Run only shard I of N, for N CI jobs: the cells, in the order --list prints them, are
    /// dealt round-robin, so cell k (from 0) goes to shard (k mod N) + 1.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// VMs at once [default: half the cores, at least 1]. Each gets one CPU under TCG.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: Option<u64>,
    /// Print the names of the cells (of the shard, with --shard), one a line, and exit;
    /// builds and boots nothing.
    #[arg(long)]
    pub list: bool,
    /// Write a JUnit XML report with one testsuite per cell to PATH.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report to PATH: totals, and each cell's verdict, times and run report.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Also show each cell's kernel console on stderr, prefixed by the cell's name (it always
    /// goes to target/busyroot/matrix/<cell>/console.log).
    #[arg(long)]
    pub console: bool,
    /// Never touch the network: use only the cache and $BUSYROOT_MIRROR (same as BUSYROOT_OFFLINE=1)
    #[arg(long)]
    pub offline: bool,
}

pub fn run(sh: &Shell, args: MatrixArgs) -> anyhow::Result<i32> {
    let ws = rootfs::workspace()?;
    let all = matrix::cells(&ws)?;
    anyhow::ensure!(
        !all.is_empty(),
        "the matrix is empty: no `[[workspace.metadata.busyroot.matrix]]` cells are configured \
         and no kernel is built for any architecture; build one with `cargo xtask kernel \
         [--arch ARCH]`, or configure cells"
    );
    let total = all.len();
    let cells = match args.shard {
        Some(shard) => shard.select(all),
        None => all,
    };
    if args.list {
        for cell in &cells {
            println!("{}", cell.name);
        }
        return Ok(0);
    }
    let which = match args.shard {
        Some(shard) => format!("shard {shard}: {} of {total} cells", cells.len()),
        None => format!("{total} cells"),
    };

    build_images(sh, &ws, &cells, args.offline)?;

    let jobs = args.jobs.map_or_else(matrix::default_jobs, |j| j as usize);
    eprintln!("matrix: {which}, {jobs} at a time");
    let report = matrix::run_matrix(sh, &cells, jobs, &Render { console: args.console });
    print_table(&report);
    if let Some(path) = &args.junit {
        crate::run::write_report(path, &report.to_junit())?;
    }
    if let Some(path) = &args.json {
        crate::run::write_report(path, &format!("{:#}\n", report.to_json()))?;
    }
    eprintln!("{}", verdict_line(&report, &which));
    Ok(report.exit_code())
}

/// Builds (or finds fresh) the images of every architecture in `cells`, once each, before any
/// VM starts, one architecture after another: a build uses every core, and the cells only
/// read the images.
pub(crate) fn build_images(
    sh: &Shell,
    ws: &busyroot::config::Workspace,
    cells: &[busyroot::matrix::Cell],
    offline: bool,
) -> anyhow::Result<()> {
    for (i, cell) in cells.iter().enumerate() {
        if !cells[..i].iter().any(|c| c.arch == cell.arch) {
            let mut ctx = busyroot::context::Context::for_arch(ws.clone(), cell.arch);
            ctx.offline(offline);
            rootfs::build(sh, &ctx)?;
        }
    }
    Ok(())
}

/// Renders the cells' events as they happen, each line prefixed by the cell's name.
struct Render {
    console: bool,
}

impl MatrixObserver for Render {
    fn event(&self, event: MatrixEvent<'_>) {
        match event {
            MatrixEvent::Started(cell) => eprintln!(
                "[{}] booting {} with {}",
                cell.name,
                cell.kernel.display(),
                cell.image.display()
            ),
            MatrixEvent::Vm(cell, event) => match event {
                Event::Booted(after) => {
                    eprintln!("[{}] booted after {:.1} s", cell.name, after.as_secs_f64())
                }
                Event::Check(check) if !check.passed && check.skipped.is_none() => eprintln!(
                    "[{}] FAIL {}: expected {}, got {}",
                    cell.name,
                    check.name,
                    check.expected,
                    check.output.lines().next().unwrap_or("(nothing)")
                ),
                Event::Note(note) => eprintln!("[{}] {note}", cell.name),
                Event::CommandStarted(argv) => {
                    eprintln!("[{}] running: {}", cell.name, crate::run::shell_words(&argv))
                }
                Event::Stdout(line) | Event::Stderr(line) => eprintln!("[{}] {line}", cell.name),
                Event::Output(_, bytes) => {
                    for line in String::from_utf8_lossy(&bytes).lines() {
                        eprintln!("[{}] {line}", cell.name);
                    }
                }
                Event::Console(line) if self.console => eprintln!("[{}] | {line}", cell.name),
                _ => {}
            },
            MatrixEvent::Finished(result) => eprintln!(
                "[{}] {} in {:.1} s",
                result.cell.name,
                result.detail(),
                result.duration.as_secs_f64()
            ),
        }
    }
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// The summary: one row per cell, then what went wrong in each failed cell.
fn print_table(report: &MatrixReport) {
    let width = report.cells.iter().map(|c| c.cell.name.len()).max().unwrap_or(0).max(4);
    println!("{:<width$}  {:<15} {:>8} {:>8} {:>8}", "cell", "verdict", "boot", "checks", "total");
    for c in &report.cells {
        println!(
            "{:<width$}  {:<15} {:>8} {:>8} {:>8}",
            c.cell.name,
            c.verdict(),
            seconds(c.boot_time()),
            seconds(c.check_time()),
            seconds(Some(c.duration)),
        );
    }
    for c in report.failed() {
        print_failure(c);
    }
}

fn print_failure(c: &CellResult) {
    println!("\n{}: {}", c.cell.name, c.detail());
    if let Some(r) = c.report() {
        let tail = match &r.outcome {
            vm::Outcome::BootFailed(f) => &f.console_tail,
            vm::Outcome::CommandTimedOut => &r.console_tail,
            _ => &Vec::new(),
        };
        for line in tail.iter().rev().take(15).rev() {
            println!("  | {line}");
        }
        if r.vmm_pid.is_some() {
            println!("  console log: {}", r.console_log.display());
        }
    }
}

fn verdict_line(report: &MatrixReport, which: &str) -> String {
    let failed = report.failed().len();
    let jobs = if report.jobs == 1 { "1 job".to_string() } else { format!("{} jobs", report.jobs) };
    let what = if report.interrupted {
        "interrupted; every VM was stopped".to_string()
    } else if failed == 0 {
        "every cell passed".to_string()
    } else {
        let names: Vec<&str> = report.failed().iter().map(|c| c.cell.name.as_str()).collect();
        format!("{failed} failed: {}", names.join(", "))
    };
    format!(
        "busyroot: matrix ({which}): {what}; {:.1} s with {jobs}, the cells added up to {:.1} s \
         (exit {})",
        report.wall_time.as_secs_f64(),
        report.cells_time().as_secs_f64(),
        report.exit_code()
    )
}
