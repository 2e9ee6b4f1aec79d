//! End to end through the Snowflake-protocol test server (fakesnow): a window
//! read with one statement (no order, no cursor; it replaced keyset paging,
//! hence the file's name) lands every row. Entities that sort differently as
//! text, by case, by accent and as numbers all land when many rows share one
//! timestamp and pages hold two rows; timestamp literals built from numbers
//! (`TO_TIMESTAMP_NTZ/TZ(<nanos>, 9)`) bound incremental windows of NTZ and TZ
//! columns; NTZ wall times read in a view's `ntz_time_zone` land as the right
//! instants.
//!
//! Assumes the harness in `tests/support` (fakesnow + compatibility proxy,
//! throwaway redis-server).

use serde_json::{json, Value as Json};

use crate::fixtures::{stamped, SnowflakeWorld};

/// A world whose database has `ddl` run in it (schema `SIGNALS`) and `views`
/// (whose `batch_source` is pointed there) in its registry files; pages of two rows.
async fn world(ddl: &[&str], views: &[Json]) -> SnowflakeWorld {
    let w = SnowflakeWorld::shared().await;
    w.sql("SIGNALS", ddl).await;
    let views: Vec<Json> = views
        .iter()
        .cloned()
        .map(|mut v| {
            v["batch_source"]["database"] = json!(w.db);
            v["batch_source"]["schema"] = json!("SIGNALS");
            v
        })
        .collect();
    std::fs::write(w.views().join("views.json"), json!(views).to_string()).unwrap();
    w.write_config(
        &w.config()
            .set("sync.lookback", "10m")
            .set("sync.page_rows", 2),
    );
    w
}

async fn sql(w: &SnowflakeWorld, sql: &str) {
    w.sql("SIGNALS", &[sql]).await;
}

/// (event_timestamp, VISITS) per entity, as `materializer profile` prints them.
fn profiles(w: &SnowflakeWorld, view: &str, entities: &[&str]) -> Vec<(Json, Json)> {
    stamped(&w.profile(view, entities), "VISITS")
}

fn view(name: &str, entity: &str, table: &str, zone: Option<&str>) -> Json {
    let mut source = json!({"name": name, "table": table, "timestamp_field": "updated_at"});
    if let Some(z) = zone {
        source["ntz_time_zone"] = json!(z);
    }
    json!({
        "name": name, "version": 1,
        "entity": {"name": entity},
        "batch_source": source,
        "fields": [{"name": "VISITS", "type": "int32"}],
        "online": true
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn text_and_numeric_entities_page_through_one_shared_timestamp() {
    let w = world(
        &[
            r#"CREATE TABLE "PEOPLE" ("ACCOUNT" VARCHAR, "CUSTOMER_ID" NUMBER(38,0),
               "VISITS" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_NTZ)"#,
        ],
        &[
            view("by_account", "account", "PEOPLE", None),
            view("by_customer", "customer_id", "PEOPLE", None),
        ],
    )
    .await;
    // Twelve rows at one time, two per page: text order ("A" < "B" < "_" < "a"
    // < "ä"), case- or accent-folded order and numeric order ("10" < "2" as
    // text) all differ, so any disagreement with the cursor skips a row.
    let accounts = ["a", "A", "b", "B", "ä", "Ä", "z", "Z", "é", "E", "e", "_"];
    let values: Vec<String> = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| format!("('{a}', {}, {}, '2024-07-15 12:00:00')", i + 1, i + 1))
        .collect();
    sql(
        &w,
        &format!(r#"INSERT INTO "PEOPLE" VALUES {}"#, values.join(", ")),
    )
    .await;
    w.sync();
    let at = |i: usize| (json!("2024-07-15T12:00:00Z"), json!(i + 1));
    assert_eq!(
        profiles(&w, "by_account", &accounts),
        (0..accounts.len()).map(at).collect::<Vec<_>>()
    );
    let ids: Vec<String> = (1..=accounts.len()).map(|i| i.to_string()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        profiles(&w, "by_customer", &ids),
        (0..accounts.len()).map(at).collect::<Vec<_>>()
    );

    // Incremental: the window's bound is a number literal; a newer row and a
    // late one inside the lookback land, and the watermark's rows are re-read.
    sql(
        &w,
        r#"INSERT INTO "PEOPLE" VALUES ('a', 1, 100, '2024-07-15 12:01:00'),
                                       ('new', 13, 13, '2024-07-15 11:55:00')"#,
    )
    .await;
    w.sync();
    assert_eq!(
        profiles(&w, "by_account", &["a", "new", "Z"]),
        vec![
            (json!("2024-07-15T12:01:00Z"), json!(100)),
            (json!("2024-07-15T11:55:00Z"), json!(13)),
            (json!("2024-07-15T12:00:00Z"), json!(8)),
        ]
    );
    assert_eq!(
        profiles(&w, "by_customer", &["1", "13"]),
        vec![
            (json!("2024-07-15T12:01:00Z"), json!(100)),
            (json!("2024-07-15T11:55:00Z"), json!(13)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ntz_in_a_zone_and_tz_columns_window_with_number_literals() {
    let w = world(
        &[
            r#"CREATE TABLE "NTZ_EVENTS" ("DOMAIN_USERID" VARCHAR, "VISITS" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_NTZ)"#,
            r#"CREATE TABLE "TZ_EVENTS" ("DOMAIN_USERID" VARCHAR, "VISITS" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_TZ)"#,
        ],
        &[
            view("ny", "domain_userid", "NTZ_EVENTS", Some("America/New_York")),
            view("plain", "domain_userid", "NTZ_EVENTS", None),
            view("zoned", "domain_userid", "TZ_EVENTS", Some("Europe/Berlin")),
        ],
    )
    .await;
    sql(
        &w,
        r#"INSERT INTO "NTZ_EVENTS" VALUES ('u1', 1, '2024-07-15 12:00:00'),
                                           ('u2', 2, '2024-11-03 01:30:00')"#,
    )
    .await;
    // A zone on a TIMESTAMP_TZ column changes nothing: its values are instants.
    sql(
        &w,
        r#"INSERT INTO "TZ_EVENTS" VALUES ('t1', 1, '2024-07-15 12:00:00+02:00')"#,
    )
    .await;
    w.sync();
    assert_eq!(
        profiles(&w, "ny", &["u1", "u2"]),
        vec![
            (json!("2024-07-15T16:00:00Z"), json!(1)),
            // 01:30 happens twice on 2024-11-03 in New York: the first (EDT) counts.
            (json!("2024-11-03T05:30:00Z"), json!(2)),
        ]
    );
    assert_eq!(
        profiles(&w, "plain", &["u1"]),
        vec![(json!("2024-07-15T12:00:00Z"), json!(1))]
    );
    assert_eq!(
        profiles(&w, "zoned", &["t1"]),
        vec![(json!("2024-07-15T10:00:00Z"), json!(1))]
    );

    // Incremental. ny's watermark is 2024-11-03T05:30Z: a row stamped 01:25 New
    // York time (05:25Z, inside the lookback) is hours before that UTC bound as
    // a wall time, and still lands. zoned's window is bounded by a TZ literal.
    sql(
        &w,
        r#"INSERT INTO "NTZ_EVENTS" VALUES ('u3', 3, '2024-11-03 01:25:00')"#,
    )
    .await;
    sql(
        &w,
        r#"INSERT INTO "TZ_EVENTS" VALUES ('t2', 2, '2024-07-15 09:55:00+00:00'),
                                          ('t3', 3, '2024-07-15 09:40:00+00:00')"#,
    )
    .await;
    w.sync();
    assert_eq!(
        profiles(&w, "ny", &["u3"]),
        vec![(json!("2024-11-03T05:25:00Z"), json!(3))]
    );
    assert_eq!(
        profiles(&w, "zoned", &["t2", "t3"]),
        vec![
            (json!("2024-07-15T09:55:00Z"), json!(2)),
            // Before the window (10:00Z - 10m): not read.
            (Json::Null, Json::Null),
        ]
    );
}
