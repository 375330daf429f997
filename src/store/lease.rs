//! Leases: the proof that a holder may work on one job (STYLE.md #8). A claim writes a random
//! token and an expiry on the database's clock; the holder renews it while its step runs, checks
//! it before every external effect, and records the job's outcome in a transaction that
//! re-asserts it. A run that ends its lease clears only the expiry, so the row still says whose
//! run ended it. An account's DNS lock lives as long as its job's lease.

use std::marker::PhantomData;
use std::time::Duration;

use crate::store::{Backend, JOB_COLUMNS, JobRow, Store, StoreError, Tx, expect_one, numbered};

/// The database's clock in unix milliseconds, as SQL: what lease expiries are set from and
/// compared with.
fn db_now(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

/// Proof that its holder may work on one job. Only [`Store::claim_jobs`] makes one; clones share
/// it (the step that acts and the task that renews it).
///
/// A lease is the job, the owner and a random token written by the claim; the database keeps its
/// expiry on its own clock. The holder also keeps a deadline on its monotonic clock, set from the
/// moment it *sent* each successful claim or renewal: the database's expiry is that moment (or
/// later) plus the lease, so before the deadline no other claimer can have been given the job.
/// [`Lease::check`] refuses once less than a quarter of the lease is left (renewals run every
/// third), and once a renewal found the lease gone; an effect that passed the check therefore
/// starts with at least a quarter of the lease (15 s by default) before anyone else may act.
#[derive(Debug, Clone)]
pub struct Lease {
    inner: std::sync::Arc<LeaseInner>,
}

#[derive(Debug)]
struct LeaseInner {
    job_id: i64,
    owner: String,
    token: i64,
    duration: Duration,
    deadline: std::sync::Mutex<std::time::Instant>,
    /// `Some(reason)` once the lease is known to be lost.
    lost: tokio::sync::watch::Sender<Option<String>>,
}

impl Lease {
    fn new(job_id: i64, owner: &str, token: i64, duration: Duration, sent: std::time::Instant) -> Lease {
        Lease {
            inner: std::sync::Arc::new(LeaseInner {
                job_id,
                owner: owner.to_owned(),
                token,
                duration,
                deadline: std::sync::Mutex::new(sent + duration),
                lost: tokio::sync::watch::channel(None).0,
            }),
        }
    }

    /// The leased job.
    pub fn job_id(&self) -> i64 {
        self.inner.job_id
    }

    /// Who holds the lease (a daemon's owner name).
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// How long the lease lasts from each claim or renewal.
    pub fn duration(&self) -> Duration {
        self.inner.duration
    }

    /// How long, on this process's clock, until another claimer could be given the job.
    pub fn remaining(&self) -> Duration {
        let deadline = *self.inner.deadline.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        deadline.saturating_duration_since(std::time::Instant::now())
    }

    /// The right to perform an external effect now: [`StoreError::LeaseLost`] when the lease was
    /// found lost, or less than a quarter of it is left (the renewals have been failing).
    pub fn check(&self) -> Result<(), StoreError> {
        if let Some(reason) = self.lost_reason() {
            return Err(StoreError::LeaseLost { job_id: self.job_id(), reason });
        }
        let remaining = self.remaining();
        if remaining < self.inner.duration / 4 {
            return Err(StoreError::LeaseLost {
                job_id: self.job_id(),
                reason: format!(
                    "not renewed in time: {} ms of the {} ms lease left, too little to start an effect",
                    remaining.as_millis(),
                    self.inner.duration.as_millis()
                ),
            });
        }
        Ok(())
    }

    /// Why the lease was lost, once it was.
    pub fn lost_reason(&self) -> Option<String> {
        self.inner.lost.borrow().clone()
    }

    /// Records that the lease is lost and why (the first reason stands); wakes [`Lease::lost`].
    pub fn mark_lost(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.inner.lost.send_if_modified(|lost| {
            if lost.is_some() {
                return false;
            }
            *lost = Some(reason);
            true
        });
    }

    /// Completes when the lease is lost, with the reason.
    pub async fn lost(&self) -> String {
        let mut watch = self.inner.lost.subscribe();
        loop {
            if let Some(reason) = watch.borrow_and_update().clone() {
                return reason;
            }
            if watch.changed().await.is_err() {
                // The sender lives in this lease: unreachable while `self` exists.
                std::future::pending::<()>().await;
            }
        }
    }

    fn renewed(&self, sent: std::time::Instant) {
        let mut deadline = self.inner.deadline.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *deadline = (*deadline).max(sent + self.inner.duration);
    }
}

impl Store {
    /// Starts a transaction to record a leased job's outcome. Its first statement re-asserts the
    /// lease (same owner and token, not expired on the database's clock, job not done) and, on
    /// PostgreSQL, locks the job's row until the transaction ends; [`StoreError::LeaseLost`]
    /// otherwise.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id(), owner = %lease.owner()))]
    pub async fn begin_leased(&self, lease: &Lease) -> Result<Tx<'_>, StoreError> {
        let (mut tx, writer) = self.begin_tx().await?;
        let sql = format!(
            "UPDATE jobs SET lease_expires_at = lease_expires_at \
             WHERE id = $1 AND lease_owner = $2 AND lease_token = $3 \
               AND lease_expires_at > {} AND done_at IS NULL",
            db_now(self.backend)
        );
        let done = sqlx::query(&sql)
            .bind(lease.job_id())
            .bind(lease.owner())
            .bind(lease.inner.token)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            drop(tx);
            return Err(self.lease_lost_error(lease).await);
        }
        Ok(Tx { tx, backend: self.backend, _writer: writer, chained: Vec::new(), _store: PhantomData })
    }

    /// Why `lease` no longer holds, as far as the job's row tells, or `None` when its own run
    /// ended it (the row still carries its token with no expiry: finished, retried, rescheduled
    /// or released by this holder). A lease lost for another reason — taken over by another
    /// owner (named), claimed again by the same owner name (a restarted daemon), expired — is
    /// marked lost.
    async fn lease_lost(&self, lease: &Lease) -> Option<String> {
        /// The job's lease owner, token and expiry, and its done time.
        type LeaseRow = (Option<String>, Option<i64>, Option<i64>, Option<i64>);
        let row: Result<Option<LeaseRow>, sqlx::Error> = sqlx::query_as(
            "SELECT lease_owner, lease_token, lease_expires_at, done_at FROM jobs WHERE id = $1",
        )
        .bind(lease.job_id())
        .fetch_optional(&self.pool)
        .await;
        let reason = match row {
            Ok(Some((Some(owner), Some(token), None, _)))
                if owner == lease.owner() && token == lease.inner.token =>
            {
                return None;
            }
            Ok(Some((Some(owner), _, _, _))) if owner != lease.owner() => {
                format!("taken over by daemon {owner} after it expired")
            }
            Ok(Some((Some(_), Some(token), _, _))) if token != lease.inner.token => {
                "claimed again by this owner name (a restarted daemon) after it expired".to_owned()
            }
            Ok(Some((_, _, _, Some(_)))) => "the job was finished by another holder".to_owned(),
            Ok(Some(_)) => "expired before it could be renewed".to_owned(),
            Ok(None) => "the job is gone".to_owned(),
            Err(err) => format!("expired or taken (its row could not be read: {err})"),
        };
        lease.mark_lost(reason.clone());
        Some(reason)
    }

    /// Why `lease` no longer holds, as the job's row tells (taken over by whom, expired,
    /// finished by another holder), marking it lost; what a batch says of a job whose end it
    /// could not record.
    pub async fn lease_lost_reason(&self, lease: &Lease) -> String {
        self.lease_lost(lease).await.unwrap_or_else(|| "its run already recorded its end".to_owned())
    }

    /// The error for a lease that no longer holds (see [`Store::lease_lost`]).
    async fn lease_lost_error(&self, lease: &Lease) -> StoreError {
        let reason =
            self.lease_lost(lease).await.unwrap_or_else(|| "its run already recorded its end".to_owned());
        StoreError::LeaseLost { job_id: lease.job_id(), reason }
    }

    /// Takes the DNS lock of account `user` for the leased job: only the holder reads and writes
    /// the account's domain states and DNS records, so a repoint in flight and a rollback of the
    /// same account never interleave (on one daemon or on several sharing a PostgreSQL
    /// database: the lock is one conditional UPDATE of the account's row). The lock lasts as
    /// long as the holding job's lease: re-taking a lock the job already holds succeeds, and a
    /// lock whose job no longer holds a live lease (its daemon died) is taken over. The lock is
    /// released when the job's run ends ([`Tx::finish_job`], [`Tx::retry_job`],
    /// [`Tx::reschedule_job`], [`Store::release_lease`]).
    ///
    /// Returns `Ok(None)` when taken, `Ok(Some(job))` with the holding job's id when another
    /// job holds it; [`StoreError::LeaseLost`] when the lease is gone.
    pub async fn lock_account_dns(
        &self,
        lease: &Lease,
        migration_id: &str,
        user: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin_leased(lease).await?;
        let sql = format!(
            "UPDATE accounts SET dns_lock_job = $3, dns_lock_expires_at = NULL \
             WHERE migration_id = $1 AND user_name = $2 \
               AND (dns_lock_job IS NULL OR dns_lock_job = $3 OR NOT EXISTS \
                    (SELECT 1 FROM jobs j WHERE j.id = accounts.dns_lock_job AND j.done_at IS NULL \
                       AND j.lease_expires_at > {}))",
            db_now(self.backend)
        );
        let taken =
            sqlx::query(&sql).bind(migration_id).bind(user).bind(lease.job_id()).execute(&mut *tx.tx).await?;
        if taken.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(None);
        }
        let holder: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT dns_lock_job FROM accounts WHERE migration_id = $1 AND user_name = $2",
        )
        .bind(migration_id)
        .bind(user)
        .fetch_optional(&mut *tx.tx)
        .await?;
        tx.rollback().await?;
        match holder {
            Some(job) => Ok(Some(job.unwrap_or(0))),
            None => Err(StoreError::NotFound { what: "account", key: format!("{migration_id}/{user}") }),
        }
    }

    /// Claims up to `limit` jobs that are due at `now` (the caller's clock: due times are
    /// scheduling, not exclusivity), not done, and not leased (or whose lease expired on the
    /// database's clock), for `owner` for `lease` from the database's now. Attempts are not
    /// changed. Jobs come back in due order. Concurrent claimers never get the same job while its
    /// lease holds.
    #[tracing::instrument(level = "debug", skip_all, fields(owner = %owner, limit))]
    pub async fn claim_jobs(
        &self,
        owner: &str,
        now: i64,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<(JobRow, Lease)>, StoreError> {
        self.claim(owner, now, lease, limit, None).await
    }

    /// [`Store::claim_jobs`] for the jobs of one kind in one migration only: the send jobs a
    /// worker sending notices takes along with its own, to send them over one session.
    #[tracing::instrument(level = "debug", skip_all, fields(owner = %owner, limit, kind))]
    pub async fn claim_jobs_of(
        &self,
        owner: &str,
        now: i64,
        lease: Duration,
        limit: i64,
        kind: &str,
        migration_id: &str,
    ) -> Result<Vec<(JobRow, Lease)>, StoreError> {
        self.claim(owner, now, lease, limit, Some((kind, migration_id))).await
    }

    async fn claim(
        &self,
        owner: &str,
        now: i64,
        lease: Duration,
        limit: i64,
        only: Option<(&str, &str)>,
    ) -> Result<Vec<(JobRow, Lease)>, StoreError> {
        // PostgreSQL: lock the candidates and skip rows another claimer holds, so claimers split
        // the work instead of queueing on each other. SQLite: the one statement runs under the
        // database's single write lock, which makes it atomic without row locks.
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let db_now = db_now(self.backend);
        let filter = if only.is_some() { " AND kind = $6 AND migration_id = $7" } else { "" };
        let sql = format!(
            "UPDATE jobs SET lease_owner = $1, lease_token = $2, lease_expires_at = {db_now} + $3 \
             WHERE id IN (SELECT id FROM jobs \
                 WHERE done_at IS NULL AND due_at <= $4 \
                   AND (lease_expires_at IS NULL OR lease_expires_at <= {db_now}){filter} \
                 ORDER BY due_at, id LIMIT $5{lock}) \
             RETURNING {JOB_COLUMNS}"
        );
        let token: i64 = rand::random();
        let sent = std::time::Instant::now();
        let mut query =
            sqlx::query_as(&sql).bind(owner).bind(token).bind(lease.as_millis() as i64).bind(now).bind(limit);
        if let Some((kind, migration_id)) = only {
            query = query.bind(kind).bind(migration_id);
        }
        let mut jobs: Vec<JobRow> = query.fetch_all(&self.pool).await?;
        jobs.sort_by_key(|job| (job.due_at, job.id));
        Ok(jobs
            .into_iter()
            .map(|job| {
                let lease = Lease::new(job.id, owner, token, lease, sent);
                (job, lease)
            })
            .collect())
    }

    /// Extends a lease that still holds to the database's now plus its duration: `Ok(true)`.
    /// `Ok(false)` when the lease's own run has ended it (nothing more to renew);
    /// [`StoreError::LeaseLost`] (and the lease marked lost) when it expired or was taken.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id(), owner = %lease.owner()))]
    pub async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let db_now = db_now(self.backend);
        let sql = format!(
            "UPDATE jobs SET lease_expires_at = {db_now} + $4 \
             WHERE id = $1 AND lease_owner = $2 AND lease_token = $3 \
               AND lease_expires_at > {db_now} AND done_at IS NULL"
        );
        let sent = std::time::Instant::now();
        let mut tx = self.begin().await?;
        let done = sqlx::query(&sql)
            .bind(lease.job_id())
            .bind(lease.owner())
            .bind(lease.inner.token)
            .bind(lease.duration().as_millis() as i64)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return match self.lease_lost(lease).await {
                None => Ok(false),
                Some(reason) => Err(StoreError::LeaseLost { job_id: lease.job_id(), reason }),
            };
        }
        lease.renewed(sent);
        Ok(true)
    }

    /// Gives a job back without recording an outcome, so it can be claimed again at once (a
    /// daemon stopping with the job's step cancelled), with the account DNS lock it may hold.
    /// Releasing a lease that was already lost changes nothing and is not an error.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id(), owner = %lease.owner()))]
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let released = sqlx::query(
            "UPDATE jobs SET lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND lease_token = $3 AND done_at IS NULL",
        )
        .bind(lease.job_id())
        .bind(lease.owner())
        .bind(lease.inner.token)
        .execute(&mut *tx.tx)
        .await?;
        if released.rows_affected() > 0 {
            release_dns_locks(&mut tx, lease.job_id()).await?;
        }
        tx.commit().await?;
        lease.mark_lost("released");
        Ok(())
    }

    /// Releases every lease held under `owner`, with the DNS locks of those jobs: what a daemon
    /// restarted under the same owner name does first, once its lock file proves no other
    /// process of that name runs, so its own work is taken back at once instead of after the
    /// leases expire. Returns how many jobs were released.
    pub async fn release_owner_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        const HELD: &str = "lease_owner = $1 AND done_at IS NULL AND lease_expires_at IS NOT NULL";
        sqlx::query(&format!(
            "UPDATE accounts SET dns_lock_job = NULL, dns_lock_expires_at = NULL \
             WHERE dns_lock_job IN (SELECT id FROM jobs WHERE {HELD})"
        ))
        .bind(owner)
        .execute(&mut *tx.tx)
        .await?;
        let released = sqlx::query(&format!("UPDATE jobs SET lease_expires_at = NULL WHERE {HELD}"))
            .bind(owner)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        Ok(released.rows_affected())
    }

    /// Counts a run whose lease was lost as a failed attempt of the job, with why: a step that
    /// keeps outliving its lease is held like any failing step instead of repeating forever.
    /// Written without the lease (it is gone); changes nothing on a finished job.
    pub async fn count_lost_lease(&self, job_id: i64, reason: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE jobs SET attempts = attempts + 1, last_error = $2 WHERE id = $1 AND done_at IS NULL",
        )
        .bind(job_id)
        .bind(format!("lease lost: {reason}"))
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Releases the account DNS locks job `job_id` holds (see [`Store::lock_account_dns`]).
async fn release_dns_locks(tx: &mut Tx<'_>, job_id: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE accounts SET dns_lock_job = NULL, dns_lock_expires_at = NULL WHERE dns_lock_job = $1",
    )
    .bind(job_id)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}

impl Tx<'_> {
    /// Runs an update of the leased job guarded by the lease (its owner and token; the
    /// transaction began by re-asserting it); `set` is the SET clause, which uses `$4` (bound to
    /// `value`) and, when `error` is given, `$5`.
    async fn update_leased_job(
        &mut self,
        lease: &Lease,
        set: &str,
        value: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        // The owner and token stay: the row tells whose run ended the lease (a renewal that
        // races this commit then knows the lease ended rather than was lost).
        let sql = format!(
            "UPDATE jobs SET {set}, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND lease_token = $3 AND done_at IS NULL"
        );
        let mut query =
            sqlx::query(&sql).bind(lease.job_id()).bind(lease.owner()).bind(lease.inner.token).bind(value);
        if let Some(error) = error {
            query = query.bind(error);
        }
        let result = query.execute(&mut *self.tx).await?;
        expect_one(result, || StoreError::LeaseLost {
            job_id: lease.job_id(),
            reason: "its row changed under the transaction".to_owned(),
        })?;
        // Whatever this run ends as (done, retried, rescheduled), it no longer works on its
        // account's DNS: release the lock it may hold (see `Store::lock_account_dns`).
        release_dns_locks(self, lease.job_id()).await
    }

    /// Marks the leased job done at `now` and clears the lease; [`StoreError::LeaseLost`] if the
    /// lease no longer holds.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id()))]
    pub async fn finish_job(&mut self, lease: &Lease, now: i64) -> Result<(), StoreError> {
        self.update_leased_job(lease, "done_at = $4", now, None).await
    }

    /// Marks done at `now`, in one statement, those of the leased jobs (all of one owner: this
    /// daemon's) whose lease still holds (same owner and token, not expired on the database's clock, not done), and
    /// releases the DNS locks they may hold; returns the ids of the jobs finished. A job left
    /// out lost its lease: whoever holds it now records its end. What a worker sending a batch
    /// of notices records with their sent-marks (see [`Store::claim_jobs_of`]).
    #[tracing::instrument(level = "debug", skip_all, fields(jobs = leases.len()))]
    pub async fn finish_jobs(&mut self, leases: &[&Lease], now: i64) -> Result<Vec<i64>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        // One statement: each job's own token, by its id.
        let n = leases.len();
        let tokens: String = (0..n).map(|k| format!(" WHEN ${} THEN ${}", 3 + k, 3 + n + k)).collect();
        let sql = format!(
            "UPDATE jobs SET done_at = $1, lease_expires_at = NULL \
             WHERE id IN ({}) AND lease_owner = $2 AND lease_token = CASE id{tokens} END \
               AND lease_expires_at > {} AND done_at IS NULL RETURNING id",
            numbered(3, n),
            db_now(self.backend)
        );
        let owner = leases[0].owner();
        if let Some(other) = leases.iter().find(|l| l.owner() != owner) {
            return Err(StoreError::LeaseLost {
                job_id: other.job_id(),
                reason: format!("finished with jobs of another owner ({owner})"),
            });
        }
        let mut query = sqlx::query_scalar(&sql).bind(now).bind(owner);
        for lease in leases {
            query = query.bind(lease.job_id());
        }
        for lease in leases {
            query = query.bind(lease.inner.token);
        }
        let finished: Vec<i64> = query.fetch_all(&mut *self.tx).await?;
        if !finished.is_empty() {
            let sql = format!(
                "UPDATE accounts SET dns_lock_job = NULL, dns_lock_expires_at = NULL \
                 WHERE dns_lock_job IN ({})",
                numbered(1, finished.len())
            );
            let mut query = sqlx::query(&sql);
            for id in &finished {
                query = query.bind(*id);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(finished)
    }

    /// Records a failed attempt of the leased job: attempts + 1, the error, due again at
    /// `due_at`, lease cleared; [`StoreError::LeaseLost`] if the lease no longer holds.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id()))]
    pub async fn retry_job(&mut self, lease: &Lease, due_at: i64, error: &str) -> Result<(), StoreError> {
        self.update_leased_job(
            lease,
            "attempts = attempts + 1, last_error = $5, due_at = $4",
            due_at,
            Some(error),
        )
        .await
    }

    /// Makes the leased job due again at `due_at` without counting an attempt (a poll that found
    /// nothing to do yet), lease cleared; [`StoreError::LeaseLost`] if the lease no longer holds.
    #[tracing::instrument(level = "debug", skip_all, fields(job_id = lease.job_id()))]
    pub async fn reschedule_job(&mut self, lease: &Lease, due_at: i64) -> Result<(), StoreError> {
        self.update_leased_job(lease, "due_at = $4", due_at, None).await
    }
}
