//! The entity column of a page as text.
//!
//! # Contract
//!
//! Promises: [`entities`] reads a VARCHAR column (Utf8, LargeUtf8, Utf8View) by
//! borrowing it, and a whole-number column (integers, decimals of scale 0) by
//! rendering every value in decimal once, into one buffer; [`EntityColumn::get`]
//! then costs no allocation per row. NULL is `None`. Any other column (fractions,
//! floats, JSON, booleans) is a [`ColumnError`] naming the column.
//!
//! Assumes entities are keyed as text: the entity key written to Redis holds a
//! STRING value ([`crate::profiles::feast::entity_key`]).

use arrow_array::{Array, ArrayRef};
use arrow_buffer::NullBuffer;
use arrow_schema::Field;

use super::numbers::Number;
use super::shapes::{
    classify, describe_shape, each_primitive, is_valid, with_numbers, Shape, Texts,
};
use super::ColumnError;

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int16Array, Int64Array, StringArray,
        StringViewArray,
    };

    use super::super::test_support::*;

    use super::*;

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
}
