//! busyroot: build a rootless, reproducible BusyBox root filesystem and boot-test it.
//!
//! The pipeline is fetch → extract → configure → build → install → manifest → images; see
//! `ARCHITECTURE.md` for where each step lives and which invariants hold. `cargo xtask` is a
//! command line over this library, and a project that vendors busyroot uses the same API.
//!
//! # The API
//!
//! What a dependent may use, and all it may rely on; everything else is `pub(crate)` or
//! `#[doc(hidden)]` (`host`, `lava`, `pipeline::busybox`, `pipeline::stage`, `testing` and the
//! runner's choice functions: busyroot's own xtask's and tests' plumbing, changed at will).
//!
//! - Building: one [`context::Context`] per command (workspace, architecture, download
//!   settings, file times, compiler) handed to [`pipeline::rootfs::RootfsBuilder`] (configuration in, [`pipeline::rootfs::Outputs`]
//!   out: each [`image::Format`]'s file with its size and sha256; fresh stages skipped),
//!   [`pipeline::kernel::KernelBuilder`] and [`pipeline::distro`] (a kernel built from
//!   source or a distribution's), [`FetchOptions`] (mirror, offline).
//! - Configuration a dependent may read or construct: [`config::Workspace`] and
//!   [`config::Config`] (`[workspace.metadata.busyroot]`, with [`vm::RunConfig`],
//!   [`config::MatrixCell`]), [`inputs`] (which files a build uses), [`context::Layout`] (where
//!   outputs go), [`arch::Arch`].
//! - Images without BusyBox: [`image`]'s writers turn a [`tree::manifest::Manifest`] into a
//!   file; [`tree`] fills one from trees, tar archives and device tables.
//! - Booting: [`vm::Vm`] (kernel, image, shares, modules, overlays; [`vm::Vm::check`] gives a
//!   [`vm::RunReport`], [`vm::Vm::run`] an [`vm::Output`]); below it [`vm::run`] with a
//!   [`vm::VmSpec`] and a [`vm::RunPlan`], reporting [`vm::Event`]s to a [`vm::Observer`]; a
//!   VMM is a [`vm::Vmm`], started as its backend's [`vm::Launch`] says.
//! - Your own VMM: the [`vm::Backend`] trait (facts, `prepare`, `started`, `console`) given to
//!   [`vm::Vm::backend`], a VMM configured under `run.vmm.<name>` ([`vm::VmmConfig`],
//!   [`vm::vmm_named`]), or a console busyroot did not open ([`vm::AttachedConsole`]).
//! - Many boots at once: [`matrix`] (cells, shards, bounded parallelism).
//! - A build script: [`buildscript::BuildScript`] (`OUT_DIR`, `rerun-if-*`, `env!` paths).
//! - Reporting and errors: [`progress::Progress`], [`Error`] and [`Result`].
//!
//! # Example
//!
//! Build the images of the workspace in the current directory, boot the ext4 image under
//! QEMU in check mode, then run a command in the initramfs and get its exit status:
//!
//! ```no_run
//! use std::path::Path;
//!
//! use busyroot::context::Context;
//! use busyroot::image::Format;
//! use busyroot::pipeline::rootfs::RootfsBuilder;
//! use busyroot::config::Workspace;
//! use busyroot::progress::Silent;
//! use busyroot::vm::{Outcome, Vm};
//!
//! fn main() -> busyroot::Result<()> {
//!     let sh = busyroot::xshell::Shell::new().expect("the current directory is readable");
//!
//!     // [workspace.metadata.busyroot] of the workspace holding this directory.
//!     // One context per command: workspace, architecture, download settings, file times.
//!     let ctx = Context::new(Workspace::load(Path::new("."))?)?;
//!     let builder = RootfsBuilder::new(ctx.clone());
//!     let outputs = builder.build(&sh, &Silent)?;
//!     for file in &outputs.files {
//!         println!("{}  {}", file.sha256, file.path.display());
//!     }
//!
//!     // The guest writes to a copy of the disk, so the output stays as built.
//!     let kernel = Path::new("/boot/vmlinuz");
//!     let report = Vm::new(ctx.arch(), kernel).disk(outputs.path(Format::Ext4)).check()?;
//!     assert_eq!(report.outcome, Outcome::Passed, "console log: {}", report.console_log.display());
//!
//!     let out = Vm::new(ctx.arch(), kernel)
//!         .initramfs(outputs.path(Format::CpioGz))
//!         .run(["/bin/sh", "-c", "uname -r; exit 3"])?;
//!     assert_eq!(out.status, 3);
//!     Ok(())
//! }
//! ```

#![deny(missing_docs)]
// The library prints nothing (it reports through `Progress` and `vm::Event`); where Cargo's
// build-script protocol needs stdout or stderr, `buildscript` allows it. Its unit tests
// inspect outputs with host tools directly and may say what they saw.
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![cfg_attr(test, allow(clippy::disallowed_methods, clippy::print_stderr))]

/// `Display` as the type's `name()`, for the types that are written as their name.
macro_rules! display_as_name {
    ($type:ty) => {
        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub mod arch;
pub mod buildscript;
pub mod config;
pub mod context;
pub mod error;
#[doc(hidden)]
pub mod host;
pub mod image;
pub mod inputs;
#[doc(hidden)]
pub mod lava;
pub mod matrix;
pub mod pipeline;
pub mod progress;
#[doc(hidden)]
pub mod testing;
pub mod tree;
pub mod vm;

pub use error::{Error, Result};
pub use host::fetch::FetchOptions;

/// The shell library the API runs external programs with; callers pass a [`xshell::Shell`].
pub use xshell;
