//! The kvmtool backend: `lkvm run`, KVM only, root disk on virtio-blk.
//!
//! lkvm builds the guest's kernel command line itself and appends ours (`-p`) to it
//! (kvmtool's builtin-run.c, `kvm_run_set_real_cmdline`; x86/kvm.c, `kvm__arch_set_cmdline`).
//! On x86 it starts with `noapic noacpi pci=conf1 reboot=k panic=1 i8042.direct=1
//! i8042.dumbkbd=1 i8042.nopnp=1 earlyprintk=serial i8042.noaux=1`, then `console=ttyS0` for
//! `--console serial`, then `root=/dev/vda rw` unless our parameters contain `root=`. None of
//! it conflicts with ours: our `console=ttyS0` names the same console, which the kernel
//! registers once; our `panic=-1` comes later and wins over `panic=1`; a disk boot passes
//! `root=/dev/vda`, so lkvm adds no second one; an initramfs boot gets lkvm's `root=/dev/vda
//! rw`, which the kernel never uses because `rdinit=/sbin/init` runs from the initramfs.
//! `noacpi` is no kernel parameter, so the kernel hands it to init, which ignores it.
//!
//! lkvm splits a `-d` argument at commas into the path and flags (`,ro`, `,direct`) and a
//! `--9p` argument at its first comma into the directory and the tag, with no escape, so a
//! path with a comma is refused here rather than cut short there.

use std::ffi::OsString;

use std::path::{Path, PathBuf};

use super::share::Transport;
use super::spec::{Backend, ConsoleMode, Launch};
use super::{Root, RootBus, VmSpec};
use crate::arch::Arch;
use crate::error::{Error, Result};

pub(crate) struct Kvmtool;

impl Backend for Kvmtool {
    fn display_name(&self) -> &str {
        "kvmtool"
    }

    fn env_var(&self) -> Option<&str> {
        Some("LKVM")
    }

    fn default_program(&self, _arch: Arch) -> PathBuf {
        "lkvm".into()
    }

    fn package(&self, _arch: Arch) -> Option<&str> {
        Some("kvmtool")
    }

    fn console_device(&self, _arch: Arch) -> &str {
        // kvmtool emulates an 8250 UART for `--console serial` on every architecture.
        "ttyS0"
    }

    fn transports(&self) -> &[Transport] {
        // `--9p DIR,TAG`; kvmtool has no vhost-user-fs device for virtiofs.
        &[Transport::NineP]
    }

    fn console_on_terminal(&self) -> bool {
        // lkvm starts the thread that feeds its stdin to the guest only when stdin and stdout
        // are a terminal (term.c), so the runner gives it a pseudo-terminal.
        true
    }

    fn needs_kvm(&self) -> bool {
        true
    }

    fn quit_hint(&self) -> String {
        "the guest console is on this terminal; press Ctrl-A X to quit kvmtool".into()
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
            refuse_comma(image, "a disk path as the start of disk flags")?;
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
    let (mem, cpus) = (spec.mem_mib.to_string(), spec.cpus.to_string());
    args.extend(["-p", &spec.kernel_cmdline(), "-m", &mem, "-c", &cpus].map(OsString::from));
    // All four serial ports read lkvm's terminal; each `--tty` moves one onto a pty of its own,
    // so that only ttyS0, the console, takes what is typed.
    let fixed = "--console serial --tty 1 --tty 2 --tty 3 --network mode=none";
    args.extend(fixed.split(' ').map(OsString::from));
    for share in &spec.shares {
        refuse_comma(&share.host, "a shared directory's path as the start of its tag")?;
        // kvmtool's 9p export has no read-only mode; the guest mounts it read-only.
        let mut export = share.host.clone().into_os_string();
        export.push(format!(",{}", share.tag));
        args.extend(["--9p".into(), export]);
    }
    Ok(args)
}

/// Fails for a path lkvm would cut at a comma, reading the rest as `what`.
fn refuse_comma(path: &Path, what: &str) -> Result<()> {
    if path.as_os_str().as_encoded_bytes().contains(&b',') {
        return Err(Error::Other(format!(
            "kvmtool cannot take `{}`: it reads a comma in {what}; use a path without a comma",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::spec::{argv, strings};
    use crate::vm::{Accel, Vmm};

    fn spec(root: Root) -> VmSpec {
        let mut spec =
            VmSpec::new(Arch::X86_64, "/k/bzImage".into(), root, "/t/console.log".into());
        (spec.vmm, spec.program, spec.accel) = (Vmm::Kvmtool, "lkvm".into(), Accel::Kvm);
        (spec.append, spec.mem_mib, spec.cpus) = (vec!["quiet".into()], 512, 1);
        spec
    }

    #[test]
    fn disk_and_initramfs() {
        let disk = spec(Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Virtio });
        let expected = argv(
            "run -k /k/bzImage -d /i/r.ext4 -p",
            "console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1 quiet",
            "-m 512 -c 1 --console serial --tty 1 --tty 2 --tty 3 --network mode=none",
        );
        assert_eq!(strings(args(&disk).unwrap()), expected);
        let initramfs = spec(Root::Initramfs("/i/r.cpio.gz".into()));
        let args = strings(args(&initramfs).unwrap());
        assert_eq!(args[3..5], ["-i", "/i/r.cpio.gz"]);
        assert_eq!(args[6], "console=ttyS0 rdinit=/sbin/init panic=-1 quiet");
    }

    #[test]
    fn no_comma_in_a_disk_or_shared_path() {
        let comma = spec(Root::Disk { image: "/i,ro/r.ext4".into(), bus: RootBus::Virtio });
        let err = args(&comma).unwrap_err().to_string();
        assert!(err.contains("`/i,ro/r.ext4`") && err.contains("without a comma"), "{err}");
        // An initramfs path is taken whole.
        let mut cpio = spec(Root::Initramfs("/i,x/r.cpio.gz".into()));
        assert!(args(&cpio).is_ok());
        cpio.shares.push(crate::vm::Share {
            host: "/s,t".into(),
            guest: "/mnt".into(),
            readonly: false,
            transport: Transport::NineP,
            tag: "br0".into(),
            socket: None,
        });
        let err = args(&cpio).unwrap_err().to_string();
        assert!(err.contains("`/s,t`") && err.contains("its tag"), "{err}");
    }

    #[test]
    fn only_virtio() {
        let nvme = spec(Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Nvme });
        let err = args(&nvme).unwrap_err().to_string();
        assert!(err.contains("only on virtio"), "{err}");
    }
}
