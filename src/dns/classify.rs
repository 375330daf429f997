//! DNS classification: for every domain, how its DNS and mail are served today, asked through
//! the configured resolvers with hickory-resolver (cache off).
//!
//! For each domain we ask NS, A, AAAA and MX, then the addresses of each MX host, and decide:
//! who serves the zone ([`NsClass`]: our nameservers → siirto repoints; someone else's → the
//! customer must act), where the site is ([`WebClass`]: a site hosted elsewhere is never
//! repointed), where mail goes ([`MailClass`]: a spam filter needs its own change; Microsoft
//! 365 or Google are never touched), and the TTLs observed (the wait gate needs them).
//!
//! Each query goes to the configured resolvers in order and the first one that *answers*
//! (records, NXDOMAIN or "no such records") decides; REFUSED, SERVFAIL, a referral or a
//! timeout moves on to the next. So the same code works with public recursive resolvers in
//! production and with authoritative servers asked directly in tests (each answers for its
//! own zones and refuses the rest). A domain none of them answers for is [`Outcome::Failed`]
//! with every resolver's reason; the other domains are classified all the same.
//!
//! The decisions ([`ns_class`], [`web_class`], [`mail_class`], [`flags`]) are pure functions
//! of the answers and the [`Facts`]; only [`Classifier`] does I/O.
//!
//! TTLs: an authoritative server reports the zone's TTL; a recursive resolver reports what is
//! left of its cached copy (at most the zone's TTL). Either is what a cache may still hold.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use serde::{Deserialize, Serialize};

use super::DnsError;
use crate::config::DnsConfig;
use crate::names::DomainName;

/// What classification compares the answers against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The company's own nameserver host names (config `dns.own_nameservers`).
    pub own_nameservers: Vec<DomainName>,
    /// The source server's addresses.
    pub source_ips: Vec<IpAddr>,
    /// The target server's addresses.
    pub target_ips: Vec<IpAddr>,
    /// MX host names (or parents of them) of the company's external spam filter.
    pub spam_filters: Vec<DomainName>,
}

/// Which resolvers are asked, how long each may take, how many domains at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifySettings {
    /// Asked in order; the first that answers decides.
    pub resolvers: Vec<SocketAddr>,
    /// How long one resolver may take to answer one query (it is asked twice before it
    /// counts as not answering).
    pub query_timeout: Duration,
    /// How many domains are classified at once.
    pub concurrency: usize,
}

impl ClassifySettings {
    /// The settings of `[dns]`: `resolvers`, `query_timeout`, `classify_concurrency`.
    pub fn from_config(dns: &DnsConfig) -> Self {
        Self {
            resolvers: dns.resolvers.clone(),
            query_timeout: dns.query_timeout,
            concurrency: usize::try_from(dns.classify_concurrency).unwrap_or(32),
        }
    }
}

/// One domain's classification, or why it could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainClass {
    /// The domain classified.
    pub domain: DomainName,
    /// What was found.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl DomainClass {
    /// The classification, when one was made.
    pub fn classification(&self) -> Option<&Classification> {
        match &self.outcome {
            Outcome::Classified(classification) => Some(classification),
            Outcome::Failed { .. } => None,
        }
    }

    /// What needs a human about this domain ([`Flag::LookupFailed`] when it was not classified).
    pub fn flags(&self) -> Vec<Flag> {
        match &self.outcome {
            Outcome::Classified(classification) => classification.flags.clone(),
            Outcome::Failed { .. } => vec![Flag::LookupFailed],
        }
    }
}

/// Classified, or not (and why).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
// Nearly every result is `Classified`: boxing it would only add an allocation per domain.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// Every query was answered.
    Classified(Classification),
    /// A query was answered by no resolver: each resolver's reason, e.g.
    /// `"A x.fi: 127.0.0.1:53 answered REFUSED; 127.0.0.1:54 did not answer in time"`.
    Failed {
        /// Why.
        reason: String,
    },
}

/// How one domain's DNS, web site and mail are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// The zone whose delegation was classified: the domain itself, or for a name inside a
    /// zone (a subdomain) the zone that holds it, lower case without the trailing dot.
    pub zone: String,
    /// Who serves the zone.
    pub ns: NsClass,
    /// Where the domain's A/AAAA records point.
    pub web: WebClass,
    /// For a domain on someone else's DNS: the A/AAAA addresses of each of the names a cPanel
    /// zone has under it ([`SERVICE_NAMES`]: `www`, `ftp`, `webmail`, …), by label, each looked
    /// up on its own (`www` may be at a CDN while the apex is at the source); a name that does
    /// not exist is left out. Empty for a domain whose DNS is ours.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub names: std::collections::BTreeMap<String, Vec<IpAddr>>,
    /// For a domain on someone else's DNS: its SPF records (`v=spf1 …`), each its strings
    /// joined, quoted as one zone-file string. Empty for a domain whose DNS is ours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spf: Vec<String>,
    /// For a domain on someone else's DNS: its MX records with what each host resolved to, in
    /// preference order (an MX host outside the domain at the old server is the customer's
    /// MX record to change). Empty for a domain whose DNS is ours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mx: Vec<ExternalMx>,
    /// Where its mail goes.
    pub mail: MailClass,
    /// TTL (seconds) of its A records, when it has any.
    pub a_ttl: Option<u32>,
    /// TTL of its AAAA records, when it has any.
    pub aaaa_ttl: Option<u32>,
    /// TTL of its MX records, when it has any.
    pub mx_ttl: Option<u32>,
    /// What needs a human (see [`flags`]).
    pub flags: Vec<Flag>,
}

/// One MX record of a domain on someone else's DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalMx {
    /// Its preference.
    pub preference: u16,
    /// The exchange host, lower case without the trailing dot.
    pub host: String,
    /// What the host resolved to (empty for a spam filter, which is not looked up).
    pub addresses: Vec<IpAddr>,
}

impl ExternalMx {
    /// The record's data as a zone file writes it: `10 mail.example.fi.`.
    pub fn value(&self) -> String {
        format!("{} {}.", self.preference, self.host)
    }
}

/// Who serves a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NsClass {
    /// Every NS is one of ours: siirto repoints the records.
    Own {
        /// The NS host names, sorted.
        nameservers: Vec<String>,
    },
    /// None of the NS are ours: the customer must repoint at their DNS host.
    External {
        /// The NS host names, sorted.
        nameservers: Vec<String>,
    },
    /// Some ours, some not: a change at ours reaches only part of the resolvers (flagged).
    Mixed {
        /// Ours.
        own: Vec<String>,
        /// The others.
        external: Vec<String>,
    },
    /// NXDOMAIN, or no NS records at all (flagged).
    NoDelegation {
        /// `"NXDOMAIN"` or `"no NS records"`.
        reason: String,
    },
}

/// Where a domain's web site is (its A and AAAA records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebClass {
    /// Every address is the source server's: repointed at cutover.
    AtSource {
        /// The addresses, sorted.
        addresses: Vec<IpAddr>,
    },
    /// Every address is the target server's already.
    AtTarget {
        /// The addresses, sorted.
        addresses: Vec<IpAddr>,
    },
    /// A mix of source, target and other addresses (flagged).
    Mixed {
        /// The source server's.
        at_source: Vec<IpAddr>,
        /// The target server's.
        at_target: Vec<IpAddr>,
        /// Anyone else's.
        elsewhere: Vec<IpAddr>,
    },
    /// Hosted elsewhere: never repointed.
    Elsewhere {
        /// The addresses, sorted.
        addresses: Vec<IpAddr>,
    },
    /// No A or AAAA records.
    None,
}

/// Where a domain's mail goes (its MX records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MailClass {
    /// Every MX host is the source server (resolves to its address).
    AtSource {
        /// The MX host names, in preference order.
        hosts: Vec<String>,
    },
    /// Every MX host is the target server already.
    AtTarget {
        /// The MX host names, in preference order.
        hosts: Vec<String>,
    },
    /// Mail passes an external spam filter the config names: it needs its own change there
    /// (flagged).
    SpamFilter {
        /// The MX host names that are the filter's.
        hosts: Vec<String>,
    },
    /// Some MX hosts are ours, others are someone else's (flagged).
    Mixed {
        /// The source's or the target's.
        ours: Vec<String>,
        /// Anyone else's.
        elsewhere: Vec<String>,
    },
    /// Mail is handled elsewhere (Microsoft 365, Google, …): never touched.
    Elsewhere {
        /// The MX host names, in preference order.
        hosts: Vec<String>,
    },
    /// No MX records, or a null MX (RFC 7505: the domain takes no mail).
    None,
}

/// Something about a domain that needs a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// NXDOMAIN or no NS records.
    NoDelegation,
    /// Served by someone else's nameservers: the customer must repoint.
    ExternalDns,
    /// Served partly by ours and partly by others.
    MixedDns,
    /// A/AAAA records point at a mix of our servers and others.
    MixedWeb,
    /// MX goes through the company's external spam filter: it needs its own change.
    SpamFilter,
    /// MX hosts are partly ours and partly others.
    MixedMail,
    /// No resolver answered a query for this domain.
    LookupFailed,
}

/// The flags of a classification, in [`Flag`] order.
pub fn flags(ns: &NsClass, web: &WebClass, mail: &MailClass) -> Vec<Flag> {
    let mut flags = Vec::new();
    match ns {
        NsClass::Own { .. } => {}
        NsClass::External { .. } => flags.push(Flag::ExternalDns),
        NsClass::Mixed { .. } => flags.push(Flag::MixedDns),
        NsClass::NoDelegation { .. } => flags.push(Flag::NoDelegation),
    }
    match web {
        WebClass::Mixed { .. } => flags.push(Flag::MixedWeb),
        WebClass::AtSource { .. }
        | WebClass::AtTarget { .. }
        | WebClass::Elsewhere { .. }
        | WebClass::None => {}
    }
    match mail {
        MailClass::SpamFilter { .. } => flags.push(Flag::SpamFilter),
        MailClass::Mixed { .. } => flags.push(Flag::MixedMail),
        MailClass::AtSource { .. }
        | MailClass::AtTarget { .. }
        | MailClass::Elsewhere { .. }
        | MailClass::None => {}
    }
    flags
}

/// Who serves a zone with these NS host names (any case, trailing dot or not). An empty list
/// is [`NsClass::NoDelegation`].
pub fn ns_class(nameservers: &[String], own: &[DomainName]) -> NsClass {
    let names: BTreeSet<String> = nameservers.iter().map(|n| host_key(n)).collect();
    if names.is_empty() {
        return NsClass::NoDelegation { reason: "no NS records".into() };
    }
    let (ours, theirs): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|name| own.iter().any(|o| o.as_str() == name));
    match (ours.is_empty(), theirs.is_empty()) {
        (false, true) => NsClass::Own { nameservers: ours },
        (true, _) => NsClass::External { nameservers: theirs },
        (false, false) => NsClass::Mixed { own: ours, external: theirs },
    }
}

/// Where a site with these addresses is.
pub fn web_class(addresses: &[IpAddr], facts: &Facts) -> WebClass {
    let addresses: BTreeSet<IpAddr> = addresses.iter().copied().collect();
    if addresses.is_empty() {
        return WebClass::None;
    }
    let mut at_source = Vec::new();
    let mut at_target = Vec::new();
    let mut elsewhere = Vec::new();
    for address in addresses {
        if facts.source_ips.contains(&address) {
            at_source.push(address);
        } else if facts.target_ips.contains(&address) {
            at_target.push(address);
        } else {
            elsewhere.push(address);
        }
    }
    match (at_source.is_empty(), at_target.is_empty(), elsewhere.is_empty()) {
        (false, true, true) => WebClass::AtSource { addresses: at_source },
        (true, false, true) => WebClass::AtTarget { addresses: at_target },
        (true, true, false) => WebClass::Elsewhere { addresses: elsewhere },
        _ => WebClass::Mixed { at_source, at_target, elsewhere },
    }
}

/// One MX host and what it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The exchange host name, lower case without the trailing dot (empty for a null MX `.`).
    pub host: String,
    /// Its A and AAAA addresses (empty when not resolved: a spam filter is not looked up).
    pub addresses: Vec<IpAddr>,
}

/// The spam filter entry that `host` is (equal to it or below it), if any.
pub fn spam_filter<'a>(host: &str, filters: &'a [DomainName]) -> Option<&'a DomainName> {
    let host = host_key(host);
    filters.iter().find(|filter| {
        let filter = filter.as_str();
        host == filter || host.strip_suffix(filter).is_some_and(|rest| rest.ends_with('.'))
    })
}

/// Where mail goes, from the MX hosts in preference order.
pub fn mail_class(hosts: &[MxHost], facts: &Facts) -> MailClass {
    let hosts: Vec<&MxHost> = hosts.iter().filter(|h| !h.host.is_empty()).collect();
    if hosts.is_empty() {
        return MailClass::None;
    }
    let filters: Vec<String> = hosts
        .iter()
        .filter(|h| spam_filter(&h.host, &facts.spam_filters).is_some())
        .map(|h| h.host.clone())
        .collect();
    if !filters.is_empty() {
        return MailClass::SpamFilter { hosts: filters };
    }
    let at = |ips: &[IpAddr], host: &MxHost| host.addresses.iter().any(|a| ips.contains(a));
    let names = |pick: &dyn Fn(&MxHost) -> bool| -> Vec<String> {
        hosts.iter().filter(|h| pick(h)).map(|h| h.host.clone()).collect()
    };
    let at_source = names(&|h| at(&facts.source_ips, h));
    let at_target = names(&|h| at(&facts.target_ips, h));
    let elsewhere = names(&|h| !at(&facts.source_ips, h) && !at(&facts.target_ips, h));
    if at_source.len() == hosts.len() {
        MailClass::AtSource { hosts: at_source }
    } else if at_target.len() == hosts.len() {
        MailClass::AtTarget { hosts: at_target }
    } else if elsewhere.len() == hosts.len() {
        MailClass::Elsewhere { hosts: elsewhere }
    } else {
        let ours = names(&|h| at(&facts.source_ips, h) || at(&facts.target_ips, h));
        MailClass::Mixed { ours, elsewhere }
    }
}

/// A DNS name as we compare it: lower case, no trailing dot.
fn host_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// Asking.

/// What the first resolver that answered said.
#[derive(Debug, Clone)]
enum Answer {
    /// Records of the asked type (CNAMEs followed), with their TTLs.
    Records(Vec<(u32, RData)>),
    /// The name does not exist.
    NxDomain,
    /// The name exists without records of this type; `zone` is the owner of the SOA that
    /// came with the answer, when one did.
    NoData { zone: Option<String> },
}

/// The names a cPanel zone has under each domain (its zone template's service names), looked
/// up for a domain on someone else's DNS: each that points at the old server is the
/// customer's to change.
pub const SERVICE_NAMES: [&str; 11] = [
    "www",
    "mail",
    "ftp",
    "webmail",
    "cpanel",
    "whm",
    "webdisk",
    "cpcalendars",
    "cpcontacts",
    "autodiscover",
    "autoconfig",
];

/// Why a resolver gave no answer to [`Classifier::a_records_everywhere`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAnswer {
    /// What happened, in words ("did not answer in time", "answered REFUSED").
    pub reason: String,
    /// No DNS message came back at all: the resolver is silent (down, unreachable, dropping
    /// queries), so what it would answer is unknown.
    pub silent: bool,
}

/// Asks the configured resolvers, in order, with no cache in between.
#[derive(Clone)]
pub struct Classifier {
    resolvers: Vec<(SocketAddr, Resolver<TokioRuntimeProvider>)>,
    query_timeout: Duration,
    concurrency: usize,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resolvers: Vec<SocketAddr> = self.resolvers.iter().map(|(addr, _)| *addr).collect();
        f.debug_struct("Classifier")
            .field("resolvers", &resolvers)
            .field("query_timeout", &self.query_timeout)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// How many times hickory sends a query to one resolver after the first try.
const RETRIES: usize = 1;

impl Classifier {
    /// One hickory resolver per configured address (UDP, TCP when truncated), cache off.
    pub fn new(settings: &ClassifySettings) -> Result<Self, DnsError> {
        if settings.resolvers.is_empty() {
            return Err(DnsError::Config("at least one resolver is needed for DNS classification".into()));
        }
        let concurrency = settings.concurrency.max(1);
        let mut resolvers = Vec::new();
        for address in &settings.resolvers {
            let mut server = NameServerConfig::udp_and_tcp(address.ip());
            for connection in &mut server.connections {
                connection.port = address.port();
            }
            // Each resolver is asked on its own; a negative answer from it is final for it.
            server.trust_negative_responses = true;
            let config = ResolverConfig::from_parts(None, vec![], vec![server]);
            let mut options = ResolverOpts::default();
            options.timeout = settings.query_timeout;
            options.attempts = RETRIES;
            options.cache_size = 0;
            options.use_hosts_file = ResolveHosts::Never;
            options.ndots = 0;
            options.preserve_intermediates = false;
            // Up to four queries per domain are in flight at once.
            options.max_active_requests = options.max_active_requests.max(concurrency * 4);
            let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|err| DnsError::Config(format!("resolver {address}: {err}")))?;
            resolvers.push((*address, resolver));
        }
        Ok(Self { resolvers, query_timeout: settings.query_timeout, concurrency })
    }

    /// The resolvers asked, in order.
    pub fn resolvers(&self) -> Vec<SocketAddr> {
        self.resolvers.iter().map(|(addr, _)| *addr).collect()
    }

    /// Classifies every domain, [`ClassifySettings::concurrency`] at a time, and returns the
    /// results in the order of `domains`. A domain that cannot be classified is
    /// [`Outcome::Failed`]; the others go on.
    #[tracing::instrument(skip_all, fields(domains = domains.len()))]
    pub async fn classify_all(&self, domains: &[DomainName], facts: &Facts) -> Vec<DomainClass> {
        let mut results: Vec<(usize, DomainClass)> = futures::stream::iter(domains.iter().enumerate())
            .map(|(index, domain)| async move { (index, self.classify(domain, facts).await) })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        results.sort_by_key(|(index, _)| *index);
        results.into_iter().map(|(_, class)| class).collect()
    }

    /// Classifies one domain.
    #[tracing::instrument(skip_all, fields(domain = %domain))]
    pub async fn classify(&self, domain: &DomainName, facts: &Facts) -> DomainClass {
        let outcome = match self.classification(domain, facts).await {
            Ok(classification) => Outcome::Classified(classification),
            Err(reason) => {
                tracing::debug!(%reason, "domain not classified");
                Outcome::Failed { reason }
            }
        };
        DomainClass { domain: domain.clone(), outcome }
    }

    async fn classification(&self, domain: &DomainName, facts: &Facts) -> Result<Classification, String> {
        let name =
            Name::from_ascii(domain.fqdn()).map_err(|err| format!("{domain} is not a DNS name: {err}"))?;
        let (ns, a, aaaa, mx) = futures::join!(
            self.ask(&name, RecordType::NS),
            self.ask(&name, RecordType::A),
            self.ask(&name, RecordType::AAAA),
            self.ask(&name, RecordType::MX),
        );
        let (ns, a, aaaa, mx) = (ns?, a?, aaaa?, mx?);

        let (zone, ns) = self.delegation(domain, ns, &facts.own_nameservers).await?;
        // On someone else's DNS every name the customer must change is looked up: none is
        // assumed to follow the apex.
        let external = matches!(ns, NsClass::External { .. } | NsClass::Mixed { .. });
        let (names, spf) = if external {
            let (names, txt) =
                futures::join!(self.host_names(domain, SERVICE_NAMES), self.ask(&name, RecordType::TXT));
            (names?, spf_records(&txt?))
        } else {
            (std::collections::BTreeMap::new(), Vec::new())
        };
        let (a_ttl, a) = addresses(&a);
        let (aaaa_ttl, aaaa) = addresses(&aaaa);
        let mut own_addresses = a;
        own_addresses.extend(aaaa);
        let web = web_class(&own_addresses, facts);

        let (mx_ttl, exchanges) = match &mx {
            Answer::Records(records) => {
                let mut exchanges: Vec<(u16, String)> = records
                    .iter()
                    .filter_map(|(_, data)| match data {
                        RData::MX(mx) => Some((mx.preference, host_key(&mx.exchange.to_ascii()))),
                        _ => None,
                    })
                    .collect();
                exchanges.sort();
                exchanges.dedup();
                (ttl_of(records, RecordType::MX), exchanges)
            }
            Answer::NxDomain | Answer::NoData { .. } => (None, Vec::new()),
        };
        let mut hosts = Vec::with_capacity(exchanges.len());
        let mut external_mx = Vec::new();
        for (preference, host) in exchanges {
            let addresses = if host.is_empty() || spam_filter(&host, &facts.spam_filters).is_some() {
                Vec::new()
            } else if host == domain.as_str() {
                own_addresses.clone()
            } else {
                self.host_addresses(&host).await?
            };
            if external && !host.is_empty() {
                external_mx.push(ExternalMx { preference, host: host.clone(), addresses: addresses.clone() });
            }
            hosts.push(MxHost { host, addresses });
        }
        let mail = mail_class(&hosts, facts);
        let flags = flags(&ns, &web, &mail);
        let mx = external_mx;
        Ok(Classification { zone, ns, web, names, spf, mx, mail, a_ttl, aaaa_ttl, mx_ttl, flags })
    }

    /// The A and AAAA addresses of each name `label.domain` that exists, by label (`www`,
    /// `shop.blog`): for a domain on someone else's DNS, [`SERVICE_NAMES`] and the names its
    /// zone on the source server lists. A label that is not a DNS name is an error.
    pub async fn host_names<L: AsRef<str>>(
        &self,
        domain: &DomainName,
        labels: impl IntoIterator<Item = L>,
    ) -> Result<std::collections::BTreeMap<String, Vec<IpAddr>>, String> {
        let asks = labels.into_iter().map(|label| async move {
            let label = label.as_ref().to_owned();
            let host = format!("{label}.{}", domain.as_str());
            let found = self.host_addresses(&host).await;
            (label, found)
        });
        let mut names = std::collections::BTreeMap::new();
        for (label, found) in futures::future::join_all(asks).await {
            let found = found?;
            if !found.is_empty() {
                names.insert(label, found);
            }
        }
        Ok(names)
    }

    /// The zone and its NS class: the domain's own NS, or for a name inside a zone (no NS, an
    /// SOA of a parent) the parent zone's.
    async fn delegation(
        &self,
        domain: &DomainName,
        ns: Answer,
        own: &[DomainName],
    ) -> Result<(String, NsClass), String> {
        let own_zone = domain.as_str().to_owned();
        match ns {
            Answer::Records(records) => Ok((own_zone, ns_class(&ns_names(&records), own))),
            Answer::NxDomain => Ok((own_zone, NsClass::NoDelegation { reason: "NXDOMAIN".into() })),
            Answer::NoData { zone: Some(zone) } if zone != own_zone => {
                let apex =
                    Name::from_ascii(format!("{zone}.")).map_err(|err| format!("zone {zone}: {err}"))?;
                let names = match self.ask(&apex, RecordType::NS).await? {
                    Answer::Records(records) => ns_names(&records),
                    Answer::NxDomain | Answer::NoData { .. } => Vec::new(),
                };
                Ok((zone, ns_class(&names, own)))
            }
            Answer::NoData { .. } => Ok((own_zone, NsClass::NoDelegation { reason: "no NS records".into() })),
        }
    }

    /// The A and AAAA addresses of an MX host (empty when it does not exist).
    async fn host_addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let name = Name::from_ascii(format!("{host}.")).map_err(|err| format!("MX host {host:?}: {err}"))?;
        let (a, aaaa) = futures::join!(self.ask(&name, RecordType::A), self.ask(&name, RecordType::AAAA));
        let mut all = addresses(&a?).1;
        all.extend(addresses(&aaaa?).1);
        Ok(all)
    }

    /// Asks every resolver (not only the first that answers) for the A records of `name`:
    /// each resolver's addresses (empty for NXDOMAIN or no A records), or why it gave no answer.
    /// Used to see whether public DNS shows a domain at the target yet.
    pub async fn a_records_everywhere(
        &self,
        name: &str,
    ) -> Vec<(SocketAddr, Result<Vec<Ipv4Addr>, NoAnswer>)> {
        self.everywhere(name, RecordType::A, |answer| {
            addresses(answer)
                .1
                .into_iter()
                .filter_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect()
        })
        .await
    }

    /// Asks every resolver for the AAAA records of `name`, like [`Self::a_records_everywhere`].
    pub async fn aaaa_records_everywhere(
        &self,
        name: &str,
    ) -> Vec<(SocketAddr, Result<Vec<std::net::Ipv6Addr>, NoAnswer>)> {
        self.everywhere(name, RecordType::AAAA, |answer| {
            addresses(answer)
                .1
                .into_iter()
                .filter_map(|ip| match ip {
                    IpAddr::V6(v6) => Some(v6),
                    IpAddr::V4(_) => None,
                })
                .collect()
        })
        .await
    }

    /// Asks every resolver for the MX records of `name`, each as [`ExternalMx::value`] writes
    /// it (`10 mail.example.fi.`), like [`Self::a_records_everywhere`].
    pub async fn mx_everywhere(&self, name: &str) -> Vec<(SocketAddr, Result<Vec<String>, NoAnswer>)> {
        self.everywhere(name, RecordType::MX, |answer| match answer {
            Answer::Records(records) => records
                .iter()
                .filter_map(|(_, data)| match data {
                    RData::MX(mx) => {
                        Some(format!("{} {}.", mx.preference, host_key(&mx.exchange.to_ascii())))
                    }
                    _ => None,
                })
                .collect(),
            Answer::NxDomain | Answer::NoData { .. } => Vec::new(),
        })
        .await
    }

    /// Asks every resolver for the SPF records of `name` (as [`Classification::spf`] has them),
    /// like [`Self::a_records_everywhere`].
    pub async fn spf_everywhere(&self, name: &str) -> Vec<(SocketAddr, Result<Vec<String>, NoAnswer>)> {
        self.everywhere(name, RecordType::TXT, spf_records).await
    }

    /// Asks every resolver for `rtype` at `name`, each answer read by `read`.
    async fn everywhere<T>(
        &self,
        name: &str,
        rtype: RecordType,
        read: impl Fn(&Answer) -> T + Copy,
    ) -> Vec<(SocketAddr, Result<T, NoAnswer>)> {
        let fqdn = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
        let name = match Name::from_ascii(&fqdn) {
            Ok(name) => name,
            Err(err) => {
                let reason = NoAnswer { reason: format!("{fqdn} is not a DNS name: {err}"), silent: false };
                return self.resolvers.iter().map(|(addr, _)| (*addr, Err(reason.clone()))).collect();
            }
        };
        let limit =
            self.query_timeout * (u32::try_from(RETRIES).unwrap_or(1) + 1) + Duration::from_millis(250);
        let asks = self.resolvers.iter().map(|(address, resolver)| {
            let name = name.clone();
            async move {
                let result = match tokio::time::timeout(limit, resolver.lookup(name, rtype)).await {
                    Ok(result) => result,
                    Err(_elapsed) => Err(NetError::Timeout),
                };
                // No DNS message came back at all (a timeout, a refused connection): silent. A
                // response code (REFUSED, SERVFAIL) is an answer, if not about this name.
                let silent = matches!(&result, Err(err) if !matches!(err, NetError::Dns(_)));
                let answer =
                    answer(rtype, result).map_err(|reason| NoAnswer { reason, silent }).map(|a| read(&a));
                (*address, answer)
            }
        });
        futures::future::join_all(asks).await
    }

    /// Asks each resolver in turn until one answers; `Err` lists why none did.
    async fn ask(&self, name: &Name, rtype: RecordType) -> Result<Answer, String> {
        let mut reasons = Vec::new();
        for (address, resolver) in &self.resolvers {
            // hickory's own timeout covers each try; this bounds the whole lookup.
            let limit =
                self.query_timeout * (u32::try_from(RETRIES).unwrap_or(1) + 1) + Duration::from_millis(250);
            let result = match tokio::time::timeout(limit, resolver.lookup(name.clone(), rtype)).await {
                Ok(result) => result,
                Err(_elapsed) => Err(NetError::Timeout),
            };
            match answer(rtype, result) {
                Ok(answer) => return Ok(answer),
                Err(reason) => reasons.push(format!("{address} {reason}")),
            }
        }
        let name = name.to_ascii();
        Err(format!("{rtype} {}: {}", name.trim_end_matches('.'), reasons.join("; ")))
    }
}

/// Classifies every domain through the resolvers of `settings` (see [`Classifier`]).
pub async fn classify_all(
    domains: &[DomainName],
    facts: &Facts,
    settings: &ClassifySettings,
) -> Result<Vec<DomainClass>, DnsError> {
    let classifier = Classifier::new(settings)?;
    Ok(classifier.classify_all(domains, facts).await)
}

/// One resolver's result as an [`Answer`], or why it is no answer.
fn answer(
    rtype: RecordType,
    result: Result<hickory_resolver::lookup::Lookup, NetError>,
) -> Result<Answer, String> {
    match result {
        Ok(lookup) => {
            let records: Vec<(u32, RData)> = lookup
                .answers()
                .iter()
                .filter(|record| record.record_type() == rtype)
                .map(|record| (record.ttl, record.data.clone()))
                .collect();
            if records.is_empty() { Ok(Answer::NoData { zone: None }) } else { Ok(Answer::Records(records)) }
        }
        Err(NetError::Dns(HickoryDnsError::NoRecordsFound(no_records))) => match no_records.response_code {
            ResponseCode::NXDomain => Ok(Answer::NxDomain),
            ResponseCode::NoError if no_records.soa.is_some() => {
                let zone = no_records.soa.as_ref().map(|soa| host_key(&soa.name.to_ascii()));
                Ok(Answer::NoData { zone })
            }
            // NS without an SOA: a referral from an authoritative server of a parent zone.
            ResponseCode::NoError if no_records.ns.is_some() => Err("answered only with a referral".into()),
            ResponseCode::NoError => Ok(Answer::NoData { zone: None }),
            code => Err(format!("answered {}", rcode(code))),
        },
        Err(NetError::Dns(HickoryDnsError::ResponseCode(code))) => Err(format!("answered {}", rcode(code))),
        Err(NetError::Timeout) => Err("did not answer in time".into()),
        Err(err) => Err(err.to_string()),
    }
}

/// A response code as dig prints it (`REFUSED`, `SERVFAIL`).
fn rcode(code: ResponseCode) -> String {
    match code {
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        other => other.to_string(),
    }
}

fn ns_names(records: &[(u32, RData)]) -> Vec<String> {
    records
        .iter()
        .filter_map(|(_, data)| match data {
            RData::NS(ns) => Some(host_key(&ns.0.to_ascii())),
            _ => None,
        })
        .collect()
}

/// The TTL and addresses of an A or AAAA answer (no TTL and nothing for a negative one).
/// The SPF records (`v=spf1 …`) of a TXT answer, each as one quoted string (its character
/// strings joined, as SPF reads them).
fn spf_records(answer: &Answer) -> Vec<String> {
    let Answer::Records(records) = answer else { return Vec::new() };
    records
        .iter()
        .filter_map(|(_, data)| match data {
            RData::TXT(txt) => {
                let text: String = txt.txt_data.iter().map(|bytes| String::from_utf8_lossy(bytes)).collect();
                text.to_ascii_lowercase().starts_with("v=spf1").then(|| format!("\"{text}\""))
            }
            _ => None,
        })
        .collect()
}

fn addresses(answer: &Answer) -> (Option<u32>, Vec<IpAddr>) {
    match answer {
        Answer::Records(records) => {
            let addresses = records
                .iter()
                .filter_map(|(_, data)| match data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                })
                .collect();
            let ttl = records.iter().map(|(ttl, _)| *ttl).max();
            (ttl, addresses)
        }
        Answer::NxDomain | Answer::NoData { .. } => (None, Vec::new()),
    }
}

fn ttl_of(records: &[(u32, RData)], rtype: RecordType) -> Option<u32> {
    records.iter().filter(|(_, data)| data.record_type() == rtype).map(|(ttl, _)| *ttl).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<DomainName> {
        list.iter().map(|n| DomainName::parse(n).unwrap()).collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn facts() -> Facts {
        Facts {
            own_nameservers: names(&["ns1.example.fi", "ns2.example.fi"]),
            source_ips: ips(&["192.0.2.10", "2001:db8::10"]),
            target_ips: ips(&["203.0.113.20"]),
            spam_filters: names(&["filter.example.net"]),
        }
    }

    #[test]
    fn nameservers() {
        let own = facts().own_nameservers;
        let table: &[(&[&str], NsClass)] = &[
            (
                &["ns1.example.fi.", "NS2.Example.FI"],
                NsClass::Own { nameservers: strings(&["ns1.example.fi", "ns2.example.fi"]) },
            ),
            (
                &["ns1.example.fi", "ns1.example.fi."],
                NsClass::Own { nameservers: strings(&["ns1.example.fi"]) },
            ),
            (
                &["b.other.net.", "a.other.net."],
                NsClass::External { nameservers: strings(&["a.other.net", "b.other.net"]) },
            ),
            (
                &["ns1.example.fi.", "ns.other.net."],
                NsClass::Mixed { own: strings(&["ns1.example.fi"]), external: strings(&["ns.other.net"]) },
            ),
            // A name that merely ends like ours is not ours.
            (&["xns1.example.fi."], NsClass::External { nameservers: strings(&["xns1.example.fi"]) }),
            (&[], NsClass::NoDelegation { reason: "no NS records".into() }),
        ];
        for (input, expected) in table {
            assert_eq!(&ns_class(&strings(input), &own), expected, "{input:?}");
        }
        // With no own nameservers configured everything is external.
        assert!(matches!(ns_class(&strings(&["ns1.example.fi"]), &[]), NsClass::External { .. }));
    }

    #[test]
    fn web_sites() {
        let facts = facts();
        let table: &[(&[&str], WebClass)] = &[
            (&[], WebClass::None),
            (&["192.0.2.10"], WebClass::AtSource { addresses: ips(&["192.0.2.10"]) }),
            (
                &["2001:db8::10", "192.0.2.10", "192.0.2.10"],
                WebClass::AtSource { addresses: ips(&["192.0.2.10", "2001:db8::10"]) },
            ),
            (&["203.0.113.20"], WebClass::AtTarget { addresses: ips(&["203.0.113.20"]) }),
            (
                &["198.51.100.7", "198.51.100.8"],
                WebClass::Elsewhere { addresses: ips(&["198.51.100.7", "198.51.100.8"]) },
            ),
            (
                &["192.0.2.10", "198.51.100.7"],
                WebClass::Mixed {
                    at_source: ips(&["192.0.2.10"]),
                    at_target: vec![],
                    elsewhere: ips(&["198.51.100.7"]),
                },
            ),
            (
                &["192.0.2.10", "203.0.113.20"],
                WebClass::Mixed {
                    at_source: ips(&["192.0.2.10"]),
                    at_target: ips(&["203.0.113.20"]),
                    elsewhere: vec![],
                },
            ),
        ];
        for (input, expected) in table {
            assert_eq!(&web_class(&ips(input), &facts), expected, "{input:?}");
        }
    }

    #[test]
    fn spam_filter_names() {
        let filters = facts().spam_filters;
        let table: &[(&str, bool)] = &[
            ("filter.example.net", true),
            ("filter.example.net.", true),
            ("MX1.Filter.Example.NET.", true),
            ("a.b.filter.example.net", true),
            ("xfilter.example.net", false),
            ("filter.example.net.evil.fi", false),
            ("example.net", false),
        ];
        for (host, expected) in table {
            assert_eq!(spam_filter(host, &filters).is_some(), *expected, "{host}");
        }
    }

    #[test]
    fn mail() {
        let facts = facts();
        let mx = |host: &str, addresses: &[&str]| MxHost { host: host.into(), addresses: ips(addresses) };
        let table: Vec<(Vec<MxHost>, MailClass)> = vec![
            (vec![], MailClass::None),
            (vec![mx("", &[])], MailClass::None),
            (
                vec![mx("mail.a.fi", &["192.0.2.10"]), mx("a.fi", &["2001:db8::10", "198.51.100.1"])],
                MailClass::AtSource { hosts: strings(&["mail.a.fi", "a.fi"]) },
            ),
            (
                vec![mx("mail.a.fi", &["203.0.113.20"])],
                MailClass::AtTarget { hosts: strings(&["mail.a.fi"]) },
            ),
            (
                vec![mx("mx1.filter.example.net", &[]), mx("mail.a.fi", &["192.0.2.10"])],
                MailClass::SpamFilter { hosts: strings(&["mx1.filter.example.net"]) },
            ),
            (
                vec![mx("a-fi.mail.protection.outlook.com", &["198.51.100.5"])],
                MailClass::Elsewhere { hosts: strings(&["a-fi.mail.protection.outlook.com"]) },
            ),
            // An MX host that does not resolve is not ours either.
            (vec![mx("gone.a.fi", &[])], MailClass::Elsewhere { hosts: strings(&["gone.a.fi"]) }),
            (
                vec![mx("mail.a.fi", &["192.0.2.10"]), mx("backup.isp.net", &["198.51.100.9"])],
                MailClass::Mixed { ours: strings(&["mail.a.fi"]), elsewhere: strings(&["backup.isp.net"]) },
            ),
            (
                vec![mx("old.a.fi", &["192.0.2.10"]), mx("new.a.fi", &["203.0.113.20"])],
                MailClass::Mixed { ours: strings(&["old.a.fi", "new.a.fi"]), elsewhere: vec![] },
            ),
        ];
        for (input, expected) in table {
            assert_eq!(mail_class(&input, &facts), expected, "{input:?}");
        }
    }

    #[test]
    fn flags_follow_the_classes() {
        let own = NsClass::Own { nameservers: vec![] };
        let site = WebClass::AtSource { addresses: vec![] };
        let local = MailClass::AtSource { hosts: vec![] };
        let table: Vec<(NsClass, WebClass, MailClass, Vec<Flag>)> = vec![
            (own.clone(), site.clone(), local.clone(), vec![]),
            (
                own.clone(),
                WebClass::Elsewhere { addresses: vec![] },
                MailClass::Elsewhere { hosts: vec![] },
                vec![],
            ),
            (NsClass::External { nameservers: vec![] }, site.clone(), local.clone(), vec![Flag::ExternalDns]),
            (
                NsClass::Mixed { own: vec![], external: vec![] },
                site.clone(),
                local.clone(),
                vec![Flag::MixedDns],
            ),
            (
                NsClass::NoDelegation { reason: "NXDOMAIN".into() },
                WebClass::None,
                MailClass::SpamFilter { hosts: vec![] },
                vec![Flag::NoDelegation, Flag::SpamFilter],
            ),
            (
                own.clone(),
                WebClass::Mixed { at_source: vec![], at_target: vec![], elsewhere: vec![] },
                MailClass::Mixed { ours: vec![], elsewhere: vec![] },
                vec![Flag::MixedWeb, Flag::MixedMail],
            ),
        ];
        for (ns, web, mail, expected) in table {
            assert_eq!(flags(&ns, &web, &mail), expected, "{ns:?} {web:?} {mail:?}");
        }
    }

    #[test]
    fn results_serialize_for_the_plan() {
        let class = DomainClass {
            domain: DomainName::parse("a.fi").unwrap(),
            outcome: Outcome::Classified(Classification {
                zone: "a.fi".into(),
                ns: NsClass::Own { nameservers: strings(&["ns1.example.fi"]) },
                web: WebClass::AtSource { addresses: ips(&["192.0.2.10"]) },
                names: [("www".to_owned(), ips(&["203.0.113.80"]))].into(),
                spf: vec!["\"v=spf1 ip4:192.0.2.10 -all\"".into()],
                mx: Vec::new(),
                mail: MailClass::SpamFilter { hosts: strings(&["mx.filter.example.net"]) },
                a_ttl: Some(3600),
                aaaa_ttl: None,
                mx_ttl: Some(300),
                flags: vec![Flag::SpamFilter],
            }),
        };
        let json = serde_json::to_value(&class).unwrap();
        assert_eq!(json["domain"], "a.fi");
        assert_eq!(json["outcome"], "classified");
        assert_eq!(json["ns"]["kind"], "own");
        assert_eq!(json["web"]["addresses"][0], "192.0.2.10");
        assert_eq!(json["mail"]["kind"], "spam_filter");
        assert_eq!(json["flags"][0], "spam_filter");
        let back: DomainClass = serde_json::from_value(json).unwrap();
        assert_eq!(back, class);

        let reason = "NS b.fi: 127.0.0.1:53 did not answer in time";
        let failed = DomainClass {
            domain: DomainName::parse("b.fi").unwrap(),
            outcome: Outcome::Failed { reason: reason.into() },
        };
        let json = serde_json::to_value(&failed).unwrap();
        assert_eq!(json, serde_json::json!({"domain": "b.fi", "outcome": "failed", "reason": reason}));
        assert_eq!(failed.flags(), vec![Flag::LookupFailed]);
        assert_eq!(serde_json::from_value::<DomainClass>(json).unwrap(), failed);
    }
}
