//! Domains on someone else's DNS: public DNS is polled until it shows the target (reminding the
//! customer on the playbook's schedule), then the domain's mail is followed up.

use std::time::Duration;

use anyhow::{Context, anyhow};
use tracing::{debug, info};

use crate::dns::classify::{Classifier, NoAnswer};
use crate::domain::{DomainEvent, DomainState, RecordChange, to_millis};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::engine::jobs::JobKind;
use crate::engine::steps::notices::queue_reminder;
use crate::names::{AccountName, DomainName};
use crate::store::{DomainRow, JobRow, Lease, domain_state};
use crate::whm::MailRouting;
use serde::Deserialize;

/// Asks every configured resolver for each record of an external domain the customer was told
/// to change (A, SPF TXT, MX): propagated when the domain's own name answers somewhere, no
/// answer anywhere still holds an old value, and no resolver is silent. Until then a
/// due reminder is queued (one outbox row per reminder, by its dedupe key) and the job
/// comes back after `dns.external_poll_interval`, or sooner for the next reminder.
pub async fn poll_external(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let Some((user, row)) = external_job_domain(cx, ctx, job).await? else {
        return cx.finish(lease).await;
    };
    let user = user.as_str();
    let state = domain_state(&row)?;
    let DomainState::AwaitingCustomer { .. } = state else {
        return cx.finish(lease).await;
    };
    let resolvers = cx
        .world
        .public_dns
        .clone()
        .ok_or_else(|| StepError::transient(anyhow!("no resolvers are configured (dns.resolvers)")))?;
    let domain = DomainName::parse(&row.domain).context("stored domain")?;
    let Evidence { apex_answered, stale, unanswered, silent } =
        look(&resolvers, &state, &domain.fqdn()).await;
    let now = cx.now();
    let now_ms = to_millis(now);
    let mut tx = cx.store.begin_leased(lease).await?;
    // Which resolvers are silent goes on the timeline when it changes (and into status).
    let state = match &state {
        DomainState::AwaitingCustomer { silent: before, .. } if *before != silent => {
            let event = DomainEvent::ResolversSilent { resolvers: silent.clone() };
            cx.apply_domain(&mut tx, ctx, &row, &state, event).await?
        }
        _ => state,
    };
    let propagated = apex_answered && stale.is_empty() && silent.is_empty();
    if propagated {
        cx.apply_domain(&mut tx, ctx, &row, &state, DomainEvent::Propagated).await?;
        let mail = &ctx.playbook.mail;
        if mail.switch_routing || mail.final_sync {
            // Resolvers that cached the old records may send mail to the source until they
            // expire: the TTL the plan observed at the customer's DNS host, or an assumption
            // where none was observed.
            let due = ctx.gate_policy().external_records_expire_at(now, state.observed_ttl());
            tx.schedule_job(&cx.job(
                ctx,
                JobKind::ExternalMail,
                &row.domain,
                serde_json::json!({ "user": user }),
                to_millis(due),
                format!("external_mail:{}:{}", ctx.id, row.domain),
            ))
            .await?;
        }
        cx.schedule_settle(&mut tx, ctx, &format!("propagated:{}", row.domain)).await?;
        tx.finish_job(lease, now_ms).await?;
        tx.commit().await?;
        info!(domain = %row.domain, "public DNS shows the target");
        return Ok(());
    }
    debug!(domain = %row.domain, ?stale, ?unanswered, "public DNS does not show the target yet");
    let every = ctx.playbook.dns.external_reminder_every;
    let mut state = state;
    if let Some(due) = state.reminder_due_at(every)
        && due <= now
        && let DomainState::AwaitingCustomer { reminded, .. } = &state
    {
        let n = reminded + 1;
        queue_reminder(cx, &mut tx, ctx, &row, &state, n).await?;
        state = cx.apply_domain(&mut tx, ctx, &row, &state, DomainEvent::Reminded).await?;
    }
    let mut next = now_ms + ctx.playbook.dns.external_poll_interval.as_millis() as i64;
    if let Some(due) = state.reminder_due_at(every) {
        next = next.min(to_millis(due).max(now_ms));
    }
    tx.reschedule_job(lease, next).await?;
    Ok(tx.commit().await?)
}

/// What public DNS showed of the records a customer was told to change.
#[derive(Debug, Default)]
struct Evidence {
    /// Some resolver answered the domain's own name with addresses (a domain gone from DNS is
    /// not "propagated").
    apex_answered: bool,
    /// Answers that still hold an old value.
    stale: Vec<String>,
    /// Resolvers that gave no answer, with why.
    unanswered: Vec<String>,
    /// Resolvers that sent nothing at all: what they would answer is unknown.
    silent: Vec<String>,
}

impl Evidence {
    /// Takes one resolver's answer about one record; `still_old` says whether it still shows the
    /// old value. A resolver that answers with an error (an authoritative server that is not the
    /// domain's: REFUSED) is no evidence either way; one that sends nothing is silent.
    fn take<T>(
        &mut self,
        resolver: std::net::SocketAddr,
        change: &RecordChange,
        answer: Result<T, NoAnswer>,
        still_old: impl FnOnce(&T) -> bool,
    ) {
        match answer {
            Ok(found) => {
                if still_old(&found) {
                    let RecordChange { name, rtype, old_value, .. } = change;
                    self.stale.push(format!("{resolver} answers {name} {rtype} {old_value}"));
                }
            }
            Err(no) => {
                if no.silent && !self.silent.contains(&resolver.to_string()) {
                    self.silent.push(resolver.to_string());
                }
                self.unanswered.push(format!("{resolver} {} {}: {}", change.name, change.rtype, no.reason));
            }
        }
    }
}

/// Asks every resolver for the domain's own name and for each record the customer was told to
/// change (A, AAAA, SPF TXT, MX), each compared with its old value: an address or MX host
/// they moved elsewhere (a CDN, a mail service) is theirs to choose, only the old server's is
/// waited out.
async fn look(resolvers: &Classifier, state: &DomainState, apex: &str) -> Evidence {
    let mut evidence = Evidence::default();
    for (resolver, answer) in resolvers.a_records_everywhere(apex).await {
        match answer {
            Ok(addresses) => evidence.apex_answered |= !addresses.is_empty(),
            Err(no) => {
                let change = RecordChange {
                    name: apex.to_owned(),
                    rtype: "A".into(),
                    old_value: String::new(),
                    new_value: String::new(),
                };
                evidence.take(resolver, &change, Err::<(), _>(no), |_| false);
            }
        }
    }
    for change in state.records_to_change() {
        let (name, old) = (change.name.as_str(), change.old_value.as_str());
        match change.rtype.as_str() {
            "A" => {
                for (resolver, answer) in resolvers.a_records_everywhere(name).await {
                    evidence
                        .take(resolver, change, answer, |found| found.iter().any(|a| a.to_string() == old));
                }
            }
            "AAAA" => {
                for (resolver, answer) in resolvers.aaaa_records_everywhere(name).await {
                    evidence
                        .take(resolver, change, answer, |found| found.iter().any(|a| a.to_string() == old));
                }
            }
            "TXT" => {
                for (resolver, answer) in resolvers.spf_everywhere(name).await {
                    evidence.take(resolver, change, answer, |found| {
                        found.iter().any(|r| spf_key(r) == spf_key(old))
                    });
                }
            }
            "MX" => {
                for (resolver, answer) in resolvers.mx_everywhere(name).await {
                    evidence.take(resolver, change, answer, |found| {
                        found.iter().any(|r| mx_host(r) == mx_host(old))
                    });
                }
            }
            _ => {}
        }
    }
    evidence
}

/// The exchange host of an MX value (`10 mail.example.fi.`), as compared: lower case, no dot.
fn mx_host(value: &str) -> String {
    value.split_whitespace().last().unwrap_or_default().trim_end_matches('.').to_ascii_lowercase()
}

/// An SPF text as compared: its strings joined, without quotes, lower case, single spaces.
fn spf_key(text: &str) -> String {
    let joined: String = text.split('"').enumerate().filter(|(i, _)| i % 2 == 1).map(|(_, s)| s).collect();
    let joined = if text.contains('"') { joined } else { text.to_owned() };
    joined.to_ascii_lowercase().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The mail follow-up of a propagated external domain: routing on the source set to remote
/// (the source now relays stragglers to the target by the new MX), then, with the final
/// sync on, a delta sync of the account's mail, which brings what landed on the source
/// while the customer's records still pointed there. Both are idempotent (routing checked
/// first, rsync `--update` without `--delete`), so a rerun after a crash is harmless.
pub async fn external_mail(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let Some((user, row)) = external_job_domain(cx, ctx, job).await? else {
        return cx.finish(lease).await;
    };
    let user = user.as_str();
    let DomainState::Propagated { .. } = domain_state(&row)? else {
        // Rolled back, or gone from the migration: nothing to follow up.
        return cx.finish(lease).await;
    };
    let domain = DomainName::parse(&job.subject).context("stored domain")?;
    let user_name = AccountName::parse(user).context("stored user")?;
    let mail = &ctx.playbook.mail;
    let routing = if mail.switch_routing {
        lease.check()?;
        let change = crate::mailsync::set_routing(
            &ctx.source.whm,
            &user_name,
            std::slice::from_ref(&domain),
            MailRouting::Remote,
        )
        .await
        .map_err(|err| classify!(err))?;
        Some(change)
    } else {
        None
    };
    let synced = if mail.final_sync {
        // A delivery the source accepted just before the switch finishes writing first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some(super::mail::final_sync(cx, ctx, user, lease).await?)
    } else {
        None
    };
    info!(account = user, domain = %domain, ?routing, ?synced, "external domain's mail followed up");
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    if let Some(report) = &synced {
        tx.record_mail_copied(ctx.id.as_str(), user, &report.copied_names, now).await?;
    }
    tx.append_event(&cx.event(
        ctx,
        Some(user),
        Some(domain.as_str()),
        "external_mail_followed_up",
        serde_json::json!({
            "host": ctx.source.name,
            "routing": routing.as_ref().map(|_| MailRouting::Remote.as_str()),
            "changed": routing.as_ref().map(|c| c.changed.clone()),
            "copied": synced.as_ref().map(|s| &s.copied),
            "already_there": synced.as_ref().map(|s| s.already_there),
            "synced": synced.as_ref().map(|s| &s.synced),
        }),
    ))
    .await?;
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// The user (from the payload) and the domain row (the subject) of a per-domain job on an
/// external domain; `None` when the domain is no longer in the migration.
pub async fn external_job_domain(
    cx: &Ctx,
    ctx: &MigrationCtx,
    job: &JobRow,
) -> Result<Option<(String, DomainRow)>, StepError> {
    #[derive(Deserialize)]
    struct Payload {
        user: String,
    }
    let payload: Payload =
        serde_json::from_str(&job.payload).with_context(|| format!("{} payload", job.kind))?;
    let row = cx
        .store
        .domains_of(ctx.id.as_str(), &payload.user)
        .await?
        .into_iter()
        .find(|row| row.domain == job.subject);
    Ok(row.map(|row| (payload.user, row)))
}
