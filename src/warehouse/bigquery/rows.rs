//! REST result pages as Arrow: BigQuery answers every cell as JSON text
//! (`rows[].f[].v`, typed by `schema.fields`); [`batch`] builds one
//! RecordBatch per page in the shapes `decode` reads, column by column:
//!
//! | BigQuery | Arrow | cell text |
//! |---|---|---|
//! | INT64 | Int64 | `"42"` |
//! | NUMERIC | Decimal128(38, 9) | `"12.34"` |
//! | BIGNUMERIC | Decimal128(38, 9) when every value of the page fits exactly, else Float64 | `"1.5E+40"`-free decimal text |
//! | FLOAT64 | Float64 | `"1.5"`, `"NaN"`, `"Infinity"` |
//! | BOOL | Boolean | `"true"` |
//! | STRING | Utf8 | as is |
//! | BYTES | Binary | base64 |
//! | TIMESTAMP | Timestamp(µs, "UTC") | microseconds (`useInt64Timestamp`), or float seconds |
//! | DATETIME | Timestamp(µs) (a wall time) | `2024-05-01T10:00:00.123456` |
//! | DATE | Date32 | `2024-05-01` |
//! | JSON | Utf8, `logicalType` VARIANT (JSON text for list fields) | JSON text |
//! | ARRAY<T> (mode REPEATED) | List of T's shape | `[{"v": …}, …]` (NULL arrays are empty) |
//! | TIME, GEOGRAPHY, INTERVAL, RANGE | Utf8 | as is |
//! | STRUCT | Utf8 (the cell's JSON) | `{"f": […]}` |
//!
//! A cell that does not read as its type is a transient error (an answer
//! that does not keep BigQuery's documented format).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, TimeUnit};
use base64::Engine as _;
use serde_json::Value;

use super::api::{FieldSchema, Row};
use crate::warehouse::{Result, WarehouseError};

/// NUMERIC's scale (and BIGNUMERIC's when it fits).
pub(crate) const NUMERIC_SCALE: i8 = 9;

/// The standard SQL name of a REST type name (`INTEGER` is INT64, ...).
pub(crate) fn standard_name(type_name: &str) -> String {
    let upper = type_name.to_ascii_uppercase();
    match upper.as_str() {
        "INTEGER" => "INT64".into(),
        "FLOAT" => "FLOAT64".into(),
        "BOOLEAN" => "BOOL".into(),
        "RECORD" => "STRUCT".into(),
        _ => upper,
    }
}

/// One page of rows as a RecordBatch with one column per schema field.
pub(crate) fn batch(fields: &[FieldSchema], rows: &[Row]) -> Result<RecordBatch> {
    let mut arrow_fields = Vec::with_capacity(fields.len());
    let mut columns = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let cells: Vec<&Value> = rows
            .iter()
            .map(|r| r.f.get(i).map_or(&Value::Null, |c| &c.v))
            .collect();
        let (field, array) = column(f, &cells)?;
        arrow_fields.push(field);
        columns.push(array);
    }
    let schema = Arc::new(ArrowSchema::new(arrow_fields));
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
    .map_err(|e| WarehouseError::Transient(format!("BigQuery result page: {e}")))
}

fn bad(f: &FieldSchema, cell: &Value) -> WarehouseError {
    let shown = match cell {
        Value::String(s) => crate::warehouse::truncate(s, 40),
        other => crate::warehouse::truncate(&other.to_string(), 40),
    };
    WarehouseError::Transient(format!(
        "BigQuery answered a {} cell of column {} that does not read as one: {shown}",
        standard_name(&f.type_name),
        f.name
    ))
}

/// The column of field `f` from its cells (the `v` of each row).
fn column(f: &FieldSchema, cells: &[&Value]) -> Result<(Field, ArrayRef)> {
    if !f.repeated() {
        return scalar(f, cells);
    }
    // ARRAY<T>: each cell is a list of `{"v": element}` (NULL arrays come as
    // empty ones); the elements of all rows form the child column.
    let mut offsets = Vec::with_capacity(cells.len() + 1);
    offsets.push(0i32);
    let mut elements: Vec<&Value> = Vec::new();
    for cell in cells {
        match cell {
            Value::Array(items) => {
                for item in items {
                    elements.push(item.get("v").unwrap_or(&Value::Null));
                }
            }
            Value::Null => {}
            other => return Err(bad(f, other)),
        }
        let end = i32::try_from(elements.len())
            .map_err(|_| WarehouseError::Transient("BigQuery result page too large".into()))?;
        offsets.push(end);
    }
    let element = FieldSchema {
        mode: Some("NULLABLE".into()),
        ..f.clone()
    };
    let (child_field, child) = scalar(&element, &elements)?;
    let item = Arc::new(child_field.with_name("item"));
    let list = ListArray::try_new(
        item.clone(),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        child,
        None,
    )
    .map_err(|e| WarehouseError::Transient(format!("BigQuery result page: {e}")))?;
    Ok((
        Field::new(&f.name, DataType::List(item), true),
        Arc::new(list),
    ))
}

fn text<'a>(f: &FieldSchema, cell: &'a Value) -> Result<Option<&'a str>> {
    match cell {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(bad(f, other)),
    }
}

fn scalar(f: &FieldSchema, cells: &[&Value]) -> Result<(Field, ArrayRef)> {
    let name = &f.name;
    let ty = standard_name(&f.type_name);
    let array: ArrayRef = match ty.as_str() {
        "INT64" => {
            let mut b = Int64Builder::with_capacity(cells.len());
            for c in cells {
                match text(f, c)? {
                    None => b.append_null(),
                    Some(s) => b.append_value(s.parse().map_err(|_| bad(f, c))?),
                }
            }
            Arc::new(b.finish())
        }
        "FLOAT64" => Arc::new(floats(f, cells)?),
        "NUMERIC" => match decimals(f, cells)? {
            Some(d) => Arc::new(d),
            None => {
                let misfit = cells
                    .iter()
                    .find(|c| {
                        c.as_str()
                            .is_some_and(|s| scaled(s, NUMERIC_SCALE as u32).is_none())
                    })
                    .unwrap_or(&&Value::Null);
                return Err(bad(f, misfit));
            }
        },
        "BIGNUMERIC" => match decimals(f, cells)? {
            Some(d) => Arc::new(d),
            // Wider than Decimal128(38, 9): correctly rounded doubles.
            None => Arc::new(floats(f, cells)?),
        },
        "BOOL" => {
            let mut b = BooleanBuilder::with_capacity(cells.len());
            for c in cells {
                match text(f, c)? {
                    None => b.append_null(),
                    Some("true") => b.append_value(true),
                    Some("false") => b.append_value(false),
                    Some(_) => return Err(bad(f, c)),
                }
            }
            Arc::new(b.finish())
        }
        "BYTES" => {
            let mut b = BinaryBuilder::new();
            let engine = base64::engine::general_purpose::STANDARD;
            for c in cells {
                match text(f, c)? {
                    None => b.append_null(),
                    Some(s) => b.append_value(engine.decode(s).map_err(|_| bad(f, c))?),
                }
            }
            Arc::new(b.finish())
        }
        "TIMESTAMP" => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(cells.len());
            for c in cells {
                match text(f, c)? {
                    None => b.append_null(),
                    Some(s) => b.append_value(timestamp_micros(s).ok_or_else(|| bad(f, c))?),
                }
            }
            return Ok((
                Field::new(
                    name,
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
                Arc::new(b.finish().with_timezone("UTC")),
            ));
        }
        "DATETIME" => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(cells.len());
            for c in cells {
                match text(f, c)? {
                    None => b.append_null(),
                    Some(s) => b.append_value(datetime_micros(s).ok_or_else(|| bad(f, c))?),
                }
            }
            Arc::new(b.finish())
        }
        "DATE" => {
            let mut b = Date32Builder::with_capacity(cells.len());
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
            for c in cells {
                match text(f, c)? {
                    None => b.append_null(),
                    Some(s) => {
                        let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                            .map_err(|_| bad(f, c))?;
                        b.append_value((d - epoch).num_days() as i32)
                    }
                }
            }
            Arc::new(b.finish())
        }
        "JSON" => {
            let meta = HashMap::from([("logicalType".to_string(), "VARIANT".to_string())]);
            return Ok((
                Field::new(name, DataType::Utf8, true).with_metadata(meta),
                Arc::new(strings(f, cells)?),
            ));
        }
        _ => Arc::new(strings(f, cells)?),
    };
    Ok((Field::new(name, array.data_type().clone(), true), array))
}

/// Text cells; a STRUCT's `{"f": …}` as its JSON.
fn strings(f: &FieldSchema, cells: &[&Value]) -> Result<arrow_array::StringArray> {
    let mut b = StringBuilder::new();
    for c in cells {
        match c {
            Value::Null => b.append_null(),
            Value::String(s) => b.append_value(s),
            Value::Object(_) if !f.fields.is_empty() => b.append_value(c.to_string()),
            other => return Err(bad(f, other)),
        }
    }
    Ok(b.finish())
}

fn floats(f: &FieldSchema, cells: &[&Value]) -> Result<arrow_array::Float64Array> {
    let mut b = Float64Builder::with_capacity(cells.len());
    for c in cells {
        match text(f, c)? {
            None => b.append_null(),
            // Rust reads "NaN", "Infinity" and "-Infinity" as BigQuery writes them.
            Some(s) => b.append_value(s.parse().map_err(|_| bad(f, c))?),
        }
    }
    Ok(b.finish())
}

/// Decimal128(38, 9) of the cells, or `None` when one does not fit exactly.
fn decimals(f: &FieldSchema, cells: &[&Value]) -> Result<Option<arrow_array::Decimal128Array>> {
    let mut b = Decimal128Builder::with_capacity(cells.len());
    for c in cells {
        match text(f, c)? {
            None => b.append_null(),
            Some(s) => match scaled(s, NUMERIC_SCALE as u32) {
                Some(v) => b.append_value(v),
                None => return Ok(None),
            },
        }
    }
    b.finish()
        .with_precision_and_scale(38, NUMERIC_SCALE)
        .map(Some)
        .map_err(|e| WarehouseError::Transient(format!("BigQuery result page: {e}")))
}

/// `-12.345` as the integer `-12345000000` at `scale` 9, when it has at
/// most `scale` fraction digits and 38 digits in all.
pub(crate) fn scaled(s: &str, scale: u32) -> Option<i128> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    if int.is_empty() && frac.is_empty()
        || frac.len() > scale as usize
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    if int.len() + scale as usize > 38 {
        return None;
    }
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        v = v * 10 + i128::from(b - b'0');
    }
    v *= 10i128.pow(scale - frac.len() as u32);
    Some(if negative { -v } else { v })
}

/// A TIMESTAMP cell: microseconds (`useInt64Timestamp`), or float seconds
/// (`1.714557600123456E9`, what BigQuery answers without the option).
pub(crate) fn timestamp_micros(s: &str) -> Option<i64> {
    if let Ok(us) = s.parse::<i64>() {
        return Some(us);
    }
    let secs: f64 = s.parse().ok()?;
    let us = (secs * 1e6).round();
    (us.is_finite() && us.abs() < 9.2e18).then_some(us as i64)
}

/// A DATETIME cell (`2024-05-01T10:00:00[.ffffff]`, or with a space) as
/// microseconds of the wall time counted as UTC.
pub(crate) fn datetime_micros(s: &str) -> Option<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    Some(t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;

    fn field(name: &str, ty: &str, mode: &str) -> FieldSchema {
        FieldSchema {
            name: name.into(),
            type_name: ty.into(),
            mode: Some(mode.into()),
            fields: vec![],
        }
    }

    fn rows(v: Value) -> Vec<Row> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn decimal_text_scales_exactly_or_not_at_all() {
        assert_eq!(scaled("12.34", 9), Some(12_340_000_000));
        assert_eq!(scaled("-0.000000001", 9), Some(-1));
        assert_eq!(scaled("5", 9), Some(5_000_000_000));
        assert_eq!(scaled("1.5000000000", 9), Some(1_500_000_000));
        assert_eq!(scaled("0.0000000001", 9), None);
        assert_eq!(
            scaled(&"9".repeat(29), 9),
            Some(10i128.pow(38) - 10i128.pow(9))
        );
        assert_eq!(scaled(&"9".repeat(30), 9), None);
        assert_eq!(scaled("1e5", 9), None);
        assert_eq!(scaled("", 9), None);
    }

    #[test]
    fn cells_read_in_the_shapes_decode_takes() {
        let fields = vec![
            field("i", "INTEGER", "NULLABLE"),
            field("n", "NUMERIC", "NULLABLE"),
            field("bn", "BIGNUMERIC", "NULLABLE"),
            field("f", "FLOAT", "NULLABLE"),
            field("b", "BOOLEAN", "NULLABLE"),
            field("by", "BYTES", "NULLABLE"),
            field("ts", "TIMESTAMP", "NULLABLE"),
            field("dt", "DATETIME", "NULLABLE"),
            field("d", "DATE", "NULLABLE"),
            field("tags", "STRING", "REPEATED"),
            field("j", "JSON", "NULLABLE"),
        ];
        let rows = rows(serde_json::json!([
            {"f": [{"v": "-9223372036854775808"}, {"v": "12.34"}, {"v": "0.00000000001"},
                   {"v": "-Infinity"}, {"v": "true"}, {"v": "3q2+7w=="},
                   {"v": "1714557600123456"}, {"v": "1969-12-31T23:59:59.999999"},
                   {"v": "1970-01-02"}, {"v": [{"v": "a"}, {"v": "b"}]}, {"v": "[1,2]"}]},
            {"f": [{"v": null}, {"v": null}, {"v": null}, {"v": "NaN"}, {"v": null},
                   {"v": null}, {"v": null}, {"v": null}, {"v": null}, {"v": []}, {"v": null}]}
        ]));
        let b = batch(&fields, &rows).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            b.column(0)
                .as_primitive::<arrow_array::types::Int64Type>()
                .value(0),
            i64::MIN
        );
        assert_eq!(b.column(1).data_type(), &DataType::Decimal128(38, 9));
        // 11 fraction digits do not fit scale 9: the page's BIGNUMERIC is Float64.
        assert_eq!(b.column(2).data_type(), &DataType::Float64);
        assert_eq!(
            b.column(5).as_binary::<i32>().value(0),
            [0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(
            b.column(6).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            b.column(7)
                .as_primitive::<arrow_array::types::TimestampMicrosecondType>()
                .value(0),
            -1
        );
        assert_eq!(
            b.column(8)
                .as_primitive::<arrow_array::types::Date32Type>()
                .value(0),
            1
        );
        let tags = b.column(9).as_list::<i32>();
        assert_eq!((tags.value_length(0), tags.value_length(1)), (2, 0));
        assert_eq!(
            b.schema()
                .field(10)
                .metadata()
                .get("logicalType")
                .map(String::as_str),
            Some("VARIANT")
        );
        assert!(b.column(10).is_null(1));
    }

    #[test]
    fn a_cell_that_does_not_read_as_its_type_is_an_error() {
        let e = batch(
            &[field("i", "INT64", "NULLABLE")],
            &rows(serde_json::json!([{"f": [{"v": "1.5"}]}])),
        )
        .unwrap_err();
        assert!(
            e.is_retryable() && e.to_string().contains("column i"),
            "{e}"
        );
        assert_eq!(
            timestamp_micros("1.714557600123456E9"),
            Some(1_714_557_600_123_456)
        );
    }
}
