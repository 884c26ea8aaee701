//! `YYYY-MM-DD` dates as they appear on the wire, Beijing dates of instants, and the RFC 3339
//! timestamps nodes write. Pure: "now" is always an argument.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::macros::offset;
use time::{Date, OffsetDateTime, UtcOffset};

const DATE_FORMAT: &[BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]");

/// Parses a strict `YYYY-MM-DD` date. By hand: every record has several dates, and the
/// general format parser cost more than the rest of the date rules.
pub fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    let n = |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0'));
    let month = time::Month::try_from(n(5..7) as u8).ok()?;
    Date::from_calendar_date(n(0..4) as i32, month, n(8..10) as u8).ok()
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(d: Date) -> String {
    d.format(DATE_FORMAT).unwrap_or_default()
}

/// China Standard Time: decision dates and "today" are Beijing dates.
pub const CHINA: UtcOffset = offset!(+8);

/// The date in China at `now`.
pub fn today_in_china(now: OffsetDateTime) -> Date {
    now.to_offset(CHINA).date()
}

/// The Beijing date of an RFC 3339 timestamp.
pub fn china_date_of(timestamp: &str) -> Option<Date> {
    let t = OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339).ok()?;
    Some(today_in_china(t))
}

/// RFC 3339 in UTC with `Z` and millisecond precision, as the interchange spec requires.
pub fn format_timestamp(t: OffsetDateTime) -> String {
    crate::interchange::format_time(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn timestamps_have_millis_and_z() {
        assert_eq!(format_timestamp(datetime!(2026-11-22 08:30:00.125_999 UTC)), "2026-11-22T08:30:00.125Z");
        assert_eq!(format_timestamp(datetime!(2026-11-22 16:30:00 +8)), "2026-11-22T08:30:00.000Z");
        assert_eq!(format_timestamp(datetime!(2026-11-22 08:30:00.1 UTC)), "2026-11-22T08:30:00.100Z");
    }

    #[test]
    fn dates_are_strict() {
        assert_eq!(parse_date("2024-02-29").map(format_date).as_deref(), Some("2024-02-29"));
        assert_eq!(parse_date("0001-01-01").map(format_date).as_deref(), Some("0001-01-01"));
        // Ten bytes each, so that the shape check (not the length) refuses them.
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-1-001",
            "2024/01/01",
            "+024-01-01",
            "20é-01-01",
        ] {
            assert_eq!(bad.len(), 10, "{bad}");
            assert_eq!(parse_date(bad), None, "{bad}");
            assert!(Date::parse(bad, DATE_FORMAT).is_err(), "{bad}");
        }
        assert_eq!(parse_date("２024-01-01"), None);
        // The general parser agrees on every day of a leap year and a plain one.
        let mut day = time::macros::date!(2023 - 01 - 01);
        while day.year() < 2025 {
            let text = format_date(day);
            assert_eq!(parse_date(&text), Date::parse(&text, DATE_FORMAT).ok());
            day = day.next_day().expect("in range");
        }
    }

    #[test]
    fn today_is_a_beijing_date() {
        assert_eq!(today_in_china(datetime!(2026-11-22 17:00 UTC)).to_string(), "2026-11-23");
        assert_eq!(china_date_of("2026-11-22T16:00:00.000Z").map(format_date).as_deref(), Some("2026-11-23"));
    }
}
