//! The command line: clap definitions and one function per command. Commands work on the store
//! the config names, through the same library functions the daemon and the status page use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::domain::Timestamp;
use crate::names::{AccountName, DomainName, MigrationId};
use crate::output;
use crate::playbook::Playbook;
use crate::store::Store;
use crate::world::World;

/// siirto moves a webhosting company's customers from an old cPanel server to a new one.
#[derive(Debug, Parser)]
#[command(name = "siirto", version, about, long_about = None)]
pub struct Cli {
    /// The config file (database, hosts, DNS provider, mail).
    #[arg(long, global = true, env = "SIIRTO_CONFIG", default_value = "siirto.toml")]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole job on simulated hosts on this machine.
    ///
    /// Example: siirto demo --accounts 50
    Demo(crate::demo::DemoArgs),
    /// Run the orchestrator: takes due work from the store and performs it.
    ///
    /// Example: siirto daemon --config /etc/siirto/siirto.toml
    Daemon(DaemonArgs),
    /// Print what is on one cPanel host (read-only; needs no config file or database).
    ///
    /// Example: siirto inventory --whm https://old1.example.fi:2087 --token-file old1.token --json
    Inventory(InventoryArgs),
    /// Inventory the source host and record a migration (changes nothing anywhere).
    ///
    /// Example: siirto plan --playbook playbooks/shared-hosting.toml --from old1 --to new1 --cutover 2026-12-01T22:00:00Z
    Plan(PlanArgs),
    /// Approve a reviewed plan (records who approved it); only an approved plan starts.
    ///
    /// Example: siirto approve old1-to-new1 --by maija
    Approve(ApproveArgs),
    /// Run the pre-flight checks and start an approved migration; refused (with the report)
    /// on a hard failure.
    ///
    /// Example: siirto start old1-to-new1
    Start(MigrationArg),
    /// Show the pre-flight report of a migration without starting it (recorded on its
    /// timeline); exits 1 when a hard failure would refuse the start.
    ///
    /// Example: siirto preflight old1-to-new1 --json
    Preflight(PreflightArgs),
    /// Pause a running migration and its transfer sessions on the target.
    ///
    /// Example: siirto pause old1-to-new1
    Pause(MigrationArg),
    /// Resume a paused migration and restart its paused transfer sessions.
    ///
    /// Example: siirto resume old1-to-new1
    Resume(MigrationArg),
    /// Abort a migration and its unfinished transfer sessions; nothing further happens to it.
    ///
    /// Example: siirto abort old1-to-new1 --reason "target disk failed"
    Abort(AbortArgs),
    /// Move the cutover of a migration that has not begun, and every dated step with it;
    /// customers already told the old date get a correction, the others the new date only.
    ///
    /// Example: siirto reschedule old1-to-new1 --cutover 2026-12-15T22:00:00Z --reason "the new server's disks arrive late"
    Reschedule(RescheduleArgs),
    /// Retry a held account.
    ///
    /// Example: siirto retry old1-to-new1 --account kukka0001
    Retry(RetryArgs),
    /// Acknowledge an operator task (a change siirto cannot make, listed by `siirto status`
    /// with its number until acknowledged).
    ///
    /// Example: siirto ack 42 --by maija --note "spam filter route changed"
    Ack(AckArgs),
    /// Assign a dedicated address of the target to an account on a dedicated IP at the source
    /// (it waits for one, and then moves after every other account).
    ///
    /// Example: siirto assign-ip old1-to-new1 kukka0007 203.0.113.21
    AssignIp(AssignIpArgs),
    /// Point an account's records (or one domain's) back at the source server; allowed while
    /// the source still holds the account. The account is left alone until `siirto retry`.
    ///
    /// Example: siirto rollback old1-to-new1 --account kukka0001 --reason "shop broken on PHP 8.3"
    Rollback(RollbackArgs),
    /// Show where migrations and their accounts stand.
    ///
    /// Example: siirto status old1-to-new1 --json
    Status(StatusArgs),
    /// Print a migration's event log as a timeline, one line per event (time in UTC, account
    /// or domain, what happened); --follow keeps printing new events until Ctrl-C.
    ///
    /// Example: siirto log old1-to-new1 --account kukka0001 --follow
    Log(LogArgs),
    /// Watch a migration's progress live (bars in a terminal, a line per change otherwise)
    /// until it is settled or aborted.
    ///
    /// Example: siirto watch old1-to-new1
    Watch(WatchArgs),
    /// What was sent to whom: the notices of a migration.
    #[command(subcommand)]
    Notices(NoticesCommand),
    /// Retire the old server in stages: preview the stages, their dates, what each would touch
    /// now and each gate's evidence (--plan, the default); postpone, skip or undo one.
    ///
    /// Example: siirto decommission old1-to-new1 --plan
    /// Example: siirto decommission undo old1-to-new1 --stage "suspend accounts" --reason "customer asked"
    Decommission(DecommissionArgs),
    /// List the open operator tasks (manual decommission stages, spam-filter routes) with their
    /// numbers for `siirto ack`, and who has confirmed those that need two people.
    ///
    /// Example: siirto tasks old1-to-new1
    Tasks(TasksArgs),
    /// The event log's audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Playbook tools.
    #[command(subcommand)]
    Playbook(PlaybookCommand),
    /// Config tools.
    #[command(subcommand, name = "config")]
    ConfigTools(ConfigCommand),
    /// Run simulated cPanel hosts for trying siirto out.
    ///
    /// Example: siirto sim --accounts 20
    Sim(crate::sim::SimArgs),
}

/// `siirto plan` arguments.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The playbook file.
    #[arg(long)]
    pub playbook: PathBuf,
    /// The source host's name in the config.
    #[arg(long = "from")]
    pub from: String,
    /// The target host's name in the config.
    #[arg(long = "to")]
    pub to: String,
    /// The earliest cutover time (RFC 3339, or "now").
    #[arg(long, default_value = "now")]
    pub cutover: String,
    /// The migration's id (default: FROM-to-TO-YYYYMMDD, the cutover's date in UTC).
    #[arg(long)]
    pub id: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `siirto inventory` arguments.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// The host's WHM URL, e.g. https://old1.example.fi:2087 (http:// is allowed, with a warning).
    #[arg(long)]
    pub whm: String,
    /// A file holding the WHM API token (root).
    #[arg(long)]
    pub token_file: PathBuf,
    /// Accept exactly the certificate with this SHA-256 fingerprint (hex, colons allowed)
    /// instead of verifying it against the public roots.
    #[arg(long)]
    pub tls_pin_sha256: Option<String>,
    /// Print one JSON document (schema: README.md, "Using it for real").
    #[arg(long)]
    pub json: bool,
}

/// Builds the WHM client of `siirto inventory` from its arguments.
fn inventory_client(args: &InventoryArgs) -> anyhow::Result<crate::whm::WhmClient> {
    let url = reqwest::Url::parse(&args.whm).with_context(|| format!("--whm {:?} is not a URL", args.whm))?;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading the token file {}", args.token_file.display()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(anyhow!("the token file {} is empty", args.token_file.display()));
    }
    let tls = match &args.tls_pin_sha256 {
        None => crate::whm::TlsPolicy::WebPki,
        Some(hex_pin) => {
            let cleaned: String = hex_pin.chars().filter(|c| *c != ':').collect();
            let bytes = hex::decode(cleaned.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| anyhow!("--tls-pin-sha256: expected 64 hex digits (a SHA-256 digest)"))?;
            crate::whm::TlsPolicy::PinSha256(bytes)
        }
    };
    if url.scheme() == "https" && matches!(tls, crate::whm::TlsPolicy::PinSha256(_)) {
        tracing::info!("WHM certificate pinned by its SHA-256 fingerprint");
    }
    crate::whm::WhmClient::new(
        url,
        crate::secret::Secret::new(token),
        tls,
        std::time::Duration::from_secs(60),
    )
    .map_err(|e| anyhow!("{e}"))
}

/// A migration id argument.
#[derive(Debug, Args)]
pub struct MigrationArg {
    /// The migration's id.
    pub migration: String,
}

/// `siirto approve` arguments.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The migration's id.
    pub migration: String,
    /// Who approves (default: the login name).
    #[arg(long)]
    pub by: Option<String>,
}

/// `siirto preflight` arguments.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The migration's id.
    pub migration: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `siirto abort` arguments.
#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The migration's id.
    pub migration: String,
    /// Why (recorded in the event log).
    #[arg(long)]
    pub reason: String,
}

/// `siirto reschedule` arguments.
#[derive(Debug, Args)]
pub struct RescheduleArgs {
    /// The migration's id.
    pub migration: String,
    /// The new cutover time (RFC 3339).
    #[arg(long)]
    pub cutover: String,
    /// Why (recorded in the event log and told to the customers already announced).
    #[arg(long)]
    pub reason: String,
}

/// `siirto retry` arguments.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The migration's id.
    pub migration: String,
    /// The held account's cPanel user.
    #[arg(long)]
    pub account: String,
}

/// `siirto ack` arguments.
#[derive(Debug, Args)]
pub struct AckArgs {
    /// The task's number, as `siirto status` lists it.
    pub task: i64,
    /// Who did it.
    #[arg(long)]
    pub by: String,
    /// What was done, for the timeline.
    #[arg(long)]
    pub note: Option<String>,
}

/// `siirto assign-ip` arguments.
#[derive(Debug, Args)]
pub struct AssignIpArgs {
    /// The migration's id.
    pub migration: String,
    /// The account's cPanel user.
    pub user: String,
    /// A dedicated IPv4 address of the target host that no account uses.
    pub ip: std::net::Ipv4Addr,
}

/// `siirto rollback` arguments.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The migration's id.
    pub migration: String,
    /// The account's cPanel user.
    #[arg(long)]
    pub account: String,
    /// Only this domain of the account (default: all of them).
    #[arg(long)]
    pub domain: Option<String>,
    /// Why (recorded in the event log with who asked).
    #[arg(long)]
    pub reason: String,
}

/// `siirto status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One migration (default: all).
    pub migration: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `siirto daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Stop once no migration has work left: exit 0 when every migration is settled (or
    /// aborted), exit 3 and name each migration that waits for an operator otherwise. For
    /// scripts and tests.
    #[arg(long)]
    pub exit_when_settled: bool,
}

/// `siirto watch` arguments.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The migration's id.
    pub migration: String,
    /// How often the store is read.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// One JSON object per change, one a line, instead of bars or text.
    #[arg(long)]
    pub json: bool,
}

/// `siirto log` arguments.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// The migration's id.
    pub migration: String,
    /// Only the events of this account (its domains' included).
    #[arg(long)]
    pub account: Option<String>,
    /// Only the events of this domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// Keep printing new events as they are written, until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    /// Print one JSON object per event, one per line.
    #[arg(long)]
    pub json: bool,
}

/// How often `siirto log --follow` looks for new events.
const LOG_FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// `siirto log`: the events so far, then (with `--follow`) new ones until Ctrl-C.
async fn log(config_path: &Path, args: LogArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&load_config(config_path)?).await?;
    let id = parse_id(&args.migration)?;
    store.require_migration(id.as_str()).await?;
    let filter = crate::status::LogFilter {
        account: args
            .account
            .as_deref()
            .map(AccountName::parse)
            .transpose()
            .map_err(|e| anyhow!("--account: {e}"))?,
        domain: args
            .domain
            .as_deref()
            .map(DomainName::parse)
            .transpose()
            .map_err(|e| anyhow!("--domain: {e}"))?,
    };
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut last = 0;
    loop {
        let (entries, next) = crate::status::log_entries(&store, id.as_str(), last, &filter).await?;
        last = next;
        for entry in &entries {
            output::log_entry(entry, args.json)?;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(LOG_FOLLOW_POLL) => {}
        }
    }
}

/// `siirto decommission` arguments.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DecommissionArgs {
    /// Postpone, skip or undo a stage.
    #[command(subcommand)]
    pub action: Option<DecommissionCommand>,
    /// The migration's id (to preview its stages).
    pub migration: Option<String>,
    /// Preview the stages (the default): dates, states, what each would touch now with the DNS
    /// gate asked now, and the accounts held with the evidence.
    #[arg(long)]
    pub plan: bool,
    /// Print the preview as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What to do to a decommission stage.
#[derive(Debug, Subcommand)]
pub enum DecommissionCommand {
    /// Run a stage's inverse: unsuspend the accounts a suspension suspended; a task to power
    /// on or reactivate the licence for the manual stages. Removals and destroyed disks cannot
    /// be undone.
    Undo {
        /// The migration's id.
        migration: String,
        /// The stage: its name ("suspend accounts"), action or place.
        #[arg(long)]
        stage: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Move a stage that has not finished to a later time.
    Postpone {
        /// The migration's id.
        migration: String,
        /// The stage: its name, action or place.
        #[arg(long)]
        stage: String,
        /// The new time (RFC 3339, e.g. 2027-02-01T08:00:00Z).
        #[arg(long)]
        until: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Leave an account out of the rest of the decommission: no stage suspends or removes it,
    /// and it no longer keeps the old server from being powered off.
    Exclude {
        /// The migration's id.
        migration: String,
        /// The account's cPanel user.
        #[arg(long)]
        account: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Never run a stage that has not finished; the next stage may then run.
    Skip {
        /// The migration's id.
        migration: String,
        /// The stage: its name, action or place.
        #[arg(long)]
        stage: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
}

/// `siirto tasks` arguments.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only this migration's tasks.
    pub migration: Option<String>,
    /// Print them as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Audit tools.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute a migration's event log hash chain from its first row; name the first row
    /// that does not match (edited, removed, reordered, or the tail cut off) and exit 1, or
    /// print the chain's head hash to keep elsewhere and exit 0.
    ///
    /// Example: siirto audit verify old1-to-new1
    Verify {
        /// The migration's id.
        migration: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Notice tools.
#[derive(Debug, Subcommand)]
pub enum NoticesCommand {
    /// List a migration's notices, oldest first: kind, state (queued, sending, failing, failed,
    /// sent, bounced, skipped_late), when, to whom, the subject, and why one failed, bounced or
    /// was skipped.
    ///
    /// Example: siirto notices list old1-to-new1 --state skipped_late
    /// Print a notice exactly as it would be sent now, without sending or writing anything.
    ///
    /// Example: siirto notices preview old1-to-new1 --kind advance --customer kukka0001 --lang fi
    Preview {
        /// The migration's id.
        migration: String,
        /// Which notice.
        #[arg(long, value_parser = ["advance", "start", "completion", "reseller"], default_value = "advance")]
        kind: String,
        /// Only this customer: a cPanel user of theirs, their address, or their customer key.
        #[arg(long)]
        customer: Option<String>,
        /// In this language instead of the customer's.
        #[arg(long, value_parser = ["en", "fi"])]
        lang: Option<String>,
    },
    List {
        /// The migration's id.
        migration: String,
        /// Only notices in this state.
        #[arg(long, value_parser = ["queued", "sending", "failing", "failed", "sent", "bounced", "skipped_late"])]
        state: Option<String>,
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// Playbook tools.
#[derive(Debug, Subcommand)]
pub enum PlaybookCommand {
    /// Validate a playbook; errors name the file, line, field and what was expected.
    ///
    /// Example: siirto playbook check playbooks/shared-hosting.toml
    Check {
        /// The playbook file.
        file: PathBuf,
    },
}

/// Config tools.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example config.
    ///
    /// Example: siirto config example > siirto.toml
    Example,
    /// Validate a config file (reads its secret files, connects to nothing).
    ///
    /// Example: siirto config check siirto.toml
    Check {
        /// The config file.
        file: PathBuf,
    },
}

fn actor() -> String {
    std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "operator".to_owned())
}

fn parse_id(id: &str) -> anyhow::Result<MigrationId> {
    MigrationId::parse(id).map_err(|e| anyhow!("{e}"))
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow!("{e}"))
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::connect(&config.database)
        .await
        .with_context(|| format!("opening the store {}", redact_url(&config.database)))
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("<redacted>"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn parse_time(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if text == "now" {
        return Ok(now);
    }
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&chrono::Utc)).with_context(|| {
        format!("--cutover {text:?}: expected an RFC 3339 time like 2026-12-01T22:00:00Z, or \"now\"")
    })
}

async fn decommission(config: &Path, args: DecommissionArgs, now: Timestamp) -> anyhow::Result<ExitCode> {
    let (_, store, world) = open_world(config).await?;
    match args.action {
        None => {
            let Some(id) = args.migration else {
                bail!("name the migration: siirto decommission MIGRATION --plan");
            };
            let id = parse_id(&id)?;
            let plan = crate::ops::decommission_plan(&store, Some(&world), &id).await?;
            output::decommission_plan(&plan, args.json)?;
        }
        Some(DecommissionCommand::Undo { migration, stage, reason }) => {
            let id = parse_id(&migration)?;
            let undone = crate::ops::undo_stage(&store, &world, &id, &stage, &actor(), &reason, now).await?;
            output::line(&format!(
                "stage {:?} of migration {id} undone: {} account(s) unsuspended{}",
                undone.stage,
                undone.accounts.len(),
                undone
                    .task
                    .map(|t| format!("; operator task {t} opened for the rest (siirto ack {t})"))
                    .unwrap_or_default()
            ));
        }
        Some(DecommissionCommand::Postpone { migration, stage, until, reason }) => {
            let id = parse_id(&migration)?;
            let until = chrono::DateTime::parse_from_rfc3339(&until)
                .map(|t| t.with_timezone(&chrono::Utc))
                .with_context(|| {
                format!("--until {until:?}: expected an RFC 3339 time like 2027-02-01T08:00:00Z")
            })?;
            let row = crate::ops::postpone_stage(&store, &id, &stage, until, &actor(), &reason, now).await?;
            output::line(&format!(
                "stage {:?} of migration {id} postponed to {}",
                row.name,
                until.to_rfc3339()
            ));
        }
        Some(DecommissionCommand::Exclude { migration, account, reason }) => {
            let id = parse_id(&migration)?;
            let user = AccountName::parse(&account).map_err(|e| anyhow!("{e}"))?;
            crate::ops::exclude_account(&store, &id, &user, &actor(), &reason, now).await?;
            output::line(&format!("account {user} of migration {id} is left out of the decommission"));
        }
        Some(DecommissionCommand::Skip { migration, stage, reason }) => {
            let id = parse_id(&migration)?;
            let row = crate::ops::skip_stage(&store, &id, &stage, &actor(), &reason, now).await?;
            output::line(&format!("stage {:?} of migration {id} skipped", row.name));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The config, its store and world, for the operator actions that reach a host.
async fn open_world(config_path: &Path) -> anyhow::Result<(Config, Store, World)> {
    let config = load_config(config_path)?;
    let store = open_store(&config).await?;
    let world = World::from_config(&config)?;
    Ok((config, store, world))
}

/// Exit 1 when a transfer session could not be told (the migration's own state changed).
fn control_exit(control: &crate::ops::SessionControl) -> ExitCode {
    if control.all_told() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// Runs one command; the binary maps the result to an exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match cli.command {
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Daemon(args) => {
            let config = load_config(&cli.config)?;
            output::line(&format!(
                "siirto daemon {} running; SIGTERM or Ctrl-C stops it (the steps in flight get {} to finish)",
                crate::daemon::owner(&config),
                humantime::format_duration(config.daemon.stop_timeout)
            ));
            let outcome =
                crate::daemon::run(&config, crate::daemon::stop_signal(), args.exit_when_settled).await?;
            match outcome {
                None => Ok(ExitCode::SUCCESS),
                Some(crate::daemon::Outcome::Settled(ids)) => {
                    let ids = if ids.is_empty() { "no migrations".to_owned() } else { ids.join(", ") };
                    output::line(&format!("settled: {ids}"));
                    Ok(ExitCode::SUCCESS)
                }
                Some(crate::daemon::Outcome::NeedsOperator(waiting)) => {
                    output::line(
                        "no work left, but these migrations wait for an operator (siirto status ID):",
                    );
                    for (id, why) in waiting {
                        output::line(&format!("  {id}: {why}"));
                    }
                    Ok(ExitCode::from(3))
                }
            }
        }
        Command::Inventory(args) => {
            let whm = inventory_client(&args)?;
            let inventory = crate::inventory::inventory(&whm)
                .await
                .with_context(|| format!("inventorying {}", args.whm))?;
            output::inventory(&inventory, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => {
            let config = load_config(&cli.config)?;
            let playbook = Playbook::load(&args.playbook).map_err(|e| anyhow!("{e}"))?;
            for host in [&args.from, &args.to] {
                if !config.hosts.contains_key(host) {
                    return Err(anyhow!("host {host:?} is not in {} ([hosts.{host}])", cli.config.display()));
                }
            }
            let cutover_at = parse_time(&args.cutover, now)?;
            // Named after the night it is for, not the day it was planned.
            let id = match &args.id {
                Some(id) => parse_id(id)?,
                None => parse_id(&format!("{}-to-{}-{}", args.from, args.to, cutover_at.format("%Y%m%d")))?,
            };
            let store = open_store(&config).await?;
            let adapters = World::from_config(&config)?;
            let request = crate::plan::PlanRequest {
                id,
                source: &args.from,
                target: &args.to,
                playbook: &playbook,
                cutover_at,
                actor: &actor(),
            };
            let plan = crate::plan::plan(&store, &config, &adapters, request, now).await?;
            output::plan_report(&plan, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve(args) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            let by = args.by.unwrap_or_else(actor);
            let state = crate::ops::approve(&store, &parse_id(&args.migration)?, &by, now).await?;
            output::line(&format!(
                "migration {} is {} by {by}; next: siirto start {}",
                args.migration,
                state.name(),
                args.migration
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Start(arg) => {
            let (config, store, world) = open_world(&cli.config).await?;
            let id = parse_id(&arg.migration)?;
            let outcome = crate::ops::start(&store, &config, &world, &id, &actor(), now).await?;
            output::preflight(&outcome.report, false)?;
            match outcome.started {
                Some(state) => {
                    output::line(&format!(
                        "migration {} is {}; the daemon takes it from here",
                        arg.migration,
                        state.name()
                    ));
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(anyhow!(
                    "migration {id} not started: pre-flight found {} hard failure(s) (above); fix them and run siirto start again",
                    outcome.report.hard_failures().count()
                )),
            }
        }
        Command::Preflight(args) => {
            let (config, store, world) = open_world(&cli.config).await?;
            let id = parse_id(&args.migration)?;
            let report = crate::ops::preflight(&store, &config, &world, &id, &actor(), now).await?;
            output::preflight(&report, args.json)?;
            Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Pause(arg) => {
            let (_, store, world) = open_world(&cli.config).await?;
            let id = parse_id(&arg.migration)?;
            let control = crate::ops::pause(&store, &world, &id, &actor(), now).await?;
            output::session_control(&arg.migration, control.state.name(), &control.sessions);
            Ok(control_exit(&control))
        }
        Command::Resume(arg) => {
            let (_, store, world) = open_world(&cli.config).await?;
            let id = parse_id(&arg.migration)?;
            let control = crate::ops::resume(&store, &world, &id, &actor(), now).await?;
            output::session_control(&arg.migration, control.state.name(), &control.sessions);
            Ok(control_exit(&control))
        }
        Command::Abort(args) => {
            let (_, store, world) = open_world(&cli.config).await?;
            let id = parse_id(&args.migration)?;
            let control = crate::ops::abort(&store, &world, &id, &args.reason, &actor(), now).await?;
            output::session_control(&args.migration, control.state.name(), &control.sessions);
            Ok(control_exit(&control))
        }
        Command::Reschedule(args) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            let cutover = parse_time(&args.cutover, now)?;
            let done = crate::ops::reschedule(
                &store,
                &parse_id(&args.migration)?,
                cutover,
                &args.reason,
                &actor(),
                now,
            )
            .await?;
            output::line(&format!(
                "migration {} now cuts over at {} (was {}); {} scheduled step(s) moved{}",
                args.migration,
                done.to.to_rfc3339(),
                done.from.to_rfc3339(),
                done.moved_jobs,
                if done.correcting {
                    "; customers told the old date get a correction, the others the new date only"
                } else {
                    ""
                }
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry(args) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            let user = AccountName::parse(&args.account).map_err(|e| anyhow!("{e}"))?;
            let state = crate::ops::retry(&store, &parse_id(&args.migration)?, &user, &actor(), now).await?;
            output::line(&format!("account {} is {} again", args.account, state.name()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Ack(args) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            let done = crate::ops::ack_task(&store, args.task, &args.by, args.note.as_deref(), now).await?;
            let more = if done.confirmations < done.needs {
                format!(
                    " ({} of {} confirmations: someone else must confirm it too)",
                    done.confirmations, done.needs
                )
            } else {
                String::new()
            };
            output::line(&format!(
                "operator task {} of migration {} acknowledged by {}: {}{more}",
                done.task, done.migration, args.by, done.what
            ));
            if let Some(stage) = done.stage_done {
                output::line(&format!(
                    "decommission stage {stage:?} of migration {} is done",
                    done.migration
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::AssignIp(args) => {
            let (_, store, world) = open_world(&cli.config).await?;
            let id = parse_id(&args.migration)?;
            let user = AccountName::parse(&args.user).map_err(|e| anyhow!("{e}"))?;
            let assigned = crate::ops::assign_ip(&store, &world, &id, &user, args.ip, &actor(), now).await?;
            output::line(&format!(
                "account {user} ({} at the source) gets {} on the target; it is {} and moves after the other accounts{}",
                assigned.source_ip,
                args.ip,
                assigned.state.name(),
                if assigned.transfer_scheduled { "" } else { " once the TTL gate opens" }
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback(args) => {
            let (_, store, world) = open_world(&cli.config).await?;
            let id = parse_id(&args.migration)?;
            let user = AccountName::parse(&args.account).map_err(|e| anyhow!("{e}"))?;
            let domain =
                args.domain.as_deref().map(DomainName::parse).transpose().map_err(|e| anyhow!("{e}"))?;
            let request = crate::ops::RollbackRequest {
                id: &id,
                user: &user,
                domain: domain.as_ref(),
                reason: &args.reason,
            };
            let state = crate::ops::rollback(&store, &world, request, &actor(), now).await?;
            output::line(&format!(
                "account {} is {}; the daemon points its records back at the source",
                args.account,
                state.name()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            match args.migration {
                // One migration named: its status alone (with --json, one object).
                Some(id) => {
                    let id = parse_id(&id)?;
                    let status = crate::status::migration_status(&store, id.as_str()).await?;
                    output::status(&status, args.json)?;
                }
                None => {
                    let mut statuses = Vec::new();
                    for row in store.migrations().await? {
                        statuses.push(crate::status::migration_status(&store, &row.id).await?);
                    }
                    output::statuses(&statuses, args.json)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Log(args) => log(&cli.config, args).await,
        Command::Watch(args) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            let id = parse_id(&args.migration)?;
            store.require_migration(id.as_str()).await?;
            crate::watch::watch(&store, id.as_str(), args.interval, args.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Notices(NoticesCommand::Preview { migration, kind, customer, lang }) => {
            let config = load_config(&cli.config)?;
            let store = open_store(&config).await?;
            let id = parse_id(&migration)?;
            store.require_migration(id.as_str()).await?;
            let clock: std::sync::Arc<dyn crate::engine::Clock> =
                std::sync::Arc::new(crate::engine::SystemClock);
            let engine = crate::engine::Engine::from_config(&config, store, clock)?;
            let notices =
                engine.preview_notices(id.as_str(), &kind, customer.as_deref(), lang.as_deref()).await?;
            if notices.is_empty() {
                return Err(anyhow!("no customer of migration {id} matches {customer:?}"));
            }
            for (to, subject, body) in notices {
                output::raw(&format!(
                    "--- {kind} notice to {} ---\nSubject: {subject}\n\n{}\n\n",
                    to.join(", "),
                    body.trim_end()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Notices(NoticesCommand::List { migration, state, json }) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            let id = parse_id(&migration)?;
            let entries = crate::status::notices(&store, id.as_str(), state.as_deref()).await?;
            output::notices(&entries, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Decommission(args) => decommission(&cli.config, args, now).await,
        Command::Tasks(args) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            let ids = match args.migration {
                Some(id) => vec![parse_id(&id)?.to_string()],
                None => store.migrations().await?.into_iter().map(|m| m.id).collect(),
            };
            let mut all = Vec::new();
            for id in ids {
                for task in crate::status::operator_tasks(&store, &id).await? {
                    all.push((id.clone(), task));
                }
            }
            output::tasks(&all, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify { migration, json }) => {
            let store = open_store(&load_config(&cli.config)?).await?;
            let id = parse_id(&migration)?;
            if store.migration(id.as_str()).await?.is_none() {
                bail!("there is no migration {id}");
            }
            let report = store.verify_chain(id.as_str()).await?;
            output::chain_report(&report, json)?;
            Ok(if report.broken.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Playbook(PlaybookCommand::Check { file }) => {
            let playbook = Playbook::load(&file).map_err(|e| anyhow!("{e}"))?;
            output::line(&format!("{}: playbook {:?} is valid", file.display(), playbook.name));
            // What a customer would read, with the example config's hosts: a template naming
            // the wrong variable shows here, not in a customer's mailbox.
            let samples = playbook.notices.rendered_samples().map_err(|e| anyhow!("{e:#}"))?;
            for crate::playbook::Sample { kind, subject, body, html } in samples {
                let html =
                    html.map(|h| format!("\n(and an HTML part of {} bytes)\n", h.len())).unwrap_or_default();
                output::raw(&format!(
                    "\n--- {kind} notice, rendered with sample values ---\nSubject: {}\n\n{}\n{html}",
                    subject.trim(),
                    body.trim_end()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ConfigTools(ConfigCommand::Example) => {
            output::raw(crate::config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::ConfigTools(ConfigCommand::Check { file }) => {
            let config = load_config(&file)?;
            output::line(&format!(
                "{}: valid; {} host(s), database {}",
                file.display(),
                config.hosts.len(),
                redact_url(&config.database)
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim(args) => {
            crate::sim::run_standalone(args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
