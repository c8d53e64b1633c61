//! What differs between the backends, and how the shared SQL runs on either.
//!
//! The aggregate modules (`tenants`, `credentials`, `audit`, ...) hold SQL
//! that both Postgres and SQLite understand (`$N` parameters, `RETURNING`,
//! `ON CONFLICT`) and are written once, generic over a [`Dialect`]. The
//! trait names everything else: how a transaction is bound to a tenant or
//! to the platform (row-level security on Postgres, nothing on SQLite),
//! row and table locks, the substring-position function, change notices
//! between servers, how a batch's events are inserted and its reveal-check
//! states read, and the optional bulk and one-round-trip paths of the group
//! committer. It is implemented for [`sqlx::Postgres`] (`postgres`) and
//! [`sqlx::Sqlite`] (`sqlite`); every use is resolved at compile time.
//!
//! [`Stmt`] and [`SqlBuilder`] run the shared SQL: they are `sqlx`'s query
//! and query builder for a backend known only as `D: Dialect`. The values
//! they bind and the rows they read are those [`Binds`] and [`Reads`] list,
//! which every dialect supports (the compiler checks both backends against
//! the lists).

use std::future::Future;

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{Database, Encode, FromRow, QueryBuilder, Transaction, Type};
use strongroom_core::Result;
use strongroom_core::audit::{AuditDraft, AuditEvent};
use strongroom_core::ids::TenantId;
use strongroom_core::store::Change;
use tokio::sync::broadcast;

use crate::group_commit::checks::{CheckIds, States};
use crate::group_commit::{Fast, Head, Outcome, Work};
use crate::rows;
use crate::store::SqlStore;

/// A backend: the shared SQL's database, and what it does differently.
pub trait Dialect: Database + Binds + Reads {
    /// What a store of this backend keeps besides its pool and committers
    /// (Postgres: its change listener; SQLite: nothing).
    type State: Clone + Default + Send + Sync + 'static;

    /// The SQL function giving the 1-based position of a substring, 0 if
    /// absent (`strpos`, `instr`).
    const SUBSTRING_POSITION: &'static str;

    /// Reads the chain head of tenant `$1` for a writer, as
    /// `(sequence, hash)`: locked until commit where rows are locked
    /// (Postgres), plain where a write transaction already excludes every
    /// other writer (SQLite).
    const LOCK_TENANT_HEAD: &'static str;

    /// Reads the platform chain's head for a writer, locked as
    /// [`Dialect::LOCK_TENANT_HEAD`].
    const LOCK_PLATFORM_HEAD: &'static str;

    /// What ends a `SELECT` that claims rows for one writer: locked until
    /// commit, rows another transaction holds skipped rather than waited
    /// for (Postgres: `FOR UPDATE SKIP LOCKED`); nothing where a write
    /// transaction already excludes every other writer (SQLite).
    const SKIP_LOCKED: &'static str;
    /// The statements that delete a shredded tenant's (`$1`) audit chain,
    /// its events and its head, when a shred purges it. On Postgres a
    /// function that refuses unless the tenant is shredded: the server
    /// role may not delete audit events otherwise.
    const PURGE_SHREDDED_AUDIT: &'static [&'static str];

    /// What ends a `SELECT` whose rows stay locked against writers until
    /// commit (Postgres: `FOR UPDATE`); nothing where a write transaction
    /// already excludes every other writer (SQLite).
    const FOR_UPDATE: &'static str;

    /// What ends a `SELECT` whose rows must not be deleted or changed
    /// until commit, shared with other readers (Postgres: `FOR SHARE`);
    /// nothing on SQLite.
    const FOR_SHARE: &'static str;

    /// Whether a batch of events only (reveals, denials) on the head its
    /// committer last wrote may take [`Dialect::fast_events`].
    const FAST_EVENTS: bool = false;

    /// Begins a transaction that sees and writes only `tenant`'s rows
    /// (`write`: it will write, so SQLite takes its write lock up front).
    fn begin_tenant(
        store: &SqlStore<Self>,
        tenant: TenantId,
        write: bool,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    /// Begins a platform transaction: it may read the tenant registry,
    /// principals and identity bindings of every tenant; bound to `tenant`
    /// when given (to write its rows and audit chain).
    fn begin_platform(
        store: &SqlStore<Self>,
        tenant: Option<TenantId>,
        write: bool,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    /// Binds the rest of a platform transaction to `tenant`, so it may
    /// write that tenant's rows.
    fn bind_tenant(
        tx: &mut Transaction<'static, Self>,
        tenant: TenantId,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Begins a transaction in which the lease sweeper may read (never
    /// write) every tenant's leases, to find the tenants with leases that
    /// ran out.
    fn begin_lease_sweep(
        store: &SqlStore<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    /// Takes the lease sweeper's lock until `tx` ends, if no other
    /// transaction holds it (Postgres: an advisory lock shared by every
    /// server on the database); whether it was taken.
    fn try_sweep_lock(
        tx: &mut Transaction<'static, Self>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Takes the rotation monitor's lock until `tx` ends, if no other
    /// transaction holds it (Postgres: an advisory lock shared by every
    /// server on the database; SQLite: always, one server owns it);
    /// whether it was taken.
    fn try_monitor_lock(
        tx: &mut Transaction<'static, Self>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Takes the identity-namespace lock `lock` until commit.
    fn lock_namespaces(
        tx: &mut Transaction<'static, Self>,
        lock: NamespaceLock,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Announces committed `changes` to the other servers on the database
    /// (delivered when `tx` commits), tagged with the store's `origin`.
    fn notify_changes(
        tx: &mut Transaction<'static, Self>,
        origin: uuid::Uuid,
        changes: &[Change],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Notices of changes committed by this store and by the other servers
    /// on the database.
    fn subscribe_changes(store: &SqlStore<Self>) -> broadcast::Receiver<Change>;

    /// Reads the stored states the reveal checks of a batch depend on.
    fn read_states(
        tx: &mut Transaction<'static, Self>,
        tenant: TenantId,
        ids: &CheckIds,
    ) -> impl Future<Output = Result<States>> + Send;

    /// Inserts a batch's sealed events (all of one chain, in order),
    /// advances the chain head to `head` and announces `changes`.
    fn insert_events(
        tx: &mut Transaction<'static, Self>,
        events: &[AuditEvent],
        head: Head,
        origin: uuid::Uuid,
        changes: &[Change],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Runs what it can of a batch's mutations in bulk, in the order every
    /// committer locks in; returns an outcome for each job it decided,
    /// `None` for those left to the job-by-job path. By default, none.
    fn bulk_mutations(
        tx: &mut Transaction<'static, Self>,
        tenant: TenantId,
        works: &[Work],
    ) -> impl Future<Output = Result<Vec<Outcome>>> + Send {
        let _ = (tx, tenant);
        let none = works.iter().map(|_| None).collect();
        async move { Ok(none) }
    }

    /// Commits a batch of events only, sealed on `head` (the head this
    /// committer last wrote), where [`Dialect::FAST_EVENTS`]; hands the
    /// drafts back (in job order) if it cannot. `held` is the connection
    /// the committer keeps between batches. By default, hands back.
    fn fast_events(
        store: &SqlStore<Self>,
        tenant: TenantId,
        works: &[Work],
        drafts: Vec<AuditDraft>,
        head: Head,
        held: &mut Option<PoolConnection<Self>>,
    ) -> impl Future<Output = Result<Fast>> + Send {
        let _ = (store, tenant, works, head, held);
        async move { Ok(Fast::Redo(drafts)) }
    }

    /// Runs `query`, returning the number of rows it affected.
    fn execute<'q>(
        query: Query<'q, Self, Self::Arguments<'q>>,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = std::result::Result<u64, sqlx::Error>> + Send;

    /// Runs `query` and returns its one row (`RowNotFound` if none).
    fn fetch_one<'q>(
        query: Query<'q, Self, Self::Arguments<'q>>,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = std::result::Result<Self::Row, sqlx::Error>> + Send;

    /// Runs `query` and returns its first row, if any.
    fn fetch_optional<'q>(
        query: Query<'q, Self, Self::Arguments<'q>>,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = std::result::Result<Option<Self::Row>, sqlx::Error>> + Send;

    /// Runs `query` and returns all its rows.
    fn fetch_all<'q>(
        query: Query<'q, Self, Self::Arguments<'q>>,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = std::result::Result<Vec<Self::Row>, sqlx::Error>> + Send;

    /// Runs the statement `builder` holds and returns all its rows.
    fn fetch_all_built<'q>(
        builder: &mut QueryBuilder<'q, Self>,
        conn: &mut Self::Connection,
    ) -> impl Future<Output = std::result::Result<Vec<Self::Row>, sqlx::Error>> + Send;

    /// A statement of shared SQL, to bind and run.
    fn query(sql: &str) -> Stmt<'_, Self> {
        Stmt {
            query: sqlx::query(sql),
        }
    }
}

/// The identity-namespace locks: assigning namespaces and creating a
/// binding must not interleave, or a binding could be created against a
/// namespace being taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceLock {
    /// Assigning namespaces: one assignment at a time, and no binding
    /// created meanwhile.
    Exclusive,
    /// Creating a binding: its namespace check holds until commit;
    /// bindings do not block one another.
    Shared,
}

/// A backend that can bind a `T` to a statement's `$N` in a statement
/// whose text lives for `'q` (implemented for every `sqlx` database that
/// encodes `T`).
pub trait Encodes<'q, T>: Database {
    /// Binds `value` as the query's next parameter.
    fn bind(
        query: Query<'q, Self, Self::Arguments<'q>>,
        value: T,
    ) -> Query<'q, Self, Self::Arguments<'q>>;

    /// Binds `value` as the builder's next parameter, at its end.
    fn push_bind(builder: &mut QueryBuilder<'q, Self>, value: T);
}

impl<'q, DB: Database, T: 'q + Encode<'q, DB> + Type<DB>> Encodes<'q, T> for DB {
    fn bind(
        query: Query<'q, Self, Self::Arguments<'q>>,
        value: T,
    ) -> Query<'q, Self, Self::Arguments<'q>> {
        query.bind(value)
    }

    fn push_bind(builder: &mut QueryBuilder<'q, Self>, value: T) {
        builder.push_bind(value);
    }
}

/// A backend that reads an `R` from a row (implemented for every `sqlx`
/// database `R` has a `FromRow` for).
pub trait Decodes<R>: Database {
    /// Reads `row` as an `R`.
    fn decode(row: &Self::Row) -> std::result::Result<R, sqlx::Error>;
}

impl<DB: Database, R: for<'r> FromRow<'r, DB::Row>> Decodes<R> for DB {
    fn decode(row: &Self::Row) -> std::result::Result<R, sqlx::Error> {
        R::from_row(row)
    }
}

/// Every type the shared SQL binds.
pub trait Binds:
    for<'q> Encodes<'q, uuid::Uuid>
    + for<'q> Encodes<'q, Option<uuid::Uuid>>
    + for<'q> Encodes<'q, i32>
    + for<'q> Encodes<'q, Option<i32>>
    + for<'q> Encodes<'q, i64>
    + for<'q> Encodes<'q, Option<i64>>
    + for<'q> Encodes<'q, &'q str>
    + for<'q> Encodes<'q, Option<&'q str>>
    + for<'q> Encodes<'q, String>
    + for<'q> Encodes<'q, Option<String>>
    + for<'q> Encodes<'q, &'q [u8]>
    + for<'q> Encodes<'q, Option<&'q [u8]>>
    + for<'q> Encodes<'q, bool>
{
}

impl Binds for sqlx::Postgres {}
impl Binds for sqlx::Sqlite {}

/// Every row the shared SQL reads.
pub trait Reads:
    Decodes<rows::TenantRow>
    + Decodes<rows::KekRow>
    + Decodes<rows::PrincipalRow>
    + Decodes<rows::BindingRow>
    + Decodes<rows::IdentityMatchRow>
    + Decodes<rows::CredentialRow>
    + Decodes<rows::VersionRow>
    + Decodes<rows::GrantRow>
    + Decodes<rows::AuditRow>
    + Decodes<rows::HeadRow>
    + Decodes<rows::ChainHeadRow>
    + Decodes<rows::NamespaceRow>
    + Decodes<rows::DisabledBindingRow>
    + Decodes<rows::DerivedNamespaceRow>
    + Decodes<rows::LeaseRow>
    + Decodes<crate::access_requests::RequestRow>
    + Decodes<crate::access_requests::DeliveryRow>
    + Decodes<crate::rotation::ReminderRow>
    + Decodes<(uuid::Uuid,)>
    + Decodes<(i32,)>
    + Decodes<(String,)>
    + Decodes<(String, String)>
    + Decodes<(Vec<u8>,)>
    + Decodes<(Vec<u8>, i64, Option<Vec<u8>>)>
    + Decodes<crate::keys::ReportRow>
    + Decodes<crate::keys::RewrapRow>
    + Decodes<crate::keys::PendingRow>
    + Decodes<(i32, i64)>
    + Decodes<(i64,)>
    + crate::export::ReadsCells
{
}

impl Reads for sqlx::Postgres {}
impl Reads for sqlx::Sqlite {}

/// A statement of shared SQL with the parameters bound so far: `sqlx`'s
/// query for a backend known only as `D`.
pub struct Stmt<'q, D: Dialect> {
    query: Query<'q, D, D::Arguments<'q>>,
}

impl<'q, D: Dialect> Stmt<'q, D> {
    /// Binds `value` as the next `$N`.
    pub fn bind<T>(self, value: T) -> Self
    where
        D: Encodes<'q, T>,
    {
        Self {
            query: <D as Encodes<'q, T>>::bind(self.query, value),
        }
    }

    /// Runs the statement; returns the number of rows it affected.
    pub async fn execute(self, conn: &mut D::Connection) -> std::result::Result<u64, sqlx::Error> {
        D::execute(self.query, conn).await
    }

    /// Runs the statement and reads its one row (`RowNotFound` if none).
    pub async fn fetch_one<R>(self, conn: &mut D::Connection) -> std::result::Result<R, sqlx::Error>
    where
        D: Decodes<R>,
    {
        let row = D::fetch_one(self.query, conn).await?;
        D::decode(&row)
    }

    /// Runs the statement and reads its first row, if any.
    pub async fn fetch_optional<R>(
        self,
        conn: &mut D::Connection,
    ) -> std::result::Result<Option<R>, sqlx::Error>
    where
        D: Decodes<R>,
    {
        match D::fetch_optional(self.query, conn).await? {
            Some(row) => D::decode(&row).map(Some),
            None => Ok(None),
        }
    }

    /// Runs the statement and returns its rows undecoded.
    pub async fn fetch_rows(
        self,
        conn: &mut D::Connection,
    ) -> std::result::Result<Vec<D::Row>, sqlx::Error> {
        D::fetch_all(self.query, conn).await
    }

    /// Runs the statement and reads all its rows.
    pub async fn fetch_all<R>(
        self,
        conn: &mut D::Connection,
    ) -> std::result::Result<Vec<R>, sqlx::Error>
    where
        D: Decodes<R>,
    {
        let rows = D::fetch_all(self.query, conn).await?;
        rows.iter().map(D::decode).collect()
    }
}

/// A statement assembled from shared SQL and the parts a filter adds:
/// `sqlx`'s query builder for a backend known only as `D`.
pub struct SqlBuilder<'q, D: Dialect> {
    builder: QueryBuilder<'q, D>,
}

impl<'q, D: Dialect> SqlBuilder<'q, D> {
    /// Starts with `sql`.
    pub fn new(sql: &str) -> Self {
        Self {
            builder: QueryBuilder::new(sql),
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.builder.push(sql);
        self
    }

    /// Appends a parameter holding `value`.
    pub fn push_bind<T>(&mut self, value: T) -> &mut Self
    where
        D: Encodes<'q, T>,
    {
        <D as Encodes<'q, T>>::push_bind(&mut self.builder, value);
        self
    }

    /// Runs the statement built, discarding any rows.
    pub async fn execute(
        &mut self,
        conn: &mut D::Connection,
    ) -> std::result::Result<(), sqlx::Error> {
        D::fetch_all_built(&mut self.builder, conn).await?;
        Ok(())
    }

    /// Runs the statement built and reads all its rows.
    pub async fn fetch_all<R>(
        &mut self,
        conn: &mut D::Connection,
    ) -> std::result::Result<Vec<R>, sqlx::Error>
    where
        D: Decodes<R>,
    {
        let rows = D::fetch_all_built(&mut self.builder, conn).await?;
        rows.iter().map(D::decode).collect()
    }
}

/// The most rows one multi-row INSERT carries (see [`insert_chunks`]).
pub(crate) const MAX_ROWS_PER_INSERT: usize = 64;

/// The row counts a batch of `n` rows is inserted in, in order: powers of
/// two, largest first, at most [`MAX_ROWS_PER_INSERT`]. A multi-row
/// statement's text depends on its row count, and a connection prepares
/// (and caches) each text it meets: with one statement per batch size,
/// every new batch size on every pooled connection was a new prepare (on
/// SQLite about 300,000 instructions for an audit batch); these seven
/// shapes are all a connection ever prepares, for at most
/// `log2(n)`-and-a-few statements a batch.
pub(crate) fn insert_chunks(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= MAX_ROWS_PER_INSERT {
            MAX_ROWS_PER_INSERT
        } else {
            1 << n.ilog2()
        };
        n -= size;
        Some(size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_chunks_cover_the_batch_in_few_fixed_shapes() {
        for n in 0..600 {
            let chunks: Vec<usize> = insert_chunks(n).collect();
            assert_eq!(chunks.iter().sum::<usize>(), n);
            assert!(
                chunks
                    .iter()
                    .all(|c| c.is_power_of_two() && *c <= MAX_ROWS_PER_INSERT)
            );
            assert!(chunks.windows(2).all(|w| w[0] >= w[1]));
            assert!(chunks.len() <= n / MAX_ROWS_PER_INSERT + 6);
        }
        assert_eq!(insert_chunks(11).collect::<Vec<_>>(), [8, 2, 1]);
    }
}
