//! The files a sysadmin would write to point siirto at simulated hosts: `siirto.toml`, its
//! secret files (mode 0600) and a playbook that runs in minutes. `siirto demo`, `siirto sim
//! --write-config` and the tests write them through [`write_config_files`], so the three
//! cannot drift apart.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::SimHost;
use crate::dns::PowerDns;
use crate::secret::Secret;

/// The playbook for simulated hosts (`playbooks/demo.toml`): the shared-hosting recipe with
/// the TTL wait shortened (`gate_wait_override`), short polls and retries, and the final mail
/// sync off (the simulated hosts have no sshd).
pub const SIM_PLAYBOOK: &str = include_str!("../../playbooks/demo.toml");

/// The settle period of the playbook `siirto sim --write-config` writes, in place of the
/// demo's two days: long enough to see the migration cut over, short enough that a walk-through
/// (README.md, "Try the real flow on this machine", run by `tests/walkthrough.sh`) sees it
/// settle with the TTLs restored.
pub const TRY_SETTLE_AFTER: &str = "5s";

/// The playbook `siirto sim --write-config` writes: [`SIM_PLAYBOOK`] with the settle period
/// shortened to [`TRY_SETTLE_AFTER`], and a comment saying that is for trying siirto only.
pub fn try_playbook() -> String {
    const DEMO_SETTLE: &str = "settle_after = \"2d\"\n";
    // The demo's playbook is ours and a test below checks the line is there, so a miss is a bug
    // caught by that test rather than an operator's problem.
    SIM_PLAYBOOK.replacen(
        DEMO_SETTLE,
        &format!(
            "# For trying siirto on simulated hosts only, never in production: settled (TTLs\n\
             # restored) {TRY_SETTLE_AFTER} after the cutover instead of the demo's 2 days, so\n\
             # `siirto daemon --exit-when-settled` ends within minutes.\n\
             settle_after = \"{TRY_SETTLE_AFTER}\"\n"
        ),
        1,
    )
}

/// Where the company's DNS is: its PowerDNS-shaped API and its nameserver.
#[derive(Debug, Clone)]
pub struct DnsEndpoint {
    /// The API's base URL.
    pub api_url: reqwest::Url,
    /// The API key.
    pub api_key: String,
    /// The authoritative nameserver (UDP and TCP).
    pub dns_addr: std::net::SocketAddr,
}

impl DnsEndpoint {
    /// A PowerDNS API client for it.
    pub fn client(&self) -> anyhow::Result<PowerDns> {
        Ok(PowerDns::new(self.api_url.clone(), Secret::new(self.api_key.clone()), "localhost".to_owned())?)
    }
}

/// One `[hosts.NAME]` table of the config: the short name and the simulated host behind it.
#[derive(Debug, Clone, Copy)]
pub struct ConfigHost<'a> {
    /// The short name (`old`, `new`): the table's key and the token file's name.
    pub name: &'a str,
    /// The host.
    pub host: &'a SimHost,
}

/// What goes into the config besides the hosts and the DNS provider.
#[derive(Debug, Clone, Copy)]
pub struct ConfigFiles<'a> {
    /// Who wrote it, for the first comment line (`siirto demo`).
    pub written_by: &'a str,
    /// The store's URL (`sqlite:siirto.db` is resolved against the config's directory).
    pub database: &'a str,
    /// Appended verbatim after the `[dns]` table's own lines: more `[dns]` settings first,
    /// then the `[mail]` table and any `[daemon]` settings.
    pub extra: &'a str,
    /// The config's `dns.resolvers`; empty: the DNS endpoint, which stands in for public DNS.
    pub resolvers: &'a [std::net::SocketAddr],
    /// The file holding the DNS API key, when it is the operator's own (a real PowerDNS): the
    /// config names it and no copy is written. `None`: the key is written to
    /// `secrets/pdns.key`.
    pub dns_key_file: Option<&'a Path>,
    /// Where the daemon serves the status page (`127.0.0.1:0`: a free port, which it prints).
    pub listen: &'a str,
}

/// Writes `siirto.toml` into `dir` for these hosts and this DNS endpoint, with each secret in
/// its own file under `dir/secrets` (mode 0600), and returns the config's path. A host with a
/// self-signed certificate gets its fingerprint pinned.
pub fn write_config_files(
    dir: &Path,
    hosts: &[ConfigHost<'_>],
    dns: &DnsEndpoint,
    files: ConfigFiles<'_>,
) -> anyhow::Result<PathBuf> {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).with_context(|| format!("creating {}", secrets.display()))?;
    let mut text = format!(
        "# Written by {}.\ndatabase = \"{}\"\nlisten = \"{}\"\n",
        files.written_by, files.database, files.listen
    );
    for ConfigHost { name, host } in hosts {
        write_secret(&secrets.join(format!("{name}.token")), &host.token)?;
        text.push_str(&format!(
            "\n[hosts.{name}]\nwhm_url = \"{url}\"\nhostname = \"{hostname}\"\ntoken_file = \"secrets/{name}.token\"\nip = \"{ip}\"\nhttp_port = {http}\nhttps_port = {https}\n",
            url = host.whm_url,
            hostname = host.hostname,
            ip = host.ip,
            http = host.web_addr.port(),
            https = host.https_addr.port(),
        ));
        if let Some(digest) = host.cert_sha256 {
            text.push_str(&format!("tls_pin_sha256 = \"{}\"\n", hex::encode(digest)));
        }
    }
    let key_file = match files.dns_key_file {
        // A TOML string, escaped: the path is the operator's.
        Some(path) => toml::Value::String(path.display().to_string()).to_string(),
        None => {
            write_secret(&secrets.join("pdns.key"), &dns.api_key)?;
            "\"secrets/pdns.key\"".to_owned()
        }
    };
    // The status page's two tokens: customer service's (viewer) and the sysadmins' (operator).
    for role in ["viewer", "operator"] {
        let token = hex::encode(rand::random::<[u8; 24]>());
        write_secret(&secrets.join(format!("web-{role}.token")), &token)?;
    }
    text.push_str(
        "\n[web]\n[[web.tokens]]\nname = \"asiakaspalvelu\"\nrole = \"viewer\"\ntoken_file = \"secrets/web-viewer.token\"\n\n\
         [[web.tokens]]\nname = \"yllapito\"\nrole = \"operator\"\ntoken_file = \"secrets/web-operator.token\"\n",
    );
    text.push_str(&format!(
        r#"
[dns]
provider = "powerdns"
api_url = "{api_url}"
api_key_file = {key_file}
nameservers = ["{ns}"]
{resolvers}own_nameservers = ["ns1.siirto-demo.test"]
write_concurrency = 1

{extra}
"#,
        api_url = dns.api_url,
        ns = dns.dns_addr,
        resolvers = if files.resolvers.is_empty() {
            format!(
                "# The simulated hosts' only DNS stands in for public DNS (in production: recursive\n\
                 # resolvers, which see each domain's delegation as the world does).\nresolvers = [\"{}\"]\n",
                dns.dns_addr
            )
        } else {
            let list: Vec<String> = files.resolvers.iter().map(|r| format!("\"{r}\"")).collect();
            format!("resolvers = [{}]\n", list.join(", "))
        },
        extra = files.extra,
    ));
    let path = dir.join("siirto.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Writes a secret file readable by its owner alone (0600, also when it existed before).
pub fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the secret file {}", path.display()))?;
    // `mode` applies only to a file this call creates.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} 0600", path.display()))?;
    file.write_all(contents.as_bytes()).with_context(|| format!("writing the secret file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_try_playbook_settles_within_seconds_and_checks() {
        let text = try_playbook();
        assert!(text.contains(&format!("\nsettle_after = \"{TRY_SETTLE_AFTER}\"\n")), "{text}");
        assert!(!text.contains("settle_after = \"2d\""), "{text}");
        assert!(text.contains("For trying siirto on simulated hosts only"), "{text}");
        let playbook = crate::playbook::Playbook::parse(&text, "try playbook").unwrap();
        assert_eq!(playbook.schedule.settle_after, std::time::Duration::from_secs(5));
    }
}
