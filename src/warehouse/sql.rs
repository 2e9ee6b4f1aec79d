//! Rendering SQL text for Snowflake, whose REST API takes no bind parameters.
//!
//! Promises: an identifier or string from a view definition can only ever be
//! data in the rendered SQL, never syntax: identifiers are double-quoted with
//! `"` doubled; string literals are single-quoted with `'` and `\` doubled
//! (a backslash escapes inside Snowflake string literals). Timestamp literals
//! are built from numbers, never parsed from text, so no session parameter
//! (`TIMESTAMP_INPUT_FORMAT`, `TIMESTAMP_TYPE_MAPPING`, `TIMEZONE`) changes
//! what they mean.

pub use super::TimestampKind;
use super::{Nanos, TableRef};

/// `"name"` with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with `'` and `\` doubled.
pub fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Fully qualified, quoted table name. Parts are the stored (resolved) names.
pub fn table(t: &TableRef) -> String {
    [&t.database, &t.schema]
        .into_iter()
        .flatten()
        .map(|p| ident(p))
        .chain(std::iter::once(ident(&t.table)))
        .collect::<Vec<_>>()
        .join(".")
}

/// A timestamp literal from nanoseconds since the epoch, exact to the
/// nanosecond: `TO_TIMESTAMP_NTZ(1704067200123456789, 9)`. With a number and
/// scale 9, `TO_TIMESTAMP_*` reads nanoseconds since 1970-01-01 00:00:00 UTC,
/// whatever the session's input format, type mapping or time zone: for NTZ the
/// UTC wall time of that instant, for TZ/LTZ the instant itself. `kind` is the
/// column's own ([`TimestampKind::of`]), so the comparison needs no conversion.
pub fn timestamp_literal(nanos: Nanos, kind: TimestampKind) -> String {
    let function = match kind {
        TimestampKind::Ntz => "TO_TIMESTAMP_NTZ",
        TimestampKind::Ltz => "TO_TIMESTAMP_LTZ",
        TimestampKind::Tz => "TO_TIMESTAMP_TZ",
    };
    format!("{function}({nanos}, 9)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_cannot_break_out_of_quotes() {
        assert_eq!(ident("A"), "\"A\"");
        assert_eq!(
            ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
    }

    #[test]
    fn string_literals_double_quotes_and_backslashes() {
        assert_eq!(string_literal("q'001\\ü\""), "'q''001\\\\ü\"'");
    }

    #[test]
    fn timestamps_keep_nanoseconds_and_handle_pre_epoch() {
        assert_eq!(
            timestamp_literal(1_700_000_000_123_456_789, TimestampKind::Ntz),
            "TO_TIMESTAMP_NTZ(1700000000123456789, 9)"
        );
        assert_eq!(
            timestamp_literal(-1, TimestampKind::Tz),
            "TO_TIMESTAMP_TZ(-1, 9)"
        );
        assert_eq!(
            timestamp_literal(Nanos::MIN, TimestampKind::Ltz),
            "TO_TIMESTAMP_LTZ(-9223372036854775808, 9)"
        );
    }

    #[test]
    fn timestamp_literals_do_not_depend_on_the_session_input_format() {
        // No quoted text to parse: TIMESTAMP_INPUT_FORMAT (e.g. 'DD/MM/YYYY HH24:MI:SS')
        // and TIMESTAMP_TYPE_MAPPING never see these literals; the function is
        // the column's own type, so TIMEZONE does not either.
        for (kind, function) in [
            (TimestampKind::Ntz, "TO_TIMESTAMP_NTZ("),
            (TimestampKind::Ltz, "TO_TIMESTAMP_LTZ("),
            (TimestampKind::Tz, "TO_TIMESTAMP_TZ("),
        ] {
            for n in [Nanos::MIN, -1, 0, 1_704_067_200_000_000_001, Nanos::MAX] {
                let lit = timestamp_literal(n, kind);
                assert_eq!(lit, format!("{function}{n}, 9)"));
                assert!(!lit.contains('\'') && !lit.contains("::"), "{lit}");
            }
        }
    }

    #[test]
    fn literal_kind_follows_the_column_type() {
        for (ty, kind) in [
            ("TIMESTAMP_NTZ(9)", TimestampKind::Ntz),
            ("DATE", TimestampKind::Ntz),
            ("TIMESTAMP_LTZ(3)", TimestampKind::Ltz),
            ("timestamp_ltz", TimestampKind::Ltz),
            ("TIMESTAMP WITH LOCAL TIME ZONE", TimestampKind::Ltz),
            ("TIMESTAMP_TZ(9)", TimestampKind::Tz),
            ("TIMESTAMP WITH TIME ZONE", TimestampKind::Tz),
            ("TIMESTAMPTZ", TimestampKind::Tz),
        ] {
            let column_type = super::super::snowflake::column_type(ty);
            assert_eq!(TimestampKind::of(&column_type), kind, "{ty}");
        }
    }

    #[test]
    fn tables_are_qualified_and_quoted() {
        let t = TableRef {
            database: Some("DB".into()),
            schema: None,
            table: "my table".into(),
        };
        assert_eq!(table(&t), "\"DB\".\"my table\"");
    }
}
