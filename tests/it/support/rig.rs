//! The one rig for tests that drive the real engine against simulated hosts: simulated source
//! and target cPanel hosts, a real pdns_server holding the source accounts' zones, a config, a
//! store and a clock the test can move forward; with public DNS, a root server and two real
//! recursive resolvers in front of it and of a third party's pdns_server. What differs between
//! tests (accounts, host settings, where zones live, public DNS, sshd, store, mail, zone reads,
//! the `[daemon]` table, extra config) is a [`RigOptions`] field.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use siirto::demo::{
    DnsEndpoint, SOURCE_IP, SimHosts, TARGET_IP, ZONE_TTL, all_domains, create_zones,
    write_config_with_resolvers, zone_rrsets,
};
use siirto::dns::{DnsProvider, PowerDns, Zone};
use siirto::domain::{DomainState, Timestamp};
use siirto::engine::{Clock, Engine};
use siirto::names::{AccountName, DomainName, MigrationId};
use siirto::ops::StartOutcome;
use siirto::plan::PlanDocument;
use siirto::playbook::Playbook;
use siirto::sim::{SimAccount, SimHostSpec, SimWorld, generate_accounts, start_host};
use siirto::status::{AccountStatus, MigrationStatus, migration_status};
use siirto::store::{EventRow, Store, domain_state};
use siirto::whm::WhmClient;
use siirto::world::World;

use crate::support::pdns::Pdns;
use crate::support::public_dns::{self, Nameserver, OURS_IP, Resolvers, THEIRS_IP};
use crate::support::sshd::Sshd;

/// The nameserver a third party's zones name: not one of ours.
const THEIR_NS: &str = "ns1.their-dns.example.";
/// The nameserver our zones name (`create_zones`), the config's `dns.own_nameservers`.
const OUR_NS: &str = "ns1.siirto-demo.test.";

/// What a rig starts. [`RigOptions::new`] gives the defaults; a test changes the fields it
/// cares about.
pub struct RigOptions {
    /// The migration's id.
    pub id: &'static str,
    /// The source host (`old`). Its accounts are the ones the migration moves; each one's zones
    /// point at its `dedicated_ip` when it has one, else at the source's shared address.
    pub source: SimHostSpec,
    /// The target host (`new`).
    pub target: SimHostSpec,
    /// Source accounts (by index) whose zones are not on our nameserver, and where they are.
    pub zones_elsewhere: BTreeMap<usize, Elsewhere>,
    /// Public DNS on loopback ([`SimRig::public`]): a root delegating each source account's
    /// zone to ours or to theirs ([`Elsewhere::TheirDns`]), both at port 53, and two recursive
    /// resolvers, a fast and a slow one (keeping answers 1 s and 5 s), which are the config's
    /// `[dns] resolvers` (what classification and propagation checks ask); the hosts' mail
    /// relays ask the fast one. The rig holds [`public_dns::lock`] while it runs. Off: siirto
    /// asks its `nameservers` (ours) and the hosts cannot relay mail by MX.
    pub public_dns: bool,
    /// More resolvers for the config's `[dns] resolvers`, after the rig's own (the hosts'
    /// mail relays do not ask them).
    pub extra_resolvers: Vec<SocketAddr>,
    /// Each host gets a real sshd ([`SimRig::ssh`]) and the config its `[hosts.X.ssh]` table:
    /// home roots in the sim hosts' data dirs, the source's exim log, and the target's pull key
    /// and known_hosts for the delta sync's hop into the source, whose host key is pinned there.
    pub ssh: bool,
    /// The store's URL; `None`: a SQLite file in the rig's directory.
    pub database: Option<String>,
    /// Where the notices go.
    pub mail: Mail,
    /// The daemon reads zones by AXFR from pdns's DNS port (`dns.axfr_server`) instead of
    /// through the API.
    pub axfr_reads: bool,
    /// The body of the config's `[daemon]` table; `None` leaves the table out (a test that
    /// writes one per daemon process with [`SimRig::write_daemon_config`]).
    pub daemon: Option<String>,
    /// The PowerDNS API URL the config names, when not pdns's own (a proxy in front of it);
    /// the rig still creates the zones through pdns's own.
    pub dns_api: Option<reqwest::Url>,
    /// Appended to the config right after its `[mail]` table's lines, before the hosts' ssh
    /// tables: lines that end the `[mail]` table (`operators = […]`), then tables of its own
    /// (e.g. `[contracts]`).
    pub extra_config: String,
}

impl RigOptions {
    /// `accounts` generated accounts (`kukka0001`…) on the source, their zones on our
    /// nameserver, an empty target moving at the sim's default rate, no public DNS or sshd, a
    /// SQLite store, notices to a directory, zones read through the API; the migration called
    /// `id`.
    pub fn new(id: &'static str, accounts: usize) -> RigOptions {
        let mut source = SimHostSpec::new("old.sim.test", SOURCE_IP, "old-token-for-tests");
        source.accounts = generate_accounts(accounts, "kukka");
        RigOptions {
            id,
            source,
            target: SimHostSpec::new("new.sim.test", TARGET_IP, "new-token-for-tests"),
            zones_elsewhere: BTreeMap::new(),
            public_dns: false,
            extra_resolvers: Vec::new(),
            ssh: false,
            database: None,
            mail: Mail::Outbox,
            axfr_reads: false,
            daemon: Some("lease = \"20s\"\nidle_poll = \"100ms\"\n".to_owned()),
            dns_api: None,
            extra_config: String::new(),
        }
    }
}

/// Where a source account's zones are, when not on our nameserver.
pub enum Elsewhere {
    /// On a third party's nameserver ([`SimRig::theirs`], started for them) under nameservers
    /// that are not ours, pointing at the source: the customer's own DNS, which siirto sees only
    /// through public DNS ([`RigOptions::public_dns`]).
    TheirDns,
    /// Nowhere: no nameserver the rig runs serves them, and public DNS does not delegate them.
    Nowhere,
}

/// The config's notice channel.
pub enum Mail {
    /// Notice files in `outbox/` of the rig's directory.
    Outbox,
    /// A plain-SMTP server at this address.
    Smtp(SocketAddr),
    /// A webhook endpoint (`url`), the notices signed with `secret` (written to
    /// `secrets/webhook.secret` in the rig's directory).
    Webhook {
        /// Where to post.
        url: String,
        /// The shared secret.
        secret: String,
    },
}

impl Mail {
    /// The `[mail]` table's channel lines.
    fn lines(&self) -> String {
        match self {
            Mail::Outbox => "channel = \"directory\"\npath = \"outbox\"\n".to_owned(),
            Mail::Smtp(addr) => format!(
                "channel = \"smtp\"\nhost = \"{}\"\nport = {}\nsecurity = \"none\"\n",
                addr.ip(),
                addr.port()
            ),
            Mail::Webhook { url, .. } => {
                format!("channel = \"webhook\"\nurl = \"{url}\"\nsecret_file = \"secrets/webhook.secret\"\n")
            }
        }
    }
}

/// The system clock plus an offset the test moves forward, so that gates and settle periods
/// of hours pass at once. Until a test moves it, it is the system clock.
#[derive(Default)]
pub struct OffsetClock {
    offset: Mutex<chrono::Duration>,
}

impl OffsetClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += chrono::Duration::from_std(by).unwrap();
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now() + *self.offset.lock().unwrap()
    }
}

/// The rig; dropped at the end of the test with everything it started.
pub struct SimRig {
    pub dir: tempfile::TempDir,
    pub hosts: SimHosts,
    /// Our nameserver: the company's, holding the source accounts' zones.
    pub pdns: Pdns,
    /// A client of pdns's API, to read and change zones as the engine sees them.
    pub dns: PowerDns,
    /// The third party's nameserver, when some account's zones are there
    /// ([`Elsewhere::TheirDns`]).
    pub theirs: Option<Pdns>,
    /// Public DNS, when [`RigOptions::public_dns`] asked for it. Declared after `pdns` and
    /// `theirs`, so they are stopped before the lock it holds is released.
    pub public: Option<PublicDns>,
    /// The hosts' sshd, when [`RigOptions::ssh`] asked for them.
    pub ssh: Option<RigSsh>,
    pub config: siirto::config::Config,
    pub store: Store,
    pub id: MigrationId,
    /// The time the rig's engines, plans and operator actions run on.
    pub clock: Arc<OffsetClock>,
    /// The config's text without a `[daemon]` table, for [`SimRig::write_daemon_config`].
    base_config: String,
}

/// The root and resolvers of [`RigOptions::public_dns`], and the lock on their addresses.
pub struct PublicDns {
    pub resolvers: Resolvers,
    /// Dropped last (fields drop in order): after the resolvers and root, and (as
    /// [`SimRig::public`] comes after them) after ours and theirs.
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

/// The hosts' real sshd and the file the delta sync's hop checks the source's host key with.
pub struct RigSsh {
    /// The source's sshd (`[hosts.old.ssh]`).
    pub source: Sshd,
    /// The target's sshd (`[hosts.new.ssh]`).
    pub target: Sshd,
    /// The target's `pull_known_hosts`: the source's host key pinned for the rsync hop.
    pub pull_known_hosts: PathBuf,
    /// The target's `pull_key_file`: a key of its own that the source accepts for the rsync
    /// hop (not the key siirto logs in to the source with, as on real hosts).
    pub pull_key: PathBuf,
    /// Its public half, as the source's authorized_keys holds it.
    pull_key_line: String,
}

impl RigSsh {
    /// Gives the pull key's line in the source's authorized_keys these options (e.g.
    /// `command="rrsync -ro /srv/elsewhere",restrict`), as an administrator restricting it would.
    pub fn restrict_pull_key(&self, options: &str) {
        let path = self.source.dir().join("authorized_keys");
        let text = std::fs::read_to_string(&path).unwrap();
        let restricted = text.replace(&self.pull_key_line, &format!("{options} {}", self.pull_key_line));
        assert_ne!(text, restricted, "the pull key is in the source's authorized_keys");
        std::fs::write(&path, restricted).unwrap();
    }

    /// Pins the source's host key in `pull_known_hosts` (the rig starts with it pinned).
    pub fn pin_source_host_key(&self) {
        let line = format!("[127.0.0.1]:{} {}\n", self.source.address.port(), self.source.host_key_line);
        std::fs::write(&self.pull_known_hosts, line).unwrap();
    }

    /// The `[hosts.old.ssh]` and `[hosts.new.ssh]` tables for `hosts`.
    fn config_tables(&self, hosts: &SimHosts) -> String {
        let (source, target) = (&self.source, &self.target);
        format!(
            r#"
[hosts.old.ssh]
address = "{source_address}"
user = "{source_user}"
key_file = "{source_key}"
host_key = "{source_host_key}"
home_root = "{source_home}"
mail_log = "{source_log}"
web_logs = "{source_web_logs}"
power_off = ["touch", "{source_powered_off}"]

[hosts.new.ssh]
address = "{target_address}"
user = "{target_user}"
key_file = "{target_key}"
host_key = "{target_host_key}"
home_root = "{target_home}"
pull_key_file = "{pull_key}"
pull_known_hosts = "{known_hosts}"
"#,
            source_address = source.address,
            source_user = source.user,
            source_key = source.client_key.display(),
            source_host_key = source.host_key_line,
            source_home = hosts.source.data_dir().join("home").display(),
            source_log = hosts.source.data_dir().join("var/log/exim_mainlog").display(),
            source_web_logs = hosts.source.data_dir().join("usr/local/apache/domlogs").display(),
            // Powering the simulated host off leaves this file (the machine running the tests
            // stays on).
            source_powered_off = hosts.source.data_dir().join("powered-off").display(),
            target_address = target.address,
            target_user = target.user,
            target_key = target.client_key.display(),
            target_host_key = target.host_key_line,
            target_home = hosts.target.data_dir().join("home").display(),
            known_hosts = self.pull_known_hosts.display(),
            pull_key = self.pull_key.display(),
        )
    }
}

impl SimRig {
    /// Starts pdns_server (and the third party's when some zones are there), the two hosts,
    /// creates the source accounts' zones, starts the sshd if asked, writes the config and
    /// opens the store.
    pub async fn start(options: RigOptions) -> SimRig {
        let RigOptions {
            id,
            mut source,
            mut target,
            zones_elsewhere,
            public_dns,
            extra_resolvers,
            ssh,
            database,
            mail,
            axfr_reads,
            daemon,
            dns_api,
            extra_config,
        } = options;
        // Taken first, so released last (after every server) if starting fails part way; it
        // joins the resolvers in `public` only once the rig is whole.
        let lock = if public_dns { Some(public_dns::lock().await) } else { None };
        let dir = tempfile::tempdir().unwrap();
        let their_zones = zones_elsewhere.values().any(|e| matches!(e, Elsewhere::TheirDns));
        assert!(
            public_dns || !their_zones,
            "zones on their nameserver are seen only through public DNS: set public_dns"
        );
        let (pdns, theirs) = if public_dns {
            let ours = Pdns::start_at(SocketAddr::from((OURS_IP, 53)));
            let theirs = async {
                if their_zones { Some(Pdns::start_at(SocketAddr::from((THEIRS_IP, 53))).await) } else { None }
            };
            tokio::join!(ours, theirs)
        } else {
            (Pdns::start().await, None)
        };
        let world = SimWorld::new();
        let accounts = source.accounts.clone();
        let source_ip = source.ip;
        let resolvers = match lock {
            Some(_) => Some(Resolvers::start(&delegations(&accounts, &zones_elsewhere)).await),
            None => None,
        };
        // The config's resolvers: public DNS's, then any extra ones; or, when the hosts' DNS
        // stands in for public DNS (the written config's default), that and any extra ones.
        // `classify.rs` tests classification through a real recursive resolver.
        let config_resolvers: Vec<SocketAddr> = match (&resolvers, extra_resolvers.is_empty()) {
            (Some(resolvers), _) => resolvers.addrs().into_iter().chain(extra_resolvers).collect(),
            (None, true) => Vec::new(),
            (None, false) => std::iter::once(pdns.dns_addr).chain(extra_resolvers).collect(),
        };
        // The hosts' mail relays find MX hosts through a public resolver too.
        let host_resolvers: Vec<SocketAddr> = resolvers.iter().map(|r| r.fast.dns_addr).collect();
        source.dns_resolvers.clone_from(&host_resolvers);
        target.dns_resolvers = host_resolvers;
        let source = start_host(source, dir.path().join("old"), &world).await.unwrap();
        let target = start_host(target, dir.path().join("new"), &world).await.unwrap();
        let hosts = SimHosts { world, source, target, accounts };
        let endpoint = dns_endpoint(&pdns);
        let dns = endpoint.client().unwrap();
        create_our_zones(&dns, &hosts.accounts, &zones_elsewhere, source_ip).await;
        if let Some(theirs) = &theirs {
            create_their_zones(theirs, &hosts.accounts, &zones_elsewhere, source_ip).await;
        }
        let ssh = if ssh { Some(start_sshd(dir.path()).await) } else { None };

        let database = match database {
            Some(url) => url,
            None => format!("sqlite://{}", dir.path().join("siirto.db").display()),
        };
        let axfr_server = axfr_reads.then_some(pdns.dns_addr);
        let ssh_tables = ssh.as_ref().map(|ssh| ssh.config_tables(&hosts)).unwrap_or_default();
        // write_config appends this right after the [dns] table's own lines, so it opens with
        // more of them.
        let extra = format!(
            "{}\n[mail]\nfrom = \"Siirto <noreply@siirto.test>\"\n{}{extra_config}\n{ssh_tables}",
            more_dns_lines(axfr_server),
            mail.lines()
        );
        if let Mail::Webhook { secret, .. } = &mail {
            std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
            std::fs::write(dir.path().join("secrets/webhook.secret"), secret).unwrap();
        }
        let named = match dns_api {
            Some(api_url) => DnsEndpoint { api_url, ..endpoint },
            None => endpoint,
        };
        let mut config =
            write_config_with_resolvers(&hosts, &named, dir.path(), &database, &config_resolvers, &extra)
                .unwrap();
        let base_config = std::fs::read_to_string(dir.path().join("siirto.toml")).unwrap();
        if let Some(body) = daemon {
            let path = dir.path().join("siirto.toml");
            std::fs::write(&path, format!("{base_config}\n[daemon]\n{body}")).unwrap();
            config = siirto::config::Config::load(&path).unwrap();
        }
        let store = Store::connect(&config.database).await.unwrap();
        SimRig {
            dir,
            hosts,
            pdns,
            dns,
            theirs,
            public: resolvers.zip(lock).map(|(resolvers, lock)| PublicDns { resolvers, _lock: lock }),
            ssh,
            config,
            store,
            id: MigrationId::parse(id).unwrap(),
            clock: Arc::new(OffsetClock::default()),
            base_config,
        }
    }

    /// Writes `file` in the rig's directory: the rig's config with a `[daemon]` table of `body`
    /// (in place of [`RigOptions::daemon`]), for a daemon process of its own. Returns `file`.
    pub fn write_daemon_config(&self, file: &str, body: &str) -> String {
        let text = format!("{}\n[daemon]\n{body}", self.base_config);
        std::fs::write(self.dir.path().join(file), text).unwrap();
        file.to_owned()
    }

    /// The public resolvers of [`RigOptions::public_dns`].
    pub fn resolvers(&self) -> &Resolvers {
        &self.public.as_ref().expect("the rig has no public DNS: set public_dns").resolvers
    }

    /// Our pdns's log, and public DNS's named logs when it runs: for a failing test's message.
    pub fn logs(&self) -> String {
        let public = self.public.as_ref().map(|p| p.resolvers.logs()).unwrap_or_default();
        format!("pdns log:\n{}\n{public}", self.pdns.log())
    }

    /// A client of the third party's nameserver's API.
    pub fn their_dns(&self) -> PowerDns {
        dns_endpoint(self.theirs.as_ref().expect("no account's zones are on their nameserver"))
            .client()
            .unwrap()
    }

    /// The user name of the source's `n`th account.
    pub fn user(&self, n: usize) -> AccountName {
        self.hosts.accounts[n].user.clone()
    }

    /// The main domain of the source's `n`th account.
    pub fn domain(&self, n: usize) -> DomainName {
        self.hosts.accounts[n].domain.clone()
    }

    /// Plans the migration from `old` to `new` under `playbook_text`, cutover now.
    pub async fn plan(&self, playbook_text: &str) -> PlanDocument {
        self.plan_with_cutover(playbook_text, self.clock.now()).await
    }

    /// [`SimRig::plan`] with the cutover at `cutover_at` (nothing moves before it; move the
    /// rig's clock on to get there).
    pub async fn plan_with_cutover(&self, playbook_text: &str, cutover_at: Timestamp) -> PlanDocument {
        let adapters = World::from_config(&self.config).unwrap();
        let playbook = Playbook::parse(playbook_text, "test playbook").unwrap();
        let now = self.clock.now();
        let request = siirto::plan::PlanRequest {
            id: self.id.clone(),
            source: "old",
            target: "new",
            playbook: &playbook,
            cutover_at,
            actor: "test",
        };
        siirto::plan::plan(&self.store, &self.config, &adapters, request, now).await.unwrap()
    }

    /// `siirto approve`.
    pub async fn approve(&self) {
        siirto::ops::approve(&self.store, &self.id, "test-operator", self.clock.now()).await.unwrap();
    }

    /// [`SimRig::plan`], then [`SimRig::approve`].
    pub async fn plan_and_approve(&self, playbook_text: &str) -> PlanDocument {
        let plan = self.plan(playbook_text).await;
        self.approve().await;
        plan
    }

    /// `siirto start`: pre-flight, then the start unless it found something hard.
    pub async fn start_migration(&self) -> StartOutcome {
        let adapters = World::from_config(&self.config).unwrap();
        siirto::ops::start(&self.store, &self.config, &adapters, &self.id, "test", self.clock.now())
            .await
            .unwrap()
    }

    /// Plans under `playbook_text`, checks that every domain is planned to move and be
    /// repointed, approves and starts, checking that the pre-flight let it start. Returns the
    /// plan for a test's own checks.
    pub async fn plan_and_start(&self, playbook_text: &str) -> PlanDocument {
        let plan = self.plan(playbook_text).await;
        assert_eq!(plan.counts.move_and_repoint, plan.counts.domains, "{:#?}", plan.flagged);
        self.approve().await;
        let started = self.start_migration().await;
        assert!(started.started.is_some(), "{:#?}", started.report);
        plan
    }

    /// An engine on the rig's store and clock, owned by `owner`, running `workers` steps at a
    /// time.
    pub fn engine(&self, owner: &str, workers: usize) -> Arc<Engine> {
        let clock: Arc<dyn Clock> = Arc::clone(&self.clock) as Arc<dyn Clock>;
        Arc::new(
            Engine::from_config(&self.config, self.store.clone(), clock)
                .unwrap()
                .with_owner(owner)
                .with_workers(workers),
        )
    }

    pub async fn status(&self) -> MigrationStatus {
        migration_status(&self.store, self.id.as_str()).await.unwrap()
    }

    /// The migration's event log.
    pub async fn events(&self) -> Vec<EventRow> {
        self.store.events(self.id.as_str()).await.unwrap()
    }

    /// What the store holds about `domain`.
    pub async fn domain_state(&self, domain: &DomainName) -> DomainState {
        let rows = self.store.domains(self.id.as_str()).await.unwrap();
        domain_state(rows.iter().find(|r| r.domain == domain.as_str()).unwrap()).unwrap()
    }

    /// The zone of `domain` as pdns serves it now.
    pub async fn zone(&self, domain: &DomainName) -> Zone {
        self.dns.zone(domain).await.unwrap()
    }

    /// A WHM client of the source host, as the config names it.
    pub fn source_whm(&self) -> WhmClient {
        World::from_config(&self.config).unwrap().hosts["old"].whm.clone()
    }

    /// A WHM client of the target host, as the config names it.
    pub fn target_whm(&self) -> WhmClient {
        World::from_config(&self.config).unwrap().hosts["new"].whm.clone()
    }

    /// Waits until `done` holds for the status while engines run elsewhere (a [`Daemon`]);
    /// `timeout` is the deadline, past which the test fails with the status and pdns's log.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&MigrationStatus) -> bool,
    ) -> MigrationStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status: {status:#?}\n{}",
                self.logs()
            );
            // The store has no change notification to wait on: poll it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drives `engine` tick by tick until `done` holds (deadline: a hung engine fails the test).
    pub async fn tick_until(
        &self,
        engine: &Arc<Engine>,
        what: &str,
        mut done: impl FnMut(&MigrationStatus) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status().await;
            if done(&status) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {status:#?}\n{}", self.logs());
            if engine.tick().await.unwrap() == 0 {
                // Nothing was due: give the simulated hosts' transfers time to move.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An engine running its loop in the background, as `siirto daemon` does, until stopped.
pub struct Daemon {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Starts `engine`'s loop.
    pub fn start(engine: Arc<Engine>) -> Daemon {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(engine.run(async {
            let _ = stopped.await;
        }));
        Daemon { stop, task }
    }

    /// Stops the loop and waits for it to end, failing the test if it ended with an error.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Creates on our nameserver the zones of the accounts not named in `elsewhere`, pointing where
/// the sites are: the account's dedicated address, or the source's shared one.
async fn create_our_zones(
    dns: &PowerDns,
    accounts: &[SimAccount],
    elsewhere: &BTreeMap<usize, Elsewhere>,
    shared: Ipv4Addr,
) {
    let mut by_address: BTreeMap<Ipv4Addr, Vec<SimAccount>> = BTreeMap::new();
    for (_, account) in accounts.iter().enumerate().filter(|(n, _)| !elsewhere.contains_key(n)) {
        by_address.entry(account.dedicated_ip.unwrap_or(shared)).or_default().push(account.clone());
    }
    for (address, accounts) in &by_address {
        create_zones(dns, accounts, *address).await.unwrap();
    }
}

/// Creates on their nameserver the zones of the accounts `elsewhere` puts there, pointing at the
/// source under a nameserver that is not ours, at the TTL our zones start with.
async fn create_their_zones(
    theirs: &Pdns,
    accounts: &[SimAccount],
    elsewhere: &BTreeMap<usize, Elsewhere>,
    source: Ipv4Addr,
) {
    let dns = dns_endpoint(theirs).client().unwrap();
    for (n, _) in elsewhere.iter().filter(|(_, e)| matches!(e, Elsewhere::TheirDns)) {
        for domain in all_domains(std::slice::from_ref(&accounts[*n])) {
            let rrsets = zone_rrsets(&domain, source, ZONE_TTL);
            dns.create_zone(&domain, &[THEIR_NS.to_owned()], &rrsets).await.unwrap();
        }
    }
}

/// Where the root delegates each zone of `accounts`: ours, or theirs for the accounts
/// `elsewhere` puts there; the zones that are nowhere are not delegated.
fn delegations(
    accounts: &[SimAccount],
    elsewhere: &BTreeMap<usize, Elsewhere>,
) -> Vec<(String, &'static Nameserver<'static>)> {
    static OURS: Nameserver<'static> = Nameserver { name: OUR_NS, ip: OURS_IP };
    static THEIRS: Nameserver<'static> = Nameserver { name: THEIR_NS, ip: THEIRS_IP };
    let mut found = Vec::new();
    for (n, account) in accounts.iter().enumerate() {
        let ns = match elsewhere.get(&n) {
            None => &OURS,
            Some(Elsewhere::TheirDns) => &THEIRS,
            Some(Elsewhere::Nowhere) => continue,
        };
        for domain in all_domains(std::slice::from_ref(account)) {
            found.push((domain.as_str().to_owned(), ns));
        }
    }
    found
}

/// The `[dns]` lines beyond the written config's own: the AXFR server to read zones from, and a
/// short query timeout.
fn more_dns_lines(axfr_server: Option<SocketAddr>) -> String {
    let mut lines = String::new();
    if let Some(server) = axfr_server {
        lines.push_str(&format!("axfr_server = \"{server}\"\n"));
    }
    // A resolver that does not answer must not hold a check up for long.
    lines.push_str("query_timeout = \"1s\"\n");
    lines
}

/// Starts an sshd for each host; the target's pull known_hosts (in `dir`) pins the source.
async fn start_sshd(dir: &Path) -> RigSsh {
    let source = Sshd::start().await;
    let (pull_key, pull_key_line) = source.generate_other_key("pull_ed25519");
    let authorized = source.dir().join("authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).unwrap();
    keys.push_str(&format!("{pull_key_line}\n"));
    std::fs::write(&authorized, keys).unwrap();
    let ssh = RigSsh {
        source,
        target: Sshd::start().await,
        pull_known_hosts: dir.join("pull_known_hosts"),
        pull_key,
        pull_key_line,
    };
    ssh.pin_source_host_key();
    ssh
}

/// `pdns` as the company's DNS in a config: its API and its nameserver.
pub fn dns_endpoint(pdns: &Pdns) -> DnsEndpoint {
    DnsEndpoint { api_url: pdns.api_url.clone(), api_key: pdns.api_key.clone(), dns_addr: pdns.dns_addr }
}

/// One account's line of a status.
pub fn account<'s>(status: &'s MigrationStatus, user: &str) -> &'s AccountStatus {
    status.accounts.iter().find(|a| a.user == user).unwrap()
}
