//! Element encoders: one per Feast scalar type, shared by scalar columns, native
//! list children and JSON list elements.
//!
//! # Contract
//!
//! Promises:
//! - each [`Element`] says which kinds of cell feed it (numbers, instants,
//!   booleans, text, binary) and converts one cell by the conversion rules of
//!   the module [`super`], so a scalar column, a native list's elements and a
//!   JSON list's elements of the same field type follow the same rules;
//! - the values are written only by the `push_*` encoders of
//!   [`crate::profiles::feast`];
//! - [`visit`] feeds every row of a shape, in order, or nothing at all when the
//!   shape cannot feed the element type.
//!
//! Assumes the caller builds the surrounding `Value` bookkeeping (row ends,
//! skips; see `encode.rs`).

use std::borrow::Cow;

use super::lists::parse_timestamp_text;
use super::numbers::Number;
use super::shapes::{
    each_accessor, each_binary, each_instant, each_primitive, each_text, with_numbers, Shape,
    NANOS_PER_SECOND,
};
use super::{Cell, SkipReason};
use crate::profiles::feast;

/// A Feast scalar type: which column shapes feed it, how each kind of cell converts,
/// and how its values and lists are encoded. The same rules serve scalar columns,
/// native list children and JSON list elements.
pub(super) trait Element {
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

pub(super) struct Int32s;
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

pub(super) struct Int64s;
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

pub(super) struct Doubles;
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

pub(super) struct Floats;
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

pub(super) struct Bools;
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

pub(super) struct Strings;
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

pub(super) struct Bytes;
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
pub(super) struct UnixSeconds;
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
pub(super) fn visit<'a, E: Element>(
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
