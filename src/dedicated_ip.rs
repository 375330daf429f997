//! Accounts on a dedicated IP: `siirto assign-ip` (an operator gives the target address), and
//! what the engine needs to move them: the address pair of each account and the `setsiteip`
//! that puts the restored account's sites on the assigned address (check before act).
//!
//! Such an account is planned `awaiting_target_ip` with its source address recorded in the
//! `dedicated_ips` table. The engine does not send it until an address is assigned, and then
//! only when no other account still wants a transfer or is in one (it moves last). After the
//! restore the engine calls `setsiteip`, verifies the site on the assigned address against the
//! source's dedicated one, and repoints records from the source's dedicated address to the
//! assigned one (and records at the source's shared address to the target's shared one);
//! a rollback points them back. A migration is not cut over while an account waits for its
//! address: the operator either assigns one or the account stays visibly waiting.

use std::net::Ipv4Addr;

use anyhow::{Context, anyhow, bail};
use serde::Serialize;

use crate::domain::{AccountEvent, AccountState, MigrationState, Timestamp, account_transition, to_millis};
use crate::engine::JobKind;
use crate::names::{AccountName, MigrationId};
use crate::playbook::Playbook;
use crate::store::{DedicatedIpRow, NewEvent, NewJob, Store, StoreError, account_state, migration_state};
use crate::whm::{WhmClient, WhmError};

/// An account's dedicated source address and, once assigned, its target address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DedicatedIp {
    /// The account's dedicated IPv4 address at the source.
    pub source_ip: Ipv4Addr,
    /// The target address an operator assigned, if one was.
    pub target_ip: Option<Ipv4Addr>,
}

impl DedicatedIp {
    /// Parses a stored row; a bad address names the account.
    pub fn from_row(row: &DedicatedIpRow) -> anyhow::Result<DedicatedIp> {
        let parse = |field: &str, text: &str| -> anyhow::Result<Ipv4Addr> {
            text.parse().map_err(|_| {
                anyhow!("account {}: stored dedicated_ips.{field} {text:?} is not an IPv4 address", row.user)
            })
        };
        Ok(DedicatedIp {
            source_ip: parse("source_ip", &row.source_ip)?,
            target_ip: row.target_ip.as_deref().map(|ip| parse("target_ip", ip)).transpose()?,
        })
    }
}

/// What `siirto assign-ip` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The account's new state (`pending`).
    pub state: AccountState,
    /// Its dedicated source address.
    pub source_ip: Ipv4Addr,
    /// Whether a transfer was scheduled now (the cutover is under way); otherwise the account
    /// goes with the transfers when the TTL gate opens.
    pub transfer_scheduled: bool,
}

/// Assigns the target's dedicated address `ip` to an account waiting for one. Refused, with
/// the account and the address named, when the migration has no such account, the account is
/// not waiting for a target IP, the target's `listips` does not list `ip` as a dedicated
/// address, the target says an account uses it already, or another account of this
/// migration was given it. Records the assignment and who made it on the account's timeline
/// and, when the cutover is under way, schedules a transfer.
///
/// `target` is the migration's target host's WHM client. `listips` is documented at
/// <https://api.docs.cpanel.net/openapi/whm/operation/listips> (`dedicated`, `used`).
pub async fn assign_ip(
    store: &Store,
    target: &WhmClient,
    id: &MigrationId,
    user: &AccountName,
    ip: Ipv4Addr,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<Assigned> {
    let row = store.migration(id.as_str()).await?.ok_or_else(|| anyhow!("there is no migration {id}"))?;
    let migration = migration_state(&row)?;
    if let MigrationState::Aborted { .. } = migration {
        bail!("migration {id} was aborted; nothing more moves");
    }
    let account = store
        .account(id.as_str(), user.as_str())
        .await?
        .ok_or_else(|| anyhow!("migration {id} has no account {user}"))?;
    let state = account_state(&account)?;
    let AccountState::AwaitingTargetIp { source_ip } = state else {
        bail!(
            "account {user} is {}, not waiting for a target IP: only an account on a dedicated IP at the source, not yet assigned one, takes siirto assign-ip",
            state.name()
        );
    };
    let ips = target
        .list_ips()
        .await
        .with_context(|| format!("asking the target host {} for its addresses (listips)", row.target_host))?;
    let Some(listed) = ips.iter().find(|i| i.ip == ip) else {
        bail!(
            "account {user}: {ip} is not an address of the target host {} (its listips has {})",
            row.target_host,
            ips.iter().map(|i| i.ip.to_string()).collect::<Vec<_>>().join(", ")
        );
    };
    if !listed.dedicated {
        bail!(
            "account {user}: {ip} is a shared address of the target host {}, not a dedicated one",
            row.target_host
        );
    }
    if listed.used {
        bail!("account {user}: {ip} is already used by an account on the target host {}", row.target_host);
    }
    if let Some(other) = store
        .dedicated_ips(id.as_str())
        .await?
        .into_iter()
        .find(|d| d.user != user.as_str() && d.target_ip.as_deref() == Some(ip.to_string().as_str()))
    {
        bail!("account {user}: {ip} is already assigned to account {} of migration {id}", other.user);
    }
    let playbook =
        Playbook::parse(&row.playbook, &format!("playbook of migration {id}")).map_err(|e| anyhow!("{e}"))?;
    let policy = playbook.account_policy();
    let event = AccountEvent::TargetIpAssigned { ip };
    let next = account_transition(&state, &event, now, &policy)
        .map_err(|refusal| anyhow!("account {user}: {refusal}"))?;
    let now_ms = to_millis(now);
    let mut tx = store.begin().await?;
    match tx.assign_target_ip(id.as_str(), user.as_str(), &ip.to_string(), actor, now_ms).await {
        Ok(()) => {}
        Err(StoreError::Conflict { key, .. }) => {
            bail!("account {user}: {ip} is already assigned in migration {id}: {key}")
        }
        Err(StoreError::NotFound { .. }) => {
            bail!("account {user} is not waiting for a target IP in migration {id}")
        }
        Err(other) => return Err(other.into()),
    }
    tx.set_account_state(id.as_str(), user.as_str(), next.name(), &serde_json::to_string(&next)?, now_ms)
        .await?;
    let event_id = tx
        .append_event(&NewEvent {
            migration_id: row.id.clone(),
            account: Some(user.to_string()),
            domain: None,
            kind: event.name().to_owned(),
            detail: serde_json::json!({
                "event": event,
                "state": next.name(),
                "source_ip": source_ip.to_string(),
                "target_ip": ip.to_string(),
            })
            .to_string(),
            actor: actor.to_owned(),
            at: now_ms,
        })
        .await
        .context("recording the assignment")?;
    // Before the gate opens, the gate's own transfer picks the account up.
    let transfer_scheduled = matches!(migration, MigrationState::Transferring { .. });
    if transfer_scheduled {
        tx.schedule_job(&NewJob {
            migration_id: row.id.clone(),
            kind: JobKind::Transfer.as_str().to_owned(),
            subject: String::new(),
            payload: "{}".to_owned(),
            due_at: now_ms,
            dedupe_key: format!("assign_ip:{id}:{user}:{event_id}"),
        })
        .await?;
    }
    tx.commit().await?;
    Ok(Assigned { state: next, source_ip, transfer_scheduled })
}

/// What [`ensure_site_ip`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteIp {
    /// The account was on the address already (an earlier run set it).
    AlreadyThere,
    /// `setsiteip` moved it there from `from`.
    Set {
        /// The address it was on.
        from: Option<Ipv4Addr>,
    },
    /// The target does not list the account.
    NotOnTarget,
}

/// Puts a restored account's sites on `ip` on the target, unless `listaccts` shows them there
/// already (check before act: a crash after the call runs the step again). `setsiteip` is
/// documented at <https://api.docs.cpanel.net/openapi/whm/operation/setsiteip> (`user`, `ip`).
pub async fn ensure_site_ip(
    target: &WhmClient,
    user: &AccountName,
    ip: Ipv4Addr,
) -> Result<SiteIp, WhmError> {
    let listing = target.list_accounts().await?;
    let Some(account) = listing.items.iter().find(|a| &a.user == user) else {
        return Ok(SiteIp::NotOnTarget);
    };
    if account.ip == Some(ip) {
        return Ok(SiteIp::AlreadyThere);
    }
    target.set_site_ip(user, ip).await?;
    Ok(SiteIp::Set { from: account.ip })
}
