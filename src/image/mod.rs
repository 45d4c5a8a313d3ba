//! Image writers: each renders a [`Manifest`] into one output file.
//!
//! Invariant: a writer reads nothing but the manifest (and the host files its entries point
//! to), and publishes its output by renaming a finished temporary file into place, so a failed
//! or interrupted run leaves the previous output untouched.

pub mod cpio;
pub mod ext4;
pub mod tar;

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::tree::manifest::Manifest;

/// An output format. Adding one is a writer module here plus an arm in each match below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// An ext4 file system image ([`ext4`]).
    Ext4,
    /// A gzip-compressed newc initramfs ([`cpio`]).
    CpioGz,
    /// A tar archive ([`tar`]).
    Tar,
}

impl Format {
    /// Every format, in the order they are written and reported.
    pub const ALL: [Format; 3] = [Format::Ext4, Format::CpioGz, Format::Tar];

    /// The output's file name, which is also its stage name: `rootfs.ext4`, ….
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Ext4 => "rootfs.ext4",
            Format::CpioGz => "rootfs.cpio.gz",
            Format::Tar => "rootfs.tar",
        }
    }

    /// Writes `manifest` to `out` in this format; `ext4` holds the settings only the ext4
    /// writer uses.
    pub fn write(
        self,
        sh: &xshell::Shell,
        manifest: &Manifest,
        out: &Path,
        ext4: &ext4::Ext4Options,
    ) -> Result<()> {
        match self {
            Format::Ext4 => ext4::write(sh, manifest, out, ext4),
            Format::CpioGz => cpio::write(manifest, out),
            Format::Tar => tar::write(manifest, out),
        }
    }

    /// Whether the image settings are an input of this format besides the manifest.
    pub fn uses_settings(self) -> bool {
        match self {
            Format::Ext4 => true,
            Format::CpioGz | Format::Tar => false,
        }
    }
}

/// Opens a host file that a manifest entry refers to.
pub(crate) fn open_source(path: &Path) -> Result<fs::File> {
    fs::File::open(path).map_err(|e| Error::io("read", path, e))
}
