//! Boots the images busyroot built from its built-in inputs, in check mode, as a dependent's
//! own CI would. The kernel comes from `$BUSYROOT_TEST_KERNEL`; without it (or QEMU) the test
//! says why and passes, except in CI (`CI` set), where that is a failure.

use std::path::{Path, PathBuf};

use busyroot::arch::Arch;
use busyroot::vm::{self, AccelRequest, CheckPlan, Outcome, Root, RootBusRequest, Timeouts};
use busyroot::vm::{VmSpec, Vmm};

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
    if busyroot::hosttools::find_program(arch.info().qemu).is_none() {
        return skip(test, &format!("`{}` is not installed", arch.info().qemu));
    }
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let accel = vm::choose_accel(AccelRequest::Auto, arch).unwrap().value;
    let bus = vm::choose_root_bus(RootBusRequest::Auto, &kernel, Vmm::Qemu).unwrap().value;
    // The guest writes to its disk: boot a copy, so the build output stays as built.
    let disk = scratch.join("boot.ext4");
    std::fs::copy(dependent::ROOTFS_EXT4, &disk).unwrap();
    let roots = [
        ("disk", Root::Disk { image: disk, bus }),
        ("initramfs", Root::Initramfs(PathBuf::from(dependent::ROOTFS_CPIO))),
    ];
    let sh = busyroot::xshell::Shell::new().unwrap();
    for (name, root) in roots {
        let log = scratch.join(format!("console-{name}.log"));
        let mut spec = VmSpec::new(arch, kernel.clone(), root, log);
        spec.accel = accel;
        let timeouts = Timeouts::from_env(spec.accel, None).unwrap();
        let plan = CheckPlan::standard(&spec, &vm::RunConfig::default().hostname, timeouts);
        let report = vm::boot_check(&sh, &spec, &plan).unwrap();
        assert_eq!(report.outcome, Outcome::Passed, "{name}: {report:#?}");
    }
}
