//! Benchmark: `siirto::plan::plan` on a source host with 2,000 accounts and 20,000 domains,
//! against a real `pdns_server` on loopback holding the zones, a generated contracts CSV and a
//! real SQLite store. Reports the wall time of the whole plan, its phases (measured again from
//! outside, one by one), peak memory (VmHWM), the DNS query rate, and the same classification
//! done one domain at a time as the baseline.
//!
//! `cargo run --release --example plan_scale [-- --accounts N --domains-per-account M]`
//!
//! The zones are written straight into pdns's sqlite database (the gsqlite3 schema) before it
//! starts: one transaction, about a second for 20,000 zones, where one API POST per zone runs
//! at ~640 zones/s (~30 s). pdns's caches are off, so every query of every pass reaches its
//! backend and the sequential pass is not served from what the concurrent pass left behind.

// The integration tests' pdns_server harness, shared with the other benchmarks.
#[path = "../tests/it/support/pdns.rs"]
mod pdns;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;

use siirto::contracts::{InventoryAccount, ServerInventory};
use siirto::demo::{DnsEndpoint, SOURCE_IP, SimHosts, TARGET_IP, write_config};
use siirto::dns::classify::{Classifier, ClassifySettings, DomainClass, Facts, Outcome};
use siirto::names::{AccountName, DomainName, MigrationId};
use siirto::output::line;
use siirto::playbook::Playbook;
use siirto::sim::{SimAccount, SimHostSpec, SimWorld, start_host};
use siirto::store::Store;
use siirto::world::World;

use pdns::{Pdns, Record, Zone};

/// Our nameserver (the demo config's `own_nameservers`).
const OWN_NS: &str = "ns1.siirto-demo.test";
/// Someone else's nameserver, for the domains whose DNS is elsewhere.
const OTHER_NS: &str = "ns1.other-dns.example";
/// The spam filter the config names.
const SPAM_FILTER: &str = "filter.example.net";
/// A zone on our pdns holding a mail host elsewhere (so its address lookups are answered).
const MAILHOST_ZONE: &str = "mailhost.example";
/// Zone TTL.
const TTL: u32 = 3600;

/// Plans a large source host against a real pdns_server and times it.
#[derive(Debug, Parser)]
#[command(name = "plan_scale")]
struct Args {
    /// Accounts on the source host.
    #[arg(long, default_value_t = 2000)]
    accounts: usize,
    /// Domains per account (the main domain and M-1 addon domains).
    #[arg(long, default_value_t = 10)]
    domains_per_account: usize,
    /// `dns.classify_concurrency` (domains classified at once).
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
    /// Skip the sequential baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Classification passes of each kind, interleaved (concurrent, sequential, concurrent…);
    /// the fastest of each is compared, every one is printed.
    #[arg(long, default_value_t = 2)]
    passes: usize,
}

/// The awkward cases, by the domain's running number `k` (0 is always plain).
fn no_zone(k: usize) -> bool {
    k % 500 == 499
}
fn external_ns(k: usize) -> bool {
    k % 97 == 96
}
fn site_elsewhere(k: usize) -> bool {
    k % 89 == 88
}
fn spam_filtered(k: usize) -> bool {
    k % 83 == 82
}
fn mail_elsewhere(k: usize) -> bool {
    k % 79 == 78 && !spam_filtered(k)
}

fn domain(name: &str) -> anyhow::Result<DomainName> {
    DomainName::parse(name).map_err(|e| anyhow!("{name}: {e}"))
}

/// The source host's accounts: `bench0001`… with main domain `bench-0001.test` and addon
/// domains `bench-0001-01.test`…; every tenth owned by the reseller `bench0001`.
fn accounts(count: usize, per_account: usize) -> anyhow::Result<Vec<SimAccount>> {
    let digits = count.to_string().len().max(4);
    (1..=count)
        .map(|i| {
            let user = AccountName::parse(&format!("bench{i:0digits$}")).map_err(|e| anyhow!("{e}"))?;
            let main = domain(&format!("bench-{i:0digits$}.test"))?;
            let addon_domains = (1..per_account.max(1))
                .map(|j| domain(&format!("bench-{i:0digits$}-{j:02}.test")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let resold = i % 10 == 0;
            Ok(SimAccount {
                email: format!("owner@{main}"),
                user,
                domain: main,
                addon_domains,
                plan: if resold { format!("bench{:0digits$}_basic", 1) } else { "pro".to_owned() },
                owner: if resold { format!("bench{:0digits$}", 1) } else { "root".to_owned() },
                disk_mb: ((i as u64 * 37) % 500) + 1,
                fail_restore: None,
                parked_domains: Vec::new(),
                sub_domains: Vec::new(),
                dedicated_ip: None,
                listaccts_overrides: BTreeMap::new(),
                extra_hosts: Vec::new(),
            })
        })
        .collect()
}

fn all_domains(accounts: &[SimAccount]) -> Vec<DomainName> {
    accounts
        .iter()
        .flat_map(|a| std::iter::once(a.domain.clone()).chain(a.addon_domains.iter().cloned()))
        .collect()
}

/// The zones pdns holds: one per domain except the few "no zone" ones, plus the mail host zone.
fn zones(domains: &[DomainName]) -> Vec<Zone> {
    let record = |name: &str, rtype: &'static str, content: String| Record {
        name: name.to_owned(),
        rtype,
        prio: if rtype == "MX" { 10 } else { 0 },
        content,
        ttl: TTL,
    };
    let soa = |apex: &str| format!("{OWN_NS} hostmaster.{apex} 2026112201 10800 3600 604800 3600");
    let mut zones = Vec::with_capacity(domains.len() + 1);
    for (k, d) in domains.iter().enumerate() {
        if no_zone(k) {
            continue;
        }
        let apex = d.as_str();
        let site = if site_elsewhere(k) { "192.0.2.80".to_owned() } else { SOURCE_IP.to_string() };
        let mx = if spam_filtered(k) {
            SPAM_FILTER.to_owned()
        } else if mail_elsewhere(k) {
            format!("mx.{MAILHOST_ZONE}")
        } else {
            format!("mail.{apex}")
        };
        zones.push(Zone {
            name: apex.to_owned(),
            records: vec![
                record(apex, "SOA", soa(apex)),
                record(apex, "NS", if external_ns(k) { OTHER_NS } else { OWN_NS }.to_owned()),
                record(apex, "A", site.clone()),
                record(&format!("www.{apex}"), "A", site),
                record(&format!("mail.{apex}"), "A", SOURCE_IP.to_string()),
                record(apex, "MX", mx),
            ],
        });
    }
    zones.push(Zone {
        name: MAILHOST_ZONE.to_owned(),
        records: vec![
            record(MAILHOST_ZONE, "SOA", soa(MAILHOST_ZONE)),
            record(MAILHOST_ZONE, "NS", OTHER_NS.to_owned()),
            record(&format!("mx.{MAILHOST_ZONE}"), "A", "192.0.2.25".to_owned()),
        ],
    });
    zones
}

/// One row per account, with a few awkward ones: an invalid e-mail, a contract naming the
/// other server, an account without a contract, a quoted name with a comma and a newline and
/// two e-mails, a row by domain only, and contracts for accounts that are not on the server.
fn contracts_csv(accounts: &[SimAccount]) -> String {
    let mut csv = String::from("customer_id,name,email,language,user,domain,server,reseller\n");
    for (n, account) in accounts.iter().enumerate() {
        let id = 100_000 + n;
        let (user, main) = (account.user.as_str(), account.domain.as_str());
        let reseller = if account.owner == "root" { "" } else { "Bench Reseller Oy" };
        let row = match n % 250 {
            3 => format!("{id},Asiakas {n} Oy,ei-osoite,fi,{user},{main},old.sim.test,{reseller}"),
            5 => format!("{id},Asiakas {n} Oy,owner@{main},fi,{user},{main},new.sim.test,{reseller}"),
            7 => continue,
            9 => format!(
                "{id},\"Puu, Paja \"\"Oy\"\"\nHelsinki\",\"owner@{main}; toimisto@{main}\",sv,{user},{main},OLD.SIM.TEST,{reseller}"
            ),
            11 => format!("{id},Asiakas {n} Ab,owner@{main},en,,{main},old.sim.test,{reseller}"),
            _ => format!("{id},Asiakas {n} Oy,owner@{main},fi,{user},{main},old.sim.test,{reseller}"),
        };
        csv.push_str(&row);
        csv.push('\n');
        if n % 500 == 13 {
            csv.push_str(&format!(
                "{},Lähtenyt {n} Oy,pois@example.fi,fi,gone{n:05},gone-{n}.test,old.sim.test,\n",
                900_000 + n
            ));
        }
    }
    csv
}

/// `VmHWM` and `VmRSS` from /proc/self/status, in MB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// 12,345 style.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn rate(count: usize, d: Duration) -> f64 {
    count as f64 / d.as_secs_f64().max(1e-9)
}

/// One timed pass: wall time, queries pdns received, CPU seconds used by this process and by
/// pdns.
struct Pass {
    took: Duration,
    queries: u64,
    cpu_self: f64,
    cpu_pdns: f64,
}

impl Pass {
    fn cpu(&self) -> String {
        format!(
            "CPU: siirto {:.1} s, pdns {:.1} s in {:.1} s wall",
            self.cpu_self,
            self.cpu_pdns,
            self.took.as_secs_f64()
        )
    }
}

/// Classifies every domain with `settings` and counts what pdns received meanwhile.
async fn timed_classification(
    pdns: &Pdns,
    settings: &ClassifySettings,
    domains: &[DomainName],
    facts: &Facts,
) -> anyhow::Result<(Vec<DomainClass>, Pass)> {
    let classifier = Classifier::new(settings)?;
    let before = pdns.queries().await?;
    let (self_before, pdns_before) = (pdns::cpu_seconds("/proc/self/stat"), pdns.cpu_seconds());
    let started = Instant::now();
    let classes = classifier.classify_all(domains, facts).await;
    let took = started.elapsed();
    let cpu_self = pdns::cpu_seconds("/proc/self/stat") - self_before;
    let cpu_pdns = pdns.cpu_seconds() - pdns_before;
    let queries = pdns.queries().await? - before;
    Ok((classes, Pass { took, queries, cpu_self, cpu_pdns }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.accounts == 0 || args.domains_per_account == 0 {
        bail!("--accounts and --domains-per-account must be at least 1");
    }
    let total_started = Instant::now();
    let dir = tempfile::Builder::new().prefix("siirto-bench").tempdir()?;
    // The simulated host writes a docroot and a Maildir per domain (~140,000 directories for
    // 20,000 domains): on tmpfs when there is one, as creating and removing them on this
    // machine's disk took longer than the plan and is no part of what is measured.
    let sim_dir = tempfile::Builder::new()
        .prefix("siirto-bench-sim")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::Builder::new().prefix("siirto-bench-sim").tempdir())?;
    line(&format!(
        "plan_scale: {} accounts × {} domains = {} domains; {}, gsqlite3, caches off; classify_concurrency {}; {} CPUs",
        args.accounts,
        args.domains_per_account,
        args.accounts * args.domains_per_account,
        Pdns::version(),
        args.concurrency,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ));

    line(&format!(
        "load average before the run (other work on this machine skews the figures): {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));

    // Setup (not measured as part of the plan).
    let started = Instant::now();
    let accounts = accounts(args.accounts, args.domains_per_account)?;
    let domains = all_domains(&accounts);
    let zones = zones(&domains);
    let pdns = Pdns::start_with_zones(&zones).await?;
    let pdns_took = started.elapsed();
    let started = Instant::now();
    let world = SimWorld::new();
    let mut source_spec = SimHostSpec::new("old.sim.test", SOURCE_IP, "bench-source-token");
    source_spec.accounts = accounts.clone();
    let source = start_host(source_spec, sim_dir.path().join("old.sim.test"), &world).await?;
    let target = start_host(
        SimHostSpec::new("new.sim.test", TARGET_IP, "bench-target-token"),
        sim_dir.path().join("new.sim.test"),
        &world,
    )
    .await?;
    let hosts = SimHosts { world, source, target, accounts };
    let sim_took = started.elapsed();
    let csv_path = dir.path().join("contracts.csv");
    std::fs::write(&csv_path, contracts_csv(&hosts.accounts))?;
    let endpoint =
        DnsEndpoint { api_url: pdns.api_url.clone(), api_key: pdns.api_key.clone(), dns_addr: pdns.dns_addr };
    let extra = format!(
        "spam_filters = [\"{SPAM_FILTER}\"]\nclassify_concurrency = {concurrency}\n\n\
         [mail]\nfrom = \"Bench <noreply@siirto-bench.test>\"\nchannel = \"directory\"\npath = \"{outbox}\"\n\n\
         [contracts]\nsource = \"csv\"\npath = \"{csv}\"\n\
         server_names = {{ old = [\"old.sim.test\"], new = [\"new.sim.test\"] }}\n",
        concurrency = args.concurrency,
        outbox = dir.path().join("outbox").display(),
        csv = csv_path.display(),
    );
    let database = format!("sqlite://{}", dir.path().join("siirto.db").display());
    let config = write_config(&hosts, &endpoint, dir.path(), &database, &extra)?;
    let store = Store::connect(&config.database).await.context("opening the SQLite store")?;
    let adapters = World::from_config(&config)?;
    let playbook =
        Playbook::parse(siirto::demo::DEMO_PLAYBOOK, "playbooks/demo.toml").map_err(|e| anyhow!("{e}"))?;
    line(&format!(
        "setup: {} zones written into pdns's sqlite database and pdns started in {}; sim host with {} accounts started in {}",
        thousands(zones.len() as f64),
        secs(pdns_took),
        thousands(hosts.accounts.len() as f64),
        secs(sim_took),
    ));
    drop(zones);

    // The whole plan.
    let (_, rss_before) = memory();
    let peak_reset = reset_peak();
    let queries_before = pdns.queries().await?;
    let now = chrono::Utc::now();
    let request = siirto::plan::PlanRequest {
        id: MigrationId::parse("bench").map_err(|e| anyhow!("{e}"))?,
        source: "old",
        target: "new",
        playbook: &playbook,
        cutover_at: now,
        actor: "bench",
    };
    let (self_before, pdns_before) = (pdns::cpu_seconds("/proc/self/stat"), pdns.cpu_seconds());
    let started = Instant::now();
    let plan = siirto::plan::plan(&store, &config, &adapters, request, now).await?;
    let plan_took = started.elapsed();
    let plan_cpu = (pdns::cpu_seconds("/proc/self/stat") - self_before, pdns.cpu_seconds() - pdns_before);
    let plan_queries = pdns.queries().await? - queries_before;
    let (peak, _) = memory();
    let c = &plan.counts;
    if c.accounts != hosts.accounts.len() || c.domains != domains.len() {
        bail!(
            "the plan has {} accounts and {} domains, expected {} and {}",
            c.accounts,
            c.domains,
            hosts.accounts.len(),
            domains.len()
        );
    }
    line(&format!(
        "plan: {} accounts, {} domains in {} ({} domains/s); {} DNS queries ({}/s, {:.1} per domain)",
        thousands(c.accounts as f64),
        thousands(c.domains as f64),
        secs(plan_took),
        thousands(rate(c.domains, plan_took)),
        thousands(plan_queries as f64),
        thousands(plan_queries as f64 / plan_took.as_secs_f64()),
        plan_queries as f64 / c.domains as f64,
    ));
    line(&format!(
        "  CPU: this process (siirto and the simulated WHM host) {:.1} s, pdns {:.1} s",
        plan_cpu.0, plan_cpu.1
    ));
    line(&format!(
        "  peak memory (VmHWM): {:.0} MB{} — the whole process: the simulated WHM host, the plan and its {:.1} MB JSON document",
        peak,
        if peak_reset {
            format!(" during the plan, {:.0} MB resident before it", rss_before)
        } else {
            " since the process started (could not reset it)".to_owned()
        },
        serde_json::to_string(&plan)?.len() as f64 / 1e6,
    ));
    line(&format!(
        "  outcome: {} move and repoint, {} customer must repoint, {} not repointed, {} held; {} flagged, {} contract rows not on the server",
        c.move_and_repoint,
        c.move_customer_must_repoint,
        c.move_not_repointed,
        c.held_for_operator,
        c.flagged,
        c.not_moved
    ));

    // The phases, measured again from outside, one by one, on the same data.
    line("phases (each measured again from outside, on the same data):");
    let source = adapters.hosts.get("old").ok_or_else(|| anyhow!("no host old"))?;
    let target = adapters.hosts.get("new").ok_or_else(|| anyhow!("no host new"))?;
    let started = Instant::now();
    let inventoried = siirto::inventory::inventory(&source.whm).await?;
    let zone_list = adapters.dns.zones().await?;
    let target_checks = siirto::inventory::check_target(&inventoried, &target.whm).await;
    let inventory_took = started.elapsed();
    let (listed, domain_info) = tokio::try_join!(source.whm.list_accounts(), source.whm.domain_info())?;
    line(&format!(
        "  inventory:       {} (the six WHM inventory calls: {} accounts, {} domains; pdns zone list {} zones; target checks{})",
        secs(inventory_took),
        inventoried.counts.accounts,
        inventoried.counts.domains,
        zone_list.len(),
        if target_checks.is_ok() { "" } else { " failed" }
    ));

    let settings = ClassifySettings::from_config(&config.dns);
    let facts = Facts {
        own_nameservers: config.dns.own_nameservers.clone(),
        source_ips: vec![IpAddr::V4(source.ip)],
        target_ips: vec![IpAddr::V4(target.ip)],
        spam_filters: config.dns.spam_filters.clone(),
    };
    // Interleaved passes, so that load from elsewhere on the machine hits both kinds alike.
    let sequential_settings = ClassifySettings { concurrency: 1, ..settings.clone() };
    let (mut concurrent_passes, mut sequential_passes) = (Vec::new(), Vec::new());
    let mut classes = Vec::new();
    let mut differ = 0;
    for _ in 0..args.passes.max(1) {
        let (found, pass) = timed_classification(&pdns, &settings, &domains, &facts).await?;
        concurrent_passes.push(pass);
        classes = found;
        if !args.no_baseline {
            let (sequential, pass) =
                timed_classification(&pdns, &sequential_settings, &domains, &facts).await?;
            sequential_passes.push(pass);
            differ = differ.max(sequential.iter().zip(&classes).filter(|(a, b)| a != b).count());
        }
    }
    let fastest = |passes: &[Pass]| -> Option<usize> {
        (0..passes.len()).min_by(|a, b| passes[*a].took.cmp(&passes[*b].took))
    };
    let all = |passes: &[Pass]| passes.iter().map(|p| secs(p.took)).collect::<Vec<_>>().join(", ");
    let best = &concurrent_passes[fastest(&concurrent_passes).unwrap_or(0)];
    let failed = classes.iter().filter(|c| matches!(c.outcome, Outcome::Failed { .. })).count();
    if let Some(first) = classes.iter().enumerate().find_map(|(k, c)| match &c.outcome {
        Outcome::Failed { reason } if !no_zone(k) => Some(reason.clone()),
        _ => None,
    }) {
        line(&format!("  WARNING: a domain with a zone was not classified: {first}"));
    }
    let n = domains.len();
    let concurrent = format!(
        "{} domains in {} ({} domains/s, {} queries/s; {} queries, {:.1} per domain; concurrency {})",
        thousands(n as f64),
        secs(best.took),
        thousands(rate(n, best.took)),
        thousands(best.queries as f64 / best.took.as_secs_f64()),
        thousands(best.queries as f64),
        best.queries as f64 / n as f64,
        settings.concurrency,
    );

    let started = Instant::now();
    let contracts = config.contracts.as_ref().ok_or_else(|| anyhow!("no [contracts] in the config"))?;
    let set = siirto::contracts::load(contracts).await?;
    let mut by_user: BTreeMap<AccountName, Vec<DomainName>> = BTreeMap::new();
    for d in &domain_info.items {
        by_user.entry(d.user.clone()).or_default().push(d.domain.clone());
    }
    let inventory = ServerInventory {
        accounts: listed
            .items
            .iter()
            .map(|a| InventoryAccount {
                user: a.user.clone(),
                main_domain: a.domain.clone(),
                domains: by_user.remove(&a.user).unwrap_or_default(),
                contact_email: a.email.clone(),
                owner: Some(a.owner.clone()),
            })
            .collect(),
    };
    let reconciliation = siirto::contracts::reconcile(&set, &inventory, "old", &contracts.server_names);
    let reconcile_took = started.elapsed();

    match fastest(&sequential_passes) {
        None => {
            line(&format!("  classification:  {concurrent} (sequential baseline skipped)"));
            line(&format!("                   {}; passes: {}", best.cpu(), all(&concurrent_passes)));
        }
        Some(index) => {
            let seq = &sequential_passes[index];
            line(&format!(
                "  classification:  {concurrent}\n                   vs sequential {} ({} domains/s, {} queries/s): {:.1}x",
                secs(seq.took),
                thousands(rate(n, seq.took)),
                thousands(seq.queries as f64 / seq.took.as_secs_f64()),
                seq.took.as_secs_f64() / best.took.as_secs_f64(),
            ));
            line(&format!(
                "                   fastest of {} interleaved passes each (concurrent: {}; sequential: {})",
                concurrent_passes.len(),
                all(&concurrent_passes),
                all(&sequential_passes)
            ));
            line(&format!("                   concurrent {}; sequential {}", best.cpu(), seq.cpu()));
            if differ > 0 {
                line(&format!("  WARNING: {differ} domains classified differently by the sequential pass"));
            }
        }
    }
    line(&format!(
        "                   {} domains not classified (no zone on pdns: REFUSED, expected {})",
        failed,
        (0..n).filter(|k| no_zone(*k)).count()
    ));
    line(&format!(
        "  reconciliation:  {} (load {} contract services + reconcile {} accounts: {} matched, {} without a contract, {} on another server, {} contact invalid, {} missing)",
        secs(reconcile_took),
        set.services.len(),
        reconciliation.accounts.len(),
        reconciliation.account_counts.matched,
        reconciliation.account_counts.on_server_no_contract,
        reconciliation.account_counts.contract_names_another_server,
        reconciliation.account_counts.contact_missing_or_invalid,
        reconciliation.account_counts.contract_names_this_server_but_missing,
    ));
    // plan() has no hooks: plan again (a plan needs its resolvers) and take the phases timed
    // above, the fastest classification pass among them, from its time: what is left is the
    // decisions, the comparison with the first plan (a re-plan's real extra work: reading back
    // its 15 MB document) and the store transaction, with the classification's noise in it.
    let now = chrono::Utc::now();
    let request = siirto::plan::PlanRequest {
        id: MigrationId::parse("bench-no-dns").map_err(|e| anyhow!("{e}"))?,
        source: "old",
        target: "new",
        playbook: &playbook,
        cutover_at: now,
        actor: "bench",
    };
    let started = Instant::now();
    let second = siirto::plan::plan(&store, &config, &adapters, request, now).await?;
    let second_took = started.elapsed();
    let rest = second_took.saturating_sub(inventory_took + reconcile_took + best.took);
    line(&format!(
        "  decide + record: {} (a second plan took {}; minus inventory, reconciliation and the fastest classification pass: decisions, zone placement, comparison with the first plan ({} accounts changed), one store transaction)",
        secs(rest),
        secs(second_took),
        second.changes.as_ref().map_or(0, |c| c.accounts_changed.len()),
    ));
    let started = Instant::now();
    drop((store, adapters, hosts, pdns));
    sim_dir.close()?;
    dir.close()?;
    line(&format!(
        "teardown (stopping pdns and the sim hosts, removing their files) {}; total run time {}",
        secs(started.elapsed()),
        secs(total_started.elapsed())
    ));
    Ok(())
}
