//! A migration's transfer sessions on the target, and the transfer-side checks the engine
//! calls out to:
//!
//! - [`tell_session`]: what `crate::ops::pause`, `resume` and `abort` do to each of the
//!   migration's active transfer sessions on the target (WHM API 1
//!   `pause_transfer_session`; a paused session is restarted with `start_transfer_session`,
//!   which "starts or restarts" a session (guide "Pause and Restart",
//!   <https://api.docs.cpanel.net/openapi/whm/operation/start_transfer_session>);
//!   `abort_transfer_session`).
//! - [`packages_to_send`]: the packages the migration's accounts use that the target lacks,
//!   which a session enqueues (`PackageRemoteRoot`) before its accounts.
//! - [`account_presence`]: whether an account, its domains and its mailboxes exist on the
//!   target (`get_domain_info`, `list_pops_for` on both hosts), for verification.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::names::{AccountName, DomainName};
use crate::whm::{SessionState, TransferSessionId, WhmClient, WhmError};

/// What one session said to a control call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionOutcome {
    /// The transfer session id.
    pub session: String,
    /// `paused`, `restarted`, `aborted`, `already ended (STATE)`, or the error.
    pub outcome: String,
    /// False when the target refused or did not answer.
    pub ok: bool,
}

/// What to tell a transfer session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `pause_transfer_session` (a session not started yet is left pending).
    Pause,
    /// `start_transfer_session` on a paused session (others are left as they are).
    Resume,
    /// `abort_transfer_session`.
    Abort,
}

/// Tells one session on `target` to pause, resume or abort, after reading its state: a session
/// that has ended is left alone. What the target said is the outcome; a refusal or no answer is
/// an outcome too (`ok: false`), never an error, so one session cannot hide the others.
pub async fn tell_session(
    target: &WhmClient,
    session: &TransferSessionId,
    control: Control,
) -> SessionOutcome {
    let outcome = |outcome: String, ok: bool| SessionOutcome { session: session.to_string(), outcome, ok };
    let state = match target.transfer_session_state(session).await {
        Ok(state) => state,
        Err(err) => return outcome(err.to_string(), false),
    };
    if state.is_terminal() {
        return outcome(format!("already ended ({state:?})"), true);
    }
    let (result, done): (Result<(), WhmError>, &str) = match control {
        // A session not started yet has nothing to pause; the daemon starts it on resume.
        Control::Pause if matches!(state, SessionState::Pending | SessionState::TransferPending) => {
            (Ok(()), "not started yet; left pending")
        }
        Control::Pause => (target.pause_transfer_session(session).await, "paused"),
        Control::Resume if state == SessionState::Paused => {
            (target.start_transfer_session(session).await, "restarted")
        }
        Control::Resume => (Ok(()), "not paused; left as it is"),
        Control::Abort => (target.abort_transfer_session(session).await, "aborted"),
    };
    match result {
        Ok(()) => outcome(done.to_owned(), true),
        Err(err) => outcome(err.to_string(), false),
    }
}

/// The packages (`listaccts` `plan`) the migration's accounts use on `source` that `target`
/// does not list (`listpkgs`), sorted. `default` exists everywhere and is never sent.
pub async fn packages_to_send(
    source: &WhmClient,
    target: &WhmClient,
    users: &BTreeSet<String>,
) -> Result<Vec<String>, WhmError> {
    let (accounts, have) = tokio::try_join!(source.list_accounts(), target.list_packages())?;
    let have: BTreeSet<String> = have.into_iter().map(|p| p.name).collect();
    let wanted: BTreeSet<String> = accounts
        .items
        .into_iter()
        .filter(|a| users.contains(a.user.as_str()))
        .map(|a| a.plan)
        .filter(|plan| !plan.is_empty() && plan != "default" && !have.contains(plan))
        .collect();
    Ok(wanted.into_iter().collect())
}

/// What is missing on the target for one account; empty when everything is there.
pub async fn account_presence(
    source: &WhmClient,
    target: &WhmClient,
    user: &AccountName,
    domains: &[DomainName],
) -> Result<Vec<String>, WhmError> {
    let (target_domains, source_pops, target_pops) =
        tokio::try_join!(target.domain_info(), source.list_pops_for(user), async {
            match target.list_pops_for(user).await {
                // No such user on the target: no mailboxes; the missing account is said below.
                Err(WhmError::Failed { .. }) => Ok(Vec::new()),
                other => other,
            }
        })?;
    let owned: BTreeSet<&DomainName> =
        target_domains.items.iter().filter(|d| &d.user == user).map(|d| &d.domain).collect();
    let mut missing = Vec::new();
    if owned.is_empty() {
        missing.push(format!("account {user} does not exist on the target"));
    } else {
        let absent: Vec<&str> =
            domains.iter().filter(|d| !owned.contains(d)).map(DomainName::as_str).collect();
        if !absent.is_empty() {
            missing.push(format!("domains missing on the target: {}", absent.join(", ")));
        }
    }
    let target_pops: BTreeSet<&String> = target_pops.iter().collect();
    let absent: Vec<&str> =
        source_pops.iter().filter(|p| !target_pops.contains(p)).map(String::as_str).collect();
    if !absent.is_empty() {
        missing.push(format!("mailboxes missing on the target: {}", absent.join(", ")));
    }
    Ok(missing)
}
