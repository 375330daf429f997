//! Everything the CLI prints to stdout goes through here: text for people, JSON for scripts.
//! (Logs go to stderr through tracing.)

use std::io::Write;

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
