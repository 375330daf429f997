//! The real `siirto daemon` binary killed (SIGKILL) while a transfer session runs, and started
//! again: it follows the same session to the end, no account is transferred twice, and the
//! migration completes. The simulated hosts run in this process (so they outlive the daemon,
//! as a real target server does), with a real pdns_server and a SQLite store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use siirto::demo::TARGET_IP;
use siirto::domain::MigrationState;
use siirto::playbook::Playbook;
use siirto::sim::SimTransferSession;
use siirto::store::EventRow;

use crate::support::daemon::DaemonProcess;
use crate::support::rig::{RigOptions, SimRig};

const PLAYBOOK: &str = include_str!("../../playbooks/demo.toml");
const ACCOUNTS: usize = 6;
/// Slow enough that the first session's biggest account (38 MB) takes ~7.6 s to copy, so the
/// daemon is killed with the session well in progress; the test waits on observable state,
/// never on this figure.
const BYTES_PER_SEC: u64 = 5 * 1024 * 1024;

/// Writes `<owner>.toml` for a daemon process named `owner`.
fn daemon_config(rig: &SimRig, owner: &str) -> String {
    // A short lease, so the restarted daemon may take over the killed one's jobs soon.
    let daemon = format!("owner = \"{owner}\"\nlease = \"2s\"\nidle_poll = \"100ms\"\n");
    rig.write_daemon_config(&format!("{owner}.toml"), &daemon)
}

/// Polls `check` every 100 ms until it returns `Some`, panicking with `what` after `timeout`.
async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, daemon: &mut DaemonProcess, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        daemon.assert_running();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; daemon log:\n{}",
            std::fs::read_to_string(&daemon.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn of_kind<'a>(events: &'a [EventRow], kind: &'a str) -> impl Iterator<Item = &'a EventRow> {
    events.iter().filter(move |e| e.kind == kind && e.domain.is_none())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_restarts_and_follows_the_same_transfer_session() {
    let mut options = RigOptions::new("restart", ACCOUNTS);
    options.source.transfer_bytes_per_sec = BYTES_PER_SEC;
    options.target.transfer_bytes_per_sec = BYTES_PER_SEC;
    // One [daemon] table per daemon process, written by `daemon_config`.
    options.daemon = None;
    let rig = SimRig::start(options).await;
    let (hosts, store) = (&rig.hosts, &rig.store);

    // Plan, approve and start as an operator would; the daemon process does the rest.
    let playbook = Playbook::parse(PLAYBOOK, "playbooks/demo.toml").unwrap();
    assert!(
        playbook.transfer.accounts_per_session as usize >= ACCOUNTS,
        "the test wants every account in the first session"
    );
    rig.plan_and_start(PLAYBOOK).await;

    // Daemon A runs until the session is transferring on the target and the store shows at
    // least one of its accounts copied (daemon A read the session's log) while others are
    // still in the TRANSFER queue.
    let mut daemon_a = DaemonProcess::start(rig.dir.path(), &daemon_config(&rig, "daemon-a"), "daemon-a.log");
    let session: SimTransferSession = wait_until(
        "a running session with one account copied",
        Duration::from_secs(120),
        &mut daemon_a,
        || {
            let target = &hosts.target;
            async move {
                let sessions = account_sessions(target);
                let running = sessions.iter().find(|s| s.state_name == "TRANSFER_INPROGRESS")?;
                let accounts = store.accounts("restart").await.unwrap();
                let copied = accounts.iter().filter(|a| a.state == "copied").count();
                let queued = accounts.iter().filter(|a| a.state == "queued").count();
                (copied >= 1 && queued >= 1).then(|| running.clone())
            }
        },
    )
    .await;
    let log_a = daemon_a.kill();

    // The kill landed mid-session: the target still holds one session, still transferring,
    // with every account in it; the store names that session for each account still in it.
    let at_kill = account_sessions(&hosts.target);
    assert_eq!(at_kill.len(), 1, "{at_kill:#?}");
    assert_eq!(at_kill[0].id, session.id);
    assert_eq!(
        at_kill[0].state_name, "TRANSFER_INPROGRESS",
        "the session ended before the kill; log:\n{log_a}"
    );
    let users: BTreeSet<String> = hosts.accounts.iter().map(|a| a.user.to_string()).collect();
    let in_session: BTreeSet<String> = at_kill[0].accounts.iter().map(ToString::to_string).collect();
    assert_eq!(in_session, users);
    // Accounts daemon A had not yet seen restored: daemon B must follow them in the session.
    let mut left_to_follow = BTreeSet::new();
    for row in store.accounts("restart").await.unwrap() {
        if row.state == "queued" || row.state == "copied" {
            assert!(row.data.contains(&session.id), "{} is not in {}: {}", row.user, session.id, row.data);
            left_to_follow.insert(row.user);
        }
    }
    assert!(!left_to_follow.is_empty(), "every account was restored before the kill; log:\n{log_a}");

    // Daemon B, on the same store, once daemon A's leases have run out.
    let mut daemon_b = DaemonProcess::start(rig.dir.path(), &daemon_config(&rig, "daemon-b"), "daemon-b.log");
    let status = wait_until("the migration to cut over", Duration::from_secs(240), &mut daemon_b, || {
        let rig = &rig;
        async move {
            let status = rig.status().await;
            matches!(status.detail, MigrationState::CutOver { .. }).then_some(status)
        }
    })
    .await;
    let log_b = daemon_b.kill();
    assert_eq!(status.arrived(), ACCOUNTS, "{status:#?}\ndaemon B log:\n{log_b}");

    // One session ever, the same one, each account in it once, all of them restored by it.
    let sessions = account_sessions(&hosts.target);
    assert_eq!(sessions.len(), 1, "a second session was created: {sessions:#?}");
    assert_eq!(sessions[0].id, session.id);
    assert_eq!(sessions[0].state_name, "COMPLETED");
    assert_eq!(
        sessions[0].accounts.len(),
        ACCOUNTS,
        "an account was enqueued twice: {:?}",
        sessions[0].accounts
    );
    let restored: BTreeSet<String> = sessions[0].restored_at.keys().map(ToString::to_string).collect();
    assert_eq!(restored, users);
    for account in &hosts.accounts {
        let index = hosts.target.account_dir(&account.user).join("public_html/index.html");
        let page = std::fs::read_to_string(&index).unwrap_or_else(|e| panic!("{}: {e}", index.display()));
        assert!(page.contains(account.user.as_str()), "{page}");
    }

    // The store's story: each account enqueued once, in that session, by daemon A; the
    // restores daemon A had not seen were seen by daemon B (which therefore read the same
    // session's log); no step of
    // any account or domain recorded twice; no transfer failure.
    let events = store.events("restart").await.unwrap();
    for user in &users {
        let enqueued: Vec<&EventRow> =
            of_kind(&events, "account_enqueued").filter(|e| e.account.as_deref() == Some(user)).collect();
        assert_eq!(enqueued.len(), 1, "{user}: {enqueued:#?}");
        assert!(enqueued[0].detail.contains(&session.id), "{:?}", enqueued[0]);
        assert_eq!(enqueued[0].actor, "daemon-a");
        let restored: Vec<&EventRow> =
            of_kind(&events, "account_restored").filter(|e| e.account.as_deref() == Some(user)).collect();
        assert_eq!(restored.len(), 1, "{user}: {restored:#?}");
        if left_to_follow.contains(user) {
            assert_eq!(restored[0].actor, "daemon-b", "{user}: {restored:#?}");
        }
    }
    assert!(of_kind(&events, "account_copied").any(|e| e.actor == "daemon-a"));
    assert_eq!(of_kind(&events, "account_transfer_failed").count(), 0);
    let mut seen: BTreeMap<(Option<String>, Option<String>, String), usize> = BTreeMap::new();
    for event in events.iter().filter(|e| e.kind != "step_failed") {
        *seen.entry((event.account.clone(), event.domain.clone(), event.kind.clone())).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "steps recorded more than once: {twice:?}");

    // The customers' view: every domain now answers with the target's address.
    let checker = siirto::dns::Checker::new(vec![rig.pdns.dns_addr]).unwrap();
    for domain in siirto::demo::all_domains(&hosts.accounts) {
        let answer = checker.verify_a(&domain, TARGET_IP).await.unwrap();
        assert!(matches!(answer, siirto::dns::Verification::Served), "{domain}: {answer:?}");
    }
    let files: Vec<String> = std::fs::read_dir(rig.dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let of_kind = |kind: &str| files.iter().filter(|f| f.starts_with(kind)).count();
    assert_eq!(of_kind("completion."), ACCOUNTS, "one completion notice per account: {files:?}");
    assert_eq!(of_kind("start."), ACCOUNTS, "one start notice per customer: {files:?}");
    assert_eq!(files.len(), 2 * ACCOUNTS, "{files:?}");
}

/// The target's transfer sessions that carried accounts: the pre-flight's probe session (created
/// and aborted by `siirto start` to prove the target can log in to the source) carries none.
fn account_sessions(target: &siirto::sim::SimHost) -> Vec<siirto::sim::SimTransferSession> {
    target.transfer_sessions().into_iter().filter(|s| !s.accounts.is_empty()).collect()
}

/// Runs `siirto daemon --exit-when-settled` as a script would, and waits for it to exit.
fn daemon_until_settled(rig: &SimRig, owner: &str) -> (Option<i32>, String) {
    let config = daemon_config(rig, owner);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args(["daemon", "--config", &config, "--exit-when-settled"])
        .current_dir(rig.dir.path())
        .env("NO_COLOR", "1")
        .env_remove("SIIRTO_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
            return (status.code(), out);
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the daemon did not exit when settled");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_exits_when_settled_or_says_who_waits_for_an_operator() {
    let mut options = RigOptions::new("it-settled", 3);
    options.daemon = None;
    let rig = SimRig::start(options).await;
    let id = rig.id.to_string();
    // A settle period short enough that the TTLs come back within the test.
    let playbook = PLAYBOOK.replace("settle_after = \"2d\"", "settle_after = \"1s\"");
    assert!(playbook.contains("settle_after = \"1s\""));
    rig.plan_and_start(&playbook).await;

    // Every account arrives and every TTL is restored: settled, and the daemon exits 0.
    let (code, out) = tokio::task::block_in_place(|| daemon_until_settled(&rig, "settler"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("settled: {id}")), "{out}");
    let status = rig.status().await;
    assert_eq!(status.state, "settled", "{status:#?}");
    assert!(status.accounts.iter().all(|a| a.state == "done"), "{status:#?}");
    let domains: Vec<&str> =
        status.accounts.iter().flat_map(|a| &a.domains).map(|d| d.state.as_str()).collect();
    assert!(domains.iter().all(|s| *s == "ttl_restored"), "{domains:?}");
    let events = rig.store.events(&id).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let cut = kinds.iter().position(|k| *k == "accounts_settled").expect("cut over");
    let settled = kinds.iter().position(|k| *k == "migration_settled").expect("settled");
    let last_restore = kinds.iter().rposition(|k| *k == "domain_ttl_restored").expect("restored");
    assert!(cut < settled && last_restore < settled, "{kinds:?}");

    // An operator rolls one account back: no longer settled; once the rollback is carried
    // out, no work is left and the daemon exits 3, naming the migration and why.
    let user = rig.hosts.accounts[1].user.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args(["rollback", &id, "--account", &user, "--reason", "customer asked", "--config", "siirto.toml"])
        .current_dir(rig.dir.path())
        .env_remove("SIIRTO_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, out) = tokio::task::block_in_place(|| daemon_until_settled(&rig, "settler"));
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("wait for an operator") && out.contains(&format!("{id}: cut_over")), "{out}");
    assert!(out.contains("1 rolled_back") && out.contains("customer asked"), "{out}");
}
