//! The durable store: migrations, accounts, domains, jobs with row leases, events and the outbox,
//! over one sqlx `Any` pool on SQLite (the embedded default) or PostgreSQL (the scale-out store).
//!
//! The store is the truth (STYLE.md #7). It does not interpret states: `state` is a state name and
//! `data` the JSON of the whole state value, both written by the engine. Timestamps are `i64`
//! unix milliseconds and always come from the caller, so time stays an input.
//!
//! One set of runtime queries serves both backends: `$N` placeholders (SQLite accepts `$NNN`),
//! BIGINT/INTEGER/TEXT columns, `INSERT .. ON CONFLICT .. DO NOTHING` and `RETURNING`. The SQL
//! differs only where it must: the claim uses `FOR UPDATE SKIP LOCKED` on PostgreSQL, while on
//! SQLite a single `UPDATE .. RETURNING` statement is atomic because SQLite serializes writers.
//!
//! Exclusivity is a type (STYLE.md #8): only [`Store::claim_jobs`] makes a [`Lease`]. Lease times
//! come from the database's clock (PostgreSQL's `clock_timestamp()`, SQLite's `julianday('now')`
//! on the one host that holds the file), never from a daemon's, so clock skew between hosts cannot
//! make two daemons hold one job. The holder renews the lease while its step runs
//! ([`Store::renew_lease`]) and checks it before every external effect ([`Lease::check`]); the
//! engine records a job's outcome in a transaction from [`Store::begin_leased`], whose first
//! statement is a write that re-asserts the lease (and, on PostgreSQL, row-locks the job until
//! commit). Starting
//! with a write also means a SQLite transaction never has to upgrade a read lock to a write lock,
//! which can fail with `SQLITE_BUSY` without waiting; SQLite transactions moreover start with
//! `BEGIN IMMEDIATE`, so writers queue on the busy timeout instead of failing.

use std::marker::PhantomData;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor};

mod audit;
mod decommission;
mod lease;
mod outbox;
mod rows;
mod stats;
mod terms;

pub use self::audit::{ChainBreak, ChainReport, event_hash};
pub use self::decommission::{StageAccountRow, StageRow};
pub use self::lease::Lease;
pub use self::rows::{
    AccountRow, DedicatedIpRow, DomainRow, EventRow, JobRow, MigrationRow, NewEvent, NewJob, NewNotice,
    OutboxRow, account_state, domain_state, migration_state,
};
pub use self::stats::MigrationCounts;
pub use self::terms::{
    MAX_TERM_CHARS, Probe, ProbeKind, TermField, TermHit, name_term, name_words, normalized_term,
};

/// Embedded SQLite migrations (`migrations/sqlite`).
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
/// Embedded PostgreSQL migrations (`migrations/postgres`), with the same version numbers.
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a SQLite connection waits for another writer before `SQLITE_BUSY`. Writers hold the
/// lock for one short transaction, so a long wait only happens under heavy contention, and waiting
/// is better than failing a step.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 30_000;

/// The columns of [`JobRow`], in one place for every query that returns jobs.
const JOB_COLUMNS: &str =
    "id, migration_id, kind, subject, payload, dedupe_key, due_at, attempts, last_error, done_at";

/// One account of a migration, by its key.
const ACCOUNT: &str = "SELECT * FROM accounts WHERE migration_id = $1 AND user_name = $2";

/// The columns of [`OutboxRow`].
const OUTBOX_COLUMNS: &str = "id, migration_id, account, kind, dedupe_key, message_id, recipients, \
     subject, body, created_at, sent_at, attempts, last_error, delivery_attempts, \
     delivery_started_at, resends, skipped_at, skip_reason, failed_at, html, bounced_at, bounce_reason";

/// Which database a [`Store`] talks to, chosen once from the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (`sqlite:` URL): the embedded default.
    Sqlite,
    /// A PostgreSQL server (`postgres:` or `postgresql:` URL): several daemons can share it.
    Postgres,
}

/// What went wrong in the store. Callers branch on [`StoreError::LeaseLost`] (another worker owns
/// the job now: drop the work) and on [`StoreError::is_transient`] (retry later).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The lease on this job expired or was taken by another owner; the job's outcome must not
    /// be recorded, nor any effect performed, by this holder.
    #[error("lost the lease on job {job_id}: {reason}")]
    LeaseLost {
        /// The job whose lease was lost.
        job_id: i64,
        /// What happened to it, as far as the store can tell ("taken over by daemon b",
        /// "expired before it could be renewed", …).
        reason: String,
    },
    /// An insert found a row with the same key already there.
    #[error("{what} {key:?} already exists")]
    Conflict {
        /// What kind of row ("migration", "account", "domain").
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// An update named a row that does not exist.
    #[error("{what} {key:?} not found")]
    NotFound {
        /// What kind of row ("migration", "account", "domain", "notice").
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// No migration has this id; `existing` lists the ids there are, the closest first.
    #[error("there is no migration {id}{}", closest_list(.existing))]
    NoMigration {
        /// The id asked for.
        id: String,
        /// The migrations' ids, the closest to `id` first.
        existing: Vec<String>,
    },
    /// An option of the store URL has a value siirto does not take.
    #[error("store URL option {option}={value:?}: expected {expected}")]
    BadOption {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is expected.
        expected: &'static str,
    },
    /// The URL names neither SQLite nor PostgreSQL. Only the scheme is kept, since the rest of a
    /// database URL may carry a password.
    #[error("unsupported store URL scheme {scheme:?}: expected sqlite: or postgres:")]
    UnsupportedUrl {
        /// The scheme that was given.
        scheme: String,
    },
    /// A stored state value does not parse as the state it names: the database was edited by
    /// hand or written by a newer siirto.
    #[error("the stored state of {what} {key} is unreadable")]
    Unreadable {
        /// What kind of row ("migration", "account", "domain").
        what: &'static str,
        /// Its key.
        key: String,
        /// Why it does not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The schema migrations failed.
    #[error("store schema migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database reported an error.
    #[error("store database error")]
    Sqlx(#[from] sqlx::Error),
}

/// `ids` ordered by their edit distance from `wanted` (a typo, a wrong date), then by name.
fn closest_first(wanted: &str, mut ids: Vec<String>) -> Vec<String> {
    ids.sort_by_cached_key(|id| (strsim::levenshtein(wanted, id), id.clone()));
    ids
}

/// "; the migrations are: a, b" or "; there are no migrations yet".
fn closest_list(existing: &[String]) -> String {
    if existing.is_empty() {
        "; there are no migrations yet (siirto plan records one)".to_owned()
    } else {
        let shown: Vec<&str> = existing.iter().take(10).map(String::as_str).collect();
        let more = existing.len().saturating_sub(shown.len());
        let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
        format!("; the migrations are (closest first): {}{tail}", shown.join(", "))
    }
}

impl StoreError {
    /// True when trying again later may succeed: the database was unreachable, busy or locked,
    /// the pool had no free connection, or PostgreSQL aborted a transaction for a serialization
    /// failure or deadlock.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sqlx(err) => sqlx_error_is_transient(err),
            StoreError::LeaseLost { .. }
            | StoreError::Conflict { .. }
            | StoreError::NotFound { .. }
            | StoreError::NoMigration { .. }
            | StoreError::UnsupportedUrl { .. }
            | StoreError::BadOption { .. }
            | StoreError::Unreadable { .. }
            | StoreError::Migrate(_) => false,
        }
    }
}

fn sqlx_error_is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            // PostgreSQL SQLSTATEs: connection exceptions (08xxx), serialization failure,
            // deadlock, insufficient resources (53xxx), admin/crash shutdown, cannot connect now.
            if code.starts_with("08") || code.starts_with("53") {
                return true;
            }
            if matches!(&*code, "40001" | "40P01" | "57P01" | "57P02" | "57P03") {
                return true;
            }
            // SQLite reports its extended result code as a number: the primary code is the low
            // byte, SQLITE_BUSY = 5 and SQLITE_LOCKED = 6.
            match code.parse::<i32>() {
                Ok(n) => matches!(n & 0xff, 5 | 6),
                Err(_) => false,
            }
        }
        _ => false,
    }
}

/// The durable store. Cloning is cheap: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time: this process's write transactions queue here, woken in
    /// turn, instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10 … 100 ms between
    /// tries and so leaves the database idle while eight workers wait. (Other processes on the
    /// same file still meet the busy timeout.) Unused on PostgreSQL.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A database transaction. Dropping it without [`Tx::commit`] rolls it back, but only once its
/// connection runs again: until then its locks stay (a leased job's row on PostgreSQL, the write
/// lock on SQLite), so prefer [`Tx::rollback`] where the next step depends on it.
pub struct Tx<'a> {
    tx: sqlx::Transaction<'static, Any>,
    backend: Backend,
    /// This process's SQLite writer turn, given back after the transaction (declared after
    /// `tx`, so dropped after it).
    _writer: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The events appended so far (id and content), chained when the transaction commits.
    chained: Vec<(i64, NewEvent)>,
    // Ties the transaction to the store it came from, as the contract's `Tx<'_>` promises, so a
    // later change to borrow the pool instead of owning a connection breaks no caller.
    _store: PhantomData<&'a Store>,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("backend", &self.backend).finish_non_exhaustive()
    }
}

static INSTALL_DRIVERS: Once = Once::new();

/// Picks the backend from the URL's scheme.
fn backend_of(url: &str) -> Result<Backend, StoreError> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        _ => Err(StoreError::UnsupportedUrl { scheme: scheme.to_owned() }),
    }
}

/// True for SQLite URLs naming an in-memory database, where every connection would get its own
/// empty database.
fn sqlite_is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Takes siirto's own `synchronous=` option off a SQLite URL: `full` (the default) makes every
/// commit durable across a power loss, as a sent-mark must be; `normal` may lose the last
/// commits then (a kill loses nothing either way). Returns the URL for sqlx and the pragma value.
fn sqlite_synchronous(url: &str) -> Result<(String, &'static str), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), "FULL"));
    };
    let mut value = "FULL";
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("synchronous", given)) => {
                value = match given.to_ascii_lowercase().as_str() {
                    "full" => "FULL",
                    "normal" => "NORMAL",
                    _ => {
                        return Err(StoreError::BadOption {
                            option: "synchronous",
                            value: given.to_owned(),
                            expected: "full or normal",
                        });
                    }
                };
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    Ok((url, value))
}

/// Adds `mode=rwc` to a SQLite file URL that names no mode, so a missing file is created.
fn sqlite_url_with_create(url: &str) -> String {
    if sqlite_is_memory(url) || url.contains("mode=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}mode=rwc")
}

impl Store {
    /// Opens the store at `url` (`sqlite:PATH`, creating the file if missing, or
    /// `postgres://...`) and applies the schema migrations that are not applied yet. A SQLite
    /// URL may end in `?synchronous=normal` to trade durability across a power loss for speed
    /// (the default, `full`, keeps every commit; README "The store" gives the measured cost).
    #[tracing::instrument(skip_all, fields(backend))]
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        let backend = backend_of(url)?;
        tracing::Span::current().record("backend", tracing::field::debug(backend));

        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        let pool = match backend {
            Backend::Postgres => options.max_connections(10).connect(url).await?,
            Backend::Sqlite => {
                let (url, synchronous) = sqlite_synchronous(url)?;
                let url = url.as_str();
                let memory = sqlite_is_memory(url);
                // An in-memory database exists once per connection: keep exactly one.
                let options = if memory {
                    options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
                } else {
                    options.max_connections(8)
                };
                options
                    // A file on this machine has no connection to lose: no ping before each use
                    // (a round trip to the connection's thread, as costly as a statement).
                    .test_before_acquire(false)
                    .after_connect(move |conn, _meta| {
                        Box::pin(async move {
                            // busy_timeout first, so the journal-mode switch below can wait too.
                            conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str())
                                .await?;
                            if !memory {
                                conn.execute("PRAGMA journal_mode = WAL").await?;
                            }
                            conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str()).await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url_with_create(url))
                    .await?
            }
        };

        // sqlx 0.8 implements `Migrate` for `AnyConnection` by delegating to the backend's own
        // implementation, so the embedded migrator runs on the Any pool directly. The two
        // directories hold the same versions; each backend records them in `_sqlx_migrations`.
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.run(&pool).await?;
        let store = Store { pool, backend, writer: Default::default() };
        store.backfill_search_terms().await?;
        store.chain_earlier_events().await?;
        Ok(store)
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    #[allow(clippy::type_complexity)]
    async fn begin_tx(
        &self,
    ) -> Result<(sqlx::Transaction<'static, Any>, Option<tokio::sync::OwnedMutexGuard<()>>), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                // Wait our turn as long as SQLite's busy timeout would have let us.
                let wait = Duration::from_millis(u64::from(SQLITE_BUSY_TIMEOUT_MS));
                let turn = tokio::time::timeout(wait, self.writer.clone().lock_owned())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)?;
                // Take the write lock up front: every store transaction writes.
                Ok((self.pool.begin_with("BEGIN IMMEDIATE").await?, Some(turn)))
            }
            Backend::Postgres => Ok((self.pool.begin().await?, None)),
        }
    }

    /// Starts a transaction for an operator action or planning (no lease involved).
    pub async fn begin(&self) -> Result<Tx<'_>, StoreError> {
        let (tx, writer) = self.begin_tx().await?;
        Ok(Tx { tx, backend: self.backend, _writer: writer, chained: Vec::new(), _store: PhantomData })
    }

    /// The earliest time at which a not-done job can be claimed: its due time, or its lease's
    /// expiry if it is leased past its due time (so a daemon does not wake up for jobs another
    /// worker holds). `None` when no job is pending.
    pub async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        let at: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN lease_expires_at IS NOT NULL AND lease_expires_at > due_at \
                        THEN lease_expires_at ELSE due_at END) \
             FROM jobs WHERE done_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(at)
    }

    /// One migration by id.
    pub async fn migration(&self, id: &str) -> Result<Option<MigrationRow>, StoreError> {
        select_one(&self.pool, "SELECT * FROM migrations WHERE id = $1", &[id]).await
    }

    /// One migration by id; [`StoreError::NoMigration`], listing the ids there are (closest
    /// first), when there is none.
    pub async fn require_migration(&self, id: &str) -> Result<MigrationRow, StoreError> {
        if let Some(row) = self.migration(id).await? {
            return Ok(row);
        }
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM migrations").fetch_all(&self.pool).await?;
        Err(StoreError::NoMigration { id: id.to_owned(), existing: closest_first(id, ids) })
    }

    /// The plan document recorded with a migration.
    pub async fn plan_document(&self, migration_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT document FROM plan_documents WHERE migration_id = $1")
            .bind(migration_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The newest plan document of a source host, other than `except` (the migration being
    /// planned), with its migration id: what a new plan of the same server is compared with.
    pub async fn latest_plan_document(
        &self,
        source_host: &str,
        except: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT migration_id, document FROM plan_documents \
             WHERE source_host = $1 AND migration_id <> $2 ORDER BY created_at DESC, migration_id DESC LIMIT 1",
        )
        .bind(source_host)
        .bind(except)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Whether the store answers and holds every schema migration this build knows (what
    /// `/readyz` reports).
    pub async fn ready(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        let expected = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let (applied,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await?;
        let applied = applied.unwrap_or(0);
        if applied < expected {
            return Err(StoreError::NotFound {
                what: "schema migration",
                key: format!("{expected} (the store is at {applied})"),
            });
        }
        Ok(())
    }

    /// All migrations, oldest first.
    pub async fn migrations(&self) -> Result<Vec<MigrationRow>, StoreError> {
        select(&self.pool, "SELECT * FROM migrations ORDER BY created_at, id", &[]).await
    }

    /// The accounts of one customer (by [`AccountRow::customer_key`]) in a migration, by user name.
    pub async fn accounts_of_customer(
        &self,
        migration_id: &str,
        customer_key: &str,
    ) -> Result<Vec<AccountRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM accounts WHERE migration_id = $1 AND customer_key = $2 ORDER BY user_name",
        )
        .bind(migration_id)
        .bind(customer_key)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The accounts of a migration, by user name.
    pub async fn accounts(&self, migration_id: &str) -> Result<Vec<AccountRow>, StoreError> {
        select(
            &self.pool,
            "SELECT * FROM accounts WHERE migration_id = $1 ORDER BY user_name",
            &[migration_id],
        )
        .await
    }

    /// At most `limit` accounts of a migration whose state is one of `states` (state names), by
    /// user name: what a step needs without reading a migration of 10,000 accounts.
    pub async fn accounts_in_states(
        &self,
        migration_id: &str,
        states: &[&str],
        limit: i64,
    ) -> Result<Vec<AccountRow>, StoreError> {
        let list = (0..states.len()).map(|n| format!("${}", n + 3)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT * FROM accounts WHERE migration_id = $1 AND state IN ({list}) ORDER BY user_name LIMIT $2"
        );
        let mut query = sqlx::query_as(&sql).bind(migration_id).bind(limit);
        for state in states {
            query = query.bind(*state);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The accounts of a migration with these user names (those it has), by user name.
    pub async fn accounts_named(
        &self,
        migration_id: &str,
        users: &[String],
    ) -> Result<Vec<AccountRow>, StoreError> {
        let mut rows = Vec::with_capacity(users.len());
        for chunk in users.chunks(INSERT_CHUNK) {
            let list = (0..chunk.len()).map(|n| format!("${}", n + 2)).collect::<Vec<_>>().join(", ");
            let sql = format!("SELECT * FROM accounts WHERE migration_id = $1 AND user_name IN ({list})");
            let mut query = sqlx::query_as(&sql).bind(migration_id);
            for user in chunk {
                query = query.bind(user);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        rows.sort_by(|a: &AccountRow, b| a.user.cmp(&b.user));
        Ok(rows)
    }

    /// One account of a migration.
    pub async fn account(&self, migration_id: &str, user: &str) -> Result<Option<AccountRow>, StoreError> {
        select_one(&self.pool, ACCOUNT, &[migration_id, user]).await
    }

    /// The domains of a migration, by name.
    pub async fn domains(&self, migration_id: &str) -> Result<Vec<DomainRow>, StoreError> {
        select(&self.pool, "SELECT * FROM domains WHERE migration_id = $1 ORDER BY domain", &[migration_id])
            .await
    }

    /// The domains still to lower (`pending`, `ttl_observed`) in the first `zones` zones (by
    /// name) that have any, leaving out the domains of held accounts (a zone that could not be
    /// read holds its accounts, and must not be tried again on every run); by zone, then name.
    pub async fn domains_to_lower(
        &self,
        migration_id: &str,
        zones: u32,
    ) -> Result<Vec<DomainRow>, StoreError> {
        const TO_LOWER: &str = "d.migration_id = $1 AND d.state IN ('pending', 'ttl_observed') \
             AND NOT EXISTS (SELECT 1 FROM accounts a WHERE a.migration_id = d.migration_id \
             AND a.user_name = d.user_name AND a.state = 'held')";
        Ok(sqlx::query_as(&format!(
            "SELECT d.* FROM domains d WHERE {TO_LOWER} AND d.zone IN \
             (SELECT DISTINCT d.zone FROM domains d WHERE {TO_LOWER} ORDER BY d.zone LIMIT $2) \
             ORDER BY d.zone, d.domain"
        ))
        .bind(migration_id)
        .bind(i64::from(zones))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The domains of one account, by name.
    pub async fn domains_of(&self, migration_id: &str, user: &str) -> Result<Vec<DomainRow>, StoreError> {
        let sql = "SELECT * FROM domains WHERE migration_id = $1 AND user_name = $2 ORDER BY domain";
        select(&self.pool, sql, &[migration_id, user]).await
    }

    /// The accounts of a migration on a dedicated IP at the source, by user name.
    pub async fn dedicated_ips(&self, migration_id: &str) -> Result<Vec<DedicatedIpRow>, StoreError> {
        let sql = "SELECT * FROM dedicated_ips WHERE migration_id = $1 ORDER BY user_name";
        select(&self.pool, sql, &[migration_id]).await
    }

    /// One account's dedicated IP row, if it is on a dedicated IP at the source.
    pub async fn dedicated_ip(
        &self,
        migration_id: &str,
        user: &str,
    ) -> Result<Option<DedicatedIpRow>, StoreError> {
        let sql = "SELECT * FROM dedicated_ips WHERE migration_id = $1 AND user_name = $2";
        select_one(&self.pool, sql, &[migration_id, user]).await
    }

    /// The domains of a migration that live in one zone, by name.
    pub async fn domains_in_zone(
        &self,
        migration_id: &str,
        zone: &str,
    ) -> Result<Vec<DomainRow>, StoreError> {
        let sql = "SELECT * FROM domains WHERE migration_id = $1 AND zone = $2 ORDER BY domain";
        select(&self.pool, sql, &[migration_id, zone]).await
    }

    /// How many jobs of a migration are not done, leaving out those of kind `later_kind` due
    /// after `now` (the old server's decommission stages, months after the cutover: the
    /// migration itself has nothing left to do while only they wait).
    pub async fn open_jobs(&self, migration_id: &str, later_kind: &str, now: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE migration_id = $1 AND done_at IS NULL \
             AND NOT (kind = $2 AND due_at > $3)",
        )
        .bind(migration_id)
        .bind(later_kind)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    /// All jobs of a migration, done ones included, by id.
    pub async fn jobs(&self, migration_id: &str) -> Result<Vec<JobRow>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE migration_id = $1 ORDER BY id");
        select(&self.pool, &sql, &[migration_id]).await
    }

    /// The event log of a migration, in the order it was written.
    pub async fn events(&self, migration_id: &str) -> Result<Vec<EventRow>, StoreError> {
        select(&self.pool, "SELECT * FROM events WHERE migration_id = $1 ORDER BY id", &[migration_id]).await
    }

    /// The events of a migration written after event `after_id` (0: all of them), in the order
    /// they were written: what `siirto log --follow` has not shown yet.
    pub async fn events_after(&self, migration_id: &str, after_id: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM events WHERE migration_id = $1 AND id > $2 ORDER BY id")
            .bind(migration_id)
            .bind(after_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The events of a migration of the given kinds, in the order they were written.
    pub async fn events_of_kinds(
        &self,
        migration_id: &str,
        kinds: &[&str],
    ) -> Result<Vec<EventRow>, StoreError> {
        let list = (0..kinds.len()).map(|n| format!("${}", n + 2)).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT * FROM events WHERE migration_id = $1 AND kind IN ({list}) ORDER BY id");
        let mut keys = vec![migration_id];
        keys.extend_from_slice(kinds);
        select(&self.pool, &sql, &keys).await
    }

    /// The events of these accounts of a migration (their domains' included), in the order they
    /// were written: one customer's timeline.
    pub async fn events_of_accounts(
        &self,
        migration_id: &str,
        users: &[String],
    ) -> Result<Vec<EventRow>, StoreError> {
        let mut rows: Vec<EventRow> = Vec::new();
        for chunk in users.chunks(INSERT_CHUNK) {
            let list = (0..chunk.len()).map(|n| format!("${}", n + 2)).collect::<Vec<_>>().join(", ");
            let sql =
                format!("SELECT * FROM events WHERE migration_id = $1 AND account IN ({list}) ORDER BY id");
            let mut query = sqlx::query_as(&sql).bind(migration_id);
            for user in chunk {
                query = query.bind(user);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        rows.sort_by_key(|row| row.id);
        Ok(rows)
    }

    /// One event, by its id.
    pub async fn event(&self, id: i64) -> Result<Option<EventRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM events WHERE id = $1").bind(id).fetch_optional(&self.pool).await?)
    }

    /// The latest `limit` events of a migration, newest first.
    pub async fn events_latest(&self, migration_id: &str, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM events WHERE migration_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(migration_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The largest event id in the store (0: none yet): where a live view starts.
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        let (id,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(id) FROM events").fetch_one(&self.pool).await?;
        Ok(id.unwrap_or(0))
    }

    /// At most `limit` events of any migration written after event `after_id`, in id order: what
    /// the status page's live view has not shown yet.
    pub async fn events_since(&self, after_id: i64, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM events WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The messages the final mail sync copied for an account, as (mailbox, unique name).
    pub async fn mail_copied(
        &self,
        migration_id: &str,
        user: &str,
    ) -> Result<std::collections::HashSet<(String, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT mailbox, uniq FROM mail_copied WHERE migration_id = $1 AND user_name = $2",
        )
        .bind(migration_id)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// When the latest event `kind` of an account was recorded, if one was.
    pub async fn last_event_at(
        &self,
        migration_id: &str,
        account: &str,
        kind: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MAX(at) FROM events WHERE migration_id = $1 AND account = $2 AND kind = $3",
        )
        .bind(migration_id)
        .bind(account)
        .bind(kind)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Rows per multi-row INSERT: far below SQLite's limit of 32,766 bound parameters and
/// PostgreSQL's 65,535, and measured faster than 500-row statements on both.
const INSERT_CHUNK: usize = 100;

/// `($1, .., $columns), (..), ..` for `rows` rows.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// `$first, $first+1, …` for `count` values: an `IN (…)` list of bound values.
pub(crate) fn numbered(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// A row type the store reads with `SELECT`: every `*Row` struct (sqlx's `FromRow` derive).
pub trait ReadRow: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin {}
impl<T> ReadRow for T where T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin {}

/// Every row `sql` selects, its `$1…` bound to `keys` in order: the shape of most of the
/// store's reads (a migration id, a user, a domain).
async fn select<'e, T: ReadRow>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    sql: &str,
    keys: &[&str],
) -> Result<Vec<T>, StoreError> {
    let mut query = sqlx::query_as(sql);
    for key in keys {
        query = query.bind(*key);
    }
    Ok(query.fetch_all(executor).await?)
}

/// The row `sql` selects, if any (see [`select`]).
async fn select_one<'e, T: ReadRow>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    sql: &str,
    keys: &[&str],
) -> Result<Option<T>, StoreError> {
    let mut query = sqlx::query_as(sql);
    for key in keys {
        query = query.bind(*key);
    }
    Ok(query.fetch_optional(executor).await?)
}

/// A query returning one text column per row, as the batch inserts' `RETURNING key`.
type ScalarQuery<'q> = sqlx::query::QueryScalar<'q, Any, String, sqlx::any::AnyArguments<'q>>;

/// A batch insert's table, columns and conflict clause (see [`Tx::insert_batch`]).
struct BatchInsert {
    /// What a row is, for the conflict error ("account").
    what: &'static str,
    /// `table (column, …)`.
    into: &'static str,
    /// How many columns each row binds.
    columns: usize,
    /// `(key columns) DO NOTHING RETURNING key`.
    key: &'static str,
}

/// Turns "no row changed" into the error `or_else` makes.
fn expect_one(
    result: sqlx::any::AnyQueryResult,
    or_else: impl FnOnce() -> StoreError,
) -> Result<(), StoreError> {
    if result.rows_affected() == 0 { Err(or_else()) } else { Ok(()) }
}

/// After a batch insert with `ON CONFLICT DO NOTHING RETURNING key`: a
/// [`StoreError::Conflict`] naming the first row of `chunk` whose key did not come back.
fn batch_conflict<R>(
    what: &'static str,
    chunk: &[R],
    inserted: &[String],
    key: impl Fn(&R) -> (&String, &String),
) -> Result<(), StoreError> {
    if inserted.len() == chunk.len() {
        return Ok(());
    }
    let inserted: std::collections::HashSet<&str> = inserted.iter().map(String::as_str).collect();
    let first = chunk.iter().map(&key).find(|(_, k)| !inserted.contains(k.as_str()));
    Err(StoreError::Conflict {
        what,
        key: first.map_or_else(
            || "a key repeated in the batch".to_owned(),
            |(migration, k)| format!("{migration}/{k}"),
        ),
    })
}

impl Tx<'_> {
    /// Which database this transaction runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Inserts a migration; [`StoreError::Conflict`] if its id exists.
    pub async fn insert_migration(&mut self, row: &MigrationRow) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO migrations \
             (id, source_host, target_host, playbook, cutover_at, state, data, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.source_host)
        .bind(&row.target_host)
        .bind(&row.playbook)
        .bind(row.cutover_at)
        .bind(&row.state)
        .bind(&row.data)
        .bind(row.created_at)
        .bind(row.updated_at)
        .execute(&mut *self.tx)
        .await?;
        expect_one(result, || StoreError::Conflict { what: "migration", key: row.id.clone() })
    }

    /// Records a migration's plan document.
    pub async fn insert_plan_document(
        &mut self,
        migration_id: &str,
        source_host: &str,
        created_at: i64,
        document: &str,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO plan_documents (migration_id, source_host, created_at, document) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (migration_id) DO NOTHING",
        )
        .bind(migration_id)
        .bind(source_host)
        .bind(created_at)
        .bind(document)
        .execute(&mut *self.tx)
        .await?;
        expect_one(result, || StoreError::Conflict { what: "plan document", key: migration_id.to_owned() })
    }

    /// Inserts an account; [`StoreError::Conflict`] if the migration already has that user.
    pub async fn insert_account(&mut self, row: &AccountRow) -> Result<(), StoreError> {
        self.insert_accounts(std::slice::from_ref(row)).await
    }

    /// Inserts a domain (its account must exist); [`StoreError::Conflict`] if the migration
    /// already has that domain.
    pub async fn insert_domain(&mut self, row: &DomainRow) -> Result<(), StoreError> {
        self.insert_domains(std::slice::from_ref(row)).await
    }

    /// Inserts many accounts with few statements (planning a migration of 10,000 accounts),
    /// and their search terms; [`StoreError::Conflict`] naming the first account that already
    /// existed. Nothing is inserted when the transaction is not committed, so callers roll back
    /// on a conflict.
    pub async fn insert_accounts(&mut self, rows: &[AccountRow]) -> Result<(), StoreError> {
        let insert = BatchInsert {
            what: "account",
            into: "accounts (migration_id, user_name, main_domain, contact_email, disk_mb, state, data, updated_at, \
                   customer_key, customer_name, language, reseller, reseller_email)",
            columns: 13,
            key: "(migration_id, user_name) DO NOTHING RETURNING user_name",
        };
        self.insert_batch(
            &insert,
            rows,
            |row| (&row.migration_id, &row.user),
            |query, row| {
                query
                    .bind(&row.migration_id)
                    .bind(&row.user)
                    .bind(&row.main_domain)
                    .bind(&row.contact_email)
                    .bind(row.disk_mb)
                    .bind(&row.state)
                    .bind(&row.data)
                    .bind(row.updated_at)
                    .bind(&row.customer_key)
                    .bind(&row.customer_name)
                    .bind(&row.language)
                    .bind(&row.reseller)
                    .bind(&row.reseller_email)
            },
        )
        .await?;
        self.insert_account_terms(rows).await
    }

    /// Inserts many domains with few statements (their accounts must exist), and their search
    /// terms; [`StoreError::Conflict`] naming the first domain that already existed.
    pub async fn insert_domains(&mut self, rows: &[DomainRow]) -> Result<(), StoreError> {
        let insert = BatchInsert {
            what: "domain",
            into: "domains (migration_id, domain, user_name, zone, state, data, updated_at)",
            columns: 7,
            key: "(migration_id, domain) DO NOTHING RETURNING domain",
        };
        self.insert_batch(
            &insert,
            rows,
            |row| (&row.migration_id, &row.domain),
            |query, row| {
                query
                    .bind(&row.migration_id)
                    .bind(&row.domain)
                    .bind(&row.user)
                    .bind(&row.zone)
                    .bind(&row.state)
                    .bind(&row.data)
                    .bind(row.updated_at)
            },
        )
        .await?;
        self.insert_domain_terms(rows).await
    }

    /// The shape of the batch inserts: `INSERT INTO … VALUES (…), (…) ON CONFLICT … DO NOTHING
    /// RETURNING key` a chunk of rows at a time, each row bound by `bind`, then a
    /// [`StoreError::Conflict`] naming the first row of a chunk whose key did not come back.
    async fn insert_batch<R>(
        &mut self,
        insert: &BatchInsert,
        rows: &[R],
        key: impl Fn(&R) -> (&String, &String),
        bind: impl for<'q> Fn(ScalarQuery<'q>, &'q R) -> ScalarQuery<'q>,
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO {} VALUES {} ON CONFLICT {}",
                insert.into,
                placeholders(chunk.len(), insert.columns),
                insert.key
            );
            let mut query = sqlx::query_scalar::<_, String>(&sql);
            for row in chunk {
                query = bind(query, row);
            }
            let inserted = query.fetch_all(&mut *self.tx).await?;
            batch_conflict(insert.what, chunk, &inserted, &key)?;
        }
        Ok(())
    }

    /// Records the accounts on a dedicated IP at the source (their accounts must exist);
    /// [`StoreError::Conflict`] if one is recorded already.
    pub async fn insert_dedicated_ips(&mut self, rows: &[DedicatedIpRow]) -> Result<(), StoreError> {
        for row in rows {
            let result = sqlx::query(
                "INSERT INTO dedicated_ips \
                 (migration_id, user_name, source_ip, target_ip, assigned_by, assigned_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (migration_id, user_name) DO NOTHING",
            )
            .bind(&row.migration_id)
            .bind(&row.user)
            .bind(&row.source_ip)
            .bind(&row.target_ip)
            .bind(&row.assigned_by)
            .bind(row.assigned_at)
            .execute(&mut *self.tx)
            .await?;
            expect_one(result, || StoreError::Conflict {
                what: "dedicated IP",
                key: format!("{}/{}", row.migration_id, row.user),
            })?;
        }
        Ok(())
    }

    /// Records the target address assigned to an account that has none yet:
    /// [`StoreError::NotFound`] if the account is not on a dedicated IP or already has one,
    /// [`StoreError::Conflict`] if another account of the migration has that address.
    pub async fn assign_target_ip(
        &mut self,
        migration_id: &str,
        user: &str,
        target_ip: &str,
        by: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT user_name FROM dedicated_ips WHERE migration_id = $1 AND target_ip = $2",
        )
        .bind(migration_id)
        .bind(target_ip)
        .fetch_optional(&mut *self.tx)
        .await?;
        if let Some(other) = taken {
            return Err(StoreError::Conflict {
                what: "target IP",
                key: format!("{target_ip} (account {other})"),
            });
        }
        let result = sqlx::query(
            "UPDATE dedicated_ips SET target_ip = $1, assigned_by = $2, assigned_at = $3 \
             WHERE migration_id = $4 AND user_name = $5 AND target_ip IS NULL",
        )
        .bind(target_ip)
        .bind(by)
        .bind(at)
        .bind(migration_id)
        .bind(user)
        .execute(&mut *self.tx)
        .await?;
        expect_one(result, || StoreError::NotFound {
            what: "account waiting for a target IP",
            key: format!("{migration_id}/{user}"),
        })
    }

    /// Sets a migration's state; [`StoreError::NotFound`] if there is no such migration.
    pub async fn set_migration_state(
        &mut self,
        id: &str,
        state: &str,
        data: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE migrations SET state = $1, data = $2, updated_at = $3 WHERE id = $4";
        self.set_state(sql, state, data, now, &[id], || StoreError::NotFound {
            what: "migration",
            key: id.to_owned(),
        })
        .await
    }

    /// Moves a migration's cutover to `cutover_at` (a reschedule).
    pub async fn set_cutover(&mut self, id: &str, cutover_at: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE migrations SET cutover_at = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(cutover_at)
            .bind(now)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Moves the due time of a migration's jobs of `kind` not done yet to `due_at`; how many
    /// moved.
    pub async fn move_pending_jobs(
        &mut self,
        migration_id: &str,
        kind: &str,
        due_at: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET due_at = $3 WHERE migration_id = $1 AND kind = $2 AND done_at IS NULL",
        )
        .bind(migration_id)
        .bind(kind)
        .bind(due_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// The shape of the state setters: `sql` sets `state = $1, data = $2, updated_at = $3` where
    /// its key columns equal `keys` (`$4`, …); `missing` is the error when no row has them.
    async fn set_state(
        &mut self,
        sql: &str,
        state: &str,
        data: &str,
        now: i64,
        keys: &[&str],
        missing: impl FnOnce() -> StoreError,
    ) -> Result<(), StoreError> {
        let mut query = sqlx::query(sql).bind(state).bind(data).bind(now);
        for key in keys {
            query = query.bind(*key);
        }
        expect_one(query.execute(&mut *self.tx).await?, missing)
    }

    /// One account of a migration, read inside this transaction. Steps that already hold a
    /// transaction read through it: asking the pool for a second connection while a write
    /// transaction holds one can starve the pool (every connection held by a transaction
    /// waiting for SQLite's write lock, the lock's holder waiting for a connection) until the
    /// busy and acquire timeouts run out.
    pub async fn account(
        &mut self,
        migration_id: &str,
        user: &str,
    ) -> Result<Option<AccountRow>, StoreError> {
        select_one(&mut *self.tx, ACCOUNT, &[migration_id, user]).await
    }

    /// The accounts of a migration with these users (any order; a user without one is left
    /// out), read through this transaction.
    pub async fn accounts_named(
        &mut self,
        migration_id: &str,
        users: &[&str],
    ) -> Result<Vec<AccountRow>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT * FROM accounts WHERE migration_id = $1 AND user_name IN ({})",
            numbered(2, users.len())
        );
        let mut keys = vec![migration_id];
        keys.extend_from_slice(users);
        select(&mut *self.tx, &sql, &keys).await
    }

    /// The accounts of one customer (by [`AccountRow::customer_key`]), read inside this
    /// transaction after taking their row locks (PostgreSQL; SQLite serializes writers anyway),
    /// so two jobs deciding for the same customer at once decide one after the other, the
    /// second seeing what the first wrote.
    pub async fn lock_customer(
        &mut self,
        migration_id: &str,
        customer_key: &str,
    ) -> Result<Vec<AccountRow>, StoreError> {
        sqlx::query(
            "UPDATE accounts SET updated_at = updated_at WHERE migration_id = $1 AND customer_key = $2",
        )
        .bind(migration_id)
        .bind(customer_key)
        .execute(&mut *self.tx)
        .await?;
        Ok(sqlx::query_as(
            "SELECT * FROM accounts WHERE migration_id = $1 AND customer_key = $2 ORDER BY user_name",
        )
        .bind(migration_id)
        .bind(customer_key)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// Sets an account's state; [`StoreError::NotFound`] if there is no such account.
    pub async fn set_account_state(
        &mut self,
        migration_id: &str,
        user: &str,
        state: &str,
        data: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE accounts SET state = $1, data = $2, updated_at = $3 \
                   WHERE migration_id = $4 AND user_name = $5";
        self.set_state(sql, state, data, now, &[migration_id, user], || StoreError::NotFound {
            what: "account",
            key: format!("{migration_id}/{user}"),
        })
        .await
    }

    /// Sets a domain's state; [`StoreError::NotFound`] if there is no such domain.
    pub async fn set_domain_state(
        &mut self,
        migration_id: &str,
        domain: &str,
        state: &str,
        data: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let sql = "UPDATE domains SET state = $1, data = $2, updated_at = $3 \
                   WHERE migration_id = $4 AND domain = $5";
        self.set_state(sql, state, data, now, &[migration_id, domain], || StoreError::NotFound {
            what: "domain",
            key: format!("{migration_id}/{domain}"),
        })
        .await
    }

    /// Remembers messages the final mail sync copied for an account, as (mailbox, unique name);
    /// one remembered already stays as it was.
    pub async fn record_mail_copied(
        &mut self,
        migration_id: &str,
        user: &str,
        copied: &[(String, String)],
        at: i64,
    ) -> Result<(), StoreError> {
        for chunk in copied.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO mail_copied (migration_id, user_name, mailbox, uniq, copied_at) VALUES {} \
                 ON CONFLICT (migration_id, user_name, mailbox, uniq) DO NOTHING",
                placeholders(chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for (mailbox, uniq) in chunk {
                query = query.bind(migration_id).bind(user).bind(mailbox).bind(uniq).bind(at);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Appends an event to the log and returns its id.
    pub async fn append_event(&mut self, e: &NewEvent) -> Result<i64, StoreError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (migration_id, account, domain, kind, detail, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&e.migration_id)
        .bind(&e.account)
        .bind(&e.domain)
        .bind(&e.kind)
        .bind(&e.detail)
        .bind(&e.actor)
        .bind(e.at)
        .fetch_one(&mut *self.tx)
        .await?;
        self.chained.push((id, e.clone()));
        Ok(id)
    }

    /// Schedules a job; returns false (and changes nothing) if a job with its dedupe key exists.
    pub async fn schedule_job(&mut self, j: &NewJob) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO jobs (migration_id, kind, subject, payload, dedupe_key, due_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(&j.migration_id)
        .bind(&j.kind)
        .bind(&j.subject)
        .bind(&j.payload)
        .bind(&j.dedupe_key)
        .bind(j.due_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// [`Tx::schedule_job`] for many jobs, in multi-row INSERTs (a campaign's send jobs):
    /// returns how many were new.
    pub async fn schedule_jobs(&mut self, jobs: &[NewJob]) -> Result<u64, StoreError> {
        let mut new = 0;
        for chunk in jobs.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO jobs (migration_id, kind, subject, payload, dedupe_key, due_at) \
                 VALUES {} ON CONFLICT (dedupe_key) DO NOTHING",
                placeholders(chunk.len(), 6)
            );
            let mut query = sqlx::query(&sql);
            for j in chunk {
                query = query.bind(&j.migration_id).bind(&j.kind).bind(&j.subject).bind(&j.payload);
                query = query.bind(&j.dedupe_key).bind(j.due_at);
            }
            new += query.execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(new)
    }

    /// Locks the account row for the rest of the transaction (PostgreSQL `FOR UPDATE`; a SQLite
    /// transaction holds the database's write lock already) and returns it: a state read here
    /// cannot be changed by a concurrent operator action before this transaction writes.
    pub async fn account_for_update(
        &mut self,
        migration_id: &str,
        user: &str,
    ) -> Result<Option<AccountRow>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        select_one(&mut *self.tx, &format!("{ACCOUNT}{lock}"), &[migration_id, user]).await
    }

    /// The migration's row, locked for the rest of the transaction (PostgreSQL `FOR UPDATE`; a
    /// SQLite transaction holds the write lock already).
    pub async fn migration_for_update(&mut self, id: &str) -> Result<Option<MigrationRow>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        select_one(&mut *self.tx, &format!("SELECT * FROM migrations WHERE id = $1{lock}"), &[id]).await
    }

    /// How many of the migration's accounts are in each state (by state name), read through
    /// this transaction.
    pub async fn account_counts(
        &mut self,
        migration_id: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM accounts WHERE migration_id = $1 GROUP BY state")
                .bind(migration_id)
                .fetch_all(&mut *self.tx)
                .await?;
        Ok(rows.into_iter().map(|(state, n)| (state, n.max(0) as u64)).collect())
    }

    /// How many domains of a migration are in each state.
    pub async fn domain_counts(
        &mut self,
        migration_id: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM domains WHERE migration_id = $1 GROUP BY state")
                .bind(migration_id)
                .fetch_all(&mut *self.tx)
                .await?;
        Ok(rows.into_iter().map(|(state, n)| (state, n.max(0) as u64)).collect())
    }

    /// Operator retry: makes the job with this dedupe key pending again at `due_at` with zero
    /// attempts and no error, done or not. Returns false if the migration has no such job. A job
    /// a worker holds right now keeps its lease: its holder records the outcome of the run in
    /// flight, and the job stays done if that run finishes it.
    pub async fn requeue_job(
        &mut self,
        migration_id: &str,
        dedupe_key: &str,
        due_at: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE jobs SET done_at = NULL, attempts = 0, last_error = NULL, due_at = $3 \
             WHERE migration_id = $1 AND dedupe_key = $2",
        )
        .bind(migration_id)
        .bind(dedupe_key)
        .bind(due_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Chains the events it appended ([`audit`]), then commits the transaction.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.chain_events().await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Rolls the transaction back (dropping it does the same, without waiting).
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_comes_from_the_url_scheme() {
        assert_eq!(backend_of("sqlite:/tmp/x.db").ok(), Some(Backend::Sqlite));
        assert_eq!(backend_of("postgres://u@h/db").ok(), Some(Backend::Postgres));
        assert_eq!(backend_of("postgresql://u@h/db").ok(), Some(Backend::Postgres));
        let err = backend_of("mysql://root:hunter2@h/db");
        assert!(matches!(err, Err(StoreError::UnsupportedUrl { ref scheme }) if scheme == "mysql"));
        // The error never repeats the URL, which may carry a password.
        let message = err.map(|_| ()).unwrap_err().to_string();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn sqlite_file_urls_create_the_file() {
        assert_eq!(sqlite_url_with_create("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db?mode=rwc");
        assert_eq!(
            sqlite_url_with_create("sqlite:/tmp/x.db?cache=shared"),
            "sqlite:/tmp/x.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite_url_with_create("sqlite:/tmp/x.db?mode=ro"), "sqlite:/tmp/x.db?mode=ro");
        assert_eq!(sqlite_url_with_create("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn sqlite_synchronous_is_full_unless_the_url_says_normal() {
        let cases = [
            ("sqlite:/tmp/x.db", "sqlite:/tmp/x.db", "FULL"),
            ("sqlite:/tmp/x.db?synchronous=normal", "sqlite:/tmp/x.db", "NORMAL"),
            (
                "sqlite:/tmp/x.db?mode=rwc&synchronous=FULL&cache=shared",
                "sqlite:/tmp/x.db?mode=rwc&cache=shared",
                "FULL",
            ),
        ];
        for (url, stripped, value) in cases {
            assert_eq!(sqlite_synchronous(url).unwrap(), (stripped.to_owned(), value), "{url}");
        }
        let err = sqlite_synchronous("sqlite:x.db?synchronous=off").unwrap_err().to_string();
        assert!(err.contains("synchronous=\"off\"") && err.contains("full or normal"), "{err}");
    }

    #[test]
    fn placeholders_number_every_column_of_every_row() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
    }

    #[test]
    fn only_retryable_errors_are_transient() {
        assert!(StoreError::Sqlx(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::Sqlx(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::LeaseLost { job_id: 1, reason: "expired".into() }.is_transient());
    }
}
