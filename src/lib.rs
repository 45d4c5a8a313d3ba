//! busyroot: build a rootless, reproducible BusyBox root filesystem and boot-test it.
//!
//! The pipeline is fetch → extract → configure → build → install → manifest → images; see
//! `ARCHITECTURE.md` for where each step lives and which invariants hold. `cargo xtask` is a
//! command line over this library, and a project that vendors busyroot uses the same API:
//!
//! - [`build::RootfsBuilder`]: configuration in ([`config::Workspace`], read from
//!   `[workspace.metadata.busyroot]`), [`build::Outputs`] out: the paths of `rootfs.ext4`,
//!   `rootfs.cpio.gz` and `rootfs.tar` with their sizes and sha256s. Stages whose inputs did
//!   not change are skipped.
//! - [`image`]: the writers, each turning a [`manifest::Manifest`] into one file
//!   ([`image::ext4::write`], [`image::cpio::write`], [`image::tar::write`]), usable without
//!   BusyBox for any tree ([`skeleton::add_tree`], [`devtable::DeviceTable`]).
//! - [`vm`]: the VM runner. [`vm::boot_interactive`] gives the guest the terminal;
//!   [`vm::boot_check`] boots to the banner, runs a [`vm::CheckPlan`] over the serial console,
//!   powers off and checks the disk, and returns a [`vm::CheckReport`].
//! - [`buildscript::BuildScript`]: all of the above from a `build.rs`, honouring `OUT_DIR`,
//!   telling Cargo what to watch and exporting the image paths to `env!`.
//!
//! Progress is reported through the [`progress::Progress`] trait; external programs run
//! through an [`xshell::Shell`] the caller passes in (re-exported as [`busyroot::xshell`](xshell)).
//!
//! # Example
//!
//! Build the images of the workspace in the current directory and boot the ext4 image under
//! QEMU in check mode:
//!
//! ```no_run
//! use std::path::Path;
//!
//! use busyroot::build::RootfsBuilder;
//! use busyroot::config::Workspace;
//! use busyroot::progress::Silent;
//! use busyroot::vm::{self, CheckPlan, Outcome, Root, RootBusRequest, Timeouts, VmSpec, Vmm};
//!
//! fn main() -> busyroot::Result<()> {
//!     let sh = busyroot::xshell::Shell::new().expect("the current directory is readable");
//!
//!     // [workspace.metadata.busyroot] of the workspace holding this directory.
//!     let workspace = Workspace::load(Path::new("."))?;
//!     let hostname = workspace.config.run.hostname.clone();
//!     let builder = RootfsBuilder::new(workspace)?;
//!     let outputs = builder.build(&sh, &Silent)?;
//!     for file in &outputs.files {
//!         println!("{}  {}", file.sha256, file.path.display());
//!     }
//!
//!     // The guest writes to its disk: boot a copy, so the output stays as built.
//!     let disk = outputs.dir.join("boot.ext4");
//!     std::fs::copy(&outputs.ext4, &disk).map_err(|e| busyroot::Error::io("copy", &disk, e))?;
//!     let kernel = Path::new("/boot/vmlinuz");
//!     let bus = vm::choose_root_bus(RootBusRequest::Auto, kernel, Vmm::Qemu)?.value;
//!     let root = Root::Disk { image: disk, bus };
//!     let log = outputs.dir.join("console.log");
//!     let spec = VmSpec::new(builder.target_arch(), kernel.to_path_buf(), root, log);
//!
//!     let timeouts = Timeouts::from_env(spec.accel, None)?;
//!     let plan = CheckPlan::standard(&spec, &hostname, timeouts);
//!     let report = vm::boot_check(&sh, &spec, &plan)?;
//!     assert_eq!(report.outcome, Outcome::Passed, "console log: {}", report.console_log.display());
//!     Ok(())
//! }
//! ```

#![deny(missing_docs)]

pub mod arch;
pub mod build;
pub mod buildscript;
pub mod busybox;
pub mod config;
pub mod devtable;
pub mod error;
pub mod extract;
pub mod fetch;
pub mod fingerprint;
pub mod hosttools;
pub mod image;
pub mod kernel;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod skeleton;
pub mod vm;

pub use error::{Error, Result};

/// The shell library the API runs external programs with; callers pass a [`xshell::Shell`].
pub use xshell;
