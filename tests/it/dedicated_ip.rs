//! Accounts on a dedicated IP, end to end: simulated source and target hosts with dedicated
//! addresses, a real pdns_server and the real engine. Two accounts are on dedicated IPs at the
//! source; one is assigned its target address before the cutover, the other waits visibly while
//! the rest of the migration finishes. `siirto assign-ip`'s refusals are checked, the accounts
//! move after every other account, `setsiteip` puts them on their assigned addresses, the sites
//! are verified there, their DNS is repointed (dedicated → assigned, shared → shared), and a
//! rollback points it back at the dedicated source address.

use std::net::Ipv4Addr;
use std::time::Duration;

use siirto::demo::{SOURCE_IP, TARGET_IP};
use siirto::dns::{DnsProvider, Rrset, RrsetChange, Zone};
use siirto::engine::Clock;
use siirto::names::AccountName;
use siirto::sim::generate_accounts;
use siirto::status::MigrationStatus;
use siirto::store::EventRow;
use siirto::world::World;

use crate::support::rig::{Daemon, RigOptions, SimRig};

const DEMO: &str = include_str!("../../playbooks/demo.toml");

/// The source's dedicated addresses: accounts 7 and 8 are on them.
const SOURCE_DEDICATED: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 131), Ipv4Addr::new(127, 0, 0, 132)];
/// The target's dedicated addresses; the third is used by an account already on the target.
const TARGET_DEDICATED: [Ipv4Addr; 3] =
    [Ipv4Addr::new(127, 0, 0, 141), Ipv4Addr::new(127, 0, 0, 142), Ipv4Addr::new(127, 0, 0, 143)];

/// Eight accounts on the source, the last two on its dedicated addresses (their zones point
/// there, with one record at the shared address each); one account already on the target, on
/// its third dedicated address.
async fn start_rig() -> SimRig {
    let mut options = RigOptions::new("dedicated", 0);
    options.source.accounts = generate_accounts(8, "omaip");
    options.source.accounts[6].dedicated_ip = Some(SOURCE_DEDICATED[0]);
    options.source.accounts[7].dedicated_ip = Some(SOURCE_DEDICATED[1]);
    options.source.dedicated_ips = SOURCE_DEDICATED.to_vec();
    options.target.accounts = generate_accounts(1, "asukas");
    options.target.accounts[0].dedicated_ip = Some(TARGET_DEDICATED[2]);
    options.target.dedicated_ips = TARGET_DEDICATED.to_vec();
    let rig = SimRig::start(options).await;
    for account in &rig.hosts.accounts[6..] {
        // One record of a dedicated-IP account at the source's shared address.
        let change = RrsetChange::Replace(Rrset {
            name: format!("ftp.{}", account.domain.fqdn()),
            rtype: "A".into(),
            ttl: 3600,
            records: vec![SOURCE_IP.to_string()],
        });
        rig.dns.apply(&account.domain, &[change]).await.unwrap();
    }
    rig
}

/// How long the test waits for the daemon to get somewhere.
const WAIT: Duration = Duration::from_secs(120);

/// `siirto assign-ip` for the `n`th account, by maija.
async fn assign(rig: &SimRig, n: usize, ip: Ipv4Addr) -> anyhow::Result<siirto::ops::Assigned> {
    let world = World::from_config(&rig.config).unwrap();
    siirto::ops::assign_ip(&rig.store, &world, &rig.id, &rig.user(n), ip, "maija", rig.clock.now()).await
}

fn state_of(status: &MigrationStatus, user: &AccountName) -> String {
    status.accounts.iter().find(|a| a.user == user.as_str()).unwrap().state.clone()
}

fn a_record(zone: &Zone, name: &str) -> Vec<String> {
    zone.rrset(name, "A").unwrap_or_else(|| panic!("{name} A missing")).records.clone()
}

/// The first event of `kind` for `user`.
fn event_id(events: &[EventRow], user: &str, kind: &str) -> i64 {
    events
        .iter()
        .find(|e| e.account.as_deref() == Some(user) && e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} event for {user}"))
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_ip_accounts_wait_for_their_address_and_move_last() {
    let rig = start_rig().await;
    let (early, late) = (rig.user(6), rig.user(7));

    // Plan: both dedicated-IP accounts wait for a target IP; their domains are planned for
    // a repoint like any other (their sites are at the source, on its dedicated addresses).
    let plan = rig.plan(DEMO).await;
    assert_eq!(plan.counts.held_for_operator, 2, "{:#?}", plan.flagged);
    assert_eq!(plan.counts.move_and_repoint, plan.counts.domains, "{:#?}", plan.flagged);
    let status = rig.status().await;
    assert_eq!(state_of(&status, &early), "awaiting_target_ip");
    let waiting = status.accounts.iter().find(|a| a.user == late.as_str()).unwrap();
    let reason = waiting.reason.as_deref().unwrap();
    assert!(reason.contains("waiting for a target IP") && reason.contains("127.0.0.132"), "{reason}");

    // Refusals: an address the target does not have, its shared address, an address an
    // account on the target uses, an account that is not waiting for one.
    let err = format!("{:#}", assign(&rig, 6, Ipv4Addr::new(127, 0, 0, 199)).await.unwrap_err());
    assert!(
        err.contains(early.as_str()) && err.contains("127.0.0.199 is not an address of the target"),
        "{err}"
    );
    let err = format!("{:#}", assign(&rig, 6, TARGET_IP).await.unwrap_err());
    assert!(err.contains("shared address") && err.contains("not a dedicated one"), "{err}");
    let err = format!("{:#}", assign(&rig, 6, TARGET_DEDICATED[2]).await.unwrap_err());
    assert!(err.contains("127.0.0.143 is already used by an account on the target"), "{err}");
    let err = format!("{:#}", assign(&rig, 0, TARGET_DEDICATED[0]).await.unwrap_err());
    assert!(err.contains(rig.user(0).as_str()) && err.contains("not waiting for a target IP"), "{err}");

    // The first is assigned before the start: it still moves after the others.
    let assigned = assign(&rig, 6, TARGET_DEDICATED[0]).await.unwrap();
    assert_eq!(assigned.state.name(), "pending");
    assert_eq!(assigned.source_ip, SOURCE_DEDICATED[0]);
    assert!(!assigned.transfer_scheduled);
    let err = format!("{:#}", assign(&rig, 6, TARGET_DEDICATED[1]).await.unwrap_err());
    assert!(err.contains("pending, not waiting for a target IP"), "{err}");
    // The same address cannot go to a second account of the migration.
    let err = format!("{:#}", assign(&rig, 7, TARGET_DEDICATED[0]).await.unwrap_err());
    assert!(err.contains(&format!("already assigned to account {early}")), "{err}");

    rig.approve().await;
    let started = rig.start_migration().await;
    assert!(started.started.is_some(), "{:#?}", started.report);
    let daemon = Daemon::start(rig.engine("it-dedicated", 4));

    // Everyone but the waiting account arrives; the migration is not cut over meanwhile.
    let status =
        rig.wait_for("every account but the waiting one to arrive", WAIT, |s| s.arrived() == 7).await;
    assert_eq!(status.state, "transferring");
    assert_eq!(state_of(&status, &late), "awaiting_target_ip");
    assert_eq!(status.awaiting_target_ip(), 1);
    let on_target = rig.target_whm().list_accounts().await.unwrap();
    assert!(!on_target.items.iter().any(|a| a.user == late), "the waiting account was sent");

    // The early one moved last: enqueued only after every other account was restored.
    let events = rig.events().await;
    let early_enqueued = event_id(&events, early.as_str(), "account_enqueued");
    for n in 0..6 {
        let restored = event_id(&events, rig.user(n).as_str(), "account_restored");
        assert!(restored < early_enqueued, "{} restored after {early} was enqueued", rig.user(n));
    }
    // Assigned by the operator, on its timeline; put on its address on the target.
    let assignment = events.iter().find(|e| e.kind == "target_ip_assigned").unwrap();
    assert_eq!(assignment.account.as_deref(), Some(early.as_str()));
    assert_eq!(assignment.actor, "maija");
    assert!(assignment.detail.contains("127.0.0.141") && assignment.detail.contains("127.0.0.131"));
    assert!(events.iter().any(|e| e.kind == "site_ip_set" && e.account.as_deref() == Some(early.as_str())));

    // The late one is assigned now; the cutover picks it up at once.
    let assigned = assign(&rig, 7, TARGET_DEDICATED[1]).await.unwrap();
    assert!(assigned.transfer_scheduled);
    let status = rig.wait_for("the migration to cut over", WAIT, |s| s.state == "cut_over").await;
    assert_eq!(status.arrived(), 8, "{status:#?}");
    let late_status = status.accounts.iter().find(|a| a.user == late.as_str()).unwrap();
    let dedicated = late_status.dedicated_ip.unwrap();
    assert_eq!((dedicated.source_ip, dedicated.target_ip), (SOURCE_DEDICATED[1], Some(TARGET_DEDICATED[1])));

    // On the target each is on its assigned address and its site answers there.
    let on_target = rig.target_whm().list_accounts().await.unwrap();
    for (n, ip) in [(6, TARGET_DEDICATED[0]), (7, TARGET_DEDICATED[1])] {
        let account = on_target.items.iter().find(|a| a.user == rig.user(n)).unwrap();
        assert_eq!(account.ip, Some(ip), "{}", rig.user(n));
        let url = format!("http://{ip}:{}/", rig.hosts.target.web_addr.port());
        let response =
            reqwest::Client::new().get(&url).header("Host", rig.domain(n).as_str()).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{} on {ip}", rig.domain(n));
    }

    // DNS: the dedicated address's records point at the assigned one, the shared one's at the
    // target's shared address; the other accounts at the target's shared address.
    for (n, ip) in [(6, TARGET_DEDICATED[0]), (7, TARGET_DEDICATED[1])] {
        let zone = rig.zone(&rig.domain(n)).await;
        let apex = rig.domain(n).fqdn();
        assert_eq!(a_record(&zone, &apex), vec![ip.to_string()]);
        assert_eq!(a_record(&zone, &format!("www.{apex}")), vec![ip.to_string()]);
        assert_eq!(a_record(&zone, &format!("ftp.{apex}")), vec![TARGET_IP.to_string()]);
    }
    let zone = rig.zone(&rig.domain(0)).await;
    assert_eq!(a_record(&zone, &rig.domain(0).fqdn()), vec![TARGET_IP.to_string()]);

    // Each customer's completion notice (as sent) names the account's own address only where
    // it has one.
    let outbox = rig.store.outbox(rig.id.as_str()).await.unwrap();
    let completion = |n: usize| {
        let id = format!("<completion.{}.{}@siirto>", rig.user(n), rig.id);
        outbox.iter().find(|o| o.message_id == id).unwrap_or_else(|| panic!("no {id}")).clone()
    };
    for (n, ip) in [(6, TARGET_DEDICATED[0]), (7, TARGET_DEDICATED[1])] {
        let notice = completion(n);
        assert!(notice.body.contains(&format!("(its own IP address {ip})")), "{}", notice.body);
        assert!(notice.html.unwrap_or_default().contains(&format!("<strong>{ip}</strong>")));
    }
    let shared = completion(0);
    assert!(!shared.body.contains("own IP address"), "{}", shared.body);
    // A rollback points the early one back at its dedicated source address.
    let request = siirto::ops::RollbackRequest {
        id: &rig.id,
        user: &early,
        domain: None,
        reason: "the shop needs its old certificate",
    };
    let world = World::from_config(&rig.config).unwrap();
    siirto::ops::rollback(&rig.store, &world, request, "maija", rig.clock.now()).await.unwrap();
    let main = rig.domain(6);
    rig.wait_for("the rollback", WAIT, |s| {
        s.accounts
            .iter()
            .find(|a| a.user == early.as_str())
            .is_some_and(|a| a.domains.iter().any(|d| d.domain == main.as_str() && d.state == "rolled_back"))
    })
    .await;
    let zone = rig.zone(&rig.domain(6)).await;
    let apex = main.fqdn();
    assert_eq!(a_record(&zone, &apex), vec![SOURCE_DEDICATED[0].to_string()]);
    assert_eq!(a_record(&zone, &format!("www.{apex}")), vec![SOURCE_DEDICATED[0].to_string()]);
    assert_eq!(a_record(&zone, &format!("ftp.{apex}")), vec![SOURCE_IP.to_string()]);

    daemon.stop().await;
}
