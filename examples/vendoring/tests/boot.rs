//! Boots the images `build.rs` made with busyroot's VM runner, as minivmm's own CI would: the
//! disk in check mode (standard checks over the serial console, power-off, `e2fsck`), then the
//! initramfs running one command whose output and exit status come back.
//!
//! The kernel comes from `$BUSYROOT_TEST_KERNEL`. Without it (or without QEMU) the test says
//! why and passes, except in CI (`CI` set), where that is a failure.

use std::path::{Path, PathBuf};

use busyroot::arch::Arch;
use busyroot::vm::{Outcome, Vm};

/// Prints why a test does not run, or fails it in CI, which provides everything.
fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} would be skipped in CI: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
}

#[test]
fn the_image_is_what_the_build_script_reported() {
    let sha256 = busyroot::host::fetch::sha256_file(Path::new(minivmm::ROOTFS_EXT4)).unwrap();
    assert_eq!(sha256, minivmm::ROOTFS_EXT4_SHA256);
    assert!(Path::new(minivmm::ROOTFS_INITRAMFS).is_file());
}

#[test]
fn the_guest_boots_and_passes_the_checks() {
    let test = "the_guest_boots_and_passes_the_checks";
    let Some(kernel) = std::env::var_os("BUSYROOT_TEST_KERNEL").filter(|k| !k.is_empty()) else {
        return skip(
            test,
            "$BUSYROOT_TEST_KERNEL is not set; point it at a kernel for the guest, such as \
             Debian's linux-image-*-cloud-amd64 /boot/vmlinuz-*",
        );
    };
    let arch: Arch = minivmm::GUEST_ARCH.parse().unwrap();
    let qemu = arch.info().qemu;
    if busyroot::host::tools::find_program(qemu).is_none() {
        return skip(test, &format!("`{qemu}` is not installed"));
    }

    // Boots a copy of the disk (the build output stays as built), runs the standard checks,
    // powers off and checks the image with e2fsck.
    let report = Vm::new(arch, PathBuf::from(kernel))
        .disk(minivmm::ROOTFS_EXT4)
        .work_dir(env!("CARGO_TARGET_TMPDIR"))
        .check()
        .unwrap();
    assert_eq!(report.outcome, Outcome::Passed, "{report:#?}");
    assert!(report
        .checks
        .iter()
        .any(|c| c.name == "image is clean after shutdown" && c.passed && c.skipped.is_none()));

    // A command of the hypervisor's own guest tests: its output and exit status come back.
    let out = Vm::new(arch, PathBuf::from(std::env::var_os("BUSYROOT_TEST_KERNEL").unwrap()))
        .initramfs(minivmm::ROOTFS_INITRAMFS)
        .run(["/bin/sh", "-c", "uname -m; exit 3"])
        .unwrap();
    assert_eq!((out.status, out.stdout.trim()), (3, arch.info().uname_m), "{:#?}", out.report);
}
