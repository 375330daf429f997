//! The repoint: a verified account's records move to the target, one PATCH per zone once their
//! TTL gates are open and the batch passes the safety threshold; every own nameserver must then
//! serve the new address, and the source's mail routing is switched to `remote`.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use anyhow::{Context, anyhow};
use tracing::{debug, info, warn};

use crate::dns::Verification;
use crate::dns::rewrite::{
    Endpoint, apex_address_after, batch_refusal, created_rrset, records_to_change, rewrite_rrset_moves,
    write_rrset,
};
use crate::domain::{AccountEvent, AccountState, DomainEvent, DomainState, ObservedRecord, to_millis};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::names::{AccountName, DomainName};
use crate::store::{DomainRow, JobRow, Lease, StoreError, account_state, domain_state};
use crate::whm::MailRouting;

/// Repoints the account's domains (one PATCH per zone) once their gates are open, then
/// checks every own nameserver serves the target's address.
pub async fn repoint(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let user = job.subject.as_str();
    if !cx.lock_account_dns(ctx, lease, user).await? {
        return Ok(());
    }
    let Some((_, account_now)) =
        cx.account_for_step(ctx, user, |s| matches!(s, AccountState::Verified { .. })).await?
    else {
        return cx.finish(lease).await;
    };
    let gate = ctx.gate_policy();
    let now = cx.now();
    let domains = cx.store.domains_of(ctx.id.as_str(), user).await?;
    let states: Vec<DomainState> = domains.iter().map(domain_state).collect::<Result<_, StoreError>>()?;
    // The gate: every record of every domain of the account must have its gate open before
    // any of them moves; until then the job waits for the latest one.
    let latest_gate = states
        .iter()
        .filter_map(|state| match state {
            DomainState::VerifiedOnTarget { records, lowered_at } => {
                Some(gate.domain_opens_at(*lowered_at, records))
            }
            _ => None,
        })
        .filter(|opens| *opens > now)
        .max();
    if let Some(opens) = latest_gate {
        debug!(%opens, "the TTL gate of the account's records is not open yet");
        let mut tx = cx.store.begin_leased(lease).await?;
        tx.reschedule_job(lease, to_millis(opens)).await?;
        return Ok(tx.commit().await?);
    }
    // 1. Plan the batches, zone by zone, and check each against the safety threshold and
    //    the records recorded at the lowering, before anything is written.
    let (source, target) = (ctx.source_end(), ctx.target_end());
    let moves = ctx.account_moves(cx.dedicated_of(ctx, user).await?.as_ref());
    let mut expected: HashMap<String, Ipv4Addr> = HashMap::new();
    let mut zones: BTreeMap<String, Vec<(&DomainRow, &DomainState)>> = BTreeMap::new();
    for (row, state) in domains.iter().zip(&states) {
        if let DomainState::VerifiedOnTarget { .. } = state {
            zones.entry(row.zone.clone()).or_default().push((row, state));
        }
    }
    let mut batches = Vec::new();
    let mut refusals = Vec::new();
    for (zone, members) in &zones {
        let zone_name = DomainName::parse(zone).context("stored zone")?;
        let zone_data = cx.world.dns.zone(&zone_name).await.map_err(|err| classify!(err))?;
        // Only this zone's tracked domains: reading the whole migration's would make each
        // account's repoint cost O(all domains) on a 50,000-domain campaign.
        let zone_rows = cx.store.domains_in_zone(ctx.id.as_str(), zone).await?;
        let tracked: Vec<&str> = zone_rows.iter().map(|r| r.domain.as_str()).collect();
        let mut changed = Vec::new();
        let mut planned = Vec::new();
        for (row, state) in members {
            let domain = DomainName::parse(&row.domain).context("stored domain")?;
            planned.extend(state.records().iter().cloned());
            if let Some(ip) = apex_address_after(&zone_data, &domain, &moves) {
                expected.insert(row.domain.clone(), ip);
            }
            for rrset in records_to_change(&zone_data, &domain, &tracked, &moves) {
                if let Some(new) = rewrite_rrset_moves(rrset, &moves) {
                    changed.push(new);
                }
            }
            for record in state.records().iter().filter(|r| !r.created.is_empty()) {
                if let Some(new) = created_rrset(&zone_data, record, ctx.playbook.dns.short_ttl) {
                    changed.push(new);
                }
            }
        }
        if let Some(reason) = batch_refusal(&zone_data, &changed, &planned, ctx.playbook.dns.max_change_share)
        {
            refusals.push(format!("zone {zone}: {reason}"));
        }
        batches.push((zone_name, changed.into_iter().map(write_rrset).collect::<Vec<_>>()));
    }
    if !refusals.is_empty() {
        let reason = format!("repoint refused, nothing written: {}", refusals.join("; "));
        warn!(account = user, %reason, "safety threshold");
        let now = cx.now_ms();
        let mut tx = cx.store.begin_leased(lease).await?;
        cx.hold_account(&mut tx, ctx, user, reason).await?;
        tx.finish_job(lease, now).await?;
        return Ok(tx.commit().await?);
    }
    // 2. Write: one PATCH per zone.
    for (zone_name, changes) in &batches {
        cx.write_zone(lease, zone_name, changes).await?;
    }
    let mut tx = cx.store.begin_leased(lease).await?;
    let mut repointed = Vec::new();
    for (row, state) in domains.iter().zip(states) {
        let state = match state {
            DomainState::VerifiedOnTarget { .. } => {
                cx.apply_domain(&mut tx, ctx, row, &state, DomainEvent::Repointed).await?
            }
            other => other,
        };
        repointed.push((row, state));
    }
    tx.commit().await?;
    // 3. Verify on every own nameserver.
    for (row, state) in &repointed {
        if let DomainState::Repointed { records, .. } = state {
            let domain = DomainName::parse(&row.domain).context("stored domain")?;
            let wanted =
                Endpoint { ip: expected.get(&row.domain).copied().unwrap_or(target.ip), ..target.clone() };
            verify_served(cx, &domain, records, &wanted, &source).await?;
        }
    }
    // 4. Route the mail still arriving at the source to the target (crate::mailsync).
    let routing = if ctx.playbook.mail.switch_routing {
        let switched: Vec<DomainName> = repointed
            .iter()
            .filter(|(_, state)| matches!(state, DomainState::Repointed { .. }))
            .map(|(row, _)| DomainName::parse(&row.domain).context("stored domain"))
            .collect::<anyhow::Result<_>>()?;
        let user_name = AccountName::parse(user).context("stored user")?;
        lease.check()?;
        let change =
            crate::mailsync::set_routing(&ctx.source.whm, &user_name, &switched, MailRouting::Remote)
                .await
                .map_err(|err| classify!(err))?;
        Some(change)
    } else {
        None
    };
    // 5. Record, and restore the TTLs once the settle period has passed.
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    for (row, state) in &repointed {
        if let DomainState::Repointed { .. } = state {
            cx.apply_domain(&mut tx, ctx, row, state, DomainEvent::ResolutionVerified).await?;
        }
    }
    // The operator may have rolled the account back while the PATCH was in flight (the
    // action takes no DNS lock): then the records stay as recorded, the rollback job (which
    // waits for our lock) points them back, and the account is not switched.
    let account_row = tx
        .account_for_update(ctx.id.as_str(), user)
        .await?
        .ok_or_else(|| anyhow!("account {user} is not in migration {}", ctx.id))?;
    let account_state_now = account_state(&account_row)?;
    if account_state_now != account_now {
        info!(
            account = user,
            state = account_state_now.name(),
            "the account changed during its repoint; not switched"
        );
        tx.finish_job(lease, now).await?;
        return Ok(tx.commit().await?);
    }
    if let Some(change) = routing {
        // Domains on external DNS (or not repointed) keep local routing: their MX still names
        // the source until their DNS changes, and a source relaying to itself would bounce it.
        let kept_local: Vec<&str> =
            repointed.iter().filter(|(_, s)| !s.dns_is_ours()).map(|(row, _)| row.domain.as_str()).collect();
        tx.append_event(&cx.event(
            ctx,
            Some(user),
            None,
            "mail_routing_switched",
            serde_json::json!({
                "host": ctx.source.name,
                "routing": MailRouting::Remote.as_str(),
                "changed": change.changed,
                "already": change.already,
                "kept_local": kept_local,
            }),
        ))
        .await?;
    }
    cx.apply_account(&mut tx, ctx, user, &account_now, AccountEvent::DomainsSwitched).await?;
    cx.schedule_ttl_restore(&mut tx, ctx, user, "").await?;
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// Checks that every own nameserver serves the domain at `now` rather than `before`: its A
/// query answers exactly `now`'s address when the domain's own A record is among the changed
/// records, and its AAAA answer holds `now`'s IPv6 address (if it has one) and not
/// `before`'s when its own AAAA record is among them. A stale server is a transient failure
/// carrying the evidence.
pub async fn verify_served(
    cx: &Ctx,
    domain: &DomainName,
    records: &[ObservedRecord],
    now: &Endpoint,
    before: &Endpoint,
) -> StepResult {
    let apex = domain.fqdn();
    let changed =
        |rtype: &str| records.iter().any(|r| r.rtype == rtype && r.name.eq_ignore_ascii_case(&apex));
    if changed("A") {
        let expected = now.ip;
        match cx.world.checker.verify_a(domain, expected).await.map_err(|err| classify!(err))? {
            Verification::Served => {}
            Verification::Stale { server, got } => {
                return Err(StepError::Transient(anyhow!(
                    "{domain}: nameserver {server} still answers {got:?}, expected {expected}"
                )));
            }
        }
    }
    if changed("AAAA") {
        for (server, got) in cx.world.checker.aaaa_records(domain).await.map_err(|err| classify!(err))? {
            let missing = now.ipv6.is_some_and(|v6| !got.contains(&v6));
            let stale = before.ipv6.is_some_and(|v6| Some(v6) != now.ipv6 && got.contains(&v6));
            if missing || stale {
                let expected =
                    now.ipv6.map_or_else(|| "no AAAA at the old address".to_owned(), |v6| v6.to_string());
                return Err(StepError::Transient(anyhow!(
                    "{domain}: nameserver {server} still answers AAAA {got:?}, expected {expected}"
                )));
            }
        }
    }
    Ok(())
}
