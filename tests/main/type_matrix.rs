//! Every field type, from its natural column type in every SQL warehouse kind
//! ([`Kind::ALL`]: one body, a loop over kinds), through the whole
//! path (warehouse → decode → newest-wins write → Redis) and back out through
//! the real Feast SDK, with the edges that break converters: int32 bounds and
//! overflow, scaled NUMBERs, NaN and ±inf, empty and multi-megabyte strings,
//! non-ASCII and quote/backslash text, empty binaries, timestamps before 1970,
//! at year 1 and with time zones, empty lists, NULL inside lists, big integers
//! inside JSON arrays. Values that cannot be represented are skipped per field
//! (the rest of the row lands), counted by reason in the run record, and
//! logged with their column.
//!
//! One `materializer sync` of the built binary, one `feast_read.py` call (the
//! Feast SDK costs ~7 s per call). Assumes the harness in `tests/support` and
//! the Feast venv from `scripts/python-env.sh feast`.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Value as Json};

use crate::fixtures::warehouse_world::{Generated, Kind, Lit, Mode, SqlType};
use crate::fixtures::{feast_read, stderr, stdout};

const TABLE: &str = "TYPES";
const VIEW: &str = "type_matrix";

/// One row per entity; each column below has one cell per entity, in this order.
const ENTITIES: [&str; 5] = [
    "typical",
    "low-edges",
    "high-édges",
    "unrepresentable",
    "nulls",
];

/// What Feast must return for one cell.
#[derive(Clone)]
enum Expect {
    /// The value as `feast_read.py` renders it, and the `Value` oneof on the wire.
    Value(Json),
    /// SQL NULL: Feast's null (an empty `Value`).
    Null,
    /// Not representable: the field is skipped (nothing stored, so Feast reads
    /// null) and counted under this reason.
    Skip(&'static str),
}

use Expect::{Null, Skip, Value};

fn v(j: Json) -> Expect {
    Value(j)
}

fn b64(bytes: &[u8]) -> Json {
    json!({ "bytes_b64": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

/// A column of the table: its type, the view field type it feeds, and per
/// entity the value inserted and what Feast must read.
struct Column {
    name: &'static str,
    sql_type: SqlType,
    field_type: &'static str,
    cells: [(Lit, Expect); 5],
}

fn col(
    name: &'static str,
    sql_type: SqlType,
    field_type: &'static str,
    cells: [(Lit, Expect); 5],
) -> Column {
    Column {
        name,
        sql_type,
        field_type,
        cells,
    }
}

/// A numeric literal.
fn n(text: &str) -> Lit {
    Lit::Number(text.into())
}

/// The `Value` oneof Feast reports for a field type.
fn value_kind(field_type: &str) -> String {
    format!("{field_type}_val")
}

fn ts(text: &str, ty: SqlType) -> Lit {
    Lit::Timestamp(text.into(), ty)
}

fn json_doc(text: &str) -> Lit {
    Lit::Json(text.into())
}

/// Two megabytes and more of multi-byte text.
fn big_text() -> String {
    "ü日x".repeat(700_000)
}

const AWKWARD: &str = "q'uote \\ back \"dq\" 🎉 ü";

// One column per block, one cell (entity) per line: kept as a table.
#[rustfmt::skip]
fn matrix() -> Vec<Column> {
    let f32_of = |x: f64| json!(x as f32 as f64);
    vec![
        col("I32", SqlType::Int, "int32", [
            (n("42"), v(json!(42))),
            (n("-2147483648"), v(json!(i32::MIN))),
            (n("2147483647"), v(json!(i32::MAX))),
            (n("2147483648"), Skip("overflow")),
            (Lit::Null, Null),
        ]),
        col("I32_SCALED", SqlType::Decimal(10, 2), "int32", [
            (n("12.00"), v(json!(12))),
            (n("-7.00"), v(json!(-7))),
            (n("99999999.00"), v(json!(99_999_999))),
            (n("12.50"), Skip("not_integer")),
            (Lit::Null, Null),
        ]),
        col("I64", SqlType::Int, "int64", [
            (n("1234567890123"), v(json!(1_234_567_890_123i64))),
            (n("-9223372036854775808"), v(json!(i64::MIN))),
            (n("9223372036854775807"), v(json!(i64::MAX))),
            (Lit::Null, Null),
            (Lit::Null, Null),
        ]),
        col("I64_SCALED", SqlType::Decimal(38, 2), "int64", [
            (n("5.00"), v(json!(5))),
            (n("-9223372036854775808.00"), v(json!(i64::MIN))),
            (n("9223372036854775807.00"), v(json!(i64::MAX))),
            (n("123456789012345678901.00"), Skip("overflow")),
            (Lit::Null, Null),
        ]),
        col("DBL", SqlType::Float, "double", [
            (n("0.1"), v(json!(0.1))),
            (Lit::FloatNaN, v(json!("NaN"))),
            (Lit::FloatInf, v(json!("Infinity"))),
            (Lit::FloatNegInf, v(json!("-Infinity"))),
            (Lit::Null, Null),
        ]),
        col("DBL_FROM_NUMBER", SqlType::Decimal(10, 2), "double", [
            (n("0.10"), v(json!(0.1))),
            (n("-12345678.99"), v(json!(-12_345_678.99))),
            (n("0.00"), v(json!(0.0))),
            (Lit::Null, Null),
            (Lit::Null, Null),
        ]),
        col("FLT", SqlType::Float, "float", [
            (n("0.1"), v(f32_of(0.1))),
            (Lit::FloatNegInf, v(json!("-Infinity"))),
            (Lit::FloatNaN, v(json!("NaN"))),
            (n("1e300"), Skip("overflow")),
            (Lit::Null, Null),
        ]),
        Column { name: "STR", sql_type: SqlType::Text, field_type: "string", cells: [
            (Lit::Text("hello".into()), v(json!("hello"))),
            (Lit::Text(String::new()), v(json!(""))),
            (Lit::Repeat("ü日x".into(), 700_000), v(json!(big_text()))),
            (Lit::Text(AWKWARD.into()), v(json!(AWKWARD))),
            (Lit::Null, Null),
        ] },
        col("BYT", SqlType::Binary, "bytes", [
            (Lit::Bytes(b"hello".to_vec()), v(b64(b"hello"))),
            (Lit::Bytes(Vec::new()), v(b64(b""))),
            (Lit::Bytes(vec![0, 0xff, 0x80]), v(b64(&[0, 0xff, 0x80]))),
            (Lit::Null, Null),
            (Lit::Null, Null),
        ]),
        col("FLAG", SqlType::Bool, "bool", [
            (Lit::Bool(true), v(json!(true))),
            (Lit::Bool(false), v(json!(false))),
            (Lit::Bool(true), v(json!(true))),
            (Lit::Null, Null),
            (Lit::Null, Null),
        ]),
        Column { name: "TS_NTZ", sql_type: SqlType::TimestampNtz, field_type: "unix_timestamp", cells: [
            // Whole seconds, floored (as Feast's own scalar materialization does).
            (
                ts("2024-05-01 10:00:00.999", SqlType::TimestampNtz),
                v(json!("2024-05-01T10:00:00+00:00")),
            ),
            (
                ts("1960-05-01 12:00:00", SqlType::TimestampNtz),
                v(json!("1960-05-01T12:00:00+00:00")),
            ),
            (
                ts("1969-12-31 23:59:59.5", SqlType::TimestampNtz),
                v(json!("1969-12-31T23:59:59+00:00")),
            ),
            (
                ts("0001-01-01 00:00:00", SqlType::TimestampNtz),
                v(json!("0001-01-01T00:00:00+00:00")),
            ),
            (Lit::Null, Null),
        ] },
        Column { name: "TS_TZ", sql_type: SqlType::TimestampTz, field_type: "unix_timestamp", cells: [
            (
                ts("2024-01-01 10:00:00 +05:30", SqlType::TimestampTz),
                v(json!("2024-01-01T04:30:00+00:00")),
            ),
            (
                ts("1965-06-01 00:00:00 -08:00", SqlType::TimestampTz),
                v(json!("1965-06-01T08:00:00+00:00")),
            ),
            (
                ts("2024-03-10 02:30:00 +00:00", SqlType::TimestampTz),
                v(json!("2024-03-10T02:30:00+00:00")),
            ),
            (Lit::Null, Null),
            (Lit::Null, Null),
        ] },
        Column { name: "TS_LTZ", sql_type: SqlType::TimestampLtz, field_type: "unix_timestamp", cells: [
            (
                ts("2024-01-01 10:00:00 +01:00", SqlType::TimestampLtz),
                v(json!("2024-01-01T09:00:00+00:00")),
            ),
            (
                ts("1950-01-01 00:00:00", SqlType::TimestampLtz),
                v(json!("1950-01-01T00:00:00+00:00")),
            ),
            (Lit::Null, Null),
            (Lit::Null, Null),
            (Lit::Null, Null),
        ] },
        Column { name: "L_I32", sql_type: SqlType::JsonArray, field_type: "int32_list", cells: [
            (json_doc("[1, -2, 2147483647]"), v(json!([1, -2, i32::MAX]))),
            (json_doc("[]"), v(json!([]))),
            (json_doc("[-2147483648]"), v(json!([i32::MIN]))),
            (json_doc("[1, null, 3]"), Skip("null_in_list")),
            (Lit::Null, Null),
        ] },
        Column { name: "L_I64", sql_type: SqlType::JsonArray, field_type: "int64_list", cells: [
            // Beyond f64's exact integers: must not pass through a float.
            (
                json_doc("[9007199254740993, -1]"),
                v(json!([9_007_199_254_740_993i64, -1])),
            ),
            (json_doc("[]"), v(json!([]))),
            (json_doc("[9223372036854775807]"), v(json!([i64::MAX]))),
            (json_doc(r#"[1, "x"]"#), Skip("unrepresentable")),
            (Lit::Null, Null),
        ] },
        Column { name: "L_DBL", sql_type: SqlType::Json, field_type: "double_list", cells: [
            (json_doc("[1.5, 0.1]"), v(json!([1.5, 0.1]))),
            (
                json_doc(r#"["NaN", "Infinity", "-Infinity"]"#),
                v(json!(["NaN", "Infinity", "-Infinity"])),
            ),
            (json_doc("[]"), v(json!([]))),
            (json_doc("5"), Skip("invalid_list")),
            (Lit::Null, Null),
        ] },
        Column { name: "L_FLT", sql_type: SqlType::JsonArray, field_type: "float_list", cells: [
            (json_doc("[0.1, -2.5]"), v(json!([f32_of(0.1), -2.5]))),
            (json_doc("[]"), v(json!([]))),
            (json_doc(r#"["NaN"]"#), v(json!(["NaN"]))),
            (json_doc("[1e300]"), Skip("overflow")),
            (Lit::Null, Null),
        ] },
        Column { name: "L_STR", sql_type: SqlType::JsonArray, field_type: "string_list", cells: [
            (
                json_doc(r#"["ü", "", "日本"]"#),
                v(json!(["ü", "", "日本"])),
            ),
            (json_doc("[]"), v(json!([]))),
            (
                json_doc(&serde_json::to_string(&[AWKWARD]).unwrap()),
                v(json!([AWKWARD])),
            ),
            (json_doc(r#"["a", null]"#), Skip("null_in_list")),
            (Lit::Null, Null),
        ] },
        Column { name: "L_BYT", sql_type: SqlType::JsonArray, field_type: "bytes_list", cells: [
            (
                json_doc(r#"["hi", "ü"]"#),
                v(json!([b64(b"hi"), b64("ü".as_bytes())])),
            ),
            (json_doc("[]"), v(json!([]))),
            (json_doc(r#"[""]"#), v(json!([b64(b"")]))),
            (json_doc("[1]"), Skip("unrepresentable")),
            (Lit::Null, Null),
        ] },
        Column { name: "L_BOOL", sql_type: SqlType::JsonArray, field_type: "bool_list", cells: [
            (json_doc("[true, false]"), v(json!([true, false]))),
            (json_doc("[]"), v(json!([]))),
            (json_doc("[false]"), v(json!([false]))),
            (json_doc("[true, null]"), Skip("null_in_list")),
            (Lit::Null, Null),
        ] },
        Column { name: "L_TS", sql_type: SqlType::JsonArray, field_type: "unix_timestamp_list", cells: [
            (
                json_doc(r#"["2024-01-01", "1960-01-01 00:00:00", 1700000000]"#),
                v(json!([
                    "2024-01-01T00:00:00+00:00",
                    "1960-01-01T00:00:00+00:00",
                    "2023-11-14T22:13:20+00:00"
                ])),
            ),
            (json_doc("[]"), v(json!([]))),
            (
                json_doc(r#"["2024-01-01T10:00:00+05:30"]"#),
                v(json!(["2024-01-01T04:30:00+00:00"])),
            ),
            (json_doc(r#"["not a time"]"#), Skip("unrepresentable")),
            (Lit::Null, Null),
        ] },
    ]
}

fn short(j: &Json) -> String {
    let s = j.to_string();
    if s.len() > 120 {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &s[..end], s.len())
    } else {
        s
    }
}

/// The stdout and stderr of a command that must have succeeded (quoted
/// shortened on failure: some values are megabytes).
fn ok(out: std::process::Output, kind: Kind) -> (String, String) {
    let (printed, err) = (stdout(&out), stderr(&out));
    assert!(
        out.status.success(),
        "{kind:?}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        &printed[..printed.len().min(4000)],
        &err[..err.len().min(4000)]
    );
    (printed, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_field_type_round_trips_through_feast_with_its_edges() {
    for kind in Kind::ALL {
        round_trip(kind).await;
    }
}

/// The whole matrix against one warehouse kind.
async fn round_trip(kind: Kind) {
    let matrix = matrix();
    assert_eq!(
        matrix
            .iter()
            .map(|c| c.field_type)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        16,
        "the matrix covers all 16 field types"
    );

    let w = kind.world(Mode::Shared).await;
    let columns: Vec<String> = matrix
        .iter()
        .map(|c| format!(r#""{}" {}"#, c.name, w.sql_type(c.sql_type)))
        .collect();
    let mut statements = vec![format!(
        r#"CREATE TABLE "{TABLE}" ("DOMAIN_USERID" {}, "UPDATED_AT" {}, {})"#,
        w.sql_type(SqlType::Text),
        w.sql_type(SqlType::TimestampNtz),
        columns.join(", ")
    )];
    let stamped = |at: &str| w.literal(&Lit::Timestamp(at.into(), SqlType::TimestampNtz));
    for (i, entity) in ENTITIES.iter().enumerate() {
        let cells: Vec<String> = matrix.iter().map(|c| w.literal(&c.cells[i].0)).collect();
        statements.push(format!(
            r#"INSERT INTO "{TABLE}" SELECT {}, {}, {}"#,
            w.literal(&Lit::Text(entity.to_string())),
            stamped("2024-05-01 10:00:00"),
            cells.join(", ")
        ));
    }
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    w.exec(&refs).await;

    let fields: Vec<Json> = matrix
        .iter()
        .map(|c| json!({"name": c.name, "type": c.field_type}))
        .collect();
    let mut source = w.source(TABLE, "UPDATED_AT");
    source["name"] = json!("types_source");
    let view = json!({
        "name": VIEW, "version": 1, "entity": {"name": "domain_userid"},
        "batch_source": source,
        "fields": fields, "online": true
    });
    std::fs::write(w.views().join("view.json"), view.to_string()).unwrap();
    w.write_config(
        &w.config()
            .set("sync.page_rows", 2)
            .set("warehouse.query_timeout", "60s"),
    );

    let materializer = |args: &[&str]| ok(w.materializer(args, &[]), kind);
    let (sync_out, sync_log) = materializer(&["sync"]);

    // Unrepresentable values: skipped per field, counted by reason in the run
    // record, and logged naming the column.
    let mut want_skips: BTreeMap<String, u64> = BTreeMap::new();
    let mut skipped_columns = Vec::new();
    for c in &matrix {
        for (_, e) in &c.cells {
            if let Skip(reason) = e {
                *want_skips.entry(reason.to_string()).or_default() += 1;
                skipped_columns.push((c.name, *reason));
            }
        }
    }
    let (status, _) = materializer(&["status", "--json"]);
    let status: Json = serde_json::from_str(&status).unwrap();
    let last = &status[0]["last_run"];
    assert_eq!(last["status"], json!("ok"), "{kind:?}: {sync_out}");
    assert_eq!(last["rows_read"], json!(ENTITIES.len()), "{kind:?}: {last}");
    assert_eq!(
        last["rows_written"],
        json!(ENTITIES.len()),
        "{kind:?}: {last}"
    );
    assert_eq!(last["skipped"], json!(want_skips), "{kind:?}: {sync_out}");
    for (column, reason) in &skipped_columns {
        assert!(
            sync_log
                .lines()
                .any(|l| l.contains(column) && l.contains(reason)),
            "{kind:?}: no log line names column {column} with reason {reason}:\n{sync_log}"
        );
    }

    // Read everything back through the real Feast SDK, in one call.
    let request = json!({
        "redis": w.redis.url,
        "project": "signals",
        "views": [{"name": VIEW, "version": 1, "entity": {"name": "domain_userid"}, "fields": fields}],
        "entities": ENTITIES,
    });
    let got = feast_read(&request, &w.dir.join("feast_request.json"));

    let mut wrong = Vec::new();
    for c in &matrix {
        for (i, (lit, expect)) in c.cells.iter().enumerate() {
            let value = &got[c.name][i];
            let kind_got = &got["kinds"][c.name][i];
            let (want_value, want_kind) = match expect {
                Value(j) => (j.clone(), json!(value_kind(c.field_type))),
                Null | Skip(_) => (Json::Null, Json::Null),
            };
            if *value != want_value || *kind_got != want_kind {
                wrong.push(format!(
                    "{kind:?}: {} ({} -> {}) of {:?} from `{}`: Feast read {} ({}), expected {} ({})",
                    c.name,
                    w.sql_type(c.sql_type),
                    c.field_type,
                    ENTITIES[i],
                    short(&json!(w.literal(lit))),
                    short(value),
                    kind_got,
                    short(&want_value),
                    want_kind
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Every row carries its event time, microseconds as Feast returns them.
    for (i, e) in ENTITIES.iter().enumerate() {
        assert_eq!(
            got["event_timestamps"]["I32"][i],
            json!("2024-05-01T10:00:00.000000000Z"),
            "{kind:?}: {e}"
        );
    }

    // A newer row whose value does not fit replaces the stored value with
    // null: the profile is the latest row, never a mix of two rows (an older
    // row's value under the newer row's time).
    let newer_cells: Vec<String> = matrix
        .iter()
        .map(|c| match c.name {
            "I32" => "2147483648".to_string(),
            "STR" => w.literal(&Lit::Text("newer".into())),
            _ => "NULL".to_string(),
        })
        .collect();
    w.exec(&[&format!(
        r#"INSERT INTO "{TABLE}" SELECT 'typical', {}, {}"#,
        stamped("2024-05-02 10:00:00"),
        newer_cells.join(", ")
    )])
    .await;
    let (out, _) = materializer(&["sync"]);
    assert!(
        out.contains(" ok ") && out.contains("overflow="),
        "{kind:?}: {out}"
    );
    let (profile, _) = materializer(&["profile", "--view", VIEW, "typical"]);
    let profile: Json = serde_json::from_str(&profile).unwrap();
    assert_eq!(
        profile[0]["event_timestamp"],
        json!("2024-05-02T10:00:00Z"),
        "{profile}"
    );
    assert_eq!(profile[0]["values"]["I32"], Json::Null, "{profile}");
    assert_eq!(profile[0]["values"]["STR"], json!("newer"), "{profile}");
    assert_eq!(profile[0]["values"]["I64"], Json::Null, "{profile}");
}
