//! One VM run from start to end: start the helpers and the VMM, wait for the banner, type the
//! guest protocol's steps (set-up, checks, the payload command), power off, check the disk.
//! Every path out of here kills what it started, including a panic and Ctrl-C.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use xshell::{cmd, Shell};

use super::channel::{self, ports, Channel, Ended, Input};
use super::check::{RunPlan, Timeouts};
use super::console::{Console, Stop};
use super::event::{Event, Observer};
use super::guest::{self, Frame, Tag};
use super::kernel::{inspect, KernelVerdict};
use super::process::{self, InterruptGuard, VmProcess};
use super::report::{BootFailure, BootFailureKind, CommandResult, Outcome, RunReport};
use super::share::{Transport, Virtiofsd};
use super::spec::ConsoleMode;
use super::{CheckResult, Root, VmSpec};
use crate::error::{Error, IoContext, Result};
use crate::host::fs::require_file;

/// The line `/etc/init.d/rcS` prints when the system is up.
pub const BANNER: &str = "Welcome to mini Linux";

impl RunPlan {
    /// A plan that boots, runs `command` and powers off, with no checks.
    pub fn command(command: Vec<String>, timeouts: Timeouts) -> RunPlan {
        RunPlan {
            banner: BANNER.to_string(),
            timeouts,
            checks: Vec::new(),
            fsck: false,
            modules: Vec::new(),
            command: Some(command),
            command_timeout: None,
            tap: false,
            stdin: Input::Null,
            dir: None,
        }
    }
}

/// Boots `spec`, runs `plan` in the guest, powers the guest off and, in check mode after a
/// disk boot, checks that the image is clean.
///
/// Failures of the guest are reported in [`RunReport::outcome`]; `Err` is for problems on the
/// host (no VMM program, unwritable log, invalid spec). The VMM and its helpers are never
/// left running: they are killed on every path out of this function, including a panic, and
/// on Ctrl-C.
pub fn run(
    sh: &Shell,
    spec: &VmSpec,
    plan: &RunPlan,
    observer: &dyn Observer,
) -> Result<RunReport> {
    preflight(spec)?;
    let started = Instant::now();
    let mut report = RunReport {
        arch: spec.arch,
        kernel: spec.kernel.clone(),
        root: describe_root(&spec.root),
        accel: spec.accel,
        outcome: Outcome::Passed,
        checks: Vec::new(),
        command: None,
        boot_time: None,
        total_time: Duration::ZERO,
        console_log: spec.console_log.clone(),
        console_tail: Vec::new(),
        vmm_pid: None,
    };
    let backend = spec.vmm.backend();
    match inspect(&spec.kernel, spec.arch, backend.kernel_formats(spec.arch))? {
        KernelVerdict::Fine => {}
        KernelVerdict::Doubtful(message) => {
            observer.event(Event::Note(format!("{message}; booting it anyway")))
        }
        KernelVerdict::Bad(message) => {
            let failure =
                BootFailure { kind: BootFailureKind::BadKernel, message, console_tail: Vec::new() };
            report.outcome = Outcome::BootFailed(failure);
            report.total_time = started.elapsed();
            mark_not_run(plan, &mut report);
            return Ok(report);
        }
    }

    let run_dir = run_dir(spec)?;
    let launch = backend.prepare(spec, ConsoleMode::Piped, &run_dir)?;
    let _interrupt = InterruptGuard::install();
    let daemons = start_daemons(spec, observer, started + Duration::from_secs(10))?;
    observer.event(Event::Command(launch.display()));
    let stdio = if backend.console_on_terminal() {
        process::Stdio::Terminal
    } else {
        process::Stdio::Piped
    };
    let mut vm = VmProcess::spawn(&launch.program, &launch.args, stdio)
        .map_err(|e| spawn_error(spec, &launch.program, e))?;
    report.vmm_pid = Some(vm.pid());
    backend.started(&launch, vm.pid())?;
    let mut streams =
        vm.take_stdio().map_err(|e| Error::io("open the console of", &launch.program, e))?;
    if let Some(console) = backend.console(&run_dir)? {
        let mut stdout = std::mem::replace(&mut streams.output, console.output);
        streams.input = console.input;
        // The VMM's own stdout is no console now, but stays read to its end (the VMM's exit),
        // so that the VMM neither blocks on a full pipe nor dies writing to a closed one.
        std::thread::spawn(move || io::copy(&mut stdout, &mut io::sink()));
    }
    let console = Console::attach(streams, &spec.console_log)?;
    let tag = Tag::random();
    let mut session = Session { vm, console, tag: tag.text(), observer, _daemons: daemons };
    session.console.ignore_panics_in(&session.tag);

    let sockets = ports::Sockets::new(&run_dir);
    match (&plan.command, spec.channel) {
        (Some(argv), Channel::Ports) if plan.checks.is_empty() => {
            let write_back = matches!(spec.root, Root::Disk { .. });
            session.drive_ports(&sockets, plan, argv, write_back, started, &mut report)
        }
        _ => session.drive(sh, spec, plan, &tag, started, &mut report),
    }
    drop(session);
    if spec.channel == Channel::Ports {
        sockets.remove();
    }
    report.total_time = started.elapsed();
    mark_not_run(plan, &mut report);
    Ok(report)
}

/// Records a planned command that never started (the boot, the set-up or a check failed
/// first) as one without a status, so that the exit code is busyroot's own (125), not the
/// code of a run without a command.
fn mark_not_run(plan: &RunPlan, report: &mut RunReport) {
    if let (Some(argv), None) = (&plan.command, &report.command) {
        report.command = Some(CommandResult { argv: argv.clone(), ..CommandResult::default() });
    }
}

/// Boots `spec` with the guest console on this terminal and returns the VMM's exit status
/// (128 + signal number if it was killed, 130 if we were). How to mount the shares and load
/// the modules is reported as notes: the console is the user's.
///
/// The terminal settings are saved first and restored after the VMM exits, even if it was
/// killed and could not restore them itself.
pub fn boot_interactive(spec: &VmSpec, modules: &[String], observer: &dyn Observer) -> Result<i32> {
    preflight(spec)?;
    let backend = spec.vmm.backend();
    let run_dir = run_dir(spec)?;
    let launch = backend.prepare(spec, ConsoleMode::Terminal, &run_dir)?;
    let _interrupt = process::InterruptGuard::install();
    let _daemons = start_daemons(spec, observer, Instant::now() + Duration::from_secs(10))?;
    observer.event(Event::Command(launch.display()));
    observer.event(Event::Note(backend.quit_hint()));
    if backend.logs_interactive_console() {
        observer.event(Event::Note(format!("console log: {}", spec.console_log.display())));
    }
    if !modules.is_empty() || !spec.shares.is_empty() {
        let setup = guest::setup_body(modules, &mounts(spec));
        observer.event(Event::Note(format!("in the guest, set up with: {setup}")));
    }
    let terminal = process::TerminalState::save();
    let mut vm = VmProcess::spawn(&launch.program, &launch.args, process::Stdio::Inherit)
        .map_err(|e| spawn_error(spec, &launch.program, e))?;
    backend.started(&launch, vm.pid())?;
    let status = vm.wait_interruptible();
    terminal.restore();
    status
}

/// Refuses what cannot start: a KVM-only backend without KVM, a missing kernel file.
fn preflight(spec: &VmSpec) -> Result<()> {
    let backend = spec.vmm.backend();
    spec.vmm.check_accel(spec.accel, &format!("the accelerator is {}", spec.accel))?;
    require_file("kernel image", &spec.kernel)?;
    for share in &spec.shares {
        if !backend.transports().contains(&share.transport) {
            return Err(Error::Other(format!(
                "{} cannot share `{}` over {}",
                backend.display_name(),
                share.host.display(),
                share.transport
            )));
        }
    }
    Ok(())
}

/// The directory of the console log, where sockets and backend files go too.
fn run_dir(spec: &VmSpec) -> Result<std::path::PathBuf> {
    let dir = spec.console_log.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_path("create directory", dir)?;
    std::path::absolute(dir).with_path("resolve", dir)
}

fn describe_root(root: &Root) -> String {
    match root {
        Root::Disk { image, bus } => format!("{} on {bus}", image.display()),
        Root::Initramfs(cpio) => format!("initramfs {}", cpio.display()),
    }
}

/// One `virtiofsd` per virtiofs share, each serving before the VMM starts.
fn start_daemons(
    spec: &VmSpec,
    observer: &dyn Observer,
    deadline: Instant,
) -> Result<Vec<Virtiofsd>> {
    let mut daemons = Vec::new();
    for share in spec.shares.iter().filter(|s| s.transport == Transport::Virtiofs) {
        let program = super::share::find_virtiofsd().ok_or_else(|| {
            Error::Other("`virtiofsd` is not installed; install it or set $VIRTIOFSD".into())
        })?;
        let args = Virtiofsd::args(share);
        let line = super::Launch { program: program.clone(), args, files: vec![] }.display();
        observer.event(Event::Command(line));
        daemons.push(Virtiofsd::start(&program, share, deadline)?);
    }
    Ok(daemons)
}

/// The guest-side mounts of `spec`'s shares: tag, directory, type, options.
pub(crate) fn mounts(spec: &VmSpec) -> Vec<(String, String, String, String)> {
    spec.shares
        .iter()
        .map(|s| {
            let (fstype, options) = s.transport.mount(s.readonly);
            (s.tag.clone(), s.guest.clone(), fstype.to_string(), options)
        })
        .collect()
}

fn spawn_error(spec: &VmSpec, program: &Path, err: io::Error) -> Error {
    let backend = spec.vmm.backend();
    if err.kind() == io::ErrorKind::NotFound {
        let name = backend.display_name();
        let what = match backend.env_var() {
            Some(var) => format!("{} ({name}; or set ${var} to the program)", program.display()),
            None => format!("{} ({name})", program.display()),
        };
        match backend.package(spec.arch) {
            Some(package) => {
                let mut missing = crate::error::MissingTools::default();
                missing.push(what, package);
                Error::MissingTools(missing)
            }
            None => Error::Other(format!(
                "cannot run {what}: there is no such program; install it, or name its path"
            )),
        }
    } else {
        Error::io("run", program, err)
    }
}

/// The VMM, its console and helpers; dropping it kills the VMM first, then collects the
/// readers, then stops the helpers.
struct Session<'a> {
    vm: VmProcess,
    console: Console,
    tag: String,
    observer: &'a dyn Observer,
    _daemons: Vec<Virtiofsd>,
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.vm.kill();
        self.console.finish();
    }
}

/// Which stream a payload line came on.
enum Stream {
    Out,
    Err,
}

/// What the step matcher hands back to the step loop.
enum StepEvent {
    Status(i32),
    /// Something finished inside the step (a check); its own deadline starts again.
    Progress,
}

impl Session<'_> {
    fn drive(
        &mut self,
        sh: &Shell,
        spec: &VmSpec,
        plan: &RunPlan,
        tag: &Tag,
        started: Instant,
        report: &mut RunReport,
    ) {
        let observer = self.observer;
        let boot_deadline = started + plan.timeouts.boot;
        let booted = self.console.wait_for(boot_deadline, |l| {
            if l.contains(&plan.banner) {
                return Some(());
            }
            observer.event(Event::Console(l.to_string()));
            None
        });
        if let Err(stop) = booted {
            report.outcome = self.boot_failure(stop, plan);
            return;
        }
        let t = started.elapsed();
        report.boot_time = Some(t);
        observer.event(Event::Booted(t));

        if let Err(stop) = self.start_protocol(tag, plan.timeouts.command) {
            let result = stop_result("the shell answers on the console", "", &stop, plan);
            observer.event(Event::Check(result.clone()));
            report.checks.push(result);
            return self.end(sh, spec, plan, report, Some(stop));
        }

        if !plan.modules.is_empty() || !spec.shares.is_empty() {
            let body = guest::setup_body(&plan.modules, &mounts(spec));
            let mut output = String::new();
            let deadline = plan.timeouts.command.max(Duration::from_secs(30));
            match self.step(0, &body, Some(deadline), |_, line| {
                output.push_str(line);
                output.push('\n');
                false
            }) {
                Ok(0) => {}
                Ok(status) => {
                    report.outcome =
                        Outcome::SetupFailed(format!("{output}(exit status {status})"));
                    return self.end(sh, spec, plan, report, None);
                }
                Err(stop) => return self.end(sh, spec, plan, report, Some(stop)),
            }
        }

        if let Some(stop) = self.run_checks(plan, report) {
            return self.end(sh, spec, plan, report, Some(stop));
        }

        if let Some(argv) = &plan.command {
            let first = spec.shares.first().map(|s| s.guest.clone());
            let dir = plan.dir.clone().or(first).unwrap_or_else(|| "/".into());
            let body = guest::command_body(&dir, argv);
            let t = Instant::now();
            observer.event(Event::CommandStarted(argv.clone()));
            let (mut stdout, mut stderr) = (String::new(), String::new());
            let status = self.step(1_000, &body, plan.command_timeout, |stream, line| {
                let (buffer, event) = match stream {
                    Stream::Out => (&mut stdout, Event::Stdout(line.to_string())),
                    Stream::Err => (&mut stderr, Event::Stderr(line.to_string())),
                };
                buffer.push_str(line);
                buffer.push('\n');
                observer.event(event);
                false
            });
            report.command = Some(CommandResult {
                argv: argv.clone(),
                status: status.as_ref().ok().copied(),
                tap: plan.tap.then(|| super::tap::parse_tap(&stdout)),
                duration: t.elapsed(),
                stdout,
                stderr,
            });
            return self.end(sh, spec, plan, report, status.err());
        }
        self.end(sh, spec, plan, report, None)
    }

    /// Runs the payload over virtio-serial ports: busyroot's payload init sets up and runs the
    /// command at once, the streams come byte for byte, and the guest powers off by itself, or,
    /// without a disk to `write_back`, is stopped once the streams are drained.
    fn drive_ports(
        &mut self,
        sockets: &ports::Sockets,
        plan: &RunPlan,
        argv: &[String],
        write_back: bool,
        started: Instant,
        report: &mut RunReport,
    ) {
        let plan =
            RunPlan { banner: "ready line of busyroot's payload init".into(), ..plan.clone() };
        let boot_deadline = started + plan.timeouts.boot;
        let Some(link) = sockets.connect(&mut self.vm, boot_deadline) else {
            let stop = if self.vm.try_wait().is_some() { Stop::Closed } else { Stop::Timeout };
            report.outcome = self.boot_failure(stop, &plan);
            return;
        };
        self.observer.event(Event::CommandStarted(argv.to_vec()));
        let end_tag = channel::end_tag();
        let payload = channel::drive(
            link,
            &end_tag,
            &plan.stdin,
            &mut self.console,
            self.observer,
            started,
            boot_deadline,
            plan.command_timeout,
            write_back.then_some(plan.timeouts.shutdown),
        );
        report.boot_time = payload.booted_after;
        let stdout = String::from_utf8_lossy(&payload.stdout).into_owned();
        let result = CommandResult {
            argv: argv.to_vec(),
            status: if let Ended::Status(status) = payload.ended { Some(status) } else { None },
            duration: payload.booted_after.map_or(Duration::ZERO, |t| started.elapsed() - t),
            tap: plan.tap.then(|| super::tap::parse_tap(&stdout)),
            stdout,
            stderr: String::from_utf8_lossy(&payload.stderr).into_owned(),
        };
        // A command that started has a result, whatever ended it.
        if !matches!(payload.ended, Ended::SetupFailed(_) | Ended::Boot(_)) {
            report.command = Some(result);
        }
        match payload.ended {
            Ended::Status(_) => {
                // The guest powers off by itself once the status is sent; once it said its file
                // systems are synced, or had none to sync, nothing is lost by not waiting.
                let deadline = Instant::now() + plan.timeouts.shutdown;
                if payload.settled {
                    self.vm.kill();
                } else if self.vm.wait_until(deadline).is_none() {
                    self.observer.event(Event::Note(format!(
                        "the guest did not power off within {:.0} s after the command; killed it",
                        plan.timeouts.shutdown.as_secs_f64()
                    )));
                }
            }
            Ended::SetupFailed(status) => {
                self.vm.kill();
                self.console.finish();
                let tail = self.console.tail().join("\n");
                report.outcome = Outcome::SetupFailed(format!("{tail}\n(exit status {status})"));
            }
            Ended::Boot(Stop::Closed) => {
                report.outcome =
                    self.init_failure().unwrap_or_else(|| self.boot_failure(Stop::Closed, &plan));
            }
            Ended::Boot(stop) => report.outcome = self.boot_failure(stop, &plan),
            Ended::Command(Stop::Timeout) => self.timed_out(report),
            Ended::Command(Stop::Interrupted) => report.outcome = Outcome::Interrupted,
            Ended::Command(stop) => report.outcome = self.boot_failure(stop, &plan),
            Ended::Garbled(what) => {
                let message = format!("the guest sent {what} on the status port");
                report.outcome = Outcome::BootFailed(BootFailure {
                    kind: BootFailureKind::VmmExited,
                    message,
                    console_tail: self.console.tail(),
                });
            }
        }
        if process::interrupted() {
            report.outcome = Outcome::Interrupted;
        }
    }

    /// Types the protocol's set-up line until the guest answers with its ready line.
    fn start_protocol(&mut self, tag: &Tag, timeout: Duration) -> Result<(), Stop> {
        let deadline = Instant::now() + timeout;
        let line = tag.setup_line();
        let tag_text = self.tag.clone();
        let observer = self.observer;
        loop {
            self.console.send(&line)?;
            // The first line may race the shell's start: type it again if nothing answers.
            let attempt = deadline.min(Instant::now() + timeout / 6);
            let ready = self.console.wait_for(attempt, |l| match guest::frame(l, &tag_text) {
                Some(Frame::Ready) => Some(()),
                _ => {
                    observer.event(Event::Console(l.to_string()));
                    None
                }
            });
            match ready {
                Ok(()) => return Ok(()),
                Err(Stop::Timeout) if Instant::now() < deadline => continue,
                Err(stop) => return Err(stop),
            }
        }
    }

    /// Runs `body` as step `id` and returns its exit status. `on_line` receives each line of
    /// its output and returns whether something finished in it, which restarts `timeout`.
    fn step(
        &mut self,
        id: u32,
        body: &str,
        timeout: Option<Duration>,
        mut on_line: impl FnMut(Stream, &str) -> bool,
    ) -> Result<i32, Stop> {
        self.console.send(&guest::step_line(id, body))?;
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let mut deadline = Instant::now() + timeout.unwrap_or(far);
        let (tag, observer) = (self.tag.clone(), self.observer);
        loop {
            let event = self.console.wait_for(deadline, |l| match guest::frame(l, &tag) {
                Some(Frame::Out(i, text)) if i == id => {
                    on_line(Stream::Out, text).then_some(StepEvent::Progress)
                }
                Some(Frame::Err(i, text)) if i == id => {
                    on_line(Stream::Err, text).then_some(StepEvent::Progress)
                }
                Some(Frame::Status(i, status)) if i == id => Some(StepEvent::Status(status)),
                Some(_) => None,
                None => {
                    if !l.is_empty() {
                        observer.event(Event::Console(l.to_string()));
                    }
                    None
                }
            })?;
            match event {
                StepEvent::Status(status) => return Ok(status),
                StepEvent::Progress => deadline = Instant::now() + timeout.unwrap_or(far),
            }
        }
    }

    /// Runs the plan's checks, as few steps as the line length allows; returns what stopped
    /// them early, if anything did.
    fn run_checks(&mut self, plan: &RunPlan, report: &mut RunReport) -> Option<Stop> {
        let observer = self.observer;
        let lines: Vec<(usize, &str)> =
            plan.checks.iter().enumerate().map(|(i, c)| (i, c.command())).collect();
        let tag = self.tag.clone();
        let mut next = 0;
        for (n, body) in guest::checks_bodies(&lines).iter().enumerate() {
            let mut output = String::new();
            let mut t = Instant::now();
            let done = self.step(n as u32 + 1, body, Some(plan.timeouts.command), |_, line| {
                let (before, marker) = guest::check_marker(line, &tag);
                if marker.is_none() || !before.is_empty() {
                    if !output.is_empty() {
                        output.push('\n');
                    }
                    output.push_str(before);
                }
                let Some((index, status)) = marker else { return false };
                let Some(check) = plan.checks.get(index) else { return false };
                let result = check.judge(std::mem::take(&mut output), status, t.elapsed());
                observer.event(Event::Check(result.clone()));
                report.checks.push(result);
                next = index + 1;
                t = Instant::now();
                true
            });
            if let Err(stop) = done {
                if let Some(check) = plan.checks.get(next) {
                    let result = stop_result(check.name(), check.command(), &stop, plan);
                    observer.event(Event::Check(result.clone()));
                    report.checks.push(result);
                }
                return Some(stop);
            }
        }
        None
    }

    /// Ends the run: powers off (unless `stopped` says the guest is gone or must be killed),
    /// checks the disk in check mode, and sets the outcome.
    fn end(
        &mut self,
        sh: &Shell,
        spec: &VmSpec,
        plan: &RunPlan,
        report: &mut RunReport,
        stopped: Option<Stop>,
    ) {
        let check_mode = !plan.checks.is_empty();
        match stopped {
            Some(Stop::Interrupted) => report.outcome = Outcome::Interrupted,
            Some(stop @ Stop::Panic(_)) => report.outcome = self.boot_failure(stop, plan),
            Some(Stop::Timeout) if report.command.is_some() => self.timed_out(report),
            Some(_) => {}
            None => {
                let result = self.power_off(spec, plan);
                let exited = result.passed;
                self.vm.kill();
                self.console.finish();
                if check_mode {
                    self.observer.event(Event::Check(result.clone()));
                    report.checks.push(result);
                }
                if process::interrupted() {
                    report.outcome = Outcome::Interrupted;
                    return;
                }
                if let (true, true, Root::Disk { image, .. }) = (check_mode, plan.fsck, &spec.root)
                {
                    let result = if exited {
                        fsck(sh, image)
                    } else {
                        skipped_fsck("the VM did not power off by itself")
                    };
                    self.observer.event(Event::Check(result.clone()));
                    report.checks.push(result);
                }
            }
        }
        if report.outcome == Outcome::Passed {
            let failed: Vec<String> =
                report.checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect();
            if !failed.is_empty() {
                report.outcome = Outcome::ChecksFailed(failed);
            }
        }
    }

    /// Stops a VM whose command ran past its timeout, keeping the console's last lines.
    fn timed_out(&mut self, report: &mut RunReport) {
        report.outcome = Outcome::CommandTimedOut;
        self.vm.kill();
        self.console.finish();
        report.console_tail = self.console.tail();
    }

    /// A set-up failure, when busyroot's payload init said on the console that a set-up step
    /// failed before it could open the status port (a module that virtio-serial itself needs,
    /// say). Nothing of the payload has run by then, so the line is the init's own.
    fn init_failure(&mut self) -> Option<Outcome> {
        self.vm.kill();
        self.console.finish();
        let tail = self.console.tail();
        let said = tail.iter().any(|line| line.starts_with(ports::FAILURE));
        said.then(|| Outcome::SetupFailed(tail.join("\n")))
    }

    /// Stops the VMM and explains a boot that ended with `stop`.
    fn boot_failure(&mut self, stop: Stop, plan: &RunPlan) -> Outcome {
        let (kind, message) = match stop {
            Stop::Interrupted => return Outcome::Interrupted,
            Stop::Panic(line) => (panic_kind(&line), line),
            Stop::Timeout => (
                BootFailureKind::Timeout,
                format!(
                    "no `{}` banner within {:.0} s (raise the boot timeout or \
                     $BUSYROOT_TIMEOUT_SCALE if the machine is just slow)",
                    plan.banner,
                    plan.timeouts.boot.as_secs_f64()
                ),
            ),
            Stop::Closed => {
                let status = self.vm.wait_until(Instant::now() + Duration::from_secs(5));
                let status =
                    status.map_or("unknown".to_string(), |s| process::exit_code(s).to_string());
                let mut message = format!(
                    "the VMM exited with status {status} before the `{}` banner",
                    plan.banner
                );
                self.console.finish();
                if let Some(first) = self.console.stderr().first() {
                    message.push_str(&format!(": {first}"));
                }
                (BootFailureKind::VmmExited, message)
            }
        };
        self.vm.kill();
        self.console.finish();
        let mut console_tail = self.console.tail();
        if !self.console.stderr().is_empty() {
            console_tail.push("--- VMM stderr ---".into());
            console_tail.extend(self.console.stderr().iter().cloned());
        }
        Outcome::BootFailed(BootFailure { kind, message, console_tail })
    }

    /// Types the backend's shutdown command (`reboot` for QEMU and kvmtool) and waits for the VMM to exit.
    fn power_off(&mut self, spec: &VmSpec, plan: &RunPlan) -> CheckResult {
        let shutdown = spec.vmm.backend().shutdown_command();
        let t = Instant::now();
        let deadline = t + plan.timeouts.shutdown;
        let mut result = CheckResult {
            name: "poweroff".into(),
            command: shutdown.into(),
            expected: format!(
                "the VMM to exit by itself within {:.0} s",
                plan.timeouts.shutdown.as_secs_f64()
            ),
            ..CheckResult::default()
        };
        let closed = self.console.send(shutdown).and_then(|()| self.console.wait_closed(deadline));
        match closed {
            // The console may also close before the write went through: the guest is going
            // down anyway.
            Ok(()) | Err(Stop::Closed) => match self.vm.wait_until(deadline) {
                Some(status) => {
                    result.output = format!("exited with status {}", process::exit_code(status));
                    result.passed = status.success();
                }
                None => result.output = "closed its console but did not exit".into(),
            },
            Err(Stop::Timeout) => result.output = "still running; killed".into(),
            Err(Stop::Panic(line)) => result.output = format!("the kernel panicked: {line}"),
            Err(Stop::Interrupted) => result.output = "interrupted".into(),
        }
        result.duration = t.elapsed();
        result
    }
}

/// Whether a panic line says the kernel could not start init, or something else.
fn panic_kind(line: &str) -> BootFailureKind {
    let no_init = ["No working init found", "Requested init"];
    if no_init.iter().any(|m| line.contains(m)) {
        BootFailureKind::NoInit
    } else {
        BootFailureKind::Panic
    }
}

/// The result of a check that ended with `stop` instead of its end marker.
fn stop_result(name: &str, command: &str, stop: &Stop, plan: &RunPlan) -> CheckResult {
    let output = match stop {
        Stop::Timeout => format!("(no answer within {:.0} s)", plan.timeouts.command.as_secs_f64()),
        Stop::Closed => "(the VMM exited)".to_string(),
        Stop::Panic(line) => format!("(the kernel panicked: {line})"),
        Stop::Interrupted => "(interrupted)".to_string(),
    };
    CheckResult {
        name: name.to_string(),
        command: command.to_string(),
        expected: "the command to finish".into(),
        output,
        ..CheckResult::default()
    }
}

/// `e2fsck -fn` on the image: clean means the guest unmounted it on the way down.
fn fsck(sh: &Shell, image: &Path) -> CheckResult {
    let t = Instant::now();
    let mut result = CheckResult {
        name: "image is clean after shutdown".into(),
        command: format!("e2fsck -fn {}", image.display()),
        expected: "e2fsck to find no errors (exit status 0)".into(),
        ..CheckResult::default()
    };
    let Some(e2fsck) = crate::host::tools::find_program("e2fsck") else {
        return skipped_fsck("e2fsck not found in $PATH, /usr/sbin or /sbin (install e2fsprogs)");
    };
    match crate::host::exec::output(cmd!(sh, "{e2fsck} -fn {image}")) {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            result.passed = out.status.success();
            // All is well: the summary line ("N/M files, …") says enough.
            result.output = match text.lines().rfind(|l| l.contains(" files")) {
                Some(summary) if result.passed => summary.trim().to_string(),
                _ => text.trim().to_string(),
            };
        }
        Err(e) => result.output = e.to_string(),
    }
    result.duration = t.elapsed();
    result
}

fn skipped_fsck(why: &str) -> CheckResult {
    CheckResult {
        name: "image is clean after shutdown".into(),
        command: "e2fsck -fn".into(),
        expected: "e2fsck to find no errors (exit status 0)".into(),
        passed: true,
        skipped: Some(why.to_string()),
        ..CheckResult::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_kinds() {
        let no_init = "[ 2.1] Kernel panic - not syncing: No working init found.  Try passing init= option to kernel.";
        assert_eq!(panic_kind(no_init), BootFailureKind::NoInit);
        let requested = "Kernel panic - not syncing: Requested init /bin/nope failed (error -2).";
        assert_eq!(panic_kind(requested), BootFailureKind::NoInit);
        let vfs =
            "[ 2.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)";
        assert_eq!(panic_kind(vfs), BootFailureKind::Panic);
    }

    #[test]
    fn missing_program_names_the_package() {
        let spec = VmSpec::new(
            crate::arch::Arch::X86_64,
            "/k".into(),
            Root::Initramfs("/i".into()),
            "/tmp/c.log".into(),
        );
        let program = Path::new("qemu-system-does-not-exist");
        let err = VmProcess::spawn(program, &[], process::Stdio::Piped)
            .map(|_| ())
            .map_err(|e| spawn_error(&spec, program, e))
            .unwrap_err()
            .to_string();
        assert!(err.contains("qemu-system-does-not-exist"), "{err}");
        assert!(err.contains("apt-get install qemu-system-x86"), "{err}");
        assert!(err.contains("$QEMU"), "{err}");
    }
}
