//! The VMMs behind [`Vmm`]: each variant's [`Backend`], what follows from it (whether it
//! needs KVM, its program, how it starts a VM), and the root bus chosen among those it offers.

use std::path::{Path, PathBuf};

use super::accel::Accel;
use super::event::Choice;
use super::kconfig::KernelConfig;
use super::spec::{Backend, ConsoleMode, Launch};
use super::spec::{RootBus, RootBusRequest, VmSpec, Vmm};
use super::{cloud_hypervisor, firecracker, kvmtool, qemu};
use crate::arch::Arch;
use crate::error::{Error, Result};

impl Vmm {
    /// Whether this VMM can only run guests with KVM.
    pub fn needs_kvm(&self) -> bool {
        self.backend().needs_kvm()
    }

    /// Refuses `accel` for a VMM that runs guests only with KVM ([`Error::NeedsKvm`]); `why`
    /// says why the accelerator is not KVM. The one place this rule lives: callers check it
    /// before a long build, and the runner again before it starts the VMM.
    pub fn check_accel(&self, accel: Accel, why: &str) -> Result<()> {
        if self.needs_kvm() && accel != Accel::Kvm {
            let vmm = self.backend().display_name().to_string();
            return Err(Error::NeedsKvm { vmm, why: why.into() });
        }
        Ok(())
    }

    /// The guest command that ends a VM under this VMM.
    pub fn shutdown_command(&self) -> &str {
        self.backend().shutdown_command()
    }

    /// The backend: the VMM's facts and hooks.
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Vmm::Qemu => &qemu::Qemu,
            Vmm::Kvmtool => &kvmtool::Kvmtool,
            Vmm::Firecracker => &firecracker::Firecracker,
            Vmm::CloudHypervisor => &cloud_hypervisor::CloudHypervisor,
            Vmm::Custom(backend) => backend.as_ref(),
        }
    }

    /// The program to run: the backend's environment variable (`$QEMU`, `$LKVM`, …) if set,
    /// else `configured`, else the backend's default (a name looked up in `$PATH`).
    pub fn program(&self, arch: Arch, configured: Option<&Path>) -> PathBuf {
        let backend = self.backend();
        backend
            .env_var()
            .and_then(std::env::var_os)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| configured.map(Path::to_path_buf))
            .unwrap_or_else(|| backend.default_program(arch))
    }

    /// How this VMM would start `spec`: the program, its arguments and any files it needs,
    /// written into `run_dir` (see [`Launch`]). Nothing is started.
    pub fn launch(&self, spec: &VmSpec, console: ConsoleMode, run_dir: &Path) -> Result<Launch> {
        self.backend().prepare(spec, console, run_dir)
    }
}

/// Chooses the root bus for `kernel`; see `choose_root_bus_with`. Looks for the kernel's
/// configuration with [`KernelConfig::find`].
pub fn choose_root_bus(
    request: RootBusRequest,
    kernel: &Path,
    vmm: Vmm,
) -> Result<Choice<RootBus>> {
    let config = match request {
        RootBusRequest::Auto => KernelConfig::find(kernel)?,
        RootBusRequest::Bus(_) => None,
    };
    choose_root_bus_with(request, config.as_ref(), vmm)
}

/// Chooses the root bus given the kernel's configuration, if known, among the buses `vmm`
/// offers. An explicit bus is always honoured if the VMM has it. `auto` picks the first bus
/// (virtio, nvme, scsi) whose drivers and ext4 are built in; with no configuration it uses
/// virtio and says so; when no bus can work it fails and suggests `--initramfs`.
pub fn choose_root_bus_with(
    request: RootBusRequest,
    config: Option<&KernelConfig>,
    vmm: Vmm,
) -> Result<Choice<RootBus>> {
    let offered = vmm.backend().buses();
    let names = || offered.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ");
    if let RootBusRequest::Bus(bus) = request {
        if !offered.contains(&bus) {
            return Err(Error::Other(format!(
                "{} cannot attach the root disk on the {bus} bus; it offers: {}",
                vmm.backend().display_name(),
                names()
            )));
        }
        return Ok(Choice { value: bus, reason: "requested with --root-bus".into() });
    }
    let Some(config) = config else {
        let first = offered[0];
        return Ok(Choice {
            value: first,
            reason: format!(
                "no kernel config found (config-<version> beside the image, a .config in its \
                 build tree, or IKCONFIG), assuming {first} is built in"
            ),
        });
    };
    if !config.is_builtin("EXT4_FS") {
        return Err(Error::Other(format!(
            "the kernel cannot mount an ext4 root without modules ({}, from `{}`); boot \
             the initramfs instead with --initramfs",
            config.describe("EXT4_FS"),
            config.source
        )));
    }
    let missing = |bus: RootBus| -> Vec<String> {
        bus.required_symbols()
            .iter()
            .filter(|s| !config.is_builtin(s))
            .map(|s| config.describe(s))
            .collect()
    };
    if let Some(&bus) = offered.iter().find(|&&b| missing(b).is_empty()) {
        let symbols: Vec<_> = bus.required_symbols().iter().map(|s| format!("{s}=y")).collect();
        return Ok(Choice {
            value: bus,
            reason: format!("{} and EXT4_FS=y in `{}`", symbols.join(", "), config.source),
        });
    }
    let why: Vec<String> = offered.iter().flat_map(|&b| missing(b)).collect();
    Err(Error::Other(format!(
        "no root bus {} offers ({}) has its driver built into the kernel ({}; from `{}`); \
         boot the initramfs instead with --initramfs, or force a bus with --root-bus",
        vmm.backend().display_name(),
        names(),
        why.join(", "),
        config.source
    )))
}
