//! Notices to customers, one per customer listing all of their accounts, in their language. A
//! customer is the contract's customer the plan matched the account to, else the account's
//! contact address ([`AccountRow::customer_key`]).
//!
//! - The advance notice: `schedule.announce_before` the cutover, what moves and when and, for
//!   a domain on someone else's DNS, that they will have records to change. Past
//!   `notices.late_after.advance` it is written to the outbox marked skipped (too late), never
//!   sent.
//! - The start notice: when the first of a customer's accounts enters its transfer.
//! - The completion notice: when none of a customer's accounts is still moving, listing every
//!   account that moved (with the records a customer on another DNS host must change).
//! - The reseller roll-up (`notices.reseller_customers` "reseller" or "both"): with the advance
//!   notices, to each reseller, a table of its end customers to forward. With "reseller" its end
//!   customers get no advance, start or correction notice from us, and their completion notices
//!   and reminders go to the reseller.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use sha2::Digest;
use tracing::info;

use crate::domain::{AccountEvent, AccountState, DomainState, completion_notice_key, to_millis};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult};
use crate::playbook::{ResellerCustomers, language_of};
use crate::store::{AccountRow, DomainRow, JobRow, Lease, NewNotice, Tx, account_state, domain_state};

use super::notices::{external_records_of, rendered};

/// The dedicated-IP accounts of a migration, by user.
type Dedicated = HashMap<String, crate::dedicated_ip::DedicatedIp>;

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

/// The reseller address an account's notices go to instead of its own contact: with
/// `notices.reseller_customers = "reseller"`, for an account of a reseller whose address is known.
pub(crate) fn via_reseller(mode: ResellerCustomers, account: &AccountRow) -> Option<&str> {
    if mode != ResellerCustomers::Reseller || account.reseller.is_none() {
        return None;
    }
    account.reseller_email.as_deref().filter(|e| !e.trim().is_empty())
}

/// The accounts grouped by customer ([`AccountRow::customer_key`], set by the plan); an account
/// no notice can reach (no key, no contact address) or held is left out, and so is one whose
/// customer hears from its reseller (see [`via_reseller`]) when `mode` says so.
fn group(accounts: Vec<AccountRow>, mode: ResellerCustomers) -> anyhow::Result<BTreeMap<String, Customer>> {
    let mut customers: BTreeMap<String, Customer> = BTreeMap::new();
    for account in accounts {
        if matches!(account_state(&account)?, AccountState::Held { .. })
            || via_reseller(mode, &account).is_some()
        {
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
/// `kind` (`advance`, `start` or `completion`, with the records as they stand now) exactly as it
/// would be written, in `language` when given, else in theirs; or each reseller's roll-up
/// (`reseller`, `customer` then being the reseller's user or address). Nothing is written.
pub async fn preview(
    cx: &Ctx,
    ctx: &MigrationCtx,
    kind: &str,
    customer: Option<&str>,
    language: Option<&str>,
) -> anyhow::Result<Vec<NewNotice>> {
    if !matches!(kind, "advance" | "start" | "completion" | "reseller") {
        anyhow::bail!("--kind {kind:?}: expected advance, start, completion or reseller");
    }
    if kind == "reseller" {
        let roll_ups = reseller_notices(cx, ctx, cx.now_ms(), language).await?;
        let prefix = customer_key("reseller", ctx.id.as_str(), "");
        return Ok(roll_ups
            .into_iter()
            .filter(|n| {
                customer.is_none_or(|w| {
                    n.dedupe_key.strip_prefix(&prefix) == Some(w)
                        || n.recipients.to_ascii_lowercase().contains(&w.to_ascii_lowercase())
                })
            })
            .collect());
    }
    let mode = ctx.playbook.notices.reseller_customers;
    let customers = group(cx.store.accounts(ctx.id.as_str()).await?, mode)?;
    let domains = cx.store.domains(ctx.id.as_str()).await?;
    let dedicated = cx.dedicated_all(ctx).await.map_err(|err| err.into_error())?;
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
        notices.push(customer_notice(cx, ctx, kind, &key, &found, &domains, &dedicated)?);
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
    dedicated: &Dedicated,
) -> anyhow::Result<NewNotice> {
    let language = language_of(customer.language.as_deref(), &cx.world.language);
    let notices = &ctx.playbook.notices;
    let template = match kind {
        "start" => notices.start.for_language(&language),
        "completion" => notices.completion.for_language(&language),
        _ => notices.advance.for_language(&language),
    };
    let context = context(
        ctx,
        customer,
        domains,
        crate::domain::from_millis(ctx.row.cutover_at),
        ctx.target.ip,
        dedicated,
    )?;
    let (subject, body, html) = rendered(template, &context, kind)?;
    let first = &customer.accounts[0].user;
    Ok(NewNotice {
        migration_id: ctx.id.to_string(),
        account: None,
        kind: kind.to_owned(),
        message_id: format!("<{kind}.{first}.{}@siirto>", ctx.id),
        dedupe_key: customer_key(kind, ctx.id.as_str(), key),
        recipients: serde_json::to_string(&customer.recipients).context("recipients")?,
        subject,
        body,
        html,
        created_at: cx.now_ms(),
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
    Ok(group(accounts, ctx.playbook.notices.reseller_customers)?
        .remove(key)
        .map(|customer| (customer, domains)))
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
    let dedicated = cx.dedicated_all(ctx).await?;
    let mut notices = Vec::new();
    for key in keys {
        let Some((customer, domains)) = one_customer(cx, ctx, key).await? else { continue };
        notices.push(customer_notice(cx, ctx, "start", key, &customer, &domains, &dedicated)?);
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
    let (advance, sent_roll_ups): (Vec<_>, Vec<_>) = cx
        .store
        .outbox(ctx.id.as_str())
        .await?
        .into_iter()
        .filter(|n| matches!(n.kind.as_str(), "advance" | "reseller"))
        .partition(|n| n.kind == "advance");
    let now = cx.now_ms();
    let dedicated = cx.dedicated_all(ctx).await?;
    let mut corrections = Vec::new();
    for row in &advance {
        let Some(key) = row.dedupe_key.strip_prefix(&prefix) else { continue };
        let Some((customer, domains)) = one_customer(cx, ctx, key).await? else { continue };
        let advance = customer_notice(cx, ctx, "advance", key, &customer, &domains, &dedicated)?;
        // The correction: its own key and id, one per customer and new date.
        let mut correction = advance.clone();
        correction.kind = "correction".to_owned();
        correction.dedupe_key =
            format!("{}:{}", customer_key("correction", ctx.id.as_str(), key), ctx.row.cutover_at);
        let first = &customer.accounts[0].user;
        correction.message_id = format!("<correction.{first}.{}.{}@siirto>", ctx.row.cutover_at, ctx.id);
        let language = language_of(customer.language.as_deref(), &cx.world.language);
        let cutover = crate::domain::from_millis(ctx.row.cutover_at);
        let mut context = context(ctx, &customer, &domains, cutover, ctx.target.ip, &dedicated)?;
        context["old_date"] = old.format("%Y-%m-%d").to_string().into();
        context["old_time"] = old.format("%H:%M").to_string().into();
        context["reason"] = payload.reason.clone().into();
        let template = ctx.playbook.notices.correction.for_language(&language);
        (correction.subject, correction.body, correction.html) = rendered(template, &context, "correction")?;
        corrections.push((row.id, row.skipped_at.is_some(), advance, correction));
    }
    // A reseller's roll-up: re-dated in place while not out yet, else sent again with the new
    // date (its own key and id).
    let roll_ups =
        if sent_roll_ups.is_empty() { Vec::new() } else { reseller_notices(cx, ctx, now, None).await? };
    for row in sent_roll_ups {
        let Some(name) = row.dedupe_key.strip_prefix(&customer_key("reseller", ctx.id.as_str(), "")) else {
            continue;
        };
        // Only the first roll-up of a reseller (`reseller:<migration>:<name>`) is corrected.
        if name.contains(':') {
            continue;
        }
        let Some(roll_up) = roll_ups.iter().find(|n| n.dedupe_key == row.dedupe_key).cloned() else {
            continue;
        };
        let mut again = roll_up.clone();
        again.dedupe_key = format!("{}:{}", roll_up.dedupe_key, ctx.row.cutover_at);
        again.message_id = format!("<reseller.{name}.{}.{}@siirto>", ctx.row.cutover_at, ctx.id);
        corrections.push((row.id, row.skipped_at.is_some(), roll_up, again));
    }
    let mut tx = cx.store.begin_leased(lease).await?;
    let (mut redated, mut corrected) = (0usize, 0usize);
    for (id, skipped, advance, correction) in &corrections {
        if *skipped {
            continue;
        }
        if tx.rewrite_unsent_notice(*id, &advance.subject, &advance.body, advance.html.as_deref()).await? {
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

/// Writes one advance notice per customer (and, when the playbook says so, one roll-up per
/// reseller) to the outbox and schedules their sending; past the lateness limit, writes them
/// skipped. Idempotent: each notice is one row by its key.
pub async fn announce(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    let notices = &ctx.playbook.notices;
    let now = cx.now_ms();
    let due = due_at(ctx, "advance", now);
    let customers = group(cx.store.accounts(ctx.id.as_str()).await?, notices.reseller_customers)?;
    let domains = cx.store.domains(ctx.id.as_str()).await?;
    let dedicated = cx.dedicated_all(ctx).await?;
    let mut written = Vec::new();
    for (key, customer) in &customers {
        written.push(customer_notice(cx, ctx, "advance", key, customer, &domains, &dedicated)?);
    }
    let roll_ups = reseller_notices(cx, ctx, now, None).await?;
    let resellers = roll_ups.len();
    written.extend(roll_ups);
    let mut tx = cx.store.begin_leased(lease).await?;
    let (mut queued, mut skipped) = (0usize, 0usize);
    // Every customer's notice in a few multi-row statements: a campaign of 10,000 customers
    // is one transaction of 200, not 20,000.
    let ids = tx.enqueue_notices(&written).await?;
    let mut sends = Vec::new();
    for (notice, id) in written.iter().zip(ids) {
        let Some(id) = id else { continue };
        if let Some(reason) = too_late(ctx, &notice.kind, due, now) {
            tx.mark_notice_skipped(id, now, &reason).await?;
            skipped += 1;
        } else {
            sends.push(super::notices::send_job(cx, ctx, id, now));
            queued += 1;
        }
    }
    tx.schedule_jobs(&sends).await?;
    let detail = serde_json::json!({
        "customers": customers.len(),
        "resellers": resellers,
        "queued": queued,
        "skipped_late": skipped,
        "due_at": crate::domain::from_millis(due),
    });
    tx.append_event(&cx.event(ctx, None, None, "advance_notices", detail)).await?;
    tx.finish_job(lease, now).await?;
    tx.commit().await?;
    info!(migration = %ctx.id, customers = customers.len(), resellers, queued, skipped, "advance notices written");
    Ok(())
}

/// When a notice of `kind` written at `created_at` is due: the advance notices and the
/// reseller roll-ups `schedule.announce_before` the cutover, customer service's briefing
/// [`super::staff::BRIEF_BEFORE`] it, every other kind when it is written.
pub(crate) fn due_at(ctx: &MigrationCtx, kind: &str, created_at: i64) -> i64 {
    match kind {
        "advance" | "reseller" => {
            ctx.row.cutover_at - ctx.playbook.schedule.announce_before.as_millis() as i64
        }
        "staff" => ctx.row.cutover_at - super::staff::BRIEF_BEFORE.as_millis() as i64,
        _ => created_at,
    }
}

/// Why a notice of `kind` due at `due` is too late to send at `now` (later than its
/// `notices.late_after` limit after its due time), or `None` while it may go out.
pub(crate) fn too_late(ctx: &MigrationCtx, kind: &str, due: i64, now: i64) -> Option<String> {
    let limit = ctx.playbook.notices.late_after(kind)?;
    (now > due + limit.as_millis() as i64).then(|| {
        format!(
            "too late: due {}, and later than notices.late_after.{kind} ({}) after that",
            crate::domain::from_millis(due).format("%Y-%m-%d %H:%M UTC"),
            crate::config::as_written(limit)
        )
    })
}

/// The roll-up of each reseller whose address is known (none unless
/// `notices.reseller_customers` is "reseller" or "both"): its end customers, their accounts and
/// domains and what each must do, in the reseller's language (or `language`).
async fn reseller_notices(
    cx: &Ctx,
    ctx: &MigrationCtx,
    now: i64,
    language: Option<&str>,
) -> anyhow::Result<Vec<NewNotice>> {
    if !ctx.playbook.notices.reseller_customers.rolls_up() {
        return Ok(Vec::new());
    }
    let accounts = cx.store.accounts(ctx.id.as_str()).await?;
    let languages: BTreeMap<String, Option<String>> =
        accounts.iter().map(|a| (a.user.clone(), a.language.clone())).collect();
    let mut by_reseller: BTreeMap<(String, String), Vec<AccountRow>> = BTreeMap::new();
    for account in accounts {
        if let (Some(reseller), Some(email)) = (account.reseller.clone(), account.reseller_email.clone()) {
            by_reseller.entry((reseller, email)).or_default().push(account);
        }
    }
    let domains = cx.store.domains(ctx.id.as_str()).await?;
    let dedicated = cx.dedicated_all(ctx).await.map_err(|err| err.into_error())?;
    let cutover = crate::domain::from_millis(ctx.row.cutover_at);
    let mut notices = Vec::new();
    for ((reseller, email), accounts) in by_reseller {
        let mut customers = Vec::new();
        for customer in group(accounts, ResellerCustomers::Direct)?.into_values() {
            let context = context(ctx, &customer, &domains, cutover, ctx.target.ip, &dedicated)?;
            customers.push(serde_json::json!({
                "name": customer.name,
                "email": customer.recipients.join(", "),
                "accounts": context["accounts"],
                "external_domains": context["external_domains"],
            }));
        }
        if customers.is_empty() {
            continue;
        }
        let language = match language {
            Some(language) => language.to_owned(),
            None => language_of(languages.get(&reseller).cloned().flatten().as_deref(), &cx.world.language),
        };
        let context = serde_json::json!({
            "migration": ctx.id.as_str(),
            "customers": customers,
            "reseller_name": reseller,
            "reseller_account": reseller,
            "source_host": ctx.source.public_name,
            "target_host": ctx.target.public_name,
            "target_ip": ctx.target.ip.to_string(),
            "cutover_date": cutover.format("%Y-%m-%d").to_string(),
            "cutover_time": cutover.format("%H:%M").to_string(),
        });
        let template = ctx.playbook.notices.reseller.for_language(&language);
        let (subject, body, html) = rendered(template, &context, "reseller")?;
        notices.push(NewNotice {
            migration_id: ctx.id.to_string(),
            account: None,
            kind: "reseller".to_owned(),
            message_id: format!("<reseller.{reseller}.{}@siirto>", ctx.id),
            dedupe_key: customer_key("reseller", ctx.id.as_str(), &reseller),
            recipients: serde_json::to_string(&[email]).context("recipients")?,
            subject,
            body,
            html,
            created_at: now,
        });
    }
    Ok(notices)
}

/// Whether an account is still on its way to being switched (its customer's completion notice
/// waits for it): not yet switched, and neither held, rolled back nor waiting for an operator.
fn still_moving(state: &AccountState) -> bool {
    matches!(
        state,
        AccountState::Pending
            | AccountState::Queued { .. }
            | AccountState::Copied { .. }
            | AccountState::Restored { .. }
            | AccountState::Verified { .. }
            | AccountState::Failed { .. }
    )
}

/// How long a switched account waits before asking again whether its customer's other accounts
/// have arrived: a quarter of the time it has waited so far, between these bounds.
const COMPLETION_RECHECK: (i64, i64) = (2_000, 300_000);

/// The completion notice, one per customer: when `job`'s account is switched and none of its
/// customer's accounts is still moving, writes one notice listing every switched account of the
/// customer, moves each of them to `notified` and schedules the sending; while another is still
/// moving, asks again later (the last to arrive, or the first to ask after it, writes it).
pub async fn queue_completion(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let user = job.subject.as_str();
    let Some((account, AccountState::Switched { at })) =
        cx.account_for_step(ctx, user, |s| matches!(s, AccountState::Switched { .. })).await?
    else {
        return cx.finish(lease).await;
    };
    let mid = ctx.id.as_str();
    let accounts = match &account.customer_key {
        Some(key) => cx.store.accounts_of_customer(mid, key).await?,
        None => vec![account.clone()],
    };
    let now = cx.now_ms();
    let recheck = |waited: i64| now + (waited / 4).clamp(COMPLETION_RECHECK.0, COMPLETION_RECHECK.1);
    let mut switched = Vec::new();
    for other in &accounts {
        match account_state(other)? {
            state if still_moving(&state) => {
                let mut tx = cx.store.begin_leased(lease).await?;
                tx.reschedule_job(lease, recheck(now - to_millis(at))).await?;
                return Ok(tx.commit().await?);
            }
            AccountState::Switched { .. } => switched.push(other.clone()),
            _ => {}
        }
    }
    let mut domains = Vec::new();
    for other in &switched {
        domains.extend(cx.store.domains_of(mid, &other.user).await?);
    }
    let mode = ctx.playbook.notices.reseller_customers;
    let mut recipients: Vec<String> = Vec::new();
    for other in &switched {
        let to = via_reseller(mode, other).map(str::to_owned).or_else(|| other.contact_email.clone());
        if let Some(to) = to.filter(|t| !recipients.iter().any(|r| r.eq_ignore_ascii_case(t))) {
            recipients.push(to);
        }
    }
    let customer = Customer {
        name: account.customer_name.clone().unwrap_or_default(),
        language: account.language.clone(),
        recipients,
        accounts: switched.clone(),
    };
    let dedicated = cx.dedicated_all(ctx).await?;
    let target_ip = dedicated.get(user).and_then(|d| d.target_ip).unwrap_or(ctx.target.ip);
    let language = language_of(customer.language.as_deref(), &cx.world.language);
    let context = context(
        ctx,
        &customer,
        &domains,
        crate::domain::from_millis(ctx.row.cutover_at),
        target_ip,
        &dedicated,
    )?;
    let (subject, body, html) =
        rendered(ctx.playbook.notices.completion.for_language(&language), &context, "completion")?;
    let users: Vec<&str> = switched.iter().map(|a| a.user.as_str()).collect();
    let key = account.customer_key.clone().unwrap_or_else(|| format!("account-{user}"));
    let digest = hex::encode(&sha2::Sha256::digest(users.join(",").as_bytes())[..6]);
    let notice = NewNotice {
        migration_id: ctx.id.to_string(),
        account: Some(users[0].to_owned()),
        kind: "completion".to_owned(),
        // One account: `<completion.USER.MIGRATION@siirto>`; several: their digest as well.
        message_id: match users.len() {
            1 => format!("<completion.{}.{mid}@siirto>", users[0]),
            n => format!("<completion.{}.{n}.{digest}.{mid}@siirto>", users[0]),
        },
        dedupe_key: completion_notice_key(&ctx.id, &key, &users),
        recipients: serde_json::to_string(&customer.recipients).context("recipients")?,
        subject,
        body,
        html,
        created_at: now,
    };
    let mut tx = cx.store.begin_leased(lease).await?;
    // Decided on what was read before; under the customer's row locks, it must still hold (a
    // job of another of their accounts may have decided meanwhile), else ask again shortly.
    let fresh = match &account.customer_key {
        Some(key) => tx.lock_customer(mid, key).await?,
        None => tx.account(mid, user).await?.into_iter().collect(),
    };
    let unchanged = fresh.len() == accounts.len()
        && fresh.iter().all(|f| accounts.iter().any(|a| a.user == f.user && a.data == f.data));
    if !unchanged {
        tx.reschedule_job(lease, now + COMPLETION_RECHECK.0).await?;
        return Ok(tx.commit().await?);
    }
    let (notice_id, dedupe) = match tx.enqueue_notice(&notice).await? {
        Some(id) => (id, format!("send_notice:{id}")),
        // Switched again after a rollback and a retry: these accounts' customer was told
        // already. The existing row stands; a fresh send job finds it sent, sends nothing and
        // marks the accounts notified-and-sent.
        None => {
            let id = cx
                .store
                .outbox(mid)
                .await?
                .into_iter()
                .find(|n| n.dedupe_key == notice.dedupe_key)
                .map(|n| n.id)
                .ok_or_else(|| anyhow::anyhow!("account {user}: the completion notice's row vanished"))?;
            (id, format!("send_notice:{id}:again:{now}"))
        }
    };
    for other in &switched {
        let state = account_state(other)?;
        cx.apply_account(&mut tx, ctx, &other.user, &state, AccountEvent::NoticeQueued { notice_id }).await?;
    }
    let job = cx.job(
        ctx,
        crate::engine::jobs::JobKind::SendNotice,
        &notice_id.to_string(),
        serde_json::json!({}),
        now,
        dedupe,
    );
    tx.schedule_job(&job).await?;
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// The accounts a customer's completion notice `notice_id` concerns, read inside `tx`: those of
/// its first account's customer that wait in `notified` for this very notice.
pub(crate) async fn completion_accounts(
    tx: &mut Tx<'_>,
    migration: &str,
    first: &str,
    notice_id: i64,
) -> Result<Vec<(String, AccountState)>, StepError> {
    let Some(account) = tx.account(migration, first).await? else { return Ok(Vec::new()) };
    let accounts = match &account.customer_key {
        Some(key) => tx.lock_customer(migration, key).await?,
        None => vec![account],
    };
    let mut waiting = Vec::new();
    for account in accounts {
        let state = account_state(&account)?;
        if matches!(state, AccountState::Notified { notice_id: id, .. } if id == notice_id) {
            waiting.push((account.user, state));
        }
    }
    Ok(waiting)
}

/// [`completion_accounts`] for several completion notices at once (`(first account, notice
/// id)`): their first accounts read in one query, each customer's accounts under its locks.
pub(crate) async fn completion_accounts_of(
    tx: &mut Tx<'_>,
    migration: &str,
    notices: &[(&str, i64)],
) -> Result<Vec<(String, AccountState)>, StepError> {
    let users: Vec<&str> = notices.iter().map(|(user, _)| *user).collect();
    let firsts = tx.accounts_named(migration, &users).await?;
    let mut waiting = Vec::new();
    for (user, notice_id) in notices {
        let Some(account) = firsts.iter().find(|a| a.user == *user) else { continue };
        let accounts = match &account.customer_key {
            Some(key) => tx.lock_customer(migration, key).await?,
            None => vec![account.clone()],
        };
        for account in accounts {
            let state = account_state(&account)?;
            if matches!(state, AccountState::Notified { notice_id: id, .. } if id == *notice_id) {
                waiting.push((account.user, state));
            }
        }
    }
    Ok(waiting)
}

/// The notice variables of a reminder about one domain of `account`, now in `state`: those of
/// any customer notice, about that domain alone (so a template checked with the sample
/// variables renders here too).
pub(crate) async fn domain_context(
    cx: &Ctx,
    ctx: &MigrationCtx,
    account: &AccountRow,
    row: &DomainRow,
    state: &DomainState,
) -> Result<serde_json::Value, StepError> {
    let mut row = row.clone();
    row.data = serde_json::to_string(state).context("serialising a domain state")?;
    let dedicated: Dedicated =
        cx.dedicated_of(ctx, &account.user).await?.map(|d| (account.user.clone(), d)).into_iter().collect();
    let target_ip = dedicated.get(&account.user).and_then(|d| d.target_ip).unwrap_or(ctx.target.ip);
    let customer = Customer {
        name: account.customer_name.clone().unwrap_or_default(),
        language: account.language.clone(),
        recipients: Vec::new(),
        accounts: vec![account.clone()],
    };
    let cutover = crate::domain::from_millis(ctx.row.cutover_at);
    Ok(context(ctx, &customer, std::slice::from_ref(&row), cutover, target_ip, &dedicated)?)
}

/// The notice variables of one customer's notice (every notice variable is set, so a template
/// written for another kind renders too): their accounts and domains, the domains on someone
/// else's DNS, the records they must change there and the domains they must point themselves.
fn context(
    ctx: &MigrationCtx,
    customer: &Customer,
    domains: &[DomainRow],
    cutover: crate::domain::Timestamp,
    target_ip: std::net::Ipv4Addr,
    dedicated: &Dedicated,
) -> anyhow::Result<serde_json::Value> {
    let mut accounts = Vec::new();
    let mut all_domains = Vec::new();
    let mut external = Vec::new();
    let mut external_records = Vec::new();
    let mut domains_to_point = Vec::new();
    for account in &customer.accounts {
        let mut own: Vec<&DomainRow> = domains.iter().filter(|d| d.user == account.user).collect();
        // The main domain first, then the others by name.
        own.sort_by_key(|d| (d.domain != account.main_domain, d.domain.clone()));
        for row in &own {
            let state = domain_state(row)?;
            let records = external_records_of(&row.domain, state.records_to_change());
            if matches!(state, DomainState::External { .. }) || !records.is_empty() {
                external.push(row.domain.clone());
            }
            external_records.extend(records);
            if let DomainState::NotRepointed { site_elsewhere: false, .. } = state {
                domains_to_point.push(row.domain.clone());
            }
        }
        let names: Vec<String> = own.iter().map(|d| d.domain.clone()).collect();
        all_domains.extend(names.iter().cloned());
        // An account on a dedicated address at the target: the customer reads its own address.
        let own_ip = dedicated.get(&account.user).and_then(|d| d.target_ip).map(|ip| ip.to_string());
        accounts.push(serde_json::json!({
            "account": account.user,
            "main_domain": account.main_domain,
            "domains": names,
            "dedicated_ip": own_ip.unwrap_or_default(),
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
        "target_ip": target_ip.to_string(),
        "external_records": external_records,
        "domains_to_point": domains_to_point,
        "customer_name": customer.name,
        "accounts": accounts,
        "external_domains": external,
        "cutover_date": cutover.format("%Y-%m-%d").to_string(),
        "cutover_time": cutover.format("%H:%M").to_string(),
    }))
}
