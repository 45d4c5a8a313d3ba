//! minivmm: a pretend hypervisor whose guest root filesystem busyroot builds at compile time.

/// The guest root disk, an ext4 image (written by `build.rs` into `OUT_DIR`).
pub const ROOTFS_EXT4: &str = env!("BUSYROOT_EXT4");
/// The sha256 the build script recorded for [`ROOTFS_EXT4`].
pub const ROOTFS_EXT4_SHA256: &str = env!("BUSYROOT_EXT4_SHA256");
/// The same tree as a gzip-compressed initramfs.
pub const ROOTFS_INITRAMFS: &str = env!("BUSYROOT_CPIO");
/// The guest architecture the images were built for (`x86_64`, `aarch64`, `riscv64`).
pub const GUEST_ARCH: &str = env!("BUSYROOT_ARCH");
