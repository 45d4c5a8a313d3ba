//! Fetching source tarballs: a shared cache, an optional mirror, backup download sources, an
//! offline mode, and a sha256 check before anything is used.
//!
//! Invariant: a file under its final name in the cache always has the pinned checksum. Downloads
//! and mirror copies land in a temporary file that is renamed only after the checksum matched.

use std::fs;
use std::path::{Path, PathBuf};

use xshell::{cmd, Shell};

use crate::error::{Error, IoContext, Result};
pub use crate::host::fs::{sha256_bytes, sha256_file};
use crate::progress::Progress;

/// In a backup source, stands for each archive base URL of the host's apt sources.
pub const APT_ARCHIVE: &str = "{apt-archive}";

/// A file to fetch: where it is published, the name it is stored under and its pinned sha256.
#[derive(Debug, Clone)]
pub struct Source {
    /// Upstream download URL.
    pub url: String,
    /// Backup download URLs, tried in order after `url`; [`APT_ARCHIVE`] in one of them
    /// stands for each archive base URL in the host's apt sources (none without apt).
    pub mirrors: Vec<String>,
    /// File name in the cache and in a mirror (the last component of the upstream URL).
    pub file_name: String,
    /// Expected sha256, lower-case hex.
    pub sha256: String,
}

/// Where fetched files are looked for and kept.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The download cache shared by every checkout.
    pub cache_dir: PathBuf,
    /// A directory or URL prefix tried before upstream.
    pub mirror: Option<String>,
    /// Never use the network: only the cache and a mirror directory.
    pub offline: bool,
}

impl FetchOptions {
    /// Options from the environment: `BUSYROOT_CACHE` (default `$XDG_CACHE_HOME/busyroot`,
    /// else `~/.cache/busyroot`), `BUSYROOT_MIRROR` and `BUSYROOT_OFFLINE=1`.
    pub fn from_env() -> FetchOptions {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let cache_dir = var("BUSYROOT_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            let base = var("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(var("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
            });
            base.join("busyroot")
        });
        let offline = var("BUSYROOT_OFFLINE").is_some_and(|v| v != "0");
        FetchOptions { cache_dir, mirror: var("BUSYROOT_MIRROR"), offline }
    }
}

/// Returns the path of `source` in the cache, fetching it first if needed: from the mirror,
/// then upstream, then each backup source in order. Every candidate is checked against the
/// pinned sha256 before it is used; each one that fails is reported in one line and the next
/// is tried.
pub fn fetch(
    sh: &Shell,
    source: &Source,
    opts: &FetchOptions,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let cached = opts.cache_dir.join(&source.file_name);
    if cached.exists() {
        let actual = sha256_file(&cached)?;
        if actual == source.sha256 {
            return Ok(cached);
        }
        fs::remove_file(&cached).with_path("remove", &cached)?;
        return Err(Error::Checksum {
            path: cached.display().to_string(),
            expected: source.sha256.clone(),
            actual,
            removed: ", and was removed from the cache; run again to fetch it anew",
        });
    }
    fs::create_dir_all(&opts.cache_dir).with_path("create directory", &opts.cache_dir)?;
    crate::host::fs::remove_dead_temporaries(&opts.cache_dir)?;

    let mut tried = Vec::new();
    let mut urls = Vec::new();
    if let Some(mirror) = &opts.mirror {
        if is_url(mirror) {
            if opts.offline {
                tried.push(format!("mirror URL `{mirror}` (skipped: offline)"));
            } else {
                urls.push(format!("{}/{}", mirror.trim_end_matches('/'), source.file_name));
            }
        } else {
            let candidate = Path::new(mirror).join(&source.file_name);
            if candidate.is_file() {
                progress.note(&format!("using {} from mirror", candidate.display()));
                install(&candidate.display().to_string(), source, &cached, |tmp| {
                    fs::copy(&candidate, tmp).map(drop).with_path("copy", &candidate)
                })?;
                return Ok(cached);
            }
            tried.push(format!("mirror directory: `{}` does not exist", candidate.display()));
        }
    }
    if opts.offline {
        tried.insert(0, format!("cache: `{}` does not exist", cached.display()));
        return Err(Error::Fetch(format!(
            "`{}` is not available offline; looked in:\n  {}\n\
             put the file (sha256 {}) into the cache directory ($BUSYROOT_CACHE) or into a \
             directory named by $BUSYROOT_MIRROR, or allow downloads (offline mode off)",
            source.file_name,
            tried.join("\n  "),
            source.sha256
        )));
    }
    urls.push(source.url.clone());
    let archives = apt_archives();
    urls.extend(expand_mirrors(&source.mirrors, &archives));
    let mut seen = std::collections::HashSet::new();
    urls.retain(|url| seen.insert(url.clone()));

    for url in &urls {
        match download(sh, url, source, &cached, progress) {
            Ok(()) => return Ok(cached),
            Err(err) => {
                let reason = match err {
                    Error::Checksum { expected, actual, .. } => {
                        format!("wrong checksum: expected sha256 {expected}, got {actual}")
                    }
                    other => other.to_string(),
                };
                progress.note(&format!("could not fetch `{url}`: {reason}"));
                tried.push(format!("`{url}`: {reason}"));
            }
        }
    }
    Err(Error::Fetch(format!(
        "could not fetch `{}` from any source:\n  {}\n\
         to work offline, put `{}` (sha256 {}) into the cache directory ($BUSYROOT_CACHE) or \
         into a directory and set BUSYROOT_MIRROR to it",
        source.file_name,
        tried.join("\n  "),
        source.file_name,
        source.sha256
    )))
}

/// The backup URLs of `mirrors`, with [`APT_ARCHIVE`] replaced by each of `archives` (an entry
/// naming it is dropped when there are none).
pub fn expand_mirrors(mirrors: &[String], archives: &[String]) -> Vec<String> {
    let mut urls = Vec::new();
    for mirror in mirrors {
        if mirror.contains(APT_ARCHIVE) {
            for archive in archives {
                urls.push(mirror.replace(APT_ARCHIVE, archive.trim_end_matches('/')));
            }
        } else {
            urls.push(mirror.clone());
        }
    }
    urls
}

/// The HTTP(S) archive base URLs of the host's apt sources, in the order apt lists them:
/// `URIs:` of `/etc/apt/sources.list.d/*.sources`, then the `deb` and `deb-src` lines of
/// `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*.list`.
pub fn apt_archives() -> Vec<String> {
    let mut urls: Vec<String> = apt_sources().into_iter().map(|(_, repo)| repo.uri).collect();
    let mut seen = std::collections::HashSet::new();
    urls.retain(|url| seen.insert(url.clone()));
    urls
}

/// One entry of the host's apt sources: an archive and the suites and components apt reads
/// from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptRepository {
    /// The archive's HTTP(S) base URL.
    pub uri: String,
    /// Its suites (`bookworm`, `bookworm-security`).
    pub suites: Vec<String>,
    /// Its components (`main`).
    pub components: Vec<String>,
    /// The keyring its index is signed with (`Signed-By:` naming a file), if given.
    pub signed_by: Option<PathBuf>,
}

/// The binary repositories of the host's apt sources, in the order apt lists them (deb822
/// `.sources` files, then `sources.list` and `.list` files); none without apt.
pub fn apt_repositories() -> Vec<AptRepository> {
    apt_sources().into_iter().filter(|(binary, _)| *binary).map(|(_, repo)| repo).collect()
}

/// Every HTTP(S) entry of the host's apt sources, each with whether it is binary (`deb`, not
/// only `deb-src`): deb822 `.sources` files, then one-line `.list` ones (with
/// `/etc/apt/sources.list` first), each group sorted by name.
fn apt_sources() -> Vec<(bool, AptRepository)> {
    let dir = Path::new("/etc/apt/sources.list.d");
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let with =
        |ext: &'static str| files.iter().filter(move |f| f.extension() == Some(ext.as_ref()));
    let read = |file: &Path| fs::read_to_string(file).unwrap_or_default();
    let mut entries: Vec<_> = with("sources").flat_map(|f| deb822_entries(&read(f))).collect();
    let lists = std::iter::once(Path::new("/etc/apt/sources.list"))
        .chain(with("list").map(|f| f.as_path()));
    entries.extend(lists.flat_map(|f| one_line_entries(&read(f))));
    entries
}

/// The enabled stanzas of a deb822 `.sources` file, each as a field lookup (case-insensitive
/// names, values trimmed).
fn deb822_stanzas(text: &str) -> Vec<impl Fn(&str) -> Option<String> + '_> {
    text.split("\n\n")
        .map(|stanza| {
            move |name: &str| {
                stanza.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
                })
            }
        })
        .filter(|field| !field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")))
        .collect()
}

/// The entries of a deb822 `.sources` file: one per HTTP(S) URI of each enabled stanza, binary
/// when its `Types:` has `deb`.
fn deb822_entries(text: &str) -> Vec<(bool, AptRepository)> {
    let mut repos = Vec::new();
    for field in deb822_stanzas(text) {
        let words = |name: &str| -> Vec<String> {
            field(name).unwrap_or_default().split_whitespace().map(String::from).collect()
        };
        let binary = words("Types").iter().any(|t| t == "deb");
        // `Signed-By:` may hold the key itself, over several lines; only a path is used.
        let signed_by = field("Signed-By").filter(|v| v.starts_with('/')).map(PathBuf::from);
        for uri in words("URIs").into_iter().filter(|u| is_http(u)) {
            let (suites, components) = (words("Suites"), words("Components"));
            let signed_by = signed_by.clone();
            repos.push((binary, AptRepository { uri, suites, components, signed_by }));
        }
    }
    repos
}

/// The HTTP(S) entries of one-line-style `deb[-src] [options] URL suite components` lines.
fn one_line_entries(text: &str) -> Vec<(bool, AptRepository)> {
    let mut repos = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        let binary = match words.next() {
            Some("deb") => true,
            Some("deb-src") => false,
            _ => continue,
        };
        // Options such as `[arch=amd64 signed-by=...]` come before the URL.
        let mut signed_by = None;
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for word in words.by_ref() {
                let option = word.trim_matches(|c| c == '[' || c == ']');
                if let Some(path) = option.strip_prefix("signed-by=") {
                    signed_by = Some(PathBuf::from(path));
                }
                if word.ends_with(']') {
                    break;
                }
            }
        }
        let Some(uri) = words.next().filter(|u| is_http(u)) else { continue };
        let suites = words.next().map(String::from).into_iter().collect();
        let components = words.map(String::from).collect();
        let uri = uri.to_string();
        repos.push((binary, AptRepository { uri, suites, components, signed_by }));
    }
    repos
}

fn is_http(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

fn is_url(s: &str) -> bool {
    ["http://", "https://", "ftp://", "file://"].iter().any(|p| s.starts_with(p))
}

/// Downloads `url` with curl (which retries transient failures) into the cache; a failure
/// says why in words.
fn download(
    sh: &Shell,
    url: &str,
    source: &Source,
    cached: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    install(url, source, cached, |tmp| {
        let retry = ["--retry-connrefused", "--retry-delay", "2"];
        curl(sh, url, tmp, &retry, progress)?.map_err(Error::Fetch)
    })
}

/// Downloads `url` to `out` with curl (retrying 3 times, and as `retry` adds), echoed to
/// `progress`; `Err` if curl cannot run, `Ok(Err)` with why in words if the download failed.
pub(crate) fn curl(
    sh: &Shell,
    url: &str,
    out: &Path,
    retry: &[&str],
    progress: &dyn Progress,
) -> Result<std::result::Result<(), String>> {
    // The status code goes to stdout (the body goes to `out`), to name an HTTP error.
    let write_out = "%{http_code}";
    let cmd = cmd!(
        sh,
        "curl --fail --silent --show-error --location --retry 3 {retry...} --connect-timeout 30 --write-out {write_out} --output {out} {url}"
    );
    progress.command(&cmd.to_string());
    // curl must not outlive a killed run and go on writing the partial file.
    let done = crate::host::exec::output(cmd)
        .map_err(|e| Error::Fetch(format!("cannot run `curl` (is it installed?): {e}")))?;
    if done.status.success() {
        return Ok(Ok(()));
    }
    let (stdout, stderr) =
        (String::from_utf8_lossy(&done.stdout), String::from_utf8_lossy(&done.stderr));
    Ok(Err(curl_reason(done.status.code(), &stdout, &stderr)))
}

/// Why curl failed, in words: its exit code for the common failures, else its own message.
pub fn curl_reason(code: Option<i32>, http_code: &str, stderr: &str) -> String {
    // curl prints one `curl: (N) message` line per attempt; the last one is final.
    let message = stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("curl: "))
        .map(|m| m.split_once(") ").map_or(m, |(_, text)| text).trim().to_string())
        .unwrap_or_default();
    let detail = |what: &str| {
        let lower = message.to_lowercase();
        if message.is_empty() {
            what.to_string()
        } else if lower.starts_with(what) {
            lower
        } else {
            format!("{what} ({message})")
        }
    };
    match code {
        Some(6) => detail("could not resolve host"),
        Some(7) => detail("could not connect"),
        Some(22) => format!("HTTP error {}", http_code.trim()),
        Some(28) => detail("timed out"),
        Some(18) => detail("the transfer ended early"),
        Some(35 | 60) => detail("TLS failure"),
        Some(5) => detail("could not resolve proxy"),
        Some(n) if !message.is_empty() => format!("{message} (curl exit status {n})"),
        Some(n) => format!("curl failed with exit status {n}"),
        None => "curl was killed by a signal".to_string(),
    }
}

/// Produces the file through `produce` at a temporary name beside `cached`, checks its sha256
/// and renames it into place; a file with the wrong checksum is deleted, never kept.
fn install(
    origin: &str,
    source: &Source,
    cached: &Path,
    produce: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let tmp = crate::host::fs::temp_path(cached);
    let result = produce(&tmp).and_then(|()| {
        let actual = sha256_file(&tmp)?;
        if actual != source.sha256 {
            return Err(Error::Checksum {
                path: origin.to_string(),
                expected: source.sha256.clone(),
                actual,
                removed: "",
            });
        }
        fs::rename(&tmp, cached).with_path("rename into", cached)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    fn setup(content: &[u8]) -> (tempfile::TempDir, Source, FetchOptions, Shell) {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("mirror");
        fs::create_dir(&mirror).unwrap();
        fs::write(mirror.join("thing-1.0.tar.bz2"), content).unwrap();
        let source = Source {
            url: "https://example.invalid/thing-1.0.tar.bz2".into(),
            mirrors: Vec::new(),
            file_name: "thing-1.0.tar.bz2".into(),
            sha256: sha256_bytes(b"good bytes"),
        };
        let opts = FetchOptions {
            cache_dir: dir.path().join("cache"),
            mirror: Some(mirror.display().to_string()),
            offline: true,
        };
        (dir, source, opts, Shell::new().unwrap())
    }

    #[test]
    fn mirror_file_with_the_right_checksum_lands_in_the_cache() {
        let (_dir, source, opts, sh) = setup(b"good bytes");
        let path = fetch(&sh, &source, &opts, &Silent).unwrap();
        assert_eq!(path, opts.cache_dir.join("thing-1.0.tar.bz2"));
        assert_eq!(fs::read(&path).unwrap(), b"good bytes");
        // A second fetch is served by the cache even with the mirror gone.
        let opts = FetchOptions { mirror: None, ..opts };
        assert_eq!(fetch(&sh, &source, &opts, &Silent).unwrap(), path);
    }

    #[test]
    fn wrong_checksum_names_both_hashes_and_keeps_nothing() {
        let (_dir, source, opts, sh) = setup(b"tampered bytes");
        let err = fetch(&sh, &source, &opts, &Silent).unwrap_err().to_string();
        assert!(err.contains(&source.sha256), "{err}");
        assert!(err.contains(&sha256_bytes(b"tampered bytes")), "{err}");
        assert_eq!(fs::read_dir(&opts.cache_dir).unwrap().count(), 0, "cache must stay empty");
    }

    #[test]
    fn corrupted_cache_entry_is_removed_and_reported() {
        let (_dir, source, opts, sh) = setup(b"good bytes");
        fs::create_dir_all(&opts.cache_dir).unwrap();
        let cached = opts.cache_dir.join("thing-1.0.tar.bz2");
        fs::write(&cached, b"truncated").unwrap();
        let err = fetch(&sh, &source, &opts, &Silent).unwrap_err().to_string();
        assert!(err.contains("removed from the cache"), "{err}");
        assert!(!cached.exists());
        // The next run recovers on its own, from the mirror.
        assert!(fetch(&sh, &source, &opts, &Silent).is_ok());
    }

    #[test]
    fn partial_files_of_dead_runs_are_removed_and_live_ones_kept() {
        let (_dir, source, opts, sh) = setup(b"good bytes");
        fs::create_dir_all(&opts.cache_dir).unwrap();
        // No process has pid 0x3fffffff (above the kernel's pid_max limit).
        let dead = opts.cache_dir.join(".thing-1.0.tar.bz2.tmp-1073741823");
        // Process 1 always exists: it stands for a concurrent run that is still downloading.
        let live = opts.cache_dir.join(".thing-1.0.tar.bz2.tmp-1");
        fs::write(&dead, b"half").unwrap();
        fs::write(&live, b"half").unwrap();
        fetch(&sh, &source, &opts, &Silent).unwrap();
        assert!(!dead.exists(), "a dead run's partial download must go");
        assert!(live.exists(), "a running download must be left alone");
    }

    #[test]
    fn missing_offline_says_where_it_looked_and_what_to_do() {
        let (_dir, source, mut opts, sh) = setup(b"good bytes");
        opts.mirror = None;
        let err = fetch(&sh, &source, &opts, &Silent).unwrap_err().to_string();
        assert!(err.contains("not available offline"), "{err}");
        assert!(err.contains("BUSYROOT_MIRROR") && err.contains(&source.sha256), "{err}");
    }

    fn uris(entries: &[(bool, AptRepository)]) -> Vec<&str> {
        entries.iter().map(|(_, repo)| repo.uri.as_str()).collect()
    }

    #[test]
    fn apt_sources_give_archive_urls_in_order() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://a.example/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: https://b.example/debian-security cdrom:/x\n\n\
                      Enabled: no\nURIs: http://off.example/debian\n";
        assert_eq!(
            uris(&deb822_entries(deb822)),
            ["http://a.example/debian", "https://b.example/debian-security"]
        );
        let list = "# deb http://commented.example/x bookworm main\n\
                    deb http://c.example/debian bookworm main\n\
                    deb-src [arch=amd64 signed-by=/k.gpg] https://d.example/ubuntu noble main\n\
                    deb file:/srv/local ./\n";
        let entries = one_line_entries(list);
        assert_eq!(uris(&entries), ["http://c.example/debian", "https://d.example/ubuntu"]);
        let source_only = AptRepository {
            uri: "https://d.example/ubuntu".into(),
            suites: vec!["noble".into()],
            components: vec!["main".into()],
            signed_by: Some("/k.gpg".into()),
        };
        assert_eq!(entries[1], (false, source_only));
        assert!(entries[0].0, "a `deb` line is a binary repository");
    }

    #[test]
    fn apt_sources_give_binary_repositories_with_suites_and_keyrings() {
        let deb822 =
            "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main contrib\nSigned-By: /usr/share/keyrings/k.gpg\n\n\
                      Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n";
        let entries = deb822_entries(deb822);
        assert_eq!(
            entries[0],
            (
                true,
                AptRepository {
                    uri: "http://a.example/debian".into(),
                    suites: vec!["bookworm".into(), "bookworm-updates".into()],
                    components: vec!["main".into(), "contrib".into()],
                    signed_by: Some("/usr/share/keyrings/k.gpg".into()),
                }
            )
        );
        assert_eq!(uris(&entries[1..]), ["http://src.example/debian"]);
        assert!(!entries[1].0, "a `deb-src` stanza is no binary repository");
    }

    #[test]
    fn mirrors_expand_once_per_apt_archive_and_drop_without_one() {
        let mirrors = vec![
            "{apt-archive}/pool/main/b/busybox/busybox_1.37.0.orig.tar.bz2".to_string(),
            "https://fallback.example/debian/pool/x.tar.bz2".to_string(),
        ];
        let archives = vec!["http://a.example/debian/".to_string(), "http://b.example/d".into()];
        assert_eq!(
            expand_mirrors(&mirrors, &archives),
            [
                "http://a.example/debian/pool/main/b/busybox/busybox_1.37.0.orig.tar.bz2",
                "http://b.example/d/pool/main/b/busybox/busybox_1.37.0.orig.tar.bz2",
                "https://fallback.example/debian/pool/x.tar.bz2",
            ]
        );
        assert_eq!(
            expand_mirrors(&mirrors, &[]),
            ["https://fallback.example/debian/pool/x.tar.bz2"]
        );
    }

    #[test]
    fn curl_failures_are_described_in_words() {
        let dns = "curl: (6) Could not resolve host: busybox.net\n".repeat(4);
        assert_eq!(curl_reason(Some(6), "000", &dns), "could not resolve host: busybox.net");
        let http = "curl: (22) The requested URL returned error: 404\n";
        assert_eq!(curl_reason(Some(22), "404", http), "HTTP error 404");
        assert!(curl_reason(Some(7), "000", "").starts_with("could not connect"));
        assert_eq!(curl_reason(Some(99), "", "curl: (99) odd\n"), "odd (curl exit status 99)");
    }
}
