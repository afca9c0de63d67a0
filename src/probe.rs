//! Probes an origin URL and says what it saw as an [`Observation`]. A failed
//! probe is data, not an error. This module decides nothing about purging;
//! it only turns HTTP answers into a [`Verdict`] by the contract's rules:
//! `HEAD` first, `GET` with `Range: bytes=0-0` when `HEAD` is refused (405,
//! 501) and to confirm a `gone`, redirects followed up to the watch's limit,
//! inconclusive answers retried with backoff, and every request to one host
//! bounded by a process-wide per-host limit that also backs off on 429.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, HeaderMap, LAST_MODIFIED, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;

use crate::transport::Transport;

/// How long an origin's `Retry-After` may hold back probes to it.
pub const MAX_HOST_BACKOFF: Duration = Duration::from_secs(30);

/// The longest wait between two attempts of one probe.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// The most requests in flight to one host; the config's bound on
/// `per_host_concurrency`, enforced here too so no caller can make the
/// semaphore panic.
pub const MAX_PER_HOST: usize = 1024;

/// A lock that a panic elsewhere cannot poison for everyone else: the data
/// behind these locks (host limits, backoff deadlines) stays valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a probe concluded. Serialized by [`Verdict::as_str`], the one
/// place its names are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Present,
    Gone,
    Inconclusive,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Present, Verdict::Gone, Verdict::Inconclusive];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Present => "present",
            Verdict::Gone => "gone",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

serialize_as_str!(Verdict);

/// What one probe saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The HTTP status that decided the verdict; `None` when no answer came.
    pub status: Option<u16>,
    pub verdict: Verdict,
    /// Why no HTTP answer came (timeout, connection, DNS, TLS).
    pub error: Option<String>,
    /// How the verdict was reached when the status alone does not say
    /// (`HEAD 404 but GET 200`, `HEAD 405, GET 200`, an unfollowed redirect).
    pub note: Option<String>,
    pub attempts: u32,
    pub elapsed: Duration,
    /// What a present answer said about the bytes (ETag, Last-Modified,
    /// length), taken from the probe already sent; `None` otherwise.
    pub validators: Option<Validators>,
}

impl Observation {
    fn answered(status: u16, verdict: Verdict, note: Option<String>) -> Self {
        Observation {
            status: Some(status),
            verdict,
            error: None,
            note,
            attempts: 1,
            elapsed: Duration::ZERO,
            validators: None,
        }
    }

    fn failed(error: String) -> Self {
        Observation {
            status: None,
            verdict: Verdict::Inconclusive,
            error: Some(error),
            note: None,
            attempts: 1,
            elapsed: Duration::ZERO,
            validators: None,
        }
    }
}

/// A watch's probe headers (`headers:`): sent with every probe and
/// discovery request of the watch, and only to the host first asked (a
/// redirect to another host gets none). The values are secrets: registered
/// with [`crate::redact`], marked sensitive, and left out of `Debug`.
#[derive(Clone, Default, PartialEq)]
pub struct ProbeHeaders(Arc<HeaderMap>);

impl ProbeHeaders {
    /// Headers whose values have been checked (names and values valid).
    pub fn new(map: HeaderMap) -> ProbeHeaders {
        let mut map = map;
        for value in map.values_mut() {
            if let Ok(text) = value.to_str() {
                crate::redact::register(text);
            }
            value.set_sensitive(true);
        }
        ProbeHeaders(Arc::new(map))
    }

    pub fn map(&self) -> &HeaderMap {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers for a request to `at` in a chain that began at `first`:
    /// all of them on the first host (same scheme, host and port), none
    /// elsewhere.
    pub fn for_hop(&self, first: &Url, at: &Url) -> &HeaderMap {
        static NONE: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
        if same_origin(first, at) {
            &self.0
        } else {
            &NONE
        }
    }
}

/// Whether two URLs share scheme, host and port (the origin).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Only the names: the values are secrets.
impl std::fmt::Debug for ProbeHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What a present answer said about the bytes behind a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub length: Option<u64>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none() && self.length.is_none()
    }

    /// A fingerprint of what identifies the bytes (ETag and length; not
    /// Last-Modified, which a deploy rewrites without new bytes). 0: none.
    pub fn identity(&self) -> u64 {
        if self.etag.is_none() && self.length.is_none() {
            return 0;
        }
        fingerprint(&(&self.etag, self.length))
    }

    /// A fingerprint of all three, to tell whether the row needs writing.
    pub fn all(&self) -> u64 {
        if self.is_empty() {
            return 0;
        }
        fingerprint(self)
    }
}

fn fingerprint<T: Hash + ?Sized>(v: &T) -> u64 {
    // Compared only within one process (the store keeps the text), so the
    // hasher need not be stable across builds; 0 is reserved for "none".
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish().max(1)
}

/// The per-probe settings, taken from a watch's
/// [`Rules`](crate::config::Rules).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRules {
    pub timeout: Duration,
    pub retries: u32,
    pub follow_redirects: u32,
    pub gone_statuses: Vec<u16>,
    pub per_host_concurrency: usize,
    /// Sent with every request of the probe, to its first host only.
    pub headers: ProbeHeaders,
}

/// The documented `defaults:`.
impl Default for ProbeRules {
    fn default() -> Self {
        ProbeRules {
            timeout: Duration::from_secs(10),
            retries: 2,
            follow_redirects: 5,
            gone_statuses: vec![404, 410],
            per_host_concurrency: 16,
            headers: ProbeHeaders::default(),
        }
    }
}

/// One origin host: a bound on requests in flight and a backoff deadline.
struct Host {
    permits: Arc<Semaphore>,
    not_before: Mutex<Option<Instant>>,
}

impl Host {
    /// Waits until the host's backoff (if any) has passed. Called with a
    /// slot held, and re-checked after each wait: a 429 that arrives while
    /// this request waits (for the slot or for an earlier backoff) holds it
    /// back too.
    async fn wait_backoff(&self) {
        loop {
            let until = *lock(&self.not_before);
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    fn back_off(&self, wait: Duration, cap: Duration) {
        let until = Instant::now() + wait.min(cap);
        let mut nb = lock(&self.not_before);
        // (cargo mutants: `<=` here is equivalent: it rewrites the same deadline.)
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
        }
    }
}

/// What a probe attempt holds between its requests: one of the watch's
/// concurrency slots, and the permit of the host it last asked, so a
/// started probe finishes without queueing behind the whole window.
struct Slot<'a> {
    slots: Option<&'a Semaphore>,
    held: Option<tokio::sync::SemaphorePermit<'a>>,
    host: Option<(Arc<Host>, tokio::sync::OwnedSemaphorePermit)>,
}

/// The final answer to one request after redirects.
struct Answer {
    status: u16,
    /// A redirect that was not followed (limit reached, or no usable `Location`).
    unfollowed_redirect: Option<String>,
    /// The validators of a 2xx answer.
    validators: Validators,
}

/// The validators of an answer: ETag and Last-Modified as sent, and the
/// length: the total of a `Content-Range` (a ranged GET), else the
/// `Content-Length` of a whole answer (a HEAD, or a GET that ignored the range).
pub fn validators_of(status: u16, headers: &HeaderMap) -> Validators {
    let text = |name: reqwest::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let total = text(CONTENT_RANGE).and_then(|r| {
        // "bytes 0-0/12345"; "*" when the total is unknown.
        r.rsplit_once('/')
            .and_then(|(_, t)| t.trim().parse::<u64>().ok())
    });
    let length = match status {
        206 => total,
        200..=299 => text(CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok()),
        _ => None,
    };
    Validators {
        etag: text(ETAG),
        last_modified: text(LAST_MODIFIED),
        length,
    }
}

/// Sends probes. One per process: it holds the HTTP client with its idle
/// connections and the per-host limits that every watch shares.
pub struct Prober {
    transport: Transport,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    retry_base: Duration,
    max_host_backoff: Duration,
}

impl Prober {
    /// A prober on the direct client, or on reqwest when a proxy is set.
    pub fn new() -> Result<Prober, crate::tls::ClientError> {
        Ok(Self::with_transport(Transport::from_env()?))
    }

    /// As [`Prober::new`], trusting `trust`'s roots (`ca_file:`).
    pub fn trusting(trust: &crate::tls::Trust) -> Result<Prober, crate::tls::ClientError> {
        Ok(Self::with_transport(Transport::from_env_trusting(trust)?))
    }

    /// The client its probes are sent by (discovery's requests too).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn with_transport(transport: Transport) -> Prober {
        Prober {
            transport,
            hosts: Mutex::new(HashMap::new()),
            retry_base: Duration::from_millis(200),
            max_host_backoff: MAX_HOST_BACKOFF,
        }
    }

    /// Shortens the wait between retries of inconclusive probes (tests).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    /// Lowers the cap on an origin's `Retry-After` (tests; the default is
    /// [`MAX_HOST_BACKOFF`]).
    pub fn with_max_host_backoff(mut self, cap: Duration) -> Self {
        self.max_host_backoff = cap;
        self
    }

    /// Probes `url` and returns what it saw, retrying inconclusive answers.
    pub async fn probe(&self, url: &str, rules: &ProbeRules) -> Observation {
        self.probe_in(url, rules, None).await
    }

    /// As [`Prober::probe`], each request also taking one of `slots` (the
    /// watch's concurrency) for as long as it is on the wire. A slot is
    /// taken only after the host's permit and backoff: a probe waiting for
    /// a slow or rate-limiting host holds none, and other hosts keep going.
    pub async fn probe_in(
        &self,
        url: &str,
        rules: &ProbeRules,
        slots: Option<&Semaphore>,
    ) -> Observation {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut obs = self.attempt(url, rules, slots).await;
            if obs.verdict != Verdict::Inconclusive || attempt > rules.retries {
                obs.attempts = attempt;
                obs.elapsed = started.elapsed();
                return obs;
            }
            let wait = crate::backoff::exponential(self.retry_base, attempt - 1, MAX_RETRY_WAIT);
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        url: &str,
        rules: &ProbeRules,
        slots: Option<&Semaphore>,
    ) -> Observation {
        // Taken by the first request once it holds its host's permit, and
        // kept for the follow-ups (the confirming GET, redirects), so a
        // probe that started finishes without queueing behind the window.
        let slot = &mut Slot {
            slots,
            held: None,
            host: None,
        };
        let url = match Url::parse(url) {
            Ok(u) => u,
            Err(e) => return Observation::failed(format!("bad probe URL: {e}")),
        };
        let head = match self.send(Method::HEAD, url.clone(), rules, slot).await {
            Ok(a) => a,
            Err(e) => return Observation::failed(e),
        };
        if head.status == 405 || head.status == 501 {
            // The origin refuses HEAD: a ranged GET answers instead.
            return match self.send(Method::GET, url, rules, slot).await {
                Ok(get) => {
                    let note = format!("HEAD {}, GET {}", head.status, get.status);
                    self.classify(&get, true, rules, Some(note))
                }
                Err(e) => Observation::failed(format!("HEAD {}, then GET: {e}", head.status)),
            };
        }
        let first = self.classify(&head, false, rules, None);
        if first.verdict != Verdict::Gone {
            return first;
        }
        // Some edges answer HEAD wrongly: a gone counts only if GET agrees.
        match self.send(Method::GET, url, rules, slot).await {
            Ok(get) => {
                let second = self.classify(&get, true, rules, None);
                if second.verdict == Verdict::Gone {
                    first
                } else {
                    Observation::answered(
                        get.status,
                        Verdict::Inconclusive,
                        Some(format!(
                            "HEAD answered {} but GET answered {}",
                            head.status, get.status
                        )),
                    )
                }
            }
            Err(e) => Observation {
                note: Some(format!(
                    "HEAD answered {} but the confirming GET failed",
                    head.status
                )),
                ..Observation::failed(e)
            },
        }
    }

    fn classify(
        &self,
        a: &Answer,
        ranged_get: bool,
        rules: &ProbeRules,
        note: Option<String>,
    ) -> Observation {
        if let Some(why) = &a.unfollowed_redirect {
            return Observation::answered(a.status, Verdict::Inconclusive, Some(why.clone()));
        }
        let verdict = match a.status {
            200..=299 => Verdict::Present,
            s if rules.gone_statuses.contains(&s) => Verdict::Gone,
            // A ranged GET of an empty file: the file is there.
            416 if ranged_get => Verdict::Present,
            _ => Verdict::Inconclusive,
        };
        let mut obs = Observation::answered(a.status, verdict, note);
        if verdict == Verdict::Present && !a.validators.is_empty() {
            obs.validators = Some(a.validators.clone());
        }
        obs
    }

    /// Sends one request, following redirects up to the limit.
    async fn send(
        &self,
        method: Method,
        mut url: Url,
        rules: &ProbeRules,
        slot: &mut Slot<'_>,
    ) -> Result<Answer, String> {
        let mut hops = 0;
        let first = url.clone();
        loop {
            let host = self.host(&url, rules.per_host_concurrency);
            let (status, headers) = {
                // A follow-up to the same host keeps the permit of the
                // request before it; any other permit is let go first, so
                // redirects between hosts cannot deadlock.
                let kept = match slot.host.take() {
                    Some((h, p)) if Arc::ptr_eq(&h, &host) => Some(p),
                    _ => None,
                };
                let permit = match kept {
                    Some(p) => p,
                    None => host
                        .permits
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore open"),
                };
                host.wait_backoff().await;
                if let (Some(slots), None) = (slot.slots, &slot.held) {
                    slot.held = Some(slots.acquire().await.expect("semaphore open"));
                }
                let answered = self
                    .transport
                    .send_with(
                        &method,
                        &url,
                        rules.timeout,
                        rules.headers.for_hop(&first, &url),
                    )
                    .await
                    .map_err(|e| e.describe(rules.timeout))?;
                slot.host = Some((host.clone(), permit));
                answered
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                host.back_off(crate::backoff::after_429(&headers), self.max_host_backoff);
            }
            if !status.is_redirection() {
                return Ok(Answer {
                    status: status.as_u16(),
                    unfollowed_redirect: None,
                    validators: validators_of(status.as_u16(), &headers),
                });
            }
            let location = headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok());
            let why = match location {
                None => Some(format!("{} without a usable Location", status.as_u16())),
                // Only HTTP is probed: another scheme's answer (or a plain
                // HTTP request sent to its port) says nothing.
                Some(next) if !matches!(next.scheme(), "http" | "https") => Some(format!(
                    "{} redirect to a {}: URL not followed (only http and https are)",
                    status.as_u16(),
                    crate::redact::printable(next.scheme())
                )),
                Some(_) if hops >= rules.follow_redirects => Some(if rules.follow_redirects == 0 {
                    format!(
                        "redirect {} not followed (follow_redirects: 0)",
                        status.as_u16()
                    )
                } else {
                    format!("more than {} redirects", rules.follow_redirects)
                }),
                Some(next) => {
                    url = next;
                    hops += 1;
                    None
                }
            };
            if let Some(why) = why {
                return Ok(Answer {
                    status: status.as_u16(),
                    unfollowed_redirect: Some(why),
                    validators: Validators::default(),
                });
            }
        }
    }

    /// Waits for a slot of `url`'s host (and its backoff) under the same
    /// per-host limit as probes, for other requests to the same hosts
    /// (discovery) to share it. The slot is held until the returned guard
    /// is dropped.
    pub async fn host_slot(&self, url: &Url, per_host_concurrency: usize) -> HostSlot {
        let host = self.host(url, per_host_concurrency);
        let permit = host
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        host.wait_backoff().await;
        HostSlot {
            _permit: permit,
            host,
            max_backoff: self.max_host_backoff,
        }
    }

    /// Forgets the per-host limits (after a reload), so the next probe of
    /// each host sets its limit from the new rules. Requests in flight keep
    /// their slots on the old limit until they finish.
    pub fn reset_host_limits(&self) {
        lock(&self.hosts).clear();
    }

    fn host(&self, url: &Url, permits: usize) -> Arc<Host> {
        // "scheme://host:port": a slice of the URL, so a lookup allocates nothing.
        let key = &url[..url::Position::BeforePath];
        let mut hosts = lock(&self.hosts);
        if let Some(h) = hosts.get(key) {
            return h.clone();
        }
        let host = Arc::new(Host {
            permits: Arc::new(Semaphore::new(permits.clamp(1, MAX_PER_HOST))),
            not_before: Mutex::new(None),
        });
        hosts.insert(key.to_owned(), host.clone());
        host
    }
}

/// A slot of one host's per-host limit, held until dropped (see
/// [`Prober::host_slot`]).
pub struct HostSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    host: Arc<Host>,
    max_backoff: Duration,
}

impl HostSlot {
    /// The host answered 429: hold back every request to it (probes too)
    /// for `wait`, capped like a probe's backoff.
    pub fn back_off(&self, wait: Duration) {
        self.host.back_off(wait, self.max_backoff);
    }
}

/// How many probes of a watch are started at once when `concurrency` may be
/// on the wire: more than `concurrency`, so that probes waiting for a busy
/// host do not keep other hosts' probes from starting, and bounded, so a
/// million sources cost a bounded window, not a million futures.
pub fn window(concurrency: usize) -> usize {
    concurrency.saturating_mul(4).clamp(256, 16_384)
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};
    use url::Url;

    use super::{ProbeHeaders, Verdict, same_origin, validators_of, window};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn verdicts_have_their_names() {
        let names: Vec<&str> = Verdict::ALL.iter().map(|v| v.as_str()).collect();
        assert_eq!(names, ["present", "gone", "inconclusive"]);
    }

    /// The length of a ranged GET is the total its `Content-Range` names,
    /// not the one byte it carries; of a whole answer, its `Content-Length`;
    /// of anything but a 2xx, unknown.
    #[test]
    fn validators_take_the_length_from_the_range_total_or_the_whole_answer() {
        let ranged = headers(&[
            ("content-range", "bytes 0-0/12345"),
            ("content-length", "1"),
            ("etag", " \"abc\" "),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]);
        let v = validators_of(206, &ranged);
        assert_eq!(v.length, Some(12345));
        assert_eq!(v.etag.as_deref(), Some("\"abc\""), "trimmed");
        assert_eq!(
            v.last_modified.as_deref(),
            Some("Tue, 01 Dec 2026 10:00:00 GMT")
        );
        assert_eq!(validators_of(200, &ranged).length, Some(1));
        assert_eq!(
            validators_of(206, &headers(&[("content-range", "bytes 0-0/*")])).length,
            None
        );
        let whole = headers(&[("content-length", "777")]);
        assert_eq!(validators_of(200, &whole).length, Some(777));
        assert_eq!(validators_of(204, &whole).length, Some(777));
        assert_eq!(validators_of(404, &whole).length, None);
        assert_eq!(validators_of(404, &whole).etag, None);
        // An empty header is no validator.
        let empty = validators_of(200, &headers(&[("etag", "  "), ("last-modified", "")]));
        assert!(empty.is_empty(), "{empty:?}");
    }

    #[test]
    fn the_origin_is_scheme_host_and_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        let a = u("https://img.example/a.png");
        assert!(same_origin(&a, &u("https://img.example/b/c.png?x=1")));
        assert!(same_origin(&a, &u("https://img.example:443/b.png")));
        assert!(!same_origin(&a, &u("http://img.example/a.png")));
        assert!(!same_origin(&a, &u("https://cdn.example/a.png")));
        assert!(!same_origin(&a, &u("https://img.example:8443/a.png")));
    }

    /// Probe headers go to the first host only, and `Debug` shows their
    /// names, never their values.
    #[test]
    fn probe_headers_stay_on_the_first_host_and_out_of_debug() {
        let mut map = HeaderMap::new();
        map.insert(
            "authorization",
            HeaderValue::from_static("Bearer probe-headers-unit-test-secret"),
        );
        let h = ProbeHeaders::new(map);
        assert!(!h.is_empty());
        assert!(ProbeHeaders::default().is_empty());
        assert_eq!(h.map().len(), 1);
        let first = Url::parse("https://img.example/a.png").unwrap();
        let same = Url::parse("https://img.example/moved.png").unwrap();
        let other = Url::parse("https://elsewhere.example/a.png").unwrap();
        assert_eq!(h.for_hop(&first, &same).len(), 1);
        assert!(h.for_hop(&first, &other).is_empty());
        let shown = format!("{h:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    /// More probes started than may be on the wire, within bounds.
    #[test]
    fn the_window_is_four_times_the_concurrency_within_bounds() {
        assert_eq!(window(1), 256);
        assert_eq!(window(100), 400);
        assert_eq!(window(1000), 4000);
        assert_eq!(window(10_000), 16_384);
        assert_eq!(window(usize::MAX), 16_384);
    }
}
