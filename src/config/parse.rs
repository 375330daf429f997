//! Validation: the raw TOML shapes (`deny_unknown_fields`, spanned) and their checks into
//! [`Config`], with every refusal a [`ConfigError`] at the value's place in the file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::names::DomainName;
use crate::secret::Secret;

use super::*;

// ---------------------------------------------------------------------------------------------
// Raw TOML shapes.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Spanned<String>,
    listen: Option<Spanned<String>>,
    daemon: Option<RawDaemon>,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<RawHost>>,
    dns: RawDns,
    mail: RawMail,
    contracts: Option<RawContracts>,
    web: Option<RawWeb>,
    licence: Option<super::licence::RawLicence>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    public_url: Option<Spanned<String>>,
    #[serde(default)]
    tokens: Vec<Spanned<RawWebToken>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebToken {
    name: Spanned<String>,
    role: Spanned<String>,
    token_file: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    /// Accepted by the parser only to be refused with a helpful message.
    token: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    owner: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    idle_poll: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<String>>,
    lock_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    whm_url: Spanned<String>,
    token_file: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    /// Accepted by the parser only to be refused with a helpful message.
    token: Option<Spanned<toml::Value>>,
    tls_pin_sha256: Option<Spanned<String>>,
    hostname: Option<Spanned<String>>,
    ip: Spanned<String>,
    ipv6: Option<Spanned<String>>,
    http_port: Option<Spanned<i64>>,
    https_port: Option<Spanned<i64>>,
    ssh: Option<RawSsh>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    address: Spanned<String>,
    user: Option<Spanned<String>>,
    key_file: Spanned<String>,
    host_key: Spanned<String>,
    home_root: Option<Spanned<String>>,
    mail_log: Option<Spanned<String>>,
    web_logs: Option<Spanned<String>>,
    power_off: Option<Spanned<Vec<String>>>,
    pull_key_file: Option<Spanned<String>>,
    pull_known_hosts: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    provider: Spanned<String>,
    api_url: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    api_key: Option<Spanned<toml::Value>>,
    server_id: Option<Spanned<String>>,
    axfr_server: Option<Spanned<String>>,
    // provider = "rfc2136"
    server: Option<Spanned<String>>,
    tsig_key_name: Option<Spanned<String>>,
    tsig_algorithm: Option<Spanned<String>>,
    tsig_secret_file: Option<Spanned<String>>,
    tsig_secret_env: Option<Spanned<String>>,
    tsig_secret: Option<Spanned<toml::Value>>,
    zones: Option<Spanned<Vec<Spanned<String>>>>,
    max_records_per_type: Option<Spanned<i64>>,
    nameservers: Spanned<Vec<Spanned<String>>>,
    write_concurrency: Option<Spanned<i64>>,
    #[serde(default)]
    own_nameservers: Vec<Spanned<String>>,
    #[serde(default)]
    resolvers: Vec<Spanned<String>>,
    #[serde(default)]
    spam_filters: Vec<Spanned<String>>,
    query_timeout: Option<Spanned<String>>,
    classify_concurrency: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMail {
    from: Spanned<String>,
    channel: Spanned<String>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    security: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password: Option<Spanned<toml::Value>>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    secret: Option<Spanned<toml::Value>>,
    language: Option<Spanned<String>>,
    #[serde(default)]
    staff: Vec<Spanned<String>>,
    #[serde(default)]
    operators: Vec<Spanned<String>>,
    max_per_second: Option<Spanned<i64>>,
    bounce_address: Option<Spanned<String>>,
    bounce_maildir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContracts {
    source: Spanned<String>,
    path: Option<Spanned<String>>,
    delimiter: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    token: Option<Spanned<toml::Value>>,
    #[serde(default)]
    server_names: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    fields: Option<RawContractFields>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContractFields {
    customer_id: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    language: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    domain: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    server: Option<Spanned<String>>,
    reseller: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Where secrets named by `*_env` come from; tests pass a map instead of the process environment.
type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn parse_with_env(
    text: &str,
    origin: &str,
    base_dir: &Path,
    env: EnvLookup<'_>,
) -> Result<Config, ConfigError> {
    let src = Source { text, origin };
    let raw: RawConfig = src.deserialize()?;
    let ctx = Ctx { src, base_dir, env };

    let database = ctx.database(&raw.database)?;
    let listen = match &raw.listen {
        Some(listen) => listen.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
            ctx.src.at(
                listen,
                "listen",
                format!("expected an address like \"127.0.0.1:8640\", got {:?}", listen.get_ref()),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 8640)),
    };
    let daemon = ctx.daemon(raw.daemon.as_ref())?;
    let mut hosts = BTreeMap::new();
    for (name, host) in &raw.hosts {
        let host = ctx.host(name, host)?;
        hosts.insert(host.name.clone(), host);
    }
    let dns = ctx.dns(&raw.dns)?;
    let mail = ctx.mail(&raw.mail)?;
    let contracts = match &raw.contracts {
        Some(contracts) => Some(ctx.contracts(contracts, &hosts)?),
        None => None,
    };
    let web = match &raw.web {
        Some(web) => ctx.web(web)?,
        None => WebConfig::default(),
    };
    let licence = raw.licence.as_ref().map(|raw| ctx.licence(raw)).transpose()?;
    Ok(Config { database, listen, daemon, hosts, dns, mail, contracts, web, licence })
}

pub(super) struct Ctx<'a> {
    pub(super) src: Source<'a>,
    base_dir: &'a Path,
    env: EnvLookup<'a>,
}

impl Ctx<'_> {
    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    fn database(&self, url: &Spanned<String>) -> Result<String, ConfigError> {
        let value = url.get_ref().trim();
        if let Some(rest) = value.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (file, query) = match rest.split_once('?') {
                Some((file, query)) => (file, Some(query)),
                None => (rest, None),
            };
            if file.is_empty() {
                return Err(self.src.at(
                    url,
                    "database",
                    "expected a SQLite file after \"sqlite:\", e.g. \"sqlite:siirto.db\"",
                ));
            }
            let synchronous = query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|pair| pair.strip_prefix("synchronous="))
                .find(|v| !v.eq_ignore_ascii_case("full") && !v.eq_ignore_ascii_case("normal"));
            if let Some(bad) = synchronous {
                return Err(self.src.at(
                    url,
                    "database",
                    format!("expected synchronous=full (the default) or synchronous=normal, got {bad:?}"),
                ));
            }
            let file =
                if file == ":memory:" { file.to_owned() } else { self.resolve(file).display().to_string() };
            return Ok(match query {
                Some(query) => format!("sqlite:{file}?{query}"),
                None => format!("sqlite:{file}"),
            });
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(value.to_owned());
        }
        Err(self.src.at(
            url,
            "database",
            format!(
                "expected a URL starting with \"sqlite:\", \"postgres://\" or \"postgresql://\", got {value:?}"
            ),
        ))
    }

    fn daemon(&self, raw: Option<&RawDaemon>) -> Result<DaemonSettings, ConfigError> {
        let Some(raw) = raw else {
            return Ok(DaemonSettings {
                owner: None,
                lease: Duration::from_secs(60),
                idle_poll: Duration::from_secs(1),
                stop_timeout: Duration::from_secs(30),
                lock_dir: self.resolve("."),
            });
        };
        let owner = match &raw.owner {
            Some(owner) => {
                let name = owner.get_ref().trim();
                let ok = !name.is_empty()
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
                if !ok {
                    return Err(self.src.at(
                        owner,
                        "daemon.owner",
                        "expected 1-64 letters, digits, '-', '_', '.' or ':'",
                    ));
                }
                Some(name.to_owned())
            }
            None => None,
        };
        let lease = self.src.duration_or(
            raw.lease.as_ref(),
            "daemon.lease",
            Duration::from_secs(60),
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?;
        let idle_poll = self.src.duration_or(
            raw.idle_poll.as_ref(),
            "daemon.idle_poll",
            Duration::from_secs(1),
            Duration::from_millis(10),
            Duration::from_secs(600),
        )?;
        if idle_poll >= lease {
            let at = raw.idle_poll.as_ref().or(raw.lease.as_ref());
            if let Some(at) = at {
                return Err(self.src.at(
                    at,
                    "daemon.idle_poll",
                    format!(
                        "expected idle_poll shorter than lease ({}), got {}",
                        humantime::format_duration(lease),
                        humantime::format_duration(idle_poll)
                    ),
                ));
            }
        }
        let stop_timeout = self.src.duration_or(
            raw.stop_timeout.as_ref(),
            "daemon.stop_timeout",
            Duration::from_secs(30),
            Duration::from_millis(0),
            Duration::from_secs(3600),
        )?;
        let lock_dir = self.resolve(raw.lock_dir.as_ref().map_or(".", |dir| dir.get_ref().trim()));
        Ok(DaemonSettings { owner, lease, idle_poll, stop_timeout, lock_dir })
    }

    fn web(&self, raw: &RawWeb) -> Result<WebConfig, ConfigError> {
        let public_url = match &raw.public_url {
            Some(url) => {
                let value = url.get_ref().trim();
                let parsed =
                    reqwest::Url::parse(value).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
                if parsed.is_none() {
                    return Err(self.src.at(
                        url,
                        "web.public_url",
                        format!("expected an http:// or https:// address, got {value:?}"),
                    ));
                }
                Some(value.to_owned())
            }
            None => None,
        };
        let mut tokens: Vec<WebToken> = Vec::new();
        for (i, spanned) in raw.tokens.iter().enumerate() {
            let prefix = format!("web.tokens[{i}]");
            let token = spanned.get_ref();
            let name = token.name.get_ref().trim();
            let ok = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
            if !ok {
                return Err(self.src.at(
                    &token.name,
                    format!("{prefix}.name"),
                    "expected 1-64 letters, digits, '-', '_', '.' or '@'",
                ));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(self.src.at(
                    &token.name,
                    format!("{prefix}.name"),
                    format!("{name:?} is named twice"),
                ));
            }
            let role = match token.role.get_ref().trim() {
                "viewer" => WebRole::Viewer,
                "operator" => WebRole::Operator,
                other => {
                    return Err(self.src.at(
                        &token.role,
                        format!("{prefix}.role"),
                        format!("expected \"viewer\" or \"operator\", got {other:?}"),
                    ));
                }
            };
            let secret = self
                .secret(
                    &prefix,
                    "token",
                    token.token_file.as_ref(),
                    token.token_env.as_ref(),
                    token.token.as_ref(),
                    Some(spanned.span()),
                )?
                .expect("a required secret");
            if secret.expose().len() < 16 {
                let at = token
                    .token_file
                    .as_ref()
                    .or(token.token_env.as_ref())
                    .map_or(spanned.span(), Spanned::span);
                return Err(self.src.error(
                    at,
                    format!("{prefix}.token"),
                    "expected a token of at least 16 characters (e.g. `openssl rand -hex 24`)",
                ));
            }
            if tokens.iter().any(|t| t.token.expose() == secret.expose()) {
                return Err(self.src.at(
                    &token.name,
                    format!("{prefix}.token"),
                    "the same token is given to two names; each person or system gets its own",
                ));
            }
            tokens.push(WebToken { name: name.to_owned(), role, token: secret });
        }
        Ok(WebConfig { public_url, tokens })
    }

    /// Reads a secret named by `X_file` or `X_env`; an inline `X` is refused.
    pub(super) fn secret(
        &self,
        prefix: &str,
        name: &str,
        file: Option<&Spanned<String>>,
        env: Option<&Spanned<String>>,
        inline: Option<&Spanned<toml::Value>>,
        required_at: Option<Range<usize>>,
    ) -> Result<Option<Secret>, ConfigError> {
        let field = |suffix: &str| join_field(prefix, &format!("{name}{suffix}"));
        if let Some(inline) = inline {
            return Err(self.src.at(
                inline,
                field(""),
                format!(
                    "secrets are not written in the config: use {name}_file = \"path\" (a file holding it) or {name}_env = \"VARIABLE\""
                ),
            ));
        }
        match (file, env) {
            (Some(file), Some(_)) => Err(self.src.at(
                file,
                field("_file"),
                format!("expected either {name}_file or {name}_env, not both"),
            )),
            (Some(file), None) => {
                let path = self.resolve(file.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    self.src.at(
                        file,
                        field("_file"),
                        format!("expected a readable file, cannot read {}: {err}", path.display()),
                    )
                })?;
                let value = text.trim();
                if value.is_empty() {
                    return Err(self.src.at(
                        file,
                        field("_file"),
                        format!("expected a non-empty secret in {}", path.display()),
                    ));
                }
                Ok(Some(Secret::new(value).with_origin(format!("{name}_file ({})", path.display()))))
            }
            (None, Some(var)) => {
                let value = (self.env)(var.get_ref()).unwrap_or_default();
                let value = value.trim();
                if value.is_empty() {
                    return Err(self.src.at(
                        var,
                        field("_env"),
                        format!(
                            "expected the environment variable {} to hold the secret, but it is unset or empty",
                            var.get_ref()
                        ),
                    ));
                }
                Ok(Some(Secret::new(value).with_origin(format!("{name}_env ({})", var.get_ref()))))
            }
            (None, None) => {
                let Some(at) = required_at else {
                    return Ok(None);
                };
                Err(self.src.error(
                    at,
                    field("_file"),
                    format!("expected {name}_file or {name}_env, but neither is set"),
                ))
            }
        }
    }

    fn url(&self, value: &Spanned<String>, field: &str) -> Result<reqwest::Url, ConfigError> {
        let url = reqwest::Url::parse(value.get_ref().trim()).map_err(|err| {
            self.src.at(
                value,
                field,
                format!("expected an http:// or https:// URL, got {:?} ({err})", value.get_ref()),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.src.at(
                value,
                field,
                format!("expected an http:// or https:// URL with a host, got {:?}", value.get_ref()),
            ));
        }
        Ok(url)
    }

    fn host(&self, short: &str, raw: &Spanned<RawHost>) -> Result<HostConfig, ConfigError> {
        // Errors about the host as a whole point at its table.
        let name = raw;
        let raw = raw.get_ref();
        let prefix = format!("hosts.{short}");
        let label_ok = !short.is_empty()
            && short.len() <= 63
            && short.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !short.starts_with('-')
            && !short.ends_with('-');
        if !label_ok {
            return Err(self.src.at(
                name,
                prefix,
                "expected a short host name like a DNS label: 1-63 lowercase letters, digits or '-', not starting or ending with '-'",
            ));
        }
        let whm_url = self.url(&raw.whm_url, &format!("{prefix}.whm_url"))?;
        let token = self
            .secret(
                &prefix,
                "token",
                raw.token_file.as_ref(),
                raw.token_env.as_ref(),
                raw.token.as_ref(),
                Some(name.span()),
            )?
            .ok_or_else(|| {
                self.src.at(name, format!("{prefix}.token_file"), "expected token_file or token_env")
            })?;
        let tls = match &raw.tls_pin_sha256 {
            Some(pin) => {
                let field = format!("{prefix}.tls_pin_sha256");
                if whm_url.scheme() != "https" {
                    return Err(self.src.at(
                        pin,
                        field,
                        "expected no certificate pin for an http:// whm_url (there is no certificate to pin)",
                    ));
                }
                let hex_digits: String = pin.get_ref().chars().filter(|c| *c != ':').collect();
                let mut digest = [0u8; 32];
                if hex_digits.len() != 64 || hex::decode_to_slice(&hex_digits, &mut digest).is_err() {
                    return Err(self.src.at(
                        pin,
                        field,
                        format!(
                            "expected the certificate's SHA-256 as 64 hex digits (colons allowed), got {:?}",
                            pin.get_ref()
                        ),
                    ));
                }
                TlsPolicy::PinSha256(digest)
            }
            None => TlsPolicy::WebPki,
        };
        let hostname = match &raw.hostname {
            Some(value) => Some(DomainName::parse(value.get_ref().trim()).map_err(|err| {
                self.src.at(
                    value,
                    format!("{prefix}.hostname"),
                    format!("expected the host's public name like \"cpanel1.example.fi\": {err}"),
                )
            })?),
            None => whm_url
                .host_str()
                .filter(|h| !h.starts_with('[') && h.parse::<IpAddr>().is_err())
                .and_then(|h| DomainName::parse(h).ok()),
        };
        let ip = raw.ip.get_ref().trim().parse::<Ipv4Addr>().map_err(|_| {
            self.src.at(
                &raw.ip,
                format!("{prefix}.ip"),
                format!("expected an IPv4 address like \"192.0.2.10\", got {:?}", raw.ip.get_ref()),
            )
        })?;
        let ipv6 = match &raw.ipv6 {
            Some(value) => Some(value.get_ref().trim().parse::<Ipv6Addr>().map_err(|_| {
                self.src.at(
                    value,
                    format!("{prefix}.ipv6"),
                    format!("expected an IPv6 address like \"2001:db8::10\", got {:?}", value.get_ref()),
                )
            })?),
            None => None,
        };
        let http_port = match &raw.http_port {
            Some(port) => self.port(port, &format!("{prefix}.http_port"))?,
            None => 80,
        };
        let https_port = match &raw.https_port {
            Some(port) => self.port(port, &format!("{prefix}.https_port"))?,
            None => 443,
        };
        let ssh = match &raw.ssh {
            Some(ssh) => Some(self.ssh(&format!("{prefix}.ssh"), ssh)?),
            None => None,
        };
        Ok(HostConfig {
            name: short.to_owned(),
            whm_url,
            token,
            tls,
            hostname,
            ip,
            ipv6,
            http_port,
            https_port,
            ssh,
        })
    }

    fn port(&self, port: &Spanned<i64>, field: &str) -> Result<u16, ConfigError> {
        let port_number = self.src.integer(port, field, 1, 65535, "a port", "")?;
        u16::try_from(port_number).map_err(|_| self.src.at(port, field, "expected a port"))
    }

    fn ssh(&self, prefix: &str, raw: &RawSsh) -> Result<SshConfig, ConfigError> {
        let address = normalize_ssh_address(raw.address.get_ref().trim()).ok_or_else(|| {
            self.src.at(
                &raw.address,
                format!("{prefix}.address"),
                format!(
                    "expected \"host\" or \"host:port\" (e.g. \"old1.example.net:22\"), got {:?}",
                    raw.address.get_ref()
                ),
            )
        })?;
        let user = match &raw.user {
            Some(user) => {
                let name = user.get_ref().as_str();
                let ok = name.len() <= 32
                    && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
                if !ok {
                    return Err(self.src.at(
                        user,
                        format!("{prefix}.user"),
                        format!("expected a Unix user name like \"root\", got {name:?}"),
                    ));
                }
                name.to_owned()
            }
            None => "root".to_owned(),
        };
        let key_file = self.resolve(raw.key_file.get_ref());
        if !key_file.is_file() {
            return Err(self.src.at(
                &raw.key_file,
                format!("{prefix}.key_file"),
                format!("expected a private key file, but {} is not a file", key_file.display()),
            ));
        }
        let host_key_line = raw.host_key.get_ref().trim();
        if let Err(err) = russh::keys::PublicKey::from_openssh(host_key_line) {
            return Err(self.src.at(
                &raw.host_key,
                format!("{prefix}.host_key"),
                format!(
                    "expected the host's public key as an OpenSSH line (\"ssh-ed25519 AAAA…\", as in known_hosts without the host name): {err}"
                ),
            ));
        }
        let remote = |raw: Option<&Spanned<String>>, field: &str, default: &str| match raw {
            Some(value) => RemotePath::parse(value.get_ref().trim())
                .map_err(|message| self.src.at(value, format!("{prefix}.{field}"), message)),
            None => RemotePath::parse(default).map_err(|message| ConfigError {
                origin: String::new(),
                position: None,
                field: format!("{prefix}.{field}"),
                message,
            }),
        };
        let home_root = remote(raw.home_root.as_ref(), "home_root", "/home")?;
        let mail_log = remote(raw.mail_log.as_ref(), "mail_log", "/var/log/exim_mainlog")?;
        let web_logs = remote(raw.web_logs.as_ref(), "web_logs", "/usr/local/apache/domlogs")?;
        let power_off = self.src.argv(
            raw.power_off.as_ref(),
            format!("{prefix}.power_off"),
            &["systemctl", "poweroff"],
        )?;
        let (pull_key_file, pull_known_hosts) = match (&raw.pull_key_file, &raw.pull_known_hosts) {
            (Some(key), Some(known)) => (
                Some(remote(Some(key), "pull_key_file", "")?),
                Some(remote(Some(known), "pull_known_hosts", "")?),
            ),
            (None, None) => (None, None),
            (Some(key), None) => {
                return Err(self.src.at(
                    key,
                    format!("{prefix}.pull_known_hosts"),
                    "expected pull_known_hosts with pull_key_file: the other host's key must be pinned",
                ));
            }
            (None, Some(known)) => {
                return Err(self.src.at(
                    known,
                    format!("{prefix}.pull_key_file"),
                    "expected pull_key_file with pull_known_hosts",
                ));
            }
        };
        Ok(SshConfig {
            address,
            user,
            key_file,
            host_key: host_key_line.to_owned(),
            home_root,
            mail_log,
            web_logs,
            power_off,
            pull_key_file,
            pull_known_hosts,
        })
    }

    fn dns(&self, raw: &RawDns) -> Result<DnsConfig, ConfigError> {
        let provider = match raw.provider.get_ref().as_str() {
            "powerdns" => {
                let rfc2136_only = [
                    ("server", raw.server.as_ref().map(Spanned::span)),
                    ("tsig_key_name", raw.tsig_key_name.as_ref().map(Spanned::span)),
                    ("tsig_algorithm", raw.tsig_algorithm.as_ref().map(Spanned::span)),
                    ("tsig_secret_file", raw.tsig_secret_file.as_ref().map(Spanned::span)),
                    ("tsig_secret_env", raw.tsig_secret_env.as_ref().map(Spanned::span)),
                    ("tsig_secret", raw.tsig_secret.as_ref().map(Spanned::span)),
                    ("zones", raw.zones.as_ref().map(Spanned::span)),
                    ("max_records_per_type", raw.max_records_per_type.as_ref().map(Spanned::span)),
                ];
                self.no_fields_of(&rfc2136_only, "powerdns", "rfc2136")?;
                let api_url = raw.api_url.as_ref().ok_or_else(|| {
                    self.src.at(
                        &raw.provider,
                        "dns.api_url",
                        "expected api_url for provider = \"powerdns\", e.g. \"http://127.0.0.1:8081\"",
                    )
                })?;
                let api_url = powerdns_base_url(&self.url(api_url, "dns.api_url")?);
                let api_key = self
                    .secret(
                        "dns",
                        "api_key",
                        raw.api_key_file.as_ref(),
                        raw.api_key_env.as_ref(),
                        raw.api_key.as_ref(),
                        Some(raw.provider.span()),
                    )?
                    .ok_or_else(|| {
                        self.src.at(&raw.provider, "dns.api_key_file", "expected api_key_file or api_key_env")
                    })?;
                let server_id = match &raw.server_id {
                    Some(id) => {
                        let value = id.get_ref().as_str();
                        let ok = !value.is_empty()
                            && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                        if !ok {
                            return Err(self.src.at(
                                id,
                                "dns.server_id",
                                format!("expected a PowerDNS server id like \"localhost\", got {value:?}"),
                            ));
                        }
                        value.to_owned()
                    }
                    None => "localhost".to_owned(),
                };
                let axfr_server = match &raw.axfr_server {
                    Some(server) => Some(self.dns_server_address(server, "dns.axfr_server", "PowerDNS's")?),
                    None => None,
                };
                DnsProviderConfig::PowerDns { api_url, api_key, server_id, axfr_server }
            }
            "rfc2136" => self.rfc2136(raw)?,
            other => {
                return Err(self.src.at(
                    &raw.provider,
                    "dns.provider",
                    format!("expected one of \"powerdns\", \"rfc2136\", got {other:?}"),
                ));
            }
        };
        if raw.nameservers.get_ref().is_empty() {
            return Err(self.src.at(
                &raw.nameservers,
                "dns.nameservers",
                "expected at least one nameserver (\"ip\" or \"ip:port\")",
            ));
        }
        let nameservers = self.socket_addrs(raw.nameservers.get_ref(), "dns.nameservers")?;
        // Above 8 in flight PowerDNS's API backlog adds a second of SYN retransmits, and a
        // sqlite-backed PowerDNS wants 1 (see reference/real-servers.md).
        let write_concurrency = self.src.count_or(
            raw.write_concurrency.as_ref(),
            "dns.write_concurrency",
            1,
            (1, 8),
            "a number of concurrent zone writes",
        )?;
        let own_nameservers = self.host_names(&raw.own_nameservers, "dns.own_nameservers")?;
        let spam_filters = self.host_names(&raw.spam_filters, "dns.spam_filters")?;
        // No default: our own nameservers would answer from any zone they keep, even one long
        // delegated elsewhere (`siirto plan` refuses to classify without resolvers).
        let resolvers = self.socket_addrs(&raw.resolvers, "dns.resolvers")?;
        let query_timeout = self.src.duration_or(
            raw.query_timeout.as_ref(),
            "dns.query_timeout",
            Duration::from_secs(2),
            Duration::from_millis(100),
            Duration::from_secs(30),
        )?;
        let classify_concurrency = self.src.count_or(
            raw.classify_concurrency.as_ref(),
            "dns.classify_concurrency",
            32,
            (1, 256),
            "a number of domains classified at once",
        )?;
        Ok(DnsConfig {
            provider,
            nameservers,
            write_concurrency,
            own_nameservers,
            resolvers,
            spam_filters,
            query_timeout,
            classify_concurrency,
        })
    }

    /// `"ip"` (port 53) or `"ip:port"` entries of a list, each refused at its own place.
    fn socket_addrs(&self, raw: &[Spanned<String>], field: &str) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut addrs = Vec::new();
        for (index, server) in raw.iter().enumerate() {
            let value = server.get_ref().trim();
            let addr = value
                .parse::<SocketAddr>()
                .ok()
                .or_else(|| value.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
                .ok_or_else(|| {
                    self.src.at(
                        server,
                        format!("{field}[{index}]"),
                        format!(
                            "expected \"ip\" or \"ip:port\" (e.g. \"192.0.2.53\" or \"127.0.0.1:5300\"), got {value:?}"
                        ),
                    )
                })?;
            addrs.push(addr);
        }
        Ok(addrs)
    }

    /// Host names of a list (`ns1.example.fi`, a trailing dot allowed), each refused at its place.
    fn host_names(
        &self,
        raw: &[Spanned<String>],
        field: &str,
    ) -> Result<Vec<crate::names::DomainName>, ConfigError> {
        let mut names = Vec::new();
        for (index, name) in raw.iter().enumerate() {
            let value = name.get_ref().trim();
            let parsed =
                crate::names::DomainName::parse(value.strip_suffix('.').unwrap_or(value)).map_err(|err| {
                    self.src.at(
                        name,
                        format!("{field}[{index}]"),
                        format!("expected a host name like \"ns1.example.fi\", got {value:?} ({err})"),
                    )
                })?;
            names.push(parsed);
        }
        Ok(names)
    }

    /// Refuses fields that belong to the other DNS provider.
    fn no_fields_of(
        &self,
        fields: &[(&str, Option<Range<usize>>)],
        provider: &str,
        owner: &str,
    ) -> Result<(), ConfigError> {
        match fields.iter().find_map(|(name, span)| span.clone().map(|span| (name, span))) {
            Some((name, span)) => Err(self.src.error(
                span,
                format!("dns.{name}"),
                format!(
                    "expected no {name} with provider = \"{provider}\" ({name} is for provider = \"{owner}\")"
                ),
            )),
            None => Ok(()),
        }
    }

    /// A nameserver's `"ip"` (port 53) or `"ip:port"`; `whose` says which in the error.
    fn dns_server_address(
        &self,
        value: &Spanned<String>,
        field: &str,
        whose: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let text = value.get_ref().trim();
        text.parse::<SocketAddr>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
            .ok_or_else(|| {
                self.src.at(
                    value,
                    field,
                    format!("expected {whose} \"ip\" or \"ip:port\" (e.g. \"192.0.2.53:53\"), got {text:?}"),
                )
            })
    }

    /// `provider = "rfc2136"`: the primary's address, the TSIG key and the zones.
    fn rfc2136(&self, raw: &RawDns) -> Result<DnsProviderConfig, ConfigError> {
        let powerdns_only = [
            ("api_url", raw.api_url.as_ref().map(Spanned::span)),
            ("api_key_file", raw.api_key_file.as_ref().map(Spanned::span)),
            ("api_key_env", raw.api_key_env.as_ref().map(Spanned::span)),
            ("api_key", raw.api_key.as_ref().map(Spanned::span)),
            ("server_id", raw.server_id.as_ref().map(Spanned::span)),
            ("axfr_server", raw.axfr_server.as_ref().map(Spanned::span)),
        ];
        self.no_fields_of(&powerdns_only, "rfc2136", "powerdns")?;
        let required = |field: &str, example: &str| {
            self.src.at(
                &raw.provider,
                format!("dns.{field}"),
                format!("expected {field} for provider = \"rfc2136\", e.g. {example}"),
            )
        };
        let server = raw.server.as_ref().ok_or_else(|| required("server", "\"192.0.2.53:53\""))?;
        let server = self.dns_server_address(server, "dns.server", "the primary's")?;
        let key_name =
            raw.tsig_key_name.as_ref().ok_or_else(|| required("tsig_key_name", "\"siirto-key\""))?;
        let name = key_name.get_ref().trim().trim_end_matches('.');
        let name_ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !name_ok {
            return Err(self.src.at(
                key_name,
                "dns.tsig_key_name",
                format!("expected a TSIG key name like \"siirto-key\" (letters, digits, '-', '_', dots), got {name:?}"),
            ));
        }
        let algorithm = match &raw.tsig_algorithm {
            Some(algorithm) => TsigAlgorithm::parse(algorithm.get_ref()).ok_or_else(|| {
                self.src.at(
                    algorithm,
                    "dns.tsig_algorithm",
                    format!("expected \"hmac-sha256\" or \"hmac-sha512\", got {:?}", algorithm.get_ref()),
                )
            })?,
            None => TsigAlgorithm::default(),
        };
        let secret = self
            .secret(
                "dns",
                "tsig_secret",
                raw.tsig_secret_file.as_ref(),
                raw.tsig_secret_env.as_ref(),
                raw.tsig_secret.as_ref(),
                Some(raw.provider.span()),
            )?
            .ok_or_else(|| required("tsig_secret_file", "\"secrets/tsig.key\""))?;
        {
            use base64::Engine as _;
            if base64::engine::general_purpose::STANDARD.decode(secret.expose()).is_err() {
                let (field, at) = match (&raw.tsig_secret_file, &raw.tsig_secret_env) {
                    (Some(file), _) => ("dns.tsig_secret_file", file.span()),
                    (None, Some(env)) => ("dns.tsig_secret_env", env.span()),
                    (None, None) => ("dns.tsig_secret_file", raw.provider.span()),
                };
                return Err(self.src.error(
                    at,
                    field,
                    "expected the TSIG secret in base64, as tsig-keygen writes it (the secret \"…\" of its key statement)",
                ));
            }
        }
        let listed = raw.zones.as_ref().ok_or_else(|| required("zones", "[\"example.fi\"]"))?;
        if listed.get_ref().is_empty() {
            return Err(self.src.at(
                listed,
                "dns.zones",
                "expected at least one zone the server serves for us",
            ));
        }
        let mut zones = Vec::new();
        for (index, zone) in listed.get_ref().iter().enumerate() {
            let name = crate::names::DomainName::parse(zone.get_ref().trim()).map_err(|err| {
                self.src.at(zone, format!("dns.zones[{index}]"), format!("expected a zone name: {err}"))
            })?;
            if zones.contains(&name) {
                return Err(self.src.at(
                    zone,
                    format!("dns.zones[{index}]"),
                    format!("zone {name} is listed twice"),
                ));
            }
            zones.push(name);
        }
        let tsig = TsigKey { name: name.to_ascii_lowercase(), algorithm, secret };
        let max_records_per_type = match &raw.max_records_per_type {
            Some(max) => self.src.integer(
                max,
                "dns.max_records_per_type",
                0,
                1_000_000,
                "a record count",
                " (the server's max-records-per-type; 0 for no limit)",
            )? as usize,
            None => DEFAULT_MAX_RECORDS_PER_TYPE,
        };
        Ok(DnsProviderConfig::Rfc2136 { server, tsig, zones, max_records_per_type })
    }

    fn mail(&self, raw: &RawMail) -> Result<MailConfig, ConfigError> {
        let from = raw.from.get_ref().trim();
        if let Err(err) = lettre::message::Mailbox::from_str(from) {
            return Err(self.src.at(
                &raw.from,
                "mail.from",
                format!(
                    "expected a mailbox like \"Example Hosting <support@example.fi>\", got {from:?} ({err})"
                ),
            ));
        }
        let smtp_only: [(&str, Option<Range<usize>>); 7] = [
            ("host", raw.host.as_ref().map(Spanned::span)),
            ("port", raw.port.as_ref().map(Spanned::span)),
            ("security", raw.security.as_ref().map(Spanned::span)),
            ("username", raw.username.as_ref().map(Spanned::span)),
            ("password_file", raw.password_file.as_ref().map(Spanned::span)),
            ("password_env", raw.password_env.as_ref().map(Spanned::span)),
            ("password", raw.password.as_ref().map(Spanned::span)),
        ];
        let webhook_only: [(&str, Option<Range<usize>>); 4] = [
            ("url", raw.url.as_ref().map(Spanned::span)),
            ("secret_file", raw.secret_file.as_ref().map(Spanned::span)),
            ("secret_env", raw.secret_env.as_ref().map(Spanned::span)),
            ("secret", raw.secret.as_ref().map(Spanned::span)),
        ];
        let path_only = [("path", raw.path.as_ref().map(Spanned::span))];
        let channel_name = raw.channel.get_ref().as_str();
        // A field of another channel is a mistake worth naming (a half-edited config).
        let refuse_others = |fields: &[(&str, Option<Range<usize>>)],
                             owner: &str|
         -> Result<(), ConfigError> {
            match fields.iter().find(|(_, span)| span.is_some()) {
                Some((name, Some(span))) => Err(self.src.error(
                    span.clone(),
                    format!("mail.{name}"),
                    format!("expected no {name} with channel = \"{channel_name}\" ({name} is for channel = \"{owner}\")"),
                )),
                _ => Ok(()),
            }
        };
        let channel = match channel_name {
            "smtp" => {
                refuse_others(&path_only, "directory")?;
                refuse_others(&webhook_only, "webhook")?;
                let host = raw.host.as_ref().ok_or_else(|| {
                    self.src.at(&raw.channel, "mail.host", "expected host for channel = \"smtp\"")
                })?;
                let host_name = host.get_ref().trim();
                if host_name.is_empty() || host_name.contains(char::is_whitespace) {
                    return Err(self.src.at(
                        host,
                        "mail.host",
                        format!("expected an SMTP server host name, got {host_name:?}"),
                    ));
                }
                let security = match raw.security.as_ref() {
                    Some(security) => match security.get_ref().as_str() {
                        "starttls" => SmtpSecurity::Starttls,
                        "tls" => SmtpSecurity::Tls,
                        "none" => SmtpSecurity::None,
                        other => {
                            return Err(self.src.at(
                                security,
                                "mail.security",
                                format!("expected one of \"starttls\", \"tls\", \"none\", got {other:?}"),
                            ));
                        }
                    },
                    None => SmtpSecurity::Starttls,
                };
                let port = match &raw.port {
                    Some(port) => self.port(port, "mail.port")?,
                    None => match security {
                        SmtpSecurity::Starttls => 587,
                        SmtpSecurity::Tls => 465,
                        SmtpSecurity::None => 25,
                    },
                };
                let password = self.secret(
                    "mail",
                    "password",
                    raw.password_file.as_ref(),
                    raw.password_env.as_ref(),
                    raw.password.as_ref(),
                    None,
                )?;
                let username = match (&raw.username, &password) {
                    (Some(user), Some(_)) => Some(user.get_ref().clone()),
                    (None, None) => None,
                    (Some(user), None) => {
                        return Err(self.src.at(
                            user,
                            "mail.password_file",
                            "expected password_file or password_env with username",
                        ));
                    }
                    (None, Some(_)) => {
                        let at = raw
                            .password_file
                            .as_ref()
                            .or(raw.password_env.as_ref())
                            .map_or(raw.channel.span(), Spanned::span);
                        return Err(self.src.error(at, "mail.username", "expected username with a password"));
                    }
                };
                MailChannelConfig::Smtp { host: host_name.to_owned(), port, security, username, password }
            }
            "directory" => {
                refuse_others(&smtp_only, "smtp")?;
                refuse_others(&webhook_only, "webhook")?;
                let path = raw.path.as_ref().ok_or_else(|| {
                    self.src.at(&raw.channel, "mail.path", "expected path for channel = \"directory\"")
                })?;
                if path.get_ref().trim().is_empty() {
                    return Err(self.src.at(path, "mail.path", "expected a directory path"));
                }
                MailChannelConfig::Directory { path: self.resolve(path.get_ref().trim()) }
            }
            "webhook" => {
                refuse_others(&smtp_only, "smtp")?;
                refuse_others(&path_only, "directory")?;
                let url = raw.url.as_ref().ok_or_else(|| {
                    self.src.at(&raw.channel, "mail.url", "expected url for channel = \"webhook\"")
                })?;
                let parsed = reqwest::Url::parse(url.get_ref().trim())
                    .map_err(|err| self.src.at(url, "mail.url", format!("expected a URL ({err})")))?;
                let loopback = parsed.host_str().is_some_and(|host| {
                    host == "localhost"
                        || host
                            .trim_matches(['[', ']'])
                            .parse::<std::net::IpAddr>()
                            .is_ok_and(|ip| ip.is_loopback())
                });
                match parsed.scheme() {
                    "https" => {}
                    "http" if loopback => {}
                    _ => {
                        return Err(self.src.at(
                            url,
                            "mail.url",
                            "expected an https:// URL (http:// only to a loopback address): notices carry customers' data",
                        ));
                    }
                }
                let secret = self.secret(
                    "mail",
                    "secret",
                    raw.secret_file.as_ref(),
                    raw.secret_env.as_ref(),
                    raw.secret.as_ref(),
                    Some(raw.channel.span()),
                )?;
                let secret = secret.ok_or_else(|| {
                    self.src.at(
                        &raw.channel,
                        "mail.secret_file",
                        "expected secret_file or secret_env for channel = \"webhook\"",
                    )
                })?;
                MailChannelConfig::Webhook { url: parsed, secret }
            }
            other => {
                return Err(self.src.at(
                    &raw.channel,
                    "mail.channel",
                    format!("expected one of \"smtp\", \"directory\", \"webhook\", got {other:?}"),
                ));
            }
        };
        let language = match &raw.language {
            Some(language) => {
                let code = language.get_ref().trim().to_ascii_lowercase();
                if !super::LANGUAGES.contains(&code.as_str()) {
                    return Err(self.src.at(
                        language,
                        "mail.language",
                        format!(
                            "expected one of the languages notices are shipped in ({}), got {:?}",
                            super::LANGUAGES.join(", "),
                            language.get_ref()
                        ),
                    ));
                }
                code
            }
            None => "en".to_owned(),
        };
        let mailboxes = |list: &[Spanned<String>], field: &str| -> Result<Vec<String>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(n, address)| {
                    let text = address.get_ref().trim();
                    match lettre::message::Mailbox::from_str(text) {
                        Ok(_) => Ok(text.to_owned()),
                        Err(err) => Err(self.src.at(
                            address,
                            format!("mail.{field}[{n}]"),
                            format!(
                                "expected an e-mail address like \"support@example.fi\", got {text:?} ({err})"
                            ),
                        )),
                    }
                })
                .collect()
        };
        let staff = mailboxes(&raw.staff, "staff")?;
        let operators = mailboxes(&raw.operators, "operators")?;
        let max_per_second = match &raw.max_per_second {
            Some(rate) => {
                let value = *rate.get_ref();
                if !(1..=1000).contains(&value) {
                    return Err(self.src.at(
                        rate,
                        "mail.max_per_second",
                        format!("expected a number of messages per second of 1..=1000, got {value}"),
                    ));
                }
                Some(value as u32)
            }
            None => None,
        };
        let bounces = match (&raw.bounce_address, &raw.bounce_maildir) {
            (None, None) => None,
            (Some(address), Some(maildir)) => {
                let text = address.get_ref().trim();
                let parts = text.split_once('@').filter(|(local, domain)| {
                    !local.is_empty()
                        && !domain.is_empty()
                        && !local.contains('+')
                        && lettre::Address::from_str(text).is_ok()
                });
                let Some((local, domain)) = parts else {
                    return Err(self.src.at(
                        address,
                        "mail.bounce_address",
                        format!(
                            "expected a bare address without '+' like \"bounces@example.fi\" (each notice is sent from bounces+<id>@…), got {text:?}"
                        ),
                    ));
                };
                if maildir.get_ref().trim().is_empty() {
                    return Err(self.src.at(maildir, "mail.bounce_maildir", "expected a Maildir path"));
                }
                Some(BounceConfig {
                    local: local.to_owned(),
                    domain: domain.to_owned(),
                    maildir: self.resolve(maildir.get_ref().trim()),
                })
            }
            (Some(field), None) | (None, Some(field)) => {
                return Err(self.src.at(
                    field,
                    if raw.bounce_address.is_some() { "mail.bounce_maildir" } else { "mail.bounce_address" },
                    "expected bounce_address and bounce_maildir together (where bounces are sent, and the Maildir they are read from)",
                ));
            }
        };
        Ok(MailConfig { from: from.to_owned(), channel, language, staff, operators, max_per_second, bounces })
    }
}

impl Ctx<'_> {
    /// `[contracts]`: the source, how contracts spell our hosts, and the field mapping.
    fn contracts(
        &self,
        raw: &RawContracts,
        hosts: &BTreeMap<String, HostConfig>,
    ) -> Result<ContractsConfig, ConfigError> {
        let not_with = |value: Option<Range<usize>>, name: &str, source: &str| match value {
            Some(span) => Err(self.src.error(
                span,
                format!("contracts.{name}"),
                format!("expected no {name} with source = \"{source}\""),
            )),
            None => Ok(()),
        };
        let source = match raw.source.get_ref().as_str() {
            "csv" => {
                not_with(raw.url.as_ref().map(Spanned::span), "url", "csv")?;
                not_with(raw.token_file.as_ref().map(Spanned::span), "token_file", "csv")?;
                not_with(raw.token_env.as_ref().map(Spanned::span), "token_env", "csv")?;
                not_with(raw.token.as_ref().map(Spanned::span), "token", "csv")?;
                let path = raw.path.as_ref().ok_or_else(|| {
                    self.src.at(
                        &raw.source,
                        "contracts.path",
                        "expected path (the CSV file) for source = \"csv\"",
                    )
                })?;
                if path.get_ref().trim().is_empty() {
                    return Err(self.src.at(path, "contracts.path", "expected the path of the CSV file"));
                }
                let delimiter = match &raw.delimiter {
                    Some(delimiter) => {
                        match delimiter.get_ref().as_str() {
                            "," => Some(b','),
                            ";" => Some(b';'),
                            other => {
                                return Err(self.src.at(
                                delimiter,
                                "contracts.delimiter",
                                format!("expected \",\" or \";\" (or no delimiter to detect it), got {other:?}"),
                            ));
                            }
                        }
                    }
                    None => None,
                };
                ContractSource::Csv { path: self.resolve(path.get_ref().trim()), delimiter }
            }
            "http" => {
                not_with(raw.path.as_ref().map(Spanned::span), "path", "http")?;
                not_with(raw.delimiter.as_ref().map(Spanned::span), "delimiter", "http")?;
                let url = raw.url.as_ref().ok_or_else(|| {
                    self.src.at(
                        &raw.source,
                        "contracts.url",
                        "expected url (the JSON endpoint) for source = \"http\"",
                    )
                })?;
                let url = self.url(url, "contracts.url")?;
                let token = self.secret(
                    "contracts",
                    "token",
                    raw.token_file.as_ref(),
                    raw.token_env.as_ref(),
                    raw.token.as_ref(),
                    None,
                )?;
                ContractSource::Http { url, token }
            }
            other => {
                return Err(self.src.at(
                    &raw.source,
                    "contracts.source",
                    format!("expected one of \"csv\", \"http\", got {other:?}"),
                ));
            }
        };

        // Every host answers to its short name; the table adds the spellings contracts use.
        let mut names: BTreeMap<String, Vec<String>> =
            hosts.keys().map(|h| (h.clone(), Vec::new())).collect();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (host, spellings) in &raw.server_names {
            let field = format!("contracts.server_names.{host}");
            let Some(list) = names.get_mut(host) else {
                let known = hosts.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                return Err(self.src.at(
                    spellings,
                    field,
                    format!("expected a host defined under [hosts] ({known}), got {host:?}"),
                ));
            };
            for (index, spelling) in spellings.get_ref().iter().enumerate() {
                let value = spelling.get_ref().trim();
                let value = value.strip_suffix('.').unwrap_or(value).to_lowercase();
                if value.is_empty() || value.contains(char::is_whitespace) {
                    return Err(self.src.at(
                        spelling,
                        format!("{field}[{index}]"),
                        format!(
                            "expected a server name like \"old1.example.fi\", got {:?}",
                            spelling.get_ref()
                        ),
                    ));
                }
                let other_host = seen.get(&value).cloned().or_else(|| {
                    hosts.contains_key(&value).then(|| value.clone()).filter(|other| other != host)
                });
                if let Some(other) = other_host.filter(|other| other != host) {
                    return Err(self.src.at(
                        spelling,
                        format!("{field}[{index}]"),
                        format!(
                            "expected each name to stand for one host, but {value:?} already names {other}"
                        ),
                    ));
                }
                seen.insert(value.clone(), host.clone());
                list.push(value);
            }
        }

        let mut fields = ContractFields::default();
        if let Some(raw_fields) = &raw.fields {
            let mapping = [
                (&raw_fields.customer_id, &mut fields.customer_id, "customer_id"),
                (&raw_fields.name, &mut fields.name, "name"),
                (&raw_fields.email, &mut fields.email, "email"),
                (&raw_fields.language, &mut fields.language, "language"),
                (&raw_fields.user, &mut fields.user, "user"),
                (&raw_fields.domain, &mut fields.domain, "domain"),
                (&raw_fields.service, &mut fields.service, "service"),
                (&raw_fields.server, &mut fields.server, "server"),
                (&raw_fields.reseller, &mut fields.reseller, "reseller"),
            ];
            for (value, target, name) in mapping {
                let Some(value) = value else {
                    continue;
                };
                let column = value.get_ref().trim();
                if column.is_empty() {
                    return Err(self.src.at(
                        value,
                        format!("contracts.fields.{name}"),
                        "expected the source column or JSON key holding this field, got an empty name",
                    ));
                }
                *target = column.to_owned();
            }
        }
        Ok(ContractsConfig { source, server_names: ServerNames::new(names), fields })
    }
}

/// `host` → `host:22`, `[v6]:p`/`host:p` kept; `None` when it is neither.
pub(super) fn normalize_ssh_address(value: &str) -> Option<String> {
    if value.is_empty() || value.contains(char::is_whitespace) {
        return None;
    }
    if value.parse::<SocketAddr>().is_ok() {
        return Some(value.to_owned());
    }
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 22).to_string());
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (value, 22),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    host_ok.then(|| format!("{host}:{port}"))
}
