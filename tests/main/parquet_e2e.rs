//! End to end on the embedded Parquet warehouse: the built binary syncs a table
//! of real Parquet files into a real Redis, then an incremental run reads only
//! the window: row groups whose statistics end before it are never read (proved
//! by destroying their data pages, footers intact), rows arriving out of order
//! are settled newest-wins, and NULL keys delivered in pages are counted.
//!
//! Assumes `redis-server` on PATH (tests/support).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use crate::fixtures::{stat, stdout, ParquetWorld, Rows};

const VIEW: &str = "web_features";
const FIELDS: [&str; 2] = ["VISITS", "PLAN"];
const MINUTE: i64 = 60;

/// (DOMAIN_USERID, seconds before now for UPDATED_AT, VISITS, PLAN)
type Row<'a> = (Option<&'a str>, Option<i64>, i32, &'a str);

/// A Parquet world with one table, `WEB_EVENTS`, and one view on it.
fn world() -> ParquetWorld {
    let w = ParquetWorld::new();
    w.write_config(
        &w.config()
            .set("sync.lookback", "10m")
            .set("sync.page_rows", 3)
            .set("sync.write_batch", 2),
    );
    w.write_view(
        "web.json",
        &json!({
            "name": VIEW, "version": 1,
            "entity": {"name": "domain_userid"},
            "batch_source": {"name": "web", "database": "ANY", "schema": "ANY",
                             "table": "web_events", "timestamp_field": "updated_at"},
            "fields": [{"name": "VISITS", "type": "int32"}, {"name": "PLAN", "type": "string"}],
            "online": true
        }),
    );
    w
}

/// Writes one file of the table, two rows per row group.
fn write(w: &ParquetWorld, name: &str, rows: &[Row<'_>]) -> PathBuf {
    let rows_of = Rows::default()
        .text("DOMAIN_USERID", rows.iter().map(|r| r.0))
        .int32("VISITS", rows.iter().map(|r| r.2))
        .text("PLAN", rows.iter().map(|r| Some(r.3)))
        .utc_micros(
            "UPDATED_AT",
            rows.iter()
                .map(|r| r.1.map(|ago| (w.now - ago) * 1_000_000)),
        );
    w.write_table("WEB_EVENTS", name, rows_of, Some(2))
}

/// Runs `sync`; returns its line for the view and whether it succeeded.
fn sync(w: &ParquetWorld) -> (bool, String) {
    let out = w.materializer(&["sync"], &[]);
    let stdout = stdout(&out);
    let line = stdout
        .lines()
        .find(|l| l.contains(VIEW))
        .unwrap_or_else(|| {
            panic!(
                "no line for the view\nstdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string();
    (out.status.success(), line)
}

/// What Redis holds for `entity`, decoded from the hash.
async fn profile(w: &ParquetWorld, entity: &str) -> Option<BTreeMap<String, Json>> {
    w.stored_values(&format!("{VIEW}_v1"), "domain_userid", entity, &FIELDS)
        .await
}

async fn assert_profile(w: &ParquetWorld, entity: &str, visits: i32, plan: &str) {
    let p = profile(w, entity)
        .await
        .unwrap_or_else(|| panic!("no profile for {entity}"));
    assert_eq!(
        (p["VISITS"].clone(), p["PLAN"].clone()),
        (json!(visits), json!(plan)),
        "entity {entity}"
    );
}

/// Zeroes everything between the leading magic and the footer: the row groups'
/// data pages are gone, the footer (schema, statistics) still reads.
fn destroy_data_pages(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    assert_eq!(&bytes[n - 4..], b"PAR1");
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    let footer_start = n - 8 - footer;
    bytes[4..footer_start].fill(0);
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_table_syncs_then_incremental_run_skips_untouched_row_groups() {
    let w = world();
    let old = write(
        &w,
        "part-0.parquet",
        &[
            (Some("u1"), Some(180 * MINUTE), 1, "free"),
            (Some("u2"), Some(170 * MINUTE), 2, "free"),
            (None, Some(165 * MINUTE), 3, "free"),
            (Some("u3"), None, 4, "free"),
            (Some("u2"), Some(160 * MINUTE), 5, "pro"),
        ],
    );
    // Newer than the old file; u1's newer row comes before its older one in
    // the file, so the older one meets it in a later page and must lose.
    write(
        &w,
        "part-1.parquet",
        &[
            (Some("u4"), Some(100 * MINUTE), 6, "free"),
            (Some("u1"), Some(61 * MINUTE), 7, "pro"),
            (Some("u5"), Some(60 * MINUTE), 8, "team"),
            (Some("u1"), Some(62 * MINUTE), 9, "stale"),
        ],
    );
    assert!(
        w.materializer(&["check"], &[]).status.success(),
        "check passes on a Parquet table"
    );

    let (ok, line) = sync(&w);
    assert!(ok, "{line}");
    assert_eq!(stat(&line, "read"), "9", "{line}");
    assert!(
        line.contains("null_entity=1") && line.contains("null_timestamp=1"),
        "NULL keys delivered in pages are counted: {line}"
    );
    assert_profile(&w, "u1", 7, "pro").await;
    assert_profile(&w, "u2", 5, "pro").await;
    assert_profile(&w, "u4", 6, "free").await;
    assert_profile(&w, "u5", 8, "team").await;
    assert_eq!(profile(&w, "u3").await, None);

    // The watermark is 60 minutes ago, the window starts 70 minutes ago. The
    // old file ends 160 minutes ago: destroy its data so reading it would fail.
    destroy_data_pages(&old);
    write(
        &w,
        "part-2.parquet",
        &[
            (Some("u2"), Some(MINUTE), 10, "team"),
            (None, Some(MINUTE), 11, "free"),
            // Late, inside the lookback, but older than what u5 holds: stale.
            (Some("u5"), Some(65 * MINUTE), 12, "late"),
            (Some("u6"), Some(2 * MINUTE), 13, "free"),
        ],
    );
    let (ok, line) = sync(&w);
    assert!(ok, "the untouched row groups were read: {line}");
    // part-1's row groups: [u4 @100m, u1 @61m] straddles the window (u4 is
    // filtered out), [u5 @60m, u1 @62m] is inside it; then part-2's 4 rows.
    assert_eq!(stat(&line, "read"), "7", "{line}");
    assert!(line.contains("null_entity=1"), "{line}");
    assert!(!line.contains("null_timestamp"), "{line}");
    assert_profile(&w, "u2", 10, "team").await;
    assert_profile(&w, "u5", 8, "team").await;
    assert_profile(&w, "u6", 13, "free").await;
    assert_profile(&w, "u1", 7, "pro").await;

    // A full read does touch the destroyed file, and says which one.
    assert!(w
        .materializer(&["reset", "--view", VIEW], &[])
        .status
        .success());
    let (ok, line) = sync(&w);
    assert!(!ok && line.contains("part-0.parquet"), "{line}");
}
