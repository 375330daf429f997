//! TTL restore: after the settle period, the changed records of a cut-over account (or of a
//! rolled-back one, counted from its rollback) get their original TTLs back.

use std::collections::BTreeMap;

use anyhow::Context;
use tracing::info;

use crate::dns::{Rrset, RrsetChange};
use crate::domain::{DomainEvent, DomainState};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::names::DomainName;
use crate::store::{DomainRow, JobRow, Lease, domain_state};

/// Gives the changed records of an account's cut-over domains their original TTLs back,
/// one PATCH per zone; records already at their original TTL are not sent. A rolled-back
/// domain's records get theirs back once the settle period has passed since its rollback.
pub async fn restore_ttl(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let user = job.subject.as_str();
    if !cx.lock_account_dns(ctx, lease, user).await? {
        return Ok(());
    }
    let domains = cx.store.domains_of(ctx.id.as_str(), user).await?;
    let settle_after =
        chrono::Duration::from_std(ctx.playbook.schedule.settle_after).unwrap_or(chrono::Duration::MAX);
    let now = cx.now();
    let mut zones: BTreeMap<String, Vec<(DomainRow, DomainState)>> = BTreeMap::new();
    for row in domains {
        let state = domain_state(&row)?;
        let due = match &state {
            DomainState::ServingTarget { .. } => true,
            DomainState::RolledBack { at, ttl_restored_at: None, .. } => {
                at.checked_add_signed(settle_after).is_some_and(|due| due <= now)
            }
            _ => false,
        };
        if due {
            zones.entry(row.zone.clone()).or_default().push((row, state));
        }
    }
    for (zone, members) in &zones {
        let zone_name = DomainName::parse(zone).context("stored zone")?;
        let zone_data = cx.world.dns.zone(&zone_name).await.map_err(|err| classify!(err))?;
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
        cx.write_zone(lease, &zone_name, &changes).await?;
    }
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    for members in zones.values() {
        for (row, state) in members {
            cx.apply_domain(&mut tx, ctx, row, state, DomainEvent::TtlRestored).await?;
        }
    }
    cx.schedule_settle(&mut tx, ctx, &format!("ttl_restored:{user}")).await?;
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(account = user, "TTLs restored");
    Ok(())
}
