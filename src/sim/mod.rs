//! The simulated cPanel host (`sim`): the one stand-in in the system.
//!
//! A [`SimHost`] speaks the documented WHM API 1 JSON on `/json-api/<function>` (plain HTTP, or
//! HTTPS with a self-signed certificate), serves its accounts' sites by `Host` header on a
//! second, "Apache" listener, and runs transfer sessions that really copy the accounts' files
//! from a source host to itself (the target), taking time in proportion to the declared size.
//! Hosts find each other through a [`SimWorld`], the way a real target reaches its source by
//! hostname or IP. Faults (API errors, garbage, dropped connections, failing restores) can be
//! injected for tests.
//!
//! Each host also runs an SMTP listener on its IP that delivers to the accounts' Maildirs,
//! honours the per-domain mail routing set through cPanel API 2 `Email::setmxcheck` (remote:
//! relay to the domain's MX, looked up through [`SimHostSpec::dns_resolvers`]) and writes an
//! exim-style `var/log/exim_mainlog` (see `mail`).
//!
//! `setup` writes the config, secret files and playbook that point siirto at simulated hosts
//! (`siirto demo`, `siirto sim --write-config`, the tests).
//!
//! [`manage2`] is a simulated Manage2, cPanel's licence API, for the licence adapter's tests.
//!
//! Nothing outside tests, the demo and `siirto sim` uses this module.

mod accounts;
mod api;
mod checks;
mod mail;
pub mod manage2;
pub mod nameserver;
mod serve;
pub mod setup;
mod standalone;
mod transfer;
mod web;
pub mod zones;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use anyhow::{Context, Result, bail};
use reqwest::Url;
use tokio::task::JoinSet;

use crate::names::{AccountName, DomainName};

pub use accounts::{SimAccount, add_contact_quirks, generate_accounts};
pub use standalone::{SimArgs, run_standalone};

/// What a simulated host is: its name, addresses, API token and accounts.
#[derive(Debug, Clone)]
pub struct SimHostSpec {
    /// The host's name (`old.sim.test`); a target reaches it under this name or its IP.
    pub hostname: String,
    /// The host's "public" IPv4 address, a loopback alias (127.0.0.x): the web listener binds
    /// here and `listaccts`/`get_domain_info`/`listips` report it.
    pub ip: Ipv4Addr,
    /// The WHM API token accepted in `Authorization: whm root:TOKEN`. It is also the host's
    /// root password when another sim host pulls from it: `create_remote_root_transfer_session`
    /// accepts `user=root` with `password=<this token>`, or `user=root` with any `sshkey_name`.
    pub token: String,
    /// The cPanel version reported by `version` (e.g. `11.118.0.5`).
    pub version: String,
    /// The accounts the host starts with.
    pub accounts: Vec<SimAccount>,
    /// How many declared bytes a transfer moves per second (0: instantly). A restore takes a
    /// quarter of the transfer time.
    pub transfer_bytes_per_sec: u64,
    /// Serve the WHM API over HTTPS with a self-signed certificate.
    pub tls: bool,
    /// Dedicated IPv4 addresses (`listips` `dedicated` 1), e.g. 127.0.0.101. Accounts without
    /// a [`SimAccount::dedicated_ip`] are given the ones no account claims, in turn: the 7th
    /// account gets the first, the 14th the second, and so on. Addresses left over are listed
    /// as unused. Empty by default: every account is on the shared `ip`.
    pub dedicated_ips: Vec<Ipv4Addr>,
    /// The size of the host's `/home` partition in MB as `getdiskusage` reports it; the used
    /// part is the accounts' declared sizes plus 2 GB for the system. 1 TB by default.
    pub disk_total_mb: u64,
    /// The DNS servers the host's mail relay asks for MX and A records, in turn until one
    /// answers (empty: a domain whose mail routing is remote cannot be relayed, and its mail is
    /// deferred).
    pub dns_resolvers: Vec<SocketAddr>,
    /// The port the mail relay connects to on an MX host. `None`: the SMTP port of the sim host
    /// at that IP in the [`SimWorld`], else 25 (on loopback every sim host has its own port).
    pub smtp_relay_port: Option<u16>,
}

impl SimHostSpec {
    /// A plain-HTTP host with no accounts, version `11.118.0.5`, transferring 100 MB/s.
    pub fn new(hostname: &str, ip: Ipv4Addr, token: &str) -> Self {
        Self {
            hostname: hostname.to_owned(),
            ip,
            token: token.to_owned(),
            version: "11.118.0.5".to_owned(),
            accounts: Vec::new(),
            transfer_bytes_per_sec: 100 * 1024 * 1024,
            tls: false,
            dedicated_ips: Vec::new(),
            disk_total_mb: 1024 * 1024,
            dns_resolvers: Vec::new(),
            smtp_relay_port: None,
        }
    }
}

/// A fault to inject into a host's WHM API. Each applies to the named function (as in
/// `/json-api/<function>`) for the next `times` calls, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer HTTP 200 with `metadata.result = 0` and this `metadata.reason`.
    ResultZero {
        /// The WHM function.
        function: String,
        /// The `metadata.reason` text.
        reason: String,
        /// How many calls fail.
        times: u32,
    },
    /// Answer HTTP 200 with an HTML error page instead of JSON.
    NotJson {
        /// The WHM function.
        function: String,
        /// How many calls fail.
        times: u32,
    },
    /// Close the connection without answering.
    Drop {
        /// The WHM function.
        function: String,
        /// How many calls fail.
        times: u32,
    },
    /// Answer HTTP 500 with an HTML error page.
    Http500 {
        /// The WHM function.
        function: String,
        /// How many calls fail.
        times: u32,
    },
    /// Answer normally, but only after `millis` milliseconds (a host under load).
    Delay {
        /// The WHM function.
        function: String,
        /// How long each call waits.
        millis: u64,
        /// How many calls wait.
        times: u32,
    },
}

impl Fault {
    fn function(&self) -> &str {
        match self {
            Fault::ResultZero { function, .. }
            | Fault::NotJson { function, .. }
            | Fault::Drop { function, .. }
            | Fault::Http500 { function, .. }
            | Fault::Delay { function, .. } => function,
        }
    }

    fn times(&self) -> u32 {
        match self {
            Fault::ResultZero { times, .. }
            | Fault::NotJson { times, .. }
            | Fault::Drop { times, .. }
            | Fault::Http500 { times, .. }
            | Fault::Delay { times, .. } => *times,
        }
    }

    fn times_mut(&mut self) -> &mut u32 {
        match self {
            Fault::ResultZero { times, .. }
            | Fault::NotJson { times, .. }
            | Fault::Drop { times, .. }
            | Fault::Http500 { times, .. }
            | Fault::Delay { times, .. } => times,
        }
    }
}

/// The registry through which simulated hosts reach each other by hostname or IP, as a real
/// target server reaches its source over the network. Cheap to clone; hosts leave it when
/// they stop.
#[derive(Debug, Clone, Default)]
pub struct SimWorld {
    hosts: Arc<Mutex<HashMap<String, Weak<Host>>>>,
}

impl SimWorld {
    /// An empty world.
    pub fn new() -> Self {
        Self::default()
    }

    fn register(&self, host: &Arc<Host>) {
        let mut hosts = lock(&self.hosts);
        hosts.insert(host.hostname.clone(), Arc::downgrade(host));
        hosts.insert(host.ip.to_string(), Arc::downgrade(host));
    }

    /// The running host known under `name` (hostname or IP).
    pub(crate) fn lookup(&self, name: &str) -> Option<Arc<Host>> {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        lock(&self.hosts).get(&name).and_then(Weak::upgrade)
    }

    /// The SMTP listener of the running sim host at `ip` (the relay's port map).
    pub(crate) fn smtp_addr_of(&self, ip: Ipv4Addr) -> Option<SocketAddr> {
        self.lookup(&ip.to_string()).map(|host| host.smtp_addr)
    }
}

/// Locks a mutex, taking the data even if a panicking thread poisoned it (the sim's state
/// stays usable for the rest of a test run).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One account as the host holds it.
#[derive(Debug, Clone)]
pub(crate) struct AccountRecord {
    pub(crate) spec: SimAccount,
    pub(crate) suspended: Option<String>,
    pub(crate) suspend_time: Option<i64>,
    pub(crate) unix_startdate: i64,
    pub(crate) uid: u32,
}

/// The mutable state of a host.
#[derive(Debug, Default)]
pub(crate) struct HostState {
    pub(crate) accounts: BTreeMap<AccountName, AccountRecord>,
    /// Armed faults, each with how many matching calls still pass before it fires.
    pub(crate) faults: Vec<(Fault, u32)>,
    pub(crate) sessions: BTreeMap<String, transfer::Session>,
    pub(crate) next_uid: u32,
    pub(crate) next_pid: u32,
    /// Mail exchanger types set through `Email::setmxcheck`; a domain not here is `auto`.
    pub(crate) mail_routing: BTreeMap<DomainName, mail::MxCheck>,
    /// Packages created here by a transfer (`PackageRemoteRoot`), beside the accounts' plans.
    pub(crate) packages: std::collections::BTreeSet<String>,
    /// When true, this host refuses root logins from other hosts (a transfer or a credential
    /// check from a target fails with "Permission denied").
    pub(crate) refuse_root_login: bool,
    /// Pages served over HTTPS instead of the site's files, by domain (see
    /// [`SimHost::serve_https_page`]).
    pub(crate) https_pages: BTreeMap<DomainName, String>,
    /// The calls that change an account's standing here (`suspendacct`, `unsuspendacct`,
    /// `removeacct`): the function and the user, in order (see [`SimHost::account_changes`]).
    pub(crate) account_changes: Vec<(String, String)>,
}

/// A running host's shared core, reached by its listeners, its transfer sessions and the world.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) hostname: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) token: String,
    pub(crate) version: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) transfer_bytes_per_sec: u64,
    /// The dedicated IPv4 addresses of the host (`listips` `dedicated` 1).
    pub(crate) dedicated_ips: Vec<Ipv4Addr>,
    /// The size of the `/home` partition in MB (`getdiskusage`).
    pub(crate) disk_total_mb: u64,
    pub(crate) world: SimWorld,
    pub(crate) state: Mutex<HostState>,
    /// Transfer sessions running on this host (as the target); aborted when it stops.
    pub(crate) tasks: Mutex<JoinSet<()>>,
    /// The SMTP listener's address (on `ip`).
    pub(crate) smtp_addr: SocketAddr,
    /// See [`SimHostSpec::dns_resolvers`].
    pub(crate) dns_resolvers: Vec<SocketAddr>,
    /// See [`SimHostSpec::smtp_relay_port`].
    pub(crate) smtp_relay_port: Option<u16>,
    /// Message ids and the mail log's writer lock.
    pub(crate) mail: mail::MailSide,
}

impl Host {
    pub(crate) fn state(&self) -> MutexGuard<'_, HostState> {
        lock(&self.state)
    }

    /// Adds an account record (files must already exist).
    pub(crate) fn add_account(state: &mut HostState, spec: SimAccount, now: i64) {
        state.next_uid += 1;
        let uid = 1000 + state.next_uid;
        state.accounts.insert(
            spec.user.clone(),
            AccountRecord { spec, suspended: None, suspend_time: None, unix_startdate: now, uid },
        );
    }

    /// Takes one injected fault for `function`, if any is armed.
    pub(crate) fn take_fault(&self, function: &str) -> Option<Fault> {
        let mut state = self.state();
        let index = state.faults.iter().position(|(f, _)| f.function() == function && f.times() > 0)?;
        let (fault, skip) = &mut state.faults[index];
        if *skip > 0 {
            *skip -= 1;
            return None;
        }
        *fault.times_mut() -= 1;
        let taken = fault.clone();
        if fault.times() == 0 {
            state.faults.remove(index);
        }
        Some(taken)
    }
}

/// A transfer session held by a simulated target host, as tests and benchmarks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTransferSession {
    /// The `transfer_session_id`.
    pub id: String,
    /// The state `get_transfer_session_state` reports (`PENDING`, `TRANSFER_INPROGRESS`,
    /// `RESTORE_INPROGRESS`, `PAUSED`, `ABORTED`, `COMPLETED`).
    pub state_name: &'static str,
    /// The source host it pulls from.
    pub remote_host: String,
    /// The source accounts enqueued in it, in enqueue order.
    pub accounts: Vec<AccountName>,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When each account finished restoring (its RESTORE `success-item`), to the millisecond.
    pub restored_at: BTreeMap<AccountName, chrono::DateTime<chrono::Utc>>,
}

/// A running simulated host. It stops when dropped or on [`SimHost::shutdown`].
#[derive(Debug)]
pub struct SimHost {
    /// The WHM API base URL (`http://127.0.0.1:PORT/` or `https://…`); functions live under
    /// `json-api/<function>`.
    pub whm_url: Url,
    /// The "Apache" listener serving the accounts' sites by `Host` header (on `spec.ip`).
    pub web_addr: SocketAddr,
    /// The same over HTTPS, with a self-signed certificate (on `spec.ip` and the dedicated
    /// addresses, at another port than `web_addr`).
    pub https_addr: SocketAddr,
    /// SHA-256 of the DER of the self-signed certificate, when the API is served over HTTPS.
    pub cert_sha256: Option<[u8; 32]>,
    /// The API token (a throwaway sim token).
    pub token: String,
    /// The host's name.
    pub hostname: String,
    /// The host's IP (the web listener's address).
    pub ip: Ipv4Addr,
    /// The SMTP listener (on `spec.ip`), delivering to the accounts' Maildirs.
    pub smtp_addr: SocketAddr,
    host: Arc<Host>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHost {
    /// Arms a fault on the WHM API (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.inject_after(fault, 0);
    }

    /// Arms a fault that lets `calls` calls of its function through first.
    pub fn inject_after(&self, fault: Fault, calls: u32) {
        self.host.state().faults.push((fault, calls));
    }

    /// Serves `page` (an HTML body, status 200) for `domain` over HTTPS instead of the site's
    /// files, or the files again with `None`; plain HTTP is unchanged. A site whose HTTPS
    /// virtual host differs from its HTTP one, as a real host's may.
    pub fn serve_https_page(&self, domain: &DomainName, page: Option<String>) {
        let mut state = self.host.state();
        match page {
            Some(page) => state.https_pages.insert(domain.clone(), page),
            None => state.https_pages.remove(domain),
        };
    }

    /// Removes every armed fault.
    pub fn clear_faults(&self) {
        self.host.state().faults.clear();
    }

    /// The real home directory of `user` on this host (`<data_dir>/home/<user>`), whether or
    /// not the account exists.
    pub fn account_dir(&self, user: &AccountName) -> PathBuf {
        accounts::home_dir(&self.host.data_dir, user)
    }

    /// The host's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.host.data_dir.clone()
    }

    /// Makes a transfer of `user` from this host fail (or succeed again) in RESTORE. Returns
    /// false if the account does not exist here.
    pub fn set_fail_restore(&self, user: &AccountName, failure: Option<String>) -> bool {
        match self.host.state().accounts.get_mut(user) {
            Some(record) => {
                record.spec.fail_restore = failure;
                true
            }
            None => false,
        }
    }

    /// Makes this host refuse (or accept again) root logins from other sim hosts: a target's
    /// `remote_basic_credential_check` and `create_remote_root_transfer_session` against it
    /// then fail with "Permission denied", as with a wrong password or an unknown key.
    pub fn refuse_root_login(&self, refuse: bool) {
        self.host.state().refuse_root_login = refuse;
    }

    /// The packages `listpkgs` lists here (the accounts' plans, `default`, and the packages a
    /// transfer created), sorted.
    pub fn packages(&self) -> Vec<String> {
        api::package_names(&self.host.state())
    }

    /// The accounts on this host now, in user order.
    pub fn accounts(&self) -> Vec<SimAccount> {
        self.host.state().accounts.values().map(|r| r.spec.clone()).collect()
    }

    /// True if `user` is an account on this host.
    pub fn has_account(&self, user: &AccountName) -> bool {
        self.host.state().accounts.contains_key(user)
    }

    /// True if `user` exists and is suspended.
    pub fn is_suspended(&self, user: &AccountName) -> bool {
        self.host.state().accounts.get(user).is_some_and(|r| r.suspended.is_some())
    }

    /// The exim-style main log (`<data_dir>/var/log/exim_mainlog`); empty before any mail.
    pub fn mail_log(&self) -> String {
        std::fs::read_to_string(mail::mainlog_path(&self.host.data_dir)).unwrap_or_default()
    }

    /// The messages in the Maildir of `local@domain` of account `user`
    /// (`<data_dir>/home/<user>/mail/<domain>/<local>/{new,cur}`), sorted by path.
    pub fn maildir_messages(&self, user: &AccountName, domain: &DomainName, local: &str) -> Vec<PathBuf> {
        mail::maildir_messages(&mail::maildir(&self.host.data_dir, user, domain, local))
    }

    /// The mail exchanger type of `domain` here: `auto` (the default), `local`, `secondary`
    /// or `remote`.
    pub fn mail_routing(&self, domain: &DomainName) -> &'static str {
        mail::routing_of(&self.host, domain)
    }

    /// The access log of `domain`'s site here (`https`: its `-ssl_log`), as cPanel's Apache
    /// writes it; empty before any request.
    pub fn access_log(&self, domain: &DomainName, https: bool) -> String {
        let name = if https { format!("{}-ssl_log", domain.as_str()) } else { domain.as_str().to_owned() };
        std::fs::read_to_string(web::domlogs_dir(&self.host.data_dir).join(name)).unwrap_or_default()
    }

    /// The calls that changed an account's standing here, in order: (`suspendacct` |
    /// `unsuspendacct` | `removeacct`, user), each as it reached the host, whatever it answered.
    pub fn account_changes(&self) -> Vec<(String, String)> {
        self.host.state().account_changes.clone()
    }

    /// Why `user` is suspended here (`suspendacct`'s reason), or `None` when it is not (or the
    /// host has no such account).
    pub fn suspend_reason(&self, user: &AccountName) -> Option<String> {
        self.host.state().accounts.get(user).and_then(|record| record.suspended.clone())
    }

    /// The transfer sessions created on this host (as the target), oldest first.
    pub fn transfer_sessions(&self) -> Vec<SimTransferSession> {
        transfer::sessions(&self.host)
    }

    /// Stops the listeners and any running transfer sessions.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
        lock(&self.host.tasks).abort_all();
    }
}

/// Starts a simulated host: writes its accounts' files under `data_dir`, opens the WHM API
/// listener on 127.0.0.1:0 and the web and SMTP listeners on `spec.ip:0`, and registers it in
/// `world`.
pub async fn start_host(spec: SimHostSpec, data_dir: PathBuf, world: &SimWorld) -> Result<SimHost> {
    if spec.hostname.is_empty() {
        bail!("a simulated host needs a hostname");
    }
    if !spec.ip.is_loopback() {
        bail!("simulated host {} must use a loopback address (127.0.0.x), not {}", spec.hostname, spec.ip);
    }
    let mut seen = std::collections::BTreeSet::new();
    for account in &spec.accounts {
        if !seen.insert(account.user.clone()) {
            bail!("account {} is listed twice for {}", account.user, spec.hostname);
        }
    }
    let mut spec = spec;
    assign_dedicated_ips(&mut spec.accounts, &spec.dedicated_ips);

    std::fs::create_dir_all(data_dir.join("home"))
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // A real cPanel host always has its exim main log, if empty (a grep of a missing log fails).
    let mainlog = mail::mainlog_path(&data_dir);
    if let Some(dir) = mainlog.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&mainlog)
        .with_context(|| format!("creating {}", mainlog.display()))?;
    let files_dir = data_dir.clone();
    let to_write = spec.accounts.clone();
    tokio::task::spawn_blocking(move || {
        for account in &to_write {
            accounts::write_account_files(&files_dir, account)
                .with_context(|| format!("writing the files of {}", account.user))?;
        }
        anyhow::Ok(())
    })
    .await
    .context("writing account files")??;

    let smtp_listener = tokio::net::TcpListener::bind((spec.ip, 0))
        .await
        .with_context(|| format!("binding the simulated SMTP listener on {}", spec.ip))?;
    let smtp_addr = smtp_listener.local_addr()?;

    let now = chrono::Utc::now().timestamp();
    let mut state = HostState::default();
    for (i, account) in spec.accounts.iter().enumerate() {
        // Spread the start dates over the past years so listaccts looks lived-in.
        Host::add_account(&mut state, account.clone(), now - 86_400 * (30 + 11 * i as i64));
    }
    let host = Arc::new(Host {
        hostname: spec.hostname.to_ascii_lowercase(),
        ip: spec.ip,
        token: spec.token.clone(),
        version: spec.version.clone(),
        data_dir,
        transfer_bytes_per_sec: spec.transfer_bytes_per_sec,
        dedicated_ips: spec.dedicated_ips.clone(),
        disk_total_mb: spec.disk_total_mb,
        world: world.clone(),
        state: Mutex::new(state),
        tasks: Mutex::new(JoinSet::new()),
        smtp_addr,
        dns_resolvers: spec.dns_resolvers.clone(),
        smtp_relay_port: spec.smtp_relay_port,
        mail: mail::MailSide::default(),
    });

    let api_listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("binding the simulated WHM API listener")?;
    let api_addr = api_listener.local_addr()?;
    let (web_listener, dedicated_web) = bind_web_listeners(spec.ip, &spec.dedicated_ips).await?;
    let web_addr = web_listener.local_addr()?;
    let (https_listener, dedicated_https) = bind_web_listeners(spec.ip, &spec.dedicated_ips).await?;
    let https_addr = https_listener.local_addr()?;
    let (web_tls, _) = serve::self_signed_tls(&host.hostname)?;

    let (tls, cert_sha256) = if spec.tls {
        let (config, digest) = serve::self_signed_tls(&host.hostname)?;
        (Some(config), Some(digest))
    } else {
        (None, None)
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let whm_url = Url::parse(&format!("{scheme}://{api_addr}/"))?;

    let api_router = api::router(host.clone());
    let web_router = web::router(host.clone(), spec.ip, false);
    let https_router = web::router(host.clone(), spec.ip, true);
    let mut listeners = vec![
        tokio::spawn(serve::serve(api_listener, api_router, tls)),
        tokio::spawn(serve::serve(web_listener, web_router, None)),
        tokio::spawn(serve::serve(https_listener, https_router, Some(web_tls.clone()))),
        tokio::spawn(mail::serve(smtp_listener, host.clone())),
    ];
    for (ip, listener) in dedicated_web {
        listeners.push(tokio::spawn(serve::serve(listener, web::router(host.clone(), ip, false), None)));
    }
    for (ip, listener) in dedicated_https {
        let router = web::router(host.clone(), ip, true);
        listeners.push(tokio::spawn(serve::serve(listener, router, Some(web_tls.clone()))));
    }
    world.register(&host);
    tracing::debug!(host = %host.hostname, %whm_url, %web_addr, %https_addr, "simulated cPanel host started");

    Ok(SimHost {
        whm_url,
        web_addr,
        https_addr,
        cert_sha256,
        token: spec.token,
        hostname: host.hostname.clone(),
        ip: spec.ip,
        smtp_addr,
        host,
        listeners,
    })
}

/// Binds the web listener on the shared `ip` (a free port) and one on each dedicated address
/// at the same port, as Apache listens on every address of the host: a site on a dedicated IP
/// is served there (see `web`). A port taken on one of the addresses is tried again with
/// another.
async fn bind_web_listeners(
    ip: Ipv4Addr,
    dedicated: &[Ipv4Addr],
) -> Result<(tokio::net::TcpListener, Vec<(Ipv4Addr, tokio::net::TcpListener)>)> {
    let mut last_error = None;
    for _attempt in 0..8 {
        let shared = tokio::net::TcpListener::bind((ip, 0))
            .await
            .with_context(|| format!("binding the simulated web listener on {ip}"))?;
        let port = shared.local_addr()?.port();
        let mut others = Vec::new();
        let mut failed = false;
        for address in dedicated {
            match tokio::net::TcpListener::bind((*address, port)).await {
                Ok(listener) => others.push((*address, listener)),
                Err(error) => {
                    last_error =
                        Some(anyhow::anyhow!("binding the web listener on {address}:{port}: {error}"));
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            return Ok((shared, others));
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("binding the simulated web listeners")))
}

/// Gives the dedicated addresses no account claims to every 7th account (7th, 14th, …) that
/// has none, in order.
fn assign_dedicated_ips(accounts: &mut [SimAccount], dedicated: &[Ipv4Addr]) {
    let claimed: Vec<Ipv4Addr> = accounts.iter().filter_map(|a| a.dedicated_ip).collect();
    let mut free = dedicated.iter().filter(|ip| !claimed.contains(ip));
    for account in accounts.iter_mut().skip(6).step_by(7) {
        if account.dedicated_ip.is_some() {
            continue;
        }
        match free.next() {
            Some(ip) => account.dedicated_ip = Some(*ip),
            None => break,
        }
    }
}
