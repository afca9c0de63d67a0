//! A simulated Vercel image cache, served by the fake API at
//! `GET /_next/image?url=SRC&w=..&q=..`, so that tests assert what a visitor
//! actually sees:
//!
//! - the first request for a source fetches it from the origin and caches
//!   the bytes (`x-vercel-cache: MISS`); a source the origin does not serve
//!   is answered with the origin's status and not cached;
//! - later requests answer `HIT` with the cached bytes, whatever the origin
//!   now holds;
//! - after `invalidate-by-src-images`, the next request answers `STALE` with
//!   the old bytes and refreshes from the origin in the background;
//! - after `dangerously-delete-by-src-images`, the next request is a `MISS`
//!   that asks the origin again (and answers its 404 when it is gone).
//!
//! The cache is keyed by the source alone (the real one also keys by width
//! and quality; every variant of a source is purged together).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;

struct Entry {
    bytes: Bytes,
    stale: bool,
}

/// The cache and the origin it fills from.
pub struct ImageCache {
    origin: String,
    entries: Mutex<HashMap<String, Entry>>,
    client: reqwest::Client,
}

impl ImageCache {
    /// A cache that fills from `origin` (its base URL; path sources are
    /// appended, absolute sources fetched as they are).
    pub fn new(origin: &str) -> ImageCache {
        ImageCache {
            origin: origin.trim_end_matches('/').to_owned(),
            entries: Mutex::new(HashMap::new()),
            client: reqwest::Client::new(),
        }
    }

    fn url_of(&self, src: &str) -> String {
        if src.starts_with("http://") || src.starts_with("https://") {
            src.to_owned()
        } else {
            format!("{}{src}", self.origin)
        }
    }

    async fn fetch(&self, src: &str) -> Result<Bytes, StatusCode> {
        let resp = self
            .client
            .get(self.url_of(src))
            .send()
            .await
            .map_err(|_| StatusCode::BAD_GATEWAY)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY));
        }
        resp.bytes().await.map_err(|_| StatusCode::BAD_GATEWAY)
    }

    /// What a visitor gets for `/_next/image?url=SRC`.
    pub async fn serve(self: &Arc<Self>, src: &str) -> Response {
        let cached = {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            entries.get(src).map(|e| (e.bytes.clone(), e.stale))
        };
        match cached {
            Some((bytes, false)) => answer(StatusCode::OK, bytes, "HIT"),
            Some((bytes, true)) => {
                // Served stale; refreshed once, in the background.
                if let Some(e) = self
                    .entries
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_mut(src)
                {
                    e.stale = false;
                }
                let (cache, src) = (Arc::clone(self), src.to_owned());
                tokio::spawn(async move {
                    let fresh = cache.fetch(&src).await;
                    let mut entries = cache.entries.lock().unwrap_or_else(PoisonError::into_inner);
                    match fresh {
                        Ok(bytes) => {
                            entries.insert(
                                src,
                                Entry {
                                    bytes,
                                    stale: false,
                                },
                            );
                        }
                        Err(_) => {
                            entries.remove(&src);
                        }
                    }
                });
                answer(StatusCode::OK, bytes, "STALE")
            }
            None => match self.fetch(src).await {
                Ok(bytes) => {
                    self.entries
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(
                            src.to_owned(),
                            Entry {
                                bytes: bytes.clone(),
                                stale: false,
                            },
                        );
                    answer(StatusCode::OK, bytes, "MISS")
                }
                Err(status) => answer(status, Bytes::new(), "MISS"),
            },
        }
    }

    /// A 200 from `dangerously-delete-by-src-images`.
    pub fn delete(&self, srcs: &[String]) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for s in srcs {
            entries.remove(s);
        }
    }

    /// A 200 from `invalidate-by-src-images`.
    pub fn invalidate(&self, srcs: &[String]) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        for s in srcs {
            if let Some(e) = entries.get_mut(s) {
                e.stale = true;
            }
        }
    }
}

fn answer(status: StatusCode, bytes: Bytes, cache: &'static str) -> Response {
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("x-vercel-cache", HeaderValue::from_static(cache));
    r
}
