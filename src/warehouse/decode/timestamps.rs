//! The event-timestamp column of a page as UTC instants.
//!
//! # Contract
//!
//! Promises: [`timestamps`] gives one [`TimestampCell`] per row, in row order,
//! from every timestamp and date shape `shapes.rs` knows (Snowflake's Int64 and
//! struct forms, DATE, Arrow-native timestamps and dates); only a column of
//! another type is a [`ColumnError`]. A NULL is `Ok(None)`; an instant outside
//! [`Nanos`] is [`SkipReason::Overflow`], never NULL and never clamped.
//!
//! Assumes TIMESTAMP_NTZ values are wall times counted as UTC; converting them
//! to the view's zone is the caller's job ([`crate::warehouse::zone::NtzZone`]).

use arrow_array::{Array, ArrayRef};
use arrow_schema::Field;

use super::shapes::{classify, describe_shape, each_instant, Shape};
use super::{ColumnError, SkipReason};
use crate::time::Nanos;

/// Per row of a timestamp column: `Ok(Some(ns))`, `Ok(None)` for SQL NULL, or
/// `Err(SkipReason::Overflow)` for an instant that [`Nanos`] cannot hold (before
/// 1677-09-21 or after 2262-04-11 UTC; Snowflake allows years 0..=9999).
///
/// Out-of-range instants are neither NULL (a NULL timestamp is counted as a null
/// key, a different problem) nor saturated (a clamped time would order, window and
/// expire the row wrongly): the caller skips the row and counts the reason.
pub type TimestampCell = Result<Option<Nanos>, SkipReason>;

/// UTC nanoseconds of every row of a timestamp column (see [`TimestampCell`]).
///
/// Accepts every Snowflake timestamp shape (TIMESTAMP_NTZ/LTZ as Int64 scaled by
/// 10^scale from field metadata `scale`, or Struct{epoch, fraction}; TIMESTAMP_TZ as
/// Struct{epoch, timezone} (epoch in 10^-scale units) or Struct{epoch, fraction,
/// timezone}), DATE (Date32 days), and Arrow-native Timestamp(unit, tz)/Date32/Date64.
/// NTZ values are taken as UTC wall time. Only a column of another type is an error.
pub fn timestamps(
    column: &str,
    array: &ArrayRef,
    field: &Field,
) -> Result<Vec<TimestampCell>, ColumnError> {
    let mut out = Vec::with_capacity(array.len());
    match classify(array.as_ref(), field) {
        Shape::Instant(instants) => each_instant(&instants, |ns| {
            out.push(
                ns.map(|ns| Nanos::try_from(ns).map_err(|_| SkipReason::Overflow))
                    .transpose(),
            );
        }),
        Shape::AllNull(n) => out.resize(n, Ok(None)),
        shape => {
            return Err(ColumnError {
                column: column.to_string(),
                message: format!(
                    "{} is not a timestamp: the timestamp field takes TIMESTAMP_NTZ/LTZ/TZ or DATE columns",
                    describe_shape(array.as_ref(), field, &shape)
                ),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, Date32Array, Date64Array, Float64Array, Int64Array, StringArray,
        TimestampMillisecondArray, TimestampSecondArray,
    };

    use super::super::test_support::*;
    use super::super::*;
    use super::*;

    const INSTANT: i64 = 1_700_000_000_123_456_789; // 2023-11-14T22:13:20.123456789Z

    #[test]
    fn int64_timestamps_are_scaled_by_metadata_at_scales_0_3_6_9() {
        for (scale, logical) in [
            (0, "TIMESTAMP_NTZ"),
            (3, "TIMESTAMP_LTZ"),
            (6, "TIMESTAMP_NTZ"),
            (9, "TIMESTAMP_LTZ"),
        ] {
            let unit = 10i64.pow(9 - scale);
            let scale_text = scale.to_string();
            let meta = &[("logicalType", logical), ("scale", scale_text.as_str())];
            let raw =
                || -> ArrayRef { Arc::new(Int64Array::from(vec![Some(INSTANT / unit), None])) };
            assert_eq!(
                nanos(raw(), meta),
                vec![Ok(Some(INSTANT / unit * unit)), Ok(None)],
                "scale {scale}"
            );
            assert_eq!(
                unix(raw(), meta),
                vec![secs(1_700_000_000), null()],
                "scale {scale}"
            );
        }
    }

    #[test]
    fn pre_1970_timestamps_floor_to_the_earlier_second() {
        let meta = &[("logicalType", "TIMESTAMP_NTZ"), ("scale", "3")];
        let raw = || -> ArrayRef { Arc::new(Int64Array::from(vec![-1500, -1000])) };
        assert_eq!(
            nanos(raw(), meta),
            vec![Ok(Some(-1_500_000_000)), Ok(Some(-1_000_000_000))]
        );
        assert_eq!(unix(raw(), meta), vec![secs(-2), secs(-1)]);
    }

    #[test]
    fn ntz_struct_is_epoch_seconds_plus_fraction_nanos() {
        // fakesnow's shape (and real Snowflake's at scale > 7): floored epoch, positive fraction.
        let raw = || {
            ts_struct(
                vec![Some(1_700_000_000), Some(-1), Some(0)],
                Some(vec![123_456_789, 500_000_000, 0]),
                None,
                None,
            )
        };
        assert_eq!(
            nanos(raw(), NTZ9),
            vec![Ok(Some(INSTANT)), Ok(Some(-500_000_000)), Ok(Some(0))]
        );
        assert_eq!(
            unix(raw(), NTZ9),
            vec![secs(1_700_000_000), secs(-1), secs(0)]
        );
        // fakesnow may omit metadata altogether; the struct alone decides.
        assert_eq!(nanos(raw(), &[])[0], Ok(Some(INSTANT)));
    }

    #[test]
    fn struct_timestamp_with_null_epoch_under_valid_slot_is_null() {
        let raw = ts_struct(vec![None, Some(5)], Some(vec![0, 0]), None, None);
        assert_eq!(nanos(raw, NTZ9), vec![Ok(None), Ok(Some(5_000_000_000))]);
        let masked = ts_struct(
            vec![Some(1), Some(2)],
            Some(vec![0, 0]),
            None,
            Some(vec![true, false]),
        );
        assert_eq!(nanos(masked, NTZ9), vec![Ok(Some(1_000_000_000)), Ok(None)]);
    }

    #[test]
    fn tz_two_field_struct_epoch_counts_scale_units_and_ignores_zone() {
        let meta = &[
            ("logicalType", "TIMESTAMP_TZ"),
            ("scale", "3"),
            ("byteLength", "8"),
        ];
        let raw = || {
            ts_struct(
                vec![Some(1_700_000_000_123), Some(-1)],
                None,
                Some(vec![1440 + 120, 1440 - 300]),
                None,
            )
        };
        assert_eq!(
            nanos(raw(), meta),
            vec![Ok(Some(1_700_000_000_123_000_000)), Ok(Some(-1_000_000))]
        );
        assert_eq!(unix(raw(), meta), vec![secs(1_700_000_000), secs(-1)]);
    }

    #[test]
    fn tz_three_field_struct_is_epoch_seconds_plus_fraction() {
        let meta = &[
            ("logicalType", "TIMESTAMP_TZ"),
            ("scale", "9"),
            ("byteLength", "16"),
        ];
        let raw = ts_struct(
            vec![Some(1_700_000_000), Some(-2)],
            Some(vec![123_456_789, 999_999_999]),
            Some(vec![1440, 1440 + 60]),
            None,
        );
        assert_eq!(
            nanos(raw, meta),
            vec![Ok(Some(INSTANT)), Ok(Some(-1_000_000_001))]
        );
    }

    #[test]
    fn date_is_midnight_utc() {
        let meta = &[("logicalType", "DATE")];
        let raw =
            || -> ArrayRef { Arc::new(Date32Array::from(vec![Some(19_675), Some(-1), None])) };
        assert_eq!(
            nanos(raw(), meta),
            vec![
                Ok(Some(1_699_920_000_000_000_000)),
                Ok(Some(-86_400_000_000_000)),
                Ok(None)
            ]
        );
        assert_eq!(
            unix(raw(), meta),
            vec![secs(1_699_920_000), secs(-86_400), null()]
        );
    }

    #[test]
    fn arrow_native_timestamps_and_dates_decode_by_unit() {
        let ms: ArrayRef =
            Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_123]).with_timezone("UTC"));
        assert_eq!(nanos(ms, &[]), vec![Ok(Some(1_700_000_000_123_000_000))]);
        let s: ArrayRef = Arc::new(TimestampSecondArray::from(vec![-1]));
        assert_eq!(nanos(s, &[]), vec![Ok(Some(-1_000_000_000))]);
        let d64: ArrayRef = Arc::new(Date64Array::from(vec![86_400_000]));
        assert_eq!(unix(d64, &[]), vec![secs(86_400)]);
    }

    #[test]
    fn timestamp_outside_nanos_is_overflow_not_null() {
        let meta = &[("logicalType", "TIMESTAMP_NTZ"), ("scale", "0")];
        // 2286-11-20: past i64 nanoseconds, yet a fine unix_timestamp.
        let raw =
            || -> ArrayRef { Arc::new(Int64Array::from(vec![10_000_000_000, 300_000_000_000])) };
        assert_eq!(
            nanos(raw(), meta),
            vec![Err(SkipReason::Overflow), Err(SkipReason::Overflow)]
        );
        // Year 11476 is beyond what Feast's reader accepts.
        assert_eq!(
            unix(raw(), meta),
            vec![secs(10_000_000_000), Err(SkipReason::Overflow)]
        );
    }

    #[test]
    fn numbers_into_unix_timestamp_are_floored_seconds() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1_700_000_000]));
        assert_eq!(unix(ints, FIXED0), vec![secs(1_700_000_000)]);
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![-0.5, f64::NAN]));
        assert_eq!(
            unix(floats, &[]),
            vec![secs(-1), Err(SkipReason::NotInteger)]
        );
        let millis: ArrayRef = Arc::new(Int64Array::from(vec![1_500, -1_500]));
        assert_eq!(
            unix(millis, &[("logicalType", "FIXED"), ("scale", "3")]),
            vec![secs(1), secs(-2)]
        );
    }

    #[test]
    fn non_timestamp_columns_are_column_errors_for_timestamps() {
        // An Int64 without Snowflake metadata has no unit: refused, not guessed.
        let (array, field) = column(Arc::new(Int64Array::from(vec![1])), &[]);
        let e = timestamps("UPDATED_AT", &array, &field).unwrap_err();
        assert!(
            e.to_string().contains("UPDATED_AT") && e.message.contains("Int64"),
            "{e}"
        );
        let (array, field) = column(Arc::new(StringArray::from(vec!["2024-01-01"])), TEXT);
        assert!(timestamps("T", &array, &field).is_err());
        let (array, field) = column(
            Arc::new(Int64Array::from(vec![1])),
            &[("logicalType", "TIME"), ("scale", "9")],
        );
        let e = timestamps("T", &array, &field).unwrap_err();
        assert!(e.message.contains("TIME"), "{e}");
    }
}
