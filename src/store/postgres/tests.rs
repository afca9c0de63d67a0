//! The PostgreSQL store on a real server (`ORIGIN_WATCH_TEST_PG`, see
//! `.ci/postgres.sh`; each test has a schema of its own): which errors are
//! retried and how, ownership, readers and dry runs, what a row reads back
//! as, the pool's size, and TLS. For TLS and for a database that goes away,
//! a front of the test's own stands before the server: it speaks TLS when
//! asked (a certificate made here), and can cut and refuse connections,
//! without disturbing the other tests on the shared server.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::store::contract::{self, call, full_row, history, read_only, row};
use crate::store::location::StateLocation;

const PG_ENV: &str = "ORIGIN_WATCH_TEST_PG";

/// The test server's URL. Unset: `None`, said loudly, and a failure under
/// `CI=true` (CI starts the server).
fn server_url() -> Option<String> {
    match std::env::var(PG_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{PG_ENV} is not set under CI=true: .ci/run starts PostgreSQL and must export it"
                );
            }
            eprintln!("\n!!! SKIPPED: this PostgreSQL test needs {PG_ENV} !!!\n");
            None
        }
    }
}

/// A plain connection to the test server.
async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test PostgreSQL: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// `url` with its query parameters set (added or replaced) and, when
/// given, another port.
fn url_with(url: &str, port: Option<u16>, params: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(url).unwrap();
    if let Some(port) = port {
        u.set_port(Some(port)).unwrap();
    }
    let mut pairs: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !params.iter().any(|(p, _)| p == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.to_string()
}

/// A schema of its own in the test server, and a connection that sees it.
struct Schema {
    url: String,
    name: String,
    admin: tokio_postgres::Client,
}

async fn schema() -> Option<Schema> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = server_url()?;
    let name = format!(
        "u_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        fastrand::u32(..)
    );
    let admin = client(&server).await;
    admin
        .batch_execute(&format!("CREATE SCHEMA {name}; SET search_path TO {name}"))
        .await
        .unwrap();
    Some(Schema {
        url: server,
        name,
        admin,
    })
}

impl Schema {
    /// The store's URL: this schema, and `params` (on the front's `port`).
    fn url(&self, port: Option<u16>, params: &[(&str, &str)]) -> String {
        let search_path = format!("-csearch_path={}", self.name);
        let mut all = vec![("options", search_path.as_str())];
        all.extend_from_slice(params);
        url_with(&self.url, port, &all)
    }

    fn location(&self, port: Option<u16>, params: &[(&str, &str)]) -> PgLocation {
        match StateLocation::parse(&self.url(port, params), std::path::Path::new("")).unwrap() {
            StateLocation::Postgres(pg) => pg,
            StateLocation::File(_) => unreachable!("a PostgreSQL URL"),
        }
    }

    fn plain(&self) -> PgLocation {
        self.location(None, &[])
    }

    /// The writer (migrated), as `open` makes it.
    async fn writer(&self, loc: &PgLocation) -> PostgresStore {
        let store = PostgresStore::connect(loc, Access::Write).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), store.migrate())
            .await
            .expect("migrating waited 20 s for a lock")
            .unwrap();
        store
    }

    /// How many tries [`FLAKY`] counted since the last [`Schema::flaky`].
    async fn tries(&self) -> i64 {
        self.admin
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tries",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Creates (or resets) the counter of tries and the functions that
    /// fail the first tries with a given SQLSTATE.
    async fn flaky(&self) {
        self.admin.batch_execute(FLAKY).await.unwrap();
        self.admin
            .batch_execute("ALTER SEQUENCE tries RESTART")
            .await
            .unwrap();
    }

    /// Makes every statement writing `table` fail with `code` on its
    /// first `fails` tries (counted by [`Schema::tries`]).
    async fn refuse(&self, table: &str, code: &str, fails: i64) {
        self.flaky().await;
        self.admin
            .batch_execute(&format!(
                "DROP TRIGGER IF EXISTS refuse ON {table};
                 CREATE TRIGGER refuse BEFORE INSERT ON {table}
                 FOR EACH STATEMENT EXECUTE FUNCTION flaky_statement('{code}', '{fails}')"
            ))
            .await
            .unwrap();
    }
}

/// `flaky(code, fails)` raises `code` while the counter `tries` is at most
/// `fails`; `flaky_statement` is the same as a trigger.
const FLAKY: &str = "
CREATE SEQUENCE IF NOT EXISTS tries;
CREATE OR REPLACE FUNCTION flaky(code text, fails bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint := nextval('tries');
BEGIN
    IF n <= fails THEN
        RAISE EXCEPTION 'flaky: try % of %', n, fails USING ERRCODE = code;
    END IF;
    RETURN n;
END $$;
CREATE OR REPLACE FUNCTION flaky_statement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flaky(TG_ARGV[0], TG_ARGV[1]::bigint);
    RETURN NULL;
END $$;
";

/// A query through the store's retry loop: `SELECT flaky(code, fails)`.
async fn flaky_query(store: &PostgresStore, code: &'static str, fails: i64) -> Result<i64> {
    let run = store.run("run a flaky query", move |c| {
        Box::pin(async move {
            Ok(c.query_one("SELECT flaky($1, $2)", &[&code, &fails])
                .await?
                .get(0))
        })
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("{code}: still retrying after 30 s"))
}

/// The errors worth another try: the connection's (class 08), the server
/// shutting down or starting (57P..), a lost race (40001, 40P01), too many
/// connections (53300). Each is retried, and the query is answered.
#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_until_the_query_is_answered() {
    let Some(s) = schema().await else { return };
    let store = s.writer(&s.plain()).await;
    for code in [
        "08006", "08001", "57P01", "57P03", "40001", "40P01", "53300",
    ] {
        s.flaky().await;
        let answered = flaky_query(&store, code, 2).await;
        assert_eq!(answered.ok(), Some(3), "{code}: the third try answers");
        assert_eq!(s.tries().await, 3, "{code}");
    }
}

/// Any other error is the query's own: reported at once, tried once, and
/// named with the store (no password) and what was being done.
#[tokio::test(flavor = "multi_thread")]
async fn other_errors_are_reported_at_once_without_a_retry() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let store = s.writer(&loc).await;
    // Neighbours of the transient codes included: a cancelled query
    // (57014), other classes 40 and 53.
    for code in [
        "42501", "23505", "22012", "57014", "40002", "53100", "XX000",
    ] {
        s.flaky().await;
        let err = flaky_query(&store, code, 100)
            .await
            .expect_err("a permanent error");
        assert_eq!(s.tries().await, 1, "{code}: tried once");
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Query { .. }), "{code}: {msg}");
        assert!(msg.contains("run a flaky query"), "{msg}");
        assert!(msg.contains("flaky: try 1 of 100"), "{msg}");
        assert!(msg.contains(loc.shown()), "{msg}");
        assert!(!msg.contains("ow-test-password"), "{msg}");
    }
}

/// Tries back off from 50 ms, doubling (with up to a quarter more), and
/// the log says once that the database cannot be reached, and once that
/// it is back.
#[tokio::test(flavor = "multi_thread")]
async fn retries_back_off_and_are_logged_once() {
    let Some(s) = schema().await else { return };
    let store = s.writer(&s.plain()).await;
    s.flaky().await;
    let log = global_log();
    let started = Instant::now();
    let answered = flaky_query(&store, "40001", 5).await;
    let took = started.elapsed();
    assert_eq!(answered.ok(), Some(6));
    assert!(
        took >= Duration::from_millis(50 + 100 + 200 + 400 + 800),
        "five waits from 50 ms, doubling: {took:?}"
    );
    // This test's lines: they name its schema.
    let text = log.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(&s.name)).collect();
    let count = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
    assert_eq!(
        count("WARN origin_watch::store::postgres: the database cannot be reached; retrying"),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        count("INFO origin_watch::store::postgres: the database is back"),
        1,
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.contains("ow-test-password")));
}

/// Every test's log, in memory: this test binary's global subscriber (a
/// subscriber of one test's thread is not reliably asked for events whose
/// callsites other tests' threads met first).
fn global_log() -> &'static Log {
    static LOG: std::sync::OnceLock<Log> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in the library's tests");
        log
    })
}

/// A log captured in memory.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

#[test]
fn a_retry_waits_its_wait_and_up_to_a_quarter_more() {
    let wait = Duration::from_millis(400);
    let waits: Vec<Duration> = (0..1000).map(|_| jittered(wait)).collect();
    for w in &waits {
        assert!(
            (wait..=Duration::from_millis(500)).contains(w),
            "{w:?} for {wait:?}"
        );
    }
    assert!(
        waits.iter().any(|w| *w >= Duration::from_millis(480))
            && waits.iter().any(|w| *w <= Duration::from_millis(420)),
        "spread over the quarter"
    );
}

/// A connection the server ends in the middle of a write (a restart, an
/// administrator) is replaced, and the write lands, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_connection_is_killed_is_retried_and_lands_once() {
    let Some(s) = schema().await else { return };
    let app = format!("ow_kill_{}", s.name);
    let store = Arc::new(
        s.writer(&s.location(None, &[("application_name", &app)]))
            .await,
    );
    // Hold the write up until its connection is killed.
    s.admin
        .batch_execute("BEGIN; LOCK TABLE history IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let write = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write(
                    "w",
                    vec![row(1)],
                    vec![history(&row(1).src, 5, Decision::Pending, "gone once")],
                )
                .await
        })
    };
    let waiting =
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'";
    let started = Instant::now();
    let pid: i32 = loop {
        if let Some(r) = s.admin.query_opt(waiting, &[&app]).await.unwrap() {
            break r.get(0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the write never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed: bool = s
        .admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    s.admin.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("the write ends")
        .unwrap()
        .expect("the write was retried and landed");
    let rows = store.show(Some("w"), &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(store.history("w", &row(1).src).await.unwrap().len(), 1);
}

/// A write that the database refuses for good (here a trigger standing
/// for a permission or a constraint) fails at once, is tried once, and
/// leaves nothing behind: a pass's statement is all or nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_database_refuses_fails_at_once_and_writes_nothing() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let store = s.writer(&loc).await;
    s.refuse("history", "42501", 100).await;
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        store.write(
            "w",
            vec![row(1), row(2)],
            vec![history(&row(1).src, 5, Decision::Pending, "gone once")],
        ),
    )
    .await
    .expect("not retried")
    .expect_err("refused");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(s.tries().await, 1, "one statement, not retried");
    let msg = err.to_string();
    assert!(msg.contains("write a pass's changes"), "{msg}");
    assert!(msg.contains(loc.shown()), "{msg}");
    assert!(store.show(None, &[]).await.unwrap().is_empty());
}

/// The pool holds a connection for each row write and call record a pass
/// keeps in flight (none waits for another's), and no more: a shared
/// server's connections are counted.
#[tokio::test(flavor = "multi_thread")]
async fn the_pool_opens_a_connection_per_write_and_record_in_flight_and_no_more() {
    let Some(s) = schema().await else { return };
    let app = format!("ow_pool_{}", s.name);
    let store = Arc::new(
        s.writer(&s.location(None, &[("application_name", &app)]))
            .await,
    );
    // Each query waits for a lock the test holds, keeping its connection.
    let key = fastrand::i64(..);
    s.admin
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .unwrap();
    let queries: Vec<_> = (0..40)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .run("wait for the test", move |c| {
                        Box::pin(async move {
                            c.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&key])
                                .await?;
                            Ok(())
                        })
                    })
                    .await
            })
        })
        .collect();
    let want = (super::super::WRITES_IN_FLIGHT + super::super::RECORDS_IN_FLIGHT) as i64;
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event = 'advisory'";
    let count = async || -> i64 { s.admin.query_one(waiting, &[&app]).await.unwrap().get(0) };
    let started = Instant::now();
    // Generous: on a loaded machine, 18 password handshakes of a debug
    // build take a while.
    while count().await < want {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {} connections",
            count().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count().await,
        want,
        "the other queries wait for a connection"
    );
    s.admin
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .unwrap();
    for q in queries {
        q.await.unwrap().unwrap();
    }
}

/// Who owns what: each (watch, shard) has a lock of its own, per schema; a
/// second process is told who holds one; starting a writer never waits for
/// a watch's owner.
#[tokio::test(flavor = "multi_thread")]
async fn each_watch_and_shard_has_a_lock_of_its_own() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let a = s.writer(&loc).await;
    let b = s.writer(&loc).await;
    let me = format!("pid {} on {}", std::process::id(), sqlite::hostname());
    assert_eq!(a.acquire("one").await.unwrap(), Ownership::Owned);
    assert_eq!(a.acquire("one").await.unwrap(), Ownership::Owned, "still");
    assert_eq!(
        b.acquire("one").await.unwrap(),
        Ownership::Standby { owner: me.clone() }
    );
    assert_eq!(b.acquire("two").await.unwrap(), Ownership::Owned);
    // Shards of one watch are owned apart.
    let shard = |index| {
        let mut l = loc.clone();
        l.shard = Some(Shard::new(index, 2).unwrap());
        l
    };
    let (s0, s1) = (s.writer(&shard(0)).await, s.writer(&shard(1)).await);
    assert_eq!(s0.acquire("one").await.unwrap(), Ownership::Owned);
    assert_eq!(s1.acquire("one").await.unwrap(), Ownership::Owned);
    let again = s.writer(&shard(1)).await;
    assert!(matches!(
        again.acquire("one").await.unwrap(),
        Ownership::Standby { .. }
    ));
    let owners: Vec<(String, String, String)> = s
        .admin
        .query(
            "SELECT watch, shard, holder FROM owners ORDER BY watch, shard",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let o = |w: &str, sh: &str| (w.to_owned(), sh.to_owned(), me.clone());
    assert_eq!(
        owners,
        [o("one", ""), o("one", "0/2"), o("one", "1/2"), o("two", "")]
    );
    // Another schema is another store.
    let Some(other) = schema().await else { return };
    let c = other.writer(&other.plain()).await;
    assert_eq!(c.acquire("one").await.unwrap(), Ownership::Owned);
    // A writer starting (migrating) while watches are owned.
    tokio::time::timeout(Duration::from_secs(20), s.writer(&loc))
        .await
        .expect("migrating waits for no owner");
}

/// When the ownership connection is lost, so are its locks: the next
/// `acquire` takes the watch again for real, so a second process cannot
/// take it too.
#[tokio::test(flavor = "multi_thread")]
async fn ownership_lost_with_its_connection_is_taken_again() {
    let Some(s) = schema().await else { return };
    let app = format!("ow_own_{}", s.name);
    let loc = s.location(None, &[("application_name", &app)]);
    let a = s.writer(&loc).await;
    assert_eq!(a.acquire("site").await.unwrap(), Ownership::Owned);
    let killed = s
        .admin
        .query(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
             JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 1, "one ownership connection");
    let started = Instant::now();
    while !a
        .owner
        .lock()
        .await
        .client
        .as_ref()
        .is_some_and(|c| c.is_closed())
    {
        assert!(started.elapsed() < Duration::from_secs(10), "never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.acquire("site").await.unwrap(), Ownership::Owned);
    let b = s.writer(&s.plain()).await;
    assert!(
        matches!(b.acquire("site").await.unwrap(), Ownership::Standby { .. }),
        "the lock was taken again"
    );
}

/// Taking ownership retries what may pass (backing off from 100 ms,
/// doubling) and reports at once what will not.
#[tokio::test(flavor = "multi_thread")]
async fn taking_ownership_retries_transient_errors_only() {
    let Some(s) = schema().await else { return };
    let store = s.writer(&s.plain()).await;
    s.refuse("owners", "40001", 4).await;
    let started = Instant::now();
    assert_eq!(store.acquire("site").await.unwrap(), Ownership::Owned);
    let took = started.elapsed();
    assert_eq!(s.tries().await, 5);
    assert!(
        took >= Duration::from_millis(100 + 200 + 400 + 800),
        "four waits from 100 ms, doubling: {took:?}"
    );

    s.refuse("owners", "42501", 100).await;
    let err = tokio::time::timeout(Duration::from_secs(30), store.acquire("other"))
        .await
        .expect("not retried for long")
        .expect_err("refused");
    assert_eq!(s.tries().await, 1, "tried once");
    assert!(
        err.to_string().contains("take ownership of a watch"),
        "{err}"
    );
}

/// A schema written by a newer build is refused, and left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_schema_is_refused_and_left_alone() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    s.writer(&loc).await;
    s.admin
        .batch_execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        .await
        .unwrap();
    match open(&loc, Access::Write).await {
        Err(StoreError::Version { found, known, .. }) => {
            assert_eq!((found, known), (2, SCHEMA_VERSION));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
    let value: String = s
        .admin
        .query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(value, "2");
    // The current version opens, again and again.
    s.admin
        .batch_execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        .await
        .unwrap();
    open(&loc, Access::Write).await.unwrap();
    open(&loc, Access::Write).await.unwrap();
}

/// A reader writes nothing; it reads what the writer wrote, even what the
/// writer wrote after it opened.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_refuses_every_write_and_reads_everything() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let writer = s.writer(&loc).await;
    assert!(writer.writable());
    let store = open(&loc, Access::Read).await.unwrap();
    assert!(!store.writable());
    let src = row(1).src.to_string();
    writer
        .write(
            "w",
            vec![row(1)],
            vec![history(&src, 5, Decision::Pending, "gone once")],
        )
        .await
        .unwrap();
    writer
        .record_call(call(7, Endpoint::Delete, &[&src], 200), Vec::new())
        .await
        .unwrap();
    read_only(store.acquire("w").await, "acquire");
    read_only(store.write("w", vec![row(2)], Vec::new()).await, "write");
    read_only(store.pass_done("w", 5).await, "pass_done");
    read_only(
        store
            .discovered("w", vec![("/a".into(), "p".into(), "page".into())], 5, true)
            .await,
        "discovered",
    );
    read_only(
        store.forget("w", std::slice::from_ref(&src)).await,
        "forget",
    );
    read_only(
        store
            .record_call(call(9, Endpoint::Delete, &["/a"], 200), Vec::new())
            .await,
        "record_call",
    );
    assert_eq!(store.show(None, &[]).await.unwrap().len(), 1);
    assert_eq!(store.ledger(None).await.unwrap().len(), 1);
    assert_eq!(store.calls_for(&src).await.unwrap().len(), 1);
    assert_eq!(store.history("w", &src).await.unwrap().len(), 1);
    let dry = open(&loc, Access::DryRun).await.unwrap();
    read_only(
        dry.forget("w", std::slice::from_ref(&src)).await,
        "dry forget",
    );
    assert_eq!(writer.forget("w", &[src]).await.unwrap(), 1);
}

/// With no schema yet, readers and dry runs read an empty store and
/// create nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_database_reads_as_empty_and_is_not_created() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let reader = open(&loc, Access::Read).await.unwrap();
    assert!(reader.show(None, &[]).await.unwrap().is_empty());
    assert!(reader.ledger(None).await.unwrap().is_empty());
    assert!(reader.calls_for("/a.png").await.unwrap().is_empty());
    assert!(reader.history("w", "/a.png").await.unwrap().is_empty());
    let dry = open(&loc, Access::DryRun).await.unwrap();
    dry.write("w", vec![row(1)], Vec::new()).await.unwrap();
    assert_eq!(dry.show(None, &[]).await.unwrap().len(), 1);
    let tables: i64 = s
        .admin
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&s.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
}

/// What a pass writes reads back the same: the record a pass loads, the
/// row `state show` prints, the history.
#[tokio::test(flavor = "multi_thread")]
async fn a_row_reads_back_as_it_was_written() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let store = s.writer(&loc).await;
    assert_eq!(store.describe(), loc.shown());
    assert!(!store.describe().contains("ow-test-password"));
    contract::a_row_reads_back_as_it_was_written(&store).await;
}

/// The stored validators and the candidate are replaced only by writes
/// that carry them; a source written twice in one batch keeps the last.
#[tokio::test(flavor = "multi_thread")]
async fn validators_and_candidates_change_only_when_written() {
    let Some(s) = schema().await else { return };
    let store = s.writer(&s.plain()).await;
    let w = full_row();
    let (stored, candidate) = (
        w.validators.clone().unwrap(),
        w.candidate.clone().unwrap().unwrap(),
    );
    store.write("w", vec![w.clone()], Vec::new()).await.unwrap();
    let read = async |want_v: &Validators, want_c: u64| {
        let shown = store.show(Some("w"), &[]).await.unwrap();
        let r = &shown[0];
        assert_eq!(
            (&r.etag, &r.last_modified, r.content_length),
            (&want_v.etag, &want_v.last_modified, want_v.length)
        );
        let loaded = store
            .load("w", Arc::new(vec![w.src.clone()]), 0)
            .await
            .unwrap();
        let rec = loaded.recs[0].clone().unwrap();
        assert_eq!(rec.candidate, want_c, "the stored candidate");
        rec
    };
    read(&stored, candidate.identity()).await;

    // Neither carried: both kept, the rest written.
    let mut next = w.clone();
    next.validators = None;
    next.candidate = None;
    next.seen_in = None;
    next.rec.last_status = Some(410);
    store
        .write("w", vec![next.clone()], Vec::new())
        .await
        .unwrap();
    let rec = read(&stored, candidate.identity()).await;
    assert_eq!(rec.last_status, Some(410));

    // New validators only.
    let newer = Validators {
        etag: Some("\"n\"".into()),
        last_modified: None,
        length: Some(9),
    };
    let mut v_only = next.clone();
    v_only.validators = Some(newer.clone());
    store.write("w", vec![v_only], Vec::new()).await.unwrap();
    read(&newer, candidate.identity()).await;

    // The candidate only: cleared.
    let mut c_only = next.clone();
    c_only.candidate = Some(None);
    store.write("w", vec![c_only], Vec::new()).await.unwrap();
    read(&newer, 0).await;

    // Both, twice in one batch: the last write counts.
    let mut first = next.clone();
    first.validators = Some(stored.clone());
    first.candidate = Some(Some(newer.clone()));
    let mut last = first.clone();
    last.validators = Some(Validators {
        etag: Some("\"last\"".into()),
        last_modified: None,
        length: None,
    });
    last.candidate = Some(Some(stored.clone()));
    store
        .write("w", vec![first, last.clone()], Vec::new())
        .await
        .unwrap();
    read(last.validators.as_ref().unwrap(), stored.identity()).await;
}

/// A row taken for new that is already stored is written again as an
/// upsert, with its history; a call's effects are upserts, whatever
/// they say about where the source was first seen.
#[tokio::test(flavor = "multi_thread")]
async fn rows_taken_for_new_that_are_stored_are_updated() {
    let Some(s) = schema().await else { return };
    let store = s.writer(&s.plain()).await;
    store.write("w", vec![row(1)], Vec::new()).await.unwrap();
    let mut again = row(1);
    again.rec.last_status = Some(404);
    store
        .write(
            "w",
            vec![again.clone(), row(2)],
            vec![history(&again.src, 9, Decision::Pending, "gone once")],
        )
        .await
        .unwrap();
    let shown = store.show(Some("w"), &[]).await.unwrap();
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[0].last_status, Some(404));
    assert_eq!(store.history("w", &again.src).await.unwrap().len(), 1);

    let mut purged = row(2);
    purged.rec.last_decision = Some(Decision::Purge);
    store
        .record_call(
            call(10, Endpoint::Delete, &[&purged.src], 200),
            vec![("w".into(), purged)],
        )
        .await
        .unwrap();
    let shown = store.show(Some("w"), &[]).await.unwrap();
    assert_eq!(shown[1].last_decision, Some(Decision::Purge));
    assert_eq!(store.ledger(None).await.unwrap().len(), 1);
}

/// Calls, discoveries and passes read back as written.
#[tokio::test(flavor = "multi_thread")]
async fn calls_discoveries_and_passes_read_back() {
    let Some(s) = schema().await else { return };
    let store = s.writer(&s.plain()).await;
    contract::calls_discoveries_and_passes_read_back(&store).await;
}

/// `state forget` counts what was there, only for the watch's owner.
#[tokio::test(flavor = "multi_thread")]
async fn forgetting_counts_the_sources_that_were_there() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let store = s.writer(&loc).await;
    contract::forgetting_counts_the_sources_that_were_there(&store).await;
    let second = s.writer(&loc).await;
    match second.forget("w", &[row(2).src.to_string()]).await {
        Err(StoreError::Owned { watch, .. }) => assert_eq!(watch, "w"),
        other => panic!("{other:?}"),
    }
}

/// A source unreferenced since before `forget_before` with nothing
/// pending is forgotten by the writer's load; a reader's load counts it
/// but leaves the database alone.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_writer_deletes_what_a_load_forgets() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let writer = s.writer(&loc).await;
    let reader = open(&loc, Access::Read).await.unwrap();
    contract::only_the_writer_deletes_what_a_load_forgets(&writer, &*reader).await;
}

/// A dry run copies what a pass reads (its shard's sources only) and
/// writes into the copy; the database keeps what it had.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_copies_what_a_pass_reads_and_the_database_stays_as_it_was() {
    let Some(s) = schema().await else { return };
    let loc = s.plain();
    let writer = s.writer(&loc).await;
    let mut rows: Vec<RowWrite> = (0..12).map(row).collect();
    rows[0] = RowWrite {
        src: rows[0].src.clone(),
        probe: rows[0].probe.clone(),
        ..full_row()
    };
    rows[3].rec = Rec::new(1_000, false);
    writer
        .write(
            "w",
            rows.clone(),
            vec![history(&rows[0].src, 5, Decision::Purge, "gone")],
        )
        .await
        .unwrap();
    let srcs: Vec<&str> = rows.iter().map(|r| &*r.src).collect();
    writer
        .record_call(call(7, Endpoint::Delete, &srcs, 200), Vec::new())
        .await
        .unwrap();
    writer.pass_done("w", 1_700_000_500_000).await.unwrap();

    let dry = open(&loc, Access::DryRun).await.unwrap();
    let before = format!("{:?}", writer.show(None, &[]).await.unwrap());
    assert_eq!(format!("{:?}", dry.show(None, &[]).await.unwrap()), before);
    assert_eq!(
        format!("{:?}", dry.ledger(None).await.unwrap()),
        format!("{:?}", writer.ledger(None).await.unwrap())
    );
    assert_eq!(dry.calls_for(&rows[1].src).await.unwrap().len(), 1);
    dry.write("w", vec![row(20)], Vec::new()).await.unwrap();
    dry.pass_done("w", 1_700_000_600_000).await.unwrap();
    assert_eq!(dry.show(None, &[]).await.unwrap().len(), 13);
    assert_eq!(
        format!("{:?}", writer.show(None, &[]).await.unwrap()),
        before
    );

    // A shard's copy, and a shard's recent calls, hold its own sources.
    for index in 0..2 {
        let shard = Shard::new(index, 2).unwrap();
        let mut l = loc.clone();
        l.shard = Some(shard);
        let mine: Vec<String> = rows
            .iter()
            .filter(|r| shard.owns(&r.probe))
            .map(|r| r.src.to_string())
            .collect();
        assert!(!mine.is_empty() && mine.len() < rows.len(), "{mine:?}");
        let dry = open(&l, Access::DryRun).await.unwrap();
        let copied: Vec<String> = dry
            .show(None, &[])
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.src)
            .collect();
        assert_eq!(copied, mine, "shard {shard}");
        let sharded = s.writer(&l).await;
        let mut recent = sharded
            .recently_called("w", Endpoint::Delete, 0)
            .await
            .unwrap();
        recent.sort();
        assert_eq!(recent, mine, "shard {shard}");
    }
}

// ---------------------------------------------------------------------------
// A front for the server: TLS, and a database that goes away.

/// A TCP front on a port of its own for the test server. A client asking
/// for TLS (PostgreSQL's SSLRequest) gets it with `tls`'s certificate (or
/// is told no, without one); a plain startup is passed through. Taken
/// down, it cuts every connection and refuses new ones.
struct Front {
    port: u16,
    /// Per connection, in order: whether it spoke TLS.
    seen: Arc<Mutex<Vec<bool>>>,
    down: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    pipes: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.accept.abort();
        for p in self.pipes.lock().unwrap().drain(..) {
            p.abort();
        }
    }
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl Front {
    async fn start(server: &str, tls: Option<rustls::ServerConfig>) -> Front {
        let u = url::Url::parse(server).unwrap();
        let upstream: SocketAddr = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let pipes = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (seen, down, accepted, pipes) =
                (seen.clone(), down.clone(), accepted.clone(), pipes.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if down.load(Ordering::SeqCst) {
                        drop(sock);
                        continue;
                    }
                    let (tls, seen) = (tls.clone(), seen.clone());
                    let pipe = tokio::spawn(async move {
                        let _ = pipe(sock, upstream, tls, seen).await;
                    });
                    pipes.lock().unwrap().push(pipe.abort_handle());
                }
            })
        };
        Front {
            port,
            seen,
            down,
            accepted,
            pipes,
            accept,
        }
    }

    fn take_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        for p in self.pipes.lock().unwrap().drain(..) {
            p.abort();
        }
    }

    fn bring_up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<bool> {
        self.seen.lock().unwrap().clone()
    }
}

async fn pipe(
    mut sock: TcpStream,
    upstream: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    seen: Arc<Mutex<Vec<bool>>>,
) -> std::io::Result<()> {
    let mut head = [0u8; 8];
    sock.read_exact(&mut head).await?;
    let mut up = TcpStream::connect(upstream).await?;
    if head != SSL_REQUEST {
        seen.lock().unwrap().push(false);
        up.write_all(&head).await?;
        tokio::io::copy_bidirectional(&mut sock, &mut up).await?;
        return Ok(());
    }
    match tls {
        Some(acceptor) => {
            sock.write_all(b"S").await?;
            let mut tls = acceptor.accept(sock).await?;
            seen.lock().unwrap().push(true);
            tokio::io::copy_bidirectional(&mut tls, &mut up).await?;
        }
        None => {
            sock.write_all(b"N").await?;
            seen.lock().unwrap().push(false);
            tokio::io::copy_bidirectional(&mut sock, &mut up).await?;
        }
    }
    Ok(())
}

/// `verify-ca` and `verify-full` reach the database over TLS, trusting the
/// bundle `sslrootcert` names; `disable` stays plain; a certificate that
/// nothing vouches for is refused.
#[tokio::test(flavor = "multi_thread")]
async fn tls_to_the_database_trusts_the_urls_sslrootcert() {
    let Some(s) = schema().await else { return };
    let Some(server) = server_url() else { return };
    let (ca_pem, server_config) =
        testkit::tls::ca_and_server("origin-watch test database CA", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("db-ca.pem");
    std::fs::File::create(&ca)
        .unwrap()
        .write_all(ca_pem.as_bytes())
        .unwrap();
    let ca = ca.display().to_string();
    let front = Front::start(&server, Some(server_config)).await;
    for mode in ["verify-full", "verify-ca", "require"] {
        let loc = s.location(Some(front.port), &[("sslmode", mode), ("sslrootcert", &ca)]);
        let before = front.seen().len();
        let store = open(&loc, Access::Write)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        store.write("w", vec![row(1)], Vec::new()).await.unwrap();
        assert_eq!(store.show(None, &[]).await.unwrap().len(), 1);
        let seen = front.seen();
        assert!(seen.len() > before, "{mode}: through the front");
        assert!(seen[before..].iter().all(|&t| t), "{mode}: all over TLS");
    }
    let loc = s.location(
        Some(front.port),
        &[("sslmode", "disable"), ("sslrootcert", &ca)],
    );
    let before = front.seen().len();
    let store = open(&loc, Access::Read).await.unwrap();
    assert_eq!(store.show(None, &[]).await.unwrap().len(), 1);
    let seen = front.seen();
    assert!(
        seen.len() > before && seen[before..].iter().all(|&t| !t),
        "disable: plain"
    );
    // Without the bundle, the certificate is not trusted.
    for mode in ["verify-full", "require"] {
        let loc = s.location(Some(front.port), &[("sslmode", mode)]);
        match open(&loc, Access::Read).await {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("cannot open state store"), "{msg}");
                assert!(!msg.contains("ow-test-password"), "{msg}");
            }
            Ok(_) => panic!("{mode}: an unknown certificate was trusted"),
        }
    }
}

/// A database that goes away: the health check says so, and a write
/// waits for it (backing off) and lands once it is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_goes_away_is_waited_for() {
    let Some(s) = schema().await else { return };
    let Some(server) = server_url() else { return };
    let front = Front::start(&server, None).await;
    let store = Arc::new(s.writer(&s.location(Some(front.port), &[])).await);
    store.health().await.unwrap();
    front.take_down();
    assert!(store.health().await.is_err(), "down");
    let before = front.accepted.load(Ordering::SeqCst);
    let write = {
        let store = store.clone();
        tokio::spawn(async move { store.write("w", vec![row(1)], Vec::new()).await })
    };
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let tries = front.accepted.load(Ordering::SeqCst) - before;
    // Tries at about 0, 50, 150, 350, 750 and 1550 ms (and up to a
    // quarter more each wait).
    assert!((3..=7).contains(&tries), "{tries} tries in 1.6 s");
    front.bring_up();
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("the write ends")
        .unwrap()
        .expect("the write landed");
    store.health().await.unwrap();
    assert_eq!(store.show(None, &[]).await.unwrap().len(), 1);
}
