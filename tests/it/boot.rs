//! Boot tests: the x86_64 image under QEMU in check mode (disk and initramfs), and the ways
//! a boot can fail (panic, bogus kernel, wrong expectation). kvmtool has its own module,
//! `kvmtool.rs`, which uses the set-up here.
//!
//! The kernel comes from `$BUSYROOT_TEST_KERNEL` (any kernel), else it is the one `cargo xtask
//! kernel` built or fetched (`--distro debian`), the newer; the images from `$BUSYROOT_TEST_IMAGE_DIR` (holding
//! rootfs.ext4 and rootfs.cpio.gz) or else the rootfs the test run builds.

use std::path::PathBuf;

use busyroot::arch::Arch;
use busyroot::image::Format;
use busyroot::vm::{
    self, AccelRequest, BootFailure, BootFailureKind, ExtraCheck, Outcome, Root, RootBusRequest,
    RunPlan, RunReport, Timeouts, VmSpec, Vmm,
};
use tempfile::TempDir;

use super::support;

/// What a boot test needs, or `None` after printing why the test does not run.
pub(super) struct Setup {
    pub(super) kernel: PathBuf,
    pub(super) ext4: PathBuf,
    pub(super) cpio: PathBuf,
    pub(super) tmp: TempDir,
}

pub(super) fn setup(test: &str) -> Option<Setup> {
    let kernel = support::with_qemu(test, support::test_kernel())?;
    let (ext4, cpio) = match std::env::var_os("BUSYROOT_TEST_IMAGE_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.join("rootfs.ext4"), dir.join("rootfs.cpio.gz"))
        }
        None => {
            let outputs = support::rootfs_or_skip(test)?;
            (outputs.path(Format::Ext4).to_path_buf(), outputs.path(Format::CpioGz).to_path_buf())
        }
    };
    for image in [&ext4, &cpio] {
        assert!(image.is_file(), "`{}` is missing", image.display());
    }
    Some(Setup { kernel, ext4, cpio, tmp: support::tempdir() })
}

impl Setup {
    /// A disk boot of a private copy of the image (the guest writes to it), on the bus the
    /// kernel's configuration allows.
    fn disk_spec(&self) -> VmSpec {
        let image = self.tmp.path().join("rootfs.ext4");
        std::fs::copy(&self.ext4, &image).unwrap();
        let bus = vm::choose_root_bus(RootBusRequest::Auto, &self.kernel, Vmm::Qemu).unwrap();
        eprintln!("root bus: {} ({})", bus.value, bus.reason);
        self.spec(Root::Disk { image, bus: bus.value })
    }

    pub(super) fn initramfs_spec(&self) -> VmSpec {
        self.spec(Root::Initramfs(self.cpio.clone()))
    }

    pub(super) fn spec(&self, root: Root) -> VmSpec {
        let mut spec = VmSpec::new(
            Arch::X86_64,
            self.kernel.clone(),
            root,
            self.tmp.path().join("console.log"),
        );
        let accel = vm::choose_accel(AccelRequest::Auto, Arch::X86_64).unwrap();
        eprintln!("accel: {} ({})", accel.value, accel.reason);
        spec.accel = accel.value;
        spec.cpus = 1;
        spec
    }
}

pub(super) fn plan(spec: &VmSpec, extra: &[ExtraCheck]) -> RunPlan {
    let timeouts = Timeouts::from_env(spec.accel, None).unwrap();
    let mut plan = RunPlan::standard(spec, &vm::RunConfig::default().hostname, timeouts);
    plan.add_extra(extra).unwrap();
    plan
}

pub(super) fn boot(spec: &VmSpec, plan: &RunPlan) -> RunReport {
    let sh = xshell::Shell::new().unwrap();
    let report = vm::run(&sh, spec, plan, &vm::Quiet).unwrap();
    assert_vmm_gone(spec, &report);
    report
}

/// The VMM of `report` is not running any more (nor left as a zombie).
fn assert_vmm_gone(spec: &VmSpec, report: &RunReport) {
    let Some(pid) = report.vmm_pid else { return };
    let program = spec.program.file_name().unwrap().to_string_lossy().into_owned();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(&program),
        "{program} (pid {pid}) is still running"
    );
    // The kernel keeps only the first 15 bytes of a command's name.
    let comm: String = program.chars().take(15).collect();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(!stat.contains(&format!("({comm})")), "{program} (pid {pid}) was not reaped: {stat}");
}

/// The boot failure of `kind` that `report` ends with (busyroot's exit code 2).
fn boot_failure(report: &RunReport, kind: BootFailureKind) -> &BootFailure {
    let Outcome::BootFailed(failure) = &report.outcome else {
        panic!("expected a boot failure, got {report:#?}");
    };
    assert_eq!((failure.kind, report.exit_code()), (kind, 2), "{failure:#?}");
    failure
}

pub(super) fn assert_passed(report: &RunReport) {
    assert_eq!(report.outcome, Outcome::Passed, "{report:#?}");
    assert_eq!(report.exit_code(), 0);
    assert!(report.boot_time.is_some());
    let log = std::fs::read_to_string(&report.console_log).unwrap();
    assert!(log.contains(vm::BANNER), "the console log lacks the banner");
}

#[test]
fn disk_boot_passes_the_checks() {
    let Some(setup) = setup("disk_boot_passes_the_checks") else { return };
    let spec = setup.disk_spec();
    let report = boot(&spec, &plan(&spec, &[]));
    assert_passed(&report);
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    for expected in ["/ is ext4", "/ is writable", "poweroff", "image is clean after shutdown"] {
        assert!(names.contains(&expected), "no `{expected}` check in {names:?}");
    }
    let fsck = report.checks.iter().find(|c| c.name == "image is clean after shutdown").unwrap();
    assert_eq!(fsck.skipped, None, "e2fsck did not run");
    let junit = report.to_junit();
    assert!(junit.contains("failures=\"0\" errors=\"0\""), "{junit}");
}

#[test]
fn initramfs_boot_passes_the_checks() {
    let Some(setup) = setup("initramfs_boot_passes_the_checks") else { return };
    let spec = setup.initramfs_spec();
    let report = boot(&spec, &plan(&spec, &[]));
    assert_passed(&report);
    assert!(report.checks.iter().any(|c| c.name == "/ is rootfs or tmpfs" && c.passed));
}

#[test]
fn a_panicking_kernel_is_reported_as_a_panic() {
    let Some(setup) = setup("a_panicking_kernel_is_reported_as_a_panic") else { return };
    let mut spec = setup.disk_spec();
    // The last root= wins: the kernel cannot mount its root and panics.
    spec.append.push("root=/dev/doesnotexist".into());
    let report = boot(&spec, &plan(&spec, &[]));
    // Detected from the panic line, not by running into the timeout.
    let failure = boot_failure(&report, BootFailureKind::Panic);
    assert!(failure.message.contains("Kernel panic"), "{}", failure.message);
    assert!(failure.console_tail.iter().any(|l| l.contains("Kernel panic")));
}

#[test]
fn a_bogus_kernel_fails_with_a_clear_message() {
    // Recognised before any VMM starts (QEMU would load the noise and hang), so this needs
    // neither QEMU nor a real kernel or image.
    let tmp = support::tempdir();
    let bogus = tmp.path().join("vmlinuz-bogus");
    std::fs::write(&bogus, pseudo_random_bytes(1 << 20)).unwrap();
    let root = Root::Initramfs(tmp.path().join("rootfs.cpio.gz"));
    let spec = VmSpec::new(Arch::X86_64, bogus.clone(), root, tmp.path().join("console.log"));
    let report = boot(&spec, &plan(&spec, &[]));
    let failure = boot_failure(&report, BootFailureKind::BadKernel);
    assert!(failure.message.contains("is not a kernel image for x86_64"), "{}", failure.message);
    assert!(failure.message.contains(&bogus.display().to_string()), "{}", failure.message);
    assert_eq!(report.vmm_pid, None);
}

#[test]
fn a_wrong_expectation_fails_that_check() {
    let Some(setup) = setup("a_wrong_expectation_fails_that_check") else { return };
    let spec = setup.initramfs_spec();
    // The typed command holds "goodbye" (the console echoes it), the output does not: a
    // match against the echo would wrongly pass.
    let wrong = ExtraCheck {
        name: Some("greeting".into()),
        command: "echo hello; : goodbye".into(),
        expect: "goodbye".into(),
    };
    let right = ExtraCheck { name: None, command: "echo hello".into(), expect: "^hello$".into() };
    let report = boot(&spec, &plan(&spec, &[wrong, right]));
    assert_eq!(report.outcome, Outcome::ChecksFailed(vec!["greeting".into()]), "{report:#?}");
    assert_eq!(report.exit_code(), 1);
    let failed = report.checks.iter().find(|c| c.name == "greeting").unwrap();
    assert_eq!(failed.output, "hello");
    assert!(failed.expected.contains("goodbye"));
    // The guest was still powered off properly after the failure.
    assert!(report.checks.iter().any(|c| c.name == "poweroff" && c.passed));
}

/// Deterministic noise: no kernel image header can appear in it by accident.
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn a_missing_init_is_reported_as_such() {
    let Some(setup) = setup("a_missing_init_is_reported_as_such") else { return };
    let mut spec = setup.disk_spec();
    spec.append.push("init=/sbin/no-such-init".into());
    let report = boot(&spec, &plan(&spec, &[]));
    let failure = boot_failure(&report, BootFailureKind::NoInit);
    assert!(failure.message.contains("no-such-init"), "{}", failure.message);
}

#[test]
fn a_guest_that_never_shows_the_banner_times_out_and_is_killed() {
    let test = "a_guest_that_never_shows_the_banner_times_out_and_is_killed";
    let Some(setup) = setup(test) else { return };
    let mut spec = setup.initramfs_spec();
    // `cat` as init runs happily but never prints the banner: a hang, not a panic.
    spec.append.push("rdinit=/bin/cat".into());
    let timeouts = Timeouts::from_env(spec.accel, Some(20)).unwrap();
    let plan = RunPlan::standard(&spec, "kvmtool-test", timeouts);
    let report = boot(&spec, &plan);
    let failure = boot_failure(&report, BootFailureKind::Timeout);
    assert!(!failure.console_tail.is_empty(), "the console tail must be reported");
    assert!(failure.console_tail.len() <= 50);
}
