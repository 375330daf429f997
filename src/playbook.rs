//! Playbooks (`playbooks/*.toml`): the reusable recipe of a migration, parsed once and validated.
//!
//! A playbook says when things happen relative to the cutover (announce, lower TTLs, settle,
//! the decommission stages), how hard to push (transfer threads, workers, DNS write
//! concurrency), how to verify and retry, and what the customers are told. It is parsed from
//! TOML into private raw structs (`deny_unknown_fields`, spans kept) and validated into
//! [`Playbook`]; every refusal is a [`ConfigError`] with file, line, column and field.
//! Omitted settings take the defaults of DESIGN.md §1 (announce 14 days before, lower TTLs a
//! day before to 60 s, decommission stages a month apart). Parsing is pure: no filesystem.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use minijinja::{Environment, UndefinedBehavior};

use crate::config::{ConfigError, Source, as_written};

/// A validated playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    /// Short name (`shared-hosting`): lowercase letters, digits and '-'.
    pub name: String,
    /// One-paragraph description for people.
    pub description: String,
    /// When each phase happens relative to the cutover.
    pub schedule: Schedule,
    /// TTL lowering and the cutover gate.
    pub dns: DnsPolicy,
    /// How the cPanel Transfer Tool is driven.
    pub transfer: TransferPolicy,
    /// How an account is checked on the target before its domains are repointed.
    pub verification: VerificationPolicy,
    /// Backoff for failed steps.
    pub retry: RetryPolicy,
    /// How much runs at once.
    pub concurrency: Concurrency,
    /// No mail lost: the routing switch at the repoint and the final delta sync.
    pub mail: MailPolicy,
    /// The customer notice templates.
    pub notices: Notices,
    /// The TOML text it was parsed from (stored with the migration, so it can be re-read).
    pub source_text: String,
}

/// Phase offsets relative to the cutover time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How long before the cutover the advance notice goes out.
    pub announce_before: Duration,
    /// How long before the cutover the TTLs are lowered.
    pub lower_ttl_before: Duration,
    /// How long after the cutover the normal TTLs are restored (the migration settles).
    pub settle_after: Duration,
    /// The decommission stages of the old server, in order (their `after` never decreases).
    pub decommission: Vec<DecommissionStage>,
    /// How often the operators are reminded of a decommission stage waiting for people.
    pub task_reminder_every: Duration,
    /// How long the old server's logs must show no traffic for an account's domains (web
    /// requests, local mail deliveries) before the account is removed, and for any migrated
    /// domain before the server is powered off.
    pub no_traffic_for: Duration,
}

/// One decommission stage of the old server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecommissionStage {
    /// What people call it ("suspend accounts").
    pub name: String,
    /// How long after the cutover it is due.
    pub after: Duration,
    /// What it does.
    pub action: StageAction,
    /// Whether a person does it and confirms it (`siirto ack`), rather than siirto itself.
    pub manual: bool,
}

/// What a decommission stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageAction {
    /// Suspend the moved accounts on the old server (reversible).
    SuspendAccounts,
    /// Remove the moved accounts from the old server.
    RemoveAccounts,
    /// Cancel the old server's cPanel licence (through the config's `[licence]` provider; a
    /// task for a person when there is none, or when the playbook marks it manual).
    CancelLicence,
    /// Power the old server off (over SSH, `hosts.X.ssh.power_off`; a task for a person when
    /// the host has no SSH access, or when the playbook marks it manual).
    PowerOff,
    /// Unrack the server and destroy its disks (a person).
    DestroyDisks,
}

impl StageAction {
    /// Whether only a person can do it: siirto has no adapter for it, so the stage must be manual.
    pub fn needs_a_person(self) -> bool {
        match self {
            StageAction::SuspendAccounts
            | StageAction::RemoveAccounts
            | StageAction::CancelLicence
            | StageAction::PowerOff => false,
            StageAction::DestroyDisks => true,
        }
    }

    /// The name used in playbooks (`suspend_accounts`).
    pub fn as_str(self) -> &'static str {
        match self {
            StageAction::SuspendAccounts => "suspend_accounts",
            StageAction::RemoveAccounts => "remove_accounts",
            StageAction::CancelLicence => "cancel_licence",
            StageAction::PowerOff => "power_off",
            StageAction::DestroyDisks => "destroy_disks",
        }
    }
}

/// TTL lowering and the cutover gate.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsPolicy {
    /// The TTL (seconds) records are lowered to before the cutover.
    pub short_ttl: u32,
    /// Extra wait on top of the old TTL after lowering, for clocks and slow caches.
    pub gate_margin: Duration,
    /// Replaces the computed TTL wait (old TTL + margin) — for the demo only, never production.
    pub gate_wait_override: Option<Duration>,
    /// The safety threshold (like octoDNS's): a repoint batch that would change more than this
    /// share of a zone's rrsets (0 < share ≤ 1) is refused and the account held. Zones with
    /// fewer than ten rrsets are exempt, as in octoDNS.
    pub max_change_share: f64,
    /// How often public DNS is asked whether a domain with external DNS shows the target yet.
    pub external_poll_interval: Duration,
    /// How often the customer of a domain with external DNS is reminded to repoint it.
    pub external_reminder_every: Duration,
    /// When the target has an IPv6 address and the source has none: give each name whose A
    /// record moves an AAAA record at the target (created at the repoint, gated by the zone's
    /// negative-caching TTL). Off by default: a site that never had IPv6 keeps none.
    pub create_aaaa: bool,
    /// The old and new servers share a DNS cluster: removing an account from the old server
    /// keeps its DNS zones (`removeacct keepdns=1`), which the new server's copies are.
    pub shared_cluster: bool,
}

/// How the cPanel Transfer Tool is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferPolicy {
    /// Accounts copied in parallel within a session (WHM `transfer_threads`).
    pub transfer_threads: u32,
    /// Accounts restored in parallel within a session (WHM `restore_threads`, ≤ 4 × transfer_threads).
    pub restore_threads: u32,
    /// How many accounts go into one transfer session.
    pub accounts_per_session: u32,
    /// How many times one account's transfer is attempted before it is held for an operator.
    pub max_attempts: u32,
    /// How often a running transfer session is polled.
    pub poll_interval: Duration,
}

/// How an account is verified on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationPolicy {
    /// Fetch each domain over HTTP from the target and compare with the source.
    pub http_check: bool,
    /// What to do when the target does not match.
    pub on_mismatch: OnMismatch,
    /// Time limit of one check.
    pub timeout: Duration,
}

/// What to do when verification finds a mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMismatch {
    /// Hold the account (and its domains stay on the old server) until an operator looks.
    Hold,
    /// Record the mismatch and repoint anyway.
    Proceed,
}

/// Backoff for failed steps: `base_delay × 2^attempt`, capped at `max_delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of one step before it is held for an operator.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// The longest delay between retries.
    pub max_delay: Duration,
}

/// What the final delta sync copies from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncScope {
    /// The account's mail directories (`~/mail`).
    Mail,
    /// The mail directories and the web root (`~/public_html`).
    MailAndWeb,
}

/// No mail lost: the source's mail routing at the repoint, the final delta sync after the old
/// TTL, and the check of the source's mail log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailPolicy {
    /// Switch each repointed domain's mail routing on the source to `remote` at the repoint, so
    /// mail still arriving there is relayed to the target.
    pub switch_routing: bool,
    /// Delta-sync each account from the source once the old TTL has passed since its repoint,
    /// and read the source's mail log; needs `ssh` for both hosts in the config.
    pub final_sync: bool,
    /// What the delta sync copies.
    pub sync: SyncScope,
    /// Delta syncs of one account before mail still landing on the source holds it.
    pub max_syncs: u32,
    /// How long after a delta sync the source's mail log is read (lets a queued delivery land).
    pub check_after: Duration,
}

/// How much runs at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    /// Jobs a daemon runs at once.
    pub workers: u32,
    /// Zone writes (PowerDNS PATCHes) in flight at once for this migration.
    pub dns_zone_writes: u32,
}

/// The notice templates, each kind in each language (`playbooks/templates/<language>/<kind>.txt`
/// and `.html`, built in), or the playbook's own `[notices.<kind>]` for every language where
/// the playbook may override it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notices {
    /// Sent once per customer when all of their accounts are on the new server (listing them
    /// all, with the records a customer on another DNS host must change): `[notices.completion]`.
    pub completion: Localized,
    /// Sent while a domain with external DNS still shows the old address, every
    /// `dns.external_reminder_every`: `[notices.reminder]`.
    pub reminder: Localized,
    /// Sent to every customer (once, listing all of their accounts) `schedule.announce_before`
    /// the cutover: `[notices.advance]`.
    pub advance: Localized,
    /// Sent to a customer when the first of their accounts enters its transfer (once, listing
    /// all of their accounts): `[notices.start]`.
    pub start: Localized,
    /// Sent to each reseller with the advance notices: a table of its end customers, their
    /// accounts, domains and what each must do, to forward: `[notices.reseller]`.
    pub reseller: Localized,
    /// Who is told when an account belongs to a reseller (`notices.reseller_customers`).
    pub reseller_customers: ResellerCustomers,
    /// Sent to customer service (config `mail.staff`) the day before the cutover: what moves,
    /// who must act themselves, who is held, where to watch (in the config's language).
    pub staff: Localized,
    /// Sent to operators (config `mail.operators`) when an account is held, with the reason.
    pub held: Localized,
    /// Sent to a customer already told the old date when the migration is rescheduled.
    pub correction: Localized,
    /// Sent to customer service when a customer's notice is refused for good or bounces.
    pub notice_failed: Localized,
    /// Sent to a customer whose account a decommission stage holds because public DNS still
    /// sends their domain to the old server, every `dns.external_reminder_every` while held:
    /// "your old account closes on DATE unless…".
    pub closing: Localized,
    /// Sent to the operators (config `mail.operators`) every `schedule.task_reminder_every`
    /// while a decommission stage waits for people: its open tasks and how to confirm them.
    pub task_reminder: Localized,
    /// How long after its due time a notice of each kind may still go out
    /// (`[notices.late_after]`): later, it is recorded as skipped (too late), never sent. Kinds
    /// not listed here (held, notice_failed: operators' own) have no limit.
    pub late_after: BTreeMap<&'static str, Duration>,
}

impl Notices {
    /// The lateness limit of notices of `kind`, if it has one.
    pub fn late_after(&self, kind: &str) -> Option<Duration> {
        self.late_after.get(kind).copied()
    }
}

/// Who is told when an account belongs to a reseller (`notices.reseller_customers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResellerCustomers {
    /// The reseller gets the roll-up and the notices of its customers' accounts, to pass on;
    /// its end customers get nothing from us (the default).
    Reseller,
    /// Each end customer is told as any other customer; no roll-up.
    Direct,
    /// The reseller gets the roll-up, and each end customer is told as well.
    Both,
}

impl ResellerCustomers {
    /// Whether the reseller gets a roll-up of its customers.
    pub fn rolls_up(self) -> bool {
        matches!(self, ResellerCustomers::Reseller | ResellerCustomers::Both)
    }

    /// Whether the end customers are told themselves.
    pub fn tells_customers(self) -> bool {
        matches!(self, ResellerCustomers::Direct | ResellerCustomers::Both)
    }
}

pub use crate::config::LANGUAGES;

/// A notice kind's template per language: the playbook's own for every language, or the
/// shipped one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Localized {
    /// The playbook's template, used whatever the language.
    pub playbook: Option<NoticeTemplate>,
    /// The shipped templates, by language (each of [`LANGUAGES`]).
    pub shipped: BTreeMap<&'static str, NoticeTemplate>,
}

impl Localized {
    /// The template for `language` (one of [`LANGUAGES`]; another gets English).
    pub fn for_language(&self, language: &str) -> &NoticeTemplate {
        self.playbook
            .as_ref()
            .or_else(|| self.shipped.get(language))
            .or_else(|| self.shipped.get("en"))
            .expect("the English template is shipped")
    }
}

/// A shipped template: the text file (its first line `Subject: …`, then the body) and the
/// HTML part.
fn shipped_template(text: &str, html: &str) -> NoticeTemplate {
    let (subject, body) = text.split_once('\n').expect("a shipped template has a subject line and a body");
    let subject = subject.strip_prefix("Subject: ").expect("a shipped template starts with `Subject: `");
    NoticeTemplate { subject: subject.to_owned(), body: body.to_owned(), html: Some(html.to_owned()) }
}

/// The shipped templates of a notice kind, by language: `playbooks/templates/<language>/<kind>.txt`,
/// built into the binary.
macro_rules! shipped {
    ($kind:literal) => {
        BTreeMap::from([
            (
                "en",
                shipped_template(
                    include_str!(concat!("../playbooks/templates/en/", $kind, ".txt")),
                    include_str!(concat!("../playbooks/templates/en/", $kind, ".html")),
                ),
            ),
            (
                "fi",
                shipped_template(
                    include_str!(concat!("../playbooks/templates/fi/", $kind, ".txt")),
                    include_str!(concat!("../playbooks/templates/fi/", $kind, ".html")),
                ),
            ),
        ])
    };
}

/// A customer's language as one of [`LANGUAGES`]: what the contract gives (`fi`, `FI`,
/// `suomi`, `Finnish`, `en-GB`, `English`), else `default`.
pub fn language_of(given: Option<&str>, default: &str) -> String {
    let given = given.map(|g| g.trim().to_ascii_lowercase()).unwrap_or_default();
    let known = [("fi", &["fi", "fin", "suomi", "finnish"][..]), ("en", &["en", "eng", "english"][..])];
    for (code, names) in known {
        if names.iter().any(|n| {
            given == *n || given.starts_with(&format!("{n}-")) || given.starts_with(&format!("{n}_"))
        }) {
            return code.to_owned();
        }
    }
    default.to_owned()
}

/// Renders one notice template with strict undefined variables, so a template that names a
/// variable the context lacks is an error, not an empty string in a customer's mail.
pub fn render(template: &str, context: &serde_json::Value) -> Result<String, minijinja::Error> {
    compiled("text", template, context).or_else(|_| {
        // The error as a template of its own names it (line and column in "notice").
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template("notice", template)?;
        env.get_template("notice")?.render(context)
    })
}

/// Renders one HTML part template like [`render`], with every variable HTML-escaped (a
/// customer name with `<` in it stays text).
pub fn render_html(template: &str, context: &serde_json::Value) -> Result<String, minijinja::Error> {
    compiled("html", template, context).or_else(|_| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template("notice.html", template)?;
        env.get_template("notice.html")?.render(context)
    })
}

/// Templates compiled once per process: a daemon renders the same few templates (each kind,
/// language and part) for every notice, and compiling one costs more than rendering it. A
/// template's name is its part (`text:`, `html:`, which decides escaping) and its whole source.
static COMPILED: std::sync::LazyLock<std::sync::RwLock<Environment<'static>>> =
    std::sync::LazyLock::new(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.starts_with("html:") { minijinja::AutoEscape::Html } else { minijinja::AutoEscape::None }
        });
        std::sync::RwLock::new(env)
    });

/// Templates kept at most; past it the cache starts over (a daemon that saw this many
/// different templates is not rendering the same few).
const COMPILED_MAX: usize = 512;

/// Renders `source` as a `part` (`text` or `html`) template through [`COMPILED`].
fn compiled(part: &str, source: &str, context: &serde_json::Value) -> Result<String, minijinja::Error> {
    let name = format!("{part}:{source}");
    {
        let env = COMPILED.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Ok(template) = env.get_template(&name) {
            return template.render(context);
        }
    }
    let mut env = COMPILED.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    if env.templates().count() >= COMPILED_MAX {
        env.clear_templates();
    }
    env.add_template_owned(name.clone(), source.to_owned())?;
    env.get_template(&name)?.render(context)
}

/// A notice template (minijinja, strict undefined), validated by rendering a sample.
///
/// Variables: `migration`, `account`, `contact_email`, `main_domain`, `domains` (a list of
/// strings), `source_host` and `target_host` (the servers' public names, `hosts.NAME.hostname`),
/// `target_ip`, `external_records` (what a customer on another DNS host must change: `domain`,
/// `name`, `type`, `old_value`, `new_value`), `domains_to_point` (domains whose DNS is not on
/// our nameservers and not hosted elsewhere: the customer points their A records at
/// `target_ip`), `customer_name`, `accounts` (each `account`, `main_domain`, `domains` and
/// `dedicated_ip`: its own address on the new server, or empty), `external_domains`,
/// `cutover_date` and `cutover_time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeTemplate {
    /// The subject line template (renders to one line).
    pub subject: String,
    /// The body template (plain text).
    pub body: String,
    /// The HTML part's template (HTML-escaped when rendered), sent with the text as
    /// multipart/alternative; `None`: plain text only.
    pub html: Option<String>,
}

/// The variables a notice template may use.
pub const NOTICE_VARIABLES: [&str; 15] = [
    "migration",
    "account",
    "contact_email",
    "main_domain",
    "domains",
    "source_host",
    "target_host",
    "target_ip",
    "external_records",
    "domains_to_point",
    "customer_name",
    "accounts",
    "external_domains",
    "cutover_date",
    "cutover_time",
];

/// One notice template rendered with sample values, as `siirto playbook check` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The kind and language, e.g. `advance (fi)`.
    pub kind: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// The HTML part, when the template has one.
    pub html: Option<String>,
}

impl Notices {
    /// Every notice template of every kind, each shipped one in each language, rendered with
    /// sample values ([`sample_notice_context`]: the example config's hosts, `old1.example.net`
    /// → `new1.example.net`), for `siirto playbook check` to show what
    /// customers, customer service and operators would read.
    pub fn rendered_samples(&self) -> Result<Vec<Sample>, minijinja::Error> {
        let context = sample_notice_context();
        let mut correction = context.clone();
        correction["old_date"] = "2026-03-07".into();
        correction["old_time"] = "22:00".into();
        correction["reason"] = "the new server's disks arrive late".into();
        let staff = serde_json::json!({
            "migration": "old1-to-new1-2026-03", "source_host": "old1.example.net",
            "target_host": "new1.example.net", "cutover_date": "2026-03-14", "cutover_time": "22:00",
            "accounts_count": 120, "customers_count": 97,
            "external": [{"customer": "Kukka Oy", "domains": ["oma-0001.test"]}],
            "awaiting_ip": ["kauppa0003"], "held": [{"account": "vanha0002", "reason": "Restore failed: disk quota exceeded"}],
        });
        let held = serde_json::json!({
            "migration": "old1-to-new1-2026-03", "account": "vanha0002", "main_domain": "vanha-0002.test",
            "reason": "Restore failed: disk quota exceeded",
        });
        let failed = serde_json::json!({
            "migration": "old1-to-new1-2026-03", "kind": "completion", "account": "kukka0001",
            "recipients": "owner@kukka-0001.test", "error": "550 5.1.1 no such mailbox",
        });
        let failed = {
            let mut failed = failed;
            failed["bounced"] = false.into();
            failed
        };
        let closing = serde_json::json!({
            "account": "kukka0001", "main_domain": "kukka-0001.test", "customer_name": "Kukka Oy",
            "target_host": "new1.example.net", "source_host": "old1.example.net", "target_ip": "203.0.113.20",
            "closes_on": "2026-04-13", "stage": "suspend accounts",
            "evidence": [{"resolver": "192.0.2.53:53", "name": "kukka-0001.test", "rtype": "A", "answer": "192.0.2.10"}],
        });
        let task_reminder = serde_json::json!({
            "migration": "old1-to-new1-2026-03", "stage": "unrack and destroy disks", "due": "2026-06-12",
            "tasks": [
                {"id": 41, "task": "unrack the old server", "needs": 1, "confirmed_by": []},
                {"id": 42, "task": "destroy the old server's disks", "needs": 2, "confirmed_by": ["maija"]},
            ],
        });
        let reseller = sample_reseller_context();
        let localized = [
            ("advance", &self.advance, &context),
            ("reseller", &self.reseller, &reseller),
            ("start", &self.start, &context),
            ("completion", &self.completion, &context),
            ("reminder", &self.reminder, &context),
            ("correction", &self.correction, &correction),
            ("staff", &self.staff, &staff),
            ("held", &self.held, &held),
            ("notice_failed", &self.notice_failed, &failed),
            ("closing", &self.closing, &closing),
            ("task_reminder", &self.task_reminder, &task_reminder),
        ];
        let mut samples = Vec::new();
        for (kind, templates, context) in localized {
            for language in LANGUAGES {
                let template = templates.for_language(language);
                let html = template.html.as_ref().map(|html| render_html(html, context)).transpose()?;
                samples.push(Sample {
                    kind: format!("{kind} ({language})"),
                    subject: render(&template.subject, context)?,
                    body: render(&template.body, context)?,
                    html,
                });
            }
        }
        Ok(samples)
    }
}

/// The variables the reseller roll-up may use; `customers` lists each end customer's `name`,
/// `email`, `accounts` (`account`, `main_domain`, `domains`) and `external_domains`.
pub const RESELLER_VARIABLES: [&str; 9] = [
    "migration",
    "customers",
    "reseller_name",
    "reseller_account",
    "source_host",
    "target_host",
    "target_ip",
    "cutover_date",
    "cutover_time",
];

/// A sample reseller roll-up context (see [`RESELLER_VARIABLES`]).
pub fn sample_reseller_context() -> serde_json::Value {
    serde_json::json!({
        "migration": "old1-to-new1-2026-03",
        "reseller_name": "Webtoimisto Oy",
        "reseller_account": "webtoim",
        "source_host": "old1.example.net",
        "target_host": "new1.example.net",
        "target_ip": "198.51.100.20",
        "cutover_date": "2026-03-14",
        "cutover_time": "22:00",
        "customers": [
            {"name": "Kukka Oy", "email": "owner@kukka-0001.test",
             "accounts": [{"account": "kukka0001", "main_domain": "kukka-0001.test",
                           "domains": ["kukka-0001.test", "shop.kukka-0001.test"], "dedicated_ip": ""}],
             "external_domains": ["oma-0001.test"]},
            {"name": "", "email": "info@leipomo-0002.test",
             "accounts": [{"account": "leipo0002", "main_domain": "leipomo-0002.test",
                           "domains": ["leipomo-0002.test"], "dedicated_ip": ""}],
             "external_domains": []},
        ],
    })
}

/// A sample context with every notice variable, used to validate templates; its hosts are
/// those of `siirto config example`.
pub fn sample_notice_context() -> serde_json::Value {
    serde_json::json!({
        "migration": "old1-to-new1-2026-03",
        "account": "kukka0001",
        "contact_email": "owner@kukka-0001.test",
        "main_domain": "kukka-0001.test",
        "domains": ["kukka-0001.test", "shop.kukka-0001.test"],
        "source_host": "old1.example.net",
        "target_host": "new1.example.net",
        "target_ip": "198.51.100.20",
        "external_records": [
            {"domain": "oma-0001.test", "name": "oma-0001.test.", "type": "A",
             "old_value": "198.51.100.10", "new_value": "198.51.100.20"},
            {"domain": "oma-0001.test", "name": "www.oma-0001.test.", "type": "A",
             "old_value": "198.51.100.10", "new_value": "198.51.100.20"},
        ],
        "domains_to_point": ["toinen-0001.test"],
        "customer_name": "Kukka Oy",
        "accounts": [
            {"account": "kukka0001", "main_domain": "kukka-0001.test",
             "domains": ["kukka-0001.test", "shop.kukka-0001.test"], "dedicated_ip": ""},
            {"account": "kukka0002", "main_domain": "oma-0001.test", "domains": ["oma-0001.test"],
             "dedicated_ip": "198.51.100.21"},
        ],
        "external_domains": ["oma-0001.test"],
        "cutover_date": "2026-03-14",
        "cutover_time": "22:00",
    })
}

// ---------------------------------------------------------------------------------------------
// Raw TOML shapes.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    name: Spanned<String>,
    description: Option<Spanned<String>>,
    schedule: Option<RawSchedule>,
    dns: Option<RawDns>,
    transfer: Option<RawTransfer>,
    verification: Option<RawVerification>,
    retry: Option<RawRetry>,
    concurrency: Option<RawConcurrency>,
    mail: Option<RawMail>,
    notices: Option<RawNotices>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMail {
    switch_routing: Option<bool>,
    final_sync: Option<bool>,
    sync: Option<SyncScope>,
    max_syncs: Option<Spanned<i64>>,
    check_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    announce_before: Option<Spanned<String>>,
    lower_ttl_before: Option<Spanned<String>>,
    settle_after: Option<Spanned<String>>,
    no_traffic_for: Option<Spanned<String>>,
    task_reminder_every: Option<Spanned<String>>,
    decommission: Option<Vec<RawStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    after: Spanned<String>,
    action: Spanned<StageAction>,
    manual: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    short_ttl: Option<Spanned<i64>>,
    gate_margin: Option<Spanned<String>>,
    gate_wait_override: Option<Spanned<String>>,
    max_change_share: Option<Spanned<f64>>,
    external_poll_interval: Option<Spanned<String>>,
    external_reminder_every: Option<Spanned<String>>,
    create_aaaa: Option<Spanned<bool>>,
    shared_cluster: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfer {
    transfer_threads: Option<Spanned<i64>>,
    restore_threads: Option<Spanned<i64>>,
    accounts_per_session: Option<Spanned<i64>>,
    max_attempts: Option<Spanned<i64>>,
    poll_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerification {
    http_check: Option<bool>,
    on_mismatch: Option<OnMismatch>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<Spanned<i64>>,
    base_delay: Option<Spanned<String>>,
    max_delay: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrency {
    workers: Option<Spanned<i64>>,
    dns_zone_writes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotices {
    completion: Option<RawTemplate>,
    reminder: Option<RawTemplate>,
    advance: Option<RawTemplate>,
    start: Option<RawTemplate>,
    reseller: Option<RawTemplate>,
    reseller_customers: Option<ResellerCustomers>,
    late_after: Option<RawLateAfter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLateAfter {
    advance: Option<Spanned<String>>,
    reseller: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    correction: Option<Spanned<String>>,
    completion: Option<Spanned<String>>,
    reminder: Option<Spanned<String>>,
    staff: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    subject: Spanned<String>,
    body: Spanned<String>,
    html: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------
// Validation.

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The one rule for a playbook's durations. A **wait** — the time from one thing to the next
/// (the schedule's offsets from the cutover, the gate's margin and override, the mail check's
/// delay, a decommission stage after the settle) — may be `0s`: the next thing then comes at
/// once, and the gates still keep the order safe (a repoint still waits out the old TTL since
/// the lowering). A **repeat** — the time between two tries of the same thing (polls,
/// reminders, retry delays) — and a timeout are at least this, so nothing spins.
const LEAST_REPEAT: Duration = Duration::from_millis(100);

/// A repeat interval or timeout (see [`LEAST_REPEAT`]), with its default.
fn repeat_or(
    src: &Source<'_>,
    value: Option<&Spanned<String>>,
    field: &str,
    default: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    src.duration_or(value, field, default, LEAST_REPEAT, max).map_err(|mut err| {
        err.message.push_str(
            " (an interval that repeats, or a timeout, is at least 100ms so nothing spins; waits may be 0s)",
        );
        err
    })
}

impl Playbook {
    /// Reads and validates a playbook file.
    pub fn load(path: &Path) -> Result<Playbook, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            origin: origin.clone(),
            position: None,
            field: String::new(),
            message: format!("cannot read the playbook: {err}"),
        })?;
        Playbook::parse(&text, &origin)
    }

    /// Validates playbook text; `origin` names it in errors. Pure: touches no filesystem.
    pub fn parse(text: &str, origin: &str) -> Result<Playbook, ConfigError> {
        let src = Source { text, origin };
        let raw: RawPlaybook = src.deserialize()?;

        let name = raw.name.get_ref().trim();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(src.at(
                &raw.name,
                "name",
                format!("expected 1-64 lowercase letters, digits or '-', got {name:?}"),
            ));
        }
        let description = raw.description.as_ref().map(|d| d.get_ref().trim().to_owned()).unwrap_or_default();

        let schedule = schedule(&src, raw.schedule.as_ref())?;
        let dns = dns(&src, raw.dns.as_ref())?;
        Ok(Playbook {
            name: name.to_owned(),
            description,
            schedule: schedule.clone(),
            dns: dns.clone(),
            transfer: transfer(&src, raw.transfer.as_ref())?,
            verification: verification(&src, raw.verification.as_ref())?,
            retry: retry(&src, raw.retry.as_ref())?,
            concurrency: concurrency(&src, raw.concurrency.as_ref())?,
            mail: mail(&src, raw.mail.as_ref())?,
            notices: notices(&src, raw.notices.as_ref(), &schedule, &dns)?,
            source_text: text.to_owned(),
        })
    }
}

fn schedule(src: &Source<'_>, raw: Option<&RawSchedule>) -> Result<Schedule, ConfigError> {
    let announce_before = src.duration_or(
        raw.and_then(|r| r.announce_before.as_ref()),
        "schedule.announce_before",
        14 * DAY,
        Duration::ZERO,
        365 * DAY,
    )?;
    // The TTLs must be lowered before the cutover, or the repoint takes the old TTL to be seen.
    let lower_ttl_before = src.duration_or(
        raw.and_then(|r| r.lower_ttl_before.as_ref()),
        "schedule.lower_ttl_before",
        DAY,
        Duration::ZERO,
        30 * DAY,
    )?;
    let settle_after = src.duration_or(
        raw.and_then(|r| r.settle_after.as_ref()),
        "schedule.settle_after",
        2 * DAY,
        Duration::ZERO,
        60 * DAY,
    )?;
    let no_traffic_for = src.duration_or(
        raw.and_then(|r| r.no_traffic_for.as_ref()),
        "schedule.no_traffic_for",
        7 * DAY,
        Duration::ZERO,
        365 * DAY,
    )?;
    let task_reminder_every = repeat_or(
        src,
        raw.and_then(|r| r.task_reminder_every.as_ref()),
        "schedule.task_reminder_every",
        DAY,
        90 * DAY,
    )?;
    let decommission = match raw.and_then(|r| r.decommission.as_ref()) {
        Some(stages) => decommission(src, stages, settle_after)?,
        None => default_decommission(),
    };
    Ok(Schedule {
        announce_before,
        lower_ttl_before,
        settle_after,
        decommission,
        no_traffic_for,
        task_reminder_every,
    })
}

fn default_decommission() -> Vec<DecommissionStage> {
    let stage = |name: &str, days: u32, action: StageAction| DecommissionStage {
        name: name.to_owned(),
        after: days * DAY,
        action,
        manual: action.needs_a_person(),
    };
    vec![
        stage("suspend accounts", 30, StageAction::SuspendAccounts),
        stage("remove accounts", 60, StageAction::RemoveAccounts),
        stage("cancel licence", 60, StageAction::CancelLicence),
        stage("power off", 90, StageAction::PowerOff),
        stage("unrack and destroy disks", 90, StageAction::DestroyDisks),
    ]
}

fn decommission(
    src: &Source<'_>,
    raw: &[RawStage],
    settle_after: Duration,
) -> Result<Vec<DecommissionStage>, ConfigError> {
    let mut stages: Vec<DecommissionStage> = Vec::with_capacity(raw.len());
    for (index, stage) in raw.iter().enumerate() {
        let field = |name: &str| format!("schedule.decommission[{index}].{name}");
        let name = stage.name.get_ref().trim();
        if name.is_empty() || name.len() > 80 || name.contains(char::is_control) {
            return Err(src.at(&stage.name, field("name"), "expected a one-line name of 1-80 characters"));
        }
        if stages.iter().any(|s| s.name == name) {
            return Err(src.at(
                &stage.name,
                field("name"),
                format!("expected a unique stage name, {name:?} is used twice"),
            ));
        }
        // Stages are waits measured from the cutover, and the settle phase comes first.
        let after = src.duration_in(&stage.after, &field("after"), Duration::ZERO, 3650 * DAY)?;
        if after < settle_after {
            return Err(src.at(
                &stage.after,
                field("after"),
                format!(
                    "expected at least schedule.settle_after ({}): the old server is retired after the migration settles, got {:?}",
                    as_written(settle_after),
                    stage.after.get_ref()
                ),
            ));
        }
        if let Some(previous) = stages.last()
            && after < previous.after
        {
            return Err(src.at(
                &stage.after,
                field("after"),
                format!(
                    "expected the stages in order: at least {} (the previous stage {:?}), got {:?}",
                    as_written(previous.after),
                    previous.name,
                    stage.after.get_ref()
                ),
            ));
        }
        let action = *stage.action.get_ref();
        if stages.iter().any(|s| s.action == action) {
            return Err(src.at(
                &stage.action,
                field("action"),
                format!("expected each action once, {} is used twice", action.as_str()),
            ));
        }
        let ordering = [
            (StageAction::RemoveAccounts, StageAction::SuspendAccounts),
            (StageAction::PowerOff, StageAction::RemoveAccounts),
            (StageAction::DestroyDisks, StageAction::PowerOff),
        ];
        for (later, earlier) in ordering {
            let earlier_comes_later = raw[index + 1..].iter().any(|s| *s.action.get_ref() == earlier);
            if action == later && earlier_comes_later {
                return Err(src.at(
                    &stage.action,
                    field("action"),
                    format!("expected {} after {}, not before it", later.as_str(), earlier.as_str()),
                ));
            }
        }
        let manual = match &stage.manual {
            Some(manual) => {
                if !*manual.get_ref() && action.needs_a_person() {
                    return Err(src.at(
                        manual,
                        field("manual"),
                        format!(
                            "expected manual = true: siirto cannot {} itself, a person must do it and confirm",
                            action.as_str().replace('_', " ")
                        ),
                    ));
                }
                *manual.get_ref()
            }
            None => action.needs_a_person(),
        };
        stages.push(DecommissionStage { name: name.to_owned(), after, action, manual });
    }
    Ok(stages)
}

fn dns(src: &Source<'_>, raw: Option<&RawDns>) -> Result<DnsPolicy, ConfigError> {
    let short_ttl = match raw.and_then(|r| r.short_ttl.as_ref()) {
        Some(ttl) => {
            let seconds = src.integer(ttl, "dns.short_ttl", 1, 86_400, "a TTL", " seconds")?;
            u32::try_from(seconds).map_err(|_| src.at(ttl, "dns.short_ttl", "expected a TTL"))?
        }
        None => 60,
    };
    let gate_margin = src.duration_or(
        raw.and_then(|r| r.gate_margin.as_ref()),
        "dns.gate_margin",
        5 * MINUTE,
        Duration::ZERO,
        DAY,
    )?;
    let gate_wait_override = match raw.and_then(|r| r.gate_wait_override.as_ref()) {
        Some(wait) => Some(src.duration_in(wait, "dns.gate_wait_override", Duration::ZERO, DAY)?),
        None => None,
    };
    let max_change_share = match raw.and_then(|r| r.max_change_share.as_ref()) {
        Some(share) => {
            let value = *share.get_ref();
            if !(value > 0.0 && value <= 1.0) {
                return Err(src.at(
                    share,
                    "dns.max_change_share",
                    format!("expected a share of a zone's records, 0 < share <= 1, got {value}"),
                ));
            }
            value
        }
        None => 0.5,
    };
    let external_poll_interval = repeat_or(
        src,
        raw.and_then(|r| r.external_poll_interval.as_ref()),
        "dns.external_poll_interval",
        15 * MINUTE,
        DAY,
    )?;
    let external_reminder_every = repeat_or(
        src,
        raw.and_then(|r| r.external_reminder_every.as_ref()),
        "dns.external_reminder_every",
        3 * DAY,
        90 * DAY,
    )?;
    let create_aaaa = raw.and_then(|r| r.create_aaaa.as_ref()).is_some_and(|c| *c.get_ref());
    let shared_cluster = raw.and_then(|r| r.shared_cluster.as_ref()).is_some_and(|c| *c.get_ref());
    Ok(DnsPolicy {
        short_ttl,
        gate_margin,
        gate_wait_override,
        max_change_share,
        external_poll_interval,
        external_reminder_every,
        create_aaaa,
        shared_cluster,
    })
}

fn transfer(src: &Source<'_>, raw: Option<&RawTransfer>) -> Result<TransferPolicy, ConfigError> {
    let transfer_threads = src.count_or(
        raw.and_then(|r| r.transfer_threads.as_ref()),
        "transfer.transfer_threads",
        3,
        (1, 32),
        "a thread count",
    )?;
    let restore_threads = src.count_or(
        raw.and_then(|r| r.restore_threads.as_ref()),
        "transfer.restore_threads",
        2,
        (1, 128),
        "a thread count",
    )?;
    // WHM refuses more restore threads than four per transfer thread.
    if restore_threads > 4 * transfer_threads {
        let at = raw
            .and_then(|r| r.restore_threads.as_ref().or(r.transfer_threads.as_ref()))
            .map_or(0..0, Spanned::span);
        return Err(src.error(
            at,
            "transfer.restore_threads",
            format!(
                "expected at most 4 × transfer_threads = {}, got {restore_threads}",
                4 * transfer_threads
            ),
        ));
    }
    let accounts_per_session = src.count_or(
        raw.and_then(|r| r.accounts_per_session.as_ref()),
        "transfer.accounts_per_session",
        25,
        (1, 1000),
        "a number of accounts",
    )?;
    let max_attempts = src.count_or(
        raw.and_then(|r| r.max_attempts.as_ref()),
        "transfer.max_attempts",
        3,
        (1, 20),
        "a number of attempts",
    )?;
    let poll_interval = repeat_or(
        src,
        raw.and_then(|r| r.poll_interval.as_ref()),
        "transfer.poll_interval",
        15 * SECOND,
        HOUR,
    )?;
    Ok(TransferPolicy {
        transfer_threads,
        restore_threads,
        accounts_per_session,
        max_attempts,
        poll_interval,
    })
}

fn verification(src: &Source<'_>, raw: Option<&RawVerification>) -> Result<VerificationPolicy, ConfigError> {
    Ok(VerificationPolicy {
        http_check: raw.and_then(|r| r.http_check).unwrap_or(true),
        on_mismatch: raw.and_then(|r| r.on_mismatch).unwrap_or(OnMismatch::Hold),
        timeout: repeat_or(
            src,
            raw.and_then(|r| r.timeout.as_ref()),
            "verification.timeout",
            10 * SECOND,
            10 * MINUTE,
        )?,
    })
}

fn mail(src: &Source<'_>, raw: Option<&RawMail>) -> Result<MailPolicy, ConfigError> {
    Ok(MailPolicy {
        switch_routing: raw.and_then(|r| r.switch_routing).unwrap_or(true),
        final_sync: raw.and_then(|r| r.final_sync).unwrap_or(true),
        sync: raw.and_then(|r| r.sync).unwrap_or(SyncScope::Mail),
        max_syncs: src.count_or(
            raw.and_then(|r| r.max_syncs.as_ref()),
            "mail.max_syncs",
            3,
            (1, 20),
            "a number of syncs",
        )?,
        check_after: src.duration_or(
            raw.and_then(|r| r.check_after.as_ref()),
            "mail.check_after",
            MINUTE,
            Duration::ZERO,
            DAY,
        )?,
    })
}

impl Playbook {
    /// The limits the account state machine applies under this playbook.
    pub fn account_policy(&self) -> crate::domain::AccountPolicy {
        crate::domain::AccountPolicy {
            max_transfer_attempts: self.transfer.max_attempts,
            hold_on_mismatch: matches!(self.verification.on_mismatch, OnMismatch::Hold),
            final_mail_sync: self.mail.final_sync,
            max_mail_syncs: self.mail.max_syncs,
        }
    }
}

fn retry(src: &Source<'_>, raw: Option<&RawRetry>) -> Result<RetryPolicy, ConfigError> {
    let max_attempts = src.count_or(
        raw.and_then(|r| r.max_attempts.as_ref()),
        "retry.max_attempts",
        8,
        (1, 100),
        "a number of attempts",
    )?;
    let base_delay =
        repeat_or(src, raw.and_then(|r| r.base_delay.as_ref()), "retry.base_delay", 30 * SECOND, HOUR)?;
    let max_delay =
        repeat_or(src, raw.and_then(|r| r.max_delay.as_ref()), "retry.max_delay", 30 * MINUTE, DAY)?;
    if max_delay < base_delay {
        let at = raw.and_then(|r| r.max_delay.as_ref().or(r.base_delay.as_ref())).map_or(0..0, Spanned::span);
        return Err(src.error(
            at,
            "retry.max_delay",
            format!(
                "expected at least base_delay ({}), got {}",
                as_written(base_delay),
                as_written(max_delay)
            ),
        ));
    }
    Ok(RetryPolicy { max_attempts, base_delay, max_delay })
}

fn concurrency(src: &Source<'_>, raw: Option<&RawConcurrency>) -> Result<Concurrency, ConfigError> {
    Ok(Concurrency {
        workers: src.count_or(
            raw.and_then(|r| r.workers.as_ref()),
            "concurrency.workers",
            8,
            (1, 256),
            "a number of workers",
        )?,
        // One writer suits a sqlite-backed PowerDNS; above 8 its API backlog overflows
        // (reference/real-servers.md).
        dns_zone_writes: src.count_or(
            raw.and_then(|r| r.dns_zone_writes.as_ref()),
            "concurrency.dns_zone_writes",
            1,
            (1, 8),
            "a number of concurrent zone writes",
        )?,
    })
}

fn notices(
    src: &Source<'_>,
    raw: Option<&RawNotices>,
    schedule: &Schedule,
    dns: &DnsPolicy,
) -> Result<Notices, ConfigError> {
    let own = |template: Option<&RawTemplate>, kind: &str| -> Result<Option<NoticeTemplate>, ConfigError> {
        let check = if kind == "reseller" { Check::Reseller } else { Check::Customer };
        template
            .map(|t| {
                Ok(NoticeTemplate {
                    subject: checked_template(
                        src,
                        &t.subject,
                        &format!("notices.{kind}.subject"),
                        check,
                        Part::Subject,
                    )?,
                    body: checked_template(src, &t.body, &format!("notices.{kind}.body"), check, Part::Text)?,
                    html: t
                        .html
                        .as_ref()
                        .map(|h| checked_template(src, h, &format!("notices.{kind}.html"), check, Part::Html))
                        .transpose()?,
                })
            })
            .transpose()
    };
    let completion = Localized {
        playbook: own(raw.and_then(|r| r.completion.as_ref()), "completion")?,
        shipped: shipped!("completion"),
    };
    let reminder = Localized {
        playbook: own(raw.and_then(|r| r.reminder.as_ref()), "reminder")?,
        shipped: shipped!("reminder"),
    };
    let advance = Localized {
        playbook: own(raw.and_then(|r| r.advance.as_ref()), "advance")?,
        shipped: shipped!("advance"),
    };
    let start =
        Localized { playbook: own(raw.and_then(|r| r.start.as_ref()), "start")?, shipped: shipped!("start") };
    let reseller = Localized {
        playbook: own(raw.and_then(|r| r.reseller.as_ref()), "reseller")?,
        shipped: shipped!("reseller"),
    };
    let late = raw.and_then(|r| r.late_after.as_ref());
    let limit = |value: Option<&Spanned<String>>, kind: &str, default: Duration| {
        src.duration_or(value, &format!("notices.late_after.{kind}"), default, Duration::ZERO, 365 * DAY)
    };
    let advance_late = limit(late.and_then(|l| l.advance.as_ref()), "advance", schedule.announce_before / 2)?;
    let late_after = BTreeMap::from([
        ("advance", advance_late),
        ("reseller", limit(late.and_then(|l| l.reseller.as_ref()), "reseller", advance_late)?),
        ("start", limit(late.and_then(|l| l.start.as_ref()), "start", DAY)?),
        ("correction", limit(late.and_then(|l| l.correction.as_ref()), "correction", 2 * DAY)?),
        ("completion", limit(late.and_then(|l| l.completion.as_ref()), "completion", 7 * DAY)?),
        ("reminder", limit(late.and_then(|l| l.reminder.as_ref()), "reminder", dns.external_reminder_every)?),
        ("closing", dns.external_reminder_every),
        ("staff", limit(late.and_then(|l| l.staff.as_ref()), "staff", DAY)?),
    ]);
    Ok(Notices {
        completion,
        reminder,
        advance,
        start,
        reseller,
        reseller_customers: raw.and_then(|r| r.reseller_customers).unwrap_or(ResellerCustomers::Reseller),
        staff: Localized { playbook: None, shipped: shipped!("staff") },
        held: Localized { playbook: None, shipped: shipped!("held") },
        correction: Localized { playbook: None, shipped: shipped!("correction") },
        notice_failed: Localized { playbook: None, shipped: shipped!("notice_failed") },
        closing: Localized { playbook: None, shipped: shipped!("closing") },
        task_reminder: Localized { playbook: None, shipped: shipped!("task_reminder") },
        late_after,
    })
}

/// Which variables a playbook's template may use.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// A notice to a customer: [`NOTICE_VARIABLES`].
    Customer,
    /// The reseller roll-up: [`RESELLER_VARIABLES`].
    Reseller,
}

/// Which part of a notice a template is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The subject: renders to one line.
    Subject,
    /// The plain-text body.
    Text,
    /// The HTML part (rendered HTML-escaped).
    Html,
}

/// Renders a template with the sample context; a misspelt variable or bad syntax is refused
/// at the place in the file where it is written, when that place can be found.
fn checked_template(
    src: &Source<'_>,
    template: &Spanned<String>,
    field: &str,
    check: Check,
    part: Part,
) -> Result<String, ConfigError> {
    let text = template.get_ref();
    let (context, variables) = match check {
        Check::Customer => (sample_notice_context(), &NOTICE_VARIABLES[..]),
        Check::Reseller => (sample_reseller_context(), &RESELLER_VARIABLES[..]),
    };
    let rendered = if part == Part::Html { render_html(text, &context) } else { render(text, &context) };
    let rendered = match rendered {
        Ok(rendered) => rendered,
        Err(err) => {
            let span = template.span();
            let mut at = span.start;
            let mut culprit = None;
            if let Some(range) = err.range().filter(|r| r.end <= text.len()) {
                let snippet = &text[range.clone()];
                culprit = Some(snippet.to_owned());
                // Find the same occurrence of the snippet in the file (exact when the string
                // has no escapes, which templates rarely need).
                let nth = text[..range.start].matches(snippet).count();
                if let Some((offset, _)) =
                    src.text.get(span.clone()).and_then(|raw| raw.match_indices(snippet).nth(nth))
                {
                    at = span.start + offset;
                }
            }
            let message = match (err.kind(), culprit) {
                (minijinja::ErrorKind::UndefinedError, Some(name)) => format!(
                    "expected only the notice variables ({}), but `{name}` is not one of them",
                    variables.join(", ")
                ),
                _ => {
                    let detail = err.detail().map(|d| format!(": {d}")).unwrap_or_default();
                    format!(
                        "expected a template that renders with the notice variables ({}): {}{detail}",
                        variables.join(", "),
                        err.kind()
                    )
                }
            };
            return Err(src.error(at..at, field, message));
        }
    };
    if rendered.trim().is_empty() {
        return Err(src.at(template, field, "expected a template that renders to some text"));
    }
    if part == Part::Subject && rendered.contains(['\n', '\r']) {
        return Err(src.at(template, field, "expected a subject that renders to one line"));
    }
    Ok(text.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_advance_notices_render_in_each_language_with_only_what_applies() {
        let notices = Playbook::parse("name = \"x\"\n", "x.toml").unwrap().notices;
        assert_eq!(
            notices.late_after("advance"),
            Some(Duration::from_secs(7 * 86_400)),
            "half of announce_before"
        );
        assert_eq!(
            notices.late_after("reminder"),
            Some(Duration::from_secs(3 * 86_400)),
            "the reminder interval"
        );
        assert_eq!(notices.late_after("held"), None, "operators always hear of a hold");
        assert_eq!(notices.reseller_customers, ResellerCustomers::Reseller);
        let mut context = sample_notice_context();
        for (language, external_line) in [("en", "kept at another DNS host"), ("fi", "ylläpidetään muualla")]
        {
            let template = notices.advance.for_language(language);
            let body = render(&template.body, &context).unwrap();
            assert!(body.contains(external_line), "{language}:\n{body}");
            assert!(body.contains("kukka0002") && body.contains("2026-03-14"), "{language}:\n{body}");
            assert!(!render(&template.subject, &context).unwrap().contains('\n'));
        }
        context["external_domains"] = serde_json::json!([]);
        for (language, external_line) in [("en", "another DNS host"), ("fi", "DNS-tietoja")] {
            let body = render(&notices.advance.for_language(language).body, &context).unwrap();
            assert!(!body.contains(external_line), "{language}:\n{body}");
        }
        // Another language gets English.
        assert_eq!(notices.advance.for_language("sv"), notices.advance.for_language("en"));
    }

    #[test]
    fn the_staff_and_held_notices_render_in_each_language() {
        let notices = Playbook::parse("name = \"x\"\n", "x.toml").unwrap().notices;
        let staff = serde_json::json!({
            "migration": "m", "source_host": "old1.example.net", "target_host": "new1.example.net",
            "cutover_date": "2026-03-14", "cutover_time": "22:00", "accounts_count": 3, "customers_count": 2,
            "external": [{"customer": "Kukka Oy", "domains": ["oma-0001.test"]}],
            "awaiting_ip": ["kauppa0003"], "held": [{"account": "vanha0002", "reason": "disk quota"}],
        });
        let held = serde_json::json!({
            "migration": "m", "account": "vanha0002", "main_domain": "vanha-0002.test", "reason": "disk quota",
        });
        for language in LANGUAGES {
            let body = render(&notices.staff.for_language(language).body, &staff).unwrap();
            for expected in
                ["Kukka Oy: oma-0001.test", "kauppa0003", "vanha0002: disk quota", "notices list m"]
            {
                assert!(body.contains(expected), "{language}: {expected}:\n{body}");
            }
            let body = render(&notices.held.for_language(language).body, &held).unwrap();
            assert!(body.contains("disk quota") && body.contains("retry m vanha0002"), "{language}:\n{body}");
        }
        let quiet = serde_json::json!({
            "migration": "m", "source_host": "a", "target_host": "b", "cutover_date": "d", "cutover_time": "t",
            "accounts_count": 1, "customers_count": 1, "external": [], "awaiting_ip": [], "held": [],
        });
        let body = render(&notices.staff.for_language("en").body, &quiet).unwrap();
        assert!(!body.contains("DNS elsewhere") && !body.contains("held back"), "{body}");
    }

    #[test]
    fn a_contracts_language_is_read_as_one_of_the_shipped() {
        for (given, expected) in [
            (Some("fi"), "fi"),
            (Some(" FI "), "fi"),
            (Some("Suomi"), "fi"),
            (Some("fi-FI"), "fi"),
            (Some("English"), "en"),
            (Some("en_GB"), "en"),
            (Some("sv"), "fi"),
            (None, "fi"),
        ] {
            assert_eq!(language_of(given, "fi"), expected, "{given:?}");
        }
        assert_eq!(language_of(Some("fin"), "en"), "fi");
        assert_eq!(language_of(Some("sv"), "en"), "en");
    }

    fn shipped() -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("playbooks dir")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .map(|path| {
                let text = std::fs::read_to_string(&path).expect("read playbook");
                (path.display().to_string(), text)
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_shipped_playbook_loads() {
        let files = shipped();
        assert!(files.len() >= 2, "expected shared-hosting and demo playbooks");
        for (path, text) in files {
            let playbook = Playbook::parse(&text, &path).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(playbook.source_text, text);
            let loaded = Playbook::load(Path::new(&path)).unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(loaded, playbook);
            // The override that skips the TTL wait is documented where it may be met, and
            // marked as what it is.
            let documented =
                text.lines().position(|l| l.contains("For demos and tests only, never in production"));
            let setting =
                text.lines().position(|l| l.trim_start_matches("# ").starts_with("gate_wait_override"));
            assert!(
                matches!((documented, setting), (Some(d), Some(s)) if d < s),
                "{path}: gate_wait_override is documented, marked for demos and tests only"
            );
            // Every notice template renders with the sample context.
            let context = sample_notice_context();
            for language in LANGUAGES {
                for localized in [&playbook.notices.completion, &playbook.notices.reminder] {
                    let template = localized.for_language(language);
                    render(&template.subject, &context).expect("renders");
                    render(&template.body, &context).expect("renders");
                    render_html(template.html.as_deref().expect("an HTML part"), &context).expect("renders");
                }
            }
        }
    }

    #[test]
    fn shared_hosting_follows_the_usual_recipe() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let playbook = Playbook::load(&dir.join("shared-hosting.toml")).expect("shared-hosting");
        assert_eq!(playbook.name, "shared-hosting");
        assert_eq!(playbook.schedule.announce_before, 14 * DAY);
        assert_eq!(playbook.schedule.lower_ttl_before, DAY);
        assert_eq!(playbook.dns.short_ttl, 60);
        assert_eq!(playbook.dns.gate_wait_override, None);
        assert_eq!(playbook.concurrency.dns_zone_writes, 1);
        let stages: Vec<_> = playbook
            .schedule
            .decommission
            .iter()
            .map(|s| (s.after.as_secs() / 86_400, s.action, s.manual))
            .collect();
        assert_eq!(
            stages,
            vec![
                (30, StageAction::SuspendAccounts, false),
                (60, StageAction::RemoveAccounts, false),
                (60, StageAction::CancelLicence, false),
                (90, StageAction::PowerOff, false),
                (90, StageAction::DestroyDisks, true),
            ]
        );
        assert_eq!(playbook.schedule.decommission, default_decommission());

        let demo = Playbook::load(&dir.join("demo.toml")).expect("demo");
        assert_eq!(demo.dns.gate_wait_override, Some(2 * SECOND));
        assert!(demo.transfer.poll_interval <= SECOND);
        assert!(demo.retry.max_delay <= 5 * SECOND);
        assert!(playbook.mail.switch_routing && playbook.mail.final_sync);
        assert_eq!(playbook.mail.sync, SyncScope::Mail);
        // The demo's simulated hosts have no sshd: routing switched, no delta sync.
        assert!(demo.mail.switch_routing && !demo.mail.final_sync);
    }

    #[test]
    fn mail_settings_default_to_switch_and_sync_mail_only() {
        let playbook = Playbook::parse("name = \"tiny\"\n", "tiny.toml").expect("tiny");
        let mail = &playbook.mail;
        assert!(mail.switch_routing && mail.final_sync);
        assert_eq!((mail.sync, mail.max_syncs, mail.check_after), (SyncScope::Mail, 3, MINUTE));
        let policy = playbook.account_policy();
        assert!(policy.final_mail_sync && policy.max_mail_syncs == 3);
        let web =
            Playbook::parse("name = \"w\"\n[mail]\nsync = \"mail_and_web\"\nfinal_sync = false\n", "w.toml")
                .expect("web");
        assert_eq!(web.mail.sync, SyncScope::MailAndWeb);
        assert!(!web.account_policy().final_mail_sync);
        for (text, expected) in [
            ("[mail]\nmax_syncs = 0\n", "w.toml:3:13: mail.max_syncs: expected"),
            ("[mail]\nsync = \"everything\"\n", "mail.sync: unknown variant `everything`"),
            ("[mail]\ncheck_after = \"soon\"\n", "mail.check_after"),
        ] {
            let err = Playbook::parse(&format!("name = \"w\"\n{text}"), "w.toml").expect_err(text);
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn a_minimal_playbook_takes_the_defaults() {
        let playbook = Playbook::parse("name = \"tiny\"\n", "tiny.toml").expect("tiny");
        assert_eq!(playbook.schedule.announce_before, 14 * DAY);
        assert_eq!(playbook.schedule.decommission, default_decommission());
        assert_eq!(playbook.dns.short_ttl, 60);
        assert_eq!(playbook.transfer.restore_threads, 2);
        assert_eq!(playbook.verification.on_mismatch, OnMismatch::Hold);
        assert!(playbook.notices.completion.for_language("fi").body.contains("{{ target_host }}"));
    }

    const BASE: &str = r#"name = "x"

[schedule]
announce_before = "14d"

[[schedule.decommission]]
name = "suspend"
after = "30d"
action = "suspend_accounts"

[[schedule.decommission]]
name = "power off"
after = "90d"
action = "power_off"

[dns]
short_ttl = 60

[transfer]
transfer_threads = 2
restore_threads = 2

[retry]
base_delay = "30s"

[notices.completion]
subject = "{{ main_domain }} moved"
body = "Hello {{ account }}, see {{ target_host }}."
"#;

    #[test]
    fn broken_playbooks_name_line_column_and_field() {
        // (what, replace this, with this, expected error text after "p.toml:")
        let cases: &[(&str, &str, &str, &str)] = &[
            ("syntax error", "short_ttl = 60", "short_ttl = = 60", "17:13: "),
            (
                "a limit in days says days",
                "short_ttl = 60",
                "short_ttl = 60\nexternal_reminder_every = \"100d\"",
                "18:27: dns.external_reminder_every: expected a duration of 100ms..=90d, got \"100d\"",
            ),
            (
                "unknown field",
                "short_ttl = 60",
                "short_tll = 60",
                "17:1: dns.short_tll: unknown field, expected one of `short_ttl`, `gate_margin`, `gate_wait_override`, `max_change_share`, `external_poll_interval`, `external_reminder_every`, `create_aaaa`, `shared_cluster`",
            ),
            (
                "unknown section",
                "[retry]",
                "[retries]",
                "23:2: retries: unknown field, expected one of `name`",
            ),
            (
                "wrong type",
                "short_ttl = 60",
                "short_ttl = \"60\"",
                "17:13: dns.short_ttl: invalid type: string \"60\", expected i64",
            ),
            (
                "missing field",
                "after = \"90d\"\n",
                "",
                "11:1: schedule.decommission[1].after: expected this required field, but it is missing",
            ),
            (
                "missing name",
                "name = \"x\"\n",
                "",
                "1:1: name: expected this required field, but it is missing",
            ),
            (
                "bad duration",
                "announce_before = \"14d\"",
                "announce_before = \"two weeks\"",
                "4:19: schedule.announce_before: expected a duration like \"90s\", \"15m\" or \"14d\", got \"two weeks\"",
            ),
            (
                "TTL 0",
                "short_ttl = 60",
                "short_ttl = 0",
                "17:13: dns.short_ttl: expected a TTL of 1..=86400 seconds, got 0",
            ),
            (
                "TTL negative",
                "short_ttl = 60",
                "short_ttl = -5",
                "17:13: dns.short_ttl: expected a TTL of 1..=86400 seconds, got -5",
            ),
            (
                "change share above one",
                "short_ttl = 60",
                "short_ttl = 60\nmax_change_share = 1.5",
                "18:20: dns.max_change_share: expected a share of a zone's records, 0 < share <= 1, got 1.5",
            ),
            (
                "bad template variable",
                "Hello {{ account }}",
                "Hello {{ acount }}",
                "28:18: notices.completion.body: expected only the notice variables (migration, account, contact_email, main_domain, domains, source_host, target_host, target_ip, external_records, domains_to_point, customer_name, accounts, external_domains, cutover_date, cutover_time), but `acount` is not one of them",
            ),
            (
                "template syntax",
                "{{ main_domain }} moved",
                "{{ main_domain } moved",
                "27:27: notices.completion.subject: expected a template that renders with the notice variables (migration, account, contact_email, main_domain, domains, source_host, target_host, target_ip, external_records, domains_to_point, customer_name, accounts, external_domains, cutover_date, cutover_time): syntax error: unexpected `}`",
            ),
            (
                "multi-line subject",
                "{{ main_domain }} moved",
                "{{ main_domain }}\\nmoved",
                "27:11: notices.completion.subject: expected a subject that renders to one line",
            ),
            (
                "stages out of order",
                "after = \"90d\"",
                "after = \"20d\"",
                "13:9: schedule.decommission[1].after: expected the stages in order: at least 30d (the previous stage \"suspend\"), got \"20d\"",
            ),
            (
                "manual-only action marked automatic",
                "action = \"power_off\"",
                "action = \"destroy_disks\"\nmanual = false",
                "15:10: schedule.decommission[1].manual: expected manual = true: siirto cannot destroy disks itself",
            ),
            (
                "unknown action",
                "action = \"power_off\"",
                "action = \"reboot\"",
                "14:10: schedule.decommission[1].action: unknown variant `reboot`, expected one of `suspend_accounts`",
            ),
            (
                "too many restore threads",
                "restore_threads = 2",
                "restore_threads = 9",
                "21:19: transfer.restore_threads: expected at most 4 × transfer_threads = 8, got 9",
            ),
            (
                "max delay below base delay",
                "base_delay = \"30s\"",
                "base_delay = \"30s\"\nmax_delay = \"10s\"",
                "25:13: retry.max_delay: expected at least base_delay (30s), got 10s",
            ),
            (
                "a repeat shorter than the least",
                "base_delay = \"30s\"",
                "base_delay = \"10ms\"",
                "24:14: retry.base_delay: expected a duration of 100ms..=1h, got \"10ms\" (an interval that repeats, or a timeout, is at least 100ms so nothing spins; waits may be 0s)",
            ),
            (
                "a stage before the settle",
                "announce_before = \"14d\"",
                "announce_before = \"14d\"\nsettle_after = \"40d\"",
                "9:9: schedule.decommission[0].after: expected at least schedule.settle_after (40d): the old server is retired after the migration settles, got \"30d\"",
            ),
            (
                "bad name",
                "name = \"x\"",
                "name = \"Shared Hosting\"",
                "1:8: name: expected 1-64 lowercase letters, digits or '-'",
            ),
        ];
        let mut failures = Vec::new();
        for (what, from, to, expected) in cases {
            assert!(BASE.contains(from), "{what}: {from:?} not in BASE");
            let text = BASE.replacen(from, to, 1);
            let err = Playbook::parse(&text, "p.toml").expect_err(what).to_string();
            if !err.starts_with(&format!("p.toml:{expected}")) {
                failures.push(format!("{what}: expected p.toml:{expected}…\n got {err}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        Playbook::parse(BASE, "p.toml").expect("BASE itself is valid");
    }

    #[test]
    fn every_wait_may_be_zero() {
        // One rule: waits (offsets from the cutover, the gate's margin, the mail check's delay,
        // a stage after the settle) may be 0s; only repeats have a least value.
        let text = BASE
            .replacen(
                "announce_before = \"14d\"",
                "announce_before = \"0s\"\nlower_ttl_before = \"0s\"\nsettle_after = \"0s\"",
                1,
            )
            .replacen("after = \"30d\"", "after = \"0s\"", 1)
            .replacen(
                "short_ttl = 60",
                "short_ttl = 60\ngate_margin = \"0s\"\ngate_wait_override = \"0s\"",
                1,
            );
        let playbook = Playbook::parse(&text, "p.toml").expect("zero waits are accepted");
        assert_eq!(playbook.schedule.lower_ttl_before, Duration::ZERO);
        assert_eq!(playbook.schedule.settle_after, Duration::ZERO);
        assert_eq!(playbook.schedule.decommission[0].after, Duration::ZERO);
        assert_eq!(playbook.dns.gate_wait_override, Some(Duration::ZERO));
        // "20s" was refused for the lowering while "0s" was accepted for the settle.
        let text = BASE.replacen("announce_before = \"14d\"", "lower_ttl_before = \"20s\"", 1);
        let playbook = Playbook::parse(&text, "p.toml").expect("a 20 s lowering is a wait like any other");
        assert_eq!(playbook.schedule.lower_ttl_before, Duration::from_secs(20));
    }

    #[test]
    fn error_display_matches_the_contract() {
        let err =
            Playbook::parse("name = \"x\"\n[dns]\nshort_ttl = 0\n", "playbooks/x.toml").expect_err("ttl 0");
        assert_eq!(
            err.to_string(),
            "playbooks/x.toml:3:13: dns.short_ttl: expected a TTL of 1..=86400 seconds, got 0"
        );
        assert_eq!(err.position, Some((3, 13)));
        assert_eq!(err.field, "dns.short_ttl");
    }
}
