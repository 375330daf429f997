//! Benchmark: 500 simulated accounts moved through the real engine, and the time per account
//! the orchestrator adds on top of the simulated transfer itself: from "restored" (the moment
//! the simulated target wrote the account's RESTORE `success-item`) to "repointed and
//! verified" (the account's `account_switched` event: every domain repointed and every own
//! nameserver serving the target's address).
//!
//! `cargo run --release --example transfer_scale [-- --accounts 500 --poll-interval 200ms]`
//!
//! The world: two simulated cPanel hosts in this process (their files on /dev/shm when it
//! exists), a real `pdns_server` (sqlite backend, caches off) holding the accounts' zones, a
//! real SQLite store, notices to a directory. The playbook is the demo's (transfer and restore
//! threads, sessions of 25 accounts, 200 ms session polls, the TTL gate shortened to 2 s). The
//! engine runs in-process as `siirto daemon` runs it.
//!
//! To judge the figures it prints, next to them: the playbook's session poll interval (an
//! account restored just after a poll waits for the next one), and the same work done by hand
//! in the same run, one account at a time, with no engine, store or queue: fetch each site
//! from the source and the target, one PATCH per zone, one A query per domain to the
//! nameserver.

// The integration tests' pdns_server harness, shared with the other benchmarks.
#[path = "../tests/it/support/pdns.rs"]
mod pdns;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;

use siirto::demo::{DnsEndpoint, SOURCE_IP, SimHosts, TARGET_IP, all_domains, create_zones, write_config};
use siirto::dns::{Checker, Verification};
use siirto::domain::MigrationState;
use siirto::engine::{Engine, SystemClock};
use siirto::names::{DomainName, MigrationId};
use siirto::output::line;
use siirto::playbook::Playbook;
use siirto::sim::{SimAccount, SimHostSpec, SimWorld, generate_accounts, start_host};
use siirto::store::Store;
use siirto::world::World;

use pdns::Pdns;

const PLAYBOOK: &str = include_str!("../playbooks/demo.toml");

/// Moves N simulated accounts through the engine and measures what it adds per account.
#[derive(Debug, Parser)]
#[command(name = "transfer_scale")]
struct Args {
    /// Accounts on the source host (all of them move).
    #[arg(long, default_value_t = 500)]
    accounts: usize,
    /// The playbook's `transfer.poll_interval` (the demo playbook's is 200ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    poll_interval: Option<Duration>,
    /// The simulated transfer's speed in MB/s of declared account size (accounts are 1–50 MB;
    /// a restore takes a quarter of the copy time).
    #[arg(long, default_value_t = 100)]
    mb_per_sec: u64,
    /// Accounts done again by hand for the comparison.
    #[arg(long, default_value_t = 100)]
    by_hand: usize,
    /// Give up after this long.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The SQLite store's `synchronous` (`full`, siirto's default, or `normal`), to measure
    /// what durability across a power loss costs.
    #[arg(long, default_value = "full")]
    store_synchronous: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The engine's warnings (failed steps and their retries) go to stderr; RUST_LOG wins.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("siirto=warn")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

/// Percentile `p` (0–100) of sorted values, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints one row: median, p99 and max in milliseconds.
fn row(label: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    line(&format!(
        "  {label:<46} median {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms   (n={})",
        percentile(&values, 50.0),
        percentile(&values, 99.0),
        values.last().copied().unwrap_or(f64::NAN),
        values.len()
    ));
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn data_dir() -> anyhow::Result<tempfile::TempDir> {
    // The hosts' files on tmpfs when there is one: the benchmark is about the orchestrator,
    // not the disk.
    let shm = PathBuf::from("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("siirto-transfer-scale");
        b
    };
    Ok(if shm.is_dir() { builder.tempdir_in(shm)? } else { builder.tempdir()? })
}

async fn run(args: Args) -> anyhow::Result<()> {
    line(&format!(
        "transfer_scale: {} accounts, simulated transfer {} MB/s, load average {} on {} CPUs",
        args.accounts,
        args.mb_per_sec,
        load_average(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    ));
    let dir = data_dir()?;
    let pdns = Pdns::start_with_zones(&[]).await?;
    let endpoint =
        DnsEndpoint { api_url: pdns.api_url.clone(), api_key: pdns.api_key.clone(), dns_addr: pdns.dns_addr };

    let world = SimWorld::new();
    let accounts = generate_accounts(args.accounts, "kukka");
    let speed = args.mb_per_sec * 1024 * 1024;
    let mut source_spec =
        SimHostSpec::new("old.sim.test", SOURCE_IP, &format!("src{}", rand::random::<u64>()));
    source_spec.accounts = accounts.clone();
    source_spec.transfer_bytes_per_sec = speed;
    let source = start_host(source_spec, dir.path().join("old.sim.test"), &world).await?;
    let mut target_spec =
        SimHostSpec::new("new.sim.test", TARGET_IP, &format!("dst{}", rand::random::<u64>()));
    target_spec.transfer_bytes_per_sec = speed;
    let target = start_host(target_spec, dir.path().join("new.sim.test"), &world).await?;
    let hosts = SimHosts { world, source, target, accounts };
    let zones_started = Instant::now();
    create_zones(&endpoint.client()?, &hosts.accounts, SOURCE_IP).await?;
    line(&format!(
        "  {} zones created on {} in {:.1}s",
        all_domains(&hosts.accounts).len(),
        Pdns::version(),
        zones_started.elapsed().as_secs_f64()
    ));

    let mut playbook_text = PLAYBOOK.to_owned();
    if let Some(poll) = args.poll_interval {
        let demo_poll = "poll_interval = \"200ms\"";
        if !playbook_text.contains(demo_poll) {
            bail!("the demo playbook's transfer.poll_interval changed; update this benchmark");
        }
        playbook_text = playbook_text
            .replace(demo_poll, &format!("poll_interval = \"{}\"", humantime::format_duration(poll)));
    }
    let playbook = Playbook::parse(&playbook_text, "playbooks/demo.toml").map_err(|e| anyhow!("{e}"))?;
    let extra = format!(
        "[daemon]\nlease = \"60s\"\nidle_poll = \"200ms\"\n\n[mail]\nfrom = \"Siirto <noreply@siirto.test>\"\nchannel = \"directory\"\npath = \"{}\"\n",
        dir.path().join("outbox").display()
    );
    let database =
        format!("sqlite://{}?synchronous={}", dir.path().join("siirto.db").display(), args.store_synchronous);
    let config = write_config(&hosts, &endpoint, dir.path(), &database, &extra)?;
    let store = Store::connect(&config.database).await?;
    let adapters = World::from_config(&config)?;
    let id = MigrationId::parse("scale").map_err(|e| anyhow!("{e}"))?;
    let now = chrono::Utc::now();
    let request = siirto::plan::PlanRequest {
        id: id.clone(),
        source: "old",
        target: "new",
        playbook: &playbook,
        cutover_at: now,
        actor: "bench",
    };
    let plan_started = Instant::now();
    let plan = siirto::plan::plan(&store, &config, &adapters, request, now).await?;
    if plan.counts.move_and_repoint != plan.counts.domains {
        bail!("the plan does not move and repoint every domain: {:#?}", plan.flagged);
    }
    line(&format!(
        "  planned {} accounts / {} domains in {:.1}s; playbook: transfer_threads {}, restore_threads {}, {} accounts per session, poll_interval {}, workers {}",
        plan.counts.accounts,
        plan.counts.domains,
        plan_started.elapsed().as_secs_f64(),
        playbook.transfer.transfer_threads,
        playbook.transfer.restore_threads,
        playbook.transfer.accounts_per_session,
        humantime::format_duration(playbook.transfer.poll_interval),
        playbook.concurrency.workers,
    ));
    siirto::ops::approve(&store, &id, "bench", chrono::Utc::now()).await?;
    let world = World::from_config(&config)?;
    let outcome = siirto::ops::start(&store, &config, &world, &id, "bench", chrono::Utc::now()).await?;
    anyhow::ensure!(outcome.started.is_some(), "pre-flight refused the start: {:#?}", outcome.report);

    let engine = Arc::new(
        Engine::from_config(&config, store.clone(), Arc::new(SystemClock))?
            .with_workers(playbook.concurrency.workers as usize),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(Arc::clone(&engine).run(async {
        let _ = stop_rx.await;
    }));
    let run_started = Instant::now();
    let (queries_before, pdns_cpu_before, own_cpu_before) =
        (pdns.queries().await?, pdns.cpu_seconds(), pdns::cpu_seconds("/proc/self/stat"));
    let deadline = run_started + args.timeout;
    let status = loop {
        let status = siirto::status::migration_status(&store, id.as_str())
            .await
            .context("reading the migration's status")?;
        if matches!(status.detail, MigrationState::CutOver { .. } | MigrationState::Aborted { .. }) {
            break status;
        }
        if Instant::now() > deadline {
            bail!("gave up after {:?}: {status:#?}", args.timeout);
        }
        // The benchmark's own wait for the end; it measures from recorded timestamps.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wall = run_started.elapsed();
    let _ = stop_tx.send(());
    daemon.await.context("the engine task")??;
    if status.arrived() != args.accounts {
        bail!("{} of {} accounts arrived: {status:#?}", status.arrived(), args.accounts);
    }
    let sessions = hosts.target.transfer_sessions();
    line(&format!(
        "  moved {} accounts in {:.1}s through {} transfer sessions (load average now {}); CPU: this process (engine + sim hosts) {:.1}s, pdns_server {:.1}s, {} DNS queries",
        status.arrived(),
        wall.as_secs_f64(),
        sessions.len(),
        load_average(),
        pdns::cpu_seconds("/proc/self/stat") - own_cpu_before,
        pdns.cpu_seconds() - pdns_cpu_before,
        pdns.queries().await? - queries_before,
    ));

    // When the sim restored each account, and when the engine recorded each step.
    let mut restored_at: BTreeMap<String, i64> = BTreeMap::new();
    for session in &sessions {
        for (user, at) in &session.restored_at {
            restored_at.insert(user.to_string(), at.timestamp_millis());
        }
    }
    let events = store.events(id.as_str()).await?;
    let at_of = |kind: &str| -> BTreeMap<String, i64> {
        events
            .iter()
            .filter(|e| e.kind == kind && e.domain.is_none())
            .filter_map(|e| Some((e.account.clone()?, e.at)))
            .collect()
    };
    let (seen, verified, switched) =
        (at_of("account_restored"), at_of("account_verified"), at_of("account_switched"));
    let mut to_seen = Vec::new();
    let mut to_verified = Vec::new();
    let mut to_switched = Vec::new();
    let mut total = Vec::new();
    for (user, restored) in &restored_at {
        let (Some(seen), Some(verified), Some(switched)) =
            (seen.get(user), verified.get(user), switched.get(user))
        else {
            bail!("{user}: a step is missing from the event log");
        };
        to_seen.push((seen - restored) as f64);
        to_verified.push((verified - seen) as f64);
        to_switched.push((switched - verified) as f64);
        total.push((switched - restored) as f64);
    }
    let failed_steps: Vec<&str> =
        events.iter().filter(|e| e.kind == "step_failed").map(|e| e.detail.as_str()).collect();
    if !failed_steps.is_empty() {
        // Retried steps are part of what the orchestrator adds; show them, not hide them.
        line(&format!("  {} step(s) failed and were retried, e.g. {}", failed_steps.len(), failed_steps[0]));
    }
    let transfer_ms: Vec<f64> =
        hosts.accounts.iter().map(|a| (a.disk_mb as f64 * 1.25 / args.mb_per_sec as f64) * 1000.0).collect();
    line("per account, from the sim's restore to siirto's \"repointed and verified\" (account_switched):");
    row("restored -> repointed and verified (total)", total);
    row("  restored -> seen restored (session poll)", to_seen);
    row("  seen restored -> verified (HTTP check)", to_verified);
    row("  verified -> repointed and verified (PATCH+check)", to_switched);
    line("compared with:");
    line(&format!(
        "  the session poll interval                      {} ms (a restore waits up to one interval to be seen)",
        playbook.transfer.poll_interval.as_millis()
    ));
    row("the simulated copy+restore itself", transfer_ms);

    // The same work by hand, one account at a time, with nothing in between.
    let by_hand = by_hand(&hosts, &endpoint, args.by_hand).await?;
    row("by hand: fetch source+target, PATCH, query", by_hand.total);
    row("  by hand: the site fetches", by_hand.fetch);
    row("  by hand: PATCH per zone + one query per domain", by_hand.dns);
    drop(pdns);
    Ok(())
}

#[derive(Default)]
struct ByHand {
    total: Vec<f64>,
    fetch: Vec<f64>,
    dns: Vec<f64>,
}

/// The A record names siirto repoints for an account, by zone: apex, `www` and `mail` of each
/// main, addon and parked domain, and the subdomains in their main domain's zone.
fn names_by_zone(account: &SimAccount) -> BTreeMap<DomainName, Vec<DomainName>> {
    let mut zones: BTreeMap<DomainName, Vec<DomainName>> = BTreeMap::new();
    for zone in std::iter::once(&account.domain).chain(&account.addon_domains).chain(&account.parked_domains)
    {
        let names = zones.entry(zone.clone()).or_default();
        for prefix in ["", "www.", "mail."] {
            names.push(
                DomainName::parse(&format!("{prefix}{zone}")).expect("a prefix of a valid domain is valid"),
            );
        }
    }
    for sub in &account.sub_domains {
        zones.entry(account.domain.clone()).or_default().push(sub.clone());
    }
    zones
}

/// Repeats what siirto does after a restore for the first `count` accounts, by hand: GET each
/// domain from the source and the target by address with the domain as Host, one PATCH per
/// zone setting its A records to the target (already there: pdns still writes), and one A
/// query per domain to the nameserver. (siirto also reads each zone before writing it, to
/// check before it acts; the hand-made loop does not.)
async fn by_hand(hosts: &SimHosts, endpoint: &DnsEndpoint, count: usize) -> anyhow::Result<ByHand> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let checker = Checker::new(vec![endpoint.dns_addr])?;
    let mut out = ByHand::default();
    for account in hosts.accounts.iter().take(count) {
        let started = Instant::now();
        for domain in account.all_domains() {
            for web in [hosts.source.web_addr, hosts.target.web_addr] {
                let response =
                    http.get(format!("http://{web}/")).header("Host", domain.as_str()).send().await?;
                let status = response.status();
                let body = response.text().await?;
                if !status.is_success() || !body.contains("<title>") {
                    bail!("{domain} on {web}: {status}");
                }
            }
        }
        let fetched = Instant::now();
        for (zone, names) in names_by_zone(account) {
            let rrsets: Vec<serde_json::Value> = names
                .iter()
                .map(|name| {
                    serde_json::json!({
                        "name": format!("{name}."), "type": "A", "ttl": 60, "changetype": "REPLACE",
                        "records": [{ "content": TARGET_IP.to_string(), "disabled": false }],
                    })
                })
                .collect();
            let url = endpoint.api_url.join(&format!("api/v1/servers/localhost/zones/{zone}."))?;
            let response = http
                .patch(url)
                .header("X-API-Key", &endpoint.api_key)
                .json(&serde_json::json!({ "rrsets": rrsets }))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("PATCH {zone}: {}: {}", response.status(), response.text().await.unwrap_or_default());
            }
        }
        // One query per domain, as siirto checks each repointed domain's own A record.
        for domain in account.all_domains() {
            let answer = checker.verify_a(domain, TARGET_IP).await?;
            if !matches!(answer, Verification::Served) {
                bail!("{domain}: {answer:?}");
            }
        }
        let done = Instant::now();
        out.total.push((done - started).as_secs_f64() * 1000.0);
        out.fetch.push((fetched - started).as_secs_f64() * 1000.0);
        out.dns.push((done - fetched).as_secs_f64() * 1000.0);
    }
    Ok(out)
}
