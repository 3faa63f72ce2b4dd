//! When a pull runs: `every 5m` (any `humantime` duration of at least one second,
//! counted from the end of the previous run) or a 5-field cron expression
//! (`minute hour day-of-month month day-of-week`) in UTC.

use std::time::{Duration, SystemTime};

/// Shortest `every` interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `every` interval (a year and a day).
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 86_400);

/// A parsed `schedule`.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `every 5m`.
    Every(Duration),
    /// A cron expression, evaluated in UTC.
    Cron(Box<croner::Cron>, String),
}

impl Schedule {
    /// Parses `every <duration>` or a 5-field cron expression.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(interval) = text.strip_prefix("every ") {
            let every = humantime::parse_duration(interval.trim()).map_err(|e| {
                format!("schedule {text:?}: {e} (write e.g. \"every 5m\" or \"every 1h 30m\")")
            })?;
            if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&every) {
                return Err(format!(
                    "schedule {text:?}: the interval must be at least 1s and at most 366d"
                ));
            }
            return Ok(Self::Every(every));
        }
        let fields = text.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "schedule {text:?} is neither \"every <interval>\" nor a 5-field cron expression \
                 (minute hour day-of-month month day-of-week, in UTC): it has {fields} field(s)"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| format!("schedule {text:?}: {e}"))?;
        Ok(Self::Cron(Box::new(cron), text.to_owned()))
    }

    /// The first run after `now` (for `every`, `now` is when the last run ended).
    pub fn next_after(&self, now: SystemTime) -> SystemTime {
        match self {
            Self::Every(every) => now + *every,
            Self::Cron(cron, _) => {
                let at: chrono::DateTime<chrono::Utc> = now.into();
                cron.find_next_occurrence(&at, false)
                    .map(SystemTime::from)
                    // No next match (a date that never comes, such as 30 February): a
                    // year from now, so the loop keeps no busy timer.
                    .unwrap_or(now + Duration::from_secs(365 * 86_400))
            }
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Every(d) => write!(f, "every {}", humantime::format_duration(*d)),
            Self::Cron(_, text) => write!(f, "{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn intervals_count_from_the_end_of_the_last_run() {
        let s = Schedule::parse("every 5m").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-02T10:00:07Z")),
            at("2026-12-02T10:05:07Z")
        );
        assert_eq!(s.to_string(), "every 5m");
        assert!(Schedule::parse("every 1h 30m").is_ok());
    }

    #[test]
    fn cron_expressions_are_utc_and_five_fields() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-02T10:00:00Z")),
            at("2026-12-02T10:15:00Z")
        );
        let daily = Schedule::parse("30 2 * * 1-5").unwrap();
        // 2026-12-05 is a Saturday: the next weekday run is Monday the 7th.
        assert_eq!(
            daily.next_after(at("2026-12-04T03:00:00Z")),
            at("2026-12-07T02:30:00Z")
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        for (text, needle) in [
            ("every 0s", "at least 1s"),
            ("every 400d", "at most 366d"),
            ("every 99999999999999999y", "every"),
            ("every 5 parsecs", "every 5m"),
            ("*/5 * * * * *", "6 field(s)"),
            ("* * *", "3 field(s)"),
            ("61 * * * *", "61 * * * *"),
            ("hourly", "1 field(s)"),
            ("", "0 field(s)"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
