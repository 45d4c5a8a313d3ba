//! `cargo xtask bench --payload`: what a payload run costs against the floor the hardware
//! allows, each figure alternating with its baseline in the same run: `run --initramfs --
//! true` against bare QEMU booting the same kernel into an init that resets at once, and
//! payload output against the same command writing to `/dev/null` in the guest.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::vm::{self, Event, Input, Outcome, Root, Vm, Vmm};
use xshell::{cmd, Shell};

use crate::bench::{median, BenchArgs, Row};

/// Rows and notes (differences, rates, byte checks) for the payload figures.
pub(crate) fn rows(
    sh: &Shell,
    args: &BenchArgs,
    arch: Arch,
    kernel: &Path,
    dir: &Path,
) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let cpio = dir.join("rootfs.cpio.gz");
    let scratch = tempfile::tempdir()?;
    let mut vm = Vm::new(arch, kernel);
    vm.initramfs(&cpio).work_dir(scratch.path().join("run"));
    if let Some(modules) = &args.modules {
        vm.modules(modules);
    }
    let events = vm::Collect::default();
    vm.prepare(Some(vec!["true".into()]), &events)?;
    let channel = events.events().into_iter().find_map(|e| match e {
        Event::Choice { what: vm::Decision::Payload, detail } => Some(detail),
        _ => None,
    });
    let channel = channel.unwrap_or_default();
    let ports = channel.starts_with("virtio-serial");
    let mut notes = vec![format!("kernel {}; payload channel: {channel}", kernel.display())];
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut xtask_args: Vec<PathBuf> = vec!["run".into(), "--initramfs".into()];
    xtask_args.extend(["--kernel".into(), kernel.to_path_buf()]);
    if let Some(modules) = &args.modules {
        xtask_args.extend(["--modules".into(), modules.clone()]);
    }

    let floor_qemu = floor_command(&vm, &cpio, scratch.path())?;
    eprintln!("bench: run --initramfs -- true against the floor ({} pairs)", args.runs);
    let (mut xtask, mut library, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..args.runs {
        // The three in every order in turn: a boot leaves the host in a state (its memory, its
        // caches) that the next boot pays for, so none may always follow the same one.
        for which in ORDERS[pair % ORDERS.len()] {
            match which {
                0 => xtask.push(timed(|| {
                    let args = &xtask_args;
                    let out = cmd!(sh, "{cargo} xtask {args...} -- true")
                        .quiet()
                        .ignore_status()
                        .output()?;
                    anyhow::ensure!(
                        out.status.success(),
                        "`cargo xtask run --initramfs -- true` failed"
                    );
                    Ok(())
                })?),
                1 => library.push(timed(|| {
                    let out = vm.run(["true"])?;
                    anyhow::ensure!(
                        out.status == 0,
                        "`true` failed: {}",
                        out.report.verdict_line()
                    );
                    Ok(())
                })?),
                _ => floor.push(timed(|| floor_boot(sh, &floor_qemu))?),
            }
        }
    }
    let mut rows = vec![
        Row {
            figure: "cargo xtask run --initramfs -- true",
            target: "<= 1.15x the floor",
            ours: xtask,
            baseline_name: "floor: bare QEMU, init resets at once",
            baseline: floor.clone(),
        },
        Row {
            figure: "Vm::run(true) (library, no cargo)",
            target: "<= 1.15x the floor",
            ours: library,
            baseline_name: "floor: bare QEMU, init resets at once",
            baseline: floor,
        },
    ];

    if !ports {
        notes.push(
            "output and stdin figures skipped: they measure the virtio-serial channel".into(),
        );
        return Ok((rows, notes));
    }
    eprintln!("bench: 1 MB of base64 to stdout and to /dev/null ({} pairs)", args.runs);
    let base64 = "head -c 1000000 /dev/urandom | base64";
    let (mut out, mut null) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let (d, bytes) = payload(&vm, base64, Input::Null)?;
        anyhow::ensure!(bytes.len() > 1_300_000, "base64 printed only {} bytes", bytes.len());
        out.push(d);
        null.push(payload(&vm, &format!("{base64} >/dev/null"), Input::Null)?.0);
    }
    notes.push(format!(
        "1 MB of base64: stdout costs {:+.2} s over /dev/null (median command times; target <= 0.5 s)",
        median(&out).as_secs_f64() - median(&null).as_secs_f64()
    ));
    rows.push(Row {
        figure: "1 MB base64 to stdout (command time)",
        target: "<= +0.5 s over /dev/null",
        ours: out,
        baseline_name: "the same to /dev/null in the guest",
        baseline: null,
    });

    eprintln!("bench: 30 MB through stdout and to /dev/null ({} pairs)", args.runs);
    let make = "head -c 30000000 /dev/urandom >/tmp/f && sha256sum </tmp/f >&2";
    let (mut out, mut null) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let (d, bytes, stderr) = run_script(&vm, &format!("{make} && cat /tmp/f"))?;
        let sum = busyroot::host::fs::sha256_bytes(&bytes);
        anyhow::ensure!(
            bytes.len() == 30_000_000 && String::from_utf8_lossy(&stderr).starts_with(&sum),
            "30 MB came back as {} bytes with sha256 {sum}; the guest's: {}",
            bytes.len(),
            String::from_utf8_lossy(&stderr)
        );
        out.push(d);
        null.push(payload(&vm, &format!("{make} && cat /tmp/f >/dev/null"), Input::Null)?.0);
    }
    let extra = median(&out).saturating_sub(median(&null)).as_secs_f64();
    notes.push(format!(
        "30 MB through stdout: byte-exact (sha256 equal every run), {:.2} s over /dev/null = {} \
         (target >= 20 MB/s)",
        extra,
        if extra > 0.0 { format!("{:.0} MB/s", 30.0 / extra) } else { "no measurable cost".into() }
    ));
    rows.push(Row {
        figure: "30 MB to stdout (command time)",
        target: ">= 20 MB/s",
        ours: out,
        baseline_name: "the same to /dev/null in the guest",
        baseline: null,
    });

    let mut input = vec![0u8; 1_000_000];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut input))?;
    let (_, back) = payload(&vm, "cat", Input::Bytes(input.clone()))?;
    notes.push(format!(
        "1 MB random stdin through `cat`: {}",
        if back == input { "byte-exact" } else { "DIFFERS" }
    ));
    anyhow::ensure!(back == input, "1 MB of stdin came back as {} different bytes", back.len());
    Ok((rows, notes))
}

/// Every order of the three start-up figures (`cargo xtask`, the library, the floor).
const ORDERS: [[u8; 3]; 6] = [[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1], [0, 2, 1], [1, 2, 0]];

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed())
}

fn payload(vm: &Vm, script: &str, input: Input) -> anyhow::Result<(Duration, Vec<u8>)> {
    let mut vm = vm.clone();
    vm.stdin(input);
    let (d, out, _) = run_script(&vm, script)?;
    Ok((d, out))
}

fn run_script(vm: &Vm, script: &str) -> anyhow::Result<(Duration, Vec<u8>, Vec<u8>)> {
    let out = vm.run(["sh", "-c", script])?;
    let report = &out.report;
    let command = report.command.as_ref().context("the command did not run")?;
    anyhow::ensure!(
        report.outcome == Outcome::Passed && command.status == Some(0),
        "`{script}` did not pass: {}",
        report.verdict_line()
    );
    Ok((command.duration, out.stdout_bytes, out.stderr_bytes))
}

/// The floor's QEMU command line: the same machine, kernel, kernel command line and initramfs
/// as `vm`, whose init is BusyBox's `reboot -f`, so the guest resets (QEMU runs with
/// -no-reboot: it exits) the moment the kernel starts it.
fn floor_command(vm: &Vm, cpio: &Path, dir: &Path) -> anyhow::Result<(PathBuf, Vec<OsString>)> {
    let (mut spec, _) = vm.prepare(None, &vm::Quiet)?;
    spec.root = Root::Initramfs(cpio.into());
    spec.console_log = dir.join("floor.log");
    spec.append.extend(["rdinit=/sbin/reboot", "--", "-f"].map(String::from));
    let args = Vmm::Qemu.launch(&spec, vm::ConsoleMode::Piped, dir)?.args;
    Ok((spec.program, args))
}

/// One floor boot. It ends when QEMU has exited, as a user timing that command by hand would
/// see it end, and as a payload run ends once its VMM is gone.
fn floor_boot(sh: &Shell, (program, args): &(PathBuf, Vec<OsString>)) -> anyhow::Result<()> {
    // Waited for as a user would (blocking, not polled), within a deadline all the same.
    busyroot::host::exec::run_captured(cmd!(sh, "timeout 300 {program} {args...}").quiet())?;
    Ok(())
}
