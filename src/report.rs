//! Decision records: one tracing event per decision (fixed field names),
//! one JSON line per decision in the `--report` sink, and the human summary
//! per watch that `once`, `audit` and `run` print.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::policy::Decision;
use crate::probe::Verdict;

/// One decision about one source in one pass: the report line's fields, in
/// the contract's order.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time: String,
    pub watch: &'a str,
    pub project: &'a str,
    pub src: &'a str,
    pub probe: &'a str,
    pub status: Option<u16>,
    pub verdict: Verdict,
    pub decision: Decision,
    pub reason: &'a str,
    pub dry_run: bool,
    /// False for a source only the inventory remembers.
    pub referenced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// Where decisions go: the log always, the report file when asked.
pub struct Reporter {
    sink: Option<Mutex<Sink>>,
}

/// The report file and the first error writing it (a full disk): the pass
/// goes on, the log has every decision, and the command ends in an error.
struct Sink {
    out: Box<dyn Write + Send>,
    error: Option<std::io::Error>,
}

impl Sink {
    fn note(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r
            && self.error.is_none()
        {
            tracing::error!(error = %e, "the report cannot be written; the log has every decision");
            self.error = Some(e);
        }
    }
}

impl Reporter {
    /// No report file; decisions are only logged.
    pub fn log_only() -> Reporter {
        Reporter { sink: None }
    }

    /// A report to `path`, or to stdout for `-`.
    pub fn to_path(path: &Path) -> std::io::Result<Reporter> {
        let out: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(File::create(path)?)
        };
        Ok(Self::to_writer(out))
    }

    pub fn to_writer(out: Box<dyn Write + Send>) -> Reporter {
        Reporter {
            sink: Some(Mutex::new(Sink {
                out: Box::new(BufWriter::with_capacity(64 * 1024, out)),
                error: None,
            })),
        }
    }

    /// Logs a decision and writes its report line, secrets and URL
    /// passwords masked (an error or reason may quote a server).
    pub fn emit(&self, r: &Record<'_>) {
        use crate::redact::text;
        let (src, probe, reason) = (text(r.src), text(r.probe), text(r.reason));
        let error = r.error.map(text);
        let r = &Record {
            time: r.time.clone(),
            src: &src,
            probe: &probe,
            reason: &reason,
            error: error.as_deref(),
            ..*r
        };
        macro_rules! event {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    watch = r.watch,
                    project = r.project,
                    src = r.src,
                    probe = r.probe,
                    status = r.status,
                    verdict = r.verdict.as_str(),
                    decision = r.decision.as_str(),
                    reason = r.reason,
                    error = r.error,
                    "decision"
                )
            };
        }
        match r.decision {
            Decision::Withheld | Decision::Failed => event!(tracing::Level::WARN),
            _ => event!(tracing::Level::INFO),
        }
        if let Some(sink) = &self.sink {
            let mut sink = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if sink.error.is_some() {
                return;
            }
            // A report that cannot be written must not stop the pass; the log has it.
            let written = serde_json::to_writer(&mut sink.out, r)
                .map_err(std::io::Error::from)
                .and_then(|()| sink.out.write_all(b"\n"));
            sink.note(written);
        }
    }

    pub fn flush(&self) {
        if let Some(sink) = &self.sink {
            let mut sink = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let flushed = sink.out.flush();
            sink.note(flushed);
        }
    }

    /// Flushes, and returns the first error met writing the report, if any.
    pub fn finish(&self) -> std::io::Result<()> {
        self.flush();
        match &self.sink {
            None => Ok(()),
            Some(sink) => {
                let mut sink = sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match sink.error.take() {
                    Some(e) => {
                        // Kept for a later call; an io::Error is not Clone.
                        sink.error = Some(std::io::Error::new(e.kind(), e.to_string()));
                        Err(e)
                    }
                    None => Ok(()),
                }
            }
        }
    }
}

/// The time field of a report line (formatted once per second per thread).
pub fn now_rfc3339() -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = Utc::now();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != now.timestamp() {
            *last = (
                now.timestamp(),
                now.to_rfc3339_opts(SecondsFormat::Secs, true),
            );
        }
        last.1.clone()
    })
}

/// What one pass did for one watch.
#[derive(Debug, Clone, Default)]
pub struct WatchSummary {
    pub watch: String,
    pub project: String,
    pub sources: usize,
    pub probes: usize,
    pub checked: usize,
    pub present: usize,
    pub gone: usize,
    pub inconclusive: usize,
    /// How many sources got each decision.
    pub decisions: DecisionCounts,
    pub api_calls: u32,
    pub duration: Duration,
    /// The alarm a guard raised, if any (exit code 3).
    pub guard_alarm: Option<String>,
    /// In a dry run: the alarm a guard would raise once the pending are
    /// confirmed (no exit code of its own).
    pub guard_forecast: Option<String>,
    /// Sources a dry run would purge.
    pub would_purge: Vec<String>,
    /// In a dry run: the first [`PENDING_LISTED`] pending sources, with
    /// their reasons (how many passes or how long until a purge).
    pub pending: Vec<(String, String)>,
    pub dry_run: bool,
    pub interrupted: bool,
    /// Sources probed that no longer are configured or discovered.
    pub remembered: usize,
    /// What this pass's discovery found, when one ran.
    pub discovery: Option<DiscoverySummary>,
}

/// A discovery's figures, for the summary and the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiscoverySummary {
    /// Sources found by this discovery.
    pub found: usize,
    /// Of those, sources the inventory did not know.
    pub new: usize,
    pub pages_read: usize,
    pub errors: usize,
    /// No error, and not an unexplained empty result: it counts as the
    /// watch's latest successful discovery.
    pub complete: bool,
}

/// A count per [`Decision`], a field each: a new decision does not compile
/// until it has its own (an array indexed by `d as usize` would go out of
/// step with the enum silently).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionCounts {
    keep: usize,
    skip: usize,
    pending: usize,
    purge: usize,
    would_purge: usize,
    already_purged: usize,
    withheld: usize,
    failed: usize,
    changed: usize,
    invalidate: usize,
    would_invalidate: usize,
}

impl DecisionCounts {
    pub fn get(&self, d: Decision) -> usize {
        let mut copy = *self;
        *copy.get_mut(d)
    }

    fn get_mut(&mut self, d: Decision) -> &mut usize {
        match d {
            Decision::Keep => &mut self.keep,
            Decision::Skip => &mut self.skip,
            Decision::Pending => &mut self.pending,
            Decision::Purge => &mut self.purge,
            Decision::WouldPurge => &mut self.would_purge,
            Decision::AlreadyPurged => &mut self.already_purged,
            Decision::Withheld => &mut self.withheld,
            Decision::Failed => &mut self.failed,
            Decision::Changed => &mut self.changed,
            Decision::Invalidate => &mut self.invalidate,
            Decision::WouldInvalidate => &mut self.would_invalidate,
        }
    }
}

/// At most this many pending sources are listed in a dry run's summary.
pub const PENDING_LISTED: usize = 100;

impl WatchSummary {
    /// Lists a pending source in the summary, up to [`PENDING_LISTED`].
    pub fn list_pending(&mut self, src: &str, reason: &str) {
        if self.pending.len() < PENDING_LISTED {
            self.pending.push((src.to_owned(), reason.to_owned()));
        }
    }

    pub fn count(&self, d: Decision) -> usize {
        self.decisions.get(d)
    }

    pub fn add(&mut self, d: Decision) {
        *self.decisions.get_mut(d) += 1;
    }

    pub fn add_verdict(&mut self, v: Verdict, sources: usize) {
        self.checked += sources;
        match v {
            Verdict::Present => self.present += sources,
            Verdict::Gone => self.gone += sources,
            Verdict::Inconclusive => self.inconclusive += sources,
        }
    }
}

impl WatchSummary {
    /// The summary as one log event (`pass summary`), its counts as
    /// fields: what log collectors read where a person reads the line.
    pub fn log(&self) {
        use crate::redact::text;
        tracing::info!(
            watch = %text(&self.watch),
            project = %text(&self.project),
            sources = self.sources,
            checked = self.checked,
            present = self.present,
            gone = self.gone,
            inconclusive = self.inconclusive,
            purged = self.count(Decision::Purge),
            would_purge = self.count(Decision::WouldPurge),
            pending = self.count(Decision::Pending),
            already_purged = self.count(Decision::AlreadyPurged),
            withheld = self.count(Decision::Withheld),
            failed = self.count(Decision::Failed),
            changed = self.count(Decision::Changed),
            invalidated = self.count(Decision::Invalidate),
            would_invalidate = self.count(Decision::WouldInvalidate),
            remembered = self.remembered,
            discovered = self.discovery.as_ref().map(|d| d.found),
            discovered_new = self.discovery.as_ref().map(|d| d.new),
            api_calls = self.api_calls,
            duration_ms = self.duration.as_millis() as u64,
            dry_run = self.dry_run,
            interrupted = self.interrupted,
            guard_alarm = self.guard_alarm.as_deref().map(text).as_deref(),
            "pass summary"
        );
    }
}

/// The summary is for a person's terminal: names, sources and reasons have
/// their control characters escaped and their secrets masked.
impl fmt::Display for WatchSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::redact::for_stdout;
        write!(
            f,
            "{}: {} checked ({} present, {} gone, {} inconclusive)",
            for_stdout(&self.watch),
            self.checked,
            self.present,
            self.gone,
            self.inconclusive
        )?;
        let purged = if self.dry_run {
            format!("{} would purge", self.count(Decision::WouldPurge))
        } else {
            format!("{} purged", self.count(Decision::Purge))
        };
        write!(
            f,
            "; {purged}, {} pending, {} already purged, {} withheld, {} failed; {} API call{}; {:.2}s",
            self.count(Decision::Pending),
            self.count(Decision::AlreadyPurged),
            self.count(Decision::Withheld),
            self.count(Decision::Failed),
            self.api_calls,
            if self.api_calls == 1 { "" } else { "s" },
            self.duration.as_secs_f64()
        )?;
        let (changed, invalidated) = (
            self.count(Decision::Changed),
            self.count(Decision::Invalidate) + self.count(Decision::WouldInvalidate),
        );
        if changed + invalidated > 0 {
            write!(
                f,
                "; {invalidated} {}, {changed} changed (unconfirmed)",
                if self.dry_run {
                    "would invalidate"
                } else {
                    "invalidated"
                }
            )?;
        }
        if self.remembered > 0 {
            write!(f, "; {} remembered (no longer referenced)", self.remembered)?;
        }
        if let Some(d) = &self.discovery {
            write!(
                f,
                "; discovered {} ({} new) on {} page{}, {} error{}{}",
                d.found,
                d.new,
                d.pages_read,
                if d.pages_read == 1 { "" } else { "s" },
                d.errors,
                if d.errors == 1 { "" } else { "s" },
                if d.complete {
                    ""
                } else {
                    " (incomplete: nothing unreferenced)"
                }
            )?;
        }
        if self.interrupted {
            write!(
                f,
                " (interrupted by a signal: {} of {} checked, no new purge calls)",
                self.checked, self.sources
            )?;
        }
        if let Some(alarm) = &self.guard_alarm {
            write!(f, "\n  guard: {}", for_stdout(alarm))?;
        }
        if let Some(forecast) = &self.guard_forecast {
            write!(f, "\n  guard would trip: {forecast}")?;
        }
        for src in &self.would_purge {
            write!(f, "\n  would purge {}", for_stdout(src))?;
        }
        for (src, reason) in &self.pending {
            write!(f, "\n  pending {src}: {reason}")?;
        }
        let unlisted = self
            .count(Decision::Pending)
            .saturating_sub(self.pending.len());
        if self.dry_run && unlisted > 0 {
            write!(f, "\n  ... and {unlisted} more pending")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::Captured;

    /// Each decision counts in its own place: adding one decision k times
    /// raises its count to k and leaves every other at its own.
    #[test]
    fn each_decision_has_its_own_count() {
        let mut summary = WatchSummary::default();
        for (k, d) in Decision::ALL.into_iter().enumerate() {
            for _ in 0..=k {
                summary.add(d);
            }
        }
        for (k, d) in Decision::ALL.into_iter().enumerate() {
            assert_eq!(summary.count(d), k + 1, "{d:?}");
        }
    }

    #[test]
    fn report_line_has_the_contract_fields_in_order() {
        let buf = Captured::default();
        let r = Reporter::to_writer(Box::new(buf.clone()));
        r.emit(&Record {
            time: "2026-11-28T12:00:00Z".into(),
            watch: "site",
            project: "my-next-app",
            src: "/images/hero.png",
            probe: "https://my-next-app.vercel.app/images/hero.png",
            status: Some(404),
            verdict: Verdict::Gone,
            decision: Decision::Purge,
            reason: "404 on 2 consecutive passes",
            dry_run: false,
            referenced: true,
            error: None,
        });
        r.flush();
        let line = buf.text();
        assert_eq!(
            line,
            r#"{"time":"2026-11-28T12:00:00Z","watch":"site","project":"my-next-app","src":"/images/hero.png","probe":"https://my-next-app.vercel.app/images/hero.png","status":404,"verdict":"gone","decision":"purge","reason":"404 on 2 consecutive passes","dry_run":false,"referenced":true}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn no_answer_reports_null_status_and_the_error() {
        let buf = Captured::default();
        let r = Reporter::to_writer(Box::new(buf.clone()));
        r.emit(&Record {
            time: now_rfc3339(),
            watch: "w",
            project: "p",
            src: "/a",
            probe: "http://x/a",
            status: None,
            verdict: Verdict::Inconclusive,
            decision: Decision::Skip,
            reason: "inconclusive: timeout after 1s",
            dry_run: true,
            referenced: false,
            error: Some("timeout after 1s"),
        });
        r.flush();
        let v = buf.take_json_lines().remove(0);
        assert_eq!(v["status"], serde_json::Value::Null);
        assert_eq!(v["error"], "timeout after 1s");
        assert_eq!(v["decision"], "skip");
    }
}
