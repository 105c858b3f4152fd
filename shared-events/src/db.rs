//! The r2d2 pool and the one way the services touch it.
//!
//! Diesel and r2d2 block — `pool.get()` included — so every database call goes through
//! [`run_blocking`], which runs the closure on Tokio's blocking pool inside the caller's
//! tracing span. Nothing else in the services calls `pool.get()`.

use diesel::migration::MigrationSource;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool, PoolError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use std::time::Duration;

pub type PgPool = Pool<ConnectionManager<PgConnection>>;

/// Migrations every Diesel service shares: the outbox and the processed-event inbox.
pub const COMMON_MIGRATIONS: EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../diesel-migrations/common");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("no database connection: {0}")]
    Pool(#[from] PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The async pool (case 4) could not hand out a connection.
    #[error("no database connection: {0}")]
    AsyncPool(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl DbError {
    /// True when the row asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DbError::Query(diesel::result::Error::NotFound))
    }

    /// True when no connection could be had (the database is out of reach): a 503, not
    /// a 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Pool(_) | DbError::AsyncPool(_))
    }
}

/// A pool that does not connect until first used, so a service can start (and answer
/// `/healthz`) while the database is still coming up.
pub fn build_pool(database_url: &str, max_size: u32) -> PgPool {
    Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(5))
        .test_on_check_out(false)
        .build_unchecked(ConnectionManager::new(database_url))
}

/// Blocking threads beyond the pool's connections, for blocking work that needs no
/// connection of the pool (the broker's commits and metadata calls, the outbox relay's
/// own connection).
const SPARE_BLOCKING_THREADS: usize = 4;

/// The blocking threads one runtime of a Diesel service may have: one per pooled
/// connection, and a few spare. A database task waits for a connection anyway, so more
/// threads would only wait too — each with its own stack and malloc arena: under load
/// (256 orders in flight) Tokio's default of 512 let the services' memory grow with the
/// threads it started.
pub fn blocking_threads(pool_size: u32) -> usize {
    pool_size as usize + SPARE_BLOCKING_THREADS
}

/// The multi-threaded runtime a Diesel service's `main` runs on, with at most
/// `blocking_threads` blocking threads (see [`blocking_threads`]).
pub fn runtime(blocking_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads.max(1))
        .build()
}

/// Runs `f` with a pooled connection on the blocking pool, in the current span.
pub async fn run_blocking<T, E, F>(pool: &PgPool, f: F) -> Result<T, E>
where
    F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    let pool = pool.clone();
    blocking(move || {
        let mut conn = pool.get().map_err(DbError::from)?;
        f(&mut conn)
    })
    .await
    .map_err(DbError::from)?
}

/// Runs blocking work (database work that manages its own connections) on the blocking
/// pool, in the current span. Prefer [`run_blocking`].
pub async fn blocking<T, F>(f: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f)).await
}

pub type MigrationError = Box<dyn std::error::Error + Send + Sync>;

/// Applies the common migrations, then the service's own.
pub fn run_migrations(
    conn: &mut PgConnection,
    service_migrations: EmbeddedMigrations,
) -> Result<(), MigrationError> {
    conn.run_pending_migrations(COMMON_MIGRATIONS)?;
    conn.run_pending_migrations(service_migrations)?;
    Ok(())
}

/// Applies the migrations at start-up, off the async executor.
pub async fn migrate(
    pool: &PgPool,
    service_migrations: EmbeddedMigrations,
) -> Result<(), MigrationError> {
    run_blocking(pool, move |conn| {
        run_migrations(conn, service_migrations).map_err(MigrationFailed)
    })
    .await
    .map_err(|e| e.0)
}

/// Carries a migration error through [`run_blocking`], which needs `From<DbError>`.
struct MigrationFailed(MigrationError);

impl From<DbError> for MigrationFailed {
    fn from(error: DbError) -> Self {
        MigrationFailed(Box::new(error))
    }
}

/// Reverts the service's migrations, then the common ones (for the up/down/up test).
pub fn revert_migrations(
    conn: &mut PgConnection,
    service_migrations: EmbeddedMigrations,
) -> Result<(), MigrationError> {
    revert_source(conn, service_migrations)?;
    revert_source(conn, COMMON_MIGRATIONS)
}

/// Reverts the applied migrations of one source, newest first. (`revert_all_migrations`
/// would also try the other source's versions, which this source does not know.)
fn revert_source(
    conn: &mut PgConnection,
    source: EmbeddedMigrations,
) -> Result<(), MigrationError> {
    let applied = conn.applied_migrations()?;
    let mut migrations = MigrationSource::<diesel::pg::Pg>::migrations(&source)?;
    migrations.sort_by_key(|m| std::cmp::Reverse(m.name().version().as_owned()));
    for migration in migrations {
        if applied.contains(&migration.name().version()) {
            conn.revert_migration(migration.as_ref())?;
        }
    }
    Ok(())
}

/// Creates database `name` on the server of `server_url` (a URL without a database or
/// with `postgres`) unless it exists. For the stack script's tests and tools.
pub fn create_database(server_url: &str, name: &str) -> Result<(), DbError> {
    use diesel::{Connection, RunQueryDsl};
    let mut conn = PgConnection::establish(server_url)
        .map_err(|e| DbError::Query(diesel::result::Error::QueryBuilderError(Box::new(e))))?;
    let exists: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "EXISTS (SELECT 1 FROM pg_database WHERE datname = '{}')",
        name.replace('\'', "''")
    )))
    .get_result(&mut conn)?;
    if !exists {
        diesel::sql_query(format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")))
            .execute(&mut conn)?;
    }
    Ok(())
}

/// Maps a status enum to its `TEXT` column, both ways, through the enum's `as_str` and
/// `FromStr` (the spellings the column's CHECK constraint lists). The enum derives
/// `diesel::AsExpression` and `diesel::FromSqlRow` with `sql_type = Text`. A value the
/// enum does not know is a deserialization error of the query, never a panic.
#[macro_export]
macro_rules! text_column_enum {
    ($enum:ty) => {
        impl
            $crate::db::__diesel::serialize::ToSql<
                $crate::db::__diesel::sql_types::Text,
                $crate::db::__diesel::pg::Pg,
            > for $enum
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut $crate::db::__diesel::serialize::Output<
                    'b,
                    '_,
                    $crate::db::__diesel::pg::Pg,
                >,
            ) -> $crate::db::__diesel::serialize::Result {
                <str as $crate::db::__diesel::serialize::ToSql<
                    $crate::db::__diesel::sql_types::Text,
                    $crate::db::__diesel::pg::Pg,
                >>::to_sql(self.as_str(), out)
            }
        }

        impl
            $crate::db::__diesel::deserialize::FromSql<
                $crate::db::__diesel::sql_types::Text,
                $crate::db::__diesel::pg::Pg,
            > for $enum
        {
            fn from_sql(
                value: $crate::db::__diesel::pg::PgValue<'_>,
            ) -> $crate::db::__diesel::deserialize::Result<Self> {
                let text = <String as $crate::db::__diesel::deserialize::FromSql<
                    $crate::db::__diesel::sql_types::Text,
                    $crate::db::__diesel::pg::Pg,
                >>::from_sql(value)?;
                text.parse::<$enum>().map_err(Into::into)
            }
        }
    };
}

#[doc(hidden)]
pub use diesel as __diesel;
