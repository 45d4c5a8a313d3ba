//! `cargo xtask run`: boot the image under QEMU or another VMM, interactively, as a smoke check,
//! or to run a command in the guest and exit with its status.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::config::Workspace;
use busyroot::context::Layout;
use busyroot::image::Format;
use busyroot::vm::{
    self, AccelRequest, Check, Event, Observer, Outcome, RootBusRequest, RunReport, ShareRequest,
    Vm,
};
use xshell::Shell;

use crate::kernel::KernelArgs;
use crate::rootfs::{self, Target};

/// Flags of `cargo xtask run`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Exit codes: with `-- CMD`, CMD's own exit status; 124 if it ran past --cmd-timeout; 125 if
busyroot itself failed and CMD did not run (a usage error, a refusal before the boot, the boot,
a check, or the set-up of shares and modules); 130 on Ctrl-C. With --check alone: 0 passed,
1 a check failed, 2 the boot failed or was refused. The last line on stderr always says which
case it was (`busyroot: …`); --json records it as `verdict` (passed, failed, command-timeout,
boot-failed, setup-failed, checks-failed, interrupted, error), `passed` only with exit 0.")]
pub struct RunArgs {
    #[command(flatten)]
    pub boot: Boot,
    /// Boot, check the guest over the serial console, power off and check the image; exit 0
    /// if everything passed, 1 if a check failed, 2 if the boot failed.
    #[arg(long)]
    pub check: bool,
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
    /// Run CMD as Cargo's runner (`runner = ["…/xtask", "run", "--runner", "--"]` in
    /// .cargo/config.toml): CMD is a test binary built statically for the guest; its
    /// directory (read-only) and the current directory are shared at their own paths, CMD
    /// starts in the current directory, and RUST_* and CARGO_* variables are passed on.
    #[arg(long, requires = "command")]
    pub runner: bool,
    /// Also show the kernel console on stderr (it always goes to console.log).
    #[arg(long)]
    pub console: bool,
    /// Virtual machine monitor: qemu, kvmtool, firecracker, cloud-hypervisor, or a VMM
    /// configured under [workspace.metadata.busyroot.run.vmm.<NAME>] (a program with
    /// placeholders in its arguments, its serial console on stdio; see docs/vmm.md). Booted
    /// here: qemu (KVM and TCG) and configured VMMs. kvmtool, Firecracker and cloud-hypervisor
    /// need KVM; their command lines and configuration files are tested, and the real
    /// binaries were run to where this host's KVM failed them, but none has booted a guest in
    /// busyroot's tests.
    #[arg(long, value_name = "VMM", default_value = "qemu")]
    pub vmm: String,
    /// Accelerator: auto (KVM only where it can run this guest), kvm or tcg.
    #[arg(long, value_name = "ACCEL", default_value = "auto")]
    pub accel: AccelRequest,
    /// Seconds to wait for the init banner [default: 120 under TCG, 30 under KVM; scaled by
    /// $BUSYROOT_TIMEOUT_SCALE].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Extra kernel command-line arguments, after busyroot's own (repeatable).
    #[arg(long, value_name = "ARGS")]
    pub append: Vec<String>,
    #[command(flatten)]
    pub target: Target,
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
    /// Write a JUnit XML report to PATH (with --check or a command).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report to PATH: kernel, image, accel, checks, command, status, durations,
    /// verdict, console log.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// The command to run in the guest as root, after `--`; busyroot exits with its status.
    /// Where the kernel has virtio-console (built in, or a module from --modules) and the VMM
    /// is QEMU, CMD's stdout and stderr arrive byte for byte on busyroot's, and a stdin that
    /// is not a terminal (a pipe, a file) is CMD's stdin to its end; a terminal stays
    /// /dev/null. Output a background process writes after CMD exits is dropped. Otherwise
    /// (any VMM but QEMU, or no virtio-console) the serial relay carries text lines: control
    /// characters and `\r` dropped, a newline added to a last line without one, stdin
    /// /dev/null.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The exit code of a run whose command could not run: busyroot's own failure.
pub const EXIT_NOT_RUN: i32 = vm::EXIT_NOT_RUN;

/// Whether the command line `args` (of `cargo xtask …`) runs a command in the guest: `run`
/// with something after `--`.
pub fn has_command(args: impl Iterator<Item = String>) -> bool {
    let mut args = args.skip(1).skip_while(|a| a != "run");
    args.next().is_some() && args.skip_while(|a| a != "--").nth(1).is_some()
}

/// How a run that failed before it had a report ends: the exit code `--help` promises and a
/// `--json` report saying so.
pub struct Failure {
    with_command: bool,
    json: Option<PathBuf>,
}

impl Failure {
    /// What `args` asked for, kept before the run consumes them.
    pub fn of(args: &RunArgs) -> Failure {
        Failure { with_command: !args.command.is_empty(), json: args.json.clone() }
    }

    /// Writes the `--json` report of `err` and the last stderr line; returns the exit code:
    /// 125 with a command (its status is the only source of other codes), else 2 (the
    /// boot failed).
    pub fn report(&self, err: &anyhow::Error) -> i32 {
        let code = if self.with_command { EXIT_NOT_RUN } else { 2 };
        if let Some(path) = &self.json {
            let json = serde_json::json!({
                "verdict": "error",
                "exit_code": code,
                "failure": { "kind": "error", "message": format!("{err:#}") },
            });
            if let Err(e) = write_report(path, &format!("{json:#}\n")) {
                eprintln!("error: {e:#}");
            }
        }
        let what = if self.with_command { "the command did not run" } else { "no boot" };
        let first = format!("{err:#}");
        let first = first.lines().next().unwrap_or("");
        eprintln!("busyroot: {what}: {first} (exit {code})");
        code
    }
}

/// The kernel and the root file system to boot; flags of `cargo xtask run` and `lava`.
#[derive(clap::Args, Debug)]
pub struct Boot {
    /// Kernel image to boot [default: $BUSYROOT_KERNEL, else config `run.kernel`, else the
    /// newer of the kernels `cargo xtask kernel` built and `cargo xtask kernel --distro`
    /// fetched (whose modules are then used without --modules)].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Boot rootfs.cpio.gz as the initramfs instead of rootfs.ext4 as the root disk.
    #[arg(long)]
    pub initramfs: bool,
    /// Bus of the root disk: auto (from the kernel's config), virtio, nvme or scsi.
    #[arg(long, value_name = "BUS", default_value = "auto")]
    pub root_bus: RootBusRequest,
}

pub fn run(sh: &Shell, args: RunArgs) -> anyhow::Result<i32> {
    // As Cargo's runner, the current directory is the tested package's: the images are this
    // workspace's all the same.
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
    let ctx = if args.runner { args.target.resolve_in(own)? } else { args.target.resolve()? };
    let (ws, arch) = (ctx.workspace(), ctx.arch());
    let config = ws.config.run.clone();
    // Refused before the build, so a kvmtool run without KVM fails at once.
    let (vmm, configured_program) = vm::vmm_named(&args.vmm, &config, &ws.root)?;
    let accel = vm::choose_accel(args.accel, arch)?;
    vmm.check_accel(accel.value, &accel.reason)?;
    let outputs = rootfs::build(sh, &ctx)?;

    if args.build_kernel && !kernel_named(ws, args.boot.kernel.as_deref()) {
        let kernel_args = KernelArgs { target: args.target.clone(), ..Default::default() };
        kernel_args.build(sh, &ctx)?;
    }
    let kernel = select_kernel(ws, arch, args.boot.kernel.as_deref())?;
    eprintln!("kernel: {} ({})", kernel.path.display(), kernel.source);

    let mut machine = Vm::new(arch, kernel.path);
    if args.boot.initramfs {
        machine.initramfs(outputs.path(Format::CpioGz));
    } else {
        machine.disk(outputs.path(Format::Ext4));
    }
    machine
        .vmm(vmm, configured_program)
        .accel(args.accel)
        .root_bus(args.boot.root_bus)
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
        machine.checks(&config.hostname, Check::configured(ws)?);
    }
    if !args.check && args.command.is_empty() {
        return Ok(machine.interactive(&render)?);
    }
    if args.runner {
        crate::runner::prepare(&mut machine, arch, &args.command)?;
    }
    if !std::io::stdin().is_terminal() {
        machine.stdin(vm::Input::HostStdin);
    }
    let command = (!args.command.is_empty()).then(|| args.command.clone());
    let report = machine.run_with(sh, command, &render)?;
    render.summary(&report);
    finish(&report, args.junit.as_deref(), args.json.as_deref())
}

/// Whether `flag` (--kernel), $BUSYROOT_KERNEL or config `run.kernel` names the kernel to boot.
pub(crate) fn kernel_named(ws: &Workspace, flag: Option<&Path>) -> bool {
    let env = std::env::var_os("BUSYROOT_KERNEL").filter(|k| !k.is_empty());
    flag.is_some() || env.is_some() || ws.config.run.kernel.is_some()
}

/// The kernel to boot: `flag` (--kernel), else $BUSYROOT_KERNEL, else config `run.kernel`
/// (relative to the workspace root), else the newer of those `cargo xtask kernel` built or
/// fetched (`--distro`).
pub(crate) fn select_kernel(
    ws: &Workspace,
    arch: Arch,
    flag: Option<&Path>,
) -> anyhow::Result<vm::KernelChoice> {
    let env = std::env::var_os("BUSYROOT_KERNEL");
    let config = ws.config.run.kernel.as_ref().map(|k| ws.path(k));
    let layout = Layout::new(ws, arch);
    let (built, fetched) =
        (layout.kernel_image(), busyroot::pipeline::distro::installed_kernel(&layout));
    let (env, config) = (env.as_deref(), config.as_deref());
    Ok(vm::select_kernel(arch, flag, env, config, &built, fetched.as_deref())?)
}

/// Writes the reports --junit and --json ask for and the verdict line; returns the exit code.
pub(crate) fn finish(
    report: &RunReport,
    junit: Option<&Path>,
    json: Option<&Path>,
) -> anyhow::Result<i32> {
    if let Some(path) = junit {
        write_report(path, &report.to_junit())?;
    }
    if let Some(path) = json {
        write_report(path, &format!("{:#}\n", report.to_json()))?;
    }
    eprintln!("{}", report.verdict_line());
    Ok(report.exit_code())
}

pub(crate) fn write_report(path: &Path, text: &str) -> anyhow::Result<()> {
    busyroot::host::fs::write_file(path, text)
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
            Event::Booted(after) => eprintln!("booted after {:.1} s", after.as_secs_f64()),
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
            Event::Output(stream, bytes) => write_raw(stream, &bytes),
        }
    }
}

/// The payload's bytes as it wrote them, on the stream it wrote them to.
fn write_raw(stream: vm::OutputStream, bytes: &[u8]) {
    let result = match stream {
        vm::OutputStream::Stdout => std::io::stdout().lock().write_all(bytes),
        vm::OutputStream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
    // Flushed at once: a payload's output is seen as it comes, as on a terminal.
    let result = result.and_then(|()| std::io::stdout().flush());
    // Whoever read our output is gone (`run -- yes | head -1`): end as a program killed by
    // SIGPIPE would, rather than run the payload on to its timeout. The VMM and its helpers die
    // with this process (their parent-death signal).
    if result.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
        eprintln!("busyroot: the reader of the command's output went away; stopping (exit 141)");
        std::process::exit(141);
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

pub(crate) fn print_tail(lines: &[String]) {
    if !lines.is_empty() {
        eprintln!("last console lines:");
        for line in lines {
            eprintln!("  | {line}");
        }
    }
}

pub(crate) fn shell_words(argv: &[String]) -> String {
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
