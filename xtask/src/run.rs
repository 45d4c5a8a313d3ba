//! `cargo xtask run`: boot the image under QEMU or kvmtool, interactively or as a smoke check.

use std::path::PathBuf;

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::vm::{self, AccelRequest, CheckPlan, Root, RootBusRequest, Timeouts, VmSpec, Vmm};
use xshell::Shell;

use crate::rootfs::{self, RootfsArgs};

/// Flags of `cargo xtask run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Kernel image to boot [default: $BUSYROOT_KERNEL, else config `kernel`, else the kernel
    /// built by `cargo xtask kernel`].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Boot, check the guest over the serial console, power off and check the image; exit 0
    /// if everything passed, 1 if a check failed, 2 if the boot failed.
    #[arg(long)]
    pub check: bool,
    /// Boot rootfs.cpio.gz as an initramfs instead of rootfs.ext4 as the root disk.
    #[arg(long)]
    pub initramfs: bool,
    /// Virtual machine monitor: qemu or kvmtool.
    #[arg(long, value_name = "VMM", default_value = "qemu")]
    pub vmm: Vmm,
    /// Accelerator: auto (KVM only where it can run this guest), kvm or tcg.
    #[arg(long, value_name = "ACCEL", default_value = "auto")]
    pub accel: AccelRequest,
    /// Bus of the root disk: auto (from the kernel's config), virtio, nvme or scsi.
    #[arg(long, value_name = "BUS", default_value = "auto")]
    pub root_bus: RootBusRequest,
    /// Seconds to wait for the init banner [default: 120 under TCG, 30 under KVM; scaled by
    /// $BUSYROOT_TIMEOUT_SCALE].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Extra kernel command-line arguments, after busyroot's own (repeatable).
    #[arg(long, value_name = "ARGS")]
    pub append: Vec<String>,
    /// Target architecture (x86_64, aarch64, riscv64) [default: config `arch`, else the host's].
    #[arg(long)]
    pub arch: Option<String>,
    /// Guest memory: MiB, or with a suffix (512M, 1G) [default: 256].
    #[arg(long, value_name = "SIZE", value_parser = vm::parse_mem_mib)]
    pub mem: Option<u32>,
    /// Number of virtual CPUs [default: 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus: Option<u32>,
    /// Build the boot-test kernel (`cargo xtask kernel`) first if no kernel is given and
    /// none is built yet.
    #[arg(long)]
    pub build_kernel: bool,
    /// Write the check results as JUnit XML to PATH (with --check).
    #[arg(long, value_name = "PATH", requires = "check")]
    pub junit: Option<PathBuf>,
}

pub fn run(sh: &Shell, args: RunArgs) -> anyhow::Result<i32> {
    let ws = rootfs::workspace()?;
    let mut config = ws.config.run.clone();
    // Paths in the configuration are relative to the workspace root.
    config.kernel = config.kernel.map(|k| ws.path(&k));
    config.checks_file = config.checks_file.map(|f| ws.path(&f));
    let arch: Arch = match &args.arch {
        Some(name) => name.parse().map_err(anyhow::Error::msg)?,
        None => ws
            .config
            .arch
            .or_else(Arch::host)
            .context("the host architecture is not supported; pass --arch")?,
    };
    let outputs =
        rootfs::build(sh, &RootfsArgs { arch: Some(arch.name().to_string()), offline: false })?;

    let built = busyroot::kernel::kernel_image_path(&ws, arch);
    let nothing_given = args.kernel.is_none()
        && std::env::var_os("BUSYROOT_KERNEL").is_none()
        && config.kernel.is_none();
    if args.build_kernel && nothing_given {
        let kernel_args =
            crate::kernel::KernelArgs { arch: Some(arch.to_string()), ..Default::default() };
        crate::kernel::build(sh, &kernel_args)?;
    }
    let env_kernel = std::env::var_os("BUSYROOT_KERNEL");
    let kernel = vm::select_kernel(
        args.kernel.as_deref(),
        env_kernel.as_deref(),
        config.kernel.as_deref(),
        &built,
    )?;
    println!("kernel: {} ({})", kernel.path.display(), kernel.source);

    let accel = vm::choose_accel(args.accel, arch)?;
    println!("accel:  {} ({})", accel.value, accel.reason);
    if args.vmm.needs_kvm() && accel.value != vm::Accel::Kvm {
        anyhow::bail!(
            "{} runs guests only with KVM, which cannot be used here; use --vmm qemu",
            args.vmm
        );
    }

    let root = if args.initramfs {
        println!("root:   initramfs {}", outputs.cpio.display());
        Root::Initramfs(outputs.cpio.clone())
    } else {
        let bus = vm::choose_root_bus(args.root_bus, &kernel.path, args.vmm)?;
        // The guest writes to its disk; boot a copy so the build output stays exactly what
        // the build produced.
        let image = outputs.dir.join("boot.ext4");
        std::fs::copy(&outputs.ext4, &image).with_context(|| {
            format!("failed to copy `{}` to `{}`", outputs.ext4.display(), image.display())
        })?;
        println!(
            "root:   {} as {} on {} ({})",
            image.display(),
            bus.value.device(),
            bus.value,
            bus.reason
        );
        Root::Disk { image, bus: bus.value }
    };

    let configured_program = match args.vmm {
        Vmm::Qemu => config.qemu.as_deref(),
        Vmm::Kvmtool => config.lkvm.as_deref(),
    };
    let spec = VmSpec {
        arch,
        vmm: args.vmm,
        program: args.vmm.program(arch, configured_program),
        accel: accel.value,
        kernel: kernel.path,
        root,
        append: args.append,
        mem_mib: args.mem.unwrap_or(config.mem),
        cpus: args.cpus.unwrap_or(config.cpus),
        console_log: outputs.dir.join("console.log"),
    };

    if !args.check {
        return Ok(vm::boot_interactive(&spec)?);
    }

    let timeouts = Timeouts::from_env(spec.accel, args.timeout.or(config.timeout))?;
    let mut plan = CheckPlan::standard(&spec, &config.hostname, timeouts);
    plan.add_extra(&config.checks)?;
    if let Some(file) = &config.checks_file {
        plan.add_extra(&vm::load_checks_file(file)?)?;
    }
    println!(
        "timeouts: boot {:.0} s, each check {:.0} s, shutdown {:.0} s",
        timeouts.boot.as_secs_f64(),
        timeouts.command.as_secs_f64(),
        timeouts.shutdown.as_secs_f64()
    );
    let report = vm::boot_check(sh, &spec, &plan)?;
    if let Some(path) = &args.junit {
        busyroot::image::write_atomically(path, |tmp| {
            std::fs::write(tmp, report.to_junit()).map_err(|e| busyroot::Error::io("write", tmp, e))
        })?;
        println!("junit report: {}", path.display());
    }
    Ok(report.exit_code())
}
