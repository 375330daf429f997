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
mod failure;
pub mod jobs;
mod steps;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

pub use self::context::{Clock, SystemClock};
use self::context::{Ctx, MigrationCtx, StepError, StepResult};
use self::failure::error_labels;
pub use self::jobs::{JobKind, RollbackPayload};
pub use self::steps::staff::BRIEF_BEFORE;
use self::steps::{
    announce, bounces, decommission, external, lower, mail, notices, repoint, restore, rollback, settle,
    staff, transfer, verify,
};
use crate::config::Config;
use crate::domain::{MigrationState, Timestamp, from_millis, to_millis};
use crate::metrics;
use crate::store::{JobRow, Lease, Store, StoreError};
use crate::world::World;

/// Send jobs one worker runs at once, over one session ([`Engine::send_notices`]): enough to
/// share each transaction among many notices (measured: 32 gave 0.74× the plain client in
/// `examples/notice_scale.rs`, 64 0.79×, 128 0.83×), few enough that a batch ends within a
/// second against a working server (a stopping daemon lets it finish; a paced one stops at a
/// pause).
const SEND_BATCH: i64 = 128;

/// How often a running daemon reads the bounce mailbox (config `mail.bounce_maildir`).
const BOUNCE_POLL: Duration = Duration::from_secs(2);

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
    /// How long a stopping daemon lets its steps in flight finish before it cancels them.
    pub stop_timeout: Duration,
}

/// The orchestrator: one per daemon process; cheap to share behind an `Arc`.
pub struct Engine {
    cx: Ctx,
    lease: Duration,
    idle_poll: Duration,
    workers: usize,
    stop_timeout: Duration,
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
            stop_timeout: parts.stop_timeout,
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
            stop_timeout: config.daemon.stop_timeout,
        }))
    }

    /// The notices of `kind` (`advance`, `start`) of migration `id` exactly as they would be
    /// written now, for the customers matching `customer` (a cPanel user, an address or a
    /// customer key), in `language` when given: `(recipients, subject, body)`. Writes nothing.
    pub async fn preview_notices(
        &self,
        id: &str,
        kind: &str,
        customer: Option<&str>,
        language: Option<&str>,
    ) -> anyhow::Result<Vec<(Vec<String>, String, String)>> {
        let ctx = self.cx.migration_ctx(id).await.map_err(|err| anyhow::anyhow!("{err:?}"))?;
        let notices = announce::preview(&self.cx, &ctx, kind, customer, language).await?;
        notices.into_iter().map(|n| Ok((serde_json::from_str(&n.recipients)?, n.subject, n.body))).collect()
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
            .claim_jobs(&self.cx.owner, now, self.lease, self.workers as i64)
            .await
            .context("claiming due jobs")?;
        let count = claimed.len();
        let (_stop, stopping) = watch::channel(false);
        let mut running = JoinSet::new();
        for (job, lease) in claimed {
            let engine = Arc::clone(self);
            let stopping = stopping.clone();
            running.spawn(async move { engine.run_job(job, lease, stopping).await });
        }
        while let Some(joined) = running.join_next().await {
            if let Err(err) = joined {
                warn!(error = %err, "a job task panicked");
            }
        }
        Ok(count)
    }

    /// The daemon's loop: keeps `workers` jobs running, sleeps until the next due job (at most
    /// `idle_poll`, so work scheduled by another process is seen). When `shutdown` completes it
    /// claims nothing more and lets the steps in flight finish for up to `stop_timeout`; the
    /// ones still running then are cancelled and their jobs released (no outcome recorded, no
    /// attempt counted), so another daemon, or this one restarted, takes them at once.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let (stop, stopping) = watch::channel(false);
        let mut running: JoinSet<()> = JoinSet::new();
        info!(owner = %self.cx.owner, workers = self.workers, "engine running");
        let mut bounces_due = tokio::time::Instant::now();
        loop {
            // The bounce mailbox, read every BOUNCE_POLL while the daemon runs.
            if self.cx.world.bounces.is_some() && tokio::time::Instant::now() >= bounces_due {
                if let Err(err) = bounces::read_bounces(&self.cx).await {
                    warn!(error = %format!("{err:#}"), "reading the bounce mailbox failed; trying again");
                }
                bounces_due = tokio::time::Instant::now() + BOUNCE_POLL;
            }
            while let Some(joined) = running.try_join_next() {
                if let Err(err) = joined {
                    warn!(error = %err, "a job task panicked");
                }
            }
            let free = self.workers.saturating_sub(running.len());
            if free > 0 {
                let now = to_millis(self.cx.clock.now());
                match self.cx.store.claim_jobs(&self.cx.owner, now, self.lease, free as i64).await {
                    Ok(claimed) => {
                        let any = !claimed.is_empty();
                        for (job, lease) in claimed {
                            let engine = Arc::clone(&self);
                            let stopping = stopping.clone();
                            running.spawn(async move { engine.run_job(job, lease, stopping).await });
                        }
                        if any {
                            continue;
                        }
                    }
                    Err(err) => warn!(error = %err, "claiming due jobs failed; trying again"),
                }
            }
            let mut wait = self.time_to_next_job().await;
            if self.cx.world.bounces.is_some() {
                wait = wait.min(BOUNCE_POLL);
            }
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        if !running.is_empty() {
            info!(
                in_flight = running.len(),
                bound = %humantime::format_duration(self.stop_timeout),
                "stopping: nothing more is claimed; the steps in flight may finish"
            );
        }
        let bound = tokio::time::sleep(self.stop_timeout);
        tokio::pin!(bound);
        loop {
            tokio::select! {
                joined = running.join_next() => match joined {
                    None => break,
                    Some(Err(err)) => warn!(error = %err, "a job task panicked"),
                    Some(Ok(())) => {}
                },
                () = &mut bound => {
                    warn!(left = running.len(), "steps still running at the stop bound are cancelled; their jobs are released");
                    let _ = stop.send(true);
                    while running.join_next().await.is_some() {}
                    break;
                }
            }
        }
        info!(owner = %self.cx.owner, "engine stopped");
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

    /// Runs one claimed job: its step races the loss of its lease (renewed meanwhile by
    /// [`keep_lease`]) and the daemon's stop bound. A lost lease cancels the step and counts as
    /// a failed attempt; the stop bound cancels it and gives the job back.
    async fn run_job(&self, job: JobRow, lease: Lease, mut stopping: watch::Receiver<bool>) {
        let span = info_span!("job", id = job.id, kind = %job.kind, migration = %job.migration_id, subject = %job.subject);
        async {
            debug!("running");
            let keeper = tokio::spawn(keep_lease(self.cx.store.clone(), lease.clone()));
            let kind = JobKind::parse(&job.kind);
            let cancel_on_loss = !kind.is_some_and(JobKind::checks_its_leases);
            let started = std::time::Instant::now();
            let outcome = tokio::select! {
                outcome = self.perform(&job, &lease) => Some(outcome),
                reason = lease.lost(), if cancel_on_loss => Some(Err(StepError::LeaseLost(reason))),
                // A dropped sender (the loop is gone) is no stop: that branch is then disabled.
                Ok(_) = stopping.wait_for(|stop| *stop) => None,
            };
            keeper.abort();
            let outcome_label = match &outcome {
                Some(Ok(())) => "ok",
                Some(Err(StepError::Transient(_))) => "transient_error",
                Some(Err(StepError::Permanent(_))) => "permanent_error",
                Some(Err(StepError::LeaseLost(_))) => "lease_lost",
                None => "cancelled",
            };
            let kind_label = kind.map_or("unknown", JobKind::as_str);
            metrics::step_finished(kind_label, outcome_label, started.elapsed().as_secs_f64());
            match outcome {
                Some(outcome) => self.record_outcome(&job, &lease, outcome).await,
                None => {
                    info!("cancelled at the stop bound; the job is given back");
                    if let Err(err) = self.cx.store.release_lease(&lease).await {
                        warn!(error = %err, "could not release the lease; it expires on its own");
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Records how a run of a claimed job ended, when its step did not record it itself: a
    /// lost lease counts as a failed attempt, a failure is retried or holds the account.
    async fn record_outcome(&self, job: &JobRow, lease: &Lease, outcome: StepResult) {
        match outcome {
            Ok(()) => {}
            Err(StepError::LeaseLost(reason)) => {
                metrics::error("store", "lease_lost");
                warn!(%reason, "the job's lease is lost: its step is cancelled, and the run counts as a failed attempt");
                if let Err(err) = self.cx.store.count_lost_lease(job.id, &reason).await {
                    warn!(error = %err, "could not count the attempt");
                }
            }
            Err(err) => {
                if let StepError::Transient(error) | StepError::Permanent(error) = &err {
                    let (adapter, class) = error_labels(error);
                    let adapter = adapter.unwrap_or_else(|| self.adapter_of(JobKind::parse(&job.kind)));
                    metrics::error(adapter, class);
                }
                self.record_failure(job, lease, err).await
            }
        }
    }

    /// The adapter a job of `kind` talks to, for the metrics of an error that does not say.
    fn adapter_of(&self, kind: Option<JobKind>) -> &'static str {
        let Some(kind) = kind else { return "other" };
        match kind {
            JobKind::LowerTtl
            | JobKind::OpenGate
            | JobKind::Repoint
            | JobKind::RestoreTtl
            | JobKind::Rollback
            | JobKind::PollExternal => "dns",
            JobKind::Transfer
            | JobKind::StartSession
            | JobKind::PollSession
            | JobKind::Verify
            | JobKind::Decommission => "whm",
            JobKind::SendNotice
            | JobKind::QueueNotice
            | JobKind::Announce
            | JobKind::BriefStaff
            | JobKind::CorrectNotices => match self.cx.world.channel.name() {
                "smtp" => "smtp",
                "webhook" => "webhook",
                _ => "other",
            },
            JobKind::SyncMail | JobKind::CheckMail | JobKind::ExternalMail => "ssh",
            JobKind::Settle => "store",
        }
    }

    /// Runs send job `job` together with up to [`SEND_BATCH`]` - 1` more due send jobs of the
    /// same migration, claimed here under leases of their own (kept alive while they run):
    /// they go out over one session, their attempts recorded in one transaction and their
    /// sent-marks committed together as the server accepts them ([`notices::send_notices`]).
    /// The other jobs' outcomes are recorded here; `job`'s is returned.
    async fn send_notices(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let now = self.cx.now_ms();
        let kind = JobKind::SendNotice.as_str();
        let more = self
            .cx
            .store
            .claim_jobs_of(&self.cx.owner, now, lease.duration(), SEND_BATCH - 1, kind, &job.migration_id)
            .await
            .unwrap_or_else(|err| {
                warn!(error = %err, "claiming more send jobs failed; sending this one alone");
                Vec::new()
            });
        let mut taken = Taken::new(self.cx.store.clone(), &more);
        let budget = ctx.playbook.retry.max_attempts;
        let (spent, more): (Vec<_>, Vec<_>) =
            more.into_iter().partition(|(job, _)| job.attempts as u32 >= budget);
        let mut batch = Vec::with_capacity(more.len() + 1);
        batch.push((job.clone(), lease.clone()));
        batch.extend(more.iter().cloned());
        let mut outcomes = notices::send_notices(&self.cx, ctx, &batch).await.into_iter();
        let own = outcomes.next().unwrap_or(Ok(()));
        for ((job, lease), outcome) in more.iter().zip(outcomes) {
            self.record_outcome(job, lease, outcome).await;
            taken.recorded(lease);
        }
        for (job, lease) in &spent {
            let outcome = Err(StepError::Permanent(anyhow!(
                "{} attempts, the last: {}",
                job.attempts,
                job.last_error.as_deref().unwrap_or("no error recorded")
            )));
            self.record_outcome(job, lease, outcome).await;
            taken.recorded(lease);
        }
        own
    }

    async fn perform(&self, job: &JobRow, lease: &Lease) -> StepResult {
        let kind = JobKind::parse(&job.kind).ok_or_else(|| anyhow!("unknown job kind {:?}", job.kind))?;
        let ctx = self.cx.migration_ctx(&job.migration_id).await?;
        // Runs that lost their lease count as attempts without a chance to hold the account
        // (the lease was gone): a per-account step past its budget is given up here.
        let budget = ctx.playbook.retry.max_attempts;
        if kind.is_per_account() && job.attempts as u32 >= budget {
            return Err(StepError::Permanent(anyhow!(
                "{} attempts, the last: {}",
                job.attempts,
                job.last_error.as_deref().unwrap_or("no error recorded")
            )));
        }
        match &ctx.state {
            MigrationState::Aborted { .. } => {
                // An aborted migration does nothing more; the job is closed.
                let now = self.cx.now_ms();
                let mut tx = self.cx.store.begin_leased(lease).await?;
                tx.finish_job(lease, now).await?;
                tx.commit().await?;
                return Ok(());
            }
            MigrationState::Paused { .. }
            | MigrationState::Planned { .. }
            | MigrationState::Approved { .. } => {
                let now = self.cx.now_ms();
                let mut tx = self.cx.store.begin_leased(lease).await?;
                tx.reschedule_job(lease, now + self.idle_poll.as_millis() as i64 * 2).await?;
                tx.commit().await?;
                return Ok(());
            }
            MigrationState::Started { .. }
            | MigrationState::TtlLowered { .. }
            | MigrationState::Transferring { .. }
            | MigrationState::CutOver { .. }
            | MigrationState::Settled { .. } => {}
        }
        match kind {
            JobKind::LowerTtl => lower::lower_ttl(&self.cx, &ctx, lease).await,
            JobKind::OpenGate => lower::open_gate(&self.cx, &ctx, lease).await,
            JobKind::Transfer => transfer::transfer(&self.cx, &ctx, lease).await,
            JobKind::StartSession => transfer::start_session(&self.cx, &ctx, job, lease).await,
            JobKind::PollSession => transfer::poll_session(&self.cx, &ctx, job, lease).await,
            JobKind::Verify => verify::verify(&self.cx, &ctx, job, lease).await,
            JobKind::Repoint => repoint::repoint(&self.cx, &ctx, job, lease).await,
            JobKind::QueueNotice => announce::queue_completion(&self.cx, &ctx, job, lease).await,
            JobKind::SendNotice => self.send_notices(&ctx, job, lease).await,
            JobKind::Settle => settle::settle(&self.cx, &ctx, lease).await,
            JobKind::RestoreTtl => restore::restore_ttl(&self.cx, &ctx, job, lease).await,
            JobKind::Rollback => rollback::rollback(&self.cx, &ctx, job, lease).await,
            JobKind::PollExternal => external::poll_external(&self.cx, &ctx, job, lease).await,
            JobKind::SyncMail => mail::sync_mail(&self.cx, &ctx, job, lease).await,
            JobKind::CheckMail => mail::check_mail(&self.cx, &ctx, job, lease).await,
            JobKind::ExternalMail => external::external_mail(&self.cx, &ctx, job, lease).await,
            JobKind::Announce => announce::announce(&self.cx, &ctx, lease).await,
            JobKind::BriefStaff => staff::brief_staff(&self.cx, &ctx, lease).await,
            JobKind::CorrectNotices => announce::correct_notices(&self.cx, &ctx, job, lease).await,
            JobKind::Decommission => decommission::run_stage(&self.cx, &ctx, job, lease).await,
        }
    }

    /// Records a failed run: retried with backoff, or, for a step of one account past the
    /// playbook's budget or failing permanently, the account held for an operator.
    async fn record_failure(&self, job: &JobRow, lease: &Lease, err: StepError) {
        let (error, transient) = match err {
            StepError::Transient(err) => (err, true),
            StepError::Permanent(err) => (err, false),
            // Handled by `run_job`, which counts the attempt without the lease.
            StepError::LeaseLost(_) => return,
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
            let mut tx = self.cx.store.begin_leased(lease).await?;
            // A failed send ends its delivery attempt on record: the server did not take the
            // message, so the next attempt is a retry, not a resend.
            let notice = match kind {
                Some(JobKind::SendNotice) => match job.subject.parse::<i64>() {
                    Ok(id) => {
                        tx.notice_failed(id, &message).await?;
                        tx.notice(id).await?
                    }
                    Err(_) => None,
                },
                _ => None,
            };
            if give_up && let Some(ctx) = &policy {
                let user = match kind {
                    Some(JobKind::SendNotice) => notice.and_then(|n| n.account),
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

/// Renews a lease every third of its duration while its step runs (the task is aborted when
/// the step ends). A renewal that finds the lease gone marks it lost, which cancels the step; one
/// that fails (the database unreachable) is tried again, sooner, until the lease would have run
/// out, and then the lease is marked lost too: past its deadline the store can no longer prove
/// that nobody else holds the job.
async fn keep_lease(store: Store, lease: Lease) {
    let every = lease.duration() / 3;
    loop {
        tokio::time::sleep(every).await;
        loop {
            match store.renew_lease(&lease).await {
                Ok(true) => break,
                // The step recorded its end; it is finishing up (an SMTP QUIT, say).
                Ok(false) => return,
                Err(StoreError::LeaseLost { .. }) => return,
                Err(err) => {
                    let left = lease.remaining();
                    if left.is_zero() {
                        lease.mark_lost(format!("it could not be renewed before it expired: {err}"));
                        return;
                    }
                    warn!(error = %err, left_ms = left.as_millis() as u64, "could not renew the job's lease; trying again");
                    tokio::time::sleep((left / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)))
                        .await;
                }
            }
        }
    }
}

/// Jobs a worker sending notices took along with its own ([`Engine::send_notices`]): their
/// leases are kept alive while the batch runs, and those whose outcome was never recorded (the
/// run was cancelled: its own lease lost, the daemon's stop bound) are given back when it ends,
/// so they are taken again at once instead of after their leases expire.
struct Taken {
    store: Store,
    open: Vec<Lease>,
    keepers: Vec<tokio::task::JoinHandle<()>>,
}

impl Taken {
    fn new(store: Store, jobs: &[(JobRow, Lease)]) -> Taken {
        let keepers =
            jobs.iter().map(|(_, lease)| tokio::spawn(keep_lease(store.clone(), lease.clone()))).collect();
        Taken { store, open: jobs.iter().map(|(_, lease)| lease.clone()).collect(), keepers }
    }

    fn recorded(&mut self, lease: &Lease) {
        self.open.retain(|open| open.job_id() != lease.job_id());
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        for keeper in &self.keepers {
            keeper.abort();
        }
        if self.open.is_empty() {
            return;
        }
        let store = self.store.clone();
        let open = std::mem::take(&mut self.open);
        tokio::spawn(async move {
            for lease in open {
                if let Err(err) = store.release_lease(&lease).await {
                    warn!(job = lease.job_id(), error = %err, "could not give a send job back; its lease expires on its own");
                }
            }
        });
    }
}

/// This daemon's default name in leases and the event log: the host's name. A daemon holds a
/// lock file named after its owner, so a second one on the same host needs a name of its own
/// (`[daemon] owner`).
pub fn default_owner() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "siirto".into())
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
