//! No mail lost: the source's mail routing at the repoint, the final delta sync of an account
//! from the source to the target (rsync run on the target over a pinned russh session, pulling
//! from the source over ssh), and the evidence read from the source's exim main log.
//!
//! Why each part exists (reference/cpanel-migration-pains.md §C): while resolvers still hold the
//! old MX and A records, mail keeps arriving at the old server. Switching the source's mail
//! routing to `remote` makes it relay what still arrives to the domain's MX (now the target);
//! mail delivered into a mailbox on the source before the switch (after the transfer copied
//! the account) is brought over by the delta sync; and the mail log says whether anything was
//! delivered locally after the sync began, in which case the engine syncs again.
//!
//! Everything that reaches a remote command line is validated first: user names are
//! [`AccountName`]s, domains [`DomainName`]s, paths [`crate::config::RemotePath`]s, and commands are argument
//! vectors quoted by [`crate::ssh::shell_quote_argv`], never shell strings built from data.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{NaiveDateTime, TimeZone, Utc};

use crate::config::SshConfig;
use crate::domain::{MailEvidence, Timestamp};
use crate::names::{AccountName, DomainName};
use crate::playbook::SyncScope;
use crate::ssh::{ExecOutput, SshError, SshSession};
use crate::whm::{MailRouting, WhmClient, WhmError};

/// How long connecting to a host may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one rsync run may take before it is abandoned (and the step retried).
const RSYNC_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// How long a short remote command (date, test, grep of the log) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of a failed command's stderr goes into an error.
const STDERR_LIMIT: usize = 600;

/// Why a part of the mail cutover failed.
#[derive(Debug, thiserror::Error)]
pub enum MailSyncError {
    /// The SSH connection or a command on it failed.
    #[error("{host}: {source}")]
    Ssh {
        /// The host's config name.
        host: String,
        /// What went wrong.
        #[source]
        source: Box<SshError>,
    },
    /// A remote command did not finish in time.
    #[error("{host}: {what} did not finish within {timeout:?}")]
    Timeout {
        /// The host's config name.
        host: String,
        /// What was running.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// rsync exited with an error.
    #[error("rsync of {path} on {host} exited with status {status}: {stderr}")]
    Rsync {
        /// The host it ran on (the target).
        host: String,
        /// The source path.
        path: String,
        /// rsync's exit status.
        status: u32,
        /// The end of its stderr.
        stderr: String,
    },
    /// Another remote command failed or answered something unreadable.
    #[error("{host}: {what}: {detail}")]
    Command {
        /// The host's config name.
        host: String,
        /// What was asked.
        what: String,
        /// What came back.
        detail: String,
    },
    /// The config lacks what the step needs.
    #[error("{0}")]
    Config(String),
}

impl MailSyncError {
    /// Whether retrying later may help: lost connections, timeouts and rsync's transfer errors
    /// (a vanished file, a broken pipe) are transient; usage and config errors are not.
    pub fn is_transient(&self) -> bool {
        match self {
            MailSyncError::Ssh { source, .. } => source.is_transient(),
            MailSyncError::Timeout { .. } => true,
            // 1 syntax, 2 protocol incompatibility, 3 bad paths, 4 unsupported action: retrying
            // the same command cannot help, nor can it when the hop itself refuses (see
            // `refused`): every account's sync would fail the same way, so each is held at once
            // with the error instead of retried as if the network had hiccupped. The others (10
            // socket I/O, 12 data stream, 23 partial transfer, 24 vanished source files, 30
            // timeout, 255 ssh) can pass.
            MailSyncError::Rsync { status, stderr, .. } => !matches!(status, 1..=4) && !refused(stderr),
            MailSyncError::Command { .. } | MailSyncError::Config(_) => false,
        }
    }
}

/// Whether rsync's stderr says the hop refuses the sync, as opposed to a transfer that broke:
/// ssh's key or host-key refusal, a forced command or a restricted `rrsync` turning the request
/// away, the source's account directory unreachable.
fn refused(stderr: &str) -> bool {
    const REFUSALS: [&str; 8] = [
        "Permission denied",
        "Host key verification failed",
        "rrsync",
        "change_dir",
        "not allowed",
        "command not found",
        "protocol version mismatch",
        "is your shell clean",
    ];
    REFUSALS.iter().any(|marker| stderr.contains(marker))
}

// ---------------------------------------------------------------------------------------------
// Mail routing (WHM → cPanel API 2 Email::setmxcheck / getmxcheck)

/// What the routing switch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingChange {
    /// Domains whose routing was changed.
    pub changed: Vec<String>,
    /// Domains that already had the wanted routing (checked before acting).
    pub already: Vec<String>,
}

/// Sets each domain's mail exchanger type on a host to `routing`, checking first
/// (`Email::getmxcheck`) so a re-run changes nothing twice. The values are those of the
/// `mxcheck` parameter documented for cPanel API 2 `Email::setmxcheck`
/// (<https://api.docs.cpanel.net/cpanel-api-2/cpanel-api-2-modules-email/cpanel-api-2-functions-email-setmxcheck>;
/// listed on the UAPI `Email::set_always_accept` page,
/// <https://api.docs.cpanel.net/openapi/cpanel/operation/set_always_accept>): `remote` — "Do not
/// accept mail" locally, relay it to the domain's MX — at the repoint, and `local` — "Always
/// accept the domain's mail" — when a rollback points the domain back at the source.
pub async fn set_routing(
    whm: &WhmClient,
    user: &AccountName,
    domains: &[DomainName],
    routing: MailRouting,
) -> Result<RoutingChange, WhmError> {
    let mut change = RoutingChange::default();
    for domain in domains {
        if whm.mail_routing(user, domain).await? == routing {
            change.already.push(domain.to_string());
        } else {
            whm.set_mail_routing(user, domain, routing).await?;
            change.changed.push(domain.to_string());
        }
    }
    Ok(change)
}

// ---------------------------------------------------------------------------------------------
// The delta sync

/// Splits a config `host:port` (or `[v6]:port`) into the host as rsync writes it and the port,
/// refusing anything but a plain name or address.
fn host_and_port(address: &str) -> Result<(&str, u16), String> {
    let (host, port) =
        address.rsplit_once(':').ok_or_else(|| format!("expected host:port, got {address:?}"))?;
    let port: u16 = port.parse().map_err(|_| format!("expected a port in {address:?}"))?;
    let plain = !host.is_empty()
        && !host.starts_with('-')
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !plain {
        return Err(format!("expected a host name or address in {address:?}"));
    }
    Ok((host, port))
}

/// The directories of an account's home the delta sync copies, for a scope.
pub fn sync_dirs(scope: SyncScope) -> &'static [&'static str] {
    match scope {
        SyncScope::Mail => &["mail"],
        SyncScope::MailAndWeb => &["mail", "public_html"],
    }
}

/// The `ssh` command line the target uses to reach the source (rsync's `-e`), and the source
/// as `user@host`: the key and known_hosts file the target's config names, `BatchMode` (no
/// prompt can hang it) and `StrictHostKeyChecking=yes` (the source's key must be in that
/// known_hosts file). rsync splits `-e` on whitespace; every part is validated to hold none.
fn pull_hop(source: &SshConfig, target: &SshConfig) -> Result<(Vec<String>, String), MailSyncError> {
    let (Some(key), Some(known_hosts)) = (&target.pull_key_file, &target.pull_known_hosts) else {
        return Err(MailSyncError::Config(
            "the target's ssh settings need pull_key_file and pull_known_hosts for the final delta sync"
                .into(),
        ));
    };
    let (host, port) = host_and_port(&source.address)
        .map_err(|err| MailSyncError::Config(format!("the source's ssh address: {err}")))?;
    let ssh = [
        "ssh".to_owned(),
        "-p".to_owned(),
        port.to_string(),
        "-i".to_owned(),
        key.to_string(),
        "-o".to_owned(),
        "IdentitiesOnly=yes".to_owned(),
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-o".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        "-o".to_owned(),
        format!("UserKnownHostsFile={known_hosts}"),
    ];
    Ok((ssh.to_vec(), format!("{}@{host}", source.user)))
}

/// The argument vector of the rsync that runs on the target and pulls `dir` of `user`'s home
/// from the source with `how` (`--update`: files newer than the target's copy, for the web
/// root; `--files-from=-`: exactly the files listed on its standard input, one path under `dir`
/// a line, for mail, see [`delta_sync`]), over the [`pull_hop`] ssh. `-a` keeps times and
/// modes; never `--delete`, so nothing on the target is ever removed.
pub fn rsync_argv(
    source: &SshConfig,
    target: &SshConfig,
    user: &AccountName,
    dir: &str,
    how: Pull,
) -> Result<Vec<String>, MailSyncError> {
    let (ssh, remote) = pull_hop(source, target)?;
    if !dir.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(MailSyncError::Config(format!("not a directory the delta sync copies: {dir:?}")));
    }
    let from = format!("{remote}:{}/{dir}/", source.home_root.join(user.as_str()));
    let to = format!("{}/{dir}/", target.home_root.join(user.as_str()));
    let how = match how {
        Pull::Newer => "--update",
        Pull::Listed => "--files-from=-",
    };
    Ok(vec!["rsync".to_owned(), "-a".to_owned(), how.to_owned(), "-e".to_owned(), ssh.join(" "), from, to])
}

/// Which files an rsync pull copies (see [`rsync_argv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// Files newer than the target's (`--update`).
    Newer,
    /// Exactly the files listed on its standard input (`--files-from=-`).
    Listed,
}

/// The argument vector that, run on the target, lists `user`'s mail on the source through the
/// hop the final sync uses (`rsync --list-only`, the pull key and known_hosts): pre-flight's dry
/// run of the transfer itself, so a key restricted so the sync cannot read (a forced command, a
/// read-only `rrsync` rooted elsewhere) is found before the cutover.
pub fn sync_dry_run_argv(
    source: &SshConfig,
    target: &SshConfig,
    user: &AccountName,
) -> Result<Vec<String>, MailSyncError> {
    let (ssh, remote) = pull_hop(source, target)?;
    let from = format!("{remote}:{}/mail/", source.home_root.join(user.as_str()));
    Ok(vec!["rsync".to_owned(), "--list-only".to_owned(), "-e".to_owned(), ssh.join(" "), from])
}

pub(crate) async fn connect(host: &str, ssh: &SshConfig) -> Result<SshSession, MailSyncError> {
    SshSession::connect(&ssh.login(), CONNECT_TIMEOUT)
        .await
        .map_err(|source| MailSyncError::Ssh { host: host.to_owned(), source: Box::new(source) })
}

pub(crate) async fn run(
    session: &SshSession,
    host: &str,
    what: &str,
    argv: &[&str],
    timeout: Duration,
) -> Result<ExecOutput, MailSyncError> {
    match tokio::time::timeout(timeout, session.exec(argv)).await {
        Ok(result) => {
            result.map_err(|source| MailSyncError::Ssh { host: host.to_owned(), source: Box::new(source) })
        }
        Err(_) => Err(MailSyncError::Timeout { host: host.to_owned(), what: what.to_owned(), timeout }),
    }
}

async fn run_with_input(
    session: &SshSession,
    host: &str,
    what: &str,
    argv: &[&str],
    input: &[u8],
    timeout: Duration,
) -> Result<ExecOutput, MailSyncError> {
    match tokio::time::timeout(timeout, session.exec_with_input(argv, input)).await {
        Ok(result) => {
            result.map_err(|source| MailSyncError::Ssh { host: host.to_owned(), source: Box::new(source) })
        }
        Err(_) => Err(MailSyncError::Timeout { host: host.to_owned(), what: what.to_owned(), timeout }),
    }
}

pub(crate) fn stderr_tail(output: &ExecOutput) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let text = text.trim();
    let start = text.len().saturating_sub(STDERR_LIMIT);
    let start = (start..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    text[start..].to_owned()
}

/// The two hosts of a migration, by config name, with their SSH settings.
#[derive(Debug, Clone, Copy)]
pub struct Hosts<'a> {
    /// The source's config name and SSH settings.
    pub source: (&'a str, &'a SshConfig),
    /// The target's config name and SSH settings.
    pub target: (&'a str, &'a SshConfig),
}

/// How far back on the source the final sync looks for new mail.
#[derive(Debug, Clone, Copy)]
pub struct SyncWindow {
    /// When the account's transfer was enqueued (its copy began at or after it), on siirto's
    /// clock; `None` when the store does not know it, and every message is then a candidate.
    pub copy_began: Option<Timestamp>,
    /// Now, on siirto's clock, read right before the source's clock is.
    pub now: Timestamp,
}

/// How far before the copy began, on the source's clock, a message still counts as new, in
/// milliseconds: the error of one clock read over SSH (half a round trip; whole seconds where
/// `date` cannot print milliseconds) and a delivery's time in `tmp/` before its rename into
/// `new/`. Mail delivered in that second was most likely copied by the transfer, and is then
/// found on the target and not copied again; only one the customer deleted there since could
/// come back. The transfer's enqueue, which the window counts from, comes before its copy reads
/// anything, so mail delivered after the copy read the mailbox is never left out.
const COPY_BEGAN_MARGIN_MS: i64 = 1_000;

/// What one final sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Messages copied from the source, by mailbox (its folder path under `mail/`).
    pub copied: BTreeMap<String, u32>,
    /// Each copied message as (mailbox, unique name), so a later sync never copies it again.
    pub copied_names: Vec<(String, String)>,
    /// Messages new on the source that the target already held (by unique name).
    pub already_there: u32,
    /// What else was synced, as `source → target` paths (the web root, per playbook).
    pub synced: Vec<String>,
}

/// The final delta sync of `user`'s mail (and, for [`SyncScope::MailAndWeb`], web root).
///
/// Mail is not synced by file path: a Maildir message changes its name when it is read, flagged
/// or moved (`new/X` → `cur/X:2,S`, or into `.Archive/cur/`), so `rsync --update` by path
/// copies a message the customer already has on the target as a second one, and brings back
/// what they deleted there. Instead both sides' Maildirs are listed over the pinned sessions,
/// and exactly the messages that were delivered on the source after the account's copy began,
/// that no folder of the same mailbox on the target holds under the same unique name, and that
/// no earlier sync copied (`copied`) are copied, by `rsync --files-from=-` run on the target
/// with the list on its standard input. rsync rather than `doveadm backup`/`sync`: it needs
/// nothing of the servers but SSH and rsync, reads the source only, copies exactly the list
/// (doveadm decides for itself, and `backup` deletes on the destination what the source
/// lacks), and the target's Dovecot takes each new file as a new message without touching the
/// customer's flags, folders and deletions.
pub async fn delta_sync(
    hosts: Hosts<'_>,
    user: &AccountName,
    scope: SyncScope,
    window: SyncWindow,
    copied: &HashSet<(String, String)>,
) -> Result<SyncReport, MailSyncError> {
    let (source_name, source_ssh) = hosts.source;
    let (target_name, target_ssh) = hosts.target;
    // Build every command first: a config problem costs no connection.
    let mail_copy = rsync_argv(source_ssh, target_ssh, user, "mail", Pull::Listed)?;
    let web = match scope {
        SyncScope::Mail => None,
        SyncScope::MailAndWeb => Some(rsync_argv(source_ssh, target_ssh, user, "public_html", Pull::Newer)?),
    };
    let source = connect(source_name, source_ssh).await?;
    let target = connect(target_name, target_ssh).await?;
    let mut report = SyncReport::default();

    let since_ms = match window.copy_began {
        Some(began) => {
            let source_now_ms = clock_ms(&source, source_name).await?;
            began.timestamp_millis() + (source_now_ms - window.now.timestamp_millis()) - COPY_BEGAN_MARGIN_MS
        }
        None => i64::MIN,
    };
    let source_mail = format!("{}/mail", source_ssh.home_root.join(user.as_str()));
    let target_mail = format!("{}/mail", target_ssh.home_root.join(user.as_str()));
    let on_source = list_maildirs(&source, source_name, &source_mail).await?;
    let on_target = list_maildirs(&target, target_name, &target_mail).await?;
    let selection = messages_to_copy(&on_source, &on_target, since_ms, copied);
    report.already_there = selection.already_there;
    if !selection.copy.is_empty() {
        let list: String = selection.copy.iter().map(|m| format!("{}\n", m.path())).collect();
        let args: Vec<&str> = mail_copy.iter().map(String::as_str).collect();
        let output =
            run_with_input(&target, target_name, "rsync", &args, list.as_bytes(), RSYNC_TIMEOUT).await?;
        if !output.success() {
            return Err(MailSyncError::Rsync {
                host: target_name.to_owned(),
                path: source_mail,
                status: output.status,
                stderr: stderr_tail(&output),
            });
        }
        for message in &selection.copy {
            *report.copied.entry(message.mailbox().to_owned()).or_default() += 1;
            report.copied_names.push((message.mailbox().to_owned(), message.unique().to_owned()));
        }
    }

    if let Some(argv) = web {
        let source_path = format!("{}/public_html", source_ssh.home_root.join(user.as_str()));
        let exists =
            run(&source, source_name, "test -d", &["test", "-d", &source_path], COMMAND_TIMEOUT).await?;
        if exists.success() {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            let output = run(&target, target_name, "rsync", &args, RSYNC_TIMEOUT).await?;
            if !output.success() {
                return Err(MailSyncError::Rsync {
                    host: target_name.to_owned(),
                    path: source_path,
                    status: output.status,
                    stderr: stderr_tail(&output),
                });
            }
            let target_path = format!("{}/public_html", target_ssh.home_root.join(user.as_str()));
            report.synced.push(format!("{source_name}:{source_path} → {target_name}:{target_path}"));
        } else {
            tracing::info!(account = %user, path = %source_path, "not on the source; nothing to sync");
        }
    }
    let _ = source.close().await;
    let _ = target.close().await;
    Ok(report)
}

/// Reads a host's clock in epoch milliseconds (GNU `date +%s%3N`; where `date` cannot print
/// milliseconds, the end of the second it gives, so the window errs towards copying).
async fn clock_ms(session: &SshSession, host: &str) -> Result<i64, MailSyncError> {
    let date = run(session, host, "date", &["date", "+%s %3N"], COMMAND_TIMEOUT).await?;
    let answer = String::from_utf8_lossy(&date.stdout);
    let mut parts = answer.split_whitespace();
    let secs: Option<i64> = parts.next().and_then(|s| s.parse().ok());
    let millis: i64 =
        parts.next().and_then(|m| m.parse().ok()).filter(|m| (0..1000).contains(m)).unwrap_or(999);
    secs.map(|secs| secs * 1000 + millis).ok_or_else(|| MailSyncError::Command {
        host: host.to_owned(),
        what: "date".into(),
        detail: format!("unreadable answer {answer:?}"),
    })
}

/// Every message file under a host's `mail_dir` (none when it does not exist), listed with
/// `find … -print0` so no file name can split the list; names that are not plain Maildir
/// messages are left out (they are never copied).
async fn list_maildirs(
    session: &SshSession,
    host: &str,
    mail_dir: &str,
) -> Result<Vec<MailFile>, MailSyncError> {
    let exists = run(session, host, "test -d", &["test", "-d", mail_dir], COMMAND_TIMEOUT).await?;
    if !exists.success() {
        return Ok(Vec::new());
    }
    let argv = [
        "find",
        mail_dir,
        "-mindepth",
        "2",
        "-type",
        "f",
        "(",
        "-path",
        "*/cur/*",
        "-o",
        "-path",
        "*/new/*",
        ")",
        "-printf",
        "%P\\0",
    ];
    let output = run(session, host, "listing the Maildirs", &argv, COMMAND_TIMEOUT).await?;
    if !output.success() {
        return Err(MailSyncError::Command {
            host: host.to_owned(),
            what: format!("listing the Maildirs under {mail_dir}"),
            detail: format!("find exited with {}: {}", output.status, stderr_tail(&output)),
        });
    }
    let mut files = Vec::new();
    for entry in output.stdout.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        match std::str::from_utf8(entry).ok().and_then(MailFile::parse) {
            Some(file) => files.push(file),
            None => {
                tracing::warn!(host, entry = %String::from_utf8_lossy(entry), "not a Maildir message name; left out")
            }
        }
    }
    Ok(files)
}

// ---------------------------------------------------------------------------------------------
// Maildir messages

/// One message file of an account's Maildirs, by its place under the account's `mail/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFile {
    /// The folder: the directory holding `cur/` and `new/`, as a path under `mail/`
    /// (`example.fi/info`, `example.fi/info/.Sent`; empty for the account's own inbox).
    folder: String,
    /// `cur` or `new`.
    sub: &'static str,
    /// The file name: the unique name, then the info (`:2,S`) once the message was seen.
    name: String,
}

impl MailFile {
    /// Parses a path under `mail/` (`example.fi/info/.Sent/cur/1733300000.M1P2.host:2,S`).
    /// `None` for anything but a file in a `cur/` or `new/` directory with a plain name:
    /// printable, no `/`, no component `.` or `..`, nothing rsync's file list could misread.
    pub fn parse(path: &str) -> Option<MailFile> {
        if path.is_empty() || path.len() > 1024 || path.starts_with('/') {
            return None;
        }
        let plain = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.chars().all(|c| !c.is_control() && c != '\\')
        };
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 2 || !parts.iter().all(|p| plain(p)) {
            return None;
        }
        let (name, sub, folder) = (parts[parts.len() - 1], parts[parts.len() - 2], &parts[..parts.len() - 2]);
        let sub = match sub {
            "cur" => "cur",
            "new" => "new",
            _ => return None,
        };
        Some(MailFile { folder: folder.join("/"), sub, name: name.to_owned() })
    }

    /// The path under `mail/`.
    pub fn path(&self) -> String {
        if self.folder.is_empty() {
            format!("{}/{}", self.sub, self.name)
        } else {
            format!("{}/{}/{}", self.folder, self.sub, self.name)
        }
    }

    /// The unique name: the file name up to its info (`:2,…`), which stays the same when the
    /// message is read, flagged or moved.
    pub fn unique(&self) -> &str {
        self.name.split_once(':').map_or(self.name.as_str(), |(unique, _)| unique)
    }

    /// When the message was delivered, in the source's epoch milliseconds: the seconds the
    /// unique name starts with (Maildir's `time.…` names) and its microseconds (Dovecot's and
    /// exim's `time.M<micros>…`), or the end of that second where none are given. `None` for a
    /// name that does not start with a time.
    pub fn delivered_at_ms(&self) -> Option<i64> {
        let unique = self.unique();
        let digits: String = unique.chars().take_while(char::is_ascii_digit).collect();
        let secs: i64 = digits.parse().ok()?;
        let micros = unique[digits.len()..]
            .strip_prefix(".M")
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
            .and_then(|m| m.parse::<i64>().ok())
            .filter(|m| *m < 1_000_000);
        Some(secs * 1000 + micros.map_or(999, |m| m / 1000))
    }

    /// The mailbox the folder belongs to: the folder without its Maildir++ subfolder (`.Sent`),
    /// so a message moved between folders stays in the same mailbox.
    pub fn mailbox(&self) -> &str {
        match self.folder.rsplit_once('/') {
            Some((mailbox, last)) if last.starts_with('.') => mailbox,
            None if self.folder.starts_with('.') => "",
            _ => &self.folder,
        }
    }
}

/// The final sync's choice among the source's messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// The messages to copy.
    pub copy: Vec<&'a MailFile>,
    /// Messages new on the source (delivered since the copy began) that the target holds
    /// already, in some folder of the same mailbox.
    pub already_there: u32,
}

/// Chooses the messages to copy: on the source, delivered at or after `since_ms` (the source's
/// epoch milliseconds; a name without a time counts as new), whose unique name no folder of the same
/// mailbox on the target holds (so one the customer read, flagged or moved there is not copied
/// again), and not copied by an earlier sync (`copied`, as (mailbox, unique); so one the
/// customer deleted there after it was copied stays deleted).
pub fn messages_to_copy<'a>(
    source: &'a [MailFile],
    target: &[MailFile],
    since_ms: i64,
    copied: &HashSet<(String, String)>,
) -> Selection<'a> {
    let on_target: HashSet<(&str, &str)> = target.iter().map(|m| (m.mailbox(), m.unique())).collect();
    let mut selection = Selection::default();
    let mut chosen: HashSet<(&str, &str)> = HashSet::new();
    for message in source {
        if message.delivered_at_ms().is_some_and(|at| at < since_ms) {
            continue;
        }
        let key = (message.mailbox(), message.unique());
        if copied.contains(&(key.0.to_owned(), key.1.to_owned())) {
            continue;
        }
        if on_target.contains(&key) {
            selection.already_there += 1;
            continue;
        }
        // One copy of a message the source holds twice (read there meanwhile: cur/ and new/).
        if chosen.insert(key) {
            selection.copy.push(message);
        }
    }
    selection
}

// ---------------------------------------------------------------------------------------------
// The mail log

/// One local delivery read from an exim main log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDelivery {
    /// The log line's time stamp, in the source's local time as exim writes it.
    pub logged_at: NaiveDateTime,
    /// The recipient address, lower case.
    pub address: String,
}

/// The exim transports that put a message into a mailbox on the host itself (cPanel's
/// Dovecot delivery, and exim's own local file delivery).
const LOCAL_TRANSPORTS: [&str; 4] =
    ["T=dovecot_virtual_delivery", "T=dovecot_delivery", "T=local_delivery", "T=virtual_userdelivery"];

/// The local deliveries to `domains` in exim main log text. A delivery line reads
/// `YYYY-MM-DD HH:MM:SS ID => local <address> R=router T=transport …` (exim's `=>`, "normal
/// message delivery"); relays (`T=remote_smtp`) and deferrals (`==`) are not deliveries here.
pub fn local_deliveries(log: &str, domains: &[DomainName]) -> Vec<LocalDelivery> {
    let suffixes: Vec<String> = domains.iter().map(|d| format!("@{}", d.as_str())).collect();
    let mut deliveries = Vec::new();
    for line in log.lines() {
        let mut fields = line.split_whitespace();
        let (Some(date), Some(time), Some(_id), Some(arrow)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if arrow != "=>" {
            continue;
        }
        let Ok(logged_at) = NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M:%S")
        else {
            continue;
        };
        let rest: Vec<&str> = fields.collect();
        if !rest.iter().any(|f| LOCAL_TRANSPORTS.contains(f)) {
            continue;
        }
        // The address is the first `<…>` field, or the bare address right after the arrow.
        let address = rest
            .iter()
            .find_map(|f| f.strip_prefix('<').and_then(|f| f.strip_suffix('>')))
            .or_else(|| rest.first().copied().filter(|f| f.contains('@')))
            .map(str::to_ascii_lowercase);
        let Some(address) = address else { continue };
        if suffixes.iter().any(|suffix| address.ends_with(suffix.as_str())) {
            deliveries.push(LocalDelivery { logged_at, address });
        }
    }
    deliveries
}

/// The source's clock as one `date '+%s %Y-%m-%d %H:%M:%S'` answer: its epoch seconds, and its
/// local wall-clock time (what exim stamps log lines with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceClock {
    /// Seconds since the epoch on the source.
    pub epoch: i64,
    /// The source's local time at that moment.
    pub local: NaiveDateTime,
}

impl SourceClock {
    /// Parses the answer of `date '+%s %Y-%m-%d %H:%M:%S'`.
    pub fn parse(text: &str) -> Option<SourceClock> {
        let mut parts = text.split_whitespace();
        let epoch = parts.next()?.parse().ok()?;
        let local = NaiveDateTime::parse_from_str(
            &format!("{} {}", parts.next()?, parts.next()?),
            "%Y-%m-%d %H:%M:%S",
        )
        .ok()?;
        Some(SourceClock { epoch, local })
    }

    /// A log stamp in the source's local time, as epoch seconds on the source's clock.
    pub fn epoch_of(&self, logged_at: NaiveDateTime) -> i64 {
        let offset = self.local.and_utc().timestamp() - self.epoch;
        logged_at.and_utc().timestamp() - offset
    }
}

/// The evidence: local deliveries since the routing switch and since the last sync began.
///
/// Times are compared on the source's clock (`clock`, read when `now` was ours), so the source's
/// time zone and any skew between the two clocks cancel out. Log stamps have whole seconds; a
/// delivery counts as "since" a moment when it is logged in that moment's second or one before,
/// so a delivery around a sync's start is counted (and synced again) rather than missed.
pub fn evidence(
    deliveries: &[LocalDelivery],
    clock: SourceClock,
    now: Timestamp,
    switched_at: Timestamp,
    last_sync_started_at: Timestamp,
) -> MailEvidence {
    let skew = clock.epoch - now.timestamp();
    let on_source = |at: Timestamp| at.timestamp() + skew - 1;
    let (switch, sync) = (on_source(switched_at), on_source(last_sync_started_at));
    let mut evidence = MailEvidence::default();
    let mut last: Option<i64> = None;
    for delivery in deliveries {
        let at = clock.epoch_of(delivery.logged_at);
        if at >= switch {
            evidence.delivered_since_switch += 1;
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        if at >= sync {
            evidence.delivered_since_last_sync += 1;
        }
    }
    evidence.last_delivery_at = last.and_then(|at| Utc.timestamp_opt(at - skew, 0).single());
    evidence
}

/// Reads the source's clock and its mail log (only the lines naming the account's domains:
/// `grep -F -i`, so the answer stays small on a big log; exim keeps the address's case as
/// sent) and returns the evidence.
pub async fn read_evidence(
    source: (&str, &SshConfig),
    domains: &[DomainName],
    now: impl Fn() -> Timestamp,
    switched_at: Timestamp,
    last_sync_started_at: Timestamp,
) -> Result<MailEvidence, MailSyncError> {
    let (host, ssh) = source;
    if domains.is_empty() {
        return Ok(MailEvidence::default());
    }
    let session = connect(host, ssh).await?;
    let asked_at = now();
    let date = run(&session, host, "date", &["date", "+%s %Y-%m-%d %H:%M:%S"], COMMAND_TIMEOUT).await?;
    let clock =
        SourceClock::parse(&String::from_utf8_lossy(&date.stdout)).ok_or_else(|| MailSyncError::Command {
            host: host.to_owned(),
            what: "date".into(),
            detail: format!("unreadable answer {:?}", String::from_utf8_lossy(&date.stdout)),
        })?;
    let patterns: Vec<String> = domains.iter().map(|d| format!("@{}>", d.as_str())).collect();
    let mut argv: Vec<&str> = vec!["grep", "-F", "-i", "-h"];
    for pattern in &patterns {
        argv.extend(["-e", pattern.as_str()]);
    }
    argv.extend(["--", ssh.mail_log.as_str()]);
    let output = run(&session, host, "grep of the mail log", &argv, COMMAND_TIMEOUT).await?;
    let _ = session.close().await;
    // grep: 0 lines found, 1 none found, 2 an error (a missing or unreadable log).
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
    Ok(evidence(&local_deliveries(&log, domains), clock, asked_at, switched_at, last_sync_started_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RemotePath;

    fn file(path: &str) -> MailFile {
        MailFile::parse(path).unwrap_or_else(|| panic!("{path}"))
    }

    #[test]
    fn a_refusing_hop_is_permanent_and_a_broken_transfer_transient() {
        let rsync = |status, stderr: &str| MailSyncError::Rsync {
            host: "new1".into(),
            path: "/home/kukka/mail".into(),
            status,
            stderr: stderr.into(),
        };
        assert!(
            rsync(
                23,
                "rsync: [sender] link_stat \"/home/kukka/mail/cur/x\" failed: No such file or directory (2)"
            )
            .is_transient()
        );
        assert!(
            rsync(12, "rsync: connection unexpectedly closed (0 bytes received so far) [Receiver]")
                .is_transient()
        );
        assert!(!rsync(255, "root@old1: Permission denied (publickey).").is_transient());
        assert!(
            !rsync(
                23,
                "rsync: [sender] change_dir \"/home/kukka/mail\" failed: No such file or directory (2)"
            )
            .is_transient()
        );
        assert!(!rsync(1, "rrsync error: option -e has been disabled on this server").is_transient());
        assert!(!rsync(3, "anything").is_transient());
    }

    #[test]
    fn maildir_names_are_parsed_and_odd_ones_refused() {
        let read = file("example.fi/info/.Sent/cur/1733300000.M1P2.old1:2,S");
        assert_eq!(read.path(), "example.fi/info/.Sent/cur/1733300000.M1P2.old1:2,S");
        assert_eq!(
            (read.unique(), read.delivered_at_ms(), read.mailbox()),
            ("1733300000.M1P2.old1", Some(1_733_300_000_000), "example.fi/info")
        );
        assert_eq!(
            file("x/cur/1733300000.M654321P9Q1.host,S=10:2,").delivered_at_ms(),
            Some(1_733_300_000_654)
        );
        assert_eq!(
            file("x/new/1733300000.P9.host").delivered_at_ms(),
            Some(1_733_300_000_999),
            "the end of its second"
        );
        let inbox = file("example.fi/info/new/1733300001.M3P4.old1");
        assert_eq!((inbox.unique(), inbox.mailbox()), ("1733300001.M3P4.old1", "example.fi/info"));
        // The account's own mailbox, at the root of mail/, and its folders.
        assert_eq!(file("cur/1733300002.x:2,").mailbox(), "");
        assert_eq!(file(".Archive/new/1733300003.y").mailbox(), "");
        assert_eq!(file("new/no-time-in-this-name").delivered_at_ms(), None);
        for odd in [
            "",
            "/abs/cur/1",
            "example.fi/info/tmp/1733300000.M1",
            "example.fi/info/dovecot-uidlist",
            "example.fi/../info/cur/1",
            "example.fi/info/cur/with\nnewline",
            "example.fi/info/cur/back\\slash",
            "cur",
        ] {
            assert_eq!(MailFile::parse(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn only_new_mail_missing_from_the_mailbox_on_the_target_is_copied() {
        let since = 1_733_300_000_000;
        let source = vec![
            // Delivered before the copy began: the transfer brought it (or the customer has
            // since deleted it on the target): never copied.
            file("example.fi/info/cur/1733299000.old.host:2,S"),
            // New on the source, read there since: missing on the target, copied once although
            // the source's listing shows it as read.
            file("example.fi/info/cur/1733300100.a.host:2,S"),
            // New, and the customer already has it on the target in another folder (the first
            // sync copied it, they read it and moved it): not copied back.
            file("example.fi/info/new/1733300200.b.host"),
            // New, never on the target: copied.
            file("example.fi/info/.Sent/cur/1733300300.c.host:2,S"),
            // New, copied by an earlier sync, deleted on the target since: stays deleted.
            file("example.fi/info/new/1733300400.d.host"),
            // New, for another mailbox: copied.
            file("example.fi/sales/new/1733300500.e.host"),
        ];
        let target = vec![
            file("example.fi/info/.Archive/cur/1733300200.b.host:2,RS"),
            file("example.fi/info/cur/1733299000.other.host:2,"),
        ];
        let copied = HashSet::from([("example.fi/info".to_owned(), "1733300400.d.host".to_owned())]);
        let selection = messages_to_copy(&source, &target, since, &copied);
        let chosen: Vec<String> = selection.copy.iter().map(|m| m.path()).collect();
        assert_eq!(
            chosen,
            [
                "example.fi/info/cur/1733300100.a.host:2,S",
                "example.fi/info/.Sent/cur/1733300300.c.host:2,S",
                "example.fi/sales/new/1733300500.e.host",
            ]
        );
        assert_eq!(selection.already_there, 1);
    }

    fn ssh(address: &str, home: &str, pull: bool) -> SshConfig {
        SshConfig {
            address: address.to_owned(),
            user: "root".to_owned(),
            key_file: "/etc/siirto/id".into(),
            host_key: "ssh-ed25519 AAAA".to_owned(),
            home_root: RemotePath::parse(home).unwrap(),
            mail_log: RemotePath::parse("/var/log/exim_mainlog").unwrap(),
            web_logs: RemotePath::parse("/usr/local/apache/domlogs").unwrap(),
            power_off: vec!["systemctl".to_owned(), "poweroff".to_owned()],
            pull_key_file: pull.then(|| RemotePath::parse("/root/.ssh/pull").unwrap()),
            pull_known_hosts: pull.then(|| RemotePath::parse("/root/.ssh/known").unwrap()),
        }
    }

    #[test]
    fn rsync_pulls_newer_files_only_and_never_deletes() {
        let source = ssh("old1.example.net:2222", "/home", false);
        let target = ssh("new1.example.net:22", "/home2", true);
        let user = AccountName::parse("kukka").unwrap();
        let argv = rsync_argv(&source, &target, &user, "mail", Pull::Listed).unwrap();
        assert_eq!(&argv[..3], ["rsync", "-a", "--files-from=-"]);
        assert!(argv.iter().all(|a| !a.contains("--delete") && !a.contains("--update")), "{argv:?}");
        let dry = sync_dry_run_argv(&source, &target, &user).unwrap();
        assert_eq!(&dry[..2], ["rsync", "--list-only"]);
        assert_eq!(dry[dry.len() - 1], "root@old1.example.net:/home/kukka/mail/");
        let n = argv.len();
        assert_eq!(argv[n - 4], "-e");
        assert_eq!(
            argv[n - 3],
            "ssh -p 2222 -i /root/.ssh/pull -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/root/.ssh/known"
        );
        assert_eq!(argv[n - 2], "root@old1.example.net:/home/kukka/mail/");
        assert_eq!(argv[n - 1], "/home2/kukka/mail/");
        let web = rsync_argv(&source, &target, &user, "public_html", Pull::Newer).unwrap();
        assert_eq!(&web[..3], ["rsync", "-a", "--update"]);
        assert_eq!(web[web.len() - 1], "/home2/kukka/public_html/");
        assert_eq!(web.last().unwrap(), "/home2/kukka/public_html/");
        // The target must be configured to pull; bad directories and addresses are refused.
        let no_pull = ssh("new1.example.net:22", "/home", false);
        assert!(
            rsync_argv(&source, &no_pull, &user, "mail", Pull::Listed)
                .unwrap_err()
                .to_string()
                .contains("pull_key_file")
        );
        assert!(rsync_argv(&source, &target, &user, "../etc", Pull::Newer).is_err());
        let bad = ssh("-oProxyCommand=x:22", "/home", false);
        assert!(rsync_argv(&bad, &target, &user, "mail", Pull::Listed).is_err());
        assert_eq!(host_and_port("[::1]:22").unwrap(), ("[::1]", 22));
        assert_eq!(sync_dirs(SyncScope::MailAndWeb), ["mail", "public_html"]);
    }

    const LOG: &str = "\
2026-11-22 12:00:01 1vAbCd-000001-Xy <= a@b.test H=(c) [127.0.0.1]:5000 P=esmtp S=100 for info@kukka.test
2026-11-22 12:00:01 1vAbCd-000001-Xy => info <info@kukka.test> R=virtual_user T=dovecot_virtual_delivery
2026-11-22 12:00:01 1vAbCd-000001-Xy Completed
2026-11-22 12:05:00 1vAbCe-000002-Xy => info@kukka.test R=dkim_lookuphost T=remote_smtp H=mail.kukka.test [127.0.0.3] C=\"250 OK\"
2026-11-22 12:06:00 1vAbCf-000003-Xy == sales@kukka.test R=virtual_user T=dovecot_virtual_delivery defer (-1): disk full
2026-11-22 12:07:00 1vAbCg-000004-Xy => Sales <Sales@Kukka.test> R=virtual_user T=dovecot_virtual_delivery
2026-11-22 12:08:00 1vAbCh-000005-Xy => info <info@other.test> R=virtual_user T=dovecot_virtual_delivery
2026-11-22 12:09:00 1vAbCi-000006-Xy => info <info@notkukka.test> R=virtual_user T=dovecot_virtual_delivery
garbage line
";

    #[test]
    fn local_deliveries_are_read_from_exim_lines() {
        let kukka = DomainName::parse("kukka.test").unwrap();
        let found = local_deliveries(LOG, std::slice::from_ref(&kukka));
        let addresses: Vec<&str> = found.iter().map(|d| d.address.as_str()).collect();
        // Relays, deferrals, other domains (also one that merely ends like it) are not counted.
        assert_eq!(addresses, ["info@kukka.test", "sales@kukka.test"]);
        assert_eq!(found[1].logged_at.to_string(), "2026-11-22 12:07:00");
    }

    #[test]
    fn evidence_compares_on_the_source_clock() {
        let kukka = DomainName::parse("kukka.test").unwrap();
        let found = local_deliveries(LOG, &[kukka]);
        // The source's local time is UTC+2 and its clock runs 30 s ahead of ours.
        let clock = SourceClock::parse("1795348830 2026-11-22 14:00:30\n").unwrap();
        let ours = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let now = ours("2026-11-22T12:00:00Z");
        assert_eq!(clock.epoch - now.timestamp(), 30);
        // Switched at 09:59 ours (= 10:00 on the source); synced from 10:06:10 ours (10:06:40 theirs).
        let e = evidence(&found, clock, now, ours("2026-11-22T09:59:30Z"), ours("2026-11-22T10:06:10Z"));
        assert_eq!(e.delivered_since_switch, 2);
        assert_eq!(e.delivered_since_last_sync, 1, "{e:?}");
        assert_eq!(
            e.last_delivery_at,
            Some(ours("2026-11-22T10:06:30Z")),
            "12:07:00 local is 10:07:00 theirs, 10:06:30 ours"
        );
        // A sync that began after the last delivery leaves nothing behind.
        let after = evidence(&found, clock, now, ours("2026-11-22T09:59:30Z"), ours("2026-11-22T10:10:00Z"));
        assert_eq!(after.delivered_since_last_sync, 0);
        // In the same second as the sync's start counts (synced again rather than missed).
        let edge = evidence(&found, clock, now, ours("2026-11-22T09:59:30Z"), ours("2026-11-22T10:06:30Z"));
        assert_eq!(edge.delivered_since_last_sync, 1);
        assert_eq!(SourceClock::parse("x 2026"), None);
    }
}
