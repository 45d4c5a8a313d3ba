//! The guest's serial console as a stream of lines: reader threads copy the VMM's output to
//! the console log and hand cleaned lines to the caller, which waits for patterns against a
//! deadline and notices a kernel panic the moment its line arrives.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::process::{interrupted, Streams};
use crate::error::{IoContext, Result};

/// How many console lines a failure report shows.
pub(crate) const TAIL_LINES: usize = 50;

/// The longest console line held: a guest that prints without end of line is passed on in
/// pieces this long, not gathered in the host's memory.
pub(crate) const MAX_CONSOLE_LINE: usize = 64 << 10;

enum Event {
    Line(String),
    Stderr(String),
    Closed,
}

/// Why a wait ended without its pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A kernel panic line (it names the reason, e.g. "No working init found").
    Panic(String),
    /// The deadline passed.
    Timeout,
    /// The VMM closed its console: it exited.
    Closed,
    /// SIGINT or SIGTERM arrived.
    Interrupted,
}

/// Whether `line` reports a kernel panic.
pub(crate) fn is_panic(line: &str) -> bool {
    line.contains("Kernel panic") || line.contains("No working init found")
}

/// The reading end of the console plus the guest's stdin.
pub(crate) struct Console {
    rx: Receiver<Event>,
    stdin: Option<Box<dyn Write + Send>>,
    threads: Vec<JoinHandle<()>>,
    tail: VecDeque<String>,
    stderr: Vec<String>,
    closed: bool,
    /// Lines holding this (the payload protocol's tag) are the guest's output, never panics.
    ignore: Option<String>,
}

impl Console {
    /// Starts copying `stdout` (the console) and `stderr` (the VMM's own messages) into
    /// the log at `log`, which is truncated first.
    pub(crate) fn attach(streams: Streams, log: &Path) -> Result<Console> {
        let Streams { input: stdin, output: stdout, errors: stderr } = streams;
        let file = Arc::new(Mutex::new(File::create(log).with_path("create", log)?));
        let (tx, rx) = mpsc::channel();
        let out = {
            let (file, tx) = (Arc::clone(&file), tx.clone());
            std::thread::spawn(move || pump(stdout, &file, &tx, Event::Line, true))
        };
        let err = std::thread::spawn(move || pump(stderr, &file, &tx, Event::Stderr, false));
        Ok(Console {
            rx,
            stdin: Some(stdin),
            threads: vec![out, err],
            tail: VecDeque::new(),
            stderr: Vec::new(),
            closed: false,
            ignore: None,
        })
    }

    /// From now on, a line that holds `tag` is never taken for a kernel panic: it is the
    /// guest's tagged output, which may quote anything.
    pub(crate) fn ignore_panics_in(&mut self, tag: &str) {
        self.ignore = Some(tag.to_string());
    }

    /// Types `line` and Enter into the guest console.
    pub(crate) fn send(&mut self, line: &str) -> Result<(), Stop> {
        let stdin = self.stdin.as_mut().ok_or(Stop::Closed)?;
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        stdin.write_all(&bytes).and_then(|()| stdin.flush()).map_err(|_| Stop::Closed)
    }

    /// Feeds every console line to `matcher` until it returns `Some`, a panic line arrives,
    /// the console closes, we are interrupted, or `deadline` passes.
    pub(crate) fn wait_for<T>(
        &mut self,
        deadline: Instant,
        mut matcher: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, Stop> {
        loop {
            if self.closed {
                return Err(Stop::Closed);
            }
            if interrupted() {
                return Err(Stop::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Stop::Timeout);
            }
            // Wake up at least every 100 ms to notice Ctrl-C.
            let wait = (deadline - now).min(Duration::from_millis(100));
            match self.rx.recv_timeout(wait) {
                Ok(Event::Line(line)) => {
                    self.remember(line.clone());
                    let ours = self.ignore.as_ref().is_some_and(|t| line.contains(t.as_str()));
                    if is_panic(&line) && !ours {
                        return Err(Stop::Panic(line));
                    }
                    if let Some(found) = matcher(&line) {
                        return Ok(found);
                    }
                }
                Ok(Event::Stderr(line)) => self.stderr.push(line),
                Ok(Event::Closed) | Err(RecvTimeoutError::Disconnected) => self.closed = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Takes the lines that already arrived, without waiting, handing each to `on_line`; ends
    /// as [`Console::wait_for`] does, but a panic line stops it only if `panics` is set.
    pub(crate) fn poll(&mut self, panics: bool, mut on_line: impl FnMut(&str)) -> Result<(), Stop> {
        loop {
            if self.closed {
                return Err(Stop::Closed);
            }
            match self.rx.try_recv() {
                Ok(Event::Line(line)) => {
                    self.remember(line.clone());
                    if panics && is_panic(&line) {
                        return Err(Stop::Panic(line));
                    }
                    on_line(&line);
                }
                Ok(Event::Stderr(line)) => self.stderr.push(line),
                Ok(Event::Closed) | Err(mpsc::TryRecvError::Disconnected) => self.closed = true,
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
            }
        }
    }

    /// Reads until the VMM closes the console (it exits) or `deadline`; a panic on the way
    /// is reported.
    pub(crate) fn wait_closed(&mut self, deadline: Instant) -> Result<(), Stop> {
        match self.wait_for(deadline, |_| None::<()>) {
            Err(Stop::Closed) => Ok(()),
            Err(stop) => Err(stop),
            Ok(()) => unreachable!("the matcher never matches"),
        }
    }

    fn remember(&mut self, line: String) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// Once the VMM is dead: waits for the readers to finish and collects what they read.
    pub(crate) fn finish(&mut self) {
        self.stdin = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        while let Ok(event) = self.rx.try_recv() {
            match event {
                Event::Line(line) => self.remember(line),
                Event::Stderr(line) => self.stderr.push(line),
                Event::Closed => self.closed = true,
            }
        }
    }

    /// The last [`TAIL_LINES`] console lines.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// Everything the VMM printed on stderr.
    pub(crate) fn stderr(&self) -> &[String] {
        &self.stderr
    }
}

/// Copies `source` to the log (raw for the console, line by line for stderr) and sends its
/// cleaned lines; sends [`Event::Closed`] at the end of the console.
fn pump(
    mut source: impl Read,
    log: &Mutex<File>,
    tx: &Sender<Event>,
    wrap: fn(String) -> Event,
    is_console: bool,
) {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if is_console {
            // A log write error must not stop the console; the run reports what it can.
            let _ = log.lock().map(|mut f| f.write_all(&buf[..n]));
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            if !is_console {
                let _ = log.lock().map(|mut f| f.write_all(&raw));
            }
            let _ = tx.send(wrap(clean(&raw)));
        }
        if pending.len() >= MAX_CONSOLE_LINE {
            if !is_console {
                let _ = log.lock().map(|mut f| f.write_all(&pending));
            }
            let _ = tx.send(wrap(clean(&std::mem::take(&mut pending))));
        }
    }
    if !pending.is_empty() {
        if !is_console {
            let _ = log.lock().map(|mut f| f.write_all(&pending));
        }
        let _ = tx.send(wrap(clean(&pending)));
    }
    if is_console {
        let _ = tx.send(Event::Closed);
    }
}

/// Turns raw console bytes into plain text: drops carriage returns, terminal escape
/// sequences (the shell's line editor sends cursor queries such as `ESC [6n`) and other
/// control characters.
pub(crate) fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // Two-character sequences such as ESC 7.
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_escapes_and_controls() {
        assert_eq!(
            clean(b"[root@kvmtool-test ]# \x1b[6nuname -r\r\n"),
            "[root@kvmtool-test ]# uname -r"
        );
        assert_eq!(clean(b"\x1b]0;title\x07ok\x1b7\x1b[1;32mgreen\x1b[0m"), "okgreen");
        assert_eq!(clean(b"a\tb\x08c\xff"), "a\tbc\u{fffd}");
    }

    #[test]
    fn an_endless_line_is_passed_on_in_pieces() {
        let log = tempfile::NamedTempFile::new().unwrap();
        let file = Mutex::new(File::create(log.path()).unwrap());
        let (tx, rx) = mpsc::channel();
        let endless = std::io::Read::take(std::io::repeat(b'x'), 1 << 20);
        pump(endless, &file, &tx, Event::Line, true);
        let lines: Vec<usize> = rx
            .try_iter()
            .filter_map(|e| match e {
                Event::Line(l) => Some(l.len()),
                _ => None,
            })
            .collect();
        assert!(lines.iter().all(|&n| n <= MAX_CONSOLE_LINE + 4096), "{lines:?}");
        assert_eq!(lines.iter().sum::<usize>(), 1 << 20, "every byte is passed on");
        assert_eq!(std::fs::metadata(log.path()).unwrap().len(), 1 << 20, "and logged");
    }

    #[test]
    fn panic_lines() {
        assert!(is_panic("[    1.9] Kernel panic - not syncing: VFS: Unable to mount root fs"));
        assert!(is_panic("Kernel panic - not syncing: No working init found.  Try passing init="));
        assert!(!is_panic("Welcome to mini Linux"));
    }
}
