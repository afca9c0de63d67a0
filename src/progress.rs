//! The progress bar of `once` and `audit` on a terminal: sources probed,
//! gone so far, rate and ETA, on stderr. When stderr is not a terminal
//! nothing is drawn, so logs and CI output stay clean. Log lines written
//! while a bar is shown go through [`StderrAboveBar`], which lifts the bar,
//! writes the line and redraws the bar below it.

use std::io::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pass::PassObserver;
use crate::probe::{Observation, Verdict};
use crate::report::WatchSummary;

/// The bar being shown, if any; read by the log writer.
static ACTIVE: RwLock<Option<ProgressBar>> = RwLock::new(None);

/// A progress bar fed by the pass.
pub struct Progress {
    bar: ProgressBar,
    gone: AtomicU64,
}

impl Progress {
    /// A bar over `sources` sources, drawn on stderr at most 10 times a second.
    pub fn new(sources: u64) -> Progress {
        let bar =
            ProgressBar::with_draw_target(Some(sources), ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} probed, {msg}, {rate}, ETA {eta}")
                .expect("the template is valid")
                // indicatif's {per_sec} prints "213.4685/s".
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", state.per_sec());
                    },
                ),
        );
        bar.set_message("0 gone");
        *ACTIVE.write().expect("progress lock") = Some(bar.clone());
        Progress {
            bar,
            gone: AtomicU64::new(0),
        }
    }

    /// Clears the bar; log lines go straight to stderr again.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *ACTIVE.write().expect("progress lock") = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

impl PassObserver for Progress {
    fn probed(&self, _watch: &str, obs: &Observation, sources: u32) {
        let sources = u64::from(sources);
        if obs.verdict == Verdict::Gone {
            let gone = self.gone.fetch_add(sources, Ordering::Relaxed) + sources;
            self.bar.set_message(format!("{gone} gone"));
        }
        self.bar.inc(sources);
    }

    fn pass_done(&self, _summary: &WatchSummary) {}
}

/// Stderr for the log writer: writes above the progress bar when one is shown.
pub struct StderrAboveBar;

impl Write for StderrAboveBar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.read().expect("progress lock").clone();
        match active {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
