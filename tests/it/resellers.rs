//! Who hears what, counted at a real SMTP server: a reseller gets one roll-up of exactly its
//! end customers (who hear nothing from us themselves, their completion notices going to the
//! reseller), a customer with three accounts one notice of each kind listing all three, and a
//! notice that bounces after it was accepted (a delivery-status notification in the bounce
//! Maildir, matched by its VERP return path) ends `bounced`, with customer service told.

use std::time::Duration;

use siirto::engine::Clock;

use crate::support::rig::{Daemon, Mail, RigOptions, SimRig};
use crate::support::smtp::{Delivered, SmtpServer};

const CONTRACT_CONFIG: &str = "[contracts]\nsource = \"csv\"\npath = \"contracts.csv\"\n\n\
                               [contracts.server_names]\nold = [\"old1.example.fi\"]\n";

/// The demo playbook with its resellers' customers told through the reseller, and advance
/// notices allowed 15 days after their due time (the cutover is an hour away).
fn playbook() -> String {
    let text = include_str!("../../playbooks/demo.toml");
    assert!(
        text.contains("\nreseller_customers = \"direct\"\n") && text.contains("\n[notices.late_after]\n")
    );
    text.replacen("\nreseller_customers = \"direct\"\n", "\nreseller_customers = \"reseller\"\n", 1).replacen(
        "\n[notices.late_after]\n",
        "\n[notices.late_after]\nadvance = \"15d\"\n",
        1,
    )
}

/// A delivery-status notification as Postfix returns one to the return path `to`, for the
/// message `message_id` sent to `recipient`, whose mailbox is full.
fn dsn(to: &str, recipient: &str, message_id: &str) -> String {
    format!(
        "Return-Path: <>\r\n\
         Delivered-To: {to}\r\n\
         From: MAILER-DAEMON@mx.customer.test (Mail Delivery System)\r\n\
         To: {to}\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n\
         \r\n\
         --B1\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         \r\n\
         --B1\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; mx.customer.test\r\n\
         \r\n\
         Final-Recipient: rfc822; {recipient}\r\n\
         Action: failed\r\n\
         Status: 5.2.2\r\n\
         Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n\
         \r\n\
         --B1\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         Message-ID: {message_id}\r\n\
         \r\n\
         --B1--\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseller_gets_one_roll_up_and_a_customer_with_three_accounts_one_notice_of_each_kind() {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new("it-resellers", 10);
    options.mail = Mail::Smtp(smtp.addr);
    // The bounce Maildir is relative to the config's directory (the rig's).
    options.extra_config = format!(
        "staff = [\"cs@hosting.test\"]\nbounce_address = \"bounces@hosting.test\"\n\
         bounce_maildir = \"bounces\"\n\n{CONTRACT_CONFIG}"
    );
    let rig = SimRig::start(options).await;
    let config_path = rig.dir.path().join("siirto.toml");
    let maildir = rig.dir.path().join("bounces");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let a = rig.hosts.accounts.clone();
    // The simulated source's reseller is its first account; it owns every fifth other one.
    let reseller = &a[0];
    let ends: Vec<_> = a.iter().filter(|x| x.owner == reseller.user.as_str()).collect();
    assert_eq!(
        ends.iter().map(|x| x.user.as_str()).collect::<Vec<_>>(),
        [a[4].user.as_str(), a[9].user.as_str()]
    );
    // Customer C1 holds three accounts.
    let csv = format!(
        "customer_id,name,email,language,server,user\n\
         C1,Kukka Oy,{e},en,old1.example.fi,{u1}\n\
         C1,Kukka Oy,{e},en,old1.example.fi,{u2}\n\
         C1,Kukka Oy,{e},en,old1.example.fi,{u3}\n",
        e = a[1].email,
        u1 = a[1].user,
        u2 = a[2].user,
        u3 = a[3].user,
    );
    std::fs::write(rig.dir.path().join("contracts.csv"), csv).unwrap();
    let cutover = rig.clock.now() + chrono::Duration::hours(1);
    let plan = rig.plan_with_cutover(&playbook(), cutover).await;
    assert_eq!(plan.counts.accounts, 10);
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine("resellers", 4));
    let id = rig.id.clone();
    // Advance notices: the 10 accounts are 6 customers (C1's three accounts are one; the
    // reseller's two end customers hear through it) plus one roll-up; and the staff briefing.
    let before = smtp.wait_for(6 + 1 + 1, Duration::from_secs(60)).await;
    rig.clock.advance(Duration::from_secs(3600));
    rig.wait_for("the cutover", Duration::from_secs(240), |s| {
        s.state == "cut_over" && s.accounts_by_state.get("done").copied().unwrap_or(0) == 10
    })
    .await;
    // Start and completion: 6 customers each, and the reseller's end customers' completions
    // to it.
    smtp.wait_for(before.len() + 6 + 6 + 2, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = smtp.delivered();
    let ids = || delivered.iter().map(|d| d.message_id.clone()).collect::<Vec<_>>();
    let count = |prefix: &str| delivered.iter().filter(|d| d.message_id.starts_with(prefix)).count();
    assert_eq!(
        [count("<advance."), count("<reseller."), count("<start."), count("<completion."), count("<staff.")],
        [6, 1, 6, 8, 1],
        "{:?}",
        ids()
    );

    // The roll-up: to the reseller, listing exactly its end customers, their accounts and domains.
    let roll_up: Vec<&Delivered> =
        delivered.iter().filter(|d| d.message_id.starts_with("<reseller.")).collect();
    assert_eq!(roll_up[0].rcpt_tos, std::slice::from_ref(&reseller.email));
    let text = roll_up[0].body.clone().unwrap_or_default();
    for end in &ends {
        assert!(
            text.contains(end.user.as_str()) && text.contains(end.domain.as_str()),
            "{}:\n{text}",
            end.user
        );
        assert!(text.contains(&end.email), "{text}");
    }
    for other in a.iter().filter(|x| !ends.iter().any(|e| e.user == x.user)) {
        assert!(
            !text.contains(&format!("account {}:", other.user)),
            "{} is not the reseller's:\n{text}",
            other.user
        );
    }
    assert!(
        roll_up[0].html.clone().unwrap_or_default().contains("<table"),
        "the roll-up's HTML part has a table"
    );
    // Its end customers hear nothing from us; their completion notices go to the reseller.
    for end in &ends {
        let to_them: Vec<_> = delivered.iter().filter(|d| d.rcpt_tos.contains(&end.email)).collect();
        assert!(to_them.is_empty(), "{} was told directly: {to_them:#?}", end.user);
        let done = delivered
            .iter()
            .find(|d| d.message_id == format!("<completion.{}.{id}@siirto>", end.user))
            .unwrap_or_else(|| panic!("no completion notice for {}: {:?}", end.user, ids()));
        assert_eq!(done.rcpt_tos, std::slice::from_ref(&reseller.email));
        assert!(done.body.clone().unwrap_or_default().contains(end.domain.as_str()));
    }
    // C1: one advance, one start and one completion notice, each listing all three accounts.
    for kind in ["advance", "start", "completion"] {
        let to_c1: Vec<_> = delivered
            .iter()
            .filter(|d| d.message_id.starts_with(&format!("<{kind}.")) && d.rcpt_tos == [a[1].email.clone()])
            .collect();
        assert_eq!(to_c1.len(), 1, "{kind}: {:?}", ids());
        let text = to_c1[0].body.clone().unwrap_or_default();
        for n in [1, 2, 3] {
            assert!(
                text.contains(&format!("account {}: {}", a[n].user, a[n].domain)),
                "{kind}, account {n}:\n{text}"
            );
        }
    }

    // Every notice left with its own return path; C1's completion notice bounces later.
    let outbox = rig.store.outbox(id.as_str()).await.unwrap();
    for d in &delivered {
        let row = outbox.iter().find(|n| n.message_id == d.message_id).expect("an outbox row");
        assert_eq!(d.mail_from, format!("bounces+{}@hosting.test", row.id), "{}", d.message_id);
    }
    let c1_done = delivered
        .iter()
        .find(|d| d.message_id.starts_with(&format!("<completion.{}.3.", a[1].user)))
        .expect("C1's completion notice");
    let notice_id = outbox.iter().find(|n| n.message_id == c1_done.message_id).unwrap().id;
    let file = maildir.join("new").join("1796000000.M1P1.mx");
    std::fs::write(&file, dsn(&c1_done.mail_from, &a[1].email, &c1_done.message_id)).unwrap();
    let staff_told = smtp.wait_for(delivered.len() + 1, Duration::from_secs(30)).await;
    daemon.stop().await;
    let failed_notice =
        staff_told.iter().find(|d| d.message_id.starts_with("<notice_failed.")).expect("staff told");
    assert_eq!(failed_notice.rcpt_tos, ["cs@hosting.test"]);
    let text = failed_notice.body.clone().unwrap_or_default();
    assert!(
        text.contains("bounce") && text.contains("552 5.2.2 Mailbox full") && text.contains(&a[1].email),
        "{text}"
    );
    let row = rig.store.notice(notice_id).await.unwrap().unwrap();
    assert!(row.bounced_at.is_some(), "{row:?}");
    assert!(
        !file.exists() && std::fs::read_dir(maildir.join("cur")).unwrap().count() == 1,
        "read and moved to cur/"
    );
    // `siirto notices preview` prints the roll-up (in Finnish on request) and C1's completion
    // notice as they would be written now.
    let preview = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
            .args(["notices", "preview", id.as_str(), "--config", config_path.to_str().unwrap()])
            .args(args)
            .env_remove("SIIRTO_CONFIG")
            .output()
            .expect("run siirto");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = preview(&["--kind", "reseller", "--lang", "fi"]);
    assert!(shown.starts_with(&format!("--- reseller notice to {} ---", reseller.email)), "{shown}");
    assert!(ends.iter().all(|e| shown.contains(&format!("tili {}: {}", e.user, e.domain))), "{shown}");
    let shown = preview(&["--kind", "completion", "--customer", a[2].user.as_str()]);
    assert!(shown.starts_with(&format!("--- completion notice to {} ---", a[1].email)), "{shown}");
    assert!((1..=3).all(|n| shown.contains(&format!("account {}: {}", a[n].user, a[n].domain))), "{shown}");
    // `siirto notices list --state bounced` shows it, with what the report said.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args([
            "notices",
            "list",
            id.as_str(),
            "--state",
            "bounced",
            "--config",
            config_path.to_str().unwrap(),
        ])
        .env_remove("SIIRTO_CONFIG")
        .output()
        .expect("run siirto");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(shown.lines().filter(|l| l.starts_with('#')).count(), 1, "{shown}");
    assert!(
        shown.contains(&format!("#{notice_id} completion bounced")) && shown.contains("Mailbox full"),
        "{shown}"
    );
}

/// A reschedule after the roll-up went out: the reseller gets the roll-up again with the new
/// date (once), and its end customer, told nothing by us, gets no correction either. Customer
/// service, briefed for the old date, is briefed again the day before the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reschedule_sends_the_reseller_its_roll_up_with_the_new_date() {
    let smtp = SmtpServer::start();
    let mut options = RigOptions::new("it-reseller-reschedule", 5);
    options.mail = Mail::Smtp(smtp.addr);
    options.extra_config = "staff = [\"cs@hosting.test\"]\n".to_owned();
    let rig = SimRig::start(options).await;
    let a = rig.hosts.accounts.clone();
    let (reseller, end) = (&a[0], &a[4]);
    assert_eq!(end.owner, reseller.user.as_str());
    let cutover = rig.clock.now() + chrono::Duration::hours(2);
    rig.plan_with_cutover(&playbook(), cutover).await;
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine("reseller-reschedule", 4));
    let id = rig.id.clone();
    // Four customers' advance notices, the roll-up and the staff briefing (the day before the
    // cutover has come).
    let first = smtp.wait_for(4 + 1 + 1, Duration::from_secs(60)).await;
    let roll_up = format!("<reseller.{}.{id}@siirto>", reseller.user);
    assert!(first.iter().any(|d| d.message_id == roll_up), "{first:#?}");
    let briefed = format!("<staff.{}.{id}@siirto>", cutover.timestamp_millis());
    assert!(first.iter().any(|d| d.message_id == briefed), "{first:#?}");
    daemon.stop().await;

    let new_cutover = cutover + chrono::Duration::days(3);
    let config = rig.dir.path().join("siirto.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args(["reschedule", id.as_str(), "--cutover", &new_cutover.to_rfc3339()])
        .args(["--reason", "the new server's disks arrive late", "--config", config.to_str().unwrap()])
        .env_remove("SIIRTO_CONFIG")
        .output()
        .expect("run siirto");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let daemon = Daemon::start(rig.engine("reseller-reschedule", 4));
    // Four corrections and the roll-up again.
    smtp.wait_for(first.len() + 4 + 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    daemon.stop().await;
    let delivered = smtp.delivered().into_iter().skip(first.len()).collect::<Vec<_>>();
    assert_eq!(delivered.len(), 5, "{:?}", delivered.iter().map(|d| &d.message_id).collect::<Vec<_>>());
    let again = format!("<reseller.{}.{}.{id}@siirto>", reseller.user, new_cutover.timestamp_millis());
    let roll_up = delivered.iter().find(|d| d.message_id == again).expect("the roll-up with the new date");
    assert_eq!(roll_up.rcpt_tos, std::slice::from_ref(&reseller.email));
    let new_date = new_cutover.format("%Y-%m-%d").to_string();
    assert!(roll_up.subject.contains(&new_date), "{}", roll_up.subject);
    let text = roll_up.body.clone().unwrap_or_default();
    assert!(text.contains(&format!("account {}: {}", end.user, end.domain)), "{text}");
    assert!(delivered.iter().all(|d| !d.rcpt_tos.contains(&end.email)), "the end customer hears nothing");
    assert_eq!(delivered.iter().filter(|d| d.message_id.starts_with("<correction.")).count(), 4);

    // The day before the new date: customer service is briefed again, for it.
    let sent = smtp.delivered().len();
    rig.clock.advance(Duration::from_secs(2 * 86_400 + 2 * 3600 + 60));
    let daemon = Daemon::start(rig.engine("reseller-reschedule", 4));
    let again = format!("<staff.{}.{id}@siirto>", new_cutover.timestamp_millis());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let briefing = loop {
        if let Some(found) = smtp.delivered().into_iter().skip(sent).find(|d| d.message_id == again) {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no {again}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemon.stop().await;
    assert_eq!(briefing.rcpt_tos, ["cs@hosting.test"]);
    let text = briefing.body.clone().unwrap_or_default();
    assert!(text.contains(&new_date), "{text}");
    let briefings = smtp.delivered().iter().filter(|d| d.message_id.starts_with("<staff.")).count();
    assert_eq!(briefings, 2, "one briefing per date");
}
