//! Discovery inside a pass, over loopback: a fake site with pages that show
//! `/_next/image` URLs, a fake origin with the source images and the fake
//! Vercel API. What discovery finds is probed and remembered, so an image
//! deleted together with the page that showed it is still purged; a failed
//! discovery forgets nothing; `every` spaces discoveries.

use crate::common;

use common::Harness;
use testkit::fake_origin::Behavior;
use testkit::fake_site::{FakeSite, Reply};

fn img(src: &str) -> String {
    let url: String = url::form_urlencoded::byte_serialize(src.as_bytes()).collect();
    format!(
        r#"<img src="/_next/image?url={url}&amp;w=640&amp;q=75" srcset="/_next/image?url={url}&amp;w=1080&amp;q=75 2x">"#
    )
}

fn page(images: &[&str]) -> Reply {
    let body: String = images.iter().map(|i| img(i)).collect();
    Reply::html(format!(
        "<!DOCTYPE html><html><body>{body}<a href=\"/about\">about</a></body></html>"
    ))
}

/// A site whose home page shows `/a.png` and `/b.png` and whose about page
/// shows `/c.png`; the origin serves all three.
async fn world() -> (Harness, FakeSite) {
    let h = Harness::new(
        &[
            ("/a.png", Behavior::Present),
            ("/b.png", Behavior::Present),
            ("/c.png", Behavior::Present),
        ],
        Behavior::Status(404),
    )
    .await;
    let site = FakeSite::start([
        ("/".to_owned(), page(&["/a.png", "/b.png"])),
        ("/about".to_owned(), page(&["/c.png"])),
    ])
    .await
    .unwrap();
    (h, site)
}

fn yaml(site: &FakeSite, every: &str) -> String {
    format!(
        "defaults: {{ confirmations: 2, max_purge_fraction: 1.0 }}\nwatches:\n  - name: site\n    project: p\n    origin: '{{origin}}'\n    discover: {{ site: '{}', pages: [/], every: {every} }}\n",
        site.base_url()
    )
}

#[tokio::test]
async fn discovered_sources_are_probed_and_a_deleted_one_is_purged_after_its_page_goes() {
    let (h, site) = world().await;
    let c = h.config("", &yaml(&site, "0s"));
    let ran = h.pass(&c).await;
    let decisions = ran.decisions();
    assert_eq!(
        decisions.keys().collect::<Vec<_>>(),
        ["/a.png", "/b.png", "/c.png"]
    );
    assert!(decisions.values().all(|d| d == "keep"), "{decisions:?}");
    assert!(ran.records.iter().all(|r| r["referenced"] == true));
    let d = ran.outcome.watches[0].discovery.clone().unwrap();
    assert_eq!((d.found, d.new, d.pages_read, d.complete), (3, 3, 2, true));

    // /c.png is deleted together with the about page's reference to it.
    h.origin.set("/c.png", Behavior::Status(404));
    site.set("/about", page(&[]));
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/c.png"), "pending");
    assert_eq!(
        ran.record("/c.png")["referenced"],
        false,
        "remembered, not referenced"
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/c.png"), "purge");
    assert_eq!(h.api.purged(), ["/c.png"]);
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/c.png"), "already_purged");
    assert_eq!(h.api.calls().len(), 1);
    // The summary says what discovery did.
    let line = ran.outcome.watches[0].to_string();
    assert!(
        line.contains("discovered 2 (0 new) on 2 pages, 0 errors"),
        "{line}"
    );
    assert!(line.contains("1 remembered"), "{line}");
}

#[tokio::test]
async fn a_failed_discovery_unreferences_nothing() {
    let (h, site) = world().await;
    let c = h.config("", &yaml(&site, "0s"));
    h.pass(&c).await;
    // The about page now fails: /c.png is not seen, but keeps its reference.
    site.set("/about", Reply::Status(500));
    let ran = h.pass(&c).await;
    assert_eq!(
        ran.record("/c.png")["referenced"],
        true,
        "{:?}",
        ran.records
    );
    let d = ran.outcome.watches[0].discovery.clone().unwrap();
    assert!(!d.complete && d.errors == 1, "{d:?}");
    // A site that suddenly shows nothing is not believed either.
    site.set("/", page(&[]));
    site.set("/about", page(&[]));
    let ran = h.pass(&c).await;
    for src in ["/a.png", "/b.png", "/c.png"] {
        assert_eq!(ran.record(src)["referenced"], true, "{src}");
    }
    assert!(!ran.outcome.watches[0].discovery.clone().unwrap().complete);
}

#[tokio::test]
async fn discovery_runs_at_most_every_interval_and_always_in_an_audit() {
    let (h, site) = world().await;
    let c = h.config("", &yaml(&site, "1h"));
    h.pass(&c).await;
    let after_first = site.total();
    assert!(after_first >= 2, "the first pass discovers");
    let ran = h.pass(&c).await;
    assert_eq!(site.total(), after_first, "not again within `every`");
    assert!(ran.outcome.watches[0].discovery.is_none());
    // The sources discovered before are still probed, and referenced.
    assert_eq!(ran.decisions().len(), 3);
    assert!(ran.records.iter().all(|r| r["referenced"] == true));
    // An audit always discovers, and writes nothing.
    let ran = h.dry_pass(&c).await;
    assert!(site.total() > after_first);
    assert!(ran.outcome.watches[0].discovery.is_some());
    assert!(h.api.calls().is_empty());
}
