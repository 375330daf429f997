//! The RFC 2136 provider against a real BIND: the same walk as the PowerDNS tests (read,
//! lower TTLs in one update, repoint, verify with the checker, delete), plus the refusals a
//! wrong key or a zone the server does not serve must give, and a stopped server.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use siirto::dns::{
    Checker, DnsError, DnsProvider, Rfc2136, Rrset, RrsetChange, TsigAlgorithm, TsigKey, Verification, Zone,
    lower_ttl_changes, repoint_changes,
};
use siirto::names::DomainName;
use siirto::secret::Secret;

use siirto::demo::{
    DnsEndpoint, SOURCE_IP, TARGET_IP, ZONE_TTL, all_domains, start_hosts, write_config, zone_rrsets,
};
use siirto::domain::MigrationState;
use siirto::engine::{Engine, SystemClock};
use siirto::names::MigrationId;
use siirto::playbook::Playbook;
use siirto::status::migration_status;
use siirto::store::Store;
use siirto::world::World;

use crate::support::bind::{Bind, KEY_NAME, ZoneFile};

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

/// The zone file of a customer zone: the apex and www at the old server, mail elsewhere (an
/// external spam filter), plus records of other types that must survive. Same content as
/// the PowerDNS tests' `customer_rrsets`.
const CUSTOMER: &str = "\
@ NS ns1
ns1 A 127.0.0.1
@ A 192.0.2.10
www A 192.0.2.10
mail A 198.51.100.99
@ MX 10 mail
@ TXT \"v=spf1 a mx -all\"
@ AAAA 2001:db8::10
ftp CNAME www
";

fn customer_rrsets(zone: &str) -> Vec<Rrset> {
    vec![
        rrset(&format!("{zone}."), "A", 3600, &["192.0.2.10"]),
        rrset(&format!("www.{zone}."), "A", 3600, &["192.0.2.10"]),
        rrset(&format!("mail.{zone}."), "A", 3600, &["198.51.100.99"]),
        rrset(&format!("{zone}."), "MX", 3600, &[&format!("10 mail.{zone}.")]),
        rrset(&format!("{zone}."), "TXT", 3600, &["\"v=spf1 a mx -all\""]),
        rrset(&format!("{zone}."), "AAAA", 3600, &["2001:db8::10"]),
        rrset(&format!("ftp.{zone}."), "CNAME", 3600, &[&format!("www.{zone}.")]),
        rrset(&format!("{zone}."), "NS", 3600, &[&format!("ns1.{zone}.")]),
    ]
}

async fn start_customers() -> Bind {
    Bind::start(&[
        ZoneFile { name: "alpha.test", records: CUSTOMER },
        ZoneFile { name: "beta.test", records: CUSTOMER },
    ])
    .await
}

fn provider(bind: &Bind, zones: &[&str]) -> Rfc2136 {
    Rfc2136::new(bind.dns_addr, bind.key.clone(), zones.iter().map(|z| domain(z)).collect()).unwrap()
}

fn serial(zone: &Zone) -> u32 {
    let soa = zone.rrset(&zone.name.fqdn(), "SOA").expect("a SOA rrset");
    soa.records[0].split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test]
async fn rfc2136_scenario() {
    let bind = start_customers().await;
    let provider = provider(&bind, &["alpha.test", "beta.test"]);
    let dns_addr = bind.dns_addr;
    let zones = [domain("alpha.test"), domain("beta.test")];
    assert_eq!(provider.zones().await.unwrap(), zones.to_vec(), "the configured zones");

    let alpha = provider.zone(&zones[0]).await.unwrap();
    assert_eq!(alpha.name, zones[0]);
    for expected in customer_rrsets("alpha.test") {
        let got = alpha
            .rrset(&expected.name, &expected.rtype)
            .unwrap_or_else(|| panic!("{} {} missing: {alpha:?}", expected.name, expected.rtype));
        assert_eq!(got, &expected);
    }
    let soa = alpha.rrset("alpha.test.", "SOA").expect("a SOA rrset");
    assert_eq!(soa.records, vec!["ns1.alpha.test. hostmaster.alpha.test. 1 10800 3600 604800 3600"]);
    assert_eq!(alpha.rrsets.iter().filter(|r| r.rtype == "SOA").count(), 1, "the closing SOA is left out");

    let checker = Checker::new(vec![dns_addr]).unwrap();
    assert_eq!(checker.verify_a(&domain("www.alpha.test"), OLD).await.unwrap(), Verification::Served);

    // Lower the TTLs: one UPDATE per zone, one serial bump each.
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
        assert_eq!(serial(&lowered), serial(&current) + 1, "two rrsets in one UPDATE: one serial bump");
        // Everything else is as it was.
        let untouched = |z: &Zone| -> Vec<Rrset> {
            z.rrsets
                .iter()
                .filter(|r| r.rtype != "SOA" && !(r.rtype == "A" && r.ttl == 60))
                .cloned()
                .collect()
        };
        let mut before = untouched(&current);
        before.retain(|r| {
            !changes
                .iter()
                .any(|c| matches!(c, RrsetChange::Replace(x) if x.name == r.name && x.rtype == r.rtype))
        });
        let mut after = untouched(&lowered);
        before.sort_by(|a, b| (&a.name, &a.rtype).cmp(&(&b.name, &b.rtype)));
        after.sort_by(|a, b| (&a.name, &a.rtype).cmp(&(&b.name, &b.rtype)));
        assert_eq!(after, before);
    }
    // Served with the new TTL right away.
    assert_eq!(checker.verify_a(&domain("www.alpha.test"), OLD).await.unwrap(), Verification::Served);

    // Repoint alpha (all of it) and beta's www only.
    let alpha = provider.zone(&zones[0]).await.unwrap();
    provider.apply(&zones[0], &repoint_changes(&alpha, None, OLD, NEW)).await.unwrap();
    let beta = provider.zone(&zones[1]).await.unwrap();
    provider
        .apply(&zones[1], &repoint_changes(&beta, Some(&[domain("www.beta.test")]), OLD, NEW))
        .await
        .unwrap();

    let repointed = provider.zone(&zones[0]).await.unwrap();
    assert_eq!(serial(&repointed), serial(&alpha) + 1, "two rrsets repointed in one UPDATE: one serial bump");
    let alpha = repointed;
    assert_eq!(
        alpha.rrset("www.alpha.test.", "A").unwrap(),
        &rrset("www.alpha.test.", "A", 60, &["203.0.113.20"])
    );
    assert_eq!(alpha.rrset("alpha.test.", "A").unwrap(), &rrset("alpha.test.", "A", 60, &["203.0.113.20"]));
    assert_eq!(
        alpha.rrset("mail.alpha.test.", "A").unwrap(),
        &rrset("mail.alpha.test.", "A", 3600, &["198.51.100.99"])
    );
    assert_eq!(alpha.rrset("alpha.test.", "MX").unwrap().records, vec!["10 mail.alpha.test."]);
    assert_eq!(alpha.rrset("alpha.test.", "TXT").unwrap().records, vec!["\"v=spf1 a mx -all\""]);

    for name in ["alpha.test", "www.alpha.test", "www.beta.test", "ftp.alpha.test"] {
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

    // An empty batch sends nothing.
    provider.apply(&zones[0], &[]).await.unwrap();
    assert_eq!(serial(&provider.zone(&zones[0]).await.unwrap()), serial(&alpha));

    // A big rrset (too big for UDP: the checker falls back to TCP) and TXT strings with
    // quotes and spaces round-trip.
    let many: Vec<String> = (1..=90).map(|i| format!("10.0.0.{i}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let txt = r#""say \"hi\" twice" "second string""#;
    provider
        .apply(
            &zones[0],
            &[
                RrsetChange::Replace(rrset("big.alpha.test.", "A", 60, &many_refs)),
                RrsetChange::Replace(rrset("_dmarc.alpha.test.", "TXT", 300, &[txt])),
            ],
        )
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", bind.log()));
    let answers = checker.a_records(&domain("big.alpha.test")).await.unwrap();
    assert_eq!(answers[0].1.len(), 90);
    let alpha = provider.zone(&zones[0]).await.unwrap();
    assert_eq!(alpha.rrset("big.alpha.test.", "A").unwrap().records.len(), 90);
    assert_eq!(
        alpha.rrset("_dmarc.alpha.test.", "TXT").unwrap(),
        &rrset("_dmarc.alpha.test.", "TXT", 300, &[txt])
    );

    // The server applies a batch whole or not at all: BIND 9.18 refuses rrsets of more than
    // 100 records (max-records-per-type) with a SERVFAIL, and the good change in the same
    // UPDATE is not applied either. The provider knows the limit (dns.max_records_per_type,
    // default 100) and refuses such a batch itself, as permanent, before sending it; without
    // the limit (0) the server's SERVFAIL comes back naming the rrset to look at.
    let too_many: Vec<String> = (1..=150).map(|i| format!("10.0.{}.{}", i / 100, i % 100 + 1)).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let batch = [
        RrsetChange::Replace(rrset("ok.alpha.test.", "A", 60, &["192.0.2.1"])),
        RrsetChange::Replace(rrset("huge.alpha.test.", "A", 60, &too_many)),
    ];
    let err = provider.apply(&zones[0], &batch).await.unwrap_err();
    assert!(matches!(&err, DnsError::TooManyRecords { count: 150, max: 100, .. }), "{err:?}");
    assert!(!err.is_transient());
    let err = provider.clone().with_max_records_per_type(0).apply(&zones[0], &batch).await.unwrap_err();
    assert!(matches!(&err, DnsError::Rcode { rcode, .. } if rcode.starts_with("SERVFAIL")), "{err:?}");
    assert!(err.to_string().contains("huge.alpha.test. A, has 150 records"), "{err}");
    assert!(bind.log().contains("too many records"), "{}", bind.log());
    let after = provider.zone(&zones[0]).await.unwrap();
    assert!(after.rrset("ok.alpha.test.", "A").is_none(), "nothing of a refused batch was applied");
    assert_eq!(serial(&after), serial(&alpha));

    // Delete an rrset; a REPLACE with no records deletes too.
    provider
        .apply(
            &zones[1],
            &[
                RrsetChange::Delete { name: "mail.beta.test.".into(), rtype: "A".into() },
                RrsetChange::Replace(rrset("beta.test.", "AAAA", 60, &[])),
            ],
        )
        .await
        .unwrap();
    let beta = provider.zone(&zones[1]).await.unwrap();
    assert!(beta.rrset("mail.beta.test.", "A").is_none());
    assert!(beta.rrset("beta.test.", "AAAA").is_none());
    assert!(beta.rrset("beta.test.", "MX").is_some(), "other rrsets stay");
    assert_eq!(checker.a_records(&domain("mail.beta.test")).await.unwrap(), vec![(dns_addr, vec![])]);
}

/// A key with the right name and the wrong secret, a key the server does not know, a zone it
/// does not serve, and content that is not valid: refused, not transient, with a message that
/// says what to fix, and nothing changes.
#[tokio::test]
async fn rfc2136_refusals() {
    let bind = start_customers().await;
    let alpha = domain("alpha.test");
    let good = provider(&bind, &["alpha.test"]);
    let before = good.zone(&alpha).await.unwrap();
    let change = [RrsetChange::Replace(rrset("www.alpha.test.", "A", 60, &["203.0.113.20"]))];

    let wrong_secret = "c2lpcnRvIHdyb25nIHNlY3JldCBmb3IgdGVzdHMgb25seQ==";
    let wrong = Rfc2136::new(
        bind.dns_addr,
        TsigKey { secret: Secret::new(wrong_secret), ..bind.key.clone() },
        vec![alpha.clone()],
    )
    .unwrap();
    for err in [wrong.zone(&alpha).await.unwrap_err(), wrong.apply(&alpha, &change).await.unwrap_err()] {
        assert!(matches!(&err, DnsError::Refused { .. }), "{err:?}");
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("BADSIG"), "{err}");
        assert!(err.to_string().contains("secret of TSIG key siirto-test-key"), "{err}");
        assert!(!format!("{err:?}{err}").contains(wrong_secret));
    }
    assert!(!format!("{wrong:?}").contains(wrong_secret));

    let unknown = Rfc2136::new(
        bind.dns_addr,
        TsigKey { name: "nobody-knows".into(), ..bind.key.clone() },
        vec![alpha.clone()],
    )
    .unwrap();
    let err = unknown.apply(&alpha, &change).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("does not know TSIG key nobody-knows"), "{err}");
    assert!(err.to_string().contains("BADKEY"), "{err}");

    let other_algorithm = Rfc2136::new(
        bind.dns_addr,
        TsigKey { algorithm: TsigAlgorithm::HmacSha512, ..bind.key.clone() },
        vec![alpha.clone()],
    )
    .unwrap();
    let err = other_algorithm.zone(&alpha).await.unwrap_err();
    assert!(matches!(&err, DnsError::Refused { .. }), "{err:?}");
    assert!(!err.is_transient(), "{err}");

    assert_eq!(good.zone(&alpha).await.unwrap(), before, "nothing was applied");

    // A zone the server does not serve.
    let gamma = domain("gamma.test");
    let not_served = provider(&bind, &["gamma.test"]);
    let err = not_served.zone(&gamma).await.unwrap_err();
    assert!(matches!(&err, DnsError::Refused { zone, .. } if zone == "gamma.test"), "{err:?}");
    assert!(!err.is_transient(), "{err}");
    let err = not_served
        .apply(&gamma, &[RrsetChange::Replace(rrset("www.gamma.test.", "A", 60, &["192.0.2.1"]))])
        .await
        .unwrap_err();
    assert!(matches!(&err, DnsError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains("not authoritative for zone gamma.test"), "{err}");
    assert!(!err.is_transient(), "{err}");

    // Content that is not valid for its type, and names outside the zone: nothing is sent.
    let bad = [
        RrsetChange::Replace(rrset("ok.alpha.test.", "A", 60, &["192.0.2.1"])),
        RrsetChange::Replace(rrset("www.alpha.test.", "A", 60, &["not-an-address"])),
    ];
    let err = good.apply(&alpha, &bad).await.unwrap_err();
    assert!(matches!(&err, DnsError::BadRecord { content, .. } if content == "not-an-address"), "{err:?}");
    assert!(!err.is_transient());
    let outside = [RrsetChange::Delete { name: "www.beta.test.".into(), rtype: "A".into() }];
    assert!(matches!(good.apply(&alpha, &outside).await, Err(DnsError::BadName { .. })));
    let meta = [RrsetChange::Delete { name: "www.alpha.test.".into(), rtype: "ANY".into() }];
    assert!(matches!(good.apply(&alpha, &meta).await, Err(DnsError::BadRecord { .. })));
    assert_eq!(good.zone(&alpha).await.unwrap(), before, "nothing was applied");

    // Unusable settings are refused when the client is made.
    let key = |name: &str, secret: &str| TsigKey {
        name: name.into(),
        algorithm: TsigAlgorithm::HmacSha256,
        secret: Secret::new(secret),
    };
    assert!(matches!(Rfc2136::new(bind.dns_addr, key("k", "not base64!"), vec![]), Err(DnsError::Config(_))));
    assert!(matches!(Rfc2136::new(bind.dns_addr, key("", "c2VjcmV0"), vec![]), Err(DnsError::Config(_))));
    assert!(matches!(Rfc2136::new(bind.dns_addr, key("k", ""), vec![]), Err(DnsError::Config(_))));
}

/// A stopped server (and one that never ran): connection errors, transient.
#[tokio::test]
async fn rfc2136_stopped_server_is_transient() {
    let mut bind = start_customers().await;
    let alpha = domain("alpha.test");
    let provider = provider(&bind, &["alpha.test"]);
    provider.zone(&alpha).await.unwrap();
    bind.stop();
    let err = provider.zone(&alpha).await.unwrap_err();
    assert!(matches!(err, DnsError::Io { .. }), "{err:?}");
    assert!(err.is_transient(), "{err}");
    let err = provider
        .apply(&alpha, &[RrsetChange::Delete { name: "www.alpha.test.".into(), rtype: "A".into() }])
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");

    let port = crate::support::pdns::free_udp_and_tcp_port().unwrap();
    let nowhere =
        Rfc2136::new(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), bind.key.clone(), vec![]).unwrap();
    assert!(nowhere.zone(&alpha).await.unwrap_err().is_transient());
}

/// hmac-sha512 keys work the same way.
#[tokio::test]
async fn rfc2136_hmac_sha512() {
    let bind =
        Bind::start_with(&[ZoneFile { name: "alpha.test", records: CUSTOMER }], TsigAlgorithm::HmacSha512)
            .await;
    let alpha = domain("alpha.test");
    let provider = provider(&bind, &["alpha.test"]);
    let current = provider.zone(&alpha).await.unwrap();
    provider.apply(&alpha, &lower_ttl_changes(&current, OLD, 120)).await.unwrap();
    assert_eq!(provider.zone(&alpha).await.unwrap().rrset("www.alpha.test.", "A").unwrap().ttl, 120);
}

/// The engine's whole path with the RFC 2136 provider: the daemon in-process moves three
/// simulated accounts whose zones live on BIND, from a config with `provider = "rfc2136"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_migration_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = start_hosts(3, dir.path()).await.unwrap();
    let domains = all_domains(&hosts.accounts);
    let zone_texts: Vec<(String, String)> = domains
        .iter()
        .map(|domain| {
            let mut text = String::from("@ NS ns1.siirto-demo.test.\n");
            for rrset in zone_rrsets(domain, SOURCE_IP, ZONE_TTL) {
                for content in &rrset.records {
                    text.push_str(&format!("{} {} IN {} {content}\n", rrset.name, rrset.ttl, rrset.rtype));
                }
            }
            (domain.to_string(), text)
        })
        .collect();
    let zone_files: Vec<ZoneFile> =
        zone_texts.iter().map(|(name, records)| ZoneFile { name, records }).collect();
    let bind = Bind::start(&zone_files).await;

    // The config a sysadmin would write: the demo's, with its [dns] table for BIND instead.
    let unused = DnsEndpoint {
        api_url: "http://127.0.0.1:9/".parse().unwrap(),
        api_key: "unused".into(),
        dns_addr: bind.dns_addr,
    };
    let database = format!("sqlite://{}", dir.path().join("siirto.db").display());
    let extra = "[daemon]\nlease = \"20s\"\nidle_poll = \"100ms\"\n\n[mail]\nfrom = \"Siirto <noreply@siirto.test>\"\nchannel = \"directory\"\npath = \"outbox\"\n";
    write_config(&hosts, &unused, dir.path(), &database, extra).unwrap();
    std::fs::write(dir.path().join("secrets/tsig.key"), bind.key.secret.expose()).unwrap();
    let path = dir.path().join("siirto.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[dns]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    let zones = domains.iter().map(|d| format!("\"{d}\"")).collect::<Vec<_>>().join(", ");
    let dns = format!(
        "[dns]\nprovider = \"rfc2136\"\nserver = \"{addr}\"\ntsig_key_name = \"{KEY_NAME}\"\n\
         tsig_secret_file = \"secrets/tsig.key\"\nzones = [{zones}]\nnameservers = [\"{addr}\"]\n\
         resolvers = [\"{addr}\"]\n\
         own_nameservers = [\"ns1.siirto-demo.test\"]\nwrite_concurrency = 2",
        addr = bind.dns_addr
    );
    std::fs::write(&path, format!("{}{dns}{}", &text[..start], &text[end..])).unwrap();
    let config = siirto::config::Config::load(&path).unwrap();
    assert!(matches!(config.dns.provider, siirto::config::DnsProviderConfig::Rfc2136 { .. }));

    let store = Store::connect(&config.database).await.unwrap();
    let id = MigrationId::parse("it-rfc2136").unwrap();
    let adapters = World::from_config(&config).unwrap();
    let playbook_text = include_str!("../../playbooks/demo.toml");
    let playbook = Playbook::parse(playbook_text, "playbooks/demo.toml").unwrap();
    let now = chrono::Utc::now();
    let request = siirto::plan::PlanRequest {
        id: id.clone(),
        source: "old",
        target: "new",
        playbook: &playbook,
        cutover_at: now,
        actor: "test",
    };
    let plan = siirto::plan::plan(&store, &config, &adapters, request, now).await.unwrap();
    assert_eq!(plan.counts.accounts, 3);
    assert!(plan.rejected.is_empty(), "{:?}", plan.rejected);
    assert_eq!(plan.counts.move_and_repoint, plan.counts.domains, "{:#?}", plan.flagged);
    siirto::ops::approve(&store, &id, "test-operator", chrono::Utc::now()).await.unwrap();
    let started =
        siirto::ops::start(&store, &config, &adapters, &id, "test", chrono::Utc::now()).await.unwrap();
    assert!(started.started.is_some(), "{:#?}", started.report);

    let engine = Arc::new(
        Engine::from_config(&config, store.clone(), Arc::new(SystemClock))
            .unwrap()
            .with_owner("it-rfc2136")
            .with_workers(4),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(Arc::clone(&engine).run(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let status = migration_status(&store, id.as_str()).await.unwrap();
        if matches!(status.detail, MigrationState::CutOver { .. }) {
            break status;
        }
        assert!(Instant::now() < deadline, "timed out; status: {status:#?}\nnamed log:\n{}", bind.log());
        // Polling interval while waiting for the condition, bounded by the deadline.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
    assert_eq!(status.arrived(), 3, "{status:#?}");

    // Every domain points at the target with the short TTL, read back from BIND by AXFR; the
    // MX records are untouched.
    let short_ttl = playbook.dns.short_ttl;
    for domain in &domains {
        let zone = adapters.dns.zone(domain).await.unwrap();
        for name in [domain.fqdn(), format!("www.{}", domain.fqdn())] {
            let a = zone.rrset(&name, "A").unwrap_or_else(|| panic!("{name} A missing"));
            assert_eq!(a.records, vec![TARGET_IP.to_string()], "{name}");
            assert_eq!(a.ttl, short_ttl, "{name}");
        }
        assert_eq!(zone.rrset(&domain.fqdn(), "MX").unwrap().ttl, ZONE_TTL, "MX of {domain} must not change");
    }
}

/// A zone of 2,000 names transfers in many TCP messages (BIND sends about 20 KB each), every
/// one TSIG-signed and chained to the one before; 500 of them repoint in one UPDATE.
#[tokio::test]
async fn rfc2136_large_zone() {
    let mut records = String::from("@ NS ns1.siirto-demo.test.\n");
    for i in 0..2000 {
        let ip = if i % 4 == 0 { "192.0.2.10" } else { "198.51.100.99" };
        records.push_str(&format!("host{i:04} A {ip}\nhost{i:04} TXT \"name number {i}\"\n"));
    }
    let bind = Bind::start(&[ZoneFile { name: "large.test", records: &records }]).await;
    let large = domain("large.test");
    let provider = provider(&bind, &["large.test"]);
    let zone = provider.zone(&large).await.unwrap();
    assert_eq!(zone.rrsets.len(), 2 + 4000, "SOA, NS and two rrsets per name");
    assert_eq!(zone.rrset("host1999.large.test.", "TXT").unwrap().records, vec!["\"name number 1999\""]);

    let changes = repoint_changes(&zone, None, OLD, NEW);
    assert_eq!(changes.len(), 500);
    provider.apply(&large, &changes).await.unwrap();
    let after = provider.zone(&large).await.unwrap();
    assert_eq!(serial(&after), serial(&zone) + 1);
    let moved = after.rrsets.iter().filter(|r| r.rtype == "A" && r.records == ["203.0.113.20"]).count();
    let kept = after.rrsets.iter().filter(|r| r.rtype == "A" && r.records == ["198.51.100.99"]).count();
    assert_eq!((moved, kept), (500, 1500));
    let txt_unchanged = |z: &Zone| z.rrsets.iter().filter(|r| r.rtype == "TXT").cloned().collect::<Vec<_>>();
    assert_eq!(txt_unchanged(&after), txt_unchanged(&zone));
}
