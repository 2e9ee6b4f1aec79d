//! The HTTP API under hostile connections, run for real through the built
//! binary: `api.max_connections`, `api.header_read_timeout` and
//! `api.idle_timeout`. Hundreds of connections that never finish their
//! headers are closed, never hold more than the cap of descriptors, and
//! neither `/healthz` nor the sync starves; a kept-alive connection that
//! sends nothing is closed after the idle timeout (not the header timeout).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fixtures::{api_comes_up, healthz, Daemon, SnowflakeWorld};
use crate::support;

const MAX_CONNECTIONS: usize = 32;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const SLOW_CONNECTIONS: usize = 300;

/// A world with one synced view and a daemon serving the API with small limits.
async fn start() -> (SnowflakeWorld, usize, Daemon, u16) {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("limits", 20).await;
    w.insert(t, 100).await;
    let port = support::free_port();
    w.write_config(
        &w.fast_config()
            .set("api.listen", format!("127.0.0.1:{port}"))
            .set("api.max_connections", MAX_CONNECTIONS)
            .set("api.header_read_timeout", "1s")
            .set("api.idle_timeout", "2s"),
    );
    let daemon = w.spawn("daemon", &["run"], &[]);
    assert!(
        api_comes_up(&format!("http://127.0.0.1:{port}")).await,
        "the API never came up; log:\n{}",
        daemon.log_text()
    );
    assert!(
        w.wait_converged(t, Duration::from_secs(30)).await,
        "the first sync never converged; log:\n{}",
        daemon.log_text()
    );
    (w, t, daemon, port)
}

/// Entries in `/proc/{pid}/fd`: the descriptors the daemon holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Reads until the server closes the connection (EOF or an error); returns
/// when that happened, or None if it is still open at `deadline`.
async fn closed_by_server(mut s: TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// Sends one `GET /healthz` on `s` and reads its whole response (keep-alive).
async fn get_healthz_keep_alive(s: &mut TcpStream) {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer to /healthz")
            .unwrap();
        assert!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if got.len() >= end + 4 + len {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed_capped_and_starve_neither_health_nor_sync(
) {
    let (mut w, t, daemon, port) = start().await;
    let pid = daemon.pid();
    let before = open_fds(pid);

    // Count the daemon's descriptors all along, from before the first slow connection.
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let stop = sampling.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while !stop.is_cancelled() {
                most = most.max(open_fds(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };

    // 300 connections that send half a request line and nothing else. Beyond
    // the cap they wait in the listen backlog; each batch of 32 is closed
    // after the header timeout, so the last are served ~300/32 timeouts later.
    let flood_started = Instant::now();
    let drain = HEADER_READ_TIMEOUT * (SLOW_CONNECTIONS.div_ceil(MAX_CONNECTIONS) as u32);
    let deadline = flood_started + drain + Duration::from_secs(5);
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..SLOW_CONNECTIONS {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        s.write_all(b"GET /hea").await.unwrap();
        slow.spawn(closed_by_server(s, deadline));
    }

    // While they are open, the sync goes on...
    w.insert(t, 100).await;
    // ...and /healthz from a fresh connection answers once the slow ones
    // ahead of it in the backlog have had their header timeout.
    let asked = Instant::now();
    let answered = tokio::time::timeout(
        drain + Duration::from_secs(5),
        reqwest::get(format!("http://127.0.0.1:{port}/healthz")),
    )
    .await;
    let healthz_took = asked.elapsed();
    assert!(
        matches!(&answered, Ok(Ok(r)) if r.status() == 200),
        "/healthz: no answer within {healthz_took:?} while slow connections were open: {answered:?}; log:\n{}",
        daemon.log_text()
    );
    assert!(
        w.wait_converged(t, Duration::from_secs(30)).await,
        "the sync stopped while slow connections were open; log:\n{}",
        daemon.log_text()
    );

    // Every slow connection is closed by the server.
    let mut last_close = flood_started;
    let mut still_open = 0;
    while let Some(r) = slow.join_next().await {
        match r.unwrap() {
            Some(at) => last_close = last_close.max(at),
            None => still_open += 1,
        }
    }
    assert_eq!(
        still_open,
        0,
        "{still_open} of {SLOW_CONNECTIONS} connections without complete headers were still open \
         {:?} after they were opened",
        deadline - flood_started
    );
    sampling.cancel();
    let most = sampler.await.unwrap();
    eprintln!(
        "descriptors: {before} before, at most {most} during; /healthz took {healthz_took:?}; \
         last slow connection closed after {:?}",
        last_close - flood_started
    );
    assert!(
        most < MAX_CONNECTIONS + 64,
        "the daemon held {most} descriptors ({before} before) with max_connections = {MAX_CONNECTIONS}"
    );
    let client = reqwest::Client::new();
    assert!(
        healthz(&client, &format!("http://127.0.0.1:{port}")).await,
        "{}",
        daemon.log_text()
    );
    let mut daemon = daemon;
    assert!(daemon.is_running(), "{}", daemon.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_after_idle_timeout_and_a_started_request_after_header_timeout(
) {
    let (_w, _t, daemon, port) = start().await;

    // Idle after a response: closed after idle_timeout (2s), not header_read_timeout (1s).
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    get_healthz_keep_alive(&mut s).await;
    get_healthz_keep_alive(&mut s).await;
    let idle_from = Instant::now();
    let closed = closed_by_server(s, idle_from + Duration::from_secs(10)).await;
    let idle_for = closed.map(|at| at - idle_from);
    eprintln!("idle kept-alive connection closed after {idle_for:?}");
    assert!(
        idle_for.is_some_and(|d| d >= IDLE_TIMEOUT - Duration::from_millis(300)
            && d <= IDLE_TIMEOUT + Duration::from_millis(1500)),
        "an idle kept-alive connection should close after ~{IDLE_TIMEOUT:?}, closed after {idle_for:?}; log:\n{}",
        daemon.log_text()
    );

    // The next request started but never finished: its headers are due
    // header_read_timeout after its first byte (~1s), not idle_timeout after
    // the last response (~1.8s).
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    get_healthz_keep_alive(&mut s).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"GET /hea").await.unwrap();
    let sent = Instant::now();
    let closed = closed_by_server(s, sent + Duration::from_secs(10)).await;
    let open_for = closed.map(|at| at - sent);
    eprintln!("half a request after an idle spell closed after {open_for:?}");
    assert!(
        open_for.is_some_and(|d| d >= HEADER_READ_TIMEOUT - Duration::from_millis(300)
            && d <= HEADER_READ_TIMEOUT + Duration::from_millis(500)),
        "half a request should close ~{HEADER_READ_TIMEOUT:?} after its first byte, closed after {open_for:?}"
    );

    // The API still serves; on SIGTERM an idle connection and half a request
    // do not hold the exit up to the grace period (5s).
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    get_healthz_keep_alive(&mut s).await;
    let mut half = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    half.write_all(b"GET /hea").await.unwrap();
    let mut daemon = daemon;
    let asked = Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(15));
    let took = asked.elapsed();
    eprintln!("SIGTERM with open API connections: exit after {took:?}");
    assert!(
        status.is_some_and(|s| s.success()) && took < Duration::from_secs(4),
        "exit {status:?} after {took:?}; log:\n{}",
        daemon.log_text()
    );
    drop((s, half));
}
