//! The store's figures (`bench -- --store`): the same pass over N sources
//! with the SQLite store and with a store that keeps nothing (the baseline:
//! what a pass costs without an inventory), each size and store in a child
//! process of its own so that peak memory is its own.
//!
//! With `--pg URL` (or `ORIGIN_WATCH_TEST_PG` set) the PostgreSQL store runs
//! too, in a schema of its own that is dropped afterwards, and the ratio of
//! its probes/s to SQLite's is printed (the target: at least 80%).
//!
//! For each store it prints: probes/s of the first pass (every row
//! new) and of a steady pass (nothing changes), start-up (opening the store
//! and loading the inventory), the time spent writing in a pass where 1% of
//! the sources change (they go 404: the wall time during which any write
//! or call record was under way, overlapping ones counted once), the store file's size, peak RSS, and
//! of the first pass: the time spent writing and the span of its API
//! calls (from the first call's record to the last's: the purge phase); and
//! the same kind of writes as the 1% pass made by the store alone (`1% alone
//! s`: another 1% of rows, then their ledger transactions of 8, with no probe
//! or API call sharing the time, which the in-pass figure cannot separate).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use origin_watch::config::{Config, Token};
use origin_watch::pass::{PassContext, run_pass};
use origin_watch::policy::Episode;
use origin_watch::probe::Prober;
use origin_watch::report::Reporter;
use origin_watch::store::{
    self, Access, Endpoint, HistoryRow, LedgerEntry, Loaded, Millis, Rec, RowWrite, SourceRow,
    Store, StoreError,
};
use origin_watch::vercel::VercelClient;
use testkit::fake_origin::Behavior;
use testkit::fake_vercel::{FakeVercel, FakeVercelConfig};
use tokio_util::sync::CancellationToken;

use super::{CONCURRENCY, arg_value, client_runtime, peak_rss_mb, start_origin};

/// The parent: one child per size and store, figures side by side.
pub fn compare(args: &[String]) {
    let exe = std::env::current_exe().expect("own path");
    let mut sizes: Vec<usize> = match arg_value(args, "--sizes") {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("--sizes N,N"))
            .collect(),
        None => vec![100_000],
    };
    if args.iter().any(|a| a == "--million") {
        sizes.push(1_000_000);
    }
    println!(
        "origin-watch store bench: {} cores; 5% of sources gone, then 1% more",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>9} {:>8} {:>10} {:>10} {:>6} {:>10} {:>9} {:>10} {:>10} {:>8} {:>9} {:>10} {:>11} {:>11}",
        "sources",
        "store",
        "1st pass/s",
        "steady/s",
        "ratio",
        "startup s",
        "load s",
        "1% write s",
        "1% pass/s",
        "file MB",
        "peak MB",
        "1st write s",
        "1st calls s",
        "1% alone s"
    );
    let pg = arg_value(args, "--pg")
        .map(str::to_owned)
        .or_else(|| std::env::var("ORIGIN_WATCH_TEST_PG").ok())
        .filter(|u| !u.is_empty());
    let mut kinds = vec!["none", "sqlite"];
    if pg.is_some() {
        kinds.push("postgres");
    } else {
        println!("(no --pg URL and no ORIGIN_WATCH_TEST_PG: PostgreSQL not measured)");
    }
    for n in sizes {
        let mut baseline = f64::NAN;
        let mut by_kind: std::collections::HashMap<&str, Vec<f64>> = Default::default();
        for &kind in &kinds {
            let out = std::process::Command::new(&exe)
                .args(["--store-child", &n.to_string(), kind])
                .env("ORIGIN_WATCH_BENCH_PG", pg.clone().unwrap_or_default())
                .output()
                .expect("run child");
            if !out.status.success() {
                eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                continue;
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(line) = text.lines().last() else {
                continue;
            };
            let f: Vec<f64> = line
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(f64::NAN))
                .collect();
            if kind == "none" {
                baseline = f[1];
            }
            println!(
                "{:>9} {:>8} {:>10.0} {:>10.0} {:>6.2} {:>10.2} {:>9.2} {:>10.3} {:>10.0} {:>8.1} {:>9.1} {:>10.3} {:>11.3} {:>11.3}",
                n,
                kind,
                f[0],
                f[1],
                f[1] / baseline,
                f[2],
                f[3],
                f[4],
                f[5],
                f[6],
                f[7],
                f[8],
                f[9],
                f[10]
            );
            by_kind.insert(kind, f);
        }
        if let (Some(s), Some(p)) = (by_kind.get("sqlite"), by_kind.get("postgres")) {
            println!(
                "{n:>9} postgres/sqlite probes/s: first {:.0}%, steady {:.0}%, 1% pass {:.0}% (target: at least 80%)",
                100.0 * p[0] / s[0],
                100.0 * p[1] / s[1],
                100.0 * p[5] / s[5]
            );
        }
    }
}

/// A fresh schema for the PostgreSQL run, as a `state:` URL, and a client
/// to measure and drop it with.
async fn pg_schema(url: &str) -> (String, String, tokio_postgres::Client) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to --pg");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let schema = format!("bench_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .await
        .expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    (
        format!("{url}{sep}options=-csearch_path%3D{schema}"),
        schema,
        client,
    )
}

/// A store that keeps nothing: every source is new on every pass.
struct NullStore;

#[async_trait::async_trait]
impl Store for NullStore {
    fn describe(&self) -> String {
        "none".into()
    }
    fn writable(&self) -> bool {
        true
    }
    async fn load(
        &self,
        _: &str,
        listed: Arc<Vec<Arc<str>>>,
        _: Millis,
    ) -> Result<Loaded, StoreError> {
        Ok(Loaded {
            recs: vec![None; listed.len()],
            ..Loaded::default()
        })
    }
    async fn write(&self, _: &str, _: Vec<RowWrite>, _: Vec<HistoryRow>) -> Result<(), StoreError> {
        Ok(())
    }
    async fn record_call(
        &self,
        _: LedgerEntry,
        _: Vec<(String, RowWrite)>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn pass_done(&self, _: &str, _: Millis) -> Result<(), StoreError> {
        Ok(())
    }
    async fn recently_called(
        &self,
        _: &str,
        _: Endpoint,
        _: Millis,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    async fn discovered_at(&self, _: &str) -> Result<Option<Millis>, StoreError> {
        Ok(None)
    }
    async fn discovered(
        &self,
        _: &str,
        _: Vec<(String, String, String)>,
        _: Millis,
        _: bool,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn discovered_sources(&self, _: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }
    async fn show(&self, _: Option<&str>, _: &[String]) -> Result<Vec<SourceRow>, StoreError> {
        Ok(Vec::new())
    }
    async fn forget(&self, _: &str, _: &[String]) -> Result<usize, StoreError> {
        Ok(0)
    }
    async fn ledger(&self, _: Option<Millis>) -> Result<Vec<LedgerEntry>, StoreError> {
        Ok(Vec::new())
    }
    async fn calls_for(&self, _: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        Ok(Vec::new())
    }
    async fn history(&self, _: &str, _: &str) -> Result<Vec<HistoryRow>, StoreError> {
        Ok(Vec::new())
    }
}

/// Times what a pass spends loading and writing, around the real store.
struct Timed {
    inner: Arc<dyn Store>,
    load: Mutex<Duration>,
    /// The wall time during which at least one write or call record was
    /// under way: the pass keeps two write batches and four call records in
    /// flight, so summing their durations would count the overlap (and each
    /// one's wait for the connection) several times.
    write: Mutex<Busy>,
    /// From the start of the first `record_call` to the end of the last:
    /// the API calls of the pass and their records (one transaction each).
    calls: Mutex<Option<(Instant, Instant)>>,
}

#[async_trait::async_trait]
impl Store for Timed {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn writable(&self) -> bool {
        self.inner.writable()
    }
    async fn load(
        &self,
        w: &str,
        listed: Arc<Vec<Arc<str>>>,
        f: Millis,
    ) -> Result<Loaded, StoreError> {
        let t = Instant::now();
        let r = self.inner.load(w, listed, f).await;
        *self.load.lock().unwrap() += t.elapsed();
        r
    }
    async fn write(
        &self,
        w: &str,
        rows: Vec<RowWrite>,
        h: Vec<HistoryRow>,
    ) -> Result<(), StoreError> {
        self.write.lock().unwrap().start();
        let r = self.inner.write(w, rows, h).await;
        self.write.lock().unwrap().end();
        r
    }
    async fn record_call(
        &self,
        c: LedgerEntry,
        e: Vec<(String, RowWrite)>,
    ) -> Result<(), StoreError> {
        let t = Instant::now();
        self.calls.lock().unwrap().get_or_insert((t, t));
        self.write.lock().unwrap().start();
        let r = self.inner.record_call(c, e).await;
        self.write.lock().unwrap().end();
        if let Some((_, end)) = self.calls.lock().unwrap().as_mut() {
            *end = Instant::now();
        }
        r
    }
    async fn pass_done(&self, w: &str, at: Millis) -> Result<(), StoreError> {
        self.inner.pass_done(w, at).await
    }
    async fn recently_called(
        &self,
        w: &str,
        e: Endpoint,
        s: Millis,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.recently_called(w, e, s).await
    }
    async fn discovered_at(&self, w: &str) -> Result<Option<Millis>, StoreError> {
        self.inner.discovered_at(w).await
    }
    async fn discovered(
        &self,
        w: &str,
        f: Vec<(String, String, String)>,
        at: Millis,
        c: bool,
    ) -> Result<(), StoreError> {
        self.inner.discovered(w, f, at, c).await
    }
    async fn discovered_sources(&self, w: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.discovered_sources(w).await
    }
    async fn show(&self, w: Option<&str>, s: &[String]) -> Result<Vec<SourceRow>, StoreError> {
        self.inner.show(w, s).await
    }
    async fn forget(&self, w: &str, s: &[String]) -> Result<usize, StoreError> {
        self.inner.forget(w, s).await
    }
    async fn ledger(&self, s: Option<Millis>) -> Result<Vec<LedgerEntry>, StoreError> {
        self.inner.ledger(s).await
    }
    async fn calls_for(&self, s: &str) -> Result<Vec<LedgerEntry>, StoreError> {
        self.inner.calls_for(s).await
    }
    async fn history(&self, w: &str, s: &str) -> Result<Vec<HistoryRow>, StoreError> {
        self.inner.history(w, s).await
    }
}

/// Overlapping spans of work, counted once.
#[derive(Default)]
struct Busy {
    active: usize,
    since: Option<Instant>,
    total: Duration,
}

impl Busy {
    fn start(&mut self) {
        if self.active == 0 {
            self.since = Some(Instant::now());
        }
        self.active += 1;
    }

    fn end(&mut self) {
        self.active -= 1;
        if self.active == 0
            && let Some(since) = self.since.take()
        {
            self.total += since.elapsed();
        }
    }
}

impl Timed {
    fn take(&self) -> (Duration, Duration) {
        (
            std::mem::take(&mut *self.load.lock().unwrap()),
            std::mem::take(&mut self.write.lock().unwrap().total),
        )
    }

    fn calls(&self) -> Duration {
        std::mem::take(&mut *self.calls.lock().unwrap()).map_or(Duration::ZERO, |(a, b)| b - a)
    }
}

/// One size with one store, in this (child) process. Prints: first pass
/// probes/s, steady pass probes/s, start-up s, load s, 1% write s, 1% pass
/// probes/s, file MB, peak MB.
pub fn child(n: usize, kind: &str) {
    let origin = start_origin(n);
    let dir =
        std::env::temp_dir().join(format!("ow-store-bench-{}-{n}-{kind}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let runtime = client_runtime();
    let work = dir.clone();
    let kind = kind.to_owned();
    let task = runtime.spawn(async move {
        let dir = work;
        let api = FakeVercel::start(FakeVercelConfig::new("bench")).await.expect("fake api");
        let images: String = (0..n).map(|i| format!("/img/{i}.png\n")).collect();
        std::fs::write(dir.join("images.txt"), images).expect("images");
        let pg = if kind == "postgres" {
            let url = std::env::var("ORIGIN_WATCH_BENCH_PG").expect("a PostgreSQL URL");
            Some(pg_schema(&url).await)
        } else {
            None
        };
        let state = pg.as_ref().map_or("state.db".to_owned(), |(url, _, _)| url.clone());
        let yaml = format!(
            "vercel: {{ api_base: '{}' }}\nstate: '{state}'\ndefaults: {{ confirmations: 1, concurrency: {CONCURRENCY}, per_host_concurrency: {CONCURRENCY}, max_purges_per_pass: {n}, max_purge_fraction: 1.0, retries: 0 }}\nwatches:\n  - {{ name: bench, project: bench, origin: '{}', images_file: images.txt }}\n",
            api.base_url(),
            origin.base_url()
        );
        std::fs::write(dir.join("watch.yaml"), yaml).expect("config");
        let config = Config::load(&dir.join("watch.yaml")).expect("config");
        let vercel = Arc::new(VercelClient::new(config.vercel(), Token::new("bench")).expect("client"));
        let prober = Arc::new(Prober::new().expect("client"));
        let open = || async {
            let t = Instant::now();
            let inner: Arc<dyn Store> = if kind == "sqlite" || kind == "postgres" {
                store::open(config.state(), None, Access::Write).await.expect("store")
            } else {
                Arc::new(NullStore)
            };
            (Arc::new(Timed { inner, load: Mutex::default(), write: Mutex::default(), calls: Mutex::default() }), t.elapsed())
        };
        let cancel = CancellationToken::new();
        let pass = |timed: Arc<Timed>| {
            let ctx = PassContext {
                prober: prober.clone(),
                vercel: Some(vercel.clone()),
                store: timed,
                reporter: Arc::new(Reporter::log_only()),
                observer: None,
            };
            let cancel = cancel.clone();
            let watches = config.watches().to_vec();
            async move {
                let t = Instant::now();
                run_pass(&ctx, &watches, &cancel).await.expect("pass");
                n as f64 / t.elapsed().as_secs_f64()
            }
        };

        // 1: first sight (every row new; the 5% gone purged).
        let (timed, _) = open().await;
        let first = pass(timed.clone()).await;
        let (_, first_write) = timed.take();
        let first_calls = timed.calls();
        drop(timed);
        // 2: a steady pass, on a store opened afresh as a `once` would.
        let (timed, open_s) = open().await;
        let steady = pass(timed.clone()).await;
        let (load, _) = timed.take();
        drop(timed);
        // 3: 1% more sources go 404.
        for i in (0..n).filter(|i| i % 100 == 7) {
            origin.set(&format!("/img/{i}.png"), Behavior::Status(404));
        }
        let (timed, _) = open().await;
        let changed = pass(timed.clone()).await;
        let (_, write) = timed.take();
        drop(timed);
        // 4: the store alone, with no pass around it: the writes of a pass
        // in which another 1% of the sources go 404 and are purged (their
        // rows in batches of 4096, then one ledger transaction per call of
        // 8 with its purges), one after the other on a store opened afresh.
        // Unlike the in-pass figure, no probe or API call shares the time.
        let store_alone = {
            let (timed, _) = open().await;
            let store = timed.inner.clone();
            let watch = "bench";
            let at = store::millis(chrono::Utc::now());
            let gone = |i: usize| {
                let mut rec = Rec::new(at, true);
                rec.last_verdict = Some(origin_watch::probe::Verdict::Gone);
                rec.last_status = Some(404);
                rec.episode = Some(Box::new(Episode {
                    gone_streak: 1,
                    first_gone: store::from_millis(at),
                    last_gone: store::from_millis(at),
                    last_status: Some(404),
                    purged_at: None,
                }));
                let src: Arc<str> = Arc::from(format!("/img/{i}.png"));
                RowWrite {
                    probe: format!("{}{src}", origin.base_url()),
                    src,
                    rec,
                    validators: None,
                    candidate: None,
                    seen_in: None,
                }
            };
            let chosen: Vec<usize> = (0..n).filter(|i| i % 100 == 13).collect();
            let t = Instant::now();
            for chunk in chosen.chunks(4096) {
                let rows = chunk.iter().map(|&i| gone(i)).collect();
                store.write(watch, rows, Vec::new()).await.expect("write");
            }
            for call in chosen.chunks(8) {
                let effects: Vec<(String, RowWrite)> = call
                    .iter()
                    .map(|&i| {
                        let mut row = gone(i);
                        if let Some(ep) = row.rec.episode.as_mut() {
                            ep.purged_at = Some(store::from_millis(at));
                        }
                        row.rec.last_decision = Some(origin_watch::policy::Decision::Purge);
                        (watch.to_owned(), row)
                    })
                    .collect();
                let entry = LedgerEntry {
                    time: String::new(),
                    at,
                    endpoint: Endpoint::Delete,
                    project: "bench".into(),
                    team_id: None,
                    slug: None,
                    src_images: effects.iter().map(|(_, r)| r.src.to_string()).collect(),
                    status: Some(200),
                    vercel_id: Some("bench::iad1::1".into()),
                    error: None,
                    attempts: 1,
                };
                store.record_call(entry, effects).await.expect("record");
            }
            store.pass_done(watch, at).await.expect("pass done");
            t.elapsed()
        };

        let mut file_mb = ["state.db", "state.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len() as f64)
            .sum::<f64>()
            / (1024.0 * 1024.0);
        if let Some((_, schema, client)) = &pg {
            // The tables and their indexes, in place of a file.
            let bytes: i64 = client
                .query_one(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::int8 FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[schema],
                )
                .await
                .expect("size")
                .get(0);
            file_mb = bytes as f64 / (1024.0 * 1024.0);
            client
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .expect("drop schema");
        }
        println!(
            "{first:.0} {steady:.0} {:.3} {:.3} {:.3} {changed:.0} {file_mb:.1} {:.1} {:.3} {:.3} {:.3}",
            (open_s + load).as_secs_f64(),
            load.as_secs_f64(),
            write.as_secs_f64(),
            peak_rss_mb(),
            first_write.as_secs_f64(),
            first_calls.as_secs_f64(),
            store_alone.as_secs_f64(),
        );
    });
    runtime.block_on(task).expect("bench task");
    let _ = std::fs::remove_dir_all(&dir);
}
