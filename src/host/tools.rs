//! Host programs: find them (also in /usr/sbin and /sbin, where e2fsprogs lives but an
//! unprivileged user's `PATH` may not reach) and report every missing one at once.

use std::path::{Path, PathBuf};

use crate::error::{Error, MissingTools, Result};

/// A program the run needs and the Debian/Ubuntu package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// Program name as run.
    pub program: &'static str,
    /// What it is needed for, shown when it is missing.
    pub purpose: &'static str,
    /// Debian/Ubuntu package.
    pub package: &'static str,
}

/// The programs a rootfs build runs (the C compiler is checked by [`crate::pipeline::busybox::Toolchain`]).
pub const ROOTFS_TOOLS: &[Tool] = &[
    Tool { program: "make", purpose: "building BusyBox", package: "make" },
    Tool { program: "mke2fs", purpose: "writing rootfs.ext4", package: "e2fsprogs" },
    Tool { program: "debugfs", purpose: "setting owners and device nodes", package: "e2fsprogs" },
    Tool { program: "e2fsck", purpose: "checking rootfs.ext4", package: "e2fsprogs" },
];

/// Directories searched after `PATH`.
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// The full path of `program`, looked up in `PATH` and then the sbin directories.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return is_executable(Path::new(program)).then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Like [`find_program`], but a missing program is an error naming its package.
pub fn require(tool: &Tool) -> Result<PathBuf> {
    find_program(tool.program).ok_or_else(|| missing(&[tool]))
}

/// Checks that every tool is installed; otherwise one error lists them all, with the command
/// that installs every missing package.
pub fn check(tools: &[Tool]) -> Result<()> {
    let missing_tools: Vec<&Tool> =
        tools.iter().filter(|t| find_program(t.program).is_none()).collect();
    if missing_tools.is_empty() {
        Ok(())
    } else {
        Err(missing(&missing_tools))
    }
}

fn missing(tools: &[&Tool]) -> Error {
    let mut missing = MissingTools::default();
    for t in tools {
        missing.push(format!("{} ({})", t.program, t.purpose), t.package);
    }
    Error::MissingTools(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_reported_together_with_one_install_command() {
        let tools = [
            Tool { program: "busyroot-no-such-a", purpose: "a", package: "pkg-a" },
            Tool { program: "sh", purpose: "shell", package: "dash" },
            Tool { program: "busyroot-no-such-b", purpose: "b", package: "pkg-b" },
        ];
        let err = check(&tools).unwrap_err().to_string();
        assert!(err.contains("busyroot-no-such-a (a), package pkg-a"), "{err}");
        assert!(err.contains("busyroot-no-such-b"), "{err}");
        assert!(!err.contains("dash"), "{err}");
        assert!(err.contains("sudo apt-get install pkg-a pkg-b"), "{err}");
    }

    #[test]
    fn sbin_programs_are_found_without_sbin_in_path() {
        if !Path::new("/usr/sbin/mke2fs").exists() && !Path::new("/sbin/mke2fs").exists() {
            crate::testing::skip("sbin_programs_are_found_without_sbin_in_path", "no e2fsprogs");
            return;
        }
        assert!(find_program("mke2fs").is_some());
    }
}
