//! Timestamps: epoch milliseconds inside, `2026-04-09T15:00:00.000Z` on the wire.
//!
//! Both stores keep times as integer epoch milliseconds (cheap to compare, no time zones);
//! only the API edge formats them, always with exactly three fraction digits and a `Z`,
//! the shape JavaScript's `toISOString()` produces and cloro clients parse.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::macros::format_description;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub(crate) fn format_ms(ms: i64) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_three_fraction_digits_and_z() {
        assert_eq!(format_ms(1_775_746_800_000), "2026-04-09T15:00:00.000Z");
        assert_eq!(format_ms(1_775_746_800_042), "2026-04-09T15:00:00.042Z");
    }

    #[test]
    fn epoch_zero_is_formatted() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
