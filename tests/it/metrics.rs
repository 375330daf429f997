//! The metrics of `GET /metrics` after a real run: a small migration moved by the daemon
//! in-process, its notices held back by an SMTP server that is down at first, then the store's
//! gauges (`Store::gauges`) and the engine's families rendered as OpenMetrics text, on SQLite
//! and on PostgreSQL.

use std::time::Duration;

use siirto::engine::Clock;
use siirto::metrics::{StoreGauges, render};

use crate::support::pg::PgDatabase;
use crate::support::rig::{Daemon, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

/// The demo's playbook (TTL wait shortened, short retries) with enough quick retries that the
/// notices outlast the SMTP outage.
fn playbook() -> String {
    let text = include_str!("../../playbooks/demo.toml");
    let retry = "max_attempts = 6\nbase_delay = \"250ms\"\nmax_delay = \"4s\"";
    assert!(text.contains(retry), "the demo playbook's [retry] table changed");
    text.replace(retry, "max_attempts = 100\nbase_delay = \"100ms\"\nmax_delay = \"300ms\"")
}

/// The value of the sample line of `series` (`name{labels}`) in `text`, if there is one.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_after_a_migration(database: Option<&str>) {
    let mut smtp = SmtpServer::start();
    let options = RigOptions {
        database: database.map(str::to_owned),
        mail: Mail::Smtp(smtp.addr),
        ..RigOptions::new("it-metrics", 2)
    };
    let rig = SimRig::start(options).await;
    smtp.stop();
    rig.plan_with_cutover(&playbook(), rig.clock.now()).await;
    rig.approve().await;
    assert!(rig.start_migration().await.started.is_some());
    let daemon = Daemon::start(rig.engine("metrics", 4));
    rig.wait_for("a notice to fail", Duration::from_secs(120), |s| {
        s.failing_jobs.iter().any(|j| j.kind == "send_notice")
    })
    .await;
    smtp.restart();
    let status = rig
        .wait_for("the migration to cut over", Duration::from_secs(240), |s| {
            s.state == "cut_over" && s.arrived() == 2
        })
        .await;
    daemon.stop().await;
    assert_eq!(status.arrived(), 2, "{status:#?}");

    let now = siirto::domain::to_millis(rig.clock.now());
    let gauges = rig.store.gauges(now).await.unwrap();
    let id = rig.id.to_string();
    let pair = |state: &str, n| ((id.clone(), state.to_owned()), n);
    assert_eq!(gauges.accounts, vec![pair("done", 2)], "{gauges:#?}");
    let domains: u64 = gauges.domains.iter().filter(|((m, _), _)| *m == id).map(|(_, n)| n).sum();
    let planned: usize = rig.hosts.accounts.iter().map(|a| 1 + a.addon_domains.len()).sum();
    assert_eq!(domains, planned as u64, "{gauges:#?}");
    // A start and a completion notice per account (each its own customer), all sent; their
    // advance notices, due before a cutover planned for now, were too late to send.
    let notice = |kind: &str, result: &str| ((id.clone(), kind.to_owned(), result.to_owned()), 2);
    assert_eq!(
        gauges.notices,
        vec![notice("advance", "skipped_late"), notice("completion", "sent"), notice("start", "sent")],
        "{gauges:#?}"
    );
    assert!(gauges.oldest_due_job_age_seconds >= 0.0, "{gauges:#?}");

    let text = render(&gauges);
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        format!("siirto_accounts{{migration=\"{id}\",state=\"done\"}} 2"),
        format!("siirto_notices{{migration=\"{id}\",kind=\"completion\",result=\"sent\"}} 2"),
        format!("siirto_notices{{migration=\"{id}\",kind=\"start\",result=\"sent\"}} 2"),
        format!("siirto_notices{{migration=\"{id}\",kind=\"advance\",result=\"skipped_late\"}} 2"),
    ] {
        assert!(lines.contains(&expected.as_str()), "missing {expected:?} in:\n{text}");
    }
    // The engine's families are the process's: other tests of this binary add to them, so
    // they are checked for what this run must have added at least.
    for series in [
        "siirto_step_duration_seconds_count{kind=\"repoint\",outcome=\"ok\"}",
        "siirto_step_duration_seconds_count{kind=\"send_notice\",outcome=\"ok\"}",
    ] {
        let n = value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(n > 0.0, "{series} is {n}");
    }
    // The sends the down server refused, counted against the notice channel. (Their class is
    // `other` for now: the batch sender hands the engine the channel's error as text.)
    let smtp_errors: f64 = text
        .lines()
        .filter(|line| line.starts_with("siirto_adapter_errors_total{adapter=\"smtp\","))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(smtp_errors > 0.0, "no SMTP error counted in:\n{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // A scrape without the store's gauges (the database unreachable) still shows the engine's.
    assert!(render(&StoreGauges::default()).contains("# TYPE siirto_step_duration_seconds histogram"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_finished_migration_on_sqlite() {
    metrics_after_a_migration(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_a_finished_migration_on_postgres() {
    let pg = PgDatabase::create().await;
    metrics_after_a_migration(Some(pg.url())).await;
}
