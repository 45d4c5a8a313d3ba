//! What a command resolves once and passes down. For now: the file times of reproducible
//! outputs (`SOURCE_DATE_EPOCH`), shared by the rootfs and kernel builders.

use std::path::Path;

use xshell::Shell;

/// Used for file times when neither `SOURCE_DATE_EPOCH` nor a git commit gives one:
/// 2000-01-01T00:00:00Z.
pub const FALLBACK_EPOCH: u64 = 946_684_800;

/// `SOURCE_DATE_EPOCH`, else the date of the workspace's last git commit, else
/// [`FALLBACK_EPOCH`].
pub fn source_date_epoch(sh: &Shell, root: &Path) -> u64 {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()) {
        return e;
    }
    let _dir = sh.push_dir(root);
    xshell::cmd!(sh, "git log -1 --format=%ct")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(FALLBACK_EPOCH)
}
