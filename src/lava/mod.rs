//! LAVA: for one cell (arch, kernel, root medium, checks and payload), a job definition, a
//! device dictionary for QEMU and an artifact directory a lab can fetch from; running the job
//! with a local `lava-run`; and the per-case results read back from its log.
//!
//! Both YAML files are written as JSON, which is YAML too, so that every string is quoted
//! exactly. The tests are busyroot's checks and the payload command, each judged in the guest
//! by BusyBox's shell and `grep -E` and reported as a LAVA test case: in an `interactive` test
//! through a result line the job's `successes` and `failures` patterns match, in a
//! `lava-test-shell` test with `lava-test-case`. `lava-run` itself exits 0 whenever the job ran,
//! whatever its cases did, so the verdict comes from the `"lvl": "results"` lines of its log.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::arch::Arch;
use crate::config::Medium;
use crate::error::{Error, IoContext, Result};
use crate::host::exec;
use crate::host::fs::{copy_file, sha256_bytes, sha256_file, write_file};
use crate::vm::{
    self, qemu, shell_quote, Accel, BootFailure, BootFailureKind, Check, CheckResult, Outcome,
    Root, RootBus, RunReport, VmSpec,
};

mod artifacts;
mod ere;
mod job;
mod results;
mod run;

pub use artifacts::*;
pub use ere::*;
pub use job::*;
pub use results::*;
pub use run::*;

/// A regular expression for busyroot's shell prompt (`PS1='[\u@\h \W]# '` in the skeleton's
/// `/etc/profile`), in Python's syntax as LAVA matches it.
pub const PROMPT: &str = r"\[root@[^ \]]+ [^\]]*\]# ";

/// The name of the test definition (and interactive script) the cases belong to; LAVA reports
/// them under `<stage>_busyroot`.
pub const DEFINITION: &str = "busyroot";

/// Starts the guest's line before each case's output; the guest expands it from a variable, so
/// the echo of the typed command never contains it.
const BEGIN: &str = "BUSYROOT-OUT";
/// Starts the guest's result line of each case: `BUSYROOT-CASE <id> pass|fail`.
const RESULT: &str = "BUSYROOT-CASE";

/// How the job runs its tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStyle {
    /// An `interactive` test: LAVA types each case at the shell prompt and matches its result
    /// line. Needs nothing in the image.
    Interactive,
    /// A `lava-test-shell` test: LAVA appends its test overlay to the initramfs and the cases
    /// report through `lava-test-case`. Only with the initramfs, as putting the overlay into an
    /// ext4 image needs libguestfs on the worker.
    TestShell,
}

/// One test case of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The LAVA test case id (`[-_a-zA-Z0-9.]+`), unique in the job.
    pub id: String,
    /// busyroot's name for it (the check's name, or `command: …` for the payload).
    pub name: String,
    /// The shell command the guest runs.
    pub command: String,
    /// What passing means, in words.
    pub expected: String,
    /// The line of shell LAVA types or runs: the command, its judgement, and the report.
    pub script: String,
}

/// What to test: one cell of a matrix.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Guest architecture.
    pub arch: Arch,
    /// The root medium: the initramfs, or the disk on `bus`.
    pub medium: Medium,
    /// The bus of the root disk. Default: virtio.
    pub bus: RootBus,
    /// How the tests run.
    pub style: TestStyle,
    /// The checks, in order (usually `RunPlan::standard(..).checks`).
    pub checks: Vec<Check>,
    /// The payload command, run as root after the checks; passes when it exits 0.
    pub command: Option<Vec<String>>,
    /// The accelerator of the local device dictionary.
    pub accel: Accel,
    /// Guest memory in MiB.
    pub mem_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// The QEMU program of the local device dictionary.
    pub qemu: PathBuf,
    /// Arguments appended to the kernel command line.
    pub append: Vec<String>,
    /// Time to the shell prompt.
    pub boot_timeout: Duration,
    /// Time for each check.
    pub check_timeout: Duration,
    /// Time for the payload command.
    pub command_timeout: Duration,
}

impl Cell {
    /// A cell with the QEMU defaults: TCG, 256 MiB, one CPU (a LAVA worker runs several
    /// jobs at once), `qemu-system-<arch>` from `$PATH`, and TCG's timeouts.
    pub fn new(arch: Arch, medium: Medium, style: TestStyle, checks: Vec<Check>) -> Cell {
        let timeouts = vm::Timeouts::new(Accel::Tcg, None, 1.0);
        Cell {
            arch,
            medium,
            bus: RootBus::Virtio,
            style,
            checks,
            command: None,
            accel: Accel::Tcg,
            mem_mib: crate::config::DEFAULT_MEM_MIB,
            cpus: 1,
            qemu: PathBuf::from(arch.info().qemu),
            append: Vec::new(),
            boot_timeout: timeouts.boot,
            check_timeout: timeouts.command,
            command_timeout: Duration::from_secs(600),
        }
    }

    /// The [`VmSpec`] whose QEMU arguments the job and device use, with LAVA's placeholders
    /// (`{kernel}`, `{rootfs}`) for the downloaded files.
    fn spec(&self) -> VmSpec {
        let root = match self.medium {
            Medium::Initramfs => Root::Initramfs(PathBuf::from("{rootfs}")),
            Medium::Disk => Root::Disk { image: PathBuf::from("{rootfs}"), bus: self.bus },
        };
        let mut spec = VmSpec::new(self.arch, "{kernel}".into(), root, PathBuf::new());
        spec.program = self.qemu.clone();
        spec.accel = self.accel;
        spec.mem_mib = self.mem_mib;
        spec.cpus = self.cpus;
        spec.append = self.append.clone();
        spec
    }

    /// The job's cases: one per check, then the payload command.
    pub fn cases(&self) -> Result<Vec<Case>> {
        let mut ids = Vec::new();
        let mut cases = Vec::new();
        for check in &self.checks {
            let id = unique_id(&mut ids, check.name());
            let pattern = ere(check.expect()).map_err(|why| {
                Error::Other(format!(
                    "check `{}`: its regular expression `{}` cannot be matched in the guest by \
                     `grep -E`: {why}; rewrite it without that construct",
                    check.name(),
                    check.expect()
                ))
            })?;
            let (status, and_status) = if check.requires_success() {
                ("[ \"$s\" = 0 ] && ", " and exit status 0")
            } else {
                ("", "")
            };
            let judge = format!(
                "s=0; o=$( ( {cmd} ) </dev/null 2>&1 ) || s=$?; printf '%s\\n' \"$o\"; r=fail; \
                 if {status}printf '%s\\n' \"$o\" | grep -Eq -e {pattern}; then r=pass; fi",
                cmd = check.command(),
                pattern = shell_quote(&pattern),
            );
            let expected = format!("output matching `{}`{and_status}", check.expect());
            cases.push(self.case(id, check.name(), check.command(), &expected, &judge));
        }
        if let Some(argv) = &self.command {
            let line = argv.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ");
            let name = format!("command: {}", argv.join(" "));
            let id = unique_id(&mut ids, "command");
            let judge = format!(
                "s=0; ( {line} ) </dev/null || s=$?; echo \"busyroot: the command exited with \
                 status $s\"; r=fail; if [ \"$s\" = 0 ]; then r=pass; fi"
            );
            cases.push(self.case(id, &name, &line, "exit status 0", &judge));
        }
        Ok(cases)
    }

    fn case(&self, id: String, name: &str, command: &str, expected: &str, judge: &str) -> Case {
        // `m` keeps the markers out of the echo of the typed line.
        let mut script =
            format!("m=BUSYROOT; echo \"$m-OUT {id}\"; {judge}; echo \"$m-CASE {id} $r\"");
        if self.style == TestStyle::TestShell {
            let _ = write!(script, "; lava-test-case {id} --result $r");
        }
        Case {
            id,
            name: name.to_string(),
            command: command.to_string(),
            expected: expected.to_string(),
            script,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{RunPlan, Timeouts};

    fn checks(medium: Medium, bus: RootBus) -> Vec<Check> {
        let root = match medium {
            Medium::Initramfs => Root::Initramfs("/i".into()),
            Medium::Disk => Root::Disk { image: "/i".into(), bus },
        };
        let spec = VmSpec::new(Arch::X86_64, "/k".into(), root, "/l".into());
        RunPlan::standard(&spec, "kvmtool-test", Timeouts::new(Accel::Tcg, None, 1.0)).checks
    }

    fn artifacts() -> Artifacts {
        let files = ARTIFACT_FILES.iter().map(|f| (f.to_string(), "ab".repeat(32))).collect();
        Artifacts {
            dir: "/a/busyroot/1/x86_64".into(),
            url: "file:///a/busyroot/1/x86_64".into(),
            files,
        }
    }

    fn cell(medium: Medium, bus: RootBus, style: TestStyle) -> Cell {
        let mut cell = Cell::new(Arch::X86_64, medium, style, checks(medium, bus));
        cell.bus = bus;
        cell.command = Some(vec!["/bin/sh".into(), "-c".into(), "exit 3".into()]);
        cell
    }

    fn lava_timeout(v: &Value) -> u64 {
        v["seconds"].as_u64().expect("timeouts are in seconds")
    }

    #[test]
    fn interactive_job_has_what_lava_requires() {
        let cell = cell(Medium::Disk, RootBus::Nvme, TestStyle::Interactive);
        let job = job(&cell, "busyroot-x86_64", &artifacts()).unwrap();
        // Read back from the text that is written, as lava-run would.
        let def: Value = serde_json::from_str(&job.definition_text()).unwrap();
        for key in ["job_name", "device_type", "visibility", "timeouts", "actions"] {
            assert!(!def[key].is_null(), "job lacks `{key}`: {def:#}");
        }
        assert_eq!(def["context"]["arch"], "x86_64");
        let all = lava_timeout(&def["timeouts"]["job"]);
        let actions = def["actions"].as_array().unwrap();
        let names: Vec<&str> = actions
            .iter()
            .map(|a| a.as_object().unwrap().keys().next().unwrap().as_str())
            .collect();
        assert_eq!(names, ["deploy", "boot", "test"]);
        for action in actions {
            let (_, body) = action.as_object().unwrap().iter().next().unwrap();
            assert!(lava_timeout(&body["timeout"]) <= all, "an action outlasts the job");
        }
        let deploy = &actions[0]["deploy"];
        assert_eq!(deploy["to"], "tmpfs");
        let kernel = &deploy["images"]["kernel"];
        assert_eq!(kernel["url"], "file:///a/busyroot/1/x86_64/kernel");
        assert_eq!(kernel["sha256sum"], "ab".repeat(32));
        let kernel_arg = kernel["image_arg"].as_str().unwrap();
        assert!(kernel_arg.starts_with("-kernel {kernel} -append 'console=ttyS0 "), "{kernel_arg}");
        assert!(kernel_arg.contains("root=/dev/nvme0n1"), "{kernel_arg}");
        let rootfs = &deploy["images"]["rootfs"];
        assert_eq!(rootfs["url"], "file:///a/busyroot/1/x86_64/rootfs.ext4");
        assert!(rootfs["overlays"].is_null());
        assert_eq!(
            rootfs["image_arg"],
            "-drive 'file={rootfs},format=raw,if=none,id=root' -device nvme,drive=root,serial=busyroot"
        );
        let boot = &actions[1]["boot"];
        assert_eq!(boot["method"], "qemu");
        assert_eq!(boot["prompts"][0], PROMPT);

        let script = actions[2]["test"]["interactive"][0]["script"].as_array().unwrap();
        assert_eq!(script.len(), job.cases.len());
        assert_eq!(job.cases.len(), cell.checks.len() + 1);
        let id = regex::Regex::new(r"^[-_a-zA-Z0-9.]+$").unwrap();
        for (step, case) in script.iter().zip(&job.cases) {
            assert!(id.is_match(step["name"].as_str().unwrap()), "{step}");
            assert_eq!(step["command"], case.script);
            // The typed line must not hold the result lines the patterns match, or its echo
            // would decide the case.
            for pattern in [&step["successes"][0]["message"], &step["failures"][0]["message"]] {
                let re = regex::Regex::new(pattern.as_str().unwrap()).unwrap();
                assert!(
                    !re.is_match(&case.script),
                    "{pattern} matches the echo of {}",
                    case.script
                );
            }
        }
        let ids: std::collections::BTreeSet<_> = job.cases.iter().map(|c| &c.id).collect();
        assert_eq!(ids.len(), job.cases.len(), "ids are unique");
        assert!(job.cases.iter().any(|c| c.id == "is-ext4" && c.name == "/ is ext4"));
        let command = job.cases.last().unwrap();
        assert_eq!(command.name, "command: /bin/sh -c exit 3");
        assert!(command.script.contains("( /bin/sh -c 'exit 3' )"), "{}", command.script);
    }

    #[test]
    fn device_dictionary_has_what_lava_run_requires() {
        let cell = cell(Medium::Initramfs, RootBus::Virtio, TestStyle::Interactive);
        let job = job(&cell, "j", &artifacts()).unwrap();
        let dev: Value = serde_json::from_str(&job.device_text()).unwrap();
        assert_eq!(dev["available_architectures"][0], "x86_64");
        let constants = dev["constants"].as_object().unwrap();
        // lava-run looks these up without a default.
        for key in ["kernel-start-message", "default-shell-prompt", "shutdown-message"] {
            assert!(constants[key].is_string(), "constants.{key}");
        }
        for key in ["failure_retry", "boot_retry"] {
            assert!(constants.contains_key(key), "constants.{key}");
        }
        assert_eq!(constants["posix"]["lava_test_sh_cmd"], "/bin/sh");
        let qemu = &dev["actions"]["boot"]["methods"]["qemu"]["parameters"];
        assert_eq!(qemu["command"], "qemu-system-x86_64");
        let options = qemu["options"][0].as_str().unwrap();
        assert!(options.starts_with("-M q35 -accel tcg -m 256 -smp 1 "), "{options}");
        assert!(options.ends_with("-serial stdio -monitor none"), "{options}");
        assert!(dev["actions"]["deploy"]["methods"]["image"]["parameters"]["guest"].is_object());
        assert!(
            dev["timeouts"]["actions"].is_object() && dev["timeouts"]["connections"].is_object()
        );
    }

    #[test]
    fn test_shell_job_appends_the_overlay_to_the_initramfs_only() {
        let cell = cell(Medium::Initramfs, RootBus::Virtio, TestStyle::TestShell);
        let job = job(&cell, "j", &artifacts()).unwrap();
        let actions = &job.definition["actions"];
        let rootfs = &actions[0]["deploy"]["images"]["rootfs"];
        assert_eq!(rootfs["format"], "cpio.newc");
        assert_eq!(rootfs["compression"], "gz");
        assert_eq!(rootfs["overlays"]["lava"], true);
        assert_eq!(rootfs["image_arg"], "-initrd {rootfs}");
        let def = &actions[2]["test"]["definitions"][0];
        assert_eq!(def["from"], "inline");
        assert_eq!(def["repository"]["metadata"]["format"], "Lava-Test Test Definition 1.0");
        let steps = def["repository"]["run"]["steps"].as_array().unwrap();
        assert_eq!(steps[0], "set +x");
        assert_eq!(steps.len(), job.cases.len() + 1);
        for (step, case) in steps[1..].iter().zip(&job.cases) {
            let step = step.as_str().unwrap();
            assert!(step.ends_with(&format!("lava-test-case {} --result $r", case.id)), "{step}");
        }
        let disk = self::cell(Medium::Disk, RootBus::Virtio, TestStyle::TestShell);
        let err = self::job(&disk, "j", &artifacts()).unwrap_err().to_string();
        assert!(err.contains("libguestfs"), "{err}");
    }

    /// LAVA's own schemas (`lava_common`, from Debian's lava-dispatcher) judge the jobs and
    /// device dictionaries, strictly, as lava-run and a lab's server do before running a job.
    #[test]
    fn lava_schemas_accept_the_jobs_and_devices() {
        let python = "/usr/bin/python3";
        let sh = xshell::Shell::new().unwrap();
        let probe = xshell::cmd!(sh, "{python} -c 'import lava_common.schemas'")
            .quiet()
            .ignore_stderr()
            .run();
        if probe.is_err() {
            let reason = "lava_common is not installed (apt-get install lava-dispatcher)";
            crate::testing::skip("lava_schemas_accept_the_jobs_and_devices", reason);
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let script = "import json, sys\n\
            from lava_common.schemas import validate\n\
            from lava_common.schemas.device import validate as validate_device\n\
            validate(json.load(open(sys.argv[1])), strict=True)\n\
            validate_device(json.load(open(sys.argv[2])))\n";
        for (medium, bus, style) in [
            (Medium::Initramfs, RootBus::Virtio, TestStyle::Interactive),
            (Medium::Disk, RootBus::Nvme, TestStyle::Interactive),
            (Medium::Initramfs, RootBus::Virtio, TestStyle::TestShell),
        ] {
            let job = job(&cell(medium, bus, style), "busyroot x86_64", &artifacts()).unwrap();
            let (job_file, device_file) =
                (tmp.path().join("job.yaml"), tmp.path().join("dev.yaml"));
            fs::write(&job_file, job.definition_text()).unwrap();
            fs::write(&device_file, job.device_text()).unwrap();
            let out = xshell::cmd!(sh, "{python} -c {script} {job_file} {device_file}")
                .quiet()
                .ignore_status()
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "LAVA's schema refused the {medium:?} {style:?} job or device:\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                job.definition_text()
            );
        }
    }

    #[test]
    fn lava_run_is_refused_without_root() {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        match require_root() {
            Ok(()) => assert!(root, "accepted a user that is not root"),
            Err(e) => {
                assert!(!root, "refused root: {e}");
                assert!(e.to_string().contains("lava-run must run as root"), "{e}");
            }
        }
    }

    #[test]
    fn prompt_matches_the_skeletons_shell() {
        let profile = include_str!("../../rootfs-skel/etc/profile");
        assert!(profile.contains(r"export PS1='[\u@\h \W]# '"), "{profile}");
        let re = regex::Regex::new(PROMPT).unwrap();
        assert!(re.is_match("[root@kvmtool-test ~]# "));
        assert!(re.is_match("[root@kvmtool-test /]# "));
        assert!(!re.is_match("root@kvmtool-test:~# "));
    }

    #[test]
    fn ids_are_lava_case_names_and_unique() {
        let mut taken = Vec::new();
        assert_eq!(unique_id(&mut taken, "/ is ext4"), "is-ext4");
        assert_eq!(
            unique_id(&mut taken, "/dev/console is character device 5,1"),
            "dev-console-is-character-device-5-1"
        );
        assert_eq!(unique_id(&mut taken, "uname -m is x86_64"), "uname-m-is-x86_64");
        assert_eq!(unique_id(&mut taken, "is ext4"), "is-ext4-2");
        assert_eq!(unique_id(&mut taken, "///"), "case");
    }

    #[test]
    fn every_standard_check_translates_to_ere() {
        for medium in Medium::ALL {
            for check in checks(medium, RootBus::Nvme) {
                ere(check.expect()).unwrap_or_else(|e| panic!("{}: {e}", check.expect()));
            }
        }
        assert_eq!(ere(r"\S").unwrap(), "[^[:space:]]");
        assert_eq!(
            ere(r"^c\S*\s+\d+\s+5,\s*1\s").unwrap(),
            "^c[^[:space:]]*[[:space:]]+[0-9]+[[:space:]]+5,[[:space:]]*1[[:space:]]"
        );
        assert_eq!(ere(r"^kvmtool\-test\.x$").unwrap(), r"^kvmtool-test\.x$");
        assert_eq!(ere(r"^(?:a|b)[\d_]$").unwrap(), "^(a|b)[0-9_]$");
        assert_eq!(ere("[[:alpha:]]+").unwrap(), "[[:alpha:]]+");
        assert!(ere(r"(?i)x").unwrap_err().contains("(?"));
        assert!(ere(r"a+?").unwrap_err().contains("lazy"));
        assert!(ere(r"\bword").unwrap_err().contains(r"\b"));
        assert!(ere("[a").unwrap_err().contains("unterminated"));
    }

    #[test]
    fn translated_patterns_agree_with_grep() {
        // The host's GNU grep -E reads the same POSIX ERE BusyBox's grep hands to glibc.
        let sh = xshell::Shell::new().unwrap();
        if xshell::cmd!(sh, "grep --version").quiet().ignore_stdout().run().is_err() {
            crate::testing::skip("translated_patterns_agree_with_grep", "no grep");
            return;
        }
        let lines = [
            "crw-------    1 root     root        5,   1 Jan  1 00:00 /dev/console",
            "crw-rw----    1 root     root        1,   3 Nov 27 05:49 /dev/null",
            "ext4",
            "kvmtool-test",
            "kvmtoolXtest",
            "proc on /proc type proc (rw,relatime)",
            "",
        ];
        for check in checks(Medium::Disk, RootBus::Nvme) {
            let rust = regex::RegexBuilder::new(check.expect()).multi_line(true).build().unwrap();
            let pattern = ere(check.expect()).unwrap();
            for line in lines {
                let grep = xshell::cmd!(sh, "grep -Eq -e {pattern}")
                    .stdin(format!("{line}\n"))
                    .quiet()
                    .ignore_status()
                    .output()
                    .unwrap();
                assert_eq!(
                    grep.status.success(),
                    rust.is_match(line),
                    "`{}` as `{pattern}` on {line:?}",
                    check.expect()
                );
            }
        }
    }

    /// lava-run's log of the jobs `cargo xtask lava --run` wrote for an initramfs with a
    /// payload that exits 3 (interactive tests), cut to the lines that matter and two that
    /// carry YAML tags.
    const SAMPLE: &str = include_str!("../../tests/data/lava-run.log");

    #[test]
    fn log_parser_reads_results_console_and_errors() {
        let log = parse_log(SAMPLE);
        assert!(log.results.iter().any(|r| r.case == "file-download"), "tagged lines parse");
        assert_eq!(log.lava_case("job").unwrap().result, "pass");
        assert_eq!(log.lava_case("login-action").unwrap().result, "pass");
        let kernel = log.test_case("kernel-version").unwrap();
        assert_eq!(kernel.result, "pass");
        assert!(kernel.duration.is_some());
        assert_eq!(log.test_case("command").unwrap().result, "fail");
        assert!(log.test_case("no-such-case").is_none());
        assert!(log.output_of("command").contains("the command exited with status 3"));
        assert_eq!(log.output_of("uname-m-is-x86_64"), "x86_64");
        assert!(log.errors.iter().any(|e| e.contains("Matched a failure")), "{:?}", log.errors);
    }

    #[test]
    fn report_names_failed_and_missing_cases() {
        let mut cell = cell(Medium::Initramfs, RootBus::Virtio, TestStyle::Interactive);
        cell.checks.truncate(2);
        let job = job(&cell, "j", &artifacts()).unwrap();
        let ctx = ReportContext {
            cell: &cell,
            job: &job,
            kernel: Path::new("/k"),
            log_path: Path::new("/t/lava-run.log"),
            pid: Some(1),
            total_time: Duration::from_secs(9),
            timed_out: false,
        };
        let line = |definition: &str, case: &str, result: &str| ResultLine {
            definition: definition.into(),
            case: case.into(),
            result: result.into(),
            duration: Some(Duration::from_millis(100)),
        };
        let mut log = LavaLog {
            results: vec![
                line("lava", "login-action", "pass"),
                line("0_busyroot", &job.cases[0].id, "pass"),
                line("0_busyroot", "command", "fail"),
                line("lava", "job", "pass"),
            ],
            ..LavaLog::default()
        };
        let r = report(&ctx, &log);
        let failed = match &r.outcome {
            Outcome::ChecksFailed(names) => names.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(failed, [job.cases[1].name.clone(), "command: /bin/sh -c exit 3".into()]);
        assert_eq!(r.exit_code(), 1);
        assert!(r.checks[1].output.contains("no result"));
        assert!(r.to_junit().contains("failures=\"2\""));

        log.results.iter_mut().for_each(|l| l.result = "pass".into());
        log.results.push(line("0_busyroot", &job.cases[1].id, "pass"));
        assert_eq!(report(&ctx, &log).outcome, Outcome::Passed);

        // No prompt: the boot failed, whatever else is in the log.
        log.results.retain(|l| l.case != "login-action");
        log.errors.push("login-action timed out after 120 seconds".into());
        let r = report(&ctx, &log);
        assert!(matches!(&r.outcome, Outcome::BootFailed(f) if f.kind == BootFailureKind::Timeout));
        assert_eq!(r.exit_code(), 2);
        let panic = "[    2.08] Kernel panic - not syncing: VFS: Unable to mount root fs";
        log.console.push(panic.into());
        let r = report(&ctx, &log);
        assert!(
            matches!(&r.outcome, Outcome::BootFailed(f) if f.kind == BootFailureKind::Panic && f.message == panic),
            "{:?}",
            r.outcome
        );
    }

    #[test]
    fn artifacts_are_laid_out_with_their_sums() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let sources = ArtifactSources {
            cpio: src.join("rootfs.cpio.gz"),
            ext4: src.join("rootfs.ext4"),
            tar: src.join("rootfs.tar"),
            kernel: src.join("bzImage"),
        };
        for (path, content) in [
            (&sources.cpio, "cpio"),
            (&sources.ext4, "ext4"),
            (&sources.tar, "tar"),
            (&sources.kernel, "kernel"),
        ] {
            fs::write(path, content).unwrap();
        }
        let out = tmp.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let a = write_artifacts(&out, "busyroot", None, Arch::Aarch64, &sources, None).unwrap();
        let version = a.dir.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(version.len(), 12);
        assert_eq!(a.dir, out.join("busyroot").join(&version).join("aarch64"));
        let mut names: Vec<_> =
            fs::read_dir(&a.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        let mut expected: Vec<std::ffi::OsString> =
            ARTIFACT_FILES.iter().map(|f| f.into()).collect();
        expected.push("SHA256SUMS".into());
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(fs::read_to_string(a.dir.join("kernel")).unwrap(), "kernel");
        // SHA256SUMS holds what `sha256sum` computes, in its format.
        let sums = fs::read_to_string(a.dir.join("SHA256SUMS")).unwrap();
        let kernel_sum = crate::host::fs::sha256_bytes(b"kernel");
        assert!(sums.contains(&format!("{kernel_sum}  kernel\n")), "{sums}");
        assert_eq!(sums.lines().count(), 4);
        let sh = xshell::Shell::new().unwrap();
        sh.change_dir(&a.dir);
        if xshell::cmd!(sh, "sha256sum --version").quiet().ignore_stdout().run().is_ok() {
            xshell::cmd!(sh, "sha256sum --check --quiet SHA256SUMS").quiet().run().unwrap();
        }
        let canonical = fs::canonicalize(&out).unwrap();
        assert_eq!(
            a.url_of("kernel"),
            format!("file://{}/busyroot/{version}/aarch64/kernel", canonical.display())
        );

        // Another kernel is another version; a base URL replaces file://.
        fs::write(&sources.kernel, "kernel 2").unwrap();
        let b = write_artifacts(
            &out,
            "busyroot",
            None,
            Arch::Aarch64,
            &sources,
            Some("https://lab.example/a/"),
        )
        .unwrap();
        assert_ne!(a.dir, b.dir);
        assert!(b.url.starts_with("https://lab.example/a/busyroot/"), "{}", b.url);
        let c = write_artifacts(&out, "busyroot", Some("v1"), Arch::Aarch64, &sources, None);
        assert!(c.unwrap().dir.ends_with("busyroot/v1/aarch64"));
        assert!(
            write_artifacts(&out, "busyroot", Some("../x"), Arch::Aarch64, &sources, None).is_err()
        );
    }
}
