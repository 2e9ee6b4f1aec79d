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

/// `[warehouse]`: where rows are read from. `kind` picks the backend, and
/// each backend has its own keys; a key the kind does not have (a Snowflake
/// key under `kind = "parquet"`, a typo) is reported as unknown, like any
/// other unknown key.
///
/// The derived `Deserialize` is serde's internally tagged form. The loader does
/// not use it: serde reads such a table into a buffer before picking the
/// variant, so an error inside would name only `warehouse` and `serde_ignored`
/// could not see unknown keys there. It reads `kind` first and then the kind's
/// struct straight from the table ([`WarehouseConfig::read`]); both agree on
/// what a valid section is (a test holds them to it).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// One value per process: boxing the larger variant would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum WarehouseConfig {
    /// `kind = "parquet"`: local Parquet files, the embedded default; no server.
    Parquet(ParquetConfig),
    /// `kind = "snowflake"`.
    Snowflake(SnowflakeConfig),
    /// `kind = "postgres"`: PostgreSQL (and Redshift-style SQL sources).
    Postgres(PostgresConfig),
    /// `kind = "databricks"`: a Databricks SQL warehouse.
    Databricks(DatabricksConfig),
    /// `kind = "bigquery"`: Google BigQuery over its REST API.
    Bigquery(BigqueryConfig),
}

/// The value of `warehouse.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarehouseKind {
    Snowflake,
    /// Local Parquet files (`path`): the embedded default, no server needed.
    Parquet,
    Postgres,
    Databricks,
    Bigquery,
}

/// `kind = "parquet"`: tables are Parquet files below a directory.
#[derive(Debug, Clone, Deserialize)]
pub struct ParquetConfig {
    /// The directory holding one `{table}/` directory (of `*.parquet` files) or
    /// one `{table}.parquet` file per table; relative to the working
    /// directory. Required.
    #[serde(default)]
    pub path: PathBuf,
    /// IANA zone (`Europe/Berlin`, `UTC`) whose wall times Parquet timestamps
    /// without a zone are; a view's `batch_source.ntz_time_zone` overrides it.
    /// Checked at load. Default `UTC`.
    #[serde(default = "default_ntz_time_zone")]
    pub ntz_time_zone: String,
}

/// `kind = "snowflake"`: Snowflake's SQL API. Exactly one credential:
/// `password`, `password_file`, `private_key` or `private_key_path`.
#[derive(Debug, Clone, Deserialize)]
pub struct SnowflakeConfig {
    /// Account identifier, e.g. `xy12345.eu-west-1`. Required.
    #[serde(default)]
    pub account: String,
    /// The user to log in as. Required.
    #[serde(default)]
    pub user: String,
    /// Password auth; prefer `MATERIALIZER__WAREHOUSE__PASSWORD` or
    /// `password_file`. A number (`password = 12345`) is its text.
    pub password: Option<Secret>,
    /// A file holding the password (trailing whitespace dropped).
    pub password_file: Option<PathBuf>,
    /// Key-pair auth: an unencrypted PKCS#8 PEM private key, inline (from env).
    pub private_key: Option<Secret>,
    /// Key-pair auth: a file holding the PEM private key.
    pub private_key_path: Option<PathBuf>,
    /// Session role. Default: the user's default role.
    pub role: Option<String>,
    /// Session (virtual) warehouse. Default: the user's default.
    pub warehouse: Option<String>,
    /// Session database, for views whose batch source names none. Default: none.
    pub database: Option<String>,
    /// Session schema, for views whose batch source names none. Default: none.
    pub schema: Option<String>,
    /// Where requests go instead of `https://{account}.snowflakecomputing.com`
    /// (proxies, private endpoints, tests). Default: that address.
    pub base_url: Option<String>,
    /// Upper bound on one warehouse call (login, query, result chunk). Default `2m`.
    #[serde(default = "default_query_timeout", with = "duration")]
    pub query_timeout: Duration,
    /// IANA zone (`Europe/Berlin`, `UTC`) whose wall times TIMESTAMP_NTZ values
    /// are; a view's `batch_source.ntz_time_zone` overrides it. Checked at
    /// load. Default `UTC`.
    #[serde(default = "default_ntz_time_zone")]
    pub ntz_time_zone: String,
}

/// `kind = "postgres"`: one PostgreSQL database, named by `url` or `url_file`
/// (exactly one). The URL carries the password, so it is a [`Secret`].
#[derive(Debug, Clone, Deserialize)]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/dbname[?sslmode=disable|prefer|require]`;
    /// prefer `MATERIALIZER__WAREHOUSE__URL` or `url_file`.
    pub url: Option<Secret>,
    /// A file holding the URL (surrounding whitespace trimmed).
    pub url_file: Option<PathBuf>,
    /// Upper bound on one statement (client side, and the server's
    /// `statement_timeout`) and on connecting. Default `2m`.
    #[serde(default = "default_query_timeout", with = "duration")]
    pub query_timeout: Duration,
    /// IANA zone whose wall times `timestamp` (without time zone) values are;
    /// a view's `batch_source.ntz_time_zone` overrides it. Default `UTC`.
    #[serde(default = "default_ntz_time_zone")]
    pub ntz_time_zone: String,
}

impl PostgresConfig {
    /// `ntz_time_zone` as a zone; the error names the key.
    pub fn ntz_zone(&self) -> Result<crate::time::Tz> {
        ntz_zone(&self.ntz_time_zone)
    }

    /// The connection URL, from `url` or `url_file`. Errors name the key, never the value.
    pub fn url(&self) -> Result<Secret> {
        let url = match (&self.url, &self.url_file) {
            (Some(_), Some(_)) => bail!("warehouse: set only one of url, url_file"),
            (Some(u), None) => u.clone(),
            (None, Some(path)) => Secret(
                std::fs::read_to_string(path)
                    .with_context(|| format!("warehouse.url_file: cannot read {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => bail!(
                "warehouse.url: required for kind = \"postgres\" \
                 (postgres://user[:password]@host:port/dbname; or url_file, or MATERIALIZER__WAREHOUSE__URL)"
            ),
        };
        if url.expose().trim().is_empty() {
            bail!("warehouse.url: is empty");
        }
        Ok(url)
    }

    fn check(&self) -> Result<()> {
        let url = self.url()?;
        crate::warehouse::postgres::parse_url(url.expose())?;
        Ok(())
    }
}

/// `kind = "databricks"`: a SQL warehouse through the SQL Statement Execution
/// API. Exactly one credential: `token` or `token_file` (a personal access
/// token), or `client_id` with `client_secret` (OAuth machine-to-machine).
#[derive(Debug, Clone, Deserialize)]
pub struct DatabricksConfig {
    /// The workspace URL, e.g. `https://dbc-a1b2c3d4-e5f6.cloud.databricks.com`. Required.
    #[serde(default)]
    pub host: String,
    /// The SQL warehouse that runs the statements. Required.
    #[serde(default)]
    pub warehouse_id: String,
    /// Personal access token; prefer `MATERIALIZER__WAREHOUSE__TOKEN` or `token_file`.
    pub token: Option<Secret>,
    /// A file holding the personal access token (surrounding whitespace trimmed).
    pub token_file: Option<PathBuf>,
    /// OAuth M2M: the service principal's client id (with `client_secret`).
    pub client_id: Option<String>,
    /// OAuth M2M: the service principal's secret; prefer `MATERIALIZER__WAREHOUSE__CLIENT_SECRET`.
    pub client_secret: Option<Secret>,
    /// Catalog for views whose batch source names no `database`. Default: the warehouse's.
    pub catalog: Option<String>,
    /// Schema for views whose batch source names none. Default: the warehouse's.
    pub schema: Option<String>,
    /// Upper bound on one statement (from its submission to its end) and on
    /// one result chunk's download. Default `2m`.
    #[serde(default = "default_query_timeout", with = "duration")]
    pub query_timeout: Duration,
    /// IANA zone whose wall times TIMESTAMP_NTZ values are; a view's
    /// `batch_source.ntz_time_zone` overrides it. Default `UTC`.
    #[serde(default = "default_ntz_time_zone")]
    pub ntz_time_zone: String,
}

// --- kind = "bigquery" (begin; owned by the BigQuery backend) ---

/// `kind = "bigquery"`: Google BigQuery through its REST API (`jobs.query`,
/// `jobs.getQueryResults`), as a service account whose JSON key file is
/// `credentials_path`. A batch source's `database` is the project holding
/// the dataset (default `project`) and its `schema` the dataset.
#[derive(Debug, Clone, Deserialize)]
pub struct BigqueryConfig {
    /// The project that runs (and is billed for) the query jobs. Required.
    #[serde(default)]
    pub project: String,
    /// Where jobs run (`US`, `EU`, `europe-west3`, ...). Default: BigQuery
    /// picks it from the datasets the query reads.
    pub location: Option<String>,
    /// The service account's JSON key file (a secret: read at start, never shown). Required.
    pub credentials_path: Option<PathBuf>,
    /// Dataset for views whose batch source names no `schema`.
    pub dataset: Option<String>,
    /// The REST root. Default `https://bigquery.googleapis.com/bigquery/v2`;
    /// set it for a private endpoint or a test server.
    pub api_url: Option<String>,
    /// The Storage Read API's endpoint; accepted for private endpoints, but
    /// windows are read over REST (see the README's BigQuery section).
    pub storage_url: Option<String>,
    /// The OAuth token endpoint. Default: the key file's `token_uri`, else
    /// `https://oauth2.googleapis.com/token`.
    pub token_url: Option<String>,
    /// Upper bound on one query job (from `jobs.query` to its last result
    /// page) and on one request. Default `2m`.
    #[serde(default = "default_query_timeout", with = "duration")]
    pub query_timeout: Duration,
    /// IANA zone whose wall times DATETIME values are; a view's
    /// `batch_source.ntz_time_zone` overrides it. Default `UTC`.
    #[serde(default = "default_ntz_time_zone")]
    pub ntz_time_zone: String,
}

/// A service account's key, from its JSON key file. No `Debug` of the key.
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_pem: Secret,
    pub private_key_id: Option<String>,
    pub token_uri: Option<String>,
}

impl BigqueryConfig {
    /// `ntz_time_zone` as a zone; the error names the key.
    pub fn ntz_zone(&self) -> Result<crate::time::Tz> {
        ntz_zone(&self.ntz_time_zone)
    }

    /// The key file read and checked. Errors name the key and the file, never its content.
    pub fn service_account(&self) -> Result<ServiceAccountKey> {
        let Some(path) = &self.credentials_path else {
            bail!("warehouse.credentials_path: required for kind = \"bigquery\" (a service account's JSON key file)");
        };
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("warehouse.credentials_path: cannot read {}", path.display())
        })?;
        #[derive(Deserialize)]
        struct KeyFile {
            #[serde(rename = "type")]
            kind: Option<String>,
            client_email: Option<String>,
            private_key: Option<String>,
            private_key_id: Option<String>,
            token_uri: Option<String>,
        }
        // serde_json's error names a line and column only, never the text.
        let key: KeyFile = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "warehouse.credentials_path: {} is not a JSON key file (line {}, column {})",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        if key.kind.as_deref().is_some_and(|k| k != "service_account") {
            bail!(
                "warehouse.credentials_path: {} is not a service account key (its type is not \"service_account\")",
                path.display()
            );
        }
        let (Some(client_email), Some(private_key)) = (key.client_email, key.private_key) else {
            bail!(
                "warehouse.credentials_path: {} has no client_email or private_key",
                path.display()
            );
        };
        if !private_key.contains("PRIVATE KEY") {
            bail!(
                "warehouse.credentials_path: {}: private_key is not a PEM private key",
                path.display()
            );
        }
        Ok(ServiceAccountKey {
            client_email,
            private_key_pem: Secret(private_key),
            private_key_id: key.private_key_id,
            token_uri: key.token_uri,
        })
    }

    fn check(&self) -> Result<()> {
        if self.project.trim().is_empty() {
            bail!("warehouse.project: required for kind = \"bigquery\" (the billing project)");
        }
        for (key, value) in [
            ("api_url", &self.api_url),
            ("storage_url", &self.storage_url),
            ("token_url", &self.token_url),
        ] {
            if let Some(v) = value {
                let u = url::Url::parse(v.trim())
                    .map_err(|e| anyhow::anyhow!("warehouse.{key}: not a URL: {e}"))?;
                if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none() {
                    bail!("warehouse.{key}: not an http(s) URL with a host");
                }
            }
        }
        self.service_account()?;
        Ok(())
    }
}

// --- kind = "bigquery" (end) ---

/// How the daemon proves who it is to Databricks.
pub enum DatabricksAuth {
    Token(Secret),
    OAuth {
        client_id: String,
        client_secret: Secret,
    },
}

impl DatabricksConfig {
    /// `ntz_time_zone` as a zone; the error names the key.
    pub fn ntz_zone(&self) -> Result<crate::time::Tz> {
        ntz_zone(&self.ntz_time_zone)
    }

    /// The credential, from the config or the token file. Errors name keys, never values.
    pub fn auth(&self) -> Result<DatabricksAuth> {
        let nonempty = |key: &str, s: Secret| -> Result<Secret> {
            if s.expose().trim().is_empty() {
                bail!("warehouse.{key}: is empty");
            }
            Ok(s)
        };
        let oauth = self.client_id.is_some() || self.client_secret.is_some();
        match (&self.token, &self.token_file, oauth) {
            (Some(_), Some(_), _) | (Some(_), _, true) | (_, Some(_), true) => {
                bail!("warehouse: set only one of token, token_file, client_id + client_secret")
            }
            (Some(t), None, false) => Ok(DatabricksAuth::Token(nonempty("token", t.clone())?)),
            (None, Some(path), false) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("warehouse.token_file: cannot read {}", path.display())
                })?;
                Ok(DatabricksAuth::Token(nonempty(
                    "token_file",
                    Secret(text.trim().to_string()),
                )?))
            }
            (None, None, true) => match (&self.client_id, &self.client_secret) {
                (Some(id), Some(secret)) if !id.trim().is_empty() => Ok(DatabricksAuth::OAuth {
                    client_id: id.trim().to_string(),
                    client_secret: nonempty("client_secret", secret.clone())?,
                }),
                (Some(_), Some(_)) => bail!("warehouse.client_id: is empty"),
                (Some(_), None) => bail!("warehouse.client_secret: required with client_id"),
                (None, _) => bail!("warehouse.client_id: required with client_secret"),
            },
            (None, None, false) => bail!(
                "warehouse: no credentials; set token (MATERIALIZER__WAREHOUSE__TOKEN), \
                 token_file, or client_id + client_secret"
            ),
        }
    }

    fn check(&self) -> Result<()> {
        if self.host.trim().is_empty() {
            bail!("warehouse.host: required for kind = \"databricks\" (the workspace URL, https://...)");
        }
        let host = url::Url::parse(self.host.trim())
            .map_err(|e| anyhow::anyhow!("warehouse.host: not a URL: {e}"))?;
        if !matches!(host.scheme(), "https" | "http") || host.host_str().is_none() {
            bail!("warehouse.host: not an http(s) URL with a host");
        }
        if self.warehouse_id.trim().is_empty() {
            bail!("warehouse.warehouse_id: required for kind = \"databricks\"");
        }
        self.auth()?;
        Ok(())
    }
}

fn default_query_timeout() -> Duration {
    Duration::from_secs(120)
}

fn default_ntz_time_zone() -> String {
    "UTC".into()
}

/// `ntz_time_zone` as a zone; the error names the key.
fn ntz_zone(name: &str) -> Result<crate::time::Tz> {
    crate::time::parse_zone(name).map_err(|e| anyhow::anyhow!("warehouse.ntz_time_zone: {e}"))
}

/// How the daemon proves who it is to Snowflake.
pub enum Credentials {
    Password(Secret),
    PrivateKeyPem(Secret),
}

impl WarehouseConfig {
    pub fn kind(&self) -> WarehouseKind {
        match self {
            WarehouseConfig::Parquet(_) => WarehouseKind::Parquet,
            WarehouseConfig::Snowflake(_) => WarehouseKind::Snowflake,
            WarehouseConfig::Postgres(_) => WarehouseKind::Postgres,
            WarehouseConfig::Databricks(_) => WarehouseKind::Databricks,
            WarehouseConfig::Bigquery(_) => WarehouseKind::Bigquery,
        }
    }

    /// `ntz_time_zone` as a zone; the error names the key.
    pub fn ntz_zone(&self) -> Result<crate::time::Tz> {
        match self {
            WarehouseConfig::Parquet(p) => p.ntz_zone(),
            WarehouseConfig::Snowflake(s) => s.ntz_zone(),
            WarehouseConfig::Postgres(p) => p.ntz_zone(),
            WarehouseConfig::Databricks(d) => d.ntz_zone(),
            WarehouseConfig::Bigquery(b) => b.ntz_zone(),
        }
    }

    /// Reads the `[warehouse]` table (`section`): `kind`, then the kind's
    /// struct straight from the table, so that errors name `warehouse.KEY`
    /// and keys the struct does not read go to `unknown_keys`.
    fn read(section: ::config::Value, unknown_keys: &mut Vec<String>) -> Result<Self> {
        /// The section under its own name: errors and paths start `warehouse.`.
        #[derive(Deserialize)]
        struct Section<T> {
            warehouse: T,
        }
        #[derive(Deserialize)]
        struct Tag {
            #[serde(deserialize_with = "by_name")]
            kind: WarehouseKind,
        }
        if !matches!(section.kind, ::config::ValueKind::Table(_)) {
            bail!("warehouse: expected a table with kind = \"parquet\", \"snowflake\", \"postgres\", \"databricks\" or \"bigquery\"");
        }
        let section = ::config::Value::new(
            None,
            ::config::Map::from_iter([("warehouse".to_string(), section)]),
        );
        let shown = |e: ::config::ConfigError| anyhow::anyhow!("{}", one_line(&e));
        let Section {
            warehouse: Tag { kind },
        } = section.clone().try_deserialize().map_err(shown)?;
        let mut unknown = |p: serde_ignored::Path| {
            let p = p.to_string();
            if p != "warehouse.kind" {
                unknown_keys.push(p);
            }
        };
        Ok(match kind {
            WarehouseKind::Parquet => {
                let s: Section<ParquetConfig> =
                    serde_ignored::deserialize(section, &mut unknown).map_err(shown)?;
                WarehouseConfig::Parquet(s.warehouse)
            }
            WarehouseKind::Snowflake => {
                let s: Section<SnowflakeConfig> =
                    serde_ignored::deserialize(section, &mut unknown).map_err(shown)?;
                WarehouseConfig::Snowflake(s.warehouse)
            }
            WarehouseKind::Postgres => {
                let s: Section<PostgresConfig> =
                    serde_ignored::deserialize(section, &mut unknown).map_err(shown)?;
                WarehouseConfig::Postgres(s.warehouse)
            }
            WarehouseKind::Databricks => {
                let s: Section<DatabricksConfig> =
                    serde_ignored::deserialize(section, &mut unknown).map_err(shown)?;
                WarehouseConfig::Databricks(s.warehouse)
            }
            WarehouseKind::Bigquery => {
                let s: Section<BigqueryConfig> =
                    serde_ignored::deserialize(section, &mut unknown).map_err(shown)?;
                WarehouseConfig::Bigquery(s.warehouse)
            }
        })
    }

    fn check(&self) -> Result<()> {
        self.ntz_zone()?;
        match self {
            WarehouseConfig::Parquet(p) => p.check(),
            WarehouseConfig::Snowflake(s) => s.check(),
            WarehouseConfig::Postgres(p) => p.check(),
            WarehouseConfig::Databricks(d) => d.check(),
            WarehouseConfig::Bigquery(b) => b.check(),
        }
    }
}

impl ParquetConfig {
    /// `ntz_time_zone` as a zone; the error names the key.
    pub fn ntz_zone(&self) -> Result<crate::time::Tz> {
        ntz_zone(&self.ntz_time_zone)
    }

    fn check(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            bail!("warehouse.path: required for kind = \"parquet\"");
        }
        Ok(())
    }
}

impl SnowflakeConfig {
    /// `ntz_time_zone` as a zone; the error names the key.
    pub fn ntz_zone(&self) -> Result<crate::time::Tz> {
        ntz_zone(&self.ntz_time_zone)
    }

    /// Reads the credential, from the config value or its file. Errors name the key.
    pub fn credentials(&self) -> Result<Credentials> {
        // An empty secret (an unset `MATERIALIZER__WAREHOUSE__PASSWORD=`) would
        // only fail at every login: refuse it here, naming the key.
        let given = |key: &str, s: &Secret| -> Result<Secret> {
            if s.expose().trim().is_empty() {
                bail!("warehouse.{key}: is empty");
            }
            Ok(s.clone())
        };
        if let Some(p) = &self.password {
            return Ok(Credentials::Password(given("password", p)?));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("warehouse.password_file: cannot read {}", path.display())
            })?;
            let secret = Secret(text.trim_end().to_string());
            return Ok(Credentials::Password(given("password_file", &secret)?));
        }
        if let Some(k) = &self.private_key {
            return Ok(Credentials::PrivateKeyPem(given("private_key", k)?));
        }
        if let Some(path) = &self.private_key_path {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("warehouse.private_key_path: cannot read {}", path.display())
            })?;
            if !text.contains("PRIVATE KEY") {
                bail!(
                    "warehouse.private_key_path: {} is not a PEM private key",
                    path.display()
                );
            }
            return Ok(Credentials::PrivateKeyPem(Secret(text)));
        }
        bail!(
            "warehouse: no credentials; set password (MATERIALIZER__WAREHOUSE__PASSWORD), \
             password_file, private_key or private_key_path"
        )
    }

    fn check(&self) -> Result<()> {
        if self.account.is_empty() {
            bail!("warehouse.account: required for kind = \"snowflake\"");
        }
        if self.user.is_empty() {
            bail!("warehouse.user: required for kind = \"snowflake\"");
        }
        if let Some(b) = &self.base_url {
            url::Url::parse(b)
                .map_err(|e| anyhow::anyhow!("warehouse.base_url: not a URL: {e}"))?;
        }
        let given = [
            self.password.is_some(),
            self.password_file.is_some(),
            self.private_key.is_some(),
            self.private_key_path.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            // Reading it now names an unreadable key or password file at
            // start, instead of failing every run later.
            0 | 1 => {
                self.credentials()?;
            }
            _ => bail!(
                "warehouse: set only one of password, password_file, private_key, private_key_path"
            ),
        }
        Ok(())
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
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[warehouse]
kind = "snowflake"
account = "xy12345"
user = "SIGNALS"
password = "hunter2"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Loaded> {
        Config::from_toml(
            text,
            Path::new("test.toml"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn snowflake(c: &Config) -> &SnowflakeConfig {
        match &c.warehouse {
            WarehouseConfig::Snowflake(s) => s,
            other => panic!("not snowflake: {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_everything_but_the_warehouse() {
        let c = load(MINIMAL, &[]).unwrap().config;
        assert_eq!(c.scheduler.interval, Duration::from_secs(300));
        assert_eq!(c.sync.lookback, Duration::from_secs(600));
        assert_eq!(c.sync.page_rows, 50_000);
        assert_eq!(c.profiles.project, "signals");
    }

    #[test]
    fn run_history_and_stall_after_are_bounded() {
        let c = load(MINIMAL, &[]).unwrap().config;
        assert_eq!(c.sync.run_history, 20);
        assert_eq!(c.scheduler.stall_after, Duration::from_secs(120));
        for (key, value, named) in [
            ("MATERIALIZER__SYNC__RUN_HISTORY", "0", "sync.run_history"),
            (
                "MATERIALIZER__SYNC__RUN_HISTORY",
                "1001",
                "sync.run_history",
            ),
            (
                "MATERIALIZER__SCHEDULER__STALL_AFTER",
                "5s",
                "scheduler.stall_after",
            ),
            (
                "MATERIALIZER__SCHEDULER__STALL_AFTER",
                "2h",
                "scheduler.stall_after",
            ),
        ] {
            let Err(e) = load(MINIMAL, &[(key, value)]) else {
                panic!("{key}={value} was accepted");
            };
            let e = format!("{e:#}");
            assert!(e.contains(named), "{key}={value}: {e}");
        }
        let c = load(MINIMAL, &[("MATERIALIZER__SYNC__RUN_HISTORY", "1000")]).unwrap();
        assert_eq!(c.config.sync.run_history, 1000);
    }

    #[test]
    fn env_overrides_nested_keys_and_numbers() {
        let c = load(
            MINIMAL,
            &[
                ("MATERIALIZER__SYNC__PAGE_ROWS", "7"),
                ("MATERIALIZER__SCHEDULER__INTERVAL", "30s"),
                ("MATERIALIZER__WAREHOUSE__PASSWORD", "12345"),
                ("MATERIALIZER__REGISTRY__FILES", r#"["a/*.json", "b.toml"]"#),
                ("OTHER", "x"),
            ],
        )
        .unwrap()
        .config;
        assert_eq!(c.sync.page_rows, 7);
        assert_eq!(c.scheduler.interval, Duration::from_secs(30));
        assert_eq!(snowflake(&c).password.as_ref().unwrap().expose(), "12345");
        assert_eq!(c.registry.files, vec!["a/*.json", "b.toml"]);
    }

    #[test]
    fn bad_duration_names_the_key() {
        let e = load(
            &format!("{MINIMAL}\n[sync]\nlookback = \"ten minutes\"\n"),
            &[],
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("lookback") && e.contains("ten minutes"), "{e}");
    }

    #[test]
    fn unknown_keys_are_reported() {
        let l = load(&format!("{MINIMAL}\n[sync]\nlookbak = \"1m\"\n"), &[]).unwrap();
        assert_eq!(l.unknown_keys, vec!["sync.lookbak"]);
    }

    #[test]
    fn missing_credentials_name_the_keys() {
        let e = load(
            "[warehouse]\nkind = \"snowflake\"\naccount = \"a\"\nuser = \"u\"\n",
            &[],
        )
        .err()
        .unwrap();
        let e = format!("{e:#}");
        assert!(e.contains("MATERIALIZER__WAREHOUSE__PASSWORD"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = load(
            &MINIMAL.replace(
                "[warehouse]",
                "[profiles]\nredis_url = \"redis://u:s3cret@h:1\"\n[warehouse]",
            ),
            &[],
        )
        .unwrap()
        .config;
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn api_tokens_come_from_env_and_stay_redacted() {
        let c = load(
            &format!("{MINIMAL}\n[api]\nlisten = \"0.0.0.0:8080\"\n"),
            &[("MATERIALIZER__API__TOKENS", r#"["tok-a", "tok-b"]"#)],
        )
        .unwrap()
        .config;
        assert_eq!(c.api.tokens.len(), 2);
        assert_eq!(c.api.tokens[1].expose(), "tok-b");
        let shown = format!("{c:?}");
        assert!(!shown.contains("tok-a"), "{shown}");
    }

    #[test]
    fn api_without_tokens_refuses_a_non_loopback_listen() {
        let e = load(
            &format!("{MINIMAL}\n[api]\nlisten = \"0.0.0.0:8080\"\n"),
            &[],
        )
        .err()
        .unwrap();
        let e = format!("{e:#}");
        assert!(e.contains("api.listen") && e.contains("api.tokens"), "{e}");
        let ok = load(
            &format!("{MINIMAL}\n[api]\nlisten = \"127.0.0.1:0\"\n"),
            &[],
        );
        assert!(ok.is_ok());
    }
    fn with_password(value: &str) -> String {
        MINIMAL.replace("password = \"hunter2\"", &format!("password = {value}"))
    }

    #[test]
    fn scalar_secrets_load_as_their_text() {
        let c = load(
            &format!(
                "{}\n[api]\ntokens = [123, true, 1.0]\n",
                with_password("12345678")
            ),
            &[],
        )
        .unwrap()
        .config;
        assert_eq!(
            snowflake(&c).password.as_ref().unwrap().expose(),
            "12345678"
        );
        let tokens: Vec<&str> = c.api.tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["123", "true", "1.0"]);
    }

    #[test]
    fn wrong_shaped_secrets_are_not_quoted_in_errors() {
        let cases = [
            with_password("[13579, 24680]"),
            with_password("{ a = 13579, b = 24680 }"),
            format!("{MINIMAL}\n[api]\ntokens = \"13579-24680\"\n"),
            format!("{MINIMAL}\n[api]\ntokens = 1357924680\n"),
            format!("{MINIMAL}\n[api]\ntokens = [[13579, 24680]]\n"),
            format!("{MINIMAL}\n[profiles]\nredis_url = 1357924680\n"),
            format!("{MINIMAL}\n[profiles]\nredis_url = [\"redis://:13579-24680@h\"]\n"),
        ];
        for text in cases {
            let e = load(&text, &[]).err().expect(&text);
            for shown in [format!("{e:#}"), format!("{e:?}")] {
                assert!(
                    !shown.contains("13579") && !shown.contains("24680"),
                    "{text}: {shown}"
                );
                assert!(shown.contains("expected"), "{text}: {shown}");
            }
        }
    }

    #[test]
    fn env_password_starting_with_a_bracket_is_a_string() {
        for raw in ["[not-an-array", r#"["a", "b"]"#] {
            let c = load(MINIMAL, &[("MATERIALIZER__WAREHOUSE__PASSWORD", raw)])
                .unwrap()
                .config;
            assert_eq!(snowflake(&c).password.as_ref().unwrap().expose(), raw);
        }
    }

    #[test]
    fn malformed_env_list_names_the_variable_not_the_value() {
        for raw in [r#"["tok-13579"#, "tok-13579", r#"{ a = "tok-13579" }"#] {
            let e = load(MINIMAL, &[("MATERIALIZER__API__TOKENS", raw)])
                .err()
                .expect(raw);
            for shown in [format!("{e:#}"), format!("{e:?}")] {
                assert!(shown.contains("MATERIALIZER__API__TOKENS"), "{shown}");
                assert!(!shown.contains("13579"), "{shown}");
            }
        }
        let e = load(
            MINIMAL,
            &[("MATERIALIZER__REGISTRY__FILES", "views/*.json")],
        )
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("MATERIALIZER__REGISTRY__FILES"));
    }

    #[test]
    fn ntz_time_zone_defaults_to_utc_and_a_bad_zone_is_one_line_naming_the_key() {
        let c = load(MINIMAL, &[]).unwrap().config;
        assert_eq!(c.warehouse.ntz_zone().unwrap(), chrono_tz::Tz::UTC);
        let c = load(
            MINIMAL,
            &[("MATERIALIZER__WAREHOUSE__NTZ_TIME_ZONE", "Europe/Berlin")],
        )
        .unwrap()
        .config;
        assert_eq!(
            c.warehouse.ntz_zone().unwrap(),
            chrono_tz::Tz::Europe__Berlin
        );
        let e = load(
            &MINIMAL.replace(
                "[warehouse]",
                "[warehouse]\nntz_time_zone = \"Europe/Berlln\"",
            ),
            &[],
        )
        .err()
        .unwrap();
        let e = format!("{e:#}");
        assert!(
            e.contains("warehouse.ntz_time_zone")
                && e.contains("Europe/Berlln")
                && !e.contains('\n'),
            "{e}"
        );
    }

    const PARQUET: &str = "[warehouse]\nkind = \"parquet\"\npath = \"data\"\n";

    #[test]
    fn a_snowflake_key_under_kind_parquet_is_an_unknown_key() {
        let l = load(
            &format!("{PARQUET}account = \"xy12345\"\npassword = \"hunter2\"\n"),
            &[("MATERIALIZER__WAREHOUSE__QUERY_TIMEOUT", "5s")],
        )
        .unwrap();
        assert_eq!(
            l.unknown_keys,
            [
                "warehouse.account",
                "warehouse.password",
                "warehouse.query_timeout"
            ]
        );
        match l.config.warehouse {
            WarehouseConfig::Parquet(p) => assert_eq!(p.path, Path::new("data")),
            other => panic!("{other:?}"),
        }
        // The same keys are the kind's own under kind = "snowflake".
        let l = load(&format!("{MINIMAL}query_timeout = \"5s\"\n"), &[]).unwrap();
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
    }

    #[test]
    fn errors_inside_the_warehouse_section_name_the_key() {
        for (text, key) in [
            (
                format!("{MINIMAL}query_timeout = \"5 parsecs\"\n"),
                "warehouse.query_timeout",
            ),
            (MINIMAL.replace("snowflake", "snowflak"), "warehouse.kind"),
            (
                "[warehouse]\npath = \"data\"\n".to_string(),
                "warehouse.kind",
            ),
            (
                PARQUET.replace("path = \"data\"", "path = \"\""),
                "warehouse.path",
            ),
        ] {
            let e = format!("{:#}", load(&text, &[]).err().expect(&text));
            assert!(e.contains(key) && !e.contains('\n'), "{text}: {e}");
        }
    }

    #[test]
    fn env_overrides_nested_keys_through_the_crate() {
        let c = load(
            MINIMAL,
            &[
                ("MATERIALIZER__WAREHOUSE__QUERY_TIMEOUT", "45s"),
                ("MATERIALIZER__WAREHOUSE__ROLE", "SIGNALS_ROLE"),
                ("MATERIALIZER__API__MAX_CONNECTIONS", "9"),
                ("MATERIALIZER__PROFILES__PROJECT", "shop"),
                // Names are matched as written, as before: not this one.
                ("materializer__sync__page_rows", "1"),
            ],
        )
        .unwrap()
        .config;
        assert_eq!(c.api.max_connections, 9);
        assert_eq!(c.profiles.project, "shop");
        assert_eq!(c.sync.page_rows, 50_000);
        let s = snowflake(&c);
        assert_eq!(s.query_timeout, Duration::from_secs(45));
        assert_eq!(s.role.as_deref(), Some("SIGNALS_ROLE"));
        assert_eq!(s.account, "xy12345");
        // The environment can switch the kind; the file's other keys then
        // become unknown keys of the new kind.
        let l = load(
            MINIMAL,
            &[
                ("MATERIALIZER__WAREHOUSE__KIND", "parquet"),
                ("MATERIALIZER__WAREHOUSE__PATH", "data"),
            ],
        )
        .unwrap();
        assert_eq!(l.config.warehouse.kind(), WarehouseKind::Parquet);
        assert_eq!(
            l.unknown_keys,
            ["warehouse.account", "warehouse.password", "warehouse.user"]
        );
    }

    #[test]
    fn numeric_looking_env_password_stays_text() {
        for raw in ["12345", "0012345", "1e3", "-0", "true", "1_000"] {
            let c = load(MINIMAL, &[("MATERIALIZER__WAREHOUSE__PASSWORD", raw)])
                .unwrap()
                .config;
            assert_eq!(snowflake(&c).password.as_ref().unwrap().expose(), raw);
        }
    }

    #[test]
    fn the_derived_tagged_form_reads_what_the_loader_reads() {
        for text in [MINIMAL, PARQUET] {
            let loaded = load(text, &[]).unwrap().config.warehouse;
            let table: toml::Table = toml::from_str(text).unwrap();
            let derived: WarehouseConfig = table["warehouse"].clone().try_into().unwrap();
            assert_eq!(format!("{derived:?}"), format!("{loaded:?}"));
        }
    }

    /// A file in a fresh scratch directory, holding `text`.
    fn secret_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "materializer-config-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn tokens_and_the_redis_url_come_from_files() {
        let tokens = secret_file(
            "tokens",
            "# rotated 2026-11\ntok-one\n\n  tok-two  \n#tok-old\n",
        );
        let url = secret_file("url", "redis://:pw-F4kq9@h:6380/\n");
        let text = format!(
            "{MINIMAL}\n[api]\nlisten = \"0.0.0.0:8080\"\ntokens_file = \"{}\"\n[profiles]\nredis_url_file = \"{}\"\n",
            tokens.display(),
            url.display()
        );
        let c = load(&text, &[]).unwrap().config;
        let read: Vec<&str> = c.api.tokens.iter().map(Secret::expose).collect();
        assert_eq!(read, ["tok-one", "tok-two"]);
        assert_eq!(c.profiles.redis_url.expose(), "redis://:pw-F4kq9@h:6380/");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("tok-one") && !shown.contains("pw-F4kq9"),
            "{shown}"
        );
        // The same keys from the environment, as a Kubernetes manifest sets them.
        let env = [
            ("MATERIALIZER__API__TOKENS_FILE", tokens.to_str().unwrap()),
            (
                "MATERIALIZER__PROFILES__REDIS_URL_FILE",
                url.to_str().unwrap(),
            ),
        ];
        let c = load(MINIMAL, &env).unwrap().config;
        assert_eq!(c.api.tokens.len(), 2);
        assert_eq!(c.profiles.redis_url.expose(), "redis://:pw-F4kq9@h:6380/");
    }

    #[test]
    fn secret_files_are_exclusive_with_their_key_and_errors_never_show_content() {
        let tokens = secret_file("tokens", "tok-Zq81\n");
        let url = secret_file("url", "redis://:pw-Zq81@h:1/");
        let tokens_file = format!("tokens_file = \"{}\"", tokens.display());
        let url_file = format!("redis_url_file = \"{}\"", url.display());
        let missing = tokens.with_file_name("absent");
        let junk = secret_file("junk", "not a url pw-Zq81\n");
        let cases = [
            (
                format!("{MINIMAL}\n[api]\ntokens = [\"x\"]\n{tokens_file}\n"),
                "api: set only one of tokens, tokens_file",
            ),
            (
                format!("{MINIMAL}\n[profiles]\nredis_url = \"redis://h\"\n{url_file}\n"),
                "profiles: set only one of redis_url, redis_url_file",
            ),
            (
                format!(
                    "{MINIMAL}\n[api]\ntokens_file = \"{}\"\n",
                    missing.display()
                ),
                "api.tokens_file: cannot read",
            ),
            (
                format!(
                    "{MINIMAL}\n[api]\ntokens_file = \"{}\"\n",
                    secret_file("empty", "# none yet\n\n").display()
                ),
                "holds no token",
            ),
            (
                format!(
                    "{MINIMAL}\n[profiles]\nredis_url_file = \"{}\"\n",
                    junk.display()
                ),
                "profiles.redis_url_file: `[unparseable redis url]` is not a Redis URL",
            ),
        ];
        for (text, want) in cases {
            let e = load(&text, &[]).err().expect(&text);
            let shown = format!("{e:#}");
            assert!(shown.contains(want), "{text}\n{shown}");
            assert!(!shown.contains("Zq81"), "{text}\n{shown}");
            assert_eq!(shown.lines().count(), 1, "{shown}");
        }
        // The inline key from the environment counts as set too.
        let e = load(
            &format!("{MINIMAL}\n[api]\n{tokens_file}\n"),
            &[("MATERIALIZER__API__TOKENS", "[\"y\"]")],
        )
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("only one of tokens, tokens_file"));
    }

    #[test]
    fn postgres_url_is_a_secret_from_the_value_a_file_or_the_environment() {
        let text = "[warehouse]\nkind = \"postgres\"\nurl = \"postgres://u:pg-s3cret@db:5432/analytics\"\n";
        let loaded = load(text, &[]).unwrap();
        let WarehouseConfig::Postgres(p) = &loaded.config.warehouse else {
            panic!("not postgres");
        };
        assert_eq!(
            p.url().unwrap().expose(),
            "postgres://u:pg-s3cret@db:5432/analytics"
        );
        assert!(!format!("{:?}", loaded.config).contains("pg-s3cret"));
        // From the environment, and a key the kind does not have is unknown.
        let loaded = load(
            "[warehouse]\nkind = \"postgres\"\naccount = \"x\"\n",
            &[("MATERIALIZER__WAREHOUSE__URL", "postgres://u@h/db")],
        )
        .unwrap();
        assert_eq!(loaded.unknown_keys, vec!["warehouse.account".to_string()]);
        // A file; both at once; neither; a bad URL never quoted.
        let dir = std::env::temp_dir().join(format!("mz-pg-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("url");
        std::fs::write(&file, "postgres://u:f1le@h/db\n").unwrap();
        let with_file = format!("[warehouse]\nkind = \"postgres\"\nurl_file = {:?}\n", file);
        let loaded = load(&with_file, &[]).unwrap();
        let WarehouseConfig::Postgres(p) = &loaded.config.warehouse else {
            panic!("not postgres");
        };
        assert_eq!(p.url().unwrap().expose(), "postgres://u:f1le@h/db");
        let e = load(&format!("{with_file}url = \"postgres://u@h/db\"\n"), &[])
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("only one of url, url_file"),
            "{e:#}"
        );
        let e = load("[warehouse]\nkind = \"postgres\"\n", &[])
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("warehouse.url: required"),
            "{e:#}"
        );
        let e = load(
            "[warehouse]\nkind = \"postgres\"\nurl = \"postgres://u:pg-s3cret@db:nope/x\"\n",
            &[],
        )
        .err()
        .unwrap();
        assert!(
            !format!("{e:#}").contains("pg-s3cret") && format!("{e:#}").contains("warehouse.url"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
