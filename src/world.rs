//! The world a config names, built once: the cPanel hosts (WHM client, addresses, SSH), the
//! company's DNS provider and the checker of its nameservers, the notice channel, and the
//! resolvers that stand for public DNS. The daemon, the operator actions, the plan and the
//! pre-flight all take a [`World`] (STYLE.md #2: entry points take their world as arguments),
//! so a test can hand them one with a provider of its own.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};

use crate::config::{Config, DnsProviderConfig, SshConfig};
use crate::dns::classify::{Classifier, ClassifySettings};
use crate::dns::{Checker, DnsProvider, PowerDns};
use crate::licence::LicenceProvider;
use crate::notify::Channel;
use crate::whm::WhmClient;

/// What siirto knows of one cPanel host.
#[derive(Clone, Debug)]
pub struct HostRuntime {
    /// The host's name in the config.
    pub name: String,
    /// Its WHM API client.
    pub whm: WhmClient,
    /// The address its sites' A records point at (and the address transfers reach it by).
    pub ip: Ipv4Addr,
    /// Its IPv6 address, if it has one (AAAA records and SPF `ip6:` at it move like A records).
    pub ipv6: Option<Ipv6Addr>,
    /// The port its web server answers on (80 on a real host).
    pub http_port: u16,
    /// The port its web server answers HTTPS on (443 on a real host).
    pub https_port: u16,
    /// Its host name (config `hostname`, or the WHM URL's host when that is a name), absolute
    /// with the trailing dot: MX and CNAME records naming it move with the account.
    pub hostname: Option<String>,
    /// The name customers know it by (its host name, else its address): what notices say.
    pub public_name: String,
    /// SSH access (pinned host key), for the final delta sync and the mail log; `None` when the
    /// config gives none.
    pub ssh: Option<SshConfig>,
}

/// The adapters a config names.
#[derive(Clone)]
pub struct World {
    /// The cPanel hosts by config name.
    pub hosts: BTreeMap<String, HostRuntime>,
    /// The company's DNS provider.
    pub dns: Arc<dyn DnsProvider>,
    /// Checks answers on the company's authoritative nameservers.
    pub checker: Arc<Checker>,
    /// Where notices go.
    pub channel: Arc<dyn Channel>,
    /// The resolvers that stand for public DNS (config `dns.resolvers`), asked whether a
    /// domain on someone else's DNS shows the target yet; `None` when none are configured.
    pub public_dns: Option<Arc<Classifier>>,
    /// The language of a customer's notices when the contracts give none (config
    /// `mail.language`).
    pub language: String,
    /// Customer service's addresses (config `mail.staff`).
    pub staff: Vec<String>,
    /// The operators' addresses (config `mail.operators`).
    pub operators: Vec<String>,
    /// The least time between two notices through the channel (config `mail.max_per_second`),
    /// across every daemon on the database; `None`: no limit.
    pub send_interval: Option<Duration>,
    /// Where bounces of notices come back (config `mail.bounce_address`, `mail.bounce_maildir`).
    pub bounces: Option<crate::config::BounceConfig>,
    /// Where the old server's cPanel licence is cancelled (config `[licence]`); `None` when the
    /// config names no provider (no licence stage can run).
    pub licence: Option<Arc<dyn LicenceProvider>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("hosts", &self.hosts.keys().collect::<Vec<_>>())
            .field("channel", &self.channel.name())
            .field("licence", &self.licence.as_ref().map(|licence| licence.name()))
            .finish_non_exhaustive()
    }
}

impl World {
    /// Builds the adapters of a validated config. Nothing is contacted.
    pub fn from_config(config: &Config) -> anyhow::Result<World> {
        let mut hosts = BTreeMap::new();
        for (name, host) in &config.hosts {
            let whm = WhmClient::new(
                host.whm_url.clone(),
                host.token.clone(),
                host.tls.clone(),
                Duration::from_secs(60),
            )
            .with_context(|| format!("host {name}: WHM client"))?;
            hosts.insert(
                name.clone(),
                HostRuntime {
                    name: name.clone(),
                    whm,
                    ip: host.ip,
                    ipv6: host.ipv6,
                    http_port: host.http_port,
                    https_port: host.https_port,
                    hostname: host.hostname.as_ref().map(|h| format!("{h}.")),
                    public_name: host.public_name(),
                    ssh: host.ssh.clone(),
                },
            );
        }
        let dns: Arc<dyn DnsProvider> = match &config.dns.provider {
            DnsProviderConfig::PowerDns { api_url, api_key, server_id, axfr_server } => {
                let client = PowerDns::new(api_url.clone(), api_key.clone(), server_id.clone())
                    .context("PowerDNS client")?;
                Arc::new(match axfr_server {
                    Some(server) => client.with_axfr_reads(*server),
                    None => client,
                })
            }
            DnsProviderConfig::Rfc2136 { server, tsig, zones, max_records_per_type } => Arc::new(
                crate::dns::Rfc2136::new(*server, tsig.clone(), zones.clone())
                    .context("RFC 2136 client")?
                    .with_max_records_per_type(*max_records_per_type),
            ),
        };
        let checker = Arc::new(Checker::new(config.dns.nameservers.clone()).context("DNS checker")?);
        let channel = crate::notify::channel_from_config(&config.mail).context("notice channel")?;
        let public_dns = if config.dns.resolvers.is_empty() {
            None
        } else {
            let settings = ClassifySettings::from_config(&config.dns);
            Some(Arc::new(Classifier::new(&settings).context("the resolvers of dns.resolvers")?))
        };
        let (language, staff, operators) =
            (config.mail.language.clone(), config.mail.staff.clone(), config.mail.operators.clone());
        let send_interval = config.mail.max_per_second.map(|rate| Duration::from_secs(1) / rate);
        let bounces = config.mail.bounces.clone();
        let licence = match &config.licence {
            Some(licence) => Some(
                crate::licence::provider_from_config(licence, Duration::from_secs(60))
                    .context("licence provider")?,
            ),
            None => None,
        };
        Ok(World {
            hosts,
            dns,
            checker,
            channel,
            public_dns,
            language,
            staff,
            operators,
            send_interval,
            bounces,
            licence,
        })
    }

    /// The host the config calls `name`; an error naming it when the config has none (a
    /// migration planned under an older config).
    pub fn host(&self, name: &str) -> anyhow::Result<&HostRuntime> {
        self.hosts.get(name).ok_or_else(|| anyhow!("host {name:?} is not in the config"))
    }
}
