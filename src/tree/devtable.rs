//! The device and permission table, in the format of Buildroot's makedevs and genext2fs:
//! `<name> <type> <mode> <uid> <gid> <major> <minor> <start> <inc> <count>`.
//!
//! Types: `d` directory (created if missing), `f` regular file (must exist; sets mode and
//! owner), `r` a directory and everything below it (mode and owner set on each; symlinks get
//! the owner only), `c`/`b` character/block device, `p` fifo. `-` stands for an unused field.
//! `uid` and `gid` are numbers or names, looked up in the image's own `/etc/passwd` and
//! `/etc/group` (never the host's).
//!
//! Batches follow Buildroot's `package/makedevs/makedevs.c`: a `count` of 0 or 1 makes one
//! node named exactly `<name>`; a `count` of N > 1 makes `<name><start>` …
//! `<name><start + N - 1>`, the i-th (from 0) with minor `minor + i * inc`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tree::manifest::{Entry, ImagePath, Kind, Manifest};

/// The type column of a table line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// `d`: a directory.
    Dir,
    /// `f`: an existing regular file.
    File,
    /// `r`: an existing directory and everything below it.
    Recursive,
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
    pub uid: Owner,
    /// Group.
    pub gid: Owner,
    /// Major number (devices).
    pub major: u32,
    /// Minor number of the first device.
    pub minor: u32,
    /// First suffix number of a series.
    pub start: u32,
    /// Minor increment between members of a series.
    pub inc: u32,
    /// Number of members; 0 or 1 for a single entry named exactly `path`.
    pub count: u32,
}

/// A `uid` or `gid` column: a number, or a name looked up in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A numeric id (`-` is 0).
    Id(u32),
    /// A user or group name, resolved against the image's `/etc/passwd` or `/etc/group`.
    Name(String),
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
    /// modes and owners. New parent directories get mode 0755 and owner 0:0. Owner names are
    /// looked up in the manifest's `/etc/passwd` and `/etc/group`.
    pub fn apply(&self, manifest: &mut Manifest, mtime: u64) -> Result<()> {
        let mut accounts = Accounts::default();
        for l in &self.lines {
            let err = |message: String| Error::DeviceTable {
                path: self.path.clone(),
                line: l.line,
                message,
            };
            let uid = accounts.resolve(manifest, &l.uid, Database::Passwd).map_err(err)?;
            let gid = accounts.resolve(manifest, &l.gid, Database::Group).map_err(err)?;
            if l.kind == EntryType::Recursive {
                if manifest.get(&l.path).is_none() {
                    return Err(err(format!(
                        "type `r` names `{}`, which is not in the image; create it in the \
                         skeleton or an overlay, or with a `d` line before this one",
                        l.path
                    )));
                }
                for (path, entry) in manifest.iter_mut() {
                    if *path == l.path || path.is_below(&l.path) {
                        entry.uid = uid;
                        entry.gid = gid;
                        if !matches!(entry.kind, Kind::Symlink(_)) {
                            entry.mode = l.mode;
                        }
                    }
                }
                continue;
            }
            for (path, minor) in l.expand() {
                let kind = match l.kind {
                    EntryType::Dir => Kind::Dir,
                    EntryType::Char => Kind::CharDevice { major: l.major, minor },
                    EntryType::Block => Kind::BlockDevice { major: l.major, minor },
                    EntryType::Fifo => Kind::Fifo,
                    EntryType::Recursive => unreachable!("handled above"),
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
                let entry = Entry { kind, mode: l.mode, uid, gid, mtime };
                manifest.insert(path, entry).map_err(err)?;
            }
        }
        Ok(())
    }
}

/// Which account database a name is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Database {
    Passwd,
    Group,
}

impl Database {
    fn path(self) -> &'static str {
        match self {
            Database::Passwd => "etc/passwd",
            Database::Group => "etc/group",
        }
    }
}

/// The image's `/etc/passwd` and `/etc/group`, read when a name first needs them.
#[derive(Debug, Default)]
struct Accounts {
    loaded: HashMap<Database, HashMap<String, u32>>,
}

impl Accounts {
    fn resolve(&mut self, manifest: &Manifest, owner: &Owner, db: Database) -> Result<u32, String> {
        let name = match owner {
            Owner::Id(id) => return Ok(*id),
            Owner::Name(name) => name,
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = self.loaded.entry(db) {
            slot.insert(read_ids(manifest, db)?);
        }
        let what = if db == Database::Passwd { "user" } else { "group" };
        self.loaded[&db].get(name).copied().ok_or_else(|| {
            format!(
                "{what} `{name}` is not in the image's `/{}`; add it there (in the skeleton or \
                 an overlay) or use a number",
                db.path()
            )
        })
    }
}

/// Name → id from the image's `/etc/passwd` or `/etc/group` (`name:password:id:…` lines).
fn read_ids(manifest: &Manifest, db: Database) -> Result<HashMap<String, u32>, String> {
    let path = ImagePath::parse(db.path()).expect("a valid path");
    let bytes = match manifest.get(&path).map(|e| &e.kind) {
        Some(Kind::Bytes(b)) => b.clone(),
        Some(Kind::File { source, .. }) => std::fs::read(source)
            .map_err(|e| format!("cannot read `{}` for `{path}`: {e}", source.display()))?,
        Some(_) => return Err(format!("`{path}` in the image is not a regular file")),
        None => {
            return Err(format!(
                "the image has no `{path}` to look names up in; add one to the skeleton or use \
                 numeric ids"
            ))
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let id = fields.nth(1)?.trim().parse().ok()?;
            (!name.is_empty() && !name.starts_with('#')).then(|| (name.to_string(), id))
        })
        .collect())
}

impl TableLine {
    /// The paths and minor numbers this line stands for, as Buildroot's makedevs expands
    /// them: one entry named `path` for a count of 0 or 1, else `count` entries named `path`
    /// with the numbers `start`, `start + 1`, … appended and minors `minor`, `minor + inc`, ….
    pub fn expand(&self) -> Vec<(ImagePath, u32)> {
        if self.count <= 1 {
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
        .filter(|p| !p.is_root() || fields[1] == "d" || fields[1] == "r")
        .ok_or_else(|| format!("name `{name}` leaves the image root or is empty"))?;
    let kind = match fields[1] {
        "d" => EntryType::Dir,
        "f" => EntryType::File,
        "r" => EntryType::Recursive,
        "c" => EntryType::Char,
        "b" => EntryType::Block,
        "p" => EntryType::Fifo,
        other => return Err(format!("unknown type `{other}`; use f, d, r, c, b or p")),
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
    let owner = |i: usize, what: &str| -> Result<Owner, String> {
        let f = fields[i];
        if f == "-" {
            Ok(Owner::Id(0))
        } else if f.bytes().all(|b| b.is_ascii_digit()) {
            f.parse().map(Owner::Id).map_err(|_| format!("{what} `{f}` is too large"))
        } else if f.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !f.starts_with('-')
        {
            Ok(Owner::Name(f.to_string()))
        } else {
            Err(format!("{what} `{f}` is neither a number nor a user or group name (or `-`)"))
        }
    };
    let parsed = TableLine {
        line,
        path,
        kind,
        mode,
        uid: owner(3, "uid")?,
        gid: owner(4, "gid")?,
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
    if !is_device && kind != EntryType::Fifo && parsed.count > 0 {
        return Err("only device and fifo entries (c, b, p) can have a count".into());
    }
    if parsed.major > 0xfff || parsed.minor > 0xfffff {
        return Err("device numbers must fit Linux's 12-bit major and 20-bit minor".into());
    }
    if parsed.count > 1024 {
        return Err(format!("count {} is larger than 1024", parsed.count));
    }
    let last_minor =
        u64::from(parsed.minor) + u64::from(parsed.count.saturating_sub(1)) * u64::from(parsed.inc);
    if is_device && last_minor > 0xfffff {
        return Err(format!("the batch reaches minor {last_minor}, beyond Linux's 20 bits"));
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

    /// The examples of makedevs' own usage text (Buildroot, `package/makedevs/makedevs.c`),
    /// plus its rule that a count of 1 appends no number.
    #[test]
    fn batches_expand_as_buildroots_makedevs() {
        let t = parse(
            "/dev/hda b 640 0 0 3 1 1 1 15\n\
             /dev/rtp b 640 0 0 250 0 0 1 5\n\
             /dev/gps b 640 0 0 251 0 1 1 5\n\
             /dev/uio b 640 0 0 252 0 1 2 5\n\
             /dev/uio b 640 0 0 252 1 6 2 5\n\
             /dev/one c 600 0 0 10 7 4 1 1\n\
             /run/fifo p 600 0 0 - - 0 1 2\n",
        )
        .unwrap();
        let names = |i: usize| -> Vec<String> {
            t.lines[i].expand().into_iter().map(|(p, m)| format!("{} {m}", p.file_name())).collect()
        };
        let hda = names(0);
        assert_eq!((hda.len(), hda[0].as_str(), hda[14].as_str()), (15, "hda1 1", "hda15 15"));
        assert_eq!(names(1), ["rtp0 0", "rtp1 1", "rtp2 2", "rtp3 3", "rtp4 4"]);
        assert_eq!(names(2), ["gps1 0", "gps2 1", "gps3 2", "gps4 3", "gps5 4"]);
        assert_eq!(names(3), ["uio1 0", "uio2 2", "uio3 4", "uio4 6", "uio5 8"]);
        assert_eq!(names(4), ["uio6 1", "uio7 3", "uio8 5", "uio9 7", "uio10 9"]);
        assert_eq!(names(5), ["one 7"]);
        assert_eq!(names(6), ["fifo0 0", "fifo1 1"]);
    }

    fn image_with_accounts() -> Manifest {
        let mut m = Manifest::new(1);
        let dir = Entry { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, mtime: 1 };
        let file = |text: &str| Entry {
            kind: Kind::Bytes(text.as_bytes().to_vec()),
            mode: 0o644,
            ..dir.clone()
        };
        let mut add = |path: &str, entry| m.insert(ImagePath::parse(path).unwrap(), entry).unwrap();
        add("etc", dir.clone());
        add("etc/passwd", file("root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n"));
        add("etc/group", file("root:x:0:\nwww:x:33:\nvideo:x:44:www\n"));
        add("srv", dir.clone());
        add("srv/www", dir.clone());
        add("srv/www/index.html", file("hi"));
        add(
            "srv/www/link",
            Entry { kind: Kind::Symlink("index.html".into()), mode: 0o777, ..dir.clone() },
        );
        add("srv/www2", dir);
        m
    }

    #[test]
    fn names_resolve_against_the_image_and_r_reaches_everything_below() {
        let mut m = image_with_accounts();
        let t = parse("/srv/www r 750 www video - - - - -\n/dev/video c 660 root video 81 0 - - -")
            .unwrap();
        t.apply(&mut m, 1).unwrap();
        let get = |p: &str| m.get(&ImagePath::parse(p).unwrap()).unwrap().clone();
        for p in ["srv/www", "srv/www/index.html"] {
            assert_eq!((get(p).mode, get(p).uid, get(p).gid), (0o750, 33, 44), "{p}");
        }
        assert_eq!((get("srv/www/link").mode, get("srv/www/link").uid), (0o777, 33));
        assert_eq!((get("srv/www2").uid, get("srv").uid), (0, 0), "siblings and parents stay");
        assert_eq!((get("dev/video").uid, get("dev/video").gid), (0, 44));
    }

    #[test]
    fn unknown_names_and_missing_r_targets_are_errors_with_the_line() {
        let mut m = image_with_accounts();
        let e = parse("/srv d 755 0 0 - - - - -\n/srv/www r 750 nobody 0 - - - - -")
            .unwrap()
            .apply(&mut m, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("table.txt` line 2: user `nobody` is not in the image's `/etc/passwd`"),
            "{e}"
        );
        let e = parse("\n\n/x p 600 0 audio - - - - -").unwrap().apply(&mut m, 1).unwrap_err();
        assert!(
            e.to_string().contains("line 3: group `audio` is not in the image's `/etc/group`"),
            "{e}"
        );
        let e = parse("/nowhere r 755 0 0 - - - - -").unwrap().apply(&mut m, 1).unwrap_err();
        assert!(e.to_string().contains("line 1: type `r` names `/nowhere`"), "{e}");
        let e =
            parse("/x p 600 www 0 - - - - -").unwrap().apply(&mut Manifest::new(0), 0).unwrap_err();
        assert!(e.to_string().contains("line 1: the image has no `/etc/passwd`"), "{e}");
    }

    #[test]
    fn malformed_lines_name_file_line_and_field() {
        assert!(err("/dev/x c 600 0 0 5\n").contains("table.txt` line 1: expected 10 fields"));
        assert!(err("\n/dev/x z 600 0 0 5 1 - - -").contains("line 2: unknown type `z`"));
        assert!(err("/dev/x c 999 0 0 5 1 - - -").contains("mode `999`"));
        assert!(err("/dev/x c 600 r:t 0 5 1 - - -").contains("uid `r:t` is neither"));
        assert!(err("/dev/x c 600 0 99999999999 5 1 - - -").contains("gid `99999999999` is too"));
        assert!(err("/dev/x c 600 0 0 5 1048575 0 1 2").contains("beyond Linux's 20 bits"));
        assert!(err("dev/x c 600 0 0 5 1 - - -").contains("absolute path"));
        assert!(err("/../x c 600 0 0 5 1 - - -").contains("leaves the image root"));
        assert!(err("/dev/x c 600 0 0 - 1 - - -").contains("needs major and minor"));
        assert!(err("/dev/x d 755 0 0 - - 0 1 4").contains("only device and fifo entries"));
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
            prop_assert_eq!((l.mode, l.major, l.minor, l.count), (mode, major, minor, count));
            prop_assert_eq!((&l.uid, &l.gid), (&Owner::Id(uid), &Owner::Id(gid)));
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
