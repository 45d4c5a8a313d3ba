//! `cargo xtask rootfs`: build rootfs.ext4, rootfs.cpio.gz and rootfs.tar.

use std::path::Path;

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::config::Workspace;
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
    /// The workspace (see [`workspace`]) and the architecture: --arch, else config `arch`, else
    /// the host's.
    pub fn resolve(&self) -> anyhow::Result<(Workspace, Arch)> {
        self.with_workspace(workspace()?)
    }

    /// [`Target::resolve`] for the workspace at `dir`, wherever the current directory is.
    pub fn resolve_in(&self, dir: &Path) -> anyhow::Result<(Workspace, Arch)> {
        self.with_workspace(Workspace::load(dir)?)
    }

    fn with_workspace(&self, ws: Workspace) -> anyhow::Result<(Workspace, Arch)> {
        let arch = Arch::configured_or_host(self.arch.or(ws.config.arch))?;
        Ok((ws, arch))
    }
}

pub fn run(sh: &Shell, args: Target) -> anyhow::Result<()> {
    let (ws, arch) = args.resolve()?;
    let outputs = build(sh, ws, arch, args.offline)?;
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
    Ok(Workspace::load_reporting(dir, &Reporter::new())?)
}

/// Builds (or reuses) the images of `ws`; shared with `cargo xtask run`.
pub fn build(sh: &Shell, ws: Workspace, arch: Arch, offline: bool) -> anyhow::Result<Outputs> {
    let mut builder = RootfsBuilder::for_arch(ws, arch);
    builder.offline(offline);
    builder.build(sh, &Reporter::new()).with_context(|| format!("build the {arch} rootfs"))
}

/// `cargo xtask menuconfig`: BusyBox's menuconfig on the checked-in config, written back.
pub fn menuconfig(sh: &Shell, args: Target) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        anyhow::bail!("menuconfig is interactive: run `cargo xtask menuconfig` in a terminal");
    }
    let (ws, arch) = args.resolve()?;
    let mut builder = RootfsBuilder::for_arch(ws, arch);
    builder.offline(args.offline);
    let config = builder.menuconfig(sh, &Reporter::new())?;
    println!("wrote {}", config.display());
    Ok(())
}
