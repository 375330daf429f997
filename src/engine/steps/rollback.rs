//! Rollback: an account (or one domain) an operator rolled back is pointed at the source again.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use anyhow::Context;
use tracing::info;

use crate::dns::rewrite::{Endpoint, apex_address_after, rollback_change};
use crate::domain::{DomainEvent, DomainState};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::engine::jobs::RollbackPayload;
use crate::engine::steps::repoint::verify_served;
use crate::names::{AccountName, DomainName};
use crate::store::{DomainRow, JobRow, Lease, domain_state};
use crate::whm::MailRouting;

/// Points a rolled-back account's records (or one domain's) back at the source, with the
/// short TTL again where it had been restored (one PATCH per zone, only what differs), checks
/// every own nameserver serves the source, and records each domain rolled back. The
/// operator's action has already checked that the source holds the account and recorded
/// who asked and why.
pub async fn rollback(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let user = job.subject.as_str();
    if !cx.lock_account_dns(ctx, lease, user).await? {
        return Ok(());
    }
    let payload: RollbackPayload = serde_json::from_str(&job.payload).context("rollback job payload")?;
    let short_ttl = ctx.playbook.dns.short_ttl;
    // The account's moves the other way round: assigned address back to the dedicated one.
    let (source, target) = (ctx.source_end(), ctx.target_end());
    let back: Vec<(Endpoint, Endpoint)> = ctx
        .account_moves(cx.dedicated_of(ctx, user).await?.as_ref())
        .into_iter()
        .map(|(from, to)| (to, from))
        .collect();
    let mut expected: HashMap<String, Ipv4Addr> = HashMap::new();
    let mut zones: BTreeMap<String, Vec<(DomainRow, DomainState)>> = BTreeMap::new();
    for row in cx.store.domains_of(ctx.id.as_str(), user).await? {
        if payload.domain.as_ref().is_some_and(|d| d != &row.domain) {
            continue;
        }
        let state = domain_state(&row)?;
        match state {
            DomainState::TtlLowered { .. }
            | DomainState::VerifiedOnTarget { .. }
            | DomainState::Repointed { .. }
            | DomainState::ServingTarget { .. }
            | DomainState::TtlRestored { .. } => {
                zones.entry(row.zone.clone()).or_default().push((row, state))
            }
            DomainState::Pending
            | DomainState::TtlObserved { .. }
            | DomainState::RolledBack { .. }
            // Not our DNS: nothing of it was changed, nothing to point back.
            | DomainState::External { .. }
            | DomainState::AwaitingCustomer { .. }
            | DomainState::Propagated { .. }
            | DomainState::NotRepointed { .. } => {}
        }
    }
    for (zone, members) in &zones {
        let zone_name = DomainName::parse(zone).context("stored zone")?;
        let zone_data = cx.world.dns.zone(&zone_name).await.map_err(|err| classify!(err))?;
        let mut changes = Vec::new();
        for (row, state) in members {
            if let Ok(domain) = DomainName::parse(&row.domain)
                && let Some(ip) = apex_address_after(&zone_data, &domain, &back)
            {
                expected.insert(row.domain.clone(), ip);
            }
            let relower = matches!(state, DomainState::TtlRestored { .. });
            for record in state.records() {
                changes
                    .extend(rollback_change(&zone_data, record, &back, &target, &source, short_ttl, relower));
            }
        }
        cx.write_zone(lease, &zone_name, &changes).await?;
    }
    for members in zones.values() {
        for (row, state) in members {
            let domain = DomainName::parse(&row.domain).context("stored domain")?;
            let wanted =
                Endpoint { ip: expected.get(&row.domain).copied().unwrap_or(source.ip), ..source.clone() };
            verify_served(cx, &domain, state.records(), &wanted, &target).await?;
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
        lease.check()?;
        Some(
            crate::mailsync::set_routing(&ctx.source.whm, &user_name, &back, MailRouting::Local)
                .await
                .map_err(|err| classify!(err))?,
        )
    } else {
        None
    };
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    if let Some(change) = routing {
        tx.append_event(&cx.event(
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
            cx.apply_domain(&mut tx, ctx, row, state, event).await?;
        }
    }
    // The short TTL stays for the settle period (a retry soon after needs no new wait), then
    // the original TTLs come back, as after a cutover.
    if !zones.is_empty() {
        cx.schedule_ttl_restore(&mut tx, ctx, user, "rollback:").await?;
    }
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(account = user, domain = ?payload.domain, "rolled back to the source");
    Ok(())
}
