//! The annotated `watch.yaml` at the top of the repository is what users
//! copy: it must load, and say what the README says it does. And `check`,
//! which users run on their own copies, warns of a guard that can never
//! let a purge through.

use std::path::Path;

use origin_watch::config::Config;

#[test]
fn the_shipped_watch_yaml_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("watch.yaml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.watches().len(), 1);
    let w = &c.watches()[0];
    assert_eq!(w.name(), "site");
    assert_eq!(w.project(), "my-next-app");
    // The only watch takes its team from `vercel:` (an override there
    // would make `vercel.team_id` and `slug` dead settings).
    assert_eq!(w.team_id(), Some("team_1a2b3c"));
    assert_eq!(w.slug(), Some("my-team"));
    assert_eq!(c.vercel().revalidation_deadline_seconds(), Some(60));
    // Three from `images:` and three from images.txt, found beside the config.
    let srcs: Vec<&str> = w.sources().iter().map(|s| s.src()).collect();
    assert_eq!(srcs.len(), 6, "{srcs:?}");
    assert!(srcs.contains(&"/api/avatar/1"));
    assert!(srcs.contains(&"https://images.example.com/products/shoe.jpg?v=3"));
    assert_eq!(
        c.state().file(),
        Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(".origin-watch/state.db")
                .as_path()
        )
    );
    assert_eq!(
        w.canary(),
        Some("https://my-next-app.vercel.app/images/logo.png")
    );
    // It recommends outlasting CDN negative caches, and shows every guard.
    let r = w.rules();
    assert_eq!(r.min_gone_for(), std::time::Duration::from_secs(600));
    assert_eq!(
        (r.fraction_floor(), r.max_inconclusive_fraction()),
        (3, 0.5)
    );
    assert_eq!(r.guard_window(), std::time::Duration::from_secs(24 * 3600));
}

fn plan(yaml: &str) -> String {
    let c = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    origin_watch::app::print_plan(&c, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn check_warns_only_when_the_fraction_guard_blocks_every_purge() {
    // Two sources and the default fraction: the floor (3) lets both through.
    let text = plan(
        "watches:\n  - { name: s, project: p, origin: 'https://e.com', images: [/a.png, /b.png] }\n",
    );
    assert!(!text.contains("warning"), "{text}");
    assert!(
        text.contains(
            "max_purge_fraction 0.25: never trips in this watch (2 sources, fraction_floor 3)"
        ),
        "{text}"
    );

    // Without the floor, 0.25 of 2 withholds even one.
    let text = plan(
        "watches:\n  - { name: s, project: p, origin: 'https://e.com', fraction_floor: 0, images: [/a.png, /b.png] }\n",
    );
    assert!(
        text.contains("warning: with 2 sources, max_purge_fraction 0.25 and fraction_floor 0 withhold every purge"),
        "{text}"
    );
}

#[test]
fn check_explains_the_fraction_guards_in_the_watchs_numbers() {
    let images: Vec<String> = (0..10).map(|i| format!("/{i}.png")).collect();
    let text = plan(&format!(
        "defaults: {{ min_gone_for: 10m }}\nwatches:\n  - {{ name: s, project: p, origin: 'https://e.com', images: {images:?} }}\n"
    ));
    assert!(
        text.contains(
            "gone: [404, 410] on 2 consecutive passes and for at least 10m (min_gone_for)"
        ),
        "{text}"
    );
    assert!(
        text.contains("max_purge_fraction 0.25: trips when more than 3 of 10 sources due or purged in the last 24h (guard_window) (fraction_floor 3, as 0.25 x 10 is 2.5)"),
        "{text}"
    );
    assert!(
        text.contains("max_inconclusive_fraction 0.5: trips when more than 5 of 10 probe URLs inconclusive in one pass (0.5 x 10; fraction_floor is 3)"),
        "{text}"
    );
    let text = plan(&format!(
        "watches:\n  - {{ name: s, project: p, origin: 'https://e.com', max_purge_fraction: 1, guard_window: 90m, images: {images:?} }}\n"
    ));
    assert!(text.contains("max_purge_fraction 1: off"), "{text}");
    assert!(!text.contains("min_gone_for"), "{text}");
}
