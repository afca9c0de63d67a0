//! The optional webhook (`notify:`): after a pass, a JSON POST for each
//! thing a person should hear of without Prometheus: a guard that withheld
//! calls, API calls that failed, and (opt in) each purge or invalidation
//! batch. The body is `{"text": ...}`, which Slack and most receivers
//! accept, plus structured fields. It is told what the pass did (the
//! summaries and the ledger rows of the pass), never the token or a probe
//! header; every text goes through [`crate::redact`].
//!
//! Bounded: each POST has `timeout` and is retried once, every message of a
//! pass is sent at once, and at most [`MAX_MESSAGES`] go out per pass, so a
//! hanging receiver costs a pass at most about twice `timeout`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::pass::PassOutcome;
use crate::policy::Decision;
use crate::store::{Endpoint, LedgerEntry};

/// Messages sent per pass at most; the last one says how many were left out.
pub const MAX_MESSAGES: usize = 10;
/// Sources listed in one message at most.
const SOURCES_LISTED: usize = 8;
pub use crate::config::notify::{DEFAULT_TIMEOUT, Event, NotifyConfig};

/// One message: its text and fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: Event,
    pub body: Value,
}

/// Sends the messages of a pass.
pub struct Notifier {
    http: reqwest::Client,
    config: NotifyConfig,
}

impl Notifier {
    pub fn new(
        config: NotifyConfig,
        trust: &crate::tls::Trust,
    ) -> Result<Notifier, crate::tls::ClientError> {
        let http = trust
            .reqwest_builder()?
            .user_agent(crate::USER_AGENT)
            // The receiver is the URL given; a redirect is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .build()?;
        Ok(Notifier { http, config })
    }

    /// Sends what `outcome` and the pass's ledger rows (`calls`) call for.
    /// `state_error` is the store failure the pass ended with, if any.
    /// Returns how many messages the receiver accepted.
    pub async fn after_pass(
        &self,
        outcome: &PassOutcome,
        calls: &[LedgerEntry],
        state_error: Option<&str>,
    ) -> usize {
        let messages = messages(&self.config.on, outcome, calls, state_error);
        let sent = futures::future::join_all(messages.iter().map(|m| self.post(m))).await;
        sent.into_iter().filter(|ok| *ok).count()
    }

    /// After a pass that started at `since`: reads the pass's ledger rows
    /// (calls of this pass's projects) and sends what they and the outcome
    /// call for. A store that cannot be read only costs the batch messages.
    pub async fn after(
        &self,
        store: &dyn crate::store::Store,
        since: crate::store::Millis,
        result: &Result<PassOutcome, crate::store::StoreError>,
    ) -> usize {
        let empty = PassOutcome::default();
        let (outcome, state_error) = match result {
            Ok(o) => (o, None),
            Err(e) => (&empty, Some(e.to_string())),
        };
        let projects: Vec<&str> = outcome.watches.iter().map(|w| w.project.as_str()).collect();
        let calls = if outcome.api_calls() == 0 {
            Vec::new()
        } else {
            match store.ledger(Some(since)).await {
                Ok(calls) => calls
                    .into_iter()
                    .filter(|c| projects.contains(&c.project.as_str()))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the pass's calls for the notify webhook");
                    Vec::new()
                }
            }
        };
        self.after_pass(outcome, &calls, state_error.as_deref())
            .await
    }

    /// One POST, retried once after a failure; never longer than about
    /// twice the timeout.
    async fn post(&self, m: &Message) -> bool {
        let body = serde_json::to_vec(&m.body).expect("a JSON value serializes");
        let mut last = String::new();
        for attempt in 1..=2 {
            let sent = self
                .http
                .post(self.config.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => last = format!("answered {}", r.status().as_u16()),
                Err(e) if e.is_timeout() => {
                    last = format!(
                        "no answer within {}",
                        humantime::format_duration(self.config.timeout)
                    );
                }
                Err(e) => last = crate::transport::innermost(&e),
            }
            if attempt == 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        tracing::warn!(event = m.event.as_str(), error = %crate::redact::text(&last), "the notify webhook did not take the message (tried twice)");
        false
    }
}

/// The messages a pass calls for, in order: guards, failures, then purge
/// and invalidation batches; at most [`MAX_MESSAGES`].
pub fn messages(
    on: &[Event],
    outcome: &PassOutcome,
    calls: &[LedgerEntry],
    state_error: Option<&str>,
) -> Vec<Message> {
    let mut out = Vec::new();
    let wants = |e: Event| on.contains(&e);
    if wants(Event::Guard) {
        for w in &outcome.watches {
            if let Some(alarm) = &w.guard_alarm {
                out.push(message(
                    Event::Guard,
                    format!(
                        "origin-watch: a guard withheld the calls of watch {} (project {}): {alarm}",
                        w.watch, w.project
                    ),
                    json!({"watch": w.watch, "project": w.project, "reason": alarm}),
                ));
            }
        }
    }
    if wants(Event::Failure) {
        for w in &outcome.watches {
            let failed = w.count(Decision::Failed);
            if failed == 0 {
                continue;
            }
            let errors: Vec<&str> = calls
                .iter()
                .filter(|c| c.project == w.project && c.status != Some(200))
                .filter_map(|c| c.error.as_deref())
                .take(3)
                .collect();
            out.push(message(
                Event::Failure,
                format!(
                    "origin-watch: {failed} {} of watch {} (project {}) failed; {}: {}",
                    plural(failed, "purge or invalidation", "purges or invalidations"),
                    w.watch,
                    w.project,
                    "retried next pass",
                    if errors.is_empty() {
                        "not sent".to_owned()
                    } else {
                        errors.join("; ")
                    }
                ),
                json!({"watch": w.watch, "project": w.project, "failed": failed, "errors": errors}),
            ));
        }
        if let Some(e) = state_error {
            out.push(message(
                Event::Failure,
                format!("origin-watch: the pass ran, but its state could not be recorded: {e}"),
                json!({"error": e}),
            ));
        }
    }
    for c in calls.iter().filter(|c| c.status == Some(200)) {
        let event = match c.endpoint {
            Endpoint::Delete => Event::Purge,
            Endpoint::Invalidate => Event::Invalidate,
        };
        if !wants(event) {
            continue;
        }
        let listed: Vec<&str> = c
            .src_images
            .iter()
            .take(SOURCES_LISTED)
            .map(String::as_str)
            .collect();
        let more = c.src_images.len() - listed.len();
        out.push(message(
            event,
            format!(
                "origin-watch: {} {} {} of project {}: {}{}",
                if event == Event::Purge {
                    "purged"
                } else {
                    "invalidated"
                },
                c.src_images.len(),
                plural(c.src_images.len(), "source image", "source images"),
                c.project,
                listed.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
            json!({
                "project": c.project,
                "team_id": c.team_id,
                "slug": c.slug,
                "endpoint": c.endpoint.as_str(),
                "sources": c.src_images,
                "vercel_id": c.vercel_id,
            }),
        ));
    }
    if out.len() > MAX_MESSAGES {
        let left = out.len() - (MAX_MESSAGES - 1);
        out.truncate(MAX_MESSAGES - 1);
        out.push(message(
            Event::Failure,
            format!(
                "origin-watch: {left} more {} from this pass left out; see the logs or `origin-watch state ledger`",
                plural(left, "message", "messages")
            ),
            json!({"left_out": left}),
        ));
    }
    out
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// A message: `text` and the fields, secrets masked in every string.
fn message(event: Event, text: String, fields: Value) -> Message {
    let mut body = json!({"text": text, "event": event.as_str()});
    if let (Value::Object(b), Value::Object(f)) = (&mut body, fields) {
        b.extend(f);
    }
    Message {
        event,
        body: masked(body),
    }
}

fn masked(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(crate::redact::owned(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(masked).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, masked(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::WatchSummary;

    fn summary(alarm: Option<&str>, failed: usize) -> WatchSummary {
        let mut w = WatchSummary {
            watch: "site".into(),
            project: "app".into(),
            guard_alarm: alarm.map(str::to_owned),
            ..WatchSummary::default()
        };
        for _ in 0..failed {
            w.add(Decision::Failed);
        }
        w
    }

    fn call(status: u16, n: usize) -> LedgerEntry {
        LedgerEntry {
            time: String::new(),
            at: 0,
            endpoint: Endpoint::Delete,
            project: "app".into(),
            team_id: None,
            slug: None,
            src_images: (0..n).map(|i| format!("/img/{i}.png")).collect(),
            status: Some(status),
            vercel_id: None,
            error: (status != 200).then(|| format!("vercel answered {status}")),
            attempts: 1,
        }
    }

    #[test]
    fn only_the_events_asked_for_are_sent() {
        let outcome = PassOutcome {
            watches: vec![summary(Some("canary: gone"), 2)],
            store_error: None,
        };
        let calls = [call(200, 3), call(500, 2)];
        let all = messages(&Event::ALL, &outcome, &calls, None);
        let kinds: Vec<&str> = all.iter().map(|m| m.event.as_str()).collect();
        assert_eq!(kinds, ["guard", "failure", "purge"]);
        assert!(
            all[1].body["text"]
                .as_str()
                .unwrap()
                .contains("vercel answered 500")
        );
        assert_eq!(all[2].body["sources"].as_array().unwrap().len(), 3);
        let guard_only = messages(&[Event::Guard], &outcome, &calls, None);
        assert_eq!(guard_only.len(), 1);
    }

    #[test]
    fn a_busy_pass_sends_at_most_the_cap() {
        let calls: Vec<LedgerEntry> = (0..30).map(|_| call(200, 8)).collect();
        let m = messages(&[Event::Purge], &PassOutcome::default(), &calls, None);
        assert_eq!(m.len(), MAX_MESSAGES);
        assert!(
            m[MAX_MESSAGES - 1].body["text"]
                .as_str()
                .unwrap()
                .contains("21 more messages")
        );
    }

    #[test]
    fn grammar_follows_the_count() {
        let m = messages(
            &[Event::Purge],
            &PassOutcome::default(),
            &[call(200, 1)],
            None,
        );
        let text = m[0].body["text"].as_str().unwrap();
        assert!(text.contains("purged 1 source image of"), "{text}");
    }
}
