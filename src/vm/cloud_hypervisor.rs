//! The cloud-hypervisor backend: `cloud-hypervisor --kernel … --cmdline … --serial tty
//! --console off`, KVM (or MSHV) only, written to its documented command line and never booted
//! here: this machine has no KVM and Debian 12 no cloud-hypervisor package.
//!
//! cloud-hypervisor boots the ELF `vmlinux` through its PVH note on x86_64 and the `Image` on
//! aarch64, attaches `--disk` on virtio-blk over PCI (`/dev/vda`), and with `--serial tty` puts
//! the guest's serial port on its stdio (`ttyS0`, the PL011 `ttyAMA0` on aarch64), with the
//! virtio console turned off so the kernel has one console. A guest reset reboots the VM
//! instead of ending the process; a power-off (ACPI on x86_64, PSCI on aarch64) ends it, so
//! busyroot types `poweroff`, which needs CONFIG_ACPI in an x86_64 guest kernel. Shares go
//! over virtiofs (`--fs tag=…,socket=…`, with guest memory shared for `virtiofsd`).
//!
//! Its option values are lists of `key=value` split at commas, so a path with a comma is
//! refused here rather than cut short there. `--disk` names no `image_type`: v51 and later
//! detect the raw image with a deprecation warning (and keep its sector 0, an ext4 image's
//! unused boot block, read-only), while releases before v51 would refuse the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::share::Transport;
use super::spec::{Backend, ConsoleMode, Launch};
use super::{Root, RootBus, VmSpec};
use crate::arch::{Arch, KernelFormat};
use crate::error::{Error, Result};

pub(crate) struct CloudHypervisor;

impl Backend for CloudHypervisor {
    fn display_name(&self) -> &str {
        "cloud-hypervisor"
    }

    fn default_program(&self, _arch: Arch) -> PathBuf {
        "cloud-hypervisor".into()
    }

    fn env_var(&self) -> Option<&str> {
        Some("CLOUD_HYPERVISOR")
    }

    fn transports(&self) -> &[Transport] {
        &[Transport::Virtiofs]
    }

    fn kernel_formats(&self, arch: Arch) -> &[KernelFormat] {
        match arch {
            Arch::X86_64 => &[KernelFormat::Elf],
            Arch::Aarch64 => &[KernelFormat::Arm64Image],
            Arch::Riscv64 => &[KernelFormat::RiscvImage],
        }
    }

    fn shutdown_command(&self) -> &str {
        "poweroff"
    }

    fn needs_kvm(&self) -> bool {
        true
    }

    fn prepare(&self, spec: &VmSpec, _console: ConsoleMode, _run_dir: &Path) -> Result<Launch> {
        Ok(Launch { program: spec.program.clone(), args: args(spec)?, files: Vec::new() })
    }
}

/// cloud-hypervisor's arguments for `spec`; both console modes are the same, the serial port
/// on its stdio.
pub(crate) fn args(spec: &VmSpec) -> Result<Vec<OsString>> {
    let mut args: Vec<OsString> = vec!["--kernel".into(), spec.kernel.clone().into()];
    match &spec.root {
        Root::Initramfs(cpio) => args.extend(["--initramfs".into(), cpio.clone().into()]),
        Root::Disk { image, bus: RootBus::Virtio } => {
            args.extend(["--disk".into(), option("path=", image)?]);
        }
        Root::Disk { bus, .. } => {
            return Err(Error::Other(format!(
                "cloud-hypervisor attaches disks only on virtio, not {bus}; use the virtio bus"
            )))
        }
    }
    let mut memory = format!("size={}M", spec.mem_mib);
    if spec.shares.iter().any(|s| s.transport == Transport::Virtiofs) {
        // virtiofsd maps the guest's memory, so it must be shared.
        memory.push_str(",shared=on");
    }
    let cpus = format!("boot={}", spec.cpus);
    let line = ["--cmdline", &spec.kernel_cmdline(), "--cpus", &cpus, "--memory", &memory];
    args.extend(line.map(OsString::from));
    args.extend("--serial tty --console off".split(' ').map(OsString::from));
    for share in &spec.shares {
        let socket = share.socket.as_deref().ok_or_else(|| {
            Error::Other(format!(
                "cloud-hypervisor shares `{}` only over virtiofs, through virtiofsd's socket",
                share.host.display()
            ))
        })?;
        let mut fs = option(&format!("tag={},socket=", share.tag), socket)?;
        fs.push(",num_queues=1,queue_size=1024");
        args.extend(["--fs".into(), fs]);
    }
    Ok(args)
}

/// `prefix` followed by `path`, refusing a path cloud-hypervisor would cut at a comma.
fn option(prefix: &str, path: &Path) -> Result<OsString> {
    if path.as_os_str().as_encoded_bytes().contains(&b',') {
        return Err(Error::Other(format!(
            "cloud-hypervisor cannot take `{}`: it splits option values at commas; use a path \
             without a comma",
            path.display()
        )));
    }
    let mut value = OsString::from(prefix);
    value.push(path);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::spec::{argv, strings};
    use crate::vm::{Accel, Share, Vmm};

    fn spec(root: Root) -> VmSpec {
        let mut spec =
            VmSpec::new(Arch::X86_64, "/k/vmlinux".into(), root, "/t/console.log".into());
        spec.vmm = Vmm::CloudHypervisor;
        spec.accel = Accel::Kvm;
        spec
    }

    /// The options cloud-hypervisor documents (`cloud-hypervisor --help`: `--kernel`,
    /// `--initramfs`, `--disk path=…`, `--cmdline`, `--cpus boot=…`, `--memory size=…`,
    /// `--serial off|null|pty|tty|file=…|socket=…`, `--console …`, `--fs tag=…,socket=…`),
    /// each given once but `--disk` and `--fs`, each with a value.
    fn assert_documented(args: &[String]) {
        let known = [
            "--kernel",
            "--initramfs",
            "--disk",
            "--cmdline",
            "--cpus",
            "--memory",
            "--serial",
            "--console",
            "--fs",
        ];
        let mut seen = Vec::new();
        for pair in args.chunks(2) {
            assert!(known.contains(&pair[0].as_str()), "undocumented option {}", pair[0]);
            assert!(pair.len() == 2 && !pair[1].starts_with("--"), "{} has no value", pair[0]);
            if !["--disk", "--fs"].contains(&pair[0].as_str()) {
                assert!(!seen.contains(&pair[0]), "{} twice", pair[0]);
            }
            seen.push(pair[0].clone());
        }
    }

    #[test]
    fn disk_and_initramfs() {
        let disk = spec(Root::Disk { image: "/i/boot.ext4".into(), bus: RootBus::Virtio });
        let line = strings(args(&disk).unwrap());
        assert_documented(&line);
        let expected = argv(
            "--kernel /k/vmlinux --disk path=/i/boot.ext4 --cmdline",
            "console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1",
            "--cpus boot=2 --memory size=256M --serial tty --console off",
        );
        assert_eq!(line, expected);
        let mut cpio = spec(Root::Initramfs("/i/rootfs.cpio.gz".into()));
        cpio.arch = Arch::Aarch64;
        let line = strings(args(&cpio).unwrap());
        assert_documented(&line);
        assert_eq!(line[2..4], ["--initramfs", "/i/rootfs.cpio.gz"]);
        assert!(line[5].starts_with("console=ttyAMA0 earlycon rdinit=/sbin/init"), "{}", line[5]);
        assert_eq!(CloudHypervisor.shutdown_command(), "poweroff");
    }

    #[test]
    fn virtiofs_shares_and_refusals() {
        let mut s = spec(Root::Initramfs("/i/r.cpio.gz".into()));
        s.shares.push(Share {
            host: "/src".into(),
            guest: "/src".into(),
            readonly: false,
            transport: Transport::Virtiofs,
            tag: "br0".into(),
            socket: Some("/t/virtiofs-0.sock".into()),
        });
        let line = strings(args(&s).unwrap());
        assert_documented(&line);
        assert!(line.contains(&"size=256M,shared=on".to_string()), "{line:?}");
        assert_eq!(
            line[line.len() - 2..],
            ["--fs", "tag=br0,socket=/t/virtiofs-0.sock,num_queues=1,queue_size=1024"]
        );
        let comma = spec(Root::Disk { image: "/i,x/r.ext4".into(), bus: RootBus::Virtio });
        assert!(args_err(&comma).contains("without a comma"));
        let nvme = spec(Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Nvme });
        assert!(args_err(&nvme).contains("only on virtio, not nvme"));
        assert!(Vmm::CloudHypervisor.check_accel(Accel::Tcg, "no /dev/kvm").is_err());
    }

    fn args_err(spec: &VmSpec) -> String {
        args(spec).unwrap_err().to_string()
    }
}
