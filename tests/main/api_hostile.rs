//! The HTTP API under hostile input and load, against the real daemon binary
//! (a Snowflake world's Redis and the shared fakesnow server).
//!
//! One test sends several hundred requests generated from a seeded RNG
//! (`HOSTILE_SEED` overrides the seed) and fixed lists: huge names, control
//! characters and NUL, bad versions, non-boolean flags, duplicate
//! `Authorization` headers, wrong methods, unknown routes, malformed JSON,
//! wrong JSON types for every key of a view, bodies over 1 MiB, JSON nested
//! 100,000 deep, invalid UTF-8, attribute reads of up to 5,000 entities with
//! bad attribute strings, and missing or wrong tokens. Well-formed requests go
//! through reqwest, malformed ones as raw bytes on a `TcpStream`. Every request
//! must get a complete HTTP answer within [`DEADLINE`] and never a 5xx; the
//! daemon must stay up, under [`MAX_RSS_KB`], keep syncing, and store nothing
//! that does not re-validate. The other tests pin the findings one by one
//! (names without limits; loose versions, flags and entity names; bodiless
//! 405s; two `Authorization` headers).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use materializer::model::{identifier_problem, View, BUILTIN_ENTITIES, MAX_FIELDS};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::fixtures::{api_comes_up, view_json, Daemon, SnowflakeWorld};
use crate::support;

const TOKEN: &str = "hostile-token-Vq7pX2mK";
/// No answer may take longer.
const DEADLINE: Duration = Duration::from_secs(10);
/// The daemon's resident set after the onslaught must stay below this.
const MAX_RSS_KB: u64 = 300 * 1024;
const SEED: u64 = 0x5eed_4a11;

/// A daemon serving the API with [`TOKEN`].
struct Api {
    world: SnowflakeWorld,
    daemon: Daemon,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Api {
    /// A daemon on a fresh world; with `table`, a synced view of that name
    /// (entity `user_id`, 20 entities, 100 rows) converged before returning.
    async fn start(table: Option<&str>) -> Api {
        let mut world = SnowflakeWorld::shared().await;
        if let Some(view) = table {
            let t = world.add_table(view, 20).await;
            world.insert(t, 100).await;
        }
        let port = support::free_port();
        world.write_config(
            &world
                .fast_config()
                .set("api.listen", format!("127.0.0.1:{port}"))
                .set("api.tokens", [TOKEN]),
        );
        let daemon = world.spawn("daemon", &["run"], &[]);
        let api = Api {
            world,
            daemon,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            http: reqwest::Client::builder()
                .timeout(DEADLINE)
                .build()
                .unwrap(),
        };
        assert!(
            api_comes_up(&api.url("")).await,
            "the API never answered:\n{}",
            api.daemon.log_text()
        );
        if table.is_some() {
            assert!(
                api.world.wait_converged(0, Duration::from_secs(30)).await,
                "the synced view never converged:\n{}",
                api.daemon.log_text()
            );
        }
        api
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `method path` with the token and a JSON body: the status and the JSON answer.
    async fn call(&self, method: Method, path: &str, body: Option<&Json>) -> (u16, Json) {
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {}: no answer: {e}", &path[..path.len().min(80)]));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: {status} is not JSON: {text:?}"));
        (status, json)
    }

    async fn views(&self) -> Vec<Json> {
        let (status, list) = self
            .call(Method::GET, "/api/v1/registry/views/", None)
            .await;
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().clone()
    }

    async fn entities(&self) -> Vec<Json> {
        let (status, list) = self
            .call(Method::GET, "/api/v1/registry/entities/", None)
            .await;
        assert_eq!(status, 200, "{list}");
        list.as_array().unwrap().clone()
    }
}

/// `detail` and `problems` of an error answer, as one text.
fn said(body: &Json) -> String {
    format!("{} {}", body["detail"], body["problems"])
}

/// A copy of `base` with the value at JSON pointer `at` set to `value`.
fn with(base: &Json, at: &str, value: Json) -> Json {
    let mut v = base.clone();
    *v.pointer_mut(at).unwrap_or_else(|| panic!("{at}")) = value;
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn names_without_limits_are_refused_422_naming_the_key_and_nothing_is_stored() {
    let api = Api::start(None).await;
    let base = view_json("named", &api.world.db, "EVENTS");
    let megabyte = "n".repeat(1_000_000);
    let many_fields: Vec<Json> = (0..=MAX_FIELDS)
        .map(|i| json!({"name": format!("F{i}"), "type": "int64"}))
        .collect();
    let cases = [
        (with(&base, "/name", json!(megabyte)), "name: "),
        (with(&base, "/name", json!("a{b}")), "name: "),
        (with(&base, "/name", json!("a\u{0}b")), "name: "),
        (with(&base, "/name", json!("n".repeat(129))), "name: "),
        (
            with(&base, "/entity/name", json!("e".repeat(100_000))),
            "entity.name: ",
        ),
        (
            with(&base, "/entity/name", json!("a\u{0}b")),
            "entity.name: ",
        ),
        (
            with(&base, "/fields/0/name", json!("VAL\u{1}")),
            "fields[0].name: ",
        ),
        (
            with(&base, "/batch_source/table", json!("T".repeat(256))),
            "batch_source.table: ",
        ),
        (
            with(&base, "/batch_source/timestamp_field", json!("TS\n")),
            "batch_source.timestamp_field: ",
        ),
        (
            with(&base, "/name", json!("named")).tap(|v| {
                v["description"] = json!("d".repeat(5000));
            }),
            "description: ",
        ),
        (
            base.clone()
                .tap(|v| v["tags"] = json!({"k": "v".repeat(20_000)})),
            "tags: ",
        ),
        (
            with(&base, "/fields", json!(many_fields)),
            "fields: 1001 fields",
        ),
    ];
    for (view, key) in &cases {
        let (status, body) = api
            .call(Method::POST, "/api/v1/registry/views/", Some(view))
            .await;
        let text = body.to_string();
        assert_eq!(status, 422, "{key}: {}", &text[..text.len().min(500)]);
        assert!(
            body["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str().unwrap().starts_with(key)),
            "{key}: {text}"
        );
        assert!(
            text.len() < 4096 && !text.contains("\\u0000"),
            "{key}: the answer quotes too much: {}",
            &text[..text.len().min(500)]
        );
    }
    assert_eq!(api.views().await, Vec::<Json>::new(), "nothing is stored");
    let metrics = api
        .http
        .get(api.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.len() < 100_000,
        "/metrics is {} bytes",
        metrics.len()
    );
}

/// `tap` for building JSON cases in place.
trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}
impl Tap for Json {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn loose_versions_flags_and_entity_names_are_refused_naming_the_field() {
    let api = Api::start(None).await;
    let view = view_json("strict", &api.world.db, "EVENTS").tap(|v| v["online"] = json!(false));
    let put = "/api/v1/registry/views/strict/versions/1";
    let (status, body) = api.call(Method::PUT, put, Some(&view)).await;
    assert_eq!(status, 200, "{body}");
    let before = api.views().await;

    for v in ["+1", "01", "-1", "4294967296", "0", "1.0"] {
        for base in ["views", "attribute_groups"] {
            let path = format!("/api/v1/registry/{base}/strict/versions/{v}");
            for method in [Method::GET, Method::PUT, Method::DELETE] {
                let body = (method == Method::PUT).then_some(&view);
                let (status, answer) = api.call(method.clone(), &path, body).await;
                assert_eq!(status, 400, "{method} {path}: {answer}");
                assert!(
                    answer["detail"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("version: `{v}` in the path")),
                    "{method} {path}: {answer}"
                );
            }
        }
        let run = format!("/api/v1/sync/strict/versions/{v}/run");
        let (status, answer) = api.call(Method::POST, &run, None).await;
        assert!((400..500).contains(&status), "{run}: {status} {answer}");
    }

    let mut group = view.clone().tap(|v| v["name"] = json!("grouped"));
    let key = group.as_object_mut().unwrap().remove("entity").unwrap();
    group["attribute_key"] = key;
    group["online"] = json!(true);
    for bad in [json!(0), Json::Null, json!("false"), json!(1)] {
        let body = group.clone().tap(|g| g["is_published"] = bad.clone());
        let (status, answer) = api
            .call(
                Method::POST,
                "/api/v1/registry/attribute_groups/",
                Some(&body),
            )
            .await;
        assert_eq!(status, 422, "is_published = {bad}: {answer}");
        assert!(
            said(&answer).contains("is_published: expected true or false"),
            "{answer}"
        );
        for key in ["online", "offline"] {
            let body = view.clone().tap(|v| v[key] = bad.clone());
            let (status, answer) = api.call(Method::PUT, put, Some(&body)).await;
            assert_eq!(status, 422, "{key} = {bad}: {answer}");
            assert!(
                said(&answer).contains(&format!("{key}: expected true or false")),
                "{answer}"
            );
        }
    }

    let huge = "e".repeat(100_000);
    for name in ["a\u{0}b", &huge[..], "tab\there"] {
        let body = view.clone().tap(|v| v["entity"]["name"] = json!(name));
        let (status, answer) = api.call(Method::PUT, put, Some(&body)).await;
        assert_eq!(status, 422, "{answer}");
        assert!(said(&answer).contains("entity.name: "), "{answer}");
        for path in [
            "/api/v1/registry/entities/",
            "/api/v1/registry/attribute_keys/",
        ] {
            let (status, answer) = api
                .call(Method::POST, path, Some(&json!({ "name": name })))
                .await;
            assert_eq!(status, 422, "{answer}");
            assert!(said(&answer).contains("entity: name: "), "{answer}");
            assert!(answer.to_string().len() < 1000, "{answer}");
        }
    }
    assert_eq!(api.views().await, before, "the registry is unchanged");
    let names: Vec<Json> = BUILTIN_ENTITIES
        .iter()
        .map(|n| json!({ "name": n }))
        .collect();
    assert_eq!(api.entities().await, names, "no entity was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_or_unknown_route_answers_a_json_error_naming_it() {
    let api = Api::start(None).await;
    for (method, path, status, want) in [
        (
            Method::PATCH,
            "/api/v1/registry/views/",
            405,
            "PATCH is not allowed",
        ),
        (
            Method::DELETE,
            "/api/v1/sync/status",
            405,
            "DELETE is not allowed",
        ),
        (
            Method::PUT,
            "/api/v1/get-online-attributes",
            405,
            "PUT is not allowed",
        ),
        (Method::POST, "/healthz", 405, "POST is not allowed"),
        (Method::DELETE, "/metrics", 405, "DELETE is not allowed"),
        // (Under /api/v1 the path it names lacks the prefix, as `nest` strips it.)
        (Method::GET, "/api/v1/nowhere", 404, "no route for GET "),
        (Method::GET, "/nowhere", 404, "no route for GET /nowhere"),
    ] {
        let resp = api
            .http
            .request(method.clone(), api.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let allow = resp.headers().get("allow").cloned();
        let body: Json = serde_json::from_str(&resp.text().await.unwrap())
            .unwrap_or_else(|e| panic!("{method} {path}: no JSON body: {e}"));
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(want),
            "{method} {path}: {body} (Allow: {allow:?})"
        );
        if status == 405 {
            assert!(allow.is_some(), "{method} {path}: no Allow header");
            assert!(detail.contains(path), "{method} {path}: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_authorization_headers_are_refused_401_naming_the_header_whichever_holds_the_token() {
    let api = Api::start(None).await;
    let right = format!("Bearer {TOKEN}");
    let status = |headers: Vec<String>| {
        let mut req = api.http.get(api.url("/api/v1/sync/status"));
        for h in headers {
            req = req.header("Authorization", h);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Json>().await.unwrap())
        }
    };
    assert_eq!(status(vec![right.clone()]).await.0, 200);
    for headers in [
        vec!["Bearer wrong".to_string(), right.clone()],
        vec![right.clone(), "Bearer wrong".to_string()],
        vec![right.clone(), right.clone()],
    ] {
        let (status, body) = status(headers.clone()).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("Authorization: sent more than once"),
            "{headers:?}: {body}"
        );
    }
}

// ---------------------------------------------------------------------------
// The hostile-request run.

/// How a generated request is sent.
enum Send {
    /// Through reqwest (well-formed HTTP); `auth` adds the right token.
    Http {
        method: Method,
        path: String,
        headers: Vec<(&'static str, Vec<u8>)>,
        body: Option<Vec<u8>>,
        auth: bool,
    },
    /// Written as they are to a fresh connection (malformed HTTP, or bodies
    /// the server may refuse before reading them).
    Raw(Vec<u8>),
}

struct Case {
    class: &'static str,
    what: String,
    send: Send,
    /// The answer must be a 4xx (else anything below 500 will do).
    refused: bool,
}

fn http(class: &'static str, method: Method, path: &str, body: Option<Vec<u8>>) -> Case {
    Case {
        class,
        what: format!("{method} {}", short(path)),
        send: Send::Http {
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body,
            auth: true,
        },
        refused: true,
    }
}

fn json_case(class: &'static str, method: Method, path: &str, body: &Json) -> Case {
    let mut c = http(class, method, path, Some(body.to_string().into_bytes()));
    c.refused = refused_by_model(path, body);
    c
}

/// Whether the model refuses `body` as a view (a body the model accepts may
/// still be refused by the API: a name taken, a path that differs).
fn refused_by_model(path: &str, body: &Json) -> bool {
    if !path.contains("/views") && !path.contains("/attribute_groups") {
        return false;
    }
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        if let Some(k) = o.remove("attribute_key") {
            o.insert("entity".into(), k);
        }
        if o.get("is_published").is_some_and(|p| !p.is_boolean()) {
            return true;
        }
    }
    serde_json::from_value::<View>(b).map_or(true, |v| !v.problems().is_empty())
}

fn raw(class: &'static str, what: String, bytes: Vec<u8>) -> Case {
    Case {
        class,
        what,
        send: Send::Raw(bytes),
        refused: true,
    }
}

/// A raw request: `Connection: close`, the token when `auth`, a
/// `Content-Length` unless `headers` sets the framing.
fn raw_request(
    method: &str,
    path: &[u8],
    headers: &[(&str, &[u8])],
    body: &[u8],
    auth: bool,
) -> Vec<u8> {
    let mut r = format!("{method} ").into_bytes();
    r.extend_from_slice(path);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if auth {
        r.extend_from_slice(format!("Authorization: Bearer {TOKEN}\r\n").as_bytes());
    }
    let mut framed = false;
    for (k, v) in headers {
        framed |=
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        r.extend_from_slice(k.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v);
        r.extend_from_slice(b"\r\n");
    }
    if !framed {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn short(s: &str) -> String {
    materializer::model::quoted(s)
}

/// The probe view the mutations start from: offline, so nothing it stores syncs.
fn probe(db: &str, table: &str) -> Json {
    json!({
        "name": "probe", "version": 1,
        "entity": {"name": "user_id", "description": "a user"},
        "batch_source": {"name": "probe_source", "database": db, "schema": "PUBLIC",
                         "table": table, "timestamp_field": "TS", "owner": "team@example.com",
                         "description": "d", "tags": {"k": "v"}},
        "fields": [{"name": "VAL", "type": "int64", "description": "v", "tags": {"k": "v"}}],
        "online": false, "offline": false, "owner": "team@example.com",
        "description": "probe", "tags": {"k": "v"}, "ttl": "P1D", "refresh_rate": "PT1M"
    })
}

/// Every key of the probe view, as JSON pointers.
const VIEW_KEYS: [&str; 27] = [
    "/name",
    "/version",
    "/entity",
    "/entity/name",
    "/entity/description",
    "/batch_source",
    "/batch_source/name",
    "/batch_source/database",
    "/batch_source/schema",
    "/batch_source/table",
    "/batch_source/timestamp_field",
    "/batch_source/owner",
    "/batch_source/description",
    "/batch_source/tags",
    "/fields",
    "/fields/0",
    "/fields/0/name",
    "/fields/0/type",
    "/fields/0/description",
    "/fields/0/tags",
    "/online",
    "/offline",
    "/owner",
    "/description",
    "/tags",
    "/ttl",
    "/refresh_rate",
];

fn wrong_types() -> Vec<Json> {
    vec![
        Json::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(u64::MAX),
        json!(""),
        json!("s"),
        json!([]),
        json!([null]),
        json!({}),
        json!({"a": 1}),
    ]
}

/// Strings that must never be stored as a name: huge, control characters,
/// NUL, hash-tag braces, separators.
fn hostile_strings() -> Vec<String> {
    vec![
        "n".repeat(1_000_000),
        "n".repeat(10_000),
        "n".repeat(129),
        "n".repeat(256),
        "a\u{0}b".into(),
        "\u{0}".into(),
        "a\nb".into(),
        "a\rb\u{1b}[31m".into(),
        "a\u{7f}".into(),
        "a\u{85}b".into(),
        "a{b}".into(),
        "{hostile}".into(),
        "a:b".into(),
        "ünïcode".into(),
        "\u{202e}rtl".into(),
        "a b".into(),
        "'; DROP TABLE x; --".into(),
        "\"quoted\"".into(),
        " ".into(),
        "".into(),
    ]
}

/// The generated cases: at least several hundred, shuffled.
fn cases(rng: &mut StdRng, db: &str, table: &str, view: &str) -> Vec<Case> {
    let base = probe(db, table);
    let put = "/api/v1/registry/views/probe/versions/1";
    let post = "/api/v1/registry/views/";
    let groups = "/api/v1/registry/attribute_groups/";
    let as_group = |v: &Json| {
        let mut g = v.clone();
        if let Some(e) = g.as_object_mut().and_then(|o| o.remove("entity")) {
            g["attribute_key"] = e;
        }
        g
    };
    let mut out = Vec::new();

    // Huge names, control characters, NUL, on every name-like key.
    for s in hostile_strings() {
        for key in [
            "/name",
            "/entity/name",
            "/fields/0/name",
            "/batch_source/name",
            "/batch_source/database",
            "/batch_source/schema",
            "/batch_source/table",
            "/batch_source/timestamp_field",
            "/owner",
            "/description",
        ] {
            if s.len() > 100_000 && rng.gen_bool(0.7) {
                continue;
            }
            let v = with(&base, key, json!(s));
            let (method, path) = match rng.gen_range(0..3) {
                0 => (Method::POST, post),
                1 => (Method::PUT, put),
                _ => (Method::POST, groups),
            };
            let body = if path == groups { as_group(&v) } else { v };
            out.push(json_case("names", method, path, &body));
        }
        for path in [
            "/api/v1/registry/entities/",
            "/api/v1/registry/attribute_keys/",
        ] {
            let mut c = json_case("names", Method::POST, path, &json!({ "name": s }));
            c.refused = identifier_problem("name", &s).is_some();
            out.push(c);
        }
    }
    // 1,000 or more fields.
    for n in [MAX_FIELDS + 1, 5_000] {
        let fields: Vec<Json> = (0..n)
            .map(|i| json!({"name": format!("F{i}"), "type": "int64"}))
            .collect();
        out.push(json_case(
            "names",
            Method::PUT,
            put,
            &with(&base, "/fields", json!(fields)),
        ));
    }

    // Bad versions in every path that has one.
    for v in [
        "+1",
        "01",
        "-1",
        "4294967296",
        "0",
        "1.0",
        "1e0",
        "0x1",
        "%201",
        "%EF%BC%91",
        "99999999999999999999",
        "1%00",
        "%2B1",
    ] {
        for (method, path) in [
            (
                Method::GET,
                format!("/api/v1/registry/views/probe/versions/{v}"),
            ),
            (
                Method::PUT,
                format!("/api/v1/registry/views/probe/versions/{v}"),
            ),
            (
                Method::DELETE,
                format!("/api/v1/registry/views/{view}/versions/{v}"),
            ),
            (
                Method::GET,
                format!("/api/v1/registry/attribute_groups/probe/versions/{v}"),
            ),
            (
                Method::PUT,
                format!("/api/v1/registry/attribute_groups/probe/versions/{v}"),
            ),
            (
                Method::DELETE,
                format!("/api/v1/registry/attribute_groups/{view}/versions/{v}"),
            ),
            (
                Method::POST,
                format!("/api/v1/sync/{view}/versions/{v}/run"),
            ),
        ] {
            let body = (method == Method::PUT).then(|| base.to_string().into_bytes());
            out.push(http("versions", method, &path, body));
        }
    }

    // Flags that are not JSON booleans.
    for value in [
        json!(0),
        json!(1),
        Json::Null,
        json!("true"),
        json!("false"),
        json!([]),
        json!({}),
        json!(1.0),
    ] {
        for key in ["/online", "/offline"] {
            let v = with(&base, key, value.clone());
            out.push(json_case("booleans", Method::PUT, put, &v));
            out.push(json_case("booleans", Method::POST, groups, &as_group(&v)));
        }
        let g = as_group(&base).tap(|g| g["is_published"] = value.clone());
        let mut c = json_case("booleans", Method::POST, groups, &g);
        c.refused = true;
        out.push(c);
    }

    // Wrong JSON types for every key of a view.
    for key in VIEW_KEYS {
        for value in wrong_types() {
            if !rng.gen_bool(0.7) {
                continue;
            }
            let v = with(&base, key, value);
            let c = match rng.gen_range(0..3) {
                0 => json_case("types", Method::POST, post, &v),
                1 => json_case("types", Method::PUT, put, &v),
                _ => json_case("types", Method::POST, groups, &as_group(&v)),
            };
            out.push(c);
        }
    }

    // Duplicate Authorization headers, in both orders.
    for i in 0..12 {
        let (first, second) = if i % 2 == 0 {
            ("Bearer wrong".to_string(), format!("Bearer {TOKEN}"))
        } else {
            (format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}x"))
        };
        let path = [
            "/api/v1/sync/status",
            "/api/v1/registry/views/",
            "/api/v1/registry/entities/",
        ][i % 3];
        out.push(Case {
            class: "auth",
            what: format!("GET {path} with two Authorization headers"),
            send: Send::Http {
                method: Method::GET,
                path: path.into(),
                headers: vec![
                    ("authorization", first.into_bytes()),
                    ("authorization", second.into_bytes()),
                ],
                body: None,
                auth: false,
            },
            refused: true,
        });
    }
    // Missing or wrong tokens.
    let long_token = format!("Bearer {}", "t".repeat(8_000));
    let tokens: Vec<Option<Vec<u8>>> = vec![
        None,
        Some(b"Bearer wrong".to_vec()),
        Some(b"Bearer".to_vec()),
        Some(b"Bearer ".to_vec()),
        Some(TOKEN.as_bytes().to_vec()),
        Some(format!("Basic {TOKEN}").into_bytes()),
        Some(format!("Bearer {TOKEN} extra").into_bytes()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]).into_bytes()),
        Some(long_token.into_bytes()),
        Some(format!("Bearer {TOKEN}\u{e9}").into_bytes()),
    ];
    for token in tokens {
        for (method, path) in [
            (Method::GET, "/api/v1/registry/views/"),
            (Method::POST, "/api/v1/registry/views/"),
            (Method::DELETE, "/api/v1/registry/views/probe/versions/1"),
            (Method::POST, "/api/v1/get-online-attributes"),
        ] {
            let body = (method == Method::POST).then(|| base.to_string().into_bytes());
            out.push(Case {
                class: "auth",
                what: format!("{method} {path} with a missing or wrong token"),
                send: Send::Http {
                    method,
                    path: path.into(),
                    headers: token.iter().map(|t| ("authorization", t.clone())).collect(),
                    body,
                    auth: false,
                },
                refused: true,
            });
        }
    }
    // A token that is not UTF-8 and a control character in it, raw.
    for token in [&b"Bearer \xff\xfe"[..], b"Bearer hostile\x01token"] {
        out.push(raw(
            "auth",
            "a token with bytes that are not text".into(),
            raw_request(
                "GET",
                b"/api/v1/sync/status",
                &[("Authorization", token)],
                b"",
                false,
            ),
        ));
    }

    // Wrong methods on every route.
    let routes: [(&str, &[&str]); 14] = [
        ("/api/v1/registry/views/", &["GET", "POST", "HEAD"]),
        ("/api/v1/registry/views/probe", &["GET", "HEAD"]),
        (
            "/api/v1/registry/views/probe/versions/1",
            &["GET", "HEAD", "PUT", "DELETE"],
        ),
        (
            "/api/v1/registry/attribute_groups/",
            &["GET", "HEAD", "POST"],
        ),
        ("/api/v1/registry/entities/", &["GET", "HEAD", "POST"]),
        ("/api/v1/registry/entities/user_id", &["GET", "HEAD", "PUT"]),
        ("/api/v1/feature_store/apply", &["POST"]),
        ("/api/v1/get-online-attributes", &["POST"]),
        ("/api/v1/sync/status", &["GET", "HEAD"]),
        ("/api/v1/sync/probe/versions/1/run", &["POST"]),
        ("/healthz", &["GET", "HEAD"]),
        ("/readyz", &["GET", "HEAD"]),
        ("/metrics", &["GET", "HEAD"]),
        ("/health-all", &["GET", "HEAD"]),
    ];
    for (path, allowed) in routes {
        for m in [
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND",
        ] {
            if !allowed.contains(&m) {
                let method = Method::from_bytes(m.as_bytes()).unwrap();
                out.push(http("methods", method, path, Some(b"{}".to_vec())));
            }
        }
    }

    // Unknown routes.
    let mut unknown: Vec<String> = [
        "/",
        "/api",
        "/api/v1",
        "/api/v1/",
        "/api/v2/registry/views/",
        "/API/V1/registry/views/",
        "/api/v1/registry/views/probe/versions",
        "/api/v1/registry/views/probe/versions/1/extra",
        "/api/v1/registry/views/probe/versions/1/",
        "/api/v1/registry/services/",
        "/api/v1/interventions",
        "/%00",
        "/api/v1/registry/views/%00/versions/1/x",
        "/api/v1/registry/views/..%2f..%2fetc/versions",
        "/healthz/",
        "/metrics.json",
    ]
    .map(String::from)
    .to_vec();
    let alphabet: Vec<char> = "abcdefgh_-.%0123456789".chars().collect();
    for _ in 0..20 {
        let segments = rng.gen_range(1..6);
        let mut path = String::from("/api/v1");
        for _ in 0..segments {
            path.push('/');
            for _ in 0..rng.gen_range(1..12) {
                path.push(*alphabet.choose(rng).unwrap());
            }
        }
        unknown.push(path.replace('%', "%25"));
    }
    unknown.push(format!("/api/v1/registry/views/{}", "n".repeat(10_000)));
    unknown.push(format!(
        "/api/v1/registry/views/{}/versions/1",
        "n".repeat(10_000)
    ));
    for path in unknown {
        let method = [Method::GET, Method::POST, Method::DELETE]
            .choose(rng)
            .unwrap()
            .clone();
        let mut c = http("routes", method, &path, Some(b"{}".to_vec()));
        // A long name in a real route is a 404 too; nothing here may succeed.
        c.refused = true;
        out.push(c);
    }
    // A path of a megabyte, raw: refused before routing.
    let long_path = format!("/api/v1/registry/views/{}", "n".repeat(1 << 20));
    out.push(raw(
        "routes",
        "GET a 1 MiB path".into(),
        raw_request("GET", long_path.as_bytes(), &[], b"", true),
    ));

    // Malformed JSON.
    let text = base.to_string();
    let mut malformed: Vec<Vec<u8>> = [
        "",
        " ",
        "{",
        "}",
        "[",
        "nul",
        "tru",
        "\"",
        "{\"name\":}",
        "{\"name\":\"probe\",}",
        "{'name': 'probe'}",
        "{\"name\":\"\\ud800\"}",
        "{\"version\":1e999}",
        "NaN",
        "{\"a\":1}{\"b\":2}",
        "\u{feff}{}",
        "[1,2,",
        "{\"name\" \"probe\"}",
        "{\"name\":\"probe\\x\"}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for _ in 0..40 {
        let mut b = text.clone().into_bytes();
        match rng.gen_range(0..3) {
            0 => b.truncate(rng.gen_range(1..b.len())),
            1 => {
                let i = rng.gen_range(0..b.len());
                b[i] = *b"{}[]\",:\\ 0aZ".choose(rng).unwrap();
            }
            _ => {
                let i = rng.gen_range(0..b.len());
                let junk: &[u8] = [&b"}}"[..], b"\",", b"[{", b"\\u00"].choose(rng).unwrap();
                b.splice(i..i, junk.iter().copied());
            }
        }
        malformed.push(b);
    }
    let json_paths = [
        (Method::POST, post),
        (Method::PUT, put),
        (Method::POST, groups),
        (Method::POST, "/api/v1/registry/entities/"),
        (Method::PUT, "/api/v1/registry/entities/user_id"),
        (Method::POST, "/api/v1/get-online-attributes"),
    ];
    for (i, body) in malformed.into_iter().enumerate() {
        let (method, path) = json_paths[i % json_paths.len()].clone();
        let valid = serde_json::from_slice::<Json>(&body).ok();
        let mut c = http("json", method.clone(), path, Some(body));
        // A random edit may leave valid JSON (and even a valid view).
        c.refused = valid.is_none_or(|v| refused_by_model(path, &v));
        out.push(c);
    }

    // Bodies over 1 MiB: with a length, chunked, and a length that lies.
    let big = with(&base, "/description", json!("d".repeat(2 << 20))).to_string();
    out.push(http(
        "huge",
        Method::POST,
        post,
        Some(big.clone().into_bytes()),
    ));
    out.push(http(
        "huge",
        Method::POST,
        "/api/v1/get-online-attributes",
        Some(vec![b' '; 3 << 20]),
    ));
    out.push(raw(
        "huge",
        "POST a 2 MiB view with its length".into(),
        raw_request(
            "POST",
            post.as_bytes(),
            &[("Content-Type", b"application/json")],
            big.as_bytes(),
            true,
        ),
    ));
    let mut chunked = Vec::new();
    for piece in big.as_bytes().chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    out.push(raw(
        "huge",
        "PUT a 2 MiB view chunked".into(),
        raw_request(
            "PUT",
            put.as_bytes(),
            &[("Transfer-Encoding", b"chunked")],
            &chunked,
            true,
        ),
    ));
    out.push(raw(
        "huge",
        "POST claiming 10 GiB, sending 2 MiB".into(),
        raw_request(
            "POST",
            post.as_bytes(),
            &[("Content-Length", b"10737418240")],
            &vec![b'['; 2 << 20],
            true,
        ),
    ));

    // Deeply nested JSON.
    let deep = |open: &str, close: &str, n: usize| format!("{}{}", open.repeat(n), close.repeat(n));
    for body in [
        "[".repeat(100_000),
        "{\"a\":".repeat(100_000),
        deep("[", "]", 100_000),
        deep("{\"a\":", "}", 50_000).replace("{\"a\":}", "{\"a\":1}"),
    ] {
        for (method, path) in [
            (Method::POST, post),
            (Method::POST, "/api/v1/get-online-attributes"),
        ] {
            out.push(http(
                "nesting",
                method,
                path,
                Some(body.clone().into_bytes()),
            ));
        }
    }
    let mut nested_tags = json!("leaf");
    for _ in 0..200 {
        nested_tags = json!([nested_tags]);
    }
    out.push(
        json_case(
            "nesting",
            Method::PUT,
            put,
            &with(&base, "/tags", nested_tags),
        )
        .tap_refused(true),
    );

    // Invalid UTF-8: in bodies (reqwest) and in paths and headers (raw).
    let mut invalid_utf8: Vec<Vec<u8>> = vec![
        b"\xff\xfe\xfd".to_vec(),
        b"{\"name\": \"\xc0\xaf\"}".to_vec(),
        b"{\"name\": \"probe\xed\xa0\x80\"}".to_vec(),
    ];
    for _ in 0..8 {
        let mut b = text.clone().into_bytes();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..b.len());
            b[i] = rng.gen_range(0x80..=0xff);
        }
        invalid_utf8.push(b);
    }
    for (i, body) in invalid_utf8.into_iter().enumerate() {
        let (method, path) = json_paths[i % json_paths.len()].clone();
        out.push(http("utf8", method, path, Some(body)));
    }
    for path in [
        &b"/api/v1/registry/views/\xff\xfe/versions/1"[..],
        b"/api/v1/registry/views/pro\x00be",
        b"/\x80",
    ] {
        out.push(raw(
            "utf8",
            format!("GET {}", String::from_utf8_lossy(path).escape_debug()),
            raw_request("GET", path, &[], b"", true),
        ));
    }
    for (header, value) in [
        ("X-Hostile", &b"\xff\xfe"[..]),
        ("Content-Type", b"application/json; charset=\xff"),
    ] {
        // Headers the API does not read may hold anything: only no 5xx here.
        out.push(
            raw(
                "utf8",
                format!("a {header} header that is not UTF-8"),
                raw_request(
                    "POST",
                    b"/api/v1/feature_store/apply",
                    &[(header, value)],
                    b"",
                    true,
                ),
            )
            .tap_refused(false),
        );
    }

    // Malformed HTTP (complete messages, so the server never waits for more).
    for bytes in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / / HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: -1\r\n\r\n",
        b"POST /api/v1/registry/views/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x",
        b"POST /api/v1/registry/views/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
    ] {
        out.push(raw("http", format!("{:?}", String::from_utf8_lossy(bytes)), bytes.to_vec()));
    }
    let many_headers: Vec<(&str, &[u8])> = (0..200).map(|_| ("X-Many", &b"1"[..])).collect();
    out.push(raw(
        "http",
        "200 headers".into(),
        raw_request("GET", b"/api/v1/sync/status", &many_headers, b"", true),
    ));
    let long_header = vec![b'h'; 512 * 1024];
    out.push(raw(
        "http",
        "a 512 KiB header".into(),
        raw_request(
            "GET",
            b"/api/v1/sync/status",
            &[("X-Long", &long_header)],
            b"",
            true,
        ),
    ));

    // Attribute reads: many entities, bad attribute strings, wrong shapes.
    let good = format!("{view}_v1:VAL");
    let attributes: Vec<Json> = vec![
        json!(good),
        json!("probe_v1:VAL"),
        json!(""),
        json!(":"),
        json!("::"),
        json!("x"),
        json!(format!("{view}_v1:")),
        json!(":VAL"),
        json!(format!("{view}_v0:VAL")),
        json!(format!("{view}_v01:VAL")),
        json!(format!("{view}_v4294967296:VAL")),
        json!(format!("{view}_v-1:VAL")),
        json!(format!("{view}_v1:VAL\u{0}")),
        json!(format!("{view}_v1:val")),
        json!("h".repeat(10_000)),
        json!(5),
        Json::Null,
        json!({}),
    ];
    for n in [0usize, 1, 10, 1_000, 2_000, 5_000, 5_000] {
        for _ in 0..4 {
            let ids: Vec<Json> = (0..n)
                .map(|i| match rng.gen_range(0..10) {
                    0 => Json::Null,
                    1 => json!(i),
                    2 => json!("\u{0}\n"),
                    3 if n < 100 => json!("i".repeat(10_000)),
                    _ => json!(format!("u{}", rng.gen_range(0..40))),
                })
                .collect();
            let picked: Vec<Json> = (0..rng.gen_range(1..5))
                .map(|_| attributes.choose(rng).unwrap().clone())
                .collect();
            let form = if rng.gen_bool(0.5) {
                "entities"
            } else {
                "attribute_keys"
            };
            let key = ["user_id", "user_id", "domain_userid", "", "a\u{0}b"]
                .choose(rng)
                .unwrap();
            let full = [json!(true), json!(false), json!("yes"), Json::Null]
                .choose(rng)
                .unwrap()
                .clone();
            let body = json!({
                form: { *key: ids },
                "attributes": picked,
                "full_attribute_names": full,
            });
            let mut c = json_case(
                "attributes",
                Method::POST,
                "/api/v1/get-online-attributes",
                &body,
            );
            c.what = format!(
                "get-online-attributes: {n} ids, {}",
                short(
                    &picked
                        .iter()
                        .map(Json::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            );
            out.push(c);
        }
    }
    for body in [
        json!({"entities": ["u1"], "attributes": [good]}),
        json!({"entities": {"user_id": "u1"}, "attributes": [good]}),
        json!({"entities": {"user_id": [["u1"]]}, "attributes": [good]}),
        json!({"entities": {"user_id": ["u1"], "domain_userid": []}, "attributes": [good]}),
        json!({"entities": {"user_id": ["u1"]}, "attributes": good}),
        json!({"entities": {"user_id": ["u1"]}, "attributes": []}),
        json!({"entities": {"user_id": ["u1"]}}),
        json!({"attributes": [good]}),
        json!({"entities": {"user_id": ["u1"]}, "attributes": [good], "service": "s"}),
        json!([]),
        json!("entities"),
    ] {
        let mut c = json_case(
            "attributes",
            Method::POST,
            "/api/v1/get-online-attributes",
            &body,
        );
        c.refused = true;
        out.push(c);
    }

    // A few reads that must keep working throughout.
    for _ in 0..10 {
        let mut c = http("reads", Method::GET, "/metrics", None);
        c.refused = false;
        out.push(c);
        let mut c = http("reads", Method::GET, "/api/v1/registry/views/", None);
        c.refused = false;
        out.push(c);
    }

    out.shuffle(rng);
    out
}

trait Refused {
    fn tap_refused(self, refused: bool) -> Self;
}
impl Refused for Case {
    fn tap_refused(mut self, refused: bool) -> Self {
        self.refused = refused;
        self
    }
}

/// A status, the content type and the body, or why there was no complete answer.
type Answer = Result<(u16, Option<String>, Vec<u8>), String>;

/// What one request got, and how long it took.
struct Outcome {
    answer: Answer,
    took: Duration,
}

async fn run(client: &reqwest::Client, addr: SocketAddr, case: &Case) -> Outcome {
    let started = Instant::now();
    let answer = match tokio::time::timeout(DEADLINE, send(client, addr, &case.send)).await {
        Ok(a) => a,
        Err(_) => Err(format!("no answer within {DEADLINE:?}")),
    };
    Outcome {
        answer,
        took: started.elapsed(),
    }
}

async fn send(client: &reqwest::Client, addr: SocketAddr, how: &Send) -> Answer {
    match how {
        Send::Http {
            method,
            path,
            headers,
            body,
            auth,
        } => {
            let mut req = client.request(method.clone(), format!("http://{addr}{path}"));
            if *auth {
                req = req.bearer_auth(TOKEN);
            }
            for (k, v) in headers {
                let v = reqwest::header::HeaderValue::from_bytes(v)
                    .map_err(|e| format!("header: {e}"))?;
                req = req.header(*k, v);
            }
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            let resp = req.send().await.map_err(|e| format!("send: {e:?}"))?;
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let body = resp.bytes().await.map_err(|e| format!("body: {e:?}"))?;
            Ok((status, ct, body.to_vec()))
        }
        Send::Raw(bytes) => send_raw(addr, bytes.clone()).await,
    }
}

/// Writes `bytes` to a fresh connection while reading the answer (the server
/// may answer before it has read everything), until one complete response.
async fn send_raw(addr: SocketAddr, bytes: Vec<u8>) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        // An early answer and close may cut the write short: that is fine.
        let _ = wr.write_all(&bytes).await;
        let _ = wr.flush().await;
        // Keep the write half open (no FIN) until the answer is read.
        std::future::pending::<()>().await;
        drop(wr);
    });
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let result = loop {
        if let Some(r) = parse_response(&buf, false) {
            break r;
        }
        match rd.read(&mut chunk).await {
            Ok(0) => break parse_response(&buf, true).expect("at EOF"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if !buf.is_empty() => {
                break parse_response(&buf, true)
                    .expect("at EOF")
                    .map_err(|why| format!("{why} ({e})"))
            }
            Err(e) => break Err(format!("read: {e}")),
        }
    };
    writer.abort();
    result
}

/// A complete HTTP/1.1 response in `buf`: `None` while more may come, an
/// error at EOF when it is incomplete.
fn parse_response(buf: &[u8], eof: bool) -> Option<Answer> {
    let incomplete = |what: &str| {
        eof.then(|| {
            Err(format!(
                "the connection closed after {} bytes, {what}: {:?}",
                buf.len(),
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ))
        })
    };
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return incomplete("before the end of the headers");
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
    {
        Some(s) if status_line.starts_with("HTTP/1.") => s,
        _ => return Some(Err(format!("not an HTTP status line: {status_line:?}"))),
    };
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let ct = header("content-type");
    let body = &buf[end + 4..];
    if let Some(len) = header("content-length") {
        let len: usize = match len.parse() {
            Ok(l) => l,
            Err(_) => return Some(Err(format!("bad content-length {len:?}"))),
        };
        return if body.len() >= len {
            Some(Ok((status, ct, body[..len].to_vec())))
        } else {
            incomplete("in the body")
        };
    }
    if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        let mut rest = body;
        let mut out = Vec::new();
        loop {
            let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                return incomplete("in a chunk size");
            };
            let size = String::from_utf8_lossy(&rest[..eol]);
            let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16) else {
                return Some(Err(format!("bad chunk size {size:?}")));
            };
            if size == 0 {
                return Some(Ok((status, ct, out)));
            }
            if rest.len() < eol + 2 + size + 2 {
                return incomplete("in a chunk");
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
    }
    // No framing: the body runs to the close.
    eof.then(|| Ok((status, ct, body.to_vec())))
}

/// The daemon's resident set, in KiB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/{pid}/status")
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_prompt_4xx_answers_and_the_daemon_keeps_syncing() {
    let started = Instant::now();
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let view = "hostile";
    let mut api = Api::start(Some(view)).await;
    let before_views = api.views().await;
    let before_entities = api.entities().await;
    assert_eq!(before_views.len(), 1, "{before_views:?}");

    let mut rng = StdRng::seed_from_u64(seed);
    let table = api.world.tables[0].table.clone();
    let cases = cases(&mut rng, &api.world.db, &table, view);
    let total = cases.len();
    assert!(total >= 500, "only {total} cases");
    // A connection per request: the server closes a connection whose body it
    // refused unread (as HTTP/1.1 allows), and a pooled client racing that
    // close would report a reused connection's close as a dropped request.
    // Each request on its own connection must still get a whole answer.
    let client = reqwest::Client::builder()
        .timeout(DEADLINE)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let addr = api.addr;
    let outcomes: Vec<(&Case, Outcome)> = futures::stream::iter(cases.iter())
        .map(|c| {
            let client = &client;
            async move { (c, run(client, addr, c).await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    let mut failures = Vec::new();
    let mut by_class: std::collections::BTreeMap<
        &str,
        (usize, std::collections::BTreeMap<u16, usize>),
    > = Default::default();
    let mut slowest = Duration::ZERO;
    for (case, outcome) in &outcomes {
        slowest = slowest.max(outcome.took);
        let what = format!("[{}] {}", case.class, case.what);
        if outcome.took > DEADLINE {
            failures.push(format!("{what}: took {:?}", outcome.took));
        }
        let (status, ct, body) = match &outcome.answer {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{what}: {e}"));
                continue;
            }
        };
        let entry = by_class.entry(case.class).or_default();
        entry.0 += 1;
        *entry.1.entry(*status).or_default() += 1;
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
        if *status >= 500 {
            failures.push(format!("{what}: {status} {text}"));
        } else if case.refused && !(400..500).contains(status) {
            failures.push(format!("{what}: expected a 4xx, got {status} {text}"));
        }
        // Every error the application answers (all of reqwest's) is JSON with a detail.
        if matches!(case.send, Send::Http { .. }) && *status >= 400 {
            let detail = serde_json::from_slice::<Json>(body)
                .ok()
                .and_then(|j| j["detail"].as_str().map(String::from));
            if detail.is_none() || ct.as_deref() != Some("application/json") {
                failures.push(format!(
                    "{what}: {status} without a JSON detail: {ct:?} {text}"
                ));
            }
            if body.len() > 16 * 1024 {
                failures.push(format!("{what}: {status} answer of {} bytes", body.len()));
            }
        }
    }
    let summary = format!(
        "seed {seed}: {total} requests, slowest {slowest:?}, by class and status: {by_class:?}"
    );
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{summary}\n{} failures:\n{}\nlog tail:\n{}",
        failures.len(),
        failures.join("\n"),
        api.daemon
            .log_text()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The daemon is up, small and never panicked.
    assert!(api.daemon.is_running(), "{}", api.daemon.log_text());
    let rss = rss_kb(api.daemon.pid());
    assert!(rss < MAX_RSS_KB, "RSS {rss} KiB after the run");
    assert!(
        api.daemon.events("request handler panicked").is_empty(),
        "a handler panicked"
    );

    // Nothing invalid was stored: every view re-validates, the synced one is
    // unchanged, every entity name passes the rule.
    let after = api.views().await;
    for v in &after {
        let view: View = serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("a stored view does not parse ({e}): {v}"));
        assert_eq!(view.problems(), Vec::<String>::new(), "stored: {v}");
    }
    for v in &before_views {
        assert!(after.contains(v), "the synced view changed: {v}");
    }
    let entities = api.entities().await;
    for e in &entities {
        let name = e["name"].as_str().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(identifier_problem("name", name), None, "stored entity {e}");
    }
    for e in &before_entities {
        assert!(entities.contains(e), "entity {e} is gone");
    }

    // Still syncing: new rows converge.
    api.world.insert(0, 60).await;
    assert!(
        api.world.wait_converged(0, Duration::from_secs(30)).await,
        "the view stopped converging:\n{}",
        api.daemon.log_text()
    );
    eprintln!(
        "{total} hostile requests, RSS {rss} KiB, {} views stored, {:?} in all",
        after.len(),
        started.elapsed()
    );
}
