//! The manifest: every path of the root filesystem with its kind, mode, owner, mtime and content.
//!
//! The manifest is the only input of the image writers (`crate::image`). It is built from the
//! BusyBox install tree, the skeleton and the device table, and it never looks at the host's
//! owners, umask or clock: two builds of the same inputs produce the same manifest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// What an entry is, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file whose bytes live in a host file, read when an image is written.
    File {
        /// Host path of the content.
        source: PathBuf,
        /// Size in bytes, taken when the entry was added.
        size: u64,
    },
    /// A regular file whose bytes are held in memory.
    Bytes(Vec<u8>),
    /// A symbolic link with its target, stored verbatim.
    Symlink(String),
    /// A character device node.
    CharDevice {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// A block device node.
    BlockDevice {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

impl Kind {
    /// The `S_IFMT` bits for this kind, as used in `st_mode`, cpio and ext4 inodes.
    pub fn type_bits(&self) -> u32 {
        match self {
            Kind::Dir => 0o040000,
            Kind::File { .. } | Kind::Bytes(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDevice { .. } => 0o020000,
            Kind::BlockDevice { .. } => 0o060000,
            Kind::Fifo => 0o010000,
        }
    }

    /// `(major, minor)` for device nodes, `None` otherwise.
    pub fn device_numbers(&self) -> Option<(u32, u32)> {
        match *self {
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                Some((major, minor))
            }
            _ => None,
        }
    }
}

/// One path in the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the path is.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0o7777` at most).
    pub mode: u32,
    /// Owner user id inside the image.
    pub uid: u32,
    /// Owner group id inside the image.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

impl Entry {
    /// The full `st_mode`: type bits and permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | (self.mode & 0o7777)
    }
}

/// A path inside the image: relative to its root, `/`-separated, normalised, never empty
/// except for the root itself, never containing `.` or `..` components.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImagePath(String);

impl ImagePath {
    /// The root directory of the image.
    pub fn root() -> ImagePath {
        ImagePath(String::new())
    }

    /// Parses `/dev/console`, `dev/console` or `./dev/console`; rejects `..` and empty names.
    pub fn parse(s: &str) -> Option<ImagePath> {
        let mut parts = Vec::new();
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => return None,
                p if p.contains('\0') => return None,
                p => parts.push(p),
            }
        }
        Some(ImagePath(parts.join("/")))
    }

    /// The path relative to the image root, without a leading `/` (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the image root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// True when this path lies strictly below `dir` (every path lies below the root).
    pub fn is_below(&self, dir: &ImagePath) -> bool {
        if dir.is_root() {
            return !self.is_root();
        }
        self.0.strip_prefix(dir.as_str()).is_some_and(|rest| rest.starts_with('/'))
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<ImagePath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => ImagePath(self.0[..i].to_string()),
            None => ImagePath::root(),
        })
    }

    /// The last component (`""` for the root).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// This path joined with one more component.
    pub fn join(&self, name: &str) -> ImagePath {
        if self.is_root() {
            ImagePath(name.to_string())
        } else {
            ImagePath(format!("{}/{}", self.0, name))
        }
    }

    /// The path below `root` on the host.
    pub fn under(&self, root: &Path) -> PathBuf {
        if self.is_root() {
            root.to_path_buf()
        } else {
            root.join(&self.0)
        }
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// Every path of the image, sorted by path so that every writer sees the same order and a
/// parent always comes before its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<ImagePath, Entry>,
}

impl Manifest {
    /// A manifest holding only the root directory (mode 0755, owned 0:0, at `mtime`).
    pub fn new(mtime: u64) -> Manifest {
        let mut entries = BTreeMap::new();
        let root = Entry { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime };
        entries.insert(ImagePath::root(), root);
        Manifest { entries }
    }

    /// Adds or replaces `path`. The parent directory must already be present as a directory.
    pub fn insert(&mut self, path: ImagePath, entry: Entry) -> Result<(), String> {
        let parent = path.parent().ok_or("the image root cannot be replaced")?;
        match self.entries.get(&parent) {
            Some(Entry { kind: Kind::Dir, .. }) => {}
            Some(_) => return Err(format!("`{parent}` is not a directory")),
            None => return Err(format!("parent directory `{parent}` is missing")),
        }
        if let Some(old) = self.entries.get(&path) {
            if old.kind == Kind::Dir && entry.kind != Kind::Dir {
                return Err(format!("`{path}` is a directory and cannot become a file"));
            }
        }
        self.entries.insert(path, entry);
        Ok(())
    }

    /// The entry at `path`.
    pub fn get(&self, path: &ImagePath) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The entry at `path`, for changing its mode or owner.
    pub fn get_mut(&mut self, path: &ImagePath) -> Option<&mut Entry> {
        self.entries.get_mut(path)
    }

    /// All entries in path order, for changing modes and owners in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&ImagePath, &mut Entry)> {
        self.entries.iter_mut()
    }

    /// All entries in path order; the root comes first.
    pub fn iter(&self) -> impl Iterator<Item = (&ImagePath, &Entry)> {
        self.entries.iter()
    }

    /// Number of entries, the root included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: a manifest always holds its root.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_are_normalised_and_confined() {
        assert_eq!(ImagePath::parse("/dev/console").unwrap().as_str(), "dev/console");
        assert_eq!(ImagePath::parse("./dev//console/").unwrap().as_str(), "dev/console");
        assert!(ImagePath::parse("/dev/../../etc").is_none());
        assert!(ImagePath::parse("/").unwrap().is_root());
        let p = ImagePath::parse("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.file_name(), "c");
        assert_eq!(p.to_string(), "/a/b/c");
        assert!(p.is_below(&ImagePath::parse("a/b").unwrap()));
        assert!(p.is_below(&ImagePath::root()));
        assert!(!p.is_below(&p) && !p.is_below(&ImagePath::parse("a/bb").unwrap()));
        assert!(!ImagePath::parse("a/bc").unwrap().is_below(&ImagePath::parse("a/b").unwrap()));
    }

    #[test]
    fn insert_needs_a_parent_directory() {
        let mut m = Manifest::new(0);
        let dir = Entry { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 0 };
        let file = Entry { kind: Kind::Bytes(b"x".to_vec()), ..dir.clone() };
        assert!(m.insert(ImagePath::parse("etc/passwd").unwrap(), file.clone()).is_err());
        m.insert(ImagePath::parse("etc").unwrap(), dir).unwrap();
        m.insert(ImagePath::parse("etc/passwd").unwrap(), file.clone()).unwrap();
        assert!(m.insert(ImagePath::parse("etc/passwd/x").unwrap(), file).is_err());
        let order: Vec<_> = m.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(order, ["/", "/etc", "/etc/passwd"]);
    }
}
