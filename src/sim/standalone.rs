//! `siirto sim`: simulated cPanel hosts as a standalone process, to point siirto at by hand
//! (with `--write-config`, through a config it writes), their zones in a simulated nameserver or
//! a real PowerDNS (`--pdns`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::Rng;

use super::nameserver::SimNameserver;
use super::setup::{
    ConfigFiles, ConfigHost, DnsEndpoint, TRY_SETTLE_AFTER, try_playbook, write_config_files,
};
use super::zones::{SOURCE_IP, TARGET_IP, create_zones_with_concurrency};
use super::{SimHost, SimHostSpec, SimWorld, generate_accounts, start_host};

/// Options of `siirto sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// How many generated accounts the source host starts with.
    #[arg(long, default_value_t = 20)]
    pub accounts: usize,
    /// Where the hosts keep their files (default: a temporary directory removed on exit).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Start only the source host.
    #[arg(long)]
    pub one: bool,
    /// Serve the WHM API over HTTPS with self-signed certificates (pin their SHA-256).
    #[arg(long)]
    pub tls: bool,
    /// Write into this directory a config for the simulated hosts (siirto.toml, the token
    /// files, an outbox directory) and a playbook that runs in minutes (playbook.toml); the
    /// tokens are then not printed.
    #[arg(long, value_name = "DIR")]
    pub write_config: Option<PathBuf>,
    /// Create the accounts' zones in this PowerDNS, through its HTTP API (e.g.
    /// http://127.0.0.1:8081), instead of in a simulated nameserver; the written config's [dns]
    /// names it. A zone of the same name left by an earlier run is reset.
    #[arg(long, value_name = "URL", requires_all = ["pdns_key_file", "pdns_dns"])]
    pub pdns: Option<reqwest::Url>,
    /// A file holding that PowerDNS's API key (never printed; the written config names the
    /// file).
    #[arg(long, value_name = "FILE", requires = "pdns")]
    pub pdns_key_file: Option<PathBuf>,
    /// Where that PowerDNS answers DNS (IP:PORT; an IP alone means port 53): the config's
    /// nameserver for the checks, and the hosts' mail relays' resolver.
    #[arg(long, value_name = "ADDR", requires = "pdns", value_parser = parse_dns_addr)]
    pub pdns_dns: Option<SocketAddr>,
    /// Not an option of `siirto sim`, which reads no config: this keeps the global `--config`
    /// out of `siirto sim --help` (clap does not give a subcommand a global argument it has
    /// itself). Ignored.
    #[arg(long = "config", id = "config", hide = true)]
    pub ignored_config: Option<PathBuf>,
}

fn parse_dns_addr(text: &str) -> std::result::Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("expected IP:PORT or an IP, got {text:?}"))
}

/// The API key in `path`, trimmed (the key itself never goes into an error).
fn read_key_file(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the key file {}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        bail!("the key file {} is empty", path.display());
    }
    Ok(key.to_owned())
}

fn throwaway_token() -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect::<String>()
        .to_ascii_uppercase()
}

fn describe(role: &str, host: &SimHost, token_file: Option<&Path>) {
    println!("{role}: {}", host.hostname);
    println!("  WHM API:   {}", host.whm_url);
    match token_file {
        Some(file) => println!("  token:     in {}", file.display()),
        // Without --write-config, `siirto sim` exists to print these: throwaway sim tokens.
        None => println!("  token:     {}", host.token),
    }
    println!("  web:       http://{}/  (send the site's Host header)", host.web_addr);
    println!("  web TLS:   https://{}/  (self-signed; send the site's Host header)", host.https_addr);
    println!(
        "  SMTP:      {}  (mail log: {})",
        host.smtp_addr,
        host.data_dir().join("var/log/exim_mainlog").display()
    );
    if let Some(digest) = host.cert_sha256 {
        println!("  cert sha256: {}", hex::encode(digest));
    }
}

/// Runs `siirto sim`: a source host `old.sim.test` on 127.0.0.2 with generated accounts and,
/// unless `--one`, an empty target `new.sim.test` on 127.0.0.3, and the accounts' zones (which
/// the hosts' mail relays ask) in a simulated nameserver or, with `--pdns`, a real PowerDNS;
/// prints their URLs, tokens (or, with `--write-config`, where the config and the token files
/// are), web addresses and certificate fingerprints, and serves until Ctrl-C.
pub async fn run_standalone(args: SimArgs) -> Result<()> {
    serve_until(args, async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot wait for Ctrl-C; stopping");
        }
    })
    .await
}

/// Starts the hosts of `siirto sim`, prints them, and serves until `shutdown` completes.
async fn serve_until(args: SimArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let (_temp, data_dir) = match &args.data_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::tempdir().context("creating a temporary data directory")?;
            let path = temp.path().to_path_buf();
            (Some(temp), path)
        }
    };
    // A nameserver holding the accounts' zones (at the source), which the hosts' mail relays
    // ask for MX records: with a domain's routing switched to remote, the source relays its
    // mail to the host the MX names, as a real server does. With --pdns it is that PowerDNS,
    // else a simulated one.
    let (endpoint, _nameserver) = match (&args.pdns, &args.pdns_key_file, args.pdns_dns) {
        (Some(api_url), Some(key_file), Some(dns_addr)) => {
            let api_key = read_key_file(key_file)?;
            (DnsEndpoint { api_url: api_url.clone(), api_key, dns_addr }, None)
        }
        (None, None, None) => {
            let api_key = throwaway_token();
            let nameserver = SimNameserver::start(&api_key).await.context("starting the nameserver")?;
            let endpoint =
                DnsEndpoint { api_url: nameserver.api_url.clone(), api_key, dns_addr: nameserver.dns_addr };
            (endpoint, Some(nameserver))
        }
        _ => bail!("--pdns, --pdns-key-file and --pdns-dns go together"),
    };
    let world = SimWorld::new();
    let accounts = generate_accounts(args.accounts, "kukka");
    let dns = endpoint.client().context("the nameserver's API client")?;
    // A real PowerDNS may keep its zones in sqlite: one change at a time.
    let concurrency = if args.pdns.is_some() { 1 } else { 4 };
    create_zones_with_concurrency(&dns, &accounts, SOURCE_IP, concurrency).await.with_context(|| {
        format!("creating the accounts' zones through the PowerDNS API at {}", endpoint.api_url)
    })?;
    let mut source_spec = SimHostSpec::new("old.sim.test", SOURCE_IP, &throwaway_token());
    source_spec.accounts = accounts;
    source_spec.transfer_bytes_per_sec = 20 * 1024 * 1024;
    source_spec.tls = args.tls;
    source_spec.dns_resolvers = vec![endpoint.dns_addr];
    let source = start_host(source_spec, data_dir.join("old.sim.test"), &world).await?;
    let target = if args.one {
        None
    } else {
        let mut spec = SimHostSpec::new("new.sim.test", TARGET_IP, &throwaway_token());
        spec.transfer_bytes_per_sec = 20 * 1024 * 1024;
        spec.tls = args.tls;
        spec.dns_resolvers = vec![endpoint.dns_addr];
        Some(start_host(spec, data_dir.join("new.sim.test"), &world).await?)
    };
    let mut hosts = vec![ConfigHost { name: "old", host: &source }];
    if let Some(target) = &target {
        hosts.push(ConfigHost { name: "new", host: target });
    }
    let written = match &args.write_config {
        Some(dir) => Some(write_sim_config(dir, &hosts, &endpoint, args.pdns_key_file.as_deref())?),
        None => None,
    };
    let secrets = written.as_ref().map(|w| w.dir.join("secrets"));
    let token_file = |name: &str| secrets.as_ref().map(|s| s.join(format!("{name}.token")));
    describe("source", &source, token_file("old").as_deref());
    if let Some(target) = &target {
        describe("target", target, token_file("new").as_deref());
        println!(
            "  (a transfer session on the target reaches the source as host=old.sim.test, user=root, \
             password=<the source's token>)"
        );
    }
    // The key of a real PowerDNS is the operator's secret: only the simulated nameserver's
    // throwaway key is ever printed.
    let key = match (&args.pdns_key_file, &secrets) {
        (Some(file), _) => format!("key in {}", file.display()),
        (None, Some(secrets)) => format!("key in {}", secrets.join("pdns.key").display()),
        (None, None) => format!("key {}", endpoint.api_key),
    };
    println!(
        "nameserver{}: DNS {}, PowerDNS API {} ({key}), the accounts' zones at the source",
        if args.pdns.is_some() { "" } else { " (simulated)" },
        endpoint.dns_addr,
        endpoint.api_url,
    );
    println!("data: {}", data_dir.display());
    if let Some(written) = &written {
        println!("config: {} (playbook {})", written.config.display(), written.playbook.display());
        if target.is_some() {
            println!(
                "  try: siirto --config {} plan --playbook {} --from old --to new",
                written.config.display(),
                written.playbook.display()
            );
        }
    }
    println!("{} accounts on the source; press Ctrl-C to stop.", args.accounts);
    shutdown.await;
    drop(target);
    drop(source);
    Ok(())
}

/// What `--write-config` wrote.
struct WrittenConfig {
    /// The directory, absolute.
    dir: PathBuf,
    /// `siirto.toml` in it.
    config: PathBuf,
    /// `playbook.toml` in it.
    playbook: PathBuf,
}

/// Writes the config for the running hosts into `dir` (its store `siirto.db` and its outbox
/// `outbox/` beside it), the playbook, and checks that the config loads.
fn write_sim_config(
    dir: &Path,
    hosts: &[ConfigHost<'_>],
    endpoint: &DnsEndpoint,
    dns_key_file: Option<&Path>,
) -> Result<WrittenConfig> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    // The config names the key file from its own directory.
    let dns_key_file =
        dns_key_file.map(std::path::absolute).transpose().context("resolving --pdns-key-file")?;
    let dns_key_file = dns_key_file.as_deref();
    let outbox = dir.join("outbox");
    std::fs::create_dir_all(&outbox).with_context(|| format!("creating {}", outbox.display()))?;
    let extra = "[daemon]\nidle_poll = \"200ms\"\n\n[mail]\nfrom = \"Siirto Sim <noreply@siirto-sim.test>\"\nchannel = \"directory\"\npath = \"outbox\"\n";
    let config = write_config_files(
        &dir,
        hosts,
        endpoint,
        ConfigFiles {
            written_by: "siirto sim --write-config",
            database: "sqlite:siirto.db",
            extra,
            resolvers: &[],
            dns_key_file,
            listen: "127.0.0.1:8640",
        },
    )?;
    crate::config::Config::load(&config)
        .map_err(|e| anyhow::anyhow!("the config written for the simulated hosts does not load: {e}"))?;
    let playbook = dir.join("playbook.toml");
    let text = format!(
        "# Written by siirto sim --write-config: the demo's playbook with a {TRY_SETTLE_AFTER} settle period, \
         for the simulated hosts.\n{}",
        try_playbook()
    );
    std::fs::write(&playbook, text).with_context(|| format!("writing {}", playbook.display()))?;
    Ok(WrittenConfig { dir, config, playbook })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn standalone_starts_both_hosts_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let args = SimArgs {
            accounts: 3,
            data_dir: Some(dir.path().to_path_buf()),
            one: false,
            tls: true,
            write_config: None,
            pdns: None,
            pdns_key_file: None,
            pdns_dns: None,
            ignored_config: None,
        };
        serve_until(args, async {}).await.unwrap();
        let home = dir.path().join("old.sim.test/home");
        assert!(home.join("kukka0003/public_html/index.html").is_file());
        assert!(dir.path().join("new.sim.test/home").is_dir());
    }
}
