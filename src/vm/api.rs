//! The short way to boot: [`Vm`], a builder that takes a kernel, an image and what to show the
//! guest, makes every choice the runner needs (accelerator, root bus, share transport) with
//! its reason, prepares the boot copy of the image, and runs the checks or a command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use xshell::Shell;

use super::channel::ports::{self, InitFile};
use super::channel::{choose_channel, Channel, Input};
use super::check::RunPlan;
use super::event::{Decision, Event, Observer, OutputStream, Quiet};
use super::layer;
use super::modules::{GuestFile, ModuleTree};
use super::report::RunReport;
use super::share::{choose_transport, search_virtiofsd, Share, ShareRequest};
use super::{
    choose_accel, choose_root_bus, AccelRequest, Check, KernelConfig, Root, RootBusRequest,
    Timeouts, VmSpec, Vmm,
};
use crate::arch::Arch;
// A run's extra files live only in the boot copy; they get the fallback time.
use crate::context::FALLBACK_EPOCH;
use crate::error::{Error, IoContext, Result};
use crate::host::fs::require_file;
use crate::host::lock::DirLock;
use crate::progress::Progress;
use crate::tree::manifest::{ImagePath, Manifest};

/// What a command run in the guest did, for a test to assert on.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The exit code `cargo xtask run` would exit with: the command's status when it ran (see
    /// [`RunReport::exit_code`] for the other cases).
    pub status: i32,
    /// Its stdout as text (invalid UTF-8 replaced). Over the serial relay, line by line with
    /// control characters dropped; over virtio-serial ports, as written.
    pub stdout: String,
    /// Its stderr as text.
    pub stderr: String,
    /// Its stdout byte for byte (over the serial relay, the text above).
    pub stdout_bytes: Vec<u8>,
    /// Its stderr byte for byte.
    pub stderr_bytes: Vec<u8>,
    /// The whole console log. A run without a [`Vm::work_dir`] removes it with its directory
    /// when the run passed, and keeps only it when the run failed.
    pub console: PathBuf,
    /// Everything else: outcome, timings, checks.
    pub report: RunReport,
}

/// The image to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Image {
    Disk(PathBuf),
    Initramfs(PathBuf),
}

/// A VM to boot: a kernel, a root file system and what the guest should see, with defaults
/// for everything else.
///
/// ```no_run
/// use busyroot::arch::Arch;
/// use busyroot::vm::Vm;
///
/// let out = Vm::new(Arch::X86_64, "/boot/vmlinuz")
///     .rootfs("target/busyroot/x86_64/rootfs.ext4")
///     .share("target/guest-tests")
///     .run(["/bin/sh", "-c", "echo hello"])?;
/// assert_eq!((out.status, out.stdout.as_str()), (0, "hello\n"));
/// # Ok::<(), busyroot::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Vm {
    arch: Arch,
    kernel: PathBuf,
    image: Option<Image>,
    shares: Vec<ShareRequest>,
    vmm: Vmm,
    program: Option<PathBuf>,
    accel: AccelRequest,
    root_bus: RootBusRequest,
    mem_mib: u32,
    cpus: u32,
    append: Vec<String>,
    boot_timeout: Option<u64>,
    command_timeout: Option<Duration>,
    work_dir: Option<PathBuf>,
    checks: Option<(String, Vec<Check>)>,
    tap: bool,
    modules: Option<PathBuf>,
    overlays: Vec<PathBuf>,
    stdin: Input,
    env: Vec<(String, String)>,
    current_dir: Option<String>,
}

/// A module tree bigger than this is not copied whole into the guest: only the modules the run
/// loads are (Debian's cloud kernel ships 91 MB of modules).
const WHOLE_TREE_LIMIT: u64 = 64 << 20;

impl Vm {
    /// A VM for `arch` booting `kernel` under QEMU, with KVM where it works, 256 MiB and 2
    /// CPUs, no shares. Give it an image with [`Vm::rootfs`], [`Vm::disk`] or
    /// [`Vm::initramfs`].
    pub fn new(arch: Arch, kernel: impl Into<PathBuf>) -> Vm {
        Vm {
            arch,
            kernel: kernel.into(),
            image: None,
            shares: Vec::new(),
            vmm: Vmm::Qemu,
            program: None,
            accel: AccelRequest::Auto,
            root_bus: RootBusRequest::Auto,
            mem_mib: crate::config::DEFAULT_MEM_MIB,
            cpus: crate::config::DEFAULT_CPUS,
            append: Vec::new(),
            boot_timeout: None,
            command_timeout: None,
            work_dir: None,
            checks: None,
            tap: false,
            modules: None,
            overlays: Vec::new(),
            stdin: Input::Null,
            env: Vec::new(),
            current_dir: None,
        }
    }

    /// Boots `image`: an initramfs if its name ends in `.cpio` or `.cpio.gz`, else a disk.
    pub fn rootfs(&mut self, image: impl Into<PathBuf>) -> &mut Vm {
        let image = image.into();
        let name = image.to_string_lossy();
        self.image = Some(if name.ends_with(".cpio") || name.ends_with(".cpio.gz") {
            Image::Initramfs(image)
        } else {
            Image::Disk(image)
        });
        self
    }

    /// Boots `image` as the root disk; the guest writes to a copy, so `image` stays as it is.
    pub fn disk(&mut self, image: impl Into<PathBuf>) -> &mut Vm {
        self.image = Some(Image::Disk(image.into()));
        self
    }

    /// Boots `cpio` (newc, optionally gzip-compressed) as the initramfs.
    pub fn initramfs(&mut self, cpio: impl Into<PathBuf>) -> &mut Vm {
        self.image = Some(Image::Initramfs(cpio.into()));
        self
    }

    /// Shows the host directory `dir` to the guest at the same absolute path, read-write.
    pub fn share(&mut self, dir: impl Into<PathBuf>) -> &mut Vm {
        self.shares.push(ShareRequest { host: dir.into(), guest: None, readonly: false });
        self
    }

    /// Shows a host directory as `request` says (guest path, read-only).
    pub fn share_with(&mut self, request: ShareRequest) -> &mut Vm {
        self.shares.push(request);
        self
    }

    /// Kernel modules for the booted kernel: a `lib/modules/<version>` tree, a directory
    /// holding one, or an archive of one. They are copied into the guest (the whole tree when
    /// it is small, else the modules the run loads), and those the shares need are loaded.
    pub fn modules(&mut self, path: impl Into<PathBuf>) -> &mut Vm {
        self.modules = Some(path.into());
        self
    }

    /// Lays the files of the directory `dir` over the image for this run only (owned 0:0).
    pub fn overlay(&mut self, dir: impl Into<PathBuf>) -> &mut Vm {
        self.overlays.push(dir.into());
        self
    }

    /// Uses this VMM (and, if given, this program for it).
    pub fn vmm(&mut self, vmm: Vmm, program: Option<PathBuf>) -> &mut Vm {
        self.vmm = vmm;
        self.program = program;
        self
    }

    /// Uses a VMM of the caller's own (see [`Backend`](super::Backend)); its program is the
    /// backend's [`default_program`](super::Backend::default_program).
    pub fn backend(&mut self, backend: impl super::Backend + 'static) -> &mut Vm {
        self.vmm = Vmm::custom(backend);
        self.program = None;
        self
    }

    /// KVM, TCG, or `auto` (KVM only where it can run this guest).
    pub fn accel(&mut self, accel: AccelRequest) -> &mut Vm {
        self.accel = accel;
        self
    }

    /// The bus of the root disk, or `auto` (from the kernel's configuration).
    pub fn root_bus(&mut self, bus: RootBusRequest) -> &mut Vm {
        self.root_bus = bus;
        self
    }

    /// Guest memory in MiB and number of CPUs.
    pub fn size(&mut self, mem_mib: u32, cpus: u32) -> &mut Vm {
        self.mem_mib = mem_mib;
        self.cpus = cpus;
        self
    }

    /// Appends a kernel command-line argument (after busyroot's own, so it wins).
    pub fn append(&mut self, arg: impl Into<String>) -> &mut Vm {
        self.append.push(arg.into());
        self
    }

    /// Seconds to wait for the init banner (before `$BUSYROOT_TIMEOUT_SCALE`).
    pub fn boot_timeout(&mut self, secs: u64) -> &mut Vm {
        self.boot_timeout = Some(secs);
        self
    }

    /// How long the command may run before the VM is killed. Default: no limit.
    pub fn command_timeout(&mut self, timeout: Duration) -> &mut Vm {
        self.command_timeout = Some(timeout);
        self
    }

    /// Where the console log, the boot copy of the disk and sockets go. Default: a new directory
    /// under the system's temporary directory, removed after a passed run; a failed run leaves
    /// its console log there.
    pub fn work_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Vm {
        self.work_dir = Some(dir.into());
        self
    }

    /// Runs the standard checks (expecting `hostname`) and `extra` ones first.
    pub fn checks(&mut self, hostname: &str, extra: Vec<Check>) -> &mut Vm {
        self.checks = Some((hostname.to_string(), extra));
        self
    }

    /// Reads the command's stdout as TAP or KTAP, one report case per test point.
    pub fn tap(&mut self, tap: bool) -> &mut Vm {
        self.tap = tap;
        self
    }

    /// What the command reads on stdin. Default: `/dev/null`. Only the virtio-serial channel
    /// carries it; over the serial relay the command reads `/dev/null` whatever is set here.
    pub fn stdin(&mut self, input: Input) -> &mut Vm {
        self.stdin = input;
        self
    }

    /// Sets an environment variable for the command (besides `PATH` and `HOME`).
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Vm {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The guest directory the command starts in. Default: the first share's, else `/`.
    pub fn current_dir(&mut self, dir: impl Into<String>) -> &mut Vm {
        self.current_dir = Some(dir.into());
        self
    }

    /// Boots, runs `command` as root, powers off, and returns what it did.
    pub fn run<I, S>(&self, command: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv: Vec<String> = command.into_iter().map(Into::into).collect();
        let sh = Shell::new().map_err(|e| Error::Other(format!("cannot start a shell: {e}")))?;
        let bytes = Bytes::default();
        let report = self.run_with(&sh, Some(argv), &bytes)?;
        let command = report.command.clone().unwrap_or_default();
        let (mut stdout_bytes, mut stderr_bytes) = bytes.0.into_inner();
        // Over the serial relay no bytes come, only the report's lines of text.
        if stdout_bytes.is_empty() && stderr_bytes.is_empty() {
            stdout_bytes = command.stdout.clone().into_bytes();
            stderr_bytes = command.stderr.clone().into_bytes();
        }
        Ok(Output {
            status: report.exit_code(),
            stdout_bytes,
            stderr_bytes,
            stdout: command.stdout,
            stderr: command.stderr,
            console: report.console_log.clone(),
            report,
        })
    }

    /// Boots, runs the standard checks, powers off and checks the disk.
    pub fn check(&self) -> Result<RunReport> {
        let sh = Shell::new().map_err(|e| Error::Other(format!("cannot start a shell: {e}")))?;
        let mut vm = self.clone();
        if vm.checks.is_none() {
            vm.checks = Some((super::RunConfig::default().hostname, Vec::new()));
        }
        vm.run_with(&sh, None, &Quiet)
    }

    /// Makes every choice, reporting each to `observer`, and prepares the boot image: the
    /// [`VmSpec`] and [`RunPlan`] that [`run`](super::run) takes. Without a
    /// [`work_dir`](Vm::work_dir), the directory it makes (the console log's) is the caller's
    /// to remove.
    pub fn prepare(
        &self,
        command: Option<Vec<String>>,
        observer: &dyn Observer,
    ) -> Result<(VmSpec, RunPlan)> {
        let sh = Shell::new().map_err(|e| Error::Other(format!("cannot start a shell: {e}")))?;
        self.prepare_with(&sh, command, observer)
    }

    /// [`Vm::prepare`] with `sh` for the host tools it runs: the phases in order, each making
    /// its choices and reporting them.
    fn prepare_with(
        &self,
        sh: &Shell,
        command: Option<Vec<String>>,
        observer: &dyn Observer,
    ) -> Result<(VmSpec, RunPlan)> {
        let mut prep = Prep::root(self, sh, observer)?;
        let tree = prep.module_tree()?;
        prep.shares(tree.is_some())?;
        if command.is_some() && self.checks.is_none() {
            prep.channel(tree.is_some());
        }
        let (load, module_files) = prep.modules(tree)?;
        let dir =
            self.current_dir.clone().or_else(|| prep.spec.shares.first().map(|s| s.guest.clone()));
        let command = self.command_words(command, prep.spec.channel)?;
        let init = prep.payload_init(command.as_deref(), &load, dir.as_deref())?;
        let layer = prep.boot_copy(&module_files, &init)?;
        if let Some(argv) = &command {
            let (Image::Disk(image) | Image::Initramfs(image)) = prep.image;
            check_command_exists(&argv[0], image, &prep.spec.shares, layer.as_ref())?;
        }
        let plan = self.plan(&prep.spec, command, load, dir)?;
        Ok((prep.spec, plan))
    }

    /// The command as the guest runs it, its environment's names checked: the serial relay
    /// runs `env K=V … CMD`; the payload init exports them itself.
    fn command_words(
        &self,
        command: Option<Vec<String>>,
        channel: Channel,
    ) -> Result<Option<Vec<String>>> {
        for (key, _) in &self.env {
            let valid = key
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if !valid || key.is_empty() {
                return Err(Error::Other(format!(
                    "`{key}` cannot be an environment variable's name in the guest's shell"
                )));
            }
        }
        Ok(match (command, channel) {
            (Some(argv), Channel::Serial) if !self.env.is_empty() => {
                let mut words = vec!["env".to_string()];
                words.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
                words.extend(argv);
                Some(words)
            }
            (command, _) => command,
        })
    }

    /// What the guest does: the checks (standard ones and the caller's), the command, or both.
    fn plan(
        &self,
        spec: &VmSpec,
        command: Option<Vec<String>>,
        modules: Vec<String>,
        dir: Option<String>,
    ) -> Result<RunPlan> {
        let timeouts = Timeouts::from_env(spec.accel, self.boot_timeout)?;
        let mut plan = match &self.checks {
            Some((hostname, extra)) => {
                let mut plan = RunPlan::standard(spec, hostname, timeouts);
                plan.checks.extend(extra.iter().cloned());
                plan.command = command;
                plan
            }
            None => match command {
                Some(argv) => RunPlan::command(argv, timeouts),
                None => RunPlan::standard(spec, &super::RunConfig::default().hostname, timeouts),
            },
        };
        plan.command_timeout = self.command_timeout;
        plan.tap = self.tap;
        plan.modules = modules;
        plan.stdin = self.stdin.clone();
        plan.dir = dir;
        Ok(plan)
    }

    /// [`Vm::prepare`], then [`run`](super::run) with `observer`. With a
    /// [`work_dir`](Vm::work_dir), runs there take turns.
    pub fn run_with(
        &self,
        sh: &Shell,
        command: Option<Vec<String>>,
        observer: &dyn Observer,
    ) -> Result<RunReport> {
        let _turn = self.take_turn(observer)?;
        let (spec, plan) = self.prepare_with(sh, command, observer)?;
        let report = super::run(sh, &spec, &plan, observer);
        let passed = report.as_ref().is_ok_and(|r| r.outcome == super::Outcome::Passed);
        self.clean_fresh_work_dir(&spec, passed);
        report
    }

    /// [`Vm::prepare`] without a command, then the console on this terminal.
    pub fn interactive(&self, observer: &dyn Observer) -> Result<i32> {
        let _turn = self.take_turn(observer)?;
        let (spec, plan) = self.prepare(None, observer)?;
        let status = super::boot_interactive(&spec, &plan.modules, observer);
        self.clean_fresh_work_dir(&spec, true);
        status
    }

    /// Cleans the directory a run without a [`work_dir`](Vm::work_dir) made for itself (the
    /// one holding `spec`'s console log): all of it after a passed run; after a failed one,
    /// all but the console log, which the report names.
    fn clean_fresh_work_dir(&self, spec: &VmSpec, passed: bool) {
        let Some(dir) = spec.console_log.parent().filter(|_| self.work_dir.is_none()) else {
            return;
        };
        if passed {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path() != spec.console_log {
                let _ = crate::host::fs::remove_any(&entry.path());
            }
        }
    }

    /// A lock on the caller's work directory for the whole run: two runs there would write
    /// the same boot copy and sockets, and one would boot the other's. A run without a work
    /// directory of its own gets a fresh one and needs none.
    fn take_turn(&self, observer: &dyn Observer) -> Result<Option<DirLock>> {
        /// Says through the observer that the run waits for the lock.
        struct Waiting<'a>(&'a dyn Observer);
        impl Progress for Waiting<'_> {
            fn note(&self, message: &str) {
                self.0.event(Event::Note(message.into()));
            }
        }
        let Some(dir) = &self.work_dir else { return Ok(None) };
        DirLock::acquire(&dir.join("run.lock"), &Waiting(observer)).map(Some)
    }

    fn make_work_dir(&self) -> Result<PathBuf> {
        let Some(dir) = &self.work_dir else { return fresh_work_dir() };
        std::fs::create_dir_all(dir).with_path("create directory", dir)?;
        std::path::absolute(dir).with_path("resolve", dir)
    }
}

/// A new directory of this run's own under the system's temporary directory. It is created,
/// never reused: a process id comes back, and a directory an earlier process of that id left
/// (another user's, perhaps) would mix its files with this run's.
fn fresh_work_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let tmp = std::env::temp_dir();
    let tmp = std::path::absolute(&tmp).with_path("resolve", &tmp)?;
    loop {
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("busyroot-vm-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            created => return created.with_path("create directory", &dir).map(|()| dir),
        }
    }
}

/// One [`Vm::prepare`] in progress: what its phases have chosen so far.
struct Prep<'a> {
    vm: &'a Vm,
    sh: &'a Shell,
    observer: &'a dyn Observer,
    image: &'a Image,
    work: PathBuf,
    /// The boot copy of a disk image: the guest writes to its disk, so the image stays as
    /// built.
    copy: PathBuf,
    spec: VmSpec,
    config: Option<KernelConfig>,
    /// Whether the module tree is the one found beside the kernel (not given).
    beside: bool,
    /// The kernel symbols the chosen transports need, whose modules the run loads.
    needed: Vec<&'static str>,
}

impl<'a> Prep<'a> {
    fn choose(&self, what: Decision, detail: String) {
        self.observer.event(Event::Choice { what, detail });
    }

    fn note(&self, text: String) {
        self.observer.event(Event::Note(text));
    }

    /// The inputs checked, the accelerator and the root chosen, the spec begun.
    fn root(vm: &'a Vm, sh: &'a Shell, observer: &'a dyn Observer) -> Result<Prep<'a>> {
        let image = vm.image.as_ref().ok_or_else(|| {
            Error::Other(
                "no root file system to boot: give the VM a disk image or an initramfs".into(),
            )
        })?;
        require_file("kernel image", &vm.kernel)?;
        let choose =
            |what: Decision, detail: String| observer.event(Event::Choice { what, detail });
        let accel = choose_accel(vm.accel, vm.arch)?;
        choose(Decision::Accel, format!("{} ({})", accel.value, accel.reason));
        let work = vm.make_work_dir()?;
        let copy = work.join("boot.ext4");
        let root = match image {
            Image::Initramfs(cpio) => {
                require_file("the image", cpio)?;
                choose(Decision::Root, format!("initramfs {}", cpio.display()));
                Root::Initramfs(cpio.clone())
            }
            Image::Disk(image) => {
                require_file("the image", image)?;
                let bus = choose_root_bus(vm.root_bus, &vm.kernel, vm.vmm.clone())?;
                let device = bus.value.device();
                let detail =
                    format!("{} as {device} on {} ({})", copy.display(), bus.value, bus.reason);
                choose(Decision::Root, detail);
                Root::Disk { image: copy.clone(), bus: bus.value }
            }
        };
        let mut spec = VmSpec::new(vm.arch, vm.kernel.clone(), root, work.join("console.log"));
        spec.vmm = vm.vmm.clone();
        spec.program = vm.vmm.program(vm.arch, vm.program.as_deref());
        spec.accel = accel.value;
        spec.mem_mib = vm.mem_mib;
        spec.cpus = vm.cpus;
        let config = KernelConfig::find(&vm.kernel)?;
        spec.add_uniprocessor_args(config.as_ref());
        spec.append.extend(vm.append.iter().cloned());
        let (beside, needed) = (false, Vec::new());
        Ok(Prep { vm, sh, observer, image, work, copy, spec, config, beside, needed })
    }

    /// The modules given, or without them those beside the kernel (an unpacked distribution
    /// package), used if the run needs any.
    fn module_tree(&mut self) -> Result<Option<ModuleTree>> {
        let beside = match &self.vm.modules {
            Some(_) => None,
            None => super::modules::beside_kernel(&self.vm.kernel),
        };
        self.beside = beside.is_some();
        let Some(path) = self.vm.modules.as_ref().or(beside.as_ref()) else { return Ok(None) };
        let tree =
            ModuleTree::open(self.sh, path, &self.work.join("modules"), &crate::progress::Silent)?;
        if tree.check_kernel(&self.vm.kernel)?.is_none() {
            self.note(format!(
                "cannot tell which kernel release `{}` is; assuming the modules ({}) fit",
                self.vm.kernel.display(),
                tree.version()
            ));
        }
        Ok(Some(tree))
    }

    /// The share transport and each share.
    fn shares(&mut self, modules: bool) -> Result<()> {
        if self.vm.shares.is_empty() {
            return Ok(());
        }
        let search = search_virtiofsd();
        for (program, why) in &search.passed_over {
            self.note(format!("virtiofsd: passed over `{}`: {why}", program.display()));
        }
        let offered = self.vm.vmm.backend().transports();
        if offered.is_empty() {
            return Err(Error::Other(self.vm.vmm.backend().no_transport_hint()));
        }
        let transport =
            choose_transport(offered, self.config.as_ref(), modules, search.program.as_deref())?;
        self.choose(Decision::Shares, format!("{} ({})", transport.value, transport.reason));
        self.needed.extend(transport.value.symbols());
        for (i, request) in self.vm.shares.iter().enumerate() {
            let share = request.resolve(i, transport.value, &self.work)?;
            let mode = if share.readonly { "read-only" } else { "read-write" };
            let detail = format!("{} at {} ({mode})", share.host.display(), share.guest);
            self.choose(Decision::Share, detail);
            self.spec.shares.push(share);
        }
        Ok(())
    }

    /// The payload's channel.
    fn channel(&mut self, modules: bool) {
        let offered = match self.image {
            // Busyroot's init is laid over the image, which a disk can have only with the
            // listing busyroot writes beside it.
            Image::Disk(original) if layer::listing_of(original).is_err() => &[][..],
            _ => self.vm.vmm.backend().channels(),
        };
        let channel = choose_channel(offered, self.config.as_ref(), modules);
        let reason = if offered.is_empty() {
            "the disk image has no listing (rootfs.tar) to lay busyroot's payload init over".into()
        } else {
            channel.reason
        };
        self.choose(Decision::Payload, format!("{} ({reason})", channel.value));
        self.needed.extend(channel.value.symbols());
        self.spec.channel = channel.value;
        if channel.value == Channel::Serial && self.vm.stdin != Input::Null {
            self.note("the serial relay carries no stdin: the command reads /dev/null".into());
        }
    }

    /// The modules the run loads (guest paths, in load order) and the files delivered with
    /// them: the whole tree, or only the loaded modules of a large one.
    fn modules(&self, tree: Option<ModuleTree>) -> Result<(Vec<String>, Vec<GuestFile>)> {
        let names = match &self.config {
            Some(config) => super::modules::modules_for(&self.needed, config),
            None => Vec::new(),
        };
        // Modules found beside the kernel are delivered only when the run loads some.
        let Some(tree) = tree.filter(|_| !self.beside || !names.is_empty()) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let order = tree.load_order(&names)?;
        let all = tree.all_files()?;
        let bytes: u64 =
            all.iter().filter_map(|f| std::fs::metadata(&f.host).ok()).map(|m| m.len()).sum();
        let (files, which) = if bytes <= WHOLE_TREE_LIMIT {
            (all, "the whole tree".to_string())
        } else {
            (tree.files_for(&order)?, format!("the modules it loads ({} MiB in all)", bytes >> 20))
        };
        let loads: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        self.choose(
            Decision::Modules,
            format!(
                "{} from `{}`: {which}, {} files; loads {}",
                tree.version(),
                tree.root().display(),
                files.len(),
                if loads.is_empty() { "nothing".to_string() } else { loads.join(", ") }
            ),
        );
        let load = order
            .iter()
            .map(|m| format!("/{}", tree.guest_dir().join(&m.path).display()))
            .collect();
        Ok((load, files))
    }

    /// Over virtio-serial ports, busyroot's payload init (built once for the architecture, in
    /// the cache) and the plan for `command`, written to the work directory.
    fn payload_init(
        &self,
        command: Option<&[String]>,
        modules: &[String],
        dir: Option<&str>,
    ) -> Result<Vec<InitFile>> {
        let (Some(argv), Channel::Ports) = (command, self.spec.channel) else {
            return Ok(Vec::new());
        };
        let plan = ports::InitPlan {
            modules,
            mounts: &super::session::mounts(&self.spec),
            dir: dir.unwrap_or("/"),
            env: &self.vm.env,
            argv,
            disk: matches!(self.image, Image::Disk(_)),
        };
        let cache = crate::host::fetch::FetchOptions::from_env().cache_dir;
        ports::write_init(self.sh, self.vm.arch, &plan, &self.work, &cache)
    }

    /// The boot copy: the overlays, modules and payload init laid over the image (a new
    /// initramfs, or the disk written anew from its listing), or a plain copy of the disk.
    /// Returns the layer.
    fn boot_copy(&mut self, modules: &[GuestFile], init: &[InitFile]) -> Result<Option<Manifest>> {
        let overlays = &self.vm.overlays;
        let add_init = |manifest: &mut Manifest| {
            init.iter().try_for_each(|(guest, host, mode)| {
                layer::add_file(manifest, guest, host, *mode, FALLBACK_EPOCH)
            })
        };
        let layer = if overlays.is_empty() && modules.is_empty() && init.is_empty() {
            None
        } else {
            for overlay in overlays {
                self.choose(Decision::Overlay, overlay.display().to_string());
            }
            let mut layer = layer::manifest(None, overlays, modules, FALLBACK_EPOCH)?;
            add_init(&mut layer)?;
            Some(layer)
        };
        match (self.image, &layer) {
            (Image::Initramfs(base), Some(layer)) => {
                let boot = self.work.join("boot.cpio");
                layer::initramfs(base, layer, &boot)?;
                self.spec.root = Root::Initramfs(boot);
            }
            // With a layer, the boot copy is written anew: the image's listing and the layer.
            (Image::Disk(original), Some(_)) => {
                let listing = layer::listing_of(original)?;
                let mut whole = layer::manifest(Some(&listing), overlays, modules, FALLBACK_EPOCH)?;
                add_init(&mut whole)?;
                layer::disk(self.sh, original, &whole, &self.copy)?;
            }
            (Image::Disk(original), None) if *original != self.copy => {
                std::fs::copy(original, &self.copy).with_path("copy to", &self.copy)?;
            }
            _ => {}
        }
        Ok(layer)
    }
}

/// Collects the bytes of [`Event::Output`]s: the payload's streams over virtio-serial ports.
#[derive(Default)]
struct Bytes(std::cell::RefCell<(Vec<u8>, Vec<u8>)>);

impl Observer for Bytes {
    fn event(&self, event: Event) {
        if let Event::Output(stream, bytes) = event {
            let mut both = self.0.borrow_mut();
            match stream {
                OutputStream::Stdout => both.0.extend_from_slice(&bytes),
                OutputStream::Stderr => both.1.extend_from_slice(&bytes),
            }
        }
    }
}

/// Refuses a command the guest could not find, where that can be known on the host: in a
/// shared directory, or in the listing of a busyroot image (the `rootfs.tar` beside it).
/// Without such a listing the guest's shell has the last word (exit status 127).
fn check_command_exists(
    program: &str,
    image: &Path,
    shares: &[Share],
    layer: Option<&Manifest>,
) -> Result<()> {
    let candidates: Vec<String> = if program.starts_with('/') {
        vec![program.to_string()]
    } else if program.contains('/') {
        return Ok(());
    } else {
        ["/bin", "/sbin", "/usr/bin", "/usr/sbin"]
            .iter()
            .map(|d| format!("{d}/{program}"))
            .collect()
    };
    for candidate in &candidates {
        for share in shares {
            if let Some(rest) = candidate.strip_prefix(&share.guest) {
                if rest.is_empty() || rest.starts_with('/') {
                    let on_host = share.host.join(rest.trim_start_matches('/'));
                    if on_host.exists() {
                        return Ok(());
                    }
                }
            }
        }
    }
    let in_layer = |c: &String| {
        let path = ImagePath::parse(c);
        layer.zip(path).is_some_and(|(l, p)| l.get(&p).is_some())
    };
    if candidates.iter().any(in_layer) {
        return Ok(());
    }
    let Some(listing) = image.parent().map(|d| d.join("rootfs.tar")).filter(|t| t.is_file()) else {
        return Ok(());
    };
    let wanted: Vec<&str> = candidates.iter().map(|c| c.trim_start_matches('/')).collect();
    if tar_lists_any(&listing, &wanted)? {
        return Ok(());
    }
    let shared: Vec<String> =
        shares.iter().map(|s| format!("`{}` (from `{}`)", s.guest, s.host.display())).collect();
    Err(Error::Other(format!(
        "`{program}` is not in the guest: looked up {} in the image (as listed by `{}`){}; \
         share the host directory that holds it, or add it to the image with an overlay",
        candidates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "),
        listing.display(),
        if shared.is_empty() {
            ", and nothing is shared".to_string()
        } else {
            format!(" and in the shared directories {}", shared.join(", "))
        }
    )))
}

/// Whether the tar archive `path` lists any of `wanted` (paths without a leading `/`). It
/// stops at the first found and seeks past file contents rather than reading them.
fn tar_lists_any(path: &Path, wanted: &[&str]) -> Result<bool> {
    let file = std::fs::File::open(path).with_path("open", path)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    for entry in archive.entries_with_seek().with_path("read", path)? {
        let entry = entry.with_path("read", path)?;
        let name = entry.path_bytes();
        let name = name.strip_prefix(b"./").unwrap_or(&name);
        let name = name.strip_prefix(b"/").unwrap_or(name);
        let name = name.strip_suffix(b"/").unwrap_or(name);
        if wanted.iter().any(|w| w.as_bytes() == name) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_is_searched_past_file_contents_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let listing = dir.path().join("rootfs.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&listing).unwrap());
        for (name, size) in [("./bin/busybox", 70_000), ("./usr/bin/unlink", 0)] {
            let mut header = tar::Header::new_gnu();
            header.set_size(size as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, name, &vec![7u8; size][..]).unwrap();
        }
        builder.finish().unwrap();
        drop(builder);
        assert!(tar_lists_any(&listing, &["usr/bin/unlink"]).unwrap());
        assert!(tar_lists_any(&listing, &["sbin/unlink", "bin/busybox"]).unwrap());
        assert!(!tar_lists_any(&listing, &["bin/unlink", "usr/bin"]).unwrap());
    }

    #[test]
    fn a_fresh_work_dir_is_never_one_an_earlier_process_of_the_same_id_left() {
        let first = fresh_work_dir().unwrap();
        // The names the next runs of this process would take, left behind with a file in them
        // (by another user, in the CI failure this guards against).
        let left: Vec<PathBuf> = (1..=5)
            .map(|k| {
                let name = first.file_name().unwrap().to_str().unwrap();
                let (stem, n) = name.rsplit_once('-').unwrap();
                let dir = first.with_file_name(format!("{stem}-{}", n.parse::<u32>().unwrap() + k));
                std::fs::create_dir(&dir).unwrap();
                std::fs::write(dir.join("boot.cpio"), b"stale").unwrap();
                dir
            })
            .collect();
        let next = fresh_work_dir().unwrap();
        assert!(!left.contains(&next), "{} was reused", next.display());
        assert_eq!(std::fs::read_dir(&next).unwrap().count(), 0, "a fresh directory is empty");
        for dir in left.iter().chain([&first, &next]) {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    /// The kernel command line `prepare` gives a kernel whose `config-<version>` has `smp`,
    /// booted under `accel`.
    fn cmdline(smp: &str, accel: AccelRequest) -> Result<String> {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinuz-6.1.0-t");
        std::fs::write(&kernel, b"").unwrap();
        std::fs::write(dir.path().join("config-6.1.0-t"), format!("CONFIG_64BIT=y\n{smp}\n"))
            .unwrap();
        std::fs::write(dir.path().join("rootfs.cpio.gz"), b"").unwrap();
        let mut vm = Vm::new(Arch::X86_64, &kernel);
        vm.initramfs(dir.path().join("rootfs.cpio.gz")).work_dir(dir.path().join("run"));
        vm.accel(accel).append("x=1");
        vm.prepare(None, &Quiet).map(|(spec, _)| spec.kernel_cmdline())
    }

    #[test]
    fn only_a_uniprocessor_kernel_under_tcg_leaves_the_apic_timer_uncalibrated() {
        let up = cmdline("# CONFIG_SMP is not set", AccelRequest::Tcg).unwrap();
        assert!(up.ends_with("panic=-1 noapictimer x=1"), "{up}");
        let smp = cmdline("CONFIG_SMP=y", AccelRequest::Tcg).unwrap();
        assert!(smp.ends_with("panic=-1 x=1"), "{smp}");
        // Under KVM, on a host that can run it, the calibration costs nothing.
        if let Ok(kvm) = cmdline("# CONFIG_SMP is not set", AccelRequest::Kvm) {
            assert!(kvm.ends_with("panic=-1 x=1"), "{kvm}");
        }
    }
}
