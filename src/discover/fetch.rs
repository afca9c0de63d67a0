//! Discovery's HTTP: one `GET` with the body read up to a limit, redirects
//! followed only where the caller allows (within the site), every request
//! holding a slot of the same per-host limit as the probes.

use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, LOCATION};
use url::Url;

use crate::probe::Prober;
use crate::transport::{Document, GetError, SendError};

/// Why a fetch gave nothing to read. Messages name the URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: answered {status}")]
    Status { url: Url, status: u16 },
    #[error("{url}: timeout after {}", humantime::format_duration(*.timeout))]
    Timeout { url: Url, timeout: Duration },
    #[error("{url}: request failed: {cause}")]
    Request { url: Url, cause: String },
    #[error("{url}: redirects off the site to {to}")]
    OffSite { url: Url, to: String },
    #[error("{url}: more than {limit} redirects")]
    Redirects { url: Url, limit: u32 },
    #[error("{url}: body over {limit} bytes")]
    TooLarge { url: Url, limit: u64 },
}

/// A fetched body and where it came from after redirects.
pub struct Fetched {
    pub url: Url,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// The settings of one watch's requests, sent by the probes' client.
pub struct Fetcher<'a> {
    pub limits: &'a Prober,
    pub headers: &'a crate::probe::ProbeHeaders,
    pub timeout: Duration,
    pub per_host_concurrency: usize,
    pub max_redirects: u32,
}

impl Fetcher<'_> {
    /// `GET url`. `Ok(None)` for 404 and 410: a missing document says
    /// nothing. A redirect is followed only when `allowed` says so.
    pub async fn get(
        &self,
        url: &Url,
        limit: u64,
        allowed: impl Fn(&Url) -> bool,
    ) -> Result<Option<Fetched>, FetchError> {
        let mut at = url.clone();
        let mut hops = 0;
        loop {
            let slot = self.limits.host_slot(&at, self.per_host_concurrency).await;
            let got = self
                .limits
                .transport()
                // Only to the host first asked: a redirect elsewhere gets none.
                .get(&at, self.timeout, self.headers.for_hop(url, &at), limit)
                .await;
            let Document {
                status,
                headers,
                body,
            } = match got {
                Ok(document) => document,
                Err(GetError::TooLarge) => return Err(FetchError::TooLarge { url: at, limit }),
                Err(GetError::Send(SendError::Timeout)) => {
                    return Err(FetchError::Timeout {
                        url: at,
                        timeout: self.timeout,
                    });
                }
                Err(GetError::Send(SendError::Connect(why))) => {
                    return Err(FetchError::Request {
                        url: at,
                        cause: format!("connection failed: {why}"),
                    });
                }
                Err(GetError::Send(SendError::Request(cause))) => {
                    return Err(FetchError::Request { url: at, cause });
                }
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                slot.back_off(crate::backoff::after_429(&headers));
            }
            if status.is_redirection()
                && let Some(to) = headers.get(LOCATION)
            {
                let to = to.to_str().ok().and_then(|l| at.join(l).ok());
                match to {
                    Some(next) if allowed(&next) => {
                        hops += 1;
                        if hops > self.max_redirects {
                            return Err(FetchError::Redirects {
                                url: url.clone(),
                                limit: self.max_redirects,
                            });
                        }
                        at = next;
                        continue;
                    }
                    other => {
                        return Err(FetchError::OffSite {
                            url: at,
                            to: other.map_or_else(|| "an unusable Location".into(), String::from),
                        });
                    }
                }
            }
            if matches!(status.as_u16(), 404 | 410) {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: at,
                    status: status.as_u16(),
                });
            }
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_ascii_lowercase);
            drop(slot);
            return Ok(Some(Fetched {
                url: at,
                content_type,
                body,
            }));
        }
    }
}
