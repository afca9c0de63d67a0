//! The PostgreSQL store shared by many processes, on a real server
//! (`ORIGIN_WATCH_TEST_PG`, see `.ci/postgres.sh`; each test has a schema
//! of its own): one owner per (watch, shard), `once` refused while another
//! process owns the watch, two `run` processes where exactly one purges and
//! the other takes over when it is killed, shards of an Indexed Job sharing
//! one database, and a database connection killed in the middle of a pass.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Harness, TOKEN};
use origin_watch::store::{self, Access, Ownership};
use serde_json::Value;
use testkit::fake_origin::Behavior;
use testkit::fake_vercel::FakeVercelConfig;

const BIN: &str = env!("CARGO_BIN_EXE_origin-watch");

async fn harness(routes: &[(&str, Behavior)], default: Behavior) -> Option<Harness> {
    Harness::on(Backend::Postgres, routes, default).await
}

fn binary(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("OW_TEST_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs the binary to its end: (code, stdout, stderr).
fn run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = binary(config, args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The holder row of a (watch, shard), as the owner wrote it.
async fn holder(h: &Harness, watch: &str, shard: &str) -> Option<String> {
    let client = common::pg_client(&h.state).await;
    client
        .query_opt(
            "SELECT holder FROM owners WHERE watch = $1 AND shard = $2",
            &[&watch, &shard],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

fn hostname() -> String {
    origin_watch::store::sqlite::hostname()
}

#[tokio::test(flavor = "multi_thread")]
async fn once_is_refused_while_another_process_owns_the_watch() {
    let Some(h) = harness(&[], Behavior::Status(404)).await else {
        return;
    };
    let config = h.config_file("defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: site, project: shop, origin: '{origin}', images: [/gone.png] }\n",
    );
    // This test process takes the watch, as a running sidecar would.
    let owner = store::open(h.location(), None, Access::Write)
        .await
        .unwrap();
    assert_eq!(owner.acquire("site").await.unwrap(), Ownership::Owned);

    let (code, out, err) = run(&config, &["once"], &[]);
    assert_eq!(code, Some(2), "{out}\n{err}");
    let me = format!("pid {} on {}", std::process::id(), hostname());
    assert!(err.contains(&me), "the owner is named: {err}");
    assert!(err.contains("site"), "the watch is named: {err}");
    assert!(
        !err.contains("ow-test-password"),
        "the password never shows: {err}"
    );
    assert!(h.api.calls().is_empty(), "nothing was purged");
    assert_eq!(h.origin.count("HEAD", "/gone.png"), 0, "nothing was probed");

    // The lock goes with its holder's connection.
    drop(owner);
    let started = Instant::now();
    loop {
        let (code, out, err) = run(&config, &["once"], &[]);
        if code == Some(0) {
            assert!(out.contains("1 purged"), "{out}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the lock was not released: {err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(h.api.purged(), ["/gone.png"]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /healthz` of a sidecar, as JSON.
async fn healthz(port: u16) -> Option<Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A `run` process that is killed when the test ends, however it ends.
struct Sidecar {
    child: Child,
    port: u16,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sidecar(config: &Path) -> Sidecar {
    let port = free_port();
    let child = binary(config, &["run", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start run");
    Sidecar { child, port }
}

/// Waits until `f` holds, up to `limit`.
async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut f: F) -> Duration {
    let started = Instant::now();
    loop {
        if f().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_run_processes_one_purges_and_the_other_takes_over_when_it_dies() {
    let Some(h) = harness(
        &[
            ("/a.png", Behavior::Status(404)),
            ("/keep.png", Behavior::Present),
        ],
        Behavior::Present,
    )
    .await
    else {
        return;
    };
    let config = h.config_file("defaults: { schedule: '* * * * * *', confirmations: 1, max_purge_fraction: 1.0, fraction_floor: 10 }\nwatches:\n  - { name: site, project: shop, origin: '{origin}', images: [/a.png, /b.png, /keep.png] }\n",
    );
    let mut first = Some(sidecar(&config));
    let mut second = Some(sidecar(&config));
    let ports = [first.as_ref().unwrap().port, second.as_ref().unwrap().port];

    // Exactly one purges /a.png; both keep running their schedules.
    eventually(Duration::from_secs(20), "the first purge", async || {
        h.api.purged() == ["/a.png"]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.api.calls().len(), 1, "one purge, by one process");

    // /healthz and /metrics say who owns it and who stands by.
    let mut roles = Vec::new();
    for port in ports {
        eventually(Duration::from_secs(5), "healthz", async || {
            healthz(port).await.is_some()
        })
        .await;
        let health = healthz(port).await.unwrap();
        assert_eq!(health["database"], "ok", "{health}");
        roles.push(
            health["watches"]["site"]["role"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    roles.sort();
    assert_eq!(roles, ["owner", "standby"]);
    let owner_index = if healthz(ports[0]).await.unwrap()["watches"]["site"]["role"] == "owner" {
        0
    } else {
        1
    };
    let standby_port = ports[1 - owner_index];
    let standby_health = healthz(standby_port).await.unwrap();
    let owner_pid = if owner_index == 0 {
        first.as_ref().unwrap().child.id()
    } else {
        second.as_ref().unwrap().child.id()
    };
    assert!(
        standby_health["watches"]["site"]["owner"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {owner_pid} ")),
        "{standby_health}"
    );
    assert!(
        metrics(standby_port)
            .await
            .contains("origin_watch_standby{watch=\"site\"} 1"),
        "the standby's metrics say so"
    );
    assert!(
        metrics(ports[owner_index])
            .await
            .contains("origin_watch_standby{watch=\"site\"} 0")
    );
    assert_eq!(
        holder(&h, "site", "").await.unwrap(),
        format!("pid {owner_pid} on {}", hostname())
    );

    // kill -9 the owner; the other takes over within one interval (1 s,
    // and a little for the fire) and purges the next gone image, but not
    // /a.png again: it is purged in this episode.
    let killed = if owner_index == 0 {
        first.take()
    } else {
        second.take()
    };
    drop(killed);
    h.origin.set("/b.png", Behavior::Status(410));
    let took = eventually(Duration::from_secs(10), "the takeover", async || {
        healthz(standby_port)
            .await
            .is_some_and(|v| v["watches"]["site"]["role"] == "owner")
    })
    .await;
    // One interval is 1 s; the rest is slack for a busy 2-core CI machine.
    assert!(took < Duration::from_secs(5), "took over in {took:?}");
    eventually(Duration::from_secs(10), "the second purge", async || {
        h.api.purged().contains(&"/b.png".to_owned())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut purged = h.api.purged();
    purged.sort();
    assert_eq!(
        purged,
        ["/a.png", "/b.png"],
        "no second purge of an episode"
    );
    assert_eq!(h.api.calls().len(), 2);
    drop((first, second));
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_of_an_indexed_job_share_one_database() {
    let images: Vec<String> = (0..12).map(|i| format!("/img/{i}.png")).collect();
    let Some(h) = harness(&[], Behavior::Status(404)).await else {
        return;
    };
    let config = h.config_file(&format!(
            "defaults: {{ confirmations: 1, max_purge_fraction: 1.0 }}\nwatches:\n  - {{ name: site, project: shop, origin: '{{origin}}', images: [{}] }}\n",
            images.join(", ")
        ),
    );
    // Two shards at once, each its own process, as an Indexed Job runs them.
    let reports: Vec<PathBuf> = (0..2)
        .map(|k| h.dir.path().join(format!("report-{k}.jsonl")))
        .collect();
    let children: Vec<_> = (0..2)
        .map(|k| {
            let report = reports[k].display().to_string();
            binary(&config, &["once", "--shards", "2", "--report", &report])
                .env("JOB_COMPLETION_INDEX", k.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut purged = h.api.purged();
    purged.sort();
    let mut want = images.clone();
    want.sort();
    assert_eq!(purged, want, "every source purged once, by one shard");
    // Each shard judged only its own sources (the other's are in the same
    // table, and are not "remembered" by it).
    let mut seen = Vec::new();
    for r in &reports {
        let text = std::fs::read_to_string(r).unwrap();
        let srcs: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["src"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(!srcs.is_empty() && srcs.len() < images.len(), "{srcs:?}");
        seen.extend(srcs);
    }
    seen.sort();
    assert_eq!(seen, want, "the shards split the sources exactly");
    assert_eq!(h.inventory().await.len(), images.len());
    assert!(holder(&h, "site", "0/2").await.is_some());
    assert!(holder(&h, "site", "1/2").await.is_some());

    // Again: every source is already purged in its episode.
    let calls = h.api.calls().len();
    for k in 0..2 {
        let (code, out, err) = run(
            &config,
            &["once", "--shards", "2"],
            &[("JOB_COMPLETION_INDEX", &k.to_string())],
        );
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("already purged"), "{out}");
    }
    assert_eq!(h.api.calls().len(), calls, "no call at all");
    let mut again = h.api.purged();
    again.sort();
    assert_eq!(again, want, "no second purge");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_connection_killed_mid_pass_loses_no_purge() {
    let Some(h) = harness(&[("/keep.png", Behavior::Present)], Behavior::Status(404)).await else {
        return;
    };
    // A name of its own, so the test kills only this pass's connections.
    let app = format!("ow_kill_{}", std::process::id());
    let h = Harness {
        state: format!("{}&application_name={app}", h.state),
        ..h
    };
    let c = h.config(
        "",
        "defaults: { confirmations: 1, max_purge_fraction: 1.0, fraction_floor: 10 }\nwatches:\n  - { name: site, project: shop, origin: '{origin}', images: [/keep.png, /gone.png] }\n",
    );
    // The API answers slowly, so the kill lands while the purge is in flight.
    let mut cfg = FakeVercelConfig::new(TOKEN);
    cfg.delay = Duration::from_millis(1500);
    h.api.set_config(cfg);

    let killer = {
        let (url, app) = (h.state.clone(), app.clone());
        tokio::spawn(async move {
            let client = common::pg_client(&url).await;
            let mut killed = 0;
            let started = Instant::now();
            // Kill each connection the pass holds, twice over the call.
            while started.elapsed() < Duration::from_millis(1300) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                killed += client
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE application_name = $1 AND pid <> pg_backend_pid()",
                        &[&app],
                    )
                    .await
                    .unwrap()
                    .len();
            }
            killed
        })
    };
    let ran = h.pass(&c).await;
    let killed = killer.await.unwrap();
    assert!(killed >= 1, "the test killed the pass's connections");
    assert_eq!(ran.decision("/gone.png"), "purge");
    assert_eq!(ran.outcome.exit(), origin_watch::exit::Exit::Ok);
    // The purge whose 200 came back is recorded, once.
    let store = store::open(h.location(), None, Access::Read).await.unwrap();
    let ledger = store.ledger(None).await.unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].status, Some(200));
    assert!(h.inventory().await[&("site".to_owned(), "/gone.png".to_owned())].purged);
    // And the next pass does not purge it again.
    h.api.set_config(FakeVercelConfig::new(TOKEN));
    let again = h.pass(&c).await;
    assert_eq!(again.decision("/gone.png"), "already_purged");
    assert_eq!(h.api.calls().len(), 1);
}
