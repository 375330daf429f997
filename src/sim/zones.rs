//! The zones of the simulated accounts' domains, as a company's nameserver holds them: the site,
//! `www` and `mail` at the host, MX to `mail`, subdomains in their parent's zone. `siirto demo`,
//! `siirto sim` and the tests create them through a PowerDNS API (the simulated nameserver's or
//! a real pdns_server's).

use std::net::Ipv4Addr;

use anyhow::Context;
use futures::StreamExt;

use crate::dns::{DnsError, DnsProvider, PowerDns, Rrset, RrsetChange};
use crate::names::DomainName;
use crate::sim::SimAccount;

/// The source host's address (a loopback alias).
pub const SOURCE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The target host's address (a loopback alias).
pub const TARGET_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The TTL the demo's zones start with, as a company's zones would.
pub const ZONE_TTL: u32 = 3600;

/// The zone the company's nameserver holds for one of an account's domains: the site, `www`
/// and `mail` at the host, MX to `mail`.
pub fn zone_rrsets(domain: &DomainName, ip: Ipv4Addr, ttl: u32) -> Vec<Rrset> {
    let apex = domain.fqdn();
    let rr = |name: String, rtype: &str, content: String| Rrset {
        name,
        rtype: rtype.to_owned(),
        ttl,
        records: vec![content],
    };
    vec![
        rr(apex.clone(), "A", ip.to_string()),
        rr(format!("www.{apex}"), "A", ip.to_string()),
        rr(format!("mail.{apex}"), "A", ip.to_string()),
        rr(apex.clone(), "MX", format!("10 mail.{apex}")),
    ]
}

/// Every domain of the accounts that is a zone of its own: main, addon and parked domains
/// (subdomains live in their parent's zone; see [`create_zones`]).
pub fn all_domains(accounts: &[SimAccount]) -> Vec<DomainName> {
    accounts
        .iter()
        .flat_map(|a| {
            std::iter::once(a.domain.clone())
                .chain(a.addon_domains.iter().cloned())
                .chain(a.parked_domains.iter().cloned())
        })
        .collect()
}

/// Creates the zones of `accounts`' domains through a PowerDNS API, pointing at `ip`; a
/// subdomain gets an A record in its main domain's zone. A zone that exists already has those
/// rrsets replaced.
pub async fn create_zones(dns: &PowerDns, accounts: &[SimAccount], ip: Ipv4Addr) -> anyhow::Result<()> {
    create_zones_with_concurrency(dns, accounts, ip, 4).await
}

/// [`create_zones`] with at most `concurrency` (at least 1) API calls in flight: 1 for a
/// PowerDNS whose backend may be sqlite, whose writer lock answers concurrent changes to
/// existing zones with HTTP 500.
pub async fn create_zones_with_concurrency(
    dns: &PowerDns,
    accounts: &[SimAccount],
    ip: Ipv4Addr,
    concurrency: usize,
) -> anyhow::Result<()> {
    let nameservers = vec!["ns1.siirto-demo.test.".to_owned()];
    let zones: Vec<(DomainName, Vec<Rrset>)> = all_domains(accounts)
        .into_iter()
        .map(|domain| {
            let mut rrsets = zone_rrsets(&domain, ip, ZONE_TTL);
            for account in accounts.iter().filter(|a| a.domain == domain) {
                for sub in &account.sub_domains {
                    rrsets.push(Rrset {
                        name: sub.fqdn(),
                        rtype: "A".to_owned(),
                        ttl: ZONE_TTL,
                        records: vec![ip.to_string()],
                    });
                }
            }
            (domain, rrsets)
        })
        .collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(zones)
        .map(|(domain, rrsets)| {
            let nameservers = nameservers.clone();
            async move {
                match dns.create_zone(&domain, &nameservers, &rrsets).await {
                    // A zone left by an earlier run (`siirto sim` against the same PowerDNS,
                    // perhaps repointed since) is set back to the accounts' records. The
                    // simulated domains are all under .test, which no real zone uses.
                    Err(DnsError::Api { status: 409, .. }) => {
                        let changes: Vec<RrsetChange> =
                            rrsets.into_iter().map(RrsetChange::Replace).collect();
                        dns.apply(&domain, &changes)
                            .await
                            .with_context(|| format!("resetting the zone {domain}"))
                    }
                    result => result.with_context(|| format!("creating the zone {domain}")),
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// One line of a zone as a cPanel host keeps it: its owner as written (`@`, a label, or an
/// absolute name), type, TTL and data fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpanelZoneLine {
    /// The owner as the zone file writes it.
    pub owner: String,
    /// The record type.
    pub rtype: &'static str,
    /// Its TTL.
    pub ttl: u32,
    /// Its data fields.
    pub data: Vec<String>,
}

/// The names cPanel's standard zone template puts at the account's address.
const TEMPLATE_HOSTS: [&str; 9] =
    ["ftp", "cpanel", "whm", "webmail", "webdisk", "cpcalendars", "cpcontacts", "autodiscover", "autoconfig"];

/// The zone a cPanel host keeps for `zone`, one of `account`'s main, addon or parked domains,
/// built from cPanel's standard template (SOA, NS, the site and `ftp`, `webmail`, … at `ip`,
/// `www` and `mail` as CNAMEs of the apex, MX to the apex, SPF naming `ip`), the account's
/// subdomains under it and, in the main domain's zone, its [`SimAccount::extra_hosts`]. `None`
/// when `zone` is not one of its zones.
pub fn cpanel_zone(account: &SimAccount, zone: &DomainName, ip: Ipv4Addr) -> Option<Vec<CpanelZoneLine>> {
    let is_zone = account.domain == *zone
        || account.addon_domains.contains(zone)
        || account.parked_domains.contains(zone);
    if !is_zone {
        return None;
    }
    let apex = zone.fqdn();
    let line = |owner: &str, rtype, ttl, data: &[&str]| CpanelZoneLine {
        owner: owner.to_owned(),
        rtype,
        ttl,
        data: data.iter().map(|d| (*d).to_owned()).collect(),
    };
    let ip = ip.to_string();
    let mut lines = vec![
        line(&apex, "SOA", 86400, &["ns1.siirto-demo.test.", "hostmaster.siirto-demo.test.", "2026120501"]),
        line(&apex, "NS", 86400, &["ns1.siirto-demo.test."]),
        line("@", "A", 14400, &[&ip]),
        line(&apex, "MX", 14400, &["0", &apex]),
        line("mail", "CNAME", 14400, &[&apex]),
        line("www", "CNAME", 14400, &[&apex]),
    ];
    for host in TEMPLATE_HOSTS {
        lines.push(line(host, "A", 14400, &[&ip]));
    }
    lines.push(line("@", "TXT", 14400, &[&format!("v=spf1 +a +mx +ip4:{ip} ~all")]));
    lines.push(line("_cpanel-dcv-test-record", "TXT", 14400, &["_cpanel-dcv-test-record=sim"]));
    let suffix = format!(".{}", zone.as_str());
    for sub in &account.sub_domains {
        if let Some(label) = sub.as_str().strip_suffix(&suffix) {
            lines.push(line(label, "A", 14400, &[&ip]));
            lines.push(line(&format!("www.{label}"), "CNAME", 14400, &[&sub.fqdn()]));
        }
    }
    if account.domain == *zone {
        for label in &account.extra_hosts {
            lines.push(line(label, "A", 14400, &[&ip]));
        }
    }
    Some(lines)
}
