//! The integration tests: one test binary, so the crate and the fixtures are
//! compiled and linked once. Run them all with `scripts/test.sh`, one module
//! with `scripts/test.sh --test main sync_e2e`, one test with its full name.
//!
//! - `tests/support/` starts the servers the tests need (a throwaway
//!   `redis-server` or `valkey-server`, a Redis Cluster, Redis with Sentinel,
//!   the Snowflake-protocol server: fakesnow behind
//!   `snowflake_server.py`) and holds the Python helpers (Feast, Signals SDKs).
//! - `tests/main/fixtures/` is what tests build on: the config template, a
//!   world per warehouse kind (Snowflake, Parquet), the daemon guard.
//! - `tests/main/*.rs`: the tests, a module per subject.

mod support;

#[path = "main/fixtures/mod.rs"]
mod fixtures;

#[path = "main/api_hostile.rs"]
mod api_hostile;
#[path = "main/api_limits.rs"]
mod api_limits;
#[path = "main/api_sdk.rs"]
mod api_sdk;
#[path = "main/bad_input.rs"]
mod bad_input;
#[path = "main/bigquery_e2e.rs"]
mod bigquery_e2e;
#[path = "main/contract_holes.rs"]
mod contract_holes;
#[path = "main/contract_random.rs"]
mod contract_random;
#[path = "main/databricks_e2e.rs"]
mod databricks_e2e;
#[path = "main/erasure.rs"]
mod erasure;
#[path = "main/harness_smoke.rs"]
mod harness_smoke;
#[path = "main/metrics_e2e.rs"]
mod metrics_e2e;
#[path = "main/ntz_time_zone_e2e.rs"]
mod ntz_time_zone_e2e;
#[path = "main/operator_tools.rs"]
mod operator_tools;
#[path = "main/ops_history.rs"]
mod ops_history;
#[path = "main/parquet_e2e.rs"]
mod parquet_e2e;
#[path = "main/reliability.rs"]
mod reliability;
#[path = "main/secrets.rs"]
mod secrets;
#[path = "main/snowflake_keyset_e2e.rs"]
mod snowflake_keyset_e2e;
#[path = "main/snowflake_long_statements.rs"]
mod snowflake_long_statements;
#[path = "main/snowflake_streaming.rs"]
mod snowflake_streaming;
#[path = "main/store_kinds.rs"]
mod store_kinds;
#[path = "main/sync_e2e.rs"]
mod sync_e2e;
#[path = "main/type_matrix.rs"]
mod type_matrix;
