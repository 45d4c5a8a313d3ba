//! A VMM from configuration: `[workspace.metadata.busyroot.run.vmm.<name>]` names a program and
//! its arguments with placeholders (see [`ConfiguredVmm`]), and busyroot drives it over its
//! serial console on stdio.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::share::Transport;
use super::spec::{Backend, ConsoleMode, Launch};
use super::{Root, RootBus, RunConfig, VmSpec, Vmm};
use crate::arch::{Arch, KernelFormat};
use crate::config::{BusName, KernelFormatName, VmmConfig};
use crate::error::{Error, Result};

/// The placeholders an argument may hold.
const PLACEHOLDERS: [&str; 9] =
    ["kernel", "initramfs", "disk", "cmdline", "mem", "cpus", "run_dir", "share_dir", "share_tag"];

/// A VMM configured under `[workspace.metadata.busyroot.run.vmm.<name>]` ([`VmmConfig`]),
/// checked.
///
/// Its arguments' placeholders are `{kernel}`, `{initramfs}`, `{disk}`, `{cmdline}`, `{mem}`
/// (MiB), `{cpus}`, `{run_dir}`, and `{share_dir}`, `{share_tag}` in `share-args`; `{{` and
/// `}}` are braces. An argument whose placeholder has no value in a run (`{disk}` in an
/// initramfs boot) is dropped, with the argument before it when that one is a flag without a
/// value (it starts with `-` and holds neither `=` nor a placeholder). So `["--blk", "{disk}"]`
/// and `["--disk", "path={disk}"]` vanish whole from an initramfs boot, `--blk={disk}` alone,
/// and `["-v", "--x=1", "{disk}"]` leaves the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredVmm {
    name: String,
    program: PathBuf,
    config: VmmConfig,
    bus: [RootBus; 1],
}

impl ConfiguredVmm {
    /// Checks `config`, the table `run.vmm.<name>`; a relative `program` with a `/` is taken
    /// from `root`, the workspace root.
    pub fn new(name: &str, config: &VmmConfig, root: &Path) -> Result<ConfiguredVmm> {
        let key = format!("run.vmm.{name}");
        if Vmm::ALL.iter().any(|v| v.name() == name) || name == "lkvm" {
            return Err(Error::Other(format!(
                "`{key}` is named like busyroot's own VMM `{name}`; give it another name"
            )));
        }
        let mut seen = Vec::new();
        for arg in &config.args {
            for piece in split(arg).map_err(|e| arg_error(&key, "args", arg, &e))? {
                if let Piece::Placeholder(p) = piece {
                    if p.starts_with("share_") {
                        let e = "it belongs in `share-args`".to_string();
                        return Err(arg_error(&key, "args", arg, &e));
                    }
                    seen.push(p);
                }
            }
        }
        for needed in ["kernel", "cmdline"] {
            if !seen.contains(&needed) {
                return Err(Error::Other(format!(
                    "`{key}.args` has no `{{{needed}}}`: busyroot cannot hand the VMM its \
                     {}; add the argument that takes it",
                    if needed == "kernel" { "kernel" } else { "kernel command line" }
                )));
            }
        }
        if !seen.contains(&"disk") && !seen.contains(&"initramfs") {
            return Err(Error::Other(format!(
                "`{key}.args` has neither `{{disk}}` nor `{{initramfs}}`: busyroot cannot hand \
                 the VMM a root file system; add the argument that takes one"
            )));
        }
        for arg in config.share_args.iter().flatten() {
            split(arg).map_err(|e| arg_error(&key, "share-args", arg, &e))?;
        }
        let program = in_root(root, &config.program);
        let bus = match config.root_bus {
            BusName::Virtio => RootBus::Virtio,
            BusName::Nvme => RootBus::Nvme,
            BusName::Scsi => RootBus::Scsi,
        };
        Ok(ConfiguredVmm { name: name.to_string(), program, config: config.clone(), bus: [bus] })
    }

    fn key(&self) -> String {
        format!("run.vmm.{}", self.name)
    }

    fn uses(&self, placeholder: &str) -> bool {
        let wanted = format!("{{{placeholder}}}");
        self.config.args.iter().any(|a| a.contains(&wanted))
    }

    /// The program's arguments for `spec`.
    pub fn args(&self, spec: &VmSpec) -> Result<Vec<OsString>> {
        let (disk, initramfs) = match &spec.root {
            Root::Disk { image, .. } => (Some(image.as_os_str()), None),
            Root::Initramfs(cpio) => (None, Some(cpio.as_os_str())),
        };
        let (what, missing) = match &spec.root {
            Root::Disk { .. } => ("a disk image", "disk"),
            Root::Initramfs(_) => ("an initramfs", "initramfs"),
        };
        if !self.uses(missing) {
            return Err(Error::Other(format!(
                "`{}.args` has no `{{{missing}}}`, so {} cannot boot {what}; add the argument \
                 that takes it, or boot the other medium",
                self.key(),
                self.name
            )));
        }
        let cmdline = spec.kernel_cmdline();
        let mem = spec.mem_mib.to_string();
        let cpus = spec.cpus.to_string();
        let run_dir = spec.console_log.parent().unwrap_or(Path::new(".")).as_os_str();
        let value = |name: &str| -> Option<OsString> {
            match name {
                "kernel" => Some(spec.kernel.clone().into_os_string()),
                "initramfs" => initramfs.map(OsString::from),
                "disk" => disk.map(OsString::from),
                "cmdline" => Some(cmdline.clone().into()),
                "mem" => Some(mem.clone().into()),
                "cpus" => Some(cpus.clone().into()),
                "run_dir" => Some(run_dir.into()),
                _ => None,
            }
        };
        let mut args = expand(&self.config.args, &value);
        if !spec.shares.is_empty() {
            let Some(template) = &self.config.share_args else {
                return Err(Error::Other(self.no_transport_hint()));
            };
            for share in &spec.shares {
                let value = |name: &str| -> Option<OsString> {
                    match name {
                        "share_dir" => Some(share.host.clone().into_os_string()),
                        "share_tag" => Some(share.tag.clone().into()),
                        other => value(other),
                    }
                };
                args.extend(expand(template, &value));
            }
        }
        Ok(args)
    }
}

impl Backend for ConfiguredVmm {
    fn display_name(&self) -> &str {
        &self.name
    }

    fn default_program(&self, _arch: Arch) -> PathBuf {
        self.program.clone()
    }

    fn console_device(&self, arch: Arch) -> &str {
        self.config.guest_console.as_deref().unwrap_or(arch.info().console)
    }

    fn buses(&self) -> &[RootBus] {
        &self.bus
    }

    fn transports(&self) -> &[Transport] {
        match self.config.share_args {
            Some(_) => &[Transport::NineP],
            None => &[],
        }
    }

    fn no_transport_hint(&self) -> String {
        format!(
            "the VMM `{}` cannot show a host directory to the guest: `{}.share-args` is not \
             set; set it to the arguments that export `{{share_dir}}` over virtio-9p with the \
             mount tag `{{share_tag}}`, or run without shares",
            self.name,
            self.key()
        )
    }

    fn kernel_formats(&self, arch: Arch) -> &[KernelFormat] {
        let any = arch.info().kernel_formats;
        let wanted: &[KernelFormat] = match self.config.kernel_format {
            None => return any,
            Some(KernelFormatName::BzImage) => &[KernelFormat::BzImage],
            Some(KernelFormatName::Vmlinux) => &[KernelFormat::Elf],
            Some(KernelFormatName::Image) => match arch {
                Arch::Aarch64 => &[KernelFormat::Arm64Image],
                Arch::Riscv64 => &[KernelFormat::RiscvImage],
                _ => &[],
            },
        };
        wanted
    }

    fn shutdown_command(&self) -> &str {
        &self.config.poweroff
    }

    fn prepare(&self, spec: &VmSpec, _console: ConsoleMode, _run_dir: &Path) -> Result<Launch> {
        Ok(Launch { program: spec.program.clone(), args: self.args(spec)?, files: Vec::new() })
    }
}

/// The VMM called `name`: one of busyroot's own, with the program `run` configures for it
/// (`run.qemu`, `run.lkvm`, …), or one of `run.vmm`, whose program is its own. `root` is the
/// workspace root, against which configured paths are taken.
pub fn vmm_named(name: &str, run: &RunConfig, root: &Path) -> Result<(Vmm, Option<PathBuf>)> {
    if let Ok(builtin) = name.parse::<Vmm>() {
        let program = match builtin {
            Vmm::Qemu => run.qemu.as_ref(),
            Vmm::Kvmtool => run.lkvm.as_ref(),
            Vmm::Firecracker => run.firecracker.as_ref(),
            Vmm::CloudHypervisor => run.cloud_hypervisor.as_ref(),
            Vmm::Custom(_) => None,
        };
        let program = program.map(|p| in_root(root, p));
        return Ok((builtin, program));
    }
    match run.vmm.get(name) {
        Some(config) => Ok((Vmm::custom(ConfiguredVmm::new(name, config, root)?), None)),
        None => Err(unknown_vmm(name, &run.vmm)),
    }
}

/// A program path from the configuration: one with a `/` is taken from the workspace root
/// `root` (an absolute one stays as it is); a bare name stays one, for `$PATH`.
fn in_root(root: &Path, program: &Path) -> PathBuf {
    if program.components().count() > 1 {
        root.join(program.strip_prefix(".").unwrap_or(program))
    } else {
        program.to_path_buf()
    }
}

fn unknown_vmm(name: &str, configured: &BTreeMap<String, VmmConfig>) -> Error {
    let builtin: Vec<&str> = Vmm::ALL.iter().map(|v| v.name()).collect();
    let configured: Vec<&str> = configured.keys().map(String::as_str).collect();
    Error::Other(format!(
        "unknown VMM `{name}`: busyroot's own are {}; {}; describe another under \
         `[workspace.metadata.busyroot.run.vmm.{name}]`",
        builtin.join(", "),
        if configured.is_empty() {
            "the workspace configures none".to_string()
        } else {
            format!("the workspace configures {}", configured.join(", "))
        }
    ))
}

fn arg_error(key: &str, field: &str, arg: &str, problem: &str) -> Error {
    Error::Other(format!("`{key}.{field}`: the argument `{arg}`: {problem}"))
}

/// A piece of an argument.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(String),
    Placeholder(&'a str),
}

/// Splits `arg` into text and placeholders; `{{` and `}}` are braces.
fn split(arg: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = arg;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            text.push(c);
            rest = &rest[2..];
        } else if c == '{' {
            let end = rest.find('}').ok_or("a `{` without its `}` (write `{{` for a brace)")?;
            let name = &rest[1..end];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "unknown placeholder `{{{name}}}`; known: {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ));
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Placeholder(name));
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err("a `}` without its `{` (write `}}` for a brace)".into());
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// The arguments of `template` with each placeholder replaced by `value`; an argument whose
/// placeholder has no value is dropped, with the flag before it (see the module's
/// documentation). The template was checked, so it splits.
fn expand(template: &[String], value: &dyn Fn(&str) -> Option<OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = Vec::new();
    // Whether the last argument pushed is a flag without a value, which goes with a dropped
    // value after it.
    let mut last_was_flag = false;
    for arg in template {
        let pieces = split(arg).unwrap_or_default();
        let mut expanded = OsString::new();
        let mut dropped = false;
        let mut has_placeholder = false;
        for piece in &pieces {
            match piece {
                Piece::Text(text) => expanded.push(text),
                Piece::Placeholder(name) => {
                    has_placeholder = true;
                    match value(name) {
                        Some(v) => expanded.push(v),
                        None => dropped = true,
                    }
                }
            }
        }
        if dropped {
            if last_was_flag {
                out.pop();
            }
            last_was_flag = false;
            continue;
        }
        last_was_flag = !has_placeholder && arg.starts_with('-') && !arg.contains('=');
        out.push(expanded);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConsoleKind;
    use crate::vm::spec::{argv, strings};
    use crate::vm::{Accel, Share};

    fn config(toml_text: &str) -> VmmConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn wrapper() -> VmmConfig {
        config(
            r#"
            program = "tests/vmm/wrapvmm"
            args = ["--boot-image", "{kernel}", "--blk", "{disk}", "--ramdisk={initramfs}",
                    "--bootargs", "{cmdline}", "--ram-mib", "{mem}", "--vcpus", "{cpus}",
                    "--state", "{run_dir}/state", "--literal", "{{x}}"]
            root-bus = "nvme"
            "#,
        )
    }

    fn spec(root: Root) -> VmSpec {
        let mut spec =
            VmSpec::new(Arch::X86_64, "/k/bzImage".into(), root, "/t/console.log".into());
        spec.accel = Accel::Tcg;
        spec
    }

    #[test]
    fn the_schema_parses_with_its_defaults() {
        let c = wrapper();
        assert_eq!(c.console, ConsoleKind::Stdio);
        assert_eq!(c.poweroff, "reboot");
        assert_eq!(c.root_bus, BusName::Nvme);
        assert_eq!(c.kernel_format, None);
        let c = config(
            "program = \"x\"\nargs = []\nkernel-format = \"vmlinux\"\nconsole = \"stdio\"\n\
             poweroff = \"poweroff -f\"\nguest-console = \"hvc0\"",
        );
        assert_eq!(c.kernel_format, Some(KernelFormatName::Vmlinux));
        assert_eq!(c.poweroff, "poweroff -f");
        let err = toml::from_str::<VmmConfig>("program = \"x\"\nargs = []\nconsole = \"pty\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `pty`"), "{err}");
        let err = toml::from_str::<VmmConfig>("program = \"x\"\nargs = []\nbus = \"nvme\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `bus`"), "{err}");
    }

    #[test]
    fn placeholders_are_filled_and_an_unset_one_drops_its_flag() {
        let vmm = ConfiguredVmm::new("wrap", &wrapper(), Path::new("/ws")).unwrap();
        assert_eq!(vmm.default_program(Arch::X86_64), Path::new("/ws/tests/vmm/wrapvmm"));
        let disk = spec(Root::Disk { image: "/i/boot.ext4".into(), bus: RootBus::Nvme });
        let expected = argv(
            "--boot-image /k/bzImage --blk /i/boot.ext4 --bootargs",
            "console=ttyS0 root=/dev/nvme0n1 rw rootfstype=ext4 panic=-1",
            "--ram-mib 256 --vcpus 2 --state /t/state --literal {x}",
        );
        assert_eq!(strings(vmm.args(&disk).unwrap()), expected);
        // `--blk {disk}` goes whole; `--ramdisk={initramfs}` is one argument.
        let cpio = spec(Root::Initramfs("/i/rootfs.cpio.gz".into()));
        let args = strings(vmm.args(&cpio).unwrap());
        assert_eq!(
            args[..4],
            ["--boot-image", "/k/bzImage", "--ramdisk=/i/rootfs.cpio.gz", "--bootargs"]
        );
        assert!(!args.iter().any(|a| a.contains("blk")), "{args:?}");
        assert_eq!(vmm.buses(), [RootBus::Nvme]);
        assert_eq!(vmm.shutdown_command(), "reboot");
    }

    #[test]
    fn the_drop_rule_keeps_a_flag_that_is_not_before_the_dropped_value() {
        let none = |name: &str| (name == "kernel").then(|| OsString::from("K"));
        let t = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let got = |args: &[&str]| strings(expand(&t(args), &none));
        assert_eq!(got(&["-k", "{kernel}", "-d", "{disk}", "-v"]), ["-k", "K", "-v"]);
        // The argument before is a value, not a flag: only the unset one goes.
        assert_eq!(got(&["-k", "{kernel}", "{disk}"]), ["-k", "K"]);
        // A flag with its value inside is no pair with what follows.
        assert_eq!(got(&["--x=1", "{disk}"]), ["--x=1"]);
        assert_eq!(got(&["-v", "--disk", "path={disk},ro"]), ["-v"]);
        assert_eq!(got(&["--blk={disk}", "-v"]), ["-v"]);
    }

    #[test]
    fn wrong_configurations_are_refused_naming_the_key() {
        let root = Path::new("/ws");
        let mut c = wrapper();
        c.args.retain(|a| a != "{cmdline}");
        let err = ConfiguredVmm::new("wrap", &c, root).unwrap_err().to_string();
        assert!(err.contains("`run.vmm.wrap.args` has no `{cmdline}`"), "{err}");
        let mut c = wrapper();
        c.args.push("{image}".into());
        let err = ConfiguredVmm::new("wrap", &c, root).unwrap_err().to_string();
        assert!(err.contains("unknown placeholder `{image}`") && err.contains("run.vmm.wrap.args"));
        let mut c = wrapper();
        c.args.push("{kernel".into());
        let err = ConfiguredVmm::new("wrap", &c, root).unwrap_err().to_string();
        assert!(err.contains("without its `}`"), "{err}");
        let err = ConfiguredVmm::new("qemu", &wrapper(), root).unwrap_err().to_string();
        assert!(err.contains("named like busyroot's own VMM `qemu`"), "{err}");

        // Only the initramfs: a disk boot is refused, naming the missing placeholder.
        let mut c = wrapper();
        c.args.retain(|a| a != "--blk" && a != "{disk}");
        let vmm = ConfiguredVmm::new("wrap", &c, root).unwrap();
        let disk = spec(Root::Disk { image: "/i/boot.ext4".into(), bus: RootBus::Nvme });
        let err = vmm.args(&disk).unwrap_err().to_string();
        assert!(err.contains("`run.vmm.wrap.args` has no `{disk}`"), "{err}");
    }

    #[test]
    fn shares_need_share_args() {
        let root = Path::new("/ws");
        let mut s = spec(Root::Initramfs("/i/r.cpio.gz".into()));
        s.shares.push(Share {
            host: "/src".into(),
            guest: "/src".into(),
            readonly: false,
            transport: Transport::NineP,
            tag: "br0".into(),
            socket: None,
        });
        let vmm = ConfiguredVmm::new("wrap", &wrapper(), root).unwrap();
        assert_eq!(vmm.transports(), []);
        let err = vmm.args(&s).unwrap_err().to_string();
        assert!(err.contains("`run.vmm.wrap.share-args` is not set"), "{err}");
        let mut c = wrapper();
        c.share_args = Some(vec!["--fs".into(), "{share_dir}:{share_tag}".into()]);
        let vmm = ConfiguredVmm::new("wrap", &c, root).unwrap();
        assert_eq!(vmm.transports(), [Transport::NineP]);
        let args = strings(vmm.args(&s).unwrap());
        assert_eq!(args[args.len() - 2..], ["--fs", "/src:br0"]);
    }

    #[test]
    fn names_resolve_to_builtins_then_the_configured() {
        let mut run = RunConfig::default();
        run.vmm.insert("wrap".into(), wrapper());
        run.qemu = Some("bin/qemu".into());
        let root = Path::new("/ws");
        let (vmm, program) = vmm_named("qemu", &run, root).unwrap();
        assert_eq!((vmm, program), (Vmm::Qemu, Some(PathBuf::from("/ws/bin/qemu"))));
        assert_eq!(vmm_named("lkvm", &run, root).unwrap().0, Vmm::Kvmtool);
        for (configured, program) in
            [("./x", "/ws/x"), ("x", "x"), ("/bin/x", "/bin/x"), ("t/x", "/ws/t/x")]
        {
            run.firecracker = Some(configured.into());
            let got = vmm_named("firecracker", &run, root).unwrap().1;
            assert_eq!(got, Some(PathBuf::from(program)));
        }
        let (vmm, program) = vmm_named("wrap", &run, root).unwrap();
        assert_eq!((vmm.name(), program), ("wrap", None));
        let err = vmm_named("nope", &run, root).unwrap_err().to_string();
        assert!(err.contains("unknown VMM `nope`") && err.contains("configures wrap"), "{err}");
    }
}
