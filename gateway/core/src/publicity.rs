//! How long an administrative penalty stays published (公示期), by the rules in force on its
//! decision date (`../shared/domain.md` §2.2): the end of publicity, after which the origin
//! node raises `publicity_expired`.

use time::macros::date;
use time::{Date, Month};

/// The publicity-period rules, by the day they took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// 2017-07-31: 1 year; serious dishonesty 3 years.
    Y2017,
    /// 2019-07-01 (发改办财金〔2019〕527号): general at most 1 year, serious at most 3 years.
    Y2019,
    /// 2023-05-01 (令第58号): at most 3 years.
    Y2023,
    /// 2026-04-01 (令第36号): minor 3 months, general 1 year, serious 3 years.
    Y2026,
}

impl Regime {
    /// The rules in force on a decision date (before 2017-07-31: the 2017 rules, the earliest
    /// known).
    pub fn on(decided: Date) -> Self {
        if decided >= date!(2026 - 04 - 01) {
            Self::Y2026
        } else if decided >= date!(2023 - 05 - 01) {
            Self::Y2023
        } else if decided >= date!(2019 - 07 - 01) {
            Self::Y2019
        } else {
            Self::Y2017
        }
    }

    /// The day the rules took effect, as the events name them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Y2017 => "2017-07-31",
            Self::Y2019 => "2019-07-01",
            Self::Y2023 => "2023-05-01",
            Self::Y2026 => "2026-04-01",
        }
    }

    /// The longest publicity, in months, for a `dishonesty_level` (`minor`, `general`,
    /// `serious`, `specific_serious`; absent counts as general).
    pub fn max_months(self, level: Option<&str>) -> u32 {
        let serious = matches!(level, Some("serious" | "specific_serious"));
        match self {
            Self::Y2017 | Self::Y2019 if serious => 36,
            Self::Y2017 | Self::Y2019 => 12,
            Self::Y2023 => 36,
            Self::Y2026 if serious => 36,
            Self::Y2026 if level == Some("minor") => 3,
            Self::Y2026 => 12,
        }
    }
}

/// The last day of publicity of a penalty decided on `decided` at `level`: `explicit` (the
/// record's own `publicity_end_date`) when given, else the regime's longest period.
pub fn publicity_end(decided: Date, level: Option<&str>, explicit: Option<Date>) -> (Date, Regime) {
    let regime = Regime::on(decided);
    (explicit.unwrap_or_else(|| add_months(decided, regime.max_months(level))), regime)
}

/// `N` months after `start` under 民法典 Art. 201/202: the start day is not counted, and the
/// period ends on the same day of the end month, or on its last day when it has no such day
/// (3 months from 2025-11-30 end on 2026-02-28).
pub fn add_months(start: Date, months: u32) -> Date {
    let index = start.year() * 12 + i32::from(u8::from(start.month())) - 1 + months as i32;
    let (year, month) =
        (index.div_euclid(12), Month::try_from((index.rem_euclid(12) + 1) as u8).unwrap_or(Month::December));
    let last = time::util::days_in_month(month, year);
    Date::from_calendar_date(year, month, start.day().min(last)).unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_end_on_the_same_day_or_the_last_of_a_shorter_month() {
        assert_eq!(add_months(date!(2025 - 11 - 30), 3), date!(2026 - 02 - 28));
        assert_eq!(add_months(date!(2024 - 11 - 30), 3), date!(2025 - 02 - 28));
        assert_eq!(add_months(date!(2023 - 11 - 29), 3), date!(2024 - 02 - 29));
        assert_eq!(add_months(date!(2025 - 06 - 18), 12), date!(2026 - 06 - 18));
        assert_eq!(add_months(date!(2025 - 12 - 31), 36), date!(2028 - 12 - 31));
    }

    #[test]
    fn the_rules_in_force_on_the_decision_date_apply() {
        assert_eq!(publicity_end(date!(2019 - 06 - 30), Some("general"), None), (date!(2020 - 06 - 30), Regime::Y2017));
        assert_eq!(publicity_end(date!(2020 - 03 - 02), Some("serious"), None), (date!(2023 - 03 - 02), Regime::Y2019));
        assert_eq!(publicity_end(date!(2024 - 01 - 10), Some("general"), None).0, date!(2027 - 01 - 10));
        assert_eq!(publicity_end(date!(2026 - 04 - 01), Some("minor"), None), (date!(2026 - 07 - 01), Regime::Y2026));
        assert_eq!(publicity_end(date!(2026 - 05 - 19), None, None).0, date!(2027 - 05 - 19));
        let explicit = date!(2025 - 09 - 18);
        assert_eq!(publicity_end(date!(2025 - 06 - 18), Some("general"), Some(explicit)).0, explicit);
    }
}
