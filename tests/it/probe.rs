//! The prober on its own, against the fake origin on loopback: the answers
//! whose meaning depends on which request got them (a 416 to the ranged GET,
//! HEAD and GET disagreeing), redirect chains at and past the limit, the
//! backoff between retries, a 429's hold on its host, and the per-host
//! limits forgotten on reload. Waits run on tokio's paused clock, so a
//! backoff is measured exactly.

use std::time::Duration;

use origin_watch::probe::{ProbeRules, Prober, Verdict};
use testkit::fake_origin::{Behavior, FakeOrigin};

fn rules() -> ProbeRules {
    ProbeRules {
        retries: 0,
        ..ProbeRules::default()
    }
}

async fn origin(routes: &[(&str, Behavior)]) -> FakeOrigin {
    FakeOrigin::start(
        routes.iter().map(|(p, b)| (p.to_string(), b.clone())),
        Behavior::Status(404),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_416_to_the_ranged_get_is_an_empty_file_but_to_a_head_it_says_nothing() {
    let o = origin(&[
        (
            "/empty.png",
            Behavior::HeadGet {
                head: 405,
                get: 416,
            },
        ),
        (
            "/odd.png",
            Behavior::HeadGet {
                head: 416,
                get: 200,
            },
        ),
        (
            "/gone-empty.png",
            Behavior::HeadGet {
                head: 404,
                get: 416,
            },
        ),
    ])
    .await;
    let prober = Prober::new().unwrap();
    let empty = prober.probe(&o.url("/empty.png"), &rules()).await;
    assert_eq!(
        (empty.verdict, empty.status, empty.note.as_deref()),
        (Verdict::Present, Some(416), Some("HEAD 405, GET 416"))
    );
    let odd = prober.probe(&o.url("/odd.png"), &rules()).await;
    assert_eq!(
        (odd.verdict, odd.status),
        (Verdict::Inconclusive, Some(416))
    );
    assert_eq!(
        o.count("GET", "/odd.png"),
        0,
        "only a gone HEAD is confirmed"
    );
    // HEAD says gone, the confirming ranged GET finds an empty file.
    let disagree = prober.probe(&o.url("/gone-empty.png"), &rules()).await;
    assert_eq!(
        (disagree.verdict, disagree.status, disagree.note.as_deref()),
        (
            Verdict::Inconclusive,
            Some(416),
            Some("HEAD answered 404 but GET answered 416")
        )
    );
}

#[tokio::test]
async fn a_head_get_disagreement_is_noted_and_a_confirmed_gone_is_not() {
    let o = origin(&[(
        "/edge.png",
        Behavior::HeadGet {
            head: 404,
            get: 200,
        },
    )])
    .await;
    let prober = Prober::new().unwrap();
    let edge = prober.probe(&o.url("/edge.png"), &rules()).await;
    assert_eq!(edge.verdict, Verdict::Inconclusive);
    assert_eq!(edge.status, Some(200));
    assert_eq!(
        edge.note.as_deref(),
        Some("HEAD answered 404 but GET answered 200")
    );
    let gone = prober.probe(&o.url("/missing.png"), &rules()).await;
    assert_eq!((gone.verdict, gone.status), (Verdict::Gone, Some(404)));
    assert_eq!(gone.note, None);
    assert_eq!(o.count("GET", "/missing.png"), 1, "the gone was confirmed");
}

#[tokio::test]
async fn a_redirect_chain_is_followed_up_to_the_limit_and_no_further() {
    let hop = |to: &str| Behavior::Redirect {
        status: 301,
        to: to.to_owned(),
    };
    let o = origin(&[
        ("/a.png", hop("/b.png")),
        ("/b.png", hop("/c.png")),
        ("/c.png", hop("/d.png")),
        ("/d.png", Behavior::Present),
    ])
    .await;
    let prober = Prober::new().unwrap();
    let with = |follow_redirects| ProbeRules {
        follow_redirects,
        ..rules()
    };
    let three = prober.probe(&o.url("/a.png"), &with(3)).await;
    assert_eq!((three.verdict, three.status), (Verdict::Present, Some(200)));
    assert_eq!(o.count("HEAD", "/d.png"), 1, "three hops reach /d.png");

    o.clear();
    let two = prober.probe(&o.url("/a.png"), &with(2)).await;
    assert_eq!(
        (two.verdict, two.status),
        (Verdict::Inconclusive, Some(301))
    );
    assert_eq!(two.note.as_deref(), Some("more than 2 redirects"));
    assert_eq!(o.count("HEAD", "/c.png"), 1);
    assert_eq!(o.count("HEAD", "/d.png"), 0, "the third hop is not taken");

    let none = prober.probe(&o.url("/a.png"), &with(0)).await;
    assert_eq!(
        none.note.as_deref(),
        Some("redirect 301 not followed (follow_redirects: 0)")
    );
}

#[tokio::test(start_paused = true)]
async fn inconclusive_probes_are_retried_with_a_growing_jittered_capped_backoff() {
    let o = origin(&[("/busy.png", Behavior::Status(503))]).await;
    let prober = Prober::new()
        .unwrap()
        .with_retry_base(Duration::from_secs(1));
    let two = prober
        .probe(
            &o.url("/busy.png"),
            &ProbeRules {
                retries: 2,
                ..rules()
            },
        )
        .await;
    assert_eq!((two.verdict, two.attempts), (Verdict::Inconclusive, 3));
    assert_eq!(o.count("HEAD", "/busy.png"), 3);
    // Half to all of 1 s, then of 2 s (src/backoff.rs).
    assert!(
        two.elapsed >= Duration::from_millis(1500) && two.elapsed <= Duration::from_secs(3),
        "{:?}",
        two.elapsed
    );
    // 1, 2, 4, then 8, 16, ... capped at 5 s: 1+2+4+5*5 = 32 s at most,
    // half of it at least. Without the cap it would be 127.5 s at least;
    // without growth, 8 s at most.
    let eight = prober
        .probe(
            &o.url("/busy.png"),
            &ProbeRules {
                retries: 8,
                ..rules()
            },
        )
        .await;
    assert_eq!(eight.attempts, 9);
    assert!(
        eight.elapsed >= Duration::from_secs(16) && eight.elapsed <= Duration::from_secs(32),
        "{:?}",
        eight.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_holds_its_host_back_one_second_without_retry_after_and_the_cap_with_a_long_one() {
    let o = origin(&[
        ("/plain-429.png", Behavior::Status(429)),
        (
            "/long-429.png",
            Behavior::TooManyRequests {
                retry_after_secs: 600,
            },
        ),
        ("/ok.png", Behavior::Present),
    ])
    .await;
    let prober = Prober::new()
        .unwrap()
        .with_max_host_backoff(Duration::from_secs(3));
    let first = prober.probe(&o.url("/plain-429.png"), &rules()).await;
    assert_eq!(first.verdict, Verdict::Inconclusive);
    let next = prober.probe(&o.url("/ok.png"), &rules()).await;
    assert_eq!(next.verdict, Verdict::Present);
    assert!(
        next.elapsed >= Duration::from_secs(1) && next.elapsed < Duration::from_millis(1100),
        "no Retry-After: a second, waited {:?}",
        next.elapsed
    );
    prober.probe(&o.url("/long-429.png"), &rules()).await;
    let capped = prober.probe(&o.url("/ok.png"), &rules()).await;
    assert!(
        capped.elapsed >= Duration::from_secs(3) && capped.elapsed < Duration::from_millis(3100),
        "Retry-After 600 capped at 3 s, waited {:?}",
        capped.elapsed
    );
}

#[tokio::test]
async fn reset_host_limits_lets_a_reload_change_the_per_host_limit() {
    let o = origin(&[]).await;
    o.set_default(Behavior::Slow(Duration::from_millis(300)));
    let prober = Prober::new().unwrap();
    let burst = |per_host_concurrency: usize| {
        let prober = &prober;
        let o = &o;
        async move {
            let rules = ProbeRules {
                per_host_concurrency,
                ..rules()
            };
            let probes = (0..4).map(|i| {
                let url = o.url(&format!("/{i}.png"));
                let rules = rules.clone();
                async move { prober.probe(&url, &rules).await }
            });
            for obs in futures::future::join_all(probes).await {
                assert_eq!(obs.verdict, Verdict::Present);
            }
        }
    };
    burst(1).await;
    assert_eq!(o.max_in_flight(), 1, "one at a time to the host");
    // Without a reset the host keeps the limit it was first probed with.
    burst(4).await;
    assert_eq!(
        o.max_in_flight(),
        1,
        "the host's limit is kept across passes"
    );
    prober.reset_host_limits();
    burst(4).await;
    assert_eq!(o.max_in_flight(), 4, "after a reload, the new limit");
}

/// An origin on loopback that answers every `HEAD` with `head` (a whole
/// raw HTTP/1.1 answer) and every `GET` with `get`, or hangs up on it
/// (`None`): for answers the fake origin does not give.
async fn raw_origin(head: &'static str, get: Option<&'static str>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let request: Vec<u8> = buf.drain(..end + 4).collect();
                        let answer = if request.starts_with(b"HEAD ") {
                            head
                        } else if let Some(get) = get {
                            get
                        } else {
                            return; // hang up
                        };
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A gone `HEAD` whose confirming `GET` gets no answer at all is
/// inconclusive, and the observation says what happened.
#[tokio::test]
async fn a_gone_head_whose_confirming_get_fails_is_inconclusive_and_says_so() {
    let addr = raw_origin("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", None).await;
    let obs = Prober::new()
        .unwrap()
        .probe(&format!("http://{addr}/img.png"), &rules())
        .await;
    assert_eq!(obs.verdict, Verdict::Inconclusive, "{obs:?}");
    assert_eq!(obs.status, None, "{obs:?}");
    assert!(obs.error.is_some(), "{obs:?}");
    assert_eq!(
        obs.note.as_deref(),
        Some("HEAD answered 404 but the confirming GET failed"),
        "{obs:?}"
    );
}

/// Only a present answer's validators are kept, and only when it has any.
#[tokio::test]
async fn only_a_present_answer_with_validators_keeps_them() {
    let o = origin(&[("/img.png", Behavior::content(b"12345", "v1"))]).await;
    let prober = Prober::new().unwrap();
    let present = prober.probe(&o.url("/img.png"), &rules()).await;
    assert_eq!(present.verdict, Verdict::Present);
    let v = present.validators.expect("a present answer's validators");
    assert_eq!(v.etag.as_deref(), Some("\"v1\""));
    assert_eq!(v.length, Some(5));

    // Gone, though the answers carry an ETag.
    let gone = raw_origin(
        "HTTP/1.1 404 Not Found\r\netag: \"gone\"\r\ncontent-length: 0\r\n\r\n",
        Some("HTTP/1.1 404 Not Found\r\netag: \"gone\"\r\ncontent-length: 0\r\n\r\n"),
    )
    .await;
    let obs = prober
        .probe(&format!("http://{gone}/img.png"), &rules())
        .await;
    assert_eq!(obs.verdict, Verdict::Gone, "{obs:?}");
    assert_eq!(obs.validators, None, "{obs:?}");

    // Present, with nothing that identifies the bytes.
    let bare = raw_origin("HTTP/1.1 200 OK\r\n\r\n", None).await;
    let obs = prober
        .probe(&format!("http://{bare}/img.png"), &rules())
        .await;
    assert_eq!(obs.verdict, Verdict::Present, "{obs:?}");
    assert_eq!(obs.validators, None, "{obs:?}");
}

/// A 429 to another request of the host (discovery's page fetches) holds
/// back the probes too, capped like a probe's own.
#[tokio::test(start_paused = true)]
async fn a_host_slots_backoff_holds_back_probes_to_the_host_up_to_the_cap() {
    let o = origin(&[("/ok.png", Behavior::Present)]).await;
    let prober = Prober::new()
        .unwrap()
        .with_max_host_backoff(Duration::from_secs(3));
    let url = url::Url::parse(&o.url("/page.html")).unwrap();
    let slot = prober.host_slot(&url, 4).await;
    slot.back_off(Duration::from_secs(2));
    drop(slot);
    let held = prober.probe(&o.url("/ok.png"), &rules()).await;
    assert!(
        held.elapsed >= Duration::from_secs(2) && held.elapsed < Duration::from_millis(2100),
        "held back 2 s, waited {:?}",
        held.elapsed
    );
    let slot = prober.host_slot(&url, 4).await;
    slot.back_off(Duration::from_secs(600));
    drop(slot);
    let capped = prober.probe(&o.url("/ok.png"), &rules()).await;
    assert!(
        capped.elapsed >= Duration::from_secs(3) && capped.elapsed < Duration::from_millis(3100),
        "600 s capped at 3 s, waited {:?}",
        capped.elapsed
    );
}

/// A redirect to another host lets go of the first host's permit and waits
/// for one of the new host's: four sources on four hosts, all moved to one
/// slow host, reach it one at a time under a per-host limit of 1.
#[tokio::test]
async fn a_redirect_to_another_host_waits_for_that_hosts_permit() {
    let target = origin(&[]).await;
    target.set_default(Behavior::Slow(Duration::from_millis(200)));
    let mut movers = Vec::new();
    for _ in 0..4 {
        movers.push(
            origin(&[(
                "/img.png",
                Behavior::Redirect {
                    status: 301,
                    to: target.url("/img.png"),
                },
            )])
            .await,
        );
    }
    let prober = Prober::new().unwrap();
    let rules = ProbeRules {
        per_host_concurrency: 1,
        follow_redirects: 2,
        ..rules()
    };
    let probes = movers.iter().map(|o| {
        let (url, rules, prober) = (o.url("/img.png"), rules.clone(), &prober);
        async move { prober.probe(&url, &rules).await }
    });
    for obs in futures::future::join_all(probes).await {
        assert_eq!(obs.verdict, Verdict::Present, "{obs:?}");
    }
    assert_eq!(target.count("HEAD", "/img.png"), 4);
    assert_eq!(
        target.max_in_flight(),
        1,
        "a redirected probe holds the new host's permit, not the old one's"
    );
}
