//! Reads one sitemap: a `<urlset>` (pages in `<loc>`, images in
//! `<image:loc>`) or a `<sitemapindex>` (more sitemaps in `<loc>`), plain or
//! gzip (told by its first bytes, not its name). Real sitemaps are not
//! always well-formed: a raw `&` (Next.js writes one in `image:loc`) is
//! taken as written, an unknown entity is kept as text, and after a syntax
//! error reading goes on where it can. What went wrong is returned, for the
//! caller to warn once per file.

use std::io::Read;

use quick_xml::Reader;
use quick_xml::events::Event;

/// The most bytes a sitemap may hold uncompressed (the protocol's limit).
pub const MAX_SITEMAP_BYTES: u64 = 50 * 1024 * 1024;

/// Syntax errors after which a file is given up.
const MAX_ERRORS: usize = 100;

/// What one sitemap file holds.
#[derive(Debug, Default, PartialEq)]
pub struct SitemapScan {
    /// `<sitemapindex>`: the sitemaps it lists.
    pub sitemaps: Vec<String>,
    /// `<urlset>`: the pages it lists.
    pub pages: Vec<String>,
    /// `<image:loc>` values.
    pub images: Vec<String>,
    /// Oddities read past (unknown entities): worth a warning, nothing lost.
    pub oddities: Vec<String>,
    /// Syntax errors: parts of the file may not have been read.
    pub errors: Vec<String>,
}

/// Why a body could not be read as a sitemap at all.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("gzip data is corrupt: {0}")]
    Gzip(String),
    #[error("over {MAX_SITEMAP_BYTES} bytes uncompressed")]
    TooLarge,
}

/// The body itself, or its gzip content when it starts with gzip's magic
/// bytes (whatever its name or `Content-Type` says).
pub fn decompress(body: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, BodyError> {
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(body.into());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(MAX_SITEMAP_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Gzip(e.to_string()))?;
    if out.len() as u64 > MAX_SITEMAP_BYTES {
        return Err(BodyError::TooLarge);
    }
    Ok(out.into())
}

#[derive(Clone, Copy, PartialEq)]
enum Within {
    /// `<url>` of a `<urlset>`.
    Url,
    /// `<sitemap>` of a `<sitemapindex>`.
    Sitemap,
    /// `<image:image>` inside a `<url>`.
    Image,
}

/// Parses a (decompressed) sitemap.
pub fn parse(xml: &[u8]) -> SitemapScan {
    let mut out = SitemapScan::default();
    let mut reader = Reader::from_reader(xml);
    let config = reader.config_mut();
    config.allow_dangling_amp = true;
    config.allow_unmatched_ends = true;
    config.check_end_names = false;
    config.check_comments = false;

    let mut within: Option<Within> = None;
    // The text of the `<loc>` being read, if one is open.
    let mut loc: Option<String> = None;
    let mut image_loc = false;
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                out.errors
                    .push(format!("at byte {}: {e}", reader.error_position()));
                if out.errors.len() >= MAX_ERRORS {
                    break;
                }
                continue;
            }
        };
        match event {
            Event::Eof => break,
            Event::Start(e) => match e.local_name().into_inner() {
                "url" => within = Some(Within::Url),
                "sitemap" => within = Some(Within::Sitemap),
                "image" if within == Some(Within::Url) => within = Some(Within::Image),
                "loc" => {
                    loc = Some(String::new());
                    image_loc = within == Some(Within::Image);
                }
                _ => {}
            },
            Event::End(e) => match e.local_name().into_inner() {
                "url" | "sitemap" => within = None,
                "image" if within == Some(Within::Image) => within = Some(Within::Url),
                "loc" => {
                    let Some(text) = loc.take() else { continue };
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    let text = text.to_owned();
                    match within {
                        Some(Within::Image) if image_loc => out.images.push(text),
                        Some(Within::Url) if !image_loc => out.pages.push(text),
                        Some(Within::Sitemap) => out.sitemaps.push(text),
                        _ => {}
                    }
                }
                _ => {}
            },
            Event::Text(t) => {
                if let Some(loc) = &mut loc {
                    // With dangling `&` allowed, a text event holds no
                    // reference: its bytes are the text.
                    loc.push_str(&t);
                }
            }
            Event::CData(t) => {
                if let Some(loc) = &mut loc {
                    loc.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                let Some(loc) = &mut loc else { continue };
                let name: &str = &r;
                match r.resolve_char_ref() {
                    Ok(Some(c)) => loc.push(c),
                    _ => match name {
                        "amp" => loc.push('&'),
                        "lt" => loc.push('<'),
                        "gt" => loc.push('>'),
                        "quot" => loc.push('"'),
                        "apos" => loc.push('\''),
                        other => {
                            out.oddities
                                .push(format!("unknown entity &{other}; kept as written"));
                            loc.push('&');
                            loc.push_str(other);
                            loc.push(';');
                        }
                    },
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlset_gives_pages_and_images_with_a_raw_ampersand_taken_as_written() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
<url><loc> https://e.com/ </loc>
<image:image><image:loc>https://e.com/a.png?x=1&amp;y=2</image:loc></image:image>
<image:image><image:loc>https://cdn.net/b.png?a=1&b=2</image:loc></image:image>
</url>
<url><loc><![CDATA[https://e.com/p?q=1&r=2]]></loc><lastmod>2026-01-01</lastmod></url>
</urlset>"#;
        let s = parse(xml);
        assert_eq!(s.pages, ["https://e.com/", "https://e.com/p?q=1&r=2"]);
        assert_eq!(
            s.images,
            [
                "https://e.com/a.png?x=1&y=2",
                "https://cdn.net/b.png?a=1&b=2"
            ]
        );
        assert!(s.sitemaps.is_empty());
        assert_eq!((s.oddities.len(), s.errors.len()), (0, 0), "{s:?}");
    }

    #[test]
    fn index_gives_sitemaps() {
        let xml = b"<sitemapindex><sitemap><loc>https://e.com/s1.xml</loc></sitemap>\
            <sitemap><loc>https://e.com/s2.xml.gz</loc><lastmod>x</lastmod></sitemap></sitemapindex>";
        let s = parse(xml);
        assert_eq!(
            s.sitemaps,
            ["https://e.com/s1.xml", "https://e.com/s2.xml.gz"]
        );
        assert!(s.pages.is_empty() && s.images.is_empty());
    }

    #[test]
    fn unknown_entities_are_kept_and_noted() {
        let s = parse(b"<urlset><url><loc>https://e.com/a&nbsp;b&#x41;</loc></url></urlset>");
        assert_eq!(s.pages, ["https://e.com/a&nbsp;bA"]);
        assert_eq!(s.oddities.len(), 1);
    }

    #[test]
    fn a_broken_file_yields_what_could_be_read_and_says_so() {
        let s = parse(
            b"<urlset><url><loc>https://e.com/1</loc></url><url><loc>https://e.com/2</loc></urk>\
              <url><loc>https://e.com/3</loc></url><url><loc>https://e.com/4</lo",
        );
        assert!(
            s.pages.starts_with(&["https://e.com/1".to_owned()]),
            "{s:?}"
        );
        assert!(s.pages.contains(&"https://e.com/3".to_owned()), "{s:?}");
        assert!(!s.errors.is_empty(), "{s:?}");
    }

    #[test]
    fn gzip_is_told_by_its_magic_bytes() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"<urlset/>").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(&*decompress(&gz).unwrap(), b"<urlset/>");
        assert_eq!(&*decompress(b"<urlset/>").unwrap(), b"<urlset/>");
        assert!(matches!(
            decompress(&gz[..gz.len() / 2]),
            Err(BodyError::Gzip(_))
        ));
    }
}
