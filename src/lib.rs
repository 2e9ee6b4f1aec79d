//! materializer: keeps a Redis Profiles Store (Feast layout) in step with
//! attribute tables in a data warehouse. See DESIGN.md for the sync contract.

pub mod api;
pub mod config;
pub mod failpoints;
pub mod metrics;
pub mod model;
pub mod profiles;
pub mod registry;
pub mod scheduler;
pub mod sync;
pub mod telemetry;
pub mod warehouse;
