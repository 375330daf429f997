//! DNS: the provider that edits the company's zones (PowerDNS over its HTTP API, reading zones
//! through it or by AXFR from its DNS port, or any server taking RFC 2136 dynamic updates with
//! TSIG) and the checker that asks each authoritative
//! nameserver what it serves right now.
//!
//! The engine lowers TTLs and repoints records through a [`DnsProvider`], one batch (one HTTP
//! request, or one UPDATE message) per zone, and then asks the [`Checker`] whether every configured nameserver answers
//! with the new address before it calls a domain repointed.
//!
//! [`classify`] finds, before anything moves, how each domain's DNS, web site and mail are
//! served today (through the configured resolvers, with hickory-resolver).

mod check;
pub mod classify;
mod powerdns;
pub mod rewrite;
mod rfc2136;

use std::net::{Ipv4Addr, SocketAddr};

use async_trait::async_trait;

use crate::names::{DomainName, NameError};

pub use check::{Checker, Verification};
pub use powerdns::PowerDns;
pub use rfc2136::{DEFAULT_MAX_RECORDS_PER_TYPE, Rfc2136, TsigAlgorithm, TsigKey};

/// A DNS hosting service that holds the company's zones and lets us change them.
///
/// Write concurrency is the caller's business: a sqlite-backed PowerDNS answers concurrent
/// writers with HTTP 500 (its writer lock) and gets slower, so one write at a time per server
/// is right for it; a MySQL/PostgreSQL-backed one takes more.
#[async_trait]
pub trait DnsProvider: Send + Sync {
    /// Every rrset of one zone, as the provider holds it now.
    async fn zone(&self, zone: &DomainName) -> Result<Zone, DnsError>;

    /// The names of the zones the provider serves.
    async fn zones(&self) -> Result<Vec<DomainName>, DnsError>;

    /// Applies a batch of rrset changes to one zone in ONE request (one PowerDNS PATCH, one
    /// RFC 2136 UPDATE message), so the whole batch is applied or none of it is. An empty batch
    /// sends nothing. The zone's SOA serial goes up with every applied batch, so that
    /// secondaries transfer the change (by the server itself, or by the provider in the batch).
    async fn apply(&self, zone: &DomainName, changes: &[RrsetChange]) -> Result<(), DnsError>;

    /// Whether the server raises the zone's SOA serial by itself on a change through this
    /// provider's interface. `false` (a PowerDNS zone without `SOA-EDIT-API` metadata, as
    /// `pdnsutil` or an import leaves it) means [`DnsProvider::apply`] raises it in its own
    /// batch, and every other tool changing the zone must too. Servers taking RFC 2136
    /// updates raise it themselves: the default says so.
    async fn server_bumps_serial(&self, _zone: &DomainName) -> Result<bool, DnsError> {
        Ok(true)
    }
}

/// One zone and all its rrsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone's name.
    pub name: DomainName,
    /// Its rrsets, in the provider's order.
    pub rrsets: Vec<Rrset>,
}

impl Zone {
    /// The rrset of `name` (absolute, trailing dot) and type `rtype`, if the zone has one.
    pub fn rrset(&self, name: &str, rtype: &str) -> Option<&Rrset> {
        self.rrsets.iter().find(|r| r.name.eq_ignore_ascii_case(name) && r.rtype.eq_ignore_ascii_case(rtype))
    }
}

/// All records of one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rrset {
    /// The owner name, absolute with the trailing dot (`www.example.fi.`).
    pub name: String,
    /// The record type in upper case: `"A"`, `"MX"`, …
    pub rtype: String,
    /// Time to live in seconds.
    pub ttl: u32,
    /// The records' content in presentation format, as PowerDNS writes it
    /// (`192.0.2.1`, `10 mail.example.fi.`, `"v=spf1 -all"`). Disabled records are left out.
    pub records: Vec<String>,
}

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RrsetChange {
    /// Replaces the whole rrset with this one (every record must be given, also to change
    /// only the TTL). An empty record list deletes the rrset.
    Replace(Rrset),
    /// Deletes the rrset of this name (absolute) and type.
    Delete {
        /// The owner name, absolute with the trailing dot.
        name: String,
        /// The record type in upper case.
        rtype: String,
    },
}

/// The changes that lower the TTL of every A rrset of `zone` that holds `address` to `ttl`,
/// resending every record of each such rrset. Rrsets already at or below `ttl` are left
/// alone (never raised).
pub fn lower_ttl_changes(zone: &Zone, address: Ipv4Addr, ttl: u32) -> Vec<RrsetChange> {
    let address = address.to_string();
    zone.rrsets
        .iter()
        .filter(|r| r.rtype == "A" && r.ttl > ttl && r.records.contains(&address))
        .map(|r| RrsetChange::Replace(Rrset { ttl, ..r.clone() }))
        .collect()
}

/// The changes that replace `from` with `to` in every A rrset of `zone`, keeping the rrsets'
/// other records and TTLs. Only rrsets whose owner name is listed in `names` are touched, or
/// all when `names` is `None`.
pub fn repoint_changes(
    zone: &Zone,
    names: Option<&[DomainName]>,
    from: Ipv4Addr,
    to: Ipv4Addr,
) -> Vec<RrsetChange> {
    let (from, to) = (from.to_string(), to.to_string());
    zone.rrsets
        .iter()
        .filter(|r| r.rtype == "A" && r.records.contains(&from))
        .filter(|r| names.is_none_or(|names| names.iter().any(|n| n.fqdn() == r.name)))
        .map(|r| {
            let mut records: Vec<String> = Vec::with_capacity(r.records.len());
            for content in &r.records {
                let content = if *content == from { &to } else { content };
                if !records.contains(content) {
                    records.push(content.clone());
                }
            }
            RrsetChange::Replace(Rrset { records, ..r.clone() })
        })
        .collect()
}

/// Checks that an rrset owner name is absolute, lies inside `zone` and is made of letters,
/// digits, hyphens and underscores (plus a leading `*` label for wildcards), and returns it
/// in lower case. Owner names are not host names (`_dmarc.example.fi.` is fine), so
/// [`DomainName`] is too strict for them.
pub fn owner_name(name: &str, zone: &DomainName) -> Result<String, DnsError> {
    let refuse = |reason: &'static str| DnsError::BadName { name: name.chars().take(300).collect(), reason };
    let Some(relative) = name.strip_suffix('.') else {
        return Err(refuse("it is not absolute (no trailing dot)"));
    };
    if name.len() > 254 {
        return Err(refuse("it is longer than 253 characters"));
    }
    let lower = relative.to_ascii_lowercase();
    if lower != zone.as_str() && !lower.ends_with(&format!(".{}", zone.as_str())) {
        return Err(refuse("it is not inside the zone"));
    }
    for (index, label) in lower.split('.').enumerate() {
        if label.is_empty() || label.len() > 63 {
            return Err(refuse("a label is empty or longer than 63 characters"));
        }
        let wildcard = index == 0 && label == "*";
        if !wildcard
            && !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(refuse("only letters, digits, hyphens and underscores are allowed"));
        }
    }
    Ok(format!("{lower}."))
}

/// What can go wrong talking to a DNS provider or asking a nameserver.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The provider could not be reached or did not answer in time (transient).
    #[error("{op} {url}: could not reach the DNS API: {source}")]
    Transport {
        /// The operation (`"GET zone"`, `"PATCH zone"`, …).
        op: &'static str,
        /// The URL called (no credentials or query).
        url: String,
        /// The underlying HTTP client error (its URL stripped; `url` says it).
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered with an HTTP error status; 5xx (for PowerDNS on sqlite, 500 is
    /// its writer lock: the change was not applied) and 429 are transient, 4xx are not.
    #[error("{op} {url}: the DNS API answered HTTP {status}: {message}")]
    Api {
        /// The operation.
        op: &'static str,
        /// The URL called (no credentials or query).
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The API's `error` text, or the start of the body.
        message: String,
    },
    /// The API refused our key (HTTP 401 or 403): a configuration problem, not transient.
    #[error("{op} {url}: the DNS API answered HTTP {status}: it rejected {key}")]
    Unauthorized {
        /// The operation.
        op: &'static str,
        /// The URL called (no credentials or query).
        url: String,
        /// The HTTP status code.
        status: u16,
        /// Which key, by where it was read from: `the key in api_key_file (/path)`.
        key: String,
    },
    /// The zone does not exist at the provider (HTTP 404).
    #[error("{op} {url}: zone {zone} does not exist: {message}")]
    NoSuchZone {
        /// The operation.
        op: &'static str,
        /// The URL called (no credentials or query).
        url: String,
        /// The zone asked for.
        zone: String,
        /// The API's `error` text.
        message: String,
    },
    /// The provider's answer was not the JSON we expect.
    #[error("{op}: unexpected answer from the DNS API: {detail}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A record owner name we refuse to send.
    #[error("DNS name {name:?} is not valid: {reason}")]
    BadName {
        /// The refused name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A zone or host name that is not a valid domain.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A setting given to a constructor is unusable.
    #[error("DNS settings: {0}")]
    Config(String),
    /// A nameserver did not answer a query in time (transient).
    #[error("nameserver {server} did not answer a query for {name} in time")]
    Timeout {
        /// The nameserver.
        server: SocketAddr,
        /// The name asked for.
        name: String,
    },
    /// Sending a query or reading the answer failed at the socket (transient).
    #[error("nameserver {server}: {source}")]
    Io {
        /// The nameserver.
        server: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// A nameserver answered with an error code (SERVFAIL is transient; REFUSED means it is
    /// not authoritative for the name, which is a configuration problem).
    #[error("nameserver {server} answered {rcode} for {name}")]
    Rcode {
        /// The nameserver.
        server: SocketAddr,
        /// The name asked for.
        name: String,
        /// The response code as text (`"SERVFAIL"`, `"REFUSED"`, …).
        rcode: String,
    },
    /// A server refused a zone transfer or an update: it does not serve the zone, or does not
    /// accept our TSIG key for it (REFUSED, NOTAUTH, BADKEY, BADSIG). A configuration problem.
    #[error("{op} of zone {zone} at {server}: {detail}")]
    Refused {
        /// The operation (`"AXFR"`, `"UPDATE"`).
        op: &'static str,
        /// The server.
        server: SocketAddr,
        /// The zone.
        zone: String,
        /// What the server said and what to check.
        detail: String,
    },
    /// Record content that cannot be sent as it is (not valid presentation format for its type).
    #[error("record {name} {rtype} {content:?} is not valid: {reason}")]
    BadRecord {
        /// The owner name.
        name: String,
        /// The record type.
        rtype: String,
        /// The refused content.
        content: String,
        /// Why.
        reason: String,
    },
    /// An update would make an rrset bigger than the server accepts (BIND's
    /// `max-records-per-type`, which it enforces with a SERVFAIL). Retrying cannot help.
    #[error(
        "zone {zone}: rrset {name} {rtype} would hold {count} records, more than the server's limit of {max} (dns.max_records_per_type; BIND's max-records-per-type)"
    )]
    TooManyRecords {
        /// The zone.
        zone: String,
        /// The rrset's owner name.
        name: String,
        /// The rrset's type.
        rtype: String,
        /// How many records the update would give it.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A nameserver answered without the authoritative-answer flag, or with garbage.
    #[error("nameserver {server}: {detail} (asking for {name})")]
    BadAnswer {
        /// The nameserver.
        server: SocketAddr,
        /// The name asked for.
        name: String,
        /// What was wrong.
        detail: String,
    },
}

impl DnsError {
    /// True when trying again later may succeed: connection problems, timeouts, HTTP 5xx and
    /// 429 from the API, SERVFAIL from a nameserver.
    pub fn is_transient(&self) -> bool {
        match self {
            DnsError::Transport { .. } | DnsError::Timeout { .. } | DnsError::Io { .. } => true,
            DnsError::Api { status, .. } => *status >= 500 || *status == 429,
            DnsError::Rcode { rcode, .. } => rcode == "SERVFAIL",
            DnsError::NoSuchZone { .. }
            | DnsError::Unauthorized { .. }
            | DnsError::Shape { .. }
            | DnsError::BadName { .. }
            | DnsError::Name(_)
            | DnsError::Config(_)
            | DnsError::Refused { .. }
            | DnsError::BadRecord { .. }
            | DnsError::TooManyRecords { .. }
            | DnsError::BadAnswer { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        let rrset = |name: &str, rtype: &str, ttl, records: &[&str]| Rrset {
            name: name.into(),
            rtype: rtype.into(),
            ttl,
            records: records.iter().map(|s| s.to_string()).collect(),
        };
        Zone {
            name: DomainName::parse("example.fi").unwrap(),
            rrsets: vec![
                rrset("example.fi.", "A", 3600, &["192.0.2.1"]),
                rrset("www.example.fi.", "A", 3600, &["192.0.2.1", "192.0.2.7"]),
                rrset("mail.example.fi.", "A", 3600, &["198.51.100.5"]),
                rrset("ftp.example.fi.", "A", 60, &["192.0.2.1"]),
                rrset("low.example.fi.", "A", 30, &["192.0.2.1"]),
                rrset("example.fi.", "MX", 3600, &["10 mail.example.fi."]),
            ],
        }
    }

    #[test]
    fn lowering_ttls_touches_only_a_rrsets_holding_the_address() {
        let changes = lower_ttl_changes(&zone(), "192.0.2.1".parse().unwrap(), 60);
        let names: Vec<_> = changes
            .iter()
            .map(|c| match c {
                RrsetChange::Replace(r) => (r.name.as_str(), r.ttl, r.records.len()),
                RrsetChange::Delete { .. } => panic!("no deletes expected"),
            })
            .collect();
        assert_eq!(names, vec![("example.fi.", 60, 1), ("www.example.fi.", 60, 2)]);
    }

    #[test]
    fn repointing_keeps_other_records_and_ttls() {
        let from = "192.0.2.1".parse().unwrap();
        let to = "203.0.113.9".parse().unwrap();
        let changes = repoint_changes(&zone(), None, from, to);
        assert_eq!(changes.len(), 4);
        let RrsetChange::Replace(www) = &changes[1] else { panic!("replace expected") };
        assert_eq!(www.records, vec!["203.0.113.9", "192.0.2.7"]);
        assert_eq!(www.ttl, 3600);

        let only = [DomainName::parse("ftp.example.fi").unwrap()];
        let changes = repoint_changes(&zone(), Some(&only), from, to);
        assert_eq!(changes.len(), 1);
        assert!(matches!(&changes[0], RrsetChange::Replace(r) if r.name == "ftp.example.fi." && r.ttl == 60));
    }

    #[test]
    fn repointing_merges_duplicates() {
        let mut zone = zone();
        zone.rrsets[1].records = vec!["192.0.2.1".into(), "203.0.113.9".into()];
        let changes =
            repoint_changes(&zone, None, "192.0.2.1".parse().unwrap(), "203.0.113.9".parse().unwrap());
        let RrsetChange::Replace(www) = &changes[1] else { panic!("replace expected") };
        assert_eq!(www.records, vec!["203.0.113.9"]);
    }

    #[test]
    fn owner_names() {
        let zone = DomainName::parse("example.fi").unwrap();
        let table: &[(&str, Option<&str>)] = &[
            ("example.fi.", Some("example.fi.")),
            ("WWW.Example.FI.", Some("www.example.fi.")),
            ("_dmarc.example.fi.", Some("_dmarc.example.fi.")),
            ("*.example.fi.", Some("*.example.fi.")),
            ("www.example.fi", None),
            ("badexample.fi.", None),
            ("a..example.fi.", None),
            ("a*.example.fi.", None),
            ("x.*.example.fi.", None),
            ("a b.example.fi.", None),
            ("a/b.example.fi.", None),
            ("other.fi.", None),
        ];
        for (input, expected) in table {
            let got = owner_name(input, &zone).ok();
            assert_eq!(got.as_deref(), *expected, "{input:?}");
        }
    }

    #[test]
    fn transient_errors() {
        let api = |status| DnsError::Api {
            op: "PATCH zone",
            url: "http://127.0.0.1:8081/api/v1/servers/localhost/zones/x.fi.".into(),
            status,
            message: String::new(),
        };
        assert!(api(500).is_transient());
        assert!(api(503).is_transient());
        assert!(api(429).is_transient());
        assert!(!api(422).is_transient());
        assert!(!api(401).is_transient());
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let rcode = |rcode: &str| DnsError::Rcode { server, name: "x.fi".into(), rcode: rcode.into() };
        assert!(rcode("SERVFAIL").is_transient());
        assert!(!rcode("REFUSED").is_transient());
        assert!(DnsError::Timeout { server, name: "x.fi".into() }.is_transient());
        let refused =
            DnsError::Refused { op: "UPDATE", server, zone: "x.fi".into(), detail: "BADKEY".into() };
        assert!(!refused.is_transient());
        let record = DnsError::BadRecord {
            name: "x.fi.".into(),
            rtype: "A".into(),
            content: "y".into(),
            reason: "z".into(),
        };
        assert!(!record.is_transient());
    }
}
