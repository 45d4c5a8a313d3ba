//! The ext4 image writer: `mke2fs -d` builds the file system from a staged copy of the
//! manifest, one `debugfs` batch sets every mode, owner and time and adds the device nodes, and
//! `e2fsck` checks the result. Nothing here needs root.
//!
//! # Reproducibility
//!
//! The image is bit-identical for the same manifest and options, whatever the host, the output
//! directory or the host's clock. What would otherwise vary, and what pins it (e2fsprogs 1.47):
//!
//! - File system UUID, directory hash seed: random unless given; `-U` and `-E hash_seed=`.
//!   The metadata checksum seed and the journal are derived from them or fixed.
//! - Superblock times (`s_mkfs_time`, `s_wtime`, `s_lastcheck`) and the times of inodes the
//!   manifest does not list (journal, resize inode): the clock, unless `E2FSPROGS_FAKE_TIME`
//!   is set, which both `mke2fs` and `debugfs` honour.
//! - Inode numbers: `mke2fs -d` visits each directory through `scandir(…, alphasort)`, whose
//!   order follows `LC_COLLATE`; with `LC_ALL=C` it is byte order, the manifest's own order.
//! - Modes, owners, times and their nanoseconds: copied from the staged host files by
//!   `mke2fs -d`, then all overwritten by `debugfs` (nanoseconds set to zero).
//! - Extended attributes (SELinux labels, ACLs inherited from the output directory): copied
//!   from the host unless `-E no_copy_xattrs`.
//! - Features and geometry: taken from the host's `/etc/mke2fs.conf`, so `MKE2FS_CONFIG`
//!   points to our own configuration (`MKE2FS_CONF`) instead.
//! - Block group flags and `s_kbytes_written`: whether mke2fs zeroes the inode tables depends
//!   on the host (kernel lazy-init support, whether punching holes works); the image file is
//!   freshly created and so all zeros, which `-E assume_storage_prezeroed=1,nodiscard` states.
//! - File holes: `mke2fs -d` stores any all-zero block as a hole, whether the host file has
//!   a hole there or not.
//!
//! Needs e2fsprogs 1.47 or later for `no_copy_xattrs` and `assume_storage_prezeroed`.
//! Inode generation numbers are zero, and `debugfs` updates `s_wtime` and `s_kbytes_written`
//! on close only from the fake time and its own deterministic writes, so neither needs fixing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use xshell::{cmd, Shell};

use crate::error::{Error, IoContext, Result};
use crate::host::exec;
use crate::host::fs::write_atomically;
use crate::host::tools::{self, ROOTFS_TOOLS};
use crate::image::copy_file_content;
use crate::tree::manifest::{Entry, ImagePath, Kind, Manifest};

/// How big the image file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSize {
    /// Exactly this many bytes; an error if the content does not fit.
    Bytes(u64),
    /// The content, its metadata and journal, plus a quarter of the content (at least 4 MiB)
    /// of free space, rounded up to MiB.
    Auto,
}

/// Everything that goes into an ext4 image besides the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Options {
    /// Size of the image file.
    pub size: ImageSize,
    /// File system label, at most 16 bytes.
    pub label: String,
    /// File system UUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`); fixed for reproducibility.
    pub uuid: String,
    /// Seed of the directory index hash, a UUID as well; fixed for reproducibility.
    pub hash_seed: String,
    /// `SOURCE_DATE_EPOCH`: the superblock times and the times of inodes that the manifest
    /// does not list (such as `lost+found`).
    pub timestamp: u64,
}

/// The `mke2fs` configuration used instead of the host's `/etc/mke2fs.conf`, so that the
/// host cannot change the features or geometry. The features are Debian 12's ext4 defaults
/// (mountable by Linux 3.18 and later); no blocks are reserved for root, who runs everything
/// in a test guest anyway. The inode count is passed with `-N` (see `inode_count`). The empty
/// `default` type is there for `-T default`, which stops mke2fs from choosing a usage type by
/// size (the usual `small` type would mean 1 KiB blocks).
const MKE2FS_CONF: &str = "\
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
	reserved_ratio = 0
	hash_alg = half_md4

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
	default = {
	}
";

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
const INODE_SIZE: u64 = 256;
const INODE_RATIO: u64 = 16384;
const BLOCKS_PER_GROUP: u64 = BLOCK * 8;
/// Group descriptors per block with the `64bit` feature (64-byte descriptors).
const DESCS_PER_BLOCK: u64 = BLOCK / 64;
/// Inodes 1 to 10 are reserved; 11 is `lost+found`.
const RESERVED_INODES: u64 = 10;
/// Symlink targets shorter than this live in the inode itself.
const FAST_SYMLINK_MAX: usize = 59;
/// The last second ext4 can store (2446-05-10): a signed 32-bit field plus two epoch bits.
const EXT4_MAX_TIME: u64 = (1 << 31) - 1 + (3 << 32);

/// Writes `manifest` as an ext4 image to `out`, replacing it only on success.
pub fn write(sh: &Shell, manifest: &Manifest, out: &Path, opts: &Ext4Options) -> Result<()> {
    check_options(opts)?;
    let demand = Demand::of(manifest);
    let size = match opts.size {
        ImageSize::Bytes(size) if !demand.fits(size, 0) => return Err(too_small(manifest, size)),
        ImageSize::Bytes(size) => size,
        ImageSize::Auto => demand.smallest_size(demand.auto_headroom()),
    };
    let batch = Batch::new(manifest, opts.timestamp)?;
    let tools = Tools::find()?;

    write_atomically(out, |tmp| {
        // Commands run in the shell's directory, file operations in the process's: only
        // absolute paths mean the same to both.
        let image = std::path::absolute(tmp).with_path("resolve", tmp)?;
        let work = WorkDir::create(&image)?;
        stage(manifest, &work.root)?;
        fs::write(&work.config, MKE2FS_CONF).with_path("write", &work.config)?;
        fs::write(&work.batch, batch.text()).with_path("write", &work.batch)?;
        // A new file is all zeros, as `assume_storage_prezeroed` promises mke2fs.
        let file = fs::File::create(&image).with_path("create", &image)?;
        file.set_len(size).with_path("resize", &image)?;
        drop(file);

        // e2fsprogs reads a fake time of 0 as "unset" and takes the clock, so the epoch itself
        // (SOURCE_DATE_EPOCH=0) stamps the superblock one second later; the files' own times
        // are set by debugfs, exactly.
        let fake_time = opts.timestamp.max(1).to_string();
        let (mke2fs, debugfs, e2fsck) = (&tools.mke2fs, &tools.debugfs, &tools.e2fsck);
        let (root, label, uuid) = (&work.root, &opts.label, &opts.uuid);
        let inodes = inode_count(size, demand.inodes).to_string();
        let extended = format!(
            "hash_seed={},root_owner=0:0,no_copy_xattrs,assume_storage_prezeroed=1,nodiscard",
            opts.hash_seed
        );
        let make = cmd!(
            sh,
            "{mke2fs} -q -F -t ext4 -T default -L {label} -U {uuid} -N {inodes} -E {extended} -d {root} {image}"
        )
        .env("MKE2FS_CONFIG", &work.config)
        .env("E2FSPROGS_FAKE_TIME", &fake_time)
        .env("LC_ALL", "C");
        let (command, output) = run(make)?;
        if !output.status.success() {
            let text = combined(&output);
            if text.contains("Could not allocate") || text.contains("No space left") {
                return Err(too_small(manifest, size));
            }
            let hint = if text.contains("Bad option") {
                "busyroot needs e2fsprogs 1.47 or later; check `mke2fs -V`"
            } else {
                "see mke2fs's messages above"
            };
            return Err(failed(command, &output, hint));
        }

        let batch_file = &work.batch;
        let fix =
            cmd!(sh, "{debugfs} -w -f {batch_file} {image}").env("E2FSPROGS_FAKE_TIME", &fake_time);
        let (command, output) = run(fix)?;
        let errors = batch.errors(&String::from_utf8_lossy(&output.stderr));
        if !output.status.success() || !errors.is_empty() {
            let details =
                format!("debugfs reported errors on `{}`:\n{}", image.display(), errors.join("\n"));
            let status = status_text(&output);
            return Err(Error::Command { command, status, details });
        }

        let (command, output) = run(cmd!(sh, "{e2fsck} -f -n {image}"))?;
        if !output.status.success() {
            let hint = "e2fsck found the new image inconsistent; this is a bug in busyroot";
            return Err(failed(command, &output, hint));
        }
        Ok(())
    })
}

/// The e2fsprogs programs the writer runs.
struct Tools {
    mke2fs: PathBuf,
    debugfs: PathBuf,
    e2fsck: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools> {
        let require = |program: &str| {
            let tool = ROOTFS_TOOLS.iter().find(|t| t.program == program);
            tools::require(tool.expect("e2fsprogs programs are in ROOTFS_TOOLS"))
        };
        Ok(Tools {
            mke2fs: require("mke2fs")?,
            debugfs: require("debugfs")?,
            e2fsck: require("e2fsck")?,
        })
    }
}

/// The smallest image size, in bytes and a multiple of 1 MiB, that holds `manifest` with its
/// metadata and journal (and fits at every larger size too).
pub fn needed_bytes(manifest: &Manifest) -> u64 {
    Demand::of(manifest).smallest_size(0)
}

fn too_small(manifest: &Manifest, size: u64) -> Error {
    let size_mib = size / MIB;
    Error::ImageTooSmall { needed_mib: (needed_bytes(manifest) / MIB).max(size_mib + 1), size_mib }
}

fn check_options(opts: &Ext4Options) -> Result<()> {
    if !is_uuid(&opts.uuid) {
        return Err(Error::Other(format!(
            "invalid file system uuid `{}`: expected a UUID such as \
             `2f1c6e3a-5b7d-4c2e-9a1f-0d3b5e7c9a2b`; fix `image.uuid`",
            opts.uuid
        )));
    }
    if !is_uuid(&opts.hash_seed) {
        return Err(Error::Other(format!(
            "invalid directory hash seed `{}`: expected a UUID such as \
             `2f1c6e3a-5b7d-4c2e-9a1f-0d3b5e7c9a2b`",
            opts.hash_seed
        )));
    }
    if opts.label.len() > 16 {
        return Err(Error::Other(format!(
            "ext4 label `{}` is longer than 16 bytes; shorten `image.label`",
            opts.label
        )));
    }
    if opts.timestamp > EXT4_MAX_TIME {
        return Err(Error::Other(format!(
            "timestamp {} is later than ext4 can store; lower `SOURCE_DATE_EPOCH`",
            opts.timestamp
        )));
    }
    Ok(())
}

/// Eight, four, four, four and twelve hex digits: what `mke2fs -U` accepts, minus its
/// `random` and `time` keywords, which would break reproducibility.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A directory next to the image holding the staged tree, the mke2fs configuration and the
/// debugfs batch; removed when dropped, whether the write succeeded or not.
struct WorkDir {
    dir: PathBuf,
    root: PathBuf,
    config: PathBuf,
    batch: PathBuf,
}

impl WorkDir {
    fn create(image: &Path) -> Result<WorkDir> {
        let mut dir = image.as_os_str().to_owned();
        dir.push(".d");
        let dir = PathBuf::from(dir);
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("root");
        fs::create_dir_all(&root).with_path("create directory", &root)?;
        Ok(WorkDir { config: dir.join("mke2fs.conf"), batch: dir.join("debugfs.cmd"), root, dir })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Recreates the directories, regular files and symlinks of `manifest` below `root`. Host
/// modes and owners are left as they come: debugfs sets the real ones. Files are copied, not
/// hard-linked, because `mke2fs -d` turns host hard links into image hard links.
fn stage(manifest: &Manifest, root: &Path) -> Result<()> {
    for (path, entry) in manifest.iter() {
        let host = path.under(root);
        match &entry.kind {
            Kind::Dir if path.is_root() => {}
            Kind::Dir => fs::create_dir(&host).with_path("create directory", &host)?,
            Kind::File { source, size } => {
                let mut to = fs::File::create(&host).with_path("create", &host)?;
                copy_file_content(source, *size, &mut to, &host)?;
            }
            Kind::Bytes(bytes) => fs::write(&host, bytes).with_path("write", &host)?,
            Kind::Symlink(target) => {
                std::os::unix::fs::symlink(target, &host).with_path("create symlink", &host)?
            }
            Kind::CharDevice { .. } | Kind::BlockDevice { .. } | Kind::Fifo => {}
        }
    }
    Ok(())
}

/// The debugfs commands that add device nodes and fifos and set every inode's mode, owner
/// and times. Each line remembers the path it concerns, to name it when debugfs complains.
struct Batch {
    lines: Vec<(String, String)>,
}

impl Batch {
    fn new(manifest: &Manifest, timestamp: u64) -> Result<Batch> {
        let mut batch = Batch { lines: Vec::new() };
        for (path, entry) in manifest.iter() {
            if path.as_str().contains(['\n', '\r']) {
                return Err(Error::Other(format!(
                    "`{path}`: names with a line break cannot be written to an ext4 image; rename it"
                )));
            }
            if entry.mtime > EXT4_MAX_TIME {
                return Err(Error::Other(format!(
                    "`{path}`: mtime {} is later than ext4 can store; fix the time",
                    entry.mtime
                )));
            }
        }

        // `mknod` takes a name in the current directory, not a path. Nodes are made before any
        // time is set, in case linking them touches their directory.
        let mut cwd = None;
        for (path, entry) in manifest.iter() {
            let node = match entry.kind {
                Kind::CharDevice { major, minor } => {
                    format!("c {}", device_args(path, major, minor)?)
                }
                Kind::BlockDevice { major, minor } => {
                    format!("b {}", device_args(path, major, minor)?)
                }
                Kind::Fifo => "p".to_string(),
                _ => continue,
            };
            let parent = path.parent().expect("the root is a directory");
            if cwd.as_ref() != Some(&parent) {
                batch.push(&parent, format!("cd {}", quote(&parent.to_string())));
                cwd = Some(parent);
            }
            batch.push(path, format!("mknod {} {node}", quote(path.file_name())));
            if let Some((major, minor)) = entry.kind.device_numbers() {
                if major > 0xffff || minor > 0xffff {
                    // debugfs refuses numbers above 65535, so store the kernel's encoding
                    // (`new_encode_dev`) in the second block pointer ourselves.
                    let encoded = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                    batch
                        .push(path, format!("sif {} block[1] {encoded}", quote(&path.to_string())));
                }
            }
        }

        for (path, entry) in manifest.iter() {
            batch.set_inode(path, entry);
        }
        let lost_found = ImagePath::root().join("lost+found");
        if manifest.get(&lost_found).is_none() {
            let entry = Entry { kind: Kind::Dir, mode: 0o700, uid: 0, gid: 0, mtime: timestamp };
            batch.set_inode(&lost_found, &entry);
        }
        Ok(batch)
    }

    fn push(&mut self, path: &ImagePath, line: String) {
        self.lines.push((line, path.to_string()));
    }

    fn set_inode(&mut self, path: &ImagePath, entry: &Entry) {
        let p = quote(&path.to_string());
        self.push(path, format!("sif {p} mode 0{:o}", entry.st_mode()));
        self.push(path, format!("sif {p} uid {}", entry.uid));
        self.push(path, format!("sif {p} gid {}", entry.gid));
        for field in ["atime", "mtime", "ctime", "crtime"] {
            // Setting a time keeps the nanoseconds and sets the epoch bits of `*_extra`, so
            // clear it first.
            self.push(path, format!("sif {p} {field}_extra 0"));
            self.push(path, format!("sif {p} {field} @{}", entry.mtime));
        }
    }

    fn text(&self) -> String {
        let mut text = String::new();
        for (line, _) in &self.lines {
            let _ = writeln!(text, "{line}");
        }
        text
    }

    /// The error lines of debugfs's stderr, each followed by the first command about the
    /// path it names. debugfs exits 0 even when commands fail; its stderr holds only its
    /// version banner unless something went wrong.
    fn errors(&self, stderr: &str) -> Vec<String> {
        let mut lines = stderr.lines().filter(|l| !l.trim().is_empty()).peekable();
        if lines.peek().is_some_and(|l| l.starts_with("debugfs ")) {
            lines.next();
        }
        lines
            .map(|line| {
                let subject = line.split(": ").next().unwrap_or_default();
                match self.lines.iter().find(|(_, path)| path == subject) {
                    Some((command, _)) => format!("  {line} (in `{command}`)"),
                    None => format!("  {line}"),
                }
            })
            .collect()
    }
}

/// `major minor` for debugfs `mknod`; numbers above what debugfs accepts are set afterwards.
fn device_args(path: &ImagePath, major: u32, minor: u32) -> Result<String> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        return Err(Error::Other(format!(
            "`{path}`: device number {major}:{minor} is out of range (major < 4096, minor < 1048576)"
        )));
    }
    Ok(if major > 0xffff || minor > 0xffff {
        "0 0".to_string()
    } else {
        format!("{major} {minor}")
    })
}

/// Quotes one argument for debugfs's command parser, where `""` stands for a literal `"`.
fn quote(arg: &str) -> String {
    format!("\"{}\"", arg.replace('"', "\"\""))
}

/// What a manifest needs, independent of the image size.
struct Demand {
    /// Data, directory, symlink and extent tree blocks.
    blocks: u64,
    /// Inodes in use, the reserved ones included.
    inodes: u64,
}

impl Demand {
    fn of(manifest: &Manifest) -> Demand {
        let mut blocks = 0;
        // Directory entry bytes per directory, starting with `.`, `..` and, in the root,
        // `lost+found`.
        let mut dirs: BTreeMap<ImagePath, u64> = BTreeMap::new();
        for (path, entry) in manifest.iter() {
            blocks += match &entry.kind {
                Kind::Dir => {
                    let own = if path.is_root() { 24 + dirent_bytes("lost+found") } else { 24 };
                    *dirs.entry(path.clone()).or_default() += own;
                    0
                }
                Kind::File { size, .. } => file_blocks(*size),
                Kind::Bytes(bytes) => file_blocks(bytes.len() as u64),
                Kind::Symlink(target) if target.len() > FAST_SYMLINK_MAX => 1,
                _ => 0,
            };
            if let Some(parent) = path.parent() {
                *dirs.entry(parent).or_default() += dirent_bytes(path.file_name());
            }
        }
        // Entries never straddle blocks, so up to one maximal entry (264 bytes) is lost per
        // block, and each block ends with a 12-byte checksum tail.
        blocks += dirs
            .values()
            .map(|&bytes| file_blocks(bytes * BLOCK / (BLOCK - 12 - 264)))
            .sum::<u64>();
        Demand { blocks, inodes: RESERVED_INODES + manifest.len() as u64 }
    }

    /// Free space `Auto` leaves: a quarter of the content, at least 4 MiB.
    fn auto_headroom(&self) -> u64 {
        (self.blocks / 4).max(4 * MIB / BLOCK)
    }

    /// Whether an image of `size` bytes holds the content plus `headroom` free blocks.
    fn fits(&self, size: u64, headroom: u64) -> bool {
        // Allocation is not perfectly tight: leave a little slack.
        let slack = 8 + self.blocks / 128;
        free_blocks(size, self.inodes).is_some_and(|free| free >= self.blocks + headroom + slack)
    }

    /// The smallest multiple of 1 MiB that fits, such that every larger size fits too. Free
    /// space grows with the size except where the default journal size steps up, so those
    /// steps are checked as well.
    fn smallest_size(&self, headroom: u64) -> u64 {
        let mut size = ((self.blocks + headroom) * BLOCK).div_ceil(MIB).max(1) * MIB;
        loop {
            let later_steps_fit = JOURNAL_STEPS
                .iter()
                .filter(|&&(blocks, _)| blocks * BLOCK > size)
                .all(|&(blocks, _)| self.fits(blocks * BLOCK, headroom));
            if self.fits(size, headroom) && later_steps_fit {
                return size;
            }
            size += MIB;
        }
    }
}

/// Blocks holding `bytes` of file data, plus extent tree blocks for files too fragmented for
/// the four extents that fit in the inode. An extent covers at most one block group, and
/// each group may also be cut by a superblock backup.
fn file_blocks(bytes: u64) -> u64 {
    let data = bytes.div_ceil(BLOCK);
    let extents = 2 * data.div_ceil(BLOCKS_PER_GROUP) + 1;
    let tree = if extents > 4 { extents.div_ceil(BLOCK / 12 - 1) } else { 0 };
    data + tree
}

fn dirent_bytes(name: &str) -> u64 {
    8 + (name.len() as u64).next_multiple_of(4)
}

/// `(blocks, journal blocks)`: mke2fs's default journal size for file systems of at least
/// `blocks` blocks (`ext2fs_default_journal_size`). Smaller ones have no journal.
const JOURNAL_STEPS: [(u64, u64); 8] = [
    (2048, 1024),
    (32768, 4096),
    (256 * 1024, 8192),
    (512 * 1024, 16384),
    (4096 * 1024, 32768),
    (8192 * 1024, 65536),
    (16384 * 1024, 131072),
    (32768 * 1024, 262144),
];

fn journal_blocks(blocks: u64) -> u64 {
    JOURNAL_STEPS.iter().rev().find(|&&(min, _)| blocks >= min).map_or(0, |&(_, journal)| journal)
}

/// The inode count passed to mke2fs: the usual one per 16 KiB, but never fewer than the
/// manifest needs plus a quarter (at least 64) for files created in the guest.
fn inode_count(size: u64, used: u64) -> u64 {
    (size / INODE_RATIO).max(used + (used / 4).max(64))
}

/// Blocks left for content in an image of `size` bytes after the superblocks, group
/// descriptors, bitmaps, inode tables, journal, resize inode and `lost+found`, following
/// what mke2fs lays out with [`MKE2FS_CONF`]. `None` when mke2fs would refuse the size.
fn free_blocks(size: u64, used_inodes: u64) -> Option<u64> {
    let mut blocks = size / BLOCK;
    let mut groups = blocks.div_ceil(BLOCKS_PER_GROUP);
    if groups == 0 {
        return None;
    }
    let inodes_per_group =
        inode_count(size, used_inodes).div_ceil(groups).next_multiple_of(BLOCK / INODE_SIZE);
    if inodes_per_group > BLOCK * 8 {
        return None;
    }
    let table_blocks = inodes_per_group * INODE_SIZE / BLOCK;
    let descriptor_blocks = |groups: u64| groups.div_ceil(DESCS_PER_BLOCK);
    // Room for the descriptors of a file system 1024 times larger (up to 2^32 blocks).
    let growth_groups = (blocks * 1024).min(u64::from(u32::MAX)).div_ceil(BLOCKS_PER_GROUP);
    let reserved_gdt =
        descriptor_blocks(growth_groups).saturating_sub(descriptor_blocks(groups)).min(BLOCK / 4);
    // mke2fs drops a last group too small for its own metadata.
    let rest = blocks % BLOCKS_PER_GROUP;
    if rest != 0 && rest < 3 + table_blocks + reserved_gdt + 50 {
        if groups == 1 {
            return None;
        }
        blocks -= rest;
        groups -= 1;
    }
    let per_backup = 1 + descriptor_blocks(groups) + reserved_gdt;
    // The resize inode's block is allocated even when no descriptor blocks are reserved.
    let resize_inode = 1;
    let lost_found = 4;
    let overhead = backup_groups(groups) * per_backup
        + groups * (2 + table_blocks)
        + journal_blocks(blocks)
        + resize_inode
        + lost_found;
    blocks.checked_sub(overhead)
}

/// Groups holding a superblock backup with `sparse_super`: 0, 1 and powers of 3, 5 and 7.
fn backup_groups(groups: u64) -> u64 {
    let mut count = groups.min(2);
    for base in [3, 5, 7] {
        let mut group = base;
        while group < groups {
            count += 1;
            group *= base;
        }
    }
    count
}

/// Runs `cmd` through [`exec::output`] and returns its command line and its output, whatever
/// its exit status.
fn run(cmd: xshell::Cmd<'_>) -> Result<(String, Output)> {
    let command = cmd.to_string();
    match exec::output(cmd) {
        Ok(output) => Ok((command, output)),
        Err(e) => Err(Error::Command { command, status: String::new(), details: e.to_string() }),
    }
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn status_text(output: &Output) -> String {
    match output.status.code() {
        Some(code) => format!(": exit status {code}"),
        None => ": killed by a signal".to_string(),
    }
}

/// A command error with the last lines of its output and a hint.
fn failed(command: String, output: &Output, hint: &str) -> Error {
    let text = combined(output);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    Error::Command { command, status: status_text(output), details: format!("{tail}\n{hint}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const EPOCH: u64 = 1_700_000_000;

    /// The shell, or `None` (with a printed reason) when e2fsprogs is missing.
    fn shell() -> Option<Shell> {
        for program in ["mke2fs", "debugfs", "e2fsck"] {
            if tools::find_program(program).is_none() {
                let reason = format!("`{program}` (e2fsprogs) is not installed");
                crate::testing::skip("the ext4 tests", &reason);
                return None;
            }
        }
        Some(Shell::new().unwrap())
    }

    fn options(size: ImageSize) -> Ext4Options {
        Ext4Options {
            size,
            label: "rootfs".into(),
            uuid: "2f1c6e3a-5b7d-4c2e-9a1f-0d3b5e7c9a2b".into(),
            hash_seed: "7e4d2c1b-0a9f-4e8d-b7c6-5a4b3c2d1e0f".into(),
            timestamp: EPOCH,
        }
    }

    fn entry(kind: Kind, mode: u32, mtime: u64) -> Entry {
        Entry { kind, mode, uid: 0, gid: 0, mtime }
    }

    fn add(m: &mut Manifest, path: &str, entry: Entry) {
        m.insert(ImagePath::parse(path).unwrap(), entry).unwrap();
    }

    /// `len` bytes without all-zero blocks, which ext4 would store as holes.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A host file for `Kind::File`, with host metadata that must not reach the image.
    fn source_file(dir: &Path, name: &str, bytes: &[u8], host_mode: u32) -> Kind {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(host_mode)).unwrap();
        Kind::File { source: path, size: bytes.len() as u64 }
    }

    /// A manifest with every kind of entry and the awkward cases: setuid, sticky, private
    /// directories, foreign owners, long symlinks, big device numbers, odd names, post-2038
    /// times.
    fn sample(source_dir: &Path, host_mode: u32) -> Manifest {
        let dir = |mode| entry(Kind::Dir, mode, EPOCH);
        let mut m = Manifest::new(EPOCH);
        for (path, mode) in [("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("home", 0o755)] {
            add(&mut m, path, dir(mode));
        }
        add(&mut m, "root", dir(0o700));
        add(&mut m, "tmp", dir(0o1777));
        add(&mut m, "home/user", Entry { uid: 1000, gid: 1000, ..dir(0o750) });
        let busybox = source_file(source_dir, "busybox", &noise(1 << 20, 1), host_mode);
        add(&mut m, "bin/busybox", entry(busybox, 0o4755, EPOCH + 1));
        add(&mut m, "bin/sh", entry(Kind::Symlink("busybox".into()), 0o777, EPOCH + 2));
        let long = format!("/{}/busybox", "a-rather-long-directory-name".repeat(3));
        add(&mut m, "bin/long", entry(Kind::Symlink(long), 0o777, EPOCH + 3));
        add(&mut m, "etc/hostname", entry(Kind::Bytes(b"busyroot\n".to_vec()), 0o644, EPOCH + 4));
        add(&mut m, "etc/empty", entry(Kind::Bytes(Vec::new()), 0o600, EPOCH + 5));
        add(
            &mut m,
            "etc/a \"quoted\" name",
            entry(Kind::Bytes(b"q".to_vec()), 0o644, 4_102_444_800),
        );
        let note = Entry {
            uid: 1000,
            gid: 100_000,
            ..entry(Kind::Bytes(b"hej".to_vec()), 0o640, EPOCH + 6)
        };
        add(&mut m, "home/user/ünïcødé ✓", note);
        let dev = |major, minor| Kind::CharDevice { major, minor };
        add(&mut m, "dev/console", entry(dev(5, 1), 0o600, EPOCH));
        add(&mut m, "dev/null", entry(dev(1, 3), 0o666, EPOCH));
        add(&mut m, "dev/big", entry(dev(300, 70_000), 0o600, EPOCH));
        add(&mut m, "dev/sda", entry(Kind::BlockDevice { major: 8, minor: 0 }, 0o660, EPOCH));
        add(&mut m, "dev/initctl", entry(Kind::Fifo, 0o600, EPOCH));
        m
    }

    fn debugfs_bytes(sh: &Shell, image: &Path, request: &str) -> Vec<u8> {
        let debugfs = tools::find_program("debugfs").unwrap();
        let output =
            cmd!(sh, "{debugfs} -R {request} {image}").quiet().ignore_status().output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "debugfs -R {request:?} complained:\n{stderr}");
        output.stdout
    }

    fn debugfs(sh: &Shell, image: &Path, request: &str) -> String {
        String::from_utf8(debugfs_bytes(sh, image, request)).unwrap()
    }

    /// The value after `key` in debugfs `stat` output, up to the next run of spaces.
    fn field<'a>(stat: &'a str, key: &str) -> &'a str {
        let rest =
            &stat[stat.find(key).unwrap_or_else(|| panic!("no {key:?} in:\n{stat}")) + key.len()..];
        rest.lines().next().unwrap().trim_start().split("  ").next().unwrap()
    }

    /// Seconds since the epoch of a `stat` time line such as ` mtime: 0x6553f100:00000000`.
    fn time(stat: &str, name: &str) -> u64 {
        let (lo, extra) = field(stat, &format!("{name}: 0x")).split_once(':').unwrap();
        let lo = u32::from_str_radix(lo, 16).unwrap() as i32 as i64;
        let extra = u32::from_str_radix(&extra[..8], 16).unwrap();
        assert_eq!(extra >> 2, 0, "{name} has nanoseconds:\n{stat}");
        (lo + (i64::from(extra & 3) << 32)) as u64
    }

    fn e2fsck_is_clean(sh: &Shell, image: &Path) {
        let e2fsck = tools::find_program("e2fsck").unwrap();
        let output = cmd!(sh, "{e2fsck} -fn {image}").quiet().ignore_status().output().unwrap();
        assert!(output.status.success(), "e2fsck -fn {}:\n{}", image.display(), combined(&output));
    }

    #[test]
    fn every_entry_is_written_with_its_type_mode_owner_time_and_content() {
        let Some(sh) = shell() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let manifest = sample(tmp.path(), 0o644);
        let image = tmp.path().join("out/rootfs.ext4");
        write(&sh, &manifest, &image, &options(ImageSize::Bytes(16 * MIB))).unwrap();
        assert_eq!(fs::metadata(&image).unwrap().len(), 16 * MIB);
        e2fsck_is_clean(&sh, &image);
        let leftovers: Vec<_> = fs::read_dir(image.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["rootfs.ext4"], "temporary files were left behind");

        for (path, entry) in manifest.iter() {
            let p = quote(&path.to_string());
            let stat = debugfs(&sh, &image, &format!("stat {p}"));
            let kind = match entry.kind {
                Kind::Dir => "directory",
                Kind::File { .. } | Kind::Bytes(_) => "regular",
                Kind::Symlink(_) => "symlink",
                Kind::CharDevice { .. } => "character special",
                Kind::BlockDevice { .. } => "block special",
                Kind::Fifo => "FIFO",
            };
            assert_eq!(field(&stat, "Type:"), kind, "{path}");
            assert_eq!(field(&stat, "Mode:"), format!("0{:03o}", entry.mode), "{path}");
            assert_eq!(field(&stat, "User:"), entry.uid.to_string(), "{path}");
            assert_eq!(field(&stat, "Group:"), entry.gid.to_string(), "{path}");
            assert_eq!(field(&stat, "Generation:"), "0", "{path}");
            for name in ["atime", "mtime", "ctime", "crtime"] {
                assert_eq!(time(&stat, name), entry.mtime, "{name} of {path}");
            }
            match &entry.kind {
                Kind::File { source, .. } => {
                    let content = debugfs_bytes(&sh, &image, &format!("cat {p}"));
                    assert!(content == fs::read(source).unwrap(), "content of {path}");
                }
                Kind::Bytes(bytes) => {
                    assert_eq!(
                        debugfs(&sh, &image, &format!("cat {p}")).as_bytes(),
                        bytes,
                        "{path}"
                    )
                }
                Kind::Symlink(target) if target.len() <= FAST_SYMLINK_MAX => {
                    assert_eq!(field(&stat, "Fast link dest:"), format!("\"{target}\""), "{path}")
                }
                Kind::Symlink(target) => {
                    assert_eq!(&debugfs(&sh, &image, &format!("cat {p}")), target)
                }
                Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                    let numbers =
                        field(&stat, "Device major/minor number:").split(' ').next().unwrap();
                    assert_eq!(numbers, format!("{major:02}:{minor:02}"), "{path}");
                }
                Kind::Dir | Kind::Fifo => {}
            }
        }

        let stat = debugfs(&sh, &image, "stat /lost+found");
        assert_eq!(field(&stat, "Mode:"), "0700");
        assert_eq!(time(&stat, "mtime"), EPOCH);
        let listing = debugfs(&sh, &image, "ls -l /dev");
        assert!(listing.contains(" console\n") && listing.contains(" initctl\n"), "{listing}");
        let superblock = debugfs(&sh, &image, "stats");
        assert_eq!(field(&superblock, "Filesystem volume name:"), "rootfs");
        assert_eq!(field(&superblock, "Filesystem UUID:"), options(ImageSize::Auto).uuid);
        assert_eq!(field(&superblock, "Reserved block count:"), "0");
    }

    #[test]
    fn images_are_identical_whatever_the_output_and_source_directories() {
        let Some(sh) = shell() else { return };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let out_a = a.path().join("rootfs.ext4");
        let out_b = b.path().join("deeper/dir/other-name.ext4");
        write(&sh, &sample(a.path(), 0o644), &out_a, &options(ImageSize::Auto)).unwrap();
        // Different host modes and, a second later, different host times of the sources.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write(&sh, &sample(b.path(), 0o755), &out_b, &options(ImageSize::Auto)).unwrap();
        let (bytes_a, bytes_b) = (fs::read(&out_a).unwrap(), fs::read(&out_b).unwrap());
        let differing = bytes_a.iter().zip(&bytes_b).filter(|(x, y)| x != y).count();
        assert!(bytes_a.len() == bytes_b.len() && differing == 0, "{differing} bytes differ");
    }

    #[test]
    fn an_epoch_of_zero_pins_the_superblock_times_instead_of_taking_the_clock() {
        let Some(sh) = shell() else { return };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rootfs.ext4");
        let zero = Ext4Options { timestamp: 0, ..options(ImageSize::Auto) };
        write(&sh, &sample(dir.path(), 0o644), &out, &zero).unwrap();
        // debugfs (found where busyroot finds it, /sbin too) prints the superblock's times.
        let debugfs = tools::find_program("debugfs").unwrap();
        let stats = cmd!(sh, "{debugfs} -R stats {out}").env("TZ", "UTC").quiet().ignore_stderr();
        let header = stats.read().unwrap();
        for field in ["Filesystem created:", "Last write time:"] {
            let line = header.lines().find(|l| l.starts_with(field)).unwrap();
            assert!(line.ends_with("Thu Jan  1 00:00:01 1970"), "{line}");
        }
    }

    #[test]
    fn too_small_a_size_is_reported_before_writing() {
        let Some(sh) = shell() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::new(EPOCH);
        let big = source_file(tmp.path(), "big", &noise(4 << 20, 2), 0o644);
        add(&mut manifest, "big", entry(big, 0o644, EPOCH));
        let image = tmp.path().join("rootfs.ext4");
        let err = write(&sh, &manifest, &image, &options(ImageSize::Bytes(2 * MIB))).unwrap_err();
        let needed = needed_bytes(&manifest) / MIB;
        assert!(
            matches!(err, Error::ImageTooSmall { needed_mib, size_mib: 2 } if needed_mib == needed && needed > 4),
            "{err}"
        );
        assert!(!image.exists());
        write(&sh, &manifest, &image, &options(ImageSize::Bytes(needed * MIB))).unwrap();
        e2fsck_is_clean(&sh, &image);
    }

    #[test]
    fn auto_size_fits_twenty_megabytes_with_headroom() {
        let Some(sh) = shell() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::new(EPOCH);
        add(&mut manifest, "bin", entry(Kind::Dir, 0o755, EPOCH));
        for i in 0..20 {
            let file =
                source_file(tmp.path(), &format!("f{i}"), &noise(1_000_000 + i, i as u64), 0o644);
            add(&mut manifest, &format!("bin/f{i}"), entry(file, 0o755, EPOCH));
        }
        for i in 0..400 {
            add(
                &mut manifest,
                &format!("bin/applet{i}"),
                entry(Kind::Symlink("f0".into()), 0o777, EPOCH),
            );
        }
        let image = tmp.path().join("rootfs.ext4");
        write(&sh, &manifest, &image, &options(ImageSize::Auto)).unwrap();
        e2fsck_is_clean(&sh, &image);
        let size = fs::metadata(&image).unwrap().len();
        assert_eq!(size % MIB, 0);
        let stats = debugfs(&sh, &image, "stats");
        let free: u64 = field(&stats, "Free blocks:").parse().unwrap();
        assert!(free * BLOCK >= 5 * MIB, "only {free} blocks free in a {size}-byte image");
        assert!(size < 40 * MIB, "{size} bytes is far more than needed");
    }

    #[test]
    fn needed_bytes_is_enough_for_many_small_files_and_directories() {
        let Some(sh) = shell() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let mut manifest = Manifest::new(EPOCH);
        add(&mut manifest, "flat", entry(Kind::Dir, 0o755, EPOCH));
        for i in 0..3000 {
            let name = format!("flat/a-file-with-a-longish-name-{i:05}");
            add(
                &mut manifest,
                &name,
                entry(Kind::Bytes(noise(100 + i % 5000, i as u64)), 0o644, EPOCH),
            );
        }
        for i in 0..300 {
            add(&mut manifest, &format!("d{i}"), entry(Kind::Dir, 0o755, EPOCH));
            let link = "x".repeat(100 + i);
            add(&mut manifest, &format!("d{i}/link"), entry(Kind::Symlink(link), 0o777, EPOCH));
        }
        let needed = needed_bytes(&manifest);
        let image = tmp.path().join("rootfs.ext4");
        write(&sh, &manifest, &image, &options(ImageSize::Bytes(needed))).unwrap();
        e2fsck_is_clean(&sh, &image);
        let stats = debugfs(&sh, &image, "stats");
        let free: u64 = field(&stats, "Free blocks:").parse().unwrap();
        assert!(free * BLOCK < 2 * MIB, "the estimate of {needed} bytes left {free} blocks free");
    }

    #[test]
    fn sizes_follow_mke2fs_geometry() {
        assert_eq!(backup_groups(1), 1);
        assert_eq!(backup_groups(10), 6); // 0, 1, 3, 5, 7, 9
        assert_eq!(backup_groups(50), 9); // and 25, 27, 49
        assert_eq!(journal_blocks(2047), 0);
        assert_eq!(journal_blocks(32767), 1024);
        assert_eq!(journal_blocks(32768), 4096);
        // Free blocks mke2fs 1.47 leaves in empty images of 64 MiB and 200 MiB (dumpe2fs
        // "Free blocks" plus the root directory's block).
        assert_eq!(free_blocks(8 * MIB, 0), Some(983));
        assert_eq!(free_blocks(64 * MIB, 0), Some(15088));
        assert_eq!(free_blocks(200 * MIB, 0), Some(46243));
        assert_eq!(free_blocks(64 << 10, 0), None);
        let m = Manifest::new(EPOCH);
        assert!(needed_bytes(&m) <= 2 * MIB);
    }

    #[test]
    fn options_that_would_break_reproducibility_are_refused() {
        let random = Ext4Options { uuid: "random".into(), ..options(ImageSize::Auto) };
        assert!(check_options(&random).unwrap_err().to_string().contains("`image.uuid`"));
        let time = Ext4Options { hash_seed: "time".into(), ..options(ImageSize::Auto) };
        assert!(check_options(&time).is_err());
        let long = Ext4Options { label: "a-label-of-17-chr".into(), ..options(ImageSize::Auto) };
        assert!(check_options(&long).is_err());
        assert!(check_options(&options(ImageSize::Auto)).is_ok());
    }

    #[test]
    fn batch_quotes_names_and_refuses_line_breaks() {
        assert_eq!(quote(r#"/etc/a "b""#), r#""/etc/a ""b""""#);
        let mut m = Manifest::new(EPOCH);
        add(&mut m, "bad\nname", entry(Kind::Dir, 0o755, EPOCH));
        let err = Batch::new(&m, EPOCH).err().unwrap();
        assert!(err.to_string().contains("line break"), "{err}");
    }

    #[test]
    fn debugfs_errors_name_the_failing_command() {
        let mut m = Manifest::new(EPOCH);
        add(&mut m, "dev", entry(Kind::Dir, 0o755, EPOCH));
        add(&mut m, "dev/console", entry(Kind::CharDevice { major: 5, minor: 1 }, 0o600, EPOCH));
        let batch = Batch::new(&m, EPOCH).unwrap();
        assert!(batch.errors("debugfs 1.47.0 (5-Feb-2023)\n").is_empty());
        let errors = batch
            .errors("debugfs 1.47.0 (5-Feb-2023)\n/dev/console: File not found by ext2_lookup \n");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("(in `mknod \"console\" c 5 1`)"), "{errors:?}");
        let text = batch.text();
        assert!(
            text.starts_with("cd \"/dev\"\nmknod \"console\" c 5 1\nsif \"/\" mode 040755\n"),
            "{text}"
        );
    }
}
