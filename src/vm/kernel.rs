//! Which kernel to boot, and a quick look at whether a file can be one.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::arch::{Arch, KernelFormat};
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
    /// The distribution kernel `cargo xtask kernel --distro` fetched.
    Fetched,
}

impl fmt::Display for KernelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelSource::Flag => "--kernel",
            KernelSource::Env => "$BUSYROOT_KERNEL",
            KernelSource::Config => "config `kernel`",
            KernelSource::Built => "built by `cargo xtask kernel`",
            KernelSource::Fetched => "fetched by `cargo xtask kernel --distro`",
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

/// Picks the kernel: `flag` > `env` (`$BUSYROOT_KERNEL`) > `config` > the newer of `built`
/// and `fetched` (a distribution's kernel in the layout) of those that exist. A named kernel that does not exist is an error rather than a reason to fall
/// through, so a typo is not silently replaced by another kernel.
pub fn select_kernel(
    arch: Arch,
    flag: Option<&Path>,
    env: Option<&OsStr>,
    config: Option<&Path>,
    built: &Path,
    fetched: Option<&Path>,
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
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest = [(built, KernelSource::Built)]
        .into_iter()
        .chain(fetched.map(|f| (f, KernelSource::Fetched)))
        .filter(|(p, _)| p.is_file())
        .max_by_key(|(p, _)| modified(p));
    if let Some((path, source)) = newest {
        return Ok(KernelChoice { path: path.to_path_buf(), source });
    }
    let fetch = match arch.info().debian_cloud_flavour {
        Some(flavour) => format!(
            "fetch Debian's {flavour} kernel in seconds with `cargo xtask kernel --distro \
             debian` ({})",
            arch.info().distro_kernel_package
        ),
        None => format!("Debian builds no cloud kernel for {arch}"),
    };
    Err(Error::Other(format!(
        "no kernel to boot; {fetch}, or build one with `cargo xtask kernel` (it would be at \
         `{}`), or pass --kernel PATH, set $BUSYROOT_KERNEL or set `kernel` in \
         [workspace.metadata.busyroot.run]",
        built.display(),
    )))
}

fn at(data: &[u8], offset: usize, magic: &[u8]) -> bool {
    data.get(offset..offset + magic.len()) == Some(magic)
}

/// Recognises a kernel image from its first bytes (8 KiB is enough for every format).
pub(crate) fn sniff(head: &[u8]) -> Option<KernelFormat> {
    Some(if at(head, 0x202, b"HdrS") {
        KernelFormat::BzImage
    } else if at(head, 0x38, b"ARM\x64") {
        KernelFormat::Arm64Image
    } else if at(head, 0x38, b"RSC\x05") {
        KernelFormat::RiscvImage
    } else if at(head, 0, b"\x7fELF") {
        KernelFormat::Elf
    } else if at(head, 0, b"MZ") {
        KernelFormat::Pe
    } else if at(head, 0, b"\x1f\x8b") {
        KernelFormat::Gzip
    } else if head.chunks_exact(4).take(8192 / 4).any(|w| w == 0x1bad_b002u32.to_le_bytes()) {
        KernelFormat::Multiboot
    } else {
        return None;
    })
}

/// What a look at the kernel file says before booting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KernelVerdict {
    /// A format the VMM boots for this arch.
    Fine,
    /// Unrecognised, but the arch has formats busyroot does not know; boot and see.
    Doubtful(String),
    /// Certainly not bootable: QEMU would refuse it, or load it and hang.
    Bad(String),
}

/// Looks at the head of `path` and says whether it can be a kernel for `arch`.
pub(crate) fn inspect(path: &Path, arch: Arch, formats: &[KernelFormat]) -> Result<KernelVerdict> {
    let mut head = Vec::with_capacity(8192);
    std::fs::File::open(path)
        .and_then(|f| f.take(8192).read_to_end(&mut head))
        .map_err(|e| Error::io("read", path, e))?;
    Ok(verdict(sniff(&head), crate::host::elf::machine(&head), arch, formats, path))
}

/// The verdict on a file of `format` (and, for ELF, `machine`) as a kernel for `arch`.
fn verdict(
    format: Option<KernelFormat>,
    machine: Option<u16>,
    arch: Arch,
    formats: &[KernelFormat],
    path: &Path,
) -> KernelVerdict {
    let info = arch.info();
    let wrong_elf = format == Some(KernelFormat::Elf)
        && machine.is_some_and(|m| m != info.elf_machine)
        // Some arches boot a 32-bit ELF kernel too; only a known other arch is certain.
        && Arch::ALL.iter().any(|a| Some(a.info().elf_machine) == machine);
    if format.is_some_and(|f| formats.contains(&f)) && !wrong_elf {
        return KernelVerdict::Fine;
    }
    let names: Vec<&str> = formats.iter().map(|f| f.description()).collect();
    let found = match (format, machine) {
        _ if wrong_elf => {
            let other = Arch::ALL.into_iter().find(|a| Some(a.info().elf_machine) == machine);
            format!("an ELF file for {}", other.map_or("another architecture", Arch::name))
        }
        (Some(f), _) => f.description().to_string(),
        (None, _) => "not a format busyroot recognises".to_string(),
    };
    let message = format!(
        "`{}` is not a kernel image for {arch} ({found}): expected {}; pass the image the \
         kernel build produced ({}) or a distribution's /boot/vmlinuz-*",
        path.display(),
        names.join(", "),
        info.kernel_image
    );
    // A recognised format of another arch is certainly wrong; an unknown one only where
    // busyroot knows every format QEMU boots.
    if format.is_some() || info.kernel_formats_exhaustive {
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
            select_kernel(Arch::X86_64, flag, env.map(Path::as_os_str), config, &built, None)
                .unwrap()
        };
        assert_eq!(pick(Some(&a), Some(&b), Some(&c)).source, KernelSource::Flag);
        assert_eq!(pick(None, Some(&b), Some(&c)).path, b);
        assert_eq!(pick(None, None, Some(&c)).source, KernelSource::Config);
        assert_eq!(pick(None, None, None).source, KernelSource::Built);
        // An empty variable counts as unset.
        let empty =
            select_kernel(Arch::X86_64, None, Some(OsStr::new("")), None, &built, None).unwrap();
        assert_eq!(empty.source, KernelSource::Built);

        // Of a built and a fetched kernel, the newer one boots; either alone is taken.
        let fetched = dir.path().join("vmlinuz-6.1.0-41-cloud-amd64");
        std::fs::write(&fetched, "k").unwrap();
        let touch = |p: &Path, secs: u64| {
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::options().write(true).open(p).unwrap().set_modified(when).unwrap();
        };
        touch(&built, 1000);
        touch(&fetched, 2000);
        let newest = |built: &Path| {
            select_kernel(Arch::X86_64, None, None, None, built, Some(&fetched)).unwrap()
        };
        assert_eq!(newest(&built).source, KernelSource::Fetched);
        touch(&built, 3000);
        assert_eq!(newest(&built).source, KernelSource::Built);
        assert_eq!(newest(&dir.path().join("none")).path, fetched);

        let missing = dir.path().join("missing");
        let err = select_kernel(Arch::X86_64, Some(&missing), None, None, &built, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing") && err.contains("--kernel"), "{err}");
        let none = |arch| select_kernel(arch, None, None, None, &missing, None).unwrap_err();
        let err = none(Arch::X86_64).to_string();
        assert!(err.contains("$BUSYROOT_KERNEL") && err.contains("cargo xtask kernel"), "{err}");
        assert!(
            err.contains("linux-image-cloud-amd64") && err.contains("--distro debian"),
            "{err}"
        );
        let err = none(Arch::Aarch64).to_string();
        assert!(err.contains("linux-image-cloud-arm64") && !err.contains("amd64"), "{err}");
        let err = none(Arch::Riscv64).to_string();
        assert!(err.contains("no cloud kernel for riscv64") && !err.contains("--distro"), "{err}");
    }

    #[test]
    fn sniffs_formats() {
        assert_eq!(sniff(b"\x7fELF\x02\x01"), Some(KernelFormat::Elf));
        assert_eq!(crate::host::elf::machine(b"\x7fELF\x02\x01"), None, "too short for e_machine");
        assert_eq!(crate::host::elf::machine(&elf(183)), Some(183));
        assert_eq!(sniff(&[0x55; 4096]), None);
    }

    /// The head of a little-endian 64-bit ELF file for `machine`.
    fn elf(machine: u16) -> Vec<u8> {
        let mut head = b"\x7fELF\x02\x01\x01".to_vec();
        head.resize(18, 0);
        head.extend(machine.to_le_bytes());
        head.resize(4096, 0);
        head
    }

    /// The head of a file in `format` (an ELF one for `arch`).
    fn sample(format: KernelFormat, arch: Arch) -> Vec<u8> {
        let mut head = vec![0u8; 4096];
        let (offset, magic): (usize, &[u8]) = match format {
            KernelFormat::Elf => return elf(arch.info().elf_machine),
            KernelFormat::BzImage => (0x202, b"HdrS"),
            KernelFormat::Arm64Image => (0x38, b"ARM\x64"),
            KernelFormat::RiscvImage => (0x38, b"RSC\x05"),
            KernelFormat::Pe => (0, b"MZ"),
            KernelFormat::Gzip => (0, b"\x1f\x8b"),
            KernelFormat::Multiboot => (64, &0x1bad_b002u32.to_le_bytes()),
        };
        head[offset..offset + magic.len()].copy_from_slice(magic);
        head
    }

    #[test]
    fn verdicts_per_arch() {
        let p = Path::new("k");
        let judge = |head: &[u8], arch: Arch| {
            verdict(
                sniff(head),
                crate::host::elf::machine(head),
                arch,
                arch.info().kernel_formats,
                p,
            )
        };
        for arch in Arch::ALL {
            for &format in arch.info().kernel_formats {
                let head = sample(format, arch);
                assert_eq!(sniff(&head), Some(format));
                assert_eq!(judge(&head, arch), KernelVerdict::Fine, "{format:?} on {arch}");
            }
        }
        let unknown = [0x55; 4096];
        assert!(
            matches!(judge(&unknown, Arch::X86_64), KernelVerdict::Bad(m) if m.contains("bzImage"))
        );
        assert!(matches!(judge(&unknown, Arch::Aarch64), KernelVerdict::Doubtful(_)));

        // Another arch's kernel is refused even where unknown files are only doubtful.
        let v = judge(&sample(KernelFormat::Arm64Image, Arch::Aarch64), Arch::Riscv64);
        assert!(matches!(&v, KernelVerdict::Bad(m) if m.contains("arm64 Image")), "{v:?}");
        let v = judge(&sample(KernelFormat::Elf, Arch::X86_64), Arch::Aarch64);
        assert!(matches!(&v, KernelVerdict::Bad(m) if m.contains("ELF file for x86_64")), "{v:?}");
    }
}
