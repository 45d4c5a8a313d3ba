//! `[[workspace.metadata.busyroot.matrix]]`: the cells `cargo xtask matrix` boots, and the
//! root medium a cell (or a LAVA job) boots.

use std::path::PathBuf;

use serde::Deserialize;

use crate::arch::Arch;
use crate::image::Format;

/// One `[[matrix]]` table of `[workspace.metadata.busyroot]`: a VM to boot and what to run in
/// it. Paths are relative to the workspace root.
///
/// ```toml
/// [[workspace.metadata.busyroot.matrix]]
/// arch = "aarch64"
/// root = "initramfs"
///
/// [[workspace.metadata.busyroot.matrix]]
/// name = "cloud-kernel-disk"
/// kernel = "/boot/vmlinuz"
/// command = ["/bin/sh", "-c", "test -e /proc/cpuinfo"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MatrixCell {
    /// The cell's name in reports and shard listings: letters, digits, `.`, `_` and `-`,
    /// unique in the matrix. Default: `<arch>-<root>`, then the VMM when `vmm` is given, then
    /// the kernel's file name when
    /// `kernel` is given, then the program's file name when `command` is given
    /// (`x86_64-disk`, `x86_64-disk-vmlinuz-sh`).
    #[serde(default)]
    pub name: Option<String>,
    /// Guest architecture. Default: the configured `arch`, else the host's.
    #[serde(default)]
    pub arch: Option<Arch>,
    /// Kernel image to boot. Default: the newer of the one `cargo xtask kernel` built for
    /// `arch` (`target/busyroot/<arch>/kernel/…`) and the one it fetched (`--distro`).
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Root file system: `"disk"` (`rootfs.ext4`) or `"initramfs"` (`rootfs.cpio.gz`).
    /// Default: `"disk"`.
    #[serde(default)]
    pub root: Medium,
    /// The payload: a program and its arguments, run as root in the guest; the cell passes
    /// when it exits 0. Default: none, and the cell runs the standard checks (with
    /// `run.hostname`, `run.checks` and `run.checks-file`) instead.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The VMM: `"qemu"`, another of busyroot's own, or one configured under
    /// `run.vmm.<name>`. Default: `"qemu"`.
    #[serde(default)]
    pub vmm: Option<String>,
}

/// The root medium a cell boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Medium {
    /// `rootfs.ext4` as the root disk (the guest writes to a copy).
    #[default]
    Disk,
    /// `rootfs.cpio.gz` as the initramfs.
    Initramfs,
}

impl Medium {
    /// Both media, in the order the default matrix uses.
    pub const ALL: [Medium; 2] = [Medium::Disk, Medium::Initramfs];

    /// `disk` or `initramfs`.
    pub fn name(self) -> &'static str {
        match self {
            Medium::Disk => "disk",
            Medium::Initramfs => "initramfs",
        }
    }

    /// The output format this medium boots.
    pub fn format(self) -> Format {
        match self {
            Medium::Disk => Format::Ext4,
            Medium::Initramfs => Format::CpioGz,
        }
    }
}

display_as_name!(Medium);
