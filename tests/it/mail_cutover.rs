//! No mail lost, end to end: simulated source and target hosts whose SMTP listeners deliver and
//! relay by MX through a real pdns_server, the real engine, TWO real sshd (one per host, host
//! keys pinned), real rsync run on the "target" pulling from the "source" over ssh, and a real
//! SMTP client (lettre) sending mail before, during and after the cutover.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use siirto::demo::{DnsEndpoint, SimHosts, create_zones, write_config, zone_rrsets};
use siirto::dns::{DnsProvider, PowerDns, Rrset, RrsetChange};
use siirto::domain::MailEvidence;
use siirto::engine::{Engine, SystemClock};
use siirto::names::{AccountName, DomainName, MigrationId};
use siirto::playbook::Playbook;
use siirto::preflight::Severity;
use siirto::secret::Secret;
use siirto::sim::{SimAccount, SimHost, SimHostSpec, SimWorld, generate_accounts, start_host};
use siirto::store::{EventRow, Store};
use siirto::whm::{MailRouting, TlsPolicy, WhmClient};
use siirto::world::World;

use crate::support::pdns::Pdns;
use crate::support::sshd::Sshd;

const SOURCE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 61);
const TARGET_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 62);

/// The demo playbook with the final sync on, the mail log read right after each sync.
fn playbook() -> String {
    let text = include_str!("../../playbooks/demo.toml");
    assert!(text.contains("final_sync = false"), "the demo playbook turns the final sync off");
    text.replace("final_sync = false", "final_sync = true\ncheck_after = \"0s\"\nmax_syncs = 3")
}

struct Rig {
    _dir: tempfile::TempDir,
    _pdns: Pdns,
    /// The third party's nameserver, holding the zone of the first account's domain when the
    /// rig was started with one on external DNS.
    theirs: Option<Pdns>,
    _source_sshd: Sshd,
    _target_sshd: Sshd,
    hosts: SimHosts,
    store: Store,
    engine: Arc<Engine>,
    id: MigrationId,
}

async fn start_sim(
    hostname: &str,
    ip: Ipv4Addr,
    accounts: Vec<SimAccount>,
    resolvers: &[SocketAddr],
    world: &SimWorld,
    dir: &Path,
) -> SimHost {
    let mut spec = SimHostSpec::new(hostname, ip, &format!("token-{hostname}"));
    spec.accounts = accounts;
    spec.dns_resolvers = resolvers.to_vec();
    start_host(spec, dir.join(hostname), world).await.expect("sim host starts")
}

/// A client of the third party's nameserver's API.
fn their_client(pdns: &Pdns) -> PowerDns {
    PowerDns::new(pdns.api_url.clone(), Secret::new(pdns.api_key.clone()), "localhost".into()).unwrap()
}

/// A path as TOML string content.
fn toml_path(path: &Path) -> String {
    path.display().to_string()
}

impl Rig {
    /// Starts pdns_server with the accounts' zones, the two hosts (resolving through it), an
    /// sshd for each host, writes the config with both hosts' ssh settings (the sim data dirs as
    /// home roots and the source's exim log), and plans, approves and starts the migration.
    async fn start(accounts: usize) -> Rig {
        Rig::start_with(accounts, false).await
    }

    /// [`Rig::start`]; with `external`, the first account's domain (it has no other) is on a
    /// third party's nameserver, which the hosts' mail relays and siirto's resolvers also ask.
    async fn start_with(accounts: usize, external: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let pdns = Pdns::start().await;
        let theirs = if external { Some(Pdns::start().await) } else { None };
        let world = SimWorld::new();
        let accounts = generate_accounts(accounts, "posti");
        let resolvers: Vec<SocketAddr> =
            std::iter::once(pdns.dns_addr).chain(theirs.as_ref().map(|t| t.dns_addr)).collect();
        let source =
            start_sim("old.sim.test", SOURCE_IP, accounts.clone(), &resolvers, &world, dir.path()).await;
        let target = start_sim("new.sim.test", TARGET_IP, Vec::new(), &resolvers, &world, dir.path()).await;
        let hosts = SimHosts { world, source, target, accounts };
        let endpoint = DnsEndpoint {
            api_url: pdns.api_url.clone(),
            api_key: pdns.api_key.clone(),
            dns_addr: pdns.dns_addr,
        };
        let ours = if external { &hosts.accounts[1..] } else { &hosts.accounts[..] };
        create_zones(&endpoint.client().unwrap(), ours, SOURCE_IP).await.unwrap();
        if let Some(theirs) = &theirs {
            let account = &hosts.accounts[0];
            assert!(account.addon_domains.is_empty() && account.parked_domains.is_empty());
            assert!(account.sub_domains.is_empty());
            their_client(theirs)
                .create_zone(
                    &account.domain,
                    &["ns1.their-dns.example.".to_owned()],
                    &zone_rrsets(&account.domain, SOURCE_IP, 3600),
                )
                .await
                .unwrap();
        }

        let source_sshd = Sshd::start().await;
        let target_sshd = Sshd::start().await;
        // On the "target" (this machine, as the target sshd's user): the known_hosts file that
        // pins the source's host key for the rsync hop, and the key the source accepts.
        let known_hosts = dir.path().join("pull_known_hosts");
        // Empty at first: pre-flight must find that the hop cannot pin the source (below).
        std::fs::write(&known_hosts, "").unwrap();
        // `resolvers` lands in [dns] (write_config appends `extra` right after it).
        let resolver_list = resolvers.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
        let extra = format!(
            r#"resolvers = [{resolver_list}]
query_timeout = "1s"

[daemon]
lease = "30s"
idle_poll = "100ms"

[mail]
from = "Siirto <noreply@siirto.test>"
channel = "directory"
path = "outbox"

[hosts.old.ssh]
address = "{source_address}"
user = "{source_user}"
key_file = "{source_key}"
host_key = "{source_host_key}"
home_root = "{source_home}"
mail_log = "{source_log}"

[hosts.new.ssh]
address = "{target_address}"
user = "{target_user}"
key_file = "{target_key}"
host_key = "{target_host_key}"
home_root = "{target_home}"
pull_key_file = "{source_key}"
pull_known_hosts = "{known_hosts}"
"#,
            source_address = source_sshd.address,
            source_user = source_sshd.user,
            source_key = toml_path(&source_sshd.client_key),
            source_host_key = source_sshd.host_key_line,
            source_home = toml_path(&hosts.source.data_dir().join("home")),
            source_log = toml_path(&hosts.source.data_dir().join("var/log/exim_mainlog")),
            target_address = target_sshd.address,
            target_user = target_sshd.user,
            target_key = toml_path(&target_sshd.client_key),
            target_host_key = target_sshd.host_key_line,
            target_home = toml_path(&hosts.target.data_dir().join("home")),
            known_hosts = toml_path(&known_hosts),
        );
        let database = format!("sqlite://{}", dir.path().join("siirto.db").display());
        let config = write_config(&hosts, &endpoint, dir.path(), &database, &extra).unwrap();
        let store = Store::connect(&config.database).await.unwrap();
        let id = MigrationId::parse("mail-cutover").unwrap();

        let adapters = World::from_config(&config).unwrap();
        let playbook = Playbook::parse(&playbook(), "mail-cutover playbook").unwrap();
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
        let theirs_count = usize::from(external);
        assert_eq!(plan.counts.move_and_repoint, plan.counts.domains - theirs_count, "{:#?}", plan.flagged);
        siirto::ops::approve(&store, &id, "test-operator", chrono::Utc::now()).await.unwrap();
        // Pre-flight proves the delta sync's hop (the target logging in to the source with its
        // pull key, the source's host key pinned): refused while known_hosts lacks the source,
        // started once it has it.
        let hop = "ssh new -> old";
        let refused =
            siirto::ops::start(&store, &config, &adapters, &id, "test", chrono::Utc::now()).await.unwrap();
        assert!(refused.started.is_none(), "{:#?}", refused.report);
        let failures: Vec<&str> = refused.report.hard_failures().map(|f| f.check.as_str()).collect();
        assert_eq!(failures, [hop], "{:#?}", refused.report);
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {}\n", source_sshd.address.port(), source_sshd.host_key_line),
        )
        .unwrap();
        let started =
            siirto::ops::start(&store, &config, &adapters, &id, "test", chrono::Utc::now()).await.unwrap();
        assert!(started.started.is_some(), "{:#?}", started.report);
        assert!(
            started.report.findings.iter().any(|f| f.check == hop && f.severity == Severity::Ok),
            "{:#?}",
            started.report
        );
        let engine = Arc::new(Engine::from_config(&config, store.clone(), Arc::new(SystemClock)).unwrap());
        Rig {
            _dir: dir,
            _pdns: pdns,
            theirs,
            _source_sshd: source_sshd,
            _target_sshd: target_sshd,
            hosts,
            store,
            engine,
            id,
        }
    }

    async fn states(&self) -> Vec<(String, String)> {
        self.store.accounts(self.id.as_str()).await.unwrap().into_iter().map(|a| (a.user, a.state)).collect()
    }

    /// Runs engine ticks until `done` holds for the account states (checked after every tick),
    /// with a deadline.
    async fn tick_until(&self, what: &str, done: impl Fn(&[(String, String)]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let states = self.states().await;
            if done(&states) {
                return;
            }
            if Instant::now() >= deadline {
                let held: Vec<String> = self
                    .store
                    .accounts(self.id.as_str())
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|a| a.state == "held")
                    .map(|a| format!("{}: {}", a.user, a.data))
                    .collect();
                panic!(
                    "timed out waiting for {what}: {states:?}\nheld: {held:#?}\njobs: {:#?}",
                    self.store.jobs(self.id.as_str()).await.unwrap()
                );
            }
            self.engine.tick().await.unwrap();
            // Nothing may be due yet (a TTL gate); the next tick checks again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn events_of(&self, user: &str, kind: &str) -> Vec<serde_json::Value> {
        let events: Vec<EventRow> = self.store.events(self.id.as_str()).await.unwrap();
        events
            .into_iter()
            .filter(|e| e.account.as_deref() == Some(user) && e.kind == kind)
            .map(|e| serde_json::from_str(&e.detail).unwrap())
            .collect()
    }

    async fn evidence_of(&self, user: &str) -> Vec<MailEvidence> {
        self.events_of(user, "mail_checked")
            .await
            .into_iter()
            .map(|d| serde_json::from_value(d["event"]["evidence"].clone()).unwrap())
            .collect()
    }
}

/// Sends one message with lettre (a real SMTP client) to `to` at `host`'s SMTP listener;
/// the subject is also the unique token looked for in the mailboxes.
async fn send(host: &SimHost, to: &str, token: &str) {
    let message = Message::builder()
        .from("Sender <sender@example.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject(token)
        .body(format!("message {token}\n"))
        .unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.ip.to_string())
        .port(host.smtp_addr.port())
        .build();
    transport
        .send(message)
        .await
        .unwrap_or_else(|err| panic!("sending {token} to {to} at {}: {err}", host.hostname));
}

/// The subjects of every message in the Maildir of `local@domain` of `user` on `host`.
fn subjects(host: &SimHost, user: &AccountName, domain: &DomainName, local: &str) -> Vec<String> {
    host.maildir_messages(user, domain, local)
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            text.lines().find_map(|l| l.strip_prefix("Subject: ").map(str::to_owned))
        })
        .collect()
}

fn all_in(states: &[(String, String)], wanted: &[&str]) -> bool {
    !states.is_empty() && states.iter().all(|(_, state)| wanted.contains(&state.as_str()))
}

/// Sends one message from `host`'s point of view to `info@` of every mailbox; returns the
/// tokens, by mailbox index.
async fn send_all(
    host: &SimHost,
    mailboxes: &[(AccountName, DomainName)],
    phase: &str,
) -> Vec<(usize, String)> {
    let mut sent = Vec::new();
    for (i, (_, domain)) in mailboxes.iter().enumerate() {
        let token = format!("{phase}-{i}-{}", host.hostname);
        send(host, &format!("info@{domain}"), &token).await;
        sent.push((i, token));
    }
    sent
}

const PAST_COPY: [&str; 7] =
    ["restored", "verified", "switched", "notified", "syncing_mail", "checking_mail", "done"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_sent_around_the_cutover_ends_up_in_the_target_mailbox() {
    let rig = Rig::start(3).await;
    let (source, target) = (&rig.hosts.source, &rig.hosts.target);
    // Each account's main domain, and the third account's addon domain too.
    let mut mailboxes: Vec<(AccountName, DomainName)> = Vec::new();
    for account in &rig.hosts.accounts {
        mailboxes.push((account.user.clone(), account.domain.clone()));
        for addon in &account.addon_domains {
            mailboxes.push((account.user.clone(), addon.clone()));
        }
    }
    assert!(mailboxes.len() > rig.hosts.accounts.len(), "an addon domain is covered too");
    let mut sent = Vec::new();

    // Before anything: delivered on the source, copied by the transfer.
    sent.extend(send_all(source, &mailboxes, "before").await);
    // The daemon starts (TTLs lowered); mail still arrives at the source.
    rig.engine.tick().await.unwrap();
    sent.extend(send_all(source, &mailboxes, "lowered").await);
    // The transfer copied the accounts. Where an account's domains are not switched yet, mail
    // delivered at the source now is what only the delta sync can rescue.
    rig.tick_until("the accounts to be copied to the target", |s| all_in(s, &PAST_COPY)).await;
    let not_switched: Vec<usize> =
        (0..mailboxes.len()).filter(|i| source.mail_routing(&mailboxes[*i].1) == "auto").collect();
    assert!(
        !not_switched.is_empty(),
        "some account is copied but not switched yet: {:?}",
        rig.states().await
    );
    sent.extend(send_all(source, &mailboxes, "copied").await);
    for i in &not_switched {
        let (user, domain) = &mailboxes[*i];
        let token = format!("copied-{i}-{}", source.hostname);
        assert!(subjects(source, user, domain, "info").contains(&token), "{token} delivered at the source");
        assert!(!subjects(target, user, domain, "info").contains(&token), "{token} not at the target yet");
    }
    // Mail sent straight to the target lands there.
    sent.extend(send_all(target, &mailboxes, "early").await);
    // Switched: the source relays what still arrives to the target by MX.
    rig.tick_until("the accounts to be switched", |s| {
        all_in(s, &["switched", "notified", "syncing_mail", "checking_mail", "done"])
    })
    .await;
    for (user, domain) in &mailboxes {
        assert_eq!(
            source.mail_routing(domain),
            "remote",
            "{user}: {domain} routed to the target at the repoint"
        );
    }
    sent.extend(send_all(source, &mailboxes, "switched").await);
    sent.extend(send_all(target, &mailboxes, "switched").await);
    // The final delta sync and the mail log check.
    rig.tick_until("every account to be done", |s| all_in(s, &["done"])).await;
    sent.extend(send_all(source, &mailboxes, "done").await);
    sent.extend(send_all(target, &mailboxes, "done").await);

    // Every message is in the target mailbox exactly once, whichever server it was sent to.
    for (i, (user, domain)) in mailboxes.iter().enumerate() {
        let at_target = subjects(target, user, domain, "info");
        for (_, token) in sent.iter().filter(|(j, _)| *j == i) {
            let copies = at_target.iter().filter(|s| *s == token).count();
            assert_eq!(
                copies, 1,
                "{token} for info@{domain}: in the target mailbox {copies} times; there: {at_target:?}"
            );
        }
        let at_source = subjects(source, user, domain, "info");
        assert!(
            at_source.iter().all(|s| !s.starts_with("switched-") && !s.starts_with("done-")),
            "after the switch nothing is delivered at the source: {at_source:?}"
        );
    }
    // The evidence on each account's timeline: the routing switch, one sync, nothing stranded.
    for account in &rig.hosts.accounts {
        let user = account.user.as_str();
        let switched = rig.events_of(user, "mail_routing_switched").await;
        assert_eq!(switched.len(), 1, "{user}: {switched:?}");
        assert_eq!(switched[0]["routing"], "remote");
        let synced = rig.events_of(user, "mail_synced").await;
        assert_eq!(synced.len(), 1, "{user}: one delta sync: {synced:?}");
        let evidence = rig.evidence_of(user).await;
        assert_eq!(evidence.len(), 1, "{user}: {evidence:?}");
        // Zero stranded: nothing delivered at the source since the sync began. (Deliveries
        // "since the switch" count from the second before it, so a message delivered at the
        // source just before the switch, and synced, may be counted there.)
        assert_eq!(evidence[0].delivered_since_last_sync, 0, "{user}: zero messages stranded: {evidence:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_delivery_after_the_sync_triggers_a_second_sync() {
    let rig = Rig::start(1).await;
    let (source, target) = (&rig.hosts.source, &rig.hosts.target);
    let account = rig.hosts.accounts[0].clone();
    let (user, domain) = (account.user.clone(), account.domain.clone());
    // Stop right after the first delta sync, before the mail log is read.
    rig.tick_until("the first delta sync", |s| all_in(s, &["checking_mail"])).await;
    assert_eq!(rig.events_of(user.as_str(), "mail_synced").await.len(), 1);
    // Something sets the source's routing back to local (someone in cPanel's Email Routing, a
    // re-detection) and a message is delivered there after the sync began.
    let whm = WhmClient::new(
        source.whm_url.clone(),
        Secret::new(&source.token),
        TlsPolicy::WebPki,
        Duration::from_secs(10),
    )
    .unwrap();
    whm.set_mail_routing(&user, &domain, MailRouting::Local).await.unwrap();
    send(source, &format!("info@{domain}"), "late-local").await;
    assert!(subjects(source, &user, &domain, "info").contains(&"late-local".to_owned()));
    assert!(!subjects(target, &user, &domain, "info").contains(&"late-local".to_owned()));

    rig.tick_until("the account to be done", |s| all_in(s, &["done"])).await;
    let evidence = rig.evidence_of(user.as_str()).await;
    assert_eq!(evidence.len(), 2, "{evidence:?}");
    assert_eq!(evidence[0].delivered_since_last_sync, 1, "the late delivery is seen: {evidence:?}");
    assert_eq!(evidence[0].delivered_since_switch, 1);
    assert!(evidence[0].last_delivery_at.is_some());
    assert_eq!(evidence[1].delivered_since_last_sync, 0, "nothing since the second sync: {evidence:?}");
    assert_eq!(rig.events_of(user.as_str(), "mail_synced").await.len(), 2, "a second sync ran");
    assert!(
        subjects(target, &user, &domain, "info").contains(&"late-local".to_owned()),
        "the second sync brought the late message to the target"
    );
}

/// A domain on the customer's own DNS: its mail keeps landing on the source after the account
/// moved (its MX names the source until the customer changes it), and nothing is lost. Once
/// public DNS shows the target for its site and mail host, and the old records have expired,
/// the source routes its mail to the target and a delta sync brings what landed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_of_an_external_domain_follows_once_its_customer_repoints() {
    let rig = Rig::start_with(2, true).await;
    let (source, target) = (&rig.hosts.source, &rig.hosts.target);
    let account = rig.hosts.accounts[0].clone();
    let (user, domain) = (account.user.clone(), account.domain.clone());
    let theirs = their_client(rig.theirs.as_ref().expect("the third party's nameserver"));

    rig.tick_until("every account to be done", |s| all_in(s, &["done"])).await;
    // Moved, but the customer's MX still names the source: mail lands there, kept local.
    assert_eq!(source.mail_routing(&domain), "auto", "an external domain keeps local routing");
    send(source, &format!("info@{domain}"), "while-waiting").await;
    assert!(subjects(source, &user, &domain, "info").contains(&"while-waiting".to_owned()));
    assert!(!subjects(target, &user, &domain, "info").contains(&"while-waiting".to_owned()));

    // The customer points the site, www and the mail host at the target.
    let apex = domain.fqdn();
    let changes: Vec<RrsetChange> = [apex.clone(), format!("www.{apex}"), format!("mail.{apex}")]
        .into_iter()
        .map(|name| {
            RrsetChange::Replace(Rrset {
                name,
                rtype: "A".into(),
                ttl: 300,
                records: vec![TARGET_IP.to_string()],
            })
        })
        .collect();
    theirs.apply(&domain, &changes).await.unwrap();

    // Propagated, then (after the demo's 2 s gate) followed up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let followed = loop {
        let followed = rig.events_of(user.as_str(), "external_mail_followed_up").await;
        if !followed.is_empty() {
            break followed;
        }
        assert!(
            Instant::now() < deadline,
            "no mail follow-up; jobs: {:#?}",
            rig.store.jobs(rig.id.as_str()).await.unwrap()
        );
        rig.engine.tick().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(followed.len(), 1, "{followed:?}");
    assert_eq!(followed[0]["routing"], "remote", "{followed:?}");
    let synced = followed[0]["synced"].as_array().cloned().unwrap_or_default();
    assert!(
        synced.iter().any(|d| d.as_str().is_some_and(|d| d.contains(&format!("/{user}/mail")))),
        "the delta sync ran over the account's mail: {followed:?}"
    );
    assert_eq!(source.mail_routing(&domain), "remote");
    assert!(
        subjects(target, &user, &domain, "info").contains(&"while-waiting".to_owned()),
        "the delta sync brought what landed on the source while the customer's MX named it"
    );
    // What still reaches the source (a sender with the old MX cached) is relayed to the target.
    send(source, &format!("info@{domain}"), "after-follow-up").await;
    let at_target = subjects(target, &user, &domain, "info");
    assert_eq!(at_target.iter().filter(|s| *s == "while-waiting").count(), 1, "{at_target:?}");
    assert!(at_target.contains(&"after-follow-up".to_owned()), "{at_target:?}");
    assert!(!subjects(source, &user, &domain, "info").contains(&"after-follow-up".to_owned()));
}
