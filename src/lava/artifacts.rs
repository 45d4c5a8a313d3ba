//! The artifact directory a lab fetches from: the images, the kernel and their sha256s, with `file://` URLs.

use super::*;

/// The artifact files of a cell, in a directory `<name>/<version>/<arch>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    /// The directory holding the files and `SHA256SUMS`.
    pub dir: PathBuf,
    /// Where a lab fetches the directory from (`<base-url>/<name>/<version>/<arch>`).
    pub url: String,
    /// Each file name with its sha256.
    pub files: BTreeMap<String, String>,
}

impl Artifacts {
    /// The URL of one of the files.
    pub fn url_of(&self, file: &str) -> String {
        format!("{}/{file}", self.url)
    }
}

/// The images and kernel that go into an artifact directory.
#[derive(Debug, Clone)]
pub struct ArtifactSources {
    /// `rootfs.cpio.gz`.
    pub cpio: PathBuf,
    /// `rootfs.ext4`.
    pub ext4: PathBuf,
    /// `rootfs.tar`.
    pub tar: PathBuf,
    /// The kernel image, stored as `kernel`.
    pub kernel: PathBuf,
}

/// The file names in an artifact directory besides `SHA256SUMS`.
pub const ARTIFACT_FILES: [&str; 4] = ["kernel", "rootfs.cpio.gz", "rootfs.ext4", "rootfs.tar"];

/// Copies the images and kernel into `<root>/<name>/<version>/<arch>/` with a `SHA256SUMS`
/// (the format `sha256sum --check` reads). Without a version the directory is named after
/// the first 12 hex digits of the sha256 of `SHA256SUMS`, so a lab's store never holds two
/// different builds under one URL. A directory that already holds the same files is kept.
/// `base_url` is where a lab finds `root`; without one, `file://` of `root`.
pub fn write_artifacts(
    root: &Path,
    name: &str,
    version: Option<&str>,
    arch: Arch,
    sources: &ArtifactSources,
    base_url: Option<&str>,
) -> Result<Artifacts> {
    let by_name = [
        ("kernel", &sources.kernel),
        ("rootfs.cpio.gz", &sources.cpio),
        ("rootfs.ext4", &sources.ext4),
        ("rootfs.tar", &sources.tar),
    ];
    let files = by_name.iter().map(|(file, source)| Ok((file.to_string(), sha256_file(source)?)));
    let files = files.collect::<Result<BTreeMap<_, _>>>()?;
    let sums = sha256sums(&files);
    // A derived version is hex, so only a given one can fail the check.
    let version =
        version.map_or_else(|| sha256_bytes(sums.as_bytes())[..12].to_string(), str::to_string);
    check_path_part("version", &version)?;
    check_path_part("name", name)?;
    let dir = root.join(name).join(&version).join(arch.name());
    let sums_path = dir.join("SHA256SUMS");
    let complete = fs::read_to_string(&sums_path).is_ok_and(|old| old == sums)
        && by_name.iter().all(|(file, _)| dir.join(file).is_file());
    if !complete {
        // SHA256SUMS goes last: its presence with these sums says the copies are complete.
        let _ = fs::remove_file(&sums_path);
        for (file, source) in by_name {
            copy_file(source, &dir.join(file))?;
        }
        write_file(&sums_path, &sums)?;
    }
    let base = match base_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => file_url(&fs::canonicalize(root).with_path("resolve", root)?)?,
    };
    let url = format!("{base}/{name}/{version}/{}", arch.name());
    Ok(Artifacts { dir, url, files })
}

/// `SHA256SUMS` text: `<sha256>  <name>` per line, sorted by name.
pub fn sha256sums(files: &BTreeMap<String, String>) -> String {
    files.iter().map(|(name, sum)| format!("{sum}  {name}\n")).collect()
}

pub(super) fn check_path_part(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "the artifact {what} `{value}` must be non-empty and made of letters, digits and \
             `-_.+` only, as it becomes part of a path and a URL"
        )))
    }
}

/// `file://` URL of an absolute path; refuses characters a URL would need to escape.
pub(super) fn file_url(path: &Path) -> Result<String> {
    let text = path.to_string_lossy();
    if text.chars().any(|c| !(c.is_ascii_graphic()) || "%?#\"'{}".contains(c)) {
        return Err(Error::Other(format!(
            "`{text}` holds characters that would need escaping in a file:// URL; put the \
             artifacts in a plain directory"
        )));
    }
    Ok(format!("file://{text}"))
}
