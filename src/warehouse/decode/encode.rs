//! Field encoders: a page column into serialized Feast `Value`s, one per row.
//!
//! # Contract
//!
//! Promises:
//! - [`encode_column`] gives exactly one entry per row of the column: the bytes of
//!   a `feast.types.Value` (empty for SQL NULL, Feast's null) or the
//!   [`SkipReason`] that row's field is skipped for; it fails with a
//!   [`ColumnError`] only when the column's shape cannot feed the field type at
//!   all (the message names both, and what the field type takes);
//! - an [`EncodedColumn`] holds a page column in one buffer plus one `u32` offset
//!   per row, so encoding allocates per column, not per cell; a page column over
//!   4 GiB is a [`ColumnError`], never a wrapped offset;
//! - scalar fields run the element's row loop directly over the Arrow array; list
//!   fields read native lists element-wise and JSON text through `lists.rs`, and a
//!   list with a null element is [`SkipReason::NullInList`].
//!
//! Assumes the shapes of `shapes.rs` and the element rules of `elements.rs`.

use arrow_array::{Array, ArrayRef};
use arrow_schema::Field;

use super::elements::{
    visit, Bools, Bytes, Doubles, Element, Floats, Int32s, Int64s, Strings, UnixSeconds,
};
use super::lists::encode_json_list;
use super::shapes::{classify, describe_shape, each_text, Shape};
use super::types::feeds;
use super::{Cell, ColumnError, SkipReason};
use crate::model::FieldType;

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::types::Int64Type;
    use arrow_array::{
        ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, FixedSizeListArray,
        Float64Array, Int16Array, Int64Array, LargeListArray, LargeStringArray, ListArray,
        NullArray, StringArray, StringViewArray,
    };
    use arrow_schema::{DataType, Field};

    use super::super::test_support::*;
    use super::super::*;
    use super::*;
    use crate::model::FieldType;
    use crate::profiles::feast::*;

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
}
