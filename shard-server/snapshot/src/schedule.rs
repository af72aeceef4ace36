//! Snapshot schedules: standard five-field cron expressions (minute hour day-of-month month
//! day-of-week, in UTC) with `*`, lists `a,b`, ranges `a-b` and steps `*/n` / `a-b/n`; when
//! both day fields are restricted a day matches either (as in cron). Pure.

use crate::manifest::civil_from_unix;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

fn field(text: &str, name: &str, min: u32, max: u32) -> Result<Vec<bool>, String> {
    let mut set = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name}: step {s:?} is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, name)?, number(b, name)?)
        } else {
            let n = number(range, name)?;
            (n, if step > 1 { max } else { n })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{name}: {part:?} is outside {min}-{max}"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok(set)
}

fn number(s: &str, name: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("{name}: {s:?} is not a number"))
}

impl Cron {
    pub fn parse(expression: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let [mi, h, dom, mo, dow] = fields[..] else {
            return Err(format!(
                "{expression:?} has {} fields; a schedule has five: minute hour day-of-month \
                 month day-of-week (e.g. \"0 3 * * *\")",
                fields.len()
            ));
        };
        let mut weekdays = field(dow, "day-of-week", 0, 7)?;
        if weekdays[7] {
            weekdays[0] = true; // 7 is Sunday too
        }
        Ok(Cron {
            minutes: field(mi, "minute", 0, 59)?,
            hours: field(h, "hour", 0, 23)?,
            days: field(dom, "day-of-month", 1, 31)?,
            months: field(mo, "month", 1, 12)?,
            weekdays,
            days_restricted: dom != "*",
            weekdays_restricted: dow != "*",
        })
    }

    fn matches(&self, unix_minute: u64) -> bool {
        let secs = unix_minute * 60;
        let (_, month, day, hour, minute, _) = civil_from_unix(secs);
        let weekday = ((secs / 86_400 + 4) % 7) as usize; // 1970-01-01 was a Thursday
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => self.days[day as usize] || self.weekdays[weekday],
            (true, false) => self.days[day as usize],
            (false, true) => self.weekdays[weekday],
            (false, false) => true,
        };
        self.minutes[minute as usize]
            && self.hours[hour as usize]
            && self.months[month as usize]
            && day_ok
    }

    /// The first time (unix seconds, on a whole minute) strictly after `unix_secs` that the
    /// schedule names; `None` if none within about four years (e.g. February 30th).
    pub fn next_after(&self, unix_secs: u64) -> Option<u64> {
        let first = unix_secs / 60 + 1;
        (first..first + 4 * 366 * 24 * 60)
            .find(|m| self.matches(*m))
            .map(|m| m * 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-06T01:34:05Z, a Sunday.
    const T: u64 = 1_796_520_845;

    fn at(expr: &str, after: u64) -> String {
        crate::manifest::rfc3339(Cron::parse(expr).unwrap().next_after(after).unwrap() * 1000)
    }

    #[test]
    fn next_times_follow_the_fields() {
        assert_eq!(at("* * * * *", T), "2026-12-06T01:35:00Z");
        assert_eq!(at("0 3 * * *", T), "2026-12-06T03:00:00Z");
        assert_eq!(at("*/15 * * * *", T), "2026-12-06T01:45:00Z");
        assert_eq!(at("30 1 * * *", T), "2026-12-07T01:30:00Z");
        assert_eq!(at("0 0 1 * *", T), "2027-01-01T00:00:00Z");
        // Monday (1) 02:00; Sunday as 0 and as 7.
        assert_eq!(at("0 2 * * 1", T), "2026-12-07T02:00:00Z");
        assert_eq!(at("0 2 * * 0", T), "2026-12-06T02:00:00Z");
        assert_eq!(at("0 2 * * 7", T), "2026-12-06T02:00:00Z");
        // Both day fields restricted: either matches (the 10th, or a Monday).
        assert_eq!(at("0 0 10 * 1", T), "2026-12-07T00:00:00Z");
        assert_eq!(at("5-10/5 4,6 * * *", T), "2026-12-06T04:05:00Z");
        // Strictly after: a time on the schedule gives the next one.
        assert_eq!(at("* * * * *", 1_796_520_900), "2026-12-06T01:36:00Z");
    }

    #[test]
    fn bad_expressions_say_which_field_and_why() {
        for (bad, says) in [
            ("0 3 * *", "five"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "step"),
            ("a * * * *", "not a number"),
        ] {
            let err = Cron::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert_eq!(Cron::parse("0 0 30 2 *").unwrap().next_after(T), None);
    }
}
