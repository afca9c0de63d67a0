//! The demo: a whole origin-watch cycle on this machine, offline.
//!
//! It starts, in this process, a local origin (images present, 404, 410, one
//! that refuses `HEAD` with 405, one that answers 500) and the fake Vercel
//! API, then runs the real pass code three times against them: the first
//! pass sees the gone images once (`pending`), the second confirms them and
//! purges them in one API call (`purge`), the third finds them still gone
//! and does not call again (`already_purged`). It prints every decision and
//! every call the fake API received.
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
use testkit::fake_vercel::{FakeVercel, FakeVercelConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let origin = FakeOrigin::start(
        [
            ("/images/logo.png".to_owned(), Behavior::Present),
            ("/images/hero.png".to_owned(), Behavior::Present),
            ("/images/team.jpg".to_owned(), Behavior::Present),
            ("/images/old-banner.png".to_owned(), Behavior::Status(404)),
            ("/images/retired.webp".to_owned(), Behavior::Status(410)),
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
    let token = "demo-token";
    let api = FakeVercel::start(FakeVercelConfig::new(token)).await?;

    let dir = std::env::temp_dir().join(format!("origin-watch-demo-{}", std::process::id()));
    let yaml = format!(
        r#"
vercel:
  api_base: {api}
  team_id: team_demo
state: {state}
defaults:
  schedule: "*/10 * * * *"
  timeout: 2s
  retries: 1
  confirmations: 2
  # 2 of 7 sources gone is 29%: above the default 0.25 guard, so allow more here.
  max_purge_fraction: 0.5
watches:
  - name: site
    project: my-next-app
    origin: {origin}
    canary: /images/logo.png
    images:
      - /images/hero.png
      - /images/team.jpg
      - /images/old-banner.png
      - /images/retired.webp
      - /images/no-head.png
      - /images/flaky.png
      - {{ src: /images/logo.png }}
"#,
        api = api.base_url(),
        state = dir.join("state.db").display(),
        origin = origin.base_url(),
    );
    println!("config (watch.yaml):{yaml}");
    let config = Config::from_yaml(&yaml)?;

    let lines = Captured::default();
    let ctx = PassContext {
        prober: Arc::new(Prober::new()?.with_retry_base(Duration::from_millis(50))),
        vercel: Some(Arc::new(VercelClient::new(
            &config.vercel,
            Token::new(token),
        )?)),
        store: store::open(&config.state, None, Access::Write).await?,
        reporter: Arc::new(Reporter::to_writer(Box::new(lines.clone()))),
        observer: None,
    };
    let cancel = CancellationToken::new();

    let mut seen_calls = 0;
    for pass in 1..=3 {
        println!("== pass {pass}");
        let outcome = run_pass(&ctx, &config.watches, &cancel).await?;
        let mut records = lines.take_json_lines();
        records.sort_by_key(|r| r["src"].as_str().unwrap_or_default().to_owned());
        for r in &records {
            println!(
                "  {:<24} {:>4}  {:<12} -> {:<14} {}",
                r["src"].as_str().unwrap_or_default(),
                r["status"]
                    .as_u64()
                    .map(|s| s.to_string())
                    .unwrap_or("-".into()),
                r["verdict"].as_str().unwrap_or_default(),
                r["decision"].as_str().unwrap_or_default(),
                r["reason"].as_str().unwrap_or_default(),
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
    }

    let purged = api.purged();
    let _ = std::fs::remove_dir_all(&dir);
    if purged.len() != 2 || seen_calls != 1 {
        return Err(format!("expected one call purging 2 sources, got {purged:?}").into());
    }
    println!(
        "\nok: the two gone images were purged once, in one API call; nothing else was touched"
    );
    Ok(())
}
