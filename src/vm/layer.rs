//! Extra files for one run, laid over the built image without rebuilding it: overlay trees
//! and kernel modules. The layer is a manifest of its own, rendered by the same writers as the
//! image: for an initramfs it is a second cpio archive appended to a copy of the first (the
//! kernel unpacks them in order, later files replacing earlier ones); for a disk,
//! the image's own listing (`rootfs.tar`) with the layer over it, written as a new ext4 boot
//! copy.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use xshell::Shell;

use super::modules::GuestFile;
use crate::error::{Error, IoContext, Result};
use crate::host::fs::{file_identity, sha256_bytes};
use crate::image::ext4;
use crate::tree::layers::{Layer, LayerStack};
use crate::tree::manifest::{Entry, ImagePath, Kind, Manifest};

/// The manifest of a run's extra files laid over `base` (an image's tar listing, or nothing):
/// each overlay (a tree owned 0:0 with modes normalised as for the skeleton, or a tar archive
/// keeping its owners), then `modules` (0644, 0:0) under `/lib/modules/<version>/`. A path that
/// is a directory in one layer and a file in another is an error naming both.
pub(crate) fn manifest(
    base: Option<&Path>,
    overlays: &[PathBuf],
    modules: &[GuestFile],
    mtime: u64,
) -> Result<Manifest> {
    let mut layer = Manifest::new(mtime);
    let mut stack = LayerStack::new(&mut layer, mtime);
    if let Some(tar) = base {
        stack.add(&Layer { name: format!("the image `{}`", tar.display()), path: tar.into() })?;
    }
    for overlay in overlays {
        stack.add(&Layer {
            name: format!("overlay `{}`", overlay.display()),
            path: overlay.clone(),
        })?;
    }
    for file in modules {
        add_file(&mut layer, &file.guest.to_string_lossy(), &file.host, 0o644, mtime)?;
    }
    Ok(layer)
}

/// Adds the host file `host` to `layer` at `guest` (owned 0:0, with `mode`), with the
/// directories above it.
pub(crate) fn add_file(
    layer: &mut Manifest,
    guest: &str,
    host: &Path,
    mode: u32,
    mtime: u64,
) -> Result<()> {
    let path = ImagePath::parse(guest)
        .ok_or_else(|| Error::Other(format!("`{guest}` is not a path in the image")))?;
    let size = std::fs::metadata(host).with_path("stat", host)?.len();
    let fail = |message: String| Error::Tree { path: host.to_path_buf(), message };
    if let Some(parent) = path.parent() {
        crate::tree::devtable::ensure_dirs(layer, &parent, mtime).map_err(fail)?;
    }
    let kind = Kind::File { source: host.to_path_buf(), size };
    layer.insert(path, Entry { kind, mode, uid: 0, gid: 0, mtime }).map_err(fail)
}

/// Writes `out`: the initramfs `base` followed by `layer` as a second archive. A gzip base is
/// booted inflated and the layer uncompressed: under emulation the guest spends tens of
/// milliseconds inflating on every boot, the host a few once (kept beside `out` while the
/// base is unchanged). A base in another format is copied as it is, the layer compressed.
/// An `out` written from the same base and layer, and unchanged since, is left as it is.
pub(crate) fn initramfs(base: &Path, layer: &Manifest, out: &Path) -> Result<()> {
    let inflated = inflated(base, &out.with_file_name("base.cpio"))?;
    let start = inflated.as_deref().unwrap_or(base);
    let tail = if inflated.is_some() {
        crate::image::cpio::write_newc(layer, Vec::new(), out)?
    } else {
        crate::image::cpio::write_gzip(layer, Vec::new(), out)?
    };
    // A payload run's layer is its init, the same for the same command: run again, it boots
    // the copy the last run wrote.
    let key_path = out.with_extension("cpio.key");
    let key = format!("{}\n{}\n", file_identity(start)?, sha256_bytes(&tail));
    if std::fs::read_to_string(&key_path).is_ok_and(|kept| {
        kept.strip_prefix(&key).is_some_and(|rest| file_identity(out).is_ok_and(|o| o == rest))
    }) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&key_path);
    crate::host::fs::write_atomically(out, |tmp| {
        std::fs::copy(start, tmp).with_path("copy to", tmp)?;
        let mut file = std::fs::OpenOptions::new().append(true).open(tmp).with_path("open", tmp)?;
        if inflated.is_some() {
            // The next archive's header must start on a 4-byte boundary.
            let len = file.metadata().with_path("stat", tmp)?.len();
            let padding = (len.next_multiple_of(4) - len) as usize;
            file.write_all(&[0; 3][..padding]).with_path("write", tmp)?;
        }
        file.write_all(&tail).with_path("write", tmp)
    })?;
    // Not kept is only slower next time.
    let _ = crate::host::fs::write_file(&key_path, format!("{key}{}", file_identity(out)?));
    Ok(())
}

/// `cache`: the archive inside the gzip `base`, inflated again only when the base changed
/// (its path, size or modification time, kept in `cache` + `.key`). `None` when the base is
/// not gzip, or holds anything after its gzip members (it is then booted as it is).
fn inflated(base: &Path, cache: &Path) -> Result<Option<PathBuf>> {
    let key = file_identity(base)?;
    let key_path = cache.with_extension("cpio.key");
    if cache.is_file() && std::fs::read_to_string(&key_path).is_ok_and(|k| k == key) {
        return Ok(Some(cache.to_path_buf()));
    }
    let mut magic = [0; 2];
    let file = std::fs::File::open(base).with_path("open", base)?;
    if std::io::Read::read_exact(&mut &file, &mut magic).is_err() || magic != [0x1f, 0x8b] {
        return Ok(None);
    }
    let bytes = std::fs::read(base).with_path("read", base)?;
    let mut archive = Vec::with_capacity(bytes.len() * 3);
    let mut gzip = flate2::read::MultiGzDecoder::new(bytes.as_slice());
    if std::io::Read::read_to_end(&mut gzip, &mut archive).is_err() {
        return Ok(None);
    }
    let _ = std::fs::remove_file(&key_path);
    crate::host::fs::write_file(cache, &archive)?;
    crate::host::fs::write_file(&key_path, key)?;
    Ok(Some(cache.to_path_buf()))
}

/// The tar listing busyroot writes beside its disk image (`rootfs.tar` beside `rootfs.ext4`):
/// the same manifest, so the boot copy can be written anew with a layer over it.
pub(crate) fn listing_of(image: &Path) -> Result<PathBuf> {
    let tar = image.with_file_name("rootfs.tar");
    if tar.is_file() {
        Ok(tar)
    } else {
        Err(Error::Other(format!(
            "cannot lay files over the disk image `{}`: its listing `{}` is missing (busyroot \
             writes it beside every image it builds); boot the initramfs instead",
            image.display(),
            tar.display()
        )))
    }
}

/// Writes the disk image `out` from `manifest` (the image's listing with the layer over it),
/// as large as the original `image` or as the content needs with room to spare.
pub(crate) fn disk(sh: &Shell, image: &Path, manifest: &Manifest, out: &Path) -> Result<()> {
    let original = std::fs::metadata(image).with_path("stat", image)?.len();
    let needed = ext4::needed_bytes(manifest);
    let size = original.max(needed + needed / 4).next_multiple_of(1 << 20);
    let opts = ext4::Ext4Options {
        size: ext4::ImageSize::Bytes(size),
        label: "busyroot-boot".into(),
        uuid: "b0070000-0000-4000-8000-000000000001".into(),
        hash_seed: "b0070000-0000-4000-8000-000000000002".into(),
        timestamp: manifest_time(manifest),
    };
    ext4::write(sh, manifest, out, &opts)
}

fn manifest_time(manifest: &Manifest) -> u64 {
    manifest.iter().map(|(_, e)| e.mtime).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::image::cpio::{self, tests::parse_newc, tests::uncompressed};

    fn one_file(path: &str, content: &[u8]) -> Manifest {
        let mut manifest = Manifest::new(1);
        let entry =
            Entry { kind: Kind::Bytes(content.to_vec()), mode: 0o644, uid: 0, gid: 0, mtime: 1 };
        manifest.insert(ImagePath::parse(path).unwrap(), entry).unwrap();
        manifest
    }

    #[test]
    fn a_gzip_base_is_booted_inflated_with_the_layer_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (base_path, out) = (dir.path().join("rootfs.cpio.gz"), dir.path().join("boot.cpio"));
        let layer = one_file("init", b"#!/bin/sh\n");
        let boot = |base: &Manifest| {
            cpio::write(base, &base_path).unwrap();
            initramfs(&base_path, &layer, &out).unwrap();
            let bytes = fs::read(&out).unwrap();
            let first = uncompressed(base);
            assert_eq!(bytes[..first.len()], first[..], "the base, inflated");
            assert_eq!(parse_newc(&bytes[first.len()..]), parse_newc(&uncompressed(&layer)));
        };
        boot(&one_file("a", b"first"));
        // A new base (a new build renames a new file into place) is inflated again.
        boot(&one_file("b", b"the second base"));

        // Any other base is booted as it is, with the layer compressed after it.
        fs::write(&base_path, b"not gzip").unwrap();
        initramfs(&base_path, &layer, &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"not gzip");
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[8..]), &mut inflated)
            .unwrap();
        assert_eq!(parse_newc(&inflated), parse_newc(&uncompressed(&layer)));
    }

    #[test]
    fn a_boot_copy_is_written_again_only_when_its_base_its_layer_or_itself_changed() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (base_path, out) = (dir.path().join("rootfs.cpio.gz"), dir.path().join("boot.cpio"));
        cpio::write(&one_file("a", b"base"), &base_path).unwrap();
        let written = || fs::metadata(&out).map(|m| (m.ino(), m.mtime_nsec())).unwrap();
        let layer_of = |command: &[u8]| one_file("init", command);
        let holds = |command: &[u8]| {
            let bytes = fs::read(&out).unwrap();
            let first = uncompressed(&one_file("a", b"base"));
            parse_newc(&bytes[first.len()..]) == parse_newc(&uncompressed(&layer_of(command)))
        };

        initramfs(&base_path, &layer_of(b"exec true"), &out).unwrap();
        let first = written();
        initramfs(&base_path, &layer_of(b"exec true"), &out).unwrap();
        assert_eq!(written(), first, "the same base and layer: the same file, not rewritten");

        initramfs(&base_path, &layer_of(b"exec false"), &out).unwrap();
        assert_ne!(written(), first, "a new layer is written");
        assert!(holds(b"exec false"));

        // Changed behind busyroot's back (here: cut short), it is written whole again.
        let len = fs::metadata(&out).unwrap().len();
        fs::OpenOptions::new().write(true).open(&out).unwrap().set_len(len - 4).unwrap();
        initramfs(&base_path, &layer_of(b"exec false"), &out).unwrap();
        assert!(holds(b"exec false"));
    }
}
