//! Retiring the old server in stages, against the simulated hosts, real pdns_server instances
//! (ours, and "theirs" standing in for a customer's external DNS), a root and two real
//! recursive resolvers (BIND) as public DNS, a real SMTP server, and a clock the test jumps by
//! months: the stages are recorded at the cutover and run at their dates, in order, once; an
//! account whose domain public DNS still sends to the old server is held with the evidence and
//! its customer reminded, then suspended once the test repoints it; removal follows; the manual
//! stages wait for people, destroying the disks for two different ones; undoing a suspension
//! gives the accounts back; and the event log's hash chain finds a tampered row.

use std::time::{Duration, Instant};

use siirto::demo::{SOURCE_IP, TARGET_IP};
use siirto::dns::{DnsProvider, Rrset, RrsetChange};
use siirto::domain::MigrationState;
use siirto::engine::Clock;
use siirto::store::StageRow;

use crate::support::daemon::DaemonProcess;
use crate::support::rig::{Daemon, Elsewhere, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The demo's playbook, polling public DNS (and re-checking held accounts) every 300 ms, the
/// traffic gate looking back 2 s.
fn playbook() -> String {
    include_str!("../../playbooks/demo.toml")
        .replace("external_poll_interval = \"2s\"", "external_poll_interval = \"300ms\"")
        .replace("no_traffic_for = \"7d\"", "no_traffic_for = \"2s\"")
}

/// A visitor who still reaches the old server for `domain` (a hosts file, a stale cache).
async fn visit_old_server(rig: &SimRig, domain: &str) {
    let url = format!("http://{}/", rig.hosts.source.web_addr);
    let response = reqwest::Client::new().get(url).header("Host", domain).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

async fn stages(rig: &SimRig) -> Vec<StageRow> {
    rig.store.stages(rig.id.as_str()).await.unwrap()
}

/// Waits until stage `place` is in one of `states`.
pub(crate) async fn wait_stage(rig: &SimRig, place: i64, states: &[&str], timeout: Duration) -> StageRow {
    let deadline = Instant::now() + timeout;
    loop {
        let all = stages(rig).await;
        if let Some(stage) = all.iter().find(|s| s.stage == place && states.contains(&s.state.as_str())) {
            return stage.clone();
        }
        assert!(
            Instant::now() < deadline,
            "stage {place} did not reach {states:?}: {all:#?}\nevents: {:#?}",
            rig.events().await.iter().rev().take(30).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the `siirto` binary on the rig's config: success and what it printed on stdout (with
/// stderr after it when it failed).
fn cli(rig: &SimRig, args: &[&str]) -> (bool, String) {
    let config = rig.dir.path().join("siirto.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .env_remove("SIIRTO_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run siirto");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), text)
}

async fn count_events(rig: &SimRig, kind: &str, account: Option<&str>) -> usize {
    rig.events()
        .await
        .iter()
        .filter(|e| e.kind == kind && (account.is_none() || e.account.as_deref() == account))
        .count()
}

async fn suspended(rig: &SimRig, n: usize) -> Option<bool> {
    rig.source_whm().account(&rig.user(n)).await.unwrap().map(|a| a.suspended)
}

/// Starts a rig of three accounts, the first on the customer's own DNS, runs the migration to
/// its cutover with a daemon, and returns them with the SMTP server.
pub(crate) async fn cut_over(id: &'static str) -> (SimRig, Daemon, SmtpServer) {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new(id, 3);
    options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
    options.public_dns = true;
    options.ssh = true;
    options.mail = Mail::Smtp(smtp.addr);
    // The operators have an address (this line ends the [mail] table).
    options.extra_config = "operators = [\"ops@hosting.test\"]\n".to_owned();
    let rig = SimRig::start(options).await;
    // The customer's domain is flagged (they must repoint it), so plan, approve and start.
    rig.plan(&playbook()).await;
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine("retire", 4));
    rig.wait_for("the cutover", Duration::from_secs(180), |s| {
        matches!(s.detail, MigrationState::CutOver { .. })
    })
    .await;
    (rig, daemon, smtp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_server_is_retired_in_stages_with_its_gates_and_people() {
    let (rig, daemon, smtp) = cut_over("it-decommission").await;
    let id = rig.id.clone();
    let external = rig.hosts.accounts[0].clone();
    let domain = external.domain.clone();

    // The playbook's five stages are recorded at the cutover, dated from it, none run yet.
    let row = rig.store.migration(id.as_str()).await.unwrap().unwrap();
    let recorded = stages(&rig).await;
    let dates: Vec<(String, i64, String)> =
        recorded.iter().map(|s| (s.action.clone(), s.due_at - row.cutover_at, s.state.clone())).collect();
    let day = DAY.as_millis() as i64;
    assert_eq!(
        dates,
        vec![
            ("suspend_accounts".into(), 30 * day, "pending".into()),
            ("remove_accounts".into(), 60 * day, "pending".into()),
            ("cancel_licence".into(), 60 * day, "pending".into()),
            ("power_off".into(), 90 * day, "pending".into()),
            ("destroy_disks".into(), 90 * day, "pending".into()),
        ]
    );
    // The preview: nothing is due; the suspension would take all three accounts, except the
    // one whose domain public DNS still sends to the old server, shown with the evidence.
    let world = siirto::world::World::from_config(&rig.config).unwrap();
    let plan = siirto::ops::decommission_plan(&rig.store, Some(&world), &id).await.unwrap();
    let suspend = &plan.stages[0];
    assert_eq!(suspend.would_touch, vec![rig.user(1).to_string(), rig.user(2).to_string()], "{plan:#?}");
    assert_eq!(suspend.held.len(), 1, "{plan:#?}");
    assert_eq!(suspend.held[0].account, external.user.as_str());
    assert!(suspend.held[0].checked_now);
    assert!(
        suspend.held[0]
            .evidence
            .iter()
            .any(|e| e.name == domain.as_str() && e.rtype == "A" && e.answer == SOURCE_IP.to_string()),
        "{:#?}",
        suspend.held[0].evidence
    );

    // A month passes: nothing was suspended before its date.
    for n in 0..3 {
        assert_eq!(suspended(&rig, n).await, Some(false), "account {n} before the stage");
    }
    rig.clock.advance(30 * DAY + Duration::from_secs(60));
    let ran = wait_stage(&rig, 0, &["ran"], Duration::from_secs(60)).await;
    assert_eq!(ran.state, "ran");
    assert_eq!(suspended(&rig, 1).await, Some(true));
    assert_eq!(suspended(&rig, 2).await, Some(true));
    assert_eq!(
        suspended(&rig, 0).await,
        Some(false),
        "the external customer's account is held, not suspended"
    );
    let reason = rig.hosts.source.suspend_reason(&rig.user(1)).expect("a suspension reason");
    assert!(reason.contains(id.as_str()), "the reason names the migration: {reason}");
    let accounts = rig.store.stage_accounts(id.as_str()).await.unwrap();
    let held = accounts.iter().find(|a| a.user == external.user.as_str()).unwrap();
    assert_eq!(held.state, "held");
    assert!(held.evidence.contains(&SOURCE_IP.to_string()), "{}", held.evidence);
    // Its customer is reminded through the notice machinery, with the old records named.
    let deadline = Instant::now() + Duration::from_secs(30);
    let prefix = "<closing.0.";
    let closing = loop {
        if let Some(found) = smtp.delivered().into_iter().find(|d| d.message_id.starts_with(prefix)) {
            break found;
        }
        assert!(Instant::now() < deadline, "no closing reminder: {:?}", smtp.delivered().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        closing.message_id.ends_with(&format!(".{}.{id}@siirto>", external.user)),
        "{}",
        closing.message_id
    );
    assert!(closing.rcpt_tos.contains(&external.email), "{closing:?}");
    let body = closing.body.clone().unwrap_or_default();
    assert!(body.contains(&format!("{} A: {SOURCE_IP}", domain.as_str())), "{body}");
    assert!(body.contains("switched off on"), "{body}");
    // The next stage is due at 60 days: not yet.
    assert_eq!(stages(&rig).await[1].state, "pending");
    // `siirto decommission ID --plan` shows it all, the held account with public DNS's answer
    // asked now.
    let (ok, printed) = cli(&rig, &["decommission", id.as_str(), "--plan"]);
    assert!(ok, "{printed}");
    assert!(printed.contains("1. suspend accounts (suspend_accounts) due "), "{printed}");
    assert!(printed.contains(": ran\n"), "{printed}");
    assert!(
        printed.contains(&format!("held {}: public DNS now still leads to the old server", external.user)),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{} A at ", domain.as_str())) && printed.contains(&SOURCE_IP.to_string()),
        "{printed}"
    );
    let (ok, json) = cli(&rig, &["decommission", id.as_str(), "--json"]);
    assert!(ok, "{json}");
    let plan: serde_json::Value =
        serde_json::Deserializer::from_str(&json).into_iter().next().unwrap().unwrap();
    let after = json.trim_end().rsplit_once("\n}").map_or("", |(_, rest)| rest);
    assert!(after.trim().is_empty(), "only the plan is printed: {after}");
    assert_eq!(plan["stages"][0]["done"].as_array().unwrap().len(), 2, "{plan}");

    // The customer repoints their records (apex, www, the mail host): at the next check the
    // account is clear and suspended, and the stage is done, once.
    let their_dns = rig.their_dns();
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
    their_dns.apply(&domain, &changes).await.unwrap();
    wait_stage(&rig, 0, &["done"], Duration::from_secs(60)).await;
    assert_eq!(suspended(&rig, 0).await, Some(true));
    for n in 0..3 {
        let user = rig.user(n);
        assert_eq!(count_events(&rig, "account_suspended_on_source", Some(user.as_str())).await, 1, "{user}");
    }
    assert_eq!(count_events(&rig, "decommission_done", None).await, 1);
    let plan = siirto::ops::decommission_plan(&rig.store, Some(&world), &id).await.unwrap();
    assert_eq!(plan.stages[0].done.len(), 3);
    assert!(plan.stages[0].held.is_empty() && plan.stages[0].would_touch.is_empty(), "{plan:#?}");

    // Two months. Someone still reaches the old server for account 1's site (a visitor's hosts
    // file): the removal holds that account with the access log's evidence and removes the
    // others (keepdns off: the servers share no cluster); once the log is quiet for the
    // playbook's window, account 1 is removed too.
    visit_old_server(&rig, rig.domain(1).as_str()).await;
    assert!(rig.hosts.source.access_log(&rig.domain(1), false).contains("\"GET / HTTP/1.1\""));
    rig.clock.advance(30 * DAY);
    wait_stage(&rig, 1, &["ran", "done"], Duration::from_secs(60)).await;
    let held = rig.store.stage_accounts(id.as_str()).await.unwrap();
    let held = held.iter().find(|a| a.stage == 1 && a.user == rig.user(1).as_str());
    if let Some(held) = held.filter(|h| h.state == "held") {
        assert!(
            held.evidence.contains("\"rtype\":\"web\"") && held.evidence.contains("GET / HTTP/1.1"),
            "{}",
            held.evidence
        );
        assert_eq!(suspended(&rig, 1).await, Some(true), "held, so still on the old server");
    } else {
        panic!("account 1 was removed although its site was visited within the window: {held:?}");
    }
    wait_stage(&rig, 1, &["done"], Duration::from_secs(60)).await;
    for n in 0..3 {
        assert_eq!(suspended(&rig, n).await, None, "account {n} is removed from the source");
    }
    assert_eq!(count_events(&rig, "account_removed_from_source", None).await, 3);
    let removal = rig.events().await.into_iter().find(|e| e.kind == "account_removed_from_source").unwrap();
    assert!(removal.detail.contains("\"keep_dns\":false"), "{}", removal.detail);
    assert_eq!(
        count_events(&rig, "decommission_held", Some(rig.user(1).as_str())).await,
        1,
        "the hold is logged once"
    );
    let licence = wait_stage(&rig, 2, &["waiting"], Duration::from_secs(30)).await;
    assert_eq!(licence.manual, 0, "automatic, but there is no licence provider: a task instead");
    let tasks = siirto::status::operator_tasks(&rig.store, id.as_str()).await.unwrap();
    let task = tasks
        .iter()
        .find(|t| t.stage.as_deref() == Some("cancel licence"))
        .expect("the licence task")
        .clone();
    let now = rig.clock.now();
    let done =
        siirto::ops::ack_task(&rig.store, task.id, "maija", Some("cancelled in Manage2"), now).await.unwrap();
    assert_eq!(done.stage_done.as_deref(), Some("cancel licence"));
    // Undoing a suspension after the removal is refused: the accounts are gone.
    let err = siirto::ops::undo_stage(&rig.store, &world, &id, "suspend accounts", "maija", "oops", now)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("removed 3 account(s)"), "{err:#}");

    // Three months: every account is removed and the logs are quiet, so the server is powered
    // off over SSH (the rig's command leaves a file), once; the disks are people's, destroying
    // them needs two.
    let powered = rig.hosts.source.data_dir().join("powered-off");
    assert!(!powered.exists());
    rig.clock.advance(30 * DAY);
    wait_stage(&rig, 3, &["done"], Duration::from_secs(60)).await;
    assert!(powered.exists(), "the power-off command ran on the old server");
    assert_eq!(count_events(&rig, "server_power_off_sent", None).await, 1);
    assert_eq!(count_events(&rig, "server_powered_off", None).await, 1);
    let disks = wait_stage(&rig, 4, &["waiting"], Duration::from_secs(30)).await;
    let tasks = siirto::status::operator_tasks(&rig.store, id.as_str()).await.unwrap();
    let unrack = tasks.iter().find(|t| t.task.starts_with("unrack")).unwrap().clone();
    let destroy = tasks.iter().find(|t| t.task.starts_with("destroy")).unwrap().clone();
    assert_eq!((unrack.needs, destroy.needs), (1, 2));
    let first = siirto::ops::ack_task(&rig.store, destroy.id, "maija", None, rig.clock.now()).await.unwrap();
    assert_eq!((first.confirmations, first.needs, first.stage_done), (1, 2, None));
    let again =
        siirto::ops::ack_task(&rig.store, destroy.id, "maija", None, rig.clock.now()).await.unwrap_err();
    assert!(format!("{again}").contains("someone else must confirm"), "{again}");
    let listed = siirto::status::operator_tasks(&rig.store, id.as_str()).await.unwrap();
    let open = listed.iter().find(|t| t.id == destroy.id).expect("still open after one person");
    assert_eq!(open.confirmed_by, vec!["maija".to_owned()]);
    let second = siirto::ops::ack_task(&rig.store, destroy.id, "pekka", None, rig.clock.now()).await.unwrap();
    assert_eq!((second.confirmations, second.stage_done.as_deref()), (2, None), "unrack is still open");
    let last = siirto::ops::ack_task(&rig.store, unrack.id, "pekka", None, rig.clock.now()).await.unwrap();
    assert_eq!(last.stage_done.as_deref(), Some(disks.name.as_str()));
    assert!(stages(&rig).await.iter().all(|s| s.state == "done"), "{:#?}", stages(&rig).await);
    assert_eq!(count_events(&rig, "decommission_done", None).await, 5, "each stage once");
    daemon.stop().await;

    // The event log's chain is intact; a row edited behind the store's back is named.
    let report = rig.store.verify_chain(id.as_str()).await.unwrap();
    assert_eq!(report.broken, None, "{report:?}");
    let (ok, printed) = cli(&rig, &["audit", "verify", id.as_str()]);
    assert!(ok && printed.contains("is intact; head "), "{printed}");
    let removed = rig.events().await.into_iter().find(|e| e.kind == "account_removed_from_source").unwrap();
    let db = rig.dir.path().join("siirto.db");
    let status = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!("UPDATE events SET actor = 'someone-else' WHERE id = {}", removed.id))
        .status()
        .expect("sqlite3 (Debian package sqlite3)");
    assert!(status.success());
    let report = rig.store.verify_chain(id.as_str()).await.unwrap();
    assert_eq!(report.broken.and_then(|b| b.event), Some(removed.id), "the edited row is named");
    let (ok, printed) = cli(&rig, &["audit", "verify", id.as_str()]);
    assert!(!ok, "a broken chain exits non-zero: {printed}");
    assert!(printed.contains(&format!("does not match at event {} (place ", removed.id)), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undoing_a_suspension_gives_the_accounts_back_and_skipping_and_postponing_are_recorded() {
    let (rig, daemon, _smtp) = cut_over("it-decommission-undo").await;
    let id = rig.id.clone();
    let world = siirto::world::World::from_config(&rig.config).unwrap();
    let now = rig.clock.now();
    // The removal is postponed by two weeks and the licence stage skipped, each with a reason.
    let removal = stages(&rig).await[1].clone();
    let until = siirto::domain::from_millis(removal.due_at) + chrono::Duration::days(14);
    let postponed = siirto::ops::postpone_stage(
        &rig.store,
        &id,
        "remove accounts",
        until,
        "maija",
        "customer audit",
        now,
    )
    .await
    .unwrap();
    assert_eq!(postponed.due_at, removal.due_at + 14 * DAY.as_millis() as i64);
    let early = siirto::ops::postpone_stage(&rig.store, &id, "remove accounts", now, "maija", "x", now).await;
    assert!(format!("{:#}", early.unwrap_err()).contains("later time"));
    let none = siirto::ops::skip_stage(&rig.store, &id, "cancel licence", "maija", " ", now).await;
    assert!(format!("{:#}", none.unwrap_err()).contains("give a reason"));
    siirto::ops::skip_stage(&rig.store, &id, "cancel licence", "maija", "licence is monthly", now)
        .await
        .unwrap();
    let unknown = siirto::ops::skip_stage(&rig.store, &id, "reboot", "maija", "why", now).await;
    assert!(format!("{:#}", unknown.unwrap_err()).contains("its stages: \"suspend accounts\""));

    rig.clock.advance(30 * DAY + Duration::from_secs(60));
    wait_stage(&rig, 0, &["ran"], Duration::from_secs(60)).await;
    assert_eq!((suspended(&rig, 1).await, suspended(&rig, 2).await), (Some(true), Some(true)));

    // Undone while the daemon runs (its stage job looks at the held account 0 every 300 ms): it
    // takes no account into the stage any more, and those suspended serve again.
    let undone = siirto::ops::undo_stage(
        &rig.store,
        &world,
        &id,
        "suspend accounts",
        "maija",
        "wrong server",
        rig.clock.now(),
    )
    .await
    .unwrap();
    assert_eq!(undone.accounts, vec![rig.user(1).to_string(), rig.user(2).to_string()]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in 0..3 {
        assert_eq!(suspended(&rig, n).await, Some(false), "account {n} serves again");
    }
    daemon.stop().await;
    let suspensions = rig.hosts.source.account_changes().iter().filter(|(f, _)| f == "suspendacct").count();
    assert_eq!(suspensions, 2, "nothing was suspended after the undo");
    let all = stages(&rig).await;
    assert_eq!(
        all.iter().map(|s| s.state.as_str()).collect::<Vec<_>>(),
        ["undone", "pending", "skipped", "pending", "pending"]
    );
    let events = rig.events().await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.kind.starts_with("decommission_"))
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    assert!(kinds.contains(&("decommission_postponed", "maija")), "{kinds:?}");
    assert!(kinds.contains(&("decommission_skipped", "maija")), "{kinds:?}");
    assert!(kinds.contains(&("decommission_undone", "maija")), "{kinds:?}");
    assert_eq!(events.iter().filter(|e| e.kind == "account_unsuspended_on_source").count(), 2);
    let again = siirto::ops::undo_stage(
        &rig.store,
        &world,
        &id,
        "suspend accounts",
        "maija",
        "twice",
        rig.clock.now(),
    )
    .await;
    assert!(format!("{:#}", again.unwrap_err()).contains("undone already"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stays_on_while_an_account_is_neither_done_nor_excluded() {
    let (rig, daemon, _smtp) = cut_over("it-decommission-power").await;
    let id = rig.id.clone();
    let held = rig.user(0);
    // Three months pass at once: account 0's customer never repointed, so it is held by the
    // suspension and never removed; the others are removed. The licence stage (no provider in
    // the rig's config) waits for a person.
    rig.clock.advance(90 * DAY + Duration::from_secs(60));
    wait_stage(&rig, 2, &["waiting"], Duration::from_secs(60)).await;
    assert_eq!(stages(&rig).await[1].state, "ran", "the removal waits for the suspension's held account");
    let licence = siirto::status::operator_tasks(&rig.store, id.as_str())
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.stage.as_deref() == Some("cancel licence"))
        .unwrap();
    siirto::ops::ack_task(&rig.store, licence.id, "maija", None, rig.clock.now()).await.unwrap();
    // The power-off is blocked by that account, with why; nothing was sent to the server.
    let blocked = wait_stage(&rig, 3, &["blocked"], Duration::from_secs(30)).await;
    assert!(
        blocked.detail.contains(held.as_str()) && blocked.detail.contains("not done by stage"),
        "{}",
        blocked.detail
    );
    let powered = rig.hosts.source.data_dir().join("powered-off");
    assert!(!powered.exists());
    assert_eq!(stages(&rig).await[4].state, "pending", "the disks wait for the power-off");
    // An operator leaves the account out, with a reason: the server is powered off.
    let excluded = siirto::ops::exclude_account(&rig.store, &id, &held, "maija", "", rig.clock.now()).await;
    assert!(format!("{:#}", excluded.unwrap_err()).contains("give a reason"));
    siirto::ops::exclude_account(
        &rig.store,
        &id,
        &held,
        "maija",
        "customer moves to another host",
        rig.clock.now(),
    )
    .await
    .unwrap();
    wait_stage(&rig, 3, &["done"], Duration::from_secs(30)).await;
    assert!(powered.exists());
    let events = rig.events().await;
    let exclusion = events.iter().find(|e| e.kind == "decommission_account_excluded").unwrap();
    assert_eq!((exclusion.actor.as_str(), exclusion.account.as_deref()), ("maija", Some(held.as_str())));
    let sent = events.iter().find(|e| e.kind == "server_power_off_sent").unwrap();
    assert!(sent.detail.contains(held.as_str()), "the gate's evidence names the exclusion: {}", sent.detail);
    assert_eq!(suspended(&rig, 0).await, Some(false), "the excluded account was never suspended");
    daemon.stop().await;
}

/// The real daemon, killed (SIGKILL) or stopped (SIGTERM) at seeded points in the middle of the
/// suspension and started again, resumes with the accounts it had not done: every account is
/// suspended, each with exactly one `suspendacct` reaching the old server (counted there), and
/// the stage runs once. The seed is printed; `SIIRTO_CRASH_SEED=<n>` replays a run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_during_the_suspension_resumes_with_the_accounts_left() {
    use rand::{Rng, SeedableRng};
    const ACCOUNTS: usize = 12;
    let seed =
        std::env::var("SIIRTO_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5111_7710_u64);
    eprintln!("decommission crash seed {seed} (SIIRTO_CRASH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut options = RigOptions::new("it-decommission-kill", ACCOUNTS);
    options.public_dns = true;
    // One [daemon] table per daemon process.
    options.daemon = None;
    let rig = SimRig::start(options).await;
    // The cutover was 31 days ago, so the suspension is due as soon as the migration is cut
    // over; the daemon process runs on the real clock.
    let cutover = rig.clock.now() - chrono::Duration::days(31);
    rig.plan_with_cutover(&playbook(), cutover).await;
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    // The old server answers each suspension slowly (a host under load), so the disruptions
    // land with some accounts suspended and others not.
    rig.hosts.source.inject(siirto::sim::Fault::Delay {
        function: "suspendacct".into(),
        millis: 300,
        times: 1000,
    });
    let config = rig.write_daemon_config(
        "retire.toml",
        "owner = \"retire\"\nlease = \"2s\"\nidle_poll = \"100ms\"\nstop_timeout = \"1s\"\n",
    );
    let suspensions = || {
        rig.hosts.source.account_changes().into_iter().filter(|(f, _)| f == "suspendacct").collect::<Vec<_>>()
    };
    let mut daemon = DaemonProcess::start(rig.dir.path(), &config, "retire.log");
    let (mut kills, mut stops) = (0, 0);
    for _ in 0..3 {
        let seen = suspensions().len();
        if seen + 2 >= ACCOUNTS {
            break;
        }
        let target = rng.gen_range(seen + 1..ACCOUNTS - 1);
        let deadline = Instant::now() + Duration::from_secs(240);
        while suspensions().len() < target {
            daemon.assert_running();
            assert!(
                Instant::now() < deadline,
                "no suspensions; log:\n{}",
                std::fs::read_to_string(&daemon.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if rng.gen_bool(0.6) {
            daemon.kill();
            kills += 1;
        } else {
            let (status, log) = daemon.stop(Duration::from_secs(20)).await;
            assert!(status.success(), "SIGTERM ended in {status:?}\n{log}");
            stops += 1;
        }
        assert_ne!(stages(&rig).await[0].state, "done", "disrupted before the stage ended");
        daemon = DaemonProcess::start(rig.dir.path(), &config, "retire.log");
    }
    eprintln!("{kills} SIGKILL(s), {stops} SIGTERM(s) during the suspension");
    assert!(kills + stops > 0, "the stage was never disrupted (seed {seed})");
    wait_stage(&rig, 0, &["done"], Duration::from_secs(120)).await;
    let (status, log) = daemon.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{log}");

    let calls = suspensions();
    let mut per_user: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (_, user) in &calls {
        *per_user.entry(user.clone()).or_default() += 1;
    }
    assert_eq!(per_user.len(), ACCOUNTS, "{calls:?}");
    assert!(per_user.values().all(|n| *n == 1), "a suspendacct reached the old server twice: {per_user:?}");
    for n in 0..ACCOUNTS {
        assert_eq!(suspended(&rig, n).await, Some(true), "account {n}");
        let user = rig.user(n);
        assert_eq!(count_events(&rig, "account_suspended_on_source", Some(user.as_str())).await, 1, "{user}");
    }
    assert_eq!(count_events(&rig, "decommission_started", None).await, 1);
    assert_eq!(count_events(&rig, "decommission_done", None).await, 1);
    assert_eq!(rig.store.verify_chain(rig.id.as_str()).await.unwrap().broken, None);
}

/// The licence stage against a simulated Manage2 over real HTTP: the licence found by the old
/// server's IP, the way back proven (the reactivation's dry run) before it is expired, expired
/// once with the documented parameters and a reason naming the migration; the stage's undo
/// reactivates it through the same provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_licence_is_found_proven_reactivatable_expired_once_and_reactivated_by_undo() {
    use siirto::sim::manage2::{SimLicence, SimLicenceStatus, SimManage2};
    let manage2 = SimManage2::start(
        "licences@hosting.test",
        "manage2-password-for-tests",
        vec![
            SimLicence::active("7216526", std::net::IpAddr::V4(SOURCE_IP), "COMPANY-INTERNAL-VPS"),
            SimLicence::active("7216527", "192.0.2.99".parse().unwrap(), "COMPANY-INTERNAL-VPS"),
        ],
    )
    .await
    .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("manage2.password");
    std::fs::write(&password, "manage2-password-for-tests\n").unwrap();
    let mut options = RigOptions::new("it-decommission-licence", 2);
    options.extra_config = format!(
        "\n[licence]\nprovider = \"manage2\"\nurl = \"{}\"\nuser = \"licences@hosting.test\"\npassword_file = \"{}\"\n",
        manage2.url(),
        password.display()
    );
    let rig = SimRig::start(options).await;
    let id = rig.id.clone();
    rig.plan_and_start(&playbook()).await;
    let daemon = Daemon::start(rig.engine("licence", 4));
    rig.wait_for("the cutover", Duration::from_secs(180), |s| {
        matches!(s.detail, MigrationState::CutOver { .. })
    })
    .await;
    // This test is about the licence: the account stages are skipped (with a reason).
    let now = rig.clock.now();
    for stage in ["suspend accounts", "remove accounts"] {
        siirto::ops::skip_stage(&rig.store, &id, stage, "maija", "accounts handled elsewhere", now)
            .await
            .unwrap();
    }
    assert!(manage2.calls().is_empty(), "nothing before the stage's date");
    rig.clock.advance(60 * DAY + Duration::from_secs(60));
    let done = wait_stage(&rig, 2, &["done"], Duration::from_secs(60)).await;
    assert!(done.detail.contains("7216526"), "{}", done.detail);

    let endpoints: Vec<String> = manage2.calls().iter().map(|c| c.endpoint.clone()).collect();
    let dry_run = endpoints.iter().position(|e| e == "XMLlicenseReActivate.cgi").expect("a dry run");
    let expiry = endpoints.iter().position(|e| e == "XMLlicenseExpire.cgi").expect("an expiry");
    assert!(dry_run < expiry, "the way back is proven before the licence is expired: {endpoints:?}");
    assert_eq!(manage2.calls_to("XMLlookup.cgi")[0].params.get("ip"), Some(&SOURCE_IP.to_string()));
    assert_eq!(
        manage2.calls_to("XMLlicenseReActivate.cgi")[0].params.get("dryrun").map(String::as_str),
        Some("1")
    );
    let expiries = manage2.calls_to("XMLlicenseExpire.cgi");
    assert_eq!(expiries.len(), 1, "expired once: {expiries:?}");
    let params = &expiries[0].params;
    assert_eq!(params.get("liscid").map(String::as_str), Some("7216526"));
    assert_eq!(params.get("expcode").map(String::as_str), Some("normal"));
    assert!(params.get("reason").is_some_and(|r| r.contains(id.as_str())), "{params:?}");
    assert!(expiries[0].authorized);
    assert!(matches!(manage2.licence("7216526").unwrap().status, SimLicenceStatus::Expired { .. }));
    assert_eq!(
        manage2.licence("7216527").unwrap().status,
        SimLicenceStatus::Active,
        "another server's licence"
    );
    assert_eq!(count_events(&rig, "licence_cancelled", None).await, 1);
    // The job's later looks change nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(manage2.calls_to("XMLlicenseExpire.cgi").len(), 1);
    daemon.stop().await;

    // Undo: the provider reactivates it (a lookup finds expired licences no more: the stage's
    // recorded id is used).
    let world = siirto::world::World::from_config(&rig.config).unwrap();
    siirto::ops::undo_stage(
        &rig.store,
        &world,
        &id,
        "cancel licence",
        "maija",
        "the server stays a month",
        rig.clock.now(),
    )
    .await
    .unwrap();
    let reactivations: Vec<_> = manage2
        .calls_to("XMLlicenseReActivate.cgi")
        .into_iter()
        .filter(|c| c.params.get("dryrun").is_none_or(|d| d != "1"))
        .collect();
    assert_eq!(reactivations.len(), 1, "{reactivations:?}");
    assert_eq!(manage2.licence("7216526").unwrap().status, SimLicenceStatus::Active);
    let event =
        rig.events().await.into_iter().find(|e| e.kind == "licence_reactivated").expect("the undo is logged");
    assert_eq!(event.actor, "maija");
}
