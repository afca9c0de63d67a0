//! Where the store lives, as `state:` (or `--state`) names it: a SQLite file
//! (a path, relative to the config's folder) or a PostgreSQL database (a
//! `postgres://` or `postgresql://` URL). `${NAME}` in a URL is replaced by
//! the environment variable NAME; the password, however it came, is
//! registered as a secret and never shown.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::shard::Shard;

/// The store named by `state:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A SQLite file.
    File(PathBuf),
    /// A PostgreSQL database, shared by every process (and every shard).
    Postgres(PgLocation),
}

/// A PostgreSQL URL, with what it needs kept apart from what it shows.
#[derive(Clone, PartialEq, Eq)]
pub struct PgLocation {
    /// The URL with `${NAME}`s replaced: a secret, never printed.
    url: String,
    /// The URL without its password, for messages.
    shown: String,
    /// The shard this process owns, if any: shards share the database and
    /// own (watch, shard) pairs.
    pub shard: Option<Shard>,
}

impl fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLocation")
            .field("url", &self.shown)
            .field("shard", &self.shard)
            .finish()
    }
}

impl PgLocation {
    /// The URL to connect with (password included): never print it.
    pub fn secret_url(&self) -> &str {
        &self.url
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl StateLocation {
    /// Reads `state:`: a URL, or a path taken relative to `base`.
    pub fn parse(value: &str, base: &Path) -> Result<StateLocation, String> {
        let lower = value.trim_start().to_ascii_lowercase();
        if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
            return Ok(StateLocation::File(base.join(value)));
        }
        let url = substitute_env(value)?;
        let parsed = url::Url::parse(&url)
            .map_err(|e| format!("{}: not a valid PostgreSQL URL: {e}", strip(value)))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("{}: a PostgreSQL URL needs a host", strip(value)));
        }
        if let Some(p) = parsed.password() {
            crate::redact::register(p);
            if let Ok(decoded) = percent_encoding::percent_decode_str(p).decode_utf8() {
                crate::redact::register(&decoded);
            }
        }
        let mut shown = parsed.clone();
        let _ = shown.set_password(None);
        Ok(StateLocation::Postgres(PgLocation {
            url,
            shown: shown.to_string(),
            shard: None,
        }))
    }

    /// The location a shard uses: its own SQLite file; the same database.
    pub fn for_shard(&self, shard: Shard) -> StateLocation {
        match self {
            StateLocation::File(p) => StateLocation::File(shard.state_path(p)),
            StateLocation::Postgres(pg) => StateLocation::Postgres(PgLocation {
                shard: Some(shard),
                ..pg.clone()
            }),
        }
    }

    /// The SQLite file, if the store is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            StateLocation::File(p) => Some(p),
            StateLocation::Postgres(_) => None,
        }
    }
}

impl fmt::Display for StateLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateLocation::File(p) => write!(f, "{}", p.display()),
            StateLocation::Postgres(pg) => f.write_str(&pg.shown),
        }
    }
}

impl From<PathBuf> for StateLocation {
    fn from(p: PathBuf) -> Self {
        StateLocation::File(p)
    }
}

impl From<&PathBuf> for StateLocation {
    fn from(p: &PathBuf) -> Self {
        StateLocation::File(p.clone())
    }
}

impl From<&Path> for StateLocation {
    fn from(p: &Path) -> Self {
        StateLocation::File(p.to_owned())
    }
}

impl From<&StateLocation> for StateLocation {
    fn from(l: &StateLocation) -> Self {
        l.clone()
    }
}

/// `value` with its password (if any) removed, for a message about it.
fn strip(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => crate::redact::owned(value.to_owned()),
    }
}

/// Replaces each `${NAME}` with the environment variable NAME (registered
/// as a secret); an unset one is an error naming it.
fn substitute_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("an unclosed ${ in the URL".into());
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("${{{name}}} is not an environment variable name"));
        }
        match std::env::var(name) {
            Ok(v) => {
                crate::redact::register(&v);
                // Percent-encoded, so a password with `@` or `/` stays a password.
                out.extend(percent_encoding::utf8_percent_encode(
                    &v,
                    percent_encoding::NON_ALPHANUMERIC,
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the environment variable {name} (${{{name}}} in the URL) is not set"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_a_file_relative_to_the_base() {
        assert_eq!(
            StateLocation::parse("s.db", Path::new("/etc/ow")).unwrap(),
            StateLocation::File(PathBuf::from("/etc/ow/s.db"))
        );
    }

    #[test]
    fn a_url_is_postgres_and_shows_no_password() {
        let l = StateLocation::parse(
            "postgres://ow:hunter2secret@db.example:5432/ow?sslmode=require",
            Path::new("."),
        )
        .unwrap();
        let shown = l.to_string();
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(shown.contains("db.example:5432/ow"), "{shown}");
        assert!(!format!("{l:?}").contains("hunter2secret"));
        assert!(crate::redact::text("x hunter2secret y").contains(crate::redact::MASK));
    }

    #[test]
    fn an_env_password_is_substituted_and_an_unset_one_named() {
        // Set by cargo for every test run (and too short to be masked).
        let l = StateLocation::parse(
            "postgresql://ow:${CARGO_PKG_VERSION_MAJOR}@127.0.0.1/ow",
            Path::new("."),
        )
        .unwrap();
        let StateLocation::Postgres(pg) = &l else {
            panic!("{l:?}")
        };
        let url = url::Url::parse(pg.secret_url()).unwrap();
        assert_eq!(url.password(), Some(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(l.to_string(), "postgresql://ow@127.0.0.1/ow");
        let e = StateLocation::parse("postgres://ow:${OW_NEVER_SET_9}@h/ow", Path::new("."))
            .unwrap_err();
        assert!(e.contains("OW_NEVER_SET_9"), "{e}");
    }

    #[test]
    fn shards_share_the_database_and_split_files() {
        let shard = Shard::new(1, 3).unwrap();
        let pg = StateLocation::parse("postgres://h/ow", Path::new(".")).unwrap();
        match pg.for_shard(shard) {
            StateLocation::Postgres(p) => {
                assert_eq!(p.shard, Some(shard));
                assert_eq!(p.shown(), "postgres://h/ow");
            }
            other => panic!("{other:?}"),
        }
        let file = StateLocation::File(PathBuf::from("/s/state.db")).for_shard(shard);
        assert_eq!(file.file(), Some(Path::new("/s/state.shard-1-of-3.db")));
    }
}
