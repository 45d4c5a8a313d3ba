//! A VMM busyroot has never heard of: `tests/vmm/tinyvmm`, a script with a command line of its
//! own (QEMU underneath, as this machine has no KVM), booted three ways: configured only in a
//! hypervisor project's `Cargo.toml` and driven by `cargo xtask run --vmm tinyvmm`; as the
//! caller's own [`Backend`] through the public trait; and as a `[[matrix]]` cell's `vmm`.
//!
//! They boot the x86_64 kernel `cargo xtask kernel` builds, or `$BUSYROOT_TEST_KERNEL`.

use std::path::{Path, PathBuf};
use std::process::Command;

use busyroot::arch::Arch;
use busyroot::config::{Config, MatrixCell, Medium};
use busyroot::image::Format;
use busyroot::vm::{Backend, ConsoleMode, Launch, Outcome, Root, RootBus, Vm, VmSpec};

use super::support;

/// The VMM under test, as a hypervisor project would keep it.
fn tinyvmm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vmm/tinyvmm")
}

/// The tables a hypervisor project writes for tinyvmm, `program` relative to its root: its
/// disk on NVMe as `tinyvmm`, on virtio-blk as `tinyvmm-virtio`.
const CONFIG: &str = r#"
[workspace]

[workspace.metadata.busyroot.run.vmm.tinyvmm]
program = "./tinyvmm"
args = ["--boot-image", "{kernel}", "--nvme-disk", "{disk}", "--ramdisk={initramfs}",
        "--bootargs", "{cmdline}", "--ram-mib", "{mem}", "--vcpus", "{cpus}",
        "--serial-on-stdio"]
root-bus = "nvme"

[workspace.metadata.busyroot.run.vmm.tinyvmm-virtio]
program = "./tinyvmm"
args = ["--boot-image", "{kernel}", "--virtio-disk", "{disk}", "--ramdisk={initramfs}",
        "--bootargs", "{cmdline}", "--ram-mib", "{mem}", "--vcpus", "{cpus}",
        "--serial-on-stdio"]
"#;

/// The bus of `kernel`'s root disk driver: NVMe where it is built in (Debian's cloud kernel,
/// whose virtio-blk is a module), else virtio-blk (busyroot's minimal kernel).
fn bus_of(kernel: &Path) -> RootBus {
    let config = busyroot::vm::KernelConfig::find(kernel).unwrap();
    match config {
        Some(c) if c.is_builtin("BLK_DEV_NVME") => RootBus::Nvme,
        _ => RootBus::Virtio,
    }
}

/// A hypervisor project at `dir`: its `Cargo.toml` with [`CONFIG`], its copy of tinyvmm, and a
/// target directory holding this workspace's BusyBox build, so that only the images are made.
fn project(dir: &Path, outputs: &busyroot::pipeline::rootfs::Outputs) {
    std::fs::write(dir.join("Cargo.toml"), CONFIG).unwrap();
    std::fs::copy(tinyvmm(), dir.join("tinyvmm")).unwrap();
    support::copy_busybox_build(outputs, &dir.join("target"));
}

/// This workspace's xtask binary, built first.
fn xtask() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--package", "xtask"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo build -p xtask: {}", String::from_utf8_lossy(&out.stderr));
    support::workspace().target_dir.join("debug/xtask")
}

/// `xtask run --vmm tinyvmm[-virtio] --kernel KERNEL ARGS` in the project `dir`, the VMM
/// attaching the disk where the kernel has its driver: exit code, stdout, stderr.
fn run(xtask: &Path, dir: &Path, kernel: &Path, args: &[&str]) -> (i32, String, String) {
    let vmm = match bus_of(kernel) {
        RootBus::Nvme => "tinyvmm",
        _ => "tinyvmm-virtio",
    };
    let out = Command::new(xtask)
        .args(["run", "--vmm", vmm, "--kernel"])
        .arg(kernel)
        .args(args)
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_vmm_configured_in_cargo_toml_passes_the_checks_and_returns_a_commands_status() {
    let test = "a_vmm_configured_in_cargo_toml_passes_the_checks_and_returns_a_commands_status";
    let Some((kernel, outputs)) = support::test_kernel_and_rootfs(test) else { return };
    let xtask = xtask();
    let dir = support::tempdir();
    project(dir.path(), outputs);
    let launched = format!("$ {}/tinyvmm --boot-image ", dir.path().display());

    // The checks on the disk, attached on the bus `root-bus` says, with a JSON report.
    let json = dir.path().join("disk.json");
    let (code, _, err) =
        run(&xtask, dir.path(), &kernel, &["--check", "--json", json.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let bus = bus_of(&kernel);
    let flag = format!("--{}-disk ", bus.name());
    assert!(err.contains(&launched) && err.contains(&flag), "{err}");
    // Under TCG a uniprocessor x86_64 kernel also gets `noapictimer`, at the end.
    let line = format!("'console=ttyS0 root={} rw rootfstype=ext4 panic=-1", bus.device());
    let ends = [format!("{line}'"), format!("{line} noapictimer'")];
    assert!(ends.iter().any(|end| err.contains(end)), "{err}");
    assert!(!err.contains("--ramdisk"), "an unset placeholder's argument stays out: {err}");
    assert!(err.contains("ok    poweroff: exited with status 0"), "{err}");
    assert!(err.contains("ok    image is clean after shutdown"), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["verdict"], "passed", "{report:#}");

    // The checks on the initramfs, with a JUnit report; the disk's arguments are dropped.
    let junit = dir.path().join("initramfs.xml");
    let (code, _, err) = run(
        &xtask,
        dir.path(),
        &kernel,
        &["--check", "--initramfs", "--junit", junit.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("--ramdisk=") && !err.contains("-disk "), "{err}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"0\"") && xml.contains("name=\"poweroff\""), "{xml}");

    // A command's status comes back exactly, over the serial relay.
    let (code, out, err) = run(&xtask, dir.path(), &kernel, &["--", "/bin/sh", "-c", "echo ok"]);
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
    assert!(
        err.contains("payload: serial relay (the VMM offers only its serial console)"),
        "{err}"
    );
    let args = ["--initramfs", "--", "/bin/sh", "-c", "echo three; exit 3"];
    let (code, out, err) = run(&xtask, dir.path(), &kernel, &args);
    assert_eq!((code, out.as_str()), (3, "three\n"), "{err}");

    // A share it cannot honour is refused before the boot, naming the key that would.
    let (code, _, err) = run(&xtask, dir.path(), &kernel, &["--share", "/tmp", "--", "/bin/true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("share-args` is not set"), "{err}");
    assert!(!err.contains(&launched), "nothing was started: {err}");
}

/// tinyvmm as a hypervisor project's own test would drive it: a [`Backend`] of its own.
struct TinyVmm(PathBuf);

impl Backend for TinyVmm {
    fn display_name(&self) -> &str {
        "tinyvmm"
    }

    fn default_program(&self, _arch: Arch) -> PathBuf {
        self.0.clone()
    }

    fn buses(&self) -> &[RootBus] {
        &[RootBus::Nvme, RootBus::Virtio]
    }

    fn prepare(&self, spec: &VmSpec, _: ConsoleMode, _: &Path) -> busyroot::Result<Launch> {
        let mut args = vec!["--boot-image".into(), spec.kernel.clone().into_os_string()];
        match &spec.root {
            Root::Disk { image, bus } => {
                args.extend([format!("--{}-disk", bus.name()).into(), image.into()])
            }
            Root::Initramfs(cpio) => {
                let mut arg = std::ffi::OsString::from("--ramdisk=");
                arg.push(cpio);
                args.push(arg);
            }
        }
        args.extend(["--bootargs".into(), spec.kernel_cmdline().into()]);
        args.extend(["--ram-mib".into(), spec.mem_mib.to_string().into()]);
        Ok(Launch { program: spec.program.clone(), args, files: Vec::new() })
    }
}

#[test]
fn a_vmm_of_the_callers_own_boots_through_the_public_trait() {
    let test = "a_vmm_of_the_callers_own_boots_through_the_public_trait";
    let Some((kernel, outputs)) = support::test_kernel_and_rootfs(test) else { return };
    let tmp = support::tempdir();
    let report = Vm::new(Arch::X86_64, &kernel)
        .disk(outputs.path(Format::Ext4))
        .backend(TinyVmm(tinyvmm()))
        .work_dir(tmp.path().join("disk"))
        .check()
        .unwrap();
    assert_eq!(report.outcome, Outcome::Passed, "{:#?}", report.checks);
    let bus = bus_of(&kernel);
    assert!(report.root.ends_with(&format!("boot.ext4 on {bus}")), "{}", report.root);
    support::assert_no_process(report.vmm_pid);

    let out = Vm::new(Arch::X86_64, &kernel)
        .initramfs(outputs.path(Format::CpioGz))
        .backend(TinyVmm(tinyvmm()))
        .work_dir(tmp.path().join("cpio"))
        .run(["/bin/sh", "-c", "echo from tinyvmm; exit 3"])
        .unwrap();
    assert_eq!((out.status, out.stdout.as_str()), (3, "from tinyvmm\n"));
    support::assert_no_process(out.report.vmm_pid);
}

#[test]
fn a_matrix_cell_names_a_configured_vmm() {
    let test = "a_matrix_cell_names_a_configured_vmm";
    let Some((kernel, _)) = support::test_kernel_and_rootfs(test) else { return };
    let mut ws = support::workspace();
    let table = CONFIG.replace("[workspace]\n", "").replace("[workspace.metadata.busyroot.", "[");
    let config = Config::from_toml(&table, Path::new("Cargo.toml")).unwrap();
    ws.config.run.vmm = config.run.vmm;
    // The program as the project root would resolve it.
    ws.config.run.vmm.get_mut("tinyvmm").unwrap().program = tinyvmm();
    ws.config.matrix = vec![MatrixCell {
        arch: Some(Arch::X86_64),
        kernel: Some(kernel),
        root: Medium::Initramfs,
        command: Some(vec!["/bin/sh".into(), "-c".into(), "exit 3".into()]),
        vmm: Some("tinyvmm".into()),
        ..MatrixCell::default()
    }];
    let cells = busyroot::matrix::cells(&ws).unwrap();
    // The derived name says which VMM (then the kernel's and the program's file names).
    let name = &cells[0].name;
    assert!(name.starts_with("x86_64-initramfs-tinyvmm-") && name.ends_with("-sh"), "{name}");
    let sh = xshell::Shell::new().unwrap();
    let report = busyroot::matrix::run_matrix(&sh, &cells, 1, &busyroot::vm::Quiet);
    let cell = &report.cells[0];
    assert_eq!(cell.verdict(), "command-failed", "{}", cell.detail());
    let run = cell.report().unwrap();
    assert_eq!(run.command.as_ref().and_then(|c| c.status), Some(3));
    let console = std::fs::read_to_string(&run.console_log).unwrap();
    let cmdline = console.lines().find(|l| l.contains("Command line: ")).unwrap_or_default();
    let cmdline = cmdline.trim_end_matches(" noapictimer");
    assert!(cmdline.ends_with(" console=ttyS0 rdinit=/sbin/init panic=-1"), "{console}");
}

/// A VMM the test starts itself, as a harness busyroot does not control would; killed on drop.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// QEMU booting `cpio` with busyroot's kernel command line, its serial console on a Unix
/// socket it listens on (waiting for a client before the guest starts); and the socket.
fn qemu_on_a_socket(kernel: &Path, cpio: &Path, dir: &Path) -> (Started, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let socket = dir.join("console.sock");
    let spec =
        VmSpec::new(Arch::X86_64, kernel.into(), Root::Initramfs(cpio.into()), dir.join("log"));
    let child = Command::new("qemu-system-x86_64")
        .args(["-M", "q35", "-accel", "tcg", "-m", "256", "-display", "none", "-nic", "none"])
        .args(["-no-reboot", "-monitor", "none", "-serial"])
        .arg(format!("unix:{},server=on,wait=on", socket.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(cpio)
        .args(["-append", &spec.kernel_cmdline()])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut started = Started(child);
    // QEMU makes the socket before it waits for a client; it may also fail first.
    while !socket.exists() {
        if let Some(status) = started.0.try_wait().unwrap() {
            panic!("QEMU exited with {status} before it listened on `{}`", socket.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (started, socket)
}

#[test]
fn the_checks_and_a_payload_run_over_a_console_busyroot_did_not_open() {
    let test = "the_checks_and_a_payload_run_over_a_console_busyroot_did_not_open";
    let Some((kernel, outputs)) = support::test_kernel_and_rootfs(test) else { return };
    let tmp = support::tempdir();

    let (qemu, socket) = qemu_on_a_socket(&kernel, outputs.path(Format::CpioGz), tmp.path());
    let console = busyroot::vm::AttachedConsole::unix_socket("a harness's QEMU", &socket).unwrap();
    let report = Vm::new(Arch::X86_64, &kernel)
        .initramfs(outputs.path(Format::CpioGz))
        .backend(console)
        .work_dir(tmp.path().join("check"))
        .check()
        .unwrap();
    assert_eq!(report.outcome, Outcome::Passed, "{:#?}", report.checks);
    // The guest's reboot ended QEMU (`-no-reboot`), which closed the console.
    let mut qemu = qemu;
    let status = qemu.0.wait().unwrap();
    assert!(status.success(), "{status}");
    drop(qemu);

    let (qemu, socket) =
        qemu_on_a_socket(&kernel, outputs.path(Format::CpioGz), &tmp.path().join("run"));
    let console = busyroot::vm::AttachedConsole::unix_socket("a harness's QEMU", &socket).unwrap();
    let out = Vm::new(Arch::X86_64, &kernel)
        .initramfs(outputs.path(Format::CpioGz))
        .backend(console)
        .work_dir(tmp.path().join("run"))
        .run(["/bin/sh", "-c", "echo over the socket; exit 3"])
        .unwrap();
    assert_eq!((out.status, out.stdout.as_str()), (3, "over the socket\n"), "{:#?}", out.report);
    drop(qemu);
}
