//! Host directories shown to the guest: parsing `HOST[:GUEST][:ro]`, choosing virtio-9p or
//! virtiofs from what the kernel supports, and running `virtiofsd` for the latter.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::process::{self, VmProcess};
use super::{Choice, KernelConfig};
use crate::error::{Error, Result};

/// How a directory travels to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// virtio-9p: built into QEMU and kvmtool, no daemon.
    NineP,
    /// virtiofs: a `virtiofsd` daemon per share, and guest memory shared with it.
    Virtiofs,
}

impl Transport {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Transport::NineP => "9p",
            Transport::Virtiofs => "virtiofs",
        }
    }

    /// The kernel options (without `CONFIG_`) the guest needs, built in or as modules.
    pub fn symbols(self) -> &'static [&'static str] {
        match self {
            Transport::NineP => &["VIRTIO_PCI", "NET_9P", "NET_9P_VIRTIO", "9P_FS"],
            Transport::Virtiofs => &["VIRTIO_PCI", "FUSE_FS", "VIRTIO_FS"],
        }
    }

    /// The guest's `mount -t` type and options.
    pub(crate) fn mount(self, readonly: bool) -> (&'static str, String) {
        let mode = if readonly { "ro" } else { "rw" };
        match self {
            Transport::NineP => {
                ("9p", format!("trans=virtio,version=9p2000.L,msize=262144,{mode}"))
            }
            Transport::Virtiofs => ("virtiofs", mode.to_string()),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A share as the user asked for it: `HOST_DIR[:GUEST_DIR][:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRequest {
    /// The host directory.
    pub host: PathBuf,
    /// Where the guest sees it. Default: the same absolute path as on the host.
    pub guest: Option<String>,
    /// Whether the guest may only read it.
    pub readonly: bool,
}

impl FromStr for ShareRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<ShareRequest, String> {
        let mut parts: Vec<&str> = s.split(':').collect();
        let readonly = parts.len() > 1 && parts.last() == Some(&"ro");
        if readonly || (parts.len() > 1 && parts.last() == Some(&"rw")) {
            parts.pop();
        }
        let (host, guest) = match parts[..] {
            [host] => (host, None),
            [host, guest] => (host, Some(guest.to_string())),
            _ => return Err(format!("`{s}` is not HOST_DIR[:GUEST_DIR][:ro]")),
        };
        if host.is_empty() {
            return Err(format!("`{s}` names no host directory"));
        }
        if let Some(g) = &guest {
            if !g.starts_with('/') || g == "/" || g.split('/').any(|c| c == "..") {
                return Err(format!(
                    "the guest directory `{g}` must be an absolute path below / without `..`"
                ));
            }
        }
        Ok(ShareRequest { host: host.into(), guest, readonly })
    }
}

/// A share ready to attach: its host directory checked, its transport chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The host directory, absolute.
    pub host: PathBuf,
    /// Where the guest mounts it.
    pub guest: String,
    /// Whether the guest may only read it.
    pub readonly: bool,
    /// The transport.
    pub transport: Transport,
    /// The mount tag the guest mounts by (`br0`, `br1`, …).
    pub tag: String,
    /// For virtiofs: the socket `virtiofsd` listens on.
    pub socket: Option<PathBuf>,
}

impl ShareRequest {
    /// Checks the host directory and makes the `index`th share over `transport`; a virtiofs
    /// share's socket goes into `run_dir`.
    pub fn resolve(&self, index: usize, transport: Transport, run_dir: &Path) -> Result<Share> {
        let host =
            std::path::absolute(&self.host).map_err(|e| Error::io("resolve", &self.host, e))?;
        if !host.is_dir() {
            return Err(Error::Other(format!(
                "cannot share `{}` with the guest: it is not a directory on this host",
                self.host.display()
            )));
        }
        let guest = match &self.guest {
            Some(g) => g.clone(),
            None => host.to_string_lossy().into_owned(),
        };
        let socket = (transport == Transport::Virtiofs).then(|| {
            let name = format!("virtiofs-{index}.sock");
            let socket = run_dir.join(&name);
            // A Unix socket path holds at most 107 bytes; a deep work directory gets a short
            // one in the temporary directory instead.
            if socket.as_os_str().len() < 100 {
                socket
            } else {
                std::env::temp_dir().join(format!("busyroot-{}-{name}", std::process::id()))
            }
        });
        Ok(Share {
            host,
            guest,
            readonly: self.readonly,
            transport,
            tag: format!("br{index}"),
            socket,
        })
    }
}

/// What a kernel option's value means for a transport.
pub(crate) fn availability(
    config: &KernelConfig,
    symbol: &str,
    modules: bool,
) -> Result<bool, String> {
    match config.get(symbol) {
        Some("y") => Ok(false),
        Some("m") if modules => Ok(true),
        Some("m") => Err(format!("CONFIG_{symbol}=m but no modules for this kernel were given")),
        _ => Err(format!("CONFIG_{symbol} is not set")),
    }
}

/// Picks the first of `offered` (the backend's transports, preferred first) that the kernel
/// supports: built in, or as a module when `modules` are given. virtiofs also needs a
/// `virtiofsd` program. Without a kernel configuration the first is assumed to work.
pub fn choose_transport(
    offered: &[Transport],
    config: Option<&KernelConfig>,
    modules: bool,
    virtiofsd: Option<&Path>,
) -> Result<Choice<Transport>> {
    let Some(config) = config else {
        let first = offered[0];
        return Ok(Choice {
            value: first,
            reason: format!("no kernel configuration found; assuming {first} is built in"),
        });
    };
    let mut refused = Vec::new();
    for &transport in offered {
        let mut as_modules = Vec::new();
        let mut problems = Vec::new();
        for symbol in transport.symbols() {
            match availability(config, symbol, modules) {
                Ok(true) => as_modules.push(*symbol),
                Ok(false) => {}
                Err(why) => problems.push(why),
            }
        }
        // An option that is not there at all says more than one that is a module.
        problems.sort_by_key(|p| !p.ends_with("is not set"));
        let mut problem = problems.into_iter().next();
        if problem.is_none() && transport == Transport::Virtiofs && virtiofsd.is_none() {
            problem = Some(
                "`virtiofsd` is not installed (Debian 12 has no package; `cargo install \
                 virtiofsd --locked` with libseccomp-dev and libcap-ng-dev, or set $VIRTIOFSD)"
                    .to_string(),
            );
        }
        match problem {
            None => {
                let how = if as_modules.is_empty() {
                    "built in".to_string()
                } else {
                    format!("{} as modules", as_modules.join(", "))
                };
                return Ok(Choice {
                    value: transport,
                    reason: format!("{how} in `{}`", config.source),
                });
            }
            Some(why) => refused.push(format!("{transport}: {why}")),
        }
    }
    Err(Error::Other(format!(
        "cannot share a directory with this kernel (configuration `{}`): {}",
        config.source,
        refused.join("; ")
    )))
}

/// The `virtiofsd` program: `$VIRTIOFSD`, else `virtiofsd` in `$PATH`, else where packages
/// and `cargo install` put it.
pub fn find_virtiofsd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VIRTIOFSD").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin/virtiofsd"));
    crate::host::tools::find_program("virtiofsd").or_else(|| {
        ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"]
            .into_iter()
            .map(PathBuf::from)
            .chain(home_bin)
            .find(|p| p.is_file())
    })
}

/// A running `virtiofsd`, killed when dropped.
pub(crate) struct Virtiofsd {
    _process: VmProcess,
}

impl Virtiofsd {
    /// The command line that serves `share`.
    pub(crate) fn args(share: &Share) -> Vec<OsString> {
        let socket = share.socket.clone().expect("a virtiofs share has a socket");
        let mut args: Vec<OsString> = vec![
            "--socket-path".into(),
            socket.into(),
            "--shared-dir".into(),
            share.host.clone().into(),
            // Unprivileged: no namespace sandbox to set up, and files keep the user's owner.
            "--sandbox".into(),
            "none".into(),
            "--cache".into(),
            "auto".into(),
        ];
        if share.readonly {
            args.push("--readonly".into());
        }
        args
    }

    /// Starts `program` for `share` and waits until its socket exists.
    pub(crate) fn start(program: &Path, share: &Share, deadline: Instant) -> Result<Virtiofsd> {
        let socket = share.socket.as_deref().expect("a virtiofs share has a socket");
        let _ = std::fs::remove_file(socket);
        let args = Virtiofsd::args(share);
        let mut process = VmProcess::spawn(program, &args, process::Stdio::Quiet)
            .map_err(|e| Error::io("run", program, e))?;
        while !socket.exists() {
            if let Some(status) = process.try_wait() {
                return Err(Error::Other(format!(
                    "`{}` exited with status {} before creating `{}`; run it by hand to see why",
                    program.display(),
                    process::exit_code(status),
                    socket.display()
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Other(format!(
                    "`{}` did not create `{}` in time",
                    program.display(),
                    socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Virtiofsd { _process: process })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        let r: ShareRequest = "/src".parse().unwrap();
        assert_eq!(r, ShareRequest { host: "/src".into(), guest: None, readonly: false });
        let r: ShareRequest = "out:/mnt/out:ro".parse().unwrap();
        assert_eq!(
            r,
            ShareRequest { host: "out".into(), guest: Some("/mnt/out".into()), readonly: true }
        );
        assert!("/a:rel".parse::<ShareRequest>().unwrap_err().contains("absolute"));
        assert!("/a:/../x".parse::<ShareRequest>().is_err());
        assert!("/a:/b:/c".parse::<ShareRequest>().is_err());
        assert!(":/b".parse::<ShareRequest>().is_err());
    }

    #[test]
    fn missing_host_directory_is_refused() {
        let req: ShareRequest = "/does/not/exist".parse().unwrap();
        let err = req.resolve(0, Transport::NineP, Path::new("/tmp")).unwrap_err().to_string();
        assert!(err.contains("/does/not/exist") && err.contains("not a directory"), "{err}");
    }

    #[test]
    fn transport_follows_the_kernel() {
        let both = [Transport::NineP, Transport::Virtiofs];
        let minimal = KernelConfig::parse(
            "CONFIG_VIRTIO_PCI=y\nCONFIG_NET_9P=y\nCONFIG_NET_9P_VIRTIO=y\nCONFIG_9P_FS=y\n",
            "min",
        );
        let c = choose_transport(&both, Some(&minimal), false, None).unwrap();
        assert_eq!(c.value, Transport::NineP);
        assert_eq!(c.reason, "built in in `min`");

        // Debian's cloud kernel: no 9p at all, virtiofs and virtio-pci as modules.
        let cloud = KernelConfig::parse(
            "CONFIG_VIRTIO_PCI=m\n# CONFIG_NET_9P is not set\nCONFIG_FUSE_FS=m\nCONFIG_VIRTIO_FS=m\n",
            "cloud",
        );
        let vfsd = Path::new("/usr/bin/virtiofsd");
        let c = choose_transport(&both, Some(&cloud), true, Some(vfsd)).unwrap();
        assert_eq!(c.value, Transport::Virtiofs);
        assert!(c.reason.contains("VIRTIO_PCI, FUSE_FS, VIRTIO_FS as modules"), "{}", c.reason);

        let err = choose_transport(&both, Some(&cloud), false, Some(vfsd)).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("9p: CONFIG_NET_9P is not set"), "{err}");
        assert!(err.contains("CONFIG_VIRTIO_PCI=m but no modules"), "{err}");
        let err = choose_transport(&both, Some(&cloud), true, None).unwrap_err().to_string();
        assert!(err.contains("virtiofsd"), "{err}");
    }
}
