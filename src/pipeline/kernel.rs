//! The boot-test kernel: a Linux source (the pinned download, a local tarball or a tree)
//! configured as tinyconfig plus the checked-in fragments, built out of tree, and cached by a
//! fingerprint of its inputs.
//!
//! Invariant: every option a fragment sets has that value in the final `.config`; otherwise
//! the build stops and names each option that was lost, and the fragment that asked for it.
//! Invariant: a source given by path is never written to; downloads are used only after their
//! sha256 matched, and an unpacked tree appears under its final name only when complete.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

use crate::arch::Arch;
use crate::context::{Context, FALLBACK_EPOCH};
use crate::error::{Error, IoContext, MissingTools, Result};
use crate::host::exec::run_logged;
use crate::host::fetch;
use crate::host::fs::{
    copy_file, file_identity, remove_dead_temporaries, sha256_bytes, sha256_file, temp_path,
};
use crate::host::tools::{find_program, Tool};
use crate::pipeline::busybox::Toolchain;
use crate::pipeline::stage::{timed, Fingerprint, OutputState, StageReport, Stages};
use crate::progress::Progress;

/// The fragment every architecture uses; `<arch>.config` beside it adds the arch's own.
pub(crate) const COMMON_FRAGMENT: &str = "common.config";

/// Part of every kernel build's fingerprint and cache key: raise it when busyroot changes how
/// it configures or builds a kernel, so that no build or cached kernel from before is reused.
pub(crate) const KERNEL_STAGE_VERSION: u32 = 3;

/// The host programs a kernel build runs, besides the C compiler.
pub(crate) const KERNEL_TOOLS: &[Tool] = &[
    Tool { program: "make", purpose: "building the kernel", package: "make" },
    Tool { program: "bc", purpose: "kernel build (timeconst)", package: "bc" },
    Tool { program: "flex", purpose: "kernel build (Kconfig lexer)", package: "flex" },
    Tool { program: "bison", purpose: "kernel build (Kconfig parser)", package: "bison" },
];

/// Needed to unpack `.tar.xz` sources, which the in-process unpacker does not read.
const XZ_TOOLS: &[Tool] = &[
    Tool { program: "tar", purpose: "unpacking the kernel source", package: "tar" },
    Tool { program: "xz", purpose: "unpacking the kernel source", package: "xz-utils" },
];

/// A C header the kernel's host tools include, and the package that provides it.
struct Header {
    file: &'static str,
    purpose: &'static str,
    package: &'static str,
}

const KERNEL_HEADERS: &[Header] =
    &[Header { file: "gelf.h", purpose: "kernel build (objtool)", package: "libelf-dev" }];

/// The file name endings of the source tarballs busyroot unpacks.
pub(crate) const TARBALL_SUFFIXES: [&str; 7] =
    [".tar.xz", ".tar.gz", ".tar.bz2", ".tar", ".txz", ".tgz", ".tbz2"];

/// [`TARBALL_SUFFIXES`] as the messages and the command-line help list them.
#[doc(hidden)]
pub const TARBALL_NAMES: &str = ".tar.xz, .tar.gz, .tar.bz2, .tar, .txz, .tgz or .tbz2";

/// Where the kernel's source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// The release pinned in `[workspace.metadata.busyroot.kernel]`, fetched and cached like
    /// the BusyBox tarball.
    Pinned,
    /// A tarball downloaded from `url` and used only if its sha256 matches.
    Url {
        /// Where to download it.
        url: String,
        /// Its expected sha256, lower-case hex.
        sha256: String,
    },
    /// A local tarball (any of `TARBALL_SUFFIXES`), used as is.
    Tarball(PathBuf),
    /// An unpacked source tree, built out of tree (`O=`) and never written to.
    Tree(PathBuf),
}

impl KernelSource {
    /// Interprets a `--source` value: a URL (which needs `sha256`), else a path to a tarball
    /// or a source directory, relative to `base`.
    pub fn parse(value: &str, sha256: Option<&str>, base: &Path) -> Result<KernelSource> {
        if value.contains("://") {
            let Some(sha256) = sha256 else {
                return Err(Error::Other(format!(
                    "`--source {value}` needs `--sha256 <hex>`: a download is used only once \
                     its checksum matched; take it from the publisher's checksum list"
                )));
            };
            if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::Other(format!(
                    "`--sha256 {sha256}` is not a sha256: expected 64 hexadecimal digits"
                )));
            }
            return Ok(KernelSource::Url { url: value.into(), sha256: sha256.to_lowercase() });
        }
        if sha256.is_some() {
            return Err(Error::Other(format!(
                "`--sha256` applies to a `--source` URL only; `{value}` is a local path, which \
                 is used as is"
            )));
        }
        KernelSource::from_path(&base.join(value))
    }

    /// A local tarball or tree, told apart by whether `path` is a directory.
    pub fn from_path(path: &Path) -> Result<KernelSource> {
        let unusable = |why: String| {
            Error::Other(format!(
                "kernel source `{}` cannot be used: {why}; give a Linux source tarball \
                 ({TARBALL_NAMES}) or an unpacked source tree",
                path.display()
            ))
        };
        let meta = fs::metadata(path).map_err(|e| unusable(e.to_string()))?;
        let path = path.canonicalize().with_path("resolve", path)?;
        if meta.is_dir() {
            return Ok(KernelSource::Tree(path));
        }
        let name = path.to_string_lossy();
        let tarball = TARBALL_SUFFIXES.iter().any(|ext| name.ends_with(ext));
        if !tarball {
            return Err(unusable("not a directory and not named like a tarball".into()));
        }
        Ok(KernelSource::Tarball(path))
    }
}

/// An option a fragment asks for that the final configuration does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LostOption {
    /// `CONFIG_…`.
    pub name: String,
    /// The value the fragment sets; `None` for `# CONFIG_… is not set` (or `=n`).
    pub requested: Option<String>,
    /// The value in the final `.config`; `None` when unset.
    pub actual: Option<String>,
    /// The fragment that set it last.
    pub fragment: PathBuf,
}

/// A configuration fragment: where it is and what it says.
#[derive(Debug, Clone)]
pub(crate) struct Fragment {
    /// Its path relative to the workspace root (absolute if it lies elsewhere).
    pub path: PathBuf,
    /// Its contents.
    pub text: String,
}

/// Every option the fragments set (a later fragment overriding an earlier one) that `config`
/// does not have with the same value. An option missing from `config` counts as unset.
pub(crate) fn lost_options(fragments: &[Fragment], config: &str) -> Vec<LostOption> {
    let mut wanted: BTreeMap<String, (Option<String>, &Path)> = BTreeMap::new();
    for fragment in fragments {
        for (name, value) in crate::host::kconfig::parse(&fragment.text) {
            wanted.insert(name, (value, &fragment.path));
        }
    }
    let actual = crate::host::kconfig::parse(config);
    wanted
        .into_iter()
        .filter_map(|(name, (requested, fragment))| {
            let got = actual.get(&name).cloned().flatten();
            (got != requested).then(|| LostOption {
                name,
                requested,
                actual: got,
                fragment: fragment.to_path_buf(),
            })
        })
        .collect()
}

/// The error for lost options: one line per option, naming the option, its fragment and,
/// when `known` says the kernel has no such option at all, that it is misspelt or gone.
fn lost_options_error(
    lost: &[LostOption],
    known: &BTreeSet<String>,
    dot_config: &Path,
    fragments_dir: &Path,
) -> Error {
    let show = |name: &str, value: &Option<String>| match value {
        Some(v) => format!("{name}={v}"),
        None => format!("`# {name} is not set`"),
    };
    let lines: Vec<String> = lost
        .iter()
        .map(|o| {
            let wanted = show(&o.name, &o.requested);
            let by = o.fragment.display();
            let why = match (&o.requested, &o.actual) {
                _ if !known.contains(&o.name) => "is not an option of this kernel (misspelt, \
                                                  or renamed or removed in this version)"
                    .to_string(),
                (Some(_), None) => "was dropped (unmet dependency?)".to_string(),
                (None, Some(v)) => format!("is still set to {v} (selected by another option?)"),
                (Some(_), Some(v)) => format!("became {v} (limited by a dependency?)"),
                (None, None) => unreachable!("an unset option that stayed unset is not lost"),
            };
            format!("{wanted} requested by `{by}` {why}")
        })
        .collect();
    Error::Config {
        path: fragments_dir.to_path_buf(),
        message: format!(
            "the kernel configuration lost {} option(s) the fragments set:\n  {}\n\
             add what they depend on to the fragment (in `make menuconfig`, `/` and the \
             option's name shows its dependencies) or remove them; the merged configuration \
             is `{}`",
            lost.len(),
            lines.join("\n  "),
            dot_config.display()
        ),
    }
}

/// The names among `names` that some `Kconfig*` file under `tree` defines.
fn known_options(tree: &Path, names: &BTreeSet<String>) -> BTreeSet<String> {
    fn walk(dir: &Path, names: &BTreeSet<String>, found: &mut BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            let path = entry.path();
            if kind.is_dir() {
                walk(&path, names, found);
            } else if kind.is_file() && entry.file_name().to_string_lossy().starts_with("Kconfig") {
                let Ok(text) = fs::read_to_string(&path) else { continue };
                for line in text.lines() {
                    let mut words = line.split_whitespace();
                    if matches!(words.next(), Some("config" | "menuconfig")) {
                        if let Some(symbol) = words.next() {
                            let name = format!("CONFIG_{symbol}");
                            if names.contains(&name) {
                                found.insert(name);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(tree, names, &mut found);
    found
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time: the kernel shows it in `uname -v` and passes it
/// to `date -d`, so it must be readable and parseable.
fn utc_timestamp(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar, in 400-year
    // eras of 146 097 days, counted from 0000-03-01 so the leap day ends each year).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The image's file name, which is also its make target (`bzImage`, `Image`).
fn image_name(arch: Arch) -> &'static str {
    let image = arch.info().kernel_image;
    image.rsplit('/').next().unwrap_or(image)
}

/// What a kernel build produced.
#[derive(Debug, Clone)]
pub struct BuiltKernel {
    /// The kernel image (`bzImage`, `Image`).
    pub image: PathBuf,
    /// Its `.config`, beside it.
    pub config: PathBuf,
    /// The uncompressed ELF `vmlinux`, beside it, for VMMs that boot no compressed image
    /// (Firecracker, cloud-hypervisor; on x86_64 through its PVH note, from `CONFIG_PVH`).
    pub vmlinux: PathBuf,
    /// The image's size in bytes.
    pub size: u64,
    /// True when nothing changed and the previous build was returned as is.
    pub fresh: bool,
}

/// The result of the configuration steps alone.
#[derive(Debug, Clone)]
pub struct ConfiguredKernel {
    /// The source tree.
    pub tree: PathBuf,
    /// The out-of-tree build directory (`O=`), holding the final `.config`.
    pub build_dir: PathBuf,
}

/// Builds a minimal kernel for one architecture from a workspace's configuration.
#[derive(Debug, Clone)]
pub struct KernelBuilder {
    ctx: Context,
    /// `None`: the configured source, resolved when used so that an override never trips
    /// over a configured path that does not exist.
    source: Option<KernelSource>,
    cache: Option<PathBuf>,
}

/// Everything a run needs that is known before any work starts.
struct Plan {
    source: KernelSource,
    toolchain: Toolchain,
    fragments: Vec<Fragment>,
    configure_fp: Fingerprint,
    build_fp: Fingerprint,
    epoch: u64,
}

impl KernelBuilder {
    /// A builder for `ctx`'s workspace and architecture and the configured source
    /// (`kernel.source`, else the pinned release), with `ctx`'s download settings, build time
    /// (default: `SOURCE_DATE_EPOCH`, else `FALLBACK_EPOCH`: not the last commit's date as for
    /// the rootfs, so that committing does not rebuild the kernel) and compiler.
    pub fn new(ctx: Context) -> KernelBuilder {
        KernelBuilder { ctx, source: None, cache: None }
    }

    /// The context it builds in.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Builds from `source` instead of the configured one.
    pub fn source(&mut self, source: KernelSource) -> &mut KernelBuilder {
        self.source = Some(source);
        self
    }

    /// The source to build: the one set with [`Self::source`], else `kernel.source` from the
    /// configuration, else the pinned release.
    pub fn resolved_source(&self) -> Result<KernelSource> {
        match (&self.source, &self.ctx.workspace.config.kernel.source) {
            (Some(source), _) => Ok(source.clone()),
            (None, Some(path)) => KernelSource::from_path(&self.ctx.workspace.path(path)),
            (None, None) => Ok(KernelSource::Pinned),
        }
    }

    /// Keeps built kernels in `dir`, shared by every checkout on the machine, and takes a
    /// kernel from there instead of building it when every input matches: the source's
    /// sha256, the fragments, the base configuration, the compiler's version, the build time
    /// stamp and `KERNEL_STAGE_VERSION`. A source tree is never cached (make decides what
    /// changed in it).
    pub fn cache(&mut self, dir: PathBuf) -> &mut KernelBuilder {
        self.cache = Some(dir);
        self
    }

    /// The cache entry for this build's inputs, or `None` without a cache or for a source
    /// tree. Its name is a hash of the build's fingerprint plus the source tarball's sha256 (a
    /// tarball's fingerprint names only its path, size and time).
    fn cache_entry(&self, plan: &Plan) -> Result<Option<CacheEntry>> {
        let Some(dir) = &self.cache else { return Ok(None) };
        let source = match &plan.source {
            KernelSource::Tree(_) => return Ok(None),
            KernelSource::Tarball(path) => sha256_file(path)?,
            KernelSource::Pinned | KernelSource::Url { .. } => {
                self.fetch_source(&plan.source).sha256
            }
        };
        let key = plan.build_fp.clone().with("source sha256", source).digest();
        let dir = dir.join(format!("{}-{}", self.ctx.arch().name(), &key[..32]));
        Ok(Some(CacheEntry { dir, image_name: image_name(self.ctx.arch()) }))
    }

    /// Configures and builds the kernel, skipping each stage whose inputs did not change, and
    /// copies the image and its `.config` to [`Layout::kernel_dir`](crate::context::Layout::kernel_dir).
    /// A fresh build needs neither the source nor the network.
    ///
    /// A source tree is always handed to make, which rebuilds what changed in it; tarballs
    /// are immutable, so for them a matching fingerprint is enough.
    pub fn build(&self, sh: &Shell, progress: &dyn Progress) -> Result<BuiltKernel> {
        let plan = self.plan(sh)?;
        progress.input(&self.ctx.workspace.kernel_fragments()?);
        let _lock = self.lock(progress)?;
        let out_dir = self.ctx.layout.kernel_dir();
        let image = out_dir.join(image_name(self.ctx.arch()));
        let config = out_dir.join(".config");
        let vmlinux = out_dir.join("vmlinux");
        let mut stages = Stages::new(progress, self.ctx.layout.stamps());
        let output = match plan.source {
            KernelSource::Tree(_) => OutputState::Unknown("source tree: make decides"),
            _ => OutputState::intact_if(image.is_file() && config.is_file() && vmlinux.is_file()),
        };
        let cached = self.cache_entry(&plan)?;
        match cached.as_ref().filter(|entry| entry.is_complete()) {
            // The stamp it leaves is true: the image is what these inputs build.
            Some(entry) => {
                stages.run("build kernel", &plan.build_fp, output, || {
                    copy_file(&entry.config(), &config)?;
                    copy_file(&entry.vmlinux(), &vmlinux)?;
                    copy_file(&entry.image(), &image)?;
                    Ok(format!("from the cache, {}", entry.dir.display()))
                })?;
            }
            None => {
                self.configure_stage(sh, &plan, &mut stages, progress)?;
                stages.run("build kernel", &plan.build_fp, output, || {
                    let tree = self.prepare(sh, &plan.source, progress)?;
                    let make = self.make(sh, &tree, &plan, image_name(self.ctx.arch()));
                    run_logged(make, None, &self.ctx.layout.kernel_log(), progress)?;
                    let build_dir = self.ctx.layout.kernel_build();
                    copy_file(&build_dir.join(".config"), &config)?;
                    copy_file(&build_dir.join(self.ctx.arch().info().kernel_image), &image)?;
                    // The image's make target links the ELF `vmlinux` first, at the top.
                    copy_file(&build_dir.join("vmlinux"), &vmlinux)?;
                    Ok(format!("{} KiB", file_size(&image)?.div_ceil(1024)))
                })?;
            }
        }
        // A kernel built before the cache was named goes into it too.
        if let Some(entry) = cached.filter(|entry| !entry.is_complete()) {
            entry.store(&image, &vmlinux, &config)?;
        }
        let fresh = stages.into_report().iter().all(StageReport::fresh);
        Ok(BuiltKernel { size: file_size(&image)?, image, config, vmlinux, fresh })
    }

    /// Runs only the configuration steps: the one Kconfig pass over the base and the
    /// fragments, and the check that every fragment option survived.
    pub fn configure(&self, sh: &Shell, progress: &dyn Progress) -> Result<ConfiguredKernel> {
        let plan = self.plan(sh)?;
        let _lock = self.lock(progress)?;
        let mut stages = Stages::new(progress, self.ctx.layout.stamps());
        self.configure_stage(sh, &plan, &mut stages, progress)?;
        let tree = self.prepare(sh, &plan.source, progress)?;
        Ok(ConfiguredKernel { tree, build_dir: self.ctx.layout.kernel_build() })
    }

    /// Makes a second run for the same architecture wait, so two makes never share a build
    /// directory; then clears what a killed run left among the outputs.
    fn lock(&self, progress: &dyn Progress) -> Result<crate::host::lock::DirLock> {
        let lock = crate::host::lock::DirLock::acquire(&self.ctx.layout.kernel_lock(), progress)?;
        remove_dead_temporaries(&self.ctx.layout.kernel_dir())?;
        Ok(lock)
    }

    /// Returns the source tree, fetching and unpacking it first if needed. Unpacked trees
    /// live in `<target>/busyroot/src/linux-<id>/`, shared by every architecture.
    pub fn prepare_source(&self, sh: &Shell, progress: &dyn Progress) -> Result<PathBuf> {
        self.prepare(sh, &self.resolved_source()?, progress)
    }

    fn prepare(
        &self,
        sh: &Shell,
        source: &KernelSource,
        progress: &dyn Progress,
    ) -> Result<PathBuf> {
        let (tarball, id) = match source {
            KernelSource::Tree(tree) => {
                check_tree(tree)?;
                return Ok(tree.clone());
            }
            KernelSource::Tarball(path) => (path.clone(), short_id(&file_identity(path)?)),
            KernelSource::Pinned | KernelSource::Url { .. } => {
                let source_kind = source;
                let source = self.fetch_source(source);
                let id = short_id(&source.sha256);
                if self.unpacked_dir(&id).is_dir() {
                    return Ok(self.unpacked_dir(&id));
                }
                let path = timed(progress, "fetch kernel", || {
                    let path = fetch::fetch(sh, &source, &self.ctx.fetch, progress);
                    let path = match (path, source_kind) {
                        (Err(Error::Fetch(message)), KernelSource::Pinned) => {
                            return Err(Error::KernelFetch {
                                message,
                                local_source: installed_kernel_source(Path::new("/usr/src")),
                            })
                        }
                        (path, _) => path?,
                    };
                    Ok((path, source.file_name.clone()))
                })?;
                (path, id)
            }
        };
        let unpacked = self.unpacked_dir(&id);
        if !unpacked.is_dir() {
            timed(progress, "unpack kernel", || {
                unpack_source(sh, &tarball, &unpacked, progress)?;
                Ok(((), unpacked.display().to_string()))
            })?;
        }
        check_tree(&unpacked)?;
        Ok(unpacked)
    }

    /// What to fetch for a downloaded source.
    fn fetch_source(&self, source: &KernelSource) -> fetch::Source {
        let cfg = &self.ctx.workspace.config.kernel;
        match source {
            KernelSource::Url { url, sha256 } => fetch::Source {
                file_name: url.rsplit('/').next().unwrap_or(url).to_string(),
                mirrors: Vec::new(),
                url: url.clone(),
                sha256: sha256.clone(),
            },
            _ => cfg.source(),
        }
    }

    fn unpacked_dir(&self, id: &str) -> PathBuf {
        self.ctx.layout.source(&format!("linux-{id}"))
    }

    /// What identifies the source without reading it: a tarball's checksum, or a local
    /// file's path, size and modification time, or a tree's path.
    fn source_identity(&self, source: &KernelSource) -> Result<String> {
        Ok(match source {
            KernelSource::Pinned | KernelSource::Url { .. } => {
                format!("sha256 {}", self.fetch_source(source).sha256)
            }
            KernelSource::Tarball(path) => file_identity(path)?,
            KernelSource::Tree(path) => format!("tree {}", path.display()),
        })
    }

    /// Checks the host, reads the fragments and computes the fingerprints.
    fn plan(&self, sh: &Shell) -> Result<Plan> {
        let source = self.resolved_source()?;
        let toolchain = self.check_host(&source)?;
        let epoch = self.ctx.source_date_epoch.unwrap_or_else(|| {
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(FALLBACK_EPOCH)
        });
        let fragments = self.read_fragments()?;
        let mut configure_fp = Fingerprint::new()
            .with("source", self.source_identity(&source)?)
            .with("arch", self.ctx.arch().name())
            .with("base", self.ctx.workspace.config.kernel.base.make_target())
            .with("toolchain", toolchain.identity(sh, Some(&self.ctx.layout.stamps())))
            .with("busyroot kernel stage", KERNEL_STAGE_VERSION.to_string());
        for fragment in &fragments {
            let name = fragment.path.file_name().unwrap_or_default().to_string_lossy();
            configure_fp = configure_fp.with(&format!("fragment {name}"), &fragment.text);
        }
        let build_fp = Fingerprint::new()
            .after("configuration", &configure_fp)
            .with("KBUILD_BUILD_TIMESTAMP", utc_timestamp(epoch))
            .with("image", image_name(self.ctx.arch()));
        Ok(Plan { source, toolchain, fragments, configure_fp, build_fp, epoch })
    }

    /// Every missing host program, header and the compiler, reported in one error.
    fn check_host(&self, source: &KernelSource) -> Result<Toolchain> {
        let needs_xz = match source {
            KernelSource::Tarball(path) => is_xz(path),
            KernelSource::Pinned | KernelSource::Url { .. } => {
                is_xz(Path::new(&self.fetch_source(source).file_name))
            }
            KernelSource::Tree(_) => false,
        };
        let tools = KERNEL_TOOLS.iter().chain(if needs_xz { XZ_TOOLS } else { &[] });
        let mut missing = MissingTools::default();
        for t in tools.filter(|t| find_program(t.program).is_none()) {
            missing.push(format!("{} ({})", t.program, t.purpose), t.package);
        }
        for header in KERNEL_HEADERS {
            let found = ["/usr/include", "/usr/local/include"]
                .iter()
                .any(|dir| Path::new(dir).join(header.file).is_file());
            if !found {
                missing.push(format!("<{}> ({})", header.file, header.purpose), header.package);
            }
        }
        let toolchain = match &self.ctx.toolchain {
            Some(t) => Some(t.clone()),
            None => match Toolchain::find(self.ctx.arch()) {
                Ok(t) => Some(t),
                Err(Error::MissingTools(more)) => {
                    missing.extend(more);
                    None
                }
                Err(e) => return Err(e),
            },
        };
        missing.into_result()?;
        Ok(toolchain.expect("a missing toolchain is listed as missing"))
    }

    /// Reads `common.config` and `<arch>.config` from the fragments directory; both must
    /// exist (an architecture that needs nothing of its own has an empty one).
    fn read_fragments(&self) -> Result<Vec<Fragment>> {
        let ws = &self.ctx.workspace;
        let dir = ws.kernel_fragments()?.path;
        [COMMON_FRAGMENT.to_string(), format!("{}.config", self.ctx.arch().name())]
            .iter()
            .map(|name| {
                let path = dir.join(name);
                let text = fs::read_to_string(&path).map_err(|e| {
                    Error::Other(format!(
                        "cannot read the kernel configuration fragment `{}`: {e}; the \
                         fragments directory (`kernel.fragments`) needs `{COMMON_FRAGMENT}` \
                         and one file per architecture, which may be empty",
                        path.display()
                    ))
                })?;
                let shown = path.strip_prefix(&ws.root).map_or(path.clone(), Path::to_path_buf);
                Ok(Fragment { path: shown, text })
            })
            .collect()
    }

    /// The configuration stage: `allnoconfig` seeded with the base's files and the
    /// fragments, and every fragment option checked in the result.
    fn configure_stage(
        &self,
        sh: &Shell,
        plan: &Plan,
        stages: &mut Stages,
        progress: &dyn Progress,
    ) -> Result<()> {
        let build_dir = self.ctx.layout.kernel_build();
        let dot_config = build_dir.join(".config");
        let output = OutputState::intact_if(dot_config.is_file());
        stages.run("configure kernel", &plan.configure_fp, output, || {
            let tree = self.prepare(sh, &plan.source, progress)?;
            fs::create_dir_all(&build_dir).with_path("create directory", &build_dir)?;
            // One Kconfig pass: allnoconfig starting from the base's own files and then the
            // fragments, so every option they do not name is off. (`make tinyconfig`, a
            // merge and `make olddefconfig` would take three passes and turn on the defaults
            // of every option the fragments make visible.)
            let base = self.ctx.workspace.config.kernel.base;
            let mut seed = String::new();
            for file in base.seed_files(self.ctx.arch().info().kernel_arch) {
                let path = tree.join(&file);
                if path.is_file() {
                    seed += &fs::read_to_string(&path).with_path("read", &path)?;
                    seed.push('\n');
                }
            }
            for fragment in &plan.fragments {
                seed += &fragment.text;
                seed.push('\n');
            }
            let seed_path = build_dir.join("busyroot-seed.config");
            fs::write(&seed_path, seed).with_path("write", &seed_path)?;
            let configure =
                self.make(sh, &tree, plan, "allnoconfig").env("KCONFIG_ALLCONFIG", &seed_path);
            run_logged(configure, None, &self.ctx.layout.kernel_log(), progress)?;

            let text = fs::read_to_string(&dot_config).with_path("read", &dot_config)?;
            let lost = lost_options(&plan.fragments, &text);
            if !lost.is_empty() {
                let names = lost.iter().map(|o| o.name.clone()).collect();
                let known = known_options(&tree, &names);
                let dir = self.ctx.workspace.kernel_fragments()?.path;
                return Err(lost_options_error(&lost, &known, &dot_config, &dir));
            }
            Ok(String::new())
        })?;
        Ok(())
    }

    /// `make` in the source tree, building into the build directory, reproducibly.
    fn make<'a>(&self, sh: &'a Shell, tree: &Path, plan: &Plan, target: &str) -> xshell::Cmd<'a> {
        let out = format!("O={}", self.ctx.layout.kernel_build().display());
        let arch = format!("ARCH={}", self.ctx.arch().info().kernel_arch);
        let cross = format!("CROSS_COMPILE={}", plan.toolchain.cross_compile);
        let jobs = format!("-j{}", std::thread::available_parallelism().map_or(2, |n| n.get()));
        cmd!(sh, "make -C {tree} {out} {arch} {cross} {jobs} {target}")
            .env("KBUILD_BUILD_TIMESTAMP", utc_timestamp(plan.epoch))
            .env("KBUILD_BUILD_USER", "busyroot")
            .env("KBUILD_BUILD_HOST", "busyroot")
            // Otherwise the `#N` in `uname -v` counts the builds in this directory.
            .env("KBUILD_BUILD_VERSION", "1")
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env_remove("KCONFIG_CONFIG")
    }
}

/// One kernel in the cache: the image under its usual name, `vmlinux`, and its `.config` as
/// `config`.
struct CacheEntry {
    dir: PathBuf,
    image_name: &'static str,
}

impl CacheEntry {
    fn image(&self) -> PathBuf {
        self.dir.join(self.image_name)
    }

    fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// Every file present. Each is renamed into place whole, and the configuration last, so
    /// an interrupted store is never taken for a complete one.
    fn is_complete(&self) -> bool {
        self.image().is_file() && self.vmlinux().is_file() && self.config().is_file()
    }

    fn store(&self, image: &Path, vmlinux: &Path, config: &Path) -> Result<()> {
        fs::create_dir_all(&self.dir).with_path("create directory", &self.dir)?;
        copy_file(image, &self.image())?;
        copy_file(vmlinux, &self.vmlinux())?;
        copy_file(config, &self.config())
    }
}

/// Refuses a directory that is not a Linux source tree, before make says something obscure.
fn check_tree(tree: &Path) -> Result<()> {
    if tree.join("Makefile").is_file() && tree.join("Kconfig").is_file() {
        return Ok(());
    }
    Err(Error::Other(format!(
        "`{}` is not a Linux source tree (no Makefile and Kconfig); give a kernel.org or distribution source tarball \
         or tree",
        tree.display()
    )))
}

/// A short, file-name-safe digest of a source's identity, naming its unpacked tree.
fn short_id(identity: &str) -> String {
    sha256_bytes(identity.as_bytes())[..16].to_string()
}

fn is_xz(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.ends_with(".xz") || name.ends_with(".txz")
}

/// Unpacks a source tarball ([`crate::host::extract::unpack_with`]) and moves its single
/// top-level directory to `dest`, so `dest` appears only once complete.
fn unpack_source(sh: &Shell, tarball: &Path, dest: &Path, progress: &dyn Progress) -> Result<()> {
    remove_dead_temporaries(dest.parent().unwrap_or(Path::new(".")))?;
    let scratch = temp_path(dest);
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_path("remove", &scratch)?;
    }
    let result = (|| {
        crate::host::extract::unpack_with(sh, tarball, &scratch, progress)?;
        let top = crate::host::extract::single_top_dir(&scratch, tarball)?;
        check_tree(&top)?;
        match fs::rename(&top, dest) {
            // Another build unpacking the same tarball at the same time finished first.
            Err(_) if dest.join("Makefile").is_file() => Ok(()),
            result => result.with_path("rename into", dest),
        }
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path).with_path("stat", path)?.len())
}

/// The newest `linux-source-*.tar.xz` (or `.tar.bz2`) a distribution package installed in `dir`.
#[doc(hidden)]
pub fn installed_kernel_source(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("linux-source-")
                && (name.ends_with(".tar.xz") || name.ends_with(".tar.bz2"))
        })
        .collect();
    found.sort_by_key(|p| version_key(&p.file_name().unwrap_or_default().to_string_lossy()));
    found.pop()
}

/// Numbers in a file name, for comparing versions: `linux-source-6.10` sorts after `-6.9`.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarball_names_list_every_suffix() {
        for suffix in TARBALL_SUFFIXES {
            assert!(TARBALL_NAMES.split([',', ' ']).any(|n| n == suffix), "{suffix}");
        }
    }

    #[test]
    fn an_unfetchable_pinned_kernel_points_at_the_installed_distribution_source() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(installed_kernel_source(dir.path()), None);
        for name in ["linux-source-6.9.tar.xz", "linux-source-6.10.tar.xz", "linux-6.1.tar.xz"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let found = installed_kernel_source(dir.path());
        assert_eq!(found, Some(dir.path().join("linux-source-6.10.tar.xz")));
        let err = Error::KernelFetch { message: "could not fetch".into(), local_source: found };
        let text = err.to_string();
        assert!(text.contains("linux-source-6.10.tar.xz") && text.contains("kernel.source"));
        assert!(!text.contains("--"), "the library names no flags: {text}");
        let err = Error::KernelFetch { message: "could not fetch".into(), local_source: None };
        assert!(err.to_string().contains("`linux-source-6.1` on Debian 12"), "{err}");
    }

    fn fragment(name: &str, text: &str) -> Fragment {
        Fragment { path: PathBuf::from(name), text: text.into() }
    }

    #[test]
    fn an_option_dropped_by_kconfig_is_reported_by_name() {
        let fragments = [
            fragment("kernel-config/common.config", "CONFIG_PCI=y\nCONFIG_NVME_CORE=y\n"),
            fragment(
                "kernel-config/x86_64.config",
                "CONFIG_ACPI=y\n# CONFIG_EMBEDDED is not set\nCONFIG_HZ=250\n",
            ),
        ];
        let final_config = "CONFIG_PCI=y\n# CONFIG_NVME_CORE is not set\nCONFIG_ACPI=y\n\
                            CONFIG_EMBEDDED=y\nCONFIG_HZ=100\n";
        let lost = lost_options(&fragments, final_config);
        let names: Vec<&str> = lost.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["CONFIG_EMBEDDED", "CONFIG_HZ", "CONFIG_NVME_CORE"]);
        assert_eq!(lost[2].fragment, Path::new("kernel-config/common.config"));

        let known: BTreeSet<String> =
            ["CONFIG_EMBEDDED", "CONFIG_HZ", "CONFIG_NVME_CORE"].map(String::from).into();
        let err =
            lost_options_error(&lost, &known, Path::new("b/.config"), Path::new("kc")).to_string();
        assert!(
            err.contains(
                "CONFIG_NVME_CORE=y requested by `kernel-config/common.config` was dropped \
                 (unmet dependency?)"
            ),
            "{err}"
        );
        assert!(err.contains("`# CONFIG_EMBEDDED is not set` requested by"), "{err}");
        assert!(err.contains("is still set to y"), "{err}");
        assert!(err.contains("CONFIG_HZ=250 requested by `kernel-config/x86_64.config` became 100"));
        assert!(err.contains("`b/.config`"), "{err}");
    }

    #[test]
    fn a_later_fragment_overrides_an_earlier_one() {
        let fragments =
            [fragment("common.config", "CONFIG_X=y\n"), fragment("arch.config", "CONFIG_X=m\n")];
        assert!(lost_options(&fragments, "CONFIG_X=m\n").is_empty());
        let lost = lost_options(&fragments, "CONFIG_X=y\n");
        assert_eq!(lost[0].fragment, Path::new("arch.config"));
        // `=n` and "is not set" both ask for the option to be off, which absence satisfies.
        let off = [fragment("f", "CONFIG_Y=n\n# CONFIG_Z is not set\n")];
        assert!(lost_options(&off, "").is_empty());
    }

    #[test]
    fn unknown_options_are_told_apart_from_dropped_ones() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("drivers/nvme")).unwrap();
        fs::write(dir.path().join("drivers/nvme/Kconfig"), "config NVME_CORE\n\ttristate\n")
            .unwrap();
        fs::write(dir.path().join("Kconfig.debug"), "menuconfig DEBUG_X\n").unwrap();
        let names = ["CONFIG_NVME_CORE", "CONFIG_DEBUG_X", "CONFIG_NVME_COER"].map(String::from);
        let known = known_options(dir.path(), &names.clone().into());
        assert_eq!(known, ["CONFIG_DEBUG_X", "CONFIG_NVME_CORE"].map(String::from).into());
        let lost = lost_options(&[fragment("f", "CONFIG_NVME_COER=y\n")], "");
        let err = lost_options_error(&lost, &known, Path::new(".config"), Path::new("kc"));
        assert!(err.to_string().contains("CONFIG_NVME_COER=y requested by `f` is not an option"));
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(FALLBACK_EPOCH), "2000-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_timestamp(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn source_flag_needs_a_checksum_for_urls_only() {
        let dir = tempfile::tempdir().unwrap();
        let err = KernelSource::parse("https://example.invalid/linux.tar.xz", None, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs `--sha256"), "{err}");
        let sha = "AB".repeat(32);
        let url = KernelSource::parse("https://e.invalid/l.tar.xz", Some(&sha), dir.path());
        assert_eq!(
            url.unwrap(),
            KernelSource::Url { url: "https://e.invalid/l.tar.xz".into(), sha256: "ab".repeat(32) }
        );
        let err = KernelSource::parse("https://e.invalid/l.tar.xz", Some("ab"), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("64 hexadecimal digits"), "{err}");
        fs::write(dir.path().join("l.tar.gz"), b"").unwrap();
        fs::write(dir.path().join("bzImage"), b"").unwrap();
        let err = KernelSource::parse("bzImage", None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("not named like a tarball"), "{err}");
        let tarball = KernelSource::parse("l.tar.gz", None, dir.path()).unwrap();
        assert!(matches!(tarball, KernelSource::Tarball(p) if p.ends_with("l.tar.gz")));
        let tree = KernelSource::parse(".", None, dir.path()).unwrap();
        assert!(matches!(tree, KernelSource::Tree(_)));
        let err = KernelSource::parse("missing", None, dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("cannot be used"), "{err}");
        assert!(KernelSource::parse("l.tar.gz", Some("ab"), dir.path()).is_err());
    }

    /// A tarball holding the files that make a directory look like a kernel tree.
    fn fake_kernel_tar(dir: &Path) -> Vec<u8> {
        let tree = dir.join("linux-9.9");
        fs::create_dir_all(&tree).unwrap();
        for file in ["Makefile", "Kconfig"] {
            fs::write(tree.join(file), file).unwrap();
        }
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all("linux-9.9", &tree).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn gzip_and_xz_tarballs_unpack_to_their_final_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let raw = fake_kernel_tar(dir.path());
        let sh = Shell::new().unwrap();
        let progress = crate::progress::Silent;

        let gz = dir.path().join("linux-9.9.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &raw).unwrap();
        fs::write(&gz, enc.finish().unwrap()).unwrap();
        let dest = dir.path().join("out/linux-gz");
        unpack_source(&sh, &gz, &dest, &progress).unwrap();
        assert_eq!(fs::read_to_string(dest.join("Kconfig")).unwrap(), "Kconfig");

        if find_program("xz").is_some() {
            let tar = dir.path().join("linux-9.9.tar");
            fs::write(&tar, &raw).unwrap();
            cmd!(sh, "xz -0 {tar}").quiet().run().unwrap();
            let dest = dir.path().join("out/linux-xz");
            unpack_source(&sh, &dir.path().join("linux-9.9.tar.xz"), &dest, &progress).unwrap();
            assert_eq!(fs::read_to_string(dest.join("Makefile")).unwrap(), "Makefile");
        } else {
            crate::testing::skip("the .tar.xz half", "xz is not installed");
        }

        // Something that is not a kernel tree never appears under the final name.
        let not_kernel = dir.path().join("other.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "pkg/README", &b"x"[..]).unwrap();
        fs::write(&not_kernel, b.into_inner().unwrap()).unwrap();
        let dest = dir.path().join("out/other");
        let err = unpack_source(&sh, &not_kernel, &dest, &progress).unwrap_err().to_string();
        assert!(err.contains("is not a Linux source tree"), "{err}");
        assert!(!dest.exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("out")).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "no scratch directory may be left behind");
    }
}
