//! Wall times without a zone (TIMESTAMP_NTZ, Arrow timestamps without a zone)
//! read in a configured IANA zone.
//!
//! # Contract
//!
//! Promises:
//! - [`wall_to_utc`] turns a wall time in a zone (nanoseconds counted as if the
//!   wall time were UTC) into the UTC instant it names. A wall time the zone
//!   shows twice (the hour repeated when clocks go back) is the **earlier**
//!   instant; a wall time the zone skips (the gap when clocks go forward) is
//!   **shifted forward by the gap**, i.e. read with the offset in effect just
//!   before the gap (`02:30` in Berlin on a spring-forward day is `03:30`
//!   CEST, `01:30Z`). In UTC the wall time is the instant.
//! - [`wall_since`] turns a window's exclusive lower bound (a UTC instant) into
//!   a bound on wall times that never leaves out a row whose instant is after
//!   the bound, whatever the zone's transitions: every wall time whose instant
//!   is after `since` is after the returned bound. It may let in rows up to a
//!   few hours older (the zone's largest offset near `since` minus its smallest,
//!   plus one hour), which newest-wins writes make harmless.
//! - [`NtzZone`] applies both to one view's timestamp column, and only when the
//!   column holds wall times and the zone is not UTC: zoned columns
//!   (TIMESTAMP_TZ/LTZ) and DATE are instants already and pass unchanged.
//!
//! Assumes the tz database compiled into `chrono-tz`: its rules hold for the
//! years it lists transitions for (through 2099 at the time of writing); after
//! that a zone keeps its standard offset (no daylight saving time), and before
//! its first entry a zone is at local mean time (Berlin `+00:53:28`).

use chrono::{DateTime, NaiveDateTime, Offset, TimeZone};

/// Zone names are shared vocabulary (`config`, `model`), defined in [`crate::time`].
pub use crate::time::{parse_zone as parse, Tz};

use super::decode::{SkipReason, TimestampCell};
use super::{ColumnType, Nanos, TimestampKind, TypeKind};

const SECOND: Nanos = 1_000_000_000;
const HOUR: Nanos = 3_600 * SECOND;

/// Whether a column type (as `describe` reports it) holds wall times without a
/// zone: TIMESTAMP_NTZ and its aliases (`DATETIME`, `TIMESTAMP WITHOUT TIME ZONE`,
/// DuckDB's naive `TIMESTAMP`/`TIMESTAMP_NS/MS/S`), and Parquet's Arrow timestamps
/// without a zone. Not TIMESTAMP_TZ/LTZ, DATE or other types.
pub fn holds_wall_times(column_type: &ColumnType) -> bool {
    column_type.kind == TypeKind::Timestamp(TimestampKind::Ntz)
}

fn naive(n: Nanos) -> NaiveDateTime {
    DateTime::from_timestamp(n.div_euclid(SECOND), n.rem_euclid(SECOND) as u32)
        .expect("i64 nanoseconds are within chrono's range")
        .naive_utc()
}

/// The zone's offset from UTC, in nanoseconds, at the instant `utc`.
fn offset_at(zone: Tz, utc: Nanos) -> Nanos {
    Nanos::from(
        zone.offset_from_utc_datetime(&naive(utc))
            .fix()
            .local_minus_utc(),
    ) * SECOND
}

/// The UTC instant of the wall time `wall` in `zone` (see the module contract
/// for repeated and skipped wall times); `None` if [`Nanos`] cannot hold it.
pub fn wall_to_utc(zone: Tz, wall: Nanos) -> Option<Nanos> {
    use chrono::LocalResult;
    let offset = match zone.offset_from_local_datetime(&naive(wall)) {
        LocalResult::Single(o) => Nanos::from(o.fix().local_minus_utc()) * SECOND,
        // The larger offset is the earlier instant.
        LocalResult::Ambiguous(a, b) => {
            Nanos::from(a.fix().local_minus_utc().max(b.fix().local_minus_utc())) * SECOND
        }
        // In a gap: the offsets before and after it are the two the zone has
        // around `wall`; the one before is the smaller (clocks went forward).
        LocalResult::None => {
            let one = offset_at(zone, wall);
            let other = offset_at(zone, wall.saturating_sub(one));
            one.min(other)
        }
    };
    wall.checked_sub(offset)
}

/// The wall time `zone` shows at the instant `utc` (saturating at the ends of [`Nanos`]).
pub fn utc_to_wall(zone: Tz, utc: Nanos) -> Nanos {
    utc.saturating_add(offset_at(zone, utc))
}

/// An exclusive lower bound on wall times in `zone` that keeps every wall time
/// whose instant is after `since` (see the module contract): `since` plus the
/// smallest offset the zone has from two days before to three days after it,
/// less one hour. A row's wall time is its instant plus an offset the zone has
/// at (or, in a gap, just before) that instant, so it is after the bound.
pub fn wall_since(zone: Tz, since: Nanos) -> Nanos {
    let lowest = (-48..=72)
        .map(|h| offset_at(zone, since.saturating_add(h * HOUR)))
        .min()
        .unwrap_or(0);
    since.saturating_add(lowest).saturating_sub(HOUR)
}

/// The zone one view's timestamp column is read in, when its values are wall
/// times that need converting; otherwise (an instant type, or UTC) nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NtzZone(Option<Tz>);

impl NtzZone {
    /// For a timestamp column of `column_type`: the view's own zone (its batch
    /// source's `ntz_time_zone`) if set, else `default` (`warehouse.ntz_time_zone`).
    /// An unparseable view zone is an error naming the key.
    pub fn for_column(
        column_type: &ColumnType,
        view_zone: Option<&str>,
        default: Tz,
    ) -> Result<Self, String> {
        let zone = match view_zone {
            Some(z) => parse(z).map_err(|e| format!("batch_source.ntz_time_zone: {e}"))?,
            None => default,
        };
        let utc = matches!(zone, Tz::UTC | Tz::Etc__UTC);
        Ok(NtzZone(
            (holds_wall_times(column_type) && !utc).then_some(zone),
        ))
    }

    /// The zone, when conversion applies.
    pub fn zone(self) -> Option<Tz> {
        self.0
    }

    /// Decoded timestamp cells as UTC instants; a wall time whose instant
    /// [`Nanos`] cannot hold becomes [`SkipReason::Overflow`].
    pub fn to_utc(self, mut cells: Vec<TimestampCell>) -> Vec<TimestampCell> {
        if let Some(zone) = self.0 {
            for cell in &mut cells {
                if let Ok(Some(wall)) = *cell {
                    *cell = wall_to_utc(zone, wall)
                        .map(Some)
                        .ok_or(SkipReason::Overflow);
                }
            }
        }
        cells
    }

    /// A window's exclusive lower bound (UTC) as the bound the warehouse
    /// compares the column's stored values with (see [`wall_since`]).
    pub fn since(self, since: Option<Nanos>) -> Option<Nanos> {
        match self.0 {
            Some(zone) => since.map(|s| wall_since(zone, s)),
            None => since,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::snowflake::column_type;

    /// Nanoseconds of a `YYYY-MM-DD HH:MM:SS` taken as UTC (a wall time, or an instant).
    fn t(s: &str) -> Nanos {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn berlin() -> Tz {
        parse("Europe/Berlin").unwrap()
    }

    #[test]
    fn plain_wall_times_take_the_offset_in_force() {
        let z = berlin();
        assert_eq!(
            wall_to_utc(z, t("2024-01-15 12:00:00")),
            Some(t("2024-01-15 11:00:00"))
        );
        assert_eq!(
            wall_to_utc(z, t("2024-07-15 12:00:00")),
            Some(t("2024-07-15 10:00:00"))
        );
        // Nanoseconds survive.
        assert_eq!(
            wall_to_utc(z, t("2024-07-15 12:00:00") + 123_456_789),
            Some(t("2024-07-15 10:00:00") + 123_456_789)
        );
        let ny = parse("America/New_York").unwrap();
        assert_eq!(
            wall_to_utc(ny, t("2024-01-15 12:00:00")),
            Some(t("2024-01-15 17:00:00"))
        );
    }

    #[test]
    fn repeated_wall_times_at_fall_back_take_the_earlier_instant() {
        // Berlin 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let z = berlin();
        assert_eq!(
            wall_to_utc(z, t("2024-10-27 02:30:00")),
            Some(t("2024-10-27 00:30:00"))
        );
        assert_eq!(
            wall_to_utc(z, t("2024-10-27 01:59:59")),
            Some(t("2024-10-26 23:59:59"))
        );
        assert_eq!(
            wall_to_utc(z, t("2024-10-27 03:00:00")),
            Some(t("2024-10-27 02:00:00"))
        );
        // New York 2024-11-03: 01:30 happens twice (EDT, then EST).
        let ny = parse("America/New_York").unwrap();
        assert_eq!(
            wall_to_utc(ny, t("2024-11-03 01:30:00")),
            Some(t("2024-11-03 05:30:00"))
        );
    }

    #[test]
    fn skipped_wall_times_at_spring_forward_shift_forward_by_the_gap() {
        // Berlin 2024-03-31: 02:00 CET becomes 03:00 CEST; 02:xx does not exist.
        let z = berlin();
        assert_eq!(
            wall_to_utc(z, t("2024-03-31 02:00:00")),
            Some(t("2024-03-31 01:00:00"))
        );
        assert_eq!(
            wall_to_utc(z, t("2024-03-31 02:30:00")),
            Some(t("2024-03-31 01:30:00"))
        );
        assert_eq!(
            wall_to_utc(z, t("2024-03-31 01:59:59")),
            Some(t("2024-03-31 00:59:59"))
        );
        assert_eq!(
            wall_to_utc(z, t("2024-03-31 03:00:00")),
            Some(t("2024-03-31 01:00:00"))
        );
        // Shifted by the gap: 02:30 reads as 03:30 CEST.
        assert_eq!(
            utc_to_wall(z, wall_to_utc(z, t("2024-03-31 02:30:00")).unwrap()),
            t("2024-03-31 03:30:00")
        );
        // West of Greenwich: New York 2024-03-10 02:30 is 03:30 EDT.
        let ny = parse("America/New_York").unwrap();
        assert_eq!(
            wall_to_utc(ny, t("2024-03-10 02:30:00")),
            Some(t("2024-03-10 07:30:00"))
        );
        // A skipped whole day: Samoa went from UTC-10 to UTC+14 after 2011-12-29.
        let apia = parse("Pacific/Apia").unwrap();
        let wall = t("2011-12-30 12:00:00");
        let utc = wall_to_utc(apia, wall).unwrap();
        assert_eq!(utc, t("2011-12-30 22:00:00"));
        assert_eq!(utc_to_wall(apia, utc), t("2011-12-31 12:00:00"));
    }

    #[test]
    fn utc_is_the_identity() {
        let cells: Vec<TimestampCell> =
            vec![Ok(Some(t("2024-03-31 02:30:00"))), Ok(None), Ok(Some(-1))];
        for zone in ["UTC", "Etc/UTC"] {
            let n = NtzZone::for_column(&column_type("TIMESTAMP_NTZ(9)"), Some(zone), berlin())
                .unwrap();
            assert_eq!(n.zone(), None);
            assert_eq!(n.to_utc(cells.clone()), cells);
            assert_eq!(n.since(Some(5)), Some(5));
        }
        for wall in [Nanos::MIN, -1, 0, t("2024-03-31 02:30:00"), Nanos::MAX] {
            assert_eq!(wall_to_utc(Tz::UTC, wall), Some(wall));
            assert_eq!(wall_since(Tz::UTC, wall), wall.saturating_sub(HOUR));
        }
    }

    #[test]
    fn far_dates_convert_and_overflow_is_a_skip_not_a_panic() {
        let z = berlin();
        // Before standard time: local mean time, +00:53:28.
        assert_eq!(
            wall_to_utc(z, t("1800-06-01 12:00:00")),
            Some(t("1800-06-01 11:06:32"))
        );
        // Double summer time in 1945 (+03:00).
        assert_eq!(
            wall_to_utc(z, t("1945-06-01 12:00:00")),
            Some(t("1945-06-01 09:00:00"))
        );
        // Through 2099 the rules hold; beyond the listed years standard time stays.
        assert_eq!(
            wall_to_utc(z, t("2099-07-01 12:00:00")),
            Some(t("2099-07-01 10:00:00"))
        );
        assert_eq!(
            wall_to_utc(z, t("2200-07-01 12:00:00")),
            Some(t("2200-07-01 11:00:00"))
        );
        // East of UTC, the first wall times have no instant in range; west, the last.
        assert_eq!(wall_to_utc(z, Nanos::MIN), None);
        let ny = parse("America/New_York").unwrap();
        assert_eq!(wall_to_utc(ny, Nanos::MAX), None);
        let n = NtzZone::for_column(&column_type("TIMESTAMP_NTZ(9)"), None, z).unwrap();
        assert_eq!(
            n.to_utc(vec![
                Ok(Some(Nanos::MIN)),
                Ok(None),
                Err(SkipReason::Overflow)
            ]),
            vec![
                Err(SkipReason::Overflow),
                Ok(None),
                Err(SkipReason::Overflow)
            ]
        );
        // The window bound saturates instead of wrapping.
        assert_eq!(wall_since(ny, Nanos::MIN), Nanos::MIN);
        assert!(wall_since(z, Nanos::MAX) < Nanos::MAX);
    }

    #[test]
    fn the_wall_time_window_never_leaves_out_a_row_after_since() {
        // Every wall time whose instant is after `since` is after the bound, around
        // both transitions, for since on either side of them (minute by minute).
        for (zone, day) in [
            ("Europe/Berlin", "2024-03-31"),
            ("Europe/Berlin", "2024-10-27"),
            ("America/New_York", "2024-03-10"),
            ("America/New_York", "2024-11-03"),
            ("Australia/Lord_Howe", "2024-04-07"),
            ("Pacific/Apia", "2011-12-30"),
            ("Europe/Berlin", "1945-05-24"),
        ] {
            let zone = parse(zone).unwrap();
            let mid = t(&format!("{day} 00:00:00"));
            let min = 60 * SECOND;
            for s in (-36 * 60..36 * 60).step_by(7) {
                let since = mid + s * min;
                let bound = wall_since(zone, since);
                for w in (-40 * 60..40 * 60).step_by(5) {
                    let wall = mid + w * min;
                    if wall_to_utc(zone, wall).unwrap() > since {
                        assert!(
                            wall > bound,
                            "{zone} since {since} wall {wall} bound {bound}"
                        );
                    }
                }
                // And it lets in only hours, not days, of older rows.
                assert!(
                    utc_to_wall(zone, since) - bound <= 26 * HOUR,
                    "{zone} {since}"
                );
            }
        }
        // Outside transitions the bound is one hour before the wall time of since.
        let z = berlin();
        let since = t("2024-07-15 10:00:00");
        assert_eq!(wall_since(z, since), t("2024-07-15 11:00:00"));
    }

    #[test]
    fn only_columns_of_wall_times_are_converted() {
        let z = berlin();
        for ty in [
            "TIMESTAMP_NTZ(9)",
            "timestamp_ntz",
            "TIMESTAMP_NTZ(3) NOT NULL",
            "DATETIME",
            "TIMESTAMP WITHOUT TIME ZONE",
            "TIMESTAMP",
            "TIMESTAMP_NS",
        ] {
            assert_eq!(
                NtzZone::for_column(&column_type(ty), None, z)
                    .unwrap()
                    .zone(),
                Some(z),
                "{ty}"
            );
        }
        for ty in [
            "TIMESTAMP_TZ(9)",
            "TIMESTAMP_LTZ(9)",
            "TIMESTAMP WITH TIME ZONE",
            "TIMESTAMPTZ",
            "DATE",
            "NUMBER(38,0)",
        ] {
            assert_eq!(
                NtzZone::for_column(&column_type(ty), None, z)
                    .unwrap()
                    .zone(),
                None,
                "{ty}"
            );
        }
        // The view's own zone wins over the warehouse default.
        let ny = parse("America/New_York").unwrap();
        assert_eq!(
            NtzZone::for_column(
                &column_type("TIMESTAMP_NTZ(9)"),
                Some("America/New_York"),
                z
            )
            .unwrap()
            .zone(),
            Some(ny)
        );
        let e = NtzZone::for_column(&column_type("TIMESTAMP_NTZ(9)"), Some("Europe/Berlln"), z)
            .unwrap_err();
        assert!(
            e.starts_with("batch_source.ntz_time_zone: `Europe/Berlln`"),
            "{e}"
        );
        assert!(parse("CET").is_ok() && parse("").is_err() && parse("+02:00").is_err());
    }

    #[test]
    fn decoded_cells_convert_and_the_window_bound_moves_to_wall_time() {
        let n = NtzZone::for_column(&column_type("TIMESTAMP_NTZ(9)"), None, berlin()).unwrap();
        assert_eq!(
            n.to_utc(vec![Ok(Some(t("2024-07-15 12:00:00"))), Ok(None)]),
            vec![Ok(Some(t("2024-07-15 10:00:00"))), Ok(None)]
        );
        assert_eq!(n.since(None), None);
        assert_eq!(
            n.since(Some(t("2024-07-15 10:00:00"))),
            Some(t("2024-07-15 11:00:00"))
        );
        // A zoned column's values are instants: nothing changes.
        let tz = NtzZone::for_column(&column_type("TIMESTAMP_TZ(9)"), None, berlin()).unwrap();
        assert_eq!(tz.since(Some(7)), Some(7));
        assert_eq!(tz.to_utc(vec![Ok(Some(7))]), vec![Ok(Some(7))]);
    }
}
