//! Discovery over loopback: a fake site serving pages, sitemaps (plain,
//! gzip, an index, broken, failing) and lists, read by the real discovery
//! code and the real `discover` command; the sources found are asserted
//! exactly.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use origin_watch::config::Config;
use origin_watch::discover::{Discoverer, Discovery};
use origin_watch::probe::Prober;
use serde_json::Value;
use testkit::fake_origin::{Behavior, FakeOrigin};
use testkit::fake_site::{FakeSite, Reply};
use tokio_util::sync::CancellationToken;

const UA: &str = concat!("origin-watch/", env!("CARGO_PKG_VERSION"));

fn img(src: &str) -> String {
    let url: String = url::form_urlencoded::byte_serialize(src.as_bytes()).collect();
    format!(r#"<img src="/_next/image?url={url}&amp;w=640&amp;q=75">"#)
}

fn page(body: &str) -> Reply {
    Reply::html(format!("<!DOCTYPE html><html><body>{body}</body></html>"))
}

fn urlset(base: &str, pages: &[&str], images: &[&str]) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">"#,
    );
    for p in pages {
        s.push_str(&format!("<url><loc>{base}{p}</loc></url>"));
    }
    if !images.is_empty() {
        s.push_str(&format!("<url><loc>{base}/images-page</loc>"));
        for i in images {
            s.push_str(&format!(
                "<image:image><image:loc>{i}</image:loc></image:image>"
            ));
        }
        s.push_str("</url>");
    }
    s.push_str("</urlset>");
    s
}

/// Discovers with a watch whose `discover:` block is `block` (YAML flow
/// style) and whose origin is `site`.
async fn discover(site: &FakeSite, block: &str, extra: &str) -> Discovery {
    discover_by(Prober::new().unwrap(), site, block, extra).await
}

/// As [`discover`], by `prober`'s client.
async fn discover_by(prober: Prober, site: &FakeSite, block: &str, extra: &str) -> Discovery {
    let yaml = format!(
        "watches:\n  - name: site\n    project: p\n    origin: '{}'\n{extra}    discover: {block}\n",
        site.base_url()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    Discoverer::new(Arc::new(prober))
        .discover_watch(&config.watches()[0], &CancellationToken::new())
        .await
        .expect("the watch has a discover: block")
}

fn srcs(d: &Discovery) -> BTreeSet<String> {
    d.sources.iter().map(|f| f.src.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn pages_sitemaps_and_same_site_links_give_exactly_their_sources() {
    let elsewhere = FakeSite::start([("/x".to_owned(), page(&img("/offsite-page.png")))])
        .await
        .unwrap();
    let site = FakeSite::start([]).await.unwrap();
    let base = site.base_url();
    site.set(
        "/",
        page(&format!(
            r##"{}<a href="/a">a</a><a href="/a#again">a again</a><a href="/gone">gone</a>
            <a href="{}/x">off the site</a><a href="/old">moved</a><a href="/away">moved away</a>"##,
            img("/home.png"),
            elsewhere.base_url()
        )),
    );
    site.set(
        "/a",
        page(&format!(
            "{}{}<a href=\"/\">home</a>",
            img("/a.png"),
            img("/home.png")
        )),
    );
    site.set("/gone", Reply::Status(404));
    site.set("/old", Reply::Redirect("/new".into()));
    site.set("/new", page(&img("/new.png")));
    site.set("/away", Reply::Redirect(elsewhere.url("/x")));
    site.set(
        "/sitemap.xml",
        Reply::xml(urlset(
            &base,
            &["/from-sitemap"],
            &[
                &format!("{base}/og.png"),
                "https://cdn.example.net/c.jpg?a=1&b=2",
            ],
        )),
    );
    site.set("/from-sitemap", page(&img("/sm.png")));
    site.set("/images-page", page(""));

    let d = discover(&site, "{ sitemaps: [/sitemap.xml], pages: [/] }", "").await;
    assert!(d.complete(), "{:?}", d.errors);
    assert_eq!(
        srcs(&d),
        set(&[
            "/home.png",
            "/a.png",
            "/new.png",
            "/sm.png",
            "/og.png",
            "https://cdn.example.net/c.jpg?a=1&b=2"
        ])
    );
    // /, /a, /new (via /old), /from-sitemap, /images-page; /gone said nothing.
    assert_eq!((d.pages_read, d.sitemaps_read), (5, 1));
    let home = d.sources.iter().find(|f| f.src == "/home.png").unwrap();
    assert_eq!(&*home.found_on, format!("{base}/"));
    let og = d.sources.iter().find(|f| f.src == "/og.png").unwrap();
    assert_eq!(&*og.found_on, format!("{base}/sitemap.xml"));
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
    let requests = site.requests();
    assert_eq!(
        requests.iter().filter(|p| *p == "/a").count(),
        1,
        "{requests:?}"
    );
    assert!(site.user_agents().iter().all(|ua| ua == UA));
}

#[tokio::test]
async fn gzip_sitemaps_by_content_and_an_index_are_followed() {
    let site = FakeSite::start([]).await.unwrap();
    let base = site.base_url();
    site.set(
        "/sitemap-index.xml",
        Reply::xml(format!(
            "<sitemapindex><sitemap><loc>{base}/maps/one.xml</loc></sitemap>\
             <sitemap><loc>{base}/maps/two</loc></sitemap></sitemapindex>"
        )),
    );
    site.set(
        "/maps/one.xml",
        Reply::xml(urlset(&base, &["/p1"], &[&format!("{base}/one.png")])),
    );
    // Gzip under a name without .gz, and a Content-Type that does not say so.
    site.set(
        "/maps/two",
        Reply::gzip(
            "application/xml",
            &urlset(&base, &["/p2"], &[&format!("{base}/two.png?v=3")]),
        ),
    );
    site.set("/p1", page(&img("/p1.png")));
    site.set("/p2", page(&img("/p2.png")));
    site.set("/images-page", page(""));

    let d = discover(&site, "{ sitemaps: [/sitemap-index.xml] }", "").await;
    assert!(d.complete(), "{:?}", d.errors);
    assert_eq!(
        srcs(&d),
        set(&["/one.png", "/two.png?v=3", "/p1.png", "/p2.png"])
    );
    assert_eq!(d.sitemaps_read, 3);
}

#[tokio::test]
async fn a_failing_or_broken_sitemap_makes_a_partial_discovery_that_keeps_the_rest() {
    let site = FakeSite::start([]).await.unwrap();
    let base = site.base_url();
    site.set(
        "/index.xml",
        Reply::xml(format!(
            "<sitemapindex><sitemap><loc>{base}/ok.xml</loc></sitemap>\
             <sitemap><loc>{base}/fails.xml</loc></sitemap>\
             <sitemap><loc>{base}/broken.xml</loc></sitemap></sitemapindex>"
        )),
    );
    site.set(
        "/ok.xml",
        Reply::xml(urlset(&base, &["/p1"], &[&format!("{base}/ok.png")])),
    );
    site.set("/fails.xml", Reply::Status(500));
    site.set(
        "/broken.xml",
        Reply::xml(format!(
            "<urlset><url><loc>{base}/p2</loc></url></urk><url><loc>{base}/p3</loc></url><url><loc>{base}/p4</lo"
        )),
    );
    site.set("/p1", page(&img("/p1.png")));
    site.set("/p2", page(&img("/p2.png")));
    site.set("/p3", page(&img("/p3.png")));
    site.set("/images-page", page(""));

    let d = discover(&site, "{ sitemaps: [/index.xml], follow_links: false }", "").await;
    assert!(!d.complete());
    assert_eq!(srcs(&d), set(&["/ok.png", "/p1.png", "/p2.png", "/p3.png"]));
    assert_eq!(d.errors.len(), 2, "{:?}", d.errors);
    assert!(
        d.errors
            .iter()
            .any(|e| e.contains(&format!("{base}/fails.xml")) && e.contains("500")),
        "{:?}",
        d.errors
    );
    assert!(
        d.errors
            .iter()
            .any(|e| e.contains(&format!("{base}/broken.xml"))),
        "{:?}",
        d.errors
    );
}

/// Behind a proxy, discovery's requests go by the prober's reqwest client
/// (what `Transport::from_env` builds when a proxy variable is set; here
/// without the proxy itself): the same pages, redirects and sources.
#[tokio::test]
async fn the_proxy_path_discovers_the_same() {
    use origin_watch::transport::Transport;
    let site = FakeSite::start([]).await.unwrap();
    site.set(
        "/",
        page(&format!(
            "{}<a href=\"/old\">o</a><a href=\"/missing\">m</a><a href=\"/failing\">f</a>",
            img("/home.png")
        )),
    );
    site.set("/old", Reply::Redirect("/new".into()));
    site.set("/new", page(&img("/new.png")));
    site.set("/failing", Reply::Status(500));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let prober = Prober::with_transport(Transport::Proxied(client));
    let d = discover_by(prober, &site, "{}", "").await;
    assert_eq!(srcs(&d), set(&["/home.png", "/new.png"]));
    assert_eq!(d.pages_read, 2, "the missing page says nothing");
    assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
    assert!(
        d.errors[0].contains("/failing") && d.errors[0].contains("500"),
        "{:?}",
        d.errors
    );
}

#[tokio::test]
async fn max_pages_bounds_the_pages_read() {
    let site = FakeSite::start([]).await.unwrap();
    let links: String = (1..=9)
        .map(|i| format!("<a href=\"/p{i}\">{i}</a>"))
        .collect();
    site.set("/", page(&format!("{}{links}", img("/home.png"))));
    for i in 1..=9 {
        site.set(&format!("/p{i}"), page(&img(&format!("/p{i}.png"))));
    }
    let d = discover(&site, "{ max_pages: 3 }", "").await;
    assert!(d.complete(), "{:?}", d.errors);
    assert_eq!(d.pages_read, 3);
    assert_eq!(site.requests().len(), 3, "{:?}", site.requests());
    // Breadth first: the home page, then the first two links it names.
    assert_eq!(srcs(&d), set(&["/home.png", "/p1.png", "/p2.png"]));
}

#[tokio::test]
async fn a_page_that_times_out_is_an_error_and_the_rest_is_kept() {
    let site = FakeSite::start([]).await.unwrap();
    site.set(
        "/",
        page(&format!(
            "{}<a href=\"/hangs\">h</a><a href=\"/fine\">f</a>",
            img("/home.png")
        )),
    );
    site.set("/hangs", Reply::Hang);
    site.set("/fine", page(&img("/fine.png")));
    let started = Instant::now();
    let d = discover(&site, "{}", "    timeout: 300ms\n").await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(srcs(&d), set(&["/home.png", "/fine.png"]));
    assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
    assert!(
        d.errors[0].contains(&site.url("/hangs")) && d.errors[0].contains("timeout"),
        "{:?}",
        d.errors
    );
}

#[tokio::test]
async fn a_page_over_the_tokenizers_memory_limit_is_an_error_naming_it_and_the_rest_is_kept() {
    use origin_watch::discover::html::MAX_PARSER_MEMORY;
    let site = FakeSite::start([]).await.unwrap();
    site.set(
        "/",
        page(&format!(
            "{}<a href=\"/huge\">h</a><a href=\"/fine\">f</a>",
            img("/home.png")
        )),
    );
    // A tag left open at the end, larger than the limit (the page itself
    // is within the size limit of a page).
    let huge = format!(
        "{}<img alt=\"{}",
        img("/huge.png"),
        "x".repeat(MAX_PARSER_MEMORY + 1)
    );
    site.set("/huge", Reply::html(huge));
    site.set("/fine", page(&img("/fine.png")));
    let d = discover(&site, "{}", "").await;
    assert_eq!(srcs(&d), set(&["/home.png", "/fine.png"]));
    assert!(!d.complete());
    assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
    assert!(
        d.errors[0].starts_with(&format!("{}: page not read: ", site.url("/huge")))
            && d.errors[0].contains("memory limit"),
        "{:?}",
        d.errors
    );
}

#[tokio::test]
async fn requests_share_the_per_host_limit() {
    let site = FakeSite::start([]).await.unwrap();
    let links: String = (1..=6)
        .map(|i| format!("<a href=\"/p{i}\">{i}</a>"))
        .collect();
    site.set("/", page(&links));
    for i in 1..=6 {
        site.set(
            &format!("/p{i}"),
            Reply::Slow(
                Duration::from_millis(150),
                Box::new(page(&img(&format!("/p{i}.png")))),
            ),
        );
    }
    let started = Instant::now();
    let d = discover(&site, "{}", "    per_host_concurrency: 2\n").await;
    assert_eq!(d.sources.len(), 6);
    // Six slow pages, two at a time: at least three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(440),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn images_url_as_text_or_json() {
    let site = FakeSite::start([]).await.unwrap();
    site.set(
        "/list.txt",
        Reply::text(
            "# the CMS's assets\n/uploads/a.png\n\n  https://cdn.example.net/b.jpg?v=2&w=1  \nnot a source\n",
        ),
    );
    site.set(
        "/list.json",
        Reply::json(r#"["/uploads/c.png", "https://cdn.example.net/d.jpg"]"#),
    );
    let d = discover(&site, "{ images_url: /list.txt, pages: [] }", "").await;
    assert!(d.complete(), "{:?}", d.errors);
    assert_eq!(
        srcs(&d),
        set(&["/uploads/a.png", "https://cdn.example.net/b.jpg?v=2&w=1"])
    );
    assert_eq!(&*d.sources[0].found_on, site.url("/list.txt"));
    let d = discover(&site, "{ images_url: /list.json, pages: [] }", "").await;
    assert!(d.complete(), "{:?}", d.errors);
    assert_eq!(
        srcs(&d),
        set(&["/uploads/c.png", "https://cdn.example.net/d.jpg"])
    );
    let d = discover(&site, "{ images_url: /missing.txt, pages: [] }", "").await;
    assert!(!d.complete());
    assert!(d.errors[0].contains(&site.url("/missing.txt")));
}

/// The captured Next.js 16 site, served from this repository's copy of the
/// fixtures, with the captured host (`127.0.0.1:3123`) replaced by the fake
/// site's.
async fn nextjs_site() -> FakeSite {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/nextjs-16");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let site = FakeSite::start([]).await.unwrap();
    site.set("/", Reply::html(read("index.html")));
    site.set("/gallery", Reply::html(read("gallery.html")));
    site.set("/blog/first", Reply::html(read("blog-first.html")));
    site.set(
        "/sitemap.xml",
        Reply::xml(read("sitemap.xml").replace("http://127.0.0.1:3123", &site.base_url())),
    );
    site
}

const NEXTJS_SOURCES: [&str; 10] = [
    "/images/hero.png",
    "/images/logo.png",
    "/images/a b.png",
    "http://127.0.0.1:18999/remote/cat.png?v=2&size=big",
    "/images/team/ana.png",
    "/images/team/bo.png",
    "http://127.0.0.1:18999/remote/dog.png",
    "http://127.0.0.1:18999/remote/posts/first.png",
    "/images/og.png",
    "http://127.0.0.1:18999/remote/dog.png?a=1&b=2",
];

#[tokio::test]
async fn the_nextjs_fixtures_give_exactly_their_sources() {
    let site = nextjs_site().await;
    let d = discover(
        &site,
        "{ sitemaps: [/sitemap.xml], follow_links: false }",
        "",
    )
    .await;
    assert!(d.complete(), "{:?}", d.errors);
    assert_eq!(srcs(&d), set(&NEXTJS_SOURCES));
    // /, /gallery, /blog/first read; /blog/second answered 404.
    assert_eq!(d.pages_read, 3);
    let cat = d
        .sources
        .iter()
        .find(|f| f.src.contains("cat.png"))
        .unwrap();
    assert_eq!(&*cat.found_on, site.url("/"));

    // From the home page alone, following its links, without the sitemap.
    let d = discover(&site, "{ pages: [/] }", "").await;
    assert!(d.complete(), "{:?}", d.errors);
    assert_eq!(
        srcs(&d),
        set(&[
            "/images/hero.png",
            "/images/logo.png",
            "/images/a b.png",
            "http://127.0.0.1:18999/remote/cat.png?v=2&size=big",
            "/images/team/ana.png",
            "/images/team/bo.png",
            "http://127.0.0.1:18999/remote/dog.png",
            "http://127.0.0.1:18999/remote/posts/first.png",
        ])
    );
}

#[tokio::test]
async fn the_discover_command_prints_json_lines_and_probes_nothing() {
    let site = nextjs_site().await;
    let origin = FakeOrigin::start([], Behavior::Present).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("watch.yaml");
    let state = dir.path().join("state.json");
    std::fs::write(
        &config,
        format!(
            "vercel:\n  token_env: OW_DISCOVER_TEST_SURELY_UNSET\nstate: '{}'\nwatches:\n  - name: next\n    project: p\n    origin: '{}'\n    images: [/configured.png]\n    discover: {{ site: '{}', sitemaps: [/sitemap.xml], follow_links: false }}\n  - name: plain\n    project: p\n    origin: '{}'\n    images: [/other.png]\n",
            state.display(),
            origin.base_url(),
            site.base_url(),
            origin.base_url(),
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_origin-watch"))
            .args(["--log-format", "json", "-c"])
            .arg(&config)
            .arg("discover")
            .env_remove("OW_DISCOVER_TEST_SURELY_UNSET")
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: BTreeSet<String> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["watch"], "next");
            assert!(
                l["found_on"]
                    .as_str()
                    .unwrap()
                    .starts_with(&site.base_url())
            );
            l["src"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(found, set(&NEXTJS_SOURCES));
    assert!(stderr.contains("\"sources\":10"), "{stderr}");
    assert_eq!(origin.total(), 0, "discover sent a probe");
    assert!(!state.exists(), "discover wrote state");
}
