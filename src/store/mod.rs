//! The state store: a watch's inventory (every source it knows, with its last
//! verdict, validators, gone streak and episode), the decision history (a row
//! whenever a source's decision changes) and the ledger (every API call).
//!
//! A pass talks to it through [`Store`], so that the backend (a SQLite file
//! for one process on one machine, PostgreSQL for many processes and shards)
//! is a choice at start-up ([`StateLocation`]), not a rewrite of the pass.
//! What a pass holds in memory per source is the compact [`Rec`]; the text
//! behind it (validators, reasons) lives only in the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use crate::policy::{Decision, Episode};
use crate::probe::Verdict;

#[cfg(test)]
pub(crate) mod contract;
pub mod location;
pub mod migrate_v1;
pub mod postgres;
pub mod sqlite;

pub use location::{PgLocation, StateLocation};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Write batches a pass keeps under way at once: two keep a shared
/// database busy while the next batch fills. Their rows never overlap (a
/// source is written once per pass before the calls), so they may commit in
/// any order.
pub const WRITES_IN_FLIGHT: usize = 2;

/// API calls a pass keeps being recorded at once, each in a transaction of
/// its own, while it makes the next call. A shared database's commit waits
/// for its flush to disk (3 to 4 ms here); concurrent commits share
/// flushes, so with 16 under way the purge phase of 625 calls takes about
/// as long as the calls themselves (measured in PERFORMANCE.md: 1.2-1.4 s
/// with 4, 0.7 s with 8, 0.4 s with 16). A record already sent commits even
/// if origin-watch dies; only a database crash can lose those not yet
/// flushed, whose sources are then purged once more.
pub const RECORDS_IN_FLIGHT: usize = 16;

/// Why the store could not be used. Every variant names the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "state store {path} is in use by another origin-watch process ({holder}); refusing to start a second writer"
    )]
    Locked { path: PathBuf, holder: String },
    #[error("cannot open state store {path}: {cause}")]
    Open {
        path: PathBuf,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "state store {path} has schema version {found}; this build knows versions up to {known} (a newer origin-watch wrote it)"
    )]
    Version {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot migrate the version 1 state file {path}: {message}")]
    Migrate { path: PathBuf, message: String },
    #[error("state store {path}: {what}: {cause}")]
    Query {
        path: PathBuf,
        what: &'static str,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("state store {path} is open read-only (audit or --dry-run); {what} needs the writer")]
    ReadOnly { path: PathBuf, what: &'static str },
    #[error(
        "watch {watch} in state store {path} is owned by another origin-watch process ({owner}); refusing to act for it"
    )]
    Owned {
        path: PathBuf,
        watch: String,
        owner: String,
    },
}

/// Whether this process may act for a watch (see [`Store::acquire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// This process owns the watch (and its shard) until it exits.
    Owned,
    /// Another process does; it says who (host and pid).
    Standby { owner: String },
}

/// Milliseconds since the Unix epoch: how times are kept in the store.
pub type Millis = i64;

pub fn millis(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

pub fn from_millis(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A time as the store's readers print it.
pub fn rfc3339(ms: Millis) -> String {
    from_millis(ms).to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub use crate::probe::Validators;

/// What the pass keeps in memory about one source between loading the
/// inventory and writing back what changed. Text is fingerprinted: a
/// million of these must fit in a few tens of megabytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub first_seen: Millis,
    pub referenced: bool,
    /// When the source stopped being referenced (`None` while it is).
    pub unreferenced_since: Option<Millis>,
    pub last_verdict: Option<Verdict>,
    pub last_status: Option<u16>,
    pub last_decision: Option<Decision>,
    /// Set while the source is not plainly present: its gone episode
    /// (boxed: only the few gone sources pay for it, which keeps a record
    /// of a million-source inventory small).
    pub episode: Option<Box<Episode>>,
    /// [`Validators::all`] and [`Validators::identity`] of the stored validators.
    pub validators_all: u64,
    pub validators_identity: u64,
    /// A change seen but not yet confirmed: its identity and how many
    /// consecutive passes saw it.
    pub candidate: u64,
    pub candidate_streak: u32,
}

impl Rec {
    /// A source seen for the first time at `now`.
    pub fn new(now: Millis, referenced: bool) -> Rec {
        Rec {
            first_seen: now,
            referenced,
            unreferenced_since: (!referenced).then_some(now),
            last_verdict: None,
            last_status: None,
            last_decision: None,
            episode: None,
            validators_all: 0,
            validators_identity: 0,
            candidate: 0,
            candidate_streak: 0,
        }
    }

    /// Whether something may still be to do for this source: anything but
    /// present with no change pending, or gone and purged in its episode
    /// (an inconclusive source's fate is unknown). Such a source is never
    /// forgotten.
    pub fn pending(&self) -> bool {
        let purged = self.episode.as_ref().is_some_and(|e| e.purged_at.is_some());
        let present = self.last_verdict == Some(Verdict::Present) && self.episode.is_none();
        !(purged || present) || self.candidate != 0
    }

    /// Marks the source referenced or not at `now`.
    pub fn set_referenced(&mut self, referenced: bool, now: Millis) {
        if referenced {
            self.unreferenced_since = None;
        } else if self.referenced || self.unreferenced_since.is_none() {
            self.unreferenced_since = Some(now);
        }
        self.referenced = referenced;
    }
}

/// One row to write: the record and the text the store keeps beside it.
#[derive(Debug, Clone)]
pub struct RowWrite {
    pub src: Arc<str>,
    pub probe: String,
    pub rec: Rec,
    /// The stored validators; `None` leaves them as they are.
    pub validators: Option<Validators>,
    /// The unconfirmed change's validators; `None` leaves them as they are.
    pub candidate: Option<Option<Validators>>,
    /// Where the source was first seen (`watch.yaml`, `images.txt`, a page), on insert.
    pub seen_in: Option<String>,
}

/// A decision that differs from the source's previous one.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    #[serde(skip)]
    pub at: Millis,
    pub time: String,
    #[serde(skip)]
    pub src: Arc<str>,
    pub decision: Decision,
    pub status: Option<u16>,
    pub reason: String,
}

/// Which API endpoint a call went to. Serialized by [`Endpoint::as_str`],
/// the one place its names are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Delete,
    Invalidate,
}

serialize_as_str!(Endpoint);

impl Endpoint {
    pub const ALL: [Endpoint; 2] = [Endpoint::Delete, Endpoint::Invalidate];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Delete => "delete",
            Endpoint::Invalidate => "invalidate",
        }
    }

    /// The API path of the endpoint.
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Delete => "/v1/edge-cache/dangerously-delete-by-src-images",
            Endpoint::Invalidate => "/v1/edge-cache/invalidate-by-src-images",
        }
    }

    pub fn parse(s: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// One API call, as the ledger keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    pub time: String,
    #[serde(skip)]
    pub at: Millis,
    pub endpoint: Endpoint,
    pub project: String,
    pub team_id: Option<String>,
    pub slug: Option<String>,
    #[serde(rename = "srcImages")]
    pub src_images: Vec<String>,
    /// The HTTP status of the last attempt; `None` when no answer came.
    pub status: Option<u16>,
    pub vercel_id: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
}

/// One source as `state show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    pub watch: String,
    pub src: String,
    pub probe: String,
    pub referenced: bool,
    pub unreferenced_since: Option<String>,
    pub first_seen: String,
    pub seen_in: Option<String>,
    pub last_verdict: Option<Verdict>,
    pub last_status: Option<u16>,
    pub last_decision: Option<Decision>,
    pub last_checked: Option<String>,
    pub gone_streak: u32,
    pub gone_since: Option<String>,
    /// Purged in the current gone episode.
    pub purged: bool,
    pub purged_at: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_length: Option<u64>,
}

/// A watch's stored inventory, lined up with the sources a pass lists.
#[derive(Debug, Default)]
pub struct Loaded {
    /// `recs[i]` is the record of `listed[i]`, if the store knows it.
    pub recs: Vec<Option<Rec>>,
    /// Sources the store knows that were not listed: remembered ones, with
    /// the probe URL they were last probed at.
    pub remembered: Vec<(String, String, Rec)>,
    /// Sources dropped because they were unreferenced for `forget_after`
    /// with nothing pending.
    pub forgotten: usize,
}

/// Lines a watch's stored rows up with the sources a pass lists: both
/// backends read the rows in `src` byte order and feed them here one by one.
/// A stored source that is listed gets its record in place; one that is not
/// is remembered, or forgotten when it has been unreferenced since before
/// `forget_before` with nothing pending.
pub(crate) struct Merge<'a> {
    listed: &'a [Arc<str>],
    /// Indices into `listed`, in byte order of their sources.
    order: Vec<u32>,
    at: usize,
    forget_before: Millis,
    pub loaded: Loaded,
    /// Sources to delete (the caller deletes them, when it may write).
    pub forget: Vec<String>,
}

impl<'a> Merge<'a> {
    pub(crate) fn new(listed: &'a [Arc<str>], forget_before: Millis) -> Merge<'a> {
        let mut order: Vec<u32> = (0..listed.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| listed[a as usize].cmp(&listed[b as usize]));
        Merge {
            listed,
            order,
            at: 0,
            forget_before,
            loaded: Loaded {
                recs: vec![None; listed.len()],
                ..Loaded::default()
            },
            forget: Vec::new(),
        }
    }

    /// The next stored row (rows come in ascending `src` order). `ours`
    /// false: an unlisted row is another process's (another shard's of a
    /// shared store) and is neither remembered nor forgotten here.
    pub(crate) fn row(&mut self, src: &str, probe: &str, rec: Rec, ours: bool) {
        // Listed sources the store does not know are new.
        while self
            .order
            .get(self.at)
            .is_some_and(|&i| &*self.listed[i as usize] < src)
        {
            self.at += 1;
        }
        match self.order.get(self.at) {
            Some(&i) if &*self.listed[i as usize] == src => {
                self.loaded.recs[i as usize] = Some(rec);
                // (cargo mutants: `*=` here is equivalent. Staying on this
                // source only costs the next row one more step of the loop
                // above: rows come in strictly ascending `src` order, one per
                // source, so the next row is greater and skips it anyway.)
                self.at += 1;
            }
            _ if !ours => {}
            _ => {
                let gone_long = rec.unreferenced_since.unwrap_or(Millis::MAX) < self.forget_before;
                if !rec.referenced && gone_long && !rec.pending() {
                    self.forget.push(src.to_owned());
                } else {
                    self.loaded
                        .remembered
                        .push((src.to_owned(), probe.to_owned(), rec));
                }
            }
        }
    }
}

/// What a pass reads and writes, and what the `state` and `explain`
/// commands ask. Every method may be called from any task; backends do
/// their blocking work off the async workers.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// The path (or the URL without its password) for messages.
    fn describe(&self) -> String;

    /// Whether this handle may write (it holds the writer lock).
    fn writable(&self) -> bool;

    /// Takes ownership of `watch` (for this process's shard) if no other
    /// process holds it, and keeps it for the process's life; says who
    /// holds it otherwise. A store only one process can open (a SQLite
    /// file, under its writer lock) owns every watch.
    async fn acquire(&self, _watch: &str) -> Result<Ownership, StoreError> {
        Ok(Ownership::Owned)
    }

    /// Whether the store can be reached now (`/healthz`).
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The watch's inventory lined up with `listed`; first drops what
    /// has been unreferenced since before `forget_before` with nothing pending.
    async fn load(
        &self,
        watch: &str,
        listed: Arc<Vec<Arc<str>>>,
        forget_before: Millis,
    ) -> Result<Loaded, StoreError>;

    /// Writes changed rows and history rows of one watch in one transaction.
    async fn write(
        &self,
        watch: &str,
        rows: Vec<RowWrite>,
        history: Vec<HistoryRow>,
    ) -> Result<(), StoreError>;

    /// Records an API call in the ledger and, in the same transaction, its
    /// effect: each `(watch, row)` written (purged, or new validators stored).
    async fn record_call(
        &self,
        call: LedgerEntry,
        effects: Vec<(String, RowWrite)>,
    ) -> Result<(), StoreError>;

    /// Notes that a pass of `watch` completed at `at`.
    async fn pass_done(&self, watch: &str, at: Millis) -> Result<(), StoreError>;

    /// Distinct sources of `watch` that a 200 from `endpoint` covered since
    /// `since` (the fraction guards' rolling window).
    async fn recently_called(
        &self,
        watch: &str,
        endpoint: Endpoint,
        since: Millis,
    ) -> Result<Vec<String>, StoreError>;

    /// When discovery last succeeded for `watch`.
    async fn discovered_at(&self, watch: &str) -> Result<Option<Millis>, StoreError>;

    /// Records a discovery of `watch` at `at`: every found source is
    /// referenced from now on (inserted if new); when `complete`, the
    /// discovery becomes the watch's latest successful one.
    async fn discovered(
        &self,
        watch: &str,
        found: Vec<(String, String, String)>,
        at: Millis,
        complete: bool,
    ) -> Result<(), StoreError>;

    /// Sources found by the latest successful discovery (or found since),
    /// with the probe URL each is probed at.
    async fn discovered_sources(&self, watch: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// The inventory for `state show`: `watch` and `srcs` filter when given.
    async fn show(
        &self,
        watch: Option<&str>,
        srcs: &[String],
    ) -> Result<Vec<SourceRow>, StoreError>;

    /// Removes sources from a watch's inventory; returns how many were there.
    async fn forget(&self, watch: &str, srcs: &[String]) -> Result<usize, StoreError>;

    /// Every API call since `since` (all when `None`), oldest first.
    async fn ledger(&self, since: Option<Millis>) -> Result<Vec<LedgerEntry>, StoreError>;

    /// The API calls whose srcImages held `src`, oldest first.
    async fn calls_for(&self, src: &str) -> Result<Vec<LedgerEntry>, StoreError>;

    /// A source's decision history, oldest first.
    async fn history(&self, watch: &str, src: &str) -> Result<Vec<HistoryRow>, StoreError>;
}

/// How a command opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Takes the single-writer lock; creates the store (and migrates a
    /// version 1 JSON state) when needed.
    Write,
    /// Never locks, never creates, never writes: `state show`,
    /// `state ledger`, `explain`.
    Read,
    /// `audit` and `--dry-run`: never locks, creates or writes the file; a
    /// pass writes into an in-memory copy that is dropped at exit (so `run
    /// --dry-run` keeps its streaks across passes).
    DryRun,
}

/// Opens the store named by `state:` (or `--state`); `legacy` is a version
/// 1 state file to import when a SQLite store does not exist yet.
pub async fn open(
    location: impl Into<StateLocation>,
    legacy: Option<&Path>,
    access: Access,
) -> Result<Arc<dyn Store>, StoreError> {
    let path = match location.into() {
        StateLocation::File(path) => path,
        StateLocation::Postgres(pg) => return postgres::open(&pg, access).await,
    };
    let legacy = legacy.map(Path::to_owned);
    let shown = path.clone();
    let store = tokio::task::spawn_blocking(move || {
        SqliteStore::open_with_legacy(&path, legacy.as_deref(), access)
    })
    .await
    .map_err(|e| StoreError::Open {
        path: shown,
        cause: Box::new(e),
    })??;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Endpoint, Merge, Rec, Validators, from_millis, rfc3339};
    use crate::policy::Episode;
    use crate::probe::Verdict;

    fn v(etag: Option<&str>, last_modified: Option<&str>, length: Option<u64>) -> Validators {
        Validators {
            etag: etag.map(str::to_owned),
            last_modified: last_modified.map(str::to_owned),
            length,
        }
    }

    #[test]
    fn times_print_as_rfc3339_in_utc_to_the_second() {
        assert_eq!(rfc3339(1_800_000_000_123), "2027-01-15T08:00:00Z");
    }

    #[test]
    fn validators_are_empty_only_with_no_field_at_all() {
        assert!(Validators::default().is_empty());
        assert!(!v(Some("\"a\""), None, None).is_empty());
        assert!(!v(None, Some("Tue, 01 Dec 2026 10:00:00 GMT"), None).is_empty());
        assert!(!v(None, None, Some(5)).is_empty());
    }

    /// The identity is the ETag and the length; Last-Modified alone (which a
    /// deploy rewrites without new bytes) identifies nothing.
    #[test]
    fn identity_needs_an_etag_or_a_length_and_all_sees_every_field() {
        let lm = Some("Tue, 01 Dec 2026 10:00:00 GMT");
        assert_eq!(Validators::default().identity(), 0);
        assert_eq!(v(None, lm, None).identity(), 0);
        assert_ne!(v(Some("\"a\""), None, None).identity(), 0);
        assert_ne!(v(None, None, Some(5)).identity(), 0);
        assert_ne!(
            v(Some("\"a\""), None, None).identity(),
            v(Some("\"b\""), None, None).identity()
        );
        assert_eq!(
            v(Some("\"a\""), lm, Some(5)).identity(),
            v(Some("\"a\""), None, Some(5)).identity()
        );

        assert_eq!(Validators::default().all(), 0);
        assert_ne!(v(None, lm, None).all(), 0);
        assert_ne!(
            v(Some("\"a\""), lm, Some(5)).all(),
            v(Some("\"a\""), None, Some(5)).all()
        );
    }

    /// A pass holds one record per source: a million of them. The gone
    /// episode is boxed so that the 95% that are present do not pay for it.
    #[test]
    fn a_record_stays_small() {
        assert!(
            std::mem::size_of::<Option<Rec>>() <= 72,
            "{} bytes",
            std::mem::size_of::<Option<Rec>>()
        );
    }

    fn episode(purged: bool) -> Option<Box<Episode>> {
        Some(Box::new(Episode {
            gone_streak: 2,
            first_gone: from_millis(1_000),
            last_gone: from_millis(2_000),
            last_status: Some(404),
            purged_at: purged.then(|| from_millis(2_000)),
        }))
    }

    fn rec(verdict: Option<Verdict>, episode: Option<Box<Episode>>, candidate: u64) -> Rec {
        Rec {
            last_verdict: verdict,
            episode,
            candidate,
            candidate_streak: u32::from(candidate != 0),
            ..Rec::new(1_000, true)
        }
    }

    /// Only a plainly present source with no change pending, or a gone one
    /// already purged in its episode, has nothing left to do.
    #[test]
    fn a_record_is_pending_unless_settled_present_or_purged() {
        let present = Some(Verdict::Present);
        let gone = Some(Verdict::Gone);
        assert!(!rec(present, None, 0).pending());
        assert!(rec(present, None, 7).pending(), "a change to confirm");
        assert!(rec(None, None, 0).pending(), "never probed");
        assert!(rec(Some(Verdict::Inconclusive), None, 0).pending());
        assert!(rec(gone, episode(false), 0).pending(), "gone, not purged");
        assert!(!rec(gone, episode(true), 0).pending(), "gone and purged");
        assert!(rec(gone, episode(true), 7).pending());
        assert!(
            rec(present, episode(false), 0).pending(),
            "present, but its gone episode still open"
        );
    }

    #[test]
    fn unreferencing_a_source_notes_when_it_stopped_being_referenced() {
        let mut r = Rec::new(1_000, true);
        assert_eq!(r.unreferenced_since, None);
        r.set_referenced(false, 2_000);
        assert!(!r.referenced);
        assert_eq!(r.unreferenced_since, Some(2_000));
        // Still unreferenced later: the first time is kept.
        r.set_referenced(false, 3_000);
        assert_eq!(r.unreferenced_since, Some(2_000));
        r.set_referenced(true, 4_000);
        assert!(r.referenced);
        assert_eq!(r.unreferenced_since, None);

        // An unreferenced record without a time (as an older state may
        // hold) gets one.
        let mut r = Rec::new(1_000, false);
        r.unreferenced_since = None;
        r.set_referenced(false, 5_000);
        assert_eq!(r.unreferenced_since, Some(5_000));
        assert!(!r.referenced);
    }

    #[test]
    fn endpoints_have_their_names_and_paths() {
        assert_eq!(Endpoint::Delete.as_str(), "delete");
        assert_eq!(Endpoint::Invalidate.as_str(), "invalidate");
        assert_eq!(Endpoint::Delete.path(), crate::vercel::ENDPOINT_PATH);
        assert_eq!(Endpoint::Invalidate.path(), crate::vercel::INVALIDATE_PATH);
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::parse(e.as_str()), Some(e));
        }
        assert_eq!(Endpoint::parse("purge"), None);
        assert_eq!(Endpoint::parse(""), None);
    }

    fn listed(srcs: &[&str]) -> Vec<Arc<str>> {
        srcs.iter().map(|s| Arc::from(*s)).collect()
    }

    fn unreferenced(since: i64, verdict: Option<Verdict>) -> Rec {
        let mut r = Rec::new(since, false);
        r.last_verdict = verdict;
        r
    }

    /// Listed sources get their records in place, whatever order they are
    /// listed in; a stored source that is not listed is remembered, or
    /// forgotten when it has been unreferenced since before `forget_before`
    /// with nothing pending; another process's rows are left alone.
    #[test]
    fn merging_lines_stored_rows_up_with_the_listed_sources() {
        let present = Some(Verdict::Present);
        let srcs = listed(&["/d", "/b", "/f", "/h"]);
        let mut m = Merge::new(&srcs, 10_000);
        // Unlisted, referenced: remembered.
        m.row("/a", "pa", Rec::new(1, true), true);
        m.row("/b", "pb", Rec::new(2, true), true);
        // Unlisted, unreferenced long ago, nothing pending: forgotten.
        m.row("/c", "pc", unreferenced(9_999, present), true);
        m.row("/d", "pd", Rec::new(4, true), true);
        // Unreferenced exactly at `forget_before`: not yet long enough.
        m.row("/e", "pe", unreferenced(10_000, present), true);
        // Another process's row: neither remembered nor forgotten.
        m.row("/e2", "pe2", unreferenced(1, present), false);
        m.row("/e3", "pe3", Rec::new(1, true), false);
        // Unreferenced long ago but still pending: remembered.
        m.row("/g", "pg", unreferenced(1, Some(Verdict::Gone)), true);
        // Unreferenced recently: remembered.
        m.row("/g2", "pg2", unreferenced(20_000, present), true);
        // Referenced, settled, with an old unreferenced time: remembered.
        let mut odd = Rec::new(1, true);
        odd.last_verdict = present;
        odd.unreferenced_since = Some(1);
        m.row("/g3", "pg3", odd, true);
        m.row("/h", "ph", Rec::new(8, true), true);
        // After the last listed source.
        m.row("/z", "pz", Rec::new(9, true), true);

        let firsts: Vec<Option<i64>> = m
            .loaded
            .recs
            .iter()
            .map(|r| r.as_ref().map(|r| r.first_seen))
            .collect();
        assert_eq!(firsts, [Some(4), Some(2), None, Some(8)]);
        let remembered: Vec<(&str, &str)> = m
            .loaded
            .remembered
            .iter()
            .map(|(s, p, _)| (s.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            remembered,
            [
                ("/a", "pa"),
                ("/e", "pe"),
                ("/g", "pg"),
                ("/g2", "pg2"),
                ("/g3", "pg3"),
                ("/z", "pz")
            ]
        );
        assert_eq!(m.forget, ["/c"]);
    }
}
