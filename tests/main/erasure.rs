//! Erasure of users (`materializer erase`, `POST /api/v1/profiles/delete`),
//! soft deletes in the warehouse (`batch_source.soft_delete_column`), and
//! `full_resync_every` removing entities no longer in the table, end to end:
//! the built binary, the embedded Parquet warehouse, a real Redis. Each proves
//! that a replay (a forgotten watermark), a full resync and a reshape do not
//! bring a removed value back, and that a newer row does.

use materializer::model::ViewId;
use materializer::profiles::state::Keys;
use serde_json::{json, Value as Json};

use crate::fixtures::{api_comes_up, shown, ParquetWorld, Rows};
use crate::support;

/// `(DOMAIN_USERID, seconds before the world's now of UPDATED_AT, A, DELETED)`;
/// a negative age is a row stamped after now.
type Row<'a> = (&'a str, i64, i64, Option<bool>);

fn world(extra: &[(&str, &str)]) -> ParquetWorld {
    let w = ParquetWorld::new();
    let mut c = w
        .config()
        .set("sync.page_rows", 2)
        .set("sync.write_batch", 2);
    for (k, v) in extra {
        c = c.set(k, *v);
    }
    w.write_config(&c);
    w
}

fn write_rows(w: &ParquetWorld, table: &str, file: &str, rows: &[Row<'_>]) {
    let columns = Rows::default()
        .text("DOMAIN_USERID", rows.iter().map(|r| Some(r.0)))
        .int64("A", rows.iter().map(|r| r.2))
        .int64("B", rows.iter().map(|r| r.2 * 10))
        .boolean("DELETED", rows.iter().map(|r| r.3))
        .utc_micros(
            "UPDATED_AT",
            rows.iter().map(|r| Some((w.now - r.1) * 1_000_000)),
        );
    w.write_table(table, file, columns, None);
}

/// Registers view `name` (version 1) over `table` with `fields`, through
/// `registry.files`; `soft_delete` names the flag column.
fn view(w: &ParquetWorld, name: &str, table: &str, fields: &[&str], soft_delete: bool) {
    let mut v = json!({
        "name": name, "version": 1, "entity": {"name": "domain_userid"},
        "batch_source": {"name": "src", "table": table, "timestamp_field": "updated_at"},
        "fields": fields.iter().map(|f| json!({"name": f, "type": "int64"})).collect::<Vec<_>>(),
        "online": true
    });
    if soft_delete {
        v["batch_source"]["soft_delete_column"] = json!("deleted");
    }
    w.write_view(&format!("{name}.json"), &v);
}

/// The values `profile` prints for one entity of view `name`, or null.
fn values(w: &ParquetWorld, name: &str, entity: &str) -> Json {
    w.profile(name, &[entity])[0]["values"].clone()
}

fn run(w: &ParquetWorld, args: &[&str]) -> String {
    let out = w.materializer(args, &[]);
    assert!(out.status.success(), "{args:?}: {}", shown(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes the next run of view `name` a scheduled full resync (its last full
/// read long ago), as the passing of `full_resync_every` would.
async fn full_resync_due(w: &ParquetWorld, name: &str) {
    let id = ViewId {
        name: name.into(),
        version: 1,
    };
    let _: () = redis::cmd("SET")
        .arg(Keys::new("materializer:", "signals").view(&id, "full"))
        .arg("1")
        .query_async(&mut w.redis_conn().await)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erased_user_stays_erased_through_replays_full_resyncs_and_reshapes() {
    let w = world(&[("sync.full_resync_every", "1h")]);
    write_rows(
        &w,
        "T",
        "1.parquet",
        &[("u1", 300, 1, None), ("u2", 300, 2, None)],
    );
    view(&w, "a", "t", &["A"], false);
    w.sync();
    assert_eq!(values(&w, "a", "u1"), json!({"A": 1}));

    let out = run(&w, &["erase", "--entity", "domain_userid", "u1", "nobody"]);
    assert!(out.contains("values removed from 1 of 2 entities"), "{out}");
    assert_eq!(values(&w, "a", "u1"), Json::Null);
    assert_eq!(values(&w, "a", "u2"), json!({"A": 2}));

    // A replay: the watermark forgotten, the whole table read again.
    run(&w, &["reset", "--view", "a"]);
    w.sync();
    assert_eq!(values(&w, "a", "u1"), Json::Null, "a replay resurrected u1");
    // A scheduled full resync (a new generation of the same shape).
    full_resync_due(&w, "a").await;
    let out = w.sync();
    assert!(out.contains("a:1  ok"), "{out}");
    assert_eq!(
        values(&w, "a", "u1"),
        Json::Null,
        "a full resync resurrected u1"
    );
    // A reshape (a new generation that replaces every value).
    view(&w, "a", "t", &["A", "B"], false);
    w.sync();
    assert_eq!(
        values(&w, "a", "u1"),
        Json::Null,
        "a reshape resurrected u1"
    );
    assert_eq!(values(&w, "a", "u2"), json!({"A": 2, "B": 20}));

    // A row stamped after the erasure comes back.
    write_rows(&w, "T", "2.parquet", &[("u1", -120, 7, None)]);
    w.sync();
    assert_eq!(values(&w, "a", "u1"), json!({"A": 7, "B": 70}));

    // Refusals name what is wrong and erase nothing.
    for (args, says) in [
        (
            vec!["--entity", "user_id", "u2"],
            "no registered view has entity `user_id`",
        ),
        (
            vec!["--entity", "domain_userid", "u2", "--view", "zzz"],
            "no registered view `zzz`",
        ),
    ] {
        let out = w.materializer(&[&["erase"], &args[..]].concat(), &[]);
        assert!(!out.status.success());
        assert!(shown(&out).contains(says), "{}", shown(&out));
    }
    assert_eq!(values(&w, "a", "u2"), json!({"A": 2, "B": 20}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_erases_one_views_values_and_leaves_the_others() {
    let w = world(&[]);
    write_rows(
        &w,
        "T1",
        "1.parquet",
        &[("u1", 300, 1, None), ("u2", 300, 2, None)],
    );
    write_rows(&w, "T2", "1.parquet", &[("u1", 300, 3, None)]);
    view(&w, "a", "t1", &["A"], false);
    view(&w, "b", "t2", &["A"], false);
    w.sync();
    let port = support::free_port();
    w.write_config(&w.config().set("api.listen", format!("127.0.0.1:{port}")));
    let daemon = w.spawn("daemon", &["run"], &[]);
    let base = format!("http://127.0.0.1:{port}");
    assert!(api_comes_up(&base).await, "{}", daemon.log_text());
    let client = reqwest::Client::new();
    let post = |body: Json| {
        client
            .post(format!("{base}/api/v1/profiles/delete"))
            .json(&body)
            .send()
    };

    let r = post(json!({"entities": {"domain_userid": ["u1"]}, "view": "a:1"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Json = r.json().await.unwrap();
    assert_eq!(body["removed"], 1, "{body}");
    assert_eq!(body["view"], "a:1", "{body}");
    assert_eq!(values(&w, "a", "u1"), Json::Null);
    assert_eq!(values(&w, "b", "u1"), json!({"A": 3}));
    // The daemon's next runs do not bring it back.
    run(&w, &["reset", "--view", "a"]);
    w.sync();
    assert_eq!(values(&w, "a", "u1"), Json::Null);

    for (body, status) in [
        (json!({"entities": {"user_id": ["u1"]}}), 404),
        (
            json!({"entities": {"domain_userid": ["u1"]}, "view": "c"}),
            404,
        ),
        (json!({"entities": {"domain_userid": "u1"}}), 422),
        (
            json!({"entities": {"domain_userid": ["u1"], "x": ["y"]}}),
            422,
        ),
        (json!({"entity": {}}), 422),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
    }
    // Every view: both go.
    let r = post(json!({"entities": {"domain_userid": ["u1", "u2"]}}))
        .await
        .unwrap();
    let body: Json = r.json().await.unwrap();
    assert_eq!(body["removed"], 2, "{body}");
    assert_eq!(values(&w, "b", "u1"), Json::Null);
    assert_eq!(values(&w, "a", "u2"), Json::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_deleted_row_removes_the_values_and_older_rows_never_restore_them() {
    let w = world(&[("sync.full_resync_every", "1h")]);
    write_rows(
        &w,
        "T",
        "1.parquet",
        &[
            ("u1", 600, 1, Some(false)),
            ("u2", 600, 2, None),
            ("u3", 600, 3, Some(false)),
        ],
    );
    view(&w, "a", "t", &["A"], true);
    w.sync();
    assert_eq!(values(&w, "a", "u1"), json!({"A": 1}));

    // u1 flagged as deleted later; u3 disappears from the table (no flag).
    write_rows(
        &w,
        "T",
        "1.parquet",
        &[("u1", 600, 1, Some(false)), ("u2", 600, 2, None)],
    );
    write_rows(&w, "T", "2.parquet", &[("u1", 60, 1, Some(true))]);
    w.sync();
    assert_eq!(values(&w, "a", "u1"), Json::Null);
    assert_eq!(
        values(&w, "a", "u3"),
        json!({"A": 3}),
        "only a full resync removes u3"
    );

    // A full resync: the flagged row still wins, and u3 (gone from the table) goes.
    full_resync_due(&w, "a").await;
    w.sync();
    assert_eq!(
        values(&w, "a", "u1"),
        Json::Null,
        "a full resync resurrected u1"
    );
    assert_eq!(
        values(&w, "a", "u3"),
        Json::Null,
        "a full resync kept a row gone from the table"
    );
    assert_eq!(values(&w, "a", "u2"), json!({"A": 2}));

    // A replay of only the older rows (the flagged row not in the window).
    std::fs::remove_file(w.table_dir("T").join("2.parquet")).unwrap();
    run(&w, &["reset", "--view", "a"]);
    w.sync();
    assert_eq!(
        values(&w, "a", "u1"),
        Json::Null,
        "an older replay resurrected u1"
    );

    // A newer row without the flag brings u1 back.
    write_rows(&w, "T", "3.parquet", &[("u1", 30, 9, Some(false))]);
    w.sync();
    assert_eq!(values(&w, "a", "u1"), json!({"A": 9}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_delete_column_that_is_missing_or_not_boolean_is_a_clear_error() {
    let w = world(&[]);
    write_rows(&w, "T", "1.parquet", &[("u1", 60, 1, None)]);
    let mut v = json!({
        "name": "a", "version": 1, "entity": {"name": "domain_userid"},
        "batch_source": {"table": "t", "timestamp_field": "updated_at", "soft_delete_column": "gone"},
        "fields": [{"name": "A", "type": "int64"}], "online": true
    });
    w.write_view("a.json", &v);
    let out = w.materializer(&["check"], &[]);
    assert!(
        shown(&out).contains("soft-delete column `gone` not found"),
        "{}",
        shown(&out)
    );
    v["batch_source"]["soft_delete_column"] = json!("A");
    w.write_view("a.json", &v);
    let out = w.materializer(&["sync"], &[]);
    assert!(!out.status.success());
    assert!(
        shown(&out).contains("soft-delete column `A`"),
        "{}",
        shown(&out)
    );
}
