//! What the tests share with the library's own unit tests: saying why a test is skipped, and
//! which tests are slow. Not part of the API.

/// The switch that runs the slow tests (`cargo xtask test --slow` sets it; CI does).
pub const SLOW_TESTS_VAR: &str = "BUSYROOT_SLOW_TESTS";

/// Where `cargo xtask test` collects the skips of every test binary for its summary.
pub const SKIP_LOG_VAR: &str = "BUSYROOT_SKIP_LOG";

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
    if let Some(log) = std::env::var_os(SKIP_LOG_VAR) {
        // One write of one line to a file opened for appending: lines from tests running at
        // once never interleave.
        let file = std::fs::OpenOptions::new().append(true).create(true).open(log);
        if let Ok(mut file) = file {
            let _ = std::io::Write::write_all(&mut file, line.as_bytes());
        }
    }
    let fd = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned();
    match fd {
        Ok(fd) => {
            let _ = std::io::Write::write_all(&mut std::fs::File::from(fd), line.as_bytes());
        }
        Err(_) => {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
    }
}

/// The one list of slow tests is the set of tests that call this first: each runs only with
/// `BUSYROOT_SLOW_TESTS=1` (`cargo xtask test --slow`, and CI), and otherwise is skipped with
/// that reason. Returns true when the test must return at once.
pub fn slow(test: &str) -> bool {
    if std::env::var_os(SLOW_TESTS_VAR).is_some_and(|v| v == "1") {
        return false;
    }
    skip(test, "a slow test; `cargo xtask test --slow` runs it (CI does)");
    true
}
