//! Monthly reporting (月报): each department reports last month's records, or a 零信息 zero
//! report, by a day of the following month (the 东营区 plan: the 10th). If that day is not a
//! working day the due date rolls to the next working day, unless configured otherwise
//! (domain §1.10: per-jurisdiction settings; the roll is [U]).

use serde::Serialize;
use time::{Date, Month};

use crate::calendar::{CalendarUnknown, WorkingCalendar};

/// When reports are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportingRule {
    /// Day of the month after the period. Default 10.
    pub due_day: u8,
    /// Move a due date that is not a working day to the next working day. Default true.
    pub roll_to_working_day: bool,
}

impl Default for ReportingRule {
    fn default() -> Self {
        Self { due_day: 10, roll_to_working_day: true }
    }
}

/// A reporting period `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i32,
    pub month: Month,
}

impl Period {
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Self> {
        let (y, m) = s.split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        Some(Self { year: y.parse().ok()?, month: Month::try_from(m.parse::<u8>().ok()?).ok()? })
    }

    /// The month of `day`.
    pub fn of(day: Date) -> Self {
        Self { year: day.year(), month: day.month() }
    }

    /// The period before the month of `day` (what is due in `day`'s month).
    pub fn before(day: Date) -> Self {
        match day.month() {
            Month::January => Self { year: day.year() - 1, month: Month::December },
            m => Self { year: day.year(), month: m.previous() },
        }
    }

    pub fn next(self) -> Self {
        match self.month {
            Month::December => Self { year: self.year + 1, month: Month::January },
            m => Self { year: self.year, month: m.next() },
        }
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, u8::from(self.month))
    }
}

/// The due date of `period`'s report.
pub fn due_date(cal: &WorkingCalendar, period: Period, rule: ReportingRule) -> Result<Date, CalendarUnknown> {
    let next = period.next();
    let last = next.month.length(next.year);
    let mut day = Date::from_calendar_date(next.year, next.month, rule.due_day.clamp(1, last))
        .map_err(|_| CalendarUnknown { year: next.year })?;
    if rule.roll_to_working_day {
        while !cal.is_working_day(day)? {
            day = day.next_day().ok_or(CalendarUnknown { year: day.year() + 1 })?;
        }
    }
    Ok(day)
}

/// Where one department stands for one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportingStatus {
    /// Reported records by the due date.
    Reported,
    /// Filed a 零信息 zero report by the due date.
    ZeroReport,
    /// Reported (or filed a zero report) after the due date: 迟报.
    Late,
    /// Nothing yet, and the due date has passed.
    Overdue,
    /// Nothing yet; still before or on the due date.
    Pending,
}

impl ReportingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::ZeroReport => "zero_report",
            Self::Late => "late",
            Self::Overdue => "overdue",
            Self::Pending => "pending",
        }
    }
}

/// The status of a department whose report (if any) was submitted on `submitted_on`.
pub fn status(due: Date, submitted_on: Option<Date>, zero: bool, today: Date) -> ReportingStatus {
    match submitted_on {
        Some(day) if day > due => ReportingStatus::Late,
        Some(_) if zero => ReportingStatus::ZeroReport,
        Some(_) => ReportingStatus::Reported,
        None if today > due => ReportingStatus::Overdue,
        None => ReportingStatus::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn the_tenth_rolls_past_holidays_but_not_past_working_weekends() {
        let cal = WorkingCalendar::builtin();
        let rule = ReportingRule::default();
        let p = |s| Period::parse(s).expect("period");
        // 2026-10-10 is a 调休 Saturday: a working day, so September's reports are due then.
        assert_eq!(due_date(&cal, p("2026-09"), rule), Ok(date!(2026 - 10 - 10)));
        // 2026-01-10 is a Saturday: due on Monday the 12th.
        assert_eq!(due_date(&cal, p("2025-12"), rule), Ok(date!(2026 - 01 - 12)));
        // 2026-05-10 is a Sunday after the May holiday: Monday the 11th.
        assert_eq!(due_date(&cal, p("2026-04"), rule), Ok(date!(2026 - 05 - 11)));
        // Without the roll, the 10th stands.
        let fixed = ReportingRule { roll_to_working_day: false, ..rule };
        assert_eq!(due_date(&cal, p("2025-12"), fixed), Ok(date!(2026 - 01 - 10)));
        // December 2026's reports fall due in 2027, whose calendar is not loaded.
        assert!(due_date(&cal, p("2026-12"), rule).is_err());
        assert_eq!(due_date(&cal, p("2026-12"), fixed), Ok(date!(2027 - 01 - 10)));
    }

    #[test]
    fn statuses() {
        let due = date!(2026 - 10 - 10);
        assert_eq!(status(due, Some(date!(2026 - 10 - 09)), false, date!(2026 - 10 - 20)), ReportingStatus::Reported);
        assert_eq!(status(due, Some(date!(2026 - 10 - 10)), true, date!(2026 - 10 - 20)), ReportingStatus::ZeroReport);
        assert_eq!(status(due, Some(date!(2026 - 10 - 12)), false, date!(2026 - 10 - 20)), ReportingStatus::Late);
        assert_eq!(status(due, None, false, date!(2026 - 10 - 10)), ReportingStatus::Pending);
        assert_eq!(status(due, None, false, date!(2026 - 10 - 11)), ReportingStatus::Overdue);
        assert_eq!(Period::before(date!(2026 - 01 - 05)).to_string(), "2025-12");
        assert_eq!(Period::parse("2026-13"), None);
    }
}
