//! No mail lost, end to end: simulated source and target hosts whose SMTP listeners deliver and
//! relay by MX through a real pdns_server, the real engine, TWO real sshd (one per host, host
//! keys pinned), real rsync run on the "target" pulling from the "source" over ssh, and a real
//! SMTP client (lettre) sending mail before, during and after the cutover.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use siirto::dns::{DnsProvider, Rrset, RrsetChange};
use siirto::domain::MailEvidence;
use siirto::engine::Engine;
use siirto::names::{AccountName, DomainName};
use siirto::preflight::Severity;
use siirto::sim::{SimHost, generate_accounts};
use siirto::store::EventRow;
use siirto::whm::MailRouting;

use crate::support::rig::{Elsewhere, RigOptions, SimRig};

const SOURCE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 61);
const TARGET_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 62);

/// The demo playbook with the final sync on, the mail log read right after each sync.
fn playbook() -> String {
    let text = include_str!("../../playbooks/demo.toml");
    assert!(text.contains("final_sync = false"), "the demo playbook turns the final sync off");
    text.replace("final_sync = false", "final_sync = true\ncheck_after = \"0s\"\nmax_syncs = 3")
}

/// The one rig with public DNS (the hosts' mail relays resolve MX through it), an sshd per
/// host and a started migration, and the engine the test ticks.
struct Rig {
    sim: SimRig,
    engine: Arc<Engine>,
}

impl Rig {
    /// Starts the rig with `accounts` accounts on the source, both hosts resolving through
    /// pdns, an sshd for each host, and plans, approves and starts the migration.
    async fn start(accounts: usize) -> Rig {
        Rig::start_with(accounts, false).await
    }

    /// [`Rig::start`]; with `external`, the first account's domain (it has no other) is on a
    /// third party's nameserver, which the hosts' mail relays and siirto's resolvers also ask.
    async fn start_with(accounts: usize, external: bool) -> Rig {
        let mut options = RigOptions::new("mail-cutover", 0);
        options.source.ip = SOURCE_IP;
        options.target.ip = TARGET_IP;
        options.source.accounts = generate_accounts(accounts, "posti");
        if external {
            options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
        }
        options.public_dns = true;
        options.ssh = true;
        options.daemon = Some("lease = \"30s\"\nidle_poll = \"100ms\"\n".to_owned());
        let rig = SimRig::start(options).await;
        if external {
            let account = &rig.hosts.accounts[0];
            assert!(account.addon_domains.is_empty() && account.parked_domains.is_empty());
            assert!(account.sub_domains.is_empty());
        }
        let ssh = rig.ssh.as_ref().expect("the hosts' sshd");
        // Empty at first: pre-flight must find that the hop cannot pin the source (below).
        std::fs::write(&ssh.pull_known_hosts, "").unwrap();

        let plan = rig.plan(&playbook()).await;
        let theirs_count = usize::from(external);
        assert_eq!(plan.counts.move_and_repoint, plan.counts.domains - theirs_count, "{:#?}", plan.flagged);
        rig.approve().await;
        // Pre-flight proves the delta sync's hop (the target logging in to the source with its
        // pull key, the source's host key pinned): refused while known_hosts lacks the source,
        // started once it has it.
        let hop = "ssh new -> old";
        let refused = rig.start_migration().await;
        assert!(refused.started.is_none(), "{:#?}", refused.report);
        let failures: Vec<&str> = refused.report.hard_failures().map(|f| f.check.as_str()).collect();
        assert_eq!(failures, [hop], "{:#?}", refused.report);
        ssh.pin_source_host_key();
        let started = rig.start_migration().await;
        assert!(started.started.is_some(), "{:#?}", started.report);
        assert!(
            started.report.findings.iter().any(|f| f.check == hop && f.severity == Severity::Ok),
            "{:#?}",
            started.report
        );
        let engine = rig.engine("mail-cutover", 8);
        Rig { sim: rig, engine }
    }

    async fn states(&self) -> Vec<(String, String)> {
        self.sim
            .store
            .accounts(self.sim.id.as_str())
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.user, a.state))
            .collect()
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
                    .sim
                    .store
                    .accounts(self.sim.id.as_str())
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|a| a.state == "held")
                    .map(|a| format!("{}: {}", a.user, a.data))
                    .collect();
                panic!(
                    "timed out waiting for {what}: {states:?}\nheld: {held:#?}\njobs: {:#?}",
                    self.sim.store.jobs(self.sim.id.as_str()).await.unwrap()
                );
            }
            self.engine.tick().await.unwrap();
            // Nothing may be due yet (a TTL gate); the next tick checks again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn events_of(&self, user: &str, kind: &str) -> Vec<serde_json::Value> {
        let events: Vec<EventRow> = self.sim.store.events(self.sim.id.as_str()).await.unwrap();
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
    let (source, target) = (&rig.sim.hosts.source, &rig.sim.hosts.target);
    // Each account's main domain, and the third account's addon domain too.
    let mut mailboxes: Vec<(AccountName, DomainName)> = Vec::new();
    for account in &rig.sim.hosts.accounts {
        mailboxes.push((account.user.clone(), account.domain.clone()));
        for addon in &account.addon_domains {
            mailboxes.push((account.user.clone(), addon.clone()));
        }
    }
    assert!(mailboxes.len() > rig.sim.hosts.accounts.len(), "an addon domain is covered too");
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
    for account in &rig.sim.hosts.accounts {
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
    let (source, target) = (&rig.sim.hosts.source, &rig.sim.hosts.target);
    let account = rig.sim.hosts.accounts[0].clone();
    let (user, domain) = (account.user.clone(), account.domain.clone());
    // Stop right after the first delta sync, before the mail log is read.
    rig.tick_until("the first delta sync", |s| all_in(s, &["checking_mail"])).await;
    assert_eq!(rig.events_of(user.as_str(), "mail_synced").await.len(), 1);
    // Something sets the source's routing back to local (someone in cPanel's Email Routing, a
    // re-detection) and a message is delivered there after the sync began.
    rig.sim.source_whm().set_mail_routing(&user, &domain, MailRouting::Local).await.unwrap();
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
    let (source, target) = (&rig.sim.hosts.source, &rig.sim.hosts.target);
    let account = rig.sim.hosts.accounts[0].clone();
    let (user, domain) = (account.user.clone(), account.domain.clone());
    let theirs = rig.sim.their_dns();

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
            rig.sim.store.jobs(rig.sim.id.as_str()).await.unwrap()
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
