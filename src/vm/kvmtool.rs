//! The kvmtool backend: `lkvm run`, KVM only, root disk on virtio-blk.

use std::ffi::OsString;

use std::path::Path;

use super::backend::{Backend, ConsoleMode, Launch};
use super::share::Transport;
use super::{Root, RootBus, VmSpec};
use crate::arch::Arch;
use crate::error::{Error, Result};

pub(crate) struct Kvmtool;

impl Backend for Kvmtool {
    fn display_name(&self) -> &'static str {
        "kvmtool"
    }

    fn env_var(&self) -> &'static str {
        "LKVM"
    }

    fn default_program(&self, _arch: Arch) -> &'static str {
        "lkvm"
    }

    fn package(&self, _arch: Arch) -> &'static str {
        "kvmtool"
    }

    fn console_device(&self, _arch: Arch) -> &'static str {
        // kvmtool emulates an 8250 UART for `--console serial` on every architecture.
        "ttyS0"
    }

    fn buses(&self) -> &'static [RootBus] {
        &[RootBus::Virtio]
    }

    fn transports(&self) -> &'static [Transport] {
        // `--9p DIR,TAG`; kvmtool has no vhost-user-fs device for virtiofs.
        &[Transport::NineP]
    }

    fn needs_kvm(&self) -> bool {
        true
    }

    fn quit_hint(&self) -> &'static str {
        "the guest console is on this terminal; press Ctrl-A X to quit kvmtool"
    }

    fn logs_interactive_console(&self) -> bool {
        false
    }

    fn prepare(&self, spec: &VmSpec, _console: ConsoleMode, _run_dir: &Path) -> Result<Launch> {
        Ok(Launch { program: spec.program.clone(), args: args(spec)?, files: Vec::new() })
    }
}

/// `lkvm run` and its arguments for `spec`. Both console modes are the same: kvmtool puts
/// the serial console on its stdio either way.
fn args(spec: &VmSpec) -> Result<Vec<OsString>> {
    let mut args: Vec<OsString> = vec!["run".into(), "-k".into(), spec.kernel.clone().into()];
    match &spec.root {
        Root::Disk { image, bus: RootBus::Virtio } => {
            args.extend(["-d".into(), image.clone().into()]);
        }
        Root::Disk { bus, .. } => {
            return Err(Error::Other(format!(
                "kvmtool attaches disks only on virtio, not {bus}; use --root-bus virtio \
                     or --vmm qemu"
            )))
        }
        Root::Initramfs(cpio) => args.extend(["-i".into(), cpio.clone().into()]),
    }
    args.extend(
        [
            "-p",
            &spec.kernel_cmdline(),
            "-m",
            &spec.mem_mib.to_string(),
            "-c",
            &spec.cpus.to_string(),
            "--console",
            "serial",
            "--network",
            "mode=none",
        ]
        .map(OsString::from),
    );
    for share in &spec.shares {
        // kvmtool's 9p export has no read-only mode; the guest mounts it read-only.
        let mut export = share.host.clone().into_os_string();
        export.push(format!(",{}", share.tag));
        args.extend(["--9p".into(), export]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Accel, Vmm};

    fn spec(root: Root) -> VmSpec {
        VmSpec {
            arch: Arch::X86_64,
            vmm: Vmm::Kvmtool,
            program: "lkvm".into(),
            accel: Accel::Kvm,
            kernel: "/k/bzImage".into(),
            root,
            append: vec!["quiet".into()],
            mem_mib: 512,
            cpus: 1,
            console_log: "/t/console.log".into(),
            shares: vec![],
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn disk_and_initramfs() {
        let disk = spec(Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Virtio });
        assert_eq!(
            strings(args(&disk).unwrap()),
            [
                "run",
                "-k",
                "/k/bzImage",
                "-d",
                "/i/r.ext4",
                "-p",
                "console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1 quiet",
                "-m",
                "512",
                "-c",
                "1",
                "--console",
                "serial",
                "--network",
                "mode=none"
            ]
        );
        let initramfs = spec(Root::Initramfs("/i/r.cpio.gz".into()));
        let args = strings(args(&initramfs).unwrap());
        assert_eq!(args[3..5], ["-i", "/i/r.cpio.gz"]);
        assert_eq!(args[6], "console=ttyS0 rdinit=/sbin/init panic=-1 quiet");
    }

    #[test]
    fn only_virtio() {
        let nvme = spec(Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Nvme });
        let err = args(&nvme).unwrap_err().to_string();
        assert!(err.contains("only on virtio"), "{err}");
    }
}
