//! The demo: a whole origin-watch cycle on this machine, offline.
//!
//! It starts, in this process, a local site (two pages whose `<img>` tags
//! use `/_next/image` URLs, as `next/image` writes them), a local origin
//! holding the source images, and the fake Vercel API with its simulated
//! image cache. Then it runs the real pass code four times:
//!
//! 1. discovery finds the images on the pages; each is probed (`keep`), and
//!    a visitor's requests fill the image cache;
//! 2. the blog's banner is deleted together with the page line that showed
//!    it, and the hero image is replaced with new bytes under the same URL.
//!    The cache still serves both old pictures. origin-watch still probes
//!    the banner (the inventory remembers it): `pending`; the hero: `changed`;
//! 3. confirmed: the banner is purged (one delete call) and the hero is
//!    invalidated (one soft invalidate call). The visitor now gets a 404 for
//!    the banner and, after one stale answer, the new hero;
//! 4. nothing more to do: `already_purged` and `keep`, no call.
//!
//! It prints every decision, every call the fake API received and what the
//! visitor saw, and exits non-zero unless the API received exactly one
//! delete call for the banner and one invalidate call for the hero.
//!
//! Run it with `cargo run --example demo`.

use std::sync::Arc;
use std::time::Duration;

use origin_watch::config::{Config, Token};
use origin_watch::pass::{PassContext, run_pass};
use origin_watch::probe::Prober;
use origin_watch::report::Reporter;
use origin_watch::store::{self, Access};
use origin_watch::vercel::VercelClient;
use testkit::Captured;
use testkit::fake_origin::{Behavior, FakeOrigin};
use testkit::fake_site::{FakeSite, Reply};
use testkit::fake_vercel::{FakeVercel, FakeVercelConfig, INVALIDATE_PATH, PURGE_PATH};
use tokio_util::sync::CancellationToken;

const BANNER: &str = "/images/old-banner.png";
const HERO: &str = "/images/hero.png";

/// An HTML page showing these sources the way `next/image` writes them.
fn page(srcs: &[&str], links: &[&str]) -> Reply {
    let mut body = String::new();
    for src in srcs {
        let q: String = url::form_urlencoded::byte_serialize(src.as_bytes()).collect();
        body.push_str(&format!(
            "<img alt=\"\" src=\"/_next/image?url={q}&amp;w=1080&amp;q=75\" srcset=\"/_next/image?url={q}&amp;w=640&amp;q=75 1x, /_next/image?url={q}&amp;w=1080&amp;q=75 2x\">\n"
        ));
    }
    for l in links {
        body.push_str(&format!("<a href=\"{l}\">{l}</a>\n"));
    }
    Reply::html(format!("<!DOCTYPE html><html><body>\n{body}</body></html>"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let origin = FakeOrigin::start(
        [
            ("/images/logo.png".to_owned(), Behavior::Present),
            (
                HERO.to_owned(),
                Behavior::content(b"the old hero picture", "hero-v1"),
            ),
            ("/images/team.jpg".to_owned(), Behavior::Present),
            (
                BANNER.to_owned(),
                Behavior::content(b"the old banner", "banner-v1"),
            ),
            (
                "/images/no-head.png".to_owned(),
                Behavior::HeadGet {
                    head: 405,
                    get: 206,
                },
            ),
            ("/images/flaky.png".to_owned(), Behavior::Status(500)),
        ],
        Behavior::Status(404),
    )
    .await?;
    let site = FakeSite::start([
        (
            "/".to_owned(),
            page(
                &[
                    "/images/logo.png",
                    HERO,
                    "/images/team.jpg",
                    "/images/no-head.png",
                ],
                &["/blog/launch"],
            ),
        ),
        (
            "/blog/launch".to_owned(),
            page(&[BANNER, "/images/flaky.png"], &["/"]),
        ),
    ])
    .await?;
    let token = "demo-token";
    let api = FakeVercel::start(FakeVercelConfig {
        origin: Some(origin.base_url()),
        ..FakeVercelConfig::new(token)
    })
    .await?;

    let dir = std::env::temp_dir().join(format!("origin-watch-demo-{}", std::process::id()));
    let yaml = format!(
        r#"
vercel:
  api_base: {api}
  team_id: team_demo
state: {state}
defaults:
  timeout: 2s
  retries: 1
  confirmations: 2
  on_change: invalidate
watches:
  - name: site
    project: my-next-app
    origin: {origin}
    canary: /images/logo.png
    discover:
      site: {site}
      pages: [/]
      follow_links: true
      every: 0s   # rediscover every pass (a real site: 1h)
"#,
        api = api.base_url(),
        state = dir.join("state.db").display(),
        origin = origin.base_url(),
        site = site.base_url(),
    );
    println!("config (watch.yaml):{yaml}");
    let config = Config::from_yaml(&yaml)?;

    let lines = Captured::default();
    let ctx = PassContext {
        prober: Arc::new(Prober::new()?.with_retry_base(Duration::from_millis(50))),
        vercel: Some(Arc::new(VercelClient::new(
            config.vercel(),
            Token::new(token),
        )?)),
        store: store::open(config.state(), None, Access::Write).await?,
        reporter: Arc::new(Reporter::to_writer(Box::new(lines.clone()))),
        observer: None,
    };
    let cancel = CancellationToken::new();
    let client = reqwest::Client::new();
    let visit = |src: &'static str| {
        let (client, base) = (client.clone(), api.base_url());
        async move {
            let q: String = url::form_urlencoded::byte_serialize(src.as_bytes()).collect();
            let resp = client
                .get(format!("{base}/_next/image?url={q}&w=1080&q=75"))
                .send()
                .await?;
            let status = resp.status().as_u16();
            let cache = resp
                .headers()
                .get("x-vercel-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let body = resp.text().await?;
            println!(
                "  visitor GET /_next/image?url={src}: {status} x-vercel-cache: {cache:<5} {body:?}"
            );
            Ok::<String, reqwest::Error>(body)
        }
    };

    let mut seen_calls = 0;
    for pass in 1..=4 {
        if pass == 2 {
            println!(
                "== the blog's banner is deleted with its line on the page; the hero is replaced"
            );
            origin.set(BANNER, Behavior::Status(404));
            site.set("/blog/launch", page(&["/images/flaky.png"], &["/"]));
            origin.set(HERO, Behavior::content(b"the NEW hero picture", "hero-v2"));
        }
        println!("== pass {pass}");
        let outcome = run_pass(&ctx, config.watches(), &cancel).await?;
        let mut records = lines.take_json_lines();
        records.sort_by_key(|r| r["src"].as_str().unwrap_or_default().to_owned());
        for r in &records {
            println!(
                "  {:<24} {:>4}  {:<12} -> {:<16} {}{}",
                r["src"].as_str().unwrap_or_default(),
                r["status"]
                    .as_u64()
                    .map(|s| s.to_string())
                    .unwrap_or("-".into()),
                r["verdict"].as_str().unwrap_or_default(),
                r["decision"].as_str().unwrap_or_default(),
                r["reason"].as_str().unwrap_or_default(),
                if r["referenced"] == false {
                    " [remembered: no page shows it any more]"
                } else {
                    ""
                },
            );
        }
        for w in &outcome.watches {
            println!("  summary: {w}");
        }
        let calls = api.calls();
        for c in &calls[seen_calls..] {
            println!(
                "  fake Vercel API received: {} {}?{} srcImages={:?} -> {}",
                c.method, c.path, c.raw_query, c.src_images, c.status
            );
        }
        if calls.len() == seen_calls {
            println!("  fake Vercel API received: nothing");
        }
        seen_calls = calls.len();
        visit(BANNER).await?;
        visit(HERO).await?;
    }
    // The stale answer after the invalidation refreshed the hero in the background.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("== a moment later");
    let hero = visit(HERO).await?;

    let calls = api.calls();
    let deletes: Vec<_> = calls.iter().filter(|c| c.path == PURGE_PATH).collect();
    let invalidates: Vec<_> = calls.iter().filter(|c| c.path == INVALIDATE_PATH).collect();
    let _ = std::fs::remove_dir_all(&dir);
    if deletes.len() != 1
        || deletes[0].src_images != [BANNER]
        || invalidates.len() != 1
        || invalidates[0].src_images != [HERO]
        || calls.len() != 2
    {
        return Err(format!(
            "expected one delete of {BANNER} and one invalidate of {HERO}, got {calls:?}"
        )
        .into());
    }
    if hero != "the NEW hero picture" {
        return Err(format!("the visitor still gets {hero:?} for the hero").into());
    }
    println!(
        "\nok: the deleted banner was purged once although no page names it any more, and the replaced hero was invalidated once; nothing else was touched"
    );
    Ok(())
}
