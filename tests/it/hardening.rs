//! Hardening (issue 13): hostile origins, a misbehaving API, bad input and
//! exposed ports lose nothing and leak nothing. Each test plays the attacker
//! or the unlucky operator over loopback and asserts on what the fakes
//! received and what origin-watch printed.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::Harness;
use futures::StreamExt;
use origin_watch::config::Config;
use origin_watch::exit::Exit;
use testkit::fake_origin::Behavior;

/// Serves `router` on a loopback port for the rest of the test.
async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// A config with `vercel.api_base: api` and the harness's state file.
fn config_with_api(h: &Harness, api: &str, rest: &str) -> Config {
    let yaml = format!(
        "vercel:\n  api_base: {api}\nstate: {}\n{}",
        h.state_path().display(),
        rest.replace("{origin}", &h.origin.base_url())
    );
    Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn one_watch(defaults: &str, images: &str) -> String {
    format!(
        "defaults: {{ confirmations: 1, max_purge_fraction: 1.0, {defaults} }}\nwatches:\n  - name: site\n    project: p\n    origin: '{{origin}}'\n    images: {images}\n"
    )
}

fn config_error(yaml: &str) -> String {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("expected a config error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

// ---- 1. API redirects -------------------------------------------------------

#[tokio::test]
async fn an_api_redirect_is_a_failed_call_and_the_token_never_leaves() {
    let h = Harness::new(&[("/a.png", Behavior::Status(404))], Behavior::Present).await;
    // An "API" that redirects every call to another host (the real fake API,
    // which would answer 200).
    let elsewhere = h.api.base_url();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let redirector = Router::new().fallback(move |req: Request| {
        let to = format!(
            "{elsewhere}{}",
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        counter.fetch_add(1, Ordering::SeqCst);
        async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response() }
    });
    let api = serve(redirector).await;
    let c = config_with_api(&h, &format!("http://{api}"), &one_watch("", "[/a.png]"));
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "failed");
    let reason = ran.record("/a.png")["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("redirect"), "{reason}");
    assert_eq!(ran.outcome.exit(), Exit::PurgeFailed);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "one call, no retry in the pass"
    );
    assert!(
        h.api.calls().is_empty(),
        "the redirect was followed: {:?}",
        h.api.calls()
    );
    // Retried next pass: still failed, still never purged elsewhere.
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "failed");
    assert!(h.api.calls().is_empty());
}

// ---- 2. Bases with a query or fragment; joins ---------------------------------

#[test]
fn a_base_with_a_query_or_fragment_is_refused_naming_the_key() {
    for origin in [
        "https://o.example/?v=2",
        "https://o.example/#x",
        "https://o.example?",
    ] {
        let e = config_error(&format!(
            "watches:\n  - name: s\n    project: p\n    origin: '{origin}'\n    images: [/a.png]\n"
        ));
        assert!(
            e.contains("watches[0] (s).origin") && e.contains("query or fragment"),
            "{e}"
        );
    }
    let e = config_error(
        "vercel: { api_base: 'https://api.example/?x=1' }\nwatches:\n  - { name: s, project: p, origin: 'https://o.example', images: [/a.png] }\n",
    );
    assert!(
        e.contains("vercel.api_base") && e.contains("query or fragment"),
        "{e}"
    );
    let e = config_error(
        "watches:\n  - { name: s, project: p, origin: 'https://o.example', canary: 'https://o.example/logo.png#top', images: [/a.png] }\n",
    );
    assert!(e.contains("canary") && e.contains("fragment"), "{e}");
}

#[test]
fn paths_are_joined_to_the_base_by_the_url_library() {
    let c = Config::from_yaml(
        "watches:\n  - { name: s, project: p, origin: 'HTTPS://O.example/base/', images: ['/a b.png', '/q.png?w=1', '/f.png#frag', 'HTTP://CDN.example/x.png'] }\n",
    )
    .unwrap();
    let w = &c.watches()[0];
    let urls: Vec<String> = w
        .probes()
        .iter()
        .map(|p| w.probe_url(p).into_owned())
        .collect();
    assert_eq!(
        urls,
        [
            "https://o.example/base/a%20b.png",
            "https://o.example/base/q.png?w=1",
            "https://o.example/base/f.png",
            "HTTP://CDN.example/x.png",
        ]
    );
}

#[tokio::test]
async fn a_present_image_under_a_base_path_is_probed_at_its_own_url() {
    let h = Harness::new(
        &[
            ("/base/a.png", Behavior::Present),
            ("/base/b.png", Behavior::Status(404)),
        ],
        Behavior::Status(404),
    )
    .await;
    let c = h.config(
        "",
        &one_watch("", "[/a.png, /b.png]").replace("'{origin}'", "'{origin}/base/'"),
    );
    let ran = h.pass(&c).await;
    assert_eq!(ran.decision("/a.png"), "keep");
    assert_eq!(ran.decision("/b.png"), "purge");
    assert_eq!(h.api.purged(), ["/b.png"]);
}

// ---- 3. Redirects to other schemes --------------------------------------------

#[tokio::test]
async fn a_redirect_to_another_scheme_is_inconclusive() {
    let h = Harness::new(&[("/gone.png", Behavior::Status(404))], Behavior::Present).await;
    let port = h.origin.addr().port();
    for (i, scheme) in ["ftp", "gopher", "ws", "wss", "file"].iter().enumerate() {
        h.origin.set(
            &format!("/img/{i}.png"),
            Behavior::Redirect {
                status: 301,
                to: format!("{scheme}://127.0.0.1:{port}/gone.png"),
            },
        );
    }
    let c = h.config(
        "",
        &one_watch(
            "",
            "[/img/0.png, /img/1.png, /img/2.png, /img/3.png, /img/4.png]",
        ),
    );
    let ran = h.pass(&c).await;
    for i in 0..5 {
        let src = format!("/img/{i}.png");
        assert_eq!(ran.decision(&src), "skip", "{:?}", ran.record(&src));
        assert_eq!(ran.record(&src)["verdict"], "inconclusive");
        // Refused as a redirect, not tried and failed as a request (a
        // `file:` URL with a port is no URL at all: no usable Location).
        let record = ran.record(&src).to_string();
        let scheme = ["ftp", "gopher", "ws", "wss", "file"][i];
        let refused = format!("redirect to a {scheme}: URL not followed");
        assert!(
            record.contains(&refused)
                || (scheme == "file" && record.contains("without a usable Location")),
            "{record}"
        );
    }
    assert_eq!(h.origin.count("HEAD", "/gone.png"), 0, "followed as HTTP");
    assert!(h.api.calls().is_empty());
}

// ---- small ones ----------------------------------------------------------------

#[test]
fn the_source_limit_counts_characters() {
    let cjk = format!("/{}", "画".repeat(3000)); // 9001 bytes, 3001 characters
    Config::from_yaml(&format!(
        "watches:\n  - {{ name: s, project: p, origin: 'https://e.com', images: ['{cjk}'] }}\n"
    ))
    .unwrap();
    let long = format!("/{}", "画".repeat(8192));
    let e = config_error(&format!(
        "watches:\n  - {{ name: s, project: p, origin: 'https://e.com', images: ['{long}'] }}\n"
    ));
    assert!(
        e.contains("8193 characters") && e.contains("8192 characters"),
        "{e}"
    );
}

// ---- running the binary ---------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_origin-watch");

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` in `dir` (token set), killed after 60 s.
async fn run_bin(dir: &std::path::Path, args: &[&str], stderr_to: Option<&str>) -> Out {
    let mut c = std::process::Command::new(BIN);
    c.args(["--log-format", "json"])
        .args(args)
        .current_dir(dir)
        .env("VERCEL_TOKEN", common::TOKEN)
        .env("RUST_LOG", "info")
        .env_remove("ORIGIN_WATCH_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(match stderr_to {
            Some(path) => std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .into(),
            None => std::process::Stdio::piped(),
        });
    let child = c.spawn().expect("spawn origin-watch");
    let pid = child.id();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let out = match out {
        Ok(done) => done.unwrap().unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .status();
            panic!("origin-watch {args:?} hung");
        }
    };
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An API that answers every call 400 with an error body that echoes the
/// request's headers, as some proxies and WAFs do.
async fn echoing_api() -> SocketAddr {
    serve(Router::new().fallback(|req: Request| async move {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = serde_json::json!({"error": {"code": "bad_request", "message": format!("rejected request with Authorization: {auth}")}});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    }))
    .await
}

// ---- 4, 5, 6. Secrets, URL passwords, control characters ----------------------

#[tokio::test(flavor = "multi_thread")]
async fn no_token_password_or_control_character_reaches_the_output() {
    let h = Harness::new(&[("/ok.png", Behavior::Present)], Behavior::Status(404)).await;
    let api = echoing_api().await;
    let port = h.origin.addr().port();
    let yaml = format!(
        "vercel:\n  api_base: http://{api}\nstate: state.db\ndefaults: {{ confirmations: 1, max_purge_fraction: 1.0 }}\nwatches:\n  - name: \"site\\e[2J\"\n    project: p\n    origin: 'http://user:hunter2pw@127.0.0.1:{port}'\n    canary: /ok.png\n    images: [\"/gone.png\", \"/x\\e[2J.png\", \"http://u:hunter2pw@127.0.0.1:{port}/r.png\"]\n"
    );
    let dir = h.dir.path();
    std::fs::write(dir.join("watch.yaml"), &yaml).unwrap();
    let clean = |what: &str, text: &str| {
        assert!(
            !text.contains(common::TOKEN),
            "{what} shows the token:\n{text}"
        );
        assert!(
            !text.contains("hunter2pw"),
            "{what} shows a URL password:\n{text}"
        );
    };

    let out = run_bin(dir, &["once", "--report", "report.jsonl"], None).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report = std::fs::read_to_string(dir.join("report.jsonl")).unwrap();
    for (what, text) in [
        ("stdout", &out.stdout),
        ("stderr", &out.stderr),
        ("report", &report),
    ] {
        clean(what, text);
    }
    assert!(
        !out.stdout.contains('\u{1b}'),
        "raw escape on stdout: {:?}",
        out.stdout
    );
    assert!(out.stdout.contains("site\\u{1b}[2J"), "{}", out.stdout);
    // Not vacuous: the echo reached the report, masked.
    assert!(report.contains("Authorization: Bearer ***"), "{report}");
    assert!(report.contains("http://user:***@127.0.0.1"), "{report}");

    let out = run_bin(dir, &["check"], None).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    clean("check", &out.stdout);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);

    let out = run_bin(dir, &["audit"], None).await;
    clean("audit", &out.stdout);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);
    assert!(
        out.stdout.contains("would purge /x\\u{1b}[2J.png"),
        "{}",
        out.stdout
    );

    // A config error that quotes a URL shows no password either.
    std::fs::write(
        dir.join("watch.yaml"),
        yaml.replace(
            &format!("origin: 'http://user:hunter2pw@127.0.0.1:{port}'"),
            &format!("origin: 'http://user:hunter2pw@127.0.0.1:{port}/?v=2'"),
        ),
    )
    .unwrap();
    let out = run_bin(dir, &["check"], None).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("origin"), "{}", out.stderr);
    clean("config error", &out.stderr);
}

// ---- 12. Report and log write errors ------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_report_or_log_that_cannot_be_written_is_an_error() {
    if !std::path::Path::new("/dev/full").exists() {
        return;
    }
    let h = Harness::new(&[], Behavior::Present).await;
    let yaml = format!(
        "state: state.db\nwatches:\n  - {{ name: s, project: p, origin: '{}', images: [/a.png, /b.png] }}\n",
        h.origin.base_url()
    );
    let dir = h.dir.path();
    std::fs::write(dir.join("watch.yaml"), yaml).unwrap();
    let out = run_bin(dir, &["once", "--report", "/dev/full"], None).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot write report file /dev/full"),
        "{}",
        out.stderr
    );
    let out = run_bin(dir, &["once"], Some("/dev/full")).await;
    assert_eq!(out.code, Some(1), "a lost log exits 1");
    // The same run with a working stderr exits 0.
    assert_eq!(run_bin(dir, &["once"], None).await.code, Some(0));
}

// ---- 7. Bounded counts; a panicking pass ----------------------------------------

#[test]
fn every_count_is_bounded_naming_the_key() {
    for (key, value) in [
        ("per_host_concurrency", "18446744073709551615"),
        ("concurrency", "18446744073709551615"),
        ("concurrency", "0"),
        ("confirmations", "4294967295"),
        ("max_purges_per_pass", "18446744073709551615"),
        ("retries", "4294967295"),
        ("follow_redirects", "4294967295"),
        ("timeout", "100000000000s"),
    ] {
        let e = config_error(&format!(
            "defaults: {{ {key}: {value} }}\nwatches:\n  - {{ name: s, project: p, origin: 'https://e.com', images: [/a.png] }}\n"
        ));
        assert!(e.contains(&format!("defaults.{key}")), "{key}: {e}");
        let e = config_error(&format!(
            "watches:\n  - {{ name: s, project: p, origin: 'https://e.com', {key}: {value}, images: [/a.png] }}\n"
        ));
        assert!(e.contains(&format!("watches[0] (s).{key}")), "{key}: {e}");
    }
}

#[tokio::test]
async fn a_huge_per_host_limit_given_to_the_prober_cannot_panic_it() {
    let h = Harness::new(&[], Behavior::Present).await;
    let prober = origin_watch::probe::Prober::new().unwrap();
    let rules = origin_watch::probe::ProbeRules {
        per_host_concurrency: usize::MAX,
        ..Default::default()
    };
    let obs = prober.probe(&h.origin.url("/a.png"), &rules).await;
    assert_eq!(obs.verdict, origin_watch::probe::Verdict::Present);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_pass_shows_in_healthz_and_the_watch_keeps_firing() {
    use origin_watch::metrics::Health;
    use origin_watch::sidecar::{Clock, PassFn, watch_loop};
    let c = Config::from_yaml(
        "watches:\n  - { name: bad, project: p, origin: 'https://e.com', schedule: '* * * * * *', images: [/a.png] }\n",
    )
    .unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    let count = fired.clone();
    let pass: PassFn = Arc::new(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { panic!("boom in a pass") })
    });
    let health = Arc::new(Health::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let tracker = tokio_util::task::TaskTracker::new();
    let looping = tokio::spawn(watch_loop(
        c.watches()[0].clone(),
        pass,
        Arc::default(),
        tracker.clone(),
        Clock::new(),
        stop.clone(),
        Some(health.clone()),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fired.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.cancel();
    looping.await.unwrap();
    assert!(
        fired.load(Ordering::SeqCst) >= 3,
        "the watch stopped firing"
    );
    let (_, watches) = health.snapshot();
    assert_eq!(watches["bad"].outcome, Some("panicked"));
}

// ---- 9. Files that are not files, or too big; a BOM -----------------------------

#[tokio::test(flavor = "multi_thread")]
async fn devices_and_fifos_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("images.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut files = vec!["/dev/zero".to_owned(), "/dev/urandom".to_owned()];
    if made.is_ok_and(|s| s.success()) {
        files.push(fifo.display().to_string());
    }
    for file in &files {
        std::fs::write(
            dir.path().join("watch.yaml"),
            format!("watches:\n  - {{ name: s, project: p, origin: 'https://e.com', images_file: '{file}' }}\n"),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let out = run_bin(dir.path(), &["check"], None).await;
        assert_eq!(out.code, Some(2), "{file}: {}", out.stderr);
        assert!(
            out.stderr.contains("images_file")
                && out.stderr.contains(file.as_str())
                && out.stderr.contains("not a regular file"),
            "{file}: {}",
            out.stderr
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        let out = run_bin(dir.path(), &["-c", file, "check"], None).await;
        assert_eq!(out.code, Some(2), "{file}: {}", out.stderr);
        assert!(out.stderr.contains(file.as_str()), "{}", out.stderr);
    }
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("images.txt"), "\u{feff}/a.png\n/b.png\n").unwrap();
    let path = dir.path().join("watch.yaml");
    std::fs::write(
        &path,
        "\u{feff}watches:\n  - { name: s, project: p, origin: 'https://e.com', images_file: images.txt }\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    let srcs: Vec<&str> = c.watches()[0].sources().iter().map(|s| s.src()).collect();
    assert_eq!(srcs, ["/a.png", "/b.png"]);
}

// ---- 9, 10. A misbehaving API: huge bodies, hanging calls ----------------------

/// A pass context for `config` with `client` as the Vercel client.
async fn context_with(
    config: &Config,
    client: origin_watch::vercel::VercelClient,
) -> (origin_watch::pass::PassContext, testkit::Captured) {
    let lines = testkit::Captured::default();
    let ctx = origin_watch::pass::PassContext {
        prober: Arc::new(
            origin_watch::probe::Prober::new()
                .unwrap()
                .with_retry_base(std::time::Duration::from_millis(5)),
        ),
        vercel: Some(Arc::new(client)),
        store: origin_watch::store::open(config.state(), None, origin_watch::store::Access::Write)
            .await
            .unwrap(),
        reporter: Arc::new(origin_watch::report::Reporter::to_writer(Box::new(
            lines.clone(),
        ))),
        observer: None,
    };
    (ctx, lines)
}

fn client(config: &Config, timeout_ms: u64) -> origin_watch::vercel::VercelClient {
    origin_watch::vercel::VercelClient::new(
        config.vercel(),
        origin_watch::config::Token::new(common::TOKEN),
    )
    .unwrap()
    .with_call_timeout(std::time::Duration::from_millis(timeout_ms))
    .with_retry(origin_watch::vercel::RetryPolicy {
        max_retries: 4,
        base: std::time::Duration::from_millis(10),
        max_wait: std::time::Duration::from_millis(50),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_api_error_body_is_read_only_in_part() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let api = serve(Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
            // 1 GiB, produced only as fast as it is read.
            let body = futures::stream::iter(0..16_384).map(move |_| {
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
                Ok::<_, std::io::Error>(chunk.clone())
            });
            (StatusCode::BAD_REQUEST, axum::body::Body::from_stream(body)).into_response()
        }
    }))
    .await;
    let c = config_with_api(&h, &format!("http://{api}"), &one_watch("", "[/a.png]"));
    let (ctx, lines) = context_with(&c, client(&c, 5_000)).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    origin_watch::pass::run_pass(&ctx, c.watches(), &cancel)
        .await
        .unwrap();
    let records = lines.take_json_lines();
    assert_eq!(records[0]["decision"], "failed", "{records:?}");
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 32 * 1024 * 1024, "read {sent} bytes of the body");
}

/// An API that records each call and never answers.
async fn hanging_api() -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let addr = serve(Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }))
    .await;
    (addr, calls)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_api_costs_a_bounded_time_however_many_batches() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let (api, calls) = hanging_api().await;
    let srcs: Vec<String> = (0..40).map(|i| format!("/img/{i}.png")).collect();
    let c = config_with_api(
        &h,
        &format!("http://{api}"),
        &one_watch("", &format!("{srcs:?}")),
    );
    let (ctx, lines) = context_with(&c, client(&c, 200)).await;
    let started = std::time::Instant::now();
    let cancel = tokio_util::sync::CancellationToken::new();
    let outcome = origin_watch::pass::run_pass(&ctx, c.watches(), &cancel)
        .await
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(outcome.exit(), Exit::PurgeFailed);
    let calls = calls.load(Ordering::SeqCst);
    assert_eq!(
        calls,
        origin_watch::vercel::MAX_UNANSWERED as usize,
        "5 batches x 5 attempts would be 25 calls"
    );
    let records = lines.take_json_lines();
    assert_eq!(records.len(), 40);
    assert!(
        records.iter().all(|r| r["decision"] == "failed"),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn once_ends_within_a_kubernetes_grace_period_after_sigterm() {
    let h = Harness::new(&[], Behavior::Status(404)).await;
    let (api, calls) = hanging_api().await;
    let dir = h.dir.path();
    std::fs::write(
        dir.join("watch.yaml"),
        format!(
            "vercel: {{ api_base: 'http://{api}' }}\nstate: state.db\ndefaults: {{ confirmations: 1, max_purge_fraction: 1.0 }}\nwatches:\n  - {{ name: s, project: p, origin: '{}', images: [/a.png] }}\n",
            h.origin.base_url()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["--log-format", "json", "once"])
        .current_dir(dir)
        .env("VERCEL_TOKEN", common::TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while calls.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the purge call never came");
    let signalled = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(40);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() > until {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let took = signalled.elapsed();
    assert!(
        took < std::time::Duration::from_secs(15),
        "once took {took:?} after SIGTERM"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1));
}

// ---- 11. One bad host does not slow the others ------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_host_does_not_hold_back_a_healthy_one() {
    let h = Harness::new(&[], Behavior::Slow(std::time::Duration::from_secs(60))).await;
    let healthy = testkit::FakeOrigin::start([], Behavior::Present)
        .await
        .unwrap();
    let mut images: Vec<String> = (0..200).map(|i| format!("/img/{i}.png")).collect();
    images.extend((0..10).map(|i| healthy.url(&format!("/ok/{i}.png"))));
    let c = h.config(
        "",
        &one_watch(
            "concurrency: 8, per_host_concurrency: 4, timeout: 30s, retries: 0",
            &format!("{images:?}"),
        ),
    );
    let (ctx, _lines) = h.context(&c, true, common::TOKEN).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let pass = {
        let (cancel, watches) = (cancel.clone(), c.watches().to_vec());
        tokio::spawn(async move { origin_watch::pass::run_pass(&ctx, &watches, &cancel).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while healthy.total_method("HEAD") < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let probed = healthy.total_method("HEAD");
    cancel.cancel();
    let _ = pass.await;
    assert_eq!(probed, 10, "the healthy host waited behind the hanging one");
    assert!(h.origin.max_in_flight() <= 4);
}

// ---- 8. --listen under a flood of idle sockets --------------------------------

/// `GET path` on a fresh connection; the status line, or why none came.
fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sockets_on_listen_cannot_starve_healthz_or_purges() {
    let h = Harness::new(&[("/a.png", Behavior::Present)], Behavior::Present).await;
    let dir = h.dir.path();
    std::fs::write(
        dir.join("watch.yaml"),
        format!(
            "vercel: {{ api_base: '{}' }}\nstate: state.db\ndefaults: {{ confirmations: 1, max_purge_fraction: 1.0, schedule: '* * * * * *' }}\nwatches:\n  - {{ name: s, project: p, origin: '{}', images: [/a.png, /b.png] }}\n",
            h.api.base_url(),
            h.origin.base_url()
        ),
    )
    .unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(["--log-format", "json", "run", "--listen", &addr.to_string()])
        .current_dir(dir)
        .env("VERCEL_TOKEN", common::TOKEN)
        .stdout(std::fs::File::create(dir.join("run.stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("run.stderr")).unwrap())
        .spawn()
        .unwrap();
    let result = async {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let up = tokio::task::spawn_blocking(move || http_get(addr, "/healthz")).await;
            if up.unwrap().is_ok_and(|l| l.contains(" 200")) {
                break;
            }
            if std::time::Instant::now() > until {
                return Err("the first /healthz never answered".to_owned());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // 200 idle connections, more than the child's 64 file descriptors,
        // held open while an image goes and /healthz is asked.
        let idle: Vec<_> = (0..200)
            .filter_map(|_| std::net::TcpStream::connect(addr).ok())
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        h.origin.set("/b.png", Behavior::Status(404));
        let line = tokio::task::spawn_blocking(move || http_get(addr, "/healthz"))
            .await
            .unwrap()?;
        if !line.contains(" 200") {
            return Err(format!("/healthz answered {line:?}"));
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while h.api.purged().is_empty() && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        drop(idle);
        Ok(())
    }
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let stderr = std::fs::read_to_string(dir.join("run.stderr")).unwrap_or_default();
    let tail: String = stderr.lines().rev().take(15).collect::<Vec<_>>().join("\n");
    result.unwrap_or_else(|e| panic!("{e}\nstderr (last lines, newest first):\n{tail}"));
    assert_eq!(h.api.purged(), ["/b.png"], "{tail}");
}
