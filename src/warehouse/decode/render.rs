//! Cell text for log samples: one cell of a page column, short and readable.
//!
//! # Contract
//!
//! Promises: [`cell_text`] / [`field_cell_text`] never fail and never panic on any
//! column or row (a missing row is `<no such row>`, a column no field can read
//! shows its Arrow type), and stay within 80 characters (longer text ends in `…`).
//! NULL is `NULL`; numbers are plain decimals (with the field's Snowflake scale
//! applied by [`field_cell_text`]); text and JSON are quoted (JSON on one line);
//! binary is hex; instants are RFC 3339 UTC; lists show their elements.
//!
//! Assumes the result is for people reading logs, never parsed back.

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field};

use super::numbers::Number;
use super::shapes::{
    classify, is_valid, with_numbers, Binaries, Instants, Shape, Texts, NANOS_PER_DAY,
    NANOS_PER_SECOND,
};

const CELL_TEXT_CHARS: usize = 80;

/// Short rendering of one cell for log lines about skipped values (at most 80 chars).
/// Without the field's metadata a scaled Snowflake NUMBER shows its raw integer and an
/// Int64 timestamp its raw count; [`field_cell_text`] applies the metadata.
pub fn cell_text(array: &ArrayRef, row: usize) -> String {
    field_cell_text(array, &Field::new("", array.data_type().clone(), true), row)
}

/// [`cell_text`] with the field's Snowflake metadata applied (scale, timestamp kind).
pub fn field_cell_text(array: &ArrayRef, field: &Field, row: usize) -> String {
    let mut s = String::new();
    render(
        &classify(array.as_ref(), field),
        array.as_ref(),
        row,
        &mut s,
    );
    if s.chars().count() > CELL_TEXT_CHARS {
        let cut = s
            .char_indices()
            .nth(CELL_TEXT_CHARS - 1)
            .map_or(s.len(), |(i, _)| i);
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn render(shape: &Shape<'_>, array: &dyn Array, row: usize, out: &mut String) {
    if row >= array.len() {
        out.push_str("<no such row>");
        return;
    }
    // Instants combine the struct's and the epoch's nulls; every other shape uses the array's.
    let null = match shape {
        Shape::Instant(
            Instants::Scaled { nulls, .. }
            | Instants::Days { nulls, .. }
            | Instants::Split { nulls, .. },
        ) => !is_valid(nulls, row),
        _ => array.is_null(row),
    };
    if null {
        out.push_str("NULL");
        return;
    }
    match shape {
        Shape::AllNull(_) => out.push_str("NULL"),
        Shape::Number(numbers) => {
            with_numbers!(numbers, |a, scale| a.value(row).render(scale, out))
        }
        Shape::Bool(a) => out.push_str(if a.value(row) { "true" } else { "false" }),
        Shape::Text(texts) | Shape::Json(texts) => {
            let text = match texts {
                Texts::Utf8(a) => a.value(row),
                Texts::Large(a) => a.value(row),
                Texts::View(a) => a.value(row),
            };
            let head: String = text.chars().take(CELL_TEXT_CHARS * 2).collect();
            // Snowflake pretty-prints JSON over many lines; one line reads better in a log.
            let flat = if matches!(shape, Shape::Json(_)) {
                head.split_whitespace().collect::<Vec<_>>().join(" ")
            } else {
                head
            };
            let _ = write!(out, "{flat:?}");
        }
        Shape::Binary(binaries) => {
            let bytes = match binaries {
                Binaries::Binary(a) => a.value(row),
                Binaries::Large(a) => a.value(row),
                Binaries::View(a) => a.value(row),
                Binaries::Fixed(a) => a.value(row),
            };
            out.push_str("0x");
            for byte in bytes.iter().take(CELL_TEXT_CHARS / 2) {
                let _ = write!(out, "{byte:02x}");
            }
        }
        Shape::Instant(instants) => {
            let nanos = match instants {
                Instants::Scaled { values, mult, .. } => i128::from(values[row]) * mult,
                Instants::Days { values, .. } => i128::from(values[row]) * NANOS_PER_DAY,
                Instants::Split {
                    epoch, fraction, ..
                } => i128::from(epoch[row]) * NANOS_PER_SECOND + i128::from(fraction[row]),
            };
            render_instant(nanos, out);
        }
        Shape::List(list) => {
            let child_array: &dyn Array = match array.data_type() {
                DataType::List(_) => array.as_list::<i32>().values().as_ref(),
                DataType::LargeList(_) => array.as_list::<i64>().values().as_ref(),
                _ => array.as_fixed_size_list().values().as_ref(),
            };
            let (start, end) = list.range(row);
            out.push('[');
            for (k, i) in (start..end).enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                if out.len() > CELL_TEXT_CHARS {
                    out.push_str("...");
                    break;
                }
                render(&list.child, child_array, i, out);
            }
            out.push(']');
        }
        Shape::Unsupported(_) => {
            let _ = write!(out, "<{}>", array.data_type());
        }
    }
}

fn render_instant(nanos: i128, out: &mut String) {
    let seconds = nanos.div_euclid(NANOS_PER_SECOND);
    let subsec = nanos.rem_euclid(NANOS_PER_SECOND) as u32;
    let time = i64::try_from(seconds)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, subsec));
    match time {
        Some(t) => out.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        None => {
            let _ = write!(out, "{nanos} ns since epoch");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::types::Int16Type;
    use arrow_array::{
        ArrayRef, BinaryArray, Decimal128Array, Float64Array, Int16Array, ListArray, StringArray,
    };

    use super::super::test_support::*;

    use super::*;

    #[test]
    fn cell_text_renders_values_for_logs() {
        let (scaled, field) = column(Arc::new(Int16Array::from(vec![1234, -5])), FIXED2);
        assert_eq!(cell_text(&scaled, 0), "1234");
        assert_eq!(field_cell_text(&scaled, &field, 0), "12.34");
        assert_eq!(field_cell_text(&scaled, &field, 1), "-0.05");
        let dec: ArrayRef = Arc::new(
            Decimal128Array::from(vec![-5])
                .with_precision_and_scale(38, 2)
                .unwrap(),
        );
        assert_eq!(cell_text(&dec, 0), "-0.05");
        let ts = ts_struct(
            vec![Some(1_700_000_000), None],
            Some(vec![123_456_789, 0]),
            None,
            None,
        );
        assert_eq!(cell_text(&ts, 0), "2023-11-14T22:13:20.123456789Z");
        assert_eq!(cell_text(&ts, 1), "NULL");
        let long: ArrayRef = Arc::new(StringArray::from(vec!["x".repeat(500)]));
        let text = cell_text(&long, 0);
        assert_eq!(text.chars().count(), 80);
        assert!(text.starts_with("\"xxx") && text.ends_with('…'), "{text}");
        let (pretty, field) = column(
            Arc::new(StringArray::from(vec!["[\n  1,\n  undefined\n]"])),
            ARRAY,
        );
        assert_eq!(field_cell_text(&pretty, &field, 0), "\"[ 1, undefined ]\"");
        let bin: ArrayRef = Arc::new(BinaryArray::from_vec(vec![&[0xde, 0xad][..]]));
        assert_eq!(cell_text(&bin, 0), "0xdead");
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(vec![
            Some(vec![Some(1), None]),
        ]));
        assert_eq!(cell_text(&list, 0), "[1, NULL]");
        let f: ArrayRef = Arc::new(Float64Array::from(vec![f64::NAN]));
        assert_eq!(cell_text(&f, 0), "NaN");
    }
}
