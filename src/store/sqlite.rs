//! The SQLite backend of the [`Store`]: one file in WAL mode, schema
//! versioned by `PRAGMA user_version`, every write in a transaction, and one
//! writer at a time through an exclusive `flock` on the database file itself
//! (so a symlink or a hard link to the same store cannot let a second writer
//! in, and no lock file can be pointed elsewhere). Every call runs on the
//! blocking pool, never on an async worker.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use super::{
    Access, Endpoint, HistoryRow, LedgerEntry, Loaded, Millis, Rec, RowWrite, SourceRow, Store,
    StoreError, Validators, migrate_v1, rfc3339,
};
use crate::policy::{Decision, Episode};
use crate::probe::Verdict;

/// The schema, one entry per version; a store at version N runs the
/// entries after N, in one transaction each.
const MIGRATIONS: &[&str] = &[
    // 1: inventory, history, ledger.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE watches (
         name TEXT PRIMARY KEY,
         last_pass_at INTEGER,
         discovered_ok_at INTEGER
     );
     CREATE TABLE sources (
         watch TEXT NOT NULL,
         src TEXT NOT NULL,
         probe TEXT NOT NULL,
         referenced INTEGER NOT NULL,
         unreferenced_since INTEGER,
         first_seen INTEGER NOT NULL,
         seen_in TEXT,
         discovered_at INTEGER,
         last_verdict TEXT,
         last_status INTEGER,
         last_decision TEXT,
         gone_streak INTEGER NOT NULL DEFAULT 0,
         gone_since INTEGER,
         last_gone INTEGER,
         gone_status INTEGER,
         purged_at INTEGER,
         etag TEXT,
         last_modified TEXT,
         content_length INTEGER,
         cand_etag TEXT,
         cand_last_modified TEXT,
         cand_length INTEGER,
         cand_streak INTEGER NOT NULL DEFAULT 0,
         PRIMARY KEY (watch, src)
     ) WITHOUT ROWID;
     CREATE TABLE history (
         watch TEXT NOT NULL,
         src TEXT NOT NULL,
         at INTEGER NOT NULL,
         decision TEXT NOT NULL,
         status INTEGER,
         reason TEXT NOT NULL
     );
     CREATE INDEX history_by_source ON history (watch, src, at);
     CREATE TABLE ledger (
         id INTEGER PRIMARY KEY,
         at INTEGER NOT NULL,
         endpoint TEXT NOT NULL,
         project TEXT NOT NULL,
         team_id TEXT,
         slug TEXT,
         src_images TEXT NOT NULL,
         status INTEGER,
         vercel_id TEXT,
         error TEXT,
         attempts INTEGER NOT NULL
     );
     CREATE INDEX ledger_by_time ON ledger (at);
     CREATE TABLE ledger_sources (ledger_id INTEGER NOT NULL, src TEXT NOT NULL);
     CREATE INDEX ledger_sources_by_src ON ledger_sources (src, ledger_id);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const SOURCE_COLUMNS: &str = "src, probe, referenced, unreferenced_since, first_seen, seen_in, \
     last_verdict, last_status, last_decision, gone_streak, gone_since, last_gone, gone_status, \
     purged_at, etag, last_modified, content_length, cand_etag, cand_last_modified, cand_length, \
     cand_streak, watch";

const UPSERT: &str = "INSERT INTO sources (watch, src, probe, referenced, unreferenced_since, \
     first_seen, seen_in, last_verdict, last_status, last_decision, gone_streak, gone_since, \
     last_gone, gone_status, purged_at, etag, last_modified, content_length, cand_etag, \
     cand_last_modified, cand_length, cand_streak) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22) \
     ON CONFLICT (watch, src) DO UPDATE SET probe = excluded.probe, \
     referenced = excluded.referenced, unreferenced_since = excluded.unreferenced_since, \
     seen_in = COALESCE(sources.seen_in, excluded.seen_in), \
     last_verdict = excluded.last_verdict, last_status = excluded.last_status, \
     last_decision = excluded.last_decision, gone_streak = excluded.gone_streak, \
     gone_since = excluded.gone_since, last_gone = excluded.last_gone, \
     gone_status = excluded.gone_status, purged_at = excluded.purged_at, \
     etag = CASE WHEN ?23 THEN excluded.etag ELSE sources.etag END, \
     last_modified = CASE WHEN ?23 THEN excluded.last_modified ELSE sources.last_modified END, \
     content_length = CASE WHEN ?23 THEN excluded.content_length ELSE sources.content_length END, \
     cand_etag = CASE WHEN ?24 THEN excluded.cand_etag ELSE sources.cand_etag END, \
     cand_last_modified = CASE WHEN ?24 THEN excluded.cand_last_modified ELSE sources.cand_last_modified END, \
     cand_length = CASE WHEN ?24 THEN excluded.cand_length ELSE sources.cand_length END, \
     cand_streak = excluded.cand_streak";

/// A SQLite store. Cheap to share: the connection sits behind a mutex and
/// every call takes it on the blocking pool.
pub struct SqliteStore {
    path: PathBuf,
    /// Stopped (and its connection closed) before `conn` closes.
    checkpointer: Option<Checkpointer>,
    conn: Arc<Mutex<Connection>>,
    /// The writer's lock on the database file, held for the store's life
    /// (declared after `conn`, so it is released after the connection closes).
    _lock: Option<File>,
    access: Access,
}

type Result<T> = std::result::Result<T, StoreError>;

/// WAL pages past which a commit checkpoints by itself, should the
/// [`Checkpointer`] fall behind or be gone (SQLite's default is 1000).
const BACKSTOP_PAGES: i64 = 16_384;

/// The least time between two background checkpoints: each costs two
/// fsyncs, so they are batched rather than run after every commit.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies the WAL into the database file on a thread of its own, with a
/// connection of its own (a PASSIVE checkpoint: it never blocks the
/// writer). Without it, the commit that crosses SQLite's threshold runs
/// the checkpoint itself, two fsyncs included, while the pass waits; a
/// pass that records a thousand calls, each in its own transaction, then
/// spends most of its writing time in checkpoints.
struct Checkpointer {
    wake: Arc<(Mutex<Wake>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Wake {
    dirty: bool,
    stop: bool,
}

impl Checkpointer {
    fn start(
        path: &Path,
    ) -> std::result::Result<Checkpointer, Box<dyn std::error::Error + Send + Sync>> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let wake: Arc<(Mutex<Wake>, std::sync::Condvar)> = Arc::default();
        let shared = wake.clone();
        let label = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let (state, cv) = &*shared;
                loop {
                    let stop = {
                        let mut w = state.lock().unwrap_or_else(PoisonError::into_inner);
                        while !w.dirty && !w.stop {
                            w = cv.wait(w).unwrap_or_else(PoisonError::into_inner);
                        }
                        w.dirty = false;
                        w.stop
                    };
                    if stop {
                        // The writer's connection checkpoints what is left
                        // when it closes, right after this.
                        return;
                    }
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(store = %label, error = %e, "background checkpoint failed; commits will checkpoint by themselves");
                    }
                    // Rate-limited; a stop cuts the wait short.
                    let w = state.lock().unwrap_or_else(PoisonError::into_inner);
                    let (w, _) = cv
                        .wait_timeout_while(w, CHECKPOINT_EVERY, |w| !w.stop)
                        .unwrap_or_else(PoisonError::into_inner);
                    if w.stop {
                        return;
                    }
                }
            })
?;
        Ok(Checkpointer {
            wake,
            thread: Some(thread),
        })
    }

    /// A commit added to the WAL.
    fn poke(&self) {
        let (state, cv) = &*self.wake;
        state.lock().unwrap_or_else(PoisonError::into_inner).dirty = true;
        cv.notify_one();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (state, cv) = &*self.wake;
        state.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding it cannot leave a transaction half applied
    // (SQLite rolls back an unfinished one), so the connection stays usable.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (for [`Access::Write`]: creates, locks, migrates) the store at `path`.
    /// `legacy` is a version 1 JSON state to import when `path` does not exist yet.
    pub fn open_with_legacy(
        path: &Path,
        legacy: Option<&Path>,
        access: Access,
    ) -> Result<SqliteStore> {
        let open_err = |cause: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.to_owned(),
            cause,
        };
        // A version 1 JSON file at the path itself, or at the old default.
        let v1 = if migrate_v1::is_v1_json(path) {
            Some(path.to_owned())
        } else if !path.exists() {
            legacy
                .filter(|l| migrate_v1::is_v1_json(l))
                .map(Path::to_owned)
        } else {
            None
        };
        match access {
            Access::Read | Access::DryRun => {
                // (cargo mutants: `|` as `^` in the two `open_with_flags`
                // below is equivalent: the two flags are distinct bits.)
                let on_disk = path.exists() && v1.as_deref() != Some(path);
                let conn = if on_disk && access == Access::Read {
                    Connection::open_with_flags(
                        path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(|e| open_err(Box::new(e)))?
                } else if on_disk {
                    // A copy in memory: the pass may write, the file never changes.
                    let file = Connection::open_with_flags(
                        path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(|e| open_err(Box::new(e)))?;
                    let mut mem =
                        Connection::open_in_memory().map_err(|e| open_err(Box::new(e)))?;
                    rusqlite::backup::Backup::new(&file, &mut mem)
                        .and_then(|b| b.run_to_completion(1024, std::time::Duration::ZERO, None))
                        .map_err(|e| open_err(Box::new(e)))?;
                    migrate(&mut mem, path)?;
                    mem
                } else {
                    // Nothing written yet (or only a version 1 file): an
                    // in-memory store with what the file holds, and nothing
                    // created on disk.
                    let mut conn =
                        Connection::open_in_memory().map_err(|e| open_err(Box::new(e)))?;
                    migrate(&mut conn, path)?;
                    if let Some(v1) = &v1 {
                        migrate_v1::import(&mut conn, v1)?;
                    }
                    conn
                };
                let store = SqliteStore {
                    path: path.to_owned(),
                    conn: Arc::new(Mutex::new(conn)),
                    _lock: None,
                    checkpointer: None,
                    access,
                };
                store.check_version()?;
                Ok(store)
            }
            Access::Write => {
                std::fs::create_dir_all(crate::files::folder_of(path))
                    .map_err(|e| open_err(Box::new(e)))?;
                let moved_v1 = match &v1 {
                    Some(v1) if v1 == path => {
                        // The store takes the JSON file's place.
                        let aside = migrate_v1::aside_path(path);
                        std::fs::rename(path, &aside).map_err(|e| StoreError::Migrate {
                            path: path.to_owned(),
                            message: format!("cannot move it to {}: {e}", aside.display()),
                        })?;
                        Some(aside)
                    }
                    Some(v1) => Some(v1.clone()),
                    None => None,
                };
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(|e| open_err(Box::new(e)))?;
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(StoreError::Locked {
                            path: path.to_owned(),
                            holder: holder_of(path),
                        });
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(open_err(Box::new(e))),
                }
                let mut conn = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
                // WAL with synchronous NORMAL: a commit is one append to the
                // WAL, safe against a killed process at any moment (SQLite
                // replays or drops whole transactions); only a power loss
                // can drop the last commits, and then the store is still
                // consistent (at worst a purge is made once more).
                conn.pragma_update(None, "journal_mode", "WAL")
                    .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
                    .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(5)))
                    .map_err(|e| open_err(Box::new(e)))?;
                migrate(&mut conn, path)?;
                if let Some(v1) = &moved_v1 {
                    let imported = migrate_v1::import(&mut conn, v1)?;
                    let aside = if v1 == &migrate_v1::aside_path(path) {
                        v1.clone()
                    } else {
                        let aside = migrate_v1::aside_path(v1);
                        std::fs::rename(v1, &aside).map_err(|e| StoreError::Migrate {
                            path: v1.clone(),
                            message: format!("cannot move it to {}: {e}", aside.display()),
                        })?;
                        aside
                    };
                    tracing::info!(
                        store = %path.display(),
                        sources = imported,
                        moved_to = %aside.display(),
                        "imported the version 1 state file"
                    );
                }
                let holder = format!("pid {} on {}", std::process::id(), hostname());
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('writer', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [&holder],
                )
                .map_err(|e| open_err(Box::new(e)))?;
                // Into the main file, so that a refused process that reaches
                // it by another name (a hard link: another WAL name) reads it.
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    .map_err(|e| open_err(Box::new(e)))?;
                conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)
                    .map_err(|e| open_err(Box::new(e)))?;
                let checkpointer = Checkpointer::start(path).map_err(open_err)?;
                Ok(SqliteStore {
                    checkpointer: Some(checkpointer),
                    path: path.to_owned(),
                    conn: Arc::new(Mutex::new(conn)),
                    _lock: Some(file),
                    access,
                })
            }
        }
    }

    pub fn open(path: &Path, access: Access) -> Result<SqliteStore> {
        Self::open_with_legacy(path, None, access)
    }

    /// A dry run's store in memory, filled with `tables` (copied from
    /// another backend); `label` names it in messages.
    pub(super) fn memory_copy(label: PathBuf, tables: Vec<Copied>) -> Result<SqliteStore> {
        let mut conn = Connection::open_in_memory().map_err(|e| StoreError::Open {
            path: label.clone(),
            cause: Box::new(e),
        })?;
        migrate(&mut conn, &label)?;
        let err = |e: rusqlite::Error| StoreError::Query {
            path: label.clone(),
            what: "copy the store for a dry run",
            cause: Box::new(e),
        };
        let tx = conn.transaction().map_err(err)?;
        for t in &tables {
            let marks = vec!["?"; t.columns.len()].join(", ");
            let sql = format!(
                "INSERT OR REPLACE INTO {} ({}) VALUES ({marks})",
                t.table,
                t.columns.join(", ")
            );
            let mut stmt = tx.prepare(&sql).map_err(err)?;
            for row in &t.rows {
                stmt.execute(rusqlite::params_from_iter(row.iter()))
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(SqliteStore {
            path: label,
            conn: Arc::new(Mutex::new(conn)),
            _lock: None,
            checkpointer: None,
            access: Access::DryRun,
        })
    }

    fn check_version(&self) -> Result<()> {
        let conn = lock(&self.conn);
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.query_err("read the schema version", e))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Version {
                path: self.path.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    fn query_err(&self, what: &'static str, e: rusqlite::Error) -> StoreError {
        StoreError::Query {
            path: self.path.clone(),
            what,
            cause: Box::new(e),
        }
    }

    /// Writes go to the file (the writer) or to the dry run's memory copy.
    fn require_writer(&self, what: &'static str) -> Result<()> {
        if self.access == Access::Read {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
                what,
            });
        }
        Ok(())
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        let path = self.path.clone();
        let joined = tokio::task::spawn_blocking(move || f(&mut lock(&conn))).await;
        if let Some(c) = &self.checkpointer {
            c.poke();
        }
        match joined {
            Ok(r) => r.map_err(|e| StoreError::Query {
                path,
                what,
                cause: Box::new(e),
            }),
            Err(e) => Err(StoreError::Query {
                path,
                what,
                cause: Box::new(e),
            }),
        }
    }
}

/// One table's rows, copied from another backend into a dry run's store.
pub(super) struct Copied {
    pub table: &'static str,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<rusqlite::types::Value>>,
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let err = |e: rusqlite::Error| StoreError::Query {
        path: path.to_owned(),
        what: "migrate the schema",
        cause: Box::new(e),
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Version {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(step).map_err(err)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

/// Who holds the writer lock, as the holder wrote it into the store.
fn holder_of(path: &Path) -> String {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row("SELECT value FROM meta WHERE key = 'writer'", [], |r| {
                r.get::<_, String>(0)
            })
        })
        .map(|h| format!("held by {h}"))
        .unwrap_or_else(|_| "held by a process that has not said who it is".to_owned())
}

/// This machine's name, for the holder; a fallback when it cannot be read.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".to_owned())
}

pub(super) fn verdict_of(s: Option<String>) -> Option<Verdict> {
    s.and_then(|s| Verdict::ALL.into_iter().find(|v| v.as_str() == s))
}

pub(super) fn decision_of(s: Option<String>) -> Option<Decision> {
    s.and_then(|s| Decision::ALL.into_iter().find(|d| d.as_str() == s))
}

fn validators_at(row: &Row<'_>, at: usize) -> rusqlite::Result<Validators> {
    Ok(Validators {
        etag: row.get(at)?,
        last_modified: row.get(at + 1)?,
        length: row.get::<_, Option<i64>>(at + 2)?.map(|n| n as u64),
    })
}

/// A row of [`SOURCE_COLUMNS`] into the pass's compact record.
fn rec_of(row: &Row<'_>) -> rusqlite::Result<Rec> {
    let gone_since: Option<Millis> = row.get(10)?;
    let episode = match gone_since {
        None => None,
        Some(since) => Some(Box::new(Episode {
            gone_streak: row.get(9)?,
            first_gone: super::from_millis(since),
            last_gone: super::from_millis(row.get::<_, Option<Millis>>(11)?.unwrap_or(since)),
            last_status: row.get(12)?,
            purged_at: row.get::<_, Option<Millis>>(13)?.map(super::from_millis),
        })),
    };
    let stored = validators_at(row, 14)?;
    let candidate = validators_at(row, 17)?;
    Ok(Rec {
        first_seen: row.get(4)?,
        referenced: row.get(2)?,
        unreferenced_since: row.get(3)?,
        last_verdict: verdict_of(row.get(6)?),
        last_status: row.get(7)?,
        last_decision: decision_of(row.get(8)?),
        episode,
        validators_all: stored.all(),
        validators_identity: stored.identity(),
        candidate: candidate.identity(),
        candidate_streak: row.get(20)?,
    })
}

fn upsert(tx: &rusqlite::Transaction<'_>, watch: &str, w: &RowWrite) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(UPSERT)?;
    let r = &w.rec;
    let ep = r.episode.as_ref();
    let v = w.validators.clone().unwrap_or_default();
    let c = w.candidate.clone().flatten().unwrap_or_default();
    stmt.execute(params![
        watch,
        &*w.src,
        w.probe,
        r.referenced,
        r.unreferenced_since,
        r.first_seen,
        w.seen_in,
        r.last_verdict.map(|v| v.as_str()),
        r.last_status,
        r.last_decision.map(|d| d.as_str()),
        ep.map(|e| e.gone_streak).unwrap_or(0),
        ep.map(|e| super::millis(e.first_gone)),
        ep.map(|e| super::millis(e.last_gone)),
        ep.and_then(|e| e.last_status),
        ep.and_then(|e| e.purged_at).map(super::millis),
        v.etag,
        v.last_modified,
        v.length.map(|n| n as i64),
        c.etag,
        c.last_modified,
        c.length.map(|n| n as i64),
        r.candidate_streak,
        w.validators.is_some(),
        w.candidate.is_some(),
    ])?;
    Ok(())
}

fn ledger_of(row: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    let at: Millis = row.get(0)?;
    let src_images: String = row.get(5)?;
    Ok(LedgerEntry {
        time: rfc3339(at),
        at,
        endpoint: Endpoint::parse(&row.get::<_, String>(1)?).unwrap_or(Endpoint::Delete),
        project: row.get(2)?,
        team_id: row.get(3)?,
        slug: row.get(4)?,
        src_images: serde_json::from_str(&src_images).unwrap_or_default(),
        status: row.get(6)?,
        vercel_id: row.get(7)?,
        error: row.get(8)?,
        attempts: row.get(9)?,
    })
}

const LEDGER_COLUMNS: &str = "l.at, l.endpoint, l.project, l.team_id, l.slug, l.src_images, l.status, l.vercel_id, l.error, l.attempts";

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn writable(&self) -> bool {
        self._lock.is_some()
    }

    async fn acquire(&self, _watch: &str) -> Result<super::Ownership> {
        // The file's writer lock already makes this process the only one
        // that acts on any watch of the store.
        self.require_writer("owning a watch")?;
        Ok(super::Ownership::Owned)
    }

    async fn load(
        &self,
        watch: &str,
        listed: Arc<Vec<Arc<str>>>,
        forget_before: Millis,
    ) -> Result<Loaded> {
        let watch = watch.to_owned();
        let writable = self.access != Access::Read;
        self.with("load the inventory", move |conn| {
            // One ordered scan (BINARY collation: byte order) lines the
            // stored rows up with the listed sources.
            let mut merge = super::Merge::new(&listed, forget_before);
            {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {SOURCE_COLUMNS} FROM sources WHERE watch = ?1 ORDER BY src"
                ))?;
                let mut rows = stmt.query([&watch])?;
                while let Some(row) = rows.next()? {
                    let src = row.get_ref(0)?.as_str()?;
                    let probe = row.get_ref(1)?.as_str()?;
                    merge.row(src, probe, rec_of(row)?, true);
                }
            }
            let super::Merge {
                mut loaded, forget, ..
            } = merge;
            if writable && !forget.is_empty() {
                // (In a dry run the copy forgets; the file never does.)
                let tx = conn.transaction()?;
                {
                    let mut del =
                        tx.prepare("DELETE FROM sources WHERE watch = ?1 AND src = ?2")?;
                    for src in &forget {
                        del.execute(params![watch, src])?;
                    }
                }
                tx.commit()?;
            }
            loaded.forgotten = forget.len();
            Ok(loaded)
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
        let watch = watch.to_owned();
        self.with("write a pass's changes", move |conn| {
            let tx = conn.transaction()?;
            for w in &rows {
                upsert(&tx, &watch, w)?;
            }
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO history (watch, src, at, decision, status, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for h in &history {
                    stmt.execute(params![watch, &*h.src, h.at, h.decision.as_str(), h.status, h.reason])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn record_call(&self, call: LedgerEntry, effects: Vec<(String, RowWrite)>) -> Result<()> {
        self.require_writer("recording an API call")?;
        self.with("record an API call", move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO ledger (at, endpoint, project, team_id, slug, src_images, status, vercel_id, error, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    call.at,
                    call.endpoint.as_str(),
                    call.project,
                    call.team_id,
                    call.slug,
                    serde_json::to_string(&call.src_images).unwrap_or_default(),
                    call.status,
                    call.vercel_id,
                    call.error,
                    call.attempts,
                ],
            )?;
            let id = tx.last_insert_rowid();
            {
                let mut stmt = tx.prepare_cached("INSERT INTO ledger_sources (ledger_id, src) VALUES (?1, ?2)")?;
                for src in &call.src_images {
                    stmt.execute(params![id, src])?;
                }
            }
            for (watch, w) in &effects {
                upsert(&tx, watch, w)?;
            }
            tx.commit()
        })
        .await
    }

    async fn pass_done(&self, watch: &str, at: Millis) -> Result<()> {
        self.require_writer("a pass")?;
        let watch = watch.to_owned();
        self.with("note the pass", move |conn| {
            conn.execute(
                "INSERT INTO watches (name, last_pass_at) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_pass_at = excluded.last_pass_at",
                params![watch, at],
            )
            .map(|_| ())
        })
        .await
    }

    async fn recently_called(
        &self,
        watch: &str,
        endpoint: Endpoint,
        since: Millis,
    ) -> Result<Vec<String>> {
        let watch = watch.to_owned();
        self.with("read recent calls", move |conn| {
            let mut stmt = conn.prepare(
                "SELECT DISTINCT ls.src FROM ledger l
                 JOIN ledger_sources ls ON ls.ledger_id = l.id
                 JOIN sources s ON s.watch = ?1 AND s.src = ls.src
                 WHERE l.endpoint = ?2 AND l.status = 200 AND l.at > ?3",
            )?;
            let rows = stmt.query_map(params![watch, endpoint.as_str(), since], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn discovered_at(&self, watch: &str) -> Result<Option<Millis>> {
        let watch = watch.to_owned();
        self.with("read the last discovery", move |conn| {
            conn.query_row(
                "SELECT discovered_ok_at FROM watches WHERE name = ?1",
                [&watch],
                |r| r.get::<_, Option<Millis>>(0),
            )
            .optional()
            .map(Option::flatten)
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
        let watch = watch.to_owned();
        self.with("record a discovery", move |conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO sources (watch, src, probe, referenced, first_seen, seen_in, discovered_at)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?4)
                     ON CONFLICT (watch, src) DO UPDATE SET discovered_at = excluded.discovered_at,
                         referenced = 1, unreferenced_since = NULL",
                )?;
                for (src, probe, found_on) in &found {
                    stmt.execute(params![watch, src, probe, at, format!("discovery: {found_on}")])?;
                }
            }
            if complete {
                tx.execute(
                    "INSERT INTO watches (name, discovered_ok_at) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET discovered_ok_at = excluded.discovered_ok_at",
                    params![watch, at],
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn discovered_sources(&self, watch: &str) -> Result<Vec<(String, String)>> {
        let watch = watch.to_owned();
        self.with("read discovered sources", move |conn| {
            let mut stmt = conn.prepare(
                "SELECT s.src, s.probe FROM sources s LEFT JOIN watches w ON w.name = s.watch
                 WHERE s.watch = ?1 AND s.discovered_at IS NOT NULL
                   AND s.discovered_at >= COALESCE(w.discovered_ok_at, 0)",
            )?;
            let rows = stmt.query_map([&watch], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn show(&self, watch: Option<&str>, srcs: &[String]) -> Result<Vec<SourceRow>> {
        let watch = watch.map(str::to_owned);
        let wanted: HashSet<String> = srcs.iter().cloned().collect();
        self.with("read the inventory", move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {SOURCE_COLUMNS}, w.last_pass_at FROM sources
                 LEFT JOIN watches w ON w.name = sources.watch
                 WHERE (?1 IS NULL OR sources.watch = ?1) ORDER BY sources.watch, src"
            ))?;
            let mut rows = stmt.query([&watch])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let src: String = row.get(0)?;
                if !wanted.is_empty() && !wanted.contains(&src) {
                    continue;
                }
                let rec = rec_of(row)?;
                let v = validators_at(row, 14)?;
                let ep = rec.episode.as_ref();
                out.push(SourceRow {
                    watch: row.get(21)?,
                    src,
                    probe: row.get(1)?,
                    referenced: rec.referenced,
                    unreferenced_since: rec.unreferenced_since.map(rfc3339),
                    first_seen: rfc3339(rec.first_seen),
                    seen_in: row.get(5)?,
                    last_verdict: rec.last_verdict,
                    last_status: rec.last_status,
                    last_decision: rec.last_decision,
                    last_checked: row.get::<_, Option<Millis>>(22)?.map(rfc3339),
                    gone_streak: ep.map(|e| e.gone_streak).unwrap_or(0),
                    gone_since: ep.map(|e| super::rfc3339(super::millis(e.first_gone))),
                    purged: ep.is_some_and(|e| e.purged_at.is_some()),
                    purged_at: ep
                        .and_then(|e| e.purged_at)
                        .map(|t| rfc3339(super::millis(t))),
                    etag: v.etag,
                    last_modified: v.last_modified,
                    content_length: v.length,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn forget(&self, watch: &str, srcs: &[String]) -> Result<usize> {
        if !self.writable() {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
                what: "state forget",
            });
        }
        let watch = watch.to_owned();
        let srcs = srcs.to_vec();
        self.with("forget sources", move |conn| {
            let tx = conn.transaction()?;
            let mut n = 0;
            {
                let mut del = tx.prepare("DELETE FROM sources WHERE watch = ?1 AND src = ?2")?;
                for src in &srcs {
                    n += del.execute(params![watch, src])?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn ledger(&self, since: Option<Millis>) -> Result<Vec<LedgerEntry>> {
        self.with("read the ledger", move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {LEDGER_COLUMNS} FROM ledger l WHERE l.at >= ?1 ORDER BY l.at, l.id"
            ))?;
            let rows = stmt.query_map([since.unwrap_or(Millis::MIN)], ledger_of)?;
            rows.collect()
        })
        .await
    }

    async fn calls_for(&self, src: &str) -> Result<Vec<LedgerEntry>> {
        let src = src.to_owned();
        self.with("read the ledger", move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {LEDGER_COLUMNS} FROM ledger l WHERE l.id IN
                 (SELECT ledger_id FROM ledger_sources WHERE src = ?1) ORDER BY l.at, l.id"
            ))?;
            let rows = stmt.query_map([&src], ledger_of)?;
            rows.collect()
        })
        .await
    }

    async fn history(&self, watch: &str, src: &str) -> Result<Vec<HistoryRow>> {
        let (watch, src) = (watch.to_owned(), src.to_owned());
        self.with("read the history", move |conn| {
            let mut stmt = conn.prepare(
                "SELECT at, decision, status, reason FROM history WHERE watch = ?1 AND src = ?2 ORDER BY at, rowid",
            )?;
            let rows = stmt.query_map(params![watch, src], |r| {
                let at: Millis = r.get(0)?;
                Ok(HistoryRow {
                    at,
                    time: rfc3339(at),
                    src: Arc::from(src.as_str()),
                    decision: decision_of(r.get(1)?).unwrap_or(Decision::Skip),
                    status: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::read_only;
    use crate::store::{Rec, RowWrite, Store};

    fn row(i: usize) -> RowWrite {
        RowWrite {
            src: Arc::from(format!("/images/{i:06}-{}.png", "x".repeat(40))),
            probe: format!("https://origin.example/images/{i:06}.png"),
            rec: Rec::new(1_700_000_000_000, true),
            validators: None,
            candidate: None,
            seen_in: Some("images.txt".into()),
        }
    }

    /// The pass's commits do not copy the WAL into the database file
    /// themselves (the backstop is far above what this writes): the
    /// background checkpointer does, soon after.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_wal_reaches_the_database_file_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path, Access::Write).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        for chunk in (0..6000).collect::<Vec<_>>().chunks(1000) {
            let rows = chunk.iter().map(|&i| row(i)).collect();
            store.write("w", rows, Vec::new()).await.unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("state.db-wal"))
            .unwrap()
            .len();
        assert!(
            wal < (BACKSTOP_PAGES as u64) * 4096 / 4,
            "the test must stay under the backstop: WAL {wal} bytes"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now > before + 512 * 1024 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {now} bytes (from {before}); nothing checkpointed the WAL"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // And the rows are all there, read back through a new store.
        drop(store);
        let store = SqliteStore::open(&path, Access::Read).unwrap();
        let shown = store.show(Some("w"), &[]).await.unwrap();
        assert_eq!(shown.len(), 6000);
    }

    /// A store written by a newer build is refused however it is opened,
    /// and names both versions.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_newer_schema_is_refused_by_readers_dry_runs_and_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteStore::open(&path, Access::Write).unwrap());
        // The current version opens every way.
        for access in [Access::Read, Access::DryRun, Access::Write] {
            assert!(SqliteStore::open(&path, access).is_ok(), "{access:?}");
        }
        let db = Connection::open(&path).unwrap();
        db.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(db);
        for access in [Access::Read, Access::DryRun, Access::Write] {
            match SqliteStore::open(&path, access) {
                Err(StoreError::Version { found, known, .. }) => {
                    assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
                }
                Err(e) => panic!("{access:?}: unexpected error {e}"),
                Ok(_) => panic!("{access:?}: a newer schema was opened"),
            }
        }
    }

    /// A reader (`state show`, `explain`) never writes: every write is
    /// refused before it reaches the file, which stays as it was.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_reader_refuses_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let writer = SqliteStore::open(&path, Access::Write).unwrap();
        assert!(writer.writable());
        writer.write("w", vec![row(1)], Vec::new()).await.unwrap();
        drop(writer);
        let store = SqliteStore::open(&path, Access::Read).unwrap();
        assert!(!store.writable());
        read_only(store.acquire("w").await, "acquire");
        read_only(store.write("w", vec![row(2)], Vec::new()).await, "write");
        read_only(store.pass_done("w", 5).await, "pass_done");
        read_only(
            store
                .discovered("w", vec![("/a".into(), "p".into(), "page".into())], 5, true)
                .await,
            "discovered",
        );
        read_only(store.forget("w", &[row(1).src.to_string()]).await, "forget");
        let call = LedgerEntry {
            time: rfc3339(5),
            at: 5,
            endpoint: Endpoint::Delete,
            project: "p".into(),
            team_id: None,
            slug: None,
            src_images: vec!["/a".into()],
            status: Some(200),
            vercel_id: None,
            error: None,
            attempts: 1,
        };
        read_only(store.record_call(call, Vec::new()).await, "record_call");
        assert_eq!(store.show(None, &[]).await.unwrap().len(), 1);
        assert!(store.ledger(None).await.unwrap().is_empty());
        // A dry run writes into its copy, but `state forget` is for the writer.
        let dry = SqliteStore::open(&path, Access::DryRun).unwrap();
        assert!(!dry.writable());
        read_only(
            dry.forget("w", &[row(1).src.to_string()]).await,
            "dry forget",
        );
    }

    /// `state forget` removes the named sources and counts only those that
    /// were there.
    #[tokio::test(flavor = "multi_thread")]
    async fn forgetting_counts_the_sources_that_were_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db"), Access::Write).unwrap();
        crate::store::contract::forgetting_counts_the_sources_that_were_there(&store).await;
    }

    /// A source unreferenced since before `forget_before` with nothing
    /// pending is forgotten by the writer's load; a reader's load counts it
    /// but leaves the file alone.
    #[tokio::test(flavor = "multi_thread")]
    async fn only_the_writer_deletes_what_a_load_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let writer = SqliteStore::open(&path, Access::Write).unwrap();
        let reader = SqliteStore::open(&path, Access::Read).unwrap();
        crate::store::contract::only_the_writer_deletes_what_a_load_forgets(&writer, &reader).await;
    }

    /// Closing the writer stops the checkpointer and closes its connection:
    /// the last connection to close folds the WAL into the file and removes it.
    #[tokio::test(flavor = "multi_thread")]
    async fn closing_the_writer_leaves_no_wal_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path, Access::Write).unwrap();
        store
            .write("w", vec![row(1), row(2)], Vec::new())
            .await
            .unwrap();
        let wal = dir.path().join("state.db-wal");
        assert!(wal.exists());
        drop(store);
        assert!(!wal.exists(), "the WAL outlived the store");
    }

    /// The holder a refused writer is told about names this machine.
    #[test]
    fn the_host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let kernel = kernel.trim();
        if kernel.is_empty() {
            return;
        }
        assert_eq!(hostname(), kernel);
    }

    /// The files under `dir` this process holds open.
    fn open_files_under(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .collect()
    }

    /// Closing the writer closes every file it opened, the background
    /// checkpointer's connection included (a daemon reopens its store on
    /// each reload).
    #[tokio::test(flavor = "multi_thread")]
    async fn closing_the_writer_closes_every_file_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().canonicalize().unwrap();
        let path = dir_path.join("state.db");
        let store = SqliteStore::open(&path, Access::Write).unwrap();
        store.write("w", vec![row(1)], Vec::new()).await.unwrap();
        assert!(!open_files_under(&dir_path).is_empty());
        drop(store);
        assert_eq!(open_files_under(&dir_path), Vec::<PathBuf>::new());
    }

    /// `state show` beside a running writer reads the file as it is now,
    /// not a copy taken when it opened.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_reader_sees_what_the_writer_wrote_after_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let writer = SqliteStore::open(&path, Access::Write).unwrap();
        writer.write("w", vec![row(1)], Vec::new()).await.unwrap();
        let reader = SqliteStore::open(&path, Access::Read).unwrap();
        assert_eq!(reader.show(None, &[]).await.unwrap().len(), 1);
        writer.write("w", vec![row(2)], Vec::new()).await.unwrap();
        assert_eq!(reader.show(None, &[]).await.unwrap().len(), 2);
    }

    /// A dry run writes into a copy in memory: the pass's writes succeed,
    /// and the file keeps what it had.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_dry_run_writes_into_a_copy_and_the_file_stays_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let writer = SqliteStore::open(&path, Access::Write).unwrap();
        writer.write("w", vec![row(1)], Vec::new()).await.unwrap();
        drop(writer);
        let dry = SqliteStore::open(&path, Access::DryRun).unwrap();
        dry.write("w", vec![row(2)], Vec::new()).await.unwrap();
        dry.pass_done("w", 5).await.unwrap();
        assert_eq!(dry.show(None, &[]).await.unwrap().len(), 2);
        drop(dry);
        let reader = SqliteStore::open(&path, Access::Read).unwrap();
        assert_eq!(reader.show(None, &[]).await.unwrap().len(), 1);
    }

    /// With no store yet, readers and dry runs work on an empty store in
    /// memory and create nothing on disk.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_missing_store_reads_as_empty_and_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let reader = SqliteStore::open(&path, Access::Read).unwrap();
        assert!(reader.show(None, &[]).await.unwrap().is_empty());
        let dry = SqliteStore::open(&path, Access::DryRun).unwrap();
        dry.write("w", vec![row(1)], Vec::new()).await.unwrap();
        assert_eq!(dry.show(None, &[]).await.unwrap().len(), 1);
        drop((reader, dry));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    const V1: &str = r#"{
  "version": 1,
  "watches": {
    "site": {
      "/old.png": { "gone_streak": 1, "first_gone": "2026-11-01T10:30:00Z", "last_gone": "2026-11-01T10:30:00Z", "last_status": 410 }
    }
  }
}"#;

    /// The old default state file is imported only into a store that does
    /// not exist yet, never into one that does.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_legacy_state_is_imported_only_where_no_store_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let legacy = dir.path().join("state.json");
        std::fs::write(&legacy, V1).unwrap();
        let dry = SqliteStore::open_with_legacy(&path, Some(&legacy), Access::DryRun).unwrap();
        let shown = dry.show(None, &[]).await.unwrap();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0].src, "/old.png");
        drop(dry);
        assert!(!path.exists());

        let writer = SqliteStore::open(&path, Access::Write).unwrap();
        writer.write("w", vec![row(1)], Vec::new()).await.unwrap();
        drop(writer);
        for access in [Access::Read, Access::DryRun, Access::Write] {
            let store = SqliteStore::open_with_legacy(&path, Some(&legacy), access).unwrap();
            let shown = store.show(None, &[]).await.unwrap();
            assert_eq!(shown.len(), 1, "{access:?}: {shown:?}");
            assert_eq!(shown[0].src, *row(1).src, "{access:?}");
        }
        assert!(legacy.exists(), "left where it was");
    }

    /// The writer imports a version 1 file, whether it sits at the store's
    /// path or at the old default, and moves it aside (`.v1.json`).
    #[tokio::test(flavor = "multi_thread")]
    async fn the_writer_imports_a_version_1_file_and_moves_it_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, V1).unwrap();
        let store = SqliteStore::open(&path, Access::Write).unwrap();
        let shown = store.show(None, &[]).await.unwrap();
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0].src, "/old.png");
        assert_eq!(
            std::fs::read_to_string(migrate_v1::aside_path(&path)).unwrap(),
            V1
        );
        drop(store);

        let path = dir.path().join("new.db");
        let legacy = dir.path().join("old-default.json");
        std::fs::write(&legacy, V1).unwrap();
        let store = SqliteStore::open_with_legacy(&path, Some(&legacy), Access::Write).unwrap();
        assert_eq!(store.show(None, &[]).await.unwrap().len(), 1);
        assert!(!legacy.exists());
        assert_eq!(
            std::fs::read_to_string(migrate_v1::aside_path(&legacy)).unwrap(),
            V1
        );
    }

    /// The background checkpointer does not checkpoint again within
    /// [`CHECKPOINT_EVERY`] of its last checkpoint, however often the pass
    /// commits. (A try whose watch ran past the interval, on a stalled
    /// machine, says nothing, and is made again.)
    #[tokio::test(flavor = "multi_thread")]
    async fn background_checkpoints_are_at_least_an_interval_apart() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path, Access::Write).unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let mut next = 0;
        for _ in 0..20 {
            let before = size();
            let rows = (next..next + 500).map(row).collect();
            next += 500;
            store.write("w", rows, Vec::new()).await.unwrap();
            // The checkpoint this commit wakes: the file grows, then settles.
            let deadline = Instant::now() + Duration::from_secs(10);
            while size() == before {
                assert!(Instant::now() < deadline, "no checkpoint at all");
                std::thread::sleep(Duration::from_millis(1));
            }
            let checkpointed = Instant::now();
            let mut settled = size();
            loop {
                std::thread::sleep(Duration::from_millis(20));
                let now = size();
                if now == settled {
                    break;
                }
                settled = now;
            }
            // A second commit right away: its checkpoint must wait.
            let rows = (next..next + 500).map(row).collect();
            next += 500;
            store.write("w", rows, Vec::new()).await.unwrap();
            let mut grew = false;
            while checkpointed.elapsed() < CHECKPOINT_EVERY * 4 / 5 {
                if size() != settled {
                    grew = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let watched = checkpointed.elapsed();
            if watched >= CHECKPOINT_EVERY {
                continue;
            }
            assert!(
                !grew,
                "a second checkpoint came {watched:?} after the first"
            );
            return;
        }
        panic!("no try finished its watch within {CHECKPOINT_EVERY:?}");
    }

    /// Everything a pass writes about a source reads back as it was: the
    /// record a pass loads, the row `state show` prints, the history.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_row_reads_back_as_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = SqliteStore::open(&path, Access::Write).unwrap();
        assert_eq!(store.describe(), path.display().to_string());
        crate::store::contract::a_row_reads_back_as_it_was_written(&store).await;
    }

    /// A refused second writer is told who holds the store.
    #[test]
    fn a_second_writer_is_told_who_holds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let _first = SqliteStore::open(&path, Access::Write).unwrap();
        match SqliteStore::open(&path, Access::Write) {
            Err(StoreError::Locked { holder, .. }) => assert_eq!(
                holder,
                format!("held by pid {} on {}", std::process::id(), hostname())
            ),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a second writer got in"),
        }
    }

    /// API calls, their effects, discoveries and passes read back through
    /// the ledger, `explain`, the fraction guards' window, discovery's
    /// bookkeeping and `state show`.
    #[tokio::test(flavor = "multi_thread")]
    async fn calls_discoveries_and_passes_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db"), Access::Write).unwrap();
        crate::store::contract::calls_discoveries_and_passes_read_back(&store).await;
    }
}
