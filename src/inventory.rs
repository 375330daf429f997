//! The read-only inventory of one cPanel host, and the checks of a target host against it.
//!
//! [`inventory`] asks the host's WHM API for `listaccts`, `get_domain_info`, `listresellers`,
//! `listpkgs`, `listips` and `version` at once and joins the answers into one [`Inventory`]:
//! the host's facts, every account with every domain it has (main, addon, parked, sub) and its
//! document root, the resellers with the accounts each owns, the packages, and the accounts on
//! a dedicated IP. WHM answers are taken as the docs show them, quirks included: an odd field
//! (a contact address that is not an address, a number sent as a string, an entry the WHM
//! client refused) is flagged on its item with the reason, and the inventory goes on.
//!
//! [`check_target`] looks at the target host before anything moves: user names and domains
//! that already exist there, free disk on the partition accounts are restored to, and the
//! cPanel versions. Nothing is changed on either host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::names::{AccountName, DomainName};
use crate::whm::{AccountWithNotes, WhmClient, WhmDomain, WhmError, WhmIp, WhmPackage, WhmPartition};

/// The inventory of one host, as `siirto inventory --json` prints it.
///
/// JSON schema (every key always present; `null` where a value is unknown):
///
/// ```text
/// {
///   "host":      {"version": "11.118.0.5", "shared_ip": "192.0.2.10" | null,
///                 "dedicated_ips": ["192.0.2.11", …]},
///   "counts":    {"accounts": 40, "domains": 63,
///                 "domains_by_kind": {"main": 40, "addon": 13, "parked": 10, "sub": 8},
///                 "resellers": 1, "packages": 4, "dedicated_ip_accounts": 2,
///                 "suspended_accounts": 0, "flagged": 5},
///   "accounts":  [{"user": "kukka0001", "main_domain": "kukka-0001.test", "owner": "root",
///                  "package": "default", "contact_email": "owner@kukka-0001.test" | null,
///                  "contact_email_valid": true, "disk_used_mb": 38, "partition": "home",
///                  "suspended": false, "ip": "192.0.2.10" | null, "on_dedicated_ip": false,
///                  "domains": [{"domain": "kukka-0001.test",
///                               "kind": "main" | "addon" | "parked" | "sub" | "unknown",
///                               "docroot": "/home/kukka0001/public_html" | null,
///                               "parent_domain": "kukka-0001.test" | null}],
///                  "flags": ["no contact e-mail address", …]}],
///   "resellers": [{"user": "kukka0001", "accounts": ["kukka0005", …]}],
///   "packages":  [{"name": "pro", "quota_mb": 10240 | null, "bandwidth_mb": null,
///                  "feature_list": "default" | null, "dedicated_ip": false, "accounts": 10}],
///   "flagged":   [{"item": "account kukka0010", "reason": "no contact e-mail address"}]
/// }
/// ```
///
/// `flagged` repeats every account's `flags` and adds the items that belong to no account
/// (entries the WHM client refused, domains of unknown owners, unknown packages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Facts about the host itself.
    pub host: HostFacts,
    /// How many of each thing.
    pub counts: Counts,
    /// Every account, in user order.
    pub accounts: Vec<Account>,
    /// Every reseller (from `listresellers`, plus any other owner `listaccts` names), in
    /// name order.
    pub resellers: Vec<Reseller>,
    /// Every package, in name order.
    pub packages: Vec<Package>,
    /// Every flagged item with the reason.
    pub flagged: Vec<Flag>,
}

/// Facts about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The cPanel & WHM version (`version`).
    pub version: String,
    /// The server's main shared IPv4 address (`listips` `mainaddr` 1, else the first shared one).
    pub shared_ip: Option<Ipv4Addr>,
    /// The addresses `listips` marks `dedicated` 1.
    pub dedicated_ips: Vec<Ipv4Addr>,
}

/// Counts for the summary line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Accounts.
    pub accounts: usize,
    /// Domains of every kind.
    pub domains: usize,
    /// Domains per kind (`main`, `addon`, `parked`, `sub`, `unknown`).
    pub domains_by_kind: BTreeMap<String, usize>,
    /// Resellers.
    pub resellers: usize,
    /// Packages.
    pub packages: usize,
    /// Accounts on a dedicated IP.
    pub dedicated_ip_accounts: usize,
    /// Suspended accounts.
    pub suspended_accounts: usize,
    /// Flagged items.
    pub flagged: usize,
}

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The cPanel user.
    pub user: AccountName,
    /// The main domain.
    pub main_domain: DomainName,
    /// The reseller that owns it, or `root`.
    pub owner: String,
    /// The package (`plan`).
    pub package: String,
    /// The contact address as WHM sent it; `None` if there is none.
    pub contact_email: Option<String>,
    /// Whether `contact_email` is a usable address.
    pub contact_email_valid: bool,
    /// Disk used, MB.
    pub disk_used_mb: u64,
    /// The home partition (`home`, `home2`, …).
    pub partition: String,
    /// Suspended or not.
    pub suspended: bool,
    /// The IPv4 address of the main domain.
    pub ip: Option<Ipv4Addr>,
    /// The account's address is a dedicated one (`listips` `dedicated` 1, not the shared IP):
    /// it moves last and is held for an operator, who gives the target address.
    pub on_dedicated_ip: bool,
    /// Every domain of the account, main domain first, then by kind and name.
    pub domains: Vec<Domain>,
    /// Why the account is flagged, one reason each; empty when nothing is odd.
    pub flags: Vec<String>,
}

/// The kind of a domain (`get_domain_info` `domain_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainKind {
    /// The account's main domain.
    Main,
    /// An addon domain (its own site in its own document root).
    Addon,
    /// A parked domain (alias): serves the main domain's site.
    Parked,
    /// A subdomain.
    Sub,
    /// A `domain_type` the docs do not name (flagged).
    Unknown,
}

impl DomainKind {
    /// Parses `domain_type`.
    pub fn parse(domain_type: &str) -> Self {
        match domain_type {
            "main" => Self::Main,
            "addon" => Self::Addon,
            "parked" => Self::Parked,
            "sub" => Self::Sub,
            _ => Self::Unknown,
        }
    }

    /// The name as printed and in JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Addon => "addon",
            Self::Parked => "parked",
            Self::Sub => "sub",
            Self::Unknown => "unknown",
        }
    }
}

/// One domain of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// The domain.
    pub domain: DomainName,
    /// Its kind.
    pub kind: DomainKind,
    /// Its document root; `None` when `get_domain_info` did not list it.
    pub docroot: Option<String>,
    /// The domain it belongs to (addon, parked and sub domains).
    pub parent_domain: Option<DomainName>,
}

/// A reseller and the accounts it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reseller {
    /// The reseller's user name.
    pub user: String,
    /// The accounts it owns, in user order.
    pub accounts: Vec<AccountName>,
}

/// A package and how many accounts use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// The package name.
    pub name: String,
    /// Disk quota, MB; `None` = unlimited.
    pub quota_mb: Option<u64>,
    /// Bandwidth limit, MB; `None` = unlimited.
    pub bandwidth_mb: Option<u64>,
    /// The feature list.
    pub feature_list: Option<String>,
    /// Accounts of this package get a dedicated IP.
    pub dedicated_ip: bool,
    /// Accounts using it.
    pub accounts: usize,
}

/// A flagged item and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// What is flagged: `account USER`, `domain NAME`, `package NAME`, `listaccts entry`,
    /// `get_domain_info entry`.
    pub item: String,
    /// Why, in a sentence.
    pub reason: String,
}

/// Inventories one host: six WHM calls at once, joined (see the module doc). Fails only if a
/// call fails; odd items are flagged instead.
pub async fn inventory(whm: &WhmClient) -> Result<Inventory, WhmError> {
    let (accounts, domains, resellers, packages, ips, version) = tokio::try_join!(
        whm.list_accounts_with_notes(),
        whm.domain_info(),
        whm.list_resellers(),
        whm.list_packages(),
        whm.list_ips(),
        whm.version(),
    )?;
    Ok(join(Answers { accounts, domains, resellers, packages, ips, version }))
}

/// What the six inventory calls answered.
#[derive(Debug, Clone)]
pub struct Answers {
    /// `listaccts`.
    pub accounts: crate::whm::Listing<AccountWithNotes>,
    /// `get_domain_info`.
    pub domains: crate::whm::Listing<WhmDomain>,
    /// `listresellers`.
    pub resellers: Vec<AccountName>,
    /// `listpkgs`.
    pub packages: Vec<WhmPackage>,
    /// `listips`.
    pub ips: Vec<WhmIp>,
    /// `version`.
    pub version: String,
}

/// Joins the answers into an inventory (pure; [`inventory`] does the calls).
pub fn join(answers: Answers) -> Inventory {
    let Answers {
        accounts: listed,
        domains: domain_listing,
        resellers: listed_resellers,
        packages,
        ips,
        version,
    } = answers;
    let shared_ip =
        ips.iter().find(|ip| ip.mainaddr).or_else(|| ips.iter().find(|ip| !ip.dedicated)).map(|ip| ip.ip);
    let dedicated_ips: Vec<Ipv4Addr> = ips.iter().filter(|ip| ip.dedicated).map(|ip| ip.ip).collect();
    let mut flagged = Vec::new();

    for rejected in &listed.rejected {
        flagged.push(Flag {
            item: "listaccts entry".to_owned(),
            reason: format!("{}: {}", rejected.reason, rejected.raw),
        });
    }
    for rejected in &domain_listing.rejected {
        flagged.push(Flag {
            item: "get_domain_info entry".to_owned(),
            reason: format!("{}: {}", rejected.reason, rejected.raw),
        });
    }

    let mut domains_of: BTreeMap<AccountName, Vec<&WhmDomain>> = BTreeMap::new();
    let users: BTreeSet<&AccountName> = listed.items.iter().map(|a| &a.account.user).collect();
    for domain in &domain_listing.items {
        if users.contains(&domain.user) {
            domains_of.entry(domain.user.clone()).or_default().push(domain);
        } else {
            flagged.push(Flag {
                item: format!("domain {}", domain.domain),
                reason: format!("owned by {}, which listaccts does not list", domain.user),
            });
        }
    }

    let package_names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let mut accounts = Vec::new();
    for entry in &listed.items {
        let whm = &entry.account;
        let mut flags = Vec::new();
        let contact_email_valid = match &entry.email_raw {
            None => {
                flags.push("no contact e-mail address".to_owned());
                false
            }
            Some(raw) => {
                let valid = crate::contracts::valid_email(raw).is_some();
                if !valid {
                    flags.push(format!("contact e-mail {raw:?} is not a valid address"));
                }
                valid
            }
        };
        flags.extend(entry.notes.iter().cloned());
        if !whm.plan.is_empty() && !package_names.contains(whm.plan.as_str()) {
            flags.push(format!("package {:?} is not in listpkgs", whm.plan));
        }
        let on_dedicated_ip = whm.ip.is_some_and(|ip| dedicated_ips.contains(&ip) && Some(ip) != shared_ip);

        let mut domains: Vec<Domain> = Vec::new();
        for d in domains_of.get(&whm.user).into_iter().flatten() {
            let kind = DomainKind::parse(&d.domain_type);
            if kind == DomainKind::Unknown {
                flags.push(format!("domain {} has the unknown domain_type {:?}", d.domain, d.domain_type));
            }
            if domains.iter().any(|known| known.domain == d.domain) {
                continue;
            }
            domains.push(Domain {
                domain: d.domain.clone(),
                kind,
                docroot: Some(d.docroot.clone()).filter(|r| !r.is_empty()),
                parent_domain: d.parent_domain.clone().filter(|_| kind != DomainKind::Main),
            });
        }
        if !domains.iter().any(|d| d.domain == whm.domain) {
            flags.push(format!("main domain {} is not in get_domain_info", whm.domain));
            domains.push(Domain {
                domain: whm.domain.clone(),
                kind: DomainKind::Main,
                docroot: None,
                parent_domain: None,
            });
        }
        domains.sort_by(|a, b| {
            (a.domain != whm.domain, a.kind, &a.domain).cmp(&(b.domain != whm.domain, b.kind, &b.domain))
        });

        for reason in &flags {
            flagged.push(Flag { item: format!("account {}", whm.user), reason: reason.clone() });
        }
        accounts.push(Account {
            user: whm.user.clone(),
            main_domain: whm.domain.clone(),
            owner: whm.owner.clone(),
            package: whm.plan.clone(),
            contact_email: entry.email_raw.clone(),
            contact_email_valid,
            disk_used_mb: whm.disk_used_mb,
            partition: whm.partition.clone(),
            suspended: whm.suspended,
            ip: whm.ip,
            on_dedicated_ip,
            domains,
            flags,
        });
    }
    accounts.sort_by(|a, b| a.user.cmp(&b.user));

    let mut owned: BTreeMap<String, Vec<AccountName>> =
        listed_resellers.iter().map(|r| (r.to_string(), Vec::new())).collect();
    for account in &accounts {
        if account.owner != "root" {
            owned.entry(account.owner.clone()).or_default().push(account.user.clone());
        }
    }
    let listed_names: BTreeSet<String> = listed_resellers.iter().map(ToString::to_string).collect();
    for owner in owned.keys().filter(|o| !listed_names.contains(*o)) {
        flagged.push(Flag {
            item: format!("reseller {owner}"),
            reason: "owns accounts but listresellers does not list it".to_owned(),
        });
    }
    let resellers: Vec<Reseller> =
        owned.into_iter().map(|(user, accounts)| Reseller { user, accounts }).collect();

    let mut packages: Vec<Package> = packages
        .into_iter()
        .map(|p| Package {
            accounts: accounts.iter().filter(|a| a.package == p.name).count(),
            name: p.name,
            quota_mb: p.quota_mb,
            bandwidth_mb: p.bandwidth_mb,
            feature_list: p.feature_list,
            dedicated_ip: p.dedicated_ip,
        })
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));

    let mut domains_by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for domain in accounts.iter().flat_map(|a| &a.domains) {
        *domains_by_kind.entry(domain.kind.name().to_owned()).or_default() += 1;
    }
    let counts = Counts {
        accounts: accounts.len(),
        domains: domains_by_kind.values().sum(),
        domains_by_kind,
        resellers: resellers.len(),
        packages: packages.len(),
        dedicated_ip_accounts: accounts.iter().filter(|a| a.on_dedicated_ip).count(),
        suspended_accounts: accounts.iter().filter(|a| a.suspended).count(),
        flagged: flagged.len(),
    };
    Inventory {
        host: HostFacts { version, shared_ip, dedicated_ips },
        counts,
        accounts,
        resellers,
        packages,
        flagged,
    }
}

// ---------------------------------------------------------------------------------------------
// Target checks

/// What the target host says about moving the inventoried accounts there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetChecks {
    /// Source accounts whose user name is already an account on the target.
    pub user_clashes: Vec<UserClash>,
    /// Source domains that already exist on the target.
    pub domain_clashes: Vec<DomainClash>,
    /// Free disk on the target against what the accounts need.
    pub disk: DiskCheck,
    /// The two hosts' versions.
    pub version: VersionCheck,
}

impl TargetChecks {
    /// True when nothing stands in the way: no clash, enough disk (or unknown), and the target
    /// is not older than the source.
    pub fn all_clear(&self) -> bool {
        self.user_clashes.is_empty()
            && self.domain_clashes.is_empty()
            && self.disk.enough != Some(false)
            && self.version.verdict != VersionVerdict::TargetOlder
    }
}

/// A user name that exists on both hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClash {
    /// The user name.
    pub user: AccountName,
    /// The main domain of the target's account of that name.
    pub target_domain: DomainName,
}

/// A domain that exists on both hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainClash {
    /// The domain.
    pub domain: DomainName,
    /// Its account on the source.
    pub source_user: AccountName,
    /// Its account on the target.
    pub target_user: AccountName,
}

/// Free disk on the target (`getdiskusage`) against the accounts' sizes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCheck {
    /// The sum of the accounts' `diskused`, MB.
    pub accounts_total_mb: u64,
    /// What a transfer needs free: the total, plus twice the largest account and 1 GB (the
    /// archive and its unpacked copy exist at once; the `pkgacct` docs ask for 2× the largest
    /// account + 1 GB free).
    pub needed_mb: u64,
    /// The partition checked: the one mounted at `/home`, else the one holding `/home` (`/`).
    pub mount: Option<String>,
    /// Its available space, MB.
    pub available_mb: Option<u64>,
    /// Whether that is enough; `None` when the target reports no such partition.
    pub enough: Option<bool>,
}

/// How the target's version compares with the source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionVerdict {
    /// The same major version (`11.118`).
    SameMajor,
    /// The target is newer: transfers work.
    TargetNewer,
    /// The target is older: cPanel restores of newer archives may fail; upgrade it first.
    TargetOlder,
    /// A version could not be read.
    Unknown,
}

/// The two versions and the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCheck {
    /// The source's version.
    pub source: String,
    /// The target's version.
    pub target: String,
    /// How they compare.
    pub verdict: VersionVerdict,
}

/// Checks a target host against a source inventory: `listaccts` (user clashes; one call
/// rather than `validate_system_user` per user), `get_domain_info` and the accounts' main
/// domains (domain clashes), `getdiskusage` (free disk) and `version`, all at once.
pub async fn check_target(source: &Inventory, target: &WhmClient) -> Result<TargetChecks, WhmError> {
    let (accounts, domains, partitions, version) = tokio::try_join!(
        target.list_accounts(),
        target.domain_info(),
        target.disk_partitions(),
        target.version(),
    )?;
    let mut target_domains: BTreeMap<DomainName, AccountName> = BTreeMap::new();
    for account in &accounts.items {
        target_domains.insert(account.domain.clone(), account.user.clone());
    }
    for domain in domains.items {
        target_domains.entry(domain.domain).or_insert(domain.user);
    }
    let target_users: BTreeMap<&AccountName, &DomainName> =
        accounts.items.iter().map(|a| (&a.user, &a.domain)).collect();

    let user_clashes = source
        .accounts
        .iter()
        .filter_map(|a| {
            target_users
                .get(&a.user)
                .map(|domain| UserClash { user: a.user.clone(), target_domain: (*domain).clone() })
        })
        .collect();
    let domain_clashes = source
        .accounts
        .iter()
        .flat_map(|a| a.domains.iter().map(move |d| (a, d)))
        .filter_map(|(a, d)| {
            target_domains.get(&d.domain).map(|owner| DomainClash {
                domain: d.domain.clone(),
                source_user: a.user.clone(),
                target_user: owner.clone(),
            })
        })
        .collect();
    Ok(TargetChecks {
        user_clashes,
        domain_clashes,
        disk: disk_check(source, &partitions),
        version: VersionCheck {
            verdict: compare_versions(&source.host.version, &version),
            source: source.host.version.clone(),
            target: version,
        },
    })
}

/// The disk check (pure).
pub fn disk_check(source: &Inventory, partitions: &[WhmPartition]) -> DiskCheck {
    let accounts_total_mb: u64 = source.accounts.iter().map(|a| a.disk_used_mb).sum();
    let largest = source.accounts.iter().map(|a| a.disk_used_mb).max().unwrap_or(0);
    let needed_mb = accounts_total_mb + 2 * largest + 1024;
    let partition =
        partitions.iter().find(|p| p.mount == "/home").or_else(|| partitions.iter().find(|p| p.mount == "/"));
    let available_mb = partition.map(|p| p.available_kib / 1024);
    DiskCheck {
        accounts_total_mb,
        needed_mb,
        mount: partition.map(|p| p.mount.clone()),
        available_mb,
        enough: available_mb.map(|free| free >= needed_mb),
    }
}

/// Compares cPanel versions `11.MAJOR.minor.build` by their numeric parts (pure).
pub fn compare_versions(source: &str, target: &str) -> VersionVerdict {
    let parts = |v: &str| -> Option<Vec<u64>> { v.trim().split('.').map(|p| p.parse().ok()).collect() };
    let (Some(s), Some(t)) = (parts(source), parts(target)) else {
        return VersionVerdict::Unknown;
    };
    if s.len() < 2 || t.len() < 2 {
        return VersionVerdict::Unknown;
    }
    match t[..2].cmp(&s[..2]) {
        std::cmp::Ordering::Equal => {
            if t < s {
                VersionVerdict::TargetOlder
            } else {
                VersionVerdict::SameMajor
            }
        }
        std::cmp::Ordering::Greater => VersionVerdict::TargetNewer,
        std::cmp::Ordering::Less => VersionVerdict::TargetOlder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_their_numbers() {
        let cases = [
            ("11.118.0.5", "11.118.0.5", VersionVerdict::SameMajor),
            ("11.118.0.5", "11.118.0.9", VersionVerdict::SameMajor),
            ("11.118.0.9", "11.118.0.5", VersionVerdict::TargetOlder),
            ("11.110.0.17", "11.118.0.5", VersionVerdict::TargetNewer),
            ("11.118.0.5", "11.94.0.1", VersionVerdict::TargetOlder),
            ("11.118.0.5", "eleven", VersionVerdict::Unknown),
            ("", "11.118.0.5", VersionVerdict::Unknown),
        ];
        for (source, target, verdict) in cases {
            assert_eq!(compare_versions(source, target), verdict, "{source} → {target}");
        }
    }

    #[test]
    fn domain_kinds_parse() {
        for (text, kind) in [
            ("main", DomainKind::Main),
            ("addon", DomainKind::Addon),
            ("parked", DomainKind::Parked),
            ("sub", DomainKind::Sub),
            ("alias", DomainKind::Unknown),
        ] {
            assert_eq!(DomainKind::parse(text), kind);
        }
    }
}
