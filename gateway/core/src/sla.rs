//! Delivery SLAs (design §8): a 双公示 record must be published by the 7th working day after its
//! decision; a credit repair must reach every holder within 3 working days of its decision. The
//! state of one record at one destination follows from its deadline, when (if ever) it was
//! published there, and today — all on the official calendar, which is never guessed.

use serde::Serialize;
use time::Date;

use crate::calendar::{CalendarUnknown, WorkingCalendar};

/// Working days a repair has to reach every holder.
pub const REPAIR_WORKING_DAYS: u32 = 3;

/// Where one record stands against its deadline at one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaState {
    /// Published on or before the deadline.
    OnTime,
    /// Not published yet, with more than the warning margin left.
    Pending,
    /// Not published yet, and at most the warning margin of working days left.
    AtRisk,
    /// Published after the deadline, or not published and the deadline has passed.
    Breached,
    /// The deadline falls in a year whose official calendar is not loaded.
    CalendarUnknown,
}

impl SlaState {
    pub fn parse(s: &str) -> Option<Self> {
        [Self::OnTime, Self::Pending, Self::AtRisk, Self::Breached, Self::CalendarUnknown]
            .into_iter()
            .find(|x| x.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnTime => "on_time",
            Self::Pending => "pending",
            Self::AtRisk => "at_risk",
            Self::Breached => "breached",
            Self::CalendarUnknown => "calendar_unknown",
        }
    }
}

/// How early a record counts as at risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaPolicy {
    /// A record with at most this many working days left (today not counted) is at risk.
    pub at_risk_working_days: u32,
}

impl Default for SlaPolicy {
    fn default() -> Self {
        Self { at_risk_working_days: 2 }
    }
}

/// The deadline of a repair decided on `decided_on`.
pub fn repair_deadline(cal: &WorkingCalendar, decided_on: Date) -> Result<Date, CalendarUnknown> {
    cal.add_working_days(decided_on, REPAIR_WORKING_DAYS)
}

/// The state of a record with `deadline` at a destination that published it on `published_on`
/// (if it has), as of `today`.
pub fn state(
    cal: &WorkingCalendar,
    deadline: Result<Date, CalendarUnknown>,
    published_on: Option<Date>,
    today: Date,
    policy: SlaPolicy,
) -> SlaState {
    let Ok(deadline) = deadline else { return SlaState::CalendarUnknown };
    match published_on {
        Some(day) if day <= deadline => SlaState::OnTime,
        Some(_) => SlaState::Breached,
        None if today > deadline => SlaState::Breached,
        None => match working_days_between(cal, today, deadline) {
            Ok(left) if left <= policy.at_risk_working_days => SlaState::AtRisk,
            Ok(_) => SlaState::Pending,
            Err(_) => SlaState::CalendarUnknown,
        },
    }
}

/// Working days after `from` up to and including `to` (0 when `to` is `from` or earlier).
pub fn working_days_between(cal: &WorkingCalendar, from: Date, to: Date) -> Result<u32, CalendarUnknown> {
    let mut n = 0;
    let mut day = from;
    while day < to {
        day = day.next_day().unwrap_or(day);
        if cal.is_working_day(day)? {
            n += 1;
        }
    }
    Ok(n)
}

/// The day a record's state next changes by itself (pending → at risk → breached), so that a
/// tracker can wake then instead of rescanning: the first day with the margin left, then the day
/// after the deadline. `None` once published or past the deadline.
pub fn next_change(
    cal: &WorkingCalendar,
    deadline: Date,
    published: bool,
    today: Date,
    policy: SlaPolicy,
) -> Result<Option<Date>, CalendarUnknown> {
    if published || today > deadline {
        return Ok(None);
    }
    if working_days_between(cal, today, deadline)? > policy.at_risk_working_days {
        // Walk back from the deadline over the margin's working days.
        let mut day = deadline;
        let mut left = 0;
        while left < policy.at_risk_working_days {
            if cal.is_working_day(day)? {
                left += 1;
            }
            day = day.previous_day().unwrap_or(day);
        }
        return Ok(Some(day.max(today.next_day().unwrap_or(today))));
    }
    Ok(deadline.next_day())
}
