//! What the tests share with the library's own unit tests: saying why a test is skipped.
//! Not part of the API.

/// Prints why a test does not run; tests call this and return. In CI (`CI` set), which
/// provides every tool, kernel and tarball, a skip is a failure instead, so a broken CI set-up
/// cannot pass by running nothing.
///
/// The line must reach whoever runs `cargo test`, although the test then passes and libtest
/// hides a passing test's output: it captures what the print macros write, so the line is
/// written straight to a duplicate of file descriptor 2, past the capture.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test} would be skipped in CI: {reason}");
    }
    let line = format!("skipping {test}: {reason}\n");
    let fd = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned();
    match fd {
        Ok(fd) => {
            let _ = std::io::Write::write_all(&mut std::fs::File::from(fd), line.as_bytes());
        }
        Err(_) => eprint!("{line}"),
    }
}
