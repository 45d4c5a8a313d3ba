//! The payload's channel: how a command run in the guest gets its stdin and hands back its
//! stdout, stderr and exit status. Chosen from the kernel's facts as the share transport is,
//! and printed with the reason.
//!
//! - [`Channel::Serial`]: the serial relay typed at the console shell (`guest.rs`), line by
//!   line, stdin `/dev/null`; works with every kernel and VMM, and is the fallback.
//! - [`Channel::Ports`]: named virtio-serial ports (`ports.rs`), byte-exact both ways, with
//!   stdin and a small init of its own.
//!
//! A new channel (vsock, say) is one file that makes a [`Link`] (four byte streams) and its
//! guest init, plus one arm in [`Channel`]; the host loop that drives a link ([`drive`]) and
//! the parsers of what the guest sends (`stream.rs`) are shared.

pub(crate) mod ports;
pub(crate) mod stream;

use std::io::{Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::console::{Console, Stop};
use super::event::{Event, Observer, OutputStream};
use super::process::interrupted;
use super::{Choice, KernelConfig};
use stream::{StatusLine, StatusReader, StreamEnd};

/// How a payload's streams and status travel between host and guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channel {
    /// The serial console with the tagged line protocol: text lines (control characters
    /// dropped, a newline added to a last line without one), stdin `/dev/null`.
    #[default]
    Serial,
    /// virtio-serial ports named `busyroot.stdin`, `busyroot.stdout`, `busyroot.stderr`,
    /// `busyroot.status`: every byte as written, stdin from the host.
    Ports,
}

impl Channel {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Serial => "serial relay",
            Channel::Ports => "virtio-serial",
        }
    }

    /// The kernel options (without `CONFIG_`) the guest needs, built in or as modules.
    pub fn symbols(self) -> &'static [&'static str] {
        match self {
            Channel::Serial => &[],
            Channel::Ports => &["VIRTIO_PCI", "VIRTIO_CONSOLE"],
        }
    }
}

display_as_name!(Channel);

/// Picks the first of `offered` (the backend's channels, preferred first) that the kernel
/// supports, built in or as a module when `modules` are given; the serial relay needs
/// nothing and is the fallback, with the reasons the others were passed over.
pub fn choose_channel(
    offered: &[Channel],
    config: Option<&KernelConfig>,
    modules: bool,
) -> Choice<Channel> {
    let mut refused = Vec::new();
    for &channel in offered.iter().filter(|c| **c != Channel::Serial) {
        let Some(config) = config else {
            refused.push(format!("{channel}: no kernel configuration found to tell"));
            continue;
        };
        let mut as_modules = Vec::new();
        let mut problems = Vec::new();
        for symbol in channel.symbols() {
            match super::share::availability(config, symbol, modules) {
                Ok(true) => as_modules.push(*symbol),
                Ok(false) => {}
                Err(why) => problems.push(why),
            }
        }
        if let Some(problem) = problems.into_iter().next() {
            refused.push(format!("{channel}: {problem}"));
            continue;
        }
        let how = if as_modules.is_empty() {
            "built in".to_string()
        } else {
            format!("{} as modules", as_modules.join(", "))
        };
        return Choice { value: channel, reason: format!("{how} in `{}`", config.source) };
    }
    let reason = if refused.is_empty() {
        "the VMM offers only its serial console".to_string()
    } else {
        refused.join("; ")
    };
    Choice { value: Channel::Serial, reason }
}

/// A random tag that ends the data streams: 32 hex digits from the host's random source
/// (mixed with the standard library's per-process keys should that be unreadable).
pub(crate) fn end_tag() -> String {
    let mut bytes = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(std::time::SystemTime::now().elapsed().map_or(0, |d| d.as_nanos()));
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the payload reads on its stdin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Input {
    /// `/dev/null`: end of file at once.
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// This process's stdin, to its end of file.
    HostStdin,
}

/// The four byte streams of a connected channel, host side.
pub(crate) struct Link {
    /// Into the payload's stdin; shut down for writing to end it.
    pub(crate) stdin: Box<dyn Shutdown + Send>,
    /// The payload's stdout.
    pub(crate) stdout: Box<dyn Read + Send>,
    /// The payload's stderr.
    pub(crate) stderr: Box<dyn Read + Send>,
    /// The runner's status lines.
    pub(crate) status_in: Box<dyn Read + Send>,
    /// To the runner: the boot's end-of-stream tag, then, once both streams reached it, leave
    /// to power off (the VMM would drop what it has not yet passed on).
    pub(crate) status_out: Box<dyn Write + Send>,
}

/// A writer whose end can be signalled without closing it.
pub(crate) trait Shutdown: Write {
    /// Ends the stream for the reader (end of file) while keeping the descriptor: a closed
    /// socket may make the VMM drop what it has not read yet.
    fn shutdown_write(&mut self);
    /// A second handle on the same stream.
    fn duplicate(&self) -> std::io::Result<Box<dyn Shutdown + Send>>;
}

impl Shutdown for std::os::unix::net::UnixStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
    fn duplicate(&self) -> std::io::Result<Box<dyn Shutdown + Send>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// How a payload over a [`Link`] ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The command exited with this status; its streams were drained.
    Status(i32),
    /// The guest's set-up (modules, shares) failed with this status before the command ran.
    SetupFailed(i32),
    /// No ready line: the boot did not get as far as the payload.
    Boot(Stop),
    /// The command was running when this stopped it.
    Command(Stop),
    /// The guest sent something on the status port that is not the protocol.
    Garbled(String),
}

/// What a payload run over a link produced.
pub(crate) struct Payload {
    pub(crate) ended: Ended,
    /// From the ready line to the status.
    pub(crate) booted_after: Option<Duration>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// The stdin stream, held open until the VMM is gone.
    pub(crate) _stdin: Option<Box<dyn Shutdown + Send>>,
    /// Whether a stream ran past [`KEEP`] and the kept copy was cut there.
    pub(crate) cut: bool,
    /// The guest said its file systems are synced after the status, or has none to sync: the
    /// VMM may be killed rather than waited for (a kernel without a power-off driver only
    /// halts).
    pub(crate) settled: bool,
}

/// How long the streams may go without a byte before their end after the status: they were
/// ended before it was sent, and the guest waits for leave to power off, so this only covers
/// the host's reading.
const DRAIN: Duration = Duration::from_secs(5);

/// How much of each stream the report keeps (all of it reaches the observer as it comes).
const KEEP: usize = 64 << 20;

/// Chunks in flight between a reader thread and the loop (64 KiB each): bounded, so a guest
/// that writes faster than the host's stdout takes waits instead of filling the host's memory.
const IN_FLIGHT: usize = 64;

enum Msg {
    Data(OutputStream, Vec<u8>),
    End,
    Status(StatusLine),
    /// The status stream closed or failed before a status.
    StatusClosed,
}

/// Drives one payload over `link`: sends `tag` (and whether stdin is the host's), feeds
/// `input`, passes stdout and stderr to `observer` as they come, and returns once the status
/// arrived and both streams reached the tag. With `settle`, it then gives the guest leave to
/// power off and waits up to that long for it to say its file systems are synced; without
/// (nothing in the guest to write back, as with an initramfs), the VMM may go at once. The
/// console is watched meanwhile for a panic, the VMM's exit and Ctrl-C.
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive(
    link: Link,
    tag: &str,
    input: &Input,
    console: &mut Console,
    observer: &dyn Observer,
    started: Instant,
    boot_deadline: Instant,
    command_timeout: Option<Duration>,
    settle: Option<Duration>,
) -> Payload {
    let Link { mut stdin, stdout, stderr, status_in, mut status_out } = link;
    let mut payload = Payload {
        ended: Ended::Boot(Stop::Closed),
        booted_after: None,
        stdout: vec![],
        stderr: vec![],
        _stdin: None,
        settled: false,
        cut: false,
    };
    let hello = format!("{tag} {}\n", u8::from(*input != Input::Null));
    if status_out.write_all(hello.as_bytes()).and_then(|()| status_out.flush()).is_err() {
        return payload;
    }
    let (tx, rx) = mpsc::sync_channel(IN_FLIGHT);
    // The readers end when the VMM is gone and its streams close, which the caller sees to.
    reader(stdout, OutputStream::Stdout, tag, tx.clone());
    reader(stderr, OutputStream::Stderr, tag, tx.clone());
    status_reader(status_in, tx);
    match input {
        Input::Null => stdin.shutdown_write(),
        _ => {
            if let Ok(copy) = stdin.duplicate() {
                feed(copy, input.clone());
            }
        }
    }
    payload._stdin = Some(stdin);
    payload.ended =
        run_loop(&rx, console, observer, started, boot_deadline, command_timeout, &mut payload);
    if matches!(payload.ended, Ended::Status(_)) {
        let Some(settle) = settle else {
            payload.settled = true;
            return payload;
        };
        let _ = status_out.write_all(b"k\n").and_then(|()| status_out.flush());
        let deadline = Instant::now() + settle;
        while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(wait.min(Duration::from_millis(50))) {
                Ok(Msg::Status(StatusLine::Done)) => {
                    payload.settled = true;
                    break;
                }
                Ok(Msg::StatusClosed) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            }
            if interrupted() {
                break;
            }
        }
    }
    payload
}

/// Feeds `input` into `stream` on a thread of its own, then ends it. The host's stdin may
/// block past the run; that thread then ends with the process.
fn feed(mut stream: Box<dyn Shutdown + Send>, input: Input) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = match input {
            Input::Bytes(bytes) => stream.write_all(&bytes),
            Input::HostStdin => std::io::copy(&mut std::io::stdin().lock(), &mut stream).map(drop),
            Input::Null => Ok(()),
        };
        let _ = stream.flush();
        stream.shutdown_write();
    })
}

/// The next read's length; `None` at the end of the stream or on an error (an interrupted
/// read is retried).
fn read_some(source: &mut dyn Read, buf: &mut [u8]) -> Option<usize> {
    loop {
        match source.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

fn reader(
    mut source: Box<dyn Read + Send>,
    which: OutputStream,
    tag: &str,
    tx: SyncSender<Msg>,
) -> JoinHandle<()> {
    let mut end = StreamEnd::new(tag.as_bytes());
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        while let Some(n) = read_some(&mut source, &mut buf) {
            let mut out = Vec::new();
            let done = end.feed(&buf[..n], &mut out);
            if !out.is_empty() && tx.send(Msg::Data(which, out)).is_err() {
                return;
            }
            if done {
                break;
            }
        }
        let _ = tx.send(Msg::End);
        // What follows the tag (a background process still writing) is read and dropped, so
        // that it never blocks the guest before it powers off.
        while matches!(source.read(&mut buf), Ok(n) if n > 0) {}
    })
}

fn status_reader(mut source: Box<dyn Read + Send>, tx: SyncSender<Msg>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut lines = StatusReader::default();
        let mut buf = [0u8; 256];
        while let Some(n) = read_some(&mut source, &mut buf) {
            for line in lines.feed(&buf[..n]) {
                if tx.send(Msg::Status(line)).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Msg::StatusClosed);
    })
}

/// The loop behind [`drive`]: boot, run, drain.
fn run_loop(
    rx: &Receiver<Msg>,
    console: &mut Console,
    observer: &dyn Observer,
    started: Instant,
    boot_deadline: Instant,
    command_timeout: Option<Duration>,
    payload: &mut Payload,
) -> Ended {
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut deadline = boot_deadline;
    let mut running = false;
    let mut status: Option<Ended> = None;
    let mut open = 2;
    let mut closed = false;
    // Once the payload runs, a panic line on the console may be its own writing on
    // `/dev/console`: only the VMM's exit ends the run then, and the line explains it.
    let mut panic_line = None;
    let without_status = |running: bool, stop: Stop| {
        if running {
            Ended::Command(stop)
        } else {
            Ended::Boot(stop)
        }
    };
    loop {
        if !closed {
            let poll = console.poll(!running, |line| {
                if super::console::is_panic(line) {
                    panic_line = Some(line.to_string());
                }
                observer.event(Event::Console(line.to_string()));
            });
            match poll {
                Ok(()) => {}
                // The VMM exited (after a status, the guest powered off): what is still on
                // its way is read before the end.
                Err(Stop::Closed) => {
                    closed = true;
                    deadline = deadline.min(Instant::now() + DRAIN);
                }
                Err(stop) => return without_status(running, stop),
            }
        }
        if interrupted() {
            return without_status(running, Stop::Interrupted);
        }
        let now = Instant::now();
        if (open == 0 && (status.is_some() || closed)) || now >= deadline {
            return match status {
                // Streams that never reached their tag keep what came.
                Some(ended) => ended,
                None if closed => {
                    without_status(running, panic_line.map_or(Stop::Closed, Stop::Panic))
                }
                None => without_status(running, Stop::Timeout),
            };
        }
        let wait = (deadline - now).min(Duration::from_millis(50));
        match rx.recv_timeout(wait) {
            Ok(Msg::Data(which, bytes)) => {
                let kept = match which {
                    OutputStream::Stdout => &mut payload.stdout,
                    OutputStream::Stderr => &mut payload.stderr,
                };
                let room = KEEP.saturating_sub(kept.len()).min(bytes.len());
                kept.extend_from_slice(&bytes[..room]);
                if room < bytes.len() && !payload.cut {
                    payload.cut = true;
                    observer.event(Event::Note(format!(
                        "the payload wrote more than {} MiB on a stream: all of it is passed on, \
                         the report keeps the first {0} MiB",
                        KEEP >> 20
                    )));
                }
                observer.event(Event::Output(which, bytes));
                if status.is_some() {
                    // Still draining, and getting somewhere.
                    deadline = deadline.max(Instant::now() + DRAIN);
                }
            }
            Ok(Msg::End) => open -= 1,
            Ok(Msg::Status(StatusLine::Ready)) if !running && status.is_none() => {
                running = true;
                let t = started.elapsed();
                payload.booted_after = Some(t);
                observer.event(Event::Booted(t));
                deadline = command_timeout.map_or(far, |t| Instant::now() + t);
            }
            Ok(Msg::Status(line)) if status.is_none() => {
                status = Some(match line {
                    StatusLine::Exited(s) if running => Ended::Status(s),
                    StatusLine::SetupFailed(s) if !running => Ended::SetupFailed(s),
                    other => Ended::Garbled(other.describe()),
                });
                if !matches!(status, Some(Ended::Status(_))) {
                    open = 0;
                }
                deadline = Instant::now() + DRAIN;
            }
            Ok(Msg::Status(_)) | Ok(Msg::StatusClosed) => {}
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_follows_the_kernel_and_the_vmm() {
        let qemu = [Channel::Ports, Channel::Serial];
        let minimal = KernelConfig::parse("CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_CONSOLE=y\n", "min");
        let c = choose_channel(&qemu, Some(&minimal), false);
        assert_eq!((c.value, c.reason.as_str()), (Channel::Ports, "built in in `min`"));

        // Debian's cloud kernel: the console and virtio-pci are modules.
        let cloud = KernelConfig::parse("CONFIG_VIRTIO_PCI=m\nCONFIG_VIRTIO_CONSOLE=m\n", "cloud");
        let c = choose_channel(&qemu, Some(&cloud), true);
        assert_eq!(c.value, Channel::Ports);
        assert_eq!(c.reason, "VIRTIO_PCI, VIRTIO_CONSOLE as modules in `cloud`");
        let c = choose_channel(&qemu, Some(&cloud), false);
        assert_eq!(c.value, Channel::Serial);
        assert!(c.reason.contains("CONFIG_VIRTIO_PCI=m but no modules"), "{}", c.reason);

        let none =
            KernelConfig::parse("CONFIG_VIRTIO_PCI=y\n# CONFIG_VIRTIO_CONSOLE is not set\n", "x");
        let c = choose_channel(&qemu, Some(&none), true);
        assert_eq!(c.value, Channel::Serial);
        assert_eq!(c.reason, "virtio-serial: CONFIG_VIRTIO_CONSOLE is not set");
        let c = choose_channel(&qemu, None, true);
        assert_eq!(c.value, Channel::Serial);
        assert!(c.reason.contains("no kernel configuration"), "{}", c.reason);

        // kvmtool: one console port, so the relay whatever the kernel has.
        let c = choose_channel(&[Channel::Serial], Some(&minimal), false);
        assert_eq!(c.value, Channel::Serial);
        assert_eq!(c.reason, "the VMM offers only its serial console");
    }
}
