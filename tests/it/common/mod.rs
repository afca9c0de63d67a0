//! Shared test harness: a loopback origin and fake Vercel API per test, a
//! config pointed at them, and passes run through the real pass code, each
//! with the state file opened afresh (as a `once` run would).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use origin_watch::config::{Config, Token};
use origin_watch::pass::{PassContext, PassOutcome, run_pass};
use origin_watch::probe::Prober;
use origin_watch::report::Reporter;
use origin_watch::store::{self, Access, SourceRow};
use origin_watch::vercel::{RetryPolicy, VercelClient};
use serde_json::Value;
use testkit::Captured;
use testkit::fake_origin::{Behavior, FakeOrigin};
use testkit::fake_vercel::{FakeVercel, FakeVercelConfig};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "tok_test_secret_7f3a";

pub struct Harness {
    pub origin: FakeOrigin,
    pub api: FakeVercel,
    pub dir: tempfile::TempDir,
    /// What `state:` says: the SQLite file in `dir`, or a PostgreSQL URL
    /// (a schema of its own in the test server).
    pub state: String,
}

/// The variable naming the test PostgreSQL server (`.ci/postgres.sh`).
pub const PG_ENV: &str = "ORIGIN_WATCH_TEST_PG";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The test server's URL. Unset: `None`, said loudly, and a failure under
/// `CI=true` (CI starts the server; a missing one is a broken CI, not a skip).
pub fn pg_url() -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{PG_ENV} is not set under CI=true: .ci/run starts PostgreSQL and must export it"
                );
            }
            eprintln!(
                "\n!!! SKIPPED: this PostgreSQL test needs {PG_ENV} (run `eval \"$(.ci/postgres.sh start /tmp/ow-pg)\"` first) !!!\n"
            );
            None
        }
    }
}

/// A fresh, empty schema in the test server, as a `state:` URL.
pub async fn pg_schema() -> Option<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let url = pg_url()?;
    let schema = format!(
        "t_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        fastrand_suffix()
    );
    let client = pg_client(&url).await;
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-csearch_path%3D{schema}"))
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

/// A plain connection to the test server (no TLS: it listens on loopback).
pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// One pass's result: the outcome and every report line.
pub struct Ran {
    pub outcome: PassOutcome,
    pub records: Vec<Value>,
}

impl Ran {
    /// src -> decision.
    pub fn decisions(&self) -> BTreeMap<String, String> {
        self.records
            .iter()
            .map(|r| {
                (
                    r["src"].as_str().unwrap().to_owned(),
                    r["decision"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    pub fn decision(&self, src: &str) -> String {
        self.decisions()
            .get(src)
            .cloned()
            .unwrap_or_else(|| panic!("no decision for {src}: {:?}", self.records))
    }

    pub fn record(&self, src: &str) -> &Value {
        self.records
            .iter()
            .find(|r| r["src"] == src)
            .unwrap_or_else(|| panic!("no record for {src}"))
    }
}

impl Harness {
    /// Writes a config file for the binary into the harness's folder (as
    /// `once` would read it): its API, its store, and `rest` with
    /// `{origin}` replaced.
    pub fn config_file(&self, rest: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("watch.yaml");
        let yaml = format!(
            "vercel:\n  token_env: OW_TEST_TOKEN\n  api_base: {}\nstate: '{}'\n{}",
            self.api.base_url(),
            self.state,
            rest.replace("{origin}", &self.origin.base_url())
        );
        std::fs::write(&path, yaml).unwrap();
        path
    }

    pub async fn new(routes: &[(&str, Behavior)], default: Behavior) -> Harness {
        Self::on(Backend::Sqlite, routes, default)
            .await
            .expect("SQLite is always there")
    }

    /// A harness on `backend`; `None` (said loudly) when PostgreSQL is not
    /// available outside CI.
    pub async fn on(
        backend: Backend,
        routes: &[(&str, Behavior)],
        default: Behavior,
    ) -> Option<Harness> {
        let dir = tempfile::tempdir().unwrap();
        let state = match backend {
            Backend::Sqlite => dir.path().join("state.db").display().to_string(),
            Backend::Postgres => pg_schema().await?,
        };
        let origin = FakeOrigin::start(
            routes.iter().map(|(p, b)| (p.to_string(), b.clone())),
            default,
        )
        .await
        .unwrap();
        // With the simulated image cache, filled from this origin.
        let api = FakeVercel::start(FakeVercelConfig {
            origin: Some(origin.base_url()),
            ..FakeVercelConfig::new(TOKEN)
        })
        .await
        .unwrap();
        Some(Harness {
            origin,
            api,
            dir,
            state,
        })
    }

    /// The store as `state:` names it.
    pub fn location(&self) -> store::StateLocation {
        store::StateLocation::parse(&self.state, std::path::Path::new("")).unwrap()
    }

    pub fn state_path(&self) -> std::path::PathBuf {
        self.dir.path().join("state.db")
    }

    /// A config whose `vercel:` and `state:` point at this harness; `rest`
    /// holds `defaults:` and `watches:`. `{origin}` in `rest` is replaced.
    pub fn config(&self, vercel_extra: &str, rest: &str) -> Config {
        let yaml = format!(
            "vercel:\n  api_base: {}\n{vercel_extra}\nstate: '{}'\n{}",
            self.api.base_url(),
            self.state,
            rest.replace("{origin}", &self.origin.base_url())
        );
        Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    pub async fn context(
        &self,
        config: &Config,
        dry_run: bool,
        token: &str,
    ) -> (PassContext, Captured) {
        let lines = Captured::default();
        let vercel = (!dry_run).then(|| {
            Arc::new(
                VercelClient::new(config.vercel(), Token::new(token))
                    .unwrap()
                    .with_retry(RetryPolicy {
                        max_retries: 4,
                        base: Duration::from_millis(20),
                        max_wait: Duration::from_millis(200),
                    }),
            )
        });
        let access = if dry_run {
            Access::DryRun
        } else {
            Access::Write
        };
        let store = store::open(config.state(), config.legacy_state(), access)
            .await
            .unwrap();
        let ctx = PassContext {
            prober: Arc::new(
                Prober::new()
                    .unwrap()
                    .with_retry_base(Duration::from_millis(5)),
            ),
            vercel,
            store,
            reporter: Arc::new(Reporter::to_writer(Box::new(lines.clone()))),
            observer: None,
        };
        (ctx, lines)
    }

    /// One pass, as one `once` run: state opened, pass run, state released.
    pub async fn pass(&self, config: &Config) -> Ran {
        self.pass_with(config, false, TOKEN).await
    }

    pub async fn dry_pass(&self, config: &Config) -> Ran {
        self.pass_with(config, true, TOKEN).await
    }

    pub async fn pass_with(&self, config: &Config, dry_run: bool, token: &str) -> Ran {
        let (ctx, lines) = self.context(config, dry_run, token).await;
        let outcome = run_pass(&ctx, config.watches(), &CancellationToken::new())
            .await
            .unwrap();
        Ran {
            outcome,
            records: lines.take_json_lines(),
        }
    }

    /// The inventory as `state show` prints it, by (watch, src).
    pub async fn inventory(&self) -> BTreeMap<(String, String), SourceRow> {
        let store = store::open(self.location(), None, Access::Read)
            .await
            .unwrap();
        store
            .show(None, &[])
            .await
            .unwrap()
            .into_iter()
            .map(|r| ((r.watch.clone(), r.src.clone()), r))
            .collect()
    }

    /// One pass as if it started at `now` (for `min_gone_for` and `guard_window`).
    pub async fn pass_at(&self, config: &Config, now: chrono::DateTime<chrono::Utc>) -> Ran {
        let (ctx, lines) = self.context(config, false, TOKEN).await;
        let outcome =
            origin_watch::pass::run_pass_at(&ctx, config.watches(), &CancellationToken::new(), now)
                .await
                .unwrap();
        Ran {
            outcome,
            records: lines.take_json_lines(),
        }
    }

    /// What a visitor gets for `src` from the simulated image cache:
    /// (status, `x-vercel-cache`, body).
    pub async fn visit(&self, src: &str) -> (u16, String, String) {
        let q: String = url::form_urlencoded::byte_serialize(src.as_bytes()).collect();
        let resp = reqwest::get(format!(
            "{}/_next/image?url={q}&w=640&q=75",
            self.api.base_url()
        ))
        .await
        .unwrap();
        let status = resp.status().as_u16();
        let cache = resp
            .headers()
            .get("x-vercel-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, cache, resp.text().await.unwrap())
    }

    /// The sources of every call the fake API answered, per call.
    pub fn batches(&self) -> Vec<Vec<String>> {
        self.api.calls().into_iter().map(|c| c.src_images).collect()
    }
}

/// `n` path-style sources `/img/0.png` .. and their routes with `b`.
pub fn many(n: usize, b: Behavior) -> (Vec<String>, Vec<(String, Behavior)>) {
    let srcs: Vec<String> = (0..n).map(|i| format!("/img/{i}.png")).collect();
    let routes = srcs.iter().map(|s| (s.clone(), b.clone())).collect();
    (srcs, routes)
}
