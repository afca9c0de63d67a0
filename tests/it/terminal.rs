//! What the binary shows a person: the progress bar on a terminal (and
//! nothing extra when stderr is not one), shell completions and the man
//! page. A pseudo-terminal comes from util-linux's `script`.

use std::process::Command;

use testkit::fake_origin::{Behavior, FakeOrigin};

const BIN: &str = env!("CARGO_BIN_EXE_origin-watch");

/// A config of 200 sources against `origin`, in a fresh folder; the first
/// ten are `/gone/..` paths.
fn config(dir: &std::path::Path, origin: &str) -> std::path::PathBuf {
    let images: Vec<String> = (0..200)
        .map(|i| {
            if i < 10 {
                format!("/gone/{i}.png")
            } else {
                format!("/img/{i}.png")
            }
        })
        .collect();
    let path = dir.join("watch.yaml");
    std::fs::write(
        &path,
        format!(
            "state: state.json\nwatches:\n  - {{ name: t, project: p, origin: '{origin}', images: {images:?} }}\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let origin = FakeOrigin::start([], Behavior::Present).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &origin.base_url());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["audit", "--log-format", "json", "-c"])
            .arg(&cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.contains("\"decision\"")).count(),
        200,
        "one event per decision"
    );
    for line in lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "stderr holds only JSON log lines, no bar: {line:?}"
        );
    }
    assert_eq!(origin.total(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_gets_a_progress_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` (for a pseudo-terminal) is not installed");
        return;
    }
    let gone = (0..10).map(|i| (format!("/gone/{i}.png"), Behavior::Status(404)));
    let origin = FakeOrigin::start(gone, Behavior::Slow(std::time::Duration::from_millis(20)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &origin.base_url());
    // `script` gives the command a pseudo-terminal and copies what it draws.
    let cmd = format!(
        "RUST_LOG=warn {BIN} audit --watch t -c {} --state {}",
        cfg.display(),
        dir.path().join("s.json").display()
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("COLUMNS", "120")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("probed"), "no bar drawn:\n{screen}");
    assert!(
        screen.contains("/200 probed, 10 gone"),
        "the bar counts sources and the gone ones:\n{screen}"
    );
    assert!(
        screen.contains("t: 200 checked"),
        "the summary follows:\n{screen}"
    );
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("origin-watch") && text.contains("dry-run"),
            "{shell}"
        );
    }
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH origin-watch 1"), "{page}");
    for needle in [
        "audit",
        "shard",
        "origin-watch once",
        "dry\\-run",
        "listen",
        "shutdown\\-timeout",
        "EXIT STATUS",
    ] {
        assert!(page.contains(needle), "{needle} missing from\n{page}");
    }
    assert!(
        !page.contains("origin\\-watch\\-once(1)"),
        "no links to pages that do not exist"
    );
}
