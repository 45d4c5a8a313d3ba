//! `cargo xtask lava`: write a LAVA job, a QEMU device dictionary and an artifact directory
//! for one cell, and with `--run` run the job with the local `lava-run` and report its cases.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use busyroot::config::Medium;
use busyroot::lava::{self, ArtifactSources, Cell, LavaJob, ReportContext, TestStyle};
use busyroot::vm::{self, AccelRequest, Outcome, Root, RunPlan, Timeouts};
use xshell::Shell;

use crate::rootfs::{self, Target};
use crate::run::{finish, print_check, print_tail, select_kernel, Boot};
use busyroot::image::Format;

/// Flags of `cargo xtask lava`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
The job's cases are the standard checks (and the configured ones) and CMD. Submit job.yaml to
a lab with `lavacli jobs submit`; the lab needs a `qemu` device type and the artifacts at
--base-url. --run needs root (lava-run does).

Exit codes with --run: 0 every case passed; 1 a case failed or reported nothing (each named);
2 the guest never reached its prompt, or lava-run could not run. lava-run's own exit status
only says whether the job ran; the cases come from its log (lava-run.log in --out).")]
pub struct LavaArgs {
    /// Where a lab fetches the artifact directory from: a URL prefix under which
    /// <name>/<version>/<arch>/ is served [default: file:// of OUT/artifacts].
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Output directory for job.yaml, device.yaml, artifacts/ and lava-run's log
    /// [default: target/busyroot/lava/<arch>-<root>-<tests>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub boot: Boot,
    /// Run the tests through lava-test-shell (`lava-test-case`) instead of an interactive
    /// test; needs --initramfs, as LAVA adds its overlay to an ext4 image only via libguestfs.
    #[arg(long, requires = "initramfs")]
    pub test_shell: bool,
    /// Artifact name, the first path component under the base URL.
    #[arg(long, default_value = "busyroot")]
    pub name: String,
    /// Artifact version [default: the first 12 hex digits of the sha256 of SHA256SUMS].
    #[arg(long, value_name = "VERSION")]
    pub artifact_version: Option<String>,
    /// Seconds the payload command may run [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub cmd_timeout: Option<u64>,
    /// Take rootfs.ext4, rootfs.cpio.gz and rootfs.tar from DIR (as `cargo xtask rootfs`
    /// wrote them, e.g. target/busyroot/<arch>) instead of building them; nothing is written
    /// there.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Run the job with the local lava-run (as root) and report its cases.
    #[arg(long)]
    pub run: bool,
    /// With --run, write a JUnit XML report to PATH.
    #[arg(long, value_name = "PATH", requires = "run")]
    pub junit: Option<PathBuf>,
    /// With --run, write a JSON report to PATH.
    #[arg(long, value_name = "PATH", requires = "run")]
    pub json: Option<PathBuf>,
    /// A command the guest runs as root after the checks (a case that passes on exit 0).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(sh: &Shell, args: LavaArgs) -> anyhow::Result<i32> {
    if args.run {
        // Before building anything: a build by root would leave root's files behind.
        lava::require_root().context(
            "`--run` runs lava-run, which needs root; run `sudo -E cargo xtask lava --run …`, or \
             leave out --run and submit job.yaml to a lab",
        )?;
    }
    let ctx = args.target.resolve()?;
    let [cpio, ext4, tar] = images(sh, &ctx, &args)?;
    let kernel = select_kernel(ctx.workspace(), ctx.arch(), args.boot.kernel.as_deref())?;
    eprintln!("kernel: {} ({})", kernel.path.display(), kernel.source);
    let kernel = kernel.path;
    let cell = cell(&ctx, &args, &kernel, &cpio, &ext4)?;
    let label = format!(
        "{}-{}-{}",
        ctx.arch(),
        if args.boot.initramfs { "initramfs" } else { "disk" },
        if args.test_shell { "test-shell" } else { "interactive" }
    );
    let out = args.out.clone().unwrap_or_else(|| ctx.layout().lava_job(&label));
    let sources = ArtifactSources { cpio, ext4, tar, kernel: kernel.clone() };
    let job = write_job(&args, &cell, &label, &out, &sources)?;
    if !args.run {
        eprintln!(
            "submit it to a lab with `lavacli jobs submit {}`",
            out.join("job.yaml").display()
        );
        return Ok(0);
    }
    run_job(sh, &args, &cell, &job, &kernel, &out)
}

/// rootfs.cpio.gz, rootfs.ext4 and rootfs.tar: from --images, or built now.
fn images(
    sh: &Shell,
    ctx: &busyroot::context::Context,
    args: &LavaArgs,
) -> anyhow::Result<[PathBuf; 3]> {
    const FORMATS: [Format; 3] = [Format::CpioGz, Format::Ext4, Format::Tar];
    let Some(dir) = &args.images else {
        let outputs = rootfs::build(sh, ctx)?;
        return Ok(FORMATS.map(|f| outputs.path(f).to_path_buf()));
    };
    let files = FORMATS.map(|f| dir.join(f.file_name()));
    if let Some(file) = files.iter().find(|f| !f.is_file()) {
        anyhow::bail!(
            "`{}` is missing; --images takes a directory that `cargo xtask rootfs` wrote \
             (target/busyroot/<arch>)",
            file.display()
        );
    }
    Ok(files)
}

/// The cell the job runs: its medium, accelerator, checks, timeouts and command, each choice
/// said as `run` says it.
fn cell(
    ctx: &busyroot::context::Context,
    args: &LavaArgs,
    kernel: &Path,
    cpio: &Path,
    ext4: &Path,
) -> anyhow::Result<Cell> {
    let (ws, arch) = (ctx.workspace(), ctx.arch());
    let config = &ws.config.run;
    let (medium, root) = if args.boot.initramfs {
        (Medium::Initramfs, Root::Initramfs(cpio.to_path_buf()))
    } else {
        let bus = vm::choose_root_bus(args.boot.root_bus, kernel, vm::Vmm::Qemu)?;
        eprintln!("root:   rootfs.ext4 on {} ({})", bus.value, bus.reason);
        (Medium::Disk, Root::Disk { image: ext4.to_path_buf(), bus: bus.value })
    };
    let accel = vm::choose_accel(AccelRequest::Auto, arch)?;
    eprintln!("accel:  {} ({})", accel.value, accel.reason);
    let timeouts = Timeouts::from_env(accel.value, config.timeout)?;
    let spec = vm::VmSpec::new(arch, kernel.to_path_buf(), root, PathBuf::new());
    let mut checks = RunPlan::standard(&spec, &config.hostname, timeouts).checks;
    checks.extend(vm::Check::configured(ws)?);

    let style = if args.test_shell { TestStyle::TestShell } else { TestStyle::Interactive };
    let mut cell = Cell::new(arch, medium, style, checks);
    if let Root::Disk { bus, .. } = spec.root {
        cell.bus = bus;
    }
    cell.accel = accel.value;
    cell.qemu = vm::Vmm::Qemu.program(arch, config.qemu.as_deref());
    cell.mem_mib = config.mem;
    cell.boot_timeout = timeouts.boot;
    cell.check_timeout = timeouts.command;
    if let Some(secs) = args.cmd_timeout {
        anyhow::ensure!(secs > 0, "--cmd-timeout must be a positive number of seconds");
        cell.command_timeout = Duration::from_secs(secs);
    }
    if !args.command.is_empty() {
        cell.command = Some(args.command.clone());
    }
    Ok(cell)
}

/// The artifact directory, job.yaml and device.yaml in `out`.
fn write_job(
    args: &LavaArgs,
    cell: &Cell,
    label: &str,
    out: &Path,
    sources: &ArtifactSources,
) -> anyhow::Result<LavaJob> {
    let artifacts_root = out.join("artifacts");
    std::fs::create_dir_all(&artifacts_root)
        .with_context(|| format!("create `{}`", artifacts_root.display()))?;
    let artifacts = lava::write_artifacts(
        &artifacts_root,
        &args.name,
        args.artifact_version.as_deref(),
        cell.arch,
        sources,
        args.base_url.as_deref(),
    )
    .context("write the artifact directory")?;
    let job = lava::job(cell, &format!("busyroot {label}"), &artifacts)?;
    let job_file = out.join("job.yaml");
    let device_file = out.join("device.yaml");
    for (file, text) in [(&job_file, job.definition_text()), (&device_file, job.device_text())] {
        busyroot::host::fs::write_file(file, text)
            .with_context(|| format!("write `{}`", file.display()))?;
    }
    eprintln!("artifacts: {} ({})", artifacts.dir.display(), artifacts.url);
    eprintln!("job:       {} ({} cases)", job_file.display(), job.cases.len());
    eprintln!("device:    {}", device_file.display());
    Ok(job)
}

/// The job in `out` run with the local lava-run, its cases read back from its log and
/// reported as `run` reports checks.
fn run_job(
    sh: &Shell,
    args: &LavaArgs,
    cell: &Cell,
    job: &LavaJob,
    kernel: &Path,
    out: &Path,
) -> anyhow::Result<i32> {
    let log_path = out.join("lava-run.log");
    let started = Instant::now();
    // lava-run's own deadline is the job timeout; ours leaves it time to clean up.
    let lava_run = lava::run_lava(
        sh,
        &out.join("job.yaml"),
        &out.join("device.yaml"),
        &out.join("lava-output"),
        &log_path,
        job.timeout + Duration::from_secs(60),
    )
    .context("run the job with lava-run (as root: `sudo -E cargo xtask lava --run`)")?;
    eprintln!("$ {}", lava_run.command);
    eprintln!(
        "lava-run: exit status {} after {:.1} s; log: {}",
        lava_run.status.map_or("none (killed)".to_string(), |s| s.to_string()),
        lava_run.duration.as_secs_f64(),
        log_path.display()
    );
    let text = std::fs::read_to_string(&log_path)
        .with_context(|| format!("read lava-run's log `{}`", log_path.display()))?;
    let log = lava::parse_log(&text);
    let report = lava::report(
        &ReportContext {
            cell,
            job,
            kernel,
            log_path: &log_path,
            pid: Some(lava_run.pid),
            total_time: started.elapsed(),
            timed_out: lava_run.timed_out,
        },
        &log,
    );
    if let Some(boot) = report.boot_time {
        eprintln!("booted: prompt after {:.1} s", boot.as_secs_f64());
    }
    for check in &report.checks {
        print_check(check);
    }
    if let Outcome::BootFailed(f) = &report.outcome {
        print_tail(&f.console_tail);
    }
    finish(&report, args.junit.as_deref(), args.json.as_deref())
}
