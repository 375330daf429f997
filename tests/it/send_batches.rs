//! A campaign's notices as the daemon sends them: many send jobs taken at once by one worker
//! and sent over one kept SMTP session, their attempts recorded together and their sent-marks
//! committed in groups. Counted at a real SMTP server: every notice arrives once, those to one
//! reader in the order they were written, and a recipient the server refuses fails that notice
//! alone, the rest of its batch going on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use siirto::engine::Clock;
use siirto::store::{NewJob, NewNotice};

use crate::support::rig::{Daemon, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

/// Writes `n` notices (`<batch.N@test>`, notice N to `reader(N)`) and their send jobs, due now,
/// as a campaign is written: the ids, in order.
async fn write_campaign(rig: &SimRig, n: usize, reader: impl Fn(usize) -> String) -> Vec<i64> {
    let now = siirto::domain::to_millis(rig.clock.now());
    let notices: Vec<NewNotice> = (0..n)
        .map(|n| NewNotice {
            migration_id: rig.id.to_string(),
            account: None,
            kind: "start".to_owned(),
            dedupe_key: format!("batch-test:{n}"),
            message_id: format!("<batch.{n}@test>"),
            recipients: serde_json::to_string(&[reader(n)]).unwrap(),
            subject: format!("Notice {n}"),
            body: format!("Hello, this is notice {n}.\n"),
            html: None,
            created_at: now,
        })
        .collect();
    let mut tx = rig.store.begin().await.unwrap();
    let ids: Vec<i64> = tx.enqueue_notices(&notices).await.unwrap().into_iter().map(Option::unwrap).collect();
    let jobs: Vec<NewJob> = ids
        .iter()
        .map(|id| NewJob {
            migration_id: rig.id.to_string(),
            kind: "send_notice".to_owned(),
            subject: id.to_string(),
            payload: "{}".to_owned(),
            due_at: now,
            dedupe_key: format!("send_notice:{id}"),
        })
        .collect();
    assert_eq!(tx.schedule_jobs(&jobs).await.unwrap(), n as u64);
    tx.commit().await.unwrap();
    ids
}

/// A rig whose migration has started, its notices going to `smtp`.
async fn started(id: &'static str, smtp: &SmtpServer) -> SimRig {
    let mut options = RigOptions::new(id, 2);
    options.mail = Mail::Smtp(smtp.addr);
    let rig = SimRig::start(options).await;
    let cutover = rig.clock.now() + chrono::Duration::hours(1);
    rig.plan_with_cutover(include_str!("../../playbooks/demo.toml"), cutover).await;
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    rig
}

/// The number in a test notice's Message-ID.
fn number(message_id: &str) -> usize {
    message_id.trim_start_matches("<batch.").trim_end_matches("@test>").parse().unwrap()
}

/// Notices written at once: more than one worker's batch.
const NOTICES: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_goes_out_once_each_in_order_over_kept_sessions() {
    let smtp = SmtpServer::start();
    let rig = started("it-send-batches", &smtp).await;

    // Three readers in turn, and one the server refuses (550) in the middle.
    let reader = |n: usize| match n {
        75 => "reject@example.fi".to_owned(),
        n => format!("reader{}@example.fi", n % 3),
    };
    let ids = write_campaign(&rig, NOTICES, reader).await;

    // One worker: its batches go out one after the other, each over one session.
    let daemon = Daemon::start(rig.engine("send-batches", 1));
    for n in (0..NOTICES).filter(|n| *n != 75) {
        smtp.wait_for_message(&format!("<batch.{n}@test>"), Duration::from_secs(120)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let outbox = loop {
        let outbox = rig.store.outbox(rig.id.as_str()).await.unwrap();
        let ours: Vec<_> = outbox.into_iter().filter(|n| ids.contains(&n.id)).collect();
        if ours.iter().all(|n| n.sent_at.is_some() || n.failed_at.is_some()) {
            break ours;
        }
        assert!(std::time::Instant::now() < deadline, "notices still unsent: {ours:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemon.stop().await;

    let delivered: Vec<_> =
        smtp.delivered().into_iter().filter(|d| d.message_id.starts_with("<batch.")).collect();
    assert_eq!(delivered.len(), NOTICES - 1, "each once");
    let unique: HashSet<&str> = delivered.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(unique.len(), NOTICES - 1, "none twice");
    // Each reader's notices in the order they were written.
    let mut last: HashMap<String, usize> = HashMap::new();
    for d in &delivered {
        let n = number(&d.message_id);
        if let Some(before) = last.insert(reader(n), n) {
            assert!(before < n, "{} arrived after notice {n} to the same reader", before);
        }
    }
    // Kept sessions: a few, not one per message (a new one after the refusal aborted one).
    let sessions: HashSet<_> = delivered.iter().map(|d| d.peer.clone()).collect();
    assert!(sessions.len() <= 4, "{} sessions for {} messages", sessions.len(), delivered.len());
    // The refused notice failed alone, with the server's words; every other one is sent,
    // once, no attempt of any of them left open or counted twice.
    let refused = outbox.iter().find(|n| n.id == ids[75]).unwrap();
    assert!(refused.failed_at.is_some() && refused.sent_at.is_none(), "{refused:#?}");
    assert!(refused.last_error.as_deref().unwrap_or_default().contains("550"), "{refused:#?}");
    for notice in outbox.iter().filter(|n| n.id != ids[75]) {
        assert_eq!(
            (notice.sent_at.is_some(), notice.delivery_attempts, notice.resends, notice.delivery_started_at),
            (true, 1, 0, None),
            "{notice:#?}"
        );
    }
    let jobs = rig.store.jobs(rig.id.as_str()).await.unwrap();
    let ours: Vec<_> = jobs
        .iter()
        .filter(|j| j.kind == "send_notice" && ids.contains(&j.subject.parse().unwrap_or(0)))
        .collect();
    assert_eq!(ours.len(), NOTICES);
    assert!(ours.iter().all(|j| j.done_at.is_some() && j.attempts == 0), "{ours:#?}");
}

/// The mail server killed in the middle of a campaign (four workers' sessions broken mid-batch,
/// connections refused for a second) and started again: every notice arrives, each reader's in
/// the order they were written, and a copy beyond the first only with the same Message-ID and
/// on record as a resend (a message the server took as it died, its 250 never read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_killed_mid_campaign_loses_nothing_and_keeps_each_readers_order() {
    const CAMPAIGN: usize = 1_500;
    let mut smtp = SmtpServer::start();
    let rig = started("it-send-batches-kill", &smtp).await;
    let reader = |n: usize| format!("reader{}@example.fi", n % 5);
    let ids = write_campaign(&rig, CAMPAIGN, reader).await;
    let daemon = Daemon::start(rig.engine("send-batches-kill", 4));
    let ours =
        |smtp: &SmtpServer| smtp.delivered().into_iter().filter(|d| d.message_id.starts_with("<batch."));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ours(&smtp).count() < 300 {
        assert!(std::time::Instant::now() < deadline, "the campaign did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    smtp.stop();
    let at_kill = ours(&smtp).count();
    assert!(at_kill < CAMPAIGN, "killed mid-campaign: {at_kill} of {CAMPAIGN} in");
    tokio::time::sleep(Duration::from_secs(1)).await;
    smtp.restart();
    for n in 0..CAMPAIGN {
        smtp.wait_for_message(&format!("<batch.{n}@test>"), Duration::from_secs(120)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let outbox = loop {
        let outbox: Vec<_> = rig
            .store
            .outbox(rig.id.as_str())
            .await
            .unwrap()
            .into_iter()
            .filter(|n| ids.contains(&n.id))
            .collect();
        if outbox.iter().all(|n| n.sent_at.is_some()) {
            break outbox;
        }
        assert!(std::time::Instant::now() < deadline, "sent-marks missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemon.stop().await;

    let delivered: Vec<_> = ours(&smtp).collect();
    let mut copies: HashMap<usize, usize> = HashMap::new();
    for d in &delivered {
        *copies.entry(number(&d.message_id)).or_default() += 1;
    }
    assert_eq!(copies.len(), CAMPAIGN, "every notice arrived");
    for (notice, id) in ids.iter().enumerate() {
        let row = outbox.iter().find(|n| n.id == *id).unwrap();
        let extra = copies[&notice] - 1;
        assert!(
            extra <= row.resends as usize,
            "notice {notice}: {extra} extra copies, {} resends on record",
            row.resends
        );
        assert!(row.failed_at.is_none() && row.skipped_at.is_none(), "{row:#?}");
    }
    // Each reader's notices, by first arrival, in the order they were written.
    let mut seen = HashSet::new();
    let mut last: HashMap<String, usize> = HashMap::new();
    for d in &delivered {
        let n = number(&d.message_id);
        if !seen.insert(n) {
            continue;
        }
        if let Some(before) = last.insert(reader(n), n) {
            assert!(before < n, "notice {before} arrived after notice {n} to the same reader");
        }
    }
}
