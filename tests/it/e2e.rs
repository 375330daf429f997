//! End to end: the real daemon in-process moves simulated cPanel accounts, with a real
//! pdns_server as the company's nameserver and a real SMTP server receiving the notices, on
//! SQLite and on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use siirto::demo::{SOURCE_IP, TARGET_IP};
use siirto::domain::MigrationState;
use siirto::names::{AccountName, MigrationId};
use siirto::playbook::Playbook;
use siirto::sim::Fault;
use siirto::status::MigrationStatus;
use siirto::world::World;

use crate::support::pg::PgDatabase;
use crate::support::rig::{Daemon, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

/// The playbook the tests run: the demo's (TTL wait shortened to 2 s, short retries).
const PLAYBOOK: &str = include_str!("../../playbooks/demo.toml");
const GATE_WAIT_MS: i64 = 2_000;

/// How the daemon reads zones from pdns.
#[derive(Clone, Copy, PartialEq)]
enum Reads {
    /// `GET zones/{zone}` through the API.
    Api,
    /// AXFR from pdns's DNS port (`dns.axfr_server`).
    Axfr,
}

/// A rig with `accounts` accounts whose notices go to `smtp`, its store at `database` (None: a
/// SQLite file in the rig's dir), the daemon reading zones as `reads` says.
async fn start_rig(accounts: usize, database: Option<&str>, reads: Reads, smtp: &SmtpServer) -> SimRig {
    let options = RigOptions {
        database: database.map(str::to_owned),
        mail: Mail::Smtp(smtp.addr),
        axfr_reads: reads == Reads::Axfr,
        ..RigOptions::new("it-migration", accounts)
    };
    SimRig::start(options).await
}

/// Plans under `playbook` (every account planned, none rejected, every domain to move and be
/// repointed), approves and starts.
async fn plan_and_start(rig: &SimRig, playbook: &str) {
    let plan = rig.plan_and_start(playbook).await;
    assert_eq!(plan.counts.accounts, rig.hosts.accounts.len());
    assert!(plan.rejected.is_empty(), "{:?}", plan.rejected);
}

async fn wait_cut_over(rig: &SimRig) -> MigrationStatus {
    rig.wait_for("the migration to cut over", Duration::from_secs(240), |s| {
        matches!(s.detail, MigrationState::CutOver { .. })
    })
    .await
}

fn user(n: usize) -> AccountName {
    AccountName::parse(&format!("kukka{n:04}")).unwrap()
}

/// The whole path, with one account that fails to restore every time: it is retried, then held,
/// and the rest of the migration goes on.
async fn migrate(database: Option<&str>, reads: Reads) {
    let smtp = SmtpServer::start();
    let rig = start_rig(22, database, reads, &smtp).await;
    let transfers_before = rig.pdns.statistic("tcp-queries").await.unwrap();
    let failing = user(7);
    assert!(rig.hosts.source.set_fail_restore(&failing, Some("Restore failed: disk quota exceeded".into())));
    plan_and_start(&rig, PLAYBOOK).await;
    let daemon = Daemon::start(rig.engine("it-daemon", 8));
    let status = wait_cut_over(&rig).await;
    daemon.stop().await;
    // What the status page and `siirto watch` read from counts is what the full status says,
    // the held account and its reason included.
    let progress = siirto::status::progress(&rig.store, rig.id.as_str()).await.unwrap();
    let full = siirto::status::migration_status(&rig.store, rig.id.as_str()).await.unwrap();
    assert_eq!(progress, siirto::status::Progress::of(&full));
    assert_eq!(progress.held.iter().map(|h| h.user.as_str()).collect::<Vec<_>>(), [failing.as_str()]);
    // The checker asks over UDP; what pdns got over TCP were the daemon's transfers, at least
    // one to lower and one to repoint each zone when it reads by AXFR, none otherwise.
    let tcp_queries = rig.pdns.statistic("tcp-queries").await.unwrap() - transfers_before;
    let zones = rig.hosts.accounts.iter().map(|a| 1 + a.addon_domains.len()).sum::<usize>() as u64;
    match reads {
        Reads::Axfr => assert!(tcp_queries >= 2 * zones, "{tcp_queries} TCP queries for {zones} zones"),
        Reads::Api => assert_eq!(tcp_queries, 0, "no zone is read by AXFR unless configured"),
    }

    // Every account but the failing one arrived; that one is held with the target's reason.
    assert_eq!(status.arrived(), 21, "{status:#?}");
    assert_eq!(status.held(), 1, "{status:#?}");
    let held = status.accounts.iter().find(|a| a.user == failing.as_str()).unwrap();
    assert_eq!(held.state, "held");
    assert!(held.reason.as_deref().unwrap_or("").contains("disk quota exceeded"), "{held:?}");

    // The zones: moved accounts point at the target with the short TTL; the held one still at
    // the source, TTL lowered; MX records untouched.
    let playbook = Playbook::parse(PLAYBOOK, "demo").unwrap();
    let short_ttl = playbook.dns.short_ttl;
    for account in &rig.hosts.accounts {
        let expected_ip = if account.user == failing { SOURCE_IP } else { TARGET_IP };
        for domain in std::iter::once(&account.domain).chain(&account.addon_domains) {
            let zone = rig.zone(domain).await;
            let rrset = |name: String, rtype: &str| {
                zone.rrsets
                    .iter()
                    .find(|r| r.name == name && r.rtype == rtype)
                    .cloned()
                    .unwrap_or_else(|| panic!("{name} {rtype} missing"))
            };
            for name in [domain.fqdn(), format!("www.{}", domain.fqdn())] {
                let a = rrset(name.clone(), "A");
                assert_eq!(a.records, vec![expected_ip.to_string()], "{name}");
                assert_eq!(a.ttl, short_ttl, "{name}");
            }
            let mx = rrset(domain.fqdn(), "MX");
            assert_eq!(mx.ttl, siirto::demo::ZONE_TTL, "MX of {domain} must not change");
        }
    }

    // The files arrived on the target (and the failing account's did not).
    for account in &rig.hosts.accounts {
        let index = rig.hosts.target.account_dir(&account.user).join("public_html/index.html");
        if account.user == failing {
            assert!(!index.exists(), "{}", index.display());
        } else {
            let page = std::fs::read_to_string(&index).unwrap_or_else(|e| panic!("{}: {e}", index.display()));
            assert!(page.contains(account.user.as_str()), "{page}");
        }
    }

    // One completion notice per arrived account, to its contact address, with its stable
    // Message-ID; a start notice per customer (each account its own), the failing one's too.
    let all = smtp.wait_for(21 + 22, Duration::from_secs(30)).await;
    assert_eq!(all.len(), 43);
    let ids: BTreeSet<&str> = all.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids.len(), 43, "a notice was sent twice");
    assert_eq!(ids.iter().filter(|id| id.starts_with("<start.")).count(), 22);
    let delivered: Vec<_> = all.iter().filter(|d| d.message_id.starts_with("<completion.")).collect();
    assert_eq!(delivered.len(), 21);
    for account in rig.hosts.accounts.iter().filter(|a| a.user != failing) {
        let notice = delivered
            .iter()
            .find(|d| d.rcpt_tos.iter().any(|r| r == &account.email))
            .unwrap_or_else(|| panic!("no notice for {}", account.user));
        assert_eq!(notice.message_id, format!("<completion.{}.{}@siirto>", account.user, rig.id));
        let body = notice.body.as_deref().unwrap_or("");
        assert!(body.contains(account.domain.as_str()));
        // The hosts by the names customers know, never the config's table names.
        let words = body.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words
                .contains("uses old.sim.test as its incoming or outgoing server, change it to new.sim.test."),
            "{body}"
        );
    }
    let failing_email = &rig.hosts.accounts.iter().find(|a| a.user == failing).unwrap().email;
    assert!(
        !delivered.iter().any(|d| d.rcpt_tos.contains(failing_email)),
        "the held account got a completion notice"
    );

    // The event log tells each account's story in order, once; and no repoint came before the gate.
    let events = rig.events().await;
    let arrived = user(3);
    let story: Vec<&str> = events
        .iter()
        .filter(|e| e.account.as_deref() == Some(arrived.as_str()) && e.domain.is_none())
        .map(|e| e.kind.as_str())
        .filter(|k| *k != "step_failed")
        .collect();
    assert_eq!(
        story,
        [
            "account_enqueued",
            "account_copied",
            "account_restored",
            "account_verified",
            // Its mail routing on the source set to remote, in the repoint's transaction.
            "mail_routing_switched",
            "account_switched",
            "notice_queued",
            "notice_sent"
        ],
    );
    let mut lowered_at = BTreeMap::new();
    for event in &events {
        let Some(domain) = &event.domain else { continue };
        match event.kind.as_str() {
            "domain_ttl_lowered" => {
                lowered_at.insert(domain.clone(), event.at);
            }
            "domain_repointed" => {
                let lowered = lowered_at
                    .get(domain)
                    .unwrap_or_else(|| panic!("{domain} repointed before it was lowered"));
                assert!(
                    event.at >= lowered + GATE_WAIT_MS,
                    "{domain} repointed {} ms after lowering",
                    event.at - lowered
                );
            }
            _ => {}
        }
    }
    let failures = events
        .iter()
        .filter(|e| e.account.as_deref() == Some(failing.as_str()) && e.kind == "account_transfer_failed")
        .count();
    assert_eq!(
        failures as u32, playbook.transfer.max_attempts,
        "the failing account is tried max_attempts times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_end_to_end_on_sqlite() {
    migrate(None, Reads::Api).await;
}

/// The same, with the daemon reading zones by AXFR from pdns's DNS port (`dns.axfr_server`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_end_to_end_reading_zones_by_axfr() {
    migrate(None, Reads::Axfr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_end_to_end_on_postgres() {
    let pg = PgDatabase::create().await;
    migrate(Some(pg.url()), Reads::Api).await;
}

/// Two daemons on one PostgreSQL database split the work and never perform a step twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_split_the_work_on_postgres() {
    let pg = PgDatabase::create().await;
    let smtp = SmtpServer::start();
    let rig = start_rig(20, Some(pg.url()), Reads::Api, &smtp).await;
    plan_and_start(&rig, PLAYBOOK).await;
    let (a, b) = (Daemon::start(rig.engine("daemon-a", 2)), Daemon::start(rig.engine("daemon-b", 2)));
    let status = wait_cut_over(&rig).await;
    tokio::join!(a.stop(), b.stop());
    assert_eq!(status.arrived(), 20, "{status:#?}");

    let events = rig.events().await;
    let actors: BTreeSet<&str> = events.iter().map(|e| e.actor.as_str()).collect();
    assert!(actors.contains("daemon-a") && actors.contains("daemon-b"), "both daemons worked: {actors:?}");
    // Every step of every account and domain was recorded exactly once.
    let mut seen: BTreeMap<(Option<String>, Option<String>, String), usize> = BTreeMap::new();
    for event in events.iter().filter(|e| e.kind != "step_failed") {
        *seen.entry((event.account.clone(), event.domain.clone(), event.kind.clone())).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "steps recorded more than once: {twice:?}");
    // A start and a completion notice per account (each its own customer), each exactly once.
    let delivered = smtp.wait_for(40, Duration::from_secs(30)).await;
    assert_eq!(delivered.len(), 40, "every notice exactly once");
    let ids: BTreeSet<&str> = delivered.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids.len(), 40);
}

/// With the SMTP server down the notices wait (retried), and go out once it is back: nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_wait_for_a_down_smtp_server() {
    let mut smtp = SmtpServer::start();
    let rig = start_rig(3, None, Reads::Api, &smtp).await;
    // Enough retries that the notices outlast the outage however slow the machine is: the
    // test is about waiting, not about the retry budget.
    let retry = "max_attempts = 6\nbase_delay = \"250ms\"\nmax_delay = \"4s\"";
    assert!(PLAYBOOK.contains(retry), "the demo playbook's [retry] table changed");
    let playbook =
        PLAYBOOK.replace(retry, "max_attempts = 100\nbase_delay = \"100ms\"\nmax_delay = \"300ms\"");
    smtp.stop();
    plan_and_start(&rig, &playbook).await;
    let daemon = Daemon::start(rig.engine("it-daemon", 4));
    let status = rig
        .wait_for("a notice to fail", Duration::from_secs(120), |s| {
            s.failing_jobs.iter().any(|j| j.kind == "send_notice")
        })
        .await;
    let failing = status.failing_jobs.iter().find(|j| j.kind == "send_notice").unwrap();
    assert!(
        failing.last_error.to_lowercase().contains("connect") || failing.last_error.contains("refused"),
        "{failing:?}"
    );
    smtp.restart();
    let status = wait_cut_over(&rig).await;
    daemon.stop().await;
    assert_eq!(status.arrived(), 3, "{status:#?}");
    // A start and a completion notice per account: each once, and each customer's in the
    // order they were written (start before completion), though both waited out the outage.
    smtp.wait_for(6, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = smtp.delivered();
    let ids: Vec<&str> = delivered.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    for account in &rig.hosts.accounts {
        let at = |kind: &str| {
            let id = format!("<{kind}.{}.{}@siirto>", account.user, rig.id);
            let found: Vec<usize> =
                ids.iter().enumerate().filter(|(_, m)| **m == id).map(|(n, _)| n).collect();
            assert_eq!(found.len(), 1, "{id} once: {ids:?}");
            found[0]
        };
        assert!(at("start") < at("completion"), "{}: start before completion: {ids:?}", account.user);
    }
}

/// Notices through the webhook channel: every completion notice reaches a real HTTP endpoint
/// that verifies its signature, keyed by its id; the endpoint's 503s are retried, and each
/// notice is accepted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_through_a_signed_webhook_arrive_once_each() {
    use axum::http::StatusCode;

    use crate::support::webhook::WebhookReceiver;

    let receiver = WebhookReceiver::start("rig webhook secret").await;
    let options = RigOptions {
        mail: Mail::Webhook { url: receiver.url(), secret: "rig webhook secret\n".into() },
        ..RigOptions::new("it-webhook", 3)
    };
    let rig = SimRig::start(options).await;
    receiver.fail_next(&[StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY]);
    plan_and_start(&rig, PLAYBOOK).await;
    let daemon = Daemon::start(rig.engine("it-daemon", 4));
    let status = wait_cut_over(&rig).await;
    assert_eq!(status.arrived(), 3, "{status:#?}");
    // A start and a completion notice per account.
    let accepted = receiver.wait_for(6, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.stop().await;
    let accepted_again = receiver.accepted();
    assert_eq!(accepted_again.len(), 6, "each notice accepted once: {accepted_again:#?}");
    let mut keys: Vec<String> = accepted.iter().map(|r| r.idempotency_key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 6, "{keys:?}");
    for account in &rig.hosts.accounts {
        let id = format!("<completion.{}.{}@siirto>", account.user, rig.id);
        let received = accepted.iter().find(|r| r.idempotency_key == id).unwrap_or_else(|| panic!("{id}"));
        assert_eq!(received.json["id"], id.as_str());
        assert_eq!(received.json["to"], serde_json::json!([account.email]));
        assert!(received.json["body"].as_str().unwrap().contains(account.domain.as_str()));
    }
    // The two failed attempts were retried: eight requests, none with a bad signature.
    assert_eq!(receiver.attempts().len(), 8, "{:?}", receiver.attempts());
    assert_eq!(receiver.refused_signatures(), 0);
}

/// `[mail] max_per_second` holds for the channel as a whole: two daemons on one store send
/// their notices no faster than the limit together, as the SMTP server's clock sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_keep_the_channels_rate_limit_together() {
    let smtp = SmtpServer::start();
    let options = RigOptions {
        mail: Mail::Smtp(smtp.addr),
        extra_config: "max_per_second = 2\n".to_owned(),
        ..RigOptions::new("it-rate", 6)
    };
    let rig = SimRig::start(options).await;
    assert_eq!(rig.config.mail.max_per_second, Some(2));
    plan_and_start(&rig, PLAYBOOK).await;
    let first = Daemon::start(rig.engine("rate-a", 4));
    let second = Daemon::start(rig.engine("rate-b", 4));
    // A start and a completion notice per account.
    let delivered = smtp.wait_for(12, Duration::from_secs(120)).await;
    first.stop().await;
    second.stop().await;
    let actors: BTreeSet<String> = rig.events().await.into_iter().map(|e| e.actor).collect();
    assert!(actors.contains("rate-a") && actors.contains("rate-b"), "both daemons worked: {actors:?}");
    let mut times: Vec<f64> = delivered.iter().map(|d| d.received_at).collect();
    times.sort_by(f64::total_cmp);
    // Twelve messages at two a second span at least eleven halves of a second (less one
    // interval for the network's jitter), and no second holds more than two (plus one). The six
    // start notices are due at once: without the limit they arrive within milliseconds.
    let span = times[times.len() - 1] - times[0];
    assert!(span >= 11.0 * 0.5 - 0.5, "12 notices in {span:.3} s: {times:?}");
    for (i, start) in times.iter().enumerate() {
        let in_a_second = times[i..].iter().take_while(|t| **t < start + 1.0).count();
        assert!(in_a_second <= 3, "{in_a_second} notices within a second from {start}: {times:?}");
    }
}

/// A zone the DNS provider refuses to serve holds only its account; the rest arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_zone_holds_only_its_account() {
    let smtp = SmtpServer::start();
    let rig = start_rig(4, None, Reads::Api, &smtp).await;
    plan_and_start(&rig, PLAYBOOK).await;
    // After planning, the zone of one account disappears from the nameserver.
    let gone = &rig.hosts.accounts[1];
    let client = reqwest::Client::new();
    let url =
        rig.pdns.api_url.join(&format!("api/v1/servers/localhost/zones/{}", gone.domain.fqdn())).unwrap();
    let response = client.delete(url).header("X-API-Key", &rig.pdns.api_key).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let daemon = Daemon::start(rig.engine("it-daemon", 4));
    let status = wait_cut_over(&rig).await;
    daemon.stop().await;
    assert_eq!(status.arrived(), 3, "{status:#?}");
    let held = status.accounts.iter().find(|a| a.user == gone.user.as_str()).unwrap();
    assert_eq!(held.state, "held");
    let reason = held.reason.clone().unwrap_or_default();
    assert!(reason.contains(gone.domain.as_str()) && reason.contains("could not be read"), "{reason}");
}

/// WHM answers that are errors or garbage give a clear error naming the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planning_reports_whm_errors_clearly() {
    let smtp = SmtpServer::start();
    let rig = start_rig(2, None, Reads::Api, &smtp).await;
    let adapters = World::from_config(&rig.config).unwrap();
    let playbook = Playbook::parse(PLAYBOOK, "demo").unwrap();
    let plan = |id: &str| {
        let request = siirto::plan::PlanRequest {
            id: MigrationId::parse(id).unwrap(),
            source: "old",
            target: "new",
            playbook: &playbook,
            cutover_at: chrono::Utc::now(),
            actor: "test",
        };
        siirto::plan::plan(&rig.store, &rig.config, &adapters, request, chrono::Utc::now())
    };
    rig.hosts.source.inject(Fault::ResultZero {
        function: "listaccts".into(),
        reason: "Access denied".into(),
        times: 1,
    });
    let err = format!("{:#}", plan("p1").await.unwrap_err());
    assert!(err.contains("listaccts") && err.contains("Access denied"), "{err}");
    rig.hosts.source.inject(Fault::NotJson { function: "get_domain_info".into(), times: 1 });
    let err = format!("{:#}", plan("p2").await.unwrap_err());
    assert!(err.contains("get_domain_info") && err.to_lowercase().contains("json"), "{err}");
    // Nothing was recorded by the failed plans; a clean one succeeds.
    assert!(rig.store.migrations().await.unwrap().is_empty());
    plan("p3").await.unwrap();
}

/// A StartSession step that dies between two enqueues (here: the connection drops on the
/// second account's item) is run again; the target then refuses the items it already holds
/// ("already queued"), and that must not stop the session: each repeat is on the timeline as
/// `transfer_item_already_queued` (not a refusal) and every account arrives through that one
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_session_rerun_after_partial_enqueue_keeps_its_session() {
    let smtp = SmtpServer::start();
    let rig = start_rig(3, None, Reads::Api, &smtp).await;
    plan_and_start(&rig, PLAYBOOK).await;
    // The first session sends the accounts' packages first (all but `default`), then the
    // accounts: let those packages and the first account through, drop the next item.
    let packages: std::collections::BTreeSet<&str> =
        rig.hosts.accounts.iter().map(|a| a.plan.as_str()).filter(|p| *p != "default").collect();
    rig.hosts.target.inject_after(
        Fault::Drop { function: "enqueue_transfer_item".into(), times: 1 },
        packages.len() as u32 + 1,
    );
    let daemon = Daemon::start(rig.engine("it-daemon", 4));
    let status = wait_cut_over(&rig).await;
    daemon.stop().await;
    assert_eq!(status.arrived(), 3, "{status:#?}");
    let sessions = account_sessions(&rig.hosts.target);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let events = rig.events().await;
    // A harmless repeat, recorded as what it is: no refusal on the timeline.
    assert!(!events.iter().any(|e| e.kind == "transfer_item_refused"), "{events:#?}");
    let refused: Vec<_> = events.iter().filter(|e| e.kind == "transfer_item_already_queued").collect();
    // The first account (a package sent again is not refused: the target takes it as before).
    assert!(refused.iter().all(|e| e.detail.contains("already queued")), "{refused:#?}");
    let accounts: Vec<_> = refused.iter().filter_map(|e| e.account.as_deref()).collect();
    assert_eq!(accounts, [rig.hosts.accounts[0].user.as_str()], "{refused:#?}");
    let enqueued = events.iter().filter(|e| e.kind == "account_enqueued").count();
    assert_eq!(enqueued, 3, "each account went into the one session once");
}

/// The target's transfer sessions that carried accounts: the pre-flight's probe session (created
/// and aborted by `siirto start` to prove the target can log in to the source) carries none.
fn account_sessions(target: &siirto::sim::SimHost) -> Vec<siirto::sim::SimTransferSession> {
    target.transfer_sessions().into_iter().filter(|s| !s.accounts.is_empty()).collect()
}
