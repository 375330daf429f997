//! What every step works with: the step context ([`Ctx`]: the store, the world, the clock and
//! the limits on DNS writes), a migration as a job sees it ([`MigrationCtx`]), how a step fails
//! ([`StepError`]), and the recording helpers that apply an event to a migration, an account or
//! a domain inside a leased transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::dedicated_ip::DedicatedIp;
use crate::dns::RrsetChange;
use crate::dns::rewrite::Endpoint;
use crate::domain::{
    AccountEvent, AccountPolicy, AccountState, AccountStep, DomainEvent, DomainState, GatePolicy,
    MigrationEvent, MigrationState, Timestamp, account_next_step, account_transition, domain_transition,
    migration_transition, to_millis,
};
use crate::engine::jobs::JobKind;
use crate::names::{DomainName, MigrationId};
use crate::playbook::Playbook;
use crate::store::{
    AccountRow, DomainRow, Lease, MigrationRow, NewEvent, NewJob, Store, StoreError, Tx, account_state,
};
use crate::world::{HostRuntime, World};

/// The source of `now` for the engine: the system clock in production, a controlled one in tests.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}

/// How soon a job that found its account's DNS locked by another job looks again.
const ACCOUNT_LOCK_RETRY: Duration = Duration::from_secs(1);

/// How a step failed.
#[derive(Debug)]
pub enum StepError {
    /// Worth retrying (a timeout, a 500, a server that is restarting).
    Transient(anyhow::Error),
    /// Retrying will not help (a refusal, bad data).
    Permanent(anyhow::Error),
    /// The job's lease is lost (why, as the store tells it): another daemon may hold the job.
    LeaseLost(String),
}

impl StepError {
    /// A transient failure from any error.
    pub fn transient(err: impl Into<anyhow::Error>) -> Self {
        StepError::Transient(err.into())
    }

    /// The error itself, for work outside a job (nothing to retry or hold).
    pub fn into_error(self) -> anyhow::Error {
        match self {
            StepError::Transient(err) | StepError::Permanent(err) => err,
            StepError::LeaseLost(reason) => anyhow::anyhow!("lease lost: {reason}"),
        }
    }
}

impl From<StoreError> for StepError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::LeaseLost { reason, .. } => StepError::LeaseLost(reason),
            other if other.is_transient() => StepError::Transient(other.into()),
            other => StepError::Permanent(other.into()),
        }
    }
}

impl From<anyhow::Error> for StepError {
    fn from(err: anyhow::Error) -> Self {
        StepError::Permanent(err)
    }
}

macro_rules! classify_err {
    ($err:expr) => {{
        let err = $err;
        if err.is_transient() { StepError::Transient(err.into()) } else { StepError::Permanent(err.into()) }
    }};
}

pub type StepResult = Result<(), StepError>;

pub(crate) use classify_err as classify;

/// A migration as a job sees it: its row, parsed state and playbook, and its two hosts.
pub struct MigrationCtx {
    pub id: MigrationId,
    pub row: MigrationRow,
    pub state: MigrationState,
    pub playbook: Arc<Playbook>,
    pub source: HostRuntime,
    pub target: HostRuntime,
}

impl MigrationCtx {
    pub fn account_policy(&self) -> AccountPolicy {
        self.playbook.account_policy()
    }

    pub fn source_end(&self) -> Endpoint {
        Endpoint { ip: self.source.ip, ipv6: self.source.ipv6, hostname: self.source.hostname.clone() }
    }

    pub fn target_end(&self) -> Endpoint {
        Endpoint { ip: self.target.ip, ipv6: self.target.ipv6, hostname: self.target.hostname.clone() }
    }

    /// Where an account's records move, as (from, to) pairs: from the source's address to the
    /// target's and, for an account on a dedicated IP, first from its dedicated source address
    /// to the assigned one (the target's address stands in until one is assigned: only which
    /// records match matters then).
    pub fn account_moves(&self, dedicated: Option<&DedicatedIp>) -> Vec<(Endpoint, Endpoint)> {
        let mut moves = Vec::with_capacity(2);
        if let Some(dedicated) = dedicated {
            moves.push((
                // IPv4 only: the hosts' IPv6 addresses (shared) move in the second pair.
                Endpoint { ip: dedicated.source_ip, ipv6: None, ..self.source_end() },
                Endpoint {
                    ip: dedicated.target_ip.unwrap_or(self.target.ip),
                    ipv6: None,
                    ..self.target_end()
                },
            ));
        }
        moves.push((self.source_end(), self.target_end()));
        moves
    }

    pub fn gate_policy(&self) -> GatePolicy {
        GatePolicy {
            margin: self.playbook.dns.gate_margin,
            wait_override: self.playbook.dns.gate_wait_override,
        }
    }
}

/// The step context: what the steps of every job share. One per daemon.
pub struct Ctx {
    /// The store.
    pub store: Store,
    /// The hosts, the DNS provider and checker, the channel, the public resolvers.
    pub world: World,
    /// The From address of notices.
    pub mail_from: String,
    /// The HTTP client of site verification (no redirects, a timeout).
    pub http: reqwest::Client,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// This daemon's name in leases and the event log.
    pub owner: String,
    /// Bounds the zone writes in flight across the daemon.
    dns_writes: Semaphore,
    /// One lock per zone: changes to one zone are never written concurrently (PowerDNS's sqlite
    /// backend answers concurrent PATCHes to one zone with 500s).
    zone_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    playbooks: Mutex<HashMap<String, Arc<Playbook>>>,
    /// Sent-marks waiting for their commit, shared by every batch of send jobs of this daemon.
    pub(crate) sent_marks: SentMarks,
}

/// Sent-marks of accepted notices waiting to be committed, shared by the daemon's batches of
/// send jobs (group commit): a batch puts its marks here, then takes `committing` (when no
/// other batch holds it) and commits every mark of its migration waiting by then, its own and those other batches put
/// here while the commit before it ran; each mark's owner learns its outcome through `done`.
#[derive(Default)]
pub(crate) struct SentMarks {
    pub(crate) waiting: Mutex<Vec<SentMark>>,
    pub(crate) committing: tokio::sync::Mutex<()>,
    /// Woken when a turn (holding `committing`) ends.
    pub(crate) turn_ended: tokio::sync::Notify,
}

/// One accepted notice waiting for its sent-mark's commit.
pub(crate) struct SentMark {
    /// Its migration.
    pub(crate) migration: String,
    /// The notice.
    pub(crate) notice: crate::store::OutboxRow,
    /// Its send job, and that job's lease.
    pub(crate) job_id: i64,
    pub(crate) lease: crate::store::Lease,
    /// When the server accepted it.
    pub(crate) at: std::time::Instant,
    /// Where the outcome goes.
    pub(crate) done: tokio::sync::oneshot::Sender<StepResult>,
}

impl Ctx {
    /// A context over `world` and `store`, writing at most `dns_write_concurrency` zones at once.
    pub fn new(
        store: Store,
        world: World,
        mail_from: String,
        clock: Arc<dyn Clock>,
        owner: String,
        dns_write_concurrency: usize,
    ) -> Ctx {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Ctx {
            store,
            world,
            mail_from,
            http,
            clock,
            owner,
            dns_writes: Semaphore::new(dns_write_concurrency.max(1)),
            zone_locks: Mutex::new(HashMap::new()),
            playbooks: Mutex::new(HashMap::new()),
            sent_marks: SentMarks::default(),
        }
    }

    /// The current time.
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The current time in unix milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        to_millis(self.clock.now())
    }

    pub(crate) async fn migration_ctx(&self, id: &str) -> Result<MigrationCtx, StepError> {
        let row =
            self.store.migration(id).await?.ok_or_else(|| anyhow!("migration {id} is not in the store"))?;
        let state: MigrationState = serde_json::from_str(&row.data)
            .with_context(|| format!("migration {id}: stored state is unreadable"))?;
        let playbook = self.playbook_of(&row)?;
        let host = |name: &str| {
            self.world
                .hosts
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("migration {id}: host {name:?} is not in the config"))
        };
        Ok(MigrationCtx {
            id: MigrationId::parse(&row.id).context("stored migration id")?,
            source: host(&row.source_host)?,
            target: host(&row.target_host)?,
            state,
            playbook,
            row,
        })
    }

    pub(crate) fn playbook_of(&self, row: &MigrationRow) -> anyhow::Result<Arc<Playbook>> {
        let mut cache = self.playbooks.lock().map_err(|_| anyhow!("playbook cache poisoned"))?;
        if let Some(playbook) = cache.get(&row.id) {
            return Ok(Arc::clone(playbook));
        }
        let playbook = Arc::new(
            Playbook::parse(&row.playbook, &format!("playbook of migration {}", row.id))
                .map_err(|err| anyhow!("{err}"))?,
        );
        cache.insert(row.id.clone(), Arc::clone(&playbook));
        Ok(playbook)
    }

    pub(crate) fn zone_lock(&self, zone: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.zone_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(locks.entry(zone.to_owned()).or_default())
    }

    /// Takes the DNS lock of `user` for this job (see [`Store::lock_account_dns`]) before a step
    /// reads the account's domain states to plan DNS writes. `false` when another job holds it:
    /// the job was then rescheduled for shortly after, and the step must do nothing more.
    ///
    /// This is what keeps a repoint and a rollback of one account from overwriting each other:
    /// the repoint, the rollback, the TTL restore and the verification each plan from states
    /// read under the lock and hold it through their DNS write and the recording of its outcome,
    /// so whichever runs second sees what the first did (a rollback after a repoint points the
    /// repointed records back; a repoint after a rollback finds the account rolled back and does
    /// nothing). The operator's rollback action itself writes no DNS: it only marks the account,
    /// which the repoint re-reads under a row lock before it records the switch. The lock lives
    /// in the account's row and expires with the job's lease, so it holds across daemons sharing
    /// one PostgreSQL database and is never left behind by a daemon that died.
    pub(crate) async fn lock_account_dns(
        &self,
        ctx: &MigrationCtx,
        lease: &Lease,
        user: &str,
    ) -> Result<bool, StepError> {
        let Some(holder) = self.store.lock_account_dns(lease, ctx.id.as_str(), user).await? else {
            return Ok(true);
        };
        let due = self.now_ms() + ACCOUNT_LOCK_RETRY.as_millis() as i64;
        debug!(account = user, holder, "another job works on the account's DNS; waiting for it");
        let mut tx = self.store.begin_leased(lease).await?;
        tx.reschedule_job(lease, due).await?;
        tx.commit().await?;
        Ok(false)
    }

    /// Applies one batch to a zone under the job's lease: one PATCH, never two writers on one
    /// zone, at most `dns_write_concurrency` writers in all, and refused when the lease no longer
    /// proves the right to act (checked once the zone's turn has come, right before the write).
    pub(crate) async fn write_zone(
        &self,
        lease: &Lease,
        zone: &DomainName,
        changes: &[RrsetChange],
    ) -> StepResult {
        if changes.is_empty() {
            return Ok(());
        }
        let lock = self.zone_lock(zone.as_str());
        let _zone = lock.lock().await;
        let _permit = self.dns_writes.acquire().await.map_err(|_| anyhow!("DNS write semaphore closed"))?;
        lease.check()?;
        self.world.dns.apply(zone, changes).await.map_err(|err| classify!(err))
    }

    pub(crate) fn event(
        &self,
        ctx: &MigrationCtx,
        account: Option<&str>,
        domain: Option<&str>,
        kind: &str,
        detail: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            migration_id: ctx.id.to_string(),
            account: account.map(str::to_owned),
            domain: domain.map(str::to_owned),
            kind: kind.to_owned(),
            detail: detail.to_string(),
            actor: self.owner.clone(),
            at: self.now_ms(),
        }
    }

    pub(crate) fn job(
        &self,
        ctx: &MigrationCtx,
        kind: JobKind,
        subject: &str,
        payload: serde_json::Value,
        due_at: i64,
        dedupe: String,
    ) -> NewJob {
        NewJob {
            migration_id: ctx.id.to_string(),
            kind: kind.as_str().to_owned(),
            subject: subject.to_owned(),
            payload: payload.to_string(),
            due_at,
            dedupe_key: dedupe,
        }
    }

    /// Applies an event to a migration inside `tx`: transition, state, event log.
    pub(crate) async fn apply_migration(
        &self,
        tx: &mut Tx<'_>,
        ctx: &MigrationCtx,
        state: &MigrationState,
        event: MigrationEvent,
    ) -> Result<MigrationState, StepError> {
        let now = self.now();
        let next = migration_transition(state, &event, now)
            .map_err(|refusal| StepError::Permanent(refusal.into()))?;
        let data = serde_json::to_string(&next).context("serialising a migration state")?;
        tx.set_migration_state(ctx.id.as_str(), next.name(), &data, to_millis(now)).await?;
        tx.append_event(&self.event(
            ctx,
            None,
            None,
            event.name(),
            serde_json::json!({ "event": event, "state": next.name() }),
        ))
        .await?;
        Ok(next)
    }

    /// Applies an event to an account inside `tx`: transition, state, event log, and the
    /// follow-up job the new state asks for.
    pub(crate) async fn apply_account(
        &self,
        tx: &mut Tx<'_>,
        ctx: &MigrationCtx,
        user: &str,
        state: &AccountState,
        event: AccountEvent,
    ) -> Result<AccountState, StepError> {
        let now = self.now();
        let next = account_transition(state, &event, now, &ctx.account_policy())
            .map_err(|refusal| StepError::Permanent(anyhow!("account {user}: {refusal}")))?;
        let data = serde_json::to_string(&next).context("serialising an account state")?;
        tx.set_account_state(ctx.id.as_str(), user, next.name(), &data, to_millis(now)).await?;
        let event_id = tx
            .append_event(&self.event(
                ctx,
                Some(user),
                None,
                event.name(),
                serde_json::json!({ "event": event, "state": next.name() }),
            ))
            .await?;
        let now_ms = to_millis(now);
        if let Some(step) = account_next_step(&next) {
            let (kind, due) = match step {
                AccountStep::Verify => (JobKind::Verify, now_ms),
                AccountStep::Repoint => (JobKind::Repoint, now_ms),
                AccountStep::QueueNotice => (JobKind::QueueNotice, now_ms),
                // The sync waits for the old TTL itself (it knows the records).
                AccountStep::SyncMail => (JobKind::SyncMail, now_ms),
                AccountStep::CheckMail => {
                    (JobKind::CheckMail, now_ms + ctx.playbook.mail.check_after.as_millis() as i64)
                }
            };
            // The event id makes the key unique per entry into the state, so an account retried
            // by an operator gets fresh jobs while a re-run of the same step does not.
            let dedupe = format!("{}:{}:{user}:{event_id}", kind.as_str(), ctx.id);
            tx.schedule_job(&self.job(ctx, kind, user, serde_json::json!({}), due, dedupe)).await?;
        }
        // Operators hear of every hold, with the reason.
        if let AccountState::Held { reason, .. } = &next {
            crate::engine::steps::staff::queue_held_notice(self, tx, ctx, user, reason, event_id).await?;
        }
        if next.is_settled() {
            let dedupe = format!("settle:{}:{user}:{event_id}", ctx.id);
            tx.schedule_job(&self.job(ctx, JobKind::Settle, "", serde_json::json!({}), now_ms, dedupe))
                .await?;
        }
        Ok(next)
    }

    /// Schedules the `settle` step after something that may have made the migration settled
    /// (a domain's TTL restored, a domain seen propagated); `what` makes its key unique.
    pub(crate) async fn schedule_settle(
        &self,
        tx: &mut Tx<'_>,
        ctx: &MigrationCtx,
        what: &str,
    ) -> Result<(), StepError> {
        let now_ms = self.now_ms();
        let dedupe = format!("settle:{}:{what}:{now_ms}", ctx.id);
        tx.schedule_job(&self.job(ctx, JobKind::Settle, "", serde_json::json!({}), now_ms, dedupe)).await?;
        Ok(())
    }

    /// Schedules the account's TTL restore for when the settle period has passed from now;
    /// `why` (e.g. `"rollback:"`) goes into its key.
    pub(crate) async fn schedule_ttl_restore(
        &self,
        tx: &mut Tx<'_>,
        ctx: &MigrationCtx,
        user: &str,
        why: &str,
    ) -> Result<(), StepError> {
        let now = self.now_ms();
        let due = now + ctx.playbook.schedule.settle_after.as_millis() as i64;
        let dedupe = format!("restore_ttl:{}:{user}:{why}{now}", ctx.id);
        tx.schedule_job(&self.job(ctx, JobKind::RestoreTtl, user, serde_json::json!({}), due, dedupe))
            .await?;
        Ok(())
    }

    /// Applies an event to a domain inside `tx`.
    pub(crate) async fn apply_domain(
        &self,
        tx: &mut Tx<'_>,
        ctx: &MigrationCtx,
        row: &DomainRow,
        state: &DomainState,
        event: DomainEvent,
    ) -> Result<DomainState, StepError> {
        let now = self.now();
        let next = domain_transition(state, &event, now, &ctx.gate_policy())
            .map_err(|refusal| StepError::Permanent(anyhow!("domain {}: {refusal}", row.domain)))?;
        if next == *state {
            // A step re-run after a crash repeats an event that changes nothing (the TTLs
            // observed again: the first observation stands); nothing happened, nothing is logged.
            return Ok(next);
        }
        let data = serde_json::to_string(&next).context("serialising a domain state")?;
        tx.set_domain_state(ctx.id.as_str(), &row.domain, next.name(), &data, to_millis(now)).await?;
        tx.append_event(&self.event(
            ctx,
            Some(&row.user),
            Some(&row.domain),
            event.name(),
            serde_json::json!({ "event": event, "state": next.name() }),
        ))
        .await?;
        Ok(next)
    }

    /// Holds an account with a reason, in its own transaction.
    pub(crate) async fn hold_account(
        &self,
        tx: &mut Tx<'_>,
        ctx: &MigrationCtx,
        user: &str,
        reason: String,
    ) -> Result<(), StepError> {
        let Some(row) = tx.account(ctx.id.as_str(), user).await? else {
            return Err(StepError::Permanent(anyhow!("account {user} is not in migration {}", ctx.id)));
        };
        let state = account_state(&row)?;
        if state.is_settled() {
            return Ok(());
        }
        self.apply_account(tx, ctx, user, &state, AccountEvent::Held { reason }).await?;
        Ok(())
    }

    /// Both hosts' SSH settings, or a permanent error saying which host lacks them.
    pub(crate) fn ssh_of<'c>(
        &self,
        ctx: &'c MigrationCtx,
    ) -> Result<(&'c crate::config::SshConfig, &'c crate::config::SshConfig), StepError> {
        let missing = |host: &HostRuntime| {
            StepError::Permanent(anyhow!(
                "host {} has no [hosts.{}.ssh] in the config; the final mail sync needs SSH to both hosts (or set final_sync = false in the playbook's [mail])",
                host.name,
                host.name
            ))
        };
        let source = ctx.source.ssh.as_ref().ok_or_else(|| missing(&ctx.source))?;
        let target = ctx.target.ssh.as_ref().ok_or_else(|| missing(&ctx.target))?;
        Ok((source, target))
    }

    /// The account a per-account step works on, if it is still in the state the step expects;
    /// `None` means the step is moot (already done by an earlier run, or the account moved on).
    pub(crate) async fn account_for_step(
        &self,
        ctx: &MigrationCtx,
        user: &str,
        expected: fn(&AccountState) -> bool,
    ) -> Result<Option<(AccountRow, AccountState)>, StepError> {
        let Some(row) = self.store.account(ctx.id.as_str(), user).await? else {
            return Ok(None);
        };
        let state = account_state(&row)?;
        Ok(expected(&state).then_some((row, state)))
    }

    /// The account's dedicated addresses, if it is on a dedicated IP at the source.
    pub(crate) async fn dedicated_of(
        &self,
        ctx: &MigrationCtx,
        user: &str,
    ) -> Result<Option<DedicatedIp>, StepError> {
        match self.store.dedicated_ip(ctx.id.as_str(), user).await? {
            Some(row) => Ok(Some(DedicatedIp::from_row(&row)?)),
            None => Ok(None),
        }
    }

    /// Every dedicated-IP account of the migration, by user.
    pub(crate) async fn dedicated_all(
        &self,
        ctx: &MigrationCtx,
    ) -> Result<HashMap<String, DedicatedIp>, StepError> {
        let mut all = HashMap::new();
        for row in self.store.dedicated_ips(ctx.id.as_str()).await? {
            all.insert(row.user.clone(), DedicatedIp::from_row(&row)?);
        }
        Ok(all)
    }

    pub(crate) async fn finish(&self, lease: &Lease) -> StepResult {
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease).await?;
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }
}
