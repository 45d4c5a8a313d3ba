//! The one table of per-architecture facts: compiler prefix, kernel image, QEMU machine, console.
//!
//! Invariant: nothing architecture-specific lives outside this file.

use std::fmt;
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

/// Facts about one architecture.
#[derive(Debug)]
pub struct ArchInfo {
    /// The name used in paths and flags (`target/busyroot/<name>/`).
    pub name: &'static str,
    /// Rust/`cc` target triple used to find a C compiler.
    pub triple: &'static str,
    /// GNU prefix of Debian's cross compiler (`CROSS_COMPILE`), used when not building natively.
    pub cross_prefix: &'static str,
    /// Debian/Ubuntu package providing that cross compiler.
    pub cross_package: &'static str,
    /// Value of the kernel's `ARCH=`.
    pub kernel_arch: &'static str,
    /// Kernel image path inside the kernel build tree.
    pub kernel_image: &'static str,
    /// QEMU system emulator binary.
    pub qemu: &'static str,
    /// Debian package providing it.
    pub qemu_package: &'static str,
    /// QEMU machine, CPU and firmware arguments.
    pub qemu_machine: &'static [&'static str],
    /// Kernel console device for the first serial port.
    pub console: &'static str,
    /// `uname -m` inside the guest.
    pub uname_m: &'static str,
}

const X86_64: ArchInfo = ArchInfo {
    name: "x86_64",
    triple: "x86_64-unknown-linux-gnu",
    cross_prefix: "x86_64-linux-gnu-",
    cross_package: "gcc-x86-64-linux-gnu",
    kernel_arch: "x86",
    kernel_image: "arch/x86/boot/bzImage",
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    qemu_machine: &["-M", "q35"],
    console: "ttyS0",
    uname_m: "x86_64",
};

const AARCH64: ArchInfo = ArchInfo {
    name: "aarch64",
    triple: "aarch64-unknown-linux-gnu",
    cross_prefix: "aarch64-linux-gnu-",
    cross_package: "gcc-aarch64-linux-gnu",
    kernel_arch: "arm64",
    kernel_image: "arch/arm64/boot/Image",
    qemu: "qemu-system-aarch64",
    qemu_package: "qemu-system-arm",
    qemu_machine: &["-M", "virt", "-cpu", "max"],
    console: "ttyAMA0",
    uname_m: "aarch64",
};

const RISCV64: ArchInfo = ArchInfo {
    name: "riscv64",
    triple: "riscv64gc-unknown-linux-gnu",
    cross_prefix: "riscv64-linux-gnu-",
    cross_package: "gcc-riscv64-linux-gnu",
    kernel_arch: "riscv",
    kernel_image: "arch/riscv/boot/Image",
    qemu: "qemu-system-riscv64",
    qemu_package: "qemu-system-misc",
    qemu_machine: &["-M", "virt", "-bios", "default"],
    console: "ttyS0",
    uname_m: "riscv64",
};

impl Arch {
    /// Every supported architecture.
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64];

    /// The architecture this program runs on, if supported.
    pub fn host() -> Option<Arch> {
        std::env::consts::ARCH.parse().ok()
    }

    /// The facts about this architecture.
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

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
}
