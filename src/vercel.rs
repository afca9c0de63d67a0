//! The client for Vercel's `dangerously-delete-by-src-images`. It knows
//! nothing of probes: it takes the sources of one (project, teamId, slug)
//! target, sends them in batches of at most 8, retries what is worth
//! retrying, and says per batch what happened.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Token, VercelConfig};
use crate::store::Endpoint;
use crate::tls::ClientError;

/// Vercel accepts at most this many sources per call.
pub const MAX_BATCH: usize = 8;
/// The path of the endpoint, below `api_base` (the ledger's
/// [`Endpoint`] names it).
pub const ENDPOINT_PATH: &str = crate::store::Endpoint::Delete.path();
/// The soft variant: stale copies are served while Vercel revalidates.
pub const INVALIDATE_PATH: &str = crate::store::Endpoint::Invalidate.path();
/// A `Retry-After` longer than this is not waited for: the batch fails and is
/// retried on the next pass.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// One call's timeout. The API answers in well under a second; a call that
/// takes this long is hanging.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// After this many calls of one target got no answer (timeout or no
/// connection) in one pass, the rest of its batches are not sent this pass:
/// a hanging API costs a bounded time, not minutes per batch.
pub const MAX_UNANSWERED: u32 = 3;
/// Once shutdown begins, a call in flight gets this long to answer before it
/// is abandoned (its sources are `failed` and retried next pass), so `once`
/// ends well inside a Kubernetes grace period (30 s by default).
pub const SHUTDOWN_CALL_GRACE: Duration = Duration::from_secs(5);
/// At most this much of an error body is read (the message is in its first
/// bytes; a huge body must not fill the memory).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// What `encodeURIComponent` leaves alone, as the official SDK encodes query values.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Where purges go: sources are batched per target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PurgeTarget {
    pub project: String,
    pub team_id: Option<String>,
    pub slug: Option<String>,
}

/// Why a batch was not purged.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PurgeError {
    #[error(
        "vercel answered {status} for project {project}: {} ({message}); no more purges for this project in this pass",
        if *.status == 401 {
            format!("the token in {token_env} was refused (invalid, expired or revoked: create a new one and set {token_env})")
        } else {
            format!("the token in {token_env} is not allowed to purge it (check that the token's scope includes the project's team and that the team id/slug is right)")
        }
    )]
    Unauthorized {
        status: u16,
        project: String,
        token_env: String,
        message: String,
    },
    #[error(
        "vercel answered 402 for project {project}: the team's plan lacks purge by source image ({message})"
    )]
    PlanLacksFeature { project: String, message: String },
    #[error("vercel answered {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("vercel api failed after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    /// A 3xx: redirects are never followed, so the token never goes to
    /// another host, and a redirect target's 200 is never taken for a purge.
    #[error(
        "vercel api answered {status} (a redirect to {location}); redirects are not followed, retried next pass"
    )]
    Redirected { status: u16, location: String },
    #[error(
        "vercel api did not answer {unanswered} calls for project {project} ({last}); no more calls for it in this pass, retried next pass"
    )]
    Unanswered {
        project: String,
        unanswered: u32,
        last: String,
    },
    #[error(
        "shutting down: the call got no answer within {}s of the signal and was abandoned; retried next pass", SHUTDOWN_CALL_GRACE.as_secs()
    )]
    Abandoned,
    #[error(
        "vercel answered 429 with Retry-After {secs}s, longer than origin-watch waits; retried next pass"
    )]
    RateLimited { secs: u64 },
    #[error("not sent: {0}")]
    NotSent(String),
    /// Shutdown began before this batch was sent: nothing failed, it waits
    /// for a later pass.
    #[error("not sent: shutting down, no new purge calls")]
    ShuttingDown,
}

/// The outcome of one batch.
#[derive(Debug, Clone)]
pub struct BatchResult {
    pub sources: Vec<Arc<str>>,
    /// HTTP calls made for this batch (retries included).
    pub calls: u32,
    pub outcome: Result<(), PurgeError>,
}

/// The last answer of a call's attempts.
#[derive(Debug, Default)]
struct LastAnswer {
    status: Option<u16>,
    vercel_id: Option<String>,
}

/// What one call (with its retries) came to, for the ledger.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Requests made (0: not sent).
    pub calls: u32,
    /// The status of the last answer; `None` when none came.
    pub status: Option<u16>,
    /// Vercel's `x-vercel-id` of the last answer.
    pub vercel_id: Option<String>,
    pub outcome: Result<(), PurgeError>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "srcImages")]
    src_images: Vec<&'a str>,
    #[serde(
        rename = "revalidationDeadlineSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    revalidation_deadline_seconds: Option<u64>,
}

/// Backoff for 429 without `Retry-After`, 5xx and connection errors.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `retry` (see [`crate::backoff::exponential`]).
    fn wait(&self, retry: u32) -> Duration {
        crate::backoff::exponential(self.base, retry, self.max_wait)
    }
}

pub struct VercelClient {
    http: reqwest::Client,
    api_base: String,
    token: Token,
    token_env: String,
    deadline: Option<u64>,
    retry: RetryPolicy,
    call_timeout: Duration,
    max_retry_after: Duration,
}

impl VercelClient {
    pub fn new(cfg: &VercelConfig, token: Token) -> Result<VercelClient, ClientError> {
        Ok(Self::with_builder(cfg, token, reqwest::Client::builder())?)
    }

    /// As [`VercelClient::new`], trusting `trust`'s roots (the system store
    /// and `ca_file:` besides the Mozilla roots): a TLS-intercepting proxy's
    /// CA works for API calls too.
    pub fn trusting(
        cfg: &VercelConfig,
        token: Token,
        trust: &crate::tls::Trust,
    ) -> Result<VercelClient, ClientError> {
        Ok(Self::with_builder(cfg, token, trust.reqwest_builder()?)?)
    }

    fn with_builder(
        cfg: &VercelConfig,
        token: Token,
        builder: reqwest::ClientBuilder,
    ) -> Result<VercelClient, reqwest::Error> {
        let http = builder
            .user_agent(crate::USER_AGENT)
            // A 3xx is an answer, not a hop: the token stays with api_base.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CALL_TIMEOUT)
            .build()?;
        Ok(VercelClient {
            http,
            api_base: cfg.api_base().as_str().trim_end_matches('/').to_owned(),
            token,
            token_env: cfg.token_env().to_owned(),
            deadline: cfg.revalidation_deadline_seconds(),
            retry: RetryPolicy::default(),
            call_timeout: CALL_TIMEOUT,
            max_retry_after: MAX_RETRY_AFTER,
        })
    }

    /// Shortens the timeout of one call (tests; the default is [`CALL_TIMEOUT`]).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Lowers the longest `Retry-After` waited for (tests; the default is
    /// [`MAX_RETRY_AFTER`]).
    pub fn with_max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The request URL for a target, query values encoded as the SDK does.
    pub fn url(&self, target: &PurgeTarget) -> String {
        self.url_for(Endpoint::Delete, target)
    }

    /// The URL of `endpoint` for `target`, query keys as the SDK spells them.
    pub fn url_for(&self, endpoint: Endpoint, target: &PurgeTarget) -> String {
        let enc = |v: &str| utf8_percent_encode(v, QUERY_VALUE).to_string();
        let mut url = format!(
            "{}{}?projectIdOrName={}",
            self.api_base,
            endpoint.path(),
            enc(&target.project)
        );
        if let Some(t) = &target.team_id {
            url.push_str("&teamId=");
            url.push_str(&enc(t));
        }
        if let Some(s) = &target.slug {
            url.push_str("&slug=");
            url.push_str(&enc(s));
        }
        url
    }

    /// Purges `sources` of one target in batches of at most 8. A 401, 402 or
    /// 403 stops the rest of this target's batches; a cancelled token stops
    /// new calls (a call in flight finishes).
    pub async fn purge(
        &self,
        target: &PurgeTarget,
        sources: &[Arc<str>],
        cancel: &CancellationToken,
    ) -> Vec<BatchResult> {
        let mut results = Vec::with_capacity(sources.len().div_ceil(MAX_BATCH));
        let mut stop: Option<PurgeError> = None;
        let mut unanswered = 0;
        for batch in sources.chunks(MAX_BATCH) {
            let (calls, outcome) = if let Some(err) = &stop {
                (0, Err(PurgeError::NotSent(err.to_string())))
            } else if cancel.is_cancelled() {
                (0, Err(PurgeError::ShuttingDown))
            } else {
                let sent = self
                    .send(Endpoint::Delete, target, batch, cancel, &mut unanswered)
                    .await;
                (sent.calls, sent.outcome)
            };
            if let Err(
                e @ (PurgeError::Unauthorized { .. }
                | PurgeError::PlanLacksFeature { .. }
                | PurgeError::Unanswered { .. }),
            ) = &outcome
            {
                stop = Some(e.clone());
            }
            results.push(BatchResult {
                sources: batch.to_vec(),
                calls,
                outcome,
            });
        }
        results
    }

    /// Sends one batch (at most [`MAX_BATCH`] sources) to `endpoint`, with
    /// the retries the contract names.
    pub async fn send(
        &self,
        endpoint: Endpoint,
        target: &PurgeTarget,
        batch: &[Arc<str>],
        cancel: &CancellationToken,
        unanswered: &mut u32,
    ) -> Sent {
        let mut last = LastAnswer::default();
        let (calls, outcome) = self
            .send_batch(endpoint, target, batch, cancel, &mut last, unanswered)
            .await;
        Sent {
            calls,
            status: last.status,
            vercel_id: last.vercel_id,
            outcome,
        }
    }

    async fn send_batch(
        &self,
        endpoint: Endpoint,
        target: &PurgeTarget,
        batch: &[Arc<str>],
        cancel: &CancellationToken,
        last: &mut LastAnswer,
        unanswered: &mut u32,
    ) -> (u32, Result<(), PurgeError>) {
        let url = self.url_for(endpoint, target);
        let body = serde_json::to_vec(&Body {
            src_images: batch.iter().map(|s| &**s).collect(),
            // The invalidate endpoint takes no deadline.
            revalidation_deadline_seconds: self.deadline.filter(|_| endpoint == Endpoint::Delete),
        })
        .expect("a list of strings serializes");
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
            .expect("token checked at load");
        auth.set_sensitive(true);

        let mut calls = 0;
        loop {
            calls += 1;
            let send = self
                .http
                .post(&url)
                .header(AUTHORIZATION, auth.clone())
                .header(CONTENT_TYPE, "application/json")
                .timeout(self.call_timeout)
                .body(body.clone())
                .send();
            // A call in flight finishes, within a grace once shutdown begins.
            let sent = tokio::select! {
                sent = send => sent,
                _ = async {
                    cancel.cancelled().await;
                    tokio::time::sleep(SHUTDOWN_CALL_GRACE).await;
                } => return (calls, Err(PurgeError::Abandoned)),
            };
            let (wait, last) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    last.status = Some(status.as_u16());
                    last.vercel_id = resp
                        .headers()
                        .get("x-vercel-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let retry_after = crate::backoff::retry_after(resp.headers());
                    tracing::info!(
                        project = %target.project,
                        team_id = target.team_id.as_deref(),
                        slug = target.slug.as_deref(),
                        sources = batch.len(),
                        status = status.as_u16(),
                        attempt = calls,
                        endpoint = endpoint.as_str(),
                        vercel_id = last.vercel_id.as_deref().unwrap_or(""),
                        "purge call"
                    );
                    // The contract: marked purged only after a 200.
                    if status == StatusCode::OK {
                        return (calls, Ok(()));
                    }
                    if status.is_redirection() {
                        let location = resp
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|l| l.to_str().ok())
                            .map_or_else(|| "nowhere".to_owned(), crate::redact::for_stdout);
                        return (
                            calls,
                            Err(PurgeError::Redirected {
                                status: status.as_u16(),
                                location,
                            }),
                        );
                    }
                    let message = error_message(status, &read_capped(resp).await);
                    match status.as_u16() {
                        401 | 403 => {
                            return (
                                calls,
                                Err(PurgeError::Unauthorized {
                                    status: status.as_u16(),
                                    project: target.project.clone(),
                                    token_env: self.token_env.clone(),
                                    message,
                                }),
                            );
                        }
                        402 => {
                            return (
                                calls,
                                Err(PurgeError::PlanLacksFeature {
                                    project: target.project.clone(),
                                    message,
                                }),
                            );
                        }
                        429 => match retry_after {
                            Some(d) if d > self.max_retry_after => {
                                return (calls, Err(PurgeError::RateLimited { secs: d.as_secs() }));
                            }
                            Some(d) => (
                                d + Duration::from_millis(fastrand::u64(0..250)),
                                format!("429: {message}"),
                            ),
                            None => (self.retry.wait(calls - 1), format!("429: {message}")),
                        },
                        500 | 502 | 503 | 504 => (
                            self.retry.wait(calls - 1),
                            format!("{}: {message}", status.as_u16()),
                        ),
                        s => {
                            return (calls, Err(PurgeError::Rejected { status: s, message }));
                        }
                    }
                }
                Err(e) => {
                    let why = if e.is_timeout() {
                        format!(
                            "timeout after {}",
                            humantime::format_duration(self.call_timeout)
                        )
                    } else {
                        crate::redact::owned(format!(
                            "no answer: {}",
                            crate::transport::innermost(&e)
                        ))
                    };
                    tracing::warn!(project = %target.project, attempt = calls, error = %why, "purge call got no answer");
                    *unanswered += 1;
                    if *unanswered >= MAX_UNANSWERED {
                        return (
                            calls,
                            Err(PurgeError::Unanswered {
                                project: target.project.clone(),
                                unanswered: *unanswered,
                                last: why,
                            }),
                        );
                    }
                    (self.retry.wait(calls - 1), why)
                }
            };
            if calls > self.retry.max_retries {
                return (
                    calls,
                    Err(PurgeError::Exhausted {
                        attempts: calls,
                        last,
                    }),
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => {
                    return (calls, Err(PurgeError::NotSent(format!("shutting down before retry ({last})"))));
                }
            }
        }
    }
}

/// What `GET /v9/projects/{idOrName}` said about a target (`check --online`).
#[derive(Debug, Clone, PartialEq)]
pub enum ProjectLookup {
    /// 200: the project exists under the team, and the token may read it.
    Found { id: String, name: String },
    /// Any other answer, with the API's message; `invalid_token` when the
    /// API said the token itself is bad (401, or a 403 with `invalidToken`).
    Refused {
        status: u16,
        message: String,
        invalid_token: bool,
    },
    /// No answer (connection, TLS, timeout).
    NoAnswer(String),
}

impl VercelClient {
    /// Looks a target's project up (a read-only call): the check that the
    /// token is valid and the project exists under its team.
    pub async fn project(&self, target: &PurgeTarget) -> ProjectLookup {
        let enc = |v: &str| utf8_percent_encode(v, QUERY_VALUE).to_string();
        let mut url = format!("{}/v9/projects/{}", self.api_base, enc(&target.project));
        let mut sep = '?';
        for (key, value) in [("teamId", &target.team_id), ("slug", &target.slug)] {
            if let Some(v) = value {
                url.push(sep);
                url.push_str(key);
                url.push('=');
                url.push_str(&enc(v));
                sep = '&';
            }
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
            .expect("token checked at load");
        auth.set_sensitive(true);
        let sent = self
            .http
            .get(&url)
            .header(AUTHORIZATION, auth)
            .timeout(self.call_timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return ProjectLookup::NoAnswer(format!(
                    "timeout after {}",
                    humantime::format_duration(self.call_timeout)
                ));
            }
            Err(e) => {
                return ProjectLookup::NoAnswer(crate::redact::owned(crate::transport::innermost(
                    &e,
                )));
            }
        };
        let status = resp.status();
        let body = read_capped(resp).await;
        if status == StatusCode::OK {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let field = |k: &str| {
                json.get(k)
                    .and_then(|v| v.as_str())
                    .map(crate::redact::for_stdout)
                    .unwrap_or_default()
            };
            return ProjectLookup::Found {
                id: field("id"),
                name: field("name"),
            };
        }
        let said_invalid = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.get("invalidToken")?.as_bool())
            .unwrap_or(false);
        ProjectLookup::Refused {
            status: status.as_u16(),
            message: error_message(status, &body),
            invalid_token: status == StatusCode::UNAUTHORIZED || said_invalid,
        }
    }
}

/// The first [`MAX_ERROR_BODY`] bytes of a body, as text; the rest is not read.
async fn read_capped(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ERROR_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The API's error message, read leniently: `{"error":{"code","message"}}`,
/// the `err` spelling some endpoints use, or the raw text; with secrets
/// masked (some proxies echo the request's headers, token included).
pub fn error_message(status: StatusCode, body: &str) -> String {
    crate::redact::owned(raw_error_message(status, body))
}

fn raw_error_message(status: StatusCode, body: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let inner = json
        .as_ref()
        .and_then(|v| v.get("error").or_else(|| v.get("err")));
    if let Some(inner) = inner {
        let code = inner.get("code").and_then(|c| c.as_str());
        let message = inner
            .get("message")
            .and_then(|m| m.as_str())
            .or_else(|| inner.as_str());
        match (code, message) {
            (Some(c), Some(m)) => return format!("{c}: {m}"),
            (None, Some(m)) => return m.to_owned(),
            (Some(c), None) => return c.to_owned(),
            (None, None) => {}
        }
    }
    let text: String = body.trim().chars().take(200).collect();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no error message")
            .to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> VercelClient {
        let cfg = crate::config::Config::from_yaml(
            "vercel: { api_base: 'http://127.0.0.1:9/' }\nwatches:\n  - { name: s, project: p, origin: 'https://e.com', images: [/a.png] }\n",
        )
        .unwrap();
        VercelClient::new(cfg.vercel(), Token::new("t")).unwrap()
    }

    #[test]
    fn query_is_encoded_like_the_sdk() {
        let url = client().url(&PurgeTarget {
            project: "my app".into(),
            team_id: Some("team_1".into()),
            slug: Some("my-team".into()),
        });
        assert_eq!(
            url,
            "http://127.0.0.1:9/v1/edge-cache/dangerously-delete-by-src-images?projectIdOrName=my%20app&teamId=team_1&slug=my-team"
        );
    }

    #[test]
    fn error_messages_are_read_leniently() {
        let s = StatusCode::BAD_REQUEST;
        assert_eq!(
            error_message(
                s,
                r#"{"error":{"code":"bad_request","message":"srcImages too long"}}"#
            ),
            "bad_request: srcImages too long"
        );
        assert_eq!(error_message(s, r#"{"err":{"message":"nope"}}"#), "nope");
        assert_eq!(error_message(s, "plain text"), "plain text");
        assert_eq!(error_message(s, ""), "Bad Request");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        // Jitter: between half and all of base * 2^n, never more, never less.
        let within = |n: u32, low: Duration, high: Duration| {
            for _ in 0..200 {
                let w = p.wait(n);
                assert!(w >= low && w <= high, "wait({n}) = {w:?}");
            }
        };
        within(0, Duration::from_millis(250), Duration::from_millis(500));
        within(1, Duration::from_millis(500), Duration::from_secs(1));
        within(3, Duration::from_secs(2), Duration::from_secs(4));
        // Capped at max_wait (20 s), jitter below it.
        within(10, Duration::from_secs(10), Duration::from_secs(20));
        within(40, Duration::from_secs(10), Duration::from_secs(20));
        let spread: std::collections::BTreeSet<Duration> = (0..50).map(|_| p.wait(0)).collect();
        assert!(spread.len() > 1, "jittered, not fixed");
    }
}
