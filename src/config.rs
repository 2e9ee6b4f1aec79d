//! Settings: one TOML file, every key overridable by `MATERIALIZER__SECTION__KEY`.
//!
//! Promises: a [`Config`] that loaded is complete and checked (durations parse,
//! credentials are present, numbers are in range); every error names the file
//! and the key. Unknown keys are reported back as warnings, never silently
//! dropped. Secrets (passwords, private keys, Redis passwords) are held in
//! [`Secret`] / [`RedisUrl`], whose `Debug` and `Display` never show them.
//! Assumes env values are strings; numeric keys accept `"42"` as well as `42`.
//!
//! Layering (the file, then the environment over it) is the `config` crate's
//! ([`Config::from_toml`]); around it, by hand: the TOML syntax check (its
//! error carries no source excerpt), the two list keys' env values (TOML
//! arrays), unknown keys (`serde_ignored`) and `[warehouse]`, read by its
//! `kind` ([`WarehouseConfig`]). The README's "Configuration" says why.
//!
//! The per-backend structs ([`ParquetConfig`], [`SnowflakeConfig`]) live here,
//! not in their backends: `config` is below `warehouse` in the crate's layers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer};

mod warehouse;
pub use warehouse::*;

pub const ENV_PREFIX: &str = "MATERIALIZER__";

/// The whole file. `W` is the `[warehouse]` section: [`WarehouseConfig`], except
/// inside the loader, which first takes it as a raw value (see
/// [`WarehouseConfig`] for why).
#[derive(Debug, Clone, Deserialize)]
pub struct Config<W = WarehouseConfig> {
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub sync: SyncConfig,
    pub warehouse: W,
    #[serde(default)]
    pub profiles: ProfilesConfig,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub api: ApiConfig,
}

/// The HTTP API of `run` (Signals-compatible registry and attributes, health, metrics).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// `IP:PORT` to serve on; unset means no HTTP API. Without `tokens` only a
    /// loopback address is accepted.
    pub listen: Option<String>,
    /// Bearer tokens accepted on `/api/v1/*`; any one of them will do.
    #[serde(deserialize_with = "secret_list")]
    pub tokens: Vec<Secret>,
    /// A file of bearer tokens, one per line (blank lines and lines starting
    /// with `#` ignored), read at load into `tokens`; excludes `tokens`.
    pub tokens_file: Option<PathBuf>,
    /// Connections served at once; more wait in the listen backlog (they hold
    /// no descriptor of ours), so the API can never starve the sync of them.
    #[serde(deserialize_with = "lenient_usize")]
    pub max_connections: usize,
    /// A connection that has not sent a request's headers within this is closed.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Every request is answered within this (a 503 JSON error past it).
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Entities one `get-online-attributes` request may name (all keys together).
    #[serde(deserialize_with = "lenient_usize")]
    pub max_entities: usize,
    /// Entities x attributes one `get-online-attributes` request may ask for.
    #[serde(deserialize_with = "lenient_usize")]
    pub max_cells: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: None,
            tokens: Vec::new(),
            tokens_file: None,
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_entities: 1_000,
            max_cells: 100_000,
        }
    }
}

impl ApiConfig {
    /// The checked listen address, if the API is enabled.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>> {
        let Some(listen) = self.listen.as_deref().filter(|l| !l.trim().is_empty()) else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = listen.trim().parse().map_err(|_| {
            anyhow::anyhow!("api.listen: `{listen}` is not an address such as 127.0.0.1:8080")
        })?;
        if self.tokens.is_empty() && !addr.ip().is_loopback() {
            bail!(
                "api.listen: `{listen}` is reachable from other machines but api.tokens is empty; \
                 set api.tokens (MATERIALIZER__API__TOKENS='[\"...\"]') or listen on 127.0.0.1"
            );
        }
        Ok(Some(addr))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    #[serde(with = "duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "lenient_usize")]
    pub max_concurrent_views: usize,
    /// How long in-flight runs may take to finish their pages after SIGTERM.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// First retry delay after a failed run; doubles per failure up to `retry_max`.
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// `/healthz` fails once the scheduler loop has not gone round for this
    /// long. It goes round at least every few seconds, but one round can wait
    /// on Redis (each call up to 30 s), so the default leaves room for that.
    #[serde(with = "duration")]
    pub stall_after: Duration,
}

/// Bounds of `scheduler.stall_after`: above the loop's longest quiet round
/// (it re-reads the registry every 5 s), at most an hour.
pub const STALL_AFTER_MIN: Duration = Duration::from_secs(10);
pub const STALL_AFTER_MAX: Duration = Duration::from_secs(3600);

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            interval: Duration::from_secs(300),
            max_concurrent_views: 4,
            shutdown_grace: Duration::from_secs(30),
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
            stall_after: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SyncConfig {
    #[serde(with = "duration")]
    pub lookback: Duration,
    #[serde(deserialize_with = "lenient_usize")]
    pub page_rows: usize,
    #[serde(with = "duration")]
    pub max_future_skew: Duration,
    /// First-run lower bound (RFC 3339): rows older than this are never read.
    pub backfill_since: Option<String>,
    /// How many entities go into one newest-wins script call.
    #[serde(deserialize_with = "lenient_usize")]
    pub write_batch: usize,
    /// How long a view's lease lasts without renewal (a crashed holder's view
    /// is picked up after this).
    #[serde(with = "duration")]
    pub lease_ttl: Duration,
    /// When set, a view's run re-reads the whole table (from `backfill_since`)
    /// once this long has passed since its last full read, converging rows that
    /// arrived later than the lookback. Newest-wins keeps it safe.
    #[serde(with = "opt_duration")]
    pub full_resync_every: Option<Duration>,
    /// Finished runs kept per view (`status --json`, the sync-status route).
    #[serde(deserialize_with = "lenient_usize")]
    pub run_history: usize,
}

/// Most finished runs kept per view: each is a small JSON record in Redis.
pub const RUN_HISTORY_MAX: usize = 1000;

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            lookback: Duration::from_secs(600),
            page_rows: 50_000,
            max_future_skew: Duration::from_secs(300),
            backfill_since: None,
            write_batch: 200,
            lease_ttl: Duration::from_secs(60),
            full_resync_every: None,
            run_history: 20,
        }
    }
}

impl SyncConfig {
    /// `backfill_since` as nanoseconds since the epoch.
    pub fn backfill_since_nanos(&self) -> Result<Option<i64>> {
        self.backfill_since
            .as_deref()
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_nanos_opt().unwrap_or(i64::MIN))
                    .with_context(|| format!("sync.backfill_since: `{s}` is not an RFC 3339 time"))
            })
            .transpose()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProfilesConfig {
    /// Which Redis deployment `redis_url` names (Feast's `redis_type`).
    pub redis_type: RedisType,
    /// One Redis; a seed node of a cluster; a sentinel.
    pub redis_url: RedisUrl,
    /// A file holding `redis_url` (surrounding whitespace trimmed), read at
    /// load into `redis_url`; excludes `redis_url`.
    pub redis_url_file: Option<PathBuf>,
    /// Further cluster seeds or sentinels, tried after `redis_url`.
    pub redis_nodes: Vec<RedisUrl>,
    /// The master's name the sentinels monitor (`redis_sentinel` only).
    pub sentinel_master: Option<String>,
    /// Feast project name: the suffix of every profile key.
    pub project: String,
    /// Prefix of the daemon's own keys (registry, watermarks, runs, leases).
    pub state_prefix: String,
}

/// The kinds of Redis deployment, named as Feast's online store names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisType {
    #[default]
    Redis,
    RedisCluster,
    RedisSentinel,
}

impl ProfilesConfig {
    /// `redis_url` then `redis_nodes`: the seeds or sentinels to try, in order.
    pub fn redis_urls(&self) -> impl Iterator<Item = &RedisUrl> {
        std::iter::once(&self.redis_url).chain(&self.redis_nodes)
    }

    fn check(&self) -> Result<()> {
        // The project names state keys and is a Redis Cluster hash-tag
        // boundary: plain names only, as Feast requires.
        let p = &self.project;
        if p.is_empty()
            || p.len() > 128
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("profiles.project: must be 1 to 128 letters, digits, `_` or `-`");
        }
        if self.state_prefix.contains(['{', '}']) {
            bail!("profiles.state_prefix: must not contain `{{` or `}}`");
        }
        for (i, url) in self.redis_urls().enumerate() {
            let key = if i == 0 && self.redis_url_file.is_some() {
                "profiles.redis_url_file".to_string()
            } else if i == 0 {
                "profiles.redis_url".to_string()
            } else {
                format!("profiles.redis_nodes[{}]", i - 1)
            };
            redis::Client::open(url.expose()).map_err(|e| {
                anyhow::anyhow!(
                    "{key}: `{}` is not a Redis URL: {}",
                    url.redacted(),
                    e.to_string().replace(url.expose(), "[url]")
                )
            })?;
        }
        match (self.redis_type, &self.sentinel_master) {
            (RedisType::RedisSentinel, None) => {
                bail!("profiles.sentinel_master: required with redis_type = \"redis_sentinel\"")
            }
            (RedisType::RedisSentinel, Some(m)) if m.trim().is_empty() => {
                bail!("profiles.sentinel_master: must not be empty")
            }
            (RedisType::Redis | RedisType::RedisCluster, Some(_)) => bail!(
                "profiles.sentinel_master: only for redis_type = \"redis_sentinel\" (redis_type is {})",
                self.redis_type.as_str()
            ),
            _ => {}
        }
        if self.redis_type == RedisType::Redis && !self.redis_nodes.is_empty() {
            bail!("profiles.redis_nodes: only for redis_type = \"redis_cluster\" or \"redis_sentinel\" (one Redis has one URL)");
        }
        Ok(())
    }
}

impl RedisType {
    pub fn as_str(self) -> &'static str {
        match self {
            RedisType::Redis => "redis",
            RedisType::RedisCluster => "redis_cluster",
            RedisType::RedisSentinel => "redis_sentinel",
        }
    }
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        ProfilesConfig {
            redis_type: RedisType::Redis,
            redis_url: RedisUrl("redis://127.0.0.1:6379".into()),
            redis_url_file: None,
            redis_nodes: Vec::new(),
            sentinel_master: None,
            project: "signals".into(),
            state_prefix: "materializer:".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Glob patterns of view files (JSON or TOML), applied at every start.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `materializer=debug`. `RUST_LOG` wins when set.
    pub level: String,
    #[serde(deserialize_with = "by_name")]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal (containers), text otherwise.
    Auto,
    Json,
    Text,
}

/// A secret string: shown as `[redacted]` by `Debug` and `Display`.
///
/// Deserializes from a string, or from a TOML integer, float or boolean
/// rendered to text (`password = 12345678` is the password `"12345678"`).
/// Errors for any other shape never quote the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretText { scalars: true }).map(Secret)
    }
}

/// Visitor for a secret string whose errors never include the value (serde's
/// default `invalid type` errors quote integers, floats, strings and bytes).
/// `scalars` also accepts integers, floats and booleans as their text.
struct SecretText {
    scalars: bool,
}

impl SecretText {
    fn scalar<E: serde::de::Error>(&self, text: impl FnOnce() -> String) -> Result<String, E> {
        if self.scalars {
            Ok(text())
        } else {
            Err(E::custom("expected a string"))
        }
    }
}

impl<'de> serde::de::Visitor<'de> for SecretText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<String, E> {
        String::from_utf8(v.to_vec()).map_err(|_| E::custom("expected a string"))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        self.scalar(|| v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        self.scalar(|| v.to_string())
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<String, E> {
        self.scalar(|| v.to_string())
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<String, E> {
        self.scalar(|| v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        // `{:?}` keeps `1.0` as "1.0" (Display would give "1").
        self.scalar(|| format!("{v:?}"))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        self.scalar(|| v.to_string())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(serde::de::Error::custom("expected a string, not an array"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(serde::de::Error::custom("expected a string, not a table"))
    }
}

/// `api.tokens`: a list of [`Secret`]s. Any other shape is an error that does
/// not quote the value (serde's default would echo `tokens = "tok"`).
fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    struct List;

    fn not_a_list<E: serde::de::Error>() -> E {
        E::custom("expected an array of strings")
    }

    impl<'de> serde::de::Visitor<'de> for List {
        type Value = Vec<Secret>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of strings")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<Secret>()? {
                out.push(s);
            }
            Ok(out)
        }

        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(not_a_list())
        }

        fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
            Err(not_a_list())
        }

        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(not_a_list())
        }

        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(not_a_list())
        }

        fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Self::Value, E> {
            Err(not_a_list())
        }

        fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Self::Value, E> {
            Err(not_a_list())
        }

        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(not_a_list())
        }

        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(not_a_list())
        }
    }

    d.deserialize_any(List)
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A Redis URL that may carry `user:password@`; printed with the password
/// redacted. Deserializes from a string only; errors never quote the value.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretText { scalars: false })
            .map(RedisUrl)
    }
}

impl RedisUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("redacted"));
                }
                u.to_string()
            }
            Err(_) => "[unparseable redis url]".into(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A loaded config plus what a person should be told about it.
pub struct Loaded {
    pub config: Config,
    /// Keys present in the file or environment that no setting reads.
    pub unknown_keys: Vec<String>,
    /// The file the config came from, for relative paths and messages.
    pub path: PathBuf,
}

impl Config {
    /// Reads `path` (a missing file is an error), applies `MATERIALIZER__*`
    /// overrides from `env`, and checks the result.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml(&text, path, env)
    }

    /// `text` (the file at `path`) with the `MATERIALIZER__*` variables of
    /// `env` layered over it, read and checked.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded> {
        let shown = path.display();
        // By hand, before the crate parses the same text: the crate's parse
        // error quotes the offending line, which may hold a secret.
        toml::from_str::<toml::Table>(text)
            .map_err(|e| anyhow::anyhow!("{shown}: {}", syntax_error(text, &e)))?;
        let layered = layers(text, env)?.build().map_err(|e| match e {
            // Not reached after the check above; never show the crate's cause.
            ::config::ConfigError::FileParse { .. } => anyhow::anyhow!("{shown}: not valid TOML"),
            e => anyhow::anyhow!("{shown}: {}", one_line(&e)),
        })?;

        // Whether the inline key of a secret that may come from a file is
        // set at all (its default cannot tell): both at once is an error.
        let inline = |key: &str| layered.get::<::config::Value>(key).is_ok();
        let given = (inline("api.tokens"), inline("profiles.redis_url"));
        let mut unknown_keys = Vec::new();
        let raw: Config<::config::Value> =
            serde_ignored::deserialize(layered, |p| unknown_keys.push(p.to_string()))
                .map_err(|e| anyhow::anyhow!("{shown}: {}", one_line(&e)))?;
        let Config {
            scheduler,
            sync,
            warehouse,
            profiles,
            registry,
            log,
            api,
        } = raw;
        let mut config = Config {
            scheduler,
            sync,
            warehouse: WarehouseConfig::read(warehouse, &mut unknown_keys)
                .map_err(|e| anyhow::anyhow!("{shown}: {e:#}"))?,
            profiles,
            registry,
            log,
            api,
        };
        unknown_keys.sort();
        config
            .read_secret_files(given.0, given.1)
            .with_context(|| format!("{shown}"))?;
        config.check().with_context(|| format!("{shown}"))?;
        Ok(Loaded {
            config,
            unknown_keys,
            path: path.to_path_buf(),
        })
    }

    /// `api.tokens_file` and `profiles.redis_url_file` (Kubernetes secret
    /// mounts): each read once, here, into its inline key, which must then be
    /// unset. Errors name the key and the file, never what it holds.
    fn read_secret_files(&mut self, tokens_given: bool, url_given: bool) -> Result<()> {
        if let Some(path) = &self.api.tokens_file {
            if tokens_given {
                bail!("api: set only one of tokens, tokens_file");
            }
            let text = read_secret_file("api.tokens_file", path)?;
            self.api.tokens = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| Secret(l.to_string()))
                .collect();
            if self.api.tokens.is_empty() {
                bail!(
                    "api.tokens_file: {} holds no token (one per line; blank and # lines are ignored)",
                    path.display()
                );
            }
        }
        if let Some(path) = &self.profiles.redis_url_file {
            if url_given {
                bail!("profiles: set only one of redis_url, redis_url_file");
            }
            let text = read_secret_file("profiles.redis_url_file", path)?;
            if text.trim().is_empty() {
                bail!("profiles.redis_url_file: {} is empty", path.display());
            }
            self.profiles.redis_url = RedisUrl(text.trim().to_string());
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        if self.scheduler.interval.is_zero() {
            bail!("scheduler.interval: must be longer than zero");
        }
        if self.scheduler.max_concurrent_views == 0 {
            bail!("scheduler.max_concurrent_views: must be at least 1");
        }
        if self.sync.page_rows == 0 {
            bail!("sync.page_rows: must be at least 1");
        }
        if self.sync.write_batch == 0 {
            bail!("sync.write_batch: must be at least 1");
        }
        if self.sync.full_resync_every.is_some_and(|d| d.is_zero()) {
            bail!("sync.full_resync_every: must be longer than zero (or \"off\")");
        }
        if self.sync.lease_ttl < Duration::from_secs(2) {
            bail!("sync.lease_ttl: must be at least 2s");
        }
        if !(1..=RUN_HISTORY_MAX).contains(&self.sync.run_history) {
            bail!("sync.run_history: must be 1 to {RUN_HISTORY_MAX}");
        }
        if !(STALL_AFTER_MIN..=STALL_AFTER_MAX).contains(&self.scheduler.stall_after) {
            bail!(
                "scheduler.stall_after: must be {}s to {}s",
                STALL_AFTER_MIN.as_secs(),
                STALL_AFTER_MAX.as_secs()
            );
        }
        self.sync.backfill_since_nanos()?;
        if let Some(i) = self
            .api
            .tokens
            .iter()
            .position(|t| t.expose().trim().is_empty())
        {
            bail!("api.tokens[{i}]: must not be empty");
        }
        self.api.listen_addr()?;
        for (key, n) in [
            ("api.max_connections", self.api.max_connections),
            ("api.max_entities", self.api.max_entities),
            ("api.max_cells", self.api.max_cells),
        ] {
            if n == 0 {
                bail!("{key}: must be at least 1");
            }
        }
        for (key, d) in [
            ("api.header_read_timeout", self.api.header_read_timeout),
            ("api.idle_timeout", self.api.idle_timeout),
            ("api.request_timeout", self.api.request_timeout),
        ] {
            if d.is_zero() {
                bail!("{key}: must be longer than zero");
            }
        }
        self.profiles.check()?;
        self.warehouse.check()
    }
}

/// The text of a secret's file; the error names `key` and the path (the I/O
/// error's text never quotes file content).
fn read_secret_file(key: &str, path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{key}: cannot read {}", path.display()))
}

/// Keys whose value is a list: their environment override is read as a TOML
/// array (`["a", "b"]`). Every other override is a plain string.
const LIST_KEYS: &[&str] = &["registry.files", "api.tokens", "profiles.redis_nodes"];

/// The file, then the `MATERIALIZER__SECTION__KEY` variables of `env` over it,
/// as the `config` crate's layers. Values stay text (no number or boolean
/// guessing: `PASSWORD=12345` is the text "12345"), except for [`LIST_KEYS`].
///
/// The variables are picked here rather than by the crate: it lowercases names
/// before matching the prefix (so it would also take `materializer__...`),
/// accepts empty segments, and can split a list on a separator but not read
/// `["a", "b"]`.
fn layers(
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<::config::ConfigBuilder<::config::builder::DefaultState>> {
    let mut plain = ::config::Map::new();
    let mut lists = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if rest.split("__").any(str::is_empty) {
            bail!("environment variable {name}: expected MATERIALIZER__SECTION__KEY");
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if LIST_KEYS.contains(&key.as_str()) {
            lists.push((key, env_list(&name, &raw)?));
        } else {
            plain.insert(name, raw);
        }
    }
    let mut layers = ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
        .add_source(
            ::config::Environment::with_prefix("MATERIALIZER")
                .separator("__")
                .try_parsing(false)
                .source(Some(plain)),
        );
    for (key, list) in lists {
        layers = layers.set_override(key, list)?;
    }
    Ok(layers)
}

/// A list key's environment value, read as a TOML array. The value may be
/// secret (`api.tokens`): the error names the variable but never quotes the
/// value or the parser's message.
fn env_list(name: &str, raw: &str) -> Result<::config::Value> {
    ::config::Config::builder()
        .add_source(::config::File::from_str(
            &format!("v = {raw}"),
            ::config::FileFormat::Toml,
        ))
        .build()
        .and_then(|c| c.get::<::config::Value>("v"))
        .ok()
        .filter(|v| matches!(v.kind, ::config::ValueKind::Array(_)))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "environment variable {name}: not a TOML array of strings such as [\"a\", \"b\"]"
            )
        })
}

/// A TOML syntax error as one line: position and message, without the source
/// excerpt the default rendering quotes (that line may hold a secret).
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", one_line(&e.message()))
        }
        None => one_line(&e.message()),
    }
}

fn one_line(e: &dyn fmt::Display) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A unit enum (`log.format`, `warehouse.kind`) from its name, with serde's
/// error that lists the names (`unknown variant `xml`, expected one of ...`);
/// the `config` crate's own enum error does not.
fn by_name<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let name = String::deserialize(d)?;
    T::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&name))
}

fn lenient_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(i64),
        Text(String),
    }
    match N::deserialize(d)? {
        N::Int(i) => usize::try_from(i)
            .map_err(|_| serde::de::Error::custom(format!("{i} must not be negative"))),
        N::Text(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a whole number"))),
    }
}

/// An optional humantime duration; `"off"` or an empty string mean none.
pub mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        super::duration::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&s))
            .map(Some)
    }
}

/// humantime durations (`5m`, `90s`, `1h 30m`).
pub mod duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration such as \"90s\" or \"5m\" ({e})"
            ))
        })
    }
}

#[cfg(test)]
mod tests;
