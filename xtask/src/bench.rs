//! `cargo xtask bench`: times the edit-boot loop and, in the same run, the same work done by
//! hand (plain make, mke2fs, debugfs, cpio, tar, QEMU), and prints each figure with its
//! baseline and the ratio.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use busyroot::arch::Arch;
use busyroot::config::Workspace;
use busyroot::context::Layout;
use busyroot::host::exec::Running;
use busyroot::host::tools::find_program;
use busyroot::progress::Silent;
use busyroot::vm::{self, Root, RootBusRequest, VmSpec, Vmm};
use xshell::{cmd, Shell};

/// Flags of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Runs of each quick figure (no-op build, skeleton edit, boot check)
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Runs of the cold build and its by-hand baseline (each takes about a minute); 0 skips it
    #[arg(long, default_value_t = 3)]
    pub cold_runs: usize,
    /// Kernel for the boot figure, found as `run` finds it [default: $BUSYROOT_KERNEL, else
    /// config `run.kernel`, else the one `cargo xtask kernel` built]; without one the figure is
    /// skipped
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Runs of the matrix figure (every cell at once against one after another); 0 skips it
    #[arg(long, default_value_t = 1)]
    pub matrix_runs: usize,
    /// VMs at once in the matrix figure [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub matrix_jobs: Option<usize>,
    /// Runs of the kernel figure (`cargo xtask kernel` from a clean build tree against
    /// `make tinyconfig` + the image target, alternating; several minutes each); 0 skips it
    #[arg(long, default_value_t = 1)]
    pub kernel_runs: usize,
    /// Architectures of the kernel figure, repeatable [default: the host's]
    #[arg(long, value_name = "ARCH")]
    pub kernel_arch: Vec<Arch>,
    /// Linux source of the kernel figure, as for `cargo xtask kernel --source` [default:
    /// the newest /usr/src/linux-source-*.tar.*]
    #[arg(long, value_name = "PATH")]
    pub kernel_source: Option<PathBuf>,
    /// Print the table as JSON
    #[arg(long)]
    pub json: bool,
    /// Only the payload figures: `run -- true` against the floor (bare QEMU, same kernel, an
    /// initramfs whose init powers off at once) and output throughput, alternating with their
    /// baselines; needs a kernel
    #[arg(long)]
    pub payload: bool,
    /// Kernel modules for the payload figures' kernel (as `run --modules`)
    #[arg(long, value_name = "PATH")]
    pub modules: Option<PathBuf>,
    /// Only a soak: N payload runs in a row (passing, failing, timing out, Ctrl-C'd in turn),
    /// then a check that no process, descriptor, temporary file or output was left behind
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub soak: usize,
}

/// One row: our figure and its baseline, each as the samples of several runs.
pub(crate) struct Row {
    pub(crate) figure: &'static str,
    pub(crate) target: &'static str,
    pub(crate) ours: Vec<Duration>,
    pub(crate) baseline_name: &'static str,
    pub(crate) baseline: Vec<Duration>,
}

pub(crate) fn median(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Times `f` over `runs` runs.
fn time_runs(
    runs: usize,
    mut f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    (0..runs)
        .map(|i| {
            let start = Instant::now();
            f(i)?;
            Ok(start.elapsed())
        })
        .collect()
}

/// What the figures of one `cargo xtask bench` share.
struct Bench<'a> {
    sh: &'a Shell,
    args: &'a BenchArgs,
    ws: Workspace,
    arch: Arch,
    layout: Layout,
    cargo: OsString,
    scratch: tempfile::TempDir,
}

pub fn run(sh: &Shell, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let ws = crate::rootfs::workspace()?;
    let arch = Arch::configured_or_host(ws.config.arch)?;
    let layout = Layout::new(&ws, arch);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let _dir = sh.push_dir(&ws.root);
    let scratch = tempfile::tempdir()?;
    let bench = Bench { sh, args: &args, ws, arch, layout, cargo, scratch };
    eprintln!("bench: warming up (building the rootfs once)");
    bench.xtask(&["rootfs"])?;
    if args.soak > 0 {
        let kernel = bench.kernel()?;
        for note in crate::soak::soak(sh, args.soak, &kernel, bench.layout.dir())? {
            println!("{note}");
        }
        return Ok(());
    }
    if args.payload {
        let kernel = bench.kernel()?;
        let (rows, notes) =
            crate::bench_payload::rows(sh, &args, arch, &kernel, bench.layout.dir())?;
        print_report(&rows, &notes, args.json);
        return Ok(());
    }
    let inputs = bench.ws.rootfs_inputs()?;
    let Some(skeleton) = inputs.skeleton.last().map(|i| i.path.clone()) else {
        anyhow::bail!("bench edits a skeleton file, but `skeleton` is set to an empty list");
    };
    let mut rows = vec![bench.nothing_changed()?, bench.skeleton_edit(&skeleton)?];
    if args.cold_runs > 0 {
        rows.push(bench.cold(&inputs.busybox_config.path, &skeleton)?);
    }
    let notes = bench.boot(&mut rows)?;
    rows.extend(matrix_row(sh, &bench.ws, &args)?);
    rows.extend(kernel_rows(sh, &bench.ws, &args)?);
    print_report(&rows, &notes, args.json);
    Ok(())
}

impl Bench<'_> {
    /// `cargo xtask ARGS`, its output thrown away; an error when it fails.
    fn xtask(&self, args: &[&str]) -> anyhow::Result<()> {
        let (sh, cargo) = (self.sh, &self.cargo);
        let out =
            cmd!(sh, "{cargo} xtask {args...}").quiet().ignore_stdout().ignore_stderr().output()?;
        anyhow::ensure!(out.status.success(), "`cargo xtask {}` failed", args.join(" "));
        Ok(())
    }

    /// The kernel `cargo xtask run` would boot.
    fn kernel(&self) -> anyhow::Result<PathBuf> {
        Ok(crate::run::select_kernel(&self.ws, self.arch, self.args.kernel.as_deref())?.path)
    }

    /// A no-op rootfs build against BusyBox's own up-to-date make.
    fn nothing_changed(&self) -> anyhow::Result<Row> {
        eprintln!("bench: nothing changed");
        let (sh, src) = (self.sh, self.layout.busybox_src(&self.ws.config.busybox.version));
        Ok(Row {
            figure: "rootfs, nothing changed",
            target: "< 0.5 s",
            ours: time_runs(self.args.runs, |_| self.xtask(&["rootfs"]))?,
            baseline_name: "make busybox (up to date)",
            baseline: time_runs(self.args.runs, |_| {
                cmd!(sh, "make -C {src} busybox").quiet().ignore_stdout().run()?;
                Ok(())
            })?,
        })
    }

    /// One skeleton file edited and the rootfs rebuilt, against writing the images by hand
    /// from the same install tree; the file is restored after.
    fn skeleton_edit(&self, skeleton: &Path) -> anyhow::Result<Row> {
        eprintln!("bench: one skeleton file changed");
        let edited = skeleton.join("etc/profile");
        let original =
            std::fs::read(&edited).with_context(|| format!("read `{}`", edited.display()))?;
        let ours = time_runs(self.args.runs, |i| {
            let mut text = original.clone();
            text.extend_from_slice(format!("# bench edit {i}\n").as_bytes());
            std::fs::write(&edited, text)?;
            self.xtask(&["rootfs"])
        });
        std::fs::write(&edited, &original)?;
        self.xtask(&["rootfs"])?;
        let install = self.layout.install();
        Ok(Row {
            figure: "rootfs, one skeleton file changed",
            target: "< 1 s",
            ours: ours?,
            baseline_name: "cp + mke2fs -d + debugfs + cpio|gzip + tar",
            baseline: time_runs(self.args.runs, |_| {
                by_hand_images(self.sh, &install, skeleton, self.scratch.path())
            })?,
        })
    }

    /// The rootfs from nothing but the cached tarball, against the same build by hand.
    fn cold(&self, config: &Path, skeleton: &Path) -> anyhow::Result<Row> {
        let (sh, runs, dir) = (self.sh, self.args.cold_runs, self.layout.dir());
        eprintln!("bench: cold build ({runs} runs, about a minute each)");
        let tarball = busyroot::host::fetch::fetch(
            sh,
            &self.ws.config.busybox.source(),
            &busyroot::host::fetch::FetchOptions::from_env(),
            &Silent,
        )?;
        let ours = time_runs(runs, |_| {
            // Everything the rootfs build made, but not a kernel built beside it.
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let rootfs_made = name.starts_with("busybox-")
                    || name.starts_with("rootfs.")
                    || ["install", "stamps"].contains(&name.as_str());
                if rootfs_made && entry.path().is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else if rootfs_made {
                    std::fs::remove_file(entry.path())?;
                }
            }
            self.xtask(&["rootfs"])
        })?;
        let baseline =
            time_runs(runs, |_| by_hand_cold(sh, &tarball, config, skeleton, self.scratch.path()))?;
        Ok(Row {
            figure: "rootfs, cold (tarball cached)",
            target: "within 5% of by hand",
            ours,
            baseline_name: "tar xjf + make oldconfig/-j/install + images",
            baseline,
        })
    }

    /// A boot check against bare QEMU, then the payload figures; skipped (with a line saying
    /// so) only without any kernel. Returns the payload figures' notes.
    fn boot(&self, rows: &mut Vec<Row>) -> anyhow::Result<Vec<String>> {
        let (sh, args) = (self.sh, self.args);
        // The same choice as `cargo xtask run`; only having no kernel at all skips the figure.
        let kernel = match self.kernel() {
            Ok(kernel) => kernel,
            Err(_) if !crate::run::kernel_named(&self.ws, args.kernel.as_deref()) => {
                eprintln!(
                    "bench: no kernel (--kernel, $BUSYROOT_KERNEL, config `run.kernel` or one \
                     built by `cargo xtask kernel`): boot figure skipped"
                );
                return Ok(Vec::new());
            }
            Err(err) => return Err(err),
        };
        // The runs below boot this kernel: `cargo xtask run` takes $BUSYROOT_KERNEL when no
        // --kernel is given.
        let _kernel_env = sh.push_env("BUSYROOT_KERNEL", &kernel);
        eprintln!("bench: boot check");
        let ours = time_runs(args.runs, |_| self.xtask(&["run", "--check"]))?;
        let image = self.scratch.path().join("bare.ext4");
        let baseline = time_runs(args.runs, |_| {
            std::fs::copy(self.layout.output(busyroot::image::Format::Ext4), &image)?;
            bare_qemu_boot(sh, self.arch, &kernel, &image)
        })?;
        rows.push(Row {
            figure: "run --check (disk)",
            target: "within 10% of bare QEMU",
            ours,
            baseline_name: "bare QEMU: boot to banner, reboot",
            baseline,
        });
        // `run -- true` against the floor, and the payload's throughput.
        let (payload_rows, notes) =
            crate::bench_payload::rows(sh, args, self.arch, &kernel, self.layout.dir())?;
        rows.extend(payload_rows);
        Ok(notes)
    }
}

/// The table (or its JSON), then the notes under it.
fn print_report(rows: &[Row], notes: &[String], json: bool) {
    if json {
        println!("{}", to_json(rows));
    } else {
        print_table(rows);
    }
    for note in notes {
        println!("{note}");
    }
}

/// The matrix (`cargo xtask matrix`: every cell, several VMs at once) against the same cells
/// run one after another, alternating, in the same run; `None` when there are no cells.
fn matrix_row(sh: &Shell, ws: &Workspace, args: &BenchArgs) -> anyhow::Result<Option<Row>> {
    let cells = busyroot::matrix::cells(ws)?;
    if args.matrix_runs == 0 || cells.is_empty() {
        eprintln!("bench: no matrix cells (no kernel built) or --matrix-runs 0: matrix skipped");
        return Ok(None);
    }
    crate::matrix::build_images(sh, ws, &cells, false)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args.matrix_jobs.unwrap_or(cores).max(1);
    eprintln!(
        "bench: matrix of {} cells, {jobs} at a time and one after another ({cores} cores)",
        cells.len()
    );
    let (mut parallel, mut serial) = (Vec::new(), Vec::new());
    for _ in 0..args.matrix_runs {
        for (jobs, samples) in [(1, &mut serial), (jobs, &mut parallel)] {
            let report = busyroot::matrix::run_matrix(sh, &cells, jobs, &vm::Quiet);
            if !report.passed() {
                let failed: Vec<String> = report
                    .failed()
                    .iter()
                    .map(|c| format!("{}: {}", c.cell.name, c.detail()))
                    .collect();
                anyhow::bail!(
                    "the matrix failed, so its time means nothing: {}",
                    failed.join("; ")
                );
            }
            samples.push(report.wall_time);
        }
    }
    Ok(Some(Row {
        figure: "matrix, all cells at once (--jobs)",
        target: "<= 0.6x on 2 cores",
        ours: parallel,
        baseline_name: "the same cells one after another",
        baseline: serial,
    }))
}

/// Per architecture, `cargo xtask kernel` from a clean build tree (the unpacked source kept,
/// no kernel cache) against the floor a user reaches by hand on the same source: `make
/// tinyconfig` and the image target, alternating.
fn kernel_rows(sh: &Shell, ws: &Workspace, args: &BenchArgs) -> anyhow::Result<Vec<Row>> {
    let source = match &args.kernel_source {
        Some(path) => path.clone(),
        None => match busyroot::pipeline::kernel::installed_kernel_source(Path::new("/usr/src")) {
            Some(path) if args.kernel_runs > 0 => path,
            _ => {
                eprintln!(
                    "bench: kernel figure skipped (--kernel-runs 0, or no --kernel-source and no \
                     /usr/src/linux-source-*: apt-get install linux-source-6.1)"
                );
                return Ok(Vec::new());
            }
        },
    };
    let arches = match args.kernel_arch.as_slice() {
        [] => vec![Arch::configured_or_host(None)?],
        list => list.to_vec(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let jobs = format!("-j{}", std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut rows = Vec::new();
    for arch in arches {
        let ctx = busyroot::context::Context::for_arch(ws.clone(), arch);
        let mut builder = busyroot::pipeline::kernel::KernelBuilder::new(ctx);
        builder.source(busyroot::pipeline::kernel::KernelSource::Tarball(source.clone()));
        let tree = builder.prepare_source(sh, &Silent)?;
        let toolchain = busyroot::pipeline::busybox::Toolchain::find(arch)?;
        let layout = busyroot::context::Layout::new(ws, arch);
        let info = arch.info();
        let image = Path::new(info.kernel_image).file_name().context("image name")?.to_owned();
        // ARCH=x86 alone makes tinyconfig a 32-bit kernel; x86_64 asks for the 64-bit one.
        let make_arch =
            format!("ARCH={}", if arch == Arch::X86_64 { "x86_64" } else { info.kernel_arch });
        let cross = format!("CROSS_COMPILE={}", toolchain.cross_compile);
        let scratch = tempfile::tempdir()?;
        let out = format!("O={}", scratch.path().display());
        let arch_name = arch.name();
        eprintln!(
            "bench: {arch} kernel, {} pair(s) of builds, several minutes each",
            args.kernel_runs
        );
        let (mut ours, mut baseline) = (Vec::new(), Vec::new());
        for _ in 0..args.kernel_runs {
            // Without its build tree and outputs, both kernel stages run again.
            for dir in [layout.kernel_build(), layout.kernel_dir()] {
                let _ = std::fs::remove_dir_all(dir);
            }
            let start = Instant::now();
            let built = cmd!(sh, "{cargo} xtask kernel --arch {arch_name} --source {source}")
                .env_remove("BUSYROOT_KERNEL_CACHE")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run();
            built.with_context(|| format!("`cargo xtask kernel --arch {arch}` failed"))?;
            ours.push(start.elapsed());

            let _ = std::fs::remove_dir_all(scratch.path());
            std::fs::create_dir_all(scratch.path())?;
            let start = Instant::now();
            for target in [OsString::from("tinyconfig"), image.clone()] {
                cmd!(sh, "make -C {tree} {out} {make_arch} {cross} {jobs} {target}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run()?;
            }
            baseline.push(start.elapsed());
            let (o, b) = (ours.last().unwrap(), baseline.last().unwrap());
            eprintln!(
                "bench: {arch} kernel: {:.1} s against tinyconfig's {:.1} s ({:.2}x)",
                secs(*o),
                secs(*b),
                secs(*o) / secs(*b)
            );
        }
        rows.push(Row {
            figure: kernel_figure(arch),
            target: "<= 1.5x tinyconfig",
            ours,
            baseline_name: "make tinyconfig + image target, same source",
            baseline,
        });
    }
    Ok(rows)
}

fn kernel_figure(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "cargo xtask kernel, x86_64 (clean)",
        Arch::Aarch64 => "cargo xtask kernel, aarch64 (clean)",
        Arch::Riscv64 => "cargo xtask kernel, riscv64 (clean)",
    }
}

/// The image step by hand: stage install + skeleton, then mke2fs -d, debugfs for the device
/// nodes, cpio + gzip and tar.
fn by_hand_images(
    sh: &Shell,
    install: &Path,
    skeleton: &Path,
    scratch: &Path,
) -> anyhow::Result<()> {
    let stage = scratch.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let install_dot = install.join(".");
    let skeleton_dot = skeleton.join(".");
    cmd!(sh, "cp -a {install_dot} {stage}").quiet().run()?;
    cmd!(sh, "cp -a {skeleton_dot} {stage}").quiet().run()?;
    for d in ["dev", "proc", "sys", "tmp", "root"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    let mke2fs = find_program("mke2fs").context("mke2fs")?;
    let debugfs = find_program("debugfs").context("debugfs")?;
    let img = scratch.join("hand.ext4");
    let _ = std::fs::remove_file(&img);
    cmd!(sh, "{mke2fs} -q -t ext4 -d {stage} -F {img} 32M")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()?;
    let batch = scratch.join("batch");
    std::fs::write(&batch, "cd /dev\nmknod console c 5 1\nmknod null c 1 3\nmknod tty1 c 4 1\n")?;
    cmd!(sh, "{debugfs} -w -f {batch} {img}").quiet().ignore_stdout().ignore_stderr().run()?;
    let cpio = {
        let _d = sh.push_dir(&stage);
        let names = cmd!(sh, "find .").quiet().read()?;
        cmd!(sh, "cpio --quiet -o -H newc").stdin(names + "\n").quiet().output()?.stdout
    };
    let gz = cmd!(sh, "gzip -6 -n").stdin(cpio).quiet().output()?.stdout;
    std::fs::write(scratch.join("hand.cpio.gz"), gz)?;
    let tar = scratch.join("hand.tar");
    cmd!(sh, "tar -C {stage} -cf {tar} .").quiet().run()?;
    Ok(())
}

/// The whole build by hand: unpack, configure, build, install, then the images.
fn by_hand_cold(
    sh: &Shell,
    tarball: &Path,
    config: &Path,
    skeleton: &Path,
    scratch: &Path,
) -> anyhow::Result<()> {
    let tree = scratch.join("cold");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    cmd!(sh, "tar -C {tree} -xjf {tarball}").quiet().run()?;
    let src = std::fs::read_dir(&tree)?.next().context("empty tarball")??.path();
    std::fs::copy(config, src.join(".config"))?;
    let jobs = format!("-j{}", std::thread::available_parallelism().map_or(2, |n| n.get()));
    cmd!(sh, "make -C {src} oldconfig").stdin("\n".repeat(4096)).quiet().ignore_stdout().run()?;
    cmd!(sh, "make -C {src} {jobs}").quiet().ignore_stdout().ignore_stderr().run()?;
    let install = scratch.join("cold-install");
    let prefix = format!("CONFIG_PREFIX={}", install.display());
    cmd!(sh, "make -C {src} install {prefix}").quiet().ignore_stdout().run()?;
    by_hand_images(sh, &install, skeleton, scratch)
}

/// QEMU with the same command line `cargo xtask run --check` uses, driven by hand: wait for
/// the banner, type QEMU's shutdown command (`reboot`, which -no-reboot turns into an exit),
/// wait for QEMU to exit. A guest that stays silent or never
/// powers off fails at the deadline; QEMU never outlives this function.
fn bare_qemu_boot(sh: &Shell, arch: Arch, kernel: &Path, image: &Path) -> anyhow::Result<()> {
    let root = if image.to_string_lossy().ends_with(".cpio.gz") {
        Root::Initramfs(image.to_path_buf())
    } else {
        let bus = vm::choose_root_bus(RootBusRequest::Auto, kernel, Vmm::Qemu)?.value;
        Root::Disk { image: image.to_path_buf(), bus }
    };
    let mut spec = VmSpec::new(arch, kernel.to_path_buf(), root, image.with_extension("log"));
    spec.accel = vm::choose_accel(vm::AccelRequest::Auto, arch)?.value;
    // The command line busyroot's own run gives this kernel.
    spec.add_uniprocessor_args(vm::KernelConfig::find(kernel)?.as_ref());
    let run_dir = image.parent().context("the image has a directory")?;
    let args: Vec<OsString> = Vmm::Qemu.launch(&spec, vm::ConsoleMode::Piped, run_dir)?.args;
    let program = &spec.program;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut qemu = Running::spawn(cmd!(sh, "{program} {args...}").quiet(), &Silent)?;
    qemu.wait_for_line(vm::BANNER, deadline)?;
    // The shell may not be reading yet; a few newlines first cost nothing.
    let shutdown = Vmm::Qemu.shutdown_command();
    qemu.write_stdin(format!("\n\n{shutdown}\n").as_bytes())?;
    qemu.wait_success(deadline)?;
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<34} {:>8} {:>8} {:>8}   {:<44} {:>8} {:>6}  target",
        "figure", "median", "min", "max", "baseline (same run)", "median", "ratio"
    );
    for r in rows {
        let (m, b) = (median(&r.ours), median(&r.baseline));
        println!(
            "{:<34} {:>7.2}s {:>7.2}s {:>7.2}s   {:<44} {:>7.2}s {:>6.2}  {}",
            r.figure,
            secs(m),
            secs(*r.ours.iter().min().unwrap()),
            secs(*r.ours.iter().max().unwrap()),
            r.baseline_name,
            secs(b),
            secs(m) / secs(b),
            r.target
        );
    }
    println!(
        "({} run(s) each; ratio = median / baseline median)",
        rows.first().map_or(0, |r| r.ours.len())
    );
}

fn to_json(rows: &[Row]) -> String {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            let list = |v: &[Duration]| v.iter().map(|d| format!("{:.4}", secs(*d))).collect::<Vec<_>>().join(", ");
            format!(
                "  {{\"figure\": {:?}, \"target\": {:?}, \"median_s\": {:.4}, \"min_s\": {:.4}, \"max_s\": {:.4}, \"samples_s\": [{}], \"baseline\": {:?}, \"baseline_median_s\": {:.4}, \"baseline_samples_s\": [{}], \"ratio\": {:.4}}}",
                r.figure,
                r.target,
                secs(median(&r.ours)),
                secs(*r.ours.iter().min().unwrap()),
                secs(*r.ours.iter().max().unwrap()),
                list(&r.ours),
                r.baseline_name,
                secs(median(&r.baseline)),
                list(&r.baseline),
                secs(median(&r.ours)) / secs(median(&r.baseline))
            )
        })
        .collect();
    format!("[\n{}\n]", items.join(",\n"))
}
