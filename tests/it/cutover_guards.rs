//! The cutover's guards against real nameservers: a rollback issued while a repoint's PATCH
//! is in flight is not overwritten by it (two daemons, real pdns_server), and an rrset bigger
//! than BIND's max-records-per-type is refused as permanent (real BIND).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use siirto::demo::{SOURCE_IP, TARGET_IP};
use siirto::dns::{DnsError, DnsProvider, PowerDns, Rfc2136, Rrset, RrsetChange, TsigAlgorithm, Zone};
use siirto::domain::Timestamp;
use siirto::engine::{Clock, Engine, EngineParts, adapters_from_config};
use siirto::names::DomainName;
use tokio::sync::Notify;

use crate::dns_cutover::{DEMO, Rig, account_state_of, domain_state_of, rrset};
use crate::support::bind::{Bind, ZoneFile};

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

fn engine_with(rig: &Rig, dns: Arc<dyn DnsProvider>, owner: &str) -> Arc<Engine> {
    let adapters = adapters_from_config(&rig.config).unwrap();
    let clock: Arc<dyn Clock> = Arc::clone(&rig.clock) as Arc<dyn Clock>;
    Arc::new(Engine::new(EngineParts {
        store: rig.store.clone(),
        hosts: adapters.hosts,
        dns,
        checker: adapters.checker,
        channel: adapters.channel,
        mail_from: rig.config.mail.from.clone(),
        clock,
        owner: owner.into(),
        lease: Duration::from_secs(20),
        idle_poll: Duration::from_millis(100),
        dns_write_concurrency: 1,
        workers: 4,
    }))
}

fn now(rig: &Rig) -> Timestamp {
    rig.clock.now()
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
    let rig = Rig::start(1).await;
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
        if account_state_of(&rig.status().await, &user).state == "verified" {
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
    let adapters = adapters_from_config(&rig.config).unwrap();
    let request = siirto::actions::RollbackRequest {
        id: &rig.id,
        user: &user,
        domain: None,
        reason: "customer asked to stay",
    };
    siirto::actions::rollback(&rig.store, &adapters.hosts["old"].whm, request, now(&rig), "maija")
        .await
        .unwrap();

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
    assert_eq!(account_state_of(&status, &user).state, "rolled_back", "{status:#?}");
    assert_eq!(domain_state_of(&status, &domain), "done");
    assert_eq!(rrset(&rig.zone(&domain).await, &domain.fqdn(), "A").records, vec![TARGET_IP.to_string()]);
    let events = rig.store.events(rig.id.as_str()).await.unwrap();
    assert!(!events.iter().any(|e| e.kind == "account_switched"), "not switched");

    // B's rollback runs now and points everything back.
    rig.clock.advance(Duration::from_secs(2));
    assert!(daemon_b.tick().await.unwrap() >= 1);
    let status = rig.status().await;
    assert_eq!(account_state_of(&status, &user).state, "rolled_back");
    assert_eq!(domain_state_of(&status, &domain), "rolled_back");
    let zone = rig.zone(&domain).await;
    for name in [domain.fqdn(), format!("www.{}", domain.fqdn())] {
        assert_eq!(rrset(&zone, &name, "A").records, vec![SOURCE_IP.to_string()], "{name}");
    }
    let jobs = rig.store.jobs(rig.id.as_str()).await.unwrap();
    assert!(jobs.iter().find(|j| j.kind == "rollback").unwrap().done_at.is_some());
    assert!(!jobs.iter().any(|j| j.kind == "restore_ttl"), "no TTL restore for a rolled-back account");
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
