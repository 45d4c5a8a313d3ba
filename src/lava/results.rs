//! `lava-run`'s log read back: the per-case result lines, and the run's report.

use super::*;

/// One `"lvl": "results"` line of lava-run's log.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultLine {
    /// The test definition (`lava` for LAVA's own actions, `<stage>_<name>` for tests).
    pub definition: String,
    /// The case.
    pub case: String,
    /// `pass`, `fail`, `skip` or `unknown`.
    pub result: String,
    /// The duration LAVA measured, if it gave one.
    pub duration: Option<Duration>,
}

/// What lava-run's log says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LavaLog {
    /// Every result line, in order.
    pub results: Vec<ResultLine>,
    /// The guest's console lines (`"lvl": "target"`).
    pub console: Vec<String>,
    /// LAVA's error and exception messages.
    pub errors: Vec<String>,
}

impl LavaLog {
    /// The result of LAVA's own case `name` (`job`, `login-action`, …), the last if repeated.
    pub fn lava_case(&self, name: &str) -> Option<&ResultLine> {
        self.results.iter().rev().find(|r| r.definition == "lava" && r.case == name)
    }

    /// The result of test case `id` of busyroot's definition.
    pub fn test_case(&self, id: &str) -> Option<&ResultLine> {
        self.results.iter().rev().find(|r| {
            r.case == id
                && r.definition
                    .split_once('_')
                    .is_some_and(|(stage, name)| name == DEFINITION && stage.parse::<u32>().is_ok())
        })
    }

    /// What case `id` printed: the console lines between its begin and result lines.
    pub fn output_of(&self, id: &str) -> String {
        let begin = format!("{BEGIN} {id}");
        let result = format!("{RESULT} {id} ");
        let mut out = Vec::new();
        let mut inside = false;
        for line in &self.console {
            let line = line.trim_end_matches('\r');
            if line == begin {
                inside = true;
                out.clear();
            } else if inside && line.starts_with(&result) {
                inside = false;
            } else if inside {
                out.push(line);
            }
        }
        out.join("\n")
    }
}

/// Reads lava-run's log: one YAML mapping per line (`{"dt": …, "lvl": …, "msg": …}`),
/// mostly JSON, except that LAVA tags some strings with YAML's `!` (`"size": ! "1234"`).
/// Lines that are neither are skipped.
pub fn parse_log(text: &str) -> LavaLog {
    let mut log = LavaLog::default();
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(line)
            .or_else(|_| serde_json::from_str(&strip_yaml_tags(line)));
        let Ok(value) = parsed else { continue };
        let msg = &value["msg"];
        // A string as it is, anything else as JSON.
        let string = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        match value["lvl"].as_str() {
            Some("results") => {
                let field =
                    |key: &str| if msg[key].is_null() { String::new() } else { string(&msg[key]) };
                let duration = field("duration").parse::<f64>().ok().filter(|d| *d >= 0.0);
                log.results.push(ResultLine {
                    definition: field("definition"),
                    case: field("case"),
                    result: field("result"),
                    duration: duration.map(Duration::from_secs_f64),
                });
            }
            Some("target") => log.console.extend(msg.as_str().map(str::to_string)),
            Some("error" | "exception") => log.errors.push(string(msg)),
            _ => {}
        }
    }
    log
}

/// Removes YAML's non-specific tag (`! `) outside strings.
pub(super) fn strip_yaml_tags(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '!' && chars.peek() == Some(&' ') {
            chars.next();
        } else {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

/// What to put in the report besides the log.
#[derive(Debug, Clone)]
pub struct ReportContext<'a> {
    /// The cell that ran.
    pub cell: &'a Cell,
    /// Its job.
    pub job: &'a LavaJob,
    /// The kernel, as given.
    pub kernel: &'a Path,
    /// lava-run's log file.
    pub log_path: &'a Path,
    /// lava-run's process id.
    pub pid: Option<u32>,
    /// Wall time of the run.
    pub total_time: Duration,
    /// Whether lava-run was stopped at the deadline.
    pub timed_out: bool,
}

/// Turns lava-run's log into busyroot's [`RunReport`]: one check per case (a case with no
/// result line failed, as LAVA never ran it to its end), a boot failure when the guest never
/// reached the prompt, and a failed `lava job` check when the job itself did not complete.
pub fn report(ctx: &ReportContext<'_>, log: &LavaLog) -> RunReport {
    let login = log.lava_case("login-action");
    let booted = login.is_some_and(|l| l.result == "pass");
    let mut errors = log.errors.clone();
    if ctx.timed_out {
        errors.push(format!(
            "lava-run did not finish within the job's timeout of {} s and was stopped",
            ctx.job.timeout.as_secs()
        ));
    }
    let tail: Vec<String> =
        log.console.iter().rev().take(50).rev().map(|l| l.trim_end().to_string()).collect();
    let root = match ctx.cell.medium {
        Medium::Initramfs => "initramfs rootfs.cpio.gz".to_string(),
        Medium::Disk => format!("rootfs.ext4 on {}", ctx.cell.bus),
    };
    let mut checks = Vec::new();
    let outcome = if !booted {
        // A panic says more than LAVA's "the infrastructure is not working correctly".
        let panic = log.console.iter().find(|l| l.contains("Kernel panic - not syncing"));
        let (kind, message) = if let Some(line) = panic {
            (BootFailureKind::Panic, line.trim().to_string())
        } else {
            // LAVA's first error names the action that failed; its last is a generic summary.
            let first = if ctx.timed_out { errors.last() } else { errors.first() };
            let message = first.cloned().unwrap_or_else(|| {
                "the guest never showed its shell prompt to LAVA (no `login-action` result)".into()
            });
            let timeout = ctx.timed_out || message.contains("timed out");
            (if timeout { BootFailureKind::Timeout } else { BootFailureKind::VmmExited }, message)
        };
        Outcome::BootFailed(BootFailure { kind, message, console_tail: tail.clone() })
    } else {
        for case in &ctx.job.cases {
            let line = log.test_case(&case.id);
            let mut output = log.output_of(&case.id);
            if line.is_none() {
                output.push_str("\n(LAVA reported no result for this case)");
            }
            checks.push(CheckResult {
                name: case.name.clone(),
                command: case.command.clone(),
                expected: case.expected.clone(),
                output: output.trim().to_string(),
                passed: line.is_some_and(|l| l.result == "pass"),
                skipped: None,
                duration: line.and_then(|l| l.duration).unwrap_or_default(),
            });
        }
        if !log.lava_case("job").is_some_and(|j| j.result == "pass") {
            checks.push(CheckResult {
                name: "lava job".into(),
                expected: "the job completes".into(),
                output: errors.join("\n"),
                ..CheckResult::default()
            });
        }
        let failed: Vec<String> =
            checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect();
        if failed.is_empty() {
            Outcome::Passed
        } else {
            Outcome::ChecksFailed(failed)
        }
    };
    RunReport {
        arch: ctx.cell.arch,
        kernel: ctx.kernel.to_path_buf(),
        root,
        accel: ctx.cell.accel,
        outcome,
        checks,
        command: None,
        boot_time: login.filter(|_| booted).and_then(|l| l.duration),
        total_time: ctx.total_time,
        console_log: ctx.log_path.to_path_buf(),
        console_tail: tail,
        vmm_pid: ctx.pid,
    }
}
