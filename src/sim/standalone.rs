//! `siirto sim`: simulated cPanel hosts as a standalone process, to point siirto at by hand.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rand::Rng;

use super::nameserver::SimNameserver;
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
}

fn throwaway_token() -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect::<String>()
        .to_ascii_uppercase()
}

fn describe(role: &str, host: &SimHost) {
    // `siirto sim` exists to print these: the tokens are throwaway sim tokens.
    println!("{role}: {}", host.hostname);
    println!("  WHM API:   {}", host.whm_url);
    println!("  token:     {}", host.token);
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
    describe("source", &source);
    let target = if args.one {
        None
    } else {
        let mut spec = SimHostSpec::new("new.sim.test", TARGET_IP, &throwaway_token());
        spec.transfer_bytes_per_sec = 20 * 1024 * 1024;
        spec.tls = args.tls;
        spec.dns_resolvers = vec![nameserver.dns_addr];
        let target = start_host(spec, data_dir.join("new.sim.test"), &world).await?;
        describe("target", &target);
        println!(
            "  (a transfer session on the target reaches the source as host=old.sim.test, user=root, \
             password=<the source's token>)"
        );
        Some(target)
    };
    println!(
        "nameserver: DNS {}, PowerDNS API {} (key {api_key}), the accounts' zones at the source",
        nameserver.dns_addr, nameserver.api_url
    );
    println!("data: {}", data_dir.display());
    println!("{} accounts on the source; press Ctrl-C to stop.", args.accounts);
    shutdown.await;
    drop(target);
    drop(source);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn standalone_starts_both_hosts_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let args = SimArgs { accounts: 3, data_dir: Some(dir.path().to_path_buf()), one: false, tls: true };
        serve_until(args, async {}).await.unwrap();
        let home = dir.path().join("old.sim.test/home");
        assert!(home.join("kukka0003/public_html/index.html").is_file());
        assert!(dir.path().join("new.sim.test/home").is_dir());
    }
}
