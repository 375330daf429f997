//! External DNS end to end: two real pdns_server instances, "ours" (the company's nameserver,
//! holding the zones of most accounts) and "theirs" (a third party's, holding one account's
//! zone under nameservers that are not ours), a root server delegating each zone to one of
//! them, and two real recursive resolvers (BIND) that keep answers 1 s and 5 s: the config's
//! resolvers, which see the delegation as the world does, so the plan classifies that
//! account's domain as external. The account moves; its domain waits for the
//! customer with its records on "theirs" untouched; the completion notice lists the exact records
//! to change; a reminder follows; then the test changes the records on "theirs" (as the customer
//! would) and the domain is seen propagated.

use std::time::{Duration, Instant};

use siirto::demo::{SOURCE_IP, TARGET_IP};
use siirto::dns::{DnsProvider, Rrset, RrsetChange};
use siirto::domain::MigrationState;
use siirto::plan::DomainAction;
use siirto::playbook::Playbook;
use siirto::status::MigrationStatus;

use crate::support::public_dns::SLOW_CACHE_SECS;
use crate::support::rig::{Daemon, Elsewhere, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

fn domain_state<'s>(status: &'s MigrationStatus, domain: &str) -> &'s siirto::status::DomainStatus {
    status
        .accounts
        .iter()
        .flat_map(|a| &a.domains)
        .find(|d| d.domain == domain)
        .unwrap_or_else(|| panic!("{domain} not in the status: {status:#?}"))
}

/// Starts a rig whose account 0 is on the third party's DNS (`options` say so), plans under the
/// demo playbook polling every 200 ms (that domain is the customer's to repoint), approves,
/// starts, runs a daemon named `owner`, and waits until the domain awaits its customer.
async fn awaiting_customer(options: RigOptions, owner: &str) -> (SimRig, Daemon, MigrationStatus) {
    let rig = SimRig::start(options).await;
    let domain = rig.hosts.accounts[0].domain.clone();
    let text = include_str!("../../playbooks/demo.toml")
        .replace("external_poll_interval = \"2s\"", "external_poll_interval = \"200ms\"");
    let plan = rig.plan(&text).await;
    let planned =
        plan.accounts.iter().flat_map(|a| &a.domains).find(|d| d.domain == domain.as_str()).unwrap();
    assert_eq!(planned.action, DomainAction::MoveCustomerMustRepoint, "{planned:#?}");
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine(owner, 4));
    let status = rig
        .wait_for("the external domain to await its customer", Duration::from_secs(180), |s| {
            domain_state(s, domain.as_str()).state == "awaiting_customer"
        })
        .await;
    (rig, daemon, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_domain_waits_for_its_customer_and_is_seen_propagated() {
    let smtp = SmtpServer::start();
    // Account 1 (kukka-0001.test, no addon, parked or sub domains) is at the third party's DNS,
    // which public DNS (siirto's resolvers) asks besides ours.
    let mut options = RigOptions::new("it-external", 4);
    options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
    options.public_dns = true;
    options.mail = Mail::Smtp(smtp.addr);
    let rig = SimRig::start(options).await;
    let external = rig.hosts.accounts[0].clone();
    assert!(external.addon_domains.is_empty() && external.parked_domains.is_empty());
    assert!(external.sub_domains.is_empty());
    let domain = external.domain.clone();
    let their_dns = rig.their_dns();
    let id = rig.id.clone();

    // The demo's playbook, polling public DNS often and reminding every 2 s.
    let text = include_str!("../../playbooks/demo.toml")
        .replace("external_poll_interval = \"2s\"", "external_poll_interval = \"200ms\"")
        .replace("external_reminder_every = \"1m\"", "external_reminder_every = \"2s\"");
    let playbook = Playbook::parse(&text, "external.toml").unwrap();
    assert_eq!(playbook.dns.external_reminder_every, Duration::from_secs(2));

    // Plan: the external domain must be repointed by its customer; the rest by us.
    let plan = rig.plan(&text).await;
    let planned = plan
        .accounts
        .iter()
        .flat_map(|a| &a.domains)
        .find(|d| d.domain == domain.as_str())
        .expect("the external domain is planned");
    assert_eq!(planned.action, DomainAction::MoveCustomerMustRepoint, "{planned:#?}");
    assert_eq!(plan.counts.move_and_repoint, plan.counts.domains - 1, "{:#?}", plan.flagged);
    let status = rig.status().await;
    assert_eq!(domain_state(&status, domain.as_str()).state, "external");

    rig.approve().await;
    let started = rig.start_migration().await;
    assert!(started.started.is_some(), "{:#?}", started.report);
    let daemon = Daemon::start(rig.engine("ext", 8));

    // Every account arrives — the switch does not wait for the customer — and the external
    // domain awaits its customer.
    let status = rig
        .wait_for("the cutover", Duration::from_secs(180), |s| {
            matches!(s.detail, MigrationState::CutOver { .. })
        })
        .await;
    assert_eq!(status.arrived(), 4, "{status:#?}");
    let awaiting = domain_state(&status, domain.as_str()).clone();
    assert_eq!(awaiting.state, "awaiting_customer", "{status:#?}");
    assert!(awaiting.since.is_some());
    let apex = domain.fqdn();
    let www = format!("www.{apex}");
    // Its MX host lies inside the domain and points at the source: the customer's record too.
    let mail = format!("mail.{apex}");
    let changes: Vec<(String, String, String, String)> = awaiting
        .records_to_change
        .iter()
        .map(|r| (r.name.clone(), r.rtype.clone(), r.old_value.clone(), r.new_value.clone()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (apex.clone(), "A".into(), SOURCE_IP.to_string(), TARGET_IP.to_string()),
            (www.clone(), "A".into(), SOURCE_IP.to_string(), TARGET_IP.to_string()),
            (mail.clone(), "A".into(), SOURCE_IP.to_string(), TARGET_IP.to_string()),
        ]
    );
    let json = serde_json::to_value(&status).unwrap();
    let shown = json["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["domains"].as_array().unwrap())
        .find(|d| d["domain"] == domain.as_str())
        .unwrap()
        .clone();
    assert!(shown["since"].is_string() && shown["reminded"].is_number(), "{shown}");

    // Their records are untouched: still the source, with their own TTL.
    let zone = their_dns.zone(&domain).await.unwrap();
    assert_eq!(zone.rrsets.iter().filter(|r| r.rtype == "A").count(), 3);
    for rrset in zone.rrsets.iter().filter(|r| r.rtype == "A") {
        assert_eq!(rrset.records, vec![SOURCE_IP.to_string()], "{rrset:?}");
        assert_eq!(rrset.ttl, 3600, "{rrset:?}");
    }
    // Our zones moved.
    let our_zone = rig.zone(&rig.domain(1)).await;
    let our_a = our_zone.rrset(&rig.domain(1).fqdn(), "A").unwrap();
    assert_eq!(our_a.records, vec![TARGET_IP.to_string()]);

    // The completion notice tells the customer exactly what to change.
    let completion_id = format!("<completion.{}.{id}@siirto>", external.user);
    let deadline = Instant::now() + Duration::from_secs(30);
    let completion = loop {
        if let Some(found) = smtp.delivered().into_iter().find(|d| d.message_id == completion_id) {
            break found;
        }
        assert!(Instant::now() < deadline, "no completion notice for {}", external.user);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let body = completion.body.clone().unwrap_or_default();
    for name in [&apex, &www, &mail] {
        let line = format!("{name} A: change {SOURCE_IP} to {TARGET_IP}");
        assert!(body.contains(&line), "{line:?} missing from:\n{body}");
    }
    // The others' notices have no such block.
    let other = smtp
        .wait_for_message(
            &format!("<completion.{}.{id}@siirto>", rig.hosts.accounts[1].user),
            Duration::from_secs(30),
        )
        .await;
    assert!(!other.body.unwrap_or_default().contains("another DNS host"));

    // A reminder is sent while the records still point at the source.
    let reminder_id = format!("<reminder.1.{domain}.{id}@siirto>");
    let deadline = Instant::now() + Duration::from_secs(30);
    let reminder = loop {
        if let Some(found) = smtp.delivered().into_iter().find(|d| d.message_id == reminder_id) {
            break found;
        }
        assert!(Instant::now() < deadline, "no reminder; delivered: {:#?}", smtp.delivered());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(reminder.rcpt_tos.contains(&external.email), "{reminder:?}");
    assert!(
        reminder.body.unwrap_or_default().contains(&format!("{apex} A: change {SOURCE_IP} to {TARGET_IP}"))
    );
    let status = rig.status().await;
    assert_eq!(domain_state(&status, domain.as_str()).state, "awaiting_customer");
    assert!(domain_state(&status, domain.as_str()).reminded >= Some(1));

    // The customer changes the apex only: still not propagated (www answers the source).
    let repoint = |name: &str| {
        RrsetChange::Replace(Rrset {
            name: name.to_owned(),
            rtype: "A".into(),
            ttl: 300,
            records: vec![TARGET_IP.to_string()],
        })
    };
    their_dns.apply(&domain, &[repoint(&apex)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = rig.status().await;
    assert_eq!(domain_state(&status, domain.as_str()).state, "awaiting_customer", "www still at the source");

    // Then www: the mail host still answers the source, so still not propagated.
    their_dns.apply(&domain, &[repoint(&www)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = rig.status().await;
    assert_eq!(domain_state(&status, domain.as_str()).state, "awaiting_customer", "mail still at the source");
    assert_eq!(rig.hosts.source.mail_routing(&domain), "auto", "its mail still lands on the source");

    // Then the mail host: public DNS shows the target everywhere, and the domain is propagated.
    their_dns.apply(&domain, &[repoint(&mail)]).await.unwrap();
    let status = rig
        .wait_for("propagation", Duration::from_secs(30), |s| {
            domain_state(s, domain.as_str()).state == "propagated"
        })
        .await;
    let propagated = domain_state(&status, domain.as_str());
    assert!(propagated.propagated_at.is_some());
    let reminders_then = propagated.reminded.unwrap();

    // No reminder comes after propagation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = rig.status().await;
    assert_eq!(domain_state(&status, domain.as_str()).reminded, Some(reminders_then));
    let reminders = smtp.delivered().iter().filter(|d| d.message_id.starts_with("<reminder.")).count();
    assert_eq!(reminders as u32, reminders_then, "one mail per counted reminder");
    // The mail follow-up is due once the old records have expired (the demo's 2 s gate).
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = rig.events().await;
        if events.iter().any(|e| e.kind == "external_mail_followed_up") {
            break events;
        }
        assert!(Instant::now() < deadline, "no mail follow-up: {events:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let story: Vec<&str> = events
        .iter()
        .filter(|e| e.domain.as_deref() == Some(domain.as_str()))
        .map(|e| e.kind.as_str())
        .filter(|k| *k != "domain_reminded")
        .collect();
    assert_eq!(story, ["domain_awaiting_customer", "domain_propagated", "external_mail_followed_up"]);
    // Once the old records have expired (the demo's 2 s gate), the source routes the domain's
    // mail to the target, which its MX now names.
    assert_eq!(rig.hosts.source.mail_routing(&domain), "remote");
    let followed = events.iter().find(|e| e.kind == "external_mail_followed_up").unwrap();
    let detail: serde_json::Value = serde_json::from_str(&followed.detail).unwrap();
    assert_eq!(detail["routing"], "remote", "{detail}");
    assert_eq!(detail["changed"], serde_json::json!([domain.as_str()]), "{detail}");
    assert!(detail["synced"].is_null(), "the demo playbook has no final sync: {detail}");

    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_not_repointed_is_listed_from_the_plan_on_and_named_in_its_notice() {
    let smtp = SmtpServer::start();
    // Account 1's only domain has its zone on no nameserver we run: moved, never repointed.
    let mut options = RigOptions::new("it-not-repointed", 3);
    options.zones_elsewhere.insert(0, Elsewhere::Nowhere);
    options.mail = Mail::Smtp(smtp.addr);
    let rig = SimRig::start(options).await;
    let lost = rig.hosts.accounts[0].clone();
    assert!(lost.addon_domains.is_empty() && lost.parked_domains.is_empty() && lost.sub_domains.is_empty());
    let domain = lost.domain.clone();
    let id = rig.id.clone();
    let text = include_str!("../../playbooks/demo.toml");
    let plan = rig.plan(text).await;
    let planned =
        plan.accounts.iter().flat_map(|a| &a.domains).find(|d| d.domain == domain.as_str()).unwrap();
    assert_eq!(planned.action, DomainAction::MoveNotRepointed, "{planned:#?}");

    // From the plan on, status names it, with why and what its customer must do.
    let status = rig.status().await;
    let shown = domain_state(&status, domain.as_str());
    assert_eq!(shown.state, "not_repointed");
    let why = shown.not_repointed.as_ref().expect("the reason is shown");
    assert!(why.reason.contains("DNS lookup failed"), "{why:?}");
    assert!(why.customer_action.as_deref().unwrap_or("").contains("A records"), "{why:?}");
    assert_eq!(status.domains_by_state.get("not_repointed"), Some(&1), "{:?}", status.domains_by_state);

    rig.approve().await;
    let started = rig.start_migration().await;
    assert!(started.started.is_some(), "{:#?}", started.report);
    let daemon = Daemon::start(rig.engine("nr", 8));
    rig.wait_for("the cutover", Duration::from_secs(180), |s| {
        matches!(s.detail, MigrationState::CutOver { .. })
    })
    .await;

    // Its notice lists the domain and says where to point it; nobody else's notice says so.
    let completion = async |user: &str| {
        let wanted = format!("<completion.{user}.{id}@siirto>");
        let found = smtp.wait_for_message(&wanted, Duration::from_secs(30)).await;
        found.body.clone().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let body = completion(lost.user.as_str()).await;
    let told = format!("point their A records (the domain and its www name) at {TARGET_IP}: - {domain}");
    assert!(body.contains(&told), "{told:?} missing from:\n{body}");
    assert!(body.contains(&format!("- {domain}")), "{body}");
    let other = completion(rig.hosts.accounts[1].user.as_str()).await;
    assert!(!other.contains("Our nameservers do not keep"), "{other}");
    // And its state never moved: siirto wrote nothing for it.
    let status = rig.status().await;
    assert_eq!(domain_state(&status, domain.as_str()).state, "not_repointed");
    daemon.stop().await;
}

/// A resolver on loopback that answers nothing until `forward_to` names a nameserver; then it
/// passes each query there and the answer back (UDP).
struct SilentResolver {
    addr: std::net::SocketAddr,
    forward_to: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentResolver {
    async fn start() -> SilentResolver {
        let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let forward_to = std::sync::Arc::new(std::sync::Mutex::new(None::<std::net::SocketAddr>));
        let target = std::sync::Arc::clone(&forward_to);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
                let Some(upstream) = *target.lock().unwrap() else { continue };
                let query = buf[..n].to_vec();
                let socket = std::sync::Arc::clone(&socket);
                tokio::spawn(async move {
                    let relay = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    relay.send_to(&query, upstream).await.unwrap();
                    let mut answer = vec![0u8; 4096];
                    if let Ok(Ok((m, _))) =
                        tokio::time::timeout(Duration::from_secs(2), relay.recv_from(&mut answer)).await
                    {
                        let _ = socket.send_to(&answer[..m], from).await;
                    }
                });
            }
        });
        SilentResolver { addr, forward_to, task }
    }
}

impl Drop for SilentResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_resolver_holds_propagation_and_status_names_it() {
    let silent = SilentResolver::start().await;
    let mut options = RigOptions::new("it-silent", 2);
    options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
    options.public_dns = true;
    // Asked last: classification takes the first resolver that answers; propagation asks all.
    options.extra_resolvers = vec![silent.addr];
    let (rig, daemon, status) = awaiting_customer(options, "silent").await;
    let domain = rig.hosts.accounts[0].domain.clone();
    let their_dns = rig.their_dns();

    // The customer changes every record; two resolvers show the target, the third says nothing.
    let changes: Vec<RrsetChange> = domain_state(&status, domain.as_str())
        .records_to_change
        .iter()
        .map(|r| {
            RrsetChange::Replace(Rrset {
                name: r.name.clone(),
                rtype: "A".into(),
                ttl: 300,
                records: vec![TARGET_IP.to_string()],
            })
        })
        .collect();
    their_dns.apply(&domain, &changes).await.unwrap();
    let shown = silent.addr.to_string();
    let status = rig
        .wait_for("status to name the silent resolver", Duration::from_secs(30), |s| {
            domain_state(s, domain.as_str()).silent_resolvers == vec![shown.clone()]
        })
        .await;
    assert_eq!(domain_state(&status, domain.as_str()).state, "awaiting_customer");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(domain_state(&rig.status().await, domain.as_str()).state, "awaiting_customer", "held");

    // It answers again (what public DNS says, through the slow resolver): propagated, and the
    // timeline tells both.
    *silent.forward_to.lock().unwrap() = Some(rig.resolvers().slow.dns_addr);
    rig.wait_for("propagation", Duration::from_secs(30), |s| {
        domain_state(s, domain.as_str()).state == "propagated"
    })
    .await;
    daemon.stop().await;
    let events = rig.events().await;
    let said: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "domain_resolvers_silent" && e.domain.as_deref() == Some(domain.as_str()))
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said[0].contains(&shown) && said[1].contains("\"resolvers\":[]"), "{said:?}");
}

/// `www` at a CDN while the apex is at the old server: looked up, not assumed to follow the
/// apex, so it is neither in the customer's list nor waited for; `ftp` and `webmail` at the old
/// server are looked up too, listed with their new value, and waited for; and so is the SPF
/// record naming the old server (`ip4:`), with its exact new text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn www_at_a_cdn_is_neither_listed_nor_waited_for() {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new("it-cdn", 2);
    options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
    options.public_dns = true;
    options.mail = Mail::Smtp(smtp.addr);
    let rig = SimRig::start(options).await;
    let external = rig.hosts.accounts[0].clone();
    let domain = external.domain.clone();
    let (apex, www, mail) =
        (domain.fqdn(), format!("www.{}", domain.fqdn()), format!("mail.{}", domain.fqdn()));
    let their_dns = rig.their_dns();
    let cdn = "203.0.113.80";
    let a = |name: &str, value: &str| {
        RrsetChange::Replace(Rrset {
            name: name.to_owned(),
            rtype: "A".into(),
            ttl: 300,
            records: vec![value.into()],
        })
    };
    let (ftp, webmail) = (format!("ftp.{apex}"), format!("webmail.{apex}"));
    let old = SOURCE_IP.to_string();
    let spf = |ip: &str| format!("\"v=spf1 ip4:{ip} include:_spf.example.com -all\"");
    let txt = |value: String| {
        RrsetChange::Replace(Rrset {
            name: apex.clone(),
            rtype: "TXT".into(),
            ttl: 300,
            records: vec![value],
        })
    };
    their_dns
        .apply(&domain, &[a(&www, cdn), a(&ftp, &old), a(&webmail, &old), txt(spf(&old))])
        .await
        .unwrap();
    let text = include_str!("../../playbooks/demo.toml")
        .replace("external_poll_interval = \"2s\"", "external_poll_interval = \"200ms\"");
    rig.plan(&text).await;
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine("cdn", 4));
    let status = rig
        .wait_for("the external domain to await its customer", Duration::from_secs(180), |s| {
            domain_state(s, domain.as_str()).state == "awaiting_customer"
        })
        .await;
    let names: Vec<String> =
        domain_state(&status, domain.as_str()).records_to_change.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        names,
        vec![apex.clone(), ftp.clone(), mail.clone(), webmail.clone(), apex.clone()],
        "www at the CDN is not the customer's to change; ftp, webmail and the SPF record are"
    );
    let spf_change = domain_state(&status, domain.as_str())
        .records_to_change
        .iter()
        .find(|r| r.rtype == "TXT")
        .cloned()
        .expect("the SPF record is listed");
    assert_eq!(
        (spf_change.old_value.clone(), spf_change.new_value.clone()),
        (spf(&old), spf(&TARGET_IP.to_string()))
    );
    let id = rig.id.clone();
    let completion = smtp
        .wait_for_message(&format!("<completion.{}.{id}@siirto>", external.user), Duration::from_secs(30))
        .await;
    let body = completion.body.unwrap_or_default();
    assert!(body.contains(&format!("{apex} A: change {SOURCE_IP} to {TARGET_IP}")), "{body}");
    assert!(!body.contains(&www), "www is not in the notice:\n{body}");
    assert!(body.contains(&format!("{ftp} A: change {SOURCE_IP} to {TARGET_IP}")), "{body}");
    let spf_line = format!("{apex} TXT: change {} to {}", spf(&old), spf(&TARGET_IP.to_string()));
    assert!(body.contains(&spf_line), "{spf_line:?} not in:\n{body}");

    // The customer changes all but webmail: still waiting, for webmail.
    let new = TARGET_IP.to_string();
    their_dns.apply(&domain, &[a(&apex, &new), a(&mail, &new), a(&ftp, &new)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(domain_state(&rig.status().await, domain.as_str()).state, "awaiting_customer", "webmail");
    // Then webmail: the SPF record still names the old server.
    their_dns.apply(&domain, &[a(&webmail, &new)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(domain_state(&rig.status().await, domain.as_str()).state, "awaiting_customer", "SPF");
    // Then the SPF record; www stays at the CDN.
    their_dns.apply(&domain, &[txt(spf(&new))]).await.unwrap();
    rig.wait_for("propagation", Duration::from_secs(30), |s| {
        domain_state(s, domain.as_str()).state == "propagated"
    })
    .await;
    let zone = their_dns.zone(&domain).await.unwrap();
    assert_eq!(zone.rrset(&www, "A").unwrap().records, vec![cdn.to_string()]);
    daemon.stop().await;
}

/// Two public resolvers keep answers for different times (1 s and 5 s): after the customer
/// changes the records, the fast one shows the target while the slow one still serves the old
/// answer from its cache. The domain stays awaiting its customer for as long as the slow one
/// answers the source, and is propagated only after it shows the target everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_waits_for_the_slowest_resolver() {
    let mut options = RigOptions::new("it-slowest", 2);
    options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
    options.public_dns = true;
    let (rig, daemon, status) = awaiting_customer(options, "slowest").await;
    let domain = rig.hosts.accounts[0].domain.clone();
    let their_dns = rig.their_dns();
    let names: Vec<String> =
        domain_state(&status, domain.as_str()).records_to_change.iter().map(|r| r.name.clone()).collect();
    let apex = domain.fqdn();
    assert!(names.contains(&apex) && names.len() == 3, "{names:?}");
    let resolvers = rig.resolvers();
    let (fast, slow) = (&resolvers.fast, &resolvers.slow);
    let (source, target) = (vec![SOURCE_IP], vec![TARGET_IP]);

    // The customer changes every record just after the slow resolver fetched the apex again
    // (its answer's TTL, in whole seconds, is still its whole cache time): it answers the
    // source for more than SLOW_CACHE_SECS - 1 seconds after the change, while the fast one
    // shows the target within a second.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (addresses, ttl) = slow.ask_a(&apex).await.expect("the slow resolver answers");
        assert_eq!(addresses, source, "before the change");
        if ttl >= SLOW_CACHE_SECS {
            break;
        }
        assert!(Instant::now() < deadline, "the slow resolver never fetched {apex} again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let changes: Vec<RrsetChange> = names
        .iter()
        .map(|name| {
            RrsetChange::Replace(Rrset {
                name: name.clone(),
                rtype: "A".into(),
                ttl: 300,
                records: vec![TARGET_IP.to_string()],
            })
        })
        .collect();
    their_dns.apply(&domain, &changes).await.unwrap();
    let changed = Instant::now();

    // Watch both resolvers until the slow one shows the target for every name. The status is
    // read before the resolvers are asked: a slow resolver still answering the source after it
    // means the daemon cannot have seen it answer the target before.
    let deadline = Instant::now() + Duration::from_secs(30);
    // When the fast resolver was first and last seen answering the target for the apex while
    // the slow one answered the source.
    let mut window: Option<(Instant, Instant)> = None;
    let mut fast_at = None;
    let mut last_stale = chrono::Utc::now();
    loop {
        let state = domain_state(&rig.status().await, domain.as_str()).state.clone();
        let fast_apex = fast.ask_a(&apex).await.map(|(a, _)| a);
        if fast_apex.as_ref() == Some(&target) && fast_at.is_none() {
            fast_at = Some(changed.elapsed());
        }
        let mut slow_done = true;
        for name in &names {
            let asked = chrono::Utc::now();
            let answer = slow.ask_a(name).await.map(|(a, _)| a);
            if answer.as_ref() != Some(&target) {
                assert_eq!(answer.as_ref(), Some(&source), "the slow resolver on {name}");
                slow_done = false;
                last_stale = asked;
                if name == &apex && fast_apex.as_ref() == Some(&target) {
                    assert_eq!(
                        state, "awaiting_customer",
                        "propagated while the slow resolver still answers {apex} with the source"
                    );
                    let now = Instant::now();
                    window = Some((window.map_or(now, |(first, _)| first), now));
                }
            }
        }
        if slow_done {
            break;
        }
        assert!(Instant::now() < deadline, "the slow resolver never showed the target\n{}", resolvers.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow_at = changed.elapsed();
    let fast_at = fast_at.expect("the fast resolver showed the target");
    eprintln!("fast resolver showed the target after {fast_at:?}, the slow one after {slow_at:?}");
    let window = window.map_or(Duration::ZERO, |(first, last)| last - first);
    assert!(
        window >= Duration::from_secs(1),
        "the fast resolver answered the target while the slow one answered the source for only \
         {window:?} (fast after {fast_at:?}, slow after {slow_at:?})"
    );

    let status = rig
        .wait_for("propagation", Duration::from_secs(30), |s| {
            domain_state(s, domain.as_str()).state == "propagated"
        })
        .await;
    let at = domain_state(&status, domain.as_str()).propagated_at.clone().expect("propagated_at");
    let at = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
    // The store keeps milliseconds.
    let slack = chrono::Duration::milliseconds(5);
    assert!(
        at + slack >= last_stale,
        "propagated at {at}, but the slow resolver answered the source at {last_stale}"
    );
    daemon.stop().await;
}

/// A test that panics with public DNS running leaves it to the next: the lock is released and
/// nothing listens on the addresses any more (the next rig's servers start there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_public_dns_to_the_next() {
    let public_rig = || {
        let mut options = RigOptions::new("it-panicking", 1);
        options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
        options.public_dns = true;
        SimRig::start(options)
    };
    let panicked = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let rig = public_rig().await;
            assert!(rig.resolvers().fast.ask_a(&rig.domain(0).fqdn()).await.is_some());
            panic!("a failing public DNS test");
        })
    })
    .join();
    assert!(panicked.is_err(), "the thread panicked");
    let rig =
        tokio::time::timeout(Duration::from_secs(60), public_rig()).await.expect("the lock was released");
    let answer = rig.resolvers().slow.ask_a(&rig.domain(0).fqdn()).await;
    assert_eq!(answer.map(|(a, _)| a), Some(vec![SOURCE_IP]), "{}", rig.resolvers().logs());
}
