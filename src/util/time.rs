//! Wall-clock time as the database stores it (whole seconds or milliseconds since the Unix
//! epoch) and as the API shows it (RFC 3339 in UTC), written once so every listing formats
//! the same instant the same way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch now; 0 if the clock is set before it.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Milliseconds since the epoch now; 0 if the clock is set before it.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The instant `ms` milliseconds after the epoch (a negative count is the epoch).
pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// `t` as RFC 3339 in UTC, whole seconds: `2026-01-31T12:00:00Z`.
pub fn rfc3339_at(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Seconds since the epoch as RFC 3339 in UTC, whole seconds (a negative count is the epoch).
pub fn rfc3339(unix: i64) -> String {
    rfc3339_at(UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0)))
}

/// Milliseconds since the epoch as RFC 3339 in UTC with milliseconds:
/// `2026-01-31T12:00:00.250Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    humantime::format_rfc3339_millis(from_ms(ms)).to_string()
}

/// Seconds since the epoch of an RFC 3339 time (the offset may be left out; it is then UTC).
/// An instant before the epoch is 0.
pub fn parse_rfc3339(s: &str) -> Result<i64, humantime::TimestampError> {
    let t = humantime::parse_rfc3339_weak(s)?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_format_as_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_769_860_800), "2026-01-31T12:00:00Z");
        assert_eq!(rfc3339_ms(1_769_860_800_250), "2026-01-31T12:00:00.250Z");
        assert_eq!(
            rfc3339_at(UNIX_EPOCH + Duration::from_secs(1_769_860_800)),
            "2026-01-31T12:00:00Z"
        );
    }

    #[test]
    fn counts_before_the_epoch_are_the_epoch() {
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(from_ms(-1), UNIX_EPOCH);
    }

    #[test]
    fn parsing_reads_back_what_formatting_wrote() {
        assert_eq!(
            parse_rfc3339("2026-01-31T12:00:00Z").unwrap(),
            1_769_860_800
        );
        assert_eq!(
            parse_rfc3339(&rfc3339(1_769_860_801)).unwrap(),
            1_769_860_801
        );
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn now_is_after_the_epoch_in_both_units() {
        let (s, ms) = (now_unix(), now_ms());
        assert!(s > 1_700_000_000);
        assert!(ms / 1000 >= s - 1);
    }
}
