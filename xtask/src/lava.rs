//! `cargo xtask lava`: write a LAVA job, a QEMU device dictionary and an artifact directory
//! for one cell, and with `--run` run the job with the local `lava-run` and report its cases.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::lava::{self, ArtifactSources, Cell, Medium, ReportContext, TestStyle};
use busyroot::vm::{self, AccelRequest, Check, Outcome, Root, RootBusRequest, RunPlan, Timeouts};
use xshell::Shell;

use crate::rootfs::{self, RootfsArgs};
use crate::run::{print_check, write_report};
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
    /// Target architecture: x86_64, aarch64 or riscv64 [default: config `arch`, else the
    /// host's].
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Boot rootfs.cpio.gz as the initramfs instead of rootfs.ext4 as the root disk.
    #[arg(long)]
    pub initramfs: bool,
    /// Kernel image [default: $BUSYROOT_KERNEL, else config `kernel`, else the kernel built
    /// by `cargo xtask kernel`].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Bus of the root disk: auto (from the kernel's config), virtio, nvme or scsi.
    #[arg(long, value_name = "BUS", default_value = "auto")]
    pub root_bus: RootBusRequest,
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
    /// Never touch the network while building: only the cache and $BUSYROOT_MIRROR.
    #[arg(long)]
    pub offline: bool,
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
    let ws = rootfs::workspace()?;
    let config = ws.config.run.clone();
    let arch = Arch::configured_or_host(args.arch.or(ws.config.arch))?;
    let (cpio, ext4, tar) = match &args.images {
        Some(dir) => {
            let [cpio, ext4, tar] =
                [Format::CpioGz, Format::Ext4, Format::Tar].map(|f| dir.join(f.file_name()));
            for file in [&cpio, &ext4, &tar] {
                anyhow::ensure!(
                    file.is_file(),
                    "`{}` is missing; --images takes a directory that `cargo xtask rootfs` \
                     wrote (target/busyroot/<arch>)",
                    file.display()
                );
            }
            (cpio, ext4, tar)
        }
        None => {
            let rootfs_args = RootfsArgs { arch: Some(arch), offline: args.offline };
            let outputs = rootfs::build(sh, ws.clone(), &rootfs_args)?;
            (outputs.cpio, outputs.ext4, outputs.tar)
        }
    };
    let built = busyroot::pipeline::kernel::kernel_image_path(&ws, arch);
    let env_kernel = std::env::var_os("BUSYROOT_KERNEL");
    let config_kernel = config.kernel.as_ref().map(|k| ws.path(k));
    let kernel = vm::select_kernel(
        arch,
        args.kernel.as_deref(),
        env_kernel.as_deref(),
        config_kernel.as_deref(),
        &built,
    )?;
    eprintln!("kernel: {} ({})", kernel.path.display(), kernel.source);

    let (medium, root) = if args.initramfs {
        (Medium::Initramfs, Root::Initramfs(cpio.clone()))
    } else {
        let bus = vm::choose_root_bus(args.root_bus, &kernel.path, vm::Vmm::Qemu)?;
        eprintln!("root:   rootfs.ext4 on {} ({})", bus.value, bus.reason);
        (Medium::Disk(bus.value), Root::Disk { image: ext4.clone(), bus: bus.value })
    };
    let accel = vm::choose_accel(AccelRequest::Auto, arch)?;
    eprintln!("accel:  {} ({})", accel.value, accel.reason);
    let timeouts = Timeouts::from_env(accel.value, config.timeout)?;
    let spec = vm::VmSpec::new(arch, kernel.path.clone(), root, PathBuf::new());
    let mut checks = RunPlan::standard(&spec, &config.hostname, timeouts).checks;
    for extra in &config.checks {
        checks.push(Check::from_extra(extra)?);
    }
    if let Some(file) = &config.checks_file {
        for extra in vm::load_checks_file(&ws.path(file))? {
            checks.push(Check::from_extra(&extra)?);
        }
    }

    let style = if args.test_shell { TestStyle::TestShell } else { TestStyle::Interactive };
    let mut cell = Cell::new(arch, medium, style, checks);
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

    let label = format!(
        "{arch}-{}-{}",
        if args.initramfs { "initramfs" } else { "disk" },
        if args.test_shell { "test-shell" } else { "interactive" }
    );
    let out = args.out.clone().unwrap_or_else(|| ws.target_dir.join("busyroot/lava").join(&label));
    let sources = ArtifactSources { cpio, ext4, tar, kernel: kernel.path.clone() };
    let artifacts_root = out.join("artifacts");
    std::fs::create_dir_all(&artifacts_root)
        .with_context(|| format!("create `{}`", artifacts_root.display()))?;
    let artifacts = lava::write_artifacts(
        &artifacts_root,
        &args.name,
        args.artifact_version.as_deref(),
        arch,
        &sources,
        args.base_url.as_deref(),
    )
    .context("write the artifact directory")?;
    let job = lava::job(&cell, &format!("busyroot {label}"), &artifacts)?;
    let job_file = out.join("job.yaml");
    let device_file = out.join("device.yaml");
    write_text(&job_file, &job.definition_text())?;
    write_text(&device_file, &job.device_text())?;
    eprintln!("artifacts: {} ({})", artifacts.dir.display(), artifacts.url);
    eprintln!("job:       {} ({} cases)", job_file.display(), job.cases.len());
    eprintln!("device:    {}", device_file.display());
    if !args.run {
        eprintln!("submit it to a lab with `lavacli jobs submit {}`", job_file.display());
        return Ok(0);
    }

    let log_path = out.join("lava-run.log");
    let started = Instant::now();
    // lava-run's own deadline is the job timeout; ours leaves it time to clean up.
    let lava_run = lava::run_lava(
        sh,
        &job_file,
        &device_file,
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
            cell: &cell,
            job: &job,
            kernel: &kernel.path,
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
        eprintln!("last console lines:");
        for line in &f.console_tail {
            eprintln!("  | {line}");
        }
    }
    if let Some(path) = &args.junit {
        write_report(path, &report.to_junit())?;
    }
    if let Some(path) = &args.json {
        write_report(path, &format!("{:#}\n", report.to_json()))?;
    }
    eprintln!("{}", report.verdict_line());
    Ok(report.exit_code())
}

fn write_text(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    busyroot::host::fs::write_atomically(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| busyroot::Error::io("write", tmp, e))
    })
    .with_context(|| format!("write `{}`", path.display()))
}
