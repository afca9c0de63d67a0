//! The blast-radius checks over a whole pass of one watch, as a pure
//! function: how many of the sources due for purge may be purged now.
//!
//! - `canary`: the watch's canary must probe present, else nothing is purged
//!   (an origin that 404s its own logo is broken, not cleaned up).
//! - `max_purge_fraction`: more sources due than this share of the watch
//!   means the origin itself looks broken: nothing is purged.
//! - `max_purges_per_pass`: at most this many purges per pass; the rest wait
//!   for the next pass (a rate limit, not an alarm).

use std::fmt;

/// Which guard held purges back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    Canary,
    MaxPurgeFraction,
    MaxPurgesPerPass,
}

impl Guard {
    pub const ALL: [Guard; 3] = [
        Guard::Canary,
        Guard::MaxPurgeFraction,
        Guard::MaxPurgesPerPass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Guard::Canary => "canary",
            Guard::MaxPurgeFraction => "max_purge_fraction",
            Guard::MaxPurgesPerPass => "max_purges_per_pass",
        }
    }

    /// Whether a trip of this guard is an alarm (exit code 3) rather than a
    /// rate limit whose remainder is purged on later passes.
    pub fn is_alarm(self) -> bool {
        !matches!(self, Guard::MaxPurgesPerPass)
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The canary's state in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canary {
    NotConfigured,
    Present,
    /// Not present; the text says what it answered.
    NotPresent(String),
}

/// The figures the guards look at.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardInput {
    /// Sources in the watch.
    pub sources: usize,
    /// Sources confirmed gone and not yet purged in their episode.
    pub due: usize,
    pub canary: Canary,
    pub max_purge_fraction: f64,
    pub max_purges_per_pass: usize,
}

/// What the guards allow: the first `allowed` due sources may be purged;
/// the rest are withheld for `reason`.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardOutcome {
    pub allowed: usize,
    pub tripped: Option<(Guard, String)>,
}

/// The most sources that may be due in one pass of a watch of `sources`
/// without tripping `max_purge_fraction` (the guard trips when the due
/// count is strictly greater than `fraction * sources`). Counted in whole
/// sources, with a little slack for binary rounding, so that 29 of 100 at
/// 0.29 passes although `0.29 * 100.0` is 28.999999999999996.
pub fn max_due(fraction: f64, sources: usize) -> usize {
    (fraction * sources as f64 + 1e-9).floor() as usize
}

pub fn check(input: &GuardInput) -> GuardOutcome {
    let none = GuardOutcome {
        allowed: input.due,
        tripped: None,
    };
    if input.due == 0 {
        return none;
    }
    if let Canary::NotPresent(what) = &input.canary {
        return GuardOutcome {
            allowed: 0,
            tripped: Some((
                Guard::Canary,
                format!("canary is not present ({what}); the origin looks broken"),
            )),
        };
    }
    if input.due > max_due(input.max_purge_fraction, input.sources) {
        return GuardOutcome {
            allowed: 0,
            tripped: Some((
                Guard::MaxPurgeFraction,
                format!(
                    "{} of {} sources due for purge ({:.1}%) is more than max_purge_fraction {}; the origin looks broken",
                    input.due,
                    input.sources,
                    100.0 * input.due as f64 / input.sources.max(1) as f64,
                    input.max_purge_fraction
                ),
            )),
        };
    }
    if input.due > input.max_purges_per_pass {
        return GuardOutcome {
            allowed: input.max_purges_per_pass,
            tripped: Some((
                Guard::MaxPurgesPerPass,
                format!(
                    "{} due but max_purges_per_pass is {}; the rest wait for a later pass",
                    input.due, input.max_purges_per_pass
                ),
            )),
        };
    }
    none
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(sources: usize, due: usize) -> GuardInput {
        GuardInput {
            sources,
            due,
            canary: Canary::NotConfigured,
            max_purge_fraction: 0.25,
            max_purges_per_pass: 500,
        }
    }

    #[test]
    fn nothing_due_trips_nothing() {
        let mut i = input(10, 0);
        i.canary = Canary::NotPresent("404".into());
        assert_eq!(check(&i).tripped, None);
    }

    #[test]
    fn due_within_the_fraction_is_allowed() {
        assert_eq!(check(&input(100, 25)).allowed, 25);
    }

    #[test]
    fn more_than_the_fraction_withholds_everything() {
        let o = check(&input(100, 26));
        assert_eq!(o.allowed, 0);
        let (g, why) = o.tripped.unwrap();
        assert_eq!(g, Guard::MaxPurgeFraction);
        assert!(why.contains("26 of 100"), "{why}");
        assert!(g.is_alarm());
    }

    #[test]
    fn absent_canary_withholds_everything() {
        let mut i = input(100, 1);
        i.canary = Canary::NotPresent("404".into());
        let o = check(&i);
        assert_eq!(o.allowed, 0);
        assert_eq!(o.tripped.unwrap().0, Guard::Canary);
    }

    #[test]
    fn cap_lets_the_first_n_through() {
        let mut i = input(100, 20);
        i.max_purges_per_pass = 10;
        let o = check(&i);
        assert_eq!(o.allowed, 10);
        let g = o.tripped.unwrap().0;
        assert_eq!(g, Guard::MaxPurgesPerPass);
        assert!(!g.is_alarm());
    }

    #[test]
    fn exactly_the_fraction_passes_despite_float_rounding() {
        // 0.29 * 100.0 == 28.999999999999996 in binary floating point.
        for (fraction, sources, due) in [(0.29, 100, 29), (0.1, 30, 3), (0.7, 10, 7)] {
            let mut i = input(sources, due);
            i.max_purge_fraction = fraction;
            assert_eq!(check(&i).allowed, due, "{due} of {sources} at {fraction}");
            i.due = due + 1;
            assert_eq!(
                check(&i).allowed,
                0,
                "{} of {sources} at {fraction}",
                due + 1
            );
        }
        assert_eq!(max_due(0.25, 3), 0);
        assert_eq!(max_due(0.0, 1000), 0);
        assert_eq!(max_due(1.0, 7), 7);
    }

    #[test]
    fn fraction_of_one_allows_a_whole_watch() {
        let mut i = input(3, 3);
        i.max_purge_fraction = 1.0;
        assert_eq!(check(&i).allowed, 3);
    }
}
