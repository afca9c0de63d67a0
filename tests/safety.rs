//! The safety behaviour over loopback: the blast-radius guard, the per-pass
//! cap, the canary, per-host politeness and origin 429s. Each test asserts
//! what the fake Vercel API and the origin received.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Harness, many};
use origin_watch::exit::Exit;
use origin_watch::policy::Decision;
use testkit::fake_origin::Behavior;

fn watch_yaml(defaults: &str, extra: &str, srcs: &[String]) -> String {
    format!(
        "defaults: {{ {defaults} }}\nwatches:\n  - name: site\n    project: p\n    origin: '{{origin}}'\n{extra}    images: {srcs:?}\n"
    )
}

#[tokio::test]
async fn an_origin_that_404s_everything_trips_the_guard() {
    let (srcs, _) = many(40, Behavior::Status(404));
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config("", &watch_yaml("confirmations: 1", "", &srcs));
    for _ in 0..3 {
        let ran = h.pass(&c).await;
        assert_eq!(ran.outcome.exit(), Exit::Withheld);
        assert_eq!(ran.outcome.total(Decision::Withheld), 40);
        let alarm = ran.outcome.watches[0].guard_alarm.clone().unwrap();
        assert!(
            alarm.contains("max_purge_fraction") && alarm.contains("40 of 40"),
            "{alarm}"
        );
    }
    assert!(
        h.api.calls().is_empty(),
        "not one purge while the origin looks broken"
    );
}

#[tokio::test]
async fn already_purged_sources_do_not_count_toward_the_fraction() {
    let (srcs, _) = many(10, Behavior::Present);
    let h = Harness::new(&[], Behavior::Present).await;
    let c = h.config(
        "",
        &watch_yaml("confirmations: 1, max_purge_fraction: 0.2", "", &srcs),
    );
    // Two go (20%: allowed), are purged; then two more go.
    h.origin.set("/img/0.png", Behavior::Status(404));
    h.origin.set("/img/1.png", Behavior::Status(404));
    assert_eq!(h.pass(&c).await.outcome.total(Decision::Purge), 2);
    h.origin.set("/img/2.png", Behavior::Status(404));
    h.origin.set("/img/3.png", Behavior::Status(404));
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/img/0.png"), "already_purged");
    assert_eq!(ran.decision("/img/2.png"), "purge");
    assert_eq!(ran.outcome.exit(), Exit::Ok);
    assert_eq!(h.api.purged().len(), 4);
}

#[tokio::test]
async fn thirty_gone_with_a_cap_of_ten_take_three_passes() {
    let (srcs, _) = many(30, Behavior::Status(404));
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config(
        "",
        &watch_yaml(
            "confirmations: 1, max_purge_fraction: 1.0, max_purges_per_pass: 10",
            "",
            &srcs,
        ),
    );
    let mut purged_per_pass = Vec::new();
    for _ in 0..4 {
        let ran = h.pass(&c).await;
        purged_per_pass.push(ran.outcome.total(Decision::Purge));
        assert_ne!(
            ran.outcome.exit(),
            Exit::Withheld,
            "the cap is a rate limit, not an alarm"
        );
    }
    assert_eq!(purged_per_pass, [10, 10, 10, 0]);
    let sent = h.api.purged();
    assert_eq!(sent.len(), 30);
    assert_eq!(
        sent.iter().collect::<BTreeSet<_>>().len(),
        30,
        "each source once"
    );
}

#[tokio::test]
async fn capped_sources_are_withheld_until_their_turn() {
    let (srcs, _) = many(5, Behavior::Status(404));
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config(
        "",
        &watch_yaml(
            "confirmations: 1, max_purge_fraction: 1.0, max_purges_per_pass: 2",
            "",
            &srcs,
        ),
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.outcome.total(Decision::Purge), 2);
    assert_eq!(ran.outcome.total(Decision::Withheld), 3);
    let withheld = ran
        .records
        .iter()
        .find(|r| r["decision"] == "withheld")
        .unwrap();
    assert!(
        withheld["reason"]
            .as_str()
            .unwrap()
            .contains("max_purges_per_pass"),
        "{withheld}"
    );
}

#[tokio::test]
async fn a_gone_canary_withholds_every_purge() {
    let (srcs, _) = many(4, Behavior::Status(404));
    let h = Harness::new(
        &[("/logo.png", Behavior::Status(404))],
        Behavior::Status(404),
    )
    .await;
    let c = h.config(
        "",
        &watch_yaml(
            "confirmations: 1, max_purge_fraction: 1.0",
            "    canary: /logo.png\n",
            &srcs,
        ),
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.outcome.exit(), Exit::Withheld);
    assert_eq!(ran.outcome.total(Decision::Withheld), 4);
    assert!(h.api.calls().is_empty());
    assert_eq!(
        h.origin.count("HEAD", "/logo.png"),
        1,
        "the canary is probed"
    );

    // The logo is back: the origin is healthy, the purges go.
    h.origin.set("/logo.png", Behavior::Present);
    let ran = h.pass(&c).await;
    assert_eq!(ran.outcome.total(Decision::Purge), 4);
    assert_eq!(ran.outcome.exit(), Exit::Ok);
}

#[tokio::test]
async fn an_unreachable_canary_withholds_too() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let c = h.config(
        "",
        "defaults: { confirmations: 1, max_purge_fraction: 1.0, retries: 0 }\nwatches:\n  - { name: s, project: p, origin: '{origin}', canary: 'http://127.0.0.1:9/logo.png', images: [/a.png] }\n",
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "withheld");
    assert!(h.api.calls().is_empty());
}

#[tokio::test]
async fn probes_to_one_host_stay_within_per_host_concurrency() {
    // Two watches on one origin: the limit is the process's, not a watch's.
    let (srcs, _) = many(40, Behavior::Present);
    let h = Harness::new(&[], Behavior::Slow(Duration::from_millis(50))).await;
    let c = h.config(
        "",
        &format!(
            "defaults: {{ concurrency: 64, per_host_concurrency: 4 }}\nwatches:\n  - {{ name: a, project: p, origin: '{{origin}}', images: {:?} }}\n  - {{ name: b, project: p, origin: '{{origin}}', images: {:?} }}\n",
            &srcs[..20],
            &srcs[20..]
        ),
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.outcome.total(Decision::Keep), 40);
    let peak = h.origin.max_in_flight();
    assert!(peak <= 4, "{peak} requests in flight to one host");
    assert!(peak >= 2, "probes do run in parallel ({peak})");
}

/// `n` sources on an origin that answers every request 429 with
/// `Retry-After: retry_after_secs`, under these `defaults`.
async fn rate_limiting_origin(
    n: usize,
    retry_after_secs: u64,
    defaults: &str,
) -> (Harness, origin_watch::config::Config, Vec<String>) {
    let (srcs, _) = many(n, Behavior::Present);
    let h = Harness::new(&[], Behavior::TooManyRequests { retry_after_secs }).await;
    let c = h.config("", &watch_yaml(defaults, "", &srcs));
    (h, c, srcs)
}

#[tokio::test]
async fn probes_queued_for_a_host_wait_out_its_retry_after() {
    // One slot, three probes queued for it, no retries: each probe after a
    // 429 waits for the Retry-After, even one that was already waiting for
    // the slot when the 429 came.
    let (h, c, srcs) = rate_limiting_origin(
        3,
        1,
        "confirmations: 1, concurrency: 20, per_host_concurrency: 1, retries: 0",
    )
    .await;
    let started = std::time::Instant::now();
    let ran = h.pass(&c).await;
    for s in &srcs {
        assert_eq!(ran.decision(s), "skip");
    }
    assert_eq!(h.origin.total(), 3, "one try each");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "three probes one after another, each after the last one's Retry-After ({:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_origin_retry_after_is_capped() {
    // An origin asking for an hour is waited for only up to the cap (30 s in
    // production, shortened here), so a pass always ends.
    let (h, c, _) = rate_limiting_origin(
        2,
        3600,
        "confirmations: 1, per_host_concurrency: 1, retries: 1",
    )
    .await;
    let (mut ctx, lines) = h.context(&c, false, common::TOKEN).await;
    ctx.prober = std::sync::Arc::new(
        origin_watch::probe::Prober::new()
            .unwrap()
            .with_retry_base(Duration::from_millis(5))
            .with_max_host_backoff(Duration::from_millis(200)),
    );
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        origin_watch::pass::run_pass(
            &ctx,
            &c.watches,
            &tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("the pass ends: the origin's Retry-After is capped")
    .unwrap();
    assert_eq!(outcome.total(Decision::Skip), 2);
    assert_eq!(h.origin.total(), 4, "one try and one retry per source");
    assert_eq!(lines.take_json_lines().len(), 2);
    assert!(h.api.calls().is_empty());
}

#[tokio::test]
async fn an_origin_answering_429_is_backed_off_and_never_gone() {
    let (h, c, srcs) = rate_limiting_origin(
        3,
        1,
        "confirmations: 1, max_purge_fraction: 1.0, retries: 1",
    )
    .await;
    let started = std::time::Instant::now();
    let ran = h.pass(&c).await;
    for s in &srcs {
        assert_eq!(ran.decision(s), "skip");
        assert_eq!(ran.record(s)["status"], 429);
    }
    assert!(h.api.calls().is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the retry waited for the origin's Retry-After"
    );
    assert_eq!(h.origin.total(), 6, "one try and one retry per source");
}
