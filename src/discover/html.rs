//! Reads one HTML page with html5ever's tokenizer (no tree, no regular
//! expressions): the image optimizer URLs in `src`, `srcset` and
//! `imagesrcset` of `img`, `source` and `link` give sources, and `<a href>`
//! gives the links to follow. Attribute values reach us with their HTML
//! entities decoded by the tokenizer; a `url` parameter is then
//! percent-decoded exactly once.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, StartTag, Tag, Token, TokenSink, TokenSinkResult, Tokenizer,
};
use url::Url;

use super::Site;
use crate::sources::{is_http_with_host, within_limit};

/// The paths of Vercel's image optimizer (Next.js and other frameworks).
const OPTIMIZER_PATHS: [&str; 2] = ["/_next/image", "/_vercel/image"];

/// What one page holds.
#[derive(Debug, Default, PartialEq)]
pub struct PageScan {
    /// Sources, in order of appearance (repeats included).
    pub sources: Vec<String>,
    /// Same-site pages it links to, without fragments (repeats included).
    pub links: Vec<Url>,
}

/// Scans `html`, served at `page`. `links` says whether `<a href>` is
/// collected at all.
pub fn scan(html: &str, page: &Url, site: &Site, links: bool) -> PageScan {
    let sink = Sink {
        state: RefCell::new(State {
            base: page.clone(),
            site,
            want_links: links,
            out: PageScan::default(),
        }),
    };
    let tokenizer = Tokenizer::new(sink, Default::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.state.into_inner().out
}

struct State<'a> {
    /// What relative URLs are joined onto: the page, or its `<base href>`.
    base: Url,
    site: &'a Site,
    want_links: bool,
    out: PageScan,
}

struct Sink<'a> {
    state: RefCell<State<'a>>,
}

impl TokenSink for Sink<'_> {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let Token::TagToken(tag) = token else {
            return TokenSinkResult::Continue;
        };
        if tag.kind != StartTag {
            return TokenSinkResult::Continue;
        }
        // Without a tree builder the tokenizer must be told where markup
        // stops: `<img>` inside a script's string is not an image.
        let name: &str = &tag.name;
        match name {
            "script" => return TokenSinkResult::RawData(RawKind::ScriptData),
            "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                return TokenSinkResult::RawData(RawKind::Rawtext);
            }
            "textarea" | "title" => return TokenSinkResult::RawData(RawKind::Rcdata),
            "plaintext" => return TokenSinkResult::Plaintext,
            _ => {}
        }
        self.state.borrow_mut().tag(name, &tag);
        TokenSinkResult::Continue
    }
}

impl State<'_> {
    fn tag(&mut self, name: &str, tag: &Tag) {
        match name {
            "img" | "source" | "link" => {
                for attr in &tag.attrs {
                    let value: &str = &attr.value;
                    match &*attr.name.local {
                        "src" | "href" => self.candidate(value),
                        "srcset" | "imagesrcset" => {
                            for url in srcset_urls(value) {
                                self.candidate(url);
                            }
                        }
                        _ => {}
                    }
                }
            }
            "a" if self.want_links => {
                if let Some(href) = attr(tag, "href")
                    && let Ok(mut url) = self.base.join(href.trim())
                    && self.site.is_site(&url)
                {
                    url.set_fragment(None);
                    self.out.links.push(url);
                }
            }
            "base" => {
                if let Some(href) = attr(tag, "href")
                    && let Ok(url) = self.base.join(href.trim())
                {
                    self.base = url;
                }
            }
            _ => {}
        }
    }

    fn candidate(&mut self, url: &str) {
        if let Some(src) = optimizer_source(url, &self.base, self.site) {
            self.out.sources.push(src);
        }
    }
}

fn attr<'t>(tag: &'t Tag, name: &str) -> Option<&'t str> {
    tag.attrs
        .iter()
        .find(|a| &*a.name.local == name)
        .map(|a| &*a.value)
}

/// The source an image optimizer URL carries: its `url` parameter,
/// percent-decoded once (as the optimizer reads it). `None` for any other
/// URL, an optimizer off the site, or a `url` the optimizer would refuse.
pub fn optimizer_source(candidate: &str, base: &Url, site: &Site) -> Option<String> {
    let candidate = candidate.trim();
    // Cheap test first: most `src` attributes are not the optimizer.
    if !OPTIMIZER_PATHS.iter().any(|p| candidate.contains(p)) {
        return None;
    }
    let url = base.join(candidate).ok()?;
    if !OPTIMIZER_PATHS.contains(&url.path()) || !site.is_ours(&url) {
        return None;
    }
    let (_, src) =
        url::form_urlencoded::parse(url.query()?.as_bytes()).find(|(k, _)| k == "url")?;
    let usable = if src.starts_with('/') {
        !src.starts_with("//")
    } else {
        Url::parse(&src).is_ok_and(|u| is_http_with_host(&u))
    };
    (usable && within_limit(&src)).then(|| src.into_owned())
}

/// The URLs of a `srcset` (image candidate strings), without their
/// descriptors, by the HTML standard's parsing rules: a URL runs to the
/// next whitespace, and may itself hold commas.
pub fn srcset_urls(srcset: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = srcset;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
        if rest.is_empty() {
            return out;
        }
        let end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let url = &rest[..end];
        rest = &rest[end..];
        if url.ends_with(',') {
            // No descriptors: the comma ends the candidate.
            out.push(url.trim_end_matches(','));
            continue;
        }
        out.push(url);
        // Skip the descriptors up to the next comma outside parentheses.
        let mut depth = 0usize;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    cut = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[cut..];
    }
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

    fn sources(html: &str) -> Vec<String> {
        scan(html, &page(), &site(), true).sources
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
            srcset_urls(" a.png 1x, b,c.png 2x ,d.png, e.png (x, y) 3w, f,g.png"),
            ["a.png", "b,c.png", "d.png", "e.png", "f,g.png"]
        );
        assert!(srcset_urls(" , ").is_empty());
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
        let scan = scan(html, &page(), &site(), true);
        assert_eq!(scan.sources, ["/real.png"]);
    }

    #[test]
    fn links_stay_on_the_site_and_lose_their_fragment() {
        let html = r##"<base href="/docs/"><a href="intro#top">1</a><a href="https://www.example.com/b">2</a>
            <a href="https://elsewhere.com/c">3</a><a href="mailto:x@example.com">4</a>
            <a href="https://app.vercel.app/d">origin, not the site</a>"##;
        let links: Vec<String> = scan(html, &page(), &site(), true)
            .links
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(
            links,
            [
                "https://www.example.com/docs/intro",
                "https://www.example.com/b"
            ]
        );
        assert!(scan(html, &page(), &site(), false).links.is_empty());
    }
}
