//! A loopback website for discovery tests and the benchmark: pages,
//! sitemaps (plain or gzip, under any name) and lists, each with its status,
//! redirects, slow or hanging answers; every other path answers 404. It
//! logs each request's path and `User-Agent`, and can generate pages from
//! their path instead of holding them (the benchmark's 10,000 pages).

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::ServerHandle;

/// How the site answers one path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body and `Content-Type`.
    Ok { content_type: String, body: Bytes },
    /// This status, empty body.
    Status(u16),
    /// 301 to this location.
    Redirect(String),
    /// Waits, then answers as the inner reply.
    Slow(Duration, Box<Reply>),
    /// Never answers (the client's timeout must end it).
    Hang,
}

impl Reply {
    pub fn html(body: impl Into<String>) -> Reply {
        Self::typed("text/html; charset=utf-8", body.into().into_bytes())
    }

    pub fn xml(body: impl Into<String>) -> Reply {
        Self::typed("application/xml", body.into().into_bytes())
    }

    pub fn text(body: impl Into<String>) -> Reply {
        Self::typed("text/plain", body.into().into_bytes())
    }

    pub fn json(body: impl Into<String>) -> Reply {
        Self::typed("application/json", body.into().into_bytes())
    }

    /// `body` gzip-compressed, served as `content_type` (no
    /// `Content-Encoding`: the bytes themselves are gzip, as a `.xml.gz` is).
    pub fn gzip(content_type: &str, body: &str) -> Reply {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes()).expect("writing to memory");
        Self::typed(content_type, gz.finish().expect("writing to memory"))
    }

    pub fn typed(content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::Ok {
            content_type: content_type.to_owned(),
            body: body.into(),
        }
    }
}

/// Makes the reply for a path that has no route (the benchmark's pages).
pub type Generator = Arc<dyn Fn(&str) -> Option<Reply> + Send + Sync>;

struct Shared {
    routes: RwLock<HashMap<String, Reply>>,
    generator: Option<Generator>,
    /// `(path-and-query, User-Agent)` of every request, when recording.
    log: Option<Mutex<Vec<(String, String)>>>,
    total: AtomicUsize,
}

/// A running fake site on `127.0.0.1`. Stops when dropped.
pub struct FakeSite {
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl fmt::Debug for FakeSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSite")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl FakeSite {
    /// Starts on the current runtime, logging every request.
    pub async fn start(routes: impl IntoIterator<Item = (String, Reply)>) -> std::io::Result<Self> {
        let shared = Shared::new(routes, None, true);
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let server = ServerHandle::spawn(listener, router(Arc::clone(&shared)))?;
        Ok(FakeSite { shared, server })
    }

    /// Starts on a thread of its own (no request log), answering paths
    /// without a route from `generator`. Callable outside any runtime.
    pub fn spawn_on_own_thread(
        routes: impl IntoIterator<Item = (String, Reply)>,
        generator: Option<Generator>,
    ) -> std::io::Result<Self> {
        let shared = Shared::new(routes, generator, false);
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let server =
            ServerHandle::spawn_on_own_thread(listener, router(Arc::clone(&shared)), "fake-site")?;
        Ok(FakeSite { shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT`, with no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Sets the reply of `path` (or path with query) from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.shared
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), reply);
    }

    /// The path-and-query of every request, in arrival order.
    pub fn requests(&self) -> Vec<String> {
        self.log().into_iter().map(|(p, _)| p).collect()
    }

    /// The `User-Agent` of every request, in arrival order.
    pub fn user_agents(&self) -> Vec<String> {
        self.log().into_iter().map(|(_, ua)| ua).collect()
    }

    fn log(&self) -> Vec<(String, String)> {
        self.shared.log.as_ref().map_or_else(Vec::new, |l| {
            l.lock().unwrap_or_else(PoisonError::into_inner).clone()
        })
    }

    /// Requests received.
    pub fn total(&self) -> usize {
        self.shared.total.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn new(
        routes: impl IntoIterator<Item = (String, Reply)>,
        generator: Option<Generator>,
        record: bool,
    ) -> Arc<Self> {
        Arc::new(Shared {
            routes: RwLock::new(routes.into_iter().collect()),
            generator,
            log: record.then(|| Mutex::new(Vec::new())),
            total: AtomicUsize::new(0),
        })
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.total.fetch_add(1, Ordering::Relaxed);
    let uri = request.uri();
    let path = uri.path();
    let path_and_query = uri.path_and_query().map_or(path, |pq| pq.as_str());
    if let Some(log) = &shared.log {
        let ua = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((path_and_query.to_owned(), ua));
    }
    let reply = {
        let routes = shared.routes.read().unwrap_or_else(PoisonError::into_inner);
        routes
            .get(path_and_query)
            .or_else(|| routes.get(path))
            .cloned()
    };
    let reply = reply
        .or_else(|| shared.generator.as_ref().and_then(|g| g(path_and_query)))
        .unwrap_or(Reply::Status(404));
    answer(reply).await
}

async fn answer(mut reply: Reply) -> Response {
    loop {
        match reply {
            Reply::Ok { content_type, body } => {
                let mut r = Response::new(Body::from(body));
                if let Ok(v) = HeaderValue::try_from(content_type) {
                    r.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                return r;
            }
            Reply::Status(status) => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return r;
            }
            Reply::Redirect(to) => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
                if let Ok(v) = HeaderValue::try_from(to) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                return r;
            }
            Reply::Slow(wait, inner) => {
                tokio::time::sleep(wait).await;
                reply = *inner;
            }
            Reply::Hang => std::future::pending::<()>().await,
        }
    }
}
