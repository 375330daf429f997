//! Accounts on a dedicated IP, end to end: simulated source and target hosts with dedicated
//! addresses, a real pdns_server and the real engine. Two accounts are on dedicated IPs at the
//! source; one is assigned its target address before the cutover, the other waits visibly while
//! the rest of the migration finishes. `siirto assign-ip`'s refusals are checked, the accounts
//! move after every other account, `setsiteip` puts them on their assigned addresses, the sites
//! are verified there, their DNS is repointed (dedicated → assigned, shared → shared), and a
//! rollback points it back at the dedicated source address.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use siirto::demo::{DnsEndpoint, SOURCE_IP, SimHosts, TARGET_IP, create_zones, write_config};
use siirto::dns::{DnsProvider, PowerDns, Rrset, RrsetChange, Zone};
use siirto::engine::{Clock, Engine, SystemClock};
use siirto::names::{AccountName, DomainName, MigrationId};
use siirto::playbook::Playbook;
use siirto::sim::{SimHostSpec, SimWorld, generate_accounts, start_host};
use siirto::status::{MigrationStatus, migration_status};
use siirto::store::{EventRow, Store};
use siirto::whm::WhmClient;
use siirto::world::World;

use crate::support::pdns::Pdns;

const DEMO: &str = include_str!("../../playbooks/demo.toml");

/// The source's dedicated addresses: accounts 7 and 8 are on them.
const SOURCE_DEDICATED: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 131), Ipv4Addr::new(127, 0, 0, 132)];
/// The target's dedicated addresses; the third is used by an account already on the target.
const TARGET_DEDICATED: [Ipv4Addr; 3] =
    [Ipv4Addr::new(127, 0, 0, 141), Ipv4Addr::new(127, 0, 0, 142), Ipv4Addr::new(127, 0, 0, 143)];

struct Rig {
    _dir: tempfile::TempDir,
    _pdns: Pdns,
    hosts: SimHosts,
    dns: PowerDns,
    store: Store,
    config: siirto::config::Config,
    id: MigrationId,
    target_whm: WhmClient,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let pdns = Pdns::start().await;
        let world = SimWorld::new();
        let mut accounts = generate_accounts(8, "omaip");
        accounts[6].dedicated_ip = Some(SOURCE_DEDICATED[0]);
        accounts[7].dedicated_ip = Some(SOURCE_DEDICATED[1]);
        let mut source_spec = SimHostSpec::new("old.sim.test", SOURCE_IP, "source-token-0123456789");
        source_spec.accounts = accounts.clone();
        source_spec.dedicated_ips = SOURCE_DEDICATED.to_vec();
        let source = start_host(source_spec, dir.path().join("old.sim.test"), &world).await.unwrap();
        let mut resident = generate_accounts(1, "asukas");
        resident[0].dedicated_ip = Some(TARGET_DEDICATED[2]);
        let mut target_spec = SimHostSpec::new("new.sim.test", TARGET_IP, "target-token-0123456789");
        target_spec.accounts = resident;
        target_spec.dedicated_ips = TARGET_DEDICATED.to_vec();
        let target = start_host(target_spec, dir.path().join("new.sim.test"), &world).await.unwrap();
        let hosts = SimHosts { world, source, target, accounts };

        let endpoint = DnsEndpoint {
            api_url: pdns.api_url.clone(),
            api_key: pdns.api_key.clone(),
            dns_addr: pdns.dns_addr,
        };
        let dns = endpoint.client().unwrap();
        // The zones point where the sites are: the shared address, or the account's own.
        create_zones(&dns, &hosts.accounts[..6], SOURCE_IP).await.unwrap();
        for account in &hosts.accounts[6..] {
            create_zones(&dns, std::slice::from_ref(account), account.dedicated_ip.unwrap()).await.unwrap();
            // One record of a dedicated-IP account at the source's shared address.
            let change = RrsetChange::Replace(Rrset {
                name: format!("ftp.{}", account.domain.fqdn()),
                rtype: "A".into(),
                ttl: 3600,
                records: vec![SOURCE_IP.to_string()],
            });
            dns.apply(&account.domain, &[change]).await.unwrap();
        }
        let database = format!("sqlite://{}", dir.path().join("siirto.db").display());
        let extra = format!(
            "[daemon]\nlease = \"20s\"\nidle_poll = \"100ms\"\n\n[mail]\nfrom = \"Siirto <noreply@siirto.test>\"\nchannel = \"directory\"\npath = \"{}\"\n",
            dir.path().join("outbox").display()
        );
        let config = write_config(&hosts, &endpoint, dir.path(), &database, &extra).unwrap();
        let store = Store::connect(&config.database).await.unwrap();
        let adapters = World::from_config(&config).unwrap();
        Rig {
            _dir: dir,
            _pdns: pdns,
            target_whm: adapters.hosts["new"].whm.clone(),
            hosts,
            dns,
            store,
            config,
            id: MigrationId::parse("dedicated").unwrap(),
        }
    }

    fn user(&self, n: usize) -> AccountName {
        self.hosts.accounts[n].user.clone()
    }

    fn domain(&self, n: usize) -> DomainName {
        self.hosts.accounts[n].domain.clone()
    }

    async fn status(&self) -> MigrationStatus {
        migration_status(&self.store, self.id.as_str()).await.unwrap()
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&MigrationStatus) -> bool) -> MigrationStatus {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; status: {status:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn assign(&self, n: usize, ip: Ipv4Addr) -> anyhow::Result<siirto::ops::Assigned> {
        let now = SystemClock.now();
        let world = World::from_config(&self.config).unwrap();
        siirto::ops::assign_ip(&self.store, &world, &self.id, &self.user(n), ip, "maija", now).await
    }

    async fn zone(&self, n: usize) -> Zone {
        self.dns.zone(&self.domain(n)).await.unwrap()
    }

    async fn events(&self) -> Vec<EventRow> {
        self.store.events(self.id.as_str()).await.unwrap()
    }
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
    let rig = Rig::start().await;
    let (early, late) = (rig.user(6), rig.user(7));

    // Plan: both dedicated-IP accounts wait for a target IP; their domains are planned for
    // a repoint like any other (their sites are at the source, on its dedicated addresses).
    let adapters = World::from_config(&rig.config).unwrap();
    let playbook = Playbook::parse(DEMO, "demo playbook").unwrap();
    let now = SystemClock.now();
    let request = siirto::plan::PlanRequest {
        id: rig.id.clone(),
        source: "old",
        target: "new",
        playbook: &playbook,
        cutover_at: now,
        actor: "test",
    };
    let plan = siirto::plan::plan(&rig.store, &rig.config, &adapters, request, now).await.unwrap();
    assert_eq!(plan.counts.held_for_operator, 2, "{:#?}", plan.flagged);
    assert_eq!(plan.counts.move_and_repoint, plan.counts.domains, "{:#?}", plan.flagged);
    let status = rig.status().await;
    assert_eq!(state_of(&status, &early), "awaiting_target_ip");
    let waiting = status.accounts.iter().find(|a| a.user == late.as_str()).unwrap();
    let reason = waiting.reason.as_deref().unwrap();
    assert!(reason.contains("waiting for a target IP") && reason.contains("127.0.0.132"), "{reason}");

    // Refusals: an address the target does not have, its shared address, an address an
    // account on the target uses, an account that is not waiting for one.
    let err = format!("{:#}", rig.assign(6, Ipv4Addr::new(127, 0, 0, 199)).await.unwrap_err());
    assert!(
        err.contains(early.as_str()) && err.contains("127.0.0.199 is not an address of the target"),
        "{err}"
    );
    let err = format!("{:#}", rig.assign(6, TARGET_IP).await.unwrap_err());
    assert!(err.contains("shared address") && err.contains("not a dedicated one"), "{err}");
    let err = format!("{:#}", rig.assign(6, TARGET_DEDICATED[2]).await.unwrap_err());
    assert!(err.contains("127.0.0.143 is already used by an account on the target"), "{err}");
    let err = format!("{:#}", rig.assign(0, TARGET_DEDICATED[0]).await.unwrap_err());
    assert!(err.contains(rig.user(0).as_str()) && err.contains("not waiting for a target IP"), "{err}");

    // The first is assigned before the start: it still moves after the others.
    let assigned = rig.assign(6, TARGET_DEDICATED[0]).await.unwrap();
    assert_eq!(assigned.state.name(), "pending");
    assert_eq!(assigned.source_ip, SOURCE_DEDICATED[0]);
    assert!(!assigned.transfer_scheduled);
    let err = format!("{:#}", rig.assign(6, TARGET_DEDICATED[1]).await.unwrap_err());
    assert!(err.contains("pending, not waiting for a target IP"), "{err}");
    // The same address cannot go to a second account of the migration.
    let err = format!("{:#}", rig.assign(7, TARGET_DEDICATED[0]).await.unwrap_err());
    assert!(err.contains(&format!("already assigned to account {early}")), "{err}");

    siirto::ops::approve(&rig.store, &rig.id, "test-operator", now).await.unwrap();
    let world = World::from_config(&rig.config).unwrap();
    let started = siirto::ops::start(&rig.store, &rig.config, &world, &rig.id, "test", now).await.unwrap();
    assert!(started.started.is_some(), "{:#?}", started.report);
    let engine = Arc::new(
        Engine::from_config(&rig.config, rig.store.clone(), Arc::new(SystemClock))
            .unwrap()
            .with_owner("it-dedicated")
            .with_workers(4),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(engine.run(async {
        let _ = stopped.await;
    }));

    // Everyone but the waiting account arrives; the migration is not cut over meanwhile.
    let status = rig.wait_for("every account but the waiting one to arrive", |s| s.arrived() == 7).await;
    assert_eq!(status.state, "transferring");
    assert_eq!(state_of(&status, &late), "awaiting_target_ip");
    assert_eq!(status.awaiting_target_ip(), 1);
    let on_target = rig.target_whm.list_accounts().await.unwrap();
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
    let assigned = rig.assign(7, TARGET_DEDICATED[1]).await.unwrap();
    assert!(assigned.transfer_scheduled);
    let status = rig.wait_for("the migration to cut over", |s| s.state == "cut_over").await;
    assert_eq!(status.arrived(), 8, "{status:#?}");
    let late_status = status.accounts.iter().find(|a| a.user == late.as_str()).unwrap();
    let dedicated = late_status.dedicated_ip.unwrap();
    assert_eq!((dedicated.source_ip, dedicated.target_ip), (SOURCE_DEDICATED[1], Some(TARGET_DEDICATED[1])));

    // On the target each is on its assigned address and its site answers there.
    let on_target = rig.target_whm.list_accounts().await.unwrap();
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
        let zone = rig.zone(n).await;
        let apex = rig.domain(n).fqdn();
        assert_eq!(a_record(&zone, &apex), vec![ip.to_string()]);
        assert_eq!(a_record(&zone, &format!("www.{apex}")), vec![ip.to_string()]);
        assert_eq!(a_record(&zone, &format!("ftp.{apex}")), vec![TARGET_IP.to_string()]);
    }
    let zone = rig.zone(0).await;
    assert_eq!(a_record(&zone, &rig.domain(0).fqdn()), vec![TARGET_IP.to_string()]);

    // A rollback points the early one back at its dedicated source address.
    let request = siirto::ops::RollbackRequest {
        id: &rig.id,
        user: &early,
        domain: None,
        reason: "the shop needs its old certificate",
    };
    siirto::ops::rollback(&rig.store, &world, request, "maija", SystemClock.now()).await.unwrap();
    let main = rig.domain(6);
    rig.wait_for("the rollback", |s| {
        s.accounts
            .iter()
            .find(|a| a.user == early.as_str())
            .is_some_and(|a| a.domains.iter().any(|d| d.domain == main.as_str() && d.state == "rolled_back"))
    })
    .await;
    let zone = rig.zone(6).await;
    let apex = main.fqdn();
    assert_eq!(a_record(&zone, &apex), vec![SOURCE_DEDICATED[0].to_string()]);
    assert_eq!(a_record(&zone, &format!("www.{apex}")), vec![SOURCE_DEDICATED[0].to_string()]);
    assert_eq!(a_record(&zone, &format!("ftp.{apex}")), vec![SOURCE_IP.to_string()]);

    let _ = stop.send(());
    daemon.await.unwrap().unwrap();
}
