//! Reads one HTML page with `lol_html`, a streaming tokenizer that lexes
//! in full only the tags a selector names (no tree, no regular
//! expressions): the image optimizer URLs in `src`, `srcset` and
//! `imagesrcset` of `img`, `source` and `link` give sources, and `<a href>`
//! gives the links to follow. Markup inside scripts, styles and other raw
//! text is not read; inside `<noscript>` it is (a page without scripts
//! shows it, and older `next/image` puts its only real URLs there).
//! `lol_html` hands attribute values over as written, so their HTML
//! entities are decoded here (the HTML standard's rules for attributes);
//! a `url` parameter is then percent-decoded exactly once.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::LazyLock;

use foldhash::{HashSet, HashSetExt};
use lol_html::errors::RewritingError;
use lol_html::html_content::{Element, SourceLocation, TextChunk};
use lol_html::{
    ElementContentHandlers, HandlerResult, HtmlRewriter, MemorySettings, Selector, Settings,
};
use url::Url;

use super::Site;
use crate::sources::{is_http_with_host, within_limit};

/// The paths of Vercel's image optimizer (Next.js and other frameworks).
const OPTIMIZER_PATHS: [&str; 2] = ["/_next/image", "/_vercel/image"];

/// The memory the tokenizer may take for one page, beyond the page itself:
/// a page is handed over whole, so this bounds what it buffers of a tag
/// left open at the end, and its stack of open elements.
pub const MAX_PARSER_MEMORY: usize = 4 * 1024 * 1024;

/// What one page holds.
#[derive(Debug, Default, PartialEq)]
pub struct PageScan {
    /// Sources, element by element in order of appearance. A `url`
    /// parameter written the same way again (the same image in `src` and
    /// in each `srcset` candidate) gives nothing more; one source written
    /// two ways (`%2Fa.png`, `/a.png`) may still come twice.
    pub sources: Vec<String>,
    /// Same-site pages it links to, without fragments (repeats included).
    pub links: Vec<Url>,
}

/// A page the tokenizer gave up on. It names the page.
#[derive(Debug, thiserror::Error)]
#[error("{url}: page not read: {cause}")]
pub struct ScanError {
    pub url: Url,
    pub cause: String,
}

/// The selectors, parsed once per process rather than once per page. By
/// tag name only (`a`, not `a[href]`): the handlers look for `href`
/// themselves, and a selector on an attribute costs the tokenizer more.
struct Selectors {
    images: Selector,
    links: Selector,
    base: Selector,
    noscript: Selector,
}

static SELECTORS: LazyLock<Selectors> = LazyLock::new(|| {
    let parse = |s: &str| s.parse::<Selector>().expect("a valid selector");
    Selectors {
        images: parse("img, source, link"),
        links: parse("a"),
        base: parse("base"),
        noscript: parse("noscript"),
    }
});

/// Scans `html`, served at `page`. `links` says whether `<a href>` is
/// collected at all. Bytes that are not UTF-8 read as U+FFFD.
pub fn scan(html: &[u8], page: &Url, site: &Site, links: bool) -> Result<PageScan, ScanError> {
    let state = RefCell::new(State {
        seen: HashSet::with_capacity(32),
        base: page.clone(),
        base_is_ours: site.is_ours(page),
        site,
        want_links: links,
        noscript: String::new(),
        out: PageScan::default(),
    });
    tokenize(html, &state, true).map_err(|e| ScanError {
        url: page.clone(),
        cause: match e {
            RewritingError::MemoryLimitExceeded(_) => {
                format!("over the HTML tokenizer's memory limit ({MAX_PARSER_MEMORY} bytes)")
            }
            other => other.to_string(),
        },
    })?;
    Ok(state.into_inner().out)
}

/// Runs the tokenizer over `html`, the handlers writing to `state`.
/// `noscript` says whether the content of `<noscript>` is read as markup
/// (once: not inside itself).
fn tokenize(html: &[u8], state: &RefCell<State<'_>>, noscript: bool) -> Result<(), RewritingError> {
    let input = &Input {
        bytes: html,
        text: std::str::from_utf8(html).ok(),
    };
    let selectors = &*SELECTORS;
    let mut settings = Settings::new()
        // Where markup is ambiguous without a tree, read on rather than stop.
        .with_strict(false)
        .with_memory_settings(
            MemorySettings::new().with_max_allowed_memory_usage(MAX_PARSER_MEMORY),
        )
        .append_element_content_handler((
            Cow::Borrowed(&selectors.images),
            ElementContentHandlers::default().element(
                |el: &mut Element<'_, '_>| -> HandlerResult {
                    state.borrow_mut().image_element(el, input);
                    Ok(())
                },
            ),
        ))
        .append_element_content_handler((
            Cow::Borrowed(&selectors.base),
            ElementContentHandlers::default().element(
                |el: &mut Element<'_, '_>| -> HandlerResult {
                    state.borrow_mut().base_element(el, input);
                    Ok(())
                },
            ),
        ));
    if state.borrow().want_links {
        settings = settings.append_element_content_handler((
            Cow::Borrowed(&selectors.links),
            ElementContentHandlers::default().element(
                |el: &mut Element<'_, '_>| -> HandlerResult {
                    state.borrow_mut().link_element(el, input);
                    Ok(())
                },
            ),
        ));
    }
    if noscript {
        // Raw text to the tokenizer (as in a browser running scripts): read
        // it again, as markup, once it is whole.
        settings = settings.append_element_content_handler((
            Cow::Borrowed(&selectors.noscript),
            ElementContentHandlers::default().text(|text: &mut TextChunk<'_>| -> HandlerResult {
                let inner = {
                    let mut s = state.borrow_mut();
                    s.noscript.push_str(text.as_str());
                    if !text.last_in_text_node() {
                        return Ok(());
                    }
                    std::mem::take(&mut s.noscript)
                };
                tokenize(inner.as_bytes(), state, false)?;
                Ok(())
            }),
        ));
    }
    // Nothing is rewritten: the output goes nowhere.
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    rewriter.write(html)?;
    rewriter.end()
}

struct State<'a> {
    /// What relative URLs are joined onto: the page, or its `<base href>`.
    base: Url,
    /// Whether `base` is on the site or the origin (a path-absolute
    /// optimizer URL is then ours without joining it).
    base_is_ours: bool,
    site: &'a Site,
    want_links: bool,
    /// A `<noscript>`'s text as it comes in.
    noscript: String,
    /// The `url` parameters met so far, as written: a repeat is not decoded
    /// and checked again.
    seen: HashSet<String>,
    out: PageScan,
}

impl State<'_> {
    fn image_element(&mut self, el: &Element<'_, '_>, input: &Input<'_>) {
        let [src, href, srcset, imagesrcset] =
            attributes(el, input, ["src", "href", "srcset", "imagesrcset"]);
        for value in [src, href].into_iter().flatten() {
            self.candidate(&decode(&value));
        }
        for value in [srcset, imagesrcset].into_iter().flatten() {
            for url in srcset_urls(&decode(&value)) {
                self.candidate(url);
            }
        }
    }

    fn link_element(&mut self, el: &Element<'_, '_>, input: &Input<'_>) {
        if let [Some(href)] = attributes(el, input, ["href"])
            && let Ok(mut url) = self.base.join(decode(&href).trim())
            && self.site.is_site(&url)
        {
            url.set_fragment(None);
            self.out.links.push(url);
        }
    }

    fn base_element(&mut self, el: &Element<'_, '_>, input: &Input<'_>) {
        if let [Some(href)] = attributes(el, input, ["href"])
            && let Ok(url) = self.base.join(decode(&href).trim())
        {
            self.base_is_ours = self.site.is_ours(&url);
            self.base = url;
        }
    }

    fn candidate(&mut self, url: &str) {
        let Some(written) = url_parameter_of(url, &self.base, self.base_is_ours, self.site) else {
            return;
        };
        if self.seen.contains(&*written) {
            return;
        }
        if let Some(src) = source_from(&written) {
            self.out.sources.push(src);
        }
        self.seen.insert(written.into_owned());
    }
}

/// The document the tokenizer reads, and the same as text when it is all
/// UTF-8 (checked once, not value by value).
struct Input<'h> {
    bytes: &'h [u8],
    text: Option<&'h str>,
}

impl<'h> Input<'h> {
    /// The text at `location`, bytes that are not UTF-8 as U+FFFD.
    fn text(&self, location: SourceLocation) -> Option<Cow<'h, str>> {
        let range = location.bytes();
        match self.text {
            Some(text) => text.get(range).map(Cow::Borrowed),
            None => self.bytes.get(range).map(String::from_utf8_lossy),
        }
    }
}

/// The values of `el`'s attributes `names` (lower case; written in any
/// case), as written, their entities not decoded; the first of a name
/// written twice, as a browser keeps it. The values are read from the page
/// as handed to the tokenizer, at the positions it reports:
/// `Element::get_attribute` would allocate the name and the value, and
/// read every attribute of the tag again, on each call (a third of a
/// page's parsing).
fn attributes<'h, const N: usize>(
    el: &Element<'_, '_>,
    input: &Input<'h>,
    names: [&str; N],
) -> [Option<Cow<'h, str>>; N] {
    let mut values = [const { None }; N];
    for a in el.attributes() {
        let written = a
            .name_source_location()
            .and_then(|at| input.bytes.get(at.bytes()));
        let named = |name: &str| match written {
            Some(written) => written.eq_ignore_ascii_case(name.as_bytes()),
            // No position to read from: ask the tokenizer.
            None => a.name() == name,
        };
        let Some(k) = names.iter().position(|name| named(name)) else {
            continue;
        };
        if values[k].is_none() {
            values[k] = Some(match (written, a.value_source_location()) {
                (Some(_), Some(at)) => input.text(at).unwrap_or_else(|| Cow::Owned(a.value())),
                // Written without a value: `<img src>`.
                (Some(_), None) => Cow::Borrowed(""),
                (None, _) => Cow::Owned(a.value()),
            });
        }
    }
    values
}

/// An attribute value with its character references decoded, as the HTML
/// tokenizer decodes them in attributes (`&amp;`, `&#38;`, and the legacy
/// named ones without `;` unless a letter, digit or `=` follows).
fn decode(value: &str) -> Cow<'_, str> {
    // `&amp;` alone (what frameworks write between query parameters) is
    // the common case: made `&` here, without the entity table.
    let Some(mut at) = memchr::memchr(b'&', value.as_bytes()) else {
        return Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    loop {
        out.push_str(&rest[..at]);
        let Some(after) = rest[at..].strip_prefix("&amp;") else {
            return htmlize::unescape_attribute(value);
        };
        out.push('&');
        rest = after;
        match memchr::memchr(b'&', rest.as_bytes()) {
            Some(next) => at = next,
            None => {
                out.push_str(rest);
                return Cow::Owned(out);
            }
        }
    }
}

/// The source an image optimizer URL carries: its `url` parameter,
/// percent-decoded once (as the optimizer reads it). `None` for any other
/// URL, an optimizer off the site, or a `url` the optimizer would refuse.
pub fn optimizer_source(candidate: &str, base: &Url, site: &Site) -> Option<String> {
    source_of(candidate, base, site.is_ours(base), site)
}

/// [`optimizer_source`], told whether `base` is ours.
fn source_of(candidate: &str, base: &Url, base_is_ours: bool, site: &Site) -> Option<String> {
    source_from(&url_parameter_of(candidate, base, base_is_ours, site)?)
}

/// The `url` parameter of an image optimizer URL on the site, as written
/// (not yet decoded). `None` for any other URL or one without it.
fn url_parameter_of<'c>(
    candidate: &'c str,
    base: &Url,
    base_is_ours: bool,
    site: &Site,
) -> Option<Cow<'c, str>> {
    let candidate = candidate.trim();
    if base_is_ours && let Some(query) = plain_optimizer_query(candidate) {
        return written_url_parameter(query).map(Cow::Borrowed);
    }
    // Cheap test first: most `src` attributes are not the optimizer.
    if !OPTIMIZER_PATHS.iter().any(|p| candidate.contains(p)) {
        return None;
    }
    let url = base.join(candidate).ok()?;
    if !OPTIMIZER_PATHS.contains(&url.path()) || !site.is_ours(&url) {
        return None;
    }
    written_url_parameter(url.query()?).map(|p| Cow::Owned(p.to_owned()))
}

/// The source a `url` parameter, as written, names: decoded once, and
/// `None` if the optimizer would refuse it.
fn source_from(written: &str) -> Option<String> {
    let src = form_decode(written);
    let usable = if src.starts_with('/') {
        !src.starts_with("//")
    } else {
        Url::parse(&src).is_ok_and(|u| is_http_with_host(&u))
    };
    (usable && within_limit(&src)).then(|| src.into_owned())
}

/// The value of the first `url` parameter of a query as written (for
/// [`form_decode`]): the parameter `form_urlencoded::parse` would find
/// first, without decoding any other.
fn written_url_parameter(query: &str) -> Option<&str> {
    // What frameworks write: `url` first.
    if let Some(value) = query.strip_prefix("url=") {
        return Some(memchr::memchr(b'&', value.as_bytes()).map_or(value, |end| &value[..end]));
    }
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let named_url = key == "url" || (key.contains(['%', '+']) && form_decode(key) == "url");
        named_url.then_some(value)
    })
}

/// One name or value of a query, form-decoded as `form_urlencoded` does
/// (`+` is a space, `%` and two hex digits a byte, then UTF-8 with U+FFFD),
/// in one pass into one buffer of the right size. By hand because
/// `form_urlencoded` makes three passes and grows its buffer a byte at a
/// time: a fifth of a page's parsing (a unit test and a property test hold
/// the two to the same answers).
fn form_decode(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let Some(first) = b.iter().position(|&c| c == b'%' || c == b'+') else {
        return Cow::Borrowed(s);
    };
    let hex = |i: usize| b.get(i).and_then(|&c| (c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..first]);
    let mut i = first;
    while i < b.len() {
        let c = b[i];
        if c == b'+' {
            out.push(b' ');
        } else if c == b'%'
            && let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2))
        {
            out.push((high * 16 + low) as u8);
            i += 2;
        } else {
            out.push(c);
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(text) => Cow::Owned(text),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// The query of a path-absolute optimizer URL written plainly (what
/// frameworks write: `/_next/image?url=..`), read without building a
/// [`Url`]: the same bytes the URL parser would give `form_urlencoded`,
/// up to percent-encoding that the decoding undoes. `None` when the
/// parser might change it (control characters, which it strips, or a
/// path it would normalize), for the caller to join it in full.
fn plain_optimizer_query(candidate: &str) -> Option<&str> {
    let rest = OPTIMIZER_PATHS
        .iter()
        .find_map(|p| candidate.strip_prefix(p)?.strip_prefix('?'))?;
    // Without an early exit, so that the compiler can check many bytes at once.
    let control = rest.bytes().fold(false, |seen, b| seen | (b < 0x20));
    if control {
        return None;
    }
    Some(memchr::memchr(b'#', rest.as_bytes()).map_or(rest, |end| &rest[..end]))
}

/// The URLs of a `srcset` (image candidate strings), without their
/// descriptors, by the HTML standard's parsing rules: a URL runs to the
/// next whitespace, and may itself hold commas.
pub fn srcset_urls(srcset: &str) -> impl Iterator<Item = &str> {
    // Every delimiter is ASCII, so byte positions are char boundaries.
    let b = srcset.as_bytes();
    let space = |i: usize| b[i].is_ascii_whitespace();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() && (space(i) || b[i] == b',') {
            i += 1;
        }
        if i == b.len() {
            return None;
        }
        let start = i;
        while i < b.len() && !space(i) {
            i += 1;
        }
        let url = &srcset[start..i];
        if url.ends_with(',') {
            // No descriptors: the comma ends the candidate.
            return Some(url.trim_end_matches(','));
        }
        // Skip the descriptors up to the next comma outside parentheses.
        let mut depth = 0usize;
        while i < b.len() {
            i += 1;
            match b[i - 1] {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => break,
                _ => {}
            }
        }
        Some(url)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site::new(
            &Url::parse("https://www.example.com/").unwrap(),
            Some("https://app.vercel.app"),
        )
    }

    fn page() -> Url {
        Url::parse("https://www.example.com/blog/post").unwrap()
    }

    fn read(html: &str, links: bool) -> PageScan {
        scan(html.as_bytes(), &page(), &site(), links).expect("a page within the limits")
    }

    fn sources(html: &str) -> Vec<String> {
        read(html, true).sources
    }

    #[test]
    fn entities_are_decoded_before_the_url_parameter_is_percent_decoded_once() {
        let html = r#"<img src="/_next/image?url=%2Fimages%2Fa%20b.png&amp;w=640&amp;q=75">
            <img src="/_next/image?w=64&amp;url=%2Fimages%2F100%2520off.png">
            <img src="/_next/image?url=https%3A%2F%2Fcdn.example.net%2Fx.jpg%3Fv%3D2%26s%3Dbig&amp;w=8">"#;
        assert_eq!(
            sources(html),
            [
                "/images/a b.png",
                "/images/100%20off.png",
                "https://cdn.example.net/x.jpg?v=2&s=big"
            ]
        );
    }

    /// Vercel's limit counts characters: a 3,000-character CJK path (9,001
    /// bytes) behind the optimizer is a source; 8,193 characters are not.
    #[test]
    fn the_source_limit_counts_characters_not_bytes() {
        let img = |chars: usize| {
            let path = format!("/{}", "画".repeat(chars - 1));
            let encoded: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
            (
                path,
                format!(r#"<img src="/_next/image?url={encoded}&amp;w=64">"#),
            )
        };
        let (path, html) = img(3000);
        assert_eq!(sources(&html), [path]);
        let (path, html) = img(crate::sources::MAX_SOURCE_LEN);
        assert_eq!(sources(&html), [path]);
        let (_, html) = img(crate::sources::MAX_SOURCE_LEN + 1);
        assert!(sources(&html).is_empty());
    }

    #[test]
    fn a_numeric_entity_in_the_attribute_is_decoded_by_the_tokenizer() {
        let html = r#"<img src="/_next/image?url=%2Fa.png&#38;w=1">"#;
        assert_eq!(sources(html), ["/a.png"]);
    }

    #[test]
    fn srcset_candidates_with_descriptors_each_give_a_source() {
        let html = r#"<picture><source srcSet="/_next/image?url=%2Fa.png&amp;w=256 256w, /_next/image?url=%2Fb.png&amp;w=384 384w"><img srcset="/_vercel/image?url=%2Fc.png&amp;w=1 1x,/_vercel/image?url=%2Fd.png&amp;w=2 2x" sizes="(max-width: 768px) 100vw, 33vw"></picture>
            <link rel="preload" as="image" imageSrcSet="/_next/image?url=%2Fe.png&amp;w=828 1x">"#;
        assert_eq!(
            sources(html),
            ["/a.png", "/b.png", "/c.png", "/d.png", "/e.png"]
        );
    }

    #[test]
    fn srcset_urls_may_hold_commas_and_descriptors_may_be_absent() {
        assert_eq!(
            srcset_urls(" a.png 1x, b,c.png 2x ,d.png, e.png (x, y) 3w, f,g.png")
                .collect::<Vec<_>>(),
            ["a.png", "b,c.png", "d.png", "e.png", "f,g.png"]
        );
        assert_eq!(srcset_urls(" , ").next(), None);
    }

    #[test]
    fn relative_and_absolute_optimizer_urls_on_the_site_or_origin_count_others_do_not() {
        let html = r#"<img src="../_next/image?url=%2Frel.png&amp;w=1">
            <img src="https://www.example.com/_next/image?url=%2Fabs.png&amp;w=1">
            <img src="https://app.vercel.app/_next/image?url=%2Forigin.png&amp;w=1">
            <img src="https://other.example.org/_next/image?url=%2Foff.png&amp;w=1">
            <img src="http://www.example.com/_next/image?url=%2Fhttp.png&amp;w=1">
            <img src="/images/plain.png">
            <img src="/_next/image/extra?url=%2Fnot.png">
            <img src="/_next/image?w=1">
            <img src="/_next/image?url=%2F%2Fprotocol-relative.png">
            <img src="/_next/image?url=javascript%3Aalert(1)">"#;
        assert_eq!(sources(html), ["/rel.png", "/abs.png", "/origin.png"]);
    }

    #[test]
    fn markup_inside_scripts_and_other_attributes_is_not_read() {
        let html = r#"<script>document.write('<img src="/_next/image?url=%2Fscript.png">')</script>
            <div data-src="/_next/image?url=%2Fdata.png"></div>
            <a href="/_next/image?url=%2Fanchor.png">x</a>
            <img src="/_next/image?url=%2Freal.png">"#;
        let scan = read(html, true);
        assert_eq!(scan.sources, ["/real.png"]);
    }

    #[test]
    fn links_stay_on_the_site_and_lose_their_fragment() {
        let html = r##"<base href="/docs/"><a href="intro#top">1</a><a href="https://www.example.com/b">2</a>
            <a href="https://elsewhere.com/c">3</a><a href="mailto:x@example.com">4</a>
            <a href="https://app.vercel.app/d">origin, not the site</a>"##;
        let links: Vec<String> = read(html, true).links.iter().map(Url::to_string).collect();
        assert_eq!(
            links,
            [
                "https://www.example.com/docs/intro",
                "https://www.example.com/b"
            ]
        );
        assert!(read(html, false).links.is_empty());
    }

    #[test]
    fn legacy_entities_are_decoded_as_in_an_attribute() {
        // A legacy name without `;` before a letter, digit or `=` is not a
        // reference in an attribute (`&ampurl`, `&copy=`): it stays text.
        let html = r#"<img src="/_next/image?w=1&ampurl=%2Fnot.png&amp;url=%2Fa.png">
            <img src="/_next/image?copy=1&copy=2&url=%2Fb.png">
            <img src="/_next/image?url=%2F&lt;c&gt;.png">"#;
        assert_eq!(sources(html), ["/a.png", "/b.png", "/<c>.png"]);
    }

    #[test]
    fn noscript_content_is_read_as_markup_once() {
        // Older `next/image` puts its only real URLs inside `<noscript>`.
        let html = r#"<img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7">
            <noscript><img srcSet="/_next/image?url=%2Fns.png&amp;w=640 1x" src="/_next/image?url=%2Fns2.png&amp;w=640"/><a href="/from-noscript">x</a></noscript>
            <script>'<noscript><img src="/_next/image?url=%2Fscript.png"></noscript>'</script>
            <img src="/_next/image?url=%2Fafter.png">"#;
        let scan = read(html, true);
        assert_eq!(scan.sources, ["/ns2.png", "/ns.png", "/after.png"]);
        assert_eq!(
            scan.links.iter().map(Url::as_str).collect::<Vec<_>>(),
            ["https://www.example.com/from-noscript"]
        );
    }

    #[test]
    fn tag_and_attribute_names_are_read_in_any_case() {
        let html = r#"<IMG SRC="/_next/image?url=%2Fa.png"><Source SrcSet="/_next/image?url=%2Fb.png 1x">
            <LINK rel="preload" as="image" ImageSrcSet="/_next/image?url=%2Fc.png 1x"><A HREF="/d">d</A>"#;
        let scan = read(html, true);
        assert_eq!(scan.sources, ["/a.png", "/b.png", "/c.png"]);
        assert_eq!(
            scan.links.iter().map(Url::as_str).collect::<Vec<_>>(),
            ["https://www.example.com/d"]
        );
    }

    #[test]
    fn an_optimizer_url_is_read_the_same_with_or_without_building_a_url() {
        let base = page();
        let site = site();
        let joined = |c: &str| source_of(c, &base, false, &site);
        for candidate in [
            "/_next/image?url=%2Fa%20b.png&w=1",
            "/_next/image?url=/raw space/ü.png&w=1#frag",
            "/_vercel/image?w=1&url=https%3A%2F%2Fcdn.example.net%2Fx.jpg%3Fv%3D2",
            "/_next/image?url=%2Fa+b%27c%22.png",
            "/_next/image?url=%zz.png",
            "/_next/image?url=",
            "/_next/image?url=%2F%2Fx.png",
            "/_next/image?url=/a\\b.png",
            "/_next/image?url=%2Fa.png\t",
            "/_next/image?url=/a\n.png",
            "/_next/image?%75rl=%2Fencoded-key.png",
            "/_next/image?u+rl=%2Fnot.png&url=%2Fplus.png&url=%2Fsecond.png",
            "/_next/image?&&url&url=%2Fempty-first.png",
        ] {
            assert_eq!(
                optimizer_source(candidate, &base, &site),
                joined(candidate),
                "{candidate:?}"
            );
        }
        // With a `<base>` off the site, a path-absolute URL is off it too.
        let html = r#"<base href="https://elsewhere.com/"><img src="/_next/image?url=%2Fa.png">"#;
        assert!(sources(html).is_empty());
    }

    #[test]
    fn the_url_parameter_is_the_one_form_urlencoded_finds_first() {
        for query in [
            "url=%2Fa.png&w=1",
            "w=1&url=%2Fa+b.png&url=%2Fsecond.png",
            "%75rl=%2Fencoded-key.png",
            "u+rl=x&url=%2Fplus.png",
            "&&url&url=%2Fempty-first.png",
            "urlx=1&xurl=2",
            "url==%3D.png",
            "",
        ] {
            let expected = url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "url")
                .map(|(_, v)| v);
            assert_eq!(
                written_url_parameter(query).map(form_decode),
                expected,
                "{query:?}"
            );
        }
    }

    #[test]
    fn a_parameter_decodes_as_form_urlencoded_decodes_it() {
        for value in [
            "plain.png",
            "%2Fa+b.png",
            "%2B+%2b",
            "%zz%2",
            "a%",
            "%FF%FEx",
            "%E7%94%BB.png",
            "\u{753b}+\u{753b}",
            "",
        ] {
            let pair = format!("x={value}");
            let (_, expected) = url::form_urlencoded::parse(pair.as_bytes()).next().unwrap();
            assert_eq!(form_decode(value), expected, "{value:?}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any value as written (a `url` parameter holds no `&`), with
            /// escapes valid, broken, or of bytes that are not UTF-8.
            #[test]
            fn a_parameter_decodes_as_form_urlencoded_decodes_it(
                value in "([a-fA-Z0-9+=/. \u{fc}\u{753b}-]|%[0-9a-fA-F]{0,2}|%[89a-fA-F][0-9a-fA-F]){0,24}",
            ) {
                let pair = format!("x={value}");
                let (_, expected) = url::form_urlencoded::parse(pair.as_bytes()).next().unwrap();
                prop_assert_eq!(form_decode(&value), expected);
            }
        }
    }

    #[test]
    fn an_attribute_written_twice_is_read_once_the_first_and_one_without_value_is_empty() {
        let html = r#"<img src="/_next/image?url=%2Fa.png" SRC="/_next/image?url=%2Fb.png">
            <img src srcset="/_next/image?url=%2Fc.png 1x" srcset="/_next/image?url=%2Fd.png 1x">
            <link rel=preload href=/_next/image?url=%2Fe.png&amp;w=1 href="/_next/image?url=%2Ff.png">"#;
        assert_eq!(sources(html), ["/a.png", "/c.png", "/e.png"]);
    }

    #[test]
    fn entities_decode_the_same_by_the_short_way() {
        for value in [
            "a&amp;b&amp;c",
            "a&amp;b&lt;c",
            "a&ampb",
            "&amp;",
            "&",
            "a&amp",
        ] {
            assert_eq!(
                decode(value),
                htmlize::unescape_attribute(value),
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_page_over_the_tokenizers_memory_limit_is_an_error_naming_it() {
        // A tag left open at the end is buffered whole.
        let mut html = String::from(r#"<img src="/_next/image?url=%2Fa.png"><img alt=""#);
        html.push_str(&"x".repeat(MAX_PARSER_MEMORY + 1));
        let err = scan(html.as_bytes(), &page(), &site(), true).unwrap_err();
        assert_eq!(err.url, page());
        let message = err.to_string();
        assert!(
            message.starts_with("https://www.example.com/blog/post: page not read: over the HTML tokenizer's memory limit"),
            "{message}"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_stop_the_page() {
        let mut html = b"<p>\xff\xfe</p><img src=\"/_next/image?url=%2Fa\xff.png\">".to_vec();
        html.extend_from_slice(br#"<img src="/_next/image?url=%2Fb.png">"#);
        let scan = scan(&html, &page(), &site(), true).unwrap();
        assert_eq!(scan.sources, ["/a\u{fffd}.png", "/b.png"]);
    }
}
