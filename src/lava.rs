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
use crate::host::fs::{sha256_bytes, sha256_file, write_atomically};
use crate::vm::{
    self, qemu, shell_quote, Accel, BootFailure, BootFailureKind, Check, CheckResult, Outcome,
    Root, RootBus, RunReport, VmSpec,
};

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

/// The artifact files of a cell, in a directory `<name>/<version>/<arch>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    /// The directory holding the files and `SHA256SUMS`.
    pub dir: PathBuf,
    /// Where a lab fetches the directory from (`<base-url>/<name>/<version>/<arch>`).
    pub url: String,
    /// Each file name with its sha256.
    pub files: BTreeMap<String, String>,
}

impl Artifacts {
    /// The URL of one of the files.
    pub fn url_of(&self, file: &str) -> String {
        format!("{}/{file}", self.url)
    }
}

/// The images and kernel that go into an artifact directory.
#[derive(Debug, Clone)]
pub struct ArtifactSources {
    /// `rootfs.cpio.gz`.
    pub cpio: PathBuf,
    /// `rootfs.ext4`.
    pub ext4: PathBuf,
    /// `rootfs.tar`.
    pub tar: PathBuf,
    /// The kernel image, stored as `kernel`.
    pub kernel: PathBuf,
}

/// The file names in an artifact directory besides `SHA256SUMS`.
pub const ARTIFACT_FILES: [&str; 4] = ["kernel", "rootfs.cpio.gz", "rootfs.ext4", "rootfs.tar"];

/// Copies the images and kernel into `<root>/<name>/<version>/<arch>/` with a `SHA256SUMS`
/// (the format `sha256sum --check` reads). Without a version the directory is named after
/// the first 12 hex digits of the sha256 of `SHA256SUMS`, so a lab's store never holds two
/// different builds under one URL. A directory that already holds the same files is kept.
/// `base_url` is where a lab finds `root`; without one, `file://` of `root`.
pub fn write_artifacts(
    root: &Path,
    name: &str,
    version: Option<&str>,
    arch: Arch,
    sources: &ArtifactSources,
    base_url: Option<&str>,
) -> Result<Artifacts> {
    let by_name = [
        ("kernel", &sources.kernel),
        ("rootfs.cpio.gz", &sources.cpio),
        ("rootfs.ext4", &sources.ext4),
        ("rootfs.tar", &sources.tar),
    ];
    let files = by_name.iter().map(|(file, source)| Ok((file.to_string(), sha256_file(source)?)));
    let files = files.collect::<Result<BTreeMap<_, _>>>()?;
    let sums = sha256sums(&files);
    // A derived version is hex, so only a given one can fail the check.
    let version =
        version.map_or_else(|| sha256_bytes(sums.as_bytes())[..12].to_string(), str::to_string);
    check_path_part("version", &version)?;
    check_path_part("name", name)?;
    let dir = root.join(name).join(&version).join(arch.name());
    let sums_path = dir.join("SHA256SUMS");
    let complete = fs::read_to_string(&sums_path).is_ok_and(|old| old == sums)
        && by_name.iter().all(|(file, _)| dir.join(file).is_file());
    if !complete {
        // SHA256SUMS goes last: its presence with these sums says the copies are complete.
        let _ = fs::remove_file(&sums_path);
        for (file, source) in by_name {
            write_atomically(&dir.join(file), |tmp| {
                fs::copy(source, tmp).map(drop).with_path("copy into", tmp)
            })?;
        }
        write_atomically(&sums_path, |tmp| fs::write(tmp, &sums).with_path("write", tmp))?;
    }
    let base = match base_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => file_url(&fs::canonicalize(root).with_path("resolve", root)?)?,
    };
    let url = format!("{base}/{name}/{version}/{}", arch.name());
    Ok(Artifacts { dir, url, files })
}

/// `SHA256SUMS` text: `<sha256>  <name>` per line, sorted by name.
pub fn sha256sums(files: &BTreeMap<String, String>) -> String {
    files.iter().map(|(name, sum)| format!("{sum}  {name}\n")).collect()
}

fn check_path_part(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "the artifact {what} `{value}` must be non-empty and made of letters, digits and \
             `-_.+` only, as it becomes part of a path and a URL"
        )))
    }
}

/// `file://` URL of an absolute path; refuses characters a URL would need to escape.
fn file_url(path: &Path) -> Result<String> {
    let text = path.to_string_lossy();
    if text.chars().any(|c| !(c.is_ascii_graphic()) || "%?#\"'{}".contains(c)) {
        return Err(Error::Other(format!(
            "`{text}` holds characters that would need escaping in a file:// URL; put the \
             artifacts in a plain directory"
        )));
    }
    Ok(format!("file://{text}"))
}

/// The job, the device dictionary and the cases of one cell.
#[derive(Debug, Clone)]
pub struct LavaJob {
    /// The job definition (JSON, which is valid YAML).
    pub definition: Value,
    /// The device dictionary for a local `lava-run` (rendered, no Jinja).
    pub device: Value,
    /// The cases, in order.
    pub cases: Vec<Case>,
    /// The job's own timeout.
    pub timeout: Duration,
}

impl LavaJob {
    /// The job definition as text for `job.yaml`.
    pub fn definition_text(&self) -> String {
        format!("{:#}\n", self.definition)
    }

    /// The device dictionary as text for `device.yaml`.
    pub fn device_text(&self) -> String {
        format!("{:#}\n", self.device)
    }
}

/// Builds the job definition and device dictionary for `cell`, fetching from `artifacts`.
pub fn job(cell: &Cell, job_name: &str, artifacts: &Artifacts) -> Result<LavaJob> {
    let cases = cell.cases()?;
    let spec = cell.spec();
    let image = |file: &str, args: Vec<OsString>| {
        json!({
            "url": artifacts.url_of(file),
            "sha256sum": artifacts.files.get(file),
            "image_arg": lava_words(&args),
        })
    };
    let rootfs_file = cell.medium.format().file_name();
    let root = match cell.medium {
        Medium::Initramfs => "initramfs".to_string(),
        Medium::Disk => format!("ext4 on {}", cell.bus),
    };
    let mut rootfs = image(rootfs_file, qemu::root_args(&spec));
    if cell.style == TestStyle::TestShell {
        if cell.medium != Medium::Initramfs {
            return Err(Error::Other(
                "a lava-test-shell job needs the initramfs: LAVA adds its test overlay to an \
                 ext4 image only through libguestfs; use interactive tests for the disk"
                    .into(),
            ));
        }
        // LAVA unpacks the initramfs, adds its overlay and packs it again.
        rootfs["format"] = json!("cpio.newc");
        rootfs["compression"] = json!("gz");
        rootfs["overlays"] = json!({ "lava": true });
    }
    let images = json!({ "kernel": image("kernel", qemu::kernel_args(&spec)), "rootfs": rootfs });

    let secs = |d: Duration| json!({ "seconds": d.as_secs_f64().ceil().max(1.0) as u64 });
    let deploy_timeout = Duration::from_secs(300);
    let mut test_timeout = cell.check_timeout * cases.len() as u32 + Duration::from_secs(60);
    let mut connection = cell.check_timeout;
    if cell.command.is_some() {
        test_timeout += cell.command_timeout;
        connection = connection.max(cell.command_timeout);
    }
    let job_timeout = deploy_timeout + cell.boot_timeout + test_timeout + Duration::from_secs(60);

    let mut test = match cell.style {
        TestStyle::Interactive => {
            let script: Vec<Value> = cases
                .iter()
                .map(|c| {
                    let marker = format!("{RESULT} {}", regex::escape(&c.id));
                    json!({
                        "name": c.id,
                        "command": c.script,
                        "successes": [{ "message": format!("{marker} pass") }],
                        "failures": [{ "message": format!("{marker} fail") }],
                    })
                })
                .collect();
            json!({ "interactive": [{ "name": DEFINITION, "prompts": [PROMPT], "script": script }] })
        }
        TestStyle::TestShell => {
            // run.sh traces every step (`set -x`), which would mix the trace into the output
            // the cases judge.
            let steps: Vec<&str> =
                std::iter::once("set +x").chain(cases.iter().map(|c| c.script.as_str())).collect();
            json!({ "definitions": [{
                "from": "inline",
                "name": DEFINITION,
                "path": "inline/busyroot.yaml",
                "repository": {
                    "metadata": {
                        "format": "Lava-Test Test Definition 1.0",
                        "name": DEFINITION,
                        "description": "busyroot's checks and payload command",
                    },
                    "run": { "steps": steps },
                },
            }] })
        }
    };
    test["timeout"] = secs(test_timeout);
    let info = cell.arch.info();
    let mut context = json!({
        "arch": cell.arch.name(),
        "machine": info.qemu_machine,
        "memory": cell.mem_mib,
    });
    if let Some(cpu) = info.qemu_cpu {
        context["cpu"] = json!(cpu);
    }
    let definition = json!({
        "job_name": job_name,
        "device_type": "qemu",
        "visibility": "public",
        "priority": "medium",
        "timeouts": {
            "job": secs(job_timeout),
            "action": secs(deploy_timeout.max(cell.boot_timeout).max(test_timeout)),
            "connection": secs(connection),
        },
        "context": context,
        "metadata": {
            "busyroot.arch": cell.arch.name(),
            "busyroot.root": root,
            "busyroot.artifacts": artifacts.url,
        },
        "actions": [
            { "deploy": { "to": "tmpfs", "timeout": secs(deploy_timeout), "images": images } },
            { "boot": {
                "method": "qemu",
                "media": "tmpfs",
                "timeout": secs(cell.boot_timeout),
                "prompts": [PROMPT],
            } },
            { "test": test },
        ],
    });

    let options = lava_words(&[qemu::machine_args(&spec), qemu::piped_console_args()].concat());
    let device = json!({
        "device_type": "qemu",
        "available_architectures": [cell.arch.name()],
        "constants": {
            "posix": {
                "lava_test_sh_cmd": "/bin/sh",
                "lava_test_results_dir": "/lava-%s",
                "lava_test_shell_file": "~/.profile",
            },
            "kernel-start-message": "Linux version [0-9]",
            "default-shell-prompt": "lava-test: # ",
            "shutdown-message": "The system is going down for reboot NOW",
            "spawn_maxread": "4092",
            "failure_retry": null,
            "boot_retry": null,
        },
        "parameters": {},
        "actions": {
            "deploy": {
                "connections": { "serial": null },
                "methods": {
                    "image": { "parameters": { "guest": {
                        "size": 512, "interface": "virtio", "driveid": "lavatest",
                    } } },
                },
            },
            "boot": {
                "connections": { "serial": null },
                "methods": {
                    "qemu": { "parameters": {
                        "command": cell.qemu.to_string_lossy(),
                        "options": [options],
                    } },
                },
            },
        },
        "timeouts": { "actions": {}, "connections": {} },
    });
    Ok(LavaJob { definition, device, cases, timeout: job_timeout })
}

/// The words of a QEMU command as LAVA takes them: LAVA joins them with spaces and splits them
/// again as a shell would; its `{label}` placeholders need no quotes.
fn lava_words(args: &[OsString]) -> String {
    let word = |a: &OsString| {
        let a = a.to_string_lossy();
        let label = a.strip_prefix('{').and_then(|a| a.strip_suffix('}'));
        if label.is_some_and(|l| !l.contains(['{', '}'])) {
            a.into_owned()
        } else {
            shell_quote(&a)
        }
    };
    args.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// A LAVA test case id for `name`: letters, digits, `-`, `_` and `.`, other runs of
/// characters as one `-`, unique among `taken` (which it joins).
fn unique_id(taken: &mut Vec<String>, name: &str) -> String {
    let mut id = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || "_.".contains(c) {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    let base = Some(id.trim_matches('-')).filter(|b| !b.is_empty()).unwrap_or("case");
    let mut candidates =
        std::iter::once(base.to_string()).chain((2..).map(|n| format!("{base}-{n}")));
    let id = candidates.find(|c| !taken.contains(c)).expect("the numbers never end");
    taken.push(id.clone());
    id
}

/// Rewrites a check's regular expression (Rust `regex` syntax, matched line by line) for
/// BusyBox's `grep -E` (POSIX ERE, with glibc's regcomp in a static BusyBox). Perl classes
/// become bracket expressions; constructs ERE has no equivalent for are refused with the
/// reason.
pub fn ere(pattern: &str) -> std::result::Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut prev_quantifier = false;
    while i < chars.len() {
        let c = chars[i];
        let mut quantifier = false;
        match c {
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("it ends with a lone backslash".into());
                };
                out.push_str(&perl_class(e, false)?);
                i += 1;
            }
            '[' => {
                let (class, next) = bracket(&chars, i)?;
                out.push_str(&class);
                i = next - 1;
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                if chars.get(i + 2) == Some(&':') {
                    out.push('(');
                    i += 2;
                } else {
                    return Err("flags and special groups `(?…)` have no ERE form".into());
                }
            }
            '*' | '+' | '?' | '}' => {
                if c == '?' && prev_quantifier {
                    return Err("lazy quantifiers (`*?`, `+?`, `??`) have no ERE form".into());
                }
                out.push(c);
                quantifier = true;
            }
            _ => out.push(c),
        }
        prev_quantifier = quantifier;
        i += 1;
    }
    Ok(out)
}

/// The ERE for the escape `\e`, outside (`in_bracket == false`) or inside a bracket
/// expression.
fn perl_class(e: char, in_bracket: bool) -> std::result::Result<String, String> {
    let (outside, inside) = match e {
        'd' => ("[0-9]", "0-9"),
        'D' => ("[^0-9]", ""),
        's' => ("[[:space:]]", "[:space:]"),
        'S' => ("[^[:space:]]", ""),
        'w' => ("[[:alnum:]_]", "[:alnum:]_"),
        'W' => ("[^[:alnum:]_]", ""),
        't' => ("\t", "\t"),
        _ if e.is_ascii_punctuation() => {
            return Ok(match (in_bracket, e) {
                (true, ']' | '^' | '-' | '[') => {
                    return Err(format!("`\\{e}` inside a bracket expression has no ERE form"))
                }
                (true, _) => e.to_string(),
                // ERE's special characters keep their backslash; any other punctuation is
                // literal as it is.
                (false, '.' | '[' | ']' | '(' | ')' | '{' | '}' | '*' | '+' | '?' | '|' | '^')
                | (false, '$' | '\\') => format!("\\{e}"),
                (false, _) => e.to_string(),
            });
        }
        _ => return Err(format!("the escape `\\{e}` has no ERE form")),
    };
    let text = if in_bracket { inside } else { outside };
    if text.is_empty() {
        return Err(format!("a negated class `\\{e}` inside a bracket expression"));
    }
    Ok(text.to_string())
}

/// Copies the bracket expression starting at `chars[start] == '['`; returns it and the index
/// after its `]`.
fn bracket(chars: &[char], start: usize) -> std::result::Result<(String, usize), String> {
    let mut out = String::from("[");
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // A `]` first is literal.
    if chars.get(i) == Some(&']') {
        out.push(']');
        i += 1;
    }
    while let Some(&c) = chars.get(i) {
        match c {
            ']' => return Ok((out + "]", i + 1)),
            '\\' => {
                let e = *chars.get(i + 1).ok_or("it ends inside a bracket expression")?;
                out.push_str(&perl_class(e, true)?);
                i += 2;
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|&j| chars[j] == ':' && chars[j + 1] == ']')
                    .ok_or("an unterminated `[:class:]`")?;
                out.extend(&chars[i..end + 2]);
                i = end + 2;
            }
            '[' => return Err("nested or set-operation brackets have no ERE form".into()),
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err("an unterminated bracket expression".into())
}

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
fn strip_yaml_tags(line: &str) -> String {
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
                command: String::new(),
                expected: "the job completes".into(),
                output: errors.join("\n"),
                passed: false,
                skipped: None,
                duration: Duration::ZERO,
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

/// How a `lava-run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LavaRun {
    /// Its exit status (`None` if it was killed).
    pub status: Option<i32>,
    /// Whether it was stopped at the deadline.
    pub timed_out: bool,
    /// Its process id.
    pub pid: u32,
    /// The command line, as printed.
    pub command: String,
    /// How long it ran.
    pub duration: Duration,
}

/// Fails unless we run as root, which `lava-run` needs: it keeps its work under
/// `/var/lib/lava` and manages the guest's processes itself.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    Err(Error::Other(
        "lava-run must run as root (it keeps its work under /var/lib/lava and starts the \
         guest's QEMU itself); run the job as root"
            .into(),
    ))
}

/// Runs `lava-run` on `job_file` and `device_file` with output in `output_dir`, its stdout
/// and stderr going to `log`. lava-run needs root (it writes under `/var/lib/lava` and
/// manages the guest's processes). It gets SIGTERM when we die; at `timeout` it gets SIGTERM
/// (LAVA then cancels the job and stops QEMU) and, 30 s later, SIGKILL.
pub fn run_lava(
    sh: &xshell::Shell,
    job_file: &Path,
    device_file: &Path,
    output_dir: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<LavaRun> {
    require_root()?;
    let program = crate::host::tools::require(&crate::host::tools::Tool {
        program: "lava-run",
        purpose: "running LAVA jobs locally",
        package: "lava-dispatcher",
    })?;
    // Two runs at once need different job ids: LAVA's scratch directory is named after it.
    let job_id = std::process::id().to_string();
    let cmd = xshell::cmd!(
        sh,
        "{program} --job-id {job_id} --output-dir {output_dir} --device {device_file} {job_file}"
    );
    let command_line = cmd.to_string();
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_path("create directory", dir)?;
    }
    let file = fs::File::create(log).with_path("create", log)?;
    let mut command = std::process::Command::from(cmd);
    command.stdin(Stdio::null()).stdout(file.try_clone().with_path("open", log)?).stderr(file);
    let failed = |details: String| Error::Command {
        command: command_line.clone(),
        status: String::new(),
        details,
    };
    let started = Instant::now();
    let mut child = exec::spawn(&mut command, libc::SIGTERM)
        .map_err(|e| failed(format!("could not start it: {e}")))?;
    let pid = child.id();
    let waited = exec::wait(&mut child, Some(started + timeout), || true)
        .map_err(|e| failed(format!("waiting for it failed: {e}")))?;
    let timed_out = waited.is_none();
    let status = match waited {
        Some(status) => status,
        None => {
            exec::terminate(&mut child, Duration::from_secs(30)).with_path("wait for", &program)?
        }
    };
    Ok(LavaRun {
        status: status.code(),
        timed_out,
        pid,
        command: command_line,
        duration: started.elapsed(),
    })
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
        let profile = include_str!("../rootfs-skel/etc/profile");
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
    const SAMPLE: &str = include_str!("../tests/data/lava-run.log");

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
