//! Cross builds: every architecture other than the host's builds its root filesystem with
//! Debian's cross compiler, the image holds a static BusyBox for that architecture, and each
//! architecture's outputs live apart, so building one leaves the others fresh.
//!
//! Booting the cross images needs their kernels, which take minutes to build; `.ci/run` does
//! that with `cargo xtask kernel --arch …` and `cargo xtask run --check --arch …`.

use busyroot::arch::Arch;
use busyroot::context::Context;
use busyroot::image::Format;
use busyroot::pipeline::busybox::Toolchain;
use busyroot::pipeline::rootfs::{Outputs, RootfsBuilder};
use xshell::Shell;

use crate::support::{self, skip, Eprint};

/// What `readelf -h` calls each architecture's machine: an oracle independent of the
/// library's own table.
fn readelf_machine(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "Advanced Micro Devices X86-64",
        Arch::Aarch64 => "AArch64",
        Arch::Riscv64 => "RISC-V",
    }
}

fn build(sh: &Shell, arch: Arch) -> Outputs {
    let mut ctx = Context::for_arch(support::workspace(), arch);
    ctx.fetch_options(support::offline_fetch());
    RootfsBuilder::new(ctx)
        .build(sh, &Eprint)
        .unwrap_or_else(|e| panic!("build the {arch} rootfs: {e}"))
}

#[test]
fn each_cross_arch_builds_a_static_busybox_of_its_own_and_leaves_the_others_fresh() {
    let test = "each_cross_arch_builds_a_static_busybox_of_its_own_and_leaves_the_others_fresh";
    if busyroot::testing::slow(test) {
        return;
    }
    let ws = support::workspace();
    let Some(()) = support::or_skip(test, support::tarball_offline(&ws)) else { return };
    if !support::have("readelf") || !support::have("debugfs") {
        return skip(test, "readelf (binutils) or debugfs (e2fsprogs) is not installed");
    }
    let sh = Shell::new().unwrap();
    let mut built = Vec::new();
    for arch in Arch::ALL.into_iter().filter(|&a| Arch::host() != Some(a)) {
        if let Err(e) = Toolchain::find_for_busybox(&sh, arch, None) {
            skip(&format!("{test} for {arch}"), &e.to_string());
            continue;
        }
        let outputs = build(&sh, arch);
        assert!(outputs.dir.ends_with(format!("busyroot/{arch}")), "{}", outputs.dir.display());

        // The BusyBox in the image that boots, read back with the real tools.
        let tmp = support::tempdir();
        let busybox = tmp.path().join("busybox");
        let dump = format!("dump /bin/busybox {}", busybox.display());
        support::run("debugfs", &["-R", &dump, outputs.path(Format::Ext4).to_str().unwrap()], None);
        let header = support::run("readelf", &["-h", "-l", busybox.to_str().unwrap()], None);
        let machine = header.lines().find(|l| l.trim_start().starts_with("Machine:")).unwrap();
        assert!(machine.ends_with(readelf_machine(arch)), "{arch}: {machine}");
        assert!(header.contains("ELF64"), "{arch}: not a 64-bit program:\n{header}");
        assert!(
            !header.contains("program interpreter"),
            "{arch}: BusyBox is dynamically linked:\n{header}"
        );
        built.push((arch, outputs));
    }

    // Every arch's build again: all stages fresh, the same files. Had one arch's build
    // touched another's stamps or outputs, some stage would rerun here.
    for (arch, first) in &built {
        let again = build(&sh, *arch);
        let stale: Vec<_> = again.stages.iter().filter(|s| !s.fresh()).collect();
        assert!(stale.is_empty(), "{arch} is no longer fresh: {stale:?}");
        let sums = |o: &Outputs| o.files.iter().map(|f| f.sha256.clone()).collect::<Vec<_>>();
        assert_eq!(sums(&again), sums(first), "{arch}");
    }
}
