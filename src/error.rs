//! The library's error type: every variant names the path, key or command involved and what to do.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building or booting a root filesystem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system operation failed.
    #[error("failed to {action} `{path}`: {source}")]
    Io {
        /// What was being done, e.g. "read", "create directory".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A downloaded or supplied file does not have the pinned checksum.
    #[error(
        "checksum mismatch for `{path}`: expected sha256 {expected}, got {actual}; \
         the file was not used{removed}"
    )]
    Checksum {
        /// The offending file (or URL).
        path: String,
        /// The pinned sha256.
        expected: String,
        /// The sha256 of what was found.
        actual: String,
        /// ", and was removed" when a cached copy was deleted.
        removed: &'static str,
    },
    /// A source tarball could not be found or downloaded.
    #[error("{0}")]
    Fetch(String),
    /// The pinned kernel release could not be fetched. A distribution's kernel source is not
    /// kernel.org's bytes, so it is never substituted silently: the message names the one
    /// installed under `/usr/src` (`local_source`), or the package that provides one.
    #[error("{message}\n{}", kernel_source_hint(.local_source.as_deref()))]
    KernelFetch {
        /// Why the fetch failed, with every source tried.
        message: String,
        /// A kernel source tarball installed by the distribution, if there is one.
        local_source: Option<PathBuf>,
    },
    /// A configuration key is unknown, of the wrong type or has an invalid value.
    #[error("invalid configuration in `{path}`: {message}")]
    Config {
        /// The file holding the configuration.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A line of the device table is malformed or refers to something impossible.
    #[error("`{path}` line {line}: {message}")]
    DeviceTable {
        /// The table file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// Something in the skeleton or install tree cannot be put into an image.
    #[error("`{path}`: {message}")]
    Tree {
        /// The host path of the offending entry.
        path: PathBuf,
        /// Why it cannot go into the image.
        message: String,
    },
    /// An external program failed.
    #[error("command failed: `{command}`{status}\n{details}")]
    Command {
        /// The command line, as printed before it ran.
        command: String,
        /// ": exit status N" or similar.
        status: String,
        /// Log path, last lines of output and a hint.
        details: String,
    },
    /// Host programs the run needs are not installed.
    #[error("{0}")]
    MissingTools(MissingTools),
    /// The image is too small for its content.
    #[error(
        "the content needs a {needed_mib} MiB image but `image.size` is {size_mib} MiB; \
         set `image.size` to at least {needed_mib} MiB or to \"auto\""
    )]
    ImageTooSmall {
        /// Smallest size that fits, rounded up to MiB.
        needed_mib: u64,
        /// The configured size in MiB.
        size_mib: u64,
    },
    /// No target architecture was named and the host's is not one busyroot builds for.
    #[error(
        "the host architecture `{host}` is not supported; name the target architecture \
         (x86_64, aarch64 or riscv64)"
    )]
    UnsupportedHost {
        /// The host's architecture, as Rust names it.
        host: &'static str,
    },
    /// A VMM that runs guests only with KVM was asked to run one without it.
    #[error(
        "{vmm} runs guests only with KVM, which is not used here ({why}); boot with QEMU \
         instead, or on a host with a usable /dev/kvm"
    )]
    NeedsKvm {
        /// The VMM's name.
        vmm: String,
        /// Why KVM is not used.
        why: String,
    },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

/// One program, library or header a run needs that is not installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTool {
    /// What is missing and what for, e.g. "mke2fs (writing rootfs.ext4)".
    pub what: String,
    /// The Debian/Ubuntu package that provides it.
    pub package: String,
}

/// Everything missing on the host, collected so that one error lists it all with one install
/// command. Rendered only by its `Display`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MissingTools(pub Vec<MissingTool>);

impl MissingTools {
    /// Adds `what`, provided by `package`.
    pub fn push(&mut self, what: impl Into<String>, package: impl Into<String>) {
        self.0.push(MissingTool { what: what.into(), package: package.into() });
    }

    /// Adds everything `other` lists.
    pub fn extend(&mut self, other: MissingTools) {
        self.0.extend(other.0);
    }

    /// The packages to install, sorted, each once.
    pub fn packages(&self) -> Vec<&str> {
        let mut packages: Vec<&str> = self.0.iter().map(|m| m.package.as_str()).collect();
        packages.sort_unstable();
        packages.dedup();
        packages
    }

    /// `Ok` when nothing is missing, else the error listing it.
    pub fn into_result(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::MissingTools(self))
        }
    }
}

impl std::fmt::Display for MissingTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "missing host programs:")?;
        for m in &self.0 {
            writeln!(f, "  {}, package {}", m.what, m.package)?;
        }
        write!(f, "install them all with:\n  sudo apt-get install {}", self.packages().join(" "))
    }
}

impl Error {
    /// Wraps an I/O error with the action and path it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { action, path: path.into(), source }
    }
}

fn kernel_source_hint(local: Option<&std::path::Path>) -> String {
    match local {
        Some(path) => format!(
            "a distribution's kernel source is installed at `{}`; it is not the pinned \
             release (distributions repack it), but it builds: set `kernel.source` to it",
            path.display()
        ),
        None => "or build a distribution's kernel source instead: the `linux-source` package \
                 (`linux-source-6.1` on Debian 12) installs one as \
                 /usr/src/linux-source-<version>.tar.xz; set `kernel.source` to it"
            .to_string(),
    }
}

/// Adds the action and path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn with_path(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn with_path(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
