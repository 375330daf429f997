//! Planning a migration: inventory the source host, find out how every domain's DNS and mail
//! are served, reconcile with the contracts, decide what happens to each account and domain,
//! and record it all as a reviewable plan.
//!
//! Planning only reads: the source host's WHM API, the DNS provider's zone list, the
//! resolvers the config names and the contract source. Nothing is changed anywhere until the
//! plan is approved and started.
//!
//! The plan is a [`PlanDocument`]; `siirto plan --json` prints it. Its schema, version 1:
//!
//! - `schema` (1), `migration`, `source`, `target`, `playbook`, `planned_at`, `cutover_at`
//!   (RFC 3339);
//! - `counts`: `accounts`, `domains`, and per action (`move_and_repoint`,
//!   `move_customer_must_repoint`, `move_not_repointed`, `held_for_operator`, `not_moved`),
//!   `flagged`;
//! - `accounts[]`: `user`, `main_domain`, `owner`, `package`, `contact_email` (the address
//!   notices go to), `disk_mb`, `suspended`, `ip`, `dedicated_ip`, `action`
//!   (`move` | `held_for_operator`: on a dedicated IP, it waits for `siirto assign-ip` and
//!   moves last; its domains get their own actions), `reasons[]`, `contract` (the reconciliation bucket, or
//!   null without a contract source), `domains[]`: `domain`, `kind`, `zone` (our zone, or
//!   null), `dns` (the classification: `outcome`, `ns`, `web`, `mail`, TTLs, `flags`, or null
//!   when no resolver is configured), `action`, `reasons[]`;
//! - `flagged[]`: `subject`, `reason`, `action` — every item that needs a person's look;
//! - `rejected[]`: items the source host reported that were refused, with the reason;
//! - `reconciliation`: the contract reconciliation (buckets, counts, resellers, row issues)
//!   or null;
//! - `schedule[]`: `what`, `at`, `manual`;
//! - `changes`: what differs from the previous plan of the same source (`since`,
//!   `accounts_added`, `accounts_removed`, `domains_added`, `domains_removed`,
//!   `accounts_changed[]` with `user` and `what`), or null for the first plan.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::contracts::{
    Bucket, EmailSource, InventoryAccount, IssueKind, Reconciliation, RowIssue, ServerInventory,
};
use crate::dns::classify::{
    Classifier, ClassifySettings, DomainClass, Facts, MailClass, NsClass, Outcome, WebClass,
};
use crate::domain::{AccountState, DomainState, MigrationState, SeenRecord, Timestamp, to_millis};
use crate::inventory::{HostFacts, Inventory, Package, Reseller, TargetChecks, VersionVerdict};
use crate::names::{AccountName, DomainName, MigrationId};
use crate::playbook::Playbook;
use crate::store::{AccountRow, DedicatedIpRow, DomainRow, MigrationRow, NewEvent, Store};
use crate::world::World;

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

/// The reviewable plan of a migration (see the module doc for the schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDocument {
    /// Schema version of this document.
    pub schema: u32,
    /// The migration's id.
    pub migration: String,
    /// Source host (config name).
    pub source: String,
    /// Target host (config name).
    pub target: String,
    /// The playbook's name.
    pub playbook: String,
    /// When the plan was made.
    pub planned_at: String,
    /// The earliest cutover.
    pub cutover_at: String,
    /// Counts.
    pub counts: PlanCounts,
    /// Every account and its domains with what will happen to them.
    pub accounts: Vec<PlannedAccount>,
    /// Everything that needs a person's look, with the reason and what will happen.
    pub flagged: Vec<FlaggedItem>,
    /// Items the source host reported that were refused.
    pub rejected: Vec<String>,
    /// The contract reconciliation, when the config names a contract source.
    pub reconciliation: Option<Reconciliation>,
    /// The source host's facts (version, shared and dedicated addresses).
    pub host: HostFacts,
    /// Resellers and the accounts each owns.
    pub resellers: Vec<Reseller>,
    /// Packages and the accounts on each.
    pub packages: Vec<Package>,
    /// The target checked against the source: user and domain clashes, free disk, versions.
    pub target_checks: Option<TargetChecks>,
    /// What happens when.
    pub schedule: Vec<ScheduleItem>,
    /// What changed since the previous plan of the same source.
    pub changes: Option<PlanChanges>,
}

/// Counts of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCounts {
    /// Accounts on the source.
    pub accounts: usize,
    /// Domains on the source.
    pub domains: usize,
    /// Domains siirto moves and repoints on our nameservers.
    pub move_and_repoint: usize,
    /// Domains whose DNS is elsewhere: moved, the customer must repoint.
    pub move_customer_must_repoint: usize,
    /// Domains moved with their account but not repointed (site elsewhere, no delegation…).
    pub move_not_repointed: usize,
    /// Accounts on a dedicated IP: they wait for an operator to assign a target IP
    /// (`siirto assign-ip`) and move last.
    pub held_for_operator: usize,
    /// Items a contract names on this server that are not on it.
    pub not_moved: usize,
    /// Flagged items.
    pub flagged: usize,
}

/// What happens to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountAction {
    /// Transferred in the cutover.
    Move,
    /// On a dedicated IP: waits for an operator to assign the target IP (`siirto assign-ip`),
    /// then moves after every other account. (The name is kept for the plan's JSON schema.)
    HeldForOperator,
}

/// What happens to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainAction {
    /// Moved with its account; its records on our nameservers are repointed.
    MoveAndRepoint,
    /// Moved with its account; its DNS is elsewhere, the customer must repoint.
    MoveCustomerMustRepoint,
    /// Moved with its account; nothing to repoint (site elsewhere, not delegated…).
    MoveNotRepointed,
    /// Its account is held for an operator (plans before dedicated-IP accounts waited for a
    /// target IP; no longer decided, kept so those plans still read).
    HeldForOperator,
}

/// One account of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedAccount {
    /// cPanel user.
    pub user: String,
    /// Main domain.
    pub main_domain: String,
    /// Owner (reseller or root).
    pub owner: String,
    /// Package.
    pub package: String,
    /// The address notices go to (the contract's, else WHM's), if any usable one exists.
    pub contact_email: Option<String>,
    /// Disk used, MB.
    pub disk_mb: u64,
    /// Suspended on the source.
    pub suspended: bool,
    /// Its IPv4 address on the source.
    pub ip: Option<Ipv4Addr>,
    /// On a dedicated IP.
    pub dedicated_ip: bool,
    /// What happens to it.
    pub action: AccountAction,
    /// Why, and anything worth knowing.
    pub reasons: Vec<String>,
    /// Its contract bucket.
    pub contract: Option<Bucket>,
    /// Its domains.
    pub domains: Vec<PlannedDomain>,
}

/// One domain of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedDomain {
    /// The domain.
    pub domain: String,
    /// main | addon | parked | sub.
    pub kind: String,
    /// The zone of our DNS provider it lives in, if any.
    pub zone: Option<String>,
    /// How its DNS and mail are served, if classified.
    pub dns: Option<DomainClass>,
    /// What happens to it.
    pub action: DomainAction,
    /// Why, and anything worth knowing.
    pub reasons: Vec<String>,
}

/// Something that needs a person's look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlaggedItem {
    /// The account, domain or contract it concerns.
    pub subject: String,
    /// What is wrong or unusual.
    pub reason: String,
    /// What siirto will do about it.
    pub action: String,
}

/// What planning does about a contract row issue, as the flag's action: said from what the
/// loader and the reconciliation actually did with the row, which differs per kind.
pub fn contract_issue_action(issue: &RowIssue, reconciliation: &Reconciliation) -> String {
    match issue.kind {
        IssueKind::EmptyCustomerId | IssueKind::WrongFieldCount => "that row is not used".to_owned(),
        IssueKind::InvalidValue if issue.raw.is_some() => "that row is not used".to_owned(),
        IssueKind::InvalidValue | IssueKind::InvalidService => {
            "that value is not used; the rest of the row is".to_owned()
        }
        IssueKind::NoService => "the customer is kept, but the row matches no account or domain".to_owned(),
        IssueKind::MissingServer => "its services are matched on whichever server they are found".to_owned(),
        IssueKind::DuplicateCustomer => "the customer's first row is kept for that field".to_owned(),
        IssueKind::DuplicateService => "this claim is not used; the first claim is kept".to_owned(),
        IssueKind::InvalidEmail => invalid_email_action(issue.customer_id.as_deref(), reconciliation),
    }
}

/// The row was used without the invalid address: say, per account matched to the row's
/// customer on this server, where its notices go instead.
fn invalid_email_action(customer_id: Option<&str>, reconciliation: &Reconciliation) -> String {
    let Some(customer_id) = customer_id else {
        return "the row is used without that address; no notice can be sent to it".to_owned();
    };
    let mut said = Vec::new();
    for account in reconciliation.accounts.iter().filter(|a| a.on_server) {
        if account.bucket.customer_id() != Some(customer_id) {
            continue;
        }
        let user = &account.user;
        let text = match &account.bucket {
            Bucket::Matched { emails, email_source, .. } => {
                let from = match email_source {
                    EmailSource::Contract => "from the contract",
                    EmailSource::Whm => "the account's WHM contact",
                };
                format!(
                    "{user} matched to customer {customer_id:?}, but no notice can be sent to the invalid address; notices go to {} ({from})",
                    emails.join(", ")
                )
            }
            Bucket::ContactMissingOrInvalid { .. } => format!(
                "{user} matched to customer {customer_id:?}, but no notice can be sent to the invalid address and there is no other usable one: its notices are held until an address is set"
            ),
            Bucket::ContractNamesAnotherServer { server, .. } => format!(
                "{user} matched to customer {customer_id:?}, whose contract names {server}; no notice can be sent to the invalid address"
            ),
            Bucket::OnServerNoContract | Bucket::ContractNamesThisServerButMissing { .. } => continue,
        };
        said.push(text);
    }
    if said.is_empty() {
        return format!(
            "customer {customer_id:?} is kept without that address; no account on this server matched it"
        );
    }
    said.join("; ")
}

/// One dated step of a migration's schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleItem {
    /// What happens.
    pub what: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// True when a person does it and confirms it.
    pub manual: bool,
}

/// What changed since the previous plan of the same source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanChanges {
    /// The previous plan's migration id.
    pub since: String,
    /// Accounts now on the source that were not before.
    pub accounts_added: Vec<String>,
    /// Accounts gone from the source.
    pub accounts_removed: Vec<String>,
    /// Domains now on the source that were not before.
    pub domains_added: Vec<String>,
    /// Domains gone.
    pub domains_removed: Vec<String>,
    /// Accounts whose facts changed, and what changed.
    pub accounts_changed: Vec<AccountChange>,
}

/// A changed account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountChange {
    /// cPanel user.
    pub user: String,
    /// What changed, e.g. `contact_email: a@x → b@x`.
    pub what: Vec<String>,
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

/// One account as inventoried, before any decision.
struct Found {
    user: AccountName,
    main_domain: DomainName,
    owner: String,
    package: String,
    email: Option<String>,
    disk_mb: u64,
    suspended: bool,
    ip: Option<Ipv4Addr>,
    dedicated_ip: bool,
    domains: BTreeMap<DomainName, String>,
}

/// Decides what happens to one domain from where its zone is and how its DNS is served.
pub fn domain_action(
    zone: Option<&str>,
    dns: Option<&DomainClass>,
) -> (DomainAction, Vec<String>, Vec<String>) {
    let mut reasons = Vec::new();
    let mut flags = Vec::new();
    let in_zone = zone.is_some();
    let Some(class) = dns else {
        // No resolver to ask: our zones decide.
        return if in_zone {
            (DomainAction::MoveAndRepoint, reasons, flags)
        } else {
            flags.push("not in any zone of our DNS provider".to_owned());
            (DomainAction::MoveNotRepointed, reasons, flags)
        };
    };
    let classification = match &class.outcome {
        Outcome::Failed { reason } => {
            flags.push(format!("DNS lookup failed: {reason}"));
            return if in_zone {
                reasons.push("its zone is on our DNS provider, so it is repointed there".to_owned());
                (DomainAction::MoveAndRepoint, reasons, flags)
            } else {
                (DomainAction::MoveNotRepointed, reasons, flags)
            };
        }
        Outcome::Classified(classification) => classification,
    };
    match &classification.mail {
        MailClass::SpamFilter { hosts } => flags.push(format!(
            "mail goes through the spam filter ({}): its routing needs its own change",
            hosts.join(", ")
        )),
        MailClass::Elsewhere { hosts } => {
            reasons.push(format!("mail is elsewhere ({}): never touched", hosts.join(", ")))
        }
        MailClass::Mixed { ours, elsewhere } => flags.push(format!(
            "mail is partly ours ({}) and partly elsewhere ({})",
            ours.join(", "),
            elsewhere.join(", ")
        )),
        MailClass::AtSource { .. } | MailClass::AtTarget { .. } | MailClass::None => {}
    }
    let site_elsewhere = match &classification.web {
        WebClass::Elsewhere { addresses } => {
            reasons.push(format!("the site is hosted elsewhere ({}): never repointed", join_ips(addresses)));
            true
        }
        WebClass::Mixed { elsewhere, .. } => {
            flags.push(format!(
                "some of its addresses are elsewhere ({}): only those at the source move",
                join_ips(elsewhere)
            ));
            false
        }
        WebClass::AtTarget { .. } => {
            reasons.push("already points at the target".to_owned());
            false
        }
        WebClass::AtSource { .. } | WebClass::None => false,
    };
    match &classification.ns {
        NsClass::Own { .. } if in_zone && !site_elsewhere => (DomainAction::MoveAndRepoint, reasons, flags),
        NsClass::Own { .. } if !in_zone => {
            flags.push("its nameservers are ours but its zone is not on our DNS provider".to_owned());
            (DomainAction::MoveNotRepointed, reasons, flags)
        }
        NsClass::Own { .. } => (DomainAction::MoveNotRepointed, reasons, flags),
        NsClass::External { nameservers } | NsClass::Mixed { external: nameservers, .. } => {
            if in_zone {
                // A DNS cluster keeps zones for domains long delegated elsewhere: repointing
                // that copy would change nothing the world sees.
                flags.push(format!(
                    "stale zone on our nameservers: our DNS provider holds a zone for it, but it is \
                     delegated to {}; siirto leaves that zone alone",
                    nameservers.join(", ")
                ));
            }
            if site_elsewhere {
                (DomainAction::MoveNotRepointed, reasons, flags)
            } else {
                flags.push(format!(
                    "DNS is served by others ({}): the customer must repoint",
                    nameservers.join(", ")
                ));
                (DomainAction::MoveCustomerMustRepoint, reasons, flags)
            }
        }
        NsClass::NoDelegation { reason } => {
            flags.push(format!("not delegated ({reason})"));
            (DomainAction::MoveNotRepointed, reasons, flags)
        }
    }
}

/// Flags what the target checks found in the way.
fn flag_target_checks(checks: &TargetChecks, flagged: &mut Vec<FlaggedItem>) {
    for clash in &checks.user_clashes {
        flagged.push(FlaggedItem {
            subject: clash.user.to_string(),
            reason: format!(
                "the target already has an account {} (domain {})",
                clash.user, clash.target_domain
            ),
            action: "its transfer will fail until the clash is resolved".into(),
        });
    }
    for clash in &checks.domain_clashes {
        flagged.push(FlaggedItem {
            subject: format!("{} ({})", clash.domain, clash.source_user),
            reason: format!("the target already has the domain, on account {}", clash.target_user),
            action: "its account's transfer will fail until the clash is resolved".into(),
        });
    }
    if checks.disk.enough == Some(false) {
        flagged.push(FlaggedItem {
            subject: "target disk".into(),
            reason: format!(
                "{} MB free on {} but the accounts need {} MB (their {} MB, twice the largest, and 1 GB)",
                checks.disk.available_mb.unwrap_or(0),
                checks.disk.mount.clone().unwrap_or_else(|| "?".into()),
                checks.disk.needed_mb,
                checks.disk.accounts_total_mb
            ),
            action: "make room before the cutover".into(),
        });
    }
    if checks.version.verdict == VersionVerdict::TargetOlder {
        flagged.push(FlaggedItem {
            subject: "versions".into(),
            reason: format!(
                "the target runs {} but the source {}",
                checks.version.target, checks.version.source
            ),
            action: "update the target before the cutover (a restore to an older cPanel can fail)".into(),
        });
    }
}

/// The zone of ours that holds `domain`: the longest of `zones` that is the domain itself or
/// one of its parents, found by walking up its labels (a lookup per label, not a scan of every
/// zone per domain).
fn zone_of(domain: &DomainName, zones: &HashSet<&str>) -> Option<String> {
    let mut name = domain.as_str();
    loop {
        if zones.contains(name) {
            return Some(name.to_owned());
        }
        name = name.split_once('.')?.1;
    }
}

fn join_ips(addresses: &[IpAddr]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn domain_action_text(action: DomainAction) -> &'static str {
    match action {
        DomainAction::MoveAndRepoint => "moved and repointed",
        DomainAction::MoveCustomerMustRepoint => "moved; the customer must repoint",
        DomainAction::MoveNotRepointed => "moved; not repointed",
        DomainAction::HeldForOperator => "held for an operator",
    }
}

/// Compares two plans of the same source.
pub fn changes(previous: &PlanDocument, current: &PlanDocument) -> PlanChanges {
    let accounts = |plan: &PlanDocument| -> BTreeMap<String, PlannedAccount> {
        plan.accounts.iter().map(|a| (a.user.clone(), a.clone())).collect()
    };
    let domains = |plan: &PlanDocument| -> BTreeSet<String> {
        plan.accounts.iter().flat_map(|a| a.domains.iter().map(|d| d.domain.clone())).collect()
    };
    let (before, after) = (accounts(previous), accounts(current));
    let (domains_before, domains_after) = (domains(previous), domains(current));
    let mut accounts_changed = Vec::new();
    for (user, now) in &after {
        let Some(then) = before.get(user) else { continue };
        let mut what = Vec::new();
        let mut compare = |field: &str, a: String, b: String| {
            if a != b {
                what.push(format!("{field}: {a} → {b}"));
            }
        };
        compare(
            "contact_email",
            then.contact_email.clone().unwrap_or_default(),
            now.contact_email.clone().unwrap_or_default(),
        );
        compare("owner", then.owner.clone(), now.owner.clone());
        compare("package", then.package.clone(), now.package.clone());
        compare("disk_mb", then.disk_mb.to_string(), now.disk_mb.to_string());
        compare("suspended", then.suspended.to_string(), now.suspended.to_string());
        compare("action", format!("{:?}", then.action), format!("{:?}", now.action));
        let domain_actions = |a: &PlannedAccount| -> BTreeMap<String, DomainAction> {
            a.domains.iter().map(|d| (d.domain.clone(), d.action)).collect()
        };
        let (da, db) = (domain_actions(then), domain_actions(now));
        for (domain, action) in &db {
            if let Some(old) = da.get(domain).filter(|old| *old != action) {
                what.push(format!(
                    "{domain}: {} → {}",
                    domain_action_text(*old),
                    domain_action_text(*action)
                ));
            }
        }
        if !what.is_empty() {
            accounts_changed.push(AccountChange { user: user.clone(), what });
        }
    }
    PlanChanges {
        since: previous.migration.clone(),
        accounts_added: after.keys().filter(|u| !before.contains_key(*u)).cloned().collect(),
        accounts_removed: before.keys().filter(|u| !after.contains_key(*u)).cloned().collect(),
        domains_added: domains_after.difference(&domains_before).cloned().collect(),
        domains_removed: domains_before.difference(&domains_after).cloned().collect(),
        accounts_changed,
    }
}

/// Inventories the source host, classifies, reconciles, decides, and records the migration
/// as planned with its plan document.
pub async fn plan(
    store: &Store,
    config: &Config,
    adapters: &World,
    request: PlanRequest<'_>,
    now: Timestamp,
) -> anyhow::Result<PlanDocument> {
    if store.migration(request.id.as_str()).await?.is_some() {
        bail!("migration {} already exists; choose another --id", request.id);
    }
    let source = adapters
        .hosts
        .get(request.source)
        .ok_or_else(|| anyhow!("host {:?} is not in the config", request.source))?;
    let target = adapters
        .hosts
        .get(request.target)
        .ok_or_else(|| anyhow!("host {:?} is not in the config", request.target))?;

    // 1. Inventory (read-only), and the target checked against it.
    let inventory: Inventory =
        crate::inventory::inventory(&source.whm).await.context("inventorying the source host")?;
    let zones = adapters.dns.zones().await.context("listing the zones of the company's DNS")?;
    let zone_names: HashSet<&str> = zones.iter().map(DomainName::as_str).collect();
    let mut flagged = Vec::new();
    let target_checks = match crate::inventory::check_target(&inventory, &target.whm).await {
        Ok(checks) => {
            flag_target_checks(&checks, &mut flagged);
            Some(checks)
        }
        Err(err) => {
            flagged.push(FlaggedItem {
                subject: format!("target {}", request.target),
                reason: format!("the target could not be checked: {err}"),
                action: "planned without target checks; check before approving".into(),
            });
            None
        }
    };
    // Entries WHM answered that were refused (bad names, unusable fields) are not moved.
    let rejected: Vec<String> = inventory
        .flagged
        .iter()
        .filter(|f| f.item.ends_with("entry"))
        .map(|f| format!("{}: {}", f.item, f.reason))
        .collect();
    for flag in &inventory.flagged {
        let action = if flag.item.ends_with("entry") { "not moved" } else { "see the reason" };
        flagged.push(FlaggedItem {
            subject: flag.item.clone(),
            reason: flag.reason.clone(),
            action: action.into(),
        });
    }
    let mut found: BTreeMap<AccountName, Found> = BTreeMap::new();
    for account in &inventory.accounts {
        for flag in &account.flags {
            flagged.push(FlaggedItem {
                subject: account.user.to_string(),
                reason: flag.clone(),
                action: "moved; check the item".into(),
            });
        }
        found.insert(
            account.user.clone(),
            Found {
                user: account.user.clone(),
                main_domain: account.main_domain.clone(),
                owner: account.owner.clone(),
                package: account.package.clone(),
                email: account.contact_email.clone(),
                disk_mb: account.disk_used_mb,
                suspended: account.suspended,
                ip: account.ip,
                dedicated_ip: account.on_dedicated_ip,
                domains: account
                    .domains
                    .iter()
                    .map(|d| (d.domain.clone(), d.kind.name().to_owned()))
                    .collect(),
            },
        );
    }

    // 2. How each domain's DNS and mail are served.
    let all_domains: Vec<DomainName> = found.values().flat_map(|a| a.domains.keys().cloned()).collect();
    let settings = ClassifySettings::from_config(&config.dns);
    if settings.resolvers.is_empty() {
        bail!(
            "dns.resolvers is not set: the plan classifies each domain by its delegation as the world \
             sees it, through recursive resolvers (e.g. resolvers = [\"1.1.1.1\", \"9.9.9.9\"]); \
             our own nameservers cannot tell a domain delegated elsewhere from one of ours"
        );
    }
    let classifier = Classifier::new(&settings).context("setting up the resolvers")?;
    let mut classes: BTreeMap<DomainName, DomainClass> = {
        let facts = Facts {
            own_nameservers: config.dns.own_nameservers.clone(),
            // A host's IPv6 address is its own too: AAAA records at it do not make a site
            // "mixed"; a site on a dedicated IP of the source is at the source too.
            source_ips: std::iter::once(IpAddr::V4(source.ip))
                .chain(source.ipv6.map(IpAddr::V6))
                .chain(inventory.host.dedicated_ips.iter().copied().map(IpAddr::V4))
                .collect(),
            target_ips: std::iter::once(IpAddr::V4(target.ip)).chain(target.ipv6.map(IpAddr::V6)).collect(),
            spam_filters: config.dns.spam_filters.clone(),
        };
        classifier
            .classify_all(&all_domains, &facts)
            .await
            .into_iter()
            .map(|c| (c.domain.clone(), c))
            .collect()
    };
    // On someone else's DNS, the names the account's zone on the source lists are looked up too.
    flagged.extend(source_zone_names(&source.whm, &classifier, &mut classes, settings.concurrency).await);

    // 3. The contracts, when the config names a source.
    // A contract source that cannot be read does not stop planning: the plan says why, and
    // every account is then moved on WHM's contact data alone. A source that can be read only
    // wrongly (a CSV quote never closed) stops it: see below.
    let mut contract_problem = None;
    let reconciliation = match &config.contracts {
        None => None,
        Some(contracts) => match crate::contracts::load(contracts).await {
            // A file that loses rows when read on (an unterminated quote) is refused like a
            // broken config: a plan made from part of the contracts would look complete.
            Err(err) if err.is_corrupt() => {
                return Err(anyhow::Error::new(err)
                    .context("the contract source is broken; fix it and plan again (nothing was planned)"));
            }
            Err(err) => {
                contract_problem = Some(err.to_string());
                None
            }
            Ok(set) => {
                let inventory = ServerInventory {
                    accounts: found
                        .values()
                        .map(|a| InventoryAccount {
                            user: a.user.clone(),
                            main_domain: a.main_domain.clone(),
                            domains: a.domains.keys().cloned().collect(),
                            contact_email: a.email.clone(),
                            owner: Some(a.owner.clone()),
                        })
                        .collect(),
                };
                Some(crate::contracts::reconcile(&set, &inventory, request.source, &contracts.server_names))
            }
        },
    };
    let buckets: BTreeMap<&str, &Bucket> = reconciliation
        .iter()
        .flat_map(|r| r.accounts.iter().filter(|a| a.on_server).map(|a| (a.user.as_str(), &a.bucket)))
        .collect();

    // 4. Decide.
    if let Some(problem) = contract_problem {
        flagged.push(FlaggedItem {
            subject: "contracts".into(),
            reason: format!("the contract source could not be read: {problem}"),
            action: "planned without reconciliation; notices go to the WHM contact addresses".into(),
        });
    }
    if let Some(reconciliation) = &reconciliation {
        for issue in &reconciliation.issues {
            flagged.push(FlaggedItem {
                subject: "contracts".into(),
                reason: issue.to_string(),
                action: contract_issue_action(issue, reconciliation),
            });
        }
    }
    let mut planned = Vec::new();
    let mut counts = PlanCounts::default();
    for account in found.values() {
        let mut reasons = Vec::new();
        let user = account.user.to_string();
        let dedicated_ip = account.dedicated_ip;
        let action = if dedicated_ip {
            let reason = format!(
                "on the dedicated IP {}: waits for an operator to assign a target IP (siirto assign-ip), then moves last",
                account.ip.map(|ip| ip.to_string()).unwrap_or_default()
            );
            flagged.push(FlaggedItem {
                subject: user.clone(),
                reason: reason.clone(),
                action: "waits for a target IP".into(),
            });
            reasons.push(reason);
            counts.held_for_operator += 1;
            AccountAction::HeldForOperator
        } else {
            AccountAction::Move
        };
        if account.suspended {
            reasons.push("suspended on the source: moved as it is".to_owned());
        }
        let bucket = buckets.get(user.as_str()).map(|b| (*b).clone());
        let whm_email = account.email.clone().filter(|e| crate::contracts::valid_email(e).is_some());
        let contact_email = match &bucket {
            Some(Bucket::Matched { emails, .. }) => emails.first().cloned().or(whm_email),
            _ => whm_email,
        };
        match &bucket {
            None | Some(Bucket::Matched { .. }) => {}
            Some(Bucket::OnServerNoContract) => flagged.push(FlaggedItem {
                subject: user.clone(),
                reason: "on the server but no contract names it".into(),
                action: "moved; notices go to the WHM contact address".into(),
            }),
            Some(Bucket::ContractNamesAnotherServer { server, .. }) => flagged.push(FlaggedItem {
                subject: user.clone(),
                reason: format!("the contract says it is on {server}"),
                action: "moved; fix the contract".into(),
            }),
            Some(Bucket::ContactMissingOrInvalid { reason, .. }) => flagged.push(FlaggedItem {
                subject: user.clone(),
                reason: format!("no usable contact address: {reason}"),
                action: "moved; its notices are held until an address is set".into(),
            }),
            Some(Bucket::ContractNamesThisServerButMissing { .. }) => {}
        }
        if contact_email.is_none() && bucket.is_none() {
            flagged.push(FlaggedItem {
                subject: user.clone(),
                reason: format!(
                    "contact e-mail missing or invalid ({:?})",
                    account.email.clone().unwrap_or_default()
                ),
                action: "moved; its notices are held until an address is set".into(),
            });
        }
        let mut planned_domains = Vec::new();
        for (domain, kind) in &account.domains {
            let zone = zone_of(domain, &zone_names);
            let dns = classes.get(domain).cloned();
            let (domain_action, domain_reasons, domain_flags) = domain_action(zone.as_deref(), dns.as_ref());
            match domain_action {
                DomainAction::MoveAndRepoint => counts.move_and_repoint += 1,
                DomainAction::MoveCustomerMustRepoint => counts.move_customer_must_repoint += 1,
                DomainAction::MoveNotRepointed => counts.move_not_repointed += 1,
                DomainAction::HeldForOperator => {}
            }
            for flag in &domain_flags {
                flagged.push(FlaggedItem {
                    subject: format!("{domain} ({user})"),
                    reason: flag.clone(),
                    action: domain_action_text(domain_action).to_owned(),
                });
            }
            planned_domains.push(PlannedDomain {
                domain: domain.to_string(),
                kind: kind.clone(),
                zone,
                dns,
                action: domain_action,
                reasons: domain_reasons.into_iter().chain(domain_flags).collect(),
            });
        }
        counts.domains += planned_domains.len();
        planned.push(PlannedAccount {
            user,
            main_domain: account.main_domain.to_string(),
            owner: account.owner.clone(),
            package: account.package.clone(),
            contact_email,
            disk_mb: account.disk_mb,
            suspended: account.suspended,
            ip: account.ip,
            dedicated_ip,
            action,
            reasons,
            contract: bucket,
            domains: planned_domains,
        });
    }
    if let Some(reconciliation) = &reconciliation {
        for entry in reconciliation.accounts.iter().filter(|a| !a.on_server) {
            counts.not_moved += 1;
            flagged.push(FlaggedItem {
                subject: entry.user.to_string(),
                reason: "a contract says it is on this server, but it is not".into(),
                action: "not moved".into(),
            });
        }
    }
    counts.accounts = planned.len();
    counts.flagged = flagged.len();

    let mut document = PlanDocument {
        schema: 1,
        migration: request.id.to_string(),
        source: request.source.to_owned(),
        target: request.target.to_owned(),
        playbook: request.playbook.name.clone(),
        planned_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cutover_at: request.cutover_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        counts,
        accounts: planned,
        flagged,
        rejected,
        reconciliation,
        host: inventory.host.clone(),
        resellers: inventory.resellers.clone(),
        packages: inventory.packages.clone(),
        target_checks,
        schedule: schedule(request.playbook, request.cutover_at),
        changes: None,
    };
    // 5. What changed since the last plan of this source.
    if let Some((_, previous)) = store.latest_plan_document(request.source, request.id.as_str()).await? {
        match serde_json::from_str::<PlanDocument>(&previous) {
            Ok(previous) => document.changes = Some(changes(&previous, &document)),
            Err(err) => {
                tracing::warn!(error = %err, "the previous plan of this source is unreadable; no comparison")
            }
        }
    }

    // 6. Record.
    record(store, &request, &document, source.ipv6, now).await?;
    Ok(document)
}

/// A change siirto cannot make that a person must make for the move to be whole, recorded on
/// the migration's timeline (`operator_task`) by the plan and listed by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTask {
    /// The account it concerns.
    pub account: String,
    /// The domain it concerns.
    pub domain: String,
    /// What to do, in words.
    pub task: String,
}

/// The operator tasks a plan implies: each domain whose mail passes a spam filter (the filter's
/// delivery route names the old server) or is partly handled elsewhere.
pub fn operator_tasks(document: &PlanDocument) -> Vec<OperatorTask> {
    let mut tasks = Vec::new();
    for account in &document.accounts {
        for domain in &account.domains {
            let mail = domain.dns.as_ref().and_then(DomainClass::classification).map(|c| &c.mail);
            let task = match mail {
                Some(MailClass::SpamFilter { hosts }) => format!(
                    "mail for {} passes the spam filter ({}): when {} moves, change the filter's \
                     delivery route for it from the old server to the new one",
                    domain.domain,
                    hosts.join(", "),
                    account.user
                ),
                Some(MailClass::Mixed { ours, elsewhere }) => format!(
                    "mail for {} is partly ours ({}) and partly elsewhere ({}): when {} moves, \
                     make sure the other mail hosts deliver to the new server",
                    domain.domain,
                    ours.join(", "),
                    elsewhere.join(", "),
                    account.user
                ),
                _ => continue,
            };
            tasks.push(OperatorTask { account: account.user.clone(), domain: domain.domain.clone(), task });
        }
    }
    tasks
}

/// The final state of a domain the plan does not repoint: why (the plan's reasons), and
/// whether its site is served by someone else (then the customer need do nothing).
pub fn not_repointed_state(domain: &PlannedDomain) -> DomainState {
    let site_elsewhere = matches!(
        domain.dns.as_ref().and_then(DomainClass::classification).map(|c| &c.web),
        Some(WebClass::Elsewhere { .. })
    );
    let reason = if domain.reasons.is_empty() {
        "nothing of it points at the source on our DNS".to_owned()
    } else {
        domain.reasons.join("; ")
    };
    DomainState::NotRepointed { reason, site_elsewhere }
}

/// For each domain on someone else's DNS, the host names its zone on the source server lists
/// (WHM `parse_dns_zone` of the zone classification found it in) besides cPanel's
/// [`SERVICE_NAMES`](crate::dns::classify::SERVICE_NAMES), each looked up through the
/// resolvers and added to its [`Classification::names`]: a customer's `shop` at the old server
/// is theirs to change as much as `www`. A zone the source cannot give, or names no resolver
/// answers for, leave the domain with the service names only, and say so.
async fn source_zone_names(
    source: &crate::whm::WhmClient,
    classifier: &Classifier,
    classes: &mut BTreeMap<DomainName, DomainClass>,
    concurrency: usize,
) -> Vec<FlaggedItem> {
    let external: Vec<(DomainName, DomainName)> = classes
        .values()
        .filter_map(|class| {
            let c = class.classification()?;
            let zone = DomainName::parse(&c.zone).ok()?;
            matches!(c.ns, NsClass::External { .. } | NsClass::Mixed { .. })
                .then(|| (class.domain.clone(), zone))
        })
        .collect();
    type Names = Result<BTreeMap<String, Vec<IpAddr>>, String>;
    let found: Vec<(DomainName, Names)> = futures::stream::iter(external)
        .map(|(domain, zone)| async move {
            let zone_read = source.parse_dns_zone(&zone).await.map_err(|err| err.to_string());
            let labels = match zone_read {
                Ok(read) => read.host_labels_under(&domain),
                Err(err) => {
                    return (domain, Err(format!("its zone {zone} on the source was not read: {err}")));
                }
            };
            let extra: Vec<String> = labels
                .into_iter()
                .filter(|l| !crate::dns::classify::SERVICE_NAMES.contains(&l.as_str()))
                .collect();
            let names = classifier.host_names(&domain, &extra).await;
            (domain, names.map_err(|err| format!("the names of its zone on the source: {err}")))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut flagged = Vec::new();
    for (domain, names) in found {
        match names {
            Ok(names) => {
                if let Some(DomainClass { outcome: Outcome::Classified(c), .. }) = classes.get_mut(&domain) {
                    c.names.extend(names);
                }
            }
            Err(reason) => flagged.push(FlaggedItem {
                subject: domain.to_string(),
                reason,
                action: "only cPanel's service names were looked up; check the customer's other names".into(),
            }),
        }
    }
    flagged
}

/// The initial state of a domain whose DNS is not ours: its nameservers and every record of
/// it that points at the old server, as the classification looked them up — the A records of
/// the domain and of each name under it (`www`, `ftp`, the names its zone on the source lists;
/// one at a CDN is left out), the SPF record naming the old address, the A record of each MX
/// host at the source inside the domain (`mail.example.fi`), and the MX record itself when its
/// host is outside the domain and at the source (the old server's own name): each the
/// customer's to change, or visitors and mail keep reaching the old server. `account_ip` is
/// the account's address on the source, `source_ipv6` the source's IPv6 address (AAAA records
/// at it are listed like A records).
pub fn external_state(
    domain: &PlannedDomain,
    account_ip: Option<Ipv4Addr>,
    source_ipv6: Option<Ipv6Addr>,
) -> DomainState {
    let classification = domain.dns.as_ref().and_then(DomainClass::classification);
    let nameservers = match classification.map(|c| &c.ns) {
        Some(NsClass::External { nameservers }) => nameservers.clone(),
        Some(NsClass::Mixed { own, external }) => own.iter().chain(external).cloned().collect(),
        Some(NsClass::Own { nameservers }) => nameservers.clone(),
        Some(NsClass::NoDelegation { .. }) | None => Vec::new(),
    };
    let at_source: Vec<IpAddr> = match classification.map(|c| &c.web) {
        Some(WebClass::AtSource { addresses }) => addresses.clone(),
        Some(WebClass::Mixed { at_source, .. }) => at_source.clone(),
        Some(WebClass::AtTarget { .. } | WebClass::Elsewhere { .. } | WebClass::None) | None => Vec::new(),
    };
    let mut seen = Vec::new();
    let apex = format!("{}.", domain.domain);
    let address_record = |name: &str, address: &IpAddr| SeenRecord {
        name: name.to_owned(),
        rtype: if address.is_ipv4() { "A" } else { "AAAA" }.to_owned(),
        value: address.to_string(),
    };
    // A before AAAA, as the zone lists them.
    let by_family = |addresses: &[IpAddr]| {
        let mut sorted = addresses.to_vec();
        sorted.sort_by_key(|a| a.is_ipv6());
        sorted
    };
    for address in by_family(&at_source) {
        seen.push(address_record(&apex, &address));
    }
    // Every other name as it was looked up (`www`, `ftp`, `webmail`, …), never assumed to follow
    // the apex: one at a CDN is not the customer's to change, and no wait is for it.
    let at_old_server = |ip: &IpAddr| {
        at_source.contains(ip)
            || account_ip.is_some_and(|source| *ip == IpAddr::V4(source))
            || source_ipv6.is_some_and(|source| *ip == IpAddr::V6(source))
    };
    let no_names = std::collections::BTreeMap::new();
    let names = classification.map_or(&no_names, |c| &c.names);
    // The zone's order: www first, then the others by name.
    let ordered =
        names.get_key_value("www").into_iter().chain(names.iter().filter(|(label, _)| *label != "www"));
    for (label, addresses) in ordered {
        let name = format!("{label}.{}.", domain.domain);
        for address in by_family(addresses).iter().filter(|a| at_old_server(a)) {
            seen.push(address_record(&name, address));
        }
    }
    let mail_at_source: &[String] = match classification.map(|c| &c.mail) {
        Some(MailClass::AtSource { hosts }) => hosts,
        Some(MailClass::Mixed { ours, .. }) => ours,
        _ => &[],
    };
    let inside = |host: &str| {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host == domain.domain || host.ends_with(&format!(".{}", domain.domain))
    };
    // An SPF record naming the old server (`ip4:` its address): mail from the new server would
    // fail it. The new text is made when the account is verified (the address may change).
    if let Some(ip) = account_ip {
        let old = crate::dns::rewrite::Endpoint { ip, ipv6: None, hostname: None };
        let probe = crate::dns::rewrite::Endpoint { ip: Ipv4Addr::UNSPECIFIED, ipv6: None, hostname: None };
        for spf in classification.map_or(&[][..], |c| &c.spf) {
            if crate::dns::rewrite::rewrite_spf(spf, &old, &probe).is_some() {
                seen.push(SeenRecord { name: apex.clone(), rtype: "TXT".to_owned(), value: spf.clone() });
            }
        }
    }
    if let Some(ip) = account_ip {
        for host in mail_at_source.iter().filter(|h| inside(h)) {
            let name = format!("{}.", host.trim_end_matches('.').to_ascii_lowercase());
            let record = SeenRecord { name, rtype: "A".to_owned(), value: ip.to_string() };
            if !seen.contains(&record) {
                seen.push(record);
            }
        }
    }
    // An MX host outside the domain at the old server (the server's own name, typically):
    // the MX record itself is the customer's to change, to a host at the new server.
    for mx in classification.map_or(&[][..], |c| &c.mx) {
        if !inside(&mx.host) && mx.addresses.iter().any(at_old_server) {
            let record = SeenRecord { name: apex.clone(), rtype: "MX".to_owned(), value: mx.value() };
            if !seen.contains(&record) {
                seen.push(record);
            }
        }
    }
    // Resolvers may keep the old records this long after the customer changes them.
    let observed_ttl = classification.and_then(|c| c.a_ttl.into_iter().chain(c.mx_ttl).max());
    DomainState::External { nameservers, seen, observed_ttl }
}

async fn record(
    store: &Store,
    request: &PlanRequest<'_>,
    document: &PlanDocument,
    source_ipv6: Option<Ipv6Addr>,
    now: Timestamp,
) -> anyhow::Result<()> {
    let now_ms = to_millis(now);
    let id = request.id.to_string();
    let pending_account = serde_json::to_string(&AccountState::Pending)?;
    let pending_domain = serde_json::to_string(&DomainState::Pending)?;
    let mut account_rows = Vec::new();
    let mut domain_rows = Vec::new();
    let mut dedicated_rows = Vec::new();
    // The contract customer of each account the reconciliation matched.
    let customers: BTreeMap<&str, (&str, &str, &Option<String>)> = document
        .reconciliation
        .iter()
        .flat_map(|r| &r.accounts)
        .filter_map(|entry| match &entry.bucket {
            Bucket::Matched { customer_id, name, language, .. } => {
                Some((entry.user.as_str(), (customer_id.as_str(), name.as_str(), language)))
            }
            _ => None,
        })
        .collect();
    // A reseller's own address: its account's contact (a reseller is a cPanel account too).
    let contacts: BTreeMap<&str, &str> = document
        .accounts
        .iter()
        .filter_map(|a| a.contact_email.as_deref().map(|e| (a.user.as_str(), e)))
        .collect();
    for account in &document.accounts {
        let reseller =
            (account.owner != "root" && account.owner != account.user).then(|| account.owner.clone());
        let reseller_email = reseller.as_deref().and_then(|r| contacts.get(r)).map(|e| (*e).to_owned());
        let (state, data) = match account.action {
            AccountAction::Move => (AccountState::Pending.name().to_owned(), pending_account.clone()),
            AccountAction::HeldForOperator => {
                let source_ip = account.ip.ok_or_else(|| {
                    anyhow!("account {}: on a dedicated IP but WHM gave no address", account.user)
                })?;
                dedicated_rows.push(DedicatedIpRow {
                    migration_id: id.clone(),
                    user: account.user.clone(),
                    source_ip: source_ip.to_string(),
                    target_ip: None,
                    assigned_by: None,
                    assigned_at: None,
                });
                let waiting = AccountState::AwaitingTargetIp { source_ip };
                (waiting.name().to_owned(), serde_json::to_string(&waiting)?)
            }
        };
        // Who it belongs to, for the notices addressed to a customer (one per customer).
        let (customer_key, customer_name, language) = match customers.get(account.user.as_str()) {
            Some((id, name, language)) => {
                (Some(format!("customer-{id}")), Some((*name).to_owned()), (*language).clone())
            }
            None => (
                account.contact_email.as_ref().map(|e| format!("contact-{}", e.to_ascii_lowercase())),
                None,
                None,
            ),
        };
        account_rows.push(AccountRow {
            migration_id: id.clone(),
            user: account.user.clone(),
            main_domain: account.main_domain.clone(),
            contact_email: account.contact_email.clone(),
            disk_mb: account.disk_mb as i64,
            customer_key,
            customer_name,
            language,
            reseller,
            reseller_email,
            state,
            data,
            updated_at: now_ms,
        });
        for domain in &account.domains {
            match domain.action {
                DomainAction::MoveAndRepoint => {
                    let Some(zone) = &domain.zone else { continue };
                    domain_rows.push(DomainRow {
                        migration_id: id.clone(),
                        domain: domain.domain.clone(),
                        user: account.user.clone(),
                        zone: zone.clone(),
                        state: DomainState::Pending.name().to_owned(),
                        data: pending_domain.clone(),
                        updated_at: now_ms,
                    });
                }
                DomainAction::MoveCustomerMustRepoint => {
                    let state = external_state(domain, account.ip, source_ipv6);
                    domain_rows.push(DomainRow {
                        migration_id: id.clone(),
                        domain: domain.domain.clone(),
                        user: account.user.clone(),
                        // Its zone is not ours to write; kept for the record only.
                        zone: domain.zone.clone().unwrap_or_default(),
                        state: state.name().to_owned(),
                        data: serde_json::to_string(&state)?,
                        updated_at: now_ms,
                    });
                }
                // Recorded from the start so that status, the completion notice and a search
                // name it; its zone (if any) is not ours to write, so none is kept.
                DomainAction::MoveNotRepointed => {
                    let state = not_repointed_state(domain);
                    domain_rows.push(DomainRow {
                        migration_id: id.clone(),
                        domain: domain.domain.clone(),
                        user: account.user.clone(),
                        zone: String::new(),
                        state: state.name().to_owned(),
                        data: serde_json::to_string(&state)?,
                        updated_at: now_ms,
                    });
                }
                DomainAction::HeldForOperator => {}
            }
        }
    }
    let state = MigrationState::Planned { planned_at: now };
    let row = MigrationRow {
        id: id.clone(),
        source_host: request.source.to_owned(),
        target_host: request.target.to_owned(),
        playbook: request.playbook.source_text.clone(),
        cutover_at: to_millis(request.cutover_at),
        state: state.name().to_owned(),
        data: serde_json::to_string(&state)?,
        created_at: now_ms,
        updated_at: now_ms,
    };
    let mut tx = store.begin().await?;
    tx.insert_migration(&row).await?;
    tx.insert_accounts(&account_rows).await?;
    tx.insert_domains(&domain_rows).await?;
    tx.insert_dedicated_ips(&dedicated_rows).await?;
    tx.insert_plan_document(&id, request.source, now_ms, &serde_json::to_string(document)?).await?;
    tx.append_event(&NewEvent {
        migration_id: id.clone(),
        account: None,
        domain: None,
        kind: "migration_planned".to_owned(),
        detail: serde_json::to_string(&document.counts)?,
        actor: request.actor.to_owned(),
        at: now_ms,
    })
    .await?;
    for task in operator_tasks(document) {
        tx.append_event(&NewEvent {
            migration_id: id.clone(),
            account: Some(task.account.clone()),
            domain: Some(task.domain.clone()),
            kind: "operator_task".to_owned(),
            detail: serde_json::json!({ "task": task.task }).to_string(),
            actor: request.actor.to_owned(),
            at: now_ms,
        })
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::classify::Classification;

    #[test]
    fn contract_issues_say_what_was_done_with_the_row() {
        use crate::contracts::{
            ContractFields, InventoryAccount, ServerInventory, ServerNames, parse_csv, reconcile,
        };
        // c1 has one valid address besides the invalid one; c2 has only an invalid one and
        // its account no WHM contact; c3's row names no account here; c4 has no id.
        let text = "customer_id,name,email,user,server\n\
                    c1,Kukka,\"bad, k@example.fi\",kukka,old1\n\
                    c2,Puu,also-bad,puu,old1\n\
                    c3,Muu,still-bad,muu,old1\n\
                    ,Nobody,n@example.fi,nobody,old1\n";
        let set = parse_csv(text.as_bytes(), "c.csv", None, &ContractFields::default()).unwrap();
        let account = |user: &str| InventoryAccount {
            user: AccountName::parse(user).unwrap(),
            main_domain: DomainName::parse(&format!("{user}.fi")).unwrap(),
            domains: Vec::new(),
            contact_email: None,
            owner: None,
        };
        let inventory = ServerInventory { accounts: vec![account("kukka"), account("puu")] };
        let names = ServerNames::new(BTreeMap::from([("old1".to_owned(), vec!["old1".to_owned()])]));
        let rec = reconcile(&set, &inventory, "old1", &names);
        let actions: Vec<String> = rec.issues.iter().map(|i| contract_issue_action(i, &rec)).collect();
        assert_eq!(
            actions,
            vec![
                "kukka matched to customer \"c1\", but no notice can be sent to the invalid address; notices go to k@example.fi (from the contract)",
                "puu matched to customer \"c2\", but no notice can be sent to the invalid address and there is no other usable one: its notices are held until an address is set",
                "customer \"c3\" is kept without that address; no account on this server matched it",
                "that row is not used",
            ]
        );
    }

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
        assert!(!power_off.manual, "siirto powers the server off over SSH");
        assert_eq!(power_off.at, "2027-03-01T22:00:00Z");
        let disks = items.iter().find(|i| i.what.contains("destroy disks")).unwrap();
        assert!(disks.manual);
    }

    fn class(ns: NsClass, web: WebClass, mail: MailClass) -> DomainClass {
        DomainClass {
            domain: DomainName::parse("kukka.test").unwrap(),
            outcome: Outcome::Classified(Classification {
                zone: "kukka.test".into(),
                ns,
                web,
                names: Default::default(),
                spf: Vec::new(),
                mx: Vec::new(),
                mail,
                a_ttl: Some(3600),
                aaaa_ttl: None,
                mx_ttl: Some(3600),
                flags: Vec::new(),
            }),
        }
    }

    #[test]
    fn an_external_domain_is_recorded_with_the_records_it_had_at_the_source() {
        let src: IpAddr = "127.0.0.2".parse().unwrap();
        let v6: IpAddr = "2001:db8::2".parse().unwrap();
        let far: IpAddr = "192.0.2.9".parse().unwrap();
        let with_www = |mut class: DomainClass, www: Vec<IpAddr>| {
            if let Outcome::Classified(c) = &mut class.outcome
                && !www.is_empty()
            {
                c.names.insert("www".to_owned(), www);
            }
            class
        };
        let planned = |web: WebClass, www: Vec<IpAddr>| PlannedDomain {
            domain: "kukka.test".into(),
            kind: "main".into(),
            zone: None,
            dns: Some(with_www(
                class(
                    NsClass::External { nameservers: vec!["ns.other.example".into()] },
                    web,
                    MailClass::None,
                ),
                www,
            )),
            action: DomainAction::MoveCustomerMustRepoint,
            reasons: Vec::new(),
        };
        let seen =
            |name: &str| SeenRecord { name: name.into(), rtype: "A".into(), value: "127.0.0.2".into() };
        let seen_a = seen;
        // (where its site is, where www is, the records the customer must change)
        let cdn: IpAddr = "203.0.113.80".parse().unwrap();
        let table = vec![
            // The source's IPv6 address is the old server too: its AAAA is listed.
            (
                WebClass::AtSource { addresses: vec![v6, src] },
                vec![src],
                vec![
                    seen("kukka.test."),
                    SeenRecord {
                        name: "kukka.test.".into(),
                        rtype: "AAAA".into(),
                        value: "2001:db8::2".into(),
                    },
                    seen("www.kukka.test."),
                ],
            ),
            (
                WebClass::Mixed { at_source: vec![src], at_target: vec![], elsewhere: vec![far] },
                vec![src],
                vec![seen("kukka.test."), seen("www.kukka.test.")],
            ),
            // www at a CDN is looked up, not assumed: not the customer's to change.
            (WebClass::AtSource { addresses: vec![src] }, vec![cdn], vec![seen("kukka.test.")]),
            // www alone at the old server.
            (WebClass::AtTarget { addresses: vec![far] }, vec![src], vec![seen("www.kukka.test.")]),
            (WebClass::AtTarget { addresses: vec![far] }, vec![], vec![]),
            (WebClass::None, vec![], vec![]),
        ];
        for (web, www, expected) in table {
            let state = external_state(&planned(web.clone(), www), Some("127.0.0.2".parse().unwrap()), None);
            assert_eq!(
                state,
                DomainState::External {
                    nameservers: vec!["ns.other.example".into()],
                    seen: expected,
                    observed_ttl: Some(3600),
                },
                "{web:?}"
            );
        }

        // Mail at the source through an MX host inside the domain: its A record is the
        // customer's to change too; one under another name (the company's) is not.
        let domain = PlannedDomain {
            dns: Some(with_www(
                class(
                    NsClass::External { nameservers: vec!["ns.other.example".into()] },
                    WebClass::AtSource { addresses: vec![src] },
                    MailClass::AtSource {
                        hosts: vec![
                            "mail.kukka.test".into(),
                            "kukka.test".into(),
                            "mx.hosting.example".into(),
                        ],
                    },
                ),
                vec![src],
            )),
            ..planned(WebClass::None, vec![])
        };
        let DomainState::External { seen, .. } =
            external_state(&domain, Some("127.0.0.2".parse().unwrap()), None)
        else {
            panic!("external");
        };
        assert_eq!(seen, vec![seen_a("kukka.test."), seen_a("www.kukka.test."), seen_a("mail.kukka.test.")]);
        let DomainState::External { seen, .. } = external_state(&domain, None, None) else {
            panic!("external")
        };
        assert_eq!(seen.len(), 2, "no address for the MX host without the account's: {seen:?}");

        // An SPF record naming the old server is the customer's to change; one naming others is not.
        let mut spf = planned(WebClass::None, vec![]);
        if let Some(DomainClass { outcome: Outcome::Classified(c), .. }) = &mut spf.dns {
            c.spf = vec!["\"v=spf1 ip4:127.0.0.2 mx -all\"".into(), "\"v=spf1 ip4:192.0.2.9 -all\"".into()];
        }
        let DomainState::External { seen, .. } =
            external_state(&spf, Some("127.0.0.2".parse().unwrap()), None)
        else {
            panic!("external");
        };
        let txt = SeenRecord {
            name: "kukka.test.".into(),
            rtype: "TXT".into(),
            value: "\"v=spf1 ip4:127.0.0.2 mx -all\"".into(),
        };
        assert_eq!(seen, vec![txt]);

        // An MX host outside the domain at the old server (its own name): the MX record is the
        // customer's to change; one at the target or elsewhere is not. A name the source zone
        // listed (`shop`) at the old server is listed like `www`.
        let mut mx = planned(WebClass::None, vec![]);
        if let Some(DomainClass { outcome: Outcome::Classified(c), .. }) = &mut mx.dns {
            let host = |preference, host: &str, at: IpAddr| crate::dns::classify::ExternalMx {
                preference,
                host: host.into(),
                addresses: vec![at],
            };
            c.mx = vec![
                host(10, "server1.hosting.example", src),
                host(20, "server2.hosting.example", "127.0.0.3".parse().unwrap()),
                host(30, "mx.elsewhere.example", far),
            ];
            c.names.insert("shop".into(), vec![src]);
        }
        let DomainState::External { seen, .. } =
            external_state(&mx, Some("127.0.0.2".parse().unwrap()), None)
        else {
            panic!("external");
        };
        let mx_record = SeenRecord {
            name: "kukka.test.".into(),
            rtype: "MX".into(),
            value: "10 server1.hosting.example.".into(),
        };
        assert_eq!(seen, vec![seen_a("shop.kukka.test."), mx_record]);

        // A name with an AAAA at the source's IPv6 address (known from the config): listed.
        let v6_www = planned(WebClass::None, vec![v6, cdn]);
        let with = external_state(&v6_www, None, Some("2001:db8::2".parse().unwrap()));
        let without = external_state(&v6_www, None, None);
        let aaaa =
            SeenRecord { name: "www.kukka.test.".into(), rtype: "AAAA".into(), value: "2001:db8::2".into() };
        assert!(matches!(with, DomainState::External { ref seen, .. } if *seen == vec![aaaa]), "{with:?}");
        assert!(matches!(without, DomainState::External { ref seen, .. } if seen.is_empty()), "{without:?}");
    }

    #[test]
    fn domain_actions() {
        let src: IpAddr = "127.0.0.2".parse().unwrap();
        let far: IpAddr = "192.0.2.9".parse().unwrap();
        let own = || NsClass::Own { nameservers: vec!["ns1.example.fi".into()] };
        let external = || NsClass::External { nameservers: vec!["ns.other.example".into()] };
        let at_source = || WebClass::AtSource { addresses: vec![src] };
        let local_mail = || MailClass::AtSource { hosts: vec!["mail.kukka.test".into()] };
        let failed = DomainClass {
            domain: DomainName::parse("kukka.test").unwrap(),
            outcome: Outcome::Failed { reason: "timed out".into() },
        };
        // (our zone, classification, expected action, a fragment of an expected flag)
        type Case<'a> = (Option<&'a str>, Option<DomainClass>, DomainAction, Option<&'a str>);
        let table: Vec<Case> = vec![
            (
                Some("kukka.test"),
                Some(class(own(), at_source(), local_mail())),
                DomainAction::MoveAndRepoint,
                None,
            ),
            (Some("kukka.test"), None, DomainAction::MoveAndRepoint, None),
            (None, None, DomainAction::MoveNotRepointed, Some("not in any zone")),
            (
                None,
                Some(class(external(), at_source(), local_mail())),
                DomainAction::MoveCustomerMustRepoint,
                Some("customer must repoint"),
            ),
            (
                Some("kukka.test"),
                Some(class(own(), WebClass::Elsewhere { addresses: vec![far] }, local_mail())),
                DomainAction::MoveNotRepointed,
                None,
            ),
            (
                None,
                Some(class(own(), at_source(), local_mail())),
                DomainAction::MoveNotRepointed,
                Some("not on our DNS provider"),
            ),
            (
                Some("kukka.test"),
                Some(class(
                    own(),
                    at_source(),
                    MailClass::SpamFilter { hosts: vec!["filter.example.net".into()] },
                )),
                DomainAction::MoveAndRepoint,
                Some("spam filter"),
            ),
            (
                None,
                Some(class(
                    NsClass::NoDelegation { reason: "NXDOMAIN".into() },
                    WebClass::None,
                    MailClass::None,
                )),
                DomainAction::MoveNotRepointed,
                Some("not delegated"),
            ),
            (Some("kukka.test"), Some(failed.clone()), DomainAction::MoveAndRepoint, Some("lookup failed")),
            (None, Some(failed), DomainAction::MoveNotRepointed, Some("lookup failed")),
        ];
        for (zone, dns, expected, flag) in table {
            let (action, _, flags) = domain_action(zone, dns.as_ref());
            assert_eq!(action, expected, "{zone:?} {dns:?}");
            match flag {
                Some(fragment) => {
                    assert!(flags.iter().any(|f| f.contains(fragment)), "{flags:?} lacks {fragment}")
                }
                None => assert!(flags.is_empty(), "{flags:?}"),
            }
        }
    }

    #[test]
    fn a_domain_is_placed_in_the_longest_zone_that_holds_it() {
        let zones: Vec<DomainName> = ["kukka.test", "shop.kukka.test", "puu.fi", "example.fi"]
            .iter()
            .map(|z| DomainName::parse(z).unwrap())
            .collect();
        let set: HashSet<&str> = zones.iter().map(DomainName::as_str).collect();
        for (domain, expected) in [
            ("kukka.test", Some("kukka.test")),
            ("www.kukka.test", Some("kukka.test")),
            ("a.shop.kukka.test", Some("shop.kukka.test")),
            ("shop.kukka.test", Some("shop.kukka.test")),
            ("xkukka.test", None),
            ("other.test", None),
            ("www.puu.fi", Some("puu.fi")),
            ("muu.fi", None),
            ("a.b.example.fi", Some("example.fi")),
        ] {
            let domain = DomainName::parse(domain).unwrap();
            // The same answer as the scan it replaces.
            let scanned = zones.iter().filter(|z| domain.is_in(z)).max_by_key(|z| z.as_str().len());
            assert_eq!(zone_of(&domain, &set).as_deref(), expected, "{domain}");
            assert_eq!(scanned.map(DomainName::as_str), expected, "{domain}");
        }
    }

    #[test]
    fn changes_between_plans() {
        let account = |user: &str, email: &str, domains: &[&str]| PlannedAccount {
            user: user.into(),
            main_domain: domains[0].into(),
            owner: "root".into(),
            package: "basic".into(),
            contact_email: Some(email.into()),
            disk_mb: 10,
            suspended: false,
            ip: None,
            dedicated_ip: false,
            action: AccountAction::Move,
            reasons: vec![],
            contract: None,
            domains: domains
                .iter()
                .map(|d| PlannedDomain {
                    domain: (*d).into(),
                    kind: "main".into(),
                    zone: Some((*d).into()),
                    dns: None,
                    action: DomainAction::MoveAndRepoint,
                    reasons: vec![],
                })
                .collect(),
        };
        let doc = |id: &str, accounts: Vec<PlannedAccount>| PlanDocument {
            schema: 1,
            migration: id.into(),
            source: "old".into(),
            target: "new".into(),
            playbook: "p".into(),
            planned_at: String::new(),
            cutover_at: String::new(),
            counts: PlanCounts::default(),
            accounts,
            flagged: vec![],
            rejected: vec![],
            reconciliation: None,
            host: HostFacts { version: "11.118.0.5".into(), shared_ip: None, dedicated_ips: vec![] },
            resellers: vec![],
            packages: vec![],
            target_checks: None,
            schedule: vec![],
            changes: None,
        };
        let before =
            doc("m1", vec![account("a", "a@x.fi", &["a.fi"]), account("b", "b@x.fi", &["b.fi", "b2.fi"])]);
        let after =
            doc("m2", vec![account("b", "new@x.fi", &["b.fi", "b3.fi"]), account("c", "c@x.fi", &["c.fi"])]);
        let changed = changes(&before, &after);
        assert_eq!(changed.since, "m1");
        assert_eq!(changed.accounts_added, ["c"]);
        assert_eq!(changed.accounts_removed, ["a"]);
        assert_eq!(changed.domains_added, ["b3.fi", "c.fi"]);
        assert_eq!(changed.domains_removed, ["a.fi", "b2.fi"]);
        assert_eq!(
            changed.accounts_changed,
            [AccountChange { user: "b".into(), what: vec!["contact_email: b@x.fi → new@x.fi".into()] }]
        );
        assert_eq!(changes(&after, &after).accounts_changed, []);
    }
}
