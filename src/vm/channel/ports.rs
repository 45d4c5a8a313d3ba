//! The virtio-serial channel: four named ports on one `virtio-serial-pci` device, each backed
//! by a Unix socket the host connects to once the VMM has started, and the guest init that
//! runs the payload on them (`/busyroot/init`, built from `init.c`, with the run's plan).
//!
//! The runner opens the status port before it starts the payload and does not pass it on;
//! Linux lets one descriptor hold a port open at a time, so the payload cannot open it again,
//! and nothing it writes anywhere can read as a status. The host sends the boot's random tag
//! down the status port; after the payload exits, the runner writes it to the stdout and
//! stderr ports (which it still holds) to end each stream, then its status, and resets the
//! machine (QEMU runs with -no-reboot: it exits) once the host has read both streams to their
//! tag.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use xshell::{cmd, Shell};

use super::Link;
use crate::arch::Arch;
use crate::error::{Error, Result};
use crate::host::exec::run_captured;
use crate::host::fs::{connect_unix, sha256_bytes};
use crate::host::toolchain::Toolchain;
use crate::vm::process::VmProcess;

/// Where the payload init lives in the guest.
pub(crate) const INIT: &str = "/busyroot/init";

/// Where the payload init finds what to run.
const PLAN: &str = "/busyroot/plan";

/// How the payload init's lines on the console start when a set-up step failed (`init.c`).
pub(crate) const FAILURE: &str = "busyroot init: ";

/// The plan's format, which `init.c` checks first.
const PLAN_VERSION: &str = "1";

/// The payload init's source: C, built static for the guest's architecture by the compiler
/// that builds BusyBox, so that the guest needs nothing else.
const INIT_SOURCE: &str = include_str!("init.c");

/// How the init is compiled: static, without a C library (it brings its own system calls),
/// small, without symbols.
const INIT_CFLAGS: [&str; 10] = [
    "-std=gnu99",
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-pie",
    "-no-pie",
    "-Os",
    "-s",
];

/// The ports, in the order QEMU creates them.
const PORTS: [&str; 4] = ["stdin", "stdout", "stderr", "status"];

/// The Unix sockets behind the ports of a run whose files go in `run_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sockets {
    run_dir: PathBuf,
}

impl Sockets {
    pub(crate) fn new(run_dir: &Path) -> Sockets {
        Sockets { run_dir: run_dir.to_path_buf() }
    }

    fn path(&self, port: &str) -> PathBuf {
        crate::host::fs::socket_path(&self.run_dir, &format!("busyroot.{port}.sock"))
    }

    /// Removes the sockets.
    pub(crate) fn remove(&self) {
        for port in PORTS {
            let _ = std::fs::remove_file(self.path(port));
        }
    }

    /// QEMU's arguments: the device, and per port a listening socket (that does not wait for
    /// us) and the named port on it.
    pub(crate) fn qemu_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["-device".into(), "virtio-serial-pci,id=busyroot-ports".into()];
        for (n, port) in PORTS.iter().enumerate() {
            let mut chardev = OsString::from(format!("socket,id=busyroot-{port},path="));
            chardev.push(crate::vm::qemu_escape(&self.path(port)));
            chardev.push(",server=on,wait=off");
            let device = format!(
                "virtserialport,bus=busyroot-ports.0,nr={},chardev=busyroot-{port},name=busyroot.{port}",
                n + 1
            );
            args.extend(["-chardev".into(), chardev, "-device".into(), device.into()]);
        }
        args
    }

    /// Clears old sockets, before the VMM creates them.
    pub(crate) fn prepare(&self) -> std::io::Result<()> {
        for port in PORTS {
            let _ = std::fs::remove_file(self.path(port));
        }
        Ok(())
    }

    /// Connects to every port once the VMM listens; `None` if the VMM exited or `deadline`
    /// passed first.
    pub(crate) fn connect(&self, vm: &mut VmProcess, deadline: Instant) -> Option<Link> {
        let waiting = |vm: &mut VmProcess| vm.try_wait().is_none() && Instant::now() < deadline;
        let [stdin, stdout, stderr, status] =
            PORTS.map(|port| connect_unix(&self.path(port), |_| waiting(vm)).ok());
        let (stdin, stdout, stderr, status) = (stdin?, stdout?, stderr?, status?);
        let status_out = status.try_clone().ok()?;
        Some(Link {
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            stderr: Box::new(stderr),
            status_in: Box::new(status),
            status_out: Box::new(status_out),
        })
    }
}

/// What the guest init does before the payload: modules to load (guest paths, dependencies
/// first) and shares to mount (tag, directory, type, options); then the payload itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InitPlan<'a> {
    pub(crate) modules: &'a [String],
    pub(crate) mounts: &'a [(String, String, String, String)],
    /// The directory the payload starts in.
    pub(crate) dir: &'a str,
    /// Variables exported to the payload (names already checked).
    pub(crate) env: &'a [(String, String)],
    pub(crate) argv: &'a [String],
    /// Whether the root is a disk, to be made read-only before the power goes off.
    pub(crate) disk: bool,
}

/// A file of the payload init: its place in the guest, its path on the host, its mode.
pub(crate) type InitFile = (&'static str, PathBuf, u32);

/// The payload init for `arch` (compiled, or found in `cache`) and the plan for `plan`,
/// written into `dir`.
pub(crate) fn write_init(
    sh: &Shell,
    arch: Arch,
    plan: &InitPlan,
    dir: &Path,
    cache: &Path,
) -> Result<Vec<InitFile>> {
    let words = plan_words(plan)?;
    let init = compiled_init(sh, arch, cache)?;
    let file = dir.join("busyroot-plan");
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.bytes().chain([0])).collect();
    crate::host::fs::write_file(&file, bytes)?;
    Ok(vec![(INIT, init, 0o755), (PLAN, file, 0o644)])
}

/// The plan as `init.c` reads it, one string each: the version, whether the root is a disk,
/// the directory, then counted groups: modules; shares (tag, directory, type, options);
/// variables (name, value); the command's words. A string cannot hold a NUL byte.
fn plan_words(plan: &InitPlan) -> Result<Vec<String>> {
    let mut words = vec![PLAN_VERSION.to_string(), u8::from(plan.disk).to_string()];
    words.push(plan.dir.to_string());
    words.push(plan.modules.len().to_string());
    words.extend(plan.modules.iter().cloned());
    words.push(plan.mounts.len().to_string());
    for (tag, dir, fstype, options) in plan.mounts {
        words.extend([tag, dir, fstype, options].map(String::clone));
    }
    words.push(plan.env.len().to_string());
    for (name, value) in plan.env {
        words.extend([name.clone(), value.clone()]);
    }
    words.push(plan.argv.len().to_string());
    words.extend(plan.argv.iter().cloned());
    if let Some(word) = words.iter().find(|w| w.contains('\0')) {
        return Err(Error::Other(format!(
            "the command, a variable or a path of the run holds a NUL byte ({word:?}), which no \
             program in the guest can be given; remove it"
        )));
    }
    Ok(words)
}

/// The payload init built for `arch`, kept in `cache/payload-init/` under a name that its
/// source, flags and compiler (the file it runs from) decide; built there (about 0.1 s) when
/// it is not.
fn compiled_init(sh: &Shell, arch: Arch, cache: &Path) -> Result<PathBuf> {
    let toolchain = Toolchain::find(arch)?;
    let compiler = match &toolchain.executable() {
        Some(path) => crate::host::fs::file_identity(path)?,
        None => String::new(),
    };
    let key = sha256_bytes(
        format!("{INIT_SOURCE}\n{INIT_CFLAGS:?}\n{arch}\n{}\n{compiler}", toolchain.cc).as_bytes(),
    );
    let dir = cache.join("payload-init");
    let init = dir.join(format!("init-{arch}-{}", &key[..16]));
    // Another process builds into temporaries of its own; threads of this one take turns.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if init.is_file() {
        return Ok(init);
    }
    let source = dir.join(format!("init-{arch}-{}.c", &key[..16]));
    crate::host::fs::write_file(&source, INIT_SOURCE)?;
    let (cc, flags) = (&toolchain.cc, INIT_CFLAGS);
    crate::host::fs::write_atomically(&init, |tmp| {
        run_captured(cmd!(sh, "{cc} {flags...} -o {tmp} {source}").quiet()).map(drop)
    })?;
    Ok(init)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_arguments_name_every_port() {
        let sockets = Sockets::new(Path::new("/run/x"));
        let line: Vec<String> =
            sockets.qemu_args().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(line[1], "virtio-serial-pci,id=busyroot-ports");
        assert_eq!(
            line[3],
            "socket,id=busyroot-stdin,path=/run/x/busyroot.stdin.sock,server=on,wait=off"
        );
        assert_eq!(
            line[17],
            "virtserialport,bus=busyroot-ports.0,nr=4,chardev=busyroot-status,name=busyroot.status"
        );
        // A deep run directory's sockets are elsewhere, at the same paths for QEMU's
        // arguments and for the host's connection, and apart from another run's.
        let deep = Path::new("/a").join("b".repeat(120));
        let path = Sockets::new(&deep).path("stdout");
        assert!(path.as_os_str().len() < 108, "{}", path.display());
        assert_eq!(path, Sockets::new(&deep).path("stdout"));
        assert_ne!(path, Sockets::new(&deep.join("c")).path("stdout"));
    }

    #[test]
    fn the_plan_lists_every_word_in_counted_groups() {
        let modules = ["/lib/modules/v/virtio_console.ko".to_string()];
        let mounts = [("br0".into(), "/mnt/a b".into(), "9p".into(), "trans=virtio".into())];
        let argv = ["printf".to_string(), "%s\\n".into(), "it's".into()];
        let env = [("RUST_BACKTRACE".to_string(), "1 2".to_string())];
        let mut plan = InitPlan {
            modules: &modules,
            mounts: &mounts,
            dir: "/mnt/a b",
            env: &env,
            argv: &argv,
            disk: true,
        };
        let words = plan_words(&plan).unwrap();
        let expected = [
            "1",
            "1",
            "/mnt/a b",
            "1",
            "/lib/modules/v/virtio_console.ko",
            "1",
            "br0",
            "/mnt/a b",
            "9p",
            "trans=virtio",
            "1",
            "RUST_BACKTRACE",
            "1 2",
            "3",
            "printf",
            "%s\\n",
            "it's",
        ];
        assert_eq!(words, expected);
        let argv = ["echo".to_string(), "a\0b".into()];
        plan.argv = &argv;
        let err = plan_words(&plan).unwrap_err().to_string();
        assert!(err.contains("NUL byte") && err.contains("a\\0b"), "{err}");
    }

    #[test]
    fn the_init_speaks_as_the_host_reads_it() {
        assert!(INIT_SOURCE.contains(&format!("add(&line, \"{FAILURE}\");")));
        assert!(INIT_SOURCE.contains(&format!("#define PLAN \"{PLAN}\"")));
        assert!(INIT_SOURCE.contains(&format!("#define PLAN_VERSION \"{PLAN_VERSION}\"")));
        for port in PORTS {
            assert!(INIT_SOURCE.contains(&format!("\"busyroot.{port}\"")), "{port}");
        }
    }

    #[test]
    fn the_init_is_built_once_static_for_its_architecture() {
        let arch = Arch::host().unwrap_or(Arch::X86_64);
        if Toolchain::find(arch).is_err() {
            crate::testing::skip("the_init_is_built_once", "no C compiler for the host");
            return;
        }
        let cache = tempfile::tempdir().unwrap();
        let sh = Shell::new().unwrap();
        let init = compiled_init(&sh, arch, cache.path()).unwrap();
        let elf = crate::host::elf::summary(&std::fs::read(&init).unwrap()).unwrap();
        assert_eq!(elf.machine, arch.info().elf_machine);
        assert!(!elf.dynamic, "static: no program interpreter");
        // Kept: a second run finds the same file and builds nothing.
        let built = std::fs::metadata(&init).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(compiled_init(&sh, arch, cache.path()).unwrap(), init);
        assert_eq!(std::fs::metadata(&init).unwrap().modified().unwrap(), built);
        // Gone from the cache, it is built again, once, by threads of one process asking
        // at the same time (their temporaries would share a name).
        std::fs::remove_file(&init).unwrap();
        std::thread::scope(|scope| {
            let asks: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| compiled_init(&Shell::new().unwrap(), arch, cache.path())))
                .collect();
            for ask in asks {
                assert_eq!(ask.join().unwrap().unwrap(), init);
            }
        });
        assert!(init.is_file());
    }
}
