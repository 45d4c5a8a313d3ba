//! What to boot and how: the VMM, the root file system, the kernel command line, the shares,
//! the small value types the runner's choices are made of, and the interface a VMM backend
//! implements (facts about the VMM and the hooks that prepare and start one VM), public so
//! that a hypervisor project can boot busyroot images with its own VMM. A `Vmm` holds a
//! `dyn Backend` that reads the `VmSpec` holding it, so the two live in one module.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use super::channel::{ports, Channel};
use super::share::{Share, Transport};
use super::{Accel, KernelConfig};
use crate::arch::{Arch, KernelFormat};
use crate::config::{DEFAULT_CPUS, DEFAULT_MEM_MIB};
use crate::error::Result;

/// The virtual machine monitor that runs the guest.
#[derive(Clone, Default)]
pub enum Vmm {
    /// `qemu-system-<arch>`, with KVM or TCG.
    #[default]
    Qemu,
    /// kvmtool's `lkvm`, KVM only.
    Kvmtool,
    /// Firecracker (`--no-api --config-file`), KVM only.
    Firecracker,
    /// cloud-hypervisor, KVM (or MSHV) only.
    CloudHypervisor,
    /// A VMM busyroot has no variant for: one configured under
    /// `[workspace.metadata.busyroot.run.vmm.<name>]` ([`ConfiguredVmm`](super::ConfiguredVmm)),
    /// or a caller's own [`Backend`] ([`Vmm::custom`]).
    Custom(Arc<dyn Backend>),
}

impl Vmm {
    /// Every VMM busyroot has built in.
    pub const ALL: [Vmm; 4] = [Vmm::Qemu, Vmm::Kvmtool, Vmm::Firecracker, Vmm::CloudHypervisor];

    /// A VMM of the caller's own.
    pub fn custom(backend: impl Backend + 'static) -> Vmm {
        Vmm::Custom(Arc::new(backend))
    }

    /// The name used on the command line; a custom VMM's display name.
    pub fn name(&self) -> &str {
        match self {
            Vmm::Qemu => "qemu",
            Vmm::Kvmtool => "kvmtool",
            Vmm::Firecracker => "firecracker",
            Vmm::CloudHypervisor => "cloud-hypervisor",
            Vmm::Custom(backend) => backend.display_name(),
        }
    }
}

impl PartialEq for Vmm {
    fn eq(&self, other: &Vmm) -> bool {
        match (self, other) {
            (Vmm::Custom(a), Vmm::Custom(b)) => Arc::ptr_eq(a, b),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for Vmm {}

impl fmt::Debug for Vmm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vmm::Custom(backend) => write!(f, "Custom({:?})", backend.display_name()),
            builtin => write!(f, "{}", builtin.name()),
        }
    }
}

display_as_name!(Vmm);

impl FromStr for Vmm {
    type Err = String;

    /// A built-in VMM by its name (`lkvm` for kvmtool too); a configured one is found with
    /// [`vmm_named`](super::vmm_named).
    fn from_str(s: &str) -> Result<Vmm, String> {
        let alias = if s == "lkvm" { "kvmtool" } else { s };
        Vmm::ALL.into_iter().find(|v| v.name() == alias).ok_or_else(|| {
            let names: Vec<&str> = Vmm::ALL.iter().map(|v| v.name()).collect();
            format!("unknown VMM `{s}`; supported: {}", names.join(", "))
        })
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

display_as_name!(RootBus);

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
    /// The accelerator, already chosen (see [`choose_accel`](super::choose_accel)).
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
    /// Host directories shown to the guest, each with its transport already chosen.
    pub shares: Vec<Share>,
    /// How a payload's streams and status travel; with virtio-serial ports the guest starts
    /// busyroot's payload init instead of the image's own.
    pub channel: Channel,
}

impl VmSpec {
    /// A QEMU spec under TCG with the default memory and CPUs, no shares and the console log
    /// in `console_log`. Set `accel` from [`choose_accel`](super::choose_accel) to use KVM
    /// where it works; the [`Vm`](super::Vm) builder does that itself.
    pub fn new(arch: Arch, kernel: PathBuf, root: Root, console_log: PathBuf) -> VmSpec {
        VmSpec {
            arch,
            vmm: Vmm::Qemu,
            program: Vmm::Qemu.program(arch, None),
            accel: Accel::Tcg,
            kernel,
            root,
            append: Vec::new(),
            mem_mib: DEFAULT_MEM_MIB,
            cpus: DEFAULT_CPUS,
            console_log,
            shares: Vec::new(),
            channel: Channel::Serial,
        }
    }

    /// Adds the architecture's arguments for a uniprocessor kernel under TCG
    /// (`tcg_uniprocessor_cmdline` in `arch.rs`) when `config`, the kernel's configuration,
    /// says SMP is off; an unknown configuration gets none.
    pub fn add_uniprocessor_args(&mut self, config: Option<&KernelConfig>) {
        let uniprocessor = config.is_some_and(|c| !c.is_builtin("SMP"));
        if self.accel == Accel::Tcg && uniprocessor {
            let args = self.arch.info().tcg_uniprocessor_cmdline;
            self.append.extend(args.iter().map(|a| a.to_string()));
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
                if self.channel == Channel::Ports {
                    parts.push(format!("init={}", ports::INIT));
                }
            }
            Root::Initramfs(_) if self.channel == Channel::Ports => {
                parts.push(format!("rdinit={}", ports::INIT))
            }
            Root::Initramfs(_) => parts.push("rdinit=/sbin/init".into()),
        }
        parts.push("panic=-1".into());
        parts.extend(self.append.iter().cloned());
        parts.join(" ")
    }
}

/// How the guest console is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// Serial console on the VMM's stdin/stdout pipes, no monitor multiplexed in.
    Piped,
    /// Serial console on the terminal, with the VMM's own escape keys.
    Terminal,
}

/// How to start one VM, as a backend's prepare hook decided it ([`Vmm::launch`](super::Vmm::launch)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The VMM program.
    pub program: PathBuf,
    /// Its arguments, after the program name.
    pub args: Vec<OsString>,
    /// Files the backend wrote for this VM (a configuration file, say), kept for the report.
    pub files: Vec<PathBuf>,
}

impl Launch {
    /// The command line as printed before the VMM starts, quoted for a POSIX shell.
    pub fn display(&self) -> String {
        let words = std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(|a| a.as_os_str()));
        words.map(|w| super::shell_quote(&w.to_string_lossy())).collect::<Vec<_>>().join(" ")
    }
}

/// The guest's serial console as byte streams, for a VMM whose console is not its stdio (see
/// [`Backend::console`]).
pub struct ConsoleStreams {
    /// What the guest prints on its console.
    pub output: Box<dyn Read + Send>,
    /// What is typed into the guest's console.
    pub input: Box<dyn Write + Send>,
}

/// One VMM: the facts the runner needs about it, and the hooks that prepare and start one VM.
///
/// busyroot's own VMMs implement it (QEMU, kvmtool, Firecracker, cloud-hypervisor, and one
/// from `[workspace.metadata.busyroot.run.vmm.<name>]`), and so may a hypervisor project's own
/// test: give it to [`Vm::backend`](super::Vm::backend), and the checks, the payload protocol
/// and the reports work over the VMM's serial console as they do for QEMU.
///
/// Only [`display_name`](Backend::display_name), [`default_program`](Backend::default_program)
/// and [`prepare`](Backend::prepare) must be written; every other fact has a default that fits
/// a VMM with its serial console on stdio, the root disk on virtio-blk, no way to share a
/// directory, and an exit when the guest reboots.
///
/// ```no_run
/// use std::path::{Path, PathBuf};
///
/// use busyroot::arch::Arch;
/// use busyroot::vm::{Backend, ConsoleMode, Launch, Root, Vm, VmSpec};
///
/// /// A VMM with its own command line, its serial console on stdio.
/// struct MyVmm(PathBuf);
///
/// impl Backend for MyVmm {
///     fn display_name(&self) -> &str {
///         "myvmm"
///     }
///     fn default_program(&self, _arch: Arch) -> PathBuf {
///         self.0.clone()
///     }
///     fn prepare(&self, spec: &VmSpec, _: ConsoleMode, _: &Path) -> busyroot::Result<Launch> {
///         let mut args = vec!["--kernel".into(), spec.kernel.clone().into_os_string()];
///         match &spec.root {
///             Root::Disk { image, .. } => args.extend(["--block".into(), image.into()]),
///             Root::Initramfs(cpio) => args.extend(["--initrd".into(), cpio.into()]),
///         }
///         args.extend(["--cmdline".into(), spec.kernel_cmdline().into()]);
///         Ok(Launch { program: spec.program.clone(), args, files: Vec::new() })
///     }
/// }
///
/// let report = Vm::new(Arch::X86_64, "vmlinuz")
///     .disk("rootfs.ext4")
///     .backend(MyVmm("/usr/local/bin/myvmm".into()))
///     .check()?;
/// # Ok::<(), busyroot::Error>(())
/// ```
pub trait Backend: Send + Sync {
    /// The name in messages, e.g. "QEMU".
    fn display_name(&self) -> &str;
    /// The program to run when the caller names none: a path, or a name looked up in `$PATH`.
    fn default_program(&self, arch: Arch) -> PathBuf;
    /// An environment variable that, when set, names the program instead. Default: none.
    fn env_var(&self) -> Option<&str> {
        None
    }
    /// The Debian/Ubuntu package that provides the program, for the error when it is missing.
    /// Default: none.
    fn package(&self, _arch: Arch) -> Option<&str> {
        None
    }
    /// The guest's device for the serial console this backend wires to stdio, for the kernel
    /// command line. Default: the architecture's (`ttyS0` on x86_64 and riscv64, `ttyAMA0` on
    /// aarch64).
    fn console_device(&self, arch: Arch) -> &str {
        arch.info().console
    }
    /// The buses this backend can attach the root disk to, preferred first. Default: virtio.
    fn buses(&self) -> &[RootBus] {
        &[RootBus::Virtio]
    }
    /// The ways this backend can show a host directory to the guest, preferred first.
    /// Default: none, so a run with shares is refused before the boot.
    fn transports(&self) -> &[Transport] {
        &[]
    }
    /// Why a run with shares is refused when [`transports`](Backend::transports) is empty,
    /// saying what would make it possible.
    fn no_transport_hint(&self) -> String {
        format!("{} offers no way to show a host directory to the guest", self.display_name())
    }
    /// The payload channels this backend can wire up, preferred first. Default: the serial
    /// relay alone, which needs nothing but the serial console.
    fn channels(&self) -> &[Channel] {
        &[Channel::Serial]
    }
    /// The kernel image formats this backend boots for `arch`. Default: every format QEMU
    /// boots there.
    fn kernel_formats(&self, arch: Arch) -> &[KernelFormat] {
        arch.info().kernel_formats
    }
    /// Whether the VMM takes console input only from a terminal, so that the runner must give
    /// it a pseudo-terminal instead of pipes. Default: no.
    fn console_on_terminal(&self) -> bool {
        false
    }
    /// The guest command that ends the VM, so that the VMM exits with status 0. Default:
    /// `reboot`, for a VMM that exits when the guest resets (QEMU with `-no-reboot`, kvmtool,
    /// Firecracker): it works on kernels without ACPI, where `poweroff` only halts (kvmtool's
    /// x86 machine has none; its `reboot=k` resets through the keyboard controller).
    fn shutdown_command(&self) -> &str {
        "reboot"
    }
    /// Whether the backend can only run with KVM. Default: no.
    fn needs_kvm(&self) -> bool {
        false
    }
    /// How to leave an interactive session.
    fn quit_hint(&self) -> String {
        let name = self.display_name();
        format!("the guest console is on this terminal; power the guest off to leave {name}")
    }
    /// Whether the backend writes the console log itself in interactive mode. Default: no.
    fn logs_interactive_console(&self) -> bool {
        false
    }
    /// Prepare hook: the program and arguments that start `spec`, after writing any file the
    /// VMM needs into `run_dir`. Starts nothing. The program is normally `spec.program`, which
    /// the runner took from [`default_program`](Backend::default_program) or the caller.
    fn prepare(&self, spec: &VmSpec, console: ConsoleMode, run_dir: &Path) -> Result<Launch>;
    /// Launch hook: runs right after the VMM process `pid` started, before the guest console
    /// is read (to configure the VM through an API socket, say). Default: nothing to do.
    fn started(&self, _launch: &Launch, _pid: u32) -> Result<()> {
        Ok(())
    }
    /// Console hook: runs after [`started`](Backend::started) and returns the guest's serial
    /// console when it is not the VMM's stdin and stdout: a Unix socket or a pseudo-terminal
    /// the VMM opened, or a console busyroot did not open at all
    /// ([`AttachedConsole`](super::AttachedConsole)).
    /// The checks and the payload protocol then run over these streams. Used by scripted
    /// runs; an interactive boot keeps the VMM's stdio. Default: `None`, the VMM's stdio.
    fn console(&self, _run_dir: &Path) -> Result<Option<ConsoleStreams>> {
        Ok(None)
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

/// A backend's arguments as strings, for its tests.
#[cfg(test)]
pub(crate) fn strings(args: Vec<OsString>) -> Vec<String> {
    args.into_iter().map(|a| a.into_string().unwrap()).collect()
}

/// The arguments a backend's test expects: the words of `before`, `whole` as one argument
/// (the kernel's command line, which holds spaces), then the words of `after`.
#[cfg(test)]
pub(crate) fn argv(before: &str, whole: &str, after: &str) -> Vec<String> {
    let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    [words(before), vec![whole.to_string()], words(after)].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kvm_only_vmm_is_refused_without_kvm_and_says_why() {
        let err = Vmm::Kvmtool.check_accel(Accel::Tcg, "there is no /dev/kvm").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("kvmtool runs guests only with KVM"), "{text}");
        assert!(text.contains("(there is no /dev/kvm)"), "{text}");
        assert!(Vmm::Kvmtool.check_accel(Accel::Kvm, "").is_ok());
        assert!(Vmm::Qemu.check_accel(Accel::Tcg, "").is_ok());
    }
}
