//! `cargo xtask run`'s exit codes as its `--help` states them, each case through the real
//! binary: with `-- CMD`, every failure of busyroot's own exits 125 with a last stderr line
//! `busyroot: …`; only the command's own status gives other codes; `--json`'s verdict agrees.

use std::path::{Path, PathBuf};
use std::process::Command;

use busyroot::testing::skip;

/// The workspace root, where `cargo xtask` runs.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs the xtask with `args`, never downloading; returns the exit code and stderr.
fn xtask(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .env("BUSYROOT_OFFLINE", "1")
        .env_remove("BUSYROOT_KERNEL")
        .output()
        .expect("run the xtask");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().expect("exited, not killed"), stderr)
}

fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or("")
}

/// Why the rootfs cannot be built here without a download, if it cannot.
fn no_rootfs() -> Option<String> {
    let ws = busyroot::config::Workspace::load(&root()).unwrap();
    let opts = busyroot::host::fetch::FetchOptions::from_env();
    let name = ws.config.busybox.source().file_name;
    (!opts.cache_dir.join(&name).is_file())
        .then(|| format!("`{name}` is not in the cache; run `cargo xtask rootfs` once online"))
}

/// A kernel that boots here: the one `cargo xtask kernel` built or fetched.
fn kernel() -> Result<PathBuf, String> {
    let ws = busyroot::config::Workspace::load(&root()).unwrap();
    let arch = busyroot::arch::Arch::X86_64;
    let layout = busyroot::context::Layout::new(&ws, arch);
    let built = layout.kernel_image();
    let fetched = busyroot::pipeline::distro::installed_kernel(&layout);
    busyroot::vm::select_kernel(arch, None, None, None, &built, fetched.as_deref())
        .map(|k| k.path)
        .map_err(|_| "no kernel; run `cargo xtask kernel --distro debian`".into())
}

#[test]
fn a_usage_error_with_a_command_is_busyroots_own_125() {
    let (code, stderr) = xtask(&["run", "--no-such-flag", "--", "/bin/true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(last_line(&stderr).starts_with("busyroot: usage error"), "{stderr}");
    // Without a command, clap's own usage code stands.
    let (code, stderr) = xtask(&["run", "--no-such-flag"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn refusals_before_the_boot_exit_125_and_the_json_says_error() {
    let test = "refusals_before_the_boot_exit_125_and_the_json_says_error";
    if let Some(reason) = no_rootfs() {
        return skip(test, &reason);
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let json_arg = json.to_str().unwrap();
    // A usage error found after parsing.
    let (code, stderr) =
        xtask(&["run", "--cmd-timeout", "0", "--json", json_arg, "--", "/bin/true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(last_line(&stderr).starts_with("busyroot: the command did not run"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (report["verdict"].as_str(), report["exit_code"].as_i64()),
        (Some("error"), Some(125))
    );

    // A kernel that does not exist, with and without a command.
    let (code, stderr) = xtask(&["run", "--kernel", "/no/such/kernel", "--", "/bin/true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(last_line(&stderr).contains("/no/such/kernel"), "{stderr}");
    let (code, stderr) = xtask(&["run", "--kernel", "/no/such/kernel", "--check"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(last_line(&stderr).starts_with("busyroot: no boot"), "{stderr}");

    // Not a kernel at all: refused, or a failed boot; busyroot's own failure either way.
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0u8; 4096]).unwrap();
    let (code, stderr) = xtask(&["run", "--kernel", junk.to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(last_line(&stderr).starts_with("busyroot: "), "{stderr}");

    // A program the guest does not have.
    let Ok(kernel) = kernel() else { return skip(test, "no kernel for the missing-program case") };
    let kernel = kernel.to_str().unwrap();
    let (code, stderr) = xtask(&["run", "--kernel", kernel, "--", "/no/such/program"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(last_line(&stderr).contains("/no/such/program"), "{stderr}");
}

#[test]
fn only_the_commands_own_status_gives_other_codes() {
    let test = "only_the_commands_own_status_gives_other_codes";
    if let Some(reason) = no_rootfs() {
        return skip(test, &reason);
    }
    let Ok(kernel) = kernel().map_err(|reason| skip(test, &reason)) else { return };
    if busyroot::host::tools::find_program("qemu-system-x86_64").is_none() {
        return skip(test, "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (kernel, json_arg) = (kernel.to_str().unwrap(), json.to_str().unwrap());
    let args = ["run", "--kernel", kernel, "--json", json_arg, "--", "/bin/sh", "-c", "exit 3"];
    let (code, stderr) = xtask(&args);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(last_line(&stderr), "busyroot: the command exited with status 3 (exit 3)");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        (report["verdict"].as_str(), report["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
}
