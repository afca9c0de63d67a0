//! Checks a [`RawConfig`] into a [`Config`], collecting every problem
//! rather than stopping at the first: cron expressions, durations, ranges,
//! URLs, duplicate names and the source lists.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use url::Url;

use super::raw::{RawConfig, RawRules, RawVercel, RawWatch};
use super::{Config, MAX_DEADLINE_SECONDS, Rules, VercelConfig, Watch};
use crate::schedule::CronSchedule;

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
        if max_purges_per_pass == 0 {
            let k = at("max_purges_per_pass", own.max_purges_per_pass.is_some());
            self.problem(format!("{k}: must be at least 1"));
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
            min_gone_for: min_gone_for?,
            max_invalidate_fraction,
            max_inconclusive_fraction,
            fraction_floor,
            guard_window: guard_window?,
        })
    }

    /// A duration key (`10m`, `24h`, `0s`); zero is allowed.
    fn duration(&mut self, key: &str, text: String) -> Option<std::time::Duration> {
        match humantime::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(format!(
                    "{key}: bad duration {text:?} ({e}); write e.g. 0s, 10m, 24h"
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
