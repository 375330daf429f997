//! The JSON API against its own OpenAPI document: schemathesis (from PyPI) generates requests
//! from `/api/v1/openapi.json` and checks every answer against the document, run against the
//! real daemon as a child process while it moves a simulated migration.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::daemon::DaemonProcess;
use crate::support::rig::{RigOptions, SimRig};

const PLAYBOOK: &str = include_str!("../../playbooks/demo.toml");

/// schemathesis: `SIIRTO_SCHEMATHESIS`, the virtualenv `tests/run.sh` makes
/// (`target/schemathesis`), or the PATH.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SIIRTO_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/schemathesis/bin/schemathesis");
    if venv.exists() {
        return venv;
    }
    match Command::new("schemathesis").arg("--version").output() {
        Ok(out) if out.status.success() => PathBuf::from("schemathesis"),
        _ => panic!(
            "schemathesis is not installed: `python3 -m venv target/schemathesis && \
             target/schemathesis/bin/pip install schemathesis` (tests/run.sh does this; Debian: python3-venv)"
        ),
    }
}

/// The address the daemon printed for its status page.
pub async fn page_address(daemon: &mut DaemonProcess) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        daemon.assert_running();
        if let Some(line) = daemon.log_text().lines().find(|l| l.contains("status page and API at http://")) {
            let url = line.split("at ").nth(1).unwrap().trim().trim_end_matches('/').to_owned();
            return url;
        }
        assert!(Instant::now() < deadline, "the daemon printed no address:\n{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_answers_as_its_openapi_document_says_under_schemathesis() {
    let schemathesis = schemathesis();
    let rig = SimRig::start(RigOptions::new("api-contract", 3)).await;
    rig.plan_and_start(PLAYBOOK).await;
    let config = rig.write_daemon_config("daemon.toml", "idle_poll = \"200ms\"\nowner = \"api-contract\"");
    let mut daemon = DaemonProcess::start(rig.dir.path(), &config, "daemon.log");
    let url = page_address(&mut daemon).await;
    let operator = crate::web::token(&rig, "operator");
    let started = Instant::now();
    let dir = rig.dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            // Its own files (.schemathesis/) go to the rig's directory.
            .current_dir(dir)
            .args(["run", &format!("{url}/api/v1/openapi.json")])
            .args(["--header", &format!("Authorization: Bearer {operator}")])
            // One worker: with several, hypothesis describing its filters in threads meets a
            // CPython 3.11 bug ("AST constructor recursion depth mismatch").
            .args(["--checks", "all", "--max-examples", "25", "--workers", "1", "--seed", "8640"])
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let report =
        format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    daemon.assert_running();
    let (_, _) = daemon.stop(Duration::from_secs(30)).await;
    assert!(
        out.status.success(),
        "schemathesis found answers that break the document ({:?}):\n{report}",
        started.elapsed()
    );
    // It really ran every operation the document has (a document it could not read would pass
    // nothing).
    use utoipa::OpenApi;
    let document = siirto::web::api::ApiDoc::openapi();
    let operations: usize = document
        .paths
        .paths
        .values()
        .map(|item| usize::from(item.get.is_some()) + usize::from(item.post.is_some()))
        .sum();
    assert!(operations >= 13, "{operations}");
    assert!(report.contains(&format!("Tested: {operations}")), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_stops_on_sigterm_while_a_browser_holds_its_live_feed_open() {
    let rig = SimRig::start(RigOptions::new("page-sigterm", 2)).await;
    rig.plan_and_start(PLAYBOOK).await;
    let config = rig.write_daemon_config("daemon.toml", "idle_poll = \"200ms\"\nstop_timeout = \"5s\"");
    let mut daemon = DaemonProcess::start(rig.dir.path(), &config, "daemon.log");
    let url = page_address(&mut daemon).await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{url}/readyz")).send().await.unwrap().status(), reqwest::StatusCode::OK);
    // A customer-service browser watching the migration: its feed stays open.
    let viewer = crate::web::token(&rig, "viewer");
    let feed = http.get(format!("{url}/live/{}", rig.id)).bearer_auth(&viewer).send().await.unwrap();
    assert_eq!(feed.status(), reqwest::StatusCode::OK);
    let started = Instant::now();
    let (status, log) = daemon.stop(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an open feed held the stop for {:?}",
        started.elapsed()
    );
    drop(feed);
    // The address is free again: a restarted daemon can bind it.
    let addr = url.trim_start_matches("http://");
    assert!(std::net::TcpListener::bind(addr).is_ok(), "{addr} still bound");
}
