//! Boots the images `build.rs` made under minivmm's own binary, as minivmm's CI would, with
//! busyroot's VM runner: the disk in check mode (standard checks over the serial console,
//! power-off, `e2fsck`), then the initramfs running one command whose exit status comes back.
//! Once through busyroot's public `Backend` trait, once through the VMM configured under
//! `[workspace.metadata.busyroot.run.vmm.minivmm]` in this crate's Cargo.toml.
//!
//! The kernel comes from `$BUSYROOT_TEST_KERNEL`. Without it (or without QEMU, which minivmm
//! runs underneath) the tests say why and pass, except in CI (`CI` set), where that is a
//! failure.

use std::path::{Path, PathBuf};

use busyroot::arch::Arch;
use busyroot::vm::{Backend, ConsoleMode, Launch, Outcome, Root, RootBus, Vm, VmSpec};

/// Prints why a test does not run, or fails it in CI, which provides everything.
fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} would be skipped in CI: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
}

/// The guest's architecture and kernel, if the tests can boot; else `None` after saying why.
fn guest(test: &str) -> Option<(Arch, PathBuf)> {
    let Some(kernel) = std::env::var_os("BUSYROOT_TEST_KERNEL").filter(|k| !k.is_empty()) else {
        skip(
            test,
            "$BUSYROOT_TEST_KERNEL is not set; point it at a kernel for the guest, such as \
             Debian's linux-image-*-cloud-amd64 /boot/vmlinuz-*",
        );
        return None;
    };
    let arch: Arch = minivmm::GUEST_ARCH.parse().unwrap();
    let qemu = arch.info().qemu;
    if busyroot::host::tools::find_program(qemu).is_none() {
        skip(test, &format!("`{qemu}` (which minivmm runs) is not installed"));
        return None;
    }
    Some((arch, kernel.into()))
}

/// minivmm's binary, which Cargo built for these tests.
const MINIVMM: &str = env!("CARGO_BIN_EXE_minivmm");

/// minivmm as busyroot's backend: its flags for what busyroot decided.
struct MiniVmm(PathBuf);

impl Backend for MiniVmm {
    fn display_name(&self) -> &str {
        "minivmm"
    }

    fn default_program(&self, _arch: Arch) -> PathBuf {
        self.0.clone()
    }

    fn buses(&self) -> &[RootBus] {
        // minivmm attaches its root disk on either; busyroot picks one the kernel has built in.
        &[RootBus::Nvme, RootBus::Virtio]
    }

    fn prepare(&self, spec: &VmSpec, _: ConsoleMode, _: &Path) -> busyroot::Result<Launch> {
        let mut args = vec!["--kernel-image".into(), spec.kernel.clone().into_os_string()];
        match &spec.root {
            Root::Disk { image, bus } => {
                args.extend(["--root-disk".into(), image.into()]);
                args.extend(["--disk-bus".into(), bus.name().into()]);
            }
            Root::Initramfs(cpio) => args.extend(["--initrd".into(), cpio.into()]),
        }
        args.extend(["--kernel-args".into(), spec.kernel_cmdline().into()]);
        args.extend(["--memory-mib".into(), spec.mem_mib.to_string().into()]);
        args.extend(["--cpus".into(), spec.cpus.to_string().into()]);
        Ok(Launch { program: spec.program.clone(), args, files: Vec::new() })
    }
}

/// The disk passes the checks and the initramfs returns a command's status, with `vm`
/// choosing the VMM.
fn boot_both(arch: Arch, kernel: &Path, work: &str, vm: impl Fn(&mut Vm) -> &mut Vm) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(work);
    // Boots a copy of the disk (the build output stays as built), runs the standard checks,
    // powers off and checks the image with e2fsck.
    let mut machine = Vm::new(arch, kernel);
    let report = vm(machine.disk(minivmm::ROOTFS_EXT4).work_dir(dir.join("disk"))).check().unwrap();
    assert_eq!(report.outcome, Outcome::Passed, "{report:#?}");
    assert!(report.root.ends_with(" on nvme") || report.root.ends_with(" on virtio"));
    assert!(report
        .checks
        .iter()
        .any(|c| c.name == "image is clean after shutdown" && c.passed && c.skipped.is_none()));

    // A command of the hypervisor's own guest tests: its output and exit status come back.
    let mut machine = Vm::new(arch, kernel);
    let out = vm(machine.initramfs(minivmm::ROOTFS_INITRAMFS).work_dir(dir.join("initramfs")))
        .run(["/bin/sh", "-c", "uname -m; exit 3"])
        .unwrap();
    assert_eq!((out.status, out.stdout.trim()), (3, arch.info().uname_m), "{:#?}", out.report);
    let console = std::fs::read_to_string(&out.console).unwrap();
    assert!(console.contains("rdinit=/sbin/init"), "{console}");
}

#[test]
fn the_image_is_what_the_build_script_reported() {
    let sha256 = busyroot::host::fetch::sha256_file(Path::new(minivmm::ROOTFS_EXT4)).unwrap();
    assert_eq!(sha256, minivmm::ROOTFS_EXT4_SHA256);
    assert!(Path::new(minivmm::ROOTFS_INITRAMFS).is_file());
}

#[test]
fn the_guest_boots_under_minivmm_through_the_backend_trait() {
    let Some((arch, kernel)) = guest("the_guest_boots_under_minivmm_through_the_backend_trait")
    else {
        return;
    };
    boot_both(arch, &kernel, "trait", |vm| vm.backend(MiniVmm(MINIVMM.into())));
}

#[test]
fn the_guest_boots_under_minivmm_as_configured_in_cargo_toml() {
    let Some((arch, kernel)) = guest("the_guest_boots_under_minivmm_as_configured_in_cargo_toml")
    else {
        return;
    };
    let ws = busyroot::config::Workspace::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    // The configured VMM whose bus has its driver built into the kernel.
    let config = busyroot::vm::KernelConfig::find(&kernel).unwrap();
    let name = match config {
        Some(c) if !c.is_builtin("BLK_DEV_NVME") => "minivmm-virtio",
        _ => "minivmm",
    };
    let (vmm, _) = busyroot::vm::vmm_named(name, &ws.config.run, &ws.root).unwrap();
    // The binary Cargo built for this test, wherever the target directory is; the configured
    // `program` is where `cargo build` puts it by default.
    boot_both(arch, &kernel, "configured", |vm| vm.vmm(vmm.clone(), Some(MINIVMM.into())));
}
