//! `/metrics` end to end, through the built binary: the daemon syncs a Parquet
//! table and answers a few API requests, then the whole exposition is parsed
//! strictly (every line a valid sample or HELP/TYPE line of the Prometheus text
//! format, samples inside their declared family, histograms consistent, no
//! series twice), linted by `promtool check metrics`, and the key series are
//! checked by name and value against the table. The alert rules and the
//! Grafana dashboard in `deploy/` may only name metrics the daemon exports;
//! the rules pass `promtool check rules` and their unit tests.
//!
//! Assumes `redis-server` and `promtool` (Debian's `prometheus` package, which
//! `scripts/ensure-deps.sh` installs) on PATH.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::fixtures::{api_comes_up, ParquetWorld, Rows};
use crate::support::{self, project_root};

const VIEW: &str = "web_features";
const LABEL: &str = "web_features:1";
const TOKEN: &str = "metrics-e2e-token-never-exported";

/// (DOMAIN_USERID, seconds before now for UPDATED_AT, VISITS)
const ROWS: [(Option<&str>, i64, i64); 6] = [
    (Some("a"), 600, 1),
    (Some("a"), 300, 2),
    (Some("b"), 500, 3),
    // Does not fit the view's int32 field: written as a null, counted.
    (Some("c"), 400, 1 << 40),
    (Some("d"), 200, 5),
    // Cannot be keyed: left out, counted.
    (None, 700, 6),
];

/// Labels of one sample, sorted by name.
type Labels = BTreeMap<String, String>;

/// A parsed exposition: families by name (their TYPE) and every sample.
#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, String>,
    samples: BTreeMap<(String, Labels), f64>,
}

impl Exposition {
    /// The value of the one sample `name{labels}`, exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    fn view_value(&self, name: &str) -> f64 {
        self.value(name, &[("view", LABEL)])
            .unwrap_or_else(|| panic!("no {name}{{view=\"{LABEL}\"}}"))
    }

    /// Every name a query may use: families, and a histogram's series.
    fn queryable_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (family, kind) in &self.families {
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{family}{suffix}"));
                }
            }
            names.insert(family.clone());
        }
        names
    }
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn value_of(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        t => t.parse().map_err(|_| format!("`{t}` is not a value")),
    }
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest of `s`.
fn labels_of(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find("=\"").ok_or("a label without =\"")?;
        let name = &rest[..eq];
        if !valid_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name `{name}`"));
        }
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break eq + 2 + i + 1,
                (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape `\\{c}`")),
                },
                (_, '\n') => return Err("a raw newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label `{name}` twice"));
        }
        rest = &rest[end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses the Prometheus text format (0.0.4) as the daemon must write it:
/// HELP then TYPE once per family, its samples right after, nothing else.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut current: Option<(String, String)> = None;
    let mut helped: Option<String> = None;
    // Per histogram series (labels without `le`): its buckets in order.
    let mut buckets: BTreeMap<(String, Labels), Vec<(f64, f64)>> = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let fail = |e: String| format!("line {}: {e}: `{line}`", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| fail("no help text".into()))?;
            if !valid_name(name, true) || help.trim().is_empty() {
                return Err(fail("bad HELP".into()));
            }
            if out.families.contains_key(name) {
                return Err(fail("a family declared twice".into()));
            }
            helped = Some(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| fail("no type".into()))?;
            if helped.as_deref() != Some(name) {
                return Err(fail("TYPE without its HELP right before".into()));
            }
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(fail(format!("type `{kind}`")));
            }
            out.families.insert(name.to_string(), kind.to_string());
            current = Some((name.to_string(), kind.to_string()));
            helped = None;
        } else if line.starts_with('#') || line.is_empty() {
            return Err(fail("neither HELP, TYPE nor a sample".into()));
        } else {
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| fail("no value".into()))?;
            let name = &line[..name_end];
            let (labels, rest) = labels_of(&line[name_end..]).map_err(fail)?;
            let value = rest
                .strip_prefix(' ')
                .ok_or_else(|| fail("no space before the value".into()))?;
            // No timestamps: the daemon exports current values only.
            let value = value_of(value).map_err(fail)?;
            let (family, kind) = current
                .as_ref()
                .ok_or_else(|| fail("a sample before any TYPE".into()))?;
            let fits = match kind.as_str() {
                "histogram" => [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .contains(&name.to_string()),
                _ => name == family,
            };
            if !fits {
                return Err(fail(format!("a sample outside its family `{family}`")));
            }
            if kind == "counter" && !(value >= 0.0 && value.fract() == 0.0) {
                return Err(fail("a counter that is not a whole number".into()));
            }
            if name.ends_with("_bucket") {
                let le = labels
                    .get("le")
                    .ok_or_else(|| fail("a bucket without le".into()))?;
                let le = value_of(le).map_err(fail)?;
                let mut series = labels.clone();
                series.remove("le");
                buckets
                    .entry((family.clone(), series))
                    .or_default()
                    .push((le, value));
            }
            if out
                .samples
                .insert((name.to_string(), labels), value)
                .is_some()
            {
                return Err(fail("a series twice".into()));
            }
        }
    }
    for ((family, labels), bs) in &buckets {
        let ordered = bs.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let inf = bs.last().filter(|b| b.0 == f64::INFINITY).map(|b| b.1);
        let count = out
            .samples
            .get(&(format!("{family}_count"), labels.clone()))
            .copied();
        let sum = out.samples.get(&(format!("{family}_sum"), labels.clone()));
        if !ordered || inf.is_none() || inf != count || sum.is_none() {
            return Err(format!(
                "histogram {family}{labels:?}: buckets {bs:?}, count {count:?}, sum {sum:?}"
            ));
        }
    }
    Ok(out)
}

/// The metric names a PromQL expression uses.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("materializer_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` string anywhere in a Grafana dashboard.
fn exprs(doc: &Json, out: &mut Vec<String>) {
    match doc {
        Json::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Json::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(project_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool on PATH (Debian's `prometheus` package; scripts/ensure-deps.sh installs it)",
        );
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn world(port: u16) -> ParquetWorld {
    let w = ParquetWorld::new();
    w.write_config(
        &w.config()
            .set("api.listen", format!("127.0.0.1:{port}"))
            .set("api.tokens", [TOKEN])
            .set("scheduler.interval", "1h"),
    );
    w.write_view(
        "web.json",
        &json!({
            "name": VIEW, "version": 1,
            "entity": {"name": "domain_userid"},
            "batch_source": {"name": "web", "database": "ANY", "schema": "ANY",
                             "table": "web_events", "timestamp_field": "updated_at"},
            "fields": [{"name": "VISITS", "type": "int32"}],
            "online": true
        }),
    );
    let rows = Rows::default()
        .text("DOMAIN_USERID", ROWS.iter().map(|r| r.0))
        .int64("VISITS", ROWS.iter().map(|r| r.2))
        .utc_micros(
            "UPDATED_AT",
            ROWS.iter().map(|r| Some((w.now - r.1) * 1_000_000)),
        );
    w.write_table("WEB_EVENTS", "part-0.parquet", rows, None);
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_exported_under_conventional_names_in_a_strictly_valid_exposition() {
    let port = support::free_port();
    let w = world(port);
    let base = format!("http://127.0.0.1:{port}");
    let started = chrono::Utc::now().timestamp() as f64;
    let daemon = w.spawn("daemon", &["run"], &[]);
    assert!(
        api_comes_up(&base).await,
        "the API never came up; log:\n{}",
        daemon.log_text()
    );
    let http = reqwest::Client::new();
    let scrape = || async {
        let r = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        (kind, r.text().await.unwrap())
    };
    let ran = format!(r#"materializer_runs_total{{view="{LABEL}",outcome="ok"}} 1"#);
    assert!(
        support::wait_for(Duration::from_secs(30), || async {
            scrape().await.1.contains(&ran)
        })
        .await,
        "the first run never finished ok; log:\n{}",
        daemon.log_text()
    );

    // Requests of every kind: a route with parameters, refused and unknown.
    let one_view = format!("{base}/api/v1/registry/views/{VIEW}/versions/1");
    let got = http.get(&one_view).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(got.status(), 200);
    let refused = http.get(&one_view).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    for unknown in ["/nope", "/api/v1/nope/deeper"] {
        let r = http
            .get(format!("{base}{unknown}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{unknown}");
    }

    let (content_type, text) = scrape().await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let m = parse(&text).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
    let (ok, lint) = promtool(&["check", "metrics"], Some(&text));
    assert!(
        ok && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}\n{text}"
    );
    assert!(!text.contains(TOKEN), "the API token is in /metrics");
    assert!(!text.contains(&w.redis.url), "the Redis URL is in /metrics");

    // Conventions the parser does not know: one prefix, counters in _total
    // and nothing else, times and durations in seconds.
    for (family, kind) in &m.families {
        assert!(family.starts_with("materializer_"), "{family}");
        assert_eq!(
            family.ends_with("_total"),
            kind == "counter",
            "{family} is a {kind}"
        );
        if family.contains("timestamp") || family.contains("duration") || family.contains("lag") {
            assert!(family.ends_with("_seconds"), "{family}");
        }
    }

    // The run, by name and value, against the table.
    let keyed: Vec<_> = ROWS.iter().filter(|r| r.0.is_some()).collect();
    let entities: BTreeSet<_> = keyed.iter().map(|r| r.0).collect();
    let newest = w.now - keyed.iter().map(|r| r.1).min().unwrap();
    assert_eq!(
        m.view_value("materializer_rows_read_total"),
        ROWS.len() as f64
    );
    assert_eq!(
        m.view_value("materializer_entities_written_total"),
        entities.len() as f64
    );
    assert_eq!(m.view_value("materializer_entities_stale_total"), 0.0);
    assert_eq!(m.view_value("materializer_warehouse_statements_total"), 0.0);
    // One page: one timed write to the store.
    assert_eq!(
        m.view_value("materializer_store_write_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        m.value(
            "materializer_rows_skipped_total",
            &[("view", LABEL), ("reason", "null_entity")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "materializer_values_skipped_total",
            &[("view", LABEL), ("reason", "overflow")]
        ),
        Some(1.0)
    );
    assert_eq!(m.view_value("materializer_run_duration_seconds_count"), 1.0);
    assert_eq!(
        m.view_value("materializer_watermark_timestamp_seconds"),
        newest as f64
    );
    let lag = m.view_value("materializer_freshness_lag_seconds");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        lag >= (w.now - newest) as f64 && lag <= now - newest as f64 + 1.0,
        "lag {lag}"
    );
    let success = m.view_value("materializer_last_success_timestamp_seconds");
    assert!(
        success >= started - 1.0 && success <= now + 1.0,
        "{success}"
    );
    assert_eq!(m.view_value("materializer_view_interval_seconds"), 3600.0);
    assert_eq!(m.view_value("materializer_consecutive_failed_runs"), 0.0);
    assert_eq!(
        m.value(
            "materializer_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    // HTTP by route template and status; unknown paths are `other`.
    let requests = |route: &str, status: &str| {
        m.value(
            "materializer_http_request_duration_seconds_count",
            &[("route", route), ("status", status)],
        )
    };
    let template = "/api/v1/registry/views/{name}/versions/{version}";
    assert_eq!(requests(template, "200"), Some(1.0), "{text}");
    assert_eq!(requests(template, "401"), Some(1.0), "{text}");
    assert_eq!(requests("other", "404"), Some(2.0), "{text}");
    assert!(requests("/metrics", "200").is_some_and(|n| n >= 1.0));
    for (name, labels) in m.samples.keys() {
        if let Some(route) = labels.get("route") {
            assert!(
                route == "other" || route.starts_with('/') && !route.contains("nope"),
                "{name}{labels:?}"
            );
        }
    }

    // deploy/ names only what the daemon exports.
    let exported = m.queryable_names();
    let dashboard: Json = serde_json::from_str(
        &std::fs::read_to_string(project_root().join("deploy/grafana/materializer.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut dashboard_exprs = Vec::new();
    exprs(&dashboard, &mut dashboard_exprs);
    let rules =
        std::fs::read_to_string(project_root().join("deploy/prometheus/alerts.yml")).unwrap();
    let used: BTreeSet<String> = dashboard_exprs
        .iter()
        .flat_map(|e| names_in(e))
        .chain(names_in(&rules))
        .collect();
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "deploy/ names what /metrics lacks: {unknown:?}"
    );
    let dashboard_names: BTreeSet<_> = dashboard_exprs.iter().flat_map(|e| names_in(e)).collect();
    for needed in [
        "materializer_freshness_lag_seconds",
        "materializer_rows_read_total",
        "materializer_entities_written_total",
        "materializer_runs_total",
        "materializer_rows_skipped_total",
    ] {
        assert!(
            dashboard_names.contains(needed),
            "the dashboard lacks {needed}"
        );
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"], None);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(
        &["test", "rules", "deploy/prometheus/alerts_test.yml"],
        None,
    );
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn the_strict_parser_refuses_what_prometheus_would() {
    let good = "# HELP x_total A.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\n\"} 1\n";
    assert!(parse(good).is_ok(), "{:?}", parse(good));
    for bad in [
        "x_total 1\n",
        "# HELP x_total A.\n# TYPE x_total counter\ny_total 1\n",
        "# HELP x_total A.\n# TYPE x_total counter\nx_total{a=\"q\\t\"} 1\n",
        "# HELP x_total A.\n# TYPE x_total counter\nx_total 1\nx_total 2\n",
        "# HELP x_total A.\n# TYPE x_total counter\nx_total 1.5\n",
        "# HELP h A.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP g A.\n# TYPE g gauge\ng 1 123\n",
        "# HELP g A.\n# TYPE g gauge\ng 1",
    ] {
        assert!(parse(bad).is_err(), "accepted:\n{bad}");
    }
}
