//! The rootfs builder: fetch → unpack → configure → build → install → manifest → images.
//!
//! Invariant: the manifest is the only input of the image writers, and every output is
//! published by an atomic rename, so the three outputs always describe one and the same tree.

use std::path::{Path, PathBuf};
use std::time::Instant;

use xshell::Shell;

use crate::arch::Arch;
use crate::busybox::{BusyboxBuild, Toolchain};
use crate::config::{ImageSizeSetting, Workspace};
use crate::devtable::DeviceTable;
use crate::error::{Error, Result};
use crate::fetch::{self, FetchOptions, Source};
use crate::image::{self, ext4};
use crate::manifest::Manifest;
use crate::progress::Progress;

/// Used for file times when neither `SOURCE_DATE_EPOCH` nor a git commit gives one:
/// 2000-01-01T00:00:00Z.
pub const FALLBACK_EPOCH: u64 = 946_684_800;

/// One output file with what the summary reports about it.
#[derive(Debug, Clone)]
pub struct Output {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, lower-case hex.
    pub sha256: String,
}

/// The files a rootfs build produced.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// `<target>/busyroot/<arch>/`.
    pub dir: PathBuf,
    /// The ext4 root filesystem image.
    pub ext4: PathBuf,
    /// The gzip-compressed newc initramfs.
    pub cpio: PathBuf,
    /// The tar archive.
    pub tar: PathBuf,
    /// Size and checksum of each of the three, in the order ext4, cpio, tar.
    pub files: Vec<Output>,
    /// Number of entries in the manifest, the root included.
    pub entries: usize,
}

/// Builds a root filesystem for one architecture from a workspace's configuration.
#[derive(Debug, Clone)]
pub struct RootfsBuilder {
    workspace: Workspace,
    arch: Arch,
    fetch: FetchOptions,
    source_date_epoch: Option<u64>,
}

impl RootfsBuilder {
    /// A builder for the configured architecture (else the host's), fetching as the
    /// environment says ([`FetchOptions::from_env`]).
    pub fn new(workspace: Workspace) -> Result<RootfsBuilder> {
        let arch = match workspace.config.arch.or_else(Arch::host) {
            Some(arch) => arch,
            None => {
                return Err(Error::Other(format!(
                    "the host architecture `{}` is not supported; pass --arch",
                    std::env::consts::ARCH
                )))
            }
        };
        Ok(RootfsBuilder {
            workspace,
            arch,
            fetch: FetchOptions::from_env(),
            source_date_epoch: None,
        })
    }

    /// Builds for `arch` instead.
    pub fn arch(&mut self, arch: Arch) -> &mut RootfsBuilder {
        self.arch = arch;
        self
    }

    /// Never use the network (in addition to `BUSYROOT_OFFLINE`).
    pub fn offline(&mut self, offline: bool) -> &mut RootfsBuilder {
        self.fetch.offline |= offline;
        self
    }

    /// Replaces the download settings.
    pub fn fetch_options(&mut self, fetch: FetchOptions) -> &mut RootfsBuilder {
        self.fetch = fetch;
        self
    }

    /// Fixes the timestamp of every file (default: `SOURCE_DATE_EPOCH`, else the last git
    /// commit's date, else [`FALLBACK_EPOCH`]).
    pub fn source_date_epoch(&mut self, epoch: u64) -> &mut RootfsBuilder {
        self.source_date_epoch = Some(epoch);
        self
    }

    /// The architecture being built.
    pub fn target_arch(&self) -> Arch {
        self.arch
    }

    /// Where the outputs go: `<target>/busyroot/<arch>/`.
    pub fn output_dir(&self) -> PathBuf {
        self.workspace.arch_dir(self.arch)
    }

    /// Runs every step and returns the outputs.
    pub fn build(&self, sh: &Shell, progress: &dyn Progress) -> Result<Outputs> {
        let ws = &self.workspace;
        let cfg = &ws.config;
        let dir = self.output_dir();

        // Everything the run needs from the host, reported at once before any work starts.
        let toolchain = check_host_tools(self.arch)?;
        let epoch = match self.source_date_epoch {
            Some(e) => e,
            None => source_date_epoch(sh, &ws.root),
        };

        let source = Source {
            url: cfg.busybox.url(),
            file_name: cfg.busybox.file_name(),
            sha256: cfg.busybox.sha256.clone(),
        };
        let tarball = step(progress, "fetch busybox", || {
            let path = fetch::fetch(sh, &source, &self.fetch, progress)?;
            Ok((path, source.file_name.clone()))
        })?;

        let bb = BusyboxBuild {
            src: dir.join(format!("busybox-{}", cfg.busybox.version)),
            install_dir: dir.join("install"),
            log: dir.join("busybox-build.log"),
            toolchain,
            source_date_epoch: epoch,
        };
        step(progress, "unpack", || {
            let fresh = !bb.unpack(&tarball, &source.sha256)?;
            Ok(((), if fresh { "fresh".into() } else { bb.src.display().to_string() }))
        })?;
        let checked_in = ws.path(&cfg.busybox.config);
        step(progress, "configure", || {
            bb.configure(sh, &checked_in, progress).map(|()| ((), String::new()))
        })?;
        step(progress, "build busybox", || bb.build(sh, progress).map(|()| ((), String::new())))?;
        step(progress, "install", || bb.install(sh, progress).map(|()| ((), String::new())))?;

        let manifest = step(progress, "manifest", || {
            let m = self.manifest(&bb.install_dir, epoch)?;
            let n = m.len();
            Ok((m, format!("{n} entries")))
        })?;

        let outputs = Outputs {
            ext4: dir.join("rootfs.ext4"),
            cpio: dir.join("rootfs.cpio.gz"),
            tar: dir.join("rootfs.tar"),
            dir: dir.clone(),
            files: Vec::new(),
            entries: manifest.len(),
        };
        let opts = ext4::Ext4Options {
            size: match cfg.image.size {
                ImageSizeSetting::Mib(n) => ext4::ImageSize::Bytes(n << 20),
                ImageSizeSetting::Auto => ext4::ImageSize::Auto,
            },
            label: cfg.image.label.clone(),
            uuid: cfg
                .image
                .uuid
                .clone()
                .unwrap_or_else(|| derived_uuid("uuid", &cfg.image.label, self.arch)),
            hash_seed: derived_uuid("hash_seed", &cfg.image.label, self.arch),
            timestamp: epoch,
        };
        step(progress, "write rootfs.ext4", || {
            ext4::write(sh, &manifest, &outputs.ext4, &opts).map(|()| ((), String::new()))
        })?;
        step(progress, "write rootfs.cpio.gz", || {
            image::cpio::write(&manifest, &outputs.cpio).map(|()| ((), String::new()))
        })?;
        step(progress, "write rootfs.tar", || {
            image::tar::write(&manifest, &outputs.tar).map(|()| ((), String::new()))
        })?;

        let mut files = Vec::new();
        for path in [&outputs.ext4, &outputs.cpio, &outputs.tar] {
            let size = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?.len();
            files.push(Output { path: path.clone(), size, sha256: fetch::sha256_file(path)? });
        }
        Ok(Outputs { files, ..outputs })
    }

    /// The manifest: BusyBox install, then the skeleton over it, then the device table.
    pub fn manifest(&self, install_dir: &Path, epoch: u64) -> Result<Manifest> {
        let ws = &self.workspace;
        let mut manifest = Manifest::new(epoch);
        crate::skeleton::add_tree(&mut manifest, install_dir, epoch)?;
        crate::skeleton::add_tree(&mut manifest, &ws.path(&ws.config.skeleton), epoch)?;
        DeviceTable::load(&ws.path(&ws.config.device_table))?.apply(&mut manifest, epoch)?;
        Ok(manifest)
    }
}

/// Checks the host programs and the C compiler, reporting everything missing in one error.
fn check_host_tools(arch: Arch) -> Result<Toolchain> {
    let tools = crate::hosttools::check(crate::hosttools::ROOTFS_TOOLS);
    let toolchain = Toolchain::find(arch);
    match (tools, toolchain) {
        (Ok(()), Ok(t)) => Ok(t),
        (
            Err(Error::MissingTools { list: l1, install: i1 }),
            Err(Error::MissingTools { list: l2, install: i2 }),
        ) => {
            let extra = i2.trim_start_matches("sudo apt-get install");
            Err(Error::MissingTools {
                list: format!("{l1}\n{l2}"),
                install: format!("{i1}{extra}"),
            })
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// `SOURCE_DATE_EPOCH`, else the date of the workspace's last git commit, else
/// [`FALLBACK_EPOCH`].
pub fn source_date_epoch(sh: &Shell, root: &Path) -> u64 {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()) {
        return e;
    }
    let _dir = sh.push_dir(root);
    xshell::cmd!(sh, "git log -1 --format=%ct")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(FALLBACK_EPOCH)
}

/// A fixed UUID derived from the label and architecture, so images are bit-identical.
fn derived_uuid(purpose: &str, label: &str, arch: Arch) -> String {
    let h = fetch::sha256_bytes(format!("busyroot {purpose} {label} {arch}").as_bytes());
    // Shape it as a version-4 UUID (random-looking, from a hash).
    let mut hex: Vec<char> = h[..32].chars().collect();
    hex[12] = '4';
    hex[16] = ['8', '9', 'a', 'b'][hex[16].to_digit(16).unwrap_or(0) as usize % 4];
    let s: String = hex.into_iter().collect();
    format!("{}-{}-{}-{}-{}", &s[..8], &s[8..12], &s[12..16], &s[16..20], &s[20..])
}

/// Runs one step, reporting its start, duration and result.
fn step<T>(
    progress: &dyn Progress,
    name: &str,
    f: impl FnOnce() -> Result<(T, String)>,
) -> Result<T> {
    progress.start(name);
    let start = Instant::now();
    let (value, detail) = f()?;
    progress.finish(name, start.elapsed(), &detail);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_well_formed() {
        let a = derived_uuid("uuid", "rootfs", Arch::X86_64);
        assert_eq!(a, derived_uuid("uuid", "rootfs", Arch::X86_64));
        assert_ne!(a, derived_uuid("uuid", "rootfs", Arch::Aarch64));
        assert_ne!(a, derived_uuid("hash_seed", "rootfs", Arch::X86_64));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
