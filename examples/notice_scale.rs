//! Notices at scale: renders and delivers many completion notices through siirto's real outbox
//! (outbox rows and `send_notice` jobs in a SQLite store, claimed under leases by the engine,
//! each sent over SMTP and marked sent) to a real SMTP server on loopback, and compares the
//! rate with a plain lettre client sending the same messages, pre-rendered, to the same server
//! in the same run.
//!
//! ```text
//! cargo run --release --example notice_scale                        # 20,000 notices, 4 rounds
//! cargo run --release --example notice_scale -- --notices 2000      # a quick smoke test
//! cargo run --release --example notice_scale -- --workers 16 --idle-poll 100ms --lease 10s
//! cargo run --release --example notice_scale -- --store-synchronous normal --store-dir /dev/shm
//! ```
//!
//! The server is Debian's aiosmtpd (package `python3-aiosmtpd`) run by `/usr/bin/python3` on
//! 127.0.0.1, started and stopped by this program: it accepts every message and only counts
//! them (the count is checked after every pass).
//!
//! What is measured, in rounds (`--rounds`, the notices split between them), the two clients
//! alternating (raw first in odd rounds, siirto first in even ones) so that a change in the
//! machine's load weighs on both alike:
//!
//! - **siirto**: the whole path of a completion notice after its account arrived, timed from
//!   the first render to the last sent-mark: each notice rendered from the demo playbook's
//!   English completion template (`siirto::notify::render` / `render_html`: subject, text and
//!   HTML part, as the engine renders them), written with `Tx::enqueue_notice` and one
//!   `send_notice` job each (the job the engine schedules, `send_notice:<id>`) in
//!   transactions of 250; the engine (`Engine::run`, in-process as `siirto daemon` runs it,
//!   `--workers` jobs at once) starts once the first transaction is committed and sends while
//!   the rest are rendered and written, as a daemon sends while its other jobs write notices.
//!   Each worker claims a send job and up to 127 more under leases and runs them as a batch
//!   over one SMTP session: the attempts on record in one transaction, then each message,
//!   its sent-mark and job end committed as the server accepts it (several in one
//!   transaction when they are accepted while the one before commits), the session kept for
//!   the next batch. The round ends when the store holds no unsent notice (polled every
//!   10 ms on a read-only connection of the benchmark's own). The time spent rendering, the
//!   time spent writing and the send phase (engine start to last sent-mark, overlapping the
//!   writes after the first) are printed too. The store is a SQLite file
//!   (`synchronous=full`, siirto's default, unless `--store-synchronous`) in the system's
//!   temporary directory unless `--store-dir`; the migration is a row in state `cut_over`
//!   with the demo playbook, inserted directly (nothing is planned, so there are no account
//!   rows: the sent-mark's transaction finds no account waiting for the notice), and the
//!   config's hosts and DNS point at loopback ports nothing listens on (send jobs never
//!   contact them).
//! - **raw**: the same messages, rendered and built before the clock starts, sent by a plain
//!   client on lettre's `AsyncSmtpConnection`: `--raw-connections` connections (default: as
//!   many as siirto's workers) each kept open for the whole pass and sending one message after
//!   another (MAIL, RCPT, DATA; no store, no jobs), with `TCP_NODELAY` as siirto's channel
//!   sets it. (lettre's own pooled `AsyncSmtpTransport` is not available: siirto builds lettre
//!   without its `pool` feature, and without it the transport opens a connection per message.)
//!
//! With `--raw-per-message`, a third pass per round: the raw client opening a new connection
//! for every message (connect, greeting, EHLO, the message, QUIT), as siirto's SMTP channel
//! does, to tell what the connections cost apart from what the store and the jobs cost.
//!
//! Next to each figure: the CPU time per message this process (siirto's engine and store, or
//! the raw client) and aiosmtpd used during the pass (`/proc/PID/stat`), which tells on a
//! CPU-bound machine where the time goes; and the machine's load average (`/proc/loadavg`),
//! before and after the run and after each round.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use lettre::address::Envelope;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use siirto::config::Config;
use siirto::domain::MigrationState;
use siirto::engine::{Engine, SystemClock};
use siirto::notify::{OutgoingNotice, build_message, render, render_html};
use siirto::playbook::Playbook;
use siirto::store::{MigrationRow, NewJob, NewNotice, Store};

const PLAYBOOK: &str = include_str!("../playbooks/demo.toml");
const PYTHON: &str = "/usr/bin/python3";
const MIGRATION: &str = "bench";
const FROM: &str = "Example Hosting <support@example.test>";
/// Notices (and their jobs) written per store transaction.
const WRITE_BATCH: usize = 250;

/// aiosmtpd accepting every message: counts them and publishes the count in a file (written
/// to a temporary name and renamed) every 20 ms while it changes; exits when stdin closes
/// (this program ended, however it ended).
const SERVER_SCRIPT: &str = r#"
import asyncio, os, sys
from aiosmtpd.smtp import SMTP

count_file = sys.argv[1]
count = 0

class Count:
    async def handle_DATA(self, server, session, envelope):
        global count
        count += 1
        return "250 OK"

async def publish():
    last = -1
    tmp = count_file + ".tmp"
    while True:
        if count != last:
            last = count
            with open(tmp, "w") as f:
                f.write(str(last))
            os.replace(tmp, count_file)
        await asyncio.sleep(0.02)

async def main():
    loop = asyncio.get_running_loop()
    handler = Count()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="smtp.bench.test", enable_SMTPUTF8=True),
        host="127.0.0.1", port=0)
    publisher = loop.create_task(publish())
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    await stdin.read()
    publisher.cancel()

asyncio.run(main())
"#;

/// Renders and sends many notices through siirto's outbox and through a plain lettre client.
#[derive(Debug, Parser)]
#[command(name = "notice_scale")]
struct Args {
    /// Notices in all (each client sends all of them, split between the rounds).
    #[arg(long, default_value_t = 20_000)]
    notices: usize,
    /// Jobs the engine runs at once (default: the demo playbook's concurrency.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// Rounds, the clients alternating; the notices are split between them.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Connections of the raw client, each sending one message after another (default: the
    /// engine's workers).
    #[arg(long)]
    raw_connections: Option<usize>,
    /// Also time the raw client opening a new connection per message.
    #[arg(long)]
    raw_per_message: bool,
    /// The config's `[daemon] idle_poll`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    idle_poll: Duration,
    /// The config's `[daemon] lease`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// The SQLite store's `synchronous` (`full`, siirto's default, or `normal`).
    #[arg(long, default_value = "full")]
    store_synchronous: String,
    /// Where the store's file goes (default: the system's temporary directory).
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// Give up on a pass after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn main() -> Result<()> {
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

/// The machine's load averages (1, 5, 15 minutes), from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

async fn run(args: Args) -> Result<()> {
    let playbook = Playbook::parse(PLAYBOOK, "playbooks/demo.toml").map_err(|e| anyhow!("{e}"))?;
    let workers = args.workers.unwrap_or(playbook.concurrency.workers as usize);
    let connections = args.raw_connections.unwrap_or(workers);
    ensure!(args.notices > 0 && args.rounds > 0, "--notices and --rounds must be positive");
    ensure!(workers > 0 && connections > 0, "--workers and --raw-connections must be positive");
    ensure!(args.rounds <= args.notices, "more rounds than notices");

    let dir = tempfile::Builder::new().prefix("siirto-notice-scale").tempdir()?;
    let store_dir = match &args.store_dir {
        Some(dir) => tempfile::Builder::new().prefix("siirto-notice-scale").tempdir_in(dir)?,
        None => tempfile::Builder::new().prefix("siirto-notice-scale-store").tempdir()?,
    };
    let server = SmtpServer::start(dir.path())?;
    let db_path = store_dir.path().join("siirto.db");
    println!(
        "notice_scale: {} notices in {} rounds, siirto {workers} workers (idle_poll {}, lease {}), raw {connections} connections; aiosmtpd on {}; store {} (synchronous={}); {} CPUs, load average {}",
        args.notices,
        args.rounds,
        humantime::format_duration(args.idle_poll),
        humantime::format_duration(args.lease),
        server.port,
        db_path.display(),
        args.store_synchronous,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load_average(),
    );

    let database = format!("sqlite://{}?synchronous={}", db_path.display(), args.store_synchronous);
    let config = write_config(dir.path(), &database, server.port, &args)?;
    let store = Store::connect(&config.database).await?;
    insert_migration(&store, args.notices).await?;
    let engine =
        Arc::new(Engine::from_config(&config, store.clone(), Arc::new(SystemClock))?.with_workers(workers));

    // The raw client's messages: the same notices, rendered and built before any clock starts.
    let prepared = Instant::now();
    let raw_messages: Vec<RawMessage> = (0..args.notices)
        .map(|i| {
            let notice = render_notice(&playbook, i)?;
            let outgoing = OutgoingNotice {
                message_id: notice.message_id,
                from: FROM.to_owned(),
                to: serde_json::from_str(&notice.recipients)?,
                subject: notice.subject,
                body: notice.body,
                html: notice.html,
                return_path: None,
            };
            let message = build_message(&outgoing)?;
            Ok(RawMessage { envelope: message.envelope().clone(), bytes: message.formatted() })
        })
        .collect::<Result<_>>()?;
    let raw_messages = Arc::new(raw_messages);
    let size = raw_messages.iter().map(|m| m.bytes.len()).sum::<usize>() / args.notices;
    println!(
        "  {} messages of {size} bytes on average (text and HTML parts) pre-rendered for the raw client in {:.1} s",
        args.notices,
        prepared.elapsed().as_secs_f64()
    );

    let load_before = load_average();
    let per_round = args.notices.div_ceil(args.rounds);
    let mut rounds = Vec::new();
    let mut start = 0;
    for round in 1..=args.rounds {
        let range = start..(start + per_round).min(args.notices);
        if range.is_empty() {
            break;
        }
        start = range.end;
        let raw = || measured(&server, raw_pass(&server, raw_messages.clone(), range.clone(), connections));
        let ours = || {
            measured(
                &server,
                siirto_pass(&engine, &store, &playbook, &server, &db_path, range.clone(), args.timeout),
            )
        };
        let ((raw, raw_cpu), (siirto, siirto_cpu)) = if round % 2 == 1 {
            let raw = raw().await?;
            (raw, ours().await?)
        } else {
            let siirto = ours().await?;
            (raw().await?, siirto)
        };
        let per_message = if args.raw_per_message {
            let pass = async {
                let before = server.count()?;
                let elapsed =
                    raw_per_message(server.port, raw_messages.clone(), range.clone(), connections).await?;
                server.wait_for(before + range.len(), Duration::from_secs(10)).await?;
                Ok(elapsed)
            };
            Some(measured(&server, pass).await?)
        } else {
            None
        };
        let n = range.len();
        let ratio = rate(n, siirto.total) / rate(n, raw);
        println!(
            "  round {round}/{}: {n} notices: raw {:.0} msg/s ({:.2} s) | siirto {:.0} msg/s ({:.2} s: render {:.2} s, write {:.2} s, send {:.2} s = {:.0} msg/s) | siirto/raw {ratio:.2}{} | load {}",
            args.rounds,
            rate(n, raw),
            raw.as_secs_f64(),
            rate(n, siirto.total),
            siirto.total.as_secs_f64(),
            siirto.render.as_secs_f64(),
            siirto.write.as_secs_f64(),
            siirto.send.as_secs_f64(),
            rate(n, siirto.send),
            per_message.as_ref().map_or(String::new(), |(d, _)| format!(
                " | raw, a connection per message {:.0} msg/s",
                rate(n, *d)
            )),
            load_average(),
        );
        println!(
            "    CPU per message: raw {} | siirto {}{}",
            raw_cpu.per_message(n),
            siirto_cpu.per_message(n),
            per_message.as_ref().map_or(String::new(), |(_, cpu)| format!(
                " | raw, a connection per message {}",
                cpu.per_message(n)
            )),
        );
        rounds.push(Round { n, raw, siirto, per_message: per_message.map(|(d, _)| d), raw_cpu, siirto_cpu });
    }
    let load_after = load_average();

    // Sent once, each of them, and the server took every message of both clients.
    let outbox = store.outbox(MIGRATION).await?;
    let unsent = outbox.iter().filter(|n| n.sent_at.is_none()).count();
    let resends: i64 = outbox.iter().map(|n| i64::from(n.resends)).sum();
    let attempts_over_one = outbox.iter().filter(|n| n.delivery_attempts != 1).count();
    ensure!(outbox.len() == args.notices, "{} outbox rows, {} expected", outbox.len(), args.notices);
    ensure!(unsent == 0 && resends == 0, "{unsent} notices unsent, {resends} resent");
    let passes = if args.raw_per_message { 3 } else { 2 };
    let delivered = server.count()?;
    ensure!(
        delivered == passes * args.notices,
        "the server took {delivered} messages, {} sent",
        passes * args.notices
    );

    let total = |f: &dyn Fn(&Round) -> Duration| rounds.iter().map(f).sum::<Duration>();
    let (raw, ours, send) = (total(&|r| r.raw), total(&|r| r.siirto.total), total(&|r| r.siirto.send));
    let ratios: Vec<f64> = rounds.iter().map(|r| rate(r.n, r.siirto.total) / rate(r.n, r.raw)).collect();
    let send_ratios: Vec<f64> = rounds.iter().map(|r| rate(r.n, r.siirto.send) / rate(r.n, r.raw)).collect();
    let best_raw = rounds.iter().map(|r| rate(r.n, r.raw)).fold(0.0, f64::max);
    let best_ours = rounds.iter().map(|r| rate(r.n, r.siirto.total)).fold(0.0, f64::max);
    let ratio = rate(args.notices, ours) / rate(args.notices, raw);
    println!(
        "siirto: {} notices rendered, written and sent in {:.1} s: {:.0} msg/s (send phase alone {:.0} msg/s; best round {best_ours:.0} msg/s); every notice sent once ({} with more than one attempt)",
        args.notices,
        ours.as_secs_f64(),
        rate(args.notices, ours),
        rate(args.notices, send),
        attempts_over_one,
    );
    println!(
        "raw lettre, {connections} connections reused: {} messages in {:.1} s: {:.0} msg/s (best round {best_raw:.0} msg/s)",
        args.notices,
        raw.as_secs_f64(),
        rate(args.notices, raw),
    );
    let cpu = |f: &dyn Fn(&Round) -> Cpu| rounds.iter().map(f).fold(Cpu::default(), Cpu::add);
    println!(
        "CPU per message: siirto {}; raw {}",
        cpu(&|r| r.siirto_cpu).per_message(args.notices),
        cpu(&|r| r.raw_cpu).per_message(args.notices),
    );
    if args.raw_per_message {
        let per_message = rounds.iter().filter_map(|r| r.per_message).sum::<Duration>();
        println!(
            "raw lettre, a new connection per message ({connections} at once): {:.0} msg/s",
            rate(args.notices, per_message)
        );
    }
    println!(
        "siirto/raw: {ratio:.2} overall (rounds: median {:.2}, best {:.2}; send phase alone: median {:.2}); target >= 0.8: {}; load average {load_before} -> {load_after}",
        median(ratios.clone()),
        ratios.iter().copied().fold(0.0, f64::max),
        median(send_ratios),
        if ratio >= 0.8 { "ok" } else { "BELOW" },
    );
    drop(server);
    Ok(())
}

/// One round's figures.
struct Round {
    n: usize,
    raw: Duration,
    siirto: SiirtoPass,
    per_message: Option<Duration>,
    raw_cpu: Cpu,
    siirto_cpu: Cpu,
}

/// CPU seconds (user + system) used during a pass: this process (siirto's engine and store, or
/// the raw client) and the SMTP server.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    own: f64,
    server: f64,
}

impl Cpu {
    fn now(server: &SmtpServer) -> Cpu {
        Cpu {
            own: cpu_seconds("/proc/self/stat"),
            server: cpu_seconds(&format!("/proc/{}/stat", server.child.id())),
        }
    }

    fn per_message(&self, n: usize) -> String {
        let us = |s: f64| s * 1e6 / n as f64;
        format!("{:.0} µs here + {:.0} µs aiosmtpd", us(self.own), us(self.server))
    }

    fn add(self, other: Cpu) -> Cpu {
        Cpu { own: self.own + other.own, server: self.server + other.server }
    }
}

/// Runs `pass` and measures the CPU it took, here and in the server.
async fn measured<T>(
    server: &SmtpServer,
    pass: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, Cpu)> {
    let before = Cpu::now(server);
    let out = pass.await?;
    let after = Cpu::now(server);
    Ok((out, Cpu { own: after.own - before.own, server: after.server - before.server }))
}

/// CPU seconds (user + system) of the process whose `/proc/PID/stat` is at `path` (0 when it
/// cannot be read), at Linux's 100 clock ticks a second.
fn cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After the command name in parentheses: utime and stime are the 12th and 13th fields.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// What siirto's pass took: render, write and send, and the whole.
struct SiirtoPass {
    render: Duration,
    write: Duration,
    send: Duration,
    total: Duration,
}

/// A config whose hosts and DNS are loopback ports nothing listens on (send jobs never contact
/// them) and whose `[mail]` is the SMTP server.
fn write_config(dir: &Path, database: &str, smtp_port: u16, args: &Args) -> Result<Config> {
    for name in ["old.token", "new.token", "pdns.key"] {
        std::fs::write(dir.join(name), "notice-scale-unused-secret\n")?;
    }
    let text = format!(
        r#"database = "{database}"

[daemon]
owner = "notice-scale"
lease = "{lease}"
idle_poll = "{idle_poll}"

[hosts.old]
whm_url = "https://127.0.0.1:9"
token_file = "old.token"
ip = "192.0.2.10"
hostname = "old.example.test"

[hosts.new]
whm_url = "https://127.0.0.1:9"
token_file = "new.token"
ip = "198.51.100.20"
hostname = "new.example.test"

[dns]
provider = "powerdns"
api_url = "http://127.0.0.1:9"
api_key_file = "pdns.key"
nameservers = ["127.0.0.1:9"]

[mail]
from = "{FROM}"
language = "en"
channel = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
"#,
        lease = humantime::format_duration(args.lease),
        idle_poll = humantime::format_duration(args.idle_poll),
    );
    let path = dir.join("siirto.toml");
    std::fs::write(&path, &text)?;
    Config::load(&path).map_err(|e| anyhow!("{e}"))
}

/// The migration, in state `cut_over` (the engine runs its jobs), with the demo playbook.
async fn insert_migration(store: &Store, accounts: usize) -> Result<()> {
    let now = chrono::Utc::now();
    let state = MigrationState::CutOver { at: now, arrived: accounts as u32, held: 0 };
    let ms = now.timestamp_millis();
    let mut tx = store.begin().await?;
    tx.insert_migration(&MigrationRow {
        id: MIGRATION.to_owned(),
        source_host: "old".to_owned(),
        target_host: "new".to_owned(),
        playbook: PLAYBOOK.to_owned(),
        cutover_at: ms - 3_600_000,
        state: state.name().to_owned(),
        data: serde_json::to_string(&state)?,
        created_at: ms,
        updated_at: ms,
    })
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Customer `i`'s completion notice, rendered from the playbook's English template with the
/// variables the engine gives it: one account with its main domain and `www`.
fn render_notice(playbook: &Playbook, i: usize) -> Result<NewNotice> {
    let user = format!("kukka{i:05}");
    let domain = format!("kukka{i:05}.fi");
    let domains = vec![domain.clone(), format!("shop.{domain}")];
    let email = format!("info@{domain}");
    let context = serde_json::json!({
        "migration": MIGRATION,
        "account": user,
        "contact_email": email,
        "main_domain": domain,
        "domains": domains,
        "source_host": "old.example.test",
        "target_host": "new.example.test",
        "target_ip": "198.51.100.20",
        "external_records": [],
        "domains_to_point": [],
        "customer_name": format!("Kukkakauppa {i} Oy"),
        "accounts": [{ "account": user, "main_domain": domain, "domains": domains, "dedicated_ip": "" }],
        "external_domains": [],
        "cutover_date": "2026-03-14",
        "cutover_time": "22:00",
    });
    let template = playbook.notices.completion.for_language("en");
    let subject = render(&template.subject, &context)?.trim().to_owned();
    let body = render(&template.body, &context)?;
    let html = template.html.as_ref().map(|html| render_html(html, &context)).transpose()?;
    Ok(NewNotice {
        migration_id: MIGRATION.to_owned(),
        account: Some(user.clone()),
        kind: "completion".to_owned(),
        message_id: format!("<completion.{user}.{MIGRATION}@siirto>"),
        dedupe_key: format!("completion:{MIGRATION}:{user}"),
        recipients: serde_json::to_string(&[email])?,
        subject,
        body,
        html,
        created_at: chrono::Utc::now().timestamp_millis(),
    })
}

/// siirto's pass over notices `range`: render, write (outbox rows and send jobs), then the
/// engine sends them; ends when the store holds no unsent notice.
async fn siirto_pass(
    engine: &Arc<Engine>,
    store: &Store,
    playbook: &Playbook,
    server: &SmtpServer,
    database: &Path,
    range: std::ops::Range<usize>,
    timeout: Duration,
) -> Result<SiirtoPass> {
    use sqlx::Connection;
    // The benchmark watches for the last sent-mark on a read-only connection of its own, so
    // that its polls take nothing from the engine's pool.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(database).read_only(true);
    let mut watcher = sqlx::sqlite::SqliteConnection::connect_with(&options).await?;
    let before = server.count()?;
    let n = range.len();
    let started = Instant::now();
    let mut render = Duration::ZERO;
    let mut write = Duration::ZERO;
    let mut daemon = None;
    let mut engine_started = started;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_rx = Some(stop_rx);
    let indices: Vec<usize> = range.collect();
    for chunk in indices.chunks(WRITE_BATCH) {
        let at = Instant::now();
        let notices: Vec<NewNotice> =
            chunk.iter().map(|&i| render_notice(playbook, i)).collect::<Result<_>>()?;
        render += at.elapsed();
        let at = Instant::now();
        let mut tx = store.begin().await?;
        let mut jobs = Vec::with_capacity(notices.len());
        for (notice, id) in notices.iter().zip(tx.enqueue_notices(&notices).await?) {
            let id = id.ok_or_else(|| anyhow!("notice {} is in the outbox already", notice.dedupe_key))?;
            jobs.push(NewJob {
                migration_id: MIGRATION.to_owned(),
                kind: "send_notice".to_owned(),
                subject: id.to_string(),
                payload: "{}".to_owned(),
                due_at: notice.created_at,
                dedupe_key: format!("send_notice:{id}"),
            });
        }
        tx.schedule_jobs(&jobs).await?;
        tx.commit().await?;
        write += at.elapsed();
        // The engine starts with the first notices on record and sends while the rest are
        // rendered and written, as a daemon sends while its other jobs write notices.
        if let Some(stop_rx) = stop_rx.take() {
            engine_started = Instant::now();
            daemon = Some(tokio::spawn(Arc::clone(engine).run(async {
                let _ = stop_rx.await;
            })));
        }
    }
    let written = Instant::now();
    let deadline = written + timeout;
    loop {
        let unsent: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE sent_at IS NULL)")
            .fetch_one(&mut watcher)
            .await?;
        if !unsent {
            break;
        }
        if Instant::now() > deadline {
            bail!("siirto: notices still unsent after {timeout:?}");
        }
        // The benchmark's own wait for the last sent-mark.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = Instant::now();
    let _ = stop_tx.send(());
    if let Some(daemon) = daemon {
        daemon.await.context("the engine task")??;
    }
    server.wait_for(before + n, Duration::from_secs(10)).await?;
    watcher.close().await?;
    Ok(SiirtoPass { render, write, send: sent - engine_started, total: sent - started })
}

/// One pre-built message of the raw client.
struct RawMessage {
    envelope: Envelope,
    bytes: Vec<u8>,
}

/// Connects as siirto's channel does (`TCP_NODELAY`, then lettre's greeting and EHLO).
async fn connect(port: u16) -> Result<AsyncSmtpConnection> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    Ok(AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &ClientId::default()).await?)
}

/// One raw pass over `range`, checked against the server's count.
async fn raw_pass(
    server: &SmtpServer,
    messages: Arc<Vec<RawMessage>>,
    range: std::ops::Range<usize>,
    connections: usize,
) -> Result<Duration> {
    let before = server.count()?;
    let n = range.len();
    let elapsed = raw_pooled(server.port, messages, range, connections).await?;
    server.wait_for(before + n, Duration::from_secs(10)).await?;
    Ok(elapsed)
}

/// The raw client: `connections` connections, each open for the whole pass and sending the
/// next message of `range` as soon as its last one was accepted.
async fn raw_pooled(
    port: u16,
    messages: Arc<Vec<RawMessage>>,
    range: std::ops::Range<usize>,
    connections: usize,
) -> Result<Duration> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections.min(range.len()) {
        let (messages, next, end) = (messages.clone(), next.clone(), range.end);
        senders.spawn(async move {
            let mut connection = connect(port).await?;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    break;
                }
                let message = &messages[index];
                connection.send(&message.envelope, &message.bytes).await?;
            }
            connection.quit().await?;
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(result) = senders.join_next().await {
        result??;
    }
    Ok(started.elapsed())
}

/// The raw client opening a new connection for every message (connect, greeting, EHLO, the
/// message, QUIT), `connections` at once.
async fn raw_per_message(
    port: u16,
    messages: Arc<Vec<RawMessage>>,
    range: std::ops::Range<usize>,
    connections: usize,
) -> Result<Duration> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections.min(range.len()) {
        let (messages, next, end) = (messages.clone(), next.clone(), range.end);
        senders.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    break;
                }
                let message = &messages[index];
                let mut connection = connect(port).await?;
                connection.send(&message.envelope, &message.bytes).await?;
                connection.quit().await?;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(result) = senders.join_next().await {
        result??;
    }
    Ok(started.elapsed())
}

/// The running aiosmtpd; killed on drop (and it exits by itself when this process ends).
struct SmtpServer {
    child: Child,
    port: u16,
    count_file: PathBuf,
}

impl SmtpServer {
    fn start(dir: &Path) -> Result<SmtpServer> {
        let probe = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(probe, Ok(status) if status.success()) {
            bail!(
                "{PYTHON} cannot import aiosmtpd: install the Debian package python3-aiosmtpd (apt-get install python3-aiosmtpd)"
            );
        }
        let script = dir.join("smtp_count.py");
        std::fs::write(&script, SERVER_SCRIPT)?;
        let count_file = dir.join("smtp_count");
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .arg(&count_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting aiosmtpd")?;
        // The script prints its port once bound; read it on a thread so the deadline holds.
        let stdout = child.stdout.take().context("aiosmtpd's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let mut server = SmtpServer { child, port: 0, count_file };
        let line =
            rx.recv_timeout(Duration::from_secs(20)).context("aiosmtpd did not report its port in 20 s")?;
        server.port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|port| port.parse().ok())
            .ok_or_else(|| anyhow!("aiosmtpd printed {line:?} instead of its port"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.count().is_err() {
            if Instant::now() > deadline {
                bail!("aiosmtpd did not publish its count in 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    /// The messages accepted so far (published every 20 ms).
    fn count(&self) -> Result<usize> {
        let text = std::fs::read_to_string(&self.count_file)?;
        Ok(text.trim().parse()?)
    }

    /// Waits until the server has accepted at least `count` messages.
    async fn wait_for(&self, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.count()?;
            if now >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server accepted {now} messages, {count} expected");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
