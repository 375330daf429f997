//! DNS cutover on our own nameservers, against a real pdns_server and the real engine:
//! per-record observed TTLs and gates, one PATCH per zone, SPF rewritten and MX at a spam
//! filter untouched, TTLs restored after the settle period, rollback, the safety threshold,
//! and a stale second nameserver.

use std::time::{Duration, Instant};

use siirto::demo::{SOURCE_IP, TARGET_IP, ZONE_TTL, create_zones};
use siirto::dns::{DnsProvider, Rrset, RrsetChange, Zone};
use siirto::domain::MigrationState;
use siirto::engine::Clock;
use siirto::names::DomainName;
use siirto::playbook::Playbook;
use siirto::status::MigrationStatus;
use siirto::world::World;

use crate::support::pdns::Pdns;
use crate::support::rig::{Daemon, RigOptions, SimRig, account, dns_endpoint};

pub(crate) const DEMO: &str = include_str!("../../playbooks/demo.toml");

/// The demo playbook with real per-record gates (no wait override, a 1 s margin) and a settle
/// period of one hour; the tests move the engine's clock instead of waiting.
pub(crate) fn gated_playbook() -> String {
    let text = DEMO
        .replace("gate_wait_override = \"2s\"\n", "")
        .replace("gate_margin = \"5m\"", "gate_margin = \"1s\"")
        .replace("settle_after = \"2d\"", "settle_after = \"1h\"");
    assert!(!text.contains("gate_wait_override ="), "the demo playbook changed; update the test");
    text
}

/// A rig with `accounts` accounts for the cutover tests (theirs and `cutover_guards`').
pub(crate) async fn start_rig(accounts: usize) -> SimRig {
    SimRig::start(RigOptions::new("dns-cutover", accounts)).await
}

pub(crate) fn rrset(zone: &Zone, name: &str, rtype: &str) -> Rrset {
    zone.rrset(name, rtype).cloned().unwrap_or_else(|| panic!("{name} {rtype} missing in {}", zone.name))
}

pub(crate) fn serial(zone: &Zone) -> u64 {
    let soa = rrset(zone, &zone.name.fqdn(), "SOA");
    soa.records[0].split_whitespace().nth(2).unwrap().parse().unwrap()
}

pub(crate) fn domain_state_of(status: &MigrationStatus, domain: &DomainName) -> String {
    status
        .accounts
        .iter()
        .flat_map(|a| &a.domains)
        .find(|d| d.domain == domain.as_str())
        .unwrap()
        .state
        .clone()
}

pub(crate) fn replace(name: String, rtype: &str, ttl: u32, records: Vec<String>) -> RrsetChange {
    RrsetChange::Replace(Rrset { name, rtype: rtype.into(), ttl, records })
}

/// A zone of 500 rrsets where the apex A has TTL 3600 and www 300: each record's old TTL is
/// recorded and gates it; the lowering and the repoint are one PATCH each (the SOA serial moves
/// by exactly one); only the records at the source change (A, the SPF ip4 token), an MX at a
/// spam filter and records pointing elsewhere are untouched; after the settle period each
/// record gets its own TTL back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_record_ttls_one_patch_spf_and_restore() {
    let rig = start_rig(1).await;
    let domain = rig.domain(0);
    let apex = domain.fqdn();
    let source = SOURCE_IP.to_string();
    let mut changes = vec![
        replace(apex.clone(), "A", 3600, vec![source.clone()]),
        replace(format!("www.{apex}"), "A", 300, vec![source.clone()]),
        replace(
            apex.clone(),
            "TXT",
            3600,
            vec![format!("\"v=spf1 ip4:{SOURCE_IP} include:_spf.example.com -all\"")],
        ),
        replace(format!("filtered.{apex}"), "MX", 3600, vec!["10 mx1.spamfilter.example.".into()]),
        replace(format!("deep.sub.{apex}"), "A", 3600, vec![source.clone()]),
    ];
    for i in 0..491 {
        changes.push(replace(format!("h{i}.{apex}"), "A", 3600, vec![format!("192.0.2.{}", i % 250 + 1)]));
    }
    rig.dns.apply(&domain, &changes).await.unwrap();
    let before = rig.zone(&domain).await;
    assert!(before.rrsets.len() >= 500, "{}", before.rrsets.len());

    rig.plan_and_start(&gated_playbook()).await;
    let daemon = Daemon::start(rig.engine("it-dns", 4));
    let status = rig
        .wait_for("the TTLs to be lowered", Duration::from_secs(60), |s| {
            matches!(s.detail, MigrationState::TtlLowered { .. })
        })
        .await;

    // Each record that will change is recorded with its own old TTL, and gated by it.
    let state = rig.domain_state(&domain).await;
    let mut recorded: Vec<(String, String, u32)> =
        state.records().iter().map(|r| (r.name.clone(), r.rtype.clone(), r.old_ttl)).collect();
    recorded.sort();
    let mut expected = vec![
        (apex.clone(), "A".to_owned(), 3600),
        (apex.clone(), "TXT".to_owned(), 3600),
        (format!("mail.{apex}"), "A".to_owned(), ZONE_TTL),
        (format!("www.{apex}"), "A".to_owned(), 300),
    ];
    expected.sort();
    assert_eq!(recorded, expected);
    let shown = status.accounts[0].domains.iter().find(|d| d.domain == domain.as_str()).unwrap();
    let lowered_at = state.lowered_at().unwrap();
    let www_gate = shown.gates.iter().find(|g| g.name == format!("www.{apex}")).unwrap();
    assert_eq!(www_gate.opens_at, lowered_at + chrono::Duration::seconds(301));
    let apex_gate = shown.gates.iter().find(|g| g.name == apex && g.rtype == "A").unwrap();
    assert_eq!(apex_gate.opens_at, lowered_at + chrono::Duration::seconds(3601));
    assert_eq!(shown.gate_opens_at.as_deref(), Some(apex_gate.opens_at.to_rfc3339().as_str()));
    let MigrationState::TtlLowered { gate_opens_at, .. } = status.detail else { unreachable!() };
    assert!(gate_opens_at >= apex_gate.opens_at, "the migration's gate is the latest record's");

    // Lowered in one PATCH: short TTLs on exactly the recorded records.
    let lowered = rig.zone(&domain).await;
    assert_eq!(serial(&lowered), serial(&before) + 1, "lowering is one PATCH");
    for (name, rtype, _) in &expected {
        assert_eq!(rrset(&lowered, name, rtype).ttl, 60, "{name} {rtype}");
    }
    for (name, rtype) in
        [(format!("filtered.{apex}"), "MX"), (apex.clone(), "MX"), (format!("deep.sub.{apex}"), "A")]
    {
        assert_eq!(rrset(&lowered, &name, rtype), rrset(&before, &name, rtype), "{name} {rtype}");
    }

    // Past every gate: the cutover runs; the repoint is one PATCH.
    rig.clock.advance(Duration::from_secs(3700));
    rig.wait_for("the account to arrive", Duration::from_secs(120), |s| {
        account(s, rig.user(0).as_str()).state == "done"
    })
    .await;
    let moved = rig.zone(&domain).await;
    assert_eq!(serial(&moved), serial(&lowered) + 1, "the repoint is one PATCH");
    let target = TARGET_IP.to_string();
    for name in [apex.clone(), format!("www.{apex}"), format!("mail.{apex}")] {
        assert_eq!(rrset(&moved, &name, "A").records, vec![target.clone()], "{name}");
    }
    assert_eq!(
        rrset(&moved, &apex, "TXT").records,
        vec![format!("\"v=spf1 ip4:{TARGET_IP} include:_spf.example.com -all\"")]
    );
    let untouched: Vec<&Rrset> = before
        .rrsets
        .iter()
        .filter(|r| !expected.iter().any(|(n, t, _)| n == &r.name && t == &r.rtype) && r.rtype != "SOA")
        .collect();
    assert!(untouched.len() >= 495, "{}", untouched.len());
    for r in untouched {
        assert_eq!(moved.rrset(&r.name, &r.rtype), Some(r), "{} {} must not change", r.name, r.rtype);
    }
    assert_eq!(domain_state_of(&rig.status().await, &domain), "serving_target");

    // After the settle period each record gets its own TTL back, in one PATCH.
    rig.clock.advance(Duration::from_secs(3700));
    rig.wait_for("the TTLs to be restored", Duration::from_secs(60), |s| {
        domain_state_of(s, &domain) == "ttl_restored"
    })
    .await;
    daemon.stop().await;
    let restored = rig.zone(&domain).await;
    assert_eq!(serial(&restored), serial(&moved) + 1, "the restore is one PATCH");
    for (name, rtype, ttl) in &expected {
        assert_eq!(rrset(&restored, name, rtype).ttl, *ttl, "{name} {rtype}");
        assert_eq!(rrset(&restored, name, rtype).records, rrset(&moved, name, rtype).records);
    }
}

/// Rollback after the TTLs were restored: the records point at the source again with the short
/// TTL, the reason and who asked are in the event log, and the engine leaves the account alone.
/// `siirto retry` moves it again — but not before the new gate (the repoint job reschedules).
/// Once the source no longer holds an account, its rollback is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_retry_gate_and_refusal() {
    let rig = start_rig(2).await;
    rig.plan_and_start(&gated_playbook()).await;
    let daemon = Daemon::start(rig.engine("it-dns", 4));
    rig.wait_for("the TTLs to be lowered", Duration::from_secs(60), |s| {
        matches!(s.detail, MigrationState::TtlLowered { .. })
    })
    .await;
    rig.clock.advance(Duration::from_secs(3700));
    rig.wait_for("the cutover", Duration::from_secs(120), |s| {
        matches!(s.detail, MigrationState::CutOver { .. })
    })
    .await;
    rig.clock.advance(Duration::from_secs(3700));
    let (user, domain) = (rig.user(0), rig.domain(0));
    rig.wait_for("the TTLs to be restored", Duration::from_secs(60), |s| {
        domain_state_of(s, &domain) == "ttl_restored"
    })
    .await;

    let world = World::from_config(&rig.config).unwrap();
    let request = siirto::ops::RollbackRequest {
        id: &rig.id,
        user: &user,
        domain: None,
        reason: "the shop breaks on the new PHP",
    };
    let state = siirto::ops::rollback(&rig.store, &world, request, "maija", rig.clock.now()).await.unwrap();
    assert_eq!(state.name(), "rolled_back");
    rig.wait_for("the rollback", Duration::from_secs(60), |s| domain_state_of(s, &domain) == "rolled_back")
        .await;
    // The source delivers the domain's mail itself again (it was relaying it since the repoint).
    assert_eq!(rig.hosts.source.mail_routing(&domain), "local");
    assert_eq!(rig.hosts.source.mail_routing(&rig.domain(1)), "remote", "the other account's stays relayed");
    let zone = rig.zone(&domain).await;
    for name in [domain.fqdn(), format!("www.{}", domain.fqdn())] {
        let a = rrset(&zone, &name, "A");
        assert_eq!(a.records, vec![SOURCE_IP.to_string()], "{name}");
        assert_eq!(a.ttl, 60, "{name}: restored TTLs are lowered again");
    }
    let events = rig.store.events(rig.id.as_str()).await.unwrap();
    let rolled = events.iter().find(|e| e.kind == "account_rolled_back").unwrap();
    assert_eq!(rolled.actor, "maija");
    assert!(rolled.detail.contains("the shop breaks on the new PHP"), "{}", rolled.detail);
    let status = rig.status().await;
    assert_eq!(account(&status, user.as_str()).reason.as_deref(), Some("the shop breaks on the new PHP"));
    // The other account was not touched.
    let other = rig.zone(&rig.domain(1)).await;
    assert_eq!(rrset(&other, &rig.domain(1).fqdn(), "A").records, vec![TARGET_IP.to_string()]);
    // The short TTL stays for the settle period after the rollback, and status says until when.
    let shown =
        status.accounts.iter().flat_map(|a| &a.domains).find(|d| d.domain == domain.as_str()).unwrap();
    let until = shown.short_ttl_until.clone().expect("status says until when the TTL stays short");
    let rolled_at = match rig.domain_state(&domain).await {
        siirto::domain::DomainState::RolledBack { at, .. } => at,
        other => panic!("{other:?}"),
    };
    assert_eq!(until, (rolled_at + chrono::Duration::seconds(3600)).to_rfc3339());
    let original: Vec<(String, u32)> = rig
        .domain_state(&domain)
        .await
        .records()
        .iter()
        .filter(|r| r.rtype == "A")
        .map(|r| (r.name.clone(), r.old_ttl))
        .collect();
    assert!(original.iter().all(|(_, ttl)| *ttl > 60), "{original:?}");

    // Then the records get their original TTL back; still at the source.
    rig.clock.advance(Duration::from_secs(3700));
    let status = rig
        .wait_for("the rolled-back TTLs to be restored", Duration::from_secs(60), |s| {
            s.accounts
                .iter()
                .flat_map(|a| &a.domains)
                .any(|d| d.domain == domain.as_str() && d.ttl_restored_at.is_some())
        })
        .await;
    assert_eq!(domain_state_of(&status, &domain), "rolled_back");
    let zone = rig.zone(&domain).await;
    for (name, ttl) in &original {
        let a = rrset(&zone, name, "A");
        assert_eq!((a.ttl, a.records.clone()), (*ttl, vec![SOURCE_IP.to_string()]), "{name}");
    }

    // Retry: lowered again first, verified again, and the records wait for their gate.
    siirto::ops::retry(&rig.store, &rig.id, &user, "maija", rig.clock.now()).await.unwrap();
    rig.wait_for("the account to be verified again", Duration::from_secs(60), |s| {
        account(s, user.as_str()).state == "verified" && domain_state_of(s, &domain) == "verified_on_target"
    })
    .await;
    let lowered_at = rig.domain_state(&domain).await.lowered_at().unwrap();
    assert!(lowered_at > rolled_at, "the gate counts from the new lowering");
    for (name, _) in &original {
        assert_eq!(rrset(&rig.zone(&domain).await, name, "A").ttl, 60, "{name} lowered again");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = rig.store.jobs(rig.id.as_str()).await.unwrap();
        let waiting =
            jobs.iter().find(|j| j.kind == "repoint" && j.subject == user.as_str() && j.done_at.is_none());
        if let Some(job) = waiting
            && job.due_at >= (lowered_at + chrono::Duration::seconds(3600)).timestamp_millis()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the early repoint was not rescheduled to the gate: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rrset(&rig.zone(&domain).await, &domain.fqdn(), "A").records, vec![SOURCE_IP.to_string()]);
    rig.clock.advance(Duration::from_secs(3700));
    rig.wait_for("the account to arrive again", Duration::from_secs(60), |s| {
        account(s, user.as_str()).state == "done"
    })
    .await;
    assert_eq!(rrset(&rig.zone(&domain).await, &domain.fqdn(), "A").records, vec![TARGET_IP.to_string()]);
    assert_eq!(rig.hosts.source.mail_routing(&domain), "remote", "relayed to the target again");
    daemon.stop().await;

    // The source no longer holds the other account: its rollback is refused, nothing recorded.
    let other = rig.user(1);
    world.hosts["old"].whm.remove_account(&other, true).await.unwrap();
    let request =
        siirto::ops::RollbackRequest { id: &rig.id, user: &other, domain: None, reason: "too late" };
    let err = siirto::ops::rollback(&rig.store, &world, request, "maija", rig.clock.now()).await.unwrap_err();
    assert!(format!("{err:#}").contains("no longer holds"), "{err:#}");
    assert_eq!(account(&rig.status().await, other.as_str()).state, "done");
}

/// A repoint that would change more than max_change_share of a big zone is refused: nothing
/// written, the account held with the reason; the other account arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safety_threshold_holds_the_account_and_writes_nothing() {
    let rig = start_rig(2).await;
    let domain = rig.domain(0);
    let apex = domain.fqdn();
    let changes: Vec<RrsetChange> =
        (0..15).map(|i| replace(format!("h{i}.{apex}"), "A", 3600, vec![SOURCE_IP.to_string()])).collect();
    rig.dns.apply(&domain, &changes).await.unwrap();
    rig.plan_and_start(DEMO).await;
    let daemon = Daemon::start(rig.engine("it-dns", 4));
    let status = rig
        .wait_for("the cutover", Duration::from_secs(120), |s| {
            matches!(s.detail, MigrationState::CutOver { .. })
        })
        .await;
    daemon.stop().await;
    let held = account(&status, rig.user(0).as_str());
    assert_eq!(held.state, "held", "{status:#?}");
    let reason = held.reason.clone().unwrap_or_default();
    assert!(reason.contains("max_change_share") && reason.contains("nothing written"), "{reason}");
    assert_eq!(account(&status, rig.user(1).as_str()).state, "done");
    let zone = rig.zone(&domain).await;
    let at_target: Vec<&Rrset> =
        zone.rrsets.iter().filter(|r| r.records.contains(&TARGET_IP.to_string())).collect();
    assert!(at_target.is_empty(), "nothing may be written: {at_target:?}");
}

/// A second nameserver that never gets the change: verification stays stale, the repoint is
/// retried and the account finally held with the evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_nameserver_holds_the_account_with_the_evidence() {
    let mut rig = start_rig(1).await;
    let stale = Pdns::start().await;
    create_zones(&dns_endpoint(&stale).client().unwrap(), &rig.hosts.accounts, SOURCE_IP).await.unwrap();
    rig.config.dns.nameservers.push(stale.dns_addr);
    rig.plan_and_start(DEMO).await;
    let daemon = Daemon::start(rig.engine("it-dns", 4));
    let status = rig
        .wait_for("the cutover", Duration::from_secs(120), |s| {
            matches!(s.detail, MigrationState::CutOver { .. })
        })
        .await;
    daemon.stop().await;
    let held = account(&status, rig.user(0).as_str());
    assert_eq!(held.state, "held", "{status:#?}");
    let reason = held.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&stale.dns_addr.to_string())
            && reason.contains("still answers")
            && reason.contains("127.0.0.2"),
        "{reason}"
    );
    let budget = Playbook::parse(DEMO, "demo").unwrap().retry.max_attempts as usize;
    assert!(reason.contains(&format!("after {budget} attempt")), "{reason}");
    let events = rig.store.events(rig.id.as_str()).await.unwrap();
    let retries = events.iter().filter(|e| e.kind == "step_failed" && e.detail.contains("repoint")).count();
    assert_eq!(retries, budget - 1, "retried before holding");
    assert_eq!(domain_state_of(&status, &rig.domain(0)), "repointed");
    let _ = &rig.pdns;
}

/// A daemon that died between the lowering PATCH and its record leaves the domain observed
/// with the old TTLs while the zone already has the short ones. The re-run keeps the first
/// observation and says so in words; it is not a second observation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reobservation_after_a_crash_keeps_the_first_and_says_so() {
    let rig = start_rig(1).await;
    let domain = rig.domain(0);
    let apex = domain.fqdn();
    rig.plan_and_start(&gated_playbook()).await;
    // The state the crash left: observed (apex A 3600 as first seen), zone already lowered.
    let first = rig.zone(&domain).await;
    let apex_ttl = rrset(&first, &apex, "A").ttl;
    assert!(apex_ttl > 60, "{apex_ttl}");
    let observed = siirto::domain::DomainState::TtlObserved {
        records: vec![siirto::domain::ObservedRecord::changed(apex.clone(), "A", apex_ttl)],
    };
    let mut tx = rig.store.begin().await.unwrap();
    let data = serde_json::to_string(&observed).unwrap();
    tx.set_domain_state(rig.id.as_str(), domain.as_str(), observed.name(), &data, 0).await.unwrap();
    tx.commit().await.unwrap();
    rig.dns
        .apply(&domain, &[replace(apex.clone(), "A", 60, rrset(&first, &apex, "A").records)])
        .await
        .unwrap();

    let daemon = Daemon::start(rig.engine("it-dns", 2));
    rig.wait_for("the TTLs to be lowered", Duration::from_secs(60), |s| {
        matches!(s.detail, MigrationState::TtlLowered { .. })
    })
    .await;
    daemon.stop().await;
    let state = rig.domain_state(&domain).await;
    let kept = state.records().iter().find(|r| r.name == apex && r.rtype == "A").unwrap();
    assert_eq!(kept.old_ttl, apex_ttl, "the first observation stands");
    let events = rig.events().await;
    let ours: Vec<_> = events.iter().filter(|e| e.domain.as_deref() == Some(domain.as_str())).collect();
    assert!(!ours.iter().any(|e| e.kind == "domain_ttl_observed"), "{ours:#?}");
    let again = ours.iter().find(|e| e.kind == "domain_ttl_observed_again").expect("said once");
    let said = format!("{apex} A: already lowered to 60; kept the observed {apex_ttl}");
    assert!(again.detail.contains(&said), "{said:?} not in {}", again.detail);
    assert_eq!(ours.iter().filter(|e| e.kind == "domain_ttl_observed_again").count(), 1);
}
