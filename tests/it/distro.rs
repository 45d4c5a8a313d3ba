//! A distribution's kernel by name: Debian's cloud kernel package, once `cargo xtask kernel
//! --distro debian` has cached it, unpacks offline into a fresh layout with its modules, and a
//! `--share` boot loads those modules without being told where they are.

use busyroot::arch::Arch;
use busyroot::context::Layout;
use busyroot::image::Format;
use busyroot::pipeline::distro::{self, Distro};
use busyroot::vm::Vm;

use crate::support::{self, skip};

#[test]
fn the_cached_debian_kernel_unpacks_offline_with_its_modules_beside_it() {
    let test = "the_cached_debian_kernel_unpacks_offline_with_its_modules_beside_it";
    let opts = support::offline_fetch();
    let record = opts.cache_dir.join("debian-kernel-amd64.txt");
    if !record.is_file() {
        let reason = "Debian's cloud kernel is not in the cache; run `cargo xtask kernel --distro \
                      debian` once online";
        return skip(test, reason);
    }
    let tmp = support::tempdir();
    let mut ws = support::workspace();
    ws.target_dir = tmp.path().join("target");
    let layout = Layout::new(&ws, Arch::X86_64);
    let sh = xshell::Shell::new().unwrap();
    let first =
        distro::fetch_kernel(&sh, &layout, Distro::Debian, &opts, &support::Eprint).unwrap();
    assert!(!first.fresh);
    assert!(first.image.starts_with(layout.distro_kernel("debian").join("boot")));
    let release = first.image.file_name().unwrap().to_string_lossy().replace("vmlinuz-", "");
    assert!(release.ends_with("-cloud-amd64"), "{release}");
    let modules = busyroot::vm::beside_kernel(&first.image).expect("modules beside the image");
    assert!(modules.join("kernel/fs/fuse/virtiofs.ko").is_file(), "{}", modules.display());
    let tree = busyroot::vm::ModuleTree::open_dir(&modules).unwrap();
    assert_eq!(tree.check_kernel(&first.image).unwrap().as_deref(), Some(release.as_str()));
    assert_eq!(distro::installed_kernel(&layout).as_deref(), Some(first.image.as_path()));

    // The second time nothing is unpacked again.
    let again =
        distro::fetch_kernel(&sh, &layout, Distro::Debian, &opts, &support::Eprint).unwrap();
    assert!(again.fresh);
    assert_eq!(again.image, first.image);
}

#[test]
fn a_share_with_the_fetched_debian_kernel_needs_no_modules_flag() {
    let test = "a_share_with_the_fetched_debian_kernel_needs_no_modules_flag";
    let Some(kernel) = support::with_qemu(test, support::debian_cloud_kernel()) else { return };
    if busyroot::vm::find_virtiofsd().is_none() {
        let reason = "the Rust virtiofsd is not installed; run `apt-get install libseccomp-dev \
                      libcap-ng-dev && cargo install virtiofsd --locked`";
        return skip(test, reason);
    }
    let Some(outputs) = support::or_skip(test, support::rootfs()) else { return };
    let shared = support::tempdir();
    std::fs::write(shared.path().join("greeting"), "hello through virtiofs\n").unwrap();
    let file = shared.path().join("greeting").display().to_string();
    let mut vm = Vm::new(Arch::X86_64, &kernel);
    vm.disk(outputs.path(Format::Ext4)).share(shared.path());
    let out = vm.run(["/bin/cat", file.as_str()]).unwrap();
    assert_eq!(out.status, 0, "{:#?}", out.report);
    assert_eq!(out.stdout, "hello through virtiofs\n");
}
