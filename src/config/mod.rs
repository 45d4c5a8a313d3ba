//! Typed configuration, read from `[workspace.metadata.busyroot]` of the workspace's Cargo.toml.
//!
//! Every key is optional; the doc comment of each field gives its default. Unknown keys are
//! rejected with their full name, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::arch::Arch;
use crate::error::{Error, IoContext, Result};
use crate::host::fetch::Source;

/// busyroot's configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct Config {
    /// Guest architecture. Default: the host's.
    pub arch: Option<Arch>,
    /// Where BusyBox comes from and how it is configured.
    pub busybox: BusyboxConfig,
    /// Skeleton trees merged in order over the BusyBox install (a later tree wins file by
    /// file), relative to the workspace root; one path or a list. Default (unset): busyroot's
    /// own `rootfs-skel/`, whatever the workspace holds (see [`crate::inputs`]; a path
    /// `busyroot:<path>` names a file in busyroot's own source, in this key and the others).
    #[serde(deserialize_with = "one_or_many")]
    pub skeleton: Option<Vec<PathBuf>>,
    /// Trees or tar archives (`.tar`, `.tar.gz`, `.tgz`, `.tar.bz2`) merged in order over the
    /// skeleton, relative to the workspace root. Default: none.
    pub overlays: Vec<PathBuf>,
    /// Device and permission tables (Buildroot's makedevs format), applied in order, relative
    /// to the workspace root; one path or a list. Default (unset): busyroot's own
    /// `device-table.txt`.
    #[serde(deserialize_with = "one_or_many")]
    pub device_table: Option<Vec<PathBuf>>,
    /// Settings of the ext4 image.
    pub image: ImageConfig,
    /// Where the boot-test kernel comes from and how it is configured.
    pub kernel: KernelConfig,
    /// Settings of `cargo xtask run`.
    pub run: RunConfig,
    /// `[[matrix]]`: the cells `cargo xtask matrix` boots, in order (see [`MatrixCell`] for
    /// each key and its default). Default: none, which means every architecture whose kernel
    /// `cargo xtask kernel` built, each with the disk and the initramfs.
    pub matrix: Vec<MatrixCell>,
}

mod matrix;
mod run;

pub use matrix::{MatrixCell, Medium};
pub use run::{
    load_checks_file, BusName, ConsoleKind, ExtraCheck, KernelFormatName, RunConfig, VmmConfig,
};
pub(crate) use run::{DEFAULT_CPUS, DEFAULT_MEM_MIB};

/// `[workspace.metadata.busyroot.busybox]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct BusyboxConfig {
    /// BusyBox release. Default: `"1.37.0"`.
    pub version: String,
    /// Download URL; `{version}` is replaced by the version.
    /// Default: `"https://busybox.net/downloads/busybox-{version}.tar.bz2"`.
    pub url: String,
    /// sha256 of the tarball. Default: the checksum of the 1.37.0 release.
    pub sha256: String,
    /// Backup download URLs, tried in order when `url` fails; the sha256 decides whether a
    /// download is used. Each entry is a full URL: `{version}` is replaced by the version, and
    /// an entry containing `{apt-archive}` is tried once for each archive base URL in the
    /// host's apt sources (and skipped on a host without any).
    /// Default: `DEBIAN_BUSYBOX_MIRRORS`, Debian's copy of the tarball, first under the host's
    /// own apt archives, then under Debian's default archive.
    pub mirrors: Vec<String>,
    /// The checked-in BusyBox `.config`, relative to the workspace root. Default (unset):
    /// busyroot's own `busybox-config/.config`.
    pub config: Option<PathBuf>,
}

/// sha256 of `busybox-1.37.0.tar.bz2` as published upstream.
pub(crate) const BUSYBOX_1_37_0_SHA256: &str =
    "3311dff32e746499f4df0d5df04d7eb396382d7e108bb9250e7b519b837043a4";

/// Where Debian keeps BusyBox's upstream tarball (byte for byte, as `*.orig.tar.bz2`): under
/// the host's own apt archives, then under Debian's default archive, which an Ubuntu host's
/// archive (carrying another BusyBox release) cannot replace.
pub(crate) const DEBIAN_BUSYBOX_MIRRORS: [&str; 2] = [
    "{apt-archive}/pool/main/b/busybox/busybox_{version}.orig.tar.bz2",
    "https://deb.debian.org/debian/pool/main/b/busybox/busybox_{version}.orig.tar.bz2",
];

impl Default for BusyboxConfig {
    fn default() -> BusyboxConfig {
        BusyboxConfig {
            version: "1.37.0".into(),
            url: "https://busybox.net/downloads/busybox-{version}.tar.bz2".into(),
            sha256: BUSYBOX_1_37_0_SHA256.into(),
            mirrors: DEBIAN_BUSYBOX_MIRRORS.iter().map(|m| m.to_string()).collect(),
            config: None,
        }
    }
}

impl BusyboxConfig {
    /// What to fetch: the tarball, its backup sources and its checksum.
    pub fn source(&self) -> Source {
        pinned_source(&self.version, &self.url, &self.mirrors, &self.sha256)
    }
}

/// The source of a pinned release: `url` and `mirrors` with `{version}` filled in, the file
/// name the URL ends in, and the checksum.
fn pinned_source(version: &str, url: &str, mirrors: &[String], sha256: &str) -> Source {
    let url = url.replace("{version}", version);
    Source {
        file_name: url.rsplit('/').next().unwrap_or(&url).to_string(),
        mirrors: mirrors.iter().map(|m| m.replace("{version}", version)).collect(),
        sha256: sha256.to_string(),
        url,
    }
}

/// `[workspace.metadata.busyroot.kernel]`: the kernel `cargo xtask kernel` builds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct KernelConfig {
    /// Linux release downloaded when no `source` is given. Default: `"6.1.141"`.
    pub version: String,
    /// Download URL; `{version}` is replaced by the version.
    /// Default: `"https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-{version}.tar.xz"`.
    pub url: String,
    /// sha256 of the tarball. Default: the checksum of the 6.1.141 release.
    pub sha256: String,
    /// Backup download URLs, tried in order when `url` fails, as for `busybox.mirrors`
    /// (`{version}` and `{apt-archive}` are replaced). Distributions repack the kernel source,
    /// so only a copy of kernel.org's tarball can pass the checksum. Default: none.
    pub mirrors: Vec<String>,
    /// A local source tarball (`.tar.xz`, `.tar.gz`, `.tar.bz2`) or unpacked source tree to
    /// build instead of the download, relative to the workspace root. Default: none.
    pub source: Option<PathBuf>,
    /// Directory holding the configuration fragments `common.config` and `<arch>.config`,
    /// relative to the workspace root. Default (unset): busyroot's own `kernel-config/`.
    pub fragments: Option<PathBuf>,
    /// The configuration the fragments are merged over. Default: `"tinyconfig"`.
    pub base: KernelBase,
}

/// sha256 of `linux-6.1.141.tar.xz`, as kernel.org publishes it in
/// <https://www.kernel.org/pub/linux/kernel/v6.x/sha256sums.asc> (mirrored in Buildroot
/// 2025.02's `linux/linux.hash`, and matching other independent pins of that release).
pub(crate) const LINUX_6_1_141_SHA256: &str =
    "bc3c45faf6f5f0450666c75fa9dad9bc7c0cf7c7cba0dbd94e5cfdc58229c116";

impl Default for KernelConfig {
    fn default() -> KernelConfig {
        KernelConfig {
            version: "6.1.141".into(),
            url: "https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-{version}.tar.xz".into(),
            sha256: LINUX_6_1_141_SHA256.into(),
            mirrors: Vec::new(),
            source: None,
            fragments: None,
            base: KernelBase::Tinyconfig,
        }
    }
}

impl KernelConfig {
    /// What to fetch for the pinned release: the tarball, its backup sources and its checksum.
    pub fn source(&self) -> Source {
        pinned_source(&self.version, &self.url, &self.mirrors, &self.sha256)
    }
}

/// The kernel's own configuration target the fragments are merged over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelBase {
    /// `make tinyconfig`: `allnoconfig` tuned for size; the smallest kernel.
    Tinyconfig,
    /// `make allnoconfig`: every option that can be off is off.
    Allnoconfig,
}

impl KernelBase {
    /// The make target that writes this configuration.
    pub fn make_target(self) -> &'static str {
        match self {
            KernelBase::Tinyconfig => "tinyconfig",
            KernelBase::Allnoconfig => "allnoconfig",
        }
    }

    /// The files of a kernel tree (relative to it, those present) whose options this base
    /// sets over `allnoconfig`, for the architecture directory `srcarch` (`x86`, `arm64`).
    pub fn seed_files(self, srcarch: &str) -> Vec<String> {
        match self {
            KernelBase::Tinyconfig => vec![
                "kernel/configs/tiny-base.config".into(),
                "kernel/configs/tiny.config".into(),
                format!("arch/{srcarch}/configs/tiny.config"),
            ],
            KernelBase::Allnoconfig => Vec::new(),
        }
    }
}

/// `[workspace.metadata.busyroot.image]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct ImageConfig {
    /// Size of `rootfs.ext4`: a number of MiB, a string such as `"64MiB"` or `"1GiB"`, or
    /// `"auto"` for the content plus headroom. Default: `32` (MiB).
    pub size: ImageSizeSetting,
    /// File system label. Default: `"rootfs"`.
    pub label: String,
    /// File system UUID. Default: derived from the label and architecture, so it is fixed.
    pub uuid: Option<String>,
}

impl Default for ImageConfig {
    fn default() -> ImageConfig {
        ImageConfig { size: ImageSizeSetting::Mib(32), label: "rootfs".into(), uuid: None }
    }
}

/// The configured size of the ext4 image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSizeSetting {
    /// A fixed size in MiB.
    Mib(u64),
    /// Content plus headroom.
    Auto,
}

impl<'de> Deserialize<'de> for ImageSizeSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let parse = |s: &str| -> Option<ImageSizeSetting> {
            let s = s.trim();
            if s == "auto" {
                return Some(ImageSizeSetting::Auto);
            }
            let (digits, factor) = match s.strip_suffix("GiB") {
                Some(n) => (n, 1024),
                None => (s.strip_suffix("MiB").unwrap_or(s), 1),
            };
            digits.trim().parse::<u64>().ok().map(|n| ImageSizeSetting::Mib(n * factor))
        };
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ImageSizeSetting::Mib(n)),
            Raw::Text(s) => parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size `{s}`: use a number of MiB, \"64MiB\", \"1GiB\" or \"auto\""
                ))
            }),
        }
    }
}

impl Config {
    /// Parses the value of `[workspace.metadata.busyroot]` (`None` when the table is absent).
    /// `origin` names the file in error messages.
    pub fn from_json(value: Option<&serde_json::Value>, origin: &Path) -> Result<Config> {
        let Some(value) = value else { return Ok(Config::default()) };
        serde_path_to_error::deserialize(value).map_err(|err| Error::Config {
            path: origin.to_path_buf(),
            message: describe(err.path().to_string(), err.inner().to_string()),
        })
    }

    /// Parses a TOML table holding the keys of `[workspace.metadata.busyroot]`.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|err| Error::Config {
            path: origin.to_path_buf(),
            message: describe(err.path().to_string(), err.inner().message().to_string()),
        })
    }
}

/// Reads a key that is either one path or a list of paths.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<PathBuf>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a path or a list of paths")]
    enum Raw {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(Some(match Raw::deserialize(d)? {
        Raw::One(path) => vec![path],
        Raw::Many(paths) => paths,
    }))
}

fn describe(path: String, inner: String) -> String {
    // serde_path_to_error names the table holding an unknown key ("image"), and the inner
    // message names the key itself; print both as one dotted key.
    let key = if path == "." { String::new() } else { path };
    if key.is_empty() {
        format!("[workspace.metadata.busyroot]: {inner}")
    } else {
        format!("[workspace.metadata.busyroot] key `{key}`: {inner}")
    }
}

/// The metadata tables among `names` (of `[<place>.metadata]`, `place` being `workspace` or
/// `package`) that look meant for busyroot but are not read: a name within edit distance 2 of
/// `busyroot` (in any case), and `busyroot` itself under `package`.
pub(crate) fn misplaced_tables(place: &str, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            let close = edit_distance(&name.to_lowercase(), "busyroot") <= 2;
            close && !(place == "workspace" && name.as_str() == "busyroot")
        })
        .map(|name| format!("[{place}.metadata.{name}]"))
        .collect()
}

/// The Levenshtein distance between `a` and `b`, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Where busyroot runs: the workspace root, its target directory and its configuration.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Directory of the workspace's root Cargo.toml.
    pub root: PathBuf,
    /// Cargo's target directory (honours `CARGO_TARGET_DIR` and `build.target-dir`).
    pub target_dir: PathBuf,
    /// The parsed `[workspace.metadata.busyroot]`.
    pub config: Config,
}

impl Workspace {
    /// A workspace at `root` (its target directory `root/target`) configured by `toml`.
    #[cfg(test)]
    pub(crate) fn for_test(root: &Path, toml: &str) -> Workspace {
        let config = Config::from_toml(toml, Path::new("Cargo.toml")).unwrap();
        Workspace { root: root.to_path_buf(), target_dir: root.join("target"), config }
    }

    /// Reads the workspace that contains `manifest_dir` through `cargo metadata`.
    pub fn load(manifest_dir: &Path) -> Result<Workspace> {
        Workspace::load_reporting(manifest_dir, &crate::progress::Silent)
    }

    /// [`Workspace::load`], reporting to `progress` (as warnings) every metadata table that looks
    /// meant for busyroot but is not read: a `[workspace.metadata.*]` or
    /// `[package.metadata.*]` table whose name is close to `busyroot`, and
    /// `[package.metadata.busyroot]`.
    pub fn load_reporting(
        manifest_dir: &Path,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Workspace> {
        let manifest = manifest_dir.join("Cargo.toml");
        let metadata = cargo_metadata::MetadataCommand::new()
            .manifest_path(&manifest)
            .no_deps()
            .exec()
            .map_err(|e| {
                Error::Other(format!(
                    "failed to run `cargo metadata` for `{}`: {e}",
                    manifest.display()
                ))
            })?;
        Workspace::from_metadata(metadata, progress)
    }

    /// [`Workspace::load_reporting`] from what `cargo metadata --format-version 1 --no-deps`
    /// printed, read from `path` (by a caller that knows it is still current).
    pub fn from_cargo_metadata_file(
        path: &Path,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Workspace> {
        let text = std::fs::read_to_string(path).with_path("read", path)?;
        let metadata = serde_json::from_str(&text).map_err(|e| {
            Error::Other(format!(
                "`{}` is not what `cargo metadata` prints ({e}); remove it",
                path.display()
            ))
        })?;
        Workspace::from_metadata(metadata, progress)
    }

    fn from_metadata(
        metadata: cargo_metadata::Metadata,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Workspace> {
        let root = PathBuf::from(metadata.workspace_root.as_std_path());
        let config = Config::from_json(
            metadata.workspace_metadata.get("busyroot"),
            &root.join("Cargo.toml"),
        )?;
        let workspace_manifest = root.join("Cargo.toml");
        let mut tables = vec![(
            "workspace".to_string(),
            workspace_manifest.clone(),
            metadata.workspace_metadata.clone(),
        )];
        for package in &metadata.packages {
            let path = package.manifest_path.clone().into_std_path_buf();
            tables.push((format!("package `{}`", package.name), path, package.metadata.clone()));
        }
        for (owner, path, value) in tables {
            let names: Vec<String> =
                value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
            let place = if owner == "workspace" { "workspace" } else { "package" };
            for warning in misplaced_tables(place, &names) {
                progress.warning(&format!(
                    "{warning} in `{}` ({owner}) is not read; busyroot reads \
                     [workspace.metadata.busyroot] of `{}`",
                    path.display(),
                    workspace_manifest.display()
                ));
            }
        }
        Ok(Workspace { target_dir: metadata.target_directory.into_std_path_buf(), root, config })
    }

    /// A configured path, resolved against the workspace root.
    pub fn path(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::from_toml(text, Path::new("Cargo.toml"))
    }

    #[test]
    fn tables_meant_for_busyroot_but_not_read_are_named() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ws = names(&["busyroot", "busyrot", "BusyRoot", "busy-root", "buildroot", "docs"]);
        assert_eq!(
            misplaced_tables("workspace", &ws),
            [
                "[workspace.metadata.busyrot]",
                "[workspace.metadata.BusyRoot]",
                "[workspace.metadata.busy-root]"
            ]
        );
        assert_eq!(
            misplaced_tables("package", &names(&["busyroot", "bsyrooot", "release"])),
            ["[package.metadata.busyroot]", "[package.metadata.bsyrooot]"]
        );
        assert_eq!(edit_distance("buildroot", "busyroot"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn a_misspelled_table_in_a_real_workspace_is_reported() {
        struct Notes(std::cell::RefCell<Vec<String>>);
        impl crate::progress::Progress for Notes {
            fn warning(&self, message: &str) {
                self.0.borrow_mut().push(message.to_string());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"p\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             [package.metadata.busyroot]\narch = \"aarch64\"\n\
             [workspace]\n[workspace.metadata.busyrot]\narch = \"aarch64\"\n",
        )
        .unwrap();
        let notes = Notes(Default::default());
        let ws = Workspace::load_reporting(dir.path(), &notes).unwrap();
        assert_eq!(ws.config.arch, None, "neither table is read");
        let notes = notes.0.into_inner();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("[workspace.metadata.busyrot]"), "{notes:?}");
        assert!(
            notes[1].contains("[package.metadata.busyroot]") && notes[1].contains("package `p`")
        );
        assert!(notes.iter().all(|n| n.contains("reads [workspace.metadata.busyroot]")));
    }

    #[test]
    fn empty_table_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.busybox.source().url, "https://busybox.net/downloads/busybox-1.37.0.tar.bz2");
        assert_eq!(c.busybox.source().file_name, "busybox-1.37.0.tar.bz2");
        assert_eq!(c.image.size, ImageSizeSetting::Mib(32));
        assert_eq!(
            c.kernel.source().url,
            "https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.1.141.tar.xz"
        );
        assert_eq!(c.kernel.source().file_name, "linux-6.1.141.tar.xz");
        assert_eq!(c.kernel.fragments, None);
        assert_eq!((&c.skeleton, &c.device_table, &c.busybox.config), (&None, &None, &None));
        assert!(c.overlays.is_empty());
        assert_eq!(c.kernel.base, KernelBase::Tinyconfig);
        let source = c.busybox.source();
        assert_eq!(source.mirrors[1], DEBIAN_BUSYBOX_MIRRORS[1].replace("{version}", "1.37.0"));
        assert!(
            source.mirrors[1].ends_with("/debian/pool/main/b/busybox/busybox_1.37.0.orig.tar.bz2")
        );
        assert!(source.mirrors[0].starts_with("{apt-archive}/pool/main/b/busybox/"));
        assert!(c.kernel.source().mirrors.is_empty());
    }

    #[test]
    fn mirrors_are_configurable_with_the_version_filled_in() {
        let c = parse(
            "[busybox]\nversion = \"1.36.1\"\nmirrors = [\"http://m.example/bb-{version}.tar.bz2\"]\n\
             [kernel]\nmirrors = [\"http://k.example/linux-{version}.tar.xz\"]\n",
        )
        .unwrap();
        assert_eq!(c.busybox.source().mirrors, ["http://m.example/bb-1.36.1.tar.bz2"]);
        assert_eq!(c.kernel.source().mirrors, ["http://k.example/linux-6.1.141.tar.xz"]);
        let err = parse("busybox.mirrors = \"http://one\"").unwrap_err().to_string();
        assert!(err.contains("busybox.mirrors") && err.contains("invalid type"), "{err}");
    }

    #[test]
    fn kernel_table_parses_and_rejects_unknown_keys() {
        let c = parse(
            "[kernel]\nversion = \"6.6.74\"\nsha256 = \"ab\"\nsource = \"../linux\"\n\
             fragments = \"kconfig\"\nbase = \"allnoconfig\"\n",
        )
        .unwrap();
        assert_eq!(c.kernel.source().file_name, "linux-6.6.74.tar.xz");
        assert_eq!(c.kernel.sha256, "ab");
        assert_eq!(c.kernel.source.as_deref(), Some(Path::new("../linux")));
        assert_eq!(c.kernel.fragments.as_deref(), Some(Path::new("kconfig")));
        assert_eq!(c.kernel.base.make_target(), "allnoconfig");
        let err = parse("[kernel]\nfragment = \"x\"").unwrap_err().to_string();
        assert!(err.contains("unknown field `fragment`") && err.contains("kernel"), "{err}");
        let err = parse("[kernel]\nbase = \"defconfig\"").unwrap_err().to_string();
        assert!(err.contains("kernel.base") && err.contains("unknown variant"), "{err}");
    }

    #[test]
    fn sizes_parse_in_every_spelling() {
        let size = |v: &str| parse(&format!("image.size = {v}")).map(|c| c.image.size);
        assert_eq!(size("64").unwrap(), ImageSizeSetting::Mib(64));
        assert_eq!(size("\"64MiB\"").unwrap(), ImageSizeSetting::Mib(64));
        assert_eq!(size("\"1GiB\"").unwrap(), ImageSizeSetting::Mib(1024));
        assert_eq!(size("\"auto\"").unwrap(), ImageSizeSetting::Auto);
        let err = size("\"big\"").unwrap_err().to_string();
        assert!(err.contains("image.size") && err.contains("invalid size `big`"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Any unknown key, at the top or in a section, is named in the error.
        #[test]
        fn any_unknown_key_is_named(key in "[a-z][a-z0-9_]{0,12}", section in 0usize..4) {
            let known = ["arch", "busybox", "skeleton", "overlays", "device-table", "image", "kernel", "run",
                         "version", "url", "sha256", "config", "size", "label", "uuid", "qemu",
                         "lkvm", "mem", "cpus", "timeout", "hostname", "checks", "mirrors",
                         "matrix", "firecracker", "vmm"];
            proptest::prop_assume!(!known.contains(&key.as_str()));
            let table = ["", "[busybox]\n", "[image]\n", "[run]\n"][section];
            let err = parse(&format!("{table}{key} = 1")).unwrap_err().to_string();
            proptest::prop_assert!(err.contains(&format!("unknown field `{key}`")), "{}", err);
        }

        /// Arbitrary text never panics the parser.
        #[test]
        fn arbitrary_text_parses_or_errs(text in "\\PC{0,120}") {
            let _ = parse(&text);
        }
    }

    #[test]
    fn layer_keys_take_one_path_or_a_list() {
        let c = parse("skeleton = \"skel\"\ndevice-table = [\"a.txt\", \"b.txt\"]").unwrap();
        assert_eq!(c.skeleton, Some(vec![PathBuf::from("skel")]));
        assert_eq!(c.device_table, Some(vec![PathBuf::from("a.txt"), PathBuf::from("b.txt")]));
        let c = parse("skeleton = [\"a\", \"b\"]\noverlays = [\"o\", \"t.tar.gz\"]").unwrap();
        assert_eq!(c.skeleton.unwrap().len(), 2);
        assert_eq!(c.overlays, [PathBuf::from("o"), PathBuf::from("t.tar.gz")]);
        let err = parse("overlays = \"o\"").unwrap_err().to_string();
        assert!(err.contains("`overlays`") && err.contains("expected a sequence"), "{err}");
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let err = parse("[image]\nsise = 3").unwrap_err().to_string();
        assert!(err.contains("unknown field `sise`") && err.contains("image"), "{err}");
        let err = parse("skeleton = 3").unwrap_err().to_string();
        assert!(err.contains("`skeleton`") && err.contains("a path or a list of paths"), "{err}");
        let err = parse("arch = \"sparc\"").unwrap_err().to_string();
        assert!(err.contains("unknown architecture `sparc`"), "{err}");
    }
}
