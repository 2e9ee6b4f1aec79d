//! `[warehouse]`: the kind-tagged section and each kind's keys (Parquet,
//! Snowflake, Postgres, Databricks, BigQuery), with their checks and how
//! their credentials are read. Secrets are [`Secret`]s: never shown.

use super::*;

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
    pub(super) fn read(section: ::config::Value, unknown_keys: &mut Vec<String>) -> Result<Self> {
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

    pub(super) fn check(&self) -> Result<()> {
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
