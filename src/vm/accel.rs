//! Choosing between KVM and TCG, and explaining the choice.
//!
//! A `/dev/kvm` that opens is not enough: some hosts (nested, paravirtualised ones) expose a
//! KVM device that cannot run an ordinary guest because the CPU lacks hardware
//! virtualisation. `auto` therefore also asks the CPU flags on x86.

use std::path::Path;
use std::str::FromStr;

use super::Choice;
use crate::arch::Arch;
use crate::error::{Error, Result};

/// The accelerator the guest runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's portable binary translator; slow but works everywhere.
    Tcg,
}

impl Accel {
    /// The name used on the command line and by QEMU's `-accel`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

display_as_name!(Accel);

/// `--accel`: an accelerator, or `auto` to use KVM only where it can work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelRequest {
    /// KVM when the guest arch is the host arch, `/dev/kvm` is usable and the CPU has
    /// hardware virtualisation; TCG otherwise.
    #[default]
    Auto,
    /// KVM, or an error explaining why it cannot work.
    Kvm,
    /// TCG.
    Tcg,
}

impl FromStr for AccelRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<AccelRequest, String> {
        match s {
            "auto" => Ok(AccelRequest::Auto),
            "kvm" => Ok(AccelRequest::Kvm),
            "tcg" => Ok(AccelRequest::Tcg),
            _ => Err(format!("unknown accelerator `{s}`; supported: auto, kvm, tcg")),
        }
    }
}

/// The state of `/dev/kvm` for this user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmDevice {
    /// There is no `/dev/kvm`.
    Missing,
    /// It exists but this user cannot both read and write it.
    NoAccess,
    /// It exists and is readable and writable.
    Usable,
}

/// What the host offers, as far as choosing an accelerator goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The host architecture, if busyroot knows it.
    pub arch: Option<Arch>,
    /// The state of `/dev/kvm`.
    pub kvm: KvmDevice,
    /// Whether `/proc/cpuinfo` shows one of the arch's hardware virtualisation flags
    /// (`kvm_cpu_flags` in the arch table: `vmx` or `svm` on x86). `None` where there is no
    /// such flag to look at.
    pub cpu_virtualisation: Option<bool>,
}

impl HostFacts {
    /// Looks at this host.
    pub fn probe() -> HostFacts {
        let arch = Arch::host();
        let flags = arch.map_or(&[][..], |a| a.info().kvm_cpu_flags);
        let cpu_virtualisation = (!flags.is_empty()).then(|| {
            std::fs::File::open("/proc/cpuinfo")
                .map(|info| cpuinfo_has_flag(std::io::BufReader::new(info), flags))
                .unwrap_or(false)
        });
        HostFacts { arch, kvm: kvm_device(Path::new("/dev/kvm")), cpu_virtualisation }
    }
}

fn kvm_device(path: &Path) -> KvmDevice {
    use std::os::unix::ffi::OsStrExt;
    if !path.exists() {
        return KvmDevice::Missing;
    }
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return KvmDevice::NoAccess;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let ok = unsafe { libc::access(c_path.as_ptr(), libc::R_OK | libc::W_OK) } == 0;
    if ok {
        KvmDevice::Usable
    } else {
        KvmDevice::NoAccess
    }
}

/// Whether the first `flags` line of `/proc/cpuinfo` lists one of `wanted` (on x86: `vmx` for
/// Intel, `svm` for AMD). Every processor lists the same; the rest is not read, as the kernel
/// writes each processor's block on demand, which on a large host takes milliseconds.
fn cpuinfo_has_flag(cpuinfo: impl std::io::BufRead, wanted: &[&str]) -> bool {
    let mut lines = cpuinfo.lines().map_while(|l| l.ok());
    lines.find(|l| l.starts_with("flags")).is_some_and(|l| {
        l.split_once(':')
            .is_some_and(|(_, flags)| flags.split_whitespace().any(|f| wanted.contains(&f)))
    })
}

/// Chooses the accelerator for a `guest` on this host; see `choose_accel_with`.
pub fn choose_accel(request: AccelRequest, guest: Arch) -> Result<Choice<Accel>> {
    choose_accel_with(request, guest, &HostFacts::probe())
}

/// Chooses the accelerator for a `guest` on a host described by `host`.
///
/// `auto` never fails: it falls back to TCG and says why. An explicit `kvm` fails when KVM
/// cannot possibly work (other architecture, no usable `/dev/kvm`) and only warns, in the
/// reason, when the CPU flags look wrong.
pub fn choose_accel_with(
    request: AccelRequest,
    guest: Arch,
    host: &HostFacts,
) -> Result<Choice<Accel>> {
    let tcg = |reason: String| Ok(Choice { value: Accel::Tcg, reason });
    let kvm = |reason: String| Ok(Choice { value: Accel::Kvm, reason });
    let host_name = host.arch.map_or("an unsupported architecture", Arch::name);
    let blocker = if host.arch != Some(guest) {
        Some(format!("the guest is {guest} but the host is {host_name}"))
    } else {
        match host.kvm {
            KvmDevice::Missing => Some("there is no /dev/kvm".to_string()),
            KvmDevice::NoAccess => Some(
                "/dev/kvm is not readable and writable by this user (join the `kvm` group)"
                    .to_string(),
            ),
            KvmDevice::Usable => None,
        }
    };
    let no_cpu_support = host.cpu_virtualisation == Some(false);
    let flags = host.arch.map_or(&[][..], |a| a.info().kvm_cpu_flags).join("/");
    match request {
        AccelRequest::Tcg => tcg("requested with --accel tcg".into()),
        AccelRequest::Kvm => match blocker {
            Some(why) => {
                Err(Error::Other(format!("cannot use KVM: {why}; use --accel tcg or --accel auto")))
            }
            None if no_cpu_support => kvm(format!(
                "requested with --accel kvm, although the CPU shows no {flags} flag, so the \
                 guest may fail to start"
            )),
            None => kvm("requested with --accel kvm".into()),
        },
        AccelRequest::Auto => match blocker {
            Some(why) => tcg(why),
            None if no_cpu_support => tcg(format!(
                "/dev/kvm exists but the CPU shows no {flags} flag (nested or paravirtualised \
                 KVM cannot run an ordinary guest)"
            )),
            None => {
                kvm(format!("the guest arch is the host arch ({guest}) and /dev/kvm is usable"))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(kvm: KvmDevice, virt: Option<bool>) -> HostFacts {
        HostFacts { arch: Some(Arch::X86_64), kvm, cpu_virtualisation: virt }
    }

    #[test]
    fn auto_uses_kvm_only_when_everything_fits() {
        let good = host(KvmDevice::Usable, Some(true));
        let c = choose_accel_with(AccelRequest::Auto, Arch::X86_64, &good).unwrap();
        assert_eq!(c.value, Accel::Kvm);

        // This machine: a /dev/kvm but no vmx/svm.
        let nested = host(KvmDevice::Usable, Some(false));
        let c = choose_accel_with(AccelRequest::Auto, Arch::X86_64, &nested).unwrap();
        assert_eq!(c.value, Accel::Tcg);
        assert!(c.reason.contains("vmx/svm"), "{}", c.reason);

        let c = choose_accel_with(AccelRequest::Auto, Arch::Aarch64, &good).unwrap();
        assert_eq!(c.value, Accel::Tcg);
        assert!(c.reason.contains("guest is aarch64"), "{}", c.reason);

        for dev in [KvmDevice::Missing, KvmDevice::NoAccess] {
            let c = choose_accel_with(AccelRequest::Auto, Arch::X86_64, &host(dev, Some(true)));
            assert_eq!(c.unwrap().value, Accel::Tcg);
        }

        // Non-x86 hosts have no flag to look at; /dev/kvm decides.
        let arm = HostFacts {
            arch: Some(Arch::Aarch64),
            kvm: KvmDevice::Usable,
            cpu_virtualisation: None,
        };
        assert_eq!(
            choose_accel_with(AccelRequest::Auto, Arch::Aarch64, &arm).unwrap().value,
            Accel::Kvm
        );
    }

    #[test]
    fn explicit_requests() {
        let none = host(KvmDevice::Missing, Some(true));
        let err = choose_accel_with(AccelRequest::Kvm, Arch::X86_64, &none).unwrap_err();
        assert!(err.to_string().contains("no /dev/kvm"), "{err}");
        let nested = host(KvmDevice::Usable, Some(false));
        let c = choose_accel_with(AccelRequest::Kvm, Arch::X86_64, &nested).unwrap();
        assert_eq!(c.value, Accel::Kvm);
        assert!(c.reason.contains("may fail"));
        let c = choose_accel_with(
            AccelRequest::Tcg,
            Arch::X86_64,
            &host(KvmDevice::Usable, Some(true)),
        );
        assert_eq!(c.unwrap().value, Accel::Tcg);
    }

    #[test]
    fn cpuinfo_flags() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        let none = "processor\t: 0\nflags\t\t: fpu vme hypervisor sse\nvmx flags\t: ept\n";
        let x86 = Arch::X86_64.info().kvm_cpu_flags;
        assert!(cpuinfo_has_flag(intel.as_bytes(), x86));
        assert!(cpuinfo_has_flag("flags : svm".as_bytes(), x86));
        assert!(!cpuinfo_has_flag(none.as_bytes(), x86));
    }
}
