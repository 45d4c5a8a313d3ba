//! A distribution's kernel by name: Debian's cloud kernel package resolved from the host's
//! apt archive index (not a pinned version), checked against the index's sha256, cached like
//! the BusyBox tarball, and unpacked (image, `config-*` and modules) into the layout, where
//! `run` finds it.
//!
//! Trust runs from the archive's `InRelease` (its signature checked with `gpgv` when the
//! sources name a keyring and gpgv is installed) to the `Packages` index by sha256, and from
//! the index to the `.deb` by sha256. Nothing here needs root or apt itself.

use std::cmp::Ordering;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use xshell::{cmd, Shell};

use crate::arch::Arch;
use crate::context::Layout;
use crate::error::{Error, IoContext, Result};
use crate::host::fetch::{self, AptRepository, FetchOptions, Source};
use crate::pipeline::stage::timed;
use crate::progress::Progress;

/// A distribution whose kernel busyroot can fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    /// Debian's `linux-image-cloud-<arch>`: small, NVMe and ext4 built in, virtio as modules.
    Debian,
}

impl Distro {
    /// Every distribution busyroot can fetch a kernel from.
    pub const ALL: [Distro; 1] = [Distro::Debian];

    /// Its name on the command line and in the layout.
    pub fn name(self) -> &'static str {
        match self {
            Distro::Debian => "debian",
        }
    }
}

display_as_name!(Distro);

impl FromStr for Distro {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Distro, String> {
        Distro::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown distribution `{s}`; known: debian"))
    }
}

/// A distribution kernel unpacked into the layout.
#[derive(Debug, Clone)]
pub struct DistroKernel {
    /// The package unpacked (`linux-image-6.1.0-41-cloud-amd64`).
    pub package: String,
    /// Its version (`6.1.158-1`).
    pub version: String,
    /// The kernel image (`<dir>/boot/vmlinuz-<release>`).
    pub image: PathBuf,
    /// The directory holding `boot/` and `lib/modules/<release>`; the runner finds the modules
    /// beside the image on its own.
    pub root: PathBuf,
    /// The cached `.deb`.
    pub deb: PathBuf,
    /// True when the same package was already unpacked and nothing was done.
    pub fresh: bool,
}

/// The package last resolved for an arch, kept in the cache so that an offline run knows
/// which cached `.deb` to use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    package: String,
    version: String,
    url: String,
    file_name: String,
    sha256: String,
}

impl Resolved {
    fn to_text(&self) -> String {
        format!(
            "package {}\nversion {}\nurl {}\nfile {}\nsha256 {}\n",
            self.package, self.version, self.url, self.file_name, self.sha256
        )
    }

    fn parse(text: &str) -> Option<Resolved> {
        let get = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(String::from))
        };
        Some(Resolved {
            package: get("package")?,
            version: get("version")?,
            url: get("url")?,
            file_name: get("file")?,
            sha256: get("sha256")?,
        })
    }
}

/// Fetches (or reuses) `distro`'s kernel for the layout's arch and unpacks it into
/// [`Layout::distro_kernel`]. Online, the package is resolved anew from the host's apt
/// archives; offline, the one resolved last is taken from the cache.
pub fn fetch_kernel(
    sh: &Shell,
    layout: &Layout,
    distro: Distro,
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<DistroKernel> {
    let arch = layout.arch();
    let flavour = flavour(distro, arch)?;
    let record = opts.cache_dir.join(format!("{distro}-kernel-{}.txt", arch.info().debian_arch));
    let resolved = if opts.offline {
        let text = fs::read_to_string(&record).map_err(|_| {
            Error::Fetch(format!(
                "no {distro} kernel for {arch} was resolved yet (`{}` does not exist), and \
                 offline mode forbids reading the archive index; fetch it once online",
                record.display()
            ))
        })?;
        Resolved::parse(&text).ok_or_else(|| {
            Error::Other(format!("`{}` is damaged; remove it and fetch online", record.display()))
        })?
    } else {
        let resolved = timed(progress, &format!("resolve linux-image-{flavour}"), || {
            let resolved = resolve(sh, flavour, arch, opts, progress)?;
            let detail = format!("{} {}", resolved.package, resolved.version);
            Ok((resolved, detail))
        })?;
        crate::host::fs::write_file(&record, resolved.to_text())?;
        resolved
    };

    let source = Source {
        url: resolved.url.clone(),
        mirrors: Vec::new(),
        file_name: resolved.file_name.clone(),
        sha256: resolved.sha256.clone(),
    };
    let deb = fetch::fetch(sh, &source, opts, progress)?;

    let root = layout.distro_kernel(distro.name());
    let marker = root.join(".package");
    let stamp = format!("{}\n{}\n", resolved.file_name, resolved.sha256);
    let fresh = fs::read_to_string(&marker).is_ok_and(|m| m == stamp);
    if !fresh {
        timed(progress, &format!("unpack {}", resolved.file_name), || {
            let data = deb_data(sh, &deb)?;
            crate::host::extract::unpack_reader(std::io::Cursor::new(data), &deb, &root)?;
            crate::host::fs::write_file(&marker, &stamp)?;
            Ok(((), root.display().to_string()))
        })?;
    }
    let image = installed_image(&root).ok_or_else(|| Error::Tree {
        path: deb.clone(),
        message: "the package holds no `boot/vmlinuz-*`; is it a kernel image package?".into(),
    })?;
    {
        // `run` boots the newer of this and a kernel built from source: the one asked for last.
        let now = std::time::SystemTime::now();
        fs::File::options()
            .write(true)
            .open(&image)
            .and_then(|f| f.set_modified(now))
            .with_path("touch", &image)?;
    }
    Ok(DistroKernel {
        package: resolved.package,
        version: resolved.version,
        image,
        root,
        deb,
        fresh,
    })
}

/// The kernel image a distribution package left in the layout, if any: the newest of them.
pub fn installed_kernel(layout: &Layout) -> Option<PathBuf> {
    Distro::ALL
        .iter()
        .filter_map(|d| installed_image(&layout.distro_kernel(d.name())))
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// The `boot/vmlinuz-*` under `root`, if there is exactly one.
fn installed_image(root: &Path) -> Option<PathBuf> {
    let mut images: Vec<PathBuf> = fs::read_dir(root.join("boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .collect();
    (images.len() == 1).then(|| images.remove(0))
}

/// The kernel flavour `distro` builds for `arch`, or an error saying there is none.
fn flavour(distro: Distro, arch: Arch) -> Result<&'static str> {
    match distro {
        Distro::Debian => arch.info().debian_cloud_flavour.ok_or_else(|| {
            let with: Vec<&str> = Arch::ALL
                .iter()
                .filter(|a| a.info().debian_cloud_flavour.is_some())
                .map(|a| a.name())
                .collect();
            Error::Other(format!(
                "Debian builds no cloud kernel for {arch} (only for {}); build a kernel for \
                 {arch} from source instead",
                with.join(" and ")
            ))
        }),
    }
}

/// One package of a `Packages` index, with the archive it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Package {
    name: String,
    version: String,
    depends: String,
    filename: String,
    sha256: String,
    archive: String,
}

/// Resolves `linux-image-<flavour>` (a metapackage) to the kernel package it depends on, from
/// the `main` indexes of every suite of the host's apt sources.
fn resolve(
    sh: &Shell,
    flavour: &str,
    arch: Arch,
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<Resolved> {
    let debian_arch = arch.info().debian_arch;
    let repos = fetch::apt_repositories();
    if repos.is_empty() {
        return Err(Error::Fetch(
            "no apt archive to read a kernel package index from: /etc/apt/sources.list.d/*.sources \
             and /etc/apt/sources.list name no HTTP(S) archive; add one (this is Debian's \
             kernel, so a Debian archive)"
                .into(),
        ));
    }
    let mut packages = Vec::new();
    let mut tried = Vec::new();
    for repo in repos.iter().filter(|r| r.components.iter().any(|c| c == "main")) {
        for suite in &repo.suites {
            match read_index(sh, repo, suite, debian_arch, opts, progress) {
                Ok(text) => packages.extend(kernel_packages(&text, &repo.uri)),
                Err(err) => {
                    progress.note(&format!("skipped {} {suite}: {err}", repo.uri));
                    tried.push(format!("{} {suite}: {err}", repo.uri));
                }
            }
        }
    }
    pick(&packages, flavour).ok_or_else(|| {
        let mut message = format!(
            "no package `linux-image-{flavour}` (with the kernel package it depends on) in the \
             `main` index of any suite of the host's apt sources"
        );
        for line in &tried {
            message.push_str("\n  ");
            message.push_str(line);
        }
        Error::Fetch(message)
    })
}

/// The newest `linux-image-<flavour>` and the kernel package it names, as a [`Resolved`].
fn pick(packages: &[Package], flavour: &str) -> Option<Resolved> {
    let meta_name = format!("linux-image-{flavour}");
    let meta = packages
        .iter()
        .filter(|p| p.name == meta_name)
        .max_by(|a, b| compare_versions(&a.version, &b.version))?;
    // `linux-image-6.1.0-41-cloud-amd64 (= 6.1.158-1)`: the first alternative of each clause.
    let (name, version) = meta.depends.split(',').find_map(|clause| {
        let first = clause.split('|').next()?.trim();
        let (name, rest) = first.split_once(' ').unwrap_or((first, ""));
        let exact = rest.trim().strip_prefix("(=").and_then(|v| v.strip_suffix(')'));
        (name.starts_with("linux-image-") && name.ends_with(flavour) && name != meta_name)
            .then(|| (name.to_string(), exact.map(|v| v.trim().to_string())))
    })?;
    let kernel = packages
        .iter()
        .filter(|p| p.name == name && version.as_ref().map_or(true, |v| *v == p.version))
        .max_by(|a, b| compare_versions(&a.version, &b.version))?;
    let file_name = kernel.filename.rsplit('/').next().unwrap_or(&kernel.filename).to_string();
    Some(Resolved {
        package: kernel.name.clone(),
        version: kernel.version.clone(),
        url: format!("{}/{}", kernel.archive.trim_end_matches('/'), kernel.filename),
        file_name,
        sha256: kernel.sha256.clone(),
    })
}

/// The `linux-image-*` stanzas of a `Packages` index.
fn kernel_packages(index: &str, archive: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in index.split("\n\n") {
        if !stanza.starts_with("Package: linux-image-") {
            continue;
        }
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ").map(str::trim))
                .unwrap_or("")
                .to_string()
        };
        out.push(Package {
            name: field("Package"),
            version: field("Version"),
            depends: field("Depends"),
            filename: field("Filename"),
            sha256: field("SHA256"),
            archive: archive.to_string(),
        });
    }
    out
}

/// The `main/binary-<arch>/Packages` index of `suite`, decompressed: `InRelease` is read
/// (and its signature checked where possible), then `Packages.xz` is fetched into the cache
/// under a name carrying its sha256 and checked against it.
fn read_index(
    sh: &Shell,
    repo: &AptRepository,
    suite: &str,
    debian_arch: &str,
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<String> {
    let base = format!("{}/dists/{suite}", repo.uri.trim_end_matches('/'));
    let dir = opts.cache_dir.join("apt-index");
    fs::create_dir_all(&dir).with_path("create directory", &dir)?;
    let release = crate::host::fs::temp_path(&dir.join("InRelease"));
    let url = format!("{base}/InRelease");
    let got = curl(sh, &url, &release, progress).and_then(|()| {
        let text = fs::read_to_string(&release).with_path("read", &release)?;
        verify_signature(sh, &release, repo.signed_by.as_deref(), progress)?;
        Ok(text)
    });
    let _ = fs::remove_file(&release);
    let release = got?;
    let wanted = format!("main/binary-{debian_arch}/Packages.xz");
    let sha256 = release_sha256(&release, &wanted)
        .ok_or_else(|| Error::Fetch(format!("`{url}` lists no `{wanted}`")))?;
    let key: String = format!("{}-{suite}-{debian_arch}", repo.uri)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    let source = Source {
        url: format!("{base}/{wanted}"),
        mirrors: Vec::new(),
        file_name: format!("apt-index/{key}-{}.xz", &sha256[..16]),
        sha256,
    };
    let online = FetchOptions { mirror: None, ..opts.clone() };
    let path = fetch::fetch(sh, &source, &online, progress)?;
    // Older indexes of the same suite are of no further use.
    for entry in fs::read_dir(&dir).with_path("read directory", &dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{key}-")) && entry.path() != path {
            let _ = fs::remove_file(entry.path());
        }
    }
    let out = crate::host::exec::run_captured(cmd!(sh, "xz --decompress --stdout {path}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks `InRelease`'s signature with `gpgv` against `keyring` (the source's `Signed-By`),
/// else apt's trusted keyrings; without any keyring or gpgv the index is trusted as the
/// sources name it, and a note says so.
fn verify_signature(
    sh: &Shell,
    release: &Path,
    keyring: Option<&Path>,
    progress: &dyn Progress,
) -> Result<()> {
    // Without `Signed-By`, apt trusts the keyrings in /etc/apt/trusted.gpg(.d); so does this.
    let keyrings: Vec<PathBuf> = match keyring {
        Some(keyring) => vec![keyring.to_path_buf()],
        None => {
            let dir = Path::new("/etc/apt/trusted.gpg.d");
            let mut found: Vec<PathBuf> = fs::read_dir(dir)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            found.push(PathBuf::from("/etc/apt/trusted.gpg"));
            found.sort();
            found
        }
    };
    let keyrings: Vec<PathBuf> = keyrings.into_iter().filter(|k| k.is_file()).collect();
    if keyrings.is_empty() {
        progress.note("no apt keyring file found: the index's signature is not checked");
        return Ok(());
    }
    if crate::host::tools::find_program("gpgv").is_none() {
        progress.note("gpgv is not installed (package gpgv): the index's signature is not checked");
        return Ok(());
    }
    let args: Vec<std::ffi::OsString> =
        keyrings.iter().flat_map(|k| ["--keyring".into(), k.clone().into_os_string()]).collect();
    crate::host::exec::run_captured(cmd!(sh, "gpgv {args...} {release}")).map(drop)
}

/// The sha256 `InRelease` gives for `path` (`main/binary-amd64/Packages.xz`).
fn release_sha256(release: &str, path: &str) -> Option<String> {
    let mut in_sha256 = false;
    for line in release.lines() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(hash), Some(_size), Some(name)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        if in_sha256 && name == path && hash.len() == 64 {
            return Some(hash.to_lowercase());
        }
    }
    None
}

/// Downloads `url` to `out` with curl, the failure in words.
fn curl(sh: &Shell, url: &str, out: &Path, progress: &dyn Progress) -> Result<()> {
    fetch::curl(sh, url, out, &[], progress)?.map_err(|why| Error::Fetch(format!("`{url}`: {why}")))
}

/// The decompressed `data.tar` of the Debian package `deb`, read from its `ar` archive
/// without dpkg.
fn deb_data(sh: &Shell, deb: &Path) -> Result<Vec<u8>> {
    let bad = |message: String| Error::Tree { path: deb.to_path_buf(), message };
    let mut bytes = Vec::new();
    fs::File::open(deb).and_then(|mut f| f.read_to_end(&mut bytes)).with_path("read", deb)?;
    let (name, member) = ar_members(&bytes)
        .map_err(|m| bad(m.to_string()))?
        .into_iter()
        .find(|(name, _)| name.starts_with("data.tar"))
        .ok_or_else(|| bad("no `data.tar.*` member: not a Debian package".into()))?;
    match name.as_str() {
        "data.tar" => Ok(member.to_vec()),
        "data.tar.gz" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(member)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("cannot decompress `data.tar.gz`: {e}")))?;
            Ok(out)
        }
        "data.tar.xz" | "data.tar.zst" => {
            let tool = if name.ends_with(".xz") { "xz" } else { "zstd" };
            let packed = crate::host::fs::temp_path(&deb.with_extension(&name));
            fs::write(&packed, member).with_path("write", &packed)?;
            let out =
                crate::host::exec::run_captured(cmd!(sh, "{tool} --decompress --stdout {packed}"));
            let _ = fs::remove_file(&packed);
            Ok(out?.stdout)
        }
        other => Err(bad(format!("`{other}` is compressed in a way busyroot cannot read"))),
    }
}

/// The members of a System V `ar` archive (a `.deb`), by name.
fn ar_members(bytes: &[u8]) -> std::result::Result<Vec<(String, &[u8])>, &'static str> {
    let mut rest = bytes.strip_prefix(b"!<arch>\n").ok_or("not an ar archive (no `!<arch>`)")?;
    let mut members = Vec::new();
    while rest.len() >= 60 {
        let (header, body) = rest.split_at(60);
        let name =
            String::from_utf8_lossy(&header[..16]).trim_end().trim_end_matches('/').to_string();
        let size: usize = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("an ar member header has no size")?;
        let data = body.get(..size).ok_or("the archive ends inside a member")?;
        members.push((name, data));
        // Members are padded to an even length.
        rest = body.get(size + size % 2..).unwrap_or(&[]);
    }
    Ok(members)
}

/// Compares two Debian package versions as dpkg does: epoch, then upstream version, then
/// revision, each part by runs of non-digits (`~` before everything, letters before other
/// characters) and of digits (numerically).
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, rest)) => (e.parse().unwrap_or(0), rest),
            None => (0, v),
        };
        let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
        (epoch, upstream, revision)
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb).then_with(|| compare_part(ua, ub)).then_with(|| compare_part(ra, rb))
}

fn compare_part(a: &str, b: &str) -> Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (x, y) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if x != y {
                return x.cmp(&y);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_dpkg_does() {
        use Ordering::*;
        for (a, b, want) in [
            ("6.1.158-1", "6.1.135-1", Greater),
            ("6.1.99-1", "6.1.135-1", Less),
            ("6.1.158-1", "6.1.158-1", Equal),
            ("1.0~rc1-1", "1.0-1", Less),
            ("1:0.1-1", "9.9-1", Greater),
            ("6.1.158-1+deb12u1", "6.1.158-1", Greater),
            ("1.0a", "1.0+", Less),
            ("1.02", "1.2", Equal),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        }
    }

    const INDEX: &str = "\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.135+1)
Version: 6.1.135-1
Depends: linux-image-6.1.0-34-cloud-amd64 (= 6.1.135-1)
Filename: pool/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.135-1_amd64.deb
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: linux-image-6.1.0-34-cloud-amd64
Version: 6.1.135-1
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Filename: pool/main/l/linux-signed-amd64/linux-image-6.1.0-34-cloud-amd64_6.1.135-1_amd64.deb
SHA256: 2222222222222222222222222222222222222222222222222222222222222222
";

    const SECURITY: &str = "\
Package: linux-image-6.1.0-41-cloud-amd64
Version: 6.1.158-1
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-6.1.0-41-cloud-amd64_6.1.158-1_amd64.deb
SHA256: 4444444444444444444444444444444444444444444444444444444444444444

Package: linux-image-cloud-amd64
Version: 6.1.158-1
Depends: linux-image-6.1.0-41-cloud-amd64 (= 6.1.158-1)
Filename: pool/updates/main/l/linux-signed-amd64/linux-image-cloud-amd64_6.1.158-1_amd64.deb
SHA256: 3333333333333333333333333333333333333333333333333333333333333333
";

    #[test]
    fn the_newest_metapackage_names_the_kernel_package_in_any_suite() {
        let mut packages = kernel_packages(INDEX, "http://a.example/debian");
        assert_eq!(pick(&packages, "cloud-amd64").unwrap().version, "6.1.135-1");
        packages.extend(kernel_packages(SECURITY, "http://a.example/debian-security/"));
        let got = pick(&packages, "cloud-amd64").unwrap();
        assert_eq!(got.package, "linux-image-6.1.0-41-cloud-amd64");
        assert_eq!(got.sha256, "4".repeat(64));
        assert_eq!(
            got.url,
            "http://a.example/debian-security/pool/updates/main/l/linux-signed-amd64/\
             linux-image-6.1.0-41-cloud-amd64_6.1.158-1_amd64.deb"
        );
        assert_eq!(got.file_name, "linux-image-6.1.0-41-cloud-amd64_6.1.158-1_amd64.deb");
        assert!(pick(&packages, "cloud-arm64").is_none());
        assert_eq!(Resolved::parse(&got.to_text()), Some(got));
    }

    #[test]
    fn release_files_give_the_sha256_of_the_index() {
        let release = "Origin: Debian\nMD5Sum:\n 0123 10 main/binary-amd64/Packages.xz\nSHA256:\n \
                       aaaa 5 main/binary-arm64/Packages.xz\n "
            .to_string()
            + &"b".repeat(64)
            + " 8790396 main/binary-amd64/Packages.xz\n";
        assert_eq!(release_sha256(&release, "main/binary-amd64/Packages.xz"), Some("b".repeat(64)));
        assert_eq!(release_sha256(&release, "main/binary-riscv64/Packages.xz"), None);
    }

    #[test]
    fn ar_members_of_a_package() {
        let mut ar = b"!<arch>\n".to_vec();
        for (name, data) in [("debian-binary", &b"2.0\n"[..]), ("data.tar", &b"odd"[..])] {
            ar.extend(
                format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", 0, 0, 0, 100644, data.len())
                    .bytes(),
            );
            ar.extend(data);
            if data.len() % 2 == 1 {
                ar.push(b'\n');
            }
        }
        let members = ar_members(&ar).unwrap();
        assert_eq!(
            members,
            [("debian-binary".to_string(), &b"2.0\n"[..]), ("data.tar".into(), &b"odd"[..])]
        );
        assert!(ar_members(b"PK\x03\x04").is_err());
    }

    #[test]
    fn a_tampered_release_file_fails_its_signature_check() {
        let lists = Path::new("/var/lib/apt/lists");
        let release = fs::read_dir(lists).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with("_InRelease"))
        });
        let keyring = Path::new("/usr/share/keyrings/debian-archive-keyring.gpg");
        let (Some(release), true, Some(_)) =
            (release, keyring.is_file(), crate::host::tools::find_program("gpgv"))
        else {
            let why = "needs a Debian host's apt lists, its archive keyring and gpgv; run \
                       `apt-get update && apt-get install gpgv debian-archive-keyring` as root";
            return crate::testing::skip("a_tampered_release_file_fails_its_signature_check", why);
        };
        let sh = Shell::new().unwrap();
        let quiet = &crate::progress::Silent;
        verify_signature(&sh, &release, Some(keyring), quiet).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tampered = dir.path().join("InRelease");
        let text = fs::read_to_string(&release).unwrap();
        fs::write(&tampered, text.replacen("SHA256:\n ", "SHA256:\n 0", 1)).unwrap();
        let err = verify_signature(&sh, &tampered, Some(keyring), quiet).unwrap_err();
        assert!(err.to_string().contains("gpgv"), "{err}");
    }

    #[test]
    fn riscv64_has_no_cloud_kernel_and_the_error_says_what_has() {
        let err = flavour(Distro::Debian, Arch::Riscv64).unwrap_err().to_string();
        assert!(err.contains("riscv64") && err.contains("x86_64 and aarch64"), "{err}");
        assert!(err.contains("from source"), "{err}");
        assert_eq!(flavour(Distro::Debian, Arch::Aarch64).unwrap(), "cloud-arm64");
    }
}
