//! What `run --listen ADDR` serves: `GET /healthz` (liveness of the
//! scheduler loop, never of the origin or Vercel, with a small JSON body per
//! watch) and `GET /metrics` (Prometheus text from the prometheus-client
//! crate). [`Metrics`] is fed by the pass through [`PassObserver`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::exit::Exit;
use crate::guard::Guard;
use crate::pass::PassObserver;
use crate::policy::Decision;
use crate::probe::{Observation, Verdict};
use crate::report::WatchSummary;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchVerdict {
    watch: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchDecision {
    watch: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectOutcome {
    project: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchGuard {
    watch: String,
    guard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabel {
    watch: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The Prometheus metrics of a sidecar.
pub struct Metrics {
    registry: Registry,
    probes: Family<WatchVerdict, Counter>,
    decisions: Family<WatchDecision, Counter>,
    purge_calls: Family<ProjectOutcome, Counter>,
    guard_trips: Family<WatchGuard, Counter>,
    last_pass: Family<WatchLabel, FloatGauge>,
    pass_duration: Family<WatchLabel, FloatGauge>,
    sources: Family<WatchLabel, Gauge>,
    discoveries: Family<WatchOutcome, Counter>,
    discovered: Family<WatchLabel, Counter>,
    discovered_new: Family<WatchLabel, Counter>,
    discovery_pages: Family<WatchLabel, Counter>,
    discovery_errors: Family<WatchLabel, Counter>,
    standby: Family<WatchLabel, Gauge>,
}

/// A watch and how something of it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct WatchOutcome {
    watch: String,
    outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            probes: Family::default(),
            decisions: Family::default(),
            purge_calls: Family::default(),
            guard_trips: Family::default(),
            last_pass: Family::default(),
            pass_duration: Family::default(),
            sources: Family::default(),
            discoveries: Family::default(),
            discovered: Family::default(),
            discovered_new: Family::default(),
            discovery_pages: Family::default(),
            discovery_errors: Family::default(),
            standby: Family::default(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "origin_watch_probes",
            "Probe URLs probed, by verdict",
            m.probes.clone(),
        );
        registry.register(
            "origin_watch_decisions",
            "Decisions made about sources",
            m.decisions.clone(),
        );
        registry.register(
            "origin_watch_purge_calls",
            "Purge batches sent to Vercel, by outcome",
            m.purge_calls.clone(),
        );
        registry.register(
            "origin_watch_guard_trips",
            "Passes in which a guard withheld purges",
            m.guard_trips.clone(),
        );
        registry.register(
            "origin_watch_last_pass_timestamp_seconds",
            "When the last pass of a watch ended (Unix time)",
            m.last_pass.clone(),
        );
        registry.register(
            "origin_watch_pass_duration_seconds",
            "How long the last pass of a watch took",
            m.pass_duration.clone(),
        );
        registry.register(
            "origin_watch_sources",
            "Sources configured in a watch",
            m.sources.clone(),
        );
        registry.register(
            "origin_watch_discoveries",
            "Discoveries run, by outcome (complete or partial)",
            m.discoveries.clone(),
        );
        registry.register(
            "origin_watch_discovered_sources",
            "Sources found by discovery (counted each time they are found)",
            m.discovered.clone(),
        );
        registry.register(
            "origin_watch_discovered_new_sources",
            "Sources discovery found that the inventory did not know",
            m.discovered_new.clone(),
        );
        registry.register(
            "origin_watch_discovery_pages",
            "Pages read by discovery",
            m.discovery_pages.clone(),
        );
        registry.register(
            "origin_watch_discovery_errors",
            "Sitemaps, pages or lists discovery could not read",
            m.discovery_errors.clone(),
        );
        registry.register(
            "origin_watch_standby",
            "1 while another process owns the watch (a shared store) and this one stands by",
            m.standby.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Whether this process stands by for `watch` (another owns it).
    pub fn standby(&self, watch: &str, standby: bool) {
        self.standby
            .get_or_create(&WatchLabel {
                watch: watch.into(),
            })
            .set(i64::from(standby));
    }

    pub fn sources(&self, watch: &str, n: usize) {
        self.sources
            .get_or_create(&WatchLabel {
                watch: watch.into(),
            })
            .set(n as i64);
    }

    /// Starts a watch's series at zero (every verdict, decision and guard,
    /// and both purge outcomes of its project), so that `increase()` alerts
    /// see the first trip or failure rather than a series appearing from
    /// nothing.
    pub fn register_watch(&self, watch: &str, project: &str, sources: usize) {
        self.sources(watch, sources);
        let w = || watch.to_owned();
        for v in Verdict::ALL {
            drop(self.probes.get_or_create(&WatchVerdict {
                watch: w(),
                verdict: v.as_str().into(),
            }));
        }
        for d in Decision::ALL {
            drop(self.decisions.get_or_create(&WatchDecision {
                watch: w(),
                decision: d.as_str().into(),
            }));
        }
        for g in Guard::ALL {
            drop(self.guard_trips.get_or_create(&WatchGuard {
                watch: w(),
                guard: g.as_str().into(),
            }));
        }
        for outcome in ["ok", "failed"] {
            drop(self.purge_calls.get_or_create(&ProjectOutcome {
                project: project.into(),
                outcome: outcome.into(),
            }));
        }
        for outcome in ["complete", "partial"] {
            drop(self.discoveries.get_or_create(&WatchOutcome {
                watch: w(),
                outcome: outcome.into(),
            }));
        }
        let label = WatchLabel { watch: w() };
        for family in [
            &self.discovered,
            &self.discovered_new,
            &self.discovery_pages,
            &self.discovery_errors,
        ] {
            drop(family.get_or_create(&label));
        }
        // The pass gauges exist from start-up too: the last pass time
        // starts at the time the watch was registered (not 0, which would
        // fire "passes stopped" at once), so a sidecar that never finishes
        // a pass trips that alert after 3 intervals; the duration starts at 0.
        let label = WatchLabel { watch: w() };
        let last = self.last_pass.get_or_create(&label);
        if last.get() == 0.0 {
            last.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
        drop(last);
        drop(self.pass_duration.get_or_create(&label));
    }

    /// Drops every series of a watch that a reload removed, so alerts on
    /// (say) its last pass time do not fire forever.
    pub fn forget_watch(&self, watch: &str) {
        let w = || watch.to_owned();
        for v in Verdict::ALL {
            self.probes.remove(&WatchVerdict {
                watch: w(),
                verdict: v.as_str().into(),
            });
        }
        for d in Decision::ALL {
            self.decisions.remove(&WatchDecision {
                watch: w(),
                decision: d.as_str().into(),
            });
        }
        for g in Guard::ALL {
            self.guard_trips.remove(&WatchGuard {
                watch: w(),
                guard: g.as_str().into(),
            });
        }
        for outcome in ["complete", "partial"] {
            self.discoveries.remove(&WatchOutcome {
                watch: w(),
                outcome: outcome.into(),
            });
        }
        let label = WatchLabel { watch: w() };
        for family in [
            &self.discovered,
            &self.discovered_new,
            &self.discovery_pages,
            &self.discovery_errors,
        ] {
            family.remove(&label);
        }
        self.last_pass.remove(&label);
        self.pass_duration.remove(&label);
        self.sources.remove(&label);
        self.standby.remove(&label);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl PassObserver for Metrics {
    fn probed(&self, watch: &str, obs: &Observation, _sources: u32) {
        self.probes
            .get_or_create(&WatchVerdict {
                watch: watch.into(),
                verdict: obs.verdict.as_str().into(),
            })
            .inc();
    }

    fn decided(&self, watch: &str, decision: Decision) {
        self.decisions
            .get_or_create(&WatchDecision {
                watch: watch.into(),
                decision: decision.as_str().into(),
            })
            .inc();
    }

    fn guard_tripped(&self, watch: &str, guard: Guard) {
        self.guard_trips
            .get_or_create(&WatchGuard {
                watch: watch.into(),
                guard: guard.as_str().into(),
            })
            .inc();
    }

    fn purge_call(&self, project: &str, ok: bool, _calls: u32) {
        self.purge_calls
            .get_or_create(&ProjectOutcome {
                project: project.into(),
                outcome: if ok { "ok" } else { "failed" }.into(),
            })
            .inc();
    }

    fn pass_done(&self, s: &WatchSummary) {
        let w = WatchLabel {
            watch: s.watch.clone(),
        };
        self.last_pass
            .get_or_create(&w)
            .set(Utc::now().timestamp_millis() as f64 / 1000.0);
        self.pass_duration
            .get_or_create(&w)
            .set(s.duration.as_secs_f64());
        if let Some(d) = &s.discovery {
            self.discoveries
                .get_or_create(&WatchOutcome {
                    watch: s.watch.clone(),
                    outcome: if d.complete { "complete" } else { "partial" }.into(),
                })
                .inc();
            self.discovered.get_or_create(&w).inc_by(d.found as u64);
            self.discovered_new.get_or_create(&w).inc_by(d.new as u64);
            self.discovery_pages
                .get_or_create(&w)
                .inc_by(d.pages_read as u64);
            self.discovery_errors
                .get_or_create(&w)
                .inc_by(d.errors as u64);
        }
    }
}

/// What `/healthz` reports: the loop is alive, and per watch its last pass
/// and next fire.
#[derive(Default)]
pub struct Health {
    alive: AtomicBool,
    watches: Mutex<BTreeMap<String, WatchHealth>>,
    /// `None` while the state store answers; why not otherwise.
    database: Mutex<Option<String>>,
}

#[derive(Clone, Default, Serialize)]
pub struct WatchHealth {
    pub last_pass: Option<String>,
    pub outcome: Option<&'static str>,
    pub next_fire: Option<String>,
    /// `owner` or `standby` (a shared store: another process owns it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// Who owns the watch while this process stands by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Health {
    /// The watches' health; a panic elsewhere cannot poison it.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, WatchHealth>> {
        self.watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::SeqCst);
    }

    pub fn next_fire(&self, watch: &str, at: DateTime<Utc>) {
        let mut w = self.lock();
        w.entry(watch.to_owned()).or_default().next_fire = Some(rfc3339(at));
    }

    pub fn pass_done(&self, watch: &str, exit: Exit) {
        let outcome = match exit {
            Exit::Ok => "ok",
            Exit::PurgeFailed => "purge_failed",
            Exit::Withheld => "withheld",
            Exit::Usage => "error",
            Exit::Internal => "internal_error",
        };
        self.outcome(watch, outcome);
    }

    /// A pass of `watch` ran but could not record all it did in the store:
    /// `/healthz` says `state_not_recorded` for it (not `purge_failed`: the
    /// API may have answered every call), until a later pass of it ends.
    pub fn pass_not_recorded(&self, watch: &str) {
        self.outcome(watch, "state_not_recorded");
    }

    /// A pass of `watch` panicked: `/healthz` says `panicked` for it, and
    /// `degraded` overall, until a later pass of it ends. It still answers
    /// 200: the loop is alive and the other watches keep working, which a
    /// restart would interrupt.
    pub fn pass_panicked(&self, watch: &str) {
        self.outcome(watch, "panicked");
    }

    fn outcome(&self, watch: &str, outcome: &'static str) {
        let mut w = self.lock();
        let e = w.entry(watch.to_owned()).or_default();
        e.last_pass = Some(rfc3339(Utc::now()));
        e.outcome = Some(outcome);
    }

    /// Whether this process owns `watch` (`owner: None`) or stands by for
    /// the process named by `owner`.
    pub fn role(&self, watch: &str, owner: Option<String>) {
        let mut w = self.lock();
        let e = w.entry(watch.to_owned()).or_default();
        e.role = Some(if owner.is_some() { "standby" } else { "owner" });
        e.owner = owner;
    }

    /// The state store answered (`None`) or not (why).
    pub fn database(&self, problem: Option<String>) {
        *self
            .database
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = problem;
    }

    fn database_problem(&self) -> Option<String> {
        self.database
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forgets watches that a reload removed.
    pub fn retain(&self, names: &[String]) {
        self.lock().retain(|k, _| names.contains(k));
    }

    pub fn snapshot(&self) -> (bool, BTreeMap<String, WatchHealth>) {
        (self.alive.load(Ordering::SeqCst), self.lock().clone())
    }
}

#[derive(Clone)]
struct Served {
    metrics: std::sync::Arc<Metrics>,
    health: std::sync::Arc<Health>,
}

/// At most this many connections are served at once; a new one beyond it
/// closes the oldest (an idle or half-sent one, most likely), so a flood of
/// idle sockets costs a bounded number of file descriptors and cannot keep
/// a probe of `/healthz` out.
pub const MAX_CONNECTIONS: usize = 16;
/// A request's headers must arrive within this long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this (one request each: no keep-alive).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(15);

type Open = Mutex<BTreeMap<u64, CancellationToken>>;

fn lock(live: &Open) -> std::sync::MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
    live.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves `/healthz` and `/metrics` until `stop` is cancelled: one request
/// per connection, [`HEADER_READ_TIMEOUT`], [`CONNECTION_LIFETIME`] and
/// [`MAX_CONNECTIONS`], so an exposed port cannot take the file
/// descriptors that probes, purge calls and state saves need.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    health: std::sync::Arc<Health>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(Served { metrics, health });
    // Open connections, oldest first, each with a way to close it.
    let live: Arc<Open> = Arc::default();
    let mut next_id = 0u64;
    let mut accept_failed = false;
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to free.
                    if !std::mem::replace(&mut accept_failed, true) {
                        tracing::warn!(error = %e, "the /healthz and /metrics server cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        accept_failed = false;
        next_id += 1;
        let (id, close) = (next_id, CancellationToken::new());
        {
            let mut open = lock(&live);
            while open.len() >= MAX_CONNECTIONS {
                if let Some((_, oldest)) = open.pop_first() {
                    oldest.cancel();
                }
            }
            open.insert(id, close.clone());
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let (live, stop) = (live.clone(), stop.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false);
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            tokio::select! {
                _ = conn => {}
                _ = close.cancelled() => {}
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
            }
            lock(&live).remove(&id);
        });
    }
}

async fn healthz(State(s): State<Served>) -> Response {
    let (alive, watches) = s.health.snapshot();
    #[derive(Serialize)]
    struct Body {
        status: &'static str,
        /// `ok`, or why the state store cannot be reached.
        database: String,
        watches: BTreeMap<String, WatchHealth>,
    }
    let database = s.health.database_problem();
    let panicked = watches.values().any(|w| w.outcome == Some("panicked")) || database.is_some();
    let status = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Body {
        status: match (alive, panicked) {
            (false, _) => "starting",
            (true, true) => "degraded",
            (true, false) => "ok",
        },
        database: database.unwrap_or_else(|| "ok".to_owned()),
        watches,
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(s): State<Served>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_with_their_labels() {
        let m = Metrics::new();
        let obs = Observation {
            status: Some(404),
            verdict: Verdict::Gone,
            error: None,
            note: None,
            attempts: 1,
            elapsed: Duration::ZERO,
            validators: None,
        };
        m.probed("site", &obs, 1);
        m.decided("site", Decision::Purge);
        m.decided("site", Decision::Purge);
        m.purge_call("my-app", true, 1);
        m.guard_tripped("site", Guard::Canary);
        m.sources("site", 12);
        m.pass_done(&WatchSummary {
            watch: "site".into(),
            duration: Duration::from_millis(1500),
            ..WatchSummary::default()
        });
        let text = m.encode();
        for line in [
            r#"origin_watch_pass_duration_seconds{watch="site"} 1.5"#,
            r#"origin_watch_last_pass_timestamp_seconds{watch="site"} "#,
            r#"origin_watch_probes_total{watch="site",verdict="gone"} 1"#,
            r#"origin_watch_decisions_total{watch="site",decision="purge"} 2"#,
            r#"origin_watch_purge_calls_total{project="my-app",outcome="ok"} 1"#,
            r#"origin_watch_guard_trips_total{watch="site",guard="canary"} 1"#,
            r#"origin_watch_sources{watch="site"} 12"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_registered_watch_starts_at_zero() {
        let m = Metrics::new();
        m.register_watch("site", "my-app", 4);
        let text = m.encode();
        for line in [
            r#"origin_watch_guard_trips_total{watch="site",guard="canary"} 0"#,
            r#"origin_watch_decisions_total{watch="site",decision="failed"} 0"#,
            r#"origin_watch_probes_total{watch="site",verdict="gone"} 0"#,
            r#"origin_watch_purge_calls_total{project="my-app",outcome="failed"} 0"#,
            r#"origin_watch_sources{watch="site"} 4"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_removed_watch_leaves_no_series() {
        let m = Metrics::new();
        for watch in ["kept", "removed"] {
            m.sources(watch, 3);
            m.decided(watch, Decision::Keep);
            m.guard_tripped(watch, Guard::MaxPurgeFraction);
            m.pass_done(&WatchSummary {
                watch: watch.into(),
                ..WatchSummary::default()
            });
        }
        m.forget_watch("removed");
        let text = m.encode();
        assert!(!text.contains(r#"watch="removed""#), "{text}");
        assert!(
            text.contains(r#"origin_watch_sources{watch="kept"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"origin_watch_last_pass_timestamp_seconds{watch="kept"}"#),
            "{text}"
        );
    }
}
