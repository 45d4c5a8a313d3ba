//! The `run` section of busyroot's configuration, and the file format for extra checks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Guest memory in MiB when nothing sets it.
pub const DEFAULT_MEM_MIB: u32 = 256;
/// Virtual CPUs when nothing sets them.
pub const DEFAULT_CPUS: u32 = 2;

/// Settings of `cargo xtask run`, read from `[workspace.metadata.busyroot.run]`.
///
/// Relative paths are relative to the workspace root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct RunConfig {
    /// Kernel image to boot when neither `--kernel` nor `$BUSYROOT_KERNEL` names one.
    /// Default: none (the kernel built by `cargo xtask kernel`).
    pub kernel: Option<PathBuf>,
    /// QEMU program; `$QEMU` takes precedence.
    /// Default: `qemu-system-<arch>` from `$PATH`.
    pub qemu: Option<PathBuf>,
    /// kvmtool program; `$LKVM` takes precedence.
    /// Default: `lkvm` from `$PATH`.
    pub lkvm: Option<PathBuf>,
    /// Firecracker program; `$FIRECRACKER` takes precedence.
    /// Default: `firecracker` from `$PATH`.
    pub firecracker: Option<PathBuf>,
    /// cloud-hypervisor program; `$CLOUD_HYPERVISOR` takes precedence.
    /// Default: `cloud-hypervisor` from `$PATH`.
    pub cloud_hypervisor: Option<PathBuf>,
    /// VMMs busyroot has no backend for, by name: `[…run.vmm.<name>]` tables with the
    /// program, its arguments and its console (see [`VmmConfig`]).
    /// Default: none.
    pub vmm: std::collections::BTreeMap<String, VmmConfig>,
    /// Guest memory in MiB.
    /// Default: 256.
    pub mem: u32,
    /// Number of virtual CPUs.
    /// Default: 2.
    pub cpus: u32,
    /// Seconds from starting the VMM to the init banner, before `$BUSYROOT_TIMEOUT_SCALE`.
    /// Default: 120 under TCG, 30 under KVM.
    pub timeout: Option<u64>,
    /// The hostname the guest must report.
    /// Default: `kvmtool-test`.
    pub hostname: String,
    /// Extra checks run after the built-in ones.
    /// Default: none.
    pub checks: Vec<ExtraCheck>,
    /// A TOML file of further checks (`[[check]]` tables with `command` and `expect`).
    /// Default: none.
    pub checks_file: Option<PathBuf>,
}

impl Default for RunConfig {
    fn default() -> RunConfig {
        RunConfig {
            kernel: None,
            qemu: None,
            lkvm: None,
            firecracker: None,
            cloud_hypervisor: None,
            vmm: Default::default(),
            mem: DEFAULT_MEM_MIB,
            cpus: DEFAULT_CPUS,
            timeout: None,
            hostname: "kvmtool-test".into(),
            checks: Vec::new(),
            checks_file: None,
        }
    }
}

/// A check supplied by the user: a guest shell command and a regular expression its
/// output must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraCheck {
    /// Name shown in the output and the JUnit report. Default: the command.
    #[serde(default)]
    pub name: Option<String>,
    /// One line of shell, run by the guest's `sh` with stdin from `/dev/null`, stderr
    /// merged into stdout, and stdout a pipe (so tools print as they would into a file).
    pub command: String,
    /// Regular expression searched for in the output, in multi-line mode (`^` and `$`
    /// match at line ends).
    pub expect: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChecksFile {
    #[serde(default)]
    check: Vec<ExtraCheck>,
}

/// Reads a checks file: TOML with one `[[check]]` table per check.
///
/// ```toml
/// [[check]]
/// name = "busybox is 1.36"
/// command = "busybox | head -n 1"
/// expect = '^BusyBox v1\.36'
/// ```
pub fn load_checks_file(path: &Path) -> Result<Vec<ExtraCheck>> {
    let text = std::fs::read_to_string(path).with_path("read", path)?;
    let file: ChecksFile = toml::from_str(&text)
        .map_err(|e| Error::Config { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(file.check)
}

/// One `[workspace.metadata.busyroot.run.vmm.<name>]` table: a VMM busyroot has no backend
/// for, described by its command line ([`ConfiguredVmm`](crate::vm::ConfiguredVmm) checks and runs
/// it; placeholders and the rule for one without a value are documented there).
///
/// ```toml
/// [workspace.metadata.busyroot.run.vmm.myvmm]
/// program = "tools/myvmm"
/// args = ["--kernel", "{kernel}", "--blk", "{disk}", "--initrd", "{initramfs}",
///         "--append", "{cmdline}", "--ram", "{mem}", "--serial-on-stdio"]
/// root-bus = "virtio"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VmmConfig {
    /// The program: a path (relative to the workspace root when it holds a `/`) or a name
    /// looked up in `$PATH`.
    pub program: PathBuf,
    /// Its arguments, with placeholders (see [`ConfiguredVmm`](crate::vm::ConfiguredVmm)). They must hold
    /// `{kernel}` and `{cmdline}`, and `{disk}` or `{initramfs}` for the media it boots.
    pub args: Vec<String>,
    /// Where the guest's serial console is: `"stdio"`, the program's stdin and stdout.
    /// Default: `"stdio"`.
    #[serde(default)]
    pub console: ConsoleKind,
    /// The kernel image the program boots: `"bzImage"`, `"Image"` or `"vmlinux"`; a kernel of
    /// another format is refused before the boot. Default: any the architecture has.
    #[serde(default)]
    pub kernel_format: Option<KernelFormatName>,
    /// The bus the program attaches `{disk}` to, which decides the root device in the kernel
    /// command line: `"virtio"` (`/dev/vda`), `"nvme"` (`/dev/nvme0n1`) or `"scsi"`
    /// (`/dev/sda`). Default: `"virtio"`.
    #[serde(default)]
    pub root_bus: BusName,
    /// The command typed in the guest to end it; the program must then exit with status 0.
    /// Default: `"reboot"`, which ends a VMM that exits when the guest resets (as QEMU does
    /// with `-no-reboot`); `poweroff` only halts a kernel without ACPI, such as busyroot's
    /// minimal x86_64 one, and the VMM would keep running.
    #[serde(default = "default_poweroff")]
    pub poweroff: String,
    /// The guest's device for the console, for `console=` in the kernel command line.
    /// Default: the architecture's (`ttyS0`; `ttyAMA0` on aarch64).
    #[serde(default)]
    pub guest_console: Option<String>,
    /// Arguments added once per shared directory, exporting it over virtio-9p with
    /// `{share_dir}` (the host directory) and `{share_tag}` (the 9p mount tag). Default: none,
    /// and a run with shares is refused.
    #[serde(default)]
    pub share_args: Option<Vec<String>>,
}

fn default_poweroff() -> String {
    "reboot".into()
}

/// `console` of a configured VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKind {
    /// The guest's serial console is the program's stdin and stdout.
    #[default]
    Stdio,
}

/// `kernel-format` of a configured VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KernelFormatName {
    /// The x86 `bzImage`.
    #[serde(rename = "bzImage")]
    BzImage,
    /// The arm64 or RISC-V `Image`.
    #[serde(rename = "Image")]
    Image,
    /// The uncompressed ELF `vmlinux`.
    #[serde(rename = "vmlinux")]
    Vmlinux,
}

/// `root-bus` of a configured VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusName {
    /// virtio-blk: `/dev/vda`.
    #[default]
    Virtio,
    /// NVMe: `/dev/nvme0n1`.
    Nvme,
    /// virtio-scsi: `/dev/sda`.
    Scsi,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: RunConfig = toml::from_str("mem = 512").unwrap();
        assert_eq!(c.mem, 512);
        assert_eq!(c.cpus, 2);
        assert_eq!(c.hostname, "kvmtool-test");
        let err = toml::from_str::<RunConfig>("memory = 512").unwrap_err();
        assert!(err.to_string().contains("unknown field `memory`"), "{err}");
        let c: RunConfig =
            toml::from_str("[[checks]]\ncommand = \"uname -s\"\nexpect = '^Linux$'\n").unwrap();
        assert_eq!(c.checks[0].name, None);
        assert_eq!(c.checks[0].expect, "^Linux$");
    }

    #[test]
    fn checks_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checks.toml");
        std::fs::write(&path, "[[check]]\nname = \"n\"\ncommand = \"true\"\nexpect = ''\n")
            .unwrap();
        let checks = load_checks_file(&path).unwrap();
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].name.as_deref(), Some("n"));
        std::fs::write(&path, "[[check]]\ncmd = \"true\"\n").unwrap();
        let err = load_checks_file(&path).unwrap_err().to_string();
        assert!(err.contains("checks.toml") && err.contains("cmd"), "{err}");
    }
}
