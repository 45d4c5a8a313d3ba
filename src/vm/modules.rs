//! Kernel modules for a run: finding a `lib/modules/<version>` tree, which modules a feature
//! needs, the order to load them in, and the files to deliver to the guest.
//!
//! A tree comes from `make modules_install INSTALL_MOD_PATH=…` (with `modules.dep`) or from an
//! unpacked distribution kernel package (Debian's has no `modules.dep`: `depmod` runs when the
//! package is installed). Dependencies come from `modules.dep` when it exists, so the module
//! files need not be read; otherwise from each module's `.modinfo` ELF section.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use xshell::Shell;

use super::KernelConfig;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

/// Which module provides each kernel configuration symbol when that symbol is `=m`.
///
/// Only symbols a run may need are listed; module names are as `lsmod` shows them (`_`,
/// never `-`).
pub const MODULE_SYMBOLS: &[(&str, &str)] = &[
    ("VIRTIO", "virtio"),
    ("VIRTIO_PCI_LIB", "virtio_pci_modern_dev"),
    ("VIRTIO_PCI_LIB_LEGACY", "virtio_pci_legacy_dev"),
    ("VIRTIO_PCI", "virtio_pci"),
    ("VIRTIO_MMIO", "virtio_mmio"),
    ("VIRTIO_CONSOLE", "virtio_console"),
    ("VIRTIO_BLK", "virtio_blk"),
    ("SCSI_VIRTIO", "virtio_scsi"),
    ("VIRTIO_NET", "virtio_net"),
    ("HW_RANDOM_VIRTIO", "virtio_rng"),
    ("VIRTIO_VSOCKETS", "vmw_vsock_virtio_transport"),
    ("FUSE_FS", "fuse"),
    ("VIRTIO_FS", "virtiofs"),
    ("NET_9P", "9pnet"),
    ("NET_9P_VIRTIO", "9pnet_virtio"),
    ("9P_FS", "9p"),
    ("EXT4_FS", "ext4"),
    ("OVERLAY_FS", "overlay"),
];

/// The modules to load for `symbols` (with or without `CONFIG_`) under `config`: one for each
/// symbol that is `=m`, in the order given, each once. Symbols that are built in (`=y`), not
/// set, or not in [`MODULE_SYMBOLS`] need nothing loaded and give nothing.
pub fn modules_for(symbols: &[&str], config: &KernelConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    for symbol in symbols {
        let symbol = symbol.strip_prefix("CONFIG_").unwrap_or(symbol);
        let module = MODULE_SYMBOLS.iter().find(|(s, _)| *s == symbol).map(|(_, m)| *m);
        if let Some(module) = module.filter(|_| config.get(symbol) == Some("m")) {
            if !out.contains(&module) {
                out.push(module);
            }
        }
    }
    out
}

/// One module of a tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Module {
    /// Its name as the kernel knows it (`virtio_pci`; `-` in file names becomes `_`).
    pub name: String,
    /// Its file, relative to the tree's root (`kernel/drivers/virtio/virtio_pci.ko`).
    pub path: PathBuf,
}

/// A file to deliver to the guest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestFile {
    /// Where it goes in the guest, relative to `/` (`lib/modules/<version>/kernel/…`).
    pub guest: PathBuf,
    /// Where it is on the host.
    pub host: PathBuf,
}

/// A `lib/modules/<version>` tree on the host, indexed by module name.
#[derive(Debug, Clone)]
pub struct ModuleTree {
    root: PathBuf,
    version: String,
    /// Normalised name → path relative to `root`.
    modules: ModuleIndex,
    /// Normalised name → dependencies, from `modules.dep`; `None` when the tree has none.
    dep_file: Option<DependencyIndex>,
    /// Modules built into the kernel, from `modules.builtin`.
    builtin: BTreeSet<String>,
}

/// File names that mark a directory as a `lib/modules/<version>` tree.
const TREE_MARKERS: [&str; 4] = ["modules.order", "modules.dep", "modules.builtin", "kernel"];

/// How module files end, compressed or not.
const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.gz", ".ko.xz", ".ko.zst"];

/// Archive suffixes [`ModuleTree::open`] unpacks.
const ARCHIVE_SUFFIXES: [&str; 6] = [".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2"];

impl ModuleTree {
    /// Opens `path`: a `lib/modules/<version>` directory, a directory holding exactly one
    /// (directly, or under `lib/modules/` or `usr/lib/modules/`), or an archive (`.tar`,
    /// `.tar.gz`, `.tar.bz2`, `.tar.xz`) holding one laid out either way. An archive is
    /// unpacked into `scratch`, which this call owns and reuses while the archive is
    /// unchanged; `.tar.xz` goes through the host's `tar`.
    pub fn open(sh: &Shell, path: &Path, scratch: &Path, progress: &dyn Progress) -> Result<Self> {
        if is_archive(path) && path.is_file() {
            let unpacked = unpack_archive(sh, path, scratch, progress)?;
            let (root, version) = find_tree(&unpacked).map_err(|e| match e {
                Error::Tree { message, .. } => tree_error(path, message),
                e => e,
            })?;
            return Self::open_root(root, version);
        }
        Self::open_dir(path)
    }

    /// [`ModuleTree::open`] for a directory only; no archive, no scratch space.
    pub fn open_dir(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).with_path("open module tree", path)?;
        if !meta.is_dir() {
            let message = format!(
                "not a directory nor an archive ({}); expected a `lib/modules/<version>` tree",
                ARCHIVE_SUFFIXES.join(", ")
            );
            return Err(tree_error(path, message));
        }
        let (root, version) = find_tree(path)?;
        Self::open_root(root, version)
    }

    /// Indexes the tree at `root`, whose kernel version is `version`.
    fn open_root(root: PathBuf, version: String) -> Result<Self> {
        let dep_path = root.join("modules.dep");
        let (modules, dep_file) = if dep_path.is_file() {
            let text = fs::read_to_string(&dep_path).with_path("read", &dep_path)?;
            let (modules, deps) = parse_modules_dep(&text, &dep_path)?;
            (modules, Some(deps))
        } else {
            (scan_modules(&root)?, None)
        };
        let builtin_path = root.join("modules.builtin");
        let builtin = if builtin_path.is_file() {
            let text = fs::read_to_string(&builtin_path).with_path("read", &builtin_path)?;
            text.lines().filter_map(|l| module_name(Path::new(l.trim()))).collect()
        } else {
            BTreeSet::new()
        };
        Ok(ModuleTree { root, version, modules, dep_file, builtin })
    }

    /// The kernel version the tree is for: its directory name (`6.1.0-56-cloud-amd64`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The tree's directory on the host (`…/lib/modules/<version>`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The tree's directory in the guest, relative to `/`: `lib/modules/<version>`.
    pub fn guest_dir(&self) -> PathBuf {
        Path::new("lib/modules").join(&self.version)
    }

    /// Whether dependencies come from `modules.dep` (else from the module files).
    pub fn has_dep_file(&self) -> bool {
        self.dep_file.is_some()
    }

    /// The module called `name` (`-` and `_` are the same), if the tree has it.
    pub fn module(&self, name: &str) -> Option<Module> {
        let name = normalise(name);
        let path = self.modules.get(&name)?.clone();
        Some(Module { name, path })
    }

    /// Whether `modules.builtin` lists `name`: it is part of the kernel and needs no loading.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalise(name))
    }

    /// Every module in the tree, by name.
    pub fn modules(&self) -> impl Iterator<Item = Module> + '_ {
        self.modules.iter().map(|(name, path)| Module { name: name.clone(), path: path.clone() })
    }

    /// The direct dependencies of `module`, by name: from `modules.dep` (which lists them
    /// transitively) or else from the module file's `.modinfo` section.
    pub fn dependencies(&self, module: &Module) -> Result<Vec<String>> {
        if let Some(deps) = &self.dep_file {
            return Ok(deps.get(&module.name).cloned().unwrap_or_default());
        }
        let path = self.root.join(&module.path);
        let info = read_modinfo(&path)?;
        let depends = info.iter().find(|(k, _)| k == "depends").map_or("", |(_, v)| v.as_str());
        Ok(depends.split(',').filter(|d| !d.is_empty()).map(normalise).collect())
    }

    /// `wanted` and everything they depend on, dependencies first, each once; modules built
    /// into the kernel are left out. The order depends only on the tree and on `wanted`.
    /// A module that is neither in the tree nor built in is an error naming it.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<Module>> {
        let mut walk = Walk { done: BTreeSet::new(), stack: Vec::new(), order: Vec::new() };
        for name in wanted {
            self.visit(&normalise(name), None, &mut walk)?;
        }
        Ok(walk.order)
    }

    fn visit(&self, name: &str, needed_by: Option<&str>, walk: &mut Walk) -> Result<()> {
        if walk.done.contains(name) || self.is_builtin(name) {
            return Ok(());
        }
        if let Some(at) = walk.stack.iter().position(|n| n == name) {
            let mut cycle = walk.stack[at..].to_vec();
            cycle.push(name.to_string());
            let message = format!("modules depend on each other: {}", cycle.join(" → "));
            return Err(tree_error(&self.root, message));
        }
        let Some(module) = self.module(name) else {
            let listed = match (self.has_dep_file(), self.root.join("modules.builtin").is_file()) {
                (true, true) => "neither modules.dep nor modules.builtin lists it",
                (true, false) => "modules.dep does not list it and there is no modules.builtin",
                (false, true) => "modules.builtin does not list it either",
                (false, false) => "and there is no modules.builtin to say it is built in",
            };
            let why = match needed_by {
                Some(parent) => format!("module `{parent}` needs `{name}`, which is not here"),
                None => format!("no module `{name}` here"),
            };
            let message =
                format!("{why}; {listed}; is this the module tree of the kernel being booted?");
            return Err(tree_error(&self.root, message));
        };
        walk.stack.push(name.to_string());
        let mut deps = self.dependencies(&module)?;
        deps.sort();
        deps.dedup();
        for dep in &deps {
            self.visit(dep, Some(name), walk)?;
        }
        walk.stack.pop();
        walk.done.insert(name.to_string());
        walk.order.push(module);
        Ok(())
    }

    /// Every regular file of the tree, for a guest that may load any module. Symbolic links
    /// are left out: `build` and `source` point into the kernel's build tree.
    pub fn all_files(&self) -> Result<Vec<GuestFile>> {
        let mut files = Vec::new();
        walk_files(&self.root, Path::new(""), &mut |rel| files.push(self.guest_file(rel)))?;
        files.sort();
        Ok(files)
    }

    /// The files of `modules` and the tree's top-level metadata (`modules.order`,
    /// `modules.builtin`, `modules.dep`, …), sorted by guest path.
    pub fn files_for(&self, modules: &[Module]) -> Result<Vec<GuestFile>> {
        let mut files: Vec<GuestFile> = modules.iter().map(|m| self.guest_file(&m.path)).collect();
        for entry in fs::read_dir(&self.root).with_path("read directory", &self.root)? {
            let entry = entry.with_path("read directory", &self.root)?;
            let is_file = entry.file_type().with_path("stat", entry.path())?.is_file();
            if is_file && entry.file_name().to_string_lossy().starts_with("modules.") {
                files.push(self.guest_file(Path::new(&entry.file_name())));
            }
        }
        if let Some(file) = files.iter().find(|f| !f.host.is_file()) {
            let why = "missing from the module tree; is the tree complete (and its modules.dep, \
                       if any, up to date)?";
            return Err(tree_error(&file.host, why));
        }
        files.sort();
        files.dedup();
        Ok(files)
    }

    fn guest_file(&self, rel: &Path) -> GuestFile {
        GuestFile { guest: self.guest_dir().join(rel), host: self.root.join(rel) }
    }

    /// Checks that the tree is for the kernel image at `kernel`: `Ok(Some(version))` when
    /// they match, `Ok(None)` when the image's version cannot be told (the caller should
    /// warn), an error naming both versions when they differ.
    pub fn check_kernel(&self, kernel: &Path) -> Result<Option<String>> {
        match kernel_release_of(kernel)? {
            Some(found) if found != self.version => {
                let message = format!(
                    "these modules are for kernel {}, but `{}` is kernel {found}; use the \
                     modules built or packaged with that kernel",
                    self.version,
                    kernel.display()
                );
                Err(tree_error(&self.root, message))
            }
            release => Ok(release),
        }
    }
}

/// The module tree a distribution package leaves beside its kernel: for
/// `<root>/boot/vmlinuz-<release>`, `<root>/lib/modules/<release>` if that directory exists
/// (an unpacked kernel package, or the host's own kernel).
pub fn beside_kernel(kernel: &Path) -> Option<PathBuf> {
    let name = kernel.file_name()?.to_str()?;
    let release = name.strip_prefix("vmlinuz-").or_else(|| name.strip_prefix("vmlinux-"))?;
    let boot = kernel.parent()?;
    if boot.file_name()? != "boot" {
        return None;
    }
    let tree = boot.parent()?.join("lib/modules").join(release);
    tree.is_dir().then_some(tree)
}

/// The state of a depth-first walk of the dependency graph.
struct Walk {
    done: BTreeSet<String>,
    stack: Vec<String>,
    order: Vec<Module>,
}

/// An error about the module tree, or the file in it, at `path`.
fn tree_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Tree { path: path.into(), message: message.into() }
}

/// `virtio-rng` → `virtio_rng`: the kernel treats `-` and `_` in module names alike.
fn normalise(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// The module name of a module file path (`kernel/fs/fuse/virtiofs.ko.xz` → `virtiofs`).
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    MODULE_SUFFIXES.iter().find_map(|s| file.strip_suffix(s)).map(normalise)
}

fn is_archive(path: &Path) -> bool {
    let name = path.to_string_lossy();
    ARCHIVE_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The `lib/modules/<version>` tree at or below `path`, and its version.
fn find_tree(path: &Path) -> Result<(PathBuf, String)> {
    let version_of = |dir: &Path| -> Result<String> {
        let name = dir.file_name().and_then(|n| n.to_str()).filter(|n| !n.is_empty());
        let why = "the directory name of a module tree must be its kernel version";
        name.map(str::to_string).ok_or_else(|| tree_error(dir, why))
    };
    if is_tree(path) {
        let root = fs::canonicalize(path).with_path("resolve", path)?;
        let version = version_of(&root)?;
        return Ok((root, version));
    }
    let mut found = BTreeMap::new();
    for base in [path.to_path_buf(), path.join("lib/modules"), path.join("usr/lib/modules")] {
        let Ok(entries) = fs::read_dir(&base) else { continue };
        for entry in entries {
            let entry = entry.with_path("read directory", &base)?;
            if entry.path().is_dir() && is_tree(&entry.path()) {
                // `lib` is often a link to `usr/lib`: the same version found twice is one tree.
                found.entry(version_of(&entry.path())?).or_insert(entry.path());
            }
        }
    }
    let versions: Vec<&str> = found.keys().map(String::as_str).collect();
    let why = match versions.len() {
        1 => {
            let (version, root) = found.into_iter().next().expect("one entry");
            return Ok((fs::canonicalize(&root).with_path("resolve", &root)?, version));
        }
        0 if path.join("Makefile").exists() && path.join("modules.order").exists() => {
            "this is a kernel build tree, not installed modules; install them with `make \
             modules_install INSTALL_MOD_PATH=<dir>` and give `<dir>/lib/modules/<version>`"
                .to_string()
        }
        0 => "no kernel module tree here: expected `lib/modules/<version>/` with modules.order \
              or kernel/ in it, as `make modules_install` or a distribution kernel package lays \
              it out"
            .to_string(),
        _ => format!(
            "holds module trees for several kernel versions ({}); give the \
             `lib/modules/<version>` directory of the kernel being booted",
            versions.join(", ")
        ),
    };
    Err(tree_error(path, why))
}

/// Whether `dir` is a `lib/modules/<version>` tree. A kernel build tree has modules.order
/// too, but also a Makefile, and its modules are not installed yet.
fn is_tree(dir: &Path) -> bool {
    TREE_MARKERS.iter().any(|m| dir.join(m).exists()) && !dir.join("Makefile").exists()
}

/// Module name → file, relative to the tree's root.
type ModuleIndex = BTreeMap<String, PathBuf>;

/// Module name → the names of the modules it depends on.
type DependencyIndex = BTreeMap<String, Vec<String>>;

/// Parses `modules.dep` (`kernel/a.ko: kernel/b.ko kernel/c.ko`) into the module index and
/// each module's dependencies by name.
fn parse_modules_dep(text: &str, path: &Path) -> Result<(ModuleIndex, DependencyIndex)> {
    let mut modules = BTreeMap::new();
    let mut deps = BTreeMap::new();
    for (n, line) in (1..).zip(text.lines()) {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad =
            || tree_error(path, format!("line {n} is not `module.ko: dependency.ko …`: {line:?}"));
        let (module, rest) = line.split_once(':').ok_or_else(bad)?;
        let name = module_name(Path::new(module.trim())).ok_or_else(bad)?;
        let names: Option<Vec<String>> =
            rest.split_whitespace().map(|d| module_name(Path::new(d))).collect();
        // depmod lists a module once; should a name repeat, the first entry wins as in modprobe.
        if !modules.contains_key(&name) {
            modules.insert(name.clone(), PathBuf::from(module.trim()));
            deps.insert(name, names.ok_or_else(bad)?);
        }
    }
    Ok((modules, deps))
}

/// Finds every module file under `root` (without following links). When two files have the
/// same module name the one under `updates/` wins, as depmod's default search order has it,
/// else the first by path.
fn scan_modules(root: &Path) -> Result<ModuleIndex> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    walk_files(root, Path::new(""), &mut |rel| {
        if let Some(name) = module_name(rel) {
            found.push((name, rel.to_path_buf()));
        }
    })?;
    found.sort_by_key(|(name, path)| (name.clone(), !path.starts_with("updates"), path.clone()));
    let mut modules = BTreeMap::new();
    for (name, path) in found {
        modules.entry(name).or_insert(path);
    }
    Ok(modules)
}

/// Calls `each` with the path (relative to `root`) of every regular file below `root/rel`,
/// not following symbolic links.
fn walk_files(root: &Path, rel: &Path, each: &mut dyn FnMut(&Path)) -> Result<()> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).with_path("read directory", &dir)? {
        let entry = entry.with_path("read directory", &dir)?;
        let kind = entry.file_type().with_path("stat", entry.path())?;
        let child = rel.join(entry.file_name());
        if kind.is_dir() {
            walk_files(root, &child, each)?;
        } else if kind.is_file() {
            each(&child);
        }
    }
    Ok(())
}

/// The `key=value` pairs of the module file at `path`'s `.modinfo` section; `.ko` and
/// `.ko.gz` are read, other compressions are an error naming the file.
pub fn read_modinfo(path: &Path) -> Result<Vec<(String, String)>> {
    let name = path.to_string_lossy();
    let data = if name.ends_with(".ko.gz") {
        let file = fs::File::open(path).with_path("open", path)?;
        let mut data = Vec::new();
        GzDecoder::new(file).read_to_end(&mut data).with_path("decompress", path)?;
        data
    } else if name.ends_with(".ko") {
        fs::read(path).with_path("read", path)?
    } else {
        let why = "busyroot reads only .ko and .ko.gz module files; for a tree of .ko.xz or \
                   .ko.zst modules its dependencies must come from modules.dep (create it with \
                   `depmod -b <dir> <version>`)";
        return Err(tree_error(path, why));
    };
    let why = "not a little-endian ELF module with a .modinfo section";
    modinfo(&data).ok_or_else(|| tree_error(path, why))
}

/// The `key=value` strings of the `.modinfo` section of a little-endian ELF object.
fn modinfo(elf: &[u8]) -> Option<Vec<(String, String)>> {
    let pairs = crate::host::elf::section(elf, ".modinfo")?
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(pairs)
}

/// The kernel release (`uname -r`) of the kernel image at `kernel`, from its contents (see
/// [`kernel_release`]) or else from a distribution's file name (`vmlinuz-<release>`).
/// `None` when neither tells.
pub fn kernel_release_of(kernel: &Path) -> Result<Option<String>> {
    let data = fs::read(kernel).with_path("read", kernel)?;
    if let Some(release) = kernel_release(&data) {
        return Ok(Some(release));
    }
    let release = super::kconfig::release_in_name(kernel);
    Ok(release.filter(|r| r.starts_with(|c: char| c.is_ascii_digit())).map(str::to_string))
}

/// The kernel release of a kernel image: from an x86 bzImage's setup header (its
/// `kernel_version` string), or from the `Linux version <release>` banner of an uncompressed
/// image (arm64 and riscv `Image`, `vmlinux`) or a gzip-compressed one (`Image.gz`).
pub fn kernel_release(image: &[u8]) -> Option<String> {
    bzimage_release(image).or_else(|| banner_release(image)).or_else(|| {
        if !image.starts_with(b"\x1f\x8b") {
            return None;
        }
        let mut payload = Vec::new();
        let _ = GzDecoder::new(image).take(256 << 20).read_to_end(&mut payload);
        banner_release(&payload)
    })
}

/// The first word of the string the x86 boot protocol's `kernel_version` field points at.
fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let field = u16::from_le_bytes(image.get(0x20e..0x210)?.try_into().ok()?);
    if field == 0 {
        return None;
    }
    let text = image.get(usize::from(field) + 0x200..)?;
    let text = &text[..text.iter().take(256).position(|&b| b == 0)?];
    release_word(text)
}

/// The word after the first `Linux version ` that starts with a digit.
fn banner_release(data: &[u8]) -> Option<String> {
    let banner = regex::bytes::Regex::new(r"(?-u)Linux version ([0-9][^\s\x00]*)").expect("valid");
    let word = banner.captures(data)?.get(1)?.as_bytes();
    release_word(word)
}

fn release_word(text: &[u8]) -> Option<String> {
    let word = text.split(|b| b.is_ascii_whitespace()).next()?;
    let word = std::str::from_utf8(word).ok()?;
    let printable = word.bytes().all(|b| b.is_ascii_graphic());
    (!word.is_empty() && printable && word.len() <= 64).then(|| word.to_string())
}

/// Unpacks `archive` into `scratch/tree`, unless a stamp says that is this archive unchanged
/// since; returns `scratch/tree`. A `.tar.xz` goes through the host's `tar`.
fn unpack_archive(
    sh: &Shell,
    archive: &Path,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let resolved = fs::canonicalize(archive).with_path("resolve", archive)?;
    let identity = crate::host::fs::file_identity(&resolved)?;
    let tree = scratch.join("tree");
    let stamp = scratch.join("archive");
    if tree.is_dir() && fs::read_to_string(&stamp).is_ok_and(|s| s == identity) {
        return Ok(tree);
    }
    fs::create_dir_all(scratch).with_path("create directory", scratch)?;
    let _ = fs::remove_file(&stamp);
    if tree.exists() {
        fs::remove_dir_all(&tree).with_path("remove", &tree)?;
    }
    crate::host::extract::unpack_with(sh, archive, &tree, progress)?;
    fs::write(&stamp, identity).with_path("write", &stamp)?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    /// A minimal 64-bit little-endian ELF object whose `.modinfo` section holds `info`.
    fn fake_ko(info: &[&str]) -> Vec<u8> {
        let modinfo: Vec<u8> = info.iter().flat_map(|e| [e.as_bytes(), b"\0"].concat()).collect();
        crate::host::elf::test_object(8, &[(".modinfo", &modinfo)])
    }

    /// Writes `rel` under `root` with `data`, creating directories.
    fn put(root: &Path, rel: &str, data: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    /// A tree in `dir/lib/modules/1.2.3-test` whose modules carry their dependencies in
    /// `.modinfo`, without modules.dep: `top` needs `mid-dash` and `base`, `mid_dash` needs
    /// `base` and the built-in `inkernel`.
    fn modinfo_tree(dir: &Path) -> PathBuf {
        let root = dir.join("lib/modules/1.2.3-test");
        put(&root, "kernel/a/top.ko", &fake_ko(&["license=GPL", "depends=mid_dash,base"]));
        put(&root, "kernel/b/mid-dash.ko", &fake_ko(&["depends=base,inkernel", "name=mid_dash"]));
        put(&root, "kernel/c/base.ko", &fake_ko(&["depends=", "vermagic=1.2.3-test SMP"]));
        put(&root, "kernel/c/lonely.ko", &fake_ko(&["depends="]));
        put(&root, "modules.order", b"kernel/c/base.ko\nkernel/b/mid-dash.ko\nkernel/a/top.ko\n");
        put(&root, "modules.builtin", b"kernel/fs/inkernel.ko\n");
        root
    }

    /// [`modinfo_tree`] in a new temporary directory, opened.
    fn open_modinfo_tree() -> (tempfile::TempDir, ModuleTree) {
        let dir = tempfile::tempdir().unwrap();
        modinfo_tree(dir.path());
        let tree = ModuleTree::open_dir(dir.path()).unwrap();
        (dir, tree)
    }

    fn names(modules: &[Module]) -> Vec<&str> {
        modules.iter().map(|m| m.name.as_str()).collect()
    }

    fn err(result: Result<impl std::fmt::Debug>) -> String {
        result.expect_err("an error").to_string()
    }

    #[test]
    fn reads_the_modinfo_section_of_an_elf_object() {
        let elf = fake_ko(&["license=GPL", "depends=a,b", "junk-without-equals"]);
        let info = modinfo(&elf).unwrap();
        assert_eq!(info, vec![("license".into(), "GPL".into()), ("depends".into(), "a,b".into())]);
        assert_eq!(modinfo(b"\x7fELF\x01\x01 32-bit"), None);
        assert_eq!(modinfo(&elf[..100]), None, "section headers cut off");
    }

    #[test]
    fn load_order_from_modinfo_puts_dependencies_first() {
        let (_dir, tree) = open_modinfo_tree();
        assert_eq!(tree.version(), "1.2.3-test");
        assert!(!tree.has_dep_file());
        let order = tree.load_order(&["top"]).unwrap();
        assert_eq!(names(&order), ["base", "mid_dash", "top"]);
        assert_eq!(order[1].path, Path::new("kernel/b/mid-dash.ko"));
        // Each module once, whatever is asked twice or already pulled in.
        let order = tree.load_order(&["base", "top", "mid-dash", "top", "lonely"]).unwrap();
        assert_eq!(names(&order), ["base", "mid_dash", "top", "lonely"]);
    }

    #[test]
    fn load_order_from_modules_dep_does_not_read_the_modules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("9.9.9");
        // Not ELF at all: with modules.dep the files must not be read.
        for rel in ["kernel/x/virtio.ko", "kernel/x/ring.ko", "kernel/x/virtio_pci.ko"] {
            put(&root, rel, b"not an ELF object");
        }
        put(
            &root,
            "modules.dep",
            b"kernel/x/virtio_pci.ko: kernel/x/virtio.ko kernel/x/ring.ko\n\
              kernel/x/virtio.ko: kernel/x/ring.ko\n\
              kernel/x/ring.ko:\n",
        );
        let tree = ModuleTree::open_dir(&root).unwrap();
        assert!(tree.has_dep_file());
        assert_eq!(tree.version(), "9.9.9");
        assert_eq!(
            names(&tree.load_order(&["virtio-pci"]).unwrap()),
            ["ring", "virtio", "virtio_pci"]
        );

        put(&root, "modules.dep", b"kernel/x/virtio_pci.ko kernel/x/virtio.ko\n");
        let message = err(ModuleTree::open_dir(&root));
        assert!(message.contains("modules.dep") && message.contains("line 1"), "{message}");
    }

    #[test]
    fn dashes_and_underscores_name_the_same_module() {
        let (_dir, tree) = open_modinfo_tree();
        assert_eq!(tree.module("mid_dash"), tree.module("mid-dash"));
        assert_eq!(tree.module("mid_dash").unwrap().name, "mid_dash");
        assert!(tree.module("mid").is_none());
    }

    #[test]
    fn builtin_modules_are_not_loaded_and_missing_ones_are_errors() {
        let (_dir, tree) = open_modinfo_tree();
        let root = tree.root().to_path_buf();
        assert!(tree.is_builtin("inkernel"));
        // A built-in module is not loaded even if a file of that name is there.
        put(&root, "kernel/fs/inkernel.ko", &fake_ko(&["depends="]));
        let tree = ModuleTree::open_dir(&root).unwrap();
        assert_eq!(
            names(&tree.load_order(&["inkernel", "mid_dash"]).unwrap()),
            ["base", "mid_dash"]
        );

        let message = err(tree.load_order(&["base", "virtiofs"]));
        assert!(message.contains("`virtiofs`"), "{message}");
        assert!(message.contains(&root.canonicalize().unwrap().display().to_string()), "{message}");

        put(&root, "kernel/d/needy.ko", &fake_ko(&["depends=ghost"]));
        let tree = ModuleTree::open_dir(&root).unwrap();
        let message = err(tree.load_order(&["needy"]));
        assert!(message.contains("`needy` needs `ghost`"), "{message}");
    }

    #[test]
    fn a_dependency_cycle_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("1.0");
        put(&root, "kernel/a.ko", &fake_ko(&["depends=b"]));
        put(&root, "kernel/b.ko", &fake_ko(&["depends=a"]));
        let tree = ModuleTree::open_dir(&root).unwrap();
        let message = err(tree.load_order(&["a"]));
        assert!(message.contains("a → b → a"), "{message}");
    }

    #[test]
    fn compressed_modules() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("1.0");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &fake_ko(&["depends=plain"])).unwrap();
        put(&root, "kernel/zipped.ko.gz", &gz.finish().unwrap());
        put(&root, "kernel/plain.ko", &fake_ko(&["depends="]));
        put(&root, "kernel/squeezed.ko.xz", b"\xfd7zXZ\0");
        put(&root, "kernel/squashed.ko.zst", b"\x28\xb5\x2f\xfd");
        let tree = ModuleTree::open_dir(&root).unwrap();
        assert_eq!(names(&tree.load_order(&["zipped"]).unwrap()), ["plain", "zipped"]);
        for name in ["squeezed", "squashed"] {
            let message = err(tree.load_order(&[name]));
            assert!(message.contains(&format!("{name}.ko.")), "{message}");
            assert!(message.contains("modules.dep"), "{message}");
        }
        // With modules.dep, compressed files need not be read.
        put(
            &root,
            "modules.dep",
            b"kernel/squeezed.ko.xz: kernel/squashed.ko.zst\nkernel/squashed.ko.zst:\n",
        );
        let tree = ModuleTree::open_dir(&root).unwrap();
        assert_eq!(names(&tree.load_order(&["squeezed"]).unwrap()), ["squashed", "squeezed"]);
    }

    #[test]
    fn a_module_under_updates_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("1.0");
        put(&root, "kernel/fs/fuse.ko", &fake_ko(&["depends="]));
        put(&root, "updates/fuse.ko", &fake_ko(&["depends="]));
        let tree = ModuleTree::open_dir(&root).unwrap();
        assert_eq!(tree.module("fuse").unwrap().path, Path::new("updates/fuse.ko"));
    }

    #[test]
    fn finds_the_tree_below_the_given_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = modinfo_tree(dir.path()).canonicalize().unwrap();
        for given in [dir.path().to_path_buf(), dir.path().join("lib/modules"), root.clone()] {
            let tree = ModuleTree::open_dir(&given).unwrap();
            assert_eq!((tree.root(), tree.version()), (root.as_path(), "1.2.3-test"), "{given:?}");
        }
        let message = err(ModuleTree::open_dir(&dir.path().join("lib")));
        assert!(message.contains("no kernel module tree here"), "{message}");

        put(dir.path(), "lib/modules/4.5.6/modules.order", b"");
        let message = err(ModuleTree::open_dir(dir.path()));
        assert!(message.contains("several kernel versions (1.2.3-test, 4.5.6)"), "{message}");

        // A distribution that merged /lib into /usr/lib.
        let usr = dir.path().join("usr-merged");
        put(&usr, "usr/lib/modules/7.0/modules.order", b"");
        assert_eq!(ModuleTree::open_dir(&usr).unwrap().version(), "7.0");
        // A kernel build tree has modules.order and modules.builtin, but is no module tree.
        let build = dir.path().join("linux");
        put(&build, "Makefile", b"");
        put(&build, "modules.order", b"");
        let message = err(ModuleTree::open_dir(&build));
        assert!(message.contains("make modules_install"), "{message}");

        put(dir.path(), "file", b"");
        let message = err(ModuleTree::open_dir(&dir.path().join("file")));
        assert!(message.contains("not a directory nor an archive"), "{message}");
        let message = err(ModuleTree::open_dir(&dir.path().join("absent")));
        assert!(message.contains("absent"), "{message}");
    }

    #[test]
    fn opens_archives_laid_out_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        modinfo_tree(&src);
        let sh = Shell::new().unwrap();
        let tar_gz = |name: &str, base: &Path| {
            let path = dir.path().join(name);
            let gz = flate2::write::GzEncoder::new(
                fs::File::create(&path).unwrap(),
                flate2::Compression::fast(),
            );
            let mut builder = tar::Builder::new(gz);
            builder.append_dir_all(".", base).unwrap();
            builder.into_inner().unwrap().finish().unwrap();
            path
        };
        // `lib/modules/<version>/…` and `<version>/…`.
        let full = tar_gz("full.tar.gz", &src);
        let short = tar_gz("short.tgz", &src.join("lib/modules"));
        for archive in [&full, &short] {
            let scratch = dir.path().join("scratch");
            let tree = ModuleTree::open(&sh, archive, &scratch, &Silent).unwrap();
            assert_eq!(tree.version(), "1.2.3-test");
            assert!(tree.root().starts_with(scratch.canonicalize().unwrap()));
            assert_eq!(names(&tree.load_order(&["top"]).unwrap()), ["base", "mid_dash", "top"]);
        }

        // An unchanged archive is not unpacked again; a changed one is.
        let scratch = dir.path().join("scratch");
        put(&scratch, "tree/1.2.3-test/kernel/marker.ko", &fake_ko(&[]));
        let tree = ModuleTree::open(&sh, &short, &scratch, &Silent).unwrap();
        assert!(tree.module("marker").is_some(), "reused");
        fs::write(&short, fs::read(&full).unwrap()).unwrap();
        let tree = ModuleTree::open(&sh, &short, &scratch, &Silent).unwrap();
        assert!(tree.module("marker").is_none(), "unpacked again");

        let empty = tar_gz("empty.tar.gz", &dir.path().join("src/lib/modules/1.2.3-test/kernel/a"));
        let message = err(ModuleTree::open(&sh, &empty, &dir.path().join("s2"), &Silent));
        assert!(
            message.contains("empty.tar.gz") && message.contains("no kernel module tree"),
            "{message}"
        );

        if crate::host::tools::find_program("xz").is_none() {
            crate::testing::skip("the .tar.xz part", "no `xz` on this host");
            return;
        }
        let xz = dir.path().join("modules.tar.xz");
        let base = src.join("lib/modules");
        xshell::cmd!(sh, "tar --create --xz --file {xz} --directory {base} .").run().unwrap();
        let tree = ModuleTree::open(&sh, &xz, &dir.path().join("s3"), &Silent).unwrap();
        assert_eq!(names(&tree.load_order(&["top"]).unwrap()), ["base", "mid_dash", "top"]);
        fs::write(&xz, b"not xz").unwrap();
        let message = err(ModuleTree::open(&sh, &xz, &dir.path().join("s4"), &Silent));
        assert!(message.contains("tar --extract --xz") && message.contains("intact"), "{message}");
    }

    #[test]
    fn files_to_deliver() {
        let (_dir, tree) = open_modinfo_tree();
        std::os::unix::fs::symlink("/usr/src/linux", tree.root().join("build")).unwrap();
        // Guest paths below `lib/modules/<version>/`, where every file must go.
        let guest = |files: &[GuestFile]| -> Vec<String> {
            let dir = Path::new("lib/modules/1.2.3-test");
            files.iter().map(|f| f.guest.strip_prefix(dir).unwrap().display().to_string()).collect()
        };
        let all = tree.all_files().unwrap();
        let modules =
            ["kernel/a/top.ko", "kernel/b/mid-dash.ko", "kernel/c/base.ko", "kernel/c/lonely.ko"];
        assert_eq!(guest(&all), [&modules[..], &["modules.builtin", "modules.order"]].concat());
        assert!(all.iter().all(|f| f.host.is_file()));
        let some = tree.files_for(&tree.load_order(&["mid_dash"]).unwrap()).unwrap();
        let needed =
            ["kernel/b/mid-dash.ko", "kernel/c/base.ko", "modules.builtin", "modules.order"];
        assert_eq!(guest(&some), needed);
        assert_eq!(some[1].host, tree.root().join("kernel/c/base.ko"));
    }

    /// The first 0x300 bytes of a bzImage whose `kernel_version` string is `text`.
    fn fake_bzimage(text: &[u8]) -> Vec<u8> {
        let mut image = vec![0u8; 0x400];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        image[0x300..0x300 + text.len()].copy_from_slice(text);
        image
    }

    #[test]
    fn kernel_release_of_images() {
        let bz = fake_bzimage(b"6.12.0-rc1+ (me@host) #3 SMP\0");
        assert_eq!(kernel_release(&bz).as_deref(), Some("6.12.0-rc1+"));
        assert_eq!(kernel_release(&fake_bzimage(b"\0")), None);
        let mut image = b"\0\0Linux version %s\0Linux version 6.6.7-arm64 (b@h) #1\0".to_vec();
        image.extend_from_slice(&[0xff; 64]);
        assert_eq!(kernel_release(&image).as_deref(), Some("6.6.7-arm64"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &image).unwrap();
        assert_eq!(kernel_release(&gz.finish().unwrap()).as_deref(), Some("6.6.7-arm64"));
        assert_eq!(kernel_release(b"no banner here"), None);

        let dir = tempfile::tempdir().unwrap();
        let named = dir.path().join("vmlinuz-5.10.0-9-amd64");
        fs::write(&named, b"opaque").unwrap();
        assert_eq!(kernel_release_of(&named).unwrap().as_deref(), Some("5.10.0-9-amd64"));
        let unnamed = dir.path().join("bzImage");
        fs::write(&unnamed, b"opaque").unwrap();
        assert_eq!(kernel_release_of(&unnamed).unwrap(), None);
        fs::write(&unnamed, &bz).unwrap();
        assert_eq!(kernel_release_of(&unnamed).unwrap().as_deref(), Some("6.12.0-rc1+"));
    }

    #[test]
    fn an_unpacked_package_has_its_modules_beside_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("boot/vmlinuz-6.1.0-41-cloud-amd64");
        fs::create_dir_all(kernel.parent().unwrap()).unwrap();
        fs::write(&kernel, "k").unwrap();
        assert_eq!(beside_kernel(&kernel), None, "no modules directory yet");
        let tree = dir.path().join("lib/modules/6.1.0-41-cloud-amd64");
        fs::create_dir_all(&tree).unwrap();
        assert_eq!(beside_kernel(&kernel), Some(tree));
        let elsewhere = dir.path().join("vmlinuz-6.1.0-41-cloud-amd64");
        fs::write(&elsewhere, "k").unwrap();
        assert_eq!(beside_kernel(&elsewhere), None, "only a kernel in a boot/ directory");
        assert_eq!(beside_kernel(&dir.path().join("boot/bzImage")), None);
    }

    #[test]
    fn modules_for_another_kernel_are_refused() {
        let (dir, tree) = open_modinfo_tree();
        let kernel = dir.path().join("bzImage");
        fs::write(&kernel, fake_bzimage(b"1.2.3-test #1\0")).unwrap();
        assert_eq!(tree.check_kernel(&kernel).unwrap().as_deref(), Some("1.2.3-test"));
        fs::write(&kernel, fake_bzimage(b"1.2.4 #1\0")).unwrap();
        let message = err(tree.check_kernel(&kernel));
        assert!(
            message.contains("for kernel 1.2.3-test") && message.contains("is kernel 1.2.4"),
            "{message}"
        );
        assert!(message.contains("bzImage"), "{message}");
        fs::write(&kernel, b"unknown").unwrap();
        assert_eq!(tree.check_kernel(&kernel).unwrap(), None);
    }

    #[test]
    fn modules_for_symbols_set_to_m() {
        let config = KernelConfig::parse(
            "CONFIG_VIRTIO_PCI=m\nCONFIG_VIRTIO_FS=m\nCONFIG_FUSE_FS=m\nCONFIG_EXT4_FS=y\n\
             # CONFIG_NET_9P is not set\n",
            "test",
        );
        let wanted = ["VIRTIO_FS", "CONFIG_FUSE_FS", "EXT4_FS", "NET_9P", "VIRTIO_PCI", "FUSE_FS"];
        assert_eq!(modules_for(&wanted, &config), ["virtiofs", "fuse", "virtio_pci"]);
        let symbols: BTreeSet<&str> = MODULE_SYMBOLS.iter().map(|(s, _)| *s).collect();
        assert_eq!(symbols.len(), MODULE_SYMBOLS.len(), "a symbol is listed twice");
        assert!(MODULE_SYMBOLS.iter().all(|(_, m)| !m.contains('-')), "names use `_`");
    }

    /// Debian's cloud kernel package as `cargo xtask kernel --distro debian` unpacked it in
    /// this workspace (`<dir>/boot/vmlinuz-<release>`): the kernel, the unpacked directory,
    /// its release and its module tree. Skipped, saying how to un-skip, without it.
    fn debian() -> Option<(PathBuf, PathBuf, String, ModuleTree)> {
        let ws = crate::config::Workspace::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        let layout = crate::context::Layout::new(&ws, crate::arch::Arch::X86_64);
        let kernel = crate::pipeline::distro::installed_kernel(&layout);
        let name = kernel.as_deref().and_then(Path::file_name).map(|n| n.to_string_lossy());
        let release = name.as_deref().and_then(|n| n.strip_prefix("vmlinuz-"));
        let Some(release) = release.filter(|r| r.ends_with("-cloud-amd64")) else {
            let reason = "Debian's cloud kernel is not fetched; run `cargo xtask kernel --distro \
                          debian`";
            crate::testing::skip("Debian's cloud kernel tests", reason);
            return None;
        };
        let kernel = kernel.clone().unwrap();
        let dir = kernel.parent().and_then(Path::parent).unwrap().to_path_buf();
        let tree = ModuleTree::open_dir(&dir).unwrap();
        Some((kernel, dir, release.to_string(), tree))
    }

    #[test]
    fn debian_cloud_kernel_release_matches_its_modules() {
        let Some((kernel, _, release, tree)) = debian() else { return };
        let image = fs::read(&kernel).unwrap();
        assert_eq!(kernel_release(&image).as_deref(), Some(release.as_str()));
        assert_eq!(tree.version(), release);
        assert!(!tree.has_dep_file(), "Debian's package ships no modules.dep");
        assert_eq!(tree.check_kernel(&kernel).unwrap(), Some(release));
    }

    #[test]
    fn debian_cloud_load_order_for_virtiofs_and_virtio_pci() {
        let Some((_, _, _, tree)) = debian() else { return };
        let order = tree.load_order(&["virtiofs", "virtio_pci"]).unwrap();
        let names = names(&order);
        eprintln!("load order: {names:?}");
        let at = |name: &str| {
            names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("{name} in {names:?}"))
        };
        assert!(at("fuse") < at("virtiofs"));
        assert!(at("virtio_ring") < at("virtio") && at("virtio") < at("virtiofs"));
        for dep in ["virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_ring"] {
            assert!(at(dep) < at("virtio_pci"), "{dep} before virtio_pci in {names:?}");
        }
        assert_eq!(names.len(), 7, "{names:?}");
        // ext4 is built in: asked for, nothing to load.
        assert!(tree.is_builtin("ext4"));
        assert!(tree.load_order(&["ext4"]).unwrap().is_empty());
        let files = tree.files_for(&order).unwrap();
        let bytes: u64 = files.iter().map(|f| fs::metadata(&f.host).unwrap().len()).sum();
        eprintln!("{} files, {bytes} bytes", files.len());
    }

    #[test]
    fn debian_cloud_config_names_modules_the_tree_has() {
        let Some((_, dir, release, tree)) = debian() else { return };
        let config_path = dir.join(format!("boot/config-{release}"));
        let config = KernelConfig::parse(&fs::read_to_string(&config_path).unwrap(), "debian");
        let symbols: Vec<&str> = MODULE_SYMBOLS.iter().map(|(s, _)| *s).collect();
        let wanted = modules_for(&symbols, &config);
        assert!(
            wanted.contains(&"virtiofs") && !wanted.contains(&"9p") && !wanted.contains(&"ext4")
        );
        for name in &wanted {
            assert!(tree.module(name).is_some(), "{name} (a `=m` symbol) is in the tree");
        }
        let order = tree.load_order(&wanted).unwrap();
        assert!(order.len() >= wanted.len());
    }
}
