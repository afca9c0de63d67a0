//! The deploy examples, run end to end rather than only `check`ed: each
//! example's watch.yaml (the CronJob's and the sidecar's ConfigMaps, the
//! systemd units' file) with only `origin`, `vercel.api_base` and `state`
//! pointed at loopback, run pass after pass, 10 minutes apart as their
//! schedules fire, against a local origin with one image deleted and the fake
//! Vercel API. Each image, deleted in turn, must be purged exactly once, and
//! no pass may exit 3. The CronJob runs as its Indexed Job does: `--shards N`
//! from its arguments, one pass per shard per run, each with its own state.

use crate::common;

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use common::Harness;
use origin_watch::config::Config;
use origin_watch::exit::Exit;
use origin_watch::pass::run_pass_at;
use origin_watch::shard::Shard;
use serde::Deserialize;
use serde_yaml::Value;
use testkit::fake_origin::Behavior;
use tokio_util::sync::CancellationToken;

/// Runs of each example's schedule, 10 minutes apart.
const RUNS: i64 = 4;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn documents(rel: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// An example: its watch.yaml and images.txt (if any), and its shard count.
struct Example {
    name: &'static str,
    watch_yaml: String,
    images_txt: Option<String>,
    shards: u32,
}

/// The ConfigMap files and the origin-watch container's arguments of a manifest.
fn manifest(name: &'static str, rel: &str) -> Example {
    let docs = documents(rel);
    let data = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"].get("watch.yaml").is_some())
        .unwrap_or_else(|| panic!("{rel}: no ConfigMap with watch.yaml"))["data"]
        .clone();
    let file = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_owned);
    let args: Vec<String> = docs
        .iter()
        .flat_map(|d| {
            let spec = &d["spec"];
            let pod = if d["kind"] == "CronJob" {
                &spec["jobTemplate"]["spec"]["template"]["spec"]
            } else {
                &spec["template"]["spec"]
            };
            ["containers", "initContainers"].map(|k| pod[k].clone())
        })
        .filter_map(|cs| cs.as_sequence().cloned())
        .flatten()
        .find(|c| c["name"] == "origin-watch")
        .unwrap_or_else(|| panic!("{rel}: no origin-watch container"))["args"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{rel}: the container has no args"))
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let shards = args
        .iter()
        .position(|a| a == "--shards")
        .map(|i| args[i + 1].parse().unwrap())
        .unwrap_or(1);
    Example {
        name,
        watch_yaml: file("watch.yaml").unwrap(),
        images_txt: file("images.txt"),
        shards,
    }
}

fn systemd() -> Example {
    Example {
        name: "systemd",
        watch_yaml: read("deploy/systemd/watch.yaml"),
        images_txt: Some(read("deploy/systemd/images.txt")),
        shards: 1,
    }
}

/// The example's config with only `origin`, `vercel.api_base` and `state`
/// rewritten, written beside its images.txt in `dir`, and loaded.
fn localized(ex: &Example, h: &Harness) -> Config {
    let mut v: Value = serde_yaml::from_str(&ex.watch_yaml).unwrap();
    v["vercel"]["api_base"] = Value::from(h.api.base_url());
    v["state"] = Value::from(h.state_path().display().to_string());
    for w in v["watches"].as_sequence_mut().unwrap() {
        w["origin"] = Value::from(h.origin.base_url());
    }
    let dir = h.dir.path();
    std::fs::write(dir.join("watch.yaml"), serde_yaml::to_string(&v).unwrap()).unwrap();
    if let Some(images) = &ex.images_txt {
        std::fs::write(dir.join("images.txt"), images).unwrap();
    }
    Config::load(&dir.join("watch.yaml")).unwrap_or_else(|e| panic!("{}: {e}", ex.name))
}

/// One scheduled run: a pass per shard (each its own process in production,
/// so its own state file and lock), as if started at `now`.
async fn run(h: &Harness, config: &Config, shards: u32, now: DateTime<Utc>) -> Vec<Exit> {
    let mut exits = Vec::new();
    for k in 0..shards {
        let mut c = config.clone();
        if shards > 1 {
            c.apply_shard(Shard::new(k, shards).unwrap());
        }
        let (ctx, _lines) = h.context(&c, false, common::TOKEN).await;
        let outcome = run_pass_at(&ctx, c.watches(), &CancellationToken::new(), now)
            .await
            .unwrap();
        exits.push(outcome.exit());
    }
    exits
}

/// Deletes each of the example's images in turn (a fresh origin, API and
/// state each time) and runs its schedule: purged once, never a guard alarm.
async fn exercise(ex: Example) {
    // The sources, read from the config as shipped.
    let sources: Vec<String> = {
        let h = Harness::new(&[], Behavior::Present).await;
        let c = localized(&ex, &h);
        c.watches()[0]
            .sources()
            .iter()
            .map(|s| s.src().to_string())
            .collect()
    };
    assert!(sources.len() >= 3, "{}: {sources:?}", ex.name);
    let t0 = Utc::now();
    for deleted in &sources {
        let h = Harness::new(
            &[(deleted.as_str(), Behavior::Status(404))],
            Behavior::Present,
        )
        .await;
        let config = localized(&ex, &h);
        let project = config.watches()[0].project().to_owned();
        let mut purged_after = Vec::new();
        for r in 0..RUNS {
            let exits = run(&h, &config, ex.shards, t0 + TimeDelta::minutes(10 * r)).await;
            assert!(
                exits.iter().all(|e| *e == Exit::Ok),
                "{}: {deleted} deleted, run {r}: exits {exits:?}",
                ex.name
            );
            purged_after.push(h.api.purged().len());
        }
        // Two confirmations and min_gone_for 10m: the second run, 10
        // minutes after the first sight, purges it.
        assert_eq!(purged_after, [0, 1, 1, 1], "{}: {deleted}", ex.name);
        assert_eq!(
            h.api.purged(),
            vec![deleted.clone()],
            "{}: {deleted} deleted: purged exactly once",
            ex.name
        );
        let call = &h.api.calls()[0];
        assert_eq!(call.query_value("projectIdOrName"), Some(project.as_str()));
    }
}

#[tokio::test]
async fn the_cronjob_purges_a_deleted_image_once_across_its_shards() {
    let ex = manifest("cronjob", "deploy/kubernetes/cronjob.yaml");
    assert_eq!(ex.shards, 4, "the CronJob runs --shards 4");
    exercise(ex).await;
}

#[tokio::test]
async fn without_the_floor_the_cronjobs_shards_would_never_purge() {
    // The control for the test above: 5 sources in 4 shards and a 0.25
    // fraction with no floor withhold even a single purge in every shard.
    let mut ex = manifest("cronjob", "deploy/kubernetes/cronjob.yaml");
    ex.watch_yaml = ex
        .watch_yaml
        .replace("fraction_floor: 3", "fraction_floor: 0");
    assert!(ex.watch_yaml.contains("fraction_floor: 0"));
    let h = Harness::new(
        &[("/images/hero.png", Behavior::Status(404))],
        Behavior::Present,
    )
    .await;
    let config = localized(&ex, &h);
    let t0 = Utc::now();
    let mut alarms = 0;
    for r in 0..RUNS {
        let exits = run(&h, &config, ex.shards, t0 + TimeDelta::minutes(10 * r)).await;
        alarms += exits.iter().filter(|e| **e == Exit::Withheld).count();
    }
    assert_eq!(
        alarms, 3,
        "the hero's shard is withheld on every run once it is due"
    );
    assert!(h.api.calls().is_empty());
}

#[tokio::test]
async fn the_kubernetes_sidecar_purges_a_deleted_image_once() {
    exercise(manifest("sidecar", "deploy/kubernetes/sidecar.yaml")).await;
}

#[tokio::test]
async fn the_systemd_units_purge_a_deleted_image_once() {
    exercise(systemd()).await;
}
