//! A real BIND (`named`, Debian package bind9) on loopback for tests: primary zones that take
//! TSIG-signed RFC 2136 updates and zone transfers.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use siirto::dns::{TsigAlgorithm, TsigKey};
use siirto::secret::Secret;

const NAMED: &str = "/usr/sbin/named";
const INSTALL: &str = "install Debian package bind9";
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The name of the TSIG key every zone accepts.
pub const KEY_NAME: &str = "siirto-test-key";

/// One zone to serve: its name and the zone file's records after the SOA (relative names
/// are relative to the zone). The harness writes the SOA
/// (`ns1.ZONE. hostmaster.ZONE. 1 10800 3600 604800 3600`), `$TTL 3600` and nothing else, so
/// the records must include the NS rrset and its address when it is inside the zone.
pub struct ZoneFile<'a> {
    /// The zone, without the trailing dot.
    pub name: &'a str,
    /// Zone file lines.
    pub records: &'a str,
}

/// A running `named -g` with its own directory for config, zone files and journals; killed on
/// drop. It runs as the current user (root here: named keeps root when `-u` is not given).
pub struct Bind {
    /// Where it answers DNS, UDP and TCP.
    pub dns_addr: SocketAddr,
    /// The TSIG key it accepts for updates and transfers of every zone.
    pub key: TsigKey,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Bind {
    /// Starts named with a fresh hmac-sha256 key serving `zones` and waits until it answers
    /// for the first zone. Panics (failing the test) when BIND is not installed.
    pub async fn start(zones: &[ZoneFile<'_>]) -> Bind {
        Bind::start_with(zones, TsigAlgorithm::HmacSha256).await
    }

    /// [`Bind::start`] with the key's algorithm chosen.
    pub async fn start_with(zones: &[ZoneFile<'_>], algorithm: TsigAlgorithm) -> Bind {
        Bind::start_with_options(zones, algorithm, "").await
    }

    /// [`Bind::start_with`] plus statements for named's `options` block (each ending in `;`).
    pub async fn start_with_options(
        zones: &[ZoneFile<'_>],
        algorithm: TsigAlgorithm,
        extra_options: &str,
    ) -> Bind {
        assert!(Path::new(NAMED).exists(), "{NAMED} is missing: {INSTALL}");
        assert!(!zones.is_empty(), "named needs a zone to serve to be tested");
        let dir = tempfile::tempdir().expect("temp dir for named");
        let root = dir.path().display().to_string();
        let port = crate::support::pdns::free_udp_and_tcp_port().unwrap();
        let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let alg = algorithm.as_str();
        let mut config = format!(
            "options {{\n\
             \tdirectory \"{root}\";\n\
             \tpid-file \"{root}/named.pid\";\n\
             \tsession-keyfile \"{root}/session.key\";\n\
             \tmanaged-keys-directory \"{root}\";\n\
             \tlisten-on port {port} {{ 127.0.0.1; }};\n\
             \tlisten-on-v6 {{ none; }};\n\
             \trecursion no;\n\
             \tdnssec-validation no;\n\
             \tnotify no;\n\
             \t{extra_options}\n\
             }};\n\
             controls {{ }};\n\
             key \"{KEY_NAME}\" {{ algorithm {alg}; secret \"{secret}\"; }};\n"
        );
        for zone in zones {
            let name = zone.name;
            let text = format!(
                "$TTL 3600\n@ IN SOA ns1.{name}. hostmaster.{name}. 1 10800 3600 604800 3600\n{}\n",
                zone.records
            );
            std::fs::write(dir.path().join(format!("{name}.zone")), text).expect("write a zone file");
            config.push_str(&format!(
                "zone \"{name}\" {{ type primary; file \"{name}.zone\"; \
                 allow-update {{ key \"{KEY_NAME}\"; }}; allow-transfer {{ key \"{KEY_NAME}\"; }}; }};\n"
            ));
        }
        let dns_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let key = TsigKey { name: KEY_NAME.into(), algorithm, secret: Secret::new(secret) };
        Bind::run(dir, &config, dns_addr, key, zones[0].name).await
    }

    /// The root of a DNS tree of its own, at port 53 of `addr` (where resolvers ask; named
    /// listens only on an interface's own address, so on loopback that is 127.0.0.1): `records`
    /// are the root zone's lines after its SOA, NS and the root server's address
    /// (`a.root.test.`): delegations with their glue.
    pub async fn start_root(addr: Ipv4Addr, records: &str) -> Bind {
        assert!(Path::new(NAMED).exists(), "{NAMED} is missing: {INSTALL}");
        let dir = tempfile::tempdir().expect("temp dir for named");
        let zone = format!(
            "$TTL 3600\n. IN SOA a.root.test. hostmaster.root.test. 1 10800 3600 604800 3600\n\
             . IN NS a.root.test.\na.root.test. IN A {addr}\n{records}\n"
        );
        std::fs::write(dir.path().join("root.zone"), zone).expect("write the root zone");
        let body = "\trecursion no;\n};\ncontrols { };\nzone \".\" { type primary; file \"root.zone\"; };\n";
        let dns_addr = SocketAddr::from((addr, 53));
        let config = Bind::options(&dir, dns_addr) + body;
        Bind::run(dir, &config, dns_addr, unused_key(), "").await
    }

    /// A recursive resolver (on 127.0.0.1, a free port) whose only root server is `root`
    /// (see [`Bind::start_root`]): it follows delegations as public resolvers do, and keeps
    /// what it learns for its full TTL.
    pub async fn start_recursive(root: Ipv4Addr) -> Bind {
        Bind::start_recursive_caching(root, None).await
    }

    /// [`Bind::start_recursive`] keeping answers at most `max_cache_ttl` seconds (named's
    /// `max-cache-ttl`; `None`: their own TTL), as public resolvers differ in how long they keep
    /// a record. Negative answers and failures are not kept, answers are never served stale
    /// and nothing is fetched again before it expires (no prefetch), so what it answers changes
    /// exactly when its cached answer expires.
    pub async fn start_recursive_caching(root: Ipv4Addr, max_cache_ttl: Option<u32>) -> Bind {
        assert!(Path::new(NAMED).exists(), "{NAMED} is missing: {INSTALL}");
        let dir = tempfile::tempdir().expect("temp dir for named");
        std::fs::write(
            dir.path().join("root.hints"),
            format!(". 3600000 NS a.root.test.\na.root.test. 3600000 A {root}\n"),
        )
        .expect("write the root hints");
        let port = crate::support::pdns::free_udp_and_tcp_port().unwrap();
        let dns_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let cache = max_cache_ttl.map(|ttl| format!("\tmax-cache-ttl {ttl};\n")).unwrap_or_default();
        let body = format!(
            "\trecursion yes;\n\tallow-recursion {{ 127.0.0.0/8; }};\n\tqname-minimization off;\n\
             \tmax-ncache-ttl 0;\n\tservfail-ttl 0;\n\tprefetch 0;\n\tstale-answer-enable no;\n\
             \tstale-cache-enable no;\n{cache}}};\ncontrols {{ }};\n\
             zone \".\" {{ type hint; file \"root.hints\"; }};\n"
        );
        let config = Bind::options(&dir, dns_addr) + &body;
        Bind::run(dir, &config, dns_addr, unused_key(), "").await
    }

    /// The start of named.conf's options block (left open) for `dir`, listening at `addr`.
    fn options(dir: &tempfile::TempDir, addr: SocketAddr) -> String {
        let root = dir.path().display();
        format!(
            "options {{\n\
             \tdirectory \"{root}\";\n\
             \tpid-file \"{root}/named.pid\";\n\
             \tsession-keyfile \"{root}/session.key\";\n\
             \tmanaged-keys-directory \"{root}\";\n\
             \tlisten-on port {} {{ {}; }};\n\
             \tlisten-on-v6 {{ none; }};\n\
             \tdnssec-validation no;\n\
             \tnotify no;\n",
            addr.port(),
            addr.ip()
        )
    }

    /// Writes `config` as named.conf in `dir`, starts named, and waits until it answers a SOA
    /// query for `ready_zone` ("" for the root).
    async fn run(
        dir: tempfile::TempDir,
        config: &str,
        dns_addr: SocketAddr,
        key: TsigKey,
        ready_zone: &str,
    ) -> Bind {
        let conf = dir.path().join("named.conf");
        std::fs::write(&conf, config).expect("write named.conf");
        let log = std::fs::File::create(dir.path().join("named.log")).expect("named log file");
        // -g: foreground, log to stderr; -4: IPv4 only; -n 1: one worker (2 shared cores).
        let child = Command::new(NAMED)
            .args(["-g", "-4", "-n", "1", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("named log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {NAMED}: {err}; {INSTALL}"));
        let mut bind = Bind { dns_addr, key, child: Some(child), dir };
        bind.wait_until_ready(ready_zone).await;
        bind
    }

    /// named's own log (startup and zone load errors end up here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// Asks this named (recursion desired, as a stub resolver does) for the A records of
    /// `name`: their addresses and the lowest TTL it gave them (what is left of its cache time);
    /// `None` when it sent no NOERROR answer within a second.
    pub async fn ask_a(&self, name: &str) -> Option<(Vec<Ipv4Addr>, u32)> {
        let fqdn = if name.ends_with('.') { name.to_owned() } else { format!("{name}.") };
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(Name::from_ascii(&fqdn).ok()?, RecordType::A));
        let id = query.metadata.id;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
        socket.send_to(&query.to_vec().ok()?, self.dns_addr).await.ok()?;
        let mut buffer = [0u8; 4096];
        let answer = loop {
            let (len, _) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buffer))
                .await
                .ok()?
                .ok()?;
            match Message::from_vec(&buffer[..len]) {
                Ok(answer) if answer.metadata.id == id => break answer,
                // Not the answer to this query: wait for it.
                _ => continue,
            }
        };
        if answer.metadata.response_code != ResponseCode::NoError {
            return None;
        }
        let mut addresses = Vec::new();
        let mut ttl = u32::MAX;
        for record in &answer.answers {
            if let RData::A(a) = &record.data {
                addresses.push(a.0);
                ttl = ttl.min(record.ttl);
            }
        }
        let ttl = if addresses.is_empty() { 0 } else { ttl };
        Some((addresses, ttl))
    }

    /// Kills named now (the test goes on with nothing listening).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn wait_until_ready(&mut self, zone: &str) {
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("named exited with {status} while starting:\n{}", self.log());
            }
            if soa_answered(self.dns_addr, zone).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "named did not serve {zone} within {READY_WITHIN:?}:\n{}",
                self.log()
            );
            // Polling interval while waiting for the condition, bounded by the deadline.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A key for a named that takes no updates (the root, a resolver).
fn unused_key() -> TsigKey {
    TsigKey { name: KEY_NAME.into(), algorithm: TsigAlgorithm::HmacSha256, secret: Secret::new("unused") }
}

/// True when `addr` answers a SOA query for `zone` ("" for the root) with NOERROR (the zone is
/// loaded, or, for a resolver, reachable).
async fn soa_answered(addr: SocketAddr, zone: &str) -> bool {
    let Ok(name) = Name::from_ascii(format!("{zone}.")) else {
        return false;
    };
    let mut query = Message::query();
    query.add_query(Query::query(name, RecordType::SOA));
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
    match tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buffer)).await {
        Ok(Ok((len, _))) => Message::from_vec(&buffer[..len])
            .is_ok_and(|answer| answer.metadata.response_code == ResponseCode::NoError),
        _ => false,
    }
}
