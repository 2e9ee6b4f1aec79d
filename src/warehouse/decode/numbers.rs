//! Numbers: exact conversions of integer, decimal and float cells to the numeric
//! field types, and their decimal text.
//!
//! # Contract
//!
//! Promises ([`Number`], for every Arrow native numeric type, a raw value counted
//! in 10^-scale units):
//! - `whole` is exact: a fraction (or NaN) is [`SkipReason::NotInteger`], a value
//!   outside i64 (or ±inf) [`SkipReason::Overflow`];
//! - `floor` rounds toward negative infinity (`-0.5` is `-1`);
//! - `double` / `single` round once, correctly, to the nearest f64 / f32 (a
//!   NUMBER(10,2) `0.10` is the float nearest 0.1, not `10.0 / 100.0` rounded
//!   twice); `single` is `Overflow` for a finite value beyond f32;
//! - `render` writes plain decimal text (`-0.05`, never an exponent), used for
//!   entities and log samples.
//!
//! Assumes scales as Snowflake sends them (0..=37, possibly negative for Arrow
//! decimals); any i32 scale is handled without panicking.

use std::fmt::{self, Write as _};

use super::SkipReason;

/// A numeric cell (an integer or decimal counted in 10^-scale units, or a float) and
/// its exact conversions to the numeric field types.
pub(super) trait Number: Copy {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
        Int8Array, UInt64Array,
    };

    use super::super::test_support::*;
    use super::super::*;

    use crate::model::FieldType;
    use crate::profiles::feast::*;

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
}
