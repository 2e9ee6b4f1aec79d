//! Decoding of warehouse Arrow results into Feast values, column by column.
//!
//! # Contract
//!
//! Promises:
//! - [`encode_column`] turns one page column into serialized `feast.types.Value`s
//!   (bytes produced only by the `push_*` encoders of [`crate::profiles::feast`]),
//!   one per row: a SQL NULL is an empty `Value` (Feast's null); a value that does not
//!   fit the field type is a [`SkipReason`] for that row's field, never an error for
//!   the page. Only a column whose Arrow shape cannot feed the field type at all is a
//!   [`ColumnError`] (permanent: the table or view must change).
//! - [`timestamps`] gives the UTC instant of every row of the event-timestamp column
//!   as [`Nanos`], [`entities`] the entity of every row as text, both without
//!   allocating per row.
//! - [`compatible`], [`timestamp_compatible`] and [`entity_compatible`] accept a
//!   warehouse type name exactly when the Arrow shape that type arrives in is decoded
//!   by the functions above, so `check` can refuse a view before any row is read.
//! - Work is column-wise: each array is downcast once, then a monomorphic loop runs
//!   over its rows. Scalar cells allocate nothing; list cells reuse one scratch buffer
//!   per column (Feast's list encoders allocate their own body buffer).
//!
//! Assumes: columns come from `snowflake-api` (real Snowflake or fakesnow, whose
//! shapes `tests/support/snowflake_server.py` leaves intact apart from null timestamp
//! structs) or from an Arrow-native source such as Parquet. Snowflake describes each
//! field in its metadata (`logicalType`, `scale`, `precision`); where it is absent the
//! Arrow type alone decides. The reference for Snowflake's shapes is
//! snowflake-connector-python's `CArrowChunkIterator.cpp` / `TimeStampConverter.cpp`.
//!
//! # Arrow shapes understood
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
//! would be a guess. TIMESTAMP_NTZ wall time is taken as UTC (Feast does the same with
//! naive datetimes); TIMESTAMP_TZ/LTZ epochs are UTC already, so the zone is ignored.
//! A struct timestamp whose `epoch` child is null is NULL even when the struct slot is
//! valid (fakesnow's shape before the test proxy repairs it).
//!
//! # Conversion rules (field type ← column)
//!
//! - `int32`, `int64` ← any number. Integral values convert exactly (a scaled NUMBER
//!   such as `12.00` is 12); a fraction, or NaN, is [`SkipReason::NotInteger`]; a value
//!   outside the type, or ±inf, is [`SkipReason::Overflow`].
//! - `double` ← any number. Scaled integers are rounded once, correctly (a NUMBER(10,2)
//!   `0.10` is the f64 nearest 0.1, not `10.0 / 100.0` rounded twice).
//! - `float` ← any number, correctly rounded to f32; a finite value beyond f32's range
//!   is `Overflow`; NaN and ±inf are kept (Feast stores them as they are).
//! - `bool` ← BOOLEAN. `string` ← VARCHAR. `bytes` ← BINARY, or VARCHAR as its UTF-8
//!   bytes. VARIANT/ARRAY/OBJECT JSON text does not feed scalar fields (cast it in
//!   the view, e.g. `v::NUMBER`): its text is JSON, not the value.
//! - `unix_timestamp` (Feast's whole seconds since the epoch) ← any timestamp shape
//!   or DATE, floored to the second (1969-12-31T23:59:59.5Z is -1, as Feast's own
//!   scalar materialization does); or ← a number taken as epoch seconds, floored the
//!   same way. Seconds outside Python `datetime`'s years 1..=9999 make Feast's reader
//!   fail the whole request, so they are `Overflow`.
//! - `*_list` ← ARRAY/VARIANT JSON text (VARCHAR holding JSON too: without metadata
//!   the two cannot be told apart), or a native list. Each element follows the scalar
//!   rule of the element type; JSON elements are JSON numbers for numeric lists (JSON
//!   numbers as epoch seconds for `unix_timestamp_list`), booleans for `bool_list`,
//!   strings for `string_list`, `bytes_list` (the string's UTF-8 bytes: Snowflake
//!   renders BINARY inside a VARIANT as hex text, and guessing hex would corrupt text
//!   that merely looks like hex) and `unix_timestamp_list` (`2024-01-01`,
//!   `2024-01-01 10:00:00.123`, RFC 3339, and Snowflake's `... -0800` suffix);
//!   `double_list`/`float_list` also take the strings `"NaN"`, `"Infinity"`,
//!   `"-Infinity"`. A null element is [`SkipReason::NullInList`] (Feast lists cannot
//!   hold nulls; Snowflake prints a SQL NULL element as the bare word `undefined`,
//!   which counts as a null element); text that is not a JSON array is
//!   [`SkipReason::InvalidList`]; an element of the wrong kind (a string in an int
//!   list, a nested array, an unparseable timestamp) is [`SkipReason::Unrepresentable`].
//!   When several elements are bad, the first one's reason is reported. A JSON
//!   `null` document (VARIANT null) is a NULL cell, like SQL NULL.
//! - A SQL NULL cell, of any type, is Feast's null (an empty `Value`), not a skip.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal32Type, Decimal64Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayAccessor, ArrayRef, ArrowPrimitiveType, BinaryArray, BinaryViewArray, BooleanArray,
    FixedSizeBinaryArray, LargeBinaryArray, LargeStringArray, PrimitiveArray, StringArray,
    StringViewArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, TimeUnit};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Nanos;
use crate::model::FieldType;
use crate::profiles::feast;

/// A column that cannot be read as the requested type at all (permanent: the view or table must change).
#[derive(Debug, Clone, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ColumnError {
    pub column: String,
    pub message: String,
}

/// Why one cell was skipped (counted per reason in run records and metrics; labels are stable snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Outside the field type's range: i32/i64 bounds, a finite number beyond f32,
    /// ±inf into an integer, an instant outside [`Nanos`] or outside the seconds
    /// Feast can read back as a `unix_timestamp`.
    Overflow,
    /// A fraction, or NaN, where the field type needs a whole number.
    NotInteger,
    /// A list with a null element: Feast lists cannot hold nulls.
    NullInList,
    /// Text for a list field that is not a JSON array (or not JSON at all).
    InvalidList,
    /// A value of a kind the field type has no encoding for: a list element of the
    /// wrong JSON kind (a string in an int list, a nested array) or a timestamp string
    /// that does not parse.
    Unrepresentable,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::Overflow,
        SkipReason::NotInteger,
        SkipReason::NullInList,
        SkipReason::InvalidList,
        SkipReason::Unrepresentable,
    ];

    /// Metric / run-record label; stable across releases.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overflow => "overflow",
            SkipReason::NotInteger => "not_integer",
            SkipReason::NullInList => "null_in_list",
            SkipReason::InvalidList => "invalid_list",
            SkipReason::Unrepresentable => "unrepresentable",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded cell: a value, `Ok(None)` for SQL NULL, or why it cannot be used.
type Cell<T> = Result<Option<T>, SkipReason>;

// ---------------------------------------------------------------------------
// Encoded columns
// ---------------------------------------------------------------------------

/// The field values of one page column, encoded as serialized feast `Value`s.
///
/// All values live in one buffer; a row's bytes are `data[offsets[row]..offsets[row + 1]]`.
/// Skipped rows have an empty range and an entry in `skipped` (sorted by row), so the
/// common case (nothing skipped) costs one `u32` per row and a skip costs a lookup
/// only for empty cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedColumn {
    data: Vec<u8>,
    offsets: Vec<u32>,
    skipped: Vec<(u32, SkipReason)>,
}

impl EncodedColumn {
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ok(bytes) to write (a SQL NULL is Ok(empty slice) = Feast's null Value), Err(reason) to skip this field of this row.
    #[inline]
    pub fn get(&self, row: usize) -> Result<&[u8], SkipReason> {
        let start = self.offsets[row] as usize;
        let end = self.offsets[row + 1] as usize;
        if start == end && !self.skipped.is_empty() {
            if let Ok(i) = self
                .skipped
                .binary_search_by_key(&row, |&(r, _)| r as usize)
            {
                return Err(self.skipped[i].1);
            }
        }
        Ok(&self.data[start..end])
    }

    /// Rows skipped, in row order, with their reason (for counting and sample logging).
    pub fn skipped(&self) -> impl Iterator<Item = (usize, SkipReason)> + '_ {
        self.skipped.iter().map(|&(r, why)| (r as usize, why))
    }

    pub fn skipped_count(&self) -> usize {
        self.skipped.len()
    }
}

/// Appends cells to an [`EncodedColumn`]; a skipped cell's partial bytes are dropped.
struct Builder {
    col: EncodedColumn,
}

impl Builder {
    fn new(rows: usize, bytes_per_row: usize) -> Builder {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Builder {
            col: EncodedColumn {
                data: Vec::with_capacity(rows.saturating_mul(bytes_per_row)),
                offsets,
                skipped: Vec::new(),
            },
        }
    }

    /// Closes the current row; its bytes were appended to `col.data` by the caller.
    #[inline]
    fn end_row(&mut self, result: Result<(), SkipReason>) {
        let c = &mut self.col;
        if let Err(why) = result {
            let start = *c.offsets.last().expect("offsets start with 0") as usize;
            c.data.truncate(start);
            c.skipped.push(((c.offsets.len() - 1) as u32, why));
        }
        // Wraps only past 4 GiB, which `finish` refuses: data never shrinks below an
        // offset already pushed, so an oversized buffer is still oversized at the end.
        c.offsets.push(c.data.len() as u32);
    }

    #[inline]
    fn push<T>(&mut self, cell: Cell<T>, encode: impl FnOnce(&mut Vec<u8>, T)) {
        let result = cell.map(|value| {
            if let Some(v) = value {
                encode(&mut self.col.data, v);
            }
        });
        self.end_row(result);
    }

    fn finish(self, column: &str) -> Result<EncodedColumn, ColumnError> {
        if self.col.data.len() > u32::MAX as usize || self.col.offsets.len() > u32::MAX as usize {
            return Err(ColumnError {
                column: column.to_string(),
                message: format!(
                    "a page of this column encodes to {} bytes, over the 4 GiB a page may hold; lower the page size",
                    self.col.data.len()
                ),
            });
        }
        Ok(self.col)
    }
}

// ---------------------------------------------------------------------------
// Shapes: what an Arrow column is, decided once per column
// ---------------------------------------------------------------------------

/// A column's Arrow array, downcast once, with the Snowflake metadata applied.
enum Shape<'a> {
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
enum Numbers<'a> {
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
    ($numbers:expr, |$a:ident, $s:ident| $body:expr) => {
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
    };
}

impl Numbers<'_> {
    /// Integers or decimals of scale 0: values that can be identifiers.
    fn is_whole(&self) -> bool {
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

enum Texts<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

enum Binaries<'a> {
    Binary(&'a BinaryArray),
    Large(&'a LargeBinaryArray),
    View(&'a BinaryViewArray),
    Fixed(&'a FixedSizeBinaryArray),
}

/// Every timestamp and date shape, reduced to one of three integer layouts.
enum Instants<'a> {
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

struct ListShape<'a> {
    offsets: ListOffsets<'a>,
    nulls: Option<&'a NullBuffer>,
    len: usize,
    child: Shape<'a>,
}

enum ListOffsets<'a> {
    Small(&'a [i32]),
    Large(&'a [i64]),
    Fixed(usize),
}

impl ListShape<'_> {
    #[inline]
    fn range(&self, row: usize) -> (usize, usize) {
        match self.offsets {
            ListOffsets::Small(o) => (o[row] as usize, o[row + 1] as usize),
            ListOffsets::Large(o) => (o[row] as usize, o[row + 1] as usize),
            ListOffsets::Fixed(size) => (row * size, (row + 1) * size),
        }
    }
}

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;

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

fn classify<'a>(array: &'a dyn Array, field: &Field) -> Shape<'a> {
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

fn describe_shape(array: &dyn Array, field: &Field, shape: &Shape<'_>) -> String {
    match shape {
        Shape::Unsupported(why) => format!("{} ({why})", describe(array, field)),
        _ => describe(array, field),
    }
}

/// What each field type can be fed from, for error messages.
fn feeds(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Int32 | FieldType::Int64 | FieldType::Double | FieldType::Float => {
            "it takes NUMBER, INT or FLOAT columns"
        }
        FieldType::UnixTimestamp => {
            "it takes TIMESTAMP_NTZ/LTZ/TZ or DATE columns, or numbers of epoch seconds"
        }
        FieldType::Bool => "it takes BOOLEAN columns",
        FieldType::String => {
            "it takes VARCHAR columns (cast a VARIANT in the view, e.g. `v::STRING`)"
        }
        FieldType::Bytes => "it takes BINARY or VARCHAR columns",
        _ => "it takes ARRAY or VARIANT columns holding JSON arrays, or VARCHAR JSON text",
    }
}

// ---------------------------------------------------------------------------
// Row loops over the concrete arrays
// ---------------------------------------------------------------------------

#[inline]
fn each_primitive<T: ArrowPrimitiveType>(
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
fn each_accessor<A: ArrayAccessor>(array: A, mut f: impl FnMut(Option<A::Item>)) {
    for i in 0..array.len() {
        f(if array.is_null(i) {
            None
        } else {
            Some(array.value(i))
        });
    }
}

fn each_text<'a>(texts: &Texts<'a>, f: impl FnMut(Option<&'a str>)) {
    match *texts {
        Texts::Utf8(a) => each_accessor(a, f),
        Texts::Large(a) => each_accessor(a, f),
        Texts::View(a) => each_accessor(a, f),
    }
}

fn each_binary<'a>(binaries: &Binaries<'a>, f: impl FnMut(Option<&'a [u8]>)) {
    match *binaries {
        Binaries::Binary(a) => each_accessor(a, f),
        Binaries::Large(a) => each_accessor(a, f),
        Binaries::View(a) => each_accessor(a, f),
        Binaries::Fixed(a) => each_accessor(a, f),
    }
}

#[inline]
fn is_valid(nulls: &Option<NullBuffer>, i: usize) -> bool {
    nulls.as_ref().is_none_or(|n| n.is_valid(i))
}

/// Calls `f` with each row's instant in nanoseconds (i128: Snowflake's i64 epoch
/// seconds do not fit i64 nanoseconds, and `unix_timestamp` needs only seconds).
fn each_instant(instants: &Instants<'_>, mut f: impl FnMut(Option<i128>)) {
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

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// A numeric cell (an integer or decimal counted in 10^-scale units, or a float) and
/// its exact conversions to the numeric field types.
trait Number: Copy {
    /// The value as a whole i64; a fraction is `NotInteger`.
    fn whole(self, scale: i32) -> Result<i64, SkipReason>;
    /// The value floored to an i64.
    fn floor(self, scale: i32) -> Result<i64, SkipReason>;
    /// The nearest f64.
    fn double(self, scale: i32) -> f64;
    /// The nearest f32; finite values beyond its range are `Overflow`.
    fn single(self, scale: i32) -> Result<f32, SkipReason>;
    /// Decimal text of the value, for logs and integer entities.
    fn render(self, scale: i32, out: &mut String);
}

macro_rules! integer_number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            #[inline]
            fn whole(self, scale: i32) -> Result<i64, SkipReason> {
                decimal_whole(i128::from(self), scale)
            }
            #[inline]
            fn floor(self, scale: i32) -> Result<i64, SkipReason> {
                decimal_floor(i128::from(self), scale)
            }
            #[inline]
            fn double(self, scale: i32) -> f64 {
                decimal_double(i128::from(self), scale)
            }
            #[inline]
            fn single(self, scale: i32) -> Result<f32, SkipReason> {
                decimal_single(i128::from(self), scale)
            }
            fn render(self, scale: i32, out: &mut String) {
                if scale == 0 {
                    let _ = write!(out, "{self}");
                } else {
                    render_decimal(i128::from(self), scale, out);
                }
            }
        }
    )*};
}
integer_number!(i8, i16, i32, i64, u8, u16, u32, u64, i128);

impl Number for f64 {
    #[inline]
    fn whole(self, _scale: i32) -> Result<i64, SkipReason> {
        if self.is_nan() {
            Err(SkipReason::NotInteger)
        } else if self.is_infinite() {
            Err(SkipReason::Overflow)
        } else if self.fract() != 0.0 {
            Err(SkipReason::NotInteger)
        } else {
            f64_to_i64(self)
        }
    }
    #[inline]
    fn floor(self, _scale: i32) -> Result<i64, SkipReason> {
        if self.is_nan() {
            Err(SkipReason::NotInteger)
        } else {
            f64_to_i64(self.floor())
        }
    }
    #[inline]
    fn double(self, _scale: i32) -> f64 {
        self
    }
    #[inline]
    fn single(self, _scale: i32) -> Result<f32, SkipReason> {
        let narrowed = self as f32;
        if self.is_finite() && narrowed.is_infinite() {
            Err(SkipReason::Overflow)
        } else {
            Ok(narrowed)
        }
    }
    fn render(self, _scale: i32, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Number for f32 {
    #[inline]
    fn whole(self, scale: i32) -> Result<i64, SkipReason> {
        Number::whole(f64::from(self), scale)
    }
    #[inline]
    fn floor(self, scale: i32) -> Result<i64, SkipReason> {
        Number::floor(f64::from(self), scale)
    }
    #[inline]
    fn double(self, _scale: i32) -> f64 {
        f64::from(self)
    }
    #[inline]
    fn single(self, _scale: i32) -> Result<f32, SkipReason> {
        Ok(self)
    }
    fn render(self, _scale: i32, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

/// A whole f64 (or ±inf) into i64; 2^63 itself is out of range.
#[inline]
fn f64_to_i64(v: f64) -> Result<i64, SkipReason> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63, exact in f64
    if (-LIMIT..LIMIT).contains(&v) {
        Ok(v as i64)
    } else {
        Err(SkipReason::Overflow)
    }
}

const POW10_I128: [i128; 39] = {
    let mut t = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};
const POW10_F64: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];
const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// `raw * 10^-scale` as a whole i64.
fn decimal_whole(raw: i128, scale: i32) -> Result<i64, SkipReason> {
    let v = if scale == 0 {
        raw
    } else if scale > 0 {
        match POW10_I128.get(scale as usize) {
            Some(&p) if raw % p == 0 => raw / p,
            Some(_) => return Err(SkipReason::NotInteger),
            // |raw| < 10^39 <= 10^scale: only zero is whole.
            None if raw == 0 => 0,
            None => return Err(SkipReason::NotInteger),
        }
    } else {
        match POW10_I128.get(scale.unsigned_abs() as usize) {
            Some(&p) => raw.checked_mul(p).ok_or(SkipReason::Overflow)?,
            None if raw == 0 => 0,
            None => return Err(SkipReason::Overflow),
        }
    };
    i64::try_from(v).map_err(|_| SkipReason::Overflow)
}

/// `floor(raw * 10^-scale)` as an i64.
fn decimal_floor(raw: i128, scale: i32) -> Result<i64, SkipReason> {
    if scale > 0 {
        let v = match POW10_I128.get(scale as usize) {
            Some(&p) => raw.div_euclid(p),
            None => -i128::from(raw < 0),
        };
        i64::try_from(v).map_err(|_| SkipReason::Overflow)
    } else {
        decimal_whole(raw, scale)
    }
}

/// `raw * 10^-scale` rounded once to the nearest f64.
fn decimal_double(raw: i128, scale: i32) -> f64 {
    if scale == 0 {
        return raw as f64;
    }
    // Both operands exact in f64, so the one division rounds correctly (Clinger's fast path).
    if (1..=22).contains(&scale) && raw.unsigned_abs() <= 1 << 53 {
        return raw as f64 / POW10_F64[scale as usize];
    }
    parse_scaled(raw, scale).unwrap_or(f64::NAN)
}

/// `raw * 10^-scale` rounded once to the nearest f32.
fn decimal_single(raw: i128, scale: i32) -> Result<f32, SkipReason> {
    let v = if scale == 0 {
        raw as f32
    } else if (1..=10).contains(&scale) && raw.unsigned_abs() <= 1 << 24 {
        raw as f32 / POW10_F32[scale as usize]
    } else {
        parse_scaled(raw, scale).unwrap_or(f32::NAN)
    };
    if v.is_infinite() {
        Err(SkipReason::Overflow)
    } else {
        Ok(v)
    }
}

/// Correctly rounded `raw * 10^-scale` through Rust's float parser, which rounds
/// exactly; the text lives on the stack (at most 40 digits and an exponent).
fn parse_scaled<F: std::str::FromStr>(raw: i128, scale: i32) -> Option<F> {
    let mut text = StackText::default();
    write!(text, "{raw}e{}", -i64::from(scale)).ok()?;
    text.as_str().parse().ok()
}

struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 64],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Element types: one per scalar field type, shared by scalars and list elements
// ---------------------------------------------------------------------------

/// A Feast scalar type: which column shapes feed it, how each kind of cell converts,
/// and how its values and lists are encoded. The same rules serve scalar columns,
/// native list children and JSON list elements.
trait Element {
    type Out<'a>: Clone;
    const NUMBERS: bool = false;
    const INSTANTS: bool = false;
    const BOOLS: bool = false;
    const TEXT: bool = false;
    const BINARY: bool = false;

    fn number<'a, N: Number>(_n: N, _scale: i32) -> Result<Self::Out<'a>, SkipReason> {
        Err(SkipReason::Unrepresentable)
    }
    fn instant<'a>(_nanos: i128) -> Result<Self::Out<'a>, SkipReason> {
        Err(SkipReason::Unrepresentable)
    }
    fn boolean<'a>(_b: bool) -> Result<Self::Out<'a>, SkipReason> {
        Err(SkipReason::Unrepresentable)
    }
    /// A VARCHAR cell, or a JSON string element.
    fn text(_s: Cow<'_, str>) -> Result<Self::Out<'_>, SkipReason> {
        Err(SkipReason::Unrepresentable)
    }
    fn binary(_b: &[u8]) -> Result<Self::Out<'_>, SkipReason> {
        Err(SkipReason::Unrepresentable)
    }
    fn push(out: &mut Vec<u8>, v: Self::Out<'_>);
    fn push_list(out: &mut Vec<u8>, items: &[Self::Out<'_>]);
}

struct Int32s;
impl Element for Int32s {
    type Out<'a> = i32;
    const NUMBERS: bool = true;
    fn number<'a, N: Number>(n: N, scale: i32) -> Result<Self::Out<'a>, SkipReason> {
        i32::try_from(n.whole(scale)?).map_err(|_| SkipReason::Overflow)
    }
    fn push(out: &mut Vec<u8>, v: i32) {
        feast::push_int32(out, v);
    }
    fn push_list(out: &mut Vec<u8>, items: &[i32]) {
        feast::push_int32_list(out, items.iter().copied());
    }
}

struct Int64s;
impl Element for Int64s {
    type Out<'a> = i64;
    const NUMBERS: bool = true;
    fn number<'a, N: Number>(n: N, scale: i32) -> Result<Self::Out<'a>, SkipReason> {
        n.whole(scale)
    }
    fn push(out: &mut Vec<u8>, v: i64) {
        feast::push_int64(out, v);
    }
    fn push_list(out: &mut Vec<u8>, items: &[i64]) {
        feast::push_int64_list(out, items.iter().copied());
    }
}

/// Snowflake writes non-finite floats inside VARIANTs as these words.
fn special_float(s: &str) -> Result<f64, SkipReason> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" | "inf" => Ok(f64::INFINITY),
        "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => Err(SkipReason::Unrepresentable),
    }
}

struct Doubles;
impl Element for Doubles {
    type Out<'a> = f64;
    const NUMBERS: bool = true;
    fn number<'a, N: Number>(n: N, scale: i32) -> Result<Self::Out<'a>, SkipReason> {
        Ok(n.double(scale))
    }
    fn text(s: Cow<'_, str>) -> Result<f64, SkipReason> {
        special_float(&s)
    }
    fn push(out: &mut Vec<u8>, v: f64) {
        feast::push_double(out, v);
    }
    fn push_list(out: &mut Vec<u8>, items: &[f64]) {
        feast::push_double_list(out, items.iter().copied());
    }
}

struct Floats;
impl Element for Floats {
    type Out<'a> = f32;
    const NUMBERS: bool = true;
    fn number<'a, N: Number>(n: N, scale: i32) -> Result<Self::Out<'a>, SkipReason> {
        n.single(scale)
    }
    fn text(s: Cow<'_, str>) -> Result<f32, SkipReason> {
        special_float(&s).map(|v| v as f32)
    }
    fn push(out: &mut Vec<u8>, v: f32) {
        feast::push_float(out, v);
    }
    fn push_list(out: &mut Vec<u8>, items: &[f32]) {
        feast::push_float_list(out, items.iter().copied());
    }
}

struct Bools;
impl Element for Bools {
    type Out<'a> = bool;
    const BOOLS: bool = true;
    fn boolean<'a>(b: bool) -> Result<Self::Out<'a>, SkipReason> {
        Ok(b)
    }
    fn push(out: &mut Vec<u8>, v: bool) {
        feast::push_bool(out, v);
    }
    fn push_list(out: &mut Vec<u8>, items: &[bool]) {
        feast::push_bool_list(out, items.iter().copied());
    }
}

struct Strings;
impl Element for Strings {
    type Out<'a> = Cow<'a, str>;
    const TEXT: bool = true;
    fn text(s: Cow<'_, str>) -> Result<Cow<'_, str>, SkipReason> {
        Ok(s)
    }
    fn push(out: &mut Vec<u8>, v: Cow<'_, str>) {
        feast::push_string(out, &v);
    }
    fn push_list(out: &mut Vec<u8>, items: &[Cow<'_, str>]) {
        feast::push_string_list(out, items.iter().map(|s| s.as_ref()));
    }
}

struct Bytes;
impl Element for Bytes {
    type Out<'a> = Cow<'a, [u8]>;
    const TEXT: bool = true;
    const BINARY: bool = true;
    fn text(s: Cow<'_, str>) -> Result<Cow<'_, [u8]>, SkipReason> {
        Ok(match s {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        })
    }
    fn binary(b: &[u8]) -> Result<Cow<'_, [u8]>, SkipReason> {
        Ok(Cow::Borrowed(b))
    }
    fn push(out: &mut Vec<u8>, v: Cow<'_, [u8]>) {
        feast::push_bytes(out, &v);
    }
    fn push_list(out: &mut Vec<u8>, items: &[Cow<'_, [u8]>]) {
        feast::push_bytes_list(out, items.iter().map(|b| b.as_ref()));
    }
}

/// Feast's `unix_timestamp`: whole seconds, floored, within what Feast can read back.
struct UnixSeconds;
impl UnixSeconds {
    fn readable(seconds: i64) -> Result<i64, SkipReason> {
        let range = feast::UNIX_TIMESTAMP_MIN_SECONDS..=feast::UNIX_TIMESTAMP_MAX_SECONDS;
        if range.contains(&seconds) {
            Ok(seconds)
        } else {
            Err(SkipReason::Overflow)
        }
    }
    fn from_nanos(nanos: i128) -> Result<i64, SkipReason> {
        let seconds =
            i64::try_from(nanos.div_euclid(NANOS_PER_SECOND)).map_err(|_| SkipReason::Overflow)?;
        Self::readable(seconds)
    }
}
impl Element for UnixSeconds {
    type Out<'a> = i64;
    const NUMBERS: bool = true;
    const INSTANTS: bool = true;
    fn number<'a, N: Number>(n: N, scale: i32) -> Result<Self::Out<'a>, SkipReason> {
        Self::readable(n.floor(scale)?)
    }
    fn instant<'a>(nanos: i128) -> Result<Self::Out<'a>, SkipReason> {
        Self::from_nanos(nanos)
    }
    fn text(s: Cow<'_, str>) -> Result<i64, SkipReason> {
        Self::from_nanos(parse_timestamp_text(&s).ok_or(SkipReason::Unrepresentable)?)
    }
    fn push(out: &mut Vec<u8>, v: i64) {
        feast::push_unix_timestamp(out, v);
    }
    fn push_list(out: &mut Vec<u8>, items: &[i64]) {
        feast::push_unix_timestamp_list(out, items.iter().copied());
    }
}

/// Feeds every cell of `shape` to `sink` as `E` values; `Err(())` if the shape
/// cannot feed `E` (nothing was fed then).
fn visit<'a, E: Element>(
    shape: &Shape<'a>,
    sink: &mut impl FnMut(Cell<E::Out<'a>>),
) -> Result<(), ()> {
    match shape {
        Shape::AllNull(n) => (0..*n).for_each(|_| sink(Ok(None))),
        Shape::Number(numbers) if E::NUMBERS => with_numbers!(numbers, |a, scale| {
            each_primitive(a, |v| sink(v.map(|v| E::number(v, scale)).transpose()))
        }),
        Shape::Instant(instants) if E::INSTANTS => {
            each_instant(instants, |ns| sink(ns.map(E::instant).transpose()))
        }
        Shape::Bool(a) if E::BOOLS => each_accessor(*a, |v| sink(v.map(E::boolean).transpose())),
        Shape::Text(texts) if E::TEXT => each_text(texts, |v| {
            sink(v.map(|s| E::text(Cow::Borrowed(s))).transpose())
        }),
        Shape::Binary(binaries) if E::BINARY => {
            each_binary(binaries, |v| sink(v.map(E::binary).transpose()))
        }
        _ => return Err(()),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------

/// Encode a column for a field type.
pub fn encode_column(
    column: &str,
    array: &ArrayRef,
    field: &Field,
    ty: FieldType,
) -> Result<EncodedColumn, ColumnError> {
    let shape = classify(array.as_ref(), field);
    let rows = array.len();
    let encoded = match ty {
        FieldType::Bytes => scalar::<Bytes>(&shape, rows, 16),
        FieldType::String => scalar::<Strings>(&shape, rows, 24),
        FieldType::Int32 => scalar::<Int32s>(&shape, rows, 6),
        FieldType::Int64 => scalar::<Int64s>(&shape, rows, 8),
        FieldType::Double => scalar::<Doubles>(&shape, rows, 9),
        FieldType::Float => scalar::<Floats>(&shape, rows, 5),
        FieldType::Bool => scalar::<Bools>(&shape, rows, 2),
        FieldType::UnixTimestamp => scalar::<UnixSeconds>(&shape, rows, 6),
        FieldType::BytesList => list::<Bytes>(&shape, rows),
        FieldType::StringList => list::<Strings>(&shape, rows),
        FieldType::Int32List => list::<Int32s>(&shape, rows),
        FieldType::Int64List => list::<Int64s>(&shape, rows),
        FieldType::DoubleList => list::<Doubles>(&shape, rows),
        FieldType::FloatList => list::<Floats>(&shape, rows),
        FieldType::BoolList => list::<Bools>(&shape, rows),
        FieldType::UnixTimestampList => list::<UnixSeconds>(&shape, rows),
    };
    let what = || describe_shape(array.as_ref(), field, &shape);
    match encoded {
        Ok(builder) => builder.finish(column),
        Err(Unfit::Column) => Err(ColumnError {
            column: column.to_string(),
            message: format!("{} cannot feed a {ty} field: {}", what(), feeds(ty)),
        }),
        Err(Unfit::Element(child)) => Err(ColumnError {
            column: column.to_string(),
            message: format!(
                "{} cannot feed a {ty} field: its elements ({child}) cannot feed {}",
                what(),
                ty.element().unwrap_or(ty)
            ),
        }),
    }
}

/// Why a shape cannot be encoded.
enum Unfit {
    Column,
    /// A native list whose element type does not fit; the element described.
    Element(String),
}

fn scalar<E: Element>(
    shape: &Shape<'_>,
    rows: usize,
    bytes_per_row: usize,
) -> Result<Builder, Unfit> {
    let mut b = Builder::new(rows, bytes_per_row);
    visit::<E>(shape, &mut |cell| b.push(cell, E::push)).map_err(|()| Unfit::Column)?;
    Ok(b)
}

fn list<E: Element>(shape: &Shape<'_>, rows: usize) -> Result<Builder, Unfit> {
    let mut b = Builder::new(rows, 24);
    match shape {
        Shape::AllNull(n) => (0..*n).for_each(|_| b.end_row(Ok(()))),
        Shape::Json(texts) | Shape::Text(texts) => {
            let mut scratch = Vec::new();
            each_text(texts, |text| {
                let result = match text {
                    None => Ok(()),
                    Some(text) => encode_json_list::<E>(text, &mut scratch, &mut b.col.data),
                };
                b.end_row(result);
            });
        }
        Shape::List(list) => {
            let mut cells: Vec<Cell<E::Out<'_>>> = Vec::new();
            visit::<E>(&list.child, &mut |cell| cells.push(cell))
                .map_err(|()| Unfit::Element(child_description(&list.child)))?;
            let mut scratch = Vec::new();
            for row in 0..list.len {
                if list.nulls.is_some_and(|n| n.is_null(row)) {
                    b.end_row(Ok(()));
                    continue;
                }
                let (start, end) = list.range(row);
                scratch.clear();
                let mut result = Ok(());
                for cell in &cells[start..end] {
                    match cell {
                        Ok(Some(v)) => scratch.push(v.clone()),
                        Ok(None) => {
                            result = Err(SkipReason::NullInList);
                            break;
                        }
                        Err(why) => {
                            result = Err(*why);
                            break;
                        }
                    }
                }
                if result.is_ok() {
                    E::push_list(&mut b.col.data, &scratch);
                }
                b.end_row(result);
            }
        }
        _ => return Err(Unfit::Column),
    }
    Ok(b)
}

fn child_description(shape: &Shape<'_>) -> String {
    match shape {
        Shape::AllNull(_) => "nulls".into(),
        Shape::Number(_) => "numbers".into(),
        Shape::Bool(_) => "booleans".into(),
        Shape::Text(_) => "text".into(),
        Shape::Json(_) => "JSON text".into(),
        Shape::Binary(_) => "binary".into(),
        Shape::Instant(_) => "timestamps".into(),
        Shape::List(_) => "lists".into(),
        Shape::Unsupported(what) => what.clone(),
    }
}

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

/// Entity values of a page column, readable per row without allocating.
///
/// Text columns are borrowed from the Arrow array; whole-number columns are rendered
/// in decimal once, into one buffer, when the column is built.
pub struct EntityColumn<'a> {
    repr: Entities<'a>,
}

enum Entities<'a> {
    Text(Texts<'a>),
    Rendered {
        text: String,
        /// End of each row's text in `text`; a row starts where the previous ended.
        ends: Vec<usize>,
        nulls: Option<NullBuffer>,
    },
    AllNull(usize),
}

impl EntityColumn<'_> {
    pub fn len(&self) -> usize {
        match &self.repr {
            Entities::Text(Texts::Utf8(a)) => a.len(),
            Entities::Text(Texts::Large(a)) => a.len(),
            Entities::Text(Texts::View(a)) => a.len(),
            Entities::Rendered { ends, .. } => ends.len(),
            Entities::AllNull(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entity of `row`, or `None` for SQL NULL.
    #[inline]
    pub fn get(&self, row: usize) -> Option<&str> {
        match &self.repr {
            Entities::Text(Texts::Utf8(a)) => a.is_valid(row).then(|| a.value(row)),
            Entities::Text(Texts::Large(a)) => a.is_valid(row).then(|| a.value(row)),
            Entities::Text(Texts::View(a)) => a.is_valid(row).then(|| a.value(row)),
            Entities::Rendered { text, ends, nulls } => {
                if !is_valid(nulls, row) {
                    return None;
                }
                let start = if row == 0 { 0 } else { ends[row - 1] };
                Some(&text[start..ends[row]])
            }
            Entities::AllNull(_) => None,
        }
    }
}

/// Entity values as strings (Utf8, LargeUtf8, Utf8View; whole numbers rendered in decimal).
pub fn entities<'a>(
    column: &str,
    array: &'a ArrayRef,
    field: &Field,
) -> Result<EntityColumn<'a>, ColumnError> {
    let shape = classify(array.as_ref(), field);
    let repr = match shape {
        Shape::Text(texts) => Entities::Text(texts),
        Shape::AllNull(n) => Entities::AllNull(n),
        Shape::Number(ref numbers) if numbers.is_whole() => {
            let mut text = String::with_capacity(array.len() * 8);
            let mut ends = Vec::with_capacity(array.len());
            with_numbers!(numbers, |a, scale| each_primitive(a, |v| {
                if let Some(v) = v {
                    v.render(scale, &mut text);
                }
                ends.push(text.len());
            }));
            Entities::Rendered {
                text,
                ends,
                nulls: array.nulls().cloned(),
            }
        }
        shape => {
            return Err(ColumnError {
                column: column.to_string(),
                message: format!(
                    "{} cannot be an entity: entities are VARCHAR or whole-number columns",
                    describe_shape(array.as_ref(), field, &shape)
                ),
            })
        }
    };
    Ok(EntityColumn { repr })
}

// ---------------------------------------------------------------------------
// JSON lists
// ---------------------------------------------------------------------------

/// Encodes one JSON-text list cell into `out`. Only the error path allocates beyond
/// `scratch` (and strings with escapes).
fn encode_json_list<'a, E: Element>(
    text: &'a str,
    scratch: &mut Vec<E::Out<'a>>,
    out: &mut Vec<u8>,
) -> Result<(), SkipReason> {
    match parse_json_list::<E>(text, scratch) {
        Ok(true) => {
            E::push_list(out, scratch);
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(SkipReason::InvalidList) => {
            // Snowflake's renderings that are not JSON: retry with them spelled in JSON.
            let repaired = repair_snowflake_json(text).ok_or(SkipReason::InvalidList)?;
            let mut items = Vec::new();
            if parse_json_list::<E>(&repaired, &mut items)? {
                E::push_list(out, &items);
            }
            Ok(())
        }
        Err(why) => Err(why),
    }
}

/// Parses a JSON array into `items`: `Ok(true)` for an array, `Ok(false)` for a JSON
/// `null` document, else the first bad element's reason or `InvalidList`.
fn parse_json_list<'a, E: Element>(
    text: &'a str,
    items: &mut Vec<E::Out<'a>>,
) -> Result<bool, SkipReason> {
    items.clear();
    let mut bad = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let is_list = ListSeed::<E> {
        items,
        bad: &mut bad,
    }
    .deserialize(&mut de)
    .and_then(|is_list| de.end().map(|()| is_list))
    .map_err(|_| SkipReason::InvalidList)?;
    match bad {
        Some(why) => Err(why),
        None => Ok(is_list),
    }
}

/// Top level of a JSON list cell: an array (elements into `items`) or `null`; any
/// other document is a deserialization error, i.e. `InvalidList`.
struct ListSeed<'s, 'de, E: Element> {
    items: &'s mut Vec<E::Out<'de>>,
    bad: &'s mut Option<SkipReason>,
}

impl<'de, E: Element> DeserializeSeed<'de> for ListSeed<'_, 'de, E> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, E: Element> Visitor<'de> for ListSeed<'_, 'de, E> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_unit<Er>(self) -> Result<bool, Er> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(item) = seq.next_element_seed(ElementSeed::<E>(PhantomData))? {
            match item {
                Ok(v) if self.bad.is_none() => self.items.push(v),
                Ok(_) => {}
                Err(why) => {
                    self.bad.get_or_insert(why);
                }
            }
        }
        Ok(true)
    }
}

/// One JSON list element, converted straight to `E` without building a JSON tree.
struct ElementSeed<E>(PhantomData<E>);

impl<'de, E: Element> DeserializeSeed<'de> for ElementSeed<E> {
    type Value = Result<E::Out<'de>, SkipReason>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, E: Element> Visitor<'de> for ElementSeed<E> {
    type Value = Result<E::Out<'de>, SkipReason>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<Er>(self, v: bool) -> Result<Self::Value, Er> {
        Ok(E::boolean(v))
    }
    fn visit_i64<Er>(self, v: i64) -> Result<Self::Value, Er> {
        Ok(E::number(v, 0))
    }
    fn visit_u64<Er>(self, v: u64) -> Result<Self::Value, Er> {
        Ok(E::number(v, 0))
    }
    fn visit_f64<Er>(self, v: f64) -> Result<Self::Value, Er> {
        Ok(E::number(v, 0))
    }
    fn visit_borrowed_str<Er>(self, v: &'de str) -> Result<Self::Value, Er> {
        Ok(E::text(Cow::Borrowed(v)))
    }
    fn visit_str<Er>(self, v: &str) -> Result<Self::Value, Er> {
        Ok(E::text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<Er>(self, v: String) -> Result<Self::Value, Er> {
        Ok(E::text(Cow::Owned(v)))
    }
    fn visit_unit<Er>(self) -> Result<Self::Value, Er> {
        Ok(Err(SkipReason::NullInList))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(SkipReason::Unrepresentable))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(SkipReason::Unrepresentable))
    }
}

/// Rewrites the bare words Snowflake prints inside ARRAY/VARIANT text that JSON
/// lacks: `undefined` (a SQL NULL element) becomes `null`, `NaN` / `Infinity` /
/// `-Infinity` become strings. `None` when there was nothing to rewrite.
fn repair_snowflake_json(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut changed = false;
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_alphabetic() || (c == '-' && rest[1..].starts_with('I')) {
            let len = rest[1..]
                .find(|ch: char| !ch.is_ascii_alphanumeric())
                .map_or(rest.len(), |i| i + 1);
            let word = &rest[..len];
            let replacement = match word {
                "undefined" => Some("null"),
                "NaN" => Some("\"NaN\""),
                "Infinity" => Some("\"Infinity\""),
                "-Infinity" => Some("\"-Infinity\""),
                _ => None,
            };
            out.push_str(replacement.unwrap_or(word));
            changed |= replacement.is_some();
            rest = &rest[len..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    changed.then_some(out)
}

/// Parses the timestamp texts found in JSON lists: `YYYY-MM-DD`, optionally followed
/// by `T` or a space and `HH:MM[:SS[.fraction]]`, optionally followed (after optional
/// spaces) by `Z` or an offset `±HH[:MM]` / `±HHMM`. No offset means UTC. Returns
/// nanoseconds since the epoch.
fn parse_timestamp_text(text: &str) -> Option<i128> {
    let b = text.trim().as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize, n: usize| -> Option<u32> {
        let s = b.get(*i..*i + n)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *i += n;
        Some(s.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    };
    let eat = |i: &mut usize, c: u8| -> Option<()> { (b.get(*i) == Some(&c)).then(|| *i += 1) };
    let year = digits(&mut i, 4)?;
    eat(&mut i, b'-')?;
    let month = digits(&mut i, 2)?;
    eat(&mut i, b'-')?;
    let day = digits(&mut i, 2)?;
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0i128);
    let mut offset_seconds = 0i64;
    if i < b.len() {
        if !matches!(b[i], b'T' | b't' | b' ') {
            return None;
        }
        i += 1;
        hour = digits(&mut i, 2)?;
        eat(&mut i, b':')?;
        minute = digits(&mut i, 2)?;
        if eat(&mut i, b':').is_some() {
            second = digits(&mut i, 2)?;
            if eat(&mut i, b'.').is_some() {
                let start = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let fraction = &b[start..i];
                if fraction.is_empty() {
                    return None;
                }
                // Digits past nanoseconds are dropped: floor, like every other instant here.
                for k in 0..9 {
                    nanos = nanos * 10 + fraction.get(k).map_or(0, |d| i128::from(d - b'0'));
                }
            }
        }
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        match b.get(i) {
            None => {}
            Some(b'Z' | b'z') => i += 1,
            Some(&sign @ (b'+' | b'-')) => {
                i += 1;
                let oh = digits(&mut i, 2)?;
                eat(&mut i, b':');
                let om = if i < b.len() { digits(&mut i, 2)? } else { 0 };
                let magnitude = i64::from(oh * 3600 + om * 60);
                offset_seconds = if sign == b'-' { -magnitude } else { magnitude };
            }
            Some(_) => return None,
        }
        if i != b.len() {
            return None;
        }
    }
    let time = chrono::NaiveTime::from_hms_opt(hour, minute, second)?;
    let seconds = date.and_time(time).and_utc().timestamp() - offset_seconds;
    Some(i128::from(seconds) * NANOS_PER_SECOND + nanos)
}

// ---------------------------------------------------------------------------
// Warehouse type names (DESCRIBE TABLE / INFORMATION_SCHEMA)
// ---------------------------------------------------------------------------

/// A warehouse type name reduced to what decoding cares about.
#[derive(Debug, PartialEq)]
enum Declared<'t> {
    /// NUMBER(p, s) and the integer aliases; scale 0 when not printed.
    Fixed {
        scale: i64,
    },
    Real,
    Text,
    Boolean,
    Binary,
    Timestamp,
    Date,
    Time,
    /// `ARRAY`, or a structured `ARRAY(T)` with its element type.
    Array(Option<&'t str>),
    Variant,
    Object,
    Unknown,
}

/// Parses e.g. `NUMBER(38,0)`, `VARCHAR(16777216)`, `TIMESTAMP_NTZ(9)`, `ARRAY(NUMBER(38,0))`,
/// `TIMESTAMP WITH TIME ZONE`, and the DuckDB names fakesnow prints for some types.
fn declared(type_name: &str) -> Declared<'_> {
    let t = type_name.trim();
    let t = match t.len().checked_sub(8) {
        Some(cut) if t.is_char_boundary(cut) && t[cut..].eq_ignore_ascii_case("NOT NULL") => {
            t[..cut].trim_end()
        }
        _ => t,
    };
    let (base, params) = match t.find('(') {
        Some(open) if t.ends_with(')') => (&t[..open], Some(t[open + 1..t.len() - 1].trim())),
        _ => (t, None),
    };
    let base = base
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    match base.as_str() {
        "NUMBER" | "DECIMAL" | "NUMERIC" => {
            let scale = params
                .and_then(|p| p.split(',').nth(1))
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            Declared::Fixed { scale }
        }
        "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "TINYINT" | "BYTEINT" | "HUGEINT"
        | "UHUGEINT" | "UBIGINT" | "UINTEGER" | "USMALLINT" | "UTINYINT" | "INT2" | "INT4"
        | "INT8" => Declared::Fixed { scale: 0 },
        "FLOAT" | "FLOAT4" | "FLOAT8" | "DOUBLE" | "DOUBLE PRECISION" | "REAL" => Declared::Real,
        "VARCHAR" | "CHAR" | "CHARACTER" | "CHAR VARYING" | "CHARACTER VARYING" | "NCHAR"
        | "NCHAR VARYING" | "NVARCHAR" | "NVARCHAR2" | "STRING" | "TEXT" => Declared::Text,
        "BOOLEAN" | "BOOL" => Declared::Boolean,
        "BINARY" | "VARBINARY" | "BLOB" => Declared::Binary,
        "TIMESTAMP"
        | "DATETIME"
        | "TIMESTAMP_NTZ"
        | "TIMESTAMPNTZ"
        | "TIMESTAMP WITHOUT TIME ZONE"
        | "TIMESTAMP_LTZ"
        | "TIMESTAMPLTZ"
        | "TIMESTAMP WITH LOCAL TIME ZONE"
        | "TIMESTAMP_TZ"
        | "TIMESTAMPTZ"
        | "TIMESTAMP WITH TIME ZONE"
        | "TIMESTAMP_NS"
        | "TIMESTAMP_MS"
        | "TIMESTAMP_S" => Declared::Timestamp,
        "DATE" => Declared::Date,
        "TIME" => Declared::Time,
        "ARRAY" => Declared::Array(params.filter(|p| !p.is_empty())),
        "VARIANT" | "JSON" => Declared::Variant,
        "OBJECT" | "MAP" => Declared::Object,
        _ => Declared::Unknown,
    }
}

/// Whether a Snowflake column type as `DESCRIBE TABLE` / INFORMATION_SCHEMA prints it
/// can feed the field type; Err(reason) names both types.
///
/// Agrees with [`encode_column`]: a type accepted here arrives in an Arrow shape that
/// decodes (values may still be skipped one by one). A bare `NUMBER` (as
/// INFORMATION_SCHEMA prints it, scale in another column) is taken as scale 0.
pub fn compatible(warehouse_type: &str, ty: FieldType) -> Result<(), String> {
    let d = declared(warehouse_type);
    let fits = match ty.element() {
        Some(element) => match d {
            Declared::Array(Some(inner)) => {
                return compatible(inner, element).map_err(|_| {
                    format!(
                        "a {warehouse_type} column cannot feed a {ty} field: its {inner} elements cannot feed {element}"
                    )
                });
            }
            Declared::Array(None) | Declared::Variant | Declared::Text => true,
            _ => false,
        },
        None => match ty {
            FieldType::Int32 | FieldType::Int64 | FieldType::Double | FieldType::Float => {
                matches!(d, Declared::Fixed { .. } | Declared::Real)
            }
            FieldType::UnixTimestamp => matches!(
                d,
                Declared::Fixed { .. } | Declared::Real | Declared::Timestamp | Declared::Date
            ),
            FieldType::Bool => d == Declared::Boolean,
            FieldType::String => d == Declared::Text,
            FieldType::Bytes => matches!(d, Declared::Binary | Declared::Text),
            _ => false,
        },
    };
    if fits {
        Ok(())
    } else {
        Err(format!(
            "a {warehouse_type} column cannot feed a {ty} field: {}",
            feeds(ty)
        ))
    }
}

/// Whether a warehouse column type can be a view's timestamp field (TIMESTAMP_* or DATE).
pub fn timestamp_compatible(warehouse_type: &str) -> Result<(), String> {
    match declared(warehouse_type) {
        Declared::Timestamp | Declared::Date => Ok(()),
        _ => Err(format!(
            "a {warehouse_type} column cannot be the timestamp field: it must be TIMESTAMP_NTZ/LTZ/TZ or DATE"
        )),
    }
}

/// Whether a warehouse column type can hold entity values (VARCHAR or whole numbers).
pub fn entity_compatible(warehouse_type: &str) -> Result<(), String> {
    match declared(warehouse_type) {
        Declared::Text | Declared::Fixed { scale: 0 } => Ok(()),
        _ => Err(format!(
            "a {warehouse_type} column cannot be the entity: it must be VARCHAR or a whole NUMBER"
        )),
    }
}

// ---------------------------------------------------------------------------
// Log rendering
// ---------------------------------------------------------------------------

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

/// `raw * 10^-scale` in plain decimal notation.
fn render_decimal(raw: i128, scale: i32, out: &mut String) {
    let digits = raw.unsigned_abs().to_string();
    if raw < 0 {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        if raw != 0 {
            out.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        }
        return;
    }
    let scale = scale as usize;
    if digits.len() <= scale {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    } else {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
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
        Date32Array, Date64Array, Decimal128Array, FixedSizeListArray, Float32Array, Float64Array,
        Int16Array, Int32Array, Int64Array, Int8Array, LargeListArray, ListArray, NullArray,
        RecordBatch, StructArray, TimestampMillisecondArray, TimestampSecondArray, UInt64Array,
    };
    use arrow_schema::Schema;

    use super::*;
    use crate::profiles::feast::*;

    type Expected = Result<Vec<u8>, SkipReason>;
    /// Snowflake field metadata as `(key, value)` pairs.
    type Meta = &'static [(&'static str, &'static str)];

    /// Passes a hand-built column through a `RecordBatch` with Snowflake-style field
    /// metadata, as `snowflake-api` hands pages over.
    fn column(array: ArrayRef, meta: &[(&str, &str)]) -> (ArrayRef, Field) {
        let field = Field::new("COL", array.data_type().clone(), true).with_metadata(
            meta.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array]).unwrap();
        (batch.column(0).clone(), batch.schema().field(0).clone())
    }

    const FIXED0: &[(&str, &str)] = &[
        ("logicalType", "FIXED"),
        ("precision", "38"),
        ("scale", "0"),
    ];
    const FIXED2: &[(&str, &str)] = &[
        ("logicalType", "FIXED"),
        ("precision", "10"),
        ("scale", "2"),
    ];
    const TEXT: &[(&str, &str)] = &[("logicalType", "TEXT")];
    const ARRAY: &[(&str, &str)] = &[("logicalType", "ARRAY")];
    const VARIANT: &[(&str, &str)] = &[("logicalType", "VARIANT")];
    const NTZ9: &[(&str, &str)] = &[("logicalType", "TIMESTAMP_NTZ"), ("scale", "9")];

    fn encode(array: ArrayRef, meta: &[(&str, &str)], ty: FieldType) -> Vec<Expected> {
        let (array, field) = column(array, meta);
        let col = encode_column("COL", &array, &field, ty).unwrap();
        assert_eq!(col.len(), array.len());
        (0..col.len())
            .map(|r| col.get(r).map(<[u8]>::to_vec))
            .collect()
    }

    fn encode_err(array: ArrayRef, meta: &[(&str, &str)], ty: FieldType) -> String {
        let (array, field) = column(array, meta);
        let e = encode_column("SCORE", &array, &field, ty).unwrap_err();
        assert_eq!(e.column, "SCORE");
        e.to_string()
    }

    fn json(texts: &[Option<&str>], ty: FieldType) -> Vec<Expected> {
        encode(Arc::new(StringArray::from(texts.to_vec())), ARRAY, ty)
    }

    fn v(f: impl FnOnce(&mut Vec<u8>)) -> Expected {
        let mut out = Vec::new();
        f(&mut out);
        Ok(out)
    }

    fn null() -> Expected {
        Ok(Vec::new())
    }

    fn nanos(array: ArrayRef, meta: &[(&str, &str)]) -> Vec<TimestampCell> {
        let (array, field) = column(array, meta);
        timestamps("TS", &array, &field).unwrap()
    }

    fn unix(array: ArrayRef, meta: &[(&str, &str)]) -> Vec<Expected> {
        encode(array, meta, FieldType::UnixTimestamp)
    }

    fn secs(s: i64) -> Expected {
        v(|o| push_unix_timestamp(o, s))
    }

    /// Snowflake's struct timestamp; `timezone` adds the TZ member, `fraction` may be absent (TZ, byteLength 8).
    fn ts_struct(
        epoch: Vec<Option<i64>>,
        fraction: Option<Vec<i32>>,
        timezone: Option<Vec<i32>>,
        nulls: Option<Vec<bool>>,
    ) -> ArrayRef {
        let nullable_epoch = epoch.iter().any(Option::is_none);
        let mut fields = vec![Field::new("epoch", DataType::Int64, nullable_epoch)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(epoch))];
        if let Some(f) = fraction {
            fields.push(Field::new("fraction", DataType::Int32, false));
            arrays.push(Arc::new(Int32Array::from(f)));
        }
        if let Some(tz) = timezone {
            fields.push(Field::new("timezone", DataType::Int32, false));
            arrays.push(Arc::new(Int32Array::from(tz)));
        }
        Arc::new(StructArray::try_new(fields.into(), arrays, nulls.map(NullBuffer::from)).unwrap())
    }

    // --- integers -----------------------------------------------------------------

    #[test]
    fn narrow_fixed_integers_decode_at_every_width() {
        let i8s: ArrayRef = Arc::new(Int8Array::from(vec![Some(-128), None, Some(127)]));
        assert_eq!(
            encode(i8s, FIXED0, FieldType::Int64),
            vec![
                v(|o| push_int64(o, -128)),
                null(),
                v(|o| push_int64(o, 127))
            ]
        );
        let i16s: ArrayRef = Arc::new(Int16Array::from(vec![-32768, 300]));
        assert_eq!(
            encode(i16s, FIXED0, FieldType::Int32),
            vec![v(|o| push_int32(o, -32768)), v(|o| push_int32(o, 300))]
        );
        let i32s: ArrayRef = Arc::new(Int32Array::from(vec![i32::MIN, 0]));
        assert_eq!(
            encode(i32s, FIXED0, FieldType::Int64),
            vec![
                v(|o| push_int64(o, i64::from(i32::MIN))),
                v(|o| push_int64(o, 0))
            ]
        );
    }

    #[test]
    fn scaled_number_into_int32_rejects_fraction() {
        let raw: ArrayRef = Arc::new(Int16Array::from(vec![1200, 1234, -500, 0]));
        assert_eq!(
            encode(raw, FIXED2, FieldType::Int32),
            vec![
                v(|o| push_int32(o, 12)),
                Err(SkipReason::NotInteger),
                v(|o| push_int32(o, -5)),
                v(|o| push_int32(o, 0)),
            ]
        );
    }

    #[test]
    fn int64_into_int32_overflows_outside_i32() {
        let raw: ArrayRef = Arc::new(Int64Array::from(vec![
            i64::from(i32::MAX),
            i64::from(i32::MAX) + 1,
            i64::from(i32::MIN),
            i64::from(i32::MIN) - 1,
        ]));
        assert_eq!(
            encode(raw, FIXED0, FieldType::Int32),
            vec![
                v(|o| push_int32(o, i32::MAX)),
                Err(SkipReason::Overflow),
                v(|o| push_int32(o, i32::MIN)),
                Err(SkipReason::Overflow),
            ]
        );
    }

    #[test]
    fn wide_decimal128_overflows_int64_only_beyond_its_range() {
        let raw: ArrayRef = Arc::new(
            Decimal128Array::from(vec![
                i128::from(i64::MAX),
                i128::from(i64::MAX) + 1,
                i128::from(i64::MIN) - 1,
                -7,
            ])
            .with_precision_and_scale(38, 0)
            .unwrap(),
        );
        assert_eq!(
            encode(raw, FIXED0, FieldType::Int64),
            vec![
                v(|o| push_int64(o, i64::MAX)),
                Err(SkipReason::Overflow),
                Err(SkipReason::Overflow),
                v(|o| push_int64(o, -7)),
            ]
        );
    }

    #[test]
    fn uint64_beyond_i64_overflows() {
        let raw: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX, 5]));
        assert_eq!(
            encode(raw, &[], FieldType::Int64),
            vec![Err(SkipReason::Overflow), v(|o| push_int64(o, 5))]
        );
    }

    #[test]
    fn float_into_integer_requires_a_whole_finite_value() {
        let raw: ArrayRef = Arc::new(Float64Array::from(vec![
            2.0,
            2.5,
            f64::NAN,
            f64::INFINITY,
            1e19,
            -0.0,
            -9_223_372_036_854_775_808.0,
        ]));
        assert_eq!(
            encode(raw, &[("logicalType", "REAL")], FieldType::Int64),
            vec![
                v(|o| push_int64(o, 2)),
                Err(SkipReason::NotInteger),
                Err(SkipReason::NotInteger),
                Err(SkipReason::Overflow),
                Err(SkipReason::Overflow),
                v(|o| push_int64(o, 0)),
                v(|o| push_int64(o, i64::MIN)),
            ]
        );
    }

    // --- fakesnow's NUMBER(38,2) and other decimals --------------------------------

    #[test]
    fn decimal128_scaled_by_metadata_feeds_ints_and_doubles() {
        let dec = || -> ArrayRef {
            Arc::new(
                Decimal128Array::from(vec![Some(1200), Some(12345), None, Some(-5)])
                    .with_precision_and_scale(38, 2)
                    .unwrap(),
            )
        };
        let meta = &[
            ("logicalType", "FIXED"),
            ("precision", "38"),
            ("scale", "2"),
        ];
        assert_eq!(
            encode(dec(), meta, FieldType::Int64),
            vec![
                v(|o| push_int64(o, 12)),
                Err(SkipReason::NotInteger),
                null(),
                Err(SkipReason::NotInteger)
            ]
        );
        assert_eq!(
            encode(dec(), meta, FieldType::Double),
            vec![
                v(|o| push_double(o, 12.0)),
                v(|o| push_double(o, 123.45)),
                null(),
                v(|o| push_double(o, -0.05)),
            ]
        );
        // Without metadata (Parquet) the Arrow type's scale applies.
        assert_eq!(
            encode(dec(), &[], FieldType::Double)[1],
            v(|o| push_double(o, 123.45))
        );
    }

    #[test]
    fn scaled_number_into_double_is_rounded_once() {
        let raw: ArrayRef = Arc::new(Int32Array::from(vec![10, 1, -12345]));
        assert_eq!(
            encode(raw, FIXED2, FieldType::Double),
            vec![
                v(|o| push_double(o, 0.1)),
                v(|o| push_double(o, 0.01)),
                v(|o| push_double(o, -123.45)),
            ]
        );
        // Beyond 2^53 the division fast path would round twice; the parser rounds once.
        let wide: ArrayRef = Arc::new(
            Decimal128Array::from(vec![12_345_678_901_234_567_890_123i128])
                .with_precision_and_scale(38, 10)
                .unwrap(),
        );
        let exact: f64 = "1234567890123.4567890123".parse().unwrap();
        assert_eq!(
            encode(wide, &[], FieldType::Double),
            vec![v(|o| push_double(o, exact))]
        );
    }

    #[test]
    fn number_into_float_overflows_only_for_finite_values_beyond_f32() {
        let raw: ArrayRef = Arc::new(Float64Array::from(vec![
            1.5,
            1e39,
            -1e39,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::from(f32::MAX),
        ]));
        let got = encode(raw, &[], FieldType::Float);
        assert_eq!(got[0], v(|o| push_float(o, 1.5)));
        assert_eq!(got[1], Err(SkipReason::Overflow));
        assert_eq!(got[2], Err(SkipReason::Overflow));
        assert_eq!(got[3], v(|o| push_float(o, f32::NAN)));
        assert_eq!(got[4], v(|o| push_float(o, f32::INFINITY)));
        assert_eq!(got[5], v(|o| push_float(o, f32::NEG_INFINITY)));
        assert_eq!(got[6], v(|o| push_float(o, f32::MAX)));
        // A scaled integer is rounded straight to f32, not through f64.
        let scaled: ArrayRef = Arc::new(Int8Array::from(vec![1]));
        assert_eq!(
            encode(
                scaled,
                &[("logicalType", "FIXED"), ("scale", "1")],
                FieldType::Float
            ),
            vec![v(|o| push_float(o, 0.1f32))]
        );
    }

    #[test]
    fn double_keeps_nan_infinities_and_negative_zero() {
        let raw: ArrayRef = Arc::new(Float64Array::from(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
        ]));
        assert_eq!(
            encode(raw, &[("logicalType", "REAL")], FieldType::Double),
            vec![
                v(|o| push_double(o, f64::NAN)),
                v(|o| push_double(o, f64::INFINITY)),
                v(|o| push_double(o, f64::NEG_INFINITY)),
                v(|o| push_double(o, -0.0)),
            ]
        );
        let single: ArrayRef = Arc::new(Float32Array::from(vec![0.1f32]));
        assert_eq!(
            encode(single, &[], FieldType::Double),
            vec![v(|o| push_double(o, f64::from(0.1f32)))]
        );
    }

    // --- bool, string, bytes ------------------------------------------------------

    #[test]
    fn boolean_column_feeds_bool_with_nulls() {
        let raw: ArrayRef = Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]));
        assert_eq!(
            encode(raw, &[("logicalType", "BOOLEAN")], FieldType::Bool),
            vec![
                v(|o| push_bool(o, true)),
                null(),
                v(|o| push_bool(o, false))
            ]
        );
    }

    #[test]
    fn strings_keep_empty_and_non_ascii_in_every_utf8_layout() {
        let values = vec![Some(""), Some("ü→😀"), None, Some("abc")];
        let expected = vec![
            v(|o| push_string(o, "")),
            v(|o| push_string(o, "ü→😀")),
            null(),
            v(|o| push_string(o, "abc")),
        ];
        let layouts: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(values.clone())),
            Arc::new(LargeStringArray::from(values.clone())),
            Arc::new(StringViewArray::from(values.clone())),
        ];
        for array in layouts {
            assert_eq!(encode(array, TEXT, FieldType::String), expected);
        }
    }

    #[test]
    fn bytes_come_from_binary_or_from_text_as_utf8() {
        let bin: ArrayRef = Arc::new(BinaryArray::from_opt_vec(vec![
            Some(&[0u8, 0xff][..]),
            Some(&[][..]),
            None,
        ]));
        assert_eq!(
            encode(bin, &[("logicalType", "BINARY")], FieldType::Bytes),
            vec![
                v(|o| push_bytes(o, &[0, 0xff])),
                v(|o| push_bytes(o, &[])),
                null()
            ]
        );
        let fixed: ArrayRef = Arc::new(FixedSizeBinaryArray::from(vec![&[1u8, 2][..]]));
        assert_eq!(
            encode(fixed, &[], FieldType::Bytes),
            vec![v(|o| push_bytes(o, &[1, 2]))]
        );
        let text: ArrayRef = Arc::new(StringArray::from(vec!["é"]));
        assert_eq!(
            encode(text, TEXT, FieldType::Bytes),
            vec![v(|o| push_bytes(o, "é".as_bytes()))]
        );
    }

    #[test]
    fn sql_null_is_feast_null_for_every_field_type() {
        for ty in FieldType::ALL {
            let untyped: ArrayRef = Arc::new(NullArray::new(2));
            assert_eq!(encode(untyped, &[], ty), vec![null(), null()], "{ty}");
        }
        let cases: Vec<(ArrayRef, Meta, FieldType)> = vec![
            (
                Arc::new(Int64Array::from(vec![None])),
                FIXED0,
                FieldType::Int64,
            ),
            (
                Arc::new(Float64Array::from(vec![None])),
                &[],
                FieldType::Float,
            ),
            (
                Arc::new(StringArray::from(vec![None::<&str>])),
                TEXT,
                FieldType::Bytes,
            ),
            (
                Arc::new(StringArray::from(vec![None::<&str>])),
                ARRAY,
                FieldType::Int32List,
            ),
            (
                Arc::new(Int64Array::from(vec![None])),
                NTZ9,
                FieldType::UnixTimestamp,
            ),
        ];
        for (array, meta, ty) in cases {
            assert_eq!(encode(array, meta, ty), vec![null()], "{ty}");
        }
    }

    // --- timestamps -----------------------------------------------------------------

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

    // --- JSON lists (Snowflake ARRAY / VARIANT) -------------------------------------

    #[test]
    fn json_array_text_feeds_int32_list() {
        assert_eq!(
            json(
                &[
                    Some("[\n  1,\n  -2,\n  2147483647\n]"),
                    Some("[]"),
                    Some("null"),
                    None
                ],
                FieldType::Int32List
            ),
            vec![
                v(|o| push_int32_list(o, [1, -2, i32::MAX])),
                v(|o| push_int32_list(o, [])),
                null(),
                null(),
            ]
        );
    }

    #[test]
    fn null_element_in_a_list_is_null_in_list() {
        assert_eq!(
            json(
                &[Some("[1, null]"), Some("[\n  1,\n  undefined\n]")],
                FieldType::Int64List
            ),
            vec![Err(SkipReason::NullInList), Err(SkipReason::NullInList)]
        );
    }

    #[test]
    fn text_that_is_not_a_json_array_is_invalid_list() {
        let got = json(
            &[
                Some("{\"a\": 1}"),
                Some("1"),
                Some("[1,"),
                Some("abc"),
                Some(""),
                Some("[1] x"),
            ],
            FieldType::Int64List,
        );
        assert!(
            got.iter().all(|c| *c == Err(SkipReason::InvalidList)),
            "{got:?}"
        );
    }

    #[test]
    fn json_numbers_follow_the_integer_rules() {
        assert_eq!(
            json(
                &[
                    Some("[2.0]"),
                    Some("[2.5]"),
                    Some("[3000000000]"),
                    Some("[\"1\"]"),
                    Some("[[1]]"),
                    Some("[1.5, null]")
                ],
                FieldType::Int32List
            ),
            vec![
                v(|o| push_int32_list(o, [2])),
                Err(SkipReason::NotInteger),
                Err(SkipReason::Overflow),
                Err(SkipReason::Unrepresentable),
                Err(SkipReason::Unrepresentable),
                Err(SkipReason::NotInteger),
            ]
        );
        assert_eq!(
            json(
                &[
                    Some("[3000000000, -9223372036854775808]"),
                    Some("[9223372036854775808]")
                ],
                FieldType::Int64List
            ),
            vec![
                v(|o| push_int64_list(o, [3_000_000_000, i64::MIN])),
                Err(SkipReason::Overflow)
            ]
        );
    }

    #[test]
    fn string_list_unescapes_and_keeps_non_ascii() {
        assert_eq!(
            json(
                &[Some(r#"["a", "", "ü😀", "q\"x\\n"]"#), Some("[1]")],
                FieldType::StringList
            ),
            vec![
                v(|o| push_string_list(o, ["a", "", "ü😀", "q\"x\\n"])),
                Err(SkipReason::Unrepresentable),
            ]
        );
    }

    #[test]
    fn bytes_list_takes_json_strings_as_utf8_bytes() {
        assert_eq!(
            json(&[Some(r#"["AB", "é", ""]"#)], FieldType::BytesList),
            vec![v(|o| push_bytes_list(
                o,
                [&b"AB"[..], "é".as_bytes(), &[][..]]
            ))]
        );
    }

    #[test]
    fn double_and_float_lists_take_snowflake_special_values() {
        assert_eq!(
            json(
                &[
                    Some(r#"[1.5, "NaN", "Infinity", "-Infinity", 2]"#),
                    Some("[NaN, -Infinity, 1]"),
                    Some(r#"["x"]"#)
                ],
                FieldType::DoubleList
            ),
            vec![
                v(|o| push_double_list(o, [1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 2.0])),
                v(|o| push_double_list(o, [f64::NAN, f64::NEG_INFINITY, 1.0])),
                Err(SkipReason::Unrepresentable),
            ]
        );
        assert_eq!(
            json(
                &[Some("[1.5, \"NaN\"]"), Some("[1e39]")],
                FieldType::FloatList
            ),
            vec![
                v(|o| push_float_list(o, [1.5, f32::NAN])),
                Err(SkipReason::Overflow)
            ]
        );
    }

    #[test]
    fn bool_list_takes_json_booleans_only() {
        assert_eq!(
            json(&[Some("[true, false]"), Some("[1]")], FieldType::BoolList),
            vec![
                v(|o| push_bool_list(o, [true, false])),
                Err(SkipReason::Unrepresentable)
            ]
        );
    }

    #[test]
    fn unix_timestamp_list_takes_seconds_and_timestamp_text() {
        let text = r#"[1700000000, "2023-11-14 22:13:20.999", "2023-11-14T22:13:20Z",
            "2023-11-14 14:13:20.000 -0800", "2023-11-14T23:13:20+01:00", "2023-11-14", -0.5]"#;
        assert_eq!(
            encode(
                Arc::new(StringArray::from(vec![
                    text,
                    r#"["yesterday"]"#,
                    r#"["2023-02-30"]"#
                ])),
                VARIANT,
                FieldType::UnixTimestampList
            ),
            vec![
                v(|o| push_unix_timestamp_list(
                    o,
                    [
                        1_700_000_000,
                        1_700_000_000,
                        1_700_000_000,
                        1_700_000_000,
                        1_700_000_000,
                        1_699_920_000,
                        -1
                    ]
                )),
                Err(SkipReason::Unrepresentable),
                Err(SkipReason::Unrepresentable),
            ]
        );
    }

    #[test]
    fn scalar_fields_refuse_json_columns() {
        let e = encode_err(
            Arc::new(StringArray::from(vec!["\"a\""])),
            VARIANT,
            FieldType::String,
        );
        assert!(e.contains("VARIANT") && e.contains("string"), "{e}");
        let e = encode_err(
            Arc::new(StringArray::from(vec!["{}"])),
            &[("logicalType", "OBJECT")],
            FieldType::StringList,
        );
        assert!(e.contains("OBJECT"), "{e}");
    }

    // --- native lists ---------------------------------------------------------------

    #[test]
    fn native_lists_decode_per_element() {
        let ints: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![]),
            Some(vec![Some(3), None]),
        ]));
        assert_eq!(
            encode(ints, &[], FieldType::Int64List),
            vec![
                v(|o| push_int64_list(o, [1, 2])),
                null(),
                v(|o| push_int64_list(o, [])),
                Err(SkipReason::NullInList),
            ]
        );
        let strings = LargeListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            arrow_buffer::OffsetBuffer::from_lengths([2, 1]),
            Arc::new(StringArray::from(vec!["a", "ü", "c"])),
            None,
        );
        assert_eq!(
            encode(Arc::new(strings), &[], FieldType::StringList),
            vec![
                v(|o| push_string_list(o, ["a", "ü"])),
                v(|o| push_string_list(o, ["c"]))
            ]
        );
        let pairs = FixedSizeListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            2,
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])),
            None,
        );
        assert_eq!(
            encode(Arc::new(pairs), &[], FieldType::FloatList),
            vec![
                v(|o| push_float_list(o, [1.0, 2.0])),
                v(|o| push_float_list(o, [3.0, 4.0]))
            ]
        );
    }

    #[test]
    fn native_list_elements_use_their_own_field_metadata() {
        let child = Field::new_list_field(DataType::Int16, true).with_metadata(
            FIXED2
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let list = ListArray::new(
            Arc::new(child),
            arrow_buffer::OffsetBuffer::from_lengths([2]),
            Arc::new(Int16Array::from(vec![150, -1])),
            None,
        );
        assert_eq!(
            encode(Arc::new(list), ARRAY, FieldType::DoubleList),
            vec![v(|o| push_double_list(o, [1.5, -0.01]))]
        );
    }

    #[test]
    fn native_list_of_unfit_elements_is_a_column_error() {
        let list: ArrayRef = Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            arrow_buffer::OffsetBuffer::from_lengths([1]),
            Arc::new(StringArray::from(vec!["a"])),
            None,
        ));
        let e = encode_err(list, &[], FieldType::Int32List);
        assert!(e.contains("int32_list") && e.contains("elements"), "{e}");
    }

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

    // --- fakesnow's result shapes, side by side -------------------------------------

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

    // --- column errors ----------------------------------------------------------------

    #[test]
    fn incompatible_columns_are_column_errors_naming_both_types() {
        let e = encode_err(
            Arc::new(StringArray::from(vec!["1"])),
            TEXT,
            FieldType::Int32,
        );
        assert!(
            e.contains("SCORE") && e.contains("Utf8") && e.contains("TEXT") && e.contains("int32"),
            "{e}"
        );
        let e = encode_err(
            Arc::new(BooleanArray::from(vec![true])),
            &[],
            FieldType::String,
        );
        assert!(e.contains("Boolean") && e.contains("string"), "{e}");
        let e = encode_err(Arc::new(Int64Array::from(vec![1])), FIXED0, FieldType::Bool);
        assert!(
            e.contains("Int64") && e.contains("FIXED") && e.contains("bool"),
            "{e}"
        );
        let e = encode_err(
            Arc::new(Int64Array::from(vec![1])),
            &[("logicalType", "TIME"), ("scale", "9")],
            FieldType::UnixTimestamp,
        );
        assert!(e.contains("TIME") && e.contains("unix_timestamp"), "{e}");
        let e = encode_err(
            Arc::new(StringArray::from(vec!["a"])),
            TEXT,
            FieldType::UnixTimestamp,
        );
        assert!(e.contains("unix_timestamp"), "{e}");
        let e = encode_err(
            Arc::new(Float64Array::from(vec![1.0])),
            &[],
            FieldType::StringList,
        );
        assert!(e.contains("Float64") && e.contains("string_list"), "{e}");
    }

    // --- entities -----------------------------------------------------------------------

    #[test]
    fn entities_borrow_text_and_render_whole_numbers() {
        let texts: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, Some("ü")]));
        let (texts, field) = column(texts, TEXT);
        let e = entities("E", &texts, &field).unwrap();
        assert_eq!(
            (0..e.len()).map(|r| e.get(r)).collect::<Vec<_>>(),
            vec![Some("a"), None, Some("ü")]
        );

        let views: ArrayRef = Arc::new(StringViewArray::from(vec![
            "a-much-longer-than-inline-entity-id",
        ]));
        let (views, field) = column(views, &[]);
        assert_eq!(
            entities("E", &views, &field).unwrap().get(0),
            Some("a-much-longer-than-inline-entity-id")
        );

        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(42), None, Some(-7)]));
        let (ints, field) = column(ints, FIXED0);
        let e = entities("E", &ints, &field).unwrap();
        assert_eq!(
            (0..e.len()).map(|r| e.get(r)).collect::<Vec<_>>(),
            vec![Some("42"), None, Some("-7")]
        );

        let wide: ArrayRef = Arc::new(
            Decimal128Array::from(vec![12_345_678_901_234_567_890i128])
                .with_precision_and_scale(38, 0)
                .unwrap(),
        );
        let (wide, field) = column(wide, FIXED0);
        assert_eq!(
            entities("E", &wide, &field).unwrap().get(0),
            Some("12345678901234567890")
        );
    }

    #[test]
    fn entities_refuse_fractions_floats_and_json() {
        let cases: Vec<(ArrayRef, Meta)> = vec![
            (Arc::new(Int16Array::from(vec![1])), FIXED2),
            (Arc::new(Float64Array::from(vec![1.0])), &[]),
            (Arc::new(StringArray::from(vec!["\"a\""])), VARIANT),
            (Arc::new(BooleanArray::from(vec![true])), &[]),
        ];
        for (array, meta) in cases {
            let (array, field) = column(array, meta);
            let e = entities("DOMAIN_USERID", &array, &field)
                .err()
                .expect("refused");
            assert!(
                e.to_string().contains("DOMAIN_USERID") && e.message.contains("entity"),
                "{e}"
            );
        }
    }

    // --- warehouse type names -------------------------------------------------------------

    #[test]
    fn warehouse_type_names_decide_compatibility() {
        use FieldType::*;
        let ok: &[(&str, &[FieldType])] = &[
            (
                "NUMBER(38,0)",
                &[Int32, Int64, Double, Float, UnixTimestamp],
            ),
            (
                "NUMBER(10,2)",
                &[Int32, Int64, Double, Float, UnixTimestamp],
            ),
            ("number", &[Int64]),
            ("INT", &[Int32, Int64]),
            ("BIGINT", &[Int64, Double]),
            ("FLOAT", &[Double, Float, Int64]),
            ("DOUBLE", &[Double]),
            ("VARCHAR(16777216)", &[String, Bytes, StringList, Int32List]),
            ("TEXT", &[String]),
            ("STRING", &[String]),
            ("BOOLEAN", &[Bool]),
            ("BINARY(8388608)", &[Bytes]),
            ("TIMESTAMP_NTZ(9)", &[UnixTimestamp]),
            ("TIMESTAMP_LTZ(9)", &[UnixTimestamp]),
            ("TIMESTAMP_TZ(9)", &[UnixTimestamp]),
            ("TIMESTAMP WITH TIME ZONE", &[UnixTimestamp]),
            ("DATE", &[UnixTimestamp]),
            (
                "ARRAY",
                &[
                    Int32List,
                    StringList,
                    UnixTimestampList,
                    BoolList,
                    BytesList,
                ],
            ),
            ("VARIANT", &[DoubleList, FloatList, Int64List]),
            ("ARRAY(NUMBER(38,0))", &[Int64List, DoubleList]),
            ("INTEGER", &[Int32]),
            ("JSON", &[StringList]),
            ("varchar not null", &[String]),
        ];
        for (name, types) in ok {
            for ty in *types {
                assert_eq!(compatible(name, *ty), Ok(()), "{name} -> {ty}");
            }
        }
        let refused: &[(&str, FieldType)] = &[
            ("VARCHAR(16777216)", Int32),
            ("TEXT", UnixTimestamp),
            ("NUMBER(38,0)", String),
            ("NUMBER(38,0)", Bool),
            ("BOOLEAN", Int32),
            ("BINARY", String),
            ("TIMESTAMP_NTZ(9)", Int64),
            ("TIME(9)", UnixTimestamp),
            ("ARRAY", String),
            ("VARIANT", String),
            ("OBJECT", StringList),
            ("NUMBER(38,0)", Int32List),
            ("ARRAY(VARCHAR)", Int32List),
            ("GEOGRAPHY", Bytes),
        ];
        for (name, ty) in refused {
            let e = compatible(name, *ty).unwrap_err();
            assert!(e.contains(name) && e.contains(ty.name()), "{e}");
        }
    }

    #[test]
    fn timestamp_and_entity_columns_are_checked_by_type_name() {
        for ok in [
            "TIMESTAMP_NTZ(9)",
            "TIMESTAMP_LTZ(3)",
            "TIMESTAMP_TZ(9)",
            "TIMESTAMP",
            "DATETIME",
            "DATE",
        ] {
            assert_eq!(timestamp_compatible(ok), Ok(()), "{ok}");
        }
        for bad in ["NUMBER(38,0)", "VARCHAR(16777216)", "TIME(9)", "VARIANT"] {
            assert!(timestamp_compatible(bad).unwrap_err().contains(bad));
        }
        for ok in [
            "VARCHAR(16777216)",
            "TEXT",
            "NUMBER(38,0)",
            "BIGINT",
            "NUMBER",
        ] {
            assert_eq!(entity_compatible(ok), Ok(()), "{ok}");
        }
        for bad in [
            "NUMBER(10,2)",
            "FLOAT",
            "BINARY",
            "VARIANT",
            "TIMESTAMP_NTZ(9)",
        ] {
            assert!(entity_compatible(bad).unwrap_err().contains(bad));
        }
    }

    // --- log rendering and bookkeeping -----------------------------------------------------

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

    #[test]
    fn encoded_column_lists_skipped_rows_with_reasons() {
        let raw: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(1),
            Some(i64::MAX),
            None,
            Some(-1),
        ]));
        let (raw, field) = column(raw, FIXED0);
        let col = encode_column("C", &raw, &field, FieldType::Int32).unwrap();
        assert_eq!(
            col.skipped().collect::<Vec<_>>(),
            vec![(1, SkipReason::Overflow)]
        );
        assert_eq!(col.skipped_count(), 1);
        assert_eq!(col.get(2), Ok(&[][..]));
        assert_eq!(
            col.get(3),
            v(|o| push_int32(o, -1)).as_deref().map_err(|e| *e)
        );
    }

    #[test]
    fn skip_reason_labels_are_stable() {
        assert_eq!(
            SkipReason::ALL.map(SkipReason::as_str),
            [
                "overflow",
                "not_integer",
                "null_in_list",
                "invalid_list",
                "unrepresentable"
            ]
        );
        assert_eq!(SkipReason::NullInList.to_string(), "null_in_list");
    }

    #[test]
    fn timestamp_text_parser_accepts_snowflake_and_rfc3339_forms() {
        let s = |t: &str| parse_timestamp_text(t).map(|n| n.div_euclid(NANOS_PER_SECOND) as i64);
        assert_eq!(s("1970-01-01"), Some(0));
        assert_eq!(s("1969-12-31 23:59:59.5"), Some(-1));
        assert_eq!(s("2023-11-14 22:13:20.123456789123"), Some(1_700_000_000));
        assert_eq!(s("2023-11-14 22:13"), Some(1_699_999_980));
        assert_eq!(s("2023-11-14T22:13:20.000+0100"), Some(1_699_996_400));
        assert_eq!(
            parse_timestamp_text("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500_000_000)
        );
        for bad in [
            "",
            "2023-11-14X",
            "2023-13-01",
            "2023-11-14 25:00:00",
            "23-11-14",
            "2023-11-14 22:13:20 PST",
        ] {
            assert_eq!(parse_timestamp_text(bad), None, "{bad}");
        }
    }
}
