//! `watch.yaml`: [`RawConfig`] mirrors the file (serde, unknown keys denied);
//! [`Config`] is what the rest of the program sees. Once you hold a `Config`
//! it is usable: cron parsed, durations typed, probe URLs joined, sources
//! checked against Vercel's limits, aliases grouped.

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

pub use crate::sources::{MAX_SOURCE_LEN, ProbeTarget, ProbeUrl, Source};
/// The largest `revalidationDeadlineSeconds` the API accepts (one year).
pub const MAX_DEADLINE_SECONDS: u64 = 31_536_000;

/// Why a configuration could not be used. Every variant names its culprit.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
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

// ---------------------------------------------------------------------------
// Raw: the file as written.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub vercel: RawVercel,
    pub state: Option<String>,
    #[serde(default)]
    pub defaults: RawRules,
    #[serde(default)]
    pub watches: Vec<RawWatch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVercel {
    pub token_env: Option<String>,
    pub api_base: Option<String>,
    pub team_id: Option<String>,
    pub slug: Option<String>,
    pub revalidation_deadline_seconds: Option<u64>,
}

/// The keys of `defaults:`, each of which a watch may override.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    pub schedule: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub concurrency: Option<usize>,
    pub per_host_concurrency: Option<usize>,
    pub gone_statuses: Option<Vec<u16>>,
    pub confirmations: Option<u32>,
    pub follow_redirects: Option<u32>,
    pub max_purge_fraction: Option<f64>,
    pub max_purges_per_pass: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    pub name: Option<String>,
    pub project: Option<String>,
    pub origin: Option<String>,
    pub canary: Option<String>,
    pub team_id: Option<String>,
    pub slug: Option<String>,
    #[serde(default)]
    pub images: Vec<RawImage>,
    pub images_file: Option<String>,
    // The rule overrides: the same keys as `defaults:`.
    pub schedule: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub concurrency: Option<usize>,
    pub per_host_concurrency: Option<usize>,
    pub gone_statuses: Option<Vec<u16>>,
    pub confirmations: Option<u32>,
    pub follow_redirects: Option<u32>,
    pub max_purge_fraction: Option<f64>,
    pub max_purges_per_pass: Option<usize>,
}

impl RawWatch {
    fn rules(&self) -> RawRules {
        RawRules {
            schedule: self.schedule.clone(),
            timeout: self.timeout.clone(),
            retries: self.retries,
            concurrency: self.concurrency,
            per_host_concurrency: self.per_host_concurrency,
            gone_statuses: self.gone_statuses.clone(),
            confirmations: self.confirmations,
            follow_redirects: self.follow_redirects,
            max_purge_fraction: self.max_purge_fraction,
            max_purges_per_pass: self.max_purges_per_pass,
        }
    }
}

/// One entry of `images:`: a bare source string, or `{ src, probe }`.
#[derive(Debug, Clone)]
pub struct RawImage {
    pub src: String,
    pub probe: Option<String>,
}

impl<'de> Deserialize<'de> for RawImage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            src: String,
            probe: Option<String>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawImage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a source string or a map with `src` and optional `probe`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawImage, E> {
                Ok(RawImage {
                    src: v.to_owned(),
                    probe: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawImage, A::Error> {
                let e = Entry::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawImage {
                    src: e.src,
                    probe: e.probe,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

// ---------------------------------------------------------------------------
// Checked: what the program uses.

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub vercel: VercelConfig,
    pub state_path: PathBuf,
    pub watches: Vec<Arc<Watch>>,
    /// The shard this process owns, if any (see [`Config::apply_shard`]).
    pub shard: Option<Shard>,
}

#[derive(Debug, Clone)]
pub struct VercelConfig {
    pub token_env: String,
    pub api_base: Url,
    pub team_id: Option<String>,
    pub slug: Option<String>,
    pub revalidation_deadline_seconds: Option<u64>,
}

/// The bearer token. It has no `Display`, and its `Debug` is redacted, so it
/// cannot end up in a log line, a report, an error or a panic message.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Token(secret.into())
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
        Ok(Token(token))
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
}

/// Per-watch rules: `defaults:` with the watch's overrides applied.
#[derive(Debug, Clone)]
pub struct Rules {
    pub schedule: CronSchedule,
    pub timeout: Duration,
    pub retries: u32,
    pub concurrency: usize,
    pub per_host_concurrency: usize,
    pub gone_statuses: Vec<u16>,
    pub confirmations: u32,
    pub follow_redirects: u32,
    pub max_purge_fraction: f64,
    pub max_purges_per_pass: usize,
}

#[derive(Debug, Clone)]
pub struct Watch {
    pub name: String,
    pub project: String,
    /// The effective team and slug: the watch's own if it names either,
    /// else both of `vercel:`.
    pub team_id: Option<String>,
    pub slug: Option<String>,
    pub origin: Option<String>,
    /// The canary's probe URL.
    pub canary: Option<Arc<str>>,
    pub rules: Rules,
    /// Sources, grouped so that aliases of one probe URL are contiguous.
    pub sources: Vec<Source>,
    pub probes: Vec<ProbeTarget>,
    /// Sources listed more than once (kept once).
    pub duplicates: usize,
}

impl Watch {
    /// The same watch with no sources (for a shard to fill).
    pub fn clone_without_sources(&self) -> Watch {
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
        }
    }

    /// The sources that one probe answers for.
    pub fn sources_of(&self, probe: &ProbeTarget) -> &[Source] {
        let first = probe.first as usize;
        &self.sources[first..first + probe.count as usize]
    }

    /// The URL a probe target is probed at.
    pub fn probe_url<'a>(&'a self, probe: &'a ProbeTarget) -> Cow<'a, str> {
        crate::sources::probe_url(&self.sources, self.origin.as_deref(), probe)
    }
}

impl Config {
    /// Reads and checks a config file. Relative paths inside it (`state`,
    /// `images_file`) are relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Self::parse(&text, &base, &path.display().to_string())
    }

    /// Checks a config given as text, with relative paths taken from the
    /// current folder. Used by tests, which never touch the disk through it.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, Path::new("."), "watch.yaml")
    }

    fn parse(text: &str, base: &Path, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?
        };
        Checker::new(base)
            .check(raw)
            .map_err(|problems| ConfigError::Invalid {
                origin: origin.to_owned(),
                problems,
            })
    }

    /// Keeps only the sources this shard owns, and gives the shard its own
    /// state file.
    pub fn apply_shard(&mut self, shard: Shard) {
        for w in &mut self.watches {
            *w = Arc::new(shard.filter(w));
        }
        self.state_path = shard.state_path(&self.state_path);
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

/// Collects every problem rather than stopping at the first.
struct Checker<'a> {
    base: &'a Path,
    problems: Vec<String>,
}

impl<'a> Checker<'a> {
    fn new(base: &'a Path) -> Self {
        Checker {
            base,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn check(mut self, raw: RawConfig) -> Result<Config, Vec<String>> {
        let (team_id, slug) = (raw.vercel.team_id.clone(), raw.vercel.slug.clone());
        let vercel = self.vercel(raw.vercel);
        let state_path = self
            .base
            .join(raw.state.as_deref().unwrap_or(".origin-watch/state.json"));
        if raw.watches.is_empty() {
            self.problem("watches: at least one watch is needed".into());
        }
        let mut names = HashSet::new();
        let mut watches = Vec::new();
        for (i, w) in raw.watches.iter().enumerate() {
            let label = match &w.name {
                Some(n) => format!("watches[{i}] ({n})"),
                None => format!("watches[{i}]"),
            };
            if let Some(n) = &w.name
                && !names.insert(n.clone())
            {
                self.problem(format!("{label}.name: duplicate watch name {n:?}"));
            }
            if let Some(mut watch) = self.watch(&label, &raw.defaults, w) {
                // A watch that names its team (by id or slug) takes neither
                // from `vercel:`; otherwise it takes both.
                if watch.team_id.is_none() && watch.slug.is_none() {
                    watch.team_id = team_id.clone();
                    watch.slug = slug.clone();
                }
                watches.push(Arc::new(watch));
            }
        }
        // A bad `defaults:` key is found once per watch that inherits it.
        let mut once = HashSet::new();
        self.problems.retain(|p| once.insert(p.clone()));
        match (vercel, self.problems.is_empty()) {
            (Some(vercel), true) => Ok(Config {
                vercel,
                state_path,
                watches,
                shard: None,
            }),
            _ => Err(self.problems),
        }
    }

    fn vercel(&mut self, raw: RawVercel) -> Option<VercelConfig> {
        let token_env = raw.token_env.unwrap_or_else(|| "VERCEL_TOKEN".into());
        if token_env.is_empty() {
            self.problem("vercel.token_env: must name an environment variable".into());
        }
        let base = raw
            .api_base
            .unwrap_or_else(|| "https://api.vercel.com".into());
        let api_base = match Url::parse(&base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                self.problem(format!("vercel.api_base: {base:?} is not an http(s) URL"));
                None
            }
            Err(e) => {
                self.problem(format!("vercel.api_base: {base:?} is not a URL: {e}"));
                None
            }
        };
        if let Some(d) = raw.revalidation_deadline_seconds
            && d > MAX_DEADLINE_SECONDS
        {
            self.problem(format!(
                "vercel.revalidation_deadline_seconds: {d} is over the API's maximum {MAX_DEADLINE_SECONDS}"
            ));
        }
        Some(VercelConfig {
            token_env,
            api_base: api_base?,
            team_id: raw.team_id,
            slug: raw.slug,
            revalidation_deadline_seconds: raw.revalidation_deadline_seconds,
        })
    }

    fn rules(&mut self, label: &str, defaults: &RawRules, own: &RawRules) -> Option<Rules> {
        let before = self.problems.len();
        // A key set in the watch is reported under the watch, else under defaults.
        let at = |key: &str, set_here: bool| {
            if set_here {
                format!("{label}.{key}")
            } else {
                format!("defaults.{key}")
            }
        };

        let expr = own
            .schedule
            .clone()
            .or_else(|| defaults.schedule.clone())
            .unwrap_or_else(|| "*/10 * * * *".into());
        let schedule = match CronSchedule::parse(&expr) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(format!(
                    "{}: bad cron expression {expr:?} for watch {label}: {e}",
                    at("schedule", own.schedule.is_some())
                ));
                None
            }
        };

        let timeout_text = own
            .timeout
            .clone()
            .or_else(|| defaults.timeout.clone())
            .unwrap_or_else(|| "10s".into());
        let timeout = match humantime::parse_duration(&timeout_text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(format!(
                    "{}: must be more than zero",
                    at("timeout", own.timeout.is_some())
                ));
                None
            }
            Err(e) => {
                self.problem(format!(
                    "{}: bad duration {timeout_text:?} ({e}); write e.g. 10s, 1500ms, 1m",
                    at("timeout", own.timeout.is_some())
                ));
                None
            }
        };

        macro_rules! pick {
            ($key:ident, $default:expr) => {
                own.$key
                    .clone()
                    .or_else(|| defaults.$key.clone())
                    .unwrap_or($default)
            };
        }
        let retries = pick!(retries, 2);
        let concurrency = pick!(concurrency, 64);
        let per_host_concurrency = pick!(per_host_concurrency, 16);
        let gone_statuses = pick!(gone_statuses, vec![404, 410]);
        let confirmations = pick!(confirmations, 2);
        let follow_redirects = pick!(follow_redirects, 5);
        let max_purge_fraction = pick!(max_purge_fraction, 0.25);
        let max_purges_per_pass = pick!(max_purges_per_pass, 500);

        if concurrency == 0 {
            let k = at("concurrency", own.concurrency.is_some());
            self.problem(format!("{k}: must be at least 1"));
        }
        if per_host_concurrency == 0 {
            let k = at("per_host_concurrency", own.per_host_concurrency.is_some());
            self.problem(format!("{k}: must be at least 1"));
        }
        if confirmations == 0 {
            let k = at("confirmations", own.confirmations.is_some());
            self.problem(format!(
                "{k}: must be at least 1 (1 = purge on first sight)"
            ));
        }
        if retries > 10 {
            let k = at("retries", own.retries.is_some());
            self.problem(format!("{k}: {retries} is more than the 10 allowed"));
        }
        if follow_redirects > 20 {
            let k = at("follow_redirects", own.follow_redirects.is_some());
            self.problem(format!(
                "{k}: {follow_redirects} is more than the 20 allowed"
            ));
        }
        let k = at("gone_statuses", own.gone_statuses.is_some());
        if gone_statuses.is_empty() {
            self.problem(format!("{k}: must list at least one status"));
        }
        for s in &gone_statuses {
            if !(400..=499).contains(s) {
                self.problem(format!(
                    "{k}: {s} is not a 4xx status; only a 4xx can mean the image is gone"
                ));
            }
        }
        if !(0.0..=1.0).contains(&max_purge_fraction) {
            let k = at("max_purge_fraction", own.max_purge_fraction.is_some());
            self.problem(format!("{k}: {max_purge_fraction} is not between 0 and 1"));
        }
        if max_purges_per_pass == 0 {
            let k = at("max_purges_per_pass", own.max_purges_per_pass.is_some());
            self.problem(format!("{k}: must be at least 1"));
        }
        if self.problems.len() > before {
            return None;
        }
        Some(Rules {
            schedule: schedule?,
            timeout: timeout?,
            retries,
            concurrency,
            per_host_concurrency,
            gone_statuses,
            confirmations,
            follow_redirects,
            max_purge_fraction,
            max_purges_per_pass,
        })
    }

    fn watch(&mut self, label: &str, defaults: &RawRules, w: &RawWatch) -> Option<Watch> {
        let before = self.problems.len();
        let rules = self.rules(label, defaults, &w.rules());
        let name = w.name.clone().unwrap_or_default();
        if name.trim().is_empty() {
            self.problem(format!("{label}.name: every watch needs a name"));
        }
        let project = w.project.clone().unwrap_or_default();
        if project.trim().is_empty() {
            self.problem(format!(
                "{label}.project: every watch needs the Vercel project (id or name)"
            ));
        }
        let origin = match &w.origin {
            None => None,
            Some(o) => match Url::parse(o) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(o.trim_end_matches('/').to_owned())
                }
                _ => {
                    self.problem(format!("{label}.origin: {o:?} is not an http(s) URL"));
                    None
                }
            },
        };

        let mut list = crate::sources::Builder::new(origin.as_deref());
        for (i, img) in w.images.iter().enumerate() {
            list.add(
                &|| format!("{label}.images[{i}]"),
                &img.src,
                img.probe.as_deref(),
            );
        }
        if let Some(file) = &w.images_file {
            let path = self.base.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    for (n, line) in text.lines().enumerate() {
                        let line = line.trim();
                        if line.is_empty() || line.starts_with('#') {
                            continue;
                        }
                        list.add(&|| format!("{} line {}", path.display(), n + 1), line, None);
                    }
                }
                Err(e) => self.problem(format!(
                    "{label}.images_file: cannot read {}: {e}",
                    path.display()
                )),
            }
        }
        if w.images.is_empty() && w.images_file.is_none() {
            self.problem(format!(
                "{label}: no images (give `images` or `images_file`)"
            ));
        }
        let (list, problems) = list.finish();
        self.problems.extend(problems);

        let canary = match w
            .canary
            .as_deref()
            .map(|c| crate::sources::resolve(c, origin.as_deref()))
        {
            None => None,
            Some(Ok(url)) => Some(Arc::from(url)),
            Some(Err(why)) => {
                self.problem(format!("{label}.canary: {why}"));
                None
            }
        };

        if self.problems.len() > before {
            return None;
        }
        Some(Watch {
            name,
            project,
            team_id: w.team_id.clone(),
            slug: w.slug.clone(),
            origin,
            canary,
            rules: rules?,
            sources: list.sources,
            probes: list.probes,
            duplicates: list.duplicates,
        })
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
        assert_eq!(c.state_path, Path::new("./.origin-watch/state.json"));
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
