//! Everything the CLI prints to stdout goes through here: text for people, JSON for scripts.
//! (Logs go to stderr through tracing.)

use std::io::Write;

use crate::inventory::Inventory;
use crate::plan::PlanReport;
use crate::status::MigrationStatus;

/// Prints one line.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Prints text as it is.
pub fn raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
}

/// Prints a value as pretty JSON.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    line(&serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints what planning recorded.
pub fn plan_report(report: &PlanReport, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(report);
    }
    line(&format!(
        "planned migration {}: {} accounts, {} domains in {} zones of our DNS",
        report.migration, report.accounts, report.domains, report.zones
    ));
    if !report.not_in_our_dns.is_empty() {
        line(&format!(
            "{} domains are not in our DNS and will not be repointed by siirto:",
            report.not_in_our_dns.len()
        ));
        for domain in &report.not_in_our_dns {
            line(&format!("  {domain}"));
        }
    }
    if !report.rejected.is_empty() {
        line(&format!("{} items from the source host were refused:", report.rejected.len()));
        for item in &report.rejected {
            line(&format!("  {item}"));
        }
    }
    line("schedule:");
    for item in &report.schedule {
        line(&format!("  {}  {}{}", item.at, item.what, if item.manual { " (manual)" } else { "" }));
    }
    line(&format!(
        "next: review, then siirto approve {} --by NAME; siirto start {}",
        report.migration, report.migration
    ));
    Ok(())
}

/// One line of counts, e.g. `done 40 · held 1 · queued 9`.
pub fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    map.iter().map(|(state, n)| format!("{state} {n}")).collect::<Vec<_>>().join(" · ")
}

/// Prints migration statuses.
pub fn statuses(statuses: &[MigrationStatus], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&statuses);
    }
    if statuses.is_empty() {
        line("no migrations");
    }
    for status in statuses {
        line(&format!(
            "{}  {} → {}  {}  (cutover from {})",
            status.id, status.source, status.target, status.state, status.cutover_at
        ));
        line(&format!("  accounts: {}", counts(&status.accounts_by_state)));
        line(&format!("  domains:  {}", counts(&status.domains_by_state)));
        line(&format!("  notices:  {} queued, {} sent", status.notices_queued, status.notices_sent));
        for account in &status.accounts {
            let domains = account
                .domains
                .iter()
                .map(|d| format!("{} {}", d.domain, d.state))
                .collect::<Vec<_>>()
                .join(", ");
            line(&format!("  {:<16} {:<10} {}", account.user, account.state, domains));
            if let Some(reason) = &account.reason {
                line(&format!("  {:<16} reason: {reason}", ""));
            }
        }
        for job in &status.failing_jobs {
            line(&format!(
                "  retrying {} {} (attempt {}): {}",
                job.kind, job.subject, job.attempts, job.last_error
            ));
        }
    }
    Ok(())
}

/// Prints the inventory of one host for a sysadmin: counts, every account with its domains,
/// resellers, packages, the dedicated-IP accounts and every flagged item with the reason; or,
/// with `as_json`, the whole [`Inventory`] as one JSON document.
pub fn inventory(inventory: &Inventory, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(inventory);
    }
    let c = &inventory.counts;
    let host = &inventory.host;
    let ip = |ip: Option<std::net::Ipv4Addr>| ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    line(&format!("cPanel {}  shared IP {}", host.version, ip(host.shared_ip)));
    let kinds = c.domains_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(" · ");
    line(&format!(
        "{} accounts ({} suspended, {} on a dedicated IP), {} domains ({kinds}), {} resellers, {} packages, {} flagged",
        c.accounts,
        c.suspended_accounts,
        c.dedicated_ip_accounts,
        c.domains,
        c.resellers,
        c.packages,
        c.flagged
    ));
    line("");
    line("accounts:");
    for a in &inventory.accounts {
        let mut facts = vec![
            format!("owner {}", a.owner),
            format!("package {}", a.package),
            format!("{} MB on {}", a.disk_used_mb, a.partition),
            format!("ip {}{}", ip(a.ip), if a.on_dedicated_ip { " (dedicated)" } else { "" }),
        ];
        facts.push(match &a.contact_email {
            Some(email) if a.contact_email_valid => email.clone(),
            Some(email) => format!("contact {email:?} (invalid)"),
            None => "no contact".to_owned(),
        });
        if a.suspended {
            facts.push("SUSPENDED".to_owned());
        }
        line(&format!("  {:<16} {}", a.user.as_str(), facts.join(" · ")));
        for d in &a.domains {
            line(&format!(
                "  {:<16}   {:<7} {}  {}",
                "",
                d.kind.name(),
                d.domain,
                d.docroot.as_deref().unwrap_or("(no docroot)")
            ));
        }
    }
    line("");
    line("resellers:");
    if inventory.resellers.is_empty() {
        line("  none");
    }
    for r in &inventory.resellers {
        let owned = r.accounts.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ");
        line(&format!("  {:<16} {} accounts: {owned}", r.user, r.accounts.len()));
    }
    line("");
    line("packages:");
    let limit = |mb: Option<u64>| mb.map_or_else(|| "unlimited".to_owned(), |mb| format!("{mb} MB"));
    for p in &inventory.packages {
        line(&format!(
            "  {:<24} {} accounts · quota {} · bandwidth {}{}",
            p.name,
            p.accounts,
            limit(p.quota_mb),
            limit(p.bandwidth_mb),
            if p.dedicated_ip { " · dedicated IP" } else { "" }
        ));
    }
    line("");
    let dedicated: Vec<_> = inventory.accounts.iter().filter(|a| a.on_dedicated_ip).collect();
    line(&format!(
        "dedicated-IP accounts (moved last, held for an operator to give the target address): {}",
        if dedicated.is_empty() { "none" } else { "" }
    ));
    for a in dedicated {
        line(&format!("  {:<16} {}  {}", a.user.as_str(), ip(a.ip), a.main_domain));
    }
    line("");
    line(&format!("flagged ({}):", inventory.flagged.len()));
    for f in &inventory.flagged {
        line(&format!("  {}: {}", f.item, f.reason));
    }
    Ok(())
}
