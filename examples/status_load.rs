//! Benchmark: the status page's API under load — customer service's search
//! (`GET /api/v1/search`) by 200 concurrent readers, and the live feed (`GET /live/{id}`,
//! server-sent events) to 50 browsers while a migration writes events — on a store of 100,000
//! accounts and 300,000 domains, on SQLite and on PostgreSQL.
//!
//! ```text
//! cargo run --release --example status_load                                   # both backends
//! cargo run --release --example status_load -- --accounts 2000 --seconds 5    # a quick smoke test
//! cargo run --release --example status_load -- --database postgres --readers 50
//! ```
//!
//! For each backend:
//!
//! 1. **The store**: accounts with realistic fields (a cPanel user made from the main domain,
//!    a contact address, `customer-<n>` for most customers and `contact-<address>` for the
//!    rest, Finnish first and last names and some companies, a reseller for some), their
//!    domains (the main domain, a `shop.`/`blog.`-style subdomain, another registered name, …),
//!    in `--migrations` migrations recorded with the demo playbook, written through siirto's own
//!    `Tx::insert_migration` / `insert_accounts` / `insert_domains` in transactions of
//!    `--batch` accounts, so the search terms are written as a plan writes them. SQLite: a file
//!    in a temporary directory (`synchronous=full`, the default). PostgreSQL: a fresh database
//!    on 127.0.0.1:5432 (user `postgres`, or `root`, trust auth; as `tests/it/support/pg.rs`),
//!    dropped at the end; skipped, saying so, when no server answers.
//! 2. **The server**: the real status page (`siirto::web::App` + `siirto::web::serve`) in this
//!    process on 127.0.0.1:0, from a config written to a temporary directory (a viewer token
//!    in a secret file; DNS and WHM addresses nothing needs to answer).
//! 3. **Search**, `--readers` tasks for `--seconds` each, keep-alive connections from one
//!    reqwest client, each request `Authorization: Bearer …`, the query kinds in turn (a
//!    domain's `www.` name, a user, a contact address, a last name), each about an account
//!    drawn at random. Latency per kind (p50/p95/p99/max) and requests/s. Next to it, in the
//!    same run and at the same concurrency: the same searches through `siirto::search::search`
//!    in-process (no HTTP: what the handler calls), and a raw client doing the equivalent
//!    indexed SQL through sqlx's own driver for the backend (a pool as large as siirto's: one
//!    exact or prefix lookup of `search_terms` by the query's kind, which it is told, then the
//!    accounts found by key), then the same raw SQL through sqlx's `Any` driver as siirto's
//!    store uses it — so the cost of HTTP, of siirto's search and of the driver can be told
//!    apart, and `GET /healthz` through the same client and server (what a request costs
//!    without a search). The five take turns in `--rounds` rounds (each round starting with the
//!    next one), so a change of the machine's load weighs on all of them alike. First, for
//!    `--solo-seconds`, each client with one reader: what a search costs without a queue. The
//!    CPU this process and (PostgreSQL) the server's processes of the benchmark's database used
//!    in each pass is printed per search: on a machine whose cores are all busy, that is what
//!    bounds the rate, and the latency under 200 readers is mostly the wait for one of the
//!    pool's connections. The issue's target:
//!    search p95 ≤ 300 ms. On PostgreSQL the tables are analyzed after the writes (autovacuum
//!    would, a minute or so later; `--no-analyze` searches without statistics).
//! 4. **The live feed**: `--sse-clients` connections to `/live/{id}` of the first migration;
//!    once every one is open, a writer moves accounts of that migration (pending → queued, the
//!    state and its `account_enqueued` event in one transaction through the store's `Tx`, as
//!    the engine records a step) `--events-per-second` times a second for `--seconds`, noting
//!    when each transaction committed; each client notes when each event arrived (the log
//!    entry's id in its `data:` line, the event ended by its blank line). Latency = arrival − commit,
//!    p50/p95/p99/max over every client and event, and a check that every client got every
//!    event once. Run alone, then again while the search readers run (both reported). After
//!    the feeds close: the CPU used in the next 2 s and, on PostgreSQL, the store connections
//!    still running the feed's query, which tell whether a feed keeps polling for a client
//!    that left. The issue's target: p95 ≤ 2 s (the feed polls the store every 300 ms).
//!
//! The load average (`/proc/loadavg`) is printed before and after each phase, with the
//! machine's core count: the clients, the server and (for PostgreSQL) the database share them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, Executor};

use siirto::config::Config;
use siirto::domain::{AccountEvent, AccountState, DomainState, MigrationState, to_millis};
use siirto::engine::SystemClock;
use siirto::store::{AccountRow, DomainRow, MigrationRow, NewEvent, Store};

const PLAYBOOK: &str = include_str!("../playbooks/demo.toml");

/// The hits the API's search handler asks for (`web::api::search`).
const API_LIMIT: usize = 50;
/// Terms read per probe: as `search::search` asks the store for them (twice the limit).
const TERM_LIMIT: usize = 2 * API_LIMIT;
/// `Store::connect`'s pool sizes, which the raw client's pools copy.
const SQLITE_POOL: u32 = 8;
const POSTGRES_POOL: u32 = 10;
/// How long the live feed's clients may take to get the last events once the writer stops.
const SSE_DRAIN: Duration = Duration::from_secs(15);
/// The issue's targets.
const SEARCH_P95_TARGET: Duration = Duration::from_millis(300);
const SSE_P95_TARGET: Duration = Duration::from_secs(2);

/// Loads the status page's search and live feed on a large store, next to raw SQL.
#[derive(Debug, Parser)]
#[command(name = "status_load")]
struct Args {
    /// Accounts in all, spread over `--migrations` migrations.
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    /// Domains per account (the main domain, a subdomain, another name, …).
    #[arg(long, default_value_t = 3)]
    domains_per_account: usize,
    /// Migrations the accounts are spread over (the first is the one the live feed watches).
    #[arg(long, default_value_t = 4)]
    migrations: usize,
    /// Accounts (with their domains and search terms) per store transaction.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Concurrent search readers.
    #[arg(long, default_value_t = 200)]
    readers: usize,
    /// Length of each phase (of each search client's, in all its rounds).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Rounds the search clients take turns in.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Length of the passes by one reader (what a search costs without a queue); 0: none.
    #[arg(long, default_value_t = 5)]
    solo_seconds: u64,
    /// Which store(s).
    #[arg(long, value_enum, default_value_t = Database::Both)]
    database: Database,
    /// Live feed connections.
    #[arg(long, default_value_t = 50)]
    sse_clients: usize,
    /// PostgreSQL: search without running ANALYZE after the writes (as in the first minute or
    /// so after a plan is recorded, before autovacuum analyzes the tables).
    #[arg(long)]
    no_analyze: bool,
    /// Events the writer commits a second while the feed is watched.
    #[arg(long, default_value_t = 20)]
    events_per_second: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Database {
    Sqlite,
    Postgres,
    Both,
}

/// What a search query names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `www.` and one of the account's domains.
    Domain,
    /// The cPanel user.
    User,
    /// The contact address.
    Email,
    /// The customer's last name (one word, shared by a few thousand accounts).
    Name,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Domain, Kind::User, Kind::Email, Kind::Name];

    fn name(self) -> &'static str {
        match self {
            Kind::Domain => "www.domain",
            Kind::User => "user",
            Kind::Email => "e-mail",
            Kind::Name => "last name",
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Domain => 0,
            Kind::User => 1,
            Kind::Email => 2,
            Kind::Name => 3,
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
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

async fn run(args: Args) -> Result<()> {
    ensure!(
        args.accounts > 0 && args.migrations > 0 && args.readers > 0 && args.batch > 0 && args.rounds > 0,
        "--accounts, --migrations, --readers, --batch and --rounds must be at least 1"
    );
    ensure!(args.domains_per_account > 0, "--domains-per-account must be at least 1");
    ensure!(
        args.sse_clients > 0 && args.events_per_second > 0,
        "--sse-clients and --events-per-second must be positive"
    );
    println!(
        "status_load: {} accounts, {} domains in {} migrations; {} search readers, {} live feed clients, \
         {} events/s, {} s per phase; {} CPUs, load average {}",
        args.accounts,
        args.accounts * args.domains_per_account,
        args.migrations,
        args.readers,
        args.sse_clients,
        args.events_per_second,
        args.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load_average()
    );
    let generated = Instant::now();
    let people = Arc::new(generate(&args));
    println!("  generated the accounts in memory in {:.1} s", generated.elapsed().as_secs_f64());

    let mut summaries = Vec::new();
    if matches!(args.database, Database::Sqlite | Database::Both) {
        let dir = tempfile::Builder::new().prefix("siirto-status-load").tempdir()?;
        let url = format!("sqlite:{}", dir.path().join("siirto.db").display());
        summaries.push(backend(&args, &people, "SQLite", &url).await?);
    }
    if matches!(args.database, Database::Postgres | Database::Both) {
        match PgDatabase::create().await {
            Ok(database) => {
                let result = backend(&args, &people, "PostgreSQL", &database.url).await;
                database.drop_it().await;
                summaries.push(result?);
            }
            Err(err) => println!("\nPostgreSQL: skipped, no server answers: {err:#}"),
        }
    }
    println!("\nsummary (load average now {}):", load_average());
    for summary in summaries {
        println!("  {summary}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The accounts.

const FIRST: &[&str] = &[
    "Matti", "Liisa", "Juha", "Anna", "Mikko", "Maria", "Timo", "Helena", "Kari", "Johanna", "Jari", "Anne",
    "Antti", "Päivi", "Pekka", "Tuula", "Markku", "Riitta", "Sami", "Leena", "Heikki", "Sari", "Janne",
    "Minna", "Ville", "Kaisa", "Jukka", "Marja", "Petri", "Eeva", "Jyrki", "Sirpa", "Tapio", "Aino", "Eino",
    "Hanna",
];
const LAST: &[&str] = &[
    "Korhonen",
    "Virtanen",
    "Mäkinen",
    "Nieminen",
    "Mäkelä",
    "Hämäläinen",
    "Laine",
    "Heikkinen",
    "Koskinen",
    "Järvinen",
    "Lehtonen",
    "Lehtinen",
    "Saarinen",
    "Salminen",
    "Heinonen",
    "Niemi",
    "Heikkilä",
    "Kinnunen",
    "Salonen",
    "Turunen",
    "Salo",
    "Laitinen",
    "Tuominen",
    "Rantanen",
    "Karjalainen",
    "Jokinen",
    "Mattila",
    "Savolainen",
    "Lahtinen",
    "Ahonen",
    "Äijälä",
    "Öhman",
    "Kukkonen",
    "Virtala",
    "Peltonen",
    "Hiltunen",
    "Miettinen",
    "Leinonen",
    "Pesonen",
    "Aaltonen",
];
/// Trades of the companies (`Virtanen Rakennus Oy`) and words of domain names.
const TRADES: &[&str] = &[
    "Rakennus",
    "Siivous",
    "Kuljetus",
    "Tilitoimisto",
    "Kukka",
    "Kampaamo",
    "Hammas",
    "Auto",
    "Sähkö",
    "Putki",
    "Kahvila",
    "Leipomo",
    "Valokuvaus",
    "Lakitoimisto",
    "Maalaus",
    "Metsä",
    "Taksi",
    "Kunto",
    "Design",
    "Media",
];
const WORDS: &[&str] = &[
    "kukka", "kala", "auto", "talo", "metsa", "jarvi", "koti", "puu", "kivi", "sauna", "kahvi", "leipa",
    "tupa", "vene", "pyora", "mokki", "marja", "omena", "lintu", "karhu", "kettu", "joki", "saari", "ranta",
    "pelto", "kyla", "kauppa", "paja", "studio", "tili", "laki", "hammas", "kampaamo", "rakennus", "siivous",
    "valo", "taide", "musiikki", "kirja", "ruoka",
];
const SUBDOMAINS: &[&str] = &["shop", "blog", "kauppa", "ajanvaraus", "tilaus", "uusi", "vanha", "intra"];
const TLDS: &[(&str, u32)] = &[("fi", 70), ("com", 18), ("net", 6), ("eu", 6)];
const FREEMAIL: &[&str] = &["gmail.com", "outlook.com", "hotmail.com", "suomi24.fi", "luukku.com"];
const RESELLERS: &[&str] =
    &["webtoimisto", "koodipaja", "sivustot", "digiapu", "verkkotalo", "mainostoimisto"];

/// One generated account.
struct Person {
    migration: usize,
    user: String,
    /// The main domain first.
    domains: Vec<String>,
    email: String,
    last: &'static str,
    customer_key: String,
    customer_name: String,
    reseller: Option<String>,
    language: &'static str,
    disk_mb: i64,
}

fn migration_id(m: usize) -> String {
    format!("old{}-2026", m + 1)
}

/// Lowercase ASCII, as people type Finnish names into addresses and domains.
fn ascii(text: &str) -> String {
    text.to_lowercase().replace(['ä', 'å'], "a").replace('ö', "o")
}

fn tld(rng: &mut StdRng) -> &'static str {
    let mut pick = rng.gen_range(0..TLDS.iter().map(|(_, w)| w).sum::<u32>());
    for (tld, weight) in TLDS {
        if pick < *weight {
            return tld;
        }
        pick -= weight;
    }
    "fi"
}

/// A registered domain no one has yet: two words, or a last name and a word, numbered when
/// the plain name is taken.
fn new_domain(rng: &mut StdRng, last: &str, taken: &mut HashSet<String>) -> String {
    let label = if rng.gen_bool(0.3) {
        format!("{}{}", ascii(last), WORDS.choose(rng).expect("words"))
    } else {
        format!("{}{}", WORDS.choose(rng).expect("words"), WORDS.choose(rng).expect("words"))
    };
    let tld = tld(rng);
    let plain = format!("{label}.{tld}");
    if taken.insert(plain.clone()) {
        return plain;
    }
    loop {
        let numbered = format!("{label}{}.{tld}", rng.gen_range(2..100_000));
        if taken.insert(numbered.clone()) {
            return numbered;
        }
    }
}

/// Every account, the same for each backend (a fixed seed).
fn generate(args: &Args) -> Vec<Person> {
    let mut rng = StdRng::seed_from_u64(2026);
    let mut domains_taken = HashSet::new();
    let mut users_taken = HashSet::new();
    let mut user_counters: HashMap<String, u32> = HashMap::new();
    let per_migration = args.accounts.div_ceil(args.migrations);
    (0..args.accounts)
        .map(|n| {
            let first = *FIRST.choose(&mut rng).expect("names");
            let last = *LAST.choose(&mut rng).expect("names");
            let main = new_domain(&mut rng, last, &mut domains_taken);
            let mut domains = vec![main.clone()];
            for i in 1..args.domains_per_account {
                let domain = if i % 2 == 1 {
                    format!("{}.{main}", SUBDOMAINS[(i / 2) % SUBDOMAINS.len()])
                } else {
                    new_domain(&mut rng, last, &mut domains_taken)
                };
                domains_taken.insert(domain.clone());
                domains.push(domain);
            }
            // cPanel makes the user from the main domain: its first eight letters and digits,
            // numbered when taken.
            let base: String = main
                .split('.')
                .next()
                .unwrap_or("x")
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect();
            let user = if users_taken.insert(base.clone()) {
                base
            } else {
                let counter = user_counters.entry(base.clone()).or_insert(0);
                loop {
                    *counter += 1;
                    let user = format!("{base}{counter}");
                    if users_taken.insert(user.clone()) {
                        break user;
                    }
                }
            };
            let email = match rng.gen_range(0..100) {
                0..55 => format!("{}.{}@{main}", ascii(first), ascii(last)),
                55..80 => format!("info@{main}"),
                _ => format!(
                    "{}.{}{n}@{}",
                    ascii(first),
                    ascii(last),
                    FREEMAIL.choose(&mut rng).expect("mail")
                ),
            };
            let customer_name = if rng.gen_bool(0.25) {
                format!("{last} {} Oy", TRADES.choose(&mut rng).expect("trades"))
            } else {
                format!("{first} {last}")
            };
            let customer_key = if rng.gen_bool(0.92) {
                format!("customer-{}", 100_000 + n)
            } else {
                format!("contact-{email}")
            };
            let reseller =
                rng.gen_bool(0.12).then(|| RESELLERS.choose(&mut rng).expect("resellers").to_string());
            Person {
                migration: n / per_migration,
                user,
                domains,
                email,
                last,
                customer_key,
                customer_name,
                reseller,
                language: if rng.gen_bool(0.9) { "fi" } else { "en" },
                disk_mb: rng.gen_range(50..20_000),
            }
        })
        .collect()
}

fn account_row(person: &Person, pending: &str) -> AccountRow {
    AccountRow {
        migration_id: migration_id(person.migration),
        user: person.user.clone(),
        main_domain: person.domains[0].clone(),
        contact_email: Some(person.email.clone()),
        disk_mb: person.disk_mb,
        customer_key: Some(person.customer_key.clone()),
        customer_name: Some(person.customer_name.clone()),
        language: Some(person.language.to_owned()),
        reseller: person.reseller.clone(),
        reseller_email: person.reseller.as_ref().map(|r| format!("{r}@reseller.example.fi")),
        state: AccountState::Pending.name().to_owned(),
        data: pending.to_owned(),
        updated_at: 0,
    }
}

fn domain_rows<'a>(person: &'a Person, pending: &'a str) -> impl Iterator<Item = DomainRow> + 'a {
    let main = &person.domains[0];
    person.domains.iter().map(move |domain| DomainRow {
        migration_id: migration_id(person.migration),
        domain: domain.clone(),
        user: person.user.clone(),
        // A subdomain lives in its main domain's zone.
        zone: if domain.ends_with(&format!(".{main}")) { main.clone() } else { domain.clone() },
        state: DomainState::Pending.name().to_owned(),
        data: pending.to_owned(),
        updated_at: 0,
    })
}

/// Writes the migrations and their accounts through the store's own inserts; the first
/// migration is transferring (the live feed's), the others planned.
async fn write_store(store: &Store, people: &[Person], args: &Args) -> Result<()> {
    let now = chrono::Utc::now();
    let now_ms = to_millis(now);
    let pending_account = serde_json::to_string(&AccountState::Pending)?;
    let pending_domain = serde_json::to_string(&DomainState::Pending)?;
    let per_migration = args.accounts.div_ceil(args.migrations);
    for (m, accounts) in people.chunks(per_migration).enumerate() {
        for (i, batch) in accounts.chunks(args.batch).enumerate() {
            let mut tx = store.begin().await?;
            if i == 0 {
                let state = if m == 0 {
                    MigrationState::Transferring { since: now }
                } else {
                    MigrationState::Planned { planned_at: now }
                };
                tx.insert_migration(&MigrationRow {
                    id: migration_id(m),
                    source_host: format!("old{}", m + 1),
                    target_host: "new".to_owned(),
                    playbook: PLAYBOOK.to_owned(),
                    cutover_at: now_ms + 86_400_000,
                    state: state.name().to_owned(),
                    data: serde_json::to_string(&state)?,
                    created_at: now_ms,
                    updated_at: now_ms,
                })
                .await?;
            }
            let rows: Vec<AccountRow> = batch.iter().map(|p| account_row(p, &pending_account)).collect();
            let domains: Vec<DomainRow> =
                batch.iter().flat_map(|p| domain_rows(p, &pending_domain)).collect();
            tx.insert_accounts(&rows).await?;
            tx.insert_domains(&domains).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// A query of `kind` about a random account, and that account.
fn draw<'a>(people: &'a [Person], kind: Kind, rng: &mut StdRng) -> (String, &'a Person) {
    let person = &people[rng.gen_range(0..people.len())];
    let query = match kind {
        Kind::Domain => format!("www.{}", person.domains.choose(rng).expect("domains")),
        Kind::User => person.user.clone(),
        Kind::Email => person.email.clone(),
        Kind::Name => person.last.to_owned(),
    };
    (query, person)
}

// ---------------------------------------------------------------------------------------------
// The backend's run.

/// Everything measured on one backend, for the summary.
async fn backend(args: &Args, people: &Arc<Vec<Person>>, name: &str, url: &str) -> Result<String> {
    println!("\n== {name} (load average {})", load_average());
    let dir = tempfile::Builder::new().prefix("siirto-status-load-config").tempdir()?;
    let (config, token) = write_config(dir.path(), url, args.migrations)?;
    let store = Store::connect(&config.database).await.context("connecting the store")?;
    let started = Instant::now();
    write_store(&store, people, args).await?;
    let generation = started.elapsed();
    let counting = raw_any(url).await?;
    let terms: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM search_terms")
        .fetch_one(&counting)
        .await
        .context("counting the search terms")?;
    println!(
        "  written in {:.1} s through Tx::insert_accounts/insert_domains, {} accounts per transaction: \
         {} accounts, {} domains, {terms} search terms ({:.0} accounts/s); load average {}",
        generation.as_secs_f64(),
        args.batch,
        people.len(),
        people.iter().map(|p| p.domains.len()).sum::<usize>(),
        people.len() as f64 / generation.as_secs_f64(),
        load_average()
    );
    if url.starts_with("postgres") {
        if args.no_analyze {
            println!("  no ANALYZE: the planner has no statistics of the new rows (until autovacuum's)");
        } else {
            // What autovacuum does a minute or so after a bulk write; done now, so that the
            // passes do not straddle it. Without statistics the planner takes a prefix range
            // of search terms for 15 rows and sorts all of a common last name's.
            let analyzed = Instant::now();
            counting.execute("ANALYZE").await.context("ANALYZE")?;
            println!(
                "  ANALYZE (what autovacuum does soon after a bulk write) took {:.1} s",
                analyzed.elapsed().as_secs_f64()
            );
        }
    }
    counting.close().await;

    let raw = RawPool::connect(url).await?;
    let raw_any = RawPool::connect_any(url).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = siirto::web::App::new(&config, store.clone(), Arc::new(SystemClock))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(siirto::web::serve(listener, app, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().tcp_nodelay(true).timeout(Duration::from_secs(120)).build()?;

    let result =
        measure(args, people, name, generation, &store, &raw, &raw_any, &client, &base, &token).await;

    drop(client);
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => println!("  the server failed: {err:#}"),
        Ok(Err(err)) => println!("  the server task failed: {err}"),
        Err(_) => println!("  the server did not stop within 10 s"),
    }
    raw.close().await;
    raw_any.close().await;
    store.close().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &Args,
    people: &Arc<Vec<Person>>,
    name: &str,
    generation: Duration,
    store: &Store,
    raw: &RawPool,
    raw_any: &RawPool,
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<String> {
    check_answers(people, store, raw, client, base, token).await?;
    let duration = Duration::from_secs(args.seconds);

    let http = http_lookup(client, base, token);
    let library = library_lookup(store);
    let raw_lookup = raw_lookup_of(raw);
    let probe = CpuProbe::of(raw);

    // The clients in turn, `--rounds` times, each round starting with the next one, so a
    // change of the machine's load weighs on all of them alike.
    let clients: [(&str, Lookup); 5] = [
        ("HTTP GET /api/v1/search", http.clone()),
        ("siirto::search::search in-process (no HTTP)", library),
        ("raw SQL through sqlx (the equivalent indexed lookups)", raw_lookup),
        ("the same raw SQL through sqlx's Any driver (as siirto's store)", raw_lookup_of(raw_any)),
        (
            "HTTP GET /healthz (the same client and server, no search: what HTTP costs)",
            healthz_lookup(client, base, token),
        ),
    ];
    const SHORT: [&str; 5] = ["HTTP", "in-process", "raw", "raw Any", "/healthz"];
    let mut solo = String::new();
    if args.solo_seconds > 0 {
        let seconds = Duration::from_secs(args.solo_seconds);
        let mut figures = Vec::new();
        for (i, (what, lookup)) in clients.iter().enumerate() {
            let load = load_average();
            let pass = run_readers(lookup.clone(), people, 1, seconds, 5 + i as u64, &probe).await;
            print_pass(&format!("{what}, one reader"), &pass, &load);
            figures.push(format!(
                "{} {:.1}/{:.1}",
                SHORT[i],
                ms(pass.all().percentile(0.5)),
                ms(pass.all().percentile(0.95))
            ));
        }
        solo = format!("one reader p50/p95 ms: {}", figures.join(", "));
    }
    let load = load_average();
    let slice = duration / args.rounds;
    let mut passes: [Option<Pass>; 5] = Default::default();
    println!(
        "\n  {} readers, {} rounds of the five clients, {:.1} s each:",
        args.readers,
        args.rounds,
        slice.as_secs_f64()
    );
    for round in 0..args.rounds {
        let mut line = Vec::new();
        for k in 0..clients.len() {
            let i = (k + round as usize) % clients.len();
            let pass = run_readers(
                clients[i].1.clone(),
                people,
                args.readers,
                slice,
                u64::from(round) * 10 + i as u64,
                &probe,
            )
            .await;
            line.push((
                i,
                format!("{} p95 {:.0} ms at {:.0}/s", SHORT[i], ms(pass.all().percentile(0.95)), pass.rate()),
            ));
            match &mut passes[i] {
                Some(all) => all.merge(pass),
                slot => *slot = Some(pass),
            }
        }
        line.sort();
        println!(
            "    round {}: {} | load {}",
            round + 1,
            line.into_iter().map(|(_, l)| l).collect::<Vec<_>>().join(" | "),
            load_average()
        );
    }
    let [http_pass, library_pass, raw_pass, any_pass, healthz_pass] =
        passes.map(|p| p.expect("every client ran"));
    for ((what, _), pass) in
        clients.iter().zip([&http_pass, &library_pass, &raw_pass, &any_pass, &healthz_pass])
    {
        print_pass(what, pass, &load);
    }
    let met = |p95: Duration| if p95 <= SEARCH_P95_TARGET { "met" } else { "MISSED" };
    let http_p95 = http_pass.all().percentile(0.95);
    println!(
        "  target search p95 ≤ {} ms: {} ({:.0} ms; in-process {:.0} ms, raw SQL {:.0} ms, raw SQL through Any {:.0} ms)",
        SEARCH_P95_TARGET.as_millis(),
        met(http_p95),
        ms(http_p95),
        ms(library_pass.all().percentile(0.95)),
        ms(raw_pass.all().percentile(0.95)),
        ms(any_pass.all().percentile(0.95)),
    );

    let users: Vec<String> = people.iter().filter(|p| p.migration == 0).map(|p| p.user.clone()).collect();
    let mut writer = Writer { store: store.clone(), users, next: 0 };
    let load = load_average();
    let sse_alone = sse_pass(args, base, token, &mut writer, duration, &probe).await?;
    print_sse("live feed alone", &sse_alone, &load);
    closed_feeds(raw, &probe).await?;
    let load = load_average();
    let (sse_loaded, search_loaded) = tokio::join!(
        sse_pass(args, base, token, &mut writer, duration, &probe),
        run_readers(http, people, args.readers, duration, 4, &probe)
    );
    let sse_loaded = sse_loaded?;
    print_sse("live feed while the search readers run", &sse_loaded, &load);
    print_pass("HTTP GET /api/v1/search while the live feed runs", &search_loaded, &load);
    let sse_met = |p95: Duration| if p95 <= SSE_P95_TARGET { "met" } else { "MISSED" };
    println!(
        "  target SSE p95 ≤ {} s: {} alone ({:.0} ms), {} under search load ({:.0} ms); every event to every client: {}",
        SSE_P95_TARGET.as_secs(),
        sse_met(sse_alone.latency.percentile(0.95)),
        ms(sse_alone.latency.percentile(0.95)),
        sse_met(sse_loaded.latency.percentile(0.95)),
        ms(sse_loaded.latency.percentile(0.95)),
        if sse_alone.lost + sse_loaded.lost == 0 {
            "yes".to_owned()
        } else {
            format!("NO, {} lost", sse_alone.lost + sse_loaded.lost)
        },
    );

    let figures = |pass: &Pass| {
        let all = pass.all();
        let n = all.0.len().max(1) as f64;
        format!(
            "{:.0}/{:.0}/{:.0} ms at {:.0}/s (CPU {:.2} ms a search here{})",
            ms(all.percentile(0.5)),
            ms(all.percentile(0.95)),
            ms(all.percentile(0.99)),
            pass.rate(),
            pass.cpu.own * 1000.0 / n,
            pass.cpu.postgres.map_or(String::new(), |pg| format!(" + {:.2} ms in postgres", pg * 1000.0 / n))
        )
    };
    Ok(format!(
        "{name} — written in {:.1} s\n    {solo}\n    {} readers, p50/p95/p99: HTTP {}; in-process {}; raw SQL {}; \
         raw SQL through Any {}; GET /healthz {}\n    HTTP while the live feed runs {}\n    \
         SSE p50/p95/p99/max ms: alone {}, with the search readers {}; lost {}",
        generation.as_secs_f64(),
        args.readers,
        figures(&http_pass),
        figures(&library_pass),
        figures(&raw_pass),
        figures(&any_pass),
        figures(&healthz_pass),
        figures(&search_loaded),
        sse_alone.latency.summary(),
        sse_loaded.latency.summary(),
        sse_alone.lost + sse_loaded.lost,
    ))
}

/// The config: the store, the page on loopback, one viewer token (returned) in a secret file;
/// hosts and DNS on addresses nothing needs to answer (searches and the feed read the store
/// only), notices to a directory.
fn write_config(dir: &Path, database: &str, migrations: usize) -> Result<(Config, String)> {
    let token = format!("{:032x}", rand::random::<u128>());
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    let write_secret = |name: &str, value: &str| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = secrets.join(name);
        std::fs::write(&path, format!("{value}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    };
    write_secret("web-cs.token", &token)?;
    for name in ["whm.token", "pdns.key"] {
        write_secret(name, "status-load-unused-secret")?;
    }
    let mut hosts = String::new();
    for (m, name) in
        (0..migrations).map(|m| (m, format!("old{}", m + 1))).chain([(migrations, "new".to_owned())])
    {
        hosts.push_str(&format!(
            "[hosts.{name}]\nwhm_url = \"https://127.0.0.1:9\"\ntoken_file = \"secrets/whm.token\"\n\
             ip = \"192.0.2.{}\"\nhostname = \"{name}.example.test\"\n\n",
            10 + m % 200
        ));
    }
    let text = format!(
        r#"database = "{database}"
listen = "127.0.0.1:0"

{hosts}[dns]
provider = "powerdns"
api_url = "http://127.0.0.1:9"
api_key_file = "secrets/pdns.key"
nameservers = ["127.0.0.1:9"]

[mail]
from = "Example Hosting <support@example.test>"
channel = "directory"
path = "outbox"

[web]
[[web.tokens]]
name = "asiakaspalvelu"
role = "viewer"
token_file = "secrets/web-cs.token"
"#
    );
    let path = dir.join("siirto.toml");
    std::fs::write(&path, text)?;
    let config = Config::load(&path).map_err(|e| anyhow!("{e}"))?;
    Ok((config, token))
}

// ---------------------------------------------------------------------------------------------
// Search: the three clients.

type Lookup = Arc<dyn Fn(Kind, String) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// `GET /healthz`, whatever the query: the cost of a request and its answer through the same
/// client and server, without a search.
fn healthz_lookup(client: &reqwest::Client, base: &str, token: &str) -> Lookup {
    let client = client.clone();
    let url = format!("{base}/healthz");
    let token = token.to_owned();
    Arc::new(move |_kind, _query| {
        let request = client.get(&url).bearer_auth(&token);
        Box::pin(async move {
            let response = request.send().await?;
            let status = response.status();
            response.bytes().await?;
            ensure!(status.is_success(), "HTTP {status}");
            Ok(())
        })
    })
}

fn http_lookup(client: &reqwest::Client, base: &str, token: &str) -> Lookup {
    let client = client.clone();
    let url = format!("{base}/api/v1/search");
    let token = token.to_owned();
    Arc::new(move |_kind, query| {
        let request = client.get(&url).query(&[("q", query.as_str())]).bearer_auth(&token);
        Box::pin(async move {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            ensure!(
                status.is_success(),
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
            Ok(())
        })
    })
}

fn library_lookup(store: &Store) -> Lookup {
    let store = store.clone();
    Arc::new(move |_kind, query| {
        let store = store.clone();
        Box::pin(async move {
            siirto::search::search(&store, &query, API_LIMIT).await?;
            Ok(())
        })
    })
}

fn raw_lookup_of(raw: &RawPool) -> Lookup {
    let raw = raw.clone();
    Arc::new(move |kind, query| {
        let raw = raw.clone();
        Box::pin(async move {
            raw.search(kind, &query).await?;
            Ok(())
        })
    })
}

/// The columns of an account a search hit shows.
type RawHit =
    (String, String, String, Option<String>, Option<String>, Option<String>, Option<String>, String);

/// The raw client: sqlx's own driver for the backend (no `Any` layer), a pool as large as
/// siirto's.
#[derive(Clone)]
enum RawPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    /// The same statements through sqlx's `Any` driver, as siirto's store runs them: what the
    /// driver costs, apart from what siirto's search does.
    Any(sqlx::AnyPool),
}

/// The terms statement of a query whose kind the client knows: one exact or prefix lookup of
/// the `search_terms` key (a domain: the name and its parents, as siirto probes them).
fn raw_terms_statement(kind: Kind, query: &str) -> (String, Vec<String>) {
    let select = "SELECT migration_id, user_name FROM search_terms";
    match kind {
        Kind::Domain => {
            let labels: Vec<&str> = query.split('.').collect();
            let names: Vec<String> =
                (0..labels.len().saturating_sub(1)).map(|i| labels[i..].join(".")).collect();
            let list = (0..names.len()).map(|i| format!("${}", i + 1)).collect::<Vec<_>>().join(", ");
            (format!("{select} WHERE field = 'domain' AND term IN ({list}) LIMIT {TERM_LIMIT}"), names)
        }
        Kind::User => (
            format!("{select} WHERE field = 'user' AND term = $1 LIMIT {TERM_LIMIT}"),
            vec![query.to_owned()],
        ),
        Kind::Email => (
            format!("{select} WHERE field = 'email' AND term = $1 LIMIT {TERM_LIMIT}"),
            vec![query.to_lowercase()],
        ),
        Kind::Name => {
            let word = query.to_lowercase();
            (
                format!(
                    "{select} WHERE field = 'customer' AND term >= $1 AND term < $2 \
                     ORDER BY term, migration_id, user_name LIMIT {TERM_LIMIT}"
                ),
                vec![word.clone(), format!("{word}\u{10FFFF}")],
            )
        }
    }
}

fn raw_accounts_statement(keys: usize) -> String {
    let wanted: Vec<String> = (0..keys)
        .map(|n| format!("(migration_id = ${} AND user_name = ${})", 2 * n + 1, 2 * n + 2))
        .collect();
    format!(
        "SELECT migration_id, user_name, main_domain, customer_key, customer_name, contact_email, reseller, state \
         FROM accounts WHERE {}",
        wanted.join(" OR ")
    )
}

/// The raw search on one pool: the terms, then at most [`API_LIMIT`] accounts by key. A macro
/// because sqlx's executor bounds for a pool generic over the database are longer than the code.
macro_rules! raw_search {
    ($pool:expr, $kind:expr, $query:expr) => {{
        let (sql, values) = raw_terms_statement($kind, $query);
        let mut terms = sqlx::query_as::<_, (String, String)>(&sql);
        for value in &values {
            terms = terms.bind(value.as_str());
        }
        let mut seen = HashSet::new();
        let keys: Vec<(String, String)> = terms
            .fetch_all($pool)
            .await?
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .take(API_LIMIT)
            .collect();
        if keys.is_empty() {
            Vec::new()
        } else {
            let sql = raw_accounts_statement(keys.len());
            let mut accounts = sqlx::query_as::<_, RawHit>(&sql);
            for (migration_id, user) in &keys {
                accounts = accounts.bind(migration_id.as_str()).bind(user.as_str());
            }
            accounts.fetch_all($pool).await?
        }
    }};
}

impl RawPool {
    async fn connect(url: &str) -> Result<RawPool> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            // As siirto's pool: no ping before each use of a local file.
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(SQLITE_POOL)
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            Ok(RawPool::Sqlite(pool))
        } else {
            let pool =
                sqlx::postgres::PgPoolOptions::new().max_connections(POSTGRES_POOL).connect(url).await?;
            Ok(RawPool::Postgres(pool))
        }
    }

    /// An `Any` pool as large as siirto's on the same database.
    async fn connect_any(url: &str) -> Result<RawPool> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(if sqlite { SQLITE_POOL } else { POSTGRES_POOL })
            .test_before_acquire(!sqlite)
            .connect(url)
            .await?;
        Ok(RawPool::Any(pool))
    }

    async fn search(&self, kind: Kind, query: &str) -> Result<Vec<RawHit>> {
        Ok(match self {
            RawPool::Sqlite(pool) => raw_search!(pool, kind, query),
            RawPool::Postgres(pool) => raw_search!(pool, kind, query),
            RawPool::Any(pool) => raw_search!(pool, kind, query),
        })
    }

    async fn close(&self) {
        match self {
            RawPool::Sqlite(pool) => pool.close().await,
            RawPool::Postgres(pool) => pool.close().await,
            RawPool::Any(pool) => pool.close().await,
        }
    }
}

/// A one-connection `Any` pool for counting (the store keeps its pool to itself).
async fn raw_any(url: &str) -> Result<sqlx::AnyPool> {
    sqlx::any::install_default_drivers();
    Ok(sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await?)
}

/// A few queries of each kind through each client, checked, so that a broken query is not timed
/// as a fast one: the account asked about is among the hits (a last name: every hit has it).
async fn check_answers(
    people: &[Person],
    store: &Store,
    raw: &RawPool,
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(99);
    for round in 0..40 {
        let kind = Kind::ALL[round % 4];
        let (query, person) = draw(people, kind, &mut rng);
        let key = (migration_id(person.migration), person.user.clone());
        let response = client
            .get(format!("{base}/api/v1/search"))
            .query(&[("q", query.as_str())])
            .bearer_auth(token)
            .send()
            .await?;
        ensure!(response.status().is_success(), "{} {query:?}: HTTP {}", kind.name(), response.status());
        let hits: Vec<serde_json::Value> = response.json().await?;
        let http: Vec<(String, String, String)> = hits
            .iter()
            .map(|h| {
                let text = |k: &str| h.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                (text("migration_id"), text("user"), text("customer_name"))
            })
            .collect();
        let library: Vec<(String, String, String)> = siirto::search::search(store, &query, API_LIMIT)
            .await?
            .into_iter()
            .map(|h| (h.migration_id, h.user, h.customer_name.unwrap_or_default()))
            .collect();
        let raw: Vec<(String, String, String)> = raw
            .search(kind, &query)
            .await?
            .into_iter()
            .map(|h| (h.0, h.1, h.4.unwrap_or_default()))
            .collect();
        for (client, hits) in [("HTTP", &http), ("in-process", &library), ("raw", &raw)] {
            let good = match kind {
                Kind::Name => !hits.is_empty() && hits.iter().all(|(_, _, name)| name.contains(person.last)),
                _ => hits.iter().any(|(m, u, _)| (m, u) == (&key.0, &key.1)),
            };
            if !good {
                bail!("{client} search {} {query:?} did not find {}/{}: {hits:?}", kind.name(), key.0, key.1);
            }
        }
    }
    println!("  40 searches checked through HTTP, in-process and raw: each found its account");
    Ok(())
}

/// Latencies, sorted on demand.
#[derive(Default)]
struct Times(Vec<Duration>);

impl Times {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
    }

    fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!(
            "{:.0}/{:.0}/{:.0}/{:.0}",
            ms(self.percentile(0.5)),
            ms(self.percentile(0.95)),
            ms(self.percentile(0.99)),
            ms(self.max())
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One pass of search readers.
struct Pass {
    by_kind: [Times; 4],
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
    readers: usize,
    cpu: Cpu,
}

impl Pass {
    /// Adds another round's figures of the same client.
    fn merge(&mut self, other: Pass) {
        for (all, some) in self.by_kind.iter_mut().zip(other.by_kind) {
            all.0.extend(some.0);
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.wall += other.wall;
        self.cpu.own += other.cpu.own;
        self.cpu.postgres = match (self.cpu.postgres, other.cpu.postgres) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    fn all(&self) -> Times {
        Times(self.by_kind.iter().flat_map(|t| t.0.iter().copied()).collect())
    }

    fn rate(&self) -> f64 {
        self.all().0.len() as f64 / self.wall.as_secs_f64()
    }
}

/// `readers` tasks searching for `duration`, each taking the kinds in turn, about accounts
/// drawn at random.
async fn run_readers(
    lookup: Lookup,
    people: &Arc<Vec<Person>>,
    readers: usize,
    duration: Duration,
    seed: u64,
    probe: &CpuProbe,
) -> Pass {
    let cpu = Cpu::now(probe).await;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..readers)
        .map(|reader| {
            let lookup = lookup.clone();
            let people = people.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed * 1_000_003 + reader as u64);
                let mut times: [Vec<Duration>; 4] = Default::default();
                let (mut errors, mut first_error) = (0, None);
                let mut turn = reader;
                while Instant::now() < deadline {
                    let kind = Kind::ALL[turn % Kind::ALL.len()];
                    turn += 1;
                    let (query, _) = draw(&people, kind, &mut rng);
                    let began = Instant::now();
                    match lookup(kind, query).await {
                        Ok(()) => times[kind.index()].push(began.elapsed()),
                        Err(err) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{err:#}"));
                        }
                    }
                }
                (times, errors, first_error)
            })
        })
        .collect();
    let mut pass = Pass {
        by_kind: Default::default(),
        errors: 0,
        first_error: None,
        wall: Duration::ZERO,
        readers,
        cpu: Cpu::default(),
    };
    for task in tasks {
        match task.await {
            Ok((times, errors, first_error)) => {
                for (all, some) in pass.by_kind.iter_mut().zip(times) {
                    all.0.extend(some);
                }
                pass.errors += errors;
                if pass.first_error.is_none() {
                    pass.first_error = first_error;
                }
            }
            Err(err) => {
                pass.errors += 1;
                pass.first_error.get_or_insert_with(|| format!("a reader panicked: {err}"));
            }
        }
    }
    pass.wall = started.elapsed();
    pass.cpu = Cpu::now(probe).await.since(cpu);
    pass
}

fn print_pass(what: &str, pass: &Pass, load_before: &str) {
    println!(
        "\n  {what}: {} readers, {:.1} s, load average {load_before} → {}",
        pass.readers,
        pass.wall.as_secs_f64(),
        load_average()
    );
    println!(
        "    {:<11} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "query", "n", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    let all = pass.all();
    let rows = Kind::ALL.iter().map(|k| (k.name(), &pass.by_kind[k.index()])).chain([("all", &all)]);
    for (name, times) in rows {
        println!(
            "    {name:<11} {:>7} {:>8.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            times.0.len(),
            times.0.len() as f64 / pass.wall.as_secs_f64(),
            ms(times.percentile(0.5)),
            ms(times.percentile(0.95)),
            ms(times.percentile(0.99)),
            ms(times.max())
        );
    }
    let searches = all.0.len().max(1) as f64;
    println!(
        "    CPU: this process {:.1} s ({:.2} ms a search){}, of {:.1} s × {} cores",
        pass.cpu.own,
        pass.cpu.own * 1000.0 / searches,
        pass.cpu.postgres.map_or(String::new(), |pg| format!(
            ", postgres {pg:.1} s ({:.2} ms a search)",
            pg * 1000.0 / searches
        )),
        pass.wall.as_secs_f64(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    if pass.errors > 0 {
        println!("    {} ERRORS, the first: {}", pass.errors, pass.first_error.as_deref().unwrap_or("?"));
    }
}

// ---------------------------------------------------------------------------------------------
// The live feed.

/// Moves accounts of the first migration, one event per transaction.
struct Writer {
    store: Store,
    users: Vec<String>,
    next: usize,
}

impl Writer {
    /// One account pending → queued (again, with the next attempt, once every account was),
    /// its state and event in one transaction; the event's id and the time of the commit.
    async fn step(&mut self) -> Result<(i64, Instant, Duration)> {
        let user = &self.users[self.next % self.users.len()];
        let attempt = (self.next / self.users.len()) as u32 + 1;
        self.next += 1;
        let now = chrono::Utc::now();
        let session = format!("bench{attempt}");
        let next = AccountState::Queued { session: session.clone(), attempt };
        let event = AccountEvent::Enqueued { session };
        let began = Instant::now();
        let mut tx = self.store.begin().await?;
        tx.set_account_state(
            &migration_id(0),
            user,
            next.name(),
            &serde_json::to_string(&next)?,
            to_millis(now),
        )
        .await?;
        let id = tx
            .append_event(&NewEvent {
                migration_id: migration_id(0),
                account: Some(user.clone()),
                domain: None,
                kind: event.name().to_owned(),
                detail: serde_json::json!({ "event": event, "state": next.name() }).to_string(),
                actor: "status-load".to_owned(),
                at: to_millis(now),
            })
            .await?;
        tx.commit().await?;
        let committed = Instant::now();
        Ok((id, committed, committed - began))
    }
}

struct SsePass {
    clients: usize,
    events: usize,
    /// How long the writer wrote.
    wall: Duration,
    /// CPU used from the first connection to the last arrival.
    cpu: Cpu,
    /// Begin to commit of the writer's transactions.
    commit: Times,
    /// Arrival − commit, every client and event.
    latency: Times,
    /// Events that arrived before the writer saw its commit return (counted as 0).
    early: usize,
    lost: usize,
    duplicates: usize,
    unexpected: usize,
    errors: Vec<String>,
}

/// Opens the feed `clients` times, writes events for `duration`, and collects when each one
/// arrived where.
async fn sse_pass(
    args: &Args,
    base: &str,
    token: &str,
    writer: &mut Writer,
    duration: Duration,
    probe: &CpuProbe,
) -> Result<SsePass> {
    // A client of its own, without the search client's request timeout.
    let sse = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let cpu = Cpu::now(probe).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for _ in 0..args.sse_clients {
        let response = sse.get(format!("{base}/live/{}", migration_id(0))).bearer_auth(token).send().await?;
        ensure!(response.status().is_success(), "GET /live: HTTP {}", response.status());
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        ensure!(content_type.starts_with("text/event-stream"), "GET /live answered {content_type}");
        let received = Arc::new(AtomicUsize::new(0));
        readers.push((received.clone(), tokio::spawn(read_feed(response, received, stopped.clone()))));
    }

    // Every feed has its starting point (the headers come after it was read): write.
    let mut committed = Vec::new();
    let mut interval =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.events_per_second)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    while started.elapsed() < duration {
        interval.tick().await;
        committed.push(writer.step().await?);
    }
    let wall = started.elapsed();
    let drain = Instant::now();
    while drain.elapsed() < SSE_DRAIN
        && readers.iter().any(|(n, _)| n.load(Ordering::Relaxed) < committed.len())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = Cpu::now(probe).await.since(cpu);
    let _ = stop.send(true);

    let commits: BTreeMap<i64, Instant> = committed.iter().map(|(id, at, _)| (*id, *at)).collect();
    let mut pass = SsePass {
        clients: args.sse_clients,
        events: committed.len(),
        wall,
        cpu,
        commit: Times(committed.iter().map(|(_, _, took)| *took).collect()),
        latency: Times::default(),
        early: 0,
        lost: 0,
        duplicates: 0,
        unexpected: 0,
        errors: Vec::new(),
    };
    for (_, reader) in readers {
        let (arrivals, error) = reader.await?;
        pass.errors.extend(error);
        let mut got: HashMap<i64, Instant> = HashMap::new();
        for (id, at) in arrivals {
            if !commits.contains_key(&id) {
                pass.unexpected += 1;
            } else if got.insert(id, at).is_some() {
                pass.duplicates += 1;
            }
        }
        for (id, commit) in &commits {
            match got.get(id) {
                Some(at) => {
                    if at < commit {
                        pass.early += 1;
                    }
                    pass.latency.0.push(at.saturating_duration_since(*commit));
                }
                None => pass.lost += 1,
            }
        }
    }
    Ok(pass)
}

/// Reads one feed until told to stop: each event's id and when the chunk carrying its end
/// arrived.
async fn read_feed(
    mut response: reqwest::Response,
    received: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<(i64, Instant)>, Option<String>) {
    let mut arrivals = Vec::new();
    let mut distinct = HashSet::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut id: Option<i64> = None;
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk,
            _ = stop.changed() => return (arrivals, None),
        };
        let bytes = match chunk {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return (arrivals, Some("the feed ended".to_owned())),
            Err(err) => return (arrivals, Some(format!("the feed failed: {err}"))),
        };
        let now = Instant::now();
        buffer.extend_from_slice(&bytes);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                // The end of an event (a keep-alive comment has none).
                if let Some(id) = id.take() {
                    arrivals.push((id, now));
                    if distinct.insert(id) {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else if let Some(data) = line.strip_prefix("data:") {
                // The event log entry's own id is in the data; the SSE `id:` is where a resumed
                // feed starts, which may be lower.
                let entry: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
                id = entry.pointer("/entry/id").and_then(serde_json::Value::as_i64);
            }
        }
    }
}

fn print_sse(what: &str, pass: &SsePass, load_before: &str) {
    println!(
        "\n  {what}: {} clients, {} events written in {:.1} s ({:.1}/s), load average {load_before} → {}",
        pass.clients,
        pass.events,
        pass.wall.as_secs_f64(),
        pass.events as f64 / pass.wall.as_secs_f64(),
        load_average()
    );
    println!(
        "    CPU from the first connection to the last arrival: this process {:.1} s{}",
        pass.cpu.own,
        pass.cpu.postgres.map_or(String::new(), |pg| format!(", postgres {pg:.1} s"))
    );
    println!(
        "    writer's transaction (begin → commit) p50/p95/max ms: {:.1}/{:.1}/{:.1}",
        ms(pass.commit.percentile(0.5)),
        ms(pass.commit.percentile(0.95)),
        ms(pass.commit.max())
    );
    println!(
        "    delivery (commit → arrival) over {} deliveries: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pass.latency.0.len(),
        ms(pass.latency.percentile(0.5)),
        ms(pass.latency.percentile(0.95)),
        ms(pass.latency.percentile(0.99)),
        ms(pass.latency.max())
    );
    println!(
        "    lost {}, duplicates {}, unexpected ids {}, arrived before the commit returned {}{}",
        pass.lost,
        pass.duplicates,
        pass.unexpected,
        pass.early,
        if pass.errors.is_empty() {
            String::new()
        } else {
            format!("; feed errors: {}", pass.errors.join("; "))
        }
    );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

/// The admin URLs tried in order (as the tests' `support/pg.rs`).
const PG_ADMIN_URLS: [&str; 2] =
    ["postgres://postgres@127.0.0.1:5432/postgres", "postgres://root@127.0.0.1:5432/postgres"];

/// A fresh database on the machine's PostgreSQL, dropped by [`PgDatabase::drop_it`].
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Result<PgDatabase> {
        let mut errors = Vec::new();
        for admin_url in PG_ADMIN_URLS {
            let mut admin =
                match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(admin_url))
                    .await
                {
                    Ok(Ok(admin)) => admin,
                    Ok(Err(err)) => {
                        errors.push(format!("{admin_url}: {err}"));
                        continue;
                    }
                    Err(_) => {
                        errors.push(format!("{admin_url}: timed out"));
                        continue;
                    }
                };
            let name = format!("siirto_status_load_{:016x}", rand::random::<u64>());
            admin.execute(format!("CREATE DATABASE {name}").as_str()).await?;
            let _ = admin.close().await;
            let url = format!("{}/{name}", admin_url.rsplit_once('/').map_or(admin_url, |(base, _)| base));
            return Ok(PgDatabase { admin_url: admin_url.to_owned(), name, url });
        }
        bail!("{}", errors.join("; "))
    }

    async fn drop_it(self) {
        let dropped = async {
            let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
            admin.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str()).await?;
            admin.close().await
        };
        if let Err(err) = dropped.await {
            println!("  could not drop database {}: {err}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPU.

/// CPU seconds (user + system) used by this process and by the PostgreSQL server's processes
/// working on the benchmark's database (its connections, and autovacuum when it works there;
/// not the other databases of a shared server).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    own: f64,
    /// `None` on SQLite.
    postgres: Option<f64>,
}

/// Where the server's processes of the benchmark's database are listed (`pg_stat_activity`);
/// none on SQLite.
#[derive(Clone)]
struct CpuProbe(Option<sqlx::PgPool>);

impl CpuProbe {
    fn of(raw: &RawPool) -> CpuProbe {
        match raw {
            RawPool::Postgres(pool) => CpuProbe(Some(pool.clone())),
            RawPool::Sqlite(_) | RawPool::Any(_) => CpuProbe(None),
        }
    }
}

/// A reading of the counters behind [`Cpu`].
struct CpuSample {
    own: f64,
    postgres: Option<HashMap<i32, f64>>,
}

impl Cpu {
    async fn now(probe: &CpuProbe) -> CpuSample {
        let mut postgres = None;
        if let Some(pool) = &probe.0 {
            let pids: Vec<i32> =
                sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                    .fetch_all(pool)
                    .await
                    .unwrap_or_default();
            postgres = Some(
                pids.into_iter()
                    .map(|pid| (pid, cpu_seconds(Path::new(&format!("/proc/{pid}/stat")))))
                    .collect(),
            );
        }
        CpuSample { own: cpu_seconds(Path::new("/proc/self/stat")), postgres }
    }
}

impl CpuSample {
    /// What was used since `before` (a server process that ended meanwhile is not counted).
    fn since(self, before: CpuSample) -> Cpu {
        let postgres = self.postgres.map(|now| {
            let before = before.postgres.unwrap_or_default();
            now.iter().map(|(pid, now)| now - before.get(pid).copied().unwrap_or(0.0)).sum()
        });
        Cpu { own: self.own - before.own, postgres }
    }
}

/// CPU seconds (user + system) of the process whose `/proc/PID/stat` is at `path` (0 when it
/// cannot be read), at Linux's 100 clock ticks a second.
fn cpu_seconds(path: &Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After the command name in parentheses: utime and stime are the 12th and 13th fields.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Whether the server stops reading the store for a feed whose client went away: the CPU this
/// process uses in the 2 s after the feeds closed (nothing else runs then), and on PostgreSQL
/// the store connections whose latest statement was the feed's and started in the last second.
async fn closed_feeds(raw: &RawPool, probe: &CpuProbe) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = Cpu::now(probe).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = Cpu::now(probe).await.since(before);
    let polling = match raw {
        RawPool::Postgres(pool) => {
            let polling: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND query LIKE 'SELECT * FROM events WHERE migration_id = $1 AND id > $2%' \
                 AND query_start > now() - interval '1 second'",
            )
            .fetch_one(pool)
            .await?;
            format!("; store connections that ran the feed's query in the last second: {polling}")
        }
        RawPool::Sqlite(_) | RawPool::Any(_) => String::new(),
    };
    println!(
        "    after the clients closed their feeds: this process used {:.2} s of CPU in 2 s{}{polling}",
        cpu.own,
        cpu.postgres.map_or(String::new(), |pg| format!(", postgres {pg:.2} s"))
    );
    Ok(())
}
