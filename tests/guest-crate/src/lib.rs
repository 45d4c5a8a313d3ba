//! Tests that can pass only inside the busyroot guest, run there by `cargo test` with busyroot
//! as Cargo's runner.

/// The kernel command line of the machine this runs on.
pub fn kernel_cmdline() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}
