//! What a run found out: the outcome, each check, the payload command's status and output, and
//! the same as JUnit XML or JSON. The exit-code scheme lives here too.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::tap::{TapOutcome, TapReport};
use super::{Accel, CheckResult, EXIT_INTERRUPTED};
use crate::arch::Arch;

/// Exit code when the payload command ran past its timeout (as `timeout(1)` uses).
pub const EXIT_COMMAND_TIMEOUT: i32 = 124;
/// Exit code when the guest could not run the payload command: the boot failed, a check
/// failed, or the shares or modules could not be set up (as `git bisect run` and container
/// runtimes use 125 for "the tool, not the command, failed").
pub const EXIT_NOT_RUN: i32 = 125;

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
    /// The name used in reports.
    pub fn name(self) -> &'static str {
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

/// The overall result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Booted, every check passed, and the payload command (if any) ran to its end; its own
    /// exit status is in [`RunReport::command`].
    Passed,
    /// Booted, but these checks failed.
    ChecksFailed(Vec<String>),
    /// The guest could not load the modules or mount the shares; what it printed.
    SetupFailed(String),
    /// The payload command ran past its timeout and the VM was killed.
    CommandTimedOut,
    /// The guest did not come up, or its kernel died.
    BootFailed(BootFailure),
    /// Ctrl-C (or SIGTERM).
    Interrupted,
}

impl Outcome {
    /// One word for reports and JSON.
    pub fn verdict(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::ChecksFailed(_) => "checks-failed",
            Outcome::SetupFailed(_) => "setup-failed",
            Outcome::CommandTimedOut => "command-timeout",
            Outcome::BootFailed(_) => "boot-failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// The payload command and what became of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandResult {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Its exit status, if it finished.
    pub status: Option<i32>,
    /// From typing it to its status.
    pub duration: Duration,
    /// Everything it wrote on stdout, line by line.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
    /// Its stdout read as TAP or KTAP, when asked for.
    pub tap: Option<TapReport>,
}

/// Everything a run found out.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Guest architecture.
    pub arch: Arch,
    /// The kernel booted.
    pub kernel: PathBuf,
    /// The root file system: the image path and how it was attached.
    pub root: String,
    /// The accelerator.
    pub accel: Accel,
    /// The overall result.
    pub outcome: Outcome,
    /// Results of the checks that ran, in order.
    pub checks: Vec<CheckResult>,
    /// The payload command, if the run had one.
    pub command: Option<CommandResult>,
    /// Time from starting the VMM to the banner, if it came.
    pub boot_time: Option<Duration>,
    /// Time of the whole run.
    pub total_time: Duration,
    /// The saved console output.
    pub console_log: PathBuf,
    /// The last console lines, for a failure report.
    pub console_tail: Vec<String>,
    /// The VMM's process id, if it was started (it has been reaped when this is returned).
    pub vmm_pid: Option<u32>,
}

impl RunReport {
    /// The process exit code.
    ///
    /// Without a payload command: 0 passed, 1 a check failed, 2 the boot (or the guest's
    /// set-up) failed, 130 interrupted. With one: the command's own status when it ran, 124
    /// when it timed out, 125 when it could not run (boot, check or set-up failure), 130
    /// interrupted. A command may exit 124 or 125 itself; [`Outcome::verdict`] and the JSON
    /// report tell the cases apart.
    pub fn exit_code(&self) -> i32 {
        let command = self.command.as_ref();
        match (&self.outcome, command) {
            (Outcome::Interrupted, _) => EXIT_INTERRUPTED,
            (Outcome::Passed, None) => 0,
            (Outcome::ChecksFailed(_), None) => 1,
            (Outcome::SetupFailed(_) | Outcome::BootFailed(_), None) => 2,
            (Outcome::CommandTimedOut, _) => EXIT_COMMAND_TIMEOUT,
            (Outcome::Passed, Some(c)) => c.status.unwrap_or(EXIT_NOT_RUN),
            (_, Some(_)) => EXIT_NOT_RUN,
        }
    }

    /// One word for what happened, never `passed` unless the exit code is 0: the outcome's
    /// word, except that a command which ran and exited non-zero is `failed`, and one that
    /// reported no status is `error`.
    pub fn verdict(&self) -> &'static str {
        match (&self.outcome, &self.command) {
            (Outcome::Passed, Some(c)) => match c.status {
                Some(0) => "passed",
                Some(_) => "failed",
                None => "error",
            },
            (outcome, _) => outcome.verdict(),
        }
    }

    /// One line saying how the run ended, for stderr.
    pub fn verdict_line(&self) -> String {
        let code = self.exit_code();
        let what = match (&self.outcome, &self.command) {
            (Outcome::Passed, Some(c)) => match c.status {
                Some(s) => format!("the command exited with status {s}"),
                None => "the command did not report a status".to_string(),
            },
            (Outcome::Passed, None) => format!("passed: {} checks", self.checks.len()),
            (Outcome::ChecksFailed(names), _) => {
                format!(
                    "{} of {} checks failed: {}",
                    names.len(),
                    self.checks.len(),
                    names.join(", ")
                )
            }
            (Outcome::SetupFailed(output), _) => {
                format!("the guest could not set up the modules and shares: {}", first_line(output))
            }
            (Outcome::CommandTimedOut, _) => "the command timed out; the VM was killed".into(),
            (Outcome::BootFailed(f), _) => {
                format!("boot failed ({}): {}", f.kind.name(), f.message)
            }
            (Outcome::Interrupted, _) => "interrupted; the VM was stopped".into(),
        };
        format!("busyroot: {what} (exit {code})")
    }

    /// The report as JSON: what ran, every check and TAP case, the verdict and exit code.
    pub fn to_json(&self) -> serde_json::Value {
        let checks: Vec<_> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "command": c.command, "expected": c.expected,
                    "output": c.output, "passed": c.passed, "skipped": c.skipped,
                    "seconds": secs(c.duration),
                })
            })
            .collect();
        let command = self.command.as_ref().map(|c| {
            json!({
                "argv": c.argv, "status": c.status, "seconds": secs(c.duration),
                "stdout": c.stdout, "stderr": c.stderr,
                "tap": c.tap.as_ref().map(|t| t.cases.iter().map(|case| json!({
                    "number": case.number, "name": case.name,
                    "result": tap_word(&case.outcome), "diagnostics": case.diagnostics,
                })).collect::<Vec<_>>()),
            })
        });
        let failure = match &self.outcome {
            Outcome::BootFailed(f) => json!({ "kind": f.kind.name(), "message": f.message }),
            Outcome::SetupFailed(output) => json!({ "kind": "setup", "message": output }),
            _ => serde_json::Value::Null,
        };
        json!({
            "verdict": self.verdict(),
            "exit_code": self.exit_code(),
            "failure": failure,
            "arch": self.arch.name(),
            "kernel": self.kernel,
            "root": self.root,
            "accel": self.accel.name(),
            "boot_seconds": self.boot_time.map(secs),
            "total_seconds": secs(self.total_time),
            "checks": checks,
            "command": command,
            "console_log": self.console_log,
        })
    }

    /// The result as a JUnit XML document: a "boot" test case, one per check, one for the
    /// payload command, and one per TAP test point it printed.
    pub fn to_junit(&self) -> String {
        let suite = self.to_junit_suite(&format!("busyroot-boot-{}", self.arch));
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n{suite}</testsuites>\n")
    }

    /// The `<testsuite>` element of [`RunReport::to_junit`], named `name`, for a document
    /// that holds several runs.
    pub fn to_junit_suite(&self, name: &str) -> String {
        let mut cases = String::new();
        let (mut tests, mut failures, mut errors) = (1, 0, 0);
        let boot_secs = self.boot_time.unwrap_or(self.total_time).as_secs_f64();
        let boot_error = match &self.outcome {
            Outcome::BootFailed(f) => {
                Some((f.kind.name(), f.message.clone(), f.console_tail.join("\n")))
            }
            Outcome::Interrupted if self.boot_time.is_none() => {
                Some(("interrupted", "interrupted".to_string(), String::new()))
            }
            _ => None,
        };
        let body = boot_error.map(|(kind, message, tail)| {
            errors += 1;
            format!(
                "<error type=\"{}\" message=\"{}\">{}</error>",
                xml(kind),
                xml(&message),
                xml(&tail)
            )
        });
        case(&mut cases, "busyroot.boot", "boot to banner", boot_secs, body);
        for c in &self.checks {
            tests += 1;
            let body = if let Some(why) = &c.skipped {
                Some(format!("<skipped message=\"{}\"/>", xml(why)))
            } else if !c.passed {
                failures += 1;
                Some(format!(
                    "<failure message=\"expected {}\">command: {}\noutput:\n{}</failure>",
                    xml(&c.expected),
                    xml(&c.command),
                    xml(&c.output)
                ))
            } else {
                None
            };
            case(&mut cases, "busyroot.check", &c.name, c.duration.as_secs_f64(), body);
        }
        if let Some(command) = &self.command {
            tests += 1;
            let name = command.argv.join(" ");
            let body = match (command.status, &self.outcome) {
                (Some(0), _) => None,
                (Some(s), _) => {
                    failures += 1;
                    Some(format!(
                        "<failure message=\"exit status {s}\">{}</failure>",
                        xml(&command.stderr)
                    ))
                }
                (None, Outcome::CommandTimedOut) => {
                    errors += 1;
                    Some("<error type=\"timeout\" message=\"the command timed out\"/>".to_string())
                }
                (None, _) => Some("<skipped message=\"the command did not run\"/>".to_string()),
            };
            let out = format!(
                "{body}<system-out>{}</system-out>",
                xml(&command.stdout),
                body = body.unwrap_or_default()
            );
            case(&mut cases, "busyroot.command", &name, command.duration.as_secs_f64(), Some(out));
            for t in command.tap.iter().flat_map(|t| &t.cases) {
                tests += 1;
                let body = match &t.outcome {
                    TapOutcome::Fail => {
                        failures += 1;
                        Some(format!(
                            "<failure message=\"not ok {}\">{}</failure>",
                            t.number,
                            xml(&t.diagnostics)
                        ))
                    }
                    TapOutcome::Skip(why) => Some(format!("<skipped message=\"{}\"/>", xml(why))),
                    _ => None,
                };
                case(&mut cases, "busyroot.tap", &t.name, 0.0, body);
            }
        }
        format!(
            "  <testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" \
             errors=\"{errors}\" time=\"{time:.3}\">\n{cases}    <system-out>console log: \
             {log}</system-out>\n  </testsuite>\n",
            name = xml(name),
            time = self.total_time.as_secs_f64(),
            log = xml(&self.console_log.display().to_string()),
        )
    }
}

fn tap_word(outcome: &TapOutcome) -> &'static str {
    match outcome {
        TapOutcome::Pass => "pass",
        TapOutcome::Fail => "fail",
        TapOutcome::Skip(_) => "skip",
        TapOutcome::Todo(_) => "todo",
        TapOutcome::XFail(_) => "xfail",
    }
}

/// Appends one `<testcase>`, empty or holding `body`.
pub(crate) fn case(out: &mut String, class: &str, name: &str, secs: f64, body: Option<String>) {
    let _ = write!(
        out,
        "    <testcase classname=\"{class}\" name=\"{}\" time=\"{secs:.3}\"",
        xml(name)
    );
    match body {
        Some(body) => {
            let _ = writeln!(out, ">\n      {body}\n    </testcase>");
        }
        None => out.push_str("/>\n"),
    }
}

/// Seconds, to the millisecond, for the JSON reports.
pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}

pub(crate) fn xml(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Outcome, command: Option<CommandResult>) -> RunReport {
        RunReport {
            arch: Arch::X86_64,
            kernel: "/k".into(),
            root: "initramfs /i".into(),
            accel: Accel::Tcg,
            outcome,
            checks: vec![],
            command,
            boot_time: Some(Duration::from_secs(3)),
            total_time: Duration::from_secs(4),
            console_log: "/t/console.log".into(),
            console_tail: vec![],
            vmm_pid: Some(1),
        }
    }

    fn command(status: Option<i32>) -> CommandResult {
        CommandResult {
            argv: vec!["/t/prog".into(), "3".into()],
            status,
            duration: Duration::from_millis(20),
            stdout: "hello\n".into(),
            ..CommandResult::default()
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(report(Outcome::Passed, None).exit_code(), 0);
        assert_eq!(report(Outcome::ChecksFailed(vec!["x".into()]), None).exit_code(), 1);
        let f = BootFailure {
            kind: BootFailureKind::Panic,
            message: String::new(),
            console_tail: vec![],
        };
        assert_eq!(report(Outcome::BootFailed(f.clone()), None).exit_code(), 2);
        assert_eq!(report(Outcome::Interrupted, None).exit_code(), 130);
        // With a command, its status is the exit code, and busyroot's own failures are 124/125.
        for status in [0, 1, 3, 255] {
            assert_eq!(report(Outcome::Passed, Some(command(Some(status)))).exit_code(), status);
        }
        assert_eq!(report(Outcome::CommandTimedOut, Some(command(None))).exit_code(), 124);
        assert_eq!(report(Outcome::BootFailed(f), Some(command(None))).exit_code(), 125);
        assert_eq!(report(Outcome::SetupFailed("x".into()), Some(command(None))).exit_code(), 125);
    }

    #[test]
    fn json_tells_a_125_command_from_a_failed_boot() {
        let own = report(Outcome::Passed, Some(command(Some(125)))).to_json();
        assert_eq!(own["verdict"], "failed");
        assert_eq!(own["command"]["status"], 125);
        let f = BootFailure {
            kind: BootFailureKind::Timeout,
            message: "no banner".into(),
            console_tail: vec![],
        };
        let boot = report(Outcome::BootFailed(f), Some(command(None))).to_json();
        assert_eq!(boot["verdict"], "boot-failed");
        assert_eq!(boot["exit_code"], 125);
        assert_eq!(boot["failure"]["kind"], "timeout");
        assert!(boot["command"]["status"].is_null());
    }

    #[test]
    fn the_verdict_is_passed_only_with_exit_code_0() {
        let f =
            BootFailure { kind: BootFailureKind::Panic, message: "x".into(), console_tail: vec![] };
        let cases = [
            (report(Outcome::Passed, None), ("passed", 0)),
            (report(Outcome::Passed, Some(command(Some(0)))), ("passed", 0)),
            (report(Outcome::Passed, Some(command(Some(3)))), ("failed", 3)),
            (report(Outcome::Passed, Some(command(None))), ("error", 125)),
            (report(Outcome::ChecksFailed(vec!["x".into()]), None), ("checks-failed", 1)),
            (report(Outcome::CommandTimedOut, Some(command(None))), ("command-timeout", 124)),
            (report(Outcome::BootFailed(f.clone()), None), ("boot-failed", 2)),
            (report(Outcome::BootFailed(f), Some(command(None))), ("boot-failed", 125)),
            (report(Outcome::SetupFailed("x".into()), Some(command(None))), ("setup-failed", 125)),
            (report(Outcome::Interrupted, Some(command(None))), ("interrupted", 130)),
        ];
        for (r, expected) in &cases {
            assert_eq!((r.verdict(), r.exit_code()), *expected, "{:?}", r.outcome);
            assert_eq!(r.to_json()["verdict"], r.verdict());
            assert_eq!(r.to_json()["exit_code"], r.exit_code());
            assert!(r.verdict_line().starts_with("busyroot: "), "{}", r.verdict_line());
        }
    }

    #[test]
    fn junit_escapes_and_counts() {
        let mut r = report(Outcome::ChecksFailed(vec!["a<b".into()]), None);
        r.checks.push(CheckResult {
            name: "a<b".into(),
            command: "echo \"x\"".into(),
            expected: "output matching `^y$`".into(),
            output: "x & z".into(),
            passed: false,
            skipped: None,
            duration: Duration::from_millis(5),
        });
        let xml = r.to_junit();
        assert!(xml.contains("tests=\"2\" failures=\"1\" errors=\"0\""), "{xml}");
        assert!(xml.contains("name=\"a&lt;b\""));
        assert!(xml.contains("x &amp; z"));
        assert!(xml.contains("echo &quot;x&quot;"));
    }
}
