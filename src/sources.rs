//! A watch's source list: the entries of `images:` and `images_file`, checked,
//! deduplicated, and grouped so that sources sharing one probe URL (aliases)
//! sit side by side and are probed once.
//!
//! A probe URL is not stored per source: for a path-style source it is the
//! path joined to the watch's `origin` (with the URL library: the origin's
//! own path is kept as a prefix, and the origin can hold no query or
//! fragment), for an absolute source the source itself, and only an
//! explicit `probe:` keeps a string of its own. A million sources then cost
//! about a hundred bytes each.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use url::Url;

/// Vercel rejects source strings longer than this many characters (its
/// `maxLength`, which counts characters, not bytes).
pub const MAX_SOURCE_LEN: usize = 8192;

/// Whether `src` is within [`MAX_SOURCE_LEN`], counted in characters: a
/// 3,000-character CJK path is 9,000 bytes and Vercel takes it. The one
/// place the limit is applied (config, lists and discovery alike).
pub fn within_limit(src: &str) -> bool {
    // Cheap first: the bytes bound the characters from above.
    src.len() <= MAX_SOURCE_LEN || src.chars().count() <= MAX_SOURCE_LEN
}

/// One source image: the exact string sent to Vercel, and the index of the
/// probe target that answers for it.
///
/// Only a source list makes one ([`Builder`], or a shard's part of a
/// watch): the index is private, so it always names the target whose range
/// holds the source. `src` is `pub(crate)` for the crate to read; outside,
/// use [`Source::src`].
#[derive(Debug, Clone)]
pub struct Source {
    pub(crate) src: Arc<str>,
    probe: u32,
}

impl Source {
    /// The source, exactly as configured or found (what is sent to Vercel).
    pub fn src(&self) -> &str {
        &self.src
    }

    /// The index, in its list's probes, of the target that answers for it.
    pub fn probe(&self) -> usize {
        self.probe as usize
    }
}

/// Where a probe target's URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeUrl {
    /// The watch's `origin` followed by the path of the target's first source.
    OriginPath,
    /// The target's first source itself (an absolute URL).
    Source,
    /// An explicit `probe:`, as written.
    Explicit(Arc<str>),
}

/// A unique probe URL of a watch and the range of sources that share it.
///
/// Only a source list makes one ([`Builder`], or a shard's part of a
/// watch), and its fields are private: `first` and `count` index into the
/// list's sources, so a target built or changed elsewhere could make
/// slicing them panic or name the wrong sources. It is meaningful only with
/// the list it came from.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    url: ProbeUrl,
    first: u32,
    count: u32,
}

impl ProbeTarget {
    /// How many sources share this target (at least one).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The target's sources: their indices in its list.
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        let first = self.first as usize;
        first..first + self.count as usize
    }
}

/// The checked source list of one watch (or one the pass built from what
/// discovery found).
///
/// Only [`Builder`] makes one (or `default`, the empty list), and its
/// fields are private, so its sources and targets always agree (see
/// [`ProbeTarget`]).
#[derive(Debug, Clone, Default)]
pub struct SourceList {
    sources: Vec<Source>,
    probes: Vec<ProbeTarget>,
    /// Sources listed more than once (kept once).
    duplicates: usize,
}

/// The part of a list whose probe targets `keep` accepts, its indices
/// rebuilt. A target keeps all of its sources: aliases stay together.
/// `probes` index into `sources` (crate-private: a pair that disagrees
/// panics).
pub(crate) fn retain(
    sources: &[Source],
    probes: &[ProbeTarget],
    mut keep: impl FnMut(&ProbeTarget) -> bool,
) -> (Vec<Source>, Vec<ProbeTarget>) {
    let mut kept_sources: Vec<Source> = Vec::new();
    let mut kept_probes: Vec<ProbeTarget> = Vec::new();
    for probe in probes.iter().filter(|p| keep(p)) {
        let index = kept_probes.len() as u32;
        kept_probes.push(ProbeTarget {
            url: probe.url.clone(),
            first: kept_sources.len() as u32,
            count: probe.count,
        });
        kept_sources.extend(sources[probe.range()].iter().map(|s| Source {
            src: s.src.clone(),
            probe: index,
        }));
    }
    (kept_sources, kept_probes)
}

impl SourceList {
    /// The sources, grouped so that aliases of one probe URL are contiguous.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The probe targets, each answering for a range of the sources.
    pub fn probes(&self) -> &[ProbeTarget] {
        &self.probes
    }

    /// The sources, targets and duplicate count, for a checked watch to own.
    pub(crate) fn into_parts(self) -> (Vec<Source>, Vec<ProbeTarget>, usize) {
        (self.sources, self.probes, self.duplicates)
    }

    /// The sources that one probe target answers for. `probe` is one of
    /// [`SourceList::probes`] (of this list: another's may index past its end).
    pub fn sources_of(&self, probe: &ProbeTarget) -> &[Source] {
        &self.sources[probe.range()]
    }

    /// The URL a probe target is probed at.
    pub fn probe_url<'a>(&'a self, origin: Option<&str>, probe: &'a ProbeTarget) -> Cow<'a, str> {
        probe_url(&self.sources, origin, probe)
    }
}

/// The URL a probe target of `sources` is probed at (crate-private: a
/// target of another list may index past the end of `sources`).
pub(crate) fn probe_url<'a>(
    sources: &'a [Source],
    origin: Option<&str>,
    probe: &'a ProbeTarget,
) -> Cow<'a, str> {
    let first = &sources[probe.first as usize].src;
    match &probe.url {
        ProbeUrl::OriginPath => {
            let origin = origin.unwrap_or_default();
            match Url::parse(origin) {
                Ok(base) => Cow::Owned(join(&base, first).into()),
                // Unreachable: the origin was checked at load.
                Err(_) => Cow::Owned(format!("{origin}{first}")),
            }
        }
        ProbeUrl::Source => Cow::Borrowed(first),
        ProbeUrl::Explicit(url) => Cow::Borrowed(url),
    }
}

/// The string a probe target is sharded by: the probe URL as configured
/// (`origin` text followed by the path, the source, or the explicit
/// `probe:`). It is part of the product (see `shard`): it must not change
/// when the way requests are built does. Crate-private, like [`probe_url`].
pub(crate) fn shard_key<'a>(
    sources: &'a [Source],
    origin: Option<&str>,
    probe: &'a ProbeTarget,
) -> Cow<'a, str> {
    let first = &sources[probe.first as usize].src;
    match &probe.url {
        ProbeUrl::OriginPath => Cow::Owned(format!("{}{first}", origin.unwrap_or_default())),
        ProbeUrl::Source => Cow::Borrowed(first),
        ProbeUrl::Explicit(url) => Cow::Borrowed(url),
    }
}

/// A path-style source (`/a/b.png`, perhaps with `?query`) joined to a base
/// URL: the base's path is kept as a prefix, the source's query becomes the
/// query, and a `#fragment` (never sent to a server) is dropped.
pub fn join(base: &Url, src: &str) -> Url {
    let src = src.split_once('#').map_or(src, |(before, _)| before);
    let (path, query) = match src.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (src, None),
    };
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(query);
    url.set_fragment(None);
    url
}

/// Whether `s` starts with `http://` or `https://`, in any case (`HTTP://`
/// is a URL too).
pub fn has_http_scheme(s: &str) -> bool {
    let starts = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    starts("http://") || starts("https://")
}

/// Why a base URL, a source or a probe URL is not usable. Each message is
/// one line of a config problem list, so a parser's cause is part of it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    #[error("{shown:?} is not an http(s) URL")]
    BaseNotHttp { shown: String },
    #[error(
        "{shown:?} has a query or fragment (`?`, `#`); a base URL cannot, since paths are appended to it"
    )]
    BaseHasQuery { shown: String },
    #[error("{shown:?} is not a URL: {cause}")]
    BaseNotUrl {
        shown: String,
        cause: url::ParseError,
    },
    #[error("URL {shown:?} is not an http(s) URL")]
    NotHttp { shown: String },
    #[error("URL {shown:?} is not a URL: {cause}")]
    NotUrl {
        shown: String,
        cause: url::ParseError,
    },
    #[error("path-style source {0:?} needs the watch's `origin` (or an explicit `probe`)")]
    NeedsOrigin(String),
    #[error("source {0:?} must be a path starting with / or an absolute http(s) URL")]
    NotPathOrUrl(String),
    #[error("{cause}")]
    Origin { cause: url::ParseError },
}

/// A base URL (`origin`, `api_base`): absolute http(s), with a host, and
/// with no query or fragment (a path is appended to it, so either would
/// swallow every path). The problem shows no password.
pub fn check_base(candidate: &str) -> Result<Url, SourceError> {
    let shown = crate::redact::for_stdout(candidate);
    match Url::parse(candidate) {
        Ok(u) if !is_http_with_host(&u) => Err(SourceError::BaseNotHttp { shown }),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            Err(SourceError::BaseHasQuery { shown })
        }
        Ok(u) => Ok(u),
        Err(cause) => Err(SourceError::BaseNotUrl { shown, cause }),
    }
}

/// The one rule for a URL the watcher will send requests to: http or
/// https, with a host.
pub fn is_http_with_host(u: &Url) -> bool {
    matches!(u.scheme(), "http" | "https") && u.host().is_some()
}

/// Builds a [`SourceList`], collecting a problem per bad entry.
pub struct Builder<'o> {
    origin: Option<&'o str>,
    origin_url: Option<Url>,
    seen: HashSet<Arc<str>>,
    entries: Vec<(Arc<str>, ProbeUrl)>,
    duplicates: usize,
    pub problems: Vec<String>,
}

impl<'o> Builder<'o> {
    /// `origin` is the watch's checked origin, without a trailing `/`.
    pub fn new(origin: Option<&'o str>) -> Self {
        Builder {
            origin,
            origin_url: origin.and_then(|o| Url::parse(o).ok()),
            seen: HashSet::new(),
            entries: Vec::new(),
            duplicates: 0,
            problems: Vec::new(),
        }
    }

    /// Adds one entry; `at` names it in a problem (built only when needed).
    pub fn add(&mut self, at: &dyn Fn() -> String, src: &str, probe: Option<&str>) {
        if src.is_empty() {
            self.problems.push(format!("{}: empty source", at()));
            return;
        }
        if !within_limit(src) {
            self.problems.push(format!(
                "{}: source is {} characters, over Vercel's limit of {MAX_SOURCE_LEN} characters ({}...)",
                at(),
                src.chars().count(),
                crate::redact::for_stdout(&src[..src.floor_char_boundary(60)])
            ));
            return;
        }
        let url = match probe {
            Some(p) => match check_url(p) {
                Ok(u) => ProbeUrl::Explicit(Arc::from(u)),
                Err(why) => {
                    self.problems.push(format!("{}: probe {why}", at()));
                    return;
                }
            },
            None => match kind_of(src, self.origin) {
                Ok(u) => u,
                Err(why) => {
                    self.problems.push(format!("{}: {why}", at()));
                    return;
                }
            },
        };
        let src: Arc<str> = Arc::from(src);
        if !self.seen.insert(src.clone()) {
            self.duplicates += 1;
            return;
        }
        self.entries.push((src, url));
    }

    pub fn finish(self) -> (SourceList, Vec<String>) {
        let Builder {
            origin: _,
            origin_url,
            seen,
            entries,
            duplicates,
            problems,
        } = self;
        drop(seen);
        // Group ids in order of first appearance. Only explicit probe URLs
        // can be shared with other sources, so only they need a map.
        let mut by_url: HashMap<Arc<str>, u32> = HashMap::new();
        for (_, url) in &entries {
            if let ProbeUrl::Explicit(u) = url {
                by_url.entry(u.clone()).or_insert(u32::MAX);
            }
        }
        let mut next = 0u32;
        let mut group_url: Vec<ProbeUrl> = Vec::new();
        let mut grouped: Vec<(u32, Arc<str>)> = Vec::with_capacity(entries.len());
        for (src, url) in entries {
            let key: Option<Arc<str>> = match &url {
                ProbeUrl::Explicit(u) => Some(u.clone()),
                // An implied URL joins an explicit one that names the same place.
                _ if !by_url.is_empty() => {
                    let implied = match (&url, &origin_url) {
                        (ProbeUrl::OriginPath, Some(base)) => join(base, &src).into(),
                        _ => src.to_string(),
                    };
                    check_url(&implied)
                        .ok()
                        .map(Arc::<str>::from)
                        .filter(|u| by_url.contains_key(u))
                }
                _ => None,
            };
            let group = match key {
                Some(k) => {
                    let slot = by_url.get_mut(&k).expect("explicit URLs are in the map");
                    if *slot == u32::MAX {
                        *slot = next;
                        group_url.push(ProbeUrl::Explicit(k));
                        next += 1;
                    }
                    *slot
                }
                None => {
                    group_url.push(url);
                    next += 1;
                    next - 1
                }
            };
            grouped.push((group, src));
        }
        drop(by_url);
        grouped.sort_by_key(|(g, _)| *g);

        let mut list = SourceList {
            sources: Vec::with_capacity(grouped.len()),
            probes: Vec::with_capacity(group_url.len()),
            duplicates,
        };
        for (group, src) in grouped {
            if list.probes.len() <= group as usize {
                list.probes.push(ProbeTarget {
                    url: group_url[group as usize].clone(),
                    first: list.sources.len() as u32,
                    count: 0,
                });
            }
            list.probes[group as usize].count += 1;
            list.sources.push(Source { src, probe: group });
        }
        (list, problems)
    }
}

/// How a source without an explicit probe is probed.
fn kind_of(src: &str, origin: Option<&str>) -> Result<ProbeUrl, SourceError> {
    if has_http_scheme(src) {
        check_url(src)?;
        Ok(ProbeUrl::Source)
    } else if src.starts_with('/') {
        match origin {
            // The origin is checked; any path after it makes a URL.
            Some(_) => Ok(ProbeUrl::OriginPath),
            None => Err(SourceError::NeedsOrigin(src.to_owned())),
        }
    } else {
        Err(SourceError::NotPathOrUrl(src.to_owned()))
    }
}

/// An absolute http(s) URL, as the URL parser writes it.
pub fn check_url(candidate: &str) -> Result<String, SourceError> {
    let shown = || crate::redact::for_stdout(candidate);
    match Url::parse(candidate) {
        Ok(u) if is_http_with_host(&u) => Ok(u.into()),
        Ok(_) => Err(SourceError::NotHttp { shown: shown() }),
        Err(cause) => Err(SourceError::NotUrl {
            shown: shown(),
            cause,
        }),
    }
}

/// The URL for a path or absolute URL given in a watch (the canary).
pub fn resolve(src: &str, origin: Option<&str>) -> Result<String, SourceError> {
    match kind_of(src, origin)? {
        ProbeUrl::OriginPath => {
            let base = Url::parse(origin.unwrap_or_default())
                .map_err(|cause| SourceError::Origin { cause })?;
            Ok(join(&base, src).into())
        }
        _ => check_url(src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(origin: Option<&str>, items: &[(&str, Option<&str>)]) -> (SourceList, Vec<String>) {
        let mut b = Builder::new(origin);
        for (i, (src, probe)) in items.iter().enumerate() {
            b.add(&|| format!("images[{i}]"), src, *probe);
        }
        b.finish()
    }

    #[test]
    fn path_sources_probe_at_the_origin_and_remote_ones_at_themselves() {
        let (list, problems) = build(
            Some("https://e.com"),
            &[("/a.png", None), ("https://cdn.x/b.jpg?v=2", None)],
        );
        assert!(problems.is_empty());
        let urls: Vec<String> = list
            .probes
            .iter()
            .map(|p| list.probe_url(Some("https://e.com"), p).into_owned())
            .collect();
        assert_eq!(urls, ["https://e.com/a.png", "https://cdn.x/b.jpg?v=2"]);
    }

    #[test]
    fn an_implied_url_joins_an_explicit_probe_of_the_same_place() {
        let (list, _) = build(
            Some("https://e.com"),
            &[
                ("/x.png", None),
                ("/alias.png", Some("https://e.com/a.png")),
                ("/a.png", None),
                ("/y.png", None),
            ],
        );
        assert_eq!(list.probes.len(), 3);
        let shared = list.probes.iter().find(|p| p.count == 2).unwrap();
        let srcs: Vec<&str> = list.sources_of(shared).iter().map(|s| &*s.src).collect();
        assert_eq!(srcs, ["/alias.png", "/a.png"]);
        assert_eq!(
            shared.url,
            ProbeUrl::Explicit(Arc::from("https://e.com/a.png"))
        );
    }

    #[test]
    fn duplicates_are_kept_once_and_counted() {
        let (list, _) = build(Some("https://e.com"), &[("/a.png", None), ("/a.png", None)]);
        assert_eq!((list.sources.len(), list.duplicates), (1, 1));
    }

    #[test]
    fn bad_entries_are_named() {
        let (_, problems) = build(None, &[("/a.png", None), ("rel.png", None), ("", None)]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("images[0]: path-style source"));
        assert!(problems[1].contains("rel.png"));
        assert!(problems[2].contains("empty source"));
    }
}
