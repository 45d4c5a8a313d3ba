//! The boot matrix with real VMs: x86_64 cells (disk, initramfs, a failing payload) run two at
//! a time, each in its own directory, every cell reported; and Ctrl-C (SIGINT to a child
//! process running a matrix) stops every VM at once.
//!
//! They boot the x86_64 kernel `cargo xtask kernel` builds.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use busyroot::arch::Arch;
use busyroot::config::{MatrixCell, Medium, Workspace};
use busyroot::matrix::{self, CellOutcome, MatrixEvent, MatrixObserver};
use busyroot::vm::{self, Event, Outcome};

use super::support;

/// The workspace with `cells` as its `[[matrix]]`, if the kernel, QEMU and the rootfs are
/// there; else `None` after saying why.
fn setup(test: &str, mut cells: Vec<MatrixCell>) -> Option<Workspace> {
    let (kernel, _) = support::built_kernel_and_rootfs(test)?;
    // The kernel built or fetched; a cell without one would take only the built one.
    for cell in cells.iter_mut().filter(|c| c.kernel.is_none()) {
        cell.kernel = Some(kernel.clone());
    }
    let mut ws = support::workspace();
    ws.config.matrix = cells;
    Some(ws)
}

fn cell(name: &str, root: Medium, command: Option<&[&str]>) -> MatrixCell {
    MatrixCell {
        name: Some(name.to_string()),
        arch: Some(Arch::X86_64),
        kernel: None,
        root,
        command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
        vmm: None,
    }
}

/// Counts the cells' events, from the threads that run them.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<String>>);

impl MatrixObserver for Seen {
    fn event(&self, event: MatrixEvent<'_>) {
        let line = match event {
            MatrixEvent::Started(c) => format!("{} started", c.name),
            MatrixEvent::Vm(c, Event::Booted(_)) => format!("{} booted", c.name),
            MatrixEvent::Finished(r) => format!("{} {}", r.cell.name, r.verdict()),
            MatrixEvent::Vm(..) => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

#[test]
fn matrix_runs_disk_and_initramfs_cells_in_parallel_and_reports_each() {
    let test = "matrix_runs_disk_and_initramfs_cells_in_parallel_and_reports_each";
    let exit3: &[&str] = &["/bin/sh", "-c", "echo from the payload; exit 3"];
    let cells = vec![
        cell("it-x86_64-disk", Medium::Disk, None),
        cell("it-x86_64-initramfs", Medium::Initramfs, None),
        cell("it-x86_64-exit3", Medium::Initramfs, Some(exit3)),
    ];
    let Some(ws) = setup(test, cells) else { return };
    let cells = matrix::cells(&ws).unwrap();
    let sh = xshell::Shell::new().unwrap();
    let seen = Seen::default();
    let report = matrix::run_matrix(&sh, &cells, 2, &seen);

    let verdicts: Vec<(&str, &str)> =
        report.cells.iter().map(|c| (c.cell.name.as_str(), c.verdict())).collect();
    assert_eq!(
        verdicts,
        [
            ("it-x86_64-disk", "passed"),
            ("it-x86_64-initramfs", "passed"),
            ("it-x86_64-exit3", "command-failed")
        ],
        "{:#?}",
        report.cells.iter().map(|c| c.detail()).collect::<Vec<_>>()
    );
    assert_eq!((report.jobs, report.exit_code(), report.interrupted), (2, 1, false));
    let names: Vec<&str> = report.failed().iter().map(|c| c.cell.name.as_str()).collect();
    assert_eq!(names, ["it-x86_64-exit3"]);

    let mut logs = Vec::new();
    for result in &report.cells {
        let CellOutcome::Ran(run) = &result.outcome else { panic!("{}", result.detail()) };
        support::assert_no_process(run.vmm_pid);
        // Each cell booted its own medium, with its own console log in its own directory.
        assert!(
            run.console_log.starts_with(&result.cell.work_dir),
            "{}",
            run.console_log.display()
        );
        // A check boots the image's own init, which prints the banner; a command runs under
        // busyroot's payload init, which starts the payload without one.
        let console = std::fs::read_to_string(&run.console_log).unwrap();
        let booted_init =
            if result.cell.command.is_some() { "Run /busyroot/init" } else { vm::BANNER };
        assert!(console.contains(booted_init), "{}:\n{console}", result.cell.name);
        let booted = match result.cell.root {
            Medium::Disk => {
                run.root.starts_with(&format!("{}/boot.ext4 on ", result.cell.work_dir.display()))
            }
            // A command's cell boots a copy with busyroot's payload init laid over it.
            Medium::Initramfs => {
                let copy = format!("{}/boot.cpio", result.cell.work_dir.display());
                run.root.starts_with("initramfs ")
                    && (run.root.ends_with("rootfs.cpio.gz") || run.root.ends_with(&copy))
            }
        };
        assert!(booted, "{}: {}", result.cell.name, run.root);
        assert!(result.boot_time().is_some());
        logs.push(run.console_log.clone());
    }
    logs.dedup();
    assert_eq!(logs.len(), 3, "the cells shared a console log: {logs:?}");

    // The check cells ran the standard checks, the payload cell its command and no checks.
    let run = |i: usize| report.cells[i].report().unwrap();
    assert!(run(0).checks.iter().any(|c| c.name == "/ is ext4" && c.passed));
    assert!(run(1).checks.iter().any(|c| c.name == "/ is rootfs or tmpfs" && c.passed));
    assert!(run(2).checks.is_empty());
    let command = run(2).command.as_ref().unwrap();
    assert_eq!((command.status, command.stdout.as_str()), (Some(3), "from the payload\n"));
    assert_eq!(run(2).outcome, Outcome::Passed);

    // Every cell started, booted and finished, seen from the cells' threads.
    let seen = seen.0.lock().unwrap().clone();
    for c in &cells {
        for what in ["started", "booted"] {
            assert!(seen.contains(&format!("{} {what}", c.name)), "{seen:?}");
        }
    }
    assert!(seen.contains(&"it-x86_64-exit3 command-failed".to_string()), "{seen:?}");

    // One JUnit suite per cell, named after it; the JSON names the failed cell.
    let xml = report.to_junit();
    assert_eq!(xml.matches("<testsuite ").count(), 3, "{xml}");
    for c in &cells {
        assert!(xml.contains(&format!("<testsuite name=\"{}\"", c.name)), "{xml}");
    }
    assert!(xml.contains("<failure message=\"exit status 3\""), "{xml}");
    let json = report.to_json();
    assert_eq!(json["failed"], serde_json::json!(["it-x86_64-exit3"]));
    assert_eq!(json["cells"][1]["root"], "initramfs");
    assert_eq!(json["cells"][0]["report"]["verdict"], "passed");
}

/// Set in the child process of the Ctrl-C test: where the child writes its report.
const CHILD_ENV: &str = "BUSYROOT_TEST_MATRIX_CHILD";

/// The Ctrl-C test's child: the test binary run again with only that test and [`CHILD_ENV`]
/// set, so that its SIGINT reaches a process running nothing but the matrix.
fn ctrl_c_child(out: PathBuf) {
    let sleep: &[&str] = &["/bin/sleep", "600"];
    let cells = vec![
        cell("it-sigint-disk", Medium::Disk, Some(sleep)),
        cell("it-sigint-initramfs", Medium::Initramfs, Some(sleep)),
        cell("it-sigint-third", Medium::Initramfs, None),
    ];
    let ws = setup("ctrl_c_stops_every_vm_of_a_running_matrix", cells)
        .expect("the parent checked the set-up");
    let cells = matrix::cells(&ws).unwrap();
    let sh = xshell::Shell::new().unwrap();
    struct Tell;
    impl MatrixObserver for Tell {
        fn event(&self, event: MatrixEvent<'_>) {
            if let MatrixEvent::Vm(cell, Event::CommandStarted(_)) = event {
                eprintln!("{}: command started", cell.name);
            }
        }
    }
    let report = matrix::run_matrix(&sh, &cells, 2, &Tell);
    for result in &report.cells {
        support::assert_no_process(result.report().and_then(|r| r.vmm_pid));
    }
    std::fs::write(&out, report.to_json().to_string()).unwrap();
}

#[test]
fn ctrl_c_stops_every_vm_of_a_running_matrix() {
    let test = "ctrl_c_stops_every_vm_of_a_running_matrix";
    if let Some(out) = std::env::var_os(CHILD_ENV) {
        return ctrl_c_child(out.into());
    }
    if setup(test, Vec::new()).is_none() {
        return;
    }
    let dir = support::tempdir();
    let out = dir.path().join("report.json");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([&format!("matrix::{test}"), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Wait until both payloads have been typed (two VMs up at once), then press Ctrl-C.
    let scale: f64 =
        std::env::var("BUSYROOT_TIMEOUT_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let deadline = Instant::now() + Duration::from_secs_f64(600.0 * scale);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let mut started = 0;
    while started < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                started += usize::from(line.ends_with(": command started"));
                log.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the two payloads did not start; the child said:\n{}", log.join("\n"));
            }
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let stopped_by = Instant::now() + Duration::from_secs_f64(60.0 * scale);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > stopped_by {
            let _ = child.kill();
            panic!("the matrix did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    log.extend(lines.try_iter());
    assert!(status.success(), "the child failed ({status}):\n{}", log.join("\n"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["interrupted"], true, "{json:#}");
    assert_eq!(json["exit_code"], 130);
    let verdicts: Vec<&str> =
        json["cells"].as_array().unwrap().iter().map(|c| c["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["interrupted", "interrupted", "not-run"], "{json:#}");
}
