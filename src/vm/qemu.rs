//! The QEMU backend: `qemu-system-<arch>` with KVM or TCG.

use std::ffi::OsString;

use std::path::{Path, PathBuf};

use super::channel::{ports, Channel};
use super::share::Transport;
use super::spec::{Backend, ConsoleMode, Launch};
use super::{qemu_escape, Accel, Root, RootBus, VmSpec};
use crate::arch::Arch;
use crate::error::Result;

pub(crate) struct Qemu;

impl Backend for Qemu {
    fn display_name(&self) -> &str {
        "QEMU"
    }

    fn env_var(&self) -> Option<&str> {
        Some("QEMU")
    }

    fn default_program(&self, arch: Arch) -> PathBuf {
        arch.info().qemu.into()
    }

    fn package(&self, arch: Arch) -> Option<&str> {
        Some(arch.info().qemu_package)
    }

    fn buses(&self) -> &[RootBus] {
        &RootBus::ALL
    }

    fn transports(&self) -> &[Transport] {
        &[Transport::NineP, Transport::Virtiofs]
    }

    fn channels(&self) -> &[Channel] {
        &[Channel::Ports, Channel::Serial]
    }

    fn shutdown_command(&self) -> &str {
        // QEMU runs with -no-reboot, so a reset ends it as a power-off would; and `reboot`
        // works on every kernel, while `poweroff` only halts one without ACPI (busyroot's
        // minimal x86_64 kernel) or without PSCI/SBI power-off.
        "reboot"
    }

    fn quit_hint(&self) -> String {
        "the guest console is on this terminal; press Ctrl-A X to quit QEMU \
         (Ctrl-A C for its monitor, Ctrl-A H for help)"
            .into()
    }

    fn logs_interactive_console(&self) -> bool {
        true
    }

    fn prepare(&self, spec: &VmSpec, console: ConsoleMode, run_dir: &Path) -> Result<Launch> {
        let mut args = args(spec, console);
        if spec.channel == Channel::Ports {
            let sockets = ports::Sockets::new(run_dir);
            sockets.prepare().map_err(|e| crate::Error::io("create the sockets of", run_dir, e))?;
            args.extend(sockets.qemu_args());
        }
        Ok(Launch { program: spec.program.clone(), args, files: Vec::new() })
    }
}

/// QEMU's arguments for `spec`.
fn args(spec: &VmSpec, console: ConsoleMode) -> Vec<OsString> {
    let mut args = machine_args(spec);
    match console {
        // Only the serial port on stdio: no monitor multiplexed in, so no byte we send
        // (Ctrl-A included) is ever eaten by QEMU.
        ConsoleMode::Piped => args.extend(piped_console_args()),
        // Serial and monitor share stdio (Ctrl-A X quits, Ctrl-A C switches); Ctrl-C
        // goes to the guest, and QEMU itself logs the console.
        ConsoleMode::Terminal => {
            let mut chardev = OsString::from("stdio,id=console,mux=on,signal=off,logfile=");
            chardev.push(qemu_escape(&spec.console_log));
            args.push("-chardev".into());
            args.push(chardev);
            args.extend(
                ["-serial", "chardev:console", "-mon", "chardev=console,mode=readline"]
                    .map(OsString::from),
            );
        }
    }
    args.extend(kernel_args(spec));
    args.extend(root_args(spec));
    shares(spec, &mut args);
    args
}

/// The machine: type, accelerator, CPU, firmware, memory and CPUs, no display, no network,
/// and an exit instead of a reboot, so a guest `reboot` or a panic (with panic=-1) ends the
/// QEMU process. Shared with the LAVA device dictionary.
pub(crate) fn machine_args(spec: &VmSpec) -> Vec<OsString> {
    let info = spec.arch.info();
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["-M", info.qemu_machine, "-accel", spec.accel.name()]);
    // Under KVM the guest gets the host's CPU, the one model that works on every host;
    // TCG emulates the table's model, or the machine's default.
    match (spec.accel, info.qemu_cpu) {
        (Accel::Kvm, _) => push(&["-cpu", "host"]),
        (Accel::Tcg, Some(cpu)) => push(&["-cpu", cpu]),
        (Accel::Tcg, None) => {}
    }
    if let Some(firmware) = info.qemu_firmware {
        push(&["-bios", firmware]);
    }
    push(&["-m", &spec.mem_mib.to_string(), "-smp", &spec.cpus.to_string()]);
    // Guest memory is shared memory (a memfd), which the host backs with 4 KiB pages as the
    // guest touches them; QEMU asks for transparent huge pages on private memory, and a host
    // short of free 2 MiB blocks compacts its memory for them, which added 0.3-0.45 s of
    // system time to a boot run right after another. virtiofsd maps this memory too.
    let memory = format!("memory-backend-memfd,id=mem,size={}M,share=on", spec.mem_mib);
    push(&["-object", &memory, "-numa", "node,memdev=mem"]);
    push(&["-display", "none", "-nic", "none", "-no-reboot"]);
    args
}

/// The serial console alone on stdio, with no monitor.
pub(crate) fn piped_console_args() -> Vec<OsString> {
    ["-serial", "stdio", "-monitor", "none"].map(OsString::from).to_vec()
}

/// The kernel and its command line.
pub(crate) fn kernel_args(spec: &VmSpec) -> Vec<OsString> {
    vec![
        "-kernel".into(),
        spec.kernel.clone().into(),
        "-append".into(),
        spec.kernel_cmdline().into(),
    ]
}

/// The root file system: the initramfs, or the disk on its bus.
pub(crate) fn root_args(spec: &VmSpec) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    match &spec.root {
        Root::Initramfs(cpio) => {
            args.push("-initrd".into());
            args.push(cpio.clone().into());
        }
        Root::Disk { image, bus } => {
            let mut drive = OsString::from("file=");
            drive.push(qemu_escape(image));
            drive.push(",format=raw");
            let strs = |items: &[&str]| items.iter().map(OsString::from).collect::<Vec<_>>();
            match bus {
                RootBus::Virtio => {
                    drive.push(",if=virtio");
                    args.extend(["-drive".into(), drive]);
                }
                RootBus::Nvme => {
                    drive.push(",if=none,id=root");
                    args.extend(["-drive".into(), drive]);
                    args.extend(strs(&["-device", "nvme,drive=root,serial=busyroot"]));
                }
                RootBus::Scsi => {
                    drive.push(",if=none,id=root");
                    args.extend(strs(&["-device", "virtio-scsi-pci,id=scsi0"]));
                    args.extend(["-drive".into(), drive]);
                    args.extend(strs(&["-device", "scsi-hd,drive=root,bus=scsi0.0"]));
                }
            }
        }
    }
    args
}

/// virtio-9p needs nothing but a device per share; virtiofs a vhost-user device per share
/// (the guest memory `virtiofsd` maps is shared for every run).
fn shares(spec: &VmSpec, args: &mut Vec<OsString>) {
    for (n, share) in spec.shares.iter().enumerate() {
        match share.transport {
            Transport::NineP => {
                let mut fsdev = OsString::from(format!("local,id=fs{n},path="));
                fsdev.push(qemu_escape(&share.host));
                fsdev.push(",security_model=none");
                if share.readonly {
                    fsdev.push(",readonly=on");
                }
                let device = format!("virtio-9p-pci,fsdev=fs{n},mount_tag={}", share.tag);
                args.extend(["-fsdev".into(), fsdev, "-device".into(), device.into()]);
            }
            Transport::Virtiofs => {
                let socket = share.socket.as_deref().expect("a virtiofs share has a socket");
                let mut chardev = OsString::from(format!("socket,id=vfs{n},path="));
                chardev.push(qemu_escape(socket));
                let device = format!("vhost-user-fs-pci,chardev=vfs{n},tag={}", share.tag);
                args.extend(["-chardev".into(), chardev, "-device".into(), device.into()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(root: Root) -> VmSpec {
        let mut spec =
            VmSpec::new(Arch::X86_64, "/k/vmlinuz".into(), root, "/t/console.log".into());
        spec.program = "qemu-system-x86_64".into();
        spec
    }

    fn line(spec: &VmSpec, console: ConsoleMode) -> String {
        let args = args(spec, console);
        args.iter().map(|a| a.to_str().unwrap()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn disk_on_each_bus() {
        let mut s = spec(Root::Disk { image: "/i/root,fs.ext4".into(), bus: RootBus::Nvme });
        assert_eq!(
            line(&s, ConsoleMode::Piped),
            "-M q35 -accel tcg -m 256 -smp 2 \
             -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
             -display none -nic none -no-reboot -serial stdio -monitor none -kernel /k/vmlinuz \
             -append console=ttyS0 root=/dev/nvme0n1 rw rootfstype=ext4 panic=-1 \
             -drive file=/i/root,,fs.ext4,format=raw,if=none,id=root \
             -device nvme,drive=root,serial=busyroot"
        );
        s.root = Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Virtio };
        assert!(line(&s, ConsoleMode::Piped).ends_with(
            "root=/dev/vda rw rootfstype=ext4 panic=-1 -drive file=/i/r.ext4,format=raw,if=virtio"
        ));
        s.root = Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Scsi };
        assert!(line(&s, ConsoleMode::Piped).ends_with(
            "-device virtio-scsi-pci,id=scsi0 -drive file=/i/r.ext4,format=raw,if=none,id=root \
             -device scsi-hd,drive=root,bus=scsi0.0"
        ));
    }

    #[test]
    fn initramfs_kvm_and_terminal() {
        let mut s = spec(Root::Initramfs("/i/rootfs.cpio.gz".into()));
        s.accel = Accel::Kvm;
        let l = line(&s, ConsoleMode::Terminal);
        assert!(l.starts_with("-M q35 -accel kvm -cpu host -m 256"), "{l}");
        assert!(l.contains(
            "-chardev stdio,id=console,mux=on,signal=off,logfile=/t/console.log \
             -serial chardev:console -mon chardev=console,mode=readline"
        ));
        assert!(l.ends_with("rdinit=/sbin/init panic=-1 -initrd /i/rootfs.cpio.gz"), "{l}");

        // Under KVM every arch gets the host's CPU, whatever the table emulates under TCG.
        s.arch = Arch::Aarch64;
        let l = line(&s, ConsoleMode::Piped);
        assert!(l.starts_with("-M virt,gic-version=max -accel kvm -cpu host -m"), "{l}");
        assert!(l.contains("console=ttyAMA0 earlycon "), "{l}");
    }

    #[test]
    fn machine_cpu_firmware_and_console_per_arch() {
        let mut s = spec(Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Virtio });
        s.arch = Arch::Aarch64;
        s.kernel = "/k/Image".into();
        assert_eq!(
            line(&s, ConsoleMode::Piped),
            "-M virt,gic-version=max -accel tcg -cpu max -m 256 -smp 2 \
             -object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem \
             -display none -nic none -no-reboot -serial stdio -monitor none -kernel /k/Image \
             -append console=ttyAMA0 earlycon root=/dev/vda rw rootfstype=ext4 panic=-1 \
             -drive file=/i/r.ext4,format=raw,if=virtio"
        );

        s.arch = Arch::Riscv64;
        s.root = Root::Initramfs("/i/rootfs.cpio.gz".into());
        let l = line(&s, ConsoleMode::Piped);
        assert!(l.starts_with("-M virt -accel tcg -bios default -m 256 -smp 2 "), "{l}");
        assert!(
            l.ends_with("-append console=ttyS0 earlycon rdinit=/sbin/init panic=-1 -initrd /i/rootfs.cpio.gz"),
            "{l}"
        );
        s.accel = Accel::Kvm;
        let l = line(&s, ConsoleMode::Piped);
        assert!(l.starts_with("-M virt -accel kvm -cpu host -bios default -m"), "{l}");

        // x86_64 takes QEMU's default CPU under TCG, and no firmware or extra arguments.
        s.arch = Arch::X86_64;
        s.accel = Accel::Tcg;
        let l = line(&s, ConsoleMode::Piped);
        assert!(l.starts_with("-M q35 -accel tcg -m 256"), "{l}");
        assert!(l.contains("-append console=ttyS0 rdinit="), "{l}");
    }
}
