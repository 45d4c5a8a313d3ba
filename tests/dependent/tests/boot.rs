//! Boots the images busyroot built from its built-in inputs, in check mode, as a dependent's
//! own CI would. The kernel comes from `$BUSYROOT_TEST_KERNEL`; without it (or QEMU) the test
//! says why and passes, except in CI (`CI` set), where that is a failure.

use std::path::PathBuf;

use busyroot::arch::Arch;
use busyroot::vm::{Outcome, Vm};

fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} would be skipped in CI: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
}

#[test]
fn every_input_is_busyroots_built_in_one() {
    let lines: Vec<&str> = dependent::INPUTS.split(';').collect();
    let keys: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(keys, ["busybox.config", "skeleton", "device-table"], "{lines:?}");
    assert!(lines.iter().all(|l| l.contains(": built-in (")), "{lines:?}");
}

#[test]
fn both_images_boot_and_pass_the_checks() {
    let test = "both_images_boot_and_pass_the_checks";
    let Some(kernel) = std::env::var_os("BUSYROOT_TEST_KERNEL").filter(|k| !k.is_empty()) else {
        return skip(test, "$BUSYROOT_TEST_KERNEL is not set; point it at a guest kernel");
    };
    let kernel = PathBuf::from(kernel);
    let arch: Arch = dependent::GUEST_ARCH.parse().unwrap();
    // The disk is booted from a copy, so the build output stays as built; both runs do the
    // standard checks, and the disk is checked with e2fsck after power-off.
    for root in ["disk", "initramfs"] {
        let mut vm = Vm::new(arch, kernel.clone());
        match root {
            "disk" => vm.disk(dependent::ROOTFS_EXT4),
            _ => vm.initramfs(dependent::ROOTFS_CPIO),
        };
        let report = match vm.work_dir(env!("CARGO_TARGET_TMPDIR")).check() {
            Err(busyroot::Error::MissingTools(missing)) => return skip(test, &missing.to_string()),
            report => report.unwrap(),
        };
        assert_eq!(report.outcome, Outcome::Passed, "{root}: {report:#?}");
    }
}
