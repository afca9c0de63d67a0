//! Keeps secrets out of everything origin-watch prints. Secrets (the Vercel
//! token today; probe header values and database passwords as they come)
//! are registered once, when they are read, and [`text`] replaces each of
//! them, and the password of any URL (`user:pass@host` becomes
//! `user:***@host`), in a string bound for a log line, a report line, an
//! error or the summary. The log sink, the reporter and `main`'s error line
//! pass everything through it, so a secret echoed back by a server (an API
//! error body, a proxy page) is caught too.
//!
//! [`printable`] escapes control characters for stdout, as the JSON logs do.

use std::borrow::Cow;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets shorter than this are not registered: replacing every
/// occurrence of a two-letter string would garble the output and reveal
/// the secret by its gaps. (The token is far longer.)
pub const MIN_SECRET_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret: from now on [`text`] replaces it wherever it appears.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_owned());
        // Longest first, so a secret that contains another is masked whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `s` with every registered secret and every URL password replaced by
/// [`MASK`]. Borrows when there is nothing to hide (the common case).
pub fn text(s: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(s);
    {
        let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
        for secret in all.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
    }
    match url_passwords(&out) {
        Some(clean) => Cow::Owned(clean),
        None => out,
    }
}

/// Owned [`text`], for messages built once.
pub fn owned(s: String) -> String {
    match text(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(clean) => clean,
    }
}

/// Bytes through [`text`] when they are UTF-8 (log lines are).
pub fn bytes(b: &[u8]) -> Cow<'_, [u8]> {
    match std::str::from_utf8(b) {
        Ok(s) => match text(s) {
            Cow::Borrowed(_) => Cow::Borrowed(b),
            Cow::Owned(clean) => Cow::Owned(clean.into_bytes()),
        },
        Err(_) => Cow::Borrowed(b),
    }
}

/// Every `scheme://user:password@` in `s` with the password masked; `None`
/// when there is none.
fn url_passwords(s: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let mut done = 0; // bytes of `s` already copied to `out`
    let mut from = 0;
    while let Some(at) = s[from..].find("://") {
        let start = from + at + 3;
        // The authority ends at the first of these; `@` must come before it.
        let end = s[start..]
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`' | '\\')
                    || c.is_whitespace()
                    || c.is_control()
            })
            .map_or(s.len(), |e| start + e);
        let authority = &s[start..end];
        if let Some(at_sign) = authority.rfind('@')
            && let Some(colon) = authority[..at_sign].find(':')
            && &authority[colon + 1..at_sign] != MASK
        {
            let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
            o.push_str(&s[done..start + colon + 1]);
            o.push_str(MASK);
            done = start + at_sign;
        }
        from = end.max(start);
    }
    out.map(|mut o| {
        o.push_str(&s[done..]);
        o
    })
}

/// `s` with control characters escaped (`\n`, `\u{1b}`), for stdout: a
/// watch name or a source must not move the cursor or clear the screen.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`text`], then [`printable`]: a string for a person's terminal.
pub fn for_stdout(s: &str) -> String {
    printable(&text(s)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_and_the_rest_kept() {
        assert_eq!(
            text("get http://user:pa55@host:8/x?y=1 failed"),
            "get http://user:***@host:8/x?y=1 failed"
        );
        assert_eq!(text("https://host/a@b:c"), "https://host/a@b:c");
        assert_eq!(text("http://user@host/"), "http://user@host/");
        assert_eq!(
            text("\"http://a:b@h\" and postgres://u:p%40ss@db:5432/x"),
            "\"http://a:***@h\" and postgres://u:***@db:5432/x"
        );
        assert!(matches!(text("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn registered_secrets_are_masked_everywhere() {
        register("s3cr3t-value-for-redact-test");
        register("ab"); // too short to register
        assert_eq!(
            text("{\"echo\":\"Bearer s3cr3t-value-for-redact-test\"} ab"),
            "{\"echo\":\"Bearer ***\"} ab"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(printable("日本/画像.png"), "日本/画像.png");
    }
}
