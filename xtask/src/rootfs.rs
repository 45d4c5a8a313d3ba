//! `cargo xtask rootfs`: build rootfs.ext4, rootfs.cpio.gz and rootfs.tar.

use std::path::Path;

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::config::Workspace;
use busyroot::context::Context as BuildContext;
use busyroot::pipeline::rootfs::{Outputs, RootfsBuilder};
use xshell::Shell;

use crate::progress::Reporter;

/// What to build for: the flags of `cargo xtask rootfs`, shared by every command that builds.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// Target architecture: x86_64 (or amd64), aarch64 (or arm64) or riscv64 [default: config
    /// `arch`, else the host's]
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Never touch the network: use only the cache and $BUSYROOT_MIRROR (same as BUSYROOT_OFFLINE=1)
    #[arg(long)]
    pub offline: bool,
}

impl Target {
    /// The one context of a command: the workspace (see [`workspace`]), the architecture
    /// (--arch, else config `arch`, else the host's) and --offline.
    pub fn resolve(&self) -> anyhow::Result<BuildContext> {
        self.with_workspace(workspace()?)
    }

    /// [`Target::resolve`] for the workspace at `dir`, wherever the current directory is.
    pub fn resolve_in(&self, dir: &Path) -> anyhow::Result<BuildContext> {
        self.with_workspace(load_workspace(dir)?)
    }

    fn with_workspace(&self, ws: Workspace) -> anyhow::Result<BuildContext> {
        let arch = Arch::configured_or_host(self.arch.or(ws.config.arch))?;
        let mut ctx = BuildContext::for_arch(ws, arch);
        ctx.offline(self.offline);
        Ok(ctx)
    }
}

pub fn run(sh: &Shell, args: Target) -> anyhow::Result<()> {
    let outputs = build(sh, &args.resolve()?)?;
    println!("rootfs for {} entries in {}:", outputs.entries, outputs.dir.display());
    for file in &outputs.files {
        println!("  {}  {:>10} bytes  sha256 {}", file.path.display(), file.size, file.sha256);
    }
    Ok(())
}

/// The workspace busyroot runs in: the one holding the current directory, so that a project
/// running this xtask from its copy of busyroot (`cargo run --manifest-path
/// third_party/busyroot/xtask/Cargo.toml`) gets its own configuration and target directory;
/// outside any Cargo project, the one holding this xtask.
pub fn workspace() -> anyhow::Result<Workspace> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let dir = cwd
        .ancestors()
        .find(|dir| dir.join("Cargo.toml").is_file())
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")));
    load_workspace(dir)
}

/// The workspace whose root or member is `dir`: from what `cargo metadata` said at the build
/// that `cargo xtask`'s launcher vouches is current (it names that file in
/// `$BUSYROOT_CARGO_METADATA`) when `dir` is this xtask's own workspace root, else from
/// `cargo metadata` now.
fn load_workspace(dir: &Path) -> anyhow::Result<Workspace> {
    load_workspace_with(dir, LAUNCHER_METADATA.get().and_then(|m| m.as_deref()))
}

/// What the launcher named in `$BUSYROOT_CARGO_METADATA`.
static LAUNCHER_METADATA: std::sync::OnceLock<Option<std::ffi::OsString>> =
    std::sync::OnceLock::new();

/// Takes `$BUSYROOT_CARGO_METADATA` out of the environment, first thing: the launcher vouches
/// for this process's environment, not for that of a program it starts (a test running the
/// xtask with another target directory would otherwise clean this one's).
pub fn take_launcher_metadata() {
    let name = "BUSYROOT_CARGO_METADATA";
    let _ = LAUNCHER_METADATA.set(std::env::var_os(name));
    std::env::remove_var(name);
}

fn load_workspace_with(dir: &Path, cached: Option<&std::ffi::OsStr>) -> anyhow::Result<Workspace> {
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("/"));
    let is_own = || dir.canonicalize().ok().is_some_and(|d| own.canonicalize().ok() == Some(d));
    if let Some(cached) = cached.filter(|_| is_own()) {
        // A file that cannot be read only costs the `cargo metadata` it was to save.
        if let Ok(ws) = Workspace::from_cargo_metadata_file(Path::new(cached), &Reporter::new()) {
            return Ok(ws);
        }
    }
    Ok(Workspace::load_reporting(dir, &Reporter::new())?)
}

/// Builds (or reuses) the images of `ctx`; shared with `cargo xtask run`.
pub fn build(sh: &Shell, ctx: &BuildContext) -> anyhow::Result<Outputs> {
    let builder = RootfsBuilder::new(ctx.clone());
    let arch = ctx.arch();
    builder.build(sh, &Reporter::new()).with_context(|| format!("build the {arch} rootfs"))
}

/// `cargo xtask menuconfig`: BusyBox's menuconfig on the checked-in config, written back.
pub fn menuconfig(sh: &Shell, args: Target) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        anyhow::bail!("menuconfig is interactive: run `cargo xtask menuconfig` in a terminal");
    }
    let config = RootfsBuilder::new(args.resolve()?).menuconfig(sh, &Reporter::new())?;
    println!("wrote {}", config.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launchers_metadata_stands_in_for_cargo_only_in_its_own_workspace() {
        let own = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let output = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
            .arg(own.join("Cargo.toml"))
            .output()
            .unwrap();
        assert!(output.status.success());
        // What Cargo said, with a label no real configuration has: seen only if it was used.
        let mut metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        metadata["metadata"]["busyroot"]["image"]["label"] = "from-the-launcher".into();
        let dir = tempfile::tempdir().unwrap();
        let cached = dir.path().join("metadata.json");
        std::fs::write(&cached, metadata.to_string()).unwrap();

        let label = |dir: &Path, cached: Option<&Path>| {
            load_workspace_with(dir, cached.map(Path::as_os_str)).unwrap().config.image.label
        };
        assert_eq!(label(own, Some(&cached)), "from-the-launcher");
        assert_ne!(label(own, None), "from-the-launcher", "without the file, Cargo is asked");
        let member = own.join("xtask");
        assert_ne!(label(&member, Some(&cached)), "from-the-launcher", "another directory");
        let missing = dir.path().join("gone.json");
        assert_ne!(label(own, Some(&missing)), "from-the-launcher", "an unreadable file");
    }
}
