//! Metrics, exposed in the Prometheus text format (0.0.4) through
//! `prometheus-client`, named by Prometheus conventions.
//!
//! Promises:
//! - one unit per metric, in its name: counters end in `_total`, durations in
//!   `_seconds`, unix times in `_timestamp_seconds`; what a count counts is in
//!   the name too: warehouse *rows* (read, skipped whole) versus Redis
//!   *entities* (profiles written, or left alone as stale) versus field
//!   *values* (written as Feast nulls);
//! - every finished run is counted by view and outcome (`ok` or the
//!   [`RunError::kind`](crate::sync::RunError::kind)), with its rows, entities,
//!   warehouse statements, skips by reason and duration; per view, the
//!   watermark and the last success as unix times, the interval it is
//!   scheduled at, the failed runs in a row, and the freshness lag (now minus
//!   watermark, computed at scrape time so it grows while nothing runs);
//! - process-wide, whichever [`Metrics`] renders them: `materializer_build_info`,
//!   HTTP request durations by route template and status ([`observe_http`]),
//!   and the latency of store writes by view ([`observe_store_write`]);
//! - label values are escaped by the encoder, and only view names, outcome and
//!   skip-reason words, route templates and status codes become labels: never a
//!   raw request path, entity, value or secret, so series stay bounded by the
//!   registered views and the API's routes.
//!
//! Assumes a few hundred views at most (every view has a few dozen series),
//! and that a deleted view's counters may stay until restart: a counter never
//! goes backwards within a process, so only its gauges are dropped ([`Metrics::forget`]).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::model::View;
use crate::profiles::RunRecord;
use crate::time::Nanos;
use crate::warehouse::decode::SkipReason;

/// Upper bounds (seconds) of the run duration histogram: runs take from a
/// fraction of a second (an incremental window) to many minutes (a full read).
const RUN_BUCKETS: [f64; 11] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// HTTP requests: reads answer in about a millisecond, and past
/// `api.request_timeout` (30 s by default) a request is answered 503. Few
/// buckets, since every route and status has its own series.
const HTTP_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];

/// One store write is a part of a page (up to 8,192 entities, in script calls
/// of `sync.write_batch` each, about a millisecond per call on an idle Redis).
const STORE_WRITE_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Skip reasons that drop a whole warehouse row; every other reason is one
/// field value written as Feast's null while the rest of the row lands.
const ROW_SKIPS: [SkipReason; 3] = [
    SkipReason::NullEntity,
    SkipReason::NullTimestamp,
    SkipReason::TimestampOutOfRange,
];

/// The `route` label of requests that matched no route.
pub const OTHER_ROUTE: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabel {
    view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    view: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    view: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type Seconds = Gauge<f64, AtomicU64>;

/// What belongs to the process rather than to one runner: the API and the
/// store are reached from places that hold no [`Metrics`].
struct Process {
    http: Histograms<HttpLabels>,
    store_write: Histograms<ViewLabel>,
}

static PROCESS: LazyLock<Process> = LazyLock::new(|| Process {
    http: Family::new_with_constructor(|| Histogram::new(HTTP_BUCKETS)),
    store_write: Family::new_with_constructor(|| Histogram::new(STORE_WRITE_BUCKETS)),
});

/// Records one answered HTTP request. `route` is the matched route template
/// (`/api/v1/registry/views/{name}`), never the raw path; `None`, or the
/// catch-all a nested router's fallback gets, counts as [`OTHER_ROUTE`].
pub fn observe_http(route: Option<&str>, status: u16, seconds: f64) {
    // axum matches a nested router's fallback with a private wildcard route:
    // as a label it would only say "unknown route", in axum's words.
    let route = route
        .filter(|r| !r.contains("__private__"))
        .unwrap_or(OTHER_ROUTE);
    PROCESS
        .http
        .get_or_create(&HttpLabels {
            route: route.to_string(),
            status,
        })
        .observe(seconds);
}

/// Records how long one write to the Profiles Store took for `view`
/// (`name:version`, as [`crate::model::ViewId`] displays).
pub fn observe_store_write(view: &str, seconds: f64) {
    PROCESS
        .store_write
        .get_or_create(&ViewLabel {
            view: view.to_string(),
        })
        .observe(seconds);
}

/// The run metrics of one runner, and the registry `/metrics` renders.
pub struct Metrics {
    registry: Registry,
    /// Used for views without a `refresh_rate` (`scheduler.interval`).
    default_interval: Duration,
    runs: Family<OutcomeLabels, Counter>,
    rows_read: Family<ViewLabel, Counter>,
    rows_skipped: Family<ReasonLabels, Counter>,
    values_skipped: Family<ReasonLabels, Counter>,
    entities_written: Family<ViewLabel, Counter>,
    entities_stale: Family<ViewLabel, Counter>,
    statements: Family<ViewLabel, Counter>,
    run_duration: Histograms<ViewLabel>,
    watermark: Family<ViewLabel, Seconds>,
    last_success: Family<ViewLabel, Seconds>,
    interval: Family<ViewLabel, Seconds>,
    failed_in_a_row: Family<ViewLabel, Gauge>,
    freshness_lag: Family<ViewLabel, Seconds>,
    /// Watermarks (nanoseconds) the lag is computed from at scrape time; its
    /// lock also orders [`Metrics::forget`] against a render, so a scrape
    /// cannot bring a forgotten view's lag back.
    watermarks: Mutex<BTreeMap<String, Nanos>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(crate::config::SchedulerConfig::default().interval)
    }
}

impl Metrics {
    /// `default_interval` is `scheduler.interval`, the period of views without
    /// a `refresh_rate`.
    pub fn new(default_interval: Duration) -> Self {
        let mut registry = Registry::default();
        // `prometheus-client` appends `_total` to counter names, the
        // `_info` suffix and the help text's final period.
        let runs = Family::default();
        registry.register(
            "materializer_runs",
            "Finished sync runs, by view and outcome (ok, or the error kind: permanent, retryable, interrupted, superseded)",
            runs.clone(),
        );
        let rows_read = Family::default();
        registry.register(
            "materializer_rows_read",
            "Rows read from the warehouse table",
            rows_read.clone(),
        );
        let rows_skipped = Family::default();
        registry.register(
            "materializer_rows_skipped",
            "Warehouse rows left out, by reason (null_entity, null_timestamp, timestamp_out_of_range)",
            rows_skipped.clone(),
        );
        let values_skipped = Family::default();
        registry.register(
            "materializer_values_skipped",
            "Field values written as Feast nulls because they do not fit the field type, by reason",
            values_skipped.clone(),
        );
        let entities_written = Family::default();
        registry.register(
            "materializer_entities_written",
            "Entity profiles written to Redis (the latest row of each entity in a page)",
            entities_written.clone(),
        );
        let entities_stale = Family::default();
        registry.register(
            "materializer_entities_stale",
            "Entity profiles not written because Redis held a newer timestamp",
            entities_stale.clone(),
        );
        let statements = Family::default();
        registry.register(
            "materializer_warehouse_statements",
            "Statements sent to the warehouse by sync runs",
            statements.clone(),
        );
        let run_duration: Histograms<ViewLabel> =
            Family::new_with_constructor(|| Histogram::new(RUN_BUCKETS));
        registry.register(
            "materializer_run_duration_seconds",
            "Duration of finished sync runs",
            run_duration.clone(),
        );
        let watermark = Family::default();
        registry.register(
            "materializer_watermark_timestamp_seconds",
            "The view's watermark (greatest row timestamp committed), unix time",
            watermark.clone(),
        );
        let last_success = Family::default();
        registry.register(
            "materializer_last_success_timestamp_seconds",
            "When the view's last successful run finished, unix time",
            last_success.clone(),
        );
        let interval = Family::default();
        registry.register(
            "materializer_view_interval_seconds",
            "The period the view is synced at (its refresh_rate, else scheduler.interval)",
            interval.clone(),
        );
        let failed_in_a_row = Family::default();
        registry.register(
            "materializer_consecutive_failed_runs",
            "Runs of the view that failed (permanent or retryable) since its last success",
            failed_in_a_row.clone(),
        );
        let freshness_lag = Family::default();
        registry.register(
            "materializer_freshness_lag_seconds",
            "Now minus the view's watermark, at scrape time",
            freshness_lag.clone(),
        );
        registry.register(
            "materializer_build",
            "The running build; the value is always 1",
            Info::new(vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
        );
        registry.register(
            "materializer_http_request_duration_seconds",
            "HTTP requests answered, by route template (other: no route matched) and status",
            PROCESS.http.clone(),
        );
        registry.register(
            "materializer_store_write_duration_seconds",
            "Duration of writes to the Profiles Store (a part of a page, as newest-wins script calls), by view",
            PROCESS.store_write.clone(),
        );
        Metrics {
            registry,
            default_interval,
            runs,
            rows_read,
            rows_skipped,
            values_skipped,
            entities_written,
            entities_stale,
            statements,
            run_duration,
            watermark,
            last_success,
            interval,
            failed_in_a_row,
            freshness_lag,
            watermarks: Mutex::default(),
        }
    }

    /// Counts one finished run of `view`. `outcome` is `ok` or the error
    /// kind; `watermark` is the view's watermark after the run.
    pub fn record_run(
        &self,
        view: &View,
        rec: &RunRecord,
        outcome: &str,
        watermark: Option<Nanos>,
    ) {
        let name = view.id().to_string();
        let label = ViewLabel { view: name.clone() };
        self.runs
            .get_or_create(&OutcomeLabels {
                view: name.clone(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.rows_read.get_or_create(&label).inc_by(rec.rows_read);
        self.entities_written
            .get_or_create(&label)
            .inc_by(rec.rows_written);
        self.entities_stale
            .get_or_create(&label)
            .inc_by(rec.rows_stale);
        self.statements.get_or_create(&label).inc_by(rec.statements);
        for (reason, n) in &rec.skipped {
            let family = if ROW_SKIPS.iter().any(|r| r.as_str() == reason) {
                &self.rows_skipped
            } else {
                &self.values_skipped
            };
            family
                .get_or_create(&ReasonLabels {
                    view: name.clone(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        self.run_duration
            .get_or_create(&label)
            .observe(rec.duration_ms as f64 / 1000.0);
        let interval = view.refresh_rate().unwrap_or(self.default_interval);
        self.interval
            .get_or_create(&label)
            .set(interval.as_secs_f64());
        let failed = self.failed_in_a_row.get_or_create(&label);
        match outcome {
            "ok" => {
                failed.set(0);
                self.last_success
                    .get_or_create(&label)
                    .set(seconds(crate::time::now()));
            }
            // A reshape, a shutdown or another replica's lease says nothing
            // about the view's health.
            "permanent" | "retryable" => {
                failed.inc();
            }
            _ => {}
        }
        let mut marks = self.watermarks.lock().expect("metrics lock");
        if let Some(w) = watermark {
            self.watermark.get_or_create(&label).set(seconds(w));
            marks.insert(name, w);
        }
    }

    /// Drops a deleted view's gauges; its counters and histograms stay until
    /// restart, as counters should (a scrape never sees one go backwards).
    pub fn forget(&self, id: &crate::model::ViewId) {
        let label = ViewLabel {
            view: id.to_string(),
        };
        let mut marks = self.watermarks.lock().expect("metrics lock");
        marks.remove(&label.view);
        for family in [
            &self.watermark,
            &self.last_success,
            &self.interval,
            &self.freshness_lag,
        ] {
            family.remove(&label);
        }
        self.failed_in_a_row.remove(&label);
    }

    /// The exposition, in the Prometheus text format (0.0.4), which is what
    /// `/metrics` declares as its content type.
    pub fn render(&self) -> String {
        let marks = self.watermarks.lock().expect("metrics lock");
        let now = crate::time::now();
        for (view, w) in marks.iter() {
            self.freshness_lag
                .get_or_create(&ViewLabel { view: view.clone() })
                .set(seconds(now.saturating_sub(*w)));
        }
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn seconds(nanos: Nanos) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str) -> View {
        serde_json::from_value(serde_json::json!({
            "name": name, "version": 1, "entity": {"name": "domain_userid"},
            "batch_source": {"name": "src", "timestamp_field": "UPDATED_AT",
                "database": "D", "schema": "S", "table": "T"},
            "online": true, "offline": true, "refresh_rate": "PT1M",
            "fields": [{"name": "N", "type": "int32"}],
        }))
        .expect("a valid view")
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"))
    }

    #[test]
    fn a_run_shows_up_under_conventional_names_with_escaped_labels() {
        let m = Metrics::new(Duration::from_secs(300));
        let v = view("v\"x");
        let rec = RunRecord {
            rows_read: 5,
            rows_written: 3,
            rows_stale: 1,
            statements: 4,
            duration_ms: 700,
            skipped: [("overflow".to_string(), 2), ("null_entity".to_string(), 1)]
                .into_iter()
                .collect(),
            ..RunRecord::default()
        };
        m.record_run(&v, &rec, "ok", Some(1_000_000_000));
        let text = m.render();
        let l = r#"{view="v\"x:1"}"#;
        for (series, value) in [
            (
                r#"materializer_runs_total{view="v\"x:1",outcome="ok"}"#.to_string(),
                "1",
            ),
            (format!("materializer_rows_read_total{l}"), "5"),
            (format!("materializer_entities_written_total{l}"), "3"),
            (format!("materializer_entities_stale_total{l}"), "1"),
            (format!("materializer_warehouse_statements_total{l}"), "4"),
            (
                r#"materializer_values_skipped_total{view="v\"x:1",reason="overflow"}"#.into(),
                "2",
            ),
            (
                r#"materializer_rows_skipped_total{view="v\"x:1",reason="null_entity"}"#.into(),
                "1",
            ),
            (
                r#"materializer_run_duration_seconds_bucket{view="v\"x:1",le="1"}"#.into(),
                "1",
            ),
            (
                r#"materializer_run_duration_seconds_bucket{view="v\"x:1",le="0.5"}"#.into(),
                "0",
            ),
            (
                format!("materializer_watermark_timestamp_seconds{l}"),
                "1.0",
            ),
            (format!("materializer_view_interval_seconds{l}"), "60.0"),
            (format!("materializer_consecutive_failed_runs{l}"), "0"),
        ] {
            assert_eq!(
                line(&text, &format!("{series} ")),
                format!("{series} {value}")
            );
        }
        assert!(text.contains(&format!(
            "materializer_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        let lag: f64 = line(&text, "materializer_freshness_lag_seconds{")
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(lag > 1.0e9, "now minus 1970-01-01T00:00:01Z: {lag}");
    }

    #[test]
    fn failures_count_in_a_row_until_a_success_and_forget_drops_gauges_only() {
        let m = Metrics::default();
        let v = view("f");
        for outcome in ["retryable", "permanent", "superseded"] {
            m.record_run(&v, &RunRecord::default(), outcome, Some(5_000_000_000));
        }
        let text = m.render();
        assert!(
            text.contains("materializer_consecutive_failed_runs{view=\"f:1\"} 2\n"),
            "{text}"
        );
        m.forget(&v.id());
        let text = m.render();
        for gone in [
            "materializer_consecutive_failed_runs{",
            "materializer_freshness_lag_seconds{",
            "materializer_watermark_timestamp_seconds{",
            "materializer_view_interval_seconds{",
        ] {
            assert!(!text.contains(gone), "{gone} stays:\n{text}");
        }
        assert!(text.contains("materializer_runs_total{view=\"f:1\",outcome=\"retryable\"} 1\n"));
    }

    #[test]
    fn http_routes_are_templates_and_unknown_ones_are_other() {
        observe_http(Some("/api/v1/registry/views/{name}"), 200, 0.002);
        // 418: no other test of this binary answers it.
        observe_http(None, 418, 0.001);
        observe_http(
            Some("/api/v1/{*__private__axum_nest_tail_param}"),
            418,
            0.001,
        );
        observe_store_write("w:1", 0.003);
        let text = Metrics::default().render();
        assert!(text.contains(
            "materializer_http_request_duration_seconds_count{route=\"/api/v1/registry/views/{name}\",status=\"200\"} "
        ), "{text}");
        assert!(text.contains(
            "materializer_http_request_duration_seconds_count{route=\"other\",status=\"418\"} 2\n"
        ), "{text}");
        assert!(
            text.contains(
                "materializer_store_write_duration_seconds_bucket{view=\"w:1\",le=\"0.005\"} 1\n"
            ),
            "{text}"
        );
    }
}
