//! The minivmm command: a stand-in hypervisor with a command line of its own. It boots a Linux
//! kernel with a root disk (on NVMe or virtio-blk) or an initramfs, the guest's serial console
//! on its stdin and stdout, and exits when the guest reboots. Underneath it runs QEMU, since
//! the machines that test it have no KVM; a real hypervisor would run the guest itself.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::{exit, Command};

const USAGE: &str = "\
usage: minivmm --kernel-image PATH (--root-disk PATH [--disk-bus nvme|virtio] | --initrd PATH)
               [--kernel-args TEXT] [--memory-mib N] [--cpus N]
       minivmm --images";

/// What the command line asks for.
#[derive(Default)]
struct Guest {
    kernel: Option<OsString>,
    disk: Option<OsString>,
    disk_bus: Option<OsString>,
    initrd: Option<OsString>,
    kernel_args: OsString,
    memory_mib: Option<OsString>,
    cpus: Option<OsString>,
}

fn fail(message: &str) -> ! {
    eprintln!("minivmm: {message}\n{USAGE}");
    exit(64)
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Guest {
    let mut guest = Guest::default();
    while let Some(flag) = args.next() {
        let flag = flag.to_string_lossy().into_owned();
        if flag == "--images" {
            println!("minivmm guest ({}):", minivmm::GUEST_ARCH);
            println!("  root disk  {}", minivmm::ROOTFS_EXT4);
            println!("  initramfs  {}", minivmm::ROOTFS_INITRAMFS);
            exit(0);
        }
        let value = args.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        let slot = match flag.as_str() {
            "--kernel-image" => &mut guest.kernel,
            "--root-disk" => &mut guest.disk,
            "--disk-bus" => &mut guest.disk_bus,
            "--initrd" => &mut guest.initrd,
            "--memory-mib" => &mut guest.memory_mib,
            "--cpus" => &mut guest.cpus,
            "--kernel-args" => {
                guest.kernel_args = value;
                continue;
            }
            _ => fail(&format!("unknown option `{flag}`")),
        };
        *slot = Some(value);
    }
    guest
}

fn main() {
    let guest = parse(std::env::args_os().skip(1));
    let Some(kernel) = guest.kernel else { fail("--kernel-image is required") };
    if guest.disk.is_none() == guest.initrd.is_none() {
        fail("give one of --root-disk and --initrd");
    }
    let (qemu, machine) = match minivmm::GUEST_ARCH {
        "x86_64" => ("qemu-system-x86_64", "q35"),
        "aarch64" => ("qemu-system-aarch64", "virt"),
        other => fail(&format!("no machine for a {other} guest")),
    };
    let qemu = std::env::var_os("MINIVMM_QEMU").unwrap_or_else(|| qemu.into());
    let mut command = Command::new(&qemu);
    command.args(["-M", machine, "-display", "none", "-nic", "none", "-no-reboot"]);
    if minivmm::GUEST_ARCH == "aarch64" {
        command.args(["-cpu", "max"]);
    }
    command.args(["-serial", "stdio", "-monitor", "none"]);
    command.arg("-m").arg(guest.memory_mib.unwrap_or_else(|| "256".into()));
    command.arg("-smp").arg(guest.cpus.unwrap_or_else(|| "1".into()));
    command.arg("-kernel").arg(kernel).arg("-append").arg(guest.kernel_args);
    if let Some(initrd) = guest.initrd {
        command.arg("-initrd").arg(initrd);
    }
    if let Some(disk) = guest.disk {
        if disk.to_string_lossy().contains(',') {
            fail("a --root-disk path with a comma");
        }
        let mut drive = OsString::from("file=");
        drive.push(disk);
        drive.push(",format=raw,if=none,id=root");
        command.arg("-drive").arg(drive);
        let device = match guest.disk_bus.as_ref().map(|b| b.to_string_lossy()).as_deref() {
            None | Some("nvme") => "nvme,drive=root,serial=minivmm",
            Some("virtio") => "virtio-blk-pci,drive=root",
            Some(other) => fail(&format!("unknown --disk-bus `{other}`")),
        };
        command.args(["-device", device]);
    }
    // The guest's console stays on our stdio, and whoever kills us kills the guest.
    let err = command.exec();
    eprintln!("minivmm: cannot run `{}`: {err}", qemu.to_string_lossy());
    exit(127)
}
