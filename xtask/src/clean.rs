//! `cargo xtask clean`: remove what busyroot built under target/busyroot/ (one architecture's
//! directory with --arch), and the download cache too with --all.

use std::path::{Path, PathBuf};

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::context::Layout;
use busyroot::host::fetch::FetchOptions;

/// Flags of `cargo xtask clean`.
#[derive(clap::Args, Debug)]
pub struct CleanArgs {
    /// Remove only this architecture's outputs (target/busyroot/<arch>/): x86_64 (or amd64),
    /// aarch64 (or arm64) or riscv64 [default: everything under target/busyroot/]
    #[arg(long)]
    pub arch: Option<Arch>,
    /// Also empty the download cache shared by every checkout ($BUSYROOT_CACHE, else
    /// ~/.cache/busyroot: the BusyBox tarball, kernel sources and packages, apt indexes)
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: CleanArgs) -> anyhow::Result<()> {
    let ws = crate::rootfs::workspace()?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    match args.arch {
        Some(arch) => dirs.push(Layout::new(&ws, arch).dir().to_path_buf()),
        None => dirs.push(Layout::root(&ws.target_dir)),
    }
    if args.all {
        dirs.push(FetchOptions::from_env().cache_dir);
    }
    for dir in dirs {
        if !dir.exists() {
            println!("nothing at  {}", dir.display());
            continue;
        }
        let bytes = size(&dir);
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove `{}`", dir.display()))?;
        println!("removed     {}  ({} MiB)", dir.display(), bytes >> 20);
    }
    Ok(())
}

/// The bytes of the regular files under `dir`, symbolic links not followed.
fn size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
