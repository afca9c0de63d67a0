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
    assert_eq!(c.watches.len(), 1);
    let w = &c.watches[0];
    assert_eq!(w.name, "site");
    assert_eq!(w.project, "my-next-app");
    assert_eq!(w.team_id.as_deref(), Some("team_other"));
    assert_eq!(
        w.slug, None,
        "a watch naming its team takes no slug from vercel:"
    );
    assert_eq!(c.vercel.revalidation_deadline_seconds, Some(60));
    // Three from `images:` and three from images.txt, found beside the config.
    let srcs: Vec<&str> = w.sources.iter().map(|s| &*s.src).collect();
    assert_eq!(srcs.len(), 6, "{srcs:?}");
    assert!(srcs.contains(&"/api/avatar/1"));
    assert!(srcs.contains(&"https://images.example.com/products/shoe.jpg?v=3"));
    assert_eq!(
        c.state_path,
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".origin-watch/state.db")
    );
    assert_eq!(
        w.canary.as_deref(),
        Some("https://my-next-app.vercel.app/images/logo.png")
    );
}

#[test]
fn check_warns_when_the_fraction_guard_blocks_a_small_watch() {
    let small = origin_watch::config::Config::from_yaml(
        "watches:\n  - { name: s, project: p, origin: 'https://e.com', images: [/a.png, /b.png] }\n",
    )
    .unwrap();
    let mut out = Vec::new();
    origin_watch::app::print_plan(&small, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("warning: with 2 sources, max_purge_fraction 0.25 withholds every purge"),
        "{text}"
    );

    let fine = origin_watch::config::Config::from_yaml(
        "watches:\n  - { name: s, project: p, origin: 'https://e.com', max_purge_fraction: 0.5, images: [/a.png, /b.png] }\n",
    )
    .unwrap();
    let mut out = Vec::new();
    origin_watch::app::print_plan(&fine, &mut out);
    assert!(!String::from_utf8(out).unwrap().contains("warning"));
}
