//! The safety behaviour over loopback: the blast-radius guard, the per-pass
//! cap, the canary, per-host politeness and origin 429s. Each test asserts
//! what the fake Vercel API and the origin received.

use crate::common;

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
async fn sources_purged_within_the_window_count_toward_the_fraction() {
    let (srcs, _) = many(10, Behavior::Present);
    let h = Harness::new(&[], Behavior::Present).await;
    let c = h.config(
        "",
        &watch_yaml(
            "confirmations: 1, max_purge_fraction: 0.2, fraction_floor: 0",
            "",
            &srcs,
        ),
    );
    let t0 = chrono::Utc::now();
    // Two go (20%: allowed), are purged; an hour later two more go: 4 of 10
    // gone within the day is over 0.2.
    h.origin.set("/img/0.png", Behavior::Status(404));
    h.origin.set("/img/1.png", Behavior::Status(404));
    assert_eq!(h.pass_at(&c, t0).await.outcome.total(Decision::Purge), 2);
    h.origin.set("/img/2.png", Behavior::Status(404));
    h.origin.set("/img/3.png", Behavior::Status(404));
    let ran = h.pass_at(&c, t0 + chrono::TimeDelta::hours(1)).await;
    assert_eq!(ran.decision("/img/0.png"), "already_purged");
    assert_eq!(ran.decision("/img/2.png"), "withheld");
    assert_eq!(ran.outcome.exit(), Exit::Withheld);
    assert_eq!(h.api.purged().len(), 2);

    // A day after the first purges they have left the window: 2 of 10 again.
    let ran = h
        .pass_at(
            &c,
            t0 + chrono::TimeDelta::hours(24) + chrono::TimeDelta::minutes(1),
        )
        .await;
    assert_eq!(ran.decision("/img/0.png"), "already_purged");
    assert_eq!(ran.decision("/img/2.png"), "purge");
    assert_eq!(ran.outcome.exit(), Exit::Ok);
    let mut sent = h.api.purged();
    sent.sort();
    assert_eq!(
        sent,
        ["/img/0.png", "/img/1.png", "/img/2.png", "/img/3.png"]
    );
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
            c.watches(),
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

/// A pass that cannot see most of the origin: 8 of 10 probe URLs hang past
/// the timeout, 2 answer 404. It must not act on the 2, and must not look
/// green either.
#[tokio::test]
async fn a_blind_pass_purges_nothing_and_exits_3() {
    let (srcs, _) = many(10, Behavior::Present);
    let hang = Behavior::Slow(Duration::from_secs(3));
    let h = Harness::new(
        &[
            ("/img/0.png", Behavior::Status(404)),
            ("/img/1.png", Behavior::Status(404)),
        ],
        hang,
    )
    .await;
    let c = h.config(
        "",
        &watch_yaml(
            "confirmations: 1, max_purge_fraction: 1.0, timeout: 300ms, retries: 0",
            "",
            &srcs,
        ),
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.outcome.exit(), Exit::Withheld);
    let w = &ran.outcome.watches[0];
    let alarm = w.guard_alarm.clone().unwrap();
    assert!(
        alarm.starts_with("inconclusive: 8 of 10 probe URLs inconclusive"),
        "{alarm}"
    );
    assert_eq!(ran.decision("/img/0.png"), "withheld");
    let reason = ran.record("/img/1.png")["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("withheld by inconclusive"), "{reason}");
    assert_eq!(ran.outcome.total(Decision::Skip), 8);
    assert!(h.api.calls().is_empty(), "nothing purged on a blind pass");

    // Seen again (streaks advanced meanwhile), the two are purged.
    for s in &srcs[2..] {
        h.origin.set(s, Behavior::Present);
    }
    let ran = h.pass(&c).await;
    assert_eq!(ran.outcome.exit(), Exit::Ok);
    assert_eq!(ran.decision("/img/0.png"), "purge");
    let mut purged = h.api.purged();
    purged.sort();
    assert_eq!(purged, ["/img/0.png", "/img/1.png"]);
}

#[tokio::test]
async fn an_origin_that_hangs_everywhere_is_an_alarm_not_a_green_pass() {
    let (srcs, _) = many(5, Behavior::Present);
    let h = Harness::new(&[], Behavior::Slow(Duration::from_secs(3))).await;
    let c = h.config(
        "",
        &watch_yaml("confirmations: 1, timeout: 200ms, retries: 0", "", &srcs),
    );
    let ran = h.pass(&c).await;
    assert_eq!(
        ran.outcome.exit(),
        Exit::Withheld,
        "nothing due, still exit 3"
    );
    assert_eq!(ran.outcome.total(Decision::Skip), 5);
    let alarm = ran.outcome.watches[0].guard_alarm.clone().unwrap();
    assert!(alarm.starts_with("inconclusive: 5 of 5"), "{alarm}");
    assert!(h.api.calls().is_empty());
    // With the guard off (and a floor covering it), the same pass is green.
    let off = h.config(
        "",
        &watch_yaml(
            "confirmations: 1, timeout: 200ms, retries: 0, max_inconclusive_fraction: 1.0",
            "",
            &srcs,
        ),
    );
    assert_eq!(h.pass(&off).await.outcome.exit(), Exit::Ok);
}

/// 100 sources; 20% more of them 404 on each pass, 10 minutes apart. Without
/// the window each pass sees only its 20 (within 0.25) and the whole watch is
/// purged in 5 passes; with it, the second pass counts the first's 20 too.
async fn gradual_breakage(window: &str) -> (Vec<usize>, Vec<Exit>, Vec<Option<String>>, usize) {
    let (srcs, _) = many(100, Behavior::Present);
    let h = Harness::new(&[], Behavior::Present).await;
    let c = h.config(
        "",
        &watch_yaml(
            &format!("confirmations: 1, max_purge_fraction: 0.25{window}"),
            "",
            &srcs,
        ),
    );
    let t0 = chrono::Utc::now();
    let (mut purged, mut exits, mut alarms) = (Vec::new(), Vec::new(), Vec::new());
    for pass in 0..5 {
        for s in &srcs[pass * 20..(pass + 1) * 20] {
            h.origin.set(s, Behavior::Status(404));
        }
        let at = t0 + chrono::TimeDelta::minutes(10 * pass as i64);
        let ran = h.pass_at(&c, at).await;
        purged.push(ran.outcome.total(Decision::Purge));
        exits.push(ran.outcome.exit());
        alarms.push(ran.outcome.watches[0].guard_alarm.clone());
    }
    (purged, exits, alarms, h.api.purged().len())
}

#[tokio::test]
async fn an_origin_that_breaks_gradually_trips_within_the_window() {
    let (purged, exits, alarms, sent) = gradual_breakage("").await;
    assert_eq!(purged, [20, 0, 0, 0, 0]);
    assert_eq!(
        exits,
        [
            Exit::Ok,
            Exit::Withheld,
            Exit::Withheld,
            Exit::Withheld,
            Exit::Withheld
        ]
    );
    let second = alarms[1].clone().unwrap();
    assert!(
        second.starts_with(
            "max_purge_fraction: 40 of 100 sources due for purge (20 due now, 20 purged within guard_window; 40.0%)"
        ),
        "{second}"
    );
    assert_eq!(sent, 20, "the fake API saw only the first pass's purges");

    // The control: with no window, nothing stops it.
    let (purged, exits, _, sent) = gradual_breakage(", guard_window: 0s").await;
    assert_eq!(purged, [20; 5]);
    assert!(exits.iter().all(|e| *e == Exit::Ok));
    assert_eq!(sent, 100);
}

#[tokio::test]
async fn an_audit_lists_the_pending_and_the_guard_they_would_trip() {
    // A fresh state, confirmations 2: nothing would be purged this pass, but
    // an operator previewing sees what a real pass will do.
    let (srcs, _) = many(8, Behavior::Present);
    let h = Harness::new(&[("/img/3.png", Behavior::Status(404))], Behavior::Present).await;
    let c = h.config("", &watch_yaml("confirmations: 2", "", &srcs));
    let ran = h.dry_pass(&c).await;
    let summary = ran.outcome.watches[0].to_string();
    assert!(
        summary.contains(
            "\n  pending /img/3.png: 404 on 1 of 2 consecutive passes; would purge after 1 more pass"
        ),
        "{summary}"
    );
    assert!(!summary.contains("guard would trip"), "{summary}");
    assert_eq!(ran.outcome.exit(), Exit::Ok);

    // Everything 404s: no guard trips yet (nothing is due), but the preview
    // says the fraction guard would.
    for s in &srcs {
        h.origin.set(s, Behavior::Status(404));
    }
    let ran = h.dry_pass(&c).await;
    let summary = ran.outcome.watches[0].to_string();
    assert!(
        summary.contains("\n  guard would trip: max_purge_fraction once the 8 pending are confirmed: 8 of 8 sources"),
        "{summary}"
    );
    assert_eq!(summary.matches("\n  pending ").count(), 8, "{summary}");
    assert!(h.api.calls().is_empty());
    assert!(!h.state_path().exists(), "an audit writes no state");
}
