//! Hardening (issue 13): hostile origins, a misbehaving API, bad input and
//! exposed ports lose nothing and leak nothing. Each test plays the attacker
//! or the unlucky operator over loopback and asserts on what the fakes
//! received and what origin-watch printed.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use common::Harness;
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
    let w = &c.watches[0];
    let urls: Vec<String> = w
        .probes
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
