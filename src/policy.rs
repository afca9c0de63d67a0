//! The decision rules, as plain functions over plain data: no socket, no
//! file, no clock (the caller passes `now`). [`judge`] takes one source's
//! observation and its previous [`Episode`] and says what this pass means for
//! it; the pass later turns a [`Step::Due`] into `purge`, `would_purge`,
//! `withheld` or `failed` once the guards and the API have spoken.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::probe::{Observation, Verdict};

/// What is remembered about a source that is not plainly present: its gone
/// streak and whether it was purged in this gone episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// Consecutive passes that found it gone (inconclusive passes neither
    /// count nor break the streak; only `present` ends it).
    pub gone_streak: u32,
    pub first_gone: DateTime<Utc>,
    pub last_gone: DateTime<Utc>,
    pub last_status: Option<u16>,
    /// Set only after the purge API answered 200 in this episode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<DateTime<Utc>>,
}

/// The decision logged and reported for one source in one pass.
/// Serialized by [`Decision::as_str`], the one place its names are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Keep,
    Skip,
    Pending,
    Purge,
    WouldPurge,
    AlreadyPurged,
    Withheld,
    Failed,
    /// Present with new validators, not yet confirmed.
    Changed,
    /// Change confirmed; the invalidate call answered 200.
    Invalidate,
    /// As `Invalidate`, in a dry run.
    WouldInvalidate,
}

impl Decision {
    pub const ALL: [Decision; 11] = [
        Decision::Keep,
        Decision::Skip,
        Decision::Pending,
        Decision::Purge,
        Decision::WouldPurge,
        Decision::AlreadyPurged,
        Decision::Withheld,
        Decision::Failed,
        Decision::Changed,
        Decision::Invalidate,
        Decision::WouldInvalidate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Keep => "keep",
            Decision::Skip => "skip",
            Decision::Pending => "pending",
            Decision::Purge => "purge",
            Decision::WouldPurge => "would_purge",
            Decision::AlreadyPurged => "already_purged",
            Decision::Withheld => "withheld",
            Decision::Failed => "failed",
            Decision::Changed => "changed",
            Decision::Invalidate => "invalidate",
            Decision::WouldInvalidate => "would_invalidate",
        }
    }
}

serialize_as_str!(Decision);

/// What a present answer's validators mean for a source's bytes (with
/// `on_change: invalidate`). Validators are compared by their identity (a
/// fingerprint of ETag and length, opaque strings: weak and strong ETags
/// alike; `Last-Modified` is not part of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing to compare with (first sight, or back after a gone
    /// episode): the validators are recorded and nothing is called.
    Recorded,
    /// As stored; a change seen before and not seen again is dropped.
    Unchanged,
    /// The answer carried no ETag or length: nothing can be told.
    Unknown,
    /// New validators, seen on `streak` consecutive passes, fewer than the
    /// confirmations.
    Changed { streak: u32 },
    /// New validators seen on `confirmations` consecutive passes: due for
    /// invalidation.
    Due { streak: u32 },
}

/// Where a source's change stands after this pass: the step, and the
/// candidate (identity and streak) to remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeJudgement {
    pub change: Change,
    pub candidate: u64,
    pub candidate_streak: u32,
}

/// Judges a present answer's validators (`seen`, an identity; 0: none)
/// against the stored identity (0: none stored) and the unconfirmed
/// candidate. A change is confirmed by the same new identity on
/// `confirmations` consecutive passes, so an origin whose backends flip
/// between two ETags never confirms (with two or more confirmations).
pub fn judge_change(
    stored: u64,
    candidate: u64,
    candidate_streak: u32,
    seen: u64,
    was_gone: bool,
    confirmations: u32,
) -> ChangeJudgement {
    let none = |change| ChangeJudgement {
        change,
        candidate: 0,
        candidate_streak: 0,
    };
    if seen == 0 {
        return ChangeJudgement {
            change: Change::Unknown,
            candidate,
            candidate_streak,
        };
    }
    if stored == 0 || was_gone {
        return none(Change::Recorded);
    }
    if seen == stored {
        return none(Change::Unchanged);
    }
    let streak = if seen == candidate {
        candidate_streak.saturating_add(1)
    } else {
        1
    };
    let change = if streak >= confirmations {
        Change::Due { streak }
    } else {
        Change::Changed { streak }
    };
    ChangeJudgement {
        change,
        candidate: seen,
        candidate_streak: streak,
    }
}

/// Where a source stands after this pass's observation, before guards and
/// the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Keep,
    Skip,
    Pending,
    AlreadyPurged,
    /// Confirmed gone and not yet purged in this episode.
    Due,
}

impl Step {
    /// The final decision for every step but `Due`, which the pass settles.
    pub fn decision(self) -> Option<Decision> {
        match self {
            Step::Keep => Some(Decision::Keep),
            Step::Skip => Some(Decision::Skip),
            Step::Pending => Some(Decision::Pending),
            Step::AlreadyPurged => Some(Decision::AlreadyPurged),
            Step::Due => None,
        }
    }
}

/// The outcome of [`judge`]: the step, the episode to remember (`None`: the
/// source is plainly present and is forgotten), and a reason for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub step: Step,
    pub next: Option<Episode>,
    pub reason: String,
}

/// Judges one source from this pass's observation and its previous episode.
/// A gone source is due once it was gone on `confirmations` consecutive
/// passes *and* first seen gone at least `min_gone_for` before `now`: two
/// probes a second apart can both read one answer a CDN cached in front of
/// the origin, so a streak alone does not prove the origin kept saying it.
pub fn judge(
    obs: &Observation,
    prev: Option<&Episode>,
    confirmations: u32,
    min_gone_for: Duration,
    now: DateTime<Utc>,
) -> Judgement {
    let status = obs
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "no answer".into());
    match obs.verdict {
        Verdict::Present => Judgement {
            step: Step::Keep,
            next: None,
            reason: match &obs.note {
                Some(note) => format!("present ({note})"),
                None => format!("present ({status})"),
            },
        },
        Verdict::Inconclusive => {
            let why = obs
                .note
                .as_deref()
                .into_iter()
                .chain(obs.error.as_deref())
                .collect::<Vec<_>>()
                .join(": ");
            let why = if why.is_empty() {
                format!("status {status}")
            } else {
                why
            };
            Judgement {
                step: Step::Skip,
                next: prev.cloned(),
                reason: format!("inconclusive: {why}"),
            }
        }
        Verdict::Gone => {
            let next = match prev {
                Some(p) => Episode {
                    gone_streak: p.gone_streak.saturating_add(1),
                    last_gone: now,
                    last_status: obs.status,
                    ..p.clone()
                },
                None => Episode {
                    gone_streak: 1,
                    first_gone: now,
                    last_gone: now,
                    last_status: obs.status,
                    purged_at: None,
                },
            };
            // A clock that stepped back counts as no time gone.
            let gone_for = (now - next.first_gone).to_std().unwrap_or(Duration::ZERO);
            let left = min_gone_for.saturating_sub(gone_for);
            let passes_left = confirmations.saturating_sub(next.gone_streak);
            let (step, reason) = if let Some(at) = next.purged_at {
                (
                    Step::AlreadyPurged,
                    format!(
                        "still {status}; purged at {} in this gone episode",
                        at.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                )
            } else if passes_left > 0 {
                let wait = if left.is_zero() {
                    String::new()
                } else {
                    format!(
                        ", once gone for min_gone_for {} ({} left)",
                        span(min_gone_for),
                        span(left)
                    )
                };
                (
                    Step::Pending,
                    format!(
                        "{status} on {} of {confirmations} consecutive passes; would purge after {passes_left} more pass{}{wait}",
                        next.gone_streak,
                        if passes_left == 1 { "" } else { "es" }
                    ),
                )
            } else if !left.is_zero() {
                (
                    Step::Pending,
                    format!(
                        "{status} on {} but gone for {} of min_gone_for {}; would purge on the first pass {} or more from now",
                        consecutive(next.gone_streak),
                        span(gone_for),
                        span(min_gone_for),
                        span(left)
                    ),
                )
            } else if min_gone_for.is_zero() {
                (
                    Step::Due,
                    format!("{status} on {}", consecutive(next.gone_streak)),
                )
            } else {
                (
                    Step::Due,
                    format!(
                        "{status} on {}, gone for {}",
                        consecutive(next.gone_streak),
                        span(gone_for)
                    ),
                )
            };
            Judgement {
                step,
                next: Some(next),
                reason,
            }
        }
    }
}

/// A duration for a reason, to the second (`9m 30s`).
fn span(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Marks an episode purged; called only after the API answered 200.
pub fn mark_purged(episode: &mut Episode, now: DateTime<Utc>) {
    episode.purged_at = Some(now);
}

/// "1 consecutive pass", "2 consecutive passes".
fn consecutive(n: u32) -> String {
    format!("{n} consecutive pass{}", if n == 1 { "" } else { "es" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn obs(verdict: Verdict, status: Option<u16>) -> Observation {
        Observation {
            status,
            verdict,
            error: status.is_none().then(|| "timeout after 10s".to_owned()),
            note: None,
            attempts: 1,
            elapsed: Duration::ZERO,
            validators: None,
        }
    }
    fn gone() -> Observation {
        obs(Verdict::Gone, Some(404))
    }
    fn t(n: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + n * 600, 0).unwrap()
    }

    /// Runs a sequence of observations, purging whenever due, and returns the steps.
    fn run(seq: &[Observation], confirmations: u32) -> Vec<Step> {
        let mut ep: Option<Episode> = None;
        let mut steps = Vec::new();
        for (i, o) in seq.iter().enumerate() {
            let j = judge(o, ep.as_ref(), confirmations, Duration::ZERO, t(i as i64));
            ep = j.next;
            if j.step == Step::Due {
                mark_purged(ep.as_mut().unwrap(), t(i as i64));
            }
            steps.push(j.step);
        }
        steps
    }

    #[test]
    fn first_404_is_pending_with_default_confirmations() {
        let j = judge(&gone(), None, 2, Duration::ZERO, t(0));
        assert_eq!(j.step, Step::Pending);
        assert_eq!(
            j.reason,
            "404 on 1 of 2 consecutive passes; would purge after 1 more pass"
        );
        assert_eq!(j.next.unwrap().gone_streak, 1);
    }

    #[test]
    fn second_consecutive_404_purges() {
        let first = judge(&gone(), None, 2, Duration::ZERO, t(0));
        let second = judge(&gone(), first.next.as_ref(), 2, Duration::ZERO, t(1));
        assert_eq!(second.step, Step::Due);
        assert_eq!(second.reason, "404 on 2 consecutive passes");
    }

    #[test]
    fn one_confirmation_purges_on_first_sight() {
        assert_eq!(
            judge(&gone(), None, 1, Duration::ZERO, t(0)).step,
            Step::Due
        );
    }

    #[test]
    fn present_resets_the_streak() {
        let p = obs(Verdict::Present, Some(200));
        assert_eq!(
            run(&[gone(), p.clone(), gone(), gone()], 2),
            [Step::Pending, Step::Keep, Step::Pending, Step::Due]
        );
        let j = judge(
            &p,
            Some(&judge(&gone(), None, 2, Duration::ZERO, t(0)).next.unwrap()),
            2,
            Duration::ZERO,
            t(1),
        );
        assert_eq!(j.next, None, "a present source is forgotten");
    }

    #[test]
    fn inconclusive_never_purges_and_holds_the_streak() {
        let i = obs(Verdict::Inconclusive, None);
        assert_eq!(run(&[i.clone(), i.clone(), i.clone()], 1), [Step::Skip; 3]);
        assert_eq!(
            run(&[gone(), i.clone(), gone()], 2),
            [Step::Pending, Step::Skip, Step::Due]
        );
        let prev = judge(&gone(), None, 2, Duration::ZERO, t(0)).next;
        let j = judge(&i, prev.as_ref(), 2, Duration::ZERO, t(1));
        assert_eq!(j.next, prev, "inconclusive leaves the episode as it was");
        assert_eq!(j.reason, "inconclusive: timeout after 10s");
    }

    #[test]
    fn purged_once_per_episode() {
        assert_eq!(
            run(&[gone(), gone(), gone(), gone()], 2),
            [
                Step::Pending,
                Step::Due,
                Step::AlreadyPurged,
                Step::AlreadyPurged
            ]
        );
    }

    #[test]
    fn return_and_loss_starts_a_new_episode() {
        let p = obs(Verdict::Present, Some(200));
        assert_eq!(
            run(&[gone(), p, gone()], 1),
            [Step::Due, Step::Keep, Step::Due]
        );
    }

    #[test]
    fn unpurged_due_stays_due_next_pass() {
        // Withheld or failed: the pass does not mark it purged.
        let a = judge(&gone(), None, 1, Duration::ZERO, t(0));
        let b = judge(&gone(), a.next.as_ref(), 1, Duration::ZERO, t(1));
        assert_eq!(b.step, Step::Due);
        assert_eq!(b.next.unwrap().first_gone, t(0));
    }

    const TEN_MINUTES: Duration = Duration::from_secs(600);

    fn secs(n: i64) -> DateTime<Utc> {
        t(0) + chrono::TimeDelta::seconds(n)
    }

    #[test]
    fn pending_says_how_many_passes_are_left() {
        let j = judge(&gone(), None, 3, Duration::ZERO, t(0));
        assert_eq!(
            j.reason,
            "404 on 1 of 3 consecutive passes; would purge after 2 more passes"
        );
        let j = judge(&gone(), j.next.as_ref(), 3, Duration::ZERO, t(1));
        assert_eq!(
            j.reason,
            "404 on 2 of 3 consecutive passes; would purge after 1 more pass"
        );
    }

    #[test]
    fn min_gone_for_holds_a_first_sight_purge_with_one_confirmation() {
        let a = judge(&gone(), None, 1, TEN_MINUTES, t(0));
        assert_eq!(a.step, Step::Pending);
        assert_eq!(
            a.reason,
            "404 on 1 consecutive pass but gone for 0s of min_gone_for 10m; would purge on the first pass 10m or more from now"
        );
        let b = judge(&gone(), a.next.as_ref(), 1, TEN_MINUTES, secs(570));
        assert_eq!(b.step, Step::Pending);
        assert_eq!(
            b.reason,
            "404 on 2 consecutive passes but gone for 9m 30s of min_gone_for 10m; would purge on the first pass 30s or more from now"
        );
        let c = judge(&gone(), b.next.as_ref(), 1, TEN_MINUTES, secs(600));
        assert_eq!(c.step, Step::Due, "exactly min_gone_for is enough");
        assert_eq!(c.reason, "404 on 3 consecutive passes, gone for 10m");
        assert_eq!(c.next.unwrap().first_gone, t(0));
        // Without min_gone_for, the first sight is due.
        assert_eq!(
            judge(&gone(), None, 1, Duration::ZERO, t(0)).step,
            Step::Due
        );
    }

    #[test]
    fn min_gone_for_spaces_two_confirmations() {
        // A 1-second schedule: two gone passes a second apart could both
        // read one cached 404; min_gone_for waits out the cache.
        let a = judge(&gone(), None, 2, TEN_MINUTES, secs(0));
        assert_eq!(a.step, Step::Pending);
        assert_eq!(
            a.reason,
            "404 on 1 of 2 consecutive passes; would purge after 1 more pass, once gone for min_gone_for 10m (10m left)"
        );
        let b = judge(&gone(), a.next.as_ref(), 2, TEN_MINUTES, secs(1));
        assert_eq!(b.step, Step::Pending, "two confirmations, one second apart");
        assert_eq!(
            b.reason,
            "404 on 2 consecutive passes but gone for 1s of min_gone_for 10m; would purge on the first pass 9m 59s or more from now"
        );
        let c = judge(&gone(), b.next.as_ref(), 2, TEN_MINUTES, secs(599));
        assert_eq!(c.step, Step::Pending);
        let d = judge(&gone(), c.next.as_ref(), 2, TEN_MINUTES, secs(600));
        assert_eq!(d.step, Step::Due);
        assert_eq!(d.reason, "404 on 4 consecutive passes, gone for 10m");
    }

    #[test]
    fn min_gone_for_does_not_replace_the_confirmations() {
        // Gone long enough, but not yet on enough passes (inconclusive
        // passes in between count for time, not for the streak).
        let i = obs(Verdict::Inconclusive, None);
        let a = judge(&gone(), None, 2, TEN_MINUTES, t(0));
        let b = judge(&i, a.next.as_ref(), 2, TEN_MINUTES, t(3));
        assert_eq!(b.step, Step::Skip);
        let c = judge(&gone(), b.next.as_ref(), 2, TEN_MINUTES, t(4));
        assert_eq!(c.step, Step::Due);
        assert_eq!(c.reason, "404 on 2 consecutive passes, gone for 40m");
        let a = judge(&gone(), None, 3, TEN_MINUTES, t(0));
        let b = judge(&gone(), a.next.as_ref(), 3, TEN_MINUTES, t(2));
        assert_eq!(b.step, Step::Pending);
        assert_eq!(
            b.reason,
            "404 on 2 of 3 consecutive passes; would purge after 1 more pass"
        );
    }

    #[test]
    fn a_present_pass_restarts_the_min_gone_for_clock() {
        let p = obs(Verdict::Present, Some(200));
        let a = judge(&gone(), None, 1, TEN_MINUTES, t(0));
        let b = judge(&p, a.next.as_ref(), 1, TEN_MINUTES, t(1));
        let c = judge(&gone(), b.next.as_ref(), 1, TEN_MINUTES, t(2));
        assert_eq!(c.step, Step::Pending);
        assert_eq!(c.next.as_ref().unwrap().first_gone, t(2));
        assert_eq!(
            judge(&gone(), c.next.as_ref(), 1, TEN_MINUTES, t(3)).step,
            Step::Due
        );
    }

    #[test]
    fn a_clock_that_stepped_back_counts_as_no_time_gone() {
        let a = judge(&gone(), None, 1, TEN_MINUTES, t(5));
        let b = judge(&gone(), a.next.as_ref(), 1, TEN_MINUTES, t(1));
        assert_eq!(b.step, Step::Pending);
        assert!(
            b.reason.contains("gone for 0s of min_gone_for 10m"),
            "{}",
            b.reason
        );
    }

    #[test]
    fn already_purged_wins_over_min_gone_for() {
        let a = judge(&gone(), None, 1, Duration::ZERO, t(0));
        let mut ep = a.next.unwrap();
        mark_purged(&mut ep, t(0));
        let b = judge(&gone(), Some(&ep), 1, TEN_MINUTES, t(0));
        assert_eq!(b.step, Step::AlreadyPurged);
    }

    #[test]
    fn every_step_but_due_is_its_own_decision() {
        assert_eq!(Step::Keep.decision(), Some(Decision::Keep));
        assert_eq!(Step::Skip.decision(), Some(Decision::Skip));
        assert_eq!(Step::Pending.decision(), Some(Decision::Pending));
        assert_eq!(
            Step::AlreadyPurged.decision(),
            Some(Decision::AlreadyPurged)
        );
        assert_eq!(Step::Due.decision(), None, "the pass settles a due source");
    }

    #[test]
    fn a_gone_pass_updates_the_last_sight_and_keeps_the_first() {
        let a = judge(&gone(), None, 3, Duration::ZERO, t(0));
        let b = judge(
            &obs(Verdict::Gone, Some(410)),
            a.next.as_ref(),
            3,
            Duration::ZERO,
            t(1),
        );
        let ep = b.next.unwrap();
        assert_eq!((ep.first_gone, ep.last_gone), (t(0), t(1)));
        assert_eq!(ep.last_status, Some(410));
        assert_eq!(ep.gone_streak, 2);
    }

    #[test]
    fn head_get_disagreement_reason_is_kept() {
        let o = Observation {
            note: Some("HEAD answered 404 but GET answered 200".into()),
            ..obs(Verdict::Inconclusive, Some(200))
        };
        let j = judge(&o, None, 2, Duration::ZERO, t(0));
        assert_eq!(j.step, Step::Skip);
        assert_eq!(
            j.reason,
            "inconclusive: HEAD answered 404 but GET answered 200"
        );
        assert_eq!(j.next, None);
    }

    #[test]
    fn every_decision_is_in_all_at_its_own_index() {
        // ALL is in declaration order without duplicates: the metrics and
        // the store walk it, and a decision read back is found in it.
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{d:?}");
        }
    }

    #[test]
    fn first_sight_records_the_validators_and_calls_nothing() {
        let j = judge_change(0, 0, 0, 42, false, 2);
        assert_eq!(j.change, Change::Recorded);
        assert_eq!((j.candidate, j.candidate_streak), (0, 0));
    }

    #[test]
    fn a_change_is_confirmed_on_the_confirmations_pass() {
        let one = judge_change(7, 0, 0, 42, false, 2);
        assert_eq!(one.change, Change::Changed { streak: 1 });
        assert_eq!((one.candidate, one.candidate_streak), (42, 1));
        let two = judge_change(7, one.candidate, one.candidate_streak, 42, false, 2);
        assert_eq!(two.change, Change::Due { streak: 2 });
        assert_eq!(
            judge_change(7, 0, 0, 42, false, 1).change,
            Change::Due { streak: 1 }
        );
    }

    #[test]
    fn flapping_validators_never_confirm() {
        // Stored A (7); the backends answer B (42), A, B, A, ...
        let (mut cand, mut streak) = (0, 0);
        for (i, seen) in [42, 7, 42, 7, 42, 7].into_iter().enumerate() {
            let j = judge_change(7, cand, streak, seen, false, 2);
            assert!(!matches!(j.change, Change::Due { .. }), "pass {i}: {j:?}");
            (cand, streak) = (j.candidate, j.candidate_streak);
        }
        // Two different new values in a row restart the count.
        let j = judge_change(7, 42, 1, 43, false, 2);
        assert_eq!(j.change, Change::Changed { streak: 1 });
        assert_eq!(j.candidate, 43);
    }

    #[test]
    fn the_same_validators_again_drop_a_candidate() {
        let j = judge_change(7, 42, 1, 7, false, 3);
        assert_eq!(j.change, Change::Unchanged);
        assert_eq!((j.candidate, j.candidate_streak), (0, 0));
    }

    #[test]
    fn no_validators_tell_nothing_and_keep_the_candidate() {
        let j = judge_change(7, 42, 1, 0, false, 2);
        assert_eq!(j.change, Change::Unknown);
        assert_eq!((j.candidate, j.candidate_streak), (42, 1));
    }

    #[test]
    fn back_after_a_gone_episode_records_afresh() {
        let j = judge_change(7, 0, 0, 42, true, 1);
        assert_eq!(j.change, Change::Recorded);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn verdict() -> impl Strategy<Value = Verdict> {
            prop_oneof![
                Just(Verdict::Present),
                Just(Verdict::Gone),
                Just(Verdict::Inconclusive)
            ]
        }

        proptest! {
            /// Over any sequence of verdicts, with any guard or API failure
            /// holding back any due purge: a purge happens only after
            /// `confirmations` gone passes since the last present and
            /// `min_gone_for` after the first of them, never on
            /// an inconclusive pass, at most once per episode, and always
            /// once an episode has been gone long enough with nothing in the way.
            #[test]
            fn purges_follow_the_rules(
                seq in proptest::collection::vec((verdict(), any::<bool>()), 0..60),
                confirmations in 1u32..5,
                min_gone_steps in 0i64..4,
            ) {
                // Passes are one step (10 minutes) apart.
                let min_gone_for = Duration::from_secs(600 * min_gone_steps as u64);
                let mut ep: Option<Episode> = None;
                let mut gone_in_episode = 0u32;
                let mut first_gone: Option<i64> = None;
                let mut purged_in_episode = false;
                for (i, (v, allowed)) in seq.iter().enumerate() {
                    let i = i as i64;
                    let o = obs(*v, Some(match v { Verdict::Present => 200, Verdict::Gone => 404, Verdict::Inconclusive => 503 }));
                    let j = judge(&o, ep.as_ref(), confirmations, min_gone_for, t(i));
                    match v {
                        Verdict::Present => { gone_in_episode = 0; first_gone = None; purged_in_episode = false; }
                        Verdict::Gone => { gone_in_episode += 1; first_gone.get_or_insert(i); }
                        Verdict::Inconclusive => {}
                    }
                    let long_enough = first_gone.is_some_and(|f| i - f >= min_gone_steps);
                    ep = j.next;
                    match j.step {
                        Step::Due => {
                            prop_assert_eq!(*v, Verdict::Gone);
                            prop_assert!(gone_in_episode >= confirmations);
                            prop_assert!(long_enough, "due before min_gone_for");
                            prop_assert!(!purged_in_episode, "due twice in one episode");
                            if *allowed {
                                mark_purged(ep.as_mut().unwrap(), t(i));
                                purged_in_episode = true;
                            }
                        }
                        Step::AlreadyPurged => prop_assert!(purged_in_episode),
                        Step::Pending => prop_assert!(gone_in_episode < confirmations || !long_enough),
                        Step::Keep => prop_assert_eq!(*v, Verdict::Present),
                        Step::Skip => prop_assert_eq!(*v, Verdict::Inconclusive),
                    }
                    // Nothing in the way and gone long enough: due or done.
                    if *v == Verdict::Gone && gone_in_episode >= confirmations && long_enough {
                        prop_assert!(matches!(j.step, Step::Due | Step::AlreadyPurged));
                    }
                }
            }
        }
    }
}
