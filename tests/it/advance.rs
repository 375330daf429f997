//! The notices before and during the move, at a real SMTP server: advance and start notices,
//! one of each per customer (a customer with two accounts gets one listing both), in the customer's language from the contracts, the external-DNS
//! paragraph only for the customer it applies to; customer service's briefing; the operators'
//! notice of a held account; and an advance notice never sent when it is too late, even after a
//! long outage of the mail server.

use std::time::Duration;

use siirto::engine::Clock;

use crate::support::rig::{Daemon, Elsewhere, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

const CONTRACT_CONFIG: &str = "[contracts]\nsource = \"csv\"\npath = \"contracts.csv\"\n\n\
                               [contracts.server_names]\nold = [\"old1.example.fi\"]\n";

/// The demo playbook, with advance notices allowed up to `late_after` after their due time.
fn playbook(late_after: &str) -> String {
    let text = include_str!("../../playbooks/demo.toml");
    assert!(text.contains("\n[notices.late_after]\n"), "the demo playbook's notices moved");
    text.replacen(
        "\n[notices.late_after]\n",
        &format!("\n[notices.late_after]\nadvance = \"{late_after}\"\n"),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_customer_is_told_once_in_their_language_with_only_what_applies() {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new("it-advance", 4);
    options.zones_elsewhere.insert(0, Elsewhere::TheirDns);
    options.public_dns = true;
    options.mail = Mail::Smtp(smtp.addr);
    // Customer service and the operators have addresses (these lines end the [mail] table).
    options.extra_config =
        format!("staff = [\"cs@hosting.test\"]\noperators = [\"ops@hosting.test\"]\n\n{CONTRACT_CONFIG}");
    let rig = SimRig::start(options).await;
    let a = rig.hosts.accounts.clone();
    // Account 3's restore fails every time: it is held, and the operators are told why.
    assert!(
        rig.hosts.source.set_fail_restore(&a[3].user, Some("Restore failed: disk quota exceeded".into()))
    );
    // Customer C1 holds accounts 1 and 2 and reads Finnish; C0 (account 0, on external DNS)
    // English; account 3 has no contract: its contact address is the customer.
    let csv = format!(
        "customer_id,name,email,language,server,user\n\
         C0,Oma Oy,{e0},English,old1.example.fi,{u0}\n\
         C1,Kukka Oy,{e1},fi,old1.example.fi,{u1}\n\
         C1,Kukka Oy,{e1},fi,old1.example.fi,{u2}\n",
        e0 = a[0].email,
        u0 = a[0].user,
        e1 = a[1].email,
        u1 = a[1].user,
        u2 = a[2].user,
    );
    std::fs::write(rig.dir.path().join("contracts.csv"), csv).unwrap();
    let text = playbook("15d");
    // The cutover an hour from now: customer service is briefed at once (the day before has
    // come), the customers are told in advance, and nothing moves until the clock gets there.
    let cutover = rig.clock.now() + chrono::Duration::hours(1);
    let plan = rig.plan_with_cutover(&text, cutover).await;
    assert_eq!(plan.counts.accounts, 4);
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine("advance", 4));
    let id = rig.id.clone();
    let delivered = smtp.wait_for(3 + 1, Duration::from_secs(60)).await;
    assert!(
        delivered
            .iter()
            .all(|d| d.message_id.starts_with("<advance.") || d.message_id.starts_with("<staff."))
    );
    let status = rig.status().await;
    assert_eq!(status.accounts_by_state.get("pending"), Some(&4), "nothing moves before the cutover");
    rig.clock.advance(Duration::from_secs(3600));
    let advance = |user: &str| {
        let message_id = format!("<advance.{user}.{id}@siirto>");
        delivered.iter().find(|d| d.message_id == message_id).cloned().unwrap_or_else(|| {
            panic!("no {message_id}; got {:?}", delivered.iter().map(|d| &d.message_id).collect::<Vec<_>>())
        })
    };

    // C1: one notice, in Finnish, listing both accounts; nothing about external DNS.
    let c1 = advance(a[1].user.as_str());
    assert_eq!(c1.rcpt_tos, vec![a[1].email.clone()]);
    let body = c1.body.clone().unwrap_or_default();
    assert!(c1.subject.contains("siirtyy uudelle palvelimelle"), "{}", c1.subject);
    assert!(body.starts_with("Hei Kukka Oy,"), "{body}");
    for n in [1, 2] {
        assert!(
            body.contains(&format!("tili {}: {}", a[n].user, a[n].domain)),
            "account {n} missing:\n{body}"
        );
    }
    assert!(!body.contains("DNS-tietoja"), "{body}");
    // C0: English, and told that their external DNS will need changes, naming the domain.
    let c0 = advance(a[0].user.as_str());
    let body = c0.body.clone().unwrap_or_default();
    assert!(body.starts_with("Hello Oma Oy,"), "{body}");
    assert!(body.contains("kept at another DNS host"), "{body}");
    assert!(body.contains(&format!("  - {}", a[0].domain)), "{body}");
    assert!(!body.contains(a[1].domain.as_str()), "only C0's own domains:\n{body}");
    // Account 3: English (the config's default), no external-DNS paragraph.
    let lone = advance(a[3].user.as_str());
    let body = lone.body.clone().unwrap_or_default();
    assert!(body.starts_with("Hello,"), "{body}");
    assert!(!body.contains("another DNS host"), "{body}");
    assert!(body.contains(&format!("account {}: {}", a[3].user, a[3].domain)), "{body}");

    // Exactly one advance, one start and one completion notice per customer (C1's two accounts
    // share theirs; the held account's customer has none), one briefing for customer service
    // and one held notice for the operators.
    rig.wait_for("the cutover", Duration::from_secs(180), |s| s.state == "cut_over" && s.held() == 1).await;
    smtp.wait_for(3 + 3 + 2 + 1 + 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.stop().await;
    let delivered = smtp.delivered();
    let count = |prefix: &str| delivered.iter().filter(|d| d.message_id.starts_with(prefix)).count();
    assert_eq!(
        [count("<advance."), count("<start."), count("<completion."), count("<staff."), count("<held.")],
        [3, 3, 2, 1, 1],
        "{:?}",
        delivered.iter().map(|d| &d.message_id).collect::<Vec<_>>()
    );
    // Customer service: what moves, who must act themselves, where to watch.
    let staff = delivered.iter().find(|d| d.message_id.starts_with("<staff.")).unwrap();
    assert_eq!(staff.rcpt_tos, ["cs@hosting.test"]);
    let body = staff.body.clone().unwrap_or_default();
    let words = body.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("moves 4 accounts of 3 customers"), "{body}");
    assert!(body.contains(&format!("Oma Oy: {}", a[0].domain)), "{body}");
    assert!(body.contains(&format!("siirto status {id}")), "{body}");
    // The operators: which account, why, and what clears it.
    let held = delivered.iter().find(|d| d.message_id.starts_with("<held.")).unwrap();
    assert_eq!(held.rcpt_tos, ["ops@hosting.test"]);
    let body = held.body.clone().unwrap_or_default();
    assert!(held.subject.contains(a[3].user.as_str()), "{}", held.subject);
    assert!(body.contains("disk quota exceeded"), "{body}");
    assert!(body.contains(&format!("siirto retry {id} {}", a[3].user)), "{body}");
    // C1's completion notice: one, in Finnish, listing both of its accounts, in text and in
    // HTML; C0's tells the records to change at their DNS host, C1's does not.
    let c1_done: Vec<_> = delivered
        .iter()
        .filter(|d| d.message_id.starts_with(&format!("<completion.{}.2.", a[1].user)))
        .collect();
    assert_eq!(c1_done.len(), 1, "one completion notice for C1's two accounts");
    let (text, html) =
        (c1_done[0].body.clone().unwrap_or_default(), c1_done[0].html.clone().unwrap_or_default());
    assert!(text.starts_with("Hei Kukka Oy,"), "{text}");
    assert!(html.contains("<html lang=\"fi\">"), "{html}");
    for n in [1, 2] {
        assert!(
            text.contains(&format!("tili {}: {}", a[n].user, a[n].domain)),
            "account {n} missing:\n{text}"
        );
        assert!(html.contains(a[n].user.as_str()) && html.contains(a[n].domain.as_str()), "{html}");
    }
    assert!(!text.contains("DNS") && !html.contains("DNS"), "nothing about DNS for C1:\n{text}");
    let c0_done = delivered
        .iter()
        .find(|d| d.message_id == format!("<completion.{}.{id}@siirto>", a[0].user))
        .expect("C0's completion notice");
    let text = c0_done.body.clone().unwrap_or_default();
    assert!(text.contains("kept at another DNS host") && text.contains(a[0].domain.as_str()), "{text}");
    // C1's start notice: one, in Finnish, listing both of its accounts.
    let start = delivered
        .iter()
        .find(|d| d.message_id == format!("<start.{}.{id}@siirto>", a[1].user))
        .expect("C1's start notice");
    let body = start.body.clone().unwrap_or_default();
    assert!(start.subject.contains("siirto palvelimelle"), "{}", start.subject);
    for n in [1, 2] {
        assert!(
            body.contains(&format!("tili {}: {}", a[n].user, a[n].domain)),
            "account {n} missing:\n{body}"
        );
    }
    let c0_start = delivered
        .iter()
        .find(|d| d.message_id == format!("<start.{}.{id}@siirto>", a[0].user))
        .expect("C0's start notice");
    assert!(c0_start.body.clone().unwrap_or_default().contains("records to change at your DNS host"));
    // `siirto notices preview` prints C1's advance notice in English on request, sending and
    // writing nothing.
    let before = rig.store.outbox(id.as_str()).await.unwrap().len();
    let config = rig.dir.path().join("siirto.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args(["notices", "preview", id.as_str(), "--kind", "advance", "--customer", a[2].user.as_str()])
        .args(["--lang", "en", "--config", config.to_str().unwrap()])
        .env_remove("SIIRTO_CONFIG")
        .output()
        .expect("run siirto");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.starts_with(&format!("--- advance notice to {} ---", a[1].email)), "{printed}");
    assert!(printed.contains("Hello Kukka Oy,"), "{printed}");
    for n in [1, 2] {
        assert!(printed.contains(&format!("account {}: {}", a[n].user, a[n].domain)), "{printed}");
    }
    assert!(!printed.contains(a[0].domain.as_str()) && !printed.contains("another DNS host"), "{printed}");
    assert_eq!(rig.store.outbox(id.as_str()).await.unwrap().len(), before, "a preview writes nothing");
    assert_eq!(smtp.delivered().len(), delivered.len(), "a preview sends nothing");
    let events = rig.events().await;
    let written = events.iter().find(|e| e.kind == "advance_notices").expect("the advance_notices event");
    assert!(
        written.detail.contains("\"customers\":3") && written.detail.contains("\"queued\":3"),
        "{}",
        written.detail
    );
}

/// Two accounts planned with a cutover of now and started while their mail server is down,
/// with a retry budget that outlasts any outage (these tests are about lateness, not about the
/// budget). Advance notices are due 14 days before the cutover and allowed 15: sendable for
/// another day.
async fn started_with_the_mail_server_down(id: &'static str) -> (SmtpServer, SimRig) {
    let mut smtp = SmtpServer::start();
    let mut options = RigOptions::new(id, 2);
    options.mail = Mail::Smtp(smtp.addr);
    let rig = SimRig::start(options).await;
    smtp.stop();
    let text = playbook("15d").replace(
        "max_attempts = 6\nbase_delay = \"250ms\"\nmax_delay = \"4s\"",
        "max_attempts = 100\nbase_delay = \"100ms\"\nmax_delay = \"300ms\"",
    );
    rig.plan_and_start(&text).await;
    (smtp, rig)
}

/// Due while the mail server is down, and still unsent when its lateness limit passes (the
/// clock moved on two days, as after a long stop): skipped on record, never sent; the start
/// and completion notices still go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advance_notice_past_its_limit_is_skipped_not_sent_in_a_burst() {
    let (mut smtp, rig) = started_with_the_mail_server_down("it-advance-late").await;
    let daemon = Daemon::start(rig.engine("advance-late", 4));
    rig.wait_for("an advance notice to fail", Duration::from_secs(60), |s| {
        s.failing_jobs.iter().any(|j| j.kind == "send_notice")
    })
    .await;
    rig.clock.advance(Duration::from_secs(2 * 86_400));
    smtp.restart();
    let status = rig
        .wait_for("the advance notices to be skipped", Duration::from_secs(120), |s| {
            s.notices_skipped_late == 2
        })
        .await;
    assert_eq!(status.notices_skipped_late, 2);
    rig.wait_for("the start and completion notices", Duration::from_secs(180), |s| s.notices_sent >= 4).await;
    daemon.stop().await;
    let delivered = smtp.delivered();
    assert!(!delivered.iter().any(|d| d.message_id.starts_with("<advance.")), "{delivered:#?}");
    let outbox = rig.store.outbox(rig.id.as_str()).await.unwrap();
    let skipped: Vec<_> = outbox.iter().filter(|n| n.kind == "advance").collect();
    assert_eq!(skipped.len(), 2);
    for notice in skipped {
        assert!(notice.sent_at.is_none() && notice.skipped_at.is_some(), "{notice:?}");
        assert!(notice.skip_reason.as_deref().unwrap_or_default().contains("too late"), "{notice:?}");
    }
    let events = rig.events().await;
    assert_eq!(events.iter().filter(|e| e.kind == "notice_skipped_late").count(), 2);

    // Staff see it: `siirto notices list` names the skipped ones and why, and the sent ones.
    let list = |extra: &[&str]| {
        let config = rig.dir.path().join("siirto.toml");
        let mut args =
            vec!["notices", "list", rig.id.as_str(), "--json", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
            .args(&args)
            .env_remove("SIIRTO_CONFIG")
            .output()
            .expect("run siirto");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let skipped = list(&["--state", "skipped_late"]);
    let skipped = skipped.as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{skipped:#?}");
    for notice in skipped {
        assert_eq!(notice["kind"], "advance");
        assert!(notice["skip_reason"].as_str().unwrap().contains("too late"), "{notice}");
        assert!(notice["sent_at"].is_null());
    }
    let all = list(&[]);
    let sent: Vec<&serde_json::Value> =
        all.as_array().unwrap().iter().filter(|n| n["state"] == "sent").collect();
    let mut kinds: Vec<&str> = sent.iter().map(|n| n["kind"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["completion", "completion", "start", "start"], "{all:#}");
}

/// A reschedule after the advance notices went out: the customer already told gets a
/// correction with the new date and the reason; the customer whose notice could not be
/// delivered yet (their server answers 451) gets the new date only — their notice is re-dated in
/// the outbox, and no correction is written for them. Done through the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_corrects_only_those_already_told() {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new("it-reschedule", 2);
    options.mail = Mail::Smtp(smtp.addr);
    options.source.accounts[1].email = "tempfail@kukka-0002.test".into();
    let rig = SimRig::start(options).await;
    let a = rig.hosts.accounts.clone();
    let cutover = rig.clock.now() + chrono::Duration::hours(2);
    rig.plan_with_cutover(&playbook("15d"), cutover).await;
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine("reschedule", 4));
    let id = rig.id.clone();
    let first = format!("<advance.{}.{id}@siirto>", a[0].user);
    smtp.wait_for(1, Duration::from_secs(60)).await;
    assert!(smtp.delivered().iter().any(|d| d.message_id == first));
    rig.wait_for("the second advance notice to fail", Duration::from_secs(60), |s| {
        s.failing_jobs.iter().any(|j| j.kind == "send_notice" && j.last_error.contains("451"))
    })
    .await;
    daemon.stop().await;

    let new_cutover = cutover + chrono::Duration::days(3);
    let config = rig.dir.path().join("siirto.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args([
            "reschedule",
            id.as_str(),
            "--cutover",
            &new_cutover.to_rfc3339(),
            "--reason",
            "the new server's disks arrive late",
        ])
        .args(["--config", config.to_str().unwrap()])
        .env_remove("SIIRTO_CONFIG")
        .output()
        .expect("run siirto");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("customers told the old date get a correction"), "{said}");
    let status = rig.status().await;
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&status.cutover_at).unwrap().timestamp(),
        new_cutover.timestamp()
    );

    let daemon = Daemon::start(rig.engine("reschedule", 4));
    let correction_id = format!("<correction.{}.{}.{id}@siirto>", a[0].user, new_cutover.timestamp_millis());
    let delivered = smtp.wait_for(2, Duration::from_secs(60)).await;
    let correction = delivered.iter().find(|d| d.message_id == correction_id).unwrap_or_else(|| {
        panic!("no {correction_id}: {:?}", delivered.iter().map(|d| &d.message_id).collect::<Vec<_>>())
    });
    assert_eq!(correction.rcpt_tos, vec![a[0].email.clone()]);
    let body = correction.body.clone().unwrap_or_default();
    let words = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let (old_date, new_date) =
        (cutover.format("%Y-%m-%d").to_string(), new_cutover.format("%Y-%m-%d").to_string());
    assert!(words.contains(&format!("announced for {old_date}")), "{body}");
    assert!(words.contains(&format!("now takes place on {new_date}")), "{body}");
    assert!(words.contains("Why: the new server's disks arrive late"), "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.stop().await;

    // The customer not told yet: no correction; their advance notice now says the new date.
    let outbox = rig.store.outbox(id.as_str()).await.unwrap();
    let corrections: Vec<_> = outbox.iter().filter(|n| n.kind == "correction").collect();
    assert_eq!(corrections.len(), 1, "{corrections:#?}");
    let pending = outbox
        .iter()
        .find(|n| n.kind == "advance" && n.message_id == format!("<advance.{}.{id}@siirto>", a[1].user))
        .unwrap();
    assert!(pending.sent_at.is_none());
    assert!(pending.subject.contains(&new_date) && !pending.body.contains(&old_date), "{pending:#?}");
    let events = rig.events().await;
    let rescheduled = events.iter().find(|e| e.kind == "rescheduled").expect("the rescheduled event");
    assert!(rescheduled.detail.contains("disks arrive late"), "{}", rescheduled.detail);
    let corrected = events.iter().find(|e| e.kind == "advance_notices_corrected").unwrap();
    assert!(
        corrected.detail.contains("\"redated\":1") && corrected.detail.contains("\"corrected\":1"),
        "{}",
        corrected.detail
    );
}

/// A customer whose address the mail server refuses for good (550): their advance, start and
/// completion notices are marked failed with the server's words, customer service is told to call them,
/// and their account still finishes its move (not held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notice_is_failed_and_customer_service_is_told() {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new("it-refused", 2);
    options.mail = Mail::Smtp(smtp.addr);
    options.source.accounts[1].email = "reject@kukka-0002.test".into();
    options.extra_config = "staff = [\"cs@hosting.test\"]\n".to_owned();
    let rig = SimRig::start(options).await;
    let a = rig.hosts.accounts.clone();
    rig.plan_and_start(&playbook("15d")).await;
    let daemon = Daemon::start(rig.engine("refused", 4));
    let status = rig
        .wait_for("both accounts done", Duration::from_secs(180), |s| {
            s.accounts.iter().all(|acc| acc.state == "done")
        })
        .await;
    assert_eq!(status.held(), 0, "{status:#?}");
    // To the refused customer: nothing delivered. Customer service: one notice per failed one.
    let delivered = smtp.wait_for(3 + 3, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.stop().await;
    assert!(!delivered.iter().any(|d| d.rcpt_tos.iter().any(|r| r.starts_with("reject@"))));
    let to_staff: Vec<_> = delivered.iter().filter(|d| d.message_id.starts_with("<notice_failed.")).collect();
    assert_eq!(to_staff.len(), 3, "{:?}", delivered.iter().map(|d| &d.message_id).collect::<Vec<_>>());
    for message in &to_staff {
        assert_eq!(message.rcpt_tos, ["cs@hosting.test"]);
        let body = message.body.clone().unwrap_or_default();
        assert!(body.contains("reject@kukka-0002.test") && body.contains("550"), "{body}");
        assert!(body.contains("Please call them"), "{body}");
    }
    let outbox = rig.store.outbox(rig.id.as_str()).await.unwrap();
    let failed: Vec<_> = outbox.iter().filter(|n| n.failed_at.is_some()).collect();
    let mut kinds: Vec<&str> = failed.iter().map(|n| n.kind.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["advance", "completion", "start"], "{outbox:#?}");
    assert!(
        failed.iter().all(|n| n.sent_at.is_none() && n.last_error.as_deref().unwrap_or("").contains("550"))
    );
    let events = rig.events().await;
    let account_failed = events
        .iter()
        .find(|e| e.kind == "notice_failed" && e.account.as_deref() == Some(a[1].user.as_str()))
        .expect("the account's notice_failed event");
    assert!(account_failed.detail.contains("550"), "{}", account_failed.detail);
}

/// Paused while its notices are going out (one a second, the channel's rate limit), then resumed: nothing new
/// goes out while it is paused (a send already talking to the server may finish), the move
/// itself waits, and after the resume every notice arrives exactly once — none resent, none
/// lost (knadh/listmonk#2070: a resumed campaign re-sent to everyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_never_resend_a_notice() {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new("it-pause-notices", 4);
    options.mail = Mail::Smtp(smtp.addr);
    // One notice a second: the pause comes while the advance notices are still going out.
    options.extra_config = "max_per_second = 1\n".to_owned();
    let rig = SimRig::start(options).await;
    let cutover = rig.clock.now() + chrono::Duration::hours(1);
    rig.plan_with_cutover(&playbook("15d"), cutover).await;
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    // One worker: at most one notice is on its way (waiting for its slot) when the pause comes.
    let daemon = Daemon::start(rig.engine("pause-notices", 1));
    let id = rig.id.clone();
    let config = rig.dir.path().join("siirto.toml");
    let siirto = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
            .args(args)
            .args(["--config", config.to_str().unwrap()])
            .env_remove("SIIRTO_CONFIG")
            .output()
            .expect("run siirto");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    smtp.wait_for(1, Duration::from_secs(60)).await;
    let world = siirto::world::World::from_config(&rig.config).unwrap();
    siirto::ops::pause(&rig.store, &world, &id, "test", rig.clock.now()).await.unwrap();
    rig.clock.advance(Duration::from_secs(3600));
    // What was on its way when the pause came may finish (within its one-second slot); then
    // nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_pause = smtp.delivered().len();
    assert!(at_pause < 4, "the pause came while advance notices were still going out");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.delivered().len(), at_pause, "nothing goes out while paused");
    assert_eq!(rig.status().await.accounts_by_state.get("pending"), Some(&4), "nothing moves while paused");
    siirto(&["resume", id.as_str()]);
    rig.wait_for("the cutover", Duration::from_secs(180), |s| s.state == "cut_over" && s.arrived() == 4)
        .await;
    // Four customers: an advance, a start and a completion notice each.
    smtp.wait_for(12, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.stop().await;
    let delivered = smtp.delivered();
    let mut ids: Vec<&str> = delivered.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids.len(), 12, "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 12, "each notice once");
    let outbox = rig.store.outbox(id.as_str()).await.unwrap();
    assert!(outbox.iter().all(|n| n.resends == 0 && n.sent_at.is_some()), "{outbox:#?}");
}

/// A start notice still unsent when its own lateness limit passes (`[notices.late_after] start`,
/// 1d: the mail server was down and the clock moved on two days) is skipped on record, never
/// sent; the completion notice written for the same customer goes out once the server is back,
/// not held behind the skipped one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_notice_past_its_limit_is_skipped_and_does_not_hold_the_completion() {
    let (mut smtp, rig) = started_with_the_mail_server_down("it-start-late").await;
    let daemon = Daemon::start(rig.engine("start-late", 4));
    let id = rig.id.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let outbox = rig.store.outbox(id.as_str()).await.unwrap();
        if outbox.iter().filter(|n| n.kind == "start").count() == 2 {
            assert!(outbox.iter().all(|n| n.sent_at.is_none()), "the server is down");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no start notices written: {outbox:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.clock.advance(Duration::from_secs(2 * 86_400));
    smtp.restart();
    for account in &rig.hosts.accounts {
        smtp.wait_for_message(
            &format!("<completion.{}.{id}@siirto>", account.user),
            Duration::from_secs(120),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.stop().await;
    let delivered = smtp.delivered();
    assert!(!delivered.iter().any(|d| d.message_id.starts_with("<start.")), "{delivered:#?}");
    let outbox = rig.store.outbox(id.as_str()).await.unwrap();
    for notice in outbox.iter().filter(|n| n.kind == "start") {
        assert!(notice.sent_at.is_none() && notice.skipped_at.is_some(), "{notice:#?}");
        let reason = notice.skip_reason.as_deref().unwrap_or_default();
        assert!(reason.contains("notices.late_after.start (1d)"), "{reason}");
    }
}
