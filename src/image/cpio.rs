//! The initramfs writer: renders a manifest as a gzip-compressed newc (`070701`) cpio archive.
//!
//! The kernel unpacks this archive into its initial rootfs when it is passed as an initrd and
//! booted with `rdinit=/sbin/init`. Names have no leading `/` (`bin/busybox`) and the root
//! directory is written as `.`, which is what `find . | cpio -o -H newc` produces, so
//! `cpio -t` lists the same names for our archive as for a hand-made one.
//!
//! Invariant: nothing of the host's `stat` reaches the archive. Inode numbers are assigned in
//! manifest order starting at 1, directories have 2 links and everything else 1, and the
//! `dev` fields are 0; mode, owner and mtime come from the manifest entry.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::{Compression, GzBuilder};

use crate::error::{Error, IoContext, Result};
use crate::host::fs::write_atomically;
use crate::image::copy_file_content;
use crate::tree::manifest::{Entry, ImagePath, Kind, Manifest};

/// gzip level for the initramfs: zlib's default. On a 2 MB static BusyBox, level 9 output is
/// only 0.2% smaller but takes 8% longer in a release build and 70% longer in a debug build;
/// the initramfs is rebuilt on every edit-and-boot cycle, so time matters more than 2 KB.
const GZIP_LEVEL: u32 = 6;

/// Writes `manifest` to `out` as a gzip-compressed newc cpio archive.
///
/// The gzip header carries no file name and mtime 0, so the same manifest always gives the
/// same bytes.
pub fn write(manifest: &Manifest, out: &Path) -> Result<()> {
    write_atomically(out, |tmp| {
        let file = File::create(tmp).with_path("create", tmp)?;
        let buffered = write_gzip(manifest, BufWriter::new(file), out)?;
        buffered.into_inner().map_err(|e| Error::io("write", out, e.into_error()))?;
        Ok(())
    })
}

/// Writes the compressed archive to `w` and returns `w`; `out` names the destination in
/// error messages.
pub(crate) fn write_gzip<W: Write>(manifest: &Manifest, w: W, out: &Path) -> Result<W> {
    let gz = GzBuilder::new().mtime(0).write(w, Compression::new(GZIP_LEVEL));
    write_newc(manifest, gz, out)?.finish().with_path("write", out)
}

/// Writes the uncompressed archive to `w` and returns `w`; `out` names the destination in
/// error messages.
pub(crate) fn write_newc<W: Write>(manifest: &Manifest, w: W, out: &Path) -> Result<W> {
    let mut archive = Newc { w, written: 0, out };
    for (ino, (path, entry)) in (1..).zip(manifest.iter()) {
        archive.append(ino, path, entry)?;
    }
    archive.finish()?;
    Ok(archive.w)
}

/// The header fields that vary between entries. `devmajor`, `devminor` and `check` are
/// always 0.
#[derive(Default)]
struct Header<'a> {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev: (u32, u32),
    name: &'a str,
}

/// A newc archive being written, with the byte count its padding rules depend on.
struct Newc<'a, W> {
    w: W,
    written: u64,
    out: &'a Path,
}

impl<W: Write> Newc<'_, W> {
    fn append(&mut self, ino: u32, path: &ImagePath, entry: &Entry) -> Result<()> {
        let size = match &entry.kind {
            Kind::File { size, .. } => *size,
            Kind::Bytes(bytes) => bytes.len() as u64,
            Kind::Symlink(target) => target.len() as u64,
            _ => 0,
        };
        let filesize = u32::try_from(size).map_err(|_| {
            Error::Other(format!(
                "`{path}` is {size} bytes, more than a newc cpio archive can hold (4 GiB - 1); \
                 leave it out of the initramfs or boot from the ext4 image instead"
            ))
        })?;
        let mtime = u32::try_from(entry.mtime).map_err(|_| {
            Error::Other(format!(
                "`{path}` has mtime {}, which is after 2106 and does not fit a newc cpio \
                 archive; use an earlier timestamp",
                entry.mtime
            ))
        })?;
        self.header(&Header {
            ino,
            mode: entry.st_mode(),
            uid: entry.uid,
            gid: entry.gid,
            nlink: if entry.kind == Kind::Dir { 2 } else { 1 },
            mtime,
            filesize,
            rdev: entry.kind.device_numbers().unwrap_or((0, 0)),
            name: if path.is_root() { "." } else { path.as_str() },
        })?;
        match &entry.kind {
            Kind::File { source, size } => {
                copy_file_content(source, *size, &mut self.w, self.out)?;
                self.written += size;
            }
            Kind::Bytes(bytes) => self.put(bytes)?,
            Kind::Symlink(target) => self.put(target.as_bytes())?,
            _ => {}
        }
        self.pad_to(4)
    }

    /// Writes the `TRAILER!!!` entry that ends the archive, then pads to a 512-byte block as
    /// GNU cpio and the kernel's `gen_init_cpio` do.
    fn finish(&mut self) -> Result<()> {
        self.header(&Header { nlink: 1, name: "TRAILER!!!", ..Header::default() })?;
        self.pad_to(512)
    }

    /// Writes the 110-byte header and the NUL-terminated name, padded so the content starts
    /// on a 4-byte boundary.
    fn header(&mut self, h: &Header) -> Result<()> {
        let namesize = h.name.len() as u32 + 1;
        let (rdevmajor, rdevminor) = h.rdev;
        let fields = [
            h.ino, h.mode, h.uid, h.gid, h.nlink, h.mtime, h.filesize, 0, 0, rdevmajor, rdevminor,
            namesize, 0,
        ];
        let header: String = fields.iter().map(|field| format!("{field:08x}")).collect();
        self.put(b"070701")?;
        self.put(header.as_bytes())?;
        self.put(h.name.as_bytes())?;
        self.put(&[0])?;
        self.pad_to(4)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).with_path("write", self.out)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad_to(&mut self, align: u64) -> Result<()> {
        let padding = (align - self.written % align) % align;
        self.put(&[0; 512][..padding as usize])
    }
}

/// Manifests and host files shared by the writers' tests (and `image::tests`).
#[cfg(test)]
pub(super) mod fixtures {
    use std::fs;
    use std::path::Path;

    use proptest::prelude::*;

    use crate::tree::manifest::{Entry, ImagePath, Kind, Manifest};

    /// 2023-11-14 22:13:20 UTC.
    pub const MTIME: u64 = 1_700_000_000;

    /// A path component of more than 100 bytes, too long for a plain tar header.
    pub fn long_name() -> String {
        "long-".repeat(22)
    }

    /// One entry of every kind, with special modes, a non-root owner, a long path and a long
    /// symlink target. The host file behind `bin/hello` has a host mode and mtime different
    /// from its entry, so a leak would show.
    pub fn every_kind(dir: &Path) -> Manifest {
        let source = dir.join("hello-source");
        fs::write(&source, b"hello from the host\n").unwrap();
        set_host_metadata(&source, 0o600, 1_000_000);

        let mut m = Manifest::new(MTIME);
        let e = |kind: Kind, mode: u32| Entry { kind, mode, uid: 0, gid: 0, mtime: MTIME };
        let mut add = |path: &str, entry: Entry| {
            m.insert(ImagePath::parse(path).unwrap(), entry).unwrap();
        };
        add("bin", e(Kind::Dir, 0o755));
        add("bin/hello", e(Kind::File { source, size: 20 }, 0o755));
        add("bin/su", e(Kind::Bytes(b"#!/bin/sh\n".to_vec()), 0o4755));
        add("dev", e(Kind::Dir, 0o755));
        add("dev/console", e(Kind::CharDevice { major: 5, minor: 1 }, 0o600));
        add("dev/null", e(Kind::CharDevice { major: 1, minor: 3 }, 0o666));
        add("dev/vda", e(Kind::BlockDevice { major: 254, minor: 0 }, 0o660));
        add("dev/initctl", e(Kind::Fifo, 0o600));
        add("etc", e(Kind::Dir, 0o755));
        add("etc/empty", e(Kind::Bytes(Vec::new()), 0o644));
        add("home", e(Kind::Dir, 0o755));
        add(
            "home/user",
            Entry { kind: Kind::Dir, mode: 0o750, uid: 1000, gid: 100, mtime: MTIME + 1 },
        );
        add("sbin", e(Kind::Dir, 0o755));
        add("sbin/init", e(Kind::Symlink("../bin/hello".into()), 0o777));
        add("tmp", e(Kind::Dir, 0o1777));
        add("usr", e(Kind::Dir, 0o755));
        add(&format!("usr/{}", long_name()), e(Kind::Bytes(b"long\n".to_vec()), 0o644));
        add("usr/far", e(Kind::Symlink(format!("/usr/{}", long_name())), 0o777));
        m
    }

    pub fn set_host_metadata(path: &Path, mode: u32, mtime: u64) {
        use std::os::unix::fs::PermissionsExt;
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        fs::File::options().write(true).open(path).unwrap().set_modified(time).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// What an archive must hold for one manifest entry, in a form both archive readers
    /// can produce.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Expected {
        /// The image path (`""` for the root).
        pub path: String,
        pub st_mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub mtime: u64,
        /// File content or symlink target.
        pub data: Vec<u8>,
        pub rdev: (u32, u32),
    }

    pub fn expected(manifest: &Manifest) -> Vec<Expected> {
        manifest
            .iter()
            .map(|(path, entry)| Expected {
                path: path.as_str().to_string(),
                st_mode: entry.st_mode(),
                uid: entry.uid,
                gid: entry.gid,
                mtime: entry.mtime,
                data: match &entry.kind {
                    Kind::File { source, .. } => fs::read(source).unwrap(),
                    Kind::Bytes(bytes) => bytes.clone(),
                    Kind::Symlink(target) => target.as_bytes().to_vec(),
                    _ => Vec::new(),
                },
                rdev: entry.kind.device_numbers().unwrap_or((0, 0)),
            })
            .collect()
    }

    /// What a generated entry holds; `HostFile` content is written to a host file when the
    /// manifest is built.
    #[derive(Debug, Clone)]
    pub enum Content {
        Dir,
        HostFile(Vec<u8>),
        Bytes(Vec<u8>),
        Symlink(String),
        Char(u32, u32),
        Block(u32, u32),
        Fifo,
    }

    /// One generated entry: its parent is `parent` modulo the number of directories made so
    /// far, which gives random nesting while keeping every parent a directory.
    #[derive(Debug, Clone)]
    pub struct Node {
        parent: usize,
        name: String,
        content: Content,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u32,
    }

    fn content() -> impl Strategy<Value = Content> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..1500);
        // Linux device numbers: 12-bit major, 20-bit minor.
        let dev = || (0u32..4096, 0u32..(1 << 20));
        prop_oneof![
            3 => Just(Content::Dir),
            2 => bytes().prop_map(Content::HostFile),
            2 => bytes().prop_map(Content::Bytes),
            1 => "[^\0]{1,150}".prop_map(Content::Symlink),
            1 => dev().prop_map(|(a, b)| Content::Char(a, b)),
            1 => dev().prop_map(|(a, b)| Content::Block(a, b)),
            1 => Just(Content::Fifo),
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        let name = "[^/\0]{1,40}".prop_filter("not . or ..", |n| n != "." && n != "..");
        (any::<usize>(), name, content(), 0u32..0o10000, any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(parent, name, content, mode, uid, gid, mtime)| Node {
                parent,
                name,
                content,
                mode,
                uid,
                gid,
                mtime,
            })
    }

    pub fn nodes() -> impl Strategy<Value = Vec<Node>> {
        prop::collection::vec(node(), 0..40)
    }

    /// Builds the manifest for `nodes`, writing host file content below `dir`.
    pub fn build(nodes: &[Node], dir: &Path) -> Manifest {
        let mut m = Manifest::new(0);
        let mut dirs = vec![ImagePath::root()];
        for (i, node) in nodes.iter().enumerate() {
            let path = dirs[node.parent % dirs.len()].join(&node.name);
            let kind = match &node.content {
                Content::Dir => Kind::Dir,
                Content::HostFile(bytes) => {
                    let source = dir.join(i.to_string());
                    fs::write(&source, bytes).unwrap();
                    Kind::File { source, size: bytes.len() as u64 }
                }
                Content::Bytes(bytes) => Kind::Bytes(bytes.clone()),
                Content::Symlink(target) => Kind::Symlink(target.clone()),
                Content::Char(major, minor) => Kind::CharDevice { major: *major, minor: *minor },
                Content::Block(major, minor) => Kind::BlockDevice { major: *major, minor: *minor },
                Content::Fifo => Kind::Fifo,
            };
            let is_dir = kind == Kind::Dir;
            let entry = Entry {
                kind,
                mode: node.mode,
                uid: node.uid,
                gid: node.gid,
                mtime: node.mtime.into(),
            };
            // A repeated name may try to turn a directory into a file; skipping it keeps
            // the manifest valid.
            if m.insert(path.clone(), entry).is_ok() && is_dir && !dirs.contains(&path) {
                dirs.push(path);
            }
        }
        m
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::io::Read;
    use std::path::Path;

    use xshell::{cmd, Shell};

    use super::fixtures::{self, Expected};
    use super::*;

    pub(crate) fn uncompressed(manifest: &Manifest) -> Vec<u8> {
        write_newc(manifest, Vec::new(), Path::new("test.cpio")).unwrap()
    }

    fn gunzip(path: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    }

    /// A reader for the newc format written independently of the writer, checking the
    /// fields `Expected` does not cover as it goes.
    pub(crate) fn parse_newc(mut archive: &[u8]) -> Vec<Expected> {
        let total = archive.len();
        let hex = |field: &[u8]| u32::from_str_radix(std::str::from_utf8(field).unwrap(), 16);
        let mut entries = Vec::new();
        let mut inodes = std::collections::HashSet::new();
        loop {
            let offset = total - archive.len();
            assert_eq!(&archive[..6], b"070701", "magic at offset {offset}");
            let f: Vec<u32> = archive[6..110].chunks(8).map(|field| hex(field).unwrap()).collect();
            let (ino, mode, uid, gid, nlink, mtime, filesize) =
                (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
            let (rdev, namesize, check) = ((f[9], f[10]), f[11] as usize, f[12]);
            assert_eq!((f[7], f[8], check), (0, 0, 0), "dev and check at offset {offset}");
            let name = &archive[110..110 + namesize];
            assert_eq!(name.last(), Some(&0), "name must be NUL-terminated");
            let name = std::str::from_utf8(&name[..namesize - 1]).unwrap().to_string();
            let data_start = (110 + namesize).next_multiple_of(4);
            assert!(archive[110 + namesize..data_start].iter().all(|&b| b == 0));
            let data_end = data_start + filesize as usize;
            let data = archive[data_start..data_end].to_vec();
            archive = &archive[data_end.next_multiple_of(4)..];
            if name == "TRAILER!!!" {
                assert_eq!(total % 512, 0, "archive padded to 512 bytes");
                assert!(archive.iter().all(|&b| b == 0), "only padding after the trailer");
                return entries;
            }
            assert!(inodes.insert(ino), "inode {ino} used twice");
            assert_eq!(nlink, if mode & 0o170000 == 0o040000 { 2 } else { 1 });
            entries.push(Expected {
                path: if name == "." { String::new() } else { name },
                st_mode: mode,
                uid,
                gid,
                mtime: mtime.into(),
                data,
                rdev,
            });
        }
    }

    fn have_cpio(sh: &Shell) -> bool {
        let found = cmd!(sh, "cpio --version").quiet().ignore_stdout().ignore_stderr().run();
        if found.is_err() {
            crate::testing::skip("the `cpio` checks", "`cpio` is not installed (apt install cpio)");
        }
        found.is_ok()
    }

    #[test]
    fn every_kind_reads_back_with_gnu_cpio() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = fixtures::every_kind(dir.path());
        let out = dir.path().join("rootfs.cpio.gz");
        write(&manifest, &out).unwrap();
        let archive = gunzip(&out);
        assert_eq!(parse_newc(&archive), fixtures::expected(&manifest));

        let sh = Shell::new().unwrap();
        if !have_cpio(&sh) {
            return;
        }
        let names = cmd!(sh, "cpio -i -t --quiet").stdin(&archive).read().unwrap();
        let expected_names: Vec<String> = manifest
            .iter()
            .map(|(p, _)| if p.is_root() { ".".into() } else { p.as_str().into() })
            .collect();
        assert_eq!(names.lines().collect::<Vec<_>>(), expected_names);

        let long = format!("usr/{}", fixtures::long_name());
        let listing =
            cmd!(sh, "cpio -i -t -v --quiet --numeric-uid-gid").stdin(&archive).read().unwrap();
        // mode, links, uid, gid, size or "major, minor", name (" -> target" for symlinks)
        let expected_listing = [
            "drwxr-xr-x 2 0 0 0 .",
            "drwxr-xr-x 2 0 0 0 bin",
            "-rwxr-xr-x 1 0 0 20 bin/hello",
            "-rwsr-xr-x 1 0 0 10 bin/su",
            "drwxr-xr-x 2 0 0 0 dev",
            "crw------- 1 0 0 5, 1 dev/console",
            "prw------- 1 0 0 0 dev/initctl",
            "crw-rw-rw- 1 0 0 1, 3 dev/null",
            "brw-rw---- 1 0 0 254, 0 dev/vda",
            "drwxr-xr-x 2 0 0 0 etc",
            "-rw-r--r-- 1 0 0 0 etc/empty",
            "drwxr-xr-x 2 0 0 0 home",
            "drwxr-x--- 2 1000 100 0 home/user",
            "drwxr-xr-x 2 0 0 0 sbin",
            "lrwxrwxrwx 1 0 0 12 sbin/init -> ../bin/hello",
            "drwxrwxrwt 2 0 0 0 tmp",
            "drwxr-xr-x 2 0 0 0 usr",
            "lrwxrwxrwx 1 0 0 115 usr/far -> /usr/LONG",
            "-rw-r--r-- 1 0 0 5 usr/LONG",
        ]
        .map(|line| line.replace("LONG", &fixtures::long_name()));
        let listing: Vec<String> = listing
            .lines()
            .map(|line| {
                // Drop the three date columns, whose format depends on the date's age.
                let words: Vec<&str> = line.split_whitespace().collect();
                let date = if words[0].starts_with(['c', 'b']) { 6 } else { 5 };
                [&words[..date], &words[date + 3..]].concat().join(" ")
            })
            .collect();
        assert_eq!(listing, expected_listing);

        for (name, content) in [("bin/hello", "hello from the host\n"), (long.as_str(), "long\n")] {
            let output =
                cmd!(sh, "cpio -i --quiet --to-stdout {name}").stdin(&archive).output().unwrap();
            assert_eq!(String::from_utf8(output.stdout).unwrap(), content);
        }
    }

    #[test]
    fn the_gzip_header_holds_no_name_and_no_time() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rootfs.cpio.gz");
        write(&fixtures::every_kind(dir.path()), &out).unwrap();
        // No FNAME flag, mtime 0.
        assert_eq!(fs::read(&out).unwrap()[3..8], [0, 0, 0, 0, 0]);
    }

    #[test]
    fn sizes_and_times_beyond_newc_limits_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("huge");
        // Sparse, so this costs no disk space; the writer must refuse before reading it.
        fs::File::create(&source).unwrap().set_len(1 << 32).unwrap();
        let mut m = Manifest::new(0);
        let huge = Entry {
            kind: Kind::File { source, size: 1 << 32 },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        m.insert(ImagePath::parse("huge").unwrap(), huge).unwrap();
        let err = write_newc(&m, Vec::new(), Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("`/huge` is 4294967296 bytes"), "{err}");

        let mut m = Manifest::new(1 << 32);
        let err = write_newc(&m, Vec::new(), Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("`/` has mtime 4294967296"), "{err}");
        m.get_mut(&ImagePath::root()).unwrap().mtime = u32::MAX.into();
        write_newc(&m, Vec::new(), Path::new("x")).unwrap();
    }
}
