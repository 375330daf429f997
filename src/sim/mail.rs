//! The simulated host's mail side: an SMTP listener that delivers to the accounts' Maildirs,
//! per-domain mail routing (cPanel's "mail exchanger type", set through cPanel API 2
//! `Email::setmxcheck` by way of WHM's `/json-api/cpanel`), relaying by MX for remote domains,
//! and an exim-style main log (`<data_dir>/var/log/exim_mainlog`).
//!
//! The SMTP server is a small hand-written subset (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
//! QUIT) because the sim is the one stand-in; the relay side is a real SMTP client (lettre).
//! A message is answered `250` only once every recipient has been delivered or relayed, so a
//! sender that sees `250` knows where the message is.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::api::Params;
use super::{Host, accounts};
use crate::names::{AccountName, DomainName};

/// The largest message the listener takes (`552` above it).
const MAX_MESSAGE_BYTES: usize = 50 * 1024 * 1024;
/// The longest command line (RFC 5321 §4.5.3.1.4: 512 octets; we are lenient).
const MAX_COMMAND_BYTES: usize = 4096;
/// How long one relay attempt (DNS and SMTP) may take.
const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// The version string the sim's "exim" gives in its greeting and Received headers.
const EXIM_VERSION: &str = "Exim 4.96.2";

/// A domain's mail exchanger type, as cPanel stores it (`/etc/localdomains`,
/// `/etc/secondarymx`, `/etc/remotedomains`). Values from the UAPI `Email::set_always_accept`
/// page, which documents the same `mxcheck` parameter as cPanel API 2 `Email::setmxcheck`:
/// <https://api.docs.cpanel.net/openapi/cpanel/operation/set_always_accept>.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum MxCheck {
    /// "Allow cPanel to determine the appropriate role." cPanel decides when it writes the
    /// zone itself; with DNS hosted elsewhere it stays local, and so it does in the sim.
    #[default]
    Auto,
    /// "Always accept the domain's mail."
    Local,
    /// "Accept mail until a higher priority mail server is available." The sim relays to the
    /// lowest-preference MX that is not itself, and keeps the mail when that MX is itself.
    Secondary,
    /// "Do not accept mail" for local delivery: relay it to the domain's MX.
    Remote,
}

impl MxCheck {
    pub(crate) fn parse(value: &str) -> Option<Self> {
        match value.trim().trim_matches('"').to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "local" => Some(Self::Local),
            "secondary" => Some(Self::Secondary),
            "remote" => Some(Self::Remote),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Local => "local",
            Self::Secondary => "secondary",
            Self::Remote => "remote",
        }
    }

    /// What `auto` resolves to here (see [`MxCheck::Auto`]).
    fn detected(self) -> Self {
        match self {
            Self::Auto => Self::Local,
            other => other,
        }
    }
}

/// Per-host mail bookkeeping: the message-id counter and the log writer's lock.
#[derive(Debug, Default)]
pub(crate) struct MailSide {
    next_id: AtomicU64,
    log: tokio::sync::Mutex<()>,
}

/// `<data_dir>/var/log/exim_mainlog`.
pub(crate) fn mainlog_path(data_dir: &Path) -> PathBuf {
    data_dir.join("var").join("log").join("exim_mainlog")
}

/// The Maildir of `local@domain` in an account's home: `~/mail/<domain>/<local>`.
pub(crate) fn maildir(data_dir: &Path, user: &AccountName, domain: &DomainName, local: &str) -> PathBuf {
    accounts::home_dir(data_dir, user).join("mail").join(domain.as_str()).join(local)
}

/// The messages in a Maildir's `new` and `cur`, sorted by path (missing directories: none).
pub(crate) fn maildir_messages(dir: &Path) -> Vec<PathBuf> {
    let mut messages = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            messages.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    messages.sort();
    messages
}

// ---------------------------------------------------------------------------------------------
// Addresses and routing

/// One accepted recipient.
#[derive(Debug, Clone)]
struct Recipient {
    /// `local@domain`, lower case.
    address: String,
    local: String,
    domain: DomainName,
    user: AccountName,
}

/// A local part the sim stores as a directory name: letters, digits and `._+-`, not starting
/// or ending with a dot, no `..`.
fn valid_local_part(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// Why a recipient is refused (the text after `550`).
fn resolve_recipient(host: &Host, address: &str) -> Result<Recipient, &'static str> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("Unrouteable address");
    };
    let local = local.to_ascii_lowercase();
    if !valid_local_part(&local) {
        return Err("Unrouteable address");
    }
    let Ok(domain) = DomainName::parse(domain) else {
        return Err("Unrouteable address");
    };
    let state = host.state();
    let owner = state
        .accounts
        .values()
        .find(|record| record.spec.domain == domain || record.spec.addon_domains.contains(&domain));
    match owner {
        Some(record) => Ok(Recipient {
            address: format!("{local}@{domain}"),
            local,
            domain,
            user: record.spec.user.clone(),
        }),
        // Exim on cPanel answers an address it neither hosts nor relays for like this.
        None => Err("Unrouteable address"),
    }
}

/// The reverse or forward path of `MAIL FROM:<…>` / `RCPT TO:<…>` (after the colon), without
/// the angle brackets and ESMTP parameters. `<>` gives an empty path.
fn parse_path(argument: &str) -> Option<String> {
    let argument = argument.trim_start();
    let path = if let Some(rest) = argument.strip_prefix('<') {
        rest.split_once('>')?.0
    } else {
        argument.split_whitespace().next()?
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>') {
        return None;
    }
    Some(path.to_owned())
}

/// Splits `VERB rest` and strips a `FROM:`/`TO:` keyword when it is the expected one.
fn after_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let rest = rest.trim_start();
    let head = rest.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword).then(|| &rest[keyword.len()..])
}

// ---------------------------------------------------------------------------------------------
// The listener

/// Accepts SMTP connections until the task is aborted; aborting it also closes every open
/// session (they live in a `JoinSet` owned by this future).
pub(crate) async fn serve(listener: TcpListener, host: Arc<Host>) {
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "simulated host: SMTP accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let host = host.clone();
        sessions.spawn(async move {
            if let Err(error) = session(&host, stream, peer).await {
                tracing::debug!(%error, %peer, host = %host.hostname, "simulated SMTP session ended");
            }
        });
    }
}

/// One SMTP transaction's envelope.
#[derive(Debug, Default)]
struct Transaction {
    from: Option<String>,
    recipients: Vec<Recipient>,
}

async fn session(host: &Host, stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let hostname = host.hostname.clone();
    write.write_all(format!("220 {hostname} ESMTP {EXIM_VERSION} (siirto sim)\r\n").as_bytes()).await?;

    let mut helo: Option<String> = None;
    let mut transaction = Transaction::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader).take(MAX_COMMAND_BYTES as u64 + 2).read_until(b'\n', &mut line).await?;
        if read == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") {
            write.write_all(b"500 Line too long\r\n").await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if rest.trim().is_empty() => {
                format!("501 Syntactically invalid {verb} argument(s)\r\n")
            }
            "EHLO" => {
                helo = Some(rest.trim().to_owned());
                transaction = Transaction::default();
                format!(
                    "250-{hostname} Hello {name} [{ip}]\r\n250-SIZE {MAX_MESSAGE_BYTES}\r\n\
                     250-8BITMIME\r\n250-PIPELINING\r\n250 HELP\r\n",
                    name = rest.trim(),
                    ip = peer.ip()
                )
            }
            "HELO" => {
                helo = Some(rest.trim().to_owned());
                transaction = Transaction::default();
                format!("250 {hostname} Hello {} [{}]\r\n", rest.trim(), peer.ip())
            }
            "MAIL" => match (&helo, after_keyword(rest, "FROM:").and_then(parse_path)) {
                (None, _) => "503 HELO or EHLO first\r\n".to_owned(),
                (Some(_), None) => "501 Syntax: MAIL FROM:<address>\r\n".to_owned(),
                (Some(_), Some(_)) if transaction.from.is_some() => "503 Sender already given\r\n".to_owned(),
                (Some(_), Some(from)) => {
                    transaction.from = Some(from);
                    "250 OK\r\n".to_owned()
                }
            },
            "RCPT" => match (&transaction.from, after_keyword(rest, "TO:").and_then(parse_path)) {
                (None, _) => "503 sender not yet given\r\n".to_owned(),
                (Some(_), None) => "501 Syntax: RCPT TO:<address>\r\n".to_owned(),
                (Some(from), Some(to)) => match resolve_recipient(host, &to) {
                    Ok(recipient) => {
                        transaction.recipients.push(recipient);
                        "250 Accepted\r\n".to_owned()
                    }
                    Err(reason) => {
                        let helo = helo.as_deref().unwrap_or("");
                        let from = from.clone();
                        log_lines(
                            host,
                            &[format!(
                                "H=({helo}) [{ip}]:{port} F=<{from}> rejected RCPT <{to}>: {reason}",
                                ip = peer.ip(),
                                port = peer.port()
                            )],
                        )
                        .await;
                        format!("550 {reason}\r\n")
                    }
                },
            },
            "DATA" if transaction.recipients.is_empty() => {
                "503 valid RCPT command must precede DATA\r\n".to_owned()
            }
            "DATA" => {
                write.write_all(b"354 Enter message, ending with \".\" on a line by itself\r\n").await?;
                let Some(data) = read_data(&mut reader).await? else {
                    transaction = Transaction::default();
                    write.write_all(b"552 Message size exceeds maximum permitted\r\n").await?;
                    continue;
                };
                let envelope = std::mem::take(&mut transaction);
                let helo = helo.clone().unwrap_or_default();
                match accept_message(host, &helo, peer, envelope, data).await {
                    Ok(id) => format!("250 OK id={id}\r\n"),
                    Err(reason) => format!("451 Temporary local problem - please try later ({reason})\r\n"),
                }
            }
            "RSET" => {
                transaction = Transaction::default();
                "250 Reset OK\r\n".to_owned()
            }
            "NOOP" => "250 OK\r\n".to_owned(),
            "QUIT" => {
                write.write_all(format!("221 {hostname} closing connection\r\n").as_bytes()).await?;
                return Ok(());
            }
            _ => "500 unrecognized command\r\n".to_owned(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// Reads a DATA section up to the lone `.` line, undoing dot-stuffing (RFC 5321 §4.5.2).
/// Lines are kept with CRLF endings. `None` when the message is too large (the rest is read
/// and dropped so the session stays in step).
async fn read_data<R>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut data = Vec::new();
    let mut too_large = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed in DATA"));
        }
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content == b"." {
            return Ok(if too_large { None } else { Some(data) });
        }
        let content = content.strip_prefix(b".").unwrap_or(content);
        if data.len() + content.len() + 2 > MAX_MESSAGE_BYTES {
            too_large = true;
        }
        if !too_large {
            data.extend_from_slice(content);
            data.extend_from_slice(b"\r\n");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery

/// A header's value from the message head (first occurrence, unfolded), if present.
fn header_value(data: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(current) = &mut value {
            if line.starts_with([' ', '\t']) {
                current.push(' ');
                current.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((key, rest)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_owned());
        }
    }
    value
}

/// Base-62 digits, as exim's message ids use them.
fn base62(mut value: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A message id in exim's classic form `tttttt-pppppp-ss` (time, process, sub-second; base
/// 62), e.g. `1qXyZ9-0002hA-Li`. The process part is a per-host counter, so ids are unique.
fn message_id(host: &Host) -> String {
    let now = chrono::Utc::now();
    let counter = host.mail.next_id.fetch_add(1, Ordering::Relaxed);
    let seconds = u64::try_from(now.timestamp()).unwrap_or_default();
    let fraction = u64::from(now.timestamp_subsec_millis());
    format!("{}-{}-{}", base62(seconds, 6), base62(counter, 6), base62(fraction, 2))
}

/// Appends lines to the main log, each stamped `YYYY-MM-DD HH:MM:SS <text>` in local time, as
/// exim does unless built or configured otherwise (`log_timezone` false by default).
async fn log_lines(host: &Host, lines: &[String]) {
    let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
    let mut text = String::new();
    for line in lines {
        let _ = writeln!(text, "{stamp} {line}");
    }
    let path = mainlog_path(&host.data_dir);
    let _guard = host.mail.log.lock().await;
    let result = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await?;
        file.write_all(text.as_bytes()).await?;
        file.flush().await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, host = %host.hostname, "simulated host: could not write the mail log");
    }
}

/// Takes a message: logs its arrival, delivers or relays it to every recipient, logs each
/// delivery. Returns the message id, or why some recipient could not be served (those are
/// logged as deferred `==`; the sender is told to retry).
async fn accept_message(
    host: &Host,
    helo: &str,
    peer: SocketAddr,
    envelope: Transaction,
    body: Vec<u8>,
) -> Result<String, String> {
    let id = message_id(host);
    let from = envelope.from.unwrap_or_default();
    let mut recipients = envelope.recipients;
    // A recipient given twice gets one copy, as exim does.
    let mut seen = std::collections::BTreeSet::new();
    recipients.retain(|r| seen.insert(r.address.clone()));

    let for_clause =
        if recipients.len() == 1 { format!("\r\n\tfor <{}>", recipients[0].address) } else { String::new() };
    let received = format!(
        "Received: from [{ip}] (port={port} helo={helo})\r\n\tby {hostname} with esmtp ({EXIM_VERSION})\r\n\
         \t(envelope-from <{from}>)\r\n\tid {id}{for_clause};\r\n\t{date}\r\n",
        ip = peer.ip(),
        port = peer.port(),
        hostname = host.hostname,
        date = chrono::Utc::now().to_rfc2822(),
    );
    let mut message = received.into_bytes();
    message.extend_from_slice(&body);

    let sender = if from.is_empty() { "<>".to_owned() } else { from.clone() };
    let mut arrival = format!(
        "{id} <= {sender} H=({helo}) [{ip}]:{port} P=esmtp S={size}",
        ip = peer.ip(),
        port = peer.port(),
        size = message.len()
    );
    if let Some(message_id) = header_value(&body, "Message-ID") {
        let _ = write!(arrival, " id={}", message_id.trim_matches(['<', '>']));
    }
    if let Some(subject) = header_value(&body, "Subject") {
        let _ = write!(arrival, " T=\"{}\"", subject.replace('"', "\\\""));
    }
    let _ = write!(
        arrival,
        " for {}",
        recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>().join(" ")
    );
    log_lines(host, &[arrival]).await;

    let mut failures = Vec::new();
    for recipient in &recipients {
        let routing =
            host.state().mail_routing.get(&recipient.domain).copied().unwrap_or_default().detected();
        let line = match routing {
            MxCheck::Auto | MxCheck::Local => match deliver_local(host, recipient, &message).await {
                Ok(()) => format!(
                    "{id} => {local} <{address}> R=virtual_user T=dovecot_virtual_delivery",
                    local = recipient.local,
                    address = recipient.address
                ),
                Err(error) => {
                    failures.push(format!("{}: {error}", recipient.address));
                    format!(
                        "{id} == {address} R=virtual_user T=dovecot_virtual_delivery defer (-1): {error}",
                        address = recipient.address
                    )
                }
            },
            MxCheck::Secondary | MxCheck::Remote => {
                match tokio::time::timeout(RELAY_TIMEOUT, relay(host, recipient, &from, &message)).await {
                    Ok(Ok(Relayed::Here)) => match deliver_local(host, recipient, &message).await {
                        Ok(()) => format!(
                            "{id} => {local} <{address}> R=virtual_user T=dovecot_virtual_delivery",
                            local = recipient.local,
                            address = recipient.address
                        ),
                        Err(error) => {
                            failures.push(format!("{}: {error}", recipient.address));
                            format!(
                                "{id} == {address} R=virtual_user T=dovecot_virtual_delivery defer (-1): {error}",
                                address = recipient.address
                            )
                        }
                    },
                    Ok(Ok(Relayed::To { mx, ip, confirmation })) => format!(
                        "{id} => {address} R=dkim_lookuphost T=remote_smtp H={mx} [{ip}] C=\"{confirmation}\"",
                        address = recipient.address
                    ),
                    Ok(Err(error)) => {
                        failures.push(format!("{}: {error}", recipient.address));
                        format!(
                            "{id} == {address} R=dkim_lookuphost T=remote_smtp defer (-1): {error}",
                            address = recipient.address
                        )
                    }
                    Err(_) => {
                        let error = format!("relay timed out after {}s", RELAY_TIMEOUT.as_secs());
                        failures.push(format!("{}: {error}", recipient.address));
                        format!(
                            "{id} == {address} R=dkim_lookuphost T=remote_smtp defer (-1): {error}",
                            address = recipient.address
                        )
                    }
                }
            }
        };
        log_lines(host, &[line]).await;
    }
    if failures.is_empty() {
        log_lines(host, &[format!("{id} Completed")]).await;
        Ok(id)
    } else {
        Err(failures.join("; "))
    }
}

/// Writes the message into the recipient's Maildir: `tmp/` first, then renamed into `new/`.
async fn deliver_local(host: &Host, recipient: &Recipient, message: &[u8]) -> std::io::Result<()> {
    let dir = maildir(&host.data_dir, &recipient.user, &recipient.domain, &recipient.local);
    for sub in ["cur", "new", "tmp"] {
        tokio::fs::create_dir_all(dir.join(sub)).await?;
    }
    let now = chrono::Utc::now();
    let counter = host.mail.next_id.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{secs}.M{micros}P{pid}Q{counter}.{hostname},S={size}",
        secs = now.timestamp(),
        micros = now.timestamp_subsec_micros(),
        pid = std::process::id(),
        hostname = host.hostname,
        size = message.len()
    );
    let tmp = dir.join("tmp").join(&name);
    tokio::fs::write(&tmp, message).await?;
    tokio::fs::rename(&tmp, dir.join("new").join(&name)).await
}

// ---------------------------------------------------------------------------------------------
// Relay

/// Where a relayed message went.
enum Relayed {
    /// Handed to another server.
    To { mx: String, ip: Ipv4Addr, confirmation: String },
    /// The best MX is this host itself (only for `secondary`): deliver here.
    Here,
}

fn resolver(addresses: &[SocketAddr]) -> Result<Resolver<TokioRuntimeProvider>, String> {
    let servers = addresses
        .iter()
        .map(|address| {
            let mut server = NameServerConfig::udp_and_tcp(address.ip());
            for connection in &mut server.connections {
                connection.port = address.port();
            }
            server
        })
        .collect();
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.ndots = 0;
    Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(|err| format!("resolver: {err}"))
}

fn fqdn(name: &str) -> Result<Name, String> {
    let name = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
    Name::from_ascii(&name).map_err(|err| format!("bad DNS name {name:?}: {err}"))
}

/// Looks up the domain's MX hosts (lowest preference first) and their IPv4 addresses through
/// the host's resolvers, and hands the message to the first one that is not this host.
async fn relay(host: &Host, recipient: &Recipient, from: &str, message: &[u8]) -> Result<Relayed, String> {
    if host.dns_resolvers.is_empty() {
        return Err("no DNS resolvers are configured for this host, cannot look up MX".into());
    }
    let domain = recipient.domain.as_str();
    // Each listed server in turn, as a recursive resolver reaches every zone: the first that
    // answers the MX query (the others may not serve the domain at all) answers the rest too.
    let mut lookup_errors = Vec::new();
    let mut found = None;
    for server in &host.dns_resolvers {
        let resolver = resolver(std::slice::from_ref(server))?;
        match resolver.lookup(fqdn(domain)?, RecordType::MX).await {
            Ok(lookup) => {
                found = Some((resolver, lookup));
                break;
            }
            Err(err) => lookup_errors.push(format!("{server}: {err}")),
        }
    }
    let (resolver, lookup) =
        found.ok_or_else(|| format!("MX lookup for {domain}: {}", lookup_errors.join("; ")))?;
    let mut exchanges: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::MX(mx) => {
                Some((mx.preference, mx.exchange.to_ascii().trim_end_matches('.').to_ascii_lowercase()))
            }
            _ => None,
        })
        .collect();
    exchanges.sort();
    if exchanges.is_empty() {
        return Err(format!("no MX records for {domain}"));
    }
    let mut errors = Vec::new();
    for (_, exchange) in exchanges {
        let addresses: Vec<Ipv4Addr> = match resolver.lookup(fqdn(&exchange)?, RecordType::A).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect(),
            Err(err) => {
                errors.push(format!("A lookup for {exchange}: {err}"));
                continue;
            }
        };
        for ip in addresses {
            if ip == host.ip {
                if host.state().mail_routing.get(&recipient.domain).copied() == Some(MxCheck::Secondary) {
                    return Ok(Relayed::Here);
                }
                // Exim's own words for a remote domain whose MX is this host.
                errors.push(format!("lowest numbered MX record points to local host ({exchange} [{ip}])"));
                continue;
            }
            let port_addr = match host.smtp_relay_port {
                Some(port) => SocketAddr::from((ip, port)),
                None => host.world.smtp_addr_of(ip).unwrap_or_else(|| SocketAddr::from((ip, 25))),
            };
            match send(host, port_addr, from, &recipient.address, message).await {
                Ok(confirmation) => return Ok(Relayed::To { mx: exchange, ip, confirmation }),
                Err(error) => errors.push(format!("{exchange} [{ip}]:{}: {error}", port_addr.port())),
            }
        }
    }
    Err(errors.join("; "))
}

/// One SMTP delivery with lettre over a `TCP_NODELAY` socket; returns the server's final reply
/// (`250 OK id=…`) for the log's `C=` field.
async fn send(
    host: &Host,
    server: SocketAddr,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<String, String> {
    let from = if from.is_empty() {
        None
    } else {
        Some(from.parse::<Address>().map_err(|err| format!("sender {from:?}: {err}"))?)
    };
    let to = to.parse::<Address>().map_err(|err| format!("recipient {to:?}: {err}"))?;
    let envelope = Envelope::new(from, vec![to]).map_err(|err| err.to_string())?;
    // Connect from the host's own address, as a real server's relay would.
    let socket = tokio::net::TcpSocket::new_v4().map_err(|err| format!("socket: {err}"))?;
    socket.bind(SocketAddr::from((host.ip, 0))).map_err(|err| format!("bind {}: {err}", host.ip))?;
    let tcp = socket.connect(server).await.map_err(|err| format!("connect: {err}"))?;
    let _ = tcp.set_nodelay(true);
    let hello = ClientId::Domain(host.hostname.clone());
    let mut connection = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
        .await
        .map_err(|err| err.to_string())?;
    match connection.send(&envelope, message).await {
        Ok(response) => {
            let _ = connection.quit().await;
            let text = response.message().next().unwrap_or("");
            Ok(format!("{} {text}", response.code()))
        }
        Err(err) => {
            connection.abort().await;
            Err(err.to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cPanel API 2 through WHM: Email::setmxcheck / Email::getmxcheck

/// `/json-api/cpanel?cpanel_jsonapi_user=U&cpanel_jsonapi_apiversion=2&cpanel_jsonapi_module=
/// Email&cpanel_jsonapi_func=setmxcheck&domain=D&mxcheck=remote`, answered in the cPanel API 2
/// envelope (`{"cpanelresult": {apiversion, func, module, event: {result}, data: [...]}}`,
/// <https://api.docs.cpanel.net/cpanel-api-2/cpanel-api-2-returdata/>). Pages:
/// <https://api.docs.cpanel.net/cpanel-api-2/cpanel-api-2-modules-email/cpanel-api-2-functions-email-setmxcheck>
/// and `…-getmxcheck`.
pub(crate) fn cpanel_api(host: &Host, params: &Params) -> Response {
    let get = |key: &str| params.get(key).map(|v| v.trim().trim_matches('"').to_owned()).unwrap_or_default();
    let module = get("cpanel_jsonapi_module");
    let func = get("cpanel_jsonapi_func");
    let version = get("cpanel_jsonapi_apiversion");
    let user = match AccountName::parse(&get("cpanel_jsonapi_user")) {
        Ok(user) if host.state().accounts.contains_key(&user) => user,
        _ => {
            // What WHM answers when the user is missing, invalid or unknown: no module or event.
            let reason = "User parameter is invalid or was not supplied";
            return json_response(json!({ "cpanelresult": {
                "apiversion": "2",
                "error": reason,
                "data": { "reason": reason, "result": "0" },
                "type": "text",
            }}));
        }
    };
    if version != "2" {
        return api2_error(&module, &func, &format!("cPanel API version {version:?} is not supported here"));
    }
    let result = match (module.as_str(), func.as_str()) {
        ("Email", "setmxcheck" | "setalwaysaccept") => setmxcheck(host, &user, params),
        ("Email", "getmxcheck" | "getalwaysaccept") => getmxcheck(host, &user, params),
        _ => Err(format!("Could not find function '{func}' in module '{module}'")),
    };
    match result {
        Ok(item) => json_response(json!({ "cpanelresult": {
            "apiversion": 2,
            "func": func,
            "module": module,
            "event": { "result": 1 },
            "data": [item],
        }})),
        Err(reason) => api2_error(&module, &func, &reason),
    }
}

fn json_response(body: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], body.to_string()).into_response()
}

fn api2_error(module: &str, func: &str, reason: &str) -> Response {
    json_response(json!({ "cpanelresult": {
        "apiversion": 2,
        "func": func,
        "module": module,
        "event": { "result": 0, "reason": reason },
        "error": reason,
        "data": [],
    }}))
}

/// The `domain` parameter, which must be one of `user`'s domains (main, addon, parked or
/// subdomain: cPanel's Email Routing lists each domain that receives mail).
fn owned_domain(host: &Host, user: &AccountName, params: &Params) -> Result<DomainName, String> {
    let raw = params.get("domain").map(|v| v.trim().trim_matches('"')).unwrap_or("");
    let domain = DomainName::parse(raw).map_err(|err| format!("Invalid domain “{raw}”: {err}"))?;
    let state = host.state();
    let owns = state.accounts.get(user).is_some_and(|r| {
        r.spec.domain == domain
            || r.spec.addon_domains.contains(&domain)
            || r.spec.parked_domains.contains(&domain)
            || r.spec.sub_domains.contains(&domain)
    });
    if owns { Ok(domain) } else { Err(format!("You do not own the domain “{domain}”.")) }
}

/// The `checkmx` object that cPanel returns with a mail exchanger change (field names as in
/// the UAPI `Email::add_mx` / `Email::set_always_accept` return data).
fn checkmx(routing: MxCheck, changed: bool) -> Value {
    let detected = routing.detected();
    json!({
        "changed": if changed { 1 } else { 0 },
        "detected": detected.as_str(),
        "isprimary": if detected == MxCheck::Local { 1 } else { 0 },
        "issecondary": if detected == MxCheck::Secondary { 1 } else { 0 },
        "local": if detected == MxCheck::Local { 1 } else { 0 },
        "remote": if detected == MxCheck::Remote { 1 } else { 0 },
        "secondary": if detected == MxCheck::Secondary { 1 } else { 0 },
        "mxcheck": routing.as_str(),
        "warnings": [],
    })
}

fn setmxcheck(host: &Host, user: &AccountName, params: &Params) -> Result<Value, String> {
    let domain = owned_domain(host, user, params)?;
    // `alwaysaccept` is the older name of the same parameter; `auto` is the default.
    let raw =
        params.get("mxcheck").or_else(|| params.get("alwaysaccept")).map(String::as_str).unwrap_or("auto");
    let routing = MxCheck::parse(raw)
        .ok_or_else(|| format!("Invalid mxcheck “{raw}”: use auto, local, secondary or remote."))?;
    let previous = {
        let mut state = host.state();
        let previous = state.mail_routing.get(&domain).copied().unwrap_or_default();
        if routing == MxCheck::Auto {
            state.mail_routing.remove(&domain);
        } else {
            state.mail_routing.insert(domain.clone(), routing);
        }
        previous
    };
    tracing::debug!(host = %host.hostname, %domain, mxcheck = routing.as_str(), "simulated host: mail routing set");
    let message = format!("Set Always Accept Status to: {}", routing.as_str());
    Ok(json!({
        "checkmx": checkmx(routing, previous != routing),
        "detected": routing.detected().as_str(),
        "mxcheck": routing.as_str(),
        "results": message,
        "status": 1,
        "statusmsg": message,
    }))
}

fn getmxcheck(host: &Host, user: &AccountName, params: &Params) -> Result<Value, String> {
    let domain = owned_domain(host, user, params)?;
    let routing = host.state().mail_routing.get(&domain).copied().unwrap_or_default();
    Ok(json!({
        "alwaysaccept": if routing.detected() == MxCheck::Local { 1 } else { 0 },
        "detected": routing.detected().as_str(),
        "domain": domain.as_str(),
        "mxcheck": routing.as_str(),
    }))
}

/// A domain's mail exchanger type on this host (`auto` unless set).
pub(crate) fn routing_of(host: &Host, domain: &DomainName) -> &'static str {
    host.state().mail_routing.get(domain).copied().unwrap_or_default().as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_keywords() {
        assert_eq!(
            after_keyword("FROM:<a@b.test> SIZE=10", "FROM:").and_then(parse_path).as_deref(),
            Some("a@b.test")
        );
        assert_eq!(
            after_keyword("from: <a@b.test>", "FROM:").and_then(parse_path).as_deref(),
            Some("a@b.test")
        );
        assert_eq!(after_keyword("FROM:<>", "FROM:").and_then(parse_path).as_deref(), Some(""));
        assert_eq!(
            after_keyword("TO:info@x.test", "TO:").and_then(parse_path).as_deref(),
            Some("info@x.test")
        );
        assert_eq!(after_keyword("TO:<a b@x.test>", "TO:").and_then(parse_path), None);
        assert_eq!(after_keyword("<a@b.test>", "FROM:"), None);
    }

    #[test]
    fn local_parts() {
        for good in ["info", "first.last", "a+tag", "x_y-z", "0"] {
            assert!(valid_local_part(good), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "../etc", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_local_part(bad), "{bad}");
        }
    }

    #[test]
    fn message_ids_and_headers() {
        assert_eq!(base62(0, 6), "000000");
        assert_eq!(base62(61, 2), "0z");
        assert_eq!(base62(62, 2), "10");
        let data = b"Subject: hello\r\n  world\r\nMessage-ID: <m1@x.test>\r\n\r\nSubject: not a header\r\n";
        assert_eq!(header_value(data, "subject").as_deref(), Some("hello world"));
        assert_eq!(header_value(data, "Message-ID").as_deref(), Some("<m1@x.test>"));
        assert_eq!(header_value(data, "From"), None);
    }

    #[tokio::test]
    async fn data_is_dot_unstuffed_and_ends_at_the_lone_dot() {
        let input: &[u8] = b"line one\r\n..\r\n..leading\r\n.\r\nNOOP\r\n";
        let mut reader = BufReader::new(input);
        let data = read_data(&mut reader).await.unwrap().unwrap();
        assert_eq!(data, b"line one\r\n.\r\n.leading\r\n");
        let mut rest = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut rest).await.unwrap();
        assert_eq!(rest, "NOOP\r\n");
    }

    #[test]
    fn mxcheck_values() {
        for value in ["auto", "local", "secondary", "remote"] {
            assert_eq!(MxCheck::parse(value).map(MxCheck::as_str), Some(value));
        }
        assert_eq!(MxCheck::parse("\"Remote\""), Some(MxCheck::Remote));
        assert_eq!(MxCheck::parse("backup"), None);
        assert_eq!(MxCheck::Auto.detected(), MxCheck::Local);
    }
}
