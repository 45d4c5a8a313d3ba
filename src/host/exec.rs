//! Running host programs: every external program is an xshell `cmd!`, echoed through the
//! progress interface, dies with us (parent-death signal), and is waited for against a
//! deadline; failures name the command and show the last lines of its output.

// The one place programs start: see ../../clippy.toml.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Instant;

use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

/// Runs `cmd` with `stdin` fed to it and stdout and stderr appended to `log`. On failure the
/// error names the command, the log and its last lines.
pub fn run_logged(
    cmd: xshell::Cmd<'_>,
    stdin: Option<&[u8]>,
    log: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let command_line = cmd.to_string();
    progress.command(&command_line);
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_path("create directory", dir)?;
    }
    let mut file =
        fs::OpenOptions::new().create(true).append(true).open(log).with_path("open", log)?;
    let start = file.seek(SeekFrom::End(0)).with_path("seek", log)?;
    writeln!(file, "$ {command_line}").with_path("write", log)?;
    let mut out_log = file.try_clone().with_path("open", log)?;
    let mut command = std::process::Command::from(cmd);
    // Standard output passes through here on its way to the log, so that progress can show
    // what a long make is doing; standard error goes to the log directly.
    command.stdout(Stdio::piped()).stderr(file);
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    // Ctrl-C reaches make through the terminal's process group; a kill of busyroot alone
    // must stop it too.
    die_with_parent(&mut command, libc::SIGTERM);
    let started = command.spawn().and_then(|mut child| {
        let answers = stdin.map(<[u8]>::to_vec).zip(child.stdin.take());
        // Fed from another thread, so that a child answering questions and printing at the
        // same time never blocks on a full pipe.
        let feeder = std::thread::spawn(move || {
            if let Some((bytes, mut pipe)) = answers {
                // The child may exit without reading everything; that is not an error here.
                let _ = pipe.write_all(&bytes);
            }
        });
        if let Some(stdout) = child.stdout.take() {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                // A log that cannot be written loses lines, not the build.
                let _ = out_log.write_all(&line);
                progress.output(String::from_utf8_lossy(&line).trim_end());
                line.clear();
            }
        }
        let _ = feeder.join();
        child.wait()
    });
    let status = started.map_err(|e| not_started(&command_line, e))?;
    if status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: command_line,
        status: format!(": {status}"),
        details: format!("full log: {}\nlast lines:\n{}", log.display(), tail(log, start, 25)),
    })
}

/// Runs `cmd` to its end with its output captured and stdin empty, whatever its exit status;
/// it is killed (SIGTERM) if we die first.
pub fn output(cmd: xshell::Cmd<'_>) -> std::io::Result<std::process::Output> {
    let mut command = std::process::Command::from(cmd);
    command.stdin(Stdio::null());
    die_with_parent(&mut command, libc::SIGTERM);
    command.output()
}

/// The standard output of `cmd` run as [`output`] does, without its trailing newline, when it
/// succeeds; `None` when it cannot start or fails (its stderr is dropped).
pub fn read(cmd: xshell::Cmd<'_>) -> Option<String> {
    let out = output(cmd).ok().filter(|out| out.status.success())?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

/// [`read`], for what a program says of itself (a compiler's version, where its library lies):
/// the answer is kept in `memo_dir` with the identity of `executable` (the file the program
/// runs from, links resolved) and given from there while that file is the same. A reinstalled
/// program is asked again. Only answers `valid` holds for are kept or given, so `valid` can
/// also check that what an answer names still exists. Asking costs a program start.
pub(crate) fn read_remembered(
    cmd: xshell::Cmd<'_>,
    executable: &Path,
    memo_dir: &Path,
    valid: impl Fn(&str) -> bool,
) -> Option<String> {
    let question = cmd.to_string();
    let Ok(identity) = crate::host::fs::file_identity(executable) else { return read(cmd) };
    let key = format!("{identity}\n{question}\n");
    let memo = memo_dir
        .join(format!("answer-{}", &crate::host::fs::sha256_bytes(question.as_bytes())[..16]));
    let kept = fs::read_to_string(&memo).ok().and_then(|t| Some(t.strip_prefix(&key)?.to_string()));
    if let Some(answer) = kept.filter(|a| valid(a)) {
        return Some(answer);
    }
    let answer = read(cmd).filter(|a| valid(a))?;
    // Not kept is only slower next time.
    let _ = crate::host::fs::write_file(&memo, format!("{key}{answer}"));
    Some(answer)
}

/// Runs `cmd` on our terminal (stdin, stdout and stderr inherited) to its end; it is killed
/// (SIGTERM) if we die first.
pub fn interactive(cmd: xshell::Cmd<'_>) -> std::io::Result<ExitStatus> {
    let mut command = std::process::Command::from(cmd);
    command.stdin(Stdio::inherit()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
    die_with_parent(&mut command, libc::SIGTERM);
    command.status()
}

/// Like [`output`], but not starting, or a status other than success, is an error naming the
/// command with the end of its stderr.
pub fn run_captured(cmd: xshell::Cmd<'_>) -> Result<std::process::Output> {
    let command_line = cmd.to_string();
    let output = output(cmd).map_err(|e| not_started(&command_line, e))?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(25)..].join("\n");
    Err(Error::Command {
        command: command_line,
        status: format!(": {}", output.status),
        details: tail,
    })
}

/// The error for `command_line` that could not start.
fn not_started(command_line: &str, e: io::Error) -> Error {
    let details = format!("could not run it: {e}; is it installed?");
    Error::Command { command: command_line.to_string(), status: String::new(), details }
}

/// The last `n` lines written to `log` after byte offset `from`.
pub fn tail(log: &Path, from: u64, n: usize) -> String {
    let Ok(mut f) = fs::File::open(log) else { return String::new() };
    let _ = f.seek(SeekFrom::Start(from));
    let lines: Vec<String> = BufReader::new(f).lines().map_while(|l| l.ok()).collect();
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// A program driven through its standard streams (a VM in a benchmark, a test's helper):
/// stdin piped to us, stdout and stderr read as lines. It runs in its own process group and
/// dies with us; dropping it kills and reaps it, so no `?` can leave it running.
pub struct Running {
    child: Child,
    command: String,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

/// How many of the last output lines an error shows.
const TAIL_LINES: usize = 20;

impl Running {
    /// Starts `cmd`, echoing it through `progress`.
    pub fn spawn(cmd: xshell::Cmd<'_>, progress: &dyn Progress) -> Result<Running> {
        use std::os::unix::process::CommandExt;
        let command = cmd.to_string();
        progress.command(&command);
        let mut std_command = std::process::Command::from(cmd);
        std_command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child =
            spawn(&mut std_command, libc::SIGKILL).map_err(|e| not_started(&command, e))?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in [stdout, stderr].into_iter().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n').map_while(|l| l.ok()) {
                    if tx.send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Running { child, command, stdin, lines, seen: Vec::new() })
    }

    /// Writes `bytes` to the program's stdin.
    pub fn write_stdin(&mut self, bytes: &[u8]) -> Result<()> {
        let written = match &mut self.stdin {
            Some(pipe) => pipe.write_all(bytes).and_then(|()| pipe.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        written.map_err(|e| self.error("", format!("cannot write to its stdin: {e}")))
    }

    /// Waits until the program prints a line containing `needle` (on stdout or stderr).
    /// Passing `deadline`, or the program closing its output first, is an error showing its
    /// last lines; the program is killed then.
    pub fn wait_for_line(&mut self, needle: &str, deadline: Instant) -> Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.remember(line);
                    if found {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    let why = format!("printed no line containing `{needle}` in time; killed it");
                    return Err(self.error("", why));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_until(deadline).map(|s| format!(": {s}"));
                    let why = format!("closed its output before printing `{needle}`");
                    return Err(self.error(&status.unwrap_or_default(), why));
                }
            }
        }
    }

    /// Waits for the program to exit until `deadline`, then kills it; an exit status other
    /// than success, or the deadline passing, is an error showing its last lines.
    pub fn wait_success(&mut self, deadline: Instant) -> Result<()> {
        match self.wait_until(deadline) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(self.error(&format!(": {status}"), "it failed".into())),
            None => {
                self.kill();
                Err(self.error("", "did not exit in time; killed it".into()))
            }
        }
    }

    /// The program's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the program exited; `None` if it still ran at `deadline`.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let (child, lines, seen) = (&mut self.child, &self.lines, &mut self.seen);
        let status = wait(child, Some(deadline), || {
            while let Ok(line) = lines.try_recv() {
                remember(seen, line);
            }
            true
        });
        status.ok().flatten()
    }

    fn remember(&mut self, line: String) {
        remember(&mut self.seen, line);
    }

    fn error(&mut self, status: &str, why: String) -> Error {
        while let Ok(line) = self.lines.try_recv() {
            self.remember(line);
        }
        let tail: Vec<String> = self.seen.iter().map(|l| format!("  | {l}")).collect();
        Error::Command {
            command: self.command.clone(),
            status: status.to_string(),
            details: format!("{why}\nlast lines:\n{}", tail.join("\n")),
        }
    }

    /// Kills the program (if it still runs) and reaps it.
    fn kill(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Keeps the last [`TAIL_LINES`] lines in `seen`.
fn remember(seen: &mut Vec<String>, line: String) {
    if seen.len() == TAIL_LINES {
        seen.remove(0);
    }
    seen.push(line);
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command for `program`, to be started with [`spawn`]: the one place a process command is
/// made from a path rather than an xshell `cmd!` (a VMM, a daemon).
pub(crate) fn command(program: &Path) -> std::process::Command {
    std::process::Command::new(program)
}

/// Starts `command` as a child that the kernel sends `signal` when we die first.
pub(crate) fn spawn(command: &mut std::process::Command, signal: libc::c_int) -> io::Result<Child> {
    die_with_parent(command, signal);
    command.spawn()
}

/// Waits for `child` to exit, polling: `None` once `deadline` passes or `go_on` (run between
/// polls: read a pipe, look for Ctrl-C) returns false first; the child then still runs. An
/// error while waiting kills and reaps it. The crate's one wait loop.
pub(crate) fn wait(
    child: &mut Child,
    deadline: Option<Instant>,
    mut go_on: impl FnMut() -> bool,
) -> io::Result<Option<ExitStatus>> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) || !go_on() {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Stops `child`: SIGTERM, then SIGKILL if it has not exited after `grace`; reaps it.
pub(crate) fn terminate(child: &mut Child, grace: std::time::Duration) -> io::Result<ExitStatus> {
    // SAFETY: kill with the pid of a child we have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    match wait(child, Some(Instant::now() + grace), || true)? {
        Some(status) => Ok(status),
        None => {
            let _ = child.kill();
            child.wait()
        }
    }
}

/// Makes the kernel send `signal` to the child started from `command` when this process's
/// spawning thread dies, so a killed busyroot never leaves make or QEMU running.
pub(crate) fn die_with_parent(command: &mut std::process::Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid), allocating nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Escapes a QEMU option value: commas are doubled so a path cannot end the option.
pub(crate) fn qemu_escape(path: &Path) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Quotes `s` for a POSIX shell when it holds anything but plainly safe characters.
pub fn shell_quote(s: &str) -> String {
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
    use crate::progress::Silent;
    use std::time::Duration;

    fn gone(pid: u32) -> bool {
        !Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn a_silent_program_is_killed_at_the_deadline() {
        let sh = xshell::Shell::new().unwrap();
        let mut silent = Running::spawn(xshell::cmd!(sh, "sleep 600"), &Silent).unwrap();
        let pid = silent.child.id();
        let deadline = Instant::now() + Duration::from_millis(200);
        let err = silent.wait_for_line("banner", deadline).unwrap_err().to_string();
        assert!(err.contains("sleep 600") && err.contains("in time"), "{err}");
        assert!(gone(pid), "the program must be killed and reaped at the deadline");
    }

    #[test]
    fn lines_are_awaited_then_stdin_drives_the_program_to_its_exit() {
        let sh = xshell::Shell::new().unwrap();
        let script = "echo starting; echo banner >&2; read word; echo got $word; exit 0";
        let mut p = Running::spawn(xshell::cmd!(sh, "sh -c {script}"), &Silent).unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        p.wait_for_line("banner", deadline).unwrap();
        p.write_stdin(b"poweroff\n").unwrap();
        p.wait_for_line("got poweroff", deadline).unwrap();
        p.wait_success(deadline).unwrap();
    }

    #[test]
    fn dropping_it_kills_the_program() {
        let sh = xshell::Shell::new().unwrap();
        let p = Running::spawn(xshell::cmd!(sh, "sleep 600"), &Silent).unwrap();
        let pid = p.child.id();
        drop(p);
        assert!(gone(pid));
    }

    #[test]
    fn an_early_exit_is_an_error_with_the_last_lines() {
        let sh = xshell::Shell::new().unwrap();
        let script = "echo no kernel here; exit 3";
        let mut p = Running::spawn(xshell::cmd!(sh, "sh -c {script}"), &Silent).unwrap();
        let deadline = Instant::now() + Duration::from_secs(600);
        let err = p.wait_for_line("banner", deadline).unwrap_err().to_string();
        assert!(err.contains("no kernel here") && err.contains("exit status: 3"), "{err}");
    }
}
