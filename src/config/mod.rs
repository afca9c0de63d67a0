//! `watch.yaml`: [`RawConfig`] mirrors the file (serde, unknown keys denied,
//! in `raw`); `check` turns it into a [`Config`], which is what the rest of
//! the program sees. Once you hold a `Config` it is usable: cron parsed,
//! durations typed, URLs checked, sources checked against Vercel's limits,
//! aliases grouped.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::schedule::CronSchedule;
use crate::shard::Shard;
use crate::store::StateLocation;

pub use crate::files::{folder_of, read_text};
pub use crate::sources::{MAX_SOURCE_LEN, ProbeTarget, ProbeUrl, Source};

/// The largest `revalidationDeadlineSeconds` the API accepts (one year).
pub const MAX_DEADLINE_SECONDS: u64 = 31_536_000;

/// The config file is read up to this size; a larger one is refused.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;
/// An `images_file` is read up to this size (a million sources of a
/// hundred characters is a tenth of it).
pub const MAX_IMAGES_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Why a configuration could not be used. Every variant names its culprit.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {} problem{}:\n  - {}", .problems.len(), if .problems.len() == 1 { "" } else { "s" }, .problems.join("\n  - "))]
    Invalid {
        origin: String,
        problems: Vec<String>,
    },
    #[error(
        "vercel.token_env: environment variable {var} is not set or empty; it must hold the Vercel token (audit and --dry-run do not need it)"
    )]
    MissingToken { var: String },
    #[error(
        "vercel.token_env: environment variable {var} holds characters a bearer token cannot have (control or non-ASCII)"
    )]
    BadToken { var: String },
}

mod check;
mod discover;
pub mod env;
mod keys;
pub mod notify;
mod raw;

pub use discover::{Discover, RawDiscover, RawDiscoverDefaults};

use check::Checker;

pub use raw::{RawConfig, RawImage, RawNotify, RawRules, RawVercel, RawWatch};

/// A checked configuration.
///
/// Only the checker makes one ([`Config::load`], [`Config::from_yaml`]),
/// and its fields are private: holding a `Config` is the proof that it was
/// checked, which a caller free to build or edit one would void. Read it
/// through the accessors; the changes the program makes after the check
/// ([`Config::select`], [`Config::apply_shard`], the `--state` override)
/// are methods that keep it whole.
#[derive(Debug, Clone)]
pub struct Config {
    vercel: VercelConfig,
    /// The store (`state:`, or `--state`): a SQLite file or a PostgreSQL URL.
    state: StateLocation,
    /// A version 1 state file to import when the store does not exist yet
    /// (the old default, when `state:` is not set).
    legacy_state: Option<PathBuf>,
    watches: Vec<Arc<Watch>>,
    /// The shard this process owns, if any (see [`Config::apply_shard`]).
    shard: Option<Shard>,
    /// The CAs trusted besides the Mozilla roots and the system store (`ca_file:`).
    trust: crate::tls::Trust,
    /// `notify:`, when set.
    notify: Option<notify::NotifyConfig>,
}

/// `vercel:`, checked: `api_base` is an http(s) base URL with no query or
/// fragment, the deadline within the API's maximum. Its `team_id` and
/// `slug` are not kept here: the checker gives them to each watch that
/// names neither (see [`Watch::team_id`]).
///
/// Only the checker makes one (it is part of a [`Config`]), and its fields
/// are private, so those checks hold wherever one is used.
#[derive(Debug, Clone)]
pub struct VercelConfig {
    token_env: String,
    api_base: Url,
    revalidation_deadline_seconds: Option<u64>,
}

/// The bearer token. It has no `Display`, and its `Debug` is redacted, so it
/// cannot end up in a log line, a report, an error or a panic message.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// A token; it is registered with [`crate::redact`], so it is masked
    /// wherever it would be printed.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret = secret.into();
        crate::redact::register(&secret);
        Token(secret)
    }

    /// Checks the value of the environment variable `var`.
    pub fn from_var(var: &str, value: Option<String>) -> Result<Token, ConfigError> {
        let token = match value {
            Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => {
                return Err(ConfigError::MissingToken {
                    var: var.to_owned(),
                });
            }
        };
        // It goes into an HTTP header: say so now rather than fail mid-pass.
        if token.bytes().any(|b| b.is_ascii_control() || !b.is_ascii()) {
            return Err(ConfigError::BadToken {
                var: var.to_owned(),
            });
        }
        Ok(Token::new(token))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl VercelConfig {
    /// Reads the token from the environment variable named by `token_env`.
    pub fn token_from_env(&self) -> Result<Token, ConfigError> {
        Token::from_var(&self.token_env, std::env::var(&self.token_env).ok())
    }

    /// The name of the environment variable that holds the token (`token_env:`).
    pub fn token_env(&self) -> &str {
        &self.token_env
    }

    /// The API's base URL (`api_base:`).
    pub fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// `revalidation_deadline_seconds:`, at most [`MAX_DEADLINE_SECONDS`].
    pub fn revalidation_deadline_seconds(&self) -> Option<u64> {
        self.revalidation_deadline_seconds
    }
}

/// `on_change:` what origin-watch does when a present image was replaced
/// under the same URL (its ETag or length changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnChange {
    /// Record the new validators; call nothing.
    #[default]
    Ignore,
    /// Call `invalidate-by-src-images` once the change is confirmed.
    Invalidate,
}

impl OnChange {
    pub const ALL: [OnChange; 2] = [OnChange::Ignore, OnChange::Invalidate];

    pub fn as_str(self) -> &'static str {
        match self {
            OnChange::Ignore => "ignore",
            OnChange::Invalidate => "invalidate",
        }
    }
}

/// Per-watch rules: `defaults:` with the watch's overrides applied, each
/// value checked (a parsed schedule, typed durations, fractions between 0
/// and 1, gone statuses that are 4xx and never 408 or 429, ...).
///
/// Only the checker makes one (it is part of a [`Watch`]). Its fields are
/// `pub(crate)` so the crate's probes, judge and guards read them directly
/// (no code outside `config` writes them, and watches are shared behind
/// `Arc`); outside the crate, read them through the accessors.
#[derive(Debug, Clone)]
pub struct Rules {
    pub(crate) schedule: CronSchedule,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) concurrency: usize,
    pub(crate) per_host_concurrency: usize,
    pub(crate) gone_statuses: Vec<u16>,
    pub(crate) confirmations: u32,
    pub(crate) follow_redirects: u32,
    pub(crate) max_purge_fraction: f64,
    pub(crate) max_purges_per_pass: usize,
    /// An unreferenced source with nothing pending leaves the inventory after this long.
    pub(crate) forget_after: Duration,
    /// A purge also needs the source first seen gone at least this long ago.
    pub(crate) min_gone_for: Duration,
    pub(crate) max_invalidate_fraction: f64,
    pub(crate) max_inconclusive_fraction: f64,
    /// The fraction guards never trip at or below this count.
    pub(crate) fraction_floor: usize,
    /// The fraction guards also count what was purged this long back.
    pub(crate) guard_window: Duration,
    /// What a present image with new validators leads to.
    pub(crate) on_change: OnChange,
    /// Sent with every probe and discovery request of the watch.
    pub(crate) headers: crate::probe::ProbeHeaders,
}

impl Rules {
    /// `min_gone_for:` a purge also needs the source first seen gone at
    /// least this long ago.
    pub fn min_gone_for(&self) -> Duration {
        self.min_gone_for
    }

    /// `max_inconclusive_fraction:`, between 0 and 1.
    pub fn max_inconclusive_fraction(&self) -> f64 {
        self.max_inconclusive_fraction
    }

    /// `fraction_floor:` the fraction guards never trip at or below this count.
    pub fn fraction_floor(&self) -> usize {
        self.fraction_floor
    }

    /// `guard_window:` the fraction guards also count what was purged this long back.
    pub fn guard_window(&self) -> Duration {
        self.guard_window
    }
}

/// One checked watch: its Vercel project, its rules, and its sources
/// grouped into probe targets.
///
/// Only the checker makes one (it is part of a [`Config`]), and a shard's
/// part of one comes from [`Watch::shard_part`]. Its source list is
/// private: each [`ProbeTarget`] indexes a range of `sources`, and each
/// [`Source`] names its target, so a list edited or built elsewhere could
/// make [`Watch::sources_of`] panic or answer for the wrong sources. The
/// other fields are `pub(crate)` for the crate to read (no code outside
/// `config` writes them, and watches are shared behind `Arc`); outside the
/// crate, read everything through the accessors.
#[derive(Debug, Clone)]
pub struct Watch {
    pub(crate) name: String,
    pub(crate) project: String,
    /// The effective team and slug: the watch's own if it names either,
    /// else both of `vercel:`.
    pub(crate) team_id: Option<String>,
    pub(crate) slug: Option<String>,
    pub(crate) origin: Option<String>,
    /// The canary's probe URL.
    pub(crate) canary: Option<Arc<str>>,
    pub(crate) rules: Rules,
    /// Sources, grouped so that aliases of one probe URL are contiguous.
    sources: Vec<Source>,
    probes: Vec<ProbeTarget>,
    /// Sources listed more than once (kept once).
    duplicates: usize,
    /// `discover:`, when the watch finds sources on its site.
    pub(crate) discover: Option<Arc<Discover>>,
}

impl Watch {
    /// The watch's name (unique in the config).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Vercel project whose image cache it purges.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The effective team: the watch's own if it names a team or slug,
    /// else `vercel:`'s.
    pub fn team_id(&self) -> Option<&str> {
        self.team_id.as_deref()
    }

    /// The effective slug, taken like [`Watch::team_id`].
    pub fn slug(&self) -> Option<&str> {
        self.slug.as_deref()
    }

    /// The canary's probe URL, when the watch has one.
    pub fn canary(&self) -> Option<&str> {
        self.canary.as_deref()
    }

    /// The watch's rules (`defaults:` with its overrides).
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The sources, grouped so that aliases of one probe URL are contiguous.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The probe targets, each answering for a range of [`Watch::sources`].
    pub fn probes(&self) -> &[ProbeTarget] {
        &self.probes
    }

    /// How many sources were listed more than once (and kept once).
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// The part of this watch that `shard` owns (by each probe target's
    /// shard key; aliases stay together).
    pub fn shard_part(&self, shard: Shard) -> Watch {
        let (sources, probes) = crate::sources::retain(&self.sources, &self.probes, |p| {
            shard.owns(&self.shard_key(p))
        });
        Watch {
            sources,
            probes,
            ..self.clone_without_sources()
        }
    }

    /// The same watch with no sources (for a shard to fill).
    fn clone_without_sources(&self) -> Watch {
        Watch {
            name: self.name.clone(),
            project: self.project.clone(),
            team_id: self.team_id.clone(),
            slug: self.slug.clone(),
            origin: self.origin.clone(),
            canary: self.canary.clone(),
            rules: self.rules.clone(),
            sources: Vec::new(),
            probes: Vec::new(),
            duplicates: self.duplicates,
            discover: self.discover.clone(),
        }
    }

    /// The sources that one probe answers for. `probe` is one of
    /// [`Watch::probes`] (of this watch: another's may index past its end).
    pub fn sources_of(&self, probe: &ProbeTarget) -> &[Source] {
        &self.sources[probe.range()]
    }

    /// The URL a probe target (one of [`Watch::probes`]) is probed at.
    pub fn probe_url<'a>(&'a self, probe: &'a ProbeTarget) -> Cow<'a, str> {
        crate::sources::probe_url(&self.sources, self.origin.as_deref(), probe)
    }

    /// The string a probe target (one of [`Watch::probes`]) is sharded by:
    /// the probe URL as configured (`origin` text followed by the path, the
    /// source, or the explicit `probe:`). It is part of the product (see
    /// [`crate::shard`]): it must not change when the way requests are built
    /// does.
    pub fn shard_key<'a>(&'a self, probe: &'a ProbeTarget) -> Cow<'a, str> {
        crate::sources::shard_key(&self.sources, self.origin.as_deref(), probe)
    }
}

impl Config {
    /// Reads and checks a config file. Relative paths inside it (`state`,
    /// `images_file`) are relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path, MAX_CONFIG_BYTES).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Self::parse(&text, folder_of(path), &path.display().to_string())
    }

    /// Checks a config given as text, with relative paths taken from the
    /// current folder. Used by tests, which never touch the disk through it.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, Path::new("."), "watch.yaml")
    }

    fn parse(text: &str, base: &Path, origin: &str) -> Result<Config, ConfigError> {
        // Editors on Windows write a byte-order mark; it is not a document.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let parse_error = |message: String| ConfigError::Parse {
            origin: origin.to_owned(),
            message,
        };
        if text.trim().is_empty() {
            return Checker::new(base)
                .check(RawConfig::default())
                .map_err(|problems| ConfigError::Invalid {
                    origin: origin.to_owned(),
                    problems,
                });
        }
        let (raw, mut problems) = match serde_yaml::from_str::<RawConfig>(text) {
            Ok(raw) => (raw, Vec::new()),
            Err(first) => {
                // serde stops at the first unknown key: find them all (by
                // path), then check what is left, so every problem is
                // listed at once. The first keeps serde's line and column.
                let mut value: serde_yaml::Value =
                    serde_yaml::from_str(text).map_err(|_| parse_error(first.to_string()))?;
                let unknown = keys::unknown_keys(&mut value);
                if unknown.is_empty() {
                    return Err(parse_error(first.to_string()));
                }
                let mut problems = vec![first.to_string()];
                problems.extend(
                    unknown
                        .into_iter()
                        .filter(|p| !first_names(&first.to_string(), p)),
                );
                match RawConfig::deserialize(value) {
                    Ok(raw) => (raw, problems),
                    Err(e) => {
                        problems.push(e.to_string());
                        return Err(ConfigError::Invalid {
                            origin: origin.to_owned(),
                            problems,
                        });
                    }
                }
            }
        };
        match Checker::new(base).check(raw) {
            Ok(config) if problems.is_empty() => Ok(config),
            Ok(_) => Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            }),
            Err(more) => {
                problems.extend(more);
                Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    problems,
                })
            }
        }
    }

    /// The `vercel:` block.
    pub fn vercel(&self) -> &VercelConfig {
        &self.vercel
    }

    /// The store: a SQLite file or a PostgreSQL URL (`state:`, `--state`,
    /// the shard's own when sharded).
    pub fn state(&self) -> &StateLocation {
        &self.state
    }

    /// A version 1 state file to import when the store does not exist yet.
    pub fn legacy_state(&self) -> Option<&Path> {
        self.legacy_state.as_deref()
    }

    /// The watches, in the file's order (those `--watch` kept, each
    /// reduced to the shard's part when sharded).
    pub fn watches(&self) -> &[Arc<Watch>] {
        &self.watches
    }

    /// The shard this process owns, if any (see [`Config::apply_shard`]).
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// The CAs trusted besides the Mozilla roots and the system store (`ca_file:`).
    pub fn trust(&self) -> &crate::tls::Trust {
        &self.trust
    }

    /// `notify:`, when set.
    pub fn notify(&self) -> Option<&notify::NotifyConfig> {
        self.notify.as_ref()
    }

    /// Puts the store at `state` instead: `--state` on the command line,
    /// or a reloaded config kept on the store it started with. Nothing
    /// else changes (`legacy_state` neither). It is not made the shard's
    /// own: call it before [`Config::apply_shard`], or with a location
    /// that already is.
    pub(crate) fn override_state(&mut self, state: StateLocation) {
        self.state = state;
    }

    /// Keeps only the sources this shard owns, and gives the shard its own
    /// state file (a shared database: its own ownership of each watch).
    pub fn apply_shard(&mut self, shard: Shard) {
        for w in &mut self.watches {
            *w = Arc::new(w.shard_part(shard));
        }
        self.state = self.state.for_shard(shard);
        self.legacy_state = self.legacy_state.as_deref().map(|p| shard.state_path(p));
        self.shard = Some(shard);
    }

    /// Keeps only the named watches; an unknown name is an error.
    pub fn select(&mut self, names: &[String]) -> Result<(), ConfigError> {
        if names.is_empty() {
            return Ok(());
        }
        let known: HashSet<&str> = self.watches.iter().map(|w| w.name.as_str()).collect();
        let problems: Vec<String> = names
            .iter()
            .filter(|n| !known.contains(n.as_str()))
            .map(|n| format!("--watch {n}: no watch has that name"))
            .collect();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                origin: "command line".into(),
                problems,
            });
        }
        self.watches.retain(|w| names.contains(&w.name));
        Ok(())
    }
}

/// Whether serde's first error (`unknown field `x`, expected ...`) is
/// about the key that `problem` (`path.x: unknown key; ...`) names.
fn first_names(serde_message: &str, problem: &str) -> bool {
    let key = problem
        .split(": unknown key")
        .next()
        .and_then(|path| path.rsplit('.').next())
        .unwrap_or_default();
    serde_message.contains(&format!("unknown field `{key}`"))
}

/// The per-probe part of a watch's rules.
impl From<&Rules> for crate::probe::ProbeRules {
    fn from(r: &Rules) -> Self {
        crate::probe::ProbeRules {
            timeout: r.timeout,
            retries: r.retries,
            follow_redirects: r.follow_redirects,
            gone_statuses: r.gone_statuses.clone(),
            per_host_concurrency: r.per_host_concurrency,
            headers: r.headers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
watches:
  - name: site
    project: my-app
    origin: https://example.com
    images: [/a.png]
";

    fn problems(yaml: &str) -> String {
        match Config::from_yaml(yaml) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = Config::from_yaml(MINIMAL).unwrap();
        assert_eq!(c.vercel.token_env, "VERCEL_TOKEN");
        assert_eq!(c.vercel.api_base.as_str(), "https://api.vercel.com/");
        assert_eq!(c.state.file(), Some(Path::new("./.origin-watch/state.db")));
        assert_eq!(
            c.legacy_state.as_deref(),
            Some(Path::new("./.origin-watch/state.json"))
        );
        assert_eq!(
            c.watches[0].rules.forget_after,
            Duration::from_secs(30 * 86400)
        );
        let r = &c.watches[0].rules;
        assert_eq!(r.timeout, Duration::from_secs(10));
        assert_eq!(
            (r.retries, r.concurrency, r.per_host_concurrency),
            (2, 64, 16)
        );
        assert_eq!(r.gone_statuses, vec![404, 410]);
        assert_eq!((r.confirmations, r.follow_redirects), (2, 5));
        assert_eq!(r.max_purge_fraction, 0.25);
        assert_eq!(r.max_purges_per_pass, 500);
        assert_eq!(r.schedule.expression(), "*/10 * * * *");
        assert_eq!(
            crate::probe::ProbeRules::from(r),
            crate::probe::ProbeRules::default()
        );
    }

    #[test]
    fn the_guard_keys_get_the_contract_defaults() {
        let r = &Config::from_yaml(MINIMAL).unwrap().watches[0].rules;
        assert_eq!(r.min_gone_for, Duration::ZERO);
        assert_eq!(r.max_invalidate_fraction, 0.25);
        assert_eq!(r.max_inconclusive_fraction, 0.5);
        assert_eq!(r.fraction_floor, 3);
        assert_eq!(r.guard_window, Duration::from_secs(24 * 3600));
        let c = Config::from_yaml(&format!(
            "defaults: {{ min_gone_for: 10m, guard_window: 1h, fraction_floor: 0, max_inconclusive_fraction: 1, max_invalidate_fraction: 0.1 }}\n{}",
            MINIMAL.replace("images:", "guard_window: 0s\n    images:")
        ))
        .unwrap();
        let r = &c.watches[0].rules;
        assert_eq!(r.min_gone_for, Duration::from_secs(600));
        assert_eq!(
            r.guard_window,
            Duration::ZERO,
            "the watch overrides defaults"
        );
        assert_eq!(r.fraction_floor, 0);
        assert_eq!(r.max_inconclusive_fraction, 1.0);
        assert_eq!(r.max_invalidate_fraction, 0.1);
    }

    #[test]
    fn bad_guard_keys_are_named() {
        let e = problems(&format!(
            "defaults: {{ min_gone_for: soon, max_inconclusive_fraction: 1.5, max_invalidate_fraction: -1 }}\n{}",
            MINIMAL.replace("images:", "guard_window: a day\n    images:")
        ));
        assert!(
            e.contains("defaults.min_gone_for: bad duration \"soon\""),
            "{e}"
        );
        assert!(
            e.contains("watches[0] (site).guard_window: bad duration"),
            "{e}"
        );
        assert!(
            e.contains("defaults.max_inconclusive_fraction: 1.5 is not between 0 and 1"),
            "{e}"
        );
        assert!(
            e.contains("defaults.max_invalidate_fraction: -1 is not between 0 and 1"),
            "{e}"
        );
        let e = problems(&format!("defaults: {{ fraction_floor: -1 }}\n{MINIMAL}"));
        assert!(e.contains("fraction_floor"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = problems(
            "watches:\n  - name: site\n    project: p\n    origin: https://e.com\n    imagez: [/a.png]\n",
        );
        assert!(e.contains("imagez"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn unknown_key_in_an_image_entry_is_named() {
        let e = problems(
            "watches:\n  - name: s\n    project: p\n    images:\n      - { src: /a.png, prob: https://x.com/a }\n",
        );
        assert!(e.contains("prob"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn every_problem_is_listed() {
        let e = problems(
            "
defaults:
  timeout: 10 parsecs
watches:
  - name: a
    project: p
    schedule: '61 * * * *'
    images: [/a.png, relative.png]
  - name: a
    project: p
    origin: https://e.com
    images: [/b.png]
",
        );
        assert!(e.contains("defaults.timeout"), "{e}");
        assert!(e.contains("watches[0] (a).schedule"), "{e}");
        assert!(e.contains("needs the watch's `origin`"), "{e}");
        assert!(e.contains("relative.png"), "{e}");
        assert!(e.contains("duplicate watch name \"a\""), "{e}");
    }

    #[test]
    fn relative_paths_start_from_the_config_s_folder_or_dot() {
        assert_eq!(folder_of(Path::new("watch.yaml")), Path::new("."));
        assert_eq!(folder_of(Path::new("./watch.yaml")), Path::new("."));
        assert_eq!(
            folder_of(Path::new("etc/ow/watch.yaml")),
            Path::new("etc/ow")
        );
        assert_eq!(folder_of(Path::new("/watch.yaml")), Path::new("/"));
    }

    #[test]
    fn source_over_8192_chars_is_rejected() {
        let long = format!("/{}", "x".repeat(MAX_SOURCE_LEN));
        let e = problems(&format!(
            "watches:\n  - name: s\n    project: p\n    origin: https://e.com\n    images: ['{long}']\n"
        ));
        assert!(e.contains("over Vercel's limit of 8192"), "{e}");
    }

    #[test]
    fn watch_overrides_defaults() {
        let c = Config::from_yaml(
            "
vercel: { team_id: team_1, slug: t, revalidation_deadline_seconds: 60 }
defaults: { confirmations: 3, timeout: 2s }
watches:
  - { name: a, project: p, origin: 'https://e.com/', images: [/a.png] }
  - { name: b, project: p, origin: 'https://e.com', confirmations: 1, schedule: '*/5 * * * * *', images: [/b.png] }
",
        )
        .unwrap();
        assert_eq!(c.watches[0].rules.confirmations, 3);
        assert_eq!(c.watches[1].rules.confirmations, 1);
        assert_eq!(c.watches[1].rules.timeout, Duration::from_secs(2));
        let w = &c.watches[0];
        assert_eq!(w.probe_url(&w.probes[0]), "https://e.com/a.png");
        assert_eq!(c.vercel.revalidation_deadline_seconds, Some(60));
    }

    #[test]
    fn aliases_share_one_probe_and_sources_stay_verbatim() {
        let c = Config::from_yaml(
            "
watches:
  - name: s
    project: p
    origin: https://e.com
    images:
      - /a.png
      - { src: /alias/a.png, probe: https://e.com/a.png }
      - https://cdn.example.com/x.jpg?v=2&w=1
      - https://cdn.example.com/x.jpg?v=2&w=1
",
        )
        .unwrap();
        let w = &c.watches[0];
        assert_eq!(w.probes.len(), 2);
        assert_eq!(w.sources.len(), 3);
        assert_eq!(w.duplicates, 1);
        let srcs: Vec<&str> = w.sources_of(&w.probes[0]).iter().map(|s| &*s.src).collect();
        assert_eq!(srcs, ["/a.png", "/alias/a.png"]);
        assert_eq!(&*w.sources[2].src, "https://cdn.example.com/x.jpg?v=2&w=1");
    }

    #[test]
    fn gone_statuses_must_be_4xx() {
        let e = problems(&format!(
            "defaults: {{ gone_statuses: [404, 500] }}\n{MINIMAL}"
        ));
        assert!(e.contains("500 is not a 4xx"), "{e}");
    }

    #[test]
    fn rate_limit_and_timeout_statuses_never_mean_gone() {
        let e = problems(&format!(
            "defaults: {{ gone_statuses: [404, 429] }}\n{MINIMAL}"
        ));
        assert!(e.contains("defaults.gone_statuses: 429"), "{e}");
        let e = problems(&format!("defaults: {{ gone_statuses: [408] }}\n{MINIMAL}"));
        assert!(e.contains("defaults.gone_statuses: 408"), "{e}");
    }

    #[test]
    fn deadline_over_a_year_is_rejected() {
        let e = problems(&format!(
            "vercel: {{ revalidation_deadline_seconds: 31536001 }}\n{MINIMAL}"
        ));
        assert!(e.contains("vercel.revalidation_deadline_seconds"), "{e}");
    }

    #[test]
    fn deadline_must_be_an_integer() {
        let e = problems(&format!(
            "vercel: {{ revalidation_deadline_seconds: 1.5 }}\n{MINIMAL}"
        ));
        assert!(e.contains("revalidation_deadline_seconds"), "{e}");
    }

    #[test]
    fn missing_token_names_the_variable() {
        let c = Config::from_yaml(&format!(
            "vercel: {{ token_env: OW_TEST_SURELY_UNSET }}\n{MINIMAL}"
        ))
        .unwrap();
        let e = c.vercel.token_from_env().unwrap_err().to_string();
        assert!(e.contains("OW_TEST_SURELY_UNSET"), "{e}");
    }

    #[test]
    fn a_watch_naming_its_team_inherits_neither_team_nor_slug() {
        let c = Config::from_yaml(
            "
vercel: { team_id: team_1, slug: my-team }
watches:
  - { name: a, project: p, origin: 'https://e.com', images: [/a.png] }
  - { name: b, project: p, origin: 'https://e.com', team_id: team_2, images: [/a.png] }
",
        )
        .unwrap();
        let (a, b) = (&c.watches[0], &c.watches[1]);
        assert_eq!(
            (a.team_id.as_deref(), a.slug.as_deref()),
            (Some("team_1"), Some("my-team"))
        );
        assert_eq!(
            (b.team_id.as_deref(), b.slug.as_deref()),
            (Some("team_2"), None)
        );
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused_without_showing_it() {
        let e = Token::from_var("MY_TOKEN", Some("tok\nsecret".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MY_TOKEN") && !e.contains("secret"), "{e}");
        assert!(Token::from_var("MY_TOKEN", Some("  ".into())).is_err());
        assert_eq!(
            Token::from_var("MY_TOKEN", Some(" t0k ".into()))
                .unwrap()
                .expose(),
            "t0k"
        );
    }

    #[test]
    fn token_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Token::new("tok_secret")),
            "Token(<redacted>)"
        );
    }
}
