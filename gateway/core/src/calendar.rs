//! The official working-day calendar (放假 and 调休), one data file per year.
//!
//! Working-day arithmetic cannot be computed from weekdays alone: the State Council moves
//! weekend days every year. A date in a year with no calendar loaded is **calendar-unknown**;
//! the calendar never guesses.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use time::{Date, Weekday};

use crate::date::parse_date;

/// The number of working days the 双公示 rule allows after a decision (7个工作日).
pub const PUBLICITY_WORKING_DAYS: u32 = 7;

/// The calendars shipped with the gateway; an operator's files may add years or replace these.
pub const BUILTIN_CALENDARS: &[(&str, &str)] = &[
    ("2024.toml", include_str!("../calendars/2024.toml")),
    ("2025.toml", include_str!("../calendars/2025.toml")),
    ("2026.toml", include_str!("../calendars/2026.toml")),
];

/// Errors from loading a calendar file.
#[derive(Debug, thiserror::Error)]
pub enum CalendarFileError {
    #[error("{file}: not a calendar file: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {date} is not in year {year}")]
    WrongYear { file: String, date: Date, year: i32 },
    #[error("{file}: {date} is listed both as a day off and as a working weekend")]
    Overlap { file: String, date: Date },
    #[error("{file}: working weekend {date} is a {weekday}, not a Saturday or Sunday")]
    NotAWeekend { file: String, date: Date, weekday: Weekday },
}

/// The answer for a date the loaded calendars do not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("calendar-unknown: no official calendar is loaded for {year}")]
pub struct CalendarUnknown {
    pub year: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i32,
    source: String,
    /// Where the notice was read; kept in the file for auditors, not used in arithmetic.
    #[serde(default, rename = "source_urls")]
    _source_urls: Vec<String>,
    days_off: Vec<String>,
    working_weekends: Vec<String>,
}

/// One loaded year.
#[derive(Debug, Clone)]
pub struct YearCalendar {
    pub year: i32,
    pub source: String,
    days_off: BTreeSet<Date>,
    working_weekends: BTreeSet<Date>,
}

impl YearCalendar {
    /// Parses one year file. `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, CalendarFileError> {
        let parse_err = |message: String| CalendarFileError::Parse { file: file.to_owned(), message };
        let raw: YearFile = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let date = |s: &str| parse_date(s.trim()).ok_or_else(|| parse_err(format!("bad date {s:?}")));
        let mut days_off = BTreeSet::new();
        for entry in &raw.days_off {
            let (from, to) = match entry.split_once("..") {
                Some((a, b)) => (date(a)?, date(b)?),
                None => (date(entry)?, date(entry)?),
            };
            if to < from {
                return Err(parse_err(format!("range {entry:?} ends before it starts")));
            }
            let mut d = from;
            while d <= to {
                days_off.insert(d);
                d = d.next_day().ok_or_else(|| parse_err("date out of range".into()))?;
            }
        }
        let working_weekends = raw.working_weekends.iter().map(|s| date(s)).collect::<Result<BTreeSet<_>, _>>()?;
        for &d in days_off.iter().chain(&working_weekends) {
            if d.year() != raw.year {
                return Err(CalendarFileError::WrongYear { file: file.into(), date: d, year: raw.year });
            }
        }
        for &d in &working_weekends {
            if days_off.contains(&d) {
                return Err(CalendarFileError::Overlap { file: file.into(), date: d });
            }
            if !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday) {
                return Err(CalendarFileError::NotAWeekend { file: file.into(), date: d, weekday: d.weekday() });
            }
        }
        Ok(Self { year: raw.year, source: raw.source, days_off, working_weekends })
    }

    fn is_working_day(&self, d: Date) -> bool {
        if self.working_weekends.contains(&d) {
            return true;
        }
        !self.days_off.contains(&d) && !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
    }

    /// Working days in the whole year.
    pub fn working_day_count(&self) -> usize {
        let mut d = Date::from_ordinal_date(self.year, 1).ok();
        let mut n = 0;
        while let Some(day) = d.filter(|day| day.year() == self.year) {
            n += usize::from(self.is_working_day(day));
            d = day.next_day();
        }
        n
    }
}

/// All loaded years.
#[derive(Debug, Clone, Default)]
pub struct WorkingCalendar {
    years: BTreeMap<i32, YearCalendar>,
}

impl WorkingCalendar {
    /// The calendars shipped in the binary.
    pub fn builtin() -> Self {
        let mut cal = Self::default();
        for (file, text) in BUILTIN_CALENDARS {
            // The shipped files are checked by this crate's tests.
            if let Ok(year) = YearCalendar::parse(file, text) {
                cal.insert(year);
            }
        }
        cal
    }

    /// Adds a year, replacing a loaded one of the same year.
    pub fn insert(&mut self, year: YearCalendar) {
        self.years.insert(year.year, year);
    }

    pub fn years(&self) -> impl Iterator<Item = &YearCalendar> {
        self.years.values()
    }

    /// Whether `d` is a working day, or calendar-unknown.
    pub fn is_working_day(&self, d: Date) -> Result<bool, CalendarUnknown> {
        self.years.get(&d.year()).map(|y| y.is_working_day(d)).ok_or(CalendarUnknown { year: d.year() })
    }

    /// The `n`-th working day after `start` (the start day itself is day 0, 民法典 Art. 201).
    pub fn add_working_days(&self, start: Date, n: u32) -> Result<Date, CalendarUnknown> {
        let mut d = start;
        let mut counted = 0;
        while counted < n {
            d = d.next_day().ok_or(CalendarUnknown { year: d.year() + 1 })?;
            if self.is_working_day(d)? {
                counted += 1;
            }
        }
        Ok(d)
    }

    /// The 双公示 publicity deadline: the 7th working day after the decision date.
    pub fn deadline(&self, decision_date: Date) -> Result<Date, CalendarUnknown> {
        self.add_working_days(decision_date, PUBLICITY_WORKING_DAYS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn worked_examples_from_domain_md() {
        let cal = WorkingCalendar::builtin();
        for (decision, deadline) in [
            (date!(2024 - 02 - 08), date!(2024 - 02 - 23)),
            (date!(2024 - 09 - 27), date!(2024 - 10 - 12)),
            (date!(2025 - 01 - 24), date!(2025 - 02 - 10)),
            (date!(2025 - 09 - 26), date!(2025 - 10 - 13)),
            (date!(2026 - 02 - 12), date!(2026 - 02 - 28)),
            (date!(2026 - 09 - 30), date!(2026 - 10 - 15)),
        ] {
            assert_eq!(cal.deadline(decision), Ok(deadline), "decision {decision}");
        }
        assert_eq!(cal.deadline(date!(2026 - 12 - 31)), Err(CalendarUnknown { year: 2027 }));
        assert_eq!(cal.deadline(date!(2023 - 12 - 29)), Err(CalendarUnknown { year: 2023 }));
    }

    #[test]
    fn year_totals_match_the_notices() {
        let cal = WorkingCalendar::builtin();
        let totals: Vec<_> = cal.years().map(|y| (y.year, y.working_day_count())).collect();
        assert_eq!(totals, vec![(2024, 251), (2025, 248), (2026, 248)]);
    }

    #[test]
    fn quiet_weeks_are_nine_calendar_days() {
        let cal = WorkingCalendar::builtin();
        // No holiday or 调休 within reach of these decision dates.
        for d in [date!(2024 - 03 - 11), date!(2025 - 07 - 14), date!(2026 - 11 - 16), date!(2026 - 03 - 02)] {
            assert_eq!(cal.deadline(d), Ok(d + time::Duration::days(9)), "{d}");
        }
    }

    #[test]
    fn deadlines_fall_on_weekends_only_when_adjusted() {
        let cal = WorkingCalendar::builtin();
        let mut d = date!(2024 - 01 - 01);
        while d < date!(2026 - 12 - 01) {
            let due = cal.deadline(d).expect("covered");
            if matches!(due.weekday(), Weekday::Saturday | Weekday::Sunday) {
                assert_eq!(cal.is_working_day(due), Ok(true), "{d} -> {due}");
            }
            d = d.next_day().expect("in range");
        }
    }

    #[test]
    fn bad_files_are_refused() {
        let bad = "year = 2027\nsource = \"x\"\ndays_off = [\"2027-01-01\"]\nworking_weekends = [\"2027-01-05\"]\n";
        assert!(matches!(YearCalendar::parse("2027.toml", bad), Err(CalendarFileError::NotAWeekend { .. })));
        let unknown_key = "year = 2027\nsource = \"x\"\ndays_off = []\nworking_weekends = []\nextra = 1\n";
        assert!(matches!(YearCalendar::parse("2027.toml", unknown_key), Err(CalendarFileError::Parse { .. })));
        let wrong_year = "year = 2027\nsource = \"x\"\ndays_off = [\"2026-01-01\"]\nworking_weekends = []\n";
        assert!(matches!(YearCalendar::parse("2027.toml", wrong_year), Err(CalendarFileError::WrongYear { .. })));
    }

    #[test]
    fn an_added_year_extends_the_reach() {
        let mut cal = WorkingCalendar::builtin();
        let y2027 = "year = 2027\nsource = \"test\"\ndays_off = [\"2027-01-01\"]\nworking_weekends = []\n";
        cal.insert(YearCalendar::parse("2027.toml", y2027).expect("valid"));
        assert_eq!(cal.deadline(date!(2026 - 12 - 31)), Ok(date!(2027 - 01 - 12)));
    }
}
