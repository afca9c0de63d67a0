//! One source in one pass, as a plain function: its observation and its
//! record in, its decision (or the call it is due for), the record to write
//! back and the history row out. No socket, file or clock: the pass does the
//! probing before and the writing and calling after.
//!
//! Gone sources follow [`policy::judge`]; present ones, with `on_change:
//! invalidate`, follow [`policy::judge_change`].

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::{OnChange, Rules};
use crate::policy::{self, Change, Decision, Step};
use crate::probe::{Observation, Verdict};
use crate::store::{Endpoint, HistoryRow, Millis, Rec, RowWrite, Validators, millis};

/// A source due for an API call: confirmed gone and not yet purged in its
/// episode, or confirmed changed and not yet invalidated.
#[derive(Debug, Clone)]
pub struct Due {
    pub endpoint: Endpoint,
    pub src: Arc<str>,
    pub probe: Arc<str>,
    pub status: Option<u16>,
    pub verdict: Verdict,
    pub reason: String,
    /// Orders a capped pass: the longest gone (or changed) first.
    pub since: DateTime<Utc>,
    pub referenced: bool,
    /// The record after this pass's observation (decision still open).
    pub rec: Rec,
    pub old_decision: Option<Decision>,
    /// The new validators, stored once the invalidate call answered 200.
    pub validators: Option<Validators>,
    /// Set once the guards or the API have spoken.
    pub decision: Option<(Decision, String)>,
}

impl Due {
    /// The record once its call answered 200: purged in its episode, or
    /// its new validators stored.
    pub fn succeeded(&mut self, now: DateTime<Utc>) -> RowWrite {
        let mut validators = None;
        let mut candidate = None;
        match self.endpoint {
            Endpoint::Delete => {
                if let Some(ep) = self.rec.episode.as_mut() {
                    policy::mark_purged(ep, now);
                }
                self.rec.last_decision = Some(Decision::Purge);
            }
            Endpoint::Invalidate => {
                if let Some(v) = &self.validators {
                    self.rec.validators_all = v.all();
                    self.rec.validators_identity = v.identity();
                }
                self.rec.candidate = 0;
                self.rec.candidate_streak = 0;
                validators = self.validators.clone();
                candidate = Some(None);
                self.rec.last_decision = Some(Decision::Invalidate);
            }
        }
        RowWrite {
            src: self.src.clone(),
            probe: self.probe.to_string(),
            rec: self.rec.clone(),
            validators,
            candidate,
            seen_in: None,
        }
    }
}

/// What one source's observation came to.
#[derive(Debug)]
pub enum Judged {
    /// Decided without an API call.
    Settled {
        decision: Decision,
        reason: String,
        row: Option<RowWrite>,
        history: Option<HistoryRow>,
    },
    /// Due for a call; `row` (when set) must be written before the call,
    /// so that the call's effect finds the source's row.
    Due {
        due: Box<Due>,
        row: Option<RowWrite>,
    },
}

/// Where a source was listed, for its record.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    pub referenced: bool,
    pub seen_in: &'a str,
}

/// Judges one source of a probe URL. `old` is its stored record (`None`:
/// first sight).
pub fn judge(
    src: &Arc<str>,
    probe: &Arc<str>,
    obs: &Observation,
    old: Option<Rec>,
    listing: Listing<'_>,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Judged {
    let now_ms: Millis = millis(now);
    let j = policy::judge(
        obs,
        old.as_ref().and_then(|r| r.episode.as_deref()),
        rules.confirmations,
        rules.min_gone_for,
        now,
    );
    let was_gone = old.as_ref().is_some_and(|r| r.episode.is_some());
    let mut rec = old
        .clone()
        .unwrap_or_else(|| Rec::new(now_ms, listing.referenced));
    rec.set_referenced(listing.referenced, now_ms);
    rec.last_verdict = Some(obs.verdict);
    rec.last_status = obs.status;
    let first_gone = j.next.as_ref().map(|e| e.first_gone);
    rec.episode = j.next.map(Box::new);
    let old_decision = old.as_ref().and_then(|r| r.last_decision);

    let mut validators = None;
    let mut candidate = None;
    let mut step = j.step.decision().map(|d| (d, j.reason.clone()));
    let mut invalidate: Option<String> = None;
    if let (Verdict::Present, Some(seen)) = (obs.verdict, &obs.validators) {
        let (identity, all) = (seen.identity(), seen.all());
        let store = |rec: &mut Rec, validators: &mut Option<Validators>| {
            if all != rec.validators_all {
                rec.validators_all = all;
                rec.validators_identity = identity;
                *validators = Some(seen.clone());
            }
        };
        match rules.on_change {
            OnChange::Ignore => {
                store(&mut rec, &mut validators);
                if rec.candidate != 0 {
                    (rec.candidate, rec.candidate_streak) = (0, 0);
                    candidate = Some(None);
                }
            }
            OnChange::Invalidate => {
                let c = policy::judge_change(
                    rec.validators_identity,
                    rec.candidate,
                    rec.candidate_streak,
                    identity,
                    was_gone,
                    rules.confirmations,
                );
                if c.candidate != rec.candidate {
                    candidate = Some((c.candidate != 0).then(|| seen.clone()));
                }
                (rec.candidate, rec.candidate_streak) = (c.candidate, c.candidate_streak);
                match c.change {
                    Change::Recorded | Change::Unchanged => store(&mut rec, &mut validators),
                    Change::Unknown => {}
                    Change::Changed { streak } => {
                        step = Some((
                            Decision::Changed,
                            format!(
                                "replaced: new {} on {streak} of {} consecutive passes",
                                describe(seen),
                                rules.confirmations
                            ),
                        ));
                    }
                    Change::Due { streak } => {
                        invalidate = Some(format!(
                            "replaced: new {} on {streak} consecutive pass{}",
                            describe(seen),
                            if streak == 1 { "" } else { "es" }
                        ));
                    }
                }
            }
        }
    }

    let row_for = |rec: Rec, validators, candidate| RowWrite {
        src: src.clone(),
        probe: probe.to_string(),
        seen_in: old.is_none().then(|| listing.seen_in.to_owned()),
        rec,
        validators,
        candidate,
    };
    if let Some(reason) = invalidate {
        // The row as it stands (the candidate and its streak), so that a
        // withheld or failed call is due again next pass.
        let row = (old.as_ref() != Some(&rec) || candidate.is_some())
            .then(|| row_for(rec.clone(), validators, candidate));
        let due = Due {
            endpoint: Endpoint::Invalidate,
            src: src.clone(),
            probe: probe.clone(),
            status: obs.status,
            verdict: Verdict::Present,
            reason,
            since: now,
            referenced: listing.referenced,
            rec,
            old_decision,
            validators: obs.validators.clone(),
            decision: None,
        };
        return Judged::Due {
            due: Box::new(due),
            row,
        };
    }
    match step {
        Some((decision, reason)) => {
            rec.last_decision = Some(decision);
            let history = (old_decision != Some(decision)).then(|| HistoryRow {
                at: now_ms,
                time: String::new(),
                src: src.clone(),
                decision,
                status: obs.status,
                reason: reason.clone(),
            });
            // (New validators or a new candidate also change `rec`, so the
            // last two terms only say what is meant; mutants: equivalent —
            // `||` to `&&` between them cannot change the result.)
            let changed = old.as_ref() != Some(&rec) || validators.is_some() || candidate.is_some();
            let row = changed.then(|| row_for(rec, validators, candidate));
            Judged::Settled {
                decision,
                reason,
                row,
                history,
            }
        }
        None => {
            debug_assert_eq!(j.step, Step::Due);
            let row = old.is_none().then(|| row_for(rec.clone(), None, None));
            let due = Due {
                endpoint: Endpoint::Delete,
                src: src.clone(),
                probe: probe.clone(),
                status: obs.status,
                verdict: Verdict::Gone,
                reason: j.reason,
                since: first_gone.unwrap_or(now),
                referenced: listing.referenced,
                rec,
                old_decision,
                validators: None,
                decision: None,
            };
            Judged::Due {
                due: Box::new(due),
                row,
            }
        }
    }
}

/// The validators as a reason shows them.
fn describe(v: &Validators) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &v.etag {
        parts.push(format!("ETag {e}"));
    }
    if let Some(n) = v.length {
        parts.push(format!("{n} bytes"));
    }
    if parts.is_empty() {
        "validators".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Duration;

    fn rules(on_change: &str, confirmations: u32) -> Rules {
        let c = Config::from_yaml(&format!(
            "defaults: {{ on_change: {on_change}, confirmations: {confirmations} }}\nwatches:\n  - {{ name: s, project: p, origin: 'https://e.com', images: [/a.png] }}\n"
        ))
        .unwrap();
        c.watches()[0].rules.clone()
    }

    fn present(etag: &str, len: u64) -> Observation {
        Observation {
            status: Some(200),
            verdict: Verdict::Present,
            error: None,
            note: None,
            attempts: 1,
            elapsed: Duration::ZERO,
            validators: Some(Validators {
                etag: Some(etag.to_owned()),
                last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".to_owned()),
                length: Some(len),
            }),
        }
    }

    const LISTED: Listing<'static> = Listing {
        referenced: true,
        seen_in: "config",
    };

    /// Runs observations through `judge`, keeping the written record as
    /// the store would; returns each pass's decision (or `due`).
    fn run(obs: &[Observation], r: &Rules) -> Vec<String> {
        let (src, probe): (Arc<str>, Arc<str>) =
            (Arc::from("/a.png"), Arc::from("https://e.com/a.png"));
        let mut stored: Option<Rec> = None;
        let mut out = Vec::new();
        for (i, o) in obs.iter().enumerate() {
            let now = DateTime::<Utc>::from_timestamp(1_800_000_000 + 600 * i as i64, 0).unwrap();
            match judge(&src, &probe, o, stored.clone(), LISTED, r, now) {
                Judged::Settled { decision, row, .. } => {
                    if let Some(row) = row {
                        stored = Some(row.rec);
                    }
                    out.push(decision.as_str().to_owned());
                }
                Judged::Due { mut due, .. } => {
                    out.push(format!("due {}", due.endpoint.as_str()));
                    stored = Some(due.succeeded(now).rec);
                }
            }
        }
        out
    }

    #[test]
    fn a_replaced_image_is_invalidated_once_confirmed() {
        let r = rules("invalidate", 2);
        let seq = [
            present("\"a\"", 5),
            present("\"b\"", 6),
            present("\"b\"", 6),
            present("\"b\"", 6),
        ];
        assert_eq!(run(&seq, &r), ["keep", "changed", "due invalidate", "keep"]);
    }

    #[test]
    fn ignore_records_the_change_and_calls_nothing() {
        let r = rules("ignore", 2);
        let seq = [
            present("\"a\"", 5),
            present("\"b\"", 6),
            present("\"b\"", 6),
        ];
        assert_eq!(run(&seq, &r), ["keep", "keep", "keep"]);
    }

    /// One pass of `judge` at `pass` (ten minutes apart).
    fn once(obs: &Observation, old: Option<Rec>, r: &Rules, pass: i64) -> Judged {
        let (src, probe): (Arc<str>, Arc<str>) =
            (Arc::from("/a.png"), Arc::from("https://e.com/a.png"));
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000 + 600 * pass, 0).unwrap();
        judge(&src, &probe, obs, old, LISTED, r, now)
    }

    fn written(j: Judged) -> RowWrite {
        match j {
            Judged::Settled { row, .. } | Judged::Due { row, .. } => row.expect("a row is written"),
        }
    }

    #[test]
    fn switching_to_ignore_drops_a_change_seen_but_not_confirmed() {
        let (watch, ignore) = (rules("invalidate", 3), rules("ignore", 3));
        let a = written(once(&present("\"a\"", 5), None, &watch, 0)).rec;
        let seen = written(once(&present("\"b\"", 6), Some(a), &watch, 1));
        assert_ne!(seen.rec.candidate, 0, "the change is a candidate");
        let dropped = written(once(&present("\"b\"", 6), Some(seen.rec), &ignore, 2));
        assert_eq!(
            (dropped.rec.candidate, dropped.rec.candidate_streak),
            (0, 0)
        );
        assert!(
            matches!(dropped.candidate, Some(None)),
            "the stored candidate is cleared"
        );
    }

    #[test]
    fn a_due_invalidation_writes_its_confirmed_streak_first() {
        let r = rules("invalidate", 2);
        let a = written(once(&present("\"a\"", 5), None, &r, 0)).rec;
        let seen = written(once(&present("\"b\"", 6), Some(a), &r, 1)).rec;
        assert_eq!(seen.candidate_streak, 1);
        match once(&present("\"b\"", 6), Some(seen), &r, 2) {
            Judged::Due { due, row } => {
                assert_eq!(due.endpoint, Endpoint::Invalidate);
                // Written before the call, so that a withheld or failed
                // call finds the streak where it stood.
                let row = row.expect("the row as it stands");
                assert_eq!(row.rec.candidate_streak, 2);
                assert!(
                    row.candidate.is_none(),
                    "the candidate itself did not change"
                );
            }
            Judged::Settled { decision, .. } => panic!("settled as {decision:?}"),
        }
    }

    #[test]
    fn flapping_etags_never_lead_to_a_call() {
        let r = rules("invalidate", 2);
        let seq: Vec<Observation> = (0..8)
            .map(|i| present(if i % 2 == 0 { "\"a\"" } else { "\"b\"" }, 5))
            .collect();
        assert!(run(&seq, &r).iter().all(|d| d == "keep" || d == "changed"));
    }

    #[test]
    fn a_new_last_modified_alone_is_recorded_not_acted_on() {
        let r = rules("invalidate", 1);
        let mut later = present("\"a\"", 5);
        later.validators.as_mut().unwrap().last_modified =
            Some("Wed, 02 Dec 2026 10:00:00 GMT".into());
        let src: Arc<str> = Arc::from("/a.png");
        let probe: Arc<str> = Arc::from("https://e.com/a.png");
        let now = Utc::now();
        let Judged::Settled { row, .. } =
            judge(&src, &probe, &present("\"a\"", 5), None, LISTED, &r, now)
        else {
            panic!("first sight is settled")
        };
        let stored = row.unwrap().rec;
        match judge(&src, &probe, &later, Some(stored), LISTED, &r, now) {
            Judged::Settled { decision, row, .. } => {
                assert_eq!(decision, Decision::Keep);
                let row = row.expect("the new Last-Modified is written");
                assert_eq!(
                    row.validators.unwrap().last_modified.as_deref(),
                    Some("Wed, 02 Dec 2026 10:00:00 GMT")
                );
            }
            Judged::Due { .. } => panic!("a Last-Modified change is not acted on"),
        }
    }

    #[test]
    fn an_unchanged_present_source_writes_nothing() {
        let r = rules("invalidate", 2);
        let src: Arc<str> = Arc::from("/a.png");
        let probe: Arc<str> = Arc::from("https://e.com/a.png");
        let now = Utc::now();
        let Judged::Settled { row, history, .. } =
            judge(&src, &probe, &present("\"a\"", 5), None, LISTED, &r, now)
        else {
            panic!()
        };
        assert!(history.is_some(), "the first decision is history");
        let stored = row.unwrap().rec;
        let Judged::Settled { row, history, .. } = judge(
            &src,
            &probe,
            &present("\"a\"", 5),
            Some(stored),
            LISTED,
            &r,
            now,
        ) else {
            panic!()
        };
        assert!(row.is_none() && history.is_none());
    }
}
