//! The cutover's guards against real nameservers: AAAA records follow the hosts' IPv6
//! addresses (deleted when the target has none, created — gated by the zone's negative TTL —
//! when only the target has one) and rollback undoes both; a rollback issued while a repoint's
//! PATCH is in flight is not overwritten by it (two daemons, real pdns_server); an rrset bigger
//! than BIND's max-records-per-type is refused as permanent (real BIND).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use siirto::demo::{SOURCE_IP, TARGET_IP};
use siirto::dns::{DnsError, DnsProvider, PowerDns, Rfc2136, Rrset, RrsetChange, TsigAlgorithm, Zone};
use siirto::domain::Timestamp;
use siirto::engine::{Clock, Engine, EngineParts};
use siirto::names::DomainName;
use siirto::world::World;
use tokio::sync::Notify;

use crate::dns_cutover::{DEMO, domain_state_of, gated_playbook, replace, rrset, start_rig};
use crate::support::bind::{Bind, ZoneFile};
use crate::support::rig::{Daemon, SimRig, account};

/// The real PowerDNS, except that the first write pointing a record at the target stops
/// until the test lets it go: a repoint PATCH held in flight.
struct HeldRepoint {
    inner: PowerDns,
    target: String,
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

#[async_trait]
impl DnsProvider for HeldRepoint {
    async fn zone(&self, zone: &DomainName) -> Result<Zone, DnsError> {
        self.inner.zone(zone).await
    }

    async fn zones(&self) -> Result<Vec<DomainName>, DnsError> {
        self.inner.zones().await
    }

    async fn apply(&self, zone: &DomainName, changes: &[RrsetChange]) -> Result<(), DnsError> {
        let repoint =
            changes.iter().any(|c| matches!(c, RrsetChange::Replace(r) if r.records.contains(&self.target)));
        if repoint && self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.apply(zone, changes).await
    }
}

fn engine_with(rig: &SimRig, dns: Arc<dyn DnsProvider>, owner: &str) -> Arc<Engine> {
    let mut world = World::from_config(&rig.config).unwrap();
    world.dns = dns;
    let clock: Arc<dyn Clock> = Arc::clone(&rig.clock) as Arc<dyn Clock>;
    Arc::new(Engine::new(EngineParts {
        store: rig.store.clone(),
        world,
        mail_from: rig.config.mail.from.clone(),
        clock,
        owner: owner.into(),
        lease: Duration::from_secs(20),
        idle_poll: Duration::from_millis(100),
        dns_write_concurrency: 1,
        workers: 4,
        stop_timeout: Duration::from_secs(5),
    }))
}

fn now(rig: &SimRig) -> Timestamp {
    rig.clock.now()
}

const SOURCE_V6: &str = "2001:db8::2";
const TARGET_V6: &str = "2001:db8::3";

async fn roll_back(rig: &SimRig, user: &siirto::names::AccountName) {
    let world = World::from_config(&rig.config).unwrap();
    let request = siirto::ops::RollbackRequest { id: &rig.id, user, domain: None, reason: "test rollback" };
    siirto::ops::rollback(&rig.store, &world, request, "maija", now(rig)).await.unwrap();
}

fn aaaa(zone: &Zone, name: &str) -> Option<Rrset> {
    zone.rrset(name, "AAAA").cloned()
}

/// The source has IPv6, the target none: the AAAA records at the source's address are deleted
/// at the repoint (another address in the same rrset stays), the SPF loses its ip6: token, and
/// every nameserver is checked to serve no AAAA at the old address. Rollback puts back exactly
/// what was there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_at_the_source_is_deleted_when_the_target_has_no_ipv6_and_rollback_restores_it() {
    let mut rig = start_rig(1).await;
    rig.config.hosts.get_mut("old").unwrap().ipv6 = Some(SOURCE_V6.parse().unwrap());
    let (user, domain) = (rig.user(0), rig.domain(0));
    let apex = domain.fqdn();
    let www = format!("www.{apex}");
    let spf = format!("\"v=spf1 ip4:{SOURCE_IP} ip6:{SOURCE_V6} -all\"");
    rig.dns
        .apply(
            &domain,
            &[
                replace(apex.clone(), "AAAA", 3600, vec![SOURCE_V6.into()]),
                replace(www.clone(), "AAAA", 3600, vec![SOURCE_V6.into(), "2001:db8::99".into()]),
                replace(apex.clone(), "TXT", 3600, vec![spf.clone()]),
            ],
        )
        .await
        .unwrap();
    let before = rig.zone(&domain).await;
    rig.plan_and_start(DEMO).await;
    let daemon = Daemon::start(rig.engine("it-dns", 4));
    rig.wait_for("the account to arrive", Duration::from_secs(120), |s| {
        account(s, user.as_str()).state == "done"
    })
    .await;

    let moved = rig.zone(&domain).await;
    assert_eq!(aaaa(&moved, &apex), None, "the apex AAAA at the old server is deleted");
    assert_eq!(rrset(&moved, &www, "AAAA").records, vec!["2001:db8::99".to_owned()]);
    assert_eq!(rrset(&moved, &apex, "TXT").records, vec![format!("\"v=spf1 ip4:{TARGET_IP} -all\"")]);
    assert_eq!(rrset(&moved, &apex, "A").records, vec![TARGET_IP.to_string()]);
    let recorded = rig.domain_state(&domain).await;
    let apex_aaaa = recorded.records().iter().find(|r| r.name == apex && r.rtype == "AAAA").unwrap();
    assert_eq!(apex_aaaa.removed, vec![SOURCE_V6.to_owned()], "recorded for the rollback");

    roll_back(&rig, &user).await;
    rig.wait_for("the rollback", Duration::from_secs(60), |s| domain_state_of(s, &domain) == "rolled_back")
        .await;
    daemon.stop().await;
    let back = rig.zone(&domain).await;
    assert_eq!(rrset(&back, &apex, "AAAA").records, vec![SOURCE_V6.to_owned()]);
    let mut www_back = rrset(&back, &www, "AAAA").records;
    www_back.sort();
    assert_eq!(www_back, vec!["2001:db8::2".to_owned(), "2001:db8::99".to_owned()]);
    assert_eq!(rrset(&back, &apex, "TXT").records, rrset(&before, &apex, "TXT").records, "SPF as it was");
    assert_eq!(rrset(&back, &apex, "A").records, vec![SOURCE_IP.to_string()]);
}

/// The target has IPv6, the source none, and the playbook asks for AAAA records: each name
/// whose A record moves gets one. Such a created record is gated by the zone's negative-caching
/// TTL, min(SOA TTL, SOA MINIMUM), recorded at the lowering and shown in the status; after the
/// settle period it gets its A record's TTL; a rollback deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_records_are_created_for_an_ipv6_target_behind_the_negative_ttl_gate() {
    let mut rig = start_rig(1).await;
    rig.config.hosts.get_mut("new").unwrap().ipv6 = Some(TARGET_V6.parse().unwrap());
    let (user, domain) = (rig.user(0), rig.domain(0));
    let apex = domain.fqdn();
    let www = format!("www.{apex}");
    let soa = rrset(&rig.zone(&domain).await, &apex, "SOA");
    let mut fields: Vec<String> = soa.records[0].split_whitespace().map(str::to_owned).collect();
    fields[6] = "900".into();
    rig.dns
        .apply(
            &domain,
            &[
                replace(apex.clone(), "SOA", 3600, vec![fields.join(" ")]),
                replace(apex.clone(), "A", 300, vec![SOURCE_IP.to_string()]),
            ],
        )
        .await
        .unwrap();
    let playbook = gated_playbook().replace("create_aaaa = false", "create_aaaa = true");
    assert!(playbook.contains("create_aaaa = true"));
    rig.plan_and_start(&playbook).await;
    let daemon = Daemon::start(rig.engine("it-dns", 4));
    let status = rig
        .wait_for("the TTLs to be lowered", Duration::from_secs(60), |s| {
            matches!(s.detail, siirto::domain::MigrationState::TtlLowered { .. })
        })
        .await;
    let lowered_at = rig.domain_state(&domain).await.lowered_at().unwrap();
    let shown = status.accounts[0].domains.iter().find(|d| d.domain == domain.as_str()).unwrap();
    let created = shown.gates.iter().find(|g| g.name == apex && g.rtype == "AAAA").unwrap();
    assert_eq!(created.negative_ttl, Some(900), "min(SOA TTL 3600, MINIMUM 900)");
    assert_eq!(created.opens_at, lowered_at + chrono::Duration::seconds(901));
    let apex_a = shown.gates.iter().find(|g| g.name == apex && g.rtype == "A").unwrap();
    assert_eq!(apex_a.opens_at, lowered_at + chrono::Duration::seconds(301));
    assert!(aaaa(&rig.zone(&domain).await, &apex).is_none(), "nothing is created before the repoint");

    rig.clock.advance(Duration::from_secs(3700));
    rig.wait_for("the account to arrive", Duration::from_secs(120), |s| {
        account(s, user.as_str()).state == "done"
    })
    .await;
    let moved = rig.zone(&domain).await;
    for name in [&apex, &www] {
        let created = rrset(&moved, name, "AAAA");
        assert_eq!((created.records.clone(), created.ttl), (vec![TARGET_V6.to_owned()], 60), "{name}");
    }

    rig.clock.advance(Duration::from_secs(3700));
    rig.wait_for("the TTLs to be restored", Duration::from_secs(60), |s| {
        domain_state_of(s, &domain) == "ttl_restored"
    })
    .await;
    let restored = rig.zone(&domain).await;
    assert_eq!(rrset(&restored, &apex, "AAAA").ttl, 300, "its A record's TTL");
    assert_eq!(rrset(&restored, &www, "AAAA").ttl, 3600);

    roll_back(&rig, &user).await;
    rig.wait_for("the rollback", Duration::from_secs(60), |s| domain_state_of(s, &domain) == "rolled_back")
        .await;
    daemon.stop().await;
    let back = rig.zone(&domain).await;
    assert_eq!(aaaa(&back, &apex), None, "created records are deleted by the rollback");
    assert_eq!(aaaa(&back, &www), None);
    assert_eq!(rrset(&back, &apex, "A").records, vec![SOURCE_IP.to_string()]);
}

/// Daemon A's repoint PATCH is held in flight; meanwhile the operator rolls the account back
/// and daemon B (same store) picks up the rollback job. B must not write while A's repoint
/// holds the account: it reschedules itself. When A's PATCH lands, A records its domains but
/// does not switch the rolled-back account; B's rollback then runs and points the records
/// back at the source. Without the guard, B would have "rolled back" records that still
/// pointed at the source and A's late PATCH would have left the customer on the target while
/// the status said rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_not_overwritten_by_a_repoint_in_flight() {
    let rig = start_rig(1).await;
    let (user, domain) = (rig.user(0), rig.domain(0));
    let held = Arc::new(HeldRepoint {
        inner: rig.dns.clone(),
        target: TARGET_IP.to_string(),
        armed: AtomicBool::new(true),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let daemon_a = engine_with(&rig, Arc::clone(&held) as Arc<dyn DnsProvider>, "daemon-a");
    let daemon_b = engine_with(&rig, Arc::new(rig.dns.clone()), "daemon-b");
    rig.plan_and_start(DEMO).await;

    // Daemon A alone, until the account is verified (its repoint job is then due).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ran = daemon_a.tick().await.unwrap();
        if account(&rig.status().await, user.as_str()).state == "verified" {
            break;
        }
        assert!(Instant::now() < deadline, "not verified: {:#?}", rig.status().await);
        if ran == 0 {
            // Nothing due: move the engine's clock to the next job (gates, polls).
            rig.clock.advance(Duration::from_secs(3));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    rig.clock.advance(Duration::from_secs(3));
    let a = Arc::clone(&daemon_a);
    let repoint = tokio::spawn(async move { a.tick().await.unwrap() });
    tokio::time::timeout(Duration::from_secs(60), held.entered.notified())
        .await
        .expect("daemon A's repoint reaches its PATCH");

    // The operator rolls back while the PATCH is in flight.
    let adapters = World::from_config(&rig.config).unwrap();
    let request = siirto::ops::RollbackRequest {
        id: &rig.id,
        user: &user,
        domain: None,
        reason: "customer asked to stay",
    };
    siirto::ops::rollback(&rig.store, &adapters, request, "maija", now(&rig)).await.unwrap();

    // Daemon B claims the rollback job, finds the account's DNS taken, and waits.
    assert!(daemon_b.tick().await.unwrap() >= 1);
    let jobs = rig.store.jobs(rig.id.as_str()).await.unwrap();
    let rollback_job = jobs.iter().find(|j| j.kind == "rollback").unwrap();
    assert_eq!((rollback_job.done_at, rollback_job.attempts), (None, 0), "{rollback_job:?}");
    assert!(rollback_job.due_at > now(&rig).timestamp_millis(), "rescheduled: {rollback_job:?}");
    assert_eq!(domain_state_of(&rig.status().await, &domain), "verified_on_target", "B recorded nothing");
    assert_eq!(rrset(&rig.zone(&domain).await, &domain.fqdn(), "A").records, vec![SOURCE_IP.to_string()]);

    // A's PATCH lands: its domains are recorded as they are, the account is not switched.
    held.release.notify_one();
    repoint.await.unwrap();
    let status = rig.status().await;
    assert_eq!(account(&status, user.as_str()).state, "rolled_back", "{status:#?}");
    assert_eq!(domain_state_of(&status, &domain), "serving_target");
    assert_eq!(rrset(&rig.zone(&domain).await, &domain.fqdn(), "A").records, vec![TARGET_IP.to_string()]);
    let events = rig.store.events(rig.id.as_str()).await.unwrap();
    assert!(!events.iter().any(|e| e.kind == "account_switched"), "not switched");

    // B's rollback runs now and points everything back.
    rig.clock.advance(Duration::from_secs(2));
    assert!(daemon_b.tick().await.unwrap() >= 1);
    let status = rig.status().await;
    assert_eq!(account(&status, user.as_str()).state, "rolled_back");
    assert_eq!(domain_state_of(&status, &domain), "rolled_back");
    let zone = rig.zone(&domain).await;
    for name in [domain.fqdn(), format!("www.{}", domain.fqdn())] {
        assert_eq!(rrset(&zone, &name, "A").records, vec![SOURCE_IP.to_string()], "{name}");
    }
    let jobs = rig.store.jobs(rig.id.as_str()).await.unwrap();
    assert!(jobs.iter().find(|j| j.kind == "rollback").unwrap().done_at.is_some());
    // The only TTL restore is the rollback's own, after the settle period: none from the
    // repoint that lost the race.
    let restores: Vec<_> = jobs.iter().filter(|j| j.kind == "restore_ttl").collect();
    assert_eq!(restores.len(), 1, "{restores:#?}");
    assert!(restores[0].dedupe_key.contains(":rollback:"), "{restores:#?}");
    assert!(restores[0].due_at >= now(&rig).timestamp_millis() + 2 * 86_400_000 - 10_000, "{restores:#?}");
}

/// BIND with `max-records-per-type 5`: an update making an rrset of 6 SERVFAILs there. The
/// provider, told the same limit, refuses such a batch before sending it with a permanent
/// error naming zone, name, type and count, and the zone stays as it was; a batch at the limit
/// is applied. A provider with a higher limit than the server's sends it and gets BIND's
/// SERVFAIL, whose message points at the rrset and the setting.
#[tokio::test]
async fn an_rrset_over_the_servers_limit_is_refused_as_permanent() {
    let zone_text = "@ NS ns1\nns1 A 127.0.0.1\nwww A 192.0.2.10\n";
    let bind = Bind::start_with_options(
        &[ZoneFile { name: "big.test", records: zone_text }],
        TsigAlgorithm::HmacSha256,
        "max-records-per-type 5;",
    )
    .await;
    let zone = DomainName::parse("big.test").unwrap();
    let provider = |max: usize| {
        Rfc2136::new(bind.dns_addr, bind.key.clone(), vec![zone.clone()])
            .unwrap()
            .with_max_records_per_type(max)
    };
    let www = |count: u8| {
        vec![RrsetChange::Replace(Rrset {
            name: "www.big.test.".into(),
            rtype: "A".into(),
            ttl: 60,
            records: (1..=count).map(|i| format!("192.0.2.{i}")).collect(),
        })]
    };
    let before = provider(5).zone(&zone).await.unwrap();

    let err = provider(5).apply(&zone, &www(6)).await.unwrap_err();
    assert!(matches!(err, DnsError::TooManyRecords { count: 6, max: 5, .. }), "{err:?}");
    assert!(!err.is_transient(), "retrying cannot help");
    let text = err.to_string();
    for part in ["zone big.test", "www.big.test. A", "6 records", "limit of 5", "max_records_per_type"] {
        assert!(text.contains(part), "{part:?} missing in {text}");
    }
    assert_eq!(provider(5).zone(&zone).await.unwrap(), before, "nothing was sent");

    // The server really has this limit: past it, BIND itself fails the update with SERVFAIL
    // (transient by its code, so the message must say what to check).
    let err = provider(100).apply(&zone, &www(6)).await.unwrap_err();
    assert!(matches!(&err, DnsError::Rcode { rcode, .. } if rcode.starts_with("SERVFAIL")), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("www.big.test. A") && text.contains("max_records_per_type"), "{text}");
    assert_eq!(provider(5).zone(&zone).await.unwrap(), before, "BIND applied none of it");

    // At the limit: applied.
    provider(5).apply(&zone, &www(5)).await.unwrap();
    let after = provider(5).zone(&zone).await.unwrap();
    assert_eq!(after.rrset("www.big.test.", "A").unwrap().records.len(), 5);
}
