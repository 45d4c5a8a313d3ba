//! Host trees → manifest entries: the BusyBox install tree and the skeleton are walked in sorted
//! order, with owners set to 0:0 and modes normalised (0755 for directories and executables,
//! 0644 otherwise), so neither the host's umask nor its users reach the image.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::tree::layers::{Layer, LayerStack};
use crate::tree::manifest::{Entry, ImagePath, Kind, Manifest};

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

/// Adds the tree below `host_dir` at `dir` to the current layer of `stack`.
pub(crate) fn walk(stack: &mut LayerStack, host_dir: &Path, dir: &ImagePath) -> Result<()> {
    let mtime = stack.mtime();
    let mut names = Vec::new();
    for entry in fs::read_dir(host_dir).with_path("read directory", host_dir)? {
        names.push(entry.with_path("read directory", host_dir)?.file_name());
    }
    names.sort();
    for name in names {
        let host = host_dir.join(&name);
        let tree_err = |message: String| Error::Tree { path: host.clone(), message };
        let name = name.to_str().ok_or_else(|| tree_err("the name is not valid UTF-8".into()))?;
        let path = dir.join(name);
        let meta = fs::symlink_metadata(&host).with_path("stat", &host)?;
        let ft = meta.file_type();
        let executable = meta.permissions().mode() & 0o111 != 0;
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            // Open now, so an unreadable file fails here rather than half-way through an image.
            fs::File::open(&host).map_err(|e| tree_err(format!("cannot be read: {e}")))?;
            Kind::File { source: host.clone(), size: meta.len() }
        } else if ft.is_symlink() {
            let target = fs::read_link(&host).with_path("read link", &host)?;
            let target = target
                .to_str()
                .ok_or_else(|| tree_err("the link target is not valid UTF-8".into()))?
                .to_string();
            if !link_stays_inside(dir, &target) {
                return Err(tree_err(format!(
                    "symlink to `{target}` in {} points outside the image root; make it \
                     relative to a path inside the image or absolute",
                    stack.current()
                )));
            }
            Kind::Symlink(target)
        } else {
            let what = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a fifo"
            } else {
                "a device node"
            };
            return Err(tree_err(format!(
                "is {what}, which cannot be copied into an image; remove it and list device \
                 nodes and fifos in the device table instead"
            )));
        };
        let mode = match &kind {
            Kind::Symlink(_) => 0o777,
            Kind::Dir => 0o755,
            _ if executable => 0o755,
            _ => 0o644,
        };
        let is_dir = kind == Kind::Dir;
        // A directory that already exists keeps its mode and owner.
        stack.put(path.clone(), Entry { kind, mode, uid: 0, gid: 0, mtime }, &host, false)?;
        if is_dir {
            walk(stack, &host, &path)?;
        }
    }
    Ok(())
}

/// True when a symlink in directory `dir` with `target` resolves (lexically) inside the image.
/// Absolute targets are resolved from the image root, as the guest will see them.
pub(crate) fn link_stays_inside(dir: &ImagePath, target: &str) -> bool {
    let mut depth: usize =
        if target.starts_with('/') || dir.is_root() { 0 } else { dir.as_str().split('/').count() };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => return false,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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
