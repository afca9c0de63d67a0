//! `notify:` checked: the webhook, its events and its timeout. What is sent
//! is [`crate::notify`]'s.

use std::time::Duration;

use url::Url;

use super::RawNotify;

/// How long a webhook POST may take, when `notify.timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a notification is about (`notify.on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Guard,
    Failure,
    Purge,
    Invalidate,
}

impl Event {
    pub const ALL: [Event; 4] = [
        Event::Guard,
        Event::Failure,
        Event::Purge,
        Event::Invalidate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Guard => "guard",
            Event::Failure => "failure",
            Event::Purge => "purge",
            Event::Invalidate => "invalidate",
        }
    }
}

/// A checked `notify:` block. The URL (a Slack webhook URL is itself a
/// secret) is registered with [`crate::redact`] and kept out of `Debug`.
#[derive(Clone)]
pub struct NotifyConfig {
    pub(crate) url: Url,
    pub on: Vec<Event>,
    pub timeout: Duration,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("url", &"<redacted>")
            .field("on", &self.on)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl NotifyConfig {
    /// Checks `notify:`; every problem names its key.
    pub fn check(raw: &RawNotify) -> Result<NotifyConfig, Vec<String>> {
        let mut problems = Vec::new();
        let url = match raw.url.as_deref() {
            None => {
                problems.push("notify.url: the webhook URL is needed".to_owned());
                None
            }
            Some(text) => match crate::config::env::expand_env(text) {
                Err(why) => {
                    problems.push(format!("notify.url: {why}"));
                    None
                }
                Ok(expanded) => {
                    crate::redact::register(&expanded);
                    match Url::parse(expanded.trim()) {
                        Ok(u) if crate::sources::is_http_with_host(&u) => Some(u),
                        // The value may be a secret: the problem does not quote it.
                        _ => {
                            problems.push("notify.url: not an http(s) URL".to_owned());
                            None
                        }
                    }
                }
            },
        };
        let mut on = Vec::new();
        for name in raw
            .on
            .clone()
            .unwrap_or_else(|| vec!["guard".into(), "failure".into()])
        {
            match Event::ALL.iter().find(|e| e.as_str() == name) {
                Some(e) if !on.contains(e) => on.push(*e),
                Some(_) => {}
                None => problems.push(format!(
                    "notify.on: {:?} is not one of guard, failure, purge, invalidate",
                    crate::redact::for_stdout(&name)
                )),
            }
        }
        let timeout = match raw.timeout.as_deref().map(humantime::parse_duration) {
            None => DEFAULT_TIMEOUT,
            Some(Ok(d)) if !d.is_zero() && d <= Duration::from_secs(60) => d,
            Some(_) => {
                problems.push("notify.timeout: a duration between 1ms and 60s, e.g. 5s".into());
                DEFAULT_TIMEOUT
            }
        };
        match (url, problems.is_empty()) {
            (Some(url), true) => Ok(NotifyConfig { url, on, timeout }),
            _ => Err(problems),
        }
    }
}
