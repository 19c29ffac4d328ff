//! Storage: the connection, transactions, entities and queries returning domain types.
//!
//! Both backends are first-class. On SQLite, write transactions are serialized through
//! one in-process lock (SQLite has a single writer anyway; taking the lock before `BEGIN`
//! avoids `SQLITE_BUSY` upgrade failures), while reads run concurrently under WAL.
//! On PostgreSQL, writers rely on row locks and conditional updates.

pub mod audit;
pub mod entities;
pub mod idempotency;

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, watch};

use crate::{
    domain::clock::Clock,
    error::{Error, Result},
};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The database and the clock every rule reads time from.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    backend: Backend,
    writer: Option<Arc<Mutex<()>>>,
    clock: Arc<dyn Clock>,
    signals: Arc<EventSignals>,
}

/// Signals between this process's writers, its event sequencer and its event watchers.
#[derive(Debug)]
pub struct EventSignals {
    /// Woken when a transaction that emitted events commits.
    pub new_events: Notify,
    /// The last event position this process's sequencer handed out (watchers wait on it).
    pub positions: watch::Sender<i64>,
    /// True once the server is shutting down: open event streams end.
    pub stopping: watch::Sender<bool>,
}

impl Default for EventSignals {
    fn default() -> Self {
        EventSignals {
            new_events: Notify::new(),
            positions: watch::Sender::new(0),
            stopping: watch::Sender::new(false),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Normalizes a database URL: a SQLite URL without `mode=` gets `mode=rwc` so the file
/// is created when absent.
pub fn normalize_url(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://file.db` or `postgres://…`) with at most `max_connections`.
    pub async fn connect(url: &str, max_connections: u32, clock: Arc<dyn Clock>) -> Result<Self> {
        let url = normalize_url(url);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::Internal(
                "database URL must start with sqlite:// or postgres://".into(),
            ));
        };
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(max_connections.max(1))
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            // sqlx pings a connection (on PostgreSQL a Sync/ReadyForQuery round trip)
            // on every acquire by default, before the statement: a Get paid two round
            // trips for its one query. sqlx already pings every connection when it
            // returns to the pool (and drops it if that fails), so only a connection
            // that sat idle long enough to be cut by the server or a firewall is checked
            // again before use.
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true)
            })
            // Statements are prepared once per connection, and PostgreSQL may keep a
            // generic plan made while a table was still empty for the connection's life:
            // the usage de-dup look-up kept one that reads every event of the tenant.
            // Dropping this setting (at c2ee982, with the de-dup look-up already a
            // `jsonb` join) made one tenant's unary usage fall from ~1,500 to 140
            // events/s once a few hundred thousand events were stored (docs/performance.md,
            // item 9); which statement's cached plan went stale was not isolated.
            // Planning each execution costs a Get ~0.06 ms of database time (pgbench,
            // the Get statement, one client: 0.07–0.09 ms with the default `auto`,
            // 0.15 ms forced), far less than a stale plan on a growing table.
            .map_sqlx_postgres_opts(|opts| {
                opts.options([("plan_cache_mode", "force_custom_plan")])
            });
        let db = Database::connect(options).await?;
        Ok(Store {
            db,
            backend,
            writer: (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(()))),
            clock,
            signals: Arc::default(),
        })
    }

    /// The connection pool, for reads.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// The event signals of this process.
    pub fn signals(&self) -> &Arc<EventSignals> {
        &self.signals
    }

    /// Now, in stored form.
    pub fn now(&self) -> i64 {
        self.clock.now_micros()
    }

    /// Starts a write transaction.
    pub async fn write(&self) -> Result<Tx> {
        let guard = match &self.writer {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        // On SQLite the write lock is taken at BEGIN (IMMEDIATE), where the busy timeout
        // applies: a deferred transaction that read first and then writes gets SQLITE_BUSY
        // at once if a previous writer's rollback has not finished yet.
        let txn = match self.backend {
            Backend::Sqlite => {
                self.db
                    .begin_with_options(TransactionOptions {
                        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                        ..TransactionOptions::default()
                    })
                    .await?
            }
            Backend::Postgres => self.db.begin().await?,
        };
        Ok(Tx {
            txn,
            _guard: guard,
            signals: self.signals.clone(),
            emitted: AtomicBool::new(false),
        })
    }

    /// Applies every pending migration.
    pub async fn migrate_up(&self) -> Result<()> {
        if self.backend == Backend::Postgres {
            let txn = self.migration_lock().await?;
            migrations::Migrator::up(&txn, None).await?;
            txn.commit().await?;
            return Ok(());
        }
        migrations::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Rolls back the last `steps` migrations.
    pub async fn migrate_down(&self, steps: u32) -> Result<()> {
        if self.backend == Backend::Postgres {
            let txn = self.migration_lock().await?;
            migrations::Migrator::down(&txn, Some(steps)).await?;
            txn.commit().await?;
            return Ok(());
        }
        migrations::Migrator::down(&self.db, Some(steps)).await?;
        Ok(())
    }

    /// A PostgreSQL transaction holding the migration lock: replicas that start together
    /// (each migrating at start) would otherwise run the same DDL at once and all but one
    /// fail. One migrates at a time, in one transaction (PostgreSQL's DDL is
    /// transactional); the others wait, then find nothing pending.
    async fn migration_lock(&self) -> Result<DatabaseTransaction> {
        /// Advisory lock key of tenantry's migrations ("tenantry" in ASCII, as an i64).
        const MIGRATION_LOCK: i64 = 0x7465_6e61_6e74_7279;
        let txn = self.db.begin().await?;
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            .await?;
        Ok(txn)
    }

    /// Names of applied and pending migrations.
    pub async fn migration_status(&self) -> Result<(Vec<String>, Vec<String>)> {
        let applied = migrations::Migrator::get_applied_migrations(&self.db)
            .await?
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        let pending = migrations::Migrator::get_pending_migrations(&self.db)
            .await?
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        Ok((applied, pending))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    /// The SeaORM backend, for raw statements.
    pub fn db_backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Closes the pool.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

/// A write transaction; rolled back when dropped without `commit`.
pub struct Tx {
    txn: DatabaseTransaction,
    _guard: Option<OwnedMutexGuard<()>>,
    signals: Arc<EventSignals>,
    emitted: AtomicBool,
}

impl Tx {
    /// Commits the transaction; wakes the sequencer when it wrote events.
    pub async fn commit(self) -> Result<()> {
        self.txn.commit().await?;
        if self.emitted.load(Ordering::Relaxed) {
            self.signals.new_events.notify_one();
        }
        Ok(())
    }

    /// Notes that this transaction wrote to the outbox.
    pub fn note_event(&self) {
        self.emitted.store(true, Ordering::Relaxed);
    }
}

impl Deref for Tx {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}
