//! Checks: shell commands run in the guest with a regular expression their output must
//! match, the standard plan every boot runs in check mode, and the timeouts of each phase.

use std::time::Duration;

use regex::{Regex, RegexBuilder};

use super::channel::Input;
use super::event::CheckResult;
use super::{Accel, ExtraCheck, Root, VmSpec};
use crate::config::Workspace;
use crate::error::{Error, Result};

/// What a run does in the guest after the boot.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPlan {
    /// The line that means init is done (a substring match).
    pub banner: String,
    /// Phase timeouts; `command` bounds each check.
    pub timeouts: Timeouts,
    /// Checks, run in order before the payload command.
    pub checks: Vec<Check>,
    /// Whether to run `e2fsck -fn` on a disk image after the guest powered off (check mode).
    pub fsck: bool,
    /// Kernel modules to load first, as guest paths, dependencies first.
    pub modules: Vec<String>,
    /// The payload: a program and its arguments, run as root once init is up.
    pub command: Option<Vec<String>>,
    /// How long the payload may run. Default: no limit.
    pub command_timeout: Option<Duration>,
    /// Whether the payload prints TAP or KTAP, to be reported one case per test point.
    pub tap: bool,
    /// What the payload reads on stdin (over virtio-serial ports; the serial relay gives it
    /// `/dev/null`).
    pub stdin: Input,
    /// The guest directory the payload starts in. Default: the first share's, else `/`.
    pub dir: Option<String>,
}

/// How long each phase may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From starting the VMM to the banner.
    pub boot: Duration,
    /// For one check command to finish.
    pub command: Duration,
    /// From the shutdown command to the VMM's exit.
    pub shutdown: Duration,
}

impl Timeouts {
    /// The defaults for `accel` (generous under TCG, tighter under KVM), with the boot
    /// timeout replaced by `boot_secs` if given, all multiplied by `scale`.
    pub fn new(accel: Accel, boot_secs: Option<u64>, scale: f64) -> Timeouts {
        let (boot, command, shutdown) = match accel {
            Accel::Tcg => (120, 30, 60),
            Accel::Kvm => (30, 10, 20),
        };
        let scaled = |secs: u64| Duration::from_secs_f64(secs as f64 * scale);
        Timeouts {
            boot: scaled(boot_secs.unwrap_or(boot)),
            command: scaled(command),
            shutdown: scaled(shutdown),
        }
    }

    /// [`Timeouts::new`] with the scale from `$BUSYROOT_TIMEOUT_SCALE` (default 1), for
    /// slow CI machines.
    pub fn from_env(accel: Accel, boot_secs: Option<u64>) -> Result<Timeouts> {
        let scale = match std::env::var("BUSYROOT_TIMEOUT_SCALE") {
            Ok(s) if !s.trim().is_empty() => match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => v,
                _ => {
                    return Err(Error::Other(format!(
                        "$BUSYROOT_TIMEOUT_SCALE is `{s}`; set it to a positive number such as 2"
                    )))
                }
            },
            _ => 1.0,
        };
        Ok(Timeouts::new(accel, boot_secs, scale))
    }
}

/// One command run in the guest and the regular expression its output must match. Made only
/// through [`Check::new`], so its expectation is always a valid regular expression.
#[derive(Debug, Clone)]
pub struct Check {
    name: String,
    command: String,
    expect: Regex,
    require_success: bool,
}

impl PartialEq for Check {
    fn eq(&self, other: &Check) -> bool {
        (&self.name, &self.command, self.expect.as_str(), self.require_success)
            == (&other.name, &other.command, other.expect.as_str(), other.require_success)
    }
}

impl Check {
    /// A check; fails if `command` is not one line of text or `expect` is not a valid
    /// regular expression (searched for in the output in multi-line mode). With
    /// `require_success` the command must also exit with status 0.
    pub fn new(name: &str, command: &str, expect: &str, require_success: bool) -> Result<Check> {
        if command.trim().is_empty() || command.chars().any(char::is_control) {
            return Err(Error::Other(format!(
                "check `{name}`: the command must be one non-empty line without tabs or \
                 control characters, got {command:?}"
            )));
        }
        let expect = RegexBuilder::new(expect).multi_line(true).build().map_err(|e| {
            Error::Other(format!("check `{name}`: invalid regular expression `{expect}`: {e}"))
        })?;
        Ok(Check { name: name.to_string(), command: command.to_string(), expect, require_success })
    }

    /// A user's check: named after its command unless it has a name; the exit status is
    /// not looked at (append `; echo status=$?` to the command to check it).
    pub fn from_extra(extra: &ExtraCheck) -> Result<Check> {
        let name = extra.name.clone().unwrap_or_else(|| extra.command.clone());
        Check::new(&name, &extra.command, &extra.expect, false)
    }

    /// The checks `ws`'s configuration adds to the standard ones: `run.checks`, then those of
    /// `run.checks-file` (relative to the workspace root).
    pub fn configured(ws: &Workspace) -> Result<Vec<Check>> {
        let mut extras = ws.config.run.checks.clone();
        if let Some(file) = &ws.config.run.checks_file {
            extras.extend(super::load_checks_file(&ws.path(file))?);
        }
        extras.iter().map(Check::from_extra).collect()
    }

    /// Shown in the output and the reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One line of shell, run in a subshell with stdin from `/dev/null` and stderr merged
    /// into stdout, which is a pipe (not the console).
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The regular expression the output must match.
    pub fn expect(&self) -> &str {
        self.expect.as_str()
    }

    /// Whether the command must also exit with status 0.
    pub fn requires_success(&self) -> bool {
        self.require_success
    }

    /// Judges what the guest printed and the exit status.
    pub(crate) fn judge(&self, output: String, status: i32, duration: Duration) -> CheckResult {
        let status_ok = !self.require_success || status == 0;
        let mut expected = format!("output matching `{}`", self.expect.as_str());
        if self.require_success {
            expected.push_str(" and exit status 0");
        }
        let passed = self.expect.is_match(&output) && status_ok;
        let mut shown = output;
        if !status_ok {
            shown.push_str(&format!("\n(exit status {status})"));
        }
        CheckResult {
            name: self.name.clone(),
            command: self.command.clone(),
            expected,
            output: shown,
            passed,
            skipped: None,
            duration,
        }
    }
}

impl RunPlan {
    /// The built-in checks for `spec`: kernel version, root file system type and
    /// writability, the standard mounts, `/dev/console` and `/dev/null`, `id -u`, the
    /// `hostname`, a few applets, and `uname -m`.
    pub fn standard(spec: &VmSpec, hostname: &str, timeouts: Timeouts) -> RunPlan {
        let mut checks = Vec::new();
        let mut add = |name: &str, command: &str, expect: &str| {
            checks
                .push(Check::new(name, command, expect, true).expect("built-in checks are valid"));
        };
        add("kernel version", "uname -r", r"\S");
        let root_type = match spec.root {
            Root::Disk { .. } => ("/ is ext4", "^ext4$"),
            Root::Initramfs(_) => ("/ is rootfs or tmpfs", "^(rootfs|tmpfs)$"),
        };
        add(root_type.0, &fstype_of("/"), root_type.1);
        add(
            "/ is writable",
            "echo busyroot-rw > /.busyroot-rw && sync && cat /.busyroot-rw && rm /.busyroot-rw",
            "^busyroot-rw$",
        );
        for (dir, fstype) in
            [("/proc", "proc"), ("/sys", "sysfs"), ("/tmp", "tmpfs"), ("/dev/pts", "devpts")]
        {
            add(&format!("{fstype} on {dir}"), &fstype_of(dir), &format!("^{fstype}$"));
        }
        // `ls -l` prints "crw-------  1 root root  5,  1 Jan  1 00:00 /dev/console".
        for (node, major, minor) in [("/dev/console", 5, 1), ("/dev/null", 1, 3)] {
            add(
                &format!("{node} is character device {major},{minor}"),
                &format!("ls -l {node}"),
                &format!(r"^c\S*\s+\d+\s+\S+\s+\S+\s+{major},\s*{minor}\s"),
            );
        }
        add("id -u is 0", "id -u", "^0$");
        add(
            &format!("hostname is {hostname}"),
            "hostname",
            &format!("^{}$", regex::escape(hostname)),
        );
        add("ls runs", "ls /", "^etc$");
        add("mount runs", "mount", "^proc on /proc type proc ");
        add("sh -c runs", "sh -c 'echo $((6 * 7))'", "^42$");
        let uname_m = spec.arch.info().uname_m;
        add(&format!("uname -m is {uname_m}"), "uname -m", &format!("^{uname_m}$"));
        let fsck = matches!(spec.root, Root::Disk { .. });
        RunPlan { checks, fsck, command: None, ..RunPlan::command(Vec::new(), timeouts) }
    }

    /// Appends the user's checks.
    pub fn add_extra(&mut self, extra: &[ExtraCheck]) -> Result<()> {
        for e in extra {
            self.checks.push(Check::from_extra(e)?);
        }
        Ok(())
    }
}

/// Shell that prints the type of the file system mounted at `dir` (the last mount wins,
/// as a disk root is mounted over the initial rootfs), with nothing but shell built-ins.
fn fstype_of(dir: &str) -> String {
    format!(
        "t=none; while read -r dev mnt type rest; do [ \"$mnt\" = {dir} ] && t=$type; \
         done </proc/mounts; echo $t"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::vm::{RootBus, RunPlan};

    fn spec(root: Root) -> VmSpec {
        let mut spec = VmSpec::new(Arch::X86_64, "/k".into(), root, "/t/console.log".into());
        spec.cpus = 1;
        spec
    }

    #[test]
    fn timeouts_scale() {
        let t = Timeouts::new(Accel::Tcg, None, 1.0);
        assert_eq!(t.boot, Duration::from_secs(120));
        let t = Timeouts::new(Accel::Kvm, Some(10), 2.5);
        assert_eq!(t.boot, Duration::from_secs(25));
        assert_eq!(t.command, Duration::from_secs(25));
    }

    #[test]
    fn standard_plan_depends_on_root() {
        let t = Timeouts::new(Accel::Tcg, None, 1.0);
        let disk = RunPlan::standard(
            &spec(Root::Disk { image: "/i".into(), bus: RootBus::Nvme }),
            "h.x",
            t,
        );
        assert!(disk.fsck);
        assert!(disk.checks.iter().any(|c| c.name() == "/ is ext4"));
        assert!(disk.checks.iter().any(|c| c.expect() == r"^h\.x$"));
        let initramfs = RunPlan::standard(&spec(Root::Initramfs("/i".into())), "h", t);
        assert!(!initramfs.fsck);
        assert!(initramfs.checks.iter().any(|c| c.expect() == "^(rootfs|tmpfs)$"));
    }

    #[test]
    fn device_regexes_match_busybox_ls() {
        let plan = RunPlan::standard(
            &spec(Root::Initramfs("/i".into())),
            "h",
            Timeouts::new(Accel::Tcg, None, 1.0),
        );
        let console = plan.checks.iter().find(|c| c.command() == "ls -l /dev/console").unwrap();
        let re = &console.expect;
        assert!(
            re.is_match("crw-------    1 root     root        5,   1 Jan  1 00:00 /dev/console")
        );
        assert!(
            !re.is_match("crw-------    1 root     root        4,  64 Jan  1 00:00 /dev/console")
        );
        assert!(
            !re.is_match("-rw-r--r--    1 root     root        5,   1 Jan  1 00:00 /dev/console")
        );
    }

    #[test]
    fn banner_and_hostname_are_the_skeletons() {
        let rcs = include_str!("../../rootfs-skel/etc/init.d/rcS");
        assert!(rcs.contains(&format!("echo \"{}\"", super::super::BANNER)), "{rcs}");
        let hostname = include_str!("../../rootfs-skel/etc/hostname");
        assert_eq!(hostname.trim(), crate::vm::RunConfig::default().hostname);
    }

    #[test]
    fn extra_checks_are_validated() {
        let ok = ExtraCheck { name: None, command: "uname -s".into(), expect: "^Linux$".into() };
        assert_eq!(Check::from_extra(&ok).unwrap().name(), "uname -s");
        let bad_re = ExtraCheck { expect: "(".into(), ..ok.clone() };
        assert!(Check::from_extra(&bad_re).unwrap_err().to_string().contains("regular expression"));
        let two_lines = ExtraCheck { command: "true\ntrue".into(), ..ok };
        assert!(Check::from_extra(&two_lines)
            .unwrap_err()
            .to_string()
            .contains("one non-empty line"));
    }
}
