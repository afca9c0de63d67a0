//! One pass over one or more watches: probe every probe URL (bounded),
//! judge every source, apply the guards per watch, purge what is due in
//! batches per (project, team, slug), save the state, report every decision.
//!
//! Decisions that need no API call are reported as their probe completes, so
//! a pass over a million sources holds only the sources due for purge.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::Watch;
use crate::exit::Exit;
use crate::guard::{self, Canary, Guard, GuardInput};
use crate::policy::{self, Decision, Step};
use crate::probe::{Observation, ProbeRules, Prober, Verdict};
use crate::report::{Record, Reporter, WatchSummary, now_rfc3339};
use crate::state::{StateError, StateStore, WatchState};
use crate::vercel::{PurgeError, PurgeTarget, VercelClient};

/// What a pass needs from the outside world.
pub struct PassContext {
    pub prober: Arc<Prober>,
    /// `None` in a dry run: nothing is sent to Vercel.
    pub vercel: Option<Arc<VercelClient>>,
    pub state: Arc<StateStore>,
    pub reporter: Arc<Reporter>,
    /// Told about every probe, decision, guard trip and purge call.
    pub observer: Option<Arc<dyn PassObserver>>,
}

impl PassContext {
    pub fn dry_run(&self) -> bool {
        self.vercel.is_none()
    }
}

/// Hooks for metrics; every method has a default that does nothing.
pub trait PassObserver: Send + Sync {
    /// One probe URL probed; `sources` is how many sources share it.
    fn probed(&self, _watch: &str, _obs: &Observation, _sources: u32) {}
    fn decided(&self, _watch: &str, _decision: Decision) {}
    fn guard_tripped(&self, _watch: &str, _guard: Guard) {}
    fn purge_call(&self, _project: &str, _ok: bool, _calls: u32) {}
    fn pass_done(&self, _summary: &WatchSummary) {}
}

/// What a pass did, per watch.
#[derive(Debug, Default)]
pub struct PassOutcome {
    pub watches: Vec<WatchSummary>,
}

impl PassOutcome {
    /// The exit code per the contract: 3 when a guard raised an alarm (it
    /// wins over 1, since it asks for a person), 1 when a purge call failed
    /// or a signal cut the pass short (what was due is purged next pass).
    pub fn exit(&self) -> Exit {
        if self.watches.iter().any(|w| w.guard_alarm.is_some()) {
            Exit::Withheld
        } else if self
            .watches
            .iter()
            .any(|w| w.count(Decision::Failed) > 0 || w.interrupted)
        {
            Exit::PurgeFailed
        } else {
            Exit::Ok
        }
    }

    pub fn interrupted(&self) -> bool {
        self.watches.iter().any(|w| w.interrupted)
    }

    pub fn total(&self, d: Decision) -> usize {
        self.watches.iter().map(|w| w.count(d)).sum()
    }

    pub fn api_calls(&self) -> u32 {
        self.watches.iter().map(|w| w.api_calls).sum()
    }
}

/// A source confirmed gone and not yet purged in its episode.
struct Due {
    src: Arc<str>,
    probe: Arc<str>,
    status: Option<u16>,
    reason: String,
    first_gone: DateTime<Utc>,
    /// Set once the guards or the API have spoken.
    decision: Option<(Decision, String)>,
}

/// One watch in the middle of a pass.
struct Work {
    watch: Arc<Watch>,
    episodes: WatchState,
    due: Vec<Due>,
    canary: Canary,
    /// Probe URLs that probed inconclusive (for the `inconclusive` guard).
    inconclusive: usize,
    summary: WatchSummary,
    started: Instant,
}

/// Runs one pass over `watches`. Cancelling `cancel` stops new probes and
/// new purge calls; a call in flight finishes and the state is still saved.
pub async fn run_pass(
    ctx: &PassContext,
    watches: &[Arc<Watch>],
    cancel: &CancellationToken,
) -> Result<PassOutcome, StateError> {
    run_pass_at(ctx, watches, cancel, Utc::now()).await
}

/// [`run_pass`] as if it started at `now`: the time the pass judges
/// `min_gone_for` and `guard_window` by and stamps purges with. Tests run a
/// day of passes in a second through it.
pub async fn run_pass_at(
    ctx: &PassContext,
    watches: &[Arc<Watch>],
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> Result<PassOutcome, StateError> {
    let mut works: Vec<Work> =
        futures::future::join_all(watches.iter().map(|w| observe(ctx, w.clone(), cancel, now)))
            .await;

    for work in &mut works {
        apply_guards(ctx, work, now);
    }
    purge(ctx, &mut works, cancel, now).await;

    let mut outcome = PassOutcome::default();
    for mut work in works {
        let w = work.watch.clone();
        for due in std::mem::take(&mut work.due) {
            let (decision, reason) = due.decision.expect("every due source is settled");
            if decision == Decision::WouldPurge {
                work.summary.would_purge.push(due.src.to_string());
            }
            emit(
                ctx,
                &mut work.summary,
                &w,
                &due.src,
                &due.probe,
                due.status,
                Verdict::Gone,
                decision,
                &reason,
                None,
            );
        }
        ctx.state.put(&w.name, work.episodes);
        work.summary.duration = work.started.elapsed();
        if let Some(o) = &ctx.observer {
            o.pass_done(&work.summary);
        }
        outcome.watches.push(work.summary);
    }
    ctx.reporter.flush();
    ctx.state.save()?;
    Ok(outcome)
}

/// Probes a watch and judges every source; reports what needs no API call.
async fn observe(
    ctx: &PassContext,
    watch: Arc<Watch>,
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> Work {
    let started = Instant::now();
    let rules = ProbeRules::from(&watch.rules);
    let mut summary = WatchSummary {
        watch: watch.name.clone(),
        project: watch.project.clone(),
        sources: watch.sources.len(),
        probes: watch.probes.len(),
        dry_run: ctx.dry_run(),
        ..WatchSummary::default()
    };

    let canary = match &watch.canary {
        None => Canary::NotConfigured,
        Some(url) => {
            let obs = ctx.prober.probe(url, &rules).await;
            let canary = if obs.verdict == Verdict::Present {
                Canary::Present
            } else {
                let what = obs
                    .error
                    .clone()
                    .or(obs.note.clone())
                    .unwrap_or_else(|| format!("status {}", obs.status.unwrap_or(0)));
                Canary::NotPresent(format!("{url}: {} ({what})", obs.verdict.as_str()))
            };
            if canary == Canary::Present {
                tracing::info!(watch = %watch.name, probe = %url, verdict = obs.verdict.as_str(), "canary");
            } else {
                // Warned even when nothing is due yet: purges will be
                // withheld as soon as something is.
                tracing::warn!(watch = %watch.name, probe = %url, verdict = obs.verdict.as_str(), "canary not present; this watch's purges are withheld while it is not");
            }
            canary
        }
    };

    // A copy: until the pass puts its result back, the store (and any save
    // made meanwhile, e.g. at a shutdown timeout) keeps the previous state.
    let mut previous = ctx.state.get(&watch.name);
    let mut episodes = WatchState::new();
    let mut due = Vec::new();
    let mut inconclusive = 0;
    let (confirmations, min_gone_for) = (watch.rules.confirmations, watch.rules.min_gone_for);

    {
        // Indices, not references: a closure over `&ProbeTarget` would make
        // the pass future not `Send` for every lifetime the sidecar needs.
        let (prober, w) = (&ctx.prober, &*watch);
        let probes = futures::stream::iter(0..w.probes.len())
            .map(|i| probe_one(prober, w, i, &rules))
            .buffer_unordered(watch.rules.concurrency)
            .take_until(cancel.cancelled());
        let mut probes = std::pin::pin!(probes);
        while let Some((i, url, obs)) = probes.next().await {
            let probe = &watch.probes[i];
            if let Some(o) = &ctx.observer {
                o.probed(&watch.name, &obs, probe.count);
            }
            summary.add_verdict(obs.verdict, probe.count as usize);
            inconclusive += usize::from(obs.verdict == Verdict::Inconclusive);
            for source in watch.sources_of(probe) {
                let prev = previous.remove(&*source.src);
                let j = policy::judge(&obs, prev.as_ref(), confirmations, min_gone_for, now);
                let first_gone = j.next.as_ref().map(|e| e.first_gone);
                if let Some(next) = j.next {
                    episodes.insert(source.src.to_string(), next);
                }
                match j.step.decision() {
                    Some(d) => emit(
                        ctx,
                        &mut summary,
                        &watch,
                        &source.src,
                        &url,
                        obs.status,
                        obs.verdict,
                        d,
                        &j.reason,
                        obs.error.as_deref(),
                    ),
                    None => {
                        debug_assert_eq!(j.step, Step::Due);
                        due.push(Due {
                            src: source.src.clone(),
                            probe: Arc::from(&*url),
                            status: obs.status,
                            reason: j.reason,
                            first_gone: first_gone.unwrap_or(now),
                            decision: None,
                        });
                    }
                }
            }
        }
    }

    if summary.checked < watch.sources.len() {
        // Interrupted: sources not probed keep what they had.
        summary.interrupted = true;
        episodes.append(&mut previous);
    } else if !previous.is_empty() {
        tracing::info!(watch = %watch.name, forgotten = previous.len(), "state of sources no longer configured dropped");
    }

    // Oldest gone first, so a capped pass purges the longest-gone sources.
    due.sort_by(|a, b| {
        a.first_gone
            .cmp(&b.first_gone)
            .then_with(|| a.src.cmp(&b.src))
    });
    Work {
        watch,
        episodes,
        due,
        canary,
        inconclusive,
        summary,
        started,
    }
}

async fn probe_one<'a>(
    prober: &Prober,
    watch: &'a Watch,
    i: usize,
    rules: &ProbeRules,
) -> (usize, Cow<'a, str>, Observation) {
    let url = watch.probe_url(&watch.probes[i]);
    let obs = prober.probe(&url, rules).await;
    (i, url, obs)
}

/// Applies the blast-radius guards to one watch's due sources.
fn apply_guards(ctx: &PassContext, work: &mut Work, now: DateTime<Utc>) {
    let rules = &work.watch.rules;
    // The rolling window, from what the v1 state can tell: the episodes of
    // sources still gone carry `purged_at` (a due source's episode has none,
    // so the two counts never overlap). A source purged and then back
    // (present) is forgotten by this state, so it leaves the count early;
    // the state store's ledger of API calls will count it for the whole
    // window. TODO(store): count this watch's (shard's) distinct sources
    // purged since `now - guard_window` from the ledger, minus those due now.
    let recent = guard::purged_within(
        work.episodes.values().filter_map(|e| e.purged_at),
        now,
        rules.guard_window,
    );
    let input = GuardInput {
        sources: work.watch.sources.len(),
        probes: work.watch.probes.len(),
        inconclusive: work.inconclusive,
        due: work.due.len(),
        recent,
        canary: work.canary.clone(),
        max_purge_fraction: rules.max_purge_fraction,
        max_inconclusive_fraction: rules.max_inconclusive_fraction,
        fraction_floor: rules.fraction_floor,
        max_purges_per_pass: rules.max_purges_per_pass,
    };
    let outcome = guard::check(&input);
    // A preview says what the pending would meet once confirmed.
    let pending = work.summary.count(Decision::Pending);
    if ctx.dry_run() && pending > 0 && outcome.tripped.as_ref().is_none_or(|(g, _)| !g.is_alarm()) {
        let later = guard::check(&GuardInput {
            due: input.due + pending,
            ..input
        });
        if let Some((g, why)) = later.tripped.filter(|(g, _)| g.is_alarm()) {
            work.summary.guard_forecast = Some(format!(
                "{g} once the {pending} pending are confirmed: {why}"
            ));
        }
    }
    if let Some((g, why)) = &outcome.tripped {
        tracing::warn!(
            watch = %work.watch.name,
            guard = g.as_str(),
            due = work.due.len(),
            recent,
            sources = work.watch.sources.len(),
            inconclusive = work.inconclusive,
            probes = work.watch.probes.len(),
            withheld = work.due.len() - outcome.allowed,
            reason = %why,
            "guard withheld purges"
        );
        if let Some(o) = &ctx.observer {
            o.guard_tripped(&work.watch.name, *g);
        }
        if g.is_alarm() {
            work.summary.guard_alarm = Some(format!("{g}: {why}"));
        }
        for due in &mut work.due[outcome.allowed..] {
            due.decision = Some((
                Decision::Withheld,
                format!("{}; withheld by {g}: {why}", due.reason),
            ));
        }
    }
}

/// The reason of a due source held back because shutdown began.
fn shutdown_withheld(reason: &str) -> String {
    format!("{reason}; shutting down, no new purge calls")
}

/// A source to purge and every (watch, due) index that asked for it.
type Wanted = (Arc<str>, Vec<(usize, usize)>);

/// Purges every allowed due source, batched per target across watches.
async fn purge(
    ctx: &PassContext,
    works: &mut [Work],
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) {
    let interrupted = works.iter().any(|w| w.summary.interrupted) || cancel.is_cancelled();
    // Per target, each source once (two watches of one project may list the
    // same source), with every (watch, due) that asked for it.
    let mut targets: BTreeMap<PurgeTarget, Vec<Wanted>> = BTreeMap::new();
    let mut slot: HashMap<(PurgeTarget, Arc<str>), usize> = HashMap::new();
    for (wi, work) in works.iter_mut().enumerate() {
        let mut held_for_shutdown = false;
        let target = PurgeTarget {
            project: work.watch.project.clone(),
            team_id: work.watch.team_id.clone(),
            slug: work.watch.slug.clone(),
        };
        for (di, due) in work.due.iter_mut().enumerate() {
            if due.decision.is_some() {
                continue;
            }
            if ctx.vercel.is_none() {
                due.decision = Some((Decision::WouldPurge, due.reason.clone()));
            } else if interrupted {
                held_for_shutdown = true;
                due.decision = Some((Decision::Withheld, shutdown_withheld(&due.reason)));
            } else {
                let wanted = targets.entry(target.clone()).or_default();
                let at = *slot
                    .entry((target.clone(), due.src.clone()))
                    .or_insert_with(|| {
                        wanted.push((due.src.clone(), Vec::new()));
                        wanted.len() - 1
                    });
                wanted[at].1.push((wi, di));
            }
        }
        work.summary.interrupted |= held_for_shutdown;
    }
    let Some(vercel) = &ctx.vercel else { return };

    // A 401, 402 or 403 stops every purge of that project in this pass, in
    // whichever team or slug it was asked.
    let mut stopped: BTreeMap<String, PurgeError> = BTreeMap::new();
    for (target, wanted) in targets {
        if let Some(e) = stopped.get(&target.project) {
            let not_sent = PurgeError::NotSent(e.to_string());
            for &(wi, di) in wanted.iter().flat_map(|(_, items)| items) {
                let due = &mut works[wi].due[di];
                let why = format!("{}; purge failed: {not_sent}", due.reason);
                due.decision = Some((Decision::Failed, why));
            }
            continue;
        }
        let sources: Vec<Arc<str>> = wanted.iter().map(|(src, _)| src.clone()).collect();
        let results = vercel.purge(&target, &sources, cancel).await;
        let mut wanted = wanted.iter();
        for batch in results {
            if let Err(
                e @ (PurgeError::Unauthorized { .. } | PurgeError::PlanLacksFeature { .. }),
            ) = &batch.outcome
            {
                stopped.insert(target.project.clone(), e.clone());
            }
            // A batch never sent (shutdown, or its project stopped) is no call.
            if let Some(o) = ctx.observer.as_ref().filter(|_| batch.calls > 0) {
                o.purge_call(&target.project, batch.outcome.is_ok(), batch.calls);
            }
            let mut in_batch: Vec<usize> = Vec::new();
            let items = (&mut wanted).take(batch.sources.len());
            for &(wi, di) in items.flat_map(|(_, items)| items) {
                let work = &mut works[wi];
                if !in_batch.contains(&wi) {
                    in_batch.push(wi);
                    work.summary.api_calls += batch.calls;
                }
                let due = &mut work.due[di];
                due.decision = Some(match &batch.outcome {
                    Ok(()) => {
                        if let Some(ep) = work.episodes.get_mut(&*due.src) {
                            policy::mark_purged(ep, now);
                            // Into the store at once: a shutdown that stops
                            // waiting for this pass still saves the purge.
                            ctx.state.record(&work.watch.name, &due.src, ep.clone());
                        }
                        (Decision::Purge, due.reason.clone())
                    }
                    Err(PurgeError::ShuttingDown) => {
                        work.summary.interrupted = true;
                        (Decision::Withheld, shutdown_withheld(&due.reason))
                    }
                    Err(e) => (
                        Decision::Failed,
                        format!("{}; purge failed: {e}", due.reason),
                    ),
                });
            }
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one record's fields, passed once"
)]
fn emit(
    ctx: &PassContext,
    summary: &mut WatchSummary,
    watch: &Watch,
    src: &str,
    probe: &str,
    status: Option<u16>,
    verdict: Verdict,
    decision: Decision,
    reason: &str,
    error: Option<&str>,
) {
    summary.add(decision);
    if ctx.dry_run() && decision == Decision::Pending {
        summary.list_pending(src, reason);
    }
    if let Some(o) = &ctx.observer {
        o.decided(&watch.name, decision);
    }
    ctx.reporter.emit(&Record {
        time: now_rfc3339(),
        watch: &watch.name,
        project: &watch.project,
        src,
        probe,
        status,
        verdict,
        decision,
        reason,
        dry_run: ctx.dry_run(),
        error,
    });
}
