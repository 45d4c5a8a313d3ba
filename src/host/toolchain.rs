//! The C compiler for a target: `$CROSS_COMPILE`, the host's `gcc`, or the cross compiler the
//! `cc` crate knows for the architecture's triple, checked before a long build starts.

use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

use crate::arch::Arch;
use crate::error::{Error, MissingTools, Result};
use crate::host::exec;

/// How to call the C compiler for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// The `CROSS_COMPILE` prefix; empty for a native build.
    pub cross_compile: String,
    /// The compiler that prefix leads to (`gcc`, `aarch64-linux-gnu-gcc`, …).
    pub cc: String,
}

/// Debian/Ubuntu packages of the native compiler and the C library it links statically.
const NATIVE_GCC_PACKAGE: &str = "gcc";
const NATIVE_LIBC_PACKAGE: &str = "libc6-dev";

impl Toolchain {
    /// Finds the C compiler for `arch`: `$CROSS_COMPILE` if set, the host `gcc` when `arch` is
    /// the host, else the compiler the `cc` crate picks for the arch's triple (Debian's
    /// `<triple>-gcc`). The compiler must be on `PATH`; a missing one is an error naming its
    /// package.
    pub fn find(arch: Arch) -> Result<Toolchain> {
        let toolchain = Toolchain::for_arch(arch);
        match toolchain.compiler_missing(arch) {
            Some(line) => Err(missing(&[line])),
            None => Ok(toolchain),
        }
    }

    /// Finds the C compiler for `arch` as [`Toolchain::find`] does, and checks that it can
    /// link a static program: BusyBox needs the C library's `libc.a`, which Debian packages
    /// apart from the compiler. Reports both missing at once. With a `memo` directory, the
    /// compiler's answer is kept there for as long as the compiler is the same file.
    pub fn find_for_busybox(sh: &Shell, arch: Arch, memo: Option<&Path>) -> Result<Toolchain> {
        let toolchain = Toolchain::for_arch(arch);
        let (_, libc) = toolchain.packages(arch);
        let libc_line = (format!("libc.a (static C library of {} for {arch})", toolchain.cc), libc);
        match toolchain.compiler_missing(arch) {
            // Without a compiler there is nothing to ask about its library: name both.
            Some(cc_line) => Err(missing(&[cc_line, libc_line])),
            None if !toolchain.has_static_libc(sh, memo) => Err(missing(&[libc_line])),
            None => Ok(toolchain),
        }
    }

    /// The toolchain for `arch`, not yet checked to exist.
    fn for_arch(arch: Arch) -> Toolchain {
        let cross_compile = match std::env::var("CROSS_COMPILE") {
            Ok(prefix) if !prefix.is_empty() => prefix,
            _ if Arch::host() == Some(arch) => String::new(),
            _ => cc_crate_prefix(arch).unwrap_or_else(|| arch.info().cross_prefix.to_string()),
        };
        Toolchain { cc: format!("{cross_compile}gcc"), cross_compile }
    }

    /// The line for the error when the compiler is not on `PATH`.
    fn compiler_missing(&self, arch: Arch) -> Option<(String, &'static str)> {
        let (gcc, _) = self.packages(arch);
        crate::host::tools::find_program(&self.cc)
            .is_none()
            .then(|| (format!("{} (C compiler for {arch})", self.cc), gcc))
    }

    /// The packages of the compiler and of its static C library.
    fn packages(&self, arch: Arch) -> (&'static str, &'static str) {
        if self.cross_compile.is_empty() {
            (NATIVE_GCC_PACKAGE, NATIVE_LIBC_PACKAGE)
        } else {
            (arch.info().cross_gcc_package, arch.info().cross_libc_package)
        }
    }

    /// Whether the compiler finds a `libc.a`: `-print-file-name` prints its full path if it
    /// does, and the bare name otherwise. A kept answer holds while that file is there.
    fn has_static_libc(&self, sh: &Shell, memo: Option<&Path>) -> bool {
        let cc = &self.cc;
        let question = cmd!(sh, "{cc} -print-file-name=libc.a");
        let found =
            |path: &str| Path::new(path.trim()).is_absolute() && Path::new(path.trim()).is_file();
        self.ask(question, memo, found).is_some()
    }

    /// The file the compiler runs from, found on `PATH` with its links resolved.
    pub(crate) fn executable(&self) -> Option<PathBuf> {
        crate::host::tools::find_program(&self.cc).and_then(|p| std::fs::canonicalize(p).ok())
    }

    /// `question` put to the compiler, answered from `memo` where it holds the answer of this
    /// very compiler (see [`exec::read_remembered`]).
    fn ask(
        &self,
        question: xshell::Cmd<'_>,
        memo: Option<&Path>,
        valid: impl Fn(&str) -> bool,
    ) -> Option<String> {
        // A wrapper (ccache, distcc) answers for a compiler it finds elsewhere, whose upgrade
        // its own identity would not show: only a compiler's own answers are kept.
        let executable = self
            .executable()
            .filter(|exe| exe.file_name().is_some_and(|n| n.to_string_lossy().contains("gcc")));
        match (executable, memo) {
            (Some(exe), Some(memo)) => exec::read_remembered(question, &exe, memo, valid),
            _ => exec::read(question).filter(|a| valid(a)),
        }
    }
}

/// The error for missing parts of a toolchain: one `(what, package)` line each.
fn missing(lines: &[(String, &str)]) -> Error {
    let mut missing = MissingTools::default();
    for (what, package) in lines {
        missing.push(what.clone(), *package);
    }
    Error::MissingTools(missing)
}

impl Toolchain {
    /// What identifies the compiler for fingerprints: its prefix, full path and version text.
    /// With a `memo` directory, the version is kept there while the compiler is the same file.
    pub fn identity(&self, sh: &Shell, memo: Option<&Path>) -> String {
        let path = crate::host::tools::find_program(&self.cc);
        let cc = &self.cc;
        let version = self.ask(cmd!(sh, "{cc} --version"), memo, |_| true).unwrap_or_default();
        format!("{}\n{path:?}\n{version}", self.cross_compile)
    }
}

/// The `CROSS_COMPILE` prefix the `cc` crate derives for the arch's triple (it honours
/// `CC_<triple>` and knows Debian's cross compiler names). On a host busyroot has no triple
/// for, the table's prefix is used instead.
fn cc_crate_prefix(arch: Arch) -> Option<String> {
    let host = Arch::host()?.info().triple;
    let compiler = cc::Build::new()
        .target(arch.info().triple)
        .host(host)
        .opt_level(0)
        .cargo_metadata(false)
        // Its `cargo:warning` lines (e.g. "Compiler family detection failed" for a missing
        // compiler) would print before busyroot's own message, which says what to install.
        .cargo_warnings(false)
        .try_get_compiler()
        .ok()?;
    let name = compiler.path().file_name()?.to_str()?.to_string();
    name.strip_suffix("gcc").filter(|p| p.ends_with('-')).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compilers_answer_is_kept_until_it_changes_and_a_wrappers_never() {
        use std::os::unix::fs::PermissionsExt;
        let sh = Shell::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (memo, bin) = (dir.path().join("stamps"), dir.path().join("bin"));
        std::fs::create_dir_all(&bin).unwrap();
        let script = |name: &str, version: &str| {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\necho {version}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let version = |cc: &Path| {
            let toolchain =
                Toolchain { cross_compile: String::new(), cc: cc.display().to_string() };
            toolchain.identity(&sh, Some(&memo)).lines().last().unwrap().to_string()
        };
        let gcc = script("x-gcc", "gcc 1");
        assert_eq!(version(&gcc), "gcc 1");
        // Kept: a doctored answer shows while the compiler is the same file.
        let kept = std::fs::read_dir(&memo).unwrap().next().unwrap().unwrap().path();
        std::fs::write(&kept, std::fs::read_to_string(&kept).unwrap().replace("gcc 1", "kept"))
            .unwrap();
        assert_eq!(version(&gcc), "kept");
        // A new compiler (another size) is asked again.
        script("x-gcc", "gcc 22");
        assert_eq!(version(&gcc), "gcc 22");

        // ccache behind a link named gcc: asked every time, never kept.
        std::fs::remove_dir_all(&memo).unwrap();
        let ccache = script("ccache", "gcc 1");
        std::os::unix::fs::symlink(&ccache, bin.join("gcc")).unwrap();
        assert_eq!(version(&bin.join("gcc")), "gcc 1");
        script("ccache", "gcc 2");
        assert_eq!(version(&bin.join("gcc")), "gcc 2");
        assert!(!memo.exists(), "nothing kept for a wrapper");
    }

    #[test]
    fn a_missing_cross_compiler_names_its_packages() {
        let sh = Shell::new().unwrap();
        let absent =
            Toolchain { cross_compile: "busyroot-none-".into(), cc: "busyroot-none-gcc".into() };
        let line = absent.compiler_missing(Arch::Aarch64).unwrap();
        assert_eq!(line.1, "gcc-aarch64-linux-gnu");
        assert!(!absent.has_static_libc(&sh, None));
        let err = missing(&[line, ("libc.a".into(), "libc6-dev-arm64-cross")]).to_string();
        assert!(
            err.contains("  busyroot-none-gcc (C compiler for aarch64), package gcc-"),
            "{err}"
        );
        assert!(
            err.contains("sudo apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
            "{err}"
        );
        let native = Toolchain { cross_compile: String::new(), cc: "gcc".into() };
        assert_eq!(native.packages(Arch::Riscv64), ("gcc", "libc6-dev"));
    }
}
