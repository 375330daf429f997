//! Transfer control on simulated hosts with the real engine, a real pdns_server and (for the
//! SSH pins) real sshd: pre-flight before start, packages before accounts, pause/resume/abort
//! reaching the transfer session, and verification of the account's mailboxes on the target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use siirto::domain::MigrationState;
use siirto::engine::Engine;
use siirto::names::AccountName;
use siirto::preflight::Severity;
use siirto::whm::{SessionState, TransferSessionId};
use siirto::world::World;

use crate::support::rig::{RigOptions, SimRig, account};
use crate::support::sshd::Sshd;

const PLAYBOOK: &str = include_str!("../../playbooks/demo.toml");

type Rig = SimRig;

/// `accounts` accounts on the source, transfers at `bytes_per_sec`, `extra` appended to the
/// config (e.g. `[hosts.old.ssh]`).
async fn start_rig(accounts: usize, bytes_per_sec: u64, extra: &str) -> Rig {
    let mut options = RigOptions::new("it-control", accounts);
    options.target.transfer_bytes_per_sec = bytes_per_sec;
    options.extra_config = extra.to_owned();
    SimRig::start(options).await
}

trait ControlRig {
    async fn event_kinds(&self) -> Vec<String>;
}

impl ControlRig for Rig {
    async fn event_kinds(&self) -> Vec<String> {
        self.store.events(self.id.as_str()).await.unwrap().into_iter().map(|e| e.kind).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preflight_passes_and_the_start_is_recorded() {
    let rig = start_rig(4, 100 * 1024 * 1024, "").await;
    rig.plan_and_approve(PLAYBOOK).await;
    // One zone loses its SOA-EDIT-API setting, as a zone made with pdnsutil has none.
    let bare = rig.hosts.accounts[0].domain.clone();
    let response = reqwest::Client::new()
        .put(rig.pdns.api_url.join(&format!("api/v1/servers/localhost/zones/{}", bare.fqdn())).unwrap())
        .header("X-API-Key", &rig.pdns.api_key)
        .json(&serde_json::json!({"soa_edit_api": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let outcome = rig.start_migration().await;
    let report = &outcome.report;
    assert!(report.passed(), "{report:#?}");
    // It is warned about by name, and only it.
    let serial_warnings: Vec<_> = report.findings.iter().filter(|f| f.check == "dns serial").collect();
    assert_eq!(serial_warnings.len(), 1, "{report:#?}");
    assert_eq!(serial_warnings[0].severity, Severity::Warning);
    assert!(
        serial_warnings[0].detail.starts_with(&format!("zone {bare} has no SOA-EDIT-API metadata")),
        "{:?}",
        serial_warnings[0]
    );
    assert!(matches!(outcome.started, Some(MigrationState::Started { .. })), "{outcome:?}");
    let severity = |check: &str| report.findings.iter().find(|f| f.check == check).map(|f| f.severity);
    assert_eq!(severity("credentials"), Some(Severity::Ok));
    assert_eq!(severity("analyze_session"), Some(Severity::Ok));
    assert_eq!(severity("clashes"), Some(Severity::Ok));
    assert_eq!(severity("disk"), Some(Severity::Ok));
    assert_eq!(severity("version"), Some(Severity::Ok));
    assert_eq!(severity("dns"), Some(Severity::Ok));
    // No [hosts.*.ssh]: nothing in the demo playbook needs SSH, so a warning each.
    assert_eq!(severity("ssh old"), Some(Severity::Warning));
    assert_eq!(severity("ssh new"), Some(Severity::Warning));
    let kinds = rig.event_kinds().await;
    let preflight = kinds.iter().position(|k| k == "preflight_passed").expect("recorded");
    let started = kinds.iter().position(|k| k == "migration_started").expect("started");
    assert!(preflight < started, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_is_refused_when_the_target_cannot_log_in_to_the_source() {
    let rig = start_rig(3, 100 * 1024 * 1024, "").await;
    rig.plan_and_approve(PLAYBOOK).await;
    rig.hosts.source.refuse_root_login(true);
    let outcome = rig.start_migration().await;
    assert!(outcome.started.is_none(), "{outcome:?}");
    let hard: Vec<_> = outcome.report.hard_failures().map(|f| f.check.as_str()).collect();
    assert_eq!(hard, ["credentials", "analyze_session"], "{:#?}", outcome.report);
    let credentials = outcome.report.hard_failures().next().unwrap();
    assert!(credentials.detail.contains("Permission denied"), "{credentials:?}");
    assert!(matches!(rig.status().await.detail, MigrationState::Approved { .. }));
    assert!(rig.event_kinds().await.contains(&"preflight_failed".to_owned()));

    // Fixed: the same start goes through.
    rig.hosts.source.refuse_root_login(false);
    assert!(rig.start_migration().await.started.is_some());
}

/// Zones read by AXFR from an address where PowerDNS does not answer: the start is refused
/// with the DNS finding, before any TTL is lowered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_is_refused_when_the_dns_provider_cannot_read_the_zones() {
    let mut rig = start_rig(2, 100 * 1024 * 1024, "").await;
    rig.plan_and_approve(PLAYBOOK).await;
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], crate::support::pdns::free_tcp_port().unwrap()));
    let siirto::config::DnsProviderConfig::PowerDns { axfr_server, .. } = &mut rig.config.dns.provider else {
        panic!("the rig uses PowerDNS");
    };
    *axfr_server = Some(closed);
    let outcome = rig.start_migration().await;
    assert!(outcome.started.is_none(), "{outcome:?}");
    let hard: Vec<_> = outcome.report.hard_failures().collect();
    assert_eq!(hard.len(), 1, "{:#?}", outcome.report);
    assert_eq!(hard[0].check, "dns");
    assert!(
        hard[0].detail.contains("cannot read zone") && hard[0].detail.contains(&closed.to_string()),
        "{:?}",
        hard[0]
    );
    assert!(matches!(rig.status().await.detail, MigrationState::Approved { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_is_refused_when_an_ssh_host_key_pin_does_not_match() {
    let old_sshd = Sshd::start().await;
    let new_sshd = Sshd::start().await;
    let ssh = |sshd: &Sshd, host: &str, pinned: &str| {
        format!(
            "[hosts.{host}.ssh]\naddress = \"{}\"\nuser = \"{}\"\nkey_file = \"{}\"\nhost_key = \"{pinned}\"\n\n",
            sshd.address,
            sshd.user,
            sshd.client_key.display()
        )
    };
    // old's pin is new's key: the server old answers with is not the one pinned.
    let extra =
        ssh(&old_sshd, "old", &new_sshd.host_key_line) + &ssh(&new_sshd, "new", &new_sshd.host_key_line);
    let rig = start_rig(2, 100 * 1024 * 1024, &extra).await;
    rig.plan_and_approve(PLAYBOOK).await;
    let outcome = rig.start_migration().await;
    assert!(outcome.started.is_none(), "{outcome:?}");
    let hard: Vec<_> = outcome.report.hard_failures().collect();
    assert_eq!(hard.len(), 1, "{:#?}", outcome.report);
    assert_eq!(hard[0].check, "ssh old");
    assert!(hard[0].detail.to_lowercase().contains("host key"), "{:?}", hard[0]);
    let new = outcome.report.findings.iter().find(|f| f.check == "ssh new").unwrap();
    assert_eq!(new.severity, Severity::Ok, "{new:?}");
    assert!(matches!(rig.status().await.detail, MigrationState::Approved { .. }));
}

/// Waits (ticking the engine) until the migration has a transfer session on the target.
async fn first_session(rig: &Rig, engine: &Arc<Engine>) -> TransferSessionId {
    rig.tick_until(engine, "an account to be queued", |s| s.accounts.iter().any(|a| a.state == "queued"))
        .await;
    let sessions = siirto::ops::active_sessions(&rig.store, &rig.id).await.unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    sessions[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn packages_go_first_and_pause_resume_abort_reach_the_session() {
    // 1 MB/s: each account (1–50 MB declared) takes seconds, so the session is mid-way.
    let rig = start_rig(8, 1024 * 1024, "").await;
    rig.plan_and_approve(PLAYBOOK).await;
    assert!(rig.start_migration().await.started.is_some());
    let engine = rig.engine("it-control", 8);
    let session = first_session(&rig, &engine).await;
    // Tick once more so start_session has enqueued and started it.
    let whm = rig.target_whm();
    let deadline = Instant::now() + Duration::from_secs(60);
    while matches!(whm.transfer_session_state(&session).await.unwrap(), SessionState::Pending) {
        assert!(Instant::now() < deadline, "the session never started");
        engine.tick().await.unwrap();
    }

    // Packages: sent before any account, and created on the target.
    let log = whm.transfer_session_log(&session).await.unwrap();
    let first_account =
        log.iter().position(|l| l.item_type.as_deref() == Some("AccountRemoteRoot")).unwrap_or(log.len());
    let package_restores: Vec<_> = log
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.item_type.as_deref() == Some("PackageRemoteRoot")
                && l.action == "success-item"
                && l.queue.as_deref() == Some("RESTORE")
        })
        .collect();
    let names: Vec<_> = package_restores.iter().map(|(_, l)| l.item.clone().unwrap()).collect();
    assert_eq!(names, ["kukka0001_basic", "pro"], "{log:#?}");
    assert!(package_restores.iter().all(|(i, _)| *i < first_account), "{log:#?}");
    let target_packages = rig.hosts.target.packages();
    assert!(
        target_packages.contains(&"pro".to_owned())
            && target_packages.contains(&"kukka0001_basic".to_owned())
    );

    // Pause reaches the session.
    let world = World::from_config(&rig.config).unwrap();
    let control = siirto::ops::pause(&rig.store, &world, &rig.id, "test", chrono::Utc::now()).await.unwrap();
    let (state, outcomes) = (control.state, control.sessions);
    assert!(matches!(state, MigrationState::Paused { .. }));
    assert_eq!(outcomes.len(), 1);
    assert!(outcomes[0].ok && outcomes[0].outcome == "paused", "{outcomes:?}");
    assert_eq!(whm.transfer_session_state(&session).await.unwrap(), SessionState::Paused);

    // Resume restarts it.
    let outcomes =
        siirto::ops::resume(&rig.store, &world, &rig.id, "test", chrono::Utc::now()).await.unwrap().sessions;
    assert!(outcomes[0].ok && outcomes[0].outcome == "restarted", "{outcomes:?}");
    assert_ne!(whm.transfer_session_state(&session).await.unwrap(), SessionState::Paused);

    // Abort aborts it; the items it did not get to are reported as aborted.
    let control = siirto::ops::abort(&rig.store, &world, &rig.id, "test abort", "test", chrono::Utc::now())
        .await
        .unwrap();
    let (state, outcomes) = (control.state, control.sessions);
    assert!(matches!(state, MigrationState::Aborted { .. }));
    assert!(outcomes[0].ok && outcomes[0].outcome == "aborted", "{outcomes:?}");
    assert_eq!(whm.transfer_session_state(&session).await.unwrap(), SessionState::Aborted);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = whm.transfer_session_log(&session).await.unwrap();
        let outcomes = siirto::whm::item_outcomes(&log);
        let aborted = outcomes
            .values()
            .filter(|o| matches!(o, siirto::whm::ItemOutcome::Failed { message, .. } if message.contains("aborted")))
            .count();
        let ended = outcomes
            .values()
            .filter(|o| {
                matches!(o, siirto::whm::ItemOutcome::Restored | siirto::whm::ItemOutcome::Failed { .. })
            })
            .count();
        if ended == 8 {
            assert!(aborted >= 1, "{outcomes:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "not every item ended after the abort: {outcomes:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kinds = rig.event_kinds().await;
    for kind in ["transfer_sessions_paused", "transfer_sessions_resumed", "transfer_sessions_aborted"] {
        assert!(kinds.contains(&kind.to_owned()), "{kind} missing: {kinds:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mailbox_missing_on_the_target_holds_the_account_with_evidence() {
    let rig = start_rig(2, 100 * 1024 * 1024, "").await;
    rig.plan_and_approve(PLAYBOOK).await;
    assert!(rig.start_migration().await.started.is_some());
    let engine = rig.engine("it-control", 8);
    let user = AccountName::parse("kukka0002").unwrap();
    // Between the restore and the verification (the next tick), the mailbox goes missing.
    let mut removed = false;
    rig.tick_until(&engine, "the account to be held", |status| {
        let state = account(status, user.as_str()).state.clone();
        if state == "restored" && !removed {
            let mailbox = rig.hosts.target.account_dir(&user).join("mail/kukka-0002.test/info");
            std::fs::remove_dir_all(&mailbox).unwrap();
            removed = true;
        }
        state == "held"
    })
    .await;
    assert!(removed);
    let status = rig.status().await;
    let reason = account(&status, user.as_str()).reason.clone().unwrap_or_default();
    assert!(reason.contains("mailboxes missing on the target: info@kukka-0002.test"), "{reason}");
    // The other account has its mailbox and goes on.
    rig.tick_until(&engine, "kukka0001 to arrive", |s| account(s, "kukka0001").state == "done").await;
    let _ = &rig.dir;
}
