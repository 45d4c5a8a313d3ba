//! The build pipelines: the rootfs (BusyBox fetched, configured, built and installed, then
//! composed into images) and the kernel, both made of stages that one engine skips when fresh.

#[doc(hidden)]
pub mod busybox;
pub mod distro;
pub mod kernel;
pub mod rootfs;
#[doc(hidden)]
pub mod stage;
