//! Arrow shapes: what a page column is, decided once per column.
//!
//! # Contract
//!
//! Promises:
//! - [`classify`] downcasts a column once into a [`Shape`] with Snowflake's field
//!   metadata applied (`logicalType`, `scale`), or [`Shape::Unsupported`] saying
//!   what the column is; it never fails and never reads a row;
//! - the row loops (`each_*`) call their closure once per row, in row order, with
//!   `None` for SQL NULL, without allocating and without per-row dispatch: the
//!   concrete array type is matched once per column;
//! - [`describe`] / [`describe_shape`] name a column for error messages
//!   ("Arrow Int16 (Snowflake FIXED, scale 2)").
//!
//! Assumes the shapes in this table (from `snowflake-api`, fakesnow, or an
//! Arrow-native source such as Parquet):
//!
//! | Snowflake type | Arrow shape | value |
//! |---|---|---|
//! | NUMBER(p,s), INT | Int8..Int64 (narrowest), metadata `scale` s | raw / 10^s |
//! | NUMBER, wide | Decimal128, metadata `scale` (else the type's scale) | raw / 10^s |
//! | FLOAT | Float64 (Float32 accepted) | as is |
//! | BOOLEAN | Boolean | as is |
//! | VARCHAR | Utf8 (LargeUtf8, Utf8View accepted), `logicalType` TEXT | as is |
//! | BINARY | Binary (LargeBinary, BinaryView, FixedSizeBinary accepted) | as is |
//! | ARRAY, VARIANT | Utf8 JSON text, `logicalType` ARRAY / VARIANT | parsed per cell |
//! | structured ARRAY(T) | List of T | per element |
//! | TIMESTAMP_NTZ/LTZ | Int64 in 10^-scale s, or Struct{epoch s, fraction ns} | epoch + fraction |
//! | TIMESTAMP_TZ | Struct{epoch in 10^-scale s, timezone} or Struct{epoch s, fraction ns, timezone} | timezone ignored |
//! | DATE | Date32 days | midnight UTC |
//!
//! Arrow-native Timestamp(unit, tz), Date64, List/LargeList/FixedSizeList and Null
//! (all NULL) are read too. An untyped Int64 is a number, never a timestamp: its unit
//! would be a guess. TIMESTAMP_NTZ wall time is counted as if it were UTC (Feast does the
//! same with naive datetimes); sync then reads it in the view's zone when one is
//! configured ([`crate::warehouse::zone`]). TIMESTAMP_TZ/LTZ epochs are UTC already, so
//! the zone is ignored.
//! A struct timestamp whose `epoch` child is null is NULL even when the struct slot is
//! valid (fakesnow's shape before the test proxy repairs it).

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal32Type, Decimal64Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayAccessor, ArrowPrimitiveType, BinaryArray, BinaryViewArray, BooleanArray,
    FixedSizeBinaryArray, LargeBinaryArray, LargeStringArray, PrimitiveArray, StringArray,
    StringViewArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, TimeUnit};

/// A column's Arrow array, downcast once, with the Snowflake metadata applied.
pub(super) enum Shape<'a> {
    /// Arrow `Null`: every cell is NULL.
    AllNull(usize),
    Number(Numbers<'a>),
    Bool(&'a BooleanArray),
    /// Plain text (VARCHAR).
    Text(Texts<'a>),
    /// JSON text (Snowflake ARRAY / VARIANT).
    Json(Texts<'a>),
    Binary(Binaries<'a>),
    Instant(Instants<'a>),
    List(Box<ListShape<'a>>),
    /// Cannot feed any field; the text says what it is.
    Unsupported(String),
}

/// Numeric arrays with the decimal scale their values are divided by (10^scale).
pub(super) enum Numbers<'a> {
    I8(&'a PrimitiveArray<Int8Type>, i32),
    I16(&'a PrimitiveArray<Int16Type>, i32),
    I32(&'a PrimitiveArray<Int32Type>, i32),
    I64(&'a PrimitiveArray<Int64Type>, i32),
    U8(&'a PrimitiveArray<UInt8Type>, i32),
    U16(&'a PrimitiveArray<UInt16Type>, i32),
    U32(&'a PrimitiveArray<UInt32Type>, i32),
    U64(&'a PrimitiveArray<UInt64Type>, i32),
    D32(&'a PrimitiveArray<Decimal32Type>, i32),
    D64(&'a PrimitiveArray<Decimal64Type>, i32),
    D128(&'a PrimitiveArray<Decimal128Type>, i32),
    F32(&'a PrimitiveArray<Float32Type>),
    F64(&'a PrimitiveArray<Float64Type>),
}

/// Runs `$body` with `$a` bound to the concrete array and `$s` to its scale, so the
/// body is compiled once per native type and its row loop has no dispatch.
macro_rules! with_numbers {
    ($numbers:expr, |$a:ident, $s:ident| $body:expr) => {{
        use $crate::warehouse::decode::shapes::Numbers;
        match $numbers {
            Numbers::I8(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::I16(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::I32(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::I64(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::U8(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::U16(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::U32(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::U64(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::D32(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::D64(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::D128(a, s) => {
                let ($a, $s) = (*a, *s);
                $body
            }
            Numbers::F32(a) => {
                let ($a, $s) = (*a, 0i32);
                $body
            }
            Numbers::F64(a) => {
                let ($a, $s) = (*a, 0i32);
                $body
            }
        }
    }};
}
pub(super) use with_numbers;

impl Numbers<'_> {
    /// Integers or decimals of scale 0: values that can be identifiers.
    pub(super) fn is_whole(&self) -> bool {
        match self {
            Numbers::I8(_, s)
            | Numbers::I16(_, s)
            | Numbers::I32(_, s)
            | Numbers::I64(_, s)
            | Numbers::U8(_, s)
            | Numbers::U16(_, s)
            | Numbers::U32(_, s)
            | Numbers::U64(_, s)
            | Numbers::D32(_, s)
            | Numbers::D64(_, s)
            | Numbers::D128(_, s) => *s == 0,
            Numbers::F32(_) | Numbers::F64(_) => false,
        }
    }
}

pub(super) enum Texts<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

pub(super) enum Binaries<'a> {
    Binary(&'a BinaryArray),
    Large(&'a LargeBinaryArray),
    View(&'a BinaryViewArray),
    Fixed(&'a FixedSizeBinaryArray),
}

/// Every timestamp and date shape, reduced to one of three integer layouts.
pub(super) enum Instants<'a> {
    /// `value * mult` nanoseconds: Int64 NTZ/LTZ, the TZ two-field epoch, Arrow
    /// Timestamp(unit), Date64.
    Scaled {
        values: &'a [i64],
        nulls: Option<NullBuffer>,
        mult: i128,
    },
    /// Days since the epoch (Date32).
    Days {
        values: &'a [i32],
        nulls: Option<NullBuffer>,
    },
    /// `epoch` seconds plus `fraction` nanoseconds (Snowflake's struct forms). The
    /// sum is taken as is, so both "floored epoch + positive fraction" and a
    /// truncated epoch with a signed fraction decode to the same instant.
    Split {
        epoch: &'a [i64],
        fraction: &'a [i32],
        nulls: Option<NullBuffer>,
    },
}

pub(super) struct ListShape<'a> {
    offsets: ListOffsets<'a>,
    pub(super) nulls: Option<&'a NullBuffer>,
    pub(super) len: usize,
    pub(super) child: Shape<'a>,
}

enum ListOffsets<'a> {
    Small(&'a [i32]),
    Large(&'a [i64]),
    Fixed(usize),
}

impl ListShape<'_> {
    #[inline]
    pub(super) fn range(&self, row: usize) -> (usize, usize) {
        match self.offsets {
            ListOffsets::Small(o) => (o[row] as usize, o[row + 1] as usize),
            ListOffsets::Large(o) => (o[row] as usize, o[row + 1] as usize),
            ListOffsets::Fixed(size) => (row * size, (row + 1) * size),
        }
    }
}

pub(super) const NANOS_PER_SECOND: i128 = 1_000_000_000;
pub(super) const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;

fn metadata<'f>(field: &'f Field, key: &str) -> Option<&'f str> {
    field.metadata().get(key).map(String::as_str)
}

/// Snowflake's `scale` metadata, or `default` when absent.
fn metadata_scale(field: &Field, default: i32) -> Result<i32, String> {
    match metadata(field, "scale") {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("field metadata scale `{s}` is not a number")),
    }
}

/// Multiplier turning a count of 10^-scale seconds into nanoseconds.
fn nanos_multiplier(scale: i32) -> Result<i128, String> {
    if (0..=9).contains(&scale) {
        Ok(10i128.pow((9 - scale) as u32))
    } else {
        Err(format!("timestamp scale {scale} is outside 0..=9"))
    }
}

pub(super) fn classify<'a>(array: &'a dyn Array, field: &Field) -> Shape<'a> {
    classify_inner(array, field).unwrap_or_else(Shape::Unsupported)
}

fn classify_inner<'a>(array: &'a dyn Array, field: &Field) -> Result<Shape<'a>, String> {
    let logical = metadata(field, "logicalType");
    let is_timestamp = matches!(logical, Some("TIMESTAMP_NTZ" | "TIMESTAMP_LTZ"));
    // FIXED scale: Snowflake's decoder reads it from the metadata even for Decimal128.
    let fixed_scale = || metadata_scale(field, 0);
    let shape = match array.data_type() {
        DataType::Null => Shape::AllNull(array.len()),
        DataType::Int64 if is_timestamp => Shape::Instant(Instants::Scaled {
            values: array.as_primitive::<Int64Type>().values(),
            nulls: array.nulls().cloned(),
            mult: nanos_multiplier(metadata_scale(field, 9)?)?,
        }),
        DataType::Int32 if logical == Some("DATE") => Shape::Instant(Instants::Days {
            values: array.as_primitive::<Int32Type>().values(),
            nulls: array.nulls().cloned(),
        }),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
            if matches!(
                logical,
                Some("TIME" | "TIMESTAMP_NTZ" | "TIMESTAMP_LTZ" | "TIMESTAMP_TZ" | "DATE")
            ) =>
        {
            return Err(format!(
                "a Snowflake {} column as {}",
                logical.unwrap_or_default(),
                array.data_type()
            ));
        }
        DataType::Int8 => Shape::Number(Numbers::I8(array.as_primitive(), fixed_scale()?)),
        DataType::Int16 => Shape::Number(Numbers::I16(array.as_primitive(), fixed_scale()?)),
        DataType::Int32 => Shape::Number(Numbers::I32(array.as_primitive(), fixed_scale()?)),
        DataType::Int64 => Shape::Number(Numbers::I64(array.as_primitive(), fixed_scale()?)),
        DataType::UInt8 => Shape::Number(Numbers::U8(array.as_primitive(), fixed_scale()?)),
        DataType::UInt16 => Shape::Number(Numbers::U16(array.as_primitive(), fixed_scale()?)),
        DataType::UInt32 => Shape::Number(Numbers::U32(array.as_primitive(), fixed_scale()?)),
        DataType::UInt64 => Shape::Number(Numbers::U64(array.as_primitive(), fixed_scale()?)),
        DataType::Decimal32(_, s) => Shape::Number(Numbers::D32(
            array.as_primitive(),
            metadata_scale(field, i32::from(*s))?,
        )),
        DataType::Decimal64(_, s) => Shape::Number(Numbers::D64(
            array.as_primitive(),
            metadata_scale(field, i32::from(*s))?,
        )),
        DataType::Decimal128(_, s) => Shape::Number(Numbers::D128(
            array.as_primitive(),
            metadata_scale(field, i32::from(*s))?,
        )),
        DataType::Float32 => Shape::Number(Numbers::F32(array.as_primitive())),
        DataType::Float64 => Shape::Number(Numbers::F64(array.as_primitive())),
        DataType::Boolean => Shape::Bool(array.as_boolean()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let texts = match array.data_type() {
                DataType::Utf8 => Texts::Utf8(array.as_string()),
                DataType::LargeUtf8 => Texts::Large(array.as_string()),
                _ => Texts::View(array.as_string_view()),
            };
            match logical {
                Some("ARRAY" | "VARIANT") => Shape::Json(texts),
                Some(other @ ("OBJECT" | "MAP" | "GEOGRAPHY" | "GEOMETRY")) => {
                    return Err(format!("a Snowflake {other} column"));
                }
                _ => Shape::Text(texts),
            }
        }
        DataType::Binary => Shape::Binary(Binaries::Binary(array.as_binary())),
        DataType::LargeBinary => Shape::Binary(Binaries::Large(array.as_binary())),
        DataType::BinaryView => Shape::Binary(Binaries::View(array.as_binary_view())),
        DataType::FixedSizeBinary(_) => {
            Shape::Binary(Binaries::Fixed(array.as_fixed_size_binary()))
        }
        DataType::Struct(_) => Shape::Instant(struct_instants(array, field)?),
        DataType::Timestamp(unit, _) => {
            let (values, mult): (&[i64], i128) = match unit {
                TimeUnit::Second => (
                    array.as_primitive::<TimestampSecondType>().values(),
                    NANOS_PER_SECOND,
                ),
                TimeUnit::Millisecond => (
                    array.as_primitive::<TimestampMillisecondType>().values(),
                    1_000_000,
                ),
                TimeUnit::Microsecond => (
                    array.as_primitive::<TimestampMicrosecondType>().values(),
                    1_000,
                ),
                TimeUnit::Nanosecond => {
                    (array.as_primitive::<TimestampNanosecondType>().values(), 1)
                }
            };
            Shape::Instant(Instants::Scaled {
                values,
                nulls: array.nulls().cloned(),
                mult,
            })
        }
        DataType::Date32 => Shape::Instant(Instants::Days {
            values: array.as_primitive::<Date32Type>().values(),
            nulls: array.nulls().cloned(),
        }),
        DataType::Date64 => Shape::Instant(Instants::Scaled {
            values: array.as_primitive::<Date64Type>().values(),
            nulls: array.nulls().cloned(),
            mult: 1_000_000,
        }),
        DataType::List(child) => {
            let list = array.as_list::<i32>();
            Shape::List(Box::new(ListShape {
                offsets: ListOffsets::Small(list.value_offsets()),
                nulls: list.nulls(),
                len: list.len(),
                child: classify(list.values().as_ref(), child),
            }))
        }
        DataType::LargeList(child) => {
            let list = array.as_list::<i64>();
            Shape::List(Box::new(ListShape {
                offsets: ListOffsets::Large(list.value_offsets()),
                nulls: list.nulls(),
                len: list.len(),
                child: classify(list.values().as_ref(), child),
            }))
        }
        DataType::FixedSizeList(child, size) => {
            let list = array.as_fixed_size_list();
            Shape::List(Box::new(ListShape {
                offsets: ListOffsets::Fixed(usize::try_from(*size).unwrap_or(0)),
                nulls: list.nulls(),
                len: list.len(),
                child: classify(list.values().as_ref(), child),
            }))
        }
        other => return Err(format!("Arrow type {other}")),
    };
    Ok(shape)
}

/// Snowflake's struct timestamps: `{epoch, fraction[, timezone]}` or `{epoch, timezone}`.
fn struct_instants<'a>(array: &'a dyn Array, field: &Field) -> Result<Instants<'a>, String> {
    let s = array.as_struct();
    let not_timestamp = || {
        format!(
            "a struct that is not a Snowflake timestamp ({})",
            array.data_type()
        )
    };
    let epoch = s
        .column_by_name("epoch")
        .ok_or_else(not_timestamp)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(not_timestamp)?;
    // A null epoch under a valid struct slot is NULL (fakesnow's shape).
    let nulls = NullBuffer::union(s.nulls(), epoch.nulls());
    match s.column_by_name("fraction") {
        Some(fraction) => Ok(Instants::Split {
            epoch: epoch.values(),
            fraction: fraction
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(not_timestamp)?
                .values(),
            nulls,
        }),
        // TIMESTAMP_TZ with byteLength 8: the epoch counts 10^-scale seconds.
        None if s.column_by_name("timezone").is_some() => Ok(Instants::Scaled {
            values: epoch.values(),
            nulls,
            mult: nanos_multiplier(metadata_scale(field, 9)?)?,
        }),
        None => Err(not_timestamp()),
    }
}

/// "Arrow Int16 (Snowflake FIXED, scale 2)": the column as error messages name it.
fn describe(array: &dyn Array, field: &Field) -> String {
    let mut s = format!("Arrow {}", array.data_type());
    if let Some(logical) = metadata(field, "logicalType") {
        let _ = write!(s, " (Snowflake {logical}");
        if let Some(scale) = metadata(field, "scale").filter(|_| logical == "FIXED") {
            let _ = write!(s, ", scale {scale}");
        }
        s.push(')');
    }
    s
}

pub(super) fn describe_shape(array: &dyn Array, field: &Field, shape: &Shape<'_>) -> String {
    match shape {
        Shape::Unsupported(why) => format!("{} ({why})", describe(array, field)),
        _ => describe(array, field),
    }
}

// ---------------------------------------------------------------------------
// Row loops over the concrete arrays
// ---------------------------------------------------------------------------

#[inline]
pub(super) fn each_primitive<T: ArrowPrimitiveType>(
    array: &PrimitiveArray<T>,
    mut f: impl FnMut(Option<T::Native>),
) {
    let values = array.values();
    match array.nulls().filter(|n| n.null_count() > 0) {
        None => values.iter().for_each(|v| f(Some(*v))),
        Some(nulls) => values
            .iter()
            .enumerate()
            .for_each(|(i, v)| f(nulls.is_valid(i).then_some(*v))),
    }
}

#[inline]
pub(super) fn each_accessor<A: ArrayAccessor>(array: A, mut f: impl FnMut(Option<A::Item>)) {
    for i in 0..array.len() {
        f(if array.is_null(i) {
            None
        } else {
            Some(array.value(i))
        });
    }
}

pub(super) fn each_text<'a>(texts: &Texts<'a>, f: impl FnMut(Option<&'a str>)) {
    match *texts {
        Texts::Utf8(a) => each_accessor(a, f),
        Texts::Large(a) => each_accessor(a, f),
        Texts::View(a) => each_accessor(a, f),
    }
}

pub(super) fn each_binary<'a>(binaries: &Binaries<'a>, f: impl FnMut(Option<&'a [u8]>)) {
    match *binaries {
        Binaries::Binary(a) => each_accessor(a, f),
        Binaries::Large(a) => each_accessor(a, f),
        Binaries::View(a) => each_accessor(a, f),
        Binaries::Fixed(a) => each_accessor(a, f),
    }
}

#[inline]
pub(super) fn is_valid(nulls: &Option<NullBuffer>, i: usize) -> bool {
    nulls.as_ref().is_none_or(|n| n.is_valid(i))
}

/// Calls `f` with each row's instant in nanoseconds (i128: Snowflake's i64 epoch
/// seconds do not fit i64 nanoseconds, and `unix_timestamp` needs only seconds).
pub(super) fn each_instant(instants: &Instants<'_>, mut f: impl FnMut(Option<i128>)) {
    match instants {
        Instants::Scaled {
            values,
            nulls,
            mult,
        } => {
            for (i, v) in values.iter().enumerate() {
                f(is_valid(nulls, i).then(|| i128::from(*v) * mult));
            }
        }
        Instants::Days { values, nulls } => {
            for (i, v) in values.iter().enumerate() {
                f(is_valid(nulls, i).then(|| i128::from(*v) * NANOS_PER_DAY));
            }
        }
        Instants::Split {
            epoch,
            fraction,
            nulls,
        } => {
            for (i, (e, fr)) in epoch.iter().zip(fraction.iter()).enumerate() {
                f(is_valid(nulls, i).then(|| i128::from(*e) * NANOS_PER_SECOND + i128::from(*fr)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int64Array, ListArray, StringArray,
    };

    use super::super::test_support::*;

    use super::*;
    use crate::model::FieldType;
    use crate::profiles::feast::*;

    #[test]
    fn sliced_columns_decode_their_own_rows() {
        let ts = ts_struct(
            vec![Some(1), Some(2), Some(3)],
            Some(vec![0, 7, 0]),
            None,
            None,
        )
        .slice(1, 2);
        assert_eq!(
            nanos(ts, NTZ9),
            vec![Ok(Some(2_000_000_007)), Ok(Some(3_000_000_000))]
        );
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
            Some(vec![Some(2), Some(3)]),
        ]);
        let list: ArrayRef = Arc::new(list.slice(1, 1));
        assert_eq!(
            encode(list, &[], FieldType::Int32List),
            vec![v(|o| push_int32_list(o, [2, 3]))]
        );
        let texts: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]).slice(1, 1));
        assert_eq!(
            encode(texts, TEXT, FieldType::String),
            vec![v(|o| push_string(o, "b"))]
        );
    }

    #[test]
    fn fakesnow_page_shapes_decode() {
        let meta = |logical: &str, scale: &str| {
            vec![
                ("logicalType", logical.to_string()),
                ("precision", "38".into()),
                ("scale", scale.into()),
                ("charLength", "0".into()),
            ]
        };
        let check =
            |array: ArrayRef, m: Vec<(&str, String)>, ty: FieldType, expected: Vec<Expected>| {
                let m: Vec<(&str, &str)> = m.iter().map(|(k, v)| (*k, v.as_str())).collect();
                assert_eq!(encode(array, &m, ty), expected, "{ty}");
            };
        check(
            Arc::new(Int64Array::from(vec![7])),
            meta("FIXED", "0"),
            FieldType::Int32,
            vec![v(|o| push_int32(o, 7))],
        );
        check(
            Arc::new(
                Decimal128Array::from(vec![1250])
                    .with_precision_and_scale(38, 2)
                    .unwrap(),
            ),
            meta("FIXED", "2"),
            FieldType::Float,
            vec![v(|o| push_float(o, 12.5))],
        );
        check(
            Arc::new(Float64Array::from(vec![0.25])),
            meta("REAL", "0"),
            FieldType::Double,
            vec![v(|o| push_double(o, 0.25))],
        );
        check(
            Arc::new(BooleanArray::from(vec![true])),
            meta("BOOLEAN", "0"),
            FieldType::Bool,
            vec![v(|o| push_bool(o, true))],
        );
        check(
            Arc::new(StringArray::from(vec!["x"])),
            meta("TEXT", "0"),
            FieldType::String,
            vec![v(|o| push_string(o, "x"))],
        );
        check(
            Arc::new(StringArray::from(vec!["[1,2]"])),
            meta("VARIANT", "0"),
            FieldType::Int64List,
            vec![v(|o| push_int64_list(o, [1, 2]))],
        );
        check(
            ts_struct(
                vec![Some(1_700_000_000)],
                Some(vec![500_000_000]),
                None,
                None,
            ),
            meta("TIMESTAMP_NTZ", "9"),
            FieldType::UnixTimestamp,
            vec![secs(1_700_000_000)],
        );
        check(
            ts_struct(
                vec![Some(-1)],
                Some(vec![500_000_000]),
                Some(vec![1440]),
                None,
            ),
            meta("TIMESTAMP_TZ", "9"),
            FieldType::UnixTimestamp,
            vec![secs(-1)],
        );
    }
}
