//! Times and dates written the same way in the summary and on the timeline.

use crate::history::Micros;

pub(super) const MICROS_PER_SEC: f64 = 1_000_000.0;

pub(super) fn seconds(at: Micros) -> f64 {
    at as f64 / MICROS_PER_SEC
}

/// Milliseconds with one decimal: failover figures are compared at that precision.
pub(super) fn millis(span: Micros) -> String {
    format!("{:.1}", span as f64 / 1_000.0)
}

/// A run length an operator reads at a glance: `45.2s`, `2m 00.0s`, `1h 00m 05s`.
pub(super) fn duration(span: Micros) -> String {
    let tenths = span / 100_000;
    let whole_secs = tenths / 10;
    let (hours, minutes, secs) = (whole_secs / 3600, whole_secs / 60 % 60, whole_secs % 60);
    if hours > 0 {
        format!("{hours}h {minutes:02}m {secs:02}s")
    } else if minutes > 0 {
        format!("{minutes}m {secs:02}.{}s", tenths % 10)
    } else {
        format!("{secs}.{}s", tenths % 10)
    }
}

/// `2025-06-01 12:00:00 UTC`, without a date crate: the run start is the only date we show.
pub(super) fn utc_datetime(unix_secs: u64) -> String {
    let (days, secs_of_day) = (unix_secs / 86_400, unix_secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(45_230_000), "45.2s");
        assert_eq!(duration(120_000_000), "2m 00.0s");
        assert_eq!(duration(3_605_000_000), "1h 00m 05s");
        assert_eq!(millis(812_345), "812.3");
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc_datetime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_datetime(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_datetime(1_748_779_200), "2025-06-01 12:00:00 UTC");
    }
}
