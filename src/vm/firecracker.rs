//! The Firecracker backend: `firecracker --no-api --config-file <run_dir>/firecracker.json`,
//! KVM only, written to Firecracker's documented configuration (the `boot-source`, `drives`
//! and `machine-config` objects of its API, given whole in one file) and never booted here:
//! this machine has no KVM and Debian 12 no Firecracker package.
//!
//! Firecracker boots an uncompressed kernel (the ELF `vmlinux` on x86_64, `Image` on aarch64;
//! `cargo xtask kernel` writes both), attaches drives on virtio-blk over MMIO (`/dev/vda` for
//! the first), puts an 8250 serial port (`ttyS0`) on its stdin and stdout, and exits when the
//! guest resets, so busyroot's `reboot` ends it. Its documented boot arguments start with
//! `reboot=k` (reset through the keyboard controller, which Firecracker turns into its exit)
//! and, on x86_64, `pci=off` (no PCI bus to probe); busyroot puts them first, so that the
//! user's own arguments still come last.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::spec::{Backend, ConsoleMode, Launch};
use super::{Root, RootBus, VmSpec};
use crate::arch::{Arch, KernelFormat};
use crate::error::{Error, Result};

pub(crate) struct Firecracker;

impl Backend for Firecracker {
    fn display_name(&self) -> &str {
        "Firecracker"
    }

    fn default_program(&self, _arch: Arch) -> PathBuf {
        "firecracker".into()
    }

    fn env_var(&self) -> Option<&str> {
        Some("FIRECRACKER")
    }

    fn console_device(&self, _arch: Arch) -> &str {
        "ttyS0"
    }

    fn kernel_formats(&self, arch: Arch) -> &[KernelFormat] {
        match arch {
            Arch::X86_64 => &[KernelFormat::Elf],
            Arch::Aarch64 => &[KernelFormat::Arm64Image],
            _ => &[],
        }
    }

    fn needs_kvm(&self) -> bool {
        true
    }

    fn prepare(&self, spec: &VmSpec, _console: ConsoleMode, run_dir: &Path) -> Result<Launch> {
        let path = run_dir.join("firecracker.json");
        let text = format!("{:#}\n", config(spec)?);
        crate::host::fs::write_file(&path, &text)?;
        let args: Vec<OsString> =
            vec!["--no-api".into(), "--config-file".into(), path.clone().into()];
        Ok(Launch { program: spec.program.clone(), args, files: vec![path] })
    }
}

/// The configuration file for `spec`.
pub(crate) fn config(spec: &VmSpec) -> Result<serde_json::Value> {
    if !matches!(spec.arch, Arch::X86_64 | Arch::Aarch64) {
        return Err(Error::Other(format!(
            "Firecracker runs x86_64 and aarch64 guests, not {}; boot it with QEMU",
            spec.arch
        )));
    }
    if let Some(share) = spec.shares.first() {
        return Err(Error::Other(format!(
            "Firecracker cannot show `{}` to the guest: it has neither virtio-9p nor virtiofs",
            share.host.display()
        )));
    }
    let prefix = match spec.arch {
        Arch::X86_64 => "reboot=k pci=off ",
        _ => "reboot=k ",
    };
    let mut boot = serde_json::json!({
        "kernel_image_path": utf8(&spec.kernel)?,
        "boot_args": format!("{prefix}{}", spec.kernel_cmdline()),
    });
    let mut drives = Vec::new();
    match &spec.root {
        Root::Initramfs(cpio) => boot["initrd_path"] = utf8(cpio)?.into(),
        Root::Disk { image, bus: RootBus::Virtio } => drives.push(serde_json::json!({
            "drive_id": "rootfs",
            "path_on_host": utf8(image)?,
            "is_root_device": true,
            "is_read_only": false,
        })),
        Root::Disk { bus, .. } => {
            return Err(Error::Other(format!(
                "Firecracker attaches disks only on virtio, not {bus}; use the virtio bus"
            )))
        }
    }
    Ok(serde_json::json!({
        "boot-source": boot,
        "drives": drives,
        "machine-config": { "vcpu_count": spec.cpus, "mem_size_mib": spec.mem_mib },
    }))
}

/// A path as the JSON string Firecracker reads.
fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        Error::Other(format!(
            "Firecracker's configuration is JSON, which cannot hold the path `{}` (not UTF-8); \
             rename it",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{Accel, Vmm};

    fn spec(root: Root) -> VmSpec {
        let mut spec =
            VmSpec::new(Arch::X86_64, "/k/vmlinux".into(), root, "/t/console.log".into());
        spec.vmm = Vmm::Firecracker;
        spec.accel = Accel::Kvm;
        spec.mem_mib = 512;
        spec.cpus = 1;
        spec
    }

    /// The keys and types of Firecracker's swagger definitions `BootSource` (required:
    /// kernel_image_path), `Drive` (required: drive_id, is_root_device; path_on_host for a
    /// block device) and `MachineConfiguration` (required: vcpu_count, mem_size_mib), and the
    /// top-level names of its `--config-file` (`boot-source`, `drives`, `machine-config`).
    fn assert_schema(config: &serde_json::Value) {
        let top = config.as_object().unwrap();
        for key in top.keys() {
            assert!(["boot-source", "drives", "machine-config"].contains(&key.as_str()), "{key}");
        }
        let boot = top["boot-source"].as_object().unwrap();
        assert!(boot["kernel_image_path"].is_string());
        for (key, value) in boot {
            assert!(["kernel_image_path", "boot_args", "initrd_path"].contains(&key.as_str()));
            assert!(value.is_string(), "{key}");
        }
        for drive in top["drives"].as_array().unwrap() {
            let drive = drive.as_object().unwrap();
            assert!(drive["drive_id"].is_string() && drive["path_on_host"].is_string());
            assert!(drive["is_root_device"].is_boolean() && drive["is_read_only"].is_boolean());
        }
        let machine = top["machine-config"].as_object().unwrap();
        assert!(machine["vcpu_count"].is_u64() && machine["mem_size_mib"].is_u64());
        assert_eq!(machine.len(), 2);
    }

    #[test]
    fn disk_boot_writes_the_config_file_and_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(Root::Disk { image: "/i/boot.ext4".into(), bus: RootBus::Virtio });
        let launch = Firecracker.prepare(&s, ConsoleMode::Piped, tmp.path()).unwrap();
        let file = tmp.path().join("firecracker.json");
        assert_eq!(
            launch.args,
            [OsString::from("--no-api"), "--config-file".into(), file.clone().into()]
        );
        assert_eq!(launch.files, std::slice::from_ref(&file));
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_schema(&config);
        assert_eq!(
            config,
            serde_json::json!({
                "boot-source": {
                    "kernel_image_path": "/k/vmlinux",
                    "boot_args": "reboot=k pci=off console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1",
                },
                "drives": [{
                    "drive_id": "rootfs",
                    "path_on_host": "/i/boot.ext4",
                    "is_root_device": true,
                    "is_read_only": false,
                }],
                "machine-config": { "vcpu_count": 1, "mem_size_mib": 512 },
            })
        );
    }

    #[test]
    fn initramfs_boot_and_refusals() {
        let mut s = spec(Root::Initramfs("/i/rootfs.cpio.gz".into()));
        s.append.push("quiet".into());
        let c = config(&s).unwrap();
        assert_schema(&c);
        assert_eq!(c["boot-source"]["initrd_path"], "/i/rootfs.cpio.gz");
        assert_eq!(c["drives"], serde_json::json!([]));
        assert!(c["boot-source"]["boot_args"].as_str().unwrap().ends_with("panic=-1 quiet"));

        s.arch = Arch::Aarch64;
        let args = config(&s).unwrap()["boot-source"]["boot_args"].as_str().unwrap().to_string();
        assert!(args.starts_with("reboot=k console=ttyS0 earlycon "), "{args}");
        assert_eq!(Firecracker.kernel_formats(Arch::X86_64), [KernelFormat::Elf]);

        s.arch = Arch::Riscv64;
        assert!(config(&s).unwrap_err().to_string().contains("not riscv64"));
        let nvme = spec(Root::Disk { image: "/i/r.ext4".into(), bus: RootBus::Nvme });
        assert!(config(&nvme).unwrap_err().to_string().contains("only on virtio, not nvme"));
        assert!(Vmm::Firecracker.check_accel(Accel::Tcg, "no /dev/kvm").is_err());
    }
}
