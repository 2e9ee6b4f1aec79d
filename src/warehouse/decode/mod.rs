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
//!   as [`Nanos`](crate::time::Nanos), [`entities`] the entity of every row as text, both without
//!   allocating per row.
//! - [`compatible`], [`timestamp_compatible`] and [`entity_compatible`] accept a
//!   column type (as a backend's `describe` reports it) exactly when the Arrow shape
//!   that type arrives in is decoded by the functions above, so `check` can refuse a
//!   view before any row is read.
//! - [`cell_text`] / [`field_cell_text`] render one cell, short, for log lines
//!   about skipped values.
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
//! Dependencies: [`crate::profiles::feast`] (the value encoders) and
//! [`crate::model::FieldType`], one way: nothing below `profiles` imports the
//! warehouse.
//!
//! # Where things are
//!
//! | file | what it does | used by |
//! |---|---|---|
//! | `shapes.rs` | what an Arrow column is (Snowflake, fakesnow, Arrow-native shapes), decided once per column; the row loops over the concrete arrays | everything below |
//! | `numbers.rs` | exact conversions of integers, decimals and floats | elements, entities, render |
//! | `elements.rs` | one encoder per Feast scalar type, shared by scalars and list elements | encode, lists |
//! | `lists.rs` | JSON list text (Snowflake ARRAY / VARIANT) and the timestamp texts inside it | encode |
//! | `encode.rs` | [`encode_column`] and [`EncodedColumn`] | `sync` |
//! | `timestamps.rs` | [`timestamps`] | backends, `sync` |
//! | `entities.rs` | [`entities`] | backends, `sync` |
//! | `types.rs` | [`compatible`] and friends, on [`super::ColumnType`] | `sync`, backends |
//! | `render.rs` | [`cell_text`], [`field_cell_text`] | backends, `sync` |
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

use std::fmt;

mod elements;
mod encode;
mod entities;
mod lists;
mod numbers;
mod render;
mod shapes;
mod timestamps;
mod types;

#[cfg(test)]
mod test_support;

pub use encode::{encode_column, EncodedColumn};
pub use entities::{entities, EntityColumn};
pub use render::{cell_text, field_cell_text};
pub use timestamps::{timestamps, TimestampCell};
pub use types::{compatible, entity_compatible, timestamp_compatible};

/// A column that cannot be read as the requested type at all (permanent: the view or table must change).
#[derive(Debug, Clone, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ColumnError {
    pub column: String,
    pub message: String,
}

/// Why a row or one cell was skipped: the one place run records, logs and
/// metrics take their labels from (stable snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// A row without an entity: it cannot be keyed.
    NullEntity,
    /// A row without a timestamp: it cannot be ordered.
    NullTimestamp,
    /// A row whose timestamp [`Nanos`](crate::time::Nanos) cannot hold
    /// (before 1677-09-21 or after 2262-04-11 UTC).
    TimestampOutOfRange,
    /// Outside the field type's range: i32/i64 bounds, a finite number beyond f32,
    /// ±inf into an integer, an instant outside [`Nanos`](crate::time::Nanos) or outside the seconds
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
    pub const ALL: [SkipReason; 8] = [
        SkipReason::NullEntity,
        SkipReason::NullTimestamp,
        SkipReason::TimestampOutOfRange,
        SkipReason::Overflow,
        SkipReason::NotInteger,
        SkipReason::NullInList,
        SkipReason::InvalidList,
        SkipReason::Unrepresentable,
    ];

    /// Metric / run-record label; stable across releases.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NullEntity => "null_entity",
            SkipReason::NullTimestamp => "null_timestamp",
            SkipReason::TimestampOutOfRange => "timestamp_out_of_range",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reason_labels_are_stable() {
        assert_eq!(
            SkipReason::ALL.map(SkipReason::as_str),
            [
                "null_entity",
                "null_timestamp",
                "timestamp_out_of_range",
                "overflow",
                "not_integer",
                "null_in_list",
                "invalid_list",
                "unrepresentable"
            ]
        );
        assert_eq!(SkipReason::NullInList.to_string(), "null_in_list");
    }
}
