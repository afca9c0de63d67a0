//! Whole passes over loopback: a local origin, the fake Vercel API, the real
//! pass code. Every row of the contract's decision table, batching, the API's
//! error classes, aliases, probing rules and state across restarts, each
//! asserted on what the fake API and the origin actually received.

use crate::common;

use std::time::Duration;

use common::{Harness, TOKEN, many};
use origin_watch::exit::Exit;
use testkit::fake_origin::Behavior;
use testkit::fake_vercel::{FakeVercelConfig, PURGE_PATH};

const FOUR: &str = "
defaults:
  confirmations: 2
  max_purge_fraction: 1.0
watches:
  - name: site
    project: my-next-app
    origin: '{origin}'
    images: [/present.png, /gone.png, /retired.png, /broken.png]
";

async fn four() -> Harness {
    Harness::new(
        &[
            ("/present.png", Behavior::Present),
            ("/gone.png", Behavior::Status(404)),
            ("/retired.png", Behavior::Status(410)),
            ("/broken.png", Behavior::Status(500)),
        ],
        Behavior::Present,
    )
    .await
}

#[tokio::test]
async fn keep_skip_pending_then_purge_then_already_purged() {
    let h = four().await;
    let c = h.config("", FOUR);

    let first = h.pass(&c).await;
    assert_eq!(first.decision("/present.png"), "keep");
    assert_eq!(first.decision("/broken.png"), "skip");
    assert_eq!(first.decision("/gone.png"), "pending");
    assert_eq!(first.decision("/retired.png"), "pending");
    assert!(h.api.calls().is_empty(), "nothing is due on first sight");
    assert_eq!(first.outcome.exit(), Exit::Ok);

    let second = h.pass(&c).await;
    assert_eq!(second.decision("/gone.png"), "purge");
    assert_eq!(second.decision("/retired.png"), "purge");
    assert_eq!(second.decision("/present.png"), "keep");
    assert_eq!(second.decision("/broken.png"), "skip");
    let calls = h.api.calls();
    assert_eq!(calls.len(), 1);
    let mut srcs = calls[0].src_images.clone();
    srcs.sort();
    assert_eq!(srcs, ["/gone.png", "/retired.png"]);
    assert_eq!(calls[0].status, 200);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, PURGE_PATH);
    assert_eq!(calls[0].query_value("projectIdOrName"), Some("my-next-app"));
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(&*format!("Bearer {TOKEN}"))
    );
    let r = second.record("/gone.png");
    assert_eq!(r["reason"], "404 on 2 consecutive passes");
    assert_eq!(r["status"], 404);
    assert_eq!(r["verdict"], "gone");
    assert_eq!(r["dry_run"], false);

    let third = h.pass(&c).await;
    assert_eq!(third.decision("/gone.png"), "already_purged");
    assert_eq!(third.decision("/retired.png"), "already_purged");
    assert_eq!(h.api.calls().len(), 1, "never purged twice in one episode");
}

#[tokio::test]
async fn dry_run_says_would_purge_and_calls_nothing() {
    let h = four().await;
    let c = h.config("", &FOUR.replace("confirmations: 2", "confirmations: 1"));
    let ran = h.dry_pass(&c).await;
    assert_eq!(ran.decision("/gone.png"), "would_purge");
    assert_eq!(ran.decision("/retired.png"), "would_purge");
    assert_eq!(ran.record("/gone.png")["dry_run"], true);
    assert_eq!(
        ran.outcome.watches[0].would_purge.len(),
        2,
        "the summary lists what would be purged"
    );
    assert!(h.api.calls().is_empty());
    assert!(!h.state_path().exists(), "a dry run writes no state");
}

#[tokio::test]
async fn failed_purge_is_reported_and_retried_next_pass() {
    let h = four().await;
    let c = h.config("", &FOUR.replace("confirmations: 2", "confirmations: 1"));
    h.api.set_config(FakeVercelConfig {
        fixed_status: Some(400),
        ..FakeVercelConfig::new(TOKEN)
    });
    let first = h.pass(&c).await;
    assert_eq!(first.decision("/gone.png"), "failed");
    assert_eq!(first.outcome.exit(), Exit::PurgeFailed);
    let reason = first.record("/gone.png")["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("400"), "{reason}");
    assert_eq!(h.api.calls().len(), 1, "a 400 is not retried");

    h.api.set_config(FakeVercelConfig::new(TOKEN));
    let second = h.pass(&c).await;
    assert_eq!(second.decision("/gone.png"), "purge");
    assert_eq!(h.api.purged().len(), 2);
}

#[tokio::test]
async fn guard_withholds_and_streaks_still_advance() {
    let h = four().await;
    // Two of four due is 50%: over a 0.25 fraction (and no floor to cover it).
    let c = h.config(
        "",
        &FOUR.replace(
            "max_purge_fraction: 1.0",
            "max_purge_fraction: 0.25\n  fraction_floor: 0",
        ),
    );
    h.pass(&c).await;
    let second = h.pass(&c).await;
    assert_eq!(second.decision("/gone.png"), "withheld");
    assert_eq!(second.decision("/retired.png"), "withheld");
    assert_eq!(second.outcome.exit(), Exit::Withheld);
    assert!(h.api.calls().is_empty());
    let inventory = h.inventory().await;
    for src in ["/gone.png", "/retired.png"] {
        let row = &inventory[&("site".to_owned(), src.to_owned())];
        assert_eq!(row.gone_streak, 2, "the withheld pass counted: {row:?}");
        assert!(!row.purged && row.purged_at.is_none(), "{row:?}");
    }

    // The operator raises the limit: the confirmed streak is not lost.
    let relaxed = h.config("", FOUR);
    let third = h.pass(&relaxed).await;
    assert_eq!(third.decision("/gone.png"), "purge");
    assert_eq!(h.api.calls().len(), 1);
}

#[tokio::test]
async fn twenty_gone_images_cost_three_calls_of_8_8_and_4() {
    let (srcs, routes) = many(20, Behavior::Status(404));
    let routes: Vec<(&str, Behavior)> = routes
        .iter()
        .map(|(p, b)| (p.as_str(), b.clone()))
        .collect();
    let h = Harness::new(&routes, Behavior::Present).await;
    let c = h.config(
        "",
        &format!(
            "defaults: {{ confirmations: 1, max_purge_fraction: 1.0 }}\nwatches:\n  - name: big\n    project: p\n    origin: '{{origin}}'\n    images: {:?}\n",
            srcs
        ),
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.outcome.total(origin_watch::policy::Decision::Purge), 20);
    let sizes: Vec<usize> = h.batches().iter().map(Vec::len).collect();
    assert_eq!(sizes, [8, 8, 4]);
    let mut sent: Vec<String> = h.batches().concat();
    sent.sort();
    let mut want = srcs.clone();
    want.sort();
    assert_eq!(sent, want, "each source exactly once");
    assert_eq!(ran.outcome.watches[0].api_calls, 3);
}

#[tokio::test]
async fn watches_of_one_project_share_batches() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config(
        "",
        "
defaults: { confirmations: 1, max_purge_fraction: 1.0 }
watches:
  - { name: a, project: p, origin: '{origin}', images: [/a1.png, /a2.png] }
  - { name: b, project: p, origin: '{origin}', images: [/b1.png] }
  - { name: c, project: p, team_id: other, origin: '{origin}', images: [/c1.png] }
",
    );
    h.pass(&c).await;
    let calls = h.api.calls();
    assert_eq!(
        calls.len(),
        2,
        "one call for project p, one for p in team other"
    );
    let shared = calls
        .iter()
        .find(|c| c.query_value("teamId").is_none())
        .unwrap();
    assert_eq!(shared.src_images.len(), 3);
    let other = calls
        .iter()
        .find(|c| c.query_value("teamId") == Some("other"))
        .unwrap();
    assert_eq!(other.src_images, ["/c1.png"]);
}

#[tokio::test]
async fn a_source_in_two_watches_of_one_project_is_sent_once() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config(
        "",
        "
defaults: { confirmations: 1, max_purge_fraction: 1.0 }
watches:
  - { name: a, project: p, origin: '{origin}', images: [/shared.png, /a.png] }
  - { name: b, project: p, origin: '{origin}', images: [/shared.png] }
",
    );
    let ran = h.pass(&c).await;
    let batches = h.batches();
    assert_eq!(batches.len(), 1);
    let mut sent = batches[0].clone();
    sent.sort();
    assert_eq!(sent, ["/a.png", "/shared.png"], "each source once per call");
    // Both watches asked for it, and both record the purge.
    let shared: Vec<_> = ran
        .records
        .iter()
        .filter(|r| r["src"] == "/shared.png")
        .map(|r| {
            (
                r["watch"].as_str().unwrap(),
                r["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(shared.len(), 2);
    assert!(shared.iter().all(|(_, d)| *d == "purge"), "{shared:?}");

    let again = h.pass(&c).await;
    assert_eq!(
        again
            .outcome
            .total(origin_watch::policy::Decision::AlreadyPurged),
        3
    );
    assert_eq!(h.api.calls().len(), 1);
}

#[tokio::test]
async fn team_slug_and_integer_deadline_are_sent() {
    let h = Harness::new(&[], Behavior::Status(410)).await;
    let c = h.config(
        "  team_id: team_1a2b3c\n  slug: my-team\n  revalidation_deadline_seconds: 60",
        "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: my app, origin: '{origin}', images: ['/a b.png'] }\n",
    );
    h.pass(&c).await;
    let call = &h.api.calls()[0];
    assert_eq!(call.status, 200);
    assert_eq!(call.query_value("projectIdOrName"), Some("my app"));
    assert!(
        call.raw_query.contains("projectIdOrName=my%20app"),
        "{}",
        call.raw_query
    );
    assert_eq!(call.query_value("teamId"), Some("team_1a2b3c"));
    assert_eq!(call.query_value("slug"), Some("my-team"));
    assert_eq!(call.deadline, Some(serde_json::json!(60)));
    assert!(
        call.body.contains("\"revalidationDeadlineSeconds\":60"),
        "{}",
        call.body
    );
    assert_eq!(call.src_images, ["/a b.png"], "sources are sent verbatim");
}

#[tokio::test]
async fn rate_limited_call_honours_retry_after_then_succeeds() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    h.api.set_config(FakeVercelConfig {
        fail_429: 1,
        retry_after_secs: 1,
        ..FakeVercelConfig::new(TOKEN)
    });
    let c = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/a.png] }\n");
    let started = std::time::Instant::now();
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "purge");
    let statuses: Vec<u16> = h.api.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [429, 200]);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    h.api.set_config(FakeVercelConfig {
        fail_500: 2,
        ..FakeVercelConfig::new(TOKEN)
    });
    let c = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/a.png] }\n");
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "purge");
    let statuses: Vec<u16> = h.api.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
}

#[tokio::test]
async fn server_errors_past_the_retries_fail_the_purge() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    h.api.set_config(FakeVercelConfig {
        fail_500: 100,
        ..FakeVercelConfig::new(TOKEN)
    });
    let c = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/a.png] }\n");
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "failed");
    assert_eq!(h.api.calls().len(), 5, "one call and four retries");
    assert_eq!(ran.outcome.exit(), Exit::PurgeFailed);
}

#[tokio::test]
async fn rejected_token_stops_the_project_and_names_the_variable() {
    let (srcs, _) = many(12, Behavior::Status(404));
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config(
        "  token_env: MY_VERCEL_TOKEN",
        &format!("defaults: {{ confirmations: 1, max_purge_fraction: 1.0 }}\nwatches:\n  - {{ name: s, project: shop, origin: '{{origin}}', images: {srcs:?} }}\n"),
    );
    let ran = h.pass_with(&c, false, "wrong-token-value").await;
    assert_eq!(
        h.api.calls().len(),
        1,
        "the second batch is never sent after a 401"
    );
    assert_eq!(h.api.calls()[0].status, 401);
    for src in &srcs {
        assert_eq!(ran.decision(src), "failed");
    }
    let reason = ran.record(&srcs[0])["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("MY_VERCEL_TOKEN") && reason.contains("shop"),
        "{reason}"
    );
    let all = serde_json::to_string(&ran.records).unwrap();
    assert!(
        !all.contains("wrong-token-value"),
        "the token never appears in a report"
    );
    assert_eq!(ran.outcome.exit(), Exit::PurgeFailed);
}

#[tokio::test]
async fn payment_required_says_the_plan_lacks_the_feature() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    h.api.set_config(FakeVercelConfig {
        fixed_status: Some(402),
        ..FakeVercelConfig::new(TOKEN)
    });
    let c = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/a.png] }\n");
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "failed");
    let reason = ran.record("/a.png")["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("plan lacks purge by source image"),
        "{reason}"
    );
    assert_eq!(h.api.calls().len(), 1, "402 is not retried");
}

#[tokio::test]
async fn aliases_are_probed_once_and_purged_together() {
    let h = Harness::new(&[("/a.png", Behavior::Status(404))], Behavior::Present).await;
    let c = h.config(
        "",
        "
defaults: { confirmations: 1, max_purge_fraction: 1.0 }
watches:
  - name: s
    project: p
    origin: '{origin}'
    images:
      - /a.png
      - { src: /alias/a.png, probe: '{origin}/a.png' }
      - /b.png
      - /c.png
",
    );
    let ran = h.pass(&c).await;
    assert_eq!(
        h.origin.count("HEAD", "/a.png"),
        1,
        "one probe URL, one probe"
    );
    assert_eq!(ran.decision("/a.png"), "purge");
    assert_eq!(ran.decision("/alias/a.png"), "purge");
    let mut sent = h.api.calls()[0].src_images.clone();
    sent.sort();
    assert_eq!(sent, ["/a.png", "/alias/a.png"]);
}

#[tokio::test]
async fn remote_sources_probe_themselves_and_keep_their_query() {
    let h = Harness::new(
        &[("/photo.jpg?v=2", Behavior::Status(404))],
        Behavior::Present,
    )
    .await;
    let c = h.config(
        "",
        "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: p, images: ['{origin}/photo.jpg?v=2', '{origin}/photo.jpg'] }\n",
    );
    let ran = h.pass(&c).await;
    let gone = format!("{}/photo.jpg?v=2", h.origin.base_url());
    assert_eq!(ran.decision(&gone), "purge");
    assert_eq!(
        ran.decision(&format!("{}/photo.jpg", h.origin.base_url())),
        "keep"
    );
    assert_eq!(h.api.calls()[0].src_images, [gone]);
}

#[tokio::test]
async fn present_again_starts_a_new_episode() {
    let h = Harness::new(&[("/a.png", Behavior::Status(404))], Behavior::Present).await;
    let c = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/a.png] }\n");
    assert_eq!(h.pass(&c).await.decision("/a.png"), "purge");
    h.origin.set("/a.png", Behavior::Present);
    assert_eq!(h.pass(&c).await.decision("/a.png"), "keep");
    h.origin.set("/a.png", Behavior::Status(410));
    assert_eq!(h.pass(&c).await.decision("/a.png"), "purge");
    assert_eq!(h.api.purged(), ["/a.png", "/a.png"]);
}

#[tokio::test]
async fn head_refused_is_asked_with_a_ranged_get() {
    let h = Harness::new(
        &[
            (
                "/ok.png",
                Behavior::HeadGet {
                    head: 405,
                    get: 206,
                },
            ),
            (
                "/gone.png",
                Behavior::HeadGet {
                    head: 501,
                    get: 404,
                },
            ),
        ],
        Behavior::Present,
    )
    .await;
    let c = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/ok.png, /gone.png, /x.png, /y.png] }\n");
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/ok.png"), "keep");
    assert_eq!(ran.decision("/gone.png"), "purge");
    assert_eq!(h.origin.count("GET", "/ok.png"), 1);
}

#[tokio::test]
async fn head_404_with_get_200_is_never_purged() {
    let h = Harness::new(
        &[(
            "/edge.png",
            Behavior::HeadGet {
                head: 404,
                get: 200,
            },
        )],
        Behavior::Present,
    )
    .await;
    let c = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0, retries: 0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/edge.png] }\n");
    for _ in 0..3 {
        let ran = h.pass(&c).await;
        assert_eq!(ran.decision("/edge.png"), "skip");
        let reason = ran.record("/edge.png")["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            reason.contains("HEAD answered 404 but GET answered 200"),
            "{reason}"
        );
    }
    assert!(h.api.calls().is_empty());
    assert_eq!(
        h.origin.count("GET", "/edge.png"),
        3,
        "every gone HEAD is confirmed by GET"
    );
}

/// An origin where /old.png redirects to /new.png, which is gone.
async fn redirecting() -> Harness {
    let redirect = Behavior::Redirect {
        status: 301,
        to: "/new.png".into(),
    };
    Harness::new(
        &[("/old.png", redirect), ("/new.png", Behavior::Status(404))],
        Behavior::Present,
    )
    .await
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let h = redirecting().await;
    let followed = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/old.png] }\n");
    assert_eq!(h.pass(&followed).await.decision("/old.png"), "purge");

    let h = redirecting().await;
    let unfollowed = h.config("", "defaults: { confirmations: 1, max_purge_fraction: 1.0, follow_redirects: 0, retries: 0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/old.png] }\n");
    let ran = h.pass(&unfollowed).await;
    assert_eq!(ran.decision("/old.png"), "skip");
    assert_eq!(ran.record("/old.png")["status"], 301);
    assert!(h.api.calls().is_empty());
}

#[tokio::test]
async fn timeouts_are_inconclusive_with_a_null_status() {
    let h = Harness::new(
        &[("/slow.png", Behavior::Slow(Duration::from_secs(3)))],
        Behavior::Present,
    )
    .await;
    let c = h.config("", "defaults: { confirmations: 1, timeout: 200ms, retries: 1 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/slow.png] }\n");
    let ran = h.pass(&c).await;
    let r = ran.record("/slow.png");
    assert_eq!(r["decision"], "skip");
    assert_eq!(r["status"], serde_json::Value::Null);
    assert!(r["error"].as_str().unwrap().contains("timeout"), "{r}");
    assert_eq!(h.origin.count("HEAD", "/slow.png"), 2, "retried once");
}

#[tokio::test]
async fn unreachable_origin_is_inconclusive() {
    let h = Harness::new(&[], Behavior::Present).await;
    // Nothing listens on port 9 of loopback.
    let c = h.config("", "defaults: { confirmations: 1, retries: 0 }\nwatches:\n  - { name: s, project: p, origin: 'http://127.0.0.1:9', images: [/a.png] }\n");
    let ran = h.pass(&c).await;
    let r = ran.record("/a.png");
    assert_eq!(r["decision"], "skip");
    assert!(r["error"].as_str().unwrap().contains("connection"), "{r}");
}

#[tokio::test]
async fn state_survives_a_restart() {
    let h = four().await;
    let c = h.config("", FOUR);
    h.pass(&c).await;
    let inventory = h.inventory().await;
    let row = |src: &str| inventory[&("site".to_owned(), src.to_owned())].clone();
    assert_eq!(row("/gone.png").gone_streak, 1);
    assert_eq!(row("/present.png").gone_streak, 0);
    assert_eq!(
        row("/present.png").last_verdict.unwrap().as_str(),
        "present"
    );
    assert_eq!(
        row("/broken.png").last_verdict.unwrap().as_str(),
        "inconclusive"
    );
    // A new process (new state store, new prober) picks the streak up.
    let again = h.pass(&c).await;
    assert_eq!(again.decision("/gone.png"), "purge");
}

#[tokio::test]
async fn a_source_removed_from_the_config_and_deleted_is_still_purged_once() {
    let h = four().await;
    h.pass(&h.config("", FOUR)).await;
    // The image goes together with its line in the config: the inventory
    // remembers it, probes it, and purges it on its second gone pass.
    let fewer = h.config("", &FOUR.replace("/gone.png, ", ""));
    let ran = h.pass(&fewer).await;
    let r = ran.record("/gone.png");
    assert_eq!(r["decision"], "purge", "{r}");
    assert_eq!(r["referenced"], false, "{r}");
    assert_eq!(ran.record("/retired.png")["referenced"], true);
    assert!(h.batches().iter().flatten().any(|s| s == "/gone.png"));
    let again = h.pass(&fewer).await;
    assert_eq!(again.decision("/gone.png"), "already_purged");
    let purged: Vec<String> = h.api.purged();
    assert_eq!(
        purged.iter().filter(|s| *s == "/gone.png").count(),
        1,
        "{purged:?}"
    );
    let inventory = h.inventory().await;
    let row = &inventory[&("site".to_owned(), "/gone.png".to_owned())];
    assert!(
        !row.referenced && row.purged && row.unreferenced_since.is_some(),
        "{row:?}"
    );
}

#[tokio::test]
async fn unreferenced_sources_with_nothing_pending_are_forgotten_after_forget_after() {
    let h = four().await;
    h.pass(&h.config("", FOUR)).await;
    // Three sources leave the config with forget_after 0s. /present.png has
    // nothing pending; /gone.png is pending until it is purged (second gone
    // pass); /broken.png is inconclusive, so its fate is unknown: kept.
    let fewer = h.config(
        "",
        &FOUR
            .replace("/present.png, /gone.png, ", "")
            .replace(", /broken.png", "")
            .replace("defaults:\n", "defaults:\n  forget_after: 0s\n"),
    );
    let ran = h.pass(&fewer).await;
    for src in ["/present.png", "/gone.png", "/broken.png"] {
        assert_eq!(
            ran.record(src)["referenced"],
            false,
            "probed while remembered"
        );
    }
    assert_eq!(ran.decision("/gone.png"), "purge");
    let ran = h.pass(&fewer).await;
    let seen: Vec<&str> = ran
        .records
        .iter()
        .map(|r| r["src"].as_str().unwrap())
        .collect();
    assert_eq!(
        sorted_strs(&seen),
        ["/broken.png", "/retired.png"],
        "{seen:?}"
    );
    let inventory = h.inventory().await;
    let srcs: Vec<&str> = inventory.keys().map(|(_, s)| s.as_str()).collect();
    assert_eq!(sorted_strs(&srcs), ["/broken.png", "/retired.png"]);
    let purged = h.api.purged();
    assert_eq!(
        purged.iter().filter(|s| *s == "/gone.png").count(),
        1,
        "purged once before it was forgotten: {purged:?}"
    );
}

#[tokio::test]
async fn a_cancelled_pass_starts_no_purge_and_keeps_what_it_knew() {
    let h = Harness::new(
        &[("/slow.png", Behavior::Slow(Duration::from_secs(5)))],
        Behavior::Status(404),
    )
    .await;
    let c = h.config(
        "",
        "defaults: { confirmations: 1, max_purge_fraction: 1.0, concurrency: 1 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', images: [/gone.png, /slow.png, /later.png] }\n",
    );
    // A first pass marks /later.png gone (and purges it); its episode must survive.
    h.origin.set("/slow.png", Behavior::Present);
    h.pass(&c).await;
    assert_eq!(h.api.purged().len(), 2);
    h.origin
        .set("/slow.png", Behavior::Slow(Duration::from_secs(5)));

    let (ctx, _lines) = h.context(&c, false, TOKEN).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    let started = std::time::Instant::now();
    let outcome = origin_watch::pass::run_pass(&ctx, c.watches(), &cancel)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cancellation stops probing"
    );
    assert!(outcome.interrupted());
    assert_eq!(outcome.exit(), Exit::PurgeFailed);
    assert_eq!(
        h.api.calls().len(),
        1,
        "no new purge call after cancellation"
    );
    let inventory = h.inventory().await;
    let later = &inventory[&("s".to_owned(), "/later.png".to_owned())];
    assert!(later.purged, "{later:?}");
}

#[tokio::test]
async fn a_rejected_token_stops_its_target_and_no_other_team() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config(
        "",
        "
defaults: { confirmations: 1, max_purge_fraction: 1.0 }
watches:
  - { name: a, project: shop, origin: '{origin}', images: [/a0.png, /a1.png, /a2.png, /a3.png, /a4.png, /a5.png, /a6.png, /a7.png, /a8.png] }
  - { name: b, project: shop, team_id: team_2, origin: '{origin}', images: [/b.png] }
  - { name: c, project: blog, origin: '{origin}', images: [/c.png] }
",
    );
    let ran = h.pass_with(&c, false, "not-the-token").await;
    // Watch a's second batch is not sent once its first is refused; team
    // 2's `shop` is another target (the token may be valid there) and blog too.
    let targets: Vec<(String, Option<String>)> = h
        .api
        .calls()
        .iter()
        .map(|c| {
            (
                c.query_value("projectIdOrName").unwrap().to_owned(),
                c.query_value("teamId").map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(targets.len(), 3, "{targets:?}");
    for t in [
        ("shop".to_owned(), None),
        ("shop".to_owned(), Some("team_2".to_owned())),
        ("blog".to_owned(), None),
    ] {
        assert!(targets.contains(&t), "{t:?} not called: {targets:?}");
    }
    for src in ["/a0.png", "/a8.png", "/b.png", "/c.png"] {
        assert_eq!(ran.decision(src), "failed");
    }
    assert!(
        ran.record("/a8.png")["reason"]
            .as_str()
            .unwrap()
            .contains("not sent"),
        "{}",
        ran.record("/a8.png")
    );
}

fn sorted_strs<'a>(v: &[&'a str]) -> Vec<&'a str> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

/// Vercel's 8192 limit counts characters: a 3,000-character CJK path
/// (9,001 bytes) is checked, probed and purged like any other, and the API
/// receives it whole.
#[tokio::test]
async fn a_long_cjk_path_is_purged_whole() {
    let cjk = format!("/{}", "画".repeat(3000));
    assert_eq!((cjk.len(), cjk.chars().count()), (9001, 3001));
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config(
        "",
        &format!(
            "defaults:\n  confirmations: 1\n  max_purge_fraction: 1.0\nwatches:\n  - name: site\n    project: my-next-app\n    origin: '{{origin}}'\n    images: ['{cjk}']\n"
        ),
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision(&cjk), "purge");
    let calls = h.api.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].status, 200);
    assert_eq!(calls[0].src_images, [cjk]);
}
