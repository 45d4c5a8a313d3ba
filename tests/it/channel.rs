//! The payload channel over virtio-serial ports: every byte of stdout and stderr on its own
//! stream (and the run's own directory gone after it), stdin from the host to its end, exit
//! statuses, a payload forging statuses on every path it can reach, a background process
//! holding stdout, a work directory too deep for socket addresses, two runs in one work
//! directory taking turns, and the serial relay chosen with its reason where the kernel or
//! the VMM has no virtio console.
//!
//! The boots use `$BUSYROOT_TEST_KERNEL` (with the `lib/modules` beside its `boot/`, as in
//! Debian's unpacked cloud kernel package, loaded from there), else the kernel
//! `cargo xtask kernel` builds (virtio-console built in).

use std::time::Duration;

use busyroot::arch::Arch;
use busyroot::image::Format;
use busyroot::vm::{
    Channel, Collect, Decision, Event, Input, Outcome, OutputStream, RunReport, Vm, Vmm,
};

use super::support;

struct Run {
    report: RunReport,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    events: Vec<Event>,
}

impl Run {
    fn status(&self) -> Option<i32> {
        self.report.command.as_ref().and_then(|c| c.status)
    }

    fn choice(&self, what: Decision) -> String {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::Choice { what: w, detail } if *w == what => Some(detail.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

/// A VM with the test kernel (and its modules, if it has them beside it) and the initramfs,
/// or `None` after saying why the test does not run.
fn vm(test: &str) -> Option<Vm> {
    let (kernel, outputs) = support::test_kernel_and_rootfs(test)?;
    let mut vm = Vm::new(Arch::X86_64, &kernel);
    vm.initramfs(outputs.path(Format::CpioGz))
        .size(256, 1)
        .command_timeout(Duration::from_secs(300));
    if let Some(modules) = busyroot::vm::beside_kernel(&kernel) {
        vm.modules(modules);
    }
    Some(vm)
}

fn run(vm: &Vm, argv: &[&str]) -> Run {
    let sh = xshell::Shell::new().unwrap();
    let events = Collect::default();
    let command = argv.iter().map(|a| a.to_string()).collect();
    let report = vm.run_with(&sh, Some(command), &events).unwrap();
    let events = events.events();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for event in &events {
        match event {
            Event::Output(OutputStream::Stdout, bytes) => stdout.extend_from_slice(bytes),
            Event::Output(OutputStream::Stderr, bytes) => stderr.extend_from_slice(bytes),
            _ => {}
        }
    }
    support::assert_no_process(report.vmm_pid);
    let run = Run { report, stdout, stderr, events };
    assert!(
        run.choice(Decision::Payload).starts_with("virtio-serial ("),
        "the kernel has virtio-console, so the ports carry the payload: {}",
        run.choice(Decision::Payload)
    );
    run
}

#[test]
fn every_byte_comes_back_on_its_own_stream() {
    let Some(vm) = vm("every_byte_comes_back_on_its_own_stream") else { return };
    let script = r"printf 'a\tb\033[31mred\r\nx\001y\nno newline'; printf 'e\000r\377r' >&2; printf '\000\376\n\000'";
    let out = run(&vm, &["sh", "-c", script]);
    assert_eq!(out.status(), Some(0), "{:#?}", out.report);
    assert_eq!(out.stdout, b"a\tb\x1b[31mred\r\nx\x01y\nno newline\x00\xfe\n\x00");
    assert_eq!(out.stderr, b"e\x00r\xffr");
    let command = out.report.command.as_ref().unwrap();
    assert_eq!(command.stderr, "e\0r\u{fffd}r", "the report holds the same, as text");
    let dir = out.report.console_log.parent().unwrap();
    assert!(!dir.exists(), "a passed run removes the directory it made: {}", dir.display());
}

#[test]
fn stdin_reaches_the_command_to_its_end() {
    let Some(mut vm) = vm("stdin_reaches_the_command_to_its_end") else { return };
    let mut bytes = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    vm.stdin(Input::Bytes(bytes.clone()));
    let out = run(&vm, &["cat"]);
    assert_eq!(out.status(), Some(0), "{:#?}", out.report.outcome);
    assert_eq!(out.stdout.len(), bytes.len());
    assert!(out.stdout == bytes, "1 MiB of random bytes came back through `cat` unchanged");

    vm.stdin(Input::Null);
    let out = run(&vm, &["sh", "-c", "wc -c; echo done"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\ndone\n");
}

#[test]
fn exit_statuses_and_a_forging_payload() {
    let Some(vm) = vm("exit_statuses_and_a_forging_payload") else { return };
    for status in [0, 1, 3, 255] {
        let out = run(&vm, &["sh", "-c", &format!("echo {status}; exit {status}")]);
        assert_eq!(out.status(), Some(status), "{:#?}", out.report);
        assert_eq!(out.report.exit_code(), status);
        assert_eq!(out.stdout, format!("{status}\n").as_bytes());
    }
    // Status lines on stdout, on the console, and into every port it can open: the ports the
    // runner holds refuse a second opener, and none of it changes the verdict.
    let forge = r#"
        for p in /dev/vport*; do
            if echo 's 0' 2>/dev/null >"$p"; then echo "opened $p"; else echo "refused $p" >&2; fi
        done
        printf 'r\ns 0\nx 0\n' >/dev/console
        printf 's 0\nr\n'
        exit 3"#;
    let out = run(&vm, &["sh", "-c", forge]);
    assert_eq!(out.status(), Some(3), "{:#?}", out.report);
    assert_eq!(out.report.outcome, Outcome::Passed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("refused /dev/vport").count(), 4, "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.ends_with("s 0\nr\n"), "forged lines stay output: {stdout}");
}

#[test]
fn a_background_process_holding_stdout_does_not_keep_the_run_open() {
    let Some(mut vm) = vm("a_background_process_holding_stdout_does_not_keep_the_run_open") else {
        return;
    };
    // Were the run to wait for the background process, it would run into this timeout.
    vm.command_timeout(Duration::from_secs(120));
    let out = run(&vm, &["sh", "-c", "(sleep 1000; echo late) & echo early; exit 4"]);
    assert_eq!(out.report.outcome, Outcome::Passed, "{:#?}", out.report);
    assert_eq!(out.status(), Some(4));
    assert_eq!(out.stdout, b"early\n");
}

#[test]
fn a_work_directory_too_deep_for_socket_addresses_still_carries_the_payload() {
    let test = "a_work_directory_too_deep_for_socket_addresses_still_carries_the_payload";
    let Some(mut vm) = vm(test) else { return };
    let tmp = support::tempdir();
    // Past the 107 bytes of a socket address: the sockets go to the temporary directory.
    let deep = tmp.path().join("d".repeat(100));
    vm.work_dir(&deep);
    let out = run(&vm, &["sh", "-c", "echo deep; exit 5"]);
    assert_eq!(
        (out.status(), out.stdout.as_slice()),
        (Some(5), &b"deep\n"[..]),
        "{:#?}",
        out.report
    );
    assert!(out.report.console_log.starts_with(&deep));
}

#[test]
fn two_runs_in_one_work_directory_take_turns() {
    // Both write the same boot copy and sockets there: without turns, the second would
    // replace the disk the first is booting, or its sockets.
    let Some(mut vm) = vm("two_runs_in_one_work_directory_take_turns") else { return };
    let Ok(outputs) = support::rootfs() else { return };
    let work = support::tempdir();
    vm.disk(outputs.path(Format::Ext4)).work_dir(work.path());
    let first = {
        let vm = vm.clone();
        std::thread::spawn(move || run(&vm, &["sh", "-c", "sleep 2; echo first; exit 3"]))
    };
    // The second starts while the first boots or runs.
    while !work.path().join("boot.ext4").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = run(&vm, &["sh", "-c", "echo second"]);
    let first = first.join().unwrap();
    assert_eq!((first.status(), first.stdout.as_slice()), (Some(3), &b"first\n"[..]));
    assert_eq!((second.status(), second.stdout.as_slice()), (Some(0), &b"second\n"[..]));
    let waited = second
        .events
        .iter()
        .any(|e| matches!(e, Event::Note(n) if n.contains("waiting for another busyroot run")));
    assert!(waited, "the second run did not wait for the first: {:?}", second.events);
}

#[test]
fn the_serial_relay_is_chosen_with_its_reason() {
    // No VM starts: the choice is made, and reported, before the boot.
    let test = "the_serial_relay_is_chosen_with_its_reason";
    let Some(outputs) = support::rootfs_or_skip(test) else { return };
    let tmp = support::tempdir();
    let kernel = tmp.path().join("vmlinuz-6.1.0-test");
    std::fs::write(&kernel, b"not booted").unwrap();
    let config = "CONFIG_VIRTIO_PCI=y\n# CONFIG_VIRTIO_CONSOLE is not set\n";
    std::fs::write(tmp.path().join("config-6.1.0-test"), config).unwrap();
    for (vmm, reason) in [
        (Vmm::Qemu, "serial relay (virtio-serial: CONFIG_VIRTIO_CONSOLE is not set)"),
        (Vmm::Kvmtool, "serial relay (the VMM offers only its serial console)"),
    ] {
        let mut vm = Vm::new(Arch::X86_64, &kernel);
        vm.initramfs(outputs.path(Format::CpioGz))
            .vmm(vmm.clone(), None)
            .work_dir(tmp.path().join("run"));
        let events = Collect::default();
        let (spec, _) = vm.prepare(Some(vec!["true".into()]), &events).unwrap();
        assert_eq!(spec.channel, Channel::Serial);
        let payload = events.events().into_iter().find_map(|e| match e {
            Event::Choice { what: Decision::Payload, detail } => Some(detail),
            _ => None,
        });
        assert_eq!(payload.as_deref(), Some(reason), "{vmm}");
        assert!(spec.kernel_cmdline().contains("rdinit=/sbin/init"), "the image's own init");
    }
}

#[test]
fn payloads_in_a_row_leave_nothing_behind() {
    let test = "payloads_in_a_row_leave_nothing_behind";
    if vm(test).is_none() {
        return;
    }
    // Other tests of this binary open descriptors at the same time: the count is taken in a
    // process of its own, which runs only the payloads.
    let exe = std::env::current_exe().unwrap();
    let child = "channel::payloads_in_a_row_in_a_process_of_their_own";
    let out = std::process::Command::new(exe)
        .args(["--exact", child, "--ignored", "--test-threads=1", "--nocapture"])
        .output()
        .unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.contains("1 passed"), "{said}");
}

#[test]
#[ignore = "run by payloads_in_a_row_leave_nothing_behind, in a process of its own"]
fn payloads_in_a_row_in_a_process_of_their_own() {
    let Some(mut vm) = vm("payloads_in_a_row_in_a_process_of_their_own") else { return };
    let work = support::tempdir();
    vm.work_dir(work.path());
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let (before, files_before) = (fds(), std::fs::read_dir(work.path()).map_or(0, |d| d.count()));
    let runs: [(&str, Input, Option<u64>); 6] = [
        ("true", Input::Null, None),
        ("exit 3", Input::Null, None),
        ("echo started; sleep 600", Input::Null, Some(3)),
        ("wc -c", Input::Bytes(vec![7; 100_000]), None),
        ("(sleep 600) & exit 0", Input::Null, None),
        ("cat; exit 9", Input::Bytes(b"last".to_vec()), Some(120)),
    ];
    let mut files_after_first = None;
    for (script, input, timeout) in runs {
        let mut vm = vm.clone();
        vm.stdin(input).command_timeout(Duration::from_secs(timeout.unwrap_or(300)));
        let out = run(&vm, &["sh", "-c", script]);
        if timeout == Some(3) {
            assert_eq!(out.report.outcome, Outcome::CommandTimedOut, "{script}");
        } else {
            assert_eq!(out.report.outcome, Outcome::Passed, "{script}: {:#?}", out.report);
        }
        let names: Vec<String> = std::fs::read_dir(work.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".sock")), "sockets left: {names:?}");
        let count = names.len();
        assert_eq!(*files_after_first.get_or_insert(count), count, "the work directory grows");
    }
    // The readers of the last VMM's streams end once its sockets close, just after the run.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fds() > before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fds(), before, "descriptors left open (work files before: {files_before})");
}
