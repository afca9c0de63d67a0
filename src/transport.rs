//! The HTTP client of the probes: one request, one answer (status and
//! headers). Redirects, retries and verdicts are the prober's business.
//!
//! It talks HTTP/1.1 on hyper's connection API directly, over TCP or TLS
//! (rustls with the roots of [`crate::tls::Trust`]: Mozilla's, the
//! system's and `ca_file:`), and keeps idle connections per origin
//! for reuse. That is about twice the requests a second of a general
//! client on the same cores (see PERFORMANCE.md). When the environment
//! names a proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`), probes go
//! through reqwest instead, which honours it (and `NO_PROXY`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderMap, HeaderValue, RANGE, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use url::{Position, Url};

use crate::tls::Trust;

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
    pub fn from_env() -> Result<Transport, String> {
        Self::from_env_trusting(&Trust::system())
    }

    /// As [`Transport::from_env`], trusting `trust`'s roots.
    pub fn from_env_trusting(trust: &Trust) -> Result<Transport, String> {
        if PROXY_VARS
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|p| !p.is_empty()))
        {
            let client = trust
                .reqwest_builder()
                .map_err(|e| e.to_string())?
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(user_agent())
                .pool_max_idle_per_host(256)
                .build()
                .map_err(|e| e.to_string())?;
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

fn user_agent() -> &'static str {
    concat!("origin-watch/", env!("CARGO_PKG_VERSION"))
}

type Sender = SendRequest<Empty<Bytes>>;
/// The idle connections to one origin.
type Pool = Mutex<Vec<Sender>>;

/// HTTP/1.1 on hyper's connection API, with idle connections kept per origin.
pub struct Direct {
    idle: Mutex<HashMap<String, Arc<Pool>>>,
    tls: tokio_rustls::TlsConnector,
}

impl Direct {
    /// `extra_roots` are trusted beside the Mozilla roots and the system
    /// store (tests use a self-signed certificate).
    pub fn new(extra_roots: Vec<CertificateDer<'static>>) -> Result<Direct, String> {
        Self::trusting(&Trust::with_certs(extra_roots))
    }

    /// A client trusting `trust`'s roots.
    pub fn trusting(trust: &Trust) -> Result<Direct, String> {
        let config = trust
            .client_config(&[b"http/1.1"])
            .map_err(|e| e.to_string())?;
        Ok(Direct {
            idle: Mutex::new(HashMap::new()),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Answered, SendError> {
        let pool = self.pool(&url[..Position::BeforePath]);
        // A pooled connection the origin has closed meanwhile fails without
        // an answer: try once more on a new one.
        if let Some(sender) = take_ready(&pool).await {
            match exchange(sender, method, url, headers, &pool).await {
                Err(SendError::Request(_)) => {}
                done => return done,
            }
        }
        let sender = self.connect(url).await?;
        exchange(sender, method, url, headers, &pool).await
    }

    fn pool(&self, origin: &str) -> Arc<Pool> {
        let mut idle = self.idle.lock().expect("pool lock");
        if let Some(p) = idle.get(origin) {
            return p.clone();
        }
        let p = Arc::default();
        idle.insert(origin.to_owned(), Arc::clone(&p));
        p
    }

    async fn connect(&self, url: &Url) -> Result<Sender, SendError> {
        let port = url
            .port_or_known_default()
            .ok_or_else(|| SendError::Connect("no port".into()))?;
        let tcp = match url.host() {
            Some(url::Host::Domain(d)) => TcpStream::connect((d, port)).await,
            Some(url::Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
            Some(url::Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
            None => return Err(SendError::Connect("no host".into())),
        }
        .map_err(|e| SendError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let handshake_err = |e: hyper::Error| SendError::Connect(format!("http handshake: {e}"));
        if url.scheme() == "https" {
            let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| SendError::Connect(format!("tls: {e}")))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| SendError::Connect(format!("tls: {e}")))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(handshake_err)?;
            tokio::spawn(conn);
            Ok(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(handshake_err)?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

/// An idle connection that can take a request now, if there is one.
async fn take_ready(pool: &Pool) -> Option<Sender> {
    loop {
        let mut sender = pool.lock().expect("pool lock").pop()?;
        if !sender.is_closed() && sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
}

/// One request on one connection; the connection goes back to the pool
/// when its answer was read whole.
async fn exchange(
    mut sender: Sender,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    pool: &Pool,
) -> Result<Answered, SendError> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(&url[Position::BeforePath..Position::AfterQuery])
        .header(HOST, &url[Position::BeforeHost..Position::AfterPort])
        .header(USER_AGENT, HeaderValue::from_static(user_agent()));
    if method == Method::GET {
        req = req.header(RANGE, HeaderValue::from_static("bytes=0-0"));
    }
    let mut req = req
        .body(Empty::new())
        .map_err(|e| SendError::Request(e.to_string()))?;
    for (name, value) in headers {
        req.headers_mut().insert(name, value.clone());
    }
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| SendError::Request(e.to_string()))?;
    let (parts, mut body) = resp.into_parts();
    let mut read = 0;
    let mut whole = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                read += f.data_ref().map_or(0, Bytes::len);
                if read > MAX_DRAIN {
                    whole = false;
                    break;
                }
            }
            Err(_) => {
                whole = false;
                break;
            }
        }
    }
    drop(body);
    if whole {
        pool.lock().expect("pool lock").push(sender);
    }
    Ok((parts.status, parts.headers))
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
