//! materializer: keeps a Redis Profiles Store (Feast layout) in step with
//! attribute tables in a data warehouse. The sync contract is the README's
//! "Guarantees"; `docs/ARCHITECTURE.md` explains how the parts fit together.
//!
//! Dependency order (a module imports only from its own layer or below):
//! 1. vocabulary: `time` (`Nanos`, instants as text, zone names), `model`
//!    (views, field types), `config`, `failpoints`, `telemetry`;
//! 2. the two stores, independent of each other: `warehouse` (tables in, Arrow
//!    pages decoded to Feast values) and `profiles` (Redis in Feast's layout);
//!    `warehouse::decode` uses `profiles::feast`'s value encoders, one way;
//! 3. `metrics`, `registry`, `sync` (one run of one view; `dry_run` judges
//!    its rows against Redis for `sync --dry-run`), `scheduler`;
//! 4. `startup` (what every command does first), `check`, `api` (HTTP), and
//!    the CLI (`main.rs`), which only parses arguments and prints.

pub mod api;
pub mod check;
pub mod config;
pub mod dry_run;
pub mod failpoints;
pub mod metrics;
pub mod model;
pub mod profiles;
pub mod registry;
pub mod scheduler;
pub mod startup;
pub mod sync;
pub mod telemetry;
pub mod time;
pub mod warehouse;
