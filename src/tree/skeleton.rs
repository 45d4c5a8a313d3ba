//! Host trees → manifest entries: the BusyBox install tree and the skeleton are walked in sorted
//! order, with owners set to 0:0 and modes normalised (0755 for directories and executables,
//! 0644 otherwise), so neither the host's umask nor its users reach the image.

use std::fs;

use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::tree::layers::{Layer, LayerStack};
use crate::tree::manifest::Manifest;

/// Adds every entry below `root` to `manifest` (later trees override earlier ones file by
/// file). Sockets, devices, unreadable files, symlinks that escape the image root and a
/// directory where the manifest has a file (or the other way round) are errors naming the
/// host path.
pub fn add_tree(manifest: &mut Manifest, root: &Path, mtime: u64) -> Result<()> {
    let meta = fs::metadata(root).with_path("read", root)?;
    if !meta.is_dir() {
        return Err(Error::Tree { path: root.to_path_buf(), message: "is not a directory".into() });
    }
    let layer = Layer { name: format!("`{}`", root.display()), path: root.to_path_buf() };
    LayerStack::new(manifest, mtime).add(&layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use crate::tree::layers::link_stays_inside;
    use crate::tree::manifest::ImagePath;

    #[test]
    fn walks_sorted_with_normalised_modes_and_owners() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/init.d")).unwrap();
        fs::write(root.join("etc/init.d/rcS"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("etc/init.d/rcS"), fs::Permissions::from_mode(0o700))
            .unwrap();
        fs::write(root.join("etc/hostname"), "h\n").unwrap();
        fs::set_permissions(root.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("../proc/mounts", root.join("etc/mtab")).unwrap();
        let mut m = Manifest::new(5);
        add_tree(&mut m, root, 5).unwrap();
        let listing: Vec<String> =
            m.iter().map(|(p, e)| format!("{p} {:o} {}:{}", e.st_mode(), e.uid, e.gid)).collect();
        assert_eq!(
            listing,
            [
                "/ 40755 0:0",
                "/etc 40755 0:0",
                "/etc/hostname 100644 0:0",
                "/etc/init.d 40755 0:0",
                "/etc/init.d/rcS 100755 0:0",
                "/etc/mtab 120777 0:0",
            ]
        );
    }

    #[test]
    fn escaping_symlinks_and_sockets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        symlink("../../../etc/shadow", dir.path().join("etc/evil")).unwrap();
        let err = add_tree(&mut Manifest::new(0), dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("etc/evil") && err.contains("outside the image root"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let err = add_tree(&mut Manifest::new(0), dir.path(), 0).unwrap_err().to_string();
        assert!(err.contains("sock") && err.contains("is a socket"), "{err}");
    }

    #[test]
    fn link_confinement_is_lexical_from_the_links_directory() {
        let bin = ImagePath::parse("bin").unwrap();
        assert!(link_stays_inside(&bin, "busybox"));
        assert!(link_stays_inside(&bin, "../sbin/init"));
        assert!(link_stays_inside(&bin, "/etc/passwd"));
        assert!(!link_stays_inside(&bin, "../../x"));
        assert!(!link_stays_inside(&ImagePath::root(), "/../x"));
    }
}
