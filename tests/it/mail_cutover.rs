//! No mail lost, end to end: simulated source and target hosts whose SMTP listeners deliver and
//! relay by MX found through public DNS on loopback (a recursive BIND following a root's
//! delegation to a real pdns_server), the real engine, TWO real sshd (one per host, host
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
    /// public DNS, an sshd for each host, and plans, approves and starts the migration.
    async fn start(accounts: usize) -> Rig {
        Rig::start_with(accounts, false).await
    }

    /// [`Rig::start`]; with `external`, the first account's domain (it has no other) is on a
    /// third party's nameserver, to which public DNS (the hosts' mail relays' resolver and
    /// siirto's) delegates it.
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
        // Pre-flight tries the final sync itself, dry (rsync on the target listing an account's
        // mail on the source over its pull key, the source's host key pinned): refused while
        // known_hosts lacks the source, started once it has it.
        let hop = "mail sync new -> old";
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
    assert_eq!(
        followed[0]["copied"][format!("{domain}/info")],
        1,
        "the delta sync copied the one message that landed on the source meanwhile: {followed:?}"
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

/// Every message file of the mailbox `local@domain` of `user` on `host`, in every folder: its
/// folder (`""` for the inbox, `.Archive`, …) and subject.
fn mailbox(host: &SimHost, user: &AccountName, domain: &DomainName, local: &str) -> Vec<(String, String)> {
    let root = host.account_dir(user).join("mail").join(domain.as_str()).join(local);
    let mut found = Vec::new();
    let mut folders = vec![(String::new(), root.clone())];
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && entry.path().is_dir() {
            folders.push((name, entry.path()));
        }
    }
    for (folder, dir) in folders {
        for sub in ["cur", "new"] {
            let Ok(files) = std::fs::read_dir(dir.join(sub)) else { continue };
            for file in files.flatten() {
                let text = std::fs::read_to_string(file.path()).unwrap();
                if let Some(subject) = text.lines().find_map(|l| l.strip_prefix("Subject: ")) {
                    found.push((folder.clone(), subject.to_owned()));
                }
            }
        }
    }
    found
}

/// A customer's IMAP client on the new server, as Dovecot would leave the Maildir: every new
/// message read (`new/X` → `cur/X:2,S`), the message `to_archive` moved to `.Archive`, the
/// message `to_delete` deleted.
fn mail_client(host: &SimHost, user: &AccountName, domain: &DomainName, to_archive: &str, to_delete: &str) {
    let inbox = host.account_dir(user).join("mail").join(domain.as_str()).join("info");
    let archive = inbox.join(".Archive");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(archive.join(sub)).unwrap();
    }
    for file in std::fs::read_dir(inbox.join("new")).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        std::fs::rename(file.path(), inbox.join("cur").join(format!("{name}:2,S"))).unwrap();
    }
    let (mut archived, mut deleted) = (false, false);
    for file in std::fs::read_dir(inbox.join("cur")).unwrap().flatten() {
        let text = std::fs::read_to_string(file.path()).unwrap();
        if text.contains(&format!("Subject: {to_archive}")) {
            std::fs::rename(file.path(), archive.join("cur").join(file.file_name())).unwrap();
            archived = true;
        } else if text.contains(&format!("Subject: {to_delete}")) {
            std::fs::remove_file(file.path()).unwrap();
            deleted = true;
        }
    }
    assert!(archived && deleted, "the client found both messages on the new server");
}

/// Mail read, moved and deleted on the new server between the copy and the final sync, with
/// mail sent to both servers before, during and after: every message in the new server's
/// mailbox exactly once (in whichever folder the customer put it), none stranded on the old
/// one, the deleted one stays deleted, the moved one stays moved; the timeline and the status
/// say what the sync copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mail_client_working_on_the_new_server_keeps_its_changes_and_gets_no_copies() {
    let rig = Rig::start(1).await;
    let (source, target) = (&rig.sim.hosts.source, &rig.sim.hosts.target);
    let account = rig.sim.hosts.accounts[0].clone();
    let (user, domain) = (account.user.clone(), account.domain.clone());
    let to = format!("info@{domain}");
    for token in ["before-1", "before-2", "before-3", "before-4"] {
        send(source, &to, token).await;
    }
    // Copied to the new server, not repointed yet: mail still lands on the old one.
    rig.tick_until("the account to be copied", |s| all_in(s, &["restored", "verified"])).await;
    assert_eq!(source.mail_routing(&domain), "auto", "{:?}", rig.states().await);
    for token in ["copied-1", "copied-2"] {
        send(source, &to, token).await;
    }
    // The customer's mail client on the new server (their MX already points there for some
    // resolvers): reads everything, archives one message, deletes another; new mail arrives.
    mail_client(target, &user, &domain, "before-2", "before-3");
    send(target, &to, "target-1").await;

    rig.tick_until("the account to be done", |s| all_in(s, &["done"])).await;
    send(source, &to, "after-1").await;
    send(target, &to, "after-2").await;

    let at_target = mailbox(target, &user, &domain, "info");
    let count = |token: &str| at_target.iter().filter(|(_, s)| s == token).count();
    for token in
        ["before-1", "before-2", "before-4", "copied-1", "copied-2", "target-1", "after-1", "after-2"]
    {
        assert_eq!(count(token), 1, "{token} on the new server: {at_target:?}");
    }
    assert_eq!(count("before-3"), 0, "the deleted message stays deleted: {at_target:?}");
    assert!(
        at_target.contains(&(".Archive".to_owned(), "before-2".to_owned())),
        "the moved message stays moved: {at_target:?}"
    );
    // Nothing stranded: what the old server holds, the new one has (but what was deleted there).
    for (_, token) in mailbox(source, &user, &domain, "info") {
        assert!(token == "before-3" || count(&token) == 1, "{token} stranded on the old server");
    }
    // The timeline: one sync, the two messages delivered on the old server after the copy.
    let synced = rig.events_of(user.as_str(), "mail_synced").await;
    assert_eq!(synced.len(), 1, "{synced:?}");
    let mailbox_name = format!("{domain}/info");
    assert_eq!(synced[0]["event"]["copied"][&mailbox_name], 2, "{synced:?}");
    // The status shows the account's mail evidence.
    let status = rig.sim.status().await;
    let mail = crate::support::rig::account(&status, user.as_str()).mail.clone().expect("mail evidence");
    assert!(mail.switched_at.is_some(), "{mail:?}");
    assert_eq!(mail.syncs.len(), 1, "{mail:?}");
    assert_eq!(mail.syncs[0].copied.get(&mailbox_name), Some(&2), "{mail:?}");
    let check = mail.last_check.expect("the mail log was checked");
    assert_eq!(check.evidence.delivered_since_last_sync, 0, "{check:?}");
    let json = serde_json::to_value(&status).unwrap();
    assert!(json["accounts"][0]["mail"]["syncs"][0]["copied"][&mailbox_name] == 2, "{json}");
}

/// A pull key restricted so it cannot read the account's mail (a read-only `rrsync` rooted
/// elsewhere, as a careful administrator might set it) fails the pre-flight with rsync's own
/// error, before any account moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restricted_pull_key_fails_the_pre_flight_with_its_error() {
    let mut options = RigOptions::new("restricted-pull", 1);
    options.source.ip = SOURCE_IP;
    options.target.ip = TARGET_IP;
    options.public_dns = true;
    options.ssh = true;
    let rig = SimRig::start(options).await;
    let empty = rig.dir.path().join("rrsync-root");
    std::fs::create_dir_all(&empty).unwrap();
    let ssh = rig.ssh.as_ref().expect("the hosts' sshd");
    ssh.restrict_pull_key(&format!("command=\"/usr/bin/rrsync -ro {}\",restrict", empty.display()));
    rig.plan(&playbook()).await;
    rig.approve().await;
    let refused = rig.start_migration().await;
    assert!(refused.started.is_none(), "{:#?}", refused.report);
    let failures: Vec<_> = refused.report.hard_failures().collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0].check, "mail sync new -> old");
    assert!(
        failures[0].detail.contains("rsync --list-only") && failures[0].detail.contains("exit"),
        "the command and its error: {}",
        failures[0].detail
    );
}

/// A pull key restricted after the pre-flight passed: the sync fails with the same refusal for
/// every account, so the account is held at once with rsync's error, not retried as if the
/// network had hiccupped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_the_hop_refuses_holds_the_account_at_once_with_the_error() {
    let rig = Rig::start(1).await;
    rig.tick_until("the account to be switched", |s| all_in(s, &["switched", "notified", "syncing_mail"]))
        .await;
    let empty = rig.sim.dir.path().join("rrsync-root");
    std::fs::create_dir_all(&empty).unwrap();
    let ssh = rig.sim.ssh.as_ref().expect("the hosts' sshd");
    ssh.restrict_pull_key(&format!("command=\"/usr/bin/rrsync -ro {}\",restrict", empty.display()));
    // Mail for the sync to copy.
    let account = rig.sim.hosts.accounts[0].clone();
    rig.sim.source_whm().set_mail_routing(&account.user, &account.domain, MailRouting::Local).await.unwrap();
    send(&rig.sim.hosts.source, &format!("info@{}", account.domain), "to-sync").await;

    rig.tick_until("the account to be held", |s| all_in(s, &["held"])).await;
    let status = rig.sim.status().await;
    let held = crate::support::rig::account(&status, account.user.as_str());
    let reason = held.reason.clone().unwrap_or_default();
    assert!(reason.contains("sync_mail failed after 1 attempt(s)") && reason.contains("rsync"), "{reason}");
    let retried = rig.events_of(account.user.as_str(), "step_failed").await;
    assert!(retried.is_empty(), "not retried as if transient: {retried:?}");
}
