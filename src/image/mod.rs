//! Image writers: each renders a [`Manifest`] into one output file.
//!
//! Invariant: a writer reads nothing but the manifest (and the host files its entries point
//! to), and publishes its output by renaming a finished temporary file into place, so a failed
//! or interrupted run leaves the previous output untouched.

pub mod cpio;
pub mod ext4;
pub mod tar;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
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

/// Copies the content of a [`Kind::File`] entry from `source` to `w`, failing if the host
/// file no longer has the `size` recorded in the manifest: the header announcing that size
/// is already written (for ext4, the image was sized by it), so any other length would
/// corrupt the image. Write errors name `out`.
pub(crate) fn copy_file_content(
    source: &Path,
    size: u64,
    w: &mut impl Write,
    out: &Path,
) -> Result<()> {
    let changed = |found: String| Error::Tree {
        path: source.to_path_buf(),
        message: format!(
            "changed while the image was written: the manifest recorded {size} bytes, the file \
             now has {found}; run the build again"
        ),
    };
    let mut file = open_source(source)?;
    let mut buf = vec![0; 64 * 1024];
    let mut left = size;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", source, e)),
        };
        if n as u64 > left {
            return Err(changed("more".to_string()));
        }
        w.write_all(&buf[..n]).with_path("write", out)?;
        left -= n as u64;
    }
    if left > 0 {
        return Err(changed((size - left).to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::cpio::{fixtures, tests as newc};
    use super::tar::tests as tar;
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The archives of a random manifest read back as it, and come out the same twice.
        #[test]
        fn random_manifests_round_trip(nodes in fixtures::nodes()) {
            let dir = tempfile::tempdir().unwrap();
            let manifest = fixtures::build(&nodes, dir.path());
            let (cpio, tar) = (newc::uncompressed(&manifest), tar::in_memory(&manifest));
            prop_assert_eq!(newc::parse_newc(&cpio), fixtures::expected(&manifest));
            prop_assert_eq!(tar::read_back(&tar), fixtures::expected(&manifest));
            prop_assert_eq!((cpio, tar), (newc::uncompressed(&manifest), tar::in_memory(&manifest)));
        }
    }

    /// Every format: the host's modes and times of a source file never reach the output, and
    /// a source whose size changed since the manifest recorded it is refused, with nothing
    /// written.
    #[test]
    fn every_format_ignores_host_metadata_and_refuses_a_file_that_changed_size() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = cpio::fixtures::every_kind(dir.path());
        let source = dir.path().join("hello-source");
        let sh = xshell::Shell::new().unwrap();
        let opts = ext4::Ext4Options {
            size: ext4::ImageSize::Bytes(16 << 20),
            label: "rootfs".into(),
            uuid: "6b1f6e47-3e1c-4b8e-9a55-0d3c3b2f1a10".into(),
            hash_seed: "0f6d9c59-8e0a-4c47-b2b9-1f0f4f7b7c21".into(),
            // Not 0: e2fsprogs takes E2FSPROGS_FAKE_TIME=0 for "unset" and stamps the clock,
            // so two writes a second apart would differ for a reason this test is not about.
            timestamp: 1_700_000_000,
        };
        for format in Format::ALL {
            if format == Format::Ext4 && crate::host::tools::find_program("mke2fs").is_none() {
                crate::testing::skip("the ext4 half", "e2fsprogs is not installed");
                continue;
            }
            let out = dir.path().join(format.file_name());
            let write = || format.write(&sh, &manifest, &out, &opts).map(|()| fs::read(&out));
            fs::write(&source, "hello from the host\n").unwrap();
            let first = write().unwrap().unwrap();
            cpio::fixtures::set_host_metadata(&source, 0o755, 2_000_000);
            assert!(write().unwrap().unwrap() == first, "{format:?} depends on host metadata");
            fs::remove_file(&out).unwrap();
            for content in ["hello", "hello from the host, now longer\n"] {
                fs::write(&source, content).unwrap();
                let err = write().unwrap_err().to_string();
                assert!(err.contains(&format!("`{}`", source.display())), "{format:?}: {err}");
                assert!(err.contains("changed while the image was written"), "{err}");
                assert!(!out.exists(), "{format:?} left {}", out.display());
            }
        }
    }
}
