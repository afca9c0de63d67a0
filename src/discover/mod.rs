//! Discovery: finds a watch's sources the way Vercel's optimizer is fed,
//! from the site's sitemaps (`sitemap`), its pages (`html`) and an optional
//! list (`images_url`). It knows nothing of probes or the store: it returns
//! a [`Discovery`], every source found with where it was found, and whether
//! it saw everything it meant to ([`Discovery::complete`]). A partial
//! discovery still returns what it found; the caller must not take a source
//! it did not see as gone.
//!
//! Its requests are `GET`s with `User-Agent: origin-watch/<version>`, the
//! watch's timeout and headers, redirects followed within the site only,
//! and each holds a slot of the same per-host limit as the probes
//! ([`Prober::host_slot`]).

pub mod fetch;
pub mod html;
pub mod sitemap;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use url::{Position, Url};

use crate::config::{Discover, Watch};
use crate::probe::Prober;
use crate::sources::{is_http_with_host, within_limit};
use fetch::{FetchError, Fetched, Fetcher};

/// Sitemap indexes are followed this deep (an index of indexes of sitemaps).
pub const MAX_SITEMAP_DEPTH: usize = 3;
/// Sitemaps read per discovery, at most (indexes included).
pub const MAX_SITEMAPS: usize = 1000;
/// The largest page read.
pub const MAX_PAGE_BYTES: u64 = 10 * 1024 * 1024;
/// The largest `images_url` list read.
pub const MAX_LIST_BYTES: u64 = 50 * 1024 * 1024;

/// One source found, and the page, sitemap or list it was first found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub src: String,
    pub found_on: Arc<str>,
}

/// What one discovery found.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Every source found, once each, sorted by `src`.
    pub sources: Vec<Found>,
    /// HTML pages read (answered 2xx).
    pub pages_read: usize,
    /// Sitemaps read (answered 2xx), indexes included.
    pub sitemaps_read: usize,
    /// What went wrong, each naming its URL. Any error makes the discovery
    /// partial: sources it did not see may still be referenced.
    pub errors: Vec<String>,
    pub elapsed: Duration,
}

impl Discovery {
    /// True when nothing went wrong: every sitemap, page and list meant to
    /// be read was read (a page that answered 404 or 410 counts as read).
    pub fn complete(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The hosts of a watch: the site (whose pages are read) and the origin
/// (which serves the same deployment's images and optimizer).
#[derive(Debug, Clone)]
pub struct Site {
    site: (String, String, u16),
    origin: Option<(String, String, u16)>,
}

fn origin_of(u: &Url) -> Option<(String, String, u16)> {
    Some((
        u.scheme().to_owned(),
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?,
    ))
}

fn same(key: &(String, String, u16), u: &Url) -> bool {
    u.scheme() == key.0
        && u.host_str().is_some_and(|h| h.eq_ignore_ascii_case(&key.1))
        && u.port_or_known_default() == Some(key.2)
}

impl Site {
    /// `site` is the public site; `origin` the watch's origin, if any.
    pub fn new(site: &Url, origin: Option<&str>) -> Site {
        Site {
            site: origin_of(site).unwrap_or_default(),
            origin: origin
                .and_then(|o| Url::parse(o).ok())
                .and_then(|o| origin_of(&o)),
        }
    }

    /// On the site (same scheme, host and port): a page that may be read.
    pub fn is_site(&self, u: &Url) -> bool {
        same(&self.site, u)
    }

    /// On the site or the origin: an image there is a path source.
    pub fn is_ours(&self, u: &Url) -> bool {
        self.is_site(u) || self.origin.as_ref().is_some_and(|o| same(o, u))
    }
}

/// What one discovery runs on, besides its [`Discover`] block.
#[derive(Debug, Clone)]
pub struct Settings {
    /// For the logs.
    pub watch: String,
    pub discover: Arc<Discover>,
    /// The watch's origin (its host's images are path sources too).
    pub origin: Option<String>,
    pub timeout: Duration,
    /// Requests in flight for this discovery.
    pub concurrency: usize,
    /// Requests in flight to one host, shared with the probes.
    pub per_host_concurrency: usize,
    pub max_redirects: u32,
    /// Sent with every request (the watch's probe headers), to the host
    /// each request was made to, never after a redirect to another.
    pub headers: crate::probe::ProbeHeaders,
}

impl Settings {
    /// A watch's settings, or `None` when it has no `discover:` block.
    pub fn of(watch: &Watch) -> Option<Settings> {
        let r = &watch.rules;
        Some(Settings {
            watch: watch.name.clone(),
            discover: watch.discover.clone()?,
            origin: watch.origin.clone(),
            timeout: r.timeout,
            concurrency: r.concurrency,
            per_host_concurrency: r.per_host_concurrency,
            max_redirects: r.follow_redirects.max(1),
            headers: r.headers.clone(),
        })
    }
}

/// Runs discoveries. One per process, beside the [`Prober`] whose per-host
/// limits it shares.
pub struct Discoverer {
    limits: Arc<Prober>,
}

impl Discoverer {
    /// Requests go by the prober's client (its connections, its trusted
    /// roots, its proxy when the environment names one); discovery decides
    /// which redirects to follow.
    pub fn new(limits: Arc<Prober>) -> Discoverer {
        Discoverer { limits }
    }

    /// Discovers a watch's sources; `None` when it has no `discover:` block.
    pub async fn discover_watch(
        &self,
        watch: &Watch,
        cancel: &CancellationToken,
    ) -> Option<Discovery> {
        let settings = Settings::of(watch)?;
        Some(self.discover(&settings, cancel).await)
    }

    /// Reads the sitemaps and the list first, then the pages (configured,
    /// then from sitemaps, then followed links, breadth first), at most
    /// `max_pages` of them.
    pub async fn discover(&self, s: &Settings, cancel: &CancellationToken) -> Discovery {
        let started = Instant::now();
        let d = &*s.discover;
        let site = Site::new(&d.site, s.origin.as_deref());
        let fetcher = Fetcher {
            limits: &self.limits,
            headers: &s.headers,
            timeout: s.timeout,
            per_host_concurrency: s.per_host_concurrency,
            max_redirects: s.max_redirects,
        };
        let mut run = Run {
            watch: &s.watch,
            site: &site,
            found: HashMap::new(),
            out: Discovery::default(),
        };
        let concurrency = s.concurrency.max(1);

        // Sitemaps (and indexes, followed) and the list.
        let mut sitemap_pages: Vec<Url> = Vec::new();
        let mut jobs: VecDeque<Job> = d
            .sitemaps
            .iter()
            .map(|u| Job::Sitemap(u.clone(), 0))
            .collect();
        let mut sitemaps_seen: HashSet<Url> = d.sitemaps.iter().cloned().collect();
        if let Some(list) = &d.images_url {
            jobs.push_back(Job::List(list.clone()));
        }
        let mut cancelled = false;
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < concurrency
                && let Some(job) = jobs.pop_front()
            {
                in_flight.push(job.run(&fetcher, &site));
            }
            let done = tokio::select! {
                done = in_flight.next() => done,
                () = cancel.cancelled() => {
                    cancelled = true;
                    break;
                }
            };
            let Some(done) = done else { break };
            match done {
                Done::Sitemap { url, depth, scan } => {
                    run.sitemap(&url, &scan);
                    for child in &scan.sitemaps {
                        let Ok(child) = url.join(child) else { continue };
                        let admissible = site.is_site(&child) || child.origin() == url.origin();
                        if depth + 1 > MAX_SITEMAP_DEPTH || !admissible {
                            run.out.errors.push(format!(
                                "{url}: sitemap {child} not followed (too deep or off the site)"
                            ));
                        } else if sitemaps_seen.len() >= MAX_SITEMAPS {
                            run.out.errors.push(format!(
                                "{url}: sitemap {child} not followed (over {MAX_SITEMAPS} sitemaps)"
                            ));
                        } else if sitemaps_seen.insert(child.clone()) {
                            jobs.push_back(Job::Sitemap(child, depth + 1));
                        }
                    }
                    for page in &scan.pages {
                        if let Ok(page) = url.join(page)
                            && site.is_site(&page)
                        {
                            sitemap_pages.push(page);
                        }
                    }
                }
                Done::List { url, body } => run.list(&url, &body),
                Done::Page { .. } | Done::Skipped => {}
                Done::Failed(e) => run.out.errors.push(e.to_string()),
            }
        }
        drop(in_flight);

        // Pages, breadth first.
        let mut seen: HashSet<Url> = HashSet::new();
        let mut queue: VecDeque<Url> = VecDeque::new();
        for page in d.pages.iter().chain(&sitemap_pages) {
            let mut page = page.clone();
            page.set_fragment(None);
            if seen.len() < d.max_pages && seen.insert(page.clone()) {
                queue.push_back(page);
            }
        }
        drop(sitemap_pages);
        let mut in_flight = FuturesUnordered::new();
        while !cancelled {
            while in_flight.len() < concurrency
                && let Some(page) = queue.pop_front()
            {
                in_flight.push(Job::Page(page, d.follow_links).run(&fetcher, &site));
            }
            let done = tokio::select! {
                done = in_flight.next() => done,
                () = cancel.cancelled() => {
                    cancelled = true;
                    break;
                }
            };
            match done {
                None => break,
                Some(Done::Page { url, scan }) => {
                    run.out.pages_read += 1;
                    let on: Arc<str> = Arc::from(url.as_str());
                    for src in scan.sources {
                        run.add(src, &on);
                    }
                    if d.follow_links {
                        for mut link in scan.links {
                            link.set_fragment(None);
                            if seen.len() < d.max_pages && !seen.contains(&link) {
                                seen.insert(link.clone());
                                queue.push_back(link);
                            }
                        }
                    }
                }
                Some(Done::Failed(e)) => run.out.errors.push(e.to_string()),
                Some(Done::Skipped) => {}
                Some(_) => unreachable!("only pages are read now"),
            }
        }

        let mut out = run.out;
        if cancelled {
            out.errors.push(format!("{}: discovery cancelled", d.site));
        }
        out.sources = sorted(
            run.found
                .into_iter()
                .map(|(src, found_on)| Found { src, found_on })
                .collect(),
        );
        out.elapsed = started.elapsed();
        out
    }
}

/// `found` sorted by `src`. A large one is sorted in two halves at once,
/// the second on a thread of its own, then merged: at 200,000 sources the
/// sort was a tenth of a discovery's time, on one core while the other
/// waited.
fn sorted(mut found: Vec<Found>) -> Vec<Found> {
    let by_src = |a: &Found, b: &Found| a.src.cmp(&b.src);
    if found.len() < PARALLEL_SORT_FROM {
        found.sort_unstable_by(by_src);
        return found;
    }
    let second = found.split_off(found.len() / 2);
    let second = std::thread::scope(|scope| {
        let sorting = scope.spawn(move || {
            let mut second = second;
            second.sort_unstable_by(by_src);
            second
        });
        found.sort_unstable_by(by_src);
        sorting.join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let mut out = Vec::with_capacity(found.len() + second.len());
    let (mut a, mut b) = (found.into_iter().peekable(), second.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if by_src(x, y).is_le() => a.next(),
            (Some(_), Some(_)) | (None, _) => b.next(),
            (Some(_), None) => a.next(),
        };
        match next {
            Some(f) => out.push(f),
            None => return out,
        }
    }
}

/// How many sources make a sort worth a second thread.
const PARALLEL_SORT_FROM: usize = 20_000;

/// One request to make.
enum Job {
    Sitemap(Url, usize),
    List(Url),
    /// A page, and whether its links are wanted.
    Page(Url, bool),
}

/// What a request gave.
enum Done {
    Sitemap {
        url: Url,
        depth: usize,
        scan: sitemap::SitemapScan,
    },
    List {
        url: Url,
        body: Vec<u8>,
    },
    Page {
        url: Url,
        scan: html::PageScan,
    },
    /// Nothing to read, and nothing wrong (a page that is gone or not HTML).
    Skipped,
    Failed(JobError),
}

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: sitemap answered {status}")]
    SitemapMissing { url: Url, status: &'static str },
    #[error("{url}: {cause}")]
    Body { url: Url, cause: sitemap::BodyError },
    #[error(transparent)]
    Page(#[from] html::ScanError),
}

impl Job {
    async fn run(self, fetcher: &Fetcher<'_>, site: &Site) -> Done {
        match self {
            Job::Sitemap(url, depth) => {
                let start = url.clone();
                let got = fetcher
                    .get(&url, MAX_SITEMAP_BYTES_COMPRESSED, |to| {
                        site.is_site(to) || to.origin() == start.origin()
                    })
                    .await;
                match got {
                    Ok(Some(Fetched { body, .. })) => match sitemap::decompress(&body) {
                        Ok(xml) => Done::Sitemap {
                            scan: sitemap::parse(&xml),
                            url,
                            depth,
                        },
                        Err(cause) => Done::Failed(JobError::Body { url, cause }),
                    },
                    // A sitemap someone named is expected to be there.
                    Ok(None) => Done::Failed(JobError::SitemapMissing {
                        url,
                        status: "404 or 410",
                    }),
                    Err(e) => Done::Failed(e.into()),
                }
            }
            Job::List(url) => {
                let start = url.clone();
                match fetcher
                    .get(&url, MAX_LIST_BYTES, |to| to.origin() == start.origin())
                    .await
                {
                    Ok(Some(Fetched { body, .. })) => Done::List { url, body },
                    Ok(None) => Done::Failed(JobError::SitemapMissing {
                        url,
                        status: "404 or 410",
                    }),
                    Err(e) => Done::Failed(e.into()),
                }
            }
            Job::Page(url, links) => match fetcher
                .get(&url, MAX_PAGE_BYTES, |to| site.is_site(to))
                .await
            {
                Ok(Some(Fetched {
                    url,
                    content_type,
                    body,
                })) => {
                    let html = content_type.as_deref().is_none_or(|t| t.contains("html"));
                    if !html {
                        return Done::Skipped;
                    }
                    // Parsed on a task of its own, so that pages are parsed
                    // on every worker while this one keeps the requests going.
                    let site = site.clone();
                    let parsed = tokio::spawn(async move {
                        match html::scan(&body, &url, &site, links) {
                            Ok(scan) => Done::Page { url, scan },
                            Err(e) => Done::Failed(e.into()),
                        }
                    });
                    parsed
                        .await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
                }
                // A page that is gone says nothing about its images.
                Ok(None) => Done::Skipped,
                // A page that redirects off the site is not the site's.
                Err(FetchError::OffSite { .. }) => Done::Skipped,
                Err(e) => Done::Failed(e.into()),
            },
        }
    }
}

/// The compressed size of a sitemap read at most (its content is bounded
/// by [`sitemap::MAX_SITEMAP_BYTES`] once decompressed).
const MAX_SITEMAP_BYTES_COMPRESSED: u64 = sitemap::MAX_SITEMAP_BYTES;

/// One discovery's findings as they come in.
struct Run<'a> {
    watch: &'a str,
    site: &'a Site,
    found: HashMap<String, Arc<str>>,
    out: Discovery,
}

impl Run<'_> {
    fn add(&mut self, src: String, on: &Arc<str>) {
        self.found.entry(src).or_insert_with(|| on.clone());
    }

    fn sitemap(&mut self, url: &Url, scan: &sitemap::SitemapScan) {
        self.out.sitemaps_read += 1;
        let on: Arc<str> = Arc::from(url.as_str());
        for loc in &scan.images {
            if let Some(src) = image_source(loc, url, self.site) {
                self.add(src, &on);
            }
        }
        if let Some(first) = scan.errors.first() {
            tracing::warn!(
                watch = self.watch,
                url = %url,
                errors = scan.errors.len(),
                first = %first,
                "sitemap is not well-formed; read what could be read"
            );
            self.out.errors.push(format!(
                "{url}: sitemap is not well-formed ({} syntax errors, first {first})",
                scan.errors.len()
            ));
        } else if let Some(first) = scan.oddities.first() {
            tracing::warn!(
                watch = self.watch,
                url = %url,
                oddities = scan.oddities.len(),
                first = %first,
                "sitemap is not well-formed; read past it"
            );
        }
    }

    /// `images_url`: a JSON array of strings, or text with one source a
    /// line and `#` comments.
    fn list(&mut self, url: &Url, body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        let on: Arc<str> = Arc::from(url.as_str());
        let entries: Vec<String> = if text.trim_start().starts_with('[') {
            match serde_json::from_str::<Vec<String>>(&text) {
                Ok(list) => list,
                Err(e) => {
                    self.out
                        .errors
                        .push(format!("{url}: not a JSON array of strings: {e}"));
                    return;
                }
            }
        } else {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        let mut bad = 0usize;
        for entry in entries {
            let entry = entry.trim();
            if is_source(entry) {
                self.add(entry.to_owned(), &on);
            } else {
                bad += 1;
            }
        }
        if bad > 0 {
            tracing::warn!(
                watch = self.watch,
                url = %url,
                skipped = bad,
                "images_url lists entries that are neither a path nor an http(s) URL"
            );
        }
    }
}

/// A usable source string: a path, or an absolute http(s) URL, within
/// Vercel's length limit.
fn is_source(s: &str) -> bool {
    let shape = if s.starts_with('/') {
        !s.starts_with("//")
    } else {
        Url::parse(s).is_ok_and(|u| is_http_with_host(&u))
    };
    shape && !s.is_empty() && within_limit(s)
}

/// An `<image:loc>`: on the site's or the origin's host, the path source
/// (path and query); elsewhere, the absolute source as written.
pub fn image_source(loc: &str, sitemap: &Url, site: &Site) -> Option<String> {
    let url = sitemap.join(loc).ok()?;
    if !is_http_with_host(&url) {
        return None;
    }
    let src = if site.is_ours(&url) {
        url[Position::BeforePath..Position::AfterQuery].to_owned()
    } else if Url::parse(loc).is_ok() {
        loc.to_owned()
    } else {
        url.to_string()
    };
    is_source(&src).then_some(src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::MAX_SOURCE_LEN;

    #[test]
    fn image_locs_on_the_site_or_origin_become_paths_others_stay_absolute() {
        let site = Site::new(
            &Url::parse("http://127.0.0.1:3123/").unwrap(),
            Some("https://app.vercel.app"),
        );
        let sm = Url::parse("http://127.0.0.1:3123/sitemap.xml").unwrap();
        let src = |loc: &str| image_source(loc, &sm, &site);
        assert_eq!(
            src("http://127.0.0.1:3123/images/hero.png").as_deref(),
            Some("/images/hero.png")
        );
        assert_eq!(
            src("https://app.vercel.app/a.png?v=1&w=2").as_deref(),
            Some("/a.png?v=1&w=2")
        );
        // Same host, another port: another site.
        assert_eq!(
            src("http://127.0.0.1:18999/remote/dog.png?a=1&b=2").as_deref(),
            Some("http://127.0.0.1:18999/remote/dog.png?a=1&b=2")
        );
        assert_eq!(src("/rel.png").as_deref(), Some("/rel.png"));
        assert_eq!(src("ftp://x.com/a.png"), None);
    }

    #[test]
    fn found_sources_are_sorted_by_src_small_or_large() {
        for n in [0, 1, 7, PARALLEL_SORT_FROM - 1, PARALLEL_SORT_FROM, 50_001] {
            // A fixed shuffle: multiplying by an odd number modulo a power
            // of two is a permutation.
            let found: Vec<Found> = (0..n)
                .map(|i| Found {
                    src: format!("/{:08}.png", (i * 7919) % (1 << 17)),
                    found_on: Arc::from(format!("/p/{i}").as_str()),
                })
                .collect();
            let mut expected = found.clone();
            expected.sort_by(|a, b| a.src.cmp(&b.src));
            assert_eq!(sorted(found), expected, "{n}");
        }
    }

    #[test]
    fn sources_are_paths_or_http_urls() {
        assert!(is_source("/a b.png"));
        assert!(is_source("https://cdn.example.com/x.jpg?v=2"));
        assert!(!is_source("//cdn.example.com/x.jpg"));
        assert!(!is_source("relative.png"));
        assert!(!is_source("data:image/png;base64,AAAA"));
        assert!(!is_source(&format!("/{}", "x".repeat(MAX_SOURCE_LEN))));
        assert!(is_source(&format!("/{}", "x".repeat(MAX_SOURCE_LEN - 1))));
    }

    /// Vercel counts characters: a 3,000-character CJK path (9,001 bytes)
    /// is a source; 8,193 characters are not.
    #[test]
    fn the_source_limit_counts_characters_not_bytes() {
        assert!(is_source(&format!("/{}", "画".repeat(3000))));
        assert!(is_source(&format!("/{}", "画".repeat(MAX_SOURCE_LEN - 1))));
        assert!(!is_source(&format!("/{}", "画".repeat(MAX_SOURCE_LEN))));
    }
}
