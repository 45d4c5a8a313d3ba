//! busyroot's integration tests, one module per area, in one test binary.

// The tests start busyroot itself and inspect its outputs with host tools; the rule that
// programs start in `host::exec` (../../clippy.toml) is the library's.
#![allow(clippy::disallowed_methods)]

mod boot;
mod channel;
mod cross;
mod distro;
mod faults;
mod firstrun;
mod incremental;
mod kernel;
mod kvmtool;
mod layers;
mod matrix;
mod payload;
mod rootfs;
mod support;
mod tidy;
mod vmm;
