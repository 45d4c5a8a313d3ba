//! Progress on the terminal: a spinner with the step, elapsed time and what the step's command
//! is doing on a TTY; plain lines with timings otherwise (CI logs), with a line every 30 s
//! while a step runs, even a silent one.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use busyroot::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// How often a long step prints where it is when stderr is not a terminal.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Reports busyroot's steps on stderr.
pub struct Reporter {
    spinner: Mutex<Option<ProgressBar>>,
    /// The running step, shared with the thread that prints the 30 s lines.
    step: Arc<Mutex<Option<Step>>>,
    tty: bool,
}

/// A step that is running.
struct Step {
    name: String,
    /// Tells this step from a later one of the same name.
    id: u64,
    started: Instant,
    last_printed: Instant,
    /// The last line its command printed.
    latest: String,
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter {
            spinner: Mutex::new(None),
            step: Arc::new(Mutex::new(None)),
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

/// Prints where step `id` is every [`HEARTBEAT`] until it ends, so a log shows a silent
/// phase (a long link) as running.
fn heartbeat(step: Arc<Mutex<Option<Step>>>, id: u64) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let mut guard = step.lock().unwrap();
        let Some(step) = guard.as_mut().filter(|s| s.id == id) else { return };
        if step.last_printed.elapsed() >= HEARTBEAT {
            step.last_printed = Instant::now();
            let at = if step.latest.is_empty() {
                String::new()
            } else {
                format!(", at: {}", step.latest)
            };
            eprintln!("{}: still running after {}{at}", step.name, minutes(step.started.elapsed()));
        }
    }
}

impl Progress for Reporter {
    fn start(&self, step: &str) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        *self.step.lock().unwrap() = Some(Step {
            name: step.to_string(),
            id,
            started: now,
            last_printed: now,
            latest: String::new(),
        });
        if !self.tty {
            let shared = Arc::clone(&self.step);
            std::thread::spawn(move || heartbeat(shared, id));
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

    fn warning(&self, message: &str) {
        self.println(&format!("warning: {message}"));
    }

    fn output(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let mut step = self.step.lock().unwrap();
        let Some(step) = step.as_mut() else { return };
        if self.tty {
            if let Some(bar) = &*self.spinner.lock().unwrap() {
                bar.set_message(format!("{}: {line}", step.name));
            }
        } else {
            step.latest = line.to_string();
        }
    }

    fn input(&self, input: &busyroot::inputs::Input) {
        self.println(&format!("input: {input}"));
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
