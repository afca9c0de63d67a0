//! The `discover:` block of a watch (and the keys of it that `defaults:` may
//! set): its raw serde mirror and the check that turns it into a
//! [`Discover`], the settings [`crate::discover`] runs on.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::sources::is_http_with_host;

/// `discover:` inside a watch, as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscover {
    pub site: Option<String>,
    pub sitemaps: Option<Vec<String>>,
    pub pages: Option<Vec<String>>,
    pub follow_links: Option<bool>,
    pub max_pages: Option<usize>,
    pub every: Option<String>,
    pub images_url: Option<String>,
}

/// `defaults.discover:`: the keys that make sense for every watch alike.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscoverDefaults {
    pub follow_links: Option<bool>,
    pub max_pages: Option<usize>,
    pub every: Option<String>,
}

/// A watch's checked discovery settings (the pages on `site`, every URL
/// joined onto it, the limits typed).
///
/// Only the checker makes one (it is part of a [`super::Watch`]). Its fields
/// are `pub(crate)` for the crate's discovery to read (no code outside
/// `config` writes them, and watches are shared behind `Arc`); code outside
/// the crate can neither build nor change one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discover {
    /// The public site: pages and optimizer URLs on it (same scheme, host
    /// and port) are read; nothing off it is.
    pub(crate) site: Url,
    /// Sitemaps or sitemap indexes, joined onto `site`.
    pub(crate) sitemaps: Vec<Url>,
    /// The pages reading starts from, joined onto `site` (all on it).
    pub(crate) pages: Vec<Url>,
    /// Also read same-site pages linked (`<a href>`) from pages read.
    pub(crate) follow_links: bool,
    /// Pages read per discovery, at most.
    pub(crate) max_pages: usize,
    /// Rediscover at most this often.
    pub(crate) every: Duration,
    /// A list of sources: text, one a line, or a JSON array of strings.
    pub(crate) images_url: Option<Url>,
}

pub(super) const DEFAULT_MAX_PAGES: usize = 1000;
pub(super) const DEFAULT_EVERY: Duration = Duration::from_secs(3600);

/// Checks a watch's `discover:` block against `defaults.discover:`. `origin`
/// is the watch's checked origin (the default `site`). Every problem names
/// its key under `label`.
pub(super) fn check(
    label: &str,
    defaults: Option<&RawDiscoverDefaults>,
    own: &RawDiscover,
    origin: Option<&str>,
) -> Result<Discover, Vec<String>> {
    let mut problems = Vec::new();
    let at = |key: &str| format!("{label}.discover.{key}");
    let default = defaults.cloned().unwrap_or_default();

    let site = match own.site.as_deref().or(origin) {
        None => {
            problems.push(format!(
                "{}: needed when the watch has no `origin`",
                at("site")
            ));
            None
        }
        Some(text) => match Url::parse(text) {
            Ok(u) if !is_http_with_host(&u) => {
                problems.push(format!("{}: {text:?} is not an http(s) URL", at("site")));
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                problems.push(format!(
                    "{}: {text:?} must not have a query or a fragment",
                    at("site")
                ));
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                problems.push(format!("{}: {text:?} is not a URL: {e}", at("site")));
                None
            }
        },
    };

    let mut join_all = |key: &str, list: &[String], on_site_only: bool| -> Vec<Url> {
        let Some(site) = &site else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match join(site, text) {
                Ok(u) if on_site_only && u.origin() != site.origin() => problems.push(format!(
                    "{}[{i}]: {text:?} is not on the site {}",
                    at(key),
                    site.origin().ascii_serialization()
                )),
                Ok(u) => out.push(u),
                Err(why) => problems.push(format!("{}[{i}]: {why}", at(key))),
            }
        }
        out
    };
    let sitemaps = join_all(
        "sitemaps",
        own.sitemaps.as_deref().unwrap_or_default(),
        false,
    );
    // With neither pages nor sitemaps given, reading starts at the home page.
    let pages = match (&own.pages, &own.sitemaps) {
        (None, None) => vec!["/".to_owned()],
        (pages, _) => pages.clone().unwrap_or_default(),
    };
    let pages = join_all("pages", &pages, true);

    let images_url = match (&own.images_url, &site) {
        (Some(text), Some(site)) => match join(site, text) {
            Ok(u) => Some(u),
            Err(why) => {
                problems.push(format!("{}: {why}", at("images_url")));
                None
            }
        },
        _ => None,
    };

    let (every_text, every_key) = match (&own.every, &default.every) {
        (Some(e), _) => (Some(e.clone()), at("every")),
        (None, Some(e)) => (Some(e.clone()), "defaults.discover.every".to_owned()),
        (None, None) => (None, String::new()),
    };
    let every = match every_text {
        None => DEFAULT_EVERY,
        Some(text) => match humantime::parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!(
                    "{every_key}: bad duration {text:?} ({e}); write e.g. 1h, 30m"
                ));
                DEFAULT_EVERY
            }
        },
    };

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Discover {
        site: site.expect("a missing site is a problem"),
        sitemaps,
        pages,
        follow_links: own.follow_links.or(default.follow_links).unwrap_or(true),
        max_pages: own
            .max_pages
            .or(default.max_pages)
            .unwrap_or(DEFAULT_MAX_PAGES),
        every,
        images_url,
    })
}

/// `text` as an http(s) URL: absolute, or a path joined onto `site`.
fn join(site: &Url, text: &str) -> Result<Url, String> {
    let joined = if text.starts_with('/') && !text.starts_with("//") {
        site.join(text)
    } else {
        Url::parse(text)
    };
    match joined {
        Ok(u) if is_http_with_host(&u) => Ok(u),
        Ok(_) => Err(format!("{text:?} is not an http(s) URL or a path")),
        Err(e) => Err(format!("{text:?} is not a URL or a path: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn watch(discover: &str) -> String {
        format!(
            "watches:\n  - name: s\n    project: p\n    origin: https://o.example.com\n    discover: {discover}\n"
        )
    }

    fn problems(yaml: &str) -> String {
        match Config::from_yaml(yaml) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_empty_block_reads_the_origins_home_page_with_the_defaults() {
        let c = Config::from_yaml(&watch("{}")).unwrap();
        let d = c.watches[0].discover.as_deref().unwrap();
        assert_eq!(d.site.as_str(), "https://o.example.com/");
        assert_eq!(d.pages, [Url::parse("https://o.example.com/").unwrap()]);
        assert!(d.sitemaps.is_empty());
        assert!(d.follow_links);
        assert_eq!((d.max_pages, d.every), (1000, Duration::from_secs(3600)));
        assert_eq!(d.images_url, None);
        assert!(c.watches[0].sources.is_empty());
    }

    #[test]
    fn keys_are_joined_onto_the_site_and_defaults_apply() {
        let c = Config::from_yaml(&format!(
            "defaults: {{ discover: {{ follow_links: false, max_pages: 7, every: 30m }} }}\n{}",
            watch(
                "{ site: 'https://www.example.com', sitemaps: [/sitemap.xml, 'https://cdn.example.com/s.xml.gz'], images_url: /list.txt, every: 2h }"
            )
        ))
        .unwrap();
        let d = c.watches[0].discover.as_deref().unwrap();
        let urls: Vec<&str> = d.sitemaps.iter().map(Url::as_str).collect();
        assert_eq!(
            urls,
            [
                "https://www.example.com/sitemap.xml",
                "https://cdn.example.com/s.xml.gz"
            ]
        );
        assert!(d.pages.is_empty(), "sitemaps given, so no default page");
        assert_eq!(
            d.images_url.as_ref().map(Url::as_str),
            Some("https://www.example.com/list.txt")
        );
        assert!(!d.follow_links);
        assert_eq!((d.max_pages, d.every), (7, Duration::from_secs(7200)));
    }

    #[test]
    fn bad_keys_are_named() {
        let e = problems(&watch("{ sitemap: [/s.xml] }"));
        assert!(e.contains("sitemap") && e.contains("line 5"), "{e}");
        let e = problems(&watch("{ site: 'https://e.com/?a=1' }"));
        assert!(
            e.contains("watches[0] (s).discover.site") && e.contains("query or a fragment"),
            "{e}"
        );
        let e = problems(&watch("{ site: 'https://e.com/#top' }"));
        assert!(e.contains("discover.site"), "{e}");
        let e = problems(&watch("{ site: 'ftp://e.com' }"));
        assert!(e.contains("discover.site"), "{e}");
        let e = problems(&watch("{ pages: [relative, 'https://elsewhere.com/'] }"));
        assert!(e.contains("discover.pages[0]"), "{e}");
        assert!(
            e.contains("discover.pages[1]") && e.contains("not on the site"),
            "{e}"
        );
        let e = problems(&watch("{ sitemaps: ['mailto:x@y.z'], images_url: ':' }"));
        assert!(e.contains("discover.sitemaps[0]"), "{e}");
        assert!(e.contains("discover.images_url"), "{e}");
        let e = problems(&watch("{ every: soon }"));
        assert!(e.contains("discover.every"), "{e}");
        let e = problems(&format!(
            "defaults: {{ discover: {{ every: soon, site: x }} }}\n{}",
            watch("{}")
        ));
        assert!(e.contains("site"), "{e}");
        let e = problems(
            "watches:\n  - name: s\n    project: p\n    images: [https://a.com/x.png]\n    discover: {}\n",
        );
        assert!(e.contains("discover.site: needed"), "{e}");
    }
}
