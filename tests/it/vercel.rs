//! The Vercel client on its own, against the fake API on loopback: what it
//! waits for on a 429 (a `Retry-After` in seconds, as an HTTP date, above the
//! cap, or none at all), how it backs off on 5xx and on silence, when it
//! gives up, and what a project lookup makes of each answer. The waits run
//! on tokio's paused clock, so a backoff is measured exactly, not raced.

use std::sync::Arc;
use std::time::Duration;

use origin_watch::config::{Config, Token};
use origin_watch::store::Endpoint;
use origin_watch::vercel::{
    ProjectLookup, PurgeError, PurgeTarget, RetryPolicy, Sent, VercelClient,
};
use testkit::{FakeProject, FakeVercel, FakeVercelConfig, RetryAfterForm};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "tok_vercel_client_91c";

fn client_with(api_base: &str, vercel_extra: &str) -> VercelClient {
    let yaml = format!(
        "vercel:\n  api_base: {api_base}\n{vercel_extra}watches:\n  - {{ name: s, project: p, origin: 'http://127.0.0.1:1', images: [/a.png] }}\n"
    );
    let config = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    VercelClient::new(config.vercel(), Token::new(TOKEN)).unwrap()
}

fn client(api_base: &str) -> VercelClient {
    client_with(api_base, "")
}

/// Retries whose waits are long enough to tell one step of the backoff
/// from the next: the n-th retry waits between half and all of 2^n seconds.
fn seconds_backoff(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base: Duration::from_secs(1),
        max_wait: Duration::from_secs(600),
    }
}

fn target(project: &str) -> PurgeTarget {
    PurgeTarget {
        project: project.into(),
        team_id: None,
        slug: None,
    }
}

async fn send(client: &VercelClient, endpoint: Endpoint) -> Sent {
    client
        .send(
            endpoint,
            &target("p"),
            &[Arc::from("/a.png")],
            &CancellationToken::new(),
            &mut 0,
        )
        .await
}

async fn api(cfg: FakeVercelConfig) -> FakeVercel {
    FakeVercel::start(cfg).await.unwrap()
}

fn statuses(api: &FakeVercel) -> Vec<u16> {
    api.calls().iter().map(|c| c.status).collect()
}

/// An address nothing listens on: bound, then let go.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_at_the_cap_is_waited_for_with_a_little_jitter() {
    let api = api(FakeVercelConfig {
        fail_429: 1,
        retry_after_secs: 2,
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let client = client(&api.base_url()).with_max_retry_after(Duration::from_secs(2));
    let started = Instant::now();
    let sent = send(&client, Endpoint::Delete).await;
    let waited = started.elapsed();
    assert_eq!(sent.outcome, Ok(()));
    assert_eq!((sent.calls, sent.status), (2, Some(200)));
    assert_eq!(statuses(&api), [429, 200]);
    let last = api.calls().pop().unwrap();
    assert_eq!(sent.vercel_id.as_deref(), Some(last.vercel_id.as_str()));
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2250),
        "Retry-After 2 and up to 250 ms of jitter, waited {waited:?}"
    );
}

#[tokio::test]
async fn a_retry_after_above_the_cap_fails_the_batch_at_once() {
    let api = api(FakeVercelConfig {
        fail_429: 1,
        retry_after_secs: 3,
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let client = client(&api.base_url()).with_max_retry_after(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let sent = send(&client, Endpoint::Delete).await;
    assert_eq!(sent.outcome, Err(PurgeError::RateLimited { secs: 3 }));
    assert_eq!((sent.calls, sent.status), (1, Some(429)));
    assert_eq!(statuses(&api), [429], "not called again in this pass");
    assert!(started.elapsed() < Duration::from_secs(2), "nothing waited");
}

#[tokio::test]
async fn a_retry_after_as_an_http_date_is_read_as_the_time_until_then() {
    let api = api(FakeVercelConfig {
        fail_429: 1,
        retry_after_secs: 30,
        retry_after_form: RetryAfterForm::HttpDate,
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let client = client(&api.base_url()).with_max_retry_after(Duration::from_secs(2));
    let sent = send(&client, Endpoint::Delete).await;
    // The date has whole seconds: 30 s from now reads as 29 or 30.
    match sent.outcome {
        Err(PurgeError::RateLimited { secs }) => assert!((28..=30).contains(&secs), "{secs}"),
        other => panic!("a date 30 s away is above the cap: {other:?}"),
    }
    assert_eq!(statuses(&api), [429]);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_backs_off_from_the_base() {
    let api = api(FakeVercelConfig {
        fail_429: 1,
        retry_after_form: RetryAfterForm::Absent,
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let client = client(&api.base_url()).with_retry(seconds_backoff(4));
    let started = Instant::now();
    let sent = send(&client, Endpoint::Delete).await;
    let waited = started.elapsed();
    assert_eq!(sent.outcome, Ok(()));
    assert_eq!(statuses(&api), [429, 200]);
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(1),
        "the first retry waits half to all of the base, waited {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_exponentially_then_give_up() {
    let api = api(FakeVercelConfig {
        fail_500: 100,
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let client = client(&api.base_url()).with_retry(seconds_backoff(2));
    let started = Instant::now();
    let sent = send(&client, Endpoint::Delete).await;
    let waited = started.elapsed();
    match &sent.outcome {
        Err(PurgeError::Exhausted { attempts: 3, last }) => {
            assert!(last.starts_with("500: "), "{last}")
        }
        other => panic!("three calls, then exhausted: {other:?}"),
    }
    assert_eq!((sent.calls, sent.status), (3, Some(500)));
    assert_eq!(statuses(&api), [500, 500, 500], "one call and two retries");
    // 0.5..1 s, then 1..2 s.
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_api_stops_the_target_after_three_unanswered_calls() {
    let base = closed_port().await;
    let client = client(&base).with_retry(seconds_backoff(4));
    let sources: Vec<Arc<str>> = (0..9).map(|i| Arc::from(format!("/{i}.png"))).collect();
    let started = Instant::now();
    let results = client
        .purge(&target("shop"), &sources, &CancellationToken::new())
        .await;
    let waited = started.elapsed();
    assert_eq!(results.len(), 2, "a batch of 8 and one of 1");
    assert_eq!(results[0].sources.len(), 8);
    assert_eq!(results[0].calls, 3);
    match &results[0].outcome {
        Err(PurgeError::Unanswered {
            project,
            unanswered: 3,
            last,
        }) => {
            assert_eq!(project, "shop");
            assert!(last.starts_with("no answer: "), "{last}");
        }
        other => panic!("unanswered three times: {other:?}"),
    }
    assert_eq!(results[1].calls, 0, "the second batch is not sent");
    assert!(
        matches!(&results[1].outcome, Err(PurgeError::NotSent(why)) if why.contains("did not answer 3 calls")),
        "{:?}",
        results[1].outcome
    );
    // Two backoffs: 0.5..1 s, then 1..2 s.
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
}

#[tokio::test]
async fn an_api_that_does_not_answer_in_time_is_a_timeout() {
    let api = api(FakeVercelConfig {
        delay: Duration::from_secs(5),
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let client = client(&api.base_url())
        .with_call_timeout(Duration::from_millis(100))
        .with_retry(RetryPolicy {
            max_retries: 4,
            base: Duration::from_millis(1),
            max_wait: Duration::from_millis(2),
        });
    let sent = send(&client, Endpoint::Delete).await;
    assert_eq!(sent.calls, 3);
    assert_eq!(sent.status, None, "no answer came");
    assert_eq!(
        sent.outcome,
        Err(PurgeError::Unanswered {
            project: "p".into(),
            unanswered: 3,
            last: "timeout after 100ms".into(),
        })
    );
    assert_eq!(api.calls().len(), 3, "the fake saw each call arrive");
}

#[tokio::test]
async fn the_revalidation_deadline_goes_to_the_delete_endpoint_only() {
    let api = api(FakeVercelConfig::new(TOKEN)).await;
    let client = client_with(&api.base_url(), "  revalidation_deadline_seconds: 60\n");
    assert_eq!(send(&client, Endpoint::Delete).await.outcome, Ok(()));
    assert_eq!(send(&client, Endpoint::Invalidate).await.outcome, Ok(()));
    let calls = api.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].deadline, Some(serde_json::json!(60)));
    assert_eq!(calls[1].deadline, None, "{}", calls[1].body);
}

#[tokio::test]
async fn a_project_lookup_tells_found_refused_and_no_answer_apart() {
    let api = api(FakeVercelConfig {
        projects: vec![FakeProject::new("shop", Some("team_a"), Some("a"))],
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let in_team = |team: &str| PurgeTarget {
        project: "shop".into(),
        team_id: Some(team.into()),
        slug: None,
    };
    let client = client(&api.base_url());
    match client.project(&in_team("team_a")).await {
        ProjectLookup::Found { name, .. } => assert_eq!(name, "shop"),
        other => panic!("{other:?}"),
    }
    // Another team: 403, the token itself is fine.
    match client.project(&in_team("team_b")).await {
        ProjectLookup::Refused {
            status: 403,
            invalid_token: false,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    // A wrong token: 401 says the token is bad.
    let cfg = Config::from_yaml(&format!(
        "vercel:\n  api_base: {}\nwatches:\n  - {{ name: s, project: p, origin: 'http://127.0.0.1:1', images: [/a.png] }}\n",
        api.base_url()
    ))
    .unwrap();
    let wrong = VercelClient::new(cfg.vercel(), Token::new("tok_wrong")).unwrap();
    match wrong.project(&in_team("team_a")).await {
        ProjectLookup::Refused {
            status: 401,
            invalid_token: true,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_project_lookup_without_an_answer_says_why() {
    let refused = client(&closed_port().await).project(&target("shop")).await;
    match refused {
        ProjectLookup::NoAnswer(why) => assert!(!why.contains("timeout"), "{why}"),
        other => panic!("{other:?}"),
    }
    let api = api(FakeVercelConfig {
        delay: Duration::from_secs(5),
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let slow = client(&api.base_url()).with_call_timeout(Duration::from_millis(100));
    assert_eq!(
        slow.project(&target("shop")).await,
        ProjectLookup::NoAnswer("timeout after 100ms".into())
    );
}

/// A lookup reads at most 64 KiB of an answer: a project whose JSON fits is
/// read whole however many chunks it comes in; a larger answer is cut (and
/// then is no JSON the lookup can read).
#[tokio::test]
async fn a_project_lookup_reads_up_to_64_kib_of_the_answer() {
    let project = |id: &str, name_len: usize| FakeProject {
        id: id.into(),
        name: "n".repeat(name_len),
        team_id: None,
        slug: None,
    };
    let api = api(FakeVercelConfig {
        projects: vec![project("prj_fits", 40_000), project("prj_huge", 70_000)],
        ..FakeVercelConfig::new(TOKEN)
    })
    .await;
    let client = client(&api.base_url());
    match client.project(&target("prj_fits")).await {
        ProjectLookup::Found { id, name } => {
            assert_eq!(id, "prj_fits");
            assert_eq!(name.len(), 40_000, "read whole");
        }
        other => panic!("{other:?}"),
    }
    match client.project(&target("prj_huge")).await {
        ProjectLookup::Found { id, name } => {
            assert_eq!((id.as_str(), name.len()), ("", 0), "cut at 64 KiB")
        }
        other => panic!("{other:?}"),
    }
}
