//! Boots the image `build.rs` made with busyroot's VM runner in check mode, as minivmm's own
//! CI would: to the init banner, the standard checks over the serial console, power-off and
//! `e2fsck` of the disk.
//!
//! The kernel comes from `$BUSYROOT_TEST_KERNEL`. Without it (or without QEMU) the test says
//! why and passes, except in CI (`CI` set), where that is a failure.

use std::path::{Path, PathBuf};

use busyroot::arch::Arch;
use busyroot::vm::{self, AccelRequest, CheckPlan, Outcome, Root, RootBusRequest, Timeouts};
use busyroot::vm::{VmSpec, Vmm};

/// Prints why a test does not run, or fails it in CI, which provides everything.
fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} would be skipped in CI: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
}

#[test]
fn the_image_is_what_the_build_script_reported() {
    let sha256 = busyroot::fetch::sha256_file(Path::new(minivmm::ROOTFS_EXT4)).unwrap();
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
    let kernel = PathBuf::from(kernel);
    let arch: Arch = minivmm::GUEST_ARCH.parse().unwrap();
    let qemu = arch.info().qemu;
    if busyroot::hosttools::find_program(qemu).is_none() {
        return skip(test, &format!("`{qemu}` is not installed"));
    }

    // The guest writes to its disk: boot a copy, so the build output stays as built.
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let disk = scratch.join("boot.ext4");
    std::fs::copy(minivmm::ROOTFS_EXT4, &disk)
        .unwrap_or_else(|e| panic!("cannot copy the image to `{}`: {e}", disk.display()));
    let bus = vm::choose_root_bus(RootBusRequest::Auto, &kernel, Vmm::Qemu).unwrap();
    let accel = vm::choose_accel(AccelRequest::Auto, arch).unwrap();
    eprintln!("root bus {} ({}), accel {} ({})", bus.value, bus.reason, accel.value, accel.reason);
    let root = Root::Disk { image: disk, bus: bus.value };
    let mut spec = VmSpec::new(arch, kernel, root, scratch.join("console.log"));
    spec.accel = accel.value;

    let timeouts = Timeouts::from_env(spec.accel, None).unwrap();
    let plan = CheckPlan::standard(&spec, &vm::RunConfig::default().hostname, timeouts);
    let sh = busyroot::xshell::Shell::new().unwrap();
    let report = vm::boot_check(&sh, &spec, &plan).unwrap();
    assert_eq!(report.outcome, Outcome::Passed, "{report:#?}");
    assert!(report
        .checks
        .iter()
        .any(|c| c.name == "image is clean after shutdown" && c.passed && c.skipped.is_none()));
}
