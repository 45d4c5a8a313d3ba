//! busyroot's integration tests, one module per area, in one test binary.

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
