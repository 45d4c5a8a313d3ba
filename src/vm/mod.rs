//! Booting a built image in a virtual machine, interactively or as a scripted smoke check.
//!
//! A [`VmSpec`] says what to boot (kernel, root disk or initramfs, memory, CPUs) and how
//! (VMM, accelerator). Helpers turn the user's requests into a spec and say why they chose
//! what they chose: [`select_kernel`], [`choose_accel`] and [`choose_root_bus`].
//! [`boot_interactive`] then attaches the guest console to the terminal, and [`boot_check`]
//! drives the guest shell over the serial console through a [`CheckPlan`] and returns a
//! [`CheckReport`].
//!
//! Each VMM is one module implementing the private `Backend` trait (`qemu.rs`, `kvmtool.rs`);
//! a new VMM is a new module, a [`Vmm`] variant and one match arm in `Vmm::backend`.

mod accel;
mod check;
mod config;
mod console;
mod kconfig;
mod kernel;
mod kvmtool;
mod modules;
mod process;
mod qemu;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::arch::Arch;
use crate::error::{Error, Result};

pub use accel::{choose_accel, choose_accel_with, Accel, AccelRequest, HostFacts, KvmDevice};
pub use check::{
    boot_check, BootFailure, BootFailureKind, Check, CheckPlan, CheckReport, CheckResult, Outcome,
    Timeouts, BANNER,
};
pub use config::{load_checks_file, ExtraCheck, RunConfig};
pub use kconfig::{choose_root_bus, choose_root_bus_with, KernelConfig};
pub use kernel::{select_kernel, KernelChoice, KernelSource};
pub use modules::{
    kernel_release, kernel_release_of, modules_for, read_modinfo, GuestFile, Module, ModuleTree,
    MODULE_SYMBOLS,
};

/// The exit code of an interrupted run (Ctrl-C), as a shell reports a death by SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

/// A decision together with the reason it was taken, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice<T> {
    /// What was chosen.
    pub value: T,
    /// Why, in a few words (e.g. "guest arch equals host arch and /dev/kvm is usable").
    pub reason: String,
}

/// The virtual machine monitor that runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Vmm {
    /// `qemu-system-<arch>`, with KVM or TCG.
    #[default]
    Qemu,
    /// kvmtool's `lkvm`, KVM only.
    Kvmtool,
}

impl Vmm {
    /// Every supported VMM.
    pub const ALL: [Vmm; 2] = [Vmm::Qemu, Vmm::Kvmtool];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Vmm::Qemu => "qemu",
            Vmm::Kvmtool => "kvmtool",
        }
    }

    /// Whether this VMM can only run guests with KVM.
    pub fn needs_kvm(self) -> bool {
        self.backend().needs_kvm()
    }

    pub(crate) fn backend(self) -> &'static dyn Backend {
        match self {
            Vmm::Qemu => &qemu::Qemu,
            Vmm::Kvmtool => &kvmtool::Kvmtool,
        }
    }

    /// The program to run: the backend's environment variable (`$QEMU`, `$LKVM`) if set,
    /// else `configured`, else the default name looked up in `$PATH`.
    pub fn program(self, arch: Arch, configured: Option<&Path>) -> PathBuf {
        let backend = self.backend();
        std::env::var_os(backend.env_var())
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| configured.map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(backend.default_program(arch)))
    }

    /// The command-line arguments (after the program name) that boot `spec` with its
    /// console on piped stdio, as [`boot_check`] runs it.
    pub fn check_args(self, spec: &VmSpec) -> Result<Vec<OsString>> {
        self.backend().args(spec, &ConsoleMode::Piped)
    }

    /// The arguments that boot `spec` with its console on the terminal, as
    /// [`boot_interactive`] runs it.
    pub fn interactive_args(self, spec: &VmSpec) -> Result<Vec<OsString>> {
        self.backend().args(spec, &ConsoleMode::Terminal)
    }
}

impl fmt::Display for Vmm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Vmm {
    type Err = String;

    fn from_str(s: &str) -> Result<Vmm, String> {
        let alias = if s == "lkvm" { "kvmtool" } else { s };
        Vmm::ALL
            .into_iter()
            .find(|v| v.name() == alias)
            .ok_or_else(|| format!("unknown VMM `{s}`; supported: qemu, kvmtool"))
    }
}

/// The bus the root disk hangs off, which decides its device name and the driver the kernel
/// needs built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootBus {
    /// virtio-blk over PCI: `/dev/vda`.
    Virtio,
    /// An NVMe controller: `/dev/nvme0n1`.
    Nvme,
    /// virtio-scsi with a SCSI disk: `/dev/sda`.
    Scsi,
}

impl RootBus {
    /// Every bus, in the order `auto` prefers them.
    pub const ALL: [RootBus; 3] = [RootBus::Virtio, RootBus::Nvme, RootBus::Scsi];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RootBus::Virtio => "virtio",
            RootBus::Nvme => "nvme",
            RootBus::Scsi => "scsi",
        }
    }

    /// The guest's device node for the disk.
    pub fn device(self) -> &'static str {
        match self {
            RootBus::Virtio => "/dev/vda",
            RootBus::Nvme => "/dev/nvme0n1",
            RootBus::Scsi => "/dev/sda",
        }
    }

    /// The kernel configuration symbols (without `CONFIG_`) that must be `y` for the kernel
    /// to find its root on this bus without modules.
    pub fn required_symbols(self) -> &'static [&'static str] {
        match self {
            RootBus::Virtio => &["VIRTIO_BLK", "VIRTIO_PCI"],
            RootBus::Nvme => &["BLK_DEV_NVME"],
            RootBus::Scsi => &["SCSI_VIRTIO", "BLK_DEV_SD"],
        }
    }
}

impl fmt::Display for RootBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--root-bus`: a bus, or `auto` to pick one from the kernel's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootBusRequest {
    /// Read the kernel's configuration and pick a bus whose driver is built in.
    #[default]
    Auto,
    /// Use this bus whatever the configuration says.
    Bus(RootBus),
}

impl FromStr for RootBusRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<RootBusRequest, String> {
        if s == "auto" {
            return Ok(RootBusRequest::Auto);
        }
        RootBus::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .map(RootBusRequest::Bus)
            .ok_or_else(|| format!("unknown root bus `{s}`; supported: auto, virtio, nvme, scsi"))
    }
}

/// Where the guest's root file system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// An ext4 image attached as a disk; the guest writes to it.
    Disk {
        /// The image file.
        image: PathBuf,
        /// The bus it is attached to.
        bus: RootBus,
    },
    /// A (compressed) newc cpio archive loaded as the initramfs.
    Initramfs(PathBuf),
}

/// Everything needed to start one virtual machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Guest architecture.
    pub arch: Arch,
    /// The VMM.
    pub vmm: Vmm,
    /// The VMM program to run (see [`Vmm::program`]).
    pub program: PathBuf,
    /// The accelerator, already chosen (see [`choose_accel`]).
    pub accel: Accel,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The root file system.
    pub root: Root,
    /// Extra kernel command-line arguments, appended after busyroot's own so they win.
    pub append: Vec<String>,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Number of virtual CPUs.
    pub cpus: u32,
    /// Where the whole console output is saved.
    pub console_log: PathBuf,
}

/// Default guest memory in MiB.
pub const DEFAULT_MEM_MIB: u32 = 256;
/// Default number of virtual CPUs.
pub const DEFAULT_CPUS: u32 = 2;

impl VmSpec {
    /// A QEMU spec with the default memory and CPUs, the accelerator `auto` picks and the
    /// console log in `console_log`.
    pub fn new(arch: Arch, kernel: PathBuf, root: Root, console_log: PathBuf) -> VmSpec {
        VmSpec {
            arch,
            vmm: Vmm::Qemu,
            program: Vmm::Qemu.program(arch, None),
            accel: choose_accel_with(AccelRequest::Auto, arch, &HostFacts::probe())
                .map(|c| c.value)
                .unwrap_or(Accel::Tcg),
            kernel,
            root,
            append: Vec::new(),
            mem_mib: DEFAULT_MEM_MIB,
            cpus: DEFAULT_CPUS,
            console_log,
        }
    }

    /// The kernel command line: console on the first serial port, the arch's own arguments,
    /// the root device, and `panic=-1` so that a panic reboots at once, which the VMMs turn
    /// into an exit. The user's arguments come last, so they win.
    pub fn kernel_cmdline(&self) -> String {
        let console = self.vmm.backend().console_device(self.arch);
        let mut parts = vec![format!("console={console}")];
        parts.extend(self.arch.info().kernel_cmdline.iter().map(|a| a.to_string()));
        match &self.root {
            Root::Disk { bus, .. } => {
                parts.push(format!("root={}", bus.device()));
                parts.push("rw".into());
                parts.push("rootfstype=ext4".into());
            }
            Root::Initramfs(_) => parts.push("rdinit=/sbin/init".into()),
        }
        parts.push("panic=-1".into());
        parts.extend(self.append.iter().cloned());
        parts.join(" ")
    }

    /// The full command line as printed before the VMM starts, quoted for a POSIX shell.
    pub fn display_command(&self, args: &[OsString]) -> String {
        let mut line = shell_quote(&self.program.to_string_lossy());
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(&arg.to_string_lossy()));
        }
        line
    }
}

/// Parses a memory size for `--mem`: MiB as a plain number, or with an `M`/`MiB` or
/// `G`/`GiB` suffix (`512`, `512M`, `1G`).
pub fn parse_mem_mib(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "" | "M" | "m" | "MiB" | "MB" => 1,
        "G" | "g" | "GiB" | "GB" => 1024,
        _ => 0,
    };
    match digits.parse::<u32>().ok().and_then(|n| n.checked_mul(factor)) {
        Some(mib) if mib > 0 => Ok(mib),
        _ => {
            Err(format!("invalid memory size `{text}`; use MiB (`512`) or a suffix (`512M`, `1G`)"))
        }
    }
}

/// How the guest console is connected.
pub(crate) enum ConsoleMode {
    /// Serial console on the VMM's stdin/stdout pipes, no monitor multiplexed in.
    Piped,
    /// Serial console on the terminal, with the VMM's own escape keys.
    Terminal,
}

/// One VMM: how to invoke it and what it offers. Implementations live in their own modules.
pub(crate) trait Backend: Sync {
    /// Human name, e.g. "QEMU".
    fn display_name(&self) -> &'static str;
    /// Environment variable that overrides the program.
    fn env_var(&self) -> &'static str;
    /// Program name looked up in `$PATH` by default.
    fn default_program(&self, arch: Arch) -> &'static str;
    /// Debian/Ubuntu package that provides the program.
    fn package(&self, arch: Arch) -> &'static str;
    /// The guest's device for the serial console this backend wires to stdio.
    fn console_device(&self, arch: Arch) -> &'static str;
    /// The buses this backend can attach the root disk to.
    fn buses(&self) -> &'static [RootBus];
    /// Whether the backend can only run with KVM.
    fn needs_kvm(&self) -> bool;
    /// How to leave an interactive session.
    fn quit_hint(&self) -> &'static str;
    /// Whether the backend writes the console log itself in interactive mode.
    fn logs_interactive_console(&self) -> bool;
    /// The arguments after the program name.
    fn args(&self, spec: &VmSpec, console: &ConsoleMode) -> Result<Vec<OsString>>;
}

/// Boots `spec` with the guest console on this terminal and returns the VMM's exit status
/// (128 + signal number if it was killed, [`EXIT_INTERRUPTED`] if we were).
///
/// The terminal settings are saved first and restored after the VMM exits, even if it was
/// killed and could not restore them itself.
pub fn boot_interactive(spec: &VmSpec) -> Result<i32> {
    let backend = spec.vmm.backend();
    check_accel_supported(spec)?;
    check_kernel_file(spec)?;
    let args = backend.args(spec, &ConsoleMode::Terminal)?;
    if let Some(dir) = spec.console_log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    println!("$ {}", spec.display_command(&args));
    println!("{}", backend.quit_hint());
    if backend.logs_interactive_console() {
        println!("console log: {}", spec.console_log.display());
    }
    let terminal = process::TerminalState::save();
    let _interrupt = process::InterruptGuard::install();
    let mut vm = process::VmProcess::spawn(spec, &args, process::Stdio::Inherit)?;
    let status = vm.wait_interruptible();
    terminal.restore();
    status
}

/// Refuses to start a KVM-only backend without KVM.
fn check_accel_supported(spec: &VmSpec) -> Result<()> {
    let backend = spec.vmm.backend();
    if backend.needs_kvm() && spec.accel != Accel::Kvm {
        return Err(Error::Other(format!(
            "{} runs guests only with KVM, but the accelerator is {}; use --vmm qemu or \
             --accel kvm on a host with a usable /dev/kvm",
            backend.display_name(),
            spec.accel
        )));
    }
    Ok(())
}

/// Fails early, with the options, when the kernel file is missing.
fn check_kernel_file(spec: &VmSpec) -> Result<()> {
    if !spec.kernel.is_file() {
        return Err(Error::Other(format!(
            "kernel image `{}` does not exist or is not a file; pass --kernel PATH",
            spec.kernel.display()
        )));
    }
    Ok(())
}

/// Escapes a QEMU option value: commas are doubled so a path cannot end the option.
pub(crate) fn qemu_escape(path: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Quotes `s` for a POSIX shell when it holds anything but plainly safe characters.
pub(crate) fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(root: Root) -> VmSpec {
        VmSpec {
            arch: Arch::X86_64,
            vmm: Vmm::Qemu,
            program: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            kernel: "/boot/vmlinuz".into(),
            root,
            append: vec![],
            mem_mib: 256,
            cpus: 2,
            console_log: "/tmp/console.log".into(),
        }
    }

    #[test]
    fn cmdline_for_disk_and_initramfs() {
        let mut disk = spec(Root::Disk { image: "r.ext4".into(), bus: RootBus::Nvme });
        disk.append = vec!["root=/dev/doesnotexist".into()];
        assert_eq!(
            disk.kernel_cmdline(),
            "console=ttyS0 root=/dev/nvme0n1 rw rootfstype=ext4 panic=-1 root=/dev/doesnotexist"
        );
        let initramfs = spec(Root::Initramfs("r.cpio.gz".into()));
        assert_eq!(initramfs.kernel_cmdline(), "console=ttyS0 rdinit=/sbin/init panic=-1");
    }

    #[test]
    fn parses_requests() {
        assert_eq!("kvmtool".parse::<Vmm>().unwrap(), Vmm::Kvmtool);
        assert_eq!("lkvm".parse::<Vmm>().unwrap(), Vmm::Kvmtool);
        assert!("xen".parse::<Vmm>().unwrap_err().contains("qemu, kvmtool"));
        assert_eq!("auto".parse::<RootBusRequest>().unwrap(), RootBusRequest::Auto);
        assert_eq!("scsi".parse::<RootBusRequest>().unwrap(), RootBusRequest::Bus(RootBus::Scsi));
        assert!("ide".parse::<RootBusRequest>().is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem_mib("512"), Ok(512));
        assert_eq!(parse_mem_mib("512M"), Ok(512));
        assert_eq!(parse_mem_mib("2G"), Ok(2048));
        assert!(parse_mem_mib("0").is_err());
        assert!(parse_mem_mib("lots").is_err());
        assert!(parse_mem_mib("1T").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(shell_quote("console=ttyS0 panic=-1"), "'console=ttyS0 panic=-1'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(qemu_escape(Path::new("/a,b/c")), OsString::from("/a,,b/c"));
    }
}
