//! The call plan, as a pure function: which settled sources go in which
//! API batch, per (endpoint, project, team, slug), each source once per
//! target (two watches of one project may ask for the same source), at most
//! [`MAX_BATCH`] per call; and what a refused token stops.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::store::Endpoint;
use crate::vercel::{MAX_BATCH, PurgeTarget};

/// One source some watch wants called, with the caller's handle for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<K> {
    pub endpoint: Endpoint,
    pub target: PurgeTarget,
    pub src: Arc<str>,
    pub key: K,
}

/// One API call to make: its sources, and for each the handles that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<K> {
    pub endpoint: Endpoint,
    pub target: PurgeTarget,
    pub sources: Vec<Arc<str>>,
    pub askers: Vec<Vec<K>>,
}

/// Groups what is wanted into batches: per (endpoint, target) in a stable
/// order, sources in the order first asked, each once, [`MAX_BATCH`] a call.
pub fn plan<K>(wanted: impl IntoIterator<Item = Wanted<K>>) -> Vec<Batch<K>> {
    // Per (endpoint, target): each source once, with everyone who asked.
    type Asked<K> = Vec<(Arc<str>, Vec<K>)>;
    let mut groups: BTreeMap<(Endpoint, PurgeTarget), Asked<K>> = BTreeMap::new();
    let mut slot: HashMap<(Endpoint, PurgeTarget, Arc<str>), usize> = HashMap::new();
    for w in wanted {
        let group = groups.entry((w.endpoint, w.target.clone())).or_default();
        let at = *slot
            .entry((w.endpoint, w.target, w.src.clone()))
            .or_insert_with(|| {
                group.push((w.src, Vec::new()));
                group.len() - 1
            });
        group[at].1.push(w.key);
    }
    let mut batches = Vec::new();
    for ((endpoint, target), mut sources) in groups {
        while !sources.is_empty() {
            let rest = sources.split_off(sources.len().min(MAX_BATCH));
            let (srcs, askers) = std::mem::replace(&mut sources, rest).into_iter().unzip();
            batches.push(Batch {
                endpoint,
                target: target.clone(),
                sources: srcs,
                askers,
            });
        }
    }
    batches
}

/// Targets whose token was refused (401/402/403) in this pass: no more
/// calls to them, on either endpoint. Keyed by the whole target, so a token
/// refused for team A's `shop` does not stop team B's `shop`.
#[derive(Debug, Default)]
pub struct Stopped {
    why: BTreeMap<PurgeTarget, String>,
}

impl Stopped {
    pub fn stop(&mut self, target: &PurgeTarget, why: String) {
        self.why.entry(target.clone()).or_insert(why);
    }

    /// Why calls to `target` stopped, if they did.
    pub fn why(&self, target: &PurgeTarget) -> Option<&str> {
        self.why.get(target).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(project: &str, team: Option<&str>) -> PurgeTarget {
        PurgeTarget {
            project: project.into(),
            team_id: team.map(str::to_owned),
            slug: None,
        }
    }

    fn want(endpoint: Endpoint, t: &PurgeTarget, src: &str, key: u32) -> Wanted<u32> {
        Wanted {
            endpoint,
            target: t.clone(),
            src: Arc::from(src),
            key,
        }
    }

    #[test]
    fn nine_sources_of_one_target_make_two_calls_of_eight_and_one() {
        let t = target("shop", None);
        let b = plan((0..9).map(|i| want(Endpoint::Delete, &t, &format!("/{i}.png"), i)));
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].sources.len(), 8);
        assert_eq!(b[1].sources.len(), 1);
        assert_eq!(&*b[1].sources[0], "/8.png");
        assert_eq!(b[1].askers, vec![vec![8]]);
    }

    #[test]
    fn a_source_asked_twice_for_one_target_is_sent_once_with_both_askers() {
        let t = target("shop", None);
        let b = plan([
            want(Endpoint::Delete, &t, "/a.png", 1),
            want(Endpoint::Delete, &t, "/b.png", 2),
            want(Endpoint::Delete, &t, "/a.png", 3),
        ]);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].sources, vec![Arc::from("/a.png"), Arc::from("/b.png")]);
        assert_eq!(b[0].askers, vec![vec![1, 3], vec![2]]);
    }

    #[test]
    fn targets_and_endpoints_never_share_a_call() {
        let (a, b) = (
            target("shop", Some("team_a")),
            target("shop", Some("team_b")),
        );
        let batches = plan([
            want(Endpoint::Delete, &a, "/x.png", 1),
            want(Endpoint::Delete, &b, "/x.png", 2),
            want(Endpoint::Invalidate, &a, "/y.png", 3),
        ]);
        assert_eq!(batches.len(), 3);
        for batch in &batches {
            assert_eq!(batch.sources.len(), 1);
        }
        assert!(
            batches
                .iter()
                .any(|x| x.endpoint == Endpoint::Invalidate && x.target == a)
        );
    }

    #[test]
    fn exactly_eight_is_one_call() {
        let t = target("shop", None);
        assert_eq!(
            plan((0..8).map(|i| want(Endpoint::Delete, &t, &i.to_string(), i))).len(),
            1
        );
        assert!(plan(Vec::<Wanted<u32>>::new()).is_empty());
    }

    #[test]
    fn a_refused_token_stops_its_target_only() {
        let (a, b) = (
            target("shop", Some("team_a")),
            target("shop", Some("team_b")),
        );
        let mut s = Stopped::default();
        s.stop(&a, "401".into());
        s.stop(&a, "403 later".into());
        assert_eq!(s.why(&a), Some("401"));
        assert_eq!(s.why(&b), None);
    }
}
