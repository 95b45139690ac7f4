//! Live progress on stderr: an indicatif bar on a terminal; elsewhere (output sent to a file)
//! a plain status line every few seconds; nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain status line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    bar: ProgressBar,
    plain: bool,
    quiet: bool,
    phase: String,
    last_plain: Option<Instant>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = if quiet || !terminal { ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()) } else { ProgressBar::new(0) };
        Progress { bar, plain: !quiet && !terminal, quiet, phase: String::new(), last_plain: None }
    }

    /// Starts a phase: a bar of `len` steps, or a spinner.
    pub fn phase(&mut self, name: &str, len: Option<u64>) {
        self.phase = name.to_string();
        self.last_plain = None;
        let style = match len {
            Some(_) => ProgressStyle::with_template("{prefix:>9.bold} [{elapsed_precise}] [{bar:30.cyan/blue}] {pos}/{len} {msg}"),
            None => ProgressStyle::with_template("{prefix:>9.bold} [{elapsed_precise}] {spinner} {msg}"),
        }
        .expect("valid progress template");
        self.bar.set_style(style.progress_chars("=> "));
        self.bar.set_prefix(name.to_string());
        self.bar.set_length(len.unwrap_or(0));
        self.bar.set_position(0);
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    pub fn update(&mut self, pos: u64, msg: String) {
        self.bar.set_position(pos);
        if self.plain && self.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
            self.last_plain = Some(Instant::now());
            let len = self.bar.length().filter(|l| *l > 0).map(|l| format!("{pos}/{l} ")).unwrap_or_default();
            eprintln!("[{:>7.1}s] {:>9} {len}{msg}", self.bar.elapsed().as_secs_f64(), self.phase);
        }
        self.bar.set_message(msg);
    }

    /// A line above the bar (or on stderr).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line.as_ref());
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
