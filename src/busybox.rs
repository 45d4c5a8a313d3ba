//! BusyBox: find the C compiler, unpack, configure (`make oldconfig`), build and install.
//!
//! Invariant: the checked-in `.config` is the truth. The build tree's `.config` is a copy, and
//! when `make oldconfig` would change a set option the build stops instead of patching it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use xshell::{cmd, Shell};

use crate::arch::Arch;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

/// How to call the C compiler for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// The `CROSS_COMPILE` prefix; empty for a native build.
    pub cross_compile: String,
    /// The compiler that prefix leads to (`gcc`, `aarch64-linux-gnu-gcc`, …).
    pub cc: String,
}

impl Toolchain {
    /// Finds the C compiler for `arch`: `$CROSS_COMPILE` if set, the host `gcc` when `arch` is
    /// the host, else the compiler the `cc` crate picks for the arch's triple (Debian's
    /// `<triple>-gcc`). The compiler must be on `PATH`.
    pub fn find(arch: Arch) -> Result<Toolchain> {
        let info = arch.info();
        let cross_compile = match std::env::var("CROSS_COMPILE") {
            Ok(prefix) if !prefix.is_empty() => prefix,
            _ if Arch::host() == Some(arch) => String::new(),
            _ => cc_crate_prefix(arch).unwrap_or_else(|| info.cross_prefix.to_string()),
        };
        let cc = format!("{cross_compile}gcc");
        if crate::hosttools::find_program(&cc).is_none() {
            let package = if cross_compile.is_empty() { "gcc" } else { info.cross_package };
            return Err(Error::MissingTools {
                list: format!("  {cc} (C compiler for {arch}), package {package}"),
                install: format!("sudo apt-get install {package}"),
            });
        }
        Ok(Toolchain { cross_compile, cc })
    }
}

impl Toolchain {
    /// What identifies the compiler for fingerprints: its prefix, full path and version text.
    pub fn identity(&self, sh: &Shell) -> String {
        let path = crate::hosttools::find_program(&self.cc);
        let cc = &self.cc;
        let version = cmd!(sh, "{cc} --version").quiet().ignore_stderr().read().unwrap_or_default();
        format!("{}\n{path:?}\n{version}", self.cross_compile)
    }
}

/// The `CROSS_COMPILE` prefix the `cc` crate derives for the arch's triple (it honours
/// `CC_<triple>` and knows Debian's cross compiler names).
fn cc_crate_prefix(arch: Arch) -> Option<String> {
    let host = Arch::host().map(|a| a.info().triple).unwrap_or("x86_64-unknown-linux-gnu");
    let compiler = cc::Build::new()
        .target(arch.info().triple)
        .host(host)
        .opt_level(0)
        .cargo_metadata(false)
        .try_get_compiler()
        .ok()?;
    let name = compiler.path().file_name()?.to_str()?.to_string();
    name.strip_suffix("gcc").filter(|p| p.ends_with('-')).map(str::to_string)
}

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
        let scratch = self.src.with_extension("unpacked");
        crate::extract::unpack(tarball, &scratch)?;
        // The tarball holds one top-level directory (busybox-<version>/); it becomes `src`.
        let top = crate::extract::single_top_dir(&scratch, tarball)?;
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
        cmd.run().map_err(|e| Error::Command {
            command: "make menuconfig".into(),
            status: String::new(),
            details: format!("{e}\nmenuconfig needs ncurses: sudo apt-get install libncurses-dev"),
        })?;
        let text = fs::read_to_string(&dot_config).with_path("read", &dot_config)?;
        fs::write(checked_in, text).with_path("write", checked_in)
    }
}

/// `CONFIG_X` → value for every line that sets an option (comments and "is not set" skipped).
pub fn set_options(config: &str) -> BTreeMap<String, String> {
    config
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
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

/// Runs `cmd` with `stdin` fed to it and stdout and stderr appended to `log`. On failure the
/// error names the command, the log and its last lines.
pub fn run_logged(
    cmd: xshell::Cmd<'_>,
    stdin: Option<&[u8]>,
    log: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let command_line = cmd.to_string();
    progress.command(&command_line);
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_path("create directory", dir)?;
    }
    let mut file =
        fs::OpenOptions::new().create(true).append(true).open(log).with_path("open", log)?;
    let start = file.seek(SeekFrom::End(0)).with_path("seek", log)?;
    writeln!(file, "$ {command_line}").with_path("write", log)?;
    let mut command = std::process::Command::from(cmd);
    command.stdout(file.try_clone().with_path("open", log)?).stderr(file);
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    // Ctrl-C reaches make through the terminal's process group; a kill of busyroot alone
    // must stop it too.
    crate::hosttools::die_with_parent(&mut command, libc::SIGTERM);
    let started = command.spawn().and_then(|mut child| {
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // The child may exit without reading everything; that is not an error here.
            let _ = pipe.write_all(bytes);
        }
        child.wait()
    });
    let status = started.map_err(|e| Error::Command {
        command: command_line.clone(),
        status: String::new(),
        details: format!("could not run it: {e}; is it installed?"),
    })?;
    if status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: command_line,
        status: format!(": {status}"),
        details: format!("full log: {}\nlast lines:\n{}", log.display(), tail(log, start, 25)),
    })
}

/// The last `n` lines written to `log` after byte offset `from`.
pub fn tail(log: &Path, from: u64, n: usize) -> String {
    let Ok(mut f) = fs::File::open(log) else { return String::new() };
    let _ = f.seek(SeekFrom::Start(from));
    let lines: Vec<String> = BufReader::new(f).lines().map_while(|l| l.ok()).collect();
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_options_ignore_comments() {
        let opts = set_options("#\n# CONFIG_TC is not set\nCONFIG_STATIC=y\nCONFIG_X=\"a=b\"\n");
        assert_eq!(opts.len(), 2);
        assert_eq!(opts["CONFIG_X"], "\"a=b\"");
    }

    #[test]
    fn diff_names_every_changed_option() {
        let a = set_options("CONFIG_A=y\nCONFIG_B=y\n");
        let b = set_options("CONFIG_A=y\nCONFIG_C=y\n");
        let d = diff_options(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("CONFIG_B") && d[1].starts_with("CONFIG_C"));
    }
}
