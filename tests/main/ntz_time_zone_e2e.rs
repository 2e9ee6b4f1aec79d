//! End to end through the built binary and the embedded Parquet warehouse:
//! timestamps without a zone (Arrow `Timestamp(µs, None)`, described as
//! `TIMESTAMP_NTZ(9)`) are wall times read in the view's
//! `batch_source.ntz_time_zone`, else `warehouse.ntz_time_zone`, else UTC.
//! Proves the instants that land in Redis (DST both ways included), that an
//! incremental window west of UTC still finds a late row, that the warehouse
//! default applies to views without their own zone, and that bad zones are
//! refused naming the key.
//!
//! Assumes `redis-server` on PATH (tests/support).

use serde_json::{json, Value as Json};

use crate::fixtures::{stamped, stderr, stdout, ParquetWorld, Rows};

/// Microseconds of a wall time `YYYY-MM-DD HH:MM:SS`, counted as if it were UTC.
fn wall(s: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

fn view(name: &str, table: &str, zone: Option<&str>) -> Json {
    let mut source = json!({"name": name, "table": table, "timestamp_field": "updated_at"});
    if let Some(z) = zone {
        source["ntz_time_zone"] = json!(z);
    }
    json!({
        "name": name, "version": 1,
        "entity": {"name": "domain_userid"},
        "batch_source": source,
        "fields": [{"name": "VISITS", "type": "int32"}],
        "online": true
    })
}

/// Tables `EVENTS` (read by a Berlin view and a view without a zone) and
/// `NY_EVENTS` (a New York view), two rows per page.
fn world() -> ParquetWorld {
    let w = ParquetWorld::new();
    for t in ["EVENTS", "NY_EVENTS"] {
        w.table_dir(t);
    }
    w.write_view(
        "views.json",
        &json!([
            view("berlin_events", "events", Some("Europe/Berlin")),
            view("plain_events", "events", None),
            view("ny_events", "ny_events", Some("America/New_York")),
        ]),
    );
    w.write_config(
        &w.config()
            .set("sync.lookback", "10m")
            .set("sync.page_rows", 2),
    );
    w
}

/// Writes one file of `table`: (entity, wall time, VISITS), one row group per row.
fn write(w: &ParquetWorld, table: &str, file: &str, rows: &[(&str, &str, i32)]) {
    let columns = Rows::default()
        .text("DOMAIN_USERID", rows.iter().map(|r| Some(r.0)))
        .wall_micros("UPDATED_AT", rows.iter().map(|r| wall(r.1)))
        .int32("VISITS", rows.iter().map(|r| r.2));
    w.write_table(table, file, columns, Some(1));
}

/// `event_timestamp` and VISITS of each entity, as `materializer profile` prints them.
fn profiles(
    w: &ParquetWorld,
    env: &[(&str, &str)],
    view: &str,
    entities: &[&str],
) -> Vec<(Json, Json)> {
    stamped(&w.profile_with(env, view, entities), "VISITS")
}

fn at(ts: &str, visits: i32) -> (Json, Json) {
    (json!(ts), json!(visits))
}

#[test]
fn ntz_wall_times_land_as_the_instants_of_their_zone() {
    let w = world();
    write(
        &w,
        "EVENTS",
        "part-0.parquet",
        &[
            ("summer", "2024-07-15 12:00:00", 1),
            ("winter", "2024-01-15 12:00:00", 2),
            // Clocks go back at 03:00 CEST: 02:30 happens twice, the first one counts.
            ("fall_back", "2024-10-27 02:30:00", 3),
            // Clocks go forward at 02:00 CET: 02:30 does not exist, it is 03:30 CEST.
            ("spring_forward", "2024-03-31 02:30:00", 4),
        ],
    );
    write(
        &w,
        "NY_EVENTS",
        "part-0.parquet",
        &[("n1", "2024-07-15 12:00:00", 1)],
    );
    w.sync();

    let entities = ["summer", "winter", "fall_back", "spring_forward"];
    assert_eq!(
        profiles(&w, &[], "berlin_events", &entities),
        vec![
            at("2024-07-15T10:00:00Z", 1),
            at("2024-01-15T11:00:00Z", 2),
            at("2024-10-27T00:30:00Z", 3),
            at("2024-03-31T01:30:00Z", 4),
        ]
    );
    // The same rows through a view without a zone: UTC, as before.
    assert_eq!(
        profiles(&w, &[], "plain_events", &entities),
        vec![
            at("2024-07-15T12:00:00Z", 1),
            at("2024-01-15T12:00:00Z", 2),
            at("2024-10-27T02:30:00Z", 3),
            at("2024-03-31T02:30:00Z", 4),
        ]
    );
    assert_eq!(
        profiles(&w, &[], "ny_events", &["n1"]),
        vec![at("2024-07-15T16:00:00Z", 1)]
    );

    // Incremental, west of UTC: the watermark is 16:00Z, the window starts at
    // 15:50Z. A late row stamped 11:55 in New York (15:55Z) is inside it,
    // though its wall time is hours before the window's UTC bound.
    write(
        &w,
        "NY_EVENTS",
        "part-1.parquet",
        &[("n2", "2024-07-15 11:55:00", 2)],
    );
    w.sync();
    assert_eq!(
        profiles(&w, &[], "ny_events", &["n2"]),
        vec![at("2024-07-15T15:55:00Z", 2)]
    );

    // warehouse.ntz_time_zone is the zone of views without their own (a fresh
    // project and state, so the rows are written anew); a view's own zone wins.
    let berlin_default = [
        ("MATERIALIZER__WAREHOUSE__NTZ_TIME_ZONE", "Europe/Berlin"),
        ("MATERIALIZER__PROFILES__PROJECT", "berlin_default"),
        ("MATERIALIZER__PROFILES__STATE_PREFIX", "berlin_default:"),
    ];
    w.sync_with(&[], &berlin_default);
    assert_eq!(
        profiles(&w, &berlin_default, "plain_events", &["summer", "winter"]),
        vec![at("2024-07-15T10:00:00Z", 1), at("2024-01-15T11:00:00Z", 2)]
    );
    assert_eq!(
        profiles(&w, &berlin_default, "ny_events", &["n1"]),
        vec![at("2024-07-15T16:00:00Z", 1)]
    );
}

#[test]
fn unknown_zones_are_refused_naming_the_key() {
    let w = world();
    let out = w.materializer(
        &["check"],
        &[("MATERIALIZER__WAREHOUSE__NTZ_TIME_ZONE", "Europe/Berlln")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("warehouse.ntz_time_zone") && lines[0].contains("Europe/Berlln"),
        "{err}"
    );

    let bad = w.dir.join("bad.json");
    std::fs::write(
        &bad,
        view("bad_zone", "events", Some("Mars/Olympus")).to_string(),
    )
    .unwrap();
    let out = w.materializer(&["apply", bad.to_str().unwrap()], &[]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("batch_source.ntz_time_zone") && said.contains("Mars/Olympus"),
        "{said}"
    );
}
