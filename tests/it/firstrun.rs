//! What a new user meets first: a skipped test says so on the terminal, and the smallest
//! `"auto"` image boots with the kernel `cargo xtask kernel` built (or fetched), passes every
//! check, and the boot adds no file to the image (`/dev` lives in memory).

use busyroot::arch::Arch;
use busyroot::config::ImageSizeSetting;
use busyroot::context::Context;
use busyroot::image::Format;
use busyroot::pipeline::rootfs::RootfsBuilder;
use busyroot::vm::{
    self, AccelRequest, Outcome, Root, RootBusRequest, RunPlan, Timeouts, VmSpec, Vmm,
};

use crate::support::{self, run, skip};

/// The `used/total files` of `e2fsck -fn` on `image`.
fn e2fsck_files(image: &std::path::Path) -> (u64, u64) {
    let out = run("e2fsck", &["-fn", image.to_str().unwrap()], None);
    let re = regex::Regex::new(r"(\d+)/(\d+) files").unwrap();
    let caps = re.captures(&out).unwrap_or_else(|| panic!("no file count in: {out}"));
    (caps[1].parse().unwrap(), caps[2].parse().unwrap())
}

#[test]
fn the_smallest_auto_image_boots_with_the_built_kernel_and_gains_no_files() {
    let test = "the_smallest_auto_image_boots_with_the_built_kernel_and_gains_no_files";
    let Some(kernel) = support::with_qemu(test, support::built_test_kernel()) else { return };
    if !support::have("e2fsck") {
        return skip(test, "e2fsck is not installed (package e2fsprogs)");
    }
    let tmp = support::tempdir();
    let Some(mut ws) = support::built_checkout_in(test, tmp.path()) else { return };
    ws.config.image.size = ImageSizeSetting::Auto;
    let mut ctx = Context::new(ws).unwrap();
    ctx.fetch_options(support::offline_fetch());
    let builder = RootfsBuilder::new(ctx);
    let sh = xshell::Shell::new().unwrap();
    let outputs = builder.build(&sh, &support::Eprint).expect("build the auto-sized rootfs");

    // The guest writes to the disk: boot a copy.
    let image = tmp.path().join("boot.ext4");
    std::fs::copy(outputs.path(Format::Ext4), &image).unwrap();
    let (built_files, inodes) = e2fsck_files(&image);
    let size_mib = std::fs::metadata(&image).unwrap().len() >> 20;
    eprintln!("auto image: {size_mib} MiB, {built_files}/{inodes} files");

    let bus = vm::choose_root_bus(RootBusRequest::Auto, &kernel, Vmm::Qemu).unwrap();
    let root = Root::Disk { image: image.clone(), bus: bus.value };
    let mut spec = VmSpec::new(Arch::X86_64, kernel, root, tmp.path().join("console.log"));
    spec.accel = vm::choose_accel(AccelRequest::Auto, Arch::X86_64).unwrap().value;
    let timeouts = Timeouts::from_env(spec.accel, None).unwrap();
    let plan = RunPlan::standard(&spec, &vm::RunConfig::default().hostname, timeouts);
    let report = vm::run(&sh, &spec, &plan, &vm::Quiet).unwrap();
    assert_eq!(report.outcome, Outcome::Passed, "{report:#?}");

    let (booted_files, _) = e2fsck_files(&image);
    assert_eq!(
        booted_files, built_files,
        "the boot changed the number of files in the image (device nodes written to /dev?)"
    );
}

/// libtest hides what a passing test prints; a skip's reason must still be seen. The test
/// runs itself again as a child (`BUSYROOT_TEST_SKIP_CHILD`) that only skips, and reads the
/// child's output.
#[test]
fn a_skipped_test_says_so_although_it_passes() {
    let name = "a_skipped_test_says_so_although_it_passes";
    if std::env::var_os("BUSYROOT_TEST_SKIP_CHILD").is_some() {
        return skip(name, "the parent test asked it to");
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(&exe)
        .args(["--exact", &format!("firstrun::{name}"), "--test-threads=1"])
        .env("BUSYROOT_TEST_SKIP_CHILD", "1")
        .env_remove("CI")
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{} firstrun::{name}` failed:\n{text}", exe.display());
    assert!(text.contains(&format!("test firstrun::{name} ... ok")), "{text}");
    assert!(
        text.contains(&format!("skipping {name}: the parent test asked it to")),
        "the skip is not shown:\n{text}"
    );
}
