//! Parsers of what the guest sends on a channel: the end of a data stream (the boot's tag,
//! which only the runner knows) and the runner's status lines. The guest is untrusted input:
//! both take arbitrary bytes in arbitrary pieces, never panic, and hold a bounded amount.

/// The longest status line kept; a longer one is cut there and reads as garbled.
pub(crate) const MAX_STATUS_LINE: usize = 64;

/// Finds the tag that ends a data stream, passing on every byte before it as it comes and
/// holding back no more than the tag's length less one.
#[derive(Debug, Clone)]
pub(crate) struct StreamEnd {
    tag: Vec<u8>,
    held: Vec<u8>,
    done: bool,
}

impl StreamEnd {
    /// A stream that ends at `tag` (not empty).
    pub(crate) fn new(tag: &[u8]) -> StreamEnd {
        assert!(!tag.is_empty(), "a stream end needs a tag");
        StreamEnd { tag: tag.to_vec(), held: Vec::new(), done: false }
    }

    /// Takes the next piece of the stream: appends to `out` what is surely the payload's, and
    /// returns whether the tag has arrived (everything after it is ignored).
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if self.done {
            return true;
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(input);
        if let Some(at) = find(&buf, &self.tag) {
            out.extend_from_slice(&buf[..at]);
            self.done = true;
            return true;
        }
        // The tag may begin in the last bytes: keep those that could start it.
        let keep = (1..self.tag.len().min(buf.len() + 1))
            .rev()
            .find(|&n| buf[buf.len() - n..] == self.tag[..n])
            .unwrap_or(0);
        out.extend_from_slice(&buf[..buf.len() - keep]);
        self.held = buf[buf.len() - keep..].to_vec();
        false
    }

    /// Whether the tag has arrived.
    #[cfg(test)]
    pub(crate) fn done(&self) -> bool {
        self.done
    }
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while from + needle.len() <= haystack.len() {
        let at = from
            + haystack[from..=haystack.len() - needle.len()].iter().position(|&b| b == first)?;
        if haystack[at..at + needle.len()] == *needle {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// One line of the runner on the status port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusLine {
    /// `r`: set-up done, the command starts.
    Ready,
    /// `s N`: the command exited with status N, after its streams were ended.
    Exited(i32),
    /// `x N`: a set-up step (a module, a mount) failed with status N.
    SetupFailed(i32),
    /// `d`: after the host's leave, the guest's file systems are synced and read-only; the
    /// power may go.
    Done,
    /// Anything else, shown escaped and cut at [`MAX_STATUS_LINE`] bytes.
    Garbled(String),
}

impl StatusLine {
    fn parse(line: &[u8]) -> StatusLine {
        let number = |rest: &[u8]| {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|t| t.parse::<i32>().ok())
                .filter(|n| (0..=255).contains(n))
        };
        match line {
            b"r" => StatusLine::Ready,
            b"d" => StatusLine::Done,
            [b's', b' ', rest @ ..] if number(rest).is_some() => {
                StatusLine::Exited(number(rest).unwrap_or(0))
            }
            [b'x', b' ', rest @ ..] if number(rest).is_some() => {
                StatusLine::SetupFailed(number(rest).unwrap_or(0))
            }
            _ => StatusLine::Garbled(line.escape_ascii().to_string()),
        }
    }

    /// The line in words, for a report.
    pub(crate) fn describe(&self) -> String {
        match self {
            StatusLine::Ready => "a second ready line".into(),
            StatusLine::Done => "a done line before its exit status".into(),
            StatusLine::Exited(s) => format!("an exit status ({s}) before the ready line"),
            StatusLine::SetupFailed(s) => format!("a set-up failure ({s}) after the ready line"),
            StatusLine::Garbled(text) => format!("`{text}`, which is not a status line"),
        }
    }
}

/// Splits the status port's bytes into [`StatusLine`]s.
#[derive(Debug, Default)]
pub(crate) struct StatusReader {
    line: Vec<u8>,
    /// The current line ran past [`MAX_STATUS_LINE`]: it is garbled whatever follows.
    overlong: bool,
}

impl StatusReader {
    /// Takes the next piece; returns the lines it completed.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Vec<StatusLine> {
        let mut lines = Vec::new();
        for &b in input {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                lines.push(if std::mem::take(&mut self.overlong) {
                    StatusLine::Garbled(format!("{}…", line.escape_ascii()))
                } else {
                    StatusLine::parse(&line)
                });
            } else if self.line.len() < MAX_STATUS_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
        lines
    }

    /// Bytes held for an unfinished line.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.line.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(tag: &[u8], pieces: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut end = StreamEnd::new(tag);
        let mut out = Vec::new();
        let mut done = false;
        for piece in pieces {
            done = end.feed(piece, &mut out);
        }
        (out, done)
    }

    #[test]
    fn streams_end_at_the_tag_even_across_pieces() {
        assert_eq!(run(b"TAG", &[b"abc", b"TA", b"Gxyz"]), (b"abc".to_vec(), true));
        assert_eq!(run(b"TAG", &[b"aT", b"TTA", b"G"]), (b"aTT".to_vec(), true));
        assert_eq!(run(b"TAG", &[b"TA"]), (Vec::new(), false));
        assert_eq!(run(b"TAG", &[b"\0\xff\r\n", b"TAG"]), (b"\0\xff\r\n".to_vec(), true));
        let (out, done) = run(b"TAG", &[b"TAXTAG"]);
        assert_eq!((out.as_slice(), done), (&b"TAX"[..], true));
    }

    #[test]
    fn status_lines() {
        let mut r = StatusReader::default();
        assert_eq!(r.feed(b"r\ns 25"), vec![StatusLine::Ready]);
        assert_eq!(r.feed(b"5\n"), vec![StatusLine::Exited(255)]);
        assert_eq!(
            r.feed(b"x 1\ns 256\ns -1\n"),
            vec![
                StatusLine::SetupFailed(1),
                StatusLine::Garbled("s 256".into()),
                StatusLine::Garbled("s -1".into())
            ]
        );
        let long = vec![b'7'; 10_000];
        assert!(r.feed(&long).is_empty());
        assert_eq!(r.held(), MAX_STATUS_LINE);
        assert!(matches!(r.feed(b"\n")[..], [StatusLine::Garbled(_)]));
    }

    /// Arbitrary bytes cut at arbitrary points: what comes out is the input up to the tag's
    /// first occurrence, whatever the cuts, and what is held stays under the tag's length.
    fn cuts(bytes: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = points.iter().map(|p| p % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            pieces.push(bytes[last..p].to_vec());
            last = p;
        }
        pieces
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn stream_end_is_exact_for_any_cuts(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            tag in proptest::collection::vec(any::<u8>(), 1..12),
            tail in proptest::collection::vec(any::<u8>(), 0..50),
            with_tag in any::<bool>(),
            points in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut all = body.clone();
            if with_tag {
                all.extend_from_slice(&tag);
                all.extend_from_slice(&tail);
            }
            let expected_end = find_all(&all, &tag);
            let mut end = StreamEnd::new(&tag);
            let mut out = Vec::new();
            for piece in cuts(&all, &points) {
                end.feed(&piece, &mut out);
                prop_assert!(end.held.len() < tag.len());
            }
            match expected_end {
                Some(at) => {
                    prop_assert!(end.done());
                    prop_assert_eq!(&out[..], &all[..at]);
                }
                None => {
                    prop_assert!(!end.done());
                    prop_assert_eq!([out.as_slice(), end.held.as_slice()].concat(), all);
                }
            }
        }

        #[test]
        fn status_reader_never_panics_or_grows(
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
            points in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut r = StatusReader::default();
            let mut whole = StatusReader::default();
            let mut lines = Vec::new();
            for piece in cuts(&bytes, &points) {
                lines.extend(r.feed(&piece));
                prop_assert!(r.held() <= MAX_STATUS_LINE);
            }
            prop_assert_eq!(lines, whole.feed(&bytes), "cuts do not change the lines");
        }
    }

    fn find_all(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }
}
