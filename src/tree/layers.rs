//! Layers: host trees and tar archives merged in order into one manifest, a later layer
//! winning file by file, as Buildroot merges `BR2_ROOTFS_OVERLAY` trees over its skeleton.
//!
//! Invariant: a path never changes between directory and non-directory across layers; such a
//! conflict is an error naming both layers, as is a symlink whose target leaves the image root.
//!
//! Owners and modes: a tree's entries are owned 0:0 with normalised modes (0755 for
//! directories and executables, 0644 otherwise, see [`crate::tree::skeleton`]); a tar archive's
//! entries keep the owner, group and mode the archive records, so an archive made with
//! `tar --owner=0 --group=0` gives root-owned files and one made as a user keeps that user's
//! ids. Every entry gets the build's timestamp, never the archive's, so images stay
//! reproducible. The archive's entry for the image root itself (`./`) is ignored: the root
//! stays 0755 and 0:0.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::tree::manifest::{Entry, ImagePath, Kind, Manifest};

/// One layer: a name for messages and where it is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// How messages name it, e.g. "skeleton `rootfs-skel`" or "overlay `extra.tar`".
    pub name: String,
    /// A directory (a tree) or a `.tar`, `.tar.gz`, `.tgz` or `.tar.bz2` file.
    pub path: PathBuf,
}

/// Merges layers into a manifest, remembering which layer put each path there.
#[derive(Debug)]
pub struct LayerStack<'m> {
    manifest: &'m mut Manifest,
    mtime: u64,
    names: Vec<String>,
    from: BTreeMap<ImagePath, usize>,
}

impl<'m> LayerStack<'m> {
    /// Stacks layers onto `manifest`, timestamping every entry with `mtime`.
    pub fn new(manifest: &'m mut Manifest, mtime: u64) -> LayerStack<'m> {
        LayerStack { manifest, mtime, names: Vec::new(), from: BTreeMap::new() }
    }

    /// Adds a layer on top of those before it: a directory as a tree, a file as a tar archive.
    pub fn add(&mut self, layer: &Layer) -> Result<()> {
        let meta = std::fs::metadata(&layer.path).with_path("read", &layer.path)?;
        self.names.push(layer.name.clone());
        if meta.is_dir() {
            walk(self, &layer.path, &ImagePath::root())
        } else {
            self.add_tar(&layer.path)
        }
    }

    /// The timestamp every entry gets.
    pub(crate) fn mtime(&self) -> u64 {
        self.mtime
    }

    /// Puts `entry` at `path` for the current layer, creating missing parent directories
    /// (0755, 0:0). `host` names the file or archive in an error. A directory that is already
    /// there keeps its mode and owner unless `replace_dir`.
    pub(crate) fn put(
        &mut self,
        path: ImagePath,
        entry: Entry,
        host: &Path,
        replace_dir: bool,
    ) -> Result<()> {
        let layer = self.names.len().saturating_sub(1);
        let Some(parent) = path.parent() else {
            return Ok(()); // the image root stays as the manifest made it
        };
        // The nearest existing ancestor must be a directory; everything below it is created.
        let mut missing = Vec::new();
        let mut cur = Some(parent);
        while let Some(p) = cur {
            match self.manifest.get(&p) {
                Some(e) if e.kind == Kind::Dir => break,
                Some(_) => return Err(self.conflict(&p, host, "a directory", "not a directory")),
                None => {
                    cur = p.parent();
                    missing.push(p);
                }
            }
        }
        for dir in missing.into_iter().rev() {
            let e = Entry { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: self.mtime };
            self.insert(dir, e, layer, host)?;
        }
        match self.manifest.get(&path) {
            Some(old) if old.kind == Kind::Dir && entry.kind == Kind::Dir => {
                if replace_dir {
                    self.insert(path, entry, layer, host)?;
                }
                Ok(())
            }
            Some(old) if (old.kind == Kind::Dir) != (entry.kind == Kind::Dir) => {
                let (here, there) = if entry.kind == Kind::Dir {
                    ("a directory", "not a directory")
                } else {
                    ("not a directory", "a directory")
                };
                Err(self.conflict(&path, host, here, there))
            }
            _ => self.insert(path, entry, layer, host),
        }
    }

    fn insert(&mut self, path: ImagePath, entry: Entry, layer: usize, host: &Path) -> Result<()> {
        self.manifest
            .insert(path.clone(), entry)
            .map_err(|message| Error::Tree { path: host.to_path_buf(), message })?;
        self.from.insert(path, layer);
        Ok(())
    }

    /// `path` is `here` in the current layer but `there` in the layer that put it first.
    fn conflict(&self, path: &ImagePath, host: &Path, here: &str, there: &str) -> Error {
        let current = self.current();
        let earlier = self.from.get(path).map_or("the image", |&i| self.names[i].as_str());
        Error::Tree {
            path: host.to_path_buf(),
            message: format!(
                "`{path}` is {here} in {current} but {there} in {earlier}; a layer cannot turn \
                 a directory into a file, symlink or device or back, so rename or remove one \
                 of the two"
            ),
        }
    }

    /// The name of the current layer.
    pub(crate) fn current(&self) -> &str {
        self.names.last().map_or("this layer", String::as_str)
    }

    fn add_tar(&mut self, tarball: &Path) -> Result<()> {
        let bad = |message: String| Error::Tree { path: tarball.to_path_buf(), message };
        let mut archive = tar::Archive::new(crate::host::extract::open_archive(tarball)?);
        for entry in archive.entries().with_path("read", tarball)? {
            let mut entry = entry.with_path("read", tarball)?;
            let header = entry.header().clone();
            let kind = header.entry_type();
            if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            let raw = entry.path().with_path("read", tarball)?.into_owned();
            let name = raw.to_str().ok_or_else(|| {
                bad(format!("entry `{}`: the name is not valid UTF-8", raw.display()))
            })?;
            let path = ImagePath::parse(name).ok_or_else(|| {
                bad(format!(
                    "entry `{name}` points outside the image root; in {} names must stay below \
                     the archive's top",
                    self.current()
                ))
            })?;
            let mode = header.mode().with_path("read", tarball)? & 0o7777;
            let uid = header.uid().with_path("read", tarball)?;
            let gid = header.gid().with_path("read", tarball)?;
            let id = |n: u64, what: &str| {
                u32::try_from(n)
                    .map_err(|_| bad(format!("entry `{name}`: {what} {n} is too large")))
            };
            let (uid, gid) = (id(uid, "uid")?, id(gid, "gid")?);
            let device = || -> Result<(u32, u32)> {
                let major = header.device_major().with_path("read", tarball)?.unwrap_or(0);
                let minor = header.device_minor().with_path("read", tarball)?.unwrap_or(0);
                Ok((major, minor))
            };
            let kind = match kind {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).with_path("read", tarball)?;
                    Kind::Bytes(bytes)
                }
                tar::EntryType::Symlink => {
                    let target = link_target(&entry, tarball, name)?;
                    let dir = path.parent().unwrap_or_else(ImagePath::root);
                    if !link_stays_inside(&dir, &target) {
                        return Err(bad(format!(
                            "entry `{name}`: symlink to `{target}` in {} points outside the \
                             image root; make it relative to a path inside the image or absolute",
                            self.current()
                        )));
                    }
                    Kind::Symlink(target)
                }
                tar::EntryType::Link => {
                    let target = link_target(&entry, tarball, name)?;
                    let linked = ImagePath::parse(&target).and_then(|t| self.manifest.get(&t));
                    match linked {
                        Some(e @ Entry { kind: Kind::File { .. } | Kind::Bytes(_), .. }) => {
                            e.kind.clone()
                        }
                        _ => {
                            return Err(bad(format!(
                                "entry `{name}` is a hard link to `{target}`, which is not a \
                                 regular file earlier in the archive"
                            )))
                        }
                    }
                }
                tar::EntryType::Char => {
                    let (major, minor) = device()?;
                    Kind::CharDevice { major, minor }
                }
                tar::EntryType::Block => {
                    let (major, minor) = device()?;
                    Kind::BlockDevice { major, minor }
                }
                tar::EntryType::Fifo => Kind::Fifo,
                other => {
                    return Err(bad(format!(
                        "entry `{name}` has the tar type {other:?}, which an image cannot hold"
                    )))
                }
            };
            let mode = if matches!(kind, Kind::Symlink(_)) { 0o777 } else { mode };
            let entry = Entry { kind, mode, uid, gid, mtime: self.mtime };
            self.put(path, entry, tarball, true)?;
        }
        Ok(())
    }
}

fn link_target<R: Read>(entry: &tar::Entry<R>, tarball: &Path, name: &str) -> Result<String> {
    let target = entry.link_name().with_path("read", tarball)?.unwrap_or_default();
    target.to_str().map(str::to_string).ok_or_else(|| Error::Tree {
        path: tarball.to_path_buf(),
        message: format!("entry `{name}`: the link target is not valid UTF-8"),
    })
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
    use std::fs;

    fn tree(root: &Path, files: &[&str]) {
        for f in files {
            let p = root.join(f);
            if let Some(dir) = f.strip_suffix('/') {
                fs::create_dir_all(root.join(dir)).unwrap();
            } else {
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, f.as_bytes()).unwrap();
            }
        }
    }

    fn layer(name: &str, path: &Path) -> Layer {
        Layer { name: name.into(), path: path.to_path_buf() }
    }

    /// The error of stacking `layers` in order, where only the last one may fail.
    fn stack_err(layers: &[Layer]) -> String {
        let mut m = Manifest::new(0);
        let mut stack = LayerStack::new(&mut m, 0);
        let (last, first) = layers.split_last().unwrap();
        first.iter().for_each(|l| stack.add(l).unwrap());
        stack.add(last).unwrap_err().to_string()
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(0);
        h
    }

    #[test]
    fn later_layers_win_and_tars_keep_their_owners() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        tree(&a, &["etc/motd", "etc/keep"]);
        tree(&b, &["etc/motd", "usr/share/x"]);
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Regular, 0o640, 1000, 100);
        h.set_size(2);
        builder.append_data(&mut h, "./etc/tarred", &b"hi"[..]).unwrap();
        let mut h = header(tar::EntryType::Char, 0o600, 0, 0);
        h.set_device_major(10).unwrap();
        h.set_device_minor(200).unwrap();
        builder.append_data(&mut h, "dev/net/tun", &[][..]).unwrap();
        builder.append_data(&mut h.clone(), "./", &[][..]).ok();
        let tarball = dir.path().join("c.tar");
        fs::write(&tarball, builder.into_inner().unwrap()).unwrap();

        let mut m = Manifest::new(9);
        let mut stack = LayerStack::new(&mut m, 9);
        for l in [layer("A", &a), layer("B", &b), layer("C", &tarball)] {
            stack.add(&l).unwrap();
        }
        let get = |p: &str| m.get(&ImagePath::parse(p).unwrap()).unwrap().clone();
        assert_eq!(get("etc/motd").kind, Kind::File { source: b.join("etc/motd"), size: 8 });
        assert_eq!(get("etc/keep").kind, Kind::File { source: a.join("etc/keep"), size: 8 });
        let tarred = get("etc/tarred");
        assert_eq!(
            (tarred.kind, tarred.mode, tarred.uid, tarred.gid),
            (Kind::Bytes(b"hi".to_vec()), 0o640, 1000, 100)
        );
        assert_eq!(get("dev/net/tun").kind, Kind::CharDevice { major: 10, minor: 200 });
        assert_eq!((get("dev/net").mode, get("dev/net").uid, get("dev/net").mtime), (0o755, 0, 9));
        assert_eq!((get("").mode, get("").uid), (0o755, 0));
    }

    #[test]
    fn a_directory_file_conflict_names_both_layers() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        tree(&a, &["etc/profile.d/x"]);
        tree(&b, &["etc/profile.d"]);
        let err = stack_err(&[layer("skeleton `a`", &a), layer("overlay `b`", &b)]);
        assert!(
            err.contains(
                "`/etc/profile.d` is not a directory in overlay `b` but a directory in \
                          skeleton `a`"
            ),
            "{err}"
        );

        // A file where an earlier layer has a file, under a path that needs it as a directory.
        let err = stack_err(&[layer("skeleton `b`", &b), layer("overlay `a`", &a)]);
        assert!(
            err.contains(
                "`/etc/profile.d` is a directory in overlay `a` but not a directory in \
                          skeleton `b`"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_symlink_over_a_directory_and_an_escaping_tar_link_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        tree(&a, &["lib/modules/"]);
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        builder.append_link(&mut h, "lib", "usr/lib").unwrap();
        let tarball = dir.path().join("links.tar");
        fs::write(&tarball, builder.into_inner().unwrap()).unwrap();
        let err = stack_err(&[layer("skeleton `a`", &a), layer("overlay `links.tar`", &tarball)]);
        assert!(err.contains("links.tar`: `/lib` is not a directory in overlay `links.tar` but a directory in skeleton `a`"), "{err}");

        let mut builder = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        builder.append_link(&mut h, "etc/evil", "../../../etc/shadow").unwrap();
        fs::write(&tarball, builder.into_inner().unwrap()).unwrap();
        let err = stack_err(&[layer("overlay `links.tar`", &tarball)]);
        assert!(err.contains("`etc/evil`: symlink to `../../../etc/shadow` in overlay `links.tar` points outside the image root"), "{err}");

        fs::write(&tarball, crate::host::extract::tar_named(b"../../escape")).unwrap();
        let err = stack_err(&[layer("overlay `links.tar`", &tarball)]);
        assert!(err.contains("entry `../../escape` points outside the image root"), "{err}");
    }
}
