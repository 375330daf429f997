//! The DNS adapter against a real pdns_server and against the simulated nameserver: the same
//! scenario on both, so the simulator stays faithful to the real thing.

use std::net::{Ipv4Addr, SocketAddr};

use reqwest::Url;
use siirto::dns::{
    Checker, DnsError, DnsProvider, PowerDns, Rrset, RrsetChange, Verification, lower_ttl_changes,
    repoint_changes,
};
use siirto::names::DomainName;
use siirto::secret::Secret;
use siirto::sim::nameserver::SimNameserver;

use crate::support::pdns::Pdns;

const OLD: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NEW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 99);

fn domain(name: &str) -> DomainName {
    DomainName::parse(name).unwrap()
}

fn rrset(name: &str, rtype: &str, ttl: u32, records: &[&str]) -> Rrset {
    Rrset {
        name: name.into(),
        rtype: rtype.into(),
        ttl,
        records: records.iter().map(|s| s.to_string()).collect(),
    }
}

fn client(api_url: &Url, api_key: &str) -> PowerDns {
    PowerDns::new(api_url.clone(), Secret::new(api_key), "localhost".into()).unwrap()
}

/// The initial content of a customer zone: the apex and www at the old server, mail
/// elsewhere (an external spam filter), plus records of other types that must survive.
fn customer_rrsets(zone: &str) -> Vec<Rrset> {
    vec![
        rrset(&format!("{zone}."), "A", 3600, &["192.0.2.10"]),
        rrset(&format!("www.{zone}."), "A", 3600, &["192.0.2.10"]),
        rrset(&format!("mail.{zone}."), "A", 3600, &["198.51.100.99"]),
        rrset(&format!("{zone}."), "MX", 3600, &[&format!("10 mail.{zone}.")]),
        rrset(&format!("{zone}."), "TXT", 3600, &["\"v=spf1 a mx -all\""]),
        rrset(&format!("{zone}."), "AAAA", 3600, &["2001:db8::10"]),
        rrset(&format!("ftp.{zone}."), "CNAME", 3600, &[&format!("www.{zone}.")]),
    ]
}

fn serial(zone: &siirto::dns::Zone) -> u32 {
    let soa = zone.rrset(&zone.name.fqdn(), "SOA").expect("a SOA rrset");
    soa.records[0].split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The whole walk: create, read back, lower TTLs, verify, repoint, verify again.
async fn scenario(provider: &PowerDns, dns_addr: SocketAddr) {
    let zones = [domain("alpha.test"), domain("beta.test")];
    let nameservers = vec!["ns1.alpha.test.".to_string(), "ns2.alpha.test.".to_string()];
    for zone in &zones {
        provider.create_zone(zone, &nameservers, &customer_rrsets(zone.as_str())).await.unwrap();
    }

    let listed = provider.zones().await.unwrap();
    for zone in &zones {
        assert!(listed.contains(zone), "{zone} missing from {listed:?}");
    }

    let alpha = provider.zone(&zones[0]).await.unwrap();
    assert_eq!(alpha.name, zones[0]);
    for expected in customer_rrsets("alpha.test") {
        let got = alpha
            .rrset(&expected.name, &expected.rtype)
            .unwrap_or_else(|| panic!("{} {} missing: {alpha:?}", expected.name, expected.rtype));
        assert_eq!(got, &expected);
    }
    let soa = alpha.rrset("alpha.test.", "SOA").expect("a SOA rrset");
    assert!(soa.records[0].starts_with("ns1.alpha.test. hostmaster.alpha.test. "));
    let ns = alpha.rrset("alpha.test.", "NS").expect("an NS rrset");
    let mut ns_records = ns.records.clone();
    ns_records.sort();
    assert_eq!(ns_records, nameservers);

    let checker = Checker::new(vec![dns_addr]).unwrap();
    let www = domain("www.alpha.test");
    assert_eq!(checker.verify_a(&www, OLD).await.unwrap(), Verification::Served);
    // The CNAME is followed inside the answer.
    assert_eq!(checker.a_records(&domain("ftp.alpha.test")).await.unwrap(), vec![(dns_addr, vec![OLD])]);

    // Lower the TTLs: one PATCH per zone.
    for zone in &zones {
        let current = provider.zone(zone).await.unwrap();
        let changes = lower_ttl_changes(&current, OLD, 60);
        assert_eq!(changes.len(), 2, "apex and www point at the old server");
        provider.apply(zone, &changes).await.unwrap();
        let lowered = provider.zone(zone).await.unwrap();
        for name in [zone.fqdn(), format!("www.{}", zone.fqdn())] {
            assert_eq!(lowered.rrset(&name, "A").unwrap().ttl, 60, "{name}");
        }
        let mail = lowered.rrset(&format!("mail.{}", zone.fqdn()), "A").unwrap();
        assert_eq!(mail.ttl, 3600, "records pointing elsewhere keep their TTL");
        assert!(serial(&lowered) > serial(&current), "every PATCH bumps the SOA serial");
    }

    // Repoint alpha (all of it) and beta's www only.
    let alpha = provider.zone(&zones[0]).await.unwrap();
    provider.apply(&zones[0], &repoint_changes(&alpha, None, OLD, NEW)).await.unwrap();
    let beta = provider.zone(&zones[1]).await.unwrap();
    provider
        .apply(&zones[1], &repoint_changes(&beta, Some(&[domain("www.beta.test")]), OLD, NEW))
        .await
        .unwrap();

    let repointed = provider.zone(&zones[0]).await.unwrap();
    assert_eq!(serial(&repointed), serial(&alpha) + 1, "two rrsets repointed in one PATCH: one serial bump");
    let alpha = repointed;
    assert_eq!(
        alpha.rrset("www.alpha.test.", "A").unwrap(),
        &rrset("www.alpha.test.", "A", 60, &["203.0.113.20"])
    );
    assert_eq!(
        alpha.rrset("mail.alpha.test.", "A").unwrap(),
        &rrset("mail.alpha.test.", "A", 3600, &["198.51.100.99"])
    );
    assert_eq!(alpha.rrset("alpha.test.", "MX").unwrap().records, vec!["10 mail.alpha.test."]);

    for name in ["alpha.test", "www.alpha.test", "www.beta.test"] {
        assert_eq!(checker.verify_a(&domain(name), NEW).await.unwrap(), Verification::Served, "{name}");
    }
    assert_eq!(
        checker.verify_a(&domain("beta.test"), NEW).await.unwrap(),
        Verification::Stale { server: dns_addr, got: vec![OLD] },
        "beta's apex was not repointed"
    );
    assert_eq!(
        checker.verify_a(&domain("mail.alpha.test"), NEW).await.unwrap(),
        Verification::Stale { server: dns_addr, got: vec![ELSEWHERE] }
    );
    // A name that does not exist inside a served zone: NXDOMAIN, no addresses.
    assert_eq!(
        checker.verify_a(&domain("nothing.alpha.test"), NEW).await.unwrap(),
        Verification::Stale { server: dns_addr, got: vec![] }
    );

    // An answer too big for UDP: the checker falls back to TCP.
    let many: Vec<String> = (1..=150).map(|i| format!("10.0.{}.{}", i / 100, i % 100 + 1)).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    provider
        .apply(&zones[0], &[RrsetChange::Replace(rrset("big.alpha.test.", "A", 60, &many_refs))])
        .await
        .unwrap();
    let answers = checker.a_records(&domain("big.alpha.test")).await.unwrap();
    assert_eq!(answers[0].1.len(), 150);

    // Delete an rrset.
    provider
        .apply(&zones[1], &[RrsetChange::Delete { name: "mail.beta.test.".into(), rtype: "A".into() }])
        .await
        .unwrap();
    let beta = provider.zone(&zones[1]).await.unwrap();
    assert!(beta.rrset("mail.beta.test.", "A").is_none());
    assert_eq!(checker.a_records(&domain("mail.beta.test")).await.unwrap(), vec![(dns_addr, vec![])]);
}

/// Refusals: bad content (4xx with the API's text), an unknown zone, a wrong key, a name
/// outside every served zone.
async fn refusals(provider: &PowerDns, api_url: &Url, dns_addr: SocketAddr) {
    let zone = domain("gamma.test");
    provider.create_zone(&zone, &["ns1.gamma.test.".into()], &[]).await.unwrap();

    let bad = [RrsetChange::Replace(rrset("www.gamma.test.", "A", 60, &["not-an-address"]))];
    let err = provider.apply(&zone, &bad).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    match &err {
        DnsError::Api { status, message, .. } => {
            assert_eq!(*status, 422, "{err}");
            assert!(message.contains("not-an-address"), "{err}");
        }
        other => panic!("expected an API refusal, got {other:?}"),
    }
    // Nothing of a refused batch was applied.
    let good_and_bad = [
        RrsetChange::Replace(rrset("ok.gamma.test.", "A", 60, &["192.0.2.1"])),
        RrsetChange::Replace(rrset("www.gamma.test.", "A", 60, &["300.1.1.1"])),
    ];
    assert!(provider.apply(&zone, &good_and_bad).await.is_err());
    assert!(provider.zone(&zone).await.unwrap().rrset("ok.gamma.test.", "A").is_none());

    let missing = domain("missing.test");
    let err = provider.zone(&missing).await.unwrap_err();
    assert!(matches!(&err, DnsError::NoSuchZone { zone, .. } if zone == "missing.test"), "{err:?}");
    assert!(!err.is_transient());
    let err = provider
        .apply(&missing, &[RrsetChange::Replace(rrset("missing.test.", "A", 60, &["192.0.2.1"]))])
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err:?}");

    let err = provider.create_zone(&zone, &["ns1.gamma.test.".into()], &[]).await.unwrap_err();
    assert!(matches!(err, DnsError::Api { status: 409, .. }), "{err:?}");

    let wrong_key = client(api_url, "not-the-key");
    let err = wrong_key.zones().await.unwrap_err();
    assert!(matches!(err, DnsError::Unauthorized { status: 401, .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(!format!("{err:?}{err}").contains("not-the-key"));
    // The URL called is named; a key given without an origin is "the API key".
    let expected = format!("GET zones {api_url}api/v1/servers/localhost/zones: ");
    assert!(err.to_string().starts_with(&expected), "{err}");
    assert!(err.to_string().ends_with("it rejected the API key"), "{err}");

    let checker = Checker::new(vec![dns_addr]).unwrap();
    let err = checker.a_records(&domain("www.not-served.example")).await.unwrap_err();
    assert!(matches!(&err, DnsError::Rcode { rcode, .. } if rcode == "REFUSED"), "{err:?}");
}

/// Nothing listening: connection errors are transient, for the API and for DNS.
#[tokio::test]
async fn unreachable_servers_are_transient_errors() {
    let port = crate::support::pdns::free_udp_and_tcp_port().unwrap();
    let api_url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let err = client(&api_url, "key").zones().await.unwrap_err();
    assert!(matches!(err, DnsError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());

    let checker = Checker::new(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))]).unwrap();
    let err = checker.a_records(&domain("www.alpha.test")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(Checker::new(vec![]).is_err());
}

/// After shutdown nothing answers any more.
#[tokio::test]
async fn sim_nameserver_shuts_down() {
    let sim = SimNameserver::start("sim-key").await.unwrap();
    let (api_url, dns_addr) = (sim.api_url.clone(), sim.dns_addr);
    let provider = client(&api_url, "sim-key");
    provider.zones().await.unwrap();
    sim.shutdown().await;
    let err = provider.zones().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = Checker::new(vec![dns_addr]).unwrap().a_records(&domain("www.alpha.test")).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn powerdns_scenario() {
    let pdns = Pdns::start().await;
    let provider = client(&pdns.api_url, &pdns.api_key);
    scenario(&provider, pdns.dns_addr).await;
}

#[tokio::test]
async fn powerdns_refusals() {
    let pdns = Pdns::start().await;
    let provider = client(&pdns.api_url, &pdns.api_key);
    refusals(&provider, &pdns.api_url, pdns.dns_addr).await;
}

/// A config that names PowerDNS's API with its `/api/v1` path (as PowerDNS's own docs do)
/// reaches the same server as one without it: the provider built from it lists, reads and
/// writes zones.
#[tokio::test]
async fn powerdns_configured_with_the_api_v1_path() {
    let pdns = Pdns::start().await;
    let zone = domain("delta.test");
    client(&pdns.api_url, &pdns.api_key)
        .create_zone(&zone, &["ns1.delta.test.".into()], &customer_rrsets("delta.test"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pdns.key"), &pdns.api_key).unwrap();
    std::fs::write(dir.path().join("old1.token"), "whm-token").unwrap();
    for suffix in ["api/v1", "api/v1/"] {
        let text = format!(
            "database = \"sqlite:s.db\"\n\
             [hosts.old1]\nwhm_url = \"https://old1.example.net:2087\"\ntoken_file = \"old1.token\"\nip = \"198.51.100.10\"\n\
             [dns]\nprovider = \"powerdns\"\napi_url = \"{}{suffix}\"\napi_key_file = \"pdns.key\"\nnameservers = [\"{}\"]\n\
             [mail]\nfrom = \"support@example.fi\"\nchannel = \"directory\"\npath = \"outbox\"\n",
            pdns.api_url, pdns.dns_addr
        );
        let config = siirto::config::Config::parse(&text, "siirto.toml", dir.path()).expect("config");
        let world = siirto::world::World::from_config(&config).expect("world");
        assert_eq!(
            world.dns.zones().await.unwrap_or_else(|e| panic!("zones through {suffix}: {e}")),
            vec![zone.clone()]
        );
        let before = world.dns.zone(&zone).await.unwrap();
        let changes = repoint_changes(&before, None, OLD, NEW);
        world.dns.apply(&zone, &changes).await.expect("PATCH");
        let after = world.dns.zone(&zone).await.unwrap();
        assert_eq!(after.rrset("www.delta.test.", "A").unwrap().records, vec![NEW.to_string()], "{suffix}");
        world.dns.apply(&zone, &repoint_changes(&after, None, NEW, OLD)).await.unwrap();
    }
}

/// A config whose key file holds the wrong key: PowerDNS's refusal names the URL called and
/// the file to fix, never the key, and is not retried.
#[tokio::test]
async fn powerdns_refusing_the_key_names_the_url_and_the_key_file() {
    let pdns = Pdns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("pdns.key");
    std::fs::write(&key_file, "wrong-pdns-key\n").unwrap();
    std::fs::write(dir.path().join("old1.token"), "whm-token").unwrap();
    let text = format!(
        "database = \"sqlite:s.db\"\n\
         [hosts.old1]\nwhm_url = \"https://old1.example.net:2087\"\ntoken_file = \"old1.token\"\nip = \"198.51.100.10\"\n\
         [dns]\nprovider = \"powerdns\"\napi_url = \"{}\"\napi_key_file = \"pdns.key\"\nnameservers = [\"{}\"]\n\
         [mail]\nfrom = \"support@example.fi\"\nchannel = \"directory\"\npath = \"outbox\"\n",
        pdns.api_url, pdns.dns_addr
    );
    let config = siirto::config::Config::parse(&text, "siirto.toml", dir.path()).expect("config");
    let world = siirto::world::World::from_config(&config).expect("world");
    for err in [
        world.dns.zones().await.unwrap_err(),
        world.dns.zone(&domain("alpha.test")).await.unwrap_err(),
        world
            .dns
            .apply(
                &domain("alpha.test"),
                &[RrsetChange::Delete { name: "alpha.test.".into(), rtype: "A".into() }],
            )
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, DnsError::Unauthorized { status: 401, .. }), "{err:?}");
        assert!(!err.is_transient(), "{err}");
        let shown = err.to_string();
        assert!(shown.contains(&format!("{}api/v1/servers/localhost/zones", pdns.api_url)), "{shown}");
        assert!(
            shown.ends_with(&format!("it rejected the key in api_key_file ({})", key_file.display())),
            "{shown}"
        );
        assert!(!format!("{shown}{err:?}").contains("wrong-pdns-key"), "{shown}");
    }
}

/// Creates `zone` through the raw API with `soa_edit_api` empty, as a zone made with `pdnsutil`
/// or imported into the database is: PowerDNS then keeps the serial on API changes.
async fn create_zone_without_soa_edit_api(pdns: &Pdns, zone: &str, serial: u32) {
    let body = serde_json::json!({
        "name": format!("{zone}."), "kind": "Native", "nameservers": [format!("ns1.{zone}.")],
        "soa_edit_api": "",
        "rrsets": [
            {"name": format!("{zone}."), "type": "SOA", "ttl": 3600, "records": [{"content":
                format!("ns1.{zone}. hostmaster.{zone}. {serial} 10800 3600 604800 3600"), "disabled": false}]},
            {"name": format!("www.{zone}."), "type": "A", "ttl": 3600,
             "records": [{"content": OLD.to_string(), "disabled": false}]},
        ]
    });
    let response = reqwest::Client::new()
        .post(pdns.api_url.join("api/v1/servers/localhost/zones").unwrap())
        .header("X-API-Key", &pdns.api_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

/// A zone without SOA-EDIT-API keeps its serial on an API PATCH, so secondaries would never
/// transfer the cutover: the provider raises the serial in the same PATCH, in the zone's own
/// style (a date serial moves to today's, a counter counts), for the cutover and the rollback,
/// and leaves the serial of a zone PowerDNS bumps itself to PowerDNS (one bump, not two).
#[tokio::test]
async fn powerdns_raises_the_serial_of_a_zone_without_soa_edit_api() {
    let pdns = Pdns::start().await;
    let provider = client(&pdns.api_url, &pdns.api_key);
    create_zone_without_soa_edit_api(&pdns, "dated.test", 2020010101).await;
    create_zone_without_soa_edit_api(&pdns, "counted.test", 41).await;
    let bumping = domain("bumping.test");
    provider
        .create_zone(&bumping, &["ns1.bumping.test.".into()], &customer_rrsets("bumping.test"))
        .await
        .unwrap();

    assert!(!provider.server_bumps_serial(&domain("dated.test")).await.unwrap());
    assert!(!provider.server_bumps_serial(&domain("counted.test")).await.unwrap());
    assert!(provider.server_bumps_serial(&bumping).await.unwrap());

    let today: u32 = chrono::Utc::now().format("%Y%m%d01").to_string().parse().unwrap();
    let checker = Checker::new(vec![pdns.dns_addr]).unwrap();
    for (zone, after_cutover, after_rollback) in [("dated.test", today, today + 1), ("counted.test", 42, 43)]
    {
        let zone = domain(zone);
        // The cutover…
        let before = provider.zone(&zone).await.unwrap();
        provider.apply(&zone, &repoint_changes(&before, None, OLD, NEW)).await.unwrap();
        let cut = provider.zone(&zone).await.unwrap();
        assert_eq!(serial(&cut), after_cutover, "{zone}");
        assert_eq!(cut.rrset(&format!("www.{}", zone.fqdn()), "A").unwrap().records, vec![NEW.to_string()]);
        // …served with its new serial on the DNS port, where secondaries look…
        let www = domain(&format!("www.{zone}"));
        assert_eq!(checker.verify_a(&www, NEW).await.unwrap(), Verification::Served);
        assert_eq!(served_serial(pdns.dns_addr, &zone).await, after_cutover, "{zone}");
        // …and the rollback raises it again.
        provider.apply(&zone, &repoint_changes(&cut, None, NEW, OLD)).await.unwrap();
        assert_eq!(serial(&provider.zone(&zone).await.unwrap()), after_rollback, "{zone}");
        assert_eq!(served_serial(pdns.dns_addr, &zone).await, after_rollback, "{zone}");
    }

    let before = serial(&provider.zone(&bumping).await.unwrap());
    let zone_now = provider.zone(&bumping).await.unwrap();
    provider.apply(&bumping, &repoint_changes(&zone_now, None, OLD, NEW)).await.unwrap();
    assert_eq!(serial(&provider.zone(&bumping).await.unwrap()), before + 1, "PowerDNS's own bump only");
}

/// The SOA serial `server` answers for `zone`.
async fn served_serial(server: SocketAddr, zone: &DomainName) -> u32 {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(zone.fqdn()).unwrap(), RecordType::SOA));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query.to_vec().unwrap(), server).await.unwrap();
    let mut buffer = [0u8; 4096];
    let (len, _) = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv_from(&mut buffer))
        .await
        .expect("an answer in time")
        .unwrap();
    let answer = Message::from_vec(&buffer[..len]).unwrap();
    match answer.answers.first().map(|r| &r.data) {
        Some(RData::SOA(soa)) => soa.serial,
        other => panic!("no SOA for {zone}: {other:?}"),
    }
}

#[tokio::test]
async fn sim_nameserver_scenario() {
    let sim = SimNameserver::start("sim-key").await.unwrap();
    let provider = client(&sim.api_url, "sim-key");
    scenario(&provider, sim.dns_addr).await;
}

#[tokio::test]
async fn sim_nameserver_refusals() {
    let sim = SimNameserver::start("sim-key").await.unwrap();
    let provider = client(&sim.api_url, "sim-key");
    refusals(&provider, &sim.api_url, sim.dns_addr).await;
}

/// Each server is asked separately: when only one of two serves the new address, the
/// checker names the one that does not.
#[tokio::test]
async fn checker_asks_every_server() {
    let pdns = Pdns::start().await;
    let sim = SimNameserver::start("sim-key").await.unwrap();
    let zone = domain("delta.test");
    let www = domain("www.delta.test");
    let records = [rrset("www.delta.test.", "A", 60, &["192.0.2.10"])];
    let real = client(&pdns.api_url, &pdns.api_key);
    let simulated = client(&sim.api_url, "sim-key");
    for provider in [&real, &simulated] {
        provider.create_zone(&zone, &["ns1.delta.test.".into()], &records).await.unwrap();
    }
    let checker = Checker::new(vec![pdns.dns_addr, sim.dns_addr]).unwrap();
    assert_eq!(checker.verify_a(&www, OLD).await.unwrap(), Verification::Served);

    let current = real.zone(&zone).await.unwrap();
    real.apply(&zone, &repoint_changes(&current, None, OLD, NEW)).await.unwrap();
    assert_eq!(
        checker.a_records(&www).await.unwrap(),
        vec![(pdns.dns_addr, vec![NEW]), (sim.dns_addr, vec![OLD])]
    );
    assert_eq!(
        checker.verify_a(&www, NEW).await.unwrap(),
        Verification::Stale { server: sim.dns_addr, got: vec![OLD] }
    );

    let current = simulated.zone(&zone).await.unwrap();
    simulated.apply(&zone, &repoint_changes(&current, None, OLD, NEW)).await.unwrap();
    assert_eq!(checker.verify_a(&www, NEW).await.unwrap(), Verification::Served);
}

/// Raw requests the typed client never sends: the simulator answers them with the same
/// status codes as the real PowerDNS.
#[tokio::test]
async fn sim_answers_raw_requests_like_powerdns() {
    let pdns = Pdns::start().await;
    let sim = SimNameserver::start("sim-key").await.unwrap();
    let targets = [
        ("pdns", pdns.api_url.clone(), pdns.api_key.clone()),
        ("sim", sim.api_url.clone(), "sim-key".to_string()),
    ];
    let zone = domain("raw.test");
    let records = [rrset("www.raw.test.", "A", 60, &["192.0.2.1"])];
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        ("no key", "GET", "api/v1/servers/localhost", None),
        ("other server", "GET", "api/v1/servers/other", None),
        ("bad json", "PATCH", "api/v1/servers/localhost/zones/raw.test.", Some("{not json")),
        (
            "bogus changetype",
            "PATCH",
            "api/v1/servers/localhost/zones/raw.test.",
            Some(
                r#"{"rrsets":[{"name":"www.raw.test.","type":"A","ttl":60,"changetype":"BOGUS","records":[]}]}"#,
            ),
        ),
        (
            "out of zone",
            "PATCH",
            "api/v1/servers/localhost/zones/raw.test.",
            Some(
                r#"{"rrsets":[{"name":"www.other.test.","type":"A","ttl":60,"changetype":"REPLACE","records":[{"content":"192.0.2.1","disabled":false}]}]}"#,
            ),
        ),
        (
            "cname conflict",
            "PATCH",
            "api/v1/servers/localhost/zones/raw.test.",
            Some(
                r#"{"rrsets":[{"name":"www.raw.test.","type":"CNAME","ttl":60,"changetype":"REPLACE","records":[{"content":"raw.test.","disabled":false}]}]}"#,
            ),
        ),
        (
            "relative mx",
            "PATCH",
            "api/v1/servers/localhost/zones/raw.test.",
            Some(
                r#"{"rrsets":[{"name":"raw.test.","type":"MX","ttl":60,"changetype":"REPLACE","records":[{"content":"10 mail","disabled":false}]}]}"#,
            ),
        ),
        (
            "delete missing rrset",
            "PATCH",
            "api/v1/servers/localhost/zones/raw.test.",
            Some(r#"{"rrsets":[{"name":"nothing.raw.test.","type":"A","changetype":"DELETE"}]}"#),
        ),
        ("unknown zone", "GET", "api/v1/servers/localhost/zones/nope.test.", None),
    ];
    let mut statuses: Vec<Vec<u16>> = Vec::new();
    for (_, api_url, key) in &targets {
        client(api_url, key).create_zone(&zone, &["ns1.raw.test.".into()], &records).await.unwrap();
        let http = reqwest::Client::new();
        let mut got = Vec::new();
        for (label, method, path, body) in cases {
            let mut request = http.request(method.parse().unwrap(), api_url.join(path).unwrap());
            if *label != "no key" {
                request = request.header("X-API-Key", key.as_str());
            }
            if let Some(body) = body {
                request = request.header("Content-Type", "application/json").body(body.to_string());
            }
            got.push(request.send().await.unwrap().status().as_u16());
        }
        statuses.push(got);
    }
    let labelled =
        |got: &Vec<u16>| -> Vec<(&str, u16)> { cases.iter().map(|c| c.0).zip(got.iter().copied()).collect() };
    assert_eq!(labelled(&statuses[1]), labelled(&statuses[0]), "sim vs pdns");
}

/// The provider reading zones by AXFR from pdns's DNS port (writes through the API): the
/// same whole walk as through the API alone.
#[tokio::test]
async fn powerdns_scenario_reading_zones_by_axfr() {
    let pdns = Pdns::start().await;
    let provider = client(&pdns.api_url, &pdns.api_key).with_axfr_reads(pdns.dns_addr);
    scenario(&provider, pdns.dns_addr).await;
}

/// Every record type a hosting zone holds reads the same by AXFR as through the API: same
/// rrsets, TTLs and record texts (so a rrset read one way and written back through the API is
/// unchanged), disabled records left out both ways.
#[tokio::test]
async fn axfr_reads_give_the_zone_the_api_gives() {
    let pdns = Pdns::start().await;
    let api = client(&pdns.api_url, &pdns.api_key);
    let axfr = api.clone().with_axfr_reads(pdns.dns_addr);
    let zone = domain("kinds.test");
    let rrsets = vec![
        rrset("kinds.test.", "A", 3600, &["192.0.2.10", "192.0.2.11"]),
        rrset("kinds.test.", "AAAA", 3600, &["2001:db8::10"]),
        rrset("kinds.test.", "MX", 3600, &["10 mail.kinds.test.", "20 filter.example.net."]),
        rrset(
            "kinds.test.",
            "TXT",
            300,
            &[
                "\"v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 include:_spf.example.net -all\"",
                "\"google-site-verification=abc123\"",
                "\"two\" \"strings\"",
                "\"quote \\\" and backslash \\\\ and \\195\\164\"",
            ],
        ),
        rrset(
            "kinds.test.",
            "CAA",
            3600,
            &["0 issue \"letsencrypt.org\"", "0 iodef \"mailto:hostmaster@kinds.test\""],
        ),
        rrset("_dmarc.kinds.test.", "TXT", 3600, &["\"v=DMARC1; p=none; rua=mailto:dmarc@kinds.test\""]),
        rrset("_sip._tcp.kinds.test.", "SRV", 3600, &["10 60 5060 sip.kinds.test."]),
        rrset("*.kinds.test.", "A", 3600, &["192.0.2.10"]),
        rrset("www.kinds.test.", "CNAME", 3600, &["kinds.test."]),
        rrset("sub.kinds.test.", "NS", 3600, &["ns1.elsewhere.example.", "ns2.elsewhere.example."]),
        rrset("mail.kinds.test.", "A", 120, &["192.0.2.10"]),
        rrset(
            "default._domainkey.kinds.test.",
            "TXT",
            3600,
            &["\"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC\""],
        ),
        rrset("kinds.test.", "HINFO", 3600, &["\"PC\" \"Linux\""]),
        rrset("kinds.test.", "SPF", 3600, &["\"v=spf1 ip4:192.0.2.10 -all\""]),
        rrset("kinds.test.", "NAPTR", 3600, &["100 10 \"S\" \"SIP+D2U\" \"\" _sip._udp.kinds.test."]),
        rrset(
            "kinds.test.",
            "SSHFP",
            3600,
            &["4 2 123456789abcdef67890123456789abcdef67890123456789abcdef123456789"],
        ),
        rrset(
            "_443._tcp.www.kinds.test.",
            "TLSA",
            3600,
            &["3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
        ),
        rrset(
            "sub.kinds.test.",
            "DS",
            3600,
            &["12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
        ),
        rrset("kinds.test.", "LOC", 3600, &["60 10 12.000 N 24 56 15.000 E 10.00m 1.00m 10000.00m 10.00m"]),
    ];
    api.create_zone(&zone, &["ns1.kinds.test.".into(), "ns2.kinds.test.".into()], &rrsets).await.unwrap();
    // A disabled record beside an enabled one, which only a raw PATCH can make.
    let response = reqwest::Client::new()
        .patch(pdns.api_url.join("api/v1/servers/localhost/zones/kinds.test.").unwrap())
        .header("X-API-Key", &pdns.api_key)
        .json(&serde_json::json!({"rrsets": [{
            "name": "ftp.kinds.test.", "type": "A", "ttl": 600, "changetype": "REPLACE",
            "records": [
                {"content": "192.0.2.10", "disabled": false},
                {"content": "192.0.2.99", "disabled": true}
            ]
        }]}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    let sorted = |zone: siirto::dns::Zone| {
        let mut rrsets: Vec<Rrset> = zone
            .rrsets
            .into_iter()
            .map(|mut r| {
                r.records.sort();
                r
            })
            .collect();
        rrsets.sort_by(|a, b| (&a.name, &a.rtype).cmp(&(&b.name, &b.rtype)));
        rrsets
    };
    let by_api = sorted(api.zone(&zone).await.unwrap());
    let mut by_axfr = sorted(axfr.zone(&zone).await.unwrap());
    // LOC is the one type here hickory-proto cannot decode: the transfer gives it in RFC 3597's
    // generic form under TYPE29 (never a record siirto changes).
    let loc = by_axfr.iter().position(|r| r.rtype == "TYPE29").expect("the LOC rrset, as TYPE29");
    let loc = by_axfr.remove(loc);
    assert_eq!((loc.name.as_str(), loc.records.len()), ("kinds.test.", 1), "{loc:?}");
    assert!(loc.records[0].starts_with("\\# 16 "), "{loc:?}");
    let by_api: Vec<Rrset> = by_api.into_iter().filter(|r| r.rtype != "LOC").collect();
    assert_eq!(by_axfr, by_api);
    let ftp = by_axfr.iter().find(|r| r.name == "ftp.kinds.test." && r.rtype == "A").unwrap();
    assert_eq!(ftp.records, vec!["192.0.2.10"], "the disabled record is not served");
    // What was written is what both read, except the record types with their own spelling.
    for written in rrsets.iter().filter(|r| r.rtype != "LOC") {
        let read = by_axfr.iter().find(|r| r.name == written.name && r.rtype == written.rtype).unwrap();
        let mut records = written.records.clone();
        records.sort();
        assert_eq!((read.ttl, &read.records), (written.ttl, &records), "{} {}", written.name, written.rtype);
    }
}

/// A transfer pdns will not give (an address outside allow-axfr-ips, or a zone it does not
/// have) is a permanent refusal that says what to fix, not a retry.
#[tokio::test]
async fn axfr_reads_refused_say_why() {
    let pdns = Pdns::start_with("allow-axfr-ips=192.0.2.1/32").await;
    let api = client(&pdns.api_url, &pdns.api_key);
    let zone = domain("closed.test");
    api.create_zone(
        &zone,
        &["ns1.closed.test.".into()],
        &[rrset("www.closed.test.", "A", 60, &["192.0.2.10"])],
    )
    .await
    .unwrap();
    let axfr = api.clone().with_axfr_reads(pdns.dns_addr);
    let err = axfr.zone(&zone).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    let text = err.to_string();
    assert!(matches!(err, DnsError::Refused { .. }), "{err:?}");
    assert!(text.contains("closed.test") && text.contains("allow-axfr-ips"), "{text}");
    // Through the API the same zone reads fine: only the transfer is closed.
    assert!(api.zone(&zone).await.unwrap().rrset("www.closed.test.", "A").is_some());

    let open = Pdns::start().await;
    let axfr = client(&open.api_url, &open.api_key).with_axfr_reads(open.dns_addr);
    let err = axfr.zone(&domain("missing.test")).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("does not serve zone missing.test"), "{err}");
}

/// A zone PowerDNS signs itself (live signing): its transfer carries DNSKEY, RRSIG and NSEC
/// records the API does not list; read by AXFR, the zone is still the one the API gives.
#[tokio::test]
async fn axfr_reads_of_a_signed_zone_leave_the_signatures_out() {
    let pdns = Pdns::start_with("gsqlite3-dnssec=yes").await;
    let api = client(&pdns.api_url, &pdns.api_key);
    let response = reqwest::Client::new()
        .post(pdns.api_url.join("api/v1/servers/localhost/zones").unwrap())
        .header("X-API-Key", &pdns.api_key)
        .json(&serde_json::json!({
            "name": "signed.test.", "kind": "Native", "dnssec": true,
            "nameservers": ["ns1.signed.test."],
            "rrsets": [
                {"name": "www.signed.test.", "type": "A", "ttl": 3600,
                 "records": [{"content": "192.0.2.10", "disabled": false}]},
                {"name": "signed.test.", "type": "MX", "ttl": 3600,
                 "records": [{"content": "10 mail.signed.test.", "disabled": false}]}
            ]
        }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}: {}", response.status(), response.text().await.unwrap());
    let zone = domain("signed.test");

    // The transfer itself does carry the signer's records (so the filter has work to do).
    let mut query = hickory_proto::op::Message::query();
    query.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("signed.test.").unwrap(),
        hickory_proto::rr::RecordType::AXFR,
    ));
    let raw = raw_tcp_exchange(pdns.dns_addr, &query).await;
    let types: std::collections::BTreeSet<String> = raw.iter().map(|r| r.record_type().to_string()).collect();
    for signer in ["DNSKEY", "RRSIG"] {
        assert!(types.contains(signer), "the transfer has no {signer}: {types:?}");
    }

    let sorted = |zone: siirto::dns::Zone| {
        let mut rrsets = zone.rrsets;
        rrsets.sort_by(|a, b| (&a.name, &a.rtype).cmp(&(&b.name, &b.rtype)));
        rrsets
    };
    let by_api = sorted(api.zone(&zone).await.unwrap());
    let by_axfr = sorted(api.clone().with_axfr_reads(pdns.dns_addr).zone(&zone).await.unwrap());
    assert_eq!(by_axfr, by_api);
    assert!(by_axfr.iter().any(|r| r.name == "www.signed.test." && r.rtype == "A"));
}

/// One DNS message over TCP and the records of every answer until the closing SOA (a whole
/// AXFR), without TSIG.
async fn raw_tcp_exchange(
    addr: SocketAddr,
    query: &hickory_proto::op::Message,
) -> Vec<hickory_proto::rr::Record> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = query.to_vec().unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut records = Vec::new();
    let mut soas = 0;
    while soas < 2 {
        let length = stream.read_u16().await.unwrap();
        let mut body = vec![0u8; usize::from(length)];
        stream.read_exact(&mut body).await.unwrap();
        let answer = hickory_proto::op::Message::from_vec(&body).unwrap();
        assert_eq!(answer.metadata.response_code, hickory_proto::op::ResponseCode::NoError);
        soas +=
            answer.answers.iter().filter(|r| r.record_type() == hickory_proto::rr::RecordType::SOA).count();
        records.extend(answer.answers.iter().cloned());
    }
    records
}
