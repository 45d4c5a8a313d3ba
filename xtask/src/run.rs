//! `cargo xtask run`: boot the image under QEMU or kvmtool, interactively, as a smoke check,
//! or to run a command in the guest and exit with its status.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::vm::{
    self, AccelRequest, Check, Event, Observer, Outcome, RootBusRequest, RunReport, ShareRequest,
    Vm, Vmm,
};
use xshell::Shell;

use crate::rootfs::{self, RootfsArgs};

/// Flags of `cargo xtask run`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Exit codes: with `-- CMD`, CMD's own exit status; 124 if it ran past --cmd-timeout; 125 if it
could not run (the boot, a check, or the set-up of shares and modules failed); 130 on Ctrl-C.
With --check alone: 0 passed, 1 a check failed, 2 the boot failed. The last line on stderr
always says which case it was (`busyroot: …`); --json records it as `verdict`.")]
pub struct RunArgs {
    /// Kernel image to boot [default: $BUSYROOT_KERNEL, else config `kernel`, else the kernel
    /// built by `cargo xtask kernel`].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Boot, check the guest over the serial console, power off and check the image; exit 0
    /// if everything passed, 1 if a check failed, 2 if the boot failed.
    #[arg(long)]
    pub check: bool,
    /// Boot rootfs.cpio.gz as an initramfs instead of rootfs.ext4 as the root disk.
    #[arg(long)]
    pub initramfs: bool,
    /// Show a host directory to the guest, over virtio-9p or virtiofs as the kernel allows
    /// (repeatable). GUEST_DIR defaults to the same absolute path; `:ro` makes it read-only.
    /// Nothing is shared unless asked for.
    #[arg(long, value_name = "HOST_DIR[:GUEST_DIR][:ro]")]
    pub share: Vec<ShareRequest>,
    /// Kernel modules for the kernel: a lib/modules/<version> tree (from `make modules_install
    /// INSTALL_MOD_PATH=…` or an unpacked distribution package), a directory holding one, or
    /// a tar archive of one. Copied into the guest; those the shares need are loaded.
    #[arg(long, value_name = "PATH")]
    pub modules: Option<PathBuf>,
    /// Lay a directory's files (owned 0:0) or a tar archive's (with its owners) over the image
    /// for this run only (repeatable; the built image stays as built).
    #[arg(long, value_name = "DIR|TAR")]
    pub overlay: Vec<PathBuf>,
    /// Seconds CMD may run before the VM is killed (exit 124) [default: no limit].
    #[arg(long, value_name = "SECONDS")]
    pub cmd_timeout: Option<f64>,
    /// Read CMD's stdout as TAP/KTAP (kselftest output): one test case per test point in the
    /// JUnit and JSON reports.
    #[arg(long, requires = "command")]
    pub tap: bool,
    /// Also show the kernel console on stderr (it always goes to console.log).
    #[arg(long)]
    pub console: bool,
    /// Virtual machine monitor: qemu or kvmtool.
    #[arg(long, value_name = "VMM", default_value = "qemu")]
    pub vmm: Vmm,
    /// Accelerator: auto (KVM only where it can run this guest), kvm or tcg.
    #[arg(long, value_name = "ACCEL", default_value = "auto")]
    pub accel: AccelRequest,
    /// Bus of the root disk: auto (from the kernel's config), virtio, nvme or scsi.
    #[arg(long, value_name = "BUS", default_value = "auto")]
    pub root_bus: RootBusRequest,
    /// Seconds to wait for the init banner [default: 120 under TCG, 30 under KVM; scaled by
    /// $BUSYROOT_TIMEOUT_SCALE].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Extra kernel command-line arguments, after busyroot's own (repeatable).
    #[arg(long, value_name = "ARGS")]
    pub append: Vec<String>,
    /// Target architecture: x86_64, aarch64 or riscv64 (or amd64, arm64) [default: config
    /// `arch`, else the host's].
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Guest memory: MiB, or with a suffix (512M, 1G) [default: 256].
    #[arg(long, value_name = "SIZE", value_parser = vm::parse_mem_mib)]
    pub mem: Option<u32>,
    /// Number of virtual CPUs [default: 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus: Option<u32>,
    /// Build the boot-test kernel (`cargo xtask kernel`) first if no kernel is given and
    /// none is built yet.
    #[arg(long)]
    pub build_kernel: bool,
    /// Never touch the network while building: only the cache and $BUSYROOT_MIRROR.
    #[arg(long)]
    pub offline: bool,
    /// Write a JUnit XML report to PATH (with --check or a command).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report to PATH: kernel, image, accel, checks, command, status, durations,
    /// verdict, console log.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// The command to run in the guest as root, after `--`; busyroot exits with its status.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn run(sh: &Shell, args: RunArgs) -> anyhow::Result<i32> {
    let ws = rootfs::workspace()?;
    let mut config = ws.config.run.clone();
    // Paths in the configuration are relative to the workspace root.
    config.kernel = config.kernel.map(|k| ws.path(&k));
    config.checks_file = config.checks_file.map(|f| ws.path(&f));
    let arch = Arch::configured_or_host(args.arch.or(ws.config.arch))?;
    // Refused before the build, so a kvmtool run without KVM fails at once.
    let accel = vm::choose_accel(args.accel, arch)?;
    args.vmm.check_accel(accel.value, &accel.reason)?;
    let outputs =
        rootfs::build(sh, ws.clone(), &RootfsArgs { arch: Some(arch), offline: args.offline })?;

    let built = busyroot::pipeline::kernel::kernel_image_path(&ws, arch);
    let env_kernel = std::env::var_os("BUSYROOT_KERNEL");
    let nothing_given = args.kernel.is_none() && env_kernel.is_none() && config.kernel.is_none();
    if args.build_kernel && nothing_given {
        let kernel_args = crate::kernel::KernelArgs {
            arch: Some(arch),
            offline: args.offline,
            ..Default::default()
        };
        crate::kernel::build(sh, ws.clone(), &kernel_args)?;
    }
    let kernel = vm::select_kernel(
        arch,
        args.kernel.as_deref(),
        env_kernel.as_deref(),
        config.kernel.as_deref(),
        &built,
    )?;
    eprintln!("kernel: {} ({})", kernel.path.display(), kernel.source);

    let mut machine = Vm::new(arch, kernel.path);
    if args.initramfs {
        machine.initramfs(&outputs.cpio);
    } else {
        machine.disk(&outputs.ext4);
    }
    let configured_program = match args.vmm {
        Vmm::Qemu => config.qemu.clone(),
        Vmm::Kvmtool => config.lkvm.clone(),
    };
    machine
        .vmm(args.vmm, configured_program)
        .accel(args.accel)
        .root_bus(args.root_bus)
        .size(args.mem.unwrap_or(config.mem), args.cpus.unwrap_or(config.cpus))
        .work_dir(&outputs.dir)
        .tap(args.tap);
    if let Some(secs) = args.timeout.or(config.timeout) {
        machine.boot_timeout(secs);
    }
    if let Some(secs) = args.cmd_timeout {
        anyhow::ensure!(secs > 0.0, "--cmd-timeout must be a positive number of seconds");
        machine.command_timeout(Duration::from_secs_f64(secs));
    }
    for arg in &args.append {
        machine.append(arg);
    }
    for share in &args.share {
        machine.share_with(share.clone());
    }
    if let Some(modules) = &args.modules {
        machine.modules(modules);
    }
    for overlay in &args.overlay {
        machine.overlay(overlay);
    }
    let render = Render { console: args.console };
    if args.check {
        let mut extra = Vec::new();
        for e in &config.checks {
            extra.push(Check::from_extra(e)?);
        }
        if let Some(file) = &config.checks_file {
            for e in vm::load_checks_file(file)? {
                extra.push(Check::from_extra(&e)?);
            }
        }
        machine.checks(&config.hostname, extra);
    }
    if !args.check && args.command.is_empty() {
        return Ok(machine.interactive(&render)?);
    }
    let command = (!args.command.is_empty()).then(|| args.command.clone());
    let report = machine.run_with(sh, command, &render)?;
    render.summary(&report);
    if let Some(path) = &args.junit {
        write_report(path, &report.to_junit())?;
    }
    if let Some(path) = &args.json {
        write_report(path, &format!("{:#}\n", report.to_json()))?;
    }
    eprintln!("{}", report.verdict_line());
    Ok(report.exit_code())
}

pub(crate) fn write_report(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    busyroot::host::fs::write_atomically(path, |tmp| {
        std::fs::write(tmp, text).map_err(|e| busyroot::Error::io("write", tmp, e))
    })
    .with_context(|| format!("write the report `{}`", path.display()))?;
    eprintln!("report: {}", path.display());
    Ok(())
}

/// Renders the runner's events: the payload's stdout on stdout, everything else on stderr.
struct Render {
    console: bool,
}

impl Observer for Render {
    fn event(&self, event: Event) {
        match event {
            Event::Choice { what, detail } => eprintln!("{:<7} {detail}", format!("{what}:")),
            Event::Command(line) => eprintln!("$ {line}"),
            Event::Note(note) => eprintln!("{note}"),
            Event::Booted(after) => {
                eprintln!("booted: `{}` after {:.1} s", vm::BANNER, after.as_secs_f64())
            }
            Event::Console(line) if self.console => eprintln!("{line}"),
            Event::Console(_) => {}
            Event::Check(result) => print_check(&result),
            Event::CommandStarted(argv) => eprintln!("running: {}", shell_words(&argv)),
            Event::Stdout(line) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Event::Stderr(line) => eprintln!("{line}"),
        }
    }
}

impl Render {
    fn summary(&self, report: &RunReport) {
        match &report.outcome {
            Outcome::Passed if report.command.is_none() => eprintln!(
                "passed: {} checks in {:.1} s",
                report.checks.len(),
                report.total_time.as_secs_f64()
            ),
            Outcome::BootFailed(f) => print_tail(&f.console_tail),
            Outcome::CommandTimedOut => print_tail(&report.console_tail),
            _ => {}
        }
        if report.vmm_pid.is_some() {
            eprintln!("console log: {}", report.console_log.display());
        }
    }
}

fn print_tail(lines: &[String]) {
    if !lines.is_empty() {
        eprintln!("last console lines:");
        for line in lines {
            eprintln!("  | {line}");
        }
    }
}

fn shell_words(argv: &[String]) -> String {
    argv.iter().map(|w| vm::shell_quote(w)).collect::<Vec<_>>().join(" ")
}

pub(crate) fn print_check(result: &vm::CheckResult) {
    if let Some(why) = &result.skipped {
        eprintln!("  skip  {}: {why}", result.name);
    } else if result.passed {
        let first = result.output.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let first: String = first.chars().take(72).collect();
        eprintln!("  ok    {}: {first}", result.name);
    } else {
        eprintln!("  FAIL  {}", result.name);
        if !result.command.is_empty() {
            eprintln!("        command:  {}", result.command);
        }
        eprintln!("        expected: {}", result.expected);
        let mut lines = result.output.lines();
        eprintln!("        got:      {}", lines.next().unwrap_or("(nothing)"));
        for line in lines.take(40) {
            eprintln!("                  {line}");
        }
    }
}
