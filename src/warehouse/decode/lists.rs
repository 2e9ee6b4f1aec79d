//! JSON lists: Snowflake ARRAY / VARIANT cells (and VARCHAR holding JSON) read as
//! Feast lists, and the timestamp texts found inside them.
//!
//! # Contract
//!
//! Promises:
//! - [`encode_json_list`] appends one cell's list `Value` when the text is a JSON
//!   array whose every element feeds the element type, appends nothing for a JSON
//!   `null` document (a NULL cell), and otherwise gives the first bad element's
//!   [`SkipReason`], or [`SkipReason::InvalidList`] for text that is not one JSON
//!   array; elements convert straight to the element type, without a JSON tree;
//! - Snowflake's renderings that JSON lacks are understood: `undefined` (a SQL
//!   NULL element) and bare `NaN` / `Infinity` / `-Infinity`;
//! - [`parse_timestamp_text`] reads `YYYY-MM-DD[( |T)HH:MM[:SS[.f]]][ ][Z|±HH[:MM]|±HHMM]`
//!   (no offset is UTC) and nothing else.
//!
//! Assumes text as Snowflake prints ARRAY / VARIANT values (pretty-printed JSON,
//! plus the bare words above).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::elements::Element;
use super::shapes::NANOS_PER_SECOND;
use super::SkipReason;

/// Encodes one JSON-text list cell into `out`. Only the error path allocates beyond
/// `scratch` (and strings with escapes).
pub(super) fn encode_json_list<'a, E: Element>(
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
pub(super) fn parse_timestamp_text(text: &str) -> Option<i128> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::StringArray;

    use super::super::test_support::*;
    use super::super::*;
    use super::*;
    use crate::model::FieldType;
    use crate::profiles::feast::*;

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
