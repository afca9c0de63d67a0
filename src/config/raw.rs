//! The file as written: serde structs that mirror `watch.yaml` key for
//! key, unknown keys denied (so a typo is an error with its line and
//! column). [`super::check`] turns them into a [`super::Config`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

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
    /// One more PEM bundle of CAs to trust.
    pub ca_file: Option<String>,
    /// The webhook told of guards, failures and (opt in) purges.
    pub notify: Option<RawNotify>,
}

/// `notify:`, as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub url: Option<String>,
    pub on: Option<Vec<String>>,
    pub timeout: Option<String>,
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
    pub forget_after: Option<String>,
    // Discovery: only in `defaults:`; a watch sets its own `discover:` block.
    pub discover: Option<super::discover::RawDiscoverDefaults>,
    // The guards of issue 14.
    pub min_gone_for: Option<String>,
    pub max_invalidate_fraction: Option<f64>,
    pub max_inconclusive_fraction: Option<f64>,
    pub fraction_floor: Option<usize>,
    pub guard_window: Option<String>,
    pub on_change: Option<String>,
    /// Probe headers (name -> value, `${ENV}` allowed); a watch's are
    /// merged over these, name by name.
    pub headers: Option<BTreeMap<String, String>>,
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
    // The rule overrides: the same keys as `defaults:`, spelled out again
    // because `#[serde(flatten)]` would switch off `deny_unknown_fields`
    // and lose the line numbers of errors.
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
    pub forget_after: Option<String>,
    // Discovery: the watch's `discover:` block.
    pub discover: Option<super::discover::RawDiscover>,
    // The guards of issue 14.
    pub min_gone_for: Option<String>,
    pub max_invalidate_fraction: Option<f64>,
    pub max_inconclusive_fraction: Option<f64>,
    pub fraction_floor: Option<usize>,
    pub guard_window: Option<String>,
    pub on_change: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
}

impl RawWatch {
    /// The rule overrides this watch sets, as a `defaults:`-shaped block.
    pub fn rules(&self) -> RawRules {
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
            forget_after: self.forget_after.clone(),
            discover: None,
            min_gone_for: self.min_gone_for.clone(),
            max_invalidate_fraction: self.max_invalidate_fraction,
            max_inconclusive_fraction: self.max_inconclusive_fraction,
            fraction_floor: self.fraction_floor,
            guard_window: self.guard_window.clone(),
            on_change: self.on_change.clone(),
            headers: self.headers.clone(),
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
