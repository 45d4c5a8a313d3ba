//! Progress on the terminal: a spinner with the step and elapsed time on a TTY, plain lines
//! with timings otherwise (CI logs).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use busyroot::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Reports busyroot's steps on stderr.
pub struct Reporter {
    spinner: Mutex<Option<ProgressBar>>,
    tty: bool,
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter { spinner: Mutex::new(None), tty: std::io::stderr().is_terminal() }
    }

    fn println(&self, line: &str) {
        match &*self.spinner.lock().unwrap() {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Reporter {
    fn start(&self, step: &str) {
        if !self.tty {
            return;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
        bar.set_message(step.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        *self.spinner.lock().unwrap() = Some(bar);
    }

    fn finish(&self, step: &str, elapsed: Duration, detail: &str) {
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

    fn input(&self, input: &busyroot::inputs::Input) {
        self.println(&format!("input: {input}"));
    }
}
