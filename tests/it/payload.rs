//! Payload tests: a command run in the guest (`cargo xtask run -- CMD` through the library's
//! `Vm`), its streams and exit status, a forged status line, a command timeout, TAP output,
//! read-only shares, and a missing program refused before any VM starts.
//!
//! They boot the x86_64 kernel `cargo xtask kernel` builds (it has 9p built in), with the
//! test program `tests/guest/prog.c` compiled statically by the host's gcc and shared.

use std::path::{Path, PathBuf};
use std::time::Duration;

use busyroot::arch::Arch;
use busyroot::image::Format;
use busyroot::vm::{Outcome, ShareRequest, Vm};

use super::support;

struct Setup {
    kernel: PathBuf,
    cpio: PathBuf,
    ext4: PathBuf,
    guest_dir: tempfile::TempDir,
}

fn setup(test: &str) -> Option<Setup> {
    let (kernel, outputs) = support::built_kernel_and_rootfs(test)?;
    let guest_dir = support::tempdir();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest");
    let prog = guest_dir.path().join("prog");
    support::run(
        "gcc",
        &["-static", "-O2", "-o", prog.to_str().unwrap(), source.join("prog.c").to_str().unwrap()],
        None,
    );
    std::fs::copy(source.join("tap.sh"), guest_dir.path().join("tap.sh")).unwrap();
    Some(Setup {
        kernel,
        cpio: outputs.path(Format::CpioGz).to_path_buf(),
        ext4: outputs.path(Format::Ext4).to_path_buf(),
        guest_dir,
    })
}

impl Setup {
    fn vm(&self) -> Vm {
        let mut vm = Vm::new(Arch::X86_64, &self.kernel);
        vm.initramfs(&self.cpio).share(self.guest_dir.path()).size(256, 1);
        vm
    }

    fn prog(&self) -> String {
        self.guest_dir.path().join("prog").display().to_string()
    }
}

#[test]
fn exit_statuses_and_streams_come_back_exactly() {
    let Some(setup) = setup("exit_statuses_and_streams_come_back_exactly") else { return };
    for status in [0, 1, 3, 255] {
        let out = setup.vm().run([setup.prog(), status.to_string()]).unwrap();
        assert_eq!(out.status, status, "{:#?}", out.report);
        assert_eq!(out.report.outcome, Outcome::Passed);
        assert_eq!(
            out.stdout,
            format!("hello from prog on x86_64\narg 1: {status}\n"),
            "stdout holds the payload's lines and nothing else"
        );
        assert_eq!(out.stderr, "prog: this line goes to stderr\n");
        support::assert_no_process(out.report.vmm_pid);
    }
}

#[test]
fn a_forged_status_line_does_not_change_the_verdict() {
    let Some(setup) = setup("a_forged_status_line_does_not_change_the_verdict") else { return };
    // The program prints status lines with 143 guessed tags, on stdout and on the console
    // itself, then exits 3.
    let out = setup.vm().run([setup.prog(), "3".into(), "forge".into()]).unwrap();
    assert_eq!(out.status, 3, "{:#?}", out.report.outcome);
    assert!(out.stdout.contains("br0 s 1000 0\nbr0 ready\n"), "forged lines stay output");
}

#[test]
fn a_disk_boot_runs_the_command_too() {
    let Some(setup) = setup("a_disk_boot_runs_the_command_too") else { return };
    let mut vm = setup.vm();
    vm.disk(&setup.ext4);
    let out = vm.run(["/bin/sh", "-c", "grep -c ' / ext4 ' /proc/mounts; exit 7"]).unwrap();
    assert_eq!((out.status, out.stdout.as_str()), (7, "1\n"), "{:#?}", out.report);
}

#[test]
fn a_command_past_its_timeout_is_killed_with_the_vm() {
    let Some(setup) = setup("a_command_past_its_timeout_is_killed_with_the_vm") else { return };
    let mut vm = setup.vm();
    vm.command_timeout(Duration::from_secs(3));
    let out = vm.run(["/bin/sh", "-c", "echo started; sleep 600"]).unwrap();
    assert_eq!(out.report.outcome, Outcome::CommandTimedOut);
    assert_eq!(out.status, busyroot::vm::EXIT_COMMAND_TIMEOUT);
    assert_eq!(out.stdout, "started\n", "the output so far is kept");
    assert_eq!(out.report.to_json()["verdict"], "command-timeout");
    support::assert_no_process(out.report.vmm_pid);
    // A failed run keeps its console log, and only that, in the directory it made.
    let dir = out.console.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["console.log"], "in {}", dir.display());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tap_output_becomes_one_case_per_test_point() {
    let Some(setup) = setup("tap_output_becomes_one_case_per_test_point") else { return };
    let script = setup.guest_dir.path().join("tap.sh").display().to_string();
    let mut vm = setup.vm();
    vm.tap(true);
    let out = vm.run([script]).unwrap();
    assert_eq!(out.status, 0, "{:#?}", out.report);
    let tap = out.report.command.as_ref().unwrap().tap.as_ref().unwrap();
    assert_eq!(tap.cases.len(), 4, "{tap:#?}");
    let junit = out.report.to_junit();
    assert!(junit.contains("classname=\"busyroot.tap\" name=\"proc is mounted\""), "{junit}");
    assert!(junit.contains("<failure message=\"not ok 3\""), "{junit}");
    assert!(junit.contains("<skipped message=\"no such device\""), "{junit}");
}

#[test]
fn a_read_only_share_refuses_writes() {
    let Some(setup) = setup("a_read_only_share_refuses_writes") else { return };
    let mut vm = Vm::new(Arch::X86_64, &setup.kernel);
    let ro = ShareRequest {
        host: setup.guest_dir.path().into(),
        guest: Some("/mnt/ro".into()),
        readonly: true,
    };
    vm.initramfs(&setup.cpio).share_with(ro).size(256, 1);
    let out = vm.run(["/bin/sh", "-c", "test -x /mnt/ro/prog && touch /mnt/ro/new"]).unwrap();
    assert_eq!(out.status, 1, "{:#?}", out.report);
    assert!(out.stderr.contains("Read-only file system"), "{}", out.stderr);
    assert!(!setup.guest_dir.path().join("new").exists());
}

#[test]
fn a_missing_program_is_refused_before_booting() {
    // Needs the rootfs (for its listing) but no VM: the refusal comes first.
    let test = "a_missing_program_is_refused_before_booting";
    let Some(outputs) = support::rootfs_or_skip(test) else { return };
    let tmp = support::tempdir();
    let kernel = tmp.path().join("bzImage");
    std::fs::write(&kernel, b"not looked at").unwrap();
    let mut vm = Vm::new(Arch::X86_64, &kernel);
    vm.initramfs(outputs.path(Format::CpioGz)).share(tmp.path()).work_dir(tmp.path().join("run"));
    let err = vm.run(["/opt/tests/run-me", "--quick"]).unwrap_err().to_string();
    assert!(err.contains("`/opt/tests/run-me` is not in the guest"), "{err}");
    assert!(err.contains("rootfs.tar"), "{err}");
    assert!(err.contains("share the host directory"), "{err}");
    assert!(!tmp.path().join("run/console.log").exists(), "no VM was started");
    // A program in the image passes the same check (then fails to boot the fake kernel).
    let report = vm.run(["uname", "-r"]).unwrap().report;
    assert!(matches!(report.outcome, Outcome::BootFailed(_)), "{report:#?}");
}

#[test]
fn overlays_reach_the_disk_and_the_initramfs_and_leave_the_image_as_built() {
    let Some(setup) =
        setup("overlays_reach_the_disk_and_the_initramfs_and_leave_the_image_as_built")
    else {
        return;
    };
    let tree = support::tempdir();
    std::fs::create_dir_all(tree.path().join("opt/t")).unwrap();
    std::fs::write(tree.path().join("opt/t/hello"), "#!/bin/sh\necho hello from the overlay\n")
        .unwrap();
    let mut perms = std::fs::metadata(tree.path().join("opt/t/hello")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(tree.path().join("opt/t/hello"), perms).unwrap();
    // A tar overlay over the tree: replaces /etc/hostname for this run only.
    let etc = support::tempdir();
    std::fs::create_dir(etc.path().join("etc")).unwrap();
    std::fs::write(etc.path().join("etc/hostname"), "overlaid\n").unwrap();
    let tar = tree.path().join("../etc-overlay.tar");
    support::run(
        "tar",
        &["-C", etc.path().to_str().unwrap(), "-cf", tar.to_str().unwrap(), "etc"],
        None,
    );
    let before = busyroot::host::fetch::sha256_file(&setup.ext4).unwrap();
    for disk in [false, true] {
        let mut vm = Vm::new(Arch::X86_64, &setup.kernel);
        if disk {
            vm.disk(&setup.ext4);
        } else {
            vm.initramfs(&setup.cpio);
        }
        vm.overlay(tree.path()).overlay(&tar).size(256, 1);
        let out = vm
            .run(["/bin/sh", "-c", "/opt/t/hello; cat /etc/hostname; stat -c %u:%g /opt/t/hello"])
            .unwrap();
        assert_eq!(out.status, 0, "{:#?}", out.report);
        assert_eq!(out.stdout, "hello from the overlay\noverlaid\n0:0\n", "disk: {disk}");
    }
    std::fs::remove_file(&tar).unwrap();
    assert_eq!(
        busyroot::host::fetch::sha256_file(&setup.ext4).unwrap(),
        before,
        "the image stays as built"
    );
}

#[test]
fn a_distribution_kernel_loads_its_modules_for_a_virtiofs_share() {
    // Debian's cloud kernel (`cargo xtask kernel --distro debian`): virtio-pci, fuse and
    // virtiofs are modules, delivered from the package's own tree into the boot copy of the disk.
    let test = "a_distribution_kernel_loads_its_modules_for_a_virtiofs_share";
    let Some(kernel) = support::or_skip(test, support::debian_cloud_kernel()) else { return };
    let root = kernel.parent().and_then(Path::parent).unwrap().to_path_buf();
    if !root.join("lib/modules").is_dir() {
        return support::skip(test, &format!("no lib/modules beside `{}`", kernel.display()));
    }
    if busyroot::vm::find_virtiofsd().is_none() {
        return support::skip(
            test,
            "virtiofsd is not installed (cargo install virtiofsd --locked)",
        );
    }
    let Some(setup) = setup(test) else { return };
    let mut vm = Vm::new(Arch::X86_64, &kernel);
    vm.disk(&setup.ext4).modules(&root).share(setup.guest_dir.path()).size(256, 1);
    let out = vm.run([setup.prog(), "3".into()]).unwrap();
    assert_eq!(out.status, 3, "{:#?}", out.report);
    assert!(out.stdout.starts_with("hello from prog on x86_64\n"), "{}", out.stdout);
}

#[test]
fn a_module_the_guest_refuses_is_a_setup_failure_naming_it() {
    // The virtio modules of Debian's cloud kernel, with virtio_console.ko changed (marked an
    // executable instead of a relocatable object, which also breaks its signature): the host
    // reads its .modinfo as before, the guest kernel refuses it, and the payload init says
    // which module and why before any port exists; a set-up failure, and no command ran.
    let test = "a_module_the_guest_refuses_is_a_setup_failure_naming_it";
    let Some(kernel) = support::or_skip(test, support::debian_cloud_kernel()) else { return };
    let Some(setup) = setup(test) else { return };
    let release = kernel.file_name().unwrap().to_str().unwrap().trim_start_matches("vmlinuz-");
    let from = kernel.parent().and_then(Path::parent).unwrap().join("lib/modules").join(release);
    let copy = support::tempdir();
    let to = copy.path().join("lib/modules").join(release);
    let modules =
        ["char/virtio_console", "virtio/virtio", "virtio/virtio_ring", "virtio/virtio_pci"];
    let helpers = ["virtio/virtio_pci_modern_dev", "virtio/virtio_pci_legacy_dev"];
    for module in modules.into_iter().chain(helpers) {
        let file = Path::new("kernel/drivers").join(format!("{module}.ko"));
        std::fs::create_dir_all(to.join(&file).parent().unwrap()).unwrap();
        std::fs::copy(from.join(&file), to.join(&file)).unwrap();
    }
    let console = to.join("kernel/drivers/char/virtio_console.ko");
    let mut bytes = std::fs::read(&console).unwrap();
    assert_eq!(bytes[16..18], [1, 0], "ET_REL");
    bytes[16] = 2;
    std::fs::write(&console, bytes).unwrap();

    let mut vm = Vm::new(Arch::X86_64, &kernel);
    // A failed run keeps its console log: in a directory the test removes.
    vm.initramfs(&setup.cpio).modules(copy.path()).work_dir(copy.path().join("run"));
    let out = vm.run(["true"]).unwrap();
    let Outcome::SetupFailed(message) = &out.report.outcome else {
        panic!("not a set-up failure: {:#?}", out.report);
    };
    let line = "busyroot init: insmod /lib/modules/";
    assert!(message.contains(line) && message.contains("virtio_console.ko failed ("), "{message}");
    assert_eq!(out.report.command.as_ref().and_then(|c| c.status), None);
    assert_eq!(out.report.exit_code(), 125, "the command did not run");
}
