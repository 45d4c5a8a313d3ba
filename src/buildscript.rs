//! Building the rootfs from another crate's `build.rs`: outputs under `OUT_DIR`, every input
//! reported to Cargo, and the output paths exported as `env!` variables.
//!
//! The whole build script of a crate that wants the images:
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     if let Err(err) = busyroot::buildscript::BuildScript::from_env().and_then(|b| b.run()) {
//!         eprintln!("error: {err}");
//!         std::process::exit(1);
//!     }
//! }
//! ```
//!
//! and the crate then reads `env!("BUSYROOT_EXT4")` (see [`BuildScript::run`] for every
//! variable). The configuration is `[workspace.metadata.busyroot]` of the workspace the crate
//! belongs to, with paths relative to that workspace's root, exactly as for `cargo xtask`; an
//! unset input key means busyroot's own file ([`crate::inputs`]), so a crate that sets nothing
//! but `image.label` gets a working image.
//!
//! By default everything, the BusyBox build included, happens in `$OUT_DIR/busyroot/<arch>/`:
//! the build script writes nothing outside `OUT_DIR`, `cargo clean` removes it all, and each
//! `OUT_DIR` (one per profile, e.g. debug and release) compiles BusyBox once, about a minute.
//! [`BuildScript::share_target_dir`] instead builds in the workspace's
//! `target/busyroot/<arch>/`, shared with `cargo xtask rootfs` and every profile, and copies
//! the three images into `OUT_DIR`. Either way, `[profile.dev.build-override] debug = true`
//! next to `[profile.dev.package."*"] opt-level = 3` lets `cargo build` and `cargo test` share
//! one compiled busyroot, so switching between them does not run the build script again
//! (docs/library.md).

// The example above is a whole build.rs, whose `main` is the point.
#![allow(clippy::needless_doctest_main)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use xshell::{cmd, Shell};

use crate::arch::Arch;
use crate::config::Workspace;
use crate::context::{Context, Layout};
use crate::error::{Error, Result};
use crate::image::Format;
use crate::pipeline::rootfs::{Outputs, RootfsBuilder};
use crate::progress::Progress;

/// Environment variables a build reads whatever the architecture; a change to any of them
/// reruns the build script. (`PATH` is left out on purpose: IDEs run build scripts with a
/// different `PATH` than the terminal, and tracking it would rerun the script on every switch.)
pub(crate) const ENV_VARS: &[&str] = &[
    "BUSYROOT_CACHE",
    "BUSYROOT_MIRROR",
    "BUSYROOT_OFFLINE",
    "BUSYROOT_VERBOSE",
    "SOURCE_DATE_EPOCH",
    "XDG_CACHE_HOME",
    "HOME",
    "CROSS_COMPILE",
];

/// Builds the rootfs inside a Cargo build script. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct BuildScript {
    manifest_dir: PathBuf,
    out_dir: PathBuf,
    target_arch: Option<String>,
    arch: Option<Arch>,
    verbose: bool,
    share_target_dir: bool,
    offline: bool,
}

impl BuildScript {
    /// The build script of the package being built, from the variables Cargo sets for it:
    /// `CARGO_MANIFEST_DIR`, `OUT_DIR` and `CARGO_CFG_TARGET_ARCH`. Progress goes to
    /// `cargo:warning` lines when `BUSYROOT_VERBOSE` is set to anything but `0`.
    pub fn from_env() -> Result<BuildScript> {
        let var = |name: &str| {
            std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from).ok_or_else(|| {
                Error::Other(format!(
                    "`{name}` is not set: `BuildScript::from_env` works only in a Cargo build \
                     script (build.rs); elsewhere use `BuildScript::new` or `RootfsBuilder`"
                ))
            })
        };
        let mut script = BuildScript::new(var("CARGO_MANIFEST_DIR")?, var("OUT_DIR")?);
        script.target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").ok();
        script.verbose = std::env::var("BUSYROOT_VERBOSE").is_ok_and(|v| !v.is_empty() && v != "0");
        Ok(script)
    }

    /// A build script for the package in `manifest_dir` that writes into `out_dir`, building
    /// for the configured architecture, else the host's.
    pub fn new(manifest_dir: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> BuildScript {
        BuildScript {
            manifest_dir: manifest_dir.into(),
            out_dir: out_dir.into(),
            target_arch: None,
            arch: None,
            verbose: false,
            share_target_dir: false,
            offline: false,
        }
    }

    /// Builds for `arch`. Default: the configured `arch`, else the architecture the crate is
    /// compiled for (`CARGO_CFG_TARGET_ARCH`), else the host's.
    pub fn arch(mut self, arch: Arch) -> BuildScript {
        self.arch = Some(arch);
        self
    }

    /// Whether to report each step as a `cargo:warning` line, which Cargo shows even when the
    /// build succeeds. The steps always go to stderr, which Cargo shows when the script fails
    /// or with `cargo build -vv`.
    pub fn verbose(mut self, verbose: bool) -> BuildScript {
        self.verbose = verbose;
        self
    }

    /// Whether to build in the workspace's `target/busyroot/<arch>/` (shared with
    /// `cargo xtask rootfs` and every profile, so BusyBox is compiled once) and copy the
    /// images into `OUT_DIR`, instead of doing everything under `OUT_DIR`. Default: `false`.
    pub fn share_target_dir(mut self, share: bool) -> BuildScript {
        self.share_target_dir = share;
        self
    }

    /// Never use the network (in addition to `BUSYROOT_OFFLINE`).
    pub fn offline(mut self, offline: bool) -> BuildScript {
        self.offline = offline;
        self
    }

    /// Where the images end up: `$OUT_DIR/busyroot/<arch>/`.
    pub fn output_dir(&self, arch: Arch) -> PathBuf {
        Layout::in_target(&self.out_dir, arch).dir().to_path_buf()
    }

    /// Builds the images and prints the `cargo:` lines: `rerun-if-changed` for the workspace's
    /// Cargo.toml and every input of `Inputs::of` (and the git files that date the image
    /// when `SOURCE_DATE_EPOCH` is unset),
    /// `rerun-if-env-changed` for `ENV_VARS`, and `rustc-env` for `BUSYROOT_ARCH`,
    /// `BUSYROOT_DIR`, `BUSYROOT_EXT4`, `BUSYROOT_CPIO`, `BUSYROOT_TAR` and the images'
    /// `BUSYROOT_EXT4_SHA256`, `BUSYROOT_CPIO_SHA256` and `BUSYROOT_TAR_SHA256`.
    pub fn run(&self) -> Result<Outputs> {
        let sh = Shell::new().map_err(|e| Error::Other(format!("cannot start a shell: {e}")))?;
        let progress = CargoProgress { warnings: self.verbose };
        let mut workspace = Workspace::load_reporting(&self.manifest_dir, &progress)?;
        let arch = self.resolve_arch(&workspace)?;
        let shared_dir = Layout::new(&workspace, arch).dir().to_path_buf();
        if !self.share_target_dir {
            workspace.target_dir = self.out_dir.clone();
        }

        let mut inputs = Inputs::of(&workspace)?;
        let epoch_from_env =
            std::env::var("SOURCE_DATE_EPOCH").is_ok_and(|v| v.trim().parse::<u64>().is_ok());
        if !epoch_from_env {
            inputs.paths.extend(git_head_files(&sh, &workspace.root));
        }
        if Arch::host() != Some(arch) {
            inputs.env_vars.extend(cc_env_vars(arch));
        }
        for path in [&self.out_dir, &shared_dir] {
            cargo_path(path)?;
        }

        // The architecture is known: an unsupported host does not matter.
        let mut ctx = Context::for_arch(workspace.clone(), arch);
        ctx.offline(self.offline);
        ctx.source_date_epoch(crate::context::source_date_epoch(&sh, &workspace.root));
        let built = RootfsBuilder::new(ctx).build(&sh, &progress)?;
        let outputs = if self.share_target_dir { self.copy_out(built, arch)? } else { built };

        print_directives(&directives(&inputs, &outputs, arch));
        Ok(outputs)
    }

    /// The architecture to build: [`BuildScript::arch`], else the configured one, else the
    /// target's, else the host's.
    fn resolve_arch(&self, workspace: &Workspace) -> Result<Arch> {
        if let Some(arch) = self.arch.or(workspace.config.arch) {
            return Ok(arch);
        }
        match &self.target_arch {
            Some(target) => target.parse().map_err(|_| {
                Error::Other(format!(
                    "busyroot cannot build a rootfs for the target architecture `{target}`; set \
                     `arch` in [workspace.metadata.busyroot] of `{}` or call \
                     `BuildScript::arch`",
                    workspace.root.join("Cargo.toml").display()
                ))
            }),
            None => Arch::host().ok_or_else(|| {
                Error::Other(format!(
                    "the host architecture `{}` is not supported; call `BuildScript::arch`",
                    std::env::consts::ARCH
                ))
            }),
        }
    }

    /// Copies the images of a shared build into `OUT_DIR`, skipping a copy that already has
    /// the right checksum, and returns the outputs with the copies' paths.
    fn copy_out(&self, built: Outputs, arch: Arch) -> Result<Outputs> {
        let dir = self.output_dir(arch);
        let mut files = built.files.clone();
        for file in &mut files {
            let copy = dir.join(file.path.file_name().expect("outputs have file names"));
            let current =
                copy.is_file().then(|| crate::host::fs::sha256_file(&copy)).transpose()?;
            if current.as_deref() != Some(file.sha256.as_str()) {
                crate::host::fs::copy_file(&file.path, &copy)?;
            }
            file.path = copy;
        }
        Ok(Outputs { dir, files, ..built })
    }
}

/// What a rootfs build reads, in the form Cargo is told to watch it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Inputs {
    /// Files and directories whose change reruns the build script.
    pub paths: Vec<PathBuf>,
    /// Environment variables whose change reruns the build script.
    pub env_vars: Vec<String>,
}

impl Inputs {
    /// The inputs of `workspace`'s configuration: its Cargo.toml, the BusyBox config, each
    /// device table, each skeleton tree and overlay with, in order, every directory and file
    /// in it (an overlay archive as itself), and [`ENV_VARS`]. Built-in inputs are listed too:
    /// a vendored busyroot's files can change.
    ///
    /// Symbolic links in the trees are not listed one by one: Cargo follows a listed link,
    /// so one dangling on the host (as links into the image's `/bin` do) would look changed
    /// on every build. The listed tree directory covers them, since Cargo scans a listed
    /// directory recursively and looks at links themselves there.
    pub fn of(workspace: &Workspace) -> Result<Inputs> {
        let resolved = workspace.rootfs_inputs()?;
        let mut paths = vec![workspace.root.join("Cargo.toml")];
        for input in resolved.all() {
            cargo_path(&input.path)?;
            paths.push(input.path.clone());
            walk(&input.path, &mut paths);
        }
        Ok(Inputs { paths, env_vars: ENV_VARS.iter().map(|v| v.to_string()).collect() })
    }
}

/// Appends every directory and regular file below `dir`, depth first in name order, leaving
/// out symbolic links and names Cargo cannot be told about.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_symlink() || cargo_path(&path).is_err() {
            continue;
        }
        out.push(path.clone());
        if kind.is_dir() {
            walk(&path, out);
        }
    }
}

/// The path as text for a `cargo:` line, or an error when Cargo could not read it back.
fn cargo_path(path: &Path) -> Result<&str> {
    path.to_str().filter(|s| !s.contains('\n')).ok_or_else(|| {
        Error::Other(format!(
            "`{}` is not valid UTF-8 or holds a line break, so a build script cannot report it \
             to Cargo; rename it",
            path.display()
        ))
    })
}

/// The git files whose change means a new last commit, whose date stamps the image when
/// `SOURCE_DATE_EPOCH` is unset: `HEAD`, the branch it points to, and `packed-refs`. Only
/// existing files are returned, as Cargo reruns a script forever for a missing one.
fn git_head_files(sh: &Shell, root: &Path) -> Vec<PathBuf> {
    let _dir = sh.push_dir(root);
    let git = |args: &[&str]| {
        crate::host::exec::read(cmd!(sh, "git {args...}")).filter(|s| !s.is_empty())
    };
    let mut refs = vec!["HEAD".to_string(), "packed-refs".to_string()];
    refs.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    refs.iter()
        .filter_map(|name| git(&["rev-parse", "--git-path", name]))
        .map(|path| root.join(path.trim()))
        .filter(|path| path.exists() && cargo_path(path).is_ok())
        .collect()
}

/// The variables through which the `cc` crate picks a cross compiler for `arch` when
/// `CROSS_COMPILE` is unset.
fn cc_env_vars(arch: Arch) -> Vec<String> {
    let triple = arch.info().triple;
    vec![
        format!("CC_{triple}"),
        format!("CC_{}", triple.replace('-', "_")),
        "TARGET_CC".to_string(),
        "CC".to_string(),
    ]
}

/// The `cargo:` lines a build script prints for `inputs` and `outputs`: first what to watch,
/// then the `rustc-env` variables (documented at [`BuildScript::run`]).
pub(crate) fn directives(inputs: &Inputs, outputs: &Outputs, arch: Arch) -> Vec<String> {
    let mut lines: Vec<String> = inputs
        .paths
        .iter()
        .map(|p| format!("cargo:rerun-if-changed={}", p.display()))
        .chain(inputs.env_vars.iter().map(|v| format!("cargo:rerun-if-env-changed={v}")))
        .collect();
    let mut env = |name: &str, value: &str| lines.push(format!("cargo:rustc-env={name}={value}"));
    env("BUSYROOT_ARCH", arch.name());
    env("BUSYROOT_DIR", &outputs.dir.display().to_string());
    for file in &outputs.files {
        let name = match file.format {
            Format::Ext4 => "BUSYROOT_EXT4",
            Format::CpioGz => "BUSYROOT_CPIO",
            Format::Tar => "BUSYROOT_TAR",
        };
        env(name, &file.path.display().to_string());
        env(&format!("{name}_SHA256"), &file.sha256);
    }
    lines
}

/// Prints `lines` on stdout, where Cargo reads a build script's directives.
#[allow(clippy::print_stdout)] // Cargo's build-script protocol
pub(crate) fn print_directives(lines: &[String]) {
    for line in lines {
        println!("{line}");
    }
}

/// Reports progress from a build script: every step on stderr, and also as `cargo:warning`
/// lines when `warnings` is set.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CargoProgress {
    /// Whether to print `cargo:warning` lines too.
    pub warnings: bool,
}

impl CargoProgress {
    #[allow(clippy::print_stderr)] // a build script's log, which Cargo shows with -vv
    fn say(&self, message: &str) {
        eprintln!("{message}");
        if self.warnings {
            print_directives(&warning_lines(message));
        }
    }
}

impl Progress for CargoProgress {
    fn finish(&self, step: &str, elapsed: Duration, detail: &str) {
        let detail = if detail.is_empty() { String::new() } else { format!(" ({detail})") };
        self.say(&format!("{step} {:.2}s{detail}", elapsed.as_secs_f64()));
    }

    fn command(&self, command_line: &str) {
        self.say(&format!("$ {command_line}"));
    }

    fn note(&self, message: &str) {
        self.say(&format!("note: {message}"));
    }

    #[allow(clippy::print_stderr)] // a build script's log, which Cargo shows with -vv
    fn warning(&self, message: &str) {
        // Always a `cargo:warning`: a misspelled table otherwise goes unseen.
        eprintln!("{message}");
        print_directives(&warning_lines(message));
    }

    fn input(&self, input: &crate::inputs::Input) {
        self.say(&format!("input: {input}"));
    }
}

/// `message` as `cargo:warning` lines, one per line of text (Cargo reads one directive per
/// line), each starting with `busyroot: `.
pub(crate) fn warning_lines(message: &str) -> Vec<String> {
    message
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("cargo:warning=busyroot: {line}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Format;
    use crate::pipeline::rootfs::Output;

    #[test]
    fn inputs_list_the_config_and_every_layer_entry_but_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("rootfs-skel/etc/init.d")).unwrap();
        std::fs::write(root.join("rootfs-skel/etc/init.d/rcS"), "#!/bin/sh\n").unwrap();
        std::fs::write(root.join("rootfs-skel/etc/passwd"), "root::0:0::/:/bin/sh\n").unwrap();
        std::fs::create_dir(root.join("rootfs-skel/sbin")).unwrap();
        // Dangles on the host, as links into the image's /bin do.
        std::os::unix::fs::symlink("../bin/busybox", root.join("rootfs-skel/sbin/init")).unwrap();
        std::fs::create_dir_all(root.join("more/etc")).unwrap();
        std::fs::write(root.join("more/etc/motd"), "hi\n").unwrap();
        for file in ["bb.config", "extra.tar.gz", "a.txt", "b.txt"] {
            std::fs::write(root.join(file), "").unwrap();
        }
        let ws = Workspace::for_test(
            root,
            "skeleton = [\"rootfs-skel\", \"more\"]\noverlays = [\"extra.tar.gz\"]\n\
             device-table = [\"a.txt\", \"b.txt\"]\nbusybox.config = \"bb.config\"",
        );

        let inputs = Inputs::of(&ws).unwrap();
        let relative: Vec<_> =
            inputs.paths.iter().map(|p| p.strip_prefix(root).unwrap().to_str().unwrap()).collect();
        assert_eq!(
            relative,
            [
                "Cargo.toml",
                "bb.config",
                "rootfs-skel",
                "rootfs-skel/etc",
                "rootfs-skel/etc/init.d",
                "rootfs-skel/etc/init.d/rcS",
                "rootfs-skel/etc/passwd",
                "rootfs-skel/sbin",
                "more",
                "more/etc",
                "more/etc/motd",
                "extra.tar.gz",
                "a.txt",
                "b.txt",
            ]
        );
        for var in ["BUSYROOT_CACHE", "BUSYROOT_MIRROR", "BUSYROOT_OFFLINE", "SOURCE_DATE_EPOCH"] {
            assert!(inputs.env_vars.iter().any(|v| v == var), "{var} is not watched");
        }
    }

    #[test]
    fn unset_inputs_watch_the_builtin_files() {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = Inputs::of(&Workspace::for_test(tmp.path(), "")).unwrap();
        let builtin = crate::inputs::builtin_dir();
        for file in ["busybox-config/.config", "rootfs-skel/etc/inittab", "device-table.txt"] {
            assert!(inputs.paths.contains(&builtin.join(file)), "{file} is not watched");
        }
    }

    #[test]
    fn directives_watch_inputs_and_export_outputs() {
        let dir = PathBuf::from("/out/busyroot/x86_64");
        let output = |format: Format, sha: &str| Output {
            format,
            path: dir.join(format.file_name()),
            size: 1,
            sha256: sha.into(),
        };
        let outputs = Outputs {
            files: vec![
                output(Format::Ext4, "e4"),
                output(Format::CpioGz, "c0"),
                output(Format::Tar, "7a"),
            ],
            dir,
            entries: 3,
            stages: Vec::new(),
            inputs: Vec::new(),
        };
        let inputs = Inputs {
            paths: vec!["/ws/Cargo.toml".into(), "/ws/rootfs-skel".into()],
            env_vars: vec!["BUSYROOT_MIRROR".into()],
        };
        assert_eq!(
            directives(&inputs, &outputs, Arch::X86_64),
            [
                "cargo:rerun-if-changed=/ws/Cargo.toml",
                "cargo:rerun-if-changed=/ws/rootfs-skel",
                "cargo:rerun-if-env-changed=BUSYROOT_MIRROR",
                "cargo:rustc-env=BUSYROOT_ARCH=x86_64",
                "cargo:rustc-env=BUSYROOT_DIR=/out/busyroot/x86_64",
                "cargo:rustc-env=BUSYROOT_EXT4=/out/busyroot/x86_64/rootfs.ext4",
                "cargo:rustc-env=BUSYROOT_EXT4_SHA256=e4",
                "cargo:rustc-env=BUSYROOT_CPIO=/out/busyroot/x86_64/rootfs.cpio.gz",
                "cargo:rustc-env=BUSYROOT_CPIO_SHA256=c0",
                "cargo:rustc-env=BUSYROOT_TAR=/out/busyroot/x86_64/rootfs.tar",
                "cargo:rustc-env=BUSYROOT_TAR_SHA256=7a",
            ]
        );
    }

    #[test]
    fn warnings_are_one_directive_per_line() {
        assert_eq!(
            warning_lines("missing host programs:\n  make\n\n"),
            ["cargo:warning=busyroot: missing host programs:", "cargo:warning=busyroot:   make"]
        );
    }

    #[test]
    fn paths_cargo_cannot_read_back_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(cargo_path(Path::new("/a b/c")).unwrap(), "/a b/c");
        assert!(cargo_path(Path::new("/a\nb")).is_err());
        let bad = Path::new(std::ffi::OsStr::from_bytes(b"/a\xffb"));
        assert!(cargo_path(bad).unwrap_err().to_string().contains("not valid UTF-8"));
    }

    #[test]
    fn cross_builds_watch_the_cc_crate_variables() {
        let vars = cc_env_vars(Arch::Aarch64);
        assert!(vars.contains(&"CC_aarch64_unknown_linux_gnu".to_string()), "{vars:?}");
        assert!(vars.contains(&"CC_aarch64-unknown-linux-gnu".to_string()), "{vars:?}");
    }

    /// The whole run in shared mode, on this workspace: BusyBox is built in (or reused from)
    /// the workspace's target directory, as the integration tests and `cargo xtask rootfs`
    /// build it, and the images are copied into a scratch `OUT_DIR`.
    #[test]
    fn a_shared_build_is_copied_into_out_dir() {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace = Workspace::load(manifest_dir).unwrap();
        let fetch = crate::host::fetch::FetchOptions::from_env();
        let name = workspace.config.busybox.source().file_name;
        let mirrored = fetch.mirror.as_ref().is_some_and(|m| Path::new(m).join(&name).is_file());
        if !fetch.cache_dir.join(&name).is_file() && !mirrored {
            let reason = format!("`{name}` is neither in the cache nor in $BUSYROOT_MIRROR");
            crate::testing::skip("a_shared_build_is_copied_into_out_dir", &reason);
            return;
        }
        let out_dir = tempfile::tempdir().unwrap();
        let script =
            BuildScript::new(manifest_dir, out_dir.path()).share_target_dir(true).offline(true);
        let outputs = script.run().unwrap();
        let arch = Context::new(workspace.clone()).unwrap().arch();
        assert_eq!(outputs.dir, out_dir.path().join("busyroot").join(arch.name()));
        assert_eq!(outputs.files.len(), 3);
        let mtimes: Vec<_> = outputs
            .files
            .iter()
            .map(|file| {
                assert_eq!(file.path.parent(), Some(outputs.dir.as_path()));
                assert_eq!(crate::host::fs::sha256_file(&file.path).unwrap(), file.sha256);
                let shared =
                    Layout::new(&workspace, arch).dir().join(file.path.file_name().unwrap());
                assert_eq!(crate::host::fs::sha256_file(&shared).unwrap(), file.sha256);
                std::fs::metadata(&file.path).unwrap().modified().unwrap()
            })
            .collect();

        // A rerun finds the copies intact and leaves them alone.
        let again = script.run().unwrap();
        for (file, mtime) in again.files.iter().zip(mtimes) {
            assert_eq!(std::fs::metadata(&file.path).unwrap().modified().unwrap(), mtime);
        }
    }

    #[test]
    fn from_env_outside_a_build_script_says_what_to_use() {
        if std::env::var_os("OUT_DIR").is_some() {
            return;
        }
        let err = BuildScript::from_env().unwrap_err().to_string();
        assert!(err.contains("only in a Cargo build script"), "{err}");
    }
}
