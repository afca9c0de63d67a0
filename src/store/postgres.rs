//! The PostgreSQL backend of the [`Store`]: the SQLite schema in SQL's
//! words (BIGINT milliseconds, TEXT, one `sources` table keyed by
//! (watch, src)), shared by many processes and shards. Who acts for a
//! (watch, shard) is settled by a session advisory lock held on a
//! connection of its own for the process's life (the server drops it with
//! the connection, so a dead owner's watch is free at once). Migrations run
//! under a transaction-scoped advisory lock, so two processes starting at
//! once do not race. Queries go through a small pool and are retried with
//! backoff for a bounded time when the connection is lost, so a purge whose
//! 200 came back is recorded once the database is back.
//!
//! Audit and `--dry-run` never write: they copy what a pass reads into an
//! in-memory SQLite store and let the pass write there.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::TryStreamExt;
use futures::future::BoxFuture;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use super::location::PgLocation;
use super::sqlite::{self, SqliteStore};
use super::{
    Access, Endpoint, HistoryRow, LedgerEntry, Loaded, Millis, Ownership, Rec, RowWrite, SourceRow,
    Store, StoreError, Validators, rfc3339,
};
use crate::policy::{Decision, Episode};
use crate::shard::Shard;

/// The schema, one entry per version, as in the SQLite store.
const MIGRATIONS: &[&str] = &[
    // 1: inventory, history, ledger, owners.
    r#"CREATE TABLE watches (
         name TEXT PRIMARY KEY,
         last_pass_at BIGINT,
         discovered_ok_at BIGINT
     );
     CREATE TABLE sources (
         watch TEXT NOT NULL,
         src TEXT COLLATE "C" NOT NULL,
         probe TEXT NOT NULL,
         referenced BOOLEAN NOT NULL,
         unreferenced_since BIGINT,
         first_seen BIGINT NOT NULL,
         seen_in TEXT,
         discovered_at BIGINT,
         last_verdict TEXT,
         last_status BIGINT,
         last_decision TEXT,
         gone_streak BIGINT NOT NULL DEFAULT 0,
         gone_since BIGINT,
         last_gone BIGINT,
         gone_status BIGINT,
         purged_at BIGINT,
         etag TEXT,
         last_modified TEXT,
         content_length BIGINT,
         cand_etag TEXT,
         cand_last_modified TEXT,
         cand_length BIGINT,
         cand_streak BIGINT NOT NULL DEFAULT 0,
         PRIMARY KEY (watch, src)
     );
     CREATE TABLE history (
         id BIGSERIAL PRIMARY KEY,
         watch TEXT NOT NULL,
         src TEXT NOT NULL,
         at BIGINT NOT NULL,
         decision TEXT NOT NULL,
         status BIGINT,
         reason TEXT NOT NULL
     );
     CREATE INDEX history_by_source ON history (watch, src, at);
     CREATE TABLE ledger (
         id BIGSERIAL PRIMARY KEY,
         at BIGINT NOT NULL,
         endpoint TEXT NOT NULL,
         project TEXT NOT NULL,
         team_id TEXT,
         slug TEXT,
         src_images TEXT NOT NULL,
         status BIGINT,
         vercel_id TEXT,
         error TEXT,
         attempts BIGINT NOT NULL
     );
     CREATE INDEX ledger_by_time ON ledger (at);
     CREATE TABLE ledger_sources (ledger_id BIGINT NOT NULL, src TEXT NOT NULL);
     CREATE INDEX ledger_sources_by_src ON ledger_sources (src, ledger_id);
     CREATE TABLE owners (
         watch TEXT NOT NULL,
         shard TEXT NOT NULL,
         holder TEXT NOT NULL,
         since BIGINT NOT NULL,
         PRIMARY KEY (watch, shard)
     );"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a query is retried while the database cannot be reached.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
/// Connections in the pool: one for each row write and call record a pass
/// keeps in flight (each holds its connection until its commit is flushed),
/// so none waits for another's flush; readers and the health check take one
/// when it is free (within 30 s and 5 s). Connections are opened as needed.
const POOL_SIZE: usize = super::WRITES_IN_FLIGHT + super::RECORDS_IN_FLIGHT;

const SOURCE_COLUMNS: &str = "src, probe, referenced, unreferenced_since, first_seen, seen_in, \
     last_verdict, last_status, last_decision, gone_streak, gone_since, last_gone, gone_status, \
     purged_at, etag, last_modified, content_length, cand_etag, cand_last_modified, cand_length, \
     cand_streak, watch";

const LEDGER_COLUMNS: &str = "l.at, l.endpoint, l.project, l.team_id, l.slug, l.src_images, l.status, l.vercel_id, l.error, l.attempts";

type Result<T> = std::result::Result<T, StoreError>;
type PgResult<T> = std::result::Result<T, PgError>;

/// A failed query: from the server or the connection, or the pool's.
#[derive(Debug, thiserror::Error)]
enum PgError {
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Pool(String),
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Pg(e),
            other => PgError::Pool(other.to_string()),
        }
    }
}

impl PgError {
    /// Whether trying again may succeed: the connection was lost or could
    /// not be made, the server is shutting down or starting, or a
    /// transaction lost a race.
    fn transient(&self) -> bool {
        match self {
            PgError::Pool(_) => true,
            PgError::Pg(e) => match e.as_db_error() {
                None => true,
                Some(db) => {
                    let code = db.code().code();
                    code.starts_with("08")
                        || code.starts_with("57P")
                        || code == "40001"
                        || code == "40P01"
                        || code == "53300"
                }
            },
        }
    }
}

/// The lock connection and the (watch, shard) locks it holds.
#[derive(Default)]
struct Owner {
    client: Option<tokio_postgres::Client>,
    held: HashSet<i64>,
}

/// A PostgreSQL store (the writer; readers and dry runs get a copy, see
/// [`open`]).
pub struct PostgresStore {
    shown: String,
    pool: Pool,
    pg_config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    access: Access,
    shard: Option<Shard>,
    /// `database/schema`: advisory locks are per database, and each schema
    /// is a store of its own.
    namespace: String,
    holder: String,
    owner: tokio::sync::Mutex<Owner>,
}

/// Opens the store at `loc`: the writer (migrated) for [`Access::Write`],
/// an in-memory copy for [`Access::Read`] and [`Access::DryRun`].
pub async fn open(loc: &PgLocation, access: Access) -> Result<Arc<dyn Store>> {
    let store = PostgresStore::connect(loc, access).await?;
    match access {
        Access::Write => {
            store.migrate().await?;
            Ok(Arc::new(store))
        }
        Access::Read => Ok(Arc::new(store)),
        Access::DryRun => store.memory_copy().await,
    }
}

fn open_err(shown: &str, cause: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Open {
        path: PathBuf::from(shown),
        cause: Box::new(cause),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

/// An error and its causes, as `error: cause: ...`, secrets redacted: the
/// driver says only "db error" for an error the server sent, and the
/// server's words (what was refused, and why) are its cause.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    crate::redact::owned(text)
}

/// The TLS the database is reached with: the probes' trust (the webpki
/// roots), plus the PEM bundle named by `sslrootcert` in the URL.
fn tls(extra: Option<&str>) -> std::result::Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra {
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("sslrootcert {path}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The driver's config from the URL: `sslrootcert` is read here, and
/// `verify-ca`/`verify-full` mean `require` (the certificate is always
/// verified, as a probe's is).
fn driver_config(
    loc: &PgLocation,
) -> std::result::Result<(tokio_postgres::Config, Option<String>), String> {
    let mut url = url::Url::parse(loc.secret_url()).map_err(|e| e.to_string())?;
    let mut rootcert = None;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter_map(|(k, v)| match &*k {
            "sslrootcert" => {
                rootcert = Some(v.into_owned());
                None
            }
            "sslmode" if v == "verify-ca" || v == "verify-full" => {
                Some((k.into_owned(), "require".to_owned()))
            }
            _ => Some((k.into_owned(), v.into_owned())),
        })
        .collect();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    // The driver's parser wants `postgresql://`; both schemes mean the same.
    let text = url.as_str().replacen("postgres://", "postgresql://", 1);
    let mut config =
        tokio_postgres::Config::from_str(&text).map_err(|e| crate::redact::owned(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("origin-watch");
    }
    // A dead peer (a cut network) is noticed within about a minute.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    Ok((config, rootcert))
}

/// `wait` and up to a quarter more, at random: processes that lost the
/// database together do not all come back at the same instant.
fn jittered(wait: Duration) -> Duration {
    wait + Duration::from_millis(fastrand::u64(0..=wait.as_millis() as u64 / 4))
}

/// The advisory-lock key of a (watch, shard) in a namespace.
fn lock_key(namespace: &str, watch: &str, shard: &str) -> i64 {
    let text = format!("origin-watch\0{namespace}\0{watch}\0{shard}");
    crate::shard::fnv1a(text.as_bytes()) as i64
}

impl PostgresStore {
    async fn connect(loc: &PgLocation, access: Access) -> Result<PostgresStore> {
        let shown = loc.shown().to_owned();
        let (pg_config, rootcert) = driver_config(loc).map_err(|m| open_err(&shown, Message(m)))?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
            tls(rootcert.as_deref()).map_err(|m| open_err(&shown, Message(m)))?,
        );
        let manager = Manager::from_config(
            pg_config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| open_err(&shown, e))?;
        // The first connection says at once whether the URL works.
        let client = pool
            .get()
            .await
            .map_err(|e| open_err(&shown, Message(with_causes(&PgError::from(e)))))?;
        let row = client
            .query_one("SELECT current_database(), current_schema()", &[])
            .await
            .map_err(|e| open_err(&shown, e))?;
        let namespace = format!(
            "{}/{}",
            row.get::<_, String>(0),
            row.get::<_, Option<String>>(1).unwrap_or_default()
        );
        drop(client);
        Ok(PostgresStore {
            shown,
            pool,
            pg_config,
            tls,
            access,
            shard: loc.shard,
            namespace,
            holder: format!("pid {} on {}", std::process::id(), sqlite::hostname()),
            owner: tokio::sync::Mutex::new(Owner::default()),
        })
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(&self.shown)
    }

    fn shard_name(&self) -> String {
        self.shard.map(|s| s.to_string()).unwrap_or_default()
    }

    /// Whether a stored source belongs to this process's shard (by the
    /// probe URL it was last probed at, as the shards split them).
    fn owns(&self, probe: &str) -> bool {
        self.shard.is_none_or(|s| s.owns(probe))
    }

    fn query_err(&self, what: &'static str, e: PgError) -> StoreError {
        StoreError::Query {
            path: self.path(),
            what,
            cause: Box::new(Message(with_causes(&e))),
        }
    }

    fn require_writer(&self, what: &'static str) -> Result<()> {
        if self.access != Access::Write {
            return Err(StoreError::ReadOnly {
                path: self.path(),
                what,
            });
        }
        Ok(())
    }

    /// Runs `f` on a pooled connection; a lost connection is retried with
    /// backoff for up to [`RETRY_FOR`], on a new one.
    async fn run<T, F>(&self, what: &'static str, f: F) -> Result<T>
    where
        F: for<'c> Fn(&'c mut deadpool_postgres::Object) -> BoxFuture<'c, PgResult<T>>,
    {
        let started = Instant::now();
        let mut wait = Duration::from_millis(50);
        let mut warned = false;
        loop {
            let attempt = async {
                let mut client = self.pool.get().await?;
                f(&mut client).await
            }
            .await;
            match attempt {
                Ok(v) => {
                    if warned {
                        tracing::info!(store = %self.shown, what, "the database is back");
                    }
                    return Ok(v);
                }
                // `<` as `<=` is an equivalent mutant: the two differ only
                // when the elapsed time is exactly RETRY_FOR, to the nanosecond.
                Err(e) if e.transient() && started.elapsed() < RETRY_FOR => {
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(store = %self.shown, what, error = %with_causes(&e), "the database cannot be reached; retrying");
                    }
                    tokio::time::sleep(jittered(wait)).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(self.query_err(what, e)),
            }
        }
    }

    /// Brings the schema to [`SCHEMA_VERSION`] under a transaction-scoped
    /// advisory lock, so processes starting together migrate once.
    async fn migrate(&self) -> Result<()> {
        let key = lock_key(&self.namespace, "", "migrate");
        let shown = self.shown.clone();
        let found = self
            .run("migrate the schema", move |c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&key])
                        .await?;
                    tx.batch_execute(
                        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                    )
                    .await?;
                    let found: i64 = tx
                        .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
                        .await?
                        .and_then(|r| r.get::<_, String>(0).parse().ok())
                        .unwrap_or(0);
                    // `>` as `>=` is an equivalent mutant: at the current
                    // version no step runs and the version written is the
                    // one read, so returning early (the transaction rolled
                    // back) leaves the same rows.
                    if found > SCHEMA_VERSION {
                        return Ok(found);
                    }
                    for step in MIGRATIONS.iter().skip(found as usize) {
                        tx.batch_execute(step).await?;
                    }
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        &[&SCHEMA_VERSION.to_string()],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(found)
                })
            })
            .await?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Version {
                path: PathBuf::from(shown),
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Whether the schema exists yet (a reader never creates it).
    async fn has_schema(&self) -> Result<bool> {
        self.run("read the schema version", |c| {
            Box::pin(async move {
                let exists: bool = c
                    .query_one("SELECT to_regclass('sources') IS NOT NULL", &[])
                    .await?
                    .get(0);
                Ok(exists)
            })
        })
        .await
    }

    /// What a dry run reads, copied into an in-memory SQLite store (this
    /// shard's sources only): the pass writes there, the database never
    /// changes.
    async fn memory_copy(&self) -> Result<Arc<dyn Store>> {
        let mut tables = Vec::new();
        if self.has_schema().await? {
            for table in ["meta", "watches", "sources", "ledger", "ledger_sources"] {
                let rows = self
                    .run("copy the store for a dry run", move |c| {
                        Box::pin(async move {
                            let sql = format!("SELECT * FROM {table}");
                            Ok(c.query(&sql, &[]).await?)
                        })
                    })
                    .await?;
                let Some(first) = rows.first() else {
                    continue;
                };
                let columns: Vec<String> = first
                    .columns()
                    .iter()
                    .map(|c| c.name().to_owned())
                    .collect();
                let probe_at = columns.iter().position(|c| c == "probe");
                let mut values = Vec::with_capacity(rows.len());
                for row in &rows {
                    if table == "meta" {
                        continue;
                    }
                    if let Some(i) = probe_at
                        && !self.owns(row.get::<_, &str>(i))
                    {
                        continue;
                    }
                    values.push(sqlite_values(row));
                }
                tables.push(sqlite::Copied {
                    table,
                    columns,
                    rows: values,
                });
            }
        }
        let label = self.path();
        let store = tokio::task::spawn_blocking(move || SqliteStore::memory_copy(label, tables))
            .await
            .map_err(|e| open_err(&self.shown, e))??;
        Ok(Arc::new(store))
    }

    /// The lock connection, made anew when it was lost (with every lock it
    /// held: the server released them).
    async fn owner_client<'a>(&self, owner: &'a mut Owner) -> PgResult<&'a tokio_postgres::Client> {
        if owner.client.as_ref().is_none_or(|c| c.is_closed()) {
            if !owner.held.is_empty() {
                tracing::warn!(store = %self.shown, "the ownership connection was lost, and with it the watches this process owned; taking them again");
                owner.held.clear();
            }
            owner.client = None;
            let (client, connection) = self.pg_config.connect(self.tls.clone()).await?;
            let shown = self.shown.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(store = %shown, error = %crate::redact::owned(e.to_string()), "the ownership connection closed");
                }
            });
            owner.client = Some(client);
        }
        Ok(owner.client.as_ref().expect("just set"))
    }

    async fn try_acquire(&self, watch: &str) -> PgResult<Ownership> {
        let shard = self.shard_name();
        let key = lock_key(&self.namespace, watch, &shard);
        let mut owner = self.owner.lock().await;
        self.owner_client(&mut owner).await?;
        // Asked after the connection is checked: a lost one took its locks.
        let held = owner.held.contains(&key);
        let client = owner.client.as_ref().expect("connected above");
        if held {
            // Still ours while the connection lives; ask, so a dropped
            // connection is found before a pass rather than after.
            match client.simple_query("SELECT 1").await {
                Ok(_) => return Ok(Ownership::Owned),
                Err(e) => {
                    owner.client = None;
                    owner.held.clear();
                    return Err(e.into());
                }
            }
        }
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .get(0);
        if got {
            client
                .execute(
                    "INSERT INTO owners (watch, shard, holder, since) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (watch, shard) DO UPDATE SET holder = excluded.holder, since = excluded.since",
                    &[&watch, &shard, &self.holder, &super::millis(chrono::Utc::now())],
                )
                .await?;
            owner.held.insert(key);
            tracing::info!(store = %self.shown, watch, shard = %shard, holder = %self.holder, "this process owns the watch");
            return Ok(Ownership::Owned);
        }
        let holder: Option<String> = client
            .query_opt(
                "SELECT holder FROM owners WHERE watch = $1 AND shard = $2",
                &[&watch, &shard],
            )
            .await?
            .map(|r| r.get(0));
        Ok(Ownership::Standby {
            owner: holder.unwrap_or_else(|| "a process that has not said who it is".into()),
        })
    }
}

/// A row's values as SQLite keeps them.
fn sqlite_values(row: &Row) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value;
    (0..row.len())
        .map(|i| match *row.columns()[i].type_() {
            Type::BOOL => row
                .get::<_, Option<bool>>(i)
                .map_or(Value::Null, |b| Value::Integer(b as i64)),
            Type::INT8 => row
                .get::<_, Option<i64>>(i)
                .map_or(Value::Null, Value::Integer),
            // No table copied has an INTEGER column (BIGINT, BIGSERIAL,
            // TEXT, BOOLEAN): deleting this arm is an equivalent mutant for
            // this schema; it is kept for a migration that adds one.
            Type::INT4 => row
                .get::<_, Option<i32>>(i)
                .map_or(Value::Null, |n| Value::Integer(n.into())),
            _ => row
                .get::<_, Option<String>>(i)
                .map_or(Value::Null, Value::Text),
        })
        .collect()
}

fn validators_at(row: &Row, at: usize) -> Validators {
    Validators {
        etag: row.get(at),
        last_modified: row.get(at + 1),
        length: row.get::<_, Option<i64>>(at + 2).map(|n| n as u64),
    }
}

fn u16_at(row: &Row, at: usize) -> Option<u16> {
    row.get::<_, Option<i64>>(at).map(|n| n as u16)
}

/// A row of [`SOURCE_COLUMNS`] into the pass's compact record.
fn rec_of(row: &Row) -> Rec {
    let gone_since: Option<Millis> = row.get(10);
    let episode = gone_since
        .map(|since| Episode {
            gone_streak: row.get::<_, i64>(9) as u32,
            first_gone: super::from_millis(since),
            last_gone: super::from_millis(row.get::<_, Option<Millis>>(11).unwrap_or(since)),
            last_status: u16_at(row, 12),
            purged_at: row.get::<_, Option<Millis>>(13).map(super::from_millis),
        })
        .map(Box::new);
    let stored = validators_at(row, 14);
    let candidate = validators_at(row, 17);
    Rec {
        first_seen: row.get(4),
        referenced: row.get(2),
        unreferenced_since: row.get(3),
        last_verdict: sqlite::verdict_of(row.get(6)),
        last_status: u16_at(row, 7),
        last_decision: sqlite::decision_of(row.get(8)),
        episode,
        validators_all: stored.all(),
        validators_identity: stored.identity(),
        candidate: candidate.identity(),
        candidate_streak: row.get::<_, i64>(20) as u32,
    }
}

fn ledger_of(row: &Row) -> LedgerEntry {
    let at: Millis = row.get(0);
    let src_images: String = row.get(5);
    LedgerEntry {
        time: rfc3339(at),
        at,
        endpoint: Endpoint::parse(row.get(1)).unwrap_or(Endpoint::Delete),
        project: row.get(2),
        team_id: row.get(3),
        slug: row.get(4),
        src_images: serde_json::from_str(&src_images).unwrap_or_default(),
        status: u16_at(row, 6),
        vercel_id: row.get(7),
        error: row.get(8),
        attempts: row.get::<_, i64>(9) as u32,
    }
}

/// Rows of one watch as column arrays, for one `UNNEST` upsert.
#[derive(Default)]
struct Columns {
    watch: Vec<String>,
    src: Vec<String>,
    probe: Vec<String>,
    referenced: Vec<bool>,
    unreferenced_since: Vec<Option<i64>>,
    first_seen: Vec<i64>,
    seen_in: Vec<Option<String>>,
    last_verdict: Vec<Option<&'static str>>,
    last_status: Vec<Option<i64>>,
    last_decision: Vec<Option<&'static str>>,
    gone_streak: Vec<i64>,
    gone_since: Vec<Option<i64>>,
    last_gone: Vec<Option<i64>>,
    gone_status: Vec<Option<i64>>,
    purged_at: Vec<Option<i64>>,
    etag: Vec<Option<String>>,
    last_modified: Vec<Option<String>>,
    content_length: Vec<Option<i64>>,
    cand_etag: Vec<Option<String>>,
    cand_last_modified: Vec<Option<String>>,
    cand_length: Vec<Option<i64>>,
    cand_streak: Vec<i64>,
}

impl Columns {
    fn push(&mut self, watch: &str, w: &RowWrite) {
        let r = &w.rec;
        let ep = r.episode.as_ref();
        let v = w.validators.clone().unwrap_or_default();
        let c = w.candidate.clone().flatten().unwrap_or_default();
        self.watch.push(watch.to_owned());
        self.src.push(w.src.to_string());
        self.probe.push(w.probe.clone());
        self.referenced.push(r.referenced);
        self.unreferenced_since.push(r.unreferenced_since);
        self.first_seen.push(r.first_seen);
        self.seen_in.push(w.seen_in.clone());
        self.last_verdict.push(r.last_verdict.map(|v| v.as_str()));
        self.last_status.push(r.last_status.map(i64::from));
        self.last_decision.push(r.last_decision.map(|d| d.as_str()));
        self.gone_streak
            .push(ep.map(|e| i64::from(e.gone_streak)).unwrap_or(0));
        self.gone_since
            .push(ep.map(|e| super::millis(e.first_gone)));
        self.last_gone.push(ep.map(|e| super::millis(e.last_gone)));
        self.gone_status
            .push(ep.and_then(|e| e.last_status).map(i64::from));
        self.purged_at
            .push(ep.and_then(|e| e.purged_at).map(super::millis));
        self.etag.push(v.etag);
        self.last_modified.push(v.last_modified);
        self.content_length.push(v.length.map(|n| n as i64));
        self.cand_etag.push(c.etag);
        self.cand_last_modified.push(c.last_modified);
        self.cand_length.push(c.length.map(|n| n as i64));
        self.cand_streak.push(i64::from(r.candidate_streak));
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 22] {
        [
            &self.watch,
            &self.src,
            &self.probe,
            &self.referenced,
            &self.unreferenced_since,
            &self.first_seen,
            &self.seen_in,
            &self.last_verdict,
            &self.last_status,
            &self.last_decision,
            &self.gone_streak,
            &self.gone_since,
            &self.last_gone,
            &self.gone_status,
            &self.purged_at,
            &self.etag,
            &self.last_modified,
            &self.content_length,
            &self.cand_etag,
            &self.cand_last_modified,
            &self.cand_length,
            &self.cand_streak,
        ]
    }
}

/// The columns of `sources` an upsert writes, in [`Columns::params`] order.
const UPSERT_COLUMNS: &str = "watch, src, probe, referenced, unreferenced_since, first_seen, \
     seen_in, last_verdict, last_status, last_decision, gone_streak, gone_since, last_gone, \
     gone_status, purged_at, etag, last_modified, content_length, cand_etag, \
     cand_last_modified, cand_length, cand_streak";

/// The array type of each of [`Columns::params`].
const UPSERT_TYPES: [&str; 22] = [
    "text", "text", "text", "bool", "int8", "int8", "text", "text", "int8", "text", "int8", "int8",
    "int8", "int8", "int8", "text", "text", "int8", "text", "text", "int8", "int8",
];

/// `$n::type[], ...` for the parameters from `$first` on.
fn unnest_args(first: usize, types: &[&str]) -> String {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The upsert of one group of rows, its arrays from `$first` on: the
/// stored validators and the candidate are replaced only when the writes
/// carry them (`set_v`, `set_c`).
fn upsert_sql(first: usize, set_v: bool, set_c: bool) -> String {
    let keep = |set: bool, col: &str| {
        if set {
            format!("{col} = excluded.{col}")
        } else {
            format!("{col} = sources.{col}")
        }
    };
    format!(
        "INSERT INTO sources ({UPSERT_COLUMNS}) SELECT * FROM UNNEST({}) \
         ON CONFLICT (watch, src) DO UPDATE SET probe = excluded.probe, \
         referenced = excluded.referenced, unreferenced_since = excluded.unreferenced_since, \
         seen_in = COALESCE(sources.seen_in, excluded.seen_in), \
         last_verdict = excluded.last_verdict, last_status = excluded.last_status, \
         last_decision = excluded.last_decision, gone_streak = excluded.gone_streak, \
         gone_since = excluded.gone_since, last_gone = excluded.last_gone, \
         gone_status = excluded.gone_status, purged_at = excluded.purged_at, \
         {}, {}, {}, {}, {}, {}, cand_streak = excluded.cand_streak",
        unnest_args(first, &UPSERT_TYPES),
        keep(set_v, "etag"),
        keep(set_v, "last_modified"),
        keep(set_v, "content_length"),
        keep(set_c, "cand_etag"),
        keep(set_c, "cand_last_modified"),
        keep(set_c, "cand_length"),
    )
}

/// Rows of `sources` as column arrays: the rows to insert (new to the
/// store when the pass loaded it), then the upserts split by which of
/// their text columns they replace.
#[derive(Default)]
struct Groups {
    /// Rows the pass saw no stored row for (`seen_in` set), for a plain
    /// `INSERT`: a third cheaper for the server than an upsert that finds
    /// no conflict. Empty unless asked for ([`upsert_groups`]).
    fresh: Columns,
    /// One `UNNEST` upsert each (see [`upsert_sql`]).
    upserts: [Columns; 4],
}

/// Rows of `sources` as [`Groups`]; new rows are kept apart for a plain
/// insert when `fresh_apart` says so. A (watch, src) written twice keeps
/// its last write: one statement may not touch a row twice.
fn upsert_groups(rows: &[(String, RowWrite)], fresh_apart: bool) -> Groups {
    let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(rows.len());
    for (i, (watch, w)) in rows.iter().enumerate() {
        last.insert((watch.as_str(), &*w.src), i);
    }
    let mut groups = Groups::default();
    for (i, (watch, w)) in rows.iter().enumerate() {
        if last.get(&(watch.as_str(), &*w.src)) != Some(&i) {
            continue;
        }
        if fresh_apart && w.seen_in.is_some() {
            groups.fresh.push(watch, w);
            continue;
        }
        let g = usize::from(w.validators.is_some()) * 2 + usize::from(w.candidate.is_some());
        groups.upserts[g].push(watch, w);
    }
    groups
}

/// Whether a statement failed on a unique key (SQLSTATE 23505).
fn unique_violation(e: &PgError) -> bool {
    matches!(e, PgError::Pg(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
}

/// History rows as column arrays, for one `UNNEST` insert.
struct HistoryColumns<'a> {
    watch: &'a str,
    src: Vec<&'a str>,
    at: Vec<i64>,
    decision: Vec<&'static str>,
    status: Vec<Option<i64>>,
    reason: Vec<&'a str>,
}

impl<'a> HistoryColumns<'a> {
    fn new(watch: &'a str, history: &'a [HistoryRow]) -> Self {
        HistoryColumns {
            watch,
            src: history.iter().map(|h| &*h.src).collect(),
            at: history.iter().map(|h| h.at).collect(),
            decision: history.iter().map(|h| h.decision.as_str()).collect(),
            status: history.iter().map(|h| h.status.map(i64::from)).collect(),
            reason: history.iter().map(|h| h.reason.as_str()).collect(),
        }
    }
}

/// An API call's ledger row, as parameters.
struct LedgerParams {
    endpoint: &'static str,
    src_images_json: String,
    status: Option<i64>,
    attempts: i64,
}

/// One statement that writes a pass's chunk or an API call with its
/// effects: a data-modifying `WITH` per part (the ledger row and its
/// sources, each group of upserts, the history rows). One statement is one
/// transaction, all or nothing, and one round trip to the server.
#[derive(Default)]
struct OneStatement<'a> {
    parts: Vec<String>,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> OneStatement<'a> {
    fn next(&self) -> usize {
        self.params.len() + 1
    }

    fn ledger(&mut self, call: &'a LedgerEntry, l: &'a LedgerParams) {
        let n = self.next();
        self.parts.push(format!(
            "l AS (INSERT INTO ledger (at, endpoint, project, team_id, slug, src_images, status, \
             vercel_id, error, attempts) VALUES (${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}) \
             RETURNING id), \
             ls AS (INSERT INTO ledger_sources (ledger_id, src) \
             SELECT l.id, s FROM l, UNNEST(${}::text[]) AS s)",
            n,
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7,
            n + 8,
            n + 9,
            n + 10,
        ));
        self.params.extend([
            &call.at as &(dyn ToSql + Sync),
            &l.endpoint,
            &call.project,
            &call.team_id,
            &call.slug,
            &l.src_images_json,
            &l.status,
            &call.vercel_id,
            &call.error,
            &l.attempts,
            &call.src_images,
        ]);
    }

    fn upserts(&mut self, groups: &'a Groups) {
        if !groups.fresh.src.is_empty() {
            let n = self.next();
            self.parts.push(format!(
                "f AS (INSERT INTO sources ({UPSERT_COLUMNS}) SELECT * FROM UNNEST({}))",
                unnest_args(n, &UPSERT_TYPES)
            ));
            self.params.extend(groups.fresh.params());
        }
        for (g, cols) in groups.upserts.iter().enumerate() {
            if cols.src.is_empty() {
                continue;
            }
            let sql = upsert_sql(self.next(), g >= 2, g % 2 == 1);
            self.parts.push(format!("u{g} AS ({sql})"));
            self.params.extend(cols.params());
        }
    }

    fn history(&mut self, h: &'a HistoryColumns<'a>) {
        if h.src.is_empty() {
            return;
        }
        let n = self.next();
        self.parts.push(format!(
            "h AS (INSERT INTO history (watch, src, at, decision, status, reason) \
             SELECT ${n}, u.src, u.at, u.decision, u.status, u.reason \
             FROM UNNEST({}) WITH ORDINALITY AS u(src, at, decision, status, reason, k) \
             ORDER BY u.k)",
            unnest_args(n + 1, &["text", "int8", "text", "int8", "text"])
        ));
        self.params.extend([
            &h.watch as &(dyn ToSql + Sync),
            &h.src,
            &h.at,
            &h.decision,
            &h.status,
            &h.reason,
        ]);
    }

    /// Runs it (the statement is prepared once per connection and shape).
    async fn execute(&self, c: &deadpool_postgres::Object) -> PgResult<()> {
        if self.parts.is_empty() {
            return Ok(());
        }
        let sql = format!("WITH {} SELECT 1", self.parts.join(", "));
        let stmt = c.prepare_cached(&sql).await?;
        c.execute(&stmt, &self.params).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn writable(&self) -> bool {
        self.access == Access::Write
    }

    async fn acquire(&self, watch: &str) -> Result<Ownership> {
        self.require_writer("owning a watch")?;
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            match self.try_acquire(watch).await {
                Ok(o) => return Ok(o),
                // `<` as `<=` is an equivalent mutant (as in `run`).
                Err(e) if e.transient() && started.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(self.query_err("take ownership of a watch", e)),
            }
        }
    }

    async fn health(&self) -> Result<()> {
        let client = tokio::time::timeout(Duration::from_secs(5), self.pool.get())
            .await
            .map_err(|_| {
                self.query_err(
                    "reach the database",
                    PgError::Pool("no connection within 5s".into()),
                )
            })?
            .map_err(|e| self.query_err("reach the database", e.into()))?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| self.query_err("reach the database", e.into()))?;
        Ok(())
    }

    async fn load(
        &self,
        watch: &str,
        listed: Arc<Vec<Arc<str>>>,
        forget_before: Millis,
    ) -> Result<Loaded> {
        let writable = self.writable();
        let watch = Arc::<str>::from(watch);
        let shard = self.shard;
        self.run("load the inventory", move |c| {
            let (watch, listed) = (watch.clone(), listed.clone());
            Box::pin(async move {
                // One ordered scan (`src` is COLLATE "C": byte order)
                // lines the stored rows up with the listed sources.
                let mut merge = super::Merge::new(&listed, forget_before);
                let sql =
                    format!("SELECT {SOURCE_COLUMNS} FROM sources WHERE watch = $1 ORDER BY src");
                let stmt = c.prepare_cached(&sql).await?;
                let rows = c.query_raw(&stmt, [&*watch]).await?;
                futures::pin_mut!(rows);
                while let Some(row) = rows.try_next().await? {
                    let (src, probe): (&str, &str) = (row.get(0), row.get(1));
                    // Unlisted and another shard's: not this process's to probe.
                    let ours = shard.is_none_or(|s| s.owns(probe));
                    merge.row(src, probe, rec_of(&row), ours);
                }
                let super::Merge {
                    mut loaded, forget, ..
                } = merge;
                if writable && !forget.is_empty() {
                    c.execute(
                        "DELETE FROM sources WHERE watch = $1 AND src = ANY($2)",
                        &[&&*watch, &forget],
                    )
                    .await?;
                }
                loaded.forgotten = forget.len();
                Ok(loaded)
            })
        })
        .await
    }

    async fn write(
        &self,
        watch: &str,
        rows: Vec<RowWrite>,
        history: Vec<HistoryRow>,
    ) -> Result<()> {
        if rows.is_empty() && history.is_empty() {
            return Ok(());
        }
        self.require_writer("a pass")?;
        let rows: Arc<Vec<(String, RowWrite)>> =
            Arc::new(rows.into_iter().map(|r| (watch.to_owned(), r)).collect());
        let groups = Arc::new(upsert_groups(&rows, true));
        let history = Arc::new(history);
        let watch = Arc::<str>::from(watch);
        self.run("write a pass's changes", move |c| {
            let (rows, groups, history, watch) =
                (rows.clone(), groups.clone(), history.clone(), watch.clone());
            Box::pin(async move {
                let h = HistoryColumns::new(&watch, &history);
                let mut one = OneStatement::default();
                one.upserts(&groups);
                one.history(&h);
                match one.execute(c).await {
                    // A row the pass took for new is there (nothing but
                    // this watch's owner writes its rows, so it should not
                    // be): the statement changed nothing, so the same rows
                    // again, every one an upsert.
                    Err(e) if unique_violation(&e) && !groups.fresh.src.is_empty() => {
                        tracing::warn!(watch = %watch, "a row taken for new was already stored; writing the batch again as upserts");
                        let all = upsert_groups(&rows, false);
                        let mut one = OneStatement::default();
                        one.upserts(&all);
                        one.history(&h);
                        one.execute(c).await
                    }
                    done => done,
                }
            })
        })
        .await
    }

    async fn record_call(&self, call: LedgerEntry, effects: Vec<(String, RowWrite)>) -> Result<()> {
        self.require_writer("recording an API call")?;
        // Upserts only: a call's source may have been inserted by this
        // pass's own rows already.
        let groups = Arc::new(upsert_groups(&effects, false));
        drop(effects);
        let params = Arc::new(LedgerParams {
            endpoint: call.endpoint.as_str(),
            src_images_json: serde_json::to_string(&call.src_images).unwrap_or_default(),
            status: call.status.map(i64::from),
            attempts: i64::from(call.attempts),
        });
        let call = Arc::new(call);
        self.run("record an API call", move |c| {
            let (call, params, groups) = (call.clone(), params.clone(), groups.clone());
            Box::pin(async move {
                let mut one = OneStatement::default();
                one.ledger(&call, &params);
                one.upserts(&groups);
                one.execute(c).await
            })
        })
        .await
    }

    async fn pass_done(&self, watch: &str, at: Millis) -> Result<()> {
        self.require_writer("a pass")?;
        let watch = Arc::<str>::from(watch);
        self.run("note the pass", move |c| {
            let watch = watch.clone();
            Box::pin(async move {
                c.execute(
                    "INSERT INTO watches (name, last_pass_at) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET last_pass_at = excluded.last_pass_at",
                    &[&&*watch, &at],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn recently_called(
        &self,
        watch: &str,
        endpoint: Endpoint,
        since: Millis,
    ) -> Result<Vec<String>> {
        let watch = Arc::<str>::from(watch);
        let rows = self
            .run("read recent calls", move |c| {
                let watch = watch.clone();
                Box::pin(async move {
                    Ok(c.query(
                        "SELECT DISTINCT ls.src, s.probe FROM ledger l
                         JOIN ledger_sources ls ON ls.ledger_id = l.id
                         JOIN sources s ON s.watch = $1 AND s.src = ls.src
                         WHERE l.endpoint = $2 AND l.status = 200 AND l.at > $3",
                        &[&&*watch, &endpoint.as_str(), &since],
                    )
                    .await?)
                })
            })
            .await?;
        // A shard counts its own sources, as with a store of its own.
        Ok(rows
            .iter()
            .filter(|r| self.owns(r.get(1)))
            .map(|r| r.get(0))
            .collect())
    }

    async fn discovered_at(&self, watch: &str) -> Result<Option<Millis>> {
        let watch = Arc::<str>::from(watch);
        self.run("read the last discovery", move |c| {
            let watch = watch.clone();
            Box::pin(async move {
                Ok(c.query_opt(
                    "SELECT discovered_ok_at FROM watches WHERE name = $1",
                    &[&&*watch],
                )
                .await?
                .and_then(|r| r.get::<_, Option<Millis>>(0)))
            })
        })
        .await
    }

    async fn discovered(
        &self,
        watch: &str,
        found: Vec<(String, String, String)>,
        at: Millis,
        complete: bool,
    ) -> Result<()> {
        self.require_writer("recording a discovery")?;
        let watch = Arc::<str>::from(watch);
        let srcs: Arc<Vec<String>> = Arc::new(found.iter().map(|f| f.0.clone()).collect());
        let probes: Arc<Vec<String>> = Arc::new(found.iter().map(|f| f.1.clone()).collect());
        let seen: Arc<Vec<String>> = Arc::new(
            found
                .iter()
                .map(|f| format!("discovery: {}", f.2))
                .collect(),
        );
        self.run("record a discovery", move |c| {
            let (watch, srcs, probes, seen) =
                (watch.clone(), srcs.clone(), probes.clone(), seen.clone());
            Box::pin(async move {
                let tx = c.transaction().await?;
                tx.execute(
                    "INSERT INTO sources (watch, src, probe, referenced, first_seen, seen_in, discovered_at)
                     SELECT DISTINCT ON (u.src) $1, u.src, u.probe, TRUE, $2, u.seen_in, $2
                     FROM UNNEST($3::text[], $4::text[], $5::text[]) AS u(src, probe, seen_in)
                     ON CONFLICT (watch, src) DO UPDATE SET discovered_at = excluded.discovered_at,
                         referenced = TRUE, unreferenced_since = NULL",
                    &[&&*watch, &at, &*srcs, &*probes, &*seen],
                )
                .await?;
                if complete {
                    tx.execute(
                        "INSERT INTO watches (name, discovered_ok_at) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET discovered_ok_at = excluded.discovered_ok_at",
                        &[&&*watch, &at],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
    }

    async fn discovered_sources(&self, watch: &str) -> Result<Vec<(String, String)>> {
        let watch = Arc::<str>::from(watch);
        let rows = self
            .run("read discovered sources", move |c| {
                let watch = watch.clone();
                Box::pin(async move {
                    Ok(c.query(
                        "SELECT s.src, s.probe FROM sources s LEFT JOIN watches w ON w.name = s.watch
                         WHERE s.watch = $1 AND s.discovered_at IS NOT NULL
                           AND s.discovered_at >= COALESCE(w.discovered_ok_at, 0)",
                        &[&&*watch],
                    )
                    .await?)
                })
            })
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn show(&self, watch: Option<&str>, srcs: &[String]) -> Result<Vec<SourceRow>> {
        if !self.writable() && !self.has_schema().await? {
            return Ok(Vec::new());
        }
        let watch = watch.map(str::to_owned);
        let srcs = Arc::new(srcs.to_vec());
        let rows = self
            .run("read the inventory", move |c| {
                let (watch, srcs) = (watch.clone(), srcs.clone());
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {SOURCE_COLUMNS}, w.last_pass_at FROM sources
                         LEFT JOIN watches w ON w.name = sources.watch
                         WHERE ($1::text IS NULL OR sources.watch = $1)
                           AND (cardinality($2::text[]) = 0 OR src = ANY($2))
                         ORDER BY sources.watch, src"
                    );
                    Ok(c.query(&sql, &[&watch, &*srcs]).await?)
                })
            })
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let rec = rec_of(row);
                let v = validators_at(row, 14);
                let ep = rec.episode.as_ref();
                SourceRow {
                    watch: row.get(21),
                    src: row.get(0),
                    probe: row.get(1),
                    referenced: rec.referenced,
                    unreferenced_since: rec.unreferenced_since.map(rfc3339),
                    first_seen: rfc3339(rec.first_seen),
                    seen_in: row.get(5),
                    last_verdict: rec.last_verdict,
                    last_status: rec.last_status,
                    last_decision: rec.last_decision,
                    last_checked: row.get::<_, Option<Millis>>(22).map(rfc3339),
                    gone_streak: ep.map(|e| e.gone_streak).unwrap_or(0),
                    gone_since: ep.map(|e| rfc3339(super::millis(e.first_gone))),
                    purged: ep.is_some_and(|e| e.purged_at.is_some()),
                    purged_at: ep
                        .and_then(|e| e.purged_at)
                        .map(|t| rfc3339(super::millis(t))),
                    etag: v.etag,
                    last_modified: v.last_modified,
                    content_length: v.length,
                }
            })
            .collect())
    }

    async fn forget(&self, watch: &str, srcs: &[String]) -> Result<usize> {
        if !self.writable() {
            return Err(StoreError::ReadOnly {
                path: self.path(),
                what: "state forget",
            });
        }
        // Only the watch's owner changes its inventory.
        if let Ownership::Standby { owner } = self.acquire(watch).await? {
            return Err(StoreError::Owned {
                path: self.path(),
                watch: watch.to_owned(),
                owner,
            });
        }
        let watch = Arc::<str>::from(watch);
        let srcs = Arc::new(srcs.to_vec());
        self.run("forget sources", move |c| {
            let (watch, srcs) = (watch.clone(), srcs.clone());
            Box::pin(async move {
                let n = c
                    .execute(
                        "DELETE FROM sources WHERE watch = $1 AND src = ANY($2)",
                        &[&&*watch, &*srcs],
                    )
                    .await?;
                Ok(n as usize)
            })
        })
        .await
    }

    async fn ledger(&self, since: Option<Millis>) -> Result<Vec<LedgerEntry>> {
        if !self.writable() && !self.has_schema().await? {
            return Ok(Vec::new());
        }
        let since = since.unwrap_or(Millis::MIN);
        let rows = self
            .run("read the ledger", move |c| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {LEDGER_COLUMNS} FROM ledger l WHERE l.at >= $1 ORDER BY l.at, l.id"
                    );
                    Ok(c.query(&sql, &[&since]).await?)
                })
            })
            .await?;
        Ok(rows.iter().map(ledger_of).collect())
    }

    async fn calls_for(&self, src: &str) -> Result<Vec<LedgerEntry>> {
        if !self.writable() && !self.has_schema().await? {
            return Ok(Vec::new());
        }
        let src = Arc::<str>::from(src);
        let rows = self
            .run("read the ledger", move |c| {
                let src = src.clone();
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {LEDGER_COLUMNS} FROM ledger l WHERE l.id IN
                         (SELECT ledger_id FROM ledger_sources WHERE src = $1) ORDER BY l.at, l.id"
                    );
                    Ok(c.query(&sql, &[&&*src]).await?)
                })
            })
            .await?;
        Ok(rows.iter().map(ledger_of).collect())
    }

    async fn history(&self, watch: &str, src: &str) -> Result<Vec<HistoryRow>> {
        if !self.writable() && !self.has_schema().await? {
            return Ok(Vec::new());
        }
        let (watch, src) = (Arc::<str>::from(watch), Arc::<str>::from(src));
        let src2 = src.clone();
        let rows = self
            .run("read the history", move |c| {
                let (watch, src) = (watch.clone(), src.clone());
                Box::pin(async move {
                    Ok(c.query(
                        "SELECT at, decision, status, reason FROM history
                         WHERE watch = $1 AND src = $2 ORDER BY at, id",
                        &[&&*watch, &&*src],
                    )
                    .await?)
                })
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let at: Millis = r.get(0);
                HistoryRow {
                    at,
                    time: rfc3339(at),
                    src: src2.clone(),
                    decision: sqlite::decision_of(r.get(1)).unwrap_or(Decision::Skip),
                    status: u16_at(r, 2),
                    reason: r.get(3),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
