//! The interface a VMM backend implements: facts about the VMM, and the hooks that prepare and
//! start one VM, public so that a hypervisor project can boot busyroot images with its own VMM.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::channel::Channel;
use super::share::Transport;
use super::{RootBus, VmSpec};
use crate::arch::{Arch, KernelFormat};
use crate::error::Result;

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
        let mut line = super::shell_quote(&self.program.to_string_lossy());
        for arg in &self.args {
            line.push(' ');
            line.push_str(&super::shell_quote(&arg.to_string_lossy()));
        }
        line
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
    /// Firecracker): it works on kernels without ACPI, where `poweroff` only halts.
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
