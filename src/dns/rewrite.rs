//! Pure DNS record rewriting: which records of a zone move when an account moves from one host
//! to another, what each becomes (A, AAAA, SPF `ip4:`/`ip6:`, MX and CNAME naming the host), the
//! records created for an IPv6 target, what a rollback writes back, and the safety threshold a
//! repoint batch must pass. No I/O: zones in, changes out (the engine's steps read and write).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::dns::{Rrset, RrsetChange, Zone};
use crate::domain::ObservedRecord;
use crate::names::DomainName;

/// Where a host's records point: its address and, when known, its host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The IPv4 address.
    pub ip: Ipv4Addr,
    /// The IPv6 address, if any.
    pub ipv6: Option<Ipv6Addr>,
    /// Absolute, lower case, with the trailing dot.
    pub hostname: Option<String>,
}

/// Zones with fewer rrsets than this are exempt from the change-share threshold (octoDNS's
/// `MIN_EXISTING_RECORDS`): moving a small zone's site changes most of it by nature.
pub const THRESHOLD_MIN_RRSETS: usize = 10;

/// What becomes of one record that points at `from` when it moves to `to`: `Some(Some(new))`
/// its new content, `Some(None)` removed (an AAAA at `from` when `to` has no IPv6: it must not
/// keep pointing at the old server), `None` when the record points elsewhere (and so is never
/// touched):
/// - `A` equal to `from`'s address;
/// - `AAAA` equal to `from`'s IPv6 address;
/// - `TXT` SPF (`v=spf1`) with an `ip4:` (or `ip6:`) mechanism for `from`'s address (that token
///   is rewritten, or dropped when `to` has no IPv6);
/// - `MX` and `CNAME` whose target is `from`'s host name (never an MX at a spam filter or a
///   third party's mail server).
pub fn rewrite_record(rtype: &str, content: &str, from: &Endpoint, to: &Endpoint) -> Option<Option<String>> {
    match rtype {
        "A" => (content == from.ip.to_string()).then(|| Some(to.ip.to_string())),
        "AAAA" => {
            let from_v6 = from.ipv6?;
            (content.trim().parse::<Ipv6Addr>().ok()? == from_v6).then(|| to.ipv6.map(|v6| v6.to_string()))
        }
        "TXT" => rewrite_spf(content, from, to).map(Some),
        "MX" => {
            let (from_host, to_host) = (from.hostname.as_deref()?, to.hostname.as_deref()?);
            let (priority, exchange) = content.split_once(' ')?;
            exchange.trim().eq_ignore_ascii_case(from_host).then(|| Some(format!("{priority} {to_host}")))
        }
        "CNAME" => {
            let (from_host, to_host) = (from.hostname.as_deref()?, to.hostname.as_deref()?);
            content.trim().eq_ignore_ascii_case(from_host).then(|| Some(to_host.to_owned()))
        }
        _ => None,
    }
}

/// Rewrites the `ip4:FROM` (or `ip4:FROM/32`) and `ip6:FROM6` (or `/128`) mechanisms of an SPF
/// TXT record to `to`'s addresses, keeping everything else (quotes, qualifiers' neighbours,
/// other mechanisms) as it is. An `ip6:` mechanism for `from` is dropped when `to` has no IPv6
/// (mail from the old server's address must not stay authorised).
pub fn rewrite_spf(content: &str, from: &Endpoint, to: &Endpoint) -> Option<String> {
    if !content.to_ascii_lowercase().contains("v=spf1") {
        return None;
    }
    let mut changed = false;
    let mut tokens: Vec<String> = Vec::new();
    // Quotes of a dropped token that open the next one.
    let mut pending_open = String::new();
    for token in content.split(' ') {
        let start = token.len() - token.trim_start_matches('"').len();
        let end = token.trim_end_matches('"').len();
        if start >= end {
            tokens.push(token.to_owned());
            continue;
        }
        let core = &token[start..end];
        // The mechanism with an optional qualifier (`+ip4:`, `~ip6:`, …).
        let (qualifier, mechanism) = match core.chars().next() {
            Some(q @ ('+' | '-' | '~' | '?')) => (q.to_string(), &core[1..]),
            _ => (String::new(), core),
        };
        let lower = mechanism.to_ascii_lowercase();
        let replacement = if let Some(rest) = lower.strip_prefix("ip4:") {
            let (address, suffix) = rest.split_once('/').map_or((rest, ""), |(a, _)| (a, "/32"));
            let exact = suffix.is_empty() || rest.ends_with("/32");
            (exact && address.parse::<Ipv4Addr>().ok() == Some(from.ip))
                .then(|| Some(format!("{qualifier}ip4:{}{suffix}", to.ip)))
        } else if let Some(rest) = lower.strip_prefix("ip6:") {
            let (address, suffix) = rest.split_once('/').map_or((rest, ""), |(a, _)| (a, "/128"));
            let exact = suffix.is_empty() || rest.ends_with("/128");
            (exact && from.ipv6.is_some() && address.parse::<Ipv6Addr>().ok() == from.ipv6)
                .then(|| to.ipv6.map(|v6| format!("{qualifier}ip6:{v6}{suffix}")))
        } else {
            None
        };
        let token = match replacement {
            None => token.to_owned(),
            Some(Some(new)) => {
                changed = true;
                format!("{}{new}{}", &token[..start], &token[end..])
            }
            Some(None) => {
                // Dropped: its quotes move to its neighbours, so the string stays well formed.
                changed = true;
                let (open, close) = (&token[..start], &token[end..]);
                match tokens.last_mut() {
                    Some(previous) => previous.push_str(close),
                    None => pending_open.push_str(close),
                }
                pending_open.push_str(open);
                continue;
            }
        };
        tokens.push(format!("{}{token}", std::mem::take(&mut pending_open)));
    }
    if !pending_open.is_empty() {
        match tokens.last_mut() {
            Some(previous) => previous.push_str(&pending_open),
            None => tokens.push(pending_open),
        }
    }
    changed.then(|| tokens.join(" "))
}

/// The rrset with every record pointing at `from` pointing at `to` (duplicates folded; records
/// with no counterpart at `to` left out, so the result may be empty), or `None` when no record
/// of it points at `from`.
pub fn rewrite_rrset(rrset: &Rrset, from: &Endpoint, to: &Endpoint) -> Option<Rrset> {
    let mut changed = false;
    let mut records: Vec<String> = Vec::with_capacity(rrset.records.len());
    for content in &rrset.records {
        let content = match rewrite_record(&rrset.rtype, content, from, to) {
            Some(Some(new)) => {
                changed = true;
                new
            }
            Some(None) => {
                changed = true;
                continue;
            }
            None => content.clone(),
        };
        if !records.contains(&content) {
            records.push(content);
        }
    }
    changed.then(|| Rrset { records, ..rrset.clone() })
}

/// The change that writes `rrset`: a replacement, or a deletion when it has no records left.
pub fn write_rrset(rrset: Rrset) -> RrsetChange {
    if rrset.records.is_empty() {
        RrsetChange::Delete { name: rrset.name, rtype: rrset.rtype }
    } else {
        RrsetChange::Replace(rrset)
    }
}

/// The values of `rrset` that the move from `from` to `to` removes, or rewrites so that moving
/// back would not give them again (an SPF record losing its `ip6:` token): what a rollback
/// must restore as they were.
pub fn removed_values(rrset: &Rrset, from: &Endpoint, to: &Endpoint) -> Vec<String> {
    rrset
        .records
        .iter()
        .filter(|content| match rewrite_record(&rrset.rtype, content, from, to) {
            Some(None) => true,
            Some(Some(moved)) => round_trip(&rrset.rtype, &moved, to, from) != **content,
            None => false,
        })
        .cloned()
        .collect()
}

/// `content` moved from `from` to `to` (itself when it does not point at `from`).
pub fn round_trip(rtype: &str, content: &str, from: &Endpoint, to: &Endpoint) -> String {
    match rewrite_record(rtype, content, from, to) {
        Some(Some(moved)) => moved,
        Some(None) | None => content.to_owned(),
    }
}

/// The zone's negative-caching TTL, min(SOA TTL, SOA MINIMUM) (RFC 2308 §5): how long a resolver
/// may remember that a name has no record of a type. A zone without a readable SOA gets three
/// hours, the top of RFC 2308's recommended range, so a created record is never gated too early.
pub fn negative_ttl(zone: &Zone) -> u32 {
    const FALLBACK: u32 = 10_800;
    let Some(soa) = zone.rrset(&zone.name.fqdn(), "SOA") else { return FALLBACK };
    let minimum = soa.records.first().and_then(|r| r.split_whitespace().nth(6)?.parse::<u32>().ok());
    minimum.map_or(FALLBACK, |minimum| minimum.min(soa.ttl))
}

/// The AAAA records to create with `target_v6` for a domain whose A rrsets `moving` move: one
/// for each such name that has no AAAA rrset yet (a name with AAAA records elsewhere keeps them
/// and gets none), gated by the zone's negative TTL and later given its A record's TTL.
pub fn aaaa_to_create(zone: &Zone, moving: &[&Rrset], target_v6: Ipv6Addr) -> Vec<ObservedRecord> {
    let negative = negative_ttl(zone);
    moving
        .iter()
        .filter(|r| r.rtype == "A" && zone.rrset(&r.name, "AAAA").is_none())
        .map(|r| ObservedRecord {
            name: r.name.clone(),
            rtype: "AAAA".into(),
            old_ttl: r.ttl,
            created: vec![target_v6.to_string()],
            negative_ttl: Some(negative),
            ..ObservedRecord::default()
        })
        .collect()
}

/// The rrset a created record must be written as, given what the zone holds at its name: its
/// values added to the rrset (with the short TTL when the rrset is new), or `None` when they
/// are all there already.
pub fn created_rrset(zone: &Zone, record: &ObservedRecord, short_ttl: u32) -> Option<Rrset> {
    let mut rrset = zone.rrset(&record.name, &record.rtype).cloned().unwrap_or_else(|| Rrset {
        name: record.name.clone(),
        rtype: record.rtype.clone(),
        ttl: short_ttl,
        records: Vec::new(),
    });
    let missing: Vec<String> =
        record.created.iter().filter(|v| !rrset.records.contains(v)).cloned().collect();
    if missing.is_empty() {
        return None;
    }
    rrset.records.extend(missing);
    Some(rrset)
}

/// The change a rollback makes to one recorded record: what points at the target points at the
/// source again (`back`: the account's moves reversed), removed values come back and created ones go (they have no source
/// counterpart); the short TTL when `relower` (its TTL had been restored) or when the rrset is
/// written anew. `None` when the zone already holds exactly that.
pub fn rollback_change(
    zone: &Zone,
    record: &ObservedRecord,
    back: &[(Endpoint, Endpoint)],
    target: &Endpoint,
    source: &Endpoint,
    short_ttl: u32,
    relower: bool,
) -> Option<RrsetChange> {
    let current = zone.rrset(&record.name, &record.rtype);
    let mut wanted = match current {
        Some(current) => rewrite_rrset_moves(current, back).unwrap_or_else(|| current.clone()),
        None => Rrset {
            name: record.name.clone(),
            rtype: record.rtype.clone(),
            ttl: short_ttl,
            records: Vec::new(),
        },
    };
    wanted.records.retain(|v| !record.created.contains(v));
    for original in &record.removed {
        // What the original became at the target and then back here, if anything: replaced
        // by the original itself.
        let there = match rewrite_record(&record.rtype, original, source, target) {
            Some(Some(moved)) => Some(moved),
            Some(None) | None => None,
        };
        let back = there.map(|moved| round_trip(&record.rtype, &moved, target, source));
        match back.and_then(|back| wanted.records.iter().position(|v| *v == back)) {
            Some(at) => wanted.records[at] = original.clone(),
            None if !wanted.records.contains(original) => wanted.records.push(original.clone()),
            None => {}
        }
        wanted.records.dedup();
    }
    if relower && wanted.ttl > short_ttl {
        wanted.ttl = short_ttl;
    }
    match current {
        Some(current) if *current == wanted => None,
        None if wanted.records.is_empty() => None,
        _ => Some(write_rrset(wanted)),
    }
}

/// The rrset with every record pointing at one of the moves' `from` pointing at its `to`,
/// the moves applied in order (see [`rewrite_rrset`]), or `None` when no record matched.
pub fn rewrite_rrset_moves(rrset: &Rrset, moves: &[(Endpoint, Endpoint)]) -> Option<Rrset> {
    let mut current: Option<Rrset> = None;
    for (from, to) in moves {
        if let Some(new) = rewrite_rrset(current.as_ref().unwrap_or(rrset), from, to) {
            current = Some(new);
        }
    }
    current
}

/// The address the domain's own A record will hold once `moves` are applied (its first
/// record), if it has one: what every own nameserver must then answer.
pub fn apex_address_after(
    zone: &Zone,
    domain: &DomainName,
    moves: &[(Endpoint, Endpoint)],
) -> Option<Ipv4Addr> {
    let rrset = zone.rrset(&domain.fqdn(), "A")?;
    let after = rewrite_rrset_moves(rrset, moves).unwrap_or_else(|| rrset.clone());
    after.records.first()?.parse().ok()
}

/// The rrsets of `domain` that will change by `moves`: its own name and the names directly
/// below it that are not tracked domains of their own, with a record pointing at one of the
/// moves' `from` (see [`rewrite_record`]).
pub fn records_to_change<'z>(
    zone: &'z Zone,
    domain: &DomainName,
    tracked: &[&str],
    moves: &[(Endpoint, Endpoint)],
) -> Vec<&'z Rrset> {
    let own = domain.fqdn();
    let suffix = format!(".{own}");
    zone.rrsets
        .iter()
        .filter(|rrset| {
            let name = rrset.name.to_ascii_lowercase();
            if name == own {
                return true;
            }
            let Some(label) = name.strip_suffix(&suffix) else { return false };
            // Only one level down, and not a domain tracked on its own (a subdomain account).
            !label.contains('.') && !tracked.iter().any(|t| format!("{t}.") == name)
        })
        .filter(|rrset| rewrite_rrset_moves(rrset, moves).is_some())
        .collect()
}

/// Why a repoint batch for one zone must not be written, if it must not (octoDNS's safety
/// threshold): it changes a record the plan did not record at the lowering (whose TTL was
/// therefore never lowered), or more than `max_share` of a zone of at least
/// [`THRESHOLD_MIN_RRSETS`] rrsets.
pub fn batch_refusal(
    zone: &Zone,
    changed: &[Rrset],
    planned: &[ObservedRecord],
    max_share: f64,
) -> Option<String> {
    let unplanned: Vec<String> = changed
        .iter()
        .filter(|c| !planned.iter().any(|p| p.name.eq_ignore_ascii_case(&c.name) && p.rtype == c.rtype))
        .map(|c| format!("{} {}", c.name, c.rtype))
        .collect();
    if !unplanned.is_empty() {
        return Some(format!(
            "it would change {} that the plan did not list (their TTL was never lowered)",
            unplanned.join(", ")
        ));
    }
    let total = zone.rrsets.len();
    if total >= THRESHOLD_MIN_RRSETS && changed.len() as f64 > max_share * total as f64 {
        return Some(format!(
            "it would change {} of the zone's {total} rrsets, more than the playbook's dns.max_change_share of {max_share}",
            changed.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(name: &str, rtype: &str, content: &str) -> Rrset {
        Rrset { name: name.into(), rtype: rtype.into(), ttl: 3600, records: vec![content.into()] }
    }

    fn ends() -> (Endpoint, Endpoint) {
        (
            Endpoint {
                ip: "127.0.0.2".parse().unwrap(),
                ipv6: None,
                hostname: Some("old1.example.net.".into()),
            },
            Endpoint {
                ip: "127.0.0.3".parse().unwrap(),
                ipv6: None,
                hostname: Some("new1.example.net.".into()),
            },
        )
    }

    #[test]
    fn records_to_change_picks_own_names_pointing_at_the_source() {
        let zone = Zone {
            name: DomainName::parse("kukka.test").unwrap(),
            rrsets: vec![
                rr("kukka.test.", "A", "127.0.0.2"),
                rr("www.kukka.test.", "A", "127.0.0.2"),
                rr("elsewhere.kukka.test.", "A", "192.0.2.7"),
                rr("kukka.test.", "MX", "10 mail.kukka.test."),
                rr("kukka.test.", "TXT", "\"v=spf1 ip4:127.0.0.2 include:_spf.example.com -all\""),
                rr("_dmarc.kukka.test.", "TXT", "\"v=DMARC1; p=none\""),
                rr("old.kukka.test.", "CNAME", "old1.example.net."),
                rr("legacy.kukka.test.", "MX", "10 old1.example.net."),
                rr("filtered.kukka.test.", "MX", "10 mx1.spamfilter.example."),
                rr("a.b.kukka.test.", "A", "127.0.0.2"),
                rr("shop.kukka.test.", "A", "127.0.0.2"),
            ],
        };
        let tracked = vec!["kukka.test", "shop.kukka.test"];
        let (source, target) = ends();
        let picked = records_to_change(
            &zone,
            &DomainName::parse("kukka.test").unwrap(),
            &tracked,
            &[(source.clone(), target.clone())],
        );
        let names: Vec<(&str, &str)> = picked.iter().map(|r| (r.name.as_str(), r.rtype.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("kukka.test.", "A"),
                ("www.kukka.test.", "A"),
                ("kukka.test.", "TXT"),
                ("old.kukka.test.", "CNAME"),
                ("legacy.kukka.test.", "MX"),
            ]
        );
        // Without host names, MX and CNAME records are never touched.
        let bare = |e: &Endpoint| Endpoint { ip: e.ip, ipv6: None, hostname: None };
        let picked = records_to_change(
            &zone,
            &DomainName::parse("kukka.test").unwrap(),
            &tracked,
            &[(bare(&source), bare(&target))],
        );
        assert_eq!(picked.len(), 3);
    }

    #[test]
    fn rewrites_only_what_points_at_the_source() {
        let (source, target) = ends();
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("A", "127.0.0.2", Some("127.0.0.3")),
            ("A", "127.0.0.20", None),
            ("TXT", "\"v=spf1 ip4:127.0.0.2 mx -all\"", Some("\"v=spf1 ip4:127.0.0.3 mx -all\"")),
            ("TXT", "\"v=spf1 mx ip4:127.0.0.2/32\"", Some("\"v=spf1 mx ip4:127.0.0.3/32\"")),
            ("TXT", "\"v=spf1 ip4:127.0.0.22 -all\"", None),
            ("TXT", "\"v=spf1 ip4:127.0.0.0/24 -all\"", None),
            ("TXT", "\"google-site-verification=ip4:127.0.0.2\"", None),
            ("MX", "10 old1.example.net.", Some("10 new1.example.net.")),
            ("MX", "10 mx1.spamfilter.example.", None),
            ("MX", "10 mail.kukka.test.", None),
            ("CNAME", "OLD1.example.net.", Some("new1.example.net.")),
            ("CNAME", "cdn.example.com.", None),
            ("AAAA", "::1", None),
        ];
        for (rtype, content, expected) in cases {
            assert_eq!(
                rewrite_record(rtype, content, &source, &target).map(Option::unwrap),
                expected.map(str::to_owned),
                "{rtype} {content}"
            );
        }
        // And back: a rollback is the same rewrite the other way.
        assert_eq!(rewrite_record("A", "127.0.0.3", &target, &source), Some(Some("127.0.0.2".into())));
        // Duplicates fold: an rrset with both addresses ends with one.
        let rrset = Rrset { records: vec!["127.0.0.2".into(), "127.0.0.3".into()], ..rr("x.", "A", "") };
        assert_eq!(rewrite_rrset(&rrset, &source, &target).unwrap().records, vec!["127.0.0.3".to_owned()]);
    }

    fn v6_ends(source_v6: Option<&str>, target_v6: Option<&str>) -> (Endpoint, Endpoint) {
        let (mut source, mut target) = ends();
        source.ipv6 = source_v6.map(|v| v.parse().unwrap());
        target.ipv6 = target_v6.map(|v| v.parse().unwrap());
        (source, target)
    }

    #[test]
    fn aaaa_and_spf_ip6_move_with_the_ipv6_address() {
        let both = v6_ends(Some("2001:db8::2"), Some("2001:db8::3"));
        let source_only = v6_ends(Some("2001:db8::2"), None);
        // (rtype, content, ends, expected): Some(Some) rewritten, Some(None) removed, None untouched.
        type Case<'a> = (&'a str, &'a str, &'a (Endpoint, Endpoint), Option<Option<&'a str>>);
        let cases: Vec<Case<'_>> = vec![
            ("AAAA", "2001:db8::2", &both, Some(Some("2001:db8::3"))),
            ("AAAA", "2001:DB8:0::2", &both, Some(Some("2001:db8::3"))),
            ("AAAA", "2001:db8::9", &both, None),
            ("AAAA", "2001:db8::2", &source_only, Some(None)),
            (
                "TXT",
                r#""v=spf1 ip6:2001:db8::2 -all""#,
                &both,
                Some(Some(r#""v=spf1 ip6:2001:db8::3 -all""#)),
            ),
            (
                "TXT",
                r#""v=spf1 ip6:2001:db8::2/128 mx""#,
                &both,
                Some(Some(r#""v=spf1 ip6:2001:db8::3/128 mx""#)),
            ),
            ("TXT", r#""v=spf1 ip6:2001:db8::/64 -all""#, &both, None),
            (
                "TXT",
                r#""v=spf1 ip4:127.0.0.2 ip6:2001:db8::2 -all""#,
                &source_only,
                Some(Some(r#""v=spf1 ip4:127.0.0.3 -all""#)),
            ),
            ("TXT", r#""v=spf1 mx ip6:2001:db8::2""#, &source_only, Some(Some(r#""v=spf1 mx""#))),
            ("TXT", r#""v=spf1 +ip4:127.0.0.2 ~all""#, &both, Some(Some(r#""v=spf1 +ip4:127.0.0.3 ~all""#))),
        ];
        for (rtype, content, (source, target), expected) in cases {
            let got = rewrite_record(rtype, content, source, target);
            assert_eq!(got, expected.map(|e| e.map(str::to_owned)), "{rtype} {content}");
        }
        // An AAAA rrset holding only the source's address becomes empty: it is deleted.
        let (source, target) = &source_only;
        let rrset = rr("kukka.test.", "AAAA", "2001:db8::2");
        let moved = rewrite_rrset(&rrset, source, target).unwrap();
        assert!(matches!(write_rrset(moved), RrsetChange::Delete { rtype, .. } if rtype == "AAAA"));
        assert_eq!(removed_values(&rrset, source, target), vec!["2001:db8::2".to_owned()]);

        // Rollback puts the removed value back (the rrset is gone from the zone now).
        let zone = Zone { name: DomainName::parse("kukka.test").unwrap(), rrsets: vec![] };
        let record = ObservedRecord {
            removed: vec!["2001:db8::2".into()],
            ..ObservedRecord::changed("kukka.test.", "AAAA", 3600)
        };
        let back =
            rollback_change(&zone, &record, &[(target.clone(), source.clone())], target, source, 60, false)
                .unwrap();
        assert_eq!(back, RrsetChange::Replace(Rrset { ttl: 60, ..rrset.clone() }));

        // An SPF record that lost its ip6: token is recorded whole and restored as it was.
        let spf = rr("kukka.test.", "TXT", r#""v=spf1 ip4:127.0.0.2 ip6:2001:db8::2 -all""#);
        let removed = removed_values(&spf, source, target);
        assert_eq!(removed, spf.records);
        assert!(removed_values(&spf, &both.0, &both.1).is_empty(), "a lossless rewrite records nothing");
        let moved = rewrite_rrset(&spf, source, target).unwrap();
        let zone = Zone { name: DomainName::parse("kukka.test").unwrap(), rrsets: vec![moved] };
        let record = ObservedRecord { removed, ..ObservedRecord::changed("kukka.test.", "TXT", 3600) };
        let back =
            rollback_change(&zone, &record, &[(target.clone(), source.clone())], target, source, 60, false)
                .unwrap();
        assert_eq!(back, RrsetChange::Replace(spf));
    }

    #[test]
    fn created_aaaa_records_and_the_negative_ttl() {
        let soa = Rrset {
            name: "kukka.test.".into(),
            rtype: "SOA".into(),
            ttl: 3600,
            records: vec!["ns1.kukka.test. hostmaster.kukka.test. 7 10800 3600 604800 900".into()],
        };
        let a = Rrset { ttl: 300, ..rr("kukka.test.", "A", "127.0.0.2") };
        let www = rr("www.kukka.test.", "A", "127.0.0.2");
        let www_v6 = rr("www.kukka.test.", "AAAA", "2001:db8::77");
        let zone = Zone {
            name: DomainName::parse("kukka.test").unwrap(),
            rrsets: vec![soa.clone(), a.clone(), www.clone(), www_v6],
        };
        assert_eq!(negative_ttl(&zone), 900, "min(SOA TTL 3600, MINIMUM 900)");
        let low_soa = Zone { rrsets: vec![Rrset { ttl: 120, ..soa }], ..zone.clone() };
        assert_eq!(negative_ttl(&low_soa), 120);
        let no_soa = Zone { rrsets: vec![], ..zone.clone() };
        assert_eq!(negative_ttl(&no_soa), 10_800);

        // Only the apex gets one: www has AAAA records of its own, which are left alone.
        let created = aaaa_to_create(&zone, &[&a, &www], "2001:db8::3".parse().unwrap());
        assert_eq!(created.len(), 1);
        let record = &created[0];
        assert_eq!(
            (record.name.as_str(), record.rtype.as_str(), record.old_ttl),
            ("kukka.test.", "AAAA", 300)
        );
        assert_eq!(
            (record.negative_ttl, record.created.clone()),
            (Some(900), vec!["2001:db8::3".to_owned()])
        );

        let written = created_rrset(&zone, record, 60).unwrap();
        assert_eq!((written.ttl, written.records.clone()), (60, vec!["2001:db8::3".to_owned()]));
        let with_it = Zone { rrsets: vec![written.clone()], ..zone.clone() };
        assert_eq!(created_rrset(&with_it, record, 60), None, "already there: nothing to write");
        // Rollback deletes it.
        let (source, target) = v6_ends(None, Some("2001:db8::3"));
        let back = rollback_change(
            &with_it,
            record,
            &[(target.clone(), source.clone())],
            &target,
            &source,
            60,
            false,
        )
        .unwrap();
        assert_eq!(back, RrsetChange::Delete { name: "kukka.test.".into(), rtype: "AAAA".into() });
    }

    #[test]
    fn a_dedicated_ip_account_moves_from_its_address_to_the_assigned_one() {
        let (source, target) = ends();
        let dedicated = |ip: &str, e: &Endpoint| Endpoint { ip: ip.parse().unwrap(), ..e.clone() };
        let moves = vec![
            (dedicated("127.0.0.131", &source), dedicated("127.0.0.141", &target)),
            (source.clone(), target.clone()),
        ];
        // (record, after the move, after the rollback of the move)
        let cases: &[(&str, &str, &str)] = &[
            ("127.0.0.131", "127.0.0.141", "127.0.0.131"),
            ("127.0.0.2", "127.0.0.3", "127.0.0.2"),
            ("192.0.2.7", "192.0.2.7", "192.0.2.7"),
        ];
        let back: Vec<(Endpoint, Endpoint)> = moves.iter().map(|(f, t)| (t.clone(), f.clone())).collect();
        for (before, after, rolled_back) in cases {
            let rrset = rr("kukka.test.", "A", before);
            let moved = rewrite_rrset_moves(&rrset, &moves).unwrap_or_else(|| rrset.clone());
            assert_eq!(moved.records, vec![after.to_string()], "{before}");
            let back = rewrite_rrset_moves(&moved, &back).unwrap_or_else(|| moved.clone());
            assert_eq!(back.records, vec![rolled_back.to_string()], "{before}");
        }
        let zone = Zone {
            name: DomainName::parse("kukka.test").unwrap(),
            rrsets: vec![rr("kukka.test.", "A", "127.0.0.131"), rr("ftp.kukka.test.", "A", "127.0.0.2")],
        };
        let domain = DomainName::parse("kukka.test").unwrap();
        assert_eq!(apex_address_after(&zone, &domain, &moves), Some("127.0.0.141".parse().unwrap()));
        assert_eq!(records_to_change(&zone, &domain, &[], &moves).len(), 2);
        assert_eq!(records_to_change(&zone, &domain, &[], &moves[1..]).len(), 1);
    }

    #[test]
    fn the_safety_threshold_refuses_big_or_unplanned_batches() {
        let zone_of = |n: usize| Zone {
            name: DomainName::parse("kukka.test").unwrap(),
            rrsets: (0..n).map(|i| rr(&format!("h{i}.kukka.test."), "A", "127.0.0.2")).collect(),
        };
        let planned_for = |n: usize| -> Vec<ObservedRecord> {
            (0..n).map(|i| ObservedRecord::changed(format!("h{i}.kukka.test."), "A", 3600)).collect()
        };
        let changed = |n: usize| -> Vec<Rrset> {
            (0..n).map(|i| rr(&format!("h{i}.kukka.test."), "A", "127.0.0.3")).collect()
        };
        // (zone rrsets, changed, share, refused with)
        let cases: &[(usize, usize, f64, Option<&str>)] = &[
            (20, 10, 0.5, None),
            (20, 11, 0.5, Some("11 of the zone's 20 rrsets")),
            (20, 20, 1.0, None),
            (9, 9, 0.5, None),
            (10, 6, 0.5, Some("6 of the zone's 10")),
        ];
        for (total, n, share, expected) in cases {
            let refusal = batch_refusal(&zone_of(*total), &changed(*n), &planned_for(*n), *share);
            match expected {
                None => assert_eq!(refusal, None, "{total} {n} {share}"),
                Some(fragment) => assert!(refusal.as_deref().unwrap_or("").contains(fragment), "{refusal:?}"),
            }
        }
        let refusal = batch_refusal(&zone_of(20), &changed(3), &planned_for(2), 0.5).unwrap();
        assert!(refusal.contains("h2.kukka.test. A") && refusal.contains("did not list"), "{refusal}");
    }
}
