//! The operator actions of the page and the API: each one calls the [`crate::ops`] function the
//! CLI calls, with the token's holder as the actor (`web:NAME`), and says what happened in a
//! sentence, or why it was refused.

use std::net::Ipv4Addr;

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::Timestamp;
use crate::names::{AccountName, DomainName, MigrationId};
use crate::store::{StageRow, Store, StoreError};

use super::{App, Principal};

/// An operator action on a migration or one of its accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pause the migration.
    Pause,
    /// Resume it.
    Resume,
    /// Abort it, saying why.
    Abort {
        /// Why.
        reason: String,
    },
    /// Retry a held or rolled-back account.
    Retry {
        /// The account.
        user: String,
    },
    /// Roll an account (or one domain of it) back to the source.
    Rollback {
        /// The account.
        user: String,
        /// One domain, or all.
        domain: Option<String>,
        /// Why.
        reason: String,
    },
    /// Acknowledge an operator task of the migration.
    Ack {
        /// The task's number.
        task: i64,
        /// What was done.
        note: Option<String>,
    },
    /// Give an account waiting for one its dedicated address on the target.
    AssignIp {
        /// The account.
        user: String,
        /// The target's address.
        ip: String,
    },
    /// Move a decommission stage that has not finished to a later date, saying why.
    PostponeStage {
        /// The stage's place, from 0.
        stage: i64,
        /// The new date: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` (a browser's `datetime-local`)
        /// read as UTC.
        until: String,
        /// Why.
        reason: String,
    },
    /// Skip a decommission stage that has not finished, saying why: it never runs.
    SkipStage {
        /// The stage's place, from 0.
        stage: i64,
        /// Why.
        reason: String,
    },
    /// Undo a decommission stage that ran (a suspension is reversed on the old server; a manual
    /// stage gets a task for its inverse), saying why.
    UndoStage {
        /// The stage's place, from 0.
        stage: i64,
        /// Why.
        reason: String,
    },
}

/// What an action did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionOutcome {
    /// The migration.
    pub migration: String,
    /// The account, for an account's action.
    pub account: Option<String>,
    /// The state it is in now.
    pub state: String,
    /// What happened, in words.
    pub message: String,
    /// Who did it, as recorded in the event log.
    pub actor: String,
}

/// Why an action was not done.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionError {
    /// The HTTP status: 400 bad input, 404 no such migration, account, task or stage, 409
    /// refused in this state, 422 a decommission action's blank or too long reason or
    /// unreadable date, 502 a host did not answer, 500 the store failed.
    #[serde(skip)]
    pub status: u16,
    /// Why, in words.
    pub error: String,
}

impl ActionError {
    fn new(status: StatusCode, error: impl Into<String>) -> ActionError {
        ActionError { status: status.as_u16(), error: error.into() }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A refusal from an operator function: the store's failures are 500, the rest are the
/// action's refusal in this state (409) with its words.
fn refused(err: anyhow::Error) -> ActionError {
    if let Some(store) = err.downcast_ref::<StoreError>()
        && !matches!(store, StoreError::NoMigration { .. } | StoreError::NotFound { .. })
    {
        tracing::error!(error = %format!("{err:#}"), "an operator action failed in the store");
        return ActionError::new(StatusCode::INTERNAL_SERVER_ERROR, "the store failed; see the daemon's log");
    }
    ActionError::new(StatusCode::CONFLICT, format!("{err:#}"))
}

/// The longest reason an action takes (it goes into the event log and the notices); the
/// decommission's operator functions take as many bytes.
pub const MAX_REASON: usize = 2000;

/// Performs `action` on migration `id` for `who`.
pub async fn perform(
    app: &App,
    who: &Principal,
    id: &str,
    action: Action,
) -> Result<ActionOutcome, ActionError> {
    let id = MigrationId::parse(id).map_err(|e| ActionError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if app.store.migration(id.as_str()).await.map_err(|e| refused(e.into()))?.is_none() {
        return Err(ActionError::new(StatusCode::NOT_FOUND, format!("there is no migration {id}")));
    }
    let user_of = |user: &str| {
        AccountName::parse(user).map_err(|e| ActionError::new(StatusCode::BAD_REQUEST, e.to_string()))
    };
    let reason = match &action {
        Action::Abort { reason } | Action::Rollback { reason, .. } => Some(reason),
        Action::Ack { note: Some(note), .. } => Some(note),
        _ => None,
    };
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ActionError::new(
            StatusCode::BAD_REQUEST,
            format!("a reason of at most {MAX_REASON} characters"),
        ));
    }
    let actor = who.actor();
    let now = app.clock.now();
    let store = &app.store;
    let world = &app.world;
    let outcome = |account: Option<&AccountName>, state: &str, message: String| ActionOutcome {
        migration: id.to_string(),
        account: account.map(ToString::to_string),
        state: state.to_owned(),
        message,
        actor: actor.clone(),
    };
    match action {
        Action::Pause | Action::Resume | Action::Abort { .. } => {
            let (done, verb) = match &action {
                Action::Pause => (crate::ops::pause(store, world, &id, &actor, now).await, "paused"),
                Action::Resume => (crate::ops::resume(store, world, &id, &actor, now).await, "resumed"),
                Action::Abort { reason } => {
                    if reason.trim().is_empty() {
                        return Err(ActionError::new(
                            StatusCode::BAD_REQUEST,
                            "an abort must say why (reason)",
                        ));
                    }
                    (crate::ops::abort(store, world, &id, reason.trim(), &actor, now).await, "aborted")
                }
                _ => unreachable!("matched above"),
            };
            let control = done.map_err(refused)?;
            let told = if control.sessions.is_empty() {
                String::new()
            } else if control.all_told() {
                format!("; its {} transfer session(s) were told", control.sessions.len())
            } else {
                "; some transfer sessions did not answer (see the timeline)".to_owned()
            };
            Ok(outcome(None, control.state.name(), format!("migration {id} {verb}{told}")))
        }
        Action::Retry { user } => {
            let user = user_of(&user)?;
            let state = crate::ops::retry(store, &id, &user, &actor, now).await.map_err(refused)?;
            Ok(outcome(Some(&user), state.name(), format!("account {user} will be tried again")))
        }
        Action::Rollback { user, domain, reason } => {
            let user = user_of(&user)?;
            let domain = match domain.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
                Some(d) => Some(
                    DomainName::parse(d)
                        .map_err(|e| ActionError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
                ),
                None => None,
            };
            if reason.trim().is_empty() {
                return Err(ActionError::new(StatusCode::BAD_REQUEST, "a rollback must say why (reason)"));
            }
            let request = crate::ops::RollbackRequest {
                id: &id,
                user: &user,
                domain: domain.as_ref(),
                reason: reason.trim(),
            };
            let state = crate::ops::rollback(store, world, request, &actor, now).await.map_err(refused)?;
            Ok(outcome(
                Some(&user),
                state.name(),
                format!("account {user} is being rolled back to the source"),
            ))
        }
        Action::Ack { task, note } => {
            let event = store.event(task).await.map_err(|e| refused(e.into()))?;
            if !event.is_some_and(|e| e.migration_id == id.as_str() && e.kind == "operator_task") {
                return Err(ActionError::new(
                    StatusCode::NOT_FOUND,
                    format!("migration {id} has no operator task {task}"),
                ));
            }
            let done =
                crate::ops::ack_task(store, task, &actor, note.as_deref(), now).await.map_err(refused)?;
            Ok(outcome(None, "acknowledged", acknowledged(&done)))
        }
        Action::AssignIp { user, ip } => {
            let user = user_of(&user)?;
            let ip: Ipv4Addr = ip.trim().parse().map_err(|_| {
                ActionError::new(StatusCode::BAD_REQUEST, format!("expected an IPv4 address, got {ip:?}"))
            })?;
            let assigned =
                crate::ops::assign_ip(store, world, &id, &user, ip, &actor, now).await.map_err(refused)?;
            let when = if assigned.transfer_scheduled { "it moves now" } else { "it moves with the others" };
            Ok(outcome(
                Some(&user),
                assigned.state.name(),
                format!("account {user} gets {ip} on the target; {when}"),
            ))
        }
        Action::PostponeStage { stage, until, reason } => {
            let found = stage_at(store, &id, stage).await?;
            let reason = stage_reason(&reason)?;
            let until = parse_until(&until)?;
            let place = found.stage.to_string();
            let row = crate::ops::postpone_stage(store, &id, &place, until, &actor, reason, now)
                .await
                .map_err(refused)?;
            Ok(outcome(
                None,
                &row.state,
                format!("decommission stage {:?} postponed to {}", row.name, until.to_rfc3339()),
            ))
        }
        Action::SkipStage { stage, reason } => {
            let found = stage_at(store, &id, stage).await?;
            let reason = stage_reason(&reason)?;
            let place = found.stage.to_string();
            let row =
                crate::ops::skip_stage(store, &id, &place, &actor, reason, now).await.map_err(refused)?;
            Ok(outcome(
                None,
                &row.state,
                format!("decommission stage {:?} skipped: it will not run", row.name),
            ))
        }
        Action::UndoStage { stage, reason } => {
            let found = stage_at(store, &id, stage).await?;
            let reason = stage_reason(&reason)?;
            let place = found.stage.to_string();
            let undone = crate::ops::undo_stage(store, world, &id, &place, &actor, reason, now)
                .await
                .map_err(refused)?;
            let given = if undone.accounts.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} account(s) unsuspended on the old server: {}",
                    undone.accounts.len(),
                    undone.accounts.join(", ")
                )
            };
            let task = undone
                .task
                .map(|t| format!("; operator task {t} opened for what a person must undo"))
                .unwrap_or_default();
            Ok(outcome(None, "undone", format!("decommission stage {:?} undone{given}{task}", undone.stage)))
        }
    }
}

/// What an acknowledgement did, in words: a task that needs another person says so.
fn acknowledged(done: &crate::ops::Acknowledged) -> String {
    let task = done.task;
    let mut message = if done.confirmations < done.needs {
        format!(
            "operator task {task}: confirmation {} of {}; someone else must confirm it too: {}",
            done.confirmations, done.needs, done.what
        )
    } else {
        format!("operator task {task} acknowledged: {}", done.what)
    };
    if let Some(stage) = &done.stage_done {
        message.push_str(&format!("; decommission stage {stage:?} is done"));
    }
    message
}

/// Stage `place` of migration `id`: 404 when it has none (before the cutover, which records
/// the stages, it has none at all).
async fn stage_at(store: &Store, id: &MigrationId, place: i64) -> Result<StageRow, ActionError> {
    let stages = store.stages(id.as_str()).await.map_err(|e| refused(e.into()))?;
    if let Some(found) = stages.iter().find(|s| s.stage == place) {
        return Ok(found.clone());
    }
    let message = if stages.is_empty() {
        format!("migration {id} has no decommission stages yet: they are recorded when it is cut over")
    } else {
        let names: Vec<String> = stages.iter().map(|s| format!("{} {:?}", s.stage, s.name)).collect();
        format!("migration {id} has no decommission stage {place}; its stages: {}", names.join(", "))
    };
    Err(ActionError::new(StatusCode::NOT_FOUND, message))
}

/// A decommission action's reason, trimmed: not blank, and within the event log's limit (the
/// operator functions count it in bytes, so both bytes and characters are checked here, where
/// a refusal is bad input, 422, and not a refusal in the stage's state).
fn stage_reason(reason: &str) -> Result<&str, ActionError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ActionError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "say why (reason): the event log records who changed the decommission, when and why",
        ));
    }
    if reason.len() > MAX_REASON {
        return Err(ActionError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("a reason of at most {MAX_REASON} bytes; this one has {}", reason.len()),
        ));
    }
    Ok(reason)
}

/// A postponement's new date: RFC 3339 (`2027-02-01T08:00:00Z`), or a date and time without
/// an offset (`2027-02-01T08:00`, what a browser's `datetime-local` field sends), read as UTC
/// as the page says. Anything else is bad input (422).
pub fn parse_until(text: &str) -> Result<Timestamp, ActionError> {
    let text = text.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(at.and_utc());
        }
    }
    Err(ActionError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("until {text:?}: expected an RFC 3339 time like 2027-02-01T08:00:00Z"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postponement_takes_rfc_3339_or_a_browsers_local_time_as_utc_and_nothing_else() {
        let utc = |text: &str| parse_until(text).map(|t| t.to_rfc3339()).map_err(|e| e.status);
        assert_eq!(utc("2027-02-01T08:00:00Z"), Ok("2027-02-01T08:00:00+00:00".to_owned()));
        assert_eq!(utc("2027-02-01T10:00:00+02:00"), Ok("2027-02-01T08:00:00+00:00".to_owned()));
        assert_eq!(utc(" 2027-02-01T08:00 "), Ok("2027-02-01T08:00:00+00:00".to_owned()));
        assert_eq!(utc("2027-02-01 08:00:30"), Ok("2027-02-01T08:00:30+00:00".to_owned()));
        for bad in ["", "tomorrow", "2027-02-30T08:00", "2027-02-01"] {
            assert_eq!(utc(bad), Err(422), "{bad:?}");
        }
    }

    #[test]
    fn a_stage_reason_is_trimmed_not_blank_and_within_the_limit_in_bytes() {
        assert_eq!(stage_reason("  audit  ").map_err(|e| e.status), Ok("audit"));
        assert_eq!(stage_reason(" \t").map_err(|e| e.status), Err(422));
        assert!(stage_reason(&"x".repeat(MAX_REASON)).is_ok());
        assert_eq!(stage_reason(&"ä".repeat(MAX_REASON / 2 + 1)).map_err(|e| e.status), Err(422));
    }
}
