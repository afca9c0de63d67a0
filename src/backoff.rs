//! How long to wait before trying again, for probes, discovery and API
//! calls alike: exponential backoff with jitter, and what a `429` asks for.
//! One home for the formulas, so that the three callers cannot drift apart.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The wait before retry number `retry` (0 for the first): between half
/// and all of `base * 2^retry`, that product capped at `cap`. The jitter
/// keeps many callers that failed together from retrying together.
pub fn exponential(base: Duration, retry: u32, cap: Duration) -> Duration {
    let full = base.saturating_mul(2u32.saturating_pow(retry)).min(cap);
    full.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// How long a host that answered `429` asks to be left alone: its
/// `Retry-After`, or [`DEFAULT_429_WAIT`] without a usable one. Callers
/// cap it.
pub fn after_429(headers: &HeaderMap) -> Duration {
    retry_after(headers).unwrap_or(DEFAULT_429_WAIT)
}

/// The wait after a `429` that carries no usable `Retry-After`.
pub const DEFAULT_429_WAIT: Duration = Duration::from_secs(1);

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_wait_doubles_is_jittered_into_its_upper_half_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for _ in 0..200 {
            for (retry, full) in [
                (0, 100),
                (1, 200),
                (2, 400),
                (3, 800),
                (4, 1000),
                (40, 1000),
            ] {
                let w = exponential(base, retry, cap);
                let full = Duration::from_millis(full);
                assert!(w >= full / 2 && w <= full, "retry {retry}: {w:?}");
            }
        }
        // Jittered: not the same wait every time.
        let waits: std::collections::HashSet<Duration> =
            (0..50).map(|_| exponential(base, 3, cap)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_defaults_to_a_second() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        assert_eq!(after_429(&h), Duration::from_secs(1));
        h.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(after_429(&h), Duration::from_secs(7));
        let soon = chrono::Utc::now() + chrono::Duration::seconds(30);
        let date = soon.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let w = retry_after(&h).unwrap();
        assert!(
            w >= Duration::from_secs(28) && w <= Duration::from_secs(30),
            "{w:?}"
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(after_429(&h), Duration::from_secs(1));
    }
}
