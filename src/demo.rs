//! `siirto demo`: the whole job on one machine with nothing else installed — two simulated
//! cPanel hosts, a simulated nameserver (DNS and the PowerDNS API shape), an embedded SQLite
//! database and notices written to a directory — driven through the same config, plan, start
//! and daemon code paths a real migration uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde::Serialize;

use crate::config::Config;
use crate::dns::{Checker, Verification};
use crate::domain::MigrationState;
use crate::engine::{Engine, SystemClock};
use crate::names::{DomainName, MigrationId};
use crate::output;
use crate::playbook::Playbook;
use crate::sim::nameserver::SimNameserver;
pub use crate::sim::setup::DnsEndpoint;
use crate::sim::setup::{ConfigFiles, ConfigHost, write_config_files};
pub use crate::sim::zones::{SOURCE_IP, TARGET_IP, ZONE_TTL, all_domains, create_zones, zone_rrsets};
use crate::sim::{SimAccount, SimHost, SimHostSpec, SimWorld, generate_accounts, start_host};
use crate::store::Store;

/// The demo's playbook: the shipped recipe with the TTL wait shortened (it says so).
pub const DEMO_PLAYBOOK: &str = crate::sim::setup::SIM_PLAYBOOK;

/// `siirto demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How many accounts the source host has (all of them move).
    #[arg(long, default_value_t = 50)]
    pub accounts: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep the demo's files (database, notices, hosts' files) in this directory instead of a
    /// temporary one that is removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Give up after this long (e.g. "10m").
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The demo's summary.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// The migration's id.
    pub migration: String,
    /// Its final state.
    pub state: String,
    /// Accounts on the source.
    pub accounts: usize,
    /// Accounts that arrived (transferred, verified, switched, notified).
    pub arrived: usize,
    /// Accounts held for an operator, with the reason.
    pub held: Vec<String>,
    /// Domains moved.
    pub domains: usize,
    /// Domains the nameserver now answers with the target's address.
    pub domains_resolving_to_target: usize,
    /// Accounts whose site files are on the target.
    pub accounts_with_files_on_target: usize,
    /// Completion notice files in the outbox directory (one per account).
    pub notices: usize,
    /// Start notice files (one per customer, sent as their first account entered its transfer).
    pub start_notices: usize,
    /// Whether a message sent to the old server after the move reached the new one through the
    /// old server's relay (`None` when the playbook leaves the routing alone).
    pub mail_relayed: Option<bool>,
    /// Where the notices are.
    pub outbox: String,
    /// Seconds the whole run took.
    pub seconds: f64,
}

/// The two simulated hosts of the demo (and of the end-to-end tests).
pub struct SimHosts {
    /// The registry the hosts reach each other through.
    pub world: SimWorld,
    /// The source host, with the accounts.
    pub source: SimHost,
    /// The target host, empty at first.
    pub target: SimHost,
    /// The accounts the source started with.
    pub accounts: Vec<SimAccount>,
}

fn random_token() -> String {
    use rand::Rng;
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(32).map(char::from).collect()
}

/// Starts the source host (with `count` generated accounts) and the empty target host.
pub async fn start_hosts(count: usize, dir: &Path) -> anyhow::Result<SimHosts> {
    start_hosts_with_resolvers(count, dir, Vec::new()).await
}

/// [`start_hosts`], the hosts' mail relays asking `resolvers` for MX and A records (so mail for
/// a domain whose routing is switched to remote is relayed to the host its MX names).
pub async fn start_hosts_with_resolvers(
    count: usize,
    dir: &Path,
    resolvers: Vec<SocketAddr>,
) -> anyhow::Result<SimHosts> {
    let world = SimWorld::new();
    let accounts = generate_accounts(count, "kukka");
    let mut source_spec = SimHostSpec::new("old.sim.test", SOURCE_IP, &random_token());
    source_spec.accounts = accounts.clone();
    source_spec.dns_resolvers = resolvers.clone();
    let source = start_host(source_spec, dir.join("old.sim.test"), &world)
        .await
        .context("starting the source host")?;
    let mut target_spec = SimHostSpec::new("new.sim.test", TARGET_IP, &random_token());
    target_spec.dns_resolvers = resolvers;
    let target = start_host(target_spec, dir.join("new.sim.test"), &world)
        .await
        .context("starting the target host")?;
    Ok(SimHosts { world, source, target, accounts })
}

/// Writes the config a sysadmin would write for this world (secrets in files) and loads it.
///
/// `extra` is appended verbatim: the `[mail]` table, and any `[daemon]` settings. The DNS
/// endpoint is the config's resolver (see [`write_config_with_resolvers`]).
pub fn write_config(
    hosts: &SimHosts,
    dns: &DnsEndpoint,
    dir: &Path,
    database: &str,
    extra: &str,
) -> anyhow::Result<Config> {
    write_config_with_resolvers(hosts, dns, dir, database, &[], extra)
}

/// [`write_config`] with the config's `dns.resolvers` given (empty: the DNS endpoint).
pub fn write_config_with_resolvers(
    hosts: &SimHosts,
    dns: &DnsEndpoint,
    dir: &Path,
    database: &str,
    resolvers: &[std::net::SocketAddr],
    extra: &str,
) -> anyhow::Result<Config> {
    let path = write_config_files(
        dir,
        &[ConfigHost { name: "old", host: &hosts.source }, ConfigHost { name: "new", host: &hosts.target }],
        dns,
        ConfigFiles {
            written_by: "siirto demo",
            database,
            extra,
            resolvers,
            dns_key_file: None,
            // The demo's daemons and the tests' run side by side: each takes a free port.
            listen: "127.0.0.1:0",
        },
    )?;
    Config::load(&path).map_err(|e| anyhow!("{e}"))
}

fn progress(json: bool, text: &str) {
    // With --json, stdout is the summary alone; progress goes to stderr.
    if json {
        eprintln!("{text}");
    } else {
        output::line(text);
    }
}

/// Runs the demo; exits 0 only when every account arrived.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let temp;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.canonicalize()?
        }
        None => {
            temp = tempfile::Builder::new().prefix("siirto-demo").tempdir()?;
            temp.path().to_owned()
        }
    };
    let json = args.json;
    progress(json, &format!("siirto demo: {} accounts, files in {}", args.accounts, dir.display()));
    let api_key = random_token();
    let nameserver = SimNameserver::start(&api_key).await.context("starting the nameserver")?;
    // The hosts' mail relays ask the nameserver, as a real server asks its resolvers.
    let world = start_hosts_with_resolvers(args.accounts, &dir, vec![nameserver.dns_addr]).await?;
    let endpoint =
        DnsEndpoint { api_url: nameserver.api_url.clone(), api_key, dns_addr: nameserver.dns_addr };
    let dns = endpoint.client()?;
    create_zones(&dns, &world.accounts, SOURCE_IP).await?;
    progress(
        json,
        &format!(
            "  source old.sim.test  WHM {}  sites on {}\n  target new.sim.test  WHM {}  sites on {}\n  nameserver {} (DNS), {} (PowerDNS API), {} zones at TTL {ZONE_TTL}",
            world.source.whm_url,
            world.source.web_addr,
            world.target.whm_url,
            world.target.web_addr,
            endpoint.dns_addr,
            endpoint.api_url,
            all_domains(&world.accounts).len()
        ),
    );
    let outbox = dir.join("outbox");
    let extra = format!(
        "[daemon]\nlease = \"30s\"\nidle_poll = \"200ms\"\n\n[mail]\nfrom = \"Siirto Demo <noreply@siirto-demo.test>\"\nchannel = \"directory\"\npath = \"{}\"\n",
        outbox.display()
    );
    let database = format!("sqlite://{}", dir.join("siirto.db").display());
    let config = write_config(&world, &endpoint, &dir, &database, &extra)?;
    let store = Store::connect(&config.database).await.context("opening the demo database")?;
    let engine = Arc::new(Engine::from_config(&config, store.clone(), Arc::new(SystemClock))?);
    let playbook = Playbook::parse(DEMO_PLAYBOOK, "playbooks/demo.toml").map_err(|e| anyhow!("{e}"))?;

    let id = MigrationId::parse("demo").map_err(|e| anyhow!("{e}"))?;
    let now = chrono::Utc::now();
    let adapters = crate::world::World::from_config(&config)?;
    let request = crate::plan::PlanRequest {
        id: id.clone(),
        source: "old",
        target: "new",
        playbook: &playbook,
        cutover_at: now,
        actor: "demo",
    };
    let plan = crate::plan::plan(&store, &config, &adapters, request, now).await?;
    progress(
        json,
        &format!(
            "plan: {} accounts, {} domains ({} to move and repoint), {} flagged",
            plan.counts.accounts, plan.counts.domains, plan.counts.move_and_repoint, plan.counts.flagged
        ),
    );
    if let Some(wait) = playbook.dns.gate_wait_override {
        progress(
            json,
            &format!(
                "note: the demo playbook shortens the TTL wait to {} (gate_wait_override); a real cutover waits out each record's old TTL",
                humantime::format_duration(wait)
            ),
        );
    }
    if playbook.mail.switch_routing {
        progress(
            json,
            "note: at each repoint the old server's mail routing of the domains is set to remote (relay to the new server)",
        );
    }
    if !playbook.mail.final_sync {
        progress(
            json,
            "note: the final delta sync of mail (rsync over SSH) is off in the demo playbook: the simulated hosts have no sshd (tests/it/mail_cutover.rs runs it against two real sshd)",
        );
    }
    crate::ops::approve(&store, &id, "demo", chrono::Utc::now()).await?;
    let outcome = crate::ops::start(&store, &config, &adapters, &id, "demo", chrono::Utc::now()).await?;
    let report = &outcome.report;
    progress(
        json,
        &format!(
            "pre-flight: {} hard failure(s), {} warning(s)",
            report.hard_failures().count(),
            report.warnings().count()
        ),
    );
    if outcome.started.is_none() {
        let failures: Vec<String> =
            report.hard_failures().map(|f| format!("{}: {}", f.check, f.detail)).collect();
        anyhow::bail!("pre-flight refused the start: {}", failures.join("; "));
    }
    progress(
        json,
        "start: the daemon lowers TTLs, waits out the gate, transfers, verifies, repoints, notifies",
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(Arc::clone(&engine).run(async {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + args.timeout;
    let mut last = String::new();
    let status = loop {
        let status = crate::status::migration_status(&store, id.as_str()).await?;
        let key = format!("{:<12} accounts: {}", status.state, output::counts(&status.accounts_by_state));
        if key != last {
            progress(json, &format!("  [{:>5.1}s] {key}", started.elapsed().as_secs_f64()));
            last = key;
        }
        if matches!(status.detail, MigrationState::CutOver { .. } | MigrationState::Aborted { .. }) {
            break status;
        }
        if Instant::now() > deadline {
            progress(json, &format!("gave up after {:?}", args.timeout));
            break status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = stop_tx.send(());
    daemon.await.context("the daemon task")??;

    // Mail still reaching the old server (a resolver holding the old MX) is relayed to the new
    // one, now that the old server's routing of the domain is remote.
    let relay = if playbook.mail.switch_routing {
        let relayed = relay_check(&world).await;
        match &relayed {
            Ok(address) => progress(
                json,
                &format!(
                    "mail routing: a message for {address} sent to the old server was relayed to the new one (it is in that mailbox there)"
                ),
            ),
            Err(why) => progress(json, &format!("mail routing: the old server did not relay: {why}")),
        }
        Some(relayed.is_ok())
    } else {
        None
    };

    // Check the outcome from the outside: DNS answers, files on the target, notices written.
    let checker = Checker::new(vec![endpoint.dns_addr])?;
    let mut resolving = 0;
    let domains = store.domains(id.as_str()).await?;
    for row in &domains {
        let domain = DomainName::parse(&row.domain).map_err(|e| anyhow!("{e}"))?;
        if let Verification::Served = checker.verify_a(&domain, TARGET_IP).await? {
            resolving += 1;
        }
    }
    let with_files = world
        .accounts
        .iter()
        .filter(|a| world.target.account_dir(&a.user).join("public_html").join("index.html").is_file())
        .count();
    let files: Vec<String> = std::fs::read_dir(&outbox)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let of_kind = |kind: &str| files.iter().filter(|f| f.starts_with(&format!("{kind}."))).count();
    let (notices, start_notices) = (of_kind("completion"), of_kind("start"));
    let summary = DemoSummary {
        migration: id.to_string(),
        state: status.state.clone(),
        accounts: world.accounts.len(),
        arrived: status.arrived(),
        held: status
            .accounts
            .iter()
            .filter(|a| a.state == "held")
            .map(|a| format!("{}: {}", a.user, a.reason.clone().unwrap_or_default()))
            .collect(),
        domains: domains.len(),
        domains_resolving_to_target: resolving,
        accounts_with_files_on_target: with_files,
        notices,
        start_notices,
        mail_relayed: relay,
        outbox: outbox.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let all_arrived = summary.arrived == summary.accounts
        && summary.domains_resolving_to_target == summary.domains
        && summary.accounts_with_files_on_target == summary.accounts
        && summary.notices == summary.accounts
        && summary.mail_relayed != Some(false);
    if json {
        output::json(&summary)?;
    } else {
        output::line(&format!(
            "done in {:.1}s: {}/{} accounts arrived, {}/{} domains answer with the target's address, {} accounts' files on the target, {} completion and {} start notices in {}",
            summary.seconds,
            summary.arrived,
            summary.accounts,
            summary.domains_resolving_to_target,
            summary.domains,
            summary.accounts_with_files_on_target,
            summary.notices,
            summary.start_notices,
            if args.dir.is_some() {
                summary.outbox.as_str()
            } else {
                "the outbox (removed with the temporary directory; use --dir to keep it)"
            },
        ));
        for held in &summary.held {
            output::line(&format!("  held: {held}"));
        }
    }
    Ok(if all_arrived { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Sends one message for the first account's mailbox to the old server, as a sender whose
/// resolver still holds the old MX would, and waits (10 s at most) for it in that mailbox on the
/// new server. Returns the address, or why it did not arrive.
async fn relay_check(world: &SimHosts) -> Result<String, String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let account = world.accounts.first().ok_or("no accounts")?;
    let address = format!("info@{}", account.domain);
    let message = Message::builder()
        .from("Someone <someone@elsewhere.test>".parse().map_err(|e| format!("{e}"))?)
        .to(address.parse().map_err(|e| format!("{e}"))?)
        .subject("Sent to the old server after the move")
        .body("The old server relays this to the new one.".to_owned())
        .map_err(|e| e.to_string())?;
    let smtp = world.source.smtp_addr;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.ip().to_string())
        .port(smtp.port())
        .build();
    let before = world.target.maildir_messages(&account.user, &account.domain, "info").len();
    transport.send(message).await.map_err(|e| format!("the old server refused the message: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if world.target.maildir_messages(&account.user, &account.domain, "info").len() > before {
            return Ok(address);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{address} did not arrive on the new server within 10 s"))
}
