//! Extraction of source tarballs and module archives: `.tar.bz2` / `.tar.gz` / `.tar` in
//! process, refusing entries that would land outside the destination; `.tar.xz` through the
//! host's `tar` and `xz` ([`unpack_with`]).

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use xshell::{cmd, Shell};

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

/// Unpacks `tarball` into `dest`, which must not exist yet. The archive is unpacked into a
/// temporary sibling directory that is renamed to `dest` only when every entry succeeded, so an
/// interrupted extraction never looks finished.
pub fn unpack(tarball: &Path, dest: &Path) -> Result<()> {
    unpack_reader(open_archive(tarball)?, tarball, dest)
}

/// [`unpack`], with `.tar.xz` (`.txz`) too: that goes through the host's `tar` and `xz`,
/// which unpack a kernel several times faster than a Rust decoder would and need no new
/// dependency, run through `sh` and reported to `progress`.
pub fn unpack_with(sh: &Shell, tarball: &Path, dest: &Path, progress: &dyn Progress) -> Result<()> {
    let name = tarball.to_string_lossy();
    if !(name.ends_with(".xz") || name.ends_with(".txz")) {
        return unpack(tarball, dest);
    }
    // By absolute paths: the shell's directory may not be this process's.
    let tarball = std::path::absolute(tarball).with_path("resolve", tarball)?;
    let dest = std::path::absolute(dest).with_path("resolve", dest)?;
    into_place(&dest, |tmp| {
        let unpack =
            cmd!(sh, "tar --extract --xz --no-same-owner --file {tarball} --directory {tmp}");
        progress.command(&unpack.to_string());
        crate::host::exec::run_captured(unpack).map(drop).map_err(|e| {
            Error::Other(format!("{e}\nis `{}` an intact .tar.xz?", tarball.display()))
        })
    })
}

/// [`unpack`] for a tar stream already open (decompressed), read from `origin`, which errors
/// name.
pub fn unpack_reader(reader: impl Read, origin: &Path, dest: &Path) -> Result<()> {
    into_place(dest, |tmp| unpack_into(reader, origin, tmp))
}

/// Fills a new temporary directory beside `dest` with `fill`, then renames it to `dest`
/// (replacing what was there); on failure the temporary is removed and `dest` left alone.
fn into_place(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_path("create directory", parent)?;
    let tmp = crate::host::fs::temp_path(dest);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_path("remove", &tmp)?;
    }
    fs::create_dir(&tmp).with_path("create directory", &tmp)?;
    let result = fill(&tmp).and_then(|()| {
        if dest.exists() {
            fs::remove_dir_all(dest).with_path("remove", dest)?;
        }
        fs::rename(&tmp, dest).with_path("rename into", dest)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Opens a `.tar`, `.tar.gz` (`.tgz`) or `.tar.bz2` archive for reading, decompressing by
/// its name.
pub fn open_archive(tarball: &Path) -> Result<Box<dyn Read>> {
    let name = tarball.to_string_lossy();
    let compression = if name.ends_with(".bz2") || name.ends_with(".tbz2") {
        "bz2"
    } else if name.ends_with(".gz") || name.ends_with(".tgz") {
        "gz"
    } else if name.ends_with(".tar") {
        ""
    } else {
        return Err(Error::Other(format!(
            "cannot read `{}` as a tar archive: only .tar, .tar.gz (.tgz) and .tar.bz2 are \
             supported; recompress it, e.g. with `gzip`",
            tarball.display()
        )));
    };
    let file = std::io::BufReader::new(fs::File::open(tarball).with_path("open", tarball)?);
    Ok(match compression {
        "bz2" => Box::new(bzip2::read::BzDecoder::new(file)),
        "gz" => Box::new(flate2::read::GzDecoder::new(file)),
        _ => Box::new(file),
    })
}

/// The one top-level directory an unpacked source tarball holds (`busybox-1.37.0/`,
/// `linux-6.1/`); an error naming `tarball` if there is not exactly one.
pub fn single_top_dir(dir: &Path, tarball: &Path) -> Result<PathBuf> {
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(dir).with_path("read directory", dir)? {
        let entry = entry.with_path("read directory", dir)?;
        if entry.file_type().with_path("stat", entry.path())?.is_dir() {
            subdirs.push(entry.path());
        }
    }
    match <[PathBuf; 1]>::try_from(subdirs) {
        Ok([one]) => Ok(one),
        Err(_) => Err(Error::Tree {
            path: tarball.to_path_buf(),
            message: "expected the tarball to hold exactly one top-level directory".into(),
        }),
    }
}

fn unpack_into(reader: impl Read, tarball: &Path, dest: &Path) -> Result<()> {
    let bad = |message: String| Error::Tree { path: tarball.to_path_buf(), message };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    let entries = archive.entries().with_path("read", tarball)?;
    for entry in entries {
        let mut entry = entry.with_path("read", tarball)?;
        let path = entry.path().with_path("read", tarball)?.into_owned();
        if !is_confined(&path) {
            return Err(bad(format!(
                "archive entry `{}` points outside the destination; refusing to unpack",
                path.display()
            )));
        }
        // Global pax headers (e.g. git's commit id) carry no file.
        if entry.header().entry_type().is_pax_global_extensions() {
            continue;
        }
        if let Some(target) = entry.link_name().with_path("read", tarball)? {
            let link_parent = path.parent().unwrap_or(Path::new(""));
            let escapes = if entry.header().entry_type().is_hard_link() {
                !is_confined(&target)
            } else {
                target.is_absolute() || !is_confined(&link_parent.join(&target))
            };
            if escapes {
                return Err(bad(format!(
                    "archive link `{}` -> `{}` points outside the destination; refusing to unpack",
                    path.display(),
                    target.display()
                )));
            }
        }
        let unpacked = entry
            .unpack_in(dest)
            .map_err(|e| bad(format!("failed to unpack entry `{}`: {e}", path.display())))?;
        if !unpacked {
            return Err(bad(format!(
                "archive entry `{}` was refused by the unpacker",
                path.display()
            )));
        }
    }
    Ok(())
}

/// True when `path` is relative and never climbs above its starting point.
fn is_confined(path: &Path) -> bool {
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A tar archive holding one byte under `name`, forged byte by byte: the tar crate refuses to
/// write a name with `..`, which the tests of every unpacker need.
#[cfg(test)]
pub(crate) fn tar_named(name: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    [h.as_bytes(), &[b'x'; 512][..], &[0; 1024][..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(dir: &Path, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> PathBuf {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let path = dir.join("t.tar");
        fs::write(&path, b.into_inner().unwrap()).unwrap();
        path
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    #[test]
    fn unpacks_a_plain_archive() {
        let dir = tempfile::tempdir().unwrap();
        let t = tarball(dir.path(), |b| {
            b.append_data(&mut header(tar::EntryType::Regular, 2), "pkg/a.txt", &b"hi"[..])
                .unwrap();
            let mut h = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut h, "pkg/link", "a.txt").unwrap();
        });
        let dest = dir.path().join("out");
        unpack(&t, &dest).unwrap();
        assert_eq!(fs::read(dest.join("pkg/a.txt")).unwrap(), b"hi");
        assert_eq!(fs::read_link(dest.join("pkg/link")).unwrap(), Path::new("a.txt"));
    }

    #[test]
    fn refuses_entries_and_links_that_escape() {
        let dir = tempfile::tempdir().unwrap();
        let escaping_link = tarball(dir.path(), |b| {
            let mut h = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut h, "pkg/evil", "../../etc/passwd").unwrap();
        });
        let dest = dir.path().join("out");
        let err = unpack(&escaping_link, &dest).unwrap_err().to_string();
        assert!(err.contains("outside the destination"), "{err}");
        assert!(!dest.exists(), "nothing may be left under the final name");

        let escaping_name = dir.path().join("n.tar");
        fs::write(&escaping_name, tar_named(b"../escape")).unwrap();
        let err = unpack(&escaping_name, &dest).unwrap_err().to_string();
        assert!(err.contains("`../escape` points outside"), "{err}");
        assert!(!dir.path().join("escape").exists());
    }
}
