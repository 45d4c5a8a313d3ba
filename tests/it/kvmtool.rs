//! kvmtool against the real `lkvm`: busyroot's command lines (disk, initramfs, and a payload
//! with a shared directory; piped and interactive) must get through lkvm's argument parsing;
//! where hardware KVM works the same tests boot them, run the checks and the payload.
//!
//! Without hardware virtualization `lkvm run` parses and validates its arguments, announces
//! the guest, and stops in its first initialisation step, `kvm__init`. How far it got is read
//! from its exit status and messages, as kvmtool's source defines them (snapshot b48735e5d562):
//!
//! - `util/parse-options.c`: an unknown option or a bad option value prints `Error: …` and the
//!   usage, then exits with 129.
//! - `util/util.c`: `die()` prints `Fatal: …` and exits with 128 (an invalid `-m`, a
//!   contradictory configuration, and later any failed initialisation).
//! - `builtin-run.c`, `kvm_cmd_run_init`: once the options are parsed and validated it prints
//!   `Info: # lkvm run -k … -m … -c … --name …`, then runs the init list.
//! - `kvm.c`, `kvm__init` (the first entry of the init list on x86): no `vmx`/`svm` gives
//!   `Error: Your CPU does not support hardware virtualization`, a missing or closed
//!   `/dev/kvm` gives `Error: '/dev/kvm' not found…` or `Error: Could not open /dev/kvm`; then
//!   `util/init.c` prints `Warning: Failed init: kvm__init` and lkvm dies with 128. Nothing
//!   before it opens the kernel or the images, so at this level their paths need not exist.

use std::path::{Path, PathBuf};

use busyroot::arch::Arch;
use busyroot::vm::{
    self, Accel, AccelRequest, ConsoleMode, Launch, Quiet, Root, RootBus, RootBusRequest, Vm,
    VmSpec, Vmm,
};

use super::{boot, support};

/// How far `lkvm run` got with a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// lkvm refused the command line before announcing the guest: usage (exit 129) or a fatal
    /// error about an option's value or the configuration (exit 128). `why` is its message.
    Rejected { code: i32, why: String },
    /// The arguments were accepted; KVM initialisation failed, so nothing was booted.
    KvmRefused { reason: String },
    /// The arguments were accepted and KVM initialised, then lkvm failed anyway.
    FailedAfterKvm { code: i32, why: String },
    /// lkvm was still running at the deadline and was killed: it got past KVM initialisation.
    Running,
}

/// The line lkvm prints once its options are parsed and validated.
const ANNOUNCED: &str = "Info: # lkvm run ";
/// The line util/init.c prints when `kvm__init` fails.
const KVM_INIT_FAILED: &str = "Failed init: kvm__init";

/// Reads the level from lkvm's exit code (`None`: killed at the deadline) and its output.
fn classify(code: Option<i32>, output: &str) -> Level {
    let Some(code) = code else { return Level::Running };
    let first = |prefixes: &[&str]| {
        output
            .lines()
            .map(str::trim)
            .find_map(|l| prefixes.iter().find_map(|p| l.strip_prefix(p)))
            .unwrap_or("(no message)")
            .to_string()
    };
    let announced = output.lines().any(|l| l.trim_start().starts_with(ANNOUNCED));
    if !announced {
        return Level::Rejected { code, why: first(&["Error: ", "Fatal: "]) };
    }
    if code == 128 && output.lines().any(|l| l.trim_end().ends_with(KVM_INIT_FAILED)) {
        return Level::KvmRefused { reason: first(&["Error: "]) };
    }
    Level::FailedAfterKvm { code, why: first(&["Fatal: ", "Error: "]) }
}

/// One run of lkvm with stdin closed.
struct LkvmRun {
    command: String,
    code: Option<i32>,
    output: String,
}

impl LkvmRun {
    fn level(&self) -> Level {
        classify(self.code, &self.output)
    }

    /// The command and everything lkvm printed, for a failure message.
    fn show(&self) -> String {
        let code = self.code.map_or("killed at the deadline".into(), |c| format!("exit {c}"));
        format!("$ {}\n({code}), output:\n{}", self.command, self.output)
    }

    /// Warnings other than the failed KVM initialisation: lkvm accepted something it ignores.
    fn unexpected_warnings(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter(|l| l.contains("Warning: ") && !l.contains(KVM_INIT_FAILED))
            .collect()
    }
}

/// Runs `lkvm` with `args` and stdin closed, its `$HOME` (where it keeps `~/.lkvm` sockets) in
/// `home`, killed if it still runs after a minute (scaled by `$BUSYROOT_TIMEOUT_SCALE`): that
/// only happens when it got past KVM initialisation and started the guest.
fn run_lkvm(launch: &Launch, home: &Path) -> LkvmRun {
    // On a terminal, as busyroot's runner starts it (lkvm reads its console only there).
    run_lkvm_with(launch, home, true)
}

/// [`run_lkvm`] with `terminal`: lkvm's stdin and stdout on a pseudo-terminal (through
/// util-linux `script`), as when it runs interactively.
fn run_lkvm_with(launch: &Launch, home: &Path, terminal: bool) -> LkvmRun {
    let scale: f64 = std::env::var("BUSYROOT_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| *s >= 1.0)
        .unwrap_or(1.0);
    let seconds = format!("{:.0}", 60.0 * scale);
    let (lkvm, args) = (&launch.program, &launch.args);
    let command = launch.display();
    let sh = xshell::Shell::new().unwrap();
    let cmd = if terminal {
        xshell::cmd!(
            sh,
            "timeout --signal=KILL {seconds} script --quiet --return --command {command} /dev/null"
        )
    } else {
        xshell::cmd!(sh, "timeout --signal=KILL {seconds} {lkvm} {args...}")
    };
    let out = cmd.env("HOME", home).stdin(b"").quiet().ignore_status().output().unwrap();
    let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stdout));
    // `timeout` reports its SIGKILL as 128 + 9.
    let code = out.status.code().filter(|&c| c != 137);
    LkvmRun { command, code, output }
}

/// The real lkvm (`$LKVM`, else `lkvm` in `$PATH`), or `None` after saying why not.
fn lkvm(test: &str) -> Option<PathBuf> {
    if Arch::host() != Some(Arch::X86_64) {
        support::skip(
            test,
            "the kvmtool tests build x86_64 command lines; this host is not x86_64",
        );
        return None;
    }
    let program = Vmm::Kvmtool.program(Arch::X86_64, None);
    let found = busyroot::host::tools::find_program(&program.to_string_lossy());
    if found.is_none() {
        support::skip(
            test,
            &format!(
                "`{}` is not installed; unpack kvmtool's source (CI's snapshot: \
                 `../shared/vendor/kvmtool-*.tar.gz`) into DIR, `make -C DIR lkvm`, then \
                 `LKVM=DIR/lkvm cargo test --workspace` (docs/architectures.md, section kvmtool)",
                program.display()
            ),
        );
    }
    found
}

/// Whether KVM can really run an x86_64 guest here, as busyroot's own choice says.
fn kvm_usable() -> Option<String> {
    let accel = vm::choose_accel(AccelRequest::Auto, Arch::X86_64).unwrap();
    (accel.value == Accel::Kvm).then_some(accel.reason)
}

/// A kvmtool spec for `root` with an empty kernel file in `dir`: lkvm opens neither the
/// kernel nor the images before KVM works. The files exist all the same, as lkvm reads an
/// existing directory given to `-d` as a 9p root instead of a disk.
fn spec(lkvm: &Path, dir: &Path, root: Root) -> VmSpec {
    let kernel = dir.join("bzImage");
    let image = match &root {
        Root::Disk { image, .. } => image,
        Root::Initramfs(cpio) => cpio,
    };
    for file in [&kernel, image] {
        std::fs::write(file, b"").unwrap();
    }
    let mut spec = VmSpec::new(Arch::X86_64, kernel, root, dir.join("console.log"));
    spec.vmm = Vmm::Kvmtool;
    spec.program = lkvm.to_path_buf();
    spec.accel = Accel::Kvm;
    spec.cpus = 1;
    spec
}

/// Runs the piped (check and payload) and interactive command lines of `spec`, as busyroot's
/// kvmtool backend prepares them in `dir`, and requires each to get through argument parsing
/// and stop at KVM initialisation.
fn assert_args_reach_kvm_init(test: &str, spec: &VmSpec, dir: &Path) {
    for (mode, console) in [("piped", ConsoleMode::Piped), ("interactive", ConsoleMode::Terminal)] {
        let run = run_lkvm(&Vmm::Kvmtool.launch(spec, console, dir).unwrap(), dir);
        match run.level() {
            Level::KvmRefused { reason } => eprintln!(
                "{test}, {mode} mode: lkvm accepted the arguments; KVM initialisation refused \
                 ({reason}); the boot itself was not exercised\n  $ {}",
                run.command
            ),
            Level::Running => panic!(
                "lkvm got past KVM initialisation although busyroot finds no usable KVM here; \
                 the boot was not checked\n{}",
                run.show()
            ),
            level => {
                panic!("lkvm stopped at {level:?} with busyroot's {mode} arguments\n{}", run.show())
            }
        }
        let warnings = run.unexpected_warnings();
        assert!(
            warnings.is_empty(),
            "lkvm warned about busyroot's {mode} arguments: {warnings:?}\n{}",
            run.show()
        );
    }
}

/// Where KVM works: the real boot of `root` under kvmtool, with the standard checks.
fn boot_and_check(test: &str, lkvm: &Path, disk: bool) {
    let Some(setup) = boot::setup(test) else { return };
    let root = if disk {
        let bus = match vm::choose_root_bus(RootBusRequest::Auto, &setup.kernel, Vmm::Kvmtool) {
            Ok(bus) => bus.value,
            Err(e) => {
                return support::skip(
                    test,
                    &format!("this kernel cannot boot a disk under kvmtool: {e}"),
                )
            }
        };
        let image = setup.tmp.path().join("rootfs.ext4");
        std::fs::copy(&setup.ext4, &image).unwrap();
        Root::Disk { image, bus }
    } else {
        Root::Initramfs(setup.cpio.clone())
    };
    let mut spec = setup.spec(root);
    spec.vmm = Vmm::Kvmtool;
    spec.program = lkvm.to_path_buf();
    spec.accel = Accel::Kvm;
    eprintln!("{test}: KVM works here; booting under kvmtool");
    let report = boot::boot(&spec, &boot::plan(&spec, &[]));
    boot::assert_passed(&report);
}

/// The disk and initramfs tests: a full boot where KVM works, else the argument level.
fn reaches_the_furthest_level(test: &str, disk: bool) {
    let Some(lkvm) = lkvm(test) else { return };
    if let Some(reason) = kvm_usable() {
        eprintln!("{test}: KVM is usable ({reason})");
        return boot_and_check(test, &lkvm, disk);
    }
    let tmp = support::tempdir();
    let root = if disk {
        Root::Disk { image: tmp.path().join("boot.ext4"), bus: RootBus::Virtio }
    } else {
        Root::Initramfs(tmp.path().join("rootfs.cpio.gz"))
    };
    assert_args_reach_kvm_init(test, &spec(&lkvm, tmp.path(), root), tmp.path());
}

#[test]
fn kvmtool_disk_command_lines_work_with_the_real_lkvm() {
    reaches_the_furthest_level("kvmtool_disk_command_lines_work_with_the_real_lkvm", true);
}

#[test]
fn kvmtool_initramfs_command_lines_work_with_the_real_lkvm() {
    reaches_the_furthest_level("kvmtool_initramfs_command_lines_work_with_the_real_lkvm", false);
}

#[test]
fn kvmtool_payload_command_lines_work_with_the_real_lkvm() {
    // `cargo xtask run --vmm kvmtool --share DIR -- CMD`: the library's `Vm` prepares the spec
    // (the share over 9p, kvmtool's only transport) and the backend the command line. The
    // command's status travels in the guest protocol's tagged lines on the one console, so
    // lkvm needs no other option for it.
    let test = "kvmtool_payload_command_lines_work_with_the_real_lkvm";
    let Some(lkvm) = lkvm(test) else { return };
    if let Some(reason) = kvm_usable() {
        eprintln!("{test}: KVM is usable ({reason})");
        return run_a_payload(test, &lkvm);
    }
    let tmp = support::tempdir();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let prog = share.join("prog");
    let (kernel, cpio) = (tmp.path().join("bzImage"), tmp.path().join("rootfs.cpio.gz"));
    for file in [&prog, &kernel, &cpio] {
        std::fs::write(file, b"").unwrap();
    }
    let mut vm = Vm::new(Arch::X86_64, &kernel);
    vm.vmm(Vmm::Kvmtool, Some(lkvm))
        .initramfs(&cpio)
        .share(&share)
        .size(256, 1)
        .work_dir(tmp.path().join("run"));
    let command = vec![prog.display().to_string(), "3".into()];
    let (spec, _plan) = vm.prepare(Some(command), &Quiet).unwrap();
    let launch = Vmm::Kvmtool.launch(&spec, ConsoleMode::Piped, tmp.path()).unwrap();
    assert!(
        launch.args.windows(2).any(
            |w| w[0] == "--9p" && w[1].to_string_lossy().starts_with(&*share.to_string_lossy())
        ),
        "the share is not exported: {}",
        launch.display()
    );
    assert_args_reach_kvm_init(test, &spec, tmp.path());
}

/// Where KVM works: a command run under kvmtool, its output and exit status.
fn run_a_payload(test: &str, lkvm: &Path) {
    let Some(setup) = boot::setup(test) else { return };
    let mut vm = Vm::new(Arch::X86_64, &setup.kernel);
    vm.vmm(Vmm::Kvmtool, Some(lkvm.to_path_buf())).initramfs(&setup.cpio).size(256, 1);
    let out = vm.run(["/bin/sh", "-c", "echo from the guest; exit 3"]).unwrap();
    assert_eq!((out.status, out.stdout.as_str()), (3, "from the guest\n"), "{:#?}", out.report);
}

#[test]
fn the_real_lkvm_rejects_a_wrong_argument() {
    // The classifier's own test, against the real lkvm: busyroot's command line with one
    // wrong argument must read as rejected, so a wrong argument in the backend fails the
    // tests above.
    let test = "the_real_lkvm_rejects_a_wrong_argument";
    let Some(lkvm) = lkvm(test) else { return };
    let tmp = support::tempdir();
    let spec = spec(&lkvm, tmp.path(), Root::Initramfs(tmp.path().join("rootfs.cpio.gz")));
    let launch = Vmm::Kvmtool.launch(&spec, ConsoleMode::Piped, tmp.path()).unwrap();

    let mut unknown = launch.clone();
    unknown.args.push("--no-such-option".into());
    let run = run_lkvm(&unknown, tmp.path());
    assert_eq!(
        run.level(),
        Level::Rejected { code: 129, why: "unknown option `no-such-option'".into() },
        "\n{}",
        run.show()
    );
    assert!(run.output.contains("usage: lkvm run"), "{}", run.show());

    // A bad value is refused by the option's own parser, which dies instead.
    let mut no_memory = launch;
    no_memory.args.extend(["-m".into(), "0".into()]);
    let run = run_lkvm(&no_memory, tmp.path());
    assert_eq!(
        run.level(),
        Level::Rejected { code: 128, why: "Invalid RAM size: 0".into() },
        "\n{}",
        run.show()
    );
}

#[test]
fn lkvm_takes_console_input_only_on_a_terminal() {
    // What a console protocol under kvmtool has to provide (docs/architectures.md, section kvmtool):
    // lkvm's term.c starts the thread that feeds stdin to the guest only when stdin and
    // stdout are a terminal, and all four serial ports read that same input unless `--tty N`
    // moves port N onto a pty of its own, which again needs a terminal. So lkvm must run on a
    // pty, with `--tty 1 --tty 2 --tty 3` so that only ttyS0 takes what is typed.
    let test = "lkvm_takes_console_input_only_on_a_terminal";
    let Some(lkvm) = lkvm(test) else { return };
    let tmp = support::tempdir();
    let spec = spec(&lkvm, tmp.path(), Root::Initramfs(tmp.path().join("rootfs.cpio.gz")));
    let launch = Vmm::Kvmtool.launch(&spec, ConsoleMode::Piped, tmp.path()).unwrap();
    let line = launch.display();
    assert!(line.contains("--tty 1 --tty 2 --tty 3"), "{line}");

    // On pipes, lkvm refuses these while parsing: busyroot's runner gives it a terminal.
    let run = run_lkvm_with(&launch, tmp.path(), false);
    let why = "unable to save initial standard input settings".to_string();
    assert_eq!(run.level(), Level::Rejected { code: 128, why }, "\n{}", run.show());

    // On a terminal: accepted, each port on its own pty.
    let run = run_lkvm(&launch, tmp.path());
    match run.level() {
        Level::KvmRefused { reason } => {
            eprintln!("{test}: lkvm on a terminal accepted `--tty 1 --tty 2 --tty 3`; KVM initialisation refused ({reason})")
        }
        // With KVM, lkvm goes on to load the (empty) kernel file and fails there.
        Level::FailedAfterKvm { why, .. } if why.starts_with("unable to load kernel") => {}
        level => panic!("lkvm on a terminal stopped at {level:?}\n{}", run.show()),
    }
    for port in 1..=3 {
        let line = format!("Assigned terminal {port} to pty /dev/pts/");
        assert!(run.output.contains(&line), "no `{line}`\n{}", run.show());
    }
}

#[test]
fn levels_are_read_from_lkvms_messages() {
    // What lkvm prints on a host without hardware virtualization (copied from a real run)...
    let no_vmx = "  Info: # lkvm run -k /k/bzImage -m 256 -c 1 --name guest-14073
  Error: Your CPU does not support hardware virtualization
  Warning: Failed init: kvm__init

  Fatal: Initialisation failed\n";
    assert_eq!(
        classify(Some(128), no_vmx),
        Level::KvmRefused { reason: "Your CPU does not support hardware virtualization".into() }
    );
    // ... where only /dev/kvm is missing (kvm.c's message)...
    let no_dev = no_vmx.replace(
        "Your CPU does not support hardware virtualization",
        "'/dev/kvm' not found. Please make sure your kernel has CONFIG_KVM enabled and that \
         the KVM modules are loaded.",
    );
    assert!(
        matches!(classify(Some(128), &no_dev), Level::KvmRefused { reason } if reason.starts_with("'/dev/kvm' not found"))
    );
    // ... where KVM works but the kernel cannot be loaded...
    let no_kernel = "  Info: # lkvm run -k /k/bzImage -m 256 -c 1 --name guest-1\n  Fatal: unable to load kernel /k/bzImage\n";
    assert_eq!(
        classify(Some(128), no_kernel),
        Level::FailedAfterKvm { code: 128, why: "unable to load kernel /k/bzImage".into() }
    );
    // ... and a guest that was still running at the deadline.
    assert_eq!(classify(None, ""), Level::Running);
}
