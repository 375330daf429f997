//! Simulated cPanel accounts: their description, a deterministic generator and their real files.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::names::{AccountName, DomainName};

/// One account on a simulated host, as WHM would list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAccount {
    /// The cPanel user name.
    pub user: AccountName,
    /// The account's main domain.
    pub domain: DomainName,
    /// Addon domains; each gets its own document root under `public_html/<domain>`.
    pub addon_domains: Vec<DomainName>,
    /// The contact e-mail address (`listaccts` `email`).
    pub email: String,
    /// The hosting package (`listaccts` `plan`).
    pub plan: String,
    /// The owning reseller, or `root`.
    pub owner: String,
    /// The declared disk usage in megabytes (`listaccts` `diskused`); transfers take time in
    /// proportion to it, while the real files stay small.
    pub disk_mb: u64,
    /// When set, a transfer of this account fails in the RESTORE queue with this message
    /// (`failed-item`, `msg.failure`), and no account appears on the target.
    pub fail_restore: Option<String>,
    /// Parked domains (aliases): served from the main domain's document root
    /// (`get_domain_info` `domain_type` `parked`).
    pub parked_domains: Vec<DomainName>,
    /// Subdomains, full names such as `blog.example.test`, each with its own document root
    /// under `public_html/<subdomain>` (`domain_type` `sub`).
    pub sub_domains: Vec<DomainName>,
    /// The account's dedicated IPv4 address, or `None` for the host's shared address. When a
    /// host is started with [`SimHostSpec::dedicated_ips`](super::SimHostSpec::dedicated_ips),
    /// accounts without one are given those addresses in turn (see `start_host`).
    pub dedicated_ip: Option<Ipv4Addr>,
    /// Fields that replace (or add to) this account's `listaccts`/`accountsummary` entry, to
    /// make it odd the way real hosts sometimes are: `{"email": "not-an-address"}`,
    /// `{"uid": "1042"}` (a number sent as a string). Applied last, as JSON values.
    pub listaccts_overrides: BTreeMap<String, serde_json::Value>,
    /// Host names the account added to its main domain's zone on this host besides cPanel's
    /// template (`shop`, `portal.blog`), as labels under the domain, each an A record at the
    /// account's address (`parse_dns_zone`).
    pub extra_hosts: Vec<String>,
}

/// Makes a user-name prefix safe: lowercase letters and digits, starting with a letter, short
/// enough that `prefix + digits` stays within cPanel's 16 characters.
fn clean_prefix(prefix: &str, digits: usize) -> String {
    let mut cleaned: String =
        prefix.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    if !cleaned.starts_with(|c: char| c.is_ascii_lowercase()) {
        cleaned.insert(0, 'a');
    }
    cleaned.truncate(16usize.saturating_sub(digits).max(1));
    cleaned
}

/// Generates `count` deterministic accounts: users `<prefix>0001`…, main domains
/// `<prefix>-0001.test`, every third account with an addon domain `<prefix>-000N-shop.test`,
/// every fourth with a parked domain `<prefix>-000N-alias.test`, every fifth with a subdomain
/// `blog.<main domain>`, contact `owner@<main domain>`, every fifth account owned by the
/// reseller `<prefix>0001` (itself an account owned by root), and declared disk sizes between
/// 1 and 50 MB. Every account is on the host's shared IP unless the host has dedicated IPs
/// (see `SimHostSpec::dedicated_ips`); for missing and invalid contacts see
/// [`add_contact_quirks`].
///
/// The prefix is cleaned to lowercase letters and digits (and shortened) so the names are
/// always valid cPanel user and domain names.
pub fn generate_accounts(count: usize, prefix: &str) -> Vec<SimAccount> {
    let digits = count.to_string().len().max(4);
    let prefix = clean_prefix(prefix, digits);
    let reseller = format!("{prefix}{:0digits$}", 1);
    (1..=count)
        .map(|i| {
            let user = AccountName::parse(&format!("{prefix}{i:0digits$}"))
                .expect("a cleaned prefix and digits form a valid cPanel user name");
            let domain = DomainName::parse(&format!("{prefix}-{i:0digits$}.test"))
                .expect("a cleaned prefix and digits form a valid domain name");
            let addon_domains = if i % 3 == 0 {
                vec![
                    DomainName::parse(&format!("{prefix}-{i:0digits$}-shop.test"))
                        .expect("a cleaned prefix and digits form a valid domain name"),
                ]
            } else {
                Vec::new()
            };
            let parked_domains = if i % 4 == 0 {
                vec![
                    DomainName::parse(&format!("{prefix}-{i:0digits$}-alias.test"))
                        .expect("a cleaned prefix and digits form a valid domain name"),
                ]
            } else {
                Vec::new()
            };
            let sub_domains = if i % 5 == 0 {
                vec![DomainName::parse(&format!("blog.{domain}")).expect("blog. and a valid domain is valid")]
            } else {
                Vec::new()
            };
            let by_reseller = i % 5 == 0 && i != 1;
            let owner = if by_reseller { reseller.clone() } else { "root".to_owned() };
            let plan = if by_reseller {
                format!("{reseller}_basic")
            } else if i % 2 == 0 {
                "pro".to_owned()
            } else {
                "default".to_owned()
            };
            SimAccount {
                email: format!("owner@{domain}"),
                user,
                domain,
                addon_domains,
                plan,
                owner,
                disk_mb: ((i as u64 * 37) % 50) + 1,
                fail_restore: None,
                parked_domains,
                sub_domains,
                dedicated_ip: None,
                listaccts_overrides: BTreeMap::new(),
                extra_hosts: Vec::new(),
            }
        })
        .collect()
}

/// Gives some accounts the contact addresses real hosts also have: every 10th account (the
/// 10th, 30th, …) none at all (`email` `""`), every 10th from the 20th (20th, 40th, …) one
/// that is not an address (`owner.at.<domain>`). Kept out of [`generate_accounts`] because
/// the demo expects to notify every account.
pub fn add_contact_quirks(accounts: &mut [SimAccount]) {
    for (index, account) in accounts.iter_mut().enumerate() {
        let i = index + 1;
        if i % 20 == 10 {
            account.email = String::new();
        } else if i % 20 == 0 {
            account.email = format!("owner.at.{}", account.domain);
        }
    }
}

impl SimAccount {
    /// Every domain of the account: main, addon, parked and subdomains, in that order.
    pub fn all_domains(&self) -> impl Iterator<Item = &DomainName> {
        std::iter::once(&self.domain)
            .chain(self.addon_domains.iter())
            .chain(self.parked_domains.iter())
            .chain(self.sub_domains.iter())
    }
}

/// The account's home directory under a host's data directory.
pub(crate) fn home_dir(data_dir: &Path, user: &AccountName) -> PathBuf {
    data_dir.join("home").join(user.as_str())
}

/// The real document root of `domain` inside an account's home directory.
pub(crate) fn docroot_in(home: &Path, account: &SimAccount, domain: &DomainName) -> PathBuf {
    // A parked domain is an alias: it serves the main domain's site.
    if *domain == account.domain || account.parked_domains.contains(domain) {
        home.join("public_html")
    } else {
        home.join("public_html").join(domain.as_str())
    }
}

/// The document root as cPanel reports it (`get_domain_info` `docroot`).
pub(crate) fn cpanel_docroot(account: &SimAccount, domain: &DomainName) -> String {
    let home = PathBuf::from("/home").join(account.user.as_str());
    docroot_in(&home, account, domain).display().to_string()
}

/// The index page of a domain: its `<title>` names the domain, its body the account.
pub(crate) fn index_page(account: &SimAccount, domain: &DomainName) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>{domain}</title></head>\n<body>\n\
         <h1>{domain}</h1>\n<p>This site belongs to the cPanel account {user}.</p>\n\
         </body>\n</html>\n",
        user = account.user
    )
}

/// Writes an account's real files: one docroot per domain with an index page, and a
/// placeholder Maildir per domain, and the mailbox `info@<main domain>`. Existing files are
/// overwritten.
pub(crate) fn write_account_files(data_dir: &Path, account: &SimAccount) -> io::Result<()> {
    let home = home_dir(data_dir, &account.user);
    let domains = std::iter::once(&account.domain)
        .chain(account.addon_domains.iter())
        .chain(account.sub_domains.iter());
    for domain in domains {
        let docroot = docroot_in(&home, account, domain);
        std::fs::create_dir_all(&docroot)?;
        std::fs::write(docroot.join("index.html"), index_page(account, domain))?;
        let maildir = home.join("mail").join(domain.as_str());
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub))?;
        }
    }
    // One mailbox, info@<main domain>, so `list_pops_for` has something to compare.
    let info = home.join("mail").join(account.domain.as_str()).join("info");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(info.join(sub))?;
    }
    Ok(())
}

/// Copies a directory tree (files and directories only; symbolic links are not followed).
pub(crate) fn copy_tree(from: &Path, to: &Path) -> io::Result<u64> {
    let mut copied = 0;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copied += copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            copied += std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_accounts_are_deterministic_and_valid() {
        let accounts = generate_accounts(20, "kukka");
        assert_eq!(accounts, generate_accounts(20, "kukka"));
        assert_eq!(accounts.len(), 20);
        assert_eq!(accounts[0].user.as_str(), "kukka0001");
        assert_eq!(accounts[0].domain.as_str(), "kukka-0001.test");
        assert_eq!(accounts[0].email, "owner@kukka-0001.test");
        assert_eq!(accounts[0].owner, "root");
        assert_eq!(accounts[2].addon_domains[0].as_str(), "kukka-0003-shop.test");
        assert_eq!(accounts.iter().filter(|a| !a.addon_domains.is_empty()).count(), 6);
        let resold: Vec<_> = accounts.iter().filter(|a| a.owner != "root").collect();
        assert_eq!(resold.len(), 4);
        assert!(resold.iter().all(|a| a.owner == "kukka0001"));
        assert!(accounts.iter().all(|a| (1..=50).contains(&a.disk_mb)));
        let sizes: std::collections::BTreeSet<_> = accounts.iter().map(|a| a.disk_mb).collect();
        assert!(sizes.len() > 10, "sizes vary: {sizes:?}");
        assert!(accounts.iter().all(|a| a.fail_restore.is_none()));
        // Parked domains and subdomains are added without changing anything above.
        assert_eq!(accounts[3].parked_domains[0].as_str(), "kukka-0004-alias.test");
        assert_eq!(accounts.iter().filter(|a| !a.parked_domains.is_empty()).count(), 5);
        assert_eq!(accounts[4].sub_domains[0].as_str(), "blog.kukka-0005.test");
        assert_eq!(accounts.iter().filter(|a| !a.sub_domains.is_empty()).count(), 4);
        assert!(accounts.iter().all(|a| a.dedicated_ip.is_none() && a.listaccts_overrides.is_empty()));
        assert_eq!(accounts[19].all_domains().count(), 3, "main, parked and sub");

        let mut quirky = accounts.clone();
        add_contact_quirks(&mut quirky);
        assert_eq!(quirky[9].email, "");
        assert_eq!(quirky[19].email, "owner.at.kukka-0020.test");
        assert_eq!(quirky.iter().filter(|a| a.email.starts_with("owner@")).count(), 18);
    }

    #[test]
    fn odd_prefixes_still_give_valid_names() {
        for prefix in ["", "9lives", "Very-Long_Prefix.With.Dots", "ÄÄ"] {
            let accounts = generate_accounts(12_000, prefix);
            assert_eq!(accounts.len(), 12_000);
            let last = &accounts[11_999];
            assert!(last.user.as_str().len() <= 16, "{}", last.user);
        }
    }
}
