//! One pass over one or more watches: line the watch's sources up with its
//! inventory (remembered sources join the probes), probe every probe URL
//! (bounded), judge every source, apply the guards per watch, plan and make
//! the API calls, record each call (and its effect) at once, write back only
//! what changed, report every decision.
//!
//! Decisions that need no API call are reported as their probe completes,
//! and changed rows are written in batches as the pass goes, so a pass over
//! a million sources holds only the compact records and the sources due.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Watch;
use crate::exit::Exit;
use crate::guard::{self, Action, Canary, Guard, GuardInput};
use crate::judge::{self, Due, Judged, Listing};
use crate::plan::{self, Stopped, Wanted};
use crate::policy::Decision;
use crate::probe::{Observation, ProbeRules, Prober, Verdict};
use crate::report::{DiscoverySummary, Record, Reporter, WatchSummary, now_rfc3339};
use crate::sources::{ProbeTarget, Source, SourceList};
use crate::store::{
    Endpoint, HistoryRow, LedgerEntry, Millis, RECORDS_IN_FLIGHT, Rec, RowWrite, Store, StoreError,
    WRITES_IN_FLIGHT, millis,
};
use crate::vercel::{PurgeError, PurgeTarget, VercelClient};

/// Rows written per transaction while a pass runs.
const WRITE_BATCH: usize = 4096;

/// What a pass needs from the outside world.
pub struct PassContext {
    pub prober: Arc<Prober>,
    /// `None` in a dry run: nothing is sent to Vercel.
    pub vercel: Option<Arc<VercelClient>>,
    /// The inventory; in a dry run an in-memory copy that is never saved.
    pub store: Arc<dyn Store>,
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
    /// The pass ran, but not everything it did could be written to the
    /// store (the first such error, naming the store and the cause): the
    /// pass exits 1, and what was not recorded is decided again next pass.
    pub store_error: Option<String>,
}

impl PassOutcome {
    /// The exit code per the contract: 3 when a guard raised an alarm (it
    /// wins over 1, since it asks for a person), 1 when a purge call failed
    /// or a signal cut the pass short (what was due is purged next pass).
    pub fn exit(&self) -> Exit {
        if self.watches.iter().any(|w| w.guard_alarm.is_some()) {
            Exit::Withheld
        } else if self.store_error.is_some()
            || self
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

/// One group of a pass's sources: the watch's configured list, or the
/// sources only the inventory remembers.
struct Part {
    list: List,
    referenced: bool,
    /// Where a source of this part is first seen, for `explain`.
    seen_in: &'static str,
}

/// A list of sources and their probe targets: the watch's own, or one
/// built for the pass.
#[derive(Clone)]
enum List {
    Watch(Arc<Watch>),
    Built(Arc<SourceList>),
}

impl List {
    fn sources(&self) -> &[Source] {
        match self {
            List::Watch(w) => w.sources(),
            List::Built(l) => l.sources(),
        }
    }

    fn probes(&self) -> &[ProbeTarget] {
        match self {
            List::Watch(w) => w.probes(),
            List::Built(l) => l.probes(),
        }
    }

    fn probe_url(&self, origin: Option<&str>, probe: &ProbeTarget) -> Arc<str> {
        Arc::from(&*crate::sources::probe_url(self.sources(), origin, probe))
    }
}

/// The outcome of a store task the pass spawned (a write batch or a call
/// record). A bug in the store is not a store error: its panic goes on.
fn joined(
    task: Result<Result<(), StoreError>, tokio::task::JoinError>,
    store: &dyn Store,
    what: &'static str,
) -> Result<(), StoreError> {
    match task {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Query {
            path: store.describe().into(),
            what,
            cause: Box::new(e),
        }),
    }
}

/// The pass's writes, flushed in batches with at most
/// [`WRITES_IN_FLIGHT`] in flight.
struct Writer {
    store: Arc<dyn Store>,
    watch: String,
    rows: Vec<RowWrite>,
    history: Vec<HistoryRow>,
    /// Batches being written, oldest first; at most [`WRITES_IN_FLIGHT`].
    in_flight: std::collections::VecDeque<JoinHandle<Result<(), StoreError>>>,
    error: Option<StoreError>,
}

impl Writer {
    fn new(store: Arc<dyn Store>, watch: &str) -> Writer {
        Writer {
            store,
            watch: watch.to_owned(),
            rows: Vec::new(),
            history: Vec::new(),
            in_flight: Default::default(),
            error: None,
        }
    }

    async fn push(&mut self, row: Option<RowWrite>, history: Option<HistoryRow>) {
        self.rows.extend(row);
        self.history.extend(history);
        if self.rows.len() + self.history.len() >= WRITE_BATCH {
            self.flush_async().await;
        }
    }

    /// Waits for every batch under way.
    async fn settle(&mut self) {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await;
        }
    }

    async fn settle_oldest(&mut self) {
        if let Some(h) = self.in_flight.pop_front() {
            let result = joined(h.await, &*self.store, "write a pass's changes");
            if let Err(e) = result {
                self.error.get_or_insert(e);
            }
        }
    }

    async fn flush_async(&mut self) {
        while self.in_flight.len() >= WRITES_IN_FLIGHT {
            self.settle_oldest().await;
        }
        let rows = std::mem::take(&mut self.rows);
        let history = std::mem::take(&mut self.history);
        let (store, watch) = (self.store.clone(), self.watch.clone());
        self.in_flight.push_back(tokio::spawn(async move {
            store.write(&watch, rows, history).await
        }));
    }

    /// Writes what is left and waits; the first error of the pass, if any.
    async fn finish(&mut self) -> Result<(), StoreError> {
        self.flush_async().await;
        self.settle().await;
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// One watch in the middle of a pass.
struct Work {
    watch: Arc<Watch>,
    due: Vec<Due>,
    canary: Canary,
    /// Probe URLs that probed inconclusive (for the `inconclusive` guard).
    inconclusive: usize,
    summary: WatchSummary,
    started: Instant,
    writer: Writer,
    /// Sources in the pass (configured and remembered).
    sources: usize,
    /// Sources purged (invalidated) within `guard_window` and not due now.
    recent: [usize; 2],
}

/// Runs one pass over `watches`. Cancelling `cancel` stops new probes and
/// new purge calls; a call in flight finishes and is recorded.
pub async fn run_pass(
    ctx: &PassContext,
    watches: &[Arc<Watch>],
    cancel: &CancellationToken,
) -> Result<PassOutcome, StoreError> {
    run_pass_at(ctx, watches, cancel, Utc::now()).await
}

/// [`run_pass`] as if it started at `now`: the time the pass judges
/// `min_gone_for` and `guard_window` by and stamps purges and ledger rows
/// with. Tests run a day of passes in a second through it.
pub async fn run_pass_at(
    ctx: &PassContext,
    watches: &[Arc<Watch>],
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> Result<PassOutcome, StoreError> {
    let observed =
        futures::future::join_all(watches.iter().map(|w| observe(ctx, w.clone(), cancel, now)))
            .await;
    let mut works = Vec::with_capacity(observed.len());
    for w in observed {
        works.push(w?);
    }

    for work in &mut works {
        apply_guards(ctx, work);
    }
    let mut first_error = call(ctx, &mut works, cancel, now).await.err();

    let mut outcome = PassOutcome::default();
    for mut work in works {
        let w = work.watch.clone();
        for mut due in std::mem::take(&mut work.due) {
            let (decision, reason) = due.decision.take().expect("every due source is settled");
            if decision == Decision::WouldPurge {
                work.summary.would_purge.push(due.src.to_string());
            }
            emit(
                ctx,
                &mut work.summary,
                &w,
                Emitted {
                    src: &due.src,
                    probe: &due.probe,
                    status: due.status,
                    verdict: due.verdict,
                    decision,
                    reason: &reason,
                    error: None,
                    referenced: due.referenced,
                },
            );
            due.rec.last_decision = Some(decision);
            let history = (due.old_decision != Some(decision)).then(|| HistoryRow {
                at: millis(now),
                time: String::new(),
                src: due.src.clone(),
                decision,
                status: due.status,
                reason: reason.clone(),
            });
            // A call that answered 200 wrote its row with its ledger row.
            let recorded = matches!(decision, Decision::Purge | Decision::Invalidate);
            let row = (!recorded).then(|| RowWrite {
                src: due.src.clone(),
                probe: due.probe.to_string(),
                rec: due.rec,
                validators: None,
                candidate: None,
                seen_in: None,
            });
            work.writer.push(row, history).await;
        }
        if let Err(e) = work.writer.finish().await {
            tracing::error!(watch = %w.name, store = %ctx.store.describe(), error = %e, "the pass's changes could not be written");
            first_error.get_or_insert(e);
        }
        if !work.summary.interrupted
            && let Err(e) = ctx.store.pass_done(&w.name, millis(now)).await
        {
            first_error.get_or_insert(e);
        }
        work.summary.duration = work.started.elapsed();
        if let Some(o) = &ctx.observer {
            o.pass_done(&work.summary);
        }
        outcome.watches.push(work.summary);
    }
    ctx.reporter.flush();
    outcome.store_error = first_error.map(|e| e.to_string());
    Ok(outcome)
}

/// Probes the canary; says what it found.
async fn canary(ctx: &PassContext, watch: &Watch, rules: &ProbeRules) -> Canary {
    let Some(url) = &watch.canary else {
        return Canary::NotConfigured;
    };
    let obs = ctx.prober.probe(url, rules).await;
    if obs.verdict == Verdict::Present {
        tracing::info!(watch = %watch.name, probe = %url, verdict = obs.verdict.as_str(), "canary");
        return Canary::Present;
    }
    let what = obs
        .error
        .clone()
        .or(obs.note.clone())
        .unwrap_or_else(|| format!("status {}", obs.status.unwrap_or(0)));
    // Warned even when nothing is due yet: purges will be withheld as soon
    // as something is.
    tracing::warn!(watch = %watch.name, probe = %url, verdict = obs.verdict.as_str(), "canary not present; this watch's purges are withheld while it is not");
    Canary::NotPresent(format!("{url}: {} ({what})", obs.verdict.as_str()))
}

/// The watch's remembered sources as a list of their own, with records.
fn remembered_part(
    watch: &Watch,
    remembered: Vec<(String, String, Rec)>,
) -> (Part, Vec<Option<Rec>>) {
    let mut builder = crate::sources::Builder::new(watch.origin.as_deref());
    let mut recs = std::collections::HashMap::with_capacity(remembered.len());
    for (src, probe, rec) in remembered {
        // Probed where it was last probed (its origin or `probe:` may have
        // left the config with it); a v1 import has no probe URL yet.
        let probe = (!probe.is_empty()).then_some(probe);
        builder.add(
            &|| format!("remembered source {src:?}"),
            &src,
            probe.as_deref(),
        );
        recs.insert(src, rec);
    }
    let (list, problems) = builder.finish();
    for p in problems {
        tracing::warn!(watch = %watch.name, problem = %p, "a remembered source cannot be probed");
    }
    let aligned = list
        .sources()
        .iter()
        .map(|s| recs.remove(&*s.src))
        .collect();
    (
        Part {
            list: List::Built(Arc::new(list)),
            referenced: false,
            seen_in: "remembered",
        },
        aligned,
    )
}

/// Runs the watch's discovery when it is due (always in a dry run; else
/// when the last successful one is older than `every`), records what it
/// found, and returns the discovered sources the config does not list, as
/// a part of the pass. A failed or partial discovery only adds: the sources
/// it did not see keep their last referenced time.
async fn discover(
    ctx: &PassContext,
    watch: &Watch,
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> Result<(Option<DiscoverySummary>, Option<Part>), StoreError> {
    let Some(settings) = &watch.discover else {
        return Ok((None, None));
    };
    let now_ms = millis(now);
    let last_ok = ctx.store.discovered_at(&watch.name).await?;
    let every = settings.every.as_millis() as Millis;
    let due = ctx.dry_run() || last_ok.is_none_or(|t| now_ms.saturating_sub(t) >= every);
    let configured: HashSet<&str> = watch.sources().iter().map(|s| &*s.src).collect();
    let mut summary = None;
    if due {
        let before = ctx.store.discovered_sources(&watch.name).await?;
        let found = crate::discover::Discoverer::new(ctx.prober.clone())
            .discover_watch(watch, cancel)
            .await
            .unwrap_or_else(|| crate::discover::Discovery {
                errors: vec!["discovery could not start".to_owned()],
                ..Default::default()
            });
        for e in &found.errors {
            tracing::warn!(watch = %watch.name, error = %e, "discovery incomplete; nothing it did not see is unreferenced");
        }
        // Each found source with the URL it is probed at, as configured ones.
        let mut builder = crate::sources::Builder::new(watch.origin.as_deref());
        let mut found_on: HashMap<&str, &str> = HashMap::with_capacity(found.sources.len());
        for f in &found.sources {
            builder.add(
                &|| format!("discovered source (on {})", f.found_on),
                &f.src,
                None,
            );
            found_on.entry(&f.src).or_insert(&f.found_on);
        }
        let (list, problems) = builder.finish();
        for p in problems {
            tracing::warn!(watch = %watch.name, problem = %p, "a discovered source is skipped");
        }
        let rows: Vec<(String, String, String)> = list
            .probes()
            .iter()
            .flat_map(|p| {
                let url = list.probe_url(watch.origin.as_deref(), p).into_owned();
                list.sources_of(p)
                    .iter()
                    .map(move |s| (s.src.to_string(), url.clone()))
            })
            .map(|(src, url)| {
                let on = found_on
                    .get(src.as_str())
                    .copied()
                    .unwrap_or_default()
                    .to_owned();
                (src, url, on)
            })
            .collect();
        let known: HashSet<&str> = before.iter().map(|(s, _)| s.as_str()).collect();
        let new = rows
            .iter()
            .filter(|(s, _, _)| !known.contains(s.as_str()) && !configured.contains(s.as_str()))
            .count();
        let mut complete = found.complete();
        if rows.is_empty() && !before.is_empty() {
            // A site that suddenly shows no image is more likely broken (or
            // the crawl blocked) than emptied: keep the last discovery.
            tracing::warn!(watch = %watch.name, last = before.len(), "discovery found no source where the last one found some; not counted as successful");
            complete = false;
        }
        tracing::info!(
            watch = %watch.name,
            found = rows.len(),
            new,
            pages_read = found.pages_read,
            sitemaps_read = found.sitemaps_read,
            errors = found.errors.len(),
            complete,
            elapsed_ms = found.elapsed.as_millis() as u64,
            "discovered"
        );
        summary = Some(DiscoverySummary {
            found: rows.len(),
            new,
            pages_read: found.pages_read,
            errors: found.errors.len(),
            complete,
        });
        ctx.store
            .discovered(&watch.name, rows, now_ms, complete)
            .await?;
    }
    let discovered = ctx.store.discovered_sources(&watch.name).await?;
    let mut builder = crate::sources::Builder::new(watch.origin.as_deref());
    for (src, _) in discovered
        .iter()
        .filter(|(s, _)| !configured.contains(s.as_str()))
    {
        builder.add(&|| format!("discovered source {src:?}"), src, None);
    }
    let (list, _) = builder.finish();
    let part = (!list.sources().is_empty()).then(|| Part {
        list: List::Built(Arc::new(list)),
        referenced: true,
        seen_in: "discovery",
    });
    Ok((summary, part))
}

/// Probes a watch and judges every source; reports what needs no API call.
async fn observe(
    ctx: &PassContext,
    watch: Arc<Watch>,
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> Result<Work, StoreError> {
    let started = Instant::now();
    let now_ms = millis(now);
    let rules = ProbeRules::from(&watch.rules);
    let configured = Part {
        list: List::Watch(watch.clone()),
        referenced: true,
        seen_in: "config",
    };
    let (discovery, discovered) = discover(ctx, &watch, cancel, now).await?;
    let mut referenced = vec![configured];
    referenced.extend(discovered);
    let listed: Arc<Vec<Arc<str>>> = Arc::new(
        referenced
            .iter()
            .flat_map(|p| p.list.sources().iter().map(|s| s.src.clone()))
            .collect(),
    );
    let forget_before = now_ms.saturating_sub(watch.rules.forget_after.as_millis() as Millis);
    let loaded = ctx.store.load(&watch.name, listed, forget_before).await?;
    if loaded.forgotten > 0 {
        tracing::info!(watch = %watch.name, forgotten = loaded.forgotten, forget_after = ?watch.rules.forget_after, "unreferenced sources with nothing pending left the inventory");
    }
    // The records, split back along the parts they were listed in: from
    // the end, so the first (largest) part keeps the allocation and a
    // million records are never held twice.
    let mut recs = loaded.recs;
    let mut split: Vec<Vec<Option<Rec>>> = Vec::with_capacity(referenced.len());
    for p in referenced.iter().skip(1).rev() {
        let tail = recs.split_off(recs.len() - p.list.sources().len());
        split.push(tail);
    }
    split.push(recs);
    split.reverse();
    let mut parts: Vec<(Part, Vec<Option<Rec>>)> = referenced.into_iter().zip(split).collect();
    let (remembered, remembered_recs) = remembered_part(&watch, loaded.remembered);
    let remembered_count = remembered.list.sources().len();
    if remembered_count > 0 {
        tracing::info!(watch = %watch.name, remembered = remembered_count, "probing sources no longer configured or discovered");
        parts.push((remembered, remembered_recs));
    }
    let sources: usize = parts.iter().map(|(p, _)| p.list.sources().len()).sum();
    let probes: usize = parts.iter().map(|(p, _)| p.list.probes().len()).sum();

    let mut summary = WatchSummary {
        watch: watch.name.clone(),
        project: watch.project.clone(),
        sources,
        probes,
        dry_run: ctx.dry_run(),
        remembered: remembered_count,
        discovery,
        ..WatchSummary::default()
    };
    let canary = canary(ctx, &watch, &rules).await;
    let mut writer = Writer::new(ctx.store.clone(), &watch.name);
    let mut due = Vec::new();
    let mut inconclusive = 0;

    {
        let lists: Arc<[List]> = parts.iter().map(|(p, _)| p.list.clone()).collect();
        // Indices, not references: a closure over a borrowed list would
        // make the pass future not `Send` for every lifetime the sidecar needs.
        let offsets: Vec<usize> = lists
            .iter()
            .scan(0, |at, l| {
                let start = *at;
                *at += l.probes().len();
                Some(start)
            })
            .collect();
        let total = probes;
        let (prober, origin) = (&ctx.prober, watch.origin.as_deref());
        let slots = tokio::sync::Semaphore::new(watch.rules.concurrency);
        let slots = &slots;
        let probes = futures::stream::iter((0..total).map(move |n| {
            let p = offsets.partition_point(|&o| o <= n) - 1;
            (p, n - offsets[p])
        }))
        .map(|(p, i)| probe_one(prober, lists.clone(), origin, p, i, &rules, slots))
        // More probes started than the watch's slots: a probe takes its
        // slot only after its host's permit (and any 429 backoff), so a
        // slow host does not hold back the others.
        .buffer_unordered(crate::probe::window(watch.rules.concurrency))
        .take_until(cancel.cancelled());
        let mut probes = std::pin::pin!(probes);
        while let Some((p, i, url, obs)) = probes.next().await {
            let (part, recs) = &mut parts[p];
            let target: &ProbeTarget = &part.list.probes()[i];
            if let Some(o) = &ctx.observer {
                o.probed(&watch.name, &obs, target.count());
            }
            summary.add_verdict(obs.verdict, target.count() as usize);
            inconclusive += usize::from(obs.verdict == Verdict::Inconclusive);
            let range = target.range();
            let listing = Listing {
                referenced: part.referenced,
                seen_in: part.seen_in,
            };
            for (source, slot) in part.list.sources()[range.clone()]
                .iter()
                .zip(&mut recs[range])
            {
                let source: &Source = source;
                match judge::judge(
                    &source.src,
                    &url,
                    &obs,
                    slot.take(),
                    listing,
                    &watch.rules,
                    now,
                ) {
                    Judged::Settled {
                        decision,
                        reason,
                        row,
                        history,
                    } => {
                        emit(
                            ctx,
                            &mut summary,
                            &watch,
                            Emitted {
                                src: &source.src,
                                probe: &url,
                                status: obs.status,
                                verdict: obs.verdict,
                                decision,
                                reason: &reason,
                                error: obs.error.as_deref(),
                                referenced: part.referenced,
                            },
                        );
                        writer.push(row, history).await;
                    }
                    Judged::Due { due: d, row } => {
                        writer.push(row, None).await;
                        due.push(*d);
                    }
                }
            }
        }
    }
    if summary.checked < sources {
        // Interrupted: sources not probed keep what they had.
        summary.interrupted = true;
    }
    // Written before any API call, so that a call's effect finds its row.
    writer.flush_async().await;
    writer.settle().await;

    // Oldest gone first, so a capped pass purges the longest-gone sources.
    due.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.src.cmp(&b.src)));
    // The rolling window: distinct sources of this watch (this shard: its
    // own store) that a call covered within `guard_window`, from the
    // ledger, less those due again now (counted once), per endpoint.
    let since = now_ms.saturating_sub(watch.rules.guard_window.as_millis() as Millis);
    let mut recent = [0usize; 2];
    for (slot, endpoint) in [Endpoint::Delete, Endpoint::Invalidate]
        .into_iter()
        .enumerate()
    {
        let called = ctx
            .store
            .recently_called(&watch.name, endpoint, since)
            .await?;
        if !called.is_empty() {
            let due_now: HashSet<&str> = due
                .iter()
                .filter(|d| d.endpoint == endpoint)
                .map(|d| &*d.src)
                .collect();
            recent[slot] = called
                .iter()
                .filter(|s| !due_now.contains(s.as_str()))
                .count();
        }
    }
    Ok(Work {
        watch,
        due,
        canary,
        inconclusive,
        summary,
        started,
        writer,
        sources,
        recent,
    })
}

async fn probe_one(
    prober: &Prober,
    lists: Arc<[List]>,
    origin: Option<&str>,
    p: usize,
    i: usize,
    rules: &ProbeRules,
    slots: &tokio::sync::Semaphore,
) -> (usize, usize, Arc<str>, Observation) {
    let url = lists[p].probe_url(origin, &lists[p].probes()[i]);
    let obs = prober.probe_in(&url, rules, Some(slots)).await;
    (p, i, url, obs)
}

/// Applies the blast-radius guards to one watch's due sources.
fn apply_guards(ctx: &PassContext, work: &mut Work) {
    let rules = &work.watch.rules;
    let input = |action: Action, due: usize, recent: usize| GuardInput {
        sources: work.sources,
        probes: work.summary.probes,
        inconclusive: work.inconclusive,
        due,
        recent,
        canary: work.canary.clone(),
        action,
        max_purge_fraction: rules.max_purge_fraction,
        max_invalidate_fraction: rules.max_invalidate_fraction,
        max_inconclusive_fraction: rules.max_inconclusive_fraction,
        fraction_floor: rules.fraction_floor,
        max_purges_per_pass: rules.max_purges_per_pass,
    };
    let count = |endpoint| work.due.iter().filter(|d| d.endpoint == endpoint).count();
    let (purges, invalidations) = (count(Endpoint::Delete), count(Endpoint::Invalidate));
    let purge = input(Action::Purge, purges, work.recent[0]);
    let mut outcomes = vec![(Endpoint::Delete, guard::check(&purge))];
    // The canary and the inconclusive guard speak for the whole watch:
    // once they trip, invalidations are withheld with the purges.
    let watch_wide = matches!(
        outcomes[0].1.tripped,
        Some((Guard::Inconclusive | Guard::Canary, _))
    );
    if watch_wide {
        outcomes.push((Endpoint::Invalidate, outcomes[0].1.clone()));
    } else {
        let invalidate = input(Action::Invalidate, invalidations, work.recent[1]);
        outcomes.push((Endpoint::Invalidate, guard::check(&invalidate)));
    }
    // A preview says what the pending would meet once confirmed.
    let pending = work.summary.count(Decision::Pending);
    let purge_outcome = &outcomes[0].1;
    if ctx.dry_run()
        && pending > 0
        && purge_outcome
            .tripped
            .as_ref()
            .is_none_or(|(g, _)| !g.is_alarm())
    {
        let later = guard::check(&GuardInput {
            due: purges + pending,
            ..purge
        });
        if let Some((g, why)) = later.tripped.filter(|(g, _)| g.is_alarm()) {
            work.summary.guard_forecast = Some(format!(
                "{g} once the {pending} pending are confirmed: {why}"
            ));
        }
    }
    let mut reported: Vec<Guard> = Vec::new();
    for (endpoint, outcome) in outcomes {
        let Some((g, why)) = &outcome.tripped else {
            continue;
        };
        let mine = |d: &&mut Due| d.endpoint == endpoint;
        let due = work.due.iter_mut().filter(mine).count();
        if due == 0 && reported.contains(g) {
            continue;
        }
        if !reported.contains(g) {
            reported.push(*g);
            tracing::warn!(
                watch = %work.watch.name,
                guard = g.as_str(),
                endpoint = endpoint.as_str(),
                due,
                recent = work.recent[usize::from(endpoint == Endpoint::Invalidate)],
                sources = work.sources,
                inconclusive = work.inconclusive,
                probes = work.summary.probes,
                withheld = due.saturating_sub(outcome.allowed),
                reason = %why,
                "guard withheld purges"
            );
            if let Some(o) = &ctx.observer {
                o.guard_tripped(&work.watch.name, *g);
            }
        }
        if g.is_alarm() {
            work.summary
                .guard_alarm
                .get_or_insert(format!("{g}: {why}"));
        }
        for d in work.due.iter_mut().filter(mine).skip(outcome.allowed) {
            d.decision = Some((
                Decision::Withheld,
                format!("{}; withheld by {g}: {why}", d.reason),
            ));
        }
    }
}

/// The reason of a due source held back because shutdown began.
fn shutdown_withheld(reason: &str) -> String {
    format!("{reason}; shutting down, no new purge calls")
}

/// API calls whose ledger rows (with their effects) are being written.
/// Each is recorded as soon as it is answered, in a transaction of its own,
/// while the next call is made: a shared database's commit waits for its
/// flush to disk, and these overlap the calls (and share flushes) instead
/// of adding up. At most [`RECORDS_IN_FLIGHT`]; every one is settled before
/// the pass writes anything else, and their sources never overlap (a
/// source is in one call per pass).
#[derive(Default)]
struct Recording {
    in_flight: std::collections::VecDeque<JoinHandle<Result<(), StoreError>>>,
}

impl Recording {
    async fn record(
        &mut self,
        ctx: &PassContext,
        entry: LedgerEntry,
        effects: Vec<(String, RowWrite)>,
        sources: &[Arc<str>],
        first_error: &mut Option<StoreError>,
    ) {
        while self.in_flight.len() >= RECORDS_IN_FLIGHT {
            self.settle_oldest(ctx, first_error).await;
        }
        let store = ctx.store.clone();
        let (project, sources) = (entry.project.clone(), sources.to_vec());
        self.in_flight.push_back(tokio::spawn(async move {
            let recorded = store.record_call(entry, effects).await;
            if let Err(e) = &recorded {
                tracing::error!(
                    project = %project,
                    sources = ?sources,
                    store = %store.describe(),
                    error = %e,
                    "a call was made but could not be recorded; its sources may be called again next pass"
                );
            }
            recorded
        }));
    }

    async fn settle_oldest(&mut self, ctx: &PassContext, first_error: &mut Option<StoreError>) {
        if let Some(h) = self.in_flight.pop_front() {
            let recorded = joined(h.await, &*ctx.store, "record an API call");
            if let Err(e) = recorded {
                first_error.get_or_insert(e);
            }
        }
    }

    /// Waits for every call being recorded.
    async fn settle(&mut self, ctx: &PassContext, first_error: &mut Option<StoreError>) {
        while !self.in_flight.is_empty() {
            self.settle_oldest(ctx, first_error).await;
        }
    }
}

/// Makes every allowed call, planned across watches, recording each in the
/// ledger (with its effect) as soon as it is answered (see [`Recording`]).
async fn call(
    ctx: &PassContext,
    works: &mut [Work],
    cancel: &CancellationToken,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let interrupted = works.iter().any(|w| w.summary.interrupted) || cancel.is_cancelled();
    let mut wanted = Vec::new();
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
                let would = match due.endpoint {
                    Endpoint::Delete => Decision::WouldPurge,
                    Endpoint::Invalidate => Decision::WouldInvalidate,
                };
                due.decision = Some((would, due.reason.clone()));
            } else if interrupted {
                held_for_shutdown = true;
                due.decision = Some((Decision::Withheld, shutdown_withheld(&due.reason)));
            } else {
                wanted.push(Wanted {
                    endpoint: due.endpoint,
                    target: target.clone(),
                    src: due.src.clone(),
                    key: (wi, di),
                });
            }
        }
        work.summary.interrupted |= held_for_shutdown;
    }
    let Some(vercel) = &ctx.vercel else {
        return Ok(());
    };

    let pass_started = Instant::now();
    let mut stopped = Stopped::default();
    // Calls per target that got no answer in this pass (a hanging API).
    let mut unanswered: std::collections::HashMap<PurgeTarget, u32> = Default::default();
    let mut first_error = None;
    let mut recording = Recording::default();
    for batch in plan::plan(wanted) {
        let sent = match stopped.why(&batch.target) {
            Some(why) => Err(PurgeError::NotSent(why.to_owned())),
            None if cancel.is_cancelled() => Err(PurgeError::ShuttingDown),
            None => {
                let sent = vercel
                    .send(
                        batch.endpoint,
                        &batch.target,
                        &batch.sources,
                        cancel,
                        unanswered.entry(batch.target.clone()).or_default(),
                    )
                    .await;
                if let Err(
                    e @ (PurgeError::Unauthorized { .. }
                    | PurgeError::PlanLacksFeature { .. }
                    | PurgeError::Unanswered { .. }),
                ) = &sent.outcome
                {
                    stopped.stop(&batch.target, e.to_string());
                }
                if let Some(o) = ctx.observer.as_ref().filter(|_| sent.calls > 0) {
                    o.purge_call(&batch.target.project, sent.outcome.is_ok(), sent.calls);
                }
                // The ledger row, and on a 200 the purge itself, in one
                // transaction before anything else happens.
                let effects = match &sent.outcome {
                    Ok(()) => batch
                        .askers
                        .iter()
                        .flatten()
                        .map(|&(wi, di)| {
                            let work = &mut works[wi];
                            let row = work.due[di].succeeded(now);
                            (work.watch.name.clone(), row)
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                if sent.calls > 0 {
                    let entry = LedgerEntry {
                        time: String::new(),
                        // The pass's clock: real time, unless a test runs
                        // the pass at another `now`.
                        at: millis(now) + pass_started.elapsed().as_millis() as Millis,
                        endpoint: batch.endpoint,
                        project: batch.target.project.clone(),
                        team_id: batch.target.team_id.clone(),
                        slug: batch.target.slug.clone(),
                        src_images: batch.sources.iter().map(|s| s.to_string()).collect(),
                        status: sent.status,
                        vercel_id: sent.vercel_id.clone(),
                        error: sent.outcome.as_ref().err().map(|e| e.to_string()),
                        attempts: sent.calls,
                    };
                    recording
                        .record(ctx, entry, effects, &batch.sources, &mut first_error)
                        .await;
                }
                let calls = sent.calls;
                // Counted once per watch per call.
                let mut counted: Vec<usize> = Vec::new();
                for &(wi, _) in batch.askers.iter().flatten() {
                    if !counted.contains(&wi) {
                        counted.push(wi);
                        works[wi].summary.api_calls += calls;
                    }
                }
                sent.outcome
            }
        };
        for &(wi, di) in batch.askers.iter().flatten() {
            let work = &mut works[wi];
            let due = &mut work.due[di];
            let (done, failed) = match due.endpoint {
                Endpoint::Delete => (Decision::Purge, "purge failed"),
                Endpoint::Invalidate => (Decision::Invalidate, "invalidate failed"),
            };
            due.decision = Some(match &sent {
                Ok(()) => (done, due.reason.clone()),
                Err(PurgeError::ShuttingDown) => {
                    work.summary.interrupted = true;
                    (Decision::Withheld, shutdown_withheld(&due.reason))
                }
                Err(e) => (Decision::Failed, format!("{}; {failed}: {e}", due.reason)),
            });
        }
    }
    recording.settle(ctx, &mut first_error).await;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One record's fields.
struct Emitted<'a> {
    src: &'a str,
    probe: &'a str,
    status: Option<u16>,
    verdict: Verdict,
    decision: Decision,
    reason: &'a str,
    error: Option<&'a str>,
    referenced: bool,
}

fn emit(ctx: &PassContext, summary: &mut WatchSummary, watch: &Watch, e: Emitted<'_>) {
    summary.add(e.decision);
    if ctx.dry_run() && e.decision == Decision::Pending {
        summary.list_pending(e.src, e.reason);
    }
    if let Some(o) = &ctx.observer {
        o.decided(&watch.name, e.decision);
    }
    ctx.reporter.emit(&Record {
        time: now_rfc3339(),
        watch: &watch.name,
        project: &watch.project,
        src: e.src,
        probe: e.probe,
        status: e.status,
        verdict: e.verdict,
        decision: e.decision,
        reason: e.reason,
        dry_run: ctx.dry_run(),
        referenced: e.referenced,
        error: e.error,
    });
}
