//! Sharding: `--shard K/N` makes a process own only the sources whose probe
//! URL hashes to K modulo N, so N processes (e.g. a Kubernetes Indexed Job)
//! split a large watch list between them. The hash is FNV-1a (64 bit) over
//! the bytes of the probe URL as configured (`origin` + path, the source
//! URL, or the explicit `probe:`): defined here, not by a library or the platform, so
//! it never changes between releases. Aliases share a probe URL and so
//! always land in the same shard. Each shard keeps its own state file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One shard of N (K is 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Why a `--shard K/N` (or `--shards N` with its job index) is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard {0:?} is not K/N (e.g. 0/4)")]
    NotKOfN(String),
    #[error("shard {shard:?}: {what} is too large (at most {max})", max = u32::MAX)]
    TooLarge { shard: String, what: &'static str },
    #[error("shard {shard:?}: {what} is not a number")]
    NotANumber { shard: String, what: &'static str },
    #[error("shard count N must be at least 1")]
    NoShards,
    #[error("shard index {index} is not below the shard count {count} (K counts from 0)")]
    IndexTooLarge { index: u32, count: u32 },
    #[error(
        "--shards needs JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job); use --shard K/N elsewhere"
    )]
    NoJobIndex,
    #[error("JOB_COMPLETION_INDEX {0:?} is not a number")]
    BadJobIndex(String),
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| ShardError::NotKOfN(s.to_owned()))?;
        let number = |what: &'static str, v: &str| -> Result<u32, ShardError> {
            let v = v.trim();
            v.parse().map_err(|_| {
                let shard = s.to_owned();
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    ShardError::TooLarge { shard, what }
                } else {
                    ShardError::NotANumber { shard, what }
                }
            })
        };
        let count = number("N", n)?;
        let index = number("K", k)?;
        Shard::new(index, count)
    }
}

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards);
        }
        if index >= count {
            return Err(ShardError::IndexTooLarge { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The shard of `--shards N`, with K from Kubernetes' `JOB_COMPLETION_INDEX`.
    pub fn from_job_index(count: u32, job_index: Option<&str>) -> Result<Shard, ShardError> {
        // A bad N is the first thing to say, whatever the index.
        Shard::new(0, count)?;
        let k = job_index.ok_or(ShardError::NoJobIndex)?;
        let index = k
            .trim()
            .parse()
            .map_err(|_| ShardError::BadJobIndex(k.to_owned()))?;
        Shard::new(index, count)
    }

    pub fn owns(&self, probe_url: &str) -> bool {
        fnv1a(probe_url.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }

    /// The shard's own state file: `state.json` -> `state.shard-2-of-4.json`.
    pub fn state_path(&self, path: &Path) -> PathBuf {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        let name = match path.extension() {
            Some(ext) => format!(
                "{stem}.shard-{}-of-{}.{}",
                self.index,
                self.count,
                ext.to_string_lossy()
            ),
            None => format!("{stem}.shard-{}-of-{}", self.index, self.count),
        };
        path.with_file_name(name)
    }
}

/// FNV-1a, 64 bit: small, fast, and fixed by its definition.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::BTreeMap;

    #[test]
    fn parses_k_of_n() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert!(
            "4/4"
                .parse::<Shard>()
                .unwrap_err()
                .to_string()
                .contains("not below")
        );
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        let e = "0/18446744073709551615"
            .parse::<Shard>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("N is too large (at most 4294967295)"), "{e}");
        assert!(
            "a/4"
                .parse::<Shard>()
                .unwrap_err()
                .to_string()
                .contains("K is not a number")
        );
        assert_eq!(
            Shard::from_job_index(3, Some("1")),
            Ok(Shard { index: 1, count: 3 })
        );
        assert!(
            Shard::from_job_index(3, None)
                .unwrap_err()
                .to_string()
                .contains("JOB_COMPLETION_INDEX")
        );
        assert!(
            Shard::from_job_index(0, None)
                .unwrap_err()
                .to_string()
                .contains("at least 1")
        );
    }

    /// The hash is part of the product: a change would move every source to
    /// another shard (and away from its state). These values must not change.
    #[test]
    fn the_hash_is_pinned() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        // The published FNV-1a 64 test vector.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let table = [
            ("https://my-next-app.vercel.app/images/hero.png", 4, 1),
            ("https://my-next-app.vercel.app/images/logo.png", 4, 2),
            ("https://images.example.com/photo.jpg", 4, 1),
            ("https://origin.example.com/avatars/1.png", 4, 3),
            ("https://my-next-app.vercel.app/images/hero.png", 7, 5),
            ("https://images.example.com/photo.jpg", 7, 1),
        ];
        for (url, n, k) in table {
            assert_eq!(
                fnv1a(url.as_bytes()) % n,
                k,
                "{url} mod {n} moved to another shard"
            );
        }
    }

    /// The whole mapping, as a user meets it: sources in a config (path
    /// style under an origin with a trailing `/`, an alias with its own
    /// `probe`, a remote URL with a query) -> the shard that owns them.
    /// Computed independently (FNV-1a 64 of the probe URL, mod N); a
    /// change to the hash, to how probe URLs are built or to `owns` fails here.
    #[test]
    fn the_shard_of_each_source_is_pinned() {
        let c = Config::from_yaml(
            "watches:
  - name: site
    project: p
    origin: https://my-next-app.vercel.app/
    images:
      - /images/hero.png
      - /images/logo.png
      - { src: /api/avatar/1, probe: https://origin.example.com/avatars/1.png }
      - https://images.example.com/photo.jpg?w=640
      - /images/a b.png
      - /img/0.png
      - /img/1.png
      - /img/2.png
",
        )
        .unwrap();
        let w = &c.watches()[0];
        // src -> shard for N = 2, 4, 7.
        let table: [(&str, [u32; 3]); 8] = [
            ("/images/hero.png", [1, 1, 5]),
            ("/images/logo.png", [0, 2, 4]),
            ("/api/avatar/1", [1, 3, 5]),
            ("https://images.example.com/photo.jpg?w=640", [0, 0, 1]),
            ("/images/a b.png", [0, 0, 3]),
            ("/img/0.png", [0, 2, 6]),
            ("/img/1.png", [1, 1, 0]),
            ("/img/2.png", [0, 0, 2]),
        ];
        for (i, n) in [2u32, 4, 7].into_iter().enumerate() {
            for (src, shards) in &table {
                let owner: Vec<u32> = (0..n)
                    .filter(|&k| {
                        let part = w.shard_part(Shard::new(k, n).unwrap());
                        part.sources().iter().any(|s| &*s.src == *src)
                    })
                    .collect();
                assert_eq!(owner, [shards[i]], "{src} with {n} shards moved");
            }
        }
    }

    #[test]
    fn shards_partition_the_sources_exactly() {
        let images: Vec<String> = (0..500).map(|i| format!("/img/{i}.png")).collect();
        let c = Config::from_yaml(&format!(
            "watches:\n  - name: s\n    project: p\n    origin: https://e.com\n    images: {images:?}\n"
        ))
        .unwrap();
        let w = &c.watches()[0];
        for n in [1, 2, 3, 4, 7, 16] {
            let mut seen: BTreeMap<String, u32> = BTreeMap::new();
            for k in 0..n {
                let part = w.shard_part(Shard::new(k, n).unwrap());
                for s in part.sources() {
                    let probe = &part.probes()[s.probe()];
                    assert_eq!(part.probe_url(probe), format!("https://e.com{}", s.src));
                    *seen.entry(s.src.to_string()).or_default() += 1;
                }
            }
            assert_eq!(seen.len(), 500, "none lost with {n} shards");
            assert!(seen.values().all(|c| *c == 1), "each once with {n} shards");
        }
    }

    #[test]
    fn aliases_stay_together() {
        let c = Config::from_yaml(
            "watches:\n  - name: s\n    project: p\n    origin: https://e.com\n    images: [/a.png, { src: /alias.png, probe: https://e.com/a.png }, /b.png, /c.png]\n",
        )
        .unwrap();
        for k in 0..3 {
            let part = c.watches()[0].shard_part(Shard::new(k, 3).unwrap());
            let srcs: Vec<&str> = part.sources().iter().map(|s| &*s.src).collect();
            assert_eq!(srcs.contains(&"/a.png"), srcs.contains(&"/alias.png"));
        }
    }

    #[test]
    fn a_shard_shows_as_k_of_n() {
        assert_eq!(Shard::new(2, 4).unwrap().to_string(), "2/4");
        assert_eq!(Shard::new(0, 1).unwrap().to_string(), "0/1");
    }

    #[test]
    fn each_shard_has_its_own_state_file() {
        let s = Shard::new(2, 4).unwrap();
        assert_eq!(
            s.state_path(Path::new("/var/lib/ow/state.json")),
            Path::new("/var/lib/ow/state.shard-2-of-4.json")
        );
        assert_eq!(
            s.state_path(Path::new("state")),
            Path::new("state.shard-2-of-4")
        );
    }
}
