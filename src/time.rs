//! Time vocabulary shared by every layer: instants as [`Nanos`], their text in
//! logs, run records and the CLI, and IANA zone names.
//!
//! # Contract
//!
//! Promises:
//! - [`Nanos`] is the one representation of an instant across the crate
//!   (warehouse pages, watermarks, Redis `_ts` values, metrics);
//! - [`format_nanos`] is RFC 3339 in UTC with only the sub-second digits the
//!   instant needs (`2024-05-01T12:00:00Z`, `...:00.5Z`), and the bare number for
//!   the rare `Nanos` chrono cannot place;
//! - [`parse_zone`] accepts exactly the IANA names compiled into `chrono-tz`.
//!
//! Assumes nothing of other modules: this is the bottom of the dependency
//! order (see `lib.rs`), so it imports no other module of the crate.

pub use chrono_tz::Tz;

/// Nanoseconds since the Unix epoch, UTC (1677-09-21 to 2262-04-11).
///
/// Warehouse timestamps without a zone (TIMESTAMP_NTZ) are wall times: backends
/// deliver them counted as if they were UTC, and sync reads them in the zone in
/// effect for the view (`warehouse::zone::NtzZone`; UTC by default).
pub type Nanos = i64;

const NANOS_PER_SECOND: Nanos = 1_000_000_000;

/// An instant as RFC 3339 UTC text (`2024-05-01T12:00:00.123Z`).
/// This machine's clock as [`Nanos`] (saturating in the year 2262).
pub fn now() -> Nanos {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub fn format_nanos(n: Nanos) -> String {
    chrono::DateTime::from_timestamp(
        n.div_euclid(NANOS_PER_SECOND),
        n.rem_euclid(NANOS_PER_SECOND) as u32,
    )
    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    .unwrap_or_else(|| n.to_string())
}

/// Parses an IANA zone name as written (`Europe/Berlin`, `UTC`, `Etc/GMT-2`).
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.trim().parse::<Tz>().map_err(|_| {
        format!("`{name}` is not an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_format_as_rfc3339_utc_with_the_digits_they_need() {
        assert_eq!(format_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_nanos(-500_000_000), "1969-12-31T23:59:59.500Z");
        assert_eq!(
            format_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
    }

    #[test]
    fn zone_names_are_iana_names() {
        assert_eq!(parse_zone(" Europe/Berlin "), Ok(Tz::Europe__Berlin));
        let e = parse_zone("+02:00").unwrap_err();
        assert!(e.contains("`+02:00`") && e.contains("IANA"), "{e}");
    }
}
