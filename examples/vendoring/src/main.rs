//! The minivmm command: says which guest images it was built with.

fn main() {
    println!("minivmm guest ({}):", minivmm::GUEST_ARCH);
    println!("  root disk  {}", minivmm::ROOTFS_EXT4);
    println!("  initramfs  {}", minivmm::ROOTFS_INITRAMFS);
}
