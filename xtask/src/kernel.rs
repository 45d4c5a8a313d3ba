//! `cargo xtask kernel`: build a minimal boot-test kernel into target/busyroot/<arch>/kernel/,
//! or fetch a distribution's (`--distro debian`) into target/busyroot/<arch>/kernel-debian/.

use anyhow::Context;
use busyroot::context::Context as BuildContext;
use busyroot::pipeline::distro::Distro;
use busyroot::pipeline::kernel::{BuiltKernel, KernelBuilder, KernelSource};
use xshell::Shell;

use crate::progress::Reporter;
use crate::rootfs::Target;

/// Flags of `cargo xtask kernel`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KernelArgs {
    #[command(flatten)]
    pub target: Target,
    /// Linux source: a tarball (.tar.xz, .tar.gz, .tar.bz2, .tar, .txz, .tgz or .tbz2) or an
    /// unpacked tree, used as is, or a tarball URL (needs --sha256) [default: config
    /// `kernel.source`, else the pinned kernel.org release]
    #[arg(long, value_name = "PATH|URL", conflicts_with = "distro")]
    pub source: Option<String>,
    /// sha256 of the tarball a --source URL points to
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Instead of building, fetch a distribution's kernel package from the host's apt
    /// archive (no root, no apt needed; checked against the archive's index, cached) and
    /// unpack its image and modules into target/busyroot/<arch>/kernel-<DISTRO>/, where
    /// `cargo xtask run` finds them: `debian` (cloud-amd64, cloud-arm64; takes seconds)
    #[arg(long, value_name = "DISTRO")]
    pub distro: Option<Distro>,
    /// Keep built kernels in DIR, shared by every checkout on this machine, and reuse one
    /// whose inputs all match (source sha256, fragments, compiler version, busyroot's kernel
    /// stage version) instead of building it [default: none]
    #[arg(long, value_name = "DIR", env = "BUSYROOT_KERNEL_CACHE")]
    pub cache: Option<std::path::PathBuf>,
}

pub fn run(sh: &Shell, args: KernelArgs) -> anyhow::Result<()> {
    let ctx = args.target.resolve()?;
    if let Some(distro) = args.distro {
        return fetch_distro(sh, &ctx, distro);
    }
    let kernel = args.build(sh, &ctx)?;
    println!("kernel image  {}  {:>10} bytes", kernel.image.display(), kernel.size);
    println!("kernel config {}", kernel.config.display());
    println!("vmlinux       {}", kernel.vmlinux.display());
    Ok(())
}

impl KernelArgs {
    /// Builds (or reuses) the kernel for `arch`; shared with `cargo xtask run --build-kernel`.
    pub fn build(&self, sh: &Shell, ctx: &BuildContext) -> anyhow::Result<BuiltKernel> {
        let arch = ctx.arch();
        let mut builder = KernelBuilder::new(ctx.clone());
        if let Some(source) = &self.source {
            let cwd = std::env::current_dir().context("find the current directory")?;
            builder.source(KernelSource::parse(source, self.sha256.as_deref(), &cwd)?);
        } else if self.sha256.is_some() {
            anyhow::bail!("`--sha256` applies to a `--source` URL only; pass --source too");
        }
        if let Some(dir) = &self.cache {
            builder.cache(dir.clone());
        }
        builder
            .build(sh, &Reporter::new())
            .map_err(with_flag_hint)
            .with_context(|| format!("build the {arch} kernel"))
    }
}

/// `cargo xtask kernel --distro`: the distribution's kernel fetched and unpacked.
fn fetch_distro(sh: &Shell, ctx: &BuildContext, distro: Distro) -> anyhow::Result<()> {
    let (layout, arch) = (ctx.layout(), ctx.arch());
    if arch.info().debian_cloud_flavour.is_none() {
        anyhow::bail!(
            "Debian builds no small cloud kernel for {arch}; build one from source with \
             `cargo xtask kernel --arch {arch} --source /usr/src/linux-source-6.1.tar.xz` \
             (package linux-source-6.1) or `cargo xtask kernel --arch {arch}` (kernel.org)"
        );
    }
    let kernel =
        busyroot::pipeline::distro::fetch_kernel(sh, layout, distro, ctx.fetch(), &Reporter::new())
            .with_context(|| format!("fetch {distro}'s kernel for {arch}"))?;
    let state = if kernel.fresh { " (already unpacked)" } else { "" };
    println!("kernel package {} {}{state}", kernel.package, kernel.version);
    println!("kernel image   {}", kernel.image.display());
    println!("modules        {}", kernel.root.join("lib/modules").display());
    Ok(())
}

/// The library names the configuration key; on the command line, `--source` is the way.
fn with_flag_hint(err: busyroot::Error) -> anyhow::Error {
    match &err {
        busyroot::Error::KernelFetch { local_source: Some(path), .. } => {
            anyhow::anyhow!("{err}, or pass --source {}", path.display())
        }
        _ => err.into(),
    }
}
