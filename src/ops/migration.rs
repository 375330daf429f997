//! The actions on a whole migration: approve, pre-flight, start, pause, resume, abort.

use std::collections::BTreeSet;

use anyhow::{Context, anyhow};

use super::{act, job, load, playbook_of, transition};
use crate::config::Config;
use crate::domain::{
    AccountState, MigrationEvent, MigrationState, Timestamp, migration_transition, to_millis,
};
use crate::engine::JobKind;
use crate::names::MigrationId;
use crate::preflight::PreflightReport;
use crate::store::{NewEvent, Store, account_state};
use crate::transfer_control::{Control, SessionOutcome, tell_session};
use crate::whm::TransferSessionId;
use crate::world::World;

/// Approves a reviewed plan, recording who approved it (`actor`); only an approved plan can be
/// started.
pub async fn approve(
    store: &Store,
    id: &MigrationId,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<MigrationState> {
    act(store, id, MigrationEvent::Approved { by: actor.to_owned() }, now, actor).await
}

/// `siirto preflight`: runs every pre-flight check of the migration and records the report on
/// its timeline (`preflight_passed` / `preflight_failed`); starts nothing.
pub async fn preflight(
    store: &Store,
    config: &Config,
    world: &World,
    id: &MigrationId,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<PreflightReport> {
    let report = crate::preflight::preflight(store, config, world, id, now).await?;
    crate::preflight::record(store, &report, now, actor).await.context("recording the pre-flight report")?;
    Ok(report)
}

/// What [`start`] did: the report, and the new state when it started.
#[derive(Debug)]
pub struct StartOutcome {
    /// The pre-flight report (recorded on the timeline).
    pub report: PreflightReport,
    /// The migration's new state, or `None` when a hard failure refused the start.
    pub started: Option<MigrationState>,
}

/// `siirto start`: refuses a migration that cannot start before checking anything, runs the
/// pre-flight, records it, and starts the migration only when nothing hard was found: the
/// daemon then lowers the TTLs at the playbook's offset before the cutover (at once if that
/// moment has passed).
pub async fn start(
    store: &Store,
    config: &Config,
    world: &World,
    id: &MigrationId,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<StartOutcome> {
    let (row, state) = load(store, id).await?;
    // The refusal the start itself would give (not approved, already started, …), before any
    // host is asked anything.
    migration_transition(&state, &MigrationEvent::Started, now)
        .map_err(|refusal| anyhow!("migration {}: {refusal}", row.id))?;
    let report = preflight(store, config, world, id, actor, now).await?;
    if !report.passed() {
        return Ok(StartOutcome { report, started: None });
    }
    let playbook = playbook_of(&row)?;
    let lower_at = row.cutover_at - playbook.schedule.lower_ttl_before.as_millis() as i64;
    let mut tx = store.begin().await?;
    let next = transition(&mut tx, &row, &state, MigrationEvent::Started, now, actor).await?;
    tx.schedule_job(&job(
        &row,
        JobKind::LowerTtl,
        "",
        lower_at.max(to_millis(now)),
        format!("lower_ttl:{id}"),
    ))
    .await?;
    // Every customer is told `announce_before` the cutover (at once when that has passed; the
    // step skips what is past its lateness limit).
    let announce_at = row.cutover_at - playbook.schedule.announce_before.as_millis() as i64;
    tx.schedule_job(&job(
        &row,
        JobKind::Announce,
        "",
        announce_at.max(to_millis(now)),
        format!("announce:{id}"),
    ))
    .await?;
    // Customer service is briefed the day before.
    let brief_at = row.cutover_at - crate::engine::BRIEF_BEFORE.as_millis() as i64;
    tx.schedule_job(&job(
        &row,
        JobKind::BriefStaff,
        "",
        brief_at.max(to_millis(now)),
        format!("brief_staff:{id}"),
    ))
    .await?;
    tx.commit().await?;
    Ok(StartOutcome { report, started: Some(next) })
}

/// What pause, resume and abort did: the migration's new state, and what each of its transfer
/// sessions on the target said.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionControl {
    /// The migration's new state.
    pub state: MigrationState,
    /// One outcome per transfer session that may still have been running.
    pub sessions: Vec<SessionOutcome>,
}

impl SessionControl {
    /// True when every session was told (the migration's own state changed in any case).
    pub fn all_told(&self) -> bool {
        self.sessions.iter().all(|s| s.ok)
    }
}

/// What a reschedule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescheduled {
    /// The cutover before.
    pub from: Timestamp,
    /// The cutover now.
    pub to: Timestamp,
    /// Scheduled jobs (TTL lowering, advance notices, staff briefing) moved with it.
    pub moved_jobs: u64,
    /// Whether the customers' advance notices are being corrected (the migration had started,
    /// so some may have gone out).
    pub correcting: bool,
}

/// `siirto reschedule`: moves the cutover, and with it every dated step not taken yet (TTL
/// lowering, advance notices, the staff briefing, the gate). Customers already told the old
/// date get a correction with the new one; those not told yet get the advance notice with the
/// new date only. Only before any account moves: after that, pause or abort instead.
pub async fn reschedule(
    store: &Store,
    id: &MigrationId,
    cutover: Timestamp,
    reason: &str,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<Rescheduled> {
    let (row, state) = load(store, id).await?;
    // Before any account moves: the TTLs may be lowered already (they stay short until the new
    // cutover), the gate then opens at the later of its own time and the new cutover.
    let (started, gate) = match state {
        MigrationState::Planned { .. } | MigrationState::Approved { .. } => (false, None),
        MigrationState::Started { .. } => (true, None),
        MigrationState::TtlLowered { gate_opens_at, .. } => (true, Some(gate_opens_at)),
        other => {
            return Err(anyhow!(
                "migration {id} is {}: a reschedule moves a migration before any account moves; \
                 pause or abort it instead",
                other.name()
            ));
        }
    };
    if reason.trim().is_empty() {
        return Err(anyhow!("--reason: say why (the customers already told read it)"));
    }
    if cutover <= now {
        return Err(anyhow!("--cutover {}: the new cutover must be in the future", cutover.to_rfc3339()));
    }
    let playbook = playbook_of(&row)?;
    let (from, to) = (row.cutover_at, to_millis(cutover));
    let at = |before: std::time::Duration| (to - before.as_millis() as i64).max(to_millis(now));
    let mut tx = store.begin().await?;
    tx.set_cutover(&row.id, to, to_millis(now)).await?;
    let mut moved_jobs = 0;
    for (kind, due) in [
        (JobKind::LowerTtl, at(playbook.schedule.lower_ttl_before)),
        (JobKind::Announce, at(playbook.schedule.announce_before)),
    ] {
        moved_jobs += tx.move_pending_jobs(&row.id, kind.as_str(), due).await?;
    }
    // Customer service, briefed already for the old date, is briefed again for the new one.
    let brief_at = at(crate::engine::BRIEF_BEFORE);
    match tx.move_pending_jobs(&row.id, JobKind::BriefStaff.as_str(), brief_at).await? {
        0 if started => {
            let dedupe = format!("brief_staff:{id}:{to}");
            tx.schedule_job(&job(&row, JobKind::BriefStaff, "", brief_at, dedupe)).await?;
            moved_jobs += 1;
        }
        moved => moved_jobs += moved,
    }
    if let Some(gate) = gate {
        moved_jobs +=
            tx.move_pending_jobs(&row.id, JobKind::OpenGate.as_str(), to_millis(gate).max(to)).await?;
    }
    tx.append_event(&NewEvent {
        migration_id: row.id.clone(),
        account: None,
        domain: None,
        kind: "rescheduled".to_owned(),
        detail: serde_json::json!({
            "from": crate::domain::from_millis(from),
            "to": cutover,
            "reason": reason,
        })
        .to_string(),
        actor: actor.to_owned(),
        at: to_millis(now),
    })
    .await?;
    if started {
        let payload = serde_json::json!({ "from": from, "reason": reason });
        let mut correct =
            job(&row, JobKind::CorrectNotices, "", to_millis(now), format!("correct_notices:{id}:{to}"));
        correct.payload = payload.to_string();
        tx.schedule_job(&correct).await?;
    }
    tx.commit().await?;
    Ok(Rescheduled { from: crate::domain::from_millis(from), to: cutover, moved_jobs, correcting: started })
}

/// Pauses a running migration (jobs wait until it is resumed), then its active transfer
/// sessions on the target.
pub async fn pause(
    store: &Store,
    world: &World,
    id: &MigrationId,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<SessionControl> {
    control(store, world, id, MigrationEvent::Paused, Control::Pause, actor, now).await
}

/// Resumes a paused migration where it stood, then restarts its paused transfer sessions.
pub async fn resume(
    store: &Store,
    world: &World,
    id: &MigrationId,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<SessionControl> {
    control(store, world, id, MigrationEvent::Resumed, Control::Resume, actor, now).await
}

/// Aborts a migration (nothing further happens to it), then its unfinished transfer sessions.
pub async fn abort(
    store: &Store,
    world: &World,
    id: &MigrationId,
    reason: &str,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<SessionControl> {
    let event = MigrationEvent::Aborted { reason: reason.to_owned() };
    control(store, world, id, event, Control::Abort, actor, now).await
}

/// The store first (the daemon stops acting on a paused or aborted migration at once), then
/// each session is told, and the outcome per session is recorded on the timeline
/// (`transfer_sessions_paused`, `…_resumed`, `…_aborted`).
async fn control(
    store: &Store,
    world: &World,
    id: &MigrationId,
    event: MigrationEvent,
    control: Control,
    actor: &str,
    now: Timestamp,
) -> anyhow::Result<SessionControl> {
    let (row, _) = load(store, id).await?;
    let target = world.host(&row.target_host).with_context(|| format!("the target of migration {id}"))?;
    let state = act(store, id, event, now, actor).await?;
    let mut sessions = Vec::new();
    for session in active_sessions(store, id).await? {
        sessions.push(tell_session(&target.whm, &session, control).await);
    }
    if !sessions.is_empty() {
        let kind = match control {
            Control::Pause => "transfer_sessions_paused",
            Control::Resume => "transfer_sessions_resumed",
            Control::Abort => "transfer_sessions_aborted",
        };
        let mut tx = store.begin().await?;
        tx.append_event(&NewEvent {
            migration_id: id.to_string(),
            account: None,
            domain: None,
            kind: kind.to_owned(),
            detail: serde_json::json!({ "sessions": sessions }).to_string(),
            actor: actor.to_owned(),
            at: to_millis(now),
        })
        .await?;
        tx.commit().await?;
    }
    Ok(SessionControl { state, sessions })
}

/// The migration's transfer sessions that may still be running on the target: those its
/// queued or copied accounts are in, and those created but not yet started.
pub async fn active_sessions(store: &Store, id: &MigrationId) -> anyhow::Result<Vec<TransferSessionId>> {
    let mut sessions = BTreeSet::new();
    for row in store.accounts(id.as_str()).await? {
        match account_state(&row)? {
            AccountState::Queued { session, .. } | AccountState::Copied { session, .. } => {
                sessions.insert(session);
            }
            _ => {}
        }
    }
    for job in store.jobs(id.as_str()).await? {
        let session_job =
            job.kind == JobKind::StartSession.as_str() || job.kind == JobKind::PollSession.as_str();
        if session_job && job.done_at.is_none() {
            sessions.insert(job.subject);
        }
    }
    sessions
        .into_iter()
        .map(|s| TransferSessionId::parse(&s).map_err(|e| anyhow!("stored session id: {e}")))
        .collect()
}
