//! Finding and reading a kernel's build configuration, and picking a root bus from it.
//!
//! Kernels differ in which block drivers they build in: Debian's have virtio as modules but
//! NVMe built in. Without an initramfs to load modules, the root disk must sit on a bus whose
//! driver is `=y`, and ext4 must be `=y` too.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::error::{Error, Result};

/// A parsed kernel `.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    values: BTreeMap<String, String>,
    /// Where it was found, for messages (a path, or "IKCONFIG embedded in `…`").
    pub source: String,
}

impl KernelConfig {
    /// Parses `.config` text with the one Kconfig parser ([`crate::host::kconfig`]): the
    /// options that are set, keyed without `CONFIG_`, string values without their quotes.
    pub fn parse(text: &str, source: impl Into<String>) -> KernelConfig {
        let mut values = BTreeMap::new();
        for (name, value) in crate::host::kconfig::options(text) {
            let name = name.strip_prefix("CONFIG_").unwrap_or(name);
            match value {
                Some(v) => values.insert(name.to_string(), v.trim_matches('"').to_string()),
                None => values.remove(name),
            };
        }
        KernelConfig { values, source: source.into() }
    }

    /// The value of `symbol` (with or without the `CONFIG_` prefix), if set.
    pub fn get(&self, symbol: &str) -> Option<&str> {
        let symbol = symbol.strip_prefix("CONFIG_").unwrap_or(symbol);
        self.values.get(symbol).map(String::as_str)
    }

    /// Whether `symbol` is built in (`=y`).
    pub fn is_builtin(&self, symbol: &str) -> bool {
        self.get(symbol) == Some("y")
    }

    /// `CONFIG_X=value` or `CONFIG_X is not set`, for messages.
    pub(crate) fn describe(&self, symbol: &str) -> String {
        match self.get(symbol) {
            Some(v) => format!("CONFIG_{symbol}={v}"),
            None => format!("CONFIG_{symbol} is not set"),
        }
    }

    /// Finds the configuration `kernel` was built with: `config-<version>` beside a
    /// `vmlinuz-<version>` (as distributions install it in /boot), a `.config` in the kernel
    /// build tree the image sits in, or an embedded IKCONFIG. Returns `None` when there is
    /// none; the error is only for unreadable files.
    pub fn find(kernel: &Path) -> Result<Option<KernelConfig>> {
        for candidate in candidate_files(kernel) {
            if candidate.is_file() {
                let text = std::fs::read_to_string(&candidate)
                    .map_err(|e| Error::io("read", &candidate, e))?;
                if text.lines().any(|l| l.starts_with("CONFIG_")) {
                    return Ok(Some(KernelConfig::parse(&text, candidate.display().to_string())));
                }
            }
        }
        let image = std::fs::read(kernel).map_err(|e| Error::io("read", kernel, e))?;
        Ok(extract_ikconfig(&image).map(|text| {
            KernelConfig::parse(&text, format!("IKCONFIG embedded in {}", kernel.display()))
        }))
    }
}

/// The release a distribution's name for a kernel image carries (`vmlinuz-<release>`, also
/// `vmlinux-`, `bzImage-`, `Image-` and `zImage-`).
pub(crate) fn release_in_name(kernel: &Path) -> Option<&str> {
    let name = kernel.file_name()?.to_str()?;
    ["vmlinuz-", "vmlinux-", "bzImage-", "Image-", "zImage-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
}

/// Files that may hold `kernel`'s configuration, most specific first.
fn candidate_files(kernel: &Path) -> Vec<PathBuf> {
    let dir = kernel.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> =
        release_in_name(kernel).map(|r| dir.join(format!("config-{r}"))).into_iter().collect();
    // arch/<arch>/boot/<image> is three levels below the tree's .config; a kernel copied
    // elsewhere often keeps its .config (or config) beside it.
    out.push(dir.join(".config"));
    out.push(dir.join("config"));
    out.extend(dir.ancestors().skip(1).take(3).map(|d| d.join(".config")));
    out
}

/// The configuration embedded with `CONFIG_IKCONFIG=y`, found in `image` itself (an
/// uncompressed Image or vmlinux) or in a gzip-compressed payload inside it (a bzImage or
/// Image.gz built with gzip).
fn extract_ikconfig(image: &[u8]) -> Option<String> {
    if let Some(text) = ikconfig_in(image) {
        return Some(text);
    }
    // A compressed kernel carries its payload somewhere after the boot code; try the first
    // few gzip headers and read at most 256 MiB from each.
    let gzip = regex::bytes::Regex::new(r"(?-u)\x1f\x8b\x08").expect("valid regex");
    let found = gzip.find_iter(image).take(8).find_map(|m| {
        let mut payload = Vec::new();
        let _ = GzDecoder::new(&image[m.start()..]).take(256 << 20).read_to_end(&mut payload);
        ikconfig_in(&payload)
    });
    found
}

/// The gzip-compressed text between the `IKCFG_ST` and `IKCFG_ED` markers.
fn ikconfig_in(data: &[u8]) -> Option<String> {
    let start = regex::bytes::Regex::new(r"(?-u)IKCFG_ST\x1f\x8b").expect("valid regex");
    let at = start.find(data)?.start() + "IKCFG_ST".len();
    let mut text = String::new();
    GzDecoder::new(&data[at..]).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;

    use crate::vm::vmm::choose_root_bus_with;
    use crate::vm::{RootBus, RootBusRequest, Vmm};
    use flate2::Compression;

    use super::*;

    const DEBIAN_CLOUD: &str = "CONFIG_EXT4_FS=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_VIRTIO_PCI=m\n\
        CONFIG_BLK_DEV_NVME=y\nCONFIG_SCSI_VIRTIO=m\nCONFIG_BLK_DEV_SD=m\n";

    #[test]
    fn parses_values() {
        let c = KernelConfig::parse(
            "# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"text\"\nCONFIG_D=m\n",
            "t",
        );
        assert!(c.is_builtin("A") && c.is_builtin("CONFIG_A"));
        assert_eq!(c.get("B"), None);
        assert_eq!(c.get("C"), Some("text"));
        assert!(!c.is_builtin("D"));
    }

    #[test]
    fn auto_picks_a_builtin_bus() {
        let debian = KernelConfig::parse(DEBIAN_CLOUD, "config-6.1");
        let c = choose_root_bus_with(RootBusRequest::Auto, Some(&debian), Vmm::Qemu).unwrap();
        assert_eq!(c.value, RootBus::Nvme);
        assert!(c.reason.contains("BLK_DEV_NVME=y"), "{}", c.reason);

        let all = KernelConfig::parse(&DEBIAN_CLOUD.replace("=m", "=y"), "c");
        let c = choose_root_bus_with(RootBusRequest::Auto, Some(&all), Vmm::Qemu).unwrap();
        assert_eq!(c.value, RootBus::Virtio);

        let c = choose_root_bus_with(RootBusRequest::Auto, None, Vmm::Qemu).unwrap();
        assert_eq!(c.value, RootBus::Virtio);
        assert!(c.reason.contains("no kernel config"));

        // kvmtool only has virtio, which Debian builds as a module.
        let err = choose_root_bus_with(RootBusRequest::Auto, Some(&debian), Vmm::Kvmtool)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--initramfs") && err.contains("CONFIG_VIRTIO_BLK=m"), "{err}");

        let no_ext4 = KernelConfig::parse("CONFIG_EXT4_FS=m\nCONFIG_BLK_DEV_NVME=y\n", "c");
        let err = choose_root_bus_with(RootBusRequest::Auto, Some(&no_ext4), Vmm::Qemu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CONFIG_EXT4_FS=m") && err.contains("--initramfs"), "{err}");
    }

    #[test]
    fn explicit_bus() {
        let c = choose_root_bus_with(RootBusRequest::Bus(RootBus::Scsi), None, Vmm::Qemu).unwrap();
        assert_eq!(c.value, RootBus::Scsi);
        let err = choose_root_bus_with(RootBusRequest::Bus(RootBus::Nvme), None, Vmm::Kvmtool)
            .unwrap_err();
        assert!(err.to_string().contains("offers: virtio"), "{err}");
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn finds_config_files_and_ikconfig() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        std::fs::create_dir(&boot).unwrap();
        let kernel = boot.join("vmlinuz-6.1.0-1-cloud-amd64");
        std::fs::write(&kernel, b"not really").unwrap();
        assert_eq!(KernelConfig::find(&kernel).unwrap(), None);
        std::fs::write(boot.join("config-6.1.0-1-cloud-amd64"), DEBIAN_CLOUD).unwrap();
        let c = KernelConfig::find(&kernel).unwrap().unwrap();
        assert!(c.source.ends_with("config-6.1.0-1-cloud-amd64"));

        // A build tree: <tree>/arch/x86/boot/bzImage with <tree>/.config.
        let tree = dir.path().join("linux");
        let image_dir = tree.join("arch/x86/boot");
        std::fs::create_dir_all(&image_dir).unwrap();
        std::fs::write(tree.join(".config"), "CONFIG_EXT4_FS=y\n").unwrap();
        std::fs::write(image_dir.join("bzImage"), b"x").unwrap();
        let c = KernelConfig::find(&image_dir.join("bzImage")).unwrap().unwrap();
        assert_eq!(c.source, tree.join(".config").display().to_string());

        // IKCONFIG inside a gzip payload inside the image.
        let mut vmlinux = b"\x7fELF....".to_vec();
        vmlinux.extend(b"IKCFG_ST");
        vmlinux.extend(gzip(b"CONFIG_IKCONFIG=y\nCONFIG_VIRTIO_BLK=y\n"));
        vmlinux.extend(b"IKCFG_ED");
        let mut bzimage = vec![0u8; 600];
        bzimage.extend(b"\x1f\x8b\x08 not a real gzip stream");
        bzimage.extend(gzip(&vmlinux));
        let lone = dir.path().join("lone");
        std::fs::create_dir(&lone).unwrap();
        std::fs::write(lone.join("kernel"), &bzimage).unwrap();
        let c = KernelConfig::find(&lone.join("kernel")).unwrap().unwrap();
        assert!(c.is_builtin("VIRTIO_BLK"));
        assert!(c.source.starts_with("IKCONFIG"));
        // And directly in an uncompressed image.
        assert!(extract_ikconfig(&vmlinux).unwrap().contains("CONFIG_IKCONFIG=y"));
    }
}
