//! Postgres' binary wire values into Arrow: what a window's rows hold, per
//! column type, as the page columns `decode` expects (integers as Int64,
//! `numeric` as Decimal128 or, where a page's values do not fit, Float64,
//! timestamps as microseconds, arrays as lists, `json`/`jsonb` as text marked
//! JSON). Pure functions over bytes; the reading itself is in `postgres.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, Decimal128Array, Float64Array, ListArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field};
use tokio_postgres::types::{FromSql, Kind, Type};

use super::{PG_EPOCH_DAYS, PG_EPOCH_MICROS};

/// A page column's field: JSON columns say so in the metadata `decode` reads.
pub(super) fn field_of(name: &str, ty: &Type) -> Field {
    let field = Field::new(name, DataType::Null, true);
    if matches!(*ty, Type::JSON | Type::JSONB) {
        field.with_metadata(HashMap::from([(
            "logicalType".to_string(),
            "VARIANT".to_string(),
        )]))
    } else {
        field
    }
}

/// A cell's bytes in the binary format, whatever its type.
pub(super) struct Raw<'a>(pub(super) &'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

pub(super) fn be_i64(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.try_into().ok()?))
}

pub(super) fn be_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(b.try_into().ok()?))
}

pub(super) fn be_i16(b: &[u8]) -> Option<i16> {
    Some(i16::from_be_bytes(b.try_into().ok()?))
}

/// A numeric value: `unscaled / 10^scale`, or a float when it does not fit
/// (NaN, ±inf, more than 38 digits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Numeric {
    Exact { unscaled: i128, scale: u32 },
    Float(f64),
}

pub(super) const MAX_DECIMAL: i128 = 10i128.pow(38);

/// Postgres' binary numeric: ndigits, weight, sign, dscale, then base-10000
/// digits; the value is `Σ digit[i] * 10000^(weight - i)`, shown with
/// `dscale` decimals.
pub(super) fn numeric_from_sql(b: &[u8]) -> std::result::Result<Numeric, String> {
    let bad = || "unreadable numeric".to_string();
    let header = |i: usize| be_i16(b.get(i..i + 2).ok_or_else(bad)?).ok_or_else(bad);
    let ndigits = header(0)?;
    let weight = i32::from(header(2)?);
    let sign = header(4)? as u16;
    let dscale = header(6)? as u16 as u32;
    match sign {
        0xC000 => return Ok(Numeric::Float(f64::NAN)),
        0xD000 => return Ok(Numeric::Float(f64::INFINITY)),
        0xF000 => return Ok(Numeric::Float(f64::NEG_INFINITY)),
        0x0000 | 0x4000 => {}
        _ => return Err(bad()),
    }
    let digits: Vec<i32> = (0..usize::try_from(ndigits).map_err(|_| bad())?)
        .map(|i| header(8 + 2 * i).map(i32::from))
        .collect::<std::result::Result<_, _>>()?;
    let negative = sign == 0x4000;
    // acc = the digits as one integer; value = acc * 10^(4 * (weight + 1 - ndigits)).
    let exact = (|| {
        let mut acc: i128 = 0;
        for d in &digits {
            acc = acc.checked_mul(10_000)?.checked_add(i128::from(*d))?;
        }
        let exp10 = 4 * (weight + 1 - digits.len() as i32) + dscale as i32;
        let unscaled = if exp10 >= 0 {
            acc.checked_mul(10i128.checked_pow(exp10 as u32)?)?
        } else {
            let div = 10i128.checked_pow((-exp10) as u32)?;
            // Trailing digits past dscale are zero: Postgres rounds to dscale.
            acc / div
        };
        (unscaled < MAX_DECIMAL).then_some(if negative { -unscaled } else { unscaled })
    })();
    Ok(match exact {
        Some(unscaled) => Numeric::Exact {
            unscaled,
            scale: dscale,
        },
        // Through text, so the float is the nearest one (summing powers
        // of 10000 in floats would round at every step).
        None => {
            let mut text: String = if negative { "-0".into() } else { "0".into() };
            for d in &digits {
                text.push_str(&format!("{d:04}"));
            }
            text.push_str(&format!("e{}", 4 * (weight + 1 - digits.len() as i32)));
            Numeric::Float(text.parse().map_err(|_| bad())?)
        }
    })
}

/// Builds one page column from binary cells, by the column's Postgres type.
pub(super) enum Builder {
    Int(Int64Builder, fn(&[u8]) -> Option<i64>),
    Numeric(Vec<Option<Numeric>>),
    Float(Float64Builder, fn(&[u8]) -> Option<f64>),
    Bool(BooleanBuilder),
    Text(StringBuilder, TextKind),
    Binary(BinaryBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
    List {
        offsets: Vec<i32>,
        valid: Vec<bool>,
        element: Box<Builder>,
        element_type: Type,
    },
    Unsupported(String, usize),
}

#[derive(Clone, Copy)]
pub(super) enum TextKind {
    Utf8,
    Uuid,
    Jsonb,
}

impl Builder {
    pub(super) fn of(ty: &Type) -> Builder {
        match *ty {
            Type::INT2 => Builder::Int(Int64Builder::new(), |b| be_i16(b).map(i64::from)),
            Type::INT4 => Builder::Int(Int64Builder::new(), |b| be_i32(b).map(i64::from)),
            Type::OID => Builder::Int(Int64Builder::new(), |b| {
                Some(i64::from(u32::from_be_bytes(b.try_into().ok()?)))
            }),
            Type::INT8 => Builder::Int(Int64Builder::new(), be_i64),
            Type::NUMERIC => Builder::Numeric(Vec::new()),
            Type::FLOAT4 => Builder::Float(Float64Builder::new(), |b| {
                Some(f64::from(f32::from_be_bytes(b.try_into().ok()?)))
            }),
            Type::FLOAT8 => Builder::Float(Float64Builder::new(), |b| {
                Some(f64::from_be_bytes(b.try_into().ok()?))
            }),
            Type::BOOL => Builder::Bool(BooleanBuilder::new()),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR | Type::JSON => {
                Builder::Text(StringBuilder::new(), TextKind::Utf8)
            }
            Type::UUID => Builder::Text(StringBuilder::new(), TextKind::Uuid),
            Type::JSONB => Builder::Text(StringBuilder::new(), TextKind::Jsonb),
            Type::BYTEA => Builder::Binary(BinaryBuilder::new()),
            Type::TIMESTAMP => Builder::Timestamp(TimestampMicrosecondBuilder::new()),
            Type::TIMESTAMPTZ => {
                Builder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
            }
            Type::DATE => Builder::Date(Date32Builder::new()),
            _ => match ty.kind() {
                Kind::Array(element) => Builder::List {
                    offsets: vec![0],
                    valid: Vec::new(),
                    element: Box::new(Builder::of(element)),
                    element_type: element.clone(),
                },
                Kind::Enum(_) => Builder::Text(StringBuilder::new(), TextKind::Utf8),
                Kind::Domain(base) => Builder::of(base),
                // citext and other text-like extension types arrive as text.
                _ if ty.name() == "citext" => Builder::Text(StringBuilder::new(), TextKind::Utf8),
                _ => Builder::Unsupported(ty.name().to_string(), 0),
            },
        }
    }

    pub(super) fn push(&mut self, cell: Option<&[u8]>) -> std::result::Result<(), String> {
        let unreadable = |what: &str| format!("unreadable {what} value");
        match self {
            Builder::Int(b, read) => match cell {
                None => b.append_null(),
                Some(c) => b.append_value(read(c).ok_or_else(|| unreadable("integer"))?),
            },
            Builder::Numeric(v) => v.push(cell.map(numeric_from_sql).transpose()?),
            Builder::Float(b, read) => match cell {
                None => b.append_null(),
                Some(c) => b.append_value(read(c).ok_or_else(|| unreadable("float"))?),
            },
            Builder::Bool(b) => b.append_option(cell.map(|c| c.first() == Some(&1))),
            Builder::Text(b, kind) => match cell {
                None => b.append_null(),
                Some(c) => match kind {
                    TextKind::Utf8 => {
                        b.append_value(std::str::from_utf8(c).map_err(|_| unreadable("text"))?)
                    }
                    TextKind::Jsonb => b.append_value(
                        c.split_first()
                            .filter(|(version, _)| **version == 1)
                            .and_then(|(_, text)| std::str::from_utf8(text).ok())
                            .ok_or_else(|| unreadable("jsonb"))?,
                    ),
                    TextKind::Uuid => {
                        let hex: String = c.iter().map(|x| format!("{x:02x}")).collect();
                        if hex.len() != 32 {
                            return Err(unreadable("uuid"));
                        }
                        b.append_value(format!(
                            "{}-{}-{}-{}-{}",
                            &hex[..8],
                            &hex[8..12],
                            &hex[12..16],
                            &hex[16..20],
                            &hex[20..]
                        ))
                    }
                },
            },
            Builder::Binary(b) => b.append_option(cell),
            Builder::Timestamp(b) => match cell {
                None => b.append_null(),
                Some(c) => {
                    let v = be_i64(c).ok_or_else(|| unreadable("timestamp"))?;
                    // ±infinity are the extremes of i64; the window leaves
                    // them out (not representable), so they arrive only as
                    // fields, where they are out of range anyway.
                    b.append_value(v.saturating_add(PG_EPOCH_MICROS))
                }
            },
            Builder::Date(b) => match cell {
                None => b.append_null(),
                Some(c) => {
                    let v = be_i32(c).ok_or_else(|| unreadable("date"))?;
                    b.append_value(v.saturating_add(PG_EPOCH_DAYS))
                }
            },
            Builder::List {
                offsets,
                valid,
                element,
                element_type: _,
            } => {
                let last = *offsets.last().unwrap_or(&0);
                match cell {
                    None => {
                        valid.push(false);
                        offsets.push(last);
                    }
                    Some(c) => {
                        let elements = array_elements(c)?;
                        let n = i32::try_from(elements.len()).map_err(|_| unreadable("array"))?;
                        for e in elements {
                            element.push(e)?;
                        }
                        valid.push(true);
                        offsets.push(last + n);
                    }
                }
            }
            Builder::Unsupported(name, n) => {
                if cell.is_some() {
                    return Err(format!("type {name} cannot be read"));
                }
                *n += 1;
            }
        }
        Ok(())
    }

    pub(super) fn finish(self) -> ArrayRef {
        match self {
            Builder::Int(mut b, _) => Arc::new(b.finish()),
            Builder::Numeric(values) => numeric_array(&values),
            Builder::Float(mut b, _) => Arc::new(b.finish()),
            Builder::Bool(mut b) => Arc::new(b.finish()),
            Builder::Text(mut b, _) => Arc::new(b.finish()),
            Builder::Binary(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
            Builder::Date(mut b) => Arc::new(b.finish()),
            Builder::List {
                offsets,
                valid,
                element,
                element_type,
            } => {
                let values = element.finish();
                let field = Arc::new(
                    field_of("item", &element_type).with_data_type(values.data_type().clone()),
                );
                let nulls = valid.iter().any(|v| !v).then(|| NullBuffer::from(valid));
                Arc::new(ListArray::new(
                    field,
                    OffsetBuffer::new(offsets.into()),
                    values,
                    nulls,
                ))
            }
            Builder::Unsupported(_, n) => Arc::new(arrow_array::NullArray::new(n)),
        }
    }
}

/// The elements of a one-dimensional array in the binary format (`None`
/// for a NULL element); an empty array has no dimensions.
pub(super) fn array_elements(b: &[u8]) -> std::result::Result<Vec<Option<&[u8]>>, String> {
    let bad = || "unreadable array value".to_string();
    let int = |at: usize| -> std::result::Result<i32, String> {
        be_i32(b.get(at..at + 4).ok_or_else(bad)?).ok_or_else(bad)
    };
    let ndim = int(0)?;
    if ndim == 0 {
        return Ok(Vec::new());
    }
    if ndim != 1 {
        return Err(format!(
            "a {ndim}-dimensional array cannot be a list (Feast lists are flat)"
        ));
    }
    let len = usize::try_from(int(12)?).map_err(|_| bad())?;
    let mut at = 20;
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let n = int(at)?;
        at += 4;
        if n < 0 {
            out.push(None);
        } else {
            let n = n as usize;
            out.push(Some(b.get(at..at + n).ok_or_else(bad)?));
            at += n;
        }
    }
    Ok(out)
}

/// A page's numeric column: Decimal128 at the largest scale of the page
/// when every value fits 38 digits there, else Float64 (NaN, ±inf, huge).
pub(super) fn numeric_array(values: &[Option<Numeric>]) -> ArrayRef {
    let scale = values
        .iter()
        .flatten()
        .map(|n| match n {
            Numeric::Exact { scale, .. } => *scale,
            Numeric::Float(_) => 0,
        })
        .max()
        .unwrap_or(0);
    let exact: Option<Vec<Option<i128>>> = values
        .iter()
        .map(|v| match v {
            None => Some(None),
            Some(Numeric::Exact { unscaled, scale: s }) => {
                let x = unscaled.checked_mul(10i128.checked_pow(scale - s)?)?;
                (x.abs() < MAX_DECIMAL).then_some(Some(x))
            }
            Some(Numeric::Float(_)) => None,
        })
        .collect();
    match exact.filter(|_| scale <= 38) {
        Some(cells) => Arc::new(
            Decimal128Array::from(cells)
                .with_precision_and_scale(38, scale as i8)
                .expect("scale checked"),
        ),
        None => Arc::new(Float64Array::from(
            values
                .iter()
                .map(|v| {
                    v.map(|n| match n {
                        Numeric::Exact { unscaled, scale } => {
                            unscaled as f64 / 10f64.powi(scale as i32)
                        }
                        Numeric::Float(f) => f,
                    })
                })
                .collect::<Vec<_>>(),
        )),
    }
}
