//! Check mode: boot to the init banner, drive the guest shell over the serial console, power
//! off, and verify the disk image is clean.
//!
//! Each command is typed as one line that prints a begin marker, runs the command, and prints
//! an end marker with the exit status. The markers are arithmetic expansions
//! (`br-$((7+1000))-begin` prints `br-1007-begin`), so the console's echo of the typed line
//! can never be mistaken for them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::{Regex, RegexBuilder};
use xshell::{cmd, Shell};

use super::console::{Console, Stop};
use super::kernel::{inspect, KernelVerdict};
use super::process::{self, InterruptGuard, VmProcess};
use super::{check_accel_supported, check_kernel_file, Accel, ConsoleMode, ExtraCheck, Root};
use super::{VmSpec, EXIT_INTERRUPTED};
use crate::arch::Arch;
use crate::error::{Error, IoContext, Result};

/// The line `/etc/init.d/rcS` prints when the system is up.
pub const BANNER: &str = "Welcome to mini Linux";

/// How long each phase may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From starting the VMM to the banner.
    pub boot: Duration,
    /// For one check command to finish.
    pub command: Duration,
    /// From `poweroff` to the VMM's exit.
    pub shutdown: Duration,
}

impl Timeouts {
    /// The defaults for `accel` (generous under TCG, tighter under KVM), with the boot
    /// timeout replaced by `boot_secs` if given, all multiplied by `scale`.
    pub fn new(accel: Accel, boot_secs: Option<u64>, scale: f64) -> Timeouts {
        let (boot, command, shutdown) = match accel {
            Accel::Tcg => (120, 30, 60),
            Accel::Kvm => (30, 10, 20),
        };
        let scaled = |secs: u64| Duration::from_secs_f64(secs as f64 * scale);
        Timeouts {
            boot: scaled(boot_secs.unwrap_or(boot)),
            command: scaled(command),
            shutdown: scaled(shutdown),
        }
    }

    /// [`Timeouts::new`] with the scale from `$BUSYROOT_TIMEOUT_SCALE` (default 1), for
    /// slow CI machines.
    pub fn from_env(accel: Accel, boot_secs: Option<u64>) -> Result<Timeouts> {
        let scale = match std::env::var("BUSYROOT_TIMEOUT_SCALE") {
            Ok(s) if !s.trim().is_empty() => match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => v,
                _ => {
                    return Err(Error::Other(format!(
                        "$BUSYROOT_TIMEOUT_SCALE is `{s}`; set it to a positive number such as 2"
                    )))
                }
            },
            _ => 1.0,
        };
        Ok(Timeouts::new(accel, boot_secs, scale))
    }
}

/// One command run in the guest and the regular expression its output must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Shown in the output and the JUnit report.
    pub name: String,
    /// One line of shell, run in a subshell with stdin from `/dev/null`, stderr merged
    /// into stdout, and stdout a pipe (not the console).
    pub command: String,
    /// Regular expression searched for in the output, in multi-line mode.
    pub expect: String,
    /// Whether the command must also exit with status 0.
    pub require_success: bool,
}

impl Check {
    /// A check; fails if `command` is not one line of text or `expect` is not a valid
    /// regular expression.
    pub fn new(name: &str, command: &str, expect: &str, require_success: bool) -> Result<Check> {
        if command.trim().is_empty() || command.chars().any(char::is_control) {
            return Err(Error::Other(format!(
                "check `{name}`: the command must be one non-empty line without tabs or \
                 control characters, got {command:?}"
            )));
        }
        compile(expect).map_err(|e| {
            Error::Other(format!("check `{name}`: invalid regular expression `{expect}`: {e}"))
        })?;
        Ok(Check {
            name: name.to_string(),
            command: command.to_string(),
            expect: expect.to_string(),
            require_success,
        })
    }

    /// A user's check: named after its command unless it has a name; the exit status is
    /// not looked at (append `; echo status=$?` to the command to check it).
    pub fn from_extra(extra: &ExtraCheck) -> Result<Check> {
        let name = extra.name.clone().unwrap_or_else(|| extra.command.clone());
        Check::new(&name, &extra.command, &extra.expect, false)
    }
}

fn compile(expect: &str) -> std::result::Result<Regex, regex::Error> {
    RegexBuilder::new(expect).multi_line(true).build()
}

/// What [`boot_check`] does after the boot.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckPlan {
    /// The line that means init is done (a substring match).
    pub banner: String,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Whether to run `e2fsck -fn` on a disk image after the guest powered off.
    pub fsck: bool,
}

impl CheckPlan {
    /// The built-in checks for `spec`: kernel version, root file system type and
    /// writability, the standard mounts, `/dev/console` and `/dev/null`, `id -u`, the
    /// `hostname`, a few applets, and `uname -m`.
    pub fn standard(spec: &VmSpec, hostname: &str, timeouts: Timeouts) -> CheckPlan {
        let mut checks = Vec::new();
        let mut add = |name: &str, command: &str, expect: &str| {
            checks
                .push(Check::new(name, command, expect, true).expect("built-in checks are valid"));
        };
        add("kernel version", "uname -r", r"\S");
        let root_type = match spec.root {
            Root::Disk { .. } => ("/ is ext4", "^ext4$"),
            Root::Initramfs(_) => ("/ is rootfs or tmpfs", "^(rootfs|tmpfs)$"),
        };
        add(root_type.0, &fstype_of("/"), root_type.1);
        add(
            "/ is writable",
            "echo busyroot-rw > /.busyroot-rw && sync && cat /.busyroot-rw && rm /.busyroot-rw",
            "^busyroot-rw$",
        );
        for (dir, fstype) in
            [("/proc", "proc"), ("/sys", "sysfs"), ("/tmp", "tmpfs"), ("/dev/pts", "devpts")]
        {
            add(&format!("{fstype} on {dir}"), &fstype_of(dir), &format!("^{fstype}$"));
        }
        // `ls -l` prints "crw-------  1 root root  5,  1 Jan  1 00:00 /dev/console".
        for (node, major, minor) in [("/dev/console", 5, 1), ("/dev/null", 1, 3)] {
            add(
                &format!("{node} is character device {major},{minor}"),
                &format!("ls -l {node}"),
                &format!(r"^c\S*\s+\d+\s+\S+\s+\S+\s+{major},\s*{minor}\s"),
            );
        }
        add("id -u is 0", "id -u", "^0$");
        add(
            &format!("hostname is {hostname}"),
            "hostname",
            &format!("^{}$", regex::escape(hostname)),
        );
        add("ls runs", "ls /", "^etc$");
        add("mount runs", "mount", "^proc on /proc type proc ");
        add("sh -c runs", "sh -c 'echo $((6 * 7))'", "^42$");
        let uname_m = spec.arch.info().uname_m;
        add(&format!("uname -m is {uname_m}"), "uname -m", &format!("^{uname_m}$"));
        CheckPlan {
            banner: BANNER.to_string(),
            checks,
            timeouts,
            fsck: matches!(spec.root, Root::Disk { .. }),
        }
    }

    /// Appends the user's checks.
    pub fn add_extra(&mut self, extra: &[ExtraCheck]) -> Result<()> {
        for e in extra {
            self.checks.push(Check::from_extra(e)?);
        }
        Ok(())
    }
}

/// Shell that prints the type of the file system mounted at `dir` (the last mount wins,
/// as a disk root is mounted over the initial rootfs), with nothing but shell built-ins.
fn fstype_of(dir: &str) -> String {
    format!(
        "t=none; while read -r dev mnt type rest; do [ \"$mnt\" = {dir} ] && t=$type; \
         done </proc/mounts; echo $t"
    )
}

/// Why the boot failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFailureKind {
    /// No banner before the boot timeout.
    Timeout,
    /// The kernel panicked.
    Panic,
    /// The kernel found no init to run.
    NoInit,
    /// The VMM exited (or failed) before the banner.
    VmmExited,
    /// The kernel file is not a kernel image for the architecture.
    BadKernel,
}

impl BootFailureKind {
    fn name(self) -> &'static str {
        match self {
            BootFailureKind::Timeout => "timeout",
            BootFailureKind::Panic => "kernel panic",
            BootFailureKind::NoInit => "no init",
            BootFailureKind::VmmExited => "VMM exited",
            BootFailureKind::BadKernel => "bad kernel",
        }
    }
}

/// A failed boot, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFailure {
    /// What kind of failure.
    pub kind: BootFailureKind,
    /// One line saying what happened (the panic line, the VMM's error, …).
    pub message: String,
    /// The last console lines (up to 50), then anything the VMM wrote on stderr.
    pub console_tail: Vec<String>,
}

/// The overall result of a check run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Booted, and every check passed.
    Passed,
    /// Booted, but these checks failed.
    ChecksFailed(Vec<String>),
    /// The guest did not come up, or its kernel died.
    BootFailed(BootFailure),
    /// Ctrl-C (or SIGTERM).
    Interrupted,
}

impl Outcome {
    /// The process exit code: 0 passed, 1 a check failed, 2 the boot failed, 130
    /// interrupted.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::ChecksFailed(_) => 1,
            Outcome::BootFailed(_) => 2,
            Outcome::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// The command typed, or a description for host-side steps.
    pub command: String,
    /// What was expected, in words.
    pub expected: String,
    /// What the guest (or host tool) printed.
    pub output: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why it did not run, if it was skipped (a skipped check counts as passed).
    pub skipped: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// Everything [`boot_check`] found out.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Guest architecture.
    pub arch: Arch,
    /// The overall result.
    pub outcome: Outcome,
    /// Results of the checks that ran, in order.
    pub checks: Vec<CheckResult>,
    /// Time from starting the VMM to the banner, if it came.
    pub boot_time: Option<Duration>,
    /// Time of the whole run.
    pub total_time: Duration,
    /// The saved console output.
    pub console_log: PathBuf,
    /// The VMM's process id, if it was started (it has been reaped when this is returned).
    pub vmm_pid: Option<u32>,
}

impl CheckReport {
    /// The process exit code; see [`Outcome::exit_code`].
    pub fn exit_code(&self) -> i32 {
        self.outcome.exit_code()
    }

    /// The result as a JUnit XML document: a "boot" test case, then one per check.
    pub fn to_junit(&self) -> String {
        let mut cases = String::new();
        let mut failures = 0;
        let mut errors = 0;
        let boot_secs = self.boot_time.unwrap_or(self.total_time).as_secs_f64();
        let _ = write!(cases, "    <testcase classname=\"busyroot.boot\" name=\"boot to banner\" time=\"{boot_secs:.3}\"");
        match &self.outcome {
            Outcome::BootFailed(f) => {
                errors += 1;
                let _ = write!(
                    cases,
                    ">\n      <error type=\"{}\" message=\"{}\">{}</error>\n    </testcase>\n",
                    xml(f.kind.name()),
                    xml(&f.message),
                    xml(&f.console_tail.join("\n"))
                );
            }
            Outcome::Interrupted if self.boot_time.is_none() => {
                errors += 1;
                cases.push_str(">\n      <error type=\"interrupted\" message=\"interrupted\"/>\n    </testcase>\n");
            }
            _ => cases.push_str("/>\n"),
        }
        for c in &self.checks {
            let _ = write!(
                cases,
                "    <testcase classname=\"busyroot.check\" name=\"{}\" time=\"{:.3}\"",
                xml(&c.name),
                c.duration.as_secs_f64()
            );
            if let Some(why) = &c.skipped {
                let _ = writeln!(
                    cases,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml(why)
                );
            } else if !c.passed {
                failures += 1;
                let _ = writeln!(
                    cases,
                    ">\n      <failure message=\"expected {}\">command: {}\noutput:\n{}</failure>\n    </testcase>",
                    xml(&c.expected),
                    xml(&c.command),
                    xml(&c.output)
                );
            } else {
                cases.push_str("/>\n");
            }
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite \
             name=\"busyroot-boot-{arch}\" tests=\"{tests}\" failures=\"{failures}\" \
             errors=\"{errors}\" time=\"{time:.3}\">\n{cases}    <system-out>console log: \
             {log}</system-out>\n  </testsuite>\n</testsuites>\n",
            arch = self.arch,
            tests = self.checks.len() + 1,
            time = self.total_time.as_secs_f64(),
            log = xml(&self.console_log.display().to_string()),
        )
    }
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The VMM and its console; dropping it kills the VMM first, then collects the readers.
struct Session {
    vm: VmProcess,
    console: Console,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.vm.kill();
        self.console.finish();
    }
}

impl Session {
    /// Stops the VMM and explains a boot that ended with `stop`.
    fn boot_failure(&mut self, stop: Stop, plan: &CheckPlan) -> Outcome {
        let (kind, message) = match stop {
            Stop::Interrupted => return Outcome::Interrupted,
            Stop::Panic(line) => (panic_kind(&line), line),
            Stop::Timeout => (
                BootFailureKind::Timeout,
                format!(
                    "no `{}` banner within {:.0} s (raise it with --timeout or \
                     $BUSYROOT_TIMEOUT_SCALE if the machine is just slow)",
                    plan.banner,
                    plan.timeouts.boot.as_secs_f64()
                ),
            ),
            Stop::Closed => {
                let status = self.vm.wait_until(Instant::now() + Duration::from_secs(5));
                let status =
                    status.map_or("unknown".to_string(), |s| process::exit_code(s).to_string());
                (
                    BootFailureKind::VmmExited,
                    format!(
                        "the VMM exited with status {status} before the `{}` banner",
                        plan.banner
                    ),
                )
            }
        };
        self.vm.kill();
        self.console.finish();
        let mut console_tail = self.console.tail();
        if !self.console.stderr().is_empty() {
            console_tail.push("--- VMM stderr ---".into());
            console_tail.extend(self.console.stderr().iter().cloned());
        }
        let mut message = message;
        if kind == BootFailureKind::VmmExited {
            if let Some(first) = self.console.stderr().first() {
                let _ = write!(message, ": {first}");
            }
        }
        Outcome::BootFailed(BootFailure { kind, message, console_tail })
    }

    /// Runs `command` in the guest shell, returning its output and exit status.
    /// `resend` types the line again when no begin marker arrived in that time (for the
    /// first command, which may race the shell's start).
    fn run(
        &mut self,
        id: u32,
        command: &str,
        timeout: Duration,
        resend: Option<Duration>,
    ) -> Result<(String, i32), Stop> {
        let tag = 1000 + id;
        // Piping through `cat` gives every command the same non-terminal stdout (no `ls`
        // columns, no colours) while the status is still the command's own.
        let line = format!(
            "{{ echo br-$(({id}+1000))-begin; (eval {}) </dev/null 2>&1; \
             echo br-$(({id}+1000))-end-$?; }} | cat",
            single_quote(command)
        );
        let begin = format!("br-{tag}-begin");
        let end = Regex::new(&format!(r"br-{tag}-end-(\d+)")).expect("valid regex");
        let deadline = Instant::now() + timeout;
        loop {
            self.console.send(&line)?;
            let attempt = resend.map_or(deadline, |r| deadline.min(Instant::now() + r));
            match self.console.wait_for(attempt, |l| l.contains(&begin).then_some(())) {
                Ok(()) => break,
                Err(Stop::Timeout) if Instant::now() < deadline => continue,
                Err(stop) => return Err(stop),
            }
        }
        let mut output: Vec<String> = Vec::new();
        let status = self.console.wait_for(deadline, |l| match end.captures(l) {
            Some(c) => {
                let before = &l[..c.get(0).expect("whole match").start()];
                if !before.is_empty() {
                    output.push(before.to_string());
                }
                Some(c[1].parse::<i32>().unwrap_or(-1))
            }
            None => {
                output.push(l.to_string());
                None
            }
        })?;
        Ok((output.join("\n"), status))
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

/// `'text'` for a POSIX shell.
fn single_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Boots `spec`, waits for the banner, runs `plan`'s checks in the guest shell, powers the
/// guest off and, after a disk boot, checks that the image is clean.
///
/// Progress and each check's result are printed as they happen. Failures of the guest are
/// reported in [`CheckReport::outcome`]; `Err` is for problems on the host (no VMM program,
/// unwritable log, invalid spec). The VMM is never left running: it is killed on every
/// path out of this function, including a panic, and on Ctrl-C.
pub fn boot_check(sh: &Shell, spec: &VmSpec, plan: &CheckPlan) -> Result<CheckReport> {
    check_accel_supported(spec)?;
    check_kernel_file(spec)?;
    let started = Instant::now();
    let mut report = CheckReport {
        arch: spec.arch,
        outcome: Outcome::Passed,
        checks: Vec::new(),
        boot_time: None,
        total_time: Duration::ZERO,
        console_log: spec.console_log.clone(),
        vmm_pid: None,
    };
    let finish = |mut report: CheckReport| -> Result<CheckReport> {
        report.total_time = started.elapsed();
        print_summary(&report);
        Ok(report)
    };

    match inspect(&spec.kernel, spec.arch)? {
        KernelVerdict::Fine => {}
        KernelVerdict::Doubtful(message) => eprintln!("warning: {message}; booting it anyway"),
        KernelVerdict::Bad(message) => {
            report.outcome = Outcome::BootFailed(BootFailure {
                kind: BootFailureKind::BadKernel,
                message,
                console_tail: Vec::new(),
            });
            return finish(report);
        }
    }

    let args = spec.vmm.backend().args(spec, &ConsoleMode::Piped)?;
    if let Some(dir) = spec.console_log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_path("create directory", dir)?;
    }
    println!("$ {}", spec.display_command(&args));
    let _interrupt = InterruptGuard::install();
    let mut vm = VmProcess::spawn(spec, &args, process::Stdio::Piped)?;
    report.vmm_pid = Some(vm.pid());
    let console = Console::attach(vm.take_stdio(), &spec.console_log)?;
    let mut session = Session { vm, console };

    let boot_deadline = started + plan.timeouts.boot;
    match session.console.wait_for(boot_deadline, |l| l.contains(&plan.banner).then_some(())) {
        Ok(()) => {
            let t = started.elapsed();
            report.boot_time = Some(t);
            println!("booted: `{}` after {:.1} s", plan.banner, t.as_secs_f64());
        }
        Err(stop) => {
            report.outcome = session.boot_failure(stop, plan);
            drop(session);
            return finish(report);
        }
    }

    // The first command also quiets kernel messages so they cannot interleave with the
    // output of the checks; it is typed again until the shell answers.
    let t = Instant::now();
    let probe = session.run(
        0,
        "dmesg -n 1 2>/dev/null; true",
        plan.timeouts.command,
        Some(plan.timeouts.command / 6),
    );
    let mut stopped = match probe {
        Ok(_) => None,
        Err(stop) => {
            let result = stop_result("the shell answers on the console", "", &stop, plan, t);
            print_check(&result);
            report.checks.push(result);
            Some(stop)
        }
    };

    for (i, check) in plan.checks.iter().enumerate() {
        if stopped.is_some() {
            break;
        }
        let t = Instant::now();
        let result = match session.run(i as u32 + 1, &check.command, plan.timeouts.command, None) {
            Ok((output, status)) => {
                let matched =
                    compile(&check.expect).map(|re| re.is_match(&output)).unwrap_or(false);
                let status_ok = !check.require_success || status == 0;
                let mut expected = format!("output matching `{}`", check.expect);
                if check.require_success {
                    expected.push_str(" and exit status 0");
                }
                let mut shown = output;
                if !status_ok {
                    let _ = write!(shown, "\n(exit status {status})");
                }
                CheckResult {
                    name: check.name.clone(),
                    command: check.command.clone(),
                    expected,
                    output: shown,
                    passed: matched && status_ok,
                    skipped: None,
                    duration: t.elapsed(),
                }
            }
            Err(stop) => {
                let result = stop_result(&check.name, &check.command, &stop, plan, t);
                stopped = Some(stop);
                result
            }
        };
        print_check(&result);
        report.checks.push(result);
    }

    match stopped {
        Some(Stop::Interrupted) => {
            report.outcome = Outcome::Interrupted;
            drop(session);
            return finish(report);
        }
        Some(stop @ Stop::Panic(_)) => {
            report.outcome = session.boot_failure(stop, plan);
            drop(session);
            return finish(report);
        }
        Some(_) => {}
        None => {
            let result = power_off(&mut session, plan);
            let exited = result.passed;
            print_check(&result);
            report.checks.push(result);
            drop(session);
            if process::interrupted() {
                report.outcome = Outcome::Interrupted;
                return finish(report);
            }
            if plan.fsck {
                if let Root::Disk { image, .. } = &spec.root {
                    let result = if exited {
                        fsck(sh, image)
                    } else {
                        skipped_fsck("the VM did not power off by itself")
                    };
                    print_check(&result);
                    report.checks.push(result);
                }
            }
        }
    }

    let failed: Vec<String> =
        report.checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect();
    report.outcome =
        if failed.is_empty() { Outcome::Passed } else { Outcome::ChecksFailed(failed) };
    finish(report)
}

/// The result of a check that ended with `stop` instead of its end marker.
fn stop_result(
    name: &str,
    command: &str,
    stop: &Stop,
    plan: &CheckPlan,
    t: Instant,
) -> CheckResult {
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
        passed: false,
        skipped: None,
        duration: t.elapsed(),
    }
}

/// Types `poweroff` and waits for the VMM to exit by itself.
fn power_off(session: &mut Session, plan: &CheckPlan) -> CheckResult {
    let t = Instant::now();
    let deadline = t + plan.timeouts.shutdown;
    let mut result = CheckResult {
        name: "poweroff".into(),
        command: "poweroff".into(),
        expected: format!(
            "the VMM to exit by itself within {:.0} s",
            plan.timeouts.shutdown.as_secs_f64()
        ),
        output: String::new(),
        passed: false,
        skipped: None,
        duration: Duration::ZERO,
    };
    let closed =
        session.console.send("poweroff").and_then(|()| session.console.wait_closed(deadline));
    match closed {
        // The console may also close before the write went through: the guest is going
        // down anyway.
        Ok(()) | Err(Stop::Closed) => match session.vm.wait_until(deadline) {
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

/// `e2fsck -fn` on the image: clean means the guest unmounted it on the way down.
fn fsck(sh: &Shell, image: &Path) -> CheckResult {
    let t = Instant::now();
    let mut result = CheckResult {
        name: "image is clean after shutdown".into(),
        command: format!("e2fsck -fn {}", image.display()),
        expected: "e2fsck to find no errors (exit status 0)".into(),
        output: String::new(),
        passed: false,
        skipped: None,
        duration: Duration::ZERO,
    };
    let Some(e2fsck) = crate::hosttools::find_program("e2fsck") else {
        return skipped_fsck("e2fsck not found in $PATH, /usr/sbin or /sbin (install e2fsprogs)");
    };
    match cmd!(sh, "{e2fsck} -fn {image}").quiet().ignore_status().output() {
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
        output: String::new(),
        passed: true,
        skipped: Some(why.to_string()),
        duration: Duration::ZERO,
    }
}

fn first_line(text: &str) -> &str {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    match line.char_indices().nth(72) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

fn print_check(result: &CheckResult) {
    if let Some(why) = &result.skipped {
        println!("  skip  {}: {why}", result.name);
    } else if result.passed {
        println!("  ok    {}: {}", result.name, first_line(&result.output));
    } else {
        println!("  FAIL  {}", result.name);
        if !result.command.is_empty() {
            println!("        command:  {}", result.command);
        }
        println!("        expected: {}", result.expected);
        let mut lines = result.output.lines();
        println!("        got:      {}", lines.next().unwrap_or("(nothing)"));
        for line in lines.take(40) {
            println!("                  {line}");
        }
    }
}

fn print_summary(report: &CheckReport) {
    match &report.outcome {
        Outcome::Passed => println!(
            "passed: {} checks in {:.1} s",
            report.checks.len(),
            report.total_time.as_secs_f64()
        ),
        Outcome::ChecksFailed(names) => {
            println!(
                "failed: {} of {} checks: {}",
                names.len(),
                report.checks.len(),
                names.join(", ")
            )
        }
        Outcome::BootFailed(f) => {
            println!("boot failed ({}): {}", f.kind.name(), f.message);
            if !f.console_tail.is_empty() {
                println!("last console lines:");
                for line in &f.console_tail {
                    println!("  | {line}");
                }
            }
        }
        Outcome::Interrupted => println!("interrupted; the VM was stopped"),
    }
    if report.vmm_pid.is_some() {
        println!("console log: {}", report.console_log.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{RootBus, Vmm};

    fn spec(root: Root) -> VmSpec {
        VmSpec {
            arch: Arch::X86_64,
            vmm: Vmm::Qemu,
            program: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            kernel: "/k".into(),
            root,
            append: vec![],
            mem_mib: 256,
            cpus: 1,
            console_log: "/t/console.log".into(),
        }
    }

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
    fn timeouts_scale() {
        let t = Timeouts::new(Accel::Tcg, None, 1.0);
        assert_eq!(t.boot, Duration::from_secs(120));
        let t = Timeouts::new(Accel::Kvm, Some(10), 2.5);
        assert_eq!(t.boot, Duration::from_secs(25));
        assert_eq!(t.command, Duration::from_secs(25));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Passed.exit_code(), 0);
        assert_eq!(Outcome::ChecksFailed(vec!["x".into()]).exit_code(), 1);
        let f = BootFailure {
            kind: BootFailureKind::Panic,
            message: String::new(),
            console_tail: vec![],
        };
        assert_eq!(Outcome::BootFailed(f).exit_code(), 2);
        assert_eq!(Outcome::Interrupted.exit_code(), 130);
    }

    #[test]
    fn standard_plan_depends_on_root() {
        let t = Timeouts::new(Accel::Tcg, None, 1.0);
        let disk = CheckPlan::standard(
            &spec(Root::Disk { image: "/i".into(), bus: RootBus::Nvme }),
            "h.x",
            t,
        );
        assert!(disk.fsck);
        assert!(disk.checks.iter().any(|c| c.name == "/ is ext4"));
        assert!(disk.checks.iter().any(|c| c.expect == r"^h\.x$"));
        let initramfs = CheckPlan::standard(&spec(Root::Initramfs("/i".into())), "h", t);
        assert!(!initramfs.fsck);
        assert!(initramfs.checks.iter().any(|c| c.expect == "^(rootfs|tmpfs)$"));
    }

    #[test]
    fn device_regexes_match_busybox_ls() {
        let plan = CheckPlan::standard(
            &spec(Root::Initramfs("/i".into())),
            "h",
            Timeouts::new(Accel::Tcg, None, 1.0),
        );
        let console = plan.checks.iter().find(|c| c.command == "ls -l /dev/console").unwrap();
        let re = compile(&console.expect).unwrap();
        assert!(
            re.is_match("crw-------    1 root     root        5,   1 Jan  1 00:00 /dev/console")
        );
        assert!(
            !re.is_match("crw-------    1 root     root        4,  64 Jan  1 00:00 /dev/console")
        );
        assert!(
            !re.is_match("-rw-r--r--    1 root     root        5,   1 Jan  1 00:00 /dev/console")
        );
    }

    #[test]
    fn extra_checks_are_validated() {
        let ok = ExtraCheck { name: None, command: "uname -s".into(), expect: "^Linux$".into() };
        assert_eq!(Check::from_extra(&ok).unwrap().name, "uname -s");
        let bad_re = ExtraCheck { expect: "(".into(), ..ok.clone() };
        assert!(Check::from_extra(&bad_re).unwrap_err().to_string().contains("regular expression"));
        let two_lines = ExtraCheck { command: "true\ntrue".into(), ..ok };
        assert!(Check::from_extra(&two_lines)
            .unwrap_err()
            .to_string()
            .contains("one non-empty line"));
    }

    #[test]
    fn junit_escapes_and_counts() {
        let report = CheckReport {
            arch: Arch::X86_64,
            outcome: Outcome::ChecksFailed(vec!["a<b".into()]),
            checks: vec![CheckResult {
                name: "a<b".into(),
                command: "echo \"x\"".into(),
                expected: "output matching `^y$`".into(),
                output: "x & z".into(),
                passed: false,
                skipped: None,
                duration: Duration::from_millis(5),
            }],
            boot_time: Some(Duration::from_secs(3)),
            total_time: Duration::from_secs(4),
            console_log: "/t/console.log".into(),
            vmm_pid: Some(1),
        };
        let xml = report.to_junit();
        assert!(xml.contains("tests=\"2\" failures=\"1\" errors=\"0\""), "{xml}");
        assert!(xml.contains("name=\"a&lt;b\""));
        assert!(xml.contains("x &amp; z"));
        assert!(xml.contains("echo &quot;x&quot;"));
    }
}
