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
//! `kvmtool.rs`), `session.rs` (one run), `guest.rs` (the protocol over the console),
//! `console.rs` and `process.rs` (the VMM's streams and process), `channel/` (the payload's
//! streams and status: the serial relay or virtio-serial ports), `check.rs` (checks),
//! `report.rs` (results, exit codes, JUnit, JSON), `share.rs`, `modules.rs`, `tap.rs`, and the
//! choices: `accel.rs`, `kconfig.rs`, `kernel.rs`.

mod accel;
mod api;
mod backend;
mod channel;
mod check;
mod console;
mod event;
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
mod vmm;

pub use crate::config::{load_checks_file, ExtraCheck, RunConfig, DEFAULT_CPUS, DEFAULT_MEM_MIB};
pub use accel::{choose_accel, choose_accel_with, Accel, AccelRequest, HostFacts, KvmDevice};
pub use api::{Output, Vm};
pub use backend::{ConsoleMode, Launch};
pub use channel::{choose_channel, Channel, Input};
pub use check::{Check, CheckPlan, RunPlan, Timeouts};
pub use event::{CheckResult, Choice, Collect, Event, Observer, OutputStream, Quiet};
pub use kconfig::KernelConfig;
pub use kernel::{select_kernel, KernelChoice, KernelSource};
pub use report::{
    BootFailure, BootFailureKind, CheckReport, CommandResult, Outcome, RunReport,
    EXIT_COMMAND_TIMEOUT, EXIT_NOT_RUN,
};
pub use session::{boot_interactive, run, BANNER};
pub use share::{
    choose_transport, find_virtiofsd, search_virtiofsd, Share, ShareRequest, Transport,
    VirtiofsdSearch,
};
pub use spec::{parse_mem_mib, Root, RootBus, RootBusRequest, VmSpec, Vmm};
pub use tap::{parse_tap, TapCase, TapOutcome, TapReport};
pub use vmm::{choose_root_bus, choose_root_bus_with};

pub(crate) use crate::host::exec::qemu_escape;
pub use crate::host::exec::shell_quote;
pub use modules::{
    beside_kernel, kernel_release, kernel_release_of, modules_for, read_modinfo, GuestFile, Module,
    ModuleTree, MODULE_SYMBOLS,
};
pub use process::EXIT_INTERRUPTED;
pub(crate) use process::{interrupted, InterruptGuard};
pub(crate) use report::{case as junit_case, xml as xml_escape};

/// Boots `spec`, runs `plan`'s checks and powers off, reporting nothing: [`run`] without an
/// observer, kept for callers of check mode.
pub fn boot_check(
    sh: &xshell::Shell,
    spec: &VmSpec,
    plan: &CheckPlan,
) -> crate::Result<CheckReport> {
    run(sh, spec, plan, &Quiet)
}
