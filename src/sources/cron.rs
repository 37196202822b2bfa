//! Cron expressions: parsing (5, 6 or 7 fields, weekday 0 and 7 = Sunday,
//! IANA timezones).
//! (Skeleton: being written.)

use crate::sop::Schedule;

/// Compiles an expression in a timezone (`None` = UTC). The error says why.
pub fn parse_schedule(_expression: &str, _timezone: Option<&str>) -> Result<Schedule, String> {
    todo!()
}
