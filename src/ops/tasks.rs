//! Acknowledging an operator task: a change siirto cannot make itself (a spam filter's
//! delivery route, another mail host), listed on the migration's timeline until a person says
//! it is done.

use anyhow::bail;

use crate::domain::{Timestamp, from_millis, to_millis};
use crate::store::{EventRow, NewEvent, Store};

/// What `siirto ack` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// The migration the task belongs to.
    pub migration: String,
    /// The task (its event id).
    pub task: i64,
    /// What it asked for.
    pub what: String,
    /// How many different people have confirmed it now, this one included.
    pub confirmations: u64,
    /// How many it needs (two for destroying disks).
    pub needs: u64,
    /// The decommission stage this acknowledgement completed, if any.
    pub stage_done: Option<String>,
}

/// How many different people must confirm a task (its detail's `needs`, else one).
pub fn needs_of(detail: &serde_json::Value) -> u64 {
    detail["needs"].as_u64().unwrap_or(1).max(1)
}

/// Records that `by` did operator task `task` (the id `siirto status` and `siirto tasks` list
/// it with), with an optional note. A task that needs two people (destroying disks) stays open
/// after the first, and the second must be someone else. The last confirmation of a manual
/// decommission stage's last task completes the stage. Refused, naming the task, when there is
/// no such task, it is confirmed already (by whom, when), or `by` confirmed it already.
pub async fn ack_task(
    store: &Store,
    task: i64,
    by: &str,
    note: Option<&str>,
    now: Timestamp,
) -> anyhow::Result<Acknowledged> {
    let by = by.trim();
    if by.is_empty() {
        bail!("an acknowledgement names who did the task (--by)");
    }
    let Some(event) = store.event(task).await?.filter(|e| e.kind == "operator_task") else {
        bail!("there is no operator task {task} (siirto tasks MIGRATION lists them with their numbers)");
    };
    let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap_or_default();
    let needs = needs_of(&detail);
    let what = detail["task"].as_str().unwrap_or_default().to_owned();
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    let mut tx = store.begin().await?;
    // Read inside the transaction (SQLite: the write lock is held; PostgreSQL: the stage row,
    // when there is one, is locked first), so two people acknowledging at once are counted
    // one after the other.
    let stage = match detail["stage"].as_i64() {
        Some(place) if !detail["undo"].as_bool().unwrap_or(false) => {
            tx.stage_for_update(&event.migration_id, place).await?
        }
        _ => None,
    };
    let earlier = acks_of(store, &event.migration_id).await?;
    let mine: Vec<&EventRow> = earlier.iter().filter(|e| task_of(&e.detail) == Some(task)).collect();
    if mine.len() as u64 >= needs {
        let names = mine.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>().join(" and ");
        let last = mine.last().map(|e| from_millis(e.at).to_rfc3339()).unwrap_or_default();
        bail!("operator task {task} was acknowledged already, by {names} (last at {last})");
    }
    if let Some(own) = mine.iter().find(|e| e.actor == by) {
        bail!(
            "{by} acknowledged operator task {task} already at {}; it needs {needs} different people, so someone else must confirm it",
            from_millis(own.at).to_rfc3339()
        );
    }
    let confirmations = mine.len() as u64 + 1;
    tx.append_event(&NewEvent {
        migration_id: event.migration_id.clone(),
        account: event.account.clone(),
        domain: event.domain.clone(),
        kind: "operator_task_acknowledged".to_owned(),
        detail: serde_json::json!({
            "task": task, "what": what, "note": note, "confirmations": confirmations, "needs": needs,
        })
        .to_string(),
        actor: by.to_owned(),
        at: to_millis(now),
    })
    .await?;
    let mut stage_done = None;
    if let Some(mut stage) = stage.filter(|s| s.state == "waiting")
        && confirmations == needs
    {
        // The stage is done when each of its tasks has its confirmations.
        let tasks: Vec<i64> = serde_json::from_str::<serde_json::Value>(&stage.detail)
            .ok()
            .and_then(|d| d["tasks"].as_array().map(|t| t.iter().filter_map(|v| v.as_i64()).collect()))
            .unwrap_or_default();
        let mut complete = true;
        for other in tasks.iter().filter(|t| **t != task) {
            let needed = match store.event(*other).await? {
                Some(e) => needs_of(&serde_json::from_str(&e.detail).unwrap_or_default()),
                None => 1,
            };
            let got = earlier.iter().filter(|e| task_of(&e.detail) == Some(*other)).count() as u64;
            complete &= got >= needed;
        }
        if complete {
            stage.state = "done".to_owned();
            stage.updated_at = to_millis(now);
            tx.update_stage(&stage).await?;
            tx.append_event(&NewEvent {
                migration_id: event.migration_id.clone(),
                account: None,
                domain: None,
                kind: "decommission_done".to_owned(),
                detail: serde_json::json!({ "stage": stage.stage, "name": stage.name, "tasks": tasks })
                    .to_string(),
                actor: by.to_owned(),
                at: to_millis(now),
            })
            .await?;
            crate::decommission::wake_next_stage(&mut tx, &event.migration_id, stage.stage, to_millis(now))
                .await?;
            stage_done = Some(stage.name.clone());
        }
    }
    tx.commit().await?;
    Ok(Acknowledged { migration: event.migration_id, task, what, confirmations, needs, stage_done })
}

async fn acks_of(store: &Store, migration: &str) -> anyhow::Result<Vec<EventRow>> {
    Ok(store.events_of_kinds(migration, &["operator_task_acknowledged"]).await?)
}

fn task_of(detail: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(detail).ok().and_then(|d| d["task"].as_i64())
}
