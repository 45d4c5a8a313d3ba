//! How the library reports progress: a small trait the caller implements (a spinner in the
//! xtask, `cargo:warning` lines in a build script, nothing in tests), and the inputs a build reports.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Receives progress events. Every method has a do-nothing default.
pub trait Progress {
    /// A step starts (e.g. "build busybox").
    fn start(&self, _step: &str) {}
    /// A step ended after `elapsed`; `detail` says what it did ("fresh", a size, …).
    fn finish(&self, _step: &str, _elapsed: Duration, _detail: &str) {}
    /// A long-running command is about to run; `command_line` is what it runs.
    fn command(&self, _command_line: &str) {}
    /// A remark worth showing the user.
    fn note(&self, _message: &str) {}
    /// Something is probably wrong but the work goes on (a misspelled configuration table);
    /// shown as a note unless the caller shows warnings otherwise.
    fn warning(&self, message: &str) {
        self.note(message)
    }
    /// A line the running command printed (e.g. `  CC      kernel/fork.o`), which says what a
    /// long step is doing now; showing the latest now and then is enough.
    fn output(&self, _line: &str) {}
    /// An input the build uses, configured or busyroot's built-in one; its `Display` is the
    /// summary line (`skeleton: built-in (…/rootfs-skel)`).
    fn input(&self, _input: &Input) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}

/// Whether an input was configured or is busyroot's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The key is unset: busyroot's built-in file, under [`builtin_dir`](crate::inputs::builtin_dir).
    BuiltIn,
    /// The key names it.
    Configured,
}

/// One resolved input of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// What it is, by its configuration key: `busybox.config`, `skeleton`, `overlays`,
    /// `device-table` or `kernel.fragments`.
    pub key: &'static str,
    /// Where it is.
    pub path: PathBuf,
    /// The path as the user knows it: as configured, or relative to the workspace root when
    /// it lies inside, else absolute.
    pub shown: PathBuf,
    /// Configured or built in.
    pub origin: Origin,
}

impl fmt::Display for Input {
    /// `skeleton: built-in (/…/rootfs-skel)` or `skeleton: rootfs-skel (configured)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::BuiltIn => write!(f, "{}: built-in ({})", self.key, self.shown.display()),
            Origin::Configured => write!(f, "{}: {} (configured)", self.key, self.shown.display()),
        }
    }
}
