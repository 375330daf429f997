//! A real PowerDNS Authoritative server (`pdns_server`, gsqlite3 backend) on loopback, for the
//! integration tests and the benchmarks under `examples/` alike.
//!
//! The one harness both use: the tests through `crate::support::pdns`, each benchmark through
//! `#[path = "../tests/it/support/pdns.rs"] mod pdns;` (an example cannot import the test
//! binary's modules). Starting returns errors, because a benchmark prints them and exits; the
//! tests' [`Pdns::start`] and [`Pdns::start_with`] are thin wrappers that panic instead. Zones
//! can be written straight into the server's sqlite database before it starts
//! ([`Pdns::start_with_zones`]): one transaction for 20,000 zones takes about a second, where
//! one API POST per zone runs at ~640 zones/s.

// Each user includes the whole file and uses part of it: the tests neither seed zones nor
// count CPU, and not every benchmark reads the database or the version.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use reqwest::Url;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};

const PDNS_SERVER: &str = "/usr/sbin/pdns_server";
const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
const INSTALL: &str = "install the Debian packages pdns-server and pdns-backend-sqlite3";
/// Long enough for a server whose database was seeded with 50,000 zones.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// `pdns.conf` lines for a server that behaves the same way on every run: no zone-cache
/// refresh in the middle of a test or a timed pass, one distributor and one receiver thread.
/// The tests always run with them; `dns_scale` does too, the other benchmarks keep pdns's
/// defaults.
pub const DETERMINISTIC: &str = "zone-cache-refresh-interval=0\ndistributor-threads=1\nreceiver-threads=1";

/// One record of a zone, as the gsqlite3 backend stores it: the owner name in lower case
/// without the trailing dot, the type, the content, and an MX's preference in its own column
/// (the generic SQL backends keep it out of the content).
#[derive(Debug, Clone)]
pub struct Record {
    /// Owner name, e.g. `www.kukka.test`.
    pub name: String,
    /// `A`, `MX`, `NS`, `SOA`…
    pub rtype: &'static str,
    /// Presentation format without trailing dots, e.g. `mail.kukka.test`.
    pub content: String,
    /// The MX preference (0 for other types).
    pub prio: u16,
    /// Seconds.
    pub ttl: u32,
}

/// One zone to write into the database: its apex name (lower case, no trailing dot) and its
/// records, SOA included (pdns does not serve a zone without one).
#[derive(Debug, Clone)]
pub struct Zone {
    /// The apex.
    pub name: String,
    /// Every record, the SOA first.
    pub records: Vec<Record>,
}

/// A running `pdns_server` with its own config dir and sqlite database; killed on drop, its
/// files removed with the temp dir. Its caches are off, so a test sees every change on the
/// next query and a benchmark's every query reaches the backend.
pub struct Pdns {
    /// Where it answers DNS, UDP and TCP.
    pub dns_addr: SocketAddr,
    /// The base URL of its HTTP API (`http://127.0.0.1:PORT/`).
    pub api_url: Url,
    /// The API key it expects in `X-API-Key`.
    pub api_key: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Pdns {
    /// Starts a fresh server with no zones and waits until its API and its DNS port both
    /// answer. Panics (failing the test) when it cannot, e.g. when PowerDNS is not installed,
    /// naming the Debian packages.
    pub async fn start() -> Pdns {
        Pdns::start_with("").await
    }

    /// [`Pdns::start`] with `extra` lines appended to its `pdns.conf`.
    pub async fn start_with(extra: &str) -> Pdns {
        let config = format!("{DETERMINISTIC}\n{extra}");
        match Pdns::start_with_zones_and_config(&[], &config).await {
            Ok(pdns) => pdns,
            Err(err) => panic!("{err:#}"),
        }
    }

    /// Creates the database with `zones` in it, then starts the server and waits until its API
    /// and DNS port answer.
    pub async fn start_with_zones(zones: &[Zone]) -> anyhow::Result<Pdns> {
        Pdns::start_with_zones_and_config(zones, "").await
    }

    /// [`Pdns::start`] answering DNS at `dns_addr` (e.g. `127.0.0.20:53`, where a recursive
    /// resolver following a delegation asks: port 53 on an address of its own).
    pub async fn start_at(dns_addr: SocketAddr) -> Pdns {
        match Pdns::launch(&[], DETERMINISTIC, Some(dns_addr)).await {
            Ok(pdns) => pdns,
            Err(err) => panic!("{err:#}"),
        }
    }

    /// [`Pdns::start_with_zones`] with more `pdns.conf` lines appended (one setting per line).
    pub async fn start_with_zones_and_config(zones: &[Zone], extra_config: &str) -> anyhow::Result<Pdns> {
        Pdns::launch(zones, extra_config, None).await
    }

    async fn launch(
        zones: &[Zone],
        extra_config: &str,
        dns_addr: Option<SocketAddr>,
    ) -> anyhow::Result<Pdns> {
        for path in [PDNS_SERVER, SCHEMA] {
            if !Path::new(path).exists() {
                bail!("{path} is missing: {INSTALL}");
            }
        }
        let dir = tempfile::Builder::new().prefix("siirto-pdns").tempdir().context("temp dir for pdns")?;
        let database = dir.path().join("pdns.sqlite3");
        write_database(&database, zones).await?;

        let dns_addr = match dns_addr {
            Some(addr) => addr,
            None => SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_and_tcp_port()?)),
        };
        let api_port = free_tcp_port()?;
        let api_key = format!("pdns-key-{}", rand::random::<u64>());
        // The SOA of a zone created through the API without one names the zone's own
        // nameserver, with the timers the sim nameserver uses too.
        let config = format!(
            "launch=gsqlite3\n\
             gsqlite3-database={database}\n\
             local-address={dns_addr}\n\
             api=yes\n\
             api-key={api_key}\n\
             webserver=yes\n\
             webserver-address=127.0.0.1\n\
             webserver-port={api_port}\n\
             webserver-allow-from=127.0.0.0/8\n\
             default-soa-content=ns1.@ hostmaster.@ 0 10800 3600 604800 3600\n\
             security-poll-suffix=\n\
             cache-ttl=0\n\
             query-cache-ttl=0\n\
             negquery-cache-ttl=0\n\
             loglevel=4\n\
             {extra_config}\n",
            database = database.display(),
        );
        std::fs::write(dir.path().join("pdns.conf"), config).context("writing pdns.conf")?;
        let log = std::fs::File::create(dir.path().join("pdns.log")).context("creating pdns's log file")?;
        let child = Command::new(PDNS_SERVER)
            .arg(format!("--config-dir={}", dir.path().display()))
            .arg(format!("--socket-dir={}", dir.path().display()))
            .args(["--daemon=no", "--guardian=no", "--disable-syslog=yes"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {PDNS_SERVER}; {INSTALL}"))?;
        let mut pdns = Pdns {
            dns_addr,
            api_url: Url::parse(&format!("http://127.0.0.1:{api_port}/"))?,
            api_key,
            child,
            dir,
            http: reqwest::Client::new(),
        };
        pdns.wait_until_ready().await?;
        Ok(pdns)
    }

    /// Its sqlite database (to check what a run left in it; `dns_scale` does).
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("pdns.sqlite3")
    }

    /// The server's own log (startup errors end up here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }

    /// One of the server's counters (`GET /api/v1/servers/localhost/statistics`), e.g.
    /// `tcp-queries`.
    pub async fn statistic(&self, name: &str) -> anyhow::Result<u64> {
        let url = self.api_url.join(&format!("api/v1/servers/localhost/statistics?statistic={name}"))?;
        let answer: serde_json::Value = self
            .http
            .get(url)
            .header("X-API-Key", &self.api_key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        answer[0]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no counter {name} in {answer}"))
    }

    /// The DNS queries the server has received so far (`udp-queries` + `tcp-queries`).
    pub async fn queries(&self) -> anyhow::Result<u64> {
        Ok(self.statistic("udp-queries").await? + self.statistic("tcp-queries").await?)
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    /// The server's version line (`pdns_server --version`).
    pub fn version() -> String {
        Command::new(PDNS_SERVER)
            .arg("--version")
            .output()
            .ok()
            .and_then(|out| {
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stdout).lines())
                    .find_map(|l| {
                        l.find("PowerDNS").map(|i| l[i..].split(" (C)").next().unwrap_or_default().to_owned())
                    })
            })
            .unwrap_or_else(|| "PowerDNS Authoritative Server".to_owned())
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        let server_url = self.api_url.join("api/v1/servers/localhost")?;
        let (mut api_ready, mut dns_ready) = (false, false);
        while !(api_ready && dns_ready) {
            if let Some(status) = self.child.try_wait()? {
                bail!("pdns_server exited with {status} while starting:\n{}", self.log());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("pdns_server did not become ready within {READY_WITHIN:?}:\n{}", self.log());
            }
            if !api_ready {
                api_ready = self
                    .http
                    .get(server_url.clone())
                    .header("X-API-Key", &self.api_key)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success());
            }
            if api_ready && !dns_ready {
                dns_ready = dns_answers(self.dns_addr).await;
            }
            if !(api_ready && dns_ready) {
                // Polling interval while waiting for the condition, bounded by the deadline.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Pdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the sqlite database from Debian's gsqlite3 schema and inserts every zone and record
/// in one transaction.
async fn write_database(path: &Path, zones: &[Zone]) -> anyhow::Result<()> {
    let schema = std::fs::read_to_string(SCHEMA).with_context(|| format!("reading {SCHEMA}; {INSTALL}"))?;
    // pdns's gsqlite3 runs the database in WAL mode; nothing needs the seeding to be durable.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off);
    let mut connection =
        SqliteConnection::connect_with(&options).await.context("creating pdns's database")?;
    sqlx::raw_sql(&schema).execute(&mut connection).await.context("loading the gsqlite3 schema")?;
    let mut tx = connection.begin().await?;
    for (index, zone) in zones.iter().enumerate() {
        let id = i64::try_from(index)? + 1;
        sqlx::query("INSERT INTO domains (id, name, type) VALUES (?, ?, 'NATIVE')")
            .bind(id)
            .bind(&zone.name)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("inserting the zone {}", zone.name))?;
        for record in &zone.records {
            sqlx::query(
                "INSERT INTO records (domain_id, name, type, content, ttl, prio, disabled, auth) \
                 VALUES (?, ?, ?, ?, ?, ?, 0, 1)",
            )
            .bind(id)
            .bind(&record.name)
            .bind(record.rtype)
            .bind(&record.content)
            .bind(i64::from(record.ttl))
            .bind(i64::from(record.prio))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("inserting {} {} of {}", record.name, record.rtype, zone.name))?;
        }
    }
    tx.commit().await?;
    connection.close().await?;
    Ok(())
}

/// CPU seconds (user + system) of the process whose `/proc/PID/stat` is at `path` (0 when it
/// cannot be read).
pub fn cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name in parentheses: state is the first, utime the 12th,
    // stime the 13th (fields 14 and 15 of proc(5)).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux when it cannot be asked).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// True when something answers a DNS query on `addr` within a short time (any answer, even
/// REFUSED, means the listener is up).
async fn dns_answers(addr: SocketAddr) -> bool {
    let mut query = Message::query();
    query.add_query(Query::query(Name::root(), RecordType::SOA));
    let Ok(bytes) = query.to_vec() else {
        return false;
    };
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return false;
    };
    if socket.send_to(&bytes, addr).await.is_err() {
        return false;
    }
    let mut buffer = [0u8; 4096];
    matches!(tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buffer)).await, Ok(Ok(_)))
}

/// A port free on 127.0.0.1 for both UDP and TCP right now.
pub fn free_udp_and_tcp_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").context("binding a UDP port on 127.0.0.1")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP on 127.0.0.1")
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a TCP port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}
