//! BusyBox: find the C compiler, unpack, configure (`make oldconfig`), build and install.
//!
//! Invariant: the checked-in `.config` is the truth. The build tree's `.config` is a copy, and
//! when `make oldconfig` would change a set option the build stops instead of patching it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

use crate::arch::Arch;
use crate::error::{Error, IoContext, Result};
use crate::host::exec::run_logged;
use crate::host::kconfig::set_options;
use crate::progress::Progress;

pub use crate::host::toolchain::Toolchain;

/// One BusyBox build tree for one architecture.
#[derive(Debug, Clone)]
pub struct BusyboxBuild {
    /// The unpacked source, built in place (`<target>/busyroot/<arch>/busybox-<version>`).
    pub src: PathBuf,
    /// Where `make install` puts the result.
    pub install_dir: PathBuf,
    /// The full make log.
    pub log: PathBuf,
    /// Compiler to use.
    pub toolchain: Toolchain,
    /// `SOURCE_DATE_EPOCH` for the build.
    pub source_date_epoch: u64,
}

impl BusyboxBuild {
    fn make<'a>(&self, sh: &'a Shell, target: &str) -> xshell::Cmd<'a> {
        let src = &self.src;
        let jobs = format!("-j{}", std::thread::available_parallelism().map_or(2, |n| n.get()));
        let cross = format!("CROSS_COMPILE={}", self.toolchain.cross_compile);
        cmd!(sh, "make -C {src} {jobs} {cross} {target}")
            .env("KCONFIG_NOTIMESTAMP", "1")
            .env("SOURCE_DATE_EPOCH", self.source_date_epoch.to_string())
            .env("KBUILD_BUILD_TIMESTAMP", format!("@{}", self.source_date_epoch))
            .env("LC_ALL", "C")
    }

    /// Unpacks `tarball` unless the tree already holds this exact tarball's contents.
    /// Returns whether it unpacked.
    pub fn unpack(&self, tarball: &Path, sha256: &str) -> Result<bool> {
        let stamp = self.src.join(".busyroot-tarball-sha256");
        if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == sha256) {
            return Ok(false);
        }
        let scratch = crate::host::fs::temp_path(&self.src);
        crate::host::extract::unpack(tarball, &scratch)?;
        // The tarball holds one top-level directory (busybox-<version>/); it becomes `src`.
        let top = crate::host::extract::single_top_dir(&scratch, tarball)?;
        fs::write(top.join(".busyroot-tarball-sha256"), sha256).with_path("write", &stamp)?;
        if self.src.exists() {
            fs::remove_dir_all(&self.src).with_path("remove", &self.src)?;
        }
        fs::rename(&top, &self.src).with_path("rename into", &self.src)?;
        fs::remove_dir_all(&scratch).with_path("remove", &scratch)?;
        Ok(true)
    }

    /// Copies the checked-in `.config` into the tree, runs `make oldconfig` non-interactively
    /// and fails if that changed any set option.
    pub fn configure(&self, sh: &Shell, checked_in: &Path, progress: &dyn Progress) -> Result<()> {
        let wanted = fs::read_to_string(checked_in).with_path("read", checked_in)?;
        let wanted_opts = set_options(&wanted);
        if wanted_opts.get("CONFIG_STATIC").map(String::as_str) != Some("y") {
            return Err(Error::Config {
                path: checked_in.to_path_buf(),
                message: "CONFIG_STATIC is not `y`: the image has no C library, so BusyBox \
                          must be linked statically; set it with `cargo xtask menuconfig` \
                          (Settings → Build static binary)"
                    .into(),
            });
        }
        let dot_config = self.src.join(".config");
        // Rewriting an identical .config would only cost make a reconfiguration.
        if fs::read_to_string(&dot_config).ok().as_deref() != Some(wanted.as_str()) {
            fs::write(&dot_config, &wanted).with_path("write", &dot_config)?;
        }
        // A newline for every question takes its default; the diff below catches the result.
        let answers = "\n".repeat(4096);
        run_logged(self.make(sh, "oldconfig"), Some(answers.as_bytes()), &self.log, progress)?;
        let got = fs::read_to_string(&dot_config).with_path("read", &dot_config)?;
        let diff = diff_options(&wanted_opts, &set_options(&got));
        if !diff.is_empty() {
            return Err(Error::Config {
                path: checked_in.to_path_buf(),
                message: format!(
                    "`make oldconfig` changes set options, so the checked-in config is stale \
                     for this BusyBox version:\n  {}\nreview the result in `{}` and copy it over \
                     the checked-in file, or run `cargo xtask menuconfig`",
                    diff.join("\n  "),
                    dot_config.display()
                ),
            });
        }
        Ok(())
    }

    /// Builds the `busybox` binary (`make -jN`), incrementally.
    pub fn build(&self, sh: &Shell, progress: &dyn Progress) -> Result<()> {
        run_logged(self.make(sh, "busybox"), None, &self.log, progress)
    }

    /// Checks that the built `busybox` is a static ELF program for `arch`, so that a
    /// `CROSS_COMPILE` for another architecture stops the build instead of making an image
    /// whose init cannot run.
    pub fn check_binary(&self, arch: Arch) -> Result<()> {
        let path = self.src.join("busybox");
        let data = fs::read(&path).with_path("read", &path)?;
        let problem = match crate::host::elf::summary(&data) {
            None => Some("is not a 64-bit little-endian ELF program".to_string()),
            Some(elf) if elf.machine != arch.info().elf_machine => {
                let built_for = Arch::ALL
                    .into_iter()
                    .find(|a| a.info().elf_machine == elf.machine)
                    .map_or(format!("ELF machine {}", elf.machine), |a| a.to_string());
                Some(format!(
                    "was built for {built_for}, not {arch}, by `{}`; set CROSS_COMPILE to a \
                     compiler for {arch} (Debian's is `{}`) or unset it",
                    self.toolchain.cc,
                    arch.info().cross_prefix
                ))
            }
            Some(elf) if elf.dynamic => Some(
                "is dynamically linked, but the image has no C library; check that the \
                 compiler honours CONFIG_STATIC (`-static`)"
                    .to_string(),
            ),
            Some(_) => None,
        };
        match problem {
            Some(message) => Err(Error::Tree { path, message }),
            None => Ok(()),
        }
    }

    /// Installs the binary and its applet links into a fresh `install_dir`.
    pub fn install(&self, sh: &Shell, progress: &dyn Progress) -> Result<()> {
        if self.install_dir.exists() {
            fs::remove_dir_all(&self.install_dir).with_path("remove", &self.install_dir)?;
        }
        let prefix = format!("CONFIG_PREFIX={}", self.install_dir.display());
        run_logged(self.make(sh, "install").arg(prefix), None, &self.log, progress)
    }

    /// Opens BusyBox's menuconfig on the checked-in config and writes the result back.
    pub fn menuconfig(&self, sh: &Shell, checked_in: &Path) -> Result<()> {
        let dot_config = self.src.join(".config");
        fs::copy(checked_in, &dot_config).with_path("copy", checked_in)?;
        let cmd = self.make(sh, "menuconfig");
        let command_line = cmd.to_string();
        let hint = "menuconfig needs a terminal and ncurses: sudo apt-get install libncurses-dev";
        // The menu reads keys from the terminal: it gets ours, unlike the logged makes.
        let status = crate::host::exec::interactive(cmd).map_err(|e| Error::Command {
            command: command_line.clone(),
            status: String::new(),
            details: format!("could not run it: {e}\n{hint}"),
        })?;
        if !status.success() {
            return Err(Error::Command {
                command: command_line,
                status: format!(": {status}"),
                details: hint.into(),
            });
        }
        let text = fs::read_to_string(&dot_config).with_path("read", &dot_config)?;
        fs::write(checked_in, text).with_path("write", checked_in)
    }
}

fn diff_options(wanted: &BTreeMap<String, String>, got: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = wanted.keys().chain(got.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| match (wanted.get(k), got.get(k)) {
            (Some(w), Some(g)) if w == g => None,
            (Some(w), Some(g)) => Some(format!("{k}: checked in {w}, make oldconfig gives {g}")),
            (Some(w), None) => Some(format!("{k}: checked in {w}, make oldconfig unsets it")),
            (None, Some(g)) => {
                Some(format!("{k}: not in the checked-in file, make oldconfig sets {g}"))
            }
            (None, None) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_every_changed_option() {
        let a = set_options("CONFIG_A=y\nCONFIG_B=y\n");
        let b = set_options("CONFIG_A=y\nCONFIG_C=y\n");
        let d = diff_options(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("CONFIG_B") && d[1].starts_with("CONFIG_C"));
    }

    #[test]
    fn a_busybox_for_another_arch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bb = BusyboxBuild {
            src: dir.path().to_path_buf(),
            install_dir: dir.path().join("install"),
            log: dir.path().join("log"),
            toolchain: Toolchain { cross_compile: "x86_64-linux-gnu-".into(), cc: "x".into() },
            source_date_epoch: 0,
        };
        fs::write(
            dir.path().join("busybox"),
            crate::host::elf::test_file(Arch::X86_64.info().elf_machine, 1),
        )
        .unwrap();
        bb.check_binary(Arch::X86_64).unwrap();
        let err = bb.check_binary(Arch::Riscv64).unwrap_err().to_string();
        assert!(err.contains("built for x86_64, not riscv64"), "{err}");
        assert!(err.contains("riscv64-linux-gnu-"), "{err}");
        fs::write(
            dir.path().join("busybox"),
            crate::host::elf::test_file(Arch::X86_64.info().elf_machine, 3),
        )
        .unwrap();
        let err = bb.check_binary(Arch::X86_64).unwrap_err().to_string();
        assert!(err.contains("dynamically linked"), "{err}");
    }
}
