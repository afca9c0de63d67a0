//! The blast-radius checks over a whole pass of one watch, as a pure
//! function: how many of the sources due for purge may be purged now.
//!
//! - `inconclusive`: more probe URLs inconclusive than
//!   `max_inconclusive_fraction` of the watch's means the pass cannot see
//!   most of the origin: it acts on none of the rest, and says so even when
//!   nothing is due (a pass that sees nothing must not look green).
//! - `canary`: the watch's canary must probe present, else nothing is purged
//!   (an origin that 404s its own logo is broken, not cleaned up).
//! - `max_purge_fraction`: more sources due now *or purged within
//!   `guard_window`* than this share of the watch means the origin itself
//!   looks broken, even when it breaks a little more each pass: nothing is
//!   purged.
//! - `fraction_floor`: the fraction guards never trip at or below this many,
//!   so a watch (or shard) of a handful of sources can still purge one.
//! - `max_purges_per_pass`: at most this many purges per pass; the rest wait
//!   for the next pass (a rate limit, not an alarm).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Which guard held purges back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Guard {
    Canary,
    Inconclusive,
    MaxPurgeFraction,
    MaxInvalidateFraction,
    MaxPurgesPerPass,
}

/// What the sources due are due for: the two calls are guarded apart, each
/// by its own fraction (the canary, the inconclusive guard and the per-pass
/// cap apply to both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Purge,
    Invalidate,
}

impl Guard {
    pub const ALL: [Guard; 5] = [
        Guard::Canary,
        Guard::Inconclusive,
        Guard::MaxPurgeFraction,
        Guard::MaxInvalidateFraction,
        Guard::MaxPurgesPerPass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Guard::Canary => "canary",
            Guard::Inconclusive => "inconclusive",
            Guard::MaxPurgeFraction => "max_purge_fraction",
            Guard::MaxInvalidateFraction => "max_invalidate_fraction",
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

/// The figures the guards look at, for one watch (or shard) in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardInput {
    /// Sources in the watch.
    pub sources: usize,
    /// Probe URLs in the watch (aliases share one).
    pub probes: usize,
    /// Probe URLs that probed inconclusive in this pass.
    pub inconclusive: usize,
    /// Sources confirmed gone and not yet purged in their episode.
    pub due: usize,
    /// Distinct sources purged within `guard_window` before this pass and
    /// not due now (the caller keeps the two apart: a source counts once).
    pub recent: usize,
    pub canary: Canary,
    /// What `due` and `recent` are due for or got.
    pub action: Action,
    pub max_purge_fraction: f64,
    pub max_invalidate_fraction: f64,
    pub max_inconclusive_fraction: f64,
    pub fraction_floor: usize,
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

/// The largest count a fraction guard lets through for a watch of `of`
/// (sources or probe URLs): it trips only when its count is strictly
/// greater than both `fraction * of` and `floor`. A fraction of 1 (or more)
/// turns the guard off, whatever the count.
pub fn limit(fraction: f64, of: usize, floor: usize) -> usize {
    if fraction >= 1.0 {
        usize::MAX
    } else {
        max_due(fraction, of).max(floor)
    }
}

fn percent(n: usize, of: usize) -> f64 {
    100.0 * n as f64 / of.max(1) as f64
}

pub fn check(input: &GuardInput) -> GuardOutcome {
    let withhold = |guard: Guard, why: String| GuardOutcome {
        allowed: 0,
        tripped: Some((guard, why)),
    };
    // First, and even with nothing due: a pass blind to most of the origin
    // is an alarm in itself, and the few 404s it did get are no evidence.
    let blind = limit(
        input.max_inconclusive_fraction,
        input.probes,
        input.fraction_floor,
    );
    if input.inconclusive > blind {
        return withhold(
            Guard::Inconclusive,
            format!(
                "{} of {} probe URLs inconclusive ({:.1}%) is more than max_inconclusive_fraction {} and more than fraction_floor {}; the pass cannot see most of the origin",
                input.inconclusive,
                input.probes,
                percent(input.inconclusive, input.probes),
                input.max_inconclusive_fraction,
                input.fraction_floor
            ),
        );
    }
    if input.due == 0 {
        return GuardOutcome {
            allowed: 0,
            tripped: None,
        };
    }
    if let Canary::NotPresent(what) = &input.canary {
        return withhold(
            Guard::Canary,
            format!("canary is not present ({what}); the origin looks broken"),
        );
    }
    let count = input.due.saturating_add(input.recent);
    let (guard, fraction, due_for, done, looks) = match input.action {
        Action::Purge => (
            Guard::MaxPurgeFraction,
            input.max_purge_fraction,
            "purge",
            "purged",
            "the origin looks broken",
        ),
        Action::Invalidate => (
            Guard::MaxInvalidateFraction,
            input.max_invalidate_fraction,
            "invalidation",
            "invalidated",
            "a deploy may have rewritten every file's validators without new bytes",
        ),
    };
    if count > limit(fraction, input.sources, input.fraction_floor) {
        let parts = if input.recent == 0 {
            String::new()
        } else {
            format!(
                "{} due now, {} {done} within guard_window; ",
                input.due, input.recent
            )
        };
        return withhold(
            guard,
            format!(
                "{count} of {} sources due for {due_for} ({parts}{:.1}%) is more than {guard} {fraction} and more than fraction_floor {}; {looks}",
                input.sources,
                percent(count, input.sources),
                input.fraction_floor
            ),
        );
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
    GuardOutcome {
        allowed: input.due,
        tripped: None,
    }
}

/// How many of `purged_at` fall within `window` before `now` (strictly: a
/// purge exactly `window` ago has left it; one stamped after `now`, from a
/// clock that stepped back, is still in it). The count a fraction guard adds
/// to what is due now.
pub fn purged_within(
    purged_at: impl IntoIterator<Item = DateTime<Utc>>,
    now: DateTime<Utc>,
    window: Duration,
) -> usize {
    let window = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
    purged_at
        .into_iter()
        .filter(|at| now.signed_duration_since(*at) < window)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn input(sources: usize, due: usize) -> GuardInput {
        GuardInput {
            sources,
            probes: sources,
            inconclusive: 0,
            due,
            recent: 0,
            canary: Canary::NotConfigured,
            action: Action::Purge,
            max_purge_fraction: 0.25,
            max_invalidate_fraction: 0.25,
            max_inconclusive_fraction: 0.5,
            fraction_floor: 3,
            max_purges_per_pass: 500,
        }
    }

    fn tripped(i: &GuardInput) -> Option<Guard> {
        check(i).tripped.map(|(g, _)| g)
    }

    #[test]
    fn nothing_due_trips_nothing() {
        let mut i = input(10, 0);
        i.canary = Canary::NotPresent("404".into());
        i.recent = 10;
        assert_eq!(
            check(&i),
            GuardOutcome {
                allowed: 0,
                tripped: None
            }
        );
    }

    #[test]
    fn due_within_the_fraction_is_allowed() {
        assert_eq!(
            check(&input(100, 25)),
            GuardOutcome {
                allowed: 25,
                tripped: None
            }
        );
    }

    #[test]
    fn more_than_the_fraction_withholds_everything() {
        let o = check(&input(100, 26));
        assert_eq!(o.allowed, 0);
        let (g, why) = o.tripped.unwrap();
        assert_eq!(g, Guard::MaxPurgeFraction);
        assert_eq!(
            why,
            "26 of 100 sources due for purge (26.0%) is more than max_purge_fraction 0.25 and more than fraction_floor 3; the origin looks broken"
        );
        assert!(g.is_alarm());
    }

    #[test]
    fn absent_canary_withholds_everything() {
        let mut i = input(100, 1);
        i.canary = Canary::NotPresent("404".into());
        let o = check(&i);
        assert_eq!(o.allowed, 0);
        let (g, why) = o.tripped.unwrap();
        assert_eq!(g, Guard::Canary);
        assert_eq!(why, "canary is not present (404); the origin looks broken");
        assert!(g.is_alarm());
        i.canary = Canary::Present;
        assert_eq!(check(&i).allowed, 1);
    }

    #[test]
    fn cap_lets_the_first_n_through() {
        let mut i = input(100, 20);
        i.max_purge_fraction = 1.0;
        i.max_purges_per_pass = 10;
        let o = check(&i);
        assert_eq!(o.allowed, 10);
        let (g, why) = o.tripped.unwrap();
        assert_eq!(g, Guard::MaxPurgesPerPass);
        assert_eq!(
            why,
            "20 due but max_purges_per_pass is 10; the rest wait for a later pass"
        );
        assert!(!g.is_alarm());
        i.max_purges_per_pass = 20;
        assert_eq!(check(&i).tripped, None, "exactly the cap passes");
    }

    #[test]
    fn exactly_the_fraction_passes_despite_float_rounding() {
        // 0.29 * 100.0 == 28.999999999999996 in binary floating point.
        for (fraction, sources, due) in [(0.29, 100, 29), (0.1, 50, 5), (0.7, 10, 7)] {
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
        i.fraction_floor = 0;
        i.max_purge_fraction = 1.0;
        assert_eq!(check(&i).allowed, 3);
        // Off means off, even when the window counts more than the watch
        // holds now (sources purged and then dropped from the config).
        i.recent = 5;
        assert_eq!(check(&i).allowed, 3);
        assert_eq!(limit(1.0, 7, 0), usize::MAX);
        assert_eq!(limit(0.99, 7, 0), 6);
    }

    // fraction_floor

    #[test]
    fn the_floor_lets_a_small_watch_purge() {
        // 5 sources: 0.25 of them is 1.25, so without the floor one gone
        // source would trip the guard; with the default floor 3, up to 3 pass.
        for due in 1..=3 {
            assert_eq!(check(&input(5, due)).allowed, due, "{due} of 5");
        }
        assert_eq!(tripped(&input(5, 4)), Some(Guard::MaxPurgeFraction));
        // A shard of one or two sources can always purge them.
        assert_eq!(check(&input(1, 1)).allowed, 1);
        assert_eq!(check(&input(2, 2)).allowed, 2);
    }

    #[test]
    fn the_floor_edge_is_strict() {
        for sources in [1, 4, 8, 12] {
            let mut i = input(sources, 3);
            i.max_purge_fraction = 0.0;
            assert_eq!(check(&i).allowed, 3, "3 of {sources} at the floor");
            i.due = 4;
            i.sources = sources.max(4);
            assert_eq!(tripped(&i), Some(Guard::MaxPurgeFraction), "4 of {sources}");
        }
        assert_eq!(limit(0.25, 100, 3), 25);
        assert_eq!(limit(0.25, 8, 3), 3);
        assert_eq!(limit(0.25, 16, 3), 4);
    }

    #[test]
    fn the_guard_trips_only_above_both_the_fraction_and_the_floor() {
        // Above the floor, within the fraction.
        assert_eq!(tripped(&input(100, 10)), None);
        // Above the fraction, within the floor.
        assert_eq!(tripped(&input(4, 3)), None);
        // Above both.
        assert_eq!(tripped(&input(12, 4)), Some(Guard::MaxPurgeFraction));
        // A higher floor covers more.
        let mut i = input(12, 4);
        i.fraction_floor = 4;
        assert_eq!(tripped(&i), None);
    }

    #[test]
    fn a_floor_of_zero_is_the_bare_fraction() {
        let mut i = input(3, 1);
        i.fraction_floor = 0;
        let (g, why) = check(&i).tripped.unwrap();
        assert_eq!(g, Guard::MaxPurgeFraction);
        assert!(
            why.contains("1 of 3 sources due for purge (33.3%)"),
            "{why}"
        );
        assert!(why.contains("fraction_floor 0"), "{why}");
    }

    // The rolling window

    #[test]
    fn recent_purges_count_toward_the_fraction() {
        let mut i = input(100, 20);
        i.recent = 5;
        assert_eq!(check(&i).allowed, 20, "25 of 100 is the limit");
        i.recent = 6;
        let o = check(&i);
        assert_eq!(o.allowed, 0);
        let (g, why) = o.tripped.unwrap();
        assert_eq!(g, Guard::MaxPurgeFraction);
        assert_eq!(
            why,
            "26 of 100 sources due for purge (20 due now, 6 purged within guard_window; 26.0%) is more than max_purge_fraction 0.25 and more than fraction_floor 3; the origin looks broken"
        );
        // The floor counts the window too.
        let mut small = input(5, 1);
        small.recent = 2;
        assert_eq!(check(&small).allowed, 1);
        small.recent = 3;
        assert_eq!(tripped(&small), Some(Guard::MaxPurgeFraction));
    }

    fn at(hours: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + hours * 3600, 0).unwrap()
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn the_window_holds_purges_strictly_younger_than_it() {
        let purged = [at(0), at(1), at(23), at(24), at(30)];
        assert_eq!(
            purged_within(purged, at(24), DAY),
            4,
            "at(0) is 24h old: out"
        );
        assert_eq!(purged_within(purged, at(47), DAY), 2);
        assert_eq!(purged_within(purged, at(54), DAY), 0);
        // A purge stamped ahead of `now` (the clock stepped back) still counts.
        assert_eq!(purged_within([at(25)], at(24), DAY), 1);
        assert_eq!(
            purged_within(purged, at(24), Duration::ZERO),
            1,
            "a zero window counts only purges stamped after now"
        );
        assert_eq!(purged_within(purged, at(1_000), Duration::MAX), 5);
    }

    /// Runs passes of a 100-source watch at the given hours, `newly_gone`
    /// more sources confirmed gone at each; returns what each pass purged
    /// (`None`: the fraction guard tripped).
    fn passes(window: Duration, schedule: &[(i64, usize)]) -> Vec<Option<usize>> {
        let mut purged_at: Vec<DateTime<Utc>> = Vec::new();
        let mut due = 0;
        schedule
            .iter()
            .map(|&(hour, newly_gone)| {
                due += newly_gone;
                let mut i = input(100, due);
                i.recent = purged_within(purged_at.iter().copied(), at(hour), window);
                let o = check(&i);
                match o.tripped {
                    Some((g, _)) => {
                        assert_eq!(g, Guard::MaxPurgeFraction);
                        None
                    }
                    None => {
                        purged_at.extend(std::iter::repeat_n(at(hour), o.allowed));
                        due -= o.allowed;
                        Some(o.allowed)
                    }
                }
            })
            .collect()
    }

    #[test]
    fn a_gradual_breakage_trips_once_the_windows_share_is_spent() {
        // 20 more gone every 10 minutes: without the window each pass sees
        // only its 20 and the whole watch goes in 5 passes.
        let ten_minutely = [(0, 20); 5];
        assert_eq!(
            passes(DAY, &ten_minutely),
            [Some(20), None, None, None, None],
            "the second pass counts 20 purged + 20 due"
        );
        assert_eq!(
            passes(Duration::ZERO, &ten_minutely),
            [Some(20); 5],
            "without a window nothing stops it"
        );
    }

    #[test]
    fn a_window_of_purges_expires() {
        // 10 a pass, every 6 hours: 10, 20 fit; the third would make 30.
        let six_hourly = [(0, 10), (6, 10), (12, 10), (18, 0), (24, 0), (30, 0)];
        assert_eq!(
            passes(DAY, &six_hourly),
            [Some(10), Some(10), None, None, Some(10), Some(0)],
            "at 24h the first 10 leave the window: 10 + 10 due fit again"
        );
        // Spread over more than a window, the same loss never trips.
        let daily = [(0, 10), (25, 10), (50, 10), (75, 10)];
        assert_eq!(passes(DAY, &daily), [Some(10); 4]);
    }

    #[test]
    fn invalidations_have_their_own_fraction_and_words() {
        let mut i = input(100, 26);
        i.action = Action::Invalidate;
        i.max_purge_fraction = 1.0;
        let (g, why) = check(&i).tripped.unwrap();
        assert_eq!(g, Guard::MaxInvalidateFraction);
        assert!(g.is_alarm());
        assert!(
            why.starts_with("26 of 100 sources due for invalidation (26.0%) is more than max_invalidate_fraction 0.25"),
            "{why}"
        );
        i.max_invalidate_fraction = 0.3;
        i.max_purge_fraction = 0.0;
        assert_eq!(check(&i).allowed, 26, "the purge fraction does not apply");
        // The per-pass cap applies to invalidations too.
        i.max_purges_per_pass = 10;
        assert_eq!(check(&i).allowed, 10);
    }

    // The inconclusive guard

    fn blind(probes: usize, inconclusive: usize, due: usize) -> GuardInput {
        let mut i = input(probes, due);
        i.inconclusive = inconclusive;
        i
    }

    #[test]
    fn a_blind_pass_trips_even_with_nothing_due() {
        let o = check(&blind(10, 10, 0));
        assert_eq!(o.allowed, 0);
        let (g, why) = o.tripped.unwrap();
        assert_eq!(g, Guard::Inconclusive);
        assert!(g.is_alarm());
        assert_eq!(
            why,
            "10 of 10 probe URLs inconclusive (100.0%) is more than max_inconclusive_fraction 0.5 and more than fraction_floor 3; the pass cannot see most of the origin"
        );
    }

    #[test]
    fn most_probes_inconclusive_withholds_the_few_gone() {
        let o = check(&blind(10, 6, 2));
        assert_eq!(o.allowed, 0);
        assert_eq!(o.tripped.unwrap().0, Guard::Inconclusive);
        // Half is not most.
        assert_eq!(check(&blind(10, 5, 2)).allowed, 2);
    }

    #[test]
    fn the_inconclusive_guard_counts_probe_urls_not_sources() {
        // 4 probe URLs with aliases behind them: 3 inconclusive is within the floor.
        let mut i = blind(4, 3, 1);
        i.sources = 40;
        assert_eq!(check(&i).allowed, 1);
        i.probes = 4;
        i.inconclusive = 4;
        assert_eq!(tripped(&i), Some(Guard::Inconclusive));
        // The share is of probe URLs, however many sources stand behind them.
        let mut j = blind(100, 51, 0);
        j.sources = 1_000;
        assert_eq!(tripped(&j), Some(Guard::Inconclusive));
        j.inconclusive = 50;
        assert_eq!(tripped(&j), None);
    }

    #[test]
    fn the_inconclusive_floor_covers_small_watches() {
        assert_eq!(tripped(&blind(3, 3, 0)), None);
        assert_eq!(tripped(&blind(4, 3, 0)), None);
        assert_eq!(tripped(&blind(4, 4, 0)), Some(Guard::Inconclusive));
        let mut i = blind(3, 3, 0);
        i.fraction_floor = 0;
        assert_eq!(tripped(&i), Some(Guard::Inconclusive));
    }

    #[test]
    fn an_inconclusive_fraction_of_one_turns_it_off() {
        let mut i = blind(10, 10, 1);
        i.max_inconclusive_fraction = 1.0;
        assert_eq!(check(&i).allowed, 1);
    }

    #[test]
    fn the_inconclusive_guard_comes_before_the_canary() {
        let mut i = blind(10, 10, 1);
        i.canary = Canary::NotPresent("timeout".into());
        assert_eq!(tripped(&i), Some(Guard::Inconclusive));
    }

    #[test]
    fn guard_names_are_the_contracts() {
        let names: Vec<&str> = Guard::ALL.iter().map(|g| g.as_str()).collect();
        assert_eq!(
            names,
            [
                "canary",
                "inconclusive",
                "max_purge_fraction",
                "max_invalidate_fraction",
                "max_purges_per_pass"
            ]
        );
        assert_eq!(Guard::Inconclusive.to_string(), "inconclusive");
    }
}
