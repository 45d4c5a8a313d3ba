//! The protocol spoken with the guest shell over the serial console.
//!
//! One line typed at the prompt turns echo off, makes two FIFOs and starts a loop that reads
//! and runs further lines. Each later line is a *step*: a body whose stdout and stderr go
//! through the FIFOs to two small loops that prefix every line with the boot's tag, the
//! stream and the step id, and whose exit status follows as its own tagged line once both
//! streams are drained:
//!
//! ```text
//! br2718281828 o 3 hello from the payload     (stdout)
//! br2718281828 e 3 warning: something         (stderr)
//! br2718281828 s 3 0                          (exit status)
//! ```
//!
//! The tag is `br` and a number drawn at random for each boot. It is typed only as an
//! arithmetic expression (`$((a^b))`), so the console's echo of the typed line never contains
//! it, and it never reaches the payload's environment. Every line the payload writes arrives
//! behind a stream prefix, so not even a payload that printed the tag could make a line that
//! reads as an exit status: the status travels on a path the payload's output cannot fake.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};

/// The most bytes one typed line may hold; the terminal's line buffer holds 4095.
pub(crate) const MAX_LINE: usize = 3000;

/// The per-boot tag: `br` and the number `a ^ b`, typed only as `a` and `b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tag {
    a: u32,
    b: u32,
}

impl Tag {
    /// A tag no one can guess: both halves come from the standard library's per-process
    /// random hash keys, mixed with the time and process id.
    pub(crate) fn random() -> Tag {
        let draw = |salt: u64| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(salt);
            h.write_u128(std::time::SystemTime::now().elapsed().map_or(0, |d| d.as_nanos()));
            h.write_u32(std::process::id());
            (h.finish() >> 33) as u32 | 1
        };
        Tag { a: draw(1), b: draw(2) }
    }

    #[cfg(test)]
    pub(crate) fn fixed(a: u32, b: u32) -> Tag {
        Tag { a, b }
    }

    /// The tag as it appears in the guest's output.
    pub(crate) fn text(&self) -> String {
        format!("br{}", self.a ^ self.b)
    }

    /// The line typed at the shell prompt: echo off, quiet kernel, FIFOs, a ready line, then
    /// a loop that runs each further line. It fits the shell's 1024-byte line editor.
    pub(crate) fn setup_line(&self) -> String {
        format!(
            "stty -echo; T=br$(({}^{})); F=/tmp/.busyroot; mkdir -p $F; rm -f $F/o $F/e; \
             mkfifo $F/o $F/e; dmesg -n 1 2>/dev/null; echo \"$T ready\"; \
             while read -r l; do eval \"$l\"; done",
            self.a, self.b
        )
    }
}

/// The line that runs `body` as step `id`: its stdin from `/dev/null`, its stdout and stderr
/// tagged line by line as they come, then its exit status once both are drained. The shell's
/// own `read` and `printf` pass each line on at once (`sed` would hold back the last line it
/// has read until the next one arrives, to know whether it is the last).
pub(crate) fn step_line(id: u32, body: &str) -> String {
    let relay = |stream: &str| {
        format!(
            "(while IFS= read -r l || [ -n \"$l\" ]; do printf '%s {stream} {id} %s\\n' \"$T\" \"$l\"; \
             done <$F/{stream}) &"
        )
    };
    format!(
        "{} a=$!; {} b=$!; ({body}) </dev/null >$F/o 2>$F/e; s=$?; wait $a $b; echo; \
         echo \"$T s {id} $s\"",
        relay("o"),
        relay("e")
    )
}

/// A step body that runs `command` (program and arguments) in `dir`.
pub(crate) fn command_body(dir: &str, command: &[String]) -> String {
    let words: Vec<String> = command.iter().map(|w| super::shell_quote(w)).collect();
    format!("cd {} && exec {}", super::shell_quote(dir), words.join(" "))
}

/// Step bodies that run `checks` (index and one line of shell each) one after another, each
/// in a subshell with stderr merged into stdout, each followed by a `$T:c:<index>:<status>`
/// marker. Checks are split over as many bodies as keep each line under [`MAX_LINE`].
pub(crate) fn checks_bodies(checks: &[(usize, &str)]) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut body = String::new();
    for (index, command) in checks {
        let one =
            format!("(eval {}) </dev/null 2>&1; echo \"$T:c:{index}:$?\"; ", single_quote(command));
        if !body.is_empty() && body.len() + one.len() > MAX_LINE - 200 {
            bodies.push(std::mem::take(&mut body));
        }
        body.push_str(&one);
    }
    if !body.is_empty() {
        bodies.push(body);
    }
    bodies.into_iter().map(|b| b.trim_end().trim_end_matches(';').to_string()).collect()
}

/// A step body that loads `modules` (guest paths, dependencies first) and mounts `mounts`
/// (share tag, guest directory, file system type and options).
pub(crate) fn setup_body(
    modules: &[String],
    mounts: &[(String, String, String, String)],
) -> String {
    let mut parts = Vec::new();
    for module in modules {
        parts.push(format!("insmod {}", super::shell_quote(module)));
    }
    for (tag, dir, fstype, options) in mounts {
        let dir = super::shell_quote(dir);
        parts.push(format!("mkdir -p {dir}"));
        parts.push(format!("mount -t {fstype} -o {options} {tag} {dir}"));
    }
    let mut body = String::from("set -e");
    for part in parts {
        let _ = write!(body, "; {part}");
    }
    body
}

/// `'text'` for a POSIX shell.
pub(crate) fn single_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What a console line carries, if it carries a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// The setup line ran: the loop is waiting for steps.
    Ready,
    /// A line of a step's stdout: everything after the prefix, to the end of the line.
    Out(u32, &'a str),
    /// A line of a step's stderr.
    Err(u32, &'a str),
    /// A step's exit status.
    Status(u32, i32),
}

/// The frame in one console line, if any: `None` for a line of the kernel, init or the echo
/// of typed input. Text before the tag is such output too (kernel text that ran into the
/// line). Only the first tag counts; the rest of an output line is output, whatever it holds.
pub(crate) fn frame<'a>(line: &'a str, tag: &str) -> Option<Frame<'a>> {
    let start = line
        .match_indices(tag)
        .map(|(i, _)| i)
        .find(|&i| line.as_bytes().get(i + tag.len()) == Some(&b' '))?;
    let rest = &line[start + tag.len() + 1..];
    if rest.trim_end() == "ready" {
        return Some(Frame::Ready);
    }
    let (kind, rest) = rest.split_at_checked(2)?;
    let (id, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let id: u32 = id.parse().ok()?;
    match kind {
        "o " => Some(Frame::Out(id, text)),
        "e " => Some(Frame::Err(id, text)),
        "s " => Some(Frame::Status(id, text.trim().parse().ok()?)),
        _ => None,
    }
}

/// Splits a checks step's output line at a check's end marker: the output before it, and the
/// check's index and exit status if the line holds the marker.
pub(crate) fn check_marker<'a>(text: &'a str, tag: &str) -> (&'a str, Option<(usize, i32)>) {
    let marker = format!("{tag}:c:");
    let Some(at) = text.find(&marker) else { return (text, None) };
    let parsed = text[at + marker.len()..]
        .split_once(':')
        .and_then(|(index, status)| Some((index.parse().ok()?, status.trim().parse().ok()?)));
    match parsed {
        Some(done) => (&text[..at], Some(done)),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_line_never_holds_the_tag() {
        let tag = Tag::fixed(1000, 7);
        assert_eq!(tag.text(), "br1007");
        let line = tag.setup_line();
        assert!(!line.contains("br1007"), "{line}");
        assert!(line.contains("T=br$((1000^7))"));
        assert!(line.len() < 1024);
        assert_eq!(frame(&line, &tag.text()), None);
        let random = Tag::random();
        assert_ne!(random, Tag::random(), "two boots get two tags");
    }

    #[test]
    fn frames_of_payload_output() {
        let t = "br999";
        assert_eq!(frame("br999 ready", t), Some(Frame::Ready));
        assert_eq!(frame("br999 o 3 hello world", t), Some(Frame::Out(3, "hello world")));
        assert_eq!(frame("br999 o 3 ", t), Some(Frame::Out(3, "")));
        assert_eq!(frame("br999 e 3 oops", t), Some(Frame::Err(3, "oops")));
        assert_eq!(frame("br999 s 3 255", t), Some(Frame::Status(3, 255)));
        // Kernel output before the tag is not the payload's.
        assert_eq!(frame("[  1.2] randombr999 o 1 x", t), Some(Frame::Out(1, "x")));
        assert_eq!(frame("[  1.2] random: crng init done", t), None);
        // Another number that starts with the tag's digits is not the tag.
        assert_eq!(frame("br9990 s 3 0", t), None);
    }

    #[test]
    fn forged_status_lines_stay_output() {
        // The payload printed a status line for its own step, even with the right tag: it
        // arrives behind the stream prefix and stays a line of output.
        let t = "br999";
        assert_eq!(frame("br999 o 4 br999 s 4 0", t), Some(Frame::Out(4, "br999 s 4 0")));
        assert_eq!(frame("br999 e 4 br999 s 4 0", t), Some(Frame::Err(4, "br999 s 4 0")));
        assert_eq!(frame("br999 o 4 br999 ready", t), Some(Frame::Out(4, "br999 ready")));
    }

    #[test]
    fn check_markers() {
        let t = "br999";
        assert_eq!(check_marker("br999:c:4:0", t), ("", Some((4, 0))));
        assert_eq!(check_marker("42br999:c:4:2", t), ("42", Some((4, 2))));
        assert_eq!(check_marker("plain output", t), ("plain output", None));
        assert_eq!(check_marker("br999:c:x:0", t), ("br999:c:x:0", None));
    }

    #[test]
    fn check_bodies_split_long_plans() {
        let long = "x".repeat(1000);
        let checks: Vec<(usize, &str)> = (0..5).map(|i| (i, long.as_str())).collect();
        let bodies = checks_bodies(&checks);
        assert!(bodies.len() >= 2, "{}", bodies.len());
        for body in &bodies {
            assert!(step_line(1, body).len() <= MAX_LINE, "{}", body.len());
        }
        let short = checks_bodies(&[(0, "uname -r"), (1, "echo 'a'")]);
        assert_eq!(
            short,
            [
                r#"(eval 'uname -r') </dev/null 2>&1; echo "$T:c:0:$?"; (eval 'echo '\''a'\''') </dev/null 2>&1; echo "$T:c:1:$?""#
            ]
        );
    }

    #[test]
    fn command_and_setup_bodies() {
        assert_eq!(
            command_body("/mnt/t", &["/mnt/t/prog".into(), "a b".into()]),
            "cd /mnt/t && exec /mnt/t/prog 'a b'"
        );
        let body = setup_body(
            &["/lib/modules/6.1/kernel/fs/fuse/fuse.ko".into()],
            &[("br0".into(), "/mnt/x".into(), "9p".into(), "trans=virtio".into())],
        );
        assert_eq!(
            body,
            "set -e; insmod /lib/modules/6.1/kernel/fs/fuse/fuse.ko; mkdir -p /mnt/x; \
             mount -t 9p -o trans=virtio br0 /mnt/x"
        );
    }
}
