//! Verification: an account restored on the target is compared with the source (sites over HTTP
//! and HTTPS, the account, its domains and mailboxes on the target) before any record moves.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, anyhow};
use tracing::{info, warn};

use crate::dedicated_ip::{DedicatedIp, SiteIp};
use crate::dns::rewrite::{Endpoint, rewrite_spf};
use crate::domain::{AccountEvent, AccountState, DomainEvent, DomainState, RecordChange};
use crate::engine::context::{Ctx, MigrationCtx, StepError, StepResult, classify};
use crate::engine::jobs::JobKind;
use crate::names::{AccountName, DomainName};
use crate::site_check::fetch_site;
use crate::store::{DomainRow, JobRow, Lease, account_state, domain_state};

/// Fetches each of the account's sites from the source and from the target by address,
/// with the domain as Host, over HTTP and HTTPS ([`crate::site_check`]), and compares
/// status and title.
pub async fn verify(cx: &Ctx, ctx: &MigrationCtx, job: &JobRow, lease: &Lease) -> StepResult {
    let user = job.subject.as_str();
    if !cx.lock_account_dns(ctx, lease, user).await? {
        return Ok(());
    }
    let Some((_, state)) =
        cx.account_for_step(ctx, user, |s| matches!(s, AccountState::Restored { .. })).await?
    else {
        return cx.finish(lease).await;
    };
    let mut domains = cx.store.domains_of(ctx.id.as_str(), user).await?;
    if relower_restored(cx, ctx, lease, user, &domains).await? {
        domains = cx.store.domains_of(ctx.id.as_str(), user).await?;
    }
    // An account on a dedicated IP is put on its assigned address first, then compared
    // there with its dedicated address at the source.
    let (source_ip, target_ip, site_ip_set) = match cx.dedicated_of(ctx, user).await? {
        None => (ctx.source.ip, ctx.target.ip, None),
        Some(DedicatedIp { source_ip, target_ip: Some(target_ip) }) => {
            let account = AccountName::parse(user).context("stored user")?;
            lease.check()?;
            let set = match crate::dedicated_ip::ensure_site_ip(&ctx.target.whm, &account, target_ip)
                .await
                .map_err(|err| classify!(err))?
            {
                SiteIp::AlreadyThere => None,
                SiteIp::Set { from } => Some(from),
                SiteIp::NotOnTarget => {
                    return Err(StepError::Transient(anyhow!(
                        "account {user} is not listed on the target {}; setsiteip to {target_ip} waits",
                        ctx.target.name
                    )));
                }
            };
            (source_ip, target_ip, set.map(|from| (from, target_ip)))
        }
        Some(DedicatedIp { target_ip: None, .. }) => {
            return Err(StepError::Permanent(anyhow!(
                "account {user} is on a dedicated IP but has no target IP assigned (siirto assign-ip)"
            )));
        }
    };
    let mut mismatches = Vec::new();
    if ctx.playbook.verification.http_check {
        for row in &domains {
            let domain = DomainName::parse(&row.domain).context("stored domain")?;
            let timeout = ctx.playbook.verification.timeout;
            let target = fetch_site(&cx.http, target_ip, ctx.target.http_port, &domain, timeout)
                .await
                .map_err(|err| StepError::Transient(err.context(format!("{domain} on the target"))))?;
            let source = fetch_site(&cx.http, source_ip, ctx.source.http_port, &domain, timeout).await;
            match source {
                Ok(source) if source == target => {}
                Ok(source) => mismatches.push(format!(
                    "{domain}: source answered {} {:?}, target answered {} {:?}",
                    source.status, source.title, target.status, target.title
                )),
                // The source no longer answering is no reason to keep the customer on it;
                // the target must answer with a success then.
                Err(err) if (200..400).contains(&target.status) => {
                    warn!(%domain, error = %err, "source did not answer; target answers");
                }
                Err(err) => mismatches.push(format!(
                    "{domain}: source unreachable ({err:#}), target answered {}",
                    target.status
                )),
            }
            let (source_https, target_https) =
                ((source_ip, ctx.source.https_port), (target_ip, ctx.target.https_port));
            mismatches
                .extend(crate::site_check::compare_https(source_https, target_https, &domain, timeout).await);
        }
    }
    // The account, its domains and its mailboxes must exist on the target.
    let names: Vec<DomainName> = domains
        .iter()
        .map(|d| DomainName::parse(&d.domain))
        .collect::<Result<_, _>>()
        .context("stored domain")?;
    let account = AccountName::parse(user).context("stored user")?;
    let missing =
        crate::transfer_control::account_presence(&ctx.source.whm, &ctx.target.whm, &account, &names)
            .await
            .map_err(|err| classify!(err))?;
    mismatches.extend(missing);
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    // An operator's rollback may have come in while the sites were fetched.
    let current = tx.account_for_update(ctx.id.as_str(), user).await?.map(|row| account_state(&row));
    if !matches!(current, Some(Ok(ref now_state)) if *now_state == state) {
        tx.finish_job(lease, now).await?;
        return Ok(tx.commit().await?);
    }
    if let Some((from, to)) = site_ip_set {
        let from = from.map(|ip| ip.to_string());
        let detail = serde_json::json!({ "from": from, "to": to.to_string() });
        tx.append_event(&cx.event(ctx, Some(user), None, "site_ip_set", detail)).await?;
    }
    let event = if mismatches.is_empty() {
        AccountEvent::VerifiedOnTarget
    } else {
        AccountEvent::VerificationFailed { evidence: mismatches.join("; ") }
    };
    let next = cx.apply_account(&mut tx, ctx, user, &state, event).await?;
    if let AccountState::Verified { .. } = next {
        for row in &domains {
            let domain_state = domain_state(row)?;
            match domain_state {
                DomainState::TtlLowered { .. } => {
                    cx.apply_domain(&mut tx, ctx, row, &domain_state, DomainEvent::AccountVerified).await?;
                }
                // Not our DNS: the customer is told what to change (in the completion
                // notice) and public DNS is polled until it shows the target.
                DomainState::External { ref seen, .. } => {
                    // An SPF record gets the same text with the new address for the old one.
                    let (from, to) = (
                        Endpoint { ip: source_ip, ipv6: None, hostname: None },
                        Endpoint { ip: target_ip, ipv6: None, hostname: None },
                    );
                    // An MX record naming a host at the old server gets the new server's name
                    // (or, when the config has none, the domain's own `mail` name).
                    let exchange =
                        ctx.target.hostname.clone().unwrap_or_else(|| format!("mail.{}.", row.domain));
                    let rewritten = seen
                        .iter()
                        .filter_map(|r| {
                            let new_value = match r.rtype.as_str() {
                                "TXT" => rewrite_spf(&r.value, &from, &to)?,
                                "MX" => format!("{} {exchange}", r.value.split_whitespace().next()?),
                                // The new server's IPv6 address, or none: the record must go.
                                "AAAA" => ctx.target.ipv6.map_or_else(
                                    || "(none: delete this AAAA record)".to_owned(),
                                    |v6| v6.to_string(),
                                ),
                                _ => return None,
                            };
                            Some(RecordChange {
                                name: r.name.clone(),
                                rtype: r.rtype.clone(),
                                old_value: r.value.clone(),
                                new_value,
                            })
                        })
                        .collect();
                    let event =
                        DomainEvent::CustomerMustRepoint { new_value: target_ip.to_string(), rewritten };
                    cx.apply_domain(&mut tx, ctx, row, &domain_state, event).await?;
                    tx.schedule_job(&cx.job(
                        ctx,
                        JobKind::PollExternal,
                        &row.domain,
                        serde_json::json!({ "user": user }),
                        now,
                        format!("poll_external:{}:{}", ctx.id, row.domain),
                    ))
                    .await?;
                }
                _ => {}
            }
        }
    }
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// A retried account whose records got their original TTLs back after its rollback has its
/// domains observed-but-not-lowered: they are lowered again, zone by zone, before the account
/// is verified, so its repoint waits out the old TTL from now. True when it lowered any.
async fn relower_restored(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    user: &str,
    domains: &[DomainRow],
) -> Result<bool, StepError> {
    let mut by_zone: BTreeMap<String, Vec<DomainRow>> = BTreeMap::new();
    for row in domains {
        if let DomainState::TtlObserved { .. } = domain_state(row)? {
            by_zone.entry(row.zone.clone()).or_default().push(row.clone());
        }
    }
    if by_zone.is_empty() {
        return Ok(false);
    }
    let dedicated: HashMap<String, DedicatedIp> =
        cx.dedicated_of(ctx, user).await?.map(|d| (user.to_owned(), d)).into_iter().collect();
    for (zone, rows) in by_zone {
        let tracked =
            cx.store.domains_in_zone(ctx.id.as_str(), &zone).await?.into_iter().map(|r| r.domain).collect();
        crate::engine::steps::lower::lower_zone(cx, ctx, lease, zone, rows, tracked, &dedicated).await?;
    }
    info!(account = user, "TTLs lowered again after the rollback's restore");
    Ok(true)
}
