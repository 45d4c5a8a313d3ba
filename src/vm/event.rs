//! What the runner reports while it works: events an [`Observer`] receives as they happen.
//! The library prints nothing; the xtask renders these, and a test can collect them.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// A decision together with the reason it was taken, for printing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice<T> {
    /// What was chosen.
    pub value: T,
    /// Why, in a few words (e.g. "guest arch equals host arch and /dev/kvm is usable").
    pub reason: String,
}

/// One check's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// The command typed, or a description for host-side steps.
    pub command: String,
    /// What was expected, in words.
    pub expected: String,
    /// What the guest (or host tool) printed.
    pub output: String,
    /// Whether it passed.
    pub passed: bool,
    /// Why it did not run, if it was skipped (a skipped check counts as passed).
    pub skipped: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

/// What a [`Event::Choice`] decided; its `Display` is the short label a renderer shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// KVM or TCG.
    Accel,
    /// The root file system and, for a disk, its bus.
    Root,
    /// The transport of the shared directories.
    Shares,
    /// One shared directory and where it is mounted.
    Share,
    /// How the payload's streams and status travel.
    Payload,
    /// The kernel modules loaded in the guest.
    Modules,
    /// An overlay added to the boot copy.
    Overlay,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Accel => "accel",
            Decision::Root => "root",
            Decision::Shares => "shares",
            Decision::Share => "share",
            Decision::Payload => "payload",
            Decision::Modules => "modules",
            Decision::Overlay => "overlay",
        })
    }
}

/// Something that happened during a run, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A decision and its reason, such as the share transport (`Decision::Shares`, "9p: …").
    Choice {
        /// What was decided.
        what: Decision,
        /// The value and the reason, in words.
        detail: String,
    },
    /// A helper or VMM command line is about to run.
    Command(String),
    /// A remark for the user: how to quit an interactive session, where the log is.
    Note(String),
    /// The init banner arrived this long after the VMM started.
    Booted(Duration),
    /// A kernel or init console line that is not the payload's output.
    Console(String),
    /// One check finished (passed, failed or skipped).
    Check(CheckResult),
    /// The payload command starts in the guest.
    CommandStarted(Vec<String>),
    /// One line the payload wrote on its stdout.
    Stdout(String),
    /// One line the payload wrote on its stderr.
    Stderr(String),
    /// Bytes the payload wrote, exactly as written, as they came (the virtio-serial channel;
    /// the serial relay reports lines instead).
    Output(OutputStream, Vec<u8>),
}

/// Which of the payload's output streams bytes came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Its stdout.
    Stdout,
    /// Its stderr.
    Stderr,
}

/// Receives the runner's events. Called from the thread that runs the VM.
pub trait Observer {
    /// One event.
    fn event(&self, event: Event);
}

/// Ignores every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _event: Event) {}
}

/// Keeps every event, for tests and for callers that render afterwards.
#[derive(Debug, Default)]
pub struct Collect(Mutex<Vec<Event>>);

impl Collect {
    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Observer for Collect {
    fn event(&self, event: Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}
