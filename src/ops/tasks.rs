//! Acknowledging an operator task: a change siirto cannot make itself (a spam filter's
//! delivery route, another mail host), listed on the migration's timeline until a person says
//! it is done.

use anyhow::bail;

use crate::domain::{Timestamp, to_millis};
use crate::store::{NewEvent, Store};

/// What `siirto ack` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// The migration the task belongs to.
    pub migration: String,
    /// The task (its event id).
    pub task: i64,
    /// What it asked for.
    pub what: String,
}

/// Records that `by` did operator task `task` (the id `siirto status` lists it with), with an
/// optional note. Refused, naming the task, when there is no such task or it was acknowledged
/// already (by whom, when).
pub async fn ack_task(
    store: &Store,
    task: i64,
    by: &str,
    note: Option<&str>,
    now: Timestamp,
) -> anyhow::Result<Acknowledged> {
    if by.trim().is_empty() {
        bail!("an acknowledgement names who did the task (--by)");
    }
    let Some(event) = store.event(task).await?.filter(|e| e.kind == "operator_task") else {
        bail!("there is no operator task {task} (siirto status MIGRATION lists them with their numbers)");
    };
    let earlier = store.events_of_kinds(&event.migration_id, &["operator_task_acknowledged"]).await?;
    let task_of = |detail: &str| {
        serde_json::from_str::<serde_json::Value>(detail).ok().and_then(|d| d["task"].as_i64())
    };
    if let Some(done) = earlier.iter().find(|e| task_of(&e.detail) == Some(task)) {
        bail!(
            "operator task {task} was acknowledged already, by {} at {}",
            done.actor,
            crate::domain::from_millis(done.at).to_rfc3339()
        );
    }
    let what = serde_json::from_str::<serde_json::Value>(&event.detail)
        .ok()
        .and_then(|d| d["task"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    let mut tx = store.begin().await?;
    tx.append_event(&NewEvent {
        migration_id: event.migration_id.clone(),
        account: event.account.clone(),
        domain: event.domain.clone(),
        kind: "operator_task_acknowledged".to_owned(),
        detail: serde_json::json!({ "task": task, "what": what, "note": note }).to_string(),
        actor: by.trim().to_owned(),
        at: to_millis(now),
    })
    .await?;
    tx.commit().await?;
    Ok(Acknowledged { migration: event.migration_id, task, what })
}
