//! Every unknown key of a config, with its path. serde's
//! `deny_unknown_fields` stops at the first; an operator with a typo in
//! `tokn_env` and nine more problems should see all ten at once. The known
//! keys are read from the raw structs themselves (the field list serde
//! hands a deserializer), so they cannot drift from what is accepted.

use serde::Deserialize;
use serde_yaml::Value;

use super::raw::{RawConfig, RawNotify, RawRules, RawVercel, RawWatch};
use super::{RawDiscover, RawDiscoverDefaults};

/// The field names a `Deserialize` struct accepts.
fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Grab(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Grab {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut g = Grab(None);
    let _ = T::deserialize(&mut g);
    g.0.unwrap_or(&[])
}

/// `path.key: unknown key; expected one of ...` for every unknown key,
/// and `value` with those keys removed (so the rest can be checked).
pub(super) fn unknown_keys(value: &mut Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Value::Mapping(top) = value else {
        return problems;
    };
    strip(top, "", fields::<RawConfig>(), &mut problems);
    let mut nested = |key: &str, known: &'static [&'static str], problems: &mut Vec<String>| {
        if let Some(Value::Mapping(m)) = top.get_mut(key) {
            strip(m, key, known, problems);
        }
    };
    nested("vercel", fields::<RawVercel>(), &mut problems);
    nested("notify", fields::<RawNotify>(), &mut problems);
    nested("defaults", fields::<RawRules>(), &mut problems);
    if let Some(Value::Mapping(d)) = top.get_mut("defaults")
        && let Some(Value::Mapping(disc)) = d.get_mut("discover")
    {
        strip(
            disc,
            "defaults.discover",
            fields::<RawDiscoverDefaults>(),
            &mut problems,
        );
    }
    if let Some(Value::Sequence(watches)) = top.get_mut("watches") {
        for (i, w) in watches.iter_mut().enumerate() {
            let Value::Mapping(w) = w else { continue };
            let label = match w.get("name").and_then(Value::as_str) {
                Some(n) => format!("watches[{i}] ({n})"),
                None => format!("watches[{i}]"),
            };
            strip(w, &label, fields::<RawWatch>(), &mut problems);
            if let Some(Value::Mapping(disc)) = w.get_mut("discover") {
                strip(
                    disc,
                    &format!("{label}.discover"),
                    fields::<RawDiscover>(),
                    &mut problems,
                );
            }
            if let Some(Value::Sequence(images)) = w.get_mut("images") {
                for (j, img) in images.iter_mut().enumerate() {
                    if let Value::Mapping(img) = img {
                        strip(
                            img,
                            &format!("{label}.images[{j}]"),
                            &["src", "probe"],
                            &mut problems,
                        );
                    }
                }
            }
        }
    }
    problems
}

fn strip(map: &mut serde_yaml::Mapping, at: &str, known: &[&str], problems: &mut Vec<String>) {
    let unknown: Vec<Value> = map
        .keys()
        .filter(|k| k.as_str().is_none_or(|k| !known.contains(&k)))
        .cloned()
        .collect();
    for key in unknown {
        let name = key
            .as_str()
            .map_or_else(|| format!("{key:?}"), str::to_owned);
        let path = if at.is_empty() {
            name
        } else {
            format!("{at}.{name}")
        };
        problems.push(format!(
            "{}: unknown key; expected one of: {}",
            crate::redact::for_stdout(&path),
            known.join(", ")
        ));
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_keys_come_from_the_structs() {
        assert!(fields::<RawVercel>().contains(&"token_env"));
        assert!(fields::<RawWatch>().contains(&"images_file"));
        assert!(fields::<RawConfig>().contains(&"watches"));
    }

    #[test]
    fn every_unknown_key_is_listed_with_its_path() {
        let mut v: Value = serde_yaml::from_str(
            "vercel: { tokn_env: X }\nstatee: a\nwatches:\n  - { name: s, projct: p, images: [{ src: /a, prob: x }], discover: { sitemap: [] } }\n",
        )
        .unwrap();
        let p = unknown_keys(&mut v).join("\n");
        for want in [
            "vercel.tokn_env: unknown key",
            "statee: unknown key",
            "watches[0] (s).projct: unknown key",
            "watches[0] (s).images[0].prob: unknown key",
            "watches[0] (s).discover.sitemap: unknown key",
        ] {
            assert!(p.contains(want), "{want} in\n{p}");
        }
        assert!(RawConfig::deserialize(v).is_ok(), "the rest deserializes");
    }
}
