//! What `cargo xtask` runs: builds the xtask quietly, saying what it compiles only when it
//! compiles something (the first run takes minutes and must not look hung), then replaces
//! itself with the xtask, so exit codes and Ctrl-C pass straight through.
//!
//! It has no dependencies, so Cargo compiles it in about a second before anything is shown.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether the "compiling" line was printed; by a timer if Cargo is still busy after
/// [`QUIET_FOR`], else by the first crate compiled.
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// How long an up-to-date check may take before the user is told what is going on.
const QUIET_FOR: Duration = Duration::from_millis(1500);

fn announce() {
    if !ANNOUNCED.swap(true, Ordering::SeqCst) {
        eprintln!(
            "busyroot: compiling the xtask (the first time takes a few minutes; later runs \
             start at once)"
        );
    }
}

fn main() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    // Quiet: Cargo prints nothing of its own (not even `Finished`); its JSON messages say
    // what it compiles, and its diagnostics are rendered as usual.
    let child = Command::new(&cargo)
        .args(["build", "--quiet", "--package", "xtask", "--bin", "xtask"])
        .args(["--message-format", "json-render-diagnostics", "--manifest-path", manifest])
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => fail(&format!("cannot run `{}`: {err}", cargo.to_string_lossy())),
    };
    let started = Instant::now();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let timer_done = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(QUIET_FOR);
        if !timer_done.load(Ordering::SeqCst) {
            announce();
        }
    });
    let mut compiled = 0;
    let mut executable = None;
    let stderr = std::io::stderr();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        if !line.contains(r#""reason":"compiler-artifact""#) {
            continue;
        }
        if line.contains(r#""fresh":false"#) {
            announce();
            compiled += 1;
            let name = string_after(&line, r#""target":{"#, "name").unwrap_or_default();
            let _ = writeln!(stderr.lock(), "    Compiled {name} ({compiled} so far)");
        }
        if string_after(&line, r#""target":{"#, "name").as_deref() == Some("xtask") {
            executable = string_after(&line, "", "executable");
        }
    }
    let status = child.wait().unwrap_or_else(|e| fail(&format!("cargo build: {e}")));
    done.store(true, Ordering::SeqCst);
    if !status.success() {
        fail("building the xtask failed (Cargo's messages above say why)");
    }
    if compiled > 0 {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("busyroot: the xtask is ready ({compiled} compiled in {secs:.0} s)");
    }
    let Some(executable) = executable else {
        fail("cargo build did not name the xtask's executable");
    };
    let err = Command::new(&executable).args(std::env::args_os().skip(1)).exec();
    fail(&format!("cannot run `{executable}`: {err}"));
}

/// The JSON string value of `"key"` in `line`, looked for after `anchor`; enough JSON for
/// Cargo's messages (one object per line, keys unique within `target`).
fn string_after(line: &str, anchor: &str, key: &str) -> Option<String> {
    let from = line.find(anchor)? + anchor.len();
    let pattern = format!("\"{key}\":\"");
    let start = from + line[from..].find(&pattern)? + pattern.len();
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

fn fail(message: &str) -> ! {
    eprintln!("busyroot: {message}");
    std::process::exit(125)
}

#[cfg(test)]
mod tests {
    use super::string_after;

    #[test]
    fn reads_cargos_artifact_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"xtask","src_path":"/w/xtask/src/main.rs"},"executable":"/w/target/debug/xtask","fresh":true}"#;
        assert_eq!(string_after(line, r#""target":{"#, "name").as_deref(), Some("xtask"));
        assert_eq!(string_after(line, "", "executable").as_deref(), Some("/w/target/debug/xtask"));
        assert_eq!(string_after(r#"{"a":"q\"x"}"#, "", "a").as_deref(), Some("q\"x"));
        assert_eq!(string_after(line, "", "missing"), None);
    }
}
