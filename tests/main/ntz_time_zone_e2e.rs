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

mod support;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use serde_json::{json, Value as Json};
use support::{materializer_bin, scratch_dir, RedisServer};

struct World {
    _redis: RedisServer,
    dir: PathBuf,
    config: PathBuf,
}

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

impl World {
    fn new() -> World {
        let redis = RedisServer::start();
        let dir = scratch_dir("ntz-zone-e2e");
        for t in ["EVENTS", "NY_EVENTS"] {
            std::fs::create_dir_all(dir.join("warehouse").join(t)).unwrap();
        }
        std::fs::create_dir_all(dir.join("views")).unwrap();
        let views = json!([
            view("berlin_events", "events", Some("Europe/Berlin")),
            view("plain_events", "events", None),
            view("ny_events", "ny_events", Some("America/New_York")),
        ]);
        std::fs::write(dir.join("views/views.json"), views.to_string()).unwrap();
        let config = dir.join("materializer.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[sync]
lookback = "10m"
page_rows = 2
[warehouse]
kind = "parquet"
path = "warehouse"
[profiles]
redis_url = "{}"
[registry]
files = ["views/*.json"]
[log]
format = "text"
"#,
                redis.url
            ),
        )
        .unwrap();
        World {
            _redis: redis,
            dir,
            config,
        }
    }

    /// Writes one file of `table`: (entity, wall time, VISITS), one row group per row.
    fn write(&self, table: &str, file: &str, rows: &[(&str, &str, i32)]) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("DOMAIN_USERID", DataType::Utf8, true),
            Field::new(
                "UPDATED_AT",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("VISITS", DataType::Int32, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| wall(r.1)),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_size(1)
            .build();
        let path = self.dir.join("warehouse").join(table).join(file);
        let mut w =
            ArrowWriter::try_new(File::create(&path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
        std::process::Command::new(materializer_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .output()
            .expect("run materializer")
    }

    fn sync(&self, env: &[(&str, &str)]) {
        let out = self.run(env, &["sync"]);
        assert!(
            out.status.success(),
            "sync failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `event_timestamp` and VISITS of each entity, as `materializer profile` prints them.
    fn profiles(&self, env: &[(&str, &str)], view: &str, entities: &[&str]) -> Vec<(Json, Json)> {
        let mut args = vec!["profile", "--view", view];
        args.extend_from_slice(entities);
        let out = self.run(env, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Vec<Json> = serde_json::from_slice(&out.stdout).unwrap();
        printed
            .iter()
            .map(|p| (p["event_timestamp"].clone(), p["values"]["VISITS"].clone()))
            .collect()
    }
}

fn at(ts: &str, visits: i32) -> (Json, Json) {
    (json!(ts), json!(visits))
}

#[test]
fn ntz_wall_times_land_as_the_instants_of_their_zone() {
    let w = World::new();
    w.write(
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
    w.write(
        "NY_EVENTS",
        "part-0.parquet",
        &[("n1", "2024-07-15 12:00:00", 1)],
    );
    w.sync(&[]);

    let entities = ["summer", "winter", "fall_back", "spring_forward"];
    assert_eq!(
        w.profiles(&[], "berlin_events", &entities),
        vec![
            at("2024-07-15T10:00:00Z", 1),
            at("2024-01-15T11:00:00Z", 2),
            at("2024-10-27T00:30:00Z", 3),
            at("2024-03-31T01:30:00Z", 4),
        ]
    );
    // The same rows through a view without a zone: UTC, as before.
    assert_eq!(
        w.profiles(&[], "plain_events", &entities),
        vec![
            at("2024-07-15T12:00:00Z", 1),
            at("2024-01-15T12:00:00Z", 2),
            at("2024-10-27T02:30:00Z", 3),
            at("2024-03-31T02:30:00Z", 4),
        ]
    );
    assert_eq!(
        w.profiles(&[], "ny_events", &["n1"]),
        vec![at("2024-07-15T16:00:00Z", 1)]
    );

    // Incremental, west of UTC: the watermark is 16:00Z, the window starts at
    // 15:50Z. A late row stamped 11:55 in New York (15:55Z) is inside it,
    // though its wall time is hours before the window's UTC bound.
    w.write(
        "NY_EVENTS",
        "part-1.parquet",
        &[("n2", "2024-07-15 11:55:00", 2)],
    );
    w.sync(&[]);
    assert_eq!(
        w.profiles(&[], "ny_events", &["n2"]),
        vec![at("2024-07-15T15:55:00Z", 2)]
    );

    // warehouse.ntz_time_zone is the zone of views without their own (a fresh
    // project and state, so the rows are written anew); a view's own zone wins.
    let berlin_default = [
        ("MATERIALIZER__WAREHOUSE__NTZ_TIME_ZONE", "Europe/Berlin"),
        ("MATERIALIZER__PROFILES__PROJECT", "berlin_default"),
        ("MATERIALIZER__PROFILES__STATE_PREFIX", "berlin_default:"),
    ];
    w.sync(&berlin_default);
    assert_eq!(
        w.profiles(&berlin_default, "plain_events", &["summer", "winter"]),
        vec![at("2024-07-15T10:00:00Z", 1), at("2024-01-15T11:00:00Z", 2)]
    );
    assert_eq!(
        w.profiles(&berlin_default, "ny_events", &["n1"]),
        vec![at("2024-07-15T16:00:00Z", 1)]
    );
}

#[test]
fn unknown_zones_are_refused_naming_the_key() {
    let w = World::new();
    let out = w.run(
        &[("MATERIALIZER__WAREHOUSE__NTZ_TIME_ZONE", "Europe/Berlln")],
        &["check"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("warehouse.ntz_time_zone") && lines[0].contains("Europe/Berlln"),
        "{stderr}"
    );

    let bad = w.dir.join("bad.json");
    std::fs::write(
        &bad,
        view("bad_zone", "events", Some("Mars/Olympus")).to_string(),
    )
    .unwrap();
    let out = w.run(&[], &["apply", bad.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("batch_source.ntz_time_zone") && said.contains("Mars/Olympus"),
        "{said}"
    );
}
