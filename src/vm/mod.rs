//! Booting a built image in a virtual machine: interactively, as a scripted smoke check, or
//! to run the user's own command and return its exit status.
//!
//! [`Vm`] is the short way: kernel, image, shares, modules and overlays in, a [`RunReport`]
//! or an [`Output`] out, with the accelerator, root bus and share transport chosen and the
//! reasons reported. Underneath, a [`VmSpec`] says what to boot and how, a [`RunPlan`] what to
//! do in the guest, and [`run`] does it, reporting [`Event`]s to an [`Observer`]; the library
//! prints nothing.
//!
//! Layout: `spec.rs` (what to boot, and the VMM interface; `qemu.rs`,
//! `kvmtool.rs`, `firecracker.rs`, `cloud_hypervisor.rs`, and `custom.rs` for one from
//! configuration), `session.rs` (one run), `guest.rs` (the protocol over the console),
//! `console.rs` and `process.rs` (the VMM's streams and process), `channel/` (the payload's
//! streams and status: the serial relay or virtio-serial ports), `check.rs` (checks),
//! `report.rs` (results, exit codes, JUnit, JSON), `share.rs`, `modules.rs`, `tap.rs`, and the
//! choices: `accel.rs`, `kconfig.rs`, `kernel.rs`.

mod accel;
mod api;
mod attach;
mod channel;
mod check;
mod cloud_hypervisor;
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
mod vmm;

// The runner's public surface (the crate docs list it).
pub use crate::config::{
    load_checks_file, BusName, ConsoleKind, ExtraCheck, KernelFormatName, RunConfig, VmmConfig,
};
pub use accel::{Accel, AccelRequest};
pub use api::{Output, Vm};
pub use attach::AttachedConsole;
pub use channel::{Channel, Input};
pub use check::{Check, RunPlan, Timeouts};
pub use custom::{vmm_named, ConfiguredVmm};
pub use event::{CheckResult, Choice, Collect, Decision, Event, Observer, OutputStream, Quiet};
pub use kconfig::KernelConfig;
pub use process::EXIT_INTERRUPTED;
pub use report::{
    BootFailure, BootFailureKind, CommandResult, Outcome, RunReport, EXIT_COMMAND_TIMEOUT,
    EXIT_NOT_RUN,
};
pub use session::{boot_interactive, run, BANNER};
pub use share::{Share, ShareRequest, Transport};
pub use spec::{
    Backend, ConsoleMode, ConsoleStreams, Launch, Root, RootBus, RootBusRequest, VmSpec, Vmm,
};
pub use tap::{TapCase, TapOutcome, TapReport};

// The choices `Vm` makes, for busyroot's own xtask and tests: not part of the API.
#[doc(hidden)]
pub use crate::host::exec::shell_quote;
#[doc(hidden)]
pub use accel::choose_accel;
#[doc(hidden)]
pub use kernel::{select_kernel, KernelChoice};
#[doc(hidden)]
pub use modules::{beside_kernel, ModuleTree};
#[doc(hidden)]
pub use share::find_virtiofsd;
#[doc(hidden)]
pub use spec::parse_mem_mib;
#[doc(hidden)]
pub use vmm::choose_root_bus;

pub(crate) use crate::host::exec::qemu_escape;
pub(crate) use process::{interrupted, InterruptGuard};
pub(crate) use report::{case as junit_case, secs as json_secs, xml as xml_escape};
