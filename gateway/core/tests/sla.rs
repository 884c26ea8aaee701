//! SLA states on the official calendar: deadlines across 春节 and 国庆 with their 调休 working
//! weekends, the at-risk margin, repairs' 3 working days, and deadlines that run into a year
//! whose calendar is not loaded. "Today" is an argument: the tests move it by hand.

use gateway_core::calendar::WorkingCalendar;
use gateway_core::sla::{SlaPolicy, SlaState, next_change, repair_deadline, state, working_days_between};
use time::macros::date;

fn at(cal: &WorkingCalendar, decided: time::Date, published: Option<time::Date>, today: time::Date) -> SlaState {
    state(cal, cal.deadline(decided), published, today, SlaPolicy::default())
}

#[test]
fn spring_festival_2026_with_its_working_saturdays() {
    let cal = WorkingCalendar::builtin();
    let decided = date!(2026 - 02 - 12);
    // 02-13, 02-14 (调休 Saturday), then 02-24 … 02-28 (调休 Saturday) after the break.
    assert_eq!(cal.deadline(decided), Ok(date!(2026 - 02 - 28)));
    assert_eq!(at(&cal, decided, Some(date!(2026 - 02 - 28)), date!(2026 - 03 - 05)), SlaState::OnTime);
    assert_eq!(at(&cal, decided, Some(date!(2026 - 03 - 02)), date!(2026 - 03 - 05)), SlaState::Breached);
    assert_eq!(at(&cal, decided, None, date!(2026 - 02 - 13)), SlaState::Pending);
    // During the holiday no working day passes: five are left on its last day.
    assert_eq!(working_days_between(&cal, date!(2026 - 02 - 23), date!(2026 - 02 - 28)), Ok(5));
    assert_eq!(at(&cal, decided, None, date!(2026 - 02 - 23)), SlaState::Pending);
    assert_eq!(at(&cal, decided, None, date!(2026 - 02 - 26)), SlaState::AtRisk);
    assert_eq!(at(&cal, decided, None, date!(2026 - 02 - 28)), SlaState::AtRisk);
    assert_eq!(at(&cal, decided, None, date!(2026 - 03 - 01)), SlaState::Breached);
}

#[test]
fn national_day_2026_and_a_repair_deadline_on_a_working_saturday() {
    let cal = WorkingCalendar::builtin();
    let decided = date!(2026 - 09 - 30);
    assert_eq!(cal.deadline(decided), Ok(date!(2026 - 10 - 15)));
    assert_eq!(at(&cal, decided, None, date!(2026 - 10 - 07)), SlaState::Pending);
    assert_eq!(at(&cal, decided, None, date!(2026 - 10 - 13)), SlaState::AtRisk);
    assert_eq!(at(&cal, decided, None, date!(2026 - 10 - 16)), SlaState::Breached);
    // A repair decided before the holiday must reach every holder by 10-10 (调休 Saturday).
    assert_eq!(repair_deadline(&cal, decided), Ok(date!(2026 - 10 - 10)));
}

#[test]
fn a_deadline_in_an_unloaded_year_is_calendar_unknown_never_guessed() {
    let cal = WorkingCalendar::builtin();
    let decided = date!(2026 - 12 - 28);
    assert_eq!(at(&cal, decided, None, date!(2026 - 12 - 29)), SlaState::CalendarUnknown);
    assert_eq!(at(&cal, decided, Some(date!(2026 - 12 - 30)), date!(2026 - 12 - 30)), SlaState::CalendarUnknown);
}

#[test]
fn a_tracker_can_sleep_until_the_next_change() {
    let cal = WorkingCalendar::builtin();
    let deadline = date!(2026 - 02 - 28);
    let policy = SlaPolicy::default();
    // Pending on 02-13; at risk from 02-26 (two working days left); breached from 03-01.
    assert_eq!(next_change(&cal, deadline, false, date!(2026 - 02 - 13), policy), Ok(Some(date!(2026 - 02 - 26))));
    assert_eq!(next_change(&cal, deadline, false, date!(2026 - 02 - 26), policy), Ok(Some(date!(2026 - 03 - 01))));
    assert_eq!(next_change(&cal, deadline, true, date!(2026 - 02 - 13), policy), Ok(None));
    assert_eq!(next_change(&cal, deadline, false, date!(2026 - 03 - 01), policy), Ok(None));
    // Every day between agrees with `state`.
    let mut day = date!(2026 - 02 - 13);
    while day <= date!(2026 - 03 - 02) {
        let s = state(&cal, Ok(deadline), None, day, policy);
        let expected = if day >= date!(2026 - 03 - 01) {
            SlaState::Breached
        } else if day >= date!(2026 - 02 - 26) {
            SlaState::AtRisk
        } else {
            SlaState::Pending
        };
        assert_eq!(s, expected, "{day}");
        day = day.next_day().expect("day");
    }
}
