//! Real deployments (issue 15), end to end through the built binary over
//! loopback: probe headers (sent, secret, kept off other hosts), a CA only
//! the system store or `ca_file` holds, `check --online`, the notify
//! webhook, the JSON summary event and the gauges at start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use testkit::{FakeProject, FakeVercel, FakeVercelConfig};

const BIN: &str = env!("CARGO_BIN_EXE_origin-watch");
const TOKEN: &str = "tok_ops_s3cr3t_41d7";
const TOKEN_ENV: &str = "OW_OPS_TEST_TOKEN";

// ---------------------------------------------------------------------------
// A recording server: answers by path, remembers every request's headers.

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers for a path: status, `Location`, body.
type Route = Arc<dyn Fn(&str) -> (u16, Option<String>, String) + Send + Sync>;

struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves HTTP (or HTTPS with `tls`) on loopback. `hang` answers nothing.
async fn serve(route: Route, tls: Option<rustls::ServerConfig>, hang: bool) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (route, record, acceptor) = (route.clone(), record.clone(), acceptor.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (route, record) = (route.clone(), record.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            record.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into(),
                                        )
                                    })
                                    .collect(),
                                body: String::from_utf8_lossy(&body).into_owned(),
                            });
                            if hang {
                                tokio::time::sleep(Duration::from_secs(600)).await;
                            }
                            let (status, location, text) = route(parts.uri.path());
                            let mut resp =
                                Response::builder().status(StatusCode::from_u16(status).unwrap());
                            if let Some(l) = location {
                                resp = resp.header("location", l);
                            }
                            Ok::<_, std::convert::Infallible>(
                                resp.body(Full::new(Bytes::from(text))).unwrap(),
                            )
                        }
                    });
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    Server { port, seen }
}

// ---------------------------------------------------------------------------
// The binary

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Out {
    fn all(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn events(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }
}

/// Runs the binary in `dir` with `-c dir/watch.yaml --log-format json`,
/// the token given, and `env` set (or removed, for an empty value).
async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut c = Command::new(BIN);
    c.arg("--log-format")
        .arg("json")
        .arg("-c")
        .arg(dir.join("watch.yaml"))
        .args(args)
        .current_dir(dir)
        .env_remove("ORIGIN_WATCH_CONFIG")
        .env(TOKEN_ENV, TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    for (k, v) in env {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || c.output().expect("run origin-watch"))
        .await
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// Writes `watch.yaml`: `vercel:` at `api`, state in the dir, then `rest`.
fn write_config(dir: &Path, api: &str, rest: &str) {
    std::fs::write(
        dir.join("watch.yaml"),
        format!(
            "vercel:\n  token_env: {TOKEN_ENV}\n  api_base: '{api}'\nstate: '{}'\n{rest}",
            dir.join("state.db").display()
        ),
    )
    .unwrap();
}

fn records(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("src").is_some())
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Probe headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_headers_reach_the_origin_are_never_printed_and_stay_off_other_hosts() {
    let elsewhere = serve(Arc::new(|_| (200, None, String::new())), None, false).await;
    let other = elsewhere.port;
    let origin = serve(
        Arc::new(move |path| match path {
            "/moved.png" => (
                301,
                Some(format!("http://localhost:{other}/moved.png")),
                String::new(),
            ),
            "/page" => (
                200,
                None,
                "<html><img src=\"/_next/image?url=%2Ffound.png&w=64&q=75\"></html>".into(),
            ),
            _ => (200, None, String::new()),
        }),
        None,
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "bypass-7c1e-very-secret";
    write_config(
        dir.path(),
        "http://127.0.0.1:9",
        &format!(
            "defaults:\n  headers:\n    x-vercel-protection-bypass: ${{OW_OPS_BYPASS}}\n\
             watches:\n  - name: site\n    project: p\n    origin: 'http://127.0.0.1:{}'\n\
             \x20   headers: {{ x-cdn-secret: 'cdn-${{OW_OPS_BYPASS}}' }}\n\
             \x20   images: [/a.png, /moved.png]\n\
             \x20   discover: {{ pages: [/page], sitemaps: [] }}\n",
            origin.port
        ),
    );
    let out = run(
        dir.path(),
        &["audit", "--report", "-"],
        &[("OW_OPS_BYPASS", secret)],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let at_origin = origin.seen();
    let probes: Vec<&Seen> = at_origin.iter().filter(|s| s.path != "/page").collect();
    assert!(!probes.is_empty(), "{}", out.all());
    for s in &probes {
        assert_eq!(
            s.header("x-vercel-protection-bypass"),
            Some(secret),
            "{s:?}"
        );
        assert_eq!(
            s.header("x-cdn-secret"),
            Some(format!("cdn-{secret}").as_str()),
            "{s:?}"
        );
    }
    let found = run(dir.path(), &["discover"], &[("OW_OPS_BYPASS", secret)]).await;
    assert_eq!(found.code, Some(0), "{}", found.all());
    assert!(found.stdout.contains("\"/found.png\""), "{}", found.all());
    let at_origin = origin.seen();
    let page = at_origin
        .iter()
        .find(|s| s.path == "/page")
        .expect("discovery read /page");
    assert_eq!(
        page.header("x-vercel-protection-bypass"),
        Some(secret),
        "discovery sends them too"
    );
    // The redirect to another host was followed, without the headers.
    let there = elsewhere.seen();
    assert!(
        !there.is_empty(),
        "the redirect was followed: {}",
        out.all()
    );
    for s in &there {
        assert_eq!(s.header("x-vercel-protection-bypass"), None, "{s:?}");
        assert_eq!(s.header("x-cdn-secret"), None, "{s:?}");
    }
    for o in [&out, &found] {
        assert!(
            !o.stdout.contains(secret) && !o.stderr.contains(secret),
            "{}",
            o.all()
        );
    }
}

#[tokio::test]
async fn an_unset_header_variable_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "http://127.0.0.1:9",
        "watches:\n  - { name: s, project: p, origin: 'http://127.0.0.1:9', images: [/a.png], headers: { x-key: '${OW_OPS_SURELY_UNSET}' } }\n",
    );
    let out = run(dir.path(), &["check"], &[("OW_OPS_SURELY_UNSET", "")]).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(
        out.stderr.contains(
            "watches[0] (s).headers.x-key: environment variable OW_OPS_SURELY_UNSET is not set"
        ),
        "{}",
        out.all()
    );
}

// ---------------------------------------------------------------------------
// 2. The system CA store and ca_file

async fn https_world(ca_file_key: bool) -> (tempfile::TempDir, Server, PathBuf) {
    let (ca_pem, mut server_config) =
        testkit::tls::ca_and_server("origin-watch test CA", "localhost");
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let origin = serve(
        Arc::new(|path| {
            if path == "/gone.png" {
                (404, None, String::new())
            } else {
                (200, None, String::new())
            }
        }),
        Some(server_config),
        false,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("corporate-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    write_config(
        dir.path(),
        "http://127.0.0.1:9",
        &format!(
            "{}watches:\n  - {{ name: s, project: p, origin: 'https://localhost:{}', retries: 0, images: [/a.png, /gone.png] }}\n",
            if ca_file_key {
                format!("ca_file: '{}'\n", ca.display())
            } else {
                String::new()
            },
            origin.port
        ),
    );
    (dir, origin, ca)
}

fn verdicts(out: &Out) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = records(&out.stdout)
        .iter()
        .map(|r| {
            (
                r["src"].as_str().unwrap().to_owned(),
                r["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_ca_only_the_system_store_holds_is_trusted_for_probes() {
    let (dir, _origin, ca) = https_world(false).await;
    let trusted = run(
        dir.path(),
        &["audit", "--report", "-"],
        &[
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("SSL_CERT_DIR", ""),
        ],
    )
    .await;
    assert_eq!(
        verdicts(&trusted),
        [
            ("/a.png".into(), "present".into()),
            ("/gone.png".into(), "gone".into())
        ],
        "{}",
        trusted.all()
    );
    // The same origin without that CA in the store: a TLS failure, never gone.
    let untrusted = run(
        dir.path(),
        &["audit", "--report", "-"],
        &[
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    )
    .await;
    assert!(
        verdicts(&untrusted)
            .iter()
            .all(|(_, v)| v == "inconclusive"),
        "{}",
        untrusted.all()
    );
}

#[tokio::test]
async fn ca_file_adds_one_bundle_and_a_bad_one_is_named() {
    let (dir, _origin, ca) = https_world(true).await;
    let out = run(
        dir.path(),
        &["audit", "--report", "-"],
        &[
            ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    )
    .await;
    assert_eq!(
        verdicts(&out),
        [
            ("/a.png".into(), "present".into()),
            ("/gone.png".into(), "gone".into())
        ],
        "{}",
        out.all()
    );
    std::fs::write(&ca, "not a certificate").unwrap();
    let bad = run(dir.path(), &["check"], &[]).await;
    assert_eq!(bad.code, Some(2), "{}", bad.all());
    assert!(
        bad.stderr.contains("ca_file:") && bad.stderr.contains("corporate-ca.pem"),
        "{}",
        bad.all()
    );
}

// ---------------------------------------------------------------------------
// 3. check --online

async fn api_with_projects() -> FakeVercel {
    FakeVercel::start(FakeVercelConfig {
        projects: vec![
            FakeProject::new("shop", Some("team_a"), Some("team-a")),
            FakeProject::new("blog", None, None),
        ],
        ..FakeVercelConfig::new(TOKEN)
    })
    .await
    .unwrap()
}

fn online_config(dir: &Path, api: &FakeVercel, watches: &str) {
    write_config(dir, &api.base_url(), &format!("watches:\n{watches}"));
}

#[tokio::test]
async fn check_online_passes_when_token_team_and_project_are_right() {
    let api = api_with_projects().await;
    let dir = tempfile::tempdir().unwrap();
    online_config(
        dir.path(),
        &api,
        "  - { name: shop, project: shop, team_id: team_a, origin: 'http://127.0.0.1:9', images: [/a.png] }\n  - { name: blog, project: blog, origin: 'http://127.0.0.1:9', images: [/a.png] }\n",
    );
    let out = run(dir.path(), &["check", "--online"], &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.stdout
            .contains("online: watch shop: project shop found"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("online: ok"), "{}", out.all());
    let calls = api.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.method == "GET" && c.path.starts_with("/v9/projects/"))
    );
    assert_eq!(calls[0].query_value("teamId"), Some("team_a"));
    assert!(
        calls.iter().all(|c| c.path != testkit::PURGE_PATH),
        "read-only"
    );
    assert!(!out.stdout.contains(TOKEN) && !out.stderr.contains(TOKEN));
}

#[tokio::test]
async fn check_online_names_a_bad_token_an_unknown_project_and_a_wrong_team() {
    let api = api_with_projects().await;
    let dir = tempfile::tempdir().unwrap();
    online_config(
        dir.path(),
        &api,
        "  - { name: typo, project: shopp, team_id: team_a, origin: 'http://127.0.0.1:9', images: [/a.png] }\n  - { name: elsewhere, project: shop, team_id: team_b, origin: 'http://127.0.0.1:9', images: [/a.png] }\n  - { name: noteam, project: shop, origin: 'http://127.0.0.1:9', images: [/a.png] }\n",
    );
    let out = run(dir.path(), &["check", "--online"], &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(
        out.stdout
            .contains("watch typo: problem: no project shopp under team team_a (404"),
        "{}",
        out.all()
    );
    assert!(
        out.stdout.contains(
            "watch elsewhere: problem: the token in OW_OPS_TEST_TOKEN cannot reach team team_b (403"
        ),
        "{}",
        out.all()
    );
    assert!(
        out.stdout
            .contains("watch noteam: problem: no project shop under the token's personal account"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("set vercel.team_id"), "{}", out.all());
    assert!(
        out.stdout.contains("online: 3 problems found"),
        "{}",
        out.all()
    );

    let bad = run(
        dir.path(),
        &["check", "--online"],
        &[(TOKEN_ENV, "tok_wrong_but_long")],
    )
    .await;
    assert_eq!(bad.code, Some(1), "{}", bad.all());
    assert!(
        bad.stdout
            .contains("watch typo: problem: the token in OW_OPS_TEST_TOKEN was refused (401"),
        "{}",
        bad.all()
    );
    assert!(!bad.stdout.contains("tok_wrong_but_long"), "{}", bad.all());
}

// ---------------------------------------------------------------------------
// 4. Notifications

fn gone_origin_route() -> Route {
    Arc::new(|path| {
        if path.starts_with("/gone") {
            (404, None, String::new())
        } else {
            (200, None, String::new())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_hears_of_a_purge_batch_and_of_failures() {
    let origin = serve(gone_origin_route(), None, false).await;
    let receiver = serve(Arc::new(|_| (200, None, "ok".into())), None, false).await;
    let api = FakeVercel::start(FakeVercelConfig::new(TOKEN))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hook = format!("http://127.0.0.1:{}/hooks/T0/B0/xyzsecret", receiver.port);
    let rest = format!(
        "notify: {{ url: '${{OW_OPS_HOOK}}', on: [guard, failure, purge] }}\n\
         defaults: {{ confirmations: 1, fraction_floor: 10 }}\n\
         watches:\n  - {{ name: site, project: shop, origin: 'http://127.0.0.1:{}', images: [/a.png, /gone1.png, /gone2.png] }}\n",
        origin.port
    );
    write_config(dir.path(), &api.base_url(), &rest);
    let out = run(dir.path(), &["once"], &[("OW_OPS_HOOK", &hook)]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let got = receiver.seen();
    assert_eq!(got.len(), 1, "{got:?}\n{}", out.all());
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["event"], "purge");
    assert_eq!(body["project"], "shop");
    assert_eq!(
        body["sources"],
        serde_json::json!(["/gone1.png", "/gone2.png"])
    );
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("purged 2 source images of project shop"),
        "{body}"
    );
    assert!(!got[0].body.contains(TOKEN));
    assert!(
        !out.stderr.contains("xyzsecret"),
        "the webhook URL is a secret: {}",
        out.all()
    );

    // A failing API: a failure message, with the API's answer.
    api.set_config(FakeVercelConfig {
        fixed_status: Some(400),
        ..FakeVercelConfig::new(TOKEN)
    });
    let dir2 = tempfile::tempdir().unwrap();
    write_config(dir2.path(), &api.base_url(), &rest);
    let out = run(dir2.path(), &["once"], &[("OW_OPS_HOOK", &hook)]).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let got = receiver.seen();
    let failure: Value = serde_json::from_str(&got.last().unwrap().body).unwrap();
    assert_eq!(failure["event"], "failure", "{failure}");
    assert!(
        failure["text"]
            .as_str()
            .unwrap()
            .contains("vercel answered 400"),
        "{failure}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_stall_the_pass() {
    let origin = serve(gone_origin_route(), None, false).await;
    let receiver = serve(Arc::new(|_| (200, None, String::new())), None, true).await;
    let api = FakeVercel::start(FakeVercelConfig::new(TOKEN))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &api.base_url(),
        &format!(
            "notify: {{ url: 'http://127.0.0.1:{}/hook', on: [purge], timeout: 500ms }}\n\
             defaults: {{ confirmations: 1, fraction_floor: 10 }}\n\
             watches:\n  - {{ name: site, project: shop, origin: 'http://127.0.0.1:{}', images: [/a.png, /gone1.png] }}\n",
            receiver.port, origin.port
        ),
    );
    let out = run(dir.path(), &["once"], &[]).await;
    assert_eq!(
        out.code,
        Some(0),
        "a webhook never fails the pass: {}",
        out.all()
    );
    assert_eq!(api.purged(), ["/gone1.png"]);
    assert_eq!(receiver.seen().len(), 2, "tried, then retried once");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "took {:?}",
        out.elapsed
    );
    assert!(
        out.stderr
            .contains("the notify webhook did not take the message"),
        "{}",
        out.all()
    );
}

// ---------------------------------------------------------------------------
// 7. Paper cuts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_logs_its_summary_as_a_json_event_after_the_decisions() {
    let origin = serve(gone_origin_route(), None, false).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "http://127.0.0.1:9",
        &format!(
            "watches:\n  - {{ name: site, project: shop, origin: 'http://127.0.0.1:{}', images: [/a.png, /gone1.png] }}\n",
            origin.port
        ),
    );
    let out = run(dir.path(), &["once", "--dry-run"], &[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let events = out.events();
    let summary = events
        .iter()
        .position(|e| e["message"] == "pass summary")
        .unwrap_or_else(|| panic!("no summary event: {}", out.all()));
    let e = &events[summary];
    assert_eq!(e["watch"], "site");
    assert_eq!(
        (
            e["checked"].as_u64(),
            e["present"].as_u64(),
            e["gone"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(e["pending"].as_u64(), Some(1));
    assert!(
        events[..summary]
            .iter()
            .filter(|e| e["message"] == "decision")
            .count()
            == 2,
        "the decisions come first: {}",
        out.all()
    );
    assert!(out.stdout.starts_with("site: 2 checked"), "{}", out.all());
}

#[tokio::test]
async fn every_unknown_key_is_listed_not_just_the_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watch.yaml"),
        "vercel: { tokn_env: X }\ndefaults: { timeout: soon, schedule: '61 * * * *' }\nwatches:\n  - { name: a, projct: p, origin: 'https://e.com', images: [/a.png] }\n  - { name: b, project: p, origin: 'https://e.com', images: [/a.png] }\n",
    )
    .unwrap();
    let out = run(dir.path(), &["check"], &[]).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    for want in [
        "unknown field `tokn_env`",
        "line 1",
        "watches[0] (a).projct: unknown key",
        "defaults.timeout: bad duration",
        "defaults.schedule: bad cron expression \"61 * * * *\": '61': minutes must be from 0 to 59",
    ] {
        assert!(out.stderr.contains(want), "{want}: {}", out.all());
    }
    let plain: String = out.stderr.lines().filter(|l| !l.starts_with('{')).collect();
    assert_eq!(
        plain.matches("defaults.schedule").count(),
        1,
        "a bad defaults.schedule is said once: {}",
        out.all()
    );
}

/// A GET of `path` on `port`, the whole answer as text.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    Some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exports_the_pass_gauges_from_start_listens_on_a_host_name_and_says_goodbye() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "http://127.0.0.1:9",
        "watches:\n  - { name: site, project: shop, origin: 'http://127.0.0.1:9', schedule: '0 0 1 1 *', images: [/a.png] }\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Command::new(BIN);
    c.args(["--log-format", "json", "-c"])
        .arg(dir.path().join("watch.yaml"))
        .args(["run", "--listen", &format!("localhost:{port}")])
        .env(TOKEN_ENV, TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let mut child = c.spawn().unwrap();
    let started = Instant::now();
    let mut metrics = None;
    while started.elapsed() < Duration::from_secs(20) {
        if let Some(t) = http_get(port, "/metrics")
            .await
            .filter(|t| t.contains("200 OK"))
        {
            metrics = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stderr = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let Some(metrics) = metrics else {
        let _ = child.kill();
        panic!("no /metrics on localhost:{port}: {}", stderr());
    };
    let now = chrono::Utc::now().timestamp() as f64;
    let last = metrics
        .lines()
        .find(|l| l.starts_with("origin_watch_last_pass_timestamp_seconds{watch=\"site\"}"))
        .unwrap_or_else(|| panic!("no last pass gauge before the first pass:\n{metrics}"));
    let at: f64 = last.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (now - at).abs() < 60.0,
        "starts at the start time, not 0: {last}"
    );
    assert!(
        metrics.contains("origin_watch_pass_duration_seconds{watch=\"site\"} 0"),
        "{metrics}"
    );
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", stderr());
    let last_line: Value = serde_json::from_str(stderr().lines().last().unwrap()).unwrap();
    assert_eq!(
        last_line["message"],
        "stopped after the signal; state saved",
        "{}",
        stderr()
    );
}
