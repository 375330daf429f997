//! The daemon's reconcile loop: lease due jobs, perform their effects through the adapters,
//! record the outcome and the new states in one transaction.
//!
//! Work is a row in the `jobs` table (kind, subject, due time). A worker claims due rows under a
//! lease, dispatches on the job's kind to its step (`steps/`, one file per family), and the step
//! asks the pure core (`domain`) what the event does to the state, performs the effect, and
//! commits the new state, the event log entry, the follow-up jobs and the job's own completion
//! in one transaction guarded by the lease. Every effect checks before it acts (a TTL already
//! lowered is not lowered again, a record already pointing at the target is not patched, a sent
//! notice is not sent again), because a crash between "did it" and "recorded it" re-runs the
//! job. A failing job is retried with exponential backoff and jitter; past the playbook's budget
//! its account is held for an operator and the rest of the migration goes on.

mod context;
pub mod jobs;
mod steps;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rand::Rng;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

pub use self::context::{Clock, SystemClock};
use self::context::{Ctx, StepError, StepResult};
pub use self::jobs::{JobKind, RollbackPayload};
use self::steps::{external, lower, mail, notices, repoint, restore, rollback, settle, transfer, verify};
use crate::config::Config;
use crate::domain::{MigrationState, Timestamp, from_millis, to_millis};
use crate::store::{JobRow, Lease, Store};
use crate::world::World;

/// Everything an engine is made of; the daemon builds it from the config, tests and the demo
/// build it from what they started.
pub struct EngineParts {
    /// The store.
    pub store: Store,
    /// The hosts, the DNS provider and checker, the notice channel, the public resolvers.
    pub world: World,
    /// The From address of notices.
    pub mail_from: String,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// This daemon's name in leases and the event log.
    pub owner: String,
    /// How long a claimed job stays ours.
    pub lease: Duration,
    /// How long the loop sleeps at most when there is no due work.
    pub idle_poll: Duration,
    /// Concurrent zone writes to the DNS provider (1 for a sqlite-backed PowerDNS).
    pub dns_write_concurrency: usize,
    /// Jobs run at once by this daemon.
    pub workers: usize,
}

/// The orchestrator: one per daemon process; cheap to share behind an `Arc`.
pub struct Engine {
    cx: Ctx,
    lease: Duration,
    idle_poll: Duration,
    workers: usize,
}

impl Engine {
    /// Builds an engine from its parts.
    pub fn new(parts: EngineParts) -> Engine {
        Engine {
            cx: Ctx::new(
                parts.store,
                parts.world,
                parts.mail_from,
                parts.clock,
                parts.owner,
                parts.dns_write_concurrency,
            ),
            lease: parts.lease,
            idle_poll: parts.idle_poll,
            workers: parts.workers.max(1),
        }
    }

    /// Builds an engine from a validated config: WHM clients, the DNS provider and checker,
    /// the notice channel, the public resolvers.
    pub fn from_config(config: &Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<Engine> {
        Ok(Engine::new(EngineParts {
            store,
            world: World::from_config(config)?,
            mail_from: config.mail.from.clone(),
            clock,
            owner: config.daemon.owner.clone().unwrap_or_else(default_owner),
            lease: config.daemon.lease,
            idle_poll: config.daemon.idle_poll,
            dns_write_concurrency: config.dns.write_concurrency as usize,
            workers: 8,
        }))
    }

    /// Renames this daemon (its name in leases and the event log).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Engine {
        self.cx.owner = owner.into();
        self
    }

    /// Sets how many jobs this daemon runs at once.
    pub fn with_workers(mut self, workers: usize) -> Engine {
        self.workers = workers.max(1);
        self
    }

    /// The store this engine works on.
    pub fn store(&self) -> &Store {
        &self.cx.store
    }

    /// This daemon's name in leases and the event log.
    pub fn owner(&self) -> &str {
        &self.cx.owner
    }

    /// One round: claims up to `workers` due jobs, runs them concurrently and waits for them.
    /// Returns how many ran. Tests drive the engine with this.
    pub async fn tick(self: &Arc<Self>) -> anyhow::Result<usize> {
        let now = to_millis(self.cx.clock.now());
        let claimed = self
            .cx
            .store
            .claim_jobs(&self.cx.owner, now, self.lease.as_millis() as i64, self.workers as i64)
            .await
            .context("claiming due jobs")?;
        let count = claimed.len();
        let mut running = JoinSet::new();
        for (job, lease) in claimed {
            let engine = Arc::clone(self);
            running.spawn(async move { engine.run_job(job, lease).await });
        }
        while let Some(joined) = running.join_next().await {
            if let Err(err) = joined {
                warn!(error = %err, "a job task panicked");
            }
        }
        Ok(count)
    }

    /// The daemon's loop: keeps `workers` jobs running, sleeps until the next due job (at most
    /// `idle_poll`, so work scheduled by another process is seen), and stops claiming when
    /// `shutdown` completes, letting the jobs in flight finish.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut running: JoinSet<()> = JoinSet::new();
        info!(owner = %self.cx.owner, workers = self.workers, "engine running");
        loop {
            while let Some(joined) = running.try_join_next() {
                if let Err(err) = joined {
                    warn!(error = %err, "a job task panicked");
                }
            }
            let free = self.workers.saturating_sub(running.len());
            if free > 0 {
                let now = to_millis(self.cx.clock.now());
                match self
                    .cx
                    .store
                    .claim_jobs(&self.cx.owner, now, self.lease.as_millis() as i64, free as i64)
                    .await
                {
                    Ok(claimed) => {
                        let any = !claimed.is_empty();
                        for (job, lease) in claimed {
                            let engine = Arc::clone(&self);
                            running.spawn(async move { engine.run_job(job, lease).await });
                        }
                        if any {
                            continue;
                        }
                    }
                    Err(err) => warn!(error = %err, "claiming due jobs failed; trying again"),
                }
            }
            let wait = self.time_to_next_job().await;
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        info!(in_flight = running.len(), "engine stopping; letting jobs in flight finish");
        while running.join_next().await.is_some() {}
        Ok(())
    }

    async fn time_to_next_job(&self) -> Duration {
        let now = to_millis(self.cx.clock.now());
        match self.cx.store.next_due_at().await {
            Ok(Some(due)) if due > now => Duration::from_millis((due - now) as u64).min(self.idle_poll),
            Ok(Some(_)) => Duration::from_millis(50).min(self.idle_poll),
            Ok(None) | Err(_) => self.idle_poll,
        }
    }

    async fn run_job(&self, job: JobRow, lease: Lease) {
        let span = info_span!("job", id = job.id, kind = %job.kind, migration = %job.migration_id, subject = %job.subject);
        async {
            debug!("running");
            let outcome = self.perform(&job, &lease).await;
            if let Err(err) = outcome {
                self.record_failure(&job, &lease, err).await;
            }
        }
        .instrument(span)
        .await;
    }

    async fn perform(&self, job: &JobRow, lease: &Lease) -> StepResult {
        let kind = JobKind::parse(&job.kind).ok_or_else(|| anyhow!("unknown job kind {:?}", job.kind))?;
        let ctx = self.cx.migration_ctx(&job.migration_id).await?;
        match &ctx.state {
            MigrationState::Aborted { .. } => {
                // An aborted migration does nothing more; the job is closed.
                let now = self.cx.now_ms();
                let mut tx = self.cx.store.begin_leased(lease, now).await?;
                tx.finish_job(lease, now).await?;
                tx.commit().await?;
                return Ok(());
            }
            MigrationState::Paused { .. }
            | MigrationState::Planned { .. }
            | MigrationState::Approved { .. } => {
                let now = self.cx.now_ms();
                let mut tx = self.cx.store.begin_leased(lease, now).await?;
                tx.reschedule_job(lease, now + self.idle_poll.as_millis() as i64 * 2).await?;
                tx.commit().await?;
                return Ok(());
            }
            MigrationState::Started { .. }
            | MigrationState::TtlLowered { .. }
            | MigrationState::Transferring { .. }
            | MigrationState::CutOver { .. } => {}
        }
        match kind {
            JobKind::LowerTtl => lower::lower_ttl(&self.cx, &ctx, lease).await,
            JobKind::OpenGate => lower::open_gate(&self.cx, &ctx, lease).await,
            JobKind::Transfer => transfer::transfer(&self.cx, &ctx, lease).await,
            JobKind::StartSession => transfer::start_session(&self.cx, &ctx, job, lease).await,
            JobKind::PollSession => transfer::poll_session(&self.cx, &ctx, job, lease).await,
            JobKind::Verify => verify::verify(&self.cx, &ctx, job, lease).await,
            JobKind::Repoint => repoint::repoint(&self.cx, &ctx, job, lease).await,
            JobKind::QueueNotice => notices::queue_notice(&self.cx, &ctx, job, lease).await,
            JobKind::SendNotice => notices::send_notice(&self.cx, &ctx, job, lease).await,
            JobKind::Settle => settle::settle(&self.cx, &ctx, lease).await,
            JobKind::RestoreTtl => restore::restore_ttl(&self.cx, &ctx, job, lease).await,
            JobKind::Rollback => rollback::rollback(&self.cx, &ctx, job, lease).await,
            JobKind::PollExternal => external::poll_external(&self.cx, &ctx, job, lease).await,
            JobKind::SyncMail => mail::sync_mail(&self.cx, &ctx, job, lease).await,
            JobKind::CheckMail => mail::check_mail(&self.cx, &ctx, job, lease).await,
            JobKind::ExternalMail => external::external_mail(&self.cx, &ctx, job, lease).await,
        }
    }

    async fn record_failure(&self, job: &JobRow, lease: &Lease, err: StepError) {
        let (error, transient) = match err {
            StepError::LeaseLost => {
                warn!("the lease was lost to another daemon; its outcome is theirs to record");
                return;
            }
            StepError::Transient(err) => (err, true),
            StepError::Permanent(err) => (err, false),
        };
        let message = format!("{error:#}");
        let attempts = job.attempts as u32 + 1;
        let kind = JobKind::parse(&job.kind);
        let policy = self.cx.migration_ctx(&job.migration_id).await.ok();
        let (max_attempts, base, max_delay) = policy
            .as_ref()
            .map(|ctx| {
                (ctx.playbook.retry.max_attempts, ctx.playbook.retry.base_delay, ctx.playbook.retry.max_delay)
            })
            .unwrap_or((5, Duration::from_secs(5), Duration::from_secs(300)));
        let now = self.cx.now_ms();
        let per_account = kind.is_some_and(JobKind::is_per_account);
        let give_up = per_account && (!transient || attempts >= max_attempts);
        let result: Result<(), StepError> = async {
            let mut tx = self.cx.store.begin_leased(lease, now).await?;
            if give_up && let Some(ctx) = &policy {
                let user = match kind {
                    Some(JobKind::SendNotice) => {
                        let id: i64 = job.subject.parse().unwrap_or_default();
                        tx.notice_failed(id, &message).await?;
                        tx.notice(id).await?.and_then(|n| n.account)
                    }
                    _ => Some(job.subject.clone()),
                };
                if let Some(user) = user {
                    let reason = format!("{} failed after {attempts} attempt(s): {message}", job.kind);
                    self.cx.hold_account(&mut tx, ctx, &user, reason).await?;
                }
                tx.finish_job(lease, now).await?;
            } else {
                let delay = backoff(base, max_delay, attempts);
                tx.retry_job(lease, now + delay.as_millis() as i64, &message).await?;
                if let Some(ctx) = &policy {
                    let account = per_account.then(|| job.subject.clone()).filter(|_| kind != Some(JobKind::SendNotice));
                    tx.append_event(&self.cx.event(
                        ctx,
                        account.as_deref(),
                        None,
                        "step_failed",
                        serde_json::json!({ "job": job.kind, "attempt": attempts, "transient": transient, "error": message, "retry_in_ms": delay.as_millis() as u64 }),
                    ))
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        if give_up {
            warn!(error = %message, attempts, "step failed; account held for an operator");
        } else {
            warn!(error = %message, attempts, transient, "step failed; will retry");
        }
        if let Err(err) = result {
            warn!(error = ?err, "could not record the failure; the lease will expire and the job run again");
        }
    }
}

/// This daemon's default name in leases: host name and process id.
pub fn default_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "siirto".into());
    format!("{host}-{}", std::process::id())
}

/// Exponential backoff with jitter: `base * 2^(attempt-1)`, capped, then a random point in
/// its upper half, so retries of many accounts do not arrive in lockstep.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max).max(Duration::from_millis(1));
    let half = capped / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// A timestamp from stored milliseconds (re-exported for the CLI's output).
pub fn timestamp(ms: i64) -> Timestamp {
    from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        for attempt in 1..10 {
            let d = backoff(base, max, attempt);
            let full = base.saturating_mul(1 << (attempt - 1)).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} not in [{:?}, {full:?}]", full / 2);
        }
    }
}
