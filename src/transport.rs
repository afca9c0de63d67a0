//! The HTTP client of the probes: one request, one answer (status and
//! headers). Redirects, retries and verdicts are the prober's business.
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
use hyper::header::{HeaderMap, HeaderValue, RANGE, USER_AGENT};
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
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url[..Position::AfterQuery])
            .header(USER_AGENT, HeaderValue::from_static(crate::USER_AGENT));
        if method == Method::GET {
            req = req.header(RANGE, HeaderValue::from_static("bytes=0-0"));
        }
        let mut req = req
            .body(Empty::new())
            .map_err(|e| SendError::Request(e.to_string()))?;
        for (name, value) in headers {
            req.headers_mut().insert(name, value.clone());
        }
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                SendError::Connect(connect_cause(&e))
            } else {
                SendError::Request(innermost(&e))
            }
        })?;
        let (parts, mut body) = resp.into_parts();
        // Dropping a body before its end closes the connection instead of
        // pooling it: past MAX_DRAIN, that is cheaper than reading on.
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > MAX_DRAIN {
                break;
            }
        }
        Ok((parts.status, parts.headers))
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
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            SendError::Timeout
        } else if e.is_connect() {
            SendError::Connect(innermost(&e))
        } else {
            SendError::Request(innermost(&e))
        }
    };
    let mut resp = req.send().await.map_err(classify)?;
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
}
