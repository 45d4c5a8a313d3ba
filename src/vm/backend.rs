//! The interface a VMM backend implements: facts about the VMM, and the hooks that prepare and
//! start one VM. QEMU (`qemu.rs`) and kvmtool (`kvmtool.rs`) are the two implementations.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

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

/// One VMM. A new backend is one module implementing this trait plus one [`Vmm`](super::Vmm)
/// variant. A VMM configured through a file writes it in [`prepare`](Backend::prepare) and
/// names it in the arguments; one configured through an API socket sends its configuration in
/// [`started`](Backend::started).
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
    /// The ways this backend can show a host directory to the guest, preferred first.
    fn transports(&self) -> &'static [Transport];
    /// The kernel image formats this backend boots for `arch`.
    fn kernel_formats(&self, arch: Arch) -> &'static [KernelFormat] {
        arch.info().kernel_formats
    }
    /// Whether the VMM takes console input only from a terminal, so that the runner must give
    /// it a pseudo-terminal instead of pipes.
    fn console_on_terminal(&self) -> bool {
        false
    }
    /// The guest command that ends the VM, so that the VMM exits.
    fn shutdown_command(&self) -> &'static str;
    /// Whether the backend can only run with KVM.
    fn needs_kvm(&self) -> bool;
    /// How to leave an interactive session.
    fn quit_hint(&self) -> &'static str;
    /// Whether the backend writes the console log itself in interactive mode.
    fn logs_interactive_console(&self) -> bool;
    /// Prepare hook: the program and arguments that start `spec`, after writing any file the
    /// VMM needs into `run_dir`. Starts nothing.
    fn prepare(&self, spec: &VmSpec, console: ConsoleMode, run_dir: &Path) -> Result<Launch>;
    /// Launch hook: runs right after the VMM process `pid` started, before the guest console
    /// is read. Default: nothing to do.
    fn started(&self, _launch: &Launch, _pid: u32) -> Result<()> {
        Ok(())
    }
}
