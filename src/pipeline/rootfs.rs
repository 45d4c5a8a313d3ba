//! The rootfs builder: fetch → unpack → configure → build → install → manifest → images.
//!
//! Invariant: the manifest is the only input of the image writers, and every output is
//! published by an atomic rename, so the three outputs always describe one and the same tree.

use std::path::{Path, PathBuf};
use std::time::Instant;

use xshell::Shell;

use crate::arch::Arch;
use crate::config::ImageSizeSetting;
use crate::context::{source_date_epoch, Context, FALLBACK_EPOCH};
use crate::error::{Error, Result};
use crate::host::fetch;
use crate::host::fs::{sha256_bytes, sha256_file};
use crate::image::{ext4, Format};
use crate::inputs::{Input, Origin, RootfsInputs};
use crate::pipeline::busybox::{BusyboxBuild, Toolchain};
use crate::pipeline::stage::{manifest_digest, Fingerprint, OutputState, StageReport, Stages};
use crate::progress::Progress;
use crate::tree::devtable::DeviceTable;
use crate::tree::layers::{Layer, LayerStack};
use crate::tree::manifest::Manifest;

/// One output file with what the summary reports about it.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its format.
    pub format: Format,
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
    /// Each output, in the order of [`Format::ALL`]; [`Outputs::path`] finds one.
    pub files: Vec<Output>,
    /// Number of entries in the manifest, the root included.
    pub entries: usize,
    /// Every stage in order, fresh or with the reason it ran.
    pub stages: Vec<StageReport>,
    /// Every input the images were built from, configured or built in, in the order used.
    pub inputs: Vec<Input>,
}

/// Builds a root filesystem for one architecture from a workspace's configuration.
#[derive(Debug, Clone)]
pub struct RootfsBuilder {
    ctx: Context,
}

impl Outputs {
    /// The output in `format`.
    pub fn get(&self, format: Format) -> &Output {
        self.files.iter().find(|f| f.format == format).expect("every format is written")
    }

    /// Where the output in `format` is.
    pub fn path(&self, format: Format) -> &Path {
        &self.get(format).path
    }
}

impl RootfsBuilder {
    /// A builder for `ctx`'s workspace and architecture, with its download settings, file
    /// times and compiler.
    pub fn new(ctx: Context) -> RootfsBuilder {
        RootfsBuilder { ctx }
    }

    /// The context it builds in.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Runs every stage that is not fresh and returns the outputs with a report of what ran.
    pub fn build(&self, sh: &Shell, progress: &dyn Progress) -> Result<Outputs> {
        let ws = &self.ctx.workspace;
        let cfg = &ws.config;
        let layout = &self.ctx.layout;
        let dir = layout.dir().to_path_buf();
        let stamps = layout.stamps();
        let _lock = crate::host::lock::DirLock::acquire(&layout.lock(), progress)?;
        // Under the lock no other run is writing, so temporary files here are leftovers of a
        // run that was killed.
        crate::host::fs::remove_dead_temporaries(&dir)?;

        // Everything the run needs from the host, reported at once before any work starts.
        let toolchain = match &self.ctx.toolchain {
            Some(t) => {
                crate::host::tools::check(crate::host::tools::ROOTFS_TOOLS)?;
                t.clone()
            }
            None => check_host_tools(sh, self.ctx.arch(), &stamps)?,
        };
        let epoch = self.ctx.source_date_epoch.unwrap_or_else(|| source_date_epoch(sh, &ws.root));

        let source = cfg.busybox.source();
        let bb = BusyboxBuild {
            src: layout.busybox_src(&cfg.busybox.version),
            install_dir: layout.install(),
            log: layout.busybox_log(),
            toolchain,
            source_date_epoch: epoch,
        };
        // Which inputs are configured and which are busyroot's own, said before any work.
        let inputs = ws.rootfs_inputs()?;
        for input in inputs.all() {
            progress.input(input);
        }
        let checked_in = inputs.busybox_config.path.clone();
        let config_text =
            std::fs::read(&checked_in).map_err(|e| Error::io("read", &checked_in, e))?;

        // The tarball is needed only to unpack, so a fresh tree needs neither cache nor network.
        let unpack_fp = Fingerprint::new().with("tarball", &source.sha256);
        let mut stage = Stages::new(progress, stamps.clone());
        stage.run("unpack", &unpack_fp, OutputState::intact_if(bb.src.is_dir()), || {
            let tarball = fetch::fetch(sh, &source, &self.ctx.fetch, progress)?;
            bb.unpack(&tarball, &source.sha256)?;
            Ok(bb.src.display().to_string())
        })?;

        let configure_fp =
            Fingerprint::new().after("tarball", &unpack_fp).with("busybox config", &config_text);
        // A freshly unpacked tree has no `.config`: configure must run again, whatever its stamp.
        let configured = OutputState::intact_if(bb.src.join(".config").is_file());
        stage.run("configure", &configure_fp, configured, || {
            bb.configure(sh, &checked_in, progress).map(|()| String::new())
        })?;

        // SOURCE_DATE_EPOCH is not an input here: with KCONFIG_NOTIMESTAMP the binary holds no
        // date, so a new commit only restamps the images instead of rerunning make.
        let build_fp = Fingerprint::new()
            .after("configuration", &configure_fp)
            .with("toolchain", bb.toolchain.identity(sh, Some(&stamps)));
        let built = OutputState::intact_if(bb.src.join("busybox").is_file());
        stage.run("build busybox", &build_fp, built, || {
            bb.build(sh, progress)?;
            bb.check_binary(self.ctx.arch()).map(|()| String::new())
        })?;
        let install_fp = Fingerprint::new().after("busybox", &build_fp);
        let installed = OutputState::intact_if(bb.install_dir.join("bin/busybox").exists());
        stage.run("install", &install_fp, installed, || {
            bb.install(sh, progress).map(|()| String::new())
        })?;

        let started = Instant::now();
        let manifest = compose(&inputs, &bb.install_dir, epoch)?;
        progress.finish("manifest", started.elapsed(), &format!("{} entries", manifest.len()));
        let manifest_fp = Fingerprint::new()
            .with("manifest", manifest_digest(&manifest, Some(&stamps.join("content-hashes")))?);

        let outputs = Outputs {
            dir: dir.clone(),
            files: Vec::new(),
            entries: manifest.len(),
            stages: Vec::new(),
            inputs: inputs.all().cloned().collect(),
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
                .unwrap_or_else(|| derived_uuid("uuid", &cfg.image.label, self.ctx.arch())),
            hash_seed: derived_uuid("hash_seed", &cfg.image.label, self.ctx.arch()),
            timestamp: epoch,
        };
        let ext4_fp = Fingerprint::new()
            .after("content", &manifest_fp)
            .with("image settings", format!("{opts:?}"));
        let mut files = Vec::new();
        for format in Format::ALL {
            let (name, path) = (format.file_name(), layout.output(format));
            let fp = if format.uses_settings() { &ext4_fp } else { &manifest_fp };
            // Each output's size and sha256 are kept beside its stamp: the summary needs no
            // rehashing, and an output changed behind our back is noticed and rewritten.
            let sum_path = stamps.join(format!("{name}.sum"));
            let recorded = OutputSum::load(&sum_path);
            let intact = recorded.as_ref().is_some_and(|r| r.matches(&path));
            let ran = stage.run(name, fp, OutputState::intact_if(intact), || {
                format.write(sh, &manifest, &path, &opts).map(|()| String::new())
            })?;
            let sum = match recorded {
                Some(sum) if !ran => sum,
                _ => {
                    let sum = OutputSum::compute(&path)?;
                    sum.store(&sum_path)?;
                    sum
                }
            };
            files.push(Output { format, path, size: sum.size, sha256: sum.sha256 });
        }
        Ok(Outputs { files, stages: stage.into_report(), ..outputs })
    }

    /// Opens BusyBox's menuconfig on the checked-in config (unpacking the source first if
    /// needed) and writes the result back; returns the path of the checked-in config.
    pub fn menuconfig(&self, sh: &Shell, progress: &dyn Progress) -> Result<PathBuf> {
        let ws = &self.ctx.workspace;
        let cfg = &ws.config.busybox;
        let layout = &self.ctx.layout;
        let _lock = crate::host::lock::DirLock::acquire(&layout.lock(), progress)?;
        let bb = BusyboxBuild {
            src: layout.busybox_src(&cfg.version),
            install_dir: layout.install(),
            log: layout.busybox_log(),
            toolchain: match &self.ctx.toolchain {
                Some(t) => t.clone(),
                None => Toolchain::find(self.ctx.arch())?,
            },
            source_date_epoch: FALLBACK_EPOCH,
        };
        let source = cfg.source();
        let tarball = fetch::fetch(sh, &source, &self.ctx.fetch, progress)?;
        bb.unpack(&tarball, &source.sha256)?;
        let checked_in = ws.busybox_config()?;
        // Unset, `busybox.config` is busyroot's own file, which in a dependent lies in Cargo's
        // checkout or a vendored copy: never edit that in place.
        if checked_in.origin == Origin::BuiltIn && !checked_in.path.starts_with(&ws.root) {
            return Err(Error::Other(format!(
                "`busybox.config` is unset, so the build uses busyroot's built-in `{}`, which \
                 is not yours to edit; copy it into your workspace, set `busybox.config` in \
                 [workspace.metadata.busyroot] of `{}` to the copy, and run this again",
                checked_in.path.display(),
                ws.root.join("Cargo.toml").display()
            )));
        }
        let checked_in = checked_in.path;
        bb.menuconfig(sh, &checked_in)?;
        Ok(checked_in)
    }

    /// The manifest: the BusyBox install, the skeleton trees and the overlays over it in
    /// order, then the device tables.
    pub fn manifest(&self, install_dir: &Path, epoch: u64) -> Result<Manifest> {
        compose(&self.ctx.workspace.rootfs_inputs()?, install_dir, epoch)
    }
}

/// Stacks the layers of `inputs` over the BusyBox install and applies the device tables.
fn compose(inputs: &RootfsInputs, install_dir: &Path, epoch: u64) -> Result<Manifest> {
    let mut manifest = Manifest::new(epoch);
    let mut stack = LayerStack::new(&mut manifest, epoch);
    stack.add(&Layer { name: "the BusyBox install".into(), path: install_dir.to_path_buf() })?;
    for (what, input) in inputs
        .skeleton
        .iter()
        .map(|i| ("skeleton", i))
        .chain(inputs.overlays.iter().map(|i| ("overlay", i)))
    {
        let built_in = if input.origin == Origin::BuiltIn { " (built-in)" } else { "" };
        let name = format!("{what} `{}`{built_in}", input.shown.display());
        stack.add(&Layer { name, path: input.path.clone() })?;
    }
    for table in &inputs.device_tables {
        DeviceTable::load(&table.path)?.apply(&mut manifest, epoch)?;
    }
    Ok(manifest)
}

/// Checks the host programs and the C compiler, reporting everything missing in one error.
fn check_host_tools(sh: &Shell, arch: Arch, memo: &Path) -> Result<Toolchain> {
    let tools = crate::host::tools::check(crate::host::tools::ROOTFS_TOOLS);
    let toolchain = Toolchain::find_for_busybox(sh, arch, Some(memo));
    match (tools, toolchain) {
        (Ok(()), Ok(t)) => Ok(t),
        (Err(Error::MissingTools(mut tools)), Err(Error::MissingTools(more))) => {
            tools.extend(more);
            Err(Error::MissingTools(tools))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// A fixed UUID derived from the label and architecture, so images are bit-identical.
fn derived_uuid(purpose: &str, label: &str, arch: Arch) -> String {
    let h = sha256_bytes(format!("busyroot {purpose} {label} {arch}").as_bytes());
    // Shape it as a version-4 UUID (random-looking, from a hash).
    let mut hex: Vec<char> = h[..32].chars().collect();
    hex[12] = '4';
    hex[16] = ['8', '9', 'a', 'b'][hex[16].to_digit(16).unwrap_or(0) as usize % 4];
    let s: String = hex.into_iter().collect();
    format!("{}-{}-{}-{}-{}", &s[..8], &s[8..12], &s[12..16], &s[16..20], &s[20..])
}

/// Size and sha256 of an output, stored beside its stamp.
struct OutputSum {
    size: u64,
    mtime: i64,
    sha256: String,
}

impl OutputSum {
    fn compute(path: &Path) -> Result<OutputSum> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        Ok(OutputSum { size: meta.len(), mtime: meta.mtime(), sha256: sha256_file(path)? })
    }

    fn load(path: &Path) -> Option<OutputSum> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut words = text.split_whitespace();
        let size = words.next()?.parse().ok()?;
        let mtime = words.next()?.parse().ok()?;
        Some(OutputSum { size, mtime, sha256: words.next()?.to_string() })
    }

    fn store(&self, path: &Path) -> Result<()> {
        let text = format!("{} {} {}\n", self.size, self.mtime, self.sha256);
        crate::host::fs::write_file(path, text)
    }

    /// True when the file still has the recorded size and modification time.
    fn matches(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).is_ok_and(|m| m.len() == self.size && m.mtime() == self.mtime)
    }
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
