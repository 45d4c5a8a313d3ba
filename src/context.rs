//! What a command resolves once and passes down: the [`Context`] (workspace, architecture,
//! [`Layout`], download settings, file times, compiler) the rootfs and kernel builders, the
//! runner's callers, the matrix and the bench share; the `Layout` of everything under
//! `<target>/busyroot/<arch>/`; and the file times of reproducible outputs
//! (`SOURCE_DATE_EPOCH`).

use std::path::{Path, PathBuf};

use xshell::Shell;

use crate::arch::Arch;
use crate::config::Workspace;
use crate::error::Result;
use crate::host::fetch::FetchOptions;
use crate::host::toolchain::Toolchain;
use crate::image::Format;

/// What one command works with, resolved once: the workspace, the architecture and its
/// [`Layout`], how to download, the file times and the C compiler. The builders take it
/// whole; its setters are the only ones for these settings.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) workspace: Workspace,
    pub(crate) layout: Layout,
    pub(crate) fetch: FetchOptions,
    pub(crate) source_date_epoch: Option<u64>,
    pub(crate) toolchain: Option<Toolchain>,
}

impl Context {
    /// The context for the configured architecture, else the host's, fetching as the
    /// environment says ([`FetchOptions::from_env`]).
    pub fn new(workspace: Workspace) -> Result<Context> {
        let arch = Arch::configured_or_host(workspace.config.arch)?;
        Ok(Context::for_arch(workspace, arch))
    }

    /// The context for `arch`, whatever the configuration and the host say.
    pub fn for_arch(workspace: Workspace, arch: Arch) -> Context {
        Context {
            layout: Layout::new(&workspace, arch),
            workspace,
            fetch: FetchOptions::from_env(),
            source_date_epoch: None,
            toolchain: None,
        }
    }

    /// Never use the network (in addition to `BUSYROOT_OFFLINE`).
    pub fn offline(&mut self, offline: bool) -> &mut Context {
        self.fetch.offline |= offline;
        self
    }

    /// Replaces the download settings.
    pub fn fetch_options(&mut self, fetch: FetchOptions) -> &mut Context {
        self.fetch = fetch;
        self
    }

    /// Fixes the file times of the outputs (default: `SOURCE_DATE_EPOCH`, else the last git
    /// commit's date for the rootfs and `FALLBACK_EPOCH` for the kernel, so that committing
    /// does not rebuild the kernel).
    pub fn source_date_epoch(&mut self, epoch: u64) -> &mut Context {
        self.source_date_epoch = Some(epoch);
        self
    }

    /// Uses this C compiler instead of looking one up.
    pub fn toolchain(&mut self, toolchain: Toolchain) -> &mut Context {
        self.toolchain = Some(toolchain);
        self
    }

    /// The workspace and its configuration.
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// The architecture built and booted.
    pub fn arch(&self) -> Arch {
        self.layout.arch()
    }

    /// Every path under `<target>/busyroot/<arch>/`.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The download settings.
    pub fn fetch(&self) -> &FetchOptions {
        &self.fetch
    }
}

/// Every path under `<target>/busyroot/`, named here and nowhere else: an architecture's
/// directory and the ones the architectures share (sources, matrix cells, LAVA jobs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    dir: PathBuf,
    arch: Arch,
}

impl Layout {
    /// The layout of `ws`'s target directory for `arch`.
    pub fn new(ws: &Workspace, arch: Arch) -> Layout {
        Layout::in_target(&ws.target_dir, arch)
    }

    /// The layout of the target directory `target` for `arch` (a build script's `OUT_DIR`).
    pub fn in_target(target: &Path, arch: Arch) -> Layout {
        Layout { dir: Layout::root(target).join(arch.name()), arch }
    }

    /// `<target>/busyroot/`, which holds everything busyroot writes into `target`.
    pub fn root(target: &Path) -> PathBuf {
        target.join("busyroot")
    }

    /// The shared directory of unpacked sources: `<target>/busyroot/src/<name>`.
    pub fn source(&self, name: &str) -> PathBuf {
        self.shared().join("src").join(name)
    }

    /// The work directory of matrix cell `name`: `<target>/busyroot/matrix/<name>/`.
    pub fn matrix_cell(&self, name: &str) -> PathBuf {
        self.shared().join("matrix").join(name)
    }

    /// The output directory of LAVA job `label`: `<target>/busyroot/lava/<label>/`.
    pub fn lava_job(&self, label: &str) -> PathBuf {
        self.shared().join("lava").join(label)
    }

    fn shared(&self) -> &Path {
        self.dir.parent().expect("the layout's directory is under <target>/busyroot")
    }

    /// `<target>/busyroot/<arch>/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The architecture the layout is for.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The rootfs build's lock file.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("busyroot.lock")
    }

    /// The stage stamps and output sums of the rootfs build.
    pub fn stamps(&self) -> PathBuf {
        self.dir.join("stamps")
    }

    /// The output in `format`.
    pub fn output(&self, format: Format) -> PathBuf {
        self.dir.join(format.file_name())
    }

    /// The unpacked BusyBox source of `version`, built in place.
    pub fn busybox_src(&self, version: &str) -> PathBuf {
        self.dir.join(format!("busybox-{version}"))
    }

    /// Where `make install` puts BusyBox.
    pub fn install(&self) -> PathBuf {
        self.dir.join("install")
    }

    /// The full log of the BusyBox build.
    pub fn busybox_log(&self) -> PathBuf {
        self.dir.join("busybox-build.log")
    }

    /// Where `cargo xtask kernel` puts the image and its `.config`.
    pub fn kernel_dir(&self) -> PathBuf {
        self.dir.join("kernel")
    }

    /// The built kernel image: `kernel/bzImage` or `kernel/Image`.
    pub fn kernel_image(&self) -> PathBuf {
        let image = self.arch.info().kernel_image;
        self.kernel_dir().join(image.rsplit('/').next().unwrap_or(image))
    }

    /// The kernel's out-of-tree build directory.
    pub fn kernel_build(&self) -> PathBuf {
        self.dir.join("kernel-build")
    }

    /// The full log of every kernel make run.
    pub fn kernel_log(&self) -> PathBuf {
        self.dir.join("kernel-build.log")
    }

    /// Where `distro`'s kernel package is unpacked: `boot/vmlinuz-<release>`, its
    /// `config-<release>` and `lib/modules/<release>/`.
    pub fn distro_kernel(&self, distro: &str) -> PathBuf {
        self.dir.join(format!("kernel-{distro}"))
    }

    /// The kernel build's lock file.
    pub fn kernel_lock(&self) -> PathBuf {
        self.dir.join("kernel.lock")
    }
}

/// Used for file times when neither `SOURCE_DATE_EPOCH` nor a git commit gives one:
/// 2000-01-01T00:00:00Z.
pub(crate) const FALLBACK_EPOCH: u64 = 946_684_800;

/// `SOURCE_DATE_EPOCH`, else the date of the workspace's last git commit, else
/// `FALLBACK_EPOCH` (2000-01-01).
pub fn source_date_epoch(sh: &Shell, root: &Path) -> u64 {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()) {
        return e;
    }
    let _dir = sh.push_dir(root);
    crate::host::exec::read(xshell::cmd!(sh, "git log -1 --format=%ct"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(FALLBACK_EPOCH)
}
