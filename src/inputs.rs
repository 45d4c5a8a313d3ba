//! Where each input of a build comes from: the path the configuration sets, or busyroot's own
//! built-in file when the key is unset.
//!
//! The rule: a key that is set means exactly that path, relative to the workspace root, and a
//! path that does not exist is an error. A key that is unset means busyroot's built-in input,
//! always, even when the workspace has a file at the conventional path (its own
//! `rootfs-skel/`): a stray directory must not silently change the image, so only the
//! configuration decides. busyroot's own workspace therefore gets its own files either way.
//!
//! A configured path that starts with `busyroot:` names a file in busyroot's own source
//! (`busyroot:device-table.txt`), so a dependent can list a built-in input next to its own
//! (`device-table = ["busyroot:device-table.txt", "devices.txt"]`) without knowing where
//! Cargo keeps busyroot.
//!
//! The built-in inputs are found through the busyroot crate's own source directory
//! (`CARGO_MANIFEST_DIR` when busyroot was compiled), which Cargo keeps whole in its git
//! checkout or the vendored copy a dependent builds from.

use std::path::{Path, PathBuf};

use crate::config::Workspace;
use crate::error::{Error, Result};

/// The directory of busyroot's own source, holding its built-in inputs.
pub fn builtin_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub use crate::progress::{Input, Origin};

/// Every input of a rootfs build, in the order they are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsInputs {
    /// The BusyBox `.config`.
    pub busybox_config: Input,
    /// The skeleton trees, merged in order over the BusyBox install.
    pub skeleton: Vec<Input>,
    /// Trees and tar archives merged in order over the skeleton.
    pub overlays: Vec<Input>,
    /// Device tables, applied in order after every layer.
    pub device_tables: Vec<Input>,
}

impl RootfsInputs {
    /// All of them, in order: config, skeleton, overlays, tables.
    pub fn all(&self) -> impl Iterator<Item = &Input> {
        std::iter::once(&self.busybox_config)
            .chain(&self.skeleton)
            .chain(&self.overlays)
            .chain(&self.device_tables)
    }
}

impl Workspace {
    /// The inputs of a rootfs build: each configured path, checked to exist, or the built-in
    /// one where the key is unset.
    pub fn rootfs_inputs(&self) -> Result<RootfsInputs> {
        let c = &self.config;
        Ok(RootfsInputs {
            busybox_config: self.one("busybox.config", c.busybox.config.as_deref(), BUSYBOX)?,
            skeleton: self.many("skeleton", c.skeleton.as_deref(), Some(SKELETON))?,
            overlays: self.many("overlays", Some(&c.overlays), None)?,
            device_tables: self.many("device-table", c.device_table.as_deref(), Some(TABLE))?,
        })
    }

    /// The BusyBox `.config` (`busybox.config`, else the built-in one).
    pub fn busybox_config(&self) -> Result<Input> {
        self.one("busybox.config", self.config.busybox.config.as_deref(), BUSYBOX)
    }

    /// The kernel configuration fragments directory (`kernel.fragments`, else the built-in).
    pub fn kernel_fragments(&self) -> Result<Input> {
        self.one("kernel.fragments", self.config.kernel.fragments.as_deref(), FRAGMENTS)
    }

    fn one(&self, key: &'static str, set: Option<&Path>, builtin: &str) -> Result<Input> {
        match set {
            Some(path) => self.configured(key, path),
            None => self.builtin(key, builtin),
        }
    }

    fn many(
        &self,
        key: &'static str,
        set: Option<&[PathBuf]>,
        builtin: Option<&str>,
    ) -> Result<Vec<Input>> {
        match (set, builtin) {
            (Some(paths), _) => paths.iter().map(|p| self.configured(key, p)).collect(),
            (None, Some(builtin)) => Ok(vec![self.builtin(key, builtin)?]),
            (None, None) => Ok(Vec::new()),
        }
    }

    fn configured(&self, key: &'static str, relative: &Path) -> Result<Input> {
        if let Some(own) = relative.to_str().and_then(|p| p.strip_prefix(BUILTIN_PREFIX)) {
            return self.builtin(key, own);
        }
        let path = self.path(relative);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(Error::Config {
                path: self.root.join("Cargo.toml"),
                message: format!(
                    "[workspace.metadata.busyroot] key `{key}` names `{}`, which does not \
                     exist; create it, or remove the key to use busyroot's built-in input",
                    path.display()
                ),
            });
        }
        Ok(Input { key, path, shown: relative.to_path_buf(), origin: Origin::Configured })
    }

    fn builtin(&self, key: &'static str, relative: &str) -> Result<Input> {
        let path = builtin_dir().join(relative);
        if !path.exists() {
            return Err(Error::Other(format!(
                "busyroot's built-in `{key}` input `{}` does not exist: check the name after \
                 `{BUILTIN_PREFIX}` in [workspace.metadata.busyroot], or, for an unset key, \
                 fetch busyroot again (its source at `{}` is incomplete)",
                path.display(),
                builtin_dir().display()
            )));
        }
        let shown = path.strip_prefix(&self.root).map_or(path.clone(), Path::to_path_buf);
        Ok(Input { key, path, shown, origin: Origin::BuiltIn })
    }
}

/// The prefix of a configured path that names a file in busyroot's own source.
pub(crate) const BUILTIN_PREFIX: &str = "busyroot:";

const BUSYBOX: &str = "busybox-config/.config";
const SKELETON: &str = "rootfs-skel";
const TABLE: &str = "device-table.txt";
const FRAGMENTS: &str = "kernel-config";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_keys_mean_the_builtin_inputs_even_beside_a_local_copy() {
        let dir = tempfile::tempdir().unwrap();
        // A stray skeleton at the conventional path is not used: only the configuration decides.
        std::fs::create_dir(dir.path().join("rootfs-skel")).unwrap();
        let inputs = Workspace::for_test(dir.path(), "").rootfs_inputs().unwrap();
        assert!(inputs
            .all()
            .all(|i| i.origin == Origin::BuiltIn && i.path.starts_with(builtin_dir())));
        assert_eq!(inputs.skeleton[0].path, builtin_dir().join("rootfs-skel"));
        assert!(inputs.overlays.is_empty());
        let shown = inputs.skeleton[0].to_string();
        assert_eq!(shown, format!("skeleton: built-in ({}/rootfs-skel)", builtin_dir().display()));
        // In busyroot's own workspace the built-in inputs are shown relative to it.
        let own = Workspace::for_test(builtin_dir(), "").rootfs_inputs().unwrap();
        assert_eq!(own.device_tables[0].to_string(), "device-table: built-in (device-table.txt)");
    }

    #[test]
    fn set_keys_mean_exactly_their_paths_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("skel")).unwrap();
        std::fs::write(dir.path().join("extra.tar"), b"").unwrap();
        let ws = Workspace::for_test(dir.path(), "skeleton = \"skel\"\noverlays = [\"extra.tar\"]");
        let inputs = ws.rootfs_inputs().unwrap();
        assert_eq!(inputs.skeleton[0].to_string(), "skeleton: skel (configured)");
        assert_eq!(inputs.overlays[0].path, dir.path().join("extra.tar"));
        assert_eq!(inputs.device_tables[0].origin, Origin::BuiltIn);

        let err = Workspace::for_test(dir.path(), "device-table = [\"a.txt\"]")
            .rootfs_inputs()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`device-table`") && err.contains("a.txt`, which does not exist"));
        let ws = Workspace::for_test(
            dir.path(),
            "device-table = [\"busyroot:device-table.txt\", \"skel\"]",
        );
        let tables = ws.rootfs_inputs().unwrap().device_tables;
        assert_eq!(tables[0].path, builtin_dir().join("device-table.txt"));
        assert_eq!((tables[0].origin, tables[1].origin), (Origin::BuiltIn, Origin::Configured));
        let err = Workspace::for_test(dir.path(), "skeleton = \"busyroot:nope\"").rootfs_inputs();
        assert!(err.unwrap_err().to_string().contains("built-in `skeleton` input"));
        let err = Workspace::for_test(dir.path(), "kernel.fragments = \"kc\"").kernel_fragments();
        assert!(err.unwrap_err().to_string().contains("`kernel.fragments`"));
    }
}
