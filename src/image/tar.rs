//! The tar writer: renders a manifest as an uncompressed GNU-format tar archive.
//!
//! Names are those `tar -C rootfs -cf rootfs.tar .` would write: the root is `./`, every
//! other path is `./` followed by the image path, and directories end in `/`
//! (`./bin/`, `./bin/busybox`). Extracting with `tar -xf rootfs.tar -C dir` therefore also
//! gives `dir` the mode, owner and mtime of the image root.
//!
//! Names and symlink targets are stored verbatim; those of 100 bytes or more go into GNU
//! long-name entries (`././@LongLink`), as GNU tar itself does. Only [`tar::Header`] is used
//! from the `tar` crate: its `Builder` normalises paths and link targets (dropping `./`
//! and doubled slashes), which would change both. Owners are numeric with empty user and
//! group names, and the mode field holds the permission bits only, like GNU tar's.
//!
//! Invariant: nothing of the host's `stat` reaches the archive; every header field comes
//! from the manifest entry.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use tar::{EntryType, Header};

use crate::error::{Error, IoContext, Result};
use crate::host::fs::write_atomically;
use crate::image::copy_file_content;
use crate::tree::manifest::{Entry, ImagePath, Kind, Manifest};

const BLOCK: usize = 512;

/// Largest device number the 8-byte octal device fields can hold.
const MAX_DEVICE_NUMBER: u32 = 0o7777777;

/// Writes `manifest` to `out` as an uncompressed tar archive, one entry per manifest path in
/// manifest order.
pub fn write(manifest: &Manifest, out: &Path) -> Result<()> {
    write_atomically(out, |tmp| {
        let file = File::create(tmp).with_path("create", tmp)?;
        let mut w = BufWriter::new(file);
        write_tar(manifest, &mut w, out)?;
        w.into_inner().map_err(|e| Error::io("write", out, e.into_error()))?;
        Ok(())
    })
}

/// Writes the archive to `w`; `out` names the destination in error messages.
fn write_tar(manifest: &Manifest, w: &mut impl Write, out: &Path) -> Result<()> {
    for (path, entry) in manifest.iter() {
        append(w, path, entry, out)?;
    }
    // The end of the archive is marked by two zero blocks.
    w.write_all(&[0; 2 * BLOCK]).with_path("write", out)
}

fn append(w: &mut impl Write, path: &ImagePath, entry: &Entry, out: &Path) -> Result<()> {
    if let Kind::Symlink(target) = &entry.kind {
        if target.contains('\0') {
            return Err(Error::Other(format!(
                "the target of symlink `{path}` contains a NUL byte, which tar cannot store"
            )));
        }
    }
    let (entry_type, size) = match &entry.kind {
        Kind::Dir => (EntryType::Directory, 0),
        Kind::File { size, .. } => (EntryType::Regular, *size),
        Kind::Bytes(bytes) => (EntryType::Regular, bytes.len() as u64),
        Kind::Symlink(_) => (EntryType::Symlink, 0),
        Kind::CharDevice { .. } => (EntryType::Char, 0),
        Kind::BlockDevice { .. } => (EntryType::Block, 0),
        Kind::Fifo => (EntryType::Fifo, 0),
    };
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_size(size);
    header.set_mode(entry.mode & 0o7777);
    header.set_uid(entry.uid.into());
    header.set_gid(entry.gid.into());
    header.set_mtime(entry.mtime);
    if let Some((major, minor)) = entry.kind.device_numbers() {
        if major > MAX_DEVICE_NUMBER || minor > MAX_DEVICE_NUMBER {
            return Err(Error::Other(format!(
                "`{path}` has device number {major}:{minor}, which does not fit a tar header \
                 (at most {MAX_DEVICE_NUMBER} each); Linux majors go up to 4095 and minors \
                 up to 1048575"
            )));
        }
        let gnu = header.as_gnu_mut().expect("a GNU header");
        gnu.set_device_major(major);
        gnu.set_device_minor(minor);
    }

    let name = match (path.is_root(), &entry.kind) {
        (true, _) => "./".to_string(),
        (false, Kind::Dir) => format!("./{}/", path.as_str()),
        (false, _) => format!("./{}", path.as_str()),
    };
    let fields = header.as_old_mut();
    put_name(w, &mut fields.name, name.as_bytes(), EntryType::GNULongName, out)?;
    if let Kind::Symlink(target) = &entry.kind {
        put_name(w, &mut fields.linkname, target.as_bytes(), EntryType::GNULongLink, out)?;
    }
    header.set_cksum();
    w.write_all(header.as_bytes()).with_path("write", out)?;

    match &entry.kind {
        Kind::File { source, size } => copy_file_content(source, *size, w, out)?,
        Kind::Bytes(bytes) => w.write_all(bytes).with_path("write", out)?,
        _ => {}
    }
    pad(w, size, out)
}

/// Stores `value` in the header field `field`. A value that does not fit with its
/// terminating NUL is first written whole as a GNU long-name entry of type `kind`, and the
/// field keeps only its start, as GNU tar does.
fn put_name(
    w: &mut impl Write,
    field: &mut [u8],
    value: &[u8],
    kind: EntryType,
    out: &Path,
) -> Result<()> {
    if value.len() >= field.len() {
        let mut data = value.to_vec();
        data.push(0);
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        w.write_all(header.as_bytes()).with_path("write", out)?;
        w.write_all(&data).with_path("write", out)?;
        pad(w, data.len() as u64, out)?;
    }
    let len = value.len().min(field.len());
    field[..len].copy_from_slice(&value[..len]);
    Ok(())
}

/// Pads content of `size` bytes to a whole block.
fn pad(w: &mut impl Write, size: u64, out: &Path) -> Result<()> {
    let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
    w.write_all(&[0; BLOCK][..padding]).with_path("write", out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::path::Path;

    use xshell::{cmd, Shell};

    use super::*;
    use crate::image::cpio::fixtures::{self, Expected};

    /// Reads an archive back with the `tar` crate, mapping each entry to what the manifest
    /// should say about it.
    pub(crate) fn read_back(archive: &[u8]) -> Vec<Expected> {
        let mut reader = tar::Archive::new(archive);
        let mut entries = Vec::new();
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let type_bits = match header.entry_type() {
                EntryType::Directory => 0o040000,
                EntryType::Regular => 0o100000,
                EntryType::Symlink => 0o120000,
                EntryType::Char => 0o020000,
                EntryType::Block => 0o060000,
                EntryType::Fifo => 0o010000,
                other => panic!("unexpected entry type {other:?}"),
            };
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let path = name.strip_prefix("./").unwrap();
            let path = path.strip_suffix('/').unwrap_or(path).to_string();
            assert_eq!(name.ends_with('/'), type_bits == 0o040000, "{name}");
            assert_eq!(header.username_bytes(), Some(&b""[..]));
            assert_eq!(header.groupname_bytes(), Some(&b""[..]));
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            if let Some(target) = entry.link_name_bytes() {
                data = target.into_owned();
            }
            let rdev = match type_bits {
                0o020000 | 0o060000 => (
                    header.device_major().unwrap().unwrap(),
                    header.device_minor().unwrap().unwrap(),
                ),
                _ => (0, 0),
            };
            entries.push(Expected {
                path,
                st_mode: type_bits | header.mode().unwrap(),
                uid: header.uid().unwrap().try_into().unwrap(),
                gid: header.gid().unwrap().try_into().unwrap(),
                mtime: header.mtime().unwrap(),
                data,
                rdev,
            });
        }
        entries
    }

    pub(crate) fn in_memory(manifest: &Manifest) -> Vec<u8> {
        let mut archive = Vec::new();
        write_tar(manifest, &mut archive, Path::new("test.tar")).unwrap();
        archive
    }

    #[test]
    fn every_kind_reads_back_with_the_tar_crate_and_gnu_tar() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = fixtures::every_kind(dir.path());
        let out = dir.path().join("rootfs.tar");
        write(&manifest, &out).unwrap();
        assert_eq!(read_back(&fs::read(&out).unwrap()), fixtures::expected(&manifest));

        let sh = Shell::new().unwrap();
        if cmd!(sh, "tar --version").quiet().ignore_stdout().run().is_err() {
            crate::testing::skip(
                "the `tar -tvf` check",
                "GNU tar is not installed (apt install tar)",
            );
            return;
        }
        let listing = cmd!(sh, "tar -tvf {out} --full-time").env("TZ", "UTC").read().unwrap();
        let date = "2023-11-14 22:13:20";
        let expected = [
            "drwxr-xr-x 0/0 0 DATE ./",
            "drwxr-xr-x 0/0 0 DATE ./bin/",
            "-rwxr-xr-x 0/0 20 DATE ./bin/hello",
            "-rwsr-xr-x 0/0 10 DATE ./bin/su",
            "drwxr-xr-x 0/0 0 DATE ./dev/",
            "crw------- 0/0 5,1 DATE ./dev/console",
            "prw------- 0/0 0 DATE ./dev/initctl",
            "crw-rw-rw- 0/0 1,3 DATE ./dev/null",
            "brw-rw---- 0/0 254,0 DATE ./dev/vda",
            "drwxr-xr-x 0/0 0 DATE ./etc/",
            "-rw-r--r-- 0/0 0 DATE ./etc/empty",
            "drwxr-xr-x 0/0 0 DATE ./home/",
            "drwxr-x--- 1000/100 0 2023-11-14 22:13:21 ./home/user/",
            "drwxr-xr-x 0/0 0 DATE ./sbin/",
            "lrwxrwxrwx 0/0 0 DATE ./sbin/init -> ../bin/hello",
            "drwxrwxrwt 0/0 0 DATE ./tmp/",
            "drwxr-xr-x 0/0 0 DATE ./usr/",
            "lrwxrwxrwx 0/0 0 DATE ./usr/far -> /usr/LONG",
            "-rw-r--r-- 0/0 5 DATE ./usr/LONG",
        ]
        .map(|line| line.replace("DATE", date).replace("LONG", &fixtures::long_name()));
        let listing: Vec<String> =
            listing.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(listing, expected);

        let long = format!("./usr/{}", fixtures::long_name());
        for (name, content) in [("./bin/hello", "hello from the host\n"), (long.as_str(), "long\n")]
        {
            let output = cmd!(sh, "tar -xOf {out} {name}").output().unwrap();
            assert_eq!(String::from_utf8(output.stdout).unwrap(), content);
        }
    }

    #[test]
    fn device_numbers_beyond_the_header_fields_are_errors() {
        let mut m = Manifest::new(0);
        let kind = Kind::CharDevice { major: 1 << 21, minor: 0 };
        let node = Entry { kind, mode: 0o600, uid: 0, gid: 0, mtime: 0 };
        m.insert(ImagePath::parse("dev").unwrap(), node).unwrap();
        let err = write_tar(&m, &mut Vec::new(), Path::new("x")).unwrap_err().to_string();
        assert!(err.contains("`/dev` has device number 2097152:0"), "{err}");
    }
}
