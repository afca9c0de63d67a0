//! The long-running sidecar (`run`): each watch fires a pass on its own cron
//! schedule (UTC); passes of one watch never overlap; SIGHUP reloads the
//! config; SIGTERM/SIGINT stop new passes and new purge calls, let a call in
//! flight finish, save the state and return.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{AppError, context, load_config};
use crate::cli::{Global, RunArgs};
use crate::config::{Config, Watch};
use crate::exit::Exit;
use crate::metrics::{Health, Metrics};
use crate::pass::{PassContext, run_pass};

/// Runs one pass of one watch; the sidecar's only way to do work, so the
/// scheduler can be tested with a stub.
pub type PassFn = Arc<dyn Fn(Arc<Watch>) -> BoxFuture<'static, ()> + Send + Sync>;

/// Wall-clock time that follows Tokio's clock, so that paused-time tests
/// move cron schedules forward too.
#[derive(Clone, Copy)]
pub struct Clock {
    wall: DateTime<Utc>,
    mono: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Self::starting_at(Utc::now())
    }

    /// A clock that reads `wall` now (tests pin it to a known instant).
    pub fn starting_at(wall: DateTime<Utc>) -> Clock {
        Clock {
            wall,
            mono: Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.wall + chrono::Duration::from_std(self.mono.elapsed()).unwrap_or_default()
    }

    /// The Tokio instant at which wall time `t` is reached.
    pub fn instant_at(&self, t: DateTime<Utc>) -> Instant {
        let ahead = (t - self.wall).to_std().unwrap_or(Duration::ZERO);
        self.mono + ahead
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
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
    loop {
        let Some(next) = watch.rules.schedule.next_after(clock.now()) else {
            tracing::warn!(watch = %watch.name, "schedule has no next fire time; watch stops");
            return;
        };
        if let Some(h) = &health {
            h.next_fire(&watch.name, next);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(clock.instant_at(next)) => {}
        }
        if running.swap(true, Ordering::SeqCst) {
            tracing::warn!(watch = %watch.name, fire = %next, "previous pass still running; this fire is skipped");
            continue;
        }
        let (fut, running) = (pass(watch.clone()), running.clone());
        tracker.spawn(async move {
            fut.await;
            running.store(false, Ordering::SeqCst);
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
    let ctx = Arc::new(context(&config, &args.pass)?);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let ctx = Arc::new(PassContext {
        observer: Some(metrics.clone()),
        prober: ctx.prober.clone(),
        vercel: ctx.vercel.clone(),
        state: ctx.state.clone(),
        reporter: ctx.reporter.clone(),
    });
    if let Some(addr) = args.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /healthz and /metrics");
        let (m, h, stop) = (metrics.clone(), health.clone(), shutdown.clone());
        tokio::spawn(async move { crate::metrics::serve(listener, m, h, stop).await });
    }

    let tracker = TaskTracker::new();
    let running: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>> = Arc::default();
    let clock = Clock::new();
    let pass: PassFn = {
        let (ctx, health, shutdown) = (ctx.clone(), health.clone(), shutdown.clone());
        Arc::new(move |watch: Arc<Watch>| {
            let (ctx, health, shutdown) = (ctx.clone(), health.clone(), shutdown.clone());
            Box::pin(async move {
                let outcome = run_pass(&ctx, std::slice::from_ref(&watch), &shutdown).await;
                match outcome {
                    Ok(o) => {
                        crate::app::print_outcome(&o);
                        health.pass_done(&watch.name, o.exit());
                    }
                    Err(e) => {
                        tracing::error!(watch = %watch.name, error = %e, "pass could not save its state");
                        health.pass_done(&watch.name, Exit::PurgeFailed);
                    }
                }
            })
        })
    };

    let mut config = config;
    let mut hup = hangup_signal();
    'serve: loop {
        for w in &config.watches {
            metrics.sources(&w.name, w.sources.len());
        }
        let loops = shutdown.child_token();
        for watch in &config.watches {
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
                _ = hup.recv() => match load_config(global) {
                    Ok(mut new) => {
                        // The state file and its lock stay those of the first config.
                        new.state_path = config.state_path.clone();
                        tracing::info!(watches = new.watches.len(), "config reloaded; it applies from each watch's next fire");
                        loops.cancel();
                        health.retain(&new.watches.iter().map(|w| w.name.clone()).collect::<Vec<_>>());
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
    if tokio::time::timeout(args.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?args.shutdown_timeout, "passes still running at the shutdown timeout; saving state and exiting");
    }
    ctx.state.save().map_err(AppError::StateSave)?;
    ctx.reporter.flush();
    Ok(Exit::Ok)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn watch(schedule: &str) -> Arc<Watch> {
        let c = Config::from_yaml(&format!(
            "watches:\n  - {{ name: w, project: p, origin: 'http://127.0.0.1:9', schedule: '{schedule}', images: [/a.png] }}\n"
        ))
        .unwrap();
        c.watches[0].clone()
    }

    /// Half a second past a round minute: fires are 0.5 s apart from it.
    fn half_past() -> Clock {
        use chrono::TimeZone;
        Clock::starting_at(Utc.timestamp_millis_opt(1_800_000_000_500).unwrap())
    }

    fn counting_pass(count: Arc<AtomicUsize>, takes: Duration) -> PassFn {
        Arc::new(move |_w| {
            let count = count.clone();
            Box::pin(async move {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
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
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let h = tokio::spawn(watch_loop(
            watch("*/5 * * * * *"),
            counting_pass(count.clone(), Duration::from_secs(2)),
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
        tracker.close();
        tracker.wait().await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
