//! The job definition and the QEMU device dictionary for one cell, with one test case per check.

use super::*;

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
pub(super) fn lava_words(args: &[OsString]) -> String {
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
pub(super) fn unique_id(taken: &mut Vec<String>, name: &str) -> String {
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
