//! The long-running sidecar (`run`): each watch fires a pass on its own cron
//! schedule (UTC); passes of one watch never overlap; SIGHUP reloads the
//! config; SIGTERM/SIGINT stop new passes and new purge calls, let a call in
//! flight finish, save the state and return.
//!
//! On a shared store (PostgreSQL) a watch is acted for by one process at a
//! time: each fire first takes (or confirms) ownership; a process that
//! does not own a watch stands by for it (no pass; `/healthz` and
//! `/metrics` say so) and tries again at every fire, so it takes over within
//! one schedule interval of the owner's death, from the shared state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{Global, RunArgs};
use crate::config::{Config, Watch};
use crate::exit::Exit;
use crate::metrics::{Health, Metrics};
use crate::pass::{PassContext, run_pass};
use crate::setup::{AppError, context, load_config};

/// Runs one pass of one watch; the sidecar's only way to do work, so the
/// scheduler can be tested with a stub.
pub type PassFn = Arc<dyn Fn(Arc<Watch>) -> BoxFuture<'static, ()> + Send + Sync>;

/// The longest single sleep toward a fire: the wall clock is read again
/// after each, so a clock step (NTP, a resumed VM) or a suspend moves the
/// next fire with it instead of leaving it at the wrong UTC time.
const MAX_NAP: Duration = Duration::from_secs(30);

/// UTC wall time for the schedules: the system clock, or (tests) a clock
/// pinned to a known instant that follows Tokio's clock, so paused-time
/// tests move cron schedules forward too.
#[derive(Clone, Copy, Default)]
pub struct Clock {
    pinned: Option<(DateTime<Utc>, Instant)>,
}

impl Clock {
    /// The system clock.
    pub fn new() -> Clock {
        Clock { pinned: None }
    }

    /// A clock that reads `wall` now and moves with Tokio's clock.
    pub fn starting_at(wall: DateTime<Utc>) -> Clock {
        Clock {
            pinned: Some((wall, Instant::now())),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.pinned {
            None => Utc::now(),
            Some((wall, mono)) => {
                wall + chrono::Duration::from_std(mono.elapsed()).unwrap_or_default()
            }
        }
    }

    /// Sleeps until wall time `t`, in naps of at most `MAX_NAP`.
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        loop {
            match (t - self.now()).to_std() {
                Ok(left) if !left.is_zero() => tokio::time::sleep(left.min(MAX_NAP)).await,
                _ => return,
            }
        }
    }
}

/// Clears a watch's "pass running" flag when its pass ends, even by a panic,
/// so one bad pass cannot make every later fire be skipped.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Fires `pass` for `watch` on its schedule until `stop` is cancelled. A
/// fire that finds the previous pass still running is skipped. Passes run
/// on `tracker`, so the caller can wait for them.
pub async fn watch_loop(
    watch: Arc<Watch>,
    pass: PassFn,
    running: Arc<AtomicBool>,
    tracker: TaskTracker,
    clock: Clock,
    stop: CancellationToken,
    health: Option<Arc<Health>>,
) {
    let mut first = true;
    loop {
        let Some(next) = watch.rules.schedule.next_after(clock.now()) else {
            tracing::warn!(watch = %watch.name, "schedule has no next fire time; watch stops");
            return;
        };
        if std::mem::take(&mut first) {
            tracing::info!(
                watch = %watch.name,
                schedule = watch.rules.schedule.expression(),
                sources = watch.sources().len(),
                next_fire = %next,
                "watch scheduled"
            );
        }
        if let Some(h) = &health {
            h.next_fire(&watch.name, next);
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = clock.sleep_until(next) => {}
        }
        if stop.is_cancelled() {
            return;
        }
        if running.swap(true, Ordering::SeqCst) {
            tracing::warn!(watch = %watch.name, fire = %next, "previous pass still running; this fire is skipped");
            continue;
        }
        let (fut, running) = (pass(watch.clone()), Running(running.clone()));
        let (name, health) = (watch.name.clone(), health.clone());
        tracker.spawn(async move {
            let _running = running;
            // A panicking pass is this watch's failure alone: it is logged,
            // shown by /healthz, and the watch keeps its schedule.
            use futures::FutureExt;
            if let Err(panic) = std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                let why = crate::exit::panic_message(&*panic);
                tracing::error!(watch = %name, error = %why, "pass panicked; the watch keeps its schedule");
                if let Some(h) = &health {
                    h.pass_panicked(&name);
                }
            }
        });
    }
}

/// `origin-watch run`.
pub async fn sidecar(
    config: Config,
    global: &Global,
    args: RunArgs,
    shutdown: CancellationToken,
) -> Result<Exit, AppError> {
    let ctx = Arc::new(context(&config, &args.pass).await?);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let ctx = Arc::new(PassContext {
        observer: Some(metrics.clone()),
        prober: ctx.prober.clone(),
        vercel: ctx.vercel.clone(),
        store: ctx.store.clone(),
        reporter: ctx.reporter.clone(),
    });
    if let Some(addr) = &args.listen {
        // A host name (`localhost:9191`) is resolved here.
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .map_err(|cause| AppError::Listen {
                addr: addr.clone(),
                cause,
            })?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /healthz and /metrics");
        let (m, h, stop) = (metrics.clone(), health.clone(), shutdown.clone());
        tokio::spawn(async move { crate::metrics::serve(listener, m, h, stop).await });
    }

    let tracker = TaskTracker::new();
    let running: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>> = Arc::default();
    let clock = Clock::new();
    let notifier = crate::setup::notifier(&config, &args.pass)?.map(Arc::new);
    let pass: PassFn = {
        let (ctx, health, shutdown, metrics) = (
            ctx.clone(),
            health.clone(),
            shutdown.clone(),
            metrics.clone(),
        );
        Arc::new(move |watch: Arc<Watch>| {
            let (ctx, health, shutdown, metrics) = (
                ctx.clone(),
                health.clone(),
                shutdown.clone(),
                metrics.clone(),
            );
            let notifier = notifier.clone();
            Box::pin(async move {
                if !ctx.dry_run() && !owns(&ctx, &watch.name, &health, &metrics).await {
                    return;
                }
                let started = crate::store::millis(Utc::now());
                let outcome = run_pass(&ctx, std::slice::from_ref(&watch), &shutdown).await;
                if let Some(n) = &notifier {
                    n.after(&*ctx.store, started, &outcome).await;
                }
                match outcome {
                    Ok(o) => {
                        if let Err(e) = crate::setup::print_outcome(&o) {
                            tracing::error!(error = %e, "cannot write the summary to stdout");
                        }
                        if o.store_error.is_some() {
                            health.pass_not_recorded(&watch.name);
                        } else {
                            health.pass_done(&watch.name, o.exit());
                        }
                    }
                    // The store failed, not a purge: /healthz says so.
                    Err(e) => {
                        tracing::error!(watch = %watch.name, error = %e, "the pass's state could not be recorded");
                        health.pass_not_recorded(&watch.name);
                    }
                }
            })
        })
    };

    if !ctx.dry_run() {
        // Who owns what, said at once rather than at the first fire.
        for w in config.watches() {
            owns(&ctx, &w.name, &health, &metrics).await;
        }
        let (store, health, stop) = (ctx.store.clone(), health.clone(), shutdown.clone());
        tokio::spawn(async move { watch_database(store, health, stop).await });
    }

    let mut config = config;
    // What the Vercel client was built with; a reload cannot change it.
    let startup_vercel = config.vercel().clone();
    let mut hup = hangup_signal();
    'serve: loop {
        for w in config.watches() {
            metrics.register_watch(&w.name, &w.project, w.sources().len());
        }
        let loops = shutdown.child_token();
        for watch in config.watches() {
            let flag = running
                .lock()
                .expect("running lock")
                .entry(watch.name.clone())
                .or_default()
                .clone();
            tokio::spawn(watch_loop(
                watch.clone(),
                pass.clone(),
                flag,
                tracker.clone(),
                clock,
                loops.clone(),
                Some(health.clone()),
            ));
        }
        health.set_alive(true);
        // Wait for a signal; only a valid reload restarts the loops.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break 'serve,
                // Reading a million-line images_file takes about a second:
                // on the blocking pool, not an async worker.
                _ = hup.recv() => match reload(global).await {
                    Ok(mut new) => {
                        // The store and its lock stay those of the first config.
                        if new.state() != config.state() {
                            tracing::warn!(state = %config.state(), ignored = %new.state(), "the state store keeps its start-up location until a restart");
                        }
                        new.override_state(config.state().clone());
                        let (old_v, new_v) = (&startup_vercel, new.vercel());
                        if old_v.api_base() != new_v.api_base()
                            || old_v.token_env() != new_v.token_env()
                            || old_v.revalidation_deadline_seconds() != new_v.revalidation_deadline_seconds()
                        {
                            tracing::warn!("vercel.api_base, vercel.token_env and vercel.revalidation_deadline_seconds keep their start-up values until a restart");
                        }
                        tracing::info!(watches = new.watches().len(), "config reloaded; it applies from each watch's next fire");
                        loops.cancel();
                        let names: Vec<String> = new.watches().iter().map(|w| w.name.clone()).collect();
                        health.retain(&names);
                        for gone in config.watches().iter().filter(|w| !names.contains(&w.name)) {
                            metrics.forget_watch(&gone.name);
                        }
                        // Per-host limits are rebuilt from the new config
                        // as each host is next probed.
                        ctx.prober.reset_host_limits();
                        config = new;
                        continue 'serve;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "config reload failed; the old config keeps running");
                    }
                },
            }
        }
    }

    tracing::info!("shutting down: no new passes or purge calls; waiting for passes in flight");
    tracker.close();
    let clean = tokio::time::timeout(args.shutdown_timeout, tracker.wait())
        .await
        .is_ok();
    if !clean {
        tracing::warn!(timeout = ?args.shutdown_timeout, "passes still running at the shutdown timeout; exiting 1 (every call they made is already recorded)");
    }
    crate::setup::report_written(&ctx, &args.pass.report)?;
    Ok(if clean { Exit::Ok } else { Exit::PurgeFailed })
}

/// Takes or confirms this process's ownership of `watch`; says in
/// `/healthz` and `/metrics` whether it stands by, and logs each change.
async fn owns(ctx: &PassContext, watch: &str, health: &Health, metrics: &Metrics) -> bool {
    let was = health
        .snapshot()
        .1
        .get(watch)
        .and_then(|w| w.role)
        .unwrap_or("none");
    match ctx.store.acquire(watch).await {
        Ok(crate::store::Ownership::Owned) => {
            if was != "owner" {
                tracing::info!(watch, store = %ctx.store.describe(), "this process owns the watch and acts for it");
            }
            health.role(watch, None);
            metrics.standby(watch, false);
            true
        }
        Ok(crate::store::Ownership::Standby { owner }) => {
            if was != "standby" {
                tracing::info!(watch, owner = %owner, store = %ctx.store.describe(), "another process owns the watch; standing by (trying again at every fire)");
            }
            health.role(watch, Some(owner));
            metrics.standby(watch, true);
            false
        }
        Err(e) => {
            tracing::error!(watch, error = %e, "cannot tell who owns the watch; no pass this fire");
            health.database(Some(e.to_string()));
            false
        }
    }
}

/// Asks the store every few seconds whether it answers, for `/healthz`.
async fn watch_database(
    store: Arc<dyn crate::store::Store>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    loop {
        let problem = store.health().await.err().map(|e| e.to_string());
        if let Some(p) = &problem {
            tracing::warn!(store = %store.describe(), error = %p, "the state store cannot be reached");
        }
        health.database(problem);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// SIGHUP as a stream of reload requests (never fires off Unix).
struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangup {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.0 {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Hangup(signal(SignalKind::hangup()).ok())
    }
    #[cfg(not(unix))]
    Hangup()
}

/// Loads the config again (SIGHUP) off the async workers.
async fn reload(global: &Global) -> Result<crate::config::Config, crate::config::ConfigError> {
    let global = global.clone();
    match tokio::task::spawn_blocking(move || load_config(&global)).await {
        Ok(loaded) => loaded,
        // A panic while reading the config: reported as the config error it is.
        Err(e) => Err(crate::config::ConfigError::Invalid {
            origin: "reload".into(),
            problems: vec![format!("the reload stopped: {e}")],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn watch(schedule: &str) -> Arc<Watch> {
        let c = Config::from_yaml(&format!(
            "watches:\n  - {{ name: w, project: p, origin: 'http://127.0.0.1:9', schedule: '{schedule}', images: [/a.png] }}\n"
        ))
        .unwrap();
        c.watches()[0].clone()
    }

    /// Half a second past a round minute: fires are 0.5 s apart from it.
    fn half_past() -> Clock {
        use chrono::TimeZone;
        Clock::starting_at(Utc.timestamp_millis_opt(1_800_000_000_500).unwrap())
    }

    fn counting_pass(count: Arc<AtomicUsize>, takes: Duration) -> PassFn {
        finishing_pass(count, Arc::default(), takes)
    }

    /// Counts passes as they start in `started` and as they end in `finished`.
    fn finishing_pass(
        started: Arc<AtomicUsize>,
        finished: Arc<AtomicUsize>,
        takes: Duration,
    ) -> PassFn {
        Arc::new(move |_w| {
            let (started, finished) = (started.clone(), finished.clone());
            Box::pin(async move {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn fires_once_per_scheduled_second() {
        let count = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let h = tokio::spawn(watch_loop(
            watch("* * * * * *"),
            counting_pass(count.clone(), Duration::from_millis(10)),
            Arc::default(),
            tracker.clone(),
            half_past(),
            stop.clone(),
            None,
        ));
        // Fires at +0.5 s, +1.5 s, ... +9.5 s.
        tokio::time::sleep(Duration::from_millis(10_200)).await;
        stop.cancel();
        h.await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_pass_is_never_overlapped() {
        let count = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let h = tokio::spawn(watch_loop(
            watch("* * * * * *"),
            counting_pass(count.clone(), Duration::from_millis(3_500)),
            Arc::default(),
            tracker.clone(),
            half_past(),
            stop.clone(),
            None,
        ));
        // Passes start at +0.5 s, +4.5 s and +8.5 s; the fires between are skipped.
        tokio::time::sleep(Duration::from_millis(10_200)).await;
        stop.cancel();
        h.await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_the_loop_and_waits_for_the_pass() {
        let count = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let h = tokio::spawn(watch_loop(
            watch("*/5 * * * * *"),
            finishing_pass(count.clone(), finished.clone(), Duration::from_secs(2)),
            Arc::default(),
            tracker.clone(),
            half_past(),
            stop.clone(),
            None,
        ));
        // One fire at +4.5 s; the pass is still running when we cancel.
        tokio::time::sleep(Duration::from_millis(5_100)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_millis(10), h)
            .await
            .expect("loop returns at once")
            .unwrap();
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "the pass is still running"
        );
        let waited = Instant::now();
        tracker.close();
        tracker.wait().await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the tracker waited for the pass"
        );
        assert!(waited.elapsed() >= Duration::from_millis(1_300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_pass_does_not_block_later_fires() {
        let count = Arc::new(AtomicUsize::new(0));
        let pass: PassFn = {
            let count = count.clone();
            Arc::new(move |_w| {
                let count = count.clone();
                Box::pin(async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    panic!("a bug in a pass");
                })
            })
        };
        let stop = CancellationToken::new();
        let h = tokio::spawn(watch_loop(
            watch("* * * * * *"),
            pass,
            Arc::default(),
            TaskTracker::new(),
            half_past(),
            stop.clone(),
            None,
        ));
        tokio::time::sleep(Duration::from_millis(3_200)).await;
        stop.cancel();
        h.await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 3, "every fire ran a pass");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_sleep_reaches_its_wall_time_in_naps() {
        let clock = half_past();
        let target = clock.now() + chrono::Duration::seconds(95);
        clock.sleep_until(target).await;
        assert!(clock.now() >= target);
        assert!(clock.now() - target < chrono::Duration::milliseconds(5));
    }
}
