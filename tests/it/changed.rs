//! Deleted and replaced images end to end, through the fake API's simulated
//! image cache: what a visitor sees before and after origin-watch acts, and
//! what the fake API received.

use crate::common;

use std::time::Duration;

use common::Harness;
use origin_watch::exit::Exit;
use testkit::fake_origin::Behavior;
use testkit::fake_vercel::{INVALIDATE_PATH, PURGE_PATH};

fn yaml(on_change: &str, srcs: &[&str]) -> String {
    format!(
        "defaults: {{ confirmations: 2, max_purge_fraction: 1.0, max_invalidate_fraction: 1.0, on_change: {on_change} }}\nwatches:\n  - {{ name: site, project: p, origin: '{{origin}}', images: {srcs:?} }}\n"
    )
}

/// Waits until the background refresh after a STALE answer has landed.
async fn visit_until(h: &Harness, src: &str, body: &str) -> (u16, String, String) {
    for _ in 0..50 {
        let seen = h.visit(src).await;
        if seen.2 == body {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.visit(src).await
}

#[tokio::test]
async fn a_deleted_image_stops_being_served_after_the_purge_and_not_before() {
    let h = Harness::new(
        &[("/a.png", Behavior::content(b"old a", "a1"))],
        Behavior::Status(404),
    )
    .await;
    let c = h.config("", &yaml("ignore", &["/a.png"]));
    assert_eq!(
        h.visit("/a.png").await,
        (200, "MISS".into(), "old a".into())
    );
    assert_eq!(h.visit("/a.png").await, (200, "HIT".into(), "old a".into()));
    h.origin.set("/a.png", Behavior::Status(404));
    // The cache keeps serving the deleted image: that is the problem.
    assert_eq!(h.visit("/a.png").await, (200, "HIT".into(), "old a".into()));
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "pending");
    assert_eq!(
        h.visit("/a.png").await.1,
        "HIT",
        "not purged before its confirmations"
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "purge");
    let calls = h.api.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, PURGE_PATH);
    assert_eq!(h.visit("/a.png").await, (404, "MISS".into(), String::new()));
}

#[tokio::test]
async fn a_replaced_image_serves_the_new_bytes_after_the_invalidation() {
    let h = Harness::new(
        &[("/hero.png", Behavior::content(b"old hero", "v1"))],
        Behavior::Status(404),
    )
    .await;
    let c = h.config("", &yaml("invalidate", &["/hero.png"]));
    assert_eq!(
        h.pass(&c).await.decision("/hero.png"),
        "keep",
        "first sight records"
    );
    assert_eq!(h.visit("/hero.png").await.2, "old hero");

    h.origin
        .set("/hero.png", Behavior::content(b"new hero!", "v2"));
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/hero.png"), "changed");
    let reason = ran.record("/hero.png")["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("ETag \"v2\"") && reason.contains("9 bytes"),
        "{reason}"
    );
    assert_eq!(
        h.visit("/hero.png").await,
        (200, "HIT".into(), "old hero".into()),
        "the old picture until the change is confirmed"
    );
    assert!(h.api.calls().is_empty());

    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/hero.png"), "invalidate");
    assert_eq!(ran.record("/hero.png")["verdict"], "present");
    let calls = h.api.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, INVALIDATE_PATH);
    assert_eq!(calls[0].src_images, ["/hero.png"]);
    assert!(
        calls[0].deadline.is_none(),
        "the soft call takes no deadline"
    );
    // Stale once (revalidating in the background), then the new picture.
    assert_eq!(
        h.visit("/hero.png").await,
        (200, "STALE".into(), "old hero".into())
    );
    assert_eq!(
        visit_until(&h, "/hero.png", "new hero!").await,
        (200, "HIT".into(), "new hero!".into())
    );

    // The new validators are stored: nothing more to do.
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/hero.png"), "keep");
    assert_eq!(h.api.calls().len(), 1);
    let row = &h.inventory().await[&("site".to_owned(), "/hero.png".to_owned())];
    assert_eq!(row.etag.as_deref(), Some("\"v2\""));
    assert_eq!(row.content_length, Some(9));
    // The ledger has the call.
    let store = origin_watch::store::open(&h.state_path(), None, origin_watch::store::Access::Read)
        .await
        .unwrap();
    let ledger = store.ledger(None).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].endpoint.as_str(), "invalidate");
    assert_eq!(ledger[0].status, Some(200));
}

#[tokio::test]
async fn a_flapping_etag_never_leads_to_a_call() {
    let h = Harness::new(
        &[(
            "/lb.png",
            Behavior::Flapping {
                body: "same bytes".into(),
                etags: vec!["\"backend-1\"".into(), "\"backend-2\"".into()],
            },
        )],
        Behavior::Status(404),
    )
    .await;
    let c = h.config("", &yaml("invalidate", &["/lb.png"]));
    for _ in 0..6 {
        let ran = h.pass(&c).await;
        let d = ran.decision("/lb.png");
        assert!(d == "keep" || d == "changed", "{d}");
    }
    assert!(h.api.calls().is_empty(), "{:?}", h.api.calls());
}

#[tokio::test]
async fn an_audit_says_would_invalidate_and_calls_nothing() {
    let h = Harness::new(
        &[("/x.png", Behavior::content(b"one", "1"))],
        Behavior::Status(404),
    )
    .await;
    let c = h.config("", &yaml("invalidate", &["/x.png"]));
    h.pass(&c).await;
    h.origin.set("/x.png", Behavior::content(b"two", "2"));
    assert_eq!(h.pass(&c).await.decision("/x.png"), "changed");
    let ran = h.dry_pass(&c).await;
    assert_eq!(ran.decision("/x.png"), "would_invalidate");
    assert_eq!(ran.outcome.exit(), Exit::Ok);
    assert!(h.api.calls().is_empty());
    // The audit left nothing behind: a real pass still sees it due.
    assert_eq!(h.pass(&c).await.decision("/x.png"), "invalidate");
}

#[tokio::test]
async fn a_deploy_that_rewrites_every_etag_trips_the_guard_instead_of_invalidating_the_site() {
    let srcs: Vec<String> = (0..10).map(|i| format!("/img/{i}.png")).collect();
    let h = Harness::new(&[], Behavior::content(b"same", "mtime-1")).await;
    let refs: Vec<&str> = srcs.iter().map(String::as_str).collect();
    let c = h.config(
        "",
        &yaml("invalidate", &refs).replace(
            "max_invalidate_fraction: 1.0",
            "max_invalidate_fraction: 0.25",
        ),
    );
    h.pass(&c).await;
    // nginx after a deploy: every mtime, so every ETag, is new; the bytes are not.
    for s in &srcs {
        h.origin.set(s, Behavior::content(b"same", "mtime-2"));
    }
    assert_eq!(
        h.pass(&c)
            .await
            .outcome
            .total(origin_watch::policy::Decision::Changed),
        10
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.outcome.exit(), Exit::Withheld);
    assert_eq!(
        ran.outcome.total(origin_watch::policy::Decision::Withheld),
        10
    );
    let alarm = ran.outcome.watches[0].guard_alarm.clone().unwrap();
    assert!(alarm.starts_with("max_invalidate_fraction"), "{alarm}");
    assert!(h.api.calls().is_empty());
}
