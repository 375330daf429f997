//! The advance notice: `schedule.announce_before` the cutover every customer is told once what
//! moves and when — all of their accounts in one notice, in their language — and, for a
//! domain on someone else's DNS, that they will have records to change. A customer is the
//! contract's customer the plan matched the account to, else the account's contact address.
//! Past `notices.advance_late_after` the notices are written to the outbox marked skipped (too
//! late), never sent.

use std::collections::BTreeMap;

use anyhow::Context;
use tracing::info;

use crate::contracts::Bucket;
use crate::domain::{AccountState, DomainState};
use crate::engine::context::{Ctx, MigrationCtx, StepResult};
use crate::playbook::language_of;
use crate::store::{AccountRow, DomainRow, Lease, NewNotice, account_state, domain_state};

/// One customer as the advance notice addresses them.
#[derive(Debug, Default)]
struct Customer {
    name: String,
    language: Option<String>,
    recipients: Vec<String>,
    accounts: Vec<AccountRow>,
}

/// The key an advance notice is deduplicated by: one per customer and migration.
fn customer_key(migration: &str, customer: &str) -> String {
    format!("advance:{migration}:{customer}")
}

/// Writes one advance notice per customer to the outbox and schedules their sending; past the
/// lateness limit, writes them skipped. Idempotent: each notice is one row by its key.
pub async fn announce(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    let notices = &ctx.playbook.notices;
    let due = ctx.row.cutover_at - ctx.playbook.schedule.announce_before.as_millis() as i64;
    let late_at = due + notices.advance_late_after.as_millis() as i64;
    let now = cx.now_ms();
    let too_late = now > late_at;
    let accounts = cx.store.accounts(ctx.id.as_str()).await?;
    let domains = cx.store.domains(ctx.id.as_str()).await?;
    // The plan document's reconciliation (the rest of the document is not needed here).
    #[derive(serde::Deserialize)]
    struct StoredPlan {
        reconciliation: Option<crate::contracts::Reconciliation>,
    }
    let plan: Option<StoredPlan> = match cx.store.plan_document(ctx.id.as_str()).await? {
        Some(text) => Some(serde_json::from_str(&text).context("the stored plan")?),
        None => None,
    };
    let matched: BTreeMap<String, (String, String, Option<String>)> = plan
        .iter()
        .flat_map(|p| p.reconciliation.iter())
        .flat_map(|r| &r.accounts)
        .filter_map(|entry| match &entry.bucket {
            Bucket::Matched { customer_id, name, language, .. } => {
                Some((entry.user.to_string(), (customer_id.clone(), name.clone(), language.clone())))
            }
            _ => None,
        })
        .collect();
    let mut customers: BTreeMap<String, Customer> = BTreeMap::new();
    for account in accounts {
        // An account that is not moving (held before anything happened) is not announced.
        if matches!(account_state(&account)?, AccountState::Held { .. }) {
            continue;
        }
        let Some(email) = account.contact_email.clone().filter(|e| !e.trim().is_empty()) else {
            continue;
        };
        let (key, name, language) = match matched.get(&account.user) {
            Some((id, name, language)) => (format!("customer-{id}"), name.clone(), language.clone()),
            None => (format!("contact-{}", email.to_ascii_lowercase()), String::new(), None),
        };
        let customer = customers.entry(key).or_default();
        customer.name = name;
        customer.language = customer.language.clone().or(language);
        if !customer.recipients.iter().any(|r| r.eq_ignore_ascii_case(&email)) {
            customer.recipients.push(email);
        }
        customer.accounts.push(account);
    }
    let cutover = crate::domain::from_millis(ctx.row.cutover_at);
    let mut tx = cx.store.begin_leased(lease).await?;
    let (mut queued, mut skipped) = (0usize, 0usize);
    for (key, customer) in &customers {
        let language = language_of(customer.language.as_deref(), &cx.world.language);
        let context = context(ctx, customer, &domains, cutover)?;
        let template = notices.advance.for_language(&language);
        let subject =
            crate::notify::render(&template.subject, &context).context("rendering the advance subject")?;
        let body = crate::notify::render(&template.body, &context).context("rendering the advance body")?;
        let first = &customer.accounts[0].user;
        let notice = NewNotice {
            migration_id: ctx.id.to_string(),
            account: None,
            kind: "advance".to_owned(),
            message_id: format!("<advance.{first}.{}@siirto>", ctx.id),
            dedupe_key: customer_key(ctx.id.as_str(), key),
            recipients: serde_json::to_string(&customer.recipients).context("recipients")?,
            subject: subject.trim().to_owned(),
            body,
            created_at: now,
        };
        let Some(id) = tx.enqueue_notice(&notice).await? else {
            continue;
        };
        if too_late {
            let reason = format!(
                "too late: due {}, and later than notices.advance_late_after ({}) after that",
                crate::domain::from_millis(due).format("%Y-%m-%d %H:%M UTC"),
                crate::config::as_written(notices.advance_late_after)
            );
            tx.mark_notice_skipped(id, now, &reason).await?;
            skipped += 1;
        } else {
            super::notices::schedule_send(cx, &mut tx, ctx, id, now).await?;
            queued += 1;
        }
    }
    let detail = serde_json::json!({
        "customers": customers.len(),
        "queued": queued,
        "skipped_late": skipped,
        "due_at": crate::domain::from_millis(due),
    });
    tx.append_event(&cx.event(ctx, None, None, "advance_notices", detail)).await?;
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(migration = %ctx.id, customers = customers.len(), queued, skipped, "advance notices written");
    Ok(())
}

/// The notice variables of one customer's advance notice (every notice variable is set, so a
/// template written for another kind renders too).
fn context(
    ctx: &MigrationCtx,
    customer: &Customer,
    domains: &[DomainRow],
    cutover: crate::domain::Timestamp,
) -> anyhow::Result<serde_json::Value> {
    let mut accounts = Vec::new();
    let mut all_domains = Vec::new();
    let mut external = Vec::new();
    for account in &customer.accounts {
        let mut own: Vec<&DomainRow> = domains.iter().filter(|d| d.user == account.user).collect();
        // The main domain first, then the others by name.
        own.sort_by_key(|d| (d.domain != account.main_domain, d.domain.clone()));
        for row in &own {
            if let DomainState::External { .. } = domain_state(row)? {
                external.push(row.domain.clone());
            }
        }
        let names: Vec<String> = own.iter().map(|d| d.domain.clone()).collect();
        all_domains.extend(names.iter().cloned());
        accounts.push(serde_json::json!({
            "account": account.user,
            "main_domain": account.main_domain,
            "domains": names,
        }));
    }
    let first = &customer.accounts[0];
    Ok(serde_json::json!({
        "migration": ctx.id.as_str(),
        "account": first.user,
        "contact_email": first.contact_email.clone().unwrap_or_default(),
        "main_domain": first.main_domain,
        "domains": all_domains,
        "source_host": ctx.source.public_name,
        "target_host": ctx.target.public_name,
        "target_ip": ctx.target.ip.to_string(),
        "external_records": [],
        "domains_to_point": [],
        "customer_name": customer.name,
        "accounts": accounts,
        "external_domains": external,
        "cutover_date": cutover.format("%Y-%m-%d").to_string(),
        "cutover_time": cutover.format("%H:%M").to_string(),
    }))
}
