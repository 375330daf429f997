//! Pre-flight: before the first account of a migration moves, check that the move can work and
//! report what stands in the way. `siirto start` runs it and refuses to start on a hard
//! failure; `siirto preflight` shows the report without starting. Every run is recorded on the
//! migration's timeline (event `preflight_passed` or `preflight_failed`, the report as detail).
//!
//! The checks:
//!
//! - **The target reaches the source** the way its transfer sessions will: WHM API 1
//!   `remote_basic_credential_check` on the target with the credentials the engine's sessions
//!   use, then a session created and checked with `analyze_transfer_session_remote`
//!   (<https://api.docs.cpanel.net/openapi/whm/operation/remote_basic_credential_check>,
//!   <https://api.docs.cpanel.net/openapi/whm/operation/analyze_transfer_session_remote>); the
//!   probe session is aborted afterwards, it never holds an item.
//! - **SSH to both hosts** with their pinned host keys (`hosts.*.ssh`, [`crate::ssh`]). A host
//!   key that does not match the pin, or a failed login, is a hard failure. A host without an
//!   `ssh` table is a hard failure only when the playbook needs SSH on that host
//!   ([`playbook_needs_ssh`]), a warning otherwise. With the final mail sync on, the sync itself
//!   is tried dry: rsync on the target lists one account's mail on the source over the sync's
//!   own hop (pull key, pinned known_hosts); a failure, such as a key restricted to a read-only
//!   `rrsync` rooted elsewhere, is hard, with the command's error.
//! - **The DNS provider** lists its zones and reads one of the migration's the way the engine
//!   will (API, AXFR or TSIG-signed AXFR); a failure is hard, no zone of ours a warning. A
//!   PowerDNS refusing the key is said as such, naming the key file, not as a server that does
//!   not answer. Each of the migration's zones whose server does not raise the SOA serial on an
//!   API change (no `SOA-EDIT-API` metadata) is a `dns serial` warning by name: siirto raises
//!   the serial in its own changes, other tools will not.
//! - **The target has room and no clashes**, through [`crate::inventory::check_target`] over the
//!   migration's accounts: user and domain clashes and too little free disk are hard failures,
//!   an older target version too; an unknown disk or version is a warning.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::anyhow;
use serde::Serialize;

use crate::config::{Config, SshConfig};
use crate::dns::DnsError;
use crate::domain::{AccountState, Timestamp, to_millis};
use crate::inventory::{Inventory, VersionVerdict};
use crate::names::{AccountName, DomainName, MigrationId};
use crate::playbook::Playbook;
use crate::ssh::SshSession;
use crate::store::{NewEvent, Store};
use crate::whm::{RemoteRootSession, WhmError};
use crate::world::{HostRuntime, World};

/// How long one SSH connection attempt may take.
const SSH_TIMEOUT: Duration = Duration::from_secs(15);

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The check passed.
    Ok,
    /// Worth knowing; the migration may start.
    Warning,
    /// The migration must not start until it is fixed.
    Hard,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check: `credentials`, `analyze_session`, `ssh old1`, `user clash`, `disk`, …
    pub check: String,
    /// How serious it is.
    pub severity: Severity,
    /// What was found, with the evidence (names, numbers, the remote's own words).
    pub detail: String,
}

/// The whole pre-flight report of one migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreflightReport {
    /// The migration.
    pub migration: String,
    /// The source host's config name.
    pub source: String,
    /// The target host's config name.
    pub target: String,
    /// When it ran (RFC 3339).
    pub at: String,
    /// Every finding, in the order checked.
    pub findings: Vec<Finding>,
}

impl PreflightReport {
    /// The hard failures.
    pub fn hard_failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Hard)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Warning)
    }

    /// True when nothing hard was found: the migration may start.
    pub fn passed(&self) -> bool {
        self.hard_failures().next().is_none()
    }

    fn push(&mut self, check: impl Into<String>, severity: Severity, detail: impl Into<String>) {
        self.findings.push(Finding { check: check.into(), severity, detail: detail.into() });
    }
}

/// Whether the playbook needs SSH on the hosts (`source`, `target`): the final mail delta sync
/// (`mail.final_sync`, [`crate::mailsync`]) runs rsync over SSH on the target and reads the
/// source's mail log over SSH, so it needs both.
pub fn playbook_needs_ssh(playbook: &Playbook) -> (bool, bool) {
    (playbook.mail.final_sync, playbook.mail.final_sync)
}

/// Runs [`crate::mailsync::sync_dry_run_argv`] for `user` on the target: a dry run of the final
/// sync itself (rsync over its ssh hop, listing the account's mail on the source). Ok when the
/// target can read it the way the sync will, else the command's error.
async fn sync_dry_run(source: &SshConfig, target: &SshConfig, user: &AccountName) -> Result<(), String> {
    let argv = crate::mailsync::sync_dry_run_argv(source, target, user).map_err(|err| err.to_string())?;
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let session = SshSession::connect(&target.login(), SSH_TIMEOUT).await.map_err(|err| err.to_string())?;
    let output = tokio::time::timeout(SSH_TIMEOUT, session.exec(&argv)).await;
    let _ = session.close().await;
    match output {
        Err(_) => Err(format!("the sync's dry run did not finish within {SSH_TIMEOUT:?}")),
        Ok(Err(err)) => Err(err.to_string()),
        Ok(Ok(output)) if output.success() => Ok(()),
        Ok(Ok(output)) => Err(format!(
            "the sync's dry run ({}) failed with exit {}: {}",
            argv.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    }
}

/// The transfer session request the engine sends the target for this migration; pre-flight
/// checks the same credentials.
pub fn remote_root_session(source: &HostRuntime, playbook: &Playbook) -> RemoteRootSession {
    RemoteRootSession {
        host: source.ip.to_string(),
        user: "root".to_owned(),
        sshkey_name: Some("siirto".to_owned()),
        password: None,
        port: 22,
        transfer_threads: playbook.transfer.transfer_threads,
        restore_threads: playbook.transfer.restore_threads,
    }
}

/// Runs every check for migration `id` and returns the report (it records nothing; see
/// [`record`]). Errors only when the migration or its hosts cannot be found; a host that does
/// not answer is a finding.
pub async fn preflight(
    store: &Store,
    config: &Config,
    adapters: &World,
    id: &MigrationId,
    now: Timestamp,
) -> anyhow::Result<PreflightReport> {
    let row = store.require_migration(id.as_str()).await?;
    let playbook =
        Playbook::parse(&row.playbook, &format!("playbook of migration {id}")).map_err(|e| anyhow!("{e}"))?;
    let host = |name: &str| {
        adapters.hosts.get(name).ok_or_else(|| anyhow!("migration {id}: host {name:?} is not in the config"))
    };
    let (source, target) = (host(&row.source_host)?, host(&row.target_host)?);
    let mut report = PreflightReport {
        migration: id.to_string(),
        source: row.source_host.clone(),
        target: row.target_host.clone(),
        at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        findings: Vec::new(),
    };

    // 1. The target reaches the source, as its sessions will.
    let request = remote_root_session(source, &playbook);
    match target.whm.remote_basic_credential_check(&request).await {
        Ok(check) => report.push(
            "credentials",
            Severity::Ok,
            format!(
                "{} logs in to {} ({}) as root: {}",
                target.name,
                source.name,
                request.host,
                check.response.trim()
            ),
        ),
        Err(err) => report.push(
            "credentials",
            Severity::Hard,
            format!("{} cannot log in to {} ({}) as root: {err}", target.name, source.name, request.host),
        ),
    }
    match target.whm.create_remote_root_transfer_session(&request).await {
        Ok(session) => {
            match target.whm.analyze_transfer_session_remote(&session).await {
                Ok(()) => report.push(
                    "analyze_session",
                    Severity::Ok,
                    format!("a transfer session from {} checks out ({session})", source.name),
                ),
                Err(err) => report.push(
                    "analyze_session",
                    Severity::Hard,
                    format!("the transfer session {session} does not check out: {err}"),
                ),
            }
            // The probe session carries no item; abort it so it does not linger as pending.
            if let Err(err) = target.whm.abort_transfer_session(&session).await {
                tracing::debug!(error = %err, %session, "could not abort the pre-flight probe session");
            }
        }
        Err(err) => report.push(
            "analyze_session",
            Severity::Hard,
            format!("{} cannot create a transfer session from {}: {err}", target.name, source.name),
        ),
    }

    // 2. SSH to both hosts, host keys pinned.
    let (source_needs, target_needs) = playbook_needs_ssh(&playbook);
    for (name, needed) in [(&row.source_host, source_needs), (&row.target_host, target_needs)] {
        let check = format!("ssh {name}");
        let ssh = config.hosts.get(name).and_then(|h| h.ssh.as_ref());
        let Some(ssh) = ssh else {
            let (severity, why) = if needed {
                (Severity::Hard, "the playbook needs SSH on it")
            } else {
                (Severity::Warning, "nothing in this playbook needs it yet")
            };
            report.push(
                check,
                severity,
                format!("host {name} has no [hosts.{name}.ssh] in the config; {why}"),
            );
            continue;
        };
        match SshSession::connect(&ssh.login(), SSH_TIMEOUT).await {
            Ok(session) => {
                let _ = session.close().await;
                report.push(
                    check,
                    Severity::Ok,
                    format!("{}@{}: host key matches the pin, key login works", ssh.user, ssh.address),
                );
            }
            Err(err) => report.push(check, Severity::Hard, format!("{}@{}: {err}", ssh.user, ssh.address)),
        }
    }

    // 2b. The final sync itself, dry: rsync on the target lists one account's mail on the
    //     source over the sync's own hop (the pull key and known_hosts file the config names),
    //     so a key that cannot read (restricted to a forced command, a read-only rrsync rooted
    //     elsewhere) is found now rather than hours after the cutover.
    if playbook.mail.final_sync {
        let ssh_of = |name: &str| config.hosts.get(name).and_then(|h| h.ssh.as_ref());
        let first = store.accounts_in_states(id.as_str(), &AccountState::WANTING_TRANSFER, 1).await?;
        if let (Some(source_ssh), Some(target_ssh), Some(account)) =
            (ssh_of(&row.source_host), ssh_of(&row.target_host), first.first())
        {
            let user = AccountName::parse(&account.user).map_err(|e| anyhow!("stored user: {e}"))?;
            let check = format!("mail sync {} -> {}", row.target_host, row.source_host);
            let (severity, message) = match sync_dry_run(source_ssh, target_ssh, &user).await {
                Ok(()) => (
                    Severity::Ok,
                    format!(
                        "{} lists {user}'s mail on {} with rsync over its pull key and pinned host key (a dry run of the final sync)",
                        row.target_host, row.source_host
                    ),
                ),
                Err(why) => (Severity::Hard, format!("account {user}: {why}")),
            };
            report.push(check, severity, message);
        }
    }

    // 2c. The DNS provider: it answers, and it reads one of the migration's zones the way the
    //     engine will (through the API, by AXFR, or by a TSIG-signed AXFR).
    dns_check(&mut report, store, adapters, id).await?;

    // 3. Room and clashes on the target, for the migration's accounts only.
    let users: Vec<String> = store.accounts(id.as_str()).await?.into_iter().map(|a| a.user).collect();
    match crate::inventory::inventory(&source.whm).await {
        Err(err) => report.push("inventory", Severity::Hard, whm_failure("source", &source.name, &err)),
        Ok(inventory) => {
            let moving = Inventory {
                accounts: inventory
                    .accounts
                    .into_iter()
                    .filter(|a| users.iter().any(|u| u == a.user.as_str()))
                    .collect(),
                ..inventory
            };
            let missing: Vec<&String> = users
                .iter()
                .filter(|u| !moving.accounts.iter().any(|a| a.user.as_str() == u.as_str()))
                .collect();
            if !missing.is_empty() {
                report.push(
                    "source accounts",
                    Severity::Warning,
                    format!("planned but no longer on {}: {}", source.name, join(&missing)),
                );
            }
            target_checks(&mut report, &moving, target).await;
        }
    }
    Ok(report)
}

/// The `dns` finding: the provider lists its zones, and the first of the migration's zones it
/// holds reads back (a wrong API key, a closed AXFR or a TSIG key the server does not know
/// shows up here instead of at the first lowering).
async fn dns_check(
    report: &mut PreflightReport,
    store: &Store,
    adapters: &World,
    id: &MigrationId,
) -> anyhow::Result<()> {
    let zones = match adapters.dns.zones().await {
        Ok(zones) => zones,
        Err(err) => {
            let what = match err {
                DnsError::Unauthorized { .. } => "the DNS provider answers but refuses siirto",
                _ => "the DNS provider does not answer",
            };
            report.push("dns", Severity::Hard, format!("{what}: {err}"));
            return Ok(());
        }
    };
    let domains = store.domains(id.as_str()).await?;
    let ours = domains.iter().find_map(|d| zones.iter().find(|z| z.as_str() == d.zone));
    match ours {
        None => report.push(
            "dns",
            Severity::Warning,
            format!(
                "the DNS provider answers ({} zones), but holds none of this migration's {} domains' zones: nothing will be repointed by siirto",
                zones.len(),
                domains.len()
            ),
        ),
        Some(zone) => match adapters.dns.zone(zone).await {
            Ok(read) => report.push(
                "dns",
                Severity::Ok,
                format!("the DNS provider answers ({} zones) and reads zone {zone} ({} rrsets)", zones.len(), read.rrsets.len()),
            ),
            Err(err) => report.push("dns", Severity::Hard, format!("the DNS provider cannot read zone {zone}: {err}")),
        },
    }
    serial_check(report, adapters, &domains, &zones).await;
    Ok(())
}

/// A `dns serial` warning for each of the migration's zones whose server does not raise the
/// SOA serial on an API change (a PowerDNS zone without SOA-EDIT-API metadata): siirto raises
/// it in its own changes, but secondaries never see a change any other tool makes through the
/// API, and the operator should know before the cutover.
async fn serial_check(
    report: &mut PreflightReport,
    adapters: &World,
    domains: &[crate::store::DomainRow],
    held: &[DomainName],
) {
    let ours: BTreeSet<&DomainName> =
        held.iter().filter(|zone| domains.iter().any(|d| d.zone == zone.as_str())).collect();
    for zone in ours {
        match adapters.dns.server_bumps_serial(zone).await {
            Ok(true) => {}
            Ok(false) => report.push(
                "dns serial",
                Severity::Warning,
                format!(
                    "zone {zone} has no SOA-EDIT-API metadata: PowerDNS does not raise its SOA serial on API changes, so secondaries miss them; siirto raises it in its own changes, other API clients will not (fix: pdnsutil set-meta {zone} SOA-EDIT-API DEFAULT)"
                ),
            ),
            Err(err) => report.push(
                "dns serial",
                Severity::Warning,
                format!("cannot tell whether the server raises the SOA serial of zone {zone}: {err}"),
            ),
        }
    }
}

/// A WHM host that failed a call, in words: one that refuses our token answers, and saying
/// "does not answer" would send the operator to the network instead of the token file.
fn whm_failure(role: &str, host: &str, err: &WhmError) -> String {
    match err {
        WhmError::Auth { .. } => format!("the {role} {host} answers but refuses siirto: {err}"),
        _ => format!("the {role} {host} does not answer: {err}"),
    }
}

async fn target_checks(report: &mut PreflightReport, moving: &Inventory, target: &HostRuntime) {
    let checks = match crate::inventory::check_target(moving, &target.whm).await {
        Ok(checks) => checks,
        Err(err) => {
            report.push("target", Severity::Hard, whm_failure("target", &target.name, &err));
            return;
        }
    };
    for clash in &checks.user_clashes {
        report.push(
            "user clash",
            Severity::Hard,
            format!(
                "account {} already exists on {} (main domain {})",
                clash.user, target.name, clash.target_domain
            ),
        );
    }
    for clash in &checks.domain_clashes {
        report.push(
            "domain clash",
            Severity::Hard,
            format!(
                "domain {} (account {}) already exists on {} under account {}",
                clash.domain, clash.source_user, target.name, clash.target_user
            ),
        );
    }
    if checks.user_clashes.is_empty() && checks.domain_clashes.is_empty() {
        report.push(
            "clashes",
            Severity::Ok,
            format!("no user or domain of the migration exists on {}", target.name),
        );
    }
    let disk = &checks.disk;
    match (disk.enough, disk.available_mb) {
        (Some(true), Some(free)) => report.push(
            "disk",
            Severity::Ok,
            format!("{free} MB free on {} {}, {} MB needed", target.name, disk.mount.as_deref().unwrap_or("?"), disk.needed_mb),
        ),
        (Some(false), Some(free)) => report.push(
            "disk",
            Severity::Hard,
            format!(
                "only {free} MB free on {} {}; the accounts need {} MB ({} MB of accounts, plus twice the largest and 1 GB)",
                target.name,
                disk.mount.as_deref().unwrap_or("?"),
                disk.needed_mb,
                disk.accounts_total_mb
            ),
        ),
        _ => report.push(
            "disk",
            Severity::Warning,
            format!("{} reports no /home or / partition; free disk unknown ({} MB needed)", target.name, disk.needed_mb),
        ),
    }
    let version = &checks.version;
    let (severity, text) = match version.verdict {
        VersionVerdict::SameMajor | VersionVerdict::TargetNewer => (Severity::Ok, "fine"),
        VersionVerdict::TargetOlder => {
            (Severity::Hard, "the target is older than the source; upgrade it first")
        }
        VersionVerdict::Unknown => (Severity::Warning, "a version could not be read"),
    };
    report.push("version", severity, format!("source {}, target {}: {text}", version.source, version.target));
}

fn join(items: &[&String]) -> String {
    items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// Records the report on the migration's timeline: `preflight_passed` or `preflight_failed`,
/// with the report as the detail.
pub async fn record(
    store: &Store,
    report: &PreflightReport,
    now: Timestamp,
    actor: &str,
) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    tx.append_event(&NewEvent {
        migration_id: report.migration.clone(),
        account: None,
        domain: None,
        kind: if report.passed() { "preflight_passed" } else { "preflight_failed" }.to_owned(),
        detail: serde_json::to_string(report)?,
        actor: actor.to_owned(),
        at: to_millis(now),
    })
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_token_is_not_called_an_unanswered_host() {
        let refused = WhmError::Auth {
            function: "listaccts".into(),
            url: "https://old1.example.fi:2087/json-api/listaccts".into(),
            status: 403,
            token: "the token in token_file (/etc/siirto/old1.token)".into(),
        };
        assert_eq!(
            whm_failure("source", "old1", &refused),
            "the source old1 answers but refuses siirto: WHM listaccts https://old1.example.fi:2087/json-api/listaccts: the host answered HTTP 403: it rejected the token in token_file (/etc/siirto/old1.token); check the token and its ACL"
        );
        let down = WhmError::Http {
            function: "listaccts".into(),
            url: "https://old1.example.fi:2087/json-api/listaccts".into(),
            status: 503,
        };
        assert!(whm_failure("target", "new1", &down).starts_with("the target new1 does not answer: "));
    }
}
