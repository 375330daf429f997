//! The operator actions of the page and the API: each one calls the [`crate::ops`] function the
//! CLI calls, with the token's holder as the actor (`web:NAME`), and says what happened in a
//! sentence, or why it was refused.

use std::net::Ipv4Addr;

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::names::{AccountName, DomainName, MigrationId};
use crate::store::StoreError;

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
    /// The HTTP status: 400 bad input, 404 no such migration or account, 409 refused in this
    /// state, 502 a host did not answer, 500 the store failed.
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

/// The longest reason an action takes (it goes into the event log and the notices).
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
            Ok(outcome(None, "acknowledged", format!("operator task {task} acknowledged: {}", done.what)))
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
    }
}
