//! Checks a [`RawConfig`] into a [`Config`], collecting every problem
//! rather than stopping at the first: cron expressions, durations, ranges,
//! URLs, duplicate names and the source lists.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::raw::{RawConfig, RawRules, RawVercel, RawWatch};
use super::{Config, MAX_DEADLINE_SECONDS, Rules, VercelConfig, Watch};
use crate::schedule::CronSchedule;
use crate::store::StateLocation;

/// The store when `state:` is not set, relative to the config's folder.
pub(super) const DEFAULT_STATE: &str = ".origin-watch/state.db";
/// Version 1's default state file.
const LEGACY_STATE: &str = ".origin-watch/state.json";
/// The bounds of the counts in `defaults:` and the watches.
pub(super) const MAX_CONCURRENCY: usize = 10_000;
pub(super) const MAX_PURGES_PER_PASS: usize = 1_000_000;
pub(super) const MAX_CONFIRMATIONS: u32 = 1_000;
pub(super) const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Collects every problem rather than stopping at the first.
pub(super) struct Checker<'a> {
    base: &'a Path,
    problems: Vec<String>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(base: &'a Path) -> Self {
        Checker {
            base,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    pub(super) fn check(mut self, raw: RawConfig) -> Result<Config, Vec<String>> {
        let (team_id, slug) = (raw.vercel.team_id.clone(), raw.vercel.slug.clone());
        let vercel = self.vercel(raw.vercel);
        let state = match raw.state.as_deref() {
            None => StateLocation::File(self.base.join(DEFAULT_STATE)),
            Some(s) => StateLocation::parse(s, self.base).unwrap_or_else(|problem| {
                self.problem(format!("state: {problem}"));
                StateLocation::File(self.base.join(DEFAULT_STATE))
            }),
        };
        // Where version 1 kept its state by default: imported when the new
        // default store does not exist yet.
        let legacy_state = raw.state.is_none().then(|| self.base.join(LEGACY_STATE));
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
        let trust = match &raw.ca_file {
            None => Some(crate::tls::Trust::system()),
            Some(file) => match crate::tls::Trust::with_ca_file(&self.base.join(file)) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problem(e.to_string());
                    None
                }
            },
        };
        let notify = match &raw.notify {
            None => None,
            Some(n) => match super::notify::NotifyConfig::check(n) {
                Ok(n) => Some(n),
                Err(problems) => {
                    self.problems.extend(problems);
                    None
                }
            },
        };
        match (vercel, trust, self.problems.is_empty()) {
            (Some(vercel), Some(trust), true) => Ok(Config {
                vercel,
                state,
                legacy_state,
                watches,
                shard: None,
                trust,
                notify,
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
        let api_base = match crate::sources::check_base(&base) {
            Ok(u) => Some(u),
            Err(why) => {
                self.problem(format!("vercel.api_base: {why}"));
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
            // Said once for `defaults.schedule` (problems are deduplicated),
            // under the watch for its own.
            Err(e) => {
                self.problem(format!(
                    "{}: bad cron expression {expr:?}: {e}",
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

        // Every count has a sane range: a huge one would exhaust memory or
        // file descriptors, or overflow a limit further down.
        let mut bounded = |key: &str, set_here: bool, value: u64, min: u64, max: u64| {
            if !(min..=max).contains(&value) {
                let k = at(key, set_here);
                self.problems
                    .push(format!("{k}: {value} is not between {min} and {max}"));
            }
        };
        bounded(
            "concurrency",
            own.concurrency.is_some(),
            concurrency as u64,
            1,
            MAX_CONCURRENCY as u64,
        );
        bounded(
            "per_host_concurrency",
            own.per_host_concurrency.is_some(),
            per_host_concurrency as u64,
            1,
            crate::probe::MAX_PER_HOST as u64,
        );
        bounded(
            "max_purges_per_pass",
            own.max_purges_per_pass.is_some(),
            max_purges_per_pass as u64,
            1,
            MAX_PURGES_PER_PASS as u64,
        );
        bounded(
            "confirmations",
            own.confirmations.is_some(),
            u64::from(confirmations),
            1,
            u64::from(MAX_CONFIRMATIONS),
        );
        if let Some(t) = timeout
            && t > MAX_TIMEOUT
        {
            let k = at("timeout", own.timeout.is_some());
            self.problem(format!(
                "{k}: {} is more than the {} allowed",
                humantime::format_duration(t),
                humantime::format_duration(MAX_TIMEOUT)
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
            } else if matches!(s, 408 | 429) {
                // A timed-out or rate-limited probe says nothing about the
                // image; the contract keeps them inconclusive.
                self.problem(format!(
                    "{k}: {s} means the origin is slow or rate limiting, never that the image is gone"
                ));
            }
        }
        if !(0.0..=1.0).contains(&max_purge_fraction) {
            let k = at("max_purge_fraction", own.max_purge_fraction.is_some());
            self.problem(format!("{k}: {max_purge_fraction} is not between 0 and 1"));
        }
        // The guards of issue 14.
        let min_gone_for = self.duration(
            &at("min_gone_for", own.min_gone_for.is_some()),
            pick!(min_gone_for, "0s".into()),
        );
        let guard_window = self.duration(
            &at("guard_window", own.guard_window.is_some()),
            pick!(guard_window, "24h".into()),
        );
        let forget_after = self.duration(
            &at("forget_after", own.forget_after.is_some()),
            pick!(forget_after, "30d".into()),
        );
        let on_change_text: String = pick!(on_change, super::OnChange::default().as_str().into());
        let on_change = super::OnChange::ALL
            .into_iter()
            .find(|o| o.as_str() == on_change_text);
        if on_change.is_none() {
            let k = at("on_change", own.on_change.is_some());
            let names = super::OnChange::ALL.map(super::OnChange::as_str);
            self.problem(format!(
                "{k}: {on_change_text:?} is not one of {}",
                names.join(", ")
            ));
        }
        let max_invalidate_fraction = pick!(max_invalidate_fraction, 0.25);
        let max_inconclusive_fraction = pick!(max_inconclusive_fraction, 0.5);
        let fraction_floor = pick!(fraction_floor, 3);
        for (key, set_here, value) in [
            (
                "max_invalidate_fraction",
                own.max_invalidate_fraction.is_some(),
                max_invalidate_fraction,
            ),
            (
                "max_inconclusive_fraction",
                own.max_inconclusive_fraction.is_some(),
                max_inconclusive_fraction,
            ),
        ] {
            if !(0.0..=1.0).contains(&value) {
                let k = at(key, set_here);
                self.problem(format!("{k}: {value} is not between 0 and 1"));
            }
        }
        let headers = self.headers(label, defaults, own);
        if self.problems.len() > before {
            return None;
        }
        Some(Rules {
            headers,
            forget_after: forget_after?,
            on_change: on_change?,
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
            min_gone_for: min_gone_for?,
            max_invalidate_fraction,
            max_inconclusive_fraction,
            fraction_floor,
            guard_window: guard_window?,
        })
    }

    /// `headers:` of `defaults:` with the watch's merged over them, name by
    /// name (names compared case-insensitively), `${NAME}` expanded. A
    /// problem names the header, never its value.
    fn headers(
        &mut self,
        label: &str,
        defaults: &RawRules,
        own: &RawRules,
    ) -> crate::probe::ProbeHeaders {
        use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
        let mut map = HeaderMap::new();
        let layers = [
            ("defaults", defaults.headers.as_ref()),
            (label, own.headers.as_ref()),
        ];
        for (at, layer) in layers {
            for (name, value) in layer.into_iter().flatten() {
                let key = format!("{at}.headers.{name}");
                let name = match HeaderName::from_bytes(name.trim().as_bytes()) {
                    Ok(n) => n,
                    Err(_) => {
                        self.problem(format!("{key}: not a valid HTTP header name"));
                        continue;
                    }
                };
                if matches!(
                    name.as_str(),
                    "host" | "content-length" | "transfer-encoding" | "connection" | "range"
                ) {
                    self.problem(format!(
                        "{key}: origin-watch sets {name} itself; it cannot be a probe header"
                    ));
                    continue;
                }
                let value = match super::env::expand_env(value) {
                    Ok(v) => v,
                    Err(why) => {
                        self.problem(format!("{key}: {why}"));
                        continue;
                    }
                };
                match HeaderValue::from_str(value.trim()) {
                    Ok(v) => {
                        map.insert(name, v);
                    }
                    Err(_) => self.problem(format!(
                        "{key}: the value holds characters a header cannot have (control or non-ASCII)"
                    )),
                }
            }
        }
        crate::probe::ProbeHeaders::new(map)
    }

    /// A duration key (`10m`, `24h`, `0s`); zero is allowed.
    fn duration(&mut self, key: &str, text: String) -> Option<std::time::Duration> {
        match humantime::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(format!(
                    "{key}: bad duration {text:?} ({e}); write e.g. 0s, 10m, 24h, 30d"
                ));
                None
            }
        }
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
            Some(o) => match crate::sources::check_base(o) {
                Ok(_) => Some(o.trim_end_matches('/').to_owned()),
                Err(why) => {
                    self.problem(format!("{label}.origin: {why}"));
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
            match super::read_text(&path, super::MAX_IMAGES_FILE_BYTES) {
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
        if w.images.is_empty() && w.images_file.is_none() && w.discover.is_none() {
            self.problem(format!(
                "{label}: no images (give `images`, `images_file` or `discover`)"
            ));
        }
        let discover = self.discover(label, defaults, w, origin.as_deref());
        let (list, problems) = list.finish();
        self.problems.extend(problems);

        let canary = match w
            .canary
            .as_deref()
            .map(|c| crate::sources::resolve(c, origin.as_deref()))
        {
            None => None,
            Some(Ok(url)) if url.contains('#') => {
                self.problem(format!(
                    "{label}.canary: {:?} has a fragment (`#`), which is never sent to the origin",
                    crate::redact::for_stdout(&url)
                ));
                None
            }
            Some(Ok(url)) => Some(Arc::from(url)),
            Some(Err(why)) => {
                self.problem(format!("{label}.canary: {why}"));
                None
            }
        };

        if self.problems.len() > before {
            return None;
        }
        let (sources, probes, duplicates) = list.into_parts();
        Some(Watch {
            name,
            project,
            team_id: w.team_id.clone(),
            slug: w.slug.clone(),
            origin,
            canary,
            rules: rules?,
            sources,
            probes,
            duplicates,
            discover,
        })
    }

    // Discovery: the watch's `discover:` block (see `super::discover`).
    fn discover(
        &mut self,
        label: &str,
        defaults: &RawRules,
        w: &RawWatch,
        origin: Option<&str>,
    ) -> Option<Arc<super::Discover>> {
        let own = w.discover.as_ref()?;
        match super::discover::check(label, defaults.discover.as_ref(), own, origin) {
            Ok(d) => Some(Arc::new(d)),
            Err(problems) => {
                self.problems.extend(problems);
                None
            }
        }
    }
}
