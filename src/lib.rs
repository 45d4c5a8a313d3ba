//! busyroot: build a rootless, reproducible BusyBox root filesystem and boot-test it.
//!
//! The pipeline is fetch → extract → configure → build → install → manifest → images; see
//! `ARCHITECTURE.md` for where each step lives and which invariants hold.

pub mod arch;
pub mod build;
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
