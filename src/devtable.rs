//! The device and permission table, in the format of Buildroot's makedevs and genext2fs:
//! `<name> <type> <mode> <uid> <gid> <major> <minor> <start> <inc> <count>`.
//!
//! Types: `d` directory (created if missing), `f` regular file (must exist; sets mode and
//! owner), `c`/`b` character/block device, `p` fifo. `-` stands for an unused field. With a
//! non-zero `count`, entries `<name><start>` … are created with minors `minor + i * inc`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::manifest::{Entry, ImagePath, Kind, Manifest};

/// The type column of a table line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// `d`: a directory.
    Dir,
    /// `f`: an existing regular file.
    File,
    /// `c`: a character device.
    Char,
    /// `b`: a block device.
    Block,
    /// `p`: a named pipe.
    Fifo,
}

/// One parsed line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLine {
    /// 1-based line number, for error messages.
    pub line: usize,
    /// Path inside the image.
    pub path: ImagePath,
    /// What to create or adjust.
    pub kind: EntryType,
    /// Permission bits (octal in the file).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Major number (devices).
    pub major: u32,
    /// Minor number of the first device.
    pub minor: u32,
    /// First suffix number of a series.
    pub start: u32,
    /// Minor increment between members of a series.
    pub inc: u32,
    /// Number of members; 0 for a single entry named exactly `path`.
    pub count: u32,
}

/// A parsed table and the file it came from.
#[derive(Debug, Clone)]
pub struct DeviceTable {
    /// The table file.
    pub path: PathBuf,
    /// Its entries in file order.
    pub lines: Vec<TableLine>,
}

impl DeviceTable {
    /// Reads and parses a table file.
    pub fn load(path: &Path) -> Result<DeviceTable> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        DeviceTable::parse(&text, path)
    }

    /// Parses table text; `path` names the file in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<DeviceTable> {
        let mut lines = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let parsed = parse_line(content, line).map_err(|message| Error::DeviceTable {
                path: path.to_path_buf(),
                line,
                message,
            })?;
            lines.push(parsed);
        }
        Ok(DeviceTable { path: path.to_path_buf(), lines })
    }

    /// Applies every line to `manifest`: creates directories, devices and fifos, and sets
    /// modes and owners. New parent directories get mode 0755 and owner 0:0.
    pub fn apply(&self, manifest: &mut Manifest, mtime: u64) -> Result<()> {
        for l in &self.lines {
            let err = |message: String| Error::DeviceTable {
                path: self.path.clone(),
                line: l.line,
                message,
            };
            for (path, minor) in l.expand() {
                let kind = match l.kind {
                    EntryType::Dir => Kind::Dir,
                    EntryType::Char => Kind::CharDevice { major: l.major, minor },
                    EntryType::Block => Kind::BlockDevice { major: l.major, minor },
                    EntryType::Fifo => Kind::Fifo,
                    EntryType::File => match manifest.get(&path) {
                        Some(Entry {
                            kind: kind @ (Kind::File { .. } | Kind::Bytes(_)), ..
                        }) => kind.clone(),
                        Some(_) => return Err(err(format!("`{path}` is not a regular file"))),
                        None => {
                            return Err(err(format!(
                                "type `f` names `{path}`, which is neither in the skeleton nor \
                                 in the BusyBox install; add the file to the skeleton"
                            )))
                        }
                    },
                };
                if let Some(parent) = path.parent() {
                    ensure_dirs(manifest, &parent, mtime).map_err(&err)?;
                }
                let entry = Entry { kind, mode: l.mode, uid: l.uid, gid: l.gid, mtime };
                manifest.insert(path, entry).map_err(err)?;
            }
        }
        Ok(())
    }
}

impl TableLine {
    /// The paths and minor numbers this line stands for.
    pub fn expand(&self) -> Vec<(ImagePath, u32)> {
        if self.count == 0 {
            return vec![(self.path.clone(), self.minor)];
        }
        (0..self.count)
            .map(|i| {
                let name = format!("{}{}", self.path.as_str(), self.start + i);
                (
                    ImagePath::parse(&name).expect("suffix keeps the path valid"),
                    self.minor + i * self.inc,
                )
            })
            .collect()
    }
}

/// Creates every missing directory on the way to `dir` (0755, 0:0).
pub(crate) fn ensure_dirs(
    manifest: &mut Manifest,
    dir: &ImagePath,
    mtime: u64,
) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut cur = Some(dir.clone());
    while let Some(p) = cur {
        if manifest.get(&p).is_some() {
            break;
        }
        cur = p.parent();
        missing.push(p);
    }
    for p in missing.into_iter().rev() {
        manifest.insert(p, Entry { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime })?;
    }
    Ok(())
}

fn parse_line(content: &str, line: usize) -> Result<TableLine, String> {
    let fields: Vec<&str> = content.split_whitespace().collect();
    if fields.len() != 10 {
        return Err(format!(
            "expected 10 fields `<name> <type> <mode> <uid> <gid> <major> <minor> <start> <inc> \
             <count>` (use `-` for unused ones), found {}",
            fields.len()
        ));
    }
    let name = fields[0];
    if !name.starts_with('/') {
        return Err(format!("name `{name}` must be an absolute path inside the image"));
    }
    let path = ImagePath::parse(name)
        .filter(|p| !p.is_root() || fields[1] == "d")
        .ok_or_else(|| format!("name `{name}` leaves the image root or is empty"))?;
    let kind = match fields[1] {
        "d" => EntryType::Dir,
        "f" => EntryType::File,
        "c" => EntryType::Char,
        "b" => EntryType::Block,
        "p" => EntryType::Fifo,
        other => return Err(format!("unknown type `{other}`; use d, f, c, b or p")),
    };
    let mode = u32::from_str_radix(fields[2], 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("mode `{}` is not an octal permission up to 7777", fields[2]))?;
    let number = |i: usize, what: &str| -> Result<u32, String> {
        match fields[i] {
            "-" => Ok(0),
            f => f.parse().map_err(|_| format!("{what} `{f}` is not a number (or `-`)")),
        }
    };
    let parsed = TableLine {
        line,
        path,
        kind,
        mode,
        uid: number(3, "uid")?,
        gid: number(4, "gid")?,
        major: number(5, "major")?,
        minor: number(6, "minor")?,
        start: number(7, "start")?,
        inc: number(8, "inc")?,
        count: number(9, "count")?,
    };
    let is_device = matches!(kind, EntryType::Char | EntryType::Block);
    if is_device && (fields[5] == "-" || fields[6] == "-") {
        return Err("a device needs major and minor numbers".into());
    }
    if !is_device && parsed.count > 0 {
        return Err("only device entries (c, b) can have a count".into());
    }
    if parsed.major > 0xfff || parsed.minor > 0xfffff {
        return Err("device numbers must fit Linux's 12-bit major and 20-bit minor".into());
    }
    if parsed.count > 1024 {
        return Err(format!("count {} is larger than 1024", parsed.count));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<DeviceTable> {
        DeviceTable::parse(text, Path::new("table.txt"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_makedevs_lines_and_series() {
        let t = parse(
            "# name type mode uid gid major minor start inc count\n\
             /dev d 755 0 0 - - - - -\n\
             /dev/console c 600 0 0 5 1 - - -   # trailing comment\n\
             /dev/tty c 620 0 5 4 0 0 1 3\n",
        )
        .unwrap();
        assert_eq!(t.lines.len(), 3);
        let tty: Vec<_> =
            t.lines[2].expand().into_iter().map(|(p, m)| format!("{p} {m}")).collect();
        assert_eq!(tty, ["/dev/tty0 0", "/dev/tty1 1", "/dev/tty2 2"]);
        assert_eq!(t.lines[1].line, 3);
    }

    #[test]
    fn malformed_lines_name_file_line_and_field() {
        assert!(err("/dev/x c 600 0 0 5\n").contains("table.txt` line 1: expected 10 fields"));
        assert!(err("\n/dev/x z 600 0 0 5 1 - - -").contains("line 2: unknown type `z`"));
        assert!(err("/dev/x c 999 0 0 5 1 - - -").contains("mode `999`"));
        assert!(err("/dev/x c 600 root 0 5 1 - - -").contains("uid `root`"));
        assert!(err("dev/x c 600 0 0 5 1 - - -").contains("absolute path"));
        assert!(err("/../x c 600 0 0 5 1 - - -").contains("leaves the image root"));
        assert!(err("/dev/x c 600 0 0 - 1 - - -").contains("needs major and minor"));
        assert!(err("/dev/x d 755 0 0 - - 0 1 4").contains("only device entries"));
    }

    #[test]
    fn apply_creates_parents_and_sets_owners() {
        let t = parse("/var/run/x p 600 0 0 - - - - -\n/home/u d 700 1000 1000 - - - - -").unwrap();
        let mut m = Manifest::new(7);
        t.apply(&mut m, 7).unwrap();
        let get = |p: &str| m.get(&ImagePath::parse(p).unwrap()).unwrap().clone();
        assert_eq!(get("/var/run").kind, Kind::Dir);
        assert_eq!(get("/var/run/x").kind, Kind::Fifo);
        assert_eq!((get("/home/u").uid, get("/home/u").mode), (1000, 0o700));
        let missing = parse("/etc/nope f 644 0 0 - - - - -").unwrap();
        let e = missing.apply(&mut m, 7).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("`/etc/nope`"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any line made of the right fields parses back to the values written.
        #[test]
        fn well_formed_lines_round_trip(
            name in "(/[a-z0-9_.-]{1,8}){1,4}",
            kind in prop::sample::select(vec!["c", "b"]),
            mode in 0u32..=0o7777,
            uid in 0u32..70000, gid in 0u32..70000,
            major in 0u32..=0xfff, minor in 0u32..=0xffff,
            count in 0u32..8,
        ) {
            prop_assume!(!name.split('/').any(|c| c == "." || c == ".."));
            let text = format!("{name} {kind} {mode:o} {uid} {gid} {major} {minor} 0 1 {count}");
            let t = parse(&text).unwrap();
            let l = &t.lines[0];
            prop_assert_eq!((l.mode, l.uid, l.gid, l.major, l.minor, l.count), (mode, uid, gid, major, minor, count));
            prop_assert_eq!(l.expand().len(), count.max(1) as usize);
        }

        /// Arbitrary text never panics the parser: it parses or names a line.
        #[test]
        fn arbitrary_text_parses_or_names_a_line(text in "\\PC{0,200}") {
            if let Err(e) = parse(&text) {
                prop_assert!(e.to_string().contains(" line "), "{}", e);
            }
        }
    }
}
