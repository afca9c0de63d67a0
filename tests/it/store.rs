//! The state store over loopback, on a real SQLite file and on a real
//! PostgreSQL server (`ORIGIN_WATCH_TEST_PG`, a schema of its own per
//! test): history rows only on changes, a ledger row per call with
//! Vercel's `x-vercel-id`, `explain`, the `state` commands, dry runs that
//! write nothing; for SQLite also the version 1 migration and the single
//! writer (through symlinks and hard links too).

use crate::common;

/// Runs `$name(Backend)` as two tests, `$name::sqlite` and `$name::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name(super::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name(super::common::Backend::Postgres).await
            }
        }
    )*};
}

on_both!(
    history_has_a_row_only_when_a_decision_changes,
    every_call_is_in_the_ledger_with_its_x_vercel_id,
    state_commands_and_explain_tell_the_story,
    a_dry_run_never_writes_the_store,
    a_row_written_as_new_that_is_already_stored_is_updated,
);

use std::path::Path;
use std::process::Command;

use common::{Backend, Harness, TOKEN};
use origin_watch::config::Config;
use origin_watch::store::{self, Access, StoreError};
use serde_json::Value;
use testkit::fake_origin::Behavior;

const BIN: &str = env!("CARGO_BIN_EXE_origin-watch");

const TWO: &str = "
defaults: { confirmations: 2, max_purge_fraction: 1.0 }
watches:
  - { name: site, project: shop, origin: '{origin}', images: [/present.png, /gone.png] }
";

async fn two() -> Harness {
    on(Backend::Sqlite).await.unwrap()
}

/// The two-image harness on `backend` (`None`: PostgreSQL not available).
async fn on(backend: Backend) -> Option<Harness> {
    Harness::on(
        backend,
        &[("/present.png", Behavior::Present)],
        Behavior::Status(404),
    )
    .await
}

/// Runs the binary with the harness's config file; returns (code, stdout, stderr).
fn run(h: &Harness, config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("OW_TEST_TOKEN", TOKEN)
        .env_remove("RUST_LOG")
        .current_dir(h.dir.path())
        .output()
        .expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn history_has_a_row_only_when_a_decision_changes(backend: Backend) {
    let Some(h) = on(backend).await else { return };
    let c = h.config("", TWO);
    for _ in 0..4 {
        h.pass(&c).await;
    }
    let store = store::open(h.location(), None, Access::Read).await.unwrap();
    let present = store.history("site", "/present.png").await.unwrap();
    assert_eq!(present.len(), 1, "four keeps are one row: {present:?}");
    let gone: Vec<&str> = store
        .history("site", "/gone.png")
        .await
        .unwrap()
        .iter()
        .map(|h| h.decision.as_str())
        .collect();
    assert_eq!(gone, ["pending", "purge", "already_purged"]);
}

/// A row with `seen_in` is one the pass found no stored row for; the
/// PostgreSQL store inserts those plainly. Should one be stored after all,
/// the batch is written again as upserts: the last write wins, with its
/// history, and nothing is lost.
async fn a_row_written_as_new_that_is_already_stored_is_updated(backend: Backend) {
    use origin_watch::policy::Decision;
    use origin_watch::store::{HistoryRow, Rec, RowWrite};
    let Some(h) = on(backend).await else { return };
    let store = store::open(h.location(), None, Access::Write)
        .await
        .unwrap();
    let write = |status: u16, at: i64| {
        let mut rec = Rec::new(at, true);
        rec.last_status = Some(status);
        let row = RowWrite {
            src: "/x.png".into(),
            probe: "https://origin.example/x.png".into(),
            rec,
            validators: None,
            candidate: None,
            seen_in: Some("config".into()),
        };
        let history = HistoryRow {
            at,
            time: String::new(),
            src: "/x.png".into(),
            decision: if status == 200 {
                Decision::Keep
            } else {
                Decision::Pending
            },
            status: Some(status),
            reason: format!("answered {status}"),
        };
        // A second row in the batch, new for real, must be written too.
        let mut other = row.clone();
        other.src = format!("/y{at}.png").into();
        store.write("site", vec![row, other], vec![history])
    };
    write(200, 1_000).await.unwrap();
    write(404, 2_000).await.unwrap();
    let rows = store.show(Some("site"), &[]).await.unwrap();
    let srcs: Vec<&str> = rows.iter().map(|r| r.src.as_str()).collect();
    assert_eq!(srcs, ["/x.png", "/y1000.png", "/y2000.png"]);
    assert_eq!(rows[0].last_status, Some(404), "the last write wins");
    let history: Vec<Option<u16>> = store
        .history("site", "/x.png")
        .await
        .unwrap()
        .iter()
        .map(|h| h.status)
        .collect();
    assert_eq!(history, [Some(200), Some(404)]);
}

async fn every_call_is_in_the_ledger_with_its_x_vercel_id(backend: Backend) {
    let Some(h) = on(backend).await else { return };
    let c = h.config("", TWO);
    h.pass(&c).await;
    h.pass(&c).await;
    // A refused call is recorded too.
    h.origin.set("/present.png", Behavior::Status(404));
    h.pass_with(&c, false, "wrong-token").await;
    h.pass_with(&c, false, "wrong-token").await;

    let calls = h.api.calls();
    let store = store::open(h.location(), None, Access::Read).await.unwrap();
    let ledger = store.ledger(None).await.unwrap();
    assert_eq!(ledger.len(), calls.len(), "{ledger:?}");
    assert_eq!(ledger.len(), 2);
    let (ok, refused) = (&ledger[0], &ledger[1]);
    assert_eq!(ok.status, Some(200));
    assert_eq!(ok.src_images, ["/gone.png"]);
    assert_eq!(ok.vercel_id.as_deref(), Some(calls[0].vercel_id.as_str()));
    assert_eq!(ok.project, "shop");
    assert_eq!(ok.attempts, 1);
    assert!(ok.error.is_none());
    assert_eq!(refused.status, Some(401));
    assert_eq!(refused.src_images, ["/present.png"]);
    assert_eq!(
        refused.vercel_id.as_deref(),
        Some(calls[1].vercel_id.as_str())
    );
    assert!(
        refused.error.as_deref().unwrap().contains("401"),
        "{refused:?}"
    );
    // The refused source was not marked purged.
    let inventory = h.inventory().await;
    assert!(!inventory[&("site".to_owned(), "/present.png".to_owned())].purged);
    assert!(inventory[&("site".to_owned(), "/gone.png".to_owned())].purged);
}

async fn state_commands_and_explain_tell_the_story(backend: Backend) {
    let Some(h) = on(backend).await else { return };
    let config = h.config_file(TWO);
    for _ in 0..3 {
        let (code, _, err) = run(&h, &config, &["once"]);
        assert_eq!(code, Some(0), "{err}");
    }
    assert_eq!(h.api.calls().len(), 1);
    let vercel_id = h.api.calls()[0].vercel_id.clone();

    let (code, out, err) = run(&h, &config, &["state", "show"]);
    assert_eq!(code, Some(0), "{err}");
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2, "{out}");
    for key in [
        "watch",
        "src",
        "probe",
        "referenced",
        "last_verdict",
        "last_status",
        "gone_streak",
        "purged",
        "etag",
        "content_length",
    ] {
        assert!(rows[0].get(key).is_some(), "{key} missing: {}", rows[0]);
    }
    let gone = rows.iter().find(|r| r["src"] == "/gone.png").unwrap();
    assert_eq!(gone["purged"], true);
    assert_eq!(gone["gone_streak"], 3);
    assert_eq!(gone["last_status"], 404);
    assert_eq!(gone["referenced"], true);
    assert_eq!(
        gone["probe"],
        format!("{}/gone.png", h.origin.base_url()).as_str()
    );

    let (_, out, _) = run(&h, &config, &["state", "show", "/present.png"]);
    assert_eq!(json_lines(&out).len(), 1, "{out}");
    let (_, out, _) = run(&h, &config, &["state", "show", "--watch", "site"]);
    assert_eq!(json_lines(&out).len(), 2, "{out}");

    let (code, out, err) = run(&h, &config, &["state", "ledger", "--since", "1h"]);
    assert_eq!(code, Some(0), "{err}");
    let ledger = json_lines(&out);
    assert_eq!(ledger.len(), 1, "{out}");
    assert_eq!(ledger[0]["srcImages"][0], "/gone.png");
    assert_eq!(ledger[0]["vercel_id"], vercel_id.as_str());
    assert_eq!(ledger[0]["endpoint"], "delete");

    let (code, out, err) = run(&h, &config, &["explain", "/gone.png"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("first seen"), "{out}");
    assert!(out.contains("pending") && out.contains("purge"), "{out}");
    assert!(out.contains(&format!("x-vercel-id {vercel_id}")), "{out}");
    assert!(out.contains("200"), "{out}");
    let (_, out, _) = run(&h, &config, &["explain", "/never.png"]);
    assert!(out.contains("not in the inventory"), "{out}");

    // forget needs one --watch, then removes the source.
    let (code, _, err) = run(&h, &config, &["state", "forget", "/gone.png"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--watch"), "{err}");
    let (code, out, err) = run(
        &h,
        &config,
        &["state", "forget", "--watch", "site", "/gone.png"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("forgot 1 of 1"), "{out}");
    let (_, out, _) = run(&h, &config, &["state", "show"]);
    assert_eq!(json_lines(&out).len(), 1, "{out}");
}

#[tokio::test]
async fn a_second_writer_is_refused_through_a_symlink_and_a_hard_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let first = store::open(&path, None, Access::Write).await.unwrap();
    let symlink = dir.path().join("link.db");
    std::os::unix::fs::symlink(&path, &symlink).unwrap();
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(&path, &hard).unwrap();
    for p in [&path, &symlink, &hard] {
        match store::open(p, None, Access::Write).await {
            Err(e @ StoreError::Locked { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("pid {}", std::process::id())),
                    "{msg}"
                );
                assert!(msg.contains(&p.display().to_string()), "{msg}");
            }
            Err(e) => panic!("{}: unexpected error {e}", p.display()),
            Ok(_) => panic!("{}: a second writer got in", p.display()),
        }
    }
    // Readers are never refused, and the lock goes with its holder.
    assert!(store::open(&symlink, None, Access::Read).await.is_ok());
    drop(first);
    assert!(store::open(&hard, None, Access::Write).await.is_ok());
}

async fn a_dry_run_never_writes_the_store(backend: Backend) {
    let Some(h) = on(backend).await else { return };
    let c = h.config("", TWO);
    let a = h.dry_pass(&c).await;
    let b = h.dry_pass(&c).await;
    assert_eq!(a.decision("/gone.png"), "pending");
    assert_eq!(
        b.decision("/gone.png"),
        "pending",
        "each dry run starts from the file"
    );
    assert!(!h.state_path().exists());
    assert!(h.api.calls().is_empty());
    assert!(h.inventory().await.is_empty(), "nothing was stored");
    // And with the store already there, a dry run leaves it as it was.
    h.pass(&c).await;
    let before = h.inventory().await;
    let dry = h.dry_pass(&c).await;
    assert_eq!(
        dry.decision("/gone.png"),
        "would_purge",
        "it reads the stored streak"
    );
    let after = h.inventory().await;
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "a dry run changed the store"
    );
    assert!(h.api.calls().is_empty());
}

/// A version 1 state: `/gone.png` purged in its episode, `/old.png` pending.
fn v1_state() -> String {
    r#"{
  "version": 1,
  "watches": {
    "site": {
      "/gone.png": { "gone_streak": 4, "first_gone": "2026-11-01T10:00:00Z", "last_gone": "2026-11-01T10:30:00Z", "last_status": 404, "purged_at": "2026-11-01T10:10:00Z" },
      "/old.png": { "gone_streak": 1, "first_gone": "2026-11-01T10:30:00Z", "last_gone": "2026-11-01T10:30:00Z", "last_status": 410 }
    }
  }
}"#
    .to_owned()
}

#[tokio::test]
async fn a_version_1_state_at_the_path_is_migrated_with_its_episodes() {
    let h = two().await;
    std::fs::write(h.state_path(), v1_state()).unwrap();
    let c = h.config("", &TWO.replace("/gone.png]", "/gone.png, /old.png]"));
    let ran = h.pass(&c).await;
    assert_eq!(
        ran.decision("/gone.png"),
        "already_purged",
        "purged in its episode before the upgrade"
    );
    assert_eq!(ran.decision("/old.png"), "purge", "its streak carried over");
    assert_eq!(h.api.purged(), ["/old.png"]);
    let aside = h.dir.path().join("state.db.v1.json");
    assert_eq!(std::fs::read_to_string(&aside).unwrap(), v1_state());
    // The store now sits at the path; a second pass reads it, not the JSON.
    let again = h.pass(&c).await;
    assert_eq!(again.decision("/old.png"), "already_purged");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_old_default_state_file_is_imported_into_the_new_default_store() {
    let h = two().await;
    let dir = h.dir.path();
    std::fs::create_dir_all(dir.join(".origin-watch")).unwrap();
    std::fs::write(dir.join(".origin-watch/state.json"), v1_state()).unwrap();
    let config = dir.join("watch.yaml");
    std::fs::write(
        &config,
        format!(
            "vercel:\n  token_env: OW_TEST_TOKEN\n  api_base: {}\n{}",
            h.api.base_url(),
            TWO.replace("{origin}", &h.origin.base_url())
        ),
    )
    .unwrap();
    // A dry run reads the old file without moving it.
    let (code, out, err) = run(&h, &config, &["audit"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 already purged"), "{out}");
    assert!(dir.join(".origin-watch/state.json").exists());
    assert!(!dir.join(".origin-watch/state.db").exists());

    let (code, out, err) = run(&h, &config, &["once"]);
    assert_eq!(code, Some(0), "{err}\n{out}");
    assert!(out.contains("1 already purged"), "{out}");
    assert!(dir.join(".origin-watch/state.db").exists());
    assert!(dir.join(".origin-watch/state.json.v1.json").exists());
    assert!(!dir.join(".origin-watch/state.json").exists());
    assert!(
        err.contains("imported the version 1 state file"),
        "the log says so: {err}"
    );
    // /old.png is only in the old file: remembered, probed, and purged on
    // its second gone pass (its streak carried over).
    assert_eq!(h.api.purged(), ["/old.png"]);
    let loaded = Config::load(&config).unwrap();
    assert!(
        loaded
            .state()
            .file()
            .unwrap()
            .ends_with(".origin-watch/state.db")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_refuses_writes_still_gets_a_summary_naming_the_cause_and_exit_1() {
    let h = two().await;
    let config = h.config_file(TWO);
    let (code, _, err) = run(&h, &config, &["once"]);
    assert_eq!(code, Some(0), "{err}");
    // The real database now refuses every history row, as a full disk or a
    // broken volume would refuse a write.
    let db = rusqlite::Connection::open(h.state_path()).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON history BEGIN SELECT RAISE(ABORT, 'the disk says no'); END;",
    )
    .unwrap();
    drop(db);
    let (code, out, err) = run(&h, &config, &["once"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        out.contains("site: 2 checked"),
        "the summary is still printed: {out}"
    );
    assert!(
        out.contains("state: not all of this pass could be recorded")
            && out.contains("the disk says no")
            && out.contains(&h.state_path().display().to_string()),
        "the store and the cause are named: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bare_relative_state_flag_is_a_file_in_the_working_folder() {
    let h = two().await;
    let config = h.config_file(TWO);
    let (code, _, stderr) = run(&h, &config, &["--state", "here.db", "once"]);
    assert_eq!(code, Some(0), "{stderr}");
    let here = h.dir.path().join("here.db");
    assert!(here.is_file(), "the store is in the working folder");
    assert!(
        !h.state_path().exists(),
        "state: in the config is overridden"
    );
    let store = store::open(store::StateLocation::File(here.clone()), None, Access::Read)
        .await
        .unwrap();
    let rows = store.show(None, &[]).await.unwrap();
    assert!(
        rows.iter().any(|r| r.src == "/gone.png"),
        "the pass was recorded there: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_that_cannot_be_read_is_an_error_not_an_empty_store() {
    let h = two().await;
    // Not missing (that is a first run): there, but not a database.
    std::fs::create_dir(h.state_path()).unwrap();
    let config = h.config_file(TWO);
    let (code, stdout, stderr) = run(&h, &config, &["once"]);
    assert_ne!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&h.state_path().display().to_string()),
        "names the store: {stderr}"
    );
    assert!(
        h.api.calls().is_empty(),
        "nothing is called on a store it cannot read"
    );
    assert_eq!(h.origin.total(), 0, "nothing is probed either");
}
