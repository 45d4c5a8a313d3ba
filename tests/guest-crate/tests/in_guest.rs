//! Runs in the guest: its kernel was started with busyroot's payload init (or, over the serial
//! relay, the image's own), as root, in the package's directory shared from the host.

#[test]
fn runs_in_the_guest_as_root() {
    let cmdline = guest_crate::kernel_cmdline();
    assert!(cmdline.contains("init=/"), "not a busyroot guest: {cmdline}");
    assert!(cmdline.contains("panic=-1"), "not a busyroot guest: {cmdline}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:\t0\t")), "{status}");
}

#[test]
fn finds_its_files_and_environment() {
    // The package directory is shared and is the working directory; Cargo's variables pass.
    assert!(std::path::Path::new("Cargo.toml").is_file());
    assert_eq!(std::env::var("CARGO_PKG_NAME").as_deref(), Ok("guest-crate"));
}

#[cfg(feature = "fail")]
#[test]
fn fails_on_purpose() {
    panic!("this test fails on purpose");
}
