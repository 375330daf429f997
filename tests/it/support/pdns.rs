//! A real PowerDNS Authoritative server (`pdns_server`, sqlite backend) on loopback for tests.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use reqwest::Url;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

const PDNS_SERVER: &str = "/usr/sbin/pdns_server";
const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
const INSTALL: &str = "install Debian packages pdns-server pdns-backend-sqlite3";
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running `pdns_server` with its own config dir and sqlite database; killed and cleaned up
/// on drop. Its caches are off so that a test sees every change on the next query.
pub struct Pdns {
    /// Where it answers DNS, UDP and TCP.
    pub dns_addr: SocketAddr,
    /// The base URL of its HTTP API (`http://127.0.0.1:PORT/`).
    pub api_url: Url,
    /// The API key it expects in `X-API-Key`.
    pub api_key: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Pdns {
    /// Starts a fresh server and waits until its API and its DNS port both answer.
    /// Panics (failing the test) when PowerDNS is not installed, naming the Debian packages.
    pub async fn start() -> Pdns {
        Pdns::start_with("").await
    }

    /// [`Pdns::start`] with `extra` lines appended to its `pdns.conf`.
    pub async fn start_with(extra: &str) -> Pdns {
        for path in [PDNS_SERVER, SCHEMA] {
            assert!(Path::new(path).exists(), "{path} is missing: {INSTALL}");
        }
        let dir = tempfile::tempdir().expect("temp dir for pdns");
        let database = dir.path().join("pdns.sqlite3");
        create_database(&database).await;

        let dns_port = free_udp_and_tcp_port();
        let api_port = free_tcp_port();
        let api_key = format!("test-key-{}", rand::random::<u64>());
        let config = format!(
            "launch=gsqlite3\n\
             gsqlite3-database={database}\n\
             local-address=127.0.0.1:{dns_port}\n\
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
             zone-cache-refresh-interval=0\n\
             distributor-threads=1\n\
             receiver-threads=1\n\
             loglevel=4\n\
             {extra}\n",
            database = database.display(),
        );
        std::fs::write(dir.path().join("pdns.conf"), config).expect("write pdns.conf");
        let log = std::fs::File::create(dir.path().join("pdns.log")).expect("pdns log file");
        let child = Command::new(PDNS_SERVER)
            .arg(format!("--config-dir={}", dir.path().display()))
            .arg(format!("--socket-dir={}", dir.path().display()))
            .args(["--daemon=no", "--guardian=no", "--disable-syslog=yes"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("pdns log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {PDNS_SERVER}: {err}; {INSTALL}"));
        let mut pdns = Pdns {
            dns_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, dns_port)),
            api_url: Url::parse(&format!("http://127.0.0.1:{api_port}/")).expect("API URL"),
            api_key,
            child,
            dir,
        };
        pdns.wait_until_ready().await;
        pdns
    }

    /// One of the server's counters (`GET /api/v1/servers/localhost/statistics`).
    pub async fn statistic(&self, name: &str) -> u64 {
        let url =
            self.api_url.join(&format!("api/v1/servers/localhost/statistics?statistic={name}")).unwrap();
        let answer: serde_json::Value = reqwest::Client::new()
            .get(url)
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer[0]["value"].as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name}: {answer}"))
    }

    /// The server's own log (startup errors end up here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }

    async fn wait_until_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        let http = reqwest::Client::new();
        let server_url = self.api_url.join("api/v1/servers/localhost").expect("server URL");
        let (mut api_ready, mut dns_ready) = (false, false);
        while !(api_ready && dns_ready) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pdns_server exited with {status} while starting:\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pdns_server did not become ready within {READY_WITHIN:?}:\n{}",
                self.log()
            );
            if !api_ready {
                api_ready = http
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
    }
}

impl Drop for Pdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the sqlite database from Debian's schema file.
async fn create_database(path: &PathBuf) {
    let schema =
        std::fs::read_to_string(SCHEMA).unwrap_or_else(|err| panic!("reading {SCHEMA}: {err}; {INSTALL}"));
    let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let mut connection =
        SqliteConnection::connect_with(&options).await.expect("create the pdns sqlite database");
    sqlx::raw_sql(&schema).execute(&mut connection).await.expect("load the pdns schema");
    connection.close().await.expect("close the pdns database");
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
pub fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = udp.local_addr().expect("UDP port").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1")
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a TCP port")
        .port()
}
