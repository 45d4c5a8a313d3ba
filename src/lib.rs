//! busyroot: build a rootless, reproducible BusyBox root filesystem and boot-test it.
//!
//! The pipeline is fetch → extract → configure → build → install → manifest → images; see
//! `ARCHITECTURE.md` for where each step lives and which invariants hold. `cargo xtask` is a
//! command line over this library, and a project that vendors busyroot uses the same API:
//!
//! - [`pipeline::rootfs::RootfsBuilder`]: configuration in ([`config::Workspace`], read from
//!   `[workspace.metadata.busyroot]`), [`pipeline::rootfs::Outputs`] out: the paths of `rootfs.ext4`,
//!   `rootfs.cpio.gz` and `rootfs.tar` with their sizes and sha256s. Stages whose inputs did
//!   not change are skipped.
//! - [`image`]: the writers, each turning a [`tree::manifest::Manifest`] into one file
//!   ([`image::ext4::write`], [`image::cpio::write`], [`image::tar::write`]), usable without
//!   BusyBox for any tree ([`tree::skeleton::add_tree`], [`tree::layers::LayerStack`] for trees and tar
//!   archives in order, [`tree::devtable::DeviceTable`]).
//! - [`inputs`]: which BusyBox config, skeleton, overlays, device tables and kernel fragments
//!   a build uses: the configured ones, or busyroot's built-in ones for unset keys.
//! - [`vm`]: the VM runner. [`vm::Vm`] boots a kernel and an image with shares, modules and
//!   overlays, and runs the standard checks ([`vm::Vm::check`]) or a command whose output and
//!   exit status come back ([`vm::Vm::run`]); [`vm::run`] takes a [`vm::VmSpec`] and a
//!   [`vm::RunPlan`] made by hand, and reports [`vm::Event`]s to a [`vm::Observer`].
//! - [`matrix`]: many boots at once: the cells of `[[matrix]]` ([`matrix::cells`]), split into
//!   CI shards ([`matrix::Shard`]) and run with bounded parallelism ([`matrix::run_matrix`]).
//! - [`buildscript::BuildScript`]: all of the above from a `build.rs`, honouring `OUT_DIR`,
//!   telling Cargo what to watch and exporting the image paths to `env!`.
//!
//! Progress is reported through the [`progress::Progress`] trait; external programs run
//! through an [`xshell::Shell`] the caller passes in (re-exported as [`busyroot::xshell`](xshell)).
//!
//! # Example
//!
//! Build the images of the workspace in the current directory, boot the ext4 image under
//! QEMU in check mode, then run a command in the initramfs and get its exit status:
//!
//! ```no_run
//! use std::path::Path;
//!
//! use busyroot::pipeline::rootfs::RootfsBuilder;
//! use busyroot::config::Workspace;
//! use busyroot::progress::Silent;
//! use busyroot::vm::{Outcome, Vm};
//!
//! fn main() -> busyroot::Result<()> {
//!     let sh = busyroot::xshell::Shell::new().expect("the current directory is readable");
//!
//!     // [workspace.metadata.busyroot] of the workspace holding this directory.
//!     let workspace = Workspace::load(Path::new("."))?;
//!     let builder = RootfsBuilder::new(workspace)?;
//!     let outputs = builder.build(&sh, &Silent)?;
//!     for file in &outputs.files {
//!         println!("{}  {}", file.sha256, file.path.display());
//!     }
//!
//!     // The guest writes to a copy of the disk, so the output stays as built.
//!     let kernel = Path::new("/boot/vmlinuz");
//!     let report = Vm::new(builder.target_arch(), kernel).disk(&outputs.ext4).check()?;
//!     assert_eq!(report.outcome, Outcome::Passed, "console log: {}", report.console_log.display());
//!
//!     let out = Vm::new(builder.target_arch(), kernel)
//!         .initramfs(&outputs.cpio)
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

pub mod arch;
pub mod buildscript;
pub mod config;
pub mod context;
pub mod error;
pub mod host;
pub mod image;
pub mod inputs;
pub mod lava;
pub mod matrix;
pub mod pipeline;
pub mod progress;
#[doc(hidden)]
pub mod testing;
pub mod tree;
pub mod vm;

pub use error::{Error, Result};

/// The shell library the API runs external programs with; callers pass a [`xshell::Shell`].
pub use xshell;
