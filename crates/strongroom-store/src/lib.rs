//! strongroom's storage backends.
//!
//! [`PgStore`] (production: any number of servers share one Postgres, with
//! row-level security enforcing the tenant boundary in the database) and
//! [`SqliteStore`] (single node, embedded) are one [`SqlStore`] over two
//! dialects; they implement [`strongroom_core::store::Store`] from one
//! shared body of SQL, so both behave alike. The conformance suite in
//! `tests/` runs every case against both.
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod access_requests;
mod audit;
mod chains;
mod credentials;
mod dialect;
mod emergency;
mod environments;
mod error;
mod export;
mod fair;
mod grants;
mod group_commit;
mod idempotency;
mod identity;
mod keys;
mod leases;
mod meta;
mod notifications;
mod postgres;
mod principals;
mod rotation;
mod rows;
mod sqlite;
mod store;
mod tenants;

pub use export::{LEFT_OUT as EXPORT_LEFT_OUT, TABLES as EXPORT_TABLES, TableSpec};
pub use fair::{FairShare, pool_reserve};
pub use group_commit::BatchObserver;
pub use identity::DerivedNamespace;
#[cfg(feature = "fault-injection")]
pub use postgres::LostReply;
pub use postgres::{APP_ROLE, PgProbe, PgStore, PgTimeouts};
pub use sqlite::SqliteStore;
pub use store::SqlStore;

/// Migrations of the Postgres schema (run by `strongroomd migrate` with an
/// administrative connection).
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Migrations of the SQLite schema (run at start-up).
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

pub use sqlx::{PgPool, SqlitePool};
