//! A loopback origin server whose answer is configured per path (present,
//! any status, HEAD and GET disagreeing, redirects, slow, 429), counting and
//! optionally logging what it was asked, for probe tests and the benchmark.
//!
//! It is built to stay out of the way of a benchmark at tens of thousands of
//! requests a second: the hot path takes one read lock and a few atomics,
//! the request log is optional, and [`FakeOrigin::spawn_on_own_thread`]
//! keeps the server off the client's runtime.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;

use super::ServerHandle;

/// How the origin answers one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// A 1-byte resource: `HEAD` 200 with `Content-Length: 1`; `GET` 200 with
    /// the byte, or 206 with `Content-Range` for `Range: bytes=0-0`.
    Present,
    /// Every method gets this status and an empty body.
    Status(u16),
    /// `HEAD` and `GET` disagree, like edges that answer `HEAD` wrongly
    /// (`HEAD` 404 while `GET` 200; `HEAD` 405 while `GET` 206). A 2xx `GET`
    /// carries the byte, as [`Behavior::Present`] does.
    HeadGet { head: u16, get: u16 },
    /// `status` with `Location: to` and an empty body.
    Redirect { status: u16, to: String },
    /// Waits this long, then answers as [`Behavior::Present`] (for timeouts
    /// and concurrency limits).
    Slow(Duration),
    /// 429 with `Retry-After: retry_after_secs`.
    TooManyRequests { retry_after_secs: u64 },
    /// Real bytes with validators, as an image server sends them: `HEAD`
    /// gives `Content-Length`, `ETag` and `Last-Modified`; `GET` the bytes
    /// (206 with `Content-Range` for `Range: bytes=0-0`). Replacing an
    /// image is setting new content on its path.
    Content {
        body: Bytes,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    /// As `Content`, but each request gets the next of `etags` in turn: a
    /// load balancer whose backends disagree about the same bytes.
    Flapping { body: Bytes, etags: Vec<String> },
}

impl Behavior {
    /// An image of these bytes with a strong ETag of its own.
    pub fn content(body: &[u8], etag: &str) -> Behavior {
        Behavior::Content {
            body: Bytes::copy_from_slice(body),
            etag: Some(format!("\"{etag}\"")),
            last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".to_owned()),
        }
    }
}

/// The one byte every present resource holds; static, so no allocation.
const BYTE: &[u8] = b"x";

struct Routes {
    by_path: HashMap<String, Behavior>,
    default: Behavior,
}

impl Routes {
    /// Path-and-query first (remote sources keep their query), then the path.
    fn behavior(&self, path_and_query: &str, path: &str) -> &Behavior {
        self.by_path
            .get(path_and_query)
            .or_else(|| self.by_path.get(path))
            .unwrap_or(&self.default)
    }
}

struct Shared {
    routes: RwLock<Routes>,
    /// `None` when started quiet: the log is the one per-request allocation.
    log: Option<Mutex<Vec<(String, String)>>>,
    total: AtomicUsize,
    /// Requests answered by a `Flapping` behavior, to pick its next ETag.
    flaps: AtomicUsize,
    heads: AtomicUsize,
    gets: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A running fake origin on `127.0.0.1`. Stops when dropped.
pub struct FakeOrigin {
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl fmt::Debug for FakeOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeOrigin")
            .field("addr", &self.server.addr())
            .field("total", &self.total())
            .finish_non_exhaustive()
    }
}

impl FakeOrigin {
    /// Starts an origin that logs every request (see [`FakeOrigin::requests`]).
    /// `routes` map a path, or a path with its query string, to a behaviour;
    /// every other path gets `default`.
    pub async fn start(
        routes: impl IntoIterator<Item = (String, Behavior)>,
        default: Behavior,
    ) -> std::io::Result<FakeOrigin> {
        Self::start_with(routes, default, true).await
    }

    /// As [`FakeOrigin::start`], without the request log: only the counters
    /// ([`total`](FakeOrigin::total), [`total_method`](FakeOrigin::total_method),
    /// [`max_in_flight`](FakeOrigin::max_in_flight)) are kept.
    pub async fn start_quiet(
        routes: impl IntoIterator<Item = (String, Behavior)>,
        default: Behavior,
    ) -> std::io::Result<FakeOrigin> {
        Self::start_with(routes, default, false).await
    }

    /// Starts on the current tokio runtime; `record` keeps the request log.
    pub async fn start_with(
        routes: impl IntoIterator<Item = (String, Behavior)>,
        default: Behavior,
        record: bool,
    ) -> std::io::Result<FakeOrigin> {
        let shared = Shared::new(routes, default, record);
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let server = ServerHandle::spawn(listener, router(Arc::clone(&shared)))?;
        Ok(FakeOrigin { shared, server })
    }

    /// Starts a quiet origin (no request log) on a dedicated OS thread with
    /// its own current-thread runtime, so a benchmark's client does not share
    /// workers with it. Callable outside any runtime.
    pub fn spawn_on_own_thread(
        routes: impl IntoIterator<Item = (String, Behavior)>,
        default: Behavior,
    ) -> std::io::Result<FakeOrigin> {
        let shared = Shared::new(routes, default, false);
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let server = ServerHandle::spawn_on_own_thread(
            listener,
            router(Arc::clone(&shared)),
            "fake-origin",
        )?;
        Ok(FakeOrigin { shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT`, with no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `base_url() + path`, for building probe URLs.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Sets the behaviour of `path` (or path with query) from now on.
    pub fn set(&self, path: &str, behavior: Behavior) {
        write(&self.shared.routes)
            .by_path
            .insert(path.to_owned(), behavior);
    }

    /// Sets the behaviour of every path without its own.
    pub fn set_default(&self, behavior: Behavior) {
        write(&self.shared.routes).default = behavior;
    }

    /// `(method, path-and-query)` of every request, in arrival order; empty
    /// for a quiet origin.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared
            .log
            .as_ref()
            .map(|log| lock(log).clone())
            .unwrap_or_default()
    }

    /// Requests with this method and exactly this path-and-query (so
    /// `/a.png` does not count `/a.png?v=1`); always 0 for a quiet origin.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.shared.log.as_ref().map_or(0, |log| {
            lock(log)
                .iter()
                .filter(|(m, p)| m.eq_ignore_ascii_case(method) && p == path)
                .count()
        })
    }

    /// Requests received, on any path.
    pub fn total(&self) -> usize {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Requests received with this method, on any path (kept for `HEAD` and
    /// `GET` even when quiet; 0 for other methods).
    pub fn total_method(&self, method: &str) -> usize {
        if method.eq_ignore_ascii_case("HEAD") {
            self.shared.heads.load(Ordering::Relaxed)
        } else if method.eq_ignore_ascii_case("GET") {
            self.shared.gets.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// The most requests that were being served at the same moment, for
    /// asserting a concurrency bound (pair with [`Behavior::Slow`]).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::Relaxed)
    }

    /// Forgets the log and zeroes the counters (routes stay).
    pub fn clear(&self) {
        if let Some(log) = &self.shared.log {
            lock(log).clear();
        }
        self.shared.total.store(0, Ordering::Relaxed);
        self.shared.heads.store(0, Ordering::Relaxed);
        self.shared.gets.store(0, Ordering::Relaxed);
        // Requests still in flight keep counting; the peak restarts from them.
        let now = self.shared.in_flight.load(Ordering::Relaxed);
        self.shared.max_in_flight.store(now, Ordering::Relaxed);
    }

    /// Stops accepting and waits (a few seconds at most) for open
    /// connections to finish.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

impl Shared {
    fn new(
        routes: impl IntoIterator<Item = (String, Behavior)>,
        default: Behavior,
        record: bool,
    ) -> Arc<Self> {
        Arc::new(Shared {
            routes: RwLock::new(Routes {
                by_path: routes.into_iter().collect(),
                default,
            }),
            log: record.then(|| Mutex::new(Vec::new())),
            total: AtomicUsize::new(0),
            flaps: AtomicUsize::new(0),
            heads: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        })
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// A poisoned lock only means a test panicked mid-update; keep serving.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Counts a request as in flight until dropped, also when the client hangs
/// up mid-[`Behavior::Slow`] and the handler future is dropped.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let _in_flight = InFlight::enter(&shared);
    shared.total.fetch_add(1, Ordering::Relaxed);
    let method = request.method();
    let is_head = method == Method::HEAD;
    if is_head {
        shared.heads.fetch_add(1, Ordering::Relaxed);
    } else if method == Method::GET {
        shared.gets.fetch_add(1, Ordering::Relaxed);
    }

    let uri = request.uri();
    let path = uri.path();
    let path_and_query = uri.path_and_query().map_or(path, |pq| pq.as_str());
    if let Some(log) = &shared.log {
        lock(log).push((method.as_str().to_owned(), path_and_query.to_owned()));
    }
    let first_byte_only = request
        .headers()
        .get(header::RANGE)
        .is_some_and(|range| range.as_bytes().trim_ascii() == b"bytes=0-0");

    // Cloned out of the lock so a Slow answer never holds it while sleeping;
    // only Redirect's target allocates.
    let behavior = shared
        .routes
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .behavior(path_and_query, path)
        .clone();

    match behavior {
        Behavior::Present => present(is_head, first_byte_only),
        Behavior::Status(status) => empty(status),
        Behavior::HeadGet { head, get } => {
            if is_head {
                empty(head)
            } else {
                with_byte(get)
            }
        }
        Behavior::Redirect { status, to } => {
            let mut response = empty(status);
            match HeaderValue::try_from(to) {
                Ok(location) => {
                    response.headers_mut().insert(header::LOCATION, location);
                }
                Err(_) => *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
            }
            response
        }
        Behavior::Slow(delay) => {
            tokio::time::sleep(delay).await;
            present(is_head, first_byte_only)
        }
        Behavior::TooManyRequests { retry_after_secs } => {
            let mut response = empty(429);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Behavior::Content {
            body,
            etag,
            last_modified,
        } => content(
            is_head,
            first_byte_only,
            body,
            etag.as_deref(),
            last_modified.as_deref(),
        ),
        Behavior::Flapping { body, etags } => {
            let n = shared.flaps.fetch_add(1, Ordering::Relaxed);
            let etag = etags.get(n % etags.len().max(1)).map(String::as_str);
            content(is_head, first_byte_only, body, etag, None)
        }
    }
}

/// An answer with real bytes and validators.
fn content(
    is_head: bool,
    first_byte_only: bool,
    body: Bytes,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Response {
    let len = body.len();
    let mut response = if is_head {
        let mut r = empty(200);
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        r
    } else if first_byte_only && len > 0 {
        let mut r = Response::new(Body::from(body.slice(0..1)));
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes 0-0/{len}")) {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        r
    } else {
        Response::new(Body::from(body))
    };
    let headers = response.headers_mut();
    for (name, value) in [(header::ETAG, etag), (header::LAST_MODIFIED, last_modified)] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    response
}

fn status_code(status: u16) -> StatusCode {
    // A nonsense status in a test's configuration shows up as a 500 the
    // test will notice, not as a panic inside the server task.
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn empty(status: u16) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status_code(status);
    response
}

fn present(is_head: bool, first_byte_only: bool) -> Response {
    if is_head {
        // Advertise the length a GET would have, as a real origin does;
        // hyper sends no body for HEAD and keeps an explicit header.
        let mut response = empty(200);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1"));
        response
    } else {
        with_byte(if first_byte_only { 206 } else { 200 })
    }
}

/// A GET answer: a 2xx carries the byte (206 with its `Content-Range`),
/// anything else is empty.
fn with_byte(status: u16) -> Response {
    let code = status_code(status);
    if !code.is_success() {
        return empty(status);
    }
    let mut response = Response::new(Body::from(Bytes::from_static(BYTE)));
    *response.status_mut() = code;
    if code == StatusCode::PARTIAL_CONTENT {
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-0/1"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Answer {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Vec<u8>,
    }

    /// A client that reports redirects instead of following them.
    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    async fn ask(origin: &FakeOrigin, method: Method, path: &str, range: bool) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method");
        let mut request = client().request(method, origin.url(path));
        if range {
            request = request.header("range", "bytes=0-0");
        }
        let response = request.send().await.expect("send");
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("body").to_vec(),
        }
    }

    #[tokio::test]
    async fn present_answers_head_get_and_range() {
        let origin = FakeOrigin::start([], Behavior::Present)
            .await
            .expect("start");

        let head = ask(&origin, Method::HEAD, "/a.png", false).await;
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["content-length"], "1");
        assert!(head.body.is_empty());

        let ranged = ask(&origin, Method::GET, "/a.png", true).await;
        assert_eq!(ranged.status, 206);
        assert_eq!(ranged.headers["content-range"], "bytes 0-0/1");
        assert_eq!(ranged.body, b"x");

        let whole = ask(&origin, Method::GET, "/a.png", false).await;
        assert_eq!(whole.status, 200);
        assert_eq!(whole.body, b"x");
        assert!(whole.headers.get("content-range").is_none());
    }

    #[tokio::test]
    async fn routes_match_path_and_query_first_then_path() {
        let origin = FakeOrigin::start(
            [
                ("/gone.png".to_owned(), Behavior::Status(404)),
                ("/photo.jpg?v=2".to_owned(), Behavior::Status(410)),
                ("/photo.jpg".to_owned(), Behavior::Present),
            ],
            Behavior::Status(500),
        )
        .await
        .expect("start");
        assert_eq!(
            ask(&origin, Method::HEAD, "/gone.png", false).await.status,
            404
        );
        assert_eq!(
            ask(&origin, Method::GET, "/gone.png", true).await.status,
            404
        );
        assert_eq!(
            ask(&origin, Method::HEAD, "/gone.png?x=1", false)
                .await
                .status,
            404
        );
        assert_eq!(
            ask(&origin, Method::HEAD, "/photo.jpg?v=2", false)
                .await
                .status,
            410
        );
        assert_eq!(
            ask(&origin, Method::HEAD, "/photo.jpg?v=3", false)
                .await
                .status,
            200
        );
        assert_eq!(
            ask(&origin, Method::HEAD, "/other", false).await.status,
            500
        );

        origin.set("/gone.png", Behavior::Present);
        origin.set_default(Behavior::Status(403));
        assert_eq!(
            ask(&origin, Method::HEAD, "/gone.png", false).await.status,
            200
        );
        assert_eq!(
            ask(&origin, Method::HEAD, "/other", false).await.status,
            403
        );
    }

    #[tokio::test]
    async fn head_and_get_can_disagree() {
        let origin = FakeOrigin::start(
            [
                (
                    "/lies".to_owned(),
                    Behavior::HeadGet {
                        head: 404,
                        get: 200,
                    },
                ),
                (
                    "/no-head".to_owned(),
                    Behavior::HeadGet {
                        head: 405,
                        get: 206,
                    },
                ),
            ],
            Behavior::Present,
        )
        .await
        .expect("start");
        assert_eq!(ask(&origin, Method::HEAD, "/lies", false).await.status, 404);
        let get = ask(&origin, Method::GET, "/lies", true).await;
        assert_eq!((get.status, get.body.as_slice()), (200, b"x".as_slice()));
        assert_eq!(
            ask(&origin, Method::HEAD, "/no-head", false).await.status,
            405
        );
        let get = ask(&origin, Method::GET, "/no-head", true).await;
        assert_eq!(get.status, 206);
        assert_eq!(get.headers["content-range"], "bytes 0-0/1");
    }

    #[tokio::test]
    async fn redirects_and_rate_limits_carry_their_headers() {
        let origin = FakeOrigin::start(
            [
                (
                    "/old".to_owned(),
                    Behavior::Redirect {
                        status: 301,
                        to: "/new".to_owned(),
                    },
                ),
                (
                    "/busy".to_owned(),
                    Behavior::TooManyRequests {
                        retry_after_secs: 3,
                    },
                ),
            ],
            Behavior::Present,
        )
        .await
        .expect("start");
        let moved = ask(&origin, Method::HEAD, "/old", false).await;
        assert_eq!(
            (moved.status, &moved.headers["location"]),
            (301, &HeaderValue::from_static("/new"))
        );
        let busy = ask(&origin, Method::GET, "/busy", true).await;
        assert_eq!(
            (busy.status, &busy.headers["retry-after"]),
            (429, &HeaderValue::from_static("3"))
        );
    }

    #[tokio::test]
    async fn counts_requests_and_peak_concurrency() {
        let origin = FakeOrigin::start([], Behavior::Slow(Duration::from_millis(200)))
            .await
            .expect("start");
        let client = client();
        let started = std::time::Instant::now();
        let probes = (0..5).map(|i| {
            let request = client.head(origin.url(&format!("/{i}.png"))).send();
            async move { request.await.expect("send").status().as_u16() }
        });
        let statuses = futures::future::join_all(probes).await;
        assert_eq!(statuses, [200; 5]);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(origin.max_in_flight(), 5);

        ask(&origin, Method::GET, "/0.png", true).await;
        assert_eq!(origin.total(), 6);
        assert_eq!(origin.total_method("HEAD"), 5);
        assert_eq!(origin.total_method("get"), 1);
        assert_eq!(origin.count("HEAD", "/0.png"), 1);
        assert_eq!(origin.count("GET", "/0.png"), 1);
        assert_eq!(origin.count("GET", "/1.png"), 0);
        assert_eq!(origin.requests().len(), 6);
        assert_eq!(
            origin.requests()[5],
            ("GET".to_owned(), "/0.png".to_owned())
        );

        origin.clear();
        assert_eq!(
            (
                origin.total(),
                origin.max_in_flight(),
                origin.requests().len()
            ),
            (0, 0, 0)
        );
    }

    #[tokio::test]
    async fn quiet_origin_keeps_counters_but_no_log() {
        let origin = FakeOrigin::start_quiet([], Behavior::Status(404))
            .await
            .expect("start");
        assert_eq!(ask(&origin, Method::HEAD, "/a", false).await.status, 404);
        assert_eq!(ask(&origin, Method::GET, "/a", true).await.status, 404);
        assert_eq!(origin.total(), 2);
        assert_eq!(origin.total_method("HEAD"), 1);
        assert!(origin.requests().is_empty());
        assert_eq!(origin.count("HEAD", "/a"), 0);
    }

    #[test]
    fn own_thread_origin_serves_without_the_callers_runtime() {
        let origin = FakeOrigin::spawn_on_own_thread(
            [("/gone".to_owned(), Behavior::Status(410))],
            Behavior::Present,
        )
        .expect("spawn");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            assert_eq!(ask(&origin, Method::HEAD, "/gone", false).await.status, 410);
            assert_eq!(ask(&origin, Method::HEAD, "/here", false).await.status, 200);
            assert_eq!(origin.total(), 2);
            origin.shutdown().await;
        });
    }

    #[tokio::test]
    async fn dropping_the_origin_stops_it() {
        let origin = FakeOrigin::start([], Behavior::Present)
            .await
            .expect("start");
        let url = origin.url("/a");
        drop(origin);
        // The stop signal is asynchronous; give the server task a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(client().head(url).send().await.is_err());
    }
}
