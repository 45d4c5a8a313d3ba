//! Which kernel to boot, and a quick look at whether a file can be one.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::arch::Arch;
use crate::error::{Error, Result};

/// Where the chosen kernel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSource {
    /// `--kernel PATH`.
    Flag,
    /// `$BUSYROOT_KERNEL`.
    Env,
    /// `kernel` in the run configuration.
    Config,
    /// The kernel `cargo xtask kernel` builds.
    Built,
}

impl fmt::Display for KernelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelSource::Flag => "--kernel",
            KernelSource::Env => "$BUSYROOT_KERNEL",
            KernelSource::Config => "config `kernel`",
            KernelSource::Built => "built by `cargo xtask kernel`",
        })
    }
}

/// The kernel to boot and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelChoice {
    /// The kernel image.
    pub path: PathBuf,
    /// Which setting named it.
    pub source: KernelSource,
}

/// Picks the kernel: `flag` > `env` (`$BUSYROOT_KERNEL`) > `config` > `built` if that file
/// exists. A named kernel that does not exist is an error rather than a reason to fall
/// through, so a typo is not silently replaced by another kernel.
pub fn select_kernel(
    flag: Option<&Path>,
    env: Option<&OsStr>,
    config: Option<&Path>,
    built: &Path,
) -> Result<KernelChoice> {
    let named = flag
        .map(|p| (p.to_path_buf(), KernelSource::Flag))
        .or_else(|| env.filter(|v| !v.is_empty()).map(|v| (PathBuf::from(v), KernelSource::Env)))
        .or_else(|| config.map(|p| (p.to_path_buf(), KernelSource::Config)));
    if let Some((path, source)) = named {
        if !path.is_file() {
            return Err(Error::Other(format!(
                "kernel image `{}` (from {source}) does not exist or is not a file",
                path.display()
            )));
        }
        return Ok(KernelChoice { path, source });
    }
    if built.is_file() {
        return Ok(KernelChoice { path: built.to_path_buf(), source: KernelSource::Built });
    }
    Err(Error::Other(format!(
        "no kernel to boot; pass --kernel PATH, set $BUSYROOT_KERNEL, set `kernel` in \
         [workspace.metadata.busyroot.run], or build one with `cargo xtask kernel` \
         (it would be at `{}`); a distribution kernel works too, e.g. Debian's \
         linux-image-cloud-amd64 unpacked with `dpkg-deb -x`",
        built.display()
    )))
}

/// The kernel image formats busyroot recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageFormat {
    /// x86 boot protocol image (`HdrS` at 0x202).
    BzImage,
    /// An ELF file (vmlinux).
    Elf,
    /// A Multiboot kernel.
    Multiboot,
    /// arm64 `Image` (`ARM\x64` at 0x38).
    Arm64Image,
    /// RISC-V `Image` (`RSC\x05` at 0x38).
    RiscvImage,
    /// A PE/COFF (EFI stub or EFI zboot) image.
    Pe,
    /// A gzip-compressed image.
    Gzip,
    /// None of the above.
    Unknown,
}

fn at(data: &[u8], offset: usize, magic: &[u8]) -> bool {
    data.get(offset..offset + magic.len()) == Some(magic)
}

/// Recognises a kernel image from its first bytes (8 KiB is enough for every format).
pub(crate) fn sniff(head: &[u8]) -> ImageFormat {
    if at(head, 0x202, b"HdrS") {
        ImageFormat::BzImage
    } else if at(head, 0x38, b"ARM\x64") {
        ImageFormat::Arm64Image
    } else if at(head, 0x38, b"RSC\x05") {
        ImageFormat::RiscvImage
    } else if at(head, 0, b"\x7fELF") {
        ImageFormat::Elf
    } else if at(head, 0, b"MZ") {
        ImageFormat::Pe
    } else if at(head, 0, b"\x1f\x8b") {
        ImageFormat::Gzip
    } else if head.chunks_exact(4).take(8192 / 4).any(|w| w == 0x1bad_b002u32.to_le_bytes()) {
        ImageFormat::Multiboot
    } else {
        ImageFormat::Unknown
    }
}

/// What a look at the kernel file says before booting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KernelVerdict {
    /// A format the VMM boots for this arch.
    Fine,
    /// Unrecognised, but the arch has formats busyroot does not know; boot and see.
    Doubtful(String),
    /// Certainly not bootable: QEMU would load it and hang.
    Bad(String),
}

/// Looks at the head of `path` and says whether it can be a kernel for `arch`.
pub(crate) fn inspect(path: &Path, arch: Arch) -> Result<KernelVerdict> {
    let mut head = Vec::with_capacity(8192);
    std::fs::File::open(path)
        .and_then(|f| f.take(8192).read_to_end(&mut head))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(verdict(sniff(&head), arch, path))
}

fn verdict(format: ImageFormat, arch: Arch, path: &Path) -> KernelVerdict {
    use ImageFormat::*;
    let ok = match arch {
        Arch::X86_64 => matches!(format, BzImage | Elf | Multiboot),
        Arch::Aarch64 => matches!(format, Arm64Image | Elf | Pe | Gzip),
        Arch::Riscv64 => matches!(format, RiscvImage | Elf | Pe | Gzip),
    };
    if ok {
        return KernelVerdict::Fine;
    }
    let wanted = match arch {
        Arch::X86_64 => "a bzImage (`HdrS` header at 0x202), an ELF vmlinux or a Multiboot kernel",
        Arch::Aarch64 => "an arm64 Image (`ARM\\x64` at 0x38), a gzip-compressed Image, EFI or ELF",
        Arch::Riscv64 => "a RISC-V Image (`RSC\\x05` at 0x38), a gzip-compressed Image, EFI or ELF",
    };
    let message = format!(
        "`{}` is not a kernel image for {arch}: expected {wanted}; pass the image the kernel \
         build produced ({}) or a distribution's /boot/vmlinuz-*",
        path.display(),
        arch.info().kernel_image
    );
    if arch == Arch::X86_64 {
        KernelVerdict::Bad(message)
    } else {
        KernelVerdict::Doubtful(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b, c, built] = ["a", "b", "c", "built"].map(|n| {
            let p = dir.path().join(n);
            std::fs::write(&p, "k").unwrap();
            p
        });
        let pick = |flag: Option<&Path>, env: Option<&Path>, config: Option<&Path>| {
            select_kernel(flag, env.map(Path::as_os_str), config, &built).unwrap()
        };
        assert_eq!(pick(Some(&a), Some(&b), Some(&c)).source, KernelSource::Flag);
        assert_eq!(pick(None, Some(&b), Some(&c)).path, b);
        assert_eq!(pick(None, None, Some(&c)).source, KernelSource::Config);
        assert_eq!(pick(None, None, None).source, KernelSource::Built);
        // An empty variable counts as unset.
        let empty = select_kernel(None, Some(OsStr::new("")), None, &built).unwrap();
        assert_eq!(empty.source, KernelSource::Built);

        let missing = dir.path().join("missing");
        let err = select_kernel(Some(&missing), None, None, &built).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("--kernel"), "{err}");
        let err = select_kernel(None, None, None, &missing).unwrap_err().to_string();
        assert!(err.contains("$BUSYROOT_KERNEL") && err.contains("cargo xtask kernel"), "{err}");
    }

    #[test]
    fn sniffs_formats() {
        let mut bz = vec![0u8; 1024];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(sniff(&bz), ImageFormat::BzImage);
        let mut arm = vec![0u8; 128];
        arm[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert_eq!(sniff(&arm), ImageFormat::Arm64Image);
        assert_eq!(sniff(b"\x7fELF\x02\x01"), ImageFormat::Elf);
        let mut mb = vec![0u8; 4096];
        mb[64..68].copy_from_slice(&0x1bad_b002u32.to_le_bytes());
        assert_eq!(sniff(&mb), ImageFormat::Multiboot);
        assert_eq!(sniff(&[0x55; 4096]), ImageFormat::Unknown);

        let p = Path::new("k");
        assert_eq!(verdict(ImageFormat::BzImage, Arch::X86_64, p), KernelVerdict::Fine);
        assert!(
            matches!(verdict(ImageFormat::Unknown, Arch::X86_64, p), KernelVerdict::Bad(m) if m.contains("bzImage"))
        );
        assert!(matches!(
            verdict(ImageFormat::Unknown, Arch::Aarch64, p),
            KernelVerdict::Doubtful(_)
        ));
    }
}
