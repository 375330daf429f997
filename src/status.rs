//! Where a migration stands, read from the store: for `siirto status`, the demo's progress and
//! (later) the status page; and its event log in words, for `siirto log`.

use std::collections::BTreeMap;

use anyhow::anyhow;
use serde::Serialize;

use crate::domain::{
    AccountEvent, AccountState, DomainEvent, DomainState, GatePolicy, MailEvidence, MigrationEvent,
    MigrationState, ObservedRecord, RecordChange, RecordGate, from_millis,
};
use crate::names::{AccountName, DomainName};
use crate::store::{
    AccountRow, DomainRow, EventRow, MigrationRow, OutboxRow, Store, account_state, domain_state,
    migration_state,
};

/// One migration's status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MigrationStatus {
    /// The migration's id.
    pub id: String,
    /// Source host name.
    pub source: String,
    /// Target host name.
    pub target: String,
    /// The migration's state name.
    pub state: String,
    /// The full state (gate times, counts) as stored.
    #[schema(value_type = Object)]
    pub detail: MigrationState,
    /// The earliest cutover time (RFC 3339).
    pub cutover_at: String,
    /// The dated steps from the playbook: announce, TTL lowering, cutover, settle, each
    /// decommission stage.
    pub schedule: Vec<crate::plan::ScheduleItem>,
    /// Accounts per state name.
    pub accounts_by_state: BTreeMap<String, usize>,
    /// Domains per state name.
    pub domains_by_state: BTreeMap<String, usize>,
    /// Every account.
    pub accounts: Vec<AccountStatus>,
    /// Notices in the outbox.
    pub notices_queued: usize,
    /// Notices sent.
    pub notices_sent: usize,
    /// Notices never sent because they were past their lateness limit (an advance notice
    /// after a late start), with the outbox rows saying why.
    pub notices_skipped_late: usize,
    /// Jobs that failed at least once and are not done: what the daemon is struggling with.
    pub failing_jobs: Vec<FailingJob>,
    /// Changes a person must make that siirto cannot (a spam filter's delivery route, other
    /// mail hosts), from the plan on; listed until acknowledged.
    pub operator_tasks: Vec<OpenTask>,
}

/// An operator task on the timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OpenTask {
    /// Its number (`siirto ack NUMBER`).
    pub id: i64,
    /// The account it concerns.
    pub account: String,
    /// The domain it concerns.
    pub domain: String,
    /// What to do.
    pub task: String,
    /// Since when it is on the timeline (RFC 3339).
    pub since: String,
    /// How many different people must confirm it (two for destroying disks).
    pub needs: u64,
    /// Who has confirmed it so far (fewer than it needs).
    pub confirmed_by: Vec<String>,
    /// The decommission stage it belongs to, if any.
    pub stage: Option<String>,
}

/// One account's status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountStatus {
    /// cPanel user.
    pub user: String,
    /// Main domain.
    pub main_domain: String,
    /// State name.
    pub state: String,
    /// Why it is held or failed, or what it waits for, if it does.
    pub reason: Option<String>,
    /// On a dedicated IP at the source: its address there, and the target address assigned
    /// to it (if one is).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub dedicated_ip: Option<crate::dedicated_ip::DedicatedIp>,
    /// Its domains and their states.
    pub domains: Vec<DomainStatus>,
    /// Where its mail stands once its routing was switched: the final syncs and log checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<MailStatus>,
}

/// One account's mail after its repoint (`crate::mailsync`): from its timeline.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct MailStatus {
    /// When the old server's routing of its domains was switched to the new one (RFC 3339).
    pub switched_at: Option<String>,
    /// While the first final sync waits: when it may run (the old records' TTL after the
    /// switch), RFC 3339.
    pub sync_due: Option<String>,
    /// Each final sync, oldest first.
    pub syncs: Vec<MailSyncStatus>,
    /// The last read of the old server's mail log.
    pub last_check: Option<MailCheckStatus>,
}

/// One final sync of an account's mail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MailSyncStatus {
    /// When it began (RFC 3339).
    pub started_at: String,
    /// The messages it copied, by mailbox.
    pub copied: BTreeMap<String, u32>,
    /// New messages on the old server the new one held already (the customer had them).
    pub already_there: u32,
    /// What else it synced (the web root).
    pub synced: Vec<String>,
}

/// One read of the old server's mail log after a sync.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MailCheckStatus {
    /// When (RFC 3339).
    pub at: String,
    /// Local deliveries since the switch, and since the last sync began.
    #[schema(value_type = Object)]
    pub evidence: MailEvidence,
}

/// One domain's status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DomainStatus {
    /// The domain.
    pub domain: String,
    /// State name.
    pub state: String,
    /// While it waits for its repoint: when each changed record's TTL gate opens.
    #[schema(value_type = Vec<Object>)]
    pub gates: Vec<RecordGate>,
    /// The latest of `gates`: when the domain may be repointed.
    pub gate_opens_at: Option<String>,
    /// A domain with external DNS: since when it waits for its customer (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// A domain with external DNS: how many reminders were queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reminded: Option<u32>,
    /// A domain with external DNS: when public DNS was seen showing the target (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagated_at: Option<String>,
    /// A domain with external DNS: the records its customer must change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub records_to_change: Vec<RecordChange>,
    /// A domain with external DNS: the resolvers that gave no answer at all at the last look
    /// (propagation waits for them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub silent_resolvers: Vec<String>,
    /// A rolled-back domain: until when its records keep the short TTL (RFC 3339), after which
    /// they get their original TTL back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_ttl_until: Option<String>,
    /// A rolled-back domain: when its records got their original TTL back (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_restored_at: Option<String>,
    /// A domain the plan does not repoint: why, and what its customer must do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_repointed: Option<NotRepointed>,
}

/// Why a domain is not repointed, and what follows for its customer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotRepointed {
    /// The plan's reasons.
    pub reason: String,
    /// What the customer must do (told in the completion notice), if anything.
    pub customer_action: Option<String>,
}

/// A job that has failed and will be retried.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailingJob {
    /// Job kind.
    pub kind: String,
    /// Its subject (account, session, notice).
    pub subject: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The last error.
    pub last_error: String,
}

impl MigrationStatus {
    /// Accounts that arrived.
    pub fn arrived(&self) -> usize {
        self.accounts_by_state.get("done").copied().unwrap_or(0)
    }

    /// Accounts held for an operator.
    pub fn held(&self) -> usize {
        self.accounts_by_state.get("held").copied().unwrap_or(0)
    }

    /// Accounts on a dedicated IP waiting for an operator to assign a target IP.
    pub fn awaiting_target_ip(&self) -> usize {
        self.accounts_by_state.get("awaiting_target_ip").copied().unwrap_or(0)
    }
}

/// How far a migration is, as `siirto watch` draws it: its accounts through the transfer,
/// the verification on the target and the whole move, its domains repointed, its notices out,
/// and the accounts waiting for an operator, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Progress {
    /// The migration's state name.
    pub state: String,
    /// Accounts in all (rolled back ones included: they count as handled).
    pub accounts: usize,
    /// Accounts whose files are restored on the target (or further).
    pub transferred: usize,
    /// Accounts verified on the target (or further).
    pub verified: usize,
    /// Accounts done, or rolled back by an operator.
    pub arrived: usize,
    /// Domains the plan repoints.
    pub domains: usize,
    /// Of those, the ones answering with the target's address (or propagated, for a domain on
    /// external DNS).
    pub repointed: usize,
    /// Notices in the outbox (not skipped).
    pub notices: usize,
    /// Of those, the ones sent.
    pub notices_sent: usize,
    /// Accounts held, failed or waiting for a target IP: what an operator must look at.
    pub held: Vec<HeldAccount>,
    /// True once the migration has settled or was aborted: nothing more will move.
    pub finished: bool,
}

/// An account that waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HeldAccount {
    /// The cPanel user.
    pub user: String,
    /// Its state name (`held`, `failed`, `awaiting_target_ip`).
    pub state: String,
    /// Why, when the state says.
    pub reason: Option<String>,
}

/// Account states at or past the verification on the target.
const VERIFIED: &[&str] = &["verified", "switched", "notified", "syncing_mail", "checking_mail", "done"];
/// Domain states that answer with the target (or, on external DNS, show it).
const REPOINTED: &[&str] = &["repointed", "serving_target", "ttl_restored", "propagated"];
/// Account states that wait for an operator.
const HELD: &[&str] = &["held", "failed", "awaiting_target_ip"];

impl Progress {
    /// The progress `status` shows.
    pub fn of(status: &MigrationStatus) -> Progress {
        let held = status
            .accounts
            .iter()
            .filter(|a| HELD.contains(&a.state.as_str()))
            .map(|a| HeldAccount { user: a.user.clone(), state: a.state.clone(), reason: a.reason.clone() })
            .collect();
        let notices = (status.notices_queued, status.notices_sent);
        Progress::from_counts(
            &status.state,
            &status.accounts_by_state,
            &status.domains_by_state,
            notices,
            held,
        )
    }

    fn from_counts(
        state: &str,
        accounts: &BTreeMap<String, usize>,
        domains: &BTreeMap<String, usize>,
        (notices, notices_sent): (usize, usize),
        held: Vec<HeldAccount>,
    ) -> Progress {
        let count =
            |states: &[&str]| states.iter().map(|s| accounts.get(*s).copied().unwrap_or(0)).sum::<usize>();
        let all_domains: usize = domains.values().sum();
        let repointed = REPOINTED.iter().map(|s| domains.get(*s).copied().unwrap_or(0)).sum();
        Progress {
            state: state.to_owned(),
            accounts: accounts.values().sum(),
            transferred: count(&["restored"]) + count(VERIFIED),
            verified: count(VERIFIED),
            arrived: count(&["done", "rolled_back"]),
            domains: all_domains - domains.get("not_repointed").copied().unwrap_or(0),
            repointed,
            notices,
            notices_sent,
            held,
            finished: matches!(state, "settled" | "aborted"),
        }
    }
}

/// How far migration `id` is, read from the store's counts by state and the held accounts
/// alone (not every account's row): what the status page's overview, the API's progress and
/// `siirto watch` show, the same figures as [`Progress::of`] its full status.
pub async fn progress(store: &Store, id: &str) -> anyhow::Result<Progress> {
    let row = store.require_migration(id).await?;
    let counts = store.counts_of(id).await?;
    let mut held = Vec::new();
    for account in store.accounts_in_states(id, HELD, 1000).await? {
        let state = account_state(&account)?;
        held.push(HeldAccount {
            user: account.user.clone(),
            state: state.name().to_owned(),
            reason: reason_of(id, &account, &state),
        });
    }
    held.sort_by(|a, b| a.user.cmp(&b.user));
    let notices = (counts.notices, counts.notices_sent);
    Ok(Progress::from_counts(&row.state, &counts.accounts, &counts.domains, notices, held))
}

/// A migration at a glance: the status page's overview, read from counts (not every row).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// The migration's id.
    pub id: String,
    /// Source host name.
    pub source: String,
    /// Target host name.
    pub target: String,
    /// The migration's state name.
    pub state: String,
    /// The earliest cutover time (RFC 3339).
    pub cutover_at: String,
    /// The dated steps from the playbook.
    pub schedule: Vec<crate::plan::ScheduleItem>,
    /// Accounts per state name.
    pub accounts_by_state: BTreeMap<String, usize>,
    /// Domains per state name.
    pub domains_by_state: BTreeMap<String, usize>,
    /// How far it is, with the accounts waiting for an operator.
    pub progress: Progress,
}

/// Migration `id` at a glance ([`Overview`]).
pub async fn overview(store: &Store, id: &str) -> anyhow::Result<Overview> {
    let row = store.require_migration(id).await?;
    let playbook = playbook_of(&row)?;
    let counts = store.counts_of(id).await?;
    let progress = progress(store, id).await?;
    Ok(Overview {
        id: row.id.clone(),
        source: row.source_host.clone(),
        target: row.target_host.clone(),
        state: row.state.clone(),
        cutover_at: from_millis(row.cutover_at).to_rfc3339(),
        schedule: crate::plan::schedule(&playbook, from_millis(row.cutover_at)),
        accounts_by_state: counts.accounts,
        domains_by_state: counts.domains,
        progress,
    })
}

/// Why an account is held or failed, or what it waits for, if it does.
fn reason_of(id: &str, account: &AccountRow, state: &AccountState) -> Option<String> {
    match state {
        AccountState::Held { reason, .. }
        | AccountState::Failed { reason, .. }
        | AccountState::RolledBack { reason, .. } => Some(reason.clone()),
        AccountState::AwaitingTargetIp { source_ip } => Some(format!(
            "waiting for a target IP: on the dedicated IP {source_ip} at the source (siirto assign-ip {id} {} IP)",
            account.user
        )),
        _ => None,
    }
}

/// Reads one migration's status.
pub async fn migration_status(store: &Store, id: &str) -> anyhow::Result<MigrationStatus> {
    let row = store.require_migration(id).await?;
    let detail = migration_state(&row)?;
    let accounts = store.accounts(id).await?;
    let domains = store.domains(id).await?;
    let playbook = playbook_of(&row)?;
    let schedule = crate::plan::schedule(&playbook, from_millis(row.cutover_at));
    let mut accounts_by_state = BTreeMap::new();
    for a in &accounts {
        *accounts_by_state.entry(a.state.clone()).or_insert(0) += 1;
    }
    let mut domains_by_state = BTreeMap::new();
    for d in &domains {
        *domains_by_state.entry(d.state.clone()).or_insert(0) += 1;
    }
    let account_statuses = account_statuses(store, &row, &playbook, &accounts, &domains, None).await?;
    let outbox = store.outbox(id).await?;
    let failing_jobs = store
        .jobs(id)
        .await?
        .into_iter()
        .filter(|j| j.done_at.is_none() && j.attempts > 0)
        .map(|j| FailingJob {
            kind: j.kind,
            subject: j.subject,
            attempts: j.attempts,
            last_error: j.last_error.unwrap_or_default(),
        })
        .collect();
    Ok(MigrationStatus {
        id: row.id.clone(),
        source: row.source_host.clone(),
        target: row.target_host.clone(),
        state: detail.name().to_owned(),
        cutover_at: from_millis(row.cutover_at).to_rfc3339(),
        schedule,
        detail,
        accounts_by_state,
        domains_by_state,
        accounts: account_statuses,
        notices_queued: outbox.iter().filter(|n| n.skipped_at.is_none()).count(),
        notices_sent: outbox.iter().filter(|n| n.sent_at.is_some()).count(),
        notices_skipped_late: outbox.iter().filter(|n| n.skipped_at.is_some()).count(),
        failing_jobs,
        operator_tasks: operator_tasks(store, id).await?,
    })
}

/// The playbook a migration was recorded with.
fn playbook_of(row: &MigrationRow) -> anyhow::Result<crate::playbook::Playbook> {
    crate::playbook::Playbook::parse(&row.playbook, &format!("playbook of migration {}", row.id))
        .map_err(|e| anyhow!("{e}"))
}

/// The status of `accounts` (with their `domains`): states in words, gate times, what waits for
/// whom, mail evidence. `only`: the accounts whose timeline evidence to read (all: `None`).
async fn account_statuses(
    store: &Store,
    row: &MigrationRow,
    playbook: &crate::playbook::Playbook,
    accounts: &[AccountRow],
    domains: &[DomainRow],
    only: Option<&[String]>,
) -> anyhow::Result<Vec<AccountStatus>> {
    let id = row.id.as_str();
    let gate =
        GatePolicy { margin: playbook.dns.gate_margin, wait_override: playbook.dns.gate_wait_override };
    let mut domains_of: BTreeMap<String, Vec<DomainStatus>> = BTreeMap::new();
    let mut records_of: BTreeMap<String, Vec<ObservedRecord>> = BTreeMap::new();
    for d in domains {
        let state = domain_state(d)?;
        records_of.entry(d.user.clone()).or_default().extend(state.records().iter().cloned());
        domains_of.entry(d.user.clone()).or_default().push(domain_status(d, &state, &gate, playbook));
    }
    let mut dedicated = BTreeMap::new();
    for row in store.dedicated_ips(id).await? {
        if only.is_none_or(|users| users.contains(&row.user)) {
            dedicated.insert(row.user.clone(), crate::dedicated_ip::DedicatedIp::from_row(&row)?);
        }
    }
    let mut mail = mail_of(store, id, only).await?;
    let mut statuses = Vec::with_capacity(accounts.len());
    for a in accounts {
        let state = account_state(a)?;
        let reason = reason_of(id, a, &state);
        statuses.push(AccountStatus {
            user: a.user.clone(),
            main_domain: a.main_domain.clone(),
            state: state.name().to_owned(),
            reason,
            dedicated_ip: dedicated.remove(&a.user),
            domains: domains_of.remove(&a.user).unwrap_or_default(),
            mail: mail.remove(&a.user).map(|mut mail| {
                if let AccountState::SyncingMail { switched_at, syncs: 0 } = &state {
                    let records = records_of.remove(&a.user).unwrap_or_default();
                    mail.sync_due = Some(gate.domain_opens_at(*switched_at, &records).to_rfc3339());
                }
                mail
            }),
        });
    }
    Ok(statuses)
}

fn domain_status(
    d: &DomainRow,
    state: &DomainState,
    gate: &GatePolicy,
    playbook: &crate::playbook::Playbook,
) -> DomainStatus {
    DomainStatus {
        domain: d.domain.clone(),
        state: state.name().to_owned(),
        gate_opens_at: state.gates(gate).iter().map(|g| g.opens_at).max().map(|t| t.to_rfc3339()),
        gates: state.gates(gate),
        since: match state {
            DomainState::AwaitingCustomer { since, .. } | DomainState::Propagated { since, .. } => {
                Some(since.to_rfc3339())
            }
            _ => None,
        },
        reminded: match state {
            DomainState::AwaitingCustomer { reminded, .. } | DomainState::Propagated { reminded, .. } => {
                Some(*reminded)
            }
            _ => None,
        },
        propagated_at: match state {
            DomainState::Propagated { at, .. } => Some(at.to_rfc3339()),
            _ => None,
        },
        records_to_change: state.records_to_change().to_vec(),
        silent_resolvers: match state {
            DomainState::AwaitingCustomer { silent, .. } => silent.clone(),
            _ => Vec::new(),
        },
        short_ttl_until: match state {
            DomainState::RolledBack { at, ttl_restored_at: None, .. } => {
                let settle =
                    chrono::Duration::from_std(playbook.schedule.settle_after).unwrap_or(chrono::Duration::MAX);
                at.checked_add_signed(settle).map(|t| t.to_rfc3339())
            }
            _ => None,
        },
        ttl_restored_at: match state {
            DomainState::RolledBack { ttl_restored_at: Some(at), .. } => Some(at.to_rfc3339()),
            _ => None,
        },
        not_repointed: match state {
            DomainState::NotRepointed { reason, site_elsewhere } => Some(NotRepointed {
                reason: reason.clone(),
                customer_action: (!site_elsewhere).then(|| {
                    "the customer points its A records at the target's address (told in the completion notice)"
                        .to_owned()
                }),
            }),
            _ => None,
        },
    }
}

/// The operator tasks on a migration's timeline not acknowledged yet, in the order written.
pub async fn operator_tasks(store: &Store, id: &str) -> anyhow::Result<Vec<OpenTask>> {
    let mut tasks = Vec::new();
    let mut confirmed: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let events = store.events_of_kinds(id, &["operator_task", "operator_task_acknowledged"]).await?;
    for event in &events {
        let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap_or_default();
        if event.kind == "operator_task_acknowledged" {
            if let Some(task) = detail["task"].as_i64() {
                confirmed.entry(task).or_default().push(event.actor.clone());
            }
            continue;
        }
        tasks.push(OpenTask {
            id: event.id,
            account: event.account.clone().unwrap_or_default(),
            domain: event.domain.clone().unwrap_or_default(),
            task: detail["task"].as_str().unwrap_or_default().to_owned(),
            since: from_millis(event.at).to_rfc3339(),
            needs: crate::ops::needs_of(&detail),
            confirmed_by: Vec::new(),
            stage: detail["stage_name"].as_str().map(str::to_owned),
        });
    }
    for task in &mut tasks {
        task.confirmed_by = confirmed.remove(&task.id).unwrap_or_default();
    }
    tasks.retain(|task| (task.confirmed_by.len() as u64) < task.needs);
    Ok(tasks)
}

/// Each account's mail evidence, from the timeline: the routing switch, the final syncs, the
/// mail log checks.
async fn mail_of(
    store: &Store,
    id: &str,
    only: Option<&[String]>,
) -> anyhow::Result<BTreeMap<String, MailStatus>> {
    let kinds = ["mail_routing_switched", "mail_synced", "mail_checked"];
    let mut mail: BTreeMap<String, MailStatus> = BTreeMap::new();
    let events = match only {
        Some(users) => store.events_of_accounts(id, users).await?,
        None => store.events_of_kinds(id, &kinds).await?,
    };
    for event in events.iter().filter(|e| kinds.contains(&e.kind.as_str())) {
        let Some(user) = &event.account else { continue };
        let at = from_millis(event.at).to_rfc3339();
        let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap_or_default();
        let entry = mail.entry(user.clone()).or_default();
        match event.kind.as_str() {
            // The switch to remote at the repoint (a rollback's switch back to local is not it).
            "mail_routing_switched" if detail["routing"] == "remote" => entry.switched_at = Some(at),
            "mail_routing_switched" => {}
            _ => match serde_json::from_value::<AccountEvent>(detail["event"].clone()) {
                Ok(AccountEvent::MailSynced { started_at, synced, copied, already_there }) => {
                    entry.syncs.push(MailSyncStatus {
                        started_at: started_at.to_rfc3339(),
                        copied,
                        already_there,
                        synced,
                    });
                }
                Ok(AccountEvent::MailChecked { evidence }) => {
                    entry.last_check = Some(MailCheckStatus { at, evidence })
                }
                _ => {}
            },
        }
    }
    Ok(mail)
}

/// One event of a migration's log in words: a line of `siirto log`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// The event's id (ids grow in the order events were written).
    pub id: i64,
    /// When it happened (RFC 3339, UTC).
    pub at: String,
    /// The account it concerns, if any.
    pub account: Option<String>,
    /// The domain it concerns, if any.
    pub domain: Option<String>,
    /// The event's name as stored (`domain_repointed`).
    pub kind: String,
    /// What happened, in words.
    pub text: String,
    /// Who or what caused it: an operator, or the daemon's owner name.
    pub actor: String,
}

/// One notice in the outbox as `siirto notices list` shows it: to whom, what, and what became
/// of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NoticeEntry {
    /// The outbox id.
    pub id: i64,
    /// `advance`, `completion`, `reminder`, …
    pub kind: String,
    /// The account it concerns (none for a notice to a customer about several).
    pub account: Option<String>,
    /// The recipients.
    pub recipients: Vec<String>,
    /// The subject as sent.
    pub subject: String,
    /// The stable Message-ID (also the webhook's Idempotency-Key).
    pub message_id: String,
    /// `queued` (not sent yet), `sending` (an attempt in flight), `failing` (the last attempt
    /// failed and it is retried: see `last_error`), `failed` (refused for good: see
    /// `last_error`), `sent`, `bounced` (sent, then reported undeliverable: see
    /// `bounce_reason`) or `skipped_late` (never sent: see `skip_reason`).
    pub state: String,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// When the server accepted it.
    pub sent_at: Option<String>,
    /// Failed attempts, and the last one's error.
    pub attempts: i32,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// Attempts that may have delivered a second copy (same Message-ID).
    pub resends: i32,
    /// Why it was skipped.
    pub skip_reason: Option<String>,
    /// What the delivery-status notification said, when it bounced.
    pub bounce_reason: Option<String>,
}

/// The notices of migration `id`, oldest first, those in `state` only when one is given.
pub async fn notices(store: &Store, id: &str, state: Option<&str>) -> anyhow::Result<Vec<NoticeEntry>> {
    store.require_migration(id).await?;
    let rows = store.outbox(id).await?;
    Ok(rows
        .into_iter()
        .map(notice_entry)
        .filter(|entry| state.is_none_or(|wanted| entry.state == wanted))
        .collect())
}

/// One outbox row as a [`NoticeEntry`].
pub fn notice_entry(row: OutboxRow) -> NoticeEntry {
    let time = |ms: i64| from_millis(ms).to_rfc3339();
    let state = if row.skipped_at.is_some() {
        "skipped_late"
    } else if row.failed_at.is_some() {
        "failed"
    } else if row.bounced_at.is_some() {
        "bounced"
    } else if row.sent_at.is_some() {
        "sent"
    } else if row.delivery_started_at.is_some() {
        "sending"
    } else if row.last_error.is_some() {
        "failing"
    } else {
        "queued"
    };
    NoticeEntry {
        id: row.id,
        kind: row.kind,
        account: row.account,
        recipients: serde_json::from_str(&row.recipients).unwrap_or_default(),
        subject: row.subject,
        message_id: row.message_id,
        state: state.to_owned(),
        created_at: time(row.created_at),
        sent_at: row.sent_at.map(time),
        attempts: row.attempts,
        last_error: row.last_error,
        resends: row.resends,
        skip_reason: row.skip_reason,
        bounce_reason: row.bounce_reason,
    }
}

/// One customer in one migration, as customer service looks them up: who they are, each of
/// their accounts and domains with its state and what happens next and when, what they must
/// still do themselves, the timeline of events, and every notice sent to them with its text.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Timeline {
    /// The migration.
    pub migration: String,
    /// The migration's state name.
    pub migration_state: String,
    /// The earliest cutover time (RFC 3339).
    pub cutover_at: String,
    /// The migration's dated steps.
    pub schedule: Vec<crate::plan::ScheduleItem>,
    /// Who the customer is.
    pub customer: Customer,
    /// Their accounts in this migration (the one looked up first).
    pub accounts: Vec<AccountStatus>,
    /// For each account, what happens next and when.
    pub next: Vec<NextStep>,
    /// What the customer must still do themselves: the exact records to change at their DNS
    /// provider, per domain.
    pub customer_actions: Vec<CustomerAction>,
    /// The events of their accounts, oldest first.
    pub events: Vec<LogEntry>,
    /// Every notice to them or about their accounts, oldest first, with its text.
    pub notices: Vec<CustomerNotice>,
    /// Their accounts a decommission stage keeps open on the old server, with why: "has their
    /// old account been closed, and if not, why not?".
    pub old_server: Vec<OldServerHold>,
}

/// An account a decommission stage of the old server holds, and the evidence.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OldServerHold {
    /// The cPanel user.
    pub account: String,
    /// The stage that holds it (`suspend accounts`).
    pub stage: String,
    /// What keeps it (resolver or log, name, type, answer).
    #[schema(value_type = Vec<Object>)]
    pub evidence: Vec<crate::decommission::Evidence>,
    /// Since when (RFC 3339): the last check.
    pub checked_at: String,
}

/// Who a customer is, as the plan recorded it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Customer {
    /// `customer-<contract id>`, `contact-<address>`, or none.
    pub key: Option<String>,
    /// Their name (from the contract), if known.
    pub name: Option<String>,
    /// Their contact address.
    pub email: Option<String>,
    /// The language they are written to in.
    pub language: Option<String>,
    /// Their reseller, when they have one.
    pub reseller: Option<String>,
}

/// What happens next to an account, and when.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NextStep {
    /// The account.
    pub account: String,
    /// A stable code for it (`waits_for_cutover`, `copying`, `verifying`, `waits_for_gate`,
    /// `final_mail_sync`, `waits_for_customer`, `held`, `waits_for_ip`, `rolled_back`, `done`,
    /// `paused`, `aborted`).
    pub code: String,
    /// When it happens (RFC 3339), when a time is known.
    pub at: Option<String>,
    /// In words (English).
    pub text: String,
}

/// A change only the customer can make.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CustomerAction {
    /// The domain.
    pub domain: String,
    /// The records to change at their DNS provider, exactly.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<RecordChange>,
    /// Or, for a domain not repointed, what they must do in words.
    pub text: Option<String>,
}

/// A notice with its full text.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CustomerNotice {
    /// The notice and what became of it.
    pub notice: NoticeEntry,
    /// Its text as sent.
    pub body: String,
}

/// The timeline of the customer who owns account `user` of migration `id`: all of that
/// customer's accounts in the migration (the account alone when it has no customer key).
pub async fn timeline(store: &Store, id: &str, user: &str) -> anyhow::Result<Timeline> {
    let row = store.require_migration(id).await?;
    let state = migration_state(&row)?;
    let account = store.account(id, user).await?.ok_or_else(|| crate::store::StoreError::NotFound {
        what: "account",
        key: format!("{user} of migration {id}"),
    })?;
    let mut accounts = match &account.customer_key {
        Some(key) => store.accounts_of_customer(id, key).await?,
        None => vec![account.clone()],
    };
    // The one looked up first.
    accounts.sort_by_key(|a| (a.user != account.user, a.user.clone()));
    let users: Vec<String> = accounts.iter().map(|a| a.user.clone()).collect();
    let mut domains = Vec::new();
    for u in &users {
        domains.extend(store.domains_of(id, u).await?);
    }
    let playbook = playbook_of(&row)?;
    let statuses = account_statuses(store, &row, &playbook, &accounts, &domains, Some(&users)).await?;
    let cutover = from_millis(row.cutover_at);
    let next = statuses.iter().map(|a| next_step(a, &state, cutover)).collect();
    let customer_actions =
        statuses
            .iter()
            .flat_map(|a| &a.domains)
            .filter_map(|d| {
                if !d.records_to_change.is_empty() && d.state == "awaiting_customer" {
                    Some(CustomerAction {
                        domain: d.domain.clone(),
                        records: d.records_to_change.clone(),
                        text: None,
                    })
                } else {
                    d.not_repointed.as_ref().and_then(|n| n.customer_action.clone()).map(|text| {
                        CustomerAction { domain: d.domain.clone(), records: Vec::new(), text: Some(text) }
                    })
                }
            })
            .collect();
    let events = store.events_of_accounts(id, &users).await?.iter().map(log_entry).collect();
    let recipients = account.contact_email.as_ref().map(|e| serde_json::json!([e]).to_string());
    let notices = store
        .notices_to_customer(id, &users, recipients.as_deref())
        .await?
        .into_iter()
        .map(|row| {
            let body = row.body.clone();
            CustomerNotice { notice: notice_entry(row), body }
        })
        .collect();
    let stages = store.stages(id).await?;
    let old_server = store
        .stage_accounts(id)
        .await?
        .into_iter()
        .filter(|r| r.state == "held" && users.contains(&r.user))
        .map(|r| OldServerHold {
            account: r.user.clone(),
            stage: stages.iter().find(|s| s.stage == r.stage).map(|s| s.name.clone()).unwrap_or_default(),
            evidence: serde_json::from_str(&r.evidence).unwrap_or_default(),
            checked_at: from_millis(r.at).to_rfc3339(),
        })
        .collect();
    Ok(Timeline {
        migration: row.id.clone(),
        migration_state: state.name().to_owned(),
        cutover_at: cutover.to_rfc3339(),
        schedule: crate::plan::schedule(&playbook, cutover),
        customer: Customer {
            key: account.customer_key.clone(),
            name: account.customer_name.clone(),
            email: account.contact_email.clone(),
            language: account.language.clone(),
            reseller: account.reseller.clone(),
        },
        accounts: statuses,
        next,
        customer_actions,
        events,
        notices,
        old_server,
    })
}

/// What happens next to an account, and when, from its state and its domains' gates.
pub fn next_step(
    account: &AccountStatus,
    migration: &MigrationState,
    cutover: chrono::DateTime<chrono::Utc>,
) -> NextStep {
    let step = |code: &str, at: Option<String>, text: String| NextStep {
        account: account.user.clone(),
        code: code.to_owned(),
        at,
        text,
    };
    match migration {
        MigrationState::Aborted { .. } => {
            return step("aborted", None, "the migration was aborted: nothing more moves".to_owned());
        }
        MigrationState::Paused { .. } if !matches!(account.state.as_str(), "done" | "rolled_back") => {
            return step("paused", None, "the migration is paused by an operator".to_owned());
        }
        _ => {}
    }
    let gate = account.domains.iter().filter_map(|d| d.gate_opens_at.clone()).max();
    let waiting = account.domains.iter().find(|d| d.state == "awaiting_customer");
    match account.state.as_str() {
        "pending"
            if matches!(
                migration,
                MigrationState::Planned { .. }
                    | MigrationState::Approved { .. }
                    | MigrationState::Started { .. }
                    | MigrationState::TtlLowered { .. }
            ) =>
        {
            step(
                "waits_for_cutover",
                Some(cutover.to_rfc3339()),
                format!("moves at the cutover, {}", cutover.to_rfc3339()),
            )
        }
        "pending" | "queued" => {
            step("waits_for_transfer", None, "waits for its turn to be copied".to_owned())
        }
        "copied" => step("copying", None, "being copied to the new server".to_owned()),
        "restored" => step("verifying", None, "being checked on the new server".to_owned()),
        "verified" => match gate {
            Some(at) => {
                step("waits_for_gate", Some(at.clone()), format!("DNS points to the new server at {at}"))
            }
            None => step("repointing", None, "DNS is being pointed to the new server".to_owned()),
        },
        "switched" | "notified" | "syncing_mail" | "checking_mail" => step(
            "final_mail_sync",
            account.mail.as_ref().and_then(|m| m.sync_due.clone()),
            "on the new server; the last mail is being copied from the old one".to_owned(),
        ),
        "done" => match waiting {
            Some(d) => step(
                "waits_for_customer",
                None,
                format!(
                    "moved; {} waits for the customer to change its records at their DNS provider",
                    d.domain
                ),
            ),
            None => step("done", None, "moved".to_owned()),
        },
        "held" | "failed" => step(
            "held",
            None,
            format!("held for an operator: {}", account.reason.clone().unwrap_or_default()),
        ),
        "awaiting_target_ip" => step("waits_for_ip", None, account.reason.clone().unwrap_or_default()),
        "rolled_back" => step(
            "rolled_back",
            None,
            format!("rolled back to the old server: {}", account.reason.clone().unwrap_or_default()),
        ),
        other => step(other, None, other.replace('_', " ")),
    }
}

/// Which events `siirto log` shows: those of one account, of one domain, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only the events of this account (its domains' included).
    pub account: Option<AccountName>,
    /// Only the events of this domain.
    pub domain: Option<DomainName>,
}

impl LogFilter {
    /// Whether the event passes the filter.
    pub fn matches(&self, row: &EventRow) -> bool {
        let account_ok = self.account.as_ref().is_none_or(|a| row.account.as_deref() == Some(a.as_str()));
        let domain_ok = self.domain.as_ref().is_none_or(|d| row.domain.as_deref() == Some(d.as_str()));
        account_ok && domain_ok
    }
}

/// The events of migration `id` written after event `after` (0: from the start) that pass
/// `filter`, in words, with the id of the last event read (filtered out or not), from which the
/// next call goes on. An unknown migration has no events: ask [`Store::require_migration`]
/// first.
pub async fn log_entries(
    store: &Store,
    id: &str,
    after: i64,
    filter: &LogFilter,
) -> anyhow::Result<(Vec<LogEntry>, i64)> {
    let rows = store.events_after(id, after).await?;
    let last = rows.last().map_or(after, |row| row.id);
    Ok((rows.iter().filter(|row| filter.matches(row)).map(log_entry).collect(), last))
}

/// One event row in words.
pub fn log_entry(row: &EventRow) -> LogEntry {
    LogEntry {
        id: row.id,
        at: from_millis(row.at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        account: row.account.clone(),
        domain: row.domain.clone(),
        kind: row.kind.clone(),
        text: describe_event(row),
        actor: row.actor.clone(),
    }
}

/// What an event says happened, in words: a state machine's event by its own description, the
/// other kinds the engine, the operator actions and the planner write by their details, and any
/// other kind by its name.
pub fn describe_event(row: &EventRow) -> String {
    let detail: serde_json::Value = serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null);
    let event = detail.get("event").cloned().unwrap_or(serde_json::Value::Null);
    // Which machine's event it is follows from what it concerns.
    let machine = match (&row.account, &row.domain) {
        (_, Some(_)) => serde_json::from_value::<DomainEvent>(event)
            .ok()
            .filter(|e| e.name() == row.kind)
            .map(|e| e.describe()),
        (Some(_), None) => serde_json::from_value::<AccountEvent>(event)
            .ok()
            .filter(|e| e.name() == row.kind)
            .map(|e| e.describe()),
        (None, None) => serde_json::from_value::<MigrationEvent>(event)
            .ok()
            .filter(|e| e.name() == row.kind)
            .map(|e| e.describe()),
    };
    if let Some(text) = machine {
        return text;
    }
    let number = |key: &str| detail.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let text = |key: &str| detail.get(key).and_then(serde_json::Value::as_str).unwrap_or("").to_owned();
    match row.kind.as_str() {
        "migration_planned" => format!(
            "planned: {} account(s), {} domain(s), {} flagged for a person",
            number("accounts"),
            number("domains"),
            number("flagged")
        ),
        "preflight_passed" => "pre-flight checks passed".to_owned(),
        "preflight_failed" => "pre-flight checks found a hard failure".to_owned(),
        "transfer_sessions_paused" => "transfer sessions paused".to_owned(),
        "transfer_sessions_resumed" => "transfer sessions resumed".to_owned(),
        "transfer_sessions_aborted" => "transfer sessions aborted".to_owned(),
        "step_failed" => format!(
            "step {} failed (attempt {}), retrying in {}: {}",
            text("job"),
            number("attempt"),
            humantime::format_duration(std::time::Duration::from_millis(number("retry_in_ms"))),
            text("error")
        ),
        "notice_resent" => format!("{} notice sent again, with the same Message-ID", text("kind")),
        "mail_routing_switched" => {
            let changed: Vec<&str> = detail
                .get("changed")
                .and_then(serde_json::Value::as_array)
                .map(|names| names.iter().filter_map(serde_json::Value::as_str).collect())
                .unwrap_or_default();
            format!(
                "mail routing on {} set to {} for {}",
                text("host"),
                text("routing"),
                if changed.is_empty() { "no domain (already so)".to_owned() } else { changed.join(", ") }
            )
        }
        "external_mail_followed_up" => {
            "public DNS shows the target: mail routing on the source set to remote, mail synced as the playbook says".to_owned()
        }
        "site_ip_set" => format!("site address set to {} on the target", text("to")),
        "transfer_item_refused" => format!("the target refused the transfer item: {}", text("message")),
        "operator_task" => format!("operator task {}: {}", row.id, text("task")),
        "operator_task_acknowledged" => {
            let note = detail["note"].as_str().map(|n| format!(" ({n})")).unwrap_or_default();
            format!("operator task {} done: {}{note}", detail["task"], text("what"))
        }
        "transfer_item_already_queued" => {
            "the transfer item was already queued by an earlier run (a repeat, not a refusal)".to_owned()
        }
        "domain_ttl_observed_again" => {
            let said: Vec<&str> = detail
                .get("records")
                .and_then(serde_json::Value::as_array)
                .map(|lines| lines.iter().filter_map(serde_json::Value::as_str).collect())
                .unwrap_or_default();
            format!("TTLs read again after a restart: {}", said.join("; "))
        }
        other => other.replace('_', " "),
    }
}
