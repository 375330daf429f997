//! A lease lost while its step runs: the engine (in-process, on the one rig) is sending a notice
//! to an SMTP server that answers EHLO late when another daemon takes the job's lease (the test
//! writes another owner into the job's row, as a claim after an expiry would). The renewal finds
//! it gone and names the taker, the message is not handed over (its lease is checked before the
//! attempt is recorded) and the run counts as a failed attempt, and once that lease has run out
//! the job runs again: the customer gets the notice once, at its first recorded attempt.

use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::support::rig::{Daemon, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_taken_mid_step_cancels_the_step_and_counts_as_an_attempt() {
    let smtp = SmtpServer::start_slow(Duration::from_secs(3), Duration::ZERO);
    let mut options = RigOptions::new("lease-lost", 1);
    options.mail = Mail::Smtp(smtp.addr);
    options.daemon = Some("lease = \"1500ms\"\nidle_poll = \"100ms\"\n".to_owned());
    let rig = SimRig::start(options).await;
    rig.plan_and_start(siirto::demo::DEMO_PLAYBOOK).await;
    let daemon = Daemon::start(rig.engine("honest", 4));

    // Wait for the notice's delivery to be under way: its send job leased, the SMTP server
    // holding back its EHLO answer (nothing is on record before the session is open).
    let url = rig.config.database.replace("sqlite://", "sqlite:");
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let notice = loop {
        let leased: Option<String> = sqlx::query_scalar(
            "SELECT subject FROM jobs WHERE kind = 'send_notice' AND lease_owner = 'honest' \
             AND lease_expires_at IS NOT NULL AND done_at IS NULL ORDER BY id LIMIT 1",
        )
        .fetch_optional(&mut db)
        .await
        .unwrap();
        if let Some(id) = leased {
            break rig.store.notice(id.parse().unwrap()).await.unwrap().unwrap();
        }
        assert!(Instant::now() < deadline, "no delivery started: {:#?}", rig.status().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(notice.delivery_started_at, None, "the session is not open yet: {notice:#?}");
    // Another daemon takes the job over.
    let taken = sqlx::query(
        "UPDATE jobs SET lease_owner = 'thief', lease_token = 1 WHERE kind = 'send_notice' AND subject = $1 AND done_at IS NULL",
    )
    .bind(notice.id.to_string())
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(taken.rows_affected(), 1);

    // The run is cancelled and counted, with the taker named; the job comes back after the
    // taken lease runs out, and the notice goes out once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let jobs = rig.store.jobs(rig.id.as_str()).await.unwrap();
        let job =
            jobs.into_iter().find(|j| j.kind == "send_notice" && j.subject == notice.id.to_string()).unwrap();
        if job.done_at.is_some() {
            break job;
        }
        assert!(Instant::now() < deadline, "the notice's job never finished: {job:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    daemon.stop().await;
    assert_eq!(job.attempts, 1, "the lost lease counted as one attempt: {job:#?}");
    let error = job.last_error.unwrap_or_default();
    assert!(error.contains("lease lost: taken over by daemon thief"), "{error}");
    let delivered: Vec<_> =
        smtp.delivered().into_iter().filter(|d| d.message_id == notice.message_id).collect();
    assert_eq!(delivered.len(), 1, "one copy: {delivered:#?}");
    let notice = rig.store.notice(notice.id).await.unwrap().unwrap();
    // The taken run never recorded an attempt (its session was not open); the one that sent
    // the notice is its only attempt, not a resend.
    assert_eq!((notice.delivery_attempts, notice.resends), (1, 0), "{notice:#?}");
    assert!(notice.sent_at.is_some());
}
