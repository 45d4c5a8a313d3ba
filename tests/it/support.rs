//! Shared test helpers: the rootfs built once per test run, skipping with a reason, and
//! readers that take the produced images apart with the real tools.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use busyroot::arch::Arch;
use busyroot::config::{Config, Workspace};
use busyroot::context::Context;
use busyroot::host::fetch::FetchOptions;
use busyroot::inputs::Input;
use busyroot::pipeline::rootfs::{Outputs, RootfsBuilder};
use busyroot::progress::Progress;

/// The workspace this test binary belongs to.
pub fn workspace() -> Workspace {
    Workspace::load(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("load the workspace")
}

/// Says why a test does not run, past libtest's capture; a failure in CI.
pub use busyroot::testing::skip;

/// The x86_64 kernel the boot tests use: `$BUSYROOT_TEST_KERNEL` (any kernel), else the one
/// `cargo xtask kernel` built or fetched in this workspace ([`built_test_kernel`]); `Err`
/// holds the reason to skip.
pub fn test_kernel() -> Result<PathBuf, String> {
    if let Some(kernel) = std::env::var_os("BUSYROOT_TEST_KERNEL").filter(|k| !k.is_empty()) {
        return Ok(kernel.into());
    }
    built_test_kernel()
}

/// The x86_64 kernel `cargo xtask kernel` built in this workspace, else the one it fetched
/// (`--distro`): the built one first, so that a run with both always boots the same kernel;
/// `Err` holds the reason to skip, naming the command that un-skips.
pub fn built_test_kernel() -> Result<PathBuf, String> {
    let ws = workspace();
    let layout = busyroot::context::Layout::new(&ws, Arch::X86_64);
    let built = layout.kernel_image();
    let fetched = busyroot::pipeline::distro::installed_kernel(&layout);
    std::iter::once(built).chain(fetched).find(|k| k.is_file()).ok_or_else(|| {
        "no kernel in this workspace; run `cargo xtask kernel --distro debian` (seconds) or \
             `cargo xtask kernel` (a build from source), or set $BUSYROOT_TEST_KERNEL to any \
             x86_64 kernel image"
            .to_string()
    })
}

/// Debian's cloud kernel as `cargo xtask kernel --distro debian` unpacked it in this
/// workspace (`boot/vmlinuz-<release>` beside `lib/modules/<release>`), for the tests that
/// need its modular virtio; `Err` holds the reason to skip.
pub fn debian_cloud_kernel() -> Result<PathBuf, String> {
    let layout = busyroot::context::Layout::new(&workspace(), Arch::X86_64);
    busyroot::pipeline::distro::installed_kernel(&layout).ok_or_else(|| {
        "Debian's cloud kernel is not fetched; run `cargo xtask kernel --distro debian`".into()
    })
}

/// Tests never download: they use the cache and `BUSYROOT_MIRROR` only.
pub fn offline_fetch() -> FetchOptions {
    FetchOptions { offline: true, ..FetchOptions::from_env() }
}

/// Whether the BusyBox tarball can be had offline; `Err` says why not.
pub fn tarball_offline(ws: &Workspace) -> Result<(), String> {
    let opts = offline_fetch();
    let name = ws.config.busybox.source().file_name;
    let in_cache = opts.cache_dir.join(&name).is_file();
    let in_mirror = opts.mirror.as_ref().is_some_and(|m| Path::new(m).join(&name).is_file());
    if in_cache || in_mirror {
        return Ok(());
    }
    Err(format!(
        "`{name}` is neither in the cache `{}` nor in $BUSYROOT_MIRROR; run `cargo xtask rootfs` \
         once with network access (docs/configuration.md, section \"Downloads, offline use and \
         mirrors\")",
        opts.cache_dir.display()
    ))
}

/// Prints each step, so a slow CI log shows where the time went.
pub struct Eprint;

impl Progress for Eprint {
    fn finish(&self, step: &str, elapsed: std::time::Duration, detail: &str) {
        eprintln!("  {step}: {:.2}s {detail}", elapsed.as_secs_f64());
    }
    fn command(&self, line: &str) {
        eprintln!("  $ {line}");
    }
}

/// The x86_64 rootfs of this workspace, built once per test run into its own target
/// directory (as `cargo xtask rootfs` does); `Err` holds the reason to skip.
pub fn rootfs() -> Result<&'static Outputs, String> {
    static BUILT: OnceLock<Result<Outputs, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let ws = workspace();
            tarball_offline(&ws)?;
            let mut ctx = Context::new(ws).unwrap();
            ctx.fetch_options(offline_fetch());
            let builder = RootfsBuilder::new(ctx);
            let sh = xshell::Shell::new().unwrap();
            Ok(builder.build(&sh, &Eprint).expect("build the rootfs"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Runs a program and returns its stdout, panicking with the command and its output on failure.
pub fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let path = busyroot::host::tools::find_program(program)
        .unwrap_or_else(|| panic!("`{program}` is not installed"));
    let sh = xshell::Shell::new().unwrap();
    let mut cmd = xshell::cmd!(sh, "{path} {args...}").quiet().ignore_status();
    if let Some(bytes) = stdin {
        cmd = cmd.stdin(bytes);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether a host program is available.
pub fn have(program: &str) -> bool {
    busyroot::host::tools::find_program(program).is_some()
}

/// A copy of `src` at `dst` (directories recursively, symlinks as symlinks).
pub fn copy_tree(src: &Path, dst: &Path) {
    let meta = std::fs::symlink_metadata(src).unwrap();
    if meta.is_dir() {
        std::fs::create_dir_all(dst).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &dst.join(entry.file_name()));
        }
    } else if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src).unwrap(), dst).unwrap();
    } else {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    }
}

/// A temporary directory that is removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `ws`'s configuration with every rootfs input named by its path relative to the workspace
/// root, so that a copy of the tree at another root uses its own copies of the inputs (an
/// unset key would mean busyroot's built-in files, wherever the workspace is).
pub fn explicit_inputs(ws: &Workspace) -> Config {
    let mut config = ws.config.clone();
    let inputs = ws.rootfs_inputs().unwrap();
    let relative = |input: &Input| input.path.strip_prefix(&ws.root).unwrap().to_path_buf();
    config.busybox.config = Some(relative(&inputs.busybox_config));
    config.skeleton = Some(inputs.skeleton.iter().map(relative).collect());
    config.overlays = inputs.overlays.iter().map(relative).collect();
    config.device_table = Some(inputs.device_tables.iter().map(relative).collect());
    config
}

/// A copy of the build inputs at a new path, with its own target directory: another checkout.
pub fn checkout_copy(ws: &Workspace, root: &Path) -> Workspace {
    let inputs = ws.rootfs_inputs().unwrap();
    for input in inputs.all() {
        copy_tree(&input.path, &root.join(input.path.strip_prefix(&ws.root).unwrap()));
    }
    let config = explicit_inputs(ws);
    Workspace { root: root.to_path_buf(), target_dir: root.join("target"), config }
}

/// Another checkout whose BusyBox is already built: the inputs are copied and so is the build
/// tree of [`rootfs`], so only the stages a test provokes do real work. `Err` holds the reason
/// to skip.
pub fn built_checkout(root: &Path) -> Result<Workspace, String> {
    let outputs = rootfs()?;
    let ws = checkout_copy(&workspace(), root);
    copy_busybox_build(outputs, &ws.target_dir);
    Ok(ws)
}

/// Copies the BusyBox build of `outputs` (its stamps, install tree and built source) into the
/// same architecture's directory under the target directory `target`.
pub fn copy_busybox_build(outputs: &Outputs, target: &Path) {
    let dest = target.join("busyroot").join(outputs.dir.file_name().unwrap());
    std::fs::create_dir_all(&dest).unwrap();
    let busybox = std::fs::read_dir(&outputs.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("busybox-") && p.is_dir())
        .unwrap();
    let (stamps, install) = (outputs.dir.join("stamps"), outputs.dir.join("install"));
    // `cp -a` keeps the modification times, so make finds the copied objects up to date.
    let sh = xshell::Shell::new().unwrap();
    xshell::cmd!(sh, "cp -a {stamps} {install} {busybox} {dest}").quiet().run().unwrap();
}

/// [`built_checkout`] in `dir/checkout` for `test`; `None` after saying why the test skips.
pub fn built_checkout_in(test: &str, dir: &Path) -> Option<Workspace> {
    or_skip(test, built_checkout(&dir.join("checkout")))
}

/// The VMM with process id `pid`, if one was started, is neither running nor a zombie.
pub fn assert_no_process(pid: Option<u32>) {
    let Some(pid) = pid else { return };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty(), "process {pid} is still there: {stat}");
}

/// `ready`'s value, or `None` after saying why the test does not run (the reason in its `Err`).
pub fn or_skip<T>(test: &str, ready: Result<T, String>) -> Option<T> {
    ready.map_err(|reason| skip(test, &reason)).ok()
}

/// `kernel` if QEMU for x86_64 is installed too, or `None` after saying why the test does not
/// run (the reason in `kernel`'s `Err`, or QEMU's absence).
pub fn with_qemu(test: &str, kernel: Result<PathBuf, String>) -> Option<PathBuf> {
    let ready = kernel.and_then(|kernel| match have(Arch::X86_64.info().qemu) {
        true => Ok(kernel),
        false => Err("qemu-system-x86_64 is not installed (package qemu-system-x86)".into()),
    });
    or_skip(test, ready)
}

/// [`rootfs`], or `None` after saying why the test does not run.
pub fn rootfs_or_skip(test: &str) -> Option<&'static Outputs> {
    or_skip(test, rootfs().map_err(|reason| format!("no rootfs: {reason}")))
}

/// What booting the x86_64 image with [`test_kernel`] needs: the kernel's path (with QEMU
/// there to boot it) and the rootfs, or `None` after saying why the test does not run.
pub fn test_kernel_and_rootfs(test: &str) -> Option<(PathBuf, &'static Outputs)> {
    Some((with_qemu(test, test_kernel())?, rootfs_or_skip(test)?))
}

/// [`test_kernel_and_rootfs`] with the kernel `cargo xtask kernel` built or fetched.
pub fn built_kernel_and_rootfs(test: &str) -> Option<(PathBuf, &'static Outputs)> {
    Some((with_qemu(test, built_test_kernel())?, rootfs_or_skip(test)?))
}
