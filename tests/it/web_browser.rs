//! Customer service's page in a real browser (headless Chromium): log in with a token, search
//! a customer's `www.` name, and watch their account move and their notice appear on screen
//! while the daemon runs the migration, without a reload. A screenshot is kept in
//! `target/test-artifacts/status-page.png`.

use std::path::PathBuf;
use std::time::Duration;

use siirto::domain::MigrationState;

use crate::support::chromium::Browser;
use crate::support::rig::{Daemon, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;
use crate::web::{serve, token};

const PLAYBOOK: &str = include_str!("../../playbooks/demo.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customer_service_watches_a_customer_move_without_reloading() {
    let mut browser = Browser::start().await;
    let smtp = SmtpServer::start();
    let options = RigOptions { mail: Mail::Smtp(smtp.addr), ..RigOptions::new("web-browser", 2) };
    let rig = SimRig::start(options).await;
    rig.plan_and_start(PLAYBOOK).await;
    let addr = serve(&rig).await;
    let account = &rig.hosts.accounts[1];
    let user = account.user.as_str();

    // Without a session the page asks for the token; with it, the search box.
    browser.goto(&format!("http://{addr}/")).await;
    browser.wait_for("document.getElementById('token') !== null", Duration::from_secs(10)).await;
    let login = format!(
        "document.getElementById('token').value = {:?}; document.querySelector('form.login').submit(); true",
        token(&rig, "viewer")
    );
    browser.eval(&login).await;
    browser.wait_for("document.getElementById('q') !== null", Duration::from_secs(10)).await;
    // The search box has the focus: a colleague types at once.
    assert_eq!(browser.eval("document.activeElement && document.activeElement.id").await, "q");
    let search = format!(
        "document.getElementById('q').value = {:?}; document.querySelector('form.search').submit(); true",
        format!("www.{}", account.domain)
    );
    browser.eval(&search).await;
    let path = format!("/m/{}/a/{user}", rig.id);
    browser
        .wait_for(
            &format!("location.pathname === {path:?} && document.readyState === 'complete'"),
            Duration::from_secs(10),
        )
        .await;
    let state = format!("document.querySelector('[data-account-state=\"{user}\"] strong').textContent");
    assert_eq!(browser.eval(&state).await, "not moved yet");
    // From here on the page must not reload: a reload would lose this.
    browser.eval("window.__siirto_marker = 'no reload'; true").await;

    let daemon = Daemon::start(rig.engine("web-browser", 4));
    browser.wait_for(&format!("{state} === 'moved'"), Duration::from_secs(240)).await;
    // The completion notice, with its text, as the customer got it.
    let notice = format!(
        "Array.from(document.querySelectorAll('.notice')).some(n => n.querySelector('.notice-state').textContent === 'sent' \
         && n.querySelector('pre').textContent.includes({:?}))",
        account.domain.as_str()
    );
    browser.wait_for(&notice, Duration::from_secs(60)).await;
    assert_eq!(browser.eval("window.__siirto_marker").await, "no reload");
    rig.wait_for("the migration to cut over", Duration::from_secs(240), |s| {
        matches!(s.detail, MigrationState::CutOver { .. } | MigrationState::Settled { .. })
    })
    .await;
    daemon.stop().await;

    let shot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/status-page.png");
    let size = browser.screenshot(&shot).await;
    assert!(size > 10_000, "a screenshot of a whole page: {size} bytes");
    // Keyboard: the first Tab reaches the skip link, which leads to the content.
    browser
        .call(
            "Input.dispatchKeyEvent",
            serde_json::json!({"type": "keyDown", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}),
        )
        .await;
    browser
        .call(
            "Input.dispatchKeyEvent",
            serde_json::json!({"type": "keyUp", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}),
        )
        .await;
    assert_eq!(browser.eval("document.activeElement.getAttribute('href')").await, "#main");
}
