//! The daemon's configuration (`siirto.toml`): parsed once into validated types, secrets read.
//!
//! The TOML is first deserialized into private raw structs (`deny_unknown_fields`, every value
//! wrapped in [`toml::Spanned`] so it keeps its place in the file), then validated into
//! [`Config`]. Nothing downstream re-validates: a `Config` that exists is a good one. Every
//! refusal is a [`ConfigError`] naming the file, line, column, the dotted field and what was
//! expected, so an operator can fix the file without reading code. The same error type and
//! helpers serve [`crate::playbook`].
//!
//! Secrets (WHM tokens, the PowerDNS API key, the SMTP password) are never written inline:
//! the config names a file (`token_file`, read and trimmed) or an environment variable
//! (`token_env`); both are read at load time, so a missing one is refused before anything runs.
//! They are held as [`Secret`], so `Debug` of a whole `Config` shows none of them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::DomainName;
use crate::secret::Secret;

mod licence;
mod parse;
mod source;

use parse::parse_with_env;

pub use licence::{LicenceConfig, MANAGE2_URL};
pub use source::ConfigError;
pub(crate) use source::{Source, as_written, join_field};

/// The base of a PowerDNS API URL: `http://h:8081`, `http://h:8081/api/v1` and
/// `http://h:8081/api/v1/` all give `http://h:8081/`, and a base under a path (a reverse proxy's
/// `https://h/pdns/api/v1`) keeps that path, with a trailing `/`. PowerDNS's own documentation
/// and most tools name the URL with `/api/v1`, others without; both mean the same server.
pub fn powerdns_base_url(url: &reqwest::Url) -> reqwest::Url {
    let mut base = url.clone();
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api/v1").unwrap_or(path);
    base.set_path(&format!("{path}/"));
    base
}

// ---------------------------------------------------------------------------------------------
// The `[contracts]` table: where the contract data comes from (read by `crate::contracts`).

/// The validated `[contracts]` table of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct ContractsConfig {
    /// Where the contracts come from.
    pub source: ContractSource,
    /// How contracts spell the names of our hosts.
    pub server_names: ServerNames,
    /// Which source column or JSON key holds which of our fields.
    pub fields: ContractFields,
}

/// A contract source.
#[derive(Debug, Clone, PartialEq)]
pub enum ContractSource {
    /// A CSV file, UTF-8 with or without a BOM.
    Csv {
        /// The file (resolved against the config file's directory).
        path: PathBuf,
        /// `b','` or `b';'`; `None` detects it from the header line.
        delimiter: Option<u8>,
    },
    /// An HTTP(S) endpoint answering a GET with a JSON array of objects or `{"items": [...]}`.
    Http {
        /// The endpoint (TLS verified against the web PKI for https).
        url: reqwest::Url,
        /// A bearer token, sent as `Authorization: Bearer …` when present.
        token: Option<Secret>,
    },
}

/// Which source column (CSV header) or JSON key holds each of our fields. Defaults are our own
/// field names. JSON keys may be dotted paths into nested objects (`customer.id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractFields {
    /// The customer id (required).
    pub customer_id: String,
    /// The customer's name (required column; may be empty on a row).
    pub name: String,
    /// Contact e-mail(s), several separated by `,` or `;` (required column).
    pub email: String,
    /// Preferred language (optional column).
    pub language: String,
    /// A cPanel user name (one of `user`, `domain`, `service` is required).
    pub user: String,
    /// A domain name.
    pub domain: String,
    /// A service that is either a cPanel user or a domain.
    pub service: String,
    /// The server the contract says the service is on (required column).
    pub server: String,
    /// The reseller, if any (optional column).
    pub reseller: String,
}

impl Default for ContractFields {
    fn default() -> Self {
        Self {
            customer_id: "customer_id".to_owned(),
            name: "name".to_owned(),
            email: "email".to_owned(),
            language: "language".to_owned(),
            user: "user".to_owned(),
            domain: "domain".to_owned(),
            service: "service".to_owned(),
            server: "server".to_owned(),
            reseller: "reseller".to_owned(),
        }
    }
}

/// How contracts spell the names of our hosts: host short name (`old1`) → the spellings
/// (`old1.example.fi`, `cp1`). Compared case-insensitively, without a trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerNames(BTreeMap<String, Vec<String>>);

impl ServerNames {
    /// Builds the map; spellings are normalised (trimmed, lowercase, no trailing dot).
    pub fn new(map: BTreeMap<String, Vec<String>>) -> Self {
        Self(
            map.into_iter()
                .map(|(host, names)| (host, names.iter().map(|n| normalize_server(n)).collect()))
                .collect(),
        )
    }

    /// The host short name a contract's server spelling stands for, if it is one of ours.
    pub fn host_of(&self, spelled: &str) -> Option<&str> {
        let spelled = normalize_server(spelled);
        self.0
            .iter()
            .find(|(host, names)| **host == spelled || names.contains(&spelled))
            .map(|(host, _)| host.as_str())
    }

    /// The spellings of one host.
    pub fn names_of(&self, host: &str) -> &[String] {
        self.0.get(host).map_or(&[], Vec::as_slice)
    }
}

pub(crate) fn normalize_server(value: &str) -> String {
    let value = value.trim();
    value.strip_suffix('.').unwrap_or(value).to_lowercase()
}

/// The validated daemon configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The store's URL: `sqlite:/abs/path.db` (relative paths resolved against the config file's
    /// directory) or `postgres://…`.
    pub database: String,
    /// Where the status page and JSON API listen (default `127.0.0.1:8640`).
    pub listen: SocketAddr,
    /// Scheduler and lease settings.
    pub daemon: DaemonSettings,
    /// The cPanel/WHM servers, keyed by their short name (`old1`, `new3`).
    pub hosts: BTreeMap<String, HostConfig>,
    /// The DNS provider that serves the customers' zones, and the nameservers to check.
    pub dns: DnsConfig,
    /// How customer notices are sent.
    pub mail: MailConfig,
    /// Where the contract data comes from, when reconciliation is configured (`[contracts]`).
    pub contracts: Option<ContractsConfig>,
    /// Who may read the status page and API, and who may act on it (`[web]`).
    pub web: WebConfig,
    /// Where the old server's cPanel licence is cancelled (`[licence]`); `None`: nowhere.
    pub licence: Option<LicenceConfig>,
}

/// The status page's access (`[web]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebConfig {
    /// Where people reach the page (`public_url`, e.g. `https://siirto.example.fi/`): named in
    /// staff notices, and an `https://` address marks the session cookie `Secure` (TLS is
    /// ended by a reverse proxy in front of the daemon).
    pub public_url: Option<String>,
    /// The tokens that open the page and the API (`[[web.tokens]]`); none: only `/healthz` and
    /// `/readyz` answer.
    pub tokens: Vec<WebToken>,
}

/// One access token of the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct WebToken {
    /// Who holds it (named in every action taken with it: `web:NAME`).
    pub name: String,
    /// What it may do.
    pub role: WebRole,
    /// The token itself (read from `token_file` or `token_env`).
    pub token: Secret,
}

/// What a token may do on the status page and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebRole {
    /// Customer service: read everything (no secrets).
    Viewer,
    /// Also pause, resume, abort, retry, roll back and assign an IP.
    Operator,
}

impl WebRole {
    /// The role's name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            WebRole::Viewer => "viewer",
            WebRole::Operator => "operator",
        }
    }
}

/// How the daemon takes and holds work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// The lease owner name of this replica; `None` lets the daemon use the host's name.
    pub owner: Option<String>,
    /// How long a claimed job's lease lasts without a renewal before another replica may take
    /// it over (the holder renews it every third of this while its step runs).
    pub lease: Duration,
    /// How often an idle daemon looks for due work.
    pub idle_poll: Duration,
    /// How long a stopping daemon (SIGTERM, SIGINT) lets its steps in flight finish before it
    /// cancels them and gives their jobs back.
    pub stop_timeout: Duration,
    /// Where the daemon keeps the lock file of its owner name (`siirto-daemon-OWNER.lock`), so
    /// two daemons of one name cannot run on this host (default: the config file's directory).
    pub lock_dir: PathBuf,
}

/// How the WHM server's TLS certificate is checked. Verification is never switched off:
/// either the certificate chains to a public root (the default), or it is the one pinned
/// certificate (cPanel hosts often run a self-signed certificate on port 2087).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// Verify against the web PKI roots and the host name.
    #[default]
    WebPki,
    /// Accept exactly the certificate whose DER encoding has this SHA-256 digest.
    PinSha256([u8; 32]),
}

/// BIND's default `max-records-per-type` (since 9.18.28 / 9.20): an UPDATE that would make an
/// rrset bigger fails with SERVFAIL, which looks exactly like a server in trouble.
pub const DEFAULT_MAX_RECORDS_PER_TYPE: usize = 100;

/// The HMAC a TSIG key uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TsigAlgorithm {
    /// `hmac-sha256`, what `tsig-keygen` makes by default.
    #[default]
    HmacSha256,
    /// `hmac-sha512`.
    HmacSha512,
}

impl TsigAlgorithm {
    /// Parses the algorithm's name as BIND writes it (`hmac-sha256`, `hmac-sha512`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Self::HmacSha256),
            "hmac-sha512" => Some(Self::HmacSha512),
            _ => None,
        }
    }

    /// The name as BIND writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::HmacSha512 => "hmac-sha512",
        }
    }
}

/// A TSIG key shared with the server.
#[derive(Debug, Clone, PartialEq)]
pub struct TsigKey {
    /// The key's name as the server knows it (`siirto-key`, `siirto.example.fi.`).
    pub name: String,
    /// Its HMAC algorithm.
    pub algorithm: TsigAlgorithm,
    /// The secret, base64 as `tsig-keygen` writes it.
    pub secret: Secret,
}

/// Where and as whom to connect, and which server key to trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    /// `host:port` of the SSH server.
    pub address: String,
    /// The remote user to log in as (usually `root` on a cPanel host).
    pub user: String,
    /// Path of the client's private key, OpenSSH format, not passphrase-protected.
    pub key_file: PathBuf,
    /// The pinned server public key as an OpenSSH line, e.g. `ssh-ed25519 AAAA... comment`
    /// (the comment is optional and ignored).
    pub host_key: String,
}

/// One cPanel/WHM server.
#[derive(Debug, Clone, PartialEq)]
pub struct HostConfig {
    /// The short name the host is known by in the config and on the command line.
    pub name: String,
    /// WHM API base URL, e.g. `https://old1.example.net:2087`.
    pub whm_url: reqwest::Url,
    /// The WHM API token (read from `token_file` or `token_env`).
    pub token: Secret,
    /// How the WHM certificate is verified: web PKI, or pinned by SHA-256.
    pub tls: TlsPolicy,
    /// The host's public name (`hostname`, default the WHM URL's host when that is a name):
    /// what customers are told to use in their mail programs, and what MX and CNAME records
    /// naming the host are. `None` when neither gives a name (a WHM URL by address).
    pub hostname: Option<DomainName>,
    /// The address the domains' A records point at when they are served by this host.
    pub ip: Ipv4Addr,
    /// Its IPv6 address, if it has one: AAAA records (and SPF `ip6:`) at it move like A records.
    pub ipv6: Option<Ipv6Addr>,
    /// The port the host's web server answers plain HTTP on (for verification; default 80).
    pub http_port: u16,
    /// The port the host's web server answers HTTPS on (for verification; default 443).
    pub https_port: u16,
    /// SSH access as root, when configured.
    pub ssh: Option<SshConfig>,
}

impl HostConfig {
    /// The name customers know the host by: its host name, else its address.
    pub fn public_name(&self) -> String {
        self.hostname.as_ref().map_or_else(|| self.ip.to_string(), ToString::to_string)
    }
}

/// SSH access to a host, with its host key pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// `host:port` (port 22 when the config gave none).
    pub address: String,
    /// The remote user (default `root`).
    pub user: String,
    /// The private key file (resolved against the config file's directory).
    pub key_file: PathBuf,
    /// The host's public key as an OpenSSH line (`ssh-ed25519 AAAA… comment`); anything else is refused.
    pub host_key: String,
    /// Where the accounts' home directories are on this host (`/home`: cPanel's default
    /// partition; an account lives in `<home_root>/<user>`).
    pub home_root: RemotePath,
    /// This host's exim main log (`/var/log/exim_mainlog` on cPanel).
    pub mail_log: RemotePath,
    /// The directory of this host's per-site web access logs (`/usr/local/apache/domlogs` on
    /// cPanel: `<domain>` and `<domain>-ssl_log`), read by the decommission's traffic gate.
    pub web_logs: RemotePath,
    /// The command (an argument vector, never a shell string) that powers this host off, run
    /// over SSH by the decommission's power-off stage (`systemctl poweroff` by default).
    pub power_off: Vec<String>,
    /// For the final delta sync pulled by this host from another: the private key file, on
    /// this host, that `ssh` uses to log in to the other host; `None` when this host never pulls.
    pub pull_key_file: Option<RemotePath>,
    /// The known_hosts file, on this host, that pins the other host's key for that `ssh`
    /// (`StrictHostKeyChecking=yes`); present exactly when `pull_key_file` is.
    pub pull_known_hosts: Option<RemotePath>,
}

impl SshConfig {
    /// The login these settings describe, for `crate::ssh::SshSession::connect`.
    pub fn login(&self) -> SshTarget {
        SshTarget {
            address: self.address.clone(),
            user: self.user.clone(),
            key_file: self.key_file.clone(),
            host_key: self.host_key.clone(),
        }
    }
}

/// An absolute path on a remote host, validated so that it can go into a remote command line
/// and into rsync's `-e` option as one word: letters, digits and `/._-+@:`, no `..` component,
/// no whitespace, quotes or shell metacharacters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemotePath(String);

impl RemotePath {
    /// Validates `value` (without a trailing slash, except for `/` itself).
    pub fn parse(value: &str) -> Result<RemotePath, String> {
        let ok_chars = value.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+@:".contains(&b));
        if !value.starts_with('/') {
            return Err(format!("expected an absolute path starting with '/', got {value:?}"));
        }
        if !ok_chars || value.len() > 1024 {
            return Err(format!(
                "expected a path of letters, digits and / . _ - + @ : (no spaces or quotes), got {value:?}"
            ));
        }
        if value.split('/').any(|part| part == "..") {
            return Err(format!("expected a path without '..', got {value:?}"));
        }
        let trimmed = value.trim_end_matches('/');
        Ok(RemotePath(if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() }))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self/part`, for a part already validated as one path component (a cPanel user name,
    /// `mail`, `public_html`).
    pub fn join(&self, part: &str) -> String {
        if self.0 == "/" { format!("/{part}") } else { format!("{}/{part}", self.0) }
    }
}

impl std::fmt::Display for RemotePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The DNS side: where zones are changed and which servers are asked.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// The provider that changes the zones.
    pub provider: DnsProviderConfig,
    /// The authoritative nameservers asked to verify changes (port 53 unless given).
    pub nameservers: Vec<SocketAddr>,
    /// How many zone writes may be in flight at once (1 for a sqlite-backed PowerDNS).
    pub write_concurrency: u32,
    /// The company's own nameserver host names (`ns1.example.fi`): a domain delegated to
    /// exactly these is ours to repoint. Empty when not configured.
    pub own_nameservers: Vec<crate::names::DomainName>,
    /// The recursive resolvers that DNS classification and propagation checks ask, in order:
    /// public DNS as the world sees it. Required by `siirto plan`; no default (our own
    /// nameservers answer from any zone they keep, even one delegated elsewhere).
    pub resolvers: Vec<SocketAddr>,
    /// MX host names of external spam filters the company uses; a name also matches every
    /// host below it (`filter.example.net` matches `mx1.filter.example.net`).
    pub spam_filters: Vec<crate::names::DomainName>,
    /// How long classification waits for one resolver to answer one query (default 2 s).
    pub query_timeout: Duration,
    /// How many domains are classified at once (default 32).
    pub classify_concurrency: u32,
}

/// A DNS provider with its credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsProviderConfig {
    /// PowerDNS Authoritative through its HTTP API.
    PowerDns {
        /// API base URL, e.g. `http://127.0.0.1:8081/`: the config may say it with or without
        /// the API's `/api/v1` path; it is held without (see [`powerdns_base_url`]).
        api_url: reqwest::Url,
        /// The `X-API-Key` value.
        api_key: Secret,
        /// The server id in API paths (default `localhost`).
        server_id: String,
        /// When set, zones are read by AXFR from this address (PowerDNS's DNS port) instead of
        /// `GET zones/{zone}`; writes still go through the API.
        axfr_server: Option<SocketAddr>,
    },
    /// A primary nameserver taking RFC 2136 dynamic updates and zone transfers signed with TSIG
    /// (BIND, Knot, PowerDNS).
    Rfc2136 {
        /// The primary's address (`ip:port`; port 53 when only the ip is given).
        server: SocketAddr,
        /// The TSIG key (name, algorithm, base64 secret).
        tsig: TsigKey,
        /// The zones it serves for us (RFC 2136 has no zone listing).
        zones: Vec<crate::names::DomainName>,
        /// The largest rrset the server accepts (BIND's `max-records-per-type`, default 100;
        /// 0 means no limit): a bigger one is refused before it is sent.
        max_records_per_type: usize,
    },
}

/// The languages notices are shipped in (`playbooks/templates/<language>/`).
pub const LANGUAGES: [&str; 2] = ["en", "fi"];

/// How notices are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct MailConfig {
    /// The From mailbox, e.g. `Example Hosting <support@example.fi>` (validated).
    pub from: String,
    /// The channel that carries them.
    pub channel: MailChannelConfig,
    /// The language of a customer's notices when the contracts give none (`language`, one of
    /// `playbook::LANGUAGES`; default `en`).
    pub language: String,
    /// Customer service (`staff`): told the day before the cutover what moves, who must act
    /// themselves, and where to watch. Empty: nobody.
    pub staff: Vec<String>,
    /// Operators (`operators`): told when an account is held, with the reason. Empty: nobody.
    pub operators: Vec<String>,
    /// At most this many notices a second through the channel (`max_per_second`), counted
    /// across every daemon on the database; `None`: no limit.
    pub max_per_second: Option<u32>,
    /// Where delivery-status notifications come back (`bounce_address`, `bounce_maildir`):
    /// `None` when the config names none.
    pub bounces: Option<BounceConfig>,
}

/// Bounce handling: each notice is sent with the return path `<local>+<notice id>@<domain>`
/// (VERP), and the delivery-status notifications arriving for it are read from a Maildir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceConfig {
    /// The bounce address's local part (`bounces` of `bounces@example.fi`).
    pub local: String,
    /// Its domain.
    pub domain: String,
    /// The Maildir the mail server delivers that address's mail to (`new/` is read, each read
    /// message moved to `cur/`).
    pub maildir: std::path::PathBuf,
}

impl BounceConfig {
    /// The return path of notice `id`: `<local>+<id>@<domain>`.
    pub fn return_path(&self, id: i64) -> String {
        format!("{}+{id}@{}", self.local, self.domain)
    }

    /// The notice id a bounce was addressed to, from its recipient address (`bounces+42@…`),
    /// `None` for any other address.
    pub fn notice_of(&self, address: &str) -> Option<i64> {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        let (local, domain) = address.rsplit_once('@')?;
        let id = local.strip_prefix(&self.local)?.strip_prefix('+')?;
        (domain.eq_ignore_ascii_case(&self.domain) && id.bytes().all(|b| b.is_ascii_digit()))
            .then(|| id.parse().ok())
            .flatten()
    }
}

/// A notice channel.
#[derive(Debug, Clone, PartialEq)]
pub enum MailChannelConfig {
    /// An SMTP submission server.
    Smtp {
        /// Server host name or address.
        host: String,
        /// Port (default 587 for STARTTLS, 465 for TLS, 25 without).
        port: u16,
        /// Transport security.
        security: SmtpSecurity,
        /// Login name, when the server wants authentication.
        username: Option<String>,
        /// Login password (present exactly when `username` is).
        password: Option<Secret>,
    },
    /// One `.eml` file per notice in a directory (the demo, or a pickup directory).
    Directory {
        /// The directory (resolved against the config file's directory).
        path: PathBuf,
    },
    /// A signed JSON POST per notice to a ticket system (see `notify::WebhookChannel`).
    Webhook {
        /// Where to post: `https://`, or `http://` to a loopback address only.
        url: reqwest::Url,
        /// The shared secret the body is signed with (HMAC-SHA256).
        secret: Secret,
    },
}

/// SMTP transport security: the channel's own type, so the config and the channel cannot drift.
/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server lacks it.
    #[default]
    Starttls,
    /// Implicit TLS from the first byte (port 465).
    Tls,
    /// No encryption (a local relay or a test server on loopback).
    None,
}

// ---------------------------------------------------------------------------------------------
// Loading (the checks are in `parse`).

impl Config {
    /// Reads and validates a config file; relative paths in it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            origin: origin.clone(),
            position: None,
            field: String::new(),
            message: format!("cannot read the config file: {err}"),
        })?;
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let base_dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        Config::parse(&text, &origin, &base_dir)
    }

    /// Validates config text. `origin` names it in errors; relative paths are resolved against
    /// `base_dir`. The only filesystem access is reading the secret files it names.
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        parse_with_env(text, origin, base_dir, &|name| std::env::var(name).ok())
    }
}

/// The commented example config that `siirto config example` prints; a test loads it.
pub const EXAMPLE: &str = include_str!("example.toml");

#[cfg(test)]
mod tests {
    use super::parse::normalize_ssh_address;
    use super::*;

    /// Writes the secret files the example names into a fresh directory.
    fn example_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).expect("secrets dir");
        for (name, value) in [
            ("old1.token", "OLD1TOKENVALUE\n"),
            ("new1.token", "NEW1TOKENVALUE"),
            ("pdns.key", "PDNSKEYVALUE"),
            ("tsig.key", "c2lpcnRvIHRlc3Qgc2VjcmV0\n"),
            ("smtp.password", "SMTPPASSWORDVALUE"),
            ("webhook.secret", "WEBHOOKSECRETVALUE\n"),
            ("manage2.password", "MANAGE2PASSWORDVALUE\n"),
            ("id_ed25519", "not really a key"),
            ("web-cs.token", "customer-service-token-0123\n"),
            ("web-ops.token", "operator-token-from-file-0123"),
        ] {
            std::fs::write(secrets.join(name), value).expect("write secret");
        }
        dir
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn web_tokens_are_read_with_their_roles_and_bad_ones_refused_at_their_place() {
        let dir = example_dir();
        let config = parse_with_env(EXAMPLE, "example.toml", dir.path(), &no_env).expect("example");
        let tokens: Vec<(&str, WebRole, &str)> =
            config.web.tokens.iter().map(|t| (t.name.as_str(), t.role, t.token.expose())).collect();
        assert_eq!(
            tokens,
            [
                ("asiakaspalvelu", WebRole::Viewer, "customer-service-token-0123"),
                ("yllapito", WebRole::Operator, "operator-token-from-file-0123"),
            ]
        );
        assert_eq!(config.web.public_url.as_deref(), Some("https://siirto.example.fi/"));
        let cases = [
            (
                "role = \"viewer\"\ntoken_file",
                "role = \"admin\"\ntoken_file",
                "web.tokens[0].role: expected \"viewer\" or \"operator\"",
            ),
            (
                "token_file = \"secrets/web-cs.token\"",
                "token = \"inline\"",
                "web.tokens[0].token: secrets are not written in the config",
            ),
            (
                "name = \"yllapito\"",
                "name = \"asiakaspalvelu\"",
                "web.tokens[1].name: \"asiakaspalvelu\" is named twice",
            ),
            (
                "public_url = \"https://siirto.example.fi/\"",
                "public_url = \"siirto.example.fi\"",
                "web.public_url: expected an http:// or https:// address",
            ),
        ];
        for (from, to, expected) in cases {
            let text = EXAMPLE.replacen(from, to, 1);
            assert_ne!(text, EXAMPLE, "{from}");
            let err = parse_with_env(&text, "example.toml", dir.path(), &no_env).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err}");
            assert!(err.to_string().starts_with("example.toml:"), "file and line: {err}");
        }
        std::fs::write(dir.path().join("secrets/web-cs.token"), "short").expect("write");
        let err = parse_with_env(EXAMPLE, "example.toml", dir.path(), &no_env).expect_err("short");
        assert!(err.to_string().contains("at least 16 characters"), "{err}");
    }

    #[test]
    fn example_config_loads() {
        let dir = example_dir();
        let config = parse_with_env(EXAMPLE, "example.toml", dir.path(), &no_env).expect("example");
        assert_eq!(config.database, format!("sqlite:{}", dir.path().join("siirto.db").display()));
        assert_eq!(config.listen, "127.0.0.1:8640".parse().expect("addr"));
        assert_eq!(config.daemon.lease, Duration::from_secs(60));
        let old = &config.hosts["old1"];
        assert_eq!(old.token.expose(), "OLD1TOKENVALUE");
        let token_origin = format!("token_file ({})", dir.path().join("secrets/old1.token").display());
        assert_eq!(old.token.origin(), Some(token_origin.as_str()));
        assert_eq!(old.ip, Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(old.ipv6, Some("2001:db8:100::10".parse().expect("v6")));
        assert_eq!(config.hosts["new1"].ipv6, None, "optional");
        assert_eq!(old.tls, TlsPolicy::WebPki);
        let ssh = old.ssh.as_ref().expect("ssh");
        assert_eq!(ssh.user, "root");
        assert_eq!(ssh.key_file, dir.path().join("secrets/id_ed25519"));
        assert_eq!(config.hosts["new1"].http_port, 80);
        assert_eq!(ssh.home_root.as_str(), "/home");
        assert_eq!(ssh.mail_log.as_str(), "/var/log/exim_mainlog");
        assert_eq!(ssh.pull_key_file, None);
        let new_ssh = config.hosts["new1"].ssh.as_ref().expect("new1 ssh");
        assert_eq!(
            new_ssh.pull_key_file.as_ref().map(RemotePath::as_str),
            Some("/root/.ssh/siirto_pull_ed25519")
        );
        assert_eq!(
            new_ssh.pull_known_hosts.as_ref().map(RemotePath::as_str),
            Some("/root/.ssh/siirto_known_hosts")
        );
        let DnsProviderConfig::PowerDns { api_key, server_id, axfr_server, .. } = &config.dns.provider else {
            panic!("expected powerdns, got {:?}", config.dns.provider);
        };
        assert_eq!(api_key.expose(), "PDNSKEYVALUE");
        let key_origin = format!("api_key_file ({})", dir.path().join("secrets/pdns.key").display());
        assert_eq!(api_key.origin(), Some(key_origin.as_str()));
        assert_eq!(server_id, "localhost");
        assert_eq!(*axfr_server, None, "zones are read through the API unless asked");
        assert_eq!(
            config.dns.nameservers,
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().expect("addr"),
                "192.0.2.54:53".parse().expect("addr")
            ]
        );
        assert_eq!(config.dns.write_concurrency, 1);
        let names =
            |names: &[crate::names::DomainName]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&config.dns.own_nameservers), ["ns1.example.fi", "ns2.example.fi"]);
        assert_eq!(names(&config.dns.spam_filters), ["filter.example.net"]);
        assert_eq!(
            config.dns.resolvers,
            vec!["1.1.1.1:53".parse::<SocketAddr>().expect("addr"), "9.9.9.9:53".parse().expect("addr")]
        );
        assert_eq!(config.dns.query_timeout, Duration::from_secs(2));
        assert_eq!(config.dns.classify_concurrency, 32);
        match &config.mail.channel {
            MailChannelConfig::Smtp { port, security, password, .. } => {
                assert_eq!(*port, 587);
                assert_eq!(*security, SmtpSecurity::Starttls);
                assert_eq!(password.as_ref().map(Secret::expose), Some("SMTPPASSWORDVALUE"));
            }
            other => panic!("expected smtp, got {other:?}"),
        }
    }

    #[test]
    fn example_contracts_section() {
        let dir = example_dir();
        let config = parse_with_env(EXAMPLE, "example.toml", dir.path(), &no_env).expect("example");
        let contracts = config.contracts.expect("contracts");
        assert_eq!(
            contracts.source,
            ContractSource::Csv { path: dir.path().join("contracts.csv"), delimiter: None }
        );
        assert_eq!(contracts.server_names.host_of("CP1"), Some("old1"));
        assert_eq!(contracts.server_names.host_of("old1"), Some("old1"));
        assert_eq!(contracts.server_names.host_of("new1.example.fi"), Some("new1"));
        assert_eq!(contracts.server_names.host_of("old9.example.fi"), None);
        assert_eq!(contracts.fields.customer_id, "asiakasnro");
        assert_eq!(contracts.fields.service, "service");
        assert!(parse_with_env(MINIMAL, "m.toml", dir.path(), &no_env).expect("minimal").contracts.is_none());
    }

    #[test]
    fn contracts_over_http_and_broken_contract_tables() {
        let dir = example_dir();
        let http = format!(
            "{MINIMAL}\n[contracts]\nsource = \"http\"\nurl = \"https://c.example.fi/api\"\ntoken_env = \"C_TOKEN\"\n"
        );
        let env = |name: &str| (name == "C_TOKEN").then(|| "ctoken".to_owned());
        let config = parse_with_env(&http, "c.toml", dir.path(), &env).expect("http");
        let Some(ContractsConfig { source: ContractSource::Http { url, token }, .. }) = config.contracts
        else {
            panic!("expected an http source");
        };
        assert_eq!(url.as_str(), "https://c.example.fi/api");
        assert_eq!(token.as_ref().map(Secret::expose), Some("ctoken"));

        // MINIMAL has 17 lines and a blank follows: [contracts] is line 19, its first key line 20.
        let base = "\n[contracts]\nsource = \"csv\"\npath = \"c.csv\"\n";
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "unknown source",
                base.replace("\"csv\"", "\"ftp\""),
                "20:10: contracts.source: expected one of \"csv\", \"http\"",
            ),
            (
                "csv without path",
                base.replace("path = \"c.csv\"\n", ""),
                "20:10: contracts.path: expected path",
            ),
            (
                "bad delimiter",
                format!("{base}delimiter = \"|\"\n"),
                "22:13: contracts.delimiter: expected \",\" or \";\"",
            ),
            (
                "url with csv",
                format!("{base}url = \"https://x.example\"\n"),
                "22:7: contracts.url: expected no url with source = \"csv\"",
            ),
            (
                "inline token",
                "\n[contracts]\nsource = \"http\"\nurl = \"https://x.example\"\ntoken = \"t\"\n".to_owned(),
                "22:9: contracts.token: secrets are not written in the config",
            ),
            (
                "http bad url",
                "\n[contracts]\nsource = \"http\"\nurl = \"ftp://x\"\n".to_owned(),
                "21:7: contracts.url: expected an http:// or https:// URL",
            ),
            (
                "unknown host",
                format!("{base}server_names = {{ old9 = [\"old9.example.fi\"] }}\n"),
                "22:25: contracts.server_names.old9: expected a host defined under [hosts] (old1)",
            ),
            (
                "bad spelling",
                format!("{base}server_names = {{ old1 = [\"cp1\", \"a b\"] }}\n"),
                "22:33: contracts.server_names.old1[1]: expected a server name",
            ),
            (
                "empty field",
                format!("{base}[contracts.fields]\nname = \" \"\n"),
                "23:8: contracts.fields.name: expected the source column",
            ),
            (
                "unknown field",
                format!("{base}[contracts.fields]\nphone = \"p\"\n"),
                "23:1: contracts.fields.phone: unknown field",
            ),
        ];
        let mut failures = Vec::new();
        for (what, table, expected) in cases {
            let text = format!("{MINIMAL}{table}");
            match parse_with_env(&text, "c.toml", dir.path(), &no_env) {
                Ok(_) => failures.push(format!("{what}: accepted")),
                Err(err) if !err.to_string().starts_with(&format!("c.toml:{expected}")) => {
                    failures.push(format!("{what}: expected c.toml:{expected}…\n got {err}"));
                }
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn load_resolves_paths_against_the_config_directory() {
        let dir = example_dir();
        let path = dir.path().join("siirto.toml");
        std::fs::write(&path, EXAMPLE).expect("write config");
        let config = Config::load(&path).expect("load");
        assert_eq!(config.hosts["new1"].token.expose(), "NEW1TOKENVALUE");
        assert!(config.database.ends_with("siirto.db"));
        let missing = Config::load(&dir.path().join("nope.toml")).expect_err("missing file");
        assert!(missing.to_string().contains("cannot read the config file"), "{missing}");
    }

    #[test]
    fn debug_of_a_config_shows_no_secret() {
        let dir = example_dir();
        let config = parse_with_env(EXAMPLE, "example.toml", dir.path(), &no_env).expect("example");
        let debug = format!("{config:?}");
        for secret in ["OLD1TOKENVALUE", "NEW1TOKENVALUE", "PDNSKEYVALUE", "SMTPPASSWORDVALUE"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn secrets_from_environment_variables() {
        let dir = example_dir();
        let text = EXAMPLE
            .replace("token_file = \"secrets/old1.token\"", "token_env = \"OLD1_TOKEN\"")
            .replace("api_key_file = \"secrets/pdns.key\"", "api_key_env = \"PDNS_KEY\"");
        let env = |name: &str| match name {
            "OLD1_TOKEN" => Some("from-env-1".to_owned()),
            "PDNS_KEY" => Some(" from-env-2\n".to_owned()),
            _ => None,
        };
        let config = parse_with_env(&text, "c.toml", dir.path(), &env).expect("config");
        assert_eq!(config.hosts["old1"].token.expose(), "from-env-1");
        let DnsProviderConfig::PowerDns { api_key, .. } = &config.dns.provider else {
            panic!("expected powerdns, got {:?}", config.dns.provider);
        };
        assert_eq!(api_key.expose(), "from-env-2");
        assert_eq!(api_key.origin(), Some("api_key_env (PDNS_KEY)"));
        assert_eq!(config.hosts["old1"].token.origin(), Some("token_env (OLD1_TOKEN)"));
        let err = parse_with_env(&text, "c.toml", dir.path(), &no_env).expect_err("unset");
        assert!(
            err.to_string().contains("hosts.old1.token_env: expected the environment variable OLD1_TOKEN"),
            "{err}"
        );
    }

    /// A minimal valid config; the broken cases below each change one thing.
    const MINIMAL: &str = r#"database = "sqlite:s.db"

[hosts.old1]
whm_url = "https://old1.example.net:2087"
token_file = "secrets/old1.token"
ip = "198.51.100.10"

[dns]
provider = "powerdns"
api_url = "http://127.0.0.1:8081"
api_key_file = "secrets/pdns.key"
nameservers = ["127.0.0.1:5300"]

[mail]
from = "support@example.fi"
channel = "directory"
path = "outbox"
"#;

    #[test]
    fn a_webhook_channel_reads_its_secret_from_a_file() {
        let dir = example_dir();
        let text = MINIMAL.replace(
            "channel = \"directory\"\npath = \"outbox\"",
            "channel = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"secrets/webhook.secret\"",
        );
        let config = parse_with_env(&text, "w.toml", dir.path(), &no_env).expect("webhook");
        let MailChannelConfig::Webhook { url, secret } = &config.mail.channel else {
            panic!("{:?}", config.mail.channel);
        };
        assert_eq!(url.as_str(), "http://127.0.0.1:9/hook");
        assert_eq!(secret.expose(), "WEBHOOKSECRETVALUE");
        assert!(!format!("{config:?}").contains("WEBHOOKSECRETVALUE"));
    }

    #[test]
    fn minimal_config_takes_the_defaults() {
        let dir = example_dir();
        let config = parse_with_env(MINIMAL, "m.toml", dir.path(), &no_env).expect("minimal");
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8640)));
        assert_eq!(config.daemon.idle_poll, Duration::from_secs(1));
        assert_eq!(config.daemon.owner, None);
        assert_eq!(config.mail.channel, MailChannelConfig::Directory { path: dir.path().join("outbox") });
        assert!(config.dns.own_nameservers.is_empty() && config.dns.spam_filters.is_empty());
        assert!(config.dns.resolvers.is_empty(), "no default: {:?}", config.dns.resolvers);
        assert_eq!(config.dns.query_timeout, Duration::from_secs(2));
        assert_eq!(config.dns.classify_concurrency, 32);
        // The public name defaults to the WHM URL's host…
        assert_eq!(config.hosts["old1"].public_name(), "old1.example.net");
        // …given, it wins (WHM reached by an internal name or by address)…
        let text = MINIMAL.replacen(
            "ip = \"198.51.100.10\"",
            "ip = \"198.51.100.10\"\nhostname = \"Cpanel1.Example.FI.\"",
            1,
        );
        let config = parse_with_env(&text, "m.toml", dir.path(), &no_env).expect("hostname");
        assert_eq!(config.hosts["old1"].public_name(), "cpanel1.example.fi");
        // …and a WHM URL by address with no hostname leaves the address.
        let text = MINIMAL.replacen("https://old1.example.net:2087", "https://198.51.100.10:2087", 1);
        let config = parse_with_env(&text, "m.toml", dir.path(), &no_env).expect("by address");
        assert_eq!(config.hosts["old1"].hostname, None);
        assert_eq!(config.hosts["old1"].public_name(), "198.51.100.10");
    }

    #[test]
    fn broken_configs_name_line_column_and_field() {
        let pin_ok = "a".repeat(64);
        // (what, replace this, with this, expected error text after "c.toml:")
        let cases: Vec<(&str, &str, String, &str)> = vec![
            (
                "syntax error",
                "ip = \"198.51.100.10\"",
                "ip = \"198.51.100.10".to_owned(),
                "6:20: invalid basic string",
            ),
            (
                "unknown field",
                "ip = \"198.51.100.10\"",
                "ip = \"198.51.100.10\"\nipp = 1".to_owned(),
                "7:1: hosts.old1.ipp: unknown field, expected one of `whm_url`",
            ),
            (
                "wrong type",
                "nameservers = [\"127.0.0.1:5300\"]",
                "nameservers = \"127.0.0.1\"".to_owned(),
                "12:15: dns.nameservers: invalid type: string \"127.0.0.1\", expected a sequence",
            ),
            (
                "https port out of range",
                "ip = \"198.51.100.10\"",
                "ip = \"198.51.100.10\"\nhttps_port = 70000".to_owned(),
                "7:14: hosts.old1.https_port: expected a port",
            ),
            (
                "missing field",
                "ip = \"198.51.100.10\"",
                String::new(),
                "3:1: hosts.old1.ip: expected this required field, but it is missing",
            ),
            (
                "bad duration",
                "database = \"sqlite:s.db\"",
                "database = \"sqlite:s.db\"\n[daemon]\nlease = \"60 secs please\"".to_owned(),
                "3:9: daemon.lease: expected a duration like \"90s\"",
            ),
            (
                "bad synchronous",
                "database = \"sqlite:s.db\"",
                "database = \"sqlite:s.db?synchronous=off\"".to_owned(),
                "1:12: database: expected synchronous=full (the default) or synchronous=normal, got \"off\"",
            ),
            (
                "inline token",
                "token_file = \"secrets/old1.token\"",
                "token = \"abc\"".to_owned(),
                "5:9: hosts.old1.token: secrets are not written in the config: use token_file",
            ),
            (
                "missing token file",
                "secrets/old1.token",
                "secrets/nope.token".to_owned(),
                "5:14: hosts.old1.token_file: expected a readable file, cannot read",
            ),
            (
                "no token at all",
                "token_file = \"secrets/old1.token\"",
                String::new(),
                "3:1: hosts.old1.token_file: expected token_file or token_env, but neither is set",
            ),
            (
                "bad pin",
                "ip = \"198.51.100.10\"",
                "ip = \"198.51.100.10\"\ntls_pin_sha256 = \"abc\"".to_owned(),
                "7:18: hosts.old1.tls_pin_sha256: expected the certificate's SHA-256 as 64 hex digits",
            ),
            (
                "pin on http",
                "whm_url = \"https://old1.example.net:2087\"",
                format!("whm_url = \"http://old1.example.net:2086\"\ntls_pin_sha256 = \"{pin_ok}\""),
                "5:18: hosts.old1.tls_pin_sha256: expected no certificate pin for an http:// whm_url",
            ),
            (
                "bad database URL",
                "sqlite:s.db",
                "mysql://db/siirto".to_owned(),
                "1:12: database: expected a URL starting with \"sqlite:\"",
            ),
            (
                "bad mail address",
                "support@example.fi",
                "support at example.fi".to_owned(),
                "15:8: mail.from: expected a mailbox like",
            ),
            (
                "bad whm url",
                "https://old1.example.net:2087",
                "ftp://old1.example.net".to_owned(),
                "4:11: hosts.old1.whm_url: expected an http:// or https:// URL with a host",
            ),
            (
                "bad host name",
                "[hosts.old1]",
                "[hosts.Old_1]".to_owned(),
                "3:1: hosts.Old_1: expected a short host name like a DNS label",
            ),
            (
                "bad ip",
                "198.51.100.10",
                "old1.example.net".to_owned(),
                "6:6: hosts.old1.ip: expected an IPv4 address",
            ),
            (
                "bad ipv6",
                "ip = \"198.51.100.10\"",
                "ip = \"198.51.100.10\"\nipv6 = \"198.51.100.10\"".to_owned(),
                "7:8: hosts.old1.ipv6: expected an IPv6 address",
            ),
            (
                "bad nameserver",
                "[\"127.0.0.1:5300\"]",
                "[\"127.0.0.1:5300\", \"ns1.example.net\"]".to_owned(),
                "12:34: dns.nameservers[1]: expected \"ip\" or \"ip:port\"",
            ),
            (
                "write concurrency 0",
                "nameservers = [\"127.0.0.1:5300\"]",
                "nameservers = [\"127.0.0.1:5300\"]\nwrite_concurrency = 0".to_owned(),
                "13:21: dns.write_concurrency: expected a number of concurrent zone writes of 1..=8, got 0",
            ),
            (
                "bad resolver",
                "nameservers = [\"127.0.0.1:5300\"]",
                "nameservers = [\"127.0.0.1:5300\"]\nresolvers = [\"1.1.1.1\", \"dns.google\"]".to_owned(),
                "13:25: dns.resolvers[1]: expected \"ip\" or \"ip:port\"",
            ),
            (
                "bad own nameserver",
                "nameservers = [\"127.0.0.1:5300\"]",
                "nameservers = [\"127.0.0.1:5300\"]\nown_nameservers = [\"ns1 example.fi\"]".to_owned(),
                "13:20: dns.own_nameservers[0]: expected a host name like \"ns1.example.fi\"",
            ),
            (
                "bad spam filter",
                "nameservers = [\"127.0.0.1:5300\"]",
                "nameservers = [\"127.0.0.1:5300\"]\nspam_filters = [\"ok.example.net\", \"\"]".to_owned(),
                "13:35: dns.spam_filters[1]: expected a host name",
            ),
            (
                "query timeout too short",
                "nameservers = [\"127.0.0.1:5300\"]",
                "nameservers = [\"127.0.0.1:5300\"]\nquery_timeout = \"1ms\"".to_owned(),
                "13:17: dns.query_timeout: expected a duration of 100ms..=30s",
            ),
            (
                "classify concurrency 0",
                "nameservers = [\"127.0.0.1:5300\"]",
                "nameservers = [\"127.0.0.1:5300\"]\nclassify_concurrency = 0".to_owned(),
                "13:24: dns.classify_concurrency: expected a number of domains classified at once of 1..=256, got 0",
            ),
            (
                "unknown provider",
                "provider = \"powerdns\"",
                "provider = \"bind\"".to_owned(),
                "9:12: dns.provider: expected one of \"powerdns\", \"rfc2136\", got \"bind\"",
            ),
            (
                "inline api key",
                "api_key_file = \"secrets/pdns.key\"",
                "api_key = \"k\"".to_owned(),
                "11:11: dns.api_key: secrets are not written in the config",
            ),
            (
                "smtp field on a directory channel",
                "path = \"outbox\"",
                "path = \"outbox\"\nport = 25".to_owned(),
                "18:8: mail.port: expected no port with channel = \"directory\"",
            ),
            (
                "an unknown notice language",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"directory\"\npath = \"outbox\"\nlanguage = \"sv\"".to_owned(),
                "18:12: mail.language: expected one of the languages notices are shipped in (en, fi), got \"sv\"",
            ),
            (
                "a staff address that is none",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"directory\"\npath = \"outbox\"\nstaff = [\"cs@example.fi\", \"asiakaspalvelu\"]".to_owned(),
                "18:27: mail.staff[1]: expected an e-mail address",
            ),
            (
                "a rate of zero",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"directory\"\npath = \"outbox\"\nmax_per_second = 0".to_owned(),
                "18:18: mail.max_per_second: expected a number of messages per second of 1..=1000, got 0",
            ),
            (
                "a bounce address with a plus",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"directory\"\npath = \"outbox\"\nbounce_address = \"b+x@example.fi\"\nbounce_maildir = \"b\""
                    .to_owned(),
                "18:18: mail.bounce_address: expected a bare address without '+'",
            ),
            (
                "a bounce address without its Maildir",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"directory\"\npath = \"outbox\"\nbounce_address = \"bounces@example.fi\"".to_owned(),
                "18:18: mail.bounce_maildir: expected bounce_address and bounce_maildir together",
            ),
            (
                "a webhook without its secret",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"webhook\"\nurl = \"https://tickets.example.fi/hook\"".to_owned(),
                "16:11: mail.secret_file: expected secret_file or secret_env, but neither is set",
            ),
            (
                "a webhook over plain http to another host",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"webhook\"\nurl = \"http://tickets.example.fi/hook\"\nsecret_file = \"secrets/webhook.secret\"".to_owned(),
                "17:7: mail.url: expected an https:// URL (http:// only to a loopback address)",
            ),
            (
                "a directory field on a webhook",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"webhook\"\nurl = \"https://t.example.fi/\"\nsecret_file = \"secrets/webhook.secret\"\npath = \"x\"".to_owned(),
                "19:8: mail.path: expected no path with channel = \"webhook\" (path is for channel = \"directory\")",
            ),
            (
                "an inline webhook secret",
                "channel = \"directory\"\npath = \"outbox\"",
                "channel = \"webhook\"\nurl = \"https://t.example.fi/\"\nsecret = \"s\"".to_owned(),
                "18:10: mail.secret: secrets are not written in the config",
            ),
            (
                "bad listen",
                "database = \"sqlite:s.db\"",
                "database = \"sqlite:s.db\"\nlisten = \"localhost\"".to_owned(),
                "2:10: listen: expected an address like \"127.0.0.1:8640\"",
            ),
            (
                "a host name that is no name",
                "ip = \"198.51.100.10\"",
                "ip = \"198.51.100.10\"\nhostname = \"old1 server\"".to_owned(),
                "7:12: hosts.old1.hostname: expected the host's public name like \"cpanel1.example.fi\"",
            ),
        ];
        let dir = example_dir();
        let mut failures = Vec::new();
        for (what, from, to, expected) in cases {
            assert!(MINIMAL.contains(from), "{what}: {from:?} not in MINIMAL");
            let text = MINIMAL.replacen(from, &to, 1);
            let err = parse_with_env(&text, "c.toml", dir.path(), &no_env).expect_err(what).to_string();
            if !err.starts_with(&format!("c.toml:{expected}")) {
                failures.push(format!("{what}: expected c.toml:{expected}…\n got {err}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn pins_and_missing_sections() {
        let dir = example_dir();
        let pin = "AB:".repeat(31) + "AB";
        let text = MINIMAL.replacen(
            "ip = \"198.51.100.10\"",
            &format!(
                "ip = \"198.51.100.10\"\ntls_pin_sha256 = \"{pin}\"\nhttp_port = 8080\nhttps_port = 8443"
            ),
            1,
        );
        let config = parse_with_env(&text, "c.toml", dir.path(), &no_env).expect("pinned");
        assert_eq!(config.hosts["old1"].tls, TlsPolicy::PinSha256([0xab; 32]));
        assert_eq!(config.hosts["old1"].http_port, 8080);
        assert_eq!(config.hosts["old1"].https_port, 8443);

        let dns_start = MINIMAL.find("[dns]").expect("dns");
        let mail_start = MINIMAL.find("[mail]").expect("mail");
        let without_dns = format!("{}{}", &MINIMAL[..dns_start], &MINIMAL[mail_start..]);
        let err =
            parse_with_env(&without_dns, "c.toml", dir.path(), &no_env).expect_err("no dns").to_string();
        assert_eq!(err, "c.toml:1:1: dns: expected this required field, but it is missing");
    }

    #[test]
    fn ssh_settings_are_validated() {
        let dir = example_dir();
        // A dotted table header may come after other tables, so appending works.
        let with_ssh = |ssh: &str| format!("{MINIMAL}\n[hosts.old1.ssh]\n{ssh}\n");
        let good = with_ssh(
            "address = \"192.0.2.1\"\nkey_file = \"secrets/id_ed25519\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMIQnkh6VSD1rq7wr8hSg3tZUPIHYUOqrP3UTeP38G7Q\"",
        );
        let config = parse_with_env(&good, "c.toml", dir.path(), &no_env).expect("ssh");
        let ssh = config.hosts["old1"].ssh.as_ref().expect("ssh");
        assert_eq!(ssh.address, "192.0.2.1:22");
        assert_eq!(ssh.user, "root");

        let bad_key = good.replace("AAAAC3NzaC1lZDI1NTE5AAAAIMIQ", "AAAAC3NzaC1lZDI1NTE5AAAAIMIQ!!");
        let err = parse_with_env(&bad_key, "c.toml", dir.path(), &no_env).expect_err("bad key");
        assert!(
            err.to_string().contains(":22:12: hosts.old1.ssh.host_key: expected the host's public key"),
            "{err}"
        );
        let no_key_file = good.replace("secrets/id_ed25519", "secrets/missing");
        let err = parse_with_env(&no_key_file, "c.toml", dir.path(), &no_env).expect_err("no key file");
        assert!(err.to_string().contains("hosts.old1.ssh.key_file: expected a private key file"), "{err}");

        // Remote paths go into commands: absolute, no spaces, quotes or '..'.
        let paths = format!("{good}home_root = \"/home2/\"\nmail_log = \"/var/log/exim_mainlog\"\n");
        let config = parse_with_env(&paths, "c.toml", dir.path(), &no_env).expect("paths");
        assert_eq!(config.hosts["old1"].ssh.as_ref().expect("ssh").home_root.as_str(), "/home2");
        let ssh = config.hosts["old1"].ssh.clone().expect("ssh");
        assert_eq!(ssh.web_logs.as_str(), "/usr/local/apache/domlogs");
        assert_eq!(ssh.power_off, ["systemctl", "poweroff"]);
        let command =
            format!("{good}power_off = [\"/sbin/shutdown\", \"-h\", \"+5\", \"retired by siirto\"]\n");
        let config = parse_with_env(&command, "c.toml", dir.path(), &no_env).expect("a power-off command");
        assert_eq!(config.hosts["old1"].ssh.as_ref().expect("ssh").power_off[3], "retired by siirto");
        for (bad, expected) in [
            ("power_off = []", "hosts.old1.ssh.power_off: expected a command as a list of 1-32 words"),
            ("power_off = [\"halt\", \"\"]", "hosts.old1.ssh.power_off: expected a command"),
            ("power_off = [\"halt\\n\"]", "hosts.old1.ssh.power_off: expected a command"),
            ("web_logs = \"logs\"", "hosts.old1.ssh.web_logs: expected an absolute path"),
            ("home_root = \"home\"", "hosts.old1.ssh.home_root: expected an absolute path"),
            ("home_root = \"/home/$(reboot)\"", "hosts.old1.ssh.home_root: expected a path of letters"),
            (
                "mail_log = \"/var/log/../../etc/shadow\"",
                "hosts.old1.ssh.mail_log: expected a path without '..'",
            ),
            ("mail_log = \"/var/log/exim mainlog\"", "hosts.old1.ssh.mail_log: expected a path of letters"),
            (
                "pull_key_file = \"/root/.ssh/k\"",
                "hosts.old1.ssh.pull_known_hosts: expected pull_known_hosts",
            ),
            ("pull_known_hosts = \"/root/.ssh/kh\"", "hosts.old1.ssh.pull_key_file: expected pull_key_file"),
        ] {
            let text = format!("{good}{bad}\n");
            let err = parse_with_env(&text, "c.toml", dir.path(), &no_env).expect_err(bad);
            assert!(err.to_string().contains(expected), "{bad}: {err}");
        }
        assert_eq!(RemotePath::parse("/").expect("root").join("u1"), "/u1");
        assert_eq!(RemotePath::parse("/home").expect("home").join("u1"), "/home/u1");
    }

    #[test]
    fn ssh_addresses_are_normalized() {
        assert_eq!(normalize_ssh_address("h.example").as_deref(), Some("h.example:22"));
        assert_eq!(normalize_ssh_address("h.example:2222").as_deref(), Some("h.example:2222"));
        assert_eq!(normalize_ssh_address("::1").as_deref(), Some("[::1]:22"));
        assert_eq!(normalize_ssh_address("[::1]:2200").as_deref(), Some("[::1]:2200"));
        assert_eq!(normalize_ssh_address("h.example:x"), None);
        assert_eq!(normalize_ssh_address("a b"), None);
    }

    /// The example with its commented RFC 2136 alternative switched on instead of PowerDNS.
    fn example_with_rfc2136() -> String {
        let keys = [
            "provider",
            "server",
            "tsig_key_name",
            "tsig_algorithm",
            "tsig_secret_file",
            "zones",
            "max_records_per_type",
        ];
        EXAMPLE
            .lines()
            .filter(|line| {
                !["provider = \"powerdns\"", "api_url = ", "api_key_file = ", "server_id = "]
                    .iter()
                    .any(|prefix| line.starts_with(prefix))
            })
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|key| rest.starts_with(&format!("{key} = "))) => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect()
    }

    #[test]
    fn example_rfc2136_alternative_loads() {
        let dir = example_dir();
        let text = example_with_rfc2136();
        let config = parse_with_env(&text, "example.toml", dir.path(), &no_env).expect("rfc2136 example");
        let DnsProviderConfig::Rfc2136 { server, tsig, zones, max_records_per_type } = &config.dns.provider
        else {
            panic!("expected rfc2136, got {:?}", config.dns.provider);
        };
        assert_eq!(*max_records_per_type, 100);
        assert_eq!(*server, "192.0.2.53:53".parse::<SocketAddr>().expect("addr"));
        assert_eq!(tsig.name, "siirto-key");
        assert_eq!(tsig.algorithm, TsigAlgorithm::HmacSha256);
        assert_eq!(tsig.secret.expose(), "c2lpcnRvIHRlc3Qgc2VjcmV0");
        assert_eq!(zones.iter().map(|z| z.as_str()).collect::<Vec<_>>(), ["example.fi", "example.com"]);
        assert_eq!(config.dns.nameservers.len(), 2);
        assert!(!format!("{config:?}").contains("c2lpcnRvIHRlc3Qgc2VjcmV0"), "the secret is redacted");
    }

    #[test]
    fn rfc2136_settings_are_validated() {
        const BASE: &str = r#"database = "sqlite:s.db"

[dns]
provider = "rfc2136"
server = "127.0.0.1:5300"
tsig_key_name = "siirto-key"
tsig_secret_file = "secrets/tsig.key"
zones = ["example.fi"]
nameservers = ["127.0.0.1:5300"]

[mail]
from = "support@example.fi"
channel = "directory"
path = "outbox"
"#;
        let dir = example_dir();
        let config = parse_with_env(BASE, "c.toml", dir.path(), &no_env).expect("base");
        let DnsProviderConfig::Rfc2136 { server, tsig, max_records_per_type, .. } = &config.dns.provider
        else {
            panic!("expected rfc2136");
        };
        assert_eq!(server.port(), 5300);
        assert_eq!(*max_records_per_type, DEFAULT_MAX_RECORDS_PER_TYPE, "the default");
        assert_eq!(tsig.algorithm, TsigAlgorithm::HmacSha256, "the default");
        let with_port_53 = parse_with_env(
            &BASE.replace("127.0.0.1:5300\"\nt", "192.0.2.53\"\nt"),
            "c.toml",
            dir.path(),
            &no_env,
        )
        .expect("ip only");
        let DnsProviderConfig::Rfc2136 { server, .. } = &with_port_53.dns.provider else { panic!() };
        assert_eq!(server.port(), 53);
        let env = |name: &str| (name == "TSIG").then(|| "c2VjcmV0".to_owned());
        let from_env = BASE.replace("tsig_secret_file = \"secrets/tsig.key\"", "tsig_secret_env = \"TSIG\"");
        let config = parse_with_env(&from_env, "c.toml", dir.path(), &env).expect("env");
        let DnsProviderConfig::Rfc2136 { tsig, .. } = &config.dns.provider else { panic!() };
        assert_eq!(tsig.secret.expose(), "c2VjcmV0");

        std::fs::write(dir.path().join("secrets/plain.key"), "not base64!").expect("write");
        let cases: Vec<(&str, &str, &str, &str)> = vec![
            (
                "no server",
                "server = \"127.0.0.1:5300\"\n",
                "",
                "4:12: dns.server: expected server for provider = \"rfc2136\"",
            ),
            (
                "bad server",
                "\"127.0.0.1:5300\"\nt",
                "\"ns1.example.net\"\nt",
                "5:10: dns.server: expected the primary's \"ip\" or \"ip:port\"",
            ),
            (
                "no key name",
                "tsig_key_name = \"siirto-key\"\n",
                "",
                "4:12: dns.tsig_key_name: expected tsig_key_name",
            ),
            (
                "bad key name",
                "\"siirto-key\"",
                "\"siirto key\"",
                "6:17: dns.tsig_key_name: expected a TSIG key name",
            ),
            (
                "bad algorithm",
                "tsig_key_name = \"siirto-key\"\n",
                "tsig_key_name = \"siirto-key\"\ntsig_algorithm = \"hmac-md5\"\n",
                "7:18: dns.tsig_algorithm: expected \"hmac-sha256\" or \"hmac-sha512\", got \"hmac-md5\"",
            ),
            (
                "no secret",
                "tsig_secret_file = \"secrets/tsig.key\"\n",
                "",
                "4:12: dns.tsig_secret_file: expected tsig_secret_file or tsig_secret_env",
            ),
            (
                "inline secret",
                "tsig_secret_file = \"secrets/tsig.key\"",
                "tsig_secret = \"c2VjcmV0\"",
                "7:15: dns.tsig_secret: secrets are not written in the config",
            ),
            (
                "not base64",
                "secrets/tsig.key",
                "secrets/plain.key",
                "7:20: dns.tsig_secret_file: expected the TSIG secret in base64",
            ),
            (
                "no zones",
                "zones = [\"example.fi\"]\n",
                "",
                "4:12: dns.zones: expected zones for provider = \"rfc2136\"",
            ),
            ("empty zones", "[\"example.fi\"]", "[]", "8:9: dns.zones: expected at least one zone"),
            (
                "negative rrset cap",
                "zones = [\"example.fi\"]\n",
                "zones = [\"example.fi\"]\nmax_records_per_type = -1\n",
                "9:24: dns.max_records_per_type: expected a record count of 0..=1000000",
            ),
            (
                "bad zone",
                "[\"example.fi\"]",
                "[\"example.fi\", \"bad zone\"]",
                "8:24: dns.zones[1]: expected a zone name",
            ),
            (
                "twice",
                "[\"example.fi\"]",
                "[\"example.fi\", \"Example.FI\"]",
                "8:24: dns.zones[1]: zone example.fi is listed twice",
            ),
            (
                "api_url with rfc2136",
                "zones = ",
                "api_url = \"http://127.0.0.1:8081\"\nzones = ",
                "8:11: dns.api_url: expected no api_url with provider = \"rfc2136\"",
            ),
            (
                "axfr_server with rfc2136",
                "zones = ",
                "axfr_server = \"127.0.0.1:53\"\nzones = ",
                "8:15: dns.axfr_server: expected no axfr_server with provider = \"rfc2136\"",
            ),
            (
                "zones with powerdns",
                "provider = \"rfc2136\"\nserver = \"127.0.0.1:5300\"\ntsig_key_name = \"siirto-key\"\ntsig_secret_file = \"secrets/tsig.key\"\n",
                "provider = \"powerdns\"\napi_url = \"http://127.0.0.1:8081\"\napi_key_file = \"secrets/pdns.key\"\n",
                "7:9: dns.zones: expected no zones with provider = \"powerdns\" (zones is for provider = \"rfc2136\")",
            ),
        ];
        let mut failures = Vec::new();
        for (what, from, to, expected) in cases {
            assert!(BASE.contains(from), "{what}: {from:?} not in BASE");
            let text = BASE.replacen(from, to, 1);
            let err = parse_with_env(&text, "c.toml", dir.path(), &no_env).expect_err(what).to_string();
            if !err.starts_with(&format!("c.toml:{expected}")) {
                failures.push(format!("{what}: expected c.toml:{expected}…\n got {err}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn powerdns_api_url_with_or_without_api_v1() {
        let dir = example_dir();
        let table: &[(&str, &str)] = &[
            ("http://127.0.0.1:8081", "http://127.0.0.1:8081/"),
            ("http://127.0.0.1:8081/", "http://127.0.0.1:8081/"),
            ("http://127.0.0.1:8081/api/v1", "http://127.0.0.1:8081/"),
            ("http://127.0.0.1:8081/api/v1/", "http://127.0.0.1:8081/"),
            ("https://dns.example.fi/pdns/api/v1", "https://dns.example.fi/pdns/"),
            ("https://dns.example.fi/pdns", "https://dns.example.fi/pdns/"),
            // Only the API's own path is dropped.
            ("https://dns.example.fi/api/v10", "https://dns.example.fi/api/v10/"),
        ];
        for (given, held) in table {
            let text = MINIMAL.replacen("http://127.0.0.1:8081", given, 1);
            let config = parse_with_env(&text, "m.toml", dir.path(), &no_env).expect(given);
            let DnsProviderConfig::PowerDns { api_url, .. } = &config.dns.provider else {
                panic!("expected powerdns, got {:?}", config.dns.provider);
            };
            assert_eq!(api_url.as_str(), *held, "{given}");
        }
    }

    #[test]
    fn powerdns_axfr_server_is_an_address() {
        const BASE: &str = r#"database = "sqlite:s.db"

[dns]
provider = "powerdns"
api_url = "http://127.0.0.1:8081"
api_key_file = "secrets/pdns.key"
axfr_server = "127.0.0.1:5300"
nameservers = ["127.0.0.1:5300"]

[mail]
from = "support@example.fi"
channel = "directory"
path = "outbox"
"#;
        let dir = example_dir();
        let axfr = |text: &str| {
            let config = parse_with_env(text, "c.toml", dir.path(), &no_env).expect("config");
            let DnsProviderConfig::PowerDns { axfr_server, .. } = config.dns.provider else {
                panic!("expected powerdns");
            };
            axfr_server
        };
        assert_eq!(axfr(BASE), Some("127.0.0.1:5300".parse().expect("addr")));
        assert_eq!(
            axfr(&BASE.replace("axfr_server = \"127.0.0.1:5300\"", "axfr_server = \"::1\"")),
            Some("[::1]:53".parse().expect("addr")),
            "port 53 when only the ip is given"
        );
        let err = parse_with_env(
            &BASE.replace("axfr_server = \"127.0.0.1:5300\"", "axfr_server = \"ns1.example.fi\""),
            "c.toml",
            dir.path(),
            &no_env,
        )
        .expect_err("a name is not an address")
        .to_string();
        assert!(
            err.starts_with("c.toml:7:15: dns.axfr_server: expected PowerDNS's \"ip\" or \"ip:port\""),
            "{err}"
        );
    }
}
