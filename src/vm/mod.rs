//! Booting a built image in a virtual machine: interactively, as a scripted smoke check, or
//! to run the user's own command and return its exit status.
//!
//! [`Vm`] is the short way: kernel, image, shares, modules and overlays in, a [`RunReport`]
//! or an [`Output`] out, with the accelerator, root bus and share transport chosen and the
//! reasons reported. Underneath, a [`VmSpec`] says what to boot and how, a [`RunPlan`] what to
//! do in the guest, and [`run`] does it, reporting [`Event`]s to an [`Observer`]; the library
//! prints nothing.
//!
//! Layout: `spec.rs` (what to boot), `backend.rs` (the VMM interface; `qemu.rs`,
//! `kvmtool.rs`, `firecracker.rs`, `cloud_hypervisor.rs`, and `custom.rs` for one from
//! configuration), `session.rs` (one run), `guest.rs` (the protocol over the console),
//! `console.rs` and `process.rs` (the VMM's streams and process), `channel/` (the payload's
//! streams and status: the serial relay or virtio-serial ports), `check.rs` (checks),
//! `report.rs` (results, exit codes, JUnit, JSON), `share.rs`, `modules.rs`, `tap.rs`, and the
//! choices: `accel.rs`, `kconfig.rs`, `kernel.rs`.

mod accel;
mod api;
mod attach;
mod backend;
mod channel;
mod check;
mod cloud_hypervisor;
mod config;
mod console;
mod custom;
mod event;
mod firecracker;
mod guest;
mod kconfig;
mod kernel;
mod kvmtool;
mod layer;
mod modules;
mod process;
pub(crate) mod qemu;
mod report;
mod session;
mod share;
mod spec;
mod tap;

pub use accel::{choose_accel, choose_accel_with, Accel, AccelRequest, HostFacts, KvmDevice};
pub use api::{Output, Vm};
pub use attach::AttachedConsole;
pub use backend::{Backend, ConsoleMode, ConsoleStreams, Launch};
pub use channel::{choose_channel, Channel, Input};
pub use check::{Check, CheckResult, Timeouts};
pub use config::{
    load_checks_file, BusName, ConsoleKind, ExtraCheck, KernelFormatName, RunConfig, VmmConfig,
};
pub use custom::{vmm_named, ConfiguredVmm};
pub use event::{Collect, Event, Observer, OutputStream, Quiet};
pub use kconfig::{choose_root_bus, choose_root_bus_with, KernelConfig};
pub use kernel::{select_kernel, KernelChoice, KernelSource};
pub use report::{
    BootFailure, BootFailureKind, CheckReport, CommandResult, Outcome, RunReport,
    EXIT_COMMAND_TIMEOUT, EXIT_NOT_RUN,
};
pub use session::{boot_interactive, run, CheckPlan, RunPlan, BANNER};
pub use share::{
    choose_transport, find_virtiofsd, search_virtiofsd, Share, ShareRequest, Transport,
    VirtiofsdSearch,
};
pub use spec::{
    parse_mem_mib, shell_quote, Choice, Root, RootBus, RootBusRequest, VmSpec, Vmm, DEFAULT_CPUS,
    DEFAULT_MEM_MIB,
};
pub use tap::{parse_tap, TapCase, TapOutcome, TapReport};

pub use modules::{
    beside_kernel, kernel_release, kernel_release_of, modules_for, read_modinfo, GuestFile, Module,
    ModuleTree, MODULE_SYMBOLS,
};
pub(crate) use process::{interrupted, InterruptGuard};
pub(crate) use report::{case as junit_case, xml as xml_escape};
pub(crate) use spec::qemu_escape;

/// The exit code of an interrupted run (Ctrl-C), as a shell reports a death by SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Boots `spec`, runs `plan`'s checks and powers off, reporting nothing: [`run`] without an
/// observer, kept for callers of check mode.
pub fn boot_check(
    sh: &xshell::Shell,
    spec: &VmSpec,
    plan: &CheckPlan,
) -> crate::Result<CheckReport> {
    run(sh, spec, plan, &Quiet)
}
