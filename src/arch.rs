//! The one table of per-architecture facts: compilers, kernel build and image, QEMU machine,
//! firmware, console and kernel command line.
//!
//! Invariant: nothing architecture-specific lives outside this file. Code elsewhere asks
//! `arch.info()` and never matches on an [`Arch`] to decide something.

use std::str::FromStr;

/// A guest architecture busyroot can build for and boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// 64-bit x86.
    X86_64,
    /// 64-bit Arm.
    Aarch64,
    /// 64-bit RISC-V.
    Riscv64,
}

/// A kind of kernel image file, as far as busyroot tells them apart before booting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// The x86 boot protocol image (`bzImage`).
    BzImage,
    /// An ELF file (`vmlinux`).
    Elf,
    /// A Multiboot kernel.
    Multiboot,
    /// The arm64 `Image`.
    Arm64Image,
    /// The RISC-V `Image`.
    RiscvImage,
    /// A PE/COFF image: an EFI stub or EFI zboot kernel.
    Pe,
    /// A gzip-compressed image (`Image.gz`).
    Gzip,
}

impl KernelFormat {
    /// What the format is called in messages.
    pub fn description(self) -> &'static str {
        match self {
            KernelFormat::BzImage => "a bzImage (`HdrS` at 0x202)",
            KernelFormat::Elf => "an ELF vmlinux",
            KernelFormat::Multiboot => "a Multiboot kernel",
            KernelFormat::Arm64Image => "an arm64 Image (`ARM\\x64` at 0x38)",
            KernelFormat::RiscvImage => "a RISC-V Image (`RSC\\x05` at 0x38)",
            KernelFormat::Pe => "an EFI (PE/COFF) image",
            KernelFormat::Gzip => "a gzip-compressed Image",
        }
    }
}

/// Facts about one architecture.
#[derive(Debug)]
#[doc(hidden)]
pub struct ArchInfo {
    /// The name used in paths and flags (`target/busyroot/<name>/`).
    pub name: &'static str,
    /// Rust/`cc` target triple used to find a C compiler.
    pub triple: &'static str,
    /// GNU prefix of Debian's cross compiler (`CROSS_COMPILE`), used when not building natively.
    pub cross_prefix: &'static str,
    /// Debian/Ubuntu package of that cross compiler (all the kernel build needs).
    pub cross_gcc_package: &'static str,
    /// Debian/Ubuntu package of the C library the cross compiler links BusyBox against.
    pub cross_libc_package: &'static str,
    /// `e_machine` of the arch's ELF binaries, which tells a BusyBox built by the wrong
    /// compiler from the right one.
    pub elf_machine: u16,
    /// Value of the kernel's `ARCH=`.
    pub kernel_arch: &'static str,
    /// Kernel image path inside the kernel build tree; its file name is the make target.
    pub kernel_image: &'static str,
    /// The image formats QEMU boots with `-kernel` for this arch, as far as busyroot knows.
    pub kernel_formats: &'static [KernelFormat],
    /// Whether [`Self::kernel_formats`] is every format QEMU boots here, so that any other
    /// file is certainly not a kernel; else it is booted with a warning.
    pub kernel_formats_exhaustive: bool,
    /// QEMU system emulator binary.
    pub qemu: &'static str,
    /// Debian package providing it.
    pub qemu_package: &'static str,
    /// QEMU machine (`-M`), with its properties.
    pub qemu_machine: &'static str,
    /// QEMU CPU model (`-cpu`) under TCG; `None` for the machine's default. Under KVM the
    /// host's CPU is used on every arch.
    pub qemu_cpu: Option<&'static str>,
    /// Firmware QEMU loads before the kernel (`-bios`); `None` for the machine's default.
    pub qemu_firmware: Option<&'static str>,
    /// Kernel console device for the machine's first serial port.
    pub console: &'static str,
    /// Kernel command-line arguments every boot gets, after `console=`.
    pub kernel_cmdline: &'static [&'static str],
    /// Further arguments for a uniprocessor kernel (`CONFIG_SMP` off) booted under TCG.
    pub tcg_uniprocessor_cmdline: &'static [&'static str],
    /// `uname -m` inside the guest.
    pub uname_m: &'static str,
    /// Debian's package of a small distribution kernel for this arch, suggested when no
    /// kernel is at hand (the boot checks tell whether its root disk driver is built in).
    pub distro_kernel_package: &'static str,
    /// Debian's name for the architecture (`dpkg --print-architecture`).
    pub debian_arch: &'static str,
    /// The flavour of Debian's small cloud kernel (`linux-image-<flavour>`), which
    /// `cargo xtask kernel --distro debian` fetches; `None` where Debian builds none.
    pub debian_cloud_flavour: Option<&'static str>,
    /// `/proc/cpuinfo` flags of which a host of this arch shows one if its CPU can run KVM
    /// guests; empty where cpuinfo has no such flag to look at.
    pub kvm_cpu_flags: &'static [&'static str],
}

const X86_64: ArchInfo = ArchInfo {
    name: "x86_64",
    triple: "x86_64-unknown-linux-gnu",
    cross_prefix: "x86_64-linux-gnu-",
    cross_gcc_package: "gcc-x86-64-linux-gnu",
    cross_libc_package: "libc6-dev-amd64-cross",
    elf_machine: 62,
    kernel_arch: "x86",
    kernel_image: "arch/x86/boot/bzImage",
    kernel_formats: &[KernelFormat::BzImage, KernelFormat::Elf, KernelFormat::Multiboot],
    kernel_formats_exhaustive: true,
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    qemu_machine: "q35",
    qemu_cpu: None,
    qemu_firmware: None,
    console: "ttyS0",
    kernel_cmdline: &[],
    // Emulated CPUs offer no TSC-deadline timer, so the kernel calibrates the local APIC
    // timer against jiffies, which takes about 0.2 s of every boot; without that timer, the
    // PIT drives the tick. Under KVM, the TSC-deadline timer makes the calibration a no-op.
    // Not for an SMP kernel: there the HPET broadcasts the tick to every CPU, and QEMU 7.2
    // crashed (SIGSEGV) in 4 of about 110 boots of Debian's kernel that way.
    tcg_uniprocessor_cmdline: &["noapictimer"],
    uname_m: "x86_64",
    distro_kernel_package: "linux-image-cloud-amd64",
    debian_arch: "amd64",
    debian_cloud_flavour: Some("cloud-amd64"),
    kvm_cpu_flags: &["vmx", "svm"],
};

/// arm64 and RISC-V boot raw, compressed, EFI and ELF kernels alike.
const IMAGE_FORMATS_ARM64: &[KernelFormat] =
    &[KernelFormat::Arm64Image, KernelFormat::Gzip, KernelFormat::Pe, KernelFormat::Elf];
const IMAGE_FORMATS_RISCV: &[KernelFormat] =
    &[KernelFormat::RiscvImage, KernelFormat::Gzip, KernelFormat::Pe, KernelFormat::Elf];

const AARCH64: ArchInfo = ArchInfo {
    name: "aarch64",
    triple: "aarch64-unknown-linux-gnu",
    cross_prefix: "aarch64-linux-gnu-",
    cross_gcc_package: "gcc-aarch64-linux-gnu",
    cross_libc_package: "libc6-dev-arm64-cross",
    elf_machine: 183,
    kernel_arch: "arm64",
    kernel_image: "arch/arm64/boot/Image",
    kernel_formats: IMAGE_FORMATS_ARM64,
    kernel_formats_exhaustive: false,
    qemu: "qemu-system-aarch64",
    qemu_package: "qemu-system-arm",
    // The default GIC version (2) fails under KVM on hosts without GICv2 emulation; `max`
    // takes the newest the host or TCG offers.
    qemu_machine: "virt,gic-version=max",
    // The virt machine's default CPU is a 32-bit Cortex-A15; `max` is a 64-bit CPU with
    // every feature TCG emulates.
    qemu_cpu: Some("max"),
    qemu_firmware: None,
    console: "ttyAMA0",
    // The device tree names the PL011 as stdout, so early messages appear before its driver.
    kernel_cmdline: &["earlycon"],
    tcg_uniprocessor_cmdline: &[],
    uname_m: "aarch64",
    distro_kernel_package: "linux-image-cloud-arm64",
    debian_arch: "arm64",
    debian_cloud_flavour: Some("cloud-arm64"),
    kvm_cpu_flags: &[],
};

const RISCV64: ArchInfo = ArchInfo {
    name: "riscv64",
    triple: "riscv64gc-unknown-linux-gnu",
    cross_prefix: "riscv64-linux-gnu-",
    cross_gcc_package: "gcc-riscv64-linux-gnu",
    cross_libc_package: "libc6-dev-riscv64-cross",
    elf_machine: 243,
    kernel_arch: "riscv",
    kernel_image: "arch/riscv/boot/Image",
    kernel_formats: IMAGE_FORMATS_RISCV,
    kernel_formats_exhaustive: false,
    qemu: "qemu-system-riscv64",
    qemu_package: "qemu-system-misc",
    qemu_machine: "virt",
    qemu_cpu: None,
    // OpenSBI, the supervisor binary interface the kernel runs on; QEMU ships it
    // (Debian: in qemu-system-data, which qemu-system-misc depends on).
    qemu_firmware: Some("default"),
    console: "ttyS0",
    kernel_cmdline: &["earlycon"],
    tcg_uniprocessor_cmdline: &[],
    uname_m: "riscv64",
    distro_kernel_package: "linux-image-riscv64",
    debian_arch: "riscv64",
    debian_cloud_flavour: None,
    kvm_cpu_flags: &[],
};

impl Arch {
    /// Every supported architecture.
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64];

    /// The architecture this program runs on, if supported.
    pub fn host() -> Option<Arch> {
        std::env::consts::ARCH.parse().ok()
    }

    /// `configured` if given, else the host's; an unsupported host is
    /// [`Error::UnsupportedHost`](crate::Error::UnsupportedHost).
    pub fn configured_or_host(configured: Option<Arch>) -> crate::Result<Arch> {
        configured
            .or_else(Arch::host)
            .ok_or(crate::Error::UnsupportedHost { host: std::env::consts::ARCH })
    }

    /// The facts about this architecture.
    #[doc(hidden)]
    pub fn info(self) -> &'static ArchInfo {
        match self {
            Arch::X86_64 => &X86_64,
            Arch::Aarch64 => &AARCH64,
            Arch::Riscv64 => &RISCV64,
        }
    }

    /// The name used in paths and flags.
    pub fn name(self) -> &'static str {
        self.info().name
    }
}

display_as_name!(Arch);

impl FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Arch, String> {
        let alias = match s {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            other => other,
        };
        Arch::ALL.into_iter().find(|a| a.name() == alias).ok_or_else(|| {
            let names: Vec<_> = Arch::ALL.iter().map(|a| a.name()).collect();
            format!("unknown architecture `{s}`; supported: {}", names.join(", "))
        })
    }
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        assert_eq!("arm64".parse::<Arch>().unwrap(), Arch::Aarch64);
        assert!("sparc".parse::<Arch>().unwrap_err().contains("supported: x86_64"));
    }

    #[test]
    fn table_is_consistent() {
        for a in Arch::ALL {
            let i = a.info();
            assert!(i.triple.starts_with(i.uname_m), "{a}: triple {}", i.triple);
            assert!(i.cross_prefix.ends_with("-linux-gnu-"), "{a}: {}", i.cross_prefix);
            assert!(i.kernel_image.starts_with(&format!("arch/{}/boot/", i.kernel_arch)), "{a}");
            assert!(i.qemu.ends_with(i.name), "{a}: {}", i.qemu);
            assert!(!i.kernel_formats.is_empty() && !i.qemu_machine.is_empty(), "{a}");
            let distinct = Arch::ALL.iter().filter(|b| b.info().elf_machine == i.elf_machine);
            assert_eq!(distinct.count(), 1, "{a}: ELF machine {} is not unique", i.elf_machine);
        }
    }
}
