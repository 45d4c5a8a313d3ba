//! `cargo xtask run --runner`: busyroot as Cargo's `runner`, so that `cargo test` runs each
//! test binary in the guest. The binary must be statically linked for the guest's
//! architecture; its directory and the current directory (the package's, where tests find
//! their files) are shared at their own paths, and the variables a test harness reads pass on.

use std::path::{Path, PathBuf};

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::vm::{ShareRequest, Vm};

/// Prefixes of the variables passed on: the test harness's (`RUST_TEST_THREADS`,
/// `RUST_BACKTRACE`, `RUST_LOG`, …) and those Cargo sets for the binary (`CARGO_*`).
const PASSED_ON: [&str; 2] = ["RUST_", "CARGO_"];

/// Shares what `command` (a test binary and its arguments) needs, starts it in the current
/// directory and passes the harness variables on; refuses a binary the guest cannot run.
pub(crate) fn prepare(vm: &mut Vm, arch: Arch, command: &[String]) -> anyhow::Result<()> {
    let binary = Path::new(&command[0]);
    let binary = std::path::absolute(binary)
        .with_context(|| format!("resolve the test binary `{}`", binary.display()))?;
    check_binary(&binary, arch)?;
    let cwd = std::env::current_dir().context("read the current directory")?;
    let bin_dir = binary.parent().context("the test binary has no directory")?.to_path_buf();
    for (dir, readonly) in shares(&cwd, &bin_dir) {
        vm.share_with(ShareRequest { host: dir, guest: None, readonly });
    }
    vm.current_dir(cwd.to_string_lossy());
    for (key, value) in std::env::vars() {
        if PASSED_ON.iter().any(|p| key.starts_with(p)) {
            vm.env(key, value);
        }
    }
    Ok(())
}

/// The directories to share: the current one (read-write), and the binary's unless it lies
/// inside it (read-only).
fn shares(cwd: &Path, bin_dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = vec![(cwd.to_path_buf(), false)];
    if !bin_dir.starts_with(cwd) {
        out.push((bin_dir.to_path_buf(), true));
    }
    out
}

/// Refuses a binary that is not a static ELF program for `arch`, saying how to build one.
fn check_binary(binary: &Path, arch: Arch) -> anyhow::Result<()> {
    let data = std::fs::read(binary)
        .with_context(|| format!("read the test binary `{}`", binary.display()))?;
    let summary = busyroot::host::elf::summary(&data).with_context(|| {
        format!("`{}` is not a 64-bit little-endian ELF program", binary.display())
    })?;
    let triple = arch.info().triple;
    anyhow::ensure!(
        summary.machine == arch.info().elf_machine,
        "`{}` is not built for {arch}; build the tests with `--target {triple}`",
        binary.display()
    );
    anyhow::ensure!(
        !summary.dynamic,
        "`{}` is linked dynamically and the guest has no C library; build the tests statically: \
         RUSTFLAGS='-C target-feature=+crt-static' cargo test --target {triple}",
        binary.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_the_binary_directory_only_outside_the_current_one() {
        let inside = shares(Path::new("/ws/pkg"), Path::new("/ws/pkg/target/debug/deps"));
        assert_eq!(inside, [(PathBuf::from("/ws/pkg"), false)]);
        let outside = shares(Path::new("/ws/pkg"), Path::new("/ws/target/debug/deps"));
        assert_eq!(outside[1], (PathBuf::from("/ws/target/debug/deps"), true));
    }
}
