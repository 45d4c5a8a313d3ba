//! Progress on the terminal: a spinner with the step, elapsed time and what the step's command
//! is doing on a TTY; plain lines with timings otherwise (CI logs), with a line every 30 s
//! while a long step runs.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use busyroot::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// How often a long step prints where it is when stderr is not a terminal.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Reports busyroot's steps on stderr.
pub struct Reporter {
    spinner: Mutex<Option<ProgressBar>>,
    /// The running step: its name, when it started and when it last printed a line.
    step: Mutex<Option<(String, Instant, Instant)>>,
    tty: bool,
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter {
            spinner: Mutex::new(None),
            step: Mutex::new(None),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn println(&self, line: &str) {
        match &*self.spinner.lock().unwrap() {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// `75s` as "1m15s", `9s` as "9s".
fn minutes(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

impl Progress for Reporter {
    fn start(&self, step: &str) {
        let now = Instant::now();
        *self.step.lock().unwrap() = Some((step.to_string(), now, now));
        if !self.tty {
            return;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] {wide_msg}").unwrap());
        bar.set_message(step.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        *self.spinner.lock().unwrap() = Some(bar);
    }

    fn finish(&self, step: &str, elapsed: Duration, detail: &str) {
        *self.step.lock().unwrap() = None;
        if let Some(bar) = self.spinner.lock().unwrap().take() {
            bar.finish_and_clear();
        }
        let detail = if detail.is_empty() { String::new() } else { format!("  ({detail})") };
        eprintln!("{step:<22} {:>7.2}s{detail}", elapsed.as_secs_f64());
    }

    fn command(&self, command_line: &str) {
        self.println(&format!("$ {command_line}"));
    }

    fn note(&self, message: &str) {
        self.println(&format!("note: {message}"));
    }

    fn output(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let mut step = self.step.lock().unwrap();
        let Some((name, started, last)) = step.as_mut() else { return };
        if self.tty {
            if let Some(bar) = &*self.spinner.lock().unwrap() {
                bar.set_message(format!("{name}: {line}"));
            }
        } else if last.elapsed() >= HEARTBEAT {
            *last = Instant::now();
            eprintln!("{name}: still running after {}, at: {line}", minutes(started.elapsed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_time_reads_in_minutes() {
        assert_eq!(minutes(Duration::from_secs(9)), "9s");
        assert_eq!(minutes(Duration::from_secs(75)), "1m15s");
        assert_eq!(minutes(Duration::from_secs(420)), "7m00s");
    }
}
