//! A stand-in for a project that boots busyroot's image in its tests.

/// The ext4 image the build script made.
pub const ROOTFS_EXT4: &str = env!("BUSYROOT_EXT4");
/// The initramfs the build script made.
pub const ROOTFS_CPIO: &str = env!("BUSYROOT_CPIO");
/// The architecture of both.
pub const GUEST_ARCH: &str = env!("BUSYROOT_ARCH");
/// One summary line per input (`skeleton: built-in (…)`), separated by `;`.
pub const INPUTS: &str = env!("DEPENDENT_INPUTS");
