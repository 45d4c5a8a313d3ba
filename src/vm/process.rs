//! The VMM and its helper daemons as child processes: spawning them so that they can never
//! outlive us, killing them on drop, catching Ctrl-C, and saving the terminal settings around
//! an interactive session.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use std::path::Path;

use crate::error::Result;
use crate::host::exec;

/// The exit code of an interrupted run (Ctrl-C), as a shell reports a death by SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

/// How the VMM's standard streams are connected.
pub(crate) enum Stdio {
    /// All three piped to us; the VMM gets its own process group so that a Ctrl-C on the
    /// terminal reaches only us, and we decide how to stop it.
    Piped,
    /// Inherited: the VMM owns the terminal (and stays in our foreground process group).
    Inherit,
    /// A daemon: no input, output discarded, its own process group.
    Quiet,
    /// stdin and stdout on a new pseudo-terminal in raw mode, stderr piped, its own process
    /// group: for a VMM that reads its console only from a terminal.
    Terminal,
}

/// The VMM's console streams as the runner reads and writes them.
pub(crate) struct Streams {
    /// What is typed into the guest console.
    pub(crate) input: Box<dyn Write + Send>,
    /// What the guest console prints.
    pub(crate) output: Box<dyn Read + Send>,
    /// The VMM's own messages.
    pub(crate) errors: ChildStderr,
}

/// A running VMM. Dropping it kills the process and reaps it.
pub(crate) struct VmProcess {
    child: Child,
    status: Option<ExitStatus>,
    /// The terminal's controlling side, for [`Stdio::Terminal`].
    pty: Option<File>,
}

impl VmProcess {
    /// Starts `program` with `args`.
    ///
    /// The child asks the kernel for SIGKILL when the spawning thread dies, so not even a
    /// SIGKILL of this process leaves a VMM running. All callers spawn and wait on the same
    /// thread, as that death signal is tied to the thread, not the process.
    pub(crate) fn spawn(program: &Path, args: &[OsString], stdio: Stdio) -> io::Result<VmProcess> {
        use std::process::Stdio as S;
        let mut command = exec::command(program);
        command.args(args);
        let mut pty = None;
        match stdio {
            Stdio::Piped => {
                command.stdin(S::piped()).stdout(S::piped()).stderr(S::piped()).process_group(0);
            }
            Stdio::Quiet => {
                command.stdin(S::null()).stdout(S::null()).stderr(S::null()).process_group(0);
            }
            Stdio::Terminal => {
                let (controller, terminal) = open_raw_pty()?;
                command
                    .stdin(S::from(terminal.try_clone()?))
                    .stdout(S::from(terminal))
                    .stderr(S::piped())
                    .process_group(0);
                pty = Some(controller);
            }
            Stdio::Inherit => {}
        }
        let child = exec::spawn(&mut command, libc::SIGKILL)?;
        Ok(VmProcess { child, status: None, pty })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The piped streams; only valid once, for a process spawned with [`Stdio::Piped`].
    pub(crate) fn take_stdio(&mut self) -> io::Result<Streams> {
        let errors = self.child.stderr.take().expect("stderr is piped");
        if let Some(pty) = self.pty.take() {
            let output = Box::new(pty.try_clone()?);
            return Ok(Streams { input: Box::new(pty), output, errors });
        }
        Ok(Streams {
            input: Box::new(self.child.stdin.take().expect("stdin is piped")),
            output: Box::new(self.child.stdout.take().expect("stdout is piped")),
            errors,
        })
    }

    /// The exit status, if the process has exited.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the process to exit until `deadline`.
    pub(crate) fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        self.wait(Some(deadline), || true)
    }

    /// Waits for the process; on SIGINT or SIGTERM (seen through an [`InterruptGuard`])
    /// kills it instead. Returns its exit code.
    pub(crate) fn wait_interruptible(&mut self) -> Result<i32> {
        match self.wait(None, || !interrupted()) {
            Some(status) => Ok(exit_code(status)),
            None => {
                self.kill();
                Ok(EXIT_INTERRUPTED)
            }
        }
    }

    fn wait(
        &mut self,
        deadline: Option<Instant>,
        go_on: impl FnMut() -> bool,
    ) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = exec::wait(&mut self.child, deadline, go_on).ok().flatten();
        }
        self.status
    }

    /// Kills the process (if it still runs) and reaps it.
    pub(crate) fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A new pseudo-terminal in raw mode (no echo, no line editing, no newline translation):
/// the controlling side and the terminal.
fn open_raw_pty() -> io::Result<(File, OwnedFd)> {
    let (mut controller, mut terminal) = (-1, -1);
    // SAFETY: openpty writes two descriptors it opened; the other arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are open and owned by nobody else.
    let (controller, terminal) =
        unsafe { (File::from_raw_fd(controller), OwnedFd::from_raw_fd(terminal)) };
    // SAFETY: `termios` is plain data filled by tcgetattr on an open terminal.
    unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(terminal.as_raw_fd(), &mut termios) == 0 {
            libc::cfmakeraw(&mut termios);
            libc::tcsetattr(terminal.as_raw_fd(), libc::TCSANOW, &termios);
        }
    }
    Ok((controller, terminal))
}

/// The exit code a shell would report: the code, or 128 + the signal that killed it.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Number of live guards and the handlers they replaced.
static HANDLERS: Mutex<(usize, Vec<(libc::c_int, libc::sigaction)>)> = Mutex::new((0, Vec::new()));

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether SIGINT or SIGTERM arrived while an [`InterruptGuard`] was alive.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// While alive, SIGINT and SIGTERM set a flag instead of killing the process, so the VM can
/// be killed and the console log finished. Guards nest (several boots may run at once in
/// tests); the last one restores the previous handlers.
pub(crate) struct InterruptGuard(());

impl InterruptGuard {
    pub(crate) fn install() -> InterruptGuard {
        let mut state = HANDLERS.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == 0 {
            INTERRUPTED.store(false, Ordering::SeqCst);
            for signal in SIGNALS {
                // SAFETY: zeroed is a valid sigaction; the handler only stores to an atomic.
                unsafe {
                    let mut action: libc::sigaction = std::mem::zeroed();
                    action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                    action.sa_flags = libc::SA_RESTART;
                    libc::sigemptyset(&mut action.sa_mask);
                    let mut previous: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(signal, &action, &mut previous) == 0 {
                        state.1.push((signal, previous));
                    }
                }
            }
        }
        state.0 += 1;
        InterruptGuard(())
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        let mut state = HANDLERS.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if state.0 == 0 {
            for (signal, previous) in state.1.drain(..) {
                // SAFETY: restores a sigaction obtained from the kernel above.
                unsafe {
                    libc::sigaction(signal, &previous, std::ptr::null_mut());
                }
            }
        }
    }
}

/// The terminal settings of stdin, if it is a terminal.
pub(crate) struct TerminalState(Option<libc::termios>);

impl TerminalState {
    pub(crate) fn save() -> TerminalState {
        // SAFETY: isatty and tcgetattr only read; `termios` is plain data filled by the call.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return TerminalState(None);
            }
            let mut termios: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut termios) != 0 {
                return TerminalState(None);
            }
            TerminalState(Some(termios))
        }
    }

    /// Puts the saved settings back (a VMM killed by a signal leaves the terminal raw).
    pub(crate) fn restore(&self) {
        if let Some(termios) = &self.0 {
            // SAFETY: `termios` came from tcgetattr on the same descriptor.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, termios);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drop_kills_and_reaps() {
        let mut vm = VmProcess::spawn(Path::new("sleep"), &["600".into()], Stdio::Piped).unwrap();
        let pid = vm.pid();
        let _ = vm.take_stdio().unwrap();
        assert!(vm.try_wait().is_none());
        drop(vm);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_terminal_console_is_a_raw_terminal() {
        let script = "test -t 0 && test -t 1 && stty -a | grep -q -- -echo && echo on-a-terminal";
        let args = ["-c".into(), script.into()];
        let mut vm = VmProcess::spawn(Path::new("sh"), &args, Stdio::Terminal).unwrap();
        let mut streams = vm.take_stdio().unwrap();
        let mut output = Vec::new();
        // The terminal reports EIO once the program exited and closed it.
        let _ = streams.output.read_to_end(&mut output);
        assert_eq!(String::from_utf8_lossy(&output).trim(), "on-a-terminal");
        let deadline = Instant::now() + Duration::from_secs(30);
        assert_eq!(vm.wait_until(deadline).map(exit_code), Some(0));
    }

    #[test]
    fn exit_codes() {
        let mut vm =
            VmProcess::spawn(Path::new("sh"), &["-c".into(), "exit 3".into()], Stdio::Piped)
                .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        assert_eq!(vm.wait_until(deadline).map(exit_code), Some(3));
    }
}
