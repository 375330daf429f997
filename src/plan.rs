//! Planning a migration: inventory the source host, place every domain in a zone of the
//! company's DNS, and record the migration with its accounts and domains.
//!
//! Planning only reads: the source host's WHM API and the DNS provider's zone list. Nothing is
//! changed anywhere until the operator starts the migration.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::dns::DnsProvider;
use crate::domain::{AccountState, DomainState, MigrationState, Timestamp, to_millis};
use crate::names::{DomainName, MigrationId};
use crate::playbook::Playbook;
use crate::store::{AccountRow, DomainRow, MigrationRow, NewEvent, Store};
use crate::whm::WhmClient;

/// What to plan.
pub struct PlanRequest<'a> {
    /// The migration's id.
    pub id: MigrationId,
    /// The source host's name in the config.
    pub source: &'a str,
    /// The target host's name in the config.
    pub target: &'a str,
    /// The playbook, validated; its source text is stored with the migration.
    pub playbook: &'a Playbook,
    /// When the cutover may begin at the earliest.
    pub cutover_at: Timestamp,
    /// Who planned it (for the event log).
    pub actor: &'a str,
}

/// What planning found and recorded.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    /// The migration's id.
    pub migration: String,
    /// Accounts recorded.
    pub accounts: usize,
    /// Domains recorded (in the company's zones).
    pub domains: usize,
    /// Zones those domains live in.
    pub zones: usize,
    /// Items the source host reported that were refused, with the reason.
    pub rejected: Vec<String>,
    /// Domains not in any zone of the company's DNS: not repointed by siirto (external DNS
    /// is a later issue); listed so nobody forgets them.
    pub not_in_our_dns: Vec<String>,
    /// What happens when, from the playbook's offsets around the cutover.
    pub schedule: Vec<ScheduleItem>,
}

/// One dated step of a migration's schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleItem {
    /// What happens.
    pub what: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// True when a person does it and confirms it.
    pub manual: bool,
}

/// The schedule a playbook gives around a cutover time: announcement, TTL lowering, cutover,
/// settling, and the decommission stages.
pub fn schedule(playbook: &Playbook, cutover: Timestamp) -> Vec<ScheduleItem> {
    let at = |offset: std::time::Duration, before: bool| {
        let offset = chrono::Duration::from_std(offset).unwrap_or(chrono::Duration::MAX);
        let when =
            if before { cutover.checked_sub_signed(offset) } else { cutover.checked_add_signed(offset) };
        when.unwrap_or(cutover).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let item = |what: String, at: String, manual: bool| ScheduleItem { what, at, manual };
    let mut items = vec![
        item(
            "announce the move to customers and resellers".into(),
            at(playbook.schedule.announce_before, true),
            false,
        ),
        item(
            format!("lower the TTLs of the records that will change to {} s", playbook.dns.short_ttl),
            at(playbook.schedule.lower_ttl_before, true),
            false,
        ),
        item(
            "cutover begins once the old TTLs have expired: transfers, checks, repoints, completion notices"
                .into(),
            at(std::time::Duration::ZERO, false),
            false,
        ),
        item(
            "settle: restore the normal TTLs, check no mail is stranded".into(),
            at(playbook.schedule.settle_after, false),
            false,
        ),
    ];
    for stage in &playbook.schedule.decommission {
        items.push(item(format!("decommission: {}", stage.name), at(stage.after, false), stage.manual));
    }
    items
}

/// Inventories the source host and records the migration as planned.
pub async fn plan(
    store: &Store,
    source: &WhmClient,
    dns: &dyn DnsProvider,
    request: PlanRequest<'_>,
    now: Timestamp,
) -> anyhow::Result<PlanReport> {
    if store.migration(request.id.as_str()).await?.is_some() {
        bail!("migration {} already exists; choose another --id", request.id);
    }
    let accounts = source.list_accounts().await.context("listing the source host's accounts (listaccts)")?;
    let domains =
        source.domain_info().await.context("listing the source host's domains (get_domain_info)")?;
    let zones = dns.zones().await.context("listing the zones of the company's DNS")?;

    let mut rejected: Vec<String> = accounts
        .rejected
        .iter()
        .chain(domains.rejected.iter())
        .map(|r| format!("{}: {}", r.raw, r.reason))
        .collect();

    let mut domains_of: BTreeMap<String, BTreeSet<DomainName>> = BTreeMap::new();
    for account in &accounts.items {
        domains_of.entry(account.user.to_string()).or_default().insert(account.domain.clone());
    }
    for domain in &domains.items {
        match domains_of.get_mut(domain.user.as_str()) {
            Some(set) => {
                set.insert(domain.domain.clone());
            }
            None => rejected
                .push(format!("{}: owned by {}, which listaccts does not list", domain.domain, domain.user)),
        }
    }

    let now_ms = to_millis(now);
    let mut account_rows = Vec::new();
    let mut domain_rows = Vec::new();
    let mut not_in_our_dns = Vec::new();
    let mut used_zones = BTreeSet::new();
    let pending_account = serde_json::to_string(&AccountState::Pending)?;
    let pending_domain = serde_json::to_string(&DomainState::Pending)?;
    for account in &accounts.items {
        account_rows.push(AccountRow {
            migration_id: request.id.to_string(),
            user: account.user.to_string(),
            main_domain: account.domain.to_string(),
            contact_email: account.email.clone(),
            disk_mb: account.disk_used_mb as i64,
            state: AccountState::Pending.name().to_owned(),
            data: pending_account.clone(),
            updated_at: now_ms,
        });
        for domain in domains_of.get(account.user.as_str()).into_iter().flatten() {
            // The zone is the longest zone name the domain lies in.
            let zone = zones.iter().filter(|z| domain.is_in(z)).max_by_key(|z| z.as_str().len());
            match zone {
                Some(zone) => {
                    used_zones.insert(zone.clone());
                    domain_rows.push(DomainRow {
                        migration_id: request.id.to_string(),
                        domain: domain.to_string(),
                        user: account.user.to_string(),
                        zone: zone.to_string(),
                        state: DomainState::Pending.name().to_owned(),
                        data: pending_domain.clone(),
                        updated_at: now_ms,
                    })
                }
                None => not_in_our_dns.push(format!("{domain} ({})", account.user)),
            }
        }
    }

    let state = MigrationState::Planned { planned_at: now };
    let row = MigrationRow {
        id: request.id.to_string(),
        source_host: request.source.to_owned(),
        target_host: request.target.to_owned(),
        playbook: request.playbook.source_text.clone(),
        cutover_at: to_millis(request.cutover_at),
        state: state.name().to_owned(),
        data: serde_json::to_string(&state)?,
        created_at: now_ms,
        updated_at: now_ms,
    };
    let report = PlanReport {
        migration: request.id.to_string(),
        accounts: account_rows.len(),
        domains: domain_rows.len(),
        zones: used_zones.len(),
        rejected,
        not_in_our_dns,
        schedule: schedule(request.playbook, request.cutover_at),
    };
    let mut tx = store.begin().await?;
    tx.insert_migration(&row).await?;
    for account in &account_rows {
        tx.insert_account(account).await?;
    }
    for domain in &domain_rows {
        tx.insert_domain(domain).await?;
    }
    tx.append_event(&NewEvent {
        migration_id: request.id.to_string(),
        account: None,
        domain: None,
        kind: "migration_planned".to_owned(),
        detail: serde_json::to_string(&report)?,
        actor: request.actor.to_owned(),
        at: now_ms,
    })
    .await?;
    tx.commit().await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_follows_the_playbook_offsets() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/shared-hosting.toml"))
                .unwrap();
        let playbook = Playbook::parse(&text, "shared-hosting.toml").unwrap();
        let cutover =
            chrono::DateTime::parse_from_rfc3339("2026-12-01T22:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let items = schedule(&playbook, cutover);
        let at = |fragment: &str| items.iter().find(|i| i.what.contains(fragment)).unwrap().at.clone();
        assert_eq!(at("announce"), "2026-11-17T22:00:00Z");
        assert_eq!(at("lower the TTLs"), "2026-11-30T22:00:00Z");
        assert_eq!(at("cutover begins"), "2026-12-01T22:00:00Z");
        assert_eq!(at("suspend"), "2026-12-31T22:00:00Z");
        let power_off = items.iter().find(|i| i.what.contains("power off")).unwrap();
        assert!(power_off.manual);
        assert_eq!(power_off.at, "2027-03-01T22:00:00Z");
    }
}
