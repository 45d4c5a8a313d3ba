//! The virtio-serial channel: four named ports on one `virtio-serial-pci` device, each backed
//! by a Unix socket the host connects to once the VMM has started, and the guest init that
//! runs the payload on them (`/busyroot/init`, BusyBox shell only).
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

use super::Link;
use crate::host::fs::connect_unix;
use crate::vm::process::VmProcess;

/// Where the payload init lives in the guest.
pub(crate) const INIT: &str = "/busyroot/init";

/// Where the payload init's fstab lives in the guest.
const FSTAB: &str = "/busyroot/fstab";

/// What the payload init mounts first, in one `mount -a` (each program it starts costs
/// milliseconds under emulation): a file, since `/proc` is not there yet for a here-document.
const FSTAB_LINES: &str = "proc /proc proc defaults 0 0
dev /dev devtmpfs mode=0755,nosuid 0 0
sysfs /sys sysfs defaults 0 0
tmpfs /tmp tmpfs mode=1777,nosuid 0 0
";

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

/// Writes the payload init for `plan` and its fstab into `dir`.
pub(crate) fn write_init(plan: &InitPlan, dir: &Path) -> crate::error::Result<Vec<InitFile>> {
    let init = dir.join("busyroot-init");
    let fstab = dir.join("busyroot-fstab");
    crate::host::fs::write_file(&init, init_script(plan).as_bytes())?;
    crate::host::fs::write_file(&fstab, FSTAB_LINES.as_bytes())?;
    Ok(vec![(INIT, init, 0o755), (FSTAB, fstab, 0o644)])
}

/// The guest init for `plan`: a POSIX shell script for BusyBox `sh`.
fn init_script(plan: &InitPlan) -> String {
    let q = crate::vm::shell_quote;
    let mut setup = String::new();
    for module in plan.modules {
        setup.push_str(&format!("insmod {} || fail $? insmod {}\n", q(module), q(module)));
    }
    for (tag, dir, fstype, options) in plan.mounts {
        setup.push_str(&format!(
            "mkdir -p {d} && mount -t {fstype} -o {options} {tag} {d} || fail $? mount {d}\n",
            d = q(dir)
        ));
    }
    let command: Vec<String> = plan.argv.iter().map(|w| q(w)).collect();
    let exports: String =
        plan.env.iter().map(|(k, v)| format!("    export {k}={}\n", q(v))).collect();
    // An initramfs has nothing to write back: the power may go off at once.
    let remount = if plan.disk { "sync\nmount -o remount,ro / 2>/dev/null\n" } else { "" };
    INIT_TEMPLATE
        .replace("@SETUP@\n", &setup)
        .replace("@DIR@", &q(plan.dir))
        .replace("@COMMAND@", &command.join(" "))
        .replace("@REMOUNT@\n", remount)
        .replace("@ENV@\n", &exports)
        .replace("@FSTAB@", FSTAB)
}

const INIT_TEMPLATE: &str = r#"#!/bin/sh
# busyroot's init (PID 1) for one payload run over virtio-serial ports, written for this run:
# mount what a program expects, load modules and mount shares, find the ports by name, run the
# command with its streams on them, report its status on the port only this script holds, and
# reset (QEMU then exits). Interactive boots and checks use /sbin/init instead.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root
# Each program started here costs milliseconds under emulation: one mount for all but devpts,
# whose mount point appears only once devtmpfs is on /dev.
mount -a -T @FSTAB@ 2>/dev/null
mkdir -p /dev/pts && mount -t devpts -o gid=5,mode=620 devpts /dev/pts 2>/dev/null
[ -c /dev/null ] || mdev -s
S=
fail() {
    s=$1; shift
    echo "busyroot init: $* failed (exit status $s)" >/dev/console
    [ -n "$S" ] && echo "x $s" >&9
    exec reboot -f
}
@SETUP@
n=0
while :; do
    for f in /sys/class/virtio-ports/*/name; do
        [ -r "$f" ] || continue
        read -r name <"$f"
        d=${f%/name}
        d=/dev/${d##*/}
        case $name in
        busyroot.stdin) I=$d ;;
        busyroot.stdout) O=$d ;;
        busyroot.stderr) E=$d ;;
        busyroot.status) P=$d ;;
        esac
    done
    [ -c "$I" ] && [ -c "$O" ] && [ -c "$E" ] && [ -c "$P" ] && break
    n=$((n + 1))
    # Ports come moments after their driver loads: look again at once a few dozen times, as
    # starting usleep costs more than that under emulation; then every 5 ms, for 10 s.
    [ $n -le 50 ] && continue
    [ $n -gt 2050 ] && fail 1 "finding the busyroot.* virtio-serial ports"
    usleep 5000
done
exec 9<>"$P" || fail $? "opening $P"
S=1
read -r T IN <&9
# Every port stays open here, so the payload can open none of them: not the status port, and
# not the stdin port either, which the host may have ended (a write there would block).
exec 3>"$O" 4>"$E" 5<"$I"
if [ "$IN" = 1 ]; then exec 6<&5; else exec 6</dev/null; fi
echo r >&9
(
    exec 3>&- 4>&- 5<&- 6<&- 9>&-
@ENV@
    cd @DIR@ && exec @COMMAND@
) <&6 >&3 2>&4
s=$?
printf %s "$T" >&3
printf %s "$T" >&4
echo "s $s" >&9
# The host says when both streams reached their tag: data still queued in the VMM would be
# lost if the power went off first.
read -r _ <&9
@REMOUNT@
echo d >&9
exec reboot -f
"#;

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
    fn init_script_runs_the_command_quoted() {
        let modules = ["/lib/modules/v/virtio_console.ko".to_string()];
        let mounts = [("br0".into(), "/mnt/a b".into(), "9p".into(), "trans=virtio".into())];
        let argv = ["printf".to_string(), "%s\\n".into(), "it's".into()];
        let env = [("RUST_BACKTRACE".to_string(), "1 2".to_string())];
        let plan = InitPlan {
            modules: &modules,
            mounts: &mounts,
            dir: "/mnt/a b",
            env: &env,
            argv: &argv,
            disk: true,
        };
        let script = init_script(&plan);
        assert!(script.contains("insmod /lib/modules/v/virtio_console.ko || fail"), "{script}");
        assert!(
            script.contains("mkdir -p '/mnt/a b' && mount -t 9p -o trans=virtio br0 '/mnt/a b'")
        );
        assert!(script.contains(r#"cd '/mnt/a b' && exec printf '%s\n' 'it'\''s'"#), "{script}");
        assert!(script.contains("mount -o remount,ro /"));
        assert!(script.contains("    export RUST_BACKTRACE='1 2'\n"), "{script}");
        assert!(!script.contains('@'), "every placeholder filled: {script}");
    }
}
