//! The probes' HTTP client against an origin that treats connections
//! roughly: it closes every connection shortly after one answer, without
//! saying so. Every probe must still get its verdict: a reused connection
//! that turns out dead is replaced, not reported as inconclusive.

use std::time::Duration;

use origin_watch::probe::{ProbeRules, Prober, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers one request per connection with 200, then closes it.
async fn one_answer_per_connection() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
                // Closed without `connection: close`, and only a little later:
                // the client reuses the connection and its next request is
                // swallowed, as with an origin's idle timeout.
                tokio::time::sleep(Duration::from_millis(30)).await;
            });
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn a_connection_closed_after_each_answer_is_replaced_not_reported() {
    let (port, accepted) = one_answer_per_connection().await;
    let prober = Prober::new().unwrap();
    let rules = ProbeRules {
        retries: 0,
        follow_redirects: 0,
        per_host_concurrency: 1,
        ..ProbeRules::default()
    };
    for i in 0..20 {
        let obs = prober
            .probe(&format!("http://127.0.0.1:{port}/{i}.png"), &rules)
            .await;
        assert_eq!(obs.verdict, Verdict::Present, "probe {i}: {obs:?}");
        assert_eq!(obs.attempts, 1, "no probe retry was needed");
    }
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 20);
}

#[tokio::test]
async fn the_proxy_path_probes_the_same_way() {
    use origin_watch::transport::Transport;
    use testkit::fake_origin::{Behavior, FakeOrigin};

    let origin = FakeOrigin::start(
        [
            ("/gone.png".to_owned(), Behavior::Status(404)),
            (
                "/edge.png".to_owned(),
                Behavior::HeadGet {
                    head: 404,
                    get: 200,
                },
            ),
        ],
        Behavior::Present,
    )
    .await
    .unwrap();
    // What `Transport::from_env` builds when a proxy variable is set; here
    // without the proxy itself, so only the reqwest path is under test.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let prober = Prober::with_transport(Transport::Proxied(client));
    let rules = ProbeRules {
        retries: 0,
        follow_redirects: 0,
        per_host_concurrency: 4,
        ..ProbeRules::default()
    };
    let url = |p: &str| format!("{}{p}", origin.base_url());
    assert_eq!(
        prober.probe(&url("/a.png"), &rules).await.verdict,
        Verdict::Present
    );
    assert_eq!(
        prober.probe(&url("/gone.png"), &rules).await.verdict,
        Verdict::Gone
    );
    assert_eq!(
        prober.probe(&url("/edge.png"), &rules).await.verdict,
        Verdict::Inconclusive
    );
    assert_eq!(
        origin.count("GET", "/gone.png"),
        1,
        "the gone HEAD was confirmed by GET"
    );
}
