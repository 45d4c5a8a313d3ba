//! Host directories shown to the guest: parsing `HOST[:GUEST][:ro]`, choosing virtio-9p or
//! virtiofs from what the kernel supports, and running `virtiofsd` for the latter.

use std::ffi::OsString;
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

display_as_name!(Transport);

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
        let guest = self.guest.clone().unwrap_or_else(|| host.to_string_lossy().into_owned());
        let socket = (transport == Transport::Virtiofs)
            .then(|| crate::host::fs::socket_path(run_dir, &format!("virtiofs-{index}.sock")));
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
                "the Rust `virtiofsd` is not installed (Debian 12 has no package, and its \
                 /usr/lib/qemu/virtiofsd is QEMU's old C one, which busyroot cannot drive): \
                 `cargo install virtiofsd --locked` with libseccomp-dev and libcap-ng-dev, or \
                 set $VIRTIOFSD"
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

/// The `virtiofsd` programs on this host: the one to use and those passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtiofsdSearch {
    /// The first one busyroot can drive: the Rust virtiofsd, or one that does not say what
    /// it is (assumed to take the Rust one's options).
    pub program: Option<PathBuf>,
    /// Each one looked at and not used, with why and what to do instead.
    pub passed_over: Vec<(PathBuf, String)>,
}

/// The `virtiofsd` program busyroot drives, if there is one: see `search_virtiofsd`.
pub fn find_virtiofsd() -> Option<PathBuf> {
    search_virtiofsd().program
}

/// Looks at every `virtiofsd` in turn: `$VIRTIOFSD`, each `virtiofsd` in `$PATH`, then where
/// packages and `cargo install` put it. Each is asked for its version: QEMU's old C
/// virtiofsd (Debian 12's `/usr/lib/qemu/virtiofsd`, package qemu-system-common) takes other
/// options and needs root for its sandbox, so it is passed over.
pub fn search_virtiofsd() -> VirtiofsdSearch {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let cargo_home = var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let path = var("PATH").unwrap_or_default();
    search_in(virtiofsd_candidates(var("VIRTIOFSD"), &path, cargo_home.as_deref()))
}

/// Where to look, in order, each path once.
fn virtiofsd_candidates(
    env: Option<OsString>,
    path: &std::ffi::OsStr,
    cargo_home: Option<&Path>,
) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = env.into_iter().map(PathBuf::from).collect();
    candidates.extend(std::env::split_paths(path).map(|dir| dir.join("virtiofsd")));
    candidates.extend(["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"].map(PathBuf::from));
    candidates.extend(cargo_home.map(|c| c.join("bin/virtiofsd")));
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|c| c.is_file() && seen.insert(c.canonicalize().unwrap_or(c.clone())));
    candidates
}

/// The first of `candidates` that is not QEMU's C virtiofsd.
fn search_in(candidates: Vec<PathBuf>) -> VirtiofsdSearch {
    let mut search = VirtiofsdSearch::default();
    for candidate in candidates {
        let version = virtiofsd_version(&candidate);
        if is_qemu_virtiofsd(&version) {
            let why = format!(
                "it is QEMU's C virtiofsd (`{}`), which takes other options and needs root for \
                 its sandbox; busyroot drives the Rust virtiofsd: `cargo install virtiofsd \
                 --locked` (needs libseccomp-dev and libcap-ng-dev), or set $VIRTIOFSD to one",
                version.lines().next().unwrap_or("").trim()
            );
            search.passed_over.push((candidate, why));
        } else {
            search.program = Some(candidate);
            break;
        }
    }
    search
}

/// What `program --version` prints (empty if it cannot be run).
fn virtiofsd_version(program: &Path) -> String {
    let Ok(sh) = xshell::Shell::new() else { return String::new() };
    let cmd = xshell::cmd!(sh, "{program} --version");
    crate::host::exec::output(cmd)
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// QEMU's virtiofsd says `virtiofsd version 7.2.22 (…)`; the Rust one says `virtiofsd 1.10.1`.
fn is_qemu_virtiofsd(version: &str) -> bool {
    version.starts_with("virtiofsd version ")
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
    fn qemus_c_virtiofsd_first_on_the_path_is_passed_over_for_the_rust_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = |sub: &str, says: &str| {
            let bin = dir.path().join(sub);
            std::fs::create_dir_all(&bin).unwrap();
            let program = bin.join("virtiofsd");
            std::fs::write(&program, format!("#!/bin/sh\nprintf '%s\\n' '{says}'\n")).unwrap();
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
            bin
        };
        let c = fake("qemu", "virtiofsd version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)");
        let rust = fake("cargo", "virtiofsd 1.13.2");
        let path = std::env::join_paths([&c, &rust]).unwrap();
        let candidates = virtiofsd_candidates(None, &path, None);
        assert_eq!(candidates[..2], [c.join("virtiofsd"), rust.join("virtiofsd")]);
        let search = search_in(candidates);
        assert_eq!(search.program, Some(rust.join("virtiofsd")));
        let (passed, why) = &search.passed_over[0];
        assert_eq!(passed, &c.join("virtiofsd"));
        assert!(why.contains("QEMU's C virtiofsd (`virtiofsd version 7.2.22"), "{why}");
        assert!(why.contains("cargo install virtiofsd --locked"), "{why}");

        // The C one alone: nothing to use, and it says why.
        let search = search_in(vec![c.join("virtiofsd")]);
        assert_eq!((search.program, search.passed_over.len()), (None, 1));
        // $VIRTIOFSD comes first.
        let env = Some(rust.join("virtiofsd").into_os_string());
        assert_eq!(virtiofsd_candidates(env, &path, None)[0], rust.join("virtiofsd"));
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
