//! Lowering: each record that will change is observed (its TTL recorded) and then lowered to
//! the playbook's short TTL, one PATCH per zone; the migration's TTL gate opens once the old TTLs
//! (plus the margin) have passed since.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use futures::StreamExt;
use tracing::{info, warn};

use crate::dedicated_ip::DedicatedIp;
use crate::dns::rewrite::{aaaa_to_create, records_to_change, removed_values};
use crate::dns::{Rrset, RrsetChange};
use crate::domain::{DomainEvent, DomainState, MigrationEvent, MigrationState, ObservedRecord, to_millis};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult};
use crate::engine::jobs::JobKind;
use crate::names::DomainName;
use crate::store::{DomainRow, Lease, domain_state};

/// Zones handled by one run of the lowering job; the job reschedules itself for the rest, so
/// no run outlives its lease on a campaign of 50,000 domains.
const LOWER_TTL_ZONES_PER_RUN: u32 = 200;

/// Observes and lowers the TTLs of the records that will change, zone by zone (one PATCH
/// per zone), then sets the migration's TTL gate.
pub async fn lower_ttl(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    let MigrationState::Started { .. } = ctx.state else {
        return cx.finish(lease).await;
    };
    // Only the next zones' domains still to lower: a run never reads the whole migration.
    let rows = cx.store.domains_to_lower(ctx.id.as_str(), LOWER_TTL_ZONES_PER_RUN).await?;
    let mut by_zone: BTreeMap<String, Vec<DomainRow>> = BTreeMap::new();
    for row in rows {
        by_zone.entry(row.zone.clone()).or_default().push(row);
    }
    // A full run may leave zones for the next one; a short run was the last.
    let more = by_zone.len() >= LOWER_TTL_ZONES_PER_RUN as usize;
    let this_run: Vec<(String, Vec<DomainRow>)> = by_zone.into_iter().collect();
    let dedicated = cx.dedicated_all(ctx).await?;
    let results: Vec<StepResult> = futures::stream::iter(this_run)
        .map(|(zone, rows)| {
            // Every domain of the zone is being lowered now: they are the zone's tracked ones.
            let tracked = rows.iter().map(|r| r.domain.clone()).collect();
            lower_zone(cx, ctx, lease, zone, rows, tracked, &dedicated)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut first_transient = None;
    for result in results {
        match result {
            Ok(()) => {}
            Err(lost @ StepError::LeaseLost(_)) => return Err(lost),
            Err(err @ StepError::Transient(_)) => {
                first_transient.get_or_insert(err);
            }
            Err(StepError::Permanent(err)) => return Err(StepError::Permanent(err)),
        }
    }
    if let Some(err) = first_transient {
        return Err(err);
    }
    let now = cx.now_ms();
    if more {
        let mut tx = cx.store.begin_leased(lease).await?;
        tx.reschedule_job(lease, now).await?;
        return Ok(tx.commit().await?);
    }
    // Every domain is lowered: the migration's gate is the latest of the per-domain gates.
    let gate = ctx.gate_policy();
    if let Some(wait) = gate.wait_override {
        warn!(
            ?wait,
            "the playbook shortens the TTL wait (gate_wait_override): fine for tests and the demo, never for real customers"
        );
    }
    let mut gate_opens_at = cx.now();
    for row in cx.store.domains(ctx.id.as_str()).await? {
        if let DomainState::TtlLowered { records, lowered_at } = domain_state(&row)? {
            gate_opens_at = gate_opens_at.max(gate.domain_opens_at(lowered_at, &records));
        }
    }
    let due = to_millis(gate_opens_at).max(ctx.row.cutover_at);
    let mut tx = cx.store.begin_leased(lease).await?;
    cx.apply_migration(&mut tx, ctx, &ctx.state, MigrationEvent::TtlLowered { gate_opens_at }).await?;
    tx.schedule_job(&cx.job(
        ctx,
        JobKind::OpenGate,
        "",
        serde_json::json!({}),
        due,
        format!("open_gate:{}", ctx.id),
    ))
    .await?;
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(migration = %ctx.id, %gate_opens_at, "TTLs lowered; the cutover waits for the gate");
    Ok(())
}

/// Observes and lowers `rows`' records in one zone (one PATCH). `tracked` names every domain of
/// the migration in the zone, so a subdomain tracked on its own is not lowered with its parent.
pub async fn lower_zone(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    zone: String,
    rows: Vec<DomainRow>,
    tracked: Vec<String>,
    dedicated: &HashMap<String, DedicatedIp>,
) -> StepResult {
    let zone_name = DomainName::parse(&zone).context("stored zone name")?;
    let zone_data = match cx.world.dns.zone(&zone_name).await {
        Ok(data) => data,
        Err(err) if err.is_transient() => return Err(StepError::transient(err)),
        Err(err) => {
            // The zone cannot be read: its accounts are held with the reason, the rest goes on.
            let reason = format!("DNS zone {zone} could not be read: {err}");
            let mut tx = cx.store.begin_leased(lease).await?;
            for row in &rows {
                cx.hold_account(&mut tx, ctx, &row.user, reason.clone()).await?;
            }
            tx.commit().await?;
            return Ok(());
        }
    };
    let (source, target) = (ctx.source_end(), ctx.target_end());
    let short_ttl = ctx.playbook.dns.short_ttl;
    // 1. Record what we saw before changing anything: each record that will change, with
    //    the TTL it has now.
    let tracked: Vec<&str> = tracked.iter().map(String::as_str).collect();
    let mut tx = cx.store.begin_leased(lease).await?;
    let mut changes = Vec::new();
    let mut observed = Vec::new();
    for row in &rows {
        let domain = DomainName::parse(&row.domain).context("stored domain name")?;
        let moves = ctx.account_moves(dedicated.get(&row.user));
        let rrsets = records_to_change(&zone_data, &domain, &tracked, &moves);
        let mut records: Vec<ObservedRecord> = rrsets
            .iter()
            .map(|r| ObservedRecord {
                removed: removed_values(r, &source, &target),
                ..ObservedRecord::changed(r.name.clone(), r.rtype.clone(), r.ttl)
            })
            .collect();
        if ctx.playbook.dns.create_aaaa
            && source.ipv6.is_none()
            && let Some(target_v6) = target.ipv6
        {
            records.extend(aaaa_to_create(&zone_data, &rrsets, target_v6));
        }
        let state = domain_state(row)?;
        if let DomainState::TtlObserved { records: kept } = &state {
            // A re-run after a crash between the lowering and its record: the zone may already
            // carry the short TTL. The first observation stands; say so, once, in words.
            let repeats = already_lowered(kept, &records);
            if !repeats.is_empty() {
                let detail = serde_json::json!({ "records": repeats });
                tx.append_event(&cx.event(
                    ctx,
                    Some(&row.user),
                    Some(&row.domain),
                    "domain_ttl_observed_again",
                    detail,
                ))
                .await?;
            }
        }
        let state = cx.apply_domain(&mut tx, ctx, row, &state, DomainEvent::TtlObserved { records }).await?;
        // Never raised: a record already below the short TTL keeps its own.
        for rrset in rrsets {
            if rrset.ttl > short_ttl {
                changes.push(RrsetChange::Replace(Rrset { ttl: short_ttl, ..rrset.clone() }));
            }
        }
        observed.push((row.clone(), state));
    }
    tx.commit().await?;
    // 2. Lower: one PATCH for the zone.
    cx.write_zone(lease, &zone_name, &changes).await?;
    // 3. Record the lowering.
    let mut tx = cx.store.begin_leased(lease).await?;
    for (row, state) in observed {
        cx.apply_domain(&mut tx, ctx, &row, &state, DomainEvent::TtlLowered).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// For each record observed again with a TTL other than the one recorded first, e.g.
/// `"kukka.test. A: already lowered to 60; kept the observed 3600"`.
fn already_lowered(kept: &[ObservedRecord], now: &[ObservedRecord]) -> Vec<String> {
    now.iter()
        .filter_map(|seen| {
            let first = kept.iter().find(|k| k.name == seen.name && k.rtype == seen.rtype)?;
            (first.old_ttl != seen.old_ttl).then(|| {
                format!(
                    "{} {}: already lowered to {}; kept the observed {}",
                    seen.name, seen.rtype, seen.old_ttl, first.old_ttl
                )
            })
        })
        .collect()
}

pub async fn open_gate(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    let now = cx.now();
    let mut tx = cx.store.begin_leased(lease).await?;
    match &ctx.state {
        MigrationState::TtlLowered { gate_opens_at, .. } if now < *gate_opens_at => {
            tx.reschedule_job(lease, to_millis(*gate_opens_at)).await?;
        }
        MigrationState::TtlLowered { .. } => {
            cx.apply_migration(&mut tx, ctx, &ctx.state, MigrationEvent::GateOpened).await?;
            let dedupe = format!("transfer:{}:first", ctx.id);
            tx.schedule_job(&cx.job(
                ctx,
                JobKind::Transfer,
                "",
                serde_json::json!({}),
                to_millis(now),
                dedupe,
            ))
            .await?;
            tx.finish_job(lease, to_millis(now)).await?;
            info!(migration = %ctx.id, "TTL gate open; cutover begins");
        }
        _ => tx.finish_job(lease, to_millis(now)).await?,
    }
    Ok(tx.commit().await?)
}
