//! Test helpers shared by the decoding tests: hand-built columns with
//! Snowflake-style field metadata, and the expected Feast bytes.

use std::sync::Arc;

use arrow_array::ArrayRef;
use arrow_array::{Int32Array, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema};

use super::{encode_column, timestamps, SkipReason, TimestampCell};
use crate::model::FieldType;
use crate::profiles::feast::push_unix_timestamp;

pub(super) type Expected = Result<Vec<u8>, SkipReason>;
/// Snowflake field metadata as `(key, value)` pairs.
pub(super) type Meta = &'static [(&'static str, &'static str)];

/// Passes a hand-built column through a `RecordBatch` with Snowflake-style field
/// metadata, as `snowflake-api` hands pages over.
pub(super) fn column(array: ArrayRef, meta: &[(&str, &str)]) -> (ArrayRef, Field) {
    let field = Field::new("COL", array.data_type().clone(), true).with_metadata(
        meta.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array]).unwrap();
    (batch.column(0).clone(), batch.schema().field(0).clone())
}

pub(super) const FIXED0: &[(&str, &str)] = &[
    ("logicalType", "FIXED"),
    ("precision", "38"),
    ("scale", "0"),
];
pub(super) const FIXED2: &[(&str, &str)] = &[
    ("logicalType", "FIXED"),
    ("precision", "10"),
    ("scale", "2"),
];
pub(super) const TEXT: &[(&str, &str)] = &[("logicalType", "TEXT")];
pub(super) const ARRAY: &[(&str, &str)] = &[("logicalType", "ARRAY")];
pub(super) const VARIANT: &[(&str, &str)] = &[("logicalType", "VARIANT")];
pub(super) const NTZ9: &[(&str, &str)] = &[("logicalType", "TIMESTAMP_NTZ"), ("scale", "9")];

pub(super) fn encode(array: ArrayRef, meta: &[(&str, &str)], ty: FieldType) -> Vec<Expected> {
    let (array, field) = column(array, meta);
    let col = encode_column("COL", &array, &field, ty).unwrap();
    assert_eq!(col.len(), array.len());
    (0..col.len())
        .map(|r| col.get(r).map(<[u8]>::to_vec))
        .collect()
}

pub(super) fn encode_err(array: ArrayRef, meta: &[(&str, &str)], ty: FieldType) -> String {
    let (array, field) = column(array, meta);
    let e = encode_column("SCORE", &array, &field, ty).unwrap_err();
    assert_eq!(e.column, "SCORE");
    e.to_string()
}

pub(super) fn json(texts: &[Option<&str>], ty: FieldType) -> Vec<Expected> {
    encode(Arc::new(StringArray::from(texts.to_vec())), ARRAY, ty)
}

pub(super) fn v(f: impl FnOnce(&mut Vec<u8>)) -> Expected {
    let mut out = Vec::new();
    f(&mut out);
    Ok(out)
}

pub(super) fn null() -> Expected {
    Ok(Vec::new())
}

pub(super) fn nanos(array: ArrayRef, meta: &[(&str, &str)]) -> Vec<TimestampCell> {
    let (array, field) = column(array, meta);
    timestamps("TS", &array, &field).unwrap()
}

pub(super) fn unix(array: ArrayRef, meta: &[(&str, &str)]) -> Vec<Expected> {
    encode(array, meta, FieldType::UnixTimestamp)
}

pub(super) fn secs(s: i64) -> Expected {
    v(|o| push_unix_timestamp(o, s))
}

/// Snowflake's struct timestamp; `timezone` adds the TZ member, `fraction` may be absent (TZ, byteLength 8).
pub(super) fn ts_struct(
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
