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
        self.with_workspace(Workspace::load(dir)?)
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
