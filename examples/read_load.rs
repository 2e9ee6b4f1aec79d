//! Read load for the benchmark (`scripts/bench.sh`): `clients` concurrent
//! loops, each on one keep-alive connection, ask for one attribute of `batch`
//! entities per request (picked in turn from an ids file) for `seconds`, and
//! print one line: requests/s, p50 and p99 latency in milliseconds, and errors
//! (a request that is not answered 2xx, or not in full).
//!
//! `--api materializer` (the default) sends the daemon's
//! `POST /api/v1/get-online-attributes`; `--api feast` sends the same read to
//! Feast's feature server (`feast serve`) as `POST /get-online-features`
//! (`{"features": [...], "entities": {...}}`), so both servers are driven by
//! the same client code.
//!
//! ```text
//! read_load --url http://127.0.0.1:8080 --token T --join-key domain_userid \
//!           --attribute bench_features_v1:TOTAL_REVENUE --ids ids.txt \
//!           [--api materializer|feast] [--clients 1] [--batch 1] [--seconds 5]
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Api {
    /// `POST /api/v1/get-online-attributes` (Signals SDK).
    Materializer,
    /// `POST /get-online-features` (Feast's feature server).
    Feast,
}

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "")]
    token: String,
    #[arg(long)]
    join_key: String,
    #[arg(long)]
    attribute: String,
    #[arg(long)]
    ids: PathBuf,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, value_enum, default_value = "materializer")]
    api: Api,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ids: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&cli.ids)?
            .lines()
            .map(str::to_string)
            .collect(),
    );
    anyhow::ensure!(!ids.is_empty(), "no ids in {}", cli.ids.display());
    let (path, list_key) = match cli.api {
        Api::Materializer => ("/api/v1/get-online-attributes", "attributes"),
        Api::Feast => ("/get-online-features", "features"),
    };
    let url = format!("{}{path}", cli.url.trim_end_matches('/'));
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs_f64(cli.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cli.clients {
        let (ids, next, errors, url) = (ids.clone(), next.clone(), errors.clone(), url.clone());
        let (token, join_key, attribute, batch) = (
            cli.token.clone(),
            cli.join_key.clone(),
            cli.attribute.clone(),
            cli.batch,
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                let wanted: Vec<&String> =
                    (0..batch).map(|i| &ids[(first + i) % ids.len()]).collect();
                let body = serde_json::json!({
                    "entities": { &join_key: wanted },
                    list_key: [&attribute],
                });
                let asked = Instant::now();
                let mut req = client.post(&url).json(&body);
                if !token.is_empty() {
                    req = req.bearer_auth(&token);
                }
                let answered = match req.send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if answered {
                    latencies.push(asked.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "requests/s {:.0}  p50 {:.2} ms  p99 {:.2} ms  requests {}  errors {}",
        all.len() as f64 / wall,
        pct(0.50),
        pct(0.99),
        all.len(),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
