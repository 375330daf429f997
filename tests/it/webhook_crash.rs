//! The sent-once rule on the webhook channel, tried from outside: the real `siirto daemon` as a
//! child process (SQLite store) sends a migration's notices as signed POSTs to a real endpoint
//! that stores each request at once and answers it only 300–800 ms later (a slow ticket
//! system), while the test kills (SIGKILL) and stops (SIGTERM) the daemon at random points
//! from a seed and starts it again, until every notice is sent or skipped. The first
//! disruption is a SIGKILL aimed at a request the endpoint holds: stored, not yet answered, so
//! the daemon dies between the send and its mark. Then, counted at the endpoint by
//! `Idempotency-Key` (the notice's Message-ID):
//!
//! - every notice the outbox did not skip arrived, and is marked sent; nothing else arrived;
//! - a notice arrived more than once only where each copy but the last was followed, within
//!   the endpoint's answer delay and a margin for the daemon's commit, by a SIGKILL (the one
//!   window between send and mark), and the outbox counts at least as many resends — the
//!   documented resend under the same key; a SIGTERM lets the request in flight finish and
//!   never explains a copy;
//! - the aimed SIGKILL made at least one such resend, so the test cannot pass without
//!   exercising the window;
//! - every SIGTERM ended in exit status 0.
//!
//! The seed is printed; `SIIRTO_CRASH_SEED=<n>` replays a run (the timing is the machine's).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::daemon::DaemonProcess;
use crate::support::rig::{Mail, RigOptions, SimRig};
use crate::support::webhook::WebhookReceiver;

const ACCOUNTS: usize = 6;
const LEASE: Duration = Duration::from_secs(5);
const STOP_TIMEOUT: Duration = Duration::from_secs(8);
const SECRET: &str = "webhook crash secret";
/// The endpoint answers each request it stored this long after storing it.
const ANSWER_DELAY_MIN: Duration = Duration::from_millis(300);
const ANSWER_DELAY_MAX: Duration = Duration::from_millis(800);
/// How long after the endpoint's answer a SIGKILL may still make a notice arrive again: the
/// daemon commits the acceptance as soon as it reads the 2xx, which takes milliseconds; this
/// bound is generous for a loaded 2-core machine.
const COMMIT_MARGIN: Duration = Duration::from_millis(500);
/// How much earlier than a copy's arrival a SIGKILL may be recorded and still be the one that
/// cut its request: the request may sit in the endpoint's socket for a moment before it is read.
const EARLY: Duration = Duration::from_millis(200);
/// How fast the target pulls the accounts.
const TRANSFER_BYTES_PER_SEC: u64 = 5 * 1024 * 1024;
/// Disruptions after the aimed one, at most (fewer if every notice is out before).
const DISRUPTIONS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_daemon_killed_between_send_and_mark_sends_each_notice_once_or_resends_it_under_its_key() {
    let seed = seed(0x5111_7702);
    let mut rng = StdRng::seed_from_u64(seed);
    let receiver = WebhookReceiver::start(SECRET).await;
    receiver.answer_after(ANSWER_DELAY_MIN, ANSWER_DELAY_MAX, seed ^ 0x00de_1a75);
    let mut options = RigOptions::new("webhook-crash", ACCOUNTS);
    options.mail = Mail::Webhook { url: receiver.url(), secret: format!("{SECRET}\n") };
    // The accounts (1 to 50 MB) arrive one by one over some 15 s, so their completion notices
    // go out while the daemon is being disrupted.
    options.target.transfer_bytes_per_sec = TRANSFER_BYTES_PER_SEC;
    // The daemon's own [daemon] table, written below.
    options.daemon = None;
    let rig = SimRig::start(options).await;
    let daemon_table = format!(
        "owner = \"solo\"\nlease = \"{}ms\"\nidle_poll = \"100ms\"\nstop_timeout = \"{}ms\"\n",
        LEASE.as_millis(),
        STOP_TIMEOUT.as_millis()
    );
    let config = rig.write_daemon_config("solo.toml", &daemon_table);
    let start = || DaemonProcess::start(rig.dir.path(), &config, "solo.log");
    rig.plan_and_start(include_str!("../../playbooks/demo.toml")).await;
    let began = Instant::now();

    let mut daemon = start();
    let mut kills: Vec<f64> = Vec::new();
    let mut stops: Vec<f64> = Vec::new();

    // The aimed SIGKILL: as soon as the endpoint holds a request (stored, its 2xx not sent).
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.holding() == 0 {
        daemon.assert_running();
        assert!(Instant::now() < deadline, "no notice reached the endpoint:\n{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kills.push(now());
    daemon.kill();
    let aimed_at = *kills.last().unwrap();
    daemon = start();

    // Then the seeded ones: after a pause, or (aimed) as soon as a request is held within it.
    for _ in 0..DISRUPTIONS {
        let pause = Duration::from_millis(rng.gen_range(200..1_500));
        let aimed = rng.gen_bool(0.5);
        let lag = Duration::from_millis(rng.gen_range(0..ANSWER_DELAY_MIN.as_millis() as u64));
        let kill = rng.gen_bool(0.7);
        let deadline = Instant::now() + pause;
        while Instant::now() < deadline {
            daemon.assert_running();
            if aimed && receiver.holding() > 0 {
                tokio::time::sleep(lag).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if finished(&rig).await {
            break;
        }
        if kill {
            kills.push(now());
            daemon.kill();
        } else {
            stops.push(now());
            let (status, log) = daemon.stop(STOP_TIMEOUT + Duration::from_secs(10)).await;
            assert!(status.success(), "SIGTERM ended in {status:?}; log:\n{log}");
            assert!(log.contains("engine stopped"), "{log}");
        }
        daemon = start();
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while !finished(&rig).await {
        daemon.assert_running();
        assert!(
            Instant::now() < deadline,
            "the notices did not all go out: {:#?}\n{}",
            rig.store.outbox(rig.id.as_str()).await.unwrap(),
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, log) = daemon.stop(STOP_TIMEOUT + Duration::from_secs(10)).await;
    assert!(status.success(), "SIGTERM ended in {status:?}; log:\n{log}");
    eprintln!(
        "{} SIGKILL(s), {} SIGTERM(s) in {:.1} s (seed {seed})",
        kills.len(),
        stops.len(),
        began.elapsed().as_secs_f64()
    );

    let copies = check_notices(&rig, &receiver, &kills, &stops, &log).await;
    // Not vacuous: the aimed SIGKILL cut a request the endpoint had stored, so that notice
    // arrived again under its key.
    let cut: Vec<_> = copies
        .iter()
        .filter(|(_, arrivals)| {
            arrivals.iter().any(|a| *a <= aimed_at && aimed_at <= a + window().as_secs_f64())
        })
        .collect();
    assert!(
        cut.iter().any(|(_, arrivals)| arrivals.len() > 1),
        "the aimed SIGKILL at {aimed_at:.3} made no resend: {copies:#?}"
    );
    let first = copies.values().flatten().cloned().fold(f64::INFINITY, f64::min);
    let last = copies.values().flatten().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert!(
        kills.iter().any(|k| first <= *k && *k <= last),
        "no SIGKILL while the notices went out ({first:.3}..{last:.3}): {kills:?}"
    );
}

/// Every notice the outbox did not skip arrived and is marked sent, nothing else arrived, and
/// each copy beyond one is a SIGKILL's resend. Returns each notice's arrival times.
async fn check_notices(
    rig: &SimRig,
    receiver: &WebhookReceiver,
    kills: &[f64],
    stops: &[f64],
    log: &str,
) -> BTreeMap<String, Vec<f64>> {
    assert_eq!(receiver.refused_signatures(), 0);
    let accepted = receiver.accepted();
    let mut by_key: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for request in &accepted {
        assert_eq!(request.json["id"], request.idempotency_key.as_str(), "{request:#?}");
        by_key.entry(request.idempotency_key.clone()).or_default().push(request.received_at);
    }
    for arrivals in by_key.values_mut() {
        arrivals.sort_by(f64::total_cmp);
    }
    let outbox = rig.store.outbox(rig.id.as_str()).await.unwrap();
    let of_kind = |kind: &str| outbox.iter().filter(|n| n.kind == kind).count();
    assert_eq!(of_kind("completion"), ACCOUNTS, "one completion notice per account: {outbox:#?}");
    assert_eq!(of_kind("start"), ACCOUNTS, "one start notice per customer: {outbox:#?}");
    let sent: Vec<_> = outbox.iter().filter(|n| n.skipped_at.is_none()).collect();
    let window = window().as_secs_f64();
    let early = EARLY.as_secs_f64();
    let mut resent = 0;
    for notice in &sent {
        let id = notice.message_id.as_str();
        let arrivals = by_key.get(id).cloned().unwrap_or_default();
        assert!(!arrivals.is_empty(), "{id} never arrived: {notice:#?}");
        assert!(notice.sent_at.is_some(), "{id} arrived but is not marked sent: {notice:#?}");
        let extra = arrivals.len() - 1;
        if extra == 0 {
            continue;
        }
        resent += extra;
        eprintln!("{id}: {} copies, {} resend(s) on record", arrivals.len(), notice.resends);
        // Each copy but the last was cut by its own SIGKILL: one landing after it arrived (or a
        // moment before, while it sat in the socket) and within the answer delay and the
        // commit's margin after, before the next copy.
        let mut unexplained = Vec::new();
        for pair in arrivals.windows(2) {
            let (copy, next) = (pair[0], pair[1]);
            if !kills.iter().any(|k| *k >= copy - early && *k <= (copy + window).min(next)) {
                unexplained.push(copy);
            }
        }
        assert!(
            unexplained.is_empty(),
            "{id} arrived {} times at {arrivals:?}; no SIGKILL within {:?} after the copies at {unexplained:?} (SIGKILLs at {kills:?}, SIGTERMs at {stops:?}); log:\n{log}",
            arrivals.len(),
            self::window(),
        );
        assert!(notice.resends as usize >= extra, "{id} arrived {} times: {notice:#?}", arrivals.len());
    }
    let known: Vec<&str> = sent.iter().map(|n| n.message_id.as_str()).collect();
    let strangers: Vec<&String> = by_key.keys().filter(|k| !known.contains(&k.as_str())).collect();
    assert!(strangers.is_empty(), "arrived, but not an unskipped notice of the outbox: {strangers:?}");
    let resends: i32 = outbox.iter().map(|n| n.resends).sum();
    eprintln!(
        "{} notice(s) sent ({} skipped), {} request(s) accepted: {resent} same-key copy(ies); the outbox counts {resends} resend(s)",
        sent.len(),
        outbox.len() - sent.len(),
        accepted.len()
    );
    by_key
}

/// How long after a copy's arrival a SIGKILL can still cut it: the longest answer delay and the
/// daemon's commit.
fn window() -> Duration {
    ANSWER_DELAY_MAX + COMMIT_MARGIN
}

/// True once every account is done (its completion notice sent or skipped) and every notice
/// in the outbox is sent or skipped.
async fn finished(rig: &SimRig) -> bool {
    let accounts = rig.store.accounts(rig.id.as_str()).await.unwrap();
    let outbox = rig.store.outbox(rig.id.as_str()).await.unwrap();
    accounts.iter().all(|a| a.state == "done")
        && outbox.iter().all(|n| n.sent_at.is_some() || n.skipped_at.is_some())
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn seed(default: u64) -> u64 {
    let seed = std::env::var("SIIRTO_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    eprintln!("webhook crash test seed {seed} (SIIRTO_CRASH_SEED={seed} replays it)");
    seed
}
