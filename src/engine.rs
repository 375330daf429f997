//! The daemon's reconcile loop: lease due jobs, perform their effects through the adapters,
//! record the outcome and the new states in one transaction.
//!
//! Work is a row in the `jobs` table (kind, subject, due time). A worker claims due rows under a
//! lease, asks the pure core (`domain`) what the event does to the state, performs the effect,
//! and commits the new state, the event log entry, the follow-up jobs and the job's own
//! completion in one transaction guarded by the lease. Every effect checks before it acts
//! (a TTL already lowered is not lowered again, a record already pointing at the target is not
//! patched, a sent notice is not sent again), because a crash between "did it" and "recorded
//! it" re-runs the job. A failing job is retried with exponential backoff and jitter; past the
//! playbook's budget its account is held for an operator and the rest of the migration goes on.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};
use futures::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::Config;
use crate::dedicated_ip::{DedicatedIp, SiteIp};
use crate::dns::classify::{Classifier, ClassifySettings};
use crate::dns::{Checker, DnsProvider, PowerDns, Rrset, RrsetChange, Verification, Zone};
use crate::domain::{
    AccountEvent, AccountPolicy, AccountState, AccountStep, DomainEvent, DomainState, GatePolicy,
    MigrationEvent, MigrationState, ObservedRecord, RecordChange, Timestamp, account_next_step,
    account_transition, completion_notice_key, domain_transition, from_millis, migration_transition,
    reminder_notice_key, to_millis,
};
use crate::names::{AccountName, DomainName, MigrationId};
use crate::notify::{Channel, OutgoingNotice};
use crate::playbook::Playbook;
use crate::site_check::fetch_site;
use crate::store::{
    AccountRow, DomainRow, JobRow, Lease, MigrationRow, NewEvent, NewJob, Store, StoreError, Tx,
};
use crate::whm::{AccountItem, ItemOutcome, MailRouting, SessionState, TransferSessionId, WhmClient};

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

/// What the engine knows of one cPanel host.
#[derive(Clone, Debug)]
pub struct HostRuntime {
    /// The host's name in the config.
    pub name: String,
    /// Its WHM API client.
    pub whm: WhmClient,
    /// The address its sites' A records point at (and the address transfers reach it by).
    pub ip: Ipv4Addr,
    /// Its IPv6 address, if it has one (AAAA records and SPF `ip6:` at it move like A records).
    pub ipv6: Option<Ipv6Addr>,
    /// The port its web server answers on (80 on a real host).
    pub http_port: u16,
    /// The port its web server answers HTTPS on (443 on a real host).
    pub https_port: u16,
    /// Its host name (from the WHM URL, when that is a name), absolute with the trailing dot:
    /// MX and CNAME records naming it move with the account.
    pub hostname: Option<String>,
    /// SSH access (pinned host key), for the final delta sync and the mail log; `None` when the
    /// config gives none.
    pub ssh: Option<crate::config::SshConfig>,
}

/// Everything an engine is made of; the daemon builds it from the config, tests and the demo
/// build it from what they started.
pub struct EngineParts {
    /// The store.
    pub store: Store,
    /// The cPanel hosts by config name.
    pub hosts: BTreeMap<String, HostRuntime>,
    /// The company's DNS provider.
    pub dns: Arc<dyn DnsProvider>,
    /// Checks answers on the company's authoritative nameservers.
    pub checker: Arc<Checker>,
    /// Where notices go.
    pub channel: Arc<dyn Channel>,
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
    store: Store,
    hosts: BTreeMap<String, HostRuntime>,
    dns: Arc<dyn DnsProvider>,
    checker: Arc<Checker>,
    channel: Arc<dyn Channel>,
    mail_from: String,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    owner: String,
    lease: Duration,
    idle_poll: Duration,
    workers: usize,
    dns_writes: Semaphore,
    /// One lock per zone: changes to one zone are never written concurrently (PowerDNS's sqlite
    /// backend answers concurrent PATCHes to one zone with 500s).
    zone_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    playbooks: Mutex<HashMap<String, Arc<Playbook>>>,
    /// The resolvers that stand for public DNS (config `dns.resolvers`), for domains whose DNS
    /// is not ours; `None` when none are configured (their polls then fail and retry).
    public_dns: Option<Arc<Classifier>>,
}

/// Zones handled by one run of the lowering job; the job reschedules itself for the rest, so
/// no run outlives its lease on a campaign of 50,000 domains.
const LOWER_TTL_ZONES_PER_RUN: u32 = 200;

/// The TTL assumed for a propagated external domain's old records (cPanel's default zone TTL,
/// 4 hours): they are at the customer's DNS host, whose TTLs siirto never saw. Its mail follow-up
/// waits this (plus the gate margin) after propagation before routing the domain's mail away
/// from the source, so the source does not relay to itself on a stale cached MX.
const EXTERNAL_RECORDS_ASSUMED_TTL: u32 = 14_400;

/// How soon a job that found its account's DNS locked by another job looks again.
const ACCOUNT_LOCK_RETRY: Duration = Duration::from_secs(1);

/// The kinds of work in the jobs table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Observe and lower the TTLs of the migrating records (migration-wide).
    LowerTtl,
    /// Open the TTL gate once the old TTLs have expired (migration-wide).
    OpenGate,
    /// Put the accounts that want a transfer into a new transfer session (migration-wide).
    Transfer,
    /// Enqueue a session's accounts and start it (subject: session id).
    StartSession,
    /// Read a session's state and log (subject: session id).
    PollSession,
    /// Check an account's sites on the target (subject: user).
    Verify,
    /// Repoint an account's domains and verify through the resolver (subject: user).
    Repoint,
    /// Write an account's completion notice to the outbox (subject: user).
    QueueNotice,
    /// Send one outbox row (subject: notice id).
    SendNotice,
    /// See whether every account has settled (migration-wide).
    Settle,
    /// Give an account's changed records their original TTLs back after the settle period
    /// (subject: user).
    RestoreTtl,
    /// Point an account's records (or one domain's) back at the source (subject: user;
    /// payload: the domain, if one).
    Rollback,
    /// Ask public DNS whether a domain with external DNS shows the target's address yet, and
    /// remind its customer when a reminder is due (subject: domain; payload: its user).
    PollExternal,
    /// Delta-sync an account's mail from the source once the old TTL has passed since its
    /// switch (subject: user).
    SyncMail,
    /// Read the source's mail log for local deliveries since the last sync (subject: user).
    CheckMail,
    /// Once a domain on external DNS is propagated and the old records have expired: route its
    /// mail on the source to the target and delta-sync the account's mail, which kept landing
    /// on the source while the customer's records pointed there (subject: domain; payload:
    /// its user).
    ExternalMail,
}

impl JobKind {
    /// The kind as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::LowerTtl => "lower_ttl",
            JobKind::OpenGate => "open_gate",
            JobKind::Transfer => "transfer",
            JobKind::StartSession => "start_session",
            JobKind::PollSession => "poll_session",
            JobKind::Verify => "verify",
            JobKind::Repoint => "repoint",
            JobKind::QueueNotice => "queue_notice",
            JobKind::SendNotice => "send_notice",
            JobKind::Settle => "settle",
            JobKind::RestoreTtl => "restore_ttl",
            JobKind::Rollback => "rollback",
            JobKind::PollExternal => "poll_external",
            JobKind::SyncMail => "sync_mail",
            JobKind::CheckMail => "check_mail",
            JobKind::ExternalMail => "external_mail",
        }
    }

    /// Parses a stored kind.
    pub fn parse(kind: &str) -> Option<JobKind> {
        [
            JobKind::LowerTtl,
            JobKind::OpenGate,
            JobKind::Transfer,
            JobKind::StartSession,
            JobKind::PollSession,
            JobKind::Verify,
            JobKind::Repoint,
            JobKind::QueueNotice,
            JobKind::SendNotice,
            JobKind::Settle,
            JobKind::RestoreTtl,
            JobKind::Rollback,
            JobKind::PollExternal,
            JobKind::SyncMail,
            JobKind::CheckMail,
            JobKind::ExternalMail,
        ]
        .into_iter()
        .find(|k| k.as_str() == kind)
    }

    /// True when a failure of this job concerns one account, which is held when the retry
    /// budget is spent; the other jobs concern the whole migration and keep retrying.
    fn is_per_account(self) -> bool {
        match self {
            JobKind::Verify
            | JobKind::Repoint
            | JobKind::QueueNotice
            | JobKind::SendNotice
            | JobKind::SyncMail
            | JobKind::CheckMail => true,
            JobKind::LowerTtl
            | JobKind::OpenGate
            | JobKind::Transfer
            | JobKind::StartSession
            | JobKind::PollSession
            | JobKind::Settle
            // An account that is done or rolled back is not held again: these keep retrying
            // (with the backoff's cap) and show among the status's failing jobs.
            | JobKind::RestoreTtl
            | JobKind::Rollback
            // Waiting for a customer holds nobody; a failing poll (or the mail follow-up of an
            // account that is done) retries with the backoff's cap.
            | JobKind::PollExternal
            | JobKind::ExternalMail => false,
        }
    }
}

/// How a step failed.
#[derive(Debug)]
enum StepError {
    /// Worth retrying (a timeout, a 500, a server that is restarting).
    Transient(anyhow::Error),
    /// Retrying will not help (a refusal, bad data).
    Permanent(anyhow::Error),
    /// Another daemon took the job over; record nothing.
    LeaseLost,
}

impl StepError {
    fn transient(err: impl Into<anyhow::Error>) -> Self {
        StepError::Transient(err.into())
    }
}

impl From<StoreError> for StepError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::LeaseLost { .. } => StepError::LeaseLost,
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

macro_rules! classify {
    ($err:expr) => {{
        let err = $err;
        if err.is_transient() { StepError::Transient(err.into()) } else { StepError::Permanent(err.into()) }
    }};
}

type StepResult = Result<(), StepError>;

/// A migration as a job sees it: its row, parsed state and playbook, and its two hosts.
struct MigrationCtx {
    id: MigrationId,
    row: MigrationRow,
    state: MigrationState,
    playbook: Arc<Playbook>,
    source: HostRuntime,
    target: HostRuntime,
}

impl MigrationCtx {
    fn account_policy(&self) -> AccountPolicy {
        self.playbook.account_policy()
    }

    fn source_end(&self) -> Endpoint {
        Endpoint { ip: self.source.ip, ipv6: self.source.ipv6, hostname: self.source.hostname.clone() }
    }

    fn target_end(&self) -> Endpoint {
        Endpoint { ip: self.target.ip, ipv6: self.target.ipv6, hostname: self.target.hostname.clone() }
    }

    /// Where an account's records move, as (from, to) pairs: from the source's address to the
    /// target's and, for an account on a dedicated IP, first from its dedicated source address
    /// to the assigned one (the target's address stands in until one is assigned: only which
    /// records match matters then).
    fn account_moves(&self, dedicated: Option<&DedicatedIp>) -> Vec<(Endpoint, Endpoint)> {
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

    fn gate_policy(&self) -> GatePolicy {
        GatePolicy {
            margin: self.playbook.dns.gate_margin,
            wait_override: self.playbook.dns.gate_wait_override,
        }
    }
}

/// The payload of a session job: which accounts it carries.
#[derive(Debug, Serialize, Deserialize)]
struct SessionPayload {
    accounts: Vec<String>,
}

impl Engine {
    /// Builds an engine from its parts.
    pub fn new(parts: EngineParts) -> Engine {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Engine {
            store: parts.store,
            hosts: parts.hosts,
            dns: parts.dns,
            checker: parts.checker,
            channel: parts.channel,
            mail_from: parts.mail_from,
            http,
            clock: parts.clock,
            owner: parts.owner,
            lease: parts.lease,
            idle_poll: parts.idle_poll,
            workers: parts.workers.max(1),
            dns_writes: Semaphore::new(parts.dns_write_concurrency.max(1)),
            zone_locks: Mutex::new(HashMap::new()),
            playbooks: Mutex::new(HashMap::new()),
            public_dns: None,
        }
    }

    /// Sets the resolvers asked whether public DNS shows a domain with external DNS at the
    /// target (the daemon sets them from `dns.resolvers`).
    pub fn with_public_dns(mut self, resolvers: Arc<Classifier>) -> Engine {
        self.public_dns = Some(resolvers);
        self
    }

    /// Builds an engine from a validated config: WHM clients, the DNS provider and checker,
    /// the notice channel.
    pub fn from_config(config: &Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<Engine> {
        let parts = adapters_from_config(config)?;
        let owner = config.daemon.owner.clone().unwrap_or_else(default_owner);
        let public_dns = if config.dns.resolvers.is_empty() {
            None
        } else {
            let settings = ClassifySettings::from_config(&config.dns);
            Some(Arc::new(Classifier::new(&settings).context("the resolvers of dns.resolvers")?))
        };
        let engine = Engine::new(EngineParts {
            store,
            hosts: parts.hosts,
            dns: parts.dns,
            checker: parts.checker,
            channel: parts.channel,
            mail_from: config.mail.from.clone(),
            clock,
            owner,
            lease: config.daemon.lease,
            idle_poll: config.daemon.idle_poll,
            dns_write_concurrency: config.dns.write_concurrency as usize,
            workers: 8,
        });
        Ok(match public_dns {
            Some(resolvers) => engine.with_public_dns(resolvers),
            None => engine,
        })
    }

    /// Renames this daemon (its name in leases and the event log).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Engine {
        self.owner = owner.into();
        self
    }

    /// Sets how many jobs this daemon runs at once.
    pub fn with_workers(mut self, workers: usize) -> Engine {
        self.workers = workers.max(1);
        self
    }

    /// The store this engine works on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This daemon's name in leases and the event log.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// One round: claims up to `workers` due jobs, runs them concurrently and waits for them.
    /// Returns how many ran. Tests drive the engine with this.
    pub async fn tick(self: &Arc<Self>) -> anyhow::Result<usize> {
        let now = to_millis(self.clock.now());
        let claimed = self
            .store
            .claim_jobs(&self.owner, now, self.lease.as_millis() as i64, self.workers as i64)
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
        info!(owner = %self.owner, workers = self.workers, "engine running");
        loop {
            while let Some(joined) = running.try_join_next() {
                if let Err(err) = joined {
                    warn!(error = %err, "a job task panicked");
                }
            }
            let free = self.workers.saturating_sub(running.len());
            if free > 0 {
                let now = to_millis(self.clock.now());
                match self
                    .store
                    .claim_jobs(&self.owner, now, self.lease.as_millis() as i64, free as i64)
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
        let now = to_millis(self.clock.now());
        match self.store.next_due_at().await {
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
        let ctx = self.migration_ctx(&job.migration_id).await?;
        match &ctx.state {
            MigrationState::Aborted { .. } => {
                // An aborted migration does nothing more; the job is closed.
                let now = self.now_ms();
                let mut tx = self.store.begin_leased(lease, now).await?;
                tx.finish_job(lease, now).await?;
                tx.commit().await?;
                return Ok(());
            }
            MigrationState::Paused { .. }
            | MigrationState::Planned { .. }
            | MigrationState::Approved { .. } => {
                let now = self.now_ms();
                let mut tx = self.store.begin_leased(lease, now).await?;
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
            JobKind::LowerTtl => self.lower_ttl(&ctx, lease).await,
            JobKind::OpenGate => self.open_gate(&ctx, lease).await,
            JobKind::Transfer => self.transfer(&ctx, lease).await,
            JobKind::StartSession => self.start_session(&ctx, job, lease).await,
            JobKind::PollSession => self.poll_session(&ctx, job, lease).await,
            JobKind::Verify => self.verify(&ctx, job, lease).await,
            JobKind::Repoint => self.repoint(&ctx, job, lease).await,
            JobKind::QueueNotice => self.queue_notice(&ctx, job, lease).await,
            JobKind::SendNotice => self.send_notice(&ctx, job, lease).await,
            JobKind::Settle => self.settle(&ctx, lease).await,
            JobKind::RestoreTtl => self.restore_ttl(&ctx, job, lease).await,
            JobKind::Rollback => self.rollback(&ctx, job, lease).await,
            JobKind::PollExternal => self.poll_external(&ctx, job, lease).await,
            JobKind::SyncMail => self.sync_mail(&ctx, job, lease).await,
            JobKind::CheckMail => self.check_mail(&ctx, job, lease).await,
            JobKind::ExternalMail => self.external_mail(&ctx, job, lease).await,
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn now_ms(&self) -> i64 {
        to_millis(self.clock.now())
    }

    async fn migration_ctx(&self, id: &str) -> Result<MigrationCtx, StepError> {
        let row =
            self.store.migration(id).await?.ok_or_else(|| anyhow!("migration {id} is not in the store"))?;
        let state: MigrationState = serde_json::from_str(&row.data)
            .with_context(|| format!("migration {id}: stored state is unreadable"))?;
        let playbook = self.playbook_of(&row)?;
        let host = |name: &str| {
            self.hosts
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

    fn playbook_of(&self, row: &MigrationRow) -> anyhow::Result<Arc<Playbook>> {
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

    fn zone_lock(&self, zone: &str) -> Arc<tokio::sync::Mutex<()>> {
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
    async fn lock_account_dns(
        &self,
        ctx: &MigrationCtx,
        lease: &Lease,
        user: &str,
    ) -> Result<bool, StepError> {
        let now = self.now_ms();
        let Some((holder, expires_at)) =
            self.store.lock_account_dns(lease, ctx.id.as_str(), user, now).await?
        else {
            return Ok(true);
        };
        let due = expires_at.min(now + ACCOUNT_LOCK_RETRY.as_millis() as i64).max(now);
        debug!(account = user, holder, "another job works on the account's DNS; waiting for it");
        let mut tx = self.store.begin_leased(lease, now).await?;
        tx.reschedule_job(lease, due).await?;
        tx.commit().await?;
        Ok(false)
    }

    /// Applies one batch to a zone: one PATCH, never two writers on one zone, at most
    /// `dns_write_concurrency` writers in all.
    async fn write_zone(&self, zone: &DomainName, changes: &[RrsetChange]) -> StepResult {
        if changes.is_empty() {
            return Ok(());
        }
        let lock = self.zone_lock(zone.as_str());
        let _zone = lock.lock().await;
        let _permit = self.dns_writes.acquire().await.map_err(|_| anyhow!("DNS write semaphore closed"))?;
        self.dns.apply(zone, changes).await.map_err(|err| classify!(err))
    }

    // ---- recording -----------------------------------------------------------------------

    fn event(
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

    fn job(
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
    async fn apply_migration(
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
    async fn apply_account(
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
        if next.is_settled() {
            let dedupe = format!("settle:{}:{user}:{event_id}", ctx.id);
            tx.schedule_job(&self.job(ctx, JobKind::Settle, "", serde_json::json!({}), now_ms, dedupe))
                .await?;
        }
        Ok(next)
    }

    /// Applies an event to a domain inside `tx`.
    async fn apply_domain(
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
    async fn hold_account(
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
        let policy = self.migration_ctx(&job.migration_id).await.ok();
        let (max_attempts, base, max_delay) = policy
            .as_ref()
            .map(|ctx| {
                (ctx.playbook.retry.max_attempts, ctx.playbook.retry.base_delay, ctx.playbook.retry.max_delay)
            })
            .unwrap_or((5, Duration::from_secs(5), Duration::from_secs(300)));
        let now = self.now_ms();
        let per_account = kind.is_some_and(JobKind::is_per_account);
        let give_up = per_account && (!transient || attempts >= max_attempts);
        let result: Result<(), StepError> = async {
            let mut tx = self.store.begin_leased(lease, now).await?;
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
                    self.hold_account(&mut tx, ctx, &user, reason).await?;
                }
                tx.finish_job(lease, now).await?;
            } else {
                let delay = backoff(base, max_delay, attempts);
                tx.retry_job(lease, now + delay.as_millis() as i64, &message).await?;
                if let Some(ctx) = &policy {
                    let account = per_account.then(|| job.subject.clone()).filter(|_| kind != Some(JobKind::SendNotice));
                    tx.append_event(&self.event(
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

    // ---- the steps -----------------------------------------------------------------------

    /// Observes and lowers the TTLs of the records that will change, zone by zone (one PATCH
    /// per zone), then sets the migration's TTL gate.
    async fn lower_ttl(&self, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
        let MigrationState::Started { .. } = ctx.state else {
            return self.finish(lease).await;
        };
        // Only the next zones' domains still to lower: a run never reads the whole migration.
        let rows = self.store.domains_to_lower(ctx.id.as_str(), LOWER_TTL_ZONES_PER_RUN).await?;
        let mut by_zone: BTreeMap<String, Vec<DomainRow>> = BTreeMap::new();
        for row in rows {
            by_zone.entry(row.zone.clone()).or_default().push(row);
        }
        // A full run may leave zones for the next one; a short run was the last.
        let more = by_zone.len() >= LOWER_TTL_ZONES_PER_RUN as usize;
        let this_run: Vec<(String, Vec<DomainRow>)> = by_zone.into_iter().collect();
        let dedicated = self.dedicated_all(ctx).await?;
        let results: Vec<StepResult> = futures::stream::iter(this_run)
            .map(|(zone, rows)| self.lower_zone(ctx, lease, zone, rows, &dedicated))
            .buffer_unordered(8)
            .collect()
            .await;
        let mut first_transient = None;
        for result in results {
            match result {
                Ok(()) => {}
                Err(StepError::LeaseLost) => return Err(StepError::LeaseLost),
                Err(err @ StepError::Transient(_)) => {
                    first_transient.get_or_insert(err);
                }
                Err(StepError::Permanent(err)) => return Err(StepError::Permanent(err)),
            }
        }
        if let Some(err) = first_transient {
            return Err(err);
        }
        let now = self.now_ms();
        if more {
            let mut tx = self.store.begin_leased(lease, now).await?;
            tx.reschedule_job(lease, now).await?;
            return Ok(tx.commit().await?);
        }
        // Every domain is lowered: the migration's gate is the latest of the per-domain gates.
        let gate = ctx.gate_policy();
        if let Some(wait) = gate.wait_override {
            warn!(
                ?wait,
                "the playbook shortens the TTL wait (gate_wait_override): fine for tests and the demo, never for real customers"
            );
        }
        let mut gate_opens_at = self.now();
        for row in self.store.domains(ctx.id.as_str()).await? {
            if let DomainState::TtlLowered { records, lowered_at } = domain_state(&row)? {
                gate_opens_at = gate_opens_at.max(gate.domain_opens_at(lowered_at, &records));
            }
        }
        let due = to_millis(gate_opens_at).max(ctx.row.cutover_at);
        let mut tx = self.store.begin_leased(lease, now).await?;
        self.apply_migration(&mut tx, ctx, &ctx.state, MigrationEvent::TtlLowered { gate_opens_at }).await?;
        tx.schedule_job(&self.job(
            ctx,
            JobKind::OpenGate,
            "",
            serde_json::json!({}),
            due,
            format!("open_gate:{}", ctx.id),
        ))
        .await?;
        tx.finish_job(lease, now).await?;
        tx.commit().await?;
        info!(migration = %ctx.id, %gate_opens_at, "TTLs lowered; the cutover waits for the gate");
        Ok(())
    }

    async fn lower_zone(
        &self,
        ctx: &MigrationCtx,
        lease: &Lease,
        zone: String,
        rows: Vec<DomainRow>,
        dedicated: &HashMap<String, DedicatedIp>,
    ) -> StepResult {
        let zone_name = DomainName::parse(&zone).context("stored zone name")?;
        let zone_data = match self.dns.zone(&zone_name).await {
            Ok(data) => data,
            Err(err) if err.is_transient() => return Err(StepError::transient(err)),
            Err(err) => {
                // The zone cannot be read: its accounts are held with the reason, the rest goes on.
                let reason = format!("DNS zone {zone} could not be read: {err}");
                let mut tx = self.store.begin_leased(lease, self.now_ms()).await?;
                for row in &rows {
                    self.hold_account(&mut tx, ctx, &row.user, reason.clone()).await?;
                }
                tx.commit().await?;
                return Ok(());
            }
        };
        let (source, target) = (ctx.source_end(), ctx.target_end());
        let short_ttl = ctx.playbook.dns.short_ttl;
        // 1. Record what we saw before changing anything: each record that will change, with
        //    the TTL it has now.
        let mut tx = self.store.begin_leased(lease, self.now_ms()).await?;
        let mut changes = Vec::new();
        let mut observed = Vec::new();
        for row in &rows {
            let domain = DomainName::parse(&row.domain).context("stored domain name")?;
            let moves = ctx.account_moves(dedicated.get(&row.user));
            let rrsets = records_to_change(&zone_data, &domain, &rows, &moves);
            let mut records: Vec<ObservedRecord> = rrsets
                .iter()
                .map(|r| ObservedRecord {
                    removed: removed_values(r, &source, &target),
                    ..ObservedRecord::changed(r.name.clone(), r.rtype.clone(), r.ttl)
                })
                .collect();
            if ctx.playbook.dns.create_aaaa
                && source.ipv6.is_none()
                && let Some(target_v6) = target.ipv6
            {
                records.extend(aaaa_to_create(&zone_data, &rrsets, target_v6));
            }
            let state = domain_state(row)?;
            let state =
                self.apply_domain(&mut tx, ctx, row, &state, DomainEvent::TtlObserved { records }).await?;
            // Never raised: a record already below the short TTL keeps its own.
            for rrset in rrsets {
                if rrset.ttl > short_ttl {
                    changes.push(RrsetChange::Replace(Rrset { ttl: short_ttl, ..rrset.clone() }));
                }
            }
            observed.push((row.clone(), state));
        }
        tx.commit().await?;
        // 2. Lower: one PATCH for the zone.
        self.write_zone(&zone_name, &changes).await?;
        // 3. Record the lowering.
        let mut tx = self.store.begin_leased(lease, self.now_ms()).await?;
        for (row, state) in observed {
            self.apply_domain(&mut tx, ctx, &row, &state, DomainEvent::TtlLowered).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn open_gate(&self, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
        let now = self.now();
        let mut tx = self.store.begin_leased(lease, to_millis(now)).await?;
        match &ctx.state {
            MigrationState::TtlLowered { gate_opens_at, .. } if now < *gate_opens_at => {
                tx.reschedule_job(lease, to_millis(*gate_opens_at)).await?;
            }
            MigrationState::TtlLowered { .. } => {
                self.apply_migration(&mut tx, ctx, &ctx.state, MigrationEvent::GateOpened).await?;
                let dedupe = format!("transfer:{}:first", ctx.id);
                tx.schedule_job(&self.job(
                    ctx,
                    JobKind::Transfer,
                    "",
                    serde_json::json!({}),
                    to_millis(now),
                    dedupe,
                ))
                .await?;
                tx.finish_job(lease, to_millis(now)).await?;
                info!(migration = %ctx.id, "TTL gate open; cutover begins");
            }
            _ => tx.finish_job(lease, to_millis(now)).await?,
        }
        Ok(tx.commit().await?)
    }

    /// Creates a transfer session on the target for the next accounts that want one.
    async fn transfer(&self, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
        let MigrationState::Transferring { .. } = ctx.state else {
            return self.finish(lease).await;
        };
        let accounts = self.store.accounts(ctx.id.as_str()).await?;
        // Accounts on a dedicated IP move last: not while any other account still wants a
        // transfer or is in one.
        let dedicated = self.dedicated_all(ctx).await?;
        let mut others_busy = false;
        for row in accounts.iter().filter(|a| !dedicated.contains_key(&a.user)) {
            let state = account_state(row)?;
            if state.wants_transfer()
                || matches!(state, AccountState::Queued { .. } | AccountState::Copied { .. })
            {
                others_busy = true;
                break;
            }
        }
        let mut batch = Vec::new();
        for row in &accounts {
            if account_state(row)?.wants_transfer() && !(others_busy && dedicated.contains_key(&row.user)) {
                batch.push(row.clone());
            }
            if batch.len() >= ctx.playbook.transfer.accounts_per_session as usize {
                break;
            }
        }
        if batch.is_empty() {
            return self.finish(lease).await;
        }
        let request = crate::preflight::remote_root_session(&ctx.source, &ctx.playbook);
        let session = ctx
            .target
            .whm
            .create_remote_root_transfer_session(&request)
            .await
            .map_err(|err| classify!(err))?;
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        let mut users = Vec::new();
        for row in &batch {
            let state = account_state(row)?;
            self.apply_account(
                &mut tx,
                ctx,
                &row.user,
                &state,
                AccountEvent::Enqueued { session: session.as_str().to_owned() },
            )
            .await?;
            users.push(row.user.clone());
        }
        let payload = serde_json::to_value(SessionPayload { accounts: users }).context("session payload")?;
        let dedupe = format!("start_session:{}:{}", ctx.id, session.as_str());
        tx.schedule_job(&self.job(ctx, JobKind::StartSession, session.as_str(), payload, now, dedupe))
            .await?;
        tx.finish_job(lease, now).await?;
        tx.commit().await?;
        info!(session = session.as_str(), accounts = batch.len(), "transfer session created");
        Ok(())
    }

    /// Enqueues a session's accounts and starts it, unless it was started already.
    async fn start_session(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let session =
            TransferSessionId::parse(&job.subject).map_err(|err| StepError::Permanent(anyhow!("{err}")))?;
        let payload: SessionPayload = serde_json::from_str(&job.payload).context("session job payload")?;
        let state = ctx.target.whm.transfer_session_state(&session).await.map_err(|err| classify!(err))?;
        let mut refused: Vec<(Option<&str>, String)> = Vec::new();
        if matches!(state, SessionState::Pending | SessionState::TransferPending) {
            let accounts = self.store.accounts(ctx.id.as_str()).await?;
            let by_user: HashMap<&str, &AccountRow> = accounts.iter().map(|a| (a.user.as_str(), a)).collect();
            // Packages first: the ones the migration's accounts use that the target lacks.
            let users = accounts.iter().map(|a| a.user.clone()).collect();
            let packages =
                crate::transfer_control::packages_to_send(&ctx.source.whm, &ctx.target.whm, &users)
                    .await
                    .map_err(|err| classify!(err))?;
            // An item the target refuses (result 0: "already queued" after a daemon died between
            // two enqueues, a package it will not take, …) does not stop the session: the refusal
            // is recorded, and an account without a result when the session ends is failed and
            // retried in a new session like any other. Only transport errors retry the job.
            for package in &packages {
                match ctx.target.whm.enqueue_package(&session, package).await {
                    Ok(()) => {}
                    Err(err) if !err.is_transient() => {
                        refused.push((None, format!("package {package}: {err}")))
                    }
                    Err(err) => return Err(classify!(err)),
                }
            }
            for user in &payload.accounts {
                let row = by_user
                    .get(user.as_str())
                    .ok_or_else(|| anyhow!("account {user} vanished from the store"))?;
                let item = AccountItem {
                    user: AccountName::parse(&row.user).context("stored user")?,
                    localuser: AccountName::parse(&row.user).context("stored user")?,
                    domain: DomainName::parse(&row.main_domain).context("stored domain")?,
                    size_bytes: (row.disk_mb.max(1) as u64) * 1024 * 1024,
                };
                match ctx.target.whm.enqueue_account(&session, &item).await {
                    Ok(()) => {}
                    Err(err) if !err.is_transient() => refused.push((Some(user.as_str()), err.to_string())),
                    Err(err) => return Err(classify!(err)),
                }
            }
            ctx.target.whm.start_transfer_session(&session).await.map_err(|err| classify!(err))?;
        }
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        for (user, message) in refused {
            warn!(session = session.as_str(), account = ?user, %message, "the target refused a transfer item");
            let detail = serde_json::json!({ "session": session.as_str(), "message": message });
            tx.append_event(&self.event(ctx, user, None, "transfer_item_refused", detail)).await?;
        }
        let dedupe = format!("poll_session:{}:{}", ctx.id, session.as_str());
        let due = now + ctx.playbook.transfer.poll_interval.as_millis() as i64;
        tx.schedule_job(&self.job(
            ctx,
            JobKind::PollSession,
            session.as_str(),
            serde_json::json!({}),
            due,
            dedupe,
        ))
        .await?;
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// Reads the session's master log and moves each of its accounts on; decides per item,
    /// never by the session's state (a session completes with failed items).
    async fn poll_session(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let session =
            TransferSessionId::parse(&job.subject).map_err(|err| StepError::Permanent(anyhow!("{err}")))?;
        let state = ctx.target.whm.transfer_session_state(&session).await.map_err(|err| classify!(err))?;
        let lines = ctx.target.whm.transfer_session_log(&session).await.map_err(|err| classify!(err))?;
        let outcomes = crate::whm::item_outcomes(&lines);
        let accounts = self.store.accounts(ctx.id.as_str()).await?;
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        let mut still_running = 0;
        for row in &accounts {
            let mut current = account_state(row)?;
            let in_session = match &current {
                AccountState::Queued { session: s, .. } | AccountState::Copied { session: s, .. } => {
                    s == session.as_str()
                }
                _ => false,
            };
            if !in_session {
                continue;
            }
            let outcome = outcomes.get(&row.user);
            let events: Vec<AccountEvent> = match (outcome, &current) {
                (Some(ItemOutcome::Copied), AccountState::Queued { .. }) => vec![AccountEvent::Copied],
                (Some(ItemOutcome::Restored), AccountState::Queued { .. }) => {
                    vec![AccountEvent::Copied, AccountEvent::Restored]
                }
                (Some(ItemOutcome::Restored), AccountState::Copied { .. }) => vec![AccountEvent::Restored],
                (Some(ItemOutcome::Failed { queue, message }), _) => {
                    vec![AccountEvent::TransferFailed { queue: queue.clone(), message: message.clone() }]
                }
                _ if state.is_terminal() => vec![AccountEvent::TransferFailed {
                    queue: "SESSION".to_owned(),
                    message: format!(
                        "session {} ended {state:?} without a result for this account",
                        session.as_str()
                    ),
                }],
                _ => Vec::new(),
            };
            for event in events {
                current = self.apply_account(&mut tx, ctx, &row.user, &current, event).await?;
            }
            if matches!(current, AccountState::Queued { .. } | AccountState::Copied { .. }) {
                still_running += 1;
            }
        }
        if state.is_terminal() || still_running == 0 {
            // The next batch (and failed accounts' retries) go in a new session.
            let dedupe = format!("transfer:{}:after:{}", ctx.id, session.as_str());
            tx.schedule_job(&self.job(ctx, JobKind::Transfer, "", serde_json::json!({}), now, dedupe))
                .await?;
            tx.finish_job(lease, now).await?;
        } else {
            tx.reschedule_job(lease, now + ctx.playbook.transfer.poll_interval.as_millis() as i64).await?;
        }
        Ok(tx.commit().await?)
    }

    /// Fetches each of the account's sites from the source and from the target by address,
    /// with the domain as Host, over HTTP and HTTPS ([`crate::site_check`]), and compares
    /// status and title.
    async fn verify(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let user = job.subject.as_str();
        if !self.lock_account_dns(ctx, lease, user).await? {
            return Ok(());
        }
        let Some((_, state)) =
            self.account_for_step(ctx, user, |s| matches!(s, AccountState::Restored { .. })).await?
        else {
            return self.finish(lease).await;
        };
        let domains = self.store.domains_of(ctx.id.as_str(), user).await?;
        // An account on a dedicated IP is put on its assigned address first, then compared
        // there with its dedicated address at the source.
        let (source_ip, target_ip, site_ip_set) = match self.dedicated_of(ctx, user).await? {
            None => (ctx.source.ip, ctx.target.ip, None),
            Some(DedicatedIp { source_ip, target_ip: Some(target_ip) }) => {
                let account = AccountName::parse(user).context("stored user")?;
                let set = match crate::dedicated_ip::ensure_site_ip(&ctx.target.whm, &account, target_ip)
                    .await
                    .map_err(|err| classify!(err))?
                {
                    SiteIp::AlreadyThere => None,
                    SiteIp::Set { from } => Some(from),
                    SiteIp::NotOnTarget => {
                        return Err(StepError::Transient(anyhow!(
                            "account {user} is not listed on the target {}; setsiteip to {target_ip} waits",
                            ctx.target.name
                        )));
                    }
                };
                (source_ip, target_ip, set.map(|from| (from, target_ip)))
            }
            Some(DedicatedIp { target_ip: None, .. }) => {
                return Err(StepError::Permanent(anyhow!(
                    "account {user} is on a dedicated IP but has no target IP assigned (siirto assign-ip)"
                )));
            }
        };
        let mut mismatches = Vec::new();
        if ctx.playbook.verification.http_check {
            for row in &domains {
                let domain = DomainName::parse(&row.domain).context("stored domain")?;
                let timeout = ctx.playbook.verification.timeout;
                let target = fetch_site(&self.http, target_ip, ctx.target.http_port, &domain, timeout)
                    .await
                    .map_err(|err| StepError::Transient(err.context(format!("{domain} on the target"))))?;
                let source = fetch_site(&self.http, source_ip, ctx.source.http_port, &domain, timeout).await;
                match source {
                    Ok(source) if source == target => {}
                    Ok(source) => mismatches.push(format!(
                        "{domain}: source answered {} {:?}, target answered {} {:?}",
                        source.status, source.title, target.status, target.title
                    )),
                    // The source no longer answering is no reason to keep the customer on it;
                    // the target must answer with a success then.
                    Err(err) if (200..400).contains(&target.status) => {
                        warn!(%domain, error = %err, "source did not answer; target answers");
                    }
                    Err(err) => mismatches.push(format!(
                        "{domain}: source unreachable ({err:#}), target answered {}",
                        target.status
                    )),
                }
                let (source_https, target_https) =
                    ((source_ip, ctx.source.https_port), (target_ip, ctx.target.https_port));
                mismatches.extend(
                    crate::site_check::compare_https(source_https, target_https, &domain, timeout).await,
                );
            }
        }
        // The account, its domains and its mailboxes must exist on the target.
        let names: Vec<DomainName> = domains
            .iter()
            .map(|d| DomainName::parse(&d.domain))
            .collect::<Result<_, _>>()
            .context("stored domain")?;
        let account = AccountName::parse(user).context("stored user")?;
        let missing =
            crate::transfer_control::account_presence(&ctx.source.whm, &ctx.target.whm, &account, &names)
                .await
                .map_err(|err| classify!(err))?;
        mismatches.extend(missing);
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        // An operator's rollback may have come in while the sites were fetched.
        let current = tx.account_for_update(ctx.id.as_str(), user).await?.map(|row| account_state(&row));
        if !matches!(current, Some(Ok(ref now_state)) if *now_state == state) {
            tx.finish_job(lease, now).await?;
            return Ok(tx.commit().await?);
        }
        if let Some((from, to)) = site_ip_set {
            let from = from.map(|ip| ip.to_string());
            let detail = serde_json::json!({ "from": from, "to": to.to_string() });
            tx.append_event(&self.event(ctx, Some(user), None, "site_ip_set", detail)).await?;
        }
        let event = if mismatches.is_empty() {
            AccountEvent::VerifiedOnTarget
        } else {
            AccountEvent::VerificationFailed { evidence: mismatches.join("; ") }
        };
        let next = self.apply_account(&mut tx, ctx, user, &state, event).await?;
        if let AccountState::Verified { .. } = next {
            for row in &domains {
                let domain_state = domain_state(row)?;
                match domain_state {
                    DomainState::TtlLowered { .. } => {
                        self.apply_domain(&mut tx, ctx, row, &domain_state, DomainEvent::AccountVerified)
                            .await?;
                    }
                    // Not our DNS: the customer is told what to change (in the completion
                    // notice) and public DNS is polled until it shows the target.
                    DomainState::External { .. } => {
                        let event = DomainEvent::CustomerMustRepoint { new_value: target_ip.to_string() };
                        self.apply_domain(&mut tx, ctx, row, &domain_state, event).await?;
                        tx.schedule_job(&self.job(
                            ctx,
                            JobKind::PollExternal,
                            &row.domain,
                            serde_json::json!({ "user": user }),
                            now,
                            format!("poll_external:{}:{}", ctx.id, row.domain),
                        ))
                        .await?;
                    }
                    _ => {}
                }
            }
        }
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// Repoints the account's domains (one PATCH per zone) once their gates are open, then
    /// checks every own nameserver serves the target's address.
    async fn repoint(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let user = job.subject.as_str();
        if !self.lock_account_dns(ctx, lease, user).await? {
            return Ok(());
        }
        let Some((_, account_now)) =
            self.account_for_step(ctx, user, |s| matches!(s, AccountState::Verified { .. })).await?
        else {
            return self.finish(lease).await;
        };
        let gate = ctx.gate_policy();
        let now = self.now();
        let domains = self.store.domains_of(ctx.id.as_str(), user).await?;
        let states: Vec<DomainState> = domains.iter().map(domain_state).collect::<anyhow::Result<_>>()?;
        // The gate: every record of every domain of the account must have its gate open before
        // any of them moves; until then the job waits for the latest one.
        let latest_gate = states
            .iter()
            .filter_map(|state| match state {
                DomainState::VerifiedOnTarget { records, lowered_at } => {
                    Some(gate.domain_opens_at(*lowered_at, records))
                }
                _ => None,
            })
            .filter(|opens| *opens > now)
            .max();
        if let Some(opens) = latest_gate {
            debug!(%opens, "the TTL gate of the account's records is not open yet");
            let mut tx = self.store.begin_leased(lease, to_millis(now)).await?;
            tx.reschedule_job(lease, to_millis(opens)).await?;
            return Ok(tx.commit().await?);
        }
        // 1. Plan the batches, zone by zone, and check each against the safety threshold and
        //    the records recorded at the lowering, before anything is written.
        let (source, target) = (ctx.source_end(), ctx.target_end());
        let moves = ctx.account_moves(self.dedicated_of(ctx, user).await?.as_ref());
        let mut expected: HashMap<String, Ipv4Addr> = HashMap::new();
        let mut zones: BTreeMap<String, Vec<(&DomainRow, &DomainState)>> = BTreeMap::new();
        for (row, state) in domains.iter().zip(&states) {
            if let DomainState::VerifiedOnTarget { .. } = state {
                zones.entry(row.zone.clone()).or_default().push((row, state));
            }
        }
        let mut batches = Vec::new();
        let mut refusals = Vec::new();
        for (zone, members) in &zones {
            let zone_name = DomainName::parse(zone).context("stored zone")?;
            let zone_data = self.dns.zone(&zone_name).await.map_err(|err| classify!(err))?;
            // Only this zone's tracked domains: reading the whole migration's would make each
            // account's repoint cost O(all domains) on a 50,000-domain campaign.
            let zone_rows = self.store.domains_in_zone(ctx.id.as_str(), zone).await?;
            let mut changed = Vec::new();
            let mut planned = Vec::new();
            for (row, state) in members {
                let domain = DomainName::parse(&row.domain).context("stored domain")?;
                planned.extend(state.records().iter().cloned());
                if let Some(ip) = apex_address_after(&zone_data, &domain, &moves) {
                    expected.insert(row.domain.clone(), ip);
                }
                for rrset in records_to_change(&zone_data, &domain, &zone_rows, &moves) {
                    if let Some(new) = rewrite_rrset_moves(rrset, &moves) {
                        changed.push(new);
                    }
                }
                for record in state.records().iter().filter(|r| !r.created.is_empty()) {
                    if let Some(new) = created_rrset(&zone_data, record, ctx.playbook.dns.short_ttl) {
                        changed.push(new);
                    }
                }
            }
            if let Some(reason) =
                batch_refusal(&zone_data, &changed, &planned, ctx.playbook.dns.max_change_share)
            {
                refusals.push(format!("zone {zone}: {reason}"));
            }
            batches.push((zone_name, changed.into_iter().map(write_rrset).collect::<Vec<_>>()));
        }
        if !refusals.is_empty() {
            let reason = format!("repoint refused, nothing written: {}", refusals.join("; "));
            warn!(account = user, %reason, "safety threshold");
            let now = self.now_ms();
            let mut tx = self.store.begin_leased(lease, now).await?;
            self.hold_account(&mut tx, ctx, user, reason).await?;
            tx.finish_job(lease, now).await?;
            return Ok(tx.commit().await?);
        }
        // 2. Write: one PATCH per zone.
        for (zone_name, changes) in &batches {
            self.write_zone(zone_name, changes).await?;
        }
        let mut tx = self.store.begin_leased(lease, self.now_ms()).await?;
        let mut repointed = Vec::new();
        for (row, state) in domains.iter().zip(states) {
            let state = match state {
                DomainState::VerifiedOnTarget { .. } => {
                    self.apply_domain(&mut tx, ctx, row, &state, DomainEvent::Repointed).await?
                }
                other => other,
            };
            repointed.push((row, state));
        }
        tx.commit().await?;
        // 3. Verify on every own nameserver.
        for (row, state) in &repointed {
            if let DomainState::Repointed { records, .. } = state {
                let domain = DomainName::parse(&row.domain).context("stored domain")?;
                let wanted = Endpoint {
                    ip: expected.get(&row.domain).copied().unwrap_or(target.ip),
                    ..target.clone()
                };
                self.verify_served(&domain, records, &wanted, &source).await?;
            }
        }
        // 4. Route the mail still arriving at the source to the target (crate::mailsync).
        let routing = if ctx.playbook.mail.switch_routing {
            let switched: Vec<DomainName> = repointed
                .iter()
                .filter(|(_, state)| matches!(state, DomainState::Repointed { .. }))
                .map(|(row, _)| DomainName::parse(&row.domain).context("stored domain"))
                .collect::<anyhow::Result<_>>()?;
            let user_name = AccountName::parse(user).context("stored user")?;
            let change =
                crate::mailsync::set_routing(&ctx.source.whm, &user_name, &switched, MailRouting::Remote)
                    .await
                    .map_err(|err| classify!(err))?;
            Some(change)
        } else {
            None
        };
        // 5. Record, and restore the TTLs once the settle period has passed.
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        for (row, state) in &repointed {
            if let DomainState::Repointed { .. } = state {
                self.apply_domain(&mut tx, ctx, row, state, DomainEvent::ResolutionVerified).await?;
            }
        }
        // The operator may have rolled the account back while the PATCH was in flight (the
        // action takes no DNS lock): then the records stay as recorded, the rollback job (which
        // waits for our lock) points them back, and the account is not switched.
        let account_row = tx
            .account_for_update(ctx.id.as_str(), user)
            .await?
            .ok_or_else(|| anyhow!("account {user} is not in migration {}", ctx.id))?;
        let account_state_now = account_state(&account_row)?;
        if account_state_now != account_now {
            info!(
                account = user,
                state = account_state_now.name(),
                "the account changed during its repoint; not switched"
            );
            tx.finish_job(lease, now).await?;
            return Ok(tx.commit().await?);
        }
        if let Some(change) = routing {
            // Domains on external DNS keep local routing: their MX still names the source until
            // the customer changes it, and a source relaying to itself would bounce the mail.
            let kept_local: Vec<&str> = repointed
                .iter()
                .filter(|(_, s)| s.is_external())
                .map(|(row, _)| row.domain.as_str())
                .collect();
            tx.append_event(&self.event(
                ctx,
                Some(user),
                None,
                "mail_routing_switched",
                serde_json::json!({
                    "host": ctx.source.name,
                    "routing": MailRouting::Remote.as_str(),
                    "changed": change.changed,
                    "already": change.already,
                    "kept_local": kept_local,
                }),
            ))
            .await?;
        }
        self.apply_account(&mut tx, ctx, user, &account_now, AccountEvent::DomainsSwitched).await?;
        let due = now + ctx.playbook.schedule.settle_after.as_millis() as i64;
        tx.schedule_job(&self.job(
            ctx,
            JobKind::RestoreTtl,
            user,
            serde_json::json!({}),
            due,
            format!("restore_ttl:{}:{user}:{now}", ctx.id),
        ))
        .await?;
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// Checks that every own nameserver serves the domain at `now` rather than `before`: its A
    /// query answers exactly `now`'s address when the domain's own A record is among the changed
    /// records, and its AAAA answer holds `now`'s IPv6 address (if it has one) and not
    /// `before`'s when its own AAAA record is among them. A stale server is a transient failure
    /// carrying the evidence.
    async fn verify_served(
        &self,
        domain: &DomainName,
        records: &[ObservedRecord],
        now: &Endpoint,
        before: &Endpoint,
    ) -> StepResult {
        let apex = domain.fqdn();
        let changed =
            |rtype: &str| records.iter().any(|r| r.rtype == rtype && r.name.eq_ignore_ascii_case(&apex));
        if changed("A") {
            let expected = now.ip;
            match self.checker.verify_a(domain, expected).await.map_err(|err| classify!(err))? {
                Verification::Served => {}
                Verification::Stale { server, got } => {
                    return Err(StepError::Transient(anyhow!(
                        "{domain}: nameserver {server} still answers {got:?}, expected {expected}"
                    )));
                }
            }
        }
        if changed("AAAA") {
            for (server, got) in self.checker.aaaa_records(domain).await.map_err(|err| classify!(err))? {
                let missing = now.ipv6.is_some_and(|v6| !got.contains(&v6));
                let stale = before.ipv6.is_some_and(|v6| Some(v6) != now.ipv6 && got.contains(&v6));
                if missing || stale {
                    let expected =
                        now.ipv6.map_or_else(|| "no AAAA at the old address".to_owned(), |v6| v6.to_string());
                    return Err(StepError::Transient(anyhow!(
                        "{domain}: nameserver {server} still answers AAAA {got:?}, expected {expected}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Gives the changed records of an account's cut-over domains their original TTLs back,
    /// one PATCH per zone; records already at their original TTL are not sent.
    async fn restore_ttl(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let user = job.subject.as_str();
        if !self.lock_account_dns(ctx, lease, user).await? {
            return Ok(());
        }
        let domains = self.store.domains_of(ctx.id.as_str(), user).await?;
        let mut zones: BTreeMap<String, Vec<(DomainRow, DomainState)>> = BTreeMap::new();
        for row in domains {
            let state = domain_state(&row)?;
            if let DomainState::Done { .. } = state {
                zones.entry(row.zone.clone()).or_default().push((row, state));
            }
        }
        for (zone, members) in &zones {
            let zone_name = DomainName::parse(zone).context("stored zone")?;
            let zone_data = self.dns.zone(&zone_name).await.map_err(|err| classify!(err))?;
            let mut changes = Vec::new();
            for (_, state) in members {
                for record in state.records() {
                    if let Some(rrset) = zone_data.rrset(&record.name, &record.rtype)
                        && rrset.ttl != record.old_ttl
                    {
                        changes.push(RrsetChange::Replace(Rrset { ttl: record.old_ttl, ..rrset.clone() }));
                    }
                }
            }
            self.write_zone(&zone_name, &changes).await?;
        }
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        for members in zones.values() {
            for (row, state) in members {
                self.apply_domain(&mut tx, ctx, row, state, DomainEvent::TtlRestored).await?;
            }
        }
        tx.finish_job(lease, now).await?;
        tx.commit().await?;
        info!(account = user, "TTLs restored");
        Ok(())
    }

    /// Points a rolled-back account's records (or one domain's) back at the source, with the
    /// short TTL again where it had been restored (one PATCH per zone, only what differs), checks
    /// every own nameserver serves the source, and records each domain rolled back. The
    /// operator's action has already checked that the source holds the account and recorded
    /// who asked and why.
    async fn rollback(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let user = job.subject.as_str();
        if !self.lock_account_dns(ctx, lease, user).await? {
            return Ok(());
        }
        let payload: RollbackPayload = serde_json::from_str(&job.payload).context("rollback job payload")?;
        let short_ttl = ctx.playbook.dns.short_ttl;
        // The account's moves the other way round: assigned address back to the dedicated one.
        let (source, target) = (ctx.source_end(), ctx.target_end());
        let back: Vec<(Endpoint, Endpoint)> = ctx
            .account_moves(self.dedicated_of(ctx, user).await?.as_ref())
            .into_iter()
            .map(|(from, to)| (to, from))
            .collect();
        let mut expected: HashMap<String, Ipv4Addr> = HashMap::new();
        let mut zones: BTreeMap<String, Vec<(DomainRow, DomainState)>> = BTreeMap::new();
        for row in self.store.domains_of(ctx.id.as_str(), user).await? {
            if payload.domain.as_ref().is_some_and(|d| d != &row.domain) {
                continue;
            }
            let state = domain_state(&row)?;
            match state {
                DomainState::TtlLowered { .. }
                | DomainState::VerifiedOnTarget { .. }
                | DomainState::Repointed { .. }
                | DomainState::Done { .. }
                | DomainState::TtlRestored { .. } => {
                    zones.entry(row.zone.clone()).or_default().push((row, state))
                }
                DomainState::Pending
                | DomainState::TtlObserved { .. }
                | DomainState::RolledBack { .. }
                // Not our DNS: nothing of it was changed, nothing to point back.
                | DomainState::External { .. }
                | DomainState::AwaitingCustomer { .. }
                | DomainState::Propagated { .. } => {}
            }
        }
        for (zone, members) in &zones {
            let zone_name = DomainName::parse(zone).context("stored zone")?;
            let zone_data = self.dns.zone(&zone_name).await.map_err(|err| classify!(err))?;
            let mut changes = Vec::new();
            for (row, state) in members {
                if let Ok(domain) = DomainName::parse(&row.domain)
                    && let Some(ip) = apex_address_after(&zone_data, &domain, &back)
                {
                    expected.insert(row.domain.clone(), ip);
                }
                let relower = matches!(state, DomainState::TtlRestored { .. });
                for record in state.records() {
                    changes.extend(rollback_change(
                        &zone_data, record, &back, &target, &source, short_ttl, relower,
                    ));
                }
            }
            self.write_zone(&zone_name, &changes).await?;
        }
        for members in zones.values() {
            for (row, state) in members {
                let domain = DomainName::parse(&row.domain).context("stored domain")?;
                let wanted = Endpoint {
                    ip: expected.get(&row.domain).copied().unwrap_or(source.ip),
                    ..source.clone()
                };
                self.verify_served(&domain, state.records(), &wanted, &target).await?;
            }
        }
        // The source delivers the rolled-back domains' mail itself again: left on `remote`, it
        // would relay to the MX, which names the source again, and bounce.
        let routing = if ctx.playbook.mail.switch_routing {
            let back: Vec<DomainName> = zones
                .values()
                .flatten()
                .map(|(row, _)| DomainName::parse(&row.domain).context("stored domain"))
                .collect::<anyhow::Result<_>>()?;
            let user_name = AccountName::parse(user).context("stored user")?;
            Some(
                crate::mailsync::set_routing(&ctx.source.whm, &user_name, &back, MailRouting::Local)
                    .await
                    .map_err(|err| classify!(err))?,
            )
        } else {
            None
        };
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        if let Some(change) = routing {
            tx.append_event(&self.event(
                ctx,
                Some(user),
                None,
                "mail_routing_switched",
                serde_json::json!({
                    "host": ctx.source.name,
                    "routing": MailRouting::Local.as_str(),
                    "changed": change.changed,
                    "already": change.already,
                }),
            ))
            .await?;
        }
        for members in zones.values() {
            for (row, state) in members {
                let event = DomainEvent::RolledBack { reason: payload.reason.clone() };
                self.apply_domain(&mut tx, ctx, row, state, event).await?;
            }
        }
        tx.finish_job(lease, now).await?;
        tx.commit().await?;
        info!(account = user, domain = ?payload.domain, "rolled back to the source");
        Ok(())
    }

    /// Writes the completion notice to the outbox (one row, by its dedupe key) and schedules
    /// its sending.
    async fn queue_notice(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let user = job.subject.as_str();
        let Some((account, state)) =
            self.account_for_step(ctx, user, |s| matches!(s, AccountState::Switched { .. })).await?
        else {
            return self.finish(lease).await;
        };
        let domain_rows = self.store.domains_of(ctx.id.as_str(), user).await?;
        let mut external_records = Vec::new();
        for row in &domain_rows {
            external_records.extend(external_records_of(&row.domain, domain_state(row)?.records_to_change()));
        }
        let domains: Vec<String> = domain_rows.into_iter().map(|d| d.domain).collect();
        let target_ip =
            self.dedicated_of(ctx, user).await?.and_then(|d| d.target_ip).unwrap_or(ctx.target.ip);
        let context = serde_json::json!({
            "external_records": external_records,
            "migration": ctx.id.as_str(),
            "account": user,
            "contact_email": account.contact_email.clone().unwrap_or_default(),
            "main_domain": account.main_domain,
            "domains": domains,
            "source_host": ctx.source.name,
            "target_host": ctx.target.name,
            "target_ip": target_ip.to_string(),
        });
        let template = &ctx.playbook.notices.completion;
        let subject =
            crate::notify::render(&template.subject, &context).context("rendering the notice subject")?;
        let body = crate::notify::render(&template.body, &context).context("rendering the notice body")?;
        let recipients: Vec<String> = account.contact_email.iter().cloned().collect();
        let user_name = AccountName::parse(user).context("stored user")?;
        let dedupe_key = completion_notice_key(&ctx.id, &user_name);
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        let notice = crate::store::NewNotice {
            migration_id: ctx.id.to_string(),
            account: Some(user.to_owned()),
            kind: "completion".to_owned(),
            message_id: format!("<completion.{user}.{}@siirto>", ctx.id),
            dedupe_key,
            recipients: serde_json::to_string(&recipients).context("recipients")?,
            subject: subject.trim().to_owned(),
            body,
            created_at: now,
        };
        let (notice_id, dedupe) = match tx.enqueue_notice(&notice).await? {
            Some(id) => (id, format!("send_notice:{id}")),
            // Switched again after a rollback and a retry: the customer was told already. The
            // existing row stands; a fresh send job finds it sent, sends nothing and marks the
            // account notified-and-sent.
            None => {
                let id = self
                    .store
                    .outbox(ctx.id.as_str())
                    .await?
                    .into_iter()
                    .find(|n| n.dedupe_key == notice.dedupe_key)
                    .map(|n| n.id)
                    .ok_or_else(|| anyhow!("account {user}: the completion notice's row vanished"))?;
                (id, format!("send_notice:{id}:again:{now}"))
            }
        };
        self.apply_account(&mut tx, ctx, user, &state, AccountEvent::NoticeQueued { notice_id }).await?;
        tx.schedule_job(&self.job(
            ctx,
            JobKind::SendNotice,
            &notice_id.to_string(),
            serde_json::json!({}),
            now,
            dedupe,
        ))
        .await?;
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// Sends one outbox row through the channel with its stable Message-ID, then marks it sent.
    async fn send_notice(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let id: i64 = job.subject.parse().context("notice id")?;
        let notice =
            self.store.notice(id).await?.ok_or_else(|| anyhow!("notice {id} is not in the outbox"))?;
        if notice.sent_at.is_none() {
            let to: Vec<String> = serde_json::from_str(&notice.recipients).context("stored recipients")?;
            if to.is_empty() {
                return Err(StepError::Permanent(anyhow!("the account has no contact e-mail address")));
            }
            let outgoing = OutgoingNotice {
                message_id: notice.message_id.clone(),
                from: self.mail_from.clone(),
                to,
                subject: notice.subject.clone(),
                body: notice.body.clone(),
            };
            self.channel.send(&outgoing).await.map_err(|err| classify!(err))?;
        }
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        if notice.sent_at.is_none() {
            tx.mark_notice_sent(id, now).await?;
        }
        if let Some(user) = &notice.account
            && notice.kind == "completion"
            // Read through the transaction, never a second pool connection (see `Tx::account`).
            && let Some(account) = tx.account(ctx.id.as_str(), user).await?
        {
            let state = account_state(&account)?;
            if let AccountState::Notified { .. } = state {
                self.apply_account(&mut tx, ctx, user, &state, AccountEvent::NoticeSent).await?;
            }
        }
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// Asks every configured resolver for the A records of an external domain's changed names
    /// (the domain itself when none were seen): propagated when the domain's own name answers
    /// somewhere and no answer anywhere holds another address than the target's. Until then a
    /// due reminder is queued (one outbox row per reminder, by its dedupe key) and the job
    /// comes back after `dns.external_poll_interval`, or sooner for the next reminder.
    async fn poll_external(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let Some((user, row)) = self.external_job_domain(ctx, job).await? else {
            return self.finish(lease).await;
        };
        let user = user.as_str();
        let state = domain_state(&row)?;
        let DomainState::AwaitingCustomer { .. } = state else {
            return self.finish(lease).await;
        };
        let resolvers = self
            .public_dns
            .clone()
            .ok_or_else(|| StepError::transient(anyhow!("no resolvers are configured (dns.resolvers)")))?;
        let domain = DomainName::parse(&row.domain).context("stored domain")?;
        let target = self.dedicated_of(ctx, user).await?.and_then(|d| d.target_ip).unwrap_or(ctx.target.ip);
        let mut names: Vec<String> = state.records_to_change().iter().map(|r| r.name.clone()).collect();
        let apex = domain.fqdn();
        if !names.iter().any(|n| n.eq_ignore_ascii_case(&apex)) {
            names.insert(0, apex.clone());
        }
        names.dedup();
        let mut apex_answered = false;
        let mut stale = Vec::new();
        let mut unanswered = Vec::new();
        for name in &names {
            for (resolver, answer) in resolvers.a_records_everywhere(name).await {
                match answer {
                    Ok(addresses) => {
                        if name.eq_ignore_ascii_case(&apex) && !addresses.is_empty() {
                            apex_answered = true;
                        }
                        let others: Vec<String> =
                            addresses.iter().filter(|a| **a != target).map(ToString::to_string).collect();
                        if !others.is_empty() {
                            stale.push(format!("{resolver} answers {name} A {}", others.join(", ")));
                        }
                    }
                    // A resolver that gives no answer (an authoritative server that is not the
                    // domain's, a timeout) is no evidence either way.
                    Err(reason) => unanswered.push(format!("{resolver} {name}: {reason}")),
                }
            }
        }
        let propagated = apex_answered && stale.is_empty();
        let now = self.now();
        let now_ms = to_millis(now);
        let mut tx = self.store.begin_leased(lease, now_ms).await?;
        if propagated {
            self.apply_domain(&mut tx, ctx, &row, &state, DomainEvent::Propagated).await?;
            let mail = &ctx.playbook.mail;
            if mail.switch_routing || mail.final_sync {
                // Resolvers that cached the old records may send mail to the source until they
                // expire; their TTLs are the customer's DNS host's, unknown here.
                let due = ctx.gate_policy().opens_at(now, EXTERNAL_RECORDS_ASSUMED_TTL);
                tx.schedule_job(&self.job(
                    ctx,
                    JobKind::ExternalMail,
                    &row.domain,
                    serde_json::json!({ "user": user }),
                    to_millis(due),
                    format!("external_mail:{}:{}", ctx.id, row.domain),
                ))
                .await?;
            }
            tx.finish_job(lease, now_ms).await?;
            tx.commit().await?;
            info!(domain = %row.domain, "public DNS shows the target");
            return Ok(());
        }
        debug!(domain = %row.domain, ?stale, ?unanswered, "public DNS does not show the target yet");
        let every = ctx.playbook.dns.external_reminder_every;
        let mut state = state;
        if let Some(due) = state.reminder_due_at(every)
            && due <= now
            && let DomainState::AwaitingCustomer { reminded, .. } = &state
        {
            let n = reminded + 1;
            self.queue_reminder(&mut tx, ctx, &row, &state, n).await?;
            state = self.apply_domain(&mut tx, ctx, &row, &state, DomainEvent::Reminded).await?;
        }
        let mut next = now_ms + ctx.playbook.dns.external_poll_interval.as_millis() as i64;
        if let Some(due) = state.reminder_due_at(every) {
            next = next.min(to_millis(due).max(now_ms));
        }
        tx.reschedule_job(lease, next).await?;
        Ok(tx.commit().await?)
    }

    /// Writes reminder `n` of an external domain to the outbox (its dedupe key makes it one
    /// row however often this runs) and schedules its sending, inside `tx`.
    async fn queue_reminder(
        &self,
        tx: &mut Tx<'_>,
        ctx: &MigrationCtx,
        row: &DomainRow,
        state: &DomainState,
        n: u32,
    ) -> Result<(), StepError> {
        let user = row.user.as_str();
        let account = self
            .store
            .account(ctx.id.as_str(), user)
            .await?
            .ok_or_else(|| anyhow!("account {user} is not in migration {}", ctx.id))?;
        let target_ip =
            self.dedicated_of(ctx, user).await?.and_then(|d| d.target_ip).unwrap_or(ctx.target.ip);
        let context = serde_json::json!({
            "migration": ctx.id.as_str(),
            "account": user,
            "contact_email": account.contact_email.clone().unwrap_or_default(),
            "main_domain": account.main_domain,
            "domains": [row.domain.clone()],
            "source_host": ctx.source.name,
            "target_host": ctx.target.name,
            "target_ip": target_ip.to_string(),
            "external_records": external_records_of(&row.domain, state.records_to_change()),
        });
        let template = &ctx.playbook.notices.reminder;
        let subject =
            crate::notify::render(&template.subject, &context).context("rendering the reminder subject")?;
        let body = crate::notify::render(&template.body, &context).context("rendering the reminder body")?;
        let recipients: Vec<String> = account.contact_email.iter().cloned().collect();
        let domain = DomainName::parse(&row.domain).context("stored domain")?;
        let now = self.now_ms();
        let notice = crate::store::NewNotice {
            migration_id: ctx.id.to_string(),
            account: Some(user.to_owned()),
            kind: "reminder".to_owned(),
            message_id: format!("<reminder.{n}.{}.{}@siirto>", row.domain, ctx.id),
            dedupe_key: reminder_notice_key(&ctx.id, &domain, n),
            recipients: serde_json::to_string(&recipients).context("recipients")?,
            subject: subject.trim().to_owned(),
            body,
            created_at: now,
        };
        // Already queued by an earlier run that crashed before recording: the row stands and
        // its send job was scheduled in the same transaction.
        if let Some(id) = tx.enqueue_notice(&notice).await? {
            tx.schedule_job(&self.job(
                ctx,
                JobKind::SendNotice,
                &id.to_string(),
                serde_json::json!({}),
                now,
                format!("send_notice:{id}"),
            ))
            .await?;
        }
        Ok(())
    }

    /// Moves the migration to cut over once every account arrived or is held.
    async fn settle(&self, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
        let now = self.now_ms();
        let accounts = self.store.accounts(ctx.id.as_str()).await?;
        let mut arrived = 0u32;
        let mut held = 0u32;
        for row in &accounts {
            match account_state(row)? {
                AccountState::Done { .. } => arrived += 1,
                AccountState::Held { .. } | AccountState::RolledBack { .. } => held += 1,
                _ => {}
            }
        }
        let mut tx = self.store.begin_leased(lease, now).await?;
        if (arrived + held) as usize == accounts.len()
            && matches!(ctx.state, MigrationState::Transferring { .. })
        {
            self.apply_migration(&mut tx, ctx, &ctx.state, MigrationEvent::AccountsSettled { arrived, held })
                .await?;
            info!(migration = %ctx.id, arrived, held, "every account settled");
        }
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// The final delta sync of an account (crate::mailsync): once every changed record's old
    /// TTL (plus the margin) has passed since the switch, rsync on the target pulls the
    /// account's mail (and, per playbook, web root) from the source.
    async fn sync_mail(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let user = job.subject.as_str();
        let Some((_, state)) =
            self.account_for_step(ctx, user, |s| matches!(s, AccountState::SyncingMail { .. })).await?
        else {
            return self.finish(lease).await;
        };
        let AccountState::SyncingMail { switched_at, syncs } = state else {
            return self.finish(lease).await;
        };
        if syncs == 0 {
            // Mail may land on the source until every resolver has let the old MX and A
            // records expire: the same gate as the repoint's, counted from the switch.
            let records: Vec<ObservedRecord> = self
                .store
                .domains_of(ctx.id.as_str(), user)
                .await?
                .iter()
                .map(domain_state)
                .collect::<anyhow::Result<Vec<_>>>()?
                .iter()
                .flat_map(|d| d.records().to_vec())
                .collect();
            let opens = ctx.gate_policy().domain_opens_at(switched_at, &records);
            if opens > self.now() {
                debug!(%opens, "the old TTL has not passed since the switch; the mail sync waits");
                let mut tx = self.store.begin_leased(lease, self.now_ms()).await?;
                tx.reschedule_job(lease, to_millis(opens)).await?;
                return Ok(tx.commit().await?);
            }
        } else {
            // A sync again: begin at least two seconds after the last one, so a delivery the
            // mail log (whole seconds) places near the last sync's start is not counted again.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let (source_ssh, target_ssh) = self.ssh_of(ctx)?;
        let user_name = AccountName::parse(user).context("stored user")?;
        let started_at = self.now();
        let hosts = crate::mailsync::Hosts {
            source: (ctx.source.name.as_str(), source_ssh),
            target: (ctx.target.name.as_str(), target_ssh),
        };
        let synced = crate::mailsync::delta_sync(hosts, &user_name, ctx.playbook.mail.sync)
            .await
            .map_err(|err| classify!(err))?;
        info!(account = user, ?synced, "final delta sync done");
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        self.apply_account(&mut tx, ctx, user, &state, AccountEvent::MailSynced { started_at, synced })
            .await?;
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// The mail follow-up of a propagated external domain: routing on the source set to remote
    /// (the source now relays stragglers to the target by the new MX), then, with the final
    /// sync on, a delta sync of the account's mail, which brings what landed on the source
    /// while the customer's records still pointed there. Both are idempotent (routing checked
    /// first, rsync `--update` without `--delete`), so a rerun after a crash is harmless.
    async fn external_mail(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let Some((user, row)) = self.external_job_domain(ctx, job).await? else {
            return self.finish(lease).await;
        };
        let user = user.as_str();
        let DomainState::Propagated { .. } = domain_state(&row)? else {
            // Rolled back, or gone from the migration: nothing to follow up.
            return self.finish(lease).await;
        };
        let domain = DomainName::parse(&job.subject).context("stored domain")?;
        let user_name = AccountName::parse(user).context("stored user")?;
        let mail = &ctx.playbook.mail;
        let routing = if mail.switch_routing {
            let change = crate::mailsync::set_routing(
                &ctx.source.whm,
                &user_name,
                std::slice::from_ref(&domain),
                MailRouting::Remote,
            )
            .await
            .map_err(|err| classify!(err))?;
            Some(change)
        } else {
            None
        };
        let synced = if mail.final_sync {
            let (source_ssh, target_ssh) = self.ssh_of(ctx)?;
            // A delivery the source accepted just before the switch finishes writing first.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let hosts = crate::mailsync::Hosts {
                source: (ctx.source.name.as_str(), source_ssh),
                target: (ctx.target.name.as_str(), target_ssh),
            };
            let synced = crate::mailsync::delta_sync(hosts, &user_name, mail.sync)
                .await
                .map_err(|err| classify!(err))?;
            Some(synced)
        } else {
            None
        };
        info!(account = user, domain = %domain, ?routing, ?synced, "external domain's mail followed up");
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        tx.append_event(&self.event(
            ctx,
            Some(user),
            Some(domain.as_str()),
            "external_mail_followed_up",
            serde_json::json!({
                "host": ctx.source.name,
                "routing": routing.as_ref().map(|_| MailRouting::Remote.as_str()),
                "changed": routing.as_ref().map(|c| c.changed.clone()),
                "synced": synced,
            }),
        ))
        .await?;
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// The user (from the payload) and the domain row (the subject) of a per-domain job on an
    /// external domain; `None` when the domain is no longer in the migration.
    async fn external_job_domain(
        &self,
        ctx: &MigrationCtx,
        job: &JobRow,
    ) -> Result<Option<(String, DomainRow)>, StepError> {
        #[derive(Deserialize)]
        struct Payload {
            user: String,
        }
        let payload: Payload =
            serde_json::from_str(&job.payload).with_context(|| format!("{} payload", job.kind))?;
        let row = self
            .store
            .domains_of(ctx.id.as_str(), &payload.user)
            .await?
            .into_iter()
            .find(|row| row.domain == job.subject);
        Ok(row.map(|row| (payload.user, row)))
    }

    /// Reads the source's mail log for local deliveries to the account's switched domains and
    /// records the evidence; the pure core decides: done, sync again, or hold.
    async fn check_mail(&self, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
        let user = job.subject.as_str();
        let Some((_, state)) =
            self.account_for_step(ctx, user, |s| matches!(s, AccountState::CheckingMail { .. })).await?
        else {
            return self.finish(lease).await;
        };
        let AccountState::CheckingMail { switched_at, last_sync_started_at, .. } = state else {
            return self.finish(lease).await;
        };
        // Only the domains whose routing was switched: an external domain's mail lands on the
        // source until its customer repoints it, which is expected, not stranded.
        let mut domains = Vec::new();
        for row in self.store.domains_of(ctx.id.as_str(), user).await? {
            if !domain_state(&row)?.is_external() {
                domains.push(DomainName::parse(&row.domain).context("stored domain")?);
            }
        }
        let (source_ssh, _) = self.ssh_of(ctx)?;
        let evidence = crate::mailsync::read_evidence(
            (ctx.source.name.as_str(), source_ssh),
            &domains,
            || self.now(),
            switched_at,
            last_sync_started_at,
        )
        .await
        .map_err(|err| classify!(err))?;
        info!(account = user, ?evidence, "mail log read");
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        self.apply_account(&mut tx, ctx, user, &state, AccountEvent::MailChecked { evidence }).await?;
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }

    /// Both hosts' SSH settings, or a permanent error saying which host lacks them.
    fn ssh_of<'c>(
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
    async fn account_for_step(
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
    async fn dedicated_of(&self, ctx: &MigrationCtx, user: &str) -> Result<Option<DedicatedIp>, StepError> {
        match self.store.dedicated_ip(ctx.id.as_str(), user).await? {
            Some(row) => Ok(Some(DedicatedIp::from_row(&row)?)),
            None => Ok(None),
        }
    }

    /// Every dedicated-IP account of the migration, by user.
    async fn dedicated_all(&self, ctx: &MigrationCtx) -> Result<HashMap<String, DedicatedIp>, StepError> {
        let mut all = HashMap::new();
        for row in self.store.dedicated_ips(ctx.id.as_str()).await? {
            all.insert(row.user.clone(), DedicatedIp::from_row(&row)?);
        }
        Ok(all)
    }

    async fn finish(&self, lease: &Lease) -> StepResult {
        let now = self.now_ms();
        let mut tx = self.store.begin_leased(lease, now).await?;
        tx.finish_job(lease, now).await?;
        Ok(tx.commit().await?)
    }
}

/// The adapters a config names.
pub struct ConfiguredAdapters {
    /// WHM clients and addresses by host name.
    pub hosts: BTreeMap<String, HostRuntime>,
    /// The DNS provider.
    pub dns: Arc<dyn DnsProvider>,
    /// The nameserver checker.
    pub checker: Arc<Checker>,
    /// The notice channel.
    pub channel: Arc<dyn Channel>,
}

/// Builds the adapters from a validated config.
pub fn adapters_from_config(config: &Config) -> anyhow::Result<ConfiguredAdapters> {
    let mut hosts = BTreeMap::new();
    for (name, host) in &config.hosts {
        let whm = WhmClient::new(
            host.whm_url.clone(),
            host.token.clone(),
            host.tls.clone(),
            Duration::from_secs(60),
        )
        .with_context(|| format!("host {name}: WHM client"))?;
        hosts.insert(
            name.clone(),
            HostRuntime {
                name: name.clone(),
                whm,
                ip: host.ip,
                ipv6: host.ipv6,
                http_port: host.http_port,
                https_port: host.https_port,
                hostname: host
                    .whm_url
                    .host_str()
                    .filter(|h| !h.starts_with('[') && h.parse::<std::net::IpAddr>().is_err())
                    .map(|h| format!("{}.", h.to_ascii_lowercase())),
                ssh: host.ssh.clone(),
            },
        );
    }
    let dns: Arc<dyn DnsProvider> = match &config.dns.provider {
        crate::config::DnsProviderConfig::PowerDns { api_url, api_key, server_id, axfr_server } => {
            let client = PowerDns::new(api_url.clone(), api_key.clone(), server_id.clone())
                .context("PowerDNS client")?;
            Arc::new(match axfr_server {
                Some(server) => client.with_axfr_reads(*server),
                None => client,
            })
        }
        crate::config::DnsProviderConfig::Rfc2136 { server, tsig, zones, max_records_per_type } => Arc::new(
            crate::dns::Rfc2136::new(*server, tsig.clone(), zones.clone())
                .context("RFC 2136 client")?
                .with_max_records_per_type(*max_records_per_type),
        ),
    };
    let checker = Arc::new(Checker::new(config.dns.nameservers.clone()).context("DNS checker")?);
    let channel = crate::notify::channel_from_config(&config.mail).context("notice channel")?;
    Ok(ConfiguredAdapters { hosts, dns, checker, channel })
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

/// Where a host's records point: its address and, when known, its host name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    ip: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    /// Absolute, lower case, with the trailing dot.
    hostname: Option<String>,
}

/// The payload of a rollback job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackPayload {
    /// The one domain rolled back, or `None` for the whole account.
    pub domain: Option<String>,
    /// Why, as the operator gave it.
    pub reason: String,
}

/// Zones with fewer rrsets than this are exempt from the change-share threshold (octoDNS's
/// `MIN_EXISTING_RECORDS`): moving a small zone's site changes most of it by nature.
const THRESHOLD_MIN_RRSETS: usize = 10;

/// What becomes of one record that points at `from` when it moves to `to`: `Some(Some(new))`
/// its new content, `Some(None)` removed (an AAAA at `from` when `to` has no IPv6: it must not
/// keep pointing at the old server), `None` when the record points elsewhere (and so is never
/// touched):
/// - `A` equal to `from`'s address;
/// - `AAAA` equal to `from`'s IPv6 address;
/// - `TXT` SPF (`v=spf1`) with an `ip4:` (or `ip6:`) mechanism for `from`'s address (that token
///   is rewritten, or dropped when `to` has no IPv6);
/// - `MX` and `CNAME` whose target is `from`'s host name (never an MX at a spam filter or a
///   third party's mail server).
fn rewrite_record(rtype: &str, content: &str, from: &Endpoint, to: &Endpoint) -> Option<Option<String>> {
    match rtype {
        "A" => (content == from.ip.to_string()).then(|| Some(to.ip.to_string())),
        "AAAA" => {
            let from_v6 = from.ipv6?;
            (content.trim().parse::<Ipv6Addr>().ok()? == from_v6).then(|| to.ipv6.map(|v6| v6.to_string()))
        }
        "TXT" => rewrite_spf(content, from, to).map(Some),
        "MX" => {
            let (from_host, to_host) = (from.hostname.as_deref()?, to.hostname.as_deref()?);
            let (priority, exchange) = content.split_once(' ')?;
            exchange.trim().eq_ignore_ascii_case(from_host).then(|| Some(format!("{priority} {to_host}")))
        }
        "CNAME" => {
            let (from_host, to_host) = (from.hostname.as_deref()?, to.hostname.as_deref()?);
            content.trim().eq_ignore_ascii_case(from_host).then(|| Some(to_host.to_owned()))
        }
        _ => None,
    }
}

/// Rewrites the `ip4:FROM` (or `ip4:FROM/32`) and `ip6:FROM6` (or `/128`) mechanisms of an SPF
/// TXT record to `to`'s addresses, keeping everything else (quotes, qualifiers' neighbours,
/// other mechanisms) as it is. An `ip6:` mechanism for `from` is dropped when `to` has no IPv6
/// (mail from the old server's address must not stay authorised).
fn rewrite_spf(content: &str, from: &Endpoint, to: &Endpoint) -> Option<String> {
    if !content.to_ascii_lowercase().contains("v=spf1") {
        return None;
    }
    let mut changed = false;
    let mut tokens: Vec<String> = Vec::new();
    // Quotes of a dropped token that open the next one.
    let mut pending_open = String::new();
    for token in content.split(' ') {
        let start = token.len() - token.trim_start_matches('"').len();
        let end = token.trim_end_matches('"').len();
        if start >= end {
            tokens.push(token.to_owned());
            continue;
        }
        let core = &token[start..end];
        // The mechanism with an optional qualifier (`+ip4:`, `~ip6:`, …).
        let (qualifier, mechanism) = match core.chars().next() {
            Some(q @ ('+' | '-' | '~' | '?')) => (q.to_string(), &core[1..]),
            _ => (String::new(), core),
        };
        let lower = mechanism.to_ascii_lowercase();
        let replacement = if let Some(rest) = lower.strip_prefix("ip4:") {
            let (address, suffix) = rest.split_once('/').map_or((rest, ""), |(a, _)| (a, "/32"));
            let exact = suffix.is_empty() || rest.ends_with("/32");
            (exact && address.parse::<Ipv4Addr>().ok() == Some(from.ip))
                .then(|| Some(format!("{qualifier}ip4:{}{suffix}", to.ip)))
        } else if let Some(rest) = lower.strip_prefix("ip6:") {
            let (address, suffix) = rest.split_once('/').map_or((rest, ""), |(a, _)| (a, "/128"));
            let exact = suffix.is_empty() || rest.ends_with("/128");
            (exact && from.ipv6.is_some() && address.parse::<Ipv6Addr>().ok() == from.ipv6)
                .then(|| to.ipv6.map(|v6| format!("{qualifier}ip6:{v6}{suffix}")))
        } else {
            None
        };
        let token = match replacement {
            None => token.to_owned(),
            Some(Some(new)) => {
                changed = true;
                format!("{}{new}{}", &token[..start], &token[end..])
            }
            Some(None) => {
                // Dropped: its quotes move to its neighbours, so the string stays well formed.
                changed = true;
                let (open, close) = (&token[..start], &token[end..]);
                match tokens.last_mut() {
                    Some(previous) => previous.push_str(close),
                    None => pending_open.push_str(close),
                }
                pending_open.push_str(open);
                continue;
            }
        };
        tokens.push(format!("{}{token}", std::mem::take(&mut pending_open)));
    }
    if !pending_open.is_empty() {
        match tokens.last_mut() {
            Some(previous) => previous.push_str(&pending_open),
            None => tokens.push(pending_open),
        }
    }
    changed.then(|| tokens.join(" "))
}

/// The rrset with every record pointing at `from` pointing at `to` (duplicates folded; records
/// with no counterpart at `to` left out, so the result may be empty), or `None` when no record
/// of it points at `from`.
fn rewrite_rrset(rrset: &Rrset, from: &Endpoint, to: &Endpoint) -> Option<Rrset> {
    let mut changed = false;
    let mut records: Vec<String> = Vec::with_capacity(rrset.records.len());
    for content in &rrset.records {
        let content = match rewrite_record(&rrset.rtype, content, from, to) {
            Some(Some(new)) => {
                changed = true;
                new
            }
            Some(None) => {
                changed = true;
                continue;
            }
            None => content.clone(),
        };
        if !records.contains(&content) {
            records.push(content);
        }
    }
    changed.then(|| Rrset { records, ..rrset.clone() })
}

/// The change that writes `rrset`: a replacement, or a deletion when it has no records left.
fn write_rrset(rrset: Rrset) -> RrsetChange {
    if rrset.records.is_empty() {
        RrsetChange::Delete { name: rrset.name, rtype: rrset.rtype }
    } else {
        RrsetChange::Replace(rrset)
    }
}

/// The values of `rrset` that the move from `from` to `to` removes, or rewrites so that moving
/// back would not give them again (an SPF record losing its `ip6:` token): what a rollback
/// must restore as they were.
fn removed_values(rrset: &Rrset, from: &Endpoint, to: &Endpoint) -> Vec<String> {
    rrset
        .records
        .iter()
        .filter(|content| match rewrite_record(&rrset.rtype, content, from, to) {
            Some(None) => true,
            Some(Some(moved)) => round_trip(&rrset.rtype, &moved, to, from) != **content,
            None => false,
        })
        .cloned()
        .collect()
}

/// `content` moved from `from` to `to` (itself when it does not point at `from`).
fn round_trip(rtype: &str, content: &str, from: &Endpoint, to: &Endpoint) -> String {
    match rewrite_record(rtype, content, from, to) {
        Some(Some(moved)) => moved,
        Some(None) | None => content.to_owned(),
    }
}

/// The zone's negative-caching TTL, min(SOA TTL, SOA MINIMUM) (RFC 2308 §5): how long a resolver
/// may remember that a name has no record of a type. A zone without a readable SOA gets three
/// hours, the top of RFC 2308's recommended range, so a created record is never gated too early.
fn negative_ttl(zone: &Zone) -> u32 {
    const FALLBACK: u32 = 10_800;
    let Some(soa) = zone.rrset(&zone.name.fqdn(), "SOA") else { return FALLBACK };
    let minimum = soa.records.first().and_then(|r| r.split_whitespace().nth(6)?.parse::<u32>().ok());
    minimum.map_or(FALLBACK, |minimum| minimum.min(soa.ttl))
}

/// The AAAA records to create with `target_v6` for a domain whose A rrsets `moving` move: one
/// for each such name that has no AAAA rrset yet (a name with AAAA records elsewhere keeps them
/// and gets none), gated by the zone's negative TTL and later given its A record's TTL.
fn aaaa_to_create(zone: &Zone, moving: &[&Rrset], target_v6: Ipv6Addr) -> Vec<ObservedRecord> {
    let negative = negative_ttl(zone);
    moving
        .iter()
        .filter(|r| r.rtype == "A" && zone.rrset(&r.name, "AAAA").is_none())
        .map(|r| ObservedRecord {
            name: r.name.clone(),
            rtype: "AAAA".into(),
            old_ttl: r.ttl,
            created: vec![target_v6.to_string()],
            negative_ttl: Some(negative),
            ..ObservedRecord::default()
        })
        .collect()
}

/// The rrset a created record must be written as, given what the zone holds at its name: its
/// values added to the rrset (with the short TTL when the rrset is new), or `None` when they
/// are all there already.
fn created_rrset(zone: &Zone, record: &ObservedRecord, short_ttl: u32) -> Option<Rrset> {
    let mut rrset = zone.rrset(&record.name, &record.rtype).cloned().unwrap_or_else(|| Rrset {
        name: record.name.clone(),
        rtype: record.rtype.clone(),
        ttl: short_ttl,
        records: Vec::new(),
    });
    let missing: Vec<String> =
        record.created.iter().filter(|v| !rrset.records.contains(v)).cloned().collect();
    if missing.is_empty() {
        return None;
    }
    rrset.records.extend(missing);
    Some(rrset)
}

/// The change a rollback makes to one recorded record: what points at the target points at the
/// source again (`back`: the account's moves reversed), removed values come back and created ones go (they have no source
/// counterpart); the short TTL when `relower` (its TTL had been restored) or when the rrset is
/// written anew. `None` when the zone already holds exactly that.
fn rollback_change(
    zone: &Zone,
    record: &ObservedRecord,
    back: &[(Endpoint, Endpoint)],
    target: &Endpoint,
    source: &Endpoint,
    short_ttl: u32,
    relower: bool,
) -> Option<RrsetChange> {
    let current = zone.rrset(&record.name, &record.rtype);
    let mut wanted = match current {
        Some(current) => rewrite_rrset_moves(current, back).unwrap_or_else(|| current.clone()),
        None => Rrset {
            name: record.name.clone(),
            rtype: record.rtype.clone(),
            ttl: short_ttl,
            records: Vec::new(),
        },
    };
    wanted.records.retain(|v| !record.created.contains(v));
    for original in &record.removed {
        // What the original became at the target and then back here, if anything: replaced
        // by the original itself.
        let there = match rewrite_record(&record.rtype, original, source, target) {
            Some(Some(moved)) => Some(moved),
            Some(None) | None => None,
        };
        let back = there.map(|moved| round_trip(&record.rtype, &moved, target, source));
        match back.and_then(|back| wanted.records.iter().position(|v| *v == back)) {
            Some(at) => wanted.records[at] = original.clone(),
            None if !wanted.records.contains(original) => wanted.records.push(original.clone()),
            None => {}
        }
        wanted.records.dedup();
    }
    if relower && wanted.ttl > short_ttl {
        wanted.ttl = short_ttl;
    }
    match current {
        Some(current) if *current == wanted => None,
        None if wanted.records.is_empty() => None,
        _ => Some(write_rrset(wanted)),
    }
}

/// The rrset with every record pointing at one of the moves' `from` pointing at its `to`,
/// the moves applied in order (see [`rewrite_rrset`]), or `None` when no record matched.
fn rewrite_rrset_moves(rrset: &Rrset, moves: &[(Endpoint, Endpoint)]) -> Option<Rrset> {
    let mut current: Option<Rrset> = None;
    for (from, to) in moves {
        if let Some(new) = rewrite_rrset(current.as_ref().unwrap_or(rrset), from, to) {
            current = Some(new);
        }
    }
    current
}

/// The address the domain's own A record will hold once `moves` are applied (its first
/// record), if it has one: what every own nameserver must then answer.
fn apex_address_after(zone: &Zone, domain: &DomainName, moves: &[(Endpoint, Endpoint)]) -> Option<Ipv4Addr> {
    let rrset = zone.rrset(&domain.fqdn(), "A")?;
    let after = rewrite_rrset_moves(rrset, moves).unwrap_or_else(|| rrset.clone());
    after.records.first()?.parse().ok()
}

/// The rrsets of `domain` that will change by `moves`: its own name and the names directly
/// below it that are not tracked domains of their own, with a record pointing at one of the
/// moves' `from` (see [`rewrite_record`]).
fn records_to_change<'z>(
    zone: &'z Zone,
    domain: &DomainName,
    tracked: &[DomainRow],
    moves: &[(Endpoint, Endpoint)],
) -> Vec<&'z Rrset> {
    let own = domain.fqdn();
    let suffix = format!(".{own}");
    zone.rrsets
        .iter()
        .filter(|rrset| {
            let name = rrset.name.to_ascii_lowercase();
            if name == own {
                return true;
            }
            let Some(label) = name.strip_suffix(&suffix) else { return false };
            // Only one level down, and not a domain tracked on its own (a subdomain account).
            !label.contains('.') && !tracked.iter().any(|t| format!("{}.", t.domain) == name)
        })
        .filter(|rrset| rewrite_rrset_moves(rrset, moves).is_some())
        .collect()
}

/// Why a repoint batch for one zone must not be written, if it must not (octoDNS's safety
/// threshold): it changes a record the plan did not record at the lowering (whose TTL was
/// therefore never lowered), or more than `max_share` of a zone of at least
/// [`THRESHOLD_MIN_RRSETS`] rrsets.
fn batch_refusal(
    zone: &Zone,
    changed: &[Rrset],
    planned: &[ObservedRecord],
    max_share: f64,
) -> Option<String> {
    let unplanned: Vec<String> = changed
        .iter()
        .filter(|c| !planned.iter().any(|p| p.name.eq_ignore_ascii_case(&c.name) && p.rtype == c.rtype))
        .map(|c| format!("{} {}", c.name, c.rtype))
        .collect();
    if !unplanned.is_empty() {
        return Some(format!(
            "it would change {} that the plan did not list (their TTL was never lowered)",
            unplanned.join(", ")
        ));
    }
    let total = zone.rrsets.len();
    if total >= THRESHOLD_MIN_RRSETS && changed.len() as f64 > max_share * total as f64 {
        return Some(format!(
            "it would change {} of the zone's {total} rrsets, more than the playbook's dns.max_change_share of {max_share}",
            changed.len()
        ));
    }
    None
}

/// The notice variable `external_records`: one entry per record the customer must change.
fn external_records_of(domain: &str, changes: &[RecordChange]) -> Vec<serde_json::Value> {
    changes
        .iter()
        .map(|c| {
            serde_json::json!({
                "domain": domain,
                "name": c.name,
                "type": c.rtype,
                "old_value": c.old_value,
                "new_value": c.new_value,
            })
        })
        .collect()
}

/// Parses an account row's stored state.
pub fn account_state(row: &AccountRow) -> anyhow::Result<AccountState> {
    serde_json::from_str(&row.data)
        .with_context(|| format!("account {}: stored state is unreadable", row.user))
}

/// Parses a domain row's stored state.
pub fn domain_state(row: &DomainRow) -> anyhow::Result<DomainState> {
    serde_json::from_str(&row.data)
        .with_context(|| format!("domain {}: stored state is unreadable", row.domain))
}

/// Parses a migration row's stored state.
pub fn migration_state(row: &MigrationRow) -> anyhow::Result<MigrationState> {
    serde_json::from_str(&row.data)
        .with_context(|| format!("migration {}: stored state is unreadable", row.id))
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

    #[test]
    fn job_kinds_round_trip() {
        for kind in [JobKind::LowerTtl, JobKind::Settle, JobKind::SendNotice] {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(JobKind::parse("nope"), None);
    }

    fn rr(name: &str, rtype: &str, content: &str) -> Rrset {
        Rrset { name: name.into(), rtype: rtype.into(), ttl: 3600, records: vec![content.into()] }
    }

    fn ends() -> (Endpoint, Endpoint) {
        (
            Endpoint {
                ip: "127.0.0.2".parse().unwrap(),
                ipv6: None,
                hostname: Some("old1.example.net.".into()),
            },
            Endpoint {
                ip: "127.0.0.3".parse().unwrap(),
                ipv6: None,
                hostname: Some("new1.example.net.".into()),
            },
        )
    }

    #[test]
    fn records_to_change_picks_own_names_pointing_at_the_source() {
        let zone = Zone {
            name: DomainName::parse("kukka.test").unwrap(),
            rrsets: vec![
                rr("kukka.test.", "A", "127.0.0.2"),
                rr("www.kukka.test.", "A", "127.0.0.2"),
                rr("elsewhere.kukka.test.", "A", "192.0.2.7"),
                rr("kukka.test.", "MX", "10 mail.kukka.test."),
                rr("kukka.test.", "TXT", "\"v=spf1 ip4:127.0.0.2 include:_spf.example.com -all\""),
                rr("_dmarc.kukka.test.", "TXT", "\"v=DMARC1; p=none\""),
                rr("old.kukka.test.", "CNAME", "old1.example.net."),
                rr("legacy.kukka.test.", "MX", "10 old1.example.net."),
                rr("filtered.kukka.test.", "MX", "10 mx1.spamfilter.example."),
                rr("a.b.kukka.test.", "A", "127.0.0.2"),
                rr("shop.kukka.test.", "A", "127.0.0.2"),
            ],
        };
        let row = |d: &str| DomainRow {
            migration_id: "m".into(),
            domain: d.into(),
            user: "kukka".into(),
            zone: "kukka.test".into(),
            state: "pending".into(),
            data: "{}".into(),
            updated_at: 0,
        };
        let tracked = vec![row("kukka.test"), row("shop.kukka.test")];
        let (source, target) = ends();
        let picked = records_to_change(
            &zone,
            &DomainName::parse("kukka.test").unwrap(),
            &tracked,
            &[(source.clone(), target.clone())],
        );
        let names: Vec<(&str, &str)> = picked.iter().map(|r| (r.name.as_str(), r.rtype.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("kukka.test.", "A"),
                ("www.kukka.test.", "A"),
                ("kukka.test.", "TXT"),
                ("old.kukka.test.", "CNAME"),
                ("legacy.kukka.test.", "MX"),
            ]
        );
        // Without host names, MX and CNAME records are never touched.
        let bare = |e: &Endpoint| Endpoint { ip: e.ip, ipv6: None, hostname: None };
        let picked = records_to_change(
            &zone,
            &DomainName::parse("kukka.test").unwrap(),
            &tracked,
            &[(bare(&source), bare(&target))],
        );
        assert_eq!(picked.len(), 3);
    }

    #[test]
    fn rewrites_only_what_points_at_the_source() {
        let (source, target) = ends();
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("A", "127.0.0.2", Some("127.0.0.3")),
            ("A", "127.0.0.20", None),
            ("TXT", "\"v=spf1 ip4:127.0.0.2 mx -all\"", Some("\"v=spf1 ip4:127.0.0.3 mx -all\"")),
            ("TXT", "\"v=spf1 mx ip4:127.0.0.2/32\"", Some("\"v=spf1 mx ip4:127.0.0.3/32\"")),
            ("TXT", "\"v=spf1 ip4:127.0.0.22 -all\"", None),
            ("TXT", "\"v=spf1 ip4:127.0.0.0/24 -all\"", None),
            ("TXT", "\"google-site-verification=ip4:127.0.0.2\"", None),
            ("MX", "10 old1.example.net.", Some("10 new1.example.net.")),
            ("MX", "10 mx1.spamfilter.example.", None),
            ("MX", "10 mail.kukka.test.", None),
            ("CNAME", "OLD1.example.net.", Some("new1.example.net.")),
            ("CNAME", "cdn.example.com.", None),
            ("AAAA", "::1", None),
        ];
        for (rtype, content, expected) in cases {
            assert_eq!(
                rewrite_record(rtype, content, &source, &target).map(Option::unwrap),
                expected.map(str::to_owned),
                "{rtype} {content}"
            );
        }
        // And back: a rollback is the same rewrite the other way.
        assert_eq!(rewrite_record("A", "127.0.0.3", &target, &source), Some(Some("127.0.0.2".into())));
        // Duplicates fold: an rrset with both addresses ends with one.
        let rrset = Rrset { records: vec!["127.0.0.2".into(), "127.0.0.3".into()], ..rr("x.", "A", "") };
        assert_eq!(rewrite_rrset(&rrset, &source, &target).unwrap().records, vec!["127.0.0.3".to_owned()]);
    }

    fn v6_ends(source_v6: Option<&str>, target_v6: Option<&str>) -> (Endpoint, Endpoint) {
        let (mut source, mut target) = ends();
        source.ipv6 = source_v6.map(|v| v.parse().unwrap());
        target.ipv6 = target_v6.map(|v| v.parse().unwrap());
        (source, target)
    }

    #[test]
    fn aaaa_and_spf_ip6_move_with_the_ipv6_address() {
        let both = v6_ends(Some("2001:db8::2"), Some("2001:db8::3"));
        let source_only = v6_ends(Some("2001:db8::2"), None);
        // (rtype, content, ends, expected): Some(Some) rewritten, Some(None) removed, None untouched.
        type Case<'a> = (&'a str, &'a str, &'a (Endpoint, Endpoint), Option<Option<&'a str>>);
        let cases: Vec<Case<'_>> = vec![
            ("AAAA", "2001:db8::2", &both, Some(Some("2001:db8::3"))),
            ("AAAA", "2001:DB8:0::2", &both, Some(Some("2001:db8::3"))),
            ("AAAA", "2001:db8::9", &both, None),
            ("AAAA", "2001:db8::2", &source_only, Some(None)),
            (
                "TXT",
                r#""v=spf1 ip6:2001:db8::2 -all""#,
                &both,
                Some(Some(r#""v=spf1 ip6:2001:db8::3 -all""#)),
            ),
            (
                "TXT",
                r#""v=spf1 ip6:2001:db8::2/128 mx""#,
                &both,
                Some(Some(r#""v=spf1 ip6:2001:db8::3/128 mx""#)),
            ),
            ("TXT", r#""v=spf1 ip6:2001:db8::/64 -all""#, &both, None),
            (
                "TXT",
                r#""v=spf1 ip4:127.0.0.2 ip6:2001:db8::2 -all""#,
                &source_only,
                Some(Some(r#""v=spf1 ip4:127.0.0.3 -all""#)),
            ),
            ("TXT", r#""v=spf1 mx ip6:2001:db8::2""#, &source_only, Some(Some(r#""v=spf1 mx""#))),
            ("TXT", r#""v=spf1 +ip4:127.0.0.2 ~all""#, &both, Some(Some(r#""v=spf1 +ip4:127.0.0.3 ~all""#))),
        ];
        for (rtype, content, (source, target), expected) in cases {
            let got = rewrite_record(rtype, content, source, target);
            assert_eq!(got, expected.map(|e| e.map(str::to_owned)), "{rtype} {content}");
        }
        // An AAAA rrset holding only the source's address becomes empty: it is deleted.
        let (source, target) = &source_only;
        let rrset = rr("kukka.test.", "AAAA", "2001:db8::2");
        let moved = rewrite_rrset(&rrset, source, target).unwrap();
        assert!(matches!(write_rrset(moved), RrsetChange::Delete { rtype, .. } if rtype == "AAAA"));
        assert_eq!(removed_values(&rrset, source, target), vec!["2001:db8::2".to_owned()]);

        // Rollback puts the removed value back (the rrset is gone from the zone now).
        let zone = Zone { name: DomainName::parse("kukka.test").unwrap(), rrsets: vec![] };
        let record = ObservedRecord {
            removed: vec!["2001:db8::2".into()],
            ..ObservedRecord::changed("kukka.test.", "AAAA", 3600)
        };
        let back =
            rollback_change(&zone, &record, &[(target.clone(), source.clone())], target, source, 60, false)
                .unwrap();
        assert_eq!(back, RrsetChange::Replace(Rrset { ttl: 60, ..rrset.clone() }));

        // An SPF record that lost its ip6: token is recorded whole and restored as it was.
        let spf = rr("kukka.test.", "TXT", r#""v=spf1 ip4:127.0.0.2 ip6:2001:db8::2 -all""#);
        let removed = removed_values(&spf, source, target);
        assert_eq!(removed, spf.records);
        assert!(removed_values(&spf, &both.0, &both.1).is_empty(), "a lossless rewrite records nothing");
        let moved = rewrite_rrset(&spf, source, target).unwrap();
        let zone = Zone { name: DomainName::parse("kukka.test").unwrap(), rrsets: vec![moved] };
        let record = ObservedRecord { removed, ..ObservedRecord::changed("kukka.test.", "TXT", 3600) };
        let back =
            rollback_change(&zone, &record, &[(target.clone(), source.clone())], target, source, 60, false)
                .unwrap();
        assert_eq!(back, RrsetChange::Replace(spf));
    }

    #[test]
    fn created_aaaa_records_and_the_negative_ttl() {
        let soa = Rrset {
            name: "kukka.test.".into(),
            rtype: "SOA".into(),
            ttl: 3600,
            records: vec!["ns1.kukka.test. hostmaster.kukka.test. 7 10800 3600 604800 900".into()],
        };
        let a = Rrset { ttl: 300, ..rr("kukka.test.", "A", "127.0.0.2") };
        let www = rr("www.kukka.test.", "A", "127.0.0.2");
        let www_v6 = rr("www.kukka.test.", "AAAA", "2001:db8::77");
        let zone = Zone {
            name: DomainName::parse("kukka.test").unwrap(),
            rrsets: vec![soa.clone(), a.clone(), www.clone(), www_v6],
        };
        assert_eq!(negative_ttl(&zone), 900, "min(SOA TTL 3600, MINIMUM 900)");
        let low_soa = Zone { rrsets: vec![Rrset { ttl: 120, ..soa }], ..zone.clone() };
        assert_eq!(negative_ttl(&low_soa), 120);
        let no_soa = Zone { rrsets: vec![], ..zone.clone() };
        assert_eq!(negative_ttl(&no_soa), 10_800);

        // Only the apex gets one: www has AAAA records of its own, which are left alone.
        let created = aaaa_to_create(&zone, &[&a, &www], "2001:db8::3".parse().unwrap());
        assert_eq!(created.len(), 1);
        let record = &created[0];
        assert_eq!(
            (record.name.as_str(), record.rtype.as_str(), record.old_ttl),
            ("kukka.test.", "AAAA", 300)
        );
        assert_eq!(
            (record.negative_ttl, record.created.clone()),
            (Some(900), vec!["2001:db8::3".to_owned()])
        );

        let written = created_rrset(&zone, record, 60).unwrap();
        assert_eq!((written.ttl, written.records.clone()), (60, vec!["2001:db8::3".to_owned()]));
        let with_it = Zone { rrsets: vec![written.clone()], ..zone.clone() };
        assert_eq!(created_rrset(&with_it, record, 60), None, "already there: nothing to write");
        // Rollback deletes it.
        let (source, target) = v6_ends(None, Some("2001:db8::3"));
        let back = rollback_change(
            &with_it,
            record,
            &[(target.clone(), source.clone())],
            &target,
            &source,
            60,
            false,
        )
        .unwrap();
        assert_eq!(back, RrsetChange::Delete { name: "kukka.test.".into(), rtype: "AAAA".into() });
    }

    #[test]
    fn a_dedicated_ip_account_moves_from_its_address_to_the_assigned_one() {
        let (source, target) = ends();
        let dedicated = |ip: &str, e: &Endpoint| Endpoint { ip: ip.parse().unwrap(), ..e.clone() };
        let moves = vec![
            (dedicated("127.0.0.131", &source), dedicated("127.0.0.141", &target)),
            (source.clone(), target.clone()),
        ];
        // (record, after the move, after the rollback of the move)
        let cases: &[(&str, &str, &str)] = &[
            ("127.0.0.131", "127.0.0.141", "127.0.0.131"),
            ("127.0.0.2", "127.0.0.3", "127.0.0.2"),
            ("192.0.2.7", "192.0.2.7", "192.0.2.7"),
        ];
        let back: Vec<(Endpoint, Endpoint)> = moves.iter().map(|(f, t)| (t.clone(), f.clone())).collect();
        for (before, after, rolled_back) in cases {
            let rrset = rr("kukka.test.", "A", before);
            let moved = rewrite_rrset_moves(&rrset, &moves).unwrap_or_else(|| rrset.clone());
            assert_eq!(moved.records, vec![after.to_string()], "{before}");
            let back = rewrite_rrset_moves(&moved, &back).unwrap_or_else(|| moved.clone());
            assert_eq!(back.records, vec![rolled_back.to_string()], "{before}");
        }
        let zone = Zone {
            name: DomainName::parse("kukka.test").unwrap(),
            rrsets: vec![rr("kukka.test.", "A", "127.0.0.131"), rr("ftp.kukka.test.", "A", "127.0.0.2")],
        };
        let domain = DomainName::parse("kukka.test").unwrap();
        assert_eq!(apex_address_after(&zone, &domain, &moves), Some("127.0.0.141".parse().unwrap()));
        assert_eq!(records_to_change(&zone, &domain, &[], &moves).len(), 2);
        assert_eq!(records_to_change(&zone, &domain, &[], &moves[1..]).len(), 1);
    }

    #[test]
    fn the_safety_threshold_refuses_big_or_unplanned_batches() {
        let zone_of = |n: usize| Zone {
            name: DomainName::parse("kukka.test").unwrap(),
            rrsets: (0..n).map(|i| rr(&format!("h{i}.kukka.test."), "A", "127.0.0.2")).collect(),
        };
        let planned_for = |n: usize| -> Vec<ObservedRecord> {
            (0..n).map(|i| ObservedRecord::changed(format!("h{i}.kukka.test."), "A", 3600)).collect()
        };
        let changed = |n: usize| -> Vec<Rrset> {
            (0..n).map(|i| rr(&format!("h{i}.kukka.test."), "A", "127.0.0.3")).collect()
        };
        // (zone rrsets, changed, share, refused with)
        let cases: &[(usize, usize, f64, Option<&str>)] = &[
            (20, 10, 0.5, None),
            (20, 11, 0.5, Some("11 of the zone's 20 rrsets")),
            (20, 20, 1.0, None),
            (9, 9, 0.5, None),
            (10, 6, 0.5, Some("6 of the zone's 10")),
        ];
        for (total, n, share, expected) in cases {
            let refusal = batch_refusal(&zone_of(*total), &changed(*n), &planned_for(*n), *share);
            match expected {
                None => assert_eq!(refusal, None, "{total} {n} {share}"),
                Some(fragment) => assert!(refusal.as_deref().unwrap_or("").contains(fragment), "{refusal:?}"),
            }
        }
        let refusal = batch_refusal(&zone_of(20), &changed(3), &planned_for(2), 0.5).unwrap();
        assert!(refusal.contains("h2.kukka.test. A") && refusal.contains("did not list"), "{refusal}");
    }
}
