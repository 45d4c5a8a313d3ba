//! The checks and the payload protocol over a console busyroot did not open: a VMM the caller
//! started itself, whose serial console is a byte stream (a Unix socket, a pseudo-terminal,
//! any `Read` and `Write` pair). busyroot launches nothing of the VM's (in the VMM's place it
//! runs `true`), and the power-off is the console closing: the VMM closes it as it exits. The
//! VMM's process and its exit status stay the caller's: it may be the caller's own child,
//! which no other process can wait for.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::spec::{Backend, ConsoleMode, ConsoleStreams, Launch};
use super::{RootBus, VmSpec};
use crate::arch::Arch;
use crate::error::{Error, Result};

/// How long [`AttachedConsole::unix_socket`] retries a socket whose VMM does not listen yet.
const LISTEN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A VM someone else started, reached through its serial console.
///
/// Boot the VMM with the root file system and the kernel command line busyroot would use
/// ([`VmSpec::kernel_cmdline`]), its console on a stream that holds what it printed from the
/// start (QEMU's `-serial unix:PATH,server=on,wait=on` waits for this side), then:
///
/// ```no_run
/// use busyroot::arch::Arch;
/// use busyroot::vm::{AttachedConsole, Vm};
///
/// let console = AttachedConsole::unix_socket("my VMM", "/tmp/vm/console.sock")?;
/// let out = Vm::new(Arch::X86_64, "vmlinuz")
///     .initramfs("rootfs.cpio.gz")
///     .backend(console)
///     .run(["/bin/sh", "-c", "exit 3"])?;
/// assert_eq!(out.status, 3);
/// # Ok::<(), busyroot::Error>(())
/// ```
///
/// One value serves one run: its streams are used up.
pub struct AttachedConsole {
    name: String,
    streams: Mutex<Option<ConsoleStreams>>,
    buses: [RootBus; 1],
    shutdown: String,
}

impl AttachedConsole {
    /// The console whose output is read from `output` and whose input is `input`.
    pub fn new(
        name: impl Into<String>,
        output: impl Read + Send + 'static,
        input: impl Write + Send + 'static,
    ) -> AttachedConsole {
        let streams = ConsoleStreams { output: Box::new(output), input: Box::new(input) };
        AttachedConsole {
            name: name.into(),
            streams: Mutex::new(Some(streams)),
            buses: [RootBus::Virtio],
            shutdown: "reboot".into(),
        }
    }

    /// The console on the Unix socket at `path`, connected now. A VMM that is still starting
    /// may have made the socket file before it listens: a refused connection is retried for
    /// up to five seconds.
    pub fn unix_socket(name: impl Into<String>, path: impl AsRef<Path>) -> Result<AttachedConsole> {
        let path = path.as_ref();
        let deadline = std::time::Instant::now() + LISTEN_GRACE;
        let stream = crate::host::fs::connect_unix(path, |e| {
            e.kind() == std::io::ErrorKind::ConnectionRefused
                && std::time::Instant::now() < deadline
        })
        .map_err(|e| Error::io("connect to", path, e))?;
        let output = stream.try_clone().map_err(|e| Error::io("connect to", path, e))?;
        Ok(AttachedConsole::new(name, output, stream))
    }

    /// The bus the VMM attached the root disk to, for `root=` (default: virtio).
    pub fn root_bus(mut self, bus: RootBus) -> AttachedConsole {
        self.buses = [bus];
        self
    }

    /// The guest command that ends the VM (default: `reboot`).
    pub fn shutdown_command(mut self, command: impl Into<String>) -> AttachedConsole {
        self.shutdown = command.into();
        self
    }
}

impl Backend for AttachedConsole {
    fn display_name(&self) -> &str {
        &self.name
    }

    fn default_program(&self, _arch: Arch) -> PathBuf {
        "true".into()
    }

    fn package(&self, _arch: Arch) -> Option<&str> {
        Some("coreutils")
    }

    fn buses(&self) -> &[RootBus] {
        &self.buses
    }

    fn shutdown_command(&self) -> &str {
        &self.shutdown
    }

    fn prepare(&self, spec: &VmSpec, console: ConsoleMode, _run_dir: &Path) -> Result<Launch> {
        if console == ConsoleMode::Terminal {
            return Err(Error::Other(format!(
                "`{}` was started elsewhere: its console is not busyroot's to put on this terminal",
                self.name
            )));
        }
        Ok(Launch { program: spec.program.clone(), args: Vec::new(), files: Vec::new() })
    }

    fn console(&self, _run_dir: &Path) -> Result<Option<ConsoleStreams>> {
        let taken = self.streams.lock().map(|mut s| s.take()).unwrap_or(None);
        match taken {
            Some(streams) => Ok(Some(streams)),
            None => Err(Error::Other(format!(
                "the console of `{}` was used by an earlier run; attach it anew",
                self.name
            ))),
        }
    }
}
