//! DNS classification against two real pdns_server instances on loopback: "ours" (the
//! company's nameservers) and "someone else's", asked directly as the resolvers, plus a
//! resolver that never answers.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use siirto::dns::classify::{
    ClassifySettings, DomainClass, Facts, Flag, MailClass, NsClass, Outcome, WebClass, classify_all,
};
use siirto::dns::{DnsProvider, PowerDns, Rrset, RrsetChange};
use siirto::names::DomainName;
use siirto::secret::Secret;

use crate::support::pdns::Pdns;
use crate::support::public_dns::{self, OURS_IP, ROOT_IP, THEIRS_IP};

const SOURCE: &str = "192.0.2.10";
const SOURCE_V6: &str = "2001:db8::10";
const TARGET: &str = "203.0.113.20";
const OUR_NS: [&str; 2] = ["ns1.hosting.test.", "ns2.hosting.test."];
const THEIR_NS: [&str; 2] = ["ns1.otherdns.test.", "ns2.otherdns.test."];

fn domain(name: &str) -> DomainName {
    DomainName::parse(name).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn rrset(name: &str, rtype: &str, ttl: u32, records: &[&str]) -> Rrset {
    Rrset {
        name: name.into(),
        rtype: rtype.into(),
        ttl,
        records: records.iter().map(|s| s.to_string()).collect(),
    }
}

async fn create(pdns: &Pdns, zone: &str, nameservers: &[&str], rrsets: Vec<Rrset>) {
    let provider =
        PowerDns::new(pdns.api_url.clone(), Secret::new(&pdns.api_key), "localhost".into()).unwrap();
    let nameservers: Vec<String> = nameservers.iter().map(|s| s.to_string()).collect();
    provider
        .create_zone(&domain(zone), &nameservers, &rrsets)
        .await
        .unwrap_or_else(|err| panic!("creating {zone}: {err}\n{}", pdns.log()));
}

/// The zones of every class: ours on `ours`, the customers' own DNS and Microsoft's on `theirs`.
async fn create_zones(ours: &Pdns, theirs: &Pdns) {
    // Own NS, site and mail at the source, a subdomain inside the zone.
    create(
        ours,
        "local.test",
        &OUR_NS,
        vec![
            rrset("local.test.", "A", 3600, &[SOURCE]),
            rrset("local.test.", "AAAA", 900, &[SOURCE_V6]),
            rrset("local.test.", "MX", 1800, &["10 mail.local.test."]),
            rrset("mail.local.test.", "A", 3600, &[SOURCE]),
            rrset("blog.local.test.", "A", 120, &[SOURCE]),
        ],
    )
    .await;
    // Own NS, mail through the company's spam filter.
    create(
        ours,
        "filtered.test",
        &OUR_NS,
        vec![
            rrset("filtered.test.", "A", 300, &[SOURCE]),
            rrset("filtered.test.", "MX", 600, &["10 mx1.filter.example.net.", "20 mx2.filter.example.net."]),
        ],
    )
    .await;
    // Already at the target; the domain itself is its MX host.
    create(
        ours,
        "moved.test",
        &OUR_NS,
        vec![rrset("moved.test.", "A", 60, &[TARGET]), rrset("moved.test.", "MX", 60, &["0 moved.test."])],
    )
    .await;
    // Site at the source, mail at Microsoft 365.
    create(
        ours,
        "office.test",
        &OUR_NS,
        vec![
            rrset("office.test.", "A", 3600, &[SOURCE]),
            rrset("office.test.", "MX", 3600, &["0 office-test.mail.protection.outlook.test."]),
        ],
    )
    .await;
    // Half delegated to someone else; no site, no mail.
    create(ours, "mixed.test", &["ns1.hosting.test.", "ns.otherdns.test."], vec![]).await;

    // The customer's own DNS elsewhere, pointing at their own servers.
    create(
        theirs,
        "external.test",
        &THEIR_NS,
        vec![
            rrset("external.test.", "A", 7200, &["198.51.100.7"]),
            rrset("external.test.", "MX", 7200, &["10 mail.external.test."]),
            rrset("mail.external.test.", "A", 7200, &["198.51.100.8"]),
        ],
    )
    .await;
    // The customer's own DNS, but pointing at our source server: they must repoint.
    create(
        theirs,
        "extsource.test",
        &THEIR_NS,
        vec![
            rrset("extsource.test.", "A", 14400, &[SOURCE]),
            rrset("extsource.test.", "MX", 14400, &["10 mail.local.test."]),
        ],
    )
    .await;
    create(
        theirs,
        "outlook.test",
        &THEIR_NS,
        vec![rrset("office-test.mail.protection.outlook.test.", "A", 10, &["198.51.100.5"])],
    )
    .await;
}

/// A UDP socket that reads every query and never answers.
async fn silent_resolver() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind a UDP socket");
    let address = socket.local_addr().expect("its address");
    let task = tokio::spawn(async move {
        let mut buffer = [0u8; 2048];
        while socket.recv_from(&mut buffer).await.is_ok() {}
    });
    (address, task)
}

fn by_name<'a>(results: &'a [DomainClass], name: &str) -> &'a DomainClass {
    results.iter().find(|c| c.domain.as_str() == name).unwrap_or_else(|| panic!("{name} not in results"))
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_from_two_real_nameservers_and_a_silent_one() {
    let (ours, theirs) = tokio::join!(Pdns::start(), Pdns::start());
    create_zones(&ours, &theirs).await;
    let (silent, silent_task) = silent_resolver().await;

    let facts = Facts {
        own_nameservers: vec![domain("ns1.hosting.test"), domain("ns2.hosting.test")],
        source_ips: vec![ip(SOURCE), ip(SOURCE_V6)],
        target_ips: vec![ip(TARGET)],
        spam_filters: vec![domain("filter.example.net")],
    };
    let settings = ClassifySettings {
        resolvers: vec![ours.dns_addr, theirs.dns_addr, silent],
        query_timeout: Duration::from_millis(300),
        concurrency: 8,
    };
    let names = [
        "local.test",
        "blog.local.test",
        "filtered.test",
        "moved.test",
        "office.test",
        "mixed.test",
        "external.test",
        "extsource.test",
        "gone.local.test",
        "nobody.test",
    ];
    let domains: Vec<DomainName> = names.iter().map(|n| domain(n)).collect();
    let started = Instant::now();
    let results = classify_all(&domains, &facts, &settings).await.expect("resolvers");
    let took = started.elapsed();
    silent_task.abort();

    // In the order asked, one each.
    let order: Vec<&str> = results.iter().map(|c| c.domain.as_str()).collect();
    assert_eq!(order, names);
    let class = |name: &str| {
        by_name(&results, name)
            .classification()
            .unwrap_or_else(|| panic!("{name} not classified: {:?}", by_name(&results, name)))
            .clone()
    };
    let own_ns = NsClass::Own { nameservers: strings(&["ns1.hosting.test", "ns2.hosting.test"]) };
    let their_ns = NsClass::External { nameservers: strings(&["ns1.otherdns.test", "ns2.otherdns.test"]) };

    let local = class("local.test");
    assert_eq!(local.zone, "local.test");
    assert_eq!(local.ns, own_ns);
    assert_eq!(local.web, WebClass::AtSource { addresses: vec![ip(SOURCE), ip(SOURCE_V6)] });
    assert_eq!(local.mail, MailClass::AtSource { hosts: strings(&["mail.local.test"]) });
    assert_eq!((local.a_ttl, local.aaaa_ttl, local.mx_ttl), (Some(3600), Some(900), Some(1800)));
    assert!(local.flags.is_empty(), "{:?}", local.flags);

    // A subdomain is classified by the zone that holds it.
    let blog = class("blog.local.test");
    assert_eq!(blog.zone, "local.test");
    assert_eq!(blog.ns, own_ns);
    assert_eq!(blog.web, WebClass::AtSource { addresses: vec![ip(SOURCE)] });
    assert_eq!(blog.mail, MailClass::None);
    assert_eq!((blog.a_ttl, blog.aaaa_ttl, blog.mx_ttl), (Some(120), None, None));

    let filtered = class("filtered.test");
    assert_eq!(filtered.ns, own_ns);
    assert_eq!(
        filtered.mail,
        MailClass::SpamFilter { hosts: strings(&["mx1.filter.example.net", "mx2.filter.example.net"]) }
    );
    assert_eq!((filtered.a_ttl, filtered.mx_ttl), (Some(300), Some(600)));
    assert_eq!(filtered.flags, vec![Flag::SpamFilter]);

    let moved = class("moved.test");
    assert_eq!(moved.web, WebClass::AtTarget { addresses: vec![ip(TARGET)] });
    assert_eq!(moved.mail, MailClass::AtTarget { hosts: strings(&["moved.test"]) });
    assert_eq!((moved.a_ttl, moved.mx_ttl), (Some(60), Some(60)));

    let office = class("office.test");
    assert_eq!(office.web, WebClass::AtSource { addresses: vec![ip(SOURCE)] });
    assert_eq!(
        office.mail,
        MailClass::Elsewhere { hosts: strings(&["office-test.mail.protection.outlook.test"]) }
    );
    assert!(office.flags.is_empty(), "{:?}", office.flags);

    let mixed = class("mixed.test");
    assert_eq!(
        mixed.ns,
        NsClass::Mixed { own: strings(&["ns1.hosting.test"]), external: strings(&["ns.otherdns.test"]) }
    );
    assert_eq!((mixed.web.clone(), mixed.mail.clone()), (WebClass::None, MailClass::None));
    assert_eq!(mixed.flags, vec![Flag::MixedDns]);

    let external = class("external.test");
    assert_eq!(external.ns, their_ns);
    assert_eq!(external.web, WebClass::Elsewhere { addresses: vec![ip("198.51.100.7")] });
    assert_eq!(external.mail, MailClass::Elsewhere { hosts: strings(&["mail.external.test"]) });
    assert_eq!((external.a_ttl, external.mx_ttl), (Some(7200), Some(7200)));
    assert_eq!(external.flags, vec![Flag::ExternalDns]);

    let extsource = class("extsource.test");
    assert_eq!(extsource.ns, their_ns);
    assert_eq!(extsource.web, WebClass::AtSource { addresses: vec![ip(SOURCE)] });
    // Its MX host lives in one of our zones: asked across both servers.
    assert_eq!(extsource.mail, MailClass::AtSource { hosts: strings(&["mail.local.test"]) });
    assert_eq!((extsource.a_ttl, extsource.mx_ttl), (Some(14400), Some(14400)));
    assert_eq!(extsource.flags, vec![Flag::ExternalDns]);

    let gone = class("gone.local.test");
    assert_eq!(gone.ns, NsClass::NoDelegation { reason: "NXDOMAIN".into() });
    assert_eq!((gone.web.clone(), gone.mail.clone()), (WebClass::None, MailClass::None));
    assert_eq!(gone.flags, vec![Flag::NoDelegation]);

    // Neither server serves it and the third never answers: flagged with every reason.
    let nobody = by_name(&results, "nobody.test");
    let Outcome::Failed { reason } = &nobody.outcome else { panic!("nobody.test classified: {nobody:?}") };
    assert!(reason.contains(&format!("{} answered REFUSED", ours.dns_addr)), "{reason}");
    assert!(reason.contains(&format!("{} answered REFUSED", theirs.dns_addr)), "{reason}");
    assert!(reason.contains(&format!("{silent} did not answer in time")), "{reason}");
    assert_eq!(nobody.flags(), vec![Flag::LookupFailed]);

    // The silent resolver costs its timeout (with one retry) once per query, in parallel.
    assert!(took < Duration::from_secs(10), "classification took {took:?}");

    // No cache between us and the server: a change is seen on the next classification.
    let provider =
        PowerDns::new(ours.api_url.clone(), Secret::new(&ours.api_key), "localhost".into()).unwrap();
    let lowered = rrset("local.test.", "A", 300, &[TARGET]);
    provider.apply(&domain("local.test"), &[RrsetChange::Replace(lowered)]).await.expect("lower the TTL");
    let settings = ClassifySettings { resolvers: vec![ours.dns_addr, theirs.dns_addr], ..settings };
    let again = classify_all(&[domain("local.test")], &facts, &settings).await.expect("resolvers");
    let local = again[0].classification().expect("classified");
    assert_eq!(local.a_ttl, Some(300));
    let expected =
        WebClass::Mixed { at_source: vec![ip(SOURCE_V6)], at_target: vec![ip(TARGET)], elsewhere: vec![] };
    assert_eq!(local.web, expected);
    assert_eq!(local.flags, vec![Flag::MixedWeb]);
}

/// Many domains at once through one resolver: bounded concurrency, every one classified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_domains_with_bounded_concurrency() {
    let ours = Pdns::start().await;
    let count = 1000;
    let rrsets: Vec<Rrset> = (0..count)
        .flat_map(|i| {
            let address = if i % 2 == 0 { SOURCE } else { "198.51.100.7" };
            [
                rrset(&format!("h{i}.bulk.test."), "A", 600 + i, &[address]),
                rrset(&format!("h{i}.bulk.test."), "MX", 60, &["10 mail.bulk.test."]),
            ]
        })
        .chain([rrset("mail.bulk.test.", "A", 3600, &[SOURCE])])
        .collect();
    create(&ours, "bulk.test", &OUR_NS, rrsets).await;
    let domains: Vec<DomainName> = (0..count).map(|i| domain(&format!("h{i}.bulk.test"))).collect();
    let facts = Facts {
        own_nameservers: vec![domain("ns1.hosting.test"), domain("ns2.hosting.test")],
        source_ips: vec![ip(SOURCE)],
        target_ips: vec![ip(TARGET)],
        spam_filters: vec![],
    };
    let settings = ClassifySettings {
        resolvers: vec![ours.dns_addr],
        query_timeout: Duration::from_secs(2),
        concurrency: 64,
    };
    let started = Instant::now();
    let results = classify_all(&domains, &facts, &settings).await.expect("resolvers");
    let took = started.elapsed();
    assert_eq!(results.len(), domains.len());
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.domain, domains[i]);
        let class = result.classification().unwrap_or_else(|| panic!("not classified: {result:?}"));
        assert_eq!(class.zone, "bulk.test");
        assert!(matches!(class.ns, NsClass::Own { .. }), "{result:?}");
        let expected_web = if i % 2 == 0 { "at_source" } else { "elsewhere" };
        assert_eq!(serde_json::to_value(&class.web).unwrap()["kind"], expected_web, "{result:?}");
        assert_eq!(class.a_ttl, Some(600 + i as u32));
        assert!(matches!(class.mail, MailClass::AtSource { .. }), "{result:?}");
    }
    eprintln!("classified {count} domains in {took:?}");
}

/// A public DNS tree of its own on loopback: a root server (BIND, 127.0.0.1:53) delegating `stale.test` to
/// the customer's DNS host and `own.test` to ours, two PowerDNS at port 53 of their own
/// addresses, and a recursive BIND that follows the delegations. Our nameservers keep a stale
/// zone for `stale.test`: asked directly they call it ours; through the resolver, as the world
/// sees it, it is external — and the plan flags the stale zone and never repoints it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_decides_not_a_stale_zone_on_our_nameservers() {
    // Port 53 of these addresses is the public DNS rig's too: held until every server is gone.
    let _lock = public_dns::lock().await;
    let (ours_ip, theirs_ip, root_ip) = (OURS_IP, THEIRS_IP, ROOT_IP);
    let (ours, theirs) = tokio::join!(
        Pdns::start_at(SocketAddr::new(IpAddr::V4(ours_ip), 53)),
        Pdns::start_at(SocketAddr::new(IpAddr::V4(theirs_ip), 53))
    );
    for zone in ["stale.test", "own.test"] {
        create(&ours, zone, &OUR_NS, vec![rrset(&format!("{zone}."), "A", 3600, &[SOURCE])]).await;
    }
    create(&theirs, "stale.test", &THEIR_NS, vec![rrset("stale.test.", "A", 3600, &[SOURCE])]).await;
    let root = crate::support::bind::Bind::start_root(
        root_ip,
        &format!(
            "stale.test. NS ns1.otherdns.test.\nstale.test. NS ns2.otherdns.test.\n\
             own.test. NS ns1.hosting.test.\nown.test. NS ns2.hosting.test.\n\
             ns1.otherdns.test. A {theirs_ip}\nns2.otherdns.test. A {theirs_ip}\n\
             ns1.hosting.test. A {ours_ip}\nns2.hosting.test. A {ours_ip}\n"
        ),
    )
    .await;
    let resolver = crate::support::bind::Bind::start_recursive(root_ip).await;

    let facts = Facts {
        own_nameservers: vec![domain("ns1.hosting.test"), domain("ns2.hosting.test")],
        source_ips: vec![ip(SOURCE)],
        target_ips: vec![ip(TARGET)],
        spam_filters: vec![],
    };
    let settings =
        |resolvers| ClassifySettings { resolvers, query_timeout: Duration::from_secs(2), concurrency: 2 };
    let names = [domain("stale.test"), domain("own.test")];
    let ns = |classes: &[DomainClass], n: usize| match &classes[n].outcome {
        Outcome::Classified(c) => c.ns.clone(),
        Outcome::Failed { reason } => {
            panic!("{}: {reason}\nroot:\n{}\nresolver:\n{}", names[n], root.log(), resolver.log())
        }
    };

    // Asked directly, our nameservers answer from the stale zone: the unsafe way.
    let direct = classify_all(&names, &facts, &settings(vec![ours.dns_addr])).await.unwrap();
    assert!(matches!(ns(&direct, 0), NsClass::Own { .. }), "{direct:#?}");

    // Through a recursive resolver: by delegation.
    let classes = classify_all(&names, &facts, &settings(vec![resolver.dns_addr])).await.unwrap();
    assert!(matches!(ns(&classes, 0), NsClass::External { .. }), "{classes:#?}");
    assert!(matches!(ns(&classes, 1), NsClass::Own { .. }), "{classes:#?}");
    let (action, _, flags) = siirto::plan::domain_action(Some("stale.test"), Some(&classes[0]));
    assert_eq!(action, siirto::plan::DomainAction::MoveCustomerMustRepoint);
    assert!(flags.iter().any(|f| f.starts_with("stale zone on our nameservers")), "{flags:?}");
    let (action, _, flags) = siirto::plan::domain_action(Some("own.test"), Some(&classes[1]));
    assert_eq!(action, siirto::plan::DomainAction::MoveAndRepoint, "{flags:?}");
}
