//! Run metrics, rendered in the Prometheus text format.
//!
//! Promises: every finished run is counted by view and outcome, with rows
//! read / written / stale, warehouse statements sent, skips by reason, and
//! its duration in a histogram; per-view watermark and freshness lag (now -
//! watermark, computed at scrape time) are exported as gauges. Label values
//! are escaped. Assumes a few hundred views at most: everything sits behind
//! one mutex.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::model::ViewId;
use crate::profiles::RunRecord;
use crate::time::Nanos;

/// Upper bounds (seconds) of the run duration histogram.
const BUCKETS: [f64; 11] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    runs: BTreeMap<(String, String), u64>,
    rows_read: BTreeMap<String, u64>,
    rows_written: BTreeMap<String, u64>,
    rows_stale: BTreeMap<String, u64>,
    statements: BTreeMap<String, u64>,
    skipped: BTreeMap<(String, String), u64>,
    durations: BTreeMap<String, Histogram>,
    watermark: BTreeMap<String, Nanos>,
    last_success: BTreeMap<String, Nanos>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts one finished run. `outcome` is `ok` or the error kind.
    pub fn record_run(
        &self,
        id: &ViewId,
        rec: &RunRecord,
        outcome: &str,
        watermark: Option<Nanos>,
    ) {
        let view = id.to_string();
        let mut m = self.inner.lock().expect("metrics lock");
        *m.runs
            .entry((view.clone(), outcome.to_string()))
            .or_default() += 1;
        *m.rows_read.entry(view.clone()).or_default() += rec.rows_read;
        *m.rows_written.entry(view.clone()).or_default() += rec.rows_written;
        *m.rows_stale.entry(view.clone()).or_default() += rec.rows_stale;
        *m.statements.entry(view.clone()).or_default() += rec.statements;
        for (reason, n) in &rec.skipped {
            *m.skipped.entry((view.clone(), reason.clone())).or_default() += n;
        }
        let secs = rec.duration_ms as f64 / 1000.0;
        let h = m.durations.entry(view.clone()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
        if let Some(w) = watermark {
            m.watermark.insert(view.clone(), w);
        }
        if outcome == "ok" {
            m.last_success.insert(view, crate::time::now());
        }
    }

    /// Drops a deleted view's gauges; its counters stay until restart, as
    /// counters should (a scrape never sees one go backwards).
    pub fn forget(&self, id: &ViewId) {
        let view = id.to_string();
        let mut m = self.inner.lock().expect("metrics lock");
        m.watermark.remove(&view);
        m.last_success.remove(&view);
    }

    pub fn render(&self) -> String {
        let m = self.inner.lock().expect("metrics lock");
        let now = crate::time::now();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            name.to_string()
        };
        let _ = family(
            "materializer_runs_total",
            "counter",
            "Finished sync runs by view and outcome.",
        );
        let mut body = String::new();
        for ((v, o), n) in &m.runs {
            let _ = writeln!(
                body,
                "materializer_runs_total{{view=\"{}\",outcome=\"{}\"}} {n}",
                esc(v),
                esc(o)
            );
        }
        out.push_str(&body);
        for (name, help, map) in [
            (
                "materializer_rows_read_total",
                "Rows read from the warehouse.",
                &m.rows_read,
            ),
            (
                "materializer_rows_written_total",
                "Entity profiles written to Redis.",
                &m.rows_written,
            ),
            (
                "materializer_rows_stale_total",
                "Entity rows not written because Redis held a newer timestamp.",
                &m.rows_stale,
            ),
            (
                "materializer_warehouse_statements_total",
                "Statements sent to the warehouse by sync runs.",
                &m.statements,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (v, n) in map {
                let _ = writeln!(out, "{name}{{view=\"{}\"}} {n}", esc(v));
            }
        }
        let _ = writeln!(
            out,
            "# HELP materializer_rows_skipped_total Rows or fields skipped, by reason.\n# TYPE materializer_rows_skipped_total counter"
        );
        for ((v, r), n) in &m.skipped {
            let _ = writeln!(
                out,
                "materializer_rows_skipped_total{{view=\"{}\",reason=\"{}\"}} {n}",
                esc(v),
                esc(r)
            );
        }
        let _ = writeln!(
            out,
            "# HELP materializer_run_duration_seconds Duration of sync runs.\n# TYPE materializer_run_duration_seconds histogram"
        );
        for (v, h) in &m.durations {
            let v = esc(v);
            for (b, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "materializer_run_duration_seconds_bucket{{view=\"{v}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "materializer_run_duration_seconds_bucket{{view=\"{v}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "materializer_run_duration_seconds_sum{{view=\"{v}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "materializer_run_duration_seconds_count{{view=\"{v}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP materializer_watermark_seconds Watermark of each view, seconds since the epoch.\n# TYPE materializer_watermark_seconds gauge"
        );
        for (v, w) in &m.watermark {
            let _ = writeln!(
                out,
                "materializer_watermark_seconds{{view=\"{}\"}} {}",
                esc(v),
                *w as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "# HELP materializer_freshness_lag_seconds Now minus the view's watermark.\n# TYPE materializer_freshness_lag_seconds gauge"
        );
        for (v, w) in &m.watermark {
            let _ = writeln!(
                out,
                "materializer_freshness_lag_seconds{{view=\"{}\"}} {}",
                esc(v),
                (now - w) as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "# HELP materializer_last_success_age_seconds Seconds since the view's last successful run.\n# TYPE materializer_last_success_age_seconds gauge"
        );
        for (v, t) in &m.last_success {
            let _ = writeln!(
                out,
                "materializer_last_success_age_seconds{{view=\"{}\"}} {}",
                esc(v),
                (now - t) as f64 / 1e9
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_shows_up_in_every_family() {
        let m = Metrics::default();
        let id = ViewId {
            name: "v\"x".into(),
            version: 1,
        };
        let rec = RunRecord {
            rows_read: 5,
            rows_written: 3,
            statements: 4,
            duration_ms: 700,
            skipped: [("overflow".to_string(), 2)].into_iter().collect(),
            ..RunRecord::default()
        };
        m.record_run(&id, &rec, "ok", Some(1_000_000_000));
        let text = m.render();
        assert!(
            text.contains(r#"materializer_runs_total{view="v\"x:1",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"materializer_rows_skipped_total{view="v\"x:1",reason="overflow"} 2"#)
        );
        assert!(
            text.contains(r#"materializer_warehouse_statements_total{view="v\"x:1"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"materializer_run_duration_seconds_bucket{view="v\"x:1",le="1"} 1"#)
        );
        assert!(
            text.contains(r#"materializer_run_duration_seconds_bucket{view="v\"x:1",le="0.5"} 0"#)
        );
        assert!(text.contains(r#"materializer_watermark_seconds{view="v\"x:1"} 1"#));
    }
}
