//! The HTTP client of the probes and of discovery: one request, one answer
//! (status and headers, and for discovery the body). Redirects, retries and
//! verdicts are the caller's business.
//!
//! It is hyper-util's pooled client over TCP or TLS (hyper-rustls with the
//! roots of [`crate::tls::Trust`]: Mozilla's, the system's and
//! `ca_file:`), HTTP/2 by ALPN, with an idle timeout and a cap on idle
//! connections per origin. It replaced a hand-written HTTP/1.1 pool that
//! was faster on loopback only: against an origin that answers after
//! 20 ms, as real ones do, the two are level (see PERFORMANCE.md, "The
//! probe client"). When the environment names a proxy (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`), probes go through reqwest instead, which
//! honours it (and `NO_PROXY`).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_LENGTH, HeaderMap, HeaderValue, RANGE, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use url::{Position, Url};

use crate::tls::{ClientError, Trust};

/// How much of a `GET` body is read (so the connection can be reused)
/// before the connection is dropped instead.
const MAX_DRAIN: usize = 64 * 1024;

const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq)]
pub enum SendError {
    Timeout,
    /// DNS, TCP or TLS: no connection.
    Connect(String),
    /// Connected, but no (whole) answer came.
    Request(String),
}

impl SendError {
    /// A short cause for the report's `error` field.
    pub fn describe(&self, timeout: Duration) -> String {
        match self {
            SendError::Timeout => format!("timeout after {}", humantime::format_duration(timeout)),
            SendError::Connect(why) => format!("connection failed: {why}"),
            SendError::Request(why) => format!("request failed: {why}"),
        }
    }
}

/// Status and headers of an answer; a `GET` body has been read and dropped.
pub type Answered = (StatusCode, HeaderMap);

/// An answer to [`Transport::get`]: its body is read only when the status
/// is a success (2xx), and is empty otherwise.
pub struct Document {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why [`Transport::get`] gave no document.
#[derive(Debug, Clone, PartialEq)]
pub enum GetError {
    Send(SendError),
    /// The body is longer than the limit (by its `Content-Length`, or as
    /// it came in).
    TooLarge,
}

impl From<SendError> for GetError {
    fn from(e: SendError) -> GetError {
        GetError::Send(e)
    }
}

/// Sends probe requests.
pub enum Transport {
    Direct(Direct),
    Proxied(reqwest::Client),
}

impl Transport {
    /// The direct client, or reqwest when a proxy is configured.
    pub fn from_env() -> Result<Transport, ClientError> {
        Self::from_env_trusting(&Trust::system())
    }

    /// As [`Transport::from_env`], trusting `trust`'s roots.
    pub fn from_env_trusting(trust: &Trust) -> Result<Transport, ClientError> {
        if PROXY_VARS
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|p| !p.is_empty()))
        {
            let client = trust
                .reqwest_builder()?
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(crate::USER_AGENT)
                .pool_max_idle_per_host(256)
                .build()?;
            return Ok(Transport::Proxied(client));
        }
        Ok(Transport::Direct(Direct::trusting(trust)?))
    }

    /// Sends one request and returns its answer. A `GET` carries
    /// `Range: bytes=0-0`.
    pub async fn send(
        &self,
        method: &Method,
        url: &Url,
        timeout: Duration,
    ) -> Result<Answered, SendError> {
        self.send_with(method, url, timeout, &HeaderMap::new())
            .await
    }

    /// As [`Transport::send`], with `headers` (a watch's probe headers) on
    /// the request; they replace a default of the same name.
    pub async fn send_with(
        &self,
        method: &Method,
        url: &Url,
        timeout: Duration,
        headers: &HeaderMap,
    ) -> Result<Answered, SendError> {
        match self {
            Transport::Direct(d) => tokio::time::timeout(timeout, d.send(method, url, headers))
                .await
                .unwrap_or(Err(SendError::Timeout)),
            Transport::Proxied(c) => proxied(c, method, url, timeout, headers).await,
        }
    }

    /// `GET url` with `headers`, its body read whole (up to `limit` bytes)
    /// when the answer is a success. `timeout` covers the body too.
    pub async fn get(
        &self,
        url: &Url,
        timeout: Duration,
        headers: &HeaderMap,
        limit: u64,
    ) -> Result<Document, GetError> {
        match self {
            Transport::Direct(d) => tokio::time::timeout(timeout, d.get(url, headers, limit))
                .await
                .unwrap_or(Err(GetError::Send(SendError::Timeout))),
            Transport::Proxied(c) => proxied_get(c, url, timeout, headers, limit).await,
        }
    }
}

/// How long an idle connection is kept for reuse. Origins close idle
/// keep-alive connections after 5 to 75 seconds; a pass keeps its
/// connections busy, and one every few minutes opens new ones anyway.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most idle connections kept per origin (the prober's per-host limit
/// keeps fewer busy; more would be a leak).
const POOL_MAX_IDLE_PER_HOST: usize = 256;

type Client =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// hyper-util's pooled client over hyper-rustls: HTTP/1.1, or HTTP/2 when
/// the origin offers it by ALPN; idle connections kept per origin, at most
/// `POOL_MAX_IDLE_PER_HOST` of them, for `POOL_IDLE_TIMEOUT`.
pub struct Direct {
    /// Boxed: the client is large, and [`Transport`] holds one or the other.
    client: Box<Client>,
}

impl Direct {
    /// `extra_roots` are trusted beside the Mozilla roots and the system
    /// store (tests use a self-signed certificate).
    pub fn new(extra_roots: Vec<CertificateDer<'static>>) -> Result<Direct, ClientError> {
        Self::trusting(&Trust::with_certs(extra_roots))
    }

    /// A client trusting `trust`'s roots.
    pub fn trusting(trust: &Trust) -> Result<Direct, ClientError> {
        // No ALPN in the config: hyper-rustls offers h2 and http/1.1 itself
        // (and refuses a config that already names protocols).
        let config = trust.client_config(&[])?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(https);
        Ok(Direct {
            client: Box::new(client),
        })
    }

    /// As `send`, the body of a success read whole.
    async fn get(&self, url: &Url, headers: &HeaderMap, limit: u64) -> Result<Document, GetError> {
        match self.get_once(url, headers, limit).await {
            Err(GetError::Send(SendError::Request(_))) => self.get_once(url, headers, limit).await,
            done => done,
        }
    }

    async fn get_once(
        &self,
        url: &Url,
        headers: &HeaderMap,
        limit: u64,
    ) -> Result<Document, GetError> {
        let mut req = request(&Method::GET, url, headers)?;
        // What reqwest sent when it fetched discovery's documents.
        req.headers_mut()
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        let (parts, mut body) = self.client.request(req).await.map_err(failed)?.into_parts();
        if !parts.status.is_success() {
            drain(&mut body).await;
            return Ok(Document {
                status: parts.status,
                headers: parts.headers,
                body: Vec::new(),
            });
        }
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(GetError::TooLarge);
        }
        let mut out = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| SendError::Request(innermost(&e)))?;
            if let Some(data) = frame.data_ref() {
                if (out.len() + data.len()) as u64 > limit {
                    return Err(GetError::TooLarge);
                }
                out.extend_from_slice(data);
            }
        }
        Ok(Document {
            status: parts.status,
            headers: parts.headers,
            body: out,
        })
    }

    async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Answered, SendError> {
        // A pooled connection the origin has closed meanwhile fails without
        // an answer: try once more (on another connection: the pool drops
        // a failed one).
        match self.exchange(method, url, headers).await {
            Err(SendError::Request(_)) => self.exchange(method, url, headers).await,
            done => done,
        }
    }

    /// One request; its connection goes back to the pool when the answer
    /// was read whole.
    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Answered, SendError> {
        let mut req = request(method, url, headers)?;
        if method == Method::GET && !headers.contains_key(RANGE) {
            req.headers_mut()
                .insert(RANGE, HeaderValue::from_static("bytes=0-0"));
        }
        let resp = self.client.request(req).await.map_err(failed)?;
        let (parts, mut body) = resp.into_parts();
        drain(&mut body).await;
        Ok((parts.status, parts.headers))
    }
}

/// A request for `url` with our User-Agent and `headers` (which replace a
/// default of the same name).
fn request(
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
) -> Result<Request<Empty<Bytes>>, SendError> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(&url[..Position::AfterQuery])
        .header(USER_AGENT, HeaderValue::from_static(crate::USER_AGENT))
        .body(Empty::new())
        .map_err(|e| SendError::Request(e.to_string()))?;
    for (name, value) in headers {
        req.headers_mut().insert(name, value.clone());
    }
    Ok(req)
}

/// Why hyper-util's client got no answer.
fn failed(e: hyper_util::client::legacy::Error) -> SendError {
    if e.is_connect() {
        SendError::Connect(connect_cause(&e))
    } else {
        SendError::Request(innermost(&e))
    }
}

/// Reads a body that is not wanted, so that its connection can be reused.
/// Dropping a body before its end closes the connection instead of pooling
/// it: past MAX_DRAIN, that is cheaper than reading on.
async fn drain(body: &mut hyper::body::Incoming) {
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, Bytes::len);
        if read > MAX_DRAIN {
            break;
        }
    }
}

/// Why a connection failed, its TLS cause named as such.
fn connect_cause(e: &(dyn std::error::Error + 'static)) -> String {
    match tls_cause(e) {
        Some(tls) => format!("tls: {tls}"),
        None => innermost(e),
    }
}

/// The rustls error in a cause chain. An `io::Error`'s `source` skips the
/// error it wraps, so wrapped errors are opened by hand.
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return tls_cause(inner);
    }
    tls_cause(e.source()?)
}

async fn proxied(
    client: &reqwest::Client,
    method: &Method,
    url: &Url,
    timeout: Duration,
    headers: &HeaderMap,
) -> Result<Answered, SendError> {
    let mut req = client
        .request(method.clone(), url.clone())
        .timeout(timeout)
        .headers(headers.clone());
    if method == Method::GET {
        req = req.header(RANGE, "bytes=0-0");
    }
    let mut resp = req.send().await.map_err(proxied_failed)?;
    let status = resp.status();
    let headers = std::mem::take(resp.headers_mut());
    if method == Method::GET {
        let mut read = 0;
        while let Ok(Some(chunk)) = resp.chunk().await {
            read += chunk.len();
            if read > MAX_DRAIN {
                break;
            }
        }
    }
    Ok((status, headers))
}

/// Why reqwest got no answer.
fn proxied_failed(e: reqwest::Error) -> SendError {
    if e.is_timeout() {
        SendError::Timeout
    } else if e.is_connect() {
        SendError::Connect(innermost(&e))
    } else {
        SendError::Request(innermost(&e))
    }
}

/// [`Transport::get`] through a proxy.
async fn proxied_get(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
    headers: &HeaderMap,
    limit: u64,
) -> Result<Document, GetError> {
    let classify = |e| GetError::Send(proxied_failed(e));
    let mut resp = client
        .get(url.clone())
        .timeout(timeout)
        .headers(headers.clone())
        .send()
        .await
        .map_err(classify)?;
    let status = resp.status();
    let headers = std::mem::take(resp.headers_mut());
    let mut body = Vec::new();
    if status.is_success() {
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(GetError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
    }
    Ok(Document {
        status,
        headers,
        body,
    })
}

/// The innermost cause of an error: the one that says what happened.
pub fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_tls_cause_is_found_under_wrapped_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        assert_eq!(
            connect_cause(&outer),
            "tls: invalid peer certificate: UnknownIssuer"
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(connect_cause(&std::io::Error::other(refused)), "refused");
    }

    #[test]
    fn innermost_is_the_last_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::fmt::Error);
        assert_eq!(
            innermost(&Outer(std::fmt::Error)),
            std::fmt::Error.to_string()
        );
    }

    /// Sequential requests to one origin ride one pooled connection, and a
    /// port with nothing listening is a connection failure, not a timeout.
    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            Empty::<Bytes>::new(),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        let direct = Transport::Direct(Direct::new(Vec::new()).unwrap());
        let timeout = Duration::from_secs(5);
        for i in 0..5 {
            let url = Url::parse(&format!("http://127.0.0.1:{port}/{i}.png")).unwrap();
            let (status, _) = direct.send(&Method::HEAD, &url, timeout).await.unwrap();
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = Url::parse(&format!("http://{}/x.png", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        let err = direct.send(&Method::GET, &dead, timeout).await.unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    }

    /// What the origin received: method, user agent, range, a custom header.
    type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

    async fn recording_origin() -> (u16, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let get = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-")
                                    .to_owned()
                            };
                            log.lock().unwrap().push((
                                req.method().to_string(),
                                get("user-agent"),
                                get("range"),
                                get("x-probe"),
                            ));
                            async {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<
                                    Bytes,
                                >::new(
                                )))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn probe_headers_reach_the_origin_and_replace_a_default() {
        let (port, seen) = recording_origin().await;
        let client = Transport::Direct(Direct::new(Vec::new()).unwrap());
        let url = Url::parse(&format!("http://127.0.0.1:{port}/a.png")).unwrap();
        let timeout = Duration::from_secs(5);
        client.send(&Method::HEAD, &url, timeout).await.unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-probe", HeaderValue::from_static("yes"));
        headers.insert(USER_AGENT, HeaderValue::from_static("mine/1"));
        client
            .send_with(&Method::GET, &url, timeout, &headers)
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        let ua = crate::USER_AGENT;
        assert_eq!(
            seen,
            vec![
                ("HEAD".into(), ua.into(), "-".into(), "-".into()),
                (
                    "GET".into(),
                    "mine/1".into(),
                    "bytes=0-0".into(),
                    "yes".into()
                ),
            ]
        );
    }
    /// An origin for `Transport::get`: `/page` (1,000 bytes, with a
    /// length), `/stream` (2,000 bytes in two chunks, no length), `/gone`
    /// (404 with a body) and `/slow` (headers, then the body 2 s later).
    /// It counts connections and keeps each request's Accept and
    /// User-Agent.
    async fn document_origin() -> (
        u16,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<Mutex<Vec<String>>>,
    ) {
        use http_body_util::{BodyExt, Full, StreamBody};
        use hyper::body::Frame;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (count, log) = (Arc::clone(&accepted), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let header = |n| {
                                req.headers()
                                    .get(n)
                                    .map_or("-", |v| v.to_str().unwrap())
                                    .to_owned()
                            };
                            log.lock().unwrap().push(format!(
                                "{} {}",
                                header(ACCEPT),
                                header(USER_AGENT)
                            ));
                            let chunks = |n: usize, wait: Duration| {
                                let stream = futures::stream::unfold(0, move |k| async move {
                                    tokio::time::sleep(wait).await;
                                    (k < n).then(|| {
                                        (
                                            Ok::<_, std::convert::Infallible>(Frame::data(
                                                Bytes::from(vec![b'x'; 1000]),
                                            )),
                                            k + 1,
                                        )
                                    })
                                });
                                StreamBody::new(stream).boxed()
                            };
                            let (status, body) = match req.uri().path() {
                                "/page" => (200, Full::new(Bytes::from(vec![b'x'; 1000])).boxed()),
                                "/stream" => (200, chunks(2, Duration::ZERO)),
                                "/slow" => (200, chunks(1, Duration::from_secs(2))),
                                _ => (404, Full::new(Bytes::from_static(b"nope")).boxed()),
                            };
                            let mut resp = hyper::Response::new(body);
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            async { Ok::<_, std::convert::Infallible>(resp) }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (port, accepted, seen)
    }

    /// Discovery's `GET`: a success's body whole, up to a limit counted by
    /// its length or as it comes; another status's body left out; one
    /// pooled connection for all; the timeout covering the body.
    #[tokio::test]
    async fn get_reads_a_success_whole_up_to_its_limit() {
        let (port, accepted, seen) = document_origin().await;
        let direct = Transport::Direct(Direct::new(Vec::new()).unwrap());
        let url = |p: &str| Url::parse(&format!("http://127.0.0.1:{port}{p}")).unwrap();
        let timeout = Duration::from_secs(5);
        let none = HeaderMap::new();

        let page = direct
            .get(&url("/page"), timeout, &none, 1000)
            .await
            .unwrap();
        assert_eq!((page.status, page.body.len()), (StatusCode::OK, 1000));
        let stream = direct
            .get(&url("/stream"), timeout, &none, 2000)
            .await
            .unwrap();
        assert_eq!(stream.body, vec![b'x'; 2000]);
        let gone = direct
            .get(&url("/gone"), timeout, &none, 1000)
            .await
            .unwrap();
        assert_eq!((gone.status, gone.body.len()), (StatusCode::NOT_FOUND, 0));
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one pooled connection"
        );

        let over = direct.get(&url("/page"), timeout, &none, 999).await;
        assert_eq!(over.err(), Some(GetError::TooLarge), "by its length");
        let over = direct.get(&url("/stream"), timeout, &none, 1999).await;
        assert_eq!(over.err(), Some(GetError::TooLarge), "as it comes");

        let slow = direct
            .get(&url("/slow"), Duration::from_millis(300), &none, 1000)
            .await;
        assert_eq!(slow.err(), Some(GetError::Send(SendError::Timeout)));

        let mut accept = HeaderMap::new();
        accept.insert(ACCEPT, HeaderValue::from_static("text/html"));
        direct
            .get(&url("/page"), timeout, &accept, 1000)
            .await
            .unwrap();
        let seen = seen.lock().unwrap().clone();
        let ua = crate::USER_AGENT;
        assert_eq!(seen[0], format!("*/* {ua}"));
        assert_eq!(
            seen.last().unwrap(),
            &format!("text/html {ua}"),
            "a watch's header replaces ours"
        );
    }
}
