//! The signed interchange between nodes (`../shared/spec/interchange-v1.md`): the federation
//! registry, envelopes with Merkle proofs, and receipts. Sans-IO: the caller supplies the
//! registry it holds, the time, its own member id, and the replay memory.

pub mod envelope;
pub mod evaluation;
pub mod evidence;
pub mod receipt;
pub mod registry;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `^cn-[0-9]{6}(-[a-z0-9]{1,32})?$` (interchange-v1 §1).
pub fn is_member_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("cn-") else { return false };
    let (code, suffix) = match rest.split_once('-') {
        Some((code, suffix)) => (code, Some(suffix)),
        None => (rest, None),
    };
    code.len() == 6
        && code.bytes().all(|b| b.is_ascii_digit())
        && suffix.is_none_or(|s| {
            (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A UUID in its hyphenated lower-case text form (record and envelope ids).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
}

/// The member a key id belongs to (`cn-370306#2026a` → `cn-370306`).
pub fn kid_member(kid: &str) -> Option<&str> {
    kid.split_once('#').map(|(member, _)| member)
}

/// Parses an RFC 3339 time as the spec writes them (UTC, `Z`, at most milliseconds).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    if !s.ends_with('Z') || s.split_once('.').is_some_and(|(_, frac)| frac.len() > 4) {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Formats a time as the spec wants it: UTC, `Z`, exactly milliseconds.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids() {
        for ok in ["cn-370306", "cn-000000", "cn-370300-b2"] {
            assert!(is_member_id(ok), "{ok}");
        }
        for bad in ["cn-37030", "cn-370306-", "cn-370306-B", "CN-370306", "cn-3703060", "x"] {
            assert!(!is_member_id(bad), "{bad}");
        }
    }

    #[test]
    fn times_round_trip_in_the_spec_form() {
        let t = parse_time("2026-11-22T08:30:00.125Z").expect("valid");
        assert_eq!(format_time(t), "2026-11-22T08:30:00.125Z");
        assert!(parse_time("2026-11-22T16:30:00.125+08:00").is_none());
        assert!(parse_time("2026-11-22T08:30:00.1255Z").is_none());
    }
}
