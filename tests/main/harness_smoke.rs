//! Smoke tests of the integration-test harness (tests/support): the
//! Snowflake-protocol server answers `snowflake-api` 0.14 (password and
//! key-pair logins, DDL, DML, SELECT with NULLs including a NULL TIMESTAMP),
//! and the throwaway Redis server starts, restarts empty and stops.
//! Assumes redis-server, python3.11 and openssl on the machine.

use std::net::TcpStream;
use std::time::Duration;

use crate::support::{result_columns, result_rows, unique_name, RedisServer, SnowflakeServer};
use snowflake_api::QueryResult;

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test]
async fn snowflake_server_returns_inserted_rows_with_nulls_through_snowflake_api() {
    let sf = SnowflakeServer::shared();
    let db = unique_name("SMOKE");
    sf.exec_in(
        &db,
        "S",
        &[
            r#"CREATE TABLE "EVENTS" ("ENTITY" VARCHAR, "TS" TIMESTAMP_NTZ, "AMOUNT" NUMBER(38,2), "N" INT, "OK" BOOLEAN, "F" FLOAT)"#,
            r#"INSERT INTO "EVENTS" VALUES
                ('u1', '2024-01-01 00:00:00.5', 12.3, 7, TRUE, 1.5),
                ('u2', NULL, NULL, NULL, NULL, NULL),
                ('it''s', '2024-01-02 03:04:05', -0.5, -1, FALSE, -2.25)"#,
        ],
    )
    .await;

    let res = sf
        .exec_sql(&format!(
            r#"SELECT * FROM "{db}"."S"."EVENTS" ORDER BY "ENTITY""#
        ))
        .await;

    assert_eq!(
        result_columns(&res),
        ["ENTITY", "TS", "AMOUNT", "N", "OK", "F"]
    );
    assert_eq!(
        result_rows(&res),
        vec![
            vec![
                s("it's"),
                s("2024-01-02 03:04:05.000000000"),
                s("-0.50"),
                s("-1"),
                s("false"),
                s("-2.25")
            ],
            vec![
                s("u1"),
                s("2024-01-01 00:00:00.500000000"),
                s("12.30"),
                s("7"),
                s("true"),
                s("1.5")
            ],
            vec![s("u2"), None, None, None, None, None],
        ]
    );
}

#[tokio::test]
async fn snowflake_server_reports_dml_counts_empty_selects_and_sql_errors() {
    let sf = SnowflakeServer::shared();
    let db = unique_name("SMOKE");
    let results = sf
        .exec_in(
            &db,
            "S",
            &[
                r#"CREATE TABLE "T" ("E" VARCHAR, "TS" TIMESTAMP_NTZ)"#,
                r#"INSERT INTO "T" VALUES ('a', '2024-01-01 00:00:00'), ('b', '2024-01-01 00:00:00')"#,
                r#"SELECT "E" FROM "T" WHERE "TS" > '2024-01-01 00:00:00.000000000'::TIMESTAMP_NTZ"#,
                r#"SELECT "E" FROM "T" WHERE "TS" > '2023-12-31 00:00:00'::TIMESTAMP_NTZ OR ("TS" = '2024-01-01 00:00:00'::TIMESTAMP_NTZ AND "E" > 'a') ORDER BY "TS", "E" LIMIT 1"#,
            ],
        )
        .await;
    assert_eq!(result_rows(&results[1]), vec![vec![s("2")]]);
    assert!(matches!(results[2], QueryResult::Empty));
    assert_eq!(result_rows(&results[3]), vec![vec![s("a")]]);

    let err = sf
        .api(Some(&db), Some("S"))
        .exec(r#"SELECT * FROM "NO_SUCH_TABLE""#)
        .await
        .err()
        .expect("selecting a missing table fails");
    assert!(err.to_string().contains("002003"), "{err}");
}

#[tokio::test]
async fn snowflake_server_accepts_password_and_key_pair_logins() {
    let sf = SnowflakeServer::shared();
    for api in [
        sf.api(None, None),
        sf.api_with_key_pair(Some("SMOKE_KEYPAIR"), Some("S")),
    ] {
        let res = api
            .exec("SELECT 1 AS ONE")
            .await
            .expect("query after login");
        assert_eq!(result_rows(&res), vec![vec![s("1")]]);
    }
}

#[tokio::test]
async fn snowflake_server_runs_concurrent_statements_of_one_session() {
    let sf = SnowflakeServer::shared();
    let db = unique_name("SMOKE");
    let api = sf.api(Some(&db), Some("S"));
    let queries = (0..6).map(|i| {
        let api = &api;
        async move {
            let sql = format!("SELECT {i} AS I FROM TABLE(GENERATOR(ROWCOUNT => 1000))");
            api.exec(&sql).await.map(|r| result_rows(&r).len())
        }
    });
    for res in futures::future::join_all(queries).await {
        assert_eq!(res.expect("concurrent query"), 1000);
    }
}

#[tokio::test]
async fn snowflake_server_restart_keeps_port_drops_sessions_and_data() {
    let mut sf = SnowflakeServer::start();
    let port = sf.port;
    let db = unique_name("RESTART");
    let api = sf.api(Some(&db), Some("S"));
    api.exec(r#"CREATE TABLE "T" ("E" VARCHAR)"#)
        .await
        .expect("create table");

    sf.restart();
    assert_eq!(sf.port, port);
    // The first call may fail on the pooled connection to the dead server
    // ("error sending request"); once reconnected, the old token is refused.
    let mut errors = Vec::new();
    for _ in 0..2 {
        let err = api
            .exec(r#"SELECT * FROM "T""#)
            .await
            .err()
            .expect("an old session fails after a restart");
        errors.push(err.to_string());
    }
    assert!(errors.iter().any(|e| e.contains("390104")), "{errors:?}");
    let fresh = sf.api(Some(&db), Some("S"));
    assert!(
        fresh.exec(r#"SELECT * FROM "T""#).await.is_err(),
        "tables do not survive a restart"
    );

    drop(sf);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server is gone after drop"
    );
}

#[tokio::test]
async fn redis_server_answers_ping_restarts_empty_and_stops() {
    let mut redis = RedisServer::start();
    let mut conn = redis.connection().await;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();

    redis.restart();
    let mut conn = redis.connection().await;
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, None, "a restarted server starts empty");

    redis.stop();
    assert!(!redis.is_running());
    assert!(TcpStream::connect(("127.0.0.1", redis.port)).is_err());
}
