//! Reconciliation: the server's accounts and domains against the contracts, each account and
//! domain in one bucket with how it was matched, grouped by reseller.

use super::*;

// ---------------------------------------------------------------------------------------------
// Reconciliation.

/// The inventory of one source server, as reconciliation needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInventory {
    /// Every account on the server.
    pub accounts: Vec<InventoryAccount>,
}

/// One account of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryAccount {
    /// The cPanel user.
    pub user: AccountName,
    /// Its main domain.
    pub main_domain: DomainName,
    /// All its domains (main, addon, parked, sub); the main domain is included even if absent here.
    pub domains: Vec<DomainName>,
    /// The contact e-mail WHM has for it, as WHM gives it (may be invalid).
    pub contact_email: Option<String>,
    /// The WHM owner (a reseller, or `root`).
    pub owner: Option<String>,
}

/// Where the e-mails of a matched item come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailSource {
    /// The contract's contact e-mails.
    Contract,
    /// The contract had no usable e-mail; the account's WHM contact e-mail is used.
    Whm,
}

/// Through which contract service an item matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "through", content = "name")]
pub enum MatchedVia {
    /// The account's own cPanel user is a contract service.
    User,
    /// The domain itself is a contract service (for an account: one of its domains).
    Domain(DomainName),
    /// A domain matched through the account it belongs to.
    Account(AccountName),
}

/// The one bucket an account or domain is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "bucket")]
pub enum Bucket {
    /// On this server and the contract says so (or names no server), with usable e-mails.
    Matched {
        /// The customer id.
        customer_id: String,
        /// The customer's name.
        name: String,
        /// Preferred language.
        language: Option<String>,
        /// The addresses notices go to.
        emails: Vec<String>,
        /// Where those addresses come from.
        email_source: EmailSource,
        /// Through which service it matched.
        via: MatchedVia,
        /// The reseller per the contract.
        reseller: Option<String>,
    },
    /// On this server, but no contract names it (nor, for a domain, its account).
    OnServerNoContract,
    /// A contract says it is on this server; it is not.
    ContractNamesThisServerButMissing {
        /// The customer id.
        customer_id: String,
        /// The customer's name.
        name: String,
        /// The server as the contract spells it.
        server: String,
    },
    /// On this server, but its contract names another server.
    ContractNamesAnotherServer {
        /// The customer id.
        customer_id: String,
        /// The customer's name.
        name: String,
        /// The server as the contract spells it.
        server: String,
        /// Our host short name for it, when it is one of ours; `None` for an unknown server.
        host: Option<String>,
        /// Through which service.
        via: MatchedVia,
    },
    /// Matched, but neither the contract nor WHM gives a usable e-mail: notices cannot be sent.
    ContactMissingOrInvalid {
        /// The customer id.
        customer_id: String,
        /// The customer's name.
        name: String,
        /// Preferred language.
        language: Option<String>,
        /// Through which service it matched.
        via: MatchedVia,
        /// The reseller per the contract.
        reseller: Option<String>,
        /// What is missing or invalid, in words.
        reason: String,
    },
}

impl Bucket {
    /// The bucket's name as in the JSON (`matched`, `on_server_no_contract`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Bucket::Matched { .. } => "matched",
            Bucket::OnServerNoContract => "on_server_no_contract",
            Bucket::ContractNamesThisServerButMissing { .. } => "contract_names_this_server_but_missing",
            Bucket::ContractNamesAnotherServer { .. } => "contract_names_another_server",
            Bucket::ContactMissingOrInvalid { .. } => "contact_missing_or_invalid",
        }
    }

    /// The customer whose contract placed the item here, if any.
    pub fn customer_id(&self) -> Option<&str> {
        match self {
            Bucket::Matched { customer_id, .. }
            | Bucket::ContractNamesThisServerButMissing { customer_id, .. }
            | Bucket::ContractNamesAnotherServer { customer_id, .. }
            | Bucket::ContactMissingOrInvalid { customer_id, .. } => Some(customer_id),
            Bucket::OnServerNoContract => None,
        }
    }
}

/// An account and its bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountEntry {
    /// The cPanel user.
    pub user: AccountName,
    /// Whether the account is on this server (false only for `ContractNamesThisServerButMissing`).
    pub on_server: bool,
    /// Its bucket.
    #[serde(flatten)]
    pub bucket: Bucket,
}

/// A domain and its bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEntry {
    /// The domain.
    pub domain: DomainName,
    /// The account it belongs to on this server (`None` when it is not on this server).
    pub account: Option<AccountName>,
    /// Its bucket.
    #[serde(flatten)]
    pub bucket: Bucket,
}

/// How many items are in each bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketCounts {
    /// `Matched`.
    pub matched: usize,
    /// `OnServerNoContract`.
    pub on_server_no_contract: usize,
    /// `ContractNamesThisServerButMissing`.
    pub contract_names_this_server_but_missing: usize,
    /// `ContractNamesAnotherServer`.
    pub contract_names_another_server: usize,
    /// `ContactMissingOrInvalid`.
    pub contact_missing_or_invalid: usize,
}

impl BucketCounts {
    fn add(&mut self, bucket: &Bucket) {
        match bucket {
            Bucket::Matched { .. } => self.matched += 1,
            Bucket::OnServerNoContract => self.on_server_no_contract += 1,
            Bucket::ContractNamesThisServerButMissing { .. } => {
                self.contract_names_this_server_but_missing += 1
            }
            Bucket::ContractNamesAnotherServer { .. } => self.contract_names_another_server += 1,
            Bucket::ContactMissingOrInvalid { .. } => self.contact_missing_or_invalid += 1,
        }
    }

    /// All items counted.
    pub fn total(&self) -> usize {
        self.matched
            + self.on_server_no_contract
            + self.contract_names_this_server_but_missing
            + self.contract_names_another_server
            + self.contact_missing_or_invalid
    }
}

/// The accounts of one reseller (per the contract, else the WHM owner) and their buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResellerGroup {
    /// The reseller.
    pub reseller: String,
    /// Its accounts, sorted.
    pub accounts: Vec<AccountName>,
    /// Their buckets.
    pub counts: BucketCounts,
}

/// The reconciliation of one server: every account and domain in exactly one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// The host short name reconciled.
    pub host: String,
    /// The contract source.
    pub origin: String,
    /// Accounts, sorted by user: every account on the server, then those only contracts name.
    pub accounts: Vec<AccountEntry>,
    /// Domains, sorted by name: every domain on the server and those only contracts name.
    pub domains: Vec<DomainEntry>,
    /// Account counts per bucket.
    pub account_counts: BucketCounts,
    /// Domain counts per bucket.
    pub domain_counts: BucketCounts,
    /// Per reseller: the contract's reseller of the account's customer, else the WHM owner when
    /// it is not `root` (accounts with neither are not listed here).
    pub resellers: Vec<ResellerGroup>,
    /// The contract source's row issues, carried into the report.
    pub issues: Vec<RowIssue>,
}

/// Reconciles the contracts with one server's inventory. Pure: no I/O, nothing written back.
///
/// An account matches through its own cPanel user, else its main domain, else the first of its
/// other domains that a contract names. A domain matches through its own contract service, else
/// through its account. A service whose server is one of `host`'s spellings (or empty) matches;
/// one naming any other server — ours or unknown — puts the item in `ContractNamesAnotherServer`.
/// E-mails: the contract's valid ones, else the account's WHM contact if valid, else
/// `ContactMissingOrInvalid`. Services naming `host` that are not on it are listed as
/// `ContractNamesThisServerButMissing`.
pub fn reconcile(
    contracts: &ContractSet,
    inventory: &ServerInventory,
    host: &str,
    server_names: &ServerNames,
) -> Reconciliation {
    let mut by_account: HashMap<&AccountName, &Service> = HashMap::new();
    let mut by_domain: HashMap<&DomainName, &Service> = HashMap::new();
    for service in &contracts.services {
        match &service.target {
            ServiceTarget::Account(user) => {
                by_account.entry(user).or_insert(service);
            }
            ServiceTarget::Domain(domain) => {
                by_domain.entry(domain).or_insert(service);
            }
        }
    }
    let ctx = Judge { contracts, host, server_names };

    let mut accounts: BTreeMap<AccountName, AccountEntry> = BTreeMap::new();
    let mut domains: BTreeMap<DomainName, DomainEntry> = BTreeMap::new();
    let mut owners: HashMap<AccountName, Option<String>> = HashMap::new();
    for account in &inventory.accounts {
        if accounts.contains_key(&account.user) {
            continue;
        }
        let mut own_domains: Vec<&DomainName> = vec![&account.main_domain];
        let mut others: Vec<&DomainName> =
            account.domains.iter().filter(|d| **d != account.main_domain).collect();
        others.sort();
        others.dedup();
        own_domains.extend(others);

        let account_service = by_account.get(&account.user).map(|s| (*s, MatchedVia::User)).or_else(|| {
            own_domains.iter().find_map(|d| by_domain.get(d).map(|s| (*s, MatchedVia::Domain((*d).clone()))))
        });
        let account_bucket = match account_service {
            Some((service, via)) => ctx.judge(service, via, account.contact_email.as_deref()),
            None => Bucket::OnServerNoContract,
        };
        for domain in own_domains {
            if domains.contains_key(domain) {
                continue;
            }
            let bucket = match by_domain.get(domain) {
                Some(service) => {
                    ctx.judge(service, MatchedVia::Domain(domain.clone()), account.contact_email.as_deref())
                }
                None => through_account(&account_bucket, &account.user),
            };
            domains.insert(
                domain.clone(),
                DomainEntry { domain: domain.clone(), account: Some(account.user.clone()), bucket },
            );
        }
        owners.insert(account.user.clone(), account.owner.clone());
        accounts.insert(
            account.user.clone(),
            AccountEntry { user: account.user.clone(), on_server: true, bucket: account_bucket },
        );
    }

    // Services that say they are here but are not.
    for service in &contracts.services {
        let Some(server) = &service.server else {
            continue;
        };
        if server_names.host_of(server) != Some(host) {
            continue;
        }
        let (customer_id, name) = ctx.customer_name(service);
        let bucket = Bucket::ContractNamesThisServerButMissing { customer_id, name, server: server.clone() };
        match &service.target {
            ServiceTarget::Account(user) => {
                accounts.entry(user.clone()).or_insert_with(|| AccountEntry {
                    user: user.clone(),
                    on_server: false,
                    bucket,
                });
            }
            ServiceTarget::Domain(domain) => {
                domains.entry(domain.clone()).or_insert_with(|| DomainEntry {
                    domain: domain.clone(),
                    account: None,
                    bucket,
                });
            }
        }
    }

    let mut account_counts = BucketCounts::default();
    let mut groups: BTreeMap<String, ResellerGroup> = BTreeMap::new();
    for entry in accounts.values() {
        account_counts.add(&entry.bucket);
        let whm_owner = owners.get(&entry.user).cloned().flatten().filter(|o| !o.is_empty() && o != "root");
        // The contract's reseller (whatever the bucket), else the WHM owner.
        let reseller = entry
            .bucket
            .customer_id()
            .and_then(|id| contracts.customers.get(id))
            .and_then(|customer| customer.reseller.clone())
            .or(whm_owner);
        if let Some(reseller) = reseller {
            let group = groups.entry(reseller.clone()).or_insert_with(|| ResellerGroup {
                reseller,
                accounts: Vec::new(),
                counts: BucketCounts::default(),
            });
            group.accounts.push(entry.user.clone());
            group.counts.add(&entry.bucket);
        }
    }
    let mut domain_counts = BucketCounts::default();
    for entry in domains.values() {
        domain_counts.add(&entry.bucket);
    }
    Reconciliation {
        host: host.to_owned(),
        origin: contracts.origin.clone(),
        accounts: accounts.into_values().collect(),
        domains: domains.into_values().collect(),
        account_counts,
        domain_counts,
        resellers: groups.into_values().collect(),
        issues: contracts.issues.clone(),
    }
}

/// A domain without its own contract service takes its account's bucket.
pub(super) fn through_account(account_bucket: &Bucket, user: &AccountName) -> Bucket {
    let via = MatchedVia::Account(user.clone());
    match account_bucket.clone() {
        Bucket::Matched { customer_id, name, language, emails, email_source, reseller, .. } => {
            Bucket::Matched { customer_id, name, language, emails, email_source, via, reseller }
        }
        Bucket::ContractNamesAnotherServer { customer_id, name, server, host, .. } => {
            Bucket::ContractNamesAnotherServer { customer_id, name, server, host, via }
        }
        Bucket::ContactMissingOrInvalid { customer_id, name, language, reseller, reason, .. } => {
            Bucket::ContactMissingOrInvalid { customer_id, name, language, via, reseller, reason }
        }
        other @ (Bucket::OnServerNoContract | Bucket::ContractNamesThisServerButMissing { .. }) => other,
    }
}

struct Judge<'a> {
    contracts: &'a ContractSet,
    host: &'a str,
    server_names: &'a ServerNames,
}

impl Judge<'_> {
    fn customer_name(&self, service: &Service) -> (String, String) {
        let name =
            self.contracts.customers.get(&service.customer_id).map(|c| c.name.clone()).unwrap_or_default();
        (service.customer_id.clone(), name)
    }

    /// The bucket of an item on this server that `service` names.
    fn judge(&self, service: &Service, via: MatchedVia, whm_contact: Option<&str>) -> Bucket {
        let (customer_id, name) = self.customer_name(service);
        if let Some(server) = &service.server {
            let host = self.server_names.host_of(server);
            if host != Some(self.host) {
                return Bucket::ContractNamesAnotherServer {
                    customer_id,
                    name,
                    server: server.clone(),
                    host: host.map(str::to_owned),
                    via,
                };
            }
        }
        let customer = self.contracts.customers.get(&service.customer_id);
        let language = customer.and_then(|c| c.language.clone());
        let reseller = customer.and_then(|c| c.reseller.clone());
        let contract_emails = customer.map(|c| c.emails.clone()).unwrap_or_default();
        if !contract_emails.is_empty() {
            return Bucket::Matched {
                customer_id,
                name,
                language,
                emails: contract_emails,
                email_source: EmailSource::Contract,
                via,
                reseller,
            };
        }
        if let Some(email) = whm_contact.and_then(valid_email) {
            return Bucket::Matched {
                customer_id,
                name,
                language,
                emails: vec![email],
                email_source: EmailSource::Whm,
                via,
                reseller,
            };
        }
        let contract_part = match customer.map(|c| c.invalid_emails.as_slice()) {
            Some(invalid) if !invalid.is_empty() => {
                format!("the contract's e-mail {:?} is invalid", invalid.join(", "))
            }
            _ => "the contract has no e-mail".to_owned(),
        };
        let whm_part = match whm_contact.map(str::trim).filter(|c| !c.is_empty()) {
            Some(contact) => format!("the account's WHM contact {contact:?} is invalid"),
            None => "the account has no WHM contact e-mail".to_owned(),
        };
        Bucket::ContactMissingOrInvalid {
            customer_id,
            name,
            language,
            via,
            reseller,
            reason: format!("{contract_part} and {whm_part}"),
        }
    }
}
