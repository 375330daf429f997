//! Retiring the old server, on the hosts: the DNS gate (does public DNS still send anyone to
//! the old server for one of an account's domains?) and the account actions of the stages
//! (suspend, unsuspend, remove), each checking the account's state on the source before it
//! acts, so a stage run again after a crash does nothing twice.
//!
//! The gate asks every configured resolver (`dns.resolvers`, standing for public DNS) for each
//! domain's A and AAAA records, its `www.` name's, and the addresses of its MX hosts. An
//! account is clear only when no resolver answers the old server's address for any of them
//! and every resolver answered: a silent resolver proves nothing, so it holds the account too
//! (DESIGN.md §3: no account on the old server is suspended or removed while one of its
//! domains still resolves there).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::dns::classify::Classifier;
use crate::names::{AccountName, DomainName};
use crate::playbook::StageAction;
use crate::store::{StageAccountRow, StageRow};
use crate::whm::{WhmClient, WhmError};

/// How many domains the gate asks about at once.
const GATE_CONCURRENCY: usize = 8;

/// One answer that keeps an account out of a stage: which resolver said what for which name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The resolver asked (`192.0.2.53:53`).
    pub resolver: String,
    /// The name asked about (`www.example.fi`).
    pub name: String,
    /// The record type (`A`, `AAAA`, `MX`).
    pub rtype: String,
    /// What it answered (`192.0.2.10`, `10 mail.example.fi. → 192.0.2.10`), or why it gave no
    /// answer.
    pub answer: String,
}

/// The old server's addresses: what the gate looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldServer {
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Addr>,
}

impl OldServer {
    fn is(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4 == self.ip,
            IpAddr::V6(v6) => Some(v6) == self.ipv6,
        }
    }
}

/// Asks public DNS about each of an account's domains: every answer that still leads to the
/// old server, and every resolver that gave no answer. Empty: the account is clear.
pub async fn dns_gate(resolvers: &Classifier, domains: &[DomainName], old: OldServer) -> Vec<Evidence> {
    let mut found = Vec::new();
    for chunk in domains.chunks(GATE_CONCURRENCY) {
        let mut asks = Vec::with_capacity(chunk.len());
        for domain in chunk {
            asks.push(domain_gate(resolvers, domain, old));
        }
        for evidence in futures::future::join_all(asks).await {
            found.extend(evidence);
        }
    }
    found
}

async fn domain_gate(resolvers: &Classifier, domain: &DomainName, old: OldServer) -> Vec<Evidence> {
    let apex = domain.as_str().to_owned();
    let www = format!("www.{apex}");
    let mut found = Vec::new();
    for name in [&apex, &www] {
        for (resolver, answer) in resolvers.a_records_everywhere(name).await {
            let addresses = answer.map(|list| list.into_iter().map(IpAddr::V4).collect::<Vec<_>>());
            found.extend(look_at(resolver, name, "A", addresses, old));
        }
        if old.ipv6.is_some() {
            for (resolver, answer) in resolvers.aaaa_records_everywhere(name).await {
                let addresses = answer.map(|list| list.into_iter().map(IpAddr::V6).collect::<Vec<_>>());
                found.extend(look_at(resolver, name, "AAAA", addresses, old));
            }
        }
    }
    for (resolver, answer) in resolvers.mx_everywhere(&apex).await {
        let hosts = match answer {
            Ok(hosts) => hosts,
            Err(no) => {
                found.push(no_answer(resolver, &apex, "MX", &no.reason));
                continue;
            }
        };
        for mx in hosts {
            // `10 mail.example.fi.`: the host's addresses, through the same resolver's view.
            let host = mx.split_whitespace().nth(1).unwrap_or_default().trim_end_matches('.').to_owned();
            if host.is_empty() {
                continue;
            }
            for (asked, addresses) in resolvers.a_records_everywhere(&host).await {
                if asked != resolver {
                    continue;
                }
                match addresses {
                    Ok(list) if list.iter().any(|ip| old.is(IpAddr::V4(*ip))) => found.push(Evidence {
                        resolver: resolver.to_string(),
                        name: apex.clone(),
                        rtype: "MX".to_owned(),
                        answer: format!("{mx} → {}", old.ip),
                    }),
                    Ok(_) => {}
                    Err(no) => found.push(no_answer(resolver, &host, "A", &no.reason)),
                }
            }
        }
    }
    found
}

fn look_at(
    resolver: std::net::SocketAddr,
    name: &str,
    rtype: &str,
    answer: Result<Vec<IpAddr>, crate::dns::classify::NoAnswer>,
    old: OldServer,
) -> Option<Evidence> {
    match answer {
        Ok(addresses) => addresses.into_iter().find(|ip| old.is(*ip)).map(|ip| Evidence {
            resolver: resolver.to_string(),
            name: name.to_owned(),
            rtype: rtype.to_owned(),
            answer: ip.to_string(),
        }),
        Err(no) => Some(no_answer(resolver, name, rtype, &no.reason)),
    }
}

fn no_answer(resolver: std::net::SocketAddr, name: &str, rtype: &str, reason: &str) -> Evidence {
    Evidence {
        resolver: resolver.to_string(),
        name: name.to_owned(),
        rtype: rtype.to_owned(),
        answer: format!("no answer ({reason}): it cannot be shown the name has left the old server"),
    }
}

/// The stage place under which an operator's exclusion of an account from the whole
/// decommission is recorded (`siirto decommission exclude`): no stage acts on it, and it does
/// not keep the server from being powered off.
pub const EXCLUDED: i64 = -1;

/// The accounts an account stage (suspend, remove) acts on now, by user name: of the accounts
/// that arrived on the target (`arrived`), those it has not done or been told to leave out,
/// and for a removal only those an earlier suspension (not skipped) suspended: an account is
/// never removed that its customer never saw closed.
pub fn candidates(
    stages: &[StageRow],
    recorded: &[StageAccountRow],
    arrived: impl IntoIterator<Item = String>,
    stage: &StageRow,
    action: StageAction,
) -> Vec<String> {
    let settled_here = |user: &str| {
        recorded
            .iter()
            .any(|r| r.stage == stage.stage && r.user == user && (r.state == "done" || r.state == "excluded"))
    };
    let suspension = stages.iter().find(|s| {
        s.stage < stage.stage && s.action == StageAction::SuspendAccounts.as_str() && s.state != "skipped"
    });
    let suspended = |user: &str| match (action, suspension) {
        // An undone suspension gives the removal nobody: its accounts serve again.
        (StageAction::RemoveAccounts, Some(s)) if s.state == "undone" => false,
        (StageAction::RemoveAccounts, Some(s)) => {
            recorded.iter().any(|r| r.stage == s.stage && r.user == user && r.state == "done")
        }
        _ => true,
    };
    arrived.into_iter().filter(|user| !settled_here(user) && suspended(user)).collect()
}

/// The dedupe key of stage `place`'s job in migration `id`.
pub fn stage_job_key(id: &str, place: i64) -> String {
    format!("decommission:{id}:{place}")
}

/// Makes the job of the stage after `place` look again now: it runs if it is due (else it
/// waits for its date), instead of at its next hourly look at the stage before it. A stage
/// that passed (ran, done, skipped, undone) calls this in the same transaction.
pub async fn wake_next_stage(
    tx: &mut crate::store::Tx<'_>,
    id: &str,
    place: i64,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    tx.requeue_job(id, &stage_job_key(id, place + 1), now).await.map(drop)
}

/// The accounts that keep the old server from being powered off, each with why: every account
/// must be done by the last account stage before `place` that was not skipped or undone (its
/// removal, else its suspension; with neither, arrived on the target), or excluded by an
/// operator (`siirto decommission exclude`).
pub fn blocking_accounts(
    stages: &[StageRow],
    recorded: &[StageAccountRow],
    accounts: &[(String, String)],
    place: i64,
) -> Vec<(String, String)> {
    let last = stages.iter().rev().find(|s| {
        s.stage < place
            && (s.action == StageAction::RemoveAccounts.as_str()
                || s.action == StageAction::SuspendAccounts.as_str())
            && s.state != "skipped"
            && s.state != "undone"
    });
    let row = |user: &str, stage: i64| recorded.iter().find(|r| r.user == user && r.stage == stage);
    let mut blocking = Vec::new();
    for (user, state) in accounts {
        if row(user, EXCLUDED).is_some_and(|r| r.state == "excluded") {
            continue;
        }
        let why = match last {
            Some(stage) => match row(user, stage.stage).map(|r| r.state.as_str()) {
                Some("done") => None,
                Some("held") => Some(format!(
                    "held by stage {:?} (siirto decommission {} --plan shows why)",
                    stage.name, stage.migration_id
                )),
                Some(other) => Some(format!("{other} at stage {:?}", stage.name)),
                None => Some(format!("not done by stage {:?}", stage.name)),
            },
            None if state == "done" => None,
            None => Some(format!("never arrived on the target (it is {state})")),
        };
        if let Some(why) = why {
            blocking.push((user.clone(), why));
        }
    }
    blocking
}

/// A manual stage's task still open: fewer people confirmed it than it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageTask {
    /// Its number (the `operator_task` event's id): `siirto ack NUMBER`.
    pub id: i64,
    /// What to do.
    pub task: String,
    /// How many different people must confirm it.
    pub needs: u64,
    /// Who has so far.
    pub confirmed_by: Vec<String>,
}

/// The open tasks of a manual stage (those its detail lists), read from the event log.
pub async fn open_stage_tasks(
    store: &crate::store::Store,
    stage: &StageRow,
) -> Result<Vec<StageTask>, crate::store::StoreError> {
    let detail: serde_json::Value = serde_json::from_str(&stage.detail).unwrap_or_default();
    let ids: Vec<i64> = detail["tasks"].as_array().into_iter().flatten().filter_map(|v| v.as_i64()).collect();
    let acks = store.events_of_kinds(&stage.migration_id, &["operator_task_acknowledged"]).await?;
    let mut open = Vec::new();
    for id in ids {
        let Some(event) = store.event(id).await? else { continue };
        let task: serde_json::Value = serde_json::from_str(&event.detail).unwrap_or_default();
        let needs = task["needs"].as_u64().unwrap_or(1).max(1);
        let confirmed_by: Vec<String> = acks
            .iter()
            .filter(|a| {
                serde_json::from_str::<serde_json::Value>(&a.detail).ok().and_then(|d| d["task"].as_i64())
                    == Some(id)
            })
            .map(|a| a.actor.clone())
            .collect();
        if (confirmed_by.len() as u64) < needs {
            open.push(StageTask {
                id,
                task: task["task"].as_str().unwrap_or_default().to_owned(),
                needs,
                confirmed_by,
            });
        }
    }
    Ok(open)
}

/// Adds `more`'s keys to the JSON object `detail` (a stage's detail: who postponed, skipped
/// or undid it, its tasks).
pub fn merge_detail(detail: &str, more: serde_json::Value) -> String {
    let mut value: serde_json::Value = serde_json::from_str(detail).unwrap_or_else(|_| serde_json::json!({}));
    if let (Some(map), serde_json::Value::Object(more)) = (value.as_object_mut(), more) {
        map.extend(more);
    }
    value.to_string()
}

/// How many lines of a recently written access log are read for the evidence.
const ACCESS_LOG_TAIL: &str = "1000";

/// How long one remote command of the traffic gate may take.
const TRAFFIC_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The traffic gate: what reached the old server for `domains` within `window` before now,
/// on the old server's own clock (its logs are stamped by it), read over SSH from its per-site
/// web access logs (`ssh.web_logs`: `<domain>` and `<domain>-ssl_log`, Apache's combined
/// format) and its exim main log (local deliveries to the domains' addresses). Empty: no
/// traffic. A log that does not exist is no traffic; a log that cannot be read is an error.
/// Only files written to within the window are read, and of those only their last lines.
pub async fn recent_traffic(
    host: &str,
    ssh: &crate::config::SshConfig,
    domains: &[DomainName],
    window: std::time::Duration,
) -> Result<Vec<Evidence>, crate::mailsync::MailSyncError> {
    use crate::mailsync::{MailSyncError, SourceClock, connect, run};
    if domains.is_empty() {
        return Ok(Vec::new());
    }
    let session = connect(host, ssh).await?;
    let date =
        run(&session, host, "date", &["date", "+%s %Y-%m-%d %H:%M:%S"], TRAFFIC_COMMAND_TIMEOUT).await?;
    let clock =
        SourceClock::parse(&String::from_utf8_lossy(&date.stdout)).ok_or_else(|| MailSyncError::Command {
            host: host.to_owned(),
            what: "date".into(),
            detail: format!("unreadable answer {:?}", String::from_utf8_lossy(&date.stdout)),
        })?;
    let since = clock.epoch - window.as_secs() as i64;
    let mut found = Vec::new();
    // In chunks, so a server's worth of domains never makes one command line too long.
    for chunk in domains.chunks(TRAFFIC_CHUNK) {
        found.extend(web_traffic(&session, host, ssh, chunk, since, window).await?);
        found.extend(mail_traffic(&session, host, ssh, chunk, clock, since, window).await?);
    }
    let _ = session.close().await;
    Ok(found)
}

/// Domains asked about per remote command.
const TRAFFIC_CHUNK: usize = 200;

/// Requests in the access logs of `domains` since `since` (the source's epoch seconds): which
/// logs were written since then (stat's mtime), then their last lines.
async fn web_traffic(
    session: &crate::ssh::SshSession,
    host: &str,
    ssh: &crate::config::SshConfig,
    domains: &[DomainName],
    since: i64,
    window: std::time::Duration,
) -> Result<Vec<Evidence>, crate::mailsync::MailSyncError> {
    use crate::mailsync::{MailSyncError, run, stderr_tail};
    let within = as_window(window);
    let mut found = Vec::new();
    let files: Vec<(String, &DomainName)> = domains
        .iter()
        .flat_map(|d| {
            [(ssh.web_logs.join(d.as_str()), d), (ssh.web_logs.join(&format!("{}-ssl_log", d.as_str())), d)]
        })
        .collect();
    let mut argv: Vec<&str> = vec!["stat", "-c", "%Y %n", "--"];
    argv.extend(files.iter().map(|(f, _)| f.as_str()));
    let stat = run(session, host, "stat of the web access logs", &argv, TRAFFIC_COMMAND_TIMEOUT).await?;
    // stat: 0 all found, 1 some missing (those print nothing on stdout).
    if stat.status > 1 {
        return Err(MailSyncError::Command {
            host: host.to_owned(),
            what: format!("reading the web access logs in {} (ssh.web_logs)", ssh.web_logs),
            detail: format!("stat exited with {}: {}", stat.status, stderr_tail(&stat)),
        });
    }
    let written = String::from_utf8_lossy(&stat.stdout).into_owned();
    for line in written.lines() {
        let Some((mtime, path)) = line.split_once(' ') else { continue };
        let Ok(mtime) = mtime.parse::<i64>() else { continue };
        let Some((file, domain)) = files.iter().find(|(f, _)| f == path) else { continue };
        if mtime < since {
            continue;
        }
        let argv = ["tail", "-n", ACCESS_LOG_TAIL, "--", file.as_str()];
        let tail = run(session, host, "tail of a web access log", &argv, TRAFFIC_COMMAND_TIMEOUT).await?;
        let text = String::from_utf8_lossy(&tail.stdout);
        let requests: Vec<AccessLine> =
            text.lines().filter_map(AccessLine::parse).filter(|l| l.at >= since).collect();
        if let Some(last) = requests.last() {
            found.push(Evidence {
                resolver: file.clone(),
                name: domain.as_str().to_owned(),
                rtype: "web".to_owned(),
                answer: format!(
                    "{} request(s) in the last {within}; the last at {} from {}: {}",
                    requests.len(),
                    chrono::DateTime::from_timestamp(last.at, 0).map(|t| t.to_rfc3339()).unwrap_or_default(),
                    last.client,
                    last.request
                ),
            });
        }
    }
    Ok(found)
}

/// Local deliveries to the addresses of `domains` in the exim main log since `since` (only
/// the lines naming them are read).
async fn mail_traffic(
    session: &crate::ssh::SshSession,
    host: &str,
    ssh: &crate::config::SshConfig,
    domains: &[DomainName],
    clock: crate::mailsync::SourceClock,
    since: i64,
    window: std::time::Duration,
) -> Result<Vec<Evidence>, crate::mailsync::MailSyncError> {
    use crate::mailsync::{MailSyncError, local_deliveries, run, stderr_tail};
    let within = as_window(window);
    let patterns: Vec<String> = domains.iter().map(|d| format!("@{}>", d.as_str())).collect();
    let mut argv: Vec<&str> = vec!["grep", "-F", "-i", "-h"];
    for pattern in &patterns {
        argv.extend(["-e", pattern.as_str()]);
    }
    argv.extend(["--", ssh.mail_log.as_str()]);
    let output = run(session, host, "grep of the mail log", &argv, TRAFFIC_COMMAND_TIMEOUT).await?;
    let log = match output.status {
        0 => String::from_utf8_lossy(&output.stdout).into_owned(),
        1 => String::new(),
        status => {
            return Err(MailSyncError::Command {
                host: host.to_owned(),
                what: format!("reading the mail log {} (ssh.mail_log)", ssh.mail_log),
                detail: format!("grep exited with {status}: {}", stderr_tail(&output)),
            });
        }
    };
    let mut found = Vec::new();
    for domain in domains {
        let recent: Vec<_> = local_deliveries(&log, std::slice::from_ref(domain))
            .into_iter()
            .filter(|d| clock.epoch_of(d.logged_at) >= since)
            .collect();
        if let Some(last) = recent.last() {
            found.push(Evidence {
                resolver: ssh.mail_log.to_string(),
                name: domain.as_str().to_owned(),
                rtype: "mail".to_owned(),
                answer: format!(
                    "{} local deliveries in the last {within}; the last at {} (the old server's time) to {}",
                    recent.len(),
                    last.logged_at,
                    last.address
                ),
            });
        }
    }
    Ok(found)
}

/// What powering the old server off found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerOff {
    /// The command ran and exited 0.
    Done,
    /// The connection closed while the command ran: the host went down under it.
    ConnectionClosed,
}

/// Powers the old server off: its configured command (`ssh.power_off`, an argument vector)
/// over a pinned SSH login.
pub async fn power_off(
    host: &str,
    ssh: &crate::config::SshConfig,
) -> Result<PowerOff, crate::mailsync::MailSyncError> {
    use crate::mailsync::{MailSyncError, connect, run, stderr_tail};
    let session = connect(host, ssh).await?;
    let argv: Vec<&str> = ssh.power_off.iter().map(String::as_str).collect();
    match run(&session, host, "the power-off command", &argv, TRAFFIC_COMMAND_TIMEOUT).await {
        Ok(output) if output.status == 0 => {
            let _ = session.close().await;
            Ok(PowerOff::Done)
        }
        Ok(output) => Err(MailSyncError::Command {
            host: host.to_owned(),
            what: format!("the power-off command {:?} (ssh.power_off)", ssh.power_off.join(" ")),
            detail: format!("exited with {}: {}", output.status, stderr_tail(&output)),
        }),
        Err(MailSyncError::Ssh { .. }) => Ok(PowerOff::ConnectionClosed),
        Err(other) => Err(other),
    }
}

/// Whether the old server still accepts our SSH login (after a power-off was sent: whether it
/// is still up).
pub async fn reachable(host: &str, ssh: &crate::config::SshConfig) -> bool {
    match crate::mailsync::connect(host, ssh).await {
        Ok(session) => {
            let _ = session.close().await;
            true
        }
        Err(_) => false,
    }
}

/// A window as people write it: `7d`, `12h`, `90s`.
fn as_window(window: std::time::Duration) -> String {
    let secs = window.as_secs();
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}

/// One line of an Apache combined access log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AccessLine {
    /// When, in epoch seconds.
    at: i64,
    /// The client's address.
    client: String,
    /// The request line (`GET / HTTP/1.1`).
    request: String,
}

impl AccessLine {
    /// `1.2.3.4 - - [06/Dec/2026:07:00:00 +0000] "GET / HTTP/1.1" 200 …`; `None` for anything else.
    fn parse(line: &str) -> Option<AccessLine> {
        let client = line.split_whitespace().next()?.to_owned();
        let open = line.find('[')?;
        let close = open + line[open..].find(']')?;
        let at = chrono::DateTime::parse_from_str(&line[open + 1..close], "%d/%b/%Y:%H:%M:%S %z")
            .ok()?
            .timestamp();
        let rest = &line[close + 1..];
        let request = rest.split('"').nth(1).unwrap_or_default().chars().take(200).collect();
        Some(AccessLine { at, client, request })
    }
}

/// What an account action found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    /// It did it.
    Done,
    /// It was so already (a run after a crash, or someone did it by hand).
    AlreadySo,
    /// The source has no such account (removed by hand, or an earlier run removed it).
    NoAccount,
}

/// Suspends an account on the source with `reason`, unless it is suspended already.
pub async fn suspend(whm: &WhmClient, user: &AccountName, reason: &str) -> Result<ActionOutcome, WhmError> {
    match whm.account(user).await? {
        None => Ok(ActionOutcome::NoAccount),
        Some(account) if account.suspended => Ok(ActionOutcome::AlreadySo),
        Some(_) => whm.suspend_account(user, reason).await.map(|()| ActionOutcome::Done),
    }
}

/// Unsuspends an account on the source, unless it is not suspended.
pub async fn unsuspend(whm: &WhmClient, user: &AccountName) -> Result<ActionOutcome, WhmError> {
    match whm.account(user).await? {
        None => Ok(ActionOutcome::NoAccount),
        Some(account) if !account.suspended => Ok(ActionOutcome::AlreadySo),
        Some(_) => whm.unsuspend_account(user).await.map(|()| ActionOutcome::Done),
    }
}

/// Removes an account from the source (its DNS zones kept when `keep_dns`), unless it is gone.
pub async fn remove(whm: &WhmClient, user: &AccountName, keep_dns: bool) -> Result<ActionOutcome, WhmError> {
    match whm.account(user).await? {
        None => Ok(ActionOutcome::AlreadySo),
        Some(_) => whm.remove_account(user, keep_dns).await.map(|()| ActionOutcome::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_are_read_in_apaches_combined_format() {
        let line =
            r#"198.51.100.7 - - [06/Dec/2026:07:00:00 +0200] "GET /shop/ HTTP/1.1" 200 512 "-" "curl/8""#;
        let read = AccessLine::parse(line).unwrap();
        assert_eq!(read.client, "198.51.100.7");
        assert_eq!(read.request, "GET /shop/ HTTP/1.1");
        assert_eq!(
            read.at,
            chrono::DateTime::parse_from_rfc3339("2026-12-06T05:00:00Z").unwrap().timestamp()
        );
        assert_eq!(AccessLine::parse("garbage"), None);
        assert_eq!(AccessLine::parse("1.2.3.4 - - [yesterday] \"GET /\""), None);
        assert_eq!(as_window(std::time::Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(as_window(std::time::Duration::from_secs(3)), "3s");
    }

    #[test]
    fn only_the_old_servers_addresses_and_silence_hold_an_account() {
        let old = OldServer { ip: Ipv4Addr::new(192, 0, 2, 10), ipv6: Some("2001:db8::10".parse().unwrap()) };
        let resolver: std::net::SocketAddr = "127.0.0.1:53".parse().unwrap();
        let at = |ips: &[&str]| Ok(ips.iter().map(|ip| ip.parse().unwrap()).collect());
        assert_eq!(look_at(resolver, "a.fi", "A", at(&["198.51.100.1"]), old), None);
        assert_eq!(look_at(resolver, "a.fi", "A", at(&[]), old), None, "no records lead nowhere");
        let held = look_at(resolver, "a.fi", "A", at(&["198.51.100.1", "192.0.2.10"]), old).unwrap();
        assert_eq!((held.answer.as_str(), held.resolver.as_str()), ("192.0.2.10", "127.0.0.1:53"));
        assert!(look_at(resolver, "a.fi", "AAAA", at(&["2001:db8::10"]), old).is_some());
        let silent = crate::dns::classify::NoAnswer { reason: "did not answer in time".into(), silent: true };
        let held = look_at(resolver, "a.fi", "A", Err(silent), old).unwrap();
        assert!(held.answer.starts_with("no answer (did not answer in time)"), "{}", held.answer);
    }
}
