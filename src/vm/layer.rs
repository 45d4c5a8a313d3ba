//! Extra files for one run, laid over the built image without rebuilding it: overlay trees
//! and kernel modules. The layer is a manifest of its own, rendered by the same writers as the
//! image: for an initramfs it is a second compressed cpio archive appended to a copy of the
//! first (the kernel unpacks them in order, later files replacing earlier ones).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::modules::GuestFile;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{Entry, ImagePath, Kind, Manifest};

/// The manifest of a run's extra files: each overlay tree (owned 0:0, modes normalised as
/// for the skeleton), then `modules` (0644, 0:0) under `/lib/modules/<version>/`.
pub(crate) fn manifest(
    overlays: &[PathBuf],
    modules: &[GuestFile],
    mtime: u64,
) -> Result<Manifest> {
    let mut layer = Manifest::new(mtime);
    for overlay in overlays {
        if overlay.is_dir() {
            crate::skeleton::add_tree(&mut layer, overlay, mtime)?;
        } else {
            return Err(Error::Other(format!(
                "the overlay `{}` is not a directory; tar archives are laid over a build by \
                 the configuration's `overlays`",
                overlay.display()
            )));
        }
    }
    for file in modules {
        let guest = file.guest.to_string_lossy();
        let path = ImagePath::parse(&guest)
            .ok_or_else(|| Error::Other(format!("`{guest}` is not a path in the image")))?;
        let size = std::fs::metadata(&file.host).with_path("stat", &file.host)?.len();
        let parent = path.parent().expect("a module path has a directory");
        let fail = |message: String| Error::Tree { path: file.host.clone(), message };
        crate::devtable::ensure_dirs(&mut layer, &parent, mtime).map_err(fail)?;
        let entry = Entry {
            kind: Kind::File { source: file.host.clone(), size },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime,
        };
        layer.insert(path, entry).map_err(fail)?;
    }
    Ok(layer)
}

/// Writes `out`: the initramfs `base` followed by `layer` as a second archive.
pub(crate) fn initramfs(base: &Path, layer: &Manifest, out: &Path) -> Result<()> {
    let extra = out.with_extension("layer.cpio.gz");
    crate::image::cpio::write(layer, &extra)?;
    let result = crate::image::write_atomically(out, |tmp| {
        let mut file = std::fs::File::create(tmp).with_path("create", tmp)?;
        for part in [base, extra.as_path()] {
            let bytes = std::fs::read(part).with_path("read", part)?;
            file.write_all(&bytes).with_path("write", tmp)?;
        }
        Ok(())
    });
    let _ = std::fs::remove_file(&extra);
    result
}

/// Writes the disk image `out`: the image `base` was built with (its `rootfs.tar` beside it is
/// the listing of its manifest) with `layer` laid over it.
pub(crate) fn disk(base: &Path, layer: &Manifest, out: &Path) -> Result<()> {
    let _ = (base, layer, out);
    Err(Error::Other(
        "overlays and modules are laid over an initramfs only so far; boot the initramfs".into(),
    ))
}
