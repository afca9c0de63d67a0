//! Cron schedules: crontab's 5 fields or the cron crate's 6/7 (with seconds),
//! evaluated in UTC.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

/// Why a cron expression is not one.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0} fields; expected 5 (crontab) or 6-7 (with seconds)")]
    FieldCount(usize),
    #[error("day of week: bad step in {0:?}")]
    DayStep(String),
    #[error("day of week: {0:?} is not 0-7")]
    Day(String),
    #[error("day of week: range {0:?} runs backwards")]
    Backwards(String),
    /// The cron crate's message repeats the expression (in its own
    /// 6-field form) with a caret under it; its last line says what is
    /// wrong, and is all that makes sense next to what the user wrote.
    #[error("{why}")]
    Cron {
        why: String,
        #[source]
        cause: cron::error::Error,
    },
    #[error("it never fires")]
    NeverFires,
}

/// A parsed cron expression, with the text it came from.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    inner: cron::Schedule,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.expression)
    }
}

impl CronSchedule {
    /// Parses a crontab line (5 fields: minute hour day-of-month month
    /// day-of-week, with 0 or 7 = Sunday) or a cron-crate expression with
    /// seconds (6 or 7 fields, day-of-week 1 = Sunday, or names).
    pub fn parse(expression: &str) -> Result<CronSchedule, ScheduleError> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let full = match fields.len() {
            1 if fields[0].starts_with('@') => fields[0].to_owned(),
            5 => {
                let dow = crontab_day_of_week(fields[4])?;
                format!(
                    "0 {} {} {} {} {}",
                    fields[0], fields[1], fields[2], fields[3], dow
                )
            }
            6 | 7 => fields.join(" "),
            n => return Err(ScheduleError::FieldCount(n)),
        };
        let inner = cron::Schedule::from_str(&full).map_err(|cause| {
            let text = cause.to_string();
            let why = text
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && *l != "^");
            let why = truthful_range(why.unwrap_or(&text).trim_end_matches('.'));
            ScheduleError::Cron { why, cause }
        })?;
        if inner.upcoming(Utc).next().is_none() {
            return Err(ScheduleError::NeverFires);
        }
        Ok(CronSchedule {
            expression: expression.to_owned(),
            inner,
        })
    }

    /// The expression as configured.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.inner.after(&t).next()
    }

    /// The next `n` fire times after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.inner.after(&t).take(n).collect()
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Rewrites crontab's numeric day-of-week field (0-7, 0 and 7 = Sunday) into
/// day names, which the cron crate reads the same way crontab does. Its own
/// numbers start at 1 = Sunday, so passing numbers through would shift every
/// weekday by one.
fn crontab_day_of_week(field: &str) -> Result<String, ScheduleError> {
    if field == "*" || field == "?" || field.chars().any(|c| c.is_ascii_alphabetic()) {
        return Ok(field.to_owned());
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| ScheduleError::DayStep(part.to_owned()))?,
            ),
            None => (part, 1),
        };
        let num = |s: &str| {
            s.parse::<usize>()
                .ok()
                .filter(|d| *d <= 7)
                .ok_or_else(|| ScheduleError::Day(s.to_owned()))
        };
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if step > 1 => (num(r)?, 6),
                None => (num(r)?, num(r)?),
            },
        };
        if lo > hi {
            return Err(ScheduleError::Backwards(range.to_owned()));
        }
        for d in (lo..=hi).step_by(step) {
            days[d % 7] = true;
        }
    }
    let names: Vec<&str> = (0..7).filter(|d| days[*d]).map(|d| DAY_NAMES[d]).collect();
    Ok(names.join(","))
}

/// The cron crate says "Minutes must be less than 59" of a minute of 61:
/// 59 itself is allowed, so say the range as it is.
fn truthful_range(why: &str) -> String {
    const RANGES: [(&str, &str); 6] = [
        ("Seconds", "seconds must be from 0 to 59"),
        ("Minutes", "minutes must be from 0 to 59"),
        ("Hours", "hours must be from 0 to 23"),
        ("Days of Month", "days of the month must be from 1 to 31"),
        ("Months", "months must be from 1 to 12"),
        (
            "Days of Week",
            "days of the week must be from 0 to 7 in crontab's 5 fields (1 to 7 with seconds) or names",
        ),
    ];
    for (unit, range) in RANGES {
        if why.starts_with(unit) && why.contains("must be") {
            // "... ('61' specified.)": keep the value the user wrote.
            return match why.split_once("('").and_then(|(_, v)| v.split_once('\'')) {
                Some((value, _)) => format!("'{value}': {range}"),
                None => range.to_owned(),
            };
        }
    }
    why.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_range_field_is_told_its_true_range() {
        let e = CronSchedule::parse("61 * * * *").unwrap_err();
        assert_eq!(e.to_string(), "'61': minutes must be from 0 to 59");
        let e = CronSchedule::parse("0 25 * * *").unwrap_err();
        assert_eq!(e.to_string(), "'25': hours must be from 0 to 23");
    }
    use chrono::{Datelike, TimeZone, Weekday};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let s = CronSchedule::parse("*/10 * * * *").unwrap();
        let t = at(2026, 11, 28, 12, 3, 17);
        assert_eq!(s.next_after(t), Some(at(2026, 11, 28, 12, 10, 0)));
    }

    #[test]
    fn six_fields_have_seconds() {
        let s = CronSchedule::parse("*/15 * * * * *").unwrap();
        let t = at(2026, 11, 28, 12, 3, 17);
        assert_eq!(s.next_after(t), Some(at(2026, 11, 28, 12, 3, 30)));
        assert!(CronSchedule::parse("0 0 12 * * * 2030").is_ok());
    }

    #[test]
    fn crontab_sunday_is_zero_and_seven() {
        // 2026-11-28 is a Saturday.
        let t = at(2026, 11, 28, 12, 0, 0);
        for expr in ["0 3 * * 0", "0 3 * * 7", "0 3 * * SUN"] {
            let next = CronSchedule::parse(expr).unwrap().next_after(t).unwrap();
            assert_eq!(next.weekday(), Weekday::Sun, "{expr}");
        }
        let weekdays = CronSchedule::parse("0 3 * * 1-5").unwrap();
        let days: Vec<Weekday> = weekdays
            .upcoming(t, 5)
            .iter()
            .map(|d| d.weekday())
            .collect();
        use Weekday::*;
        assert_eq!(days, [Mon, Tue, Wed, Thu, Fri]);
    }

    #[test]
    fn bad_expressions_say_why() {
        let e = CronSchedule::parse("61 * * * *").unwrap_err().to_string();
        assert!(
            e.contains("'61'") && !e.contains('\n'),
            "one line naming the value: {e}"
        );
        assert!(
            CronSchedule::parse("* * *")
                .unwrap_err()
                .to_string()
                .contains("3 fields")
        );
        assert!(
            CronSchedule::parse("0 0 * * 8")
                .unwrap_err()
                .to_string()
                .contains("0-7")
        );
    }
}
