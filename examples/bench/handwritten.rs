//! The probes' former HTTP client, kept for the bench's `--clients` row
//! only: a hand-written HTTP/1.1 pool on hyper's connection API (idle
//! connections per origin, no idle timeout, no cap), as `src/transport.rs`
//! had it until the row showed hyper-util's pooled client level with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderMap, HeaderValue, RANGE, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use url::{Position, Url};

const MAX_DRAIN: usize = 64 * 1024;

#[derive(Debug)]
pub enum SendError {
    Connect(String),
    Request(String),
}

impl SendError {
    pub fn why(&self) -> &str {
        match self {
            SendError::Connect(w) | SendError::Request(w) => w,
        }
    }
}

pub type Answered = (StatusCode, HeaderMap);

type Sender = SendRequest<Empty<Bytes>>;
/// The idle connections to one origin.
type Pool = Mutex<Vec<Sender>>;

/// HTTP/1.1 on hyper's connection API, with idle connections kept per origin.
pub struct HandWritten {
    idle: Mutex<HashMap<String, Arc<Pool>>>,
    tls: tokio_rustls::TlsConnector,
}

impl HandWritten {
    pub fn new() -> Result<HandWritten, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HandWritten {
            idle: Mutex::new(HashMap::new()),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    pub async fn send(&self, method: &Method, url: &Url) -> Result<Answered, SendError> {
        let pool = self.pool(&url[..Position::BeforePath]);
        // A pooled connection the origin has closed meanwhile fails without
        // an answer: try once more on a new one.
        if let Some(sender) = take_ready(&pool).await {
            match exchange(sender, method, url, &pool).await {
                Err(SendError::Request(_)) => {}
                done => return done,
            }
        }
        let sender = self.connect(url).await?;
        exchange(sender, method, url, &pool).await
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
    pool: &Pool,
) -> Result<Answered, SendError> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(&url[Position::BeforePath..Position::AfterQuery])
        .header(HOST, &url[Position::BeforeHost..Position::AfterPort])
        .header(USER_AGENT, HeaderValue::from_static("origin-watch-bench"));
    if method == Method::GET {
        req = req.header(RANGE, HeaderValue::from_static("bytes=0-0"));
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| SendError::Request(e.to_string()))?;
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
