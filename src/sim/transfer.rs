//! Transfer sessions on a simulated target host: create, enqueue, start, watch, pause and
//! abort, with the master log written as line-delimited JSON the way cPanel's Transfer Tool does.
//!
//! The target pulls each account from the source host (found through the `SimWorld`): the
//! TRANSFER queue copies the source's files into a staging directory, the RESTORE queue turns
//! them into an account on the target. Both take time in proportion to the declared size.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::api::{Params, Reply, domain_param, user_param};
use super::{Host, SimAccount, accounts};
use crate::names::{AccountName, DomainName};

const ITEM_TYPE: &str = "AccountRemoteRoot";
const PACKAGE_TYPE: &str = "PackageRemoteRoot";

/// What the session's runner is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Abort,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Transfer,
    Restore,
    Completed,
}

/// One enqueued account.
#[derive(Debug, Clone)]
struct Item {
    user: AccountName,
    localuser: AccountName,
    size: u64,
}

/// A transfer session held by the target host.
#[derive(Debug)]
pub(crate) struct Session {
    remote_host: String,
    /// Packages enqueued (`PackageRemoteRoot`); a session moves them before its accounts.
    packages: Vec<String>,
    /// The login parameters the session was created with (checked again by
    /// `analyze_transfer_session_remote`).
    login: Params,
    transfer_threads: usize,
    restore_threads: usize,
    items: Vec<Item>,
    phase: Phase,
    paused: bool,
    aborted: bool,
    pid: Option<u32>,
    master_log: Vec<String>,
    item_logs: BTreeMap<String, Vec<String>>,
    control: watch::Sender<Control>,
    /// When `create_remote_root_transfer_session` made it.
    created_at: chrono::DateTime<chrono::Utc>,
    /// When each item's RESTORE `success-item` line was written (millisecond precision, where
    /// the master log's `time` has seconds), for tests and benchmarks.
    restored_at: BTreeMap<AccountName, chrono::DateTime<chrono::Utc>>,
}

impl Session {
    fn state_name(&self) -> &'static str {
        if self.aborted {
            return "ABORTED";
        }
        if self.phase == Phase::Completed {
            return "COMPLETED";
        }
        if self.paused {
            return "PAUSED";
        }
        match self.phase {
            Phase::Pending => "PENDING",
            Phase::Transfer => "TRANSFER_INPROGRESS",
            Phase::Restore => "RESTORE_INPROGRESS",
            Phase::Completed => "COMPLETED",
        }
    }
}

fn session_id_param(params: &Params) -> Result<String, Reply> {
    let Some(id) = params.get("transfer_session_id").filter(|v| !v.is_empty()) else {
        return Err(Reply::fail("No “transfer_session_id” parameter was specified."));
    };
    let valid = id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !valid {
        return Err(Reply::fail("The transfer session ID is not valid."));
    }
    Ok(id.clone())
}

fn threads_param(params: &Params, key: &str) -> Result<usize, Reply> {
    match params.get(key) {
        None => Ok(1),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(n),
            _ => Err(Reply::fail(format!("The “{key}” parameter must be a positive integer."))),
        },
    }
}

fn no_session(id: &str) -> Reply {
    Reply::fail(format!("The transfer session “{id}” does not exist."))
}

pub(crate) fn create_session(host: &Arc<Host>, params: &Params) -> Reply {
    let transfer_threads = match threads_param(params, "transfer_threads") {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let restore_threads = match threads_param(params, "restore_threads") {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    let source = match super::checks::root_login(host, params) {
        Ok(source) => source,
        Err(reply) => return reply,
    };

    let stem: String = source.hostname.chars().filter(char::is_ascii_alphanumeric).take(20).collect();
    let letters: String =
        rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(4).map(char::from).collect();
    let id = format!("{stem}copya{}{letters}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let (control, _) = watch::channel(Control::Run);
    host.state().sessions.insert(
        id.clone(),
        Session {
            remote_host: source.hostname.clone(),
            packages: Vec::new(),
            login: params
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "host" | "user" | "port" | "password" | "sshkey_name"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            transfer_threads,
            restore_threads,
            items: Vec::new(),
            phase: Phase::Pending,
            paused: false,
            aborted: false,
            pid: None,
            master_log: Vec::new(),
            item_logs: BTreeMap::new(),
            control,
            created_at: chrono::Utc::now(),
            restored_at: BTreeMap::new(),
        },
    );
    Reply::ok(json!({
        "transfer_session_id": id,
        "analyze_rawout": format!(
            "<div>Analyzing remote server “{}” ({})…</div><div>cPanel &amp; WHM version {}</div>\n",
            source.hostname, source.ip, source.version
        ),
        "create_rawout": format!("<div>Created transfer session “{id}”.</div>\n"),
    }))
}

pub(crate) fn enqueue_item(host: &Arc<Host>, params: &Params) -> Reply {
    let id = match session_id_param(params) {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let module = params.get("module").map(String::as_str).unwrap_or("");
    if module == PACKAGE_TYPE {
        return enqueue_package(host, &id, params);
    }
    if module != ITEM_TYPE {
        return Reply::fail(format!(
            "The module “{module}” is not available on this server (only {ITEM_TYPE} and {PACKAGE_TYPE})."
        ));
    }
    let user = match user_param(params, "user") {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    let localuser = match user_param(params, "localuser") {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    if params.contains_key("domain")
        && let Err(reply) = domain_param(params, "domain")
    {
        return reply;
    }
    let size = match params.get("size") {
        None => 1,
        Some(raw) => match raw.parse::<u64>() {
            Ok(size) => size,
            Err(_) => return Reply::fail("The “size” parameter must be a number of bytes."),
        },
    };
    let mut state = host.state();
    let Some(session) = state.sessions.get_mut(&id) else {
        return no_session(&id);
    };
    if session.phase != Phase::Pending {
        return Reply::fail(format!("The transfer session “{id}” has already started."));
    }
    if session.items.iter().any(|i| i.localuser == localuser) {
        return Reply::fail(format!("The account “{localuser}” is already queued in this session."));
    }
    session.items.push(Item { user, localuser, size });
    Reply::ok_metadata_only("OK")
}

/// A package name as cPanel allows it (a reseller's packages are `reseller_name`).
fn valid_package_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b' '))
        && !name.starts_with('.')
}

/// `enqueue_transfer_item` with module `PackageRemoteRoot` (`package` required).
fn enqueue_package(host: &Arc<Host>, id: &str, params: &Params) -> Reply {
    let Some(package) = params.get("package").filter(|v| !v.is_empty()) else {
        return Reply::fail("No “package” parameter was specified.");
    };
    if !valid_package_name(package) {
        return Reply::fail(format!("“{package}” is not a valid package name."));
    }
    let mut state = host.state();
    let Some(session) = state.sessions.get_mut(id) else {
        return no_session(id);
    };
    if session.phase != Phase::Pending {
        return Reply::fail(format!("The transfer session “{id}” has already started."));
    }
    if !session.packages.contains(package) {
        session.packages.push(package.clone());
    }
    Reply::ok_metadata_only("OK")
}

/// `analyze_transfer_session_remote`: logs in to the session's source again.
pub(crate) fn analyze_session(host: &Arc<Host>, params: &Params) -> Reply {
    let id = match session_id_param(params) {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let login = match host.state().sessions.get(&id) {
        Some(session) => session.login.clone(),
        None => return no_session(&id),
    };
    match super::checks::root_login(host, &login) {
        Ok(_) => Reply::ok_metadata_only("OK"),
        Err(reply) => reply,
    }
}

pub(crate) fn start_session(host: &Arc<Host>, params: &Params) -> Reply {
    let id = match session_id_param(params) {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let mut state = host.state();
    state.next_pid += 1;
    let fresh_pid = 20_000 + state.next_pid;
    let Some(session) = state.sessions.get_mut(&id) else {
        return no_session(&id);
    };
    if session.aborted || session.phase == Phase::Completed {
        return Reply::fail(format!("The transfer session “{id}” has already finished."));
    }
    if session.phase != Phase::Pending {
        // "starts or restarts": a paused session resumes.
        session.paused = false;
        session.control.send_replace(Control::Run);
        let pid = session.pid.unwrap_or(fresh_pid);
        return Reply::ok(json!({ "pid": pid }));
    }
    if session.items.is_empty() && session.packages.is_empty() {
        return Reply::fail(format!("The transfer session “{id}” has no queued items."));
    }
    session.phase = Phase::Transfer;
    session.pid = Some(fresh_pid);
    let control = session.control.subscribe();
    drop(state);
    let runner = run_session(host.clone(), id, control);
    let mut tasks = super::lock(&host.tasks);
    // Reap finished sessions so the set holds only running ones.
    while tasks.try_join_next().is_some() {}
    tasks.spawn(tracing::Instrument::instrument(
        runner,
        tracing::debug_span!("sim_transfer_session", host = %host.hostname),
    ));
    Reply::ok(json!({ "pid": fresh_pid }))
}

pub(crate) fn session_state(host: &Arc<Host>, params: &Params) -> Reply {
    let id = match session_id_param(params) {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    match host.state().sessions.get(&id) {
        Some(session) => Reply::ok(json!({ "state_name": session.state_name() })),
        None => no_session(&id),
    }
}

pub(crate) fn session_log(host: &Arc<Host>, params: &Params) -> Reply {
    let id = match session_id_param(params) {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let Some(logfile) = params.get("logfile").filter(|v| !v.is_empty()) else {
        return Reply::fail("No “logfile” parameter was specified.");
    };
    let state = host.state();
    let Some(session) = state.sessions.get(&id) else {
        return no_session(&id);
    };
    let lines: &[String] = match logfile.as_str() {
        "master.log" => &session.master_log,
        "master.error_log" => &[],
        other => match session.item_logs.get(other) {
            Some(lines) => lines,
            None => {
                return Reply::fail(format!("The log file “{other}” does not exist."));
            }
        },
    };
    let mut log = String::new();
    for line in lines {
        log.push_str(line);
        log.push('\n');
    }
    Reply::ok(json!({ "log": log }))
}

pub(crate) fn pause_session(host: &Arc<Host>, params: &Params) -> Reply {
    control_session(host, params, Control::Pause)
}

pub(crate) fn abort_session(host: &Arc<Host>, params: &Params) -> Reply {
    control_session(host, params, Control::Abort)
}

fn control_session(host: &Arc<Host>, params: &Params, control: Control) -> Reply {
    let id = match session_id_param(params) {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let mut state = host.state();
    let Some(session) = state.sessions.get_mut(&id) else {
        return no_session(&id);
    };
    if session.aborted || session.phase == Phase::Completed {
        return Reply::fail(format!("The transfer session “{id}” has already finished."));
    }
    match control {
        Control::Pause => session.paused = true,
        Control::Abort => session.aborted = true,
        Control::Run => session.paused = false,
    }
    session.control.send_replace(control);
    Reply::ok_metadata_only("OK.")
}

/// Every transfer session this host holds (as the target), oldest first.
pub(crate) fn sessions(host: &Host) -> Vec<super::SimTransferSession> {
    let state = host.state();
    let mut sessions: Vec<super::SimTransferSession> = state
        .sessions
        .iter()
        .map(|(id, session)| super::SimTransferSession {
            id: id.clone(),
            state_name: session.state_name(),
            remote_host: session.remote_host.clone(),
            accounts: session.items.iter().map(|item| item.user.clone()).collect(),
            created_at: session.created_at,
            restored_at: session.restored_at.clone(),
        })
        .collect();
    sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    sessions
}

// ----- the runner -----

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Appends one master.log line.
fn log_master(host: &Host, id: &str, kind: &str, indent: u32, contents: Value) {
    let mut state = host.state();
    if let Some(session) = state.sessions.get_mut(id) {
        let pid = session.pid.unwrap_or_default().to_string();
        let line = json!({
            "pid": pid,
            "indent": indent,
            "type": kind,
            "partial": 0,
            "contents": contents,
        });
        session.master_log.push(line.to_string());
    }
}

/// Appends one line to an item's own log.
fn log_item(host: &Host, id: &str, logfile: &str, kind: &str, text: &str) {
    let mut state = host.state();
    if let Some(session) = state.sessions.get_mut(id) {
        let pid = session.pid.unwrap_or_default().to_string();
        let line = json!({
            "pid": pid,
            "indent": 1,
            "type": kind,
            "partial": 0,
            "contents": { "msg": text, "time": now() },
        });
        session.item_logs.entry(logfile.to_owned()).or_default().push(line.to_string());
    }
}

fn set_phase(host: &Host, id: &str, phase: Phase) {
    if let Some(session) = host.state().sessions.get_mut(id) {
        session.phase = phase;
    }
}

/// Waits while the session is paused; false if it was aborted.
async fn runnable(control: &mut watch::Receiver<Control>) -> bool {
    loop {
        let current = *control.borrow_and_update();
        match current {
            Control::Run => return true,
            Control::Abort => return false,
            Control::Pause => {
                if control.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

fn item_contents(item: &Item, queue: &str, action: &str, child: usize, msg: Value) -> Value {
    json!({
        "action": action,
        "child_number": child,
        "item": item.user.as_str(),
        "item_name": "Account",
        "item_type": ITEM_TYPE,
        "local_item": item.localuser.as_str(),
        "logfile": format!("item-{queue}_{ITEM_TYPE}_{}", item.user),
        "queue": queue,
        "msg": msg,
        "time": now(),
    })
}

fn success_msg(message: &str) -> Value {
    json!({
        "message": message,
        "warnings": [],
        "dangerous_items": [],
        "skipped_items": [],
        "altered_items": [],
        "contents": { "warnings": [], "dangerous_items": [], "skipped_items": [], "altered_items": [] },
    })
}

fn failure_msg(failure: &str) -> Value {
    json!({
        "failure": failure,
        "warnings": [],
        "dangerous_items": [],
        "skipped_items": [],
        "altered_items": [],
        "contents": { "warnings": [], "dangerous_items": [], "skipped_items": [], "altered_items": [] },
    })
}

fn duration_for(bytes: u64, bytes_per_sec: u64) -> Duration {
    if bytes_per_sec == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(bytes as f64 / bytes_per_sec as f64)
}

async fn run_session(target: Arc<Host>, id: String, control: watch::Receiver<Control>) {
    let (items, packages, remote_host, transfer_threads, restore_threads) = {
        let state = target.state();
        let Some(session) = state.sessions.get(&id) else {
            return;
        };
        (
            session.items.clone(),
            session.packages.clone(),
            session.remote_host.clone(),
            session.transfer_threads,
            session.restore_threads,
        )
    };
    let control_contents = |action: &str, msg: Value, queue: Option<&str>| {
        let mut contents = json!({ "action": action, "child_number": 0, "time": now(), "msg": msg });
        if let Some(queue) = queue {
            contents["queue"] = json!(queue);
        }
        contents
    };
    let total_size: u64 = items.iter().map(|i| i.size).sum();
    log_master(&target, &id, "control", 0, control_contents("start", Value::Null, None));
    log_master(&target, &id, "control", 0, control_contents("initiator", json!("copyacct"), None));
    log_master(&target, &id, "control", 0, control_contents("version", json!(2.3), None));
    log_master(&target, &id, "control", 0, control_contents("remotehost", json!(remote_host), None));
    for queue in ["TRANSFER", "RESTORE"] {
        log_master(
            &target,
            &id,
            "control",
            0,
            control_contents("queue_count", json!(items.len() + packages.len()), Some(queue)),
        );
        log_master(
            &target,
            &id,
            "control",
            0,
            control_contents("queue_size", json!(total_size), Some(queue)),
        );
    }

    // Packages first, so the accounts that use them restore onto an existing package.
    let mut control_for_packages = control.clone();
    for package in &packages {
        run_package(&target, &id, package, &mut control_for_packages).await;
    }

    let transfer_slots = Arc::new(Semaphore::new(transfer_threads));
    let restore_slots = Arc::new(Semaphore::new(restore_threads));
    let transfers_left = Arc::new(AtomicUsize::new(items.len()));
    let staging_root = target.data_dir.join("transfer_sessions").join(&id);

    let runs = items.into_iter().enumerate().map(|(index, item)| {
        let target = target.clone();
        let id = id.clone();
        let remote_host = remote_host.clone();
        let mut control = control.clone();
        let transfer_slots = transfer_slots.clone();
        let restore_slots = restore_slots.clone();
        let transfers_left = transfers_left.clone();
        let staging = staging_root.join(item.user.as_str());
        async move {
            let transferred = run_transfer(
                &target,
                &id,
                &remote_host,
                &item,
                &staging,
                index % transfer_threads + 1,
                &mut control,
                &transfer_slots,
            )
            .await;
            if transfers_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                set_phase(&target, &id, Phase::Restore);
                log_master(
                    &target,
                    &id,
                    "control",
                    0,
                    json!({
                        "action": "complete", "child_number": 0, "queue": "TRANSFER", "time": now(),
                    }),
                );
            }
            if let Some(source_spec) = transferred {
                run_restore(
                    &target,
                    &id,
                    &remote_host,
                    &item,
                    source_spec,
                    &staging,
                    index % restore_threads + 1,
                    &mut control,
                    &restore_slots,
                )
                .await;
            }
        }
    });
    futures::future::join_all(runs).await;

    log_master(
        &target,
        &id,
        "control",
        0,
        json!({
            "action": "complete", "child_number": 0, "queue": "RESTORE", "time": now(),
        }),
    );
    log_master(&target, &id, "control", 0, control_contents("complete", Value::Null, None));
    set_phase(&target, &id, Phase::Completed);
    let _ = tokio::fs::remove_dir_all(&staging_root).await;
}

/// The failure an aborted session reports for the items it did not get to.
const ABORTED: &str = "The transfer session was aborted before this item was processed.";

/// Reports an item the session did not process because it was aborted: a `failed-item` line
/// with the abort as the failure, so a reader of master.log sees every item's end.
fn log_aborted(target: &Host, id: &str, item: &Item, queue: &str, child: usize) {
    log_master(
        target,
        id,
        "failure",
        1,
        item_contents(item, queue, "failed-item", child, failure_msg(ABORTED)),
    );
}

/// Moves one package (`PackageRemoteRoot`): TRANSFER then RESTORE lines in master.log with
/// `item_type` `PackageRemoteRoot`, and the package exists on the target afterwards.
async fn run_package(target: &Arc<Host>, id: &str, package: &str, control: &mut watch::Receiver<Control>) {
    let contents = |queue: &str, action: &str, msg: Value| {
        json!({
            "action": action,
            "child_number": 1,
            "item": package,
            "item_name": "Package",
            "item_type": PACKAGE_TYPE,
            "local_item": package,
            "logfile": format!("item-{queue}_{PACKAGE_TYPE}_{package}"),
            "queue": queue,
            "msg": msg,
            "time": now(),
        })
    };
    for queue in ["TRANSFER", "RESTORE"] {
        if !runnable(control).await {
            log_master(target, id, "failure", 1, contents(queue, "failed-item", failure_msg(ABORTED)));
            return;
        }
        log_master(target, id, "control", 1, contents(queue, "start-item", json!({ "size": 1 })));
        if queue == "RESTORE" {
            target.state().packages.insert(package.to_owned());
        }
        let message = if queue == "TRANSFER" { "Transfer complete." } else { "Restore complete." };
        log_master(target, id, "success", 1, contents(queue, "success-item", success_msg(message)));
    }
}

/// The TRANSFER queue for one item: copies the source's files into `staging`. Returns the
/// source account's description on success.
#[allow(clippy::too_many_arguments)]
async fn run_transfer(
    target: &Arc<Host>,
    id: &str,
    remote_host: &str,
    item: &Item,
    staging: &Path,
    child: usize,
    control: &mut watch::Receiver<Control>,
    slots: &Semaphore,
) -> Option<SimAccount> {
    if !runnable(control).await {
        log_aborted(target, id, item, "TRANSFER", child);
        return None;
    }
    let Ok(_slot) = slots.acquire().await else {
        return None;
    };
    if !runnable(control).await {
        log_aborted(target, id, item, "TRANSFER", child);
        return None;
    }
    let queue = "TRANSFER";
    let logfile = format!("item-{queue}_{ITEM_TYPE}_{}", item.user);
    log_master(
        target,
        id,
        "control",
        1,
        item_contents(item, queue, "start-item", child, json!({ "size": item.size })),
    );
    log_master(target, id, "out", 1, item_contents(item, queue, "process-item", child, json!(logfile)));
    log_item(target, id, &logfile, "out", &format!("Transferring “{}” from “{remote_host}”…", item.user));

    let outcome: Result<SimAccount, String> =
        async {
            let source = target
                .world
                .lookup(remote_host)
                .ok_or_else(|| format!("The system failed to connect to “{remote_host}”."))?;
            let spec =
                source.state().accounts.get(&item.user).map(|r| r.spec.clone()).ok_or_else(|| {
                    format!("The account “{}” does not exist on “{remote_host}”.", item.user)
                })?;
            tokio::time::sleep(duration_for(spec.disk_mb * 1024 * 1024, target.transfer_bytes_per_sec)).await;
            let from = accounts::home_dir(&source.data_dir, &item.user);
            let to = staging.to_path_buf();
            let copied = tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&to);
                accounts::copy_tree(&from, &to)
            })
            .await
            .map_err(|e| format!("The copy of the account files was interrupted: {e}"))?
            .map_err(|e| format!("Failed to copy the account files: {e}"))?;
            log_item(target, id, &logfile, "out", &format!("Copied {copied} bytes of files."));
            Ok(spec)
        }
        .await;
    match outcome {
        Ok(spec) => {
            log_master(
                target,
                id,
                "success",
                1,
                item_contents(item, queue, "success-item", child, success_msg("Transfer complete.")),
            );
            Some(spec)
        }
        Err(failure) => {
            log_item(target, id, &logfile, "failure", &failure);
            log_master(
                target,
                id,
                "failure",
                1,
                item_contents(item, queue, "failed-item", child, failure_msg(&failure)),
            );
            None
        }
    }
}

/// The RESTORE queue for one item: makes the staged files an account on the target.
#[allow(clippy::too_many_arguments)]
async fn run_restore(
    target: &Arc<Host>,
    id: &str,
    remote_host: &str,
    item: &Item,
    source_spec: SimAccount,
    staging: &Path,
    child: usize,
    control: &mut watch::Receiver<Control>,
    slots: &Semaphore,
) {
    if !runnable(control).await {
        log_aborted(target, id, item, "RESTORE", child);
        return;
    }
    let Ok(_slot) = slots.acquire().await else {
        return;
    };
    if !runnable(control).await {
        log_aborted(target, id, item, "RESTORE", child);
        return;
    }
    let queue = "RESTORE";
    let logfile = format!("item-{queue}_{ITEM_TYPE}_{}", item.user);
    log_master(
        target,
        id,
        "control",
        1,
        item_contents(item, queue, "start-item", child, json!({ "size": item.size })),
    );
    log_master(target, id, "out", 1, item_contents(item, queue, "process-item", child, json!(logfile)));
    log_item(target, id, &logfile, "out", &format!("Restoring “{}” as “{}”…", item.user, item.localuser));

    tokio::time::sleep(duration_for(source_spec.disk_mb * 1024 * 1024 / 4, target.transfer_bytes_per_sec))
        .await;

    let outcome = restore(target, remote_host, item, source_spec, staging).await;
    match outcome {
        Ok(()) => {
            if let Some(session) = target.state().sessions.get_mut(id) {
                session.restored_at.insert(item.user.clone(), chrono::Utc::now());
            }
            log_item(target, id, &logfile, "out", "Account Restore Complete");
            log_master(
                target,
                id,
                "success",
                1,
                item_contents(item, queue, "success-item", child, success_msg("Restore complete.")),
            );
        }
        Err(failure) => {
            log_item(target, id, &logfile, "failure", &failure);
            log_master(
                target,
                id,
                "failure",
                1,
                item_contents(item, queue, "failed-item", child, failure_msg(&failure)),
            );
        }
    }
}

fn conflict(host: &Host, spec: &SimAccount, localuser: &AccountName) -> Option<String> {
    let state = host.state();
    if state.accounts.contains_key(localuser) {
        return Some(format!("The account “{localuser}” already exists on “{}”.", host.hostname));
    }
    let wanted: Vec<&DomainName> = spec.all_domains().collect();
    for record in state.accounts.values() {
        let owned = record.spec.all_domains();
        for domain in owned {
            if wanted.contains(&domain) {
                return Some(format!(
                    "The domain “{domain}” already exists on “{}” (owned by “{}”).",
                    host.hostname, record.spec.user
                ));
            }
        }
    }
    None
}

async fn restore(
    target: &Arc<Host>,
    remote_host: &str,
    item: &Item,
    source_spec: SimAccount,
    staging: &Path,
) -> Result<(), String> {
    // The failure switch is read from the source now, so tests can flip it at run time.
    let fail_restore = target
        .world
        .lookup(remote_host)
        .and_then(|source| source.state().accounts.get(&item.user).map(|r| r.spec.fail_restore.clone()))
        .unwrap_or_else(|| source_spec.fail_restore.clone());
    if let Some(failure) = fail_restore {
        let _ = tokio::fs::remove_dir_all(staging).await;
        return Err(failure);
    }
    if let Some(failure) = conflict(target, &source_spec, &item.localuser) {
        let _ = tokio::fs::remove_dir_all(staging).await;
        return Err(failure);
    }
    let home = accounts::home_dir(&target.data_dir, &item.localuser);
    let from = staging.to_path_buf();
    tokio::task::spawn_blocking(move || {
        match std::fs::remove_dir_all(&home) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = home.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&from, &home)
    })
    .await
    .map_err(|e| format!("The restore was interrupted: {e}"))?
    .map_err(|e| format!("Failed to restore the account files: {e}"))?;

    let mut spec = source_spec;
    spec.user = item.localuser.clone();
    spec.fail_restore = None;
    // Without the `ip` item option the restore puts the account on the target's shared IP.
    spec.dedicated_ip = None;
    let mut state = target.state();
    if state.accounts.contains_key(&item.localuser) {
        return Err(format!("The account “{}” already exists on “{}”.", item.localuser, target.hostname));
    }
    Host::add_account(&mut state, spec, now());
    Ok(())
}
