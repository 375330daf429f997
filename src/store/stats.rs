//! What the store counts for the metrics (`GET /metrics`): accounts, domains and notices by
//! state, and the job queue, each one `GROUP BY` read at scrape time.
//!
//! The reads stay cheap at 10,000 accounts and 50,000 domains: accounts and domains are counted
//! from the `accounts_by_state` and `domains_by_state` indexes, which lead with
//! `(migration_id, state)` and so answer the grouping on their own (SQLite scans the index
//! alone, PostgreSQL may too); the due jobs are a range of `jobs_due` `(done_at, due_at, id)`.
//! The outbox's count reads the index `outbox_by_kind` (migration 0017), not the rows and their
//! texts.

use crate::metrics::StoreGauges;
use crate::store::{Store, StoreError};

/// How many of one migration's accounts, domains and notices are in each state: what its
/// progress is drawn from, without reading its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationCounts {
    /// Accounts per state name.
    pub accounts: std::collections::BTreeMap<String, usize>,
    /// Domains per state name.
    pub domains: std::collections::BTreeMap<String, usize>,
    /// Notices not skipped.
    pub notices: usize,
    /// Notices sent.
    pub notices_sent: usize,
    /// Notices skipped as too late.
    pub notices_skipped: usize,
}

impl Store {
    /// One migration's counts by state ([`MigrationCounts`]), from the state indexes.
    pub async fn counts_of(&self, migration_id: &str) -> Result<MigrationCounts, StoreError> {
        let accounts: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM accounts WHERE migration_id = $1 GROUP BY state")
                .bind(migration_id)
                .fetch_all(&self.pool)
                .await?;
        let domains: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM domains WHERE migration_id = $1 GROUP BY state")
                .bind(migration_id)
                .fetch_all(&self.pool)
                .await?;
        let (all, sent, skipped): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), SUM(CASE WHEN sent_at IS NOT NULL THEN 1 ELSE 0 END),                     SUM(CASE WHEN skipped_at IS NOT NULL THEN 1 ELSE 0 END)              FROM outbox WHERE migration_id = $1",
        )
        .bind(migration_id)
        .fetch_one(&self.pool)
        .await?;
        let n = |count: i64| usize::try_from(count).unwrap_or(0);
        let skipped = n(skipped.unwrap_or(0));
        Ok(MigrationCounts {
            accounts: accounts.into_iter().map(|(state, count)| (state, n(count))).collect(),
            domains: domains.into_iter().map(|(state, count)| (state, n(count))).collect(),
            notices: n(all).saturating_sub(skipped),
            notices_sent: n(sent.unwrap_or(0)),
            notices_skipped: skipped,
        })
    }

    /// The counts behind the metrics' store gauges, read now (`now_ms`: unix milliseconds, for
    /// the age of the oldest due job). The four reads are not one snapshot: a job that finishes
    /// between two of them shows in one count and not the other, which a gauge can live with.
    pub async fn gauges(&self, now_ms: i64) -> Result<StoreGauges, StoreError> {
        let accounts: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT migration_id, state, COUNT(*) FROM accounts GROUP BY migration_id, state \
             ORDER BY migration_id, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let domains: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT migration_id, state, COUNT(*) FROM domains GROUP BY migration_id, state \
             ORDER BY migration_id, state",
        )
        .fetch_all(&self.pool)
        .await?;
        // The result as `siirto notices list` names it, in the same order of precedence (a
        // bounced notice was sent first; a skipped or failed one never went out).
        let notices: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT migration_id, kind, \
                    CASE WHEN skipped_at IS NOT NULL THEN 'skipped_late' \
                         WHEN failed_at IS NOT NULL THEN 'failed' \
                         WHEN bounced_at IS NOT NULL THEN 'bounced' \
                         WHEN sent_at IS NOT NULL THEN 'sent' \
                         ELSE 'queued' END, \
                    COUNT(*) \
             FROM outbox GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .fetch_all(&self.pool)
        .await?;
        let jobs: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT migration_id, kind, COUNT(*), MIN(due_at) FROM jobs \
             WHERE done_at IS NULL AND due_at <= $1 GROUP BY migration_id, kind \
             ORDER BY migration_id, kind",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;

        let n = |count: i64| count.max(0) as u64;
        let oldest_due = jobs.iter().map(|(_, _, _, due_at)| *due_at).min();
        Ok(StoreGauges {
            accounts: accounts.into_iter().map(|(m, state, c)| ((m, state), n(c))).collect(),
            domains: domains.into_iter().map(|(m, state, c)| ((m, state), n(c))).collect(),
            notices: notices.into_iter().map(|(m, kind, result, c)| ((m, kind, result), n(c))).collect(),
            oldest_due_job_age_seconds: oldest_due
                .map_or(0.0, |due_at| (now_ms - due_at).max(0) as f64 / 1000.0),
            jobs_due: jobs.into_iter().map(|(m, kind, c, _)| ((m, kind), n(c))).collect(),
        })
    }
}
