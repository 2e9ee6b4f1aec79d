//! Rendering SQL text for Snowflake, whose REST API takes no bind parameters.
//!
//! Promises: an identifier or string from a view definition can only ever be
//! data in the rendered SQL, never syntax: identifiers are double-quoted with
//! `"` doubled; string literals are single-quoted with `'` and `\` doubled
//! (a backslash escapes inside Snowflake string literals).

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

/// A timestamp literal with nanosecond precision, as UTC wall time:
/// `'2024-01-02 03:04:05.123456789'::TIMESTAMP_NTZ`.
/// Zoned columns (`TIMESTAMP_TZ` / `TIMESTAMP_LTZ`) get an explicit `+00:00`
/// and the matching cast, so the comparison is between instants.
pub fn timestamp_literal(nanos: Nanos, zoned: bool) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    let dt = chrono::DateTime::from_timestamp(secs, sub).expect("i64 nanos are in chrono's range");
    let wall = dt.format("%Y-%m-%d %H:%M:%S%.9f");
    if zoned {
        format!("'{wall} +00:00'::TIMESTAMP_TZ")
    } else {
        format!("'{wall}'::TIMESTAMP_NTZ")
    }
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
            timestamp_literal(1_700_000_000_123_456_789, false),
            "'2023-11-14 22:13:20.123456789'::TIMESTAMP_NTZ"
        );
        assert_eq!(
            timestamp_literal(-1, true),
            "'1969-12-31 23:59:59.999999999 +00:00'::TIMESTAMP_TZ"
        );
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
