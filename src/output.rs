//! Everything the CLI prints to stdout goes through here: text for people, JSON for scripts.
//! (Logs go to stderr through tracing.)

use std::io::Write;

use crate::inventory::Inventory;
use crate::plan::PlanDocument;
use crate::status::{LogEntry, MigrationStatus};

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

/// Prints a value as one line of compact JSON (a stream of objects, one per line).
pub fn json_line<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    line(&serde_json::to_string(value)?);
    Ok(())
}

/// Prints one event of a migration's log: as a line of its timeline (time in UTC, what it
/// concerns, what happened), or as one JSON object on its own line.
/// `siirto notices list`: one line per notice (and its error or skip reason under it), or with
/// `--json` one array.
pub fn notices(entries: &[crate::status::NoticeEntry], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&entries);
    }
    if entries.is_empty() {
        line("no notices");
        return Ok(());
    }
    for n in entries {
        let when = n.sent_at.as_deref().unwrap_or(&n.created_at);
        let about = n.account.as_deref().map(|a| format!(" ({a})")).unwrap_or_default();
        line(&format!(
            "#{} {} {}{} {} to {}: {}",
            n.id,
            n.kind,
            n.state,
            about,
            when,
            n.recipients.join(", "),
            n.subject
        ));
        if let Some(reason) =
            n.skip_reason.as_deref().or(n.bounce_reason.as_deref()).or(n.last_error.as_deref())
        {
            line(&format!("    {reason}"));
        }
    }
    Ok(())
}

pub fn log_entry(entry: &LogEntry, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json_line(entry);
    }
    let time = chrono::DateTime::parse_from_rfc3339(&entry.at)
        .map_or_else(|_| entry.at.clone(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
    let subject = match (&entry.account, &entry.domain) {
        (Some(account), Some(domain)) => format!("{domain} ({account})"),
        (Some(account), None) => account.clone(),
        (None, Some(domain)) => domain.clone(),
        (None, None) => "migration".to_owned(),
    };
    line(&format!("{time}  {subject:<30}  {}", entry.text));
    Ok(())
}

/// Prints a plan for review: counts, every flagged item with the reason and what will happen,
/// what changed since the last plan of the source, and the schedule.
pub fn plan_report(plan: &PlanDocument, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(plan);
    }
    let c = &plan.counts;
    line(&format!(
        "plan {}: {} → {} under playbook {:?}, cutover from {}",
        plan.migration, plan.source, plan.target, plan.playbook, plan.cutover_at
    ));
    line(&format!("  {} accounts, {} domains", c.accounts, c.domains));
    line(&format!("  {} domains moved and repointed on our nameservers", c.move_and_repoint));
    line(&format!(
        "  {} domains moved; the customer must repoint (DNS elsewhere)",
        c.move_customer_must_repoint
    ));
    line(&format!(
        "  {} domains moved; not repointed (site elsewhere, not delegated, not in our DNS)",
        c.move_not_repointed
    ));
    line(&format!(
        "  {} accounts on a dedicated IP wait for siirto assign-ip (moved last)",
        c.held_for_operator
    ));
    line(&format!("  {} contract services not on this server (not moved)", c.not_moved));
    line(&format!(
        "  source runs cPanel {}; {} resellers, {} packages",
        plan.host.version,
        plan.resellers.len(),
        plan.packages.len()
    ));
    if let Some(checks) = &plan.target_checks {
        let clashes = if checks.user_clashes.is_empty() && checks.domain_clashes.is_empty() {
            "no user or domain clashes".to_owned()
        } else {
            format!("{} user and {} domain clashes", checks.user_clashes.len(), checks.domain_clashes.len())
        };
        let disk = match (checks.disk.available_mb, checks.disk.enough) {
            (Some(free), Some(true)) => format!("{free} MB free, {} MB needed", checks.disk.needed_mb),
            (Some(free), _) => format!("only {free} MB free, {} MB needed", checks.disk.needed_mb),
            (None, _) => "free disk unknown".to_owned(),
        };
        line(&format!(
            "  target {}: {clashes}; {disk}; cPanel {} ({:?})",
            plan.target, checks.version.target, checks.version.verdict
        ));
    }
    if let Some(reconciliation) = &plan.reconciliation {
        let counts = &reconciliation.account_counts;
        line(&format!(
            "  contracts ({}): {} matched, {} without contract, {} named elsewhere, {} without usable contact, {} missing here",
            reconciliation.origin,
            counts.matched,
            counts.on_server_no_contract,
            counts.contract_names_another_server,
            counts.contact_missing_or_invalid,
            counts.contract_names_this_server_but_missing,
        ));
    }
    if !plan.flagged.is_empty() {
        line(&format!("{} flagged:", plan.flagged.len()));
        for item in &plan.flagged {
            line(&format!("  {}: {} → {}", item.subject, item.reason, item.action));
        }
    }
    if let Some(changes) = &plan.changes {
        line(&format!(
            "since plan {}: +{} / -{} accounts, +{} / -{} domains, {} accounts changed",
            changes.since,
            changes.accounts_added.len(),
            changes.accounts_removed.len(),
            changes.domains_added.len(),
            changes.domains_removed.len(),
            changes.accounts_changed.len()
        ));
        for user in &changes.accounts_added {
            line(&format!("  + {user}"));
        }
        for user in &changes.accounts_removed {
            line(&format!("  - {user}"));
        }
        for change in &changes.accounts_changed {
            line(&format!("  ~ {}: {}", change.user, change.what.join("; ")));
        }
    }
    line("schedule:");
    schedule(&plan.schedule, "  ");
    line(&format!(
        "next: review, then siirto approve {} --by NAME; siirto start {}",
        plan.migration, plan.migration
    ));
    Ok(())
}

/// One line of counts, e.g. `done 40 · held 1 · queued 9`.
pub fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    map.iter().map(|(state, n)| format!("{state} {n}")).collect::<Vec<_>>().join(" · ")
}

/// Prints where one migration stands (or, with `as_json`, one JSON object).
pub fn status(status: &MigrationStatus, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(status);
    }
    statuses(std::slice::from_ref(status), false)
}

/// Prints where several migrations stand (or, with `as_json`, one JSON array of them).
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
        line("  schedule:");
        schedule(&status.schedule, "    ");
        line(&format!("  accounts: {}", counts(&status.accounts_by_state)));
        line(&format!("  domains:  {}", counts(&status.domains_by_state)));
        let skipped = match status.notices_skipped_late {
            0 => String::new(),
            n => format!(", {n} skipped (too late to be of use)"),
        };
        line(&format!("  notices:  {} queued, {} sent{skipped}", status.notices_queued, status.notices_sent));
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
            if let Some(dedicated) = &account.dedicated_ip
                && let Some(target_ip) = dedicated.target_ip
            {
                line(&format!("  {:<16} dedicated IP: {} → {target_ip}", "", dedicated.source_ip));
            }
            if let Some(mail) = &account.mail {
                line(&format!("  {:<16} mail: {}", "", mail_line(mail)));
            }
            for d in account.domains.iter().filter(|d| d.state == "rolled_back") {
                let ttl = match (&d.short_ttl_until, &d.ttl_restored_at) {
                    (Some(until), _) => format!("short TTL until {until}, then the original TTL"),
                    (None, Some(at)) => {
                        format!("original TTL back since {at}; a retry lowers it again first")
                    }
                    (None, None) => "short TTL".to_owned(),
                };
                line(&format!("  {:<16} {} rolled back: {ttl}", "", d.domain));
            }
            for d in account.domains.iter().filter(|d| d.state == "awaiting_customer") {
                let since = d.since.as_deref().unwrap_or("?");
                let reminded = d.reminded.unwrap_or(0);
                line(&format!(
                    "  {:<16} {} awaits the customer since {since} ({reminded} reminder(s)); to change: {}",
                    "",
                    d.domain,
                    d.records_to_change
                        .iter()
                        .map(|r| format!("{} {} {} → {}", r.name, r.rtype, r.old_value, r.new_value))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                if !d.silent_resolvers.is_empty() {
                    line(&format!(
                        "  {:<16} {}: no answer at all from {}; propagation waits for them",
                        "",
                        d.domain,
                        d.silent_resolvers.join(", ")
                    ));
                }
            }
        }
        let not_repointed: Vec<String> = status
            .accounts
            .iter()
            .flat_map(|a| a.domains.iter().map(move |d| (a, d)))
            .filter_map(|(a, d)| {
                let n = d.not_repointed.as_ref()?;
                let action = n.customer_action.as_deref().unwrap_or("nothing for the customer to do");
                Some(format!("  {:<16} {} ({}): {}; {action}", "", d.domain, a.user, n.reason))
            })
            .collect();
        if !not_repointed.is_empty() {
            line(&format!(
                "  not repointed ({}): moved with the account; siirto changes no DNS for them",
                not_repointed.len()
            ));
            for l in &not_repointed {
                line(l);
            }
        }
        if !status.operator_tasks.is_empty() {
            line(&format!(
                "  operator tasks ({}, listed until acknowledged): changes siirto cannot make",
                status.operator_tasks.len()
            ));
            for task in &status.operator_tasks {
                line(&format!(
                    "    #{} {} ({}): {} — siirto ack {} --by NAME",
                    task.id, task.domain, task.account, task.task, task.id
                ));
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

/// The dated steps of a migration, one per line.
fn schedule(items: &[crate::plan::ScheduleItem], indent: &str) {
    for item in items {
        line(&format!("{indent}{}  {}{}", item.at, item.what, if item.manual { " (manual)" } else { "" }));
    }
}

/// One account's mail after its repoint, in a line: the switch, the next sync, each sync's
/// copies, the last log check.
fn mail_line(mail: &crate::status::MailStatus) -> String {
    let mut parts = Vec::new();
    if let Some(at) = &mail.switched_at {
        parts.push(format!("routed to the new server at {at}"));
    }
    if let Some(due) = &mail.sync_due {
        parts.push(format!("final sync due {due}"));
    }
    for (n, sync) in mail.syncs.iter().enumerate() {
        let copied: u32 = sync.copied.values().sum();
        parts.push(format!(
            "sync {} at {}: {copied} message(s) copied ({}), {} already there",
            n + 1,
            sync.started_at,
            sync.copied.iter().map(|(mailbox, n)| format!("{mailbox}: {n}")).collect::<Vec<_>>().join(", "),
            sync.already_there
        ));
    }
    if let Some(check) = &mail.last_check {
        parts.push(format!(
            "log checked at {}: {} delivered on the old server since the switch, {} since the last sync",
            check.at, check.evidence.delivered_since_switch, check.evidence.delivered_since_last_sync
        ));
    }
    parts.join("; ")
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
        "dedicated-IP accounts (moved last, each waits for siirto assign-ip with a target address): {}",
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

/// Prints a pre-flight report: one line per finding (hard failures, warnings, passed checks),
/// then the verdict; or the report as JSON.
pub fn preflight(report: &crate::preflight::PreflightReport, as_json: bool) -> anyhow::Result<()> {
    use crate::preflight::Severity;
    if as_json {
        return json(&serde_json::json!({ "passed": report.passed(), "report": report }));
    }
    line(&format!(
        "pre-flight of {}: {} → {} at {}",
        report.migration, report.source, report.target, report.at
    ));
    for severity in [Severity::Hard, Severity::Warning, Severity::Ok] {
        for finding in report.findings.iter().filter(|f| f.severity == severity) {
            let mark = match severity {
                Severity::Hard => "FAIL",
                Severity::Warning => "warn",
                Severity::Ok => "  ok",
            };
            line(&format!("  {mark}  {}: {}", finding.check, finding.detail));
        }
    }
    let hard = report.hard_failures().count();
    let warnings = report.warnings().count();
    if hard == 0 {
        line(&format!("passed ({warnings} warning(s))"));
    } else {
        line(&format!("{hard} hard failure(s), {warnings} warning(s): the migration must not start"));
    }
    Ok(())
}

/// Prints the migration's new state after pause/resume/abort and what each of its transfer
/// sessions on the target said.
pub fn session_control(migration: &str, state: &str, sessions: &[crate::transfer_control::SessionOutcome]) {
    line(&format!("migration {migration} is {state}"));
    if sessions.is_empty() {
        line("  no transfer session is active on the target");
    }
    for s in sessions {
        let mark = if s.ok { "  " } else { "! " };
        line(&format!("  {mark}transfer session {}: {}", s.session, s.outcome));
    }
}

/// `siirto audit verify`: the chain's head, or the first row that does not match.
pub fn chain_report(report: &crate::store::ChainReport, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let broken = report
            .broken
            .as_ref()
            .map(|b| serde_json::json!({ "event": b.event, "seq": b.seq, "reason": b.reason }));
        return json(&serde_json::json!({
            "migration": report.migration,
            "rows": report.rows,
            "head": report.head,
            "intact": broken.is_none(),
            "broken": broken,
        }));
    }
    match (&report.broken, &report.head) {
        (Some(b), _) => {
            let row = match (b.event, b.seq) {
                (Some(event), Some(seq)) => format!("event {event} (place {seq} of the chain)"),
                (Some(event), None) => format!("event {event}"),
                (None, _) => "the end of the log".to_owned(),
            };
            line(&format!(
                "migration {}: the audit chain does not match at {row}: {} ({} rows before it match)",
                report.migration, b.reason, report.rows
            ));
        }
        (None, Some(head)) => line(&format!(
            "migration {}: the audit chain of {} events is intact; head {head}",
            report.migration, report.rows
        )),
        (None, None) => line(&format!("migration {}: no events yet", report.migration)),
    }
    Ok(())
}

/// `siirto tasks`: the open operator tasks, each with its migration and number.
pub fn tasks(tasks: &[(String, crate::status::OpenTask)], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let list: Vec<serde_json::Value> = tasks
            .iter()
            .map(|(migration, task)| {
                let mut value = serde_json::to_value(task).unwrap_or_default();
                value["migration"] = migration.clone().into();
                value
            })
            .collect();
        return json(&list);
    }
    if tasks.is_empty() {
        line("no open operator tasks");
        return Ok(());
    }
    for (migration, task) in tasks {
        let whom = [task.account.as_str(), task.domain.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let whom = if whom.is_empty() { String::new() } else { format!(" [{whom}]") };
        let stage = task.stage.as_ref().map(|s| format!(" (stage {s:?})")).unwrap_or_default();
        let confirmations = if task.needs > 1 {
            let by = if task.confirmed_by.is_empty() {
                String::new()
            } else {
                format!(", confirmed by {}", task.confirmed_by.join(", "))
            };
            format!(" — needs {} different people{by}", task.needs)
        } else {
            String::new()
        };
        line(&format!(
            "#{} {migration}{whom}: {}{stage}{confirmations}; since {} — siirto ack {} --by NAME",
            task.id, task.task, task.since, task.id
        ));
    }
    Ok(())
}

/// `siirto decommission MIGRATION --plan`: the stages, dates and states, what each did, holds
/// (with the evidence) and would touch now.
pub fn decommission_plan(plan: &crate::ops::DecommissionPlan, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(plan);
    }
    if plan.stages.is_empty() {
        line(&format!(
            "migration {}: no decommission stages yet (they are recorded once it is cut over)",
            plan.migration
        ));
        return Ok(());
    }
    line(&format!("migration {}: decommission stages", plan.migration));
    for stage in &plan.stages {
        let manual = if stage.manual { ", manual" } else { "" };
        line(&format!(
            "{}. {} ({}{manual}) due {}: {}",
            stage.stage + 1,
            stage.name,
            stage.action,
            stage.due,
            stage.state
        ));
        for (key, what) in [("postponed", "postponed"), ("skipped", "skipped"), ("undone", "undone")] {
            if let Some(by) = stage.detail.get(key) {
                line(&format!(
                    "   {what} by {} at {}: {}",
                    by["by"].as_str().unwrap_or("?"),
                    by["at"].as_str().unwrap_or("?"),
                    by["reason"].as_str().unwrap_or("")
                ));
            }
        }
        if !stage.done.is_empty() {
            line(&format!("   done: {} account(s): {}", stage.done.len(), stage.done.join(", ")));
        }
        if !stage.would_touch.is_empty() {
            line(&format!(
                "   would act now on {} account(s): {}",
                stage.would_touch.len(),
                stage.would_touch.join(", ")
            ));
        }
        for held in &stage.held {
            let when = if held.checked_now { "now" } else { "at its last check" };
            line(&format!("   held {}: public DNS {when} still leads to the old server:", held.account));
            for e in &held.evidence {
                line(&format!("     {} {} at {}: {}", e.name, e.rtype, e.resolver, e.answer));
            }
        }
    }
    Ok(())
}
