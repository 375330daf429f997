//! Verification's site comparison (issue 5) on simulated hosts with the real engine and a real
//! pdns_server: a site that differs on the target over HTTP, or over HTTPS only, holds the
//! account with both answers as evidence; with `verification.on_mismatch = "proceed"` the
//! account goes on and the evidence is in the event log.

use siirto::names::{AccountName, DomainName};

use crate::support::rig::{RigOptions, SimRig, account};

const PLAYBOOK: &str = include_str!("../../playbooks/demo.toml");

type Rig = SimRig;

/// Two accounts on the source (kukka0001, kukka0002), none on the target.
async fn start_rig() -> Rig {
    SimRig::start(RigOptions::new("it-site", 2)).await
}

/// Plans under `playbook_text`, approves, and starts (pre-flight passing).
async fn plan_approve_start(rig: &Rig, playbook_text: &str) {
    rig.plan_and_approve(playbook_text).await;
    let outcome = rig.start_migration().await;
    assert!(outcome.started.is_some(), "{outcome:?}");
}

/// Overwrites the main site's index page of `user` on the target with one titled `title`.
fn retitle_on_target(rig: &Rig, user: &AccountName, title: &str) {
    let index = rig.hosts.target.account_dir(user).join("public_html/index.html");
    assert!(index.exists(), "{} was restored", index.display());
    std::fs::write(&index, format!("<!DOCTYPE html>\n<html><head><title>{title}</title></head></html>\n"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_whose_title_differs_on_the_target_holds_the_account_with_both_titles() {
    let rig = start_rig().await;
    plan_approve_start(&rig, PLAYBOOK).await;
    let engine = rig.engine("it-site", 8);
    let user = AccountName::parse("kukka0002").unwrap();
    // Between the restore and the verification (the next tick), the target's page changes.
    let mut edited = false;
    rig.tick_until(&engine, "kukka0002 to be held", |status| {
        let state = account(status, user.as_str()).state.clone();
        if state == "restored" && !edited {
            retitle_on_target(&rig, &user, "Under Construction");
            edited = true;
        }
        state == "held"
    })
    .await;
    assert!(edited);
    let status = rig.status().await;
    let reason = account(&status, user.as_str()).reason.clone().unwrap_or_default();
    // Over plain HTTP and over HTTPS, both answers are named.
    assert!(
        reason.contains(
            "kukka-0002.test: source answered 200 Some(\"kukka-0002.test\"), target answered 200 Some(\"Under Construction\")"
        ),
        "{reason}"
    );
    assert!(
        reason.contains(
            "kukka-0002.test over HTTPS: source answered 200 Some(\"kukka-0002.test\"), target answered 200 Some(\"Under Construction\")"
        ),
        "{reason}"
    );
    // The other account's site matches and goes on.
    rig.tick_until(&engine, "kukka0001 to arrive", |s| account(s, "kukka0001").state == "done").await;
    assert_eq!(account(&rig.status().await, user.as_str()).state, "held");
    let _ = &rig.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_site_that_differs_over_https_only_holds_the_account() {
    let rig = start_rig().await;
    // The target's HTTPS virtual host of kukka-0002.test serves another page; HTTP is the same.
    let domain = DomainName::parse("kukka-0002.test").unwrap();
    let page = "<!DOCTYPE html>\n<html><head><title>Apache2 Default Page</title></head></html>\n";
    rig.hosts.target.serve_https_page(&domain, Some(page.to_owned()));
    plan_approve_start(&rig, PLAYBOOK).await;
    let engine = rig.engine("it-site", 8);
    rig.tick_until(&engine, "kukka0002 held and kukka0001 done", |s| {
        account(s, "kukka0002").state == "held" && account(s, "kukka0001").state == "done"
    })
    .await;
    let status = rig.status().await;
    let reason = account(&status, "kukka0002").reason.clone().unwrap_or_default();
    assert!(
        reason.contains(
            "kukka-0002.test over HTTPS: source answered 200 Some(\"kukka-0002.test\"), target answered 200 Some(\"Apache2 Default Page\")"
        ),
        "{reason}"
    );
    // Plain HTTP matched: the only mismatch named is the HTTPS one.
    assert!(!reason.contains("kukka-0002.test: source answered"), "{reason}");
    let _ = &rig.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_on_mismatch_proceed_a_differing_site_goes_on_with_the_evidence_logged() {
    let rig = start_rig().await;
    let playbook = PLAYBOOK.replace("on_mismatch = \"hold\"", "on_mismatch = \"proceed\"");
    assert_ne!(playbook, PLAYBOOK, "the demo playbook sets on_mismatch");
    plan_approve_start(&rig, &playbook).await;
    let engine = rig.engine("it-site", 8);
    let user = AccountName::parse("kukka0002").unwrap();
    let mut edited = false;
    rig.tick_until(&engine, "both accounts to arrive", |status| {
        let state = account(status, user.as_str()).state.clone();
        if state == "restored" && !edited {
            retitle_on_target(&rig, &user, "Under Construction");
            edited = true;
        }
        assert_ne!(state, "held", "{status:#?}");
        state == "done" && account(status, "kukka0001").state == "done"
    })
    .await;
    assert!(edited);
    let events = rig.store.events(rig.id.as_str()).await.unwrap();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "account_verification_failed" && e.account.as_deref() == Some("kukka0002"))
        .collect();
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert!(failed[0].detail.contains("Under Construction"), "{}", failed[0].detail);
    assert!(failed[0].detail.contains("over HTTPS"), "{}", failed[0].detail);
    let _ = &rig.dir;
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_without_https_skips_the_https_comparison_and_a_target_without_it_is_a_mismatch() {
    // The source refuses HTTPS: nothing to compare over HTTPS, the accounts go on.
    let mut rig = start_rig().await;
    rig.config.hosts.get_mut("old").unwrap().https_port = closed_port();
    plan_approve_start(&rig, PLAYBOOK).await;
    let engine = rig.engine("it-site", 8);
    rig.tick_until(&engine, "both accounts to arrive", |s| {
        assert!(s.accounts.iter().all(|a| a.state != "held"), "{s:#?}");
        s.accounts.iter().all(|a| a.state == "done")
    })
    .await;
    let _ = &rig.dir;

    // The source answers HTTPS and the target refuses it: held, with both answers.
    let mut rig = start_rig().await;
    rig.config.hosts.get_mut("new").unwrap().https_port = closed_port();
    plan_approve_start(&rig, PLAYBOOK).await;
    let engine = rig.engine("it-site", 8);
    rig.tick_until(&engine, "both accounts to be held", |s| s.accounts.iter().all(|a| a.state == "held"))
        .await;
    let status = rig.status().await;
    let reason = account(&status, "kukka0001").reason.clone().unwrap_or_default();
    assert!(
        reason.contains("kukka-0001.test over HTTPS: source answered 200 Some(\"kukka-0001.test\"), target failed (GET https://kukka-0001.test:"),
        "{reason}"
    );
    let _ = &rig.dir;
}
