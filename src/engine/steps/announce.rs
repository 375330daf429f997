//! Notices to customers, one per customer listing all of their accounts, in their language. A
//! customer is the contract's customer the plan matched the account to, else the account's
//! contact address ([`AccountRow::customer_key`]).
//!
//! - The advance notice: `schedule.announce_before` the cutover, what moves and when and, for
//!   a domain on someone else's DNS, that they will have records to change. Past
//!   `notices.advance_late_after` it is written to the outbox marked skipped (too late), never
//!   sent.
//! - The start notice: when the first of a customer's accounts enters its transfer.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use tracing::info;

use crate::domain::{AccountState, DomainState};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult};
use crate::playbook::language_of;
use crate::store::{AccountRow, DomainRow, JobRow, Lease, NewNotice, Tx, account_state, domain_state};

/// One customer as a notice to customers addresses them: all of their accounts.
#[derive(Debug, Default)]
struct Customer {
    name: String,
    language: Option<String>,
    recipients: Vec<String>,
    accounts: Vec<AccountRow>,
}

/// The key a notice of `kind` to a customer is deduplicated by: one per customer and migration.
fn customer_key(kind: &str, migration: &str, customer: &str) -> String {
    format!("{kind}:{migration}:{customer}")
}

/// The accounts grouped by customer ([`AccountRow::customer_key`], set by the plan); an account
/// no notice can reach (no key, no contact address) or held is left out.
fn group(accounts: Vec<AccountRow>) -> anyhow::Result<BTreeMap<String, Customer>> {
    let mut customers: BTreeMap<String, Customer> = BTreeMap::new();
    for account in accounts {
        if matches!(account_state(&account)?, AccountState::Held { .. }) {
            continue;
        }
        let (Some(key), Some(email)) =
            (account.customer_key.clone(), account.contact_email.clone().filter(|e| !e.trim().is_empty()))
        else {
            continue;
        };
        let customer = customers.entry(key).or_default();
        if customer.name.is_empty() {
            customer.name = account.customer_name.clone().unwrap_or_default();
        }
        customer.language = customer.language.clone().or(account.language.clone());
        if !customer.recipients.iter().any(|r| r.eq_ignore_ascii_case(&email)) {
            customer.recipients.push(email);
        }
        customer.accounts.push(account);
    }
    Ok(customers)
}

/// What `siirto notices preview` shows for each customer whose accounts match `customer` (a
/// cPanel user, a contact address or a customer key; every customer when `None`): the notice of
/// `kind` (`advance` or `start`) exactly as it would be written, in `language` when given, else
/// in theirs. Nothing is written.
pub async fn preview(
    cx: &Ctx,
    ctx: &MigrationCtx,
    kind: &str,
    customer: Option<&str>,
    language: Option<&str>,
) -> anyhow::Result<Vec<NewNotice>> {
    if !matches!(kind, "advance" | "start") {
        anyhow::bail!("--kind {kind:?}: expected advance or start");
    }
    let customers = group(cx.store.accounts(ctx.id.as_str()).await?)?;
    let domains = cx.store.domains(ctx.id.as_str()).await?;
    let wanted = |key: &str, c: &Customer| {
        customer.is_none_or(|w| {
            key == w
                || c.recipients.iter().any(|r| r.eq_ignore_ascii_case(w))
                || c.accounts.iter().any(|a| a.user == w)
        })
    };
    let mut notices = Vec::new();
    for (key, mut found) in customers.into_iter().filter(|(key, c)| wanted(key, c)) {
        if let Some(language) = language {
            found.language = Some(language.to_owned());
        }
        notices.push(customer_notice(cx, ctx, kind, &key, &found, &domains, cx.now_ms())?);
    }
    Ok(notices)
}

/// One customer's notice of `kind`, rendered in their language, ready for the outbox.
fn customer_notice(
    cx: &Ctx,
    ctx: &MigrationCtx,
    kind: &str,
    key: &str,
    customer: &Customer,
    domains: &[DomainRow],
    now: i64,
) -> anyhow::Result<NewNotice> {
    let language = language_of(customer.language.as_deref(), &cx.world.language);
    let notices = &ctx.playbook.notices;
    let template = match kind {
        "start" => notices.start.for_language(&language),
        _ => notices.advance.for_language(&language),
    };
    let context = context(ctx, customer, domains, crate::domain::from_millis(ctx.row.cutover_at))?;
    let subject = crate::notify::render(&template.subject, &context)
        .with_context(|| format!("rendering the {kind} subject"))?;
    let body = crate::notify::render(&template.body, &context)
        .with_context(|| format!("rendering the {kind} body"))?;
    let first = &customer.accounts[0].user;
    Ok(NewNotice {
        migration_id: ctx.id.to_string(),
        account: None,
        kind: kind.to_owned(),
        message_id: format!("<{kind}.{first}.{}@siirto>", ctx.id),
        dedupe_key: customer_key(kind, ctx.id.as_str(), key),
        recipients: serde_json::to_string(&customer.recipients).context("recipients")?,
        subject: subject.trim().to_owned(),
        body,
        created_at: now,
    })
}

/// One customer (by key) with their accounts' domains, read from the store; `None` when no
/// notice can reach them (see [`group`]).
async fn one_customer(
    cx: &Ctx,
    ctx: &MigrationCtx,
    key: &str,
) -> Result<Option<(Customer, Vec<DomainRow>)>, StepError> {
    let accounts = cx.store.accounts_of_customer(ctx.id.as_str(), key).await?;
    let mut domains = Vec::new();
    for account in &accounts {
        domains.extend(cx.store.domains_of(ctx.id.as_str(), &account.user).await?);
    }
    Ok(group(accounts)?.remove(key).map(|customer| (customer, domains)))
}

/// The start notices of the customers of `batch` (accounts entering their transfer now), each
/// listing all of the customer's accounts, rendered (read before the step's transaction; write
/// them inside it with [`queue_notices`]).
pub async fn start_notices(
    cx: &Ctx,
    ctx: &MigrationCtx,
    batch: &[AccountRow],
) -> Result<Vec<NewNotice>, StepError> {
    let keys: BTreeSet<&str> = batch.iter().filter_map(|a| a.customer_key.as_deref()).collect();
    let now = cx.now_ms();
    let mut notices = Vec::new();
    for key in keys {
        let Some((customer, domains)) = one_customer(cx, ctx, key).await? else { continue };
        notices.push(customer_notice(cx, ctx, "start", key, &customer, &domains, now)?);
    }
    Ok(notices)
}

/// Writes `notices` to the outbox inside `tx`, one row each by its key (a customer told
/// already is not told again), each new one scheduled for sending.
pub async fn queue_notices(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    notices: &[NewNotice],
) -> Result<(), StepError> {
    for notice in notices {
        if let Some(id) = tx.enqueue_notice(notice).await? {
            super::notices::schedule_send(cx, tx, ctx, id, notice.created_at).await?;
        }
    }
    Ok(())
}

/// After a reschedule (payload `{"from": <old cutover ms>, "reason": …}`): each customer whose
/// advance notice went out (or may have: an attempt was under way) gets a correction with the
/// new date, once; an advance notice not out yet is re-dated in place, so its customer reads
/// the new date only.
pub async fn correct_notices(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    #[derive(serde::Deserialize)]
    struct Payload {
        from: i64,
        reason: String,
    }
    let payload: Payload = serde_json::from_str(&job.payload).context("correct_notices payload")?;
    let old = crate::domain::from_millis(payload.from);
    let prefix = customer_key("advance", ctx.id.as_str(), "");
    let advance: Vec<_> =
        cx.store.outbox(ctx.id.as_str()).await?.into_iter().filter(|n| n.kind == "advance").collect();
    let now = cx.now_ms();
    let mut rendered = Vec::new();
    for row in &advance {
        let Some(key) = row.dedupe_key.strip_prefix(&prefix) else { continue };
        let Some((customer, domains)) = one_customer(cx, ctx, key).await? else { continue };
        let advance = customer_notice(cx, ctx, "advance", key, &customer, &domains, now)?;
        // The correction: its own key and id, one per customer and new date.
        let mut correction = advance.clone();
        correction.kind = "correction".to_owned();
        correction.dedupe_key =
            format!("{}:{}", customer_key("correction", ctx.id.as_str(), key), ctx.row.cutover_at);
        let first = &customer.accounts[0].user;
        correction.message_id = format!("<correction.{first}.{}.{}@siirto>", ctx.row.cutover_at, ctx.id);
        let language = language_of(customer.language.as_deref(), &cx.world.language);
        let mut context = context(ctx, &customer, &domains, crate::domain::from_millis(ctx.row.cutover_at))?;
        context["old_date"] = old.format("%Y-%m-%d").to_string().into();
        context["old_time"] = old.format("%H:%M").to_string().into();
        context["reason"] = payload.reason.clone().into();
        let template = ctx.playbook.notices.correction.for_language(&language);
        correction.subject = crate::notify::render(&template.subject, &context)
            .context("rendering the correction")?
            .trim()
            .to_owned();
        correction.body =
            crate::notify::render(&template.body, &context).context("rendering the correction")?;
        rendered.push((row.id, row.skipped_at.is_some(), advance, correction));
    }
    let mut tx = cx.store.begin_leased(lease).await?;
    let (mut redated, mut corrected) = (0usize, 0usize);
    for (id, skipped, advance, correction) in &rendered {
        if *skipped {
            continue;
        }
        if tx.rewrite_unsent_notice(*id, &advance.subject, &advance.body).await? {
            redated += 1;
        } else {
            queue_notices(cx, &mut tx, ctx, std::slice::from_ref(correction)).await?;
            corrected += 1;
        }
    }
    let detail = serde_json::json!({ "redated": redated, "corrected": corrected, "from": old });
    tx.append_event(&cx.event(ctx, None, None, "advance_notices_corrected", detail)).await?;
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// Writes one advance notice per customer to the outbox and schedules their sending; past the
/// lateness limit, writes them skipped. Idempotent: each notice is one row by its key.
pub async fn announce(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    let notices = &ctx.playbook.notices;
    let due = ctx.row.cutover_at - ctx.playbook.schedule.announce_before.as_millis() as i64;
    let late_at = due + notices.advance_late_after.as_millis() as i64;
    let now = cx.now_ms();
    let too_late = now > late_at;
    let customers = group(cx.store.accounts(ctx.id.as_str()).await?)?;
    let domains = cx.store.domains(ctx.id.as_str()).await?;
    let mut tx = cx.store.begin_leased(lease).await?;
    let (mut queued, mut skipped) = (0usize, 0usize);
    for (key, customer) in &customers {
        let notice = customer_notice(cx, ctx, "advance", key, customer, &domains, now)?;
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
