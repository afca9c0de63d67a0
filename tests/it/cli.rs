//! End-to-end tests of the built `origin-watch` binary: each test starts a
//! loopback origin and a fake Vercel API, writes a `watch.yaml` into a
//! tempdir, runs the binary as a child process and asserts on its exit code,
//! its output and, above all, on what the fakes actually received.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use origin_watch::store::{self, Access};
use serde_json::Value;
use tempfile::TempDir;
use testkit::{Behavior, FakeOrigin, FakeVercel, FakeVercelConfig};

const BIN: &str = env!("CARGO_BIN_EXE_origin-watch");

/// A `once`/`audit`/`check` that takes longer than this is hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

/// The keys the contract gives every report line.
const REPORT_KEYS: [&str; 10] = [
    "time", "watch", "project", "src", "probe", "status", "verdict", "decision", "reason",
    "dry_run",
];

// ---------------------------------------------------------------------------
// Harness

/// One test's world: a tempdir, an origin, a fake Vercel and a token
/// variable that only the child ever sees.
struct World {
    dir: TempDir,
    origin: FakeOrigin,
    vercel: FakeVercel,
    token_env: String,
    token: String,
}

/// What a finished child left behind.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Out {
    /// The stderr lines that are JSON log events.
    fn events(&self) -> Vec<Value> {
        json_lines(&self.stderr)
    }

    fn everything(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

impl World {
    /// A world whose fake Vercel accepts the token the child is given.
    async fn new(tag: &str, routes: &[(&str, Behavior)], default: Behavior) -> World {
        let token = format!("tok_{tag}_s3cr3t_9f2c");
        Self::with_vercel(
            tag,
            routes,
            default,
            FakeVercelConfig::new(token.clone()),
            token,
        )
        .await
    }

    async fn with_vercel(
        tag: &str,
        routes: &[(&str, Behavior)],
        default: Behavior,
        vercel: FakeVercelConfig,
        token: String,
    ) -> World {
        let origin = FakeOrigin::start(
            routes.iter().map(|(p, b)| ((*p).to_owned(), b.clone())),
            default,
        )
        .await
        .expect("start fake origin");
        let vercel = FakeVercel::start(vercel).await.expect("start fake vercel");
        World {
            dir: tempfile::tempdir().expect("tempdir"),
            origin,
            vercel,
            token_env: format!("OW_CLI_TEST_{}_TOKEN", tag.to_uppercase()),
            token,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("watch.yaml")
    }

    fn state_path(&self) -> PathBuf {
        self.dir.path().join("state").join("state.db")
    }

    fn report_path(&self) -> PathBuf {
        self.dir.path().join("report.jsonl")
    }

    /// The `vercel:` and `state:` sections pointing at this world's fakes.
    fn header(&self) -> String {
        format!(
            "vercel:\n  token_env: {}\n  api_base: '{}'\nstate: '{}'\n",
            self.token_env,
            self.vercel.base_url(),
            self.state_path().display()
        )
    }

    /// Writes `header() + rest` as the config.
    fn write_config(&self, rest: &str) {
        std::fs::write(self.config_path(), format!("{}{rest}", self.header()))
            .expect("write config");
    }

    /// One watch named `name` over this origin with `extra` keys (each line
    /// indented by four spaces) and these images.
    fn watch(&self, name: &str, project: &str, extra: &str, images: &[&str]) -> String {
        let images = images
            .iter()
            .map(|i| format!("      - '{i}'\n"))
            .collect::<String>();
        format!(
            "  - name: {name}\n    project: {project}\n    origin: '{}'\n{extra}    images:\n{images}",
            self.origin.base_url()
        )
    }

    /// The binary with `-c watch.yaml --log-format json`, run from the tempdir.
    fn command(&self, args: &[&str], with_token: bool) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--log-format")
            .arg("json")
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("ORIGIN_WATCH_CONFIG")
            .env_remove(&self.token_env)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if with_token {
            c.env(&self.token_env, &self.token);
        }
        c
    }

    /// Runs the binary to its end (killing it if it hangs).
    async fn run(&self, args: &[&str], with_token: bool) -> Out {
        run_to_end(self.command(args, with_token)).await
    }

    /// Starts a long-running child whose stdout and stderr go to files.
    fn spawn(&self, args: &[&str], with_token: bool, tag: &str) -> Spawned {
        let stderr = self.dir.path().join(format!("{tag}.stderr"));
        let stdout = self.dir.path().join(format!("{tag}.stdout"));
        let mut c = self.command(args, with_token);
        c.stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        Spawned {
            child: c.spawn().expect("spawn origin-watch"),
            stderr,
            stdout,
        }
    }

    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            self.origin.total(),
            0,
            "{what}: the origin was probed: {:?}",
            self.origin.requests()
        );
        assert!(
            self.vercel.calls().is_empty(),
            "{what}: the API was called: {:?}",
            self.vercel.calls()
        );
    }
}

/// Runs `c` to its end. The child is waited for on a blocking thread (the
/// dev-dependency tokio has no `process` feature), and killed if it hangs,
/// so a hung binary fails the test instead of hanging the suite.
async fn run_to_end(mut c: Command) -> Out {
    let started = Instant::now();
    let child = c.spawn().expect("spawn origin-watch");
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output = match tokio::time::timeout(CHILD_TIMEOUT, waiting).await {
        Ok(joined) => joined.expect("join").expect("wait for origin-watch"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("origin-watch did not finish within {CHILD_TIMEOUT:?}");
        }
    };
    Out {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// A child that runs until told to stop; killed if the test ends first.
struct Spawned {
    child: Child,
    stderr: PathBuf,
    stdout: PathBuf,
}

impl Spawned {
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            self.stderr()
        )
    }

    /// Waits up to `within` for the child to exit; `None` if it did not.
    async fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    async fn terminate(&mut self, within: Duration) -> Option<i32> {
        self.signal("TERM");
        match self.wait(within).await {
            Some(status) => status.code(),
            None => panic!("no exit within {within:?} of SIGTERM\n{}", self.logs()),
        }
    }

    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.still_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` every 50 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = http().get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Polls `/healthz` until it answers 200.
async fn wait_healthy(base: &str, child: &mut Spawned) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((200, _)) = get(&format!("{base}/healthz")).await {
            return;
        }
        assert!(
            child.still_running(),
            "run exited before /healthz answered\n{}",
            child.logs()
        );
        assert!(
            Instant::now() < deadline,
            "/healthz never answered 200\n{}",
            child.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The store's inventory as `{"watches": {watch: {src: row}}}`, read the
/// way `state show` reads it (on a thread of its own: callers may be inside
/// a runtime).
fn read_state(path: &Path) -> Value {
    let path = path.to_owned();
    let rows = std::thread::spawn(move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let store = store::open(&path, None, Access::Read)
                .await
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            store.show(None, &[]).await.unwrap()
        })
    })
    .join()
    .unwrap();
    let mut watches = serde_json::Map::new();
    for row in rows {
        let entry = watches
            .entry(row.watch.clone())
            .or_insert_with(|| Value::Object(Default::default()));
        entry[row.src.clone()] = serde_json::to_value(&row).unwrap();
    }
    serde_json::json!({ "watches": watches })
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// 1. Configuration errors

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_exit_2_before_any_request() {
    let w = World::new("config", &[], Behavior::Present).await;
    let base = w.origin.base_url();
    let long = format!("/{}", "x".repeat(8200));
    // `imagez` is on the fifth line after the header.
    let imagez_line = format!("line {}", w.header().lines().count() + 5);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key",
            format!(
                "watches:\n  - name: site\n    project: p\n    origin: '{base}'\n    imagez: [/a.png]\n"
            ),
            vec!["imagez", &imagez_line],
        ),
        (
            "bad cron expression",
            format!(
                "watches:\n  - name: nightly\n    project: p\n    origin: '{base}'\n    schedule: '61 * * * *'\n    images: [/a.png]\n"
            ),
            vec!["nightly", "schedule"],
        ),
        (
            "bad duration",
            format!(
                "defaults:\n  timeout: 10 parsecs\nwatches:\n  - name: site\n    project: p\n    origin: '{base}'\n    images: [/a.png]\n"
            ),
            vec!["timeout", "10 parsecs"],
        ),
        (
            "duplicate watch names",
            format!(
                "watches:\n  - {{ name: twin, project: p, origin: '{base}', images: [/a.png] }}\n  - {{ name: twin, project: p, origin: '{base}', images: [/b.png] }}\n"
            ),
            vec!["duplicate", "twin"],
        ),
        (
            "path-style source without origin",
            "watches:\n  - name: site\n    project: p\n    images: [/orphan.png]\n".to_owned(),
            vec!["/orphan.png", "origin"],
        ),
        (
            "source over 8192 chars",
            format!(
                "watches:\n  - name: site\n    project: p\n    origin: '{base}'\n    images: ['/a.png', '{long}']\n"
            ),
            vec!["8192"],
        ),
        (
            "missing images_file",
            format!(
                "watches:\n  - name: site\n    project: p\n    origin: '{base}'\n    images: [/a.png]\n    images_file: no-such-list.txt\n"
            ),
            vec!["images_file", "no-such-list.txt"],
        ),
    ];
    for (what, rest, named) in cases {
        w.write_config(&rest);
        let out = w.run(&["once"], true).await;
        assert_eq!(out.code, Some(2), "{what}: {}", out.everything());
        for n in named {
            assert!(
                out.stderr.contains(n),
                "{what}: stderr does not name {n:?}\n{}",
                out.everything()
            );
        }
        w.assert_untouched(what);
        assert!(!w.state_path().exists(), "{what}: state was written");
    }
}

// ---------------------------------------------------------------------------
// 2. Missing token

#[tokio::test(flavor = "multi_thread")]
async fn missing_token_is_a_usage_error_only_when_purging() {
    let w = World::new("notoken", &[], Behavior::Present).await;
    w.write_config(&format!(
        "watches:\n{}",
        w.watch("site", "proj-nt", "", &["/a.png", "/b.png"])
    ));

    let out = w.run(&["once"], false).await;
    assert_eq!(out.code, Some(2), "{}", out.everything());
    assert!(
        out.stderr.contains(&w.token_env),
        "stderr does not name the variable\n{}",
        out.everything()
    );
    w.assert_untouched("once without a token");
    assert!(!w.state_path().exists());

    let out = w.run(&["audit"], false).await;
    assert_eq!(out.code, Some(0), "audit: {}", out.everything());
    assert!(
        w.origin.count("HEAD", "/a.png") >= 1,
        "audit probed nothing"
    );

    w.origin.clear();
    let out = w.run(&["once", "--dry-run"], false).await;
    assert_eq!(out.code, Some(0), "once --dry-run: {}", out.everything());
    assert!(
        w.origin.count("HEAD", "/b.png") >= 1,
        "dry run probed nothing"
    );

    assert!(w.vercel.calls().is_empty(), "{:?}", w.vercel.calls());
    assert!(
        !w.state_path().exists(),
        "a run without the token wrote state"
    );
}

// ---------------------------------------------------------------------------
// 3. Two passes confirm, the second purges, the third does not purge again

#[tokio::test(flavor = "multi_thread")]
async fn second_pass_purges_the_confirmed_sources_once() {
    let w = World::new(
        "twopass",
        &[
            ("/a.png", Behavior::Present),
            ("/b.png", Behavior::Status(404)),
            ("/c.png", Behavior::Status(410)),
        ],
        Behavior::Status(500),
    )
    .await;
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            "site",
            "my-next-app",
            "    confirmations: 2\n    max_purge_fraction: 1.0\n",
            &["/a.png", "/b.png", "/c.png"]
        )
    ));
    let report = w.report_path();
    let report_arg = report.to_str().expect("utf-8 path");
    let decisions = |expected: &[(&str, &str)]| {
        let text = std::fs::read_to_string(&report).expect("read report");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("report line is not JSON ({e}): {l}"))
            })
            .collect();
        assert_eq!(lines.len(), 3, "one line per image:\n{text}");
        for line in &lines {
            let obj = line.as_object().expect("report line is an object");
            for k in REPORT_KEYS {
                assert!(obj.contains_key(k), "report line lacks {k:?}: {line}");
            }
            assert_eq!(line["watch"], "site", "{line}");
            assert_eq!(line["project"], "my-next-app", "{line}");
            assert_eq!(line["dry_run"], false, "{line}");
            let src = line["src"].as_str().expect("src");
            assert_eq!(line["probe"], w.origin.url(src), "{line}");
        }
        for (src, decision) in expected {
            let line = lines
                .iter()
                .find(|l| l["src"] == *src)
                .unwrap_or_else(|| panic!("no report line for {src}:\n{text}"));
            assert_eq!(line["decision"], *decision, "{line}");
        }
        lines
    };

    // First pass: /b and /c are gone once, which is not enough.
    let out = w.run(&["once", "--report", report_arg], true).await;
    assert_eq!(out.code, Some(0), "{}", out.everything());
    assert!(
        w.vercel.calls().is_empty(),
        "first pass called the API: {:?}",
        w.vercel.calls()
    );
    assert!(
        out.stdout.contains("2 pending"),
        "summary does not mention pending:\n{}",
        out.stdout
    );
    decisions(&[
        ("/a.png", "keep"),
        ("/b.png", "pending"),
        ("/c.png", "pending"),
    ]);

    // Second pass: confirmed, one call for both.
    let out = w.run(&["once", "--report", report_arg], true).await;
    assert_eq!(out.code, Some(0), "{}", out.everything());
    let calls = w.vercel.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.status, 200, "{call:?}");
    assert_eq!(call.method, "POST");
    assert_eq!(sorted(&call.src_images), ["/b.png", "/c.png"]);
    assert_eq!(call.query_value("projectIdOrName"), Some("my-next-app"));
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {}", w.token).as_str())
    );
    let lines = decisions(&[("/a.png", "keep"), ("/b.png", "purge"), ("/c.png", "purge")]);
    let b = lines.iter().find(|l| l["src"] == "/b.png").expect("b");
    assert_eq!(
        (b["status"].as_u64(), b["verdict"].as_str()),
        (Some(404), Some("gone"))
    );
    let c = lines.iter().find(|l| l["src"] == "/c.png").expect("c");
    assert_eq!(c["status"].as_u64(), Some(410));

    // Third pass: still gone, already purged in this episode: no new call.
    let out = w.run(&["once", "--report", report_arg], true).await;
    assert_eq!(out.code, Some(0), "{}", out.everything());
    decisions(&[
        ("/a.png", "keep"),
        ("/b.png", "already_purged"),
        ("/c.png", "already_purged"),
    ]);
    assert_eq!(
        w.vercel.calls().len(),
        1,
        "a second call was made: {:?}",
        w.vercel.calls()
    );
}

// ---------------------------------------------------------------------------
// 4. audit

#[tokio::test(flavor = "multi_thread")]
async fn audit_prints_what_would_be_purged_and_changes_nothing() {
    let w = World::new(
        "audit",
        &[
            ("/b.png", Behavior::Status(404)),
            ("/c.png", Behavior::Status(410)),
        ],
        Behavior::Present,
    )
    .await;
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            "site",
            "proj-audit",
            "    confirmations: 1\n    max_purge_fraction: 1.0\n",
            &["/a.png", "/b.png", "/c.png"]
        )
    ));

    let out = w.run(&["audit"], true).await;
    assert_eq!(out.code, Some(0), "{}", out.everything());
    for src in ["/b.png", "/c.png"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.contains("would purge") && l.contains(src)),
            "no `would purge {src}` line:\n{}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.lines().any(|l| l.contains("would purge /a.png")),
        "a present image would be purged:\n{}",
        out.stdout
    );
    assert!(w.origin.count("HEAD", "/b.png") >= 1, "audit did not probe");
    assert!(!w.state_path().exists(), "audit created the state file");

    let out = w.run(&["audit", "--report", "-"], true).await;
    assert_eq!(out.code, Some(0), "{}", out.everything());
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let mut got: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["dry_run"], true, "{l}");
            (
                l["src"].as_str().unwrap_or_default().to_owned(),
                l["decision"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("/a.png".to_owned(), "keep".to_owned()),
            ("/b.png".to_owned(), "would_purge".to_owned()),
            ("/c.png".to_owned(), "would_purge".to_owned())
        ]
    );

    assert!(
        w.vercel.calls().is_empty(),
        "audit called the API: {:?}",
        w.vercel.calls()
    );
    assert!(!w.state_path().exists(), "audit created the state file");
}

// ---------------------------------------------------------------------------
// 5. The token stays secret when the API rejects it

#[tokio::test(flavor = "multi_thread")]
async fn rejected_token_fails_without_revealing_it() {
    let secret = "tok_secret_rejected_7Hq2Zx".to_owned();
    let w = World::with_vercel(
        "rejected",
        &[("/b.png", Behavior::Status(404))],
        Behavior::Present,
        FakeVercelConfig::new("the-right-token"),
        secret.clone(),
    )
    .await;
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            "site",
            "proj-secret",
            "    confirmations: 1\n    max_purge_fraction: 1.0\n",
            &["/a.png", "/b.png"]
        )
    ));
    let report = w.report_path();
    let out = w
        .run(&["once", "--report", report.to_str().expect("utf-8")], true)
        .await;
    assert_eq!(out.code, Some(1), "{}", out.everything());

    // The binary did send the secret, and the fake refused it.
    let calls = w.vercel.calls();
    assert!(!calls.is_empty(), "no API call was made");
    assert!(calls.iter().all(|c| c.status == 401), "{calls:?}");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {secret}").as_str())
    );

    let report_text = std::fs::read_to_string(&report).expect("report");
    assert!(
        report_text.contains("\"failed\""),
        "report lacks the failed decision:\n{report_text}"
    );
    for (what, text) in [
        ("stdout", &out.stdout),
        ("stderr", &out.stderr),
        ("report", &report_text),
    ] {
        assert!(
            !text.contains(&secret),
            "the token leaked into {what}:\n{text}"
        );
    }
    // Every decision event names the project; the error itself must name
    // both the variable and the project.
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains(&w.token_env) && l.contains("proj-secret") && l.contains("401")),
        "no stderr line names the token variable, the project and the 401\n{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------
// 6. Guards: exit 3

#[tokio::test(flavor = "multi_thread")]
async fn guard_trip_exits_3_without_purging() {
    // Every image gone: more than max_purge_fraction (default 0.25).
    let w = World::new("fraction", &[], Behavior::Status(404)).await;
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            "site",
            "proj-guard",
            "    confirmations: 1\n",
            &["/a.png", "/b.png", "/c.png", "/d.png"]
        )
    ));
    let out = w.run(&["once"], true).await;
    assert_eq!(out.code, Some(3), "{}", out.everything());
    assert!(w.origin.count("HEAD", "/a.png") >= 1, "nothing was probed");
    assert!(w.vercel.calls().is_empty(), "{:?}", w.vercel.calls());
    let warned = out.events().into_iter().any(|e| {
        e["level"]
            .as_str()
            .is_some_and(|l| l.eq_ignore_ascii_case("warn"))
            && e.to_string().contains("max_purge_fraction")
    });
    assert!(
        warned,
        "no warn event about max_purge_fraction:\n{}",
        out.stderr
    );

    // A canary that is not there: the origin looks broken.
    let w = World::new(
        "canary",
        &[
            ("/logo.png", Behavior::Status(404)),
            ("/gone.png", Behavior::Status(404)),
        ],
        Behavior::Present,
    )
    .await;
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            "site",
            "proj-canary",
            "    canary: /logo.png\n    confirmations: 1\n    max_purge_fraction: 1.0\n",
            &["/a.png", "/b.png", "/c.png", "/gone.png"]
        )
    ));
    let out = w.run(&["once"], true).await;
    assert_eq!(out.code, Some(3), "{}", out.everything());
    assert!(
        w.origin.count("HEAD", "/logo.png") >= 1,
        "the canary was not probed"
    );
    assert!(
        w.origin.count("HEAD", "/gone.png") >= 1,
        "the images were not probed"
    );
    assert!(w.vercel.calls().is_empty(), "{:?}", w.vercel.calls());
}

// ---------------------------------------------------------------------------
// 7. Single writer

#[tokio::test(flavor = "multi_thread")]
async fn a_second_writer_is_refused() {
    let w = World::new(
        "lock",
        &[("/b.png", Behavior::Status(404))],
        Behavior::Present,
    )
    .await;
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            "site",
            "proj-lock",
            "    confirmations: 1\n    max_purge_fraction: 1.0\n",
            &["/a.png", "/b.png"]
        )
    ));
    let store = store::open(&w.state_path(), None, Access::Write)
        .await
        .expect("take the lock");

    let out = w.run(&["once"], true).await;
    assert_eq!(out.code, Some(2), "{}", out.everything());
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
    assert!(
        out.stderr.contains(&w.state_path().display().to_string()),
        "stderr does not name the state file\n{}",
        out.stderr
    );
    w.assert_untouched("locked state");

    drop(store);
    let out = w.run(&["once"], true).await;
    assert_eq!(out.code, Some(0), "{}", out.everything());
    assert_eq!(w.vercel.purged(), ["/b.png"]);
}

// ---------------------------------------------------------------------------
// 8. kill -9 at any moment leaves a valid state

/// When to SIGKILL a `once` in flight.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    After(Duration),
    /// As soon as the fake API sees the pass's first purge call: the pass
    /// is purging and about to save its state.
    FirstPurgeCall,
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_pass_leaves_valid_state() {
    const SOURCES: usize = 2000;
    // Every 20th image answers slowly (and is present), so a pass takes a
    // second or two; the rest are gone.
    let slow: Vec<String> = (0..SOURCES)
        .step_by(20)
        .map(|i| format!("/img/{i}.png"))
        .collect();
    let routes: Vec<(&str, Behavior)> = slow
        .iter()
        .map(|p| (p.as_str(), Behavior::Slow(Duration::from_millis(150))))
        .collect();
    let w = World::new("crash", &routes, Behavior::Status(404)).await;
    let list: String = (0..SOURCES).map(|i| format!("/img/{i}.png\n")).collect();
    std::fs::write(w.dir.path().join("images.txt"), list).expect("images file");
    // At most 300 purges a pass, so every pass has purges left to make.
    w.write_config(&format!(
        "watches:\n  - name: bulk\n    project: proj-crash\n    origin: '{}'\n    confirmations: 1\n    max_purge_fraction: 1.0\n    max_purges_per_pass: 300\n    images_file: images.txt\n",
        w.origin.base_url()
    ));

    // The state parses, has the right version, and marks purged only what
    // the API accepted.
    let check_state = |after: &str| {
        let state = read_state(&w.state_path());
        let bulk = state["watches"]["bulk"]
            .as_object()
            .unwrap_or_else(|| panic!("{after}: no episodes for the watch: {state}"));
        let accepted: std::collections::HashSet<String> = w.vercel.purged().into_iter().collect();
        for (src, episode) in bulk {
            if episode["purged_at"].is_string() {
                assert!(
                    accepted.contains(src),
                    "{after}: {src} marked purged but never accepted by the API"
                );
            }
        }
    };

    let out = w.run(&["once"], true).await;
    assert!(
        matches!(out.code, Some(0 | 1)),
        "first pass: {}",
        out.everything()
    );
    assert_eq!(w.vercel.purged().len(), 300, "first pass: {}", out.stdout);
    check_state("first pass");

    for at in [
        KillAt::After(Duration::from_millis(50)),
        KillAt::After(Duration::from_millis(300)),
        KillAt::After(Duration::from_secs(1)),
        KillAt::FirstPurgeCall,
    ] {
        let calls_before = w.vercel.calls().len();
        let mut child = w.command(&["once"], true);
        child.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = Spawned {
            child: child.spawn().expect("spawn"),
            stderr: PathBuf::new(),
            stdout: PathBuf::new(),
        };
        match at {
            KillAt::After(delay) => tokio::time::sleep(delay).await,
            KillAt::FirstPurgeCall => {
                let purging = eventually(Duration::from_secs(10), || {
                    w.vercel.calls().len() > calls_before
                })
                .await;
                assert!(purging, "the pass never reached its purge calls");
            }
        }
        // `Child::kill` is SIGKILL: no handler runs, nothing is flushed.
        child.child.kill().expect("SIGKILL");
        let status = child.wait(Duration::from_secs(5)).await;
        assert!(status.is_some(), "killed child not reaped");
        check_state(&format!("SIGKILL {at:?}"));

        let out = w.run(&["once"], true).await;
        assert!(
            matches!(out.code, Some(0 | 1)),
            "pass after SIGKILL {at:?}: {}",
            out.everything()
        );
        check_state(&format!("pass after SIGKILL {at:?}"));
    }
}

// ---------------------------------------------------------------------------
// 9. check

#[tokio::test(flavor = "multi_thread")]
async fn check_prints_the_plan_without_network() {
    let w = World::new("check", &[], Behavior::Present).await;
    w.write_config(&format!(
        "watches:\n{}{}",
        w.watch(
            "site",
            "proj-a",
            "    schedule: '*/5 * * * *'\n",
            &["/a.png", "/b.png", "/c.png"]
        ),
        w.watch("blog", "proj-b", "", &["/x.png"])
    ));
    let out = w.run(&["check"], false).await;
    assert_eq!(out.code, Some(0), "{}", out.everything());
    for (name, images) in [("site", "3 images"), ("blog", "1 image (1 probe URL)")] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.contains(name) && l.contains(images)),
            "no line for {name} with {images}:\n{}",
            out.stdout
        );
    }
    let fires: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("next fires"))
        .collect();
    assert_eq!(fires.len(), 2, "{}", out.stdout);
    for l in fires {
        // Three RFC 3339 instants in UTC.
        assert!(l.matches('Z').count() >= 3 && l.contains('T'), "{l}");
    }
    w.assert_untouched("check");
    assert!(!w.state_path().exists(), "check wrote state");
}

// ---------------------------------------------------------------------------
// 10. The sidecar

fn sidecar_config(w: &World, name: &str, project: &str) {
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            name,
            project,
            "    schedule: '* * * * * *'\n    confirmations: 1\n    max_purge_fraction: 1.0\n",
            &["/a.png", "/b.png", "/c.png"]
        )
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_purges_serves_metrics_and_stops_cleanly() {
    let w = World::new(
        "sidecar",
        &[
            ("/b.png", Behavior::Status(404)),
            ("/c.png", Behavior::Status(410)),
        ],
        Behavior::Present,
    )
    .await;
    sidecar_config(&w, "side", "proj-side");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let mut child = w.spawn(&["run", "--listen", &listen], true, "run");
    wait_healthy(&base, &mut child).await;

    let purged = eventually(Duration::from_secs(10), || w.vercel.purged().len() >= 2).await;
    assert!(
        purged,
        "no purge within 10 s: {:?}\n{}",
        w.vercel.calls(),
        child.logs()
    );
    assert_eq!(sorted(&w.vercel.purged()), ["/b.png", "/c.png"]);

    let expected = [
        r#"origin_watch_decisions_total{watch="side",decision="purge"} 2"#,
        r#"origin_watch_purge_calls_total{project="proj-side",outcome="ok"} 1"#,
        r#"origin_watch_sources{watch="side"} 3"#,
        r#"origin_watch_probes_total{watch="side",verdict="gone"} "#,
        r#"origin_watch_probes_total{watch="side",verdict="present"} "#,
        r#"origin_watch_last_pass_timestamp_seconds{watch="side"} "#,
        r#"origin_watch_pass_duration_seconds{watch="side"} "#,
        r#"origin_watch_guard_trips_total{watch="side",guard="max_purge_fraction"} 0"#,
        r#"origin_watch_purge_calls_total{project="proj-side",outcome="failed"} 0"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let (status, text) = get(&format!("{base}/metrics")).await.expect("GET /metrics");
        assert_eq!(status, 200);
        if expected.iter().all(|l| text.contains(l)) || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for line in expected {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let (status, body) = get(&format!("{base}/healthz")).await.expect("GET /healthz");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).expect("healthz is JSON");
    assert_eq!(health["status"], "ok", "{health}");
    let side = &health["watches"]["side"];
    assert_eq!(side["outcome"], "ok", "{health}");
    for key in ["last_pass", "next_fire"] {
        let t = side[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} in {health}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{key}: {t}"
        );
    }

    let code = child.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", child.logs());
    assert_eq!(
        w.vercel.calls().len(),
        1,
        "purged more than once: {:?}",
        w.vercel.calls()
    );
    let state = read_state(&w.state_path());
    for src in ["/b.png", "/c.png"] {
        assert!(
            state["watches"]["side"][src]["purged_at"].is_string(),
            "{src} not marked purged: {state}"
        );
    }
    let a = &state["watches"]["side"]["/a.png"];
    assert_eq!(a["last_verdict"], "present", "{state}");
    assert_eq!(a["purged"], false, "a present image marked purged: {state}");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_dry_run_never_calls_the_api_or_writes_state() {
    let w = World::new(
        "sidecardry",
        &[
            ("/b.png", Behavior::Status(404)),
            ("/c.png", Behavior::Status(410)),
        ],
        Behavior::Present,
    )
    .await;
    // Two confirmations: only streaks kept in memory across passes can
    // ever reach would_purge.
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            "dry",
            "proj-dry",
            "    schedule: '* * * * * *'\n    confirmations: 2\n    max_purge_fraction: 1.0\n",
            &["/a.png", "/b.png", "/c.png"]
        )
    ));
    // No token: a dry run does not need it.
    let mut child = w.spawn(&["run", "--dry-run"], false, "dry");
    let decided = |d: &str| {
        json_lines(&child.stderr())
            .iter()
            .any(|e| e["src"] == "/b.png" && e["decision"] == d)
    };
    let confirmed = eventually(Duration::from_secs(8), || decided("would_purge")).await;
    assert!(confirmed, "never would_purge\n{}", child.logs());
    assert!(decided("pending"), "{}", child.logs());
    assert!(
        child.still_running(),
        "run --dry-run exited\n{}",
        child.logs()
    );
    assert!(
        w.origin.count("HEAD", "/b.png") >= 1,
        "no pass ran in 3 s\n{}",
        child.logs()
    );
    assert!(w.vercel.calls().is_empty(), "{:?}", w.vercel.calls());
    let code = child.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", child.logs());
    assert!(w.vercel.calls().is_empty(), "{:?}", w.vercel.calls());
    assert!(!w.state_path().exists(), "run --dry-run wrote state");
}

// ---------------------------------------------------------------------------
// 11. SIGHUP reloads the config

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_survives_a_bad_config() {
    let w = World::new("reload", &[], Behavior::Present).await;
    let every_second = "    schedule: '* * * * * *'\n";
    let first = w.watch("first", "proj-r", every_second, &["/first.png"]);
    w.write_config(&format!("watches:\n{first}"));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let mut child = w.spawn(&["run", "--listen", &listen], true, "reload");
    wait_healthy(&base, &mut child).await;

    // A broken config is refused; the old one keeps running.
    w.write_config(&format!("watches:\n{first}    bogus_key: 1\n"));
    child.signal("HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        child.still_running(),
        "SIGHUP with a bad config stopped run\n{}",
        child.logs()
    );
    assert_eq!(
        get(&format!("{base}/healthz")).await.map(|r| r.0),
        Some(200)
    );
    let reload_error = eventually(Duration::from_secs(3), || {
        json_lines(&child.stderr()).iter().any(|e| {
            e["level"]
                .as_str()
                .is_some_and(|l| l.eq_ignore_ascii_case("error"))
                && e.to_string().to_lowercase().contains("reload")
        })
    })
    .await;
    assert!(
        reload_error,
        "no error event about the reload\n{}",
        child.logs()
    );
    assert!(
        child.stderr().contains("bogus_key"),
        "the reload error names the bad key\n{}",
        child.logs()
    );

    // A good config with a second watch takes effect.
    let second = w.watch("second", "proj-r", every_second, &["/second.png"]);
    w.write_config(&format!("watches:\n{first}{second}"));
    child.signal("HUP");
    let probed = eventually(Duration::from_secs(5), || {
        w.origin.count("HEAD", "/second.png") >= 1
    })
    .await;
    assert!(
        probed,
        "the new watch's image was never probed\n{}",
        child.logs()
    );
    assert!(w.origin.count("HEAD", "/first.png") >= 1);

    let code = child.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", child.logs());
    assert!(w.vercel.calls().is_empty(), "{:?}", w.vercel.calls());
}

// ---------------------------------------------------------------------------
// 12. SIGTERM with a purge call in flight

/// Twenty gone images (three batches) against an API that answers each
/// call after `delay`; `run` is started and the first call awaited.
async fn slow_api_world(tag: &str, delay: Duration) -> (World, Vec<String>) {
    let token = format!("tok_{tag}_s3cr3t");
    let vercel = FakeVercelConfig {
        delay,
        ..FakeVercelConfig::new(token.clone())
    };
    let w = World::with_vercel(tag, &[], Behavior::Status(404), vercel, token).await;
    let images: Vec<String> = (0..20).map(|i| format!("/g{i:02}.png")).collect();
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    w.write_config(&format!(
        "watches:\n{}",
        w.watch(
            "slow",
            "proj-slow",
            "    schedule: '* * * * * *'\n    confirmations: 1\n    max_purge_fraction: 1.0\n",
            &refs
        )
    ));
    (w, images)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_call_in_flight_finish_and_saves_it() {
    let (w, images) = slow_api_world("inflight", Duration::from_secs(2)).await;
    let mut child = w.spawn(&["run", "--shutdown-timeout", "15s"], true, "inflight");
    let called = eventually(Duration::from_secs(10), || !w.vercel.calls().is_empty()).await;
    assert!(called, "no purge call\n{}", child.logs());
    let code = child.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", child.logs());

    let calls = w.vercel.calls();
    assert_eq!(calls.len(), 1, "no new call after SIGTERM: {calls:?}");
    let sent = calls[0].src_images.clone();
    assert_eq!(sent.len(), 8);
    let state = read_state(&w.state_path());
    for src in &images {
        let purged = state["watches"]["slow"][src.as_str()]["purged_at"].is_string();
        assert_eq!(purged, sent.contains(src), "{src}: {state}");
    }
    // The batches never sent are withheld for a later pass, not failed.
    let stdout = std::fs::read_to_string(&child.stdout).unwrap();
    assert!(
        stdout.contains("8 purged, 0 pending, 0 already purged, 12 withheld, 0 failed"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shutdown_timeout_bounds_the_wait_and_exits_1() {
    let (w, _) = slow_api_world("bound", Duration::from_secs(20)).await;
    let mut child = w.spawn(&["run", "--shutdown-timeout", "1s"], true, "bound");
    let called = eventually(Duration::from_secs(10), || !w.vercel.calls().is_empty()).await;
    assert!(called, "no purge call\n{}", child.logs());
    let started = Instant::now();
    let code = child.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, Some(1), "not a clean shutdown\n{}", child.logs());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} with --shutdown-timeout 1s",
        started.elapsed()
    );
    assert!(
        child.stderr().contains("shutdown timeout"),
        "{}",
        child.logs()
    );
    // Saved, and nothing marked purged whose 200 never came.
    let state = read_state(&w.state_path());
    assert!(!state.to_string().contains("\"purged\":true"), "{state}");
}
