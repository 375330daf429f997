//! DNS cutover at scale: lowers and then repoints the A records of many domains on a real
//! `pdns_server` (sqlite backend) through siirto's provider code path, and compares the rate
//! with a raw batched-PATCH client against the same server in the same run.
//!
//! ```text
//! cargo run --release --example dns_scale                 # 5,000 domains, both layouts
//! cargo run --release --example dns_scale -- --domains 50000
//! cargo run --release --example dns_scale -- --layout grouped --concurrency 2
//! cargo run --release --example dns_scale -- --reads api    # siirto reading zones by GET
//! ```
//!
//! What is measured, per layout (`single`: one zone per domain; `grouped`: zones of 50
//! domains), each domain having an apex A and a `www` A rrset at the source address:
//!
//! - **siirto**: the path the engine takes for a zone — `PowerDns::zone()` (by AXFR from
//!   pdns's DNS port, `dns.axfr_server`, or with `--reads api` by GET), the change
//!   set from `siirto::dns::lower_ttl_changes` / `repoint_changes` (for A rrsets at the source
//!   they select the same rrsets as the engine's `siirto::dns::rewrite::records_to_change` and
//!   `rewrite_rrset`), then `PowerDns::apply()` (one PATCH per zone), with
//!   reads overlapping and writes bounded by `--concurrency` (the config's
//!   `dns.write_concurrency`, default 1), transient errors retried as the engine would.
//! - **raw**: a plain reqwest client that already knows every record and sends one PATCH per
//!   zone with `--concurrency` in flight, no GET and no siirto code. It runs twice per
//!   operation (the second pass undoes the first, an identical write load) and the better
//!   pass is the baseline. With `--raw-reads`, the raw client also runs reading each zone
//!   before its PATCH (GET, then AXFR), to tell what reading costs the server apart from what
//!   siirto's code costs.
//!
//! - **engine** (`--engine-accounts N`, default 100, 0 skips): the real daemon in-process on a
//!   SQLite store, simulated cPanel hosts with instant transfers, the demo playbook, zones
//!   created through the API; its figure is the time from `start` to the last
//!   `domain_ttl_lowered` event (job claims, store transactions and all) against raw PATCHes
//!   of the same A rrsets. Its repoints interleave with transfers and HTTP checks, so only
//!   their spread and the whole migration time are printed, not a rate.
//!
//! The zones are written straight into pdns's sqlite database (the gsqlite3 schema Debian
//! ships) before the server starts, which is far faster than one POST per zone. Needs the
//! Debian packages `pdns-server` and `pdns-backend-sqlite3`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::{Parser, ValueEnum};
use reqwest::Url;
use serde_json::json;
use siirto::dns::{DnsProvider, PowerDns, RrsetChange, lower_ttl_changes, repoint_changes};
use siirto::names::DomainName;
use siirto::secret::Secret;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use tokio::sync::Semaphore;

// The integration tests' pdns_server harness, shared with the other benchmarks.
#[path = "../tests/it/support/pdns.rs"]
mod pdns;
use pdns::{Pdns, Record, Zone as PdnsZone};

/// On top of the harness's settings (caches off): no zone-cache refreshes in the middle of a
/// pass, one distributor and one receiver thread, as the tests run it.
const PDNS_CONFIG: &str = pdns::DETERMINISTIC;

const SOURCE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const TARGET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const OLD_TTL: u32 = 3600;
const SHORT_TTL: u32 = 60;
/// Domains per zone in the `grouped` layout.
const GROUP: usize = 50;
/// Transient failures one zone write may see before the run is called failed.
const MAX_ATTEMPTS: u32 = 50;

#[derive(Parser, Debug)]
#[command(about = "Lower and repoint the records of many domains on a real pdns_server")]
struct Args {
    /// How many domains (each with an apex and a www A rrset).
    #[arg(long, default_value_t = 5_000)]
    domains: usize,
    /// Which zone layout(s) to run.
    #[arg(long, value_enum, default_value_t = Layout::Both)]
    layout: Layout,
    /// Zone writes in flight at once (siirto's `dns.write_concurrency`; 1 for sqlite).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Zone reads (GET) in flight at once on siirto's path, overlapping the writes.
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Each operation runs in this many slices of the zones, raw and siirto alternating, so
    /// the machine's load changing during the run weighs on both alike.
    #[arg(long, default_value_t = 10)]
    slices: usize,
    /// Also run the real engine (daemon in-process, SQLite store, simulated cPanel hosts) on
    /// this many generated accounts and time its TTL lowering; 0 skips it.
    #[arg(long, default_value_t = 100)]
    engine_accounts: usize,
    /// How siirto reads zones: by AXFR from pdns's DNS port (`dns.axfr_server`) or by GET
    /// through the API.
    #[arg(long, value_enum, default_value_t = Reads::Axfr)]
    reads: Reads,
    /// Also time the raw client reading each zone (GET, then AXFR) before its PATCH.
    #[arg(long)]
    raw_reads: bool,
    /// The engine's SQLite store's `synchronous` (`full`, siirto's default, or `normal`).
    #[arg(long, default_value = "full")]
    store_synchronous: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Reads {
    /// AXFR from pdns's DNS port.
    Axfr,
    /// GET through the API.
    Api,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Layout {
    /// One zone per domain.
    Single,
    /// Zones of 50 domains.
    Grouped,
    /// Both, one after the other (each on a fresh server).
    Both,
}

/// One zone as the benchmark laid it out: its name and the owner names of its A rrsets.
struct BenchZone {
    name: DomainName,
    a_names: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.domains == 0 || !(1..=8).contains(&args.concurrency) || !(1..=8).contains(&args.readers) {
        bail!("--domains must be positive, --concurrency and --readers 1..=8");
    }
    println!(
        "dns_scale: {} domains, write concurrency {}, {} readers, siirto reads zones by {}, pdns_server sqlite backend",
        args.domains,
        args.concurrency,
        args.readers,
        match args.reads {
            Reads::Axfr => "AXFR",
            Reads::Api => "API GET",
        }
    );
    if matches!(args.layout, Layout::Single | Layout::Both) {
        run_layout(&args, 1).await?;
    }
    if matches!(args.layout, Layout::Grouped | Layout::Both) {
        run_layout(&args, GROUP).await?;
    }
    if args.engine_accounts > 0 {
        run_engine(&args).await?;
    }
    Ok(())
}

/// One layout on a fresh server: seed, start, raw and siirto passes for lower and repoint.
async fn run_layout(args: &Args, per_zone: usize) -> Result<()> {
    let zones = layout(args.domains, per_zone)?;
    let rrsets: usize = zones.iter().map(|z| z.a_names.len()).sum();
    let label = if per_zone == 1 {
        format!("{} zones of 1 domain", zones.len())
    } else {
        format!("{} zones of {per_zone} domains", zones.len())
    };
    println!("\n== {label}: {rrsets} A rrsets to change ==");

    let seeded = Instant::now();
    let pdns = Pdns::start_with_zones_and_config(&pdns_zones(&zones), PDNS_CONFIG).await?;
    println!(
        "seeded the pdns sqlite database and started pdns_server in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    let outcome = passes(args, zones, &pdns.database(), rrsets, &label, &pdns).await;
    if outcome.is_err() {
        let log = pdns.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("pdns_server log (last lines, newest first):\n{}", tail.join("\n"));
    }
    outcome
}

/// The raw and siirto passes, lower then repoint, on a running server. Each operation runs
/// slice by slice (`--slices`): raw, raw undone, siirto on the same zones, so that a change in
/// the machine's load during the run falls on both clients alike.
async fn passes(
    args: &Args,
    zones: Vec<BenchZone>,
    database: &Path,
    rrsets: usize,
    label: &str,
    pdns: &Pdns,
) -> Result<()> {
    let per_slice = zones.len().div_ceil(args.slices.max(1)).max(1);
    let mut slices: Vec<Arc<Vec<BenchZone>>> = Vec::new();
    let mut zones = zones.into_iter().peekable();
    while zones.peek().is_some() {
        slices.push(Arc::new(zones.by_ref().take(per_slice).collect()));
    }
    let provider =
        PowerDns::new(pdns.api_url.clone(), Secret::new(pdns.api_key.clone()), "localhost".to_owned())?;
    let provider = Arc::new(match args.reads {
        Reads::Axfr => provider.with_axfr_reads(pdns.dns_addr),
        Reads::Api => provider,
    });
    let raw = RawClient::new(pdns, false)?;
    let raw_reads = RawClient::new(pdns, true)?;
    let raw_axfr = RawClient::with_axfr_reads(pdns)?;

    // Lower: raw 3600→60, raw 60→3600 (identical load), then siirto 3600→60.
    let load = load_average();
    let mut totals = Totals::default();
    for slice in &slices {
        let raw_a = raw.run(slice, args.concurrency, SOURCE, SHORT_TTL).await?;
        let raw_b = raw.run(slice, args.concurrency, SOURCE, OLD_TTL).await?;
        let ours = siirto_pass(&provider, slice, args, Op::Lower).await?;
        totals.add(raw_a, raw_b, ours);
        if args.raw_reads {
            // GET+PATCH, and back to where siirto left it.
            totals.reads.add(&raw_reads.run(slice, args.concurrency, SOURCE, OLD_TTL).await?);
            totals.axfr.add(&raw_axfr.run(slice, args.concurrency, SOURCE, SHORT_TTL).await?);
        }
    }
    expect_records(database, SOURCE, SHORT_TTL, rrsets).await?;
    report("lower TTL", label, rrsets, &totals, slices.len(), (load, load_average()));

    // Repoint: raw source→target, raw target→source (identical load), then siirto.
    let load = load_average();
    let mut totals = Totals::default();
    for slice in &slices {
        let raw_a = raw.run(slice, args.concurrency, TARGET, SHORT_TTL).await?;
        let raw_b = raw.run(slice, args.concurrency, SOURCE, SHORT_TTL).await?;
        let ours = siirto_pass(&provider, slice, args, Op::Repoint).await?;
        totals.add(raw_a, raw_b, ours);
        if args.raw_reads {
            totals.reads.add(&raw_reads.run(slice, args.concurrency, SOURCE, SHORT_TTL).await?);
            totals.axfr.add(&raw_axfr.run(slice, args.concurrency, TARGET, SHORT_TTL).await?);
        }
    }
    expect_records(database, TARGET, SHORT_TTL, rrsets).await?;
    report("repoint", label, rrsets, &totals, slices.len(), (load, load_average()));
    Ok(())
}

/// One operation's passes summed over the slices; `best_raw` is, per slice, the better of the
/// two raw passes.
#[derive(Default)]
struct Totals {
    ours: Pass,
    raw_a: Pass,
    raw_b: Pass,
    best_raw: Pass,
    /// The raw client reading each zone (GET) before its PATCH, one request at a time.
    reads: Pass,
    /// The same, reading each zone by AXFR instead.
    axfr: Pass,
}

impl Totals {
    fn add(&mut self, raw_a: Pass, raw_b: Pass, ours: Pass) {
        let best = if rate(&raw_a) >= rate(&raw_b) { &raw_a } else { &raw_b };
        self.best_raw.add(best);
        self.raw_a.add(&raw_a);
        self.raw_b.add(&raw_b);
        self.ours.add(&ours);
    }
}

/// The machine's 1-minute load average, for the record (`/proc/loadavg`).
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The zones for `domains` domains, `per_zone` to a zone.
fn layout(domains: usize, per_zone: usize) -> Result<Vec<BenchZone>> {
    let mut zones = Vec::with_capacity(domains.div_ceil(per_zone));
    if per_zone == 1 {
        for i in 0..domains {
            let name = DomainName::parse(&format!("site{i:06}.fi"))?;
            let a_names = vec![name.fqdn(), format!("www.{}", name.fqdn())];
            zones.push(BenchZone { name, a_names });
        }
    } else {
        for (g, start) in (0..domains).step_by(per_zone).enumerate() {
            let name = DomainName::parse(&format!("group{g:05}.fi"))?;
            let mut a_names = Vec::new();
            for k in 0..per_zone.min(domains - start) {
                let domain = format!("site{k:02}.{}", name.fqdn());
                a_names.push(format!("www.{domain}"));
                a_names.push(domain);
            }
            zones.push(BenchZone { name, a_names });
        }
    }
    Ok(zones)
}

/// The zones as pdns's database holds them at the start: SOA, two NS, an MX and an SPF record
/// at a spam filter (never touched), and the A rrsets at the source with the old TTL.
fn pdns_zones(zones: &[BenchZone]) -> Vec<PdnsZone> {
    let record = |name: &str, rtype: &'static str, content: String, prio: u16| Record {
        name: name.trim_end_matches('.').to_owned(),
        rtype,
        content,
        prio,
        ttl: OLD_TTL,
    };
    zones
        .iter()
        .map(|zone| {
            let apex = zone.name.as_str();
            let soa = "ns1.siirto-bench.fi hostmaster.siirto-bench.fi 1 10800 3600 604800 3600".to_owned();
            let mut records = vec![
                record(apex, "SOA", soa, 0),
                record(apex, "NS", "ns1.siirto-bench.fi".to_owned(), 0),
                record(apex, "NS", "ns2.siirto-bench.fi".to_owned(), 0),
                record(apex, "MX", "mx.filter.example.net".to_owned(), 10),
                record(apex, "TXT", "\"v=spf1 include:filter.example.net -all\"".to_owned(), 0),
            ];
            records.extend(zone.a_names.iter().map(|name| record(name, "A", SOURCE.to_string(), 0)));
            PdnsZone { name: apex.to_owned(), records }
        })
        .collect()
}

/// Checks, in pdns's own database, that exactly `expected` A records hold `address` at `ttl`
/// and none is left anywhere else.
async fn expect_records(path: &Path, address: Ipv4Addr, ttl: u32, expected: usize) -> Result<()> {
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    let mut db = SqliteConnection::connect_with(&options).await?;
    let row = sqlx::query(
        "SELECT SUM(content = ? AND ttl = ?) AS good, COUNT(*) AS total FROM records WHERE type = 'A'",
    )
    .bind(address.to_string())
    .bind(i64::from(ttl))
    .fetch_one(&mut db)
    .await?;
    let (good, total): (i64, i64) = (row.try_get("good")?, row.try_get("total")?);
    db.close().await?;
    if good as usize != expected || total as usize != expected {
        bail!("pdns holds {good} of {total} A records at {address} TTL {ttl}, expected all {expected}");
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Op {
    Lower,
    Repoint,
}

/// What one pass took.
struct Pass {
    elapsed: Duration,
    /// Transient failures (HTTP 500 from the sqlite writer lock, …) retried, when counted.
    retries: Option<usize>,
    /// Rrsets sent.
    rrsets: usize,
}

/// siirto's path over every zone: a read through the provider (AXFR or GET), the change set from the public
/// change builders, one PATCH through the provider; reads overlap, writes are bounded.
async fn siirto_pass(
    provider: &Arc<PowerDns>,
    zones: &Arc<Vec<BenchZone>>,
    args: &Args,
    op: Op,
) -> Result<Pass> {
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.readers.max(args.concurrency) {
        let (provider, zones, next, retries, sent, writes) =
            (provider.clone(), zones.clone(), next.clone(), retries.clone(), sent.clone(), writes.clone());
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(zone) = zones.get(index) else { return Ok::<(), anyhow::Error>(()) };
                let mut attempts = 0;
                let data = loop {
                    match provider.zone(&zone.name).await {
                        Ok(data) => break data,
                        Err(err) if err.is_transient() && attempts < MAX_ATTEMPTS => {
                            attempts += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(err) => return Err(anyhow!("reading {}: {err}", zone.name)),
                    }
                };
                let changes: Vec<RrsetChange> = match op {
                    Op::Lower => lower_ttl_changes(&data, SOURCE, SHORT_TTL),
                    Op::Repoint => repoint_changes(&data, None, SOURCE, TARGET),
                };
                sent.fetch_add(changes.len(), Ordering::Relaxed);
                let _permit = writes.acquire().await?;
                loop {
                    match provider.apply(&zone.name, &changes).await {
                        Ok(()) => break,
                        Err(err) if err.is_transient() && attempts < MAX_ATTEMPTS => {
                            attempts += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(err) => return Err(anyhow!("PATCH {}: {err}", zone.name)),
                    }
                }
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    Ok(Pass {
        elapsed: started.elapsed(),
        retries: Some(retries.load(Ordering::Relaxed)),
        rrsets: sent.load(Ordering::Relaxed),
    })
}

/// The baseline: plain reqwest, one prebuilt PATCH per zone, `concurrency` in flight; with
/// `reads`, a GET of the zone (body read and dropped) before each PATCH, to tell what reading
/// costs the server apart from what siirto's code costs.
struct RawClient {
    http: reqwest::Client,
    zones_url: Url,
    api_key: String,
    reads: bool,
    /// With `reads`: read the zone by AXFR from this DNS address instead of the API GET.
    axfr: Option<std::net::SocketAddr>,
}

impl RawClient {
    fn new(pdns: &Pdns, reads: bool) -> Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let zones_url = pdns.api_url.join("api/v1/servers/localhost/zones/")?;
        Ok(Self { http, zones_url, api_key: pdns.api_key.clone(), reads, axfr: None })
    }

    /// A raw client that reads each zone by AXFR over TCP from pdns's DNS port (unsigned:
    /// pdns allows AXFR from loopback by default) before its PATCH.
    fn with_axfr_reads(pdns: &Pdns) -> Result<Self> {
        Ok(Self { axfr: Some(pdns.dns_addr), reads: true, ..RawClient::new(pdns, true)? })
    }

    /// Sets every A rrset of every zone to `address` at `ttl`.
    async fn run(
        &self,
        zones: &Arc<Vec<BenchZone>>,
        concurrency: usize,
        address: Ipv4Addr,
        ttl: u32,
    ) -> Result<Pass> {
        let next = Arc::new(AtomicUsize::new(0));
        let retries = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (reads, axfr) = (self.reads, self.axfr);
            let (http, base, key, zones, next, retries) = (
                self.http.clone(),
                self.zones_url.clone(),
                self.api_key.clone(),
                zones.clone(),
                next.clone(),
                retries.clone(),
            );
            workers.spawn(async move {
                let content = address.to_string();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(zone) = zones.get(index) else { return Ok::<(), anyhow::Error>(()) };
                    let rrsets: Vec<serde_json::Value> = zone
                        .a_names
                        .iter()
                        .map(|name| {
                            json!({"name": name, "type": "A", "ttl": ttl, "changetype": "REPLACE",
                                   "records": [{"content": content, "disabled": false}]})
                        })
                        .collect();
                    let body = json!({ "rrsets": rrsets });
                    let url = base.join(&zone.name.fqdn())?;
                    if let (true, Some(server)) = (reads, axfr) {
                        axfr_records(server, &zone.name).await?;
                    } else if reads {
                        let response = http.get(url.clone()).header("X-API-Key", &key).send().await?;
                        if !response.status().is_success() {
                            bail!("raw GET {}: {}", zone.name, response.status());
                        }
                        response.bytes().await?;
                    }
                    let mut attempts = 0;
                    loop {
                        let response =
                            http.patch(url.clone()).header("X-API-Key", &key).json(&body).send().await;
                        let status = match response {
                            Ok(response) if response.status().is_success() => break,
                            Ok(response) => Some(response.status()),
                            Err(_) => None,
                        };
                        let transient = status.is_none_or(|s| s.is_server_error());
                        if !transient || attempts >= MAX_ATTEMPTS {
                            bail!("raw PATCH {}: {status:?}", zone.name);
                        }
                        attempts += 1;
                        retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            });
        }
        while let Some(result) = workers.join_next().await {
            result??;
        }
        let rrsets = zones.iter().map(|z| z.a_names.len()).sum();
        Ok(Pass { elapsed: started.elapsed(), retries: Some(retries.load(Ordering::Relaxed)), rrsets })
    }
}

impl Default for Pass {
    /// Nothing yet, with retries counted (zero).
    fn default() -> Self {
        Pass { elapsed: Duration::ZERO, retries: Some(0), rrsets: 0 }
    }
}

impl Pass {
    fn add(&mut self, other: &Pass) {
        self.elapsed += other.elapsed;
        self.rrsets += other.rrsets;
        self.retries = match (self.retries, other.retries) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
}

fn rate(pass: &Pass) -> f64 {
    pass.rrsets as f64 / pass.elapsed.as_secs_f64()
}

/// Prints one figure with its baseline (per slice the better raw pass, summed) and the ratio
/// of the times, with the machine's load at the start and the end of the operation.
fn report(what: &str, label: &str, expected: usize, totals: &Totals, slices: usize, load: (f64, f64)) {
    let (ours, best) = (&totals.ours, &totals.best_raw);
    let ratio = rate(best) / rate(ours);
    let verdict = if ratio <= 1.5 { "ok" } else { "OVER" };
    println!(
        "{what}: {label}, {} rrsets in {:.1} s ({:.0} rrsets/s, {} retries) vs raw batched PATCH {:.1} s ({:.0}/s; passes {:.0}/s, {:.0}/s): {ratio:.2}x (target <= 1.5x, {verdict}); {slices} slices interleaved, load {:.1} -> {:.1}",
        ours.rrsets,
        ours.elapsed.as_secs_f64(),
        rate(ours),
        ours.retries.map_or("uncounted".to_owned(), |n| n.to_string()),
        best.elapsed.as_secs_f64(),
        rate(best),
        rate(&totals.raw_a),
        rate(&totals.raw_b),
        load.0,
        load.1,
    );
    if totals.reads.rrsets > 0 {
        println!(
            "  raw GET+PATCH per zone: {:.0} rrsets/s; siirto is {:.2}x of that (what reading the zone costs the server is in both)",
            rate(&totals.reads),
            rate(&totals.reads) / rate(ours)
        );
    }
    if totals.axfr.rrsets > 0 {
        println!(
            "  raw AXFR+PATCH per zone: {:.0} rrsets/s ({:.2}x the time of raw PATCH alone)",
            rate(&totals.axfr),
            rate(best) / rate(&totals.axfr)
        );
    }
    if ours.rrsets != expected {
        println!("  note: siirto sent {} rrsets, {expected} expected", ours.rrsets);
    }
}

/// Reads `zone` by AXFR over TCP from `server` (unsigned) and returns how many records came.
async fn axfr_records(server: std::net::SocketAddr, zone: &DomainName) -> Result<usize> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut request = Message::query();
    request.add_query(Query::query(Name::from_ascii(zone.fqdn())?, RecordType::AXFR));
    let bytes = request.to_vec()?;
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&bytes);
    stream.write_all(&frame).await?;
    let (mut soas, mut records) = (0, 0);
    while soas < 2 {
        let length = stream.read_u16().await?;
        let mut body = vec![0u8; usize::from(length)];
        stream.read_exact(&mut body).await?;
        let answer = Message::from_vec(&body)?;
        if answer.answers.is_empty() {
            bail!("AXFR {zone}: empty answer ({:?})", answer.metadata.response_code);
        }
        soas += answer.answers.iter().filter(|r| r.record_type() == RecordType::SOA).count();
        records += answer.answers.len();
    }
    Ok(records)
}

/// The real engine on a SQLite store with simulated cPanel hosts (instant transfers) and the
/// real pdns_server: times the daemon's TTL lowering of every zone against raw batched PATCHes
/// of the same rrsets, then lets the migration run to its cutover and reports the whole time.
async fn run_engine(args: &Args) -> Result<()> {
    use siirto::demo::{DnsEndpoint, SOURCE_IP, create_zones, start_hosts, write_config};
    use siirto::domain::MigrationState;
    use siirto::engine::{Engine, SystemClock};
    use siirto::names::MigrationId;
    use siirto::playbook::Playbook;
    use siirto::status::migration_status;
    use siirto::store::Store;
    use siirto::world::World;

    const PLAYBOOK: &str = include_str!("../playbooks/demo.toml");
    println!("\n== real engine: {} simulated accounts, SQLite store ==", args.engine_accounts);
    let dir = tempfile::tempdir()?;
    let pdns = Pdns::start_with_zones_and_config(&[], PDNS_CONFIG).await?;
    let hosts = start_hosts(args.engine_accounts, dir.path()).await?;
    let endpoint =
        DnsEndpoint { api_url: pdns.api_url.clone(), api_key: pdns.api_key.clone(), dns_addr: pdns.dns_addr };
    let dns = endpoint.client()?;
    create_zones(&dns, &hosts.accounts, SOURCE_IP).await?;

    // What the raw client will write: every A rrset at the source, read once, untimed.
    let mut zones = Vec::new();
    for name in dns.zones().await? {
        let zone = dns.zone(&name).await?;
        let a_names: Vec<String> = zone
            .rrsets
            .iter()
            .filter(|r| r.rtype == "A" && r.records == [SOURCE_IP.to_string()])
            .map(|r| r.name.clone())
            .collect();
        zones.push(BenchZone { name, a_names });
    }
    let zones = Arc::new(zones);
    let rrsets: usize = zones.iter().map(|z| z.a_names.len()).sum();
    let raw = RawClient::new(&pdns, false)?;
    let raw_a = raw.run(&zones, args.concurrency, SOURCE_IP, SHORT_TTL).await?;
    let raw_b = raw.run(&zones, args.concurrency, SOURCE_IP, siirto::demo::ZONE_TTL).await?;

    std::fs::create_dir_all(dir.path().join("outbox"))?;
    let store_url =
        format!("sqlite://{}?synchronous={}", dir.path().join("siirto.db").display(), args.store_synchronous);
    // write_config appends `extra` right after the [dns] table's own lines.
    let axfr = match args.reads {
        Reads::Axfr => format!("axfr_server = \"{}\"\n", pdns.dns_addr),
        Reads::Api => String::new(),
    };
    let extra = format!(
        "{axfr}\n[daemon]\nlease = \"20s\"\nidle_poll = \"100ms\"\n\n[mail]\nfrom = \"Siirto <noreply@siirto.test>\"\nchannel = \"directory\"\npath = \"outbox\"\n"
    );
    let mut config = write_config(&hosts, &endpoint, dir.path(), &store_url, &extra)?;
    config.dns.write_concurrency = args.concurrency as u32;
    let store = Store::connect(&config.database).await?;
    let adapters = World::from_config(&config)?;
    let playbook = Playbook::parse(PLAYBOOK, "playbooks/demo.toml").map_err(|e| anyhow!("{e}"))?;
    let id = MigrationId::parse("bench")?;
    let now = chrono::Utc::now();
    let request = siirto::plan::PlanRequest {
        id: id.clone(),
        source: "old",
        target: "new",
        playbook: &playbook,
        cutover_at: now,
        actor: "bench",
    };
    siirto::plan::plan(&store, &config, &adapters, request, now).await?;
    siirto::ops::approve(&store, &id, "bench", chrono::Utc::now()).await?;
    let engine = Arc::new(
        Engine::from_config(&config, store.clone(), Arc::new(SystemClock))?
            .with_owner("bench")
            .with_workers(8),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The pre-flight (which lists the provider's zones) runs before the clock starts: the
    // figure is the engine's lowering, as the raw client's is its PATCHes.
    let outcome = siirto::ops::start(&store, &config, &adapters, &id, "bench", chrono::Utc::now()).await?;
    anyhow::ensure!(outcome.started.is_some(), "pre-flight refused the start: {:#?}", outcome.report);
    let started = chrono::Utc::now();
    let clock = Instant::now();
    let daemon = tokio::spawn(Arc::clone(&engine).run(async {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status = migration_status(&store, id.as_str()).await?;
        if matches!(status.detail, MigrationState::CutOver { .. }) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the migration did not cut over within 600 s: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = clock.elapsed();
    let _ = stop.send(());
    daemon.await??;

    let events = store.events(id.as_str()).await?;
    let at = |kind: &str| events.iter().filter(|e| e.kind == kind).map(|e| e.at).collect::<Vec<i64>>();
    let lowered = at("domain_ttl_lowered");
    let repointed = at("domain_repointed");
    let last_lowered = lowered.iter().max().copied().unwrap_or(0);
    let lowering = Duration::from_millis((last_lowered - started.timestamp_millis()).max(0) as u64);
    let ours = Pass { elapsed: lowering, retries: None, rrsets };
    println!(
        "  {} zones, {} domains lowered, {} repointed; whole migration to cutover {:.1} s (2 s demo TTL gate, simulated transfers, HTTP checks)",
        zones.len(),
        lowered.len(),
        repointed.len(),
        total.as_secs_f64()
    );
    let mut totals = Totals::default();
    totals.add(raw_a, raw_b, ours);
    let load = load_average();
    report(
        "engine lower TTL (start -> last domain lowered)",
        "real engine",
        rrsets,
        &totals,
        1,
        (load, load),
    );
    if let (Some(first), Some(last)) = (repointed.iter().min(), repointed.iter().max()) {
        println!(
            "  engine repoints spread over {:.1} s (interleaved with transfers and verification; not a DNS rate)",
            (last - first) as f64 / 1000.0
        );
    }
    Ok(())
}
