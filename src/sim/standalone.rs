//! `siirto sim`: simulated cPanel hosts as a standalone process, to point siirto at by hand.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::Rng;

use super::nameserver::SimNameserver;
use super::setup::{ConfigFiles, ConfigHost, DnsEndpoint, SIM_PLAYBOOK, write_config_files};
use super::zones::{SOURCE_IP, TARGET_IP, create_zones};
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
    /// Not an option of `siirto sim`, which reads no config: this keeps the global `--config`
    /// out of `siirto sim --help` (clap does not give a subcommand a global argument it has
    /// itself). Ignored.
    #[arg(long = "config", id = "config", hide = true)]
    pub ignored_config: Option<PathBuf>,
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
/// unless `--one`, an empty target `new.sim.test` on 127.0.0.3, and a nameserver holding the
/// accounts' zones (which the hosts' mail relays ask); prints their URLs, tokens, web
/// addresses and certificate fingerprints, and serves until Ctrl-C.
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
    // mail to the host the MX names, as a real server does.
    let api_key = throwaway_token();
    let nameserver = SimNameserver::start(&api_key).await.context("starting the nameserver")?;
    let world = SimWorld::new();
    let accounts = generate_accounts(args.accounts, "kukka");
    let dns = crate::dns::PowerDns::new(
        nameserver.api_url.clone(),
        crate::secret::Secret::new(api_key.clone()),
        "localhost".to_owned(),
    )
    .context("the nameserver's API client")?;
    create_zones(&dns, &accounts, SOURCE_IP).await?;
    let mut source_spec = SimHostSpec::new("old.sim.test", SOURCE_IP, &throwaway_token());
    source_spec.accounts = accounts;
    source_spec.transfer_bytes_per_sec = 20 * 1024 * 1024;
    source_spec.tls = args.tls;
    source_spec.dns_resolvers = vec![nameserver.dns_addr];
    let source = start_host(source_spec, data_dir.join("old.sim.test"), &world).await?;
    let target = if args.one {
        None
    } else {
        let mut spec = SimHostSpec::new("new.sim.test", TARGET_IP, &throwaway_token());
        spec.transfer_bytes_per_sec = 20 * 1024 * 1024;
        spec.tls = args.tls;
        spec.dns_resolvers = vec![nameserver.dns_addr];
        Some(start_host(spec, data_dir.join("new.sim.test"), &world).await?)
    };
    let endpoint =
        DnsEndpoint { api_url: nameserver.api_url.clone(), api_key, dns_addr: nameserver.dns_addr };
    let mut hosts = vec![ConfigHost { name: "old", host: &source }];
    if let Some(target) = &target {
        hosts.push(ConfigHost { name: "new", host: target });
    }
    let written = match &args.write_config {
        Some(dir) => Some(write_sim_config(dir, &hosts, &endpoint)?),
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
    match &secrets {
        Some(secrets) => println!(
            "nameserver: DNS {}, PowerDNS API {} (key in {}), the accounts' zones at the source",
            endpoint.dns_addr,
            endpoint.api_url,
            secrets.join("pdns.key").display()
        ),
        None => println!(
            "nameserver: DNS {}, PowerDNS API {} (key {}), the accounts' zones at the source",
            endpoint.dns_addr, endpoint.api_url, endpoint.api_key
        ),
    }
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
fn write_sim_config(dir: &Path, hosts: &[ConfigHost<'_>], endpoint: &DnsEndpoint) -> Result<WrittenConfig> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let outbox = dir.join("outbox");
    std::fs::create_dir_all(&outbox).with_context(|| format!("creating {}", outbox.display()))?;
    let extra = "[daemon]\nidle_poll = \"200ms\"\n\n[mail]\nfrom = \"Siirto Sim <noreply@siirto-sim.test>\"\nchannel = \"directory\"\npath = \"outbox\"\n";
    let config = write_config_files(
        &dir,
        hosts,
        endpoint,
        ConfigFiles { written_by: "siirto sim --write-config", database: "sqlite:siirto.db", extra },
    )?;
    crate::config::Config::load(&config)
        .map_err(|e| anyhow::anyhow!("the config written for the simulated hosts does not load: {e}"))?;
    let playbook = dir.join("playbook.toml");
    let text = format!(
        "# Written by siirto sim --write-config: the demo's playbook, for the simulated hosts.\n{SIM_PLAYBOOK}"
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
            ignored_config: None,
        };
        serve_until(args, async {}).await.unwrap();
        let home = dir.path().join("old.sim.test/home");
        assert!(home.join("kukka0003/public_html/index.html").is_file());
        assert!(dir.path().join("new.sim.test/home").is_dir());
    }
}
